# The flake's nixosModules.default: the installer's options inside a NixOS system (for a
# configuration that describes the installer beside the host it runs on). The module's checks
# become NixOS assertions there, and its JSON is config.system.build.nixosPxeConfig
# (system.build takes any attribute, nixos/modules/system/build.nix).
{config, ...}: {
  imports = [./module.nix];
  assertions = config.nixosPxe.checks;
  system.build.nixosPxeConfig = config.nixosPxe.configJSON;
}
