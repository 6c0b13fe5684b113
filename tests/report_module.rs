//! nix/report-module.nix, the fleet host's first-boot report:
//! - evaluated with nixpkgs' real lib ($NIXPKGS_LIB; .ci/run sets it to ../shared/nixpkgs-lib) in
//!   the stand-in NixOS of tests/nix/stand-in-nixpkgs (nixos.nix), which declares the
//!   systemd.services options the module sets with NixOS's types and gives NixOS's warnings about
//!   them: the unit is what the module says, with no warning; the same unit ordered after
//!   network-online.target without wanting it gets NixOS's warning, and a misspelt option fails
//!   (so both checks can fail). The packages the module names are placeholders (nixpkgs' curl and
//!   jq cannot be had here).
//! - its script (nix/boot-report.sh) run for real with bash, Debian's curl and jq, against a report
//!   sink in a network namespace of the test's: `booted` with the system's store path and the
//!   boot token, the state file removed once serve answered (yes or no), kept when serve cannot be
//!   reached (the next boot tries again).
//!
//! Needs nix-instantiate (nix-bin), curl, jq and root (the namespace); without one the test fails,
//! or skips loudly with NIXOS_PXE_ALLOW_SKIP=1.

mod common;
mod report_sink;
mod switches;

use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn nixpkgs_lib() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("NIXPKGS_LIB") else {
        switches::skip_or_fail("NIXPKGS_LIB is not set: it names a copy of nixpkgs' lib (.ci/run sets it to ../shared/nixpkgs-lib)");
        return None;
    };
    let dir = PathBuf::from(dir);
    if !dir.join("lib/default.nix").is_file() {
        switches::skip_or_fail(&format!("NIXPKGS_LIB={} has no lib/default.nix", dir.display()));
        return None;
    }
    if Command::new("nix-instantiate").arg("--version").output().is_err() {
        switches::skip_or_fail("nix-instantiate does not run (apt-get install nix-bin)");
        return None;
    }
    Some(dir)
}

/// Evaluates the module in the stand-in NixOS with `extra` (Nix module expressions) beside it;
/// returns the unit and the warnings as JSON, or Nix's error.
fn evaluate(lib: &Path, extra: &[&str]) -> Result<Value, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("eval.nix");
    std::fs::write(
        &file,
        format!(
            r#"let
  lib = import {lib}/lib;
  # Placeholders for the packages the module names: the stand-in has no nixpkgs packages.
  pkgs = {{ coreutils = "/stand-in/coreutils"; curl = "/stand-in/curl"; jq = "/stand-in/jq"; }};
  nixos = import {repo}/tests/nix/stand-in-nixpkgs/nixos.nix {{
    inherit lib pkgs;
    impl = {{ }};
    modulesPath = {repo}/tests/nix/stand-in-nixpkgs/nixos/modules;
  }};
  system = nixos.nixosSystem {{ modules = [ {repo}/nix/report-module.nix ] ++ [ {extra} ]; }};
in
{{ inherit (system.config) warnings; unit = system.config.systemd.services.nixos-pxe-boot-report; }}
"#,
            lib = lib.display(),
            repo = root().display(),
            extra = extra.join(" "),
        ),
    )
    .expect("write");
    let out = Command::new("nix-instantiate")
        .env("NIX_CONFIG", "build-users-group =\n")
        .args(["--eval", "--strict", "--json"])
        .arg(&file)
        .output()
        .expect("run nix-instantiate");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("JSON"))
}

#[test]
fn the_module_is_a_oneshot_unit_after_the_network_is_online_without_warnings() {
    let Some(lib) = nixpkgs_lib() else { return };
    let v = evaluate(&lib, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["warnings"], json!([]));
    let unit = &v["unit"];
    assert_eq!(unit["wantedBy"], json!(["multi-user.target"]));
    assert_eq!(unit["wants"], json!(["network-online.target"]));
    assert_eq!(unit["after"], json!(["network-online.target"]));
    assert_eq!(unit["serviceConfig"], json!({ "Type": "oneshot" }));
    assert_eq!(unit["unitConfig"], json!({ "ConditionPathExists": "/var/lib/nixos-pxe/boot-report.json" }));
    assert_eq!(unit["path"], json!(["/stand-in/coreutils", "/stand-in/curl", "/stand-in/jq"]));
    assert_eq!(unit["restartIfChanged"], json!(false));
    let script = std::fs::read_to_string(root().join("nix/boot-report.sh")).expect("boot-report.sh");
    assert_eq!(unit["script"].as_str(), Some(script.as_str()));
}

