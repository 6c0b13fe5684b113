{
  description = "nixos-pxe: install NixOS hosts unattended over PXE";

  # nixpkgs only, so this flake works as an input of others (`inputs.nixos-pxe.inputs.nixpkgs.follows`).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      nixos-pxe = pkgs.callPackage ./nix/package.nix { };

      # lib.mkInstaller { nixpkgs; system; modules; targetSystem ? null; }
      #   -> { bootLoader, kernel, tarball, config, systemImage, serverConfigs, configJSON, target }
      # The tool is built with this flake's nixpkgs (its Rust is known to be new enough) where it
      # is packaged, with the caller's nixpkgs elsewhere.
      mkInstaller = args: import ./nix/mk-installer.nix ({ nixos-pxe = self.packages.${args.system}.nixos-pxe or null; } // args);

      example = mkInstaller { inherit nixpkgs system; modules = [ ./examples/seed/installer.nix ]; };
      vmInstaller = mkInstaller { inherit nixpkgs system; modules = [ ./checks/vm-installer.nix ]; };
    in
    {
      lib = { inherit mkInstaller; };

      # The options (nfsroot.*, customInstaller.*, bootServer.*) and their JSON form,
      # config.system.build.nixosPxeConfig.
      nixosModules.default = ./nix/module.nix;

      # `nix build .#bootLoader` etc. build the seed's example (examples/seed/installer.nix).
      packages.${system} = {
        inherit nixos-pxe;
        default = nixos-pxe;
        inherit (example) bootLoader kernel tarball systemImage serverConfigs;
      };

      checks.${system} = {
        # The library's unit tests and tests/module_matches_schema.rs run in the checkPhase.
        inherit nixos-pxe;
        # buildRustPackage's hooks vendor the crates and configure cargo in the earlier phases;
        # only the build is replaced by clippy, as .ci/run runs it.
        clippy = nixos-pxe.overrideAttrs (old: {
          pname = "nixos-pxe-clippy";
          nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
          buildPhase = "cargo clippy --all-targets --offline -- -D warnings";
          installPhase = "touch $out";
          doCheck = false;
        });
        # The installer kernel really has what an NFS root needs built in (the kernel's
        # passthru.configfile is its .config, pkgs/os-specific/linux/kernel/manual-config.nix).
        kernel-config = pkgs.runCommand "nixos-pxe-kernel-config-check" { } ''
          for symbol in IP_PNP IP_PNP_DHCP NFS_FS NFS_V3 ROOT_NFS OVERLAY_FS DEVTMPFS_MOUNT EXT4_FS VFAT_FS NLS_CODEPAGE_437 EFIVAR_FS VIRTIO_NET VIRTIO_BLK EFI_STUB; do
            grep -qx "CONFIG_$symbol=y" ${example.kernel.kernelPackage.configfile} || { echo "CONFIG_$symbol is not built in" >&2; exit 1; }
          done
          touch $out
        '';
        pxe-install = import ./checks/pxe-install.nix { inherit pkgs; installer = vmInstaller; };
      };

      # cargo test's programs: GRUB, the DHCP/TFTP/NFS servers, QEMU with OVMF, Nix for parsing.
      devShells.${system}.default = pkgs.mkShell {
        packages = with pkgs; [
          cargo rustc clippy rustfmt
          grub2_efi dnsmasq kea atftp qemu OVMF
          dosfstools e2fsprogs util-linux zstd nix
        ];
      };
    };
}
