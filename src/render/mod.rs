//! Renders grub.cfg, the kernel command line and the DHCP/TFTP/NFS server configurations from
//! the typed config: line-oriented files from templates/ (handlebars, strict), Kea's JSON with serde.
//! For a fleet also each host's GRUB configuration (`hosts/mac-<mac>.cfg`, install entries; see
//! [`crate::render::host_grub`]).

pub mod host_grub;

use crate::config::typed::{DhcpMode, require_server_facts};
use crate::config::{ConfigError, Resolved};
use crate::boot_file::{self, Firmware};
use crate::error::Error;
use crate::config::fleet::Fleet;
use crate::boot_file::Platform;
use crate::schema::{self, KERNEL_TFTP_PATH};
use camino::{Utf8Path, Utf8PathBuf};
use handlebars::Handlebars;
use serde_json::{Value, json};
use std::net::Ipv4Addr;

const TEMPLATES: &[(&str, &str)] = &[
    ("grub.cfg", include_str!("../../templates/grub.cfg.hbs")),
    ("grub-early.cfg", include_str!("../../templates/grub-early.cfg.hbs")),
    ("cmdline", include_str!("../../templates/cmdline.hbs")),
    ("dhcpd.conf", include_str!("../../templates/dhcpd.conf.hbs")),
    ("dnsmasq.conf", include_str!("../../templates/dnsmasq.conf.hbs")),
    ("exports", include_str!("../../templates/exports.hbs")),
    ("ganesha.conf", include_str!("../../templates/ganesha.conf.hbs")),
    ("host.cfg", include_str!("../../templates/host.cfg.hbs")),
];

/// One rendered file: its path below the output directory (`grub.cfg`, `hosts/mac-....cfg`)
/// and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub name: String,
    pub contents: String,
}

/// Where render puts the per-host files below its output directory; they go to
/// `<tftpRoot>/nixos-pxe/hosts/` on the boot server.
pub const HOSTS_DIR: &str = "hosts";

/// The template engine: strict (a missing value is an error, not an empty string) and without
/// HTML escaping (a kernel command line may hold `&` or `'`).
pub(crate) fn engine() -> Result<Handlebars<'static>, Error> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    for (name, text) in TEMPLATES {
        hb.register_template_string(name, *text)
            .map_err(|e| Error::Message(format!("internal: template {name} does not compile: {e}")))?;
    }
    // Booting from the disk, in grub.cfg (a stranger of a fleet) and in a host's file alike.
    // The per-host file is one file for both firmwares: these branch on $grub_platform inside.
    for (name, text) in [
        ("local_boot", include_str!("../../templates/local-boot.hbs")),
        ("find_stamp", include_str!("../../templates/find-stamp.hbs")),
        ("boot_stamped", include_str!("../../templates/boot-stamped.hbs")),
    ] {
        hb.register_partial(name, text).map_err(|e| Error::Message(format!("internal: template {name} does not compile: {e}")))?;
    }
    Ok(hb)
}

pub(crate) fn fill(hb: &Handlebars, name: &str, data: &Value) -> Result<String, Error> {
    hb.render(name, data).map_err(|e| Error::Message(format!("internal: rendering {name} failed: {e}")))
}

/// The file name shown in the generated files' headers.
pub(crate) fn source_name(resolved: &Resolved) -> String {
    resolved.source.to_string()
}

/// What the files a client can fetch (grub.cfg in the boot loader, the per-host files) say of
/// their source: the configuration's file name only, no path on the boot server.
pub(crate) fn client_source_name(resolved: &Resolved) -> String {
    resolved.source.file_name().unwrap_or("the configuration").to_string()
}

/// `SERVER:EXPORT,OPTIONS`: option 17 in authoritative mode, `nfsroot=` in proxy mode.
pub fn root_path(resolved: &Resolved) -> Option<String> {
    let s = &resolved.config.boot_server;
    s.address.map(|a| format!("{a}:{},{}", s.nfs_export, s.nfs_mount_options))
}

/// The kernel command line, e.g. `console=ttyS0,115200n8 ip=:::::eth0:dhcp: root=/dev/nfs init=/init`.
/// With `linuxPnPInterface = "auto"`: `ip=dhcp` and `nixos-pxe.mac=` the MAC of the NIC GRUB
/// booted from, as a GRUB variable that GRUB expands when it runs the `linux` command
/// (`$net_default_mac`, or `$net_efinetN_mac` after net_bootp on a named card).
pub fn cmdline(resolved: &Resolved) -> Result<String, Error> {
    let hb = engine()?;
    cmdline_with(&hb, resolved, &boot_mac(resolved, Platform::Efi), "")
}

