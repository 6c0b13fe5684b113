//! The installer's disk steps for real, on loop devices backed by sparse files this test makes:
//! partition, format, unpack a stand-in image (steps 1-4; steps 5-7 too on a kernel with vfat); the
//! refusal to touch a disk that holds a file system or a mounted partition; a dry run that writes
//! nothing anywhere; a missing image that stops before the disk is touched; a fleet host's install
//! (its image and overrides, the marker GUID on the disk, its own unfinished attempt installed
//! over, any other marker refused) and its reports to a sink in a network namespace of the
//! test's; the firmware the disk is made for (customInstaller.firmware): a BIOS machine's whole
//! install with "auto" (BIOS boot partition, the image's BIOS system, the stamp in the root's
//! /boot), an image for the other firmware refused before the disk is touched, the decision in
//! the dry run. Never any other device.
//! Needs root (CI runs as root); without it each test fails, or skips loudly with
//! NIXOS_PXE_ALLOW_SKIP=1 (tests/switches).
//!
//! Stand-ins for the NixOS-only programs (nix-store, nix-env, nixos-generate-config, nixos-enter):
//! small scripts that record their arguments, since NixOS itself cannot run here.

mod common;
mod report_sink;
mod switches;

use nixos_pxe_installer::fleet::marker::{self, Guid};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n")
}

/// A loop device over a sparse file of `mib` MiB, detached when dropped; then, unless the test
/// failed already, the host must be as it was before (tests/common `HostState` with the test's
/// directory): no loop device over a file there, nothing mounted there, no process holding a file
/// there, no namespace left.
struct Loop {
    device: String,
    backing: PathBuf,
    host_before: common::HostState,
}

impl Loop {
    /// Also starts the watcher that, should the test process be killed (no Drop runs then),
    /// unmounts what is mounted below `dir`, detaches every loop device over the backing file
    /// and removes `dir`.
    fn new(dir: &Path, mib: u64) -> Loop {
        let backing = dir.join("disk.img");
        let host_before = common::HostState::below(&[dir]);
        common::reap_when_this_process_ends(&format!(
            "awk -v d='{dir}/' 'index($2, d) == 1 {{ print $2 }}' /proc/self/mounts | sort -r | xargs -r -n1 umount -l; \
             losetup -n -O NAME -j '{backing}' | xargs -r -n1 losetup -d; rm -rf --one-file-system '{dir}'",
            dir = dir.display(),
            backing = backing.display()
        ));
        let f = std::fs::File::create(&backing).expect("create");
        f.set_len(mib << 20).expect("size");
        let out = Command::new("losetup").args(["--find", "--show", "--partscan"]).arg(&backing).output().expect("losetup");
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        Loop { device: String::from_utf8_lossy(&out.stdout).trim().to_string(), backing, host_before }
    }

    fn sha256(&self) -> String {
        let out = Command::new("sha256sum").arg(&self.backing).output().expect("sha256sum");
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(self.backing.with_extension("mnt")).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).output();
        // After a panic the test has failed already; a second panic here would abort.
        if !std::thread::panicking() {
            self.host_before.assert_unchanged(&format!("the test with {}", self.device));
        }
    }
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Stand-ins for the NixOS-only commands; each appends what it was called with to `log`.
fn stand_ins(dir: &Path, log: &Path) -> PathBuf {
    let bin = dir.join("stand-in-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let log = log.display();
    // nix-store runs while the installer has the target mounted: it also records the installer's
    // mount table and the host's (the test process's), which must not show the target.
    write_exec(
        &bin.join("nix-store"),
        &format!(
            "#!/bin/sh\n# stand-in for Nix's nix-store\necho \"nix-store $*\" >> {log}\ncat > {log}.registration\n\
             cat /proc/self/mountinfo > {log}.installer-mounts\ncat \"$NIXOS_PXE_TEST_HOST_MOUNTINFO\" > {log}.host-mounts\n"
        ),
    );
    write_exec(&bin.join("nix-env"), &format!("#!/bin/sh\n# stand-in for Nix's nix-env\necho \"nix-env $*\" >> {log}\n"));
    write_exec(
        &bin.join("nixos-generate-config"),
        &format!("#!/bin/sh\n# stand-in for NixOS's nixos-generate-config\necho \"nixos-generate-config $*\" >> {log}\nmkdir -p \"$2/etc/nixos\"\necho '{{ }}' > \"$2/etc/nixos/hardware-configuration.nix\"\n"),
    );
    write_exec(
        &bin.join("nixos-enter"),
        &format!(
            "#!/bin/sh\n# stand-in for NixOS's nixos-enter\necho \"nixos-enter $* NIXOS_INSTALL_BOOTLOADER=$NIXOS_INSTALL_BOOTLOADER\" >> {log}\n\
             cat \"$NIXOS_PXE_TEST_HOST_MOUNTINFO\" > {log}.host-mounts-at-bootloader\n"
        ),
    );
    bin
}

/// A stand-in system image: a fake system store path, its registration and name.
fn image(dir: &Path) -> PathBuf {
    pack_image(dir, &dir.join("system.tar.zst"), SYSTEM)
}

const SYSTEM: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-test";

/// Packs a stand-in image of the system `system` (a store path) to `out`.
fn pack_image(dir: &Path, out: &Path, system: &str) -> PathBuf {
    pack_systems(dir, out, &[("system", system)])
}

/// Packs a stand-in image holding `systems` (the name of the file in nixos-pxe/ that names each,
/// and its store path), as nix/system-image.nix lays it out: `system` for an image of one system,
/// `system.uefi` and `system.bios` for one built for customInstaller.firmware = "auto".
fn pack_systems(dir: &Path, out: &Path, systems: &[(&str, &str)]) -> PathBuf {
    let tree = dir.join(format!("image-tree-{}", out.file_name().and_then(|n| n.to_str()).unwrap_or("system")));
    let mut args: Vec<String> = vec!["pack".into(), "--compression".into(), "zstd".into(), "--out".into(), out.display().to_string()];
    for (file, system) in systems {
        let store_path = tree.join(system.trim_start_matches('/'));
        std::fs::create_dir_all(store_path.join("bin")).expect("mkdir");
        write_exec(&store_path.join("bin/switch-to-configuration"), "#!/bin/sh\necho stand-in\n");
        std::fs::write(store_path.join("marker"), "a file of the installed system\n").expect("write");
        std::fs::write(tree.join(file), format!("{system}\n")).expect("write");
        args.extend(["--file".into(), format!("nixos-pxe/{file}={}", tree.join(file).display())]);
    }
    std::fs::write(tree.join("registration"), "stand-in registration\n").expect("write");
    std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
    args.extend(["--file".into(), format!("nix={}", tree.join("nix").display())]);
    args.extend(["--file".into(), format!("nixos-pxe/registration={}", tree.join("registration").display())]);
    let status = Command::new(env!("CARGO_BIN_EXE_nixos-pxe")).args(&args).status().expect("pack");
    assert!(status.success());
    out.to_path_buf()
}

fn config(dir: &Path, device: &str, extra: &str) -> PathBuf {
    let file = dir.join("config.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"customInstaller": {{"rootDevice": "{device}", "swapSizeMiB": 64, "networking": {{"useDHCP": false, "staticInterfaceFromDHCP": "enp1s0"}}{extra}}}}}"#
        ),
    )
    .expect("write");
    file
}

fn lease(dir: &Path) -> PathBuf {
    let file = dir.join("lease.json");
    std::fs::write(
        &file,
        r#"{"interface": "eth0", "address": "10.42.0.123", "prefixLength": 24, "gateway": "10.42.0.1", "nameServers": ["10.42.0.1"], "domain": "pxe.test", "hostName": "web1"}"#,
    )
    .expect("write");
    file
}

/// Stand-in firmware for the installer: a private mount namespace (nothing it mounts reaches
/// the host, efivarfs on /sys included) with a tmpfs on /sys/firmware holding efi/efivars and one
/// variable, as a UEFI-booted machine shows them; the host's own firmware (often none here) plays
/// no part. The installer, a child of this test, is killed if the test process dies.
const STAND_IN_FIRMWARE: &str = "mount -t tmpfs stand-in-firmware /sys/firmware; mkdir -p /sys/firmware/efi/efivars; \
     printf 'stand-in' > /sys/firmware/efi/efivars/BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c; exec \"$@\"";
