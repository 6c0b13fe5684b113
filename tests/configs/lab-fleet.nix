# The fleet of tests/e2e_install.rs's fleet install: two hosts on the lab network, recognised by
# the MAC of the NIC the firmware boots from ("auto": GRUB keeps the firmware's lease, the kernel
# asks DHCP on every NIC and the installer picks the NIC by that MAC). lab1 is the machine the test
# boots: its own ESP size and a static network for the installed system, generation 3. lab2 has
# another system, so that picking the wrong host or image shows. The test adds each host's `image`
# to config.json, as lib.mkFleet does.
{
  config,
  pkgs,
  ...
}: {
  nfsroot.bootLoader = {
    efinetDHCPInterface = "auto";
    linuxPnPInterface = "auto";
  };

  bootServer = {
    address = "10.42.0.1";
    interface = "br0";
    subnet = "10.42.0.0/24";
    dhcpRange.start = "10.42.0.100";
    dhcpRange.end = "10.42.0.199";
    router = "10.42.0.1";
    nameServers = ["10.42.0.1"];
    domainName = "pxe.test";
  };

  customInstaller.rootDevice = "/dev/vda";

  fleet.hosts = {
    lab1 = {
      macs = ["52:54:00:00:00:a1"];
      generation = 3;
      target.flake = "/srv/fleet#lab1";
      customInstaller = {
        espSizeMiB = 256;
        networking.useDHCP = false;
        networking.staticInterfaceFromDHCP = "enp0s3";
      };
    };
    lab2 = {
      macs = ["52-54-00-00-00-B2"];
      target.flake = "/srv/fleet#lab2";
    };
  };
}
