//! Which firmware the installed disk is made for, decided before anything is written, from
//! `customInstaller.firmware`, the firmware that booted the installer, and what the system image
//! was built for. Pure; `--dry-run` prints the decision.
//!
//! The system image is built before the machine is known (nix/target.nix), from the same option:
//! `uefi`, `bios` and `both` each give one system with that boot loader; `auto` gives one system
//! for UEFI and one for BIOS (they share all but the boot loader's store paths), and the installer
//! takes the one for the firmware it runs under. `auto` is not built as `both`: a `both` system's
//! GRUB needs the ESP and the BIOS boot partition on every disk, and gives up systemd-boot's boot
//! entry on UEFI machines; auto's disk is the one the machine needs and nothing more.

use crate::config::typed::FirmwareSetting;
use camino::Utf8Path;

/// Exists when the running kernel was started by UEFI firmware.
pub const FIRMWARE_EFI: &str = "/sys/firmware/efi";

/// The firmware that booted the installer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Machine {
    Uefi,
    Bios,
}

impl Machine {
    /// What the kernel shows: `efi` (FIRMWARE_EFI or a test's stand-in) is a directory on a UEFI boot.
    pub fn seen(efi: &Utf8Path) -> Machine {
        if efi.is_dir() { Machine::Uefi } else { Machine::Bios }
    }

    fn text(self) -> String {
        match self {
            Machine::Uefi => format!("UEFI ({FIRMWARE_EFI} exists)"),
            Machine::Bios => format!("legacy BIOS ({FIRMWARE_EFI} does not exist)"),
        }
    }
}

/// What goes on the disk: its partitions and its boot loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Layout {
    /// An ESP; systemd-boot, with its entry in the firmware's boot order.
    Uefi,
    /// A BIOS boot partition (GRUB's core image); GRUB for BIOS. No ESP.
    Bios,
    /// Both partitions; GRUB for BIOS and GRUB's EFI loader as /EFI/BOOT/BOOTX64.EFI.
    Both,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Uefi => "uefi",
            Layout::Bios => "bios",
            Layout::Both => "both",
        }
    }

    pub fn has_esp(self) -> bool {
        self != Layout::Bios
    }

    pub fn has_bios_boot(self) -> bool {
        self != Layout::Uefi
    }

    /// The boot loader the system built for this layout installs (nix/target-module.nix).
    pub fn boot_loader(self) -> &'static str {
        match self {
            Layout::Uefi => "systemd-boot on the ESP, registered in the firmware's boot order through its EFI variables",
            Layout::Bios => "GRUB for BIOS: its boot code in the MBR, its core image in the BIOS boot partition",
            Layout::Both => {
                "GRUB for BIOS (boot code in the MBR, core image in the BIOS boot partition) and GRUB's EFI loader on the ESP as \
                 /EFI/BOOT/BOOTX64.EFI (removable-media path, no EFI variables)"
            }
        }
    }

    /// Whether the boot loader registers itself through the firmware's EFI variables (install::efi).
    pub fn needs_efi_variables(self) -> bool {
        self == Layout::Uefi
    }

    fn of(setting: FirmwareSetting) -> Option<Layout> {
        match setting {
            FirmwareSetting::Auto => None,
            FirmwareSetting::Uefi => Some(Layout::Uefi),
            FirmwareSetting::Bios => Some(Layout::Bios),
            FirmwareSetting::Both => Some(Layout::Both),
        }
    }
}

/// The layouts the system image holds a system for: the setting's, or for `auto` UEFI and BIOS.
/// nix/target.nix builds exactly these.
pub fn built_for(setting: FirmwareSetting) -> Vec<Layout> {
    match Layout::of(setting) {
        Some(layout) => vec![layout],
        None => vec![Layout::Uefi, Layout::Bios],
    }
}

/// The image's file naming the system to install for `layout` (nix/system-image.nix writes it):
/// `nixos-pxe/system` in an image of one system, `nixos-pxe/system.<layout>` in one of several.
pub fn system_file(setting: FirmwareSetting, layout: Layout) -> String {
    if built_for(setting).len() == 1 { "nixos-pxe/system".to_string() } else { format!("nixos-pxe/system.{}", layout.as_str()) }
}

/// The decision: the disk's layout for this machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub setting: FirmwareSetting,
    pub machine: Machine,
    pub layout: Layout,
}

impl Decision {
    /// One line for the console and the dry run.
    pub fn describe(&self) -> String {
        let why = match self.setting {
            FirmwareSetting::Auto => "customInstaller.firmware = \"auto\" follows it; the image holds a system for uefi and one for bios".to_string(),
            s => format!("customInstaller.firmware = \"{}\"", s.as_str()),
        };
        format!(
            "this machine booted the installer by {}; {why}: the disk is laid out for {} ({})",
            self.machine.text(),
            self.layout.as_str(),
            self.layout.boot_loader()
        )
    }

    /// The image's file naming the system to install.
    pub fn system_file(&self) -> String {
        system_file(self.setting, self.layout)
    }
}

