//! The suite's environment switches, all read one way: unset is off, `1` is on, any other value
//! stops the test (so `UPDATE_GOLDEN=0` or `NIXOS_PXE_ALLOW_SKIP=yes` never means something by
//! accident). None of them can make a test pass silently:
//! - `NIXOS_PXE_ALLOW_SKIP=1`, for a developer's machine only: a test that cannot run for want of
//!   something prints a loud SKIPPED line and returns; without it the test fails saying what is
//!   missing. CI never sets it: .ci/run refuses to start with it set and fails on any SKIPPED line.
//! - `UPDATE_GOLDEN=1`, `UPDATE_README=1`: rewrite the generated files, then fail with the diff of
//!   what was rewritten, so a rewrite is always seen (and committed), never passed over.
#![allow(dead_code)] // each test binary uses part of it

use std::io::Write;

pub const ALLOW_SKIP: &str = "NIXOS_PXE_ALLOW_SKIP";

/// Whether the switch `name` is on: unset is off, `1` is on, anything else fails the test.
pub fn on(name: &str) -> bool {
    match std::env::var_os(name) {
        None => false,
        Some(value) if value == "1" => true,
        Some(value) => panic!("{name}={:?}: only {name}=1 turns this switch on; unset it otherwise", value.to_string_lossy()),
    }
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current().name().unwrap_or("this test").to_string()
}

/// For a test that cannot run here because `missing` is missing: fails saying so, unless
/// NIXOS_PXE_ALLOW_SKIP=1, when it prints a SKIPPED line and the caller returns.
pub fn skip_or_fail(missing: &str) {
    let test = test_name();
    if !on(ALLOW_SKIP) {
        panic!("{test} cannot run: {missing}. On a developer's machine {ALLOW_SKIP}=1 lets it skip (CI never does)");
    }
    // Straight to the process's stderr, past the harness's capture: the line shows although the
    // test passes, and .ci/run fails on it.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {missing} ({ALLOW_SKIP}=1)");
}

/// Fails after `switch` rewrote files, with the diff of each (`diffs`), so the rewrite is seen.
pub fn rewritten(switch: &str, diffs: &[String]) -> ! {
    panic!(
        "{switch}=1 rewrote {} file(s); review the diff below and commit them, then run the test without {switch}:\n{}",
        diffs.len(),
        diffs.join("\n")
    )
}

/// The lines that differ, from a longest common subsequence of lines: `-N old` for a line of
/// `want` (line N) that is gone, `+N new` for a line of `got` (line N) that is new.
pub fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    // common[i][j]: the length of the longest common subsequence of w[i..] and g[j..].
    let mut common = vec![vec![0usize; g.len() + 1]; w.len() + 1];
    for i in (0..w.len()).rev() {
        for j in (0..g.len()).rev() {
            common[i][j] = if w[i] == g[j] { common[i + 1][j + 1] + 1 } else { common[i + 1][j].max(common[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < w.len() || j < g.len() {
        if i < w.len() && j < g.len() && w[i] == g[j] {
            (i, j) = (i + 1, j + 1);
        } else if j == g.len() || (i < w.len() && common[i + 1][j] >= common[i][j + 1]) {
            out.push_str(&format!("  -{} {}\n", i + 1, w[i]));
            i += 1;
        } else {
            out.push_str(&format!("  +{} {}\n", j + 1, g[j]));
            j += 1;
        }
    }
    out
}
