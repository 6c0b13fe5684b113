//! Every tracked .nix file parses with Nix itself (`nix-instantiate --parse`, Debian's nix-bin):
//! nixpkgs cannot be evaluated here, so syntax is what can be checked, and it is checked for all.

use std::process::Command;

#[test]
fn every_nix_file_parses() {
    let root = env!("CARGO_MANIFEST_DIR");
    let listed = Command::new("git").args(["ls-files", "--cached", "--others", "--exclude-standard", "*.nix"]).current_dir(root).output();
    let files: Vec<String> = match listed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect(),
        _ => panic!("git ls-files failed: the test lists the project's .nix files with git"),
    };
    assert!(files.iter().any(|f| f == "flake.nix"), "flake.nix is among the files: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let out = Command::new("nix-instantiate")
            .args(["--parse", file])
            .current_dir(root)
            .output()
            .expect("nix-instantiate runs (apt-get install nix-bin)");
        if !out.status.success() {
            failures.push(format!("{file}:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
