# The disk layouts a system image holds a system for, by customInstaller.firmware
# (src/install/firmware.rs, built_for): the machine is not known when the image is built, so
# "auto" builds one system for UEFI and one for BIOS (they share everything but the boot loader's
# store paths) and the installer takes the one for the firmware it runs under. Not "both" for
# auto: that would put GRUB, the ESP and the BIOS boot partition on every disk and give up
# systemd-boot's boot entry on UEFI machines. The first layout is the one a single `target` names.
firmware:
{
  auto = ["uefi" "bios"];
  uefi = ["uefi"];
  bios = ["bios"];
  both = ["both"];
}
.${firmware}
