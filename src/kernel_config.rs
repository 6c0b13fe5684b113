//! The kernel config fragment an NFS-root installer kernel needs, built in (no initrd, no
//! modules): the one source for the flake's `kernel` and the test kernel.

use crate::config::Config;
use crate::kernel_symbol::parse_symbol;
use serde_json::{Map, Value};

/// A set of symbols and why they are there (printed as a comment in the kconfig fragment).
pub struct Group {
    pub why: &'static str,
    pub symbols: &'static [&'static str],
}

/// What every installer kernel has, whatever the configuration says.
pub const GROUPS: &[Group] = &[
    Group {
        why: "networking and the kernel's own DHCP (ip=:::::IFACE:dhcp:)",
        symbols: &["NET", "INET", "PACKET", "UNIX", "IP_PNP", "IP_PNP_DHCP"],
    },
    Group {
        why: "the root file system over NFS (root=/dev/nfs, option 17 root-path)",
        symbols: &["NETWORK_FILESYSTEMS", "NFS_FS", "NFS_V3", "NFS_V4", "ROOT_NFS", "FSCACHE", "NFS_FSCACHE"],
    },
    Group {
        why: "a writable root over the read-only NFS root (overlayfs; FUSE for unionfs-fuse)",
        symbols: &["OVERLAY_FS", "FUSE_FS", "TMPFS", "SHMEM"],
    },
    Group {
        why: "a /dev without udev, /proc and /sys for init and the installer",
        symbols: &["DEVTMPFS", "DEVTMPFS_MOUNT", "PROC_FS", "SYSFS", "BINFMT_ELF", "BINFMT_SCRIPT"],
    },
    Group {
        why: "booted by GRUB on UEFI, serial console, EFI variables for the boot loader install",
        symbols: &["EFI", "EFI_STUB", "EFIVAR_FS", "SERIAL_8250", "SERIAL_8250_CONSOLE", "PRINTK", "TTY"],
    },
    Group {
        why: "what the network card drivers below depend on, built in as well: a driver can be no more built in \
              than its dependencies, and one of them left a module would take the driver with it (PTP clock: Intel, \
              Broadcom, Mellanox; GNSS: ice; VXLAN, MLXFW and the Hyper-V PCI interface: mlx5_core). \
              tests/kernel_fragment.rs proves the fragment on defconfig, as the flake configures its kernel",
        symbols: &["PTP_1588_CLOCK", "GNSS", "VXLAN", "MLXFW", "HYPERV", "PCI_HYPERV_INTERFACE"],
    },
    Group {
        why: "server network cards (the seed's fleet: Intel; today's racks: Broadcom, Mellanox, Realtek) and virtio",
        symbols: &[
            "PCI", "NETDEVICES", "ETHERNET", "NET_VENDOR_INTEL", "E1000", "E1000E", "IGB", "IXGBE", "I40E", "ICE",
            "NET_VENDOR_BROADCOM", "TIGON3", "BNX2X", "BNXT", "NET_VENDOR_MELLANOX", "MLX4_EN", "MLX5_CORE",
            "MLX5_CORE_EN", "NET_VENDOR_REALTEK", "R8169", "VIRTIO_MENU", "VIRTIO_PCI", "VIRTIO_NET",
        ],
    },
    Group {
        why: "the disks the installer writes: SATA/AHCI, NVMe, SAS/SCSI, virtio",
        symbols: &[
            "BLOCK", "BLK_DEV", "ATA", "SATA_AHCI", "BLK_DEV_NVME", "SCSI", "BLK_DEV_SD", "SCSI_LOWLEVEL",
            "SCSI_VIRTIO", "VIRTIO_BLK", "PARTITION_ADVANCED", "EFI_PARTITION", "MSDOS_PARTITION",
        ],
    },
    Group {
        why: "the file systems the installer makes and mounts: ext4 root, FAT32 ESP",
        symbols: &["EXT4_FS", "FAT_FS", "VFAT_FS", "NLS", "NLS_CODEPAGE_437", "NLS_ISO8859_1"],
    },
];

/// What a kernel booted in Secure Boot mode needs besides (bootServer.secureBoot.enable): it
/// starts nixos-pxe from the initrd of the signed unified kernel image, not from the NFS root.
pub const SECURE_BOOT: Group = Group {
    why: "bootServer.secureBoot: the installer starts from the initrd of the signed unified kernel image (nixos-pxe, \
          its configuration and the manifest of digests; zstd-compressed), not from the NFS root",
    symbols: &["BLK_DEV_INITRD", "RD_ZSTD"],
};

/// One line of the fragment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Symbol {
    pub name: String,
    pub value: String,
    pub why: &'static str,
}

