# Stand-in for nixpkgs' nixos/modules/profiles/qemu-guest.nix.
{
  boot.initrd.availableKernelModules = ["virtio_net" "virtio_pci" "virtio_blk" "virtio_scsi"];
}
