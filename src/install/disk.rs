//! Which disk to install on, and whether it may be touched: resolves stable names without udev,
//! describes the disk (model, serial, size) and finds partition tables and file system signatures.

use crate::config::typed::WipePolicy;
use crate::error::Error;
use crate::fleet::marker::{self, Guid};
use camino::{Utf8Path, Utf8PathBuf};
use std::io::{Read, Seek, SeekFrom};

/// A whole disk, as the kernel names it, with what an operator needs to recognise it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Disk {
    /// What the configuration said (`/dev/disk/by-id/...` or `/dev/sda`).
    pub requested: String,
    /// The kernel's name: `/dev/sda`.
    pub device: Utf8PathBuf,
    pub name: String,
    pub size_bytes: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
}

impl Disk {
    pub fn describe(&self) -> String {
        let mut s = format!("{} ({})", self.device, human_size(self.size_bytes));
        if let Some(model) = &self.model {
            s.push_str(&format!(", model {model}"));
        }
        if let Some(serial) = &self.serial {
            s.push_str(&format!(", serial {serial}"));
        }
        if self.requested != self.device.as_str() {
            s.push_str(&format!(", from {}", self.requested));
        }
        s
    }
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Where the kernel describes block devices; a test may point it elsewhere.
#[derive(Debug, Clone)]
pub struct Sysfs {
    pub block: Utf8PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs { block: Utf8PathBuf::from("/sys/class/block") }
    }
}

impl Sysfs {
    fn read(&self, name: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.block.join(name).join(file)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    fn is_whole_disk(&self, name: &str) -> bool {
        self.block.join(name).exists() && !self.block.join(name).join("partition").exists()
    }

    /// The whole disks the kernel knows, for "which disks are there" in errors.
    pub fn disks(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.block)
            .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.retain(|n| self.is_whole_disk(n) && !n.starts_with("ram") && !n.starts_with("loop") && self.read(n, "size").is_some_and(|s| s != "0"));
        names.sort();
        names
    }

    pub fn describe(&self, name: &str, requested: &str) -> Disk {
        let size = self.read(name, "size").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 512;
        Disk {
            requested: requested.to_string(),
            device: Utf8PathBuf::from(format!("/dev/{name}")),
            name: name.to_string(),
            size_bytes: size,
            model: self.read(name, "device/model"),
            serial: self.read(name, "device/serial").or_else(|| self.read(name, "serial")),
        }
    }

    /// The stable names udev would give `name` (by-id), computed from sysfs: the installer runs
    /// without udev, so /dev/disk/by-id may not exist.
    pub fn stable_ids(&self, name: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let model = self.read(name, "device/model").map(|m| m.split_whitespace().collect::<Vec<_>>().join("_"));
        let serial = self.read(name, "device/serial").or_else(|| self.read(name, "serial"));
        if name.starts_with("vd")
            && let Some(serial) = &serial
        {
            ids.push(format!("virtio-{serial}"));
        }
        if name.starts_with("nvme")
            && let (Some(model), Some(serial)) = (&model, &serial)
        {
            ids.push(format!("nvme-{model}_{serial}"));
        }
        if let Some(wwid) = self.read(name, "wwid").or_else(|| self.read(name, "device/wwid")) {
            if let Some(naa) = wwid.strip_prefix("naa.") {
                ids.push(format!("wwn-0x{naa}"));
            }
            if let Some(eui) = wwid.strip_prefix("eui.") {
                ids.push(format!("nvme-eui.{eui}"));
            }
        }
        ids
    }
}

