# Stand-in for nixpkgs' nixos/modules/testing/test-instrumentation.nix (the test driver's backdoor).
{
  systemd.services.backdoor.description = "stand-in: the NixOS test driver's backdoor shell";
}
