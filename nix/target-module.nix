# Added to the target system: what it needs to boot from the disk the installer lays out
# (src/install: ESP labelled ESP, ext4 root labelled nixos, swap labelled swap) on hardware
# nobody has seen, since the system is built before the machine is.
customInstaller:
{ lib, modulesPath, ... }:
{
  imports = [ (modulesPath + "/profiles/all-hardware.nix") ];

  fileSystems."/" = lib.mkDefault { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  fileSystems."/boot" = lib.mkDefault { device = "/dev/disk/by-label/ESP"; fsType = "vfat"; options = [ "umask=0077" ]; };
  swapDevices = lib.mkIf (customInstaller.swapSizeMiB > 0) (lib.mkDefault [ { device = "/dev/disk/by-label/swap"; } ]);

  boot.loader.systemd-boot.enable = lib.mkDefault true;
  boot.loader.efi.canTouchEfiVariables = lib.mkDefault true;
}