/// Decides the layout for `setting` on a machine booted by `machine`; an image built for a
/// firmware the machine does not boot with is refused with what to do (`option`: the option's
/// name as the user sets it, the top-level one or a fleet host's).
pub fn decide(setting: FirmwareSetting, machine: Machine, option: &str) -> Result<Decision, String> {
    let layout = match (setting, machine) {
        (FirmwareSetting::Auto, Machine::Uefi) => Layout::Uefi,
        (FirmwareSetting::Auto, Machine::Bios) => Layout::Bios,
        (FirmwareSetting::Both, _) => Layout::Both,
        (FirmwareSetting::Uefi, Machine::Uefi) => Layout::Uefi,
        (FirmwareSetting::Bios, Machine::Bios) => Layout::Bios,
        (FirmwareSetting::Uefi, Machine::Bios) => {
            return Err(format!(
                "this machine booted the installer by {}, but its system image was built for UEFI ({option} = \"uefi\": an ESP \
                 and systemd-boot), which this machine could not start. Nothing was written. Boot the machine by UEFI (UEFI \
                 network boot, legacy/CSM off), or set {option} to \"auto\", \"bios\" or \"both\" and build the image again",
                machine.text()
            ));
        }
        (FirmwareSetting::Bios, Machine::Uefi) => {
            return Err(format!(
                "this machine booted the installer by {}, but its system image was built for legacy BIOS ({option} = \"bios\": \
                 GRUB in a BIOS boot partition, no ESP), which UEFI firmware without a compatibility module (CSM) cannot start. \
                 Nothing was written. Set {option} to \"auto\", \"uefi\" or \"both\" and build the image again, or boot the \
                 machine by legacy BIOS if it is to run that way",
                machine.text()
            ));
        }
    };
    Ok(Decision { setting, machine, layout })
}

#[cfg(test)]
mod tests {
    use super::*;
    use FirmwareSetting::{Auto, Both, Bios, Uefi};

    const OPTION: &str = "customInstaller.firmware";

    #[test]
    fn every_setting_on_every_machine() {
        let layout = |s, m| decide(s, m, OPTION).map(|d| d.layout);
        assert_eq!(layout(Auto, Machine::Uefi), Ok(Layout::Uefi));
        assert_eq!(layout(Auto, Machine::Bios), Ok(Layout::Bios));
        assert_eq!(layout(Uefi, Machine::Uefi), Ok(Layout::Uefi));
        assert_eq!(layout(Bios, Machine::Bios), Ok(Layout::Bios));
        assert_eq!(layout(Both, Machine::Uefi), Ok(Layout::Both));
        assert_eq!(layout(Both, Machine::Bios), Ok(Layout::Both));
    }

    #[test]
    fn an_image_for_the_other_firmware_is_refused_with_what_to_do() {
        let e = decide(Uefi, Machine::Bios, OPTION).expect_err("uefi image on BIOS");
        assert!(e.starts_with("this machine booted the installer by legacy BIOS (/sys/firmware/efi does not exist), but its system image was built for UEFI"), "{e}");
        assert!(e.contains("Nothing was written") && e.contains("set customInstaller.firmware to \"auto\", \"bios\" or \"both\""), "{e}");
        let e = decide(Bios, Machine::Uefi, "fleet.hosts.web1.customInstaller.firmware").expect_err("bios image on UEFI");
        assert!(e.starts_with("this machine booted the installer by UEFI (/sys/firmware/efi exists), but its system image was built for legacy BIOS"), "{e}");
        assert!(e.contains("Set fleet.hosts.web1.customInstaller.firmware to \"auto\", \"uefi\" or \"both\""), "{e}");
    }

    #[test]
    fn the_image_holds_a_system_per_layout_it_was_built_for() {
        assert_eq!(built_for(Auto), [Layout::Uefi, Layout::Bios]);
        assert_eq!(built_for(Both), [Layout::Both]);
        assert_eq!(system_file(Uefi, Layout::Uefi), "nixos-pxe/system");
        assert_eq!(system_file(Both, Layout::Both), "nixos-pxe/system");
        assert_eq!(system_file(Auto, Layout::Uefi), "nixos-pxe/system.uefi");
        assert_eq!(system_file(Auto, Layout::Bios), "nixos-pxe/system.bios");
        // Whatever auto decides, the image has that system.
        for machine in [Machine::Uefi, Machine::Bios] {
            let d = decide(Auto, machine, OPTION).expect("auto");
            assert!(built_for(Auto).contains(&d.layout));
        }
    }

    #[test]
    fn the_decision_says_why() {
        let d = decide(Auto, Machine::Bios, OPTION).expect("auto");
        assert_eq!(
            d.describe(),
            "this machine booted the installer by legacy BIOS (/sys/firmware/efi does not exist); customInstaller.firmware = \"auto\" \
             follows it; the image holds a system for uefi and one for bios: the disk is laid out for bios (GRUB for BIOS: its boot \
             code in the MBR, its core image in the BIOS boot partition)"
        );
        assert!(decide(Both, Machine::Uefi, OPTION).expect("both").describe().contains("customInstaller.firmware = \"both\": the disk is laid out for both"));
    }

    #[test]
    fn the_machine_is_seen_by_the_efi_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let efi = camino::Utf8PathBuf::from_path_buf(dir.path().join("efi")).expect("utf-8");
        assert_eq!(Machine::seen(&efi), Machine::Bios);
        std::fs::create_dir(&efi).expect("mkdir");
        assert_eq!(Machine::seen(&efi), Machine::Uefi);
    }
}
