//! The fleet as the configuration describes it: hosts with their MACs, generation and install
//! settings (the top-level `customInstaller` with the host's overrides), read from the typed
//! [`Config`]. [`Mac`] parses every usual spelling of a MAC address.

use super::typed::{Config, CustomInstaller, Target};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

pub use super::typed::UnknownHosts;

/// A unicast Ethernet MAC address. Displayed (and used in file names) lower-case with colons,
/// as GRUB's `$net_default_mac` writes it: `52:54:00:ab:cd:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac([u8; 6]);

/// Why a text is not a MAC address; the message quotes it and shows the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not a MAC address: {why}; expected six bytes in hexadecimal, like 52:54:00:ab:cd:01, 52-54-00-ab-cd-01, 5254.00ab.cd01 or 525400abcd01")]
pub struct MacError {
    pub text: String,
    pub why: String,
}

impl Mac {
    pub const fn new(bytes: [u8; 6]) -> Mac {
        Mac(bytes)
    }

    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = MacError;

    /// `52:54:00:ab:cd:01` and `52-54-00-AB-CD-01` (one or two digits a byte, as some tools
    /// print `0:1c:42:...`), Cisco's `5254.00ab.cd01`, bare `525400abcd01`; any case.
    fn from_str(text: &str) -> Result<Mac, MacError> {
        let fail = |why: String| MacError { text: text.to_string(), why };
        if text.is_empty() {
            return Err(fail("it is empty".into()));
        }
        if let Some(c) = text.chars().find(|c| !c.is_ascii_hexdigit() && !":-.".contains(*c)) {
            return Err(fail(format!("'{}' is not a hexadecimal digit or separator", c.escape_default())));
        }
        let separators: Vec<char> = text.chars().filter(|c| ":-.".contains(*c)).collect();
        if separators.windows(2).any(|w| w[0] != w[1]) {
            return Err(fail("it mixes separators".into()));
        }
        let bytes: Vec<u8> = match separators.first() {
            None if text.len() == 12 => hex_bytes(text),
            None => return Err(fail(format!("it has {} digits without separators, not 12", text.len()))),
            Some('.') => {
                let groups: Vec<&str> = text.split('.').collect();
                if groups.len() != 3 || groups.iter().any(|g| g.len() != 4) {
                    return Err(fail("the dotted form is three groups of four digits".into()));
                }
                hex_bytes(&groups.concat())
            }
            Some(_) => {
                let groups: Vec<&str> = text.split(separators[0]).collect();
                if groups.len() != 6 {
                    return Err(fail(format!("it has {} groups, not 6", groups.len())));
                }
                if let Some(g) = groups.iter().find(|g| g.is_empty() || g.len() > 2) {
                    return Err(fail(format!("the group \"{g}\" is not one or two digits")));
                }
                groups.iter().map(|g| u8::from_str_radix(g, 16).unwrap_or(0)).collect()
            }
        };
        let bytes: [u8; 6] = bytes.try_into().map_err(|_| fail("it is not six bytes".into()))?;
        if bytes == [0; 6] {
            return Err(fail("it is all zeros".into()));
        }
        if bytes[0] & 1 == 1 {
            return Err(fail("it is a multicast address (the first byte is odd), which no NIC has as its own".into()));
        }
        Ok(Mac(bytes))
    }
}

/// Pairs of hexadecimal digits as bytes; the caller checked they are digits.
fn hex_bytes(digits: &str) -> Vec<u8> {
    digits.as_bytes().chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("0"), 16).unwrap_or(0)).collect()
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One host of the fleet: what it should be, not what happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    /// The attribute name under `fleet.hosts` (a DNS label).
    pub name: String,
    /// Normalised, in the order written.
    pub macs: Vec<Mac>,
    /// Bump to install again.
    pub generation: u32,
    /// `fleet.maxAttempts`, the same for every host.
    pub max_attempts: u32,
    /// The top-level `customInstaller` with this host's overrides, and the host's target.
    pub install: CustomInstaller,
    /// The system image below /nixos-pxe/ in the NFS root, when lib.mkFleet wrote one.
    pub image: Option<String>,
    /// The host's BMC, when `fleet.hosts.<name>.bmc.address` is set.
    pub bmc: Option<super::bmc::BmcSpec>,
}

impl HostSpec {
    /// `config` as the installer of this host sees it: its `customInstaller` is the host's.
    pub fn config_for(&self, config: &Config) -> Config {
        Config { custom_installer: self.install.clone(), ..config.clone() }
    }
}

/// The fleet: every host, and what a MAC that is in none of them gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub hosts: Vec<HostSpec>,
    pub max_attempts: u32,
    pub unknown_hosts: UnknownHosts,
    /// fleet.trustBootNetwork: tokens and reports not tied to the addresses serve's DHCP saw.
    pub trust_boot_network: bool,
}