/// The same for a machine booted by legacy BIOS: /sys/firmware without efi/.
const STAND_IN_BIOS: &str = "mount -t tmpfs stand-in-firmware /sys/firmware; exec \"$@\"";

/// The firmware the installer sees (the stand-ins above).
#[derive(Clone, Copy, PartialEq)]
enum Firmware {
    Uefi,
    Bios,
}

fn install(dir: &Path, config: &Path, image: &Path, bin: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["--image".into(), image.display().to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    installer(None, dir, config, bin, &args)
}

/// Runs the installer with `args`, inside the network namespace `netns` if given. The kernel
/// command line is a file of the test's (a plain single-installer one unless `args` has
/// --cmdline), never this machine's.
fn installer(netns: Option<&str>, dir: &Path, config: &Path, bin: &Path, args: &[String]) -> Output {
    installer_on(Firmware::Uefi, netns, dir, config, bin, args)
}

/// `installer` on a machine with `firmware`.
fn installer_on(firmware: Firmware, netns: Option<&str>, dir: &Path, config: &Path, bin: &Path, args: &[String]) -> Output {
    installer_wrapped(firmware, netns, dir, config, bin, args, &[])
}

/// `installer_on`, the installer started by `wrapper` (a program and its first arguments, run in
/// the installer's namespaces after the stand-in firmware: to watch it from inside).
fn installer_wrapped(firmware: Firmware, netns: Option<&str>, dir: &Path, config: &Path, bin: &Path, args: &[String], wrapper: &[String]) -> Output {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // In the network namespace `netns` if given, then in a private mount namespace with the
    // stand-in firmware.
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "unshare"]);
            c
        }
        None => Command::new("unshare"),
    };
    let stand_in = if firmware == Firmware::Uefi { STAND_IN_FIRMWARE } else { STAND_IN_BIOS };
    command.args(["--mount", "--propagation", "private", "sh", "-ec", stand_in, "stand-in-firmware"]);
    command.args(wrapper);
    // SAFETY: prctl(2) is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        });
    }
    command.arg(env!("CARGO_BIN_EXE_nixos-pxe")).arg("install").arg("--config").arg(config);
    if !args.iter().any(|a| a == "--cmdline") {
        let plain = dir.join("cmdline");
        std::fs::write(&plain, "BOOT_IMAGE=(tftp)/nixos/bzImage console=ttyS0,115200n8 ip=:::::eth0:dhcp: root=/dev/nfs init=/init\n").expect("write");
        command.arg("--cmdline").arg(plain);
    }
    command
        .arg("--target")
        .arg(dir.join("disk.mnt"))
        .arg("--lease-json")
        .arg(lease(dir))
        .arg("--resolv-conf")
        .arg(dir.join("resolv.conf"))
        .args(args)
        .env("PATH", path)
        .env("NIXOS_PXE_TEST_HOST_MOUNTINFO", format!("/proc/{}/mountinfo", std::process::id()))
        .output()
        .expect("run the installer")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the tests here need: root, for loop devices and mounts. False (after a loud SKIPPED line)
/// when NIXOS_PXE_ALLOW_SKIP=1 lets the test skip; fails the test otherwise.
fn can_run() -> bool {
    if is_root() {
        return true;
    }
    switches::skip_or_fail("needs root for loop devices and mounts (CI runs as root)");
    false
}

/// The system calls that mount, unmount or move mounts, for strace's -e trace=.
const MOUNT_CALLS: &str = "mount,umount2,fsopen,fsmount,move_mount,open_tree,mount_setattr,pivot_root";

/// The lines of /proc/mounts that name `device` (or one of its partitions) or lie under `dir`.
fn mounts_of(device: &str, dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/mounts")
        .expect("/proc/mounts")
        .lines()
        .filter(|l| {
            let mut f = l.split_whitespace();
            let (source, point) = (f.next().unwrap_or_default(), f.next().unwrap_or_default());
            source.starts_with(device) || point.starts_with(&dir)
        })
        .map(str::to_string)
        .collect()
}

/// Every path under `dir` (itself included) with its type, mode, size, mtime and contents' hash:
/// equal listings mean nothing there was created, removed or changed. "absent" when `dir` is.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(path: &Path, out: &mut Vec<String>) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            out.push(format!("{} absent", path.display()));
            return;
        };
        let content = if meta.is_file() { std::fs::read(path).expect("read").iter().map(|b| *b as u64).sum::<u64>() } else { 0 };
        out.push(format!("{} mode {:o} size {} mtime {}.{} sum {content}", path.display(), meta.mode(), meta.len(), meta.mtime(), meta.mtime_nsec()));
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path).expect("read_dir").map(|e| e.expect("entry").path()).collect();
            entries.sort();
            for entry in entries {
                walk(&entry, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

/// The partition nodes of `device` (loop0p1, ...) that exist in /dev.
fn partition_nodes(device: &str) -> Vec<String> {
    let name = device.trim_start_matches("/dev/");
    let mut nodes: Vec<String> = std::fs::read_dir("/dev")
        .expect("/dev")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.strip_prefix(name).and_then(|rest| rest.strip_prefix('p')).is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())))
        .collect();
    nodes.sort();
    nodes
}

/// A mount this test made itself, unmounted when dropped (also when the test fails).
struct TestMount(PathBuf);

impl TestMount {
    fn new(source: &str, point: &Path, options: &str) -> TestMount {
        std::fs::create_dir_all(point).expect("mkdir");
        run(Command::new("mount").args(["-o", options, source]).arg(point));
        TestMount(point.to_path_buf())
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// The installer's line for a step that failed, as the console shows it.
fn failed_line(stdout: &str) -> &str {
    stdout.lines().find(|l| l.starts_with("nixos-pxe: install FAILED")).unwrap_or_default()
}

/// Steps 1-4 (network, disk, partition, unpack) on an empty loop device, each checked on the disk
/// afterwards. The ESP is FAT32: on a kernel without vfat (this machine's, and some CI sandboxes')
/// step 5 cannot mount it, and the test then asserts that exact stop, with nothing left mounted;
/// steps 5-7 are proven by the QEMU end-to-end install (tests/e2e_install.rs), whose kernel has
/// vfat. On a kernel with vfat the install must complete and steps 5-7 are checked here as well.
#[test]
fn partitions_formats_and_unpacks_on_a_loop_device() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    let log = dir.path().join("stand-ins.log");
    let bin = stand_ins(dir.path(), &log);
    let host_before = common::HostState::below(&[dir.path()]);
    let out = install(dir.path(), &config(dir.path(), &disk.device, ""), &image(dir.path()), &bin, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The installer's mounts stayed in its own mount namespace: while it had the target mounted
    // (when nix-store ran) the host's mount table did not show it, and nothing of the host's
    // changed (efivarfs on /sys among what is compared).
    let target = format!(" {}/disk.mnt ", dir.path().display());
    let seen = |suffix: &str| std::fs::read_to_string(format!("{}.{suffix}", log.display())).unwrap_or_else(|e| format!("<{suffix}: {e}>"));
    assert!(seen("installer-mounts").contains(&target), "the installer's mounts:\n{}", seen("installer-mounts"));
    assert!(!seen("host-mounts").contains(&target) && !seen("host-mounts").starts_with('<'), "the host's mounts:\n{}", seen("host-mounts"));
    host_before.assert_unchanged("the installer");
    let vfat = std::fs::read_to_string("/proc/filesystems").expect("/proc/filesystems").lines().any(|l| l.split_whitespace().last() == Some("vfat"));
    let steps: &[&str] = if vfat { &["network", "disk", "partition", "unpack", "configure", "bootloader", "finish"] } else { &["network", "disk", "partition", "unpack"] };
    for (i, step) in steps.iter().enumerate() {
        assert!(stdout.contains(&format!("nixos-pxe: step {}/7 {step} done in ", i + 1)), "{stdout}");
    }
    if vfat {
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("nixos-pxe: install complete in "), "{stdout}");
    } else {
        // Not a skip: what this test claims on such a kernel is steps 1-4 and this stop.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"NOTE install_loop: this kernel has no vfat, so this UEFI install's steps 5-7 stop at the ESP mount here; the BIOS installs here \
              (a_bios_machine_with_auto_gets_the_bios_layout_and_the_bios_system, a_bios_install_reports_every_step_and_installed_on_any_kernel) \
              run steps 5-7 and the installed report on any kernel, and tests/e2e_install.rs runs the UEFI ones in QEMU\n",
        );
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        let target = dir.path().join("disk.mnt");
        assert_eq!(
            failed_line(&stdout),
            format!("nixos-pxe: install FAILED at step 5/7 (configure): mounting {}p1 (vfat) on {}/boot: No such device (os error 19)", disk.device, target.display()),
            "{stdout}"
        );
        assert!(!stdout.contains("step 5/7 configure done") && !stdout.contains("step 6/7"), "{stdout}");
        // The failure unmounts what the installer mounted, so the shell that follows can inspect the disk.
        assert!(stdout.contains(&format!("nixos-pxe: unmounted {}\n", target.display())), "{stdout}");
        assert_eq!(mounts_of(&disk.device, dir.path()), Vec::<String>::new(), "nothing stays mounted");
        assert_eq!(std::fs::read_dir(&target).expect("target").count(), 0, "the mount point is left empty");
    }

