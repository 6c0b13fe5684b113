//! Benchmark of the DHCP of `nixos-pxe serve` with its leases persisted, against Kea and dnsmasq
//! with theirs, side by side in one run (issue 17: "with persisted leases serve must stay at or
//! ahead of Kea's persisted figures").
//!
//! ISC's `perfdhcp` (Debian's `kea-admin`) plays a relay agent: every packet carries its address
//! as giaddr, so one network namespace stands for 900 clients (`-R 900`, MACs from
//! 52:54:00:aa:00:00 on), each exchange a whole DISCOVER-OFFER-REQUEST-ACK, 10,000 exchanges a
//! second for 10 seconds (`-r 10000 -p 10`). A server answers a relayed request to giaddr:67,
//! where perfdhcp listens. Each server in turn, on the same configuration:
//!
//! - `nixos-pxe serve --dhcp authoritative`, its leases in `<state-dir>/leases` (one line appended
//!   per change, not synced);
//! - Kea (`kea-dhcp4`) from the kea-dhcp4.json `nixos-pxe render` writes, its memfile lease
//!   database persisted to a CSV file (one line appended per change, not synced; lfc-interval
//!   3600 as rendered);
//! - dnsmasq from the dnsmasq.conf `render` writes, its lease file (rewritten on every change);
//!   as rendered it pings every address before it offers it to a new client, and answers
//!   nothing while it waits for that echo: so it also runs with `--no-ping`, as serve and Kea
//!   work.
//!
//! Every server logs as it does when deployed (serve: one line per answer; Kea: one INFO line per
//! lease offered and per lease given; dnsmasq: `log-dhcp`, as rendered) into a file. The
//! lease files and state directories are on the disk below target/, each server's fresh in every
//! round. Rounds go round the servers (serve, Kea, dnsmasq, dnsmasq --no-ping; then Kea first,
//! ...) so that a busy moment of the shared machine does not fall on one server only; the table
//! shows the median of the rounds. The pool is a /22 (10.77.0.16-10.77.3.254, 1,007 addresses), enough for
//! the 900 clients.
//!
//! Figures, from perfdhcp: exchanges/s is its "Rate" (4-way exchanges completed per second);
//! drops are requests not answered within its drop time (1 s), including the few still in flight
//! when it stops; delays are from a request's sending to its answer's arrival, the average as
//! perfdhcp gives it and the 99th percentile from its timestamps of every answered request
//! (`-x t`). Also the server's CPU time during the run (/proc/PID/stat) and how many of the 900
//! MACs its lease file holds afterwards.
//!
//! Run it as root (network namespaces), on an otherwise idle machine, after installing
//! `kea-admin` (perfdhcp; dev/packages.txt, group `bench`), `kea-dhcp4-server` and
//! `dnsmasq-base` (group `test`):
//!
//! ```text
//! dev/install-deps.sh bench
//! cargo bench --bench dhcp                  # 3 rounds: about 3 minutes
//! cargo bench --bench dhcp -- --rounds 5
//! ```
//!
//! `NIXOS_PXE=/path/to/nixos-pxe` measures another build of serve; `NIXOS_PXE_BASELINE=/path`
//! measures a second build beside it (a row of its own: before and after a change). Network: two namespaces joined
//! by a veth pair (10.77.0.1/22 and 10.77.0.2/22, benches/common), removed with everything in
//! them at the end, on failure and on Ctrl-C. The tables go to stdout and target/bench-dhcp.md.
//! `cargo test --all-targets` runs this program without `--bench`: it only says how to run it.

mod common;

