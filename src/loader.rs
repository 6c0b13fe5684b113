//! Builds the boot loaders: standalone GRUB images with grub.cfg embedded, holding only the
//! modules that grub.cfg uses (found from its commands), and grub.cfg beside each as the seed did:
//! `bootx64.efi` (x86_64-efi, for UEFI PXE and UEFI HTTP boot) and, given GRUB's i386-pc modules,
//! `bios.0` (i386-pc-pxe, for legacy BIOS PXE) with `grub-bios.cfg`.
//! For a fleet each also holds the modules of every per-host configuration GRUB may load at run
//! time (`configfile`): a module missing from the image cannot be loaded from the network later.
//! A per-host file serves both firmwares and branches on `$grub_platform`; each image takes the
//! modules of its own branches ([`for_platform`]): `biosdisk` is i386-pc's alone.
//!
//! grub.cfg travels in the image's memdisk (a tar), not as grub-mkimage's `-c` config: GRUB runs
//! a `-c` config with its rescue parser, which has no `if` and no `menuentry` (the seed's config
//! only worked because its commands happened to run one after another). Normal mode reads
//! `(memdisk)/boot/grub/grub.cfg` through the prefix; `-c` only puts the console on the serial port.
//! The same holds on i386-pc: the memdisk, the prefix and the early config work there unchanged.
//!
//! ## Legacy BIOS: why the first probe printed nothing (measured 2026-11-30)
//! QEMU 7.2 (machine `pc`, `-accel tcg`), SeaBIOS 1.16.2 with Debian's iPXE ROM (ipxe-qemu
//! 1.0.0+git-20190125) on virtio-net, dnsmasq in a network namespace, `-display none -serial
//! file:` (VGA read back with the monitor's `screendump`). Four images, each with an early config
//! that sets up the serial port and prints a line:
//! - `cat pxeboot.img core.img` with core.img from `grub-mkimage -O i386-pc-pxe`: iPXE fetched it
//!   18.5 s after QEMU started; then nothing, on the serial port or VGA (black screen), for 45 s
//!   and no further packet. `-O i386-pc-pxe` already writes pxeboot.img in front of the core
//!   (util/mkimage.c), so the extra copy put a second pxeboot.img where the first one jumps
//!   (0x8200): GRUB never ran. This is the recipe of the first probe.
//! - `cat pxeboot.img core.img` with core.img from `-O i386-pc`: iPXE said `[Multiboot]` and
//!   started it as a Multiboot kernel (i386-pc cores carry a Multiboot header, which
//!   `-O i386-pc-pxe` zeroes "to avoid confusing ipxe"): GRUB ran without the PXE stack, found no
//!   card and printed `error: no server is specified`.
//! - `-O i386-pc-pxe` alone, early config `serial --unit=0 --speed=115200; terminal_output serial
//!   console` on one line: GRUB ran (it fetched normal.mod next) but printed only on VGA:
//!   ``the argument `--speed=115200;' requires an integer``: the rescue parser does not split at `;`.
//! - `-O i386-pc-pxe` alone, one command per line: GRUB printed on the serial port 0.3 s after the
//!   download. That is what `bios.0` is. With `-nographic` instead (QEMU then has SeaBIOS mirror
//!   the VGA text to the serial port, as a BIOS with console redirection does) `terminal_output
//!   serial console` puts every character there twice, interleaved: unreadable; `-vga none`
//!   changed nothing on the serial port.
//! - The 18 s before the download are iPXE's, not GRUB's: DHCP took until 5.3 s (it waits about
//!   3 s for ProxyDHCP offers), then iPXE waited for IPv6 router advertisements (router
//!   solicitations at 2.6, 3.4, 4.5, 6.5 and 10.6 s) until it gave up at 18.3 s. With a router
//!   advertising on the segment (dnsmasq `--enable-ra`) the download started at 5.3 s.
//! - iPXE's cached DHCP reply, from which GRUB configures the interface `pxe`, lacks option 66
//!   although dnsmasq sent it (`error: no DHCP option 66 found`); the reply to GRUB's own
//!   `net_bootp pxe` (interface `pxe:dhcp`) has it. So grub.cfg reads option 66 from GRUB's own
//!   lease on both firmwares.
//!
//! ## UEFI HTTP boot (measured 2026-11-30)
//! Debian's OVMF (2022.11) offers it: with PXE turned off (fw_cfg
//! `opt/org.tianocore/IPv4PXESupport=no`, `IPv6PXESupport=no`) its boot options were "UEFI HTTPv4
//! (MAC:525400123456)", "UEFI HTTPv6 (...)", then the shell; its DHCPDISCOVER carried option 93 = 16
//! and vendor class `HTTPClient:Arch:00016:UNDI:003000`, and it asked for option 60. Given
//! `HTTPClient` in option 60 and `http://10.42.0.1/bootx64.efi` as boot file it sent HEAD, then
//! GET, and GRUB printed 3.5 s after QEMU started. Without PXE turned off it tries PXEv4 and PXEv6
//! first. Then, with Debian's GRUB 2.06-13, which carries SUSE's HTTP boot patches (its efinet.mod
//! holds the string `HTTPClient`): `cmdpath` = `(http,10.42.0.1)`, `net_default_interface` =
//! `efinet0`, `net_default_server` = 10.42.0.1 (from the URL), `net_efinet0_ip` = the lease,
//! `net_efinet0_next_server` and `net_efinet0_dhcp_server_name` empty, `net_efinet0_boot_file` =
//! the URL, option 60 `HTTPClient` and no option 66 in `efinet0`'s (made-up) reply; `net_bootp
//! efinet0` then got a lease (`efinet0:dhcp`) with next-server and option 66. Upstream GRUB 2.06
//! and 2.12 (nixpkgs) configure nothing after HTTP boot: `grub_efi_net_config_real` in
//! efinet.c skips a device path ending in `Uri()` and reads only PXE's cached reply, so
//! `net_default_server` stays unset and no interface exists before `net_bootp`. grub.cfg therefore
//! takes the server from GRUB's own lease (option 66); an address embedded in grub.cfg is needed
//! only where that lease cannot name it: proxy DHCP (embedded already), a site DHCP server that
//! does not send option 66, or, for a kernel over HTTP instead of TFTP, the HTTP server's address
//! `(http,ADDRESS)` on upstream GRUB, which keeps no record of the URL it was loaded from.

