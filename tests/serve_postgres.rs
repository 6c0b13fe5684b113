//! Several boot servers, one fleet (issue 20), from the wire: `nixos-pxe serve` processes with
//! `--database` on one PostgreSQL server that this test starts (Debian's postgresql, initdb and
//! pg_ctl in a directory of its own, on a unix socket there: src/fleet/pg_cluster.rs), web1's NIC
//! in network namespaces (tests/common Lab) getting its lease from serve's DHCP (busybox udhcpc)
//! and fetching its file and posting its reports with curl, as GRUB and the installer do.
//!
//! - Two segments, a server on each: web1 installs on one, then boots on the other, which knows
//!   it installed (its lease came from the first server; the binding is shared): one install.
//! - One segment, two servers with split pools: web1 asks both for its file at once, 100 times:
//!   one attempt each time, the other server's answer waits.
//! - PostgreSQL stopped mid-install and started again: serve keeps answering, hands out nothing,
//!   keeps the reports (202) and writes them when the database is back; nothing lost.
//! - `fleet copy` both ways, and never into a store that has rows.

mod common;

use common::{Lab, Socket};
use nixos_pxe_installer::fleet::pg_cluster::Cluster;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const WEB1: &str = "52:54:00:12:34:56";
const BIN: &str = env!("CARGO_BIN_EXE_nixos-pxe");

/// The example fleet as JSON for a server at `address` handing out `first`..`last`.
fn config(dir: &Path, address: &str, first: &str, last: &str) -> PathBuf {
    let text = common::nixos_pxe(&["options", "--config", "examples/fleet/installer.nix", "--source", "static", "--as-config-json"]);
    let mut tree: Value = serde_json::from_str(&text).expect("config JSON");
    tree["fleet"]["unknownHosts"] = "hold".into();
    tree["bootServer"]["address"] = address.into();
    tree["bootServer"]["dhcpRange"]["start"] = first.into();
    tree["bootServer"]["dhcpRange"]["end"] = last.into();
    std::fs::create_dir_all(dir.join("root/nixos")).expect("mkdir");
    std::fs::write(dir.join("root/nixos/bzImage"), b"a kernel").expect("kernel");
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&tree).expect("json")).expect("write config");
    path
}

/// One serve: where it runs and its directory.
struct Server {
    dir: PathBuf,
    address: String,
}

