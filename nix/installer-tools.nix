# The installer's programs, one tree of links: what init and the installer run (src/install:
# sfdisk, mkswap, mkfs.vfat, mkfs.ext4, nix-store, nix-env, nixos-generate-config, nixos-enter; sh
# for the rescue shell). init puts /nixos-pxe/tools/{bin,sbin} first on PATH. The NFS root links
# it at nixos-pxe/tools (tarball.nix); Secure Boot mode fetches it as tools.tar.zst
# (secure-boot-parts.nix). buildEnv: pkgs/build-support/buildenv/default.nix.
{
  lib,
  pkgs,
  tool,
  writableLayer,
}:
pkgs.buildEnv {
  name = "nixos-pxe-tools";
  paths =
    [
      tool
      pkgs.bashInteractive
      pkgs.coreutils
      pkgs.util-linux
      pkgs.e2fsprogs
      pkgs.dosfstools
      pkgs.iproute2
      pkgs.kmod
      pkgs.nix
      pkgs.nixos-install-tools
      pkgs.zstd
    ]
    ++ lib.optional (writableLayer == "unionfs-fuse") pkgs.unionfs-fuse;
  pathsToLink = ["/bin" "/sbin"];
}