use common::{
    CLIENT_ADDRESS, CLIENT_INTERFACE, Namespace, Namespaces, SERVER_ADDRESS, SERVER_INTERFACE, Server, ServerSpec, busy_before_run, cpu_time,
    first_line, percent_since, process_cpu, run, sh,
};
use dhcproto::v4::{Decodable, Decoder, DhcpOption, Encodable, Encoder, Message, MessageType, Opcode};
use serde_json::Value;
use std::collections::HashSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Exchanges a second perfdhcp starts.
const RATE: u32 = 10_000;
/// Simulated clients (MACs).
const CLIENTS: u32 = 900;
/// Seconds perfdhcp sends for.
const SECONDS: u32 = 10;
const DEFAULT_ROUNDS: usize = 3;
/// The first simulated client's MAC; perfdhcp varies its last two bytes.
const BASE_MAC: &str = "52:54:00:aa:00:00";
const SUBNET: &str = "10.77.0.0/22";
const PREFIX: u8 = 22;
const RANGE: (&str, &str) = ("10.77.0.16", "10.77.3.254");
const SERVE: &str = "nixos-pxe serve";
/// Another build of serve measured beside this one when NIXOS_PXE_BASELINE names it.
const BASELINE: &str = "nixos-pxe serve (NIXOS_PXE_BASELINE)";
/// Programs the benchmark runs besides nixos-pxe.
const PROGRAMS: &[&str] = &["perfdhcp", "kea-dhcp4", "dnsmasq", "ip"];

// ---------------------------------------------------------------------------------------------
// The servers

/// The nixos-pxe binary under test: $NIXOS_PXE, else the one `cargo bench` built.
fn nixos_pxe() -> Result<PathBuf, String> {
    let path = std::env::var_os("NIXOS_PXE").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nixos-pxe")), PathBuf::from);
    if path.is_file() { Ok(path) } else { Err(format!("{} is missing: build it, or name one with NIXOS_PXE=", path.display())) }
}

/// The benchmark's files: the configuration every server is made from, what `render` wrote from
/// it, and per round and server a lease file or state directory and a log.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn create() -> Result<Workspace, String> {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        let dir = tempfile::Builder::new().prefix("bench-dhcp-").tempdir_in(&target).map_err(|e| format!("cannot make a directory in target/: {e}"))?;
        let w = Workspace { dir };
        std::fs::create_dir_all(w.tftp_root()).map_err(|e| format!("{}: {e}", w.tftp_root().display()))?;
        std::fs::write(w.config(), w.config_text()).map_err(|e| format!("{}: {e}", w.config().display()))?;
        Ok(w)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("bench.nix")
    }

    fn tftp_root(&self) -> PathBuf {
        self.path().join("tftp")
    }

    fn rendered(&self) -> PathBuf {
        self.path().join("rendered")
    }

    /// A file or directory of one server in one round.
    fn of(&self, server: &str, round: usize, what: &str) -> PathBuf {
        self.path().join(format!("{}-{round}-{what}", server.replace(' ', "-")))
    }

    fn config_text(&self) -> String {
        format!(
            "{{ bootServer = {{ address = \"{SERVER_ADDRESS}\"; interface = \"{SERVER_INTERFACE}\"; subnet = \"{SUBNET}\"; \
             dhcpRange.start = \"{}\"; dhcpRange.end = \"{}\"; router = \"{SERVER_ADDRESS}\"; nameServers = [ \"{SERVER_ADDRESS}\" ]; \
             tftpRoot = \"{}\"; }}; customInstaller.rootDevice = \"/dev/vda\"; }}\n",
            RANGE.0,
            RANGE.1,
            self.tftp_root().display()
        )
    }
}

/// How a server's lease file is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LeaseFormat {
    Serve,
    Kea,
    Dnsmasq,
}

