# lib.mkInstaller: evaluates an installer configuration (NixOS modules setting nfsroot.*,
# customInstaller.* and bootServer.*) and builds what the boot server serves. Every decision is
# made by the nixos-pxe tool from the JSON form of the options; this file only wires derivations.
{ nixpkgs, system, modules, targetSystem ? null, nixos-pxe ? null }:
let
  inherit (nixpkgs) lib;
  pkgs = nixpkgs.legacyPackages.${system};
  tool = if nixos-pxe != null then nixos-pxe else pkgs.callPackage ./package.nix { };

  # A full NixOS evaluation, so the installer configuration may also set ordinary NixOS options.
  evaluated = lib.nixosSystem { inherit system; modules = modules ++ [ ./module.nix ]; };
  cfg = evaluated.config;
  failed = builtins.filter (a: !a.assertion && lib.hasPrefix "nixos-pxe:" a.message) cfg.assertions;
  options =
    if failed != [ ] then throw (lib.concatMapStringsSep "\n" (a: a.message) failed)
    else { inherit (cfg) nfsroot bootServer; customInstaller = cfg.customInstaller; };

  # The options as JSON (the tool's --config). A path becomes its string: the directory is only
  # named, not copied, since the target system is built from it below.
  plain = v: if builtins.isPath v then toString v else v;
  configJSON = pkgs.writeText "nixos-pxe-config.json" (builtins.toJSON (options // {
    customInstaller = options.customInstaller // {
      target = lib.mapAttrs (_: plain) options.customInstaller.target;
    };
  }));

  # The boot loader: bootx64.efi and grub.cfg, as the seed's result/.
  bootLoader = pkgs.runCommand "nixos-pxe-bootloader" { nativeBuildInputs = [ tool pkgs.grub2_efi ]; } ''
    nixos-pxe mk-bootloader --config ${configJSON} --grub-lib ${pkgs.grub2_efi}/lib/grub/x86_64-efi --out $out
  '';

  # The kernel: nixpkgs' kernel with the tool's fragment built in. The fragment is made by the tool
  # and read back (import from derivation) so that it exists once, in src/kernel_config.rs.
  fragment = pkgs.runCommand "nixos-pxe-kernel-fragment.json" { nativeBuildInputs = [ tool ]; } ''
    nixos-pxe kernel-config --config ${configJSON} --format json > $out
  '';
  kernelValue = v:
    if v == "y" then lib.kernel.yes
    else if v == "n" then lib.kernel.no
    else if v == "m" then lib.kernel.module
    else lib.kernel.freeform v;
  # mkForce: nixpkgs' common config builds NFS and the NIC drivers as modules; these must be built
  # in (no initrd). ignoreConfigErrors: symbols this kernel version lacks (e.g. a NIC driver) are
  # skipped; checks.kernel-config verifies the essential ones landed.
  kernelPackage = pkgs.linuxPackages.kernel.override {
    structuredExtraConfig = lib.mapAttrs (_: v: lib.mkForce (kernelValue v)) (builtins.fromJSON (builtins.readFile fragment));
    ignoreConfigErrors = true;
  };
  kernel = pkgs.runCommand "nixos-pxe-kernel" { passthru = { inherit kernelPackage; }; } ''
    mkdir $out
    ln -s ${kernelPackage}/bzImage $out/bzImage
  '';

  # The target system, with the disk layout the installer makes.
  layout = import ./target-module.nix options.customInstaller;
  target =
    if targetSystem != null then targetSystem.extendModules { modules = [ layout ]; }
    else if options.customInstaller.target.directory != null then
      lib.nixosSystem {
        inherit system;
        modules = [ (plain options.customInstaller.target.directory + "/configuration.nix") layout ];
      }
    else if options.customInstaller.target.flake != null then
      let
        ref = options.customInstaller.target.flake;
        parts = lib.splitString "#" ref;
        flake = builtins.getFlake (lib.concatStringsSep "#" (lib.init parts));
      in
      (flake.nixosConfigurations.${lib.last parts}).extendModules { modules = [ layout ]; }
    else throw "nixos-pxe: no target system: set customInstaller.target.directory or customInstaller.target.flake, or pass targetSystem to lib.mkInstaller";
  toplevel = target.config.system.build.toplevel;

  extension = { zstd = "zst"; gzip = "gz"; xz = "xz"; }.${options.customInstaller.imageCompression};
  imageName = "system.tar.${extension}";

  # The system image: the target's closure and its Nix database registration (closureInfo; no
  # nixos-install in a derivation, which fails on current NixOS).
  systemClosure = pkgs.closureInfo { rootPaths = [ toplevel ]; };
  systemImage = pkgs.runCommand "nixos-pxe-system-image" { nativeBuildInputs = [ tool ]; } ''
    echo ${toplevel} > system
    mkdir $out
    nixos-pxe pack --out $out/${imageName} --compression ${options.customInstaller.imageCompression} \
      --store-paths ${systemClosure}/store-paths \
      --file nixos-pxe/registration=${systemClosure}/registration \
      --file nixos-pxe/system=system
  '';

  # What init and the installer run; init puts it first on PATH.
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

  # The NFS root: unpack on the boot server into bootServer.nfsExport (tar -xf nfsroot.tar -C ...).
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

  # The server configurations for this installer (dhcpd.conf, kea-dhcp4.json, dnsmasq.conf, ...).
  serverConfigs = pkgs.runCommand "nixos-pxe-server-configs" { nativeBuildInputs = [ tool ]; } ''
    nixos-pxe render --config ${configJSON} --out $out
  '';
in
{
  inherit bootLoader kernel tarball systemImage serverConfigs configJSON target;
  config = options;
}
