//! The installer's side of Secure Boot mode (`bootServer.secureBoot`): everything it takes from
//! the boot server is checked against the manifest in the signed initrd before it is used.
//!
//! - The system image and the system's signed boot file are fetched over HTTP into a staging
//!   directory in memory (the initrd's root), each through [`Verified`], before step 2 ends:
//!   nothing is written to the disk until every byte of both has matched. That is how a streamed
//!   image is checked before the disk is touched: it is not streamed to the disk, it is kept
//!   whole in memory first, and the staging directory must have room for it (checked first,
//!   with the sizes the manifest gives, so a machine too small is refused before the download).
//! - The installer's programs (`tools.tar.zst`) are unpacked into the initrd's root as they
//!   arrive, each chunk only once it matched: a changed archive stops the unpack at its first
//!   changed chunk, in memory, before any disk is looked at.
//! - A fleet host's words (host, generation, attempt, token, report URL) come from serve's
//!   per-host decision, `nixos-pxe/hosts/mac-<MAC>.json`, which serve answers only to the
//!   address the MAC's lease bound (as the per-host GRUB file).

use super::http::{self, Url};
use super::say;
use crate::error::Error;
use crate::secure_boot::decision::HostDecision;
use crate::secure_boot::manifest::{self, FileDigest, Manifest, Verified};
use camino::{Utf8Path, Utf8PathBuf};
use std::io::Write;
use std::time::{Duration, Instant};

/// How long a read from the boot server may wait.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Room kept free in the staging directory beyond the files (the installer's own temporary files).
pub const MARGIN: u64 = 64 << 20;

/// The manifest at `path` (the signed initrd's copy).
pub fn load_manifest(path: &Utf8Path) -> Result<Manifest, Error> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    Manifest::parse(&bytes).map_err(|why| Error::Message(format!("{path}: {why}")))
}

/// The server the manifest names, as a URL.
pub fn server(manifest: &Manifest) -> Result<Url, Error> {
    manifest.server.parse::<Url>().map_err(|e| Error::Message(format!("the signed manifest's server {}: {e}", manifest.server)))
}

/// What was staged: the system image and the system's signed boot file, both checked whole.
#[derive(Debug, Clone)]
pub struct Staged {
    pub image: Utf8PathBuf,
    pub boot_file: Utf8PathBuf,
}

/// Fetches the system image `name` (the manifest's key: `systems/HASH.tar.zst`, or
/// `system.tar.zst`) and its signed boot file into `dir`, each checked against the manifest.
pub fn stage(manifest: &Manifest, name: &str, dir: &Utf8Path) -> Result<Staged, Error> {
    let (Some(image), Some(boot_file)) = (manifest.images.get(name), manifest.boot_files.get(name)) else {
        let known: Vec<&str> = manifest.images.keys().map(String::as_str).collect();
        return Err(Error::Message(format!(
            "the signed manifest has no image {name} (it has: {}): the boot server signed another configuration than the one in the signed initrd",
            known.join(", ")
        )));
    };
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let need = image.size + boot_file.size + MARGIN;
    let room = available(dir)?;
    if room < need {
        return Err(Error::Message(format!(
            "the system image ({}) and its boot file ({}) do not fit in memory here ({} free in {dir}, {} needed with a margin): \
             in Secure Boot mode the image is kept whole in memory until every byte of it has matched the signed manifest, \
             so that nothing is written to the disk before the check can fail; nothing was written to the disk",
            super::disk::human_size(image.size),
            super::disk::human_size(boot_file.size),
            super::disk::human_size(room),
            super::disk::human_size(need)
        )));
    }
    let url = server(manifest)?;
    let staged = Staged { image: fetch_checked(&url, image, dir)?, boot_file: fetch_checked(&url, boot_file, dir)? };
    Ok(staged)
}

/// Free bytes in the file system of `dir`: what statvfs says, or for a file system without a
/// size (ramfs: the initrd's root when the kernel was given `root=`) the memory available.
fn available(dir: &Utf8Path) -> Result<u64, Error> {
    let s = rustix::fs::statvfs(dir.as_std_path()).map_err(|e| Error::Message(format!("statvfs {dir}: {e}")))?;
    if s.f_blocks > 0 {
        return Ok(s.f_bavail.saturating_mul(s.f_frsize));
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| Error::Message(format!("/proc/meminfo: {e}")))?;
    mem_available(&meminfo).ok_or_else(|| Error::Message("/proc/meminfo has no MemAvailable line".into()))
}

