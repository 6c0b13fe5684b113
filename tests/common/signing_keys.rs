//! Secure Boot signing keys for the tests: a key and its self-signed certificate, made with
//! openssl, as a site makes its db key.

use super::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh RSA key and self-signed certificate named `name` in `dir`: (key, certificate). The
/// key is readable by its owner only, as `nixos-pxe sign` requires.
pub fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pem")));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod key");
    (key, cert)
}
