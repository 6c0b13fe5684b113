//! The site's db key and certificate, checked where they are read: by `nixos-pxe check` (when
//! the files are on the machine it runs on) and by `nixos-pxe sign` (always). Each problem is a
//! diagnostic at the option that names the file. `openssl` reads them (Debian's `openssl`,
//! nixpkgs' `openssl`): the same library sbsign signs with, so what passes here is what sbsign
//! can use.

use crate::command::Command;
use crate::config::{Diagnostic, Resolved};
use crate::schema::rules::NIX_STORE;
use camino::Utf8Path;
use std::os::unix::fs::PermissionsExt;

pub const KEY_OPTION: &str = "bootServer.secureBoot.keyFile";
pub const CERTIFICATE_OPTION: &str = "bootServer.secureBoot.certificateFile";

/// Whether a missing file is a problem: `sign` needs both; `check` may run where the key is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Refuse,
    Skip,
}

/// The public key (PEM) of a certificate, or why `file` is not one.
fn certificate_public_key(file: &Utf8Path) -> Result<String, String> {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(file.as_str())
        .run()
        .map_err(|e| format!("{file} is not a PEM X.509 certificate: {}", first_line(&e.to_string())))?;
    Ok(out.stdout_text())
}

/// The public key (PEM) of a private key, or why `file` is not one. An encrypted key is refused
/// (sbsign would ask for its passphrase on a terminal the boot server does not have).
fn key_public_key(file: &Utf8Path) -> Result<String, String> {
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-passin", "pass:", "-in"])
        .arg(file.as_str())
        .run()
        .map_err(|e| format!("{file} is not an unencrypted PEM private key: {}", first_line(&e.to_string())))?;
    Ok(out.stdout_text())
}

/// The message's first line and openssl's first complaint, not its whole stack.
fn first_line(text: &str) -> String {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    match lines.next() {
        Some(second) => format!("{first} {}", second.trim()),
        None => first,
    }
}

/// The key and certificate `nixos-pxe sign` was given on its command line instead of the
/// configuration's paths (`--key-file`, `--certificate-file`): services.nixos-pxe hands them to its
/// signing unit as systemd credentials, at a path the configuration cannot know.
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub key: Option<camino::Utf8PathBuf>,
    pub certificate: Option<camino::Utf8PathBuf>,
}

impl Given {
    /// The key to use: the one given, else the configuration's.
    pub fn key_file<'a>(&'a self, sb: &'a crate::config::typed::SecureBoot) -> Option<&'a Utf8Path> {
        self.key.as_deref().or(sb.key_file.as_deref().map(Utf8Path::new))
    }

    /// The certificate to use: the one given, else the configuration's.
    pub fn certificate_file<'a>(&'a self, sb: &'a crate::config::typed::SecureBoot) -> Option<&'a Utf8Path> {
        self.certificate.as_deref().or(sb.certificate_file.as_deref().map(Utf8Path::new))
    }
}

/// Where a file given on the command line is blamed: the flag that gave it.
pub const KEY_FLAG: &str = "nixos-pxe sign --key-file";
pub const CERTIFICATE_FLAG: &str = "nixos-pxe sign --certificate-file";

/// Every problem with the configured key and certificate, each at its option's definition.
pub fn check(resolved: &Resolved, missing: Missing) -> Vec<Diagnostic> {
    check_given(resolved, missing, &Given::default())
}

