# lib.mkInstaller: evaluates an installer configuration (NixOS modules setting nfsroot.*,
# customInstaller.* and bootServer.*) and builds what the boot server serves. Every decision is
# made by the nixos-pxe tool from the JSON form of the options; this file only wires derivations.
{ nixpkgs, system, modules, targetSystem ? null, nixos-pxe ? null }:
let
  inherit (nixpkgs) lib;
  pkgs = nixpkgs.legacyPackages.${system};
  tool = if nixos-pxe != null then nixos-pxe else pkgs.callPackage ./package.nix { };

  # A NixOS evaluation (nixpkgs' flake lib.nixosSystem, nixos/lib/eval-config.nix), so the
  # installer configuration may be part of a larger NixOS configuration and take { pkgs, ... }.
  # Modules listed twice (a user importing nixosModules.default too) are deduplicated by path.
  evaluated = lib.nixosSystem {
    modules = modules ++ [ ./module.nix { nixpkgs.hostPlatform = lib.mkDefault system; } ];
  };
  cfg = evaluated.config;
  # Only this module's assertions: the rest concern a bootable system, which this is not. The
  # prefix test comes first so that no other assertion is evaluated.
  failed = builtins.filter (a: lib.hasPrefix "nixos-pxe:" a.message && !a.assertion) cfg.assertions;
  configJSON =
    if failed == [ ] then cfg.system.build.nixosPxeConfig
    else throw (lib.concatMapStringsSep "\n" (a: a.message) failed);
  options = { inherit (cfg) nfsroot customInstaller bootServer; };

  # The boot loader: bootx64.efi and grub.cfg, as the seed's result/. nixpkgs' grub2_efi is
  # grub2.override { efiSupport = true; } (pkgs/top-level/all-packages.nix); its modules are in
  # lib/grub/x86_64-efi and grub-mkimage is on PATH from it.
  bootLoader = pkgs.runCommand "nixos-pxe-bootloader" { nativeBuildInputs = [ tool pkgs.grub2_efi ]; } ''
    nixos-pxe mk-bootloader --config ${configJSON} --grub-lib ${pkgs.grub2_efi}/lib/grub/x86_64-efi --out $out
  '';

  # The kernel: nixpkgs' kernel with the tool's fragment built in. Import from derivation: the
  # fragment is computed by `nixos-pxe kernel-config` (src/kernel_config.rs, with the user's
  # extraKernelOptions) and read back with fromJSON. The alternative, a copy of the fragment
  # committed beside this file, would be a second source that can drift, and the user's
  # extraKernelOptions would have to be parsed again in Nix. The cost: evaluation builds the
  # tool, and needs allow-import-from-derivation (Nix's default).
  fragment = pkgs.runCommand "nixos-pxe-kernel-fragment.json" { nativeBuildInputs = [ tool ]; } ''
    nixos-pxe kernel-config --config ${configJSON} --format json > $out
  '';
  # "y"/"n"/"m" or a value (NR_CPUS=512), as lib/kernel.nix spells them.
  kernelValue = v:
    if v == "y" then lib.kernel.yes
    else if v == "n" then lib.kernel.no
    else if v == "m" then lib.kernel.module
    else lib.kernel.freeform v;
  # generic.nix (pkgs/os-specific/linux/kernel) takes structuredExtraConfig and ignoreConfigErrors
  # and merges structuredExtraConfig with common-config.nix through lib.evalModules, so mkForce
  # wins over common-config's `module` for NFS and the NIC drivers: here they must be built in
  # (no initrd, no modules in the NFS root). ignoreConfigErrors: a symbol this kernel version
  # lacks (an old NIC driver) is skipped; checks.kernel-config verifies the essential ones.
  kernelPackage = pkgs.linuxPackages.kernel.override {
    structuredExtraConfig = lib.mapAttrs (_: v: lib.mkForce (kernelValue v)) (builtins.fromJSON (builtins.readFile fragment));
    ignoreConfigErrors = true;
  };
  # $out/bzImage, as the boot server's TFTP root wants it (nixos/bzImage below it).
  kernel = pkgs.runCommand "nixos-pxe-kernel" { passthru = { inherit kernelPackage; }; } ''
    mkdir $out
    ln -s ${kernelPackage}/bzImage $out/bzImage
  '';

  # The target system, with the disk layout the installer makes (target-module.nix).
  layout = import ./target-module.nix options.customInstaller;
  inherit (options.customInstaller.target) directory flake;
  # builtins.getFlake on a FLAKEREF that is not locked is refused in pure evaluation (the default
  # for flakes); builtins.currentSystem exists only in impure evaluation.
  fromFlake =
    if !(builtins ? getFlake) then throw "nixos-pxe: customInstaller.target.flake = \"${flake}\" needs Nix with flakes enabled; or pass targetSystem = <flake>.nixosConfigurations.<name> to lib.mkInstaller"
    else if !(builtins ? currentSystem) then throw "nixos-pxe: customInstaller.target.flake = \"${flake}\" cannot be read in pure evaluation: pass targetSystem = <flake>.nixosConfigurations.<name> to lib.mkInstaller (or build with --impure)"
    else
      let
        parts = lib.splitString "#" flake;
        source = builtins.getFlake (lib.concatStringsSep "#" (lib.init parts));
      in
      source.nixosConfigurations.${lib.last parts}.extendModules { modules = [ layout ]; };
  target =
    if targetSystem != null then targetSystem.extendModules { modules = [ layout ]; }
    else if directory != null then
      lib.nixosSystem {
        # A path value, so `+` keeps it a path (a string would be imported by its name only).
        modules = [ (directory + "/configuration.nix") layout { nixpkgs.hostPlatform = lib.mkDefault system; } ];
      }
    else if flake != null then fromFlake
    else throw "nixos-pxe: no target system: set customInstaller.target.directory or customInstaller.target.flake, or pass targetSystem to lib.mkInstaller";
  toplevel = target.config.system.build.toplevel;

  extension = { zstd = "zst"; gzip = "gz"; xz = "xz"; }.${options.customInstaller.imageCompression};
  imageName = "system.tar.${extension}";

  # The system image: the target's closure and its Nix database registration, from closureInfo
  # (pkgs/build-support/closure-info.nix: { rootPaths } -> $out/store-paths, $out/registration).
  # Its output names every path, so they are all in this build's sandbox.
  systemClosure = pkgs.closureInfo { rootPaths = [ toplevel ]; };
  systemImage = pkgs.runCommand "nixos-pxe-system-image" { nativeBuildInputs = [ tool ]; } ''
    echo ${toplevel} > system
    mkdir $out
    nixos-pxe pack --out $out/${imageName} --compression ${options.customInstaller.imageCompression} \
      --store-paths ${systemClosure}/store-paths \
      --file nixos-pxe/registration=${systemClosure}/registration \
      --file nixos-pxe/system=system
  '';

  # What init and the installer run (src/install: sfdisk, mkswap, mkfs.vfat, mkfs.ext4,
  # nix-store, nix-env, nixos-generate-config, nixos-enter; sh for the rescue shell). init puts
  # /nixos-pxe/tools/{bin,sbin} first on PATH.
  tools = pkgs.buildEnv {
    name = "nixos-pxe-tools";
    paths = [
      tool
      pkgs.bashInteractive
      pkgs.coreutils
      pkgs.util-linux
      pkgs.e2fsprogs
      pkgs.dosfstools
      pkgs.iproute2
      pkgs.kmod
      pkgs.nix
      pkgs.nixos-install-tools
      pkgs.zstd
    ] ++ lib.optional (options.nfsroot.writableLayer == "unionfs-fuse") pkgs.unionfs-fuse;
    pathsToLink = [ "/bin" "/sbin" ];
  };
  rootClosure = pkgs.closureInfo { rootPaths = [ tools ]; };

  # The NFS root, laid out as the brief's contract says (/init, /nixos-pxe/{config.json,
  # system.tar.*,tools}, /nix/store, empty mount points). Unpack it on the boot server into
  # bootServer.nfsExport: tar -xf nfsroot.tar -C <nfsExport>.
  tarball = pkgs.runCommand "nixos-pxe-nfsroot" { nativeBuildInputs = [ tool ]; } ''
    mkdir $out
    nixos-pxe pack --out $out/nfsroot.tar --compression none \
      --store-paths ${rootClosure}/store-paths \
      --file nixos-pxe/config.json=${configJSON} \
      --file nixos-pxe/${imageName}=${systemImage}/${imageName} \
      --symlink init=${tool}/bin/nixos-pxe \
      --symlink nixos-pxe/tools=${tools} \
      --dir dev --dir proc --dir sys --dir run --dir tmp --dir mnt --dir etc
  '';

  # The server configurations for this installer (dhcpd.conf, kea-dhcp4.json, dnsmasq.conf,
  # exports, ganesha.conf, grub.cfg, cmdline).
  serverConfigs = pkgs.runCommand "nixos-pxe-server-configs" { nativeBuildInputs = [ tool ]; } ''
    nixos-pxe render --config ${configJSON} --out $out
  '';
in
{
  inherit bootLoader kernel tarball systemImage serverConfigs configJSON target;
  # The evaluated option values (target.directory still a path here).
  config = options;
}
