# The installer configuration of the VM check: the seed's defaults, the test VLAN's addresses
# (the server's eth1), the client's one empty virtio disk.
{
  bootServer = {
    address = "10.42.0.1";
    interface = "eth1";
    subnet = "10.42.0.0/24";
    dhcpRange.start = "10.42.0.100";
    dhcpRange.end = "10.42.0.199";
    router = "10.42.0.1";
  };
  customInstaller = {
    rootDevice = "/dev/vda";
    networking.useDHCP = false;
    networking.staticInterfaceFromDHCP = "eth0";
    target.directory = ./vm-target;
  };
}
