# What nix/module.nix hands to whoever evaluates it: its cross-option checks as a list (so
# lib.mkInstaller and lib.mkFleet can read exactly these, without a whole NixOS, and
# nix/nixos-module.nix can make them NixOS assertions) and the option tree as the JSON file the
# tool reads (and as a value, for lib.mkFleet to add each host's image); and what lib.mkFleet tells
# the module (fleetSystems). Internal: not part of the schema (src/schema.rs), not set by users.
{lib, ...}: let
  inherit (lib) mkOption types;
in {
  options.nixosPxe = {
    checks = mkOption {
      internal = true;
      type = types.listOf (types.submodule {
        options.assertion = mkOption {
          type = types.bool;
          description = "Whether the rule holds.";
        };
        options.message = mkOption {
          type = types.str;
          description = "What is wrong and what to set, when it does not.";
        };
      });
      default = [];
      description = "The rules between the installer's options, as { assertion, message } pairs (the shape of NixOS assertions).";
    };
    configValue = mkOption {
      internal = true;
      type = types.attrsOf types.raw;
      description = "The option tree as the tool reads it (nfsroot, customInstaller, bootServer and, for a fleet, fleet), before it is written as configJSON: lib.mkFleet adds each host's image to it.";
    };
    fleetSystems = mkOption {
      internal = true;
      type = types.listOf types.str;
      default = [];
      description = "The fleet hosts whose system the caller passes as a nixosConfigurations entry (lib.mkFleet's `hosts`): their target, for the rule that every host has exactly one.";
    };
    configJSON = mkOption {
      internal = true;
      readOnly = true;
      type = types.package;
      description = "The installer's options as JSON: the tool's --config and the NFS root's /nixos-pxe/config.json.";
    };
  };
}
