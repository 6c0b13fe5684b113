//! The option schema: every option's path, type, default and rule, once.
//! `nix/module.nix` declares the same options; `tests/module_matches_schema.rs` holds them together.
//!
//! A path is dotted, as a NixOS module writes it. One segment may be [`NAME`] (`<name>`): the
//! option then lives in every member of an attribute set of submodules (`fleet.hosts.<name>.macs`
//! is `fleet.hosts.web1.macs`, `fleet.hosts.db1.macs`, ...), as `types.attrsOf (types.submodule ...)`
//! declares it. [`lookup`] matches a concrete path against these patterns for every reader.

use serde_json::Value;
use std::net::Ipv4Addr;

/// The type of an option's value, as the NixOS module declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Bool,
    Str,
    Int,
    /// A string that must be one of these.
    Enum(&'static [&'static str]),
    ListOfStr,
    /// A path literal (`./host`) or a string holding a path.
    Path,
}

impl Ty {
    /// The type in the words of the NixOS module (`types.str`, `types.enum [...]`).
    pub fn nix_name(self) -> String {
        match self {
            Ty::Bool => "types.bool".into(),
            Ty::Str => "types.str".into(),
            Ty::Int => "types.int".into(),
            Ty::Enum(values) => {
                let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                format!("types.enum [ {} ]", quoted.join(" "))
            }
            Ty::ListOfStr => "types.listOf types.str".into(),
            Ty::Path => "types.path".into(),
        }
    }
}

/// A default value, written so that the table can be a `const`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    Null,
    Bool(bool),
    Str(&'static str),
    Int(i64),
    EmptyList,
    /// The effective value of another (top-level) option: a host's `customInstaller.rootDevice`
    /// is the top-level `customInstaller.rootDevice` unless the host sets its own.
    Inherit(&'static str),
}

impl Default {
    /// The default as a value; for [`Default::Inherit`], the other option's own default (the
    /// readers resolve it against the other option's effective value instead).
    pub fn to_value(self) -> Value {
        match self {
            Default::Null => Value::Null,
            Default::Bool(b) => Value::Bool(b),
            Default::Str(s) => Value::String(s.into()),
            Default::Int(i) => Value::from(i),
            Default::EmptyList => Value::Array(vec![]),
            Default::Inherit(path) => find(path).map_or(Value::Null, |o| o.default.to_value()),
        }
    }
}

/// The segment of a path that stands for any member's name of an attribute set of submodules.
pub const NAME: &str = "<name>";

/// A rule on one value beyond its type. `Err` says what is allowed.
pub type Rule = fn(&Value) -> Result<(), String>;

/// One option of the schema.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// Dotted path, as written in a NixOS module: `nfsroot.bootLoader.efinetDHCPInterface`.
    pub path: &'static str,
    pub ty: Ty,
    /// `types.nullOr ...` in the module: `null` is allowed and means "not set".
    pub nullable: bool,
    pub default: Default,
    pub description: &'static str,
    pub rule: Option<Rule>,
    /// Accepted in the JSON form only (lib.mkFleet writes it), never in a Nix file, and not
    /// declared in nix/module.nix.
    pub json_only: bool,
}

impl OptionSpec {
    /// For an option inside an attribute set of submodules, the set's path: `fleet.hosts` for
    /// `fleet.hosts.<name>.macs`.
    pub fn named_set(&self) -> Option<&'static str> {
        self.path.split_once(".<name>.").map(|(set, _)| set)
    }

    /// The option's path for one member: `fleet.hosts.web1.macs` (a name that is not a plain
    /// Nix identifier is quoted, as Nix writes it).
    pub fn concrete(&self, name: Option<&str>) -> String {
        match name {
            Some(name) => self.path.replace(NAME, &quote_segment(name)),
            None => self.path.to_string(),
        }
    }

    pub fn nix_type(&self) -> String {
        if self.nullable {
            format!("types.nullOr ({})", self.ty.nix_name())
        } else {
            self.ty.nix_name()
        }
    }

    /// Checks `value` against the type and the rule; `Err` says what is allowed.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        if value.is_null() {
            return if self.nullable {
                Ok(())
            } else {
                Err(format!("null is not allowed; expected {}", self.expected()))
            };
        }
        let type_ok = match self.ty {
            Ty::Bool => value.is_boolean(),
            Ty::Str | Ty::Path => value.is_string(),
            Ty::Int => value.is_i64(),
            Ty::Enum(_) => value.is_string(),
            Ty::ListOfStr => value.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        };
        if !type_ok {
            return Err(format!("got {}; expected {}", describe(value), self.expected()));
        }
        if let Ty::Enum(allowed) = self.ty {
            let got = value.as_str().unwrap_or_default();
            if !allowed.contains(&got) {
                return Err(format!("\"{got}\" is not one of {}", self.expected()));
            }
        }
        match self.rule {
            Some(rule) => rule(value),
            None => Ok(()),
        }
    }

    /// What a value of this option looks like, for error messages.
    pub fn expected(&self) -> String {
        let base = match self.ty {
            Ty::Bool => "true or false".to_string(),
            Ty::Str => "a string".to_string(),
            Ty::Int => "an integer".to_string(),
            Ty::Path => "a path".to_string(),
            Ty::ListOfStr => "a list of strings".to_string(),
            Ty::Enum(values) => {
                let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                quoted.join(", ")
            }
        };
        if self.nullable { format!("{base} or null") } else { base }
    }
}

/// A short description of a JSON value, for "got ..." in messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string \"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an attribute set".into(),
    }
}

pub const WRITABLE_LAYERS: &[&str] = &["overlayfs", "unionfs-fuse"];
pub const WIPE_POLICIES: &[&str] = &["if-empty", "always"];
pub const AFTER_INSTALL: &[&str] = &["reboot", "poweroff", "halt"];
pub const FIRMWARES: &[&str] = &["auto", "uefi", "bios", "both"];
pub const COMPRESSIONS: &[&str] = &["zstd", "gzip", "xz"];
pub const DHCP_MODES: &[&str] = &["authoritative", "proxy"];
pub const UNKNOWN_HOSTS: &[&str] = &["local-boot", "hold"];
pub const BMC_PROTOCOLS: &[&str] = &["redfish", "ipmi"];
pub const BMC_BOOT_TARGETS: &[&str] = &["pxe", "uefi-http"];
/// The value of the two interface options that means "the NIC the firmware booted from".
pub const AUTO: &str = "auto";