impl Server {
    /// serve in namespace `ns` on `interface`, at `address`, on `database`; waits until it listens.
    fn start(lab: &mut Lab, ns: &str, interface: &str, dir: &Path, address: &str, pool: (&str, &str), database: &str) -> Server {
        std::fs::create_dir_all(dir).expect("mkdir");
        config(dir, address, pool.0, pool.1);
        let script = format!(
            "cd {} && exec {BIN} serve --config config.json --interface {interface} --dhcp authoritative --tftp-root root --state-dir state --http-port 80 --database '{database}'",
            dir.display()
        );
        lab.spawn_in(ns, &["sh", "-c", &script], &dir.join("serve.log"));
        lab.wait_listening(ns, &[Socket::Udp(67), Socket::Udp(69), Socket::TcpListen(80)]);
        Server { dir: dir.to_owned(), address: address.to_string() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }
}

/// curl in `ns`: (status, body).
fn curl(ns: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn file(ns: &str, server: &Server) -> String {
    let (code, body) = curl(ns, &[&format!("http://{}/nixos-pxe/hosts/mac-{WEB1}.cfg", server.address)]);
    assert_eq!(code, 200, "{body}\n{}", server.log());
    body
}

fn post(ns: &str, server: &Server, report: &Value) -> (u16, String) {
    curl(ns, &["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &report.to_string(), &format!("http://{}/v1/report", server.address)])
}

fn install_args(cfg: &str) -> (u64, String) {
    let arg = |name: &str| cfg.split_whitespace().find_map(|w| w.strip_prefix(name)).map(|v| v.trim_end_matches(';').to_string());
    let attempt = arg("nixos-pxe.attempt=").unwrap_or_else(|| panic!("no install entry:\n{cfg}"));
    (attempt.parse().expect("number"), arg("nixos-pxe.token=").unwrap_or_else(|| panic!("no token:\n{cfg}")))
}

fn report(attempt: u64, token: &str, event: &str) -> Value {
    json!({ "host": "web1", "generation": 1, "attempt": attempt, "token": token, "event": event, "system": "/nix/store/s" })
}

/// `fleet status --json --database`: web1's row, or the command's error.
fn status(database: &str, state_dir: &Path) -> Result<Value, String> {
    let out = Command::new(BIN)
        .args(["fleet", "status", "--json", "--database", database, "--state-dir"])
        .arg(state_dir)
        .output()
        .expect("fleet status");
    if !out.status.success() {
        return Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    }
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("status JSON");
    rows.into_iter().find(|r| r["host"] == "web1").ok_or_else(|| "no web1".to_string())
}

/// web1's NIC: a namespace on the lab's bridge with web1's MAC and no address yet.
fn web1_nic(lab: &mut Lab, suffix: &str) -> String {
    let ns = lab.add_host(suffix, "10.42.0.250");
    common::sh(&format!("ip -n {ns} addr flush dev eth0; ip -n {ns} link set eth0 address {WEB1}"));
    ns
}

#[test]
fn a_host_that_boots_on_one_segment_then_the_other_installs_once() {
    let cluster = Cluster::start("two-segments", true).unwrap_or_else(|e| panic!("{e}"));
    let database = cluster.create_database("fleet").expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    // Two segments: two labs, each its own bridge and serve (the same addresses, other wires).
    let (mut lab_a, mut lab_b) = (Lab::new("pg-seg-a"), Lab::new("pg-seg-b"));
    let (ns_a, ns_b) = (lab_a.ns.clone(), lab_b.ns.clone());
    let a = Server::start(&mut lab_a, &ns_a, "br0", &dir.path().join("a"), "10.42.0.1", ("10.42.0.100", "10.42.0.149"), &database);
    let b = Server::start(&mut lab_b, &ns_b, "br0", &dir.path().join("b"), "10.42.0.1", ("10.42.0.150", "10.42.0.199"), &database);
    let nic_a = web1_nic(&mut lab_a, "web1");
    let lease_a = common::dhcp_lease(&nic_a, dir.path()).unwrap_or_else(|| panic!("no lease from a:\n{}", a.log()));
    let (attempt, token) = install_args(&file(&nic_a, &a));
    assert_eq!(attempt, 1);
    let boot_token = "the-boot-token-of-web1";
    let installed = json!({ "host": "web1", "generation": 1, "attempt": 1, "token": token, "event": "installed", "system": "/nix/store/s",
        "boot_token_hash": nixos_pxe_installer::fleet::token::hash(boot_token) });
    for r in [report(1, &token, "started"), installed] {
        assert_eq!(post(&nic_a, &a, &r).0, 200, "{}", a.log());
    }
    // web1 is moved to the other segment: server b gives it a lease from its own pool.
    let nic_b = web1_nic(&mut lab_b, "web1");
    let lease_b = common::dhcp_lease(&nic_b, dir.path()).unwrap_or_else(|| panic!("no lease from b:\n{}", b.log()));
    assert_ne!(lease_a, lease_b);
    let cfg = file(&nic_b, &b);
    assert!(cfg.contains("web1 generation 1 is installed") && !cfg.contains("nixos-pxe.token"), "b knows web1 installed on a's segment:\n{cfg}");
    let booted = json!({ "host": "web1", "generation": 1, "attempt": 1, "token": token, "event": "booted", "system": "/nix/store/s", "boot_token": boot_token });
    let (code, body) = post(&nic_b, &b, &booted);
    assert_eq!(code, 200, "{body}\n{}", b.log());
    // The address web1 had on a's segment no longer speaks for it (a's own check reads the store).
    let row = status(&database, &a.dir.join("state")).expect("status");
    assert_eq!((row["state"].as_str(), row["attempt"]["number"].as_u64()), (Some("confirmed"), Some(1)), "{row}");
    assert_eq!(row["attempt"]["reports"].as_u64(), Some(3), "{row}");
}

#[test]
fn two_servers_on_one_segment_race_for_one_host_and_hand_out_one_attempt_each_time() {
    let cluster = Cluster::start("one-segment", false).unwrap_or_else(|e| panic!("{e}"));
    let database = cluster.create_database("fleet").expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = Lab::new("pg-race");
    let ns = lab.ns.clone();
    // Split pools: a at 10.42.0.1 (.100-.149) in the lab, b at 10.42.0.2 (.150-.199) on the bridge.
    let a = Server::start(&mut lab, &ns, "br0", &dir.path().join("a"), "10.42.0.1", ("10.42.0.100", "10.42.0.149"), &database);
    let srv_b = lab.add_host("srvb", "10.42.0.2");
    let b = Server::start(&mut lab, &srv_b, "eth0", &dir.path().join("b"), "10.42.0.2", ("10.42.0.150", "10.42.0.199"), &database);
    let nic = web1_nic(&mut lab, "web1");
    let lease = common::dhcp_lease(&nic, dir.path()).unwrap_or_else(|| panic!("no lease:\n{}\n{}", a.log(), b.log()));
    let started = Instant::now();
    const ROUNDS: u64 = 100;
    for round in 1..=ROUNDS {
        let (cfg_a, cfg_b) = std::thread::scope(|scope| {
            let ha = scope.spawn(|| file(&nic, &a));
            let hb = scope.spawn(|| file(&nic, &b));
            (ha.join().expect("thread"), hb.join().expect("thread"))
        });
        let installs: Vec<(&Server, &String)> = [(&a, &cfg_a), (&b, &cfg_b)].into_iter().filter(|(_, c)| c.contains("nixos-pxe.token=")).collect();
        assert_eq!(installs.len(), 1, "round {round}: one install entry (lease {lease}):\n{cfg_a}\n---\n{cfg_b}");
        let other = if installs[0].0.address == a.address { &cfg_b } else { &cfg_a };
        assert!(other.contains("no decision for") && !other.contains("linux "), "round {round}:\n{other}");
        let (attempt, token) = install_args(installs[0].1);
        assert_eq!(attempt, round, "round {round}");
        // It installs (reporting to the other server, for good measure), then is reinstalled.
        let to = if installs[0].0.address == a.address { &b } else { &a };
        let (code, body) = post(&nic, to, &report(attempt, &token, "installed"));
        assert_eq!(code, 200, "round {round}: {body}");
        if round < ROUNDS {
            common::run(Command::new(BIN).args(["fleet", "reinstall", "web1", "--database", &database]));
        }
        assert!(started.elapsed() < Duration::from_secs(600), "100 rounds within 10 minutes");
    }
    let row = status(&database, &a.dir.join("state")).expect("status");
    assert_eq!((row["state"].as_str(), row["attempt"]["number"].as_u64()), (Some("installed"), Some(ROUNDS)), "{row}");
    // Every attempt installed, none replaced: no second attempt was ever handed out in a round.
    let mut c = postgres::Client::connect(&database, postgres::NoTls).expect("connect");
    let counts = c.query_one("SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'installed') FROM attempts WHERE host = 'web1'", &[]).expect("count");
    assert_eq!((counts.get::<_, i64>(0), counts.get::<_, i64>(1)), (ROUNDS as i64, ROUNDS as i64));
    eprintln!("{ROUNDS} rounds in {:?}", started.elapsed());
}

#[test]
fn postgres_stopped_and_started_mid_install_loses_nothing() {
    let cluster = Cluster::start("mid-install", true).unwrap_or_else(|e| panic!("{e}"));
    let database = cluster.create_database("fleet").expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = Lab::new("pg-away");
    let ns = lab.ns.clone();
    let s = Server::start(&mut lab, &ns, "br0", &dir.path().join("a"), "10.42.0.1", ("10.42.0.100", "10.42.0.199"), &database);
    let nic = web1_nic(&mut lab, "web1");
    common::dhcp_lease(&nic, dir.path()).unwrap_or_else(|| panic!("no lease:\n{}", s.log()));
    let (attempt, token) = install_args(&file(&nic, &s));
    assert_eq!(post(&nic, &s, &report(attempt, &token, "started")).0, 200);
    cluster.stop_server("immediate").expect("stop");
    // serve answers: the host's file waits, reports are kept (202), TFTP serves files.
    let wait = file(&nic, &s);
    assert!(wait.contains("no decision for") && !wait.contains("linux "), "{wait}");
    for event in ["step", "installed"] {
        let (code, body) = post(&nic, &s, &report(attempt, &token, event));
        assert_eq!(code, 202, "{event}: {body}");
    }
    let tftp = dir.path().join("kernel");
    common::run(Command::new("ip").args(["netns", "exec", &nic, "atftp", "-g", "-r", "nixos/bzImage", "-l"]).arg(&tftp).arg("10.42.0.1"));
    assert_eq!(std::fs::read(&tftp).expect("kernel"), b"a kernel");
    // fleet status says the database is away and how many reports serve keeps.
    let err = status(&database, &s.dir.join("state")).unwrap_err();
    assert!(err.contains("cannot connect") && err.contains("keeps 2 report(s)"), "{err}");
    let log = s.log();
    assert!(log.contains("fleet: the store cannot be reached"), "{log}");
    cluster.start_server().expect("start");
    // Without any request, serve writes the kept reports within its interval.
    let deadline = Instant::now() + Duration::from_secs(30);
    let row = loop {
        let row = status(&database, &s.dir.join("state"));
        if let Ok(row) = &row
            && row["state"] == "installed"
        {
            break row.clone();
        }
        assert!(Instant::now() < deadline, "the kept reports were not written: {row:?}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!((row["attempt"]["number"].as_u64(), row["attempt"]["reports"].as_u64()), (Some(1), Some(3)), "{row}");
    assert!(file(&nic, &s).contains("web1 generation 1 is installed"));
    assert!(s.log().contains("fleet: the store is back"), "{}", s.log());
}

/// `nixos-pxe fleet copy`: a SQLite state into an empty database and back into an empty state
/// directory, `fleet status` the same on all three; a non-empty target refused and unchanged.
#[test]
fn fleet_copy_moves_a_state_both_ways_and_refuses_a_non_empty_target() {
    let cluster = Cluster::start("copy", false).unwrap_or_else(|e| panic!("{e}"));
    let database = cluster.create_database("fleet").expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let (from, back) = (dir.path().join("from"), dir.path().join("back"));
    std::fs::create_dir(&from).expect("state directory");
    {
        use nixos_pxe_installer::fleet::store::{HandOut, Store};
        let store = nixos_pxe_installer::fleet::sqlite::SqliteStore::open(&from).expect("state");
        let mac = "52:54:00:12:34:56".parse().expect("mac");
        let out = HandOut { host: "web1".into(), generation: 1, attempt: 1, token_hash: nixos_pxe_installer::fleet::token::hash("t"), mac, replaces: None };
        store.hand_out(&out).expect("hand out");
        store.reinstall("web1").expect("reinstall");
    }
    let copy = |to: &str, state: &Path| Command::new(BIN).args(["fleet", "copy", "--to", to, "--database", &database, "--state-dir"]).arg(state).output().expect("fleet copy");
    let out = copy("database", &from);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("copied 1 hosts, 1 attempts, 0 reports, 0 bindings"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = copy("state-dir", &back);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sqlite_status = |state: &Path| common::run(Command::new(BIN).args(["fleet", "status", "--json", "--state-dir"]).arg(state));
    // The pending attempt's duration runs on with the clock: left out of the comparison.
    fn still(mut v: Value) -> Value {
        match &mut v {
            Value::Array(rows) => rows.iter_mut().for_each(|r| *r = still(r.take())),
            Value::Object(row) => {
                if let Some(attempt) = row.get_mut("attempt").and_then(Value::as_object_mut) {
                    attempt.remove("duration_s");
                }
            }
            _ => {}
        }
        v
    }
    let from_json = still(serde_json::from_str(&sqlite_status(&from)).expect("json"));
    let back_json = still(serde_json::from_str(&sqlite_status(&back)).expect("json"));
    let db_json = still(status(&database, &from).expect("status"));
    assert_eq!(from_json, back_json);
    assert_eq!(from_json[0], db_json);
    assert_eq!(db_json["reinstall_requested"], true, "{db_json}");
    // Again into the same database: refused, nothing changed.
    let out = copy("database", &from);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not empty (1 hosts, 1 attempts"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(still(status(&database, &from).expect("status")), db_json);
}
