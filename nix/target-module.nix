# Added to the target system: what it needs to boot from the disk the installer lays out for
# `layout` (src/install/plan.rs, src/install/firmware.rs: "uefi" an ESP, "bios" a BIOS boot
# partition, "both" the two; an ext4 root labelled nixos, swap labelled swap) on hardware nobody
# has seen, since the system is built before the machine is. mkDefault throughout: a target that
# describes its own disks keeps them. The boot loader is the one the layout needs:
#   uefi  systemd-boot, its entry in the firmware's boot order (the installer runs
#         switch-to-configuration with efivarfs mounted)
#   bios  GRUB for BIOS on customInstaller.rootDevice (grub-install --target=i386-pc embeds its
#         core image in the BIOS boot partition); /boot is a directory of the root
#   both  GRUB for BIOS as above, and GRUB's EFI loader installed as removable
#         (/EFI/BOOT/BOOTX64.EFI on the ESP, no EFI variables): the disk boots either way
# NixOS interfaces (nixpkgs, read at the commits in tests/nix/stand-in-nixpkgs/interfaces.nix):
# boot.loader.grub.{enable,device,efiSupport,efiInstallAsRemovable} and its assertions
# (efiInstallAsRemovable needs efiSupport and canTouchEfiVariables off) in
# nixos/modules/system/boot/loader/grub/grub.nix; install-grub.pl runs grub-install
# --target=i386-pc on each device and, with efiSupport, --target=x86_64-efi into
# boot.loader.efi.efiSysMountPoint (default /boot, efi.nix); systemd-boot.nix sets
# boot.loader.grub.enable = mkDefault false when it is enabled.
{
  customInstaller,
  layout,
}: {
  config,
  lib,
  modulesPath,
  ...
}: let
  grub = layout == "bios" || layout == "both";
in {
  # nixos/modules/profiles/all-hardware.nix: the storage, USB and network drivers in the initrd.
  imports = [(modulesPath + "/profiles/all-hardware.nix")];

  fileSystems."/" = lib.mkDefault {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  fileSystems."/boot" =
    lib.mkIf (layout != "bios")
    (lib.mkDefault {
      device = "/dev/disk/by-label/ESP";
      fsType = "vfat";
      options = ["umask=0077"];
    });
  swapDevices = lib.mkIf (customInstaller.swapSizeMiB > 0) (lib.mkDefault [{device = "/dev/disk/by-label/swap";}]);

  boot.loader =
    if grub
    then {
      # grub.enable is NixOS's default (true outside containers): not set here, so that a target
      # that enables systemd-boot meets the assertion below instead of a conflict of defaults.
      grub.device = lib.mkDefault customInstaller.rootDevice;
      grub.efiSupport = lib.mkDefault (layout == "both");
      grub.efiInstallAsRemovable = lib.mkDefault (layout == "both");
      efi.canTouchEfiVariables = lib.mkDefault false;
    }
    else {
      systemd-boot.enable = lib.mkDefault true;
      efi.canTouchEfiVariables = lib.mkDefault true;
    };

  assertions = lib.optional grub {
    assertion = config.boot.loader.grub.enable && !config.boot.loader.systemd-boot.enable;
    message = "nixos-pxe: customInstaller.firmware gives this system a disk laid out for ${layout} (a BIOS boot partition${lib.optionalString (layout == "both") " and an ESP"}), which boots with GRUB, but the target system ${
      if config.boot.loader.systemd-boot.enable
      then "enables systemd-boot"
      else "turns GRUB off"
    }. Leave the boot loader to nixos-pxe (remove boot.loader.systemd-boot.enable / boot.loader.grub.enable from the target), or set customInstaller.firmware = \"uefi\".";
  };
}
