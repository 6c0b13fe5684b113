# The flake's nixosModules.server: services.nixos-pxe runs `nixos-pxe serve` for a fleet from
# lib.mkFleet on a NixOS boot server: DHCP, TFTP, HTTP and the NFS root in one process, the
# fleet's state in the state directory.
#
# What serve reads is all in the Nix store: the fleet's config.json, its TFTP root (boot loader
# and kernel) and its NFS root, unpacked at build time (lib.mkFleet's nfsRoot): owned by root,
# read-only and readable by every user. So serve runs as a dynamic user (DynamicUser) with one
# capability, CAP_NET_BIND_SERVICE (ports 67, 69 and 80). Measured with the binary, as an
# unprivileged user in a network namespace (tests/server_module.rs runs this unit's command line
# so): without it binding port 80 fails with EACCES; with it alone everything starts and serves,
# SO_BINDTODEVICE included (Linux allows it without CAP_NET_RAW since 5.7 when the socket is not
# bound to a device yet), so neither CAP_NET_RAW nor CAP_NET_ADMIN is granted. PrivateUsers= is
# not set: it would leave the process no capability in the host's user namespace, which owns
# the network namespace, and binding port 67 would fail.
#
# openFirewall opens, on `interface` only: UDP 67 (DHCP), 4011 (the PXE boot server port, asked
# only in bootServer.dhcpMode = "proxy"), 69 (TFTP requests), TCP `httpPort` and the NFS port of
# bootServer.nfsMountOptions (port= and mountport=, one port: serve has no portmapper). TFTP's
# transfers need no more: serve sends the first packet of each transfer from its new port, so
# the client's acknowledgements are replies of a connection the firewall has seen and pass as
# `established` (NixOS's firewall accepts those, nixos/modules/services/networking/
# firewall-nftables.nix and firewall-iptables.nix), with no conntrack helper. A DHCP request
# comes from 0.0.0.0, which the reverse path filter lets through for port 67 (the same files).
#
# With networking.firewall.filterOutput.enabled (nftables only), NixOS also drops what the
# server sends unless it is established, related or to a port of filterOutput.interfaces. Two
# of serve's packets are none of those: its DHCP replies (to port 68: the request came from
# 0.0.0.0, so the reply is a flow of its own) and the first packet of each TFTP transfer (from
# serve's new port to the client's, a port no list can name). openFirewall then opens UDP 68
# outgoing on `interface`, and attaches the kernel's TFTP conntrack helper (nf_conntrack_tftp)
# to requests arriving there on port 69, in a table of its own: the helper expects the transfer
# from the server to the client's port, so its first packet is `related` and accepted, and no
# other outgoing port is opened. (Kernels since 6.0 attach no helper by themselves; firewall.nix
# asserts autoLoadConntrackHelpers off there, so it is attached by rule, as nftables does it.)
#
# database: the fleet's state in PostgreSQL, shared by several boot servers (serve --database).
# By default (database.url = null) a local services.postgresql with a database and a role named
# after the unit's dynamic user, "nixos-pxe", reached over the socket in /run/postgresql with
# peer authentication (NixOS's default for local connections): no password anywhere. A remote
# database: database.url without a password and database.passwordFile, handed to the unit as a
# credential (LoadCredential=), so that the password is in neither the store nor the unit.
# Reports that arrive while the database is away wait in the state directory (report-spool).
#
# A two-server layout: on each boot server services.nixos-pxe.enable with the same fleet and
# database.url = "postgresql://nixos-pxe@db.example/nixos-pxe", database.passwordFile, each on
# its own segment (its own bootServer.address and dhcpRange), or both on one segment with split
# pools (dhcpRange halves) or in proxy mode beside the site's DHCP. The database server is
# a third machine (or one of the two, with database.url = null there and enableTCPIP plus a
# pg_hba line for the other).
#
# Secure Boot (the fleet's bootServer.secureBoot.enable): a unit of its own, nixos-pxe-sign,
# runs `nixos-pxe sign` before serve starts (and again whenever the fleet changes): it signs the
# fleet's unsigned parts (lib.mkFleet's secureBootParts) with the site's db key into
# /var/lib/nixos-pxe-secure-boot, which serve then serves as its TFTP root (the signed
# installer at bootx64.efi, the manifest, tools, images and the systems' signed boot files below
# nixos-pxe/secure-boot/). The key and certificate reach that unit alone, as systemd credentials
# (LoadCredential= from bootServer.secureBoot.keyFile and certificateFile: systemd reads them as
# root into a directory only the unit sees; never the store). The signing unit runs as root
# without any capability (it writes a directory serve's dynamic user must read) and without a
# network (PrivateNetwork=); serve, which answers the network, never holds the key.
#
# NixOS interfaces, each with the nixpkgs file and commit it was read at, are listed in
# tests/nix/stand-in-nixpkgs/interfaces.nix; the systemd settings are systemd.exec(5) and
# systemd.service(5).
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption types;
  cfg = config.services.nixos-pxe;
  server = cfg.fleet.config.bootServer;

  # The sandbox serve and nixos-pxe-sign share (systemd.exec(5)): no new privileges; the store
  # read-only (ProtectSystem=strict: everything but the state directory), no home, /tmp of its
  # own, no devices but the pseudo ones, its own processes; no kernel tunables, modules, logs,
  # control groups, clock or host name; no namespaces, realtime or set-id files; the system calls
  # of a service.
  sandbox = {
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    DevicePolicy = "closed";
    ProtectProc = "invisible";
    ProcSubset = "pid";
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = ["@system-service" "~@privileged" "~@resources"];
    SystemCallErrorNumber = "EPERM";
  };

  # Secure Boot: where nixos-pxe-sign writes what serve serves (StateDirectory=, below /var/lib).
  secureBoot = server.secureBoot.enable or false;
  signedDirectory = "nixos-pxe-secure-boot";
  signedDir = "/var/lib/${signedDirectory}";
  parts = cfg.fleet.secureBootParts;

  # port=P,mountport=P of the mount options, as serve reads them (src/serve/nfs.rs); null if the
  # options lack them (serve needs them: an assertion below says so).
  mountOption = key: let
    found = lib.findFirst (w: lib.hasPrefix "${key}=" w) null (map lib.trim (lib.splitString "," server.nfsMountOptions));
  in
    if found == null
    then null
    else lib.removePrefix "${key}=" found;
  nfsPort = let
    port = mountOption "port";
    mountport = mountOption "mountport";
  in
    if port != null && port == mountport && builtins.match "[0-9]+" port != null
    then lib.toInt port
    else null;

  # The state directory below /var/lib, as StateDirectory= takes it.
  stateDirectory = lib.removePrefix "/var/lib/" cfg.stateDir;

  db = cfg.database;
  localDatabase = db.enable && db.url == null;
  # The local database: its socket directory, the role and database named after the unit's user.
  databaseUrl =
    if localDatabase
    then "host=/run/postgresql dbname=nixos-pxe user=nixos-pxe"
    else db.url;
