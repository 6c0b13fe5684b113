# The NFS root tarball, laid out as the README's "The NFS root's layout" says: /init (the tool),
# /nixos-pxe/config.json, /nixos-pxe/system.tar.*, /nixos-pxe/tools/{bin,sbin} and their closure
# in /nix/store, and empty mount points. Unpack it on the boot server into bootServer.nfsExport:
# tar -xf nfsroot.tar -C <nfsExport>.
# init: nfsroot.init, the path the kernel runs (init=); its file name is `init` (src/schema.rs checks
# it), which is how the tool knows to be init (src/start.rs).
# images: the system images, by their path below /nixos-pxe/: the single installer's one
# systemImage (system.tar.*), or a fleet's (lib.mkFleet: systems/<hash>.tar.*, each once).
{
  lib,
  pkgs,
  tool,
  configJSON,
  writableLayer,
  init,
  systemImage ? null,
  images ? {${systemImage.imageName} = "${systemImage}/${systemImage.imageName}";},
}: let
  tools = import ./installer-tools.nix {inherit lib pkgs tool writableLayer;};
  closure = pkgs.closureInfo {rootPaths = [tools];};
in
  pkgs.runCommand "nixos-pxe-nfsroot" {
    nativeBuildInputs = [tool];
    passthru = {inherit tools;};
  } ''
    mkdir $out
    nixos-pxe pack --out $out/nfsroot.tar --compression none \
      --store-paths ${closure}/store-paths \
      --file nixos-pxe/config.json=${configJSON} \
      ${lib.concatStrings (lib.mapAttrsToList (name: file: "--file nixos-pxe/${name}=${file} ") images)}\
      --symlink ${lib.removePrefix "/" init}=${tool}/bin/nixos-pxe \
      --symlink nixos-pxe/tools=${tools} \
      --dir dev --dir proc --dir sys --dir run --dir tmp --dir mnt --dir etc
  ''
