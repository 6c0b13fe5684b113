# Secure Boot mode's unsigned parts (bootServer.secureBoot), laid out as `nixos-pxe sign
# --unsigned DIR` takes them (src/secure_boot/sign.rs); the boot server signs them where its key
# is (services.nixos-pxe's nixos-pxe-sign.service, or `nixos-pxe sign` by hand). Nothing here is
# signed and nothing here is secret:
#   kernel            the installer's kernel (kernel.nix; the fragment has BLK_DEV_INITRD in this mode)
#   initrd            the installer's initrd (pack --format newc, zstd): the tool's closure, /init
#                     linked to the tool, nixos-pxe/config.json; sign appends the manifest
#   tools.tar.zst     the installer's programs (installer-tools.nix) and their closure, without the
#                     paths the initrd already has; nixos-pxe/tools links to them, as in the NFS root
#   <image>           each system image, as the NFS root names it (systems/<hash>.tar.zst, or
#                     system.tar.zst for one installer)
#   <image stem>.efi  beside it, that system's unified kernel image, unsigned: NixOS's
#                     config.system.build.uki (nixos/modules/system/boot/uki.nix: systemd-stub,
#                     the system's kernel, its initrd and `init=<toplevel>/init` and its kernel
#                     parameters), $out/<system.boot.loader.ukiFile>
#   linuxx64.efi.stub systemd's EFI stub for the clients (x86-64), as NixOS's uki.nix takes it
#                     (${pkgs.systemd}/lib/systemd/boot/efi/linux<efiArch>.efi.stub): sign --stub
# Links into the store, not copies: sign follows them and copies what it serves.
# images: the image's path below the parts (as config.json names it) -> { image; system; }, the
# image file and the evaluated NixOS system whose UKI boots it.
{
  lib,
  pkgs,
  tool,
  configJSON,
  kernel,
  writableLayer,
  images,
}: let
  tools = import ./installer-tools.nix {inherit lib pkgs tool writableLayer;};
  initrdClosure = pkgs.closureInfo {rootPaths = [tool];};
  toolsClosure = pkgs.closureInfo {rootPaths = [tools];};
  ukiOf = system: "${system.config.system.build.uki}/${system.config.system.boot.loader.ukiFile}";
  stemOf = name: lib.removeSuffix ".tar" (lib.removeSuffix ".zst" (lib.removeSuffix ".gz" (lib.removeSuffix ".xz" name)));
in
  pkgs.runCommand "nixos-pxe-secure-boot-parts" {
    nativeBuildInputs = [tool];
    passthru = {inherit tools;};
  } ''
    mkdir -p $out/systems
    ln -s ${kernel}/bzImage $out/kernel
    ln -s ${pkgs.systemd}/lib/systemd/boot/efi/linuxx64.efi.stub $out/linuxx64.efi.stub
    nixos-pxe pack --format newc --compression zstd --out $out/initrd \
      --store-paths ${initrdClosure}/store-paths \
      --file nixos-pxe/config.json=${configJSON} \
      --symlink init=${tool}/bin/nixos-pxe \
      --dir proc --dir sys --dir dev --dir tmp --dir run
    # The paths the initrd holds are not unpacked over again (the running tool among them).
    sort ${initrdClosure}/store-paths > in-initrd
    sort ${toolsClosure}/store-paths | comm -23 - in-initrd > tools-paths
    nixos-pxe pack --compression zstd --out $out/tools.tar.zst \
      --store-paths tools-paths \
      --symlink nixos-pxe/tools=${tools}
    ${lib.concatStrings (lib.mapAttrsToList (name: part: ''
        mkdir -p "$(dirname $out/${name})"
        ln -s ${part.image} $out/${name}
        ln -s ${ukiOf part.system} $out/${stemOf name}.efi
      '')
      images)}
  ''
