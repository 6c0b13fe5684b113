# Stand-in for lib.nixosSystem (nixpkgs' flake.nix -> nixos/lib/eval-config.nix): lib.evalModules
# over a small base and the caller's modules, with modulesPath pointing at this stand-in's
# nixos/modules and pkgs the stand-in package set. It returns evalModules' result, so
# `extendModules` and `config` are the real module system's.
#
# Where it behaves like NixOS because the project depends on it:
# - the options the project sets on a target system are declared with NixOS's types
#   (fileSystems, swapDevices, boot.loader.systemd-boot.enable, boot.loader.efi.canTouchEfiVariables,
#   boot.loader.grub.{enable,device,devices,efiSupport,efiInstallAsRemovable},
#   boot.loader.efi.efiSysMountPoint, networking.hostName, system.build), so a wrong value fails as
#   it would there; GRUB is on by default and systemd-boot turns it off (mkDefault), and GRUB's
#   assertions are NixOS's (nixos/modules/system/boot/loader/grub/grub.nix: a device to install
#   on, efiInstallAsRemovable only with efiSupport and without canTouchEfiVariables, absolute
#   devices), with their messages;
# - config.assertions holds, like nixos/modules/tasks/filesystems.nix, an assertion whose message
#   interpolates an attribute that exists only when the assertion fails (the mount points' `cycle`):
#   reading the messages of passing assertions throws, as it does in NixOS;
# - systemd.services, with the options the project's modules set (nix/report-module.nix) declared
#   with NixOS's types (nixos/lib/systemd-unit-options.nix at 01f31c2ee7d045a337dff0f858c0ed61dd0f4ddb:
#   a misspelt or mistyped one fails as there), and NixOS's warnings about them
#   (nixos/modules/system/boot/systemd.nix: a unit ordered after network-online.target without
#   wanting it; Type=oneshot with Restart=always or on-success);
# - system.build.uki and system.boot.loader.ukiFile (nixos/modules/system/boot/uki.nix): the
#   system's unified kernel image is $out/<ukiFile>, "nixos.efi" by default; the stand-in's is
#   Debian's systemd-stub with the `.osrel` and `.cmdline` (`init=<toplevel>/init`) sections
#   uki.nix's ukify adds, placed after the stub's sections as ukify places them, and no kernel or
#   initrd (the stand-in system has none): a PE image sign signs, not one that boots;
# - system.build.toplevel checks the assertions (lib.asserts.checkAssertWarn, as
#   nixos/modules/system/activation/top-level.nix) and is a real store path: the system's name and
#   its file systems as JSON, in a second store path, so the closure has more than one path.
# - a boot server's options (nixos-server.nix: the firewall's per-interface ports,
#   environment.systemPackages), declared with NixOS's types;
# Everything else a NixOS configuration sets is accepted unevaluated (a freeform top level): the
# stand-in does not know NixOS's thousands of options, NixOS itself would refuse unknown ones.
{
  lib,
  pkgs,
  impl,
  modulesPath,
}: let
  inherit (lib) mkOption types;

  fileSystemModule = {name, ...}: {
    options = {
      mountPoint = mkOption {
        type = types.str;
        default = name;
      };
      device = mkOption {
        type = types.nullOr types.str;
        default = null;
      };
      label = mkOption {
        type = types.nullOr types.str;
        default = null;
      };
      fsType = mkOption {
        type = types.str;
        default = "auto";
      };
      options = mkOption {
        type = types.nonEmptyListOf types.str;
        default = ["defaults"];
      };
      depends = mkOption {
        type = types.listOf types.str;
        default = [];
      };
      autoResize = mkOption {
        type = types.bool;
        default = false;
      };
    };
  };

  # A value of a [Unit] or [Service] setting (NixOS's unitOption: a scalar, or a list for a
  # setting given several times).
  unitScalar = types.oneOf [types.bool types.int types.str types.path];
  unitOption = types.either unitScalar (types.listOf unitScalar);
  units = mkOption {
    type = types.listOf types.str;
    default = [];
  };
  # NixOS's checkService: the Type and Restart values systemd knows.
  checkService = settings:
    lib.elem (settings.Type or "simple") ["exec" "simple" "forking" "oneshot" "dbus" "notify" "notify-reload" "idle"]
    && lib.elem (settings.Restart or "no") ["no" "on-success" "on-failure" "on-abnormal" "on-abort" "on-watchdog" "always"];
  serviceModule = {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      description = mkOption {
        type = types.singleLineStr;
        default = "";
      };
      wantedBy = units;
      requiredBy = units;
      wants = units;
      requires = units;
      bindsTo = units;
      after = units;
      before = units;
      unitConfig = mkOption {
        type = types.attrsOf unitOption;
        default = {};
      };
      serviceConfig = mkOption {
        type = types.addCheck (types.attrsOf unitOption) checkService;
        default = {};
      };
      environment = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [types.str types.path types.package]));
        default = {};
      };
      path = mkOption {
        type = types.listOf (types.oneOf [types.package types.str]);
        default = [];
      };
      script = mkOption {
        type = types.lines;
        default = "";
      };
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
    };
  };
  serviceWarnings = name: s:
    lib.optional (lib.elem "network-online.target" s.after && !(lib.elem "network-online.target" (s.wants ++ s.requires ++ s.bindsTo)))
    "${name}.service is ordered after 'network-online.target' but doesn't depend on it"
    ++ lib.optional ((s.serviceConfig.Type or "") == "oneshot" && lib.elem (s.serviceConfig.Restart or "no") ["always" "on-success"])
    "Service '${name}.service' with 'Type=oneshot' cannot have 'Restart=always' or 'Restart=on-success'";

  base = {config, ...}: let
    grub = config.boot.loader.grub;
    # A mount point goes after the one it lies below (nixos/lib/utils.nix's fsBefore, simplified).
    below = a: b:
      a.mountPoint
      != b.mountPoint
      && lib.hasPrefix (lib.removeSuffix "/" a.mountPoint + "/") b.mountPoint;
    sorted = lib.toposort below (lib.attrValues config.fileSystems);
    mountPoints = lib.concatMapStringsSep " -> " (fs: fs.mountPoint);
    described = {
      inherit (config.networking) hostName;
      fileSystems = lib.mapAttrs (_: fs: {inherit (fs) mountPoint device fsType options;}) config.fileSystems;
      swapDevices = map (s: s.device) config.swapDevices;
      boot.loader = {
        systemd-boot.enable = config.boot.loader.systemd-boot.enable;
        efi = {inherit (config.boot.loader.efi) canTouchEfiVariables efiSysMountPoint;};
        grub = {inherit (config.boot.loader.grub) enable devices efiSupport efiInstallAsRemovable;};
      };
    };
    system =
      impl.runCommand "nixos-system-${config.networking.hostName}-stand-in"
      {configuration = impl.writeText "configuration.json" (builtins.toJSON described);} ''
        mkdir "$out"
        ln -s "$configuration" "$out/configuration.json"
        echo "stand-in NixOS system (tests/nix/stand-in-nixpkgs), not bootable" > "$out/nixos-version"
      '';
  in {
    _file = ./nixos.nix;
    freeformType = types.lazyAttrsOf types.anything;
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        internal = true;
        default = [];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        internal = true;
        default = [];
      };
      fileSystems = mkOption {
        type = types.attrsOf (types.submodule fileSystemModule);
        default = {};
      };
      swapDevices = mkOption {
        type = types.listOf (types.submodule {options.device = mkOption {type = types.str;};});
        default = [];
      };
      boot.loader.systemd-boot.enable = mkOption {
        type = types.bool;
        default = false;
      };
      boot.loader.efi.canTouchEfiVariables = mkOption {
        type = types.bool;
        default = false;
      };
      boot.loader.efi.efiSysMountPoint = mkOption {
        type = types.str;
        default = "/boot";
      };
      # NixOS: default = !config.boot.isContainer (the stand-in has no containers).
      boot.loader.grub.enable = mkOption {
        type = types.bool;
        default = true;
      };
      boot.loader.grub.device = mkOption {
        type = types.str;
        default = "";
      };
      boot.loader.grub.devices = mkOption {
        type = types.listOf types.str;
        default = [];
      };
      boot.loader.grub.efiSupport = mkOption {
        type = types.bool;
        default = false;
      };
      boot.loader.grub.efiInstallAsRemovable = mkOption {
        type = types.bool;
        default = false;
      };
      networking.hostName = mkOption {
        type = types.str;
        default = "nixos";
      };
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule serviceModule);
        default = {};
      };
      system.build = mkOption {
        type = types.submoduleWith {modules = [{freeformType = types.lazyAttrsOf (types.uniq types.unspecified);}];};
        default = {};
      };
      # uki.nix: boot.uki.name ("nixos" without system.image.id), "_<version>" with
      # system.image.version (null by default), ".efi".
      system.boot.loader.ukiFile = mkOption {
        type = types.str;
        internal = true;
        default = "nixos.efi";
      };
    };
    config = {
      _module.args.pkgs = pkgs;
      # systemd-boot.nix: enabling it turns GRUB off; grub.nix: `device` is one of `devices`.
      boot.loader.grub.enable = lib.mkIf config.boot.loader.systemd-boot.enable (lib.mkDefault false);
      boot.loader.grub.devices = lib.mkIf (config.boot.loader.grub.device != "") [config.boot.loader.grub.device];
      assertions =
        [
          {
            assertion = !(sorted ? cycle);
            message = "stand-in NixOS: the file systems cannot be sorted: ${mountPoints sorted.cycle} loops to ${mountPoints sorted.loops}";
          }
        ]
        ++ lib.optionals grub.enable ([
            # grub.nix's, with its messages (mirroredBoots is [ { devices; } ] when devices is set).
            {
              assertion = grub.devices != [];
              message = "You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable.";
            }
            {
              assertion = grub.efiInstallAsRemovable -> grub.efiSupport;
              message = "If you wish to to use boot.loader.grub.efiInstallAsRemovable, then turn on boot.loader.grub.efiSupport";
            }
            {
              assertion = grub.efiInstallAsRemovable -> !config.boot.loader.efi.canTouchEfiVariables;
              message = "If you wish to to use boot.loader.grub.efiInstallAsRemovable, then turn off boot.loader.efi.canTouchEfiVariables";
            }
          ]
          ++ map (device: {
            assertion = device == "nodev" || lib.hasPrefix "/" device;
            message = "GRUB devices must be absolute paths, not ${device} in /boot";
          })
          grub.devices);
      warnings = lib.concatLists (lib.mapAttrsToList serviceWarnings config.systemd.services);
      system.build.toplevel = lib.asserts.checkAssertWarn config.assertions config.warnings system;
      system.build.uki =
        impl.runCommand config.system.boot.loader.ukiFile {
          cmdline = "init=${config.system.build.toplevel}/init";
          ukiFile = config.system.boot.loader.ukiFile;
        } ''
          stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
          [ -f "$stub" ] || { echo "stand-in NixOS: system.build.uki needs Debian's $stub (apt-get install systemd-boot-efi)" >&2; exit 1; }
          echo 'NAME="stand-in NixOS (tests/nix/stand-in-nixpkgs), not bootable"' > osrel
          printf '%s' "$cmdline" > cmdline
          # After the stub's last section, at its SectionAlignment (4096), one after the other.
          next=$(objdump -h "$stub" | awk '$1 ~ /^[0-9]+$/ { print $3, $4 }' | while read -r size vma; do echo $((0x$vma + 0x$size)); done | sort -n | tail -n 1)
          align() { echo $(( ($1 + 4095) / 4096 * 4096 )); }
          osrel_at=$(align "$next")
          cmdline_at=$(align $((osrel_at + $(stat -c %s osrel))))
          mkdir "$out"
          objcopy --add-section .osrel=osrel --change-section-vma .osrel=$(printf 0x%x "$osrel_at") \
            --add-section .cmdline=cmdline --change-section-vma .cmdline=$(printf 0x%x "$cmdline_at") \
            "$stub" "$out/$ukiFile"
        '';
    };
  };
in {
  nixosSystem = {
    modules,
    specialArgs ? {},
    ...
  }:
    lib.evalModules {
      specialArgs = {inherit modulesPath;} // specialArgs;
      modules = [base ./nixos-server.nix] ++ modules;
    };
}
