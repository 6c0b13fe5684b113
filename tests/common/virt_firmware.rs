//! virt-fw-vars (PyPI's virt-firmware, pinned in dev/virt-firmware.txt): writes an OVMF variable
//! store with the test's own Secure Boot keys enrolled, so a test shows the site's key, not a
//! fixed one.

use super::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The requirements file the venv is made from (its hash names the venv).
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dev/virt-firmware.txt");
/// Debian's python3 (dev/packages.txt: python3-venv), not whatever python3 comes first on PATH.
const PYTHON: &str = "/usr/bin/python3";
/// The empty variable store of Debian's 4 MiB OVMF build (no PK: Secure Boot in setup mode).
pub const EMPTY_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// A GUID naming the owner of the enrolled certificates (any; the firmware only stores it).
const OWNER: &str = "7a0c3e2b-9d41-4f6e-8c55-3b1d2e4f6a70";

/// The venv with virt-firmware, made once per machine (under a lock, so that parallel tests wait
/// for the first) in /var/cache/nixos-pxe/virt-firmware-<hash>, outside the work tree.
pub fn venv() -> PathBuf {
    let requirements = std::fs::read(REQUIREMENTS).expect("dev/virt-firmware.txt");
    let hash = blake3::hash(&requirements).to_hex().to_string();
    let venv = PathBuf::from(format!("/var/cache/nixos-pxe/virt-firmware-{}", &hash[..16]));
    if venv.join("ready").exists() {
        return venv;
    }
    std::fs::create_dir_all("/var/cache/nixos-pxe").expect("mkdir /var/cache/nixos-pxe");
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open("/var/cache/nixos-pxe/virt-firmware.lock").expect("lock file");
    // SAFETY: flock(2) on a descriptor this function owns, released when it is closed.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0, "flock");
    if !venv.join("ready").exists() {
        assert!(Path::new(PYTHON).exists(), "{PYTHON} missing: dev/install-deps.sh test installs python3-venv");
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new(PYTHON).args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "--no-input", "-r", REQUIREMENTS]));
        std::fs::write(venv.join("ready"), &requirements).expect("mark the venv ready");
    }
    venv
}

/// A copy of the empty OVMF variable store at `out` with `cert` (PEM) as PK, in KEK and in db,
/// and Secure Boot enabled: the firmware then runs only what `cert`'s key signed.
pub fn enrol(cert: &Path, out: &Path) {
    let vars = venv().join("bin/virt-fw-vars");
    run(Command::new(vars)
        .args(["--input", EMPTY_VARS, "--output"])
        .arg(out)
        .args(["--set-pk", OWNER])
        .arg(cert)
        .args(["--add-kek", OWNER])
        .arg(cert)
        .args(["--add-db", OWNER])
        .arg(cert)
        .arg("--secure-boot"));
}
