//! The read-only NFS server of `nixos-pxe serve`: NFSv3 and MOUNT on one TCP port (the nfs3_server
//! crate speaks the protocols), serving one directory, the unpacked NFS root, under the export path
//! of the configuration. No portmapper and no lock manager: the kernel mounts it with
//! `port=P,mountport=P,mountproto=tcp,nolock` in `bootServer.nfsMountOptions`.
//!
//! File handles are inode numbers of the exported directory's file system; the server remembers the
//! path of every inode it has handed out. A handle it never handed out (another server's, or one
//! from before a restart that the client did not look up again) is answered with NFS3ERR_STALE.

use nfs3_server::nfs3_types::nfs3::{fattr3, filename3, ftype3, nfspath3, nfsstat3, nfstime3, specdata3};
use nfs3_server::tcp::{NFSTcp, NFSTcpListener};
use nfs3_server::vfs::{DirEntryPlus, FileHandleU64, NextResult, NfsReadFileSystem, ReadDirPlusIterator};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The mount options the kernel needs for a server without portmapper and lock manager.
pub const REQUIRED_OPTIONS: &str = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock";

/// The TCP port `bootServer.nfsMountOptions` tells the kernel to use for both NFS and MOUNT, or
/// what is missing for the built-in server (which has neither portmapper nor lock manager).
pub fn port_from_mount_options(options: &str) -> Result<u16, String> {
    let words: Vec<&str> = options.split(',').map(str::trim).collect();
    let value = |key: &str| words.iter().find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')));
    let port = value("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0);
    let mountport = value("mountport").and_then(|p| p.parse::<u16>().ok());
    let mut missing = Vec::new();
    if !matches!(value("vers").or(value("nfsvers")), Some("3")) {
        missing.push("vers=3 (the built-in server speaks NFSv3 only)".to_string());
    }
    if !(words.contains(&"tcp") || value("proto") == Some("tcp")) {
        missing.push("tcp".into());
    }
    match (port, mountport) {
        (Some(p), Some(m)) if p == m => {}
        (Some(p), Some(m)) => missing.push(format!("port and mountport equal (NFS and MOUNT share one port; they are {p} and {m})")),
        _ => missing.push("port=P and mountport=P with the same P (there is no portmapper to ask)".into()),
    }
    if value("mountproto") != Some("tcp") {
        missing.push("mountproto=tcp".into());
    }
    if !words.contains(&"nolock") {
        missing.push("nolock (there is no lock manager)".into());
    }
    match (missing.is_empty(), port) {
        (true, Some(p)) => Ok(p),
        _ => Err(format!(
            "bootServer.nfsMountOptions = \"{options}\" cannot be used with the built-in NFS server: it needs {}; \
             set bootServer.nfsMountOptions = \"{REQUIRED_OPTIONS}\" (or another port), and the kernel's root-path \
             (DHCP option 17 or nfsroot=) carries them",
            missing.join(", ")
        )),
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The directory served, read-only.
    pub root: PathBuf,
    /// The path clients mount (bootServer.nfsExport), e.g. /srv/nixos/nfsroot.
    pub export: String,
    /// Where to listen: bootServer.address and the port of the mount options.
    pub address: SocketAddr,
}

/// One directory tree, read-only, as an NFSv3 file system.
#[derive(Debug)]
pub struct ReadOnlyDir {
    root: PathBuf,
    root_ino: u64,
    dev: u64,
    paths: RwLock<HashMap<u64, PathBuf>>,
}

fn status(e: &io::Error) -> nfsstat3 {
    match e.kind() {
        io::ErrorKind::NotFound => nfsstat3::NFS3ERR_NOENT,
        io::ErrorKind::PermissionDenied => nfsstat3::NFS3ERR_ACCES,
        _ => match e.raw_os_error() {
            Some(libc::ENOTDIR) => nfsstat3::NFS3ERR_NOTDIR,
            Some(libc::EISDIR) => nfsstat3::NFS3ERR_ISDIR,
            Some(libc::ENAMETOOLONG) => nfsstat3::NFS3ERR_NAMETOOLONG,
            _ => nfsstat3::NFS3ERR_IO,
        },
    }
}

fn time(seconds: i64, nanoseconds: i64) -> nfstime3 {
    nfstime3 { seconds: seconds.clamp(0, u32::MAX as i64) as u32, nseconds: nanoseconds.clamp(0, 999_999_999) as u32 }
}

/// The attributes of a file as NFSv3 sends them: its own mode bits (set-uid included), owner,
/// size, device numbers and times.
pub fn attributes(meta: &Metadata) -> fattr3 {
    let kind = match meta.mode() & libc::S_IFMT {
        libc::S_IFDIR => ftype3::NF3DIR,
        libc::S_IFLNK => ftype3::NF3LNK,
        libc::S_IFBLK => ftype3::NF3BLK,
        libc::S_IFCHR => ftype3::NF3CHR,
        libc::S_IFSOCK => ftype3::NF3SOCK,
        libc::S_IFIFO => ftype3::NF3FIFO,
        _ => ftype3::NF3REG,
    };
    let rdev = meta.rdev();
    fattr3 {
        type_: kind,
        mode: meta.mode() & 0o7777,
        nlink: meta.nlink().min(u32::MAX as u64) as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        used: meta.blocks() * 512,
        rdev: specdata3 { specdata1: libc::major(rdev), specdata2: libc::minor(rdev) },
        fsid: meta.dev(),
        fileid: meta.ino(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
    }
}

impl ReadOnlyDir {
    pub fn new(root: &Path) -> io::Result<ReadOnlyDir> {
        let root = root.canonicalize().map_err(|e| io::Error::new(e.kind(), format!("NFS root {}: {e}", root.display())))?;
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("NFS root {} is not a directory", root.display())));
        }
        let paths = RwLock::new(HashMap::from([(meta.ino(), root.clone())]));
        Ok(ReadOnlyDir { root, root_ino: meta.ino(), dev: meta.dev(), paths })
    }

    fn path(&self, handle: &FileHandleU64) -> Result<PathBuf, nfsstat3> {
        let paths = self.paths.read().map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)?;
        paths.get(&handle.as_u64()).cloned().ok_or(nfsstat3::NFS3ERR_STALE)
    }

    /// The handle of `path`, remembered; files on another file system (a mount inside the
    /// exported tree) are not served: their inode numbers could collide with this one's.
    fn remember(&self, path: PathBuf, meta: &Metadata) -> Result<FileHandleU64, nfsstat3> {
        if meta.dev() != self.dev {
            tracing::warn!(path = %path.display(), "NFS: not serving a file on another file system mounted inside the export");
            return Err(nfsstat3::NFS3ERR_ACCES);
        }
        let mut paths = self.paths.write().map_err(|_| nfsstat3::NFS3ERR_SERVERFAULT)?;
        paths.entry(meta.ino()).or_insert(path);
        Ok(FileHandleU64::new(meta.ino()))
    }

    fn child(&self, dir: &Path, name: &[u8]) -> Result<PathBuf, nfsstat3> {
        match name {
            b"" => Err(nfsstat3::NFS3ERR_NOENT),
            b"." => Ok(dir.to_path_buf()),
            // `..` of the export's top is the top itself: nothing above it is served.
            b".." if dir == self.root => Ok(dir.to_path_buf()),
            b".." => Ok(dir.parent().unwrap_or(&self.root).to_path_buf()),
            _ if name.contains(&b'/') || name.contains(&0) => {
                tracing::warn!(name = %String::from_utf8_lossy(name), "NFS: refused a lookup of a name with / or NUL");
                Err(nfsstat3::NFS3ERR_ACCES)
            }
            _ => Ok(dir.join(OsStr::from_bytes(name))),
        }
    }
}

