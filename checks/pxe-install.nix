# The whole chain in NixOS VMs: a server runs dnsmasq (DHCP + TFTP) and the kernel NFS server
# from `nixos-pxe render` output; a UEFI client with one empty disk PXE-boots, installs, reboots
# and comes up as the target system. Runs where nixpkgs is available (`nix flake check`).
{ pkgs, installer }:
let
  configs = installer.serverConfigs;
in
pkgs.testers.runNixOSTest {
  name = "nixos-pxe-install";
  globalTimeout = 3600;

  nodes.server = { lib, ... }: {
    virtualisation.vlans = [ 1 ];
    networking.useDHCP = false;
    networking.firewall.enable = false;
    networking.interfaces.eth1.ipv4.addresses = lib.mkForce [ { address = "10.42.0.1"; prefixLength = 24; } ];

    # The TFTP root and the NFS root, laid out as the README tells a site to do it.
    systemd.services.pxe-files = {
      wantedBy = [ "multi-user.target" ];
      before = [ "nfs-server.service" "pxe-dnsmasq.service" ];
      serviceConfig.Type = "oneshot";
      script = ''
        mkdir -p /srv/tftp/nixos /srv/nixos/nfsroot
        cp ${installer.bootLoader}/bootx64.efi /srv/tftp/
        cp ${installer.kernel}/bzImage /srv/tftp/nixos/bzImage
        ${pkgs.gnutar}/bin/tar -xf ${installer.tarball}/nfsroot.tar -C /srv/nixos/nfsroot
      '';
    };

    systemd.services.pxe-dnsmasq = {
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" "pxe-files.service" ];
      wants = [ "network-online.target" ];
      serviceConfig.ExecStart = "${pkgs.dnsmasq}/bin/dnsmasq --conf-file=${configs}/dnsmasq.conf --no-daemon";
    };

    services.nfs.server.enable = true;
    # The rendered exports file (import from derivation: the line exists once, in templates/).
    services.nfs.server.exports = builtins.readFile "${configs}/exports";
  };

  # A diskless-firmware client: OVMF, network first, one empty disk (vda) to install on.
  nodes.client = { lib, ... }: {
    virtualisation = {
      vlans = [ 1 ];
      useBootLoader = true;
      useEFIBoot = true;
      diskImage = null;
      mountHostNixStore = true;
      emptyDiskImages = [ 8192 ];
      memorySize = 2048;
      qemu.options = [ "-boot" "order=n" ];
    };
    boot.loader.grub.enable = false;
    fileSystems."/" = { device = "tmpfs"; fsType = "tmpfs"; };
  };

  testScript = ''
    server.start()
    server.wait_for_unit("pxe-dnsmasq.service")
    server.wait_for_unit("nfs-server.service")

    client.start(allow_reboot=True)
    client.wait_for_console_text("nixos-pxe: DHCP on efinet0")
    client.wait_for_console_text("Command line: ${builtins.replaceStrings [ "\n" ] [ "" ] (builtins.readFile "${configs}/cmdline")}")
    client.wait_for_console_text("nixos-pxe: install complete")

    # After the reboot the client runs the installed system (its boot entry is first now).
    client.wait_for_unit("multi-user.target")
    assert client.succeed("hostname").strip() == "installed-by-pxe"
    client.succeed("findmnt -n -o SOURCE / | grep -q vda2")
    client.succeed("grep -q 'useDHCP = false' /etc/nixos/networking.nix")
    client.succeed("test -f /etc/nixos/hardware-configuration.nix")
  '';
}
