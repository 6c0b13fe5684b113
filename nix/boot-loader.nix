# The boot loader: bootx64.efi and grub.cfg, as the seed's result/. nixpkgs' grub2_efi is
# grub2.override { efiSupport = true; } (pkgs/top-level/all-packages.nix); it installs its modules
# to lib/grub/x86_64-efi and grub-mkimage to bin (pkgs/tools/misc/grub/default.nix, --program-prefix=).
{ pkgs, tool, configJSON }:
pkgs.runCommand "nixos-pxe-bootloader" { nativeBuildInputs = [ tool pkgs.grub2_efi ]; } ''
  nixos-pxe mk-bootloader --config ${configJSON} --grub-lib ${pkgs.grub2_efi}/lib/grub/x86_64-efi --out $out
''