/// Where the kernel must be, relative to the TFTP root (the seed's fixed name).
pub const KERNEL_TFTP_PATH: &str = "nixos/bzImage";
/// The boot loader file name x86-64 UEFI firmware fetches (DHCP option 67).
pub const LOADER_FILE_NAME: &str = "bootx64.efi";
/// The boot loader file name legacy BIOS PXE firmware fetches: GRUB i386-pc-pxe. The `.0` is the
/// PXE "layer" suffix BIOS boot files traditionally carry (dnsmasq's pxe-service adds it).
pub const BIOS_LOADER_FILE_NAME: &str = "bios.0";

macro_rules! opt {
    ($path:literal, $ty:expr, $default:expr, $rule:expr, $desc:literal) => {
        OptionSpec { path: $path, ty: $ty, nullable: false, default: $default, rule: $rule, description: $desc, json_only: false }
    };
    (null $path:literal, $ty:expr, $rule:expr, $desc:literal) => {
        OptionSpec { path: $path, ty: $ty, nullable: true, default: Default::Null, rule: $rule, description: $desc, json_only: false }
    };
}

/// A host's own value of a top-level `customInstaller` option: the same type and rule, and the
/// top-level value as its default.
macro_rules! host_override {
    ($base:expr, $name:literal) => {
        OptionSpec {
            path: concat!("fleet.hosts.<name>.customInstaller.", $name),
            default: Default::Inherit(concat!("customInstaller.", $name)),
            description: concat!("This host's own customInstaller.", $name, "; unset, the top-level value applies."),
            ..$base
        }
    };
}

/// A host's own value of a fleet-wide `fleet.bmc` option: the same type and rule, and the
/// fleet-wide value as its default.
macro_rules! host_bmc {
    ($base:expr, $name:literal) => {
        OptionSpec {
            path: concat!("fleet.hosts.<name>.bmc.", $name),
            default: Default::Inherit(concat!("fleet.bmc.", $name)),
            description: concat!("This host's own fleet.bmc.", $name, "; unset, the fleet-wide value applies."),
            ..$base
        }
    };
}

// The fleet-wide BMC settings a host may override, named once for both places.
const BMC_PROTOCOL: OptionSpec = opt!("fleet.bmc.protocol", Ty::Enum(BMC_PROTOCOLS), Default::Str("redfish"), None,
    "How `nixos-pxe fleet power`, `fleet reinstall --power-cycle` and `fleet apply` talk to a host's BMC: \"redfish\" (JSON over HTTPS, checked against bmc.certificate or bmc.fingerprint) or \"ipmi\" (IPMI 2.0 over LAN, RMCP+, through ipmitool; no certificate).");
const BMC_USER: OptionSpec = opt!(null "fleet.bmc.user", Ty::Str, Some(rules::bmc_user),
    "The BMC account the fleet commands log in as.");
const BMC_PASSWORD_FILE: OptionSpec = opt!(null "fleet.bmc.passwordFile", Ty::Str, Some(rules::secret_file),
    "A file on the boot server holding the BMC account's password (its first line), read when a fleet command runs; a string, never a Nix path, so that it stays out of the Nix store, which every user can read.");
const BMC_CERTIFICATE: OptionSpec = opt!(null "fleet.bmc.certificate", Ty::Path, Some(rules::absolute_path),
    "PEM file with the certificate a Redfish BMC must present, or the certificate authority that signed it (checked with the BMC's address as its name). Exactly one of bmc.certificate and bmc.fingerprint for a Redfish BMC.");
const BMC_BOOT_TARGET: OptionSpec = opt!("fleet.bmc.bootTarget", Ty::Enum(BMC_BOOT_TARGETS), Default::Str("pxe"), None,
    "The one-time boot a reinstall asks the BMC for: \"pxe\" (Redfish BootSourceOverrideTarget Pxe, IPMI chassis bootdev pxe) or \"uefi-http\" (Redfish UefiHttp, for hosts that boot by UEFI HTTP boot; Redfish only).");

// The customInstaller options a fleet host may override, named once for both places.
const NETWORKING_USE_DHCP: OptionSpec = opt!("customInstaller.networking.useDHCP", Ty::Bool, Default::Bool(true), None,
    "Whether the installed system configures its network by DHCP; if false, the lease the installer got is written as a static configuration.");
const NETWORKING_STATIC_INTERFACE: OptionSpec = opt!(null "customInstaller.networking.staticInterfaceFromDHCP", Ty::Str, Some(rules::interface),
    "Interface of the installed system that gets the static address from the installer's lease. Required when useDHCP is false.");
const ROOT_DEVICE: OptionSpec = opt!("customInstaller.rootDevice", Ty::Str, Default::Str("/dev/sda"), Some(rules::device_path),
    "Whole disk to install on: a kernel name (/dev/sda, /dev/nvme0n1) or, better, a stable /dev/disk/by-id/ name (virtio-, nvme- and wwn- ids are found from sysfs, without udev).");
const PARTITION_SEPARATOR: OptionSpec = opt!(null "customInstaller.partitionSeparator", Ty::Str, Some(rules::partition_separator),
    "Text between the disk name and the partition number; null picks it from the kernel's rule (\"p\" after a trailing digit, as in nvme0n1p1).");
const WIPE: OptionSpec = opt!("customInstaller.wipe", Ty::Enum(WIPE_POLICIES), Default::Str("if-empty"), None,
    "\"if-empty\" refuses to touch a disk that holds a partition table or a filesystem; \"always\" overwrites it (the seed's behaviour).");
const ESP_SIZE: OptionSpec = opt!("customInstaller.espSizeMiB", Ty::Int, Default::Int(512), Some(rules::esp_size),
    "Size of the EFI system partition (FAT32, label ESP) in MiB.");
const SWAP_SIZE: OptionSpec = opt!("customInstaller.swapSizeMiB", Ty::Int, Default::Int(0), Some(rules::non_negative),
    "Size of a swap partition at the end of the disk in MiB; 0 for none.");
const ROOT_SIZE: OptionSpec = opt!(null "customInstaller.rootSizeMiB", Ty::Int, Some(rules::root_size),
    "Size of the ext4 root partition (label nixos) in MiB; null for the rest of the disk.");
const FIRMWARE: OptionSpec = opt!("customInstaller.firmware", Ty::Enum(FIRMWARES), Default::Str("uefi"), None,
    "The firmware the installed disk boots with. \"uefi\": an ESP and systemd-boot, registered in the firmware's boot entries. \"bios\": a BIOS boot partition and GRUB for legacy BIOS (no ESP). \"both\": the BIOS boot partition and the ESP, GRUB for BIOS and GRUB's EFI loader as /EFI/BOOT/BOOTX64.EFI, so the disk boots either way. \"auto\": what the machine booted the installer with (/sys/firmware/efi exists: uefi, else bios); the system image then holds a system for each. An image built for uefi is refused on a BIOS machine and one built for bios on a UEFI machine, before anything is written.");
