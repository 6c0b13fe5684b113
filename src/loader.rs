//! Builds the boot loader: a standalone GRUB EFI image with grub.cfg embedded, holding only the
//! modules that grub.cfg uses (found from its commands), and grub.cfg beside it as the seed did.
//! For a fleet also those of every per-host configuration GRUB may load at run time
//! (`configfile`): a module missing from the image cannot be loaded from the network later.
//!
//! grub.cfg travels in the image's memdisk (a tar), not as grub-mkimage's `-c` config: GRUB runs
//! a `-c` config with its rescue parser, which has no `if` and no `menuentry` (the seed's config
//! only worked because its commands happened to run one after another). Normal mode reads
//! `(memdisk)/boot/grub/grub.cfg` through the prefix; `-c` only puts the console on the serial port.

use crate::command::{Command, CommandError};
use crate::config::Resolved;
use crate::error::Error;
use crate::render;
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::BTreeSet;

/// Where GRUB's pieces are.
pub struct GrubTools {
    /// The x86_64-efi module directory (holds `moddep.lst` and `*.mod`).
    pub lib: Utf8PathBuf,
    /// The grub-mkimage program (a name on PATH or a path).
    pub mkimage: String,
}

/// What `build` wrote.
pub struct Built {
    pub image: Utf8PathBuf,
    pub image_size: u64,
    pub grub_cfg: Utf8PathBuf,
    pub modules: Vec<String>,
}

/// Which module provides each command grub.cfg may use. Commands of the script language itself
/// (`set`, `if`, `fi`, ...) need none. A command missing here is an error, so the table cannot
/// silently fall behind the template.
const COMMAND_MODULES: &[(&str, &str)] = &[
    ("serial", "serial"),
    ("terminal_input", "terminal"),
    ("terminal_output", "terminal"),
    ("menuentry", "normal"),
    ("echo", "echo"),
    ("sleep", "sleep"),
    ("reboot", "reboot"),
    ("[", "test"),
    ("test", "test"),
    ("net_bootp", "net"),
    ("net_get_dhcp_option", "net"),
    ("net_ls_cards", "net"),
    ("net_ls_addr", "net"),
    ("net_ls_routes", "net"),
    ("linux", "linux"),
    ("boot", "boot"),
    ("configfile", "configfile"),
    ("source", "configfile"),
    ("search", "search"),
    ("chainloader", "chain"),
    ("exit", "minicmd"),
    ("read", "read"),
];

/// Words that are part of GRUB's script language, not commands from modules.
const SCRIPT_WORDS: &[&str] = &["set", "if", "then", "else", "elif", "fi", "for", "do", "done", "while", "until", "function", "{", "}", "insmod"];

/// The modules grub.cfg needs: those its commands come from, those it `insmod`s, and `normal`
/// for the menu. grub-mkimage adds their dependencies (moddep.lst).
pub fn modules_for(grub_cfg: &str) -> Result<Vec<String>, Error> {
    let mut modules: BTreeSet<String> = BTreeSet::from(["normal".to_string()]);
    for line in grub_cfg.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace().map(|w| w.trim_end_matches(';'));
        // `if net_bootp efinet0; then` runs net_bootp: look past the keywords.
        let mut word = words.next();
        while let Some(w) = word {
            if matches!(w, "if" | "then" | "else" | "elif" | "while" | "until" | "!") {
                word = words.next();
            } else {
                break;
            }
        }
        let Some(command) = word else { continue };
        if command == "insmod" {
            if let Some(module) = words.next() {
                modules.insert(module.to_string());
            }
            continue;
        }
        if SCRIPT_WORDS.contains(&command) || command.contains('=') {
            continue;
        }
        match COMMAND_MODULES.iter().find(|(c, _)| *c == command) {
            Some((_, module)) => {
                modules.insert((*module).to_string());
            }
            None => {
                return Err(Error::Message(format!(
                    "internal: grub.cfg uses the command `{command}`, which src/loader.rs's COMMAND_MODULES does not map to a GRUB module"
                )));
            }
        }
    }
    Ok(modules.into_iter().collect())
}