/// What one server is, and where it keeps its leases in a round.
struct Contender {
    name: &'static str,
    format: LeaseFormat,
    /// How its leases are kept, for the table.
    leases_kept: &'static str,
    spec: ServerSpec,
    lease_file: PathBuf,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// serve, this build (`name` SERVE) or another one.
fn serve(name: &'static str, nixos_pxe: &Path, w: &Workspace, round: usize) -> Contender {
    let state = w.of(name, round, "state");
    let mut args = strings(&["serve", "--source", "static", "--config"]);
    args.push(w.config().display().to_string());
    args.extend(strings(&["--dhcp", "authoritative", "--interface", SERVER_INTERFACE, "--http-port", "0", "--state-dir"]));
    args.push(state.display().to_string());
    Contender {
        name,
        format: LeaseFormat::Serve,
        leases_kept: "state-dir/leases, a line appended per change",
        spec: ServerSpec { name, program: nixos_pxe.display().to_string(), args },
        lease_file: state.join("leases"),
    }
}

/// kea-dhcp4 from render's kea-dhcp4.json, its lease file named; its pid and lock files in the
/// round's directory (KEA_PIDFILE_DIR, KEA_LOCKFILE_DIR) instead of the host's /run/kea.
fn kea(w: &Workspace, round: usize) -> Result<Contender, String> {
    let rendered = w.rendered().join("kea-dhcp4.json");
    let text = std::fs::read_to_string(&rendered).map_err(|e| format!("{}: {e}", rendered.display()))?;
    let mut config: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", rendered.display()))?;
    let lease_file = w.of("kea", round, "leases4.csv");
    let database = &mut config["Dhcp4"]["lease-database"];
    database["persist"] = true.into();
    database["name"] = lease_file.display().to_string().into();
    let path = w.of("kea", round, "kea-dhcp4.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap_or_default()).map_err(|e| format!("{}: {e}", path.display()))?;
    let run_dir = w.of("kea", round, "run");
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    Ok(Contender {
        name: "Kea",
        format: LeaseFormat::Kea,
        leases_kept: "memfile, persisted: a CSV line appended per change",
        spec: ServerSpec {
            name: "Kea",
            // env execs kea-dhcp4: the process measured is Kea's.
            program: "env".into(),
            args: vec![
                format!("KEA_PIDFILE_DIR={}", run_dir.display()),
                format!("KEA_LOCKFILE_DIR={}", run_dir.display()),
                "kea-dhcp4".into(),
                "-c".into(),
                path.display().to_string(),
            ],
        },
        lease_file,
    })
}

/// dnsmasq from render's dnsmasq.conf, with the arguments the tests give it so that it leaves
/// the host alone (tests/common `dnsmasq_host_safe_args`): its log to stdout, no pid file, its
/// lease file in the round's directory. --user=root: the TFTP root it also serves is root's.
/// As rendered it pings an address before offering it to a new client (and waits for no answer);
/// `no_ping` leaves that out (--no-ping), as serve and Kea do.
fn dnsmasq(w: &Workspace, round: usize, no_ping: bool) -> Contender {
    let name = if no_ping { "dnsmasq --no-ping" } else { "dnsmasq" };
    let lease_file = w.of(name, round, "dnsmasq.leases");
    let mut args = vec![
        format!("--conf-file={}", w.rendered().join("dnsmasq.conf").display()),
        "--keep-in-foreground".into(),
        "--log-facility=-".into(),
        "--pid-file".into(),
        format!("--dhcp-leasefile={}", lease_file.display()),
        "--user=root".into(),
    ];
    if no_ping {
        args.push("--no-ping".into());
    }
    Contender { name, format: LeaseFormat::Dnsmasq, leases_kept: "lease file, rewritten per change", spec: ServerSpec { name, program: "dnsmasq".into(), args }, lease_file }
}

/// The MACs a server's lease file holds leases for.
fn macs_in_lease_file(format: LeaseFormat, path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let macs: HashSet<&str> = text
        .lines()
        .filter_map(|line| match format {
            // set MAC ADDRESS STATE UNTIL
            LeaseFormat::Serve => line.strip_prefix("set ").and_then(|l| l.split_whitespace().next()),
            // address,hwaddr,client_id,... (a header first)
            LeaseFormat::Kea => line.split(',').nth(1).filter(|m| m.contains(':')),
            // EXPIRY MAC ADDRESS NAME CLIENT-ID
            LeaseFormat::Dnsmasq => line.split_whitespace().nth(1),
        })
        .filter(|m| m.starts_with("52:54:00:aa:"))
        .collect();
    macs.len()
}

// ---------------------------------------------------------------------------------------------
// perfdhcp

/// A relayed DISCOVER from the client namespace (port 67, giaddr = its address), as perfdhcp
/// sends: whether an OFFER came back within 300 ms. The readiness probe; its MAC is not one of
/// perfdhcp's.
fn offers(client: &Namespace) -> bool {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                client.enter().ok()?;
                let socket = UdpSocket::bind((CLIENT_ADDRESS.parse::<Ipv4Addr>().ok()?, 67)).ok()?;
                socket.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
                let giaddr: Ipv4Addr = CLIENT_ADDRESS.parse().ok()?;
                let mut m = Message::new_with_id(0x0b0b_0001, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, giaddr, &[2, 0xbe, 0, 0, 0, 1]);
                m.set_hops(1);
                m.opts_mut().insert(DhcpOption::MessageType(MessageType::Discover));
                let mut out = Vec::new();
                m.encode(&mut Encoder::new(&mut out)).ok()?;
                socket.send_to(&out, (SERVER_ADDRESS, 67)).ok()?;
                let mut buf = [0u8; 1500];
                let (n, _) = socket.recv_from(&mut buf).ok()?;
                let reply = Message::decode(&mut Decoder::new(&buf[..n])).ok()?;
                Some(reply.opcode() == Opcode::BootReply && reply.xid() == 0x0b0b_0001)
            })
            .join()
            .ok()
            .flatten()
            .unwrap_or(false)
    })
}

