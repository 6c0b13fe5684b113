//! The disk layout, decided before anything is written: partition sizes from the options, the
//! disk's size and the firmware layout (install::firmware), the sfdisk script, the file systems.
//! Pure; `--dry-run` prints it.

use super::disk::Disk;
use super::firmware::Layout;
use crate::config::typed::CustomInstaller;
use crate::error::Error;
use camino::Utf8PathBuf;

pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const SWAP_TYPE: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";
/// GRUB's BIOS boot partition ("Hah!IdontNeedEFI"): grub-install --target=i386-pc embeds its core
/// image there on a GPT disk, which has no gap after the MBR as an MBR disk has.
pub const BIOS_BOOT_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";
/// Its size: GRUB's core image with the modules for GPT, ext4 and FAT is far below 1 MiB.
pub const BIOS_BOOT_MIB: u64 = 1;

/// The smallest root a NixOS system is worth installing on.
pub const MIN_ROOT_MIB: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Filesystem {
    Vfat,
    Ext4,
    Swap,
    /// None: the BIOS boot partition holds GRUB's core image, written by grub-install.
    BiosBoot,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Partition {
    pub number: u32,
    pub device: Utf8PathBuf,
    pub label: &'static str,
    pub type_guid: &'static str,
    pub size_mib: u64,
    pub filesystem: Filesystem,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub disk: Disk,
    /// What the partitions are for: the firmware the disk boots with.
    pub layout: Layout,
    pub partitions: Vec<Partition>,
    /// The GPT disk GUID to write: a fleet host's marker (fleet::marker), so that the disk check
    /// of a later attempt knows the disk for this host's own; `None`: sfdisk picks a random one.
    pub label_id: Option<String>,
}

impl Plan {
    fn with(&self, filesystem: Filesystem) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.filesystem == filesystem)
    }

    /// The EFI system partition, mounted on /boot; none in a BIOS layout.
    pub fn esp(&self) -> Option<&Partition> {
        self.with(Filesystem::Vfat)
    }

    pub fn root(&self) -> &Partition {
        self.with(Filesystem::Ext4).unwrap_or(&self.partitions[0])
    }

    pub fn swap(&self) -> Option<&Partition> {
        self.with(Filesystem::Swap)
    }

    pub fn bios_boot(&self) -> Option<&Partition> {
        self.with(Filesystem::BiosBoot)
    }

    /// The sfdisk script: GPT; the BIOS boot partition, the ESP, the root, the swap, each that
    /// the layout has, in that order; 1 MiB alignment.
    pub fn sfdisk_script(&self) -> String {
        let mut script = String::from("label: gpt\n");
        if let Some(id) = &self.label_id {
            script.push_str(&format!("label-id: {id}\n"));
        }
        for p in &self.partitions {
            script.push_str(&format!("size={}MiB, type={}, name=\"{}\"\n", p.size_mib, p.type_guid, p.label));
        }
        script
    }

    /// The commands the disk steps run, for `--dry-run` and the log.
    pub fn commands(&self) -> Vec<String> {
        let mut c = vec![format!("sfdisk --wipe always --wipe-partitions always {} <<< '{}'", self.disk.device, self.sfdisk_script().trim_end().replace('\n', "; "))];
        for p in &self.partitions {
            c.push(match p.filesystem {
                Filesystem::Vfat => format!("mkfs.vfat -F 32 -n {} {}", p.label, p.device),
                Filesystem::Ext4 => format!("mkfs.ext4 -F -q -L {} {}", p.label, p.device),
                Filesystem::Swap => format!("mkswap -L {} {}", p.label, p.device),
                Filesystem::BiosBoot => continue,
            });
        }
        c
    }
}

/// The partition device of `disk` number `n`: sda1, nvme0n1p1, loop0p1.
pub fn partition_device(disk: &Disk, separator: &str, n: u32) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{}{}{}", disk.device, separator, n))
}

