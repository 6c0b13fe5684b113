# Stand-in for lib.nixosSystem (nixpkgs' flake.nix -> nixos/lib/eval-config.nix): lib.evalModules
# over a small base and the caller's modules, with modulesPath pointing at this stand-in's
# nixos/modules and pkgs the stand-in package set. It returns evalModules' result, so
# `extendModules` and `config` are the real module system's.
#
# Where it behaves like NixOS because the project depends on it:
# - the options the project sets on a target system are declared with NixOS's types
#   (fileSystems, swapDevices, boot.loader.systemd-boot.enable, boot.loader.efi.canTouchEfiVariables,
#   networking.hostName, system.build), so a wrong value fails as it would there;
# - config.assertions holds, like nixos/modules/tasks/filesystems.nix, an assertion whose message
#   interpolates an attribute that exists only when the assertion fails (the mount points' `cycle`):
#   reading the messages of passing assertions throws, as it does in NixOS;
# - system.build.toplevel checks the assertions (lib.asserts.checkAssertWarn, as
#   nixos/modules/system/activation/top-level.nix) and is a real store path: the system's name and
#   its file systems as JSON, in a second store path, so the closure has more than one path.
# Everything else a NixOS configuration sets is accepted unevaluated (a freeform top level): the
# stand-in does not know NixOS's thousands of options, NixOS itself would refuse unknown ones.
{ lib, pkgs, impl, modulesPath }:
let
  inherit (lib) mkOption types;

  fileSystemModule = { name, ... }: {
    options = {
      mountPoint = mkOption { type = types.str; default = name; };
      device = mkOption { type = types.nullOr types.str; default = null; };
      label = mkOption { type = types.nullOr types.str; default = null; };
      fsType = mkOption { type = types.str; default = "auto"; };
      options = mkOption { type = types.nonEmptyListOf types.str; default = [ "defaults" ]; };
      depends = mkOption { type = types.listOf types.str; default = [ ]; };
      autoResize = mkOption { type = types.bool; default = false; };
    };
  };

  base = { config, ... }:
    let
      # A mount point goes after the one it lies below (nixos/lib/utils.nix's fsBefore, simplified).
      below = a: b: a.mountPoint != b.mountPoint
        && lib.hasPrefix (lib.removeSuffix "/" a.mountPoint + "/") b.mountPoint;
      sorted = lib.toposort below (lib.attrValues config.fileSystems);
      mountPoints = lib.concatMapStringsSep " -> " (fs: fs.mountPoint);
      described = {
        inherit (config.networking) hostName;
        fileSystems = lib.mapAttrs (_: fs: { inherit (fs) mountPoint device fsType options; }) config.fileSystems;
        swapDevices = map (s: s.device) config.swapDevices;
        boot.loader = {
          systemd-boot.enable = config.boot.loader.systemd-boot.enable;
          efi.canTouchEfiVariables = config.boot.loader.efi.canTouchEfiVariables;
        };
      };
      system = impl.runCommand "nixos-system-${config.networking.hostName}-stand-in"
        { configuration = impl.writeText "configuration.json" (builtins.toJSON described); } ''
        mkdir "$out"
        ln -s "$configuration" "$out/configuration.json"
        echo "stand-in NixOS system (tests/nix/stand-in-nixpkgs), not bootable" > "$out/nixos-version"
      '';
    in
    {
      _file = ./nixos.nix;
      freeformType = types.lazyAttrsOf types.anything;
      options = {
        assertions = mkOption { type = types.listOf types.unspecified; internal = true; default = [ ]; };
        warnings = mkOption { type = types.listOf types.str; internal = true; default = [ ]; };
        fileSystems = mkOption { type = types.attrsOf (types.submodule fileSystemModule); default = { }; };
        swapDevices = mkOption {
          type = types.listOf (types.submodule { options.device = mkOption { type = types.str; }; });
          default = [ ];
        };
        boot.loader.systemd-boot.enable = mkOption { type = types.bool; default = false; };
        boot.loader.efi.canTouchEfiVariables = mkOption { type = types.bool; default = false; };
        networking.hostName = mkOption { type = types.str; default = "nixos"; };
        system.build = mkOption {
          type = types.submoduleWith { modules = [ { freeformType = types.lazyAttrsOf (types.uniq types.unspecified); } ]; };
          default = { };
        };
      };
      config = {
        _module.args.pkgs = pkgs;
        assertions = [
          {
            assertion = !(sorted ? cycle);
            message = "stand-in NixOS: the file systems cannot be sorted: ${mountPoints sorted.cycle} loops to ${mountPoints sorted.loops}";
          }
        ];
        system.build.toplevel = lib.asserts.checkAssertWarn config.assertions config.warnings system;
      };
    };
in
{
  nixosSystem = { modules, specialArgs ? { }, ... }:
    lib.evalModules {
      specialArgs = { inherit modulesPath; } // specialArgs;
      modules = [ base ] ++ modules;
    };
}
