//! virt-fw-vars (PyPI's virt-firmware, pinned in dev/virt-firmware.txt): writes an OVMF variable
//! store with the test's own Secure Boot keys enrolled, so a test shows the site's key, not a
//! fixed one.

use super::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The requirements file the venv is made from (its hash names the venv).
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dev/virt-firmware.txt");
/// The empty variable store of Debian's 4 MiB OVMF build (no PK: Secure Boot in setup mode).
pub const EMPTY_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// A GUID naming the owner of the enrolled certificates (any; the firmware only stores it).
const OWNER: &str = "7a0c3e2b-9d41-4f6e-8c55-3b1d2e4f6a70";

/// The venv with virt-firmware (tests/common/pypi_venv.rs).
pub fn venv() -> PathBuf {
    super::pypi_venv::venv("virt-firmware", REQUIREMENTS)
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
