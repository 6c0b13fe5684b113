//! The typed configuration every later stage uses (render, loader, kernel, installer), and
//! the rules that involve more than one option. Its JSON form is the option tree itself.

use super::{Diagnostic, Resolved};
use crate::schema::{self, SerialSettings};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub nfsroot: NfsRoot,
    pub custom_installer: CustomInstaller,
    pub boot_server: BootServer,
    pub fleet: FleetOptions,
}

/// `fleet.*`: the hosts as the configuration writes them (config::fleet makes them usable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetOptions {
    pub max_attempts: u32,
    pub unknown_hosts: UnknownHosts,
    pub trust_boot_network: bool,
    /// `fleet.bmc.*`: what a host's BMC settings default to.
    pub bmc: super::bmc::BmcDefaults,
    #[serde(default)]
    pub hosts: BTreeMap<String, HostOptions>,
}

/// `fleet.hosts.<name>`: `customInstaller` holds only what the host overrides (the option tree
/// of those options); the rest is the top-level value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostOptions {
    /// As written when read; normalised (`52:54:00:ab:cd:01`) once the configuration is valid.
    pub macs: Vec<String>,
    pub generation: u32,
    pub target: Target,
    #[serde(default)]
    pub custom_installer: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `fleet.hosts.<name>.bmc`: the host's own values (its address, fingerprint and system id,
    /// and what it overrides of `fleet.bmc`); left out of the JSON form when the host has none.
    #[serde(default, skip_serializing_if = "all_null")]
    pub bmc: Map<String, Value>,
}

fn all_null(map: &Map<String, Value>) -> bool {
    map.values().all(Value::is_null)
}

/// What a MAC that is in no host of the fleet gets. Never an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownHosts {
    /// GRUB starts the disk's EFI boot loader; without one it exits to the firmware.
    LocalBoot,
    /// A GRUB menu naming the MAC; no timeout, never a reboot.
    Hold,
}