/// A fleet description that cannot be used. `nixos-pxe check` reports these with locations
/// before anything gets here; this is for a config.json written by something else.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("fleet.hosts.{host}.macs: {source}")]
    Mac {
        host: String,
        #[source]
        source: MacError,
    },
    #[error("{mac} is listed for both fleet.hosts.{first} and fleet.hosts.{second}; a MAC belongs to one host")]
    SharedMac { mac: Mac, first: String, second: String },
    #[error("fleet.hosts.{host}.customInstaller: {message}")]
    Override { host: String, message: String },
    #[error("fleet.hosts.{host}.bmc: {message}")]
    Bmc { host: String, message: String },
}

impl Fleet {
    /// The fleet of a configuration (empty when `fleet.hosts` is).
    pub fn from_config(config: &Config) -> Result<Fleet, ModelError> {
        let base = serde_json::to_value(&config.custom_installer).map_err(|e| ModelError::Override { host: String::new(), message: e.to_string() })?;
        let mut hosts: Vec<HostSpec> = Vec::new();
        for (name, host) in &config.fleet.hosts {
            let macs = host
                .macs
                .iter()
                .map(|m| m.parse::<Mac>().map_err(|source| ModelError::Mac { host: name.clone(), source }))
                .collect::<Result<Vec<Mac>, _>>()?;
            for mac in &macs {
                if let Some(other) = hosts.iter().find(|h| h.macs.contains(mac)) {
                    return Err(ModelError::SharedMac { mac: *mac, first: other.name.clone(), second: name.clone() });
                }
            }
            hosts.push(HostSpec {
                name: name.clone(),
                macs,
                generation: host.generation,
                max_attempts: config.fleet.max_attempts,
                install: merged(&base, &host.custom_installer, &host.target)
                    .map_err(|message| ModelError::Override { host: name.clone(), message })?,
                image: host.image.clone(),
                bmc: super::bmc::resolve(&config.fleet.bmc, &host.bmc).map_err(|message| ModelError::Bmc { host: name.clone(), message })?,
            });
        }
        Ok(Fleet {
            hosts,
            max_attempts: config.fleet.max_attempts,
            unknown_hosts: config.fleet.unknown_hosts,
            trust_boot_network: config.fleet.trust_boot_network,
        })
    }

    /// The host this MAC belongs to.
    pub fn host_by_mac(&self, mac: &Mac) -> Option<&HostSpec> {
        self.hosts.iter().find(|h| h.macs.contains(mac))
    }