impl NfsReadFileSystem for ReadOnlyDir {
    type Handle = FileHandleU64;

    fn root_dir(&self) -> FileHandleU64 {
        FileHandleU64::new(self.root_ino)
    }

    async fn lookup(&self, dirid: &FileHandleU64, filename: &filename3<'_>) -> Result<FileHandleU64, nfsstat3> {
        let dir = self.path(dirid)?;
        let path = self.child(&dir, &filename.0)?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| status(&e))?;
        self.remember(path, &meta)
    }

    async fn getattr(&self, id: &FileHandleU64) -> Result<fattr3, nfsstat3> {
        let path = self.path(id)?;
        std::fs::symlink_metadata(&path).map(|m| attributes(&m)).map_err(|e| status(&e))
    }

    async fn read(&self, id: &FileHandleU64, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
        let path = self.path(id)?;
        let file = std::fs::File::open(&path).map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "NFS: read failed");
            status(&e)
        })?;
        let size = file.metadata().map_err(|e| status(&e))?.len();
        let mut buffer = vec![0; count as usize];
        let mut filled = 0;
        while filled < buffer.len() {
            match file.read_at(&mut buffer[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "NFS: read failed");
                    return Err(status(&e));
                }
            }
        }
        buffer.truncate(filled);
        Ok((buffer, offset + filled as u64 >= size))
    }

    async fn readdirplus(&self, dirid: &FileHandleU64, cookie: u64) -> Result<impl ReadDirPlusIterator<FileHandleU64>, nfsstat3> {
        let dir = self.path(dirid)?;
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| status(&e))?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        // Sorted, so that a cookie (an entry's position + 1) means the same entry on every call.
        names.sort();
        let mut entries = Vec::new();
        for (index, name) in names.into_iter().enumerate() {
            let position = index as u64 + 1;
            if position <= cookie {
                continue;
            }
            let path = dir.join(&name);
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let Ok(handle) = self.remember(path, &meta) else { continue };
            entries.push(DirEntryPlus {
                fileid: meta.ino(),
                name: filename3::from(name.as_bytes().to_vec()),
                cookie: position,
                name_attributes: Some(attributes(&meta)),
                name_handle: Some(handle),
            });
        }
        entries.reverse();
        Ok(Entries(entries))
    }

    async fn readlink(&self, id: &FileHandleU64) -> Result<nfspath3<'_>, nfsstat3> {
        let path = self.path(id)?;
        let target = std::fs::read_link(&path).map_err(|e| status(&e))?;
        Ok(nfspath3::from(target.as_os_str().as_bytes().to_vec()))
    }
}

