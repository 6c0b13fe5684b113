//! The GRUB configuration one machine gets, by its MAC, for a [`Decision`]
//! (templates/host.cfg.hbs): an install entry (after a look for the host's completion stamp on
//! the disks; a reinstall's entry does not look), a local-boot entry (this host's disk, then on
//! UEFI any systemd-boot or removable-media loader, else `exit` to the firmware), or a hold menu
//! saying why (no timeout, no reboot). One file serves both firmwares: bios.0 and bootx64.efi
//! load the same file, and it branches on GRUB's `$grub_platform` (`pc` or `efi`);
//! src/loader.rs puts the modules of each branch into that platform's image only.
//!
//! On UEFI local boot chainloads rather than `exit`s: GRUB 2.06's `exit` reports success to the
//! firmware, and an EDK2 firmware (OVMF, measured) then opens its boot manager instead of trying
//! its next boot option. chainloader hands the started loader `$root` as its device, so `$root`
//! is set to the ESP first (left at bootx64.efi's memdisk, chainloader fails with "not a valid
//! root device").
//! On BIOS the disk with this host's stamp is started by its MBR (`chainloader +1` of that
//! disk: GRUB's boot code, which starts the installed GRUB from the BIOS boot partition).
//! Without a stamp GRUB `exit`s: on i386-pc that is int 18h, and SeaBIOS then boots its next
//! boot device, the disk (measured, tests/render_pxe_boot.rs); GRUB cannot tell boot code in an
//! MBR from the empty one of a UEFI-only disk, so the BIOS's boot order decides.
//! The stamp lies in /boot: on the ESP, or in a BIOS layout's root file system (/boot/nixos-pxe/).
//! grub.cfg in bootx64.efi and bios.0 loads it from `(tftp)/nixos-pxe/hosts/mac-<mac>.cfg`.

use crate::fleet::decide::Decision;
use crate::fleet::marker::done_stamp;
use crate::config::fleet::{HostSpec, Mac};
use crate::config::Resolved;
use crate::error::Error;
use crate::schema::KERNEL_TFTP_PATH;
use serde_json::json;

/// Where the per-host files are below the TFTP root (and the HTTP root of serve).
pub const TFTP_DIR: &str = "nixos-pxe/hosts";

/// The file name of a MAC's configuration: `mac-52:54:00:ab:cd:01.cfg` (GRUB's
/// `$net_default_mac` spelling).
pub fn file_name(mac: &Mac) -> String {
    format!("mac-{mac}.cfg")
}

/// Where GRUB loads the installer kernel from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelFrom {
    /// `(tftp)/nixos/bzImage` from `$net_default_server`.
    Tftp,
    /// `(http,SERVER)/nixos/bzImage`; `server` as GRUB's http device takes it.
    Http { server: String },
}

/// What serve adds to an install entry: the attempt, its secret and where to report.
#[derive(Debug, Clone)]
pub struct Served<'a> {
    pub attempt: u32,
    /// The attempt's token (43 URL-safe base64 characters; kept hashed by the store).
    pub token: &'a str,
    /// serve's HTTP endpoint, `http://10.42.0.1:80`.
    pub report_url: &'a str,
    pub kernel: KernelFrom,
}

/// The install entry for `host` as `nixos-pxe render` writes it: no state, so no attempt
/// number, token or report URL, and the kernel over TFTP.
pub fn install_file(resolved: &Resolved, mac: &Mac, host: &HostSpec) -> Result<String, Error> {
    host_cfg(resolved, mac, Some(host), &Decision::Install { attempt: 1 }, None)
}

