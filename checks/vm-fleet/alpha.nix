# alpha's (and gamma's) system, a nixosConfigurations entry in flake.nix.
{
  imports = [./guest.nix];
  networking.hostName = "alpha";
}
