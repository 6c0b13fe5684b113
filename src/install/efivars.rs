//! The firmware's boot entries, through efivarfs, for Secure Boot mode: the installer registers
//! the installed system's signed boot file as a boot entry of its own (`Boot####` and
//! `BootOrder`), and when serve says "boot from the disk" it sets `BootNext` to that entry and
//! reboots (the firmware boots the network first, and there is no GRUB to chainload the disk:
//! GRUB 2.06 loads no kernel under Secure Boot without shim). Formats: UEFI 2.10, 3.1.3 (load
//! options) and 10.3 (device path nodes). Linux lets these variables be written and removed
//! (efivarfs' variable_validate list: Boot*, BootOrder, BootNext), so they are not immutable.
//! Pure encoders and decoders, and thin file access relative to a directory (tests give their own).

use camino::Utf8Path;

/// EFI_GLOBAL_VARIABLE: the vendor GUID of the boot variables, as efivarfs spells file names.
pub const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// Non-volatile, boot-service and runtime access: what the boot variables carry.
pub const NV_BS_RT: u32 = 0x7;
/// LOAD_OPTION_ACTIVE.
pub const ACTIVE: u32 = 0x1;

/// A boot entry (EFI_LOAD_OPTION).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    pub attributes: u32,
    pub description: String,
    /// The device path list, as the firmware stores it.
    pub path: Vec<u8>,
}

impl LoadOption {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.attributes.to_le_bytes().to_vec();
        out.extend((self.path.len() as u16).to_le_bytes());
        out.extend(ucs2(&self.description));
        out.extend(&self.path);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<LoadOption> {
        let attributes = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        let path_len = u16::from_le_bytes(bytes.get(4..6)?.try_into().ok()?) as usize;
        let mut units = Vec::new();
        let mut at = 6;
        loop {
            let unit = u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?);
            at += 2;
            if unit == 0 {
                break;
            }
            units.push(unit);
        }
        let path = bytes.get(at..at + path_len)?.to_vec();
        Some(LoadOption { attributes, description: String::from_utf16_lossy(&units), path })
    }

    /// Whether the entry boots from the network: its device path holds a MAC, IPv4, IPv6 or
    /// URI node (messaging, subtypes 11, 12, 13, 24), as a PXE or HTTP boot entry does.
    pub fn is_network(&self) -> bool {
        nodes(&self.path).iter().any(|(kind, subtype, _)| *kind == 3 && matches!(subtype, 11 | 12 | 13 | 24))
    }
}

/// `text` as NUL-terminated UCS-2, little-endian.
fn ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect()
}

/// The nodes of a device path list: (type, subtype, data), up to the end node.
pub fn nodes(path: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(&kind), Some(&subtype), Some(len)) = (path.get(at), path.get(at + 1), path.get(at + 2..at + 4)) {
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        if kind == 0x7f || len < 4 || at + len > path.len() {
            break;
        }
        out.push((kind, subtype, path[at + 4..at + len].to_vec()));
        at += len;
    }
    out
}

/// A GPT partition as the firmware finds it: HD(number, GPT, unique GUID, start, size), in
/// sectors of the disk's logical block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptPartition {
    pub number: u32,
    pub first_lba: u64,
    pub sectors: u64,
    /// The partition's unique GUID, as the GPT entry stores it.
    pub guid: [u8; 16],
}

/// The device path of `file` (backslashes, from the ESP's root) on `partition`: a hard drive
/// media node, a file path node and the end node; what efibootmgr writes for a disk entry.
pub fn file_on_partition(partition: &GptPartition, file: &str) -> Vec<u8> {
    let mut hd = vec![4u8, 1, 42, 0];
    hd.extend(partition.number.to_le_bytes());
    hd.extend(partition.first_lba.to_le_bytes());
    hd.extend(partition.sectors.to_le_bytes());
    hd.extend(partition.guid);
    hd.extend([2u8, 2]); // GPT partition format, GUID signature
    let name = ucs2(file);
    let mut fp = vec![4u8, 4];
    fp.extend(((4 + name.len()) as u16).to_le_bytes());
    fp.extend(name);
    let mut path = hd;
    path.extend(fp);
    path.extend([0x7f, 0xff, 4, 0]);
    path
}