const AFTER_INSTALL_OPTION: OptionSpec = opt!("customInstaller.afterInstall", Ty::Enum(AFTER_INSTALL), Default::Str("reboot"), None,
    "What the installer does when it has finished.");

/// Every option, in the order `nixos-pxe options` lists them.
pub const OPTIONS: &[OptionSpec] = &[
    // The boot loader and kernel (the seed's nfsroot.*).
    opt!("nfsroot.bootLoader.efinetDHCPInterface", Ty::Str, Default::Str("efinet0"), Some(rules::efinet),
        "GRUB network interface on which net_bootp runs and from which DHCP option 66 (the TFTP server) is read. GRUB numbers the NICs the firmware connected, in boot order: efinet0 is the first. \"auto\": no second DHCP; GRUB uses the firmware's lease on the NIC it booted from (its next-server is the boot server). A fleet needs \"auto\"."),
    opt!("nfsroot.bootLoader.linuxPnPInterface", Ty::Str, Default::Str("eth0"), Some(rules::pnp_interface),
        "Interface name the kernel (not udev) gives the NIC used for IP autoconfiguration and the NFS root, as in ip=:::::eth0:dhcp:. \"auto\": ip=dhcp (the kernel asks on every NIC) and the MAC GRUB booted from goes on the command line as nixos-pxe.mac=, so the installer can check it configured that NIC. A fleet needs \"auto\"."),
    opt!("nfsroot.bootLoader.serial.device", Ty::Str, Default::Str("ttyS0"), Some(rules::serial_device),
        "Serial console used by GRUB (unit N of ttySN) and the kernel (console=)."),
    opt!("nfsroot.bootLoader.serial.settings", Ty::Str, Default::Str("115200n8"), Some(rules::serial_settings),
        "Serial settings in the kernel's console= form: speed, parity (n, o, e), data bits."),
    opt!("nfsroot.bootLoader.timeout", Ty::Int, Default::Int(5), Some(rules::non_negative),
        "Seconds GRUB shows its menu before it boots the installer."),
    opt!("nfsroot.extraKernelOptions", Ty::ListOfStr, Default::EmptyList, Some(rules::kernel_symbols),
        "Kernel config symbols to build in on top of the NFS-root set, e.g. \"MLX5_CORE\" or \"NR_CPUS=512\". A driver is built in only if everything it depends on is: list its dependencies too (e.g. \"QED\" for \"QEDE\")."),
    opt!("nfsroot.writableLayer", Ty::Enum(WRITABLE_LAYERS), Default::Str("overlayfs"), None,
        "How init makes the read-only NFS root writable: overlayfs, or unionfs-fuse (the seed's way, for kernels without overlayfs)."),
    opt!("nfsroot.init", Ty::Str, Default::Str("/init"), Some(rules::init_path),
        "Path of the init program inside the NFS root, passed as init= (the tarball links /init to nixos-pxe). Its file name must be init: nixos-pxe is init only when started under that name as PID 1."),
    // The installer (the seed's customInstaller.*).
    NETWORKING_USE_DHCP,
    NETWORKING_STATIC_INTERFACE,
    ROOT_DEVICE,
    PARTITION_SEPARATOR,
    WIPE,
    ESP_SIZE,
    SWAP_SIZE,
    ROOT_SIZE,
    FIRMWARE,
    AFTER_INSTALL_OPTION,
    opt!("customInstaller.imageCompression", Ty::Enum(COMPRESSIONS), Default::Str("zstd"), None,
        "Compression of the system image in the NFS root."),
    opt!(null "customInstaller.target.directory", Ty::Path, None,
        "Directory holding the target system's configuration.nix."),
    opt!(null "customInstaller.target.flake", Ty::Str, Some(rules::flake_output),
        "The target system as a flake output, FLAKEREF#NAME for nixosConfigurations.NAME."),
    // The boot server: what the DHCP, TFTP and NFS server configurations need.
    opt!("bootServer.dhcpMode", Ty::Enum(DHCP_MODES), Default::Str("authoritative"), None,
        "\"authoritative\": the boot server hands out addresses; \"proxy\": another DHCP server does, so the loader and kernel are told the server explicitly."),
    opt!(null "bootServer.address", Ty::Str, Some(rules::ipv4),
        "IPv4 address of the boot server (TFTP next-server and NFS server)."),
    opt!(null "bootServer.name", Ty::Str, Some(rules::host_name),
        "TFTP server name sent as DHCP option 66, resolved by GRUB through DNS; null sends the address."),
    opt!(null "bootServer.interface", Ty::Str, Some(rules::interface),
        "Interface of the boot server facing the clients."),
    opt!(null "bootServer.subnet", Ty::Str, Some(rules::cidr),
        "The clients' IPv4 subnet in CIDR form, e.g. 10.42.0.0/24."),
    opt!(null "bootServer.dhcpRange.start", Ty::Str, Some(rules::ipv4),
        "First address handed out to clients."),
    opt!(null "bootServer.dhcpRange.end", Ty::Str, Some(rules::ipv4),
        "Last address handed out to clients."),
    opt!(null "bootServer.router", Ty::Str, Some(rules::ipv4),
        "Default gateway handed to clients (DHCP option 3)."),
    opt!("bootServer.nameServers", Ty::ListOfStr, Default::EmptyList, Some(rules::ipv4_list),
        "DNS servers handed to clients (DHCP option 6)."),
    opt!(null "bootServer.domainName", Ty::Str, Some(rules::host_name),
        "Domain name handed to clients (DHCP option 15)."),
    opt!("bootServer.leaseSeconds", Ty::Int, Default::Int(3600), Some(rules::lease_seconds),
        "DHCP lease time in seconds."),
    opt!("bootServer.answerBootp", Ty::Bool, Default::Bool(false), None,
        "Whether `nixos-pxe serve`'s authoritative DHCP answers BOOTP requests (no DHCP message type, option 53) with an address from the range. Off by default: every loader in the chain (the firmware, iPXE, GRUB, the kernel) speaks DHCP, and a BOOTP lease never expires."),
    opt!("bootServer.tftpRoot", Ty::Str, Default::Str("/srv/tftp"), Some(rules::server_path),
        "TFTP root on the boot server: bootx64.efi at its top, the kernel at nixos/bzImage."),
    opt!("bootServer.nfsExport", Ty::Str, Default::Str("/srv/nixos/nfsroot"), Some(rules::server_path),
        "Directory on the boot server where the NFS root tarball is unpacked and exported read-only."),
    opt!(null "bootServer.nfsClients", Ty::Str, Some(rules::nfs_clients),
        "Clients allowed to mount the NFS root (CIDR or address); null means bootServer.subnet."),
    opt!("bootServer.nfsMountOptions", Ty::Str, Default::Str("vers=3,tcp"), Some(rules::mount_options),
        "NFS mount options the kernel uses for the root, after the path in root-path (option 17) or nfsroot=. For `nixos-pxe serve --nfs-root` (no portmapper, no lock manager): \"vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock\"."),
    // Secure Boot with the site's own keys: what the boot server signs with, where the key is.
    opt!("bootServer.secureBoot.enable", Ty::Bool, Default::Bool(false), None,
        "Secure Boot on, verified by the site's own db key (README: \"Secure Boot with the site's own keys\"). `nixos-pxe sign`, on the boot server, makes the installer's boot file, a unified kernel image (systemd-stub, the kernel, an initrd holding nixos-pxe, its configuration and a manifest of digests, and the command line) signed with keyFile, which the firmware verifies whole against db; the installer started from it (UEFI PXE or UEFI HTTP boot) reads the firmware's SecureBoot variable, asks serve for a fleet host's decision (nixos-pxe/hosts/mac-<MAC>.json), fetches its programs, the system image and the system's signed boot file over HTTP and checks each against the manifest before the disk is touched (the image is kept in memory until it matched whole), and puts the signed boot file on the ESP, which the firmware verifies at every boot. The flake builds the unsigned parts (lib.mkFleet's secureBootParts) and services.nixos-pxe signs them in nixos-pxe-sign.service, the key its credential, before serve. The NFS root is not used; legacy BIOS clients are not served. Needs bootServer.address, keyFile and certificateFile, and customInstaller.firmware = \"uefi\" (for every host)."),
    opt!(null "bootServer.secureBoot.keyFile", Ty::Str, Some(rules::secret_key_file),
        "The db signing key (PEM, unencrypted) on the boot server: an absolute path as a string, read by `nixos-pxe sign` only. Never a Nix path literal and never below /nix/store, which every user can read."),
    opt!(null "bootServer.secureBoot.certificateFile", Ty::Path, Some(rules::absolute_path),
        "The db certificate (PEM X.509) that keyFile's key belongs to: the certificate the clients' firmware has enrolled in db. Public: it may be in the configuration or the Nix store."),
    // A fleet: many hosts, each recognised by its MACs, each installed once per generation.
    opt!("fleet.maxAttempts", Ty::Int, Default::Int(3), Some(rules::positive),
        "Failed or abandoned install attempts of one generation after which a host is held (a GRUB menu saying why) instead of installed again."),
    opt!("fleet.trustBootNetwork", Ty::Bool, Default::Bool(false), None,
        "Whether `nixos-pxe serve` may hand a host's install token to, and take its reports from, any address. Off (the default), serve gives a host's per-host file with its token, and takes its reports, only from the address its DHCP saw for one of the host's MACs (the lease it gave, or in proxy mode the address the machine asked the site's server for), so another machine on the boot network cannot read the token nor install, fail, hold or confirm the host. Needed, and only then, with `serve --dhcp off`, where serve sees no DHCP: serve refuses to serve a fleet that way without it."),
    opt!("fleet.unknownHosts", Ty::Enum(UNKNOWN_HOSTS), Default::Str("local-boot"), None,
        "What a machine whose MAC is in no host gets: \"local-boot\" (on UEFI GRUB starts the first disk's EFI boot loader, systemd-boot or /EFI/BOOT/BOOTX64.EFI, else exits to the firmware; on BIOS it exits to the BIOS, which boots its next boot device) or \"hold\" (a GRUB menu naming the MAC, no timeout, never a reboot). Never an install."),
    BMC_PROTOCOL,
    BMC_USER,
    BMC_PASSWORD_FILE,
    BMC_CERTIFICATE,
    BMC_BOOT_TARGET,
    opt!("fleet.hosts.<name>.macs", Ty::ListOfStr, Default::EmptyList, Some(rules::mac_list),
        "MAC addresses of the host's NICs the firmware may boot from, in any usual spelling (52:54:00:ab:cd:01, 52-54-00-AB-CD-01, 5254.00ab.cd01, 525400abcd01). At least one; each belongs to one host."),
    opt!("fleet.hosts.<name>.generation", Ty::Int, Default::Int(1), Some(rules::generation),
        "The host's install generation: installed once; bump it to install the host again."),
    opt!(null "fleet.hosts.<name>.target.directory", Ty::Path, None,
        "Directory holding this host's configuration.nix. Exactly one of target.directory and target.flake."),
    opt!(null "fleet.hosts.<name>.target.flake", Ty::Str, Some(rules::flake_output),
        "This host's system as a flake output, FLAKEREF#NAME for nixosConfigurations.NAME. Exactly one of target.directory and target.flake."),
    OptionSpec {
        json_only: true,
        ..opt!(null "fleet.hosts.<name>.image", Ty::Str, Some(rules::image_path),
            "The host's system image below /nixos-pxe/ in the NFS root (systems/HASH.tar.zst); written by lib.mkFleet into the JSON form, not set by hand.")
    },
    host_override!(NETWORKING_USE_DHCP, "networking.useDHCP"),
    host_override!(NETWORKING_STATIC_INTERFACE, "networking.staticInterfaceFromDHCP"),
    host_override!(ROOT_DEVICE, "rootDevice"),
    host_override!(PARTITION_SEPARATOR, "partitionSeparator"),
    host_override!(WIPE, "wipe"),
    host_override!(ESP_SIZE, "espSizeMiB"),
    host_override!(SWAP_SIZE, "swapSizeMiB"),
    host_override!(ROOT_SIZE, "rootSizeMiB"),
    host_override!(FIRMWARE, "firmware"),
    host_override!(AFTER_INSTALL_OPTION, "afterInstall"),
    // The host's BMC, for the fleet's power commands.
    opt!(null "fleet.hosts.<name>.bmc.address", Ty::Str, Some(rules::bmc_address),
        "The host's BMC on the management network: a host name or IPv4 address, or [IPv6], with :PORT when it is not the protocol's (443 for Redfish, 623 for IPMI). Unset: the fleet's power commands cannot reach this host."),
    host_bmc!(BMC_PROTOCOL, "protocol"),
    host_bmc!(BMC_USER, "user"),
    host_bmc!(BMC_PASSWORD_FILE, "passwordFile"),
    host_bmc!(BMC_CERTIFICATE, "certificate"),
    opt!(null "fleet.hosts.<name>.bmc.fingerprint", Ty::Str, Some(rules::sha256_fingerprint),
        "SHA-256 fingerprint of the certificate this host's Redfish BMC presents (as `openssl x509 -noout -fingerprint -sha256` prints it): that certificate and no other is accepted, whoever signed it. Exactly one of bmc.certificate and bmc.fingerprint for a Redfish BMC."),
    opt!(null "fleet.hosts.<name>.bmc.systemId", Ty::Str, Some(rules::redfish_id),
        "The Redfish id of this host's system (the last part of /redfish/v1/Systems/ID), needed when its BMC manages several systems; unset, the BMC must list exactly one."),
    host_bmc!(BMC_BOOT_TARGET, "bootTarget"),
];

