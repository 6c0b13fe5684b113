# The nixos-pxe tool (rustPlatform.buildRustPackage with cargoLock.lockFile, so no vendor hash).
# Its source keeps templates/ (compiled in with include_str!) and nix/module.nix; the check runs
# the library's unit tests and the module-against-schema test. The other integration tests need
# root, namespaces, QEMU or the real DHCP servers, which a build sandbox does not have.
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
      ../benches
      ../examples
      ../nix/module.nix
      ../README.md
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;
  cargoTestFlags = [ "--lib" "--test" "module_matches_schema" ];
  meta = {
    description = "Unattended PXE installation of NixOS hosts";
    mainProgram = "nixos-pxe";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
  };
}
