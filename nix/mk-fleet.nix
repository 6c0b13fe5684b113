# lib.mkFleet: a fleet (fleet.hosts.<name>, each recognised by its MACs) built into what one boot
# server serves: one boot loader, one kernel, one NFS root holding each distinct system image
# once, the server configs (with the per-host GRUB files), and each host's target system. The
# options are evaluated as lib.mkInstaller evaluates them (installer-options.nix, with the
# fleet's rules of fleet-rules.nix) and each artefact is made by the same file as there:
#   boot-loader.nix, kernel.nix, server-configs.nix  from the fleet's config.json
#   target.nix        each host's system for each layout its merged customInstaller.firmware
#                     needs (nix/layouts.nix: two for "auto", else one): its target
#                     (hosts.<name>, target.directory or target.flake) with that disk layout and
#                     boot loader, and report-module.nix (its first boot reports to serve)
#   system-image.nix  one image per distinct set of systems
#   tarball.nix       the NFS root, with every image at nixos-pxe/systems/<hash>.tar.*
# and, for `nixos-pxe serve` (nix/server-module.nix), the TFTP root and the NFS root unpacked.
#
# hosts: name -> a nixosConfigurations entry (an evaluated NixOS system), instead of
# fleet.hosts.<name>.target.*; the host still needs fleet.hosts.<name>.macs.
{
  nixpkgs,
  system,
  modules,
  hosts ? {},
  nixos-pxe ? null,
}: let
  inherit (nixpkgs) lib;
  pkgs = nixpkgs.legacyPackages.${system};
  tool =
    if nixos-pxe != null
    then nixos-pxe
    else pkgs.callPackage ./package.nix {};

  options = import ./installer-options.nix {
    inherit lib pkgs;
    modulesPath = "${nixpkgs}/nixos/modules";
    caller = "lib.mkFleet";
    modules =
      modules
      ++ [
        {
          _file = ./mk-fleet.nix;
          nixosPxe.fleetSystems = lib.attrNames hosts;
        }
      ];
  };
  inherit (options.config) nfsroot customInstaller fleet;

  # A configuration without hosts is a single installer, not a fleet.
  fleetHosts =
    if fleet.hosts != {}
    then fleet.hosts
    else throw "nixos-pxe: lib.mkFleet needs fleet.hosts (each host's MACs and target); for one system without hosts, use lib.mkInstaller";

  # Each host's customInstaller: the top-level one with the host's own values, and its own target
  # (target.nix reads customInstaller.target). A host may override firmware, so the layouts its
  # image holds a system for are the host's (the installer decides by the same merged value).
  mergedOf = name: customInstaller // fleetHosts.${name}.customInstaller // {inherit (fleetHosts.${name}) target;};
  layoutsOf = name: import ./layouts.nix (mergedOf name).firmware;

  # Each host's target system for each of its layouts, plus the first-boot report.
  systemsByLayout =
    lib.mapAttrs
    (name: _:
      lib.genAttrs (layoutsOf name) (layout:
        (import ./target.nix {
          inherit lib system layout;
          customInstaller = mergedOf name;
          targetSystem = hosts.${name} or null;
        })
        .extendModules {modules = [./report-module.nix];}))
    fleetHosts;
  # Each host's system of its first layout (the only one unless its firmware is "auto", where it is
  # the UEFI one; systemsByLayout has each).
  targets = lib.mapAttrs (name: byLayout: byLayout.${lib.head (layoutsOf name)}) systemsByLayout;

  extension =
    {
      zstd = "zst";
      gzip = "gz";
      xz = "xz";
    }
    .${customInstaller.imageCompression};
  toplevelsOf = name: lib.mapAttrs (_: t: t.config.system.build.toplevel) systemsByLayout.${name};
  # The hash part of a store path (/nix/store/HASH-name), without the path's string context:
  # config.json names the file, it does not depend on the system (so neither it nor the
  # uncompressed NFS root tarball that holds it refers to the systems' closures).
  hashOf = path: builtins.substring 0 32 (baseNameOf (builtins.unsafeDiscardStringContext (toString path)));
  # The image's file below /nixos-pxe/, named by the hash part of the system's store path (for
  # "auto", the hashes of its systems in nix/layouts.nix's order, joined by "-"): hosts with the
  # same systems share one file, and `ls /nix/store/<hash>-*` finds each system. An "auto" image
  # never shares a name with a one-system image, whose installer reads nixos-pxe/system instead of
  # nixos-pxe/system.<layout>.
  imageFile = name: "systems/${lib.concatMapStringsSep "-" (layout: hashOf (toplevelsOf name).${layout}) (layoutsOf name)}.tar.${extension}";

  # One image per distinct set of systems (the attribute set's keys are the files, so hosts that
  # share their systems give the same key and the same image).
  systemImages = lib.listToAttrs (map
    (name:
      lib.nameValuePair (imageFile name) (import ./system-image.nix {
        inherit lib pkgs tool;
        toplevels = toplevelsOf name;
        compression = customInstaller.imageCompression;
      }))
    (lib.attrNames fleetHosts));

  configJSON = pkgs.writeText "nixos-pxe-config.json" (builtins.toJSON (lib.recursiveUpdate options.configValue {
    fleet.hosts = lib.mapAttrs (name: _: {image = imageFile name;}) fleetHosts;
  }));

  kernelParts = import ./kernel.nix {inherit lib pkgs tool configJSON;};
  inherit (kernelParts) kernel;
  bootLoader = import ./boot-loader.nix {inherit pkgs tool configJSON;};
  tarball = import ./tarball.nix {
    inherit lib pkgs tool configJSON;
    inherit (nfsroot) writableLayer init;
    images = lib.mapAttrs (_: image: "${image}/${image.imageName}") systemImages;
  };
  # Secure Boot mode (bootServer.secureBoot): each image with the UEFI system whose unified kernel
  # image boots it (the fleet's rules ask customInstaller.firmware = "uefi" of every host then).
  secureBootParts = import ./secure-boot-parts.nix {
    inherit lib pkgs tool configJSON kernel;
    inherit (nfsroot) writableLayer;
    images = lib.listToAttrs (map (name:
      lib.nameValuePair (imageFile name) {
        image = let
          image = systemImages.${imageFile name};
        in "${image}/${image.imageName}";
        system = systemsByLayout.${name}.uefi or (throw "nixos-pxe: fleet host ${name}: bootServer.secureBoot needs customInstaller.firmware = \"uefi\" (its firmware is \"${(mergedOf name).firmware}\")");
      })
    (lib.attrNames fleetHosts));
  };
