//! The init of the NFS root (PID 1, `init=/init`): makes the read-only root writable (overlayfs,
//! or unionfs-fuse), runs the installer, then reboots; a failure leaves a root shell, never a panic.

use crate::config::typed::{AfterInstall, WritableLayer};
use crate::config::{self, Config, SourceMode};
use crate::install::{host, kernel_args, say};
use crate::secure_boot::decision::HostDecision;
use std::ffi::CString;
use std::process::ExitCode;
use std::time::Instant;

/// Where the configuration is on the NFS root.
pub const CONFIG: &str = "/nixos-pxe/config.json";
/// The tmpfs that holds the writable layer: on /tmp, an empty directory of the NFS root (nothing
/// can be created on the read-only root, so the mount point must exist there).
pub const TMPFS: &str = "/tmp";
/// Where in that tmpfs the layer's directories are and the writable root is assembled.
pub const LAYER: &str = "/tmp/nixos-pxe";
/// PATH for the installer: the NFS root's tools first, then where a NixOS or Debian root keeps programs.
pub const PATH: &str = "/nixos-pxe/tools/bin:/nixos-pxe/tools/sbin:/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One mount init makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOp {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub data: String,
}

fn op(source: &str, target: &str, fstype: &str, data: &str) -> MountOp {
    MountOp { source: source.into(), target: target.into(), fstype: fstype.into(), data: data.into() }
}

/// The mounts that make the writable root at `LAYER/root` with overlayfs (unionfs-fuse is a
/// program, run instead of the last mount).
pub fn writable_root_mounts() -> Vec<MountOp> {
    vec![
        op("tmpfs", TMPFS, "tmpfs", "mode=1777"),
        op(
            "overlay",
            &format!("{LAYER}/root"),
            "overlay",
            &format!("lowerdir=/,upperdir={LAYER}/upper,workdir={LAYER}/work"),
        ),
    ]
}

/// unionfs-fuse's command line for the same layout (the seed's way; options libfuse 2 and 3 both take).
pub fn unionfs_command() -> Vec<String> {
    vec![
        "unionfs".into(),
        "-o".into(),
        "cow,allow_other,suid,dev,use_ino".into(),
        format!("{LAYER}/upper=RW:/=RO"),
        format!("{LAYER}/root"),
    ]
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("`{s}` contains a NUL byte"))
}

fn mount(m: &MountOp, flags: libc::c_ulong) -> Result<(), String> {
    let (src, tgt, fs, data) = (cstr(&m.source)?, cstr(&m.target)?, cstr(&m.fstype)?, cstr(&m.data)?);
    let data_ptr = if m.data.is_empty() { std::ptr::null() } else { data.as_ptr() as *const libc::c_void };
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), flags, data_ptr) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("mount -t {} {} {} -o {}: {}", m.fstype, m.source, m.target, m.data, std::io::Error::last_os_error()))
    }
}

fn move_mount(from: &str, to: &str) -> Result<(), String> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: valid strings; MS_MOVE ignores the file system type and data.
    let rc = unsafe { libc::mount(f.as_ptr(), t.as_ptr(), std::ptr::null(), libc::MS_MOVE, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(format!("moving the mount {from} to {to}: {}", std::io::Error::last_os_error())) }
}

fn is_mounted(target: &str) -> bool {
    std::fs::read_to_string("/proc/mounts").unwrap_or_default().lines().any(|l| l.split_whitespace().nth(1) == Some(target))
}

/// Each step on the console, timed from init's start.
struct Log(Instant);

impl Log {
    fn step(&self, what: &str) {
        say(&format!("init [{:6.2} s] {what}", self.0.elapsed().as_secs_f64()));
    }
}

/// Mounts /proc, /sys and /dev, unless the kernel did.
fn mount_kernel_file_systems(log: &Log) -> Result<(), String> {
    for m in [op("proc", "/proc", "proc", ""), op("sysfs", "/sys", "sysfs", "")] {
        if !is_mounted(&m.target) {
            mount(&m, 0)?;
        }
    }
    if !is_mounted("/dev") {
        mount(&op("devtmpfs", "/dev", "devtmpfs", "mode=0755"), 0)?;
    }
    log.step("mounted /proc, /sys, /dev");
    Ok(())
}

