# Stand-in for nixpkgs' nixos/modules/profiles/all-hardware.nix (drivers in the initrd): a
# module that sets what the real one sets, as plain values of the stand-in's freeform top level.
{
  boot.initrd.availableKernelModules = ["ahci" "nvme" "sd_mod" "virtio_pci" "virtio_blk" "xhci_pci"];
}
