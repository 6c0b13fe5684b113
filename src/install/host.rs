//! What this machine installs: the single installer's configuration as it is, or the fleet host
//! the kernel command line names, with the host's `customInstaller` overrides laid over the
//! top-level ones and the host's own system image. Pure: the configuration and the command line
//! are read by the caller.

use super::kernel_args::{FleetArgs, KernelArgs};
use crate::config::Config;
use crate::error::Error;
use crate::config::fleet::Fleet;
use camino::{Utf8Component, Utf8Path, Utf8PathBuf};

/// The install this machine does.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The configuration to install with: for a fleet host, its merged `customInstaller`.
    pub config: Config,
    /// The host's image (below the configuration's directory); `None`: the single installer's
    /// default (`system.tar.zst` beside the configuration).
    pub image: Option<Utf8PathBuf>,
    pub fleet: Option<FleetInstall>,
}

/// A fleet host's install.
#[derive(Debug, Clone)]
pub struct FleetInstall {
    pub args: FleetArgs,
    /// Every host of the fleet with its generation, to name whose marker a refused disk carries.
    pub hosts: Vec<(String, u32)>,
}

/// Picks what to install from `config` (read from `config_file`) and the kernel's `args`.
pub fn select(config: &Config, config_file: &Utf8Path, args: &KernelArgs) -> Result<Selected, Error> {
    let fleet = Fleet::from_config(config).map_err(|e| Error::Message(format!("{config_file}: {e}")))?;
    let Some(fleet_args) = &args.fleet else {
        if !fleet.is_empty() {
            return Err(Error::Message(format!(
                "{config_file} describes a fleet ({} hosts), but the kernel command line names no host (nixos-pxe.host=): a fleet \
                 machine boots through its per-host GRUB configuration (nixos-pxe/hosts/mac-<MAC>.cfg), which names it. \
                 Is the boot server's per-host file for this machine missing, or was the installer's kernel started by hand?",
                fleet.hosts.len()
            )));
        }
        return Ok(Selected { config: config.clone(), image: None, fleet: None });
    };
    if fleet.is_empty() {
        return Err(Error::Message(format!(
            "the kernel command line names fleet host {} (nixos-pxe.host=), but {config_file} has no fleet (fleet.hosts is empty): \
             the boot server's per-host files and its NFS root are of different configurations",
            fleet_args.host
        )));
    }
    let Some(host) = fleet.host(&fleet_args.host) else {
        let names: Vec<&str> = fleet.hosts.iter().map(|h| h.name.as_str()).collect();
        return Err(Error::Message(format!(
            "the kernel command line names fleet host {}, which {config_file} does not have (its hosts: {}): the boot server's \
             per-host files and its NFS root are of different configurations",
            fleet_args.host,
            names.join(", ")
        )));
    };
    if host.generation != fleet_args.generation {
        return Err(Error::Message(format!(
            "the kernel command line installs generation {} of {}, but {config_file} says its generation is {}: the boot server's \
             per-host files and its NFS root are of different configurations",
            fleet_args.generation, host.name, host.generation
        )));
    }
    let image = match &host.image {
        Some(image) => Some(beside(config_file, image).map_err(|why| Error::Message(format!("{config_file}: fleet.hosts.{}.image \"{image}\" {why}", host.name)))?),
        None => None,
    };
    Ok(Selected {
        config: host.config_for(config),
        image,
        fleet: Some(FleetInstall { args: fleet_args.clone(), hosts: fleet.hosts.iter().map(|h| (h.name.clone(), h.generation)).collect() }),
    })
}