/// Resolves `requested` to a whole disk: a kernel name, or a /dev/disk/by-* link (followed when it
/// exists, else matched against sysfs). Errors say what is there instead.
pub fn resolve(requested: &str, sysfs: &Sysfs) -> Result<Disk, Error> {
    let available = || {
        let disks: Vec<String> = sysfs.disks().iter().map(|d| sysfs.describe(d, &format!("/dev/{d}")).describe()).collect();
        if disks.is_empty() { "the kernel sees no disks".to_string() } else { format!("disks present: {}", disks.join("; ")) }
    };
    let path = Utf8Path::new(requested);
    let name = if path.exists() {
        let real = path.canonicalize_utf8().map_err(Error::io(path))?;
        real.file_name().unwrap_or_default().to_string()
    } else if let Some(id) = requested.strip_prefix("/dev/disk/by-id/") {
        sysfs
            .disks()
            .into_iter()
            .find(|d| sysfs.stable_ids(d).iter().any(|s| s == id))
            .ok_or_else(|| Error::Message(format!("customInstaller.rootDevice {requested}: no disk has that id; {}", available())))?
    } else {
        return Err(Error::Message(format!("customInstaller.rootDevice {requested} does not exist; {}", available())));
    };
    if !sysfs.block.join(&name).exists() {
        return Err(Error::Message(format!("customInstaller.rootDevice {requested} ({name}) is not a block device; {}", available())));
    }
    if !sysfs.is_whole_disk(&name) {
        return Err(Error::Message(format!(
            "customInstaller.rootDevice {requested} is the partition {name}, not a whole disk; name the disk itself"
        )));
    }
    let disk = sysfs.describe(&name, requested);
    if disk.size_bytes == 0 {
        return Err(Error::Message(format!("customInstaller.rootDevice {requested} ({name}) has size 0 (no medium?)")));
    }
    Ok(disk)
}

/// Something found on a disk that says it is in use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signature {
    pub what: String,
    pub offset: u64,
}

/// How much of the start and end of a disk the probe reads: every signature below lies in the
/// first 2 MiB or the last 640 KiB (ZFS's third label at most).
pub const HEAD_BYTES: usize = 2 * 1024 * 1024;
pub const TAIL_BYTES: usize = 1024 * 1024;

/// The md RAID superblock magic, 0xa92b4efc, little-endian (versions 1.x; 0.90 on x86).
const MD_MAGIC: [u8; 4] = [0xfc, 0x4e, 0x2b, 0xa9];
/// ZFS's uberblock magic 0x00bab10c as a 64-bit word, in either byte order (host-endian on disk).
const ZFS_UBERBLOCK_LE: [u8; 8] = [0x0c, 0xb1, 0xba, 0x00, 0, 0, 0, 0];
const ZFS_UBERBLOCK_BE: [u8; 8] = [0, 0, 0, 0, 0x00, 0xba, 0xb1, 0x0c];
const KIB: u64 = 1024;