in {
  options.services.nixos-pxe = {
    enable = lib.mkEnableOption "the nixos-pxe boot server (`nixos-pxe serve`) for a fleet from lib.mkFleet";

    fleet = mkOption {
      type = types.attrs;
      example = lib.literalExpression ''nixos-pxe.lib.mkFleet { inherit nixpkgs; system = "x86_64-linux"; modules = [ ./fleet.nix ]; }'';
      description = "The fleet to serve: what lib.mkFleet returns. Its configJSON, tftpRoot and nfsRoot are served; its bootServer options (address, interface, dhcpMode, nfsMountOptions) configure the server.";
    };

    package = mkOption {
      type = types.package;
      default = cfg.fleet.tool;
      defaultText = lib.literalExpression "config.services.nixos-pxe.fleet.tool";
      description = "The nixos-pxe package that runs serve: by default the one lib.mkFleet made the fleet's files with.";
    };

    interface = mkOption {
      type = types.str;
      default =
        if server.interface != null
        then server.interface
        else throw "services.nixos-pxe.interface: set it, or the fleet's bootServer.interface";
      defaultText = lib.literalExpression "config.services.nixos-pxe.fleet.config.bootServer.interface";
      example = "eth1";
      description = "The interface facing the clients: every socket of serve is bound to it, and openFirewall opens the ports there only.";
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/nixos-pxe";
      description = "Where serve keeps the fleet's state (state.sqlite3: every attempt and report) and the NFS handle key; a directory below /var/lib, made by systemd (StateDirectory=) for the service's dynamic user, mode 0700. `nixos-pxe fleet status --state-dir` reads it.";
    };

    httpPort = mkOption {
      type = types.port;
      default = 80;
      description = "TCP port of serve's HTTP endpoint on bootServer.address (per-host GRUB files, the kernel, the installers' reports); 0 for none. Keep 80 for GRUB builds without a port in (http,ADDRESS:PORT).";
    };

    database = {
      enable = lib.mkEnableOption "the fleet's state in PostgreSQL, shared by several boot servers (serve --database), instead of state.sqlite3 in stateDir";

      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "postgresql://nixos-pxe@db.example/nixos-pxe";
        description = "The database, as libpq takes it (a postgresql:// URL or key=value words), without a password. null: a local services.postgresql with a database and role \"nixos-pxe\", reached over its socket with peer authentication (created by this module).";
      };

      passwordFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/keys/nixos-pxe-database";
        description = "A file whose first line is the database role's password (for a remote url), read by systemd as a credential and never copied to the store.";
      };
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open, on the interface only, what serve listens on: UDP 67 (DHCP), 4011 (with bootServer.dhcpMode = \"proxy\"), 69 (TFTP; transfers pass as established connections), TCP httpPort and the NFS port of bootServer.nfsMountOptions. With networking.firewall.filterOutput.enabled also what serve sends there that is not a reply: UDP 68 (DHCP replies) and, through the kernel's TFTP conntrack helper attached to requests to port 69, each TFTP transfer's first packet.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.hasPrefix "/var/lib/" cfg.stateDir && stateDirectory != "" && !(lib.hasInfix ".." cfg.stateDir);
        message = "services.nixos-pxe.stateDir = \"${cfg.stateDir}\": it must be a directory below /var/lib/ (systemd makes it for the service's dynamic user, StateDirectory=)";
      }
      {
        assertion = nfsPort != null;
        message = "services.nixos-pxe: the fleet's bootServer.nfsMountOptions = \"${server.nfsMountOptions}\" lacks port=P and mountport=P with the same P: serve's NFS server has no portmapper; set bootServer.nfsMountOptions = \"vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock\"";
      }
      {
        assertion = !(db.enable && db.url != null && lib.hasInfix "password=" db.url) && !(db.enable && db.url != null && builtins.match "postgres(ql)?://[^/@]*:[^/@]*@.*" db.url != null);
        message = "services.nixos-pxe.database.url carries a password: it would be in the Nix store, readable by every user; put it in database.passwordFile";
      }
      {
        assertion = !(localDatabase && db.passwordFile != null);
        message = "services.nixos-pxe.database.passwordFile is for a remote database.url; the local one uses peer authentication";
      }
      {
        assertion = server.address != null;
        message = "services.nixos-pxe: the fleet's bootServer.address is not set: serve listens for HTTP and NFS there";
      }
      {
        assertion = !secureBoot || (server.secureBoot.keyFile != null && server.secureBoot.certificateFile != null);
        message = "services.nixos-pxe: the fleet's bootServer.secureBoot.enable is set without keyFile and certificateFile: nixos-pxe-sign.service signs with them";
      }
      {
        assertion = !secureBoot || cfg.httpPort != 0;
        message = "services.nixos-pxe: with the fleet's bootServer.secureBoot the installer fetches its programs and the system image over HTTP: httpPort must not be 0";
      }
    ];

    # `nixos-pxe fleet status` and `fleet reinstall` for the administrator (as root: the state
    # directory belongs to the service's dynamic user).
    environment.systemPackages = [cfg.package];

    services.postgresql = lib.mkIf localDatabase {
      enable = true;
      ensureDatabases = ["nixos-pxe"];
      ensureUsers = [
        {
          name = "nixos-pxe";
          ensureDBOwnership = true;
        }
      ];
    };

    networking.firewall.interfaces = lib.mkIf cfg.openFirewall {
      ${cfg.interface} = {
        allowedUDPPorts = [67 69] ++ lib.optional (server.dhcpMode == "proxy") 4011;
        allowedTCPPorts = lib.optional (cfg.httpPort != 0) cfg.httpPort ++ lib.optional (nfsPort != null) nfsPort;
      };
    };
    # filterOutput (see the top of this file): DHCP replies out, TFTP transfers as related.
    networking.firewall.filterOutput.interfaces = lib.mkIf cfg.openFirewall {
      ${cfg.interface}.allowedUDPPorts = [68];
    };
    networking.nftables.tables.nixos-pxe-tftp = lib.mkIf (cfg.openFirewall && config.networking.firewall.filterOutput.enabled) {
      family = "inet";
      content = ''
        ct helper tftp {
          type "tftp" protocol udp;
        }
        chain prerouting {
          type filter hook prerouting priority filter; policy accept;
          iifname "${cfg.interface}" udp dport 69 ct helper set "tftp"
        }
      '';
    };
    boot.kernelModules = lib.mkIf (cfg.openFirewall && config.networking.firewall.filterOutput.enabled) ["nf_conntrack_tftp"];

    systemd.services.nixos-pxe = {
      description = "nixos-pxe boot server (DHCP, TFTP, HTTP, NFS root) for a fleet";
      wantedBy = ["multi-user.target"];
      # serve binds to bootServer.address on the interface: after the address is there
      # (network-addresses-IF.service with NixOS's scripted networking; network-online.target
      # otherwise), and started again if it was not yet.
      # The local database: Wants=, not Requires=: serve keeps answering while it is away.
      wants = ["network-online.target"] ++ lib.optional localDatabase "postgresql.service";
      # Secure Boot: the signed files first (nixos-pxe-sign is requiredBy this unit).
      after = ["network-online.target" "network-addresses-${cfg.interface}.service"] ++ lib.optional localDatabase "postgresql.service" ++ lib.optional secureBoot "nixos-pxe-sign.service";
      serviceConfig =
        sandbox
        // {
          ExecStart =
            lib.escapeShellArgs [
              "${cfg.package}/bin/nixos-pxe"
              "serve"
              "--config"
              "${cfg.fleet.configJSON}"
              "--interface"
              cfg.interface
              "--tftp-root"
              (
                if secureBoot
                then signedDir
                else "${cfg.fleet.tftpRoot}"
              )
              "--nfs-root"
              "${cfg.fleet.nfsRoot}"
              "--state-dir"
              cfg.stateDir
              "--http-port"
              (toString cfg.httpPort)
            ]
            + lib.optionalString db.enable (" "
              + lib.escapeShellArgs (["--database" databaseUrl]
                ++ lib.optionals (db.passwordFile != null) ["--database-password-file" "%d/database-password"]));
          LoadCredential = lib.mkIf (db.enable && db.passwordFile != null) ["database-password:${toString db.passwordFile}"];
          Restart = "on-failure";
          RestartSec = 5;
          # Open files, soft and hard: serve's caps follow from this limit (src/serve/limits.rs:
          # 512 TFTP transfers, 1024 HTTP and 1024 NFS connections take 9,280 descriptors with its
          # reserve; systemd's default soft limit of 1024 would give 141, 141 and 62). With both set
          # serve need not raise its own limit (setrlimit is in @resources, which the sandbox's
          # SystemCallFilter denies).
          LimitNOFILE = 16384;

          # Who: a user of its own, made for each start; the state directory is its own.
          DynamicUser = true;
          StateDirectory = stateDirectory;
          StateDirectoryMode = "0700";
          UMask = "0077";

          # What it may do: bind ports below 1024, nothing else.
          CapabilityBoundingSet = ["CAP_NET_BIND_SERVICE"];
          AmbientCapabilities = ["CAP_NET_BIND_SERVICE"];

          # What it may ask the kernel: IPv4 sockets only (DHCP, TFTP, HTTP and NFS are IPv4 here;
          # the log goes to the standard error systemd connected). With a database: AF_UNIX for
          # the local socket, AF_INET6 for a remote one by IPv6. Nothing mapped writable and
          # executable, no IPC left behind.
          RestrictAddressFamilies = ["AF_INET"] ++ lib.optionals db.enable ["AF_UNIX" "AF_INET6"];
          MemoryDenyWriteExecute = true;
          RemoveIPC = true;
        };
    };

    # Secure Boot: the fleet's parts signed where the key is, before serve (see the top of this file).
    systemd.services.nixos-pxe-sign = lib.mkIf secureBoot {
      description = "nixos-pxe: sign the Secure Boot installer and the fleet's systems with the site's db key";
      requiredBy = ["nixos-pxe.service"];
      before = ["nixos-pxe.service"];
      # sign checks the key and the certificate with openssl (src/secure_boot/keys.rs).
      path = [pkgs.openssl];
      serviceConfig =
        sandbox
        // {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = lib.escapeShellArgs [
            "${cfg.package}/bin/nixos-pxe"
            "sign"
            "--config"
            "${cfg.fleet.configJSON}"
            "--unsigned"
            "${parts}"
            "--stub"
            "${parts}/linuxx64.efi.stub"
            "--out"
            signedDir
            "--http-port"
            (toString cfg.httpPort)
            # %d: the unit's credentials directory (systemd.unit(5)); systemd expands it.
            "--key-file"
            "%d/db.key"
            "--certificate-file"
            "%d/db.crt"
            # objcopy of every target: the stub is the clients' x86-64 PE, the server may be ARM.
            "--objcopy"
            "${pkgs.binutils-unwrapped-all-targets}/bin/objcopy"
            "--sbsign"
            "${pkgs.sbsigntool}/bin/sbsign"
          ];
          LoadCredential = ["db.key:${toString server.secureBoot.keyFile}" "db.crt:${toString server.secureBoot.certificateFile}"];
          # What serve serves: readable by serve's dynamic user, written by this unit alone.
          StateDirectory = signedDirectory;
          StateDirectoryMode = "0755";
          UMask = "0022";

          # root (the directory is root's), without a single capability, without a network.
          CapabilityBoundingSet = "";
          PrivateNetwork = true;
          RestrictAddressFamilies = ["AF_UNIX"];
        };
    };
  };
}
