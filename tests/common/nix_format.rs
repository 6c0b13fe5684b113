//! The project's Nix formatter (nix-format/: crates.io's alejandra 3.1.0 behind a small command
//! line), built by the tests from the crate and lock file that the flake's formatter and
//! checks.formatting build, so that the style checked here is the one checked there.

use super::{root, run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the binaries are kept, outside the work tree (cargo's build directory beside them).
const CACHE: &str = "/var/cache/nixos-pxe";

/// The nix-format binary for the crate as it is in this checkout, built once per machine (under
/// a lock, so that parallel tests wait for the first; about 40 s on two cores) and kept in
/// /var/cache/nixos-pxe/nix-format-<hash>, keyed by the crate's files and the rustc that builds it:
/// a changed crate or lock file makes a new binary.
pub fn binary() -> PathBuf {
    let crate_dir = root().join("nix-format");
    let key = content_key(&crate_dir);
    let dir = PathBuf::from(format!("{CACHE}/nix-format-{}", &key[..16]));
    let binary = dir.join("nix-format");
    if binary.exists() {
        return binary;
    }
    std::fs::create_dir_all(CACHE).expect("mkdir /var/cache/nixos-pxe");
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(format!("{CACHE}/nix-format.lock")).expect("lock file");
    // SAFETY: flock(2) on a descriptor this function owns, released when it is closed.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0, "flock");
    if !binary.exists() {
        let target = format!("{CACHE}/nix-format-build");
        run(Command::new("cargo")
            .args(["build", "--release", "--locked", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS"));
        std::fs::create_dir_all(&dir).expect("mkdir the binary's directory");
        // Copied under another name, then renamed: a binary that exists is whole.
        let partial = dir.join("nix-format.partial");
        std::fs::copy(format!("{target}/release/nix-format"), &partial).expect("copy nix-format");
        std::fs::rename(&partial, &binary).expect("rename nix-format");
    }
    binary
}

/// A hash of the crate's files (Cargo.toml, Cargo.lock, src/) and of `rustc --version`.
fn content_key(crate_dir: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(run(Command::new("rustc").arg("--version")).as_bytes());
    let mut files = vec![crate_dir.join("Cargo.toml"), crate_dir.join("Cargo.lock")];
    let mut sources: Vec<PathBuf> = std::fs::read_dir(crate_dir.join("src"))
        .expect("nix-format/src")
        .map(|e| e.expect("entry").path())
        .collect();
    sources.sort();
    files.extend(sources);
    for file in files {
        let name = file.strip_prefix(crate_dir).expect("below the crate").to_string_lossy().into_owned();
        let content = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for part in [name.as_bytes(), &content] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    hasher.finalize().to_hex().to_string()
}
