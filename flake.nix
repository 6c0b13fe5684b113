{
  description = "nixos-pxe: install NixOS hosts unattended over PXE";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      nixos-pxe = pkgs.callPackage ./nix/package.nix { };

      # lib.mkInstaller { nixpkgs; system; modules; targetSystem ? null; }
      #   -> { bootLoader, kernel, tarball, systemImage, serverConfigs, configJSON, config }
      mkInstaller = args: import ./nix/mk-installer.nix ({ nixos-pxe = self.packages.${args.system}.nixos-pxe or null; } // args);

      example = mkInstaller { inherit nixpkgs system; modules = [ ./examples/seed/installer.nix ]; };
      vmInstaller = mkInstaller { inherit nixpkgs system; modules = [ ./checks/vm-installer.nix ]; };
    in
    {
      lib = { inherit mkInstaller; };

      nixosModules.default = ./nix/module.nix;

      packages.${system} = {
        inherit nixos-pxe;
        default = nixos-pxe;
        inherit (example) bootLoader kernel tarball serverConfigs;
      };

      checks.${system} = {
        # The unit tests run in the package's checkPhase.
        inherit nixos-pxe;
        clippy = nixos-pxe.overrideAttrs (old: {
          pname = "nixos-pxe-clippy";
          nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
          buildPhase = "cargo clippy --all-targets --offline -- -D warnings";
          installPhase = "touch $out";
          doCheck = false;
        });
        # The installer kernel really has what an NFS root needs built in.
        kernel-config = pkgs.runCommand "nixos-pxe-kernel-config-check" { } ''
          for symbol in IP_PNP IP_PNP_DHCP NFS_FS NFS_V3 ROOT_NFS OVERLAY_FS DEVTMPFS_MOUNT EXT4_FS VFAT_FS EFI_STUB; do
            grep -qx "CONFIG_$symbol=y" ${example.kernel.kernelPackage.configfile} || { echo "CONFIG_$symbol is not built in" >&2; exit 1; }
          done
          touch $out
        '';
        pxe-install = import ./checks/pxe-install.nix { inherit pkgs; installer = vmInstaller; };
      };

      devShells.${system}.default = pkgs.mkShell {
        packages = [ pkgs.cargo pkgs.rustc pkgs.clippy pkgs.rustfmt pkgs.grub2_efi pkgs.dnsmasq pkgs.kea pkgs.qemu pkgs.nix ];
      };
    };
}
