//! The fleet's power commands against a real Redfish implementation: sushy-tools' emulator (PyPI,
//! dev/sushy-tools.txt) with its fake driver, over HTTPS with certificates made here by openssl,
//! HTTP Basic authentication, and its external notifier, in a network namespace of the test
//! (loopback only). Each test checks the exact requests the emulator logged, the states its
//! notifier was sent, what the fleet's state recorded and what the command said:
//!
//! - `power_status_on_cycle_off_make_the_calls_their_dry_run_shows_and_are_recorded`
//! - `reinstall_power_cycle_boots_from_the_network_once_marks_and_resets`
//! - `apply_cycles_the_hosts_whose_generation_is_ahead_and_all_needs_a_yes`
//! - `power_and_reinstall_record_into_the_database_with_database`: `--database`, as `fleet status`
//!   and `reinstall` take it: the actions and the mark go to PostgreSQL, no state directory needed
//! - `failures_name_the_host_and_the_bmc_and_change_nothing`: a bad password, an unreachable BMC,
//!   an override the BMC did not take, a certificate that is not the one configured (by file and
//!   by fingerprint), a Redfish error, a BMC with two systems and no systemId.

mod common;

use common::bmc::{Emulator, FakeSystem, fingerprint, make_certificate};
use common::{Lab, root};
use nixos_pxe_installer::fleet::sqlite::SqliteStore;
use nixos_pxe_installer::fleet::store::{Event, FleetHost, HandOut, Report, Store};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nixos-pxe");
const UUID_DB7: &str = "0d070000-0000-4000-8000-00000000db07";
const UUID_WEB1: &str = "0e010000-0000-4000-8000-00000000e001";
const USER: &str = "fleet-admin";
const PASSWORD: &str = "correct horse battery staple";
/// The emulator; the one that refuses power-off (a Redfish error) is on PORT + 100.
const PORT: u16 = 8443;

/// One test's world: a namespace with the emulator(s), the configuration, the state directory.
struct World {
    lab: Lab,
    dir: tempfile::TempDir,
    emulator: Emulator,
    config: PathBuf,
    state: PathBuf,
}

fn preflight() {
    let id = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(String::from_utf8_lossy(&id.stdout), "0\n", "this test needs root for network namespaces (CI runs as root)");
    for program in ["/usr/bin/openssl", "/usr/bin/python3"] {
        assert!(Path::new(program).exists(), "{program} missing: run dev/install-deps.sh test");
    }
}