/// Finds partition tables and file system signatures in `head` (the disk's first bytes) and `tail`
/// (its last bytes) of a disk of `size` bytes. Pure, so it is tested on made-up headers; the
/// places are those the kernel and the tools write (and libblkid looks at).
pub fn signatures(head: &[u8], tail: &[u8], size: u64) -> Vec<Signature> {
    let tail_start = size.saturating_sub(tail.len() as u64);
    // The bytes at `offset` from the disk's start, from whichever buffer holds them.
    let at = |offset: u64, magic: &[u8]| {
        let end = offset + magic.len() as u64;
        let in_head = end <= head.len() as u64 && head[offset as usize..end as usize] == *magic;
        let in_tail = offset >= tail_start && end <= size && tail.get((offset - tail_start) as usize..(end - tail_start) as usize) == Some(magic);
        in_head || in_tail
    };
    let mut found = Vec::new();
    let mut add = |what: &str, offset: u64| found.push(Signature { what: what.to_string(), offset });

    for sector in [512, 4096] {
        if at(sector, b"EFI PART") {
            add("a GPT partition table", sector);
        }
    }
    if at(510, &[0x55, 0xaa]) {
        let fat = at(54, b"FAT") || at(82, b"FAT32");
        let entries = head.get(446..510).is_some_and(|e| e.chunks(16).any(|p| p[4] != 0));
        if fat {
            add("a FAT file system", 0);
        } else if entries {
            add("an MBR partition table", 510);
        }
    }
    if at(1080, &[0x53, 0xef]) {
        add("an ext2/ext3/ext4 file system", 1080);
    }
    if at(0, b"XFSB") {
        add("an XFS file system", 0);
    }
    if at(0x10040, b"_BHRfS_M") {
        add("a btrfs file system", 0x10040);
    }
    // The swap signature ends the first page, whatever the page size of the machine that made it.
    if let Some(offset) = [4, 8, 16, 32, 64].map(|k| k * KIB - 10).into_iter().find(|&o| at(o, b"SWAPSPACE2") || at(o, b"SWAP-SPACE")) {
        add("a swap area", offset);
    }
    if at(0, b"LUKS\xba\xbe") {
        let version = head.get(6..8).map_or(0, |v| u16::from_be_bytes([v[0], v[1]]));
        add(if version == 2 { "a LUKS2 container" } else { "a LUKS1 container" }, 0);
    } else if let Some(offset) = (14..=22).map(|bit| 1u64 << bit).find(|&o| at(o, b"SKUL\xba\xbe")) {
        // LUKS2 keeps a second header (at 16 KiB to 4 MiB) for when the first is damaged or wiped.
        add("a LUKS2 container (its secondary header)", offset);
    }
    if let Some(sector) = (0..4).map(|s| s * 512).find(|&o| at(o, b"LABELONE")) {
        add("an LVM physical volume", sector);
    }
    // md superblocks: 1.1 at the start, 1.2 4 KiB in, 1.0 8 KiB from the end (4 KiB aligned),
    // 0.90 in the last 64 KiB-aligned 64 KiB (the kernel's MD_NEW_SIZE_SECTORS); 0.90 is
    // host-endian, so its magic is looked for in both byte orders.
    let md_1_0 = (size & !(4 * KIB - 1)).checked_sub(8 * KIB);
    let md_0_90 = (size & !(64 * KIB - 1)).checked_sub(64 * KIB);
    let md_be: [u8; 4] = [0xa9, 0x2b, 0x4e, 0xfc];
    for (offset, version) in [(Some(0), "1.1"), (Some(4 * KIB), "1.2"), (md_1_0, "1.0"), (md_0_90, "0.90")] {
        let Some(offset) = offset else { continue };
        if at(offset, &MD_MAGIC) || (version == "0.90" && at(offset, &md_be)) {
            add(&format!("a Linux RAID (md) member, superblock {version}"), offset);
            break;
        }
    }
    if at(32769, b"CD001") {
        add("an ISO 9660 image", 32769);
    }
    // ZFS: four 256 KiB labels, two at the start and two at the end of the 256 KiB-aligned size,
    // each ending in a 128 KiB ring of uberblocks (1 KiB apart at the least).
    let aligned = size - size % (256 * KIB);
    let labels = [Some(0), Some(256 * KIB), aligned.checked_sub(512 * KIB), aligned.checked_sub(256 * KIB)];
    if let Some(offset) = labels
        .into_iter()
        .flatten()
        .flat_map(|label| (0..128).map(move |slot| label + 128 * KIB + slot * KIB))
        .find(|&o| at(o, &ZFS_UBERBLOCK_LE) || at(o, &ZFS_UBERBLOCK_BE))
    {
        add("a ZFS pool member", offset);
    }
    // The backup GPT header, in the disk's last sector (512 or 4096 bytes).
    if let Some(offset) = [512, 4096].into_iter().filter_map(|sector| size.checked_sub(sector)).find(|&o| at(o, b"EFI PART")) {
        add("a backup GPT header", offset);
    }
    found
}

/// Reads the start and end of `device` and finds its signatures.
pub fn probe(device: &Utf8Path, size: u64) -> Result<Vec<Signature>, Error> {
    let mut f = std::fs::File::open(device).map_err(Error::io(device))?;
    let mut head = vec![0u8; HEAD_BYTES.min(size as usize)];
    f.read_exact(&mut head).map_err(Error::io(device))?;
    let tail_len = TAIL_BYTES.min(size as usize) as u64;
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::Start(size - tail_len)).map_err(Error::io(device))?;
    f.read_exact(&mut tail).map_err(Error::io(device))?;
    Ok(signatures(&head, &tail, size))
}

