//! Benchmark of `nixos-pxe serve` with a fleet: 200 simulated hosts boot at the same moment and
//! each goes through what GRUB and the installer do with serve during one install:
//!
//! 1. GRUB fetches the host's configuration over TFTP twice (`[ -s FILE ]`, then `configfile
//!    FILE`), asking blksize 1024 and tsize as GRUB does; the first fetch hands out attempt 1,
//!    the second must carry the same token;
//! 2. the installer POSTs `started`, 7 `step` reports and `installed` to /v1/report over HTTP
//!    (a new connection each, as the installer's client makes);
//! 3. the machine reboots and GRUB fetches the configuration once more: it must say local boot.
//!
//! Every answer is checked (the token, the 200, the local boot); a request that fails or gets
//! another answer counts as failed. After each run the state is read back with `nixos-pxe fleet
//! status --json`: every report answered 200 must be in the store (zero lost reports) and every
//! host installed. Latencies are from sending the request to the whole answer, per request; the
//! whole sequence per host is from its first request to its last answer.
//!
//! Run it as root (it makes network namespaces), on an otherwise idle machine:
//!
//! ```text
//! cargo bench --bench fleet
//! ```
//!
//! Network: two namespaces joined by a veth pair (10.77.0.1 and 10.77.0.2), as benches/serve.rs
//! makes them; the clients are threads of this program inside the client namespace, so no
//! process start is in the figures. serve's state directory is on the disk below target/
//! (state.sqlite3 is fsynced at every commit: that cost is part of the figures). Three runs, each
//! with a fresh state directory. The table goes to stdout and to target/bench-fleet.md.
//!
//! Then the same with the fleet's state in PostgreSQL behind two servers (issue 20): a throwaway
//! PostgreSQL server (Debian's, started with initdb and pg_ctl in a directory below target/, fsync
//! on, src/fleet/pg_cluster.rs), two segments (two pairs of namespaces, the same addresses), a
//! serve with `--database` on each, hosts h000-h099 on the first and h100-h199 on the second, all
//! released at once; three runs, each with a fresh database. Side by side: hand-outs (the first
//! configuration fetch of each host) and reports per second over the run, p50/p99, and the
//! hosts that got more than one attempt (must be 0).

mod common;

use common::{Namespace, Namespaces, SERVER_ADDRESS, SERVER_INTERFACE, Server, ServerSpec, busy_before_run, cpu_time, first_line, percent_since, run, sh};
use nixos_pxe_installer::fleet::pg_cluster::Cluster;
use nixos_pxe_installer::fleet::postgres::PostgresStore;
use nixos_pxe_installer::fleet::sqlite::SqliteStore;
use nixos_pxe_installer::fleet::store::Store;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Hosts booting at once.
const HOSTS: usize = 200;
/// Runs, each with a fresh state.
const RUNS: usize = 3;
/// `step` reports per install (the installer's seven steps).
const STEPS: usize = 7;
/// GRUB's TFTP block size.
const BLKSIZE: usize = 1024;

fn mac(i: usize) -> String {
    format!("52:54:00:01:{:02x}:{:02x}", i / 256, i % 256)
}

fn host(i: usize) -> String {
    format!("h{i:03}")
}

// ---------------------------------------------------------------------------------------------
// The clients

