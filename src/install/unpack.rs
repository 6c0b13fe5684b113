//! The heart of step 4: the system image's tar stream, decompressed while it is read, written onto
//! the mounted root. A module of its own so that benches/unpack.rs measures exactly the code the
//! installer runs.
//!
//! What it guarantees: every file's bytes, every entry's type, owner, group, mode (setuid and
//! sticky bits included) and mtime as in the archive (directories' mtimes too, set when the
//! unpack leaves them); symlinks as they are, never followed. Nothing is ever written outside
//! `target`: paths with `..` are refused, and every directory on an entry's way is opened relative
//! to its parent with O_NOFOLLOW, so a symlink or a file in the archive where a directory should
//! be stops the unpack instead of leading elsewhere.
//!
//! Why it is written this way (benches/unpack.rs measures it; the README has the figures): the
//! tar crate's `Entry::unpack_in` canonicalizes the parent of every entry (a dozen readlink calls
//! each: 900 000 for a closure of 75 000 entries) and copies through an 8 KiB buffer, all in the
//! thread that also decompresses. Here decompression runs in a thread of its own ([`ReadAhead`]),
//! the directories on the current path stay open (entries come sorted, so each is opened once),
//! every call is relative to its directory, and files are written in 1 MiB pieces. What is left
//! is the file system's own work: creating inodes and directory entries and copying the contents
//! into the page cache. Writeback is left to the kernel (the caller syncs): starting it early,
//! per large file, did not make the unpack faster on the machine the benchmark ran on.

use crate::compression::{Codec, ReadAhead};
use crate::error::Error;
use camino::Utf8Path;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the extraction reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Report {
    /// Before the first entry: the codec found and the image's size.
    Start { codec: Codec, image_bytes: u64 },
    /// Every 2 s, and once at the end.
    Progress { written: u64, read: u64, image_bytes: u64, elapsed: Duration },
}

/// What the extraction did.
#[derive(Debug, Clone, Copy)]
pub struct Extracted {
    /// Bytes of the (compressed) image read.
    pub bytes_read: u64,
    /// Bytes of file contents written.
    pub bytes_written: u64,
    /// Archive entries unpacked (files, directories, symlinks, hard links).
    pub entries: u64,
}

/// Counts the bytes read through it (the compressed image), for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The piece in which file contents go from the archive to the file.
const WRITE_PIECE: usize = 1 << 20;

