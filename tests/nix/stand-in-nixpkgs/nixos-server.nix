# Part of the stand-in NixOS (nixos.nix): the NixOS options a boot server's configuration sets
# through nix/server-module.nix (services.nixos-pxe) and checks/pxe-fleet.nix, declared with
# NixOS's types and defaults so that a wrong value fails as it would there (interfaces.nix names
# the nixpkgs file and commit each was read at):
#   networking.firewall.enable, networking.firewall.interfaces.<name>.allowed{TCP,UDP}Ports and
#   their ...PortRanges (nixos/modules/services/networking/firewall.nix: lists of types.port,
#   sorted and made unique by `apply`), environment.systemPackages
#   (nixos/modules/config/system-path.nix), services.postgresql.enable, ensureDatabases and
#   ensureUsers (nixos/modules/services/databases/postgresql.nix).
{ lib, ... }:
let
  inherit (lib) mkOption types;
  canonicalizePortList = ports: lib.unique (builtins.sort builtins.lessThan ports);
  ports = mkOption { type = types.listOf types.port; default = [ ]; apply = canonicalizePortList; };
  ranges = mkOption { type = types.listOf (types.attrsOf types.port); default = [ ]; };
in
{
  _file = ./nixos-server.nix;
  options = {
    networking.firewall.enable = mkOption { type = types.bool; default = true; };
    networking.firewall.interfaces = mkOption {
      type = types.attrsOf (types.submodule {
        options = {
          allowedTCPPorts = ports;
          allowedTCPPortRanges = ranges;
          allowedUDPPorts = ports;
          allowedUDPPortRanges = ranges;
        };
      });
      default = { };
    };
    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    services.postgresql.enable = mkOption { type = types.bool; default = false; };
    services.postgresql.ensureDatabases = mkOption { type = types.listOf types.str; default = [ ]; };
    services.postgresql.ensureUsers = mkOption {
      type = types.listOf (types.submodule {
        options = {
          name = mkOption { type = types.str; };
          ensureDBOwnership = mkOption { type = types.bool; default = false; };
        };
      });
      default = [ ];
    };
  };
}
