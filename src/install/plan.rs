//! The disk layout, decided before anything is written: partition sizes from the options and the
//! disk's size, the sfdisk script, the file systems. Pure; `--dry-run` prints it.

use super::disk::Disk;
use crate::config::typed::CustomInstaller;
use crate::error::Error;
use camino::Utf8PathBuf;

pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const SWAP_TYPE: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";

/// The smallest root a NixOS system is worth installing on.
pub const MIN_ROOT_MIB: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Filesystem {
    Vfat,
    Ext4,
    Swap,
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
    pub partitions: Vec<Partition>,
    /// The GPT disk GUID to write: a fleet host's marker (fleet::marker), so that the disk check
    /// of a later attempt knows the disk for this host's own; `None`: sfdisk picks a random one.
    pub label_id: Option<String>,
}

impl Plan {
    pub fn esp(&self) -> &Partition {
        &self.partitions[0]
    }

    pub fn root(&self) -> &Partition {
        &self.partitions[1]
    }

    pub fn swap(&self) -> Option<&Partition> {
        self.partitions.get(2)
    }

    /// The sfdisk script: GPT, ESP first, root second, swap last; 1 MiB alignment.
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
            });
        }
        c
    }
}

/// The partition device of `disk` number `n`: sda1, nvme0n1p1, loop0p1.
pub fn partition_device(disk: &Disk, separator: &str, n: u32) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{}{}{}", disk.device, separator, n))
}

/// Lays out `disk` per the options; an error says what does not fit.
pub fn plan(disk: &Disk, options: &CustomInstaller) -> Result<Plan, Error> {
    let separator = options.separator_for(&disk.name);
    let disk_mib = disk.size_bytes / (1024 * 1024);
    // 1 MiB before the first partition (alignment, GPT) and 1 MiB at the end (backup GPT).
    let usable = disk_mib.saturating_sub(2);
    let fixed = options.esp_size_mib + options.swap_size_mib;
    let room = usable.saturating_sub(fixed);
    let root = match options.root_size_mib {
        Some(want) if want > room => {
            return Err(Error::Message(format!(
                "{} has room for a {room} MiB root after the {} MiB ESP and {} MiB swap, but customInstaller.rootSizeMiB asks for {want} MiB",
                disk.describe(),
                options.esp_size_mib,
                options.swap_size_mib
            )));
        }
        Some(want) => want,
        None => room,
    };
    if root < MIN_ROOT_MIB {
        return Err(Error::Message(format!(
            "{} is too small: {room} MiB would be left for the root after the {} MiB ESP and {} MiB swap; at least {MIN_ROOT_MIB} MiB is needed",
            disk.describe(),
            options.esp_size_mib,
            options.swap_size_mib
        )));
    }
    let mut partitions = vec![
        Partition {
            number: 1,
            device: partition_device(disk, &separator, 1),
            label: "ESP",
            type_guid: ESP_TYPE,
            size_mib: options.esp_size_mib,
            filesystem: Filesystem::Vfat,
        },
        Partition {
            number: 2,
            device: partition_device(disk, &separator, 2),
            label: "nixos",
            type_guid: LINUX_TYPE,
            size_mib: root,
            filesystem: Filesystem::Ext4,
        },
    ];
    if options.swap_size_mib > 0 {
        partitions.push(Partition {
            number: 3,
            device: partition_device(disk, &separator, 3),
            label: "swap",
            type_guid: SWAP_TYPE,
            size_mib: options.swap_size_mib,
            filesystem: Filesystem::Swap,
        });
    }
    Ok(Plan { disk: disk.clone(), partitions, label_id: None })
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
        let p = plan(&disk("sda", 8), &options(&[])).expect("fits");
        assert_eq!(p.partitions.len(), 2);
        assert_eq!((p.esp().device.as_str(), p.esp().size_mib), ("/dev/sda1", 512));
        assert_eq!((p.root().device.as_str(), p.root().size_mib), ("/dev/sda2", 8192 - 2 - 512));
        assert_eq!(
            p.sfdisk_script(),
            format!("label: gpt\nsize=512MiB, type={ESP_TYPE}, name=\"ESP\"\nsize=7678MiB, type={LINUX_TYPE}, name=\"nixos\"\n")
        );
    }

    #[test]
    fn nvme_names_swap_and_fixed_root() {
        let p = plan(&disk("nvme0n1", 64), &options(&[("customInstaller.swapSizeMiB", json!(4096)), ("customInstaller.rootSizeMiB", json!(20480))])).expect("fits");
        let devices: Vec<&str> = p.partitions.iter().map(|p| p.device.as_str()).collect();
        assert_eq!(devices, ["/dev/nvme0n1p1", "/dev/nvme0n1p2", "/dev/nvme0n1p3"]);
        assert_eq!(p.root().size_mib, 20480);
        assert!(p.commands().iter().any(|c| c == "mkswap -L swap /dev/nvme0n1p3"));
    }

    #[test]
    fn a_fleet_hosts_marker_is_the_disk_guid() {
        let mut p = plan(&disk("vda", 8), &options(&[])).expect("fits");
        let guid = crate::fleet::marker::disk_guid("web1", 3).to_string();
        p.label_id = Some(guid.clone());
        assert!(p.sfdisk_script().starts_with(&format!("label: gpt\nlabel-id: {guid}\nsize=512MiB, ")), "{}", p.sfdisk_script());
        assert!(p.commands()[0].contains(&format!("label: gpt; label-id: {guid}; size=512MiB")), "{}", p.commands()[0]);
    }

    #[test]
    fn what_does_not_fit_is_refused_with_numbers() {
        let err = plan(&disk("sda", 1), &options(&[])).unwrap_err().to_string();
        assert!(err.contains("is too small: 510 MiB would be left"), "{err}");
        let err = plan(&disk("sda", 8), &options(&[("customInstaller.rootSizeMiB", json!(100_000))])).unwrap_err().to_string();
        assert!(err.contains("asks for 100000 MiB"), "{err}");
    }
}