const LIB_HINT: &str = "pass GRUB's x86_64-efi module directory, e.g. /usr/lib/grub/x86_64-efi (Debian: grub-efi-amd64-bin) or ${grub2_efi}/lib/grub/x86_64-efi (nixpkgs)";

/// Checks that `lib` is an x86_64-efi module directory holding every module.
fn check_modules(lib: &Utf8Path, modules: &[String]) -> Result<(), Error> {
    if !lib.is_dir() {
        return Err(Error::Message(format!("--grub-lib {lib} does not exist or is not a directory; {LIB_HINT}")));
    }
    if !lib.join("moddep.lst").is_file() {
        return Err(Error::Message(format!("{lib} is not a GRUB module directory (no moddep.lst); {LIB_HINT}")));
    }
    // modinfo.sh names the platform the modules were built for; i386-pc modules would make
    // grub-mkimage fail later with a less helpful message.
    if let Ok(info) = std::fs::read_to_string(lib.join("modinfo.sh")) {
        let value = |key: &str| info.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string());
        let (cpu, platform) = (value("grub_modinfo_target_cpu="), value("grub_modinfo_platform="));
        if let (Some(cpu), Some(platform)) = (cpu, platform)
            && (cpu != "x86_64" || platform != "efi")
        {
            return Err(Error::Message(format!("{lib} holds GRUB modules for {cpu}-{platform}, not x86_64-efi; {LIB_HINT}")));
        }
    }
    let missing: Vec<&str> = modules.iter().filter(|m| !lib.join(format!("{m}.mod")).is_file()).map(String::as_str).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Message(format!("{lib} lacks the GRUB modules {} that grub.cfg needs", missing.join(", "))))
    }
}

/// Finds grub-mkimage before anything is written, with a hint where it comes from.
fn find_mkimage(mkimage: &str) -> Result<(), Error> {
    let found = match Command::new(mkimage).resolve() {
        Ok(path) => path.is_file(),
        Err(_) => false,
    };
    if found {
        Ok(())
    } else {
        Err(CommandError::NotFound {
            program: mkimage.to_string(),
            hint: Some("Debian: apt-get install grub-common; nixpkgs: grub2_efi; or pass --grub-mkimage PATH".into()),
        }
        .into())
    }
}

/// Where grub.cfg lies in the memdisk, and the prefix that makes normal mode read it from there.
const MEMDISK_CFG: &str = "boot/grub/grub.cfg";
const PREFIX: &str = "(memdisk)/boot/grub";
/// Modules the image needs whatever grub.cfg says: the memdisk and its tar format, normal mode.
const IMAGE_MODULES: &[&str] = &["memdisk", "tar", "normal"];

/// The memdisk: a tar holding grub.cfg, deterministic (fixed owner, mode and time).
fn memdisk_tar(cfg: &str) -> Result<Vec<u8>, std::io::Error> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(cfg.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, MEMDISK_CFG, cfg.as_bytes())?;
    builder.into_inner()
}

/// Renders grub.cfg into `out` and builds `out/bootx64.efi` with it embedded.
pub fn build(resolved: &Resolved, tools: &GrubTools, out: &Utf8Path) -> Result<Built, Error> {
    let cfg = render::grub_cfg(resolved)?;
    let early = render::grub_early_cfg(resolved)?;
    let mut modules: BTreeSet<String> = IMAGE_MODULES.iter().map(|m| (*m).to_string()).collect();
    modules.extend(modules_for(&cfg)?);
    modules.extend(modules_for(&early)?);
    for host_cfg in crate::fleet::grub::every_kind(resolved)? {
        modules.extend(modules_for(&host_cfg)?);
    }
    let modules: Vec<String> = modules.into_iter().collect();
    check_modules(&tools.lib, &modules)?;
    find_mkimage(&tools.mkimage)?;
    std::fs::create_dir_all(out).map_err(Error::io(out))?;

    let image = out.join(crate::schema::LOADER_FILE_NAME);
    let scratch = Utf8PathBuf::from(format!("{image}.build-{}", std::process::id()));
    let result = make_image(tools, &scratch, &cfg, &early, &modules, &image);
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    let grub_cfg = render::write_atomically(&out.join("grub.cfg"), &cfg)?;
    let image_size = std::fs::metadata(&image).map_err(Error::io(&image))?.len();
    Ok(Built { image, image_size, grub_cfg, modules })
}

