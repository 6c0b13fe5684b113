# A client VM of the PXE checks (checks/pxe-install.nix, checks/pxe-fleet.nix): firmware, not a
# NixOS boot. OVMF with writable variables (useEFIBoot adds the pflash drives without
# useBootLoader), no -kernel (directBoot), no root disk (diskImage = null), one empty disk to
# install on (vda). Without the user-mode NIC the VLAN NIC is the only one (its MAC is the one a
# fleet names), so the firmware's efinet0 and the kernel's eth0 (the configuration's defaults)
# are that NIC.
{lib, ...}: {
  virtualisation = {
    vlans = [1];
    qemu.networkingOptions = lib.mkForce [];
    directBoot.enable = false;
    useEFIBoot = true;
    diskImage = null;
    emptyDiskImages = [8192];
    memorySize = 2048;
  };
}
