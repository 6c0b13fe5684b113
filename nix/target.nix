# The target system (a NixOS evaluation), with the disk layout the installer makes
# (nix/target-module.nix) added through the module system: from targetSystem (a
# nixosConfigurations.<name>, extended with extendModules), customInstaller.target.directory (a
# configuration.nix, through lib.nixosSystem) or customInstaller.target.flake (FLAKEREF#NAME).
{ lib, system, customInstaller, targetSystem }:
let
  layout = import ./target-module.nix customInstaller;
  inherit (customInstaller.target) directory flake;
  # builtins.getFlake on a FLAKEREF that is not locked is refused in pure evaluation (the default
  # for flakes); builtins.currentSystem exists only in impure evaluation.
  fromFlake =
    if !(builtins ? getFlake) then throw "nixos-pxe: customInstaller.target.flake = \"${flake}\" needs Nix with flakes enabled; or pass targetSystem = <flake>.nixosConfigurations.<name> to lib.mkInstaller"
    else if !(builtins ? currentSystem) then throw "nixos-pxe: customInstaller.target.flake = \"${flake}\" cannot be read in pure evaluation: pass targetSystem = <flake>.nixosConfigurations.<name> to lib.mkInstaller (or build with --impure)"
    else
      let
        parts = lib.splitString "#" flake;
        source = builtins.getFlake (lib.concatStringsSep "#" (lib.init parts));
      in
      source.nixosConfigurations.${lib.last parts}.extendModules { modules = [ layout ]; };
in
if targetSystem != null then targetSystem.extendModules { modules = [ layout ]; }
else if directory != null then
  lib.nixosSystem {
    # A path value, so `+` keeps it a path (a string would be imported by its name only).
    modules = [ (directory + "/configuration.nix") layout { nixpkgs.hostPlatform = lib.mkDefault system; } ];
  }
else if flake != null then fromFlake
else throw "nixos-pxe: no target system: set customInstaller.target.directory or customInstaller.target.flake, or pass targetSystem to lib.mkInstaller"