/// The option with this path, as the schema writes it (`fleet.hosts.<name>.macs`).
pub fn find(path: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.path == path)
}

/// What a concrete attribute path (as a reader met it) is in the schema.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// An option; `name` is the member's name when the option is inside an attribute set of
    /// submodules (`web1` for `fleet.hosts.web1.macs`).
    Option { spec: &'static OptionSpec, name: Option<String> },
    /// An attribute set holding options (`nfsroot.bootLoader`, `fleet.hosts`). `member` is
    /// `(set, name)` when the path ends at a member of an attribute set of submodules
    /// (`fleet.hosts.web1`): the member exists even if it sets nothing.
    Prefix { member: Option<(&'static str, String)> },
    Unknown,
}

impl PartialEq for Lookup {
    /// Options are the same when their paths are (a path names one option).
    fn eq(&self, other: &Lookup) -> bool {
        match (self, other) {
            (Lookup::Option { spec: a, name: m }, Lookup::Option { spec: b, name: n }) => a.path == b.path && m == n,
            (Lookup::Prefix { member: a }, Lookup::Prefix { member: b }) => a == b,
            (Lookup::Unknown, Lookup::Unknown) => true,
            _ => false,
        }
    }
}

/// Matches `segments` against every option's path (`<name>` matches any one segment).
pub fn lookup<S: AsRef<str>>(segments: &[S]) -> Lookup {
    let mut prefix = None;
    for spec in OPTIONS {
        let pattern: Vec<&str> = spec.path.split('.').collect();
        if segments.len() > pattern.len() {
            continue;
        }
        let mut name = None;
        let matches = segments.iter().zip(&pattern).all(|(segment, p)| {
            if *p == NAME {
                name = Some(segment.as_ref().to_string());
                true
            } else {
                segment.as_ref() == *p
            }
        });
        if !matches {
            continue;
        }
        if segments.len() == pattern.len() {
            return Lookup::Option { spec, name };
        }
        let member = match (pattern[segments.len() - 1] == NAME, spec.named_set(), name) {
            (true, Some(set), Some(name)) => Some((set, name)),
            _ => None,
        };
        prefix.get_or_insert(Lookup::Prefix { member });
    }
    prefix.unwrap_or(Lookup::Unknown)
}

/// A concrete path as dotted text, each segment that is not a plain Nix identifier quoted.
pub fn dotted<S: AsRef<str>>(segments: &[S]) -> String {
    segments.iter().map(|s| quote_segment(s.as_ref())).collect::<Vec<_>>().join(".")
}

fn quote_segment(segment: &str) -> String {
    let plain = segment.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '<')
        && segment.chars().all(|c| c.is_ascii_alphanumeric() || "_-'<>".contains(c));
    if plain { segment.to_string() } else { format!("{segment:?}") }
}

/// The top-level attribute names that belong to this schema.
pub const ROOTS: &[&str] = &["nfsroot", "customInstaller", "bootServer", "fleet"];

/// The option whose path is nearest to `path`, for "did you mean" hints; for a path inside a
/// member of an attribute set (`fleet.hosts.web1.macz`) the member's name stays as written.
pub fn nearest(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('.').collect();
    OPTIONS
        .iter()
        .map(|o| {
            let pattern: Vec<&str> = o.path.split('.').collect();
            // The pattern with the member's name the user wrote in the place of `<name>`.
            let named: Vec<&str> =
                pattern.iter().enumerate().map(|(i, p)| if *p == NAME { segments.get(i).copied().unwrap_or(p) } else { p }).collect();
            let candidate = named.join(".");
            (edit_distance(&candidate.to_lowercase(), &path.to_lowercase()), candidate)
        })
        .filter(|(d, _)| *d <= 3 + path.len() / 8)
        .min()
        .map(|(_, p)| p)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Parses `a.b.c.d/nn`.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((addr, len))
}

/// The netmask of a prefix length.
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
    Ipv4Addr::from(bits)
}

