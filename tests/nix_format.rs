//! The project's Nix formatter (nix-format/, alejandra 3.1.0's style; the flake's `nix fmt` and
//! checks.formatting run the same crate) holds every Nix file of the repository to its style, and
//! as a check it fails on a file that is not formatted, writing nothing. tests/flake.rs builds
//! the flake's own check with it.

mod common;

use common::{nix_format, root, run};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

/// How the repository's files are formatted again: the command the commit that formatted them
/// names, repeated in the failure message.
const FORMAT_COMMAND: &str = "cargo run --release --locked --manifest-path nix-format/Cargo.toml -- .";

fn nix_format_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(nix_format::binary()).args(args).current_dir(dir).output().expect("run nix-format")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The files a `--check` run lists on stdout, as a set.
fn checked(out: &Output) -> BTreeSet<String> {
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn every_nix_file_of_the_repository_is_in_the_formatters_style() {
    let out = nix_format_in(root(), &["--check", "."]);
    assert!(
        out.status.success(),
        "Nix files not in the project's style (nix fmt, or here: {FORMAT_COMMAND}):\n{}",
        text(&out.stderr)
    );
    // Every Nix file of the work tree was looked at, and nothing a build left (target/).
    let listed = run(Command::new("git").args(["ls-files", "--cached", "--others", "--exclude-standard", "--", "*.nix"]).current_dir(root()));
    let listed: BTreeSet<String> = listed.lines().filter(|f| root().join(f).exists()).map(str::to_string).collect();
    assert!(listed.len() > 50, "{listed:?}");
    assert_eq!(checked(&out), listed, "nix-format --check . looked at other files than the repository's Nix files");
}

#[test]
fn the_check_fails_on_an_unformatted_file_names_it_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unformatted = "{ a=1;\n    b = [ 1 2 ];}\n";
    std::fs::write(dir.path().join("bad.nix"), unformatted).expect("write");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::fs::write(dir.path().join("sub/good.nix"), "{\n  a = 1;\n  b = [1 2];\n}\n").expect("write");

    let out = nix_format_in(dir.path(), &["--check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad.nix: not formatted"), "{stderr}");
    assert!(!stderr.contains("good.nix"), "{stderr}");
    assert_eq!(checked(&out), BTreeSet::from(["bad.nix".to_string(), "sub/good.nix".to_string()]));
    assert_eq!(std::fs::read_to_string(dir.path().join("bad.nix")).expect("read"), unformatted, "--check wrote the file");

    // Without --check the file is rewritten in the style, and then the check passes.
    let out = nix_format_in(dir.path(), &["bad.nix"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("bad.nix")).expect("read"), "{\n  a = 1;\n  b = [1 2];\n}\n");
    let out = nix_format_in(dir.path(), &["--check", "."]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_syntax_error_names_the_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = "{\n  a = 1;\n  b = ;\n}\n";
    std::fs::write(dir.path().join("broken.nix"), broken).expect("write");
    for args in [&["--check", "broken.nix"][..], &["broken.nix"][..]] {
        let out = nix_format_in(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("broken.nix:3:7: not valid Nix"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("broken.nix")).expect("read"), broken);
}

/// A directory is searched for *.nix files, but not hidden or cache directories (a CACHEDIR.TAG:
/// cargo's target/) nor through symbolic links (`result` into the Nix store); a file named
/// explicitly is taken whatever its name.
#[test]
fn the_search_skips_hidden_and_cache_directories_and_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = "{a=1;}\n";
    for (file, content) in [
        ("top.nix", "{a = 1;}\n"),
        ("notes.txt", bad),
        (".git/hooks.nix", bad),
        ("target/CACHEDIR.TAG", "Signature: 8a477f597d28d172789f06886806bc55\n"),
        ("target/debug/build.nix", bad),
        ("deep/er/still.nix", "[1 2]\n"),
        ("named", "[1 2]\n"),
    ] {
        let path = dir.path().join("tree").join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
    // Links to a directory and to a file outside the tree, as `result` links into the store.
    std::fs::create_dir_all(dir.path().join("elsewhere")).expect("mkdir");
    std::fs::write(dir.path().join("elsewhere/linked.nix"), bad).expect("write");
    std::os::unix::fs::symlink("../elsewhere", dir.path().join("tree/result")).expect("symlink");
    std::os::unix::fs::symlink("../elsewhere/linked.nix", dir.path().join("tree/linked.nix")).expect("symlink");

    let out = nix_format_in(&dir.path().join("tree"), &["--check", ".", "named"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        checked(&out),
        ["deep/er/still.nix", "named", "top.nix"].into_iter().map(str::to_string).collect::<BTreeSet<_>>()
    );
}

#[test]
fn a_bad_argument_or_a_missing_path_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = nix_format_in(dir.path(), &["--chek"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown option --chek"), "{}", text(&out.stderr));
    let out = nix_format_in(dir.path(), &["--check", "missing.nix"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("missing.nix: No such file"), "{}", text(&out.stderr));
}
