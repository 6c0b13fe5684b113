//! The exported directory as a read-only NFSv3 file system, for the nfs3_server crate.
//!
//! Safety rules, each with a test below and in tests/serve_nfs.rs:
//! - Every path is opened below the export with no symbolic link followed (src/serve/beneath.rs):
//!   LOOKUP of a link returns the link's own handle and attributes, READLINK its text; the client
//!   resolves it in its own root. A link as a directory on the way is NFS3ERR_NOTDIR.
//! - READ opens regular files only (a directory is NFS3ERR_ISDIR, anything else NFS3ERR_INVAL); a
//!   device node or FIFO in the export is never opened, so a client cannot read the server's disks
//!   or arm its watchdog. READDIR and LOOKUP need a directory (NFS3ERR_NOTDIR).
//! - A file handle is the file's inode number and a keyed hash of it (BLAKE3, key from
//!   [`HandleKey`]): a client cannot make up a handle for a file it was not given one for; a handle
//!   that fails the check is NFS3ERR_BADHANDLE. The server knows the path of every inode it has handed
//!   out; after a restart with the same key it finds a valid handle's inode again by walking the
//!   export once, so clients that were mid-install keep working.
//! - Files on another file system mounted inside the export are not served (their inode numbers
//!   could collide with the export's).

// rustix's Stat has other field types on other architectures: the casts are for them.
#![allow(clippy::unnecessary_cast)]

use crate::serve::beneath::{Kind, Links, Root, kind};
use nfs3_server::nfs3_types::nfs3::{fattr3, filename3, ftype3, nfspath3, nfsstat3, nfstime3, specdata3};
use nfs3_server::vfs::{DirEntryPlus, FileHandle, NextResult, NfsReadFileSystem, ReadDirPlusIterator};
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, OFlags, Stat};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The secret that makes file handles unforgeable. Keep it across restarts (serve stores it in its
/// state directory) and clients' handles stay valid.
#[derive(Clone)]
pub struct HandleKey([u8; 32]);

impl HandleKey {
    pub fn new(bytes: [u8; 32]) -> HandleKey {
        HandleKey(bytes)
    }

    /// The secret itself, to be kept (serve writes it to its state directory).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 32 bytes from the kernel's random source.
    pub fn random() -> io::Result<HandleKey> {
        let mut bytes = [0; 32];
        let mut filled = 0;
        while filled < bytes.len() {
            filled += rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()).map_err(io::Error::from)?;
        }
        Ok(HandleKey(bytes))
    }

    /// The generation number the nfs3_server crate puts before every handle: derived from the key,
    /// so a restart with the same key keeps it.
    pub fn generation(&self) -> u64 {
        let hash = blake3::keyed_hash(&self.0, b"nixos-pxe nfs generation");
        let mut first = [0; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }

    fn tag(&self, ino: u64) -> [u8; TAG_LEN] {
        let mut input = Vec::with_capacity(32);
        input.extend_from_slice(b"nixos-pxe nfs handle v1 ");
        input.extend_from_slice(&ino.to_le_bytes());
        let hash = blake3::keyed_hash(&self.0, &input);
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&hash.as_bytes()[..TAG_LEN]);
        tag
    }
}

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(..)")
    }
}

const TAG_LEN: usize = 16;
const HANDLE_LEN: usize = 8 + TAG_LEN;

/// A file handle: the inode number, then its tag.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle([u8; HANDLE_LEN]);

impl Handle {
    fn new(ino: u64, key: &HandleKey) -> Handle {
        let mut bytes = [0; HANDLE_LEN];
        bytes[..8].copy_from_slice(&ino.to_le_bytes());
        bytes[8..].copy_from_slice(&key.tag(ino));
        Handle(bytes)
    }

    pub fn ino(&self) -> u64 {
        let mut ino = [0; 8];
        ino.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(ino)
    }

