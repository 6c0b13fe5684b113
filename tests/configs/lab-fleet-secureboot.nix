# The fleet of tests/e2e_secure_boot.rs: Secure Boot with the test's own db key, served by
# `nixos-pxe serve` alone (DHCP, TFTP and HTTP; no NFS in this mode). The test generates the key
# and the certificate and writes a file that imports this one and sets
# bootServer.secureBoot.keyFile and .certificateFile to them.
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
    secureBoot.enable = true;
  };

  customInstaller.rootDevice = "/dev/vda";

  fleet = {
    maxAttempts = 2;
    unknownHosts = "local-boot";
    hosts = {
      sb-a = {
        macs = ["52:54:00:00:5b:01"];
        target.flake = "/srv/fleet#web";
      };
      sb-b = {
        macs = ["52:54:00:00:5b:02"];
        target.flake = "/srv/fleet#db";
      };
    };
  };
}