    // The partition table, as sfdisk reads it back.
    let table: serde_json::Value = serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(&disk.device))).expect("json");
    let parts = table["partitiontable"]["partitions"].as_array().expect("partitions");
    assert_eq!(table["partitiontable"]["label"], "gpt");
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, ["ESP", "nixos", "swap"]);
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[0]["size"].as_u64(), Some(512 * 2048), "512 MiB in sectors");
    assert_eq!(parts[2]["size"].as_u64(), Some(64 * 2048));

    // The file systems and their labels.
    let probe = |n: u32| run(Command::new("blkid").args(["-o", "export"]).arg(format!("{}p{n}", disk.device)));
    assert!(probe(1).contains("LABEL_FATBOOT=ESP") || probe(1).contains("LABEL=ESP"), "{}", probe(1));
    assert!(probe(1).contains("TYPE=vfat"));
    assert!(probe(2).contains("LABEL=nixos") && probe(2).contains("TYPE=ext4"), "{}", probe(2));
    assert!(probe(3).contains("LABEL=swap") && probe(3).contains("TYPE=swap"), "{}", probe(3));

    // The unpacked system and the written configuration.
    let check = TestMount::new(&format!("{}p2", disk.device), &dir.path().join("check"), "ro");
    let mnt = check.0.clone();
    let read = |p: &str| std::fs::read_to_string(mnt.join(p)).unwrap_or_else(|e| format!("<{p}: {e}>"));
    let marker = read("nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-test/marker");
    let networking = read("etc/nixos/networking.nix");
    let hardware = mnt.join("etc/nixos/hardware-configuration.nix").exists();
    let nixos = mnt.join("etc/NIXOS").exists();
    let leftover = mnt.join("nixos-pxe").exists();
    drop(check);
    assert_eq!(marker, "a file of the installed system\n");
    assert!(nixos, "etc/NIXOS");
    assert!(!leftover, "the image's nixos-pxe/ metadata is removed");
    let calls = std::fs::read_to_string(&log).expect("stand-in log");
    assert!(calls.contains("--load-db"), "{calls}");
    assert_eq!(std::fs::read_to_string(format!("{}.registration", log.display())).expect("registration"), "stand-in registration\n");
    assert!(calls.contains("nix-env --store") && calls.contains("--set /nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-test"), "{calls}");
    if vfat {
        assert!(networking.contains("networking.interfaces.\"enp1s0\".ipv4.addresses = [ { address = \"10.42.0.123\"; prefixLength = 24; } ];"), "{networking}");
        assert!(networking.contains("networking.useDHCP = false;"), "{networking}");
        assert!(hardware, "hardware-configuration.nix");
        assert!(calls.contains("-- /nix/var/nix/profiles/system/bin/switch-to-configuration boot NIXOS_INSTALL_BOOTLOADER=1"), "{calls}");
        assert!(stdout.contains("EFI variables reachable in /sys/firmware/efi/efivars"), "{stdout}");
        let host = seen("host-mounts-at-bootloader");
        assert!(!host.starts_with('<') && !host.contains("efivarfs") && !host.contains(" /sys/firmware"), "the host's mounts at the bootloader step:\n{host}");
    } else {
        assert!(networking.starts_with("<etc/nixos/networking.nix: "), "step 5 did not run: {networking}");
        assert!(!calls.contains("nixos-generate-config") && !calls.contains("nixos-enter"), "{calls}");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("resolv.conf")).expect("resolv.conf"), RESOLV_CONF);
}

/// What step 1 writes to --resolv-conf for the test's lease.
const RESOLV_CONF: &str = "# Written by nixos-pxe from the kernel's DHCP lease (/proc/net/pnp).\nsearch pxe.test\nnameserver 10.42.0.1\n";