/// A TFTP read of `path` as GRUB makes it (blksize 1024, tsize; lock-step), resending its last
/// packet after 400 ms, then 20 ms longer each time, 40 times at most (GRUB_NET_INTERVAL,
/// GRUB_NET_INTERVAL_ADDITION, GRUB_NET_TRIES): the file's bytes.
fn tftp_get(path: &str) -> Result<Vec<u8>, String> {
    let server: SocketAddr = format!("{SERVER_ADDRESS}:69").parse().map_err(|e| format!("{e}"))?;
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    let wait = |tries: u32| Some(Duration::from_millis(400 + 20 * u64::from(tries)));
    socket.set_read_timeout(wait(0)).map_err(|e| e.to_string())?;
    let mut rrq = vec![0, 1];
    for part in [path, "octet", "tsize", "0", "blksize", &BLKSIZE.to_string()] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    let (mut last, mut peer) = (rrq, server);
    socket.send_to(&last, peer).map_err(|e| format!("send: {e}"))?;
    let (mut data, mut expected, mut timeouts) = (Vec::new(), 1u16, 0u32);
    let mut buf = vec![0u8; BLKSIZE + 4];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                timeouts += 1;
                if timeouts >= 40 {
                    return Err(format!("{path}: no answer after {timeouts} timeouts"));
                }
                socket.set_read_timeout(wait(timeouts)).map_err(|e| e.to_string())?;
                socket.send_to(&last, peer).map_err(|e| format!("send: {e}"))?;
                continue;
            }
            Err(e) => return Err(format!("recv: {e}")),
        };
        let packet = &buf[..n];
        match u16::from_be_bytes([packet[0], packet[1]]) {
            // OACK: acknowledged with block 0.
            6 => {
                peer = from;
                last = vec![0, 4, 0, 0];
            }
            3 => {
                let block = u16::from_be_bytes([packet[2], packet[3]]);
                peer = from;
                if block == expected {
                    data.extend_from_slice(&packet[4..]);
                    expected = expected.wrapping_add(1);
                }
                last = vec![0, 4, packet[2], packet[3]];
                if block == expected.wrapping_sub(1) && packet.len() - 4 < BLKSIZE {
                    socket.send_to(&last, peer).map_err(|e| format!("send: {e}"))?;
                    return Ok(data);
                }
            }
            5 => return Err(format!("{path}: TFTP error {}", String::from_utf8_lossy(&packet[4..]))),
            _ => continue,
        }
        socket.send_to(&last, peer).map_err(|e| format!("send: {e}"))?;
    }
}