impl World {
    /// The emulator with db7 (off) and web1 (on), and a fleet whose hosts reach it in every way
    /// the tests need; `generation` is db7's wanted generation.
    fn new(tag: &str, db7_generation: u32, extra_emulator: bool) -> World {
        preflight();
        let mut lab = Lab::new(tag);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (cert, key) = make_certificate(d, "bmc", "127.0.0.1");
        let (other, _) = make_certificate(d, "other", "127.0.0.1");
        std::fs::write(d.join("password"), format!("{PASSWORD}\n")).expect("password");
        std::fs::write(d.join("wrong-password"), "Tr0ub4dor&3\n").expect("password");
        let ns = lab.ns.clone();
        let systems = [
            FakeSystem { uuid: UUID_DB7, name: "db7", power: "Off", mac: "52:54:00:00:0d:07" },
            FakeSystem { uuid: UUID_WEB1, name: "web1", power: "On", mac: "52:54:00:00:0e:01" },
        ];
        let emulator = Emulator::start(&mut lab, &ns, d, PORT, &cert, &key, USER, PASSWORD, &systems, "", true);
        if extra_emulator {
            Emulator::start(&mut lab, &ns, d, PORT + 100, &cert, &key, USER, PASSWORD, &systems[..1], "SUSHY_EMULATOR_DISABLE_POWER_OFF = True", true);
        }
        let fp = fingerprint(&cert);
        let config = d.join("fleet.nix");
        let host = |name: &str, n: u8, bmc: &str| format!("  fleet.hosts.{name} = {{ macs = [ \"52:54:00:00:01:{n:02x}\" ]; target.flake = \"/f#{name}\"; bmc = {{ {bmc} }}; }};\n");
        let mut text = format!(
            "{{\n  nfsroot.bootLoader = {{ efinetDHCPInterface = \"auto\"; linuxPnPInterface = \"auto\"; }};\n  \
             fleet.bmc = {{ user = \"{USER}\"; passwordFile = \"{pw}\"; }};\n",
            pw = d.join("password").display()
        );
        let at = format!("address = \"127.0.0.1:{PORT}\";");
        text.push_str(&format!(
            "  fleet.hosts.db7 = {{ macs = [ \"52:54:00:00:0d:07\" ]; target.flake = \"/f#db7\"; generation = {db7_generation}; bmc = {{ {at} systemId = \"{UUID_DB7}\"; certificate = {}; }}; }};\n",
            cert.display()
        ));
        text.push_str(&host("web1", 1, &format!("{at} systemId = \"{UUID_WEB1}\"; fingerprint = \"{fp}\";")));
        text.push_str(&host("gone", 2, &format!("address = \"127.0.0.1:9\"; fingerprint = \"{fp}\";")));
        text.push_str(&host("wrongpw", 3, &format!("{at} systemId = \"{UUID_DB7}\"; fingerprint = \"{fp}\"; passwordFile = \"{}\";", d.join("wrong-password").display())));
        text.push_str(&host("httpboot", 4, &format!("{at} systemId = \"{UUID_DB7}\"; fingerprint = \"{fp}\"; bootTarget = \"uefi-http\";")));
        text.push_str(&host("impostor", 5, &format!("{at} systemId = \"{UUID_DB7}\"; certificate = {};", other.display())));
        text.push_str(&host("pinnedother", 6, &format!("{at} systemId = \"{UUID_DB7}\"; fingerprint = \"{}\";", fingerprint(&other))));
        text.push_str(&host("nosystem", 7, &format!("{at} fingerprint = \"{fp}\";")));
        text.push_str(&host("nooff", 8, &format!("address = \"127.0.0.1:{}\"; systemId = \"{UUID_DB7}\"; fingerprint = \"{fp}\";", PORT + 100)));
        text.push_str("  fleet.hosts.nobmc = { macs = [ \"52:54:00:00:01:09\" ]; target.flake = \"/f#nobmc\"; };\n}\n");
        std::fs::write(&config, text).expect("config");
        let state = d.join("state");
        std::fs::create_dir_all(&state).expect("mkdir");
        let store = SqliteStore::open(&state).expect("state");
        let hosts: Vec<FleetHost> = ["db7", "web1", "httpboot", "wrongpw", "gone", "impostor"]
            .iter()
            .enumerate()
            .map(|(i, n)| FleetHost { name: n.to_string(), macs: vec![format!("52:54:00:00:02:{i:02x}").parse().expect("mac")], generation: 1 })
            .collect();
        store.sync_fleet(&hosts).expect("sync");
        World { lab, dir, emulator, config, state }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `nixos-pxe fleet ARGS...` in the namespace: (success, stdout, stderr).
    fn fleet(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lab.ns, BIN, "fleet"])
            .args(args)
            .current_dir(root())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run nixos-pxe");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// A power command with this world's configuration and state.
    fn power(&self, hosts: &str, action: &str, more: &[&str]) -> (bool, String, String) {
        let mut args = vec!["power", "--config", self.config.to_str().expect("utf8"), "--source", "static", "--state-dir", self.state.to_str().expect("utf8")];
        args.extend(more);
        args.extend([hosts, action]);
        self.fleet(&args)
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open_existing(&self.state).expect("state")
    }

