//! The rules of a fleet that involve more than one value: host names are DNS labels, each host
//! has MACs and exactly one target, a MAC belongs to one host, and a fleet boots by the
//! firmware's boot NIC (both interface options "auto"). Each problem points at a definition.

use super::typed::{CustomInstaller, networking_checks};
use super::{Diagnostic, Resolved};
use crate::config::fleet::Mac;
use crate::origin::Origin;
use crate::schema;
use serde_json::Value;

const HOSTS: &str = "fleet.hosts";

/// Every problem of the fleet in `resolved` (none when it has no hosts).
pub fn checks(resolved: &Resolved) -> Vec<Diagnostic> {
    let fleet = &resolved.config.fleet;
    let mut problems = Vec::new();
    if fleet.hosts.is_empty() {
        return problems;
    }
    let at = |path: &str| resolved.origin_of(path);
    // The host written first in the file(s), where a fleet's rule about a default can point.
    let first_host = resolved
        .members
        .iter()
        .filter(|m| m.set == HOSTS)
        .min_by_key(|m| m.origin.location().map(|l| (l.file.clone(), l.line, l.column)))
        .map(|m| m.origin.clone());
    // A default has no place in the file; the first host is what makes it wrong.
    let at_or_host = |path: &str| match at(path) {
        Origin::Default => first_host.clone().unwrap_or(Origin::Default),
        origin => origin,
    };
    let boot_loader = &resolved.config.nfsroot.boot_loader;
    if !boot_loader.efinet_auto() {
        problems.push(
            Diagnostic::new(
                at_or_host("nfsroot.bootLoader.efinetDHCPInterface"),
                format!(
                    "a fleet needs \"auto\", not \"{}\": GRUB fetches each machine's configuration by the MAC of the NIC the firmware booted from, which it knows from the firmware's lease only",
                    boot_loader.efinet_dhcp_interface
                ),
            )
            .option("nfsroot.bootLoader.efinetDHCPInterface")
            .hint("set nfsroot.bootLoader.efinetDHCPInterface = \"auto\";"),
        );
    }
    if !boot_loader.pnp_auto() {
        problems.push(
            Diagnostic::new(
                at_or_host("nfsroot.bootLoader.linuxPnPInterface"),
                format!(
                    "a fleet needs \"auto\", not \"{}\": the kernel and the installer must use the NIC GRUB booted from, whose MAC travels on the command line (nixos-pxe.mac=)",
                    boot_loader.linux_pnp_interface
                ),
            )
            .option("nfsroot.bootLoader.linuxPnPInterface")
            .hint("set nfsroot.bootLoader.linuxPnPInterface = \"auto\";"),
        );
    }
    let top_target = &resolved.config.custom_installer.target;
    for path in ["customInstaller.target.directory", "customInstaller.target.flake"] {
        let set = if path.ends_with("directory") { top_target.directory.is_some() } else { top_target.flake.is_some() };
        if set {
            problems.push(
                Diagnostic::new(at(path), "a fleet installs each host's own target; the single installer's target is not used")
                    .option(path)
                    .hint("move it to fleet.hosts.<name>.target of the host it belongs to"),
            );
        }
    }

    // Every MAC seen so far: (MAC, host, where its list is defined).
    let mut seen: Vec<(Mac, &str, Origin)> = Vec::new();
    let base = serde_json::to_value(&resolved.config.custom_installer).unwrap_or(Value::Null);
    for (name, host) in &fleet.hosts {
        let path = |option: &str| format!("{HOSTS}.{}.{option}", quoted(name));
        let host_origin = resolved.member_origin(HOSTS, name);
        if let Err(why) = dns_label(name) {
            problems.push(
                Diagnostic::new(host_origin.clone(), format!("the host name \"{name}\" {why}; host names are DNS labels: a-z, 0-9 and '-', 1 to 63 characters, not starting or ending with '-'"))
                    .option(format!("{HOSTS}.{}", quoted(name)))
                    .hint(format!("rename it, e.g. \"{}\"", suggest_label(name))),
            );
        }
        if host.macs.is_empty() {
            problems.push(
                Diagnostic::new(host_origin.clone(), format!("the host {name} has no MAC address; a host is recognised by the MAC of the NIC its firmware boots from"))
                    .option(path("macs"))
                    .hint(format!("set {} = [ \"52:54:00:ab:cd:01\" ];", path("macs"))),
            );
        }
        let macs_origin = at(&path("macs"));
        let mut own: Vec<(Mac, &str)> = Vec::new();
        for text in &host.macs {
            // A MAC that does not parse is reported by the option's own rule.
            let Ok(mac) = text.parse::<Mac>() else { continue };
            if let Some((_, earlier)) = own.iter().find(|(m, _)| *m == mac) {
                problems.push(
                    Diagnostic::new(macs_origin.clone(), format!("{mac} is listed twice for {name} (as \"{earlier}\" and \"{text}\")")).option(path("macs")),
                );
                continue;
            }
            own.push((mac, text));
            if let Some((_, other, other_origin)) = seen.iter().find(|(m, ..)| *m == mac) {
                problems.push(
                    Diagnostic::new(
                        macs_origin.clone(),
                        format!("{mac} is listed for {name} here and for {other} at {other_origin}; a MAC belongs to one host"),
                    )
                    .option(path("macs"))
                    .hint(format!("remove it from {name} or from {other}")),
                );
            }
        }
        seen.extend(own.into_iter().map(|(mac, _)| (mac, name.as_str(), macs_origin.clone())));

        match (&host.target.directory, &host.target.flake, &host.image) {
            (Some(_), Some(_), _) => problems.push(
                Diagnostic::new(at(&path("target.flake")), format!("both target.directory and target.flake are set for {name}; its system must be one of them"))
                    .option(path("target.flake")),
            ),
            (None, None, None) => problems.push(
                Diagnostic::new(host_origin.clone(), format!("the host {name} has no target: nothing says which system to install on it"))
                    .option(path("target"))
                    .hint(format!(
                        "set {} = ./hosts/{name}; or {} = \"/etc/fleet#{name}\"; (with lib.mkFleet, a nixosConfigurations entry in hosts.{name})",
                        path("target.directory"),
                        path("target.flake")
                    )),
            ),
            _ => {}
        }
        problems.extend(bmc_checks(resolved, name));
        // The rule between the networking options holds for the host's merged installer too
        // (checked when the host sets one of them; the top-level pair is checked on its own).
        if !host.custom_installer.contains_key("networking") {
            continue;
        }
        let mut merged = base.clone();
        if let Value::Object(map) = &mut merged {
            for (key, value) in &host.custom_installer {
                match (map.get_mut(key), value) {
                    (Some(Value::Object(inner)), Value::Object(more)) => inner.extend(more.clone()),
                    _ => {
                        map.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        if let Ok(installer) = serde_json::from_value::<CustomInstaller>(merged) {
            let prefix = path("customInstaller");
            problems.extend(networking_checks(&installer, &prefix, &|option: &str| at(option)));
        }
    }
    problems
}

/// The rules of host `name`'s BMC settings (its own over `fleet.bmc`): with an address, an
/// account, a password file, and for Redfish a way to know the BMC's certificate; IPMI has no
/// TLS, no system ids and no UEFI HTTP boot; without an address, a host's own BMC setting
/// reaches nothing.
fn bmc_checks(resolved: &Resolved, name: &str) -> Vec<Diagnostic> {
    let path = |option: &str| format!("{HOSTS}.{}.bmc.{option}", quoted(name));
    let value = |option: &str| resolved.effective.iter().find(|e| e.option == path(option)).map(|e| e.value.clone()).unwrap_or(Value::Null);
    let own = |option: &str| matches!(resolved.origin_of(&path(option)), Origin::Defined(_) | Origin::File { .. });
    let at = |option: &str| resolved.origin_of(&path(option));
    let options = ["protocol", "user", "passwordFile", "certificate", "fingerprint", "systemId", "bootTarget"];
    let mut problems = Vec::new();
    if value("address").is_null() {
        for option in options.iter().filter(|o| own(o)) {
            problems.push(
                Diagnostic::new(at(option), format!("{name} has no BMC address, so its {} reaches nothing", path(option)))
                    .option(path(option))
                    .hint(format!("set {} = \"10.0.0.5\"; (its BMC on the management network), or remove this", path("address"))),
            );
        }
        return problems;
    }
    let address_at = at("address");
    let protocol = value("protocol");
    let protocol = protocol.as_str().unwrap_or("redfish");
    for (option, what) in [("user", "an account to log in as"), ("passwordFile", "the file holding the account's password")] {
        if value(option).is_null() {
            problems.push(
                Diagnostic::new(address_at.clone(), format!("{name}'s BMC needs {what}: neither {} nor fleet.bmc.{option} is set", path(option)))
                    .option(path(option))
                    .hint(format!("set fleet.bmc.{option} for every host, or {} for this one", path(option))),
            );
        }
    }
    if protocol == "redfish" {
        match (value("certificate").is_null(), value("fingerprint").is_null()) {
            (true, true) => problems.push(
                Diagnostic::new(
                    address_at.clone(),
                    format!("{name}'s Redfish BMC is reached over HTTPS, and nothing says which certificate is its own: set its certificate (or the authority that signed it) or its certificate's fingerprint"),
                )
                .option(path("fingerprint"))
                .hint(format!("set {} = \"AB:CD:...\"; (`openssl s_client -connect ADDRESS:443 </dev/null | openssl x509 -noout -fingerprint -sha256`), or fleet.bmc.certificate", path("fingerprint"))),
            ),
            (false, false) if own("certificate") => problems.push(
                Diagnostic::new(at("fingerprint"), format!("both {} and {} are set for {name}; its BMC's certificate is checked one way", path("certificate"), path("fingerprint")))
                    .option(path("fingerprint")),
            ),
            _ => {}
        }
    } else {
        for option in ["fingerprint", "systemId"].into_iter().chain(own("certificate").then_some("certificate")) {
            if !value(option).is_null() {
                problems.push(
                    Diagnostic::new(at(option), format!("{} is for a Redfish BMC; {name}'s speaks IPMI, which has no certificate and one system", path(option)))
                        .option(path(option)),
                );
            }
        }
        if value("bootTarget").as_str() == Some("uefi-http") {
            problems.push(
                Diagnostic::new(at("bootTarget"), format!("IPMI cannot ask for a UEFI HTTP boot ({name}'s BMC speaks IPMI); only \"pxe\""))
                    .option(path("bootTarget"))
                    .hint("use bmc.protocol = \"redfish\" for this host, or bootTarget = \"pxe\""),
            );
        }
    }
    problems
}

/// A name as a path segment shows it (quoted when it is not a plain identifier).
fn quoted(name: &str) -> String {
    schema::dotted(&[name])
}

/// `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`; `Err` says what is wrong.
pub fn dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 63 {
        return Err(format!("is {} characters long", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("holds '{}'", c.escape_default()));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("starts or ends with '-'".into());
    }
    Ok(())
}

/// A DNS label close to `name`, for the hint.
fn suggest_label(name: &str) -> String {
    let mapped: String = name.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let trimmed: String = mapped.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-');
    if trimmed.is_empty() { "host-1".into() } else { trimmed.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, resolve};
    use crate::origin::Location;
    use camino::Utf8Path;
    use serde_json::json;

    /// Definitions at `t.nix`, line = position in `pairs` + 1. A path ending at a host (with
    /// `null`) only names the host, as `fleet.hosts.a = { };` does.
    fn with(pairs: &[(&str, Value)]) -> Result<Resolved, crate::config::ConfigError> {
        let mut s = Settings::default();
        for (i, (path, value)) in pairs.iter().enumerate() {
            let origin = Origin::Defined(Location::new("t.nix", i as u32 + 1, 3));
            let segments: Vec<&str> = path.split('.').collect();
            match schema::lookup(&segments) {
                schema::Lookup::Option { spec, name } => s.define_named(spec, name.as_deref(), value.clone(), origin).expect("define"),
                schema::Lookup::Prefix { member: Some((set, name)) } => s.member(set, &name, origin),
                other => panic!("{path}: {other:?}"),
            }
        }
        resolve(&s, Utf8Path::new("t.nix"))
    }

    /// A fleet's two interface options (lines 1 and 2), then `extra`.
    fn fleet(extra: &[(&'static str, Value)]) -> Vec<(&'static str, Value)> {
        let mut pairs = vec![("nfsroot.bootLoader.efinetDHCPInterface", json!("auto")), ("nfsroot.bootLoader.linuxPnPInterface", json!("auto"))];
        pairs.extend(extra.iter().cloned());
        pairs
    }

    fn problems(pairs: &[(&str, Value)]) -> String {
        with(pairs).map(|_| String::new()).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn a_valid_fleet_resolves_with_overrides_and_inherited_values() {
        let r = with(&fleet(&[
            ("customInstaller.rootDevice", json!("/dev/vda")),
            ("fleet.hosts.web1.macs", json!(["52:54:00:00:00:A1"])),
            ("fleet.hosts.web1.target.directory", json!("/etc/web")),
            ("fleet.hosts.web1.customInstaller.wipe", json!("always")),
        ]))
        .expect("valid");
        let host = &r.config.fleet.hosts["web1"];
        assert_eq!(host.generation, 1);
        assert_eq!(Value::Object(host.custom_installer.clone()), json!({ "wipe": "always" }), "only the overrides");
        assert_eq!(r.origin_of("fleet.hosts.web1.customInstaller.wipe").to_string(), "t.nix:6:3");
        assert_eq!(r.origin_of("fleet.hosts.web1.customInstaller.rootDevice").to_string(), "customInstaller.rootDevice at t.nix:3:3");
        assert_eq!(r.origin_of("fleet.hosts.web1.customInstaller.espSizeMiB").to_string(), "customInstaller.espSizeMiB's default");
        assert_eq!(r.origin_of("fleet.hosts.web1.generation"), Origin::Default);
        assert!(r.effective.iter().all(|e| e.option != "fleet.hosts.web1.image"), "json-only and unset: not listed");
    }

    #[test]
    fn a_fleet_needs_auto_interfaces_at_the_first_host_when_defaulted() {
        let text = problems(&[
            ("fleet.hosts.web1.macs", json!(["52:54:00:00:00:a1"])),
            ("fleet.hosts.web1.target.flake", json!("/f#web1")),
            ("nfsroot.bootLoader.linuxPnPInterface", json!("eth1")),
        ]);
        assert!(text.contains("t.nix:1:3: nfsroot.bootLoader.efinetDHCPInterface: a fleet needs \"auto\", not \"efinet0\""), "{text}");
        assert!(text.contains("(hint: set nfsroot.bootLoader.efinetDHCPInterface = \"auto\";)"), "{text}");
        assert!(text.contains("t.nix:3:3: nfsroot.bootLoader.linuxPnPInterface: a fleet needs \"auto\", not \"eth1\""), "{text}");
        assert_eq!(problems(&[("nfsroot.bootLoader.linuxPnPInterface", json!("eth1"))]), "", "no fleet, no rule");
    }

    #[test]
    fn a_mac_of_two_hosts_names_both_places() {
        let text = problems(&fleet(&[
            ("fleet.hosts.a.macs", json!(["52:54:00:00:00:01"])),
            ("fleet.hosts.a.target.flake", json!("/f#a")),
            ("fleet.hosts.b.macs", json!(["52-54-00-00-00-02", "5254.0000.0001"])),
            ("fleet.hosts.b.target.flake", json!("/f#b")),
            ("fleet.hosts.c.macs", json!(["52:54:00:00:00:03", "525400000003"])),
            ("fleet.hosts.c.target.flake", json!("/f#c")),
        ]));
        assert!(
            text.contains("t.nix:5:3: fleet.hosts.b.macs: 52:54:00:00:00:01 is listed for b here and for a at t.nix:3:3; a MAC belongs to one host (hint: remove it from b or from a)"),
            "{text}"
        );
        assert!(text.contains("t.nix:7:3: fleet.hosts.c.macs: 52:54:00:00:00:03 is listed twice for c (as \"52:54:00:00:00:03\" and \"525400000003\")"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn names_macs_and_targets_are_checked_at_the_host() {
        let text = problems(&fleet(&[
            ("fleet.hosts.Web_1", json!(null)),
            ("fleet.hosts.Web_1.macs", json!(["52:54:00:00:00:01"])),
            ("fleet.hosts.Web_1.target.flake", json!("/f#w")),
            ("fleet.hosts.empty", json!(null)),
            ("fleet.hosts.both.macs", json!(["52:54:00:00:00:02"])),
            ("fleet.hosts.both.target.flake", json!("/f#b")),
            ("fleet.hosts.both.target.directory", json!("/h")),
        ]));
        assert!(text.contains("t.nix:3:3: fleet.hosts.Web_1: the host name \"Web_1\" holds 'W'; host names are DNS labels"), "{text}");
        assert!(text.contains("(hint: rename it, e.g. \"web-1\")"), "{text}");
        assert!(text.contains("t.nix:6:3: fleet.hosts.empty.macs: the host empty has no MAC address"), "{text}");
        assert!(text.contains("t.nix:6:3: fleet.hosts.empty.target: the host empty has no target"), "{text}");
        assert!(text.contains("t.nix:8:3: fleet.hosts.both.target.flake: both target.directory and target.flake are set for both"), "{text}");
    }

    #[test]
    fn an_image_is_a_target_and_the_top_level_target_is_refused() {
        let text = problems(&fleet(&[
            ("customInstaller.target.flake", json!("/f#x")),
            ("fleet.hosts.a.macs", json!(["52:54:00:00:00:01"])),
            ("fleet.hosts.a.image", json!("systems/a.tar.zst")),
        ]));
        assert!(text.contains("t.nix:3:3: customInstaller.target.flake: a fleet installs each host's own target"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn a_host_override_keeps_the_networking_rule() {
        let text = problems(&fleet(&[
            ("fleet.hosts.a.macs", json!(["52:54:00:00:00:01"])),
            ("fleet.hosts.a.target.flake", json!("/f#a")),
            ("fleet.hosts.a.customInstaller.networking.useDHCP", json!(false)),
        ]));
        assert!(text.contains("t.nix:5:3: fleet.hosts.a.customInstaller.networking.useDHCP: useDHCP is false"), "{text}");
        assert!(text.contains("set fleet.hosts.a.customInstaller.networking.staticInterfaceFromDHCP"), "{text}");
    }

    #[test]
    fn a_bmc_needs_an_account_a_password_file_and_a_certificate_to_check() {
        let host = |extra: &[(&'static str, Value)]| {
            let mut pairs = vec![("fleet.hosts.a.macs", json!(["52:54:00:00:00:01"])), ("fleet.hosts.a.target.flake", json!("/f#a"))];
            pairs.extend(extra.iter().cloned());
            fleet(&pairs)
        };
        let text = problems(&host(&[("fleet.hosts.a.bmc.address", json!("10.0.0.5"))]));
        assert!(text.contains("t.nix:5:3: fleet.hosts.a.bmc.user: a's BMC needs an account to log in as"), "{text}");
        assert!(text.contains("t.nix:5:3: fleet.hosts.a.bmc.passwordFile: a's BMC needs the file holding"), "{text}");
        assert!(text.contains("t.nix:5:3: fleet.hosts.a.bmc.fingerprint: a's Redfish BMC is reached over HTTPS, and nothing says which certificate"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
        // The fleet-wide account and authority serve every host; a host's fingerprint too.
        let fleet_wide = [
            ("fleet.bmc.user", json!("admin")),
            ("fleet.bmc.passwordFile", json!("/run/secrets/bmc")),
            ("fleet.bmc.certificate", json!("/etc/bmc-ca.pem")),
            ("fleet.hosts.a.bmc.address", json!("10.0.0.5")),
        ];
        assert_eq!(problems(&host(&fleet_wide)), "");
        let mut both = fleet_wide.to_vec();
        both.extend([("fleet.hosts.a.bmc.certificate", json!("/etc/a.pem")), ("fleet.hosts.a.bmc.fingerprint", json!("ab".repeat(32)))]);
        let text = problems(&host(&both));
        assert!(text.contains("t.nix:10:3: fleet.hosts.a.bmc.fingerprint: both fleet.hosts.a.bmc.certificate and fleet.hosts.a.bmc.fingerprint are set for a"), "{text}");
        // IPMI: no TLS, no system ids, no HTTP boot.
        let mut ipmi = fleet_wide.to_vec();
        ipmi.extend([("fleet.hosts.a.bmc.protocol", json!("ipmi")), ("fleet.hosts.a.bmc.systemId", json!("1")), ("fleet.hosts.a.bmc.bootTarget", json!("uefi-http"))]);
        let text = problems(&host(&ipmi));
        assert!(text.contains("t.nix:10:3: fleet.hosts.a.bmc.systemId: fleet.hosts.a.bmc.systemId is for a Redfish BMC"), "{text}");
        assert!(text.contains("t.nix:11:3: fleet.hosts.a.bmc.bootTarget: IPMI cannot ask for a UEFI HTTP boot"), "{text}");
        assert_eq!(text.lines().count(), 2, "the fleet-wide authority is not the host's: {text}");
        // A host's own BMC setting without an address.
        let text = problems(&host(&[("fleet.hosts.a.bmc.user", json!("root"))]));
        assert!(text.contains("t.nix:5:3: fleet.hosts.a.bmc.user: a has no BMC address, so its fleet.hosts.a.bmc.user reaches nothing"), "{text}");
        // The password never in the Nix store; a bad address and fingerprint by their rules.
        let text = problems(&host(&[
            ("fleet.bmc.passwordFile", json!("/nix/store/abc-bmc-password")),
            ("fleet.hosts.a.bmc.address", json!("https://10.0.0.5")),
            ("fleet.hosts.a.bmc.fingerprint", json!("AB:CD")),
        ]));
        assert!(text.contains("t.nix:5:3: fleet.bmc.passwordFile: \"/nix/store/abc-bmc-password\" is in the Nix store, which every user on the machine can read"), "{text}");
        assert!(text.contains("t.nix:6:3: fleet.hosts.a.bmc.address: \"https://10.0.0.5\" is not a BMC address"), "{text}");
        assert!(text.contains("t.nix:7:3: fleet.hosts.a.bmc.fingerprint: \"AB:CD\" is not a SHA-256 fingerprint"), "{text}");
    }

    #[test]
    fn dns_labels() {
        for good in ["a", "web1", "db-1", "0", &"a".repeat(63)] {
            assert_eq!(dns_label(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", "a-", "Web", "a.b", "a_b", &"a".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad}");
        }
    }
}