#[test]
fn refuses_a_disk_with_a_file_system_and_leaves_it_byte_for_byte() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    run(Command::new("mkfs.ext4").args(["-q", "-L", "precious"]).arg(&disk.device));
    let before = disk.sha256();
    let log = dir.path().join("log");
    let bin = stand_ins(dir.path(), &log);
    let out = install(dir.path(), &config(dir.path(), &disk.device, ""), &image(dir.path()), &bin, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let d = &disk.device;
    assert_eq!(
        failed_line(&stdout),
        format!(
            "nixos-pxe: install FAILED at step 2/7 (disk): {d} (2.0 GiB) is not empty: it holds an ext2/ext3/ext4 file system (at byte 1080). \
             Nothing was written. To install over it, set customInstaller.wipe = \"always\", or clear it first (wipefs -a {d})"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("step 3/7"), "{stdout}");
    assert_eq!(disk.sha256(), before, "the disk is unchanged");
    assert!(!log.exists(), "no stand-in ran");
}

/// A disk with a mounted partition is refused whatever the wipe policy, for that reason, and
/// left as it was.
#[test]
fn refuses_a_disk_with_a_mounted_partition_even_with_wipe_always() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    let d = disk.device.clone();
    let table = Command::new("sfdisk").args(["--quiet", &d]).stdin(std::process::Stdio::piped()).spawn();
    let mut sfdisk = table.expect("sfdisk");
    std::io::Write::write_all(sfdisk.stdin.as_mut().expect("stdin"), b"label: gpt\nsize=64MiB, name=data\n").expect("write");
    assert!(sfdisk.wait().expect("sfdisk").success());
    run(Command::new("partx").args(["-u", &d]));
    run(Command::new("mkfs.ext4").args(["-q", "-L", "busy"]).arg(format!("{d}p1")));
    // Read-only and without the journal: the mount itself writes nothing, so the hash shows what
    // the installer did.
    let before = disk.sha256();
    let busy = TestMount::new(&format!("{d}p1"), &dir.path().join("busy"), "ro,noload");
    let log = dir.path().join("log");
    let bin = stand_ins(dir.path(), &log);
    let out = install(dir.path(), &config(dir.path(), &d, r#", "wipe": "always""#), &image(dir.path()), &bin, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(failed_line(&stdout), format!("nixos-pxe: install FAILED at step 2/7 (disk): {d} is in use: {d}p1 mounted; nixos-pxe never overwrites a mounted disk"), "{stdout}");
    assert!(!stdout.contains("step 3/7"), "{stdout}");
    drop(busy);
    assert_eq!(disk.sha256(), before, "the disk is unchanged");
    assert!(!log.exists(), "no stand-in ran");
}

/// A file system made on the whole disk (no partition table) and mounted is the disk in use: it
/// is refused whatever the wipe policy, for that reason, and left as it was. (Before, only a
/// mounted partition counted: this install went on to partition the mounted disk.)
#[test]
fn refuses_a_disk_whose_whole_disk_file_system_is_mounted_even_with_wipe_always() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    let d = disk.device.clone();
    run(Command::new("mkfs.ext4").args(["-q", "-L", "whole"]).arg(&d));
    // Read-only and without the journal, as above: the hash shows what the installer did.
    let before = disk.sha256();
    let busy = TestMount::new(&d, &dir.path().join("busy"), "ro,noload");
    let log = dir.path().join("log");
    let bin = stand_ins(dir.path(), &log);
    let out = install(dir.path(), &config(dir.path(), &d, r#", "wipe": "always""#), &image(dir.path()), &bin, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(failed_line(&stdout), format!("nixos-pxe: install FAILED at step 2/7 (disk): {d} is in use: {d} mounted; nixos-pxe never overwrites a mounted disk"), "{stdout}");
    assert!(!stdout.contains("step 3/7"), "{stdout}");
    drop(busy);
    assert_eq!(disk.sha256(), before, "the disk is unchanged");
    assert!(!log.exists(), "no stand-in ran");
}

/// A dry run writes nothing anywhere: the disk's bytes, the target directory, resolv.conf and the
/// mount table are the same afterwards, and no partition appeared. The installer runs in a
/// private mount namespace, where the host's table could never show its mounts: so its own table
/// is read there before and after it ran, and strace shows it (and what it starts) made no
/// mount, unmount or pivot_root call at all. A control run of `mount` through the same watch
/// shows the watch sees one.
#[test]
fn a_dry_run_writes_nothing_anywhere() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    let target = dir.path().join("disk.mnt");
    std::fs::create_dir_all(target.join("etc")).expect("mkdir");
    std::fs::write(target.join("etc/hostname"), "before\n").expect("write");
    let log = dir.path().join("log");
    let bin = stand_ins(dir.path(), &log);
    let cfg = config(dir.path(), &disk.device, "");
    let image = image(dir.path());
    let (hash, files, mounts) = (disk.sha256(), listing(&target), mounts_of(&disk.device, dir.path()));
    assert!(files.len() == 3 && mounts.is_empty(), "{files:?} {mounts:?}");

    let watched = |name: &str, command: &[String]| {
        let (before, after, trace) = (dir.path().join(format!("{name}.before")), dir.path().join(format!("{name}.after")), dir.path().join(format!("{name}.strace")));
        let watch = format!(
            "cat /proc/self/mountinfo > '{before}'; status=0; strace -f -qq -e signal=none -e trace={MOUNT_CALLS} -o '{trace}' \"$@\" || status=$?; \
             cat /proc/self/mountinfo > '{after}'; exit $status",
            before = before.display(),
            after = after.display(),
            trace = trace.display()
        );
        let mut wrapper: Vec<String> = ["sh", "-c", &watch, "mount-watch"].map(String::from).to_vec();
        wrapper.extend(command.iter().cloned());
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{}: {e}>", p.display()));
        (wrapper, move || (read(&before), read(&after), read(&trace)))
    };
    // The control: the watch sees a mount made in the installer's namespace.
    let control_point = dir.path().join("control.mnt");
    std::fs::create_dir_all(&control_point).expect("mkdir");
    // A shell, which takes the installer's command line that follows as its $0, $1, ... and runs `mount`.
    let mount = format!("mount -t tmpfs watch-control '{}'", control_point.display());
    let (wrapper, seen) = watched("control", &["sh".into(), "-c".into(), mount, "control".into()]);
    let args = ["--image".to_string(), image.display().to_string(), "--dry-run".to_string()];
    let control = installer_wrapped(Firmware::Uefi, None, dir.path(), &cfg, &bin, &args, &wrapper);
    assert!(control.status.success(), "the control: {}", String::from_utf8_lossy(&control.stderr));
    let (before, after, trace) = seen();
    assert!(trace.contains("mount(\"watch-control\", ") && after.contains(" - tmpfs watch-control ") && !before.contains("watch-control"), "the watch saw the control's mount:\n{trace}\n{after}");

    let (wrapper, seen) = watched("dry-run", &[]);
    let out = installer_wrapped(Firmware::Uefi, None, dir.path(), &cfg, &bin, &args, &wrapper);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let d = &disk.device;
    for line in [
        format!("nixos-pxe: installing from {} with {} (dry run: nothing is changed)", image.display(), cfg.display()),
        format!("nixos-pxe: {d} holds no partition table or file system: it will be partitioned"),
        "nixos-pxe: dry run: the plan".to_string(),
        format!("nixos-pxe:   partition {d}p2 1470 MiB Ext4 label nixos"),
        format!("nixos-pxe:   run mkfs.ext4 -F -q -L nixos {d}p2"),
    ] {
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("step 3/7"), "{stdout}");
    assert_eq!(disk.sha256(), hash, "the disk's bytes are unchanged");
    assert_eq!(partition_nodes(d), Vec::<String>::new(), "no partition appeared");
    assert_eq!(listing(&target), files, "the target directory is unchanged");
    assert_eq!(mounts_of(d, dir.path()), mounts, "nothing was mounted on the host");
    let (before, after, trace) = seen();
    assert!(!before.starts_with('<') && before == after, "the installer's mount table changed:\nbefore:\n{before}\nafter:\n{after}");
    assert_eq!(trace, "", "the dry run made mount calls");
    assert!(!dir.path().join("resolv.conf").exists(), "a dry run writes no resolv.conf");
    assert!(!log.exists(), "no stand-in ran");
}

/// A missing image stops the install at step 2, before the disk is touched: step 1 has written
/// resolv.conf (its job, for the shell the failure leaves), and nothing else changed.
#[test]
fn a_missing_image_stops_at_step_2_with_the_disk_unchanged() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    let log = dir.path().join("log");
    let bin = stand_ins(dir.path(), &log);
    let cfg = config(dir.path(), &disk.device, "");
    let missing = dir.path().join("no-such-image.tar.zst");
    let hash = disk.sha256();
    let out = install(dir.path(), &cfg, &missing, &bin, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("nixos-pxe: step 1/7 network done in "), "{stdout}");
    assert_eq!(
        failed_line(&stdout),
        format!(
            "nixos-pxe: install FAILED at step 2/7 (disk): the system image {} cannot be read (No such file or directory (os error 2)); nothing was written to the disk",
            missing.display()
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("step 3/7"), "{stdout}");
    assert_eq!(disk.sha256(), hash, "the disk's bytes are unchanged");
    assert_eq!(partition_nodes(&disk.device), Vec::<String>::new(), "no partition appeared");
    assert!(!dir.path().join("disk.mnt").exists(), "the target was not even created");
    assert_eq!(mounts_of(&disk.device, dir.path()), Vec::<String>::new(), "nothing was mounted");
    assert_eq!(std::fs::read_to_string(dir.path().join("resolv.conf")).expect("resolv.conf"), RESOLV_CONF);
    assert!(!log.exists(), "no stand-in ran");
}

// ---- A fleet host's install ----

const WEB_SYSTEM: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web1";
const DB_SYSTEM: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-db1";
const WEB_MAC: &str = "52:54:00:00:00:a1";
/// The attempt's token as serve would put it on the command line (43 URL-safe base64 characters).
const TOKEN: &str = "T0k3n-of-attempt-2_for-web1-generation-3xyz";

/// A fleet's config.json beside both hosts' images (systems/web.tar.zst, systems/db.tar.zst, as
/// lib.mkFleet lays them out): web1 is generation 3 and overrides the ESP size, db1 is generation 1.
fn fleet_config(dir: &Path, device: &str) -> PathBuf {
    pack_image(dir, &dir.join("systems/web.tar.zst"), WEB_SYSTEM);
    pack_image(dir, &dir.join("systems/db.tar.zst"), DB_SYSTEM);
    let file = dir.join("config.json");
    let config = serde_json::json!({
        "nfsroot": { "bootLoader": { "efinetDHCPInterface": "auto", "linuxPnPInterface": "auto" } },
        "customInstaller": { "rootDevice": device, "swapSizeMiB": 64, "networking": { "useDHCP": false, "staticInterfaceFromDHCP": "enp1s0" } },
        "fleet": { "hosts": {
            "web1": { "macs": [WEB_MAC], "generation": 3, "target": { "directory": "/srv/fleet/web" },
                      "customInstaller": { "espSizeMiB": 256 }, "image": "systems/web.tar.zst" },
            "db1": { "macs": ["52:54:00:00:0b:01"], "generation": 1, "target": { "flake": "/srv/fleet#db1" }, "image": "systems/db.tar.zst" },
        } },
    });
    std::fs::write(&file, serde_json::to_string_pretty(&config).expect("json")).expect("write");
    file
}

/// The kernel command line of web1's generation 3, as its per-host GRUB file writes it, plus `more`.
fn fleet_cmdline(dir: &Path, more: &str) -> String {
    let file = dir.join("fleet-cmdline");
    std::fs::write(
        &file,
        format!("BOOT_IMAGE=(tftp)/nixos/bzImage console=ttyS0,115200n8 ip=dhcp root=/dev/nfs init=/init nixos-pxe.host=web1 nixos-pxe.generation=3{more} nixos-pxe.mac={WEB_MAC}\n"),
    )
    .expect("write");
    file.display().to_string()
}

/// The installer of web1 (no --image: the host's own), in `netns` if given.
fn install_fleet(netns: Option<&str>, dir: &Path, config: &Path, bin: &Path, cmdline: &str) -> Output {
    installer(netns, dir, config, bin, &["--cmdline".to_string(), cmdline.to_string()])
}

/// Writes a partition table with `script` to `device` (and has the kernel read it).
fn sfdisk(device: &str, script: &str) {
    let mut child = Command::new("sfdisk").args(["--quiet", device]).stdin(std::process::Stdio::piped()).spawn().expect("sfdisk");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), script.as_bytes()).expect("write");
    assert!(child.wait().expect("sfdisk").success(), "sfdisk {device} <<< {script}");
    run(Command::new("partx").args(["-u", device]));
}

