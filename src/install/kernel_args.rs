//! The installer's words on the kernel command line, put there by the per-host GRUB configuration
//! (src/render/host_grub.rs): `nixos-pxe.mac=` (linuxPnPInterface = "auto"), a fleet install's
//! `nixos-pxe.host=` and `.generation=`, and serve's `.attempt=`, `.token=`, `.report=`.
//! Parsed and checked as sets, with no I/O: a half-present set is an error that says what is missing.

use super::http::Url;
use crate::config::fleet::Mac;
use std::fmt;

/// What the kernel command line tells the installer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelArgs {
    /// The MAC of the NIC GRUB booted from (`nixos-pxe.mac=`).
    pub mac: Option<Mac>,
    /// A fleet install: which host, which generation, and (from serve) the attempt.
    pub fleet: Option<FleetArgs>,
    /// nixos-pxe.* words this installer does not know (a newer boot server's?): said and ignored,
    /// so that a boot server upgraded before the NFS root does not stop every install.
    pub unknown: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetArgs {
    pub host: String,
    pub generation: u32,
    /// serve's part; `None` when the per-host file came from `nixos-pxe render` (no reports).
    pub served: Option<ServedArgs>,
}

/// The attempt serve handed out, its secret, and where the reports go.
#[derive(Clone, PartialEq, Eq)]
pub struct ServedArgs {
    pub attempt: u32,
    pub token: String,
    pub report: Url,
}

/// The token is a secret: it is never printed, not even in a debug dump.
impl fmt::Debug for ServedArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServedArgs").field("attempt", &self.attempt).field("token", &"<secret>").field("report", &self.report).finish()
    }
}

/// Why the command line's nixos-pxe words cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelArgsError {
    #[error("the kernel command line has nixos-pxe.{name}= twice (\"{first}\" and \"{second}\"); it must have one")]
    Twice { name: String, first: String, second: String },
    #[error("the kernel command line's nixos-pxe.{name}={shown}: {why}")]
    Invalid { name: &'static str, shown: String, why: String },
    #[error(
        "the kernel command line has {present} but not {missing}: these come together from the per-host GRUB configuration \
         (nixos-pxe/hosts/mac-<MAC>.cfg, written by nixos-pxe render or serve). Was the command line edited or cut short? \
         Boot the machine from the boot server again."
    )]
    Incomplete { present: String, missing: String },
}

pub const KNOWN: &[&str] = &["mac", "host", "generation", "attempt", "token", "report"];

/// Length of serve's tokens: 256 random bits in URL-safe base64 without padding.
pub const TOKEN_CHARS: usize = 43;

/// The nixos-pxe words of `cmdline` (the text of /proc/cmdline).
pub fn parse(cmdline: &str) -> Result<KernelArgs, KernelArgsError> {
    let mut found: Vec<(&str, &str)> = Vec::new();
    let mut unknown = Vec::new();
    for word in cmdline.split_whitespace() {
        let Some(rest) = word.strip_prefix("nixos-pxe.") else { continue };
        let (name, value) = rest.split_once('=').unwrap_or((rest, ""));
        if !KNOWN.contains(&name) {
            unknown.push(format!("nixos-pxe.{name}="));
            continue;
        }
        if let Some((_, first)) = found.iter().find(|(n, _)| *n == name) {
            return Err(KernelArgsError::Twice { name: name.to_string(), first: first.to_string(), second: value.to_string() });
        }
        found.push((name, value));
    }
    let get = |name: &str| found.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let words = |names: &[&str]| names.iter().map(|n| format!("nixos-pxe.{n}=")).collect::<Vec<_>>().join(" and ");
    // A set is all there or all absent; say which are there and which are not.
    let set = |names: &[&'static str]| -> Result<bool, KernelArgsError> {
        let (present, missing): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| get(n).is_some());
        match (present.is_empty(), missing.is_empty()) {
            (true, _) => Ok(false),
            (false, true) => Ok(true),
            (false, false) => Err(KernelArgsError::Incomplete { present: words(&present), missing: words(&missing) }),
        }
    };
    let fleet = set(&["host", "generation"])?;
    let served = set(&["attempt", "token", "report"])?;
    if served && !fleet {
        return Err(KernelArgsError::Incomplete { present: words(&["attempt", "token", "report"]), missing: words(&["host", "generation"]) });
    }
    let mac = match get("mac") {
        Some(text) => Some(text.parse::<Mac>().map_err(|e| KernelArgsError::Invalid { name: "mac", shown: text.to_string(), why: e.why })?),
        None if fleet => return Err(KernelArgsError::Incomplete { present: words(&["host", "generation"]), missing: words(&["mac"]) }),
        None => None,
    };
    let fleet = if fleet {
        let host = get("host").unwrap_or_default();
        crate::config::fleet_rules::dns_label(host).map_err(|why| KernelArgsError::Invalid {
            name: "host",
            shown: host.to_string(),
            why: format!("the host name {why}; fleet host names are DNS labels"),
        })?;
        let served = if served {
            let token = get("token").unwrap_or_default();
            if token.len() != TOKEN_CHARS || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(KernelArgsError::Invalid {
                    name: "token",
                    shown: "<secret>".into(),
                    why: format!("not a token of serve: it has {} characters, and a token is {TOKEN_CHARS} of A-Z a-z 0-9 - _", token.len()),
                });
            }
            let report = get("report").unwrap_or_default();
            Some(ServedArgs {
                attempt: positive(get("attempt").unwrap_or_default(), "attempt")?,
                token: token.to_string(),
                report: report.parse().map_err(|why| KernelArgsError::Invalid { name: "report", shown: report.to_string(), why })?,
            })
        } else {
            None
        };
        Some(FleetArgs { host: host.to_string(), generation: positive(get("generation").unwrap_or_default(), "generation")?, served })
    } else {
        None
    };
    Ok(KernelArgs { mac, fleet, unknown })
}

