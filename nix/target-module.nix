# Added to the target system: what it needs to boot from the disk the installer lays out
# (src/install/plan.rs: ESP labelled ESP, ext4 root labelled nixos, swap labelled swap) on hardware
# nobody has seen, since the system is built before the machine is. mkDefault throughout: a
# target that describes its own disks or boot loader keeps them.
customInstaller:
{ lib, modulesPath, ... }:
{
  # nixos/modules/profiles/all-hardware.nix: the storage, USB and network drivers in the initrd.
  imports = [ (modulesPath + "/profiles/all-hardware.nix") ];

  fileSystems."/" = lib.mkDefault { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  fileSystems."/boot" = lib.mkDefault { device = "/dev/disk/by-label/ESP"; fsType = "vfat"; options = [ "umask=0077" ]; };
  swapDevices = lib.mkIf (customInstaller.swapSizeMiB > 0) (lib.mkDefault [ { device = "/dev/disk/by-label/swap"; } ]);

  # The installer runs `switch-to-configuration boot` with efivarfs mounted, so systemd-boot
  # (which turns GRUB off by default) installs itself and puts its entry first in BootOrder.
  boot.loader.systemd-boot.enable = lib.mkDefault true;
  boot.loader.efi.canTouchEfiVariables = lib.mkDefault true;
}
