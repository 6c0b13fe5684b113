# The fleet of the VM check (checks/pxe-fleet.nix): three hosts on the test VLAN, served by
# services.nixos-pxe on the server VM (its eth1, 10.42.0.1). alpha and beta are VMs of the test;
# gamma has alpha's system (so the NFS root holds two images for three hosts) and never boots.
#
# A VM's NIC on VLAN v has the MAC 52:54:00:12:<v>:<n>, n the node's number: its place, from 1,
# among the test's node names in sorted order (nixos/lib/qemu-common.nix qemuNicMac,
# nixos/lib/testing/network.nix nodeNumbers): alpha 1, beta 2, server 3. Written in two of the
# usual spellings.
{
  nfsroot.bootLoader = {
    efinetDHCPInterface = "auto";
    linuxPnPInterface = "auto";
  };
  bootServer = {
    address = "10.42.0.1";
    interface = "eth1";
    subnet = "10.42.0.0/24";
    dhcpRange.start = "10.42.0.100";
    dhcpRange.end = "10.42.0.199";
    router = "10.42.0.1";
    # serve's own NFS server: one port, no portmapper, no lock manager.
    nfsMountOptions = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock";
  };
  customInstaller.rootDevice = "/dev/vda";
  fleet = {
    maxAttempts = 2;
    hosts = {
      # Its system: lib.mkFleet's hosts.alpha (flake.nix), a nixosConfigurations entry.
      alpha.macs = ["52:54:00:12:01:01"];
      beta = {
        macs = ["5254.0012.0102"];
        target.directory = ./beta;
        customInstaller.swapSizeMiB = 256;
      };
      # hosts.gamma is alpha's system; no VM has this MAC.
      gamma.macs = ["52-54-00-12-01-09"];
    };
  };
}
