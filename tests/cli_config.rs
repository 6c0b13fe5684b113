//! `nixos-pxe options` and `check` run as a user runs them: the built binary on real files.

mod switches;

use std::path::Path;
use std::process::{Command, Output};

fn pxe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run nixos-pxe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn nix_available() -> bool {
    Command::new("nix")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The line `nixos-pxe options` prints for `option`, or "" when there is none.
fn option_line(stdout: &str, option: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{option} ")))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn check_points_at_the_bad_value_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("host.nix");
    std::fs::write(
        &file,
        "{ config, ... }:\n{\n  nfsroot.bootLoader.efinetDHCPInterface = \"eth0\";\n  customInstaller.wipe = \"sometimes\";\n}\n",
    )
    .expect("write");
    let before: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    for source in ["static", "eval"] {
        if source == "eval" && !nix_available() {
            eprintln!("nix is not installed: eval mode not checked here (CI installs nix-bin)");
            continue;
        }
        let out = pxe(&[
            "check",
            "--config",
            file.to_str().expect("utf8"),
            "--source",
            source,
        ]);
        assert_eq!(out.status.code(), Some(1), "{source}");
        let err = text(&out.stderr);
        assert!(
            err.contains("host.nix:3:3: nfsroot.bootLoader.efinetDHCPInterface: \"eth0\" is not a GRUB EFI network interface; expected efinetN"),
            "{source}: {err}"
        );
        assert!(
            err.contains(" 3 |   nfsroot.bootLoader.efinetDHCPInterface = \"eth0\";\n   |   ^"),
            "{source}: {err}"
        );
        assert!(err.contains("host.nix:4:3: customInstaller.wipe: \"sometimes\" is not one of \"if-empty\", \"always\""), "{source}: {err}");
        assert!(
            err.contains("2 problem(s); nothing was written."),
            "{source}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        before.len()
    );
}

#[test]
fn options_say_where_each_value_came_from() {
    let out = pxe(&[
        "options",
        "--config",
        "examples/seed/installer.nix",
        "--source",
        "static",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = |option: &str| option_line(&stdout, option);
    assert!(
        line("nfsroot.bootLoader.efinetDHCPInterface").ends_with("\"efinet0\"  (default)"),
        "{stdout}"
    );
    assert!(
        line("bootServer.address").ends_with("\"10.42.0.1\"  (examples/seed/installer.nix:7:5)"),
        "{stdout}"
    );
    let json = pxe(&[
        "options",
        "--config",
        "examples/seed/installer.nix",
        "--source",
        "static",
        "--json",
    ]);
    let parsed: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("options --json is JSON");
    let entries = parsed.as_array().expect("a list");
    assert_eq!(entries.len(), nixos_pxe_installer::schema::OPTIONS.len());
    let address = entries
        .iter()
        .find(|e| e["option"] == "bootServer.address")
        .expect("listed");
    assert_eq!(address["origin"]["kind"], "defined");
    assert_eq!(address["origin"]["line"], 7);
}

#[test]
fn both_examples_read_the_same_statically_and_evaluated() {
    if !nix_available() {
        switches::skip_or_fail("`nix --version` does not run: nix is not installed (apt-get install nix-bin)");
        return;
    }
    for example in [
        "examples/seed/installer.nix",
        "examples/static-second-nic/installer.nix",
    ] {
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(example).exists());
        let read = |source: &str| {
            let out = pxe(&["options", "--config", example, "--source", source, "--json"]);
            assert!(
                out.status.success(),
                "{example} {source}: {}",
                text(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
        };
        assert_eq!(read("static"), read("eval"), "{example}");
    }
}

#[test]
fn a_missing_file_is_named() {
    let out = pxe(&[
        "check",
        "--config",
        "no/such/file.nix",
        "--source",
        "static",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read no/such/file.nix"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn eval_reads_let_and_string_operations_that_static_rejects() {
    if !nix_available() {
        switches::skip_or_fail("`nix --version` does not run: nix is not installed (apt-get install nix-bin)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("h.nix");
    std::fs::write(
        &file,
        "{ config, ... }:\nlet\n  n = 2;\nin {\n  customInstaller.rootDevice = \"/dev/sd\" + \"b\";\n  bootServer.leaseSeconds = 300 * n;\n  nfsroot.bootLoader.efinetDHCPInterface = \"efinet${builtins.toString n}\";\n}\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf8");
    let stat = pxe(&["check", "--config", path, "--source", "static"]);
    assert_eq!(stat.status.code(), Some(1));
    assert!(
        text(&stat.stderr).contains("h.nix:2:1: the file is a `let ... in` expression"),
        "{}",
        text(&stat.stderr)
    );
    let out = pxe(&["options", "--config", path, "--source", "eval"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = |option: &str| option_line(&stdout, option);
    assert!(
        line("customInstaller.rootDevice").contains("\"/dev/sdb\"  (")
            && line("customInstaller.rootDevice").contains("h.nix:5:3)"),
        "{stdout}"
    );
    assert!(
        line("bootServer.leaseSeconds").contains("600  (")
            && line("bootServer.leaseSeconds").contains("h.nix:6:3)"),
        "{stdout}"
    );
    assert!(
        line("nfsroot.bootLoader.efinetDHCPInterface").contains("\"efinet2\"")
            && line("nfsroot.bootLoader.efinetDHCPInterface").contains("h.nix:7:3)"),
        "{stdout}"
    );
}
