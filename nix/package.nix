# The nixos-pxe tool (rustPlatform.buildRustPackage with cargoLock.lockFile, so no vendor hash).
# Its source keeps templates/ (compiled in with include_str!) and nix/module.nix; the check runs
# the library's unit tests and the module-against-schema test. The other integration tests need
# root, namespaces, QEMU or the real DHCP servers, which a build sandbox does not have.
#
# Supported nixpkgs: the tool needs the Rust of Cargo.toml's rust-version (1.88: edition 2024,
# let chains), which NixOS 25.11 is the first release to have (25.05 has rustc 1.86). An older nixpkgs, for
# example through `inputs.nixos-pxe.inputs.nixpkgs.follows`, gets this message instead of a cargo
# error deep in the build.
{
  lib,
  rustPlatform,
  rustc,
}: let
  manifest = (lib.importTOML ../Cargo.toml).package;
  minimum = manifest.rust-version;
in
  if lib.versionOlder rustc.version minimum
  then
    throw ''
      nixos-pxe needs Rust ${minimum} or newer (Cargo.toml: rust-version = "${minimum}", edition ${manifest.edition}), but the nixpkgs it is built with has rustc ${rustc.version} (nixpkgs ${lib.trivial.release}).
      Use nixpkgs from NixOS 25.11 or newer, e.g. inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
      or, if your flake sets inputs.nixos-pxe.inputs.nixpkgs.follows to an older nixpkgs, remove that line so nixos-pxe uses its own.''
  else
    rustPlatform.buildRustPackage {
      pname = "nixos-pxe";
      inherit (manifest) version;
      # lib.fileset needs builtins.readFileType (Nix 2.14 or newer).
      src = lib.fileset.toSource {
        root = ../.;
        fileset = lib.fileset.unions [
          ../Cargo.toml
          ../Cargo.lock
          ../clippy.toml
          ../src
          ../templates
          ../tests
          ../benches
          ../examples
          ../nix/module.nix
          ../README.md
        ];
      };
      cargoLock.lockFile = ../Cargo.lock;
      cargoTestFlags = ["--lib" "--test" "module_matches_schema"];
      meta = {
        description = "Unattended PXE installation of NixOS hosts";
        mainProgram = "nixos-pxe";
        license = lib.licenses.mit;
        platforms = lib.platforms.linux;
      };
    }