/// Unpacks the compressed tar `image` into `target`, calling `report` as it goes. See the
/// module's documentation for what it guarantees.
pub fn extract(image: &Utf8Path, target: &Utf8Path, report: &mut dyn FnMut(Report)) -> Result<Extracted, Error> {
    let image_bytes = std::fs::metadata(image).map_err(Error::io(image))?.len();
    let file = std::fs::File::open(image).map_err(Error::io(image))?;
    let count = Arc::new(AtomicU64::new(0));
    let (codec, reader) = crate::compression::decoder(Counting { inner: file, count: count.clone() }).map_err(Error::io(image))?;
    let reader = ReadAhead::new(reader).map_err(|e| Error::Message(format!("cannot start the thread that decompresses {image}: {e}")))?;
    report(Report::Start { codec, image_bytes });
    let root = rustix::fs::open(target.as_std_path(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::Message(format!("cannot open {target} to unpack into: {e}")))?;
    let mut unpacker = Unpacker { root, open: Vec::new(), left: HashMap::new(), buf: vec![0; WRITE_PIECE] };
    let mut archive = tar::Archive::new(reader);
    let start = Instant::now();
    let mut last = Instant::now();
    let (mut written, mut entries) = (0u64, 0u64);
    let progress = |written: u64| Report::Progress { written, read: count.load(Ordering::Relaxed), image_bytes, elapsed: start.elapsed() };
    for entry in archive.entries().map_err(|e| Error::Message(format!("reading {image}: {e}")))? {
        let mut entry = entry.map_err(|e| Error::Message(format!("reading {image}: {e}")))?;
        let path = entry.path().map_err(|e| Error::Message(format!("reading {image}: an entry's path: {e}")))?.into_owned();
        let wrote = unpacker.entry(&path, &mut entry).map_err(|e| match e {
            Problem::Outside => Error::Message(format!("{image} holds a path outside the archive root ({}); refusing it", path.display())),
            Problem::Io(what, e) => Error::Message(format!("unpacking {} from {image} onto {target}: {what}: {e}", path.display())),
            Problem::Refused(why) => Error::Message(format!("unpacking {} from {image} onto {target}: {why}", path.display())),
        })?;
        written += wrote;
        entries += 1;
        if last.elapsed() >= Duration::from_secs(2) {
            report(progress(written));
            last = Instant::now();
        }
    }
    unpacker.leave_all().map_err(|e| Error::Message(format!("unpacking {image} onto {target}: setting the directories' times: {e:?}")))?;
    report(progress(written));
    Ok(Extracted { bytes_read: count.load(Ordering::Relaxed), bytes_written: written, entries })
}

/// Why an entry could not be unpacked.
#[derive(Debug)]
enum Problem {
    /// A `..` in the path.
    Outside,
    /// A system call failed: what was being done, and the error.
    Io(&'static str, std::io::Error),
    /// The archive asks for something this unpacker does not do.
    Refused(String),
}

fn io(what: &'static str) -> impl FnOnce(Errno) -> Problem {
    move |e| Problem::Io(what, e.into())
}

/// A directory on the current path, open; its mtime is set when the unpack leaves it.
struct OpenDir {
    name: std::ffi::OsString,
    fd: OwnedFd,
    mtime: Option<Timespec>,
}

/// The directory fds on the current entry's path below the root, and the copy buffer.
struct Unpacker {
    root: OwnedFd,
    open: Vec<OpenDir>,
    /// The mtimes set on the listed directories left so far, by path: a directory is only
    /// changed while it is open, so one entered again (the archive's order can return to it:
    /// `a`, `a-b`, `a/c`) gets its mtime set again when it is left again.
    left: HashMap<PathBuf, Timespec>,
    buf: Vec<u8>,
}

/// An archive entry's fields the unpacker needs.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
}

impl Meta {
    fn of(header: &tar::Header) -> Result<Meta, Problem> {
        let field = |what: &'static str| move |e: std::io::Error| Problem::Io(what, e);
        let uid = header.uid().map_err(field("reading the owner"))?;
        let gid = header.gid().map_err(field("reading the group"))?;
        let too_large = |id: u64| Problem::Refused(format!("owner or group {id} is too large"));
        // As the tar crate does: an mtime of 0 reads as "unknown" to some tools; Nix's is 1.
        let mtime = header.mtime().map_err(field("reading the mtime"))?.max(1);
        Ok(Meta {
            mode: header.mode().map_err(field("reading the mode"))? & 0o7777,
            uid: u32::try_from(uid).map_err(|_| too_large(uid))?,
            gid: u32::try_from(gid).map_err(|_| too_large(gid))?,
            mtime: Timespec { tv_sec: i64::try_from(mtime).map_err(|_| Problem::Refused(format!("mtime {mtime} is too large")))?, tv_nsec: 0 },
        })
    }

    fn times(&self) -> Timestamps {
        Timestamps { last_access: self.mtime, last_modification: self.mtime }
    }
}

/// Owner first, then mode: chown clears the setuid and setgid bits, chmod sets them again.
fn own_and_mode(fd: &OwnedFd, meta: &Meta) -> Result<(), Problem> {
    rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(meta.uid)), Some(rustix::fs::Gid::from_raw(meta.gid))).map_err(io("setting the owner"))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(io("setting the mode"))
}

/// The normal components of `path` (a leading `/` and `.` are dropped, as tar does); `..` is
/// refused.
fn components(path: &Path) -> Result<Vec<&OsStr>, Problem> {
    let mut out = Vec::new();
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(Problem::Outside),
            Component::Normal(name) => out.push(name),
        }
    }
    Ok(out)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Opens the directory `name` in `dir`, never through a symlink.
fn open_dir(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Problem> {
    rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => Problem::Refused(format!("{} is not a directory (a symlink or a file) and is not followed", name.display())),
        e => Problem::Io("opening a directory on the way", e.into()),
    })
}