/// Mounts /proc, /sys and /dev (unless the kernel did), builds the writable root and moves into it.
fn make_root_writable(log: &Log) -> Result<(AfterInstall, WritableLayer), String> {
    mount_kernel_file_systems(log)?;
    let resolved = config::load(camino::Utf8Path::new(CONFIG), SourceMode::Static).map_err(|e| format!("reading {CONFIG}: {e}"))?;
    let c = resolved.config;
    let after = after_install(&c, &std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let layer = c.nfsroot.writable_layer;
    let mounts = writable_root_mounts();
    mount(&mounts[0], 0)?;
    for dir in ["upper", "work", "root"] {
        std::fs::create_dir_all(format!("{LAYER}/{dir}")).map_err(|e| format!("mkdir {LAYER}/{dir}: {e}"))?;
    }
    match layer {
        WritableLayer::Overlayfs => mount(&mounts[1], 0)?,
        WritableLayer::UnionfsFuse => {
            let argv = unionfs_command();
            let status = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .env("PATH", PATH)
                .status()
                .map_err(|e| format!("running {}: {e}", argv.join(" ")))?;
            if !status.success() {
                return Err(format!("{} failed ({status})", argv.join(" ")));
            }
        }
    }
    log.step(&format!("writable root: {} over the read-only NFS root, changes in a tmpfs", layer.as_str()));
    let new_root = format!("{LAYER}/root");
    for dir in ["/proc", "/sys", "/dev"] {
        move_mount(dir, &format!("{new_root}{dir}"))?;
    }
    std::env::set_current_dir(&new_root).map_err(|e| format!("cd {new_root}: {e}"))?;
    let dot = cstr(".")?;
    let switched = match layer {
        WritableLayer::Overlayfs => {
            std::fs::create_dir_all("oldroot").map_err(|e| format!("mkdir {new_root}/oldroot: {e}"))?;
            let old = cstr("oldroot")?;
            // SAFETY: pivot_root has no libc wrapper; both arguments are valid paths.
            let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), old.as_ptr()) };
            if rc != 0 {
                return Err(format!("pivot_root into {new_root}: {}", std::io::Error::last_os_error()));
            }
            "switched into the writable root (pivot_root; the NFS root stays at /oldroot)"
        }
        // No pivot_root: it would also move the unionfs daemon's root into the union, and its
        // branch `/` would then be the union itself (every lookup would wait on itself). Only
        // init changes its root; the daemon keeps the NFS root as its `/`.
        WritableLayer::UnionfsFuse => "switched into the writable root (chroot; unionfs-fuse keeps the NFS root)",
    };
    // SAFETY: chroot to the new root we are in (after pivot_root, `/` is already there; the
    // chroot makes that hold for this process whatever pivot_root did to its root).
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(format!("chroot into {new_root}: {}", std::io::Error::last_os_error()));
    }
    let _ = std::env::set_current_dir("/");
    mount(&op("tmpfs", "/run", "tmpfs", "mode=0755"), 0)?;
    log.step(switched);
    Ok((after, layer))
}

/// What follows the install: `customInstaller.afterInstall`, of the fleet host the kernel command
/// line names when there is one (a host may override it). When the command line or the host is
/// wrong, the top-level value: the installer then fails saying why, and init leaves a shell.
fn after_install(config: &Config, cmdline: &str) -> AfterInstall {
    kernel_args::parse(cmdline)
        .ok()
        .and_then(|args| host::select(config, camino::Utf8Path::new(CONFIG), &args).ok())
        .map_or(config.custom_installer.after_install, |selected| selected.config.custom_installer.after_install)
}

