//! Fleet trust (issue 18) from the wire: serve with its DHCP and the example fleet, the fleet host
//! web1's NIC and a neighbour (its own MAC, its own lease) in network namespaces this test makes
//! (tests/common Lab). The neighbour fetches web1's file over TFTP and HTTP (no token, no
//! attempt), posts web1's reports with web1's token from its own address (refused, nothing
//! changes) and releases web1's lease (ignored); web1 itself installs, and only its boot token
//! confirms its boot; an old attempt's `booted` changes nothing; the files a client can fetch
//! carry no path of the server; the fleet is not listed on the boot network; serve refuses to
//! serve a fleet without DHCP unless told the network is trusted. In proxy mode, beside a site
//! DHCP server (dnsmasq), serve binds the address web1 asked that server for.

mod common;

use common::{Lab, Socket};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const WEB1: &str = "52:54:00:12:34:56";
const NEIGHBOUR: &str = "02:00:00:00:00:77";
const STRANGER: &str = "52:54:00:99:99:99";
const BIN: &str = env!("CARGO_BIN_EXE_nixos-pxe");

/// The example fleet as JSON with `edit` applied, in `dir`.
fn config(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let text = common::nixos_pxe(&["options", "--config", "examples/fleet/installer.nix", "--source", "static", "--as-config-json"]);
    let mut tree: Value = serde_json::from_str(&text).expect("config JSON");
    tree["fleet"]["unknownHosts"] = "hold".into();
    edit(&mut tree);
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&tree).expect("json")).expect("write config");
    path
}

struct Trust {
    lab: Lab,
    dir: tempfile::TempDir,
    host: String,
    neighbour: String,
}

