//! `nixos-pxe pack` on a tree the test makes, owned by another user and group, with varied mtimes
//! and modes: deterministic bytes whatever the sources' owners and times, and a layout that the
//! real `tar` lists with owner root (0/0), mtime exactly 1 s after the epoch, kept modes and
//! symlinks. Needs root to give the sources another owner (CI runs as root).

mod switches;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

/// The sources' owner: anyone but root, so that 0/0 in the archive is pack's doing.
const OWNER: &str = "1234:5678";

fn pack(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_nixos-pxe")).arg("pack").args(args).output().expect("run nixos-pxe");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n")
}

/// Gives every path under `root` (links themselves, not their targets) the owner `owner` and the
/// mtime `base` + a different number of seconds each, so no two entries share either by chance.
fn own_and_touch(root: &Path, owner: &str, base: i64) {
    run(Command::new("chown").args(["-R", "-h", owner]).arg(root));
    let mut paths = vec![root.to_path_buf()];
    let mut i = 0;
    while i < paths.len() {
        if paths[i].is_dir() && !paths[i].is_symlink() {
            let mut children: Vec<_> = std::fs::read_dir(&paths[i]).expect("read_dir").map(|e| e.expect("entry").path()).collect();
            children.sort();
            paths.extend(children);
        }
        i += 1;
    }
    // Children before parents: touching a child changes its directory's mtime.
    for (n, path) in paths.iter().enumerate().rev() {
        run(Command::new("touch").arg("-h").arg("-d").arg(format!("@{}", base + 7919 * n as i64)).arg(path));
    }
}

fn make_tree(root: &Path) -> (String, String) {
    let store = root.join("nix/store");
    let a = store.join("aaaa-hello");
    std::fs::create_dir_all(a.join("bin")).expect("mkdir");
    std::fs::write(a.join("bin/hello"), "#!/bin/sh\necho hello\n").expect("write");
    std::fs::set_permissions(a.join("bin/hello"), std::fs::Permissions::from_mode(0o555)).expect("chmod");
    symlink("hello", a.join("bin/hi")).expect("symlink");
    std::fs::set_permissions(a.join("bin"), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    std::fs::write(a.join("secret"), "only the owner reads this\n").expect("write");
    std::fs::set_permissions(a.join("secret"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let b = store.join("bbbb-data");
    std::fs::write(&b, vec![7u8; 100_000]).expect("write");
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let list = root.join("store-paths");
    // Unsorted on purpose: the archive is sorted whatever the list's order.
    std::fs::write(&list, format!("{}\n{}\n", b.display(), a.display())).expect("write");
    let config = root.join("config.json");
    std::fs::write(&config, "{}").expect("write");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    own_and_touch(&store, OWNER, 1_000_000_000);
    own_and_touch(&config, OWNER, 1_500_000_000);
    let sources = [a.join("bin"), a.join("bin/hello"), a.join("bin/hi"), a.join("secret"), b];
    let meta: Vec<_> = sources.iter().map(|p| std::fs::symlink_metadata(p).expect("stat")).collect();
    assert!(meta.iter().all(|m| (m.uid(), m.gid()) == (1234, 5678)), "the sources are someone else's");
    let mut mtimes: Vec<i64> = meta.iter().map(|m| m.mtime()).collect();
    mtimes.sort();
    mtimes.dedup();
    assert!(mtimes.len() == sources.len() && mtimes.iter().all(|t| (1_000_000_000..1_100_000_000).contains(t)), "varied mtimes of 2001: {mtimes:?}");
    (list.display().to_string(), config.display().to_string())
}

/// Whether the test can give files another owner; if not it fails, or skips with NIXOS_PXE_ALLOW_SKIP=1.
fn can_run() -> bool {
    if is_root() {
        return true;
    }
    switches::skip_or_fail("needs root to make the sources owned by another user (CI runs as root)");
    false
}

#[test]
fn two_packs_of_the_same_input_are_byte_identical() {
    if !can_run() {
        return;
    }
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
        // Other owners and mtimes for the sources: neither may leak into the archive.
        own_and_touch(&dir.path().join("nix"), "4321:8765", 1_700_000_000);
        own_and_touch(Path::new(&config), "0:0", 1_800_000_000);
        pack(&args(&two).iter().map(String::as_str).collect::<Vec<_>>());
        let (a, b) = (std::fs::read(&one).expect("read"), std::fs::read(&two).expect("read"));
        assert!(!a.is_empty());
        assert!(a == b, "{codec}: two packs differ");
    }
}

#[test]
fn tar_lists_the_expected_layout() {
    if !can_run() {
        return;
    }
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
    let listing = Command::new("tar").args(["--zstd", "--numeric-owner", "--full-time", "--utc", "-tvf"]).arg(&out).output().expect("tar");
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
    for rest in ["nix/", "nix/store/", "nix/store/aaaa-hello/", "nix/store/aaaa-hello/bin/", "nix/store/aaaa-hello/bin/hello", "nix/store/aaaa-hello/bin/hi -> hello", "nix/store/aaaa-hello/secret", "nix/store/bbbb-data"] {
        expected.push(format!("{base}/{rest}"));
    }
    expected.sort_by(|a, b| a.split(" -> ").next().cmp(&b.split(" -> ").next()));
    assert_eq!(names, expected, "{text}");
    let modes: Vec<(&str, &str)> = lines.iter().map(|(mode, _, name)| (name.as_str(), mode.as_str())).collect();
    let path = |rest: &str| format!("{base}/{rest}");
    let expected_modes = [
        ("init -> /nix/store/aaaa-hello/bin/hello".to_string(), "lrwxrwxrwx"),
        ("nixos-pxe/".into(), "drwxr-xr-x"),
        ("nixos-pxe/config.json".into(), "-rw-r-----"),
        ("proc/".into(), "drwxr-xr-x"),
        (path("nix/store/aaaa-hello/"), "drwxr-xr-x"),
        (path("nix/store/aaaa-hello/bin/"), "drwxr-x---"),
        (path("nix/store/aaaa-hello/bin/hello"), "-r-xr-xr-x"),
        (path("nix/store/aaaa-hello/bin/hi -> hello"), "lrwxrwxrwx"),
        (path("nix/store/aaaa-hello/secret"), "-rw-------"),
        (path("nix/store/bbbb-data"), "-r--r--r--"),
    ];
    for (name, mode) in &expected_modes {
        assert!(modes.contains(&(name.as_str(), *mode)), "{name} {mode}:\n{text}");
    }
    for (_, owner_date, name) in &lines {
        assert_eq!(owner_date, "0/0 1970-01-01 00:00:01", "{name}");
    }
    // And by name: root/root, as tar shows it to someone reading the archive.
    let named = Command::new("tar").args(["--zstd", "-tvf"]).arg(&out).output().expect("tar");
    let named = String::from_utf8_lossy(&named.stdout);
    assert!(named.lines().all(|l| l.split_whitespace().nth(1) == Some("root/root")), "{named}");
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