/// POSTs `body` to /v1/report on a new connection, as the installer does: the HTTP status.
fn post_report(body: &str) -> Result<u16, String> {
    let address: SocketAddr = format!("{SERVER_ADDRESS}:80").parse().map_err(|e| format!("{e}"))?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    let request = format!(
        "POST /v1/report HTTP/1.1\r\nHost: {SERVER_ADDRESS}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok()).ok_or_else(|| format!("not an HTTP answer: {text:.80}"))
}

/// What one host saw.
#[derive(Default)]
struct HostRun {
    tftp: Vec<Duration>,
    http: Vec<Duration>,
    whole: Option<Duration>,
    failures: Vec<String>,
    /// Reports serve answered 200.
    accepted: usize,
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

/// (attempt, token) of an install entry.
fn install_args(cfg: &str) -> Option<(u32, String)> {
    let arg = |name: &str| cfg.split_whitespace().find_map(|w| w.strip_prefix(name)).map(|v| v.trim_end_matches(';').to_string());
    Some((arg("nixos-pxe.attempt=")?.parse().ok()?, arg("nixos-pxe.token=")?))
}

/// One host's install, start to end.
fn one_host(i: usize) -> HostRun {
    let mut r = HostRun::default();
    let path = format!("nixos-pxe/hosts/mac-{}.cfg", mac(i));
    let start = Instant::now();
    let fetch = |r: &mut HostRun| -> Option<String> {
        let (took, got) = timed(|| tftp_get(&path));
        r.tftp.push(took);
        match got {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => {
                r.failures.push(e);
                None
            }
        }
    };
    let Some((attempt, token)) = fetch(&mut r).as_deref().and_then(install_args) else {
        r.failures.push(format!("{}: no install entry", host(i)));
        return r;
    };
    if fetch(&mut r).as_deref().and_then(install_args) != Some((attempt, token.clone())) {
        r.failures.push(format!("{}: the second fetch is another attempt", host(i)));
    }
    let events = std::iter::once(("started", String::new()))
        .chain((1..=STEPS).map(|k| ("step", format!("step{k}"))))
        .chain(std::iter::once(("installed", String::new())));
    for (event, step) in events {
        let body = json!({
            "host": host(i), "generation": 1, "attempt": attempt, "token": token, "event": event, "step": step,
            "message": format!("{event} {step}"), "system": "/nix/store/bench-system",
        });
        let (took, status) = timed(|| post_report(&body.to_string()));
        r.http.push(took);
        match status {
            Ok(200) => r.accepted += 1,
            Ok(code) => r.failures.push(format!("{}: {event} answered {code}", host(i))),
            Err(e) => r.failures.push(format!("{}: {event}: {e}", host(i))),
        }
    }
    match fetch(&mut r) {
        Some(cfg) if cfg.contains("Boot from the disk") => {}
        Some(_) => r.failures.push(format!("{}: not sent to its disk after installed", host(i))),
        None => {}
    }
    r.whole = Some(start.elapsed());
    r
}

/// All hosts at once: each a thread in its segment's client namespace (host i in
/// `clients[i * clients.len() / HOSTS]`), released together.
fn all_hosts(clients: &[&Namespace]) -> Result<(Vec<HostRun>, Duration), String> {
    let barrier = Barrier::new(HOSTS + 1);
    std::thread::scope(|scope| {
        let handles = (0..HOSTS)
            .map(|i| {
                let barrier = &barrier;
                let client = clients[i * clients.len() / HOSTS];
                std::thread::Builder::new().stack_size(256 << 10).spawn_scoped(scope, move || {
                    let inside = client.enter();
                    barrier.wait();
                    match inside {
                        Ok(()) => one_host(i),
                        Err(e) => HostRun { failures: vec![format!("setns: {e}")], ..HostRun::default() },
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot start a client thread: {e}"))?;
        barrier.wait();
        let start = Instant::now();
        let runs = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| HostRun { failures: vec!["client thread panicked".into()], ..HostRun::default() }))
            .collect();
        Ok((runs, start.elapsed()))
    })
}

// ---------------------------------------------------------------------------------------------
// serve and its fleet

/// The nixos-pxe binary under test: $NIXOS_PXE, else the one `cargo bench` built.
fn nixos_pxe() -> Result<PathBuf, String> {
    let path = std::env::var_os("NIXOS_PXE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nixos-pxe")));
    if path.is_file() { Ok(path) } else { Err(format!("{} is missing: build it, or name one with NIXOS_PXE=", path.display())) }
}

/// examples/fleet/installer.nix on the benchmark's network, its hosts replaced by `HOSTS` hosts.
fn write_config(nixos_pxe: &Path, path: &Path, tftp_root: &Path) -> Result<(), String> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet/installer.nix");
    let text = run(Command::new(nixos_pxe).args(["options", "--source", "static", "--as-config-json", "--config"]).arg(&example))?;
    let mut tree: Value = serde_json::from_str(&text).map_err(|e| format!("options --as-config-json: {e}"))?;
    let server = &mut tree["bootServer"];
    server["address"] = SERVER_ADDRESS.into();
    server["interface"] = SERVER_INTERFACE.into();
    server["subnet"] = "10.77.0.0/24".into();
    server["dhcpRange"] = json!({ "start": "10.77.0.100", "end": "10.77.0.199" });
    server["router"] = SERVER_ADDRESS.into();
    server["nameServers"] = json!([SERVER_ADDRESS]);
    server["tftpRoot"] = tftp_root.display().to_string().into();
    let target = tree["fleet"]["hosts"]["web1"]["target"].clone();
    tree["fleet"]["hosts"] = (0..HOSTS).map(|i| (host(i), json!({ "macs": [mac(i)], "generation": 1, "target": target, "customInstaller": {} }))).collect();
    // Every simulated host is a thread at one address, with no DHCP: the fleet trusts the boot
    // network (what binding costs, a lookup per request, is in benches/load.rs, whose clients
    // each have a lease).
    tree["fleet"]["trustBootNetwork"] = true.into();
    std::fs::write(path, serde_json::to_string_pretty(&tree).unwrap_or_default()).map_err(|e| format!("{}: {e}", path.display()))
}

/// What one run measured.
struct RunResult {
    tftp: Vec<Duration>,
    /// The first configuration fetch of each host: the one that hands its attempt out.
    hand_outs: Vec<Duration>,
    http: Vec<Duration>,
    whole: Vec<Duration>,
    failures: Vec<String>,
    accepted: usize,
    stored: u64,
    installed: usize,
    /// Attempts handed out, all hosts together (one each when nothing went wrong).
    attempts: u64,
    /// Hosts whose latest attempt is not their first.
    repeated: usize,
    wall: Duration,
}

/// Where the fleet's state is in a run.
enum Layout<'a> {
    /// state.sqlite3, one server.
    Sqlite,
    /// A PostgreSQL database (its URL) behind one server per segment.
    Postgres(&'a str),
}

fn one_run(nixos_pxe: &Path, segments: &[&Namespaces], workdir: &Path, n: usize, layout: &Layout) -> Result<RunResult, String> {
    let state = workdir.join(format!("state-{n}"));
    let mut servers = Vec::new();
    for (k, segment) in segments.iter().enumerate() {
        let state = state.join(format!("segment{k}"));
        let mut args: Vec<String> = ["serve", "--config", &workdir.join("fleet.json").display().to_string(), "--dhcp", "off", "--state-dir", &state.display().to_string(), "--http-port", "80", "--per-client", "1000"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Layout::Postgres(url) = layout {
            args.extend(["--database".to_string(), url.to_string()]);
        }
        let spec = ServerSpec { name: "nixos-pxe serve", program: nixos_pxe.display().to_string(), args };
        let log = workdir.join(format!("serve-{n}-{k}.log"));
        let mut server = Server::start(&spec, &segment.server, log.clone())?;
        server.wait_until_ready(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("http: serving") && text.contains("tftp: serving")
        })?;
        servers.push(server);
    }
    let clients: Vec<&Namespace> = segments.iter().map(|s| &s.client).collect();
    let (runs, wall) = all_hosts(&clients)?;
    drop(servers);
    let mut status = Command::new(nixos_pxe);
    status.args(["fleet", "status", "--json", "--state-dir"]).arg(state.join("segment0"));
    if let Layout::Postgres(url) = layout {
        status.args(["--database", url]);
    }
    let status = run(&mut status)?;
    let hosts: Vec<Value> = serde_json::from_str(&status).map_err(|e| format!("fleet status --json: {e}"))?;
    // Every report of every attempt, read from the store itself.
    let store: Box<dyn Store> = match layout {
        Layout::Sqlite => Box::new(SqliteStore::open_existing(&state.join("segment0")).map_err(|e| e.to_string())?),
        Layout::Postgres(url) => Box::new(PostgresStore::open(url, None).map_err(|e| e.to_string())?),
    };
    let mut stored = 0;
    for i in 0..HOSTS {
        stored += store.history(&host(i)).map_err(|e| e.to_string())?.len() as u64;
    }
    let mut result = RunResult {
        tftp: Vec::new(),
        hand_outs: Vec::new(),
        http: Vec::new(),
        whole: Vec::new(),
        failures: Vec::new(),
        accepted: 0,
        stored,
        installed: hosts.iter().filter(|h| h["state"] == "installed").count(),
        attempts: hosts.iter().filter_map(|h| h["attempt"]["number"].as_u64()).sum(),
        repeated: hosts.iter().filter(|h| h["attempt"]["number"].as_u64().is_some_and(|n| n > 1)).count(),
        wall,
    };
    for r in runs {
        result.hand_outs.extend(r.tftp.first().copied());
        result.tftp.extend(r.tftp);
        result.http.extend(r.http);
        result.whole.extend(r.whole);
        result.failures.extend(r.failures);
        result.accepted += r.accepted;
    }
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// The report

fn percentile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn tables(results: &[(&str, RunResult)]) -> String {
    let mut latency = format!(
        "| state | run | {HOSTS} hosts at once | requests | p50 ms | p99 ms | max ms |\n|---|---:|---|---:|---:|---:|---:|\n"
    );
    let mut totals = "| state | run | wall s | hand-outs/s | reports/s | failed requests | reports answered 200 | reports in the store | hosts installed | attempts handed out | hosts with more than one attempt |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n".to_string();
    let mut n = 0;
    let mut last = "";
    for (layout, r) in results {
        n = if *layout == last { n + 1 } else { 1 };
        last = layout;
        for (what, values) in [
            ("hand-out: a host's first config over TFTP (blksize 1024, as GRUB)", &r.hand_outs),
            ("per-host config over TFTP, all three fetches", &r.tftp),
            ("report over HTTP (a connection each)", &r.http),
            (&format!("one host's whole sequence ({} configs, {} reports)", 3, STEPS + 2) as &str, &r.whole),
        ] {
            latency += &format!("| {layout} | {n} | {what} | {} | {} | {} | {} |\n", values.len(), ms(percentile(values, 0.5)), ms(percentile(values, 0.99)), ms(percentile(values, 1.0)));
        }
        let wall = r.wall.as_secs_f64();
        totals += &format!(
            "| {layout} | {n} | {wall:.2} | {:.0} | {:.0} | {} | {} | {} | {}/{HOSTS} | {} | {} |\n",
            r.hand_outs.len() as f64 / wall,
            r.http.len() as f64 / wall,
            r.failures.len(),
            r.accepted,
            r.stored,
            r.installed,
            r.attempts,
            r.repeated
        );
    }
    format!("{latency}\n{totals}")
}

fn machine_description() -> String {
    let machine = common::cores_and_cpu();
    let disk = first_line(Command::new("sh").args(["-c", "df --output=source,fstype target | tail -1 | tr -s ' '"]).current_dir(env!("CARGO_MANIFEST_DIR")));
    format!("{machine}, Linux {}; veth pair between two network namespaces; state directory on {disk}", first_line(Command::new("uname").arg("-r")))
}

fn bench() -> Result<String, String> {
    if run(Command::new("id").arg("-u"))?.trim() != "0" {
        return Err("run it as root: the benchmark makes network namespaces".into());
    }
    sh("command -v ip >/dev/null").map_err(|_| "ip (iproute2) is missing".to_string())?;
    let started = Instant::now();
    let busy_before = busy_before_run();
    let cpu_before = cpu_time();
    let nixos_pxe = nixos_pxe()?;
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    let workdir = tempfile::Builder::new().prefix("bench-fleet-").tempdir_in(&target).map_err(|e| format!("cannot make a directory in target/: {e}"))?;
    let tftp_root = workdir.path().join("tftp");
    std::fs::create_dir_all(tftp_root.join("nixos")).map_err(|e| e.to_string())?;
    std::fs::write(tftp_root.join("nixos/bzImage"), b"not fetched here").map_err(|e| e.to_string())?;
    write_config(&nixos_pxe, &workdir.path().join("fleet.json"), &tftp_root)?;
    let namespaces = Namespaces::create(workdir.path())?;
    let second = Namespaces::create_segment(workdir.path(), "b", 24)?;
    let mut results = Vec::new();
    for n in 1..=RUNS {
        let result = one_run(&nixos_pxe, &[&namespaces], workdir.path(), n, &Layout::Sqlite)?;
        if let Some(first) = result.failures.first() {
            eprintln!("bench: sqlite run {n}: {} requests failed; the first: {first}", result.failures.len());
        }
        results.push(("SQLite, one server", result));
    }
    // The database's directory beside the SQLite states (the same disk), fsync on; the server
    // runs as the postgres user, who must reach it.
    std::fs::set_permissions(workdir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(|e| e.to_string())?;
    let cluster = Cluster::start_in(workdir.path(), "bench", true)?;
    for n in 1..=RUNS {
        let url = cluster.create_database(&format!("fleet{n}"))?;
        let result = one_run(&nixos_pxe, &[&namespaces, &second], workdir.path(), RUNS + n, &Layout::Postgres(&url))?;
        if let Some(first) = result.failures.first() {
            eprintln!("bench: postgres run {n}: {} requests failed; the first: {first}", result.failures.len());
        }
        results.push(("PostgreSQL, two servers", result));
    }
    let _ = cluster.stop_server("fast");
    let lost: usize = results.iter().map(|(_, r)| r.accepted.saturating_sub(r.stored as usize)).sum();
    let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    Ok(format!(
        "Measured by `cargo bench --bench fleet` on {date} in {:.0} s.\n\
         Machine: {}.\n\
         CPU busy in the second before the run: {busy_before:.0}%; CPU time stolen by the hypervisor during it: {:.1}%.\n\
         {HOSTS} simulated hosts released at once, {RUNS} runs with a fresh state each for each layout (PostgreSQL: two segments, h000-h099 on one server, h100-h199 on the other, one database); latency from a request's start to its whole answer; per second: over the run's wall time. \
         Reports answered 200 but missing from the store: {lost}.\n\n{}",
        started.elapsed().as_secs_f64(),
        machine_description(),
        percent_since(&cpu_before, |t| t.stolen),
        tables(&results)
    ))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and must not start it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/fleet.rs: run it with `cargo bench --bench fleet` (as root)");
        return;
    }
    common::print_and_keep(bench(), "bench-fleet.md");
}