/// Whether `addr` lies in `net/prefix`.
pub fn in_subnet(addr: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::from(netmask(prefix));
    u32::from(addr) & mask == u32::from(net) & mask
}

/// The per-value rules. Each returns what is allowed when the value is not.
pub mod rules {
    use super::*;

    fn str_of(v: &Value) -> &str {
        v.as_str().unwrap_or_default()
    }

    pub fn efinet(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        match s.strip_prefix("efinet") {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
            _ if s == AUTO => Ok(()),
            _ => Err(format!(
                "\"{s}\" is not a GRUB EFI network interface; expected efinetN, e.g. \"efinet0\", or \"auto\" for the NIC the firmware booted from"
            )),
        }
    }

    /// The kernel's IP-PnP interface: a Linux interface name, or "auto".
    pub fn pnp_interface(v: &Value) -> Result<(), String> {
        if str_of(v) == AUTO {
            return Ok(());
        }
        interface(v).map_err(|e| format!("{e}, or \"auto\" for the NIC GRUB booted from"))
    }

    pub fn positive(v: &Value) -> Result<(), String> {
        match v.as_i64() {
            Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Ok(()),
            _ => Err(format!("{v} is out of range; expected 1 or more")),
        }
    }

    pub fn generation(v: &Value) -> Result<(), String> {
        positive(v).map_err(|_| format!("{v} is not a generation; expected 1 or more (bump it to install the host again)"))
    }