in {
  inherit configJSON targets systemsByLayout systemImages kernel bootLoader tarball tool;
  # The unsigned parts `nixos-pxe sign --unsigned` takes (nix/secure-boot-parts.nix).
  inherit secureBootParts;
  kernelFragment = kernelParts.fragment;
  kernelConfigCheck = kernelParts.configfile;
  serverConfigs = import ./server-configs.nix {inherit pkgs tool configJSON;};

  # What `nixos-pxe serve --tftp-root` serves: the boot loaders at the top (bootx64.efi for UEFI,
  # bios.0 for legacy BIOS PXE; serve's DHCP names the one for the client's architecture), the
  # kernel at nixos/bzImage (schema::KERNEL_TFTP_PATH); the per-host files serve makes itself.
  # Copies, not links: serve reads below the root and refuses a link out of it.
  tftpRoot = pkgs.runCommand "nixos-pxe-tftp-root" {} ''
    mkdir -p $out/nixos
    cp ${bootLoader}/bootx64.efi $out/bootx64.efi
    cp ${bootLoader}/bios.0 $out/bios.0
    cp -L ${kernel}/bzImage $out/nixos/bzImage
  '';

  # The NFS root tarball unpacked, for `nixos-pxe serve --nfs-root`: a store path, so it is
  # read-only, owned by root and readable by every user (serve needs no privilege to read it),
  # and a new fleet is a new path (no unpacked copy to keep in step).
  nfsRoot = pkgs.runCommand "nixos-pxe-nfsroot-unpacked" {} ''
    mkdir $out
    tar -xf ${tarball}/nfsroot.tar -C $out
  '';

  # The evaluated option values (fleet.hosts.<name>.target.directory still a path here).
  config = options.config;
}
