//! `nixos-pxe render` on the examples: every output compared with its golden file, and every
//! server config checked by the real program that will read it (dhcpd, kea-dhcp4, dnsmasq, GRUB).
//! `UPDATE_GOLDEN=1 cargo test --test render` rewrites the golden files, then fails showing the diff.

mod common;
mod switches;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CASES: &[(&str, &str)] = &[
    ("seed", "examples/seed/installer.nix"),
    ("static-second-nic", "examples/static-second-nic/installer.nix"),
    ("proxy", "tests/configs/proxy.nix"),
    ("fleet", "examples/fleet/installer.nix"),
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

/// The files below `dir` (a fleet's per-host files are in hosts/), as paths relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(sub) = dirs.pop() {
        let entries = match std::fs::read_dir(dir.join(&sub)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", dir.join(&sub).display()),
        };
        for entry in entries {
            let entry = entry.expect("entry");
            let relative = sub.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                dirs.push(relative);
            } else {
                files.push(relative);
            }
        }
    }
    files.sort();
    files
}

/// Every rendered file (a fleet's per-host files in hosts/ too) against its golden file. With
/// UPDATE_GOLDEN=1 the golden files are rewritten and the test still fails, showing the diff
/// (tests/switches).
#[test]
fn rendered_files_match_the_golden_files() {
    let update = switches::on("UPDATE_GOLDEN");
    let mut mismatches = Vec::new();
    for (name, config) in CASES {
        let out = render(config);
        let golden_dir = root().join("tests/golden").join(name);
        let (rendered, golden) = (files(out.path()), files(&golden_dir));
        for file in golden.iter().filter(|f| !rendered.contains(f)) {
            let path = golden_dir.join(file);
            let want = std::fs::read_to_string(&path).expect("read golden");
            mismatches.push(format!("{}: no longer rendered\n{}", path.display(), switches::diff(&want, "")));
            if update {
                std::fs::remove_file(&path).expect("remove golden");
            }
        }
        for file in &rendered {
            let path = golden_dir.join(file);
            let got = std::fs::read_to_string(out.path().join(file)).expect("read");
            let want = if golden.contains(file) { std::fs::read_to_string(&path).expect("read golden") } else { String::new() };
            if !golden.contains(file) || got != want {
                let what = if golden.contains(file) { "differs" } else { "new, no golden file" };
                mismatches.push(format!("{}: {what}\n{}", path.display(), switches::diff(&want, &got)));
                if update {
                    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&path, &got).expect("write golden");
                }
            }
        }
    }
    if update && !mismatches.is_empty() {
        switches::rewritten("UPDATE_GOLDEN", &mismatches);
    }
    assert!(mismatches.is_empty(), "rendered output differs from tests/golden (UPDATE_GOLDEN=1 rewrites it and shows the diff):\n{}", mismatches.join("\n"));
}

