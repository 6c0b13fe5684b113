# The installer's kernel: nixpkgs' kernel source, configured by the project itself (the
# architecture's defconfig, the tool's NFS-root fragment merged in, make olddefconfig, the check
# that every `y` of the fragment is =y) and built by linuxManualConfig.
# Returns { fragment, configfile, kernelPackage, kernel }.
#
# Why not nixpkgs' kernel with structuredExtraConfig (what this file did before): generic.nix
# answers `make config` with generate-config.pl, autoModules on x86_64, so every tristate nobody
# answered is built as a module, a `big-parallel` build of hours for a kernel whose NFS root loads
# none; a forced `y` whose parent resolves to `m` is offered only m/n there (newer nixpkgs clamps
# it to m, older ones stop at a "repeated question"); and passing the fragment as
# structuredExtraConfig needs it at evaluation time, an import from derivation that evaluators
# without IFD (Hydra's default) refuse. Here every evaluation-time value is a derivation's path:
# the fragment and the .config are build outputs, so nothing is read while evaluating.
{
  lib,
  pkgs,
  tool,
  configJSON,
}: let
  # nixpkgs' default kernel, for its source, version, modDirVersion and make flags only: neither its
  # kernelPatches (NixOS's helper paths, nothing the installer needs; linuxManualConfig applies
  # none unless given some) nor its configuration.
  base = pkgs.linuxPackages.kernel;

  # The fragment in kconfig lines, computed by `nixos-pxe kernel-config` (src/kernel_config.rs, with
  # the user's nfsroot.extraKernelOptions) at build time.
  fragment = pkgs.runCommand "nixos-pxe-kernel-fragment.config" {nativeBuildInputs = [tool];} ''
    nixos-pxe kernel-config --config ${configJSON} > $out
  '';

  # The kernel build's own make flags (build.nix passes common-flags.nix's compilers, ARCH and
  # CROSS_COMPILE, and keeps them as passthru.commonMakeFlags): Kconfig asks the compiler what it
  # supports, so the .config is made with the compiler that builds the kernel. A kernel without
  # that attribute gets stdenv's compiler from PATH, as generic.nix's configfile derivation does.
  makeFlags = base.commonMakeFlags or ["CROSS_COMPILE=${pkgs.stdenv.cc.targetPrefix}"];

  # The .config, by nix/kernel-config.sh (the same script tests/kernel_fragment.rs runs on Debian's
  # linux-source-6.1). It fails, naming each symbol, when a `y` of the fragment is not =y: so
  # nothing downstream (the kernel, the TFTP root) builds from a .config missing a driver. bison
  # and flex build kconfig itself, as in generic.nix's configfile.
  configfile = pkgs.stdenv.mkDerivation {
    pname = "nixos-pxe-kernel-config";
    inherit (base) version src;
    nativeBuildInputs = [pkgs.bison pkgs.flex];
    postPatch = "patchShebangs scripts";
    buildPhase = ''
      KERNEL_ARCH=${pkgs.stdenv.hostPlatform.linuxArch} \
      MAKE_FLAGS=${lib.escapeShellArg (lib.concatStringsSep " " makeFlags)} \
        bash ${./kernel-config.sh} "$PWD" "$PWD/nixos-pxe-build" ${fragment}
      cat nixos-pxe-build/config-check
    '';
    installPhase = ''
      cp nixos-pxe-build/.config $out
    '';
    passthru = {inherit fragment;};
  };

  # config is not given and allowImportFromDerivation stays false, so linuxManualConfig reads
  # nothing at evaluation time and takes the kernel for one without modules: it builds the image
  # and vmlinux, not `modules` (the NFS root has none; defconfig's few =m symbols, netfilter
  # logging and the x86 package thermal driver, are not built).
  kernelPackage = pkgs.linuxManualConfig {
    inherit (base) version src modDirVersion;
    inherit configfile;
  };

  # $out/bzImage, as the boot server's TFTP root wants it (nixos/bzImage below it), and the
  # .config it was built from.
  kernel = pkgs.runCommand "nixos-pxe-kernel" {passthru = {inherit kernelPackage configfile fragment;};} ''
    mkdir $out
    ln -s ${kernelPackage}/bzImage $out/bzImage
    ln -s ${configfile} $out/config
  '';
in {
  inherit fragment configfile kernelPackage kernel;
}