    pub fn host(&self, name: &str) -> Option<&HostSpec> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// The top-level `customInstaller` (as JSON) with `overrides` laid over it, nested objects
/// merged key by key, and the host's target in place of the top-level one.
fn merged(base: &Value, overrides: &Map<String, Value>, target: &Target) -> Result<CustomInstaller, String> {
    let mut tree = base.clone();
    overlay(&mut tree, overrides);
    if let Value::Object(map) = &mut tree {
        map.insert("target".into(), serde_json::to_value(target).map_err(|e| e.to_string())?);
    }
    serde_json::from_value(tree).map_err(|e| e.to_string())
}

fn overlay(tree: &mut Value, overrides: &Map<String, Value>) {
    for (key, value) in overrides {
        match (tree.get_mut(key), value) {
            (Some(inner @ Value::Object(_)), Value::Object(more)) => overlay(inner, more),
            _ => {
                if let Value::Object(map) = tree {
                    map.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::typed::WipePolicy;

    fn mac(s: &str) -> Mac {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_usual_spelling_is_one_mac() {
        let want = Mac::new([0x52, 0x54, 0x00, 0xab, 0xcd, 0x01]);
        for spelling in ["52:54:00:ab:cd:01", "52:54:00:AB:cd:01", "52-54-00-ab-cd-01", "52-54-00-AB-CD-01", "5254.00ab.cd01", "5254.00AB.CD01", "525400abcd01", "525400ABCD01", "52:54:0:ab:cd:1"] {
            assert_eq!(mac(spelling), want, "{spelling}");
        }
        assert_eq!(want.to_string(), "52:54:00:ab:cd:01");
        assert_eq!(serde_json::to_value(want).expect("json"), "52:54:00:ab:cd:01");
        assert_eq!(serde_json::from_value::<Mac>("5254.00ab.cd01".into()).expect("json"), want);
    }

    #[test]
    fn garbage_is_refused_with_a_clear_reason() {
        let cases = [
            ("", "it is empty"),
            ("52:54:00:ab:cd", "it has 5 groups, not 6"),
            ("52:54:00:ab:cd:01:02", "it has 7 groups, not 6"),
            ("52:54:00:ab:cd:zz", "'z' is not a hexadecimal digit"),
            ("52:54:00-ab:cd:01", "it mixes separators"),
            ("52:54:00:abc:d:01", "the group \"abc\" is not one or two digits"),
            ("52:54::ab:cd:01", "the group \"\" is not one or two digits"),
            ("525400abcd0", "it has 11 digits without separators, not 12"),
            ("5254.00ab.cd0", "three groups of four digits"),
            ("52 54 00 ab cd 01", "' ' is not a hexadecimal digit"),
            (" 52:54:00:ab:cd:01", "' ' is not"),
            ("00:00:00:00:00:00", "all zeros"),
            ("01:00:5e:00:00:01", "multicast"),
            ("ff:ff:ff:ff:ff:ff", "multicast"),
        ];
        for (text, why) in cases {
            let err = text.parse::<Mac>().expect_err(text).to_string();
            assert!(err.starts_with(&format!("\"{text}\" is not a MAC address: ")), "{err}");
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains("52-54-00-ab-cd-01, 5254.00ab.cd01 or 525400abcd01"), "{err}");
        }
    }

    fn config(hosts: Value) -> Config {
        let mut tree = serde_json::to_value(crate::config::resolve(&Default::default(), camino::Utf8Path::new("t.nix")).expect("defaults").config).expect("json");
        tree["customInstaller"]["rootDevice"] = "/dev/vda".into();
        tree["fleet"]["hosts"] = hosts;
        serde_json::from_value(tree).expect("config")
    }

    #[test]
    fn hosts_get_the_top_level_installer_with_their_overrides() {
        let c = config(serde_json::json!({
            "web1": { "macs": ["52-54-00-00-00-A1"], "generation": 2, "target": { "directory": "/etc/web", "flake": null },
                      "customInstaller": { "wipe": "always", "networking": { "useDHCP": false, "staticInterfaceFromDHCP": "enp1s0" } },
                      "image": "systems/abc.tar.zst" },
            "db1": { "macs": ["525400000b01", "52:54:00:00:0b:02"], "generation": 1, "target": { "directory": null, "flake": "/f#db1" },
                     "customInstaller": { "rootDevice": "/dev/nvme0n1", "rootSizeMiB": null } },
        }));
        let fleet = Fleet::from_config(&c).expect("fleet");
        assert_eq!((fleet.max_attempts, fleet.unknown_hosts), (3, UnknownHosts::LocalBoot));
        let web = fleet.host_by_mac(&mac("52:54:00:00:00:a1")).expect("web1");
        assert_eq!((web.name.as_str(), web.generation, web.image.as_deref()), ("web1", 2, Some("systems/abc.tar.zst")));
        assert_eq!(web.install.wipe, WipePolicy::Always);
        assert_eq!(web.install.root_device, "/dev/vda", "not overridden: the top-level value");
        assert!(!web.install.networking.use_dhcp);
        assert_eq!(web.install.networking.static_interface_from_dhcp.as_deref(), Some("enp1s0"));
        assert_eq!(web.install.target.directory.as_deref(), Some("/etc/web"));
        let db = fleet.host_by_mac(&mac("5254.0000.0b02")).expect("db1");
        assert_eq!(db.name, "db1");
        assert_eq!(db.install.root_device, "/dev/nvme0n1");
        assert_eq!(db.install.wipe, WipePolicy::IfEmpty);
        assert!(db.install.networking.use_dhcp, "a nested option not overridden keeps the top-level value");
        assert_eq!(db.install.target.flake.as_deref(), Some("/f#db1"));
        assert_eq!(db.config_for(&c).custom_installer.root_device, "/dev/nvme0n1");
        assert!(fleet.host_by_mac(&mac("52:54:00:00:00:ff")).is_none());
        assert_eq!(fleet.host("db1").map(|h| h.macs.len()), Some(2));
    }

    #[test]
    fn a_shared_mac_or_a_bad_one_is_an_error() {
        let target = serde_json::json!({ "directory": "/h", "flake": null });
        let shared = config(serde_json::json!({
            "a": { "macs": ["52:54:00:00:00:01"], "generation": 1, "target": target },
            "b": { "macs": ["5254.0000.0001"], "generation": 1, "target": target },
        }));
        let err = Fleet::from_config(&shared).unwrap_err().to_string();
        assert_eq!(err, "52:54:00:00:00:01 is listed for both fleet.hosts.a and fleet.hosts.b; a MAC belongs to one host");
        let bad = config(serde_json::json!({ "a": { "macs": ["nope"], "generation": 1, "target": target } }));
        assert!(Fleet::from_config(&bad).unwrap_err().to_string().starts_with("fleet.hosts.a.macs: \"nope\" is not a MAC address"));
    }
}
