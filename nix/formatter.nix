# The flake's Nix formatter, `nix fmt` and checks.<system>.formatting: nix-format/, crates.io's
# alejandra 3.1.0 behind a small command line, pinned by its own Cargo.lock. Not nixpkgs'
# alejandra: nixpkgs has 4.0.0, whose style differs from 3.1.0's (nix-format/Cargo.toml), and
# crates.io has only 3.1.0's library, which the tests build where nixpkgs cannot be fetched; with
# the crate here, `nix fmt`, the check and the tests hold every file to one style.
{
  lib,
  rustPlatform,
}:
rustPlatform.buildRustPackage {
  pname = "nix-format";
  inherit ((lib.importTOML ../nix-format/Cargo.toml).package) version;
  # The crate's files, without a target/ a local `cargo build` left there.
  src = lib.cleanSourceWith {
    src = ../nix-format;
    filter = path: type: !(type == "directory" && baseNameOf path == "target");
  };
  cargoLock.lockFile = ../nix-format/Cargo.lock;
  meta = {
    description = "Formats Nix files in alejandra 3.1.0's style, or checks that they are";
    mainProgram = "nix-format";
    license = lib.licenses.mit;
  };
}
