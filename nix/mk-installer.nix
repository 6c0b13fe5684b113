# lib.mkInstaller: evaluates an installer configuration (modules setting nfsroot.*,
# customInstaller.* and bootServer.*) and builds what the boot server serves. Every decision is
# made by the nixos-pxe tool from the JSON form of the options; this file only wires the
# artefacts, one file each, so that other entry points (several hosts sharing one boot loader,
# kernel and NFS root) can call the same pieces:
#   installer-options.nix  the options, by lib.evalModules (not a whole NixOS) -> config, configJSON
#   boot-loader.nix        bootx64.efi + grub.cfg
#   kernel.nix             the fragment, the kernel's .config (checked: every `y` of it =y), the kernel
#   target.nix             the target NixOS system, with the installer's disk layout and boot loader
#   system-image.nix       the targets' closure as system.tar.*
#   tarball.nix            the NFS root
#   server-configs.nix     dhcpd.conf, kea-dhcp4.json, dnsmasq.conf, exports, ganesha.conf, ...
{
  nixpkgs,
  system,
  modules,
  targetSystem ? null,
  nixos-pxe ? null,
}: let
  inherit (nixpkgs) lib;
  pkgs = nixpkgs.legacyPackages.${system};
  tool =
    if nixos-pxe != null
    then nixos-pxe
    else pkgs.callPackage ./package.nix {};

  options = import ./installer-options.nix {
    inherit lib pkgs modules;
    # As nixos/lib/eval-config.nix passes it, so `modulesPath + "/profiles/..."` imports work.
    modulesPath = "${nixpkgs}/nixos/modules";
  };
  # A configuration with fleet.hosts installs many systems, each host its own: lib.mkFleet.
  single = value:
    if options.config.fleet.hosts == {}
    then value
    else throw "nixos-pxe: lib.mkInstaller installs one system, but the configuration has fleet.hosts (${lib.concatStringsSep ", " (lib.attrNames options.config.fleet.hosts)}): build a fleet with lib.mkFleet { nixpkgs; system; modules; hosts ? { }; }";
  configJSON = single options.configJSON;
  inherit (options.config) nfsroot;
  customInstaller = single options.config.customInstaller;

  kernelParts = import ./kernel.nix {inherit lib pkgs tool configJSON;};

  # The layouts the image holds a system for (nix/layouts.nix: two for "auto", else one).
  layouts = import ./layouts.nix customInstaller.firmware;
  targets = lib.genAttrs layouts (layout: import ./target.nix {inherit lib system customInstaller targetSystem layout;});
  systemImage = import ./system-image.nix {
    inherit lib pkgs tool;
    toplevels = lib.mapAttrs (_: target: target.config.system.build.toplevel) targets;
    compression = customInstaller.imageCompression;
  };
in {
  inherit configJSON targets systemImage;
  # The target system of the first layout (the only one unless customInstaller.firmware = "auto",
  # where it is the UEFI one; `targets` has each).
  target = targets.${lib.head layouts};
  inherit (kernelParts) kernel;
  # The fragment (kconfig lines) and the kernel's .config, which builds only when every `y`
  # symbol of the fragment is =y in it: the check.
  kernelFragment = kernelParts.fragment;
  kernelConfigCheck = kernelParts.configfile;
  bootLoader = import ./boot-loader.nix {inherit pkgs tool configJSON;};
  serverConfigs = import ./server-configs.nix {inherit pkgs tool configJSON;};
  tarball = import ./tarball.nix {
    inherit lib pkgs tool configJSON systemImage;
    inherit (nfsroot) writableLayer init;
  };
  # The unsigned parts `nixos-pxe sign --unsigned` takes, for bootServer.secureBoot
  # (nix/secure-boot-parts.nix): the image with its UEFI system's unified kernel image.
  secureBootParts = import ./secure-boot-parts.nix {
    inherit lib pkgs tool configJSON;
    inherit (kernelParts) kernel;
    inherit (nfsroot) writableLayer;
    images.${systemImage.imageName} = {
      image = "${systemImage}/${systemImage.imageName}";
      system = targets.uefi or (throw "nixos-pxe: bootServer.secureBoot needs customInstaller.firmware = \"uefi\" (it is \"${customInstaller.firmware}\")");
    };
  };
  # The evaluated option values (target.directory still a path here).
  config = options.config;
}
