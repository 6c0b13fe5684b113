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
      #   -> { bootLoader, kernel, tarball, systemImage, serverConfigs, configJSON, kernelFragment,
      #        kernelConfigCheck, config, target }
      # The tool is built with this flake's nixpkgs (its Rust is known to be new enough) where it
      # is packaged, with the caller's nixpkgs elsewhere.
      mkInstaller = args: import ./nix/mk-installer.nix ({ nixos-pxe = self.packages.${args.system}.nixos-pxe or null; } // args);
      # lib.mkFleet { nixpkgs; system; modules; hosts ? { }; }
      #   -> { bootLoader, kernel, tarball, systemImages, serverConfigs, configJSON, tftpRoot,
      #        nfsRoot, kernelFragment, kernelConfigCheck, config, targets, systemsByLayout, tool }
      # modules set fleet.hosts.<name> (MACs, generation, target.directory/.flake, customInstaller
      # overrides) beside nfsroot.*, customInstaller.*, bootServer.*; hosts.<name> = a
      # nixosConfigurations entry is that host's system instead of its target.*.
      mkFleet = args: import ./nix/mk-fleet.nix ({ nixos-pxe = self.packages.${args.system}.nixos-pxe or null; } // args);

      example = mkInstaller { inherit nixpkgs system; modules = [ ./examples/seed/installer.nix ]; };
      vmInstaller = mkInstaller { inherit nixpkgs system; modules = [ ./checks/vm-installer.nix ]; };
      # The VM fleet check's fleet: alpha's system a nixosConfigurations entry, gamma the same
      # system, beta's from a directory (checks/vm-fleet/installer.nix).
      vmFleet = mkFleet {
        inherit nixpkgs system;
        modules = [ ./checks/vm-fleet/installer.nix ];
        hosts = let alpha = nixpkgs.lib.nixosSystem { inherit system; modules = [ ./checks/vm-fleet/alpha.nix ]; }; in {
          inherit alpha;
          gamma = alpha;
        };
      };
    in
    {
      lib = { inherit mkInstaller mkFleet; };

      # The options (nfsroot.*, customInstaller.*, bootServer.*) in a NixOS system: their checks
      # are NixOS assertions, their JSON form is config.system.build.nixosPxeConfig.
      nixosModules.default = ./nix/nixos-module.nix;
      # services.nixos-pxe: `nixos-pxe serve` for a fleet from lib.mkFleet, as a hardened unit.
      nixosModules.server = ./nix/server-module.nix;

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
        # Every symbol the kernel fragment wants built in is =y in the installer kernel's .config
        # (nix/kernel.nix; it needs the kernel's configuration, not its build).
        kernel-config = example.kernelConfigCheck;
        pxe-install = import ./checks/pxe-install.nix { inherit pkgs; installer = vmInstaller; };
        # Two clients of a fleet install at once from services.nixos-pxe and report back.
        pxe-fleet = import ./checks/pxe-fleet.nix { inherit pkgs; fleet = vmFleet; serverModule = self.nixosModules.server; };
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
