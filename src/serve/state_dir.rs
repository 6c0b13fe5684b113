//! serve's state directory (`--state-dir`, default /var/lib/nixos-pxe): created mode 0700, it
//! holds the fleet's `state.sqlite3` and `nfs-handle.key`, the secret of the NFS file handles,
//! made once (0600) so that a restarted serve keeps the handles clients hold valid.

use crate::error::Error;
use crate::serve::nfs_fs::HandleKey;
use rustix::fs::{Mode, OFlags};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

pub const NFS_HANDLE_KEY: &str = "nfs-handle.key";
const KEY_LEN: usize = 32;

/// Creates `dir` (and its parents) mode 0700 if missing; says so if it exists open to others.
/// A symbolic link to a directory is that directory: systemd's StateDirectory= with DynamicUser=
/// makes /var/lib/NAME a link to private/NAME (nix/server-module.nix runs serve so).
pub fn prepare(dir: &Path) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Message(format!("serve --state-dir {}: {e}", dir.display()));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            if m.mode() & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), mode = format!("{:o}", m.mode() & 0o7777), "state directory is open to other users; chmod 700 it");
            }
            Ok(())
        }
        Ok(_) => Err(Error::Message(format!("serve --state-dir {}: not a directory", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
            // The mode given to mkdir is reduced by the umask: set it exactly.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
            tracing::info!(dir = %dir.display(), "created the state directory");
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

/// The NFS handle key of `dir/nfs-handle.key`, made (32 random bytes, mode 0600) if missing.
pub fn nfs_handle_key(dir: &Path) -> Result<HandleKey, Error> {
    let path = dir.join(NFS_HANDLE_KEY);
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::Message(format!("{}: {what}: {e}", path.display()));
    match rustix::fs::open(&path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => {
            let mut file = std::fs::File::from(fd);
            let meta = file.metadata().map_err(|e| fail("cannot read", &e))?;
            if !meta.is_file() {
                return Err(fail("not a regular file", &"remove it; serve makes a new key (clients then remount)"));
            }
            if meta.mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the NFS handle key was readable by others: made it 0600");
                file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| fail("cannot chmod 600", &e))?;
            }
            let mut bytes = Vec::with_capacity(KEY_LEN + 1);
            Read::by_ref(&mut file).take(KEY_LEN as u64 + 1).read_to_end(&mut bytes).map_err(|e| fail("cannot read", &e))?;
            let key: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
                fail(
                    &format!("{} bytes, not {KEY_LEN}", b.len()),
                    &"it is damaged; remove it and serve makes a new key (NFS clients that are running then get stale handles and must boot again)",
                )
            })?;
            Ok(HandleKey::new(key))
        }
        Err(rustix::io::Errno::NOENT) => create_key(dir, &path),
        Err(rustix::io::Errno::LOOP) => Err(fail("is a symbolic link", &"serve does not follow it; put the key file itself there")),
        Err(e) => Err(fail("cannot open", &e)),
    }
}

/// Writes a new key to a temporary file (0600, synced) and renames it into place without
/// replacing one another serve made in between (then that one is used).
fn create_key(dir: &Path, path: &Path) -> Result<HandleKey, Error> {
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::Message(format!("{}: {what}: {e}", path.display()));
    let key = HandleKey::random().map_err(|e| fail("no random key", &e))?;
    let temporary = dir.join(format!("{NFS_HANDLE_KEY}.{}.tmp", std::process::id()));
    let fd = rustix::fs::open(&temporary, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))
        .map_err(|e| fail("cannot create", &e))?;
    let mut file = std::fs::File::from(fd);
    let written = file.write_all(key.bytes()).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(fail("cannot write", &e));
    }
    let renamed = rustix::fs::renameat_with(rustix::fs::CWD, &temporary, rustix::fs::CWD, path, rustix::fs::RenameFlags::NOREPLACE);
    let _ = std::fs::remove_file(&temporary);
    match renamed {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            tracing::info!(file = %path.display(), "made the NFS handle key (kept across restarts, so clients' handles stay valid)");
            Ok(key)
        }
        Err(rustix::io::Errno::EXIST) => nfs_handle_key(dir),
        Err(e) => Err(fail("cannot put in place", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_made_private_and_the_key_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("a/state");
        prepare(&state).expect("prepare");
        assert_eq!(std::fs::metadata(&state).expect("stat").mode() & 0o7777, 0o700);
        prepare(&state).expect("again");
        let key = nfs_handle_key(&state).expect("make");
        let file = state.join(NFS_HANDLE_KEY);
        let meta = std::fs::metadata(&file).expect("stat");
        assert_eq!((meta.len(), meta.mode() & 0o7777), (32, 0o600));
        let again = nfs_handle_key(&state).expect("read");
        assert_eq!(key.generation(), again.generation(), "the same key after a restart");
        assert_eq!(std::fs::read_dir(&state).expect("list").count(), 1, "no temporary file left");
        std::fs::write(&file, b"short").expect("damage");
        let err = nfs_handle_key(&state).expect_err("refused").to_string();
        assert!(err.contains("5 bytes, not 32") && err.contains("remove it"), "{err}");
        std::fs::remove_file(&file).expect("rm");
        std::os::unix::fs::symlink("/etc/hostname", &file).expect("symlink");
        assert!(nfs_handle_key(&state).expect_err("refused").to_string().contains("symbolic link"));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").expect("file");
        assert!(prepare(&plain).is_err());
    }

    /// As systemd makes a DynamicUser= service's StateDirectory=: /var/lib/NAME -> private/NAME.
    #[test]
    fn a_link_to_a_private_directory_is_the_state_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("private/nixos-pxe");
        std::fs::create_dir_all(&private).expect("mkdir");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let link = dir.path().join("nixos-pxe");
        std::os::unix::fs::symlink("private/nixos-pxe", &link).expect("symlink");
        prepare(&link).expect("a link to a directory");
        nfs_handle_key(&link).expect("the key");
        assert!(private.join(NFS_HANDLE_KEY).is_file(), "made in the linked directory");
        let to_file = dir.path().join("to-file");
        std::os::unix::fs::symlink("/etc/hostname", &to_file).expect("symlink");
        assert!(prepare(&to_file).expect_err("a link to a file").to_string().contains("not a directory"));
    }
}
