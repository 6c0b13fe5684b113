# What nix/module.nix hands to whoever evaluates it: its cross-option checks as a list (so
# lib.mkInstaller can read exactly these, without a whole NixOS, and nix/nixos-module.nix can make
# them NixOS assertions) and the option tree as the JSON file the tool reads. Internal: not part of
# the schema (src/schema.rs), not set by users.
{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.nixosPxe = {
    checks = mkOption {
      internal = true;
      type = types.listOf (types.submodule {
        options.assertion = mkOption { type = types.bool; description = "Whether the rule holds."; };
        options.message = mkOption { type = types.str; description = "What is wrong and what to set, when it does not."; };
      });
      default = [ ];
      description = "The rules between the installer's options, as { assertion, message } pairs (the shape of NixOS assertions).";
    };
    configJSON = mkOption {
      internal = true;
      readOnly = true;
      type = types.package;
      description = "The installer's options as JSON: the tool's --config and the NFS root's /nixos-pxe/config.json.";
    };
  };
}