/// [`check`] of the files `given` names where it names one (each problem then at its flag), the
/// configuration's elsewhere.
pub fn check_given(resolved: &Resolved, missing: Missing, given: &Given) -> Vec<Diagnostic> {
    let sb = &resolved.config.boot_server.secure_boot;
    if !sb.enable {
        return Vec::new();
    }
    let at = |path: &str| {
        let flag = match path {
            KEY_OPTION => given.key.as_ref().map(|_| KEY_FLAG),
            _ => given.certificate.as_ref().map(|_| CERTIFICATE_FLAG),
        };
        match flag {
            Some(flag) => crate::origin::Origin::File { file: flag.into() },
            None => resolved.origin_of(path),
        }
    };
    let mut problems = Vec::new();
    let problem = |path: &str, message: String| Diagnostic::new(at(path), message).option(path);
    let mut certificate = None;
    let certificate_file = given.certificate_file(sb);
    if let Some(file) = certificate_file {
        match (file.exists(), missing) {
            (false, Missing::Skip) => {}
            (false, Missing::Refuse) => problems.push(problem(CERTIFICATE_OPTION, format!("{file} does not exist"))),
            (true, _) => match certificate_public_key(file) {
                Ok(public) => certificate = Some(public),
                Err(why) => problems.push(problem(CERTIFICATE_OPTION, why).hint("give the db certificate in PEM form (-----BEGIN CERTIFICATE-----), the one the firmware has enrolled")),
            },
        }
    }
    if let Some(file) = given.key_file(sb) {
        // The option's rule refused a path in the store; a link into it is refused here.
        let real = std::fs::canonicalize(file).ok().and_then(|p| camino::Utf8PathBuf::from_path_buf(p).ok());
        if let Some(real) = real.as_deref().filter(|r| r.as_str().starts_with(NIX_STORE)) {
            problems.push(problem(KEY_OPTION, format!("{file} leads to {real}, in the Nix store, which every user of the machine can read: a signing key must never be there")));
            return problems;
        }
        match (file.exists(), missing) {
            (false, Missing::Skip) => {}
            (false, Missing::Refuse) => problems.push(problem(KEY_OPTION, format!("{file} does not exist"))),
            (true, _) => {
                if let Ok(meta) = std::fs::metadata(file)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    problems.push(
                        problem(KEY_OPTION, format!("{file} can be read by others than its owner (mode {:04o})", meta.permissions().mode() & 0o7777))
                            .hint(format!("chmod 0600 {file}")),
                    );
                }
                match key_public_key(file) {
                    Err(why) => problems.push(problem(KEY_OPTION, why)),
                    Ok(public) => {
                        if let (Some(cert), Some(cert_file)) = (&certificate, certificate_file)
                            && cert.trim() != public.trim()
                        {
                            problems.push(
                                problem(KEY_OPTION, format!("the key in {file} does not belong to the certificate {cert_file}: their public keys differ"))
                                    .hint("give the key the db certificate was made with; the firmware verifies against the certificate"),
                            );
                        }
                    }
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, resolve};
    use crate::origin::{Location, Origin};
    use serde_json::json;

    fn openssl(args: &[&str]) {
        Command::new("openssl").args(args).run().expect("openssl");
    }

    /// A key and its self-signed certificate in `dir`, as a site makes its db key.
    fn make_key(dir: &Utf8Path, name: &str) -> (String, String) {
        let (key, cert) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pem")));
        openssl(&["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", &format!("/CN={name}/"), "-keyout", key.as_str(), "-out", cert.as_str()]);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        (key.to_string(), cert.to_string())
    }

    fn resolved(key: &str, cert: &str) -> Resolved {
        let mut s = Settings::default();
        for (line, (path, value)) in [
            ("bootServer.secureBoot.enable", json!(true)),
            ("bootServer.address", json!("10.42.0.1")),
            (KEY_OPTION, json!(key)),
            (CERTIFICATE_OPTION, json!(cert)),
        ]
        .into_iter()
        .enumerate()
        {
            let spec = crate::schema::find(path).expect("option");
            s.define(spec, value, Origin::Defined(Location::new("sb.nix", line as u32 + 1, 3))).expect("define");
        }
        resolve(&s, Utf8Path::new("sb.nix")).expect("valid")
    }

    fn messages(r: &Resolved, missing: Missing) -> Vec<String> {
        check(r, missing).iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn a_matching_key_and_certificate_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = Utf8Path::from_path(dir.path()).expect("utf-8");
        let (key, cert) = make_key(dir, "db");
        assert_eq!(messages(&resolved(&key, &cert), Missing::Refuse), Vec::<String>::new());
    }

    /// Each problem at the line that names the file: a certificate that is not one, a key of
    /// another certificate, a key others can read, a missing key (for `sign`, not for `check`).
    #[test]
    fn each_problem_is_located_at_its_option() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = Utf8Path::from_path(dir.path()).expect("utf-8");
        let (key, cert) = make_key(dir, "db");
        let (other_key, _) = make_key(dir, "other");
        let not_cert = dir.join("not-a-cert.pem");
        std::fs::write(&not_cert, "hello\n").expect("write");
        let m = messages(&resolved(&key, not_cert.as_str()), Missing::Refuse);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with(&format!("sb.nix:4:3: {CERTIFICATE_OPTION}: {not_cert} is not a PEM X.509 certificate")), "{m:?}");
        let m = messages(&resolved(&other_key, &cert), Missing::Refuse);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with(&format!("sb.nix:3:3: {KEY_OPTION}: the key in {other_key} does not belong to the certificate {cert}")), "{m:?}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let m = messages(&resolved(&key, &cert), Missing::Refuse);
        assert!(m.len() == 1 && m[0].contains("can be read by others than its owner (mode 0644)"), "{m:?}");
        let gone = dir.join("gone.key");
        assert!(messages(&resolved(gone.as_str(), &cert), Missing::Refuse)[0].contains("gone.key does not exist"));
        assert_eq!(messages(&resolved(gone.as_str(), &cert), Missing::Skip), Vec::<String>::new());
        // A key given where a certificate belongs, and the other way round.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let m = messages(&resolved(&cert, &key), Missing::Refuse);
        assert!(m.iter().any(|l| l.contains("is not a PEM X.509 certificate")) && m.iter().any(|l| l.contains("is not an unencrypted PEM private key")), "{m:?}");
    }

    /// Files given on sign's command line replace the configuration's and are blamed on their
    /// flags: a credential that is not the certificate's key says so at --key-file.
    #[test]
    fn files_given_on_the_command_line_are_checked_at_their_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = Utf8Path::from_path(dir.path()).expect("utf-8");
        let (key, cert) = make_key(dir, "db");
        let (other_key, _) = make_key(dir, "other");
        let r = resolved(dir.join("not-here.key").as_str(), dir.join("not-here.pem").as_str());
        let given = Given { key: Some(key.clone().into()), certificate: Some(cert.clone().into()) };
        assert_eq!(check_given(&r, Missing::Refuse, &given).len(), 0);
        let given = Given { key: Some(other_key.clone().into()), certificate: Some(cert.clone().into()) };
        let m: Vec<String> = check_given(&r, Missing::Refuse, &given).iter().map(|d| d.to_string()).collect();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with(&format!("{KEY_FLAG}: {KEY_OPTION}: the key in {other_key} does not belong to the certificate {cert}")), "{m:?}");
        // Only the key given: the certificate is the configuration's, blamed at its line.
        let given = Given { key: Some(key.into()), certificate: None };
        let m: Vec<String> = check_given(&r, Missing::Refuse, &given).iter().map(|d| d.to_string()).collect();
        assert!(m.len() == 1 && m[0].starts_with(&format!("sb.nix:4:3: {CERTIFICATE_OPTION}: ")) && m[0].contains("not-here.pem does not exist"), "{m:?}");
    }

    /// The option's rule refuses a path below /nix/store where it is defined.
    #[test]
    fn a_key_in_the_nix_store_is_refused_where_it_is_named() {
        let mut s = Settings::default();
        s.define(crate::schema::find("bootServer.secureBoot.enable").expect("option"), json!(true), Origin::Default).expect("define");
        let spec = crate::schema::find(KEY_OPTION).expect("option");
        s.define(spec, json!("/nix/store/abc-db.key"), Origin::Defined(Location::new("sb.nix", 7, 5))).expect("define");
        let err = resolve(&s, Utf8Path::new("sb.nix")).unwrap_err().to_string();
        assert!(err.contains("sb.nix:7:5: bootServer.secureBoot.keyFile: \"/nix/store/abc-db.key\" is in the Nix store, which every user of the machine can read"), "{err}");
    }
}
