# Part of the stand-in NixOS (nixos.nix): the NixOS options a boot server's configuration sets
# through nix/server-module.nix (services.nixos-pxe) and checks/pxe-fleet.nix, declared with
# NixOS's types and defaults so that a wrong value fails as it would there (interfaces.nix names
# the nixpkgs file and commit each was read at):
#   networking.firewall.enable, networking.firewall.interfaces.<name>.allowed{TCP,UDP}Ports and
#   their ...PortRanges (nixos/modules/services/networking/firewall.nix: lists of types.port,
#   sorted and made unique by `apply`), networking.firewall.filterOutput.{enabled,interfaces}
#   (the same file: outgoing ports, the same types), networking.nftables.enable and
#   networking.nftables.tables.<name>.{family,content} (nixos/modules/services/networking/
#   nftables.nix, used as firewall-nftables.nix uses it), boot.kernelModules (listOf str),
#   environment.systemPackages (nixos/modules/config/system-path.nix), services.postgresql.enable,
#   ensureDatabases and ensureUsers (nixos/modules/services/databases/postgresql.nix).
{lib, ...}: let
  inherit (lib) mkOption types;
  canonicalizePortList = ports: lib.unique (builtins.sort builtins.lessThan ports);
  ports = mkOption {
    type = types.listOf types.port;
    default = [];
    apply = canonicalizePortList;
  };
  ranges = mkOption {
    type = types.listOf (types.attrsOf types.port);
    default = [];
  };
in {
  _file = ./nixos-server.nix;
  options = {
    networking.firewall.enable = mkOption {
      type = types.bool;
      default = true;
    };
    networking.firewall.interfaces = mkOption {
      type = types.attrsOf (types.submodule {
        options = {
          allowedTCPPorts = ports;
          allowedTCPPortRanges = ranges;
          allowedUDPPorts = ports;
          allowedUDPPortRanges = ranges;
        };
      });
      default = {};
    };
    networking.firewall.filterOutput.enabled = mkOption {
      type = types.bool;
      default = false;
    };
    networking.firewall.filterOutput.interfaces = mkOption {
      type = types.attrsOf (types.submodule {
        options = {
          allowedTCPPorts = ports;
          allowedTCPPortRanges = ranges;
          allowedUDPPorts = ports;
          allowedUDPPortRanges = ranges;
        };
      });
      default = {};
    };
    networking.nftables.enable = mkOption {
      type = types.bool;
      default = false;
    };
    networking.nftables.tables = mkOption {
      type = types.attrsOf (types.submodule {
        options = {
          family = mkOption {type = types.enum ["ip" "ip6" "inet" "arp" "bridge" "netdev"];};
          content = mkOption {
            type = types.lines;
            default = "";
          };
        };
      });
      default = {};
    };
    boot.kernelModules = mkOption {
      type = types.listOf types.str;
      default = [];
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [];
    };
    services.postgresql.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.postgresql.ensureDatabases = mkOption {
      type = types.listOf types.str;
      default = [];
    };
    services.postgresql.ensureUsers = mkOption {
      type = types.listOf (types.submodule {
        options = {
          name = mkOption {type = types.str;};
          ensureDBOwnership = mkOption {
            type = types.bool;
            default = false;
          };
        };
      });
      default = [];
    };
  };
}