/// A root shell on the console, forever: PID 1 must not exit.
fn rescue(reason: &str) -> ! {
    say(reason);
    say("dropping to a root shell on the console; the installer's log is above");
    loop {
        match std::process::Command::new("sh").env("PATH", PATH).env("PS1", "nixos-pxe rescue# ").status() {
            Ok(status) => say(&format!("the shell exited ({status}); starting another")),
            Err(e) => {
                say(&format!("cannot start sh ({e}); the machine waits here"));
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}

fn finish(after: AfterInstall) -> ! {
    let (cmd, word) = match after {
        AfterInstall::Reboot => (libc::RB_AUTOBOOT, "rebooting"),
        AfterInstall::Poweroff => (libc::RB_POWER_OFF, "powering off"),
        AfterInstall::Halt => (libc::RB_HALT_SYSTEM, "halting"),
    };
    say(&format!("{word} (customInstaller.afterInstall)"));
    restart(cmd, word)
}

/// Syncs and restarts (or powers off, halts) the machine; a root shell if that fails.
fn restart(cmd: libc::c_int, word: &str) -> ! {
    // SAFETY: sync then reboot(2); as PID 1 we may.
    unsafe {
        libc::sync();
        libc::reboot(cmd);
    }
    rescue(&format!("{word} failed: {}", std::io::Error::last_os_error()))
}

/// Where the manifest is when init runs from the signed initrd (Secure Boot mode): `nixos-pxe
/// sign` appends it to the initrd, and nothing else puts it there.
fn signed_manifest() -> String {
    format!("/{}", crate::secure_boot::MANIFEST_PATH)
}

/// Where the kernel shows the firmware's variables when efivarfs is mounted.
const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// Secure Boot mode: init runs from the initrd of the unified kernel image `nixos-pxe sign` made,
/// which the firmware verified whole against db before running it (systemd-stub, the kernel,
/// this initrd with the configuration and the manifest, the command line). It says what the
/// firmware enforced (its SecureBoot variable), unpacks the installer's programs checked against
/// the manifest, asks serve what this machine does (a fleet), and runs the installer with the
/// manifest: the system image is checked whole before the disk is touched (src/install/secure.rs).
fn signed_initrd(log: &Log) -> ! {
    say("init: nixos-pxe is PID 1 in the signed initrd (Secure Boot mode: kernel, initrd and command line were one signed image)");
    // SAFETY: setting variables before any thread exists.
    unsafe {
        std::env::set_var("PATH", PATH);
        std::env::set_var("HOME", "/root");
        std::env::set_var("TERM", "linux");
    }
    if let Err(e) = mount_kernel_file_systems(log) {
        rescue(&format!("init FAILED: {e}"));
    }
    // The installer writes /etc/resolv.conf; an initrd need not have /etc.
    if let Err(e) = std::fs::create_dir_all("/etc") {
        rescue(&format!("init FAILED: mkdir /etc: {e}"));
    }
    if !std::path::Path::new("/sys/firmware/efi").is_dir() {
        say("init: no /sys/firmware/efi: the kernel was not started by UEFI, or has no EFI support");
    } else if !std::path::Path::new(EFIVARS).is_dir() {
        say(&format!("init: no {EFIVARS}: the kernel cannot reach the firmware's variable services"));
    } else if !is_mounted(EFIVARS) {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if let Err(e) = mount(&op("efivarfs", EFIVARS, "efivarfs", ""), flags) {
            say(&format!("init: {e}: the firmware's variables cannot be read"));
        }
    }
    let state = match crate::install::efivars::secure_boot(camino::Utf8Path::new(EFIVARS)) {
        Some(true) => "enforced (the firmware's SecureBoot variable is 1)".to_string(),
        Some(false) => "off (the firmware's SecureBoot variable is 0; the signed image runs anywhere)".to_string(),
        None => format!(
            "unknown (no SecureBoot variable among the {} variables {EFIVARS} lists)",
            std::fs::read_dir(EFIVARS).map(|d| d.count()).unwrap_or(0)
        ),
    };
    log.step(&format!("Secure Boot: {state}"));
    let manifest_path = signed_manifest();
    let manifest = match crate::install::secure::load_manifest(camino::Utf8Path::new(&manifest_path)) {
        Ok(m) => m,
        Err(e) => rescue(&format!("init FAILED: {e}")),
    };
    log.step(&format!(
        "the signed manifest: the installer's tools ({} bytes) and {} system image(s) from {}, each checked chunk by chunk",
        manifest.tools.size,
        manifest.images.len(),
        manifest.server
    ));
    let resolved = match config::load(camino::Utf8Path::new(CONFIG), SourceMode::Static) {
        Ok(r) => r,
        Err(e) => rescue(&format!("init FAILED: reading {CONFIG}: {e}")),
    };
    let mut cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default().trim().to_string();
    let fleet = crate::config::fleet::Fleet::from_config(&resolved.config).map(|f| !f.is_empty()).unwrap_or(false);
    if fleet {
        let nic = match crate::install::steps::configured_nic(camino::Utf8Path::new("/sys/class/net")) {
            Ok(nic) => nic,
            Err(e) => rescue(&format!("init FAILED: {e}")),
        };
        let Some(mac) = nic.mac else { rescue(&format!("init FAILED: {} has no MAC address to ask the boot server with", nic.name)) };
        match crate::install::secure::host_decision(&manifest, &mac.to_string()) {
            Ok(HostDecision::Install { words }) => {
                log.step(&format!("the boot server says: install ({})", redact_token(&words)));
                cmdline = format!("{cmdline} {words}");
            }
            Ok(HostDecision::LocalBoot { why }) => boot_the_disk(log, &why),
            Ok(HostDecision::Hold { why } | HostDecision::Wait { why }) => wait_and_ask_again(&why),
            Err(e) => wait_and_ask_again(&format!("the boot server's decision for {mac}: {e}")),
        }
    }
    let after = after_install(&resolved.config, &cmdline);
    let cmdline_file = "/run/nixos-pxe-cmdline";
    if let Err(e) = std::fs::write(cmdline_file, format!("{cmdline}\n")) {
        rescue(&format!("init FAILED: writing {cmdline_file}: {e}"));
    }
    log.step(&format!("fetching the installer's programs from {}", manifest.server));
    if let Err(e) = crate::install::secure::unpack_tools(&manifest, camino::Utf8Path::new("/")) {
        // Reported as the installer would report it (a failure before its first step), when it can.
        report_early_failure(&cmdline, &e.to_string());
        rescue(&format!("init FAILED: the installer's programs: {e}"));
    }
    log.step("starting the installer (Secure Boot mode: the system image is checked whole against the signed manifest before the disk is touched)");
    let status = std::process::Command::new("/proc/self/exe")
        .args(["install", "--manifest", &manifest_path, "--cmdline", cmdline_file])
        .env("PATH", PATH)
        .status();
    match status {
        Ok(s) if s.success() => finish(after),
        Ok(s) => rescue(&format!("the installer failed ({s})")),
        Err(e) => rescue(&format!("cannot start the installer: {e}")),
    }
}

/// The words with the token's value hidden (the console may be logged elsewhere).
fn redact_token(words: &str) -> String {
    words.split_whitespace().map(|w| if w.starts_with("nixos-pxe.token=") { "nixos-pxe.token=..." } else { w }).collect::<Vec<_>>().join(" ")
}

/// A failure before the installer runs, reported as the installer would (step `start`).
fn report_early_failure(cmdline: &str, why: &str) {
    let Some(fleet) = kernel_args::parse(cmdline).ok().and_then(|k| k.fleet) else { return };
    if let Some(r) = crate::install::report::Reporter::new(&fleet) {
        r.failed("start", why, &[format!("nixos-pxe: init FAILED: {why}")]);
    }
}

/// serve says: boot the installed system. There is no GRUB to chainload the disk in this mode
/// (GRUB loads no kernel under Secure Boot without shim): the firmware boots it once, by
/// BootNext, and the network again at the start after.
fn boot_the_disk(log: &Log, why: &str) -> ! {
    log.step(&format!("the boot server says: boot from the disk ({why})"));
    let dir = camino::Utf8Path::new(EFIVARS);
    match crate::install::efivars::local_boot_entry(dir, crate::install::secure::BOOT_ENTRY) {
        Ok((number, description)) => match crate::install::efivars::set_boot_next(dir, number) {
            Ok(()) => {
                say(&format!("BootNext is Boot{number:04X} ({description}); rebooting into it"));
                reboot_now()
            }
            Err(e) => rescue(&format!("init FAILED: setting BootNext to Boot{number:04X}: {e}")),
        },
        Err(why) => rescue(&format!("init FAILED: {why}")),
    }
}

/// No decision now (or a hold): say why, wait, and start again (the firmware asks serve again).
fn wait_and_ask_again(why: &str) -> ! {
    say(&format!("init: {why}; asking again after a restart in 30 s"));
    std::thread::sleep(std::time::Duration::from_secs(30));
    reboot_now()
}

fn reboot_now() -> ! {
    restart(libc::RB_AUTOBOOT, "rebooting")
}

/// init's entry point. `kernel_words`: what the kernel passed on from its command line (ignored).
pub fn main(kernel_words: &[String]) -> ExitCode {
    let log = Log(Instant::now());
    if std::path::Path::new(&signed_manifest()).exists() {
        signed_initrd(&log);
    }
    say("init: nixos-pxe is PID 1 on the NFS root");
    if !kernel_words.is_empty() {
        say(&format!("init: ignoring the kernel command line's words passed to init: {}", kernel_words.join(" ")));
    }
    // SAFETY: setting variables before any thread exists.
    unsafe {
        std::env::set_var("PATH", PATH);
        std::env::set_var("HOME", "/root");
        std::env::set_var("TERM", "linux");
    }
    let after = match make_root_writable(&log) {
        Ok((after, _)) => after,
        Err(e) => rescue(&format!("init FAILED: {e}")),
    };
    log.step("starting the installer");
    let status = std::process::Command::new("/proc/self/exe").arg("install").env("PATH", PATH).status();
    match status {
        Ok(s) if s.success() => finish(after),
        Ok(s) => rescue(&format!("the installer failed ({s})")),
        Err(e) => rescue(&format!("cannot start the installer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_uses_the_nfs_root_as_the_lower_layer_and_a_tmpfs_for_changes() {
        let m = writable_root_mounts();
        assert_eq!(m[0], op("tmpfs", "/tmp", "tmpfs", "mode=1777"));
        assert_eq!(m[1].target, "/tmp/nixos-pxe/root");
        assert_eq!(m[1].data, "lowerdir=/,upperdir=/tmp/nixos-pxe/upper,workdir=/tmp/nixos-pxe/work");
        assert_eq!(unionfs_command()[3], "/tmp/nixos-pxe/upper=RW:/=RO");
    }

    #[test]
    fn a_fleet_hosts_own_after_install_is_followed() {
        let mut tree = serde_json::to_value(config::resolve(&Default::default(), camino::Utf8Path::new("t.nix")).expect("defaults").config).expect("json");
        tree["fleet"]["hosts"] = serde_json::json!({
            "lab1": { "macs": ["52:54:00:00:00:a1"], "generation": 1, "target": { "directory": "/h", "flake": null },
                      "customInstaller": { "afterInstall": "poweroff" } },
        });
        let c: Config = serde_json::from_value(tree).expect("config");
        assert_eq!(after_install(&c, "ip=dhcp nixos-pxe.host=lab1 nixos-pxe.generation=1 nixos-pxe.mac=52:54:00:00:00:a1"), AfterInstall::Poweroff);
        assert_eq!(after_install(&c, "ip=dhcp nixos-pxe.host=nope nixos-pxe.generation=1 nixos-pxe.mac=52:54:00:00:00:a1"), AfterInstall::Reboot);
        assert_eq!(after_install(&c, "ip=dhcp nixos-pxe.host=lab1"), AfterInstall::Reboot);
    }

    #[test]
    fn path_puts_the_nfs_roots_tools_first() {
        assert!(PATH.starts_with("/nixos-pxe/tools/bin:/nixos-pxe/tools/sbin:"));
        assert!(PATH.ends_with(":/bin"));
    }
}