    /// The inode number, if the tag is the one this key gives it (compared in constant time).
    fn verified(&self, key: &HandleKey) -> Option<u64> {
        let expected = key.tag(self.ino());
        let difference = expected.iter().zip(&self.0[8..]).fold(0, |acc, (a, b)| acc | (a ^ b));
        (difference == 0).then(|| self.ino())
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle(ino {})", self.ino())
    }
}

impl FileHandle for Handle {
    fn len(&self) -> usize {
        HANDLE_LEN
    }
    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    fn from_bytes(bytes: &[u8]) -> Option<Handle> {
        bytes.try_into().ok().map(Handle)
    }
}

fn status(e: &io::Error) -> nfsstat3 {
    match e.raw_os_error() {
        Some(libc::ENOENT) => nfsstat3::NFS3ERR_NOENT,
        Some(libc::EACCES | libc::EPERM | libc::EXDEV) => nfsstat3::NFS3ERR_ACCES,
        Some(libc::ENOTDIR | libc::ELOOP) => nfsstat3::NFS3ERR_NOTDIR,
        Some(libc::EISDIR) => nfsstat3::NFS3ERR_ISDIR,
        Some(libc::ENAMETOOLONG) => nfsstat3::NFS3ERR_NAMETOOLONG,
        _ if e.kind() == io::ErrorKind::PermissionDenied => nfsstat3::NFS3ERR_ACCES,
        _ => nfsstat3::NFS3ERR_IO,
    }
}

fn time(seconds: i64, nanoseconds: i64) -> nfstime3 {
    nfstime3 { seconds: seconds.clamp(0, u32::MAX as i64) as u32, nseconds: nanoseconds.clamp(0, 999_999_999) as u32 }
}

/// The attributes of a file as NFSv3 sends them: its own type and mode bits (set-uid included),
/// owner, size (a link's: the length of its text), device numbers and times.
pub fn attributes(stat: &Stat) -> fattr3 {
    let type_ = match stat.st_mode as u32 & libc::S_IFMT {
        libc::S_IFDIR => ftype3::NF3DIR,
        libc::S_IFLNK => ftype3::NF3LNK,
        libc::S_IFBLK => ftype3::NF3BLK,
        libc::S_IFCHR => ftype3::NF3CHR,
        libc::S_IFSOCK => ftype3::NF3SOCK,
        libc::S_IFIFO => ftype3::NF3FIFO,
        _ => ftype3::NF3REG,
    };
    let rdev = stat.st_rdev as u64;
    fattr3 {
        type_,
        mode: stat.st_mode as u32 & 0o7777,
        nlink: (stat.st_nlink as u64).min(u32::MAX as u64) as u32,
        uid: stat.st_uid,
        gid: stat.st_gid,
        size: stat.st_size as u64,
        used: stat.st_blocks as u64 * 512,
        rdev: specdata3 { specdata1: libc::major(rdev), specdata2: libc::minor(rdev) },
        fsid: stat.st_dev as u64,
        fileid: stat.st_ino as u64,
        atime: time(stat.st_atime as i64, stat.st_atime_nsec as i64),
        mtime: time(stat.st_mtime as i64, stat.st_mtime_nsec as i64),
        ctime: time(stat.st_ctime as i64, stat.st_ctime_nsec as i64),
    }
}

/// Files most recently READ, kept open: a client reads the system image in many READs.
const OPEN_FILES: usize = 8;
/// A valid handle the server does not know (after a restart) walks the export at most this often.
const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// One directory tree, read-only, as an NFSv3 file system.
#[derive(Debug)]
pub struct ReadOnlyDir {
    root: Root,
    key: HandleKey,
    /// Inode number to path below the root ("" for the root), for every handle handed out.
    paths: RwLock<HashMap<u64, PathBuf>>,
    open_files: Mutex<Vec<(u64, Arc<std::fs::File>)>>,
    last_rescan: Mutex<Option<Instant>>,
}

impl ReadOnlyDir {
    pub fn new(root: &Path, key: HandleKey) -> io::Result<ReadOnlyDir> {
        let root = Root::open(root).map_err(|e| io::Error::new(e.kind(), format!("NFS root {e}")))?;
        let paths = RwLock::new(HashMap::from([(root.ino, PathBuf::new())]));
        Ok(ReadOnlyDir { root, key, paths, open_files: Mutex::new(Vec::new()), last_rescan: Mutex::new(None) })
    }