/// MemAvailable of /proc/meminfo, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The file `digest` names, from `url`, written to `dir` only as far as it matched; a mismatch or
/// a broken download removes what was written and says which bytes and why.
fn fetch_checked(url: &Url, digest: &FileDigest, dir: &Utf8Path) -> Result<Utf8PathBuf, Error> {
    let name = digest.path.rsplit('/').next().unwrap_or("file");
    let (dest, part) = (dir.join(name), dir.join(format!("{name}.part")));
    let started = Instant::now();
    let result = (|| {
        let mut reader = open_checked(url, digest)?;
        let mut out = std::fs::File::create(&part).map_err(Error::io(&part))?;
        std::io::copy(&mut reader, &mut out).map_err(|e| read_error(url, digest, e))?;
        out.flush().map_err(Error::io(&part))?;
        std::fs::rename(&part, &dest).map_err(Error::io(&dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result?;
    say(&format!(
        "{}{} ({}) fetched and matched the signed manifest in {:.1} s",
        url,
        digest.path_with_slash(),
        super::disk::human_size(digest.size),
        started.elapsed().as_secs_f64()
    ));
    Ok(dest)
}

/// A reader of the file `digest` names that passes on only bytes that matched.
pub fn open_checked(url: &Url, digest: &FileDigest) -> Result<Verified<http::Download>, Error> {
    let path = digest.path_with_slash();
    let download = http::get(url, &path, TIMEOUT).map_err(|why| Error::Message(format!("{why}: nothing was written to the disk")))?;
    if download.length != digest.size {
        let m = manifest::Mismatch::Size { path: digest.path.clone(), got: download.length, want: digest.size };
        return Err(Error::Message(format!("{m} (its Content-Length); nothing was written to the disk")));
    }
    Ok(Verified::new(download, digest.clone()))
}

/// A failed read of a checked download, said as what it means.
fn read_error(url: &Url, digest: &FileDigest, e: std::io::Error) -> Error {
    match manifest::mismatch(&e) {
        Some(m) => Error::Message(format!("{m}; nothing was written to the disk")),
        None => Error::Message(format!("GET {url}{}: {e}; nothing was written to the disk", digest.path_with_slash())),
    }
}

/// Unpacks the installer's programs (`manifest.tools`, a zstd tar) into `root`, each chunk only
/// once it matched.
pub fn unpack_tools(manifest: &Manifest, root: &Utf8Path) -> Result<u64, Error> {
    let url = server(manifest)?;
    let reader = open_checked(&url, &manifest.tools)?;
    let decoder = zstd::Decoder::new(reader).map_err(|e| Error::Message(format!("{}: {e}", manifest.tools.path)))?;
    let mut archive = tar::Archive::new(decoder);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    archive.unpack(root).map_err(|e| {
        // tar wraps the reader's error: find the mismatch in the chain.
        let mismatch = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| e.source())
            .find_map(|e| e.downcast_ref::<std::io::Error>().and_then(manifest::mismatch))
            .map(ToString::to_string);
        Error::Message(match mismatch {
            Some(m) => format!("{m}; nothing was written to the disk"),
            None => format!("unpacking {}{} into {root}: {e}; nothing was written to the disk", url, manifest.tools.path_with_slash()),
        })
    })?;
    Ok(manifest.tools.size)
}

/// The firmware boot entry's description for the installed system (Secure Boot mode).
pub const BOOT_ENTRY: &str = "NixOS (nixos-pxe, signed)";

/// Where the installed system's signed boot file goes on its ESP: the removable-media path the
/// firmware boots when no entry names another (and the one a boot entry of its own would name).
pub const ESP_BOOT_FILE: &str = "EFI/BOOT/BOOTX64.EFI";

/// Puts the signed boot file on the ESP mounted at `esp`, replacing what the system's own boot
/// loader installation put at [`ESP_BOOT_FILE`] (unsigned: the firmware would refuse it).
pub fn place_boot_file(staged: &Staged, esp: &Utf8Path) -> Result<(), Error> {
    let dest = esp.join(ESP_BOOT_FILE);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let tmp = esp.join(format!("{ESP_BOOT_FILE}.nixos-pxe"));
    let mut from = std::fs::File::open(&staged.boot_file).map_err(Error::io(&staged.boot_file))?;
    let mut to = std::fs::File::create(&tmp).map_err(Error::io(&tmp))?;
    std::io::copy(&mut from, &mut to).map_err(Error::io(&tmp))?;
    to.sync_all().map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, &dest).map_err(Error::io(&dest))?;
    say(&format!("the system's signed boot file is {dest} (the firmware verifies it against db at every boot)"));
    Ok(())
}

/// The largest decision document taken.
const MAX_DECISION: u64 = 16 * 1024;

/// Asks serve what the machine with `mac` does.
pub fn host_decision(manifest: &Manifest, mac: &str) -> Result<HostDecision, Error> {
    let url = server(manifest)?;
    let path = format!("/{}/mac-{mac}.json", crate::render::host_grub::TFTP_DIR);
    let body = http::get_small(&url, &path, TIMEOUT, MAX_DECISION).map_err(Error::Message)?;
    serde_json::from_slice(&body).map_err(|e| Error::Message(format!("GET {url}{path}: not a decision this installer reads ({e}): is serve of another nixos-pxe?")))
}

trait WithSlash {
    fn path_with_slash(&self) -> String;
}

impl WithSlash for FileDigest {
    fn path_with_slash(&self) -> String {
        format!("/{}", self.path.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_available_is_read_from_meminfo() {
        assert_eq!(mem_available("MemTotal:       24554048 kB\nMemFree:  1 kB\nMemAvailable:   20000000 kB\n"), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    /// A staging directory too small for the image: refused before anything is fetched (the
    /// server named is never reached: nothing listens there).
    #[test]
    fn an_image_bigger_than_the_room_is_refused_before_the_download() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = Utf8Path::from_path(dir.path()).expect("utf-8");
        let room = available(dir).expect("room");
        let huge = FileDigest { path: "nixos-pxe/secure-boot/system.tar.zst".into(), size: room + 1, chunks: vec![] };
        let small = FileDigest { path: "nixos-pxe/secure-boot/system.efi".into(), size: 1, chunks: vec![] };
        let m = Manifest {
            format: manifest::FORMAT,
            chunk_size: manifest::CHUNK,
            server: "http://192.0.2.1:9".into(),
            tools: small.clone(),
            images: [("system.tar.zst".to_string(), huge)].into(),
            boot_files: [("system.tar.zst".to_string(), small)].into(),
        };
        let e = stage(&m, "system.tar.zst", dir).expect_err("refused").to_string();
        assert!(e.contains("do not fit in memory here") && e.contains("nothing was written to the disk"), "{e}");
        let e = stage(&m, "other.tar.zst", dir).expect_err("refused").to_string();
        assert!(e.contains("has no image other.tar.zst (it has: system.tar.zst)"), "{e}");
    }
}