/// The GRUB variable holding the MAC of the NIC grub.cfg configured on `platform`: the
/// firmware's boot NIC in auto mode, else the interface `net_bootp CARD` made (`CARD:dhcp`, whose
/// variables GRUB names with `_` for `:`).
fn boot_mac(resolved: &Resolved, platform: Platform) -> String {
    let boot_loader = &resolved.config.nfsroot.boot_loader;
    match platform {
        _ if boot_loader.efinet_auto() => "$net_default_mac".into(),
        Platform::Efi => format!("$net_{}_dhcp_mac", boot_loader.efinet_dhcp_interface),
        Platform::Pc => "$net_pxe_dhcp_mac".into(),
    }
}

/// The command line with `mac` as the value of nixos-pxe.mac= (when linuxPnPInterface is
/// "auto") and `fleet_args` (a fleet install's `nixos-pxe.host=...`) before it.
pub(crate) fn cmdline_with(hb: &Handlebars, resolved: &Resolved, mac: &str, fleet_args: &str) -> Result<String, Error> {
    let c = &resolved.config;
    let proxy = c.boot_server.dhcp_mode == DhcpMode::Proxy;
    if proxy {
        require_address(resolved, "the kernel command line in proxy mode (nfsroot=)")?;
    }
    let data = json!({
        "console": c.nfsroot.boot_loader.serial.device,
        "settings": c.nfsroot.boot_loader.serial.settings,
        "pnp": c.nfsroot.boot_loader.linux_pnp_interface,
        "pnp_auto": c.nfsroot.boot_loader.pnp_auto(),
        "mac": mac,
        "fleet_args": fleet_args,
        "init": c.nfsroot.init,
        "proxy": proxy,
        "nfsroot": root_path(resolved).unwrap_or_default(),
    });
    fill(hb, "cmdline", &data)
}

fn require_address(resolved: &Resolved, what: &str) -> Result<(), Error> {
    if resolved.config.boot_server.address.is_some() {
        return Ok(());
    }
    let facts = require_server_facts(resolved, what).err().unwrap_or_default();
    Err(ConfigError::Invalid(facts.into_iter().filter(|d| d.option.as_deref() == Some("bootServer.address")).collect()).into())
}

/// grub.cfg for `platform`: serial console, a menu entry that does DHCP on the network interface
/// (the configured efinetN on UEFI, `pxe` on BIOS), reads the TFTP server (option 66 of GRUB's own
/// lease, or the configured address in proxy mode) and boots the kernel.
pub fn grub_cfg(resolved: &Resolved, platform: Platform) -> Result<String, Error> {
    let hb = engine()?;
    grub_cfg_with(&hb, resolved, platform)
}

fn grub_cfg_with(hb: &Handlebars, resolved: &Resolved, platform: Platform) -> Result<String, Error> {
    fill(hb, "grub.cfg", &grub_data(hb, resolved, platform)?)
}

/// The early config grub-mkimage embeds with `-c`: GRUB's rescue parser runs it before normal mode
/// reads grub.cfg from the memdisk, so it holds plain commands only (the serial console).
pub fn grub_early_cfg(resolved: &Resolved, platform: Platform) -> Result<String, Error> {
    let hb = engine()?;
    fill(&hb, "grub-early.cfg", &grub_data(&hb, resolved, platform)?)
}

fn grub_data(hb: &Handlebars, resolved: &Resolved, platform: Platform) -> Result<Value, Error> {
    let c = &resolved.config;
    let serial = c.nfsroot.boot_loader.serial.parsed();
    let proxy = c.boot_server.dhcp_mode == DhcpMode::Proxy;
    let fleet = !c.fleet.hosts.is_empty();
    // GRUB's i386-pc pxe driver has one card, "pxe": the NIC whose PXE ROM loaded it.
    let nic = match platform {
        Platform::Efi => c.nfsroot.boot_loader.efinet_dhcp_interface.clone(),
        Platform::Pc => "pxe".to_string(),
    };
    Ok(json!({
        "title": if fleet { "NixOS fleet: this machine's configuration from the boot server" } else { "NixOS Installation" },
        "fleet": fleet,
        "hold": c.fleet.unknown_hosts == crate::config::typed::UnknownHosts::Hold,
        "hosts_dir": host_grub::TFTP_DIR,
        // A stranger has no stamp to look for.
        "local_stamp": "",
        "efinet_auto": c.nfsroot.boot_loader.efinet_auto(),
        "source": client_source_name(resolved),
        "platform": platform.grub_name(),
        "efi": platform == Platform::Efi,
        "image": platform.image_name(),
        "lib_flag": platform.lib_flag(),
        "nic": nic,
        "serial": {
            "unit": c.nfsroot.boot_loader.serial.unit(),
            "speed": serial.speed,
            "bits": serial.bits,
            "parity": serial.parity,
        },
        "timeout": c.nfsroot.boot_loader.timeout,
        "proxy": proxy,
        "server": c.boot_server.address.map(|a| a.to_string()).unwrap_or_default(),
        "kernel": KERNEL_TFTP_PATH,
        "cmdline": cmdline_with(hb, resolved, &boot_mac(resolved, platform), "")?,
    }))
}