    pub fn root_path(&self) -> &Path {
        &self.root.path
    }

    /// For tests: behave as on a kernel without openat2.
    pub fn force_component_walk(&self) {
        self.root.force_component_walk();
    }

    fn handle(&self, ino: u64) -> Handle {
        Handle::new(ino, &self.key)
    }

    fn known(&self, ino: u64) -> Result<Option<PathBuf>, nfsstat3> {
        let paths = self.paths.read().map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)?;
        Ok(paths.get(&ino).cloned())
    }

    /// The path and current attributes of the file `handle` names, without following a link.
    fn resolve(&self, handle: &Handle) -> Result<(PathBuf, OwnedFd, Stat), nfsstat3> {
        let Some(ino) = handle.verified(&self.key) else {
            tracing::warn!(?handle, "NFS: refused a file handle this server did not make (forged or from another server)");
            return Err(nfsstat3::NFS3ERR_BADHANDLE);
        };
        for attempt in 0..2 {
            if let Some(path) = self.known(ino)? {
                match self.root.stat_below(&path) {
                    Ok((fd, stat)) if stat.st_ino as u64 == ino => return Ok((path, fd, stat)),
                    // Gone or replaced since the handle was made: look for the inode once more.
                    Ok(_) | Err(_) => {}
                }
            }
            if attempt == 0 && !self.rescan() {
                break;
            }
        }
        Err(nfsstat3::NFS3ERR_STALE)
    }

    fn remember(&self, path: PathBuf, stat: &Stat) -> Result<Handle, nfsstat3> {
        if stat.st_dev as u64 != self.root.dev {
            tracing::warn!(path = %path.display(), "NFS: not serving a file on another file system mounted inside the export");
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let ino = stat.st_ino as u64;
        let mut paths = self.paths.write().map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)?;
        paths.insert(ino, path);
        Ok(self.handle(ino))
    }

    /// Walks the whole export (no link followed, no other file system entered) and learns the path
    /// of every inode: how a handle from before a restart is found again. One walk at a time:
    /// requests that arrive during it wait for it and then look again (true), as do those within
    /// RESCAN_INTERVAL after it ended (its result is what they would find); false only when the
    /// state cannot be read.
    fn rescan(&self) -> bool {
        // Held for the whole walk, so that the READs a client has in flight after a restart all
        // see its result instead of a stale answer while it runs.
        let Ok(mut last) = self.last_rescan.lock() else { return false };
        if last.is_some_and(|t| t.elapsed() < RESCAN_INTERVAL) {
            return true;
        }
        let started = Instant::now();
        let mut found = HashMap::new();
        let mut directories = vec![PathBuf::new()];
        while let Some(dir) = directories.pop() {
            let Ok(entries) = self.names(&dir) else { continue };
            for (name, stat) in entries.iter().filter_map(|n| Some((n, self.stat_in(&entries.fd, n)?))) {
                if stat.st_dev as u64 != self.root.dev {
                    continue;
                }
                let path = dir.join(name);
                if kind(&stat) == Kind::Directory {
                    directories.push(path.clone());
                }
                found.insert(stat.st_ino as u64, path);
            }
        }
        let count = found.len();
        if let Ok(mut paths) = self.paths.write() {
            paths.extend(found);
        }
        *last = Some(Instant::now());
        tracing::info!(files = count, seconds = started.elapsed().as_secs_f32(), "NFS: walked the export to find handles from before a restart");
        true
    }

    fn stat_in(&self, dir: &OwnedFd, name: &OsStr) -> Option<Stat> {
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()
    }

    /// The names in directory `dir` (below the root), sorted, without `.` and `..`.
    fn names(&self, dir: &Path) -> io::Result<Names> {
        let fd = self.root.open_below(dir, OFlags::RDONLY | OFlags::DIRECTORY, Links::Refuse)?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        // Sorted, so that a cookie (an entry's position + 1) means the same entry on every call.
        names.sort();
        Ok(Names { fd, names })
    }

    /// The open file for READ on `handle`: a regular file only, never a device node or FIFO.
    fn file(&self, handle: &Handle) -> Result<Arc<std::fs::File>, nfsstat3> {
        let (path, _, stat) = self.resolve(handle)?;
        let ino = stat.st_ino as u64;
        match kind(&stat) {
            Kind::File => {}
            Kind::Directory => return Err(nfsstat3::NFS3ERR_ISDIR),
            Kind::Link | Kind::Special => {
                tracing::warn!(path = %path.display(), "NFS: refused a READ of something that is not a regular file");
                return Err(nfsstat3::NFS3ERR_INVAL);
            }
        }
        if let Ok(open) = self.open_files.lock()
            && let Some((_, file)) = open.iter().find(|(i, _)| *i == ino)
        {
            return Ok(file.clone());
        }
        // O_NONBLOCK and O_NOCTTY in case the file was swapped for a FIFO or a tty since the stat;
        // the stat of what was opened decides.
        let fd = self.root.open_below(&path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY, Links::Refuse).map_err(|e| status(&e))?;
        let opened = rustix::fs::fstat(&fd).map_err(|e| status(&e.into()))?;
        if kind(&opened) != Kind::File || opened.st_ino as u64 != ino {
            return Err(nfsstat3::NFS3ERR_STALE);
        }
        let file = Arc::new(std::fs::File::from(fd));
        if let Ok(mut open) = self.open_files.lock() {
            if open.len() >= OPEN_FILES {
                open.remove(0);
            }
            open.push((ino, file.clone()));
        }
        Ok(file)
    }
}

