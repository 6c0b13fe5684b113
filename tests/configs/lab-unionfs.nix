# The seed's example with the seed's writable layer: init makes the read-only NFS root writable
# with unionfs-fuse instead of overlayfs. The end-to-end test's third configuration.
{
  imports = [../../examples/seed/installer.nix];
  nfsroot.writableLayer = "unionfs-fuse";
}