/// The disk GUID of the primary GPT header in `head` (the disk's first bytes), for 512-byte or
/// 4 KiB sectors: where the installer's sfdisk script puts a fleet host's marker (`label-id:`).
pub fn gpt_disk_guid(head: &[u8]) -> Option<Guid> {
    [512usize, 4096].into_iter().find_map(|lba1| {
        let header = head.get(lba1..lba1 + 72)?;
        (&header[..8] == b"EFI PART").then(|| Guid::from_gpt_bytes(header[56..72].try_into().unwrap_or([0; 16])))
    })
}

/// Reads the GPT disk GUID of `device`, if it has a GPT.
pub fn read_gpt_disk_guid(device: &Utf8Path) -> Result<Option<Guid>, Error> {
    let mut head = Vec::with_capacity(8192);
    std::fs::File::open(device).and_then(|f| f.take(8192).read_to_end(&mut head)).map_err(Error::io(device))?;
    Ok(gpt_disk_guid(&head))
}

/// Who is installing, for a fleet host: the disk's GPT disk GUID tells this host's own unfinished
/// attempt (which may be overwritten) from every other disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerCheck<'a> {
    /// The GPT disk GUID found on the disk.
    pub found: Option<Guid>,
    pub host: &'a str,
    pub generation: u32,
    /// Every host of the fleet and its generation, to say whose marker another disk carries.
    pub fleet: &'a [(String, u32)],
}

impl MarkerCheck<'_> {
    fn is_own(&self) -> bool {
        self.found.is_some_and(|g| marker::is_own_attempt(&g, self.host, self.generation))
    }

    /// Whose install the found GUID marks (host, generation), trying each fleet host's
    /// generations up to a few past its current one.
    fn whose(&self) -> Option<(&str, u32)> {
        let found = self.found?;
        self.fleet.iter().find_map(|(host, current)| (1..=current + 8).find(|g| marker::disk_guid(host, *g) == found).map(|g| (host.as_str(), g)))
    }
}


/// The safety decision: may the installer write to a disk that holds `found`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Proceed,
    /// The disk holds data and the policy forbids overwriting it; the text says what and how to override.
    Refuse(String),
    /// The disk holds data and the policy allows overwriting it (said in the log).
    Overwrite(String),
}

/// `marker`: for a fleet host, the disk's GPT disk GUID and who is installing; `None` for the
/// single installer.
pub fn decide(policy: WipePolicy, disk: &Disk, found: &[Signature], mounted: &[String], marker: Option<&MarkerCheck>) -> Decision {
    if !mounted.is_empty() {
        return Decision::Refuse(format!(
            "{} is in use: {} mounted; nixos-pxe never overwrites a mounted disk",
            disk.device,
            mounted.join(", ")
        ));
    }
    if found.is_empty() {
        return Decision::Proceed;
    }
    let what: Vec<String> = found.iter().map(|s| format!("{} (at byte {})", s.what, s.offset)).collect();
    let what = what.join(", ");
    match (policy, marker) {
        (WipePolicy::IfEmpty, Some(m)) if m.is_own() => Decision::Overwrite(format!(
            "{} holds {what}, and its GPT disk GUID {} marks it as {}'s install of generation {}: an earlier attempt of this \
             install that did not finish, or a finished one being reinstalled. Installing over it (customInstaller.wipe = \"if-empty\" takes this host's own disk of this generation)",
            disk.describe(),
            m.found.map(|g| g.to_string()).unwrap_or_default(),
            m.host,
            m.generation
        )),
        (WipePolicy::IfEmpty, _) => {
            let (whose, option) = match marker {
                Some(m) => {
                    let whose = match (m.whose(), m.found) {
                        (Some((host, generation)), Some(guid)) if host == m.host => format!(
                            " Its GPT disk GUID {guid} marks it as {host}'s install of generation {generation}, not of generation {} that \
                             this is: an earlier generation's disk, installed or not.",
                            m.generation
                        ),
                        (Some((host, generation)), Some(guid)) => format!(
                            " Its GPT disk GUID {guid} marks it as fleet host {host}'s install of generation {generation}: another host's \
                             disk, not {}'s.",
                            m.host
                        ),
                        _ => String::new(),
                    };
                    (whose, format!("fleet.hosts.{}.customInstaller.wipe", m.host))
                }
                None => (String::new(), "customInstaller.wipe".to_string()),
            };
            Decision::Refuse(format!(
                "{} is not empty: it holds {what}.{whose} Nothing was written. To install over it, set {option} = \"always\", or clear it first (wipefs -a {})",
                disk.describe(),
                disk.device
            ))
        }
        (WipePolicy::Always, _) => Decision::Overwrite(format!("{} holds {what}; overwriting it (customInstaller.wipe = \"always\")", disk.describe())),
    }
}