impl Unpacker {
    /// The directory that holds entry `parents` (its path's components but the last), opened
    /// (and made, 0755, where the archive did not list it first) from the ones open already.
    fn enter(&mut self, parents: &[&OsStr]) -> Result<(), Problem> {
        let common = self.open.iter().zip(parents).take_while(|(open, name)| open.name == **name).count();
        self.leave_to(common)?;
        for name in &parents[common..] {
            let dir = self.open.last().map_or(&self.root, |d| &d.fd);
            let fd = match open_dir(dir, name) {
                Err(Problem::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    rustix::fs::mkdirat(dir, *name, Mode::from_raw_mode(0o755)).map_err(io("making a missing parent directory"))?;
                    open_dir(dir, name)?
                }
                other => other?,
            };
            let mtime = if self.left.is_empty() { None } else { self.left.get(&self.path_to(name)).copied() };
            self.open.push(OpenDir { name: name.to_os_string(), fd, mtime });
        }
        Ok(())
    }

    /// The path of `name` in the innermost open directory.
    fn path_to(&self, name: &OsStr) -> PathBuf {
        self.open.iter().map(|d| d.name.as_os_str()).chain([name]).collect()
    }

    /// Closes the open directories deeper than `depth`, setting the mtimes of those the archive listed.
    fn leave_to(&mut self, depth: usize) -> Result<(), Problem> {
        while self.open.len() > depth {
            if let Some(dir) = self.open.pop()
                && let Some(mtime) = dir.mtime
            {
                rustix::fs::futimens(&dir.fd, &Timestamps { last_access: mtime, last_modification: mtime }).map_err(io("setting a directory's mtime"))?;
                let path = self.path_to(&dir.name);
                self.left.insert(path, mtime);
            }
        }
        Ok(())
    }

    fn leave_all(&mut self) -> Result<(), Problem> {
        self.leave_to(0)
    }

    fn parent(&self) -> &OwnedFd {
        self.open.last().map_or(&self.root, |d| &d.fd)
    }

    /// Unpacks one entry; returns the bytes of contents written.
    fn entry<R: Read>(&mut self, path: &Path, entry: &mut tar::Entry<'_, R>) -> Result<u64, Problem> {
        let parts = components(path)?;
        let kind = entry.header().entry_type();
        // Extension headers (the iterator has applied them already), and an empty name ("./").
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() || kind.is_gnu_longname() || kind.is_gnu_longlink() {
            return Ok(0);
        }
        let Some((name, parents)) = parts.split_last() else { return Ok(0) };
        let name = *name;
        self.enter(parents)?;
        let meta = Meta::of(entry.header())?;
        if kind.is_dir() {
            self.directory(name, meta)?;
            Ok(0)
        } else if kind.is_symlink() {
            let target = entry.link_name().map_err(|e| Problem::Io("reading the link target", e))?;
            let target = target.filter(|t| !t.as_os_str().is_empty()).ok_or_else(|| Problem::Refused("a symlink with an empty target".into()))?;
            self.symlink(name, &target, &meta)?;
            Ok(0)
        } else if kind.is_hard_link() {
            let source = entry.link_name().map_err(|e| Problem::Io("reading the link source", e))?;
            let source = source.ok_or_else(|| Problem::Refused("a hard link without a source".into()))?;
            self.hard_link(name, &source)?;
            Ok(0)
        } else if kind.is_file() || kind.is_contiguous() {
            self.file(name, entry, &meta)
        } else {
            Err(Problem::Refused(format!("its entry type {kind:?} is not one a system image holds (files, directories, symlinks, hard links)")))
        }
    }

