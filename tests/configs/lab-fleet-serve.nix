# The fleet of tests/e2e_fleet.rs, served by `nixos-pxe serve` alone (DHCP, TFTP, HTTP, the NFS root
# and the fleet's state): four hosts and the machines the test boots for them. lab-a and lab-c
# install the "web" system, lab-b the "db" system (with its own ESP size); lab-d's disk holds a
# file system, so each of its attempts fails and it is held after two. The test adds each host's
# `image` to config.json, as lib.mkFleet does. serve's NFS server has no portmapper and no lock
# manager, so the kernel's mount options name the one port it uses.
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
    nfsMountOptions = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock";
  };

  customInstaller.rootDevice = "/dev/vda";

  fleet = {
    maxAttempts = 2;
    unknownHosts = "local-boot";
    hosts = {
      lab-a = {
        macs = ["52:54:00:00:0a:01"];
        target.flake = "/srv/fleet#web";
      };
      lab-b = {
        macs = ["52:54:00:00:0b:01"];
        target.flake = "/srv/fleet#db";
        customInstaller.espSizeMiB = 256;
      };
      lab-c = {
        macs = ["52:54:00:00:0c:01"];
        target.flake = "/srv/fleet#db";
      };
      lab-d = {
        macs = ["52:54:00:00:0d:01"];
        target.flake = "/srv/fleet#web";
      };
    };
  };
}