/// Everything `nixos-pxe render` writes, in order. dhcpd.conf and kea-dhcp4.json are made only in
/// authoritative mode: neither server can act as a PXE proxy.
pub fn render_all(resolved: &Resolved) -> Result<Vec<Rendered>, Error> {
    require_server_facts(resolved, "`nixos-pxe render` (the DHCP, TFTP and NFS server configurations)").map_err(ConfigError::Invalid)?;
    let hb = engine()?;
    let data = server_data(resolved);
    let proxy = resolved.config.boot_server.dhcp_mode == DhcpMode::Proxy;
    let mut out = vec![
        Rendered { name: Platform::Efi.cfg_name().into(), contents: grub_cfg_with(&hb, resolved, Platform::Efi)? },
        Rendered { name: Platform::Pc.cfg_name().into(), contents: grub_cfg_with(&hb, resolved, Platform::Pc)? },
        Rendered { name: "cmdline".into(), contents: format!("{}\n", cmdline_with(&hb, resolved, &boot_mac(resolved, Platform::Efi), "")?) },
    ];
    if !proxy {
        out.push(Rendered { name: "dhcpd.conf".into(), contents: fill(&hb, "dhcpd.conf", &data)? });
        out.push(Rendered { name: "kea-dhcp4.json".into(), contents: kea_json(resolved)? });
    }
    for name in ["dnsmasq.conf", "exports", "ganesha.conf"] {
        out.push(Rendered { name: name.into(), contents: fill(&hb, name, &data)? });
    }
    out.extend(host_files(resolved)?);
    Ok(out)
}

/// For a fleet, `hosts/mac-<mac>.cfg` for each MAC of each host: its install entry (with the
/// check for the host's completion stamp). Without serve there is no state, so no attempt
/// number, token or report URL; a machine boots locally once installed only through the stamp
/// or the firmware's boot order (its disk first).
fn host_files(resolved: &Resolved) -> Result<Vec<Rendered>, Error> {
    let fleet = Fleet::from_config(&resolved.config).map_err(|e| Error::Message(format!("internal: {e}")))?;
    let mut files = Vec::new();
    for host in &fleet.hosts {
        for mac in &host.macs {
            files.push(Rendered {
                name: format!("{HOSTS_DIR}/{}", host_grub::file_name(mac)),
                contents: host_grub::install_file(resolved, mac, host)?,
            });
        }
    }
    Ok(files)
}

/// The values the server templates use; `require_server_facts` has checked the required ones.
fn server_data(resolved: &Resolved) -> Value {
    let s = &resolved.config.boot_server;
    let (network, prefix) = s.subnet_parts().unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
    let ip = |a: Option<Ipv4Addr>| a.map(|a| a.to_string()).unwrap_or_default();
    let dns: Vec<String> = s.name_servers.iter().map(Ipv4Addr::to_string).collect();
    json!({
        "source": source_name(resolved),
        "proxy": s.dhcp_mode == DhcpMode::Proxy,
        "interface": s.interface.clone().unwrap_or_default(),
        "address": ip(s.address),
        "network": network.to_string(),
        "netmask": schema::netmask(prefix).to_string(),
        "range_start": ip(s.dhcp_range.start),
        "range_end": ip(s.dhcp_range.end),
        "router": ip(s.router),
        "dns": dns.join(", "),
        "dns_list": dns.join(","),
        "domain": s.domain_name.clone().unwrap_or_default(),
        "lease": s.lease_seconds,
        "tftp_name": s.tftp_server_name().unwrap_or_default(),
        "root_path": root_path(resolved).unwrap_or_default(),
        "boot_files": boot_files(s.address.unwrap_or(Ipv4Addr::UNSPECIFIED), s.dhcp_mode == DhcpMode::Proxy),
        "tftp_root": s.tftp_root,
        "export": s.nfs_export,
        "clients": s.export_clients().unwrap_or_else(|| "*".into()),
    })
}