/// Lays out `disk` per the options for `layout`; an error says what does not fit.
pub fn plan(disk: &Disk, options: &CustomInstaller, layout: Layout) -> Result<Plan, Error> {
    let separator = options.separator_for(&disk.name);
    let disk_mib = disk.size_bytes / (1024 * 1024);
    // 1 MiB before the first partition (alignment, GPT) and 1 MiB at the end (backup GPT).
    let usable = disk_mib.saturating_sub(2);
    let bios_boot = if layout.has_bios_boot() { BIOS_BOOT_MIB } else { 0 };
    let esp = if layout.has_esp() { options.esp_size_mib } else { 0 };
    let room = usable.saturating_sub(bios_boot + esp + options.swap_size_mib);
    // What the root comes after, for the errors: "the 512 MiB ESP and 0 MiB swap".
    let mut before = Vec::new();
    if layout.has_bios_boot() {
        before.push(format!("{BIOS_BOOT_MIB} MiB BIOS boot partition"));
    }
    if layout.has_esp() {
        before.push(format!("{esp} MiB ESP"));
    }
    let before = format!("the {} and {} MiB swap", before.join(", the "), options.swap_size_mib);
    let root = match options.root_size_mib {
        Some(want) if want > room => {
            return Err(Error::Message(format!(
                "{} has room for a {room} MiB root after {before}, but customInstaller.rootSizeMiB asks for {want} MiB",
                disk.describe()
            )));
        }
        Some(want) => want,
        None => room,
    };
    if root < MIN_ROOT_MIB {
        return Err(Error::Message(format!(
            "{} is too small: {room} MiB would be left for the root after {before}; at least {MIN_ROOT_MIB} MiB is needed",
            disk.describe()
        )));
    }
    let mut wanted: Vec<(&'static str, &'static str, u64, Filesystem)> = Vec::new();
    if layout.has_bios_boot() {
        wanted.push(("bios-boot", BIOS_BOOT_TYPE, BIOS_BOOT_MIB, Filesystem::BiosBoot));
    }
    if layout.has_esp() {
        wanted.push(("ESP", ESP_TYPE, esp, Filesystem::Vfat));
    }
    wanted.push(("nixos", LINUX_TYPE, root, Filesystem::Ext4));
    if options.swap_size_mib > 0 {
        wanted.push(("swap", SWAP_TYPE, options.swap_size_mib, Filesystem::Swap));
    }
    let partitions = wanted
        .into_iter()
        .zip(1..)
        .map(|((label, type_guid, size_mib, filesystem), number)| Partition {
            number,
            device: partition_device(disk, &separator, number),
            label,
            type_guid,
            size_mib,
            filesystem,
        })
        .collect();
    Ok(Plan { disk: disk.clone(), layout, partitions, label_id: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, resolve};
    use crate::origin::Origin;
    use camino::Utf8Path;
    use serde_json::json;

    fn options(pairs: &[(&str, serde_json::Value)]) -> CustomInstaller {
        let mut s = Settings::default();
        for (p, v) in pairs {
            s.define(crate::schema::find(p).expect("option"), v.clone(), Origin::Default).expect("define");
        }
        resolve(&s, Utf8Path::new("t.nix")).expect("valid").config.custom_installer
    }

    fn disk(name: &str, gib: u64) -> Disk {
        Disk { requested: format!("/dev/{name}"), device: format!("/dev/{name}").into(), name: name.into(), size_bytes: gib << 30, model: None, serial: None }
    }

    #[test]
    fn the_default_layout_is_esp_and_root_filling_the_disk() {
        let p = plan(&disk("sda", 8), &options(&[]), Layout::Uefi).expect("fits");
        assert_eq!(p.partitions.len(), 2);
        let esp = p.esp().expect("an ESP");
        assert_eq!((esp.device.as_str(), esp.size_mib), ("/dev/sda1", 512));
        assert_eq!((p.root().device.as_str(), p.root().size_mib), ("/dev/sda2", 8192 - 2 - 512));
        assert_eq!(p.bios_boot(), None);
        assert_eq!(
            p.sfdisk_script(),
            format!("label: gpt\nsize=512MiB, type={ESP_TYPE}, name=\"ESP\"\nsize=7678MiB, type={LINUX_TYPE}, name=\"nixos\"\n")
        );
    }

    #[test]
    fn nvme_names_swap_and_fixed_root() {
        let p = plan(&disk("nvme0n1", 64), &options(&[("customInstaller.swapSizeMiB", json!(4096)), ("customInstaller.rootSizeMiB", json!(20480))]), Layout::Uefi).expect("fits");
        let devices: Vec<&str> = p.partitions.iter().map(|p| p.device.as_str()).collect();
        assert_eq!(devices, ["/dev/nvme0n1p1", "/dev/nvme0n1p2", "/dev/nvme0n1p3"]);
        assert_eq!(p.root().size_mib, 20480);
        assert!(p.commands().iter().any(|c| c == "mkswap -L swap /dev/nvme0n1p3"));
    }

    #[test]
    fn a_bios_disk_has_a_bios_boot_partition_and_no_esp() {
        let p = plan(&disk("sda", 8), &options(&[]), Layout::Bios).expect("fits");
        assert_eq!(
            p.sfdisk_script(),
            format!("label: gpt\nsize=1MiB, type={BIOS_BOOT_TYPE}, name=\"bios-boot\"\nsize=8189MiB, type={LINUX_TYPE}, name=\"nixos\"\n")
        );
        assert_eq!(p.esp(), None);
        assert_eq!(p.bios_boot().map(|b| (b.device.as_str(), b.size_mib)), Some(("/dev/sda1", 1)));
        assert_eq!(p.root().device.as_str(), "/dev/sda2");
        // No file system is made on the BIOS boot partition: grub-install writes its core image there.
        assert_eq!(p.commands().len(), 2, "{:?}", p.commands());
        assert!(!p.commands().iter().any(|c| c.contains("/dev/sda1")), "{:?}", p.commands());
    }

    #[test]
    fn a_both_disk_has_the_bios_boot_partition_then_the_esp() {
        let p = plan(&disk("vda", 8), &options(&[("customInstaller.espSizeMiB", json!(256))]), Layout::Both).expect("fits");
        let parts: Vec<(&str, &str, u64, Filesystem)> = p.partitions.iter().map(|p| (p.device.as_str(), p.label, p.size_mib, p.filesystem)).collect();
        assert_eq!(
            parts,
            [("/dev/vda1", "bios-boot", 1, Filesystem::BiosBoot), ("/dev/vda2", "ESP", 256, Filesystem::Vfat), ("/dev/vda3", "nixos", 8192 - 2 - 1 - 256, Filesystem::Ext4)]
        );
        assert_eq!(p.commands()[1..], ["mkfs.vfat -F 32 -n ESP /dev/vda2".to_string(), "mkfs.ext4 -F -q -L nixos /dev/vda3".to_string()]);
    }

    /// Every layout with every combination of swap, a fixed root size and a fleet host's marker:
    /// the partitions the layout needs, in order and numbered, sizes that add up, the marker kept.
    #[test]
    fn every_layout_with_every_option() {
        let guid = crate::fleet::marker::disk_guid("web1", 3).to_string();
        for layout in [Layout::Uefi, Layout::Bios, Layout::Both] {
            for swap in [0u64, 2048] {
                for root in [None, Some(4096u64)] {
                    for marker in [None, Some(guid.clone())] {
                        let mut pairs = vec![("customInstaller.swapSizeMiB", json!(swap))];
                        if let Some(root) = root {
                            pairs.push(("customInstaller.rootSizeMiB", json!(root)));
                        }
                        let what = format!("{layout:?} swap {swap} root {root:?} marker {marker:?}");
                        let mut p = plan(&disk("vda", 16), &options(&pairs), layout).unwrap_or_else(|e| panic!("{what}: {e}"));
                        p.label_id = marker.clone();
                        let mut expected = Vec::new();
                        if layout != Layout::Uefi {
                            expected.push("bios-boot");
                        }
                        if layout != Layout::Bios {
                            expected.push("ESP");
                        }
                        expected.push("nixos");
                        if swap > 0 {
                            expected.push("swap");
                        }
                        assert_eq!(p.partitions.iter().map(|p| p.label).collect::<Vec<_>>(), expected, "{what}");
                        assert!(p.partitions.iter().zip(1..).all(|(part, n)| part.number == n && part.device == format!("/dev/vda{n}")), "{what}");
                        assert_eq!(p.esp().is_some(), layout.has_esp(), "{what}");
                        assert_eq!(p.bios_boot().map(|b| (b.type_guid, b.size_mib)), layout.has_bios_boot().then_some((BIOS_BOOT_TYPE, 1)), "{what}");
                        assert_eq!(p.swap().map(|s| s.size_mib), (swap > 0).then_some(swap), "{what}");
                        let total: u64 = p.partitions.iter().map(|p| p.size_mib).sum();
                        match root {
                            Some(root) => assert_eq!(p.root().size_mib, root, "{what}"),
                            None => assert_eq!(total, 16 * 1024 - 2, "{what}: the root fills the disk"),
                        }
                        let script = p.sfdisk_script();
                        assert_eq!(script.starts_with(&format!("label: gpt\nlabel-id: {guid}\n")), marker.is_some(), "{what}:\n{script}");
                        assert_eq!(script.lines().count(), 1 + usize::from(marker.is_some()) + expected.len(), "{what}:\n{script}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_fleet_hosts_marker_is_the_disk_guid() {
        let mut p = plan(&disk("vda", 8), &options(&[]), Layout::Uefi).expect("fits");
        let guid = crate::fleet::marker::disk_guid("web1", 3).to_string();
        p.label_id = Some(guid.clone());
        assert!(p.sfdisk_script().starts_with(&format!("label: gpt\nlabel-id: {guid}\nsize=512MiB, ")), "{}", p.sfdisk_script());
        assert!(p.commands()[0].contains(&format!("label: gpt; label-id: {guid}; size=512MiB")), "{}", p.commands()[0]);
    }

    #[test]
    fn what_does_not_fit_is_refused_with_numbers() {
        let err = plan(&disk("sda", 1), &options(&[]), Layout::Uefi).unwrap_err().to_string();
        assert!(err.contains("is too small: 510 MiB would be left for the root after the 512 MiB ESP and 0 MiB swap"), "{err}");
        let err = plan(&disk("sda", 8), &options(&[("customInstaller.rootSizeMiB", json!(100_000))]), Layout::Uefi).unwrap_err().to_string();
        assert!(err.contains("asks for 100000 MiB"), "{err}");
        let err = plan(&disk("sda", 1), &options(&[]), Layout::Both).unwrap_err().to_string();
        assert!(err.contains("is too small: 509 MiB would be left for the root after the 1 MiB BIOS boot partition, the 512 MiB ESP and 0 MiB swap"), "{err}");
        let err = plan(&disk("sda", 1), &options(&[]), Layout::Bios).unwrap_err().to_string();
        assert!(err.contains("is too small: 1021 MiB would be left for the root after the 1 MiB BIOS boot partition and 0 MiB swap"), "{err}");
    }
}