/// grub.cfg and every per-host file of a fleet.
#[test]
fn grub_accepts_every_grub_cfg() {
    let mut checked = 0;
    for (_, config) in CASES {
        let out = render(config);
        for file in files(out.path()).iter().filter(|f| f.extension().is_some_and(|e| e == "cfg") && *f != Path::new("dhcpd.conf")) {
            let result = run(Command::new("grub-script-check").arg(out.path().join(file)));
            assert!(result.status.success(), "{config} {}: {}", file.display(), String::from_utf8_lossy(&result.stderr));
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * CASES.len() + 4, "each grub.cfg and grub-bios.cfg, and the fleet's four per-host files");
}

/// A fleet's render: one install entry per MAC, the MAC in GRUB's spelling in the file name and
/// on the kernel command line, each host's own generation; and a MAC taken out of the fleet
/// loses its file on the next render (else it would still be installed).
#[test]
fn a_fleet_renders_one_file_per_mac_and_drops_stale_ones() {
    let out = render("examples/fleet/installer.nix");
    let hosts: Vec<PathBuf> = files(out.path()).into_iter().filter(|f| f.starts_with("hosts")).collect();
    let names: Vec<String> = hosts.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(
        names,
        [
            "hosts/mac-52:54:00:00:0a:02.cfg",
            "hosts/mac-52:54:00:00:0b:01.cfg",
            "hosts/mac-52:54:00:00:0b:02.cfg",
            "hosts/mac-52:54:00:12:34:56.cfg"
        ]
    );
    let db1 = std::fs::read_to_string(out.path().join("hosts/mac-52:54:00:00:0b:02.cfg")).expect("db1");
    assert!(db1.contains("nixos-pxe.host=db1 nixos-pxe.generation=2 nixos-pxe.mac=52:54:00:00:0b:02;"), "{db1}");
    // The same directory rendered again from a fleet without db1's second NIC and without web2.
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(root().join("examples/fleet/installer.nix")).expect("example");
    let smaller = text
        .replace(" \"5254.0000.0b02\"", "")
        .replace("./hosts/web;", &format!("{}/examples/fleet/hosts/web;", root().display()));
    let start = smaller.find("      web2 = {").expect("web2");
    let end = start + smaller[start..].find("      db1 = {").expect("db1");
    let smaller = format!("{}{}", &smaller[..start], &smaller[end..]);
    assert!(!smaller.contains("0b02") && !smaller.contains("web2"), "{smaller}");
    let file = dir.path().join("smaller.nix");
    std::fs::write(&file, smaller).expect("write");
    // A file of the operator's own in hosts/ stays.
    std::fs::write(out.path().join("hosts/mac-02:00:00:00:00:01.cfg"), "# mine\n").expect("write");
    let result = run(Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(["render", "--source", "static", "--config"])
        .arg(&file)
        .arg("--out")
        .arg(out.path()));
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let left: Vec<String> = files(out.path()).into_iter().filter(|f| f.starts_with("hosts")).map(|f| f.display().to_string()).collect();
    assert_eq!(left, ["hosts/mac-02:00:00:00:00:01.cfg", "hosts/mac-52:54:00:00:0b:01.cfg", "hosts/mac-52:54:00:12:34:56.cfg"]);
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
    // rpcbind must have its socket before ganesha registers with it: waited for, not slept on.
    let script = r#"set -u
        mount -t tmpfs tmpfs /run && mkdir -p /run/ganesha /run/rpcbind
        rpcbind -f -w & rpcbind=$!
        for i in $(seq 1 100); do [ -S /run/rpcbind.sock ] && break; sleep 0.1; done
        if [ ! -S /run/rpcbind.sock ]; then echo "rpcbind made no /run/rpcbind.sock within 10 s"; kill $rpcbind; exit 1; fi
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
    // Deleted with whatever runs in it on every way out: Drop, a panic, or this process killed.
    let ns = common::Namespace::new("ganesha");
    let ns = &ns.name;
    let setup = format!(
        "ip -n {ns} link add br0 type bridge && ip -n {ns} addr add 10.42.0.1/24 dev br0 && ip -n {ns} link set br0 up"
    );
    assert!(run(Command::new("sh").args(["-c", &setup])).status.success(), "cannot set up namespace {ns}");
    let (status, text) = common::run_within(
        Command::new("ip")
            .args(["netns", "exec", ns, "unshare", "--mount", "sh", "-c", script, "ganesha-check"])
            .arg(&conf)
            .arg(&log)
            .arg(&export),
        dir.path(),
        std::time::Duration::from_secs(120),
        || common::delete_namespace(ns),
    );
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "ganesha did not export {}:\n{text}\n--- ganesha log:\n{log}", export.display());
    assert!(log.contains("Configuration file successfully parsed"), "{log}");
    assert!(text.contains("100003    3   tcp   2049  nfs"), "NFSv3 over TCP on 2049:\n{text}");
}