/// One exchange type's figures (DISCOVER-OFFER or REQUEST-ACK).
#[derive(Default, Clone)]
struct Exchange {
    sent: u64,
    received: u64,
    drops_percent: f64,
    avg_ms: f64,
    p99_ms: f64,
}

/// What perfdhcp reported for one run.
#[derive(Default, Clone)]
struct Perf {
    rate: f64,
    discover_offer: Exchange,
    request_ack: Exchange,
}

/// The value below which a fraction `q` of `sorted` lie (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
}

/// perfdhcp's report: the rate, each exchange's statistics block, and (`-x t`) the sent and
/// received times of every answered request.
fn parse_perfdhcp(out: &str) -> Result<Perf, String> {
    let mut perf = Perf::default();
    let mut section = "";
    let mut delays: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let number = |v: &str| v.split_whitespace().next().and_then(|n| n.parse::<f64>().ok());
    for line in out.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Rate:") {
            perf.rate = number(rest).ok_or_else(|| format!("perfdhcp: cannot read {line:?}"))?;
        } else if line.starts_with("***") {
            section = if line.contains("DISCOVER-OFFER") {
                "DO"
            } else if line.contains("REQUEST-ACK") {
                "RA"
            } else {
                ""
            };
            if line.contains("Timestamps") {
                section = if section == "DO" { "DO-times" } else if section == "RA" { "RA-times" } else { "" };
            }
        } else if let Some(times) = line.strip_prefix("sent / received:") {
            let mut parts = times.split('/').map(|p| p.trim().parse::<f64>());
            if let (Some(Ok(sent)), Some(Ok(received))) = (parts.next(), parts.next()) {
                match section {
                    "DO-times" => delays[0].push((received - sent) * 1000.0),
                    "RA-times" => delays[1].push((received - sent) * 1000.0),
                    _ => {}
                }
            }
        } else if let Some((key, value)) = line.split_once(':') {
            let exchange = match section {
                "DO" => &mut perf.discover_offer,
                "RA" => &mut perf.request_ack,
                _ => continue,
            };
            let Some(v) = number(value) else { continue };
            match key.trim() {
                "sent packets" => exchange.sent = v as u64,
                "received packets" => exchange.received = v as u64,
                "drops ratio" => exchange.drops_percent = v,
                "avg delay" => exchange.avg_ms = v,
                _ => {}
            }
        }
    }
    if perf.discover_offer.sent == 0 {
        return Err(format!("perfdhcp sent nothing, or its report could not be read:\n{}", out.lines().take(40).collect::<Vec<_>>().join("\n")));
    }
    for (exchange, mut times) in [&mut perf.discover_offer, &mut perf.request_ack].into_iter().zip(delays) {
        times.sort_by(f64::total_cmp);
        exchange.p99_ms = percentile(&times, 0.99);
        // No answer at all: perfdhcp prints no drops ratio and no delay ("n/a").
        if exchange.received == 0 && exchange.sent > 0 {
            exchange.drops_percent = 100.0;
            exchange.avg_ms = f64::NAN;
        }
    }
    Ok(perf)
}

