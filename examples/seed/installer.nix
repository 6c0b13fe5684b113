# The seed's installer on a lab network: the seed's defaults for the boot loader and the
# installer (efinet0, eth0, ttyS0 at 115200n8, /dev/sda, DHCP), plus the boot server's facts.
# `nix build .#bootLoader`, `.#kernel` and `.#tarball` build this configuration.
{
  config,
  pkgs,
  ...
}: {
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

  customInstaller = {
    rootDevice = "/dev/vda";
    target.directory = ./host;
  };
}
