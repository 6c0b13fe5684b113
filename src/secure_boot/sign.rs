//! `nixos-pxe sign`: on the boot server, where the db key is, turns the unsigned parts a build
//! made (the installer's kernel and initrd, its tools, each system image and each system's
//! unsigned unified kernel image) into what serve hands out in Secure Boot mode:
//!
//! ```text
//! OUT/bootx64.efi                                  the installer: systemd-stub + kernel + initrd + command line, signed
//! OUT/nixos-pxe/secure-boot/tools.tar.zst          the installer's programs (as built)
//! OUT/nixos-pxe/secure-boot/<image>                each system image (as built)
//! OUT/nixos-pxe/secure-boot/<image stem>.efi       each system's unified kernel image, signed
//! OUT/nixos-pxe/secure-boot/manifest.json          the manifest, also inside bootx64.efi's initrd
//! ```
//!
//! Why a command of its own rather than `mk-bootloader` or serve: the key must stay on the boot
//! server (mk-bootloader runs in a build, whose outputs every user can read) and away from the
//! process that answers the network (serve): a compromised serve then holds no key. On NixOS
//! `services.nixos-pxe` runs it in a unit of its own before serve, the key handed to that unit
//! alone. What it signs with: sbsign (sbsigntool, in Debian and nixpkgs), which writes the
//! Authenticode signature EDK2 verifies (measured: OVMF with the test's own key in db boots what
//! it signs and refuses it with one byte changed). The sections are added with objcopy
//! (binutils), at the addresses ukify would choose ([`super::pe`]).

use super::keys::{self, Missing};
use super::manifest::{self, CHUNK, FileDigest, FORMAT, Manifest};
use super::{HTTP_DIR, MANIFEST_PATH, pe};
use crate::command::Command;
use crate::config::{self, ConfigArgs, ConfigError, Resolved};
use crate::error::Error;
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::BTreeMap;

/// What `nixos-pxe sign` is given.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The configuration the installer's initrd was built from (for a fleet its JSON form, with
    /// each host's image, as lib.mkFleet writes it): bootServer.secureBoot names the key and
    /// the certificate.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The unsigned parts: `kernel`, `initrd` (nixos-pxe pack --format newc, with
    /// nixos-pxe/config.json), `tools.tar.zst`, and for each system image its file and, beside
    /// it, the system's unified kernel image (`systems/HASH.tar.zst` and `systems/HASH.efi`).
    #[arg(long, value_name = "DIR")]
    pub unsigned: Utf8PathBuf,
    /// systemd's EFI stub (Debian: /usr/lib/systemd/boot/efi/linuxx64.efi.stub; nixpkgs:
    /// ${systemd}/lib/systemd/boot/efi/linuxx64.efi.stub).
    #[arg(long, value_name = "FILE")]
    pub stub: Utf8PathBuf,
    /// The directory serve serves (--tftp-root): bootx64.efi and nixos-pxe/secure-boot/ are
    /// written there, each file through a temporary name.
    #[arg(long, value_name = "DIR")]
    pub out: Utf8PathBuf,
    /// serve's HTTP port, named on the installer's signed command line.
    #[arg(long, value_name = "PORT", default_value_t = 80)]
    pub http_port: u16,
    /// objcopy to run (binutils).
    #[arg(long, value_name = "PROGRAM", default_value = "objcopy")]
    pub objcopy: String,
    /// sbsign to run (sbsigntool).
    #[arg(long, value_name = "PROGRAM", default_value = "sbsign")]
    pub sbsign: String,
    /// The db key to sign with, instead of bootServer.secureBoot.keyFile: where the service
    /// manager put it (services.nixos-pxe hands it to its signing unit as a systemd credential,
    /// `--key-file %d/db.key`). Checked as the option is: not in the Nix store, readable by its
    /// owner alone, the certificate's.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<Utf8PathBuf>,
    /// The db certificate, instead of bootServer.secureBoot.certificateFile (as --key-file).
    #[arg(long, value_name = "FILE")]
    pub certificate_file: Option<Utf8PathBuf>,
}