/// The boot file of each firmware (src/boot_file.rs), spelt for dhcpd.conf and dnsmasq.conf. In
/// proxy mode UEFI HTTP boot is left out: dnsmasq's proxy answers only the vendor class PXEClient.
fn boot_files(server: Ipv4Addr, proxy: bool) -> Vec<Value> {
    let firmwares = boot_file::ALL.into_iter().filter(|f| !(proxy && *f == Firmware::UefiHttp));
    firmwares
        .enumerate()
        .map(|(i, f)| {
            let archs: Vec<Value> = f
                .architectures()
                .iter()
                .map(|a| json!({ "num": a, "csa": dnsmasq_csa(*a) }))
                .collect();
            let nums: Vec<String> = f.architectures().iter().map(u16::to_string).collect();
            let isc: Vec<String> = f.architectures().iter().map(|a| format!("option arch = {:02x}:{:02x}", a >> 8, a & 0xff)).collect();
            json!({
                "tag": f.tag(),
                "description": f.description(),
                "archs": archs,
                "archs_text": nums.join(" or "),
                "isc_keyword": if i == 0 { "if" } else { "} elsif" },
                "isc_test": isc.join(" or "),
                "file": f.boot_file(server),
                "http": f == Firmware::UefiHttp,
                "vendor_class": boot_file::HTTP_CLIENT_VENDOR_CLASS,
            })
        })
        .collect()
}

/// dnsmasq's name for a client system architecture in pxe-service (its man page: "x86-64_EFI" is
/// 7 and "BC_EFI" 9); the number itself for others, which dnsmasq also accepts.
fn dnsmasq_csa(arch: u16) -> String {
    match arch {
        0 => "x86PC".into(),
        7 => "x86-64_EFI".into(),
        9 => "BC_EFI".into(),
        other => other.to_string(),
    }
}