/// A directory listing, last entry first (popped from the end).
struct Entries(Vec<DirEntryPlus<FileHandleU64>>);

impl ReadDirPlusIterator<FileHandleU64> for Entries {
    async fn next(&mut self) -> NextResult<DirEntryPlus<FileHandleU64>> {
        match self.0.pop() {
            Some(entry) => NextResult::Ok(entry),
            None => NextResult::Eof,
        }
    }
}

/// Serves `settings.root` until `stop` is set. Binds before returning the first error, so a port
/// in use is reported at once.
pub fn serve(settings: &Settings, stop: &AtomicBool) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("nfs")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the NFS server's runtime: {e}"))?;
    let fs = ReadOnlyDir::new(&settings.root).map_err(|e| e.to_string())?;
    let root = fs.root.clone();
    runtime.block_on(async {
        let mut listener = NFSTcpListener::bind_ro(&settings.address.to_string(), fs)
            .await
            .map_err(|e| format!("cannot listen for NFS on TCP {}: {e}", settings.address))?;
        listener.with_export_name(&settings.export);
        tracing::info!(
            root = %root.display(),
            export = %settings.export,
            address = %settings.address,
            "NFS: serving read-only (NFSv3 and MOUNT on one port, no portmapper, no locks)"
        );
        let result = tokio::select! {
            result = listener.handle_forever() => result.map_err(|e| format!("NFS server stopped: {e}")),
            () = async { while !stop.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(200)).await } } => Ok(()),
        };
        tracing::info!("NFS: stopped");
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_required_options_give_their_port() {
        assert_eq!(port_from_mount_options(REQUIRED_OPTIONS), Ok(2049));
        assert_eq!(port_from_mount_options("vers=3,proto=tcp,port=20049,mountport=20049,mountproto=tcp,nolock"), Ok(20049));
    }

    #[test]
    fn options_that_need_a_portmapper_or_locks_are_refused_with_what_to_set() {
        let e = port_from_mount_options("vers=3,tcp").expect_err("no port");
        assert!(e.contains("port=P and mountport=P") && e.contains("nolock") && e.contains("mountproto=tcp"), "{e}");
        assert!(e.contains(REQUIRED_OPTIONS), "{e}");
        let e = port_from_mount_options("vers=3,tcp,port=2049,mountport=2050,mountproto=tcp,nolock").expect_err("ports differ");
        assert!(e.contains("they are 2049 and 2050"), "{e}");
        let e = port_from_mount_options("vers=4,tcp,port=2049,mountport=2049,mountproto=tcp,nolock").expect_err("v4");
        assert!(e.contains("vers=3"), "{e}");
    }

    fn tree() -> (tempfile::TempDir, ReadOnlyDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("export/bin")).expect("mkdir");
        std::fs::write(dir.path().join("export/bin/tool"), b"0123456789").expect("write");
        std::os::unix::fs::symlink("../../secret", dir.path().join("export/bin/link")).expect("symlink");
        std::fs::write(dir.path().join("secret"), b"outside").expect("write");
        let fs = ReadOnlyDir::new(&dir.path().join("export")).expect("export");
        (dir, fs)
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn lookup_read_and_readlink_stay_inside_the_export() {
        let (_dir, fs) = tree();
        block(async {
            let root = fs.root_dir();
            // `..` at the top is the top: nothing above the export can be reached by name.
            let up = fs.lookup(&root, &filename3::from(b"..".to_vec())).await.expect("..");
            assert_eq!(up.as_u64(), root.as_u64());
            assert!(fs.lookup(&root, &filename3::from(b"secret".to_vec())).await.is_err());
            assert!(fs.lookup(&root, &filename3::from(b"bin/tool".to_vec())).await.is_err());
            let bin = fs.lookup(&root, &filename3::from(b"bin".to_vec())).await.expect("bin");
            let tool = fs.lookup(&bin, &filename3::from(b"tool".to_vec())).await.expect("tool");
            assert_eq!(fs.read(&tool, 2, 4).await.expect("read"), (b"2345".to_vec(), false));
            assert_eq!(fs.read(&tool, 8, 100).await.expect("read"), (b"89".to_vec(), true));
            assert_eq!(fs.getattr(&tool).await.expect("attr").size, 10);
            // A symlink is returned as its text; the client resolves it in its own root.
            let link = fs.lookup(&bin, &filename3::from(b"link".to_vec())).await.expect("link");
            assert!(matches!(fs.getattr(&link).await.expect("attr").type_, ftype3::NF3LNK));
            assert_eq!(&*fs.readlink(&link).await.expect("readlink").0, b"../../secret");
            // A handle never handed out is stale, not a guess.
            assert!(matches!(fs.getattr(&FileHandleU64::new(u64::MAX)).await, Err(nfsstat3::NFS3ERR_STALE)));
        });
    }

    #[test]
    fn readdirplus_resumes_after_its_cookie() {
        let (_dir, fs) = tree();
        block(async {
            let bin = fs.lookup(&fs.root_dir(), &filename3::from(b"bin".to_vec())).await.expect("bin");
            let mut all = Vec::new();
            let mut it = fs.readdirplus(&bin, 0).await.expect("readdir");
            while let NextResult::Ok(e) = it.next().await {
                all.push((e.name.0.to_vec(), e.cookie));
            }
            assert_eq!(all, vec![(b"link".to_vec(), 1), (b"tool".to_vec(), 2)]);
            let mut rest = fs.readdirplus(&bin, 1).await.expect("readdir");
            let NextResult::Ok(e) = rest.next().await else { panic!("one more entry") };
            assert_eq!(&*e.name.0, b"tool");
            assert!(matches!(rest.next().await, NextResult::Eof));
        });
    }
}
