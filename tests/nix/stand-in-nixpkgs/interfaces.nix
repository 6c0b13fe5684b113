# The stand-in nixpkgs' ONE list: every nixpkgs interface the project's Nix layer (flake.nix,
# nix/*.nix, checks/*.nix) uses, each with the nixpkgs file in which its real interface was read
# (NixOS/nixpkgs at the commit given) and the stand-in that provides it here. The stand-ins build
# with Debian's programs and the project's own binary; see README.md ("What runs where").
#
# Nix has no catch-all for attribute selection, so anything not in this list fails as Nix's own
# `attribute 'X' missing` naming it, with the file and line that asked. tests/flake.rs checks the
# other direction: every pkgs.* entry here is used by the flake's outputs (each is traced when
# forced), so the list holds exactly what the layer uses.
{
  lib,
  system,
  machine,
  modulesPath,
}: let
  facts = builtins.fromJSON (builtins.readFile (machine + "/facts.json"));
  stdenv = import ./stdenv.nix {inherit system;};
  support = import ./build-support.nix {inherit lib stdenv machine;};
  debian = import ./debian.nix {inherit stdenv;};
  # The stand-ins' own helpers, untraced: what the stand-in uses internally is not a use by the
  # project's layer.
  impl = {
    inherit (stdenv) runCommand;
    inherit (support) writeText;
  };
  kernelStandIn = import ./kernel.nix {inherit lib stdenv facts;};

  # read: the file was read at that commit and the interface used is as the layer uses it.
  # found: the file defining the attribute exists at that commit (a package whose bin/ or sbin/
  # has the programs named; the stand-in links Debian's).
  read = file: commit: value: {
    inherit file commit value;
    checked = "read";
  };
  found = file: commit: value: {
    inherit file commit value;
    checked = "found";
  };

  pkgsEntries = {
    # nixpkgs' lib, as pkgs.lib (the flake's legacyPackages set it, with its version info).
    lib =
      read "flake.nix (legacyPackages: lib = prev.lib.extend ...)" "025640dcb7270faa6fe80089fda831b89f3824a9"
      lib;
    callPackage =
      read "lib/customisation.nix (callPackageWith; the real lib of the nixpkgs.lib mirror)" "de42d44212d207476489bce163375d8306a26d59"
      (lib.callPackageWith pkgs);
    runCommand =
      read "pkgs/build-support/trivial-builders/default.nix" "00ee9b64aafebe333c3e33ffb093734092158728"
      stdenv.runCommand;
    writeText =
      read "pkgs/build-support/trivial-builders/default.nix" "00ee9b64aafebe333c3e33ffb093734092158728"
      support.writeText;
    buildEnv =
      read "pkgs/build-support/buildenv/default.nix" "010375ac6ad4d6c710a60a88661a6dd7d04e9fe1"
      support.buildEnv;
    closureInfo =
      read "pkgs/build-support/closure-info.nix" "06d7e54d62cfa303057ad65d86311cdce6f8c9bf"
      support.closureInfo;
    mkShell =
      read "pkgs/build-support/mkshell/default.nix" "07c91341fd6e5f2ca8d0a6d62e6d0e1ecc94283d"
      support.mkShell;
    rustPlatform =
      read "pkgs/build-support/rust/build-rust-package/default.nix" "00ed845c1e2614deeb230f4d6197baf190df7d5d"
      support.rustPlatform;
    # rustc.version is what nix/package.nix compares with Cargo.toml's rust-version; the stand-in's
    # is facts.json's (the rustc that built the binary, or an old one to test the message).
    rustc =
      found "pkgs/development/compilers/rust/default.nix (rustc.version), 1_88.nix" "2b9c7b4268709fef37158314da3a64295c4761c5, 2c718db15e5b1a84238a414c225a18a5828e5b78"
      (debian.notBuildableHere "rustc" "rustup's toolchain is outside the build sandbox" // {version = facts.rustcVersion;});
    cargo =
      found "pkgs/development/compilers/rust/default.nix" "2b9c7b4268709fef37158314da3a64295c4761c5"
      (debian.notBuildableHere "cargo" "rustup's toolchain is outside the build sandbox");
    clippy =
      found "pkgs/development/compilers/rust/default.nix" "2b9c7b4268709fef37158314da3a64295c4761c5"
      (debian.notBuildableHere "clippy" "rustup's toolchain is outside the build sandbox");
    rustfmt =
      found "pkgs/development/compilers/rust/default.nix" "2b9c7b4268709fef37158314da3a64295c4761c5"
      (debian.notBuildableHere "rustfmt" "rustup's toolchain is outside the build sandbox");
    # grub2.override { efiSupport = true; } (pkgs/top-level/all-packages.nix); modules in
    # $out/lib/grub/x86_64-efi, grub-mkimage in $out/bin (--program-prefix=).
    grub2_efi =
      read "pkgs/tools/misc/grub/default.nix" "020a9ba1024adc096ba9db4c59cb3361a812be2c"
      (stdenv.runCommand "grub-efi-from-debian" {} ''
        mkdir -p "$out/lib/grub" "$out/bin"
        cp -r /usr/lib/grub/x86_64-efi "$out/lib/grub/x86_64-efi"
        ln -s /usr/bin/grub-mkimage "$out/bin/grub-mkimage"
      '');
    # grub2: no platform flag, so configure's default for x86_64-linux, i386-pc (passthru
    # grubTarget = "i386-pc"); modules in $out/lib/grub/i386-pc.
    grub2 =
      read "pkgs/tools/misc/grub/default.nix" "020a9ba1024adc096ba9db4c59cb3361a812be2c"
      (stdenv.runCommand "grub-pc-from-debian" {} ''
        mkdir -p "$out/lib/grub"
        cp -r /usr/lib/grub/i386-pc "$out/lib/grub/i386-pc"
      '');
    # stdenv.mkDerivation with src (unpacked: a tarball, or a directory copied), postPatch with
    # patchShebangs, buildPhase and installPhase (no configure script: configurePhase does
    # nothing); stdenv.hostPlatform.linuxArch (lib/systems/default.nix); stdenv.cc.targetPrefix
    # (empty for a native compiler), as generic.nix's configfile derivation uses them.
    stdenv =
      found "pkgs/stdenv/generic/setup.sh, pkgs/stdenv/generic/make-derivation.nix, pkgs/os-specific/linux/kernel/generic.nix (read: its configfile derivation)" "183939da54831b11f389d9863a0e5b41aaf1ddc5, 8c2682d3dfa11db3a299590c156aa7ce9888b6ab, 00e6b22b508f93e219efee2dda4397027ccaf934"
      stdenv;
    # Kconfig's parser is built with them (generic.nix's configfile derivation has both).
    bison =
      found "pkgs/development/tools/parsing/bison/default.nix" "e51058280469f12090c6be301fa2626bf373243d"
      (debian.fromDebian "bison" ["/usr/bin/bison"]);
    flex =
      found "pkgs/development/tools/parsing/flex/default.nix" "e3a5a0c93deccddddbf4324deecfd4c155d5b08c"
      (debian.fromDebian "flex" ["/usr/bin/flex"]);
    # linuxPackages.kernel's src, version, modDirVersion and commonMakeFlags: generic.nix hands
    # them to the kernel's derivation (mkDerivation's src; passthru version, modDirVersion and
    # commonMakeFlags in build.nix, the latter common-flags.nix's CC, HOSTCC, ARCH, CROSS_COMPILE).
    linuxPackages =
      read "pkgs/os-specific/linux/kernel/generic.nix, pkgs/os-specific/linux/kernel/build.nix (passthru), pkgs/os-specific/linux/kernel/common-flags.nix" "00e6b22b508f93e219efee2dda4397027ccaf934, 001ef8c47d5fb14f761694a5ba102a7379dcb311, 0fc7cb2d129033ec960e2fbc074723d4db26f089"
      {inherit (kernelStandIn) kernel;};
    # linuxManualConfig { version; src; configfile; modDirVersion; }: the .config is read at
    # evaluation time only with allowImportFromDerivation or a configfile that is a plain path
    # (config's default), so here nothing is; without `config` it builds no modules (isModular
    # reads CONFIG_MODULES from it) and installs the image as $out/bzImage (installkernel).
    # manual-config.nix before build.nix took its place: the same arguments and defaults.
    linuxManualConfig =
      read "pkgs/os-specific/linux/kernel/build.nix, pkgs/os-specific/linux/kernel/manual-config.nix, doc/packages/linux.section.md (pkgs.linuxManualConfig)" "001ef8c47d5fb14f761694a5ba102a7379dcb311, 001cd48928bfea13dfe751a682c4c2bb90967786, 020748898da5cf780061381f545e1b17dfefc0ff"
      kernelStandIn.linuxManualConfig;
    testers =
      read "pkgs/build-support/testers/default.nix (runNixOSTest)" "013635633ffe11f70df1d639f563f21c42c1f778"
      {
        runNixOSTest = import ./testers.nix {
          inherit lib impl;
          inherit (nixos) nixosSystem;
        };
      };

    # The installer's programs (nix/tarball.nix) and the VM check's and dev shell's packages.
    bashInteractive =
      found "pkgs/shells/bash/5.nix" "076e3657a438979737f0df6b8e918a3a32e6305a"
      (debian.fromDebian "bashInteractive" ["/usr/bin/bash"]);
    coreutils =
      found "pkgs/tools/misc/coreutils/default.nix" "b27cf66ee28bc9fdec9a36fb00e019d5c0b57402"
      (debian.fromDebian "coreutils" ["/usr/bin/cat" "/usr/bin/cp" "/usr/bin/ln" "/usr/bin/ls" "/usr/bin/mkdir" "/usr/bin/mv" "/usr/bin/rm" "/usr/bin/sync"]);
    util-linux =
      found "pkgs/by-name/ut/util-linux/package.nix" "6cb2b09bfa9946d3677498f31613e67999bd9323"
      (debian.fromDebian "util-linux" ["/usr/sbin/sfdisk" "/usr/sbin/mkswap" "/usr/sbin/blkid" "/usr/bin/mount" "/usr/bin/umount"]);
    e2fsprogs =
      found "pkgs/by-name/e2/e2fsprogs/package.nix" "b0ed9d8fac78fc5005ee95ebfbf7098e3973a710"
      (debian.fromDebian "e2fsprogs" ["/usr/sbin/mkfs.ext4" "/usr/sbin/e2fsck"]);
    dosfstools =
      found "pkgs/by-name/do/dosfstools/package.nix" "682c0bcc666084fc5cce2e84edc79e8661119931"
      (debian.fromDebian "dosfstools" ["/usr/sbin/mkfs.vfat" "/usr/sbin/mkfs.fat"]);
    iproute2 =
      found "pkgs/by-name/ip/iproute2/package.nix" "772864ee1e0ba7f92d9ce9f67b1f8a7ad9af1d0b"
      (debian.fromDebian "iproute2" ["/usr/bin/ip"]);
    kmod =
      found "pkgs/os-specific/linux/kmod/default.nix" "808f05808b40c9092a54cfab7799c13cdb8a5db5"
      (debian.fromDebian "kmod" ["/usr/bin/kmod" "/usr/sbin/modprobe"]);
    nix =
      found "pkgs/tools/package-management/nix/default.nix" "bfee64fa59f28b1f22acce7d50784da5c32018cc"
      (debian.fromDebian "nix" ["/usr/bin/nix" "/usr/bin/nix-store" "/usr/bin/nix-env"]);
    nixos-install-tools =
      found "pkgs/by-name/ni/nixos-install-tools/package.nix" "258b3c118d7103ef6a20433e065a805a6ade4484"
      (debian.nixosOnly "nixos-install-tools" ["nixos-generate-config" "nixos-enter" "nixos-install"]);
    zstd =
      found "pkgs/tools/compression/zstd/default.nix" "a0ceb5197a0e2e7c5a649fc4893cd77508f6b4d5"
      (debian.fromDebian "zstd" ["/usr/bin/zstd"]);
    unionfs-fuse =
      found "pkgs/by-name/un/unionfs-fuse/package.nix" "e944ac95b3cb5c7a818d2c6da220db18afcf7a33"
      (debian.fromDebian "unionfs-fuse" ["/usr/bin/unionfs"]);
    gnutar =
      found "pkgs/by-name/gn/gnutar/package.nix" "d62277a06632df4e578200c65dd3da1f0af62c6d"
      (debian.fromDebian "gnutar" ["/usr/bin/tar"]);
    # Secure Boot mode (nix/secure-boot-parts.nix, nix/server-module.nix's nixos-pxe-sign).
    # systemd's EFI stub, where uki.nix takes it: ${pkgs.systemd}/lib/systemd/boot/efi/linux<efiArch>.efi.stub.
    systemd =
      read "nixos/modules/system/boot/uki.nix (the stub's path), pkgs/os-specific/linux/systemd/default.nix (found)" "02d79c9c8bcba9020b4c93784f96e0cb15709349, 692e5858cccc04c83113bafd185e0441f723fc04"
      (stdenv.runCommand "systemd-efi-stub-from-debian" {} ''
        stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
        [ -f "$stub" ] || { echo "stand-in nixpkgs: pkgs.systemd's EFI stub is Debian's $stub, which is not installed (bash dev/install-deps.sh test)" >&2; exit 1; }
        mkdir -p "$out/lib/systemd/boot/efi"
        cp "$stub" "$out/lib/systemd/boot/efi/"
      '');
    # configure --prefix=$out: $out/bin/sbsign.
    sbsigntool =
      read "pkgs/by-name/sb/sbsigntool/package.nix" "03daab656feb70d689e0008d1d34b7fd41a9dca1"
      (debian.fromDebian "sbsigntool" ["/usr/bin/sbsign"]);
    # binutils with withAllTargets = true (objcopy reads the clients' x86-64 PE on any server);
    # one output first, out: $out/bin/objcopy.
    binutils-unwrapped-all-targets =
      read "pkgs/development/tools/misc/binutils/default.nix (withAllTargets, outputs)" "0049f3168ac6ece15eba8f5cf980f0bd92266fc5"
      (debian.fromDebian "binutils-unwrapped-all-targets" ["/usr/bin/objcopy"]);
    # outputs = [ "bin" ... ]: the package's path is its bin output, $bin/bin/openssl.
    openssl =
      read "pkgs/development/libraries/openssl/default.nix" "004b2fd7d682412872de50cc0fb812074ee792e1"
      (debian.fromDebian "openssl" ["/usr/bin/openssl"]);
    # $out/bin/dnsmasq (BINDIR=$(out)/bin), as checks/pxe-install.nix runs it.
    dnsmasq =
      read "pkgs/by-name/dn/dnsmasq/package.nix" "04e8a1744818d111e65595b1f8eb7476abccc558"
      (debian.fromDebian "dnsmasq" ["/usr/sbin/dnsmasq"]);
    kea =
      found "pkgs/by-name/ke/kea/package.nix" "359f8630b84590040ab2916d2740af02a35aaaca"
      (debian.fromDebian "kea" ["/usr/sbin/kea-dhcp4"]);
    atftp =
      found "pkgs/by-name/at/atftp/package.nix" "2faec4eca3b0717c3e754e5858e006cd14d288c1"
      (debian.fromDebian "atftp" ["/usr/bin/atftp"]);
    qemu =
      found "pkgs/applications/virtualization/qemu/default.nix" "2d382f3d981fc9e4a350badb43736c252415d27c"
      (debian.notBuildableHere "qemu" "QEMU here is a wrapper around a private copy (dev/install-qemu.sh) outside the build sandbox");
    OVMF =
      found "pkgs/applications/virtualization/OVMF/default.nix" "80f47974b7edf27f7eaa6e16f094591ff6e87b0b"
      (debian.notBuildableHere "OVMF" "the stand-in has no OVMF package layout");
  };

  # What the layer finds in pkgs: each value traced when forced, so tests/flake.rs can list what
  # the flake's outputs used.
  pkgs = lib.mapAttrs (name: entry: builtins.trace "stand-in nixpkgs: used pkgs.${name}" entry.value) pkgsEntries;

  nixos = import ./nixos.nix {inherit lib pkgs impl modulesPath;};

  # The flake's own attributes (nixpkgs' flake.nix) and the NixOS parts the layer reaches through
  # lib.nixosSystem and modulesPath.
  otherEntries = {
    "lib.nixosSystem" = read "flake.nix, nixos/lib/eval-config.nix" "025640dcb7270faa6fe80089fda831b89f3824a9, 02aa3c00c9342f2976044665b63324b7f3edc0ba" nixos.nixosSystem;
    "legacyPackages.<system>" = read "flake.nix" "025640dcb7270faa6fe80089fda831b89f3824a9" null;
    "modulesPath = <nixpkgs>/nixos/modules" = read "nixos/lib/eval-config.nix" "02aa3c00c9342f2976044665b63324b7f3edc0ba" modulesPath;
    "nixos/modules/profiles/all-hardware.nix" = found "nixos/modules/profiles/all-hardware.nix" "9504292b1e9948fb286b1b1cdbe83f66b367b64d" null;
    "nixos/modules/profiles/qemu-guest.nix" = found "nixos/modules/profiles/qemu-guest.nix" "07320dad4b1663b2163c38c6f413e7f1690d348b" null;
    "nixos/modules/testing/test-instrumentation.nix" = found "nixos/modules/testing/test-instrumentation.nix" "310134698d56f7206aa09d76ae9ac035bc136231" null;
    "option assertions (and the fileSystems `cycle` message)" = read "nixos/modules/tasks/filesystems.nix (read), nixos/modules/misc/assertions.nix (found)" "0148e16d1446003704803ecabb5a00cfea7d8568, c9634190fe4c832b63bb617a72fdd4461b3ca9da" null;
    "option fileSystems" = read "nixos/modules/tasks/filesystems.nix" "0148e16d1446003704803ecabb5a00cfea7d8568" null;
    "option swapDevices" = found "nixos/modules/config/swap.nix" "c651cb9dd3b6bdd1e1a64e082395c00e77d2f974" null;
    "option boot.loader.systemd-boot.enable" = found "nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix" "739bd2dccdc7fae6d5f8c4cdefb7072c10f58e56" null;
    "option boot.loader.efi.canTouchEfiVariables" = found "nixos/modules/system/boot/loader/efi.nix" "757cb18c55339be936aaf18aa1e8393cd549ceaf" null;
    "option boot.loader.efi.efiSysMountPoint (default /boot)" = found "nixos/modules/system/boot/loader/efi.nix" "757cb18c55339be936aaf18aa1e8393cd549ceaf" null;
    # Read at 36bd1a6d (NixOS/nixpkgs' stored copy); the same options, defaults and assertions in a
    # newer stored copy (nixfmt style, with extraGrubInstallArgs and users): enable defaults to
    # !config.boot.isContainer, device joins devices, and the assertions the stand-in repeats.
    "option boot.loader.grub.{enable,device,devices,efiSupport,efiInstallAsRemovable} and their assertions" = read "nixos/modules/system/boot/loader/grub/grub.nix" "36bd1a6dbb004e02973208d8099b681c76c2cb4a" null;
    "grub-install per device (--target=i386-pc) and into efiSysMountPoint (x86_64-efi)" = read "nixos/modules/system/boot/loader/grub/install-grub.pl" "f5271680c4a5f2657f26f87620f3e320b0f7cda6" null;
    "systemd-boot sets boot.loader.grub.enable = mkDefault false" = read "nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix" "739bd2dccdc7fae6d5f8c4cdefb7072c10f58e56" null;
    "option networking.hostName" = found "nixos/modules/tasks/network-interfaces.nix" "577cb341b4463d094b5180bd5a39c49c0b49e5f6" null;
    "option system.build (any attribute), system.build.toplevel" = read "nixos/modules/system/build.nix, nixos/modules/system/activation/top-level.nix" "14fd976016aee7e8a52f362b145a16947e111515, 01502f439c6a734621f212e450e7a6a9f35a0c5f" null;
    "option system.build.uki ($out/<ukiFile>: systemd-stub, the system's kernel, initrd and init=<toplevel>/init), system.boot.loader.ukiFile (nixos.efi by default)" = read "nixos/modules/system/boot/uki.nix" "02d79c9c8bcba9020b4c93784f96e0cb15709349" null;
    "option systemd.services.<name>.path (each package's bin/ on PATH), serviceConfig LoadCredential= and %d (the credentials directory)" = read "nixos/lib/systemd-unit-options.nix, nixos/lib/systemd-lib.nix (serviceConfig: environment.PATH = makeBinPath path)" "01f31c2ee7d045a337dff0f858c0ed61dd0f4ddb, 6f03be6bc8255385259c5652a993fbbd751e2103" null;
    # checks/pxe-install.nix's server: the rendered exports file replaces the one nfsd.nix writes.
    "option environment.etc.exports.source (nfsd.nix sets it to a file of services.nfs.server.exports)" = read "nixos/modules/services/network-filesystems/nfsd.nix" "442fecbe2fa2d7db721050578283e196fc45cdf3" null;
    # checks/pxe-install.nix's test script (its timeouts; not run here).
    "test driver: wait_for_console_text, retry, start(allow_reboot)" = read "nixos/lib/test-driver/src/test_driver/machine/__init__.py" "019697db058b6738eda0cb2cdcc9f5c014c914cb" null;

    # nix/server-module.nix (services.nixos-pxe), its stand-ins in nixos-server.nix.
    "option systemd.services.<name>.{description,wantedBy,wants,after,serviceConfig} (serviceConfig: attrsOf unitOption, a list is a repeated setting)" = read "nixos/lib/systemd-unit-options.nix" "01f31c2ee7d045a337dff0f858c0ed61dd0f4ddb" null;
    "option networking.firewall.enable, networking.firewall.interfaces.<name>.allowed{TCP,UDP}Ports (listOf port, sorted and unique) and ...PortRanges" = read "nixos/modules/services/networking/firewall.nix" "0192bb844360b5b42ebaf7f575f84d79910a5927" null;
    "networking.firewall.connectionTrackingModules and autoLoadConntrackHelpers (asserted off on kernels 6.0 and newer): not used, TFTP's transfers pass as established" = read "nixos/modules/services/networking/firewall.nix" "0192bb844360b5b42ebaf7f575f84d79910a5927" null;
    "the nftables firewall: established and related accepted, the reverse path filter lets DHCP (68 -> 67) through, per-interface ports (tests/server_module.rs repeats it)" = read "nixos/modules/services/networking/firewall-nftables.nix" "040b4eb6c33439c14b2ed3ff0660131bee4ef852" null;
    "option networking.firewall.filterOutput.{enabled,interfaces.<name>.allowed{TCP,UDP}Ports} (outgoing ports, nftables only)" = read "nixos/modules/services/networking/firewall.nix" "0192bb844360b5b42ebaf7f575f84d79910a5927" null;
    "filterOutput's output chain: policy drop, established and related accepted, new packets to the ports of filterOutput.interfaces (oifname, udp dport) accepted; networking.nftables.tables.<name>.{family,content} as it defines nixos-fw (tests/server_module.rs repeats it)" = read "nixos/modules/services/networking/firewall-nftables.nix" "040b4eb6c33439c14b2ed3ff0660131bee4ef852" null;
    "option networking.nftables.enable" = read "nixos/modules/services/networking/nftables.nix" "e2c95b46e5fbd9f28cc7714802f9cd3b632fd979" null;
    "option boot.kernelModules (firewall.nix adds nf_conntrack_<helper> there for connectionTrackingModules)" = read "nixos/modules/services/networking/firewall.nix" "0192bb844360b5b42ebaf7f575f84d79910a5927" null;
    "the iptables firewall (NixOS's default backend): ESTABLISHED,RELATED accepted, the reverse path filter lets a DHCP server's requests (0.0.0.0:68 -> 255.255.255.255:67) through, per-interface ports" = read "nixos/modules/services/networking/firewall-iptables.nix" "0d953321a18cf484b637b9932f8b3040bbfb11e3" null;
    "option environment.systemPackages (listOf package); netcat among the core packages (wait_for_open_port runs nc)" = read "nixos/modules/config/system-path.nix" "0354e8b747c8d69802d160ff408d1aece50472c9" null;
    "services.postgresql.enable, ensureDatabases, ensureUsers.<n>.name; local socket connections use peer authentication by default (ensureDBOwnership is newer than this commit: NixOS 23.11 replaced ensurePermissions with it; not read here)" = read "nixos/modules/services/databases/postgresql.nix" "86cdf5f981057c6eed14872b560ddfb91e9daee5" null;
    "network-addresses-<interface>.service (scripted networking: the interface's static addresses)" = read "nixos/modules/tasks/network-interfaces-scripted.nix" "00b463915fa2de869346756b70de6bb75f2b99e1" null;
    "lib.nixosSystem { system; modules } (system becomes nixpkgs.system, mkDefault) and the result's extendModules" = read "nixos/lib/eval-config.nix" "02aa3c00c9342f2976044665b63324b7f3edc0ba" null;
    # checks/pxe-fleet.nix (not run here).
    "test nodes: qemu-vm.nix gives GRUB a device (mkVMOverride: nodev with useEFIBoot, else bootLoaderDevice)" = read "nixos/modules/virtualisation/qemu-vm.nix" "f7072a9e8ab196569e8e20a5a90882df804ab321" null;
    "test driver: a VLAN NIC's MAC 52:54:00:12:<vlan>:<node> (qemuNicMac)" = read "nixos/lib/qemu-common.nix" "04b74253f4f4b145debeb234aae1019d6b33eca5" null;
    "test driver: a node's number is its place, from 1, among the sorted node names (nodeNumbers)" = read "nixos/lib/testing/network.nix" "003d58163f469fbeb0d51e4ef8d46af622759627" null;
    "test-instrumentation.nix: usePredictableInterfaceNames = false (eth0), the backdoor service" = read "nixos/modules/testing/test-instrumentation.nix" "026aeb71eaa8d887813bf2f3302fb5bb1ca5faf2" null;
    "test driver: succeed, fail, wait_for_unit, wait_for_open_port(port, addr)" = read "nixos/lib/test-driver/src/test_driver/machine/__init__.py" "019697db058b6738eda0cb2cdcc9f5c014c914cb" null;
  };
in {
  inherit pkgs;
  lib = lib.extend (final: prev: {
    nixosSystem = args: builtins.trace "stand-in nixpkgs: used lib.nixosSystem" (nixos.nixosSystem args);
  });
  # For tests/flake.rs and the README: the list without the stand-ins.
  list =
    lib.mapAttrs (_: entry: {inherit (entry) file commit checked;})
    (lib.mapAttrs' (name: entry: lib.nameValuePair "pkgs.${name}" entry) pkgsEntries // otherEntries);
}