/// A directory's open descriptor and sorted names.
struct Names {
    fd: OwnedFd,
    names: Vec<OsString>,
}

impl Names {
    fn iter(&self) -> impl Iterator<Item = &OsStr> {
        self.names.iter().map(OsString::as_os_str)
    }
}

impl NfsReadFileSystem for ReadOnlyDir {
    type Handle = Handle;

    fn root_dir(&self) -> Handle {
        self.handle(self.root.ino)
    }

    async fn lookup(&self, dirid: &Handle, filename: &filename3<'_>) -> Result<Handle, nfsstat3> {
        let (dir, _, stat) = self.resolve(dirid)?;
        if kind(&stat) != Kind::Directory {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        let name: &[u8] = &filename.0;
        let path = match name {
            b"" => return Err(nfsstat3::NFS3ERR_NOENT),
            b"." => return Ok(*dirid),
            // `..` of the export's top is the top itself: nothing above it is served. Below it, the
            // path's parent is the directory's parent: no component of a remembered path is a link.
            b".." => return Ok(self.handle(self.known_ino(dir.parent().unwrap_or(Path::new("")))?)),
            _ if name.contains(&b'/') || name.contains(&0) => {
                tracing::warn!(name = %String::from_utf8_lossy(name), "NFS: refused a lookup of a name with / or NUL");
                return Err(nfsstat3::NFS3ERR_ACCES);
            }
            _ => dir.join(OsStr::from_bytes(name)),
        };
        let (_, stat) = self.root.stat_below(&path).map_err(|e| {
            if e.raw_os_error() == Some(libc::EXDEV) {
                tracing::warn!(path = %path.display(), "NFS: not serving a mount point inside the export");
            }
            status(&e)
        })?;
        self.remember(path, &stat)
    }

    async fn getattr(&self, id: &Handle) -> Result<fattr3, nfsstat3> {
        self.resolve(id).map(|(_, _, stat)| attributes(&stat))
    }

    async fn read(&self, id: &Handle, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
        let file = self.file(id)?;
        let size = file.metadata().map_err(|e| status(&e))?.len();
        // Never more than rtmax, whatever the count on the wire says (RFC 1813 3.3.6 lets the
        // server answer a short read): the buffer is allocated before anything is read.
        let count = count.min(crate::serve::nfs_gate::READ_MAX).min(u32::try_from(size.saturating_sub(offset)).unwrap_or(u32::MAX));
        let mut buffer = vec![0; count as usize];
        let mut filled = 0;
        while filled < buffer.len() {
            match file.read_at(&mut buffer[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "NFS: read failed");
                    return Err(status(&e));
                }
            }
        }
        buffer.truncate(filled);
        Ok((buffer, offset + filled as u64 >= size))
    }