    fn directory(&mut self, name: &OsStr, meta: Meta) -> Result<(), Problem> {
        let parent = self.parent();
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Problem::Io("making the directory", e.into())),
        }
        // An existing directory is reused; anything else there is refused by the open.
        let fd = open_dir(parent, name)?;
        own_and_mode(&fd, &meta)?;
        // Its entries follow (the archive is sorted): keep it open, as the next entry's parent.
        self.open.push(OpenDir { name: name.to_os_string(), fd, mtime: Some(meta.mtime) });
        Ok(())
    }

    fn symlink(&mut self, name: &OsStr, target: &Path, meta: &Meta) -> Result<(), Problem> {
        let parent = self.parent();
        match rustix::fs::symlinkat(target, parent, name) {
            Ok(()) => {}
            // Overwrite what an earlier entry (or an earlier attempt) left there.
            Err(Errno::EXIST) => {
                rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(io("removing what is in the symlink's place"))?;
                rustix::fs::symlinkat(target, parent, name).map_err(io("making the symlink"))?;
            }
            Err(e) => return Err(Problem::Io("making the symlink", e.into())),
        }
        let (uid, gid) = (rustix::fs::Uid::from_raw(meta.uid), rustix::fs::Gid::from_raw(meta.gid));
        rustix::fs::chownat(parent, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW).map_err(io("setting the symlink's owner"))?;
        rustix::fs::utimensat(parent, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW).map_err(io("setting the symlink's mtime"))
    }

    /// A hard link to an entry unpacked before, found from the root without following symlinks.
    fn hard_link(&mut self, name: &OsStr, source: &Path) -> Result<(), Problem> {
        let parts = components(source)?;
        let Some((source_name, source_parents)) = parts.split_last() else {
            return Err(Problem::Refused("a hard link to the archive's root".into()));
        };
        let mut dir: Option<OwnedFd> = None;
        for part in source_parents {
            dir = Some(open_dir(dir.as_ref().unwrap_or(&self.root), part)?);
        }
        let from = dir.as_ref().unwrap_or(&self.root);
        rustix::fs::linkat(from, *source_name, self.parent(), name, AtFlags::empty()).map_err(io("making the hard link"))
    }

    fn file<R: Read>(&mut self, name: &OsStr, entry: &mut tar::Entry<'_, R>, meta: &Meta) -> Result<u64, Problem> {
        let parent = self.parent();
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            // Never write into an existing file (it may be a hard link to another): replace it.
            Err(Errno::EXIST) => {
                rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(io("removing what is in the file's place"))?;
                rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o600)).map_err(io("creating the file"))?
            }
            Err(e) => return Err(Problem::Io("creating the file", e.into())),
        };
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Problem::Io("reading the file from the image", e)),
            };
            let mut piece = &self.buf[..n];
            while !piece.is_empty() {
                match rustix::io::write(&fd, piece) {
                    Ok(0) => return Err(Problem::Io("writing the file", std::io::ErrorKind::WriteZero.into())),
                    Ok(k) => piece = &piece[k..],
                    Err(Errno::INTR) => {}
                    Err(e) => return Err(Problem::Io("writing the file", e.into())),
                }
            }
            written += n as u64;
        }
        if written != entry.size() {
            return Err(Problem::Refused(format!("the image ended inside the file ({written} of {} bytes)", entry.size())));
        }
        own_and_mode(&fd, meta)?;
        rustix::fs::futimens(&fd, &meta.times()).map_err(io("setting the mtime"))?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Encoder;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// The tests set owners other than their own, which needs root (CI runs as root). Without it
    /// they fail, unless NIXOS_PXE_ALLOW_SKIP=1 (tests/switches) lets them skip loudly.
    fn can_run() -> bool {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var_os("NIXOS_PXE_ALLOW_SKIP").is_some_and(|v| v == "1") {
            eprintln!("SKIPPED install::unpack tests: they need root to set owners (NIXOS_PXE_ALLOW_SKIP=1)");
            return false;
        }
        panic!("the unpack tests need root to set owners (CI runs as root); NIXOS_PXE_ALLOW_SKIP=1 lets them skip on a developer's machine");
    }

    /// An archive entry to build.
    enum Item<'a> {
        Dir(&'a str, u32),
        File(&'a str, u32, Vec<u8>),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        Fifo(&'a str),
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64, uid: u64, gid: u64, mtime: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h
    }

    /// A zstd-compressed tar of `items`, each owned by (uid, gid) and with the given mtime.
    fn image(dir: &Path, items: &[Item], uid: u64, gid: u64, mtime: u64) -> camino::Utf8PathBuf {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            match item {
                Item::Dir(path, mode) => {
                    let mut h = header(tar::EntryType::Directory, *mode, 0, uid, gid, mtime);
                    builder.append_data(&mut h, format!("{path}/"), std::io::empty()).expect("dir");
                }
                Item::File(path, mode, data) => {
                    let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64, uid, gid, mtime);
                    builder.append_data(&mut h, path, &data[..]).expect("file");
                }
                Item::Symlink(path, target) => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0, uid, gid, mtime);
                    builder.append_link(&mut h, path, target).expect("symlink");
                }
                Item::HardLink(path, source) => {
                    let mut h = header(tar::EntryType::Link, 0o644, 0, uid, gid, mtime);
                    builder.append_link(&mut h, path, source).expect("hard link");
                }
                Item::Fifo(path) => {
                    let mut h = header(tar::EntryType::Fifo, 0o644, 0, uid, gid, mtime);
                    builder.append_data(&mut h, path, std::io::empty()).expect("fifo");
                }
            }
        }
        compress(dir, &builder.into_inner().expect("tar"))
    }

    fn compress(dir: &Path, tar: &[u8]) -> camino::Utf8PathBuf {
        let path = camino::Utf8PathBuf::from_path_buf(dir.join("image.tar.zst")).expect("utf-8");
        let mut e = Encoder::new(Codec::Zstd, Vec::new()).expect("encoder");
        e.write_all(tar).expect("compress");
        std::fs::write(&path, e.finish().expect("finish")).expect("write image");
        path
    }

    /// An archive whose one entry has the raw name `name` (the tar crate's builder refuses `..`).
    fn raw_image(dir: &Path, name: &[u8], kind: tar::EntryType, link: &[u8]) -> camino::Utf8PathBuf {
        let mut h = header(kind, 0o644, 4, 0, 0, 1);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&h, &b"evil"[..]).expect("append");
        compress(dir, &builder.into_inner().expect("tar"))
    }

    fn target(dir: &Path) -> camino::Utf8PathBuf {
        let t = dir.join("target");
        std::fs::create_dir(&t).expect("target");
        camino::Utf8PathBuf::from_path_buf(t).expect("utf-8")
    }

    fn extract_quietly(image: &Utf8Path, target: &Utf8Path) -> Result<Extracted, Error> {
        extract(image, target, &mut |_| {})
    }

    /// Pseudo-random bytes, so that a misplaced piece shows.
    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 11) as u8).collect()
    }

    /// Every kind of entry a system image holds comes out as the archive says: contents byte for
    /// byte (also across the 1 MiB pieces), type, mode with the setuid and sticky bits, owner and
    /// group (not the unpacker's), mtimes of files, symlinks and directories (one entered again
    /// after a sibling that sorts between, `a`, `a-b`, `a/c`), symlink targets (not followed,
    /// dangling ones too), hard links (one inode), long names, and an mtime of 0 read as 1.
    #[test]
    fn unpacks_every_kind_of_entry_faithfully() {
        if !can_run() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let long = format!("nix/store/{}-long/{}", "x".repeat(40), "deep/".repeat(30));
        let long_file = format!("{long}name-{}", "y".repeat(120));
        let big = bytes(3 * WRITE_PIECE + 4097, 1);
        let items = [
            Item::Dir("nix", 0o755),
            Item::Dir("nix/store", 0o1775),
            Item::Dir("nix/store/abc-pkg", 0o555),
            Item::Dir("nix/store/abc-pkg/bin", 0o555),
            Item::File("nix/store/abc-pkg/bin/tool", 0o555, bytes(70_001, 2)),
            Item::File("nix/store/abc-pkg/bin/suid", 0o4755, bytes(10, 3)),
            Item::Symlink("nix/store/abc-pkg/bin/alias", "tool"),
            Item::Dir("nix/store/abc-pkg/lib", 0o555),
            Item::File("nix/store/abc-pkg/lib/big.so", 0o444, big.clone()),
            Item::File("nix/store/abc-pkg/lib/empty", 0o444, Vec::new()),
            Item::Symlink("nix/store/abc-pkg/lib/abs", "/nix/store/abc-pkg/lib/big.so"),
            Item::Symlink("nix/store/abc-pkg/lib/dangling", "../nowhere/at/all"),
            Item::HardLink("nix/store/abc-pkg/lib/big-again.so", "nix/store/abc-pkg/lib/big.so"),
            Item::Dir("nix/store/abc-pkg/share", 0o555),
            Item::File("nix/store/abc-pkg/share-sibling", 0o444, bytes(5, 4)),
            Item::File("nix/store/abc-pkg/share/doc", 0o444, bytes(300, 5)),
            Item::File(&long_file, 0o444, bytes(1000, 6)),
        ];
        let (uid, gid, mtime) = (1234, 5678, 77);
        let image = image(dir.path(), &items, uid, gid, mtime);
        let target = target(dir.path());
        let done = extract_quietly(&image, &target).expect("unpack");
        assert_eq!(done.bytes_written, (70_001 + 10 + big.len() + 5 + 300 + 1000) as u64);
        let t = target.as_std_path();
        for item in &items {
            let (path, mode) = match item {
                Item::Dir(p, m) | Item::File(p, m, _) => (t.join(p), Some(*m)),
                Item::Symlink(p, _) | Item::HardLink(p, _) => (t.join(p), None),
                Item::Fifo(_) => unreachable!(),
            };
            let meta = std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!((meta.uid(), meta.gid()), (uid as u32, gid as u32), "{}", path.display());
            assert_eq!(meta.mtime(), mtime as i64, "{}", path.display());
            if let Some(mode) = mode {
                assert_eq!(meta.mode() & 0o7777, mode, "{}", path.display());
            }
            match item {
                Item::Dir(..) => assert!(meta.is_dir(), "{}", path.display()),
                Item::File(_, _, data) => {
                    assert!(meta.is_file(), "{}", path.display());
                    assert!(std::fs::read(&path).expect("read") == *data, "{}: contents differ", path.display());
                }
                Item::Symlink(_, target) => {
                    assert!(meta.file_type().is_symlink(), "{}", path.display());
                    assert_eq!(std::fs::read_link(&path).expect("readlink"), Path::new(target));
                }
                Item::HardLink(_, source) => {
                    assert_eq!(meta.ino(), std::fs::metadata(t.join(source)).expect("source").ino(), "{}: not one inode", path.display());
                }
                Item::Fifo(_) => unreachable!(),
            }
        }
        // Exactly what the archive holds, nothing else.
        let count = walk(t);
        assert_eq!(count, items.len() + long.matches('/').count() - 2, "entries under the target (with long's parents)");

        // An mtime of 0 reads as 1, as Nix's.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let image = image_with(dir2.path(), &[Item::File("f", 0o644, bytes(3, 7))], 0);
        let target = target_in(dir2.path());
        extract_quietly(&image, &target).expect("unpack");
        assert_eq!(std::fs::symlink_metadata(target.join("f")).expect("f").mtime(), 1);
    }

    fn image_with(dir: &Path, items: &[Item], mtime: u64) -> camino::Utf8PathBuf {
        image(dir, items, 0, 0, mtime)
    }

    fn target_in(dir: &Path) -> camino::Utf8PathBuf {
        target(dir)
    }

    /// The number of entries under `dir`, itself not counted.
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| {
                let e = e.expect("entry");
                1 + if e.file_type().expect("type").is_dir() { walk(&e.path()) } else { 0 }
            })
            .sum()
    }

    /// A name with `..` is refused, and nothing is written outside the target.
    #[test]
    fn refuses_a_path_outside_the_target() {
        if !can_run() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [&b"../escaped"[..], b"a/../../escaped", b"./../escaped"] {
            let image = raw_image(dir.path(), name, tar::EntryType::Regular, b"");
            let target = camino::Utf8PathBuf::from_path_buf(dir.path().join("target")).expect("utf-8");
            let _ = std::fs::remove_dir_all(&target);
            std::fs::create_dir(&target).expect("target");
            let err = extract_quietly(&image, &target).expect_err("must refuse").to_string();
            assert!(err.contains("holds a path outside the archive root"), "{err}");
            assert!(!dir.path().join("escaped").exists(), "{} escaped the target", String::from_utf8_lossy(name));
            assert_eq!(walk(target.as_std_path()), 0, "nothing unpacked for {}", String::from_utf8_lossy(name));
        }
    }

    /// A symlink in the archive, or one already on the disk, where a directory should be is never
    /// followed: the unpack stops there, and the place it points to stays untouched.
    #[test]
    fn never_writes_through_a_symlink() {
        if !can_run() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).expect("outside");
        let inside = format!("{}", outside.display());
        for (link, to) in [("evil", inside.as_str()), ("evil", "../outside"), ("lib", "lib64")] {
            let image = image_with(
                dir.path(),
                &[Item::Dir("lib64", 0o755), Item::Symlink(link, to), Item::File(&format!("{link}/planted"), 0o644, bytes(4, 8))],
                1,
            );
            let target = camino::Utf8PathBuf::from_path_buf(dir.path().join("target")).expect("utf-8");
            let _ = std::fs::remove_dir_all(&target);
            std::fs::create_dir(&target).expect("target");
            let err = extract_quietly(&image, &target).expect_err("must refuse").to_string();
            assert!(err.contains(&format!("{link} is not a directory (a symlink or a file) and is not followed")), "{err}");
            assert_eq!(walk(&outside), 0, "{link} -> {to}: something was written outside");
            assert!(!target.join("lib64/planted").exists(), "{link} -> {to}: written through the symlink");
        }
        // A symlink the disk holds already.
        let target = camino::Utf8PathBuf::from_path_buf(dir.path().join("target2")).expect("utf-8");
        std::fs::create_dir(&target).expect("target");
        std::os::unix::fs::symlink(&outside, target.join("nix")).expect("symlink");
        let image = image_with(dir.path(), &[Item::File("nix/store/planted", 0o644, bytes(4, 9))], 1);
        let err = extract_quietly(&image, &target).expect_err("must refuse").to_string();
        assert!(err.contains("nix is not a directory (a symlink or a file) and is not followed"), "{err}");
        assert_eq!(walk(&outside), 0, "written through the symlink on the disk");
    }

    /// What the target holds already is replaced, never written into: a file that is a hard link
    /// elsewhere keeps its bytes there, a symlink is replaced rather than followed.
    #[test]
    fn replaces_what_is_there_without_writing_into_it() {
        if !can_run() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let target = target(dir.path());
        std::fs::write(target.join("keep"), "old").expect("keep");
        std::fs::hard_link(target.join("keep"), target.join("f")).expect("link");
        std::fs::write(dir.path().join("victim"), "untouched").expect("victim");
        std::os::unix::fs::symlink(dir.path().join("victim"), target.join("s")).expect("symlink");
        std::os::unix::fs::symlink(dir.path().join("victim"), target.join("g")).expect("symlink");
        let image = image_with(dir.path(), &[Item::File("f", 0o644, b"new".to_vec()), Item::Symlink("s", "elsewhere"), Item::File("g", 0o600, b"file".to_vec())], 1);
        extract_quietly(&image, &target).expect("unpack");
        assert_eq!(std::fs::read_to_string(target.join("f")).expect("f"), "new");
        assert_eq!(std::fs::read_to_string(target.join("keep")).expect("keep"), "old", "the other link kept its bytes");
        assert_eq!(std::fs::read_link(target.join("s")).expect("s"), Path::new("elsewhere"));
        assert_eq!(std::fs::read_to_string(target.join("g")).expect("g"), "file");
        assert_eq!(std::fs::read_to_string(dir.path().join("victim")).expect("victim"), "untouched");
        assert_eq!(std::fs::metadata(target.join("g")).expect("g").permissions().mode() & 0o777, 0o600);
    }

    /// A truncated image fails the unpack (never a silent partial success), and so does an entry
    /// no system image holds (a fifo).
    #[test]
    fn a_truncated_image_or_a_fifo_fails_the_unpack() {
        if !can_run() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let image = image_with(dir.path(), &[Item::File("big", 0o644, bytes(2 * WRITE_PIECE, 10)), Item::File("after", 0o644, bytes(10, 11))], 1);
        let whole = std::fs::read(&image).expect("image");
        std::fs::write(&image, &whole[..whole.len() / 2]).expect("truncate");
        let target = target(dir.path());
        let err = extract_quietly(&image, &target).expect_err("a truncated image must fail").to_string();
        assert!(err.contains("big"), "names the file it was in: {err}");
        assert!(!target.join("after").exists());

        // Uncompressed (the installer takes a plain tar too): the stream just ends, inside a file.
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Regular, 0o644, 3 * WRITE_PIECE as u64, 0, 0, 1);
        builder.append_data(&mut h, "big", &bytes(3 * WRITE_PIECE, 12)[..]).expect("append");
        let tar = builder.into_inner().expect("tar");
        let plain = camino::Utf8PathBuf::from_path_buf(dir.path().join("plain.tar")).expect("utf-8");
        std::fs::write(&plain, &tar[..tar.len() / 2]).expect("write");
        let target = camino::Utf8PathBuf::from_path_buf(dir.path().join("target-plain")).expect("utf-8");
        std::fs::create_dir(&target).expect("target");
        let err = extract_quietly(&plain, &target).expect_err("a truncated tar must fail").to_string();
        assert!(err.contains("the image ended inside the file"), "{err}");

        let image = image_with(dir.path(), &[Item::Fifo("pipe")], 1);
        let target = camino::Utf8PathBuf::from_path_buf(dir.path().join("target-fifo")).expect("utf-8");
        std::fs::create_dir(&target).expect("target");
        let err = extract_quietly(&image, &target).expect_err("a fifo must be refused").to_string();
        assert!(err.contains("is not one a system image holds"), "{err}");
        assert!(!target.join("pipe").exists());
    }
}
