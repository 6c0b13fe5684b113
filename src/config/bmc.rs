//! A fleet host's BMC as the configuration describes it: where it is, how to speak to it, who to
//! log in as and how to know it is the right one (`fleet.bmc.*` with the host's
//! `fleet.hosts.<name>.bmc.*` over it). Parsing only; `crate::bmc` talks to it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `fleet.bmc.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BmcProtocol {
    Redfish,
    Ipmi,
}

impl BmcProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            BmcProtocol::Redfish => "redfish",
            BmcProtocol::Ipmi => "ipmi",
        }
    }

    /// The port a BMC listens on when the address names none.
    pub fn default_port(self) -> u16 {
        match self {
            BmcProtocol::Redfish => 443,
            BmcProtocol::Ipmi => 623,
        }
    }
}

/// `fleet.bmc.bootTarget`: what the one-time boot override asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootTarget {
    Pxe,
    UefiHttp,
}

impl BootTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            BootTarget::Pxe => "pxe",
            BootTarget::UefiHttp => "uefi-http",
        }
    }
}

/// The fleet-wide defaults, `fleet.bmc.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BmcDefaults {
    pub protocol: BmcProtocol,
    pub user: Option<String>,
    pub password_file: Option<String>,
    pub certificate: Option<String>,
    pub boot_target: BootTarget,
}

/// A BMC's network address: a host name, an IPv4 address or a bracketed IPv6 one, and a port
/// when it is not the protocol's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// As it goes into a URL or ipmitool's -H: `bmc1.example`, `10.0.0.5`, `[fd00::5]`.
    pub host: String,
    pub port: Option<u16>,
}

impl Address {
    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port`; `Err` says what is expected.
    pub fn parse(text: &str) -> Result<Address, String> {
        let fail = |why: &str| {
            Err(format!(
                "\"{}\" is not a BMC address: {why}; expected a host name or IPv4 address, or [IPv6], with :PORT when it is not the protocol's, e.g. \"10.0.0.5\", \"bmc-db7.example:8443\", \"[fd00::5]\"",
                text.escape_default()
            ))
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else { return fail("the '[' is not closed") };
            if inside.parse::<std::net::Ipv6Addr>().is_err() {
                return fail("the part in brackets is not an IPv6 address");
            }
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return fail("only :PORT may follow the brackets"),
                },
            };
            (format!("[{inside}]"), port)
        } else {
            let (host, port) = match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            };
            let label_ok = |l: &str| {
                !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
                return fail("the host is not a host name or an IPv4 address (an IPv6 address goes in brackets)");
            }
            (host.to_string(), port)
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return fail("the port is not a number from 1 to 65535"),
            },
        };
        Ok(Address { host, port })
    }

    /// `host:port` with the protocol's port when none was given.
    pub fn with_port(&self, protocol: BmcProtocol) -> String {
        format!("{}:{}", self.host, self.port.unwrap_or_else(|| protocol.default_port()))
    }

    /// The host as a TLS server name: the IP address (without brackets) or the DNS name.
    pub fn server_name(&self) -> String {
        self.host.trim_start_matches('[').trim_end_matches(']').to_string()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// A certificate's SHA-256 fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// 64 hexadecimal digits, with or without ':' between the bytes (openssl writes
    /// `AB:CD:...`), any case; a `sha256:` or `SHA256 Fingerprint=` prefix is allowed.
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let trimmed = text.trim();
        let trimmed = trimmed.strip_prefix("sha256 Fingerprint=").or_else(|| trimmed.strip_prefix("SHA256 Fingerprint=")).unwrap_or(trimmed);
        let trimmed = trimmed.strip_prefix("sha256:").unwrap_or(trimmed);
        let digits: String = if trimmed.contains(':') {
            let groups: Vec<&str> = trimmed.split(':').collect();
            if groups.iter().any(|g| g.len() != 2) {
                return Err(format!("\"{}\" is not a SHA-256 fingerprint: with ':' each byte is two digits; expected 32 bytes in hexadecimal, as `openssl x509 -noout -fingerprint -sha256` prints them", text.escape_default()));
            }
            groups.concat()
        } else {
            trimmed.to_string()
        };
        if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "\"{}\" is not a SHA-256 fingerprint; expected 32 bytes in hexadecimal (64 digits, ':' between bytes allowed), as `openssl x509 -noout -fingerprint -sha256` prints them",
                text.escape_default()
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        Ok(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    /// As openssl prints it: upper case, ':' between the bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&text.join(":"))
    }
}

/// How a Redfish BMC proves it is the one meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// The PEM file with the BMC's own certificate or the authority that signed it.
    Certificate(String),
    /// Exactly the certificate with this SHA-256 fingerprint.
    Fingerprint(Fingerprint),
}

/// One host's BMC, everything resolved: the fleet's defaults with the host's own values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcSpec {
    pub address: Address,
    pub protocol: BmcProtocol,
    pub user: String,
    pub password_file: String,
    /// For Redfish (the fleet's rules make sure there is one); IPMI has no TLS.
    pub tls: Option<TlsTrust>,
    pub system_id: Option<String>,
    pub boot_target: BootTarget,
}

impl BmcSpec {
    /// The BMC as messages name it: `redfish https://10.0.0.5:443` or `ipmi 10.0.0.5:623`.
    pub fn describe(&self) -> String {
        match self.protocol {
            BmcProtocol::Redfish => format!("the Redfish BMC at https://{}", self.address.with_port(self.protocol)),
            BmcProtocol::Ipmi => format!("the IPMI BMC at {}", self.address.with_port(self.protocol)),
        }
    }
}