    async fn readdirplus(&self, dirid: &Handle, cookie: u64) -> Result<impl ReadDirPlusIterator<Handle>, nfsstat3> {
        let (dir, _, stat) = self.resolve(dirid)?;
        if kind(&stat) != Kind::Directory {
            return Err(nfsstat3::NFS3ERR_NOTDIR);
        }
        let names = self.names(&dir).map_err(|e| status(&e))?;
        Ok(Entries { fs: self, dir, names, next: cookie.min(usize::MAX as u64) as usize })
    }

    async fn readlink(&self, id: &Handle) -> Result<nfspath3<'_>, nfsstat3> {
        let (_, fd, stat) = self.resolve(id)?;
        if kind(&stat) != Kind::Link {
            return Err(nfsstat3::NFS3ERR_INVAL);
        }
        // readlinkat on an O_PATH descriptor of the link itself, with an empty name.
        let target = rustix::fs::readlinkat(&fd, c"", Vec::new()).map_err(|e| status(&e.into()))?;
        Ok(nfspath3::from(target.into_bytes()))
    }
}

impl ReadOnlyDir {
    fn known_ino(&self, path: &Path) -> Result<u64, nfsstat3> {
        let (_, stat) = self.root.stat_below(path).map_err(|e| status(&e))?;
        self.remember(path.to_path_buf(), &stat).map(|h| h.ino())
    }
}

/// A directory listing from entry `next` on, each entry's attributes read when it is sent.
struct Entries<'a> {
    fs: &'a ReadOnlyDir,
    dir: PathBuf,
    names: Names,
    next: usize,
}