    /// Every item a MAC address in one of the usual spellings.
    pub fn mac_list(v: &Value) -> Result<(), String> {
        for item in v.as_array().into_iter().flatten() {
            str_of(item).parse::<crate::config::fleet::Mac>().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A path below /nixos-pxe/ in the NFS root: relative, no `..`, no odd characters.
    pub fn image_path(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        let ok = !s.is_empty()
            && !s.starts_with('/')
            && !s.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(format!("\"{s}\" is not a system image below /nixos-pxe/; expected a relative path like \"systems/HASH.tar.zst\""))
        }
    }

    /// A Linux interface name: 1 to 15 bytes, no '/', ':', white space (the kernel's dev_valid_name,
    /// and ':' because it separates the fields of ip=).
    pub fn interface(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        let ok = !s.is_empty()
            && s.len() <= 15
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "\"{s}\" is not a Linux interface name; expected 1 to 15 characters without '/', ':' or spaces, e.g. \"eth0\""
            ))
        }
    }

    pub fn serial_device(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        match s.strip_prefix("ttyS") {
            Some(n) if !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
            _ => Err(format!("\"{s}\" is not a PC serial port; expected ttyS0, ttyS1, ...")),
        }
    }

    /// `115200n8`: speed, parity, data bits (the kernel's console= form).
    pub fn serial_settings(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        if super::parse_serial_settings(s).is_some() {
            Ok(())
        } else {
            Err(format!(
                "\"{s}\" is not a serial setting; expected SPEED PARITY BITS like \"115200n8\" (parity n, o or e; 5 to 8 bits)"
            ))
        }
    }

    pub fn non_negative(v: &Value) -> Result<(), String> {
        match v.as_i64() {
            Some(n) if n >= 0 => Ok(()),
            _ => Err(format!("{} is negative; expected 0 or more", v)),
        }
    }

    pub fn esp_size(v: &Value) -> Result<(), String> {
        match v.as_i64() {
            Some(n) if (64..=65536).contains(&n) => Ok(()),
            _ => Err(format!("{v} MiB is out of range; expected 64 to 65536 MiB (UEFI wants FAT32, 512 is usual)")),
        }
    }

    pub fn root_size(v: &Value) -> Result<(), String> {
        match v.as_i64() {
            Some(n) if n >= 1024 => Ok(()),
            _ => Err(format!("{v} MiB is too small for a NixOS root; expected at least 1024, or null for the rest of the disk")),
        }
    }

    pub fn lease_seconds(v: &Value) -> Result<(), String> {
        match v.as_i64() {
            Some(n) if (60..=u32::MAX as i64).contains(&n) => Ok(()),
            _ => Err(format!("{v} is out of range; expected 60 seconds or more")),
        }
    }

    pub fn kernel_symbols(v: &Value) -> Result<(), String> {
        for item in v.as_array().into_iter().flatten() {
            let s = str_of(item);
            if crate::kernel_symbol::parse_symbol(s).is_none() {
                return Err(format!(
                    "\"{s}\" is not a kernel config symbol; expected upper-case SYMBOL or SYMBOL=VALUE, e.g. \"MLX5_CORE\" or \"NR_CPUS=512\""
                ));
            }
        }
        Ok(())
    }

    /// A BMC account name: what HTTP Basic authentication and ipmitool's -U can carry.
    pub fn bmc_user(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        if !s.is_empty() && s.len() <= 64 && !s.contains(':') && s.chars().all(|c| !c.is_control()) {
            Ok(())
        } else {
            Err(format!("\"{}\" is not a BMC account name; expected 1 to 64 characters without ':' or control characters", s.escape_default()))
        }
    }

    /// A secret's file on the boot server: absolute, and not in the Nix store (world-readable).
    pub fn secret_file(v: &Value) -> Result<(), String> {
        absolute_path(v)?;
        let s = str_of(v);
        if s.starts_with("/nix/store/") {
            Err(format!(
                "\"{s}\" is in the Nix store, which every user on the machine can read; keep the password in a file outside it (e.g. /run/secrets/bmc, written by your secret manager) and give its path as a string"
            ))
        } else {
            Ok(())
        }
    }

    /// `host`, `host:port`, `a.b.c.d`, `a.b.c.d:port`, `[v6]`, `[v6]:port`.
    pub fn bmc_address(v: &Value) -> Result<(), String> {
        crate::config::bmc::Address::parse(str_of(v)).map(|_| ())
    }

    /// 32 bytes in hexadecimal, with or without ':' between them, any case.
    pub fn sha256_fingerprint(v: &Value) -> Result<(), String> {
        crate::config::bmc::Fingerprint::parse(str_of(v)).map(|_| ())
    }

    /// A Redfish resource id: one path segment of safe characters.
    pub fn redfish_id(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        if !s.is_empty() && s.len() <= 128 && s != "." && s != ".." && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)) {
            Ok(())
        } else {
            Err(format!("\"{}\" is not a Redfish system id; expected letters, digits, '-', '_', '.' or '~', e.g. \"System.Embedded.1\" or \"1\"", s.escape_default()))
        }
    }

    pub fn absolute_path(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        if s.starts_with('/') && !s.contains(char::is_whitespace) {
            Ok(())
        } else {
            Err(format!("\"{s}\" is not an absolute path without spaces"))
        }
    }

    /// The Nix store's directory: anything below it is readable by every user of the machine.
    pub const NIX_STORE: &str = "/nix/store/";

    /// bootServer.secureBoot.keyFile: an absolute path that is not in the Nix store.
    pub fn secret_key_file(v: &Value) -> Result<(), String> {
        absolute_path(v)?;
        let s = str_of(v);
        if s.starts_with(NIX_STORE) || s == NIX_STORE.trim_end_matches('/') {
            return Err(format!(
                "\"{s}\" is in the Nix store, which every user of the machine can read: a signing key must never be there; \
                 keep it on the boot server, e.g. \"/var/lib/nixos-pxe-keys/db.key\" (mode 0600), and give its path as a string"
            ));
        }
        Ok(())
    }

    /// nfsroot.init: the kernel starts it with the path as argv[0], and nixos-pxe is init only
    /// under the file name `init` (start.rs); any other name would run the command line as PID 1.
    pub fn init_path(v: &Value) -> Result<(), String> {
        absolute_path(v)?;
        let s = str_of(v);
        if crate::start::is_init_path(s) {
            Ok(())
        } else {
            Err(format!(
                "\"{s}\" does not end in /{name}: nixos-pxe becomes the NFS root's init only when the kernel starts it \
                 under the file name `{name}`; use \"/init\" (the tarball's link) or link e.g. /sbin/{name} to nixos-pxe",
                name = crate::start::INIT_FILE_NAME
            ))
        }
    }

    pub fn device_path(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        if s.starts_with("/dev/") && s.len() > 5 && !s.contains(char::is_whitespace) && !s.contains("/../") {
            Ok(())
        } else {
            Err(format!("\"{s}\" is not a device path; expected /dev/sda, /dev/nvme0n1 or /dev/disk/by-id/..."))
        }
    }

    pub fn partition_separator(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        if s.len() <= 8 && s.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
            Ok(())
        } else {
            Err(format!("\"{s}\" is not a partition separator; expected \"\", \"p\" or \"-part\""))
        }
    }

    pub fn flake_output(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        match s.rsplit_once('#') {
            Some((flake, name)) if !flake.is_empty() && !name.is_empty() && !name.contains(char::is_whitespace) => Ok(()),
            _ => Err(format!("\"{s}\" is not a flake output; expected FLAKEREF#NAME, e.g. \"/etc/fleet#web1\"")),
        }
    }

    pub fn ipv4(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        s.parse::<Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| format!("\"{s}\" is not an IPv4 address; expected dotted quad like \"10.0.0.1\""))
    }

    pub fn ipv4_list(v: &Value) -> Result<(), String> {
        v.as_array().into_iter().flatten().try_for_each(ipv4)
    }

    pub fn cidr(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        match parse_cidr(s) {
            Some((addr, len)) if in_subnet(addr, addr, len) && u32::from(addr) & !u32::from(netmask(len)) == 0 => Ok(()),
            Some((addr, len)) => {
                let net = Ipv4Addr::from(u32::from(addr) & u32::from(netmask(len)));
                Err(format!("\"{s}\" has host bits set; the network is \"{net}/{len}\""))
            }
            None => Err(format!("\"{s}\" is not an IPv4 subnet; expected CIDR like \"10.42.0.0/24\"")),
        }
    }

    pub fn nfs_clients(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        if s == "*" || s.parse::<Ipv4Addr>().is_ok() || parse_cidr(s).is_some() {
            Ok(())
        } else {
            Err(format!("\"{s}\" is not an NFS client specification; expected a CIDR, an address or \"*\""))
        }
    }

    pub fn host_name(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !s.is_empty() && s.len() <= 253 && s.trim_end_matches('.').split('.').all(label_ok) {
            Ok(())
        } else {
            Err(format!("\"{s}\" is not a host or domain name; expected letters, digits and '-' in dot-separated labels"))
        }
    }

    pub fn server_path(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        let ok = s.starts_with('/')
            && s.len() > 1
            && !s.split('/').any(|c| c == "..")
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(format!("\"{s}\" is not a usable server path; expected an absolute path of letters, digits and / . _ - +"))
        }
    }

    pub fn mount_options(v: &Value) -> Result<(), String> {
        let s = str_of(v);
        let ok = !s.is_empty()
            && s.split(',').all(|o| !o.is_empty() && o.bytes().all(|b| b.is_ascii_alphanumeric() || b"=_.".contains(&b)));
        if ok {
            Ok(())
        } else {
            Err(format!("\"{s}\" is not a list of NFS mount options; expected comma-separated words like \"vers=3,tcp\""))
        }
    }
}