fn positive(text: &str, name: &'static str) -> Result<u32, KernelArgsError> {
    match text.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(KernelArgsError::Invalid { name, shown: text.to_string(), why: "not a whole number from 1 up".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN-_0";
    const BASE: &str = "BOOT_IMAGE=(tftp)/nixos/bzImage console=ttyS0,115200n8 ip=dhcp root=/dev/nfs init=/init";

    fn mac(s: &str) -> Mac {
        s.parse().expect("mac")
    }

    #[test]
    fn a_single_installer_has_no_fleet_words() {
        assert_eq!(parse(BASE), Ok(KernelArgs::default()));
        assert_eq!(parse(&format!("{BASE} nixos-pxe.mac=52:54:00:00:00:A1")), Ok(KernelArgs { mac: Some(mac("52:54:00:00:00:a1")), ..Default::default() }));
    }

    #[test]
    fn a_served_fleet_install_has_every_word() {
        let line = format!(
            "{BASE} nixos-pxe.host=web1 nixos-pxe.generation=2 nixos-pxe.attempt=3 nixos-pxe.token={TOKEN} nixos-pxe.report=http://10.42.0.1:80 nixos-pxe.mac=52:54:00:00:00:a1\n"
        );
        let args = parse(&line).expect("valid");
        assert_eq!(args.mac, Some(mac("52:54:00:00:00:a1")));
        let fleet = args.fleet.expect("fleet");
        assert_eq!((fleet.host.as_str(), fleet.generation), ("web1", 2));
        let served = fleet.served.expect("served");
        assert_eq!((served.attempt, served.token.as_str(), served.report.to_string()), (3, TOKEN, "http://10.42.0.1:80".to_string()));
        assert!(!format!("{served:?}").contains(TOKEN), "the token is not in debug output");
    }

    #[test]
    fn a_rendered_fleet_install_has_no_attempt_token_or_report() {
        let args = parse(&format!("{BASE} nixos-pxe.host=db1 nixos-pxe.generation=1 nixos-pxe.mac=5254.0000.0b01")).expect("valid");
        assert_eq!(args.fleet, Some(FleetArgs { host: "db1".into(), generation: 1, served: None }));
    }

    #[test]
    fn a_half_present_set_says_what_is_missing() {
        let incomplete = |line: &str| match parse(&format!("{BASE} {line}")) {
            Err(KernelArgsError::Incomplete { present, missing }) => (present, missing),
            other => panic!("{line}: {other:?}"),
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(incomplete("nixos-pxe.host=web1 nixos-pxe.mac=52:54:00:00:00:a1"), pair("nixos-pxe.host=", "nixos-pxe.generation="));
        assert_eq!(incomplete("nixos-pxe.generation=2"), pair("nixos-pxe.generation=", "nixos-pxe.host="));
        assert_eq!(incomplete("nixos-pxe.host=web1 nixos-pxe.generation=2"), pair("nixos-pxe.host= and nixos-pxe.generation=", "nixos-pxe.mac="));
        assert_eq!(
            incomplete(&format!("nixos-pxe.host=web1 nixos-pxe.generation=2 nixos-pxe.token={TOKEN} nixos-pxe.mac=52:54:00:00:00:a1")),
            pair("nixos-pxe.token=", "nixos-pxe.attempt= and nixos-pxe.report=")
        );
        assert_eq!(
            incomplete(&format!("nixos-pxe.attempt=1 nixos-pxe.token={TOKEN} nixos-pxe.report=http://10.42.0.1 nixos-pxe.mac=52:54:00:00:00:a1")),
            pair("nixos-pxe.attempt= and nixos-pxe.token= and nixos-pxe.report=", "nixos-pxe.host= and nixos-pxe.generation=")
        );
        let text = parse(&format!("{BASE} nixos-pxe.host=web1")).unwrap_err().to_string();
        assert_eq!(
            text,
            "the kernel command line has nixos-pxe.host= but not nixos-pxe.generation=: these come together from the per-host GRUB \
             configuration (nixos-pxe/hosts/mac-<MAC>.cfg, written by nixos-pxe render or serve). Was the command line edited or cut \
             short? Boot the machine from the boot server again."
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = |line: &str| parse(&format!("{BASE} {line}")).unwrap_err().to_string();
        let fleet = "nixos-pxe.host=web1 nixos-pxe.mac=52:54:00:00:00:a1";
        assert_eq!(err(&format!("{fleet} nixos-pxe.generation=0")), "the kernel command line's nixos-pxe.generation=0: not a whole number from 1 up");
        assert_eq!(err(&format!("{fleet} nixos-pxe.generation=two")), "the kernel command line's nixos-pxe.generation=two: not a whole number from 1 up");
        assert_eq!(
            err("nixos-pxe.host=Web_1 nixos-pxe.generation=1 nixos-pxe.mac=52:54:00:00:00:a1"),
            "the kernel command line's nixos-pxe.host=Web_1: the host name holds 'W'; fleet host names are DNS labels"
        );
        assert_eq!(err("nixos-pxe.mac=52:54:00:00:a1"), "the kernel command line's nixos-pxe.mac=52:54:00:00:a1: it has 5 groups, not 6");
        let served = |attempt: &str, token: &str, report: &str| {
            err(&format!("{fleet} nixos-pxe.generation=1 nixos-pxe.attempt={attempt} nixos-pxe.token={token} nixos-pxe.report={report}"))
        };
        let short = served("1", "abc", "http://10.42.0.1");
        assert_eq!(short, "the kernel command line's nixos-pxe.token=<secret>: not a token of serve: it has 3 characters, and a token is 43 of A-Z a-z 0-9 - _");
        assert!(!served("1", &TOKEN.replace('a', "+"), "http://10.42.0.1").contains('+'), "the token is never shown");
        assert_eq!(served("0", TOKEN, "http://10.42.0.1"), "the kernel command line's nixos-pxe.attempt=0: not a whole number from 1 up");
        assert_eq!(
            served("1", TOKEN, "https://10.42.0.1"),
            "the kernel command line's nixos-pxe.report=https://10.42.0.1: only http:// is supported (the installer has no TLS); give http://HOST[:PORT]"
        );
    }

    #[test]
    fn a_word_twice_is_refused_and_an_unknown_one_set_aside() {
        assert_eq!(
            parse("nixos-pxe.mac=52:54:00:00:00:a1 nixos-pxe.mac=52:54:00:00:00:a2").unwrap_err().to_string(),
            "the kernel command line has nixos-pxe.mac= twice (\"52:54:00:00:00:a1\" and \"52:54:00:00:00:a2\"); it must have one"
        );
        let args = parse("nixos-pxe.hots=web1 nixos-pxe.http nixos-pxe.mac=52:54:00:00:00:a1").expect("valid");
        assert_eq!(args.unknown, ["nixos-pxe.hots=", "nixos-pxe.http="]);
        assert_eq!(args.mac, Some(mac("52:54:00:00:00:a1")));
        // Words of other programs are not ours.
        assert_eq!(parse("nixos-pxe-debug=1 xnixos-pxe.host=a"), Ok(KernelArgs::default()));
    }
}