/// `relative` below the directory of `config_file`; it may not leave that directory.
fn beside(config_file: &Utf8Path, relative: &str) -> Result<Utf8PathBuf, String> {
    let path = Utf8Path::new(relative);
    if !path.components().all(|c| matches!(c, Utf8Component::Normal(_))) || relative.is_empty() {
        return Err("must be a relative path below the NFS root's /nixos-pxe/ (like systems/HASH.tar.zst), without \"..\"".into());
    }
    Ok(config_file.parent().unwrap_or(Utf8Path::new("/nixos-pxe")).join(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::typed::{FirmwareSetting, WipePolicy};
    use crate::install::kernel_args;
    use serde_json::json;

    fn config(fleet: serde_json::Value) -> Config {
        let mut tree = serde_json::to_value(crate::config::resolve(&Default::default(), Utf8Path::new("t.nix")).expect("defaults").config).expect("json");
        tree["customInstaller"]["rootDevice"] = "/dev/vda".into();
        tree["fleet"]["hosts"] = fleet;
        serde_json::from_value(tree).expect("config")
    }

    fn fleet() -> Config {
        config(json!({
            "web1": { "macs": ["52:54:00:00:00:a1"], "generation": 3, "target": { "directory": "/h/web", "flake": null },
                      "customInstaller": { "espSizeMiB": 256, "wipe": "always", "firmware": "both" }, "image": "systems/web.tar.zst" },
            "db1": { "macs": ["52:54:00:00:0b:01"], "generation": 1, "target": { "directory": null, "flake": "/f#db1" } },
        }))
    }

    fn args(line: &str) -> KernelArgs {
        kernel_args::parse(line).expect("args")
    }

    const FILE: &str = "/nixos-pxe/config.json";

    #[test]
    fn a_fleet_host_gets_its_overrides_and_its_image() {
        let s = select(&fleet(), Utf8Path::new(FILE), &args("nixos-pxe.host=web1 nixos-pxe.generation=3 nixos-pxe.mac=52:54:00:00:00:a1")).expect("web1");
        assert_eq!(s.image.as_deref(), Some(Utf8Path::new("/nixos-pxe/systems/web.tar.zst")));
        assert_eq!((s.config.custom_installer.esp_size_mib, s.config.custom_installer.wipe), (256, WipePolicy::Always));
        assert_eq!(s.config.custom_installer.root_device, "/dev/vda", "the top-level value where the host sets none");
        assert_eq!(s.config.custom_installer.firmware, FirmwareSetting::Both, "the host's own firmware");
        let f = s.fleet.expect("fleet");
        assert_eq!((f.args.host.as_str(), f.args.generation), ("web1", 3));
        assert_eq!(f.hosts, [("db1".to_string(), 1), ("web1".to_string(), 3)]);
        let db = select(&fleet(), Utf8Path::new(FILE), &args("nixos-pxe.host=db1 nixos-pxe.generation=1 nixos-pxe.mac=52:54:00:00:0b:01")).expect("db1");
        assert_eq!((db.image, db.config.custom_installer.esp_size_mib, db.config.custom_installer.wipe), (None, 512, WipePolicy::IfEmpty));
        assert_eq!(db.config.custom_installer.firmware, FirmwareSetting::Uefi, "the top-level default");
    }

    #[test]
    fn a_single_installer_is_unchanged() {
        let single = config(json!({}));
        let s = select(&single, Utf8Path::new(FILE), &args("ip=dhcp nixos-pxe.mac=52:54:00:00:00:a1")).expect("single");
        assert_eq!((s.config, s.image.is_none(), s.fleet.is_none()), (single, true, true));
    }

    #[test]
    fn mismatches_between_command_line_and_configuration_are_refused() {
        let err = |c: &Config, line: &str| select(c, Utf8Path::new(FILE), &args(line)).unwrap_err().to_string();
        assert!(err(&fleet(), "ip=dhcp").starts_with("/nixos-pxe/config.json describes a fleet (2 hosts), but the kernel command line names no host"));
        assert_eq!(
            err(&fleet(), "nixos-pxe.host=web9 nixos-pxe.generation=1 nixos-pxe.mac=52:54:00:00:00:a1"),
            "the kernel command line names fleet host web9, which /nixos-pxe/config.json does not have (its hosts: db1, web1): the \
             boot server's per-host files and its NFS root are of different configurations"
        );
        assert!(err(&fleet(), "nixos-pxe.host=web1 nixos-pxe.generation=2 nixos-pxe.mac=52:54:00:00:00:a1")
            .starts_with("the kernel command line installs generation 2 of web1, but /nixos-pxe/config.json says its generation is 3"));
        assert!(err(&config(json!({})), "nixos-pxe.host=web1 nixos-pxe.generation=3 nixos-pxe.mac=52:54:00:00:00:a1").contains("has no fleet"));
        for image in ["../etc/shadow", "/etc/shadow", "systems/../../x", ""] {
            let mut c = fleet();
            c.fleet.hosts.get_mut("web1").expect("web1").image = Some(image.into());
            let e = err(&c, "nixos-pxe.host=web1 nixos-pxe.generation=3 nixos-pxe.mac=52:54:00:00:00:a1");
            assert_eq!(
                e,
                format!("/nixos-pxe/config.json: fleet.hosts.web1.image \"{image}\" must be a relative path below the NFS root's /nixos-pxe/ (like systems/HASH.tar.zst), without \"..\"")
            );
        }
    }
}
