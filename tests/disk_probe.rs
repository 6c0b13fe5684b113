//! The installer's safety checks on disks (src/install/disk.rs), on image files this test makes:
//! - every kind the README says the installer refuses, made by the real tool (mkfs.xfs,
//!   mkfs.btrfs, mkfs.vfat, mkfs.ext4, mkswap, sfdisk, cryptsetup, pvcreate, xorriso), must be
//!   refused by the probe, naming what it found and where;
//! - md RAID (no md driver in this kernel, so mdadm cannot create an array) and ZFS (no ZFS tools
//!   in Debian main) superblocks are written by this test from the on-disk formats: STAND-INS for
//!   what `mdadm --create` and `zpool create` would write;
//! - every image, the real-tool ones too, is cross-checked with `blkid -p` (util-linux's libblkid,
//!   an independent implementation), the md ones also with `mdadm --examine`, so the stand-ins are
//!   proven to be what the real tools recognise, and the probe's places are proven right;
//! - an all-zero disk is accepted, so each check can fail both ways;
//! - `customInstaller.rootDevice` resolved through the installer's `--sysfs-block` hook on a fake
//!   sysfs tree: by-id names (virtio-, nvme-, wwn-), a partition, a missing device.
//!
//! A program that is missing fails the test, or skips it loudly with NIXOS_PXE_ALLOW_SKIP=1.

mod common;
mod switches;

use camino::Utf8Path;
use nixos_pxe_installer::config::typed::WipePolicy;
use nixos_pxe_installer::install::disk::{self, Decision, Disk};
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MIB: u64 = 1 << 20;

/// Whether `program` runs here; if not, the test fails naming the Debian package, or skips.
fn have(program: &str, package: &str) -> bool {
    match Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            switches::skip_or_fail(&format!("{program} is not installed (apt-get install {package}; dev/packages.txt lists it)"));
            false
        }
        Err(e) => panic!("{program}: {e}"),
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sparse, all-zero image file of `bytes` bytes.
fn image(dir: &Path, name: &str, bytes: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).expect("create").set_len(bytes).expect("size");
    path
}

/// Writes `data` into `path` at `offset`.
fn poke(path: &Path, offset: u64, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).expect("open");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(data).expect("write");
}