/// Partition `number` (from 1) of the GPT in `head` (the disk's first bytes, its header and
/// entries: 512-byte or 4 KiB sectors).
pub fn gpt_partition(head: &[u8], number: u32) -> Option<GptPartition> {
    [512usize, 4096].into_iter().find_map(|sector| {
        let header = head.get(sector..sector + 92)?;
        if &header[..8] != b"EFI PART" {
            return None;
        }
        let entries_lba = u64::from_le_bytes(header[72..80].try_into().ok()?);
        let entry_size = u32::from_le_bytes(header[84..88].try_into().ok()?) as usize;
        let at = usize::try_from(entries_lba).ok()? * sector + (number as usize).checked_sub(1)? * entry_size;
        let entry = head.get(at..at + 128)?;
        if entry[..16] == [0; 16] {
            return None;
        }
        let first = u64::from_le_bytes(entry[32..40].try_into().ok()?);
        let last = u64::from_le_bytes(entry[40..48].try_into().ok()?);
        Some(GptPartition { number, first_lba: first, sectors: last - first + 1, guid: entry[16..32].try_into().ok()? })
    })
}

fn file(dir: &Utf8Path, name: &str) -> camino::Utf8PathBuf {
    dir.join(format!("{name}-{GLOBAL}"))
}

/// A global variable's data (without efivarfs' four bytes of attributes), if it exists.
pub fn read(dir: &Utf8Path, name: &str) -> Option<Vec<u8>> {
    let bytes = std::fs::read(file(dir, name)).ok()?;
    bytes.get(4..).map(<[u8]>::to_vec)
}

/// The firmware's SecureBoot variable (UEFI 2.10, 3.3): `Some(true)` when the firmware enforces
/// Secure Boot (1), `Some(false)` when it does not (0), `None` when there is no such variable
/// (not booted by UEFI, or efivarfs not mounted at `dir`).
pub fn secure_boot(dir: &Utf8Path) -> Option<bool> {
    read(dir, "SecureBoot").and_then(|data| data.first().copied()).map(|value| value == 1)
}

/// Sets a global variable: efivarfs takes the attributes and the data in one write.
pub fn write(dir: &Utf8Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut bytes = NV_BS_RT.to_le_bytes().to_vec();
    bytes.extend(data);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(file(dir, name))?;
    f.write_all(&bytes)
}

fn u16s(bytes: &[u8]) -> Vec<u16> {
    bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
}

/// The boot entries there are, by number.
pub fn entries(dir: &Utf8Path) -> Vec<(u16, LoadOption)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(number) = name.strip_prefix("Boot").and_then(|r| r.strip_suffix(&format!("-{GLOBAL}"))).filter(|n| n.len() == 4) else { continue };
        let Ok(number) = u16::from_str_radix(number, 16) else { continue };
        if let Some(option) = read(dir, &format!("Boot{number:04X}")).and_then(|d| LoadOption::decode(&d)) {
            out.push((number, option));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    out
}

/// The boot order.
pub fn boot_order(dir: &Utf8Path) -> Vec<u16> {
    read(dir, "BootOrder").map(|d| u16s(&d)).unwrap_or_default()
}

/// Where a new entry goes in the boot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Before everything: the machine boots it next time (a single installer's disk, as
    /// systemd-boot puts its own entry first).
    First,
    /// After everything: a fleet host keeps booting the network first, where serve decides.
    Last,
}

/// Writes `option` as a boot entry (the one with the same description again, else a new
/// number) and puts it in the boot order; returns its number.
pub fn register(dir: &Utf8Path, option: &LoadOption, place: Place) -> std::io::Result<u16> {
    let existing = entries(dir);
    let number = match existing.iter().find(|(_, o)| o.description == option.description) {
        Some((n, _)) => *n,
        None => (0..=u16::MAX).find(|n| !existing.iter().any(|(e, _)| e == n)).ok_or_else(|| std::io::Error::other("no free boot entry number"))?,
    };
    write(dir, &format!("Boot{number:04X}"), &option.encode())?;
    let mut order: Vec<u16> = boot_order(dir).into_iter().filter(|n| *n != number).collect();
    match place {
        Place::First => order.insert(0, number),
        Place::Last => order.push(number),
    }
    write(dir, "BootOrder", &order.iter().flat_map(|n| n.to_le_bytes()).collect::<Vec<u8>>())?;
    Ok(number)
}

