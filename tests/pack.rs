//! `nixos-pxe pack` on a tree the test makes: deterministic bytes, and a layout that the real
//! `tar` lists with root ownership, mtime 1, kept modes and symlinks.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

fn pack(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_nixos-pxe")).arg("pack").args(args).output().expect("run nixos-pxe");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn make_tree(root: &Path) -> (String, String) {
    let store = root.join("nix/store");
    let a = store.join("aaaa-hello");
    std::fs::create_dir_all(a.join("bin")).expect("mkdir");
    std::fs::write(a.join("bin/hello"), "#!/bin/sh\necho hello\n").expect("write");
    std::fs::set_permissions(a.join("bin/hello"), std::fs::Permissions::from_mode(0o555)).expect("chmod");
    symlink("hello", a.join("bin/hi")).expect("symlink");
    let b = store.join("bbbb-data");
    std::fs::write(&b, vec![7u8; 100_000]).expect("write");
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let list = root.join("store-paths");
    // Unsorted on purpose: the archive is sorted whatever the list's order.
    std::fs::write(&list, format!("{}\n{}\n", b.display(), a.display())).expect("write");
    let config = root.join("config.json");
    std::fs::write(&config, "{}").expect("write");
    (list.display().to_string(), config.display().to_string())
}

#[test]
fn two_packs_of_the_same_input_are_byte_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (list, config) = make_tree(dir.path());
    for codec in ["zstd", "gzip", "xz", "none"] {
        let one = dir.path().join(format!("one.{codec}"));
        let two = dir.path().join(format!("two.{codec}"));
        let args = |out: &Path| {
            vec![
                "--out".to_string(),
                out.display().to_string(),
                "--compression".into(),
                codec.into(),
                "--store-paths".into(),
                list.clone(),
                "--file".into(),
                format!("nixos-pxe/config.json={config}"),
                "--symlink".into(),
                "init=/nix/store/aaaa-hello/bin/hello".into(),
                "--dir".into(),
                "proc".into(),
            ]
        };
        pack(&args(&one).iter().map(String::as_str).collect::<Vec<_>>());
        // Touch the sources: mtimes must not leak into the archive.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&config).expect("open").set_modified(later).expect("touch");
        pack(&args(&two).iter().map(String::as_str).collect::<Vec<_>>());
        let (a, b) = (std::fs::read(&one).expect("read"), std::fs::read(&two).expect("read"));
        assert!(!a.is_empty());
        assert!(a == b, "{codec}: two packs differ");
    }
}

#[test]
fn tar_lists_the_expected_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (list, config) = make_tree(dir.path());
    let out = dir.path().join("root.tar.zst");
    pack(&[
        "--out",
        out.to_str().expect("utf8"),
        "--store-paths",
        &list,
        "--file",
        &format!("nixos-pxe/config.json={config}"),
        "--symlink",
        "init=/nix/store/aaaa-hello/bin/hello",
        "--dir",
        "proc",
    ]);
    let listing = Command::new("tar").args(["--zstd", "--numeric-owner", "--utc", "-tvf"]).arg(&out).output().expect("tar");
    assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
    let text = String::from_utf8_lossy(&listing.stdout);
    let lines: Vec<(String, String, String)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), format!("{} {} {}", f[1], f[3], f[4]), f[5..].join(" "))
        })
        .collect();
    let names: Vec<&str> = lines.iter().map(|(_, _, n)| n.as_str()).collect();
    // Store paths are packed at their own absolute path, here below the test's temporary directory.
    let base = dir.path().to_str().expect("utf8").trim_start_matches('/').to_string();
    let mut expected = vec!["init -> /nix/store/aaaa-hello/bin/hello".to_string(), "nixos-pxe/".into(), "nixos-pxe/config.json".into(), "proc/".into()];
    let mut parent = String::new();
    for part in base.split('/') {
        parent = if parent.is_empty() { part.to_string() } else { format!("{parent}/{part}") };
        expected.push(format!("{parent}/"));
    }
    for rest in ["nix/", "nix/store/", "nix/store/aaaa-hello/", "nix/store/aaaa-hello/bin/", "nix/store/aaaa-hello/bin/hello", "nix/store/aaaa-hello/bin/hi -> hello", "nix/store/bbbb-data"] {
        expected.push(format!("{base}/{rest}"));
    }
    expected.sort_by(|a, b| a.split(" -> ").next().cmp(&b.split(" -> ").next()));
    assert_eq!(names, expected, "{text}");
    for (mode, owner_date, name) in &lines {
        assert!(owner_date.starts_with("0/0 1970-01-01 00:00"), "{name}: {owner_date}");
        if *name == format!("{base}/nix/store/aaaa-hello/bin/hello") {
            assert_eq!(mode, "-r-xr-xr-x");
        }
        if *name == format!("{base}/nix/store/bbbb-data") {
            assert_eq!(mode, "-r--r--r--");
        }
    }
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x.tar");
    let result = Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(["pack", "--compression", "none", "--out"])
        .arg(&out)
        .args(["--file", "a/../../etc=/etc/hostname"])
        .output()
        .expect("run");
    assert_eq!(result.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&result.stderr).contains("not a usable path inside the archive"));
    assert!(std::fs::read_dir(dir.path()).expect("dir").next().is_none(), "nothing written");
}
