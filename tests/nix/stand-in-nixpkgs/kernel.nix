# Stand-in for pkgs.linuxPackages.kernel: an overridable function of the arguments of
# pkgs/os-specific/linux/kernel/generic.nix that the project passes (structuredExtraConfig,
# autoModules, ignoreConfigErrors), with the passthru the project reads (configfile,
# structuredExtraConfig; manual-config.nix and generic.nix). No kernel is built: $out/bzImage is a
# placeholder file saying so, beside the .config it was "built" from.
#
# What is modelled: generic.nix merges structuredExtraConfig with common-config.nix through
# lib.evalModules, where a tristate is an enum and a freeform value merges only with an equal one
# (nixos/modules/system/boot/kernel_config.nix), so two different definitions conflict unless one
# has a higher priority. The stand-in's common config defines every symbol it is given as something
# else (tristates `module`, freeform values another value): the worst case, in which only the
# caller's mkForce makes its values win. The .config is then written from the merged settings.
#
# What is not modelled: Kconfig. The real .config comes from generate-config.pl answering
# `make config`, where a `y` whose dependency is a module can end up `m`, or a symbol the kernel
# version lacks is dropped. `kernelConfigEdits` in the machine's facts.json applies such an outcome
# ({ SYMBOL = "m"; OTHER = null; }), so a test can see what the project's check does with it.
{ lib, stdenv, facts }:
let
  inherit (lib) mkOption types;

  # The shape of kernel_config.nix's `settings`, written for the stand-in.
  settingsModule = {
    options.settings = mkOption {
      type = types.attrsOf (types.submodule {
        options = {
          tristate = mkOption { type = types.enum [ "y" "m" "n" null ]; default = null; };
          freeform = mkOption { type = types.nullOr types.str // { merge = lib.mergeEqualOption; }; default = null; };
          optional = mkOption { type = types.bool; default = false; };
        };
      });
      default = { };
    };
  };

  conflicting = item:
    if item ? tristate then lib.kernel.module
    else lib.kernel.freeform "stand-in-common-config-value";

  build = { structuredExtraConfig ? { }, ignoreConfigErrors ? false, autoModules ? true, ... }:
    let
      # The caller's values may be wrapped in mkForce; the stand-in common config needs the bare
      # item to pick a conflicting definition.
      bare = value: if value ? _type && value ? content then bare value.content else value;
      commonConfig = lib.mapAttrs (_: value: conflicting (bare value)) structuredExtraConfig;
      settings = (lib.evalModules {
        modules = [
          settingsModule
          { settings = commonConfig; _file = "stand-in common-config.nix"; }
          { settings = structuredExtraConfig; _file = "structuredExtraConfig"; }
        ];
      }).config.settings;

      edits = facts.kernelConfigEdits or { };
      line = name: item:
        let
          value = if edits ? ${name} then edits.${name}
            else if item.freeform != null then item.freeform
            else item.tristate;
        in
        if value == null then ""
        else if value == "n" then "# CONFIG_${name} is not set\n"
        else "CONFIG_${name}=${value}\n";
      configText = lib.concatStrings (lib.mapAttrsToList line settings);

      configfile = stdenv.runCommand "linux-config-stand-in" { inherit configText; } ''
        printf '%s' "$configText" > "$out"
      '';
      # Built from its configuration, as manual-config.nix's build links configfile as .config.
      kernel = stdenv.runCommand "linux-stand-in" { inherit configfile; } ''
        mkdir "$out"
        cp "$configfile" "$out/config"
        echo "stand-in nixpkgs: not a kernel; nixpkgs' kernel is built where nixpkgs is" > "$out/bzImage"
      '';
    in
    kernel // {
      inherit configfile structuredExtraConfig ignoreConfigErrors autoModules;
      version = "0-stand-in";
    };
in
lib.makeOverridable build { }