/// Runs grub-mkimage in `scratch` (removed by the caller) and renames its image to `image`.
fn make_image(tools: &GrubTools, scratch: &Utf8Path, cfg: &str, early: &str, modules: &[String], image: &Utf8Path) -> Result<(), Error> {
    std::fs::create_dir_all(scratch).map_err(Error::io(scratch))?;
    let early_path = scratch.join("early.cfg");
    std::fs::write(&early_path, early).map_err(Error::io(&early_path))?;
    let memdisk = scratch.join("memdisk.tar");
    std::fs::write(&memdisk, memdisk_tar(cfg).map_err(Error::io(&memdisk))?).map_err(Error::io(&memdisk))?;
    let tmp = scratch.join("bootx64.efi");
    Command::new(&tools.mkimage)
        .args(["-O", "x86_64-efi", "-p", PREFIX])
        .arg("-d")
        .arg(tools.lib.as_str())
        .arg("-c")
        .arg(early_path.as_str())
        .arg("-m")
        .arg(memdisk.as_str())
        .arg("-o")
        .arg(tmp.as_str())
        .args(modules.iter().map(String::as_str))
        .run()?;
    std::fs::rename(&tmp, image).map_err(Error::io(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_come_from_commands_and_insmod() {
        let cfg = "serial --unit=0\nterminal_input serial\nmenuentry \"x\" {\n  insmod efinet\n  if net_bootp efinet0; then\n    echo ok\n  fi\n  set a=b\n  if [ -z \"$a\" ]; then\n  linux (tftp)/k\n  boot\n}\n";
        assert_eq!(modules_for(cfg).expect("known"), ["boot", "echo", "efinet", "linux", "net", "normal", "serial", "terminal", "test"]);
    }

    #[test]
    fn an_unmapped_command_is_an_error() {
        let err = modules_for("lsefi\n").unwrap_err().to_string();
        assert!(err.contains("`lsefi`"), "{err}");
    }

    /// Every command every template can produce is mapped: grub.cfg of each kind of
    /// configuration, and each kind of per-host file a fleet machine may load.
    #[test]
    fn every_template_command_is_mapped() {
        use crate::config::{Settings, resolve};
        use crate::origin::Origin;
        use serde_json::json;
        let configs: &[&[(&str, serde_json::Value)]] = &[
            &[],
            &[("bootServer.dhcpMode", json!("proxy")), ("bootServer.address", json!("10.0.0.1"))],
            &[("nfsroot.bootLoader.efinetDHCPInterface", json!("auto"))],
            &[
                ("nfsroot.bootLoader.efinetDHCPInterface", json!("auto")),
                ("nfsroot.bootLoader.linuxPnPInterface", json!("auto")),
                ("fleet.unknownHosts", json!("hold")),
                ("fleet.hosts.a.macs", json!(["52:54:00:00:00:01"])),
                ("fleet.hosts.a.target.flake", json!("/f#a")),
            ],
        ];
        let mut fleet_modules = BTreeSet::new();
        for pairs in configs {
            let mut s = Settings::default();
            for (path, value) in *pairs {
                let segments: Vec<&str> = path.split('.').collect();
                let crate::schema::Lookup::Option { spec, name } = crate::schema::lookup(&segments) else { panic!("{path}") };
                s.define_named(spec, name.as_deref(), value.clone(), Origin::Default).expect("define");
            }
            let r = resolve(&s, camino::Utf8Path::new("t.nix")).expect("valid");
            modules_for(&render::grub_cfg(&r).expect("grub.cfg")).expect("grub.cfg's commands are mapped");
            for file in crate::fleet::grub::every_kind(&r).expect("host files") {
                fleet_modules.extend(modules_for(&file).unwrap_or_else(|e| panic!("{e}:\n{file}")));
            }
        }
        for needed in ["chain", "configfile", "fat", "http", "minicmd", "part_gpt", "search", "sleep"] {
            assert!(fleet_modules.contains(needed), "{needed}: {fleet_modules:?}");
        }
    }
}
