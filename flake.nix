{
  description = "nixos-pxe: install NixOS hosts unattended over PXE";

  # nixpkgs only, so this flake works as an input of others (`inputs.nixos-pxe.inputs.nixpkgs.follows`).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = {
    self,
    nixpkgs,
  }: let
    inherit (nixpkgs) lib;
    # The tool and services.nixos-pxe, on x86-64 and 64-bit ARM: a boot server may be an ARM
    # machine. What the clients boot (bootx64.efi, bios.0, the kernel, the NFS root) is x86-64
    # only: lib.mkInstaller and lib.mkFleet take the clients' `system`, "x86_64-linux", whatever
    # the server runs (built on an x86-64 builder, a remote one or binfmt emulation).
    systems = ["x86_64-linux" "aarch64-linux"];
    clientSystem = "x86_64-linux";
    forEachSystem = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
    toolFor = pkgs: pkgs.callPackage ./nix/package.nix {};

    # lib.mkInstaller { nixpkgs; system; modules; targetSystem ? null; }
    #   -> { bootLoader, kernel, tarball, systemImage, serverConfigs, configJSON, kernelFragment,
    #        kernelConfigCheck, config, target }
    # The tool is built with this flake's nixpkgs (its Rust is known to be new enough) where it
    # is packaged, with the caller's nixpkgs elsewhere.
    mkInstaller = args: import ./nix/mk-installer.nix ({nixos-pxe = self.packages.${args.system}.nixos-pxe or null;} // args);
    # lib.mkFleet { nixpkgs; system; modules; hosts ? { }; }
    #   -> { bootLoader, kernel, tarball, systemImages, serverConfigs, configJSON, tftpRoot,
    #        nfsRoot, kernelFragment, kernelConfigCheck, config, targets, systemsByLayout, tool }
    # modules set fleet.hosts.<name> (MACs, generation, target.directory/.flake, customInstaller
    # overrides) beside nfsroot.*, customInstaller.*, bootServer.*; hosts.<name> = a
    # nixosConfigurations entry is that host's system instead of its target.*.
    mkFleet = args: import ./nix/mk-fleet.nix ({nixos-pxe = self.packages.${args.system}.nixos-pxe or null;} // args);

    system = clientSystem;
    example = mkInstaller {
      inherit nixpkgs system;
      modules = [./examples/seed/installer.nix];
    };
    vmInstaller = mkInstaller {
      inherit nixpkgs system;
      modules = [./checks/vm-installer.nix];
    };
    # The VM fleet check's fleet: alpha's system a nixosConfigurations entry, gamma the same
    # system, beta's from a directory (checks/vm-fleet/installer.nix).
    vmFleet = mkFleet {
      inherit nixpkgs system;
      modules = [./checks/vm-fleet/installer.nix];
      hosts = let
        alpha = nixpkgs.lib.nixosSystem {
          inherit system;
          modules = [./checks/vm-fleet/alpha.nix];
        };
      in {
        inherit alpha;
        gamma = alpha;
      };
    };
  in {
    lib = {inherit mkInstaller mkFleet;};

    # The options (nfsroot.*, customInstaller.*, bootServer.*) in a NixOS system: their checks
    # are NixOS assertions, their JSON form is config.system.build.nixosPxeConfig.
    nixosModules.default = ./nix/nixos-module.nix;
    # services.nixos-pxe: `nixos-pxe serve` for a fleet from lib.mkFleet, as a hardened unit.
    # Its package is this flake's, built for the server's own system (an ARM server runs an ARM
    # serve for x86-64 clients), as lanzaboote's module takes its tool; a server of another
    # system falls back to the tool the fleet was made with.
    nixosModules.server = {
      config,
      lib,
      pkgs,
      ...
    }: {
      imports = [./nix/server-module.nix];
      services.nixos-pxe.package = lib.mkDefault (self.packages.${pkgs.stdenv.hostPlatform.system}.nixos-pxe or config.services.nixos-pxe.fleet.tool);
    };

    # `nix build .#bootLoader` etc. build the seed's example (examples/seed/installer.nix), for
    # x86-64 clients.
    packages = forEachSystem (system: pkgs: let
      nixos-pxe = toolFor pkgs;
    in
      {
        inherit nixos-pxe;
        default = nixos-pxe;
      }
      // lib.optionalAttrs (system == clientSystem) {inherit (example) bootLoader kernel tarball systemImage serverConfigs;});

    # `nix fmt`: nix-format (nix/formatter.nix: alejandra 3.1.0's style, pinned by the crate's
    # lock file) on the files named, or every Nix file below the current directory.
    formatter = forEachSystem (_: pkgs: pkgs.callPackage ./nix/formatter.nix {});

    checks = forEachSystem (system: pkgs: let
      nixos-pxe = self.packages.${system}.nixos-pxe;
    in
      {
        # The library's unit tests and tests/module_matches_schema.rs run in the checkPhase.
        inherit nixos-pxe;
        # buildRustPackage's hooks vendor the crates and configure cargo in the earlier phases;
        # only the build is replaced by clippy, as .ci/run runs it.
        clippy = nixos-pxe.overrideAttrs (old: {
          pname = "nixos-pxe-clippy";
          nativeBuildInputs = old.nativeBuildInputs ++ [pkgs.clippy];
          buildPhase = "cargo clippy --all-targets --offline -- -D warnings";
          installPhase = "touch $out";
          doCheck = false;
        });
        # Every Nix file of the source in the style `nix fmt` writes (nix/formatting.nix).
        formatting = pkgs.callPackage ./nix/formatting.nix {
          formatter = self.formatter.${system};
          src = self;
        };
      }
      // lib.optionalAttrs (system == clientSystem) {
        # The example's kernel .config: defconfig, the NFS-root fragment, olddefconfig, and the
        # check that every symbol the fragment wants built in is =y (nix/kernel.nix; the
        # kernel's configuration, not its build).
        kernel-config = example.kernelConfigCheck;
        pxe-install = import ./checks/pxe-install.nix {
          inherit pkgs;
          installer = vmInstaller;
        };
        # Two clients of a fleet install at once from services.nixos-pxe and report back.
        pxe-fleet = import ./checks/pxe-fleet.nix {
          inherit pkgs;
          fleet = vmFleet;
          serverModule = self.nixosModules.server;
        };
      });

    # cargo test's programs: GRUB, the DHCP/TFTP/NFS servers, QEMU with OVMF, Nix for parsing
    # (on x86-64: the QEMU tests boot x86-64 clients).
    devShells.${clientSystem}.default = nixpkgs.legacyPackages.${clientSystem}.mkShell {
      packages = with nixpkgs.legacyPackages.${clientSystem}; [
        cargo
        rustc
        clippy
        rustfmt
        grub2_efi
        dnsmasq
        kea
        atftp
        qemu
        OVMF
        dosfstools
        e2fsprogs
        util-linux
        zstd
        nix
      ];
    };
  };
}
