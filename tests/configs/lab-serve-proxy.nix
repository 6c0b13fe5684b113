# `nixos-pxe serve` in proxy DHCP mode beside a site DHCP server that hands out the addresses:
# serve adds only the PXE boot information (and serves TFTP and the NFS root); grub.cfg and the
# kernel command line name the server and the NFS root themselves.
{
  bootServer = {
    dhcpMode = "proxy";
    address = "10.42.0.1";
    interface = "br0";
    subnet = "10.42.0.0/24";
    nfsMountOptions = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock";
  };
  customInstaller = {
    rootDevice = "/dev/vda";
    target.directory = ../../examples/seed/host;
  };
}