/// What was written.
pub struct Signed {
    pub boot_file: Utf8PathBuf,
    pub boot_file_size: u64,
    pub manifest: Manifest,
}

/// The name the signed boot file of `image` has: `systems/web.tar.zst` → `systems/web.efi`.
pub fn boot_file_name(image: &str) -> String {
    let stem = [".tar.zst", ".tar.gz", ".tar.xz", ".tar"].iter().find_map(|ext| image.strip_suffix(ext)).unwrap_or(image);
    format!("{stem}.efi")
}

/// The images the configuration installs: each fleet host's, or the single installer's.
pub fn images(resolved: &Resolved) -> Result<Vec<String>, Error> {
    let fleet = crate::config::fleet::Fleet::from_config(&resolved.config).map_err(|e| Error::Message(format!("{}: {e}", resolved.source)))?;
    if fleet.is_empty() {
        let codec = crate::compression::Codec::from(resolved.config.custom_installer.image_compression);
        return Ok(vec![format!("system.tar{}", codec.extension())]);
    }
    let mut images = Vec::new();
    for host in &fleet.hosts {
        let Some(image) = &host.image else {
            return Err(Error::Message(format!(
                "{}: fleet host {} names no image: give `nixos-pxe sign` the fleet's JSON form (lib.mkFleet's configJSON, config.json of the NFS root), which names each host's image",
                resolved.source, host.name
            )));
        };
        if !images.contains(image) {
            images.push(image.clone());
        }
    }
    Ok(images)
}

/// The signed command line of the installer: the console, the kernel's DHCP on every NIC, and
/// serve's HTTP endpoint.
pub fn cmdline(resolved: &Resolved, server: &str) -> String {
    let serial = &resolved.config.nfsroot.boot_loader.serial;
    format!("console={},{} ip=dhcp nixos-pxe.server={server}", serial.device, serial.settings)
}

