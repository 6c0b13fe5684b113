//! Opening files below one directory of the boot server, and never anything else: the one way serve's
//! NFS and TFTP servers reach the disk. A name a client sent is resolved relative to a descriptor of
//! the served directory by `openat2(2)` with `RESOLVE_BENEATH` (no `..` above it, no absolute path),
//! `RESOLVE_NO_MAGICLINKS` (no `/proc/self/fd/...`) and `RESOLVE_NO_XDEV` (no mount point inside
//! it), and for NFS also `RESOLVE_NO_SYMLINKS`: an NFS server hands a link to the client as a link,
//! and the client resolves it in its own root. Kernels before 5.6 have no openat2; there the path
//! is walked one component at a time with `O_NOFOLLOW`, which refuses every symbolic link.

// rustix's Stat has other field types on other architectures: the casts are for them.
#![allow(clippy::unnecessary_cast)]

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a symbolic link on the way may be followed (staying below the root) or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Never: NFS, where the client resolves links itself.
    Refuse,
    /// Relative links that stay below the root: TFTP, whose clients cannot resolve links.
    FollowBeneath,
}

/// A served directory, held open.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// The directory as the operator named it, canonical; for log lines only.
    pub path: PathBuf,
    /// Its device and inode: a file on another file system is never served.
    pub dev: u64,
    pub ino: u64,
    /// Set once openat2 answered ENOSYS (or by a test): walk component by component instead.
    walk_only: AtomicBool,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let canonical = path.canonicalize().map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let fd = rustix::fs::open(&canonical, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("{}: {e} (it must be a directory)", canonical.display())))?;
        let stat = rustix::fs::fstat(&fd)?;
        Ok(Root { fd, path: canonical, dev: stat.st_dev as u64, ino: stat.st_ino as u64, walk_only: AtomicBool::new(false) })
    }

    /// For tests: behave as on a kernel without openat2.
    pub fn force_component_walk(&self) {
        self.walk_only.store(true, Ordering::Relaxed);
    }

    /// Opens `relative` (a path below the root, "" for the root itself) with `flags` (`O_PATH`,
    /// `O_RDONLY`, `O_DIRECTORY`, ...; `O_CLOEXEC` is always added, and `O_NOFOLLOW` unless links may
    /// be followed). With `Links::Refuse`, a symbolic link as the last component opened with `O_PATH`
    /// gives the link itself. Fails with `EXDEV` for a path that leaves the root or crosses a mount
    /// point, `ELOOP` for a link that may not be followed.
    pub fn open_below(&self, relative: &Path, flags: OFlags, links: Links) -> io::Result<OwnedFd> {
        check_relative(relative)?;
        let flags = flags | OFlags::CLOEXEC;
        if !self.walk_only.load(Ordering::Relaxed) {
            let flags = if links == Links::Refuse { flags | OFlags::NOFOLLOW } else { flags };
            let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
            if links == Links::Refuse {
                resolve |= ResolveFlags::NO_SYMLINKS;
            }
            let path = if relative.as_os_str().is_empty() { Path::new(".") } else { relative };
            // EAGAIN: the kernel saw a concurrent rename during resolution and asks to retry.
            for _ in 0..8 {
                match rustix::fs::openat2(&self.fd, path, flags, Mode::empty(), resolve) {
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS) => {
                        tracing::info!("openat2 is not available (Linux before 5.6): resolving paths one component at a time, refusing every symbolic link");
                        self.walk_only.store(true, Ordering::Relaxed);
                        break;
                    }
                    result => return result.map_err(io::Error::from),
                }
            }
            if !self.walk_only.load(Ordering::Relaxed) {
                return Err(io::Error::from(Errno::AGAIN));
            }
        }
        self.walk(relative, flags | OFlags::NOFOLLOW)
    }

    /// The component walk: every directory on the way opened with `O_PATH | O_NOFOLLOW | O_DIRECTORY`
    /// (a link there fails), checked to be on the root's file system; the last component opened with
    /// `flags` (which hold `O_NOFOLLOW`).
    fn walk(&self, relative: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let names: Vec<_> = relative.components().collect();
        let Some((last, dirs)) = names.split_last() else {
            return Ok(rustix::fs::openat(&self.fd, ".", flags, Mode::empty())?);
        };
        let mut dir: Option<OwnedFd> = None;
        for name in dirs {
            let parent = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
            let next = rustix::fs::openat(parent, name.as_os_str(), OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| if e == Errno::NOTDIR && is_link(parent, name.as_os_str()) { Errno::LOOP } else { e })?;
            if rustix::fs::fstat(&next)?.st_dev as u64 != self.dev {
                return Err(io::Error::from(Errno::XDEV));
            }
            dir = Some(next);
        }
        let parent = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
        let fd = rustix::fs::openat(parent, last.as_os_str(), flags, Mode::empty())?;
        if rustix::fs::fstat(&fd)?.st_dev as u64 != self.dev {
            return Err(io::Error::from(Errno::XDEV));
        }
        Ok(fd)
    }

    /// `lstat` of `relative`, without following a link at its end or on the way.
    pub fn stat_below(&self, relative: &Path) -> io::Result<(OwnedFd, Stat)> {
        let fd = self.open_below(relative, OFlags::PATH, Links::Refuse)?;
        let stat = rustix::fs::fstat(&fd)?;
        Ok((fd, stat))
    }
}

