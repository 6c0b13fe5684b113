//! Every tracked .nix file parses with Nix itself (`nix-instantiate --parse`, Debian's nix-bin):
//! nixpkgs cannot be evaluated here, so syntax is what can be checked, and it is checked for all.

mod switches;

use std::path::Path;
use std::process::{Command, Output};

fn nix_instantiate_parse(root: &Path, file: &str) -> Option<Output> {
    match Command::new("nix-instantiate")
        .args(["--parse", file])
        .current_dir(root)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("nix-instantiate --parse {file}: {e}"),
    }
}

/// The project's .nix files: tracked ones and new ones not ignored (git ls-files).
fn nix_files(root: &Path) -> Vec<String> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            "*.nix",
        ])
        .current_dir(root)
        .output()
        .expect("git runs: the test lists the project's .nix files with git ls-files");
    assert!(
        out.status.success(),
        "git ls-files failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A file staged for deletion is listed but gone from the work tree.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|f| root.join(f).exists())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_nix_file_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = nix_files(root);
    for expected in [
        "flake.nix",
        "nix/module.nix",
        "nix/mk-installer.nix",
        "checks/pxe-install.nix",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} is among the files: {files:?}"
        );
    }
    let mut failures = Vec::new();
    for file in &files {
        let Some(out) = nix_instantiate_parse(root, file) else {
            switches::skip_or_fail(&format!(
                "nix-instantiate is not installed (apt-get install nix-bin), so {} .nix files are not parsed",
                files.len()
            ));
            return;
        };
        if !out.status.success() {
            failures.push(format!("{file}:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The check above means something only if nix-instantiate rejects a broken file.
#[test]
fn a_syntax_error_is_caught() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("broken.nix"), "{ a = 1; b = ; }\n").expect("write");
    let Some(out) = nix_instantiate_parse(dir.path(), "broken.nix") else {
        switches::skip_or_fail("nix-instantiate is not installed (apt-get install nix-bin)");
        return;
    };
    assert!(
        !out.status.success(),
        "nix-instantiate --parse accepted a broken file"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.nix"),
        "the error names the file: {stderr}"
    );
}