/// The disk's GPT disk GUID, as sfdisk reads it.
fn disk_id(device: &str) -> Guid {
    let text = run(Command::new("sfdisk").arg("--disk-id").arg(device));
    text.trim().parse().unwrap_or_else(|e| panic!("sfdisk --disk-id {device}: {e}"))
}

/// The installer's console line that starts with `start`.
fn line_starting<'a>(stdout: &'a str, start: &str) -> &'a str {
    stdout.lines().find(|l| l.starts_with(start)).unwrap_or_default()
}

fn has_vfat() -> bool {
    std::fs::read_to_string("/proc/filesystems").expect("/proc/filesystems").lines().any(|l| l.split_whitespace().last() == Some("vfat"))
}

/// The steps a fleet install finishes here: all seven on a kernel with vfat; otherwise steps
/// 1-4, then step 5 stops at the ESP (the QEMU end-to-end test proves 5-7, and the stamp).
fn check_steps(stdout: &str, disk: &Loop, dir: &Path) {
    let steps: &[&str] = if has_vfat() { &["network", "disk", "partition", "unpack", "configure", "bootloader", "finish"] } else { &["network", "disk", "partition", "unpack"] };
    for (i, step) in steps.iter().enumerate() {
        assert!(stdout.contains(&format!("nixos-pxe: step {}/7 {step} done in ", i + 1)), "{stdout}");
    }
    if !has_vfat() {
        assert_eq!(
            failed_line(stdout),
            format!("nixos-pxe: install FAILED at step 5/7 (configure): mounting {}p1 (vfat) on {}/boot: No such device (os error 19)", disk.device, dir.join("disk.mnt").display()),
            "{stdout}"
        );
    }
}

/// web1's install on an empty disk: the host's own image (not db1's, not system.tar.zst), its
/// ESP size, and the GPT disk GUID that marks the disk as web1's generation 3.
#[test]
fn a_fleet_host_installs_its_own_image_with_its_overrides_and_its_marker() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    let log = dir.path().join("stand-ins.log");
    let bin = stand_ins(dir.path(), &log);
    let config = fleet_config(dir.path(), &disk.device);
    let out = install_fleet(None, dir.path(), &config, &bin, &fleet_cmdline(dir.path(), ""));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let guid = marker::disk_guid("web1", 3);
    let (c, d) = (config.display(), dir.path().display());
    for line in [
        format!("nixos-pxe: fleet host web1, generation 3: its customInstaller and image (from the kernel command line and {c})"),
        "nixos-pxe: no reports: the kernel command line has no nixos-pxe.report= (a per-host file of nixos-pxe render, not serve)".to_string(),
        format!("nixos-pxe: installing from {d}/systems/web.tar.zst with {c}"),
        format!("nixos-pxe: the GPT disk GUID will be {guid}, the marker of web1's install of generation 3"),
        format!("nixos-pxe: {} holds no partition table or file system: it will be partitioned", disk.device),
    ] {
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    }
    check_steps(&stdout, &disk, dir.path());
    assert_eq!(disk_id(&disk.device), guid, "the marker is the disk's GUID");
    let table: serde_json::Value = serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(&disk.device))).expect("json");
    assert_eq!(table["partitiontable"]["partitions"][0]["size"].as_u64(), Some(256 * 2048), "web1's espSizeMiB = 256");
    let check = TestMount::new(&format!("{}p2", disk.device), &dir.path().join("check"), "ro");
    let web = check.0.join(WEB_SYSTEM.trim_start_matches('/')).join("marker").exists();
    let db = check.0.join(DB_SYSTEM.trim_start_matches('/')).exists();
    drop(check);
    assert!(web && !db, "web1's image was unpacked (web {web}, db {db})");
    let calls = std::fs::read_to_string(&log).expect("stand-in log");
    assert!(calls.contains(&format!("--set {WEB_SYSTEM}")), "{calls}");
}

/// A disk that carries web1's marker for generation 3 is web1's own unfinished attempt: with
/// wipe = "if-empty" it is installed over, and says so.
#[test]
fn this_hosts_unfinished_attempt_is_installed_over() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    let guid = marker::disk_guid("web1", 3);
    // What an attempt that was cut off after partitioning leaves: the marked table, a file system.
    sfdisk(&disk.device, &format!("label: gpt\nlabel-id: {guid}\nsize=100MiB, name=ESP\nsize=500MiB, name=nixos\n"));
    run(Command::new("mkfs.ext4").args(["-q", "-L", "attempt1"]).arg(format!("{}p2", disk.device)));
    let before = disk.sha256();
    let log = dir.path().join("stand-ins.log");
    let bin = stand_ins(dir.path(), &log);
    let config = fleet_config(dir.path(), &disk.device);
    let out = install_fleet(None, dir.path(), &config, &bin, &fleet_cmdline(dir.path(), ""));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let d = &disk.device;
    assert_eq!(
        line_starting(&stdout, &format!("nixos-pxe: {d} (2.0 GiB) holds")),
        format!(
            "nixos-pxe: {d} (2.0 GiB) holds a GPT partition table (at byte 512), an MBR partition table (at byte 510), a backup GPT header \
             (at byte 2147483136), and its GPT disk GUID {guid} marks it as web1's install of generation 3: an earlier attempt of this \
             install that did not finish, or a finished one being reinstalled. Installing over it (customInstaller.wipe = \"if-empty\" takes this host's own disk of this generation)"
        ),
        "{stdout}"
    );
    check_steps(&stdout, &disk, dir.path());
    assert_ne!(disk.sha256(), before, "the disk was installed over");
    assert_eq!(disk_id(d), guid, "and marked again");
    let labels = run(Command::new("blkid").args(["-o", "export"]).arg(format!("{d}p2")));
    assert!(labels.contains("LABEL=nixos") && !labels.contains("attempt1"), "{labels}");
}

/// A disk marked for another host, or for another generation of this host, is refused like
/// any other used disk, saying whose marker it carries; not one byte changes.
#[test]
fn a_disk_marked_for_another_host_or_generation_is_refused_unchanged() {
    if !can_run() {
        return;
    }
    let cases = [
        ("db1", 1, "marks it as fleet host db1's install of generation 1: another host's disk, not web1's."),
        ("web1", 2, "marks it as web1's install of generation 2, not of generation 3 that this is: an earlier generation's disk, installed or not."),
    ];
    for (host, generation, whose) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Loop::new(dir.path(), 2048);
        let guid = marker::disk_guid(host, generation);
        sfdisk(&disk.device, &format!("label: gpt\nlabel-id: {guid}\nsize=100MiB, name=ESP\nsize=500MiB, name=nixos\n"));
        let before = disk.sha256();
        let log = dir.path().join("stand-ins.log");
        let bin = stand_ins(dir.path(), &log);
        let config = fleet_config(dir.path(), &disk.device);
        let out = install_fleet(None, dir.path(), &config, &bin, &fleet_cmdline(dir.path(), ""));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let d = &disk.device;
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert_eq!(
            failed_line(&stdout),
            format!(
                "nixos-pxe: install FAILED at step 2/7 (disk): {d} (2.0 GiB) is not empty: it holds a GPT partition table (at byte 512), \
                 an MBR partition table (at byte 510), a backup GPT header (at byte 2147483136). Its GPT disk GUID {guid} {whose} \
                 Nothing was written. To install over it, set fleet.hosts.web1.customInstaller.wipe = \"always\", or clear it first (wipefs -a {d})"
            ),
            "{host} {generation}: {stdout}"
        );
        assert!(!stdout.contains("step 3/7"), "{stdout}");
        assert_eq!(disk.sha256(), before, "{host} {generation}: the disk is unchanged");
        assert!(!log.exists(), "no stand-in ran");
    }
}

