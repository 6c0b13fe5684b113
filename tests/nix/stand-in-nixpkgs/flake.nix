# The stand-in nixpkgs (tests/flake.rs): the nixpkgs interfaces the project's Nix layer uses
# (interfaces.nix, the one list), built with Debian's programs, and nixpkgs' real lib.
# Both inputs are set by the test with --override-input:
#   lib      nixpkgs' lib/ (the nixpkgs.lib mirror; $NIXPKGS_LIB, .ci/run: ../shared/nixpkgs-lib)
#   machine  what this test run provides: nixos-pxe (the binary cargo built) and facts.json
#            ({ rustcVersion, linuxSource = { tarball, version } })
{
  description = "stand-in nixpkgs for nixos-pxe's tests (not nixpkgs)";

  inputs.lib = {
    url = "path:/nonexistent/set-by-tests-flake-rs";
    flake = false;
  };
  inputs.machine = {
    url = "path:/nonexistent/set-by-tests-flake-rs";
    flake = false;
  };

  outputs = {
    self,
    lib,
    machine,
  }: let
    interfacesFor = system:
      import ./interfaces.nix {
        lib = import (lib + "/lib");
        inherit system machine;
        # As nixos/lib/eval-config.nix passes it.
        modulesPath = "${self}/nixos/modules";
      };
    interfaces = interfacesFor "x86_64-linux";
  in {
    inherit (interfaces) lib;
    # aarch64-linux evaluates (the flake's tool and checks for an ARM boot server); its
    # derivations cannot be built on this x86-64 machine, and their Debian programs are x86-64.
    legacyPackages.x86_64-linux = interfaces.pkgs;
    legacyPackages.aarch64-linux = (interfacesFor "aarch64-linux").pkgs;
    standIn.interfaces = interfaces.list;
  };
}