impl Trust {
    /// serve (DHCP `mode`) in the lab; web1's NIC and the neighbour, each with its MAC and no
    /// address yet.
    fn start(tag: &str, mode: &str, edit: impl FnOnce(&mut Value)) -> Trust {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        config(d, edit);
        std::fs::create_dir_all(d.join("root/nixos")).expect("mkdir");
        std::fs::write(d.join("root/nixos/bzImage"), b"a kernel").expect("kernel");
        let mut lab = Lab::new(tag);
        let host = lab.add_host("web1", "10.42.0.251");
        let neighbour = lab.add_host("nbr", "10.42.0.252");
        for (ns, mac) in [(&host, WEB1), (&neighbour, NEIGHBOUR)] {
            common::sh(&format!("ip -n {ns} addr flush dev eth0; ip -n {ns} link set eth0 address {mac}"));
        }
        let script = format!("cd {} && exec {BIN} serve --config config.json --interface br0 --dhcp {mode} --tftp-root root --state-dir state --http-port 80", d.display());
        lab.spawn(&["sh", "-c", &script], &d.join("serve.log"));
        let ns = lab.ns.clone();
        lab.wait_listening(&ns, &[Socket::Udp(67), Socket::Udp(69), Socket::TcpListen(80)]);
        Trust { lab, dir, host, neighbour }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("serve.log")).unwrap_or_default()
    }

    /// The address `ns` got from serve's DHCP (busybox udhcpc), configured on its eth0.
    fn lease(&self, ns: &str) -> String {
        common::dhcp_lease(ns, self.dir()).unwrap_or_else(|| panic!("no lease in {ns}:\n{}", self.log()))
    }

    /// curl in `ns`: (status, body).
    fn curl(&self, ns: &str, args: &[&str]) -> (u16, String) {
        common::curl_in(ns, args)
    }

    fn file_over_http(&self, ns: &str, mac: &str) -> String {
        let (code, body) = self.curl(ns, &[&format!("http://10.42.0.1/nixos-pxe/hosts/mac-{mac}.cfg")]);
        assert_eq!(code, 200, "{body}");
        body
    }

    /// The decision the signed installer of Secure Boot mode asks for (`mac-<MAC>.json`).
    fn decision(&self, ns: &str, mac: &str) -> Value {
        let (code, body) = self.curl(ns, &[&format!("http://10.42.0.1/nixos-pxe/hosts/mac-{mac}.json")]);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }

    fn file_over_tftp(&self, ns: &str, mac: &str) -> String {
        let out = self.dir().join(format!("{ns}.cfg"));
        let _ = std::fs::remove_file(&out);
        common::run(Command::new("ip").args(["netns", "exec", ns, "atftp", "-g", "-r", &format!("nixos-pxe/hosts/mac-{mac}.cfg"), "-l"]).arg(&out).arg("10.42.0.1"));
        std::fs::read_to_string(&out).expect("atftp wrote the file")
    }

    fn post(&self, ns: &str, report: &Value) -> (u16, String) {
        self.curl(ns, &["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &report.to_string(), "http://10.42.0.1/v1/report"])
    }

    /// `fleet status --json`: web1's row.
    fn web1(&self) -> Value {
        let state = self.dir().join("state");
        let text = common::nixos_pxe(&["fleet", "status", "--state-dir", state.to_str().expect("utf-8"), "--json"]);
        let rows: Vec<Value> = serde_json::from_str(&text).expect("status JSON");
        rows.into_iter().find(|r| r["host"] == "web1").unwrap_or_else(|| panic!("no web1 in {text}"))
    }

    fn history(&self) -> usize {
        self.web1()["attempt"]["reports"].as_u64().unwrap_or(0) as usize
    }
}

/// (attempt, token) on an install entry.
fn install_args(cfg: &str) -> (u64, String) {
    let arg = |name: &str| cfg.split_whitespace().find_map(|w| w.strip_prefix(name)).map(|v| v.trim_end_matches(';').to_string());
    let attempt = arg("nixos-pxe.attempt=").unwrap_or_else(|| panic!("no install entry:\n{cfg}"));
    (attempt.parse().expect("number"), arg("nixos-pxe.token=").unwrap_or_else(|| panic!("no token:\n{cfg}")))
}

fn report(attempt: u64, token: &str, event: &str) -> Value {
    json!({ "host": "web1", "generation": 1, "attempt": attempt, "token": token, "event": event })
}

#[test]
fn a_neighbour_cannot_read_web1s_token_nor_act_as_web1_and_web1_installs() {
    let t = Trust::start("trust", "authoritative", |_| {});
    let (host, neighbour) = (t.host.clone(), t.neighbour.clone());
    let neighbour_ip = t.lease(&neighbour);
    let host_ip = t.lease(&host);
    assert_ne!(neighbour_ip, host_ip);

    // The neighbour asks for web1's file over TFTP and HTTP: no token, no attempt.
    for cfg in [t.file_over_tftp(&neighbour, WEB1), t.file_over_http(&neighbour, WEB1)] {
        assert!(!cfg.contains("nixos-pxe.token") && !cfg.contains("linux ") && cfg.contains("no install from here"), "{cfg}");
        assert!(cfg.contains(&neighbour_ip), "the refusal names the asking address: {cfg}");
    }
    assert_eq!(t.web1()["state"], "absent", "the neighbour's requests made an attempt: {}", t.web1());
    let said = t.log().lines().filter(|l| l.contains("fleet: no install from this address") && l.contains(WEB1)).count();
    assert_eq!(said, 1, "said once per MAC and interval:\n{}", t.log());

    // Secure Boot mode's form of the same file: the neighbour gets a wait, no token.
    let d = t.decision(&neighbour, WEB1);
    assert_eq!(d["decision"], "wait", "{d}");
    assert!(!d.to_string().contains("nixos-pxe.token") && d["why"].as_str().is_some_and(|w| w.contains(&neighbour_ip)), "{d}");
    assert_eq!(t.web1()["state"], "absent", "the neighbour's decision request made an attempt: {}", t.web1());

    // web1 from its own address: attempt 1 with its token.
    let (attempt, token) = install_args(&t.file_over_tftp(&host, WEB1));
    assert_eq!(attempt, 1);
    assert_eq!(t.file_over_http(&host, WEB1), t.file_over_tftp(&host, WEB1), "the same attempt over both");
    // ... and in Secure Boot mode's form: the same attempt and token, web1's MAC, the report URL.
    let d = t.decision(&host, WEB1);
    assert_eq!(d["decision"], "install", "{d}");
    let words = d["words"].as_str().unwrap_or_default();
    assert_eq!(install_args(words), (attempt, token.clone()), "{d}");
    for word in ["nixos-pxe.host=web1", "nixos-pxe.generation=1", &format!("nixos-pxe.mac={WEB1}"), "nixos-pxe.report=http://10.42.0.1:80"] {
        assert!(words.split_whitespace().any(|w| w == word), "{word} missing: {d}");
    }

    // The neighbour, with web1's token, from its own address: refused, state unchanged.
    for event in ["started", "installed", "failed", "booted"] {
        let mut r = report(attempt, &token, event);
        r["system"] = "/nix/store/00000000000000000000000000000000-made-up".into();
        let (code, body) = t.post(&neighbour, &r);
        assert_eq!(code, 403, "{event}: {body}");
        assert!(body.contains("taken only from the addresses serve's DHCP saw"), "{body}");
    }
    assert_eq!((t.web1()["state"].as_str(), t.history()), (Some("handed-out"), 0), "{}", t.web1());

    // A RELEASE of web1's lease from the neighbour: ignored (web1 keeps its address and binding).
    common::forge_dhcp_release(&neighbour, &neighbour_ip, WEB1, &host_ip);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.log().contains("dhcp: ignored: not from the holder of that lease") {
        assert!(Instant::now() < deadline, "the spoofed RELEASE was not ignored:\n{}", t.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // web1 installs: its reports from its own address, `installed` with its boot token's hash.
    let boot_token = "b00t-t0ken-made-by-web1s-installer-0123456789";
    let boot_token_hash = blake3::hash(boot_token.as_bytes()).to_hex().to_string();
    for (event, extra) in [("started", json!({})), ("step", json!({ "step": "disk" })), ("installed", json!({ "system": "/nix/store/s1", "boot_token_hash": boot_token_hash }))] {
        let mut r = report(attempt, &token, event);
        r.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        let (code, body) = t.post(&host, &r);
        assert_eq!(code, 200, "{event}: {body}");
    }
    // After `installed`, the attempt's token (on the installer's command line) confirms nothing.
    let booted = |boot: Option<&str>| {
        let mut r = report(attempt, &token, "booted");
        r["system"] = "/nix/store/s1".into();
        if let Some(b) = boot {
            r["boot_token"] = b.into();
        }
        r
    };
    let (code, body) = t.post(&host, &booted(None));
    assert_eq!(code, 403, "booted with the attempt's token alone: {body}");
    let (code, body) = t.post(&host, &booted(Some(boot_token)));
    assert_eq!(code, 200, "{body}");
    assert_eq!(t.web1()["state"], "confirmed", "{}", t.web1());
    let d = t.decision(&host, WEB1);
    assert_eq!(d["decision"], "localBoot", "installed and confirmed: {d}");

    // A reinstall: attempt 2; attempt 1's `booted` (its boot token) now changes nothing.
    let state = t.dir().join("state");
    common::nixos_pxe(&["fleet", "reinstall", "--state-dir", state.to_str().expect("utf-8"), "web1"]);
    let (second, _) = install_args(&t.file_over_http(&host, WEB1));
    assert_eq!(second, 2);
    let (code, body) = t.post(&host, &booted(Some(boot_token)));
    assert_eq!(code, 409, "an old attempt's boot: {body}");
    let w = t.web1();
    assert_eq!((w["attempt"]["number"].as_u64(), w["attempt"]["status"].as_str(), w["reinstall_requested"].as_bool()), (Some(2), Some("pending"), Some(true)), "{w}");

    // What a client can fetch names no path of the server; the fleet is not listed.
    let hold = t.file_over_http(&neighbour, STRANGER);
    for (what, text) in [("the hold page", &hold), ("web1's file", &t.file_over_http(&host, WEB1))] {
        assert!(!text.contains(&t.dir().display().to_string()) && !text.contains("/tmp/"), "{what} names a server path:\n{text}");
    }
    assert!(hold.contains("HOLD 52:54:00:99:99:99"), "{hold}");
    assert_eq!(t.decision(&neighbour, STRANGER)["decision"], "hold", "a stranger in Secure Boot mode's form");
    assert_eq!(t.curl(&neighbour, &["http://10.42.0.1/v1/hosts"]).0, 404);
}

#[test]
fn in_proxy_mode_serve_binds_the_address_a_host_asked_the_sites_server_for() {
    let mut t = Trust::start("trust-proxy", "proxy", |c| c["bootServer"]["dhcpMode"] = "proxy".into());
    // The site's DHCP server: dnsmasq on a machine of its own, addresses only.
    let d = t.dir().to_owned();
    let site = t.lab.add_host("site", "10.42.0.2");
    let conf = d.join("site.conf");
    std::fs::write(&conf, "interface=eth0\nport=0\ndhcp-range=10.42.0.150,10.42.0.170,255.255.255.0,600\ndhcp-authoritative\n").expect("conf");
    let mut args: Vec<String> = vec!["dnsmasq".into(), format!("--conf-file={}", conf.display())];
    args.extend(common::dnsmasq_host_safe_args(&d.join("site.leases")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.lab.spawn_in(&site, &args, &d.join("site.log"));
    t.lab.wait_listening(&site, &[Socket::Udp(67)]);
    let (host, neighbour) = (t.host.clone(), t.neighbour.clone());
    let host_ip = t.lease(&host);
    t.lease(&neighbour);
    assert!(t.log().contains(&format!("fleet: bound (its host's file and reports from this address only) mac={WEB1} address={host_ip}")), "{}", t.log());
    let (attempt, _) = install_args(&t.file_over_tftp(&host, WEB1));
    assert_eq!(attempt, 1);
    let cfg = t.file_over_tftp(&neighbour, WEB1);
    assert!(!cfg.contains("nixos-pxe.token"), "{cfg}");
}

#[test]
fn without_dhcp_serve_refuses_a_fleet_unless_the_network_is_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path(), |_| {});
    std::fs::create_dir_all(dir.path().join("root")).expect("mkdir");
    let run = |config: &str| {
        Command::new(BIN)
            .current_dir(dir.path())
            .args(["serve", "--config", config, "--dhcp", "off", "--tftp-root", "root", "--state-dir", "state", "--http-port", "0", "--tftp-port", "0"])
            .output()
            .expect("serve")
    };
    let out = run("config.json");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("--dhcp off") && said.contains("fleet.trustBootNetwork = true"), "{said}");
    // Trusted: it starts, and says what that gives up (stopped at once by its TFTP bind on port 0
    // working and SIGTERM below).
    let mut tree: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).expect("read")).expect("json");
    tree["fleet"]["trustBootNetwork"] = true.into();
    std::fs::write(dir.path().join("trusted.json"), tree.to_string()).expect("write");
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "--config", "trusted.json", "--dhcp", "off", "--tftp-root", "root", "--state-dir", "state", "--http-port", "0", "--tftp-port", "0"])
        .stderr(std::fs::File::create(dir.path().join("trusted.log")).expect("log"))
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = std::fs::read_to_string(dir.path().join("trusted.log")).unwrap_or_default();
        if log.contains("tftp: serving") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: SIGTERM to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert!(log.contains("any machine on the boot network can fetch any host's install token"), "{log}");
}
