# The whole chain in NixOS VMs: a server runs dnsmasq (DHCP + TFTP) and the kernel NFS server
# from `nixos-pxe render` output; a UEFI client with one empty disk PXE-boots, installs, reboots
# and comes up as the target system. Runs where nixpkgs is (`nix flake check`, with KVM); here the
# stand-in nixpkgs (tests/flake.rs) evaluates the nodes, parses the script as Python and checks
# that every store path they name is built.
# Interfaces checked against nixpkgs' source: pkgs.testers.runNixOSTest
# (pkgs/build-support/testers/default.nix), globalTimeout (nixos/lib/testing/driver.nix),
# virtualisation.* (nixos/modules/virtualisation/qemu-vm.nix), the vlan NICs
# (nixos/lib/testing/network.nix, nixos/lib/qemu-common.nix), start(allow_reboot) and
# wait_for_console_text (nixos/lib/test-driver/src/test_driver/machine/__init__.py, read at
# 019697db058b6738eda0cb2cdcc9f5c014c914cb).
{
  pkgs,
  installer,
}: let
  inherit (pkgs) lib;
  server = installer.config.bootServer;
  # Every server file exists once, in templates/, rendered by the tool. Nothing of it is read at
  # evaluation time (no import from derivation, which Hydra's default refuses): the exports file
  # is /etc/exports as it is, the command line is read by the test script when it runs.
  configs = installer.serverConfigs;
  toplevel = installer.target.config.system.build.toplevel;
in
  pkgs.testers.runNixOSTest {
    name = "nixos-pxe-install";
    # The sum of the waits below (600 + 600 + 3600 + 2400 s) and the checks after the reboot.
    globalTimeout = 3 * 3600;

    nodes.server = {
      virtualisation.vlans = [1];
      # The NFS root (the tools' closure and the target's compressed closure) is unpacked on disk.
      virtualisation.diskSize = 8192;
      networking.useDHCP = false;
      networking.firewall.enable = false;
      # The vlan NIC is eth1 (eth0 is the test driver's user-mode network); mkForce replaces the
      # 192.168.1.x address the test framework gives it with the configuration's.
      networking.interfaces.${server.interface}.ipv4.addresses = lib.mkForce [
        {
          address = server.address;
          prefixLength = lib.toInt (lib.last (lib.splitString "/" server.subnet));
        }
      ];

      # The TFTP root and the NFS root, laid out as the README tells a site to (the kernel at
      # nixos/bzImage below the TFTP root is the boot chain's contract, schema::KERNEL_TFTP_PATH).
      systemd.services.pxe-files = {
        requiredBy = ["nfs-server.service" "nfs-mountd.service" "pxe-dnsmasq.service"];
        before = ["nfs-server.service" "nfs-mountd.service" "pxe-dnsmasq.service"];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        script = ''
          mkdir -p ${server.tftpRoot}/nixos ${server.nfsExport}
          cp ${installer.bootLoader}/bootx64.efi ${server.tftpRoot}/bootx64.efi
          cp ${installer.kernel}/bzImage ${server.tftpRoot}/nixos/bzImage
          ${pkgs.gnutar}/bin/tar -xf ${installer.tarball}/nfsroot.tar -C ${server.nfsExport}
        '';
      };

      # dnsmasq on the rendered dnsmasq.conf. The lease file goes where this unit may write
      # (dnsmasq's built-in default, /var/lib/misc, does not exist on NixOS).
      systemd.services.pxe-dnsmasq = {
        wantedBy = ["multi-user.target"];
        after = ["network-online.target" "network-addresses-${server.interface}.service"];
        wants = ["network-online.target"];
        serviceConfig = {
          ExecStart = "${pkgs.dnsmasq}/bin/dnsmasq --conf-file=${configs}/dnsmasq.conf --keep-in-foreground --dhcp-leasefile=/var/lib/pxe-dnsmasq/leases";
          StateDirectory = "pxe-dnsmasq";
          Restart = "on-failure";
        };
      };

      # nixos/modules/services/network-filesystems/nfsd.nix writes services.nfs.server.exports to a
      # file and sets environment.etc.exports.source to it; the rendered file replaces it.
      services.nfs.server.enable = true;
      environment.etc.exports.source = lib.mkForce "${configs}/exports";
    };

    # The client (checks/pxe-client.nix): firmware with an empty disk and the VLAN NIC alone. With
    # no bootindex anywhere, OVMF tries the devices in its own order: the empty disk fails, PXE
    # follows; after the install, systemd-boot's entry is first in the kept BootOrder.
    nodes.client = ./pxe-client.nix;

    testScript = ''
      import re

      # The rendered kernel command line, which the kernel prints.
      with open("${configs}/cmdline") as rendered:
          cmdline = rendered.read().rstrip("\n")

      server.start()
      server.wait_for_unit("pxe-files.service")
      server.wait_for_unit("pxe-dnsmasq.service")
      server.wait_for_unit("nfs-server.service")
      server.succeed("exportfs -v | grep -q '${server.nfsExport}'")
      # /init is a link into the NFS root's own store, not the server's.
      server.succeed("test -x ${server.nfsExport}$(readlink ${server.nfsExport}/init)")

      client.start(allow_reboot=True)
      # wait_for_console_text takes one line of the serial console per second: with a timeout it
      # calls retry(), which sleeps 1 s between tries, and each try reads one line from the queue
      # the serial thread fills (nixos/lib/test-driver/src/test_driver/machine/__init__.py). A wait
      # starts at the line after the previous match, so it lasts at least as many seconds as lines
      # come between the two, however fast the VM prints them. The timeouts are budgeted per stretch:
      # - GRUB's DHCP line: the firmware's few dozen lines and GRUB's first ones;
      # - the kernel's command line: a few lines into the kernel's log;
      # - the installer's first step: after the whole boot log of the installer kernel (defconfig
      #   and the fragment's drivers, at the kernel's default log level: on the order of a thousand
      #   lines, budgeted at up to 3000) and init's messages;
      # - "install complete": the installer's output (a progress line every 2 s while unpacking,
      #   switch-to-configuration's lines: a few hundred) and the install itself.
      # Our GRUB (bootx64.efi), then the kernel with the rendered command line, the NFS root, our
      # init and installer; the installer reboots the machine when it is done.
      client.wait_for_console_text("nixos-pxe: DHCP on efinet0", timeout=600)
      client.wait_for_console_text(re.escape(cmdline), timeout=600)
      client.wait_for_console_text("nixos-pxe: step 1/7 network", timeout=3600)
      client.wait_for_console_text("nixos-pxe: install complete", timeout=2400)

      # After the reboot: the installed system (the test backdoor is part of the target).
      client.wait_for_unit("multi-user.target")
      assert client.succeed("hostname").strip() == "installed-by-pxe"
      assert client.succeed("readlink -f /run/current-system").strip() == "${toplevel}"
      client.succeed("findmnt -n -o SOURCE / | grep -qx /dev/vda2")
      client.succeed("findmnt -n -o SOURCE /boot | grep -qx /dev/vda1")
      client.succeed("test -f /etc/nixos/hardware-configuration.nix")
      # networking.nix from the lease: useDHCP = false, the address dnsmasq handed out on eth0.
      client.succeed("grep -qF 'networking.useDHCP = false;' /etc/nixos/networking.nix")
      client.succeed("grep -qE 'networking.interfaces.\"eth0\".ipv4.addresses = \\[ \\{ address = \"10\\.42\\.0\\.1[0-9][0-9]\";' /etc/nixos/networking.nix")
    '';
  }