/// Kea's configuration, built as JSON (never templated). Kea accepts a "comment" in most scopes.
pub fn kea_json(resolved: &Resolved) -> Result<String, Error> {
    let s = &resolved.config.boot_server;
    let ip = |a: Option<Ipv4Addr>| a.map(|a| a.to_string()).unwrap_or_default();
    let mut options = Vec::new();
    if let Some(router) = s.router {
        options.push(json!({ "name": "routers", "data": router.to_string() }));
    }
    if !s.name_servers.is_empty() {
        let dns: Vec<String> = s.name_servers.iter().map(Ipv4Addr::to_string).collect();
        options.push(json!({ "name": "domain-name-servers", "data": dns.join(", ") }));
    }
    if let Some(domain) = &s.domain_name {
        options.push(json!({ "name": "domain-name", "data": domain }));
    }
    // Always sent: GRUB reads option 66 and the kernel option 17 whether or not they asked.
    options.push(json!({ "name": "tftp-server-name", "data": s.tftp_server_name().unwrap_or_default(), "always-send": true }));
    // Kea splits option data at commas (csv-format); the root path's mount options keep theirs
    // escaped, else the kernel gets `SERVER:/path` without `,vers=3,tcp`.
    let root = root_path(resolved).unwrap_or_default().replace(',', "\\,");
    options.push(json!({ "name": "root-path", "data": root, "always-send": true }));
    let mut interfaces = json!({ "interfaces": [] });
    if let Some(interface) = &s.interface {
        interfaces = json!({ "interfaces": [interface] });
    }
    let config = json!({
        "Dhcp4": {
            "comment": format!(
                "Generated by nixos-pxe from {source}: do not edit; regenerate with `nixos-pxe render --config {source} --out DIR`.",
                source = source_name(resolved)
            ),
            "interfaces-config": interfaces,
            "authoritative": true,
            "valid-lifetime": s.lease_seconds,
            "lease-database": { "type": "memfile", "lfc-interval": 3600 },
            "client-classes": kea_classes(s.address.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            "subnet4": [{
                "id": 1,
                "subnet": s.subnet.clone().unwrap_or_default(),
                "pools": [{ "pool": format!("{} - {}", ip(s.dhcp_range.start), ip(s.dhcp_range.end)) }],
                "next-server": ip(s.address),
                "option-data": options,
            }],
        }
    });
    serde_json::to_string_pretty(&config)
        .map(|mut text| {
            text.push('\n');
            text
        })
        .map_err(|e| Error::Message(format!("internal: Kea JSON: {e}")))
}

/// One Kea client class per firmware: the boot file by option 93, the client's architecture; for
/// UEFI HTTP boot a URL and option 60 `HTTPClient`, always sent (the firmware takes no reply without it).
fn kea_classes(server: Ipv4Addr) -> Vec<Value> {
    boot_file::ALL
        .into_iter()
        .map(|f| {
            let test: Vec<String> = f.architectures().iter().map(|a| format!("option[93].hex == 0x{a:04x}")).collect();
            let nums: Vec<String> = f.architectures().iter().map(u16::to_string).collect();
            let mut class = json!({
                "name": f.tag(),
                "comment": format!("{}: option 93 (the client's architecture) = {}", f.description(), nums.join(" or ")),
                "test": test.join(" or "),
                "boot-file-name": f.boot_file(server),
            });
            if f == Firmware::UefiHttp {
                class["option-data"] = json!([{ "name": "vendor-class-identifier", "data": boot_file::HTTP_CLIENT_VENDOR_CLASS, "always-send": true }]);
            }
            class
        })
        .collect()
}

/// Writes every rendered file into `out` (created if missing). Each file is written to a
/// temporary name and renamed, and nothing is written unless all of them rendered.
pub fn write_all(resolved: &Resolved, out: &Utf8Path) -> Result<Vec<Utf8PathBuf>, Error> {
    let files = render_all(resolved)?;
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    if files.iter().any(|f| f.name.starts_with(HOSTS_DIR)) {
        let hosts = out.join(HOSTS_DIR);
        std::fs::create_dir_all(&hosts).map_err(Error::io(&hosts))?;
    }
    let written: Vec<Utf8PathBuf> = files.iter().map(|f| write_atomically(&out.join(&f.name), &f.contents)).collect::<Result<_, _>>()?;
    remove_stale(out, &files)?;
    Ok(written)
}

/// A switch to proxy mode leaves no authoritative dhcpd.conf or kea-dhcp4.json from an earlier
/// render behind for someone to start by mistake, and a MAC or host taken out of the fleet
/// leaves no install entry behind that would still install it. Only files this tool generated
/// are removed.
fn remove_stale(out: &Utf8Path, files: &[Rendered]) -> Result<(), Error> {
    let mut candidates: Vec<String> = ["dhcpd.conf", "kea-dhcp4.json"].map(String::from).to_vec();
    if let Ok(entries) = out.join(HOSTS_DIR).read_dir_utf8() {
        candidates.extend(entries.flatten().filter(|e| e.file_name().starts_with("mac-")).map(|e| format!("{HOSTS_DIR}/{}", e.file_name())));
    }
    for name in candidates {
        let path = out.join(&name);
        if files.iter().any(|f| f.name == name) || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().take(3).any(|l| l.contains("Generated by nixos-pxe")) {
            std::fs::remove_file(&path).map_err(Error::io(&path))?;
        }
    }
    Ok(())
}

/// Writes `contents` to `path` through a temporary file in the same directory.
pub fn write_atomically(path: &Utf8Path, contents: &str) -> Result<Utf8PathBuf, Error> {
    let tmp = Utf8PathBuf::from(format!("{path}.tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, contents).map_err(Error::io(&tmp)).and_then(|()| std::fs::rename(&tmp, path).map_err(Error::io(path)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, resolve};
    use crate::origin::Origin;

    fn resolved(pairs: &[(&str, Value)]) -> Resolved {
        let mut s = Settings::default();
        for (path, value) in pairs {
            s.define(schema::find(path).expect("option"), value.clone(), Origin::Default).expect("define");
        }
        resolve(&s, Utf8Path::new("site.nix")).expect("valid")
    }

    fn lab() -> Vec<(&'static str, Value)> {
        vec![
            ("bootServer.address", json!("10.42.0.1")),
            ("bootServer.subnet", json!("10.42.0.0/24")),
            ("bootServer.dhcpRange.start", json!("10.42.0.100")),
            ("bootServer.dhcpRange.end", json!("10.42.0.199")),
        ]
    }

    #[test]
    fn the_seeds_command_line() {
        assert_eq!(cmdline(&resolved(&[])).expect("render"), "console=ttyS0,115200n8 ip=:::::eth0:dhcp: root=/dev/nfs init=/init");
        let mut pairs = lab();
        pairs.push(("bootServer.dhcpMode", json!("proxy")));
        pairs.push(("nfsroot.bootLoader.linuxPnPInterface", json!("eth1")));
        assert_eq!(
            cmdline(&resolved(&pairs)).expect("render"),
            "console=ttyS0,115200n8 ip=:::::eth1:dhcp: root=/dev/nfs init=/init nfsroot=10.42.0.1:/srv/nixos/nfsroot,vers=3,tcp"
        );
    }

    #[test]
    fn grub_cfg_embeds_the_same_command_line_and_the_interface() {
        let r = resolved(&[("nfsroot.bootLoader.efinetDHCPInterface", json!("efinet1")), ("nfsroot.bootLoader.serial.device", json!("ttyS1"))]);
        let cfg = grub_cfg(&r, Platform::Efi).expect("render");
        let line = cmdline(&r).expect("render");
        assert!(cfg.contains(&format!("linux (tftp)/nixos/bzImage {line}; then")), "{cfg}");
        assert!(cfg.contains("net_bootp efinet1;"), "{cfg}");
        assert!(cfg.contains("net_get_dhcp_option net_default_server efinet1:dhcp 66 string"), "{cfg}");
        assert!(cfg.contains("serial --unit=1 --speed=115200 --word=8 --parity=no --stop=1"), "{cfg}");
        assert!(!cfg.contains("&amp;") && !cfg.contains("{{"), "{cfg}");
    }

    /// BIOS: GRUB's pxe card whatever efinetDHCPInterface says, the pxe module and no EFI-only
    /// module; the same command line and the same way to the server as on UEFI.
    #[test]
    fn bios_grub_cfg_uses_the_pxe_card_and_no_efi_module() {
        let r = resolved(&[("nfsroot.bootLoader.efinetDHCPInterface", json!("efinet1"))]);
        let (efi, bios) = (grub_cfg(&r, Platform::Efi).expect("render"), grub_cfg(&r, Platform::Pc).expect("render"));
        for want in ["insmod pxe\n", "net_bootp pxe;", "$net_pxe_dhcp_ip", "net_get_dhcp_option net_default_server pxe:dhcp 66 string"] {
            assert!(bios.contains(want), "{want}: {bios}");
        }
        for unwanted in ["efinet", "efi_gop", "efinetDHCPInterface"] {
            assert!(!bios.contains(unwanted), "{unwanted}: {bios}");
        }
        assert!(efi.contains("insmod efinet\n") && efi.contains("insmod efi_gop\n") && !efi.contains("insmod pxe"), "{efi}");
        let line = format!("linux (tftp)/nixos/bzImage {}; then", cmdline(&r).expect("render"));
        assert!(efi.contains(&line) && bios.contains(&line), "{bios}");
    }

    /// The early config runs in GRUB's rescue parser: no comment, no `;`, no `if`, one command a line.
    #[test]
    fn the_early_config_has_only_plain_commands() {
        for platform in [Platform::Efi, Platform::Pc] {
            let early = grub_early_cfg(&resolved(&[]), platform).expect("render");
            let commands: Vec<&str> = early.lines().filter_map(|l| l.split_whitespace().next()).collect();
            assert_eq!(commands, ["serial", "terminal_input", "terminal_output", "echo"], "{early}");
            assert!(!early.contains(';') && !early.contains('#'), "{early}");
            assert!(early.contains(&format!("({})", platform.grub_name())) && early.contains(platform.image_name()), "{early}");
        }
    }

    #[test]
    fn auto_interfaces_keep_the_firmwares_lease_and_pass_the_boot_mac() {
        let r = resolved(&[("nfsroot.bootLoader.efinetDHCPInterface", json!("auto")), ("nfsroot.bootLoader.linuxPnPInterface", json!("auto"))]);
        let line = cmdline(&r).expect("render");
        assert_eq!(line, "console=ttyS0,115200n8 ip=dhcp root=/dev/nfs init=/init nixos-pxe.mac=$net_default_mac");
        for platform in [Platform::Efi, Platform::Pc] {
            let cfg = grub_cfg(&r, platform).expect("render");
            assert!(!cfg.contains("net_bootp") && !cfg.contains(" 66 string"), "{cfg}");
            assert!(cfg.contains(&format!("linux (tftp)/nixos/bzImage {line}; then")), "{cfg}");
        }
        // A named card for GRUB, "auto" for the kernel: the MAC of the interface net_bootp made
        // (efinet1:dhcp, whose variables GRUB names net_efinet1_dhcp_*; on BIOS pxe:dhcp).
        let r = resolved(&[("nfsroot.bootLoader.efinetDHCPInterface", json!("efinet1")), ("nfsroot.bootLoader.linuxPnPInterface", json!("auto"))]);
        assert!(cmdline(&r).expect("render").ends_with(" ip=dhcp root=/dev/nfs init=/init nixos-pxe.mac=$net_efinet1_dhcp_mac"));
        let efi = grub_cfg(&r, Platform::Efi).expect("render");
        assert!(efi.contains("net_bootp efinet1;") && efi.contains("nixos-pxe.mac=$net_efinet1_dhcp_mac;"), "{efi}");
        let bios = grub_cfg(&r, Platform::Pc).expect("render");
        assert!(bios.contains("net_bootp pxe;") && bios.contains("nixos-pxe.mac=$net_pxe_dhcp_mac;"), "{bios}");
    }

    #[test]
    fn proxy_mode_names_the_server_and_makes_no_isc_or_kea_config() {
        let mut pairs = lab();
        pairs.push(("bootServer.dhcpMode", json!("proxy")));
        let r = resolved(&pairs);
        for platform in [Platform::Efi, Platform::Pc] {
            let cfg = grub_cfg(&r, platform).expect("render");
            assert!(cfg.contains("set net_default_server=10.42.0.1"), "{cfg}");
            assert!(!cfg.contains(" 66 string"), "{cfg}");
        }
        let names: Vec<String> = render_all(&r).expect("render").iter().map(|f| f.name.clone()).collect();
        assert_eq!(names, ["grub.cfg", "grub-bios.cfg", "cmdline", "dnsmasq.conf", "exports", "ganesha.conf"]);
    }

    #[test]
    fn switching_to_proxy_mode_removes_only_generated_dhcp_configs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Utf8Path::from_path(dir.path()).expect("utf-8");
        write_all(&resolved(&lab()), out).expect("authoritative");
        assert!(out.join("dhcpd.conf").is_file() && out.join("kea-dhcp4.json").is_file());
        std::fs::write(out.join("kea-dhcp4.json"), "{}\n").expect("a file of the operator's own");
        let mut pairs = lab();
        pairs.push(("bootServer.dhcpMode", json!("proxy")));
        write_all(&resolved(&pairs), out).expect("proxy");
        assert!(!out.join("dhcpd.conf").exists(), "the generated dhcpd.conf is gone");
        assert_eq!(std::fs::read_to_string(out.join("kea-dhcp4.json")).expect("kept"), "{}\n");
        // And the other way round: a generated kea-dhcp4.json goes, the operator's dhcpd.conf stays.
        write_all(&resolved(&lab()), out).expect("authoritative again");
        std::fs::write(out.join("dhcpd.conf"), "# mine\n").expect("a file of the operator's own");
        write_all(&resolved(&pairs), out).expect("proxy again");
        assert!(!out.join("kea-dhcp4.json").exists(), "the generated kea-dhcp4.json is gone");
        assert_eq!(std::fs::read_to_string(out.join("dhcpd.conf")).expect("kept"), "# mine\n");
    }

    #[test]
    fn server_configs_need_the_server_facts() {
        let err = render_all(&resolved(&[])).unwrap_err().to_string();
        assert!(err.contains("`nixos-pxe render` (the DHCP, TFTP and NFS server configurations) needs `bootServer.address`"), "{err}");
        assert!(err.contains("bootServer.dhcpRange.end"), "{err}");
    }

    #[test]
    fn kea_gets_options_66_and_17_always_sent() {
        let kea: Value = serde_json::from_str(&kea_json(&resolved(&lab())).expect("render")).expect("json");
        let options = &kea["Dhcp4"]["subnet4"][0]["option-data"];
        assert_eq!(options[0]["name"], "tftp-server-name");
        assert_eq!(options[1]["data"], "10.42.0.1:/srv/nixos/nfsroot\\,vers=3\\,tcp");
        assert_eq!(options[1]["always-send"], true);
    }

    /// What each DHCP config hands a client of architecture `arch` (None: no option 93):
    /// (boot file, option 60), read from the rendered text the way the daemon reads it, for the
    /// subset of its syntax the templates use. tests/boot_file_by_arch.rs asks the real daemons.
    type Answer = Option<(String, Option<String>)>;

    fn isc_answer(conf: &str, arch: Option<u16>) -> Answer {
        let mut matched = false;
        let (mut file, mut vendor) = (None, None);
        for line in conf.lines().map(str::trim) {
            let test = line.strip_prefix("if ").or_else(|| line.strip_prefix("} elsif ")).filter(|t| t.starts_with("option arch"));
            if let Some(test) = test {
                if file.is_some() {
                    break;
                }
                let archs: Vec<u16> = test.trim_end_matches(" {").split(" or ").map(|t| {
                    let hex = t.strip_prefix("option arch = ").expect("option arch = XX:YY").replace(':', "");
                    u16::from_str_radix(&hex, 16).expect("hex")
                }).collect();
                matched = arch.is_some_and(|a| archs.contains(&a));
            } else if line == "}" {
                matched = false;
            } else if matched {
                let quoted = |l: &str| l.split('"').nth(1).map(str::to_string);
                if line.starts_with("filename ") {
                    file = quoted(line);
                } else if line.starts_with("option vendor-class-identifier ") {
                    vendor = quoted(line);
                }
            }
        }
        file.map(|f| (f, vendor))
    }

    fn dnsmasq_answer(conf: &str, arch: Option<u16>) -> Answer {
        let mut tags = Vec::new();
        let (mut file, mut vendor) = (None, None);
        for line in conf.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            let fields: Vec<&str> = value.split(',').collect();
            let tagged = |f: &str| f.strip_prefix("tag:").is_some_and(|t| tags.iter().any(|x| x == t));
            match key {
                "dhcp-match" if arch.is_some_and(|a| fields[2].parse::<u16>() == Ok(a)) && fields[1] == "option:client-arch" => {
                    tags.push(fields[0].strip_prefix("set:").expect("set:").to_string());
                }
                "dhcp-boot" if tagged(fields[0]) => file = Some(fields[1].to_string()),
                "dhcp-option-force" if tagged(fields[0]) && fields[1] == "option:vendor-class" => vendor = Some(fields[2].to_string()),
                "pxe-service" if tagged(fields[0]) && arch.map(dnsmasq_csa).as_deref() == Some(fields[1]) => file = Some(fields[3].to_string()),
                _ => {}
            }
        }
        file.map(|f| (f, vendor))
    }

    fn kea_answer(kea: &Value, arch: Option<u16>) -> Answer {
        let classes = kea["Dhcp4"]["client-classes"].as_array().expect("client-classes");
        let class = classes.iter().find(|c| {
            let test = c["test"].as_str().expect("test");
            test.split(" or ").any(|t| {
                let hex = t.strip_prefix("option[93].hex == 0x").expect("option[93].hex == 0xNNNN");
                arch == Some(u16::from_str_radix(hex, 16).expect("hex"))
            })
        })?;
        let vendor = class["option-data"].as_array().and_then(|o| {
            o.iter().find(|d| d["name"] == "vendor-class-identifier" && d["always-send"] == true).map(|d| d["data"].as_str().expect("data").to_string())
        });
        Some((class["boot-file-name"].as_str().expect("boot-file-name").to_string(), vendor))
    }

    /// What src/boot_file.rs says a client of `arch` gets, and in proxy mode (no HTTP boot there).
    fn expected(arch: Option<u16>, proxy: bool) -> Answer {
        let firmware = arch.and_then(Firmware::from_architecture).filter(|f| !(proxy && *f == Firmware::UefiHttp))?;
        let vendor = (firmware == Firmware::UefiHttp).then(|| "HTTPClient".to_string());
        Some((firmware.boot_file(Ipv4Addr::new(10, 42, 0, 1)), vendor))
    }

    #[test]
    fn every_dhcp_config_hands_each_architecture_its_boot_file() {
        let mut proxy = lab();
        proxy.push(("bootServer.dhcpMode", json!("proxy")));
        let authoritative = render_all(&resolved(&lab())).expect("render");
        let proxy = render_all(&resolved(&proxy)).expect("render");
        let file = |files: &[Rendered], name: &str| files.iter().find(|f| f.name == name).expect(name).contents.clone();
        let kea: Value = serde_json::from_str(&file(&authoritative, "kea-dhcp4.json")).expect("json");
        let archs = std::iter::once(None).chain((0..=20).map(Some));
        for arch in archs {
            let want = expected(arch, false);
            assert_eq!(isc_answer(&file(&authoritative, "dhcpd.conf"), arch), want, "dhcpd.conf, arch {arch:?}");
            assert_eq!(kea_answer(&kea, arch), want, "kea-dhcp4.json, arch {arch:?}");
            assert_eq!(dnsmasq_answer(&file(&authoritative, "dnsmasq.conf"), arch), want, "dnsmasq.conf, arch {arch:?}");
            assert_eq!(dnsmasq_answer(&file(&proxy, "dnsmasq.conf"), arch), expected(arch, true), "proxy dnsmasq.conf, arch {arch:?}");
        }
        // The table itself, spelt out once: BIOS, UEFI PXE twice, UEFI HTTP.
        assert_eq!(expected(Some(0), false), Some(("bios.0".into(), None)));
        assert_eq!(expected(Some(9), false), Some(("bootx64.efi".into(), None)));
        assert_eq!(expected(Some(16), false), Some(("http://10.42.0.1/bootx64.efi".into(), Some("HTTPClient".into()))));
    }
}