/// The configuration for the machine with `mac`: `host` is the fleet host it belongs to (`None`
/// for a stranger), `decision` what [`crate::fleet::decide::decide`] said, `served` what serve adds to
/// an install (without it the command line has no attempt, token or report URL).
pub fn host_cfg(resolved: &Resolved, mac: &Mac, host: Option<&HostSpec>, decision: &Decision, served: Option<&Served>) -> Result<String, Error> {
    let hb = super::engine()?;
    let generator = match served {
        Some(_) => "serve from its fleet and state".to_string(),
        None => format!("from {}", super::client_source_name(resolved)),
    };
    let name = host.map(|h| h.name.as_str()).unwrap_or_default();
    let generation = host.map(|h| h.generation).unwrap_or_default();
    let mut data = json!({
        "generator": generator,
        "mac": mac.to_string(),
        "host": name,
        "generation": generation,
        "stamp": done_stamp(name, generation),
        "self_path": format!("{TFTP_DIR}/{}", file_name(mac)),
        "timeout": resolved.config.nfsroot.boot_loader.timeout,
        "install": false,
        "stamp_search": false,
        "local": false,
        "hold": false,
    });
    match decision {
        Decision::Install { attempt } | Decision::Reinstall { attempt } => {
            let Some(host) = host else {
                return Err(Error::Message(format!("internal: an install decision for {mac}, which is in no fleet host")));
            };
            let mut fleet_args = format!("nixos-pxe.host={} nixos-pxe.generation={}", host.name, host.generation);
            let (device, server_text) = match served.map(|s| &s.kernel) {
                Some(KernelFrom::Http { server }) => (format!("http,{server}"), server.clone()),
                _ => ("tftp".to_string(), "$net_default_server".to_string()),
            };
            if let Some(served) = served {
                fleet_args.push_str(&format!(" nixos-pxe.attempt={attempt} nixos-pxe.token={} nixos-pxe.report={}", served.token, served.report_url));
            }
            let cmdline = super::cmdline_with(&hb, resolved, &mac.to_string(), &fleet_args)?;
            let attempt_text = served.map(|_| format!(", attempt {attempt}")).unwrap_or_default();
            let reinstall = matches!(decision, Decision::Reinstall { .. });
            data["install"] = true.into();
            // A reinstall of the same generation finds the old install's stamp on the disk.
            data["stamp_search"] = (!reinstall).into();
            data["reinstalling"] = reinstall.into();
            data["http"] = matches!(served.map(|s| &s.kernel), Some(KernelFrom::Http { .. })).into();
            data["attempt"] = served.map(|_| *attempt).into();
            let verb = if reinstall { "Reinstall" } else { "Install" };
            data["title"] = word(&format!("{verb} NixOS: {} (generation {}{attempt_text})", host.name, host.generation)).into();
            data["source_device"] = device.into();
            data["server_text"] = server_text.into();
            data["kernel"] = KERNEL_TFTP_PATH.into();
            data["cmdline"] = cmdline.into();
        }
        Decision::LocalBoot { why } => {
            data["local"] = true.into();
            data["local_stamp"] = host.map(|h| done_stamp(&h.name, h.generation)).unwrap_or_default().into();
            data["title"] = word(&format!("Boot from the disk: {why}")).into();
            data["why_line"] = word(&format!("nixos-pxe: {mac}{}: {why}: booting from the disk", host_suffix(host))).into();
        }
        Decision::Hold { why } => {
            data["hold"] = true.into();
            data["title"] = word(&format!("HOLD {mac}{}: {why}", host_suffix(host))).into();
            data["why_line"] = word(&format!("nixos-pxe: HOLD {mac}{}: {why}", host_suffix(host))).into();
        }
    }
    super::fill(&hb, "host.cfg", &data)
}

/// One file of every kind a machine of this fleet may be handed at boot (install over TFTP and
/// over HTTP, local boot for a host and for a stranger, hold): they are loaded at run time, so
/// bootx64.efi must hold every GRUB module they use (src/loader.rs builds it from these).
pub fn every_kind(resolved: &Resolved) -> Result<Vec<String>, Error> {
    let fleet = crate::config::fleet::Fleet::from_config(&resolved.config).map_err(|e| Error::Message(format!("internal: {e}")))?;
    let Some(host) = fleet.hosts.first() else { return Ok(Vec::new()) };
    let mac = host.macs.first().copied().unwrap_or(Mac::new([2, 0, 0, 0, 0, 1]));
    let server = resolved.config.boot_server.address.map(|a| a.to_string()).unwrap_or_else(|| "0.0.0.0".into());
    let served = Served { attempt: 1, token: "token", report_url: "http://0.0.0.0", kernel: KernelFrom::Http { server } };
    let why = || "why".to_string();
    Ok(vec![
        install_file(resolved, &mac, host)?,
        host_cfg(resolved, &mac, Some(host), &Decision::Install { attempt: 1 }, Some(&served))?,
        host_cfg(resolved, &mac, Some(host), &Decision::Reinstall { attempt: 2 }, Some(&served))?,
        host_cfg(resolved, &mac, Some(host), &Decision::LocalBoot { why: why() }, None)?,
        host_cfg(resolved, &mac, None, &Decision::LocalBoot { why: why() }, None)?,
        host_cfg(resolved, &mac, None, &Decision::Hold { why: why() }, None)?,
        unbound_cfg(&mac, "10.0.0.1"),
        wait_cfg(&mac, "why"),
    ])
}

