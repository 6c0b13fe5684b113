# The seed's example served by `nixos-pxe serve` alone (DHCP, TFTP and the NFS root): its NFS server
# has no portmapper and no lock manager, so the kernel's mount options name the one port it uses.
{
  imports = [../../examples/seed/installer.nix];
  bootServer.nfsMountOptions = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock";
}