/// Why the `nfsroot.extraKernelOptions` symbols are there, and what a driver among them needs:
/// kconfig quietly makes a driver a module when something it depends on is one, or leaves it off
/// when a dependency is off, and what the fragment leaves open keeps its defconfig default
/// (nix/kernel-config.sh; tests/kernel_fragment.rs shows both).
pub const EXTRA_WHY: &str = "nfsroot.extraKernelOptions. A driver is built in only if everything it depends on is \
    built in too (what the fragment leaves open keeps its defconfig default, often off, and the NFS root loads no \
    modules): list its dependencies here as well, e.g. QED for QEDE (the `depends on` lines of its Kconfig entry)";

/// The fragment for `config`: the fixed groups, then `nfsroot.extraKernelOptions`
/// (a later value for the same symbol wins).
pub fn fragment(config: &Config) -> Vec<Symbol> {
    let mut out: Vec<Symbol> = Vec::new();
    let mut set = |name: String, value: String, why: &'static str| match out.iter_mut().find(|s| s.name == name) {
        Some(existing) => {
            existing.value = value;
            existing.why = why;
        }
        None => out.push(Symbol { name, value, why }),
    };
    let secure_boot = config.boot_server.secure_boot.enable.then_some(&SECURE_BOOT);
    for group in GROUPS.iter().chain(secure_boot) {
        for symbol in group.symbols {
            set((*symbol).to_string(), "y".into(), group.why);
        }
    }
    for extra in &config.nfsroot.extra_kernel_options {
        if let Some((name, value)) = parse_symbol(extra) {
            set(name, value, EXTRA_WHY);
        }
    }
    out
}

/// The fragment as kconfig lines, for `merge_config.sh`.
pub fn to_kconfig(symbols: &[Symbol]) -> String {
    let header = match symbols.iter().any(|s| s.why == SECURE_BOOT.why) {
        false => "# Kernel config fragment from `nixos-pxe kernel-config`: built in, no modules, no initrd.\n",
        true => "# Kernel config fragment from `nixos-pxe kernel-config`: built in, no modules; the initrd is the signed UKI's.\n",
    };
    let mut text = String::from(header);
    let mut last_why = "";
    for s in symbols {
        if s.why != last_why {
            text.push_str(&format!("\n# {}\n", s.why));
            last_why = s.why;
        }
        let value = match s.value.as_str() {
            "n" => {
                text.push_str(&format!("# CONFIG_{} is not set\n", s.name));
                continue;
            }
            v if v == "y" || v == "m" || is_number(v) => v.to_string(),
            v if v.starts_with('"') => v.to_string(),
            v => format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")),
        };
        text.push_str(&format!("CONFIG_{}={}\n", s.name, value));
    }
    text
}

fn is_number(v: &str) -> bool {
    v.parse::<i64>().is_ok() || v.strip_prefix("0x").is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The fragment as a JSON object `{ "IP_PNP": "y", ... }`, for a caller's own Nix (e.g. nixpkgs'
/// `structuredExtraConfig`); the flake's kernel takes the kconfig lines (nix/kernel-config.sh).
pub fn to_json(symbols: &[Symbol]) -> Value {
    let map: Map<String, Value> = symbols.iter().map(|s| (s.name.clone(), Value::String(s.value.clone()))).collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, resolve};
    use crate::origin::Origin;
    use camino::Utf8Path;

    fn config_with_extra(extra: &[&str]) -> Config {
        let mut s = Settings::default();
        let spec = crate::schema::find("nfsroot.extraKernelOptions").expect("option");
        s.define(spec, serde_json::json!(extra), Origin::Default).expect("define");
        resolve(&s, Utf8Path::new("t.nix")).expect("valid").config
    }

    #[test]
    fn the_nfs_root_set_is_always_there_and_extras_follow() {
        let symbols = fragment(&config_with_extra(&["MLX5_CORE=n", "CMDLINE=\"quiet\"", "QED"]));
        let value = |n: &str| symbols.iter().find(|s| s.name == n).map(|s| s.value.as_str());
        for required in ["IP_PNP", "IP_PNP_DHCP", "NFS_FS", "NFS_V3", "NFS_V4", "ROOT_NFS", "OVERLAY_FS", "FUSE_FS", "DEVTMPFS_MOUNT"] {
            assert_eq!(value(required), Some("y"), "{required}");
        }
        assert_eq!(value("MLX5_CORE"), Some("n"));
        assert_eq!(value("QED"), Some("y"));
        let kconfig = to_kconfig(&symbols);
        assert!(kconfig.contains("\nCONFIG_IP_PNP=y\n"));
        assert!(kconfig.contains("# CONFIG_MLX5_CORE is not set\n"));
        assert!(kconfig.contains("CONFIG_CMDLINE=\"quiet\"\n"));
        assert_eq!(kconfig.lines().filter(|l| l.contains("CONFIG_MLX5_CORE ") || l.starts_with("CONFIG_MLX5_CORE=")).count(), 1);
        assert_eq!(to_json(&symbols)["QED"], "y");
        assert!(kconfig.contains("\n# nfsroot.extraKernelOptions. A driver is built in only if everything it depends on is built in too"));
    }
}
