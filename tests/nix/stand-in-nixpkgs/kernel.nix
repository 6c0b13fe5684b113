# Stand-ins for the kernel interfaces the project uses: pkgs.linuxPackages.kernel's src, version,
# modDirVersion and commonMakeFlags (pkgs/os-specific/linux/kernel/build.nix keeps them), and
# pkgs.linuxManualConfig (pkgs/os-specific/linux/kernel/build.nix, manual-config.nix before).
#
# The source is real: Debian's linux-source-6.1 (facts.json's linuxSource, the tarball and its
# Debian version), of which the parts Kconfig reads (every Kconfig file, scripts/, the Makefiles,
# the defconfigs; tests/kernel_fragment.rs checks that list against the whole tree) are
# extracted once into the store. So the project's .config derivation (nix/kernel.nix,
# nix/kernel-config.sh) runs Kconfig for real here, with Debian's compiler, bison and flex.
#
# What is not real: the compile. linuxManualConfig takes its arguments as the real one does and
# reads nothing at evaluation time (the real one reads the .config only with
# allowImportFromDerivation or a configfile that is a plain path); its $out/bzImage is a
# placeholder file saying so, beside the .config it was "built" from.
{
  lib,
  stdenv,
  facts,
}: let
  linuxSource = facts.linuxSource or (throw "stand-in nixpkgs: facts.json has no linuxSource (tests/flake.rs sets it from Debian's linux-source-6.1)");

  src = stdenv.runCommand "linux-source-${lib.strings.sanitizeDerivationName linuxSource.version}-kconfig-parts" {tarball = linuxSource.tarball;} ''
    mkdir "$out"
    tar -xJf "$tarball" -C "$out" --wildcards \
      '*/Makefile' '*/scripts/*' '*/arch/x86/Makefile*' '*/arch/x86/configs/*' '*Kconfig*'
  '';

  kernel = {
    inherit src;
    version = "6.1";
    # The real one is the source's kernel.release; build.nix stops when they differ. The stand-in
    # compiles nothing, so nothing compares them here.
    modDirVersion = "6.1.0";
    # common-flags.nix's shape (absolute compilers, ARCH, CROSS_COMPILE), with Debian's gcc.
    commonMakeFlags = ["CC=/usr/bin/gcc" "HOSTCC=/usr/bin/gcc" "ARCH=${stdenv.hostPlatform.linuxArch}" "CROSS_COMPILE="];
  };

  linuxManualConfig = lib.makeOverridable (
    {
      version,
      src,
      configfile,
      modDirVersion ? null,
      allowImportFromDerivation ? false,
      config ? {},
      kernelPatches ? [],
      ...
    }:
      stdenv.runCommand "linux-stand-in-${version}" {inherit configfile;} ''
        mkdir "$out"
        cp "$configfile" "$out/config"
        echo "stand-in nixpkgs: not a kernel; linuxManualConfig compiles where nixpkgs is" > "$out/bzImage"
      ''
      // {
        # What the project passed, for tests/flake.rs to look at.
        passthru = {inherit version src configfile modDirVersion allowImportFromDerivation config kernelPatches;};
        inherit configfile allowImportFromDerivation config;
      }
  );
in {
  inherit kernel linuxManualConfig;
}