use crate::command::{Command, CommandError};
use crate::config::Resolved;
use crate::error::Error;
use crate::boot_file::Platform;
use crate::render;
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::BTreeSet;

/// What building an image needs to know of each platform.
impl Platform {
    /// grub-mkimage's `-O` format. i386-pc-pxe writes pxeboot.img in front of the core itself and
    /// zeroes the core's Multiboot header; a second `cat pxeboot.img` in front breaks it (see the
    /// header of this file).
    fn mkimage_format(self) -> &'static str {
        match self {
            Platform::Efi => "x86_64-efi",
            Platform::Pc => "i386-pc-pxe",
        }
    }

    /// (target cpu, platform) as the module directory's modinfo.sh names them.
    fn modinfo(self) -> (&'static str, &'static str) {
        match self {
            Platform::Efi => ("x86_64", "efi"),
            Platform::Pc => ("i386", "pc"),
        }
    }

    /// The mk-bootloader flag that names this platform's module directory.
    pub fn lib_flag(self) -> &'static str {
        match self {
            Platform::Efi => "--grub-lib",
            Platform::Pc => "--grub-bios-lib",
        }
    }

    /// Where the module directory usually is.
    fn lib_hint(self) -> &'static str {
        match self {
            Platform::Efi => "pass GRUB's x86_64-efi module directory, e.g. /usr/lib/grub/x86_64-efi (Debian: grub-efi-amd64-bin) or ${grub2_efi}/lib/grub/x86_64-efi (nixpkgs)",
            Platform::Pc => "pass GRUB's i386-pc module directory, e.g. /usr/lib/grub/i386-pc (Debian: grub-pc-bin) or ${grub2}/lib/grub/i386-pc (nixpkgs)",
        }
    }
}

/// One image to build: the platform and where its GRUB modules are.
pub struct Target {
    pub platform: Platform,
    /// The module directory (holds `moddep.lst` and `*.mod`).
    pub lib: Utf8PathBuf,
}

