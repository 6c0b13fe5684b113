# The seed's example with a static network for the installed system: the end-to-end test's
# second configuration. The installer writes the lease it got as a static configuration of enp0s2.
{
  imports = [../../examples/seed/installer.nix];
  customInstaller.networking.useDHCP = false;
  customInstaller.networking.staticInterfaceFromDHCP = "enp0s2";
}
