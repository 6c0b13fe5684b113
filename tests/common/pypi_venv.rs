//! Python tools from PyPI that the tests run (sushy-tools, virt-firmware): each in a venv of
//! Debian's python3, made once per machine from a pinned requirements file under dev/.

use super::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's python3 (dev/packages.txt: python3-venv), not whatever python3 comes first on PATH.
pub const PYTHON: &str = "/usr/bin/python3";

/// The venv `name` with everything `requirements` (a pinned file under dev/) lists, made once per
/// machine (under a lock, so that parallel tests wait for the first) in
/// /var/cache/nixos-pxe/<name>-<hash of the file>, outside the work tree: a changed pin makes a
/// new venv.
pub fn venv(name: &str, requirements: &str) -> PathBuf {
    let pinned = std::fs::read(requirements).unwrap_or_else(|e| panic!("{requirements}: {e}"));
    let hash = blake3::hash(&pinned).to_hex().to_string();
    let venv = PathBuf::from(format!("/var/cache/nixos-pxe/{name}-{}", &hash[..16]));
    if venv.join("ready").exists() {
        return venv;
    }
    std::fs::create_dir_all("/var/cache/nixos-pxe").expect("mkdir /var/cache/nixos-pxe");
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(format!("/var/cache/nixos-pxe/{name}.lock")).expect("lock file");
    // SAFETY: flock(2) on a descriptor this function owns, released when it is closed.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0, "flock");
    if !venv.join("ready").exists() {
        assert!(Path::new(PYTHON).exists(), "{PYTHON} missing: dev/install-deps.sh test installs python3-venv");
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new(PYTHON).args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "--no-input", "-r", requirements]));
        std::fs::write(venv.join("ready"), &pinned).expect("mark the venv ready");
    }
    venv
}