fn is_link(dir: rustix::fd::BorrowedFd<'_>, name: &std::ffi::OsStr) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|s| kind(&s) == Kind::Link)
}

/// Refuses what no name from a client may contain: an absolute path, `..`, `.` inside, or nothing.
fn check_relative(relative: &Path) -> io::Result<()> {
    for component in relative.components() {
        if !matches!(component, Component::Normal(_)) {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{} is not a plain relative path", relative.display())));
        }
    }
    Ok(())
}

/// The type of a file, from its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Link,
    /// A device node, FIFO or socket: never opened, never read.
    Special,
}

pub fn kind(stat: &Stat) -> Kind {
    match stat.st_mode as u32 & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Directory,
        libc::S_IFLNK => Kind::Link,
        _ => Kind::Special,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/b/file"), b"inside").expect("write");
        std::fs::write(dir.path().join("secret"), b"outside").expect("write");
        std::os::unix::fs::symlink("..", root.join("up")).expect("symlink");
        std::os::unix::fs::symlink("/", root.join("hostroot")).expect("symlink");
        std::os::unix::fs::symlink("a/b", root.join("inside")).expect("symlink");
        std::os::unix::fs::symlink("../../secret", root.join("a/out")).expect("symlink");
        let r = Root::open(&root).expect("root");
        (dir, r)
    }

    fn errno(r: io::Result<OwnedFd>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    fn both(check: impl Fn(&Root)) {
        let (_dir, root) = tree();
        check(&root);
        root.force_component_walk();
        check(&root);
    }

    #[test]
    fn nfs_never_follows_a_link_anywhere_in_the_path() {
        both(|root| {
            let read = |p: &str| root.open_below(Path::new(p), OFlags::RDONLY, Links::Refuse);
            assert!(read("a/b/file").is_ok());
            for through in ["up/secret", "hostroot/etc/hostname", "inside/file", "hostroot/etc/shadow"] {
                assert_eq!(errno(read(through)), Some(libc::ELOOP), "{through}");
            }
            // The link itself, as O_PATH: what LOOKUP hands out.
            let (_, stat) = root.stat_below(Path::new("a/out")).expect("the link itself");
            assert_eq!(kind(&stat), Kind::Link);
            // Opening it for reading does not follow it.
            assert_eq!(errno(read("a/out")), Some(libc::ELOOP));
        });
    }

    #[test]
    fn names_that_leave_the_root_are_refused_before_any_system_call() {
        both(|root| {
            for bad in ["..", "../secret", "a/../..", "/etc/hostname", "a/b/../../.."] {
                let e = root.open_below(Path::new(bad), OFlags::PATH, Links::FollowBeneath).expect_err(bad);
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{bad}");
            }
        });
    }

    #[test]
    fn tftp_follows_links_that_stay_below_the_root_only() {
        let (_dir, root) = tree();
        let read = |p: &str| root.open_below(Path::new(p), OFlags::RDONLY, Links::FollowBeneath);
        assert!(read("inside/file").is_ok());
        assert_eq!(errno(read("up/secret")), Some(libc::EXDEV));
        assert_eq!(errno(read("hostroot/etc/hostname")), Some(libc::EXDEV));
        assert_eq!(errno(read("a/out")), Some(libc::EXDEV));
        // Without openat2 no link is followed at all.
        root.force_component_walk();
        assert_eq!(errno(read("inside/file")), Some(libc::ELOOP));
        assert_eq!(errno(read("up/secret")), Some(libc::ELOOP));
    }
}