impl ReadDirPlusIterator<Handle> for Entries<'_> {
    async fn next(&mut self) -> NextResult<DirEntryPlus<Handle>> {
        while let Some(name) = self.names.names.get(self.next) {
            self.next += 1;
            // Gone since the listing, or a mount point: not listed.
            let Some(stat) = self.fs.stat_in(&self.names.fd, name) else { continue };
            let Ok(handle) = self.fs.remember(self.dir.join(name), &stat) else { continue };
            return NextResult::Ok(DirEntryPlus {
                fileid: stat.st_ino as u64,
                name: filename3::from(name.as_bytes().to_vec()),
                cookie: self.next as u64,
                name_attributes: Some(attributes(&stat)),
                name_handle: Some(handle),
            });
        }
        NextResult::Eof
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// An export with the links a NixOS closure has (absolute into /etc and /nix/store, relative
    /// to directories), links out of it, a FIFO and a socket, and a secret beside it.
    fn tree() -> (tempfile::TempDir, ReadOnlyDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let export = dir.path().join("export");
        std::fs::create_dir_all(export.join("bin")).expect("mkdir");
        std::fs::create_dir_all(export.join("etc")).expect("mkdir");
        std::fs::write(export.join("bin/tool"), b"0123456789").expect("write");
        std::fs::write(export.join("etc/hostname"), b"the export's own hostname\n").expect("write");
        std::fs::write(dir.path().join("secret"), b"outside the export").expect("write");
        symlink("../../secret", export.join("bin/link")).expect("symlink");
        symlink("..", export.join("up")).expect("symlink");
        symlink("/", export.join("hostroot")).expect("symlink");
        symlink("/etc", export.join("hostetc")).expect("symlink");
        symlink("/etc/shadow", export.join("shadow")).expect("symlink");
        symlink("/nix/store", export.join("store")).expect("symlink");
        symlink("bin", export.join("bindir")).expect("symlink");
        rustix::fs::mkfifoat(rustix::fs::CWD, export.join("fifo"), rustix::fs::Mode::from_raw_mode(0o644)).expect("mkfifo");
        std::os::unix::net::UnixListener::bind(export.join("socket")).expect("socket");
        let key = HandleKey::new([7; 32]);
        let fs = ReadOnlyDir::new(&export, key).expect("export");
        (dir, fs)
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    fn name(n: &str) -> filename3<'static> {
        filename3::from(n.as_bytes().to_vec())
    }

    /// Each test runs with openat2 and again with the component walk of older kernels.
    fn both(test: impl AsyncFn(&ReadOnlyDir, &Path)) {
        let (dir, fs) = tree();
        block(test(&fs, dir.path()));
        let (dir, fs) = tree();
        fs.force_component_walk();
        block(test(&fs, dir.path()));
    }

    #[test]
    fn lookup_read_and_readdir_serve_the_export() {
        both(async |fs, _| {
            let root = fs.root_dir();
            let bin = fs.lookup(&root, &name("bin")).await.expect("bin");
            let tool = fs.lookup(&bin, &name("tool")).await.expect("tool");
            assert_eq!(fs.read(&tool, 2, 4).await.expect("read"), (b"2345".to_vec(), false));
            assert_eq!(fs.read(&tool, 8, 100).await.expect("read"), (b"89".to_vec(), true));
            assert_eq!(fs.getattr(&tool).await.expect("attr").size, 10);
            assert_eq!(fs.lookup(&bin, &name(".")).await.expect("."), bin);
            assert_eq!(fs.lookup(&bin, &name("..")).await.expect(".."), root);
        });
    }

    #[test]
    fn a_link_is_returned_as_a_link_and_never_followed_on_the_server() {
        both(async |fs, _| {
            let root = fs.root_dir();
            for (link, text) in [
                ("up", ".."),
                ("hostroot", "/"),
                ("hostetc", "/etc"),
                ("shadow", "/etc/shadow"),
                ("store", "/nix/store"),
                ("bindir", "bin"),
            ] {
                let handle = fs.lookup(&root, &name(link)).await.expect(link);
                let attr = fs.getattr(&handle).await.expect("attr");
                assert!(matches!(attr.type_, ftype3::NF3LNK), "{link}: {:?}", attr.type_);
                assert_eq!(attr.size, text.len() as u64, "{link}: a link's size is its text's");
                assert_eq!(&*fs.readlink(&handle).await.expect("readlink").0, text.as_bytes());
                // The link as a directory on the way: LOOKUP and READDIR refuse it.
                for inner in ["secret", "etc", "hostname", "shadow", "tool"] {
                    assert!(matches!(fs.lookup(&handle, &name(inner)).await, Err(nfsstat3::NFS3ERR_NOTDIR)), "{link}/{inner}");
                }
                assert!(matches!(fs.readdirplus(&handle, 0).await.err(), Some(nfsstat3::NFS3ERR_NOTDIR)), "{link}");
                // READ on the link's own handle does not read its target.
                assert!(matches!(fs.read(&handle, 0, 4096).await, Err(nfsstat3::NFS3ERR_INVAL)), "{link}");
            }
            let bin = fs.lookup(&root, &name("bin")).await.expect("bin");
            let link = fs.lookup(&bin, &name("link")).await.expect("link");
            assert!(matches!(fs.read(&link, 0, 100).await, Err(nfsstat3::NFS3ERR_INVAL)));
            assert_eq!(&*fs.readlink(&link).await.expect("readlink").0, b"../../secret");
            // READLINK of something that is not a link.
            assert!(matches!(fs.readlink(&bin).await, Err(nfsstat3::NFS3ERR_INVAL)));
        });
    }

    #[test]
    fn names_with_slashes_dots_or_nul_reach_nothing_above_the_export() {
        both(async |fs, _| {
            let root = fs.root_dir();
            assert_eq!(fs.lookup(&root, &name("..")).await.expect(".."), root, "the top's .. is the top");
            assert!(matches!(fs.lookup(&root, &name("secret")).await, Err(nfsstat3::NFS3ERR_NOENT)));
            for bad in ["../secret", "bin/tool", "/etc/hostname", "bin/../../secret", "a\0b"] {
                assert!(matches!(fs.lookup(&root, &name(bad)).await, Err(nfsstat3::NFS3ERR_ACCES)), "{bad:?}");
            }
            assert!(matches!(fs.lookup(&root, &name("")).await, Err(nfsstat3::NFS3ERR_NOENT)));
        });
    }

    #[test]
    fn fifos_sockets_and_directories_are_not_read() {
        both(async |fs, _| {
            let root = fs.root_dir();
            // With the old code, READ opened the FIFO and blocked the server for ever.
            for special in ["fifo", "socket"] {
                let handle = fs.lookup(&root, &name(special)).await.expect(special);
                assert!(matches!(fs.read(&handle, 0, 10).await, Err(nfsstat3::NFS3ERR_INVAL)), "{special}");
                assert!(matches!(fs.readdirplus(&handle, 0).await.err(), Some(nfsstat3::NFS3ERR_NOTDIR)), "{special}");
            }
            assert!(matches!(fs.read(&root, 0, 10).await, Err(nfsstat3::NFS3ERR_ISDIR)));
            let tool = fs.lookup(&fs.lookup(&root, &name("bin")).await.expect("bin"), &name("tool")).await.expect("tool");
            assert!(matches!(fs.readdirplus(&tool, 0).await.err(), Some(nfsstat3::NFS3ERR_NOTDIR)));
            assert!(matches!(fs.lookup(&tool, &name("x")).await, Err(nfsstat3::NFS3ERR_NOTDIR)));
        });
    }

    #[test]
    fn forged_handles_are_refused() {
        both(async |fs, dir| {
            let root = fs.root_dir();
            let bin = fs.lookup(&root, &name("bin")).await.expect("bin");
            let tool = fs.lookup(&bin, &name("tool")).await.expect("tool");
            let ino = |p: &Path| rustix::fs::lstat(p).expect("stat").st_ino as u64;
            let forged = |ino: u64, tag: [u8; TAG_LEN]| {
                let mut bytes = [0; HANDLE_LEN];
                bytes[..8].copy_from_slice(&ino.to_le_bytes());
                bytes[8..].copy_from_slice(&tag);
                Handle(bytes)
            };
            // The inode of a file outside the export, of one inside that was never looked up, and a
            // handed-out handle with one bit of its tag flipped; each with a made-up tag.
            let mut flipped = tool;
            flipped.0[HANDLE_LEN - 1] ^= 1;
            let candidates = [
                forged(ino(&dir.join("secret")), [0; TAG_LEN]),
                forged(ino(Path::new("/etc/hostname")), [0xff; TAG_LEN]),
                forged(ino(&dir.join("export/etc/hostname")), tool.0[8..].try_into().expect("tag")),
                flipped,
                Handle(rand_bytes()),
            ];
            for handle in candidates {
                assert!(matches!(fs.getattr(&handle).await, Err(nfsstat3::NFS3ERR_BADHANDLE)), "{handle:?}");
                assert!(matches!(fs.read(&handle, 0, 10).await, Err(nfsstat3::NFS3ERR_BADHANDLE)), "{handle:?}");
                assert!(matches!(fs.lookup(&handle, &name("hostname")).await, Err(nfsstat3::NFS3ERR_BADHANDLE)), "{handle:?}");
            }
            // A handle of the right length only.
            assert!(Handle::from_bytes(&[0; 8]).is_none());
            // A key that is not this server's makes handles this server refuses.
            let other = Handle::new(ino(&dir.join("export/bin/tool")), &HandleKey::new([8; 32]));
            assert!(matches!(fs.getattr(&other).await, Err(nfsstat3::NFS3ERR_BADHANDLE)));
        });
    }

    fn rand_bytes() -> [u8; HANDLE_LEN] {
        let mut bytes = [0; HANDLE_LEN];
        rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).expect("getrandom");
        bytes
    }

    #[test]
    fn a_restarted_server_with_the_same_key_finds_old_handles_again() {
        let (dir, fs) = tree();
        block(async {
            let bin = fs.lookup(&fs.root_dir(), &name("bin")).await.expect("bin");
            let tool = fs.lookup(&bin, &name("tool")).await.expect("tool");
            let restarted = ReadOnlyDir::new(&dir.path().join("export"), HandleKey::new([7; 32])).expect("export");
            assert_eq!(restarted.read(&tool, 0, 4).await.expect("read after restart"), (b"0123".to_vec(), false));
            // The generation number the crate checks is the same too.
            assert_eq!(HandleKey::new([7; 32]).generation(), HandleKey::new([7; 32]).generation());
            assert_ne!(HandleKey::new([7; 32]).generation(), HandleKey::new([8; 32]).generation());
            // A file that is gone is stale, not a guess.
            std::fs::remove_file(dir.path().join("export/bin/tool")).expect("rm");
            let again = ReadOnlyDir::new(&dir.path().join("export"), HandleKey::new([7; 32])).expect("export");
            assert!(matches!(again.getattr(&tool).await, Err(nfsstat3::NFS3ERR_STALE)));
        });
    }

    /// A client mid-install sends its next reads to the restarted server at once (Linux keeps
    /// several READs in flight): every one of them must find its handle, not only the one that
    /// started the walk of the export (the others were NFS3ERR_STALE while it ran, and the
    /// installer's unpack failed; seen in tests/e2e_fleet.rs).
    #[test]
    fn old_handles_arriving_at_once_after_a_restart_all_find_their_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let export = dir.path().join("export");
        // Enough files that the walk takes a while.
        for d in 0..40 {
            let sub = export.join(format!("d{d}"));
            std::fs::create_dir_all(&sub).expect("mkdir");
            for f in 0..100 {
                std::fs::write(sub.join(format!("f{f}")), format!("file {d}/{f}")).expect("write");
            }
        }
        let fs = ReadOnlyDir::new(&export, HandleKey::new([7; 32])).expect("export");
        const CLIENTS: usize = 16;
        let handles: Vec<(Handle, String)> = block(async {
            let mut handles = Vec::new();
            for i in 0..CLIENTS {
                let sub = fs.lookup(&fs.root_dir(), &name(&format!("d{}", 39 - i))).await.expect("dir");
                handles.push((fs.lookup(&sub, &name("f99")).await.expect("file"), format!("file {}/99", 39 - i)));
            }
            handles
        });
        let restarted = ReadOnlyDir::new(&export, HandleKey::new([7; 32])).expect("export");
        let barrier = std::sync::Barrier::new(CLIENTS);
        std::thread::scope(|scope| {
            for (handle, contents) in &handles {
                let (restarted, barrier) = (&restarted, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let read = block(restarted.read(handle, 0, 100));
                    assert_eq!(read, Ok((contents.as_bytes().to_vec(), true)), "{handle:?}");
                });
            }
        });
    }

    #[test]
    fn readdirplus_lists_links_as_links_and_resumes_after_its_cookie() {
        both(async |fs, _| {
            let bin = fs.lookup(&fs.root_dir(), &name("bin")).await.expect("bin");
            let mut all = Vec::new();
            let mut it = fs.readdirplus(&bin, 0).await.expect("readdir");
            while let NextResult::Ok(e) = it.next().await {
                let kind = e.name_attributes.as_ref().map(|a| a.type_);
                all.push((e.name.0.to_vec(), e.cookie, matches!(kind, Some(ftype3::NF3LNK))));
            }
            assert_eq!(all, vec![(b"link".to_vec(), 1, true), (b"tool".to_vec(), 2, false)]);
            let mut rest = fs.readdirplus(&bin, 1).await.expect("readdir");
            let NextResult::Ok(e) = rest.next().await else { panic!("one more entry") };
            assert_eq!(&*e.name.0, b"tool");
            assert!(matches!(rest.next().await, NextResult::Eof));
        });
    }
}