/// How long a machine waits before it asks again when serve cannot decide now.
pub const WAIT_SECONDS: u32 = 30;

/// What a fleet host's file is when serve cannot decide now (its store is away, or another boot
/// server sharing it has just handed the host an attempt): no decision, no attempt, no token;
/// the machine says why, waits and reboots, which asks DHCP and serve again.
pub fn wait_cfg(mac: &Mac, why: &str) -> String {
    let why = word(&format!("nixos-pxe: no decision for {mac} now: {why}"));
    format!(
        "# Generated by nixos-pxe serve: no decision now; the machine waits and asks again.\n\
         set timeout=-1\n\
         echo {why}\n\
         echo 'nixos-pxe: asking again in {WAIT_SECONDS} s (a reboot: DHCP, then this file)'\n\
         sleep {WAIT_SECONDS}\n\
         reboot\n"
    )
}

/// What a fleet host's file is when asked for from an address serve's DHCP did not give that
/// MAC (a neighbour, or a machine whose DHCP serve never saw): no decision, no attempt, no
/// token; the machine waits and reboots, which asks DHCP again (and so binds its address).
pub fn unbound_cfg(mac: &Mac, client: &str) -> String {
    let why = word(&format!(
        "nixos-pxe: {mac} belongs to a fleet host, but this request came from {client}, not from the address serve's DHCP saw for {mac}: no install from here"
    ));
    format!(
        "# Generated by nixos-pxe serve: a fleet host's configuration asked for from an address its DHCP did not give that MAC.\n\
         set timeout=-1\n\
         echo {why}\n\
         echo 'nixos-pxe: rebooting in 30 s: the next boot asks DHCP again'\n\
         sleep 30\n\
         reboot\n"
    )
}

fn host_suffix(host: Option<&HostSpec>) -> String {
    host.map(|h| format!(" ({})", h.name)).unwrap_or_default()
}

