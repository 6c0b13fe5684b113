# The seed's example with a disk that boots either way: customInstaller.firmware = "both" (a BIOS
# boot partition and an ESP, GRUB for BIOS and GRUB's removable EFI loader).
# tests/e2e_install.rs installs it on SeaBIOS and boots the disk under SeaBIOS and OVMF.
{
  imports = [../../examples/seed/installer.nix];
  customInstaller.firmware = "both";
}