    fn status(&self, host: &str) -> Value {
        let (ok, out, err) = self.fleet(&["status", "--json", "--state-dir", self.state.to_str().expect("utf8"), "--config", self.config.to_str().expect("utf8"), "--source", "static"]);
        assert!(ok, "{err}");
        let rows: Vec<Value> = serde_json::from_str(&out).expect("json");
        rows.into_iter().find(|r| r["host"] == host).unwrap_or_else(|| panic!("no {host} in fleet status"))
    }
}

/// (METHOD, path) of each call a dry run prints for the emulator at PORT, the wait's repeated
/// GET once.
fn dry_run_calls(text: &str) -> Vec<String> {
    let base = format!("https://127.0.0.1:{PORT}");
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let method = words.next()?;
            let url = words.next()?;
            (["GET", "PATCH", "POST"].contains(&method) && url.starts_with(&base)).then(|| format!("{method} {}", &url[base.len()..]))
        })
        .collect()
}

/// Requests as `METHOD PATH` without their status, consecutive repeats of a GET (the wait) once.
fn calls_made(requests: &[String]) -> Vec<String> {
    let mut calls: Vec<String> = Vec::new();
    for r in requests {
        let call = r.rsplit_once(' ').map_or(r.as_str(), |(c, _)| c).to_string();
        if call.starts_with("GET ") && calls.last() == Some(&call) {
            continue;
        }
        calls.push(call);
    }
    calls
}

fn system(uuid: &str) -> String {
    format!("/redfish/v1/Systems/{uuid}")
}

#[test]
fn power_status_on_cycle_off_make_the_calls_their_dry_run_shows_and_are_recorded() {
    let w = World::new("bmc-power", 1, false);
    let e = &w.emulator;
    let db7 = system(UUID_DB7);
    let reset = format!("{db7}/Actions/ComputerSystem.Reset");

    // status: read, not recorded.
    let (ok, out, err) = w.power("db7,web1", "status", &[]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("db7: off (the Redfish BMC at https://127.0.0.1:{PORT})")) && out.contains("web1: on"), "{out}");
    assert!(w.store().power_actions(None, 10).expect("actions").is_empty(), "status is not an action");
    let seen = e.requests_since(0);
    assert_eq!(
        seen,
        ["GET /redfish/v1/Systems 200".to_string(), format!("GET {db7} 200"), "GET /redfish/v1/Systems 200".to_string(), format!("GET {} 200", system(UUID_WEB1))],
        "each host's BMC asked for its own system only, with the credentials taken"
    );

    // A dry run sends nothing and records nothing, and says every call.
    let before = e.requests().len();
    let (ok, dry, err) = w.power("db7", "cycle", &["--dry-run"]);
    assert!(ok, "{err}");
    assert!(dry.starts_with("dry run: no call is made, nothing is recorded."), "{dry}");
    assert!(dry.contains(&format!("POST https://127.0.0.1:{PORT}{reset} {{\"ResetType\":\"ForceRestart\"}} if it is on, {{\"ResetType\":\"On\"}} if it is off")), "{dry}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(e.requests().len(), before, "the dry run reached the BMC");
    assert!(w.store().power_actions(None, 10).expect("actions").is_empty());

    // cycle of a host that is off: On; the dry run's calls are the calls made.
    let before = e.requests().len();
    let started = Instant::now();
    let (ok, out, err) = w.power("db7", "cycle", &[]);
    assert!(ok, "{out}{err}");
    eprintln!("cycle from off: {:.1} s", started.elapsed().as_secs_f64());
    assert!(out.contains("db7: cycle: was off; reset On, now on (action 1 recorded, by root)"), "{out}");
    let made = e.requests_since(before);
    assert_eq!(calls_made(&made), dry_run_calls(&dry), "requests made: {made:?}");
    assert!(made.iter().all(|r| r.ends_with(" 200") || r.ends_with(" 204")), "{made:?}");
    let states = e.wait_notifications(2);
    assert_eq!(states[0]["pending_power"]["power_state"], "On", "the reset asked for: {states:?}");
    assert_eq!(states.last().map(|s| s["power_state"].clone()), Some(Value::from("On")), "{states:?}");

    // cycle of a host that is on: ForceRestart, off then on again.
    let notified = e.notifications().len();
    let (ok, out, err) = w.power("db7", "cycle", &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("db7: cycle: was on; reset Restart, now on (action 2 recorded"), "{out}");
    let states = e.wait_notifications(notified + 2);
    let restart = &states[notified];
    assert_eq!((restart["power_state"].as_str(), restart["pending_power"]["power_state"].as_str()), (Some("Off"), Some("ForceRestart")), "{restart}");

    // off, then on when it is on already: nothing sent.
    let (ok, out, err) = w.power("db7", "off", &[]);
    assert!(ok && out.contains("db7: off: was on; reset ForceOff, now off"), "{out}{err}");
    let (ok, out, err) = w.power("web1", "on", &[]);
    assert!(ok && out.contains("web1: on: was on; no reset needed"), "{out}{err}");
    assert!(!e.requests_since(0).iter().any(|r| r.starts_with(&format!("POST {}", system(UUID_WEB1)))), "web1 was on: no reset");

    // Recorded: who, when, the BMC, every call with its answer; fleet status shows the latest.
    let actions = w.store().power_actions(Some("db7"), 10).expect("actions");
    assert_eq!(actions.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(), ["off", "cycle", "cycle"]);
    let cycle = &actions[1];
    assert_eq!((cycle.requested_by.as_str(), cycle.outcome.as_str()), ("root", "done"));
    assert!(cycle.calls.contains(&format!("POST https://127.0.0.1:{PORT}{reset} {{\"ResetType\":\"ForceRestart\"}} => 204")), "{}", cycle.calls);
    assert!(cycle.finished_at >= cycle.requested_at);
    let status = w.status("db7");
    assert_eq!((status["last_power_action"]["action"].as_str(), status["last_power_action"]["outcome"].as_str()), (Some("off"), Some("done")), "{status}");
    let table = w.fleet(&["status", "--state-dir", w.state.to_str().expect("utf8")]).1;
    assert!(table.contains("db7 power action 3 (off, done): was on; reset ForceOff, now off"), "{table}");
    // The password never appears anywhere the commands wrote.
    let said = format!("{out}{err}{table}{}", actions.iter().map(|a| a.calls.clone()).collect::<String>());
    assert!(!said.contains(PASSWORD), "the password leaked");
}

