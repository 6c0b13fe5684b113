# beta's system, from fleet.hosts.beta.target.directory.
{
  imports = [../guest.nix];
  networking.hostName = "beta";
}