/// perfdhcp in the client namespace against the server, within a deadline.
fn perfdhcp(client: &Namespace, dir: &Path) -> Result<String, String> {
    let out_path = dir.join("perfdhcp.out");
    let out = std::fs::File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    let mut command = client.command("perfdhcp");
    command
        .args(["-4", "-r", &RATE.to_string(), "-R", &CLIENTS.to_string(), "-p", &SECONDS.to_string(), "-b", &format!("mac={BASE_MAC}")])
        .args(["-x", "t", "-l", CLIENT_INTERFACE, SERVER_ADDRESS])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| format!("cannot start perfdhcp: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(SECONDS) + 60);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("perfdhcp: {e}"))? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("perfdhcp did not end within a minute after its test period".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    // perfdhcp exits with 3 when requests were dropped: still a result.
    match status.code() {
        Some(0 | 3) => Ok(text),
        _ => {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            }
            Err(format!("perfdhcp failed ({status}): {err}{}", text.lines().take(20).collect::<Vec<_>>().join("\n")))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Runs

/// One server's figures in one round.
struct Sample {
    server: &'static str,
    leases_kept: &'static str,
    round: usize,
    perf: Perf,
    cpu: Duration,
    macs_kept: usize,
    lease_file_bytes: u64,
}

fn one_run(namespaces: &Namespaces, w: &Workspace, contender: Contender, round: usize) -> Result<Sample, String> {
    eprintln!("bench: round {round}: {}", contender.name);
    let log = w.of(contender.name, round, "log");
    let mut server = Server::start(&contender.spec, &namespaces.server, log)?;
    server.wait_until_ready(Duration::from_secs(30), || offers(&namespaces.client))?;
    let dir = w.of(contender.name, round, "perfdhcp");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cpu_before = process_cpu(server.pid());
    let text = perfdhcp(&namespaces.client, &dir)?;
    let cpu = process_cpu(server.pid()).saturating_sub(cpu_before);
    if let Some(status) = server.exited() {
        return Err(format!("{} exited ({status}) during the run:\n{}", contender.name, server.log_text()));
    }
    let perf = parse_perfdhcp(&text).map_err(|e| format!("{}: {e}", contender.name))?;
    // The lease file as the server left it while still running (nothing is lost at exit).
    let macs_kept = macs_in_lease_file(contender.format, &contender.lease_file);
    let lease_file_bytes = std::fs::metadata(&contender.lease_file).map_or(0, |m| m.len());
    drop(server);
    Ok(Sample { server: contender.name, leases_kept: contender.leases_kept, round, perf, cpu, macs_kept, lease_file_bytes })
}

fn render(nixos_pxe: &Path, w: &Workspace) -> Result<(), String> {
    run(Command::new(nixos_pxe).args(["render", "--source", "static", "--config"]).arg(w.config()).arg("--out").arg(w.rendered()))
        .map(drop)
        .map_err(|e| format!("nixos-pxe render (kea-dhcp4.json, dnsmasq.conf): {e}"))
}

// ---------------------------------------------------------------------------------------------
// The report

/// A figure with three decimals, or "–" when there is none (no answer to time).
fn fig(value: f64) -> String {
    if value.is_finite() { format!("{value:.3}") } else { "–".into() }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn summary_table(samples: &[Sample]) -> String {
    let mut table = String::from(
        "| server | leases kept | exchanges/s | DISCOVER-OFFER drops % | REQUEST-ACK drops % | DO avg ms | DO p99 ms | RA avg ms | RA p99 ms | server CPU s | rate ÷ serve's |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut names: Vec<&str> = Vec::new();
    for s in samples {
        if !names.contains(&s.server) {
            names.push(s.server);
        }
    }
    names.sort_by_key(|n| [SERVE, BASELINE, "Kea", "dnsmasq", "dnsmasq --no-ping"].iter().position(|k| k == n));
    let of = |name: &str, f: &dyn Fn(&Sample) -> f64| median(samples.iter().filter(|s| s.server == name).map(f).collect());
    let serve_rate = of(SERVE, &|s| s.perf.rate);
    for name in names {
        let kept = samples.iter().find(|s| s.server == name).map_or("", |s| s.leases_kept);
        let rate = of(name, &|s| s.perf.rate);
        table += &format!(
            "| {name} | {kept} | {rate:.0} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |\n",
            fig(of(name, &|s| s.perf.discover_offer.drops_percent)),
            fig(of(name, &|s| s.perf.request_ack.drops_percent)),
            fig(of(name, &|s| s.perf.discover_offer.avg_ms)),
            fig(of(name, &|s| s.perf.discover_offer.p99_ms)),
            fig(of(name, &|s| s.perf.request_ack.avg_ms)),
            fig(of(name, &|s| s.perf.request_ack.p99_ms)),
            of(name, &|s| s.cpu.as_secs_f64()),
            rate / serve_rate,
        );
    }
    table
}

fn rounds_table(samples: &[Sample]) -> String {
    let mut table = String::from(
        "| round | server | exchanges/s | DO sent | DO drops % | RA sent | RA drops % | DO avg / p99 ms | RA avg / p99 ms | server CPU s | MACs in its lease file | lease file KiB |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in samples {
        let (d, r) = (&s.perf.discover_offer, &s.perf.request_ack);
        table += &format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} / {} | {} / {} | {:.2} | {}/{CLIENTS} | {} |\n",
            s.round,
            s.server,
            s.perf.rate,
            d.sent,
            fig(d.drops_percent),
            r.sent,
            fig(r.drops_percent),
            fig(d.avg_ms),
            fig(d.p99_ms),
            fig(r.avg_ms),
            fig(r.p99_ms),
            s.cpu.as_secs_f64(),
            s.macs_kept,
            s.lease_file_bytes / 1024
        );
    }
    table
}

/// One figure of a sample.
type Figure = dyn Fn(&Sample) -> f64;

/// Whether serve's medians are at or ahead of Kea's: drops and delays no higher, rate no lower.
fn goal(samples: &[Sample]) -> String {
    let of = |name: &str, f: &dyn Fn(&Sample) -> f64| median(samples.iter().filter(|s| s.server == name).map(f).collect());
    let checks: [(&str, &Figure, bool); 7] = [
        ("exchanges/s", &|s| s.perf.rate, true),
        ("DISCOVER-OFFER drops", &|s| s.perf.discover_offer.drops_percent, false),
        ("REQUEST-ACK drops", &|s| s.perf.request_ack.drops_percent, false),
        ("DISCOVER-OFFER average delay", &|s| s.perf.discover_offer.avg_ms, false),
        ("DISCOVER-OFFER p99 delay", &|s| s.perf.discover_offer.p99_ms, false),
        ("REQUEST-ACK average delay", &|s| s.perf.request_ack.avg_ms, false),
        ("REQUEST-ACK p99 delay", &|s| s.perf.request_ack.p99_ms, false),
    ];
    let behind: Vec<&str> = checks
        .iter()
        .filter(|(_, f, higher_is_better)| {
            let (serve, kea) = (of(SERVE, *f), of("Kea", *f));
            if *higher_is_better { serve < kea * 0.99 } else { serve > kea }
        })
        .map(|(what, _, _)| *what)
        .collect();
    if behind.is_empty() {
        "Goal (serve with persisted leases at or ahead of Kea with its lease file): met on every figure above (medians; the rate within 1%).".into()
    } else {
        format!("Goal (serve with persisted leases at or ahead of Kea with its lease file): NOT met on {} (medians).", behind.join(", "))
    }
}

fn machine_description() -> String {
    let machine = common::cores_and_cpu();
    let versions = first_line(Command::new("dpkg-query").args(["-W", "-f=${Package} ${Version}, ", "kea-dhcp4-server", "kea-admin", "dnsmasq-base"]));
    let disk = first_line(Command::new("sh").args(["-c", "df --output=source,fstype target | tail -1 | tr -s ' '"]).current_dir(env!("CARGO_MANIFEST_DIR")));
    format!(
        "{machine}, Linux {}; veth pair between two network namespaces; lease files on {disk}; {}",
        first_line(Command::new("uname").arg("-r")),
        versions.trim_end_matches([',', ' '])
    )
}

fn preflight() -> Result<(), String> {
    if run(Command::new("id").arg("-u"))?.trim() != "0" {
        return Err("run it as root: the benchmark makes network namespaces".into());
    }
    for program in PROGRAMS {
        if sh(&format!("command -v {program} >/dev/null")).is_err() {
            return Err(format!("{program} is missing: dev/install-deps.sh bench (dev/packages.txt lists it)"));
        }
    }
    Ok(())
}

fn rounds_from_args() -> Result<usize, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--rounds") {
        None => Ok(DEFAULT_ROUNDS),
        Some(i) => args.get(i + 1).and_then(|n| n.parse().ok()).filter(|n| *n >= 1).ok_or_else(|| "--rounds needs a number of at least 1".into()),
    }
}

fn bench() -> Result<String, String> {
    preflight()?;
    let rounds = rounds_from_args()?;
    let started = Instant::now();
    let busy_before = busy_before_run();
    let load_before = first_line(Command::new("cat").arg("/proc/loadavg"));
    let cpu_before = cpu_time();
    let nixos_pxe = nixos_pxe()?;
    let w = Workspace::create()?;
    render(&nixos_pxe, &w)?;
    let namespaces = Namespaces::create_with_prefix(w.path(), PREFIX)?;
    let baseline = std::env::var_os("NIXOS_PXE_BASELINE").map(PathBuf::from);
    let mut samples = Vec::new();
    for round in 1..=rounds {
        let mut order: Vec<usize> = (0..5).filter(|n| *n != 1 || baseline.is_some()).collect();
        let len = order.len();
        order.rotate_left((round - 1) % len);
        for which in order {
            let contender = match (which, &baseline) {
                (0, _) => serve(SERVE, &nixos_pxe, &w, round),
                (1, Some(other)) => serve(BASELINE, other, &w, round),
                (2, _) => kea(&w, round)?,
                (3, _) => dnsmasq(&w, round, false),
                _ => dnsmasq(&w, round, true),
            };
            samples.push(one_run(&namespaces, &w, contender, round)?);
        }
    }
    let load_after = first_line(Command::new("cat").arg("/proc/loadavg"));
    let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    Ok(format!(
        "Measured by `cargo bench --bench dhcp -- --rounds {rounds}` on {date} in {:.0} s.\n\
         Machine: {}.\n\
         CPU busy in the second before the run: {busy_before:.0}%; load average before: {}, after: {}; CPU time stolen by the hypervisor during it: {:.1}%.\n\
         perfdhcp -4 -r {RATE} -R {CLIENTS} -p {SECONDS} -b mac={BASE_MAC} -x t -l {CLIENT_INTERFACE} {SERVER_ADDRESS} (relayed: giaddr {CLIENT_ADDRESS}), \
         pool {} - {} ({SUBNET}); each server fresh in each round, rounds round the servers; medians of {rounds} rounds. \
         DO = DISCOVER-OFFER, RA = REQUEST-ACK; drops = requests unanswered within 1 s; delays from perfdhcp's timestamps.\n\n{}\n{}\n\n{}",
        started.elapsed().as_secs_f64(),
        machine_description(),
        load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        load_after.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        percent_since(&cpu_before, |t| t.stolen),
        RANGE.0,
        RANGE.1,
        summary_table(&samples),
        goal(&samples),
        rounds_table(&samples)
    ))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and must not start it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/dhcp.rs: run it with `cargo bench --bench dhcp` (as root; perfdhcp from kea-admin)");
        return;
    }
    common::print_and_keep(bench(), "bench-dhcp.md");
}