/// The entry "boot from the disk" means for a machine that booted the installer from the
/// network: the one named `description` (the installed system's, registered by the installer),
/// else the first entry after the current one in the boot order that does not boot from the
/// network (what the firmware would have tried next).
pub fn local_boot_entry(dir: &Utf8Path, description: &str) -> Result<(u16, String), String> {
    let all = entries(dir);
    if let Some((n, o)) = all.iter().find(|(_, o)| o.description == description) {
        return Ok((*n, o.description.clone()));
    }
    let order = boot_order(dir);
    let current = read(dir, "BootCurrent").map(|d| u16s(&d)).and_then(|v| v.first().copied());
    let after = current.and_then(|c| order.iter().position(|n| *n == c)).map_or(0, |i| i + 1);
    order[after..]
        .iter()
        .filter_map(|n| all.iter().find(|(e, _)| e == n))
        .find(|(_, o)| o.attributes & ACTIVE != 0 && !o.is_network())
        .map(|(n, o)| (*n, o.description.clone()))
        .ok_or_else(|| format!("the firmware has no boot entry for a disk after the current one (boot order {order:04X?}, current {current:04X?}), and none named \"{description}\""))
}

/// Boots entry `number` once, at the next start.
pub fn set_boot_next(dir: &Utf8Path, number: u16) -> std::io::Result<()> {
    write(dir, "BootNext", &number.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_boot_is_the_first_data_byte_of_its_variable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dir = Utf8Path::from_path(dir.path()).expect("utf-8");
        assert_eq!(secure_boot(dir), None, "no variable: not known");
        // As efivarfs shows it: four bytes of attributes (BS|RT, read-only), then the value.
        std::fs::write(dir.join(format!("SecureBoot-{GLOBAL}")), [6, 0, 0, 0, 1]).expect("write");
        assert_eq!(secure_boot(dir), Some(true));
        std::fs::write(dir.join(format!("SecureBoot-{GLOBAL}")), [6, 0, 0, 0, 0]).expect("write");
        assert_eq!(secure_boot(dir), Some(false));
        std::fs::write(dir.join(format!("SecureBoot-{GLOBAL}")), [6, 0, 0, 0]).expect("write");
        assert_eq!(secure_boot(dir), None, "attributes without a value");
    }

    fn option(description: &str, path: Vec<u8>) -> LoadOption {
        LoadOption { attributes: ACTIVE, description: description.into(), path }
    }

    /// OVMF's PXE entry: PciRoot(0x0)/Pci(0x3,0x0)/MAC(525400005b01,0x1)/IPv4(0.0.0.0).
    fn pxe_path() -> Vec<u8> {
        let mut p = vec![2u8, 1, 12, 0, 0xd0, 0x41, 3, 0x0a, 0, 0, 0, 0];
        p.extend([1u8, 1, 6, 0, 0, 3]);
        let mut mac = vec![3u8, 11, 37, 0, 0x52, 0x54, 0, 0, 0x5b, 1];
        mac.extend([0u8; 26]);
        mac.push(1);
        p.extend(mac);
        let mut ip = vec![3u8, 12, 27, 0];
        ip.extend([0u8; 23]);
        p.extend(ip);
        p.extend([0x7f, 0xff, 4, 0]);
        p
    }

    fn esp() -> GptPartition {
        GptPartition { number: 1, first_lba: 2048, sectors: 1_048_576, guid: [0xab; 16] }
    }

    #[test]
    fn load_options_round_trip_and_network_entries_are_known() {
        let disk = option("NixOS sb-a (nixos-pxe, signed)", file_on_partition(&esp(), "\\EFI\\nixos-pxe\\sb-a.efi"));
        assert_eq!(LoadOption::decode(&disk.encode()), Some(disk.clone()));
        assert!(!disk.is_network());
        let pxe = option("UEFI PXEv4 (MAC:525400005B01)", pxe_path());
        assert!(pxe.is_network());
        let n = nodes(&disk.path);
        assert_eq!(n.iter().map(|(t, s, _)| (*t, *s)).collect::<Vec<_>>(), vec![(4, 1), (4, 4)]);
        assert_eq!(n[0].2.len(), 38, "HD() is 42 bytes with its header");
        assert_eq!(u64::from_le_bytes(n[0].2[4..12].try_into().expect("8")), 2048);
        let name: Vec<u16> = n[1].2.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(String::from_utf16_lossy(&name), "\\EFI\\nixos-pxe\\sb-a.efi\0");
    }

    #[test]
    fn partitions_are_read_from_the_gpt_as_sfdisk_writes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = dir.path().join("disk.img");
        std::fs::File::create(&disk).and_then(|f| f.set_len(64 << 20)).expect("disk");
        let script = "label: gpt\nlabel-id: 4C4A6D9A-1D0B-4A3E-9B43-6B2B0F1B7A10\nstart=2048, size=65536, type=U, uuid=0FC63DAF-8483-4772-8E79-3D69D8477DE4\nsize=40000, type=L\n";
        let mut child = std::process::Command::new("sfdisk").args(["--no-reread", "--no-tell-kernel", "-q"]).arg(&disk).stdin(std::process::Stdio::piped()).spawn().expect("sfdisk");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), script.as_bytes()).expect("script");
        assert!(child.wait().expect("sfdisk").success());
        let head = std::fs::read(&disk).expect("read");
        let p = gpt_partition(&head[..1 << 20], 1).expect("partition 1");
        assert_eq!((p.first_lba, p.sectors), (2048, 65536));
        // The GUID as stored: the first three fields little-endian.
        assert_eq!(p.guid[..4], [0xaf, 0x3d, 0xc6, 0x0f]);
        assert_eq!(gpt_partition(&head[..1 << 20], 2).map(|p| (p.first_lba, p.sectors)), Some((67584, 40000)));
        assert_eq!(gpt_partition(&head[..1 << 20], 3), None);
    }

    #[test]
    fn the_installed_systems_entry_is_registered_and_chosen_for_a_local_boot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = Utf8Path::from_path(dir.path()).expect("utf-8");
        // The firmware's own: PXE first (Boot0001), a DVD (Boot0000, not network), the disk (Boot0003).
        write(dir, "Boot0001", &option("UEFI PXEv4", pxe_path()).encode()).expect("write");
        write(dir, "Boot0000", &option("UEFI QEMU DVD-ROM", vec![0x7f, 0xff, 4, 0]).encode()).expect("write");
        write(dir, "Boot0003", &option("UEFI Misc Device", file_on_partition(&esp(), "\\EFI\\BOOT\\BOOTX64.EFI")).encode()).expect("write");
        write(dir, "BootOrder", &[1, 0, 3, 0, 0, 0]).expect("write");
        write(dir, "BootCurrent", &[1, 0]).expect("write");
        // Without ours: the next entry after the current one that is not the network.
        assert_eq!(local_boot_entry(dir, "NixOS sb-a (nixos-pxe, signed)"), Ok((3, "UEFI Misc Device".into())));
        let ours = option("NixOS sb-a (nixos-pxe, signed)", file_on_partition(&esp(), "\\EFI\\nixos-pxe\\sb-a.efi"));
        assert_eq!(register(dir, &ours, Place::Last).expect("register"), 2, "the lowest free number");
        assert_eq!(boot_order(dir), vec![1, 3, 0, 2]);
        assert_eq!(local_boot_entry(dir, "NixOS sb-a (nixos-pxe, signed)"), Ok((2, "NixOS sb-a (nixos-pxe, signed)".into())));
        // Registered again (a reinstall): the same number, first this time.
        assert_eq!(register(dir, &ours, Place::First).expect("register"), 2);
        assert_eq!(boot_order(dir), vec![2, 1, 3, 0]);
        set_boot_next(dir, 2).expect("BootNext");
        assert_eq!(read(dir, "BootNext"), Some(vec![2, 0]));
        assert_eq!(std::fs::read(dir.join(format!("BootNext-{GLOBAL}"))).expect("raw")[..4], [7, 0, 0, 0]);
        // Only network entries after the current one: said, not guessed.
        let lone = tempfile::tempdir().expect("tempdir");
        let lone = Utf8Path::from_path(lone.path()).expect("utf-8");
        write(lone, "Boot0001", &option("UEFI PXEv4", pxe_path()).encode()).expect("write");
        write(lone, "BootOrder", &[1, 0]).expect("write");
        write(lone, "BootCurrent", &[1, 0]).expect("write");
        assert!(local_boot_entry(lone, "x").unwrap_err().contains("no boot entry for a disk"));
    }
}