/// The reports of a served install reach the report address: `started`, each step as it
/// starts, then `failed` (step 5 on a kernel without vfat, with the error and the console's last
/// lines) or `installed` (with the system and the hash of the boot token left on the disk); each
/// carries the host, generation, attempt and token, and its outcome is on the console.
#[test]
fn reports_reach_the_report_address_with_the_attempts_token() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let netns = report_sink::Netns::new("loop-reports");
    let sink = report_sink::Sink::start(&netns.0, "127.0.0.1:0", report_sink::accept_all);
    let disk = Loop::new(dir.path(), 2048);
    let log = dir.path().join("stand-ins.log");
    let bin = stand_ins(dir.path(), &log);
    let config = fleet_config(dir.path(), &disk.device);
    let served = format!(" nixos-pxe.attempt=2 nixos-pxe.token={TOKEN} nixos-pxe.report=http://{}", sink.address);
    let out = install_fleet(Some(&netns.0), dir.path(), &config, &bin, &fleet_cmdline(dir.path(), &served));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let vfat = has_vfat();
    check_steps(&stdout, &disk, dir.path());
    let mut expected = vec!["started", "step network", "step disk", "step partition", "step unpack", "step configure"];
    expected.extend(if vfat { &["step bootloader", "step finish", "installed"][..] } else { &["failed"][..] });
    assert_eq!(sink.events(), expected, "{stdout}");
    for what in ["started", "step network", "step unpack", if vfat { "installed" } else { "failed" }] {
        let line = format!("nixos-pxe: report {what}: accepted");
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains(&format!("nixos-pxe: reporting to http://{}/v1/report as web1 generation 3 attempt 2\n", sink.address)), "{stdout}");
    let received = sink.received();
    for r in &received {
        assert_eq!((r.method.as_str(), r.path.as_str(), r.content_type.as_deref()), ("POST", "/v1/report", Some("application/json")));
        let b = &r.body;
        assert_eq!((b["host"].as_str(), b["generation"].as_u64(), b["attempt"].as_u64(), b["token"].as_str()), (Some("web1"), Some(3), Some(2), Some(TOKEN)), "{b}");
    }
    assert_eq!(received[3].body["message"], "step 3/7 partition");
    let last = &received[received.len() - 1].body;
    if vfat {
        assert_eq!(last["system"], WEB_SYSTEM);
        let check = TestMount::new(&format!("{}p2", disk.device), &dir.path().join("check"), "ro");
        let boot: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(check.0.join("var/lib/nixos-pxe/boot-report.json")).expect("boot-report.json")).expect("json");
        drop(check);
        assert_eq!(boot["token"].as_str(), Some(TOKEN), "the first boot reports with the attempt's token");
    } else {
        let target = dir.path().join("disk.mnt");
        let error = format!("mounting {}p1 (vfat) on {}/boot: No such device (os error 19)", disk.device, target.display());
        assert_eq!((last["step"].as_str(), last["message"].as_str()), (Some("configure"), Some(error.as_str())), "{last}");
        let tail: Vec<&str> = last["log_tail"].as_str().expect("log_tail").lines().collect();
        // The console's last lines, in order, ending with the failure; at most 50.
        let console: Vec<&str> = stdout.lines().collect();
        let failed_at = console.iter().position(|l| l.starts_with("nixos-pxe: install FAILED")).expect("failed line");
        assert_eq!(tail, console[failed_at + 1 - tail.len()..=failed_at], "{last}");
        assert!(tail.len() <= 50 && tail.contains(&"nixos-pxe: step 5/7 configure"), "{tail:?}");
    }
}

/// serve's "no" (here 409: the attempt is not the host's latest) is said on the console and not
/// retried, and the install goes on: a report never decides the install.
#[test]
fn a_refused_report_is_not_retried_and_the_install_goes_on() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let netns = report_sink::Netns::new("loop-refused");
    let sink = report_sink::Sink::start(&netns.0, "127.0.0.1:0", |_| (409, "Conflict", "attempt 2 is not web1's latest (3)\n".into()));
    let disk = Loop::new(dir.path(), 2048);
    let bin = stand_ins(dir.path(), &dir.path().join("stand-ins.log"));
    let config = fleet_config(dir.path(), &disk.device);
    let served = format!(" nixos-pxe.attempt=2 nixos-pxe.token={TOKEN} nixos-pxe.report=http://{}", sink.address);
    let out = install_fleet(Some(&netns.0), dir.path(), &config, &bin, &fleet_cmdline(dir.path(), &served));
    let stdout = String::from_utf8_lossy(&out.stdout);
    check_steps(&stdout, &disk, dir.path());
    assert_eq!(
        line_starting(&stdout, "nixos-pxe: report started:"),
        "nixos-pxe: report started: refused (409 Conflict: attempt 2 is not web1's latest (3)): serve has moved on from this attempt \
         (a newer attempt or generation of this host); not retried"
    );
    let events = sink.events();
    let mut once = events.clone();
    once.dedup();
    assert_eq!(events, once, "each report was sent once");
    assert_eq!(events.len(), if has_vfat() { 9 } else { 7 }, "{events:?}");
}


/// web1's served install on a BIOS machine (firmware "auto"), whose layout needs no FAT file
/// system: all seven steps and the `installed` report run on any kernel, this machine's and
/// CI's without vfat among them (the UEFI install above stops at the ESP there). Each report
/// is accepted; `installed` names the BIOS system, and the boot token is left on the root.
#[test]
fn a_bios_install_reports_every_step_and_installed_on_any_kernel() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let netns = report_sink::Netns::new("loop-bios-reports");
    let sink = report_sink::Sink::start(&netns.0, "127.0.0.1:0", report_sink::accept_all);
    let disk = Loop::new(dir.path(), 2048);
    let bin = stand_ins(dir.path(), &dir.path().join("stand-ins.log"));
    let config = firmware_fleet(dir.path(), &disk.device, "auto");
    let served = format!(" nixos-pxe.attempt=2 nixos-pxe.token={TOKEN} nixos-pxe.report=http://{}", sink.address);
    let out = installer_on(Firmware::Bios, Some(&netns.0), dir.path(), &config, &bin, &["--cmdline".to_string(), fleet_cmdline(dir.path(), &served)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let steps = ["network", "disk", "partition", "unpack", "configure", "bootloader", "finish"];
    let mut expected = vec!["started".to_string()];
    expected.extend(steps.iter().map(|s| format!("step {s}")));
    expected.push("installed".into());
    assert_eq!(sink.events(), expected, "{stdout}");
    for what in &expected {
        let line = format!("nixos-pxe: report {what}: accepted");
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    }
    let received = sink.received();
    for r in &received {
        let b = &r.body;
        assert_eq!((b["host"].as_str(), b["generation"].as_u64(), b["attempt"].as_u64(), b["token"].as_str()), (Some("web1"), Some(3), Some(2), Some(TOKEN)), "{b}");
    }
    assert_eq!(received[received.len() - 1].body["system"], BIOS_SYSTEM);
    let check = TestMount::new(&format!("{}p2", disk.device), &dir.path().join("check"), "ro");
    let boot = std::fs::read_to_string(check.0.join("var/lib/nixos-pxe/boot-report.json")).unwrap_or_else(|e| format!("<{e}>"));
    drop(check);
    let boot: serde_json::Value = serde_json::from_str(&boot).unwrap_or_else(|e| panic!("boot-report.json: {e}: {boot}"));
    assert_eq!(boot["token"].as_str(), Some(TOKEN), "the first boot reports with the attempt's token");
}

/// A report address where nothing answers (serve down: the connection is refused) never fails
/// the install: every report is tried as long as its patience allows (3 tries for `started` and
/// each step, about two minutes for `installed`), said not delivered on the console, and the
/// install completes with the disk installed and stamped. A BIOS machine, so that all seven steps
/// run on any kernel. (Before, only a report that arrived and was refused was tried: 409.)
#[test]
fn an_unreachable_report_address_never_fails_the_install() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens in this namespace: a connection to any port is refused at once.
    let netns = report_sink::Netns::new("loop-unreachable");
    let disk = Loop::new(dir.path(), 2048);
    let bin = stand_ins(dir.path(), &dir.path().join("stand-ins.log"));
    let config = firmware_fleet(dir.path(), &disk.device, "auto");
    let served = format!(" nixos-pxe.attempt=2 nixos-pxe.token={TOKEN} nixos-pxe.report=http://127.0.0.1:9");
    let started = std::time::Instant::now();
    let out = installer_on(Firmware::Bios, Some(&netns.0), dir.path(), &config, &bin, &["--cmdline".to_string(), fleet_cmdline(dir.path(), &served)]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("nixos-pxe: install complete in "), "{stdout}");
    let why = "connecting to 127.0.0.1:9: Connection refused (os error 111)";
    let steps = ["network", "disk", "partition", "unpack", "configure", "bootloader", "finish"];
    for (i, step) in steps.iter().enumerate() {
        assert!(stdout.contains(&format!("nixos-pxe: step {}/7 {step} done in ", i + 1)), "{stdout}");
    }
    let mut brief: Vec<String> = vec!["started".into()];
    brief.extend(steps.iter().map(|s| format!("step {s}")));
    for what in &brief {
        let line = format!("nixos-pxe: report {what}: not delivered after 3 tries: {why}");
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    }
    // installed: tries at 0, 1, 3, 7, 15, 31, 61 and 91 s; the next would start after 120 s.
    let line = format!("nixos-pxe: report installed: not delivered after 8 tries: {why}");
    assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    assert!(!stdout.contains(": accepted") && !stdout.contains("FAILED"), "{stdout}");
    // 8 reports of about 3 s and one of about 91 s, and the install itself.
    assert!(took < std::time::Duration::from_secs(240), "took {took:?}");
    let check = TestMount::new(&format!("{}p2", disk.device), &dir.path().join("check"), "ro");
    let stamp = std::fs::read_to_string(check.0.join("boot/nixos-pxe/done-web1-g3")).unwrap_or_else(|e| format!("<{e}>"));
    let boot = check.0.join("var/lib/nixos-pxe/boot-report.json").exists();
    drop(check);
    assert_eq!(stamp, "web1 generation 3 attempt 2 installed by nixos-pxe\n", "the disk is installed and stamped");
    assert!(boot, "the boot token is left for the first boot, which reports when serve is back");
}