/// Serial settings split into their parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SerialSettings {
    pub speed: u32,
    /// GRUB's word for the parity: `no`, `odd`, `even`.
    pub parity: &'static str,
    pub bits: u8,
}

/// Parses `115200n8`.
pub fn parse_serial_settings(s: &str) -> Option<SerialSettings> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (speed, rest) = s.split_at(split);
    let speed: u32 = speed.parse().ok().filter(|n| (50..=4_000_000).contains(n))?;
    let mut chars = rest.chars();
    let parity = match chars.next()? {
        'n' => "no",
        'o' => "odd",
        'e' => "even",
        _ => return None,
    };
    let bits = chars.next()?.to_digit(10)? as u8;
    if !(5..=8).contains(&bits) || chars.next().is_some() {
        return None;
    }
    Some(SerialSettings { speed, parity, bits })
}

/// The options as a Markdown table, for the README (kept equal by `tests/readme.rs`).
pub fn markdown_table() -> String {
    let mut text = String::from("| option | type | default | what it does |\n|---|---|---|---|\n");
    for o in OPTIONS.iter().filter(|o| !o.json_only) {
        let default = match o.default {
            Default::Str(s) => format!("`\"{s}\"`"),
            Default::Inherit(path) => format!("`{path}`"),
            other => format!("`{}`", other.to_value()).replace("`[]`", "`[ ]`"),
        };
        let ty = o.nix_type().replace("types.", "").replace('|', "\\|");
        text.push_str(&format!("| `{}` | {} | {} | {} |\n", o.path, ty, default, o.description.replace('|', "\\|")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_default_satisfies_its_own_rule() {
        for o in OPTIONS {
            assert_eq!(o.check(&o.default.to_value()), Ok(()), "{}", o.path);
        }
    }

    #[test]
    fn paths_are_unique_and_rooted() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert!(ROOTS.contains(&o.path.split('.').next().unwrap_or_default()), "{}", o.path);
            assert!(OPTIONS[..i].iter().all(|p| p.path != o.path), "duplicate {}", o.path);
            let segments: Vec<&str> = o.path.split('.').map(|s| if s == NAME { "web1" } else { s }).collect();
            assert!(matches!(lookup(&segments), Lookup::Option { spec, .. } if spec.path == o.path), "{} is both an option and a prefix", o.path);
            assert!(o.path.matches(NAME).count() <= 1, "{}: one <name> per path at most", o.path);
        }
    }

    #[test]
    fn lookup_matches_members_of_attribute_sets() {
        let Lookup::Option { spec, name } = lookup(&["fleet", "hosts", "web1", "customInstaller", "rootDevice"]) else {
            panic!("an option")
        };
        assert_eq!((spec.path, name.as_deref()), ("fleet.hosts.<name>.customInstaller.rootDevice", Some("web1")));
        assert_eq!(lookup(&["fleet", "hosts"]), Lookup::Prefix { member: None });
        assert_eq!(lookup(&["fleet", "hosts", "db-1"]), Lookup::Prefix { member: Some(("fleet.hosts", "db-1".into())) });
        assert_eq!(lookup(&["fleet", "hosts", "db-1", "target"]), Lookup::Prefix { member: None });
        assert_eq!(lookup(&["nfsroot", "bootLoader"]), Lookup::Prefix { member: None });
        assert_eq!(lookup(&["fleet", "hosts", "web1", "customInstaller", "imageCompression"]), Lookup::Unknown);
        assert_eq!(lookup(&["fleet", "hosts", "web1", "customInstaller", "target", "flake"]), Lookup::Unknown);
        assert!(matches!(lookup(&["nfsroot", "init"]), Lookup::Option { name: None, .. }));
        assert_eq!(dotted(&["fleet", "hosts", "a.b", "macs"]), "fleet.hosts.\"a.b\".macs");
        assert_eq!(find("fleet.hosts.<name>.macs").map(|o| o.concrete(Some("web1"))).as_deref(), Some("fleet.hosts.web1.macs"));
    }

    #[test]
    fn host_overrides_share_type_and_rule_with_the_top_level_option() {
        let overrides: Vec<&OptionSpec> = OPTIONS.iter().filter(|o| matches!(o.default, Default::Inherit(_))).collect();
        assert_eq!(overrides.len(), 15);
        for o in overrides {
            let Default::Inherit(base) = o.default else { unreachable!("filtered") };
            let base = find(base).unwrap_or_else(|| panic!("{}: inherits from a missing option", o.path));
            // customInstaller.X for fleet.hosts.<name>.customInstaller.X, fleet.bmc.X for
            // fleet.hosts.<name>.bmc.X.
            let own = o.path.strip_prefix("fleet.hosts.<name>.").unwrap_or_default();
            assert!(base.path == own || base.path.strip_prefix("fleet.") == Some(own), "{} inherits {}", o.path, base.path);
            assert_eq!((o.ty, o.nullable, o.rule.map(|r| r as usize)), (base.ty, base.nullable, base.rule.map(|r| r as usize)), "{}", o.path);
            assert_eq!(o.default.to_value(), base.default.to_value());
        }
        // Not overridable: the target is the host's own (fleet.hosts.<name>.target), the image
        // compression belongs to the system images lib.mkFleet builds.
        assert!(find("fleet.hosts.<name>.customInstaller.target.flake").is_none());
        assert!(find("fleet.hosts.<name>.customInstaller.imageCompression").is_none());
    }

    #[test]
    fn auto_is_allowed_for_both_interfaces_and_nowhere_else() {
        for path in ["nfsroot.bootLoader.efinetDHCPInterface", "nfsroot.bootLoader.linuxPnPInterface"] {
            assert_eq!(find(path).expect("option").check(&json!("auto")), Ok(()), "{path}");
        }
        assert!(find("nfsroot.bootLoader.efinetDHCPInterface").expect("option").check(&json!("automatic")).is_err());
        let err = find("nfsroot.bootLoader.linuxPnPInterface").expect("option").check(&json!("eth0:1")).unwrap_err();
        assert!(err.contains("or \"auto\""), "{err}");
        // "auto" is a fine Linux interface name for the installed system; it only means
        // something special for the boot interfaces.
        assert_eq!(find("customInstaller.networking.staticInterfaceFromDHCP").expect("option").check(&json!("auto")), Ok(()));
    }

    #[test]
    fn fleet_rules() {
        let macs = find("fleet.hosts.<name>.macs").expect("option");
        assert_eq!(macs.check(&json!(["52:54:00:AB:cd:01", "5254.00ab.cd02"])), Ok(()));
        assert!(macs.check(&json!(["52:54:00:ab:cd"])).unwrap_err().contains("52:54:00:ab:cd"));
        let generation = find("fleet.hosts.<name>.generation").expect("option");
        assert!(generation.check(&json!(0)).unwrap_err().contains("expected 1 or more"));
        assert!(generation.check(&json!(4_294_967_296_i64)).is_err());
        let image = find("fleet.hosts.<name>.image").expect("option");
        assert!(image.json_only);
        assert_eq!(image.check(&json!("systems/abc.tar.zst")), Ok(()));
        for bad in ["/systems/a", "systems/../../etc/shadow", "a//b", "a b"] {
            assert!(image.check(&json!(bad)).is_err(), "{bad}");
        }
        assert!(find("fleet.maxAttempts").expect("option").check(&json!(0)).is_err());
        assert!(find("fleet.unknownHosts").expect("option").check(&json!("install")).is_err());
    }

    #[test]
    fn rules_reject_what_they_should() {
        let efinet = find("nfsroot.bootLoader.efinetDHCPInterface").expect("option");
        assert!(efinet.check(&json!("efinet1")).is_ok());
        assert!(efinet.check(&json!("eth0")).unwrap_err().contains("efinetN"));
        assert_eq!(efinet.check(&json!("auto")), Ok(()));
        assert!(efinet.check(&json!("efinet")).is_err());
        assert!(efinet.check(&json!(3)).unwrap_err().contains("got the number 3"));
        let pnp = find("nfsroot.bootLoader.linuxPnPInterface").expect("option");
        assert!(pnp.check(&json!("enp0s31f6")).is_ok());
        assert!(pnp.check(&json!("eth0:1")).is_err());
        assert!(pnp.check(&json!("a-very-long-interface")).is_err());
        let wipe = find("customInstaller.wipe").expect("option");
        assert!(wipe.check(&json!("sometimes")).unwrap_err().contains("\"if-empty\", \"always\""));
        let subnet = find("bootServer.subnet").expect("option");
        assert!(subnet.check(&json!("10.0.0.0/8")).is_ok());
        assert!(subnet.check(&json!("10.0.0.1/8")).unwrap_err().contains("10.0.0.0/8"));
        let static_if = find("customInstaller.networking.staticInterfaceFromDHCP").expect("option");
        assert!(static_if.check(&Value::Null).is_ok());
        let device = find("customInstaller.rootDevice").expect("option");
        assert!(device.check(&json!("sda")).is_err());
        assert!(device.check(&json!("/dev/disk/by-id/nvme-Samsung_123")).is_ok());
        let init = find("nfsroot.init").expect("option");
        assert!(init.check(&json!("/sbin/init")).is_ok());
        assert!(init.check(&json!("init")).unwrap_err().contains("absolute path"));
        assert!(init.check(&json!("/bin/nixos-pxe")).unwrap_err().contains("does not end in /init"));
    }

    #[test]
    fn serial_settings_parse() {
        assert_eq!(parse_serial_settings("115200n8"), Some(SerialSettings { speed: 115200, parity: "no", bits: 8 }));
        assert_eq!(parse_serial_settings("9600e7").map(|s| s.parity), Some("even"));
        assert_eq!(parse_serial_settings("115200"), None);
        assert_eq!(parse_serial_settings("115200x8"), None);
        assert_eq!(parse_serial_settings("115200n9"), None);
        assert_eq!(parse_serial_settings("115200n8r"), None);
    }

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(nearest("nfsroot.bootloader.efinetDhcpInterface").as_deref(), Some("nfsroot.bootLoader.efinetDHCPInterface"));
        assert_eq!(nearest("customInstaller.rootDev").as_deref(), Some("customInstaller.rootDevice"));
        assert_eq!(nearest("fleet.hosts.web1.mac").as_deref(), Some("fleet.hosts.web1.macs"));
        assert_eq!(nearest("fleet.hosts.web1.customInstaller.rootDev").as_deref(), Some("fleet.hosts.web1.customInstaller.rootDevice"));
        assert_eq!(nearest("completely.different"), None);
    }
}
