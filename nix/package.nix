# The nixos-pxe tool. Its source keeps templates/ (compiled in with include_str!) and the files the
# unit tests read; only the library's unit tests run here, the rest need root and real servers.
{ lib, rustPlatform }:
rustPlatform.buildRustPackage {
  pname = "nixos-pxe";
  version = (lib.importTOML ../Cargo.toml).package.version;
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../clippy.toml
      ../src
      ../templates
      ../tests
      ../examples
      ../nix/module.nix
      ../README.md
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;
  cargoTestFlags = [ "--lib" ];
  meta = {
    description = "Unattended PXE installation of NixOS hosts";
    mainProgram = "nixos-pxe";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
  };
}