// ---- The firmware the disk is made for ----

const UEFI_SYSTEM: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web1-uefi";
const BIOS_SYSTEM: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-web1-bios";

/// web1 (generation 3) of a fleet whose customInstaller.firmware is `firmware`, with an image
/// built for it: for "auto" a system for uefi and one for bios.
fn firmware_fleet(dir: &Path, device: &str, firmware: &str) -> PathBuf {
    let systems: Vec<(&str, &str)> = if firmware == "auto" { vec![("system.uefi", UEFI_SYSTEM), ("system.bios", BIOS_SYSTEM)] } else { vec![("system", WEB_SYSTEM)] };
    pack_systems(dir, &dir.join("systems/web.tar.zst"), &systems);
    let file = dir.join("config.json");
    let config = serde_json::json!({
        "nfsroot": { "bootLoader": { "efinetDHCPInterface": "auto", "linuxPnPInterface": "auto" } },
        "customInstaller": { "rootDevice": device, "swapSizeMiB": 64, "firmware": firmware },
        "fleet": { "hosts": {
            "web1": { "macs": [WEB_MAC], "generation": 3, "target": { "directory": "/srv/fleet/web" }, "image": "systems/web.tar.zst" },
        } },
    });
    std::fs::write(&file, serde_json::to_string_pretty(&config).expect("json")).expect("write");
    file
}

/// A machine booted by legacy BIOS with firmware = "auto": the disk gets a BIOS boot partition
/// and no ESP, the image's BIOS system is installed, and since there is no FAT file system the
/// whole install runs here (the bootloader step without EFI variables, GRUB's part in the QEMU
/// end-to-end test); the completion stamp lies in the root's /boot, where GRUB for BIOS finds it.
#[test]
fn a_bios_machine_with_auto_gets_the_bios_layout_and_the_bios_system() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    let log = dir.path().join("stand-ins.log");
    let bin = stand_ins(dir.path(), &log);
    let config = firmware_fleet(dir.path(), &disk.device, "auto");
    let cmdline = fleet_cmdline(dir.path(), "");
    let out = installer_on(Firmware::Bios, None, dir.path(), &config, &bin, &["--cmdline".to_string(), cmdline]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let d = &disk.device;
    for line in [
        "nixos-pxe: this machine booted the installer by legacy BIOS (/sys/firmware/efi does not exist); customInstaller.firmware = \"auto\" follows it; the image holds a system for uefi and one for bios: the disk is laid out for bios (GRUB for BIOS: its boot code in the MBR, its core image in the BIOS boot partition)".to_string(),
        format!("nixos-pxe: {d}p1 is the BIOS boot partition: no file system, GRUB's core image goes there"),
        format!("nixos-pxe: the bios layout's GRUB needs no EFI variables; it is installed on {d}"),
        "nixos-pxe: wrote the completion stamp /boot/nixos-pxe/done-web1-g3 on the root file system (no ESP in a BIOS layout)".to_string(),
    ] {
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    }
    for (i, step) in ["network", "disk", "partition", "unpack", "configure", "bootloader", "finish"].iter().enumerate() {
        assert!(stdout.contains(&format!("nixos-pxe: step {}/7 {step} done in ", i + 1)), "{stdout}");
    }
    assert!(!stdout.contains("EFI variables reachable"), "{stdout}");
    let table: serde_json::Value = serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(d))).expect("json");
    let parts = table["partitiontable"]["partitions"].as_array().expect("partitions");
    let layout: Vec<(&str, &str, u64)> = parts.iter().map(|p| (p["name"].as_str().unwrap_or_default(), p["type"].as_str().unwrap_or_default(), p["size"].as_u64().unwrap_or_default())).collect();
    assert_eq!(
        layout,
        [
            ("bios-boot", "21686148-6449-6E6F-744E-656564454649", 2048),
            ("nixos", "0FC63DAF-8483-4772-8E79-3D69D8477DE4", (2048 - 2 - 1 - 64) * 2048),
            ("swap", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", 64 * 2048)
        ]
    );
    assert_eq!(disk_id(d), marker::disk_guid("web1", 3), "the marker, as on a UEFI disk");
    let calls = std::fs::read_to_string(&log).expect("stand-in log");
    assert!(calls.contains(&format!("--set {BIOS_SYSTEM}")) && !calls.contains(UEFI_SYSTEM), "{calls}");
    assert!(calls.contains("-- /nix/var/nix/profiles/system/bin/switch-to-configuration boot NIXOS_INSTALL_BOOTLOADER=1"), "{calls}");
    let check = TestMount::new(&format!("{d}p2"), &dir.path().join("check"), "ro");
    let stamp = std::fs::read_to_string(check.0.join("boot/nixos-pxe/done-web1-g3")).unwrap_or_else(|e| format!("<{e}>"));
    let both = (check.0.join(BIOS_SYSTEM.trim_start_matches('/')).exists(), check.0.join(UEFI_SYSTEM.trim_start_matches('/')).exists());
    drop(check);
    assert_eq!(stamp, "web1 generation 3 installed by nixos-pxe\n");
    // The image's other system is unpacked too (one closure, one registration); nothing points at it.
    assert_eq!(both, (true, true));
}

/// An image built for a firmware the machine does not boot with is refused in step 2, before
/// the disk is touched: "uefi" on a BIOS machine, "bios" on a UEFI machine. A dry run says the
/// same. "both" goes on under either.
#[test]
fn an_image_for_the_other_firmware_is_refused_before_anything_is_written() {
    if !can_run() {
        return;
    }
    let cases = [
        (Firmware::Bios, "uefi", "this machine booted the installer by legacy BIOS (/sys/firmware/efi does not exist), but its system image was built for UEFI"),
        (Firmware::Uefi, "bios", "this machine booted the installer by UEFI (/sys/firmware/efi exists), but its system image was built for legacy BIOS"),
    ];
    for (machine, firmware, refusal) in cases {
        for dry_run in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            // Small: the refusal comes before the disk is even looked at.
            let disk = Loop::new(dir.path(), 64);
            let log = dir.path().join("stand-ins.log");
            let bin = stand_ins(dir.path(), &log);
            let config = firmware_fleet(dir.path(), &disk.device, firmware);
            let before = disk.sha256();
            let mut args = vec!["--cmdline".to_string(), fleet_cmdline(dir.path(), "")];
            if dry_run {
                args.push("--dry-run".into());
            }
            let out = installer_on(machine, None, dir.path(), &config, &bin, &args);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(1), "{firmware}: {stdout}");
            let failed = failed_line(&stdout);
            assert!(failed.starts_with(&format!("nixos-pxe: install FAILED at step 2/7 (disk): {refusal}")), "{firmware} dry run {dry_run}: {stdout}");
            assert!(failed.contains("Nothing was written") && failed.contains("fleet.hosts.web1.customInstaller.firmware"), "{failed}");
            assert!(!stdout.contains("step 3/7") && !stdout.contains("dry run: the plan"), "{stdout}");
            assert_eq!(disk.sha256(), before, "{firmware}: the disk is unchanged");
            assert_eq!(partition_nodes(&disk.device), Vec::<String>::new());
            assert!(!log.exists(), "no stand-in ran");
        }
    }
}