/// `text` as one GRUB word that GRUB takes literally: single-quoted (`'` written as `'\''`),
/// control characters (a newline would end the command and start another) as spaces, and at
/// most 400 characters: a reason may quote an installer's error message.
pub fn word(text: &str) -> String {
    let mut clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.chars().count() > 400 {
        clean = clean.chars().take(397).collect::<String>() + "...";
    }
    format!("'{}'", clean.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fleet::Fleet;
    use serde_json::Value;

    fn resolved() -> Resolved {
        let pairs: &[(&str, Value)] = &[
            ("nfsroot.bootLoader.efinetDHCPInterface", json!("auto")),
            ("nfsroot.bootLoader.linuxPnPInterface", json!("auto")),
            ("bootServer.address", json!("10.42.0.1")),
            ("fleet.hosts.web1.macs", json!(["52:54:00:00:00:a1", "52:54:00:00:00:a2"])),
            ("fleet.hosts.web1.generation", json!(2)),
            ("fleet.hosts.web1.target.flake", json!("/f#web1")),
        ];
        crate::config::resolved_from(pairs, "fleet.nix")
    }

    fn mac(s: &str) -> Mac {
        s.parse().expect("mac")
    }

    #[test]
    fn render_install_entry_has_the_fleet_arguments_and_the_literal_mac() {
        let r = resolved();
        let fleet = Fleet::from_config(&r.config).expect("fleet");
        let host = fleet.host("web1").expect("host");
        let cfg = install_file(&r, &mac("52:54:00:00:00:a2"), host).expect("render");
        assert!(cfg.contains("menuentry 'Install NixOS: web1 (generation 2)' {"), "{cfg}");
        assert!(
            cfg.contains("linux (tftp)/nixos/bzImage console=ttyS0,115200n8 ip=dhcp root=/dev/nfs init=/init nixos-pxe.host=web1 nixos-pxe.generation=2 nixos-pxe.mac=52:54:00:00:00:a2; then"),
            "{cfg}"
        );
        // The stamp on an ESP, or in a BIOS layout's root /boot; a BIOS machine starts that disk's MBR.
        assert!(cfg.contains("  if ! search --no-floppy --file --set=done /nixos-pxe/done-web1-g2; then\n    if search --no-floppy --file --set=done /boot/nixos-pxe/done-web1-g2; then"), "{cfg}");
        assert!(cfg.contains("      regexp --set=1:disk '^([^,]+)' \"$done\"\n") && cfg.contains("      set root=$disk\n      chainloader +1\n      boot\n"), "{cfg}");
        assert!(!cfg.contains("nixos-pxe.token") && !cfg.contains("attempt") && !cfg.contains("http"), "{cfg}");
        assert!(cfg.starts_with("# Generated by nixos-pxe from fleet.nix: do not edit."), "{cfg}");
    }

    #[test]
    fn a_served_install_carries_attempt_token_report_and_http() {
        let r = resolved();
        let fleet = Fleet::from_config(&r.config).expect("fleet");
        let served = Served {
            attempt: 3,
            token: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ",
            report_url: "http://10.42.0.1:80",
            kernel: KernelFrom::Http { server: "10.42.0.1".into() },
        };
        let cfg = host_cfg(&r, &mac("52:54:00:00:00:a1"), fleet.host("web1"), &Decision::Install { attempt: 3 }, Some(&served)).expect("render");
        assert!(
            cfg.contains("linux (http,10.42.0.1)/nixos/bzImage console=ttyS0,115200n8 ip=dhcp root=/dev/nfs init=/init nixos-pxe.host=web1 nixos-pxe.generation=2 nixos-pxe.attempt=3 nixos-pxe.token=abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ nixos-pxe.report=http://10.42.0.1:80 nixos-pxe.mac=52:54:00:00:00:a1; then"),
            "{cfg}"
        );
        assert!(cfg.contains("installing generation 2, attempt 3"), "{cfg}");
        assert!(cfg.contains("\n  insmod http\n"), "{cfg}");
        assert!(cfg.contains("# Generated by nixos-pxe serve from its fleet and state"), "{cfg}");
    }

    /// A reinstall of the generation the disk has (`nixos-pxe fleet reinstall`): the disk carries
    /// that generation's completion stamp, so an entry that looked for it would boot the disk and
    /// undo the request. A first install's entry looks for it (its `installed` may have been lost).
    #[test]
    fn a_reinstall_does_not_boot_the_disk_by_its_stamp() {
        let r = resolved();
        let fleet = Fleet::from_config(&r.config).expect("fleet");
        let served = Served { attempt: 4, token: "t", report_url: "http://10.42.0.1:80", kernel: KernelFrom::Tftp };
        let m = mac("52:54:00:00:00:a1");
        let install = host_cfg(&r, &m, fleet.host("web1"), &Decision::Install { attempt: 4 }, Some(&served)).expect("render");
        assert!(install.contains("search --no-floppy --file --set=done /nixos-pxe/done-web1-g2"), "{install}");
        let reinstall = host_cfg(&r, &m, fleet.host("web1"), &Decision::Reinstall { attempt: 4 }, Some(&served)).expect("render");
        assert!(!reinstall.contains("done-web1") && !reinstall.contains("chainloader") && !reinstall.contains("search "), "{reinstall}");
        assert!(reinstall.contains("menuentry 'Reinstall NixOS: web1 (generation 2, attempt 4)' {"), "{reinstall}");
        assert!(reinstall.contains("nixos-pxe: 52:54:00:00:00:a1 is web1: reinstalling generation 2, attempt 4"), "{reinstall}");
        assert!(reinstall.contains("linux (tftp)/nixos/bzImage ") && reinstall.contains(" nixos-pxe.attempt=4 "), "{reinstall}");
    }

    #[test]
    fn local_boot_and_hold_say_why() {
        let r = resolved();
        let fleet = Fleet::from_config(&r.config).expect("fleet");
        let local = host_cfg(&r, &mac("52:54:00:00:00:a1"), fleet.host("web1"), &Decision::LocalBoot { why: "web1 generation 2 is installed".into() }, None).expect("render");
        assert!(local.contains("echo 'nixos-pxe: 52:54:00:00:00:a1 (web1): web1 generation 2 is installed: booting from the disk'"), "{local}");
        assert!(local.contains("search --no-floppy --file --set=done /nixos-pxe/done-web1-g2"), "{local}");
        assert!(local.contains("search --no-floppy --file --set=done /boot/nixos-pxe/done-web1-g2"), "{local}");
        assert!(local.contains("chainloader ($esp)/EFI/BOOT/BOOTX64.EFI") && local.contains("\n  exit\n"), "{local}");
        assert!(!local.contains("linux "), "{local}");
        assert!(local.contains("      set root=$done\n      if [ -f ($done)/EFI/systemd/systemd-bootx64.efi ]; then"), "{local}");
        // On BIOS: this host's disk by its stamp, else back to the BIOS's boot order.
        assert!(local.contains("  if [ \"$grub_platform\" = \"pc\" ]; then\n    insmod biosdisk\n  fi\n"), "{local}");
        assert!(local.contains("    echo \"nixos-pxe: returning to the BIOS, which boots its next boot device\"\n    exit\n"), "{local}");
        let stranger = host_cfg(&r, &mac("52:54:00:00:00:ff"), None, &Decision::LocalBoot { why: "not in the fleet".into() }, None).expect("render");
        assert!(!stranger.contains("done-") && stranger.contains("/EFI/BOOT/BOOTX64.EFI") && stranger.contains("\n  exit\n"), "{stranger}");
        assert!(stranger.contains("returning to the BIOS, which boots its next boot device"), "{stranger}");
        let hold = host_cfg(&r, &mac("52:54:00:00:00:ff"), None, &Decision::Hold { why: "it's not in the fleet".into() }, None).expect("render");
        assert!(hold.contains("set timeout=-1"), "{hold}");
        assert!(hold.contains("echo 'nixos-pxe: HOLD 52:54:00:00:00:ff: it'\\''s not in the fleet'"), "{hold}");
        assert!(hold.contains("configfile (tftp)/nixos-pxe/hosts/mac-52:54:00:00:00:ff.cfg"), "{hold}");
        assert!(!hold.lines().any(|l| l.trim() == "reboot") && !hold.contains("linux "), "{hold}");
        let err = host_cfg(&r, &mac("52:54:00:00:00:ff"), None, &Decision::Install { attempt: 1 }, None).unwrap_err();
        assert!(err.to_string().contains("in no fleet host"), "{err}");
    }

    #[test]
    fn words_cannot_break_out() {
        assert_eq!(word("a 'b' $c"), "'a '\\''b'\\'' $c'");
        assert_eq!(word("one\nreboot\r"), "'one reboot '");
        assert_eq!(word(&"x".repeat(500)).len(), 402);
    }

    /// Every kind of file, with a hostile reason, is a script GRUB accepts, and the reason stays
    /// inside its words (grub-script-check parses the file as GRUB 2.06 does).
    #[test]
    fn grub_accepts_every_kind_of_file() {
        let r = resolved();
        let fleet = Fleet::from_config(&r.config).expect("fleet");
        let host = fleet.host("web1");
        let hostile = "step disk: it's \"odd\" $x; }\nreboot\n{ menuentry";
        let served = Served { attempt: 1, token: "t", report_url: "http://10.42.0.1:80", kernel: KernelFrom::Tftp };
        let files = [
            install_file(&r, &mac("52:54:00:00:00:a1"), fleet.host("web1").expect("host")).expect("render"),
            host_cfg(&r, &mac("52:54:00:00:00:a1"), host, &Decision::Install { attempt: 1 }, Some(&served)).expect("render"),
            host_cfg(&r, &mac("52:54:00:00:00:a1"), host, &Decision::Reinstall { attempt: 2 }, Some(&served)).expect("render"),
            host_cfg(&r, &mac("52:54:00:00:00:a1"), host, &Decision::LocalBoot { why: hostile.into() }, None).expect("render"),
            host_cfg(&r, &mac("52:54:00:00:00:a1"), None, &Decision::LocalBoot { why: hostile.into() }, None).expect("render"),
            host_cfg(&r, &mac("52:54:00:00:00:a1"), host, &Decision::Hold { why: hostile.into() }, None).expect("render"),
            wait_cfg(&mac("52:54:00:00:00:a1"), hostile),
        ];
        let check = which::which("grub-script-check").expect("grub-script-check (grub-common) is needed for this test");
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, text) in files.iter().enumerate() {
            let path = dir.path().join(format!("{i}.cfg"));
            std::fs::write(&path, text).expect("write");
            let out = std::process::Command::new(&check).arg(&path).output().expect("run grub-script-check");
            assert!(out.status.success(), "file {i}:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
            // The hostile text never starts a line of its own.
            assert!(!text.lines().any(|l| l.trim_start().starts_with("reboot") && l.contains("{ menuentry")), "{text}");
            assert!(text.lines().filter(|l| l.trim() == "reboot").count() <= 1, "only the install entry's own reboot: {text}");
        }
    }
}
