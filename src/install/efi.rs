//! Whether the installed system's boot loader can register itself with the firmware, on a disk
//! laid out for UEFI (install::firmware: an ESP, systemd-boot). systemd-boot with
//! `canTouchEfiVariables` writes its boot entry through the firmware's EFI variables in
//! /sys/firmware/efi/efivars: without them it writes none, and the machine does not boot the
//! disk it was just installed on. So the bootloader step goes on only when they are there.
//! Whether the machine was booted by UEFI at all is the firmware decision's, made before the
//! disk is written; the BIOS and both layouts install GRUB, which needs no EFI variables.

use camino::Utf8Path;

/// Where efivarfs shows the firmware's variables.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// What the installer sees of the firmware's EFI variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
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

/// The decision, from what is seen: an efivarfs without variables is an error that says what to do.
pub fn decide(seen: Seen) -> Result<Next, String> {
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

    fn seen(efivarfs_mounted: bool, variables: usize) -> Seen {
        Seen { efivarfs_mounted, variables }
    }

    #[test]
    fn variables_present_go_on() {
        assert_eq!(decide(seen(true, 12)), Ok(Next::Ready));
        // Seen through another mount (a test's stand-in firmware): what systemd-boot reads is there.
        assert_eq!(decide(seen(false, 1)), Ok(Next::Ready));
    }

    #[test]
    fn efivarfs_not_mounted_is_mounted_first() {
        assert_eq!(decide(seen(false, 0)), Ok(Next::MountEfivarfs));
    }

    #[test]
    fn an_empty_efivarfs_fails_with_what_to_check() {
        let e = decide(seen(true, 0)).expect_err("no variables");
        assert!(e.contains("lists no EFI variables") && e.contains("no boot entry") && e.contains("noefi"), "{e}");
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