/// The dry run's plan carries the firmware decision: the layout, its partitions and the boot loader
/// the system installs, for "auto" on a UEFI machine and "both" on a BIOS machine.
#[test]
fn the_dry_run_shows_the_firmware_decision_and_its_partitions() {
    if !can_run() {
        return;
    }
    let cases = [
        (Firmware::Uefi, "auto", "the disk is laid out for uefi (systemd-boot on the ESP", &["ESP"][..], "nixos-pxe/system.uefi"),
        (Firmware::Bios, "both", "the disk is laid out for both (GRUB for BIOS", &["bios-boot", "ESP"][..], "nixos-pxe/system"),
    ];
    for (machine, firmware, decision, before_root, system_file) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Loop::new(dir.path(), 2048);
        let bin = stand_ins(dir.path(), &dir.path().join("stand-ins.log"));
        let config = firmware_fleet(dir.path(), &disk.device, firmware);
        // Where a partition table, a file system or GRUB's boot code would go (the whole disk's
        // hash is a_dry_run_writes_nothing_anywhere's, and costs 8 s a time here).
        let ends = || {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&disk.device).expect("open");
            let mut bytes = vec![0u8; 4 << 20];
            f.read_exact(&mut bytes).expect("read the start");
            f.seek(SeekFrom::End(-(1 << 20))).expect("seek");
            let mut tail = vec![0u8; 1 << 20];
            f.read_exact(&mut tail).expect("read the end");
            bytes.extend(tail);
            bytes
        };
        let before = ends();
        let args = ["--cmdline".to_string(), fleet_cmdline(dir.path(), ""), "--dry-run".to_string()];
        let out = installer_on(machine, None, dir.path(), &config, &bin, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{firmware}: {stdout}");
        let plan = &stdout[stdout.find("nixos-pxe: dry run: the plan").expect("a plan")..];
        let firmware_line = line_starting(plan, "nixos-pxe:   firmware: ");
        assert!(firmware_line.contains(decision), "{firmware}: {plan}");
        let labels: Vec<&str> = plan.lines().filter_map(|l| l.strip_prefix("nixos-pxe:   partition ")).map(|l| l.rsplit(' ').next().unwrap_or_default()).collect();
        let mut expected = before_root.to_vec();
        expected.extend(["nixos", "swap"]);
        assert_eq!(labels, expected, "{firmware}: {plan}");
        assert!(plan.lines().any(|l| l == format!("nixos-pxe:   install the system named by {system_file} in the image")), "{plan}");
        assert!(plan.contains("nixos-pxe:     which installs "), "{plan}");
        assert!(ends() == before, "a dry run writes nothing");
        assert_eq!(partition_nodes(&disk.device), Vec::<String>::new());
    }
}

/// Secure Boot mode (issue 19): the installer takes the system image and the system's signed
/// boot file from serve over HTTP and checks each whole against the signed manifest before the
/// disk is touched. With one byte of the image changed on the server it stops at step 2 naming
/// the chunk, with the disk byte for byte as it was and nothing of the image kept; with the
/// signed bytes it installs them (steps 1-4 here, 5-7 too on a kernel with vfat, the signed boot
/// file then the ESP's EFI/BOOT/BOOTX64.EFI).
#[test]
fn secure_boot_mode_installs_only_an_image_that_matches_the_signed_manifest() {
    use nixos_pxe_installer::secure_boot::manifest::{self, CHUNK, FORMAT, Manifest};
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let disk = Loop::new(d, 2048);
    let log = d.join("stand-ins.log");
    let bin = stand_ins(d, &log);
    let config = config(d, &disk.device, "");
    // serve's root as `nixos-pxe sign` lays it out.
    let root = d.join("root");
    let signed = root.join(nixos_pxe_installer::secure_boot::HTTP_DIR);
    let image = pack_image(d, &signed.join("system.tar.zst"), SYSTEM);
    let boot_file: Vec<u8> = (0..300_007u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(signed.join("system.efi"), &boot_file).expect("boot file");
    std::fs::write(signed.join("tools.tar.zst"), b"tools").expect("tools");
    let digest = |name: &str| {
        let served = format!("{}/{name}", nixos_pxe_installer::secure_boot::HTTP_DIR);
        manifest::digest(&served, std::fs::File::open(signed.join(name)).expect("open")).expect("digest")
    };
    let m = Manifest {
        format: FORMAT,
        chunk_size: CHUNK,
        server: "http://127.0.0.1:8080".into(),
        tools: digest("tools.tar.zst"),
        images: [("system.tar.zst".to_string(), digest("system.tar.zst"))].into(),
        boot_files: [("system.tar.zst".to_string(), digest("system.efi"))].into(),
    };
    let manifest_file = d.join("manifest.json");
    std::fs::write(&manifest_file, serde_json::to_vec(&m).expect("json")).expect("manifest");
    let ns = common::Namespace::new("sb");
    let _serve = common::ServeFiles::start(&ns.name, d, &root, 8080);
    let stage = d.join("staged");
    let args = ["--manifest".to_string(), manifest_file.display().to_string(), "--stage-dir".to_string(), stage.display().to_string()];

    // One byte of the image changed on the server after signing.
    let good = std::fs::read(&image).expect("image");
    let mut changed = good.clone();
    changed[good.len() / 2] ^= 0x20;
    std::fs::write(&image, &changed).expect("change");
    let before = disk.sha256();
    let out = installer(Some(&ns.name), d, &config, &bin, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let failed = failed_line(&stdout);
    assert!(failed.starts_with("nixos-pxe: install FAILED at step 2/7 (disk): nixos-pxe/secure-boot/system.tar.zst: bytes 0-"), "{stdout}");
    assert!(failed.contains("(chunk 1 of 1) are not the ones that were signed") && failed.ends_with("nothing was written to the disk"), "{failed}");
    assert!(!stdout.contains("step 3/7"), "{stdout}");
    assert_eq!(disk.sha256(), before, "the disk is byte for byte as it was");
    assert_eq!(partition_nodes(&disk.device), Vec::<String>::new());
    assert_eq!(std::fs::read_dir(&stage).map(|e| e.count()).unwrap_or(0), 0, "nothing of the changed image is kept");

    // The signed bytes again: fetched, matched, installed.
    std::fs::write(&image, &good).expect("restore");
    let out = installer(Some(&ns.name), d, &config, &bin, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["system.tar.zst", "system.efi"] {
        let line = format!("http://127.0.0.1:8080/nixos-pxe/secure-boot/{name} (");
        assert!(stdout.lines().any(|l| l.contains(&line) && l.contains("fetched and matched the signed manifest")), "{name}: {stdout}");
    }
    assert!(stdout.contains(&format!("installing from http://127.0.0.1:8080/nixos-pxe/secure-boot/system.tar.zst (Secure Boot mode: fetched and checked whole against the signed manifest {} before the disk is touched)", manifest_file.display())), "{stdout}");
    assert!(stdout.contains(&format!("system image {} (", stage.join("system.tar.zst").display())), "{stdout}");
    assert_eq!(std::fs::read(stage.join("system.tar.zst")).expect("staged"), good);
    check_steps(&stdout, &disk, d);
    if has_vfat() {
        assert!(out.status.success(), "{stdout}");
        let esp = TestMount::new(&format!("{}p1", disk.device), &d.join("esp"), "ro");
        let placed = std::fs::read(esp.0.join("EFI/BOOT/BOOTX64.EFI")).expect("the signed boot file on the ESP");
        drop(esp);
        assert!(placed == boot_file, "the ESP's EFI/BOOT/BOOTX64.EFI is the signed boot file");
    }
}
