//! The installer's disk steps for real, on loop devices backed by sparse files this test makes:
//! partition, format, unpack a stand-in image, write networking.nix; and the refusal to touch a disk
//! that holds a file system. Never any other device. Needs root (CI runs as root).
//!
//! Stand-ins for the NixOS-only programs (nix-store, nix-env, nixos-generate-config, nixos-enter):
//! small scripts that record their arguments, since NixOS itself cannot run here.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n")
}

/// A loop device over a sparse file of `mib` MiB, detached when dropped.
struct Loop {
    device: String,
    backing: PathBuf,
}

impl Loop {
    /// Also starts the watcher that, should the test process be killed (no Drop runs then),
    /// unmounts what is mounted below `dir`, detaches every loop device over the backing file
    /// and removes `dir`.
    fn new(dir: &Path, mib: u64) -> Loop {
        let backing = dir.join("disk.img");
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
        Loop { device: String::from_utf8_lossy(&out.stdout).trim().to_string(), backing }
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
    let tree = dir.join("image-tree");
    let system = tree.join("nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-test");
    std::fs::create_dir_all(system.join("bin")).expect("mkdir");
    write_exec(&system.join("bin/switch-to-configuration"), "#!/bin/sh\necho stand-in\n");
    std::fs::write(system.join("marker"), "a file of the installed system\n").expect("write");
    std::fs::write(tree.join("registration"), "stand-in registration\n").expect("write");
    std::fs::write(tree.join("system"), "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-test\n").expect("write");
    let list = tree.join("paths");
    std::fs::write(&list, format!("{}\n", tree.join("nix").display())).expect("write");
    let out = dir.join("system.tar.zst");
    let status = Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(["pack", "--compression", "zstd", "--out"])
        .arg(&out)
        .arg("--file")
        .arg(format!("nix={}", tree.join("nix").display()))
        .arg("--file")
        .arg(format!("nixos-pxe/registration={}", tree.join("registration").display()))
        .arg("--file")
        .arg(format!("nixos-pxe/system={}", tree.join("system").display()))
        .status()
        .expect("pack");
    assert!(status.success());
    out
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

fn install(dir: &Path, config: &Path, image: &Path, bin: &Path, extra: &[&str]) -> Output {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-ec", STAND_IN_FIRMWARE, "stand-in-firmware"]);
    // SAFETY: prctl(2) is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        });
    }
    command
        .arg(env!("CARGO_BIN_EXE_nixos-pxe"))
        .arg("install")
        .arg("--config")
        .arg(config)
        .arg("--image")
        .arg(image)
        .arg("--target")
        .arg(dir.join("disk.mnt"))
        .arg("--lease-json")
        .arg(lease(dir))
        .arg("--resolv-conf")
        .arg(dir.join("resolv.conf"))
        .args(extra)
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

#[test]
fn installs_onto_an_empty_loop_device() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for loop devices and mounts (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    let log = dir.path().join("stand-ins.log");
    let bin = stand_ins(dir.path(), &log);
    let host_before = common::HostState::now();
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
    // The ESP is FAT32; a kernel without vfat (some CI sandboxes) cannot mount it. Then the installer
    // must stop at that mount with a clear message, and the QEMU end-to-end test (whose kernel has
    // vfat) covers the configure and bootloader steps.
    let vfat = std::fs::read_to_string("/proc/filesystems").unwrap_or_default().contains("vfat");
    let steps: &[&str] = if vfat { &["network", "disk", "partition", "unpack", "configure", "bootloader", "finish"] } else { &["network", "disk", "partition", "unpack"] };
    for (i, step) in steps.iter().enumerate() {
        assert!(stdout.contains(&format!("nixos-pxe: step {}/7 {step} done in ", i + 1)), "{stdout}");
    }
    if vfat {
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("nixos-pxe: install complete in "), "{stdout}");
    } else {
        eprintln!("NOTE: this kernel has no vfat: the configure and bootloader steps are checked by the QEMU end-to-end test");
        assert_eq!(out.status.code(), Some(1));
        assert!(stdout.contains(&format!("install FAILED at step 5/7 (configure): mounting {}p1 (vfat) on ", disk.device)), "{stdout}");
        assert!(!stdout.contains("install complete"), "{stdout}");
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
    let mnt = dir.path().join("check");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    run(Command::new("mount").args(["-o", "ro"]).arg(format!("{}p2", disk.device)).arg(&mnt));
    let read = |p: &str| std::fs::read_to_string(mnt.join(p)).unwrap_or_else(|e| format!("<{p}: {e}>"));
    let marker = read("nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-test/marker");
    let networking = read("etc/nixos/networking.nix");
    let hardware = mnt.join("etc/nixos/hardware-configuration.nix").exists();
    let nixos = mnt.join("etc/NIXOS").exists();
    let leftover = mnt.join("nixos-pxe").exists();
    run(Command::new("umount").arg(&mnt));
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
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("resolv.conf")).expect("resolv.conf").lines().last(), Some("nameserver 10.42.0.1"));
}

#[test]
fn refuses_a_disk_with_a_file_system_and_leaves_it_byte_for_byte() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for loop devices (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    run(Command::new("mkfs.ext4").args(["-q", "-L", "precious"]).arg(&disk.device));
    let before = disk.sha256();
    let bin = stand_ins(dir.path(), &dir.path().join("log"));
    let out = install(dir.path(), &config(dir.path(), &disk.device, ""), &image(dir.path()), &bin, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("nixos-pxe: install FAILED at step 2/7 (disk):"), "{stdout}");
    assert!(stdout.contains("is not empty: it holds an ext2/ext3/ext4 file system (at byte 1080)"), "{stdout}");
    assert!(stdout.contains("customInstaller.wipe = \"always\""), "{stdout}");
    assert!(!stdout.contains("step 3/7"), "{stdout}");
    assert_eq!(disk.sha256(), before, "the disk is unchanged");
}

#[test]
fn dry_run_and_a_missing_image_change_nothing() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for loop devices (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Loop::new(dir.path(), 2048);
    let before = disk.sha256();
    let bin = stand_ins(dir.path(), &dir.path().join("log"));
    let cfg = config(dir.path(), &disk.device, "");
    let out = install(dir.path(), &cfg, &image(dir.path()), &bin, &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(&format!("run mkfs.ext4 -F -q -L nixos {}p2", disk.device)), "{stdout}");
    assert!(stdout.contains("size=512MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), "{stdout}");
    let out = install(dir.path(), &cfg, &dir.path().join("no-such-image.tar.zst"), &bin, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("install FAILED at step 2/7 (disk): the system image") && stdout.contains("nothing was written"), "{stdout}");
    assert_eq!(disk.sha256(), before, "the disk is unchanged");
    assert!(!dir.path().join("resolv.conf").exists() || out.status.code() == Some(1));
}