/// Mount sources in `mounts` (/proc/mounts text) that are `disk` itself (a file system made on
/// the whole disk) or one of its partitions: the kernel names those `sda1` after a name that ends
/// in a letter and `nvme0n1p1`, `loop3p1`, `mmcblk0p1` after one that ends in a digit, so that
/// `loop30` is another disk than `loop3`'s partition.
pub fn mounted_parts(mounts: &str, disk: &Disk) -> Vec<String> {
    let device = disk.device.as_str();
    let separator = if device.ends_with(|c: char| c.is_ascii_digit()) { "p" } else { "" };
    let is_partition = |src: &str| {
        src.strip_prefix(device).and_then(|rest| rest.strip_prefix(separator)).is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    mounts.lines().filter_map(|l| l.split_whitespace().next()).filter(|src| *src == device || is_partition(src)).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Vec<u8> {
        vec![0u8; HEAD_BYTES]
    }

    fn disk() -> Disk {
        Disk {
            requested: "/dev/sda".into(),
            device: "/dev/sda".into(),
            name: "sda".into(),
            size_bytes: 8 << 30,
            model: Some("QEMU HARDDISK".into()),
            serial: None,
        }
    }

    #[test]
    fn a_blank_disk_has_no_signatures_and_may_be_used() {
        assert!(signatures(&blank(), &[0; 512], 8 << 30).is_empty());
        assert_eq!(decide(WipePolicy::IfEmpty, &disk(), &[], &[], None), Decision::Proceed);
    }

    /// (what, offset) of each signature `signatures` finds.
    fn found(head: &[u8], tail: &[u8], size: u64) -> Vec<(String, u64)> {
        signatures(head, tail, size).into_iter().map(|s| (s.what, s.offset)).collect()
    }

    fn one(what: &str, offset: u64) -> Vec<(String, u64)> {
        vec![(what.to_string(), offset)]
    }

    #[test]
    fn known_signatures_are_found() {
        let mut ext4 = blank();
        ext4[1080..1082].copy_from_slice(&[0x53, 0xef]);
        assert_eq!(found(&ext4, &[], 1 << 30), one("an ext2/ext3/ext4 file system", 1080));
        let mut gpt = blank();
        gpt[510] = 0x55;
        gpt[511] = 0xaa;
        gpt[446 + 4] = 0xee;
        gpt[512..520].copy_from_slice(b"EFI PART");
        let found_gpt: Vec<String> = signatures(&gpt, &[], 1 << 30).into_iter().map(|s| s.what).collect();
        assert_eq!(found_gpt, ["a GPT partition table", "an MBR partition table"]);
        let mut tail = vec![0u8; 4096];
        tail[4096 - 512..4096 - 504].copy_from_slice(b"EFI PART");
        assert_eq!(found(&blank(), &tail, 1 << 30), one("a backup GPT header", (1 << 30) - 512));
        let mut tail = vec![0u8; 4096];
        tail[..8].copy_from_slice(b"EFI PART");
        assert_eq!(found(&blank(), &tail, 1 << 30), one("a backup GPT header", (1 << 30) - 4096), "4 KiB sectors");
        for page in [4096, 65536] {
            let mut swap = blank();
            swap[page - 10..page].copy_from_slice(b"SWAPSPACE2");
            assert_eq!(found(&swap, &[], 1 << 30), one("a swap area", page as u64 - 10), "page size {page}");
        }
        let mut luks = blank();
        luks[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x02");
        assert_eq!(found(&luks, &[], 1 << 30), one("a LUKS2 container", 0));
        let mut secondary = blank();
        secondary[0x8000..0x8006].copy_from_slice(b"SKUL\xba\xbe");
        assert_eq!(found(&secondary, &[], 1 << 30), one("a LUKS2 container (its secondary header)", 0x8000));
        let mut lvm = blank();
        lvm[1024..1032].copy_from_slice(b"LABELONE");
        assert_eq!(found(&lvm, &[], 1 << 30), one("an LVM physical volume", 1024), "the label's own sector");
    }

    /// md superblocks at the start (1.1, 1.2) and at the end (1.0, 0.90), the end ones in the
    /// tail buffer at the kernel's offsets for a size that is not a multiple of 64 KiB.
    #[test]
    fn md_superblocks_are_found_at_both_ends() {
        let size: u64 = (1 << 30) + 5 * 4096 + 1234;
        let tail_start = size - TAIL_BYTES as u64;
        let at_end = |offset: u64, magic: &[u8]| {
            let mut tail = vec![0u8; TAIL_BYTES];
            let i = (offset - tail_start) as usize;
            tail[i..i + magic.len()].copy_from_slice(magic);
            found(&blank(), &tail, size)
        };
        let end_1_0 = (size & !4095) - 8192;
        let end_0_90 = (size & !65535) - 65536;
        assert_eq!(end_1_0, (1 << 30) + 3 * 4096);
        assert_eq!(end_0_90, (1 << 30) - 65536);
        assert_eq!(at_end(end_1_0, &MD_MAGIC), one("a Linux RAID (md) member, superblock 1.0", end_1_0));
        assert_eq!(at_end(end_0_90, &MD_MAGIC), one("a Linux RAID (md) member, superblock 0.90", end_0_90));
        assert_eq!(at_end(end_0_90, &[0xa9, 0x2b, 0x4e, 0xfc]), one("a Linux RAID (md) member, superblock 0.90", end_0_90), "big-endian");
        assert_eq!(at_end(end_0_90 + 4096, &MD_MAGIC), vec![], "not where no md version puts it");
        for (offset, version) in [(0, "1.1"), (4096, "1.2")] {
            let mut head = blank();
            head[offset..offset + 4].copy_from_slice(&MD_MAGIC);
            assert_eq!(found(&head, &[], size), one(&format!("a Linux RAID (md) member, superblock {version}"), offset as u64));
        }
    }

    /// A ZFS uberblock in any of the four labels, the end ones relative to the 256 KiB-aligned size.
    #[test]
    fn zfs_uberblocks_are_found_in_every_label() {
        let size: u64 = (1 << 30) + 100 * 1024;
        let aligned = 1u64 << 30;
        let tail_start = size - TAIL_BYTES as u64;
        for (label, offset) in [(0, 0), (1, 256 * KIB), (2, aligned - 512 * KIB), (3, aligned - 256 * KIB)] {
            for (slot, magic) in [(0, ZFS_UBERBLOCK_LE), (127, ZFS_UBERBLOCK_BE)] {
                let at = offset + 128 * KIB + slot * KIB;
                let (mut head, mut tail) = (blank(), vec![0u8; TAIL_BYTES]);
                if at < HEAD_BYTES as u64 {
                    head[at as usize..at as usize + 8].copy_from_slice(&magic);
                } else {
                    let i = (at - tail_start) as usize;
                    tail[i..i + 8].copy_from_slice(&magic);
                }
                assert_eq!(found(&head, &tail, size), one("a ZFS pool member", at), "label {label} slot {slot}");
            }
        }
    }

    #[test]
    fn the_policy_decides() {
        let found = [Signature { what: "an ext2/ext3/ext4 file system".into(), offset: 1080 }];
        match decide(WipePolicy::IfEmpty, &disk(), &found, &[], None) {
            Decision::Refuse(why) => assert_eq!(
                why,
                "/dev/sda (8.0 GiB), model QEMU HARDDISK is not empty: it holds an ext2/ext3/ext4 file system (at byte 1080). \
                 Nothing was written. To install over it, set customInstaller.wipe = \"always\", or clear it first (wipefs -a /dev/sda)"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(WipePolicy::Always, &disk(), &found, &[], None),
            Decision::Overwrite(
                "/dev/sda (8.0 GiB), model QEMU HARDDISK holds an ext2/ext3/ext4 file system (at byte 1080); overwriting it (customInstaller.wipe = \"always\")".into()
            )
        );
        // A mounted part is refused for that reason, whatever the policy and whether or not the disk looks empty.
        let in_use = Decision::Refuse("/dev/sda is in use: /dev/sda1, /dev/sda3 mounted; nixos-pxe never overwrites a mounted disk".into());
        let mounted = ["/dev/sda1".to_string(), "/dev/sda3".to_string()];
        for (policy, found) in [(WipePolicy::Always, &[][..]), (WipePolicy::Always, &found[..]), (WipePolicy::IfEmpty, &[][..])] {
            assert_eq!(decide(policy, &disk(), found, &mounted, None), in_use, "{policy:?} {found:?}");
        }
        assert_eq!(mounted_parts("/dev/sda1 / ext4 rw 0 0\n/dev/sdab1 /x ext4 rw 0 0\n/dev/sda3 /y ext4 rw 0 0\n", &disk()), mounted);
    }

    /// A file system made on the whole disk (no partition table) and mounted is the disk in use;
    /// for a name ending in a digit only `p` and a number is a partition: loop30 is another disk.
    #[test]
    fn a_mounted_whole_disk_counts_and_only_its_own_partitions_do() {
        let mounts = "/dev/sda /data ext4 rw 0 0\n/dev/sdb1 /other ext4 rw 0 0\n";
        assert_eq!(mounted_parts(mounts, &disk()), ["/dev/sda"]);
        assert_eq!(
            decide(WipePolicy::Always, &disk(), &[], &mounted_parts(mounts, &disk()), None),
            Decision::Refuse("/dev/sda is in use: /dev/sda mounted; nixos-pxe never overwrites a mounted disk".into())
        );
        let named = |device: &str| Disk { device: device.into(), name: device.trim_start_matches("/dev/").into(), ..disk() };
        let table = "/dev/loop3 /a ext4 rw 0 0\n/dev/loop30 /b ext4 rw 0 0\n/dev/loop3p2 /c ext4 rw 0 0\n/dev/loop31p1 /d ext4 rw 0 0\n\
                     /dev/nvme0n1p1 /e vfat rw 0 0\n/dev/nvme0n10 /f ext4 rw 0 0\n/dev/nvme0n1 /g ext4 rw 0 0\n";
        assert_eq!(mounted_parts(table, &named("/dev/loop3")), ["/dev/loop3", "/dev/loop3p2"]);
        assert_eq!(mounted_parts(table, &named("/dev/loop30")), ["/dev/loop30"]);
        assert_eq!(mounted_parts(table, &named("/dev/nvme0n1")), ["/dev/nvme0n1p1", "/dev/nvme0n1"]);
        assert_eq!(mounted_parts(table, &named("/dev/loop1")), Vec::<String>::new());
    }
    /// A head with a GPT whose disk GUID is `guid` (LBA 1 at `sector`), and a protective MBR.
    fn gpt_head(guid: Guid, sector: usize) -> Vec<u8> {
        let mut head = blank();
        head[510] = 0x55;
        head[511] = 0xaa;
        head[446 + 4] = 0xee;
        head[sector..sector + 8].copy_from_slice(b"EFI PART");
        head[sector + 56..sector + 72].copy_from_slice(&guid.to_gpt_bytes());
        head
    }

    #[test]
    fn the_gpt_disk_guid_is_read_for_both_sector_sizes() {
        let guid = marker::disk_guid("web1", 3);
        assert_eq!(gpt_disk_guid(&gpt_head(guid, 512)), Some(guid));
        assert_eq!(gpt_disk_guid(&gpt_head(guid, 4096)), Some(guid));
        assert_eq!(gpt_disk_guid(&blank()), None);
        assert_eq!(gpt_disk_guid(&[0u8; 100]), None, "a head too short for a header");
    }

    const FLEET: &[(&str, u32)] = &[("db1", 1), ("web1", 3)];

    fn fleet() -> Vec<(String, u32)> {
        FLEET.iter().map(|(h, g)| (h.to_string(), *g)).collect()
    }

    /// The decision for a disk holding a GPT (with `guid`) and an ext4 file system, installing
    /// web1 generation 3 with `policy`.
    fn with_marker(policy: WipePolicy, guid: Option<Guid>, mounted: &[String]) -> Decision {
        let found = [Signature { what: "a GPT partition table".into(), offset: 512 }, Signature { what: "an ext2/ext3/ext4 file system".into(), offset: 1080 }];
        let fleet = fleet();
        let check = MarkerCheck { found: guid, host: "web1", generation: 3, fleet: &fleet };
        decide(policy, &disk(), &found, mounted, Some(&check))
    }

    #[test]
    fn this_hosts_own_unfinished_attempt_is_installed_over_even_if_empty_only() {
        let own = marker::disk_guid("web1", 3);
        assert_eq!(
            with_marker(WipePolicy::IfEmpty, Some(own), &[]),
            Decision::Overwrite(format!(
                "/dev/sda (8.0 GiB), model QEMU HARDDISK holds a GPT partition table (at byte 512), an ext2/ext3/ext4 file system (at byte 1080), \
                 and its GPT disk GUID {own} marks it as web1's install of generation 3: an earlier attempt of this install that did not \
                 finish, or a finished one being reinstalled. Installing over it (customInstaller.wipe = \"if-empty\" takes this host's own disk of this generation)"
            ))
        );
        // Mounted: refused, marker or not.
        assert!(matches!(with_marker(WipePolicy::IfEmpty, Some(own), &["/dev/sda2".into()]), Decision::Refuse(why) if why.contains("is in use")));
    }

    #[test]
    fn any_other_marker_or_none_is_refused_and_named() {
        let refused = |guid: Option<Guid>| match with_marker(WipePolicy::IfEmpty, guid, &[]) {
            Decision::Refuse(why) => why,
            other => panic!("{guid:?}: {other:?}"),
        };
        let start = "/dev/sda (8.0 GiB), model QEMU HARDDISK is not empty: it holds a GPT partition table (at byte 512), an ext2/ext3/ext4 file system (at byte 1080).";
        let end = " Nothing was written. To install over it, set fleet.hosts.web1.customInstaller.wipe = \"always\", or clear it first (wipefs -a /dev/sda)";
        let older = marker::disk_guid("web1", 2);
        assert_eq!(
            refused(Some(older)),
            format!("{start} Its GPT disk GUID {older} marks it as web1's install of generation 2, not of generation 3 that this is: an earlier generation's disk, installed or not.{end}")
        );
        let newer = marker::disk_guid("web1", 4);
        assert!(refused(Some(newer)).contains(&format!("Its GPT disk GUID {newer} marks it as web1's install of generation 4, not of generation 3")));
        let other = marker::disk_guid("db1", 1);
        assert_eq!(
            refused(Some(other)),
            format!("{start} Its GPT disk GUID {other} marks it as fleet host db1's install of generation 1: another host's disk, not web1's.{end}")
        );
        // A GUID of no fleet install (any other GPT), or a disk without a GPT.
        let stranger: Guid = "0fc63daf-8483-4772-8e79-3d69d8477de4".parse().expect("guid");
        assert_eq!(refused(Some(stranger)), format!("{start}{end}"));
        assert_eq!(refused(None), format!("{start}{end}"));
        // Another host's marker of the same name-and-generation digits does not count as this host's.
        assert_ne!(marker::disk_guid("web13", 1), marker::disk_guid("web1", 31));
    }

    #[test]
    fn wipe_always_overwrites_whatever_marker() {
        for guid in [Some(marker::disk_guid("db1", 1)), Some(marker::disk_guid("web1", 3)), None] {
            assert!(matches!(with_marker(WipePolicy::Always, guid, &[]), Decision::Overwrite(why) if why.ends_with("overwriting it (customInstaller.wipe = \"always\")")));
        }
    }
}
