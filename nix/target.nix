# The target system (a NixOS evaluation) for one disk layout (`layout`: "uefi", "bios" or "both"),
# with the disk layout and boot loader the installer makes for it (nix/target-module.nix) added
# through the module system: from targetSystem (a nixosConfigurations.<name>, extended with
# extendModules), customInstaller.target.directory (a configuration.nix, through
# lib.nixosSystem) or customInstaller.target.flake (FLAKEREF#NAME). nix/mk-installer.nix
# evaluates it once per layout the image is built for.
{
  lib,
  system,
  customInstaller,
  targetSystem,
  layout,
}: let
  layoutModule = import ./target-module.nix {inherit customInstaller layout;};
  inherit (customInstaller.target) directory flake;
  # builtins.getFlake on a FLAKEREF that is not locked is refused in pure evaluation (the default
  # for flakes); builtins.currentSystem exists only in impure evaluation.
  fromFlake =
    if !(builtins ? getFlake)
    then throw "nixos-pxe: customInstaller.target.flake = \"${flake}\" needs Nix with flakes enabled; or pass targetSystem = <flake>.nixosConfigurations.<name> to lib.mkInstaller"
    else if !(builtins ? currentSystem)
    then throw "nixos-pxe: customInstaller.target.flake = \"${flake}\" cannot be read in pure evaluation: pass targetSystem = <flake>.nixosConfigurations.<name> to lib.mkInstaller (or build with --impure)"
    else let
      parts = lib.splitString "#" flake;
      source = builtins.getFlake (lib.concatStringsSep "#" (lib.init parts));
    in
      source.nixosConfigurations.${lib.last parts}.extendModules {modules = [layoutModule];};
in
  if targetSystem != null
  then targetSystem.extendModules {modules = [layoutModule];}
  else if directory != null
  then
    lib.nixosSystem {
      # A path value, so `+` keeps it a path (a string would be imported by its name only).
      modules = [(directory + "/configuration.nix") layoutModule {nixpkgs.hostPlatform = lib.mkDefault system;}];
    }
  else if flake != null
  then fromFlake
  else throw "nixos-pxe: no target system: set customInstaller.target.directory or customInstaller.target.flake, or pass targetSystem to lib.mkInstaller"