#[test]
fn reinstall_power_cycle_boots_from_the_network_once_marks_and_resets() {
    let w = World::new("bmc-reinstall", 1, false);
    let e = &w.emulator;
    let db7 = system(UUID_DB7);
    let args = |more: &[&str]| {
        let mut a = vec!["reinstall", "--power-cycle", "--config", w.config.to_str().expect("utf8"), "--source", "static", "--state-dir", w.state.to_str().expect("utf8")];
        a.extend(more);
        a.push("db7");
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |more: &[&str]| w.fleet(&args(more).iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, dry, err) = run(&["--dry-run"]);
    assert!(ok, "{err}");
    assert!(dry.contains("dry run: no call is made, nothing is marked or recorded."), "{dry}");
    let patch = format!("PATCH https://127.0.0.1:{PORT}{db7} {{\"Boot\":{{\"BootSourceOverrideTarget\":\"Pxe\",\"BootSourceOverrideEnabled\":\"Once\"}}}}");
    assert!(dry.contains(&patch), "{dry}");
    assert!(dry.contains("(mark db7 for a reinstall in"), "{dry}");
    assert!(e.requests().is_empty() && !w.store().host("db7", 1).expect("state").reinstall_requested, "the dry run did something");

    let (ok, out, err) = run(&[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("db7: reinstall --power-cycle: was off; boot override Pxe Continuous (the BMC keeps it for every boot, not once: serve sends an installed host to its disk); reset On, now on"), "{out}");
    assert_eq!(calls_made(&e.requests_since(0)), dry_run_calls(&dry));
    assert!(w.store().host("db7", 1).expect("state").reinstall_requested, "the reinstall is marked");
    // The emulator's state, as its notifier was told: the boot device first, then the power.
    let states = e.wait_notifications(3);
    assert_eq!(states[0]["boot_device"], "Pxe", "{states:?}");
    assert_eq!(states[0]["power_state"], "Off", "the override came before the reset: {states:?}");
    assert_eq!(states.last().map(|s| (s["power_state"].clone(), s["boot_device"].clone())), Some(("On".into(), "Pxe".into())), "{states:?}");
    let action = &w.store().power_actions(Some("db7"), 1).expect("actions")[0];
    assert_eq!((action.action.as_str(), action.outcome.as_str()), ("reinstall --power-cycle", "done"));
    assert!(action.calls.contains("BootSourceOverrideTarget=Pxe BootSourceOverrideEnabled=Continuous"), "the read-back is kept: {}", action.calls);
}

/// db7 installed at generation 1 in the store.
fn installed(store: &dyn Store, host: &str, mac: &str) {
    let token = "t".repeat(43);
    let out = HandOut { host: host.into(), generation: 1, attempt: 1, token_hash: nixos_pxe_installer::fleet::token::hash(&token), mac: mac.parse().expect("mac"), replaces: None };
    store.hand_out(&out).expect("hand out");
    let report = Report {
        host: host.into(),
        generation: 1,
        attempt: 1,
        token,
        event: Event::Installed,
        step: None,
        message: None,
        log_tail: None,
        system: Some("/nix/store/x".into()),
        boot_token_hash: None,
        boot_token: None,
    };
    store.report(&report).expect("installed");
}

#[test]
fn apply_cycles_the_hosts_whose_generation_is_ahead_and_all_needs_a_yes() {
    let w = World::new("bmc-apply", 2, false);
    let e = &w.emulator;
    installed(&w.store(), "db7", "52:54:00:00:0d:07");
    installed(&w.store(), "web1", "52:54:00:00:01:01");
    let apply = |more: &[&str]| {
        let mut a = vec!["apply", "--config", w.config.to_str().expect("utf8"), "--source", "static", "--state-dir", w.state.to_str().expect("utf8")];
        a.extend(more);
        w.fleet(&a)
    };
    // `all` without a yes, stdin not a terminal: refused before any call.
    let (ok, _, err) = w.power("all", "cycle", &[]);
    assert!(!ok && err.contains("`fleet power all cycle` would act on every host of the fleet (10: db7, gone, httpboot, impostor, nobmc, nooff, nosystem, pinnedother, web1, wrongpw); add --yes"), "{err}");
    let (ok, _, err) = apply(&["all"]);
    assert!(!ok && err.contains("`fleet apply all` would act on every host of the fleet"), "{err}");
    assert!(e.requests().iter().all(|(m, ..)| m == "GET"), "{:?}", e.requests());
    // Named hosts: only db7's generation (2) is ahead of the installed one (1).
    let (ok, out, err) = apply(&["db7,web1"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("web1: generation 1 is installed already; not power-cycled"), "{out}");
    assert!(out.contains("db7: apply: was off; boot override Pxe Continuous"), "{out}");
    let posts: Vec<String> = e.requests_since(0).into_iter().filter(|r| !r.starts_with("GET")).collect();
    assert_eq!(posts.len(), 2, "db7's PATCH and reset, and nothing to web1: {posts:?}");
    assert!(posts.iter().all(|r| r.contains(UUID_DB7)), "{posts:?}");
    // `all --yes --dry-run`: every host ahead (the ones never installed too), none of them sent.
    let before = e.requests().len();
    let (ok, out, err) = apply(&["--dry-run", "--yes", "all"]);
    assert!(ok, "{err}");
    assert!(out.contains("nobmc: has no BMC in the configuration (fleet.hosts.nobmc.bmc.address): power it by hand"), "{out}");
    assert!(out.contains("gone (the Redfish BMC at https://127.0.0.1:9, as fleet-admin):"), "{out}");
    assert_eq!(e.requests().len(), before);
}

/// With `--database` (several boot servers share the fleet's state in PostgreSQL), `fleet power`
/// and `reinstall --power-cycle` record into that database, as `fleet status --database` reads
/// it, and the reinstall is marked there: the state directory they are given does not exist, so
/// a command that fell back to state.sqlite3 fails.
#[test]
fn power_and_reinstall_record_into_the_database_with_database() {
    use nixos_pxe_installer::fleet::pg_cluster::Cluster;
    use nixos_pxe_installer::fleet::postgres::PostgresStore;
    let w = World::new("bmc-database", 1, false);
    let cluster = Cluster::start("bmc", false).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.create_database("fleet").unwrap_or_else(|e| panic!("{e}"));
    let database = PostgresStore::open(&url, None).expect("database");
    database.sync_fleet(&[FleetHost { name: "db7".into(), macs: vec!["52:54:00:00:0d:07".parse().expect("mac")], generation: 1 }]).expect("sync");
    let nowhere = w.path().join("no-state-directory");
    let nowhere = nowhere.to_str().expect("utf8");
    let config = w.config.to_str().expect("utf8");
    let (ok, out, err) = w.fleet(&["power", "--config", config, "--source", "static", "--state-dir", nowhere, "--database", &url, "db7", "on"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("db7: on:"), "{out}");
    let (ok, out, err) = w.fleet(&["reinstall", "--power-cycle", "--config", config, "--source", "static", "--state-dir", nowhere, "--database", &url, "db7"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("db7: reinstall --power-cycle:"), "{out}");
    let actions = database.power_actions(Some("db7"), 10).expect("actions");
    assert_eq!(actions.iter().map(|a| (a.action.as_str(), a.outcome.as_str())).collect::<Vec<_>>(), vec![("reinstall --power-cycle", "done"), ("on", "done")]);
    assert!(database.host("db7", 1).expect("state").reinstall_requested, "the reinstall is marked in the database");
    assert!(!Path::new(nowhere).exists(), "nothing was written to a state directory");
    assert!(w.store().power_actions(None, 10).expect("actions").is_empty(), "nothing was recorded in the world's state.sqlite3");
    let (ok, out, err) = w.fleet(&["status", "--json", "--state-dir", nowhere, "--database", &url, "--config", config, "--source", "static"]);
    assert!(ok, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).expect("json");
    let db7 = rows.into_iter().find(|r| r["host"] == "db7").expect("db7 in fleet status");
    assert_eq!((db7["last_power_action"]["action"].as_str(), db7["reinstall_requested"].as_bool()), (Some("reinstall --power-cycle"), Some(true)), "{db7}");
}

#[test]
fn failures_name_the_host_and_the_bmc_and_change_nothing() {
    let w = World::new("bmc-fail", 1, true);
    let e = &w.emulator;
    let reinstall = |host: &str| {
        w.fleet(&["reinstall", "--power-cycle", "--config", w.config.to_str().expect("utf8"), "--source", "static", "--state-dir", w.state.to_str().expect("utf8"), host])
    };
    let unchanged = |host: &str, why: &str| {
        assert!(!w.store().host(host, 1).expect("state").reinstall_requested, "{host}: {why}: the reinstall was marked");
        let last = &w.store().power_actions(Some(host), 1).expect("actions")[0];
        assert_eq!(last.outcome.as_str(), "failed", "{host}: {why}");
        assert!(!last.calls.contains("PATCH") && !last.calls.contains("POST"), "{host}: {why}: {}", last.calls);
    };

    // A bad password: 401 on the first request, nothing else sent.
    let before = e.requests().len();
    let (ok, _, err) = reinstall("wrongpw");
    assert!(!ok);
    assert!(
        err.contains(&format!("error: wrongpw: the Redfish BMC at https://127.0.0.1:{PORT} refused the credentials of user \"{USER}\" (GET https://127.0.0.1:{PORT}/redfish/v1/Systems answered HTTP 401 Unauthorized")),
        "{err}"
    );
    assert!(err.contains("wrong-password"), "names the password file: {err}");
    assert_eq!(e.requests_since(before), ["GET /redfish/v1/Systems 401"]);
    unchanged("wrongpw", "a bad password");

    // An unreachable BMC: retried with backoff, bounded, then said.
    let started = Instant::now();
    let (ok, _, err) = reinstall("gone");
    let took = started.elapsed();
    assert!(!ok && err.contains("error: gone: the Redfish BMC at https://127.0.0.1:9 did not answer: GET https://127.0.0.1:9/redfish/v1/Systems: "), "{err}");
    assert!(err.contains("(3 tries); nothing was changed by this request"), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    unchanged("gone", "an unreachable BMC");

    // An override the BMC did not take: UefiHttp without a URI reads back as Pxe in the emulator.
    let before = e.requests().len();
    let (ok, _, err) = reinstall("httpboot");
    assert!(!ok);
    assert!(
        err.contains("error: httpboot: the Redfish BMC at https://127.0.0.1:8443 did not take the one-time boot override: asked for BootSourceOverrideTarget UefiHttp, BootSourceOverrideEnabled Once, it reads back BootSourceOverrideTarget Pxe, BootSourceOverrideEnabled Continuous; nothing was reset"),
        "{err}"
    );
    let made = e.requests_since(before);
    assert!(made.iter().any(|r| r.starts_with("PATCH")) && !made.iter().any(|r| r.starts_with("POST")), "{made:?}");
    assert!(!w.store().host("httpboot", 1).expect("state").reinstall_requested, "not marked");

    // Certificates that are not the configured one: the handshake fails, no request is made.
    let before = e.requests().len();
    let (ok, _, err) = reinstall("impostor");
    assert!(!ok && err.contains("error: impostor: the Redfish BMC at https://127.0.0.1:8443 is not the BMC configured: it presented a certificate (SHA-256 "), "{err}");
    assert!(err.contains("other.pem nor signed by one in it"), "{err}");
    unchanged("impostor", "another certificate");
    let (ok, _, err) = w.power("pinnedother", "cycle", &[]);
    assert!(!ok && err.contains("is not the BMC configured: its certificate's SHA-256 fingerprint is "), "{err}");
    assert!(err.contains("(fleet.hosts.pinnedother.bmc.fingerprint)"), "{err}");
    assert_eq!(e.requests().len(), before, "a request reached the emulator through a refused certificate");

    // A Redfish error: the emulator on PORT + 100 refuses power-off with a Redfish error body.
    let (ok, _, err) = w.power("nooff", "cycle", &[]);
    assert!(ok, "on first: {err}");
    let (ok, _, err) = w.power("nooff", "off", &[]);
    assert!(!ok, "{err}");
    assert!(err.contains(&format!("error: nooff: the Redfish BMC at https://127.0.0.1:{} answered POST https://127.0.0.1:{}/redfish/v1/Systems/{UUID_DB7}/Actions/ComputerSystem.Reset {{\"ResetType\":\"ForceOff\"}} with a Redfish error: HTTP 400 Bad Request: ", PORT + 100, PORT + 100)), "{err}");
    assert!(err.contains("SUSHY_EMULATOR_DISABLE_POWER_OFF"), "the BMC's own message: {err}");

    // Two systems and no systemId: said, nothing sent past the list.
    let (ok, _, err) = w.power("nosystem", "cycle", &[]);
    assert!(!ok && err.contains("it lists 2 systems (") && err.contains("so bmc.systemId must say which one is this host's"), "{err}");
    // No BMC at all.
    let (ok, _, err) = w.power("nobmc", "cycle", &[]);
    assert!(!ok && err.contains("nobmc: has no BMC in the configuration (fleet.hosts.nobmc.bmc.address): power it by hand"), "{err}");
    assert!(w.path().exists());
}
