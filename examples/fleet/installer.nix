# A fleet of three hosts on the lab network: two web servers that install the same system from
# a directory, and a database server whose system is a flake output, on an NVMe disk of its own
# with a fixed root size. Each host is recognised by the MAC of the NIC its firmware boots from;
# GRUB and the kernel use that NIC ("auto"), whatever its number on the machine.
# `nixos-pxe render` writes hosts/mac-<mac>.cfg for each MAC (copy them to
# <tftpRoot>/nixos-pxe/hosts/); `nixos-pxe serve` makes them from the fleet and its state.
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

  # What every host gets unless it says otherwise.
  customInstaller = {
    rootDevice = "/dev/vda";
    swapSizeMiB = 1024;
  };

  fleet = {
    maxAttempts = 3;
    unknownHosts = "local-boot";
    hosts = {
      # 52:54:00:12:34:56 is QEMU's default MAC: tests/render_pxe_boot.rs boots this host.
      web1 = {
        macs = ["52:54:00:12:34:56"];
        target.directory = ./hosts/web;
      };
      web2 = {
        macs = ["52-54-00-00-0A-02"];
        target.directory = ./hosts/web;
        # A disk that held another system: overwrite it (the default refuses a used disk).
        customInstaller.wipe = "always";
      };
      db1 = {
        # Two NICs the firmware may boot from, in Cisco's spelling.
        macs = ["5254.0000.0b01" "5254.0000.0b02"];
        generation = 2;
        target.flake = "github:example/infra#db1";
        customInstaller = {
          rootDevice = "/dev/disk/by-id/nvme-SAMSUNG_MZVL2512HCJQ_S675NX0T654321";
          rootSizeMiB = 102400;
        };
      };
    };
  };
}