/// The host's BMC settings (`fleet.hosts.<name>.bmc`, its own values only, as the typed
/// configuration keeps them) over the fleet's defaults. `Ok(None)` when the host has no address;
/// `Err` says what is missing (the fleet's rules report the same with its place in the file).
pub fn resolve(defaults: &BmcDefaults, own: &serde_json::Map<String, serde_json::Value>) -> Result<Option<BmcSpec>, String> {
    let text = |key: &str| own.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let Some(address) = text("address") else { return Ok(None) };
    let address = Address::parse(&address)?;
    let protocol = match own.get("protocol") {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| e.to_string())?,
        None => defaults.protocol,
    };
    let boot_target = match own.get("bootTarget") {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| e.to_string())?,
        None => defaults.boot_target,
    };
    let or_default = |key: &str, default: &Option<String>| if own.contains_key(key) { text(key) } else { default.clone() };
    let user = or_default("user", &defaults.user).ok_or("no bmc.user")?;
    let password_file = or_default("passwordFile", &defaults.password_file).ok_or("no bmc.passwordFile")?;
    let certificate = or_default("certificate", &defaults.certificate);
    let fingerprint = text("fingerprint").map(|f| Fingerprint::parse(&f)).transpose()?;
    let tls = match (protocol, certificate, fingerprint) {
        (BmcProtocol::Ipmi, ..) => None,
        // The host's own fingerprint wins over a fleet-wide certificate authority; the host's
        // own certificate together with a fingerprint is refused by the fleet's rules.
        (BmcProtocol::Redfish, _, Some(f)) => Some(TlsTrust::Fingerprint(f)),
        (BmcProtocol::Redfish, Some(c), None) => Some(TlsTrust::Certificate(c)),
        (BmcProtocol::Redfish, None, None) => return Err("no bmc.certificate or bmc.fingerprint".into()),
    };
    Ok(Some(BmcSpec { address, protocol, user, password_file, tls, system_id: text("systemId"), boot_target }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_and_without_ports() {
        let a = Address::parse("10.0.0.5").expect("v4");
        assert_eq!((a.host.as_str(), a.port, a.with_port(BmcProtocol::Redfish)), ("10.0.0.5", None, "10.0.0.5:443".to_string()));
        assert_eq!(Address::parse("bmc-db7.example:8443").expect("name").with_port(BmcProtocol::Redfish), "bmc-db7.example:8443");
        let v6 = Address::parse("[fd00::5]:623").expect("v6");
        assert_eq!((v6.host.as_str(), v6.port, v6.server_name()), ("[fd00::5]", Some(623), "fd00::5".to_string()));
        for bad in ["", "fd00::5", "[fd00::5", "[nope]", "host:0", "host:99999", "ho st", "-a.example", "a..b", "[::1]x", "http://10.0.0.5"] {
            let err = Address::parse(bad).expect_err(bad);
            assert!(err.contains("is not a BMC address"), "{bad}: {err}");
        }
    }

    #[test]
    fn fingerprints_in_openssls_form_and_bare() {
        let colons = "AB:".repeat(31) + "CD";
        let f = Fingerprint::parse(&colons).expect("colons");
        assert_eq!((f.0[0], f.0[31]), (0xab, 0xcd));
        assert_eq!(f.to_string(), colons);
        assert_eq!(Fingerprint::parse(&format!("sha256 Fingerprint={}", colons.to_lowercase())), Ok(f));
        assert_eq!(Fingerprint::parse(&colons.replace(':', "")), Ok(f));
        for bad in ["", "AB:CD", &"A:".repeat(32), &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(Fingerprint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_hosts_own_values_go_over_the_fleets() {
        let defaults = BmcDefaults {
            protocol: BmcProtocol::Redfish,
            user: Some("admin".into()),
            password_file: Some("/run/secrets/bmc".into()),
            certificate: Some("/etc/bmc-ca.pem".into()),
            boot_target: BootTarget::Pxe,
        };
        let own = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(resolve(&defaults, &own(serde_json::json!({ "address": null }))), Ok(None));
        let spec = resolve(&defaults, &own(serde_json::json!({ "address": "10.0.0.5", "systemId": "1" }))).expect("ok").expect("some");
        assert_eq!((spec.user.as_str(), spec.tls.clone(), spec.system_id.as_deref()), ("admin", Some(TlsTrust::Certificate("/etc/bmc-ca.pem".into())), Some("1")));
        let fp = "ab".repeat(32);
        let spec = resolve(&defaults, &own(serde_json::json!({ "address": "10.0.0.5", "fingerprint": fp, "user": "root" }))).expect("ok").expect("some");
        assert!(matches!(spec.tls, Some(TlsTrust::Fingerprint(_))) && spec.user == "root");
        let ipmi = resolve(&defaults, &own(serde_json::json!({ "address": "10.0.0.5", "protocol": "ipmi" }))).expect("ok").expect("some");
        assert_eq!((ipmi.tls, ipmi.address.with_port(ipmi.protocol)), (None, "10.0.0.5:623".to_string()));
        let none = BmcDefaults { certificate: None, user: None, ..defaults };
        assert_eq!(resolve(&none, &own(serde_json::json!({ "address": "10.0.0.5" }))), Err("no bmc.user".into()));
    }
}