/// What `build` wrote for one target.
pub struct Built {
    pub platform: Platform,
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
    ("regexp", "regexp"),
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

/// The lines of `cfg` that run on `platform`: a block under `if [ "$grub_platform" = "pc" ]; then`
/// (GRUB's own variable, `pc` or `efi`) runs only there, its `else` block only elsewhere. A
/// per-host file is one file for both firmwares, so each image needs the modules of its own
/// branches only (`biosdisk` exists for i386-pc alone). Other `if`s are kept whole.
pub fn for_platform(cfg: &str, platform: Platform) -> String {
    let name = match platform {
        Platform::Efi => "efi",
        Platform::Pc => "pc",
    };
    // One frame per open `if`: whether its current branch runs here (None: not a platform test).
    let mut frames: Vec<Option<bool>> = Vec::new();
    let mut kept = String::new();
    for line in cfg.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let first = words.first().copied().unwrap_or_default();
        let closes_itself = first == "if" && matches!(words.last(), Some(&"fi") | Some(&"fi;"));
        let runs = |frames: &[Option<bool>]| frames.iter().all(|f| f.unwrap_or(true));
        match first {
            "if" if !closes_itself => {
                let tested = words.windows(4).find(|w| w[0] == "[" && w[1] == "\"$grub_platform\"" && w[2] == "=").map(|w| w[3].trim_matches('"'));
                if runs(&frames) {
                    kept.push_str(line);
                    kept.push('\n');
                }
                frames.push(tested.map(|p| p == name));
                continue;
            }
            "else" => {
                if let Some(Some(here)) = frames.last_mut() {
                    *here = !*here;
                }
            }
            "fi" => {
                frames.pop();
            }
            _ => {}
        }
        if runs(&frames) || first == "fi" || first == "else" {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// Checks that `lib` is a module directory for `platform` holding every module.
fn check_modules(platform: Platform, lib: &Utf8Path, modules: &[String]) -> Result<(), Error> {
    let (flag, hint) = (platform.lib_flag(), platform.lib_hint());
    if !lib.is_dir() {
        return Err(Error::Message(format!("{flag} {lib} does not exist or is not a directory; {hint}")));
    }
    if !lib.join("moddep.lst").is_file() {
        return Err(Error::Message(format!("{lib} is not a GRUB module directory (no moddep.lst); {hint}")));
    }
    // modinfo.sh names the platform the modules were built for; modules of another platform
    // would make grub-mkimage fail later with a less helpful message.
    if let Ok(info) = std::fs::read_to_string(lib.join("modinfo.sh")) {
        let value = |key: &str| info.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string());
        let (cpu, name) = (value("grub_modinfo_target_cpu="), value("grub_modinfo_platform="));
        if let (Some(cpu), Some(name)) = (cpu, name)
            && (cpu.as_str(), name.as_str()) != platform.modinfo()
        {
            return Err(Error::Message(format!("{lib} holds GRUB modules for {cpu}-{name}, not {}; {hint}", platform.grub_name())));
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

/// One target's configuration and modules, rendered and checked before anything is built.
struct Planned<'a> {
    target: &'a Target,
    cfg: String,
    early: String,
    modules: Vec<String>,
}

fn plan<'a>(resolved: &Resolved, target: &'a Target) -> Result<Planned<'a>, Error> {
    let platform = target.platform;
    let cfg = render::grub_cfg(resolved, platform)?;
    let early = render::grub_early_cfg(resolved, platform)?;
    let mut modules: BTreeSet<String> = IMAGE_MODULES.iter().map(|m| (*m).to_string()).collect();
    modules.extend(modules_for(&for_platform(&cfg, platform))?);
    modules.extend(modules_for(&early)?);
    for host_cfg in crate::render::host_grub::every_kind(resolved)? {
        modules.extend(modules_for(&for_platform(&host_cfg, platform))?);
    }
    let modules: Vec<String> = modules.into_iter().collect();
    check_modules(platform, &target.lib, &modules)?;
    Ok(Planned { target, cfg, early, modules })
}

/// Renders each target's grub.cfg and builds its image with it embedded into `out`, beside a
/// copy of grub.cfg. Every target is checked, and every image built, before anything is written
/// to `out`: a failure leaves it as it was.
pub fn build(resolved: &Resolved, targets: &[Target], mkimage: &str, out: &Utf8Path) -> Result<Vec<Built>, Error> {
    let plans: Vec<Planned> = targets.iter().map(|t| plan(resolved, t)).collect::<Result<_, _>>()?;
    find_mkimage(mkimage)?;
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    let scratch = out.join(format!(".nixos-pxe-build-{}", std::process::id()));
    let result = build_in(&plans, mkimage, &scratch, out);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn build_in(plans: &[Planned], mkimage: &str, scratch: &Utf8Path, out: &Utf8Path) -> Result<Vec<Built>, Error> {
    std::fs::create_dir_all(scratch).map_err(Error::io(scratch))?;
    let images: Vec<Utf8PathBuf> = plans.iter().map(|p| make_image(p, mkimage, scratch)).collect::<Result<_, _>>()?;
    let mut built = Vec::new();
    for (p, made) in plans.iter().zip(images) {
        let platform = p.target.platform;
        let image = out.join(platform.image_name());
        std::fs::rename(&made, &image).map_err(Error::io(&image))?;
        let grub_cfg = render::write_atomically(&out.join(platform.cfg_name()), &p.cfg)?;
        let image_size = std::fs::metadata(&image).map_err(Error::io(&image))?.len();
        built.push(Built { platform, image, image_size, grub_cfg, modules: p.modules.clone() });
    }
    Ok(built)
}

/// Runs grub-mkimage for one plan in `scratch`; returns the image's path there.
fn make_image(p: &Planned, mkimage: &str, scratch: &Utf8Path) -> Result<Utf8PathBuf, Error> {
    let name = p.target.platform.grub_name();
    let early_path = scratch.join(format!("{name}-early.cfg"));
    std::fs::write(&early_path, &p.early).map_err(Error::io(&early_path))?;
    let memdisk = scratch.join(format!("{name}-memdisk.tar"));
    std::fs::write(&memdisk, memdisk_tar(&p.cfg).map_err(Error::io(&memdisk))?).map_err(Error::io(&memdisk))?;
    let image = scratch.join(p.target.platform.image_name());
    Command::new(mkimage)
        .args(["-O", p.target.platform.mkimage_format(), "-p", PREFIX])
        .arg("-d")
        .arg(p.target.lib.as_str())
        .arg("-c")
        .arg(early_path.as_str())
        .arg("-m")
        .arg(memdisk.as_str())
        .arg("-o")
        .arg(image.as_str())
        .args(p.modules.iter().map(String::as_str))
        .run()?;
    Ok(image)
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
            let r = crate::config::resolved_from(pairs, "t.nix");
            for platform in [Platform::Efi, Platform::Pc] {
                modules_for(&render::grub_cfg(&r, platform).expect("grub.cfg")).expect("grub.cfg's commands are mapped");
            }
            for file in crate::render::host_grub::every_kind(&r).expect("host files") {
                fleet_modules.extend(modules_for(&file).unwrap_or_else(|e| panic!("{e}:\n{file}")));
            }
        }
        for needed in ["chain", "configfile", "fat", "http", "minicmd", "part_gpt", "search", "sleep"] {
            assert!(fleet_modules.contains(needed), "{needed}: {fleet_modules:?}");
        }
    }

    #[test]
    fn each_platform_takes_the_lines_of_its_own_branches() {
        let cfg = "insmod a\nif [ \"$grub_platform\" = \"pc\" ]; then\n  insmod biosdisk\n  if [ -n \"$x\" ]; then\n    insmod inner\n  fi\nelse\n  insmod efi_only\nfi\nif [ \"$grub_platform\" = \"efi\" ]; then\n  insmod efi_too\nfi\nif [ -n \"$y\" ]; then insmod one_line; fi\ninsmod z\n";
        let modules = |p| modules_for(&for_platform(cfg, p)).expect("mapped");
        assert_eq!(modules(Platform::Pc), ["a", "biosdisk", "inner", "normal", "test", "z"]);
        assert_eq!(modules(Platform::Efi), ["a", "efi_only", "efi_too", "normal", "test", "z"]);
    }

    /// A fleet's per-host files hold a branch for each firmware; each image gets the modules of
    /// its own: biosdisk (which x86_64-efi does not have) for bios.0 only, and what both need in both.
    #[test]
    fn the_per_host_files_modules_are_collected_per_platform() {
        use crate::config::{Settings, resolve};
        use crate::origin::Origin;
        use serde_json::json;
        let mut s = Settings::default();
        for (path, value) in [
            ("nfsroot.bootLoader.efinetDHCPInterface", json!("auto")),
            ("nfsroot.bootLoader.linuxPnPInterface", json!("auto")),
            ("fleet.hosts.a.macs", json!(["52:54:00:00:00:01"])),
            ("fleet.hosts.a.target.flake", json!("/f#a")),
        ] {
            let segments: Vec<&str> = path.split('.').collect();
            let crate::schema::Lookup::Option { spec, name } = crate::schema::lookup(&segments) else { panic!("{path}") };
            s.define_named(spec, name.as_deref(), value, Origin::Default).expect("define");
        }
        let r = resolve(&s, camino::Utf8Path::new("t.nix")).expect("valid");
        let collect = |platform| {
            let mut m = BTreeSet::new();
            for file in crate::render::host_grub::every_kind(&r).expect("host files") {
                m.extend(modules_for(&for_platform(&file, platform)).expect("mapped"));
            }
            m.extend(modules_for(&for_platform(&render::grub_cfg(&r, platform).expect("grub.cfg"), platform)).expect("mapped"));
            m
        };
        let (pc, efi) = (collect(Platform::Pc), collect(Platform::Efi));
        assert!(pc.contains("biosdisk") && !efi.contains("biosdisk"), "pc {pc:?}\nefi {efi:?}");
        for both in ["chain", "ext2", "fat", "part_gpt", "regexp", "search", "minicmd"] {
            assert!(pc.contains(both) && efi.contains(both), "{both}: pc {pc:?}\nefi {efi:?}");
        }
        // Each is in the platform's own module directory (Debian's, where installed).
        for (platform, dir, modules) in [(Platform::Pc, "/usr/lib/grub/i386-pc", &pc), (Platform::Efi, "/usr/lib/grub/x86_64-efi", &efi)] {
            if camino::Utf8Path::new(dir).is_dir() {
                let list: Vec<String> = modules.iter().cloned().collect();
                check_modules(platform, camino::Utf8Path::new(dir), &list).expect("every module is there");
            }
        }
    }
}
