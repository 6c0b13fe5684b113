# The options of a nixos-pxe installer: the boot loader and kernel (nfsroot.*), the installer
# (customInstaller.*) and the boot server (bootServer.*). Names, types and defaults mirror
# src/schema.rs exactly; tests/module_matches_schema.rs fails when they drift. The checks
# themselves live in the Rust tool, which validates the JSON this module's values become
# (config.nixosPxe.configJSON: the tool's --config and the NFS root's config.json).
#
# This file is the installer's options alone: lib.mkInstaller evaluates it with lib.evalModules
# (nix/installer-options.nix), and nix/nixos-module.nix (the flake's nixosModules.default) puts
# it into a NixOS system. It uses nothing NixOS declares, so it works in both.
{
  lib,
  config,
  pkgs,
  ...
}: let
  inherit (lib) mkOption types;
  cfg = config;
in {
  # nixosPxe.checks and nixosPxe.configJSON: what this module hands to whoever evaluates it; the
  # fleet's rules and its JSON form (fleet-rules.nix).
  imports = [./internal-options.nix ./fleet-rules.nix];

  options = {
    nfsroot = {
      bootLoader = {
        efinetDHCPInterface = mkOption {
          type = types.str;
          default = "efinet0";
          example = "efinet1";
          description = "GRUB network interface on which net_bootp runs and from which DHCP option 66 (the TFTP server) is read. GRUB numbers the NICs the firmware connected, in boot order: efinet0 is the first. \"auto\": no second DHCP; GRUB uses the firmware's lease on the NIC it booted from (its next-server is the boot server). A fleet needs \"auto\".";
        };
        linuxPnPInterface = mkOption {
          type = types.str;
          default = "eth0";
          description = "Interface name the kernel (not udev) gives the NIC used for IP autoconfiguration and the NFS root, as in ip=:::::eth0:dhcp:. \"auto\": ip=dhcp (the kernel asks on every NIC) and the MAC GRUB booted from goes on the command line as nixos-pxe.mac=, so the installer can check it configured that NIC. A fleet needs \"auto\".";
        };
        serial = {
          device = mkOption {
            type = types.str;
            default = "ttyS0";
            description = "Serial console used by GRUB (unit N of ttySN) and the kernel (console=).";
          };
          settings = mkOption {
            type = types.str;
            default = "115200n8";
            description = "Serial settings in the kernel's console= form: speed, parity (n, o, e), data bits.";
          };
        };
        timeout = mkOption {
          type = types.int;
          default = 5;
          description = "Seconds GRUB shows its menu before it boots the installer.";
        };
      };
      extraKernelOptions = mkOption {
        type = types.listOf types.str;
        default = [];
        example = ["MLX5_CORE" "NR_CPUS=512"];
        description = "Kernel config symbols to build in on top of the NFS-root set, e.g. \"MLX5_CORE\" or \"NR_CPUS=512\". A driver is built in only if everything it depends on is: list its dependencies too (e.g. \"QED\" for \"QEDE\").";
      };
      writableLayer = mkOption {
        type = types.enum ["overlayfs" "unionfs-fuse"];
        default = "overlayfs";
        description = "How init makes the read-only NFS root writable: overlayfs, or unionfs-fuse (the seed's way, for kernels without overlayfs).";
      };
      init = mkOption {
        type = types.str;
        default = "/init";
        description = "Path of the init program inside the NFS root, passed as init= (the tarball links /init to nixos-pxe). Its file name must be init: nixos-pxe is init only when started under that name as PID 1.";
      };
    };
    customInstaller = {
      networking = {
        useDHCP = mkOption {
          type = types.bool;
          default = true;
          description = "Whether the installed system configures its network by DHCP; if false, the lease the installer got is written as a static configuration.";
        };
        staticInterfaceFromDHCP = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "eth0";
          description = "Interface of the installed system that gets the static address from the installer's lease. Required when useDHCP is false.";
        };
      };
      rootDevice = mkOption {
        type = types.str;
        default = "/dev/sda";
        example = "/dev/disk/by-id/nvme-SAMSUNG_MZ1L2960HCJR-00A07_S665NN0W123456";
        description = "Whole disk to install on: a kernel name (/dev/sda, /dev/nvme0n1) or, better, a stable /dev/disk/by-id/ name (virtio-, nvme- and wwn- ids are found from sysfs, without udev).";
      };
      partitionSeparator = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Text between the disk name and the partition number; null picks it from the kernel's rule (\"p\" after a trailing digit, as in nvme0n1p1).";
      };
      wipe = mkOption {
        type = types.enum ["if-empty" "always"];
        default = "if-empty";
        description = "\"if-empty\" refuses to touch a disk that holds a partition table or a filesystem; \"always\" overwrites it (the seed's behaviour).";
      };
      espSizeMiB = mkOption {
        type = types.int;
        default = 512;
        description = "Size of the EFI system partition (FAT32, label ESP) in MiB.";
      };
      swapSizeMiB = mkOption {
        type = types.int;
        default = 0;
        description = "Size of a swap partition at the end of the disk in MiB; 0 for none.";
      };
      rootSizeMiB = mkOption {
        type = types.nullOr types.int;
        default = null;
        description = "Size of the ext4 root partition (label nixos) in MiB; null for the rest of the disk.";
      };
      firmware = mkOption {
        type = types.enum ["auto" "uefi" "bios" "both"];
        default = "uefi";
        example = "auto";
        description = "The firmware the installed disk boots with. \"uefi\": an ESP and systemd-boot, registered in the firmware's boot entries. \"bios\": a BIOS boot partition and GRUB for legacy BIOS (no ESP). \"both\": the BIOS boot partition and the ESP, GRUB for BIOS and GRUB's EFI loader as /EFI/BOOT/BOOTX64.EFI, so the disk boots either way. \"auto\": what the machine booted the installer with (/sys/firmware/efi exists: uefi, else bios); the system image then holds a system for each. An image built for uefi is refused on a BIOS machine and one built for bios on a UEFI machine, before anything is written.";
      };
      afterInstall = mkOption {
        type = types.enum ["reboot" "poweroff" "halt"];
        default = "reboot";
        description = "What the installer does when it has finished.";
      };
      imageCompression = mkOption {
        type = types.enum ["zstd" "gzip" "xz"];
        default = "zstd";
        description = "Compression of the system image in the NFS root.";
      };
      target = {
        directory = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = lib.literalExpression "./host";
          description = "Directory holding the target system's configuration.nix.";
        };
        flake = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "github:example/infra#web1";
          description = "The target system as a flake output, FLAKEREF#NAME for nixosConfigurations.NAME.";
        };
      };
    };
    bootServer = {
      dhcpMode = mkOption {
        type = types.enum ["authoritative" "proxy"];
        default = "authoritative";
        description = "\"authoritative\": the boot server hands out addresses; \"proxy\": another DHCP server does, so the loader and kernel are told the server explicitly.";
      };
      address = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10.42.0.1";
        description = "IPv4 address of the boot server (TFTP next-server and NFS server).";
      };
      name = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "TFTP server name sent as DHCP option 66, resolved by GRUB through DNS; null sends the address.";
      };
      interface = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Interface of the boot server facing the clients.";
      };
      subnet = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10.42.0.0/24";
        description = "The clients' IPv4 subnet in CIDR form, e.g. 10.42.0.0/24.";
      };
      dhcpRange = {
        start = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "First address handed out to clients.";
        };
        end = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "Last address handed out to clients.";
        };
      };
      router = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Default gateway handed to clients (DHCP option 3).";
      };
      nameServers = mkOption {
        type = types.listOf types.str;
        default = [];
        example = ["10.42.0.1"];
        description = "DNS servers handed to clients (DHCP option 6).";
      };
      domainName = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Domain name handed to clients (DHCP option 15).";
      };
      leaseSeconds = mkOption {
        type = types.int;
        default = 3600;
        description = "DHCP lease time in seconds.";
      };
      answerBootp = mkOption {
        type = types.bool;
        default = false;
        description = "Whether `nixos-pxe serve`'s authoritative DHCP answers BOOTP requests (no DHCP message type, option 53) with an address from the range. Off by default: every loader in the chain (the firmware, iPXE, GRUB, the kernel) speaks DHCP, and a BOOTP lease never expires.";
      };
      tftpRoot = mkOption {
        type = types.str;
        default = "/srv/tftp";
        description = "TFTP root on the boot server: bootx64.efi at its top, the kernel at nixos/bzImage.";
      };
      nfsExport = mkOption {
        type = types.str;
        default = "/srv/nixos/nfsroot";
        description = "Directory on the boot server where the NFS root tarball is unpacked and exported read-only.";
      };
      nfsClients = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Clients allowed to mount the NFS root (CIDR or address); null means bootServer.subnet.";
      };
      nfsMountOptions = mkOption {
        type = types.str;
        default = "vers=3,tcp";
        description = "NFS mount options the kernel uses for the root, after the path in root-path (option 17) or nfsroot=. For `nixos-pxe serve --nfs-root` (no portmapper, no lock manager): \"vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock\".";
      };
      # Secure Boot with the site's own keys (issue 19): the key stays on the boot
      # server, named by a string (a path literal would copy it into the store).
      secureBoot = {
        enable = mkOption {
          type = types.bool;
          default = false;
          description = "Secure Boot on, verified by the site's own db key (README: \"Secure Boot with the site's own keys\"). `nixos-pxe sign`, on the boot server, makes the installer's boot file, a unified kernel image (systemd-stub, the kernel, an initrd holding nixos-pxe, its configuration and a manifest of digests, and the command line) signed with keyFile, which the firmware verifies whole against db; the installer started from it (UEFI PXE or UEFI HTTP boot) reads the firmware's SecureBoot variable, asks serve for a fleet host's decision (nixos-pxe/hosts/mac-<MAC>.json), fetches its programs, the system image and the system's signed boot file over HTTP and checks each against the manifest before the disk is touched (the image is kept in memory until it matched whole), and puts the signed boot file on the ESP, which the firmware verifies at every boot. The flake builds the unsigned parts (lib.mkFleet's secureBootParts) and services.nixos-pxe signs them in nixos-pxe-sign.service, the key its credential, before serve. The NFS root is not used; legacy BIOS clients are not served. Needs bootServer.address, keyFile and certificateFile, and customInstaller.firmware = \"uefi\" (for every host).";
        };
        keyFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "The db signing key (PEM, unencrypted) on the boot server: an absolute path as a string, read by `nixos-pxe sign` only. Never a Nix path literal and never below /nix/store, which every user can read.";
        };
        certificateFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          description = "The db certificate (PEM X.509) that keyFile's key belongs to: the certificate the clients' firmware has enrolled in db. Public: it may be in the configuration or the Nix store.";
        };
      };
    };
    # A fleet: many hosts, each recognised by its MACs and installed once per generation. The
    # checks between these (a MAC belongs to one host, names are DNS labels, one target each)
    # are the tool's (src/config/fleet_rules.rs), run on the JSON these values become.
    fleet = {
      maxAttempts = mkOption {
        type = types.int;
        default = 3;
        description = "Failed or abandoned install attempts of one generation after which a host is held (a GRUB menu saying why) instead of installed again.";
      };
      trustBootNetwork = mkOption {
        type = types.bool;
        default = false;
        description = "Whether `nixos-pxe serve` may hand a host's install token to, and take its reports from, any address. Off (the default), serve gives a host's per-host file with its token, and takes its reports, only from the address its DHCP saw for one of the host's MACs (the lease it gave, or in proxy mode the address the machine asked the site's server for), so another machine on the boot network cannot read the token nor install, fail, hold or confirm the host. Needed, and only then, with `serve --dhcp off`, where serve sees no DHCP: serve refuses to serve a fleet that way without it.";
      };
      unknownHosts = mkOption {
        type = types.enum ["local-boot" "hold"];
        default = "local-boot";
        description = "What a machine whose MAC is in no host gets: \"local-boot\" (on UEFI GRUB starts the first disk's EFI boot loader, systemd-boot or /EFI/BOOT/BOOTX64.EFI, else exits to the firmware; on BIOS it exits to the BIOS, which boots its next boot device) or \"hold\" (a GRUB menu naming the MAC, no timeout, never a reboot). Never an install.";
      };
      # The BMCs' fleet-wide settings; each host's fleet.hosts.<name>.bmc.* overrides them.
      bmc = {
        protocol = mkOption {
          type = types.enum ["redfish" "ipmi"];
          default = "redfish";
          description = "How `nixos-pxe fleet power`, `fleet reinstall --power-cycle` and `fleet apply` talk to a host's BMC: \"redfish\" (JSON over HTTPS, checked against bmc.certificate or bmc.fingerprint) or \"ipmi\" (IPMI 2.0 over LAN, RMCP+, through ipmitool; no certificate).";
        };
        user = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "admin";
          description = "The BMC account the fleet commands log in as.";
        };
        passwordFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "/run/secrets/bmc-password";
          description = "A file on the boot server holding the BMC account's password (its first line), read when a fleet command runs; a string, never a Nix path, so that it stays out of the Nix store, which every user can read.";
        };
        certificate = mkOption {
          type = types.nullOr types.path;
          default = null;
          description = "PEM file with the certificate a Redfish BMC must present, or the certificate authority that signed it (checked with the BMC's address as its name). Exactly one of bmc.certificate and bmc.fingerprint for a Redfish BMC.";
        };
        bootTarget = mkOption {
          type = types.enum ["pxe" "uefi-http"];
          default = "pxe";
          description = "The one-time boot a reinstall asks the BMC for: \"pxe\" (Redfish BootSourceOverrideTarget Pxe, IPMI chassis bootdev pxe) or \"uefi-http\" (Redfish UefiHttp, for hosts that boot by UEFI HTTP boot; Redfish only).";
        };
      };
      hosts = mkOption {
        default = {};
        description = "The hosts of the fleet, by name (a DNS label).";
        example = lib.literalExpression ''{ web1 = { macs = [ "52:54:00:ab:cd:01" ]; target.directory = ./hosts/web; }; }'';
        type = types.attrsOf (types.submodule {
          options = {
            macs = mkOption {
              type = types.listOf types.str;
              default = [];
              example = ["52:54:00:ab:cd:01"];
              description = "MAC addresses of the host's NICs the firmware may boot from, in any usual spelling (52:54:00:ab:cd:01, 52-54-00-AB-CD-01, 5254.00ab.cd01, 525400abcd01). At least one; each belongs to one host.";
            };
            generation = mkOption {
              type = types.int;
              default = 1;
              description = "The host's install generation: installed once; bump it to install the host again.";
            };
            target = {
              directory = mkOption {
                type = types.nullOr types.path;
                default = null;
                description = "Directory holding this host's configuration.nix. Exactly one of target.directory and target.flake.";
              };
              flake = mkOption {
                type = types.nullOr types.str;
                default = null;
                description = "This host's system as a flake output, FLAKEREF#NAME for nixosConfigurations.NAME. Exactly one of target.directory and target.flake.";
              };
            };
            # The host's own values of the top-level customInstaller options; each defaults to
            # the top-level value.
            customInstaller = {
              networking = {
                useDHCP = mkOption {
                  type = types.bool;
                  default = cfg.customInstaller.networking.useDHCP;
                  defaultText = lib.literalExpression "config.customInstaller.networking.useDHCP";
                  description = "This host's own customInstaller.networking.useDHCP; unset, the top-level value applies.";
                };
                staticInterfaceFromDHCP = mkOption {
                  type = types.nullOr types.str;
                  default = cfg.customInstaller.networking.staticInterfaceFromDHCP;
                  defaultText = lib.literalExpression "config.customInstaller.networking.staticInterfaceFromDHCP";
                  description = "This host's own customInstaller.networking.staticInterfaceFromDHCP; unset, the top-level value applies.";
                };
              };
              rootDevice = mkOption {
                type = types.str;
                default = cfg.customInstaller.rootDevice;
                defaultText = lib.literalExpression "config.customInstaller.rootDevice";
                description = "This host's own customInstaller.rootDevice; unset, the top-level value applies.";
              };
              partitionSeparator = mkOption {
                type = types.nullOr types.str;
                default = cfg.customInstaller.partitionSeparator;
                defaultText = lib.literalExpression "config.customInstaller.partitionSeparator";
                description = "This host's own customInstaller.partitionSeparator; unset, the top-level value applies.";
              };
              wipe = mkOption {
                type = types.enum ["if-empty" "always"];
                default = cfg.customInstaller.wipe;
                defaultText = lib.literalExpression "config.customInstaller.wipe";
                description = "This host's own customInstaller.wipe; unset, the top-level value applies.";
              };
              espSizeMiB = mkOption {
                type = types.int;
                default = cfg.customInstaller.espSizeMiB;
                defaultText = lib.literalExpression "config.customInstaller.espSizeMiB";
                description = "This host's own customInstaller.espSizeMiB; unset, the top-level value applies.";
              };
              swapSizeMiB = mkOption {
                type = types.int;
                default = cfg.customInstaller.swapSizeMiB;
                defaultText = lib.literalExpression "config.customInstaller.swapSizeMiB";
                description = "This host's own customInstaller.swapSizeMiB; unset, the top-level value applies.";
              };
              rootSizeMiB = mkOption {
                type = types.nullOr types.int;
                default = cfg.customInstaller.rootSizeMiB;
                defaultText = lib.literalExpression "config.customInstaller.rootSizeMiB";
                description = "This host's own customInstaller.rootSizeMiB; unset, the top-level value applies.";
              };
              firmware = mkOption {
                type = types.enum ["auto" "uefi" "bios" "both"];
                default = cfg.customInstaller.firmware;
                defaultText = lib.literalExpression "config.customInstaller.firmware";
                description = "This host's own customInstaller.firmware; unset, the top-level value applies.";
              };
              afterInstall = mkOption {
                type = types.enum ["reboot" "poweroff" "halt"];
                default = cfg.customInstaller.afterInstall;
                defaultText = lib.literalExpression "config.customInstaller.afterInstall";
                description = "This host's own customInstaller.afterInstall; unset, the top-level value applies.";
              };
            };
            # The host's BMC, for `nixos-pxe fleet power`, `fleet reinstall --power-cycle` and
            # `fleet apply`; each setting but address, fingerprint and systemId defaults to fleet.bmc's.
            bmc = {
              address = mkOption {
                type = types.nullOr types.str;
                default = null;
                example = "10.0.1.7";
                description = "The host's BMC on the management network: a host name or IPv4 address, or [IPv6], with :PORT when it is not the protocol's (443 for Redfish, 623 for IPMI). Unset: the fleet's power commands cannot reach this host.";
              };
              protocol = mkOption {
                type = types.enum ["redfish" "ipmi"];
                default = cfg.fleet.bmc.protocol;
                defaultText = lib.literalExpression "config.fleet.bmc.protocol";
                description = "This host's own fleet.bmc.protocol; unset, the fleet-wide value applies.";
              };
              user = mkOption {
                type = types.nullOr types.str;
                default = cfg.fleet.bmc.user;
                defaultText = lib.literalExpression "config.fleet.bmc.user";
                description = "This host's own fleet.bmc.user; unset, the fleet-wide value applies.";
              };
              passwordFile = mkOption {
                type = types.nullOr types.str;
                default = cfg.fleet.bmc.passwordFile;
                defaultText = lib.literalExpression "config.fleet.bmc.passwordFile";
                description = "This host's own fleet.bmc.passwordFile; unset, the fleet-wide value applies.";
              };
              certificate = mkOption {
                type = types.nullOr types.path;
                default = cfg.fleet.bmc.certificate;
                defaultText = lib.literalExpression "config.fleet.bmc.certificate";
                description = "This host's own fleet.bmc.certificate; unset, the fleet-wide value applies.";
              };
              fingerprint = mkOption {
                type = types.nullOr types.str;
                default = null;
                description = "SHA-256 fingerprint of the certificate this host's Redfish BMC presents (as `openssl x509 -noout -fingerprint -sha256` prints it): that certificate and no other is accepted, whoever signed it. Exactly one of bmc.certificate and bmc.fingerprint for a Redfish BMC.";
              };
              systemId = mkOption {
                type = types.nullOr types.str;
                default = null;
                example = "System.Embedded.1";
                description = "The Redfish id of this host's system (the last part of /redfish/v1/Systems/ID), needed when its BMC manages several systems; unset, the BMC must list exactly one.";
              };
              bootTarget = mkOption {
                type = types.enum ["pxe" "uefi-http"];
                default = cfg.fleet.bmc.bootTarget;
                defaultText = lib.literalExpression "config.fleet.bmc.bootTarget";
                description = "This host's own fleet.bmc.bootTarget; unset, the fleet-wide value applies.";
              };
            };
          };
        });
      };
    };
  };

  config.nixosPxe = {
    # Rules between options, as in src/config/typed.rs (cross_checks). The tool checks them again
    # when it reads the JSON; here they fail the evaluation early: lib.mkInstaller throws the
    # failed ones, and nix/nixos-module.nix makes them NixOS assertions.
    checks = [
      {
        assertion = cfg.customInstaller.networking.useDHCP || cfg.customInstaller.networking.staticInterfaceFromDHCP != null;
        message = "nixos-pxe: customInstaller.networking.useDHCP is false, so customInstaller.networking.staticInterfaceFromDHCP must name the interface for the static address";
      }
      {
        assertion = cfg.customInstaller.target.directory == null || cfg.customInstaller.target.flake == null;
        message = "nixos-pxe: set customInstaller.target.directory or customInstaller.target.flake, not both";
      }
    ];

    # The option tree as JSON: what `nixos-pxe --config` reads and the NFS root holds as
    # /nixos-pxe/config.json (with a fleet, also `fleet`: fleet-rules.nix). target.directory is
    # written as its string (toString of a path does not copy it to the store): the tool only
    # names it, and lib.mkInstaller builds the target system from the path value itself. Lazy,
    # so importing this module costs nothing until something reads it.
    configValue = {
      inherit (cfg) nfsroot bootServer;
      customInstaller = lib.recursiveUpdate cfg.customInstaller {
        target.directory =
          if cfg.customInstaller.target.directory == null
          then null
          else toString cfg.customInstaller.target.directory;
      };
    };
    configJSON = pkgs.writeText "nixos-pxe-config.json" (builtins.toJSON cfg.nixosPxe.configValue);
  };
}
