# lib.mkFleet: a fleet (fleet.hosts.<name>, each recognised by its MACs) built into what one boot
# server serves: one boot loader, one kernel, one NFS root holding each distinct system image
# once, the server configs (with the per-host GRUB files), and each host's target system. The
# options are evaluated as lib.mkInstaller evaluates them (installer-options.nix, with the
# fleet's rules of fleet-rules.nix) and each artefact is made by the same file as there:
#   boot-loader.nix, kernel.nix, server-configs.nix  from the fleet's config.json
#   target.nix        each host's system: its target (hosts.<name>, target.directory or
#                     target.flake) with the disk layout of its merged customInstaller, and
#                     report-module.nix (its first boot reports to serve)
#   system-image.nix  one image per distinct system
#   tarball.nix       the NFS root, with every image at nixos-pxe/systems/<hash>.tar.*
# and, for `nixos-pxe serve` (nix/server-module.nix), the TFTP root and the NFS root unpacked.
#
# hosts: name -> a nixosConfigurations entry (an evaluated NixOS system), instead of
# fleet.hosts.<name>.target.*; the host still needs fleet.hosts.<name>.macs.
{ nixpkgs, system, modules, hosts ? { }, nixos-pxe ? null }:
let
  inherit (nixpkgs) lib;
  pkgs = nixpkgs.legacyPackages.${system};
  tool = if nixos-pxe != null then nixos-pxe else pkgs.callPackage ./package.nix { };

  options = import ./installer-options.nix {
    inherit lib pkgs;
    modulesPath = "${nixpkgs}/nixos/modules";
    caller = "lib.mkFleet";
    modules = modules ++ [
      { _file = ./mk-fleet.nix; nixosPxe.fleetSystems = lib.attrNames hosts; }
    ];
  };
  inherit (options.config) nfsroot customInstaller fleet;

  # A configuration without hosts is a single installer, not a fleet.
  fleetHosts =
    if fleet.hosts != { } then fleet.hosts
    else throw "nixos-pxe: lib.mkFleet needs fleet.hosts (each host's MACs and target); for one system without hosts, use lib.mkInstaller";

  # Each host's target system: the top-level customInstaller with the host's own values, and its
  # own target (target.nix reads customInstaller.target), plus the first-boot report.
  targets = lib.mapAttrs
    (name: host:
      let
        merged = customInstaller // host.customInstaller // { inherit (host) target; };
        evaluated = import ./target.nix {
          inherit lib system;
          customInstaller = merged;
          targetSystem = hosts.${name} or null;
        };
      in
      evaluated.extendModules { modules = [ ./report-module.nix ]; })
    fleetHosts;

  extension = { zstd = "zst"; gzip = "gz"; xz = "xz"; }.${customInstaller.imageCompression};
  toplevelOf = name: targets.${name}.config.system.build.toplevel;
  # The image's file below /nixos-pxe/, named by the hash part of the system's store path: hosts
  # with the same system share one file, and `ls /nix/store/<hash>-*` finds the system. Without
  # the path's string context: config.json names the file, it does not depend on the system (so
  # neither it nor the uncompressed NFS root tarball that holds it refers to the systems' closures).
  imageFile = name:
    "systems/${builtins.substring 0 32 (baseNameOf (builtins.unsafeDiscardStringContext (toString (toplevelOf name))))}.tar.${extension}";

  # One image per distinct system (the attribute set's keys are the files, so hosts that share a
  # system give the same key and the same image).
  systemImages = lib.listToAttrs (map
    (name: lib.nameValuePair (imageFile name) (import ./system-image.nix {
      inherit pkgs tool;
      toplevel = toplevelOf name;
      compression = customInstaller.imageCompression;
    }))
    (lib.attrNames fleetHosts));

  configJSON = pkgs.writeText "nixos-pxe-config.json" (builtins.toJSON (lib.recursiveUpdate options.configValue {
    fleet.hosts = lib.mapAttrs (name: _: { image = imageFile name; }) fleetHosts;
  }));

  kernelParts = import ./kernel.nix { inherit lib pkgs tool configJSON; };
  inherit (kernelParts) kernel;
  bootLoader = import ./boot-loader.nix { inherit pkgs tool configJSON; };
  tarball = import ./tarball.nix {
    inherit lib pkgs tool configJSON;
    inherit (nfsroot) writableLayer init;
    images = lib.mapAttrs (_: image: "${image}/${image.imageName}") systemImages;
  };
in
{
  inherit configJSON targets systemImages kernel bootLoader tarball tool;
  kernelFragment = kernelParts.fragment;
  kernelConfigCheck = kernelParts.configCheck;
  serverConfigs = import ./server-configs.nix { inherit pkgs tool configJSON; };

  # What `nixos-pxe serve --tftp-root` serves: the boot loader at the top, the kernel at
  # nixos/bzImage (schema::KERNEL_TFTP_PATH); the per-host files serve makes itself. Copies, not
  # links: serve reads below the root and refuses a link out of it.
  tftpRoot = pkgs.runCommand "nixos-pxe-tftp-root" { } ''
    mkdir -p $out/nixos
    cp ${bootLoader}/bootx64.efi $out/bootx64.efi
    cp -L ${kernel}/bzImage $out/nixos/bzImage
  '';

  # The NFS root tarball unpacked, for `nixos-pxe serve --nfs-root`: a store path, so it is
  # read-only, owned by root and readable by every user (serve needs no privilege to read it),
  # and a new fleet is a new path (no unpacked copy to keep in step).
  nfsRoot = pkgs.runCommand "nixos-pxe-nfsroot-unpacked" { } ''
    mkdir $out
    tar -xf ${tarball}/nfsroot.tar -C $out
  '';

  # The evaluated option values (fleet.hosts.<name>.target.directory still a path here).
  config = options.config;
}