/// The stand-in's checks can fail: ordered after network-online.target without wanting it is
/// warned about as NixOS does, and an option NixOS does not have is refused.
#[test]
fn the_stand_in_nixos_warns_and_refuses_as_nixos_does() {
    let Some(lib) = nixpkgs_lib() else { return };
    let v = evaluate(&lib, &["({ lib, ... }: { systemd.services.nixos-pxe-boot-report.wants = lib.mkForce [ ]; })"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["warnings"], json!(["nixos-pxe-boot-report.service is ordered after 'network-online.target' but doesn't depend on it"]));
    let err = evaluate(&lib, &["{ systemd.services.nixos-pxe-boot-report.wantedBY = [ \"multi-user.target\" ]; }"]).unwrap_err();
    assert!(err.contains("wantedBY") && err.contains("does not exist"), "{err}");
    let err = evaluate(&lib, &["{ systemd.services.nixos-pxe-boot-report.serviceConfig.Type = \"one-shot\"; }"]).unwrap_err();
    assert!(err.contains("serviceConfig"), "{err}");
}

fn have(program: &str) -> bool {
    if Command::new(program).arg("--version").output().is_ok() {
        return true;
    }
    switches::skip_or_fail(&format!("{program} is not installed (dev/packages.txt lists it)"));
    false
}

const TOKEN: &str = "att3mpt-t0ken-of-web1-generation-3-attempt-2";
const BOOT_TOKEN: &str = "b00t-t0ken-of-web1-generation-3-attempt-2xy";

/// A state file as the installer writes it (src/install/report.rs BootReport), a system link,
/// and the script run in `netns` with them; returns its output and whether the state file is left.
fn run_script(dir: &Path, netns: &str, report: &str, patience: &str) -> (Output, bool) {
    let state = dir.join("boot-report.json");
    let text = json!({ "report": report, "host": "web1", "generation": 3, "attempt": 2, "token": TOKEN, "boot_token": BOOT_TOKEN });
    std::fs::write(&state, text.to_string()).expect("write");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let system = dir.join("store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web1");
    std::fs::create_dir_all(&system).expect("mkdir");
    let current = dir.join("current-system");
    let _ = std::fs::remove_file(&current);
    std::os::unix::fs::symlink(&system, &current).expect("symlink");
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "bash", "-e"])
        .arg(root().join("nix/boot-report.sh"))
        .env("NIXOS_PXE_BOOT_REPORT", &state)
        .env("NIXOS_PXE_CURRENT_SYSTEM", &current)
        .env("NIXOS_PXE_BOOT_REPORT_PATIENCE", patience)
        .output()
        .expect("run boot-report.sh");
    (out, state.exists())
}

#[test]
fn the_script_reports_booted_with_the_system_and_the_boot_token() {
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
    if !is_root {
        switches::skip_or_fail("needs root for a network namespace");
        return;
    }
    if !have("curl") || !have("jq") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let system = dir.path().join("store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web1");
    let netns = report_sink::Netns::new("boot-report");

    // Accepted: one POST of `booted`, the state file gone.
    let sink = report_sink::Sink::start(&netns.0, "127.0.0.1:0", report_sink::accept_all);
    let url = format!("http://{}", sink.address);
    let (out, left) = run_script(dir.path(), &netns.0, &url, "10");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, format!("nixos-pxe: report booted: accepted by {url}/v1/report ({})\n", system.display()));
    assert!(!left, "the state file is removed once serve accepted");
    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let r = &received[0];
    assert_eq!((r.method.as_str(), r.path.as_str(), r.content_type.as_deref()), ("POST", "/v1/report", Some("application/json")));
    assert_eq!(
        r.body,
        json!({ "host": "web1", "generation": 3, "attempt": 2, "token": TOKEN, "boot_token": BOOT_TOKEN, "event": "booted", "system": system.display().to_string() })
    );
    drop(sink);

    // Refused (an old attempt): said, not tried again, the state file gone.
    let sink = report_sink::Sink::start(&netns.0, "127.0.0.1:0", |_| (409, "Conflict", "web1 is at generation 4\n".into()));
    let url = format!("http://{}", sink.address);
    let (out, left) = run_script(dir.path(), &netns.0, &url, "10");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, format!("nixos-pxe: report booted: refused by {url}/v1/report (409: web1 is at generation 4); not tried again\n"));
    assert!(!left);
    assert_eq!(sink.received().len(), 1, "not retried");
    drop(sink);

    // Unreachable: the unit fails and the state file stays for the next boot.
    let (out, left) = run_script(dir.path(), &netns.0, "http://127.0.0.1:9", "2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.ends_with("nixos-pxe: report booted: not delivered to http://127.0.0.1:9/v1/report (HTTP status 000); the next boot tries again\n"),
        "{stderr}"
    );
    assert!(left, "the state file stays");
}
