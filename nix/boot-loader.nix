# The boot loaders: bootx64.efi and grub.cfg, as the seed's result/, and bios.0 and grub-bios.cfg
# for legacy BIOS PXE. nixpkgs' grub2_efi is grub2.override { efiSupport = true; }
# (pkgs/top-level/all-packages.nix); it installs its modules to lib/grub/x86_64-efi and
# grub-mkimage to bin (pkgs/tools/misc/grub/default.nix, --program-prefix=). grub2 (no platform
# flag: configure's default on x86_64-linux is i386-pc, its passthru grubTarget "i386-pc") has its
# modules in lib/grub/i386-pc; grub-mkimage builds for any platform from a module directory.
{
  pkgs,
  tool,
  configJSON,
}:
pkgs.runCommand "nixos-pxe-bootloader" {nativeBuildInputs = [tool pkgs.grub2_efi];} ''
  nixos-pxe mk-bootloader --config ${configJSON} \
    --grub-lib ${pkgs.grub2_efi}/lib/grub/x86_64-efi \
    --grub-bios-lib ${pkgs.grub2}/lib/grub/i386-pc \
    --out $out
''