impl UnknownHosts {
    /// The option's value, as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownHosts::LocalBoot => "local-boot",
            UnknownHosts::Hold => "hold",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NfsRoot {
    pub boot_loader: BootLoader,
    pub extra_kernel_options: Vec<String>,
    pub writable_layer: WritableLayer,
    pub init: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootLoader {
    #[serde(rename = "efinetDHCPInterface")]
    pub efinet_dhcp_interface: String,
    #[serde(rename = "linuxPnPInterface")]
    pub linux_pnp_interface: String,
    pub serial: Serial,
    pub timeout: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Serial {
    pub device: String,
    pub settings: String,
}

impl BootLoader {
    /// `efinetDHCPInterface = "auto"`: GRUB keeps the firmware's lease, no net_bootp.
    pub fn efinet_auto(&self) -> bool {
        self.efinet_dhcp_interface == schema::AUTO
    }

    /// `linuxPnPInterface = "auto"`: `ip=dhcp` and the boot NIC's MAC on the command line.
    pub fn pnp_auto(&self) -> bool {
        self.linux_pnp_interface == schema::AUTO
    }
}

impl Serial {
    /// GRUB's `--unit`: N of ttySN.
    pub fn unit(&self) -> u8 {
        self.device.trim_start_matches("ttyS").parse().unwrap_or(0)
    }

    pub fn parsed(&self) -> SerialSettings {
        schema::parse_serial_settings(&self.settings).unwrap_or(SerialSettings { speed: 115200, parity: "no", bits: 8 })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WritableLayer {
    #[serde(rename = "overlayfs")]
    Overlayfs,
    #[serde(rename = "unionfs-fuse")]
    UnionfsFuse,
}

impl WritableLayer {
    /// The option's value, as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            WritableLayer::Overlayfs => "overlayfs",
            WritableLayer::UnionfsFuse => "unionfs-fuse",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomInstaller {
    pub networking: Networking,
    pub root_device: String,
    pub partition_separator: Option<String>,
    pub wipe: WipePolicy,
    #[serde(rename = "espSizeMiB")]
    pub esp_size_mib: u64,
    #[serde(rename = "swapSizeMiB")]
    pub swap_size_mib: u64,
    #[serde(rename = "rootSizeMiB")]
    pub root_size_mib: Option<u64>,
    pub firmware: FirmwareSetting,
    pub after_install: AfterInstall,
    pub image_compression: Compression,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    #[serde(rename = "useDHCP")]
    pub use_dhcp: bool,
    #[serde(rename = "staticInterfaceFromDHCP")]
    pub static_interface_from_dhcp: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WipePolicy {
    IfEmpty,
    Always,
}

/// `customInstaller.firmware`: what the installed disk boots with (install::firmware decides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareSetting {
    /// What the machine booted the installer with.
    Auto,
    Uefi,
    Bios,
    Both,
}

impl FirmwareSetting {
    /// The option's value, as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareSetting::Auto => "auto",
            FirmwareSetting::Uefi => "uefi",
            FirmwareSetting::Bios => "bios",
            FirmwareSetting::Both => "both",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterInstall {
    Reboot,
    Poweroff,
    Halt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    Zstd,
    Gzip,
    Xz,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    pub directory: Option<String>,
    pub flake: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DhcpMode {
    Authoritative,
    Proxy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootServer {
    pub dhcp_mode: DhcpMode,
    pub address: Option<Ipv4Addr>,
    pub name: Option<String>,
    pub interface: Option<String>,
    pub subnet: Option<String>,
    pub dhcp_range: DhcpRange,
    pub router: Option<Ipv4Addr>,
    pub name_servers: Vec<Ipv4Addr>,
    pub domain_name: Option<String>,
    pub lease_seconds: u32,
    pub answer_bootp: bool,
    pub tftp_root: String,
    pub nfs_export: String,
    pub nfs_clients: Option<String>,
    pub nfs_mount_options: String,
    pub secure_boot: SecureBoot,
}

/// `bootServer.secureBoot.*`: the site's db key and certificate, on the boot server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecureBoot {
    pub enable: bool,
    pub key_file: Option<String>,
    pub certificate_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DhcpRange {
    pub start: Option<Ipv4Addr>,
    pub end: Option<Ipv4Addr>,
}

impl BootServer {
    /// The subnet as (network, prefix length); validated when read.
    pub fn subnet_parts(&self) -> Option<(Ipv4Addr, u8)> {
        self.subnet.as_deref().and_then(schema::parse_cidr)
    }

    /// What DHCP option 66 carries: the name if one is set, else the address.
    pub fn tftp_server_name(&self) -> Option<String> {
        self.name.clone().or_else(|| self.address.map(|a| a.to_string()))
    }

    /// Who may mount the NFS root: `nfsClients`, else the subnet.
    pub fn export_clients(&self) -> Option<String> {
        self.nfs_clients.clone().or_else(|| self.subnet.clone())
    }
}

impl CustomInstaller {
    /// The separator between disk and partition number: the option, or the kernel's rule
    /// (a disk name ending in a digit gets "p": nvme0n1p1, mmcblk0p1, loop0p1).
    pub fn separator_for(&self, disk: &str) -> String {
        match &self.partition_separator {
            Some(s) => s.clone(),
            None if disk.ends_with(|c: char| c.is_ascii_digit()) => "p".into(),
            None => String::new(),
        }
    }
}

/// Rules between options. Each diagnostic points at the value to change.
pub fn cross_checks(resolved: &Resolved) -> Vec<Diagnostic> {
    let c = &resolved.config;
    let at = |path: &str| resolved.origin_of(path);
    let mut problems = Vec::new();

    problems.extend(networking_checks(&c.custom_installer, "customInstaller", &at));
    let target = &c.custom_installer.target;
    if target.directory.is_some() && target.flake.is_some() {
        problems.push(
            Diagnostic::new(at("customInstaller.target.flake"), "both target.directory and target.flake are set; the target system must be one of them")
                .option("customInstaller.target.flake"),
        );
    }
    problems.extend(super::fleet_rules::checks(resolved));
    problems.extend(secure_boot_checks(resolved));

    let server = &c.boot_server;
    if let Some((network, prefix)) = server.subnet_parts() {
        let mut inside = |path: &str, addr: Option<Ipv4Addr>| {
            if let Some(addr) = addr
                && !schema::in_subnet(addr, network, prefix)
            {
                problems.push(
                    Diagnostic::new(at(path), format!("{addr} is outside bootServer.subnet {network}/{prefix}")).option(path),
                );
            }
        };
        inside("bootServer.address", server.address);
        inside("bootServer.dhcpRange.start", server.dhcp_range.start);
        inside("bootServer.dhcpRange.end", server.dhcp_range.end);
        inside("bootServer.router", server.router);
    }
    match (server.dhcp_range.start, server.dhcp_range.end) {
        (Some(start), Some(end)) if u32::from(start) > u32::from(end) => problems.push(
            Diagnostic::new(at("bootServer.dhcpRange.end"), format!("the range ends ({end}) before it starts ({start})"))
                .option("bootServer.dhcpRange.end"),
        ),
        (Some(_), None) | (None, Some(_)) => problems.push(
            Diagnostic::new(at("bootServer.dhcpRange.start"), "dhcpRange needs both start and end").option("bootServer.dhcpRange"),
        ),
        _ => {}
    }
    if let (Some(addr), Some(start), Some(end)) = (server.address, server.dhcp_range.start, server.dhcp_range.end)
        && (u32::from(start)..=u32::from(end)).contains(&u32::from(addr))
    {
        problems.push(
            Diagnostic::new(at("bootServer.dhcpRange.start"), format!("the range {start}-{end} contains the server's own address {addr}"))
                .option("bootServer.dhcpRange"),
        );
    }
    problems
}

/// The rules of `bootServer.secureBoot` that need no file: what it cannot do without, and the
/// firmware every installed disk is made for (Secure Boot is UEFI's; the signed boot file of
/// the installed system goes on an ESP). The key and certificate themselves are read by
/// `crate::secure_boot::keys` (`check` and `sign`).
pub fn secure_boot_checks(resolved: &Resolved) -> Vec<Diagnostic> {
    let c = &resolved.config;
    let sb = &c.boot_server.secure_boot;
    if !sb.enable {
        return Vec::new();
    }
    let at = |path: &str| resolved.origin_of(path);
    let enable = "bootServer.secureBoot.enable";
    let mut problems = Vec::new();
    let mut need = |present: bool, path: &str, why: &str, example: &str| {
        if !present {
            problems.push(Diagnostic::new(at(enable), format!("Secure Boot needs `{path}`: {why}")).option(path).hint(format!("set {path} = {example};")));
        }
    };
    need(sb.key_file.is_some(), "bootServer.secureBoot.keyFile", "the db key `nixos-pxe sign` signs with, on the boot server", "\"/var/lib/nixos-pxe-keys/db.key\"");
    need(sb.certificate_file.is_some(), "bootServer.secureBoot.certificateFile", "the db certificate the firmware has enrolled", "./keys/db.pem");
    need(c.boot_server.address.is_some(), "bootServer.address", "the signed command line names serve's HTTP endpoint there", "\"10.42.0.1\"");
    let uefi_only = |firmware: FirmwareSetting, path: &str| {
        (firmware != FirmwareSetting::Uefi).then(|| {
            Diagnostic::new(at(path), format!("\"{}\" cannot be installed with bootServer.secureBoot.enable: Secure Boot is UEFI's, and the installed system's signed boot file goes on an ESP", firmware.as_str()))
                .option(path)
                .hint(format!("set {path} = \"uefi\";"))
        })
    };
    problems.extend(uefi_only(c.custom_installer.firmware, "customInstaller.firmware"));
    for (name, host) in &c.fleet.hosts {
        let path = format!("fleet.hosts.{name}.customInstaller.firmware");
        if let Some(Ok(firmware)) = host.custom_installer.get("firmware").map(|v| serde_json::from_value::<FirmwareSetting>(v.clone())) {
            problems.extend(uefi_only(firmware, &path));
        }
    }
    problems
}

/// The rule between the two networking options of a `customInstaller` (the top-level one, or a
/// fleet host's merged one: `prefix` is where its options are).
pub fn networking_checks(installer: &CustomInstaller, prefix: &str, at: &dyn Fn(&str) -> crate::origin::Origin) -> Vec<Diagnostic> {
    let net = &installer.networking;
    if net.use_dhcp || net.static_interface_from_dhcp.is_some() {
        return Vec::new();
    }
    let option = format!("{prefix}.networking.useDHCP");
    vec![
        Diagnostic::new(at(&option), "useDHCP is false, so the installed system needs an interface for the static address")
            .option(&option)
            .hint(format!("set {prefix}.networking.staticInterfaceFromDHCP, e.g. \"enp1s0\"")),
    ]
}

/// Facts a server configuration cannot do without; `what` names the file being made.
pub fn require_server_facts(resolved: &Resolved, what: &str) -> Result<(), Vec<Diagnostic>> {
    let s = &resolved.config.boot_server;
    let mut missing = Vec::new();
    let source = crate::origin::Origin::File { file: resolved.source.clone() };
    let mut need = |present: bool, path: &str, example: &str| {
        if !present {
            missing.push(
                Diagnostic::new(source.clone(), format!("{what} needs `{path}`, which is not set"))
                    .option(path)
                    .hint(format!("set {path} = {example};")),
            );
        }
    };
    need(s.address.is_some(), "bootServer.address", "\"10.42.0.1\"");
    need(s.subnet.is_some(), "bootServer.subnet", "\"10.42.0.0/24\"");
    if s.dhcp_mode == DhcpMode::Authoritative {
        need(s.dhcp_range.start.is_some(), "bootServer.dhcpRange.start", "\"10.42.0.100\"");
        need(s.dhcp_range.end.is_some(), "bootServer.dhcpRange.end", "\"10.42.0.199\"");
    }
    if missing.is_empty() { Ok(()) } else { Err(missing) }
}

#[cfg(test)]
mod tests {
    use super::super::{Settings, resolve};
    use super::*;
    use crate::origin::{Location, Origin};
    use camino::Utf8Path;
    use serde_json::json;

    fn with(pairs: &[(&str, serde_json::Value)]) -> Result<Resolved, super::super::ConfigError> {
        let mut s = Settings::default();
        for (i, (path, value)) in pairs.iter().enumerate() {
            let spec = schema::find(path).expect("known option");
            s.define(spec, value.clone(), Origin::Defined(Location::new("t.nix", i as u32 + 1, 3))).expect("define");
        }
        resolve(&s, Utf8Path::new("t.nix"))
    }

    #[test]
    fn defaults_alone_make_the_seeds_config() {
        let r = with(&[]).expect("defaults are valid");
        let c = &r.config;
        assert_eq!(c.nfsroot.boot_loader.efinet_dhcp_interface, "efinet0");
        assert_eq!(c.nfsroot.boot_loader.linux_pnp_interface, "eth0");
        assert_eq!(c.custom_installer.root_device, "/dev/sda");
        assert_eq!(c.custom_installer.wipe, WipePolicy::IfEmpty);
        assert!(c.custom_installer.networking.use_dhcp);
        assert_eq!(c.boot_server.tftp_root, "/srv/tftp");
        assert_eq!(r.origin_of("customInstaller.rootDevice"), Origin::Default);
    }

    #[test]
    fn config_serializes_back_to_the_option_tree() {
        let r = with(&[("customInstaller.rootDevice", json!("/dev/nvme0n1"))]).expect("valid");
        let tree = serde_json::to_value(&r.config).expect("serialize");
        for e in r.effective.iter().filter(|e| !matches!(e.origin, Origin::Inherited { .. })) {
            let pointer = format!("/{}", e.option.replace('.', "/"));
            assert_eq!(tree.pointer(&pointer), Some(&e.value), "{}", e.option);
        }
    }

    #[test]
    fn static_networking_needs_an_interface() {
        let err = with(&[("customInstaller.networking.useDHCP", json!(false))]).unwrap_err();
        let d = &err.diagnostics()[0];
        assert_eq!(d.origin.location().map(|l| l.line), Some(1));
        assert!(d.hint.as_deref().unwrap_or_default().contains("staticInterfaceFromDHCP"));
        assert!(
            with(&[
                ("customInstaller.networking.useDHCP", json!(false)),
                ("customInstaller.networking.staticInterfaceFromDHCP", json!("enp1s0")),
            ])
            .is_ok()
        );
    }

    #[test]
    fn addresses_must_lie_in_the_subnet_and_range_must_be_ordered() {
        let err = with(&[
            ("bootServer.subnet", json!("10.42.0.0/24")),
            ("bootServer.address", json!("10.43.0.1")),
            ("bootServer.dhcpRange.start", json!("10.42.0.200")),
            ("bootServer.dhcpRange.end", json!("10.42.0.100")),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("t.nix:2:3: bootServer.address: 10.43.0.1 is outside"), "{text}");
        assert!(text.contains("ends (10.42.0.100) before it starts"), "{text}");
    }

    #[test]
    fn partition_separator_follows_the_kernel_rule() {
        let c = with(&[]).expect("valid").config.custom_installer;
        assert_eq!(c.separator_for("/dev/sda"), "");
        assert_eq!(c.separator_for("/dev/nvme0n1"), "p");
        assert_eq!(c.separator_for("/dev/loop3"), "p");
    }
}