pub fn run(args: &SignArgs) -> Result<Signed, Error> {
    let resolved = args.config.load()?;
    let sb = &resolved.config.boot_server.secure_boot;
    if !sb.enable {
        return Err(Error::Message(format!("{}: bootServer.secureBoot.enable is not set: nothing to sign", resolved.source)));
    }
    let given = keys::Given { key: args.key_file.clone(), certificate: args.certificate_file.clone() };
    let problems = keys::check_given(&resolved, Missing::Refuse, &given);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems).into());
    }
    let key = given.key_file(sb).map(Utf8Path::as_str);
    let cert = given.certificate_file(sb).map(Utf8Path::as_str);
    let (Some(key), Some(cert), Some(address)) = (key, cert, resolved.config.boot_server.address) else {
        return Err(Error::Message("internal: the configuration's rules let Secure Boot through without a key, a certificate or an address".into()));
    };
    let unsigned = &args.unsigned;
    let part = |name: &str| -> Result<Utf8PathBuf, Error> {
        let path = unsigned.join(name);
        if path.is_file() { Ok(path) } else { Err(Error::Message(format!("{path} is missing: --unsigned must hold the unsigned parts a build made (see nixos-pxe sign --help)"))) }
    };
    let (kernel, initrd, tools) = (part("kernel")?, part("initrd")?, part("tools.tar.zst")?);
    let stub = std::fs::read(&args.stub).map_err(Error::io(&args.stub))?;
    let layout = pe::layout(&stub).map_err(|why| Error::Message(format!("{}: {why}; give systemd's linuxx64.efi.stub", args.stub)))?;
    let base_initrd = std::fs::read(&initrd).map_err(Error::io(&initrd))?;
    same_configuration(&resolved, &initrd, &base_initrd)?;
    let images = images(&resolved)?;
    let mut parts = Vec::new();
    for image in &images {
        let boot = boot_file_name(image);
        let (image_path, boot_path) = (part(image)?, part(&boot)?);
        let boot_bytes = std::fs::read(&boot_path).map_err(Error::io(&boot_path))?;
        pe::layout(&boot_bytes).map_err(|why| Error::Message(format!("{boot_path}: {why}: the system's boot file must be a unified kernel image")))?;
        parts.push((image.clone(), image_path, boot, boot_path));
    }
    for program in [&args.objcopy, &args.sbsign] {
        Command::new(program.as_str()).resolve().map_err(|_| Error::Message(format!("`{program}` was not found on PATH (Debian: apt-get install binutils sbsigntool; nixpkgs: binutils, sbsigntool)")))?;
    }

    std::fs::create_dir_all(args.out.join(HTTP_DIR)).map_err(Error::io(args.out.join(HTTP_DIR)))?;
    let scratch = args.out.join(format!(".nixos-pxe-sign-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(Error::io(&scratch))?;
    let result = (|| {
        let server = match args.http_port {
            80 => format!("http://{address}"),
            port => format!("http://{address}:{port}"),
        };
        let served = |name: &str| format!("{HTTP_DIR}/{name}");
        // Each signed boot file, then every digest, then the initrd and the installer last.
        let mut boot_files = BTreeMap::new();
        let mut image_digests = BTreeMap::new();
        for (image, image_path, boot, boot_path) in &parts {
            let signed = scratch.join(boot.replace('/', "_"));
            sbsign(&args.sbsign, key, cert, boot_path, &signed)?;
            let dest = args.out.join(served(boot));
            place(&signed, &dest)?;
            boot_files.insert(image.clone(), file_digest(&dest, &served(boot))?);
            let dest = args.out.join(served(image));
            place_copy(image_path, &dest, &scratch)?;
            image_digests.insert(image.clone(), file_digest(&dest, &served(image))?);
        }
        let tools_dest = args.out.join(served("tools.tar.zst"));
        place_copy(&tools, &tools_dest, &scratch)?;
        let manifest = Manifest {
            format: FORMAT,
            chunk_size: CHUNK,
            server: server.clone(),
            tools: file_digest(&tools_dest, &served("tools.tar.zst"))?,
            images: image_digests,
            boot_files,
        };
        let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Message(format!("internal: the manifest: {e}")))?;
        let initrd_bytes = with_manifest(base_initrd.clone(), &manifest_json).map_err(Error::io(&initrd))?;
        let files = [
            (".osrel", format!("NAME=\"nixos-pxe installer\"\nID=nixos-pxe\nVERSION_ID={}\n", env!("CARGO_PKG_VERSION")).into_bytes()),
            (".cmdline", format!("{}\0", cmdline(&resolved, &server)).into_bytes()),
        ];
        let kernel_size = std::fs::metadata(&kernel).map_err(Error::io(&kernel))?.len();
        let sizes = [files[0].1.len() as u64, files[1].1.len() as u64, kernel_size, initrd_bytes.len() as u64];
        let at = pe::placements(&layout, &sizes);
        let mut objcopy = Command::new(args.objcopy.as_str());
        for ((name, bytes), vma) in files.iter().zip(&at) {
            let file = scratch.join(name.trim_start_matches('.'));
            std::fs::write(&file, bytes).map_err(Error::io(&file))?;
            objcopy = objcopy.arg("--add-section").arg(format!("{name}={file}")).arg("--change-section-vma").arg(format!("{name}=0x{vma:x}"));
        }
        let initrd_file = scratch.join("initrd");
        std::fs::write(&initrd_file, &initrd_bytes).map_err(Error::io(&initrd_file))?;
        for (name, file, vma) in [(".linux", &kernel, at[2]), (".initrd", &initrd_file, at[3])] {
            objcopy = objcopy.arg("--add-section").arg(format!("{name}={file}")).arg("--change-section-vma").arg(format!("{name}=0x{vma:x}"));
        }
        let unsigned_uki = scratch.join("bootx64-unsigned.efi");
        objcopy.arg(args.stub.as_str()).arg(unsigned_uki.as_str()).run()?;
        let signed_uki = scratch.join("bootx64.efi");
        sbsign(&args.sbsign, key, cert, &unsigned_uki, &signed_uki)?;
        let manifest_file = scratch.join("manifest.json");
        std::fs::write(&manifest_file, &manifest_json).map_err(Error::io(&manifest_file))?;
        place(&manifest_file, &args.out.join(MANIFEST_PATH))?;
        let boot_file = args.out.join(crate::schema::LOADER_FILE_NAME);
        place(&signed_uki, &boot_file)?;
        let boot_file_size = std::fs::metadata(&boot_file).map_err(Error::io(&boot_file))?.len();
        // What an earlier signing served and this one does not (an earlier fleet's images).
        let mut kept: std::collections::BTreeSet<Utf8PathBuf> =
            manifest.images.values().chain(manifest.boot_files.values()).chain([&manifest.tools]).map(|f| args.out.join(&f.path)).collect();
        kept.insert(args.out.join(MANIFEST_PATH));
        prune(&args.out.join(HTTP_DIR), &kept)?;
        Ok(Signed { boot_file, boot_file_size, manifest })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The initrd's own nixos-pxe/config.json must be the configuration being signed for: the
/// manifest covers the images it names, and the installer reads it.
fn same_configuration(resolved: &Resolved, initrd: &Utf8Path, bytes: &[u8]) -> Result<(), Error> {
    let (_, mut reader) = crate::compression::decoder(bytes).map_err(Error::io(initrd))?;
    let mut archive = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut archive).map_err(Error::io(initrd))?;
    let entries = crate::cpio::read(&archive).map_err(|why| Error::Message(format!("{initrd}: not a newc initrd: {why}")))?;
    let Some((_, _, text)) = entries.iter().find(|(name, _, _)| name == crate::init::CONFIG.trim_start_matches('/')) else {
        return Err(Error::Message(format!("{initrd} holds no {}: build it with nixos-pxe pack --format newc --file {}=CONFIG.json", crate::init::CONFIG, crate::init::CONFIG.trim_start_matches('/'))));
    };
    let name = Utf8PathBuf::from(format!("{initrd}:{}", crate::init::CONFIG));
    let settings = config::json::parse(&name, &String::from_utf8_lossy(text))?;
    let theirs = config::resolve(&settings, &name)?;
    if theirs.config != resolved.config {
        return Err(Error::Message(format!(
            "{initrd}'s {} is not the configuration {} being signed for: build the initrd from the same configuration (for a fleet, lib.mkFleet's configJSON)",
            crate::init::CONFIG,
            resolved.source
        )));
    }
    Ok(())
}

/// `base` followed by a newc archive holding the manifest: the kernel unpacks both.
fn with_manifest(mut base: Vec<u8>, manifest: &[u8]) -> std::io::Result<Vec<u8>> {
    base.resize(base.len().div_ceil(4) * 4, 0);
    let mut w = crate::cpio::Writer::new(Vec::new());
    let mut dir = String::new();
    for part in MANIFEST_PATH.split('/').collect::<Vec<_>>().split_last().map(|(_, p)| p.to_vec()).unwrap_or_default() {
        dir = if dir.is_empty() { part.to_string() } else { format!("{dir}/{part}") };
        w.entry(&dir, crate::cpio::DIRECTORY | 0o755, b"", crate::pack::MTIME)?;
    }
    w.entry(MANIFEST_PATH, crate::cpio::REGULAR | 0o444, manifest, crate::pack::MTIME)?;
    base.extend(w.finish()?);
    Ok(base)
}

fn sbsign(program: &str, key: &str, cert: &str, input: &Utf8Path, output: &Utf8Path) -> Result<(), Error> {
    Command::new(program).args(["--key", key, "--cert", cert, "--output"]).arg(output.as_str()).arg(input.as_str()).run()?;
    Ok(())
}

fn file_digest(file: &Utf8Path, served: &str) -> Result<FileDigest, Error> {
    let f = std::fs::File::open(file).map_err(Error::io(file))?;
    manifest::digest(served, std::io::BufReader::with_capacity(1 << 20, f)).map_err(Error::io(file))
}

/// Moves `from` (in the scratch directory, on the same file system) to `to`.
fn place(from: &Utf8Path, to: &Utf8Path) -> Result<(), Error> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    std::fs::rename(from, to).map_err(Error::io(to))
}

/// Puts a copy of `from` at `to`: a hard link where the file systems allow it (an image of
/// gigabytes is not copied at every signing), else a copy; through a temporary name. A symbolic
/// link (the flake's parts link into the store) is followed first: a link of a link would be
/// served as one, and serve refuses links.
fn place_copy(from: &Utf8Path, to: &Utf8Path, scratch: &Utf8Path) -> Result<(), Error> {
    let tmp = scratch.join(to.file_name().unwrap_or("copy"));
    let _ = std::fs::remove_file(&tmp);
    let from = std::fs::canonicalize(from).map_err(Error::io(from))?;
    if std::fs::hard_link(&from, &tmp).is_err() {
        std::fs::copy(from, &tmp).map_err(Error::io(&tmp))?;
    }
    place(&tmp, to)
}

/// Removes every file below `dir` that is not in `kept`, and the directories left empty: `sign`
/// owns `OUT/nixos-pxe/secure-boot/`, and what the new manifest does not name is an earlier
/// signing's (an image of systems no host has any more), which would otherwise stay for ever.
fn prune(dir: &Utf8Path, kept: &std::collections::BTreeSet<Utf8PathBuf>) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let Ok(path) = Utf8PathBuf::from_path_buf(entry.path()) else { continue };
        let kind = entry.file_type().map_err(Error::io(&path))?;
        if kind.is_dir() {
            prune(&path, kept)?;
            let _ = std::fs::remove_dir(&path);
        } else if !kept.contains(&path) {
            std::fs::remove_file(&path).map_err(Error::io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_signings_files_are_removed_and_the_new_ones_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = Utf8Path::from_path(tmp.path()).expect("utf-8");
        for file in ["manifest.json", "tools.tar.zst", "systems/new.tar.zst", "systems/new.efi", "systems/old.tar.zst", "systems/old.efi", "gone/old.tar.zst"] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, "x").expect("write");
        }
        let kept = ["manifest.json", "tools.tar.zst", "systems/new.tar.zst", "systems/new.efi"].map(|f| dir.join(f)).into_iter().collect();
        prune(dir, &kept).expect("prune");
        let mut left: Vec<String> = walk(dir).into_iter().map(|p| p.strip_prefix(dir).expect("below").to_string()).collect();
        left.sort();
        assert_eq!(left, ["manifest.json", "systems", "systems/new.efi", "systems/new.tar.zst", "tools.tar.zst"]);
    }

    fn walk(dir: &Utf8Path) -> Vec<Utf8PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("read").flatten() {
            let p = Utf8PathBuf::from_path_buf(e.path()).expect("utf-8");
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
        out
    }

    #[test]
    fn boot_files_are_named_after_their_images() {
        assert_eq!(boot_file_name("systems/web.tar.zst"), "systems/web.efi");
        assert_eq!(boot_file_name("system.tar.gz"), "system.efi");
        assert_eq!(boot_file_name("odd"), "odd.efi");
    }

    #[test]
    fn the_manifest_follows_the_initrd_as_a_second_archive() {
        let mut w = crate::cpio::Writer::new(Vec::new());
        w.entry("init", crate::cpio::SYMLINK | 0o777, b"/x", 1).expect("entry");
        let mut base = w.finish().expect("finish");
        base.push(0);
        let joined = with_manifest(base, b"{}").expect("join");
        let names: Vec<String> = crate::cpio::read(&joined).expect("read").into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, ["init", "nixos-pxe", "nixos-pxe/secure-boot", MANIFEST_PATH]);
    }
}
