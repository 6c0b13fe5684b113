# The installer's kernel: nixpkgs' kernel with the tool's NFS-root fragment built in, and the check
# that it really is. Returns { fragment, structuredExtraConfig, kernelPackage, configCheck, kernel }.
{ lib, pkgs, tool, configJSON }:
let
  # The fragment, computed by `nixos-pxe kernel-config` (src/kernel_config.rs, with the user's
  # extraKernelOptions) and read back with fromJSON: import from derivation. The alternative, a
  # copy of the fragment committed beside this file, would be a second source that can drift,
  # and the user's extraKernelOptions would have to be parsed again in Nix. The cost: evaluation
  # builds the tool, and needs allow-import-from-derivation (Nix's default).
  fragment = pkgs.runCommand "nixos-pxe-kernel-fragment.json" { nativeBuildInputs = [ tool ]; } ''
    nixos-pxe kernel-config --config ${configJSON} --format json > $out
  '';
  values = builtins.fromJSON (builtins.readFile fragment);

  # "y"/"n"/"m" or a value (NR_CPUS=512), as lib/kernel.nix spells them.
  kernelValue = v:
    if v == "y" then lib.kernel.yes
    else if v == "n" then lib.kernel.no
    else if v == "m" then lib.kernel.module
    else lib.kernel.freeform v;

  # generic.nix (pkgs/os-specific/linux/kernel) merges structuredExtraConfig with common-config.nix
  # through lib.evalModules (nixos/modules/system/boot/kernel_config.nix: a tristate is an enum,
  # so two different definitions conflict), so mkForce wins over common-config's `module` for NFS
  # and the NIC drivers: here they must be built in (no initrd, no modules in the NFS root).
  structuredExtraConfig = lib.mapAttrs (_: v: lib.mkForce (kernelValue v)) values;

  # autoModules = true, as nixpkgs sets it for x86_64 kernels: generate-config.pl then answers `m`
  # to every tristate question nobody answered (pkgs/os-specific/linux/kernel/generate-config.pl,
  # AUTO_MODULES from generic.nix). That is `make allmodconfig` for everything the fragment and
  # common-config.nix leave open, the case the fragment is tested against (the fragment carries
  # the dependencies its drivers need built in, e.g. PTP_1588_CLOCK, VXLAN, GNSS). autoModules =
  # false would save building modules the NFS root never loads, but would leave every open
  # symbol at its Kconfig default: a configuration nobody has tested the fragment or
  # common-config.nix against.
  #
  # ignoreConfigErrors = true: a fragment symbol this kernel version lacks (an old NIC driver, an
  # extraKernelOptions entry) must not stop the build of everything else. What it would hide, a `y`
  # that Kconfig turned into `m` or dropped, is caught by configCheck below, which every build of
  # `kernel` depends on.
  kernelPackage = pkgs.linuxPackages.kernel.override {
    inherit structuredExtraConfig;
    autoModules = true;
    ignoreConfigErrors = true;
  };

  # Every symbol the fragment wants built in is `=y` in the kernel's .config (the kernel's
  # passthru.configfile, pkgs/os-specific/linux/kernel/manual-config.nix; generating it does not
  # build the kernel). Read from the fragment derivation, not from a list kept here.
  builtIn = lib.attrNames (lib.filterAttrs (_: v: v == "y") values);
  configCheck = pkgs.runCommand "nixos-pxe-kernel-config-check" {
    inherit builtIn;
    configfile = kernelPackage.configfile;
  } ''
    missing=""
    names=""
    for symbol in $builtIn; do
      if ! grep -qx "CONFIG_$symbol=y" "$configfile"; then
        got=$(grep -E "^CONFIG_$symbol=|^# CONFIG_$symbol is not set" "$configfile" || true)
        missing="$missing
      $symbol: ''${got:-not in .config}"
        names="$names $symbol"
      fi
    done
    if [ -n "$names" ]; then
      count=$(echo $names | wc -w)
      # The names again on the last line: Nix shows only the last lines of a failed build.
      echo "nixos-pxe: $count kernel symbols that the NFS root needs built in are not =y in the kernel's .config ($configfile):$missing
    The NFS root has no kernel modules, so each of them must be =y. A symbol that is =m depends on
    something nixpkgs' autoModules left as a module: add that dependency to the fragment
    (src/kernel_config.rs) or to nfsroot.extraKernelOptions. A symbol that is not in .config does
    not exist in this kernel version, or its dependencies are off: check it against this kernel's
    Kconfig, or remove it from nfsroot.extraKernelOptions.
    nixos-pxe: not built in:$names" >&2
      exit 1
    fi
    echo "all $(echo $builtIn | wc -w) built-in symbols of the fragment are =y" > $out
  '';

  # $out/bzImage, as the boot server's TFTP root wants it (nixos/bzImage below it); only once the
  # check has passed.
  kernel = pkgs.runCommand "nixos-pxe-kernel" { passthru = { inherit kernelPackage; }; } ''
    mkdir $out
    ln -s ${kernelPackage}/bzImage $out/bzImage
    ln -s ${configCheck} $out/config-check
  '';
in
{
  inherit fragment structuredExtraConfig kernelPackage configCheck kernel;
}