/// What libblkid finds on the image, low-level (`blkid -p`: superblocks and partition tables, no
/// cache); empty when it finds nothing (exit status 2).
fn blkid(path: &Path) -> BTreeMap<String, String> {
    let out = Command::new("blkid").args(["-p", "-o", "export"]).arg(path).output().expect("blkid");
    assert!(out.status.success() || out.status.code() == Some(2), "blkid -p {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("\\ ", " ")))
        .collect()
}

/// What the installer's probe finds on the image: (what, byte offset) of each signature.
fn probe(path: &Path) -> Vec<(String, u64)> {
    let size = std::fs::metadata(path).expect("metadata").len();
    let found = disk::probe(Utf8Path::from_path(path).expect("utf-8 path"), size).expect("probe");
    found.into_iter().map(|s| (s.what, s.offset)).collect()
}

/// The installer's decision on the image under the default policy (wipe only an empty disk).
fn decision(path: &Path) -> Decision {
    let size = std::fs::metadata(path).expect("metadata").len();
    let device = Utf8Path::from_path(path).expect("utf-8 path");
    let disk = Disk { requested: device.to_string(), device: device.to_owned(), name: "image".into(), size_bytes: size, model: None, serial: None };
    let found = disk::probe(device, size).expect("probe");
    disk::decide(WipePolicy::IfEmpty, &disk, &found, &[], None)
}

/// The probe finds exactly `expected` on the image, and the installer refuses it, naming each.
fn assert_refused(path: &Path, expected: &[(&str, u64)]) {
    let found = probe(path);
    let expected: Vec<(String, u64)> = expected.iter().map(|(w, o)| (w.to_string(), *o)).collect();
    assert_eq!(found, expected, "{}", path.display());
    match decision(path) {
        Decision::Refuse(why) => {
            let what: Vec<String> = expected.iter().map(|(w, o)| format!("{w} (at byte {o})")).collect();
            assert!(why.contains(&format!(" is not empty: it holds {}. Nothing was written.", what.join(", "))), "{why}");
        }
        other => panic!("{}: not refused: {other:?}", path.display()),
    }
}

/// blkid's TYPE (and VERSION, where given) for the image.
fn assert_blkid(path: &Path, key: &str, value: &str, version: Option<&str>) {
    let found = blkid(path);
    assert_eq!(found.get(key).map(String::as_str), Some(value), "blkid -p {}: {found:?}", path.display());
    if let Some(version) = version {
        assert_eq!(found.get("VERSION").map(String::as_str), Some(version), "blkid -p {}: {found:?}", path.display());
    }
}

#[test]
fn an_all_zero_disk_is_accepted() {
    if !have("blkid", "util-linux") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Not a multiple of 64 KiB, so the places at the end are computed, not round.
    let zero = image(dir.path(), "zero.img", 256 * MIB + 12345);
    assert_eq!(blkid(&zero), BTreeMap::new(), "blkid finds nothing either");
    assert_eq!(probe(&zero), vec![]);
    assert_eq!(decision(&zero), Decision::Proceed);
}

#[test]
fn file_systems_made_by_the_real_tools_are_refused() {
    if !(have("blkid", "util-linux") && have("mkfs.xfs", "xfsprogs") && have("mkfs.btrfs", "btrfs-progs") && have("mkfs.vfat", "dosfstools") && have("mkfs.ext4", "e2fsprogs")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // XFS needs 300 MiB these days; all images are sparse.
    let xfs = image(dir.path(), "xfs.img", 320 * MIB);
    run(Command::new("mkfs.xfs").arg("-q").arg(&xfs));
    assert_blkid(&xfs, "TYPE", "xfs", None);
    assert_refused(&xfs, &[("an XFS file system", 0)]);

    let btrfs = image(dir.path(), "btrfs.img", 128 * MIB);
    run(Command::new("mkfs.btrfs").arg("-q").arg(&btrfs));
    assert_blkid(&btrfs, "TYPE", "btrfs", None);
    assert_refused(&btrfs, &[("a btrfs file system", 0x10040)]);

    for (bits, mib) in [("12", 8), ("16", 64), ("32", 64)] {
        let fat = image(dir.path(), &format!("fat{bits}.img"), mib * MIB);
        run(Command::new("mkfs.vfat").args(["-F", bits]).arg(&fat));
        assert_blkid(&fat, "TYPE", "vfat", Some(&format!("FAT{bits}")));
        assert_refused(&fat, &[("a FAT file system", 0)]);
    }

    let ext4 = image(dir.path(), "ext4.img", 64 * MIB);
    run(Command::new("mkfs.ext4").arg("-q").arg(&ext4));
    assert_blkid(&ext4, "TYPE", "ext4", None);
    assert_refused(&ext4, &[("an ext2/ext3/ext4 file system", 1080)]);

    let swap = image(dir.path(), "swap.img", 64 * MIB);
    run(Command::new("mkswap").arg(&swap));
    assert_blkid(&swap, "TYPE", "swap", None);
    assert_refused(&swap, &[("a swap area", 4086)]);
}

#[test]
fn partition_tables_made_by_sfdisk_are_refused() {
    if !(have("blkid", "util-linux") && have("sfdisk", "fdisk")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 64 * MIB;
    let sfdisk = |path: &Path, script: &str| {
        let mut child = Command::new("sfdisk").arg("--quiet").arg(path).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("sfdisk");
        child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write");
        assert!(child.wait().expect("sfdisk").success(), "sfdisk {}", path.display());
    };
    let gpt = image(dir.path(), "gpt.img", size);
    sfdisk(&gpt, "label: gpt\nsize=8MiB\n");
    assert_blkid(&gpt, "PTTYPE", "gpt", None);
    assert_refused(&gpt, &[("a GPT partition table", 512), ("an MBR partition table", 510), ("a backup GPT header", size - 512)]);

    // Only the backup header left, as after wiping the start of the disk.
    poke(&gpt, 0, &[0; 4096]);
    assert_refused(&gpt, &[("a backup GPT header", size - 512)]);

    let mbr = image(dir.path(), "mbr.img", size);
    sfdisk(&mbr, "label: dos\nsize=8MiB, type=83\n");
    assert_blkid(&mbr, "PTTYPE", "dos", None);
    assert_refused(&mbr, &[("an MBR partition table", 510)]);
}

#[test]
fn luks_containers_made_by_cryptsetup_are_refused() {
    if !(have("blkid", "util-linux") && have("cryptsetup", "cryptsetup-bin")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for version in ["1", "2"] {
        let luks = image(dir.path(), &format!("luks{version}.img"), 32 * MIB);
        let mut child = Command::new("cryptsetup")
            .args(["luksFormat", "--batch-mode", "--type", &format!("luks{version}"), "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-"])
            .arg(&luks)
            .stdin(Stdio::piped())
            .spawn()
            .expect("cryptsetup");
        child.stdin.take().expect("stdin").write_all(b"test passphrase").expect("write");
        assert!(child.wait().expect("cryptsetup").success(), "cryptsetup luksFormat --type luks{version}");
        assert_blkid(&luks, "TYPE", "crypto_LUKS", Some(version));
        assert_refused(&luks, &[(&format!("a LUKS{version} container"), 0)]);
    }
    // LUKS2 with its first header wiped: libblkid and the probe find the secondary one.
    let luks2 = dir.path().join("luks2.img");
    poke(&luks2, 0, &[0; 4096]);
    assert_blkid(&luks2, "TYPE", "crypto_LUKS", Some("2"));
    assert_refused(&luks2, &[("a LUKS2 container (its secondary header)", 0x4000)]);
}

#[test]
fn an_iso_9660_image_made_by_xorriso_is_refused() {
    if !(have("blkid", "util-linux") && have("xorriso", "xorriso")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).expect("mkdir");
    std::fs::write(content.join("README"), "an installer image\n").expect("write");
    let iso = dir.path().join("cd.iso");
    run(Command::new("xorriso").args(["-as", "mkisofs", "-quiet", "-o"]).arg(&iso).arg(&content));
    assert_blkid(&iso, "TYPE", "iso9660", None);
    assert_refused(&iso, &[("an ISO 9660 image", 32769)]);
}

/// A loop device over `backing`, detached when dropped: pvcreate writes only to block devices.
/// Also detached if the test process is killed: a watcher detaches whatever loop device is still
/// attached to `backing` then (never a device by name, which another test may have reused).
/// Once detached, unless the test failed already, the host must be as it was (tests/common
/// `HostState` with the backing file's directory): no loop device over a file there.
struct Loop(String, common::HostState);

impl Loop {
    fn attach(backing: &Path, extra: &[&str]) -> Loop {
        let backing = backing.canonicalize().expect("backing file");
        let host_before = common::HostState::below(&[backing.parent().expect("the backing file's directory")]);
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show"]).args(extra).arg(&backing);
        let device = Loop(run(&mut cmd).trim().to_string(), host_before);
        let quoted = backing.display().to_string().replace('\'', "'\\''");
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; losetup -n -O NAME -j '{quoted}' 2>/dev/null | xargs -r -n1 losetup -d; true",
            pid = std::process::id()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own, so a terminal's Ctrl-C that stops the test does not stop it.
            .process_group(0)
            .spawn()
            .map(drop)
            .expect("start the loop device watcher");
        device
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).output();
        // After a panic the test has failed already; a second panic here would abort.
        if !std::thread::panicking() {
            self.1.assert_unchanged(&format!("the test with {}", self.0));
        }
    }
}

#[test]
fn an_lvm_physical_volume_made_by_pvcreate_is_refused() {
    if !(have("blkid", "util-linux") && have("pvcreate", "lvm2")) {
        return;
    }
    if !is_root() {
        switches::skip_or_fail("needs root for a loop device (pvcreate writes only to block devices)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lvm = image(dir.path(), "lvm.img", 64 * MIB);
    let device = Loop::attach(&lvm, &[]);
    // Only this device: LVM scans nothing else, and without device-mapper it still writes its label.
    run(Command::new("pvcreate").args(["--devices", &device.0, &device.0]));
    drop(device);
    assert_blkid(&lvm, "TYPE", "LVM2_member", None);
    assert_refused(&lvm, &[("an LVM physical volume", 512)]);
}

/// STAND-IN for what `mdadm --create --metadata=1.x` writes on a member: a version-1 superblock
/// (struct mdp_superblock_1, linux/raid/md_p.h) of a two-disk RAID1, this device disk 0, at
/// `offset` bytes, with the checksum the kernel and mdadm compute (calc_sb_1_csum).
fn md_superblock_1(offset: u64, data_offset: u64, data_size: u64) -> Vec<u8> {
    const MAX_DEV: usize = 2;
    let mut sb = vec![0u8; 256 + 2 * MAX_DEV];
    let mut put = |at: usize, bytes: &[u8]| sb[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &0xa92b4efc_u32.to_le_bytes()); // magic
    put(4, &1_u32.to_le_bytes()); // major_version
    put(16, &[0x5e; 16]); // set_uuid
    put(32, b"stand-in:0"); // set_name
    put(64, &1_700_000_000_u64.to_le_bytes()); // ctime
    put(72, &1_u32.to_le_bytes()); // level: RAID1
    put(80, &data_size.to_le_bytes()); // size, in sectors
    put(92, &2_u32.to_le_bytes()); // raid_disks
    put(128, &(data_offset / 512).to_le_bytes()); // data_offset
    put(136, &(data_size).to_le_bytes()); // data_size
    put(144, &(offset / 512).to_le_bytes()); // super_offset
    put(160, &0_u32.to_le_bytes()); // dev_number
    put(168, &[0xd0; 16]); // device_uuid
    put(192, &1_700_000_000_u64.to_le_bytes()); // utime
    put(200, &1_u64.to_le_bytes()); // events
    put(208, &u64::MAX.to_le_bytes()); // resync_offset: in sync
    put(220, &(MAX_DEV as u32).to_le_bytes()); // max_dev
    put(256, &[0, 0, 1, 0]); // dev_roles: disk 0 has role 0, disk 1 role 1
    let mut csum: u64 = sb.chunks(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as u64).sum();
    csum = (csum & 0xffff_ffff) + (csum >> 32);
    sb[216..220].copy_from_slice(&(csum as u32).to_le_bytes()); // sb_csum
    sb
}

/// STAND-IN for what `mdadm --create --metadata=0.90` writes on a member: the 4 KiB mdp_super_t
/// (linux/raid/md_p.h, little-endian as on x86) of a two-disk RAID1 whose data is the `size_kib`
/// KiB before it, with calc_sb0_csum's checksum.
fn md_superblock_0_90(size_kib: u32) -> Vec<u8> {
    let mut words = [0u32; 1024];
    words[0] = 0xa92b4efc; // md_magic
    words[2] = 90; // minor_version (major 0, patch 0)
    words[5] = 0x5e5e5e5e; // set_uuid0
    words[6] = 1_700_000_000; // ctime
    words[7] = 1; // level: RAID1
    words[8] = size_kib; // size, KiB per member
    words[9] = 2; // nr_disks
    words[10] = 2; // raid_disks
    words[13..16].copy_from_slice(&[0x5e5e5e5e; 3]); // set_uuid1..3
    words[32] = 1_700_000_000; // utime
    words[33] = 1; // state: clean
    words[34..36].copy_from_slice(&[2, 2]); // active_disks, working_disks
    words[39] = 1; // events_lo
    words[43] = u32::MAX; // recovery_cp: in sync
    // disks[0] and disks[1] (number, major, minor, raid_disk, state: active|sync), this_disk = disks[0].
    for (disk, base) in [(0u32, 128usize), (1, 160), (0, 992)] {
        words[base..base + 5].copy_from_slice(&[disk, 7, disk, disk, (1 << 1) | (1 << 2)]);
    }
    let sum: u64 = words.iter().map(|&w| w as u64).sum();
    words[38] = ((sum & 0xffff_ffff) + (sum >> 32)) as u32; // sb_csum
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// mdadm's own reading of the image (it opens a file as it opens a device; no md driver needed).
fn mdadm_examine(path: &Path) -> String {
    let out: Output = Command::new("mdadm").arg("--examine").arg(path).output().expect("mdadm");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mdadm --examine {}: {text}", path.display());
    text
}

#[test]
fn md_raid_members_at_the_start_and_at_the_end_are_refused() {
    if !(have("blkid", "util-linux") && have("mdadm", "mdadm")) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Not a multiple of 64 KiB: the end superblocks are at the kernel's rounded-down places.
    let size = 64 * MIB + 12 * 1024 + 512;
    let end_1_0 = (size & !4095) - 8192;
    let end_0_90 = (size & !65535) - 65536;
    assert_eq!((end_1_0, end_0_90), (64 * MIB + 4096, 64 * MIB - 65536));
    for (version, offset, data_offset, data_size) in
        [("1.1", 0, MIB, 32 * 2048), ("1.2", 4096, MIB, 32 * 2048), ("1.0", end_1_0, 0, 32 * 2048)]
    {
        let md = image(dir.path(), &format!("md{version}.img"), size);
        poke(&md, offset, &md_superblock_1(offset, data_offset, data_size));
        assert_blkid(&md, "TYPE", "linux_raid_member", Some(version));
        let examine = mdadm_examine(&md);
        for line in [format!("Version : {version}"), "Raid Level : raid1".into(), "Raid Devices : 2".into(), format!("Super Offset : {} sectors", offset / 512)] {
            assert!(examine.contains(&line), "mdadm --examine, {version}: no {line:?} in\n{examine}");
        }
        assert!(examine.contains("Checksum : ") && examine.contains(" - correct"), "{examine}");
        assert_refused(&md, &[(&format!("a Linux RAID (md) member, superblock {version}"), offset)]);
    }
    let md = image(dir.path(), "md0.90.img", size);
    poke(&md, end_0_90, &md_superblock_0_90((end_0_90 / 1024) as u32));
    assert_blkid(&md, "TYPE", "linux_raid_member", Some("0.90.0"));
    let examine = mdadm_examine(&md);
    for line in ["Version : 0.90.00", "Raid Level : raid1", "Raid Devices : 2"] {
        assert!(examine.contains(line), "mdadm --examine, 0.90: no {line:?} in\n{examine}");
    }
    assert!(examine.contains("Checksum : ") && examine.contains(" - correct"), "{examine}");
    assert_refused(&md, &[("a Linux RAID (md) member, superblock 0.90", end_0_90)]);
}

/// STAND-IN for a ZFS vdev label as `zpool create` writes it (the on-disk format of OpenZFS's
/// vdev_impl.h / uberblock_impl.h, little-endian host): at 16 KiB the label's nvlist in XDR
/// encoding (pool name, guids, state, txg), and in the uberblock ring at 128 KiB, 4 KiB slots
/// (ashift 12), the uberblocks of txgs 4 to 7.
fn zfs_label() -> Vec<u8> {
    let mut label = vec![0u8; 256 * 1024];
    let mut nv = vec![1u8, 1, 0, 0]; // nvs_header_t: XDR encoding, little-endian host
    nv.extend_from_slice(&0u32.to_be_bytes()); // nvlist version
    nv.extend_from_slice(&1u32.to_be_bytes()); // nvflag: NV_UNIQUE_NAME
    let pair = |name: &str, value: Vec<u8>| {
        let mut body = (name.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(name.as_bytes());
        body.resize(body.len().next_multiple_of(4), 0);
        body.extend(value);
        let size = (8 + body.len()) as u32;
        let mut p = size.to_be_bytes().to_vec(); // encoded size
        p.extend_from_slice(&size.to_be_bytes()); // decoded size (not read back)
        p.extend(body);
        p
    };
    let uint64 = |v: u64| [8u32.to_be_bytes(), 1u32.to_be_bytes()].concat().into_iter().chain(v.to_be_bytes()).collect::<Vec<u8>>();
    let string = |s: &str| {
        let mut v = [9u32.to_be_bytes(), 1u32.to_be_bytes(), (s.len() as u32).to_be_bytes()].concat();
        v.extend_from_slice(s.as_bytes());
        v.resize(v.len().next_multiple_of(4), 0);
        v
    };
    nv.extend(pair("version", uint64(5000)));
    nv.extend(pair("name", string("standin")));
    nv.extend(pair("state", uint64(0))); // POOL_STATE_ACTIVE
    nv.extend(pair("txg", uint64(7)));
    nv.extend(pair("pool_guid", uint64(0x1234_5678_9abc_def0)));
    nv.extend(pair("top_guid", uint64(0x0fed_cba9_8765_4321)));
    nv.extend(pair("guid", uint64(0x0fed_cba9_8765_4321)));
    nv.extend_from_slice(&[0; 8]); // end of the list
    label[16 * 1024..16 * 1024 + nv.len()].copy_from_slice(&nv);
    for txg in 4u64..8 {
        let slot = 128 * 1024 + (txg as usize % 32) * 4096;
        let ub = [0x00ba_b10c_u64, 5000, txg, 0x1234_5678_9abc_def0 + 0x0fed_cba9_8765_4321, 1_700_000_000 + txg];
        for (i, word) in ub.iter().enumerate() {
            label[slot + 8 * i..slot + 8 * i + 8].copy_from_slice(&word.to_le_bytes());
        }
    }
    label
}

#[test]
fn a_zfs_pool_member_is_refused_by_its_labels_at_either_end() {
    if !have("blkid", "util-linux") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // 64 MiB is ZFS's (and libblkid's) smallest vdev; 100 KiB more so the end labels are aligned down.
    let size = 64 * MIB + 100 * 1024;
    let aligned = 64 * MIB;
    let labels = [0, 256 * 1024, aligned - 512 * 1024, aligned - 256 * 1024];
    let zfs = image(dir.path(), "zfs.img", size);
    for offset in labels {
        poke(&zfs, offset, &zfs_label());
    }
    assert_blkid(&zfs, "TYPE", "zfs_member", None);
    assert_eq!(blkid(&zfs).get("LABEL").map(String::as_str), Some("standin"));
    let first_uberblock = 128 * 1024 + 4 * 4096; // txg 4's slot of label 0
    assert_refused(&zfs, &[("a ZFS pool member", first_uberblock)]);

    // The first two labels wiped, as by clearing the start of the disk: the two at the end remain,
    // and libblkid (which needs four uberblocks) and the probe find the pool by them alone.
    poke(&zfs, 0, &vec![0; 512 * 1024]);
    assert_blkid(&zfs, "TYPE", "zfs_member", None);
    assert_refused(&zfs, &[("a ZFS pool member", labels[2] + first_uberblock)]);
}

/// Programs the installer looks for before step 2 resolves the disk; the resolve tests stop
/// before any runs, so each is a STAND-IN that fails if it ever does.
fn never_run_bin(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for program in ["sfdisk", "mkfs.vfat", "mkfs.ext4", "mkswap", "nix-store", "nix-env", "nixos-generate-config", "nixos-enter"] {
        let path = bin.join(program);
        std::fs::write(&path, format!("#!/bin/sh\necho 'stand-in {program} must not run' >&2\nexit 1\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bin
}

/// A fake /sys/class/block for `--sysfs-block`: `files` are (path below it, contents).
fn sysfs(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let root = dir.join("sysfs-block");
    std::fs::create_dir_all(&root).expect("mkdir");
    for (path, text) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, format!("{text}\n")).expect("write");
    }
    root
}

/// `nixos-pxe install --dry-run` with `root_device` and the fake sysfs; its stdout.
fn dry_run(dir: &Path, sysfs: &Path, root_device: &str) -> String {
    let config = dir.join("config.json");
    // firmware = "both" installs under either firmware, so the firmware check of step 2 passes on
    // this machine whatever booted it and the disk is resolved next (the default, "uefi", is
    // refused first on a machine booted by BIOS, as the CI machine is).
    let custom = serde_json::json!({ "rootDevice": root_device, "firmware": "both" });
    std::fs::write(&config, serde_json::json!({ "customInstaller": custom }).to_string()).expect("write");
    let image = dir.join("system.tar.zst");
    std::fs::write(&image, "not read before the disk is resolved").expect("write");
    std::fs::write(dir.join("lease.json"), r#"{"interface": "eth0", "address": "10.42.0.123", "prefixLength": 24, "nameServers": []}"#).expect("write");
    let path = format!("{}:{}", never_run_bin(dir).display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(["install", "--dry-run", "--config"])
        .arg(&config)
        .arg("--image")
        .arg(&image)
        .arg("--lease-json")
        .arg(dir.join("lease.json"))
        .arg("--resolv-conf")
        .arg(dir.join("resolv.conf"))
        .arg("--sysfs-block")
        .arg(sysfs)
        .env("PATH", path)
        .output()
        .expect("run nixos-pxe install");
    assert_eq!(out.status.code(), Some(1), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fake machine's disks: a virtio disk, an NVMe disk, a SCSI disk with a partition, and what
/// the list of disks leaves out (a loop device, a RAM disk, an empty CD drive). Their names are
/// unlike any real device's here; the test checks that /dev has none of them, since the dry run
/// would read the one it resolves to.
const FAKE_DISKS: &[(&str, &str)] = &[
    ("vdzz/size", "16777216"),
    ("vdzz/serial", "BHYVE-1234"),
    ("nvme9n9/size", "1953525168"),
    ("nvme9n9/device/model", "Samsung SSD 980 PRO 1TB   "),
    ("nvme9n9/device/serial", "S5GXNF0R123456"),
    ("nvme9n9/wwid", "eui.002538b111b2c3d4"),
    ("sdzz/size", "4194304"),
    ("sdzz/device/model", "QEMU HARDDISK"),
    ("sdzz/device/wwid", "naa.5000c500a1b2c3d4"),
    ("sdzz1/size", "2048"),
    ("sdzz1/partition", "1"),
    ("loop9/size", "4096"),
    ("ram9/size", "8192"),
    ("srzz/size", "0"),
];

const DISKS_PRESENT: &str = "disks present: /dev/nvme9n9 (931.5 GiB), model Samsung SSD 980 PRO 1TB, serial S5GXNF0R123456; \
                             /dev/sdzz (2.0 GiB), model QEMU HARDDISK; /dev/vdzz (8.0 GiB), serial BHYVE-1234";

fn failed_line(stdout: &str) -> &str {
    stdout.lines().find(|l| l.starts_with("nixos-pxe: install FAILED")).unwrap_or_default()
}

#[test]
fn by_id_names_resolve_through_sysfs_without_udev() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["vdzz", "nvme9n9", "sdzz", "sdzz1", "srzz"] {
        assert!(!Path::new("/dev").join(name).exists(), "/dev/{name} exists here: the test's fake disk names must not name a real device");
    }
    let sysfs = sysfs(dir.path(), FAKE_DISKS);
    for (id, device, description) in [
        ("virtio-BHYVE-1234", "vdzz", "/dev/vdzz (8.0 GiB), serial BHYVE-1234"),
        ("nvme-Samsung_SSD_980_PRO_1TB_S5GXNF0R123456", "nvme9n9", "/dev/nvme9n9 (931.5 GiB), model Samsung SSD 980 PRO 1TB, serial S5GXNF0R123456"),
        ("nvme-eui.002538b111b2c3d4", "nvme9n9", "/dev/nvme9n9 (931.5 GiB), model Samsung SSD 980 PRO 1TB, serial S5GXNF0R123456"),
        ("wwn-0x5000c500a1b2c3d4", "sdzz", "/dev/sdzz (2.0 GiB), model QEMU HARDDISK"),
    ] {
        let requested = format!("/dev/disk/by-id/{id}");
        let stdout = dry_run(dir.path(), &sysfs, &requested);
        assert!(stdout.lines().any(|l| l == format!("nixos-pxe: target disk {description}, from {requested}")), "{id}:\n{stdout}");
        // Resolved, the dry run reads the disk, which this fake machine does not have.
        assert_eq!(failed_line(&stdout), format!("nixos-pxe: install FAILED at step 2/7 (disk): /dev/{device}: No such file or directory (os error 2)"), "{id}");
    }
}

const STEP_2: &str = "nixos-pxe: install FAILED at step 2/7 (disk): customInstaller.rootDevice";

#[test]
fn a_missing_device_an_unknown_id_and_a_non_disk_are_refused_with_what_is_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sysfs = sysfs(dir.path(), FAKE_DISKS);
    let failed = |requested: &str| dry_run(dir.path(), &sysfs, requested);
    assert_eq!(failed_line(&failed("/dev/sdqq")), format!("{STEP_2} /dev/sdqq does not exist; {DISKS_PRESENT}"));
    assert_eq!(failed_line(&failed("/dev/disk/by-id/virtio-NOPE")), format!("{STEP_2} /dev/disk/by-id/virtio-NOPE: no disk has that id; {DISKS_PRESENT}"));
    // Exists, but the kernel describes no block device of that name.
    assert_eq!(failed_line(&failed("/dev/null")), format!("{STEP_2} /dev/null (null) is not a block device; {DISKS_PRESENT}"));
    let empty = dir.path().join("empty-sysfs");
    std::fs::create_dir_all(&empty).expect("mkdir");
    assert_eq!(failed_line(&dry_run(dir.path(), &empty, "/dev/sdqq")), format!("{STEP_2} /dev/sdqq does not exist; the kernel sees no disks"));
}

/// A partition, and a drive with no medium, named by their real device nodes: a loop device this
/// test partitions, described by the fake sysfs.
#[test]
fn a_partition_and_an_empty_drive_are_refused() {
    if !is_root() {
        switches::skip_or_fail("needs root for a loop device (the partition's device node)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = image(dir.path(), "disk.img", 64 * MIB);
    let mut child = Command::new("sfdisk").arg("--quiet").arg(&backing).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("sfdisk");
    child.stdin.take().expect("stdin").write_all(b"label: gpt\nsize=8MiB\n").expect("write");
    assert!(child.wait().expect("sfdisk").success());
    let device = Loop::attach(&backing, &["--partscan"]);
    let (disk, part) = (device.0.clone(), format!("{}p1", device.0));
    let (name, part_name) = (disk.trim_start_matches("/dev/").to_string(), part.trim_start_matches("/dev/").to_string());
    // Without udev the kernel may not add the partition for --partscan; partx asks it to.
    run(Command::new("partx").args(["-u", &disk]));
    assert!(Path::new(&part).exists(), "{part} did not appear");
    let mut files = FAKE_DISKS.to_vec();
    let (disk_size, part_size, part_flag) = (format!("{name}/size"), format!("{part_name}/size"), format!("{part_name}/partition"));
    files.extend([(disk_size.as_str(), "0"), (part_size.as_str(), "16384"), (part_flag.as_str(), "1")]);
    let sysfs = sysfs(dir.path(), &files);
    let before = std::fs::read(&backing).expect("read");
    let failed = |requested: &str| dry_run(dir.path(), &sysfs, requested);
    assert_eq!(failed_line(&failed(&part)), format!("{STEP_2} {part} is the partition {part_name}, not a whole disk; name the disk itself"));
    assert_eq!(failed_line(&failed(&disk)), format!("{STEP_2} {disk} ({name}) has size 0 (no medium?)"));
    drop(device);
    assert!(std::fs::read(&backing).expect("read") == before, "the disk is unchanged");
}
