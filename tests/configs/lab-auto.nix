# The seed's example for machines whose firmware is not known when the image is built:
# customInstaller.firmware = "auto" builds a system for UEFI and one for BIOS, and the installer
# lays the disk out for the firmware it runs under. tests/e2e_install.rs installs it on SeaBIOS.
{
  imports = [../../examples/seed/installer.nix];
  customInstaller.firmware = "auto";
}
