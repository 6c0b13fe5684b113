//! Which disk to install on, and whether it may be touched: resolves stable names without udev,
//! describes the disk (model, serial, size) and finds partition tables and file system signatures.

use crate::config::typed::WipePolicy;
use crate::error::Error;
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
        let disks: Vec<String> = sysfs.disks().iter().map(|d| sysfs.describe(d, d).describe()).collect();
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

/// How much of the start and end of a disk the probe reads.
pub const HEAD_BYTES: usize = 2 * 1024 * 1024;
pub const TAIL_BYTES: usize = 1024 * 1024;

/// Finds partition tables and file system signatures in the first `head` and last `tail` bytes of
/// a disk of `size` bytes. Pure, so it is tested on made-up headers.
pub fn signatures(head: &[u8], tail: &[u8], size: u64) -> Vec<Signature> {
    let mut found = Vec::new();
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let mut add = |what: &str, offset: u64| found.push(Signature { what: what.to_string(), offset });

    for sector in [512usize, 4096] {
        if at(sector, b"EFI PART") {
            add("a GPT partition table", sector as u64);
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
    if at(4086, b"SWAPSPACE2") || at(4086, b"SWAP-SPACE") {
        add("a swap area", 4086);
    }
    if at(0, b"LUKS\xba\xbe") {
        add("a LUKS container", 0);
    }
    if (0..4).any(|s| at(s * 512, b"LABELONE")) {
        add("an LVM physical volume", 512);
    }
    if at(4096, &[0xfc, 0x4e, 0x2b, 0xa9]) || at(0, &[0xfc, 0x4e, 0x2b, 0xa9]) {
        add("a Linux RAID (md) member", 4096);
    }
    if at(32769, b"CD001") {
        add("an ISO 9660 image", 32769);
    }
    if (128..256).any(|k| at(k * 1024, &[0x0c, 0xb1, 0xba, 0x00])) {
        add("a ZFS pool member", 128 * 1024);
    }
    // The backup GPT header in the disk's last sector.
    if tail.len() >= 512 && tail[tail.len() - 512..].starts_with(b"EFI PART") {
        add("a backup GPT header", size.saturating_sub(512));
    }
    found.dedup();
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

/// The safety decision: may the installer write to a disk that holds `found`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Proceed,
    /// The disk holds data and the policy forbids overwriting it; the text says what and how to override.
    Refuse(String),
    /// The disk holds data and the policy allows overwriting it (said in the log).
    Overwrite(String),
}

pub fn decide(policy: WipePolicy, disk: &Disk, found: &[Signature], mounted: &[String]) -> Decision {
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
    match policy {
        WipePolicy::IfEmpty => Decision::Refuse(format!(
            "{} is not empty: it holds {what}. Nothing was written. To install over it, set customInstaller.wipe = \"always\", or clear it first (wipefs -a {})",
            disk.describe(),
            disk.device
        )),
        WipePolicy::Always => Decision::Overwrite(format!("{} holds {what}; overwriting it (customInstaller.wipe = \"always\")", disk.describe())),
    }
}

/// Mount sources in `mounts` (/proc/mounts text) that are `disk` or one of its partitions.
pub fn mounted_parts(mounts: &str, disk: &Disk) -> Vec<String> {
    let device = disk.device.as_str();
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|src| *src == device || (src.starts_with(device) && src[device.len()..].trim_start_matches('p').chars().all(|c| c.is_ascii_digit())))
        .map(str::to_string)
        .collect()
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
        assert_eq!(decide(WipePolicy::IfEmpty, &disk(), &[], &[]), Decision::Proceed);
    }

    #[test]
    fn known_signatures_are_found() {
        let mut ext4 = blank();
        ext4[1080..1082].copy_from_slice(&[0x53, 0xef]);
        assert_eq!(signatures(&ext4, &[], 1 << 30)[0].what, "an ext2/ext3/ext4 file system");
        let mut gpt = blank();
        gpt[510] = 0x55;
        gpt[511] = 0xaa;
        gpt[446 + 4] = 0xee;
        gpt[512..520].copy_from_slice(b"EFI PART");
        let found: Vec<String> = signatures(&gpt, &[], 1 << 30).into_iter().map(|s| s.what).collect();
        assert_eq!(found, ["a GPT partition table", "an MBR partition table"]);
        let mut tail = vec![0u8; 4096];
        tail[4096 - 512..4096 - 504].copy_from_slice(b"EFI PART");
        assert_eq!(signatures(&blank(), &tail, 1 << 30)[0].what, "a backup GPT header");
        let mut swap = blank();
        swap[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(signatures(&swap, &[], 1 << 30)[0].what, "a swap area");
    }

    #[test]
    fn the_policy_decides() {
        let found = [Signature { what: "an ext2/ext3/ext4 file system".into(), offset: 1080 }];
        match decide(WipePolicy::IfEmpty, &disk(), &found, &[]) {
            Decision::Refuse(why) => {
                assert!(why.contains("/dev/sda (8.0 GiB), model QEMU HARDDISK is not empty"), "{why}");
                assert!(why.contains("customInstaller.wipe = \"always\""), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decide(WipePolicy::Always, &disk(), &found, &[]), Decision::Overwrite(_)));
        assert!(matches!(decide(WipePolicy::Always, &disk(), &[], &["/dev/sda1".into()]), Decision::Refuse(_)));
        assert_eq!(mounted_parts("/dev/sda1 / ext4 rw 0 0\n/dev/sdab1 /x ext4 rw 0 0\n", &disk()), ["/dev/sda1"]);
    }
}
