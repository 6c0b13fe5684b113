# The installer's options, evaluated by the module system alone (lib.evalModules): nix/module.nix
# and the user's modules, not a whole NixOS. Returns { config, configJSON, configValue }: the
# evaluated nfsroot/customInstaller/bootServer/fleet trees, and their JSON (and the value it is
# written from) once the module's own checks (config.nixosPxe.checks) hold; a failed check throws
# its message.
#
# Module arguments are those a NixOS module may ask for here: config, options, lib, pkgs and
# modulesPath (nixpkgs' nixos/modules, as nixos/lib/eval-config.nix passes it), so a
# `{ config, pkgs, ... }:` file and one importing `modulesPath + "/profiles/..."` evaluate. NixOS's
# other arguments (utils, baseModules, ...) are not there.
#
# A file that is part of a larger NixOS configuration sets other options too (networking.hostName,
# services.*, fileSystems). This evaluation does not declare them: the top level is freeform, so
# their definitions are kept, merged as NixOS would merge plain values (mkDefault, mkForce and mkIf
# work), and never evaluated unless something reads them. Declaring them would need NixOS's
# module list, which is the whole evaluation this file avoids. A misspelt option under the
# installer's own trees (nfsroot.bootloader.timeout, fleet.host.web1) would land in the freeform
# part too; the freeform type refuses those with the option's name, so a typo still fails as it
# does in NixOS.
#
# Used by lib.mkInstaller and lib.mkFleet alike (`caller` names which, in messages); lib.mkFleet
# passes one more module of its own (nixosPxe.fleetSystems).
{
  lib,
  pkgs,
  modulesPath,
  modules,
  caller ? "lib.mkInstaller",
}: let
  ownTrees = ["nfsroot" "customInstaller" "bootServer" "fleet" "nixosPxe"];

  # The attribute paths a definition value sets, for the message (stops at mkIf/mkForce & co).
  leafPaths = prefix: value:
    if builtins.isAttrs value && !(value ? _type) && !lib.isDerivation value && value != {}
    then lib.concatLists (lib.mapAttrsToList (name: leafPaths (prefix ++ [name])) value)
    else [prefix];

  otherNixosOption =
    lib.types.anything
    // {
      name = "nixosOptionOutsideTheInstaller";
      description = "a NixOS definition outside the installer's options (kept, not evaluated)";
      merge = loc: defs:
        if lib.elem (lib.head loc) ownTrees
        then
          throw (lib.concatMapStringsSep "\n"
            (def:
              lib.concatMapStringsSep "\n"
              (path: "nixos-pxe: the option `${lib.showOption path}' does not exist (defined in ${toString def.file}). The installer's options are listed in the README's Options table and by `nixos-pxe options`.")
              (leafPaths loc def.value))
            defs)
        else lib.types.anything.merge loc defs;
    };

  evaluated = lib.evalModules {
    specialArgs = {inherit modulesPath;};
    modules =
      [
        ./module.nix
        {
          _file = ./installer-options.nix;
          freeformType = lib.types.lazyAttrsOf otherNixosOption;
          config._module.args.pkgs = pkgs;
        }
      ]
      # An inline module (an attribute set in the list) gets a name for messages, as
      # nixos/lib/eval-config.nix names them.
      ++ map (lib.setDefaultModuleLocation "a module passed to ${caller}") modules;
  };
  cfg = evaluated.config;

  failed = builtins.filter (check: !check.assertion) cfg.nixosPxe.checks;
  checked = value:
    if failed == []
    then value
    else throw (lib.concatMapStringsSep "\n" (check: check.message) failed);
in {
  config = {inherit (cfg) nfsroot customInstaller bootServer fleet;};
  configJSON = checked cfg.nixosPxe.configJSON;
  # The tree configJSON is written from (lib.mkFleet adds each host's image to it).
  configValue = checked cfg.nixosPxe.configValue;
}
