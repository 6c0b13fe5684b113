//! Whether the installed system's boot loader can register itself with the firmware. The disk
//! is laid out for UEFI (an EFI system partition, systemd-boot), and systemd-boot with
//! `canTouchEfiVariables` writes its boot entry through the firmware's EFI variables in
//! /sys/firmware/efi/efivars: without them it writes none, and the machine does not boot the
//! disk it was just installed on. So the bootloader step goes on only when they are there.

use camino::Utf8Path;

/// Exists when the running kernel was started by UEFI firmware.
pub const FIRMWARE_EFI: &str = "/sys/firmware/efi";
/// Where efivarfs shows the firmware's variables.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// What the installer sees of the firmware's EFI variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// FIRMWARE_EFI exists.
    pub booted_by_uefi: bool,
    /// efivarfs is mounted on EFIVARS.
    pub efivarfs_mounted: bool,
    /// How many variables EFIVARS lists.
    pub variables: usize,
}

/// What to do before the boot loader is installed.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The variables are there: go on.
    Ready,
    /// Mount efivarfs on EFIVARS, then look again.
    MountEfivarfs,
}

/// The decision, from what is seen: a machine not booted by UEFI and an efivarfs without
/// variables are errors that say what to do.
pub fn decide(seen: Seen) -> Result<Next, String> {
    if !seen.booted_by_uefi {
        return Err(format!(
            "this machine was not booted by UEFI ({FIRMWARE_EFI} does not exist), and this installer lays out a UEFI disk \
             (an EFI system partition and systemd-boot) that it can only register with UEFI firmware. Switch the \
             machine's firmware to UEFI network boot (legacy BIOS/CSM off) and boot it again"
        ));
    }
    if seen.variables > 0 {
        return Ok(Next::Ready);
    }
    if !seen.efivarfs_mounted {
        return Ok(Next::MountEfivarfs);
    }
    Err(format!(
        "efivarfs on {EFIVARS} lists no EFI variables, so systemd-boot would write no boot entry and the machine would \
         not boot from this disk. The kernel cannot reach the firmware's runtime services: check the kernel command line \
         for noefi or efi=noruntime, and the firmware's UEFI settings"
    ))
}

/// The error when efivarfs cannot be mounted (`why`: the mount's error).
pub fn mount_failed(why: &str) -> String {
    format!(
        "the firmware's EFI variables cannot be reached ({why}), so systemd-boot would write no boot entry and the \
         machine would not boot from this disk. The installer's kernel needs CONFIG_EFIVAR_FS (nixos-pxe kernel-config \
         builds it in)"
    )
}

/// Whether `mounts` (the text of /proc/self/mounts) has efivarfs mounted on `point`.
pub fn efivarfs_mounted(mounts: &str, point: &Utf8Path) -> bool {
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&point.as_str()) && fields.get(2) == Some(&"efivarfs")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(booted_by_uefi: bool, efivarfs_mounted: bool, variables: usize) -> Seen {
        Seen { booted_by_uefi, efivarfs_mounted, variables }
    }

    #[test]
    fn variables_present_go_on() {
        assert_eq!(decide(seen(true, true, 12)), Ok(Next::Ready));
        // Seen through another mount (a test's stand-in firmware): what systemd-boot reads is there.
        assert_eq!(decide(seen(true, false, 1)), Ok(Next::Ready));
    }

    #[test]
    fn efivarfs_not_mounted_is_mounted_first() {
        assert_eq!(decide(seen(true, false, 0)), Ok(Next::MountEfivarfs));
    }

    #[test]
    fn an_empty_efivarfs_fails_with_what_to_check() {
        let e = decide(seen(true, true, 0)).expect_err("no variables");
        assert!(e.contains("lists no EFI variables") && e.contains("no boot entry") && e.contains("noefi"), "{e}");
    }

    #[test]
    fn a_machine_not_booted_by_uefi_fails_whatever_else_is_seen() {
        for (mounted, variables) in [(false, 0), (true, 0), (true, 5)] {
            let e = decide(seen(false, mounted, variables)).expect_err("not UEFI");
            assert!(e.contains("not booted by UEFI (/sys/firmware/efi does not exist)") && e.contains("lays out a UEFI disk"), "{e}");
        }
    }

    #[test]
    fn a_failed_mount_says_what_it_costs() {
        let e = mount_failed("mounting efivarfs (efivarfs) on /sys/firmware/efi/efivars: No such device");
        assert!(e.contains("No such device") && e.contains("no boot entry") && e.contains("CONFIG_EFIVAR_FS"), "{e}");
    }

    #[test]
    fn efivarfs_is_found_only_on_its_mount_point() {
        let point = Utf8Path::new(EFIVARS);
        let mounts = "sysfs /sys sysfs rw 0 0\nefivarfs /sys/firmware/efi/efivars efivarfs rw,nosuid 0 0\n";
        assert!(efivarfs_mounted(mounts, point));
        assert!(!efivarfs_mounted("efivarfs /mnt/elsewhere efivarfs rw 0 0\n", point));
        assert!(!efivarfs_mounted("tmpfs /sys/firmware/efi/efivars tmpfs rw 0 0\n", point));
        assert!(!efivarfs_mounted("", point));
    }
}
