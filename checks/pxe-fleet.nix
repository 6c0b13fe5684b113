# A fleet in NixOS VMs: the server runs services.nixos-pxe (nix/server-module.nix) for the fleet
# of checks/vm-fleet/installer.nix with its firewall on and openFirewall, and two UEFI clients,
# alpha and beta, with empty disks and their own MACs, PXE-boot at the same time: each gets its
# own per-host GRUB file from serve, installs its own system, reports, reboots into it and
# reports `booted`. serve's state (`nixos-pxe fleet status --json`) then says both are confirmed
# with the system each runs, and gamma (same system as alpha, no VM) was never seen. Runs where
# nixpkgs is (`nix flake check`, with KVM); here the stand-in nixpkgs (tests/flake.rs) evaluates
# the nodes, parses the script as Python and checks that every store path they name is built,
# and tests/server_module.rs runs the server's unit command line.
#
# Timeouts. checks/pxe-install.nix waits on the serial console, which the test driver reads one
# line a second (wait_for_console_text, nixos/lib/test-driver/src/test_driver/machine/__init__.py):
# two clients booting at once would queue each other's thousands of kernel lines, and the second
# wait would take as many seconds as lines had come. So this test watches the server's state
# instead, every 5 s (`fleet status` reads state.sqlite3 directly), which costs the same however
# much the clients print, and reads no console line. Budget, per client and both at once: up to
# 3600 s from the start to `installed` (the firmware's PXE, GRUB, the kernel over TFTP, the NFS
# root, two installers unpacking at once from one server; pxe-install budgets 1200 s for GRUB
# and the kernel and 3600 + 2400 s for the boot log and the install, paced by line reading that
# is not there here), then up to 1800 s to `confirmed` (the reboot, systemd-boot, NixOS's boot
# up to network-online.target and the report). globalTimeout covers both and the checks after.
#
# Interfaces checked against nixpkgs' source (tests/nix/stand-in-nixpkgs/interfaces.nix):
# pkgs.testers.runNixOSTest, globalTimeout, virtualisation.* (nixos/modules/virtualisation/
# qemu-vm.nix), the VLAN NICs' MACs (nixos/lib/qemu-common.nix, nixos/lib/testing/network.nix),
# start(allow_reboot), succeed, wait_for_unit, wait_for_open_port.
{
  pkgs,
  fleet,
  serverModule,
}: let
  inherit (pkgs) lib;
  server = fleet.config.bootServer;
  toplevel = name: fleet.targets.${name}.config.system.build.toplevel;
  # A client VM (checks/pxe-client.nix): firmware with an empty disk and the VLAN NIC alone, whose
  # MAC is the one in the fleet.
  client = ./pxe-client.nix;
in
  pkgs.testers.runNixOSTest {
    name = "nixos-pxe-fleet";
    # 3600 + 1800 s of waits (above), the checks after them, and the server's start.
    globalTimeout = 2 * 3600;

    nodes.server = {
      imports = [serverModule];
      virtualisation.vlans = [1];
      networking.useDHCP = false;
      # eth1 is the VLAN NIC (eth0 the driver's user-mode network); the fleet's address replaces
      # the 192.168.1.x the test framework gives it.
      networking.interfaces.${server.interface}.ipv4.addresses = lib.mkForce [
        {
          address = server.address;
          prefixLength = lib.toInt (lib.last (lib.splitString "/" server.subnet));
        }
      ];
      # NixOS's default, said here because the test depends on it: only openFirewall's ports let
      # the clients' DHCP, TFTP, HTTP and NFS in. The nftables firewall filtering outgoing packets
      # too: serve's DHCP replies and TFTP transfers get out only through what openFirewall adds
      # for filterOutput (nix/server-module.nix).
      networking.firewall.enable = true;
      networking.nftables.enable = true;
      networking.firewall.filterOutput.enabled = true;
      services.nixos-pxe = {
        enable = true;
        inherit fleet;
        openFirewall = true;
      };
    };
    nodes.alpha = client;
    nodes.beta = client;

    testScript = ''
      import json
      import time

      status_command = "nixos-pxe fleet status --json --config ${fleet.configJSON}"

      def fleet_status():
          return {h["host"]: h for h in json.loads(server.succeed(status_command))}

      # A host's states in the order an install goes through them (src/fleet/status.rs).
      progress = ["absent", "handed-out", "installing", "installed", "confirmed"]

      def wait_for_state(host, wanted, timeout):
          """Polls serve's state every 5 s until `host` is in state `wanted` or a later one (one
          host may go on while the test waits for the other); fails at once when an attempt failed
          or the host is held, and after `timeout` seconds, with the whole fleet's status."""
          deadline = time.monotonic() + timeout
          while True:
              hosts = fleet_status()
              state = hosts[host]["state"]
              assert state in progress, f"{host} is {state}: {json.dumps(hosts[host], indent=1)}"
              if progress.index(state) >= progress.index(wanted):
                  return hosts[host]
              assert time.monotonic() < deadline, f"{host} is not {wanted} after {timeout} s: {json.dumps(hosts, indent=1)}"
              time.sleep(5)

      server.start()
      server.wait_for_unit("nixos-pxe.service")
      # HTTP (services.nixos-pxe.httpPort's default) and NFS (bootServer.nfsMountOptions).
      server.wait_for_open_port(80, "${server.address}")
      server.wait_for_open_port(2049, "${server.address}")
      hosts = fleet_status()
      assert sorted(hosts) == ["alpha", "beta", "gamma"], hosts
      assert all(h["state"] == "absent" for h in hosts.values()), hosts

      # Both at once: one server, two installs.
      alpha.start(allow_reboot=True)
      beta.start(allow_reboot=True)
      for host in ["alpha", "beta"]:
          wait_for_state(host, "installed", 3600)
      confirmed = {host: wait_for_state(host, "confirmed", 1800) for host in ["alpha", "beta"]}

      # Each runs its own system, and serve recorded it.
      for machine, host in [(alpha, "alpha"), (beta, "beta")]:
          machine.wait_for_unit("multi-user.target")
          assert machine.succeed("hostname").strip() == host
          system = machine.succeed("readlink -f /run/current-system").strip()
          assert system == {"alpha": "${toplevel "alpha"}", "beta": "${toplevel "beta"}"}[host], system
          assert confirmed[host]["confirmed"]["system"] == system, confirmed[host]
          assert confirmed[host]["installed_generation"] == 1, confirmed[host]
          assert confirmed[host]["attempt"]["number"] == 1, confirmed[host]
          assert confirmed[host]["attempt"]["mac"] == {"alpha": "52:54:00:12:01:01", "beta": "52:54:00:12:01:02"}[host], confirmed[host]
          machine.succeed("findmnt -n -o SOURCE / | grep -qx /dev/vda2")
      # beta's own customInstaller.swapSizeMiB: a swap partition, and its system uses it.
      beta.succeed("swapon --show=NAME --noheadings | grep -q vda")
      alpha.fail("swapon --show=NAME --noheadings | grep -q .")

      hosts = fleet_status()
      assert hosts["gamma"]["state"] == "absent", hosts["gamma"]
      assert hosts["gamma"]["decision"] == {"kind": "install", "attempt": 1}, hosts["gamma"]
      for host in ["alpha", "beta"]:
          assert hosts[host]["decision"]["kind"] == "local-boot", hosts[host]
    '';
  }
