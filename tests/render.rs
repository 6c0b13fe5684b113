//! `nixos-pxe render` on the examples: every output compared with its golden file, and every
//! server config checked by the real program that will read it (dhcpd, kea-dhcp4, dnsmasq, GRUB).
//! `UPDATE_GOLDEN=1 cargo test --test render` rewrites the golden files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CASES: &[(&str, &str)] = &[
    ("seed", "examples/seed/installer.nix"),
    ("static-second-nic", "examples/static-second-nic/installer.nix"),
    ("proxy", "tests/configs/proxy.nix"),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (dev/install-deps.sh test installs it)"))
}

fn render(config: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("tempdir");
    let result = run(Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(["render", "--source", "static", "--config", config, "--out"])
        .arg(out.path())
        .current_dir(root()));
    assert!(result.status.success(), "render {config}: {}", String::from_utf8_lossy(&result.stderr));
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

#[test]
fn rendered_files_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (name, config) in CASES {
        let out = render(config);
        let golden_dir = root().join("tests/golden").join(name);
        if update {
            let _ = std::fs::remove_dir_all(&golden_dir);
            std::fs::create_dir_all(&golden_dir).expect("mkdir");
        }
        let rendered = files(out.path());
        let names = |v: &[PathBuf]| v.iter().map(|p| p.file_name().expect("name").to_owned()).collect::<Vec<_>>();
        for file in &rendered {
            let golden = golden_dir.join(file.file_name().expect("name"));
            let got = std::fs::read_to_string(file).expect("read");
            if update {
                std::fs::write(&golden, &got).expect("write golden");
                continue;
            }
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if got != want {
                mismatches.push(format!("{}:\n{}", golden.display(), diff(&want, &got)));
            }
        }
        if !update {
            assert_eq!(names(&rendered), names(&files(&golden_dir)), "{name}: the set of rendered files changed");
        }
    }
    assert!(mismatches.is_empty(), "rendered output differs (UPDATE_GOLDEN=1 to accept):\n{}", mismatches.join("\n"));
}

/// A line diff good enough to see what changed.
fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let mut out = String::new();
    for i in 0..w.len().max(g.len()) {
        match (w.get(i), g.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => {
                if let Some(a) = a {
                    out.push_str(&format!("  {}- {a}\n", i + 1));
                }
                if let Some(b) = b {
                    out.push_str(&format!("  {}+ {b}\n", i + 1));
                }
            }
        }
    }
    out
}

#[test]
fn grub_accepts_every_grub_cfg() {
    for (_, config) in CASES {
        let out = render(config);
        for name in ["grub.cfg", "grub-bios.cfg"] {
            let result = run(Command::new("grub-script-check").arg(out.path().join(name)));
            assert!(result.status.success(), "{config} {name}: {}", String::from_utf8_lossy(&result.stderr));
        }
    }
}

#[test]
fn isc_dhcpd_accepts_dhcpd_conf() {
    for (name, config) in CASES.iter().filter(|(n, _)| *n != "proxy") {
        let out = render(config);
        let result = run(Command::new("dhcpd").args(["-t", "-4", "-cf"]).arg(out.path().join("dhcpd.conf")));
        assert!(result.status.success(), "{name}: {}", String::from_utf8_lossy(&result.stderr));
    }
}

#[test]
fn dnsmasq_accepts_dnsmasq_conf() {
    for (name, config) in CASES {
        let out = render(config);
        let result = run(Command::new("dnsmasq").arg("--test").arg("-C").arg(out.path().join("dnsmasq.conf")));
        assert!(result.status.success(), "{name}: {}", String::from_utf8_lossy(&result.stderr));
    }
}

/// `kea-dhcp4 -t` also checks that the configured interface exists, so each check runs in a network
/// namespace of its own that has an interface of that name (a bridge): nothing leaves it.
#[test]
fn kea_accepts_kea_dhcp4_json() {
    assert!(is_root(), "this test needs root to make a network namespace (CI runs as root)");
    for (name, config) in CASES.iter().filter(|(n, _)| *n != "proxy") {
        let out = render(config);
        let file = out.path().join("kea-dhcp4.json");
        let kea: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
        let interface = kea["Dhcp4"]["interfaces-config"]["interfaces"][0].as_str().unwrap_or("lo").to_string();
        let script = format!(
            "set -e; ip link add {interface} type bridge; ip link set {interface} up; kea-dhcp4 -t {}",
            file.display()
        );
        let result = run(Command::new("unshare").args(["--net", "sh", "-c", &script]));
        let text = format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
        assert!(result.status.success() && !text.contains("ERROR"), "{name}: {text}");
    }
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).stdout == b"0\n"
}

/// nfs-ganesha has no check mode, so the rendered ganesha.conf is run for real: rpcbind and
/// ganesha.nfsd in a network namespace (10.42.0.1 on a bridge) and a mount namespace with its own
/// /run (rpcbind's socket), until `showmount -e` lists the export; then both are stopped.
#[test]
fn ganesha_serves_the_export_from_ganesha_conf() {
    assert!(is_root(), "this test needs root to make network and mount namespaces (CI runs as root)");
    let dir = tempfile::tempdir().expect("tempdir");
    let export = dir.path().join("nfsroot");
    std::fs::create_dir_all(&export).expect("mkdir export");
    let config = dir.path().join("site.json");
    let tree = serde_json::json!({ "bootServer": {
        "address": "10.42.0.1", "subnet": "10.42.0.0/24", "dhcpMode": "proxy", "nfsExport": export.to_str().expect("utf-8"),
    }});
    std::fs::write(&config, tree.to_string()).expect("write config");
    let out = render(config.to_str().expect("utf-8"));
    let conf = out.path().join("ganesha.conf");
    let log = dir.path().join("ganesha.log");
    let ns = format!("nixos-pxe-ganesha-{}", std::process::id());
    let script = r#"set -u
        mount -t tmpfs tmpfs /run && mkdir -p /run/ganesha /run/rpcbind
        rpcbind -f -w & rpcbind=$!
        sleep 0.5
        ganesha.nfsd -F -f "$1" -L "$2" -p /run/ganesha/pid & ganesha=$!
        status=1
        for i in $(seq 1 60); do
          if showmount -e 10.42.0.1 2>/dev/null | grep -q "^$3 10.42.0.0/24\$"; then status=0; break; fi
          sleep 0.5
        done
        showmount -e 10.42.0.1
        rpcinfo -p 10.42.0.1
        kill $ganesha $rpcbind; wait
        exit $status"#;
    let setup = format!(
        "ip netns add {ns} && ip -n {ns} link set lo up && ip -n {ns} link add br0 type bridge && \
         ip -n {ns} addr add 10.42.0.1/24 dev br0 && ip -n {ns} link set br0 up"
    );
    assert!(run(Command::new("sh").args(["-c", &setup])).status.success(), "cannot make namespace {ns}");
    let result = run(Command::new("ip")
        .args(["netns", "exec", &ns, "unshare", "--mount", "sh", "-c", script, "ganesha-check"])
        .arg(&conf)
        .arg(&log)
        .arg(&export));
    let _ = run(Command::new("ip").args(["netns", "del", &ns]));
    let text = format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(result.status.success(), "ganesha did not export {}:\n{text}\n--- ganesha log:\n{log}", export.display());
    assert!(log.contains("Configuration file successfully parsed"), "{log}");
    assert!(text.contains("100003    3   tcp   2049  nfs"), "NFSv3 over TCP on 2049:\n{text}");
}
