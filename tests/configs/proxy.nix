# Proxy DHCP: the site's DHCP server hands out addresses; the boot server (dnsmasq in proxy mode,
# or `nixos-pxe serve --dhcp proxy`) only adds PXE information, so GRUB and the kernel are told the
# server explicitly (grub.cfg sets it, the command line carries nfsroot=).
{
  bootServer = {
    dhcpMode = "proxy";
    address = "10.42.0.1";
    interface = "br0";
    subnet = "10.42.0.0/24";
  };
}
