//! Benchmark of `nixos-pxe serve` against the daemons it replaces, side by side in one run, on the
//! same files and with the same client programs:
//!
//! 1. TFTP throughput: `nixos-pxe serve` (TFTP only, `--dhcp off`), tftpd-hpa and dnsmasq (TFTP
//!    only) serving a 12 MiB "kernel" and a 200 MiB "image" of pseudo-random bytes, fetched by
//!    atftp (default options = 512-byte blocks, blksize 1468, blksize 1468 + windowsize 4) and by
//!    curl (default, blksize 1468; curl has no windowsize). Median of 3 runs; the runs go round
//!    the servers (serve, tftpd-hpa, dnsmasq, serve, ...) so a slow moment of the machine does not
//!    fall on one server only.
//!    Also the options each server accepted (its OACK) when asked for blksize and windowsize.
//! 2. 50 atftp clients at once fetching the kernel from each server, with blksize 1468 alone and
//!    with windowsize 4: completed, failed, p50 and p99 time (each client from its own start).
//! 3. NFSv3: `nixos-pxe serve --nfs-root` against nfs-ganesha (from the ganesha.conf `nixos-pxe
//!    render` writes, with rpcbind), the image read by libnfs's userspace `nfs-cp` (the host kernel
//!    has no NFS client). Median of 3 runs, also round the servers.
//!
//! Every received file is compared byte for byte with the original: a wrong or failed transfer
//! stops the run with an error instead of giving a number.
//!
//! Run it as root (it makes network namespaces), on an otherwise idle machine:
//!
//! ```text
//! cargo build --release && cargo bench --bench serve
//! ```
//!
//! `cargo bench` builds the `nixos-pxe` binary with the bench profile (which is the release
//! profile) and this program runs that build (CARGO_BIN_EXE_nixos-pxe); `NIXOS_PXE=/path/to/nixos-pxe`
//! measures another build instead. `cargo test` neither builds nor runs it (bench targets are not
//! test targets); started without `--bench` (`cargo test --benches`) it only says how to run it.
//! A run takes about 6 minutes on the 2-core development machine, most of it the 512-byte-block
//! transfers of the image. The tables go to stdout and to target/bench-serve.md.
//!
//! Network: two namespaces this program makes, `nixos-pxe-bench-srv-<pid>` (10.77.0.1/24 on
//! veth-s) and `nixos-pxe-bench-cli-<pid>` (10.77.0.2/24 on veth-c), joined by a veth pair; nothing
//! is sent anywhere else. Files live in a directory on tmpfs (/dev/shm), so no disk enters the
//! figures. The namespaces, every process in them and that directory are removed when the run
//! ends, fails or panics, and on Ctrl-C or kill by a watcher process (see `Namespaces::create`).

mod common;

use common::{Namespace, Namespaces, SERVER_ADDRESS, SERVER_INTERFACE, Server, ServerSpec, busy_before_run, cpu_time, first_line, percent_since, run};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs of each measurement; the table shows their median.
const REPEATS: usize = 3;
/// Clients at once in the concurrency table.
const CLIENTS: usize = 50;
/// A client of the concurrency table still running after this counts as failed.
const CLIENT_DEADLINE: Duration = Duration::from_secs(180);
/// The server the ratios are relative to.
const SERVE: &str = "nixos-pxe serve";
/// Programs the benchmark runs besides nixos-pxe (dev/packages.txt installs them).
const PROGRAMS: &[&str] = &["atftp", "curl", "in.tftpd", "dnsmasq", "ganesha.nfsd", "rpcbind", "nfs-cp", "unshare"];

/// A file every server serves: its name under the TFTP root (and in the NFS export) and its size.
struct BenchFile {
    label: &'static str,
    name: &'static str,
    bytes: usize,
    seed: u64,
}

const KERNEL: BenchFile = BenchFile { label: "kernel 12 MiB", name: "nixos/bzImage", bytes: 12 << 20, seed: 1 };
const IMAGE: BenchFile = BenchFile { label: "image 200 MiB", name: "image.bin", bytes: 200 << 20, seed: 2 };
/// A small file for the readiness probes.
const PROBE: BenchFile = BenchFile { label: "probe", name: "ready", bytes: 4096, seed: 3 };

// ---------------------------------------------------------------------------------------------
// The files

/// Pseudo-random bytes (xorshift64), so that no compression or zero-page shortcut flatters anyone.
fn pseudo_random_bytes(bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(bytes + 8);
    while data.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(bytes);
    data
}

fn create_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display())),
        None => Ok(()),
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), String> {
    create_parent(path)?;
    std::fs::write(path, data).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Whether `received` holds exactly the bytes of `original` (compared in 1 MiB pieces).
fn same_contents(received: &Path, original: &Path) -> Result<bool, String> {
    let open = |p: &Path| File::open(p).map_err(|e| format!("open {}: {e}", p.display()));
    let (mut a, mut b) = (open(received)?, open(original)?);
    let (mut buf_a, mut buf_b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_up_to(&mut a, &mut buf_a).map_err(|e| format!("read {}: {e}", received.display()))?;
        let m = read_up_to(&mut b, &mut buf_b).map_err(|e| format!("read {}: {e}", original.display()))?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// The benchmark's working directory on tmpfs: the TFTP root, the NFS export (the same files,
/// hard-linked), the configuration `serve` and `render` read, received files and server logs.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn create() -> Result<Workspace, String> {
        let dir = tempfile::Builder::new()
            .prefix("nixos-pxe-bench-")
            .tempdir_in("/dev/shm")
            .map_err(|e| format!("cannot make a directory on /dev/shm: {e}"))?;
        let workspace = Workspace { dir };
        for file in [&KERNEL, &IMAGE, &PROBE] {
            let path = workspace.tftp_file(file);
            write_file(&path, &pseudo_random_bytes(file.bytes, file.seed))?;
            let exported = workspace.export_root().join(file.name);
            create_parent(&exported)?;
            std::fs::hard_link(&path, &exported).map_err(|e| format!("hard-link {} to {}: {e}", path.display(), exported.display()))?;
        }
        for sub in ["client", "logs", "rendered"] {
            std::fs::create_dir_all(workspace.path().join(sub)).map_err(|e| format!("create {sub}: {e}"))?;
        }
        write_file(&workspace.config(), workspace.config_text().as_bytes())?;
        Ok(workspace)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn tftp_root(&self) -> PathBuf {
        self.path().join("tftp")
    }

    fn export_root(&self) -> PathBuf {
        self.path().join("export")
    }

    fn tftp_file(&self, file: &BenchFile) -> PathBuf {
        self.tftp_root().join(file.name)
    }

    /// Where a client puts what it received (`slot` tells concurrent clients apart).
    fn received(&self, slot: usize) -> PathBuf {
        self.path().join(format!("client/received-{slot}"))
    }

    fn log(&self, name: &str) -> PathBuf {
        self.path().join("logs").join(format!("{}.log", name.replace(' ', "-")))
    }

    fn config(&self) -> PathBuf {
        self.path().join("bench.nix")
    }

    fn rendered(&self) -> PathBuf {
        self.path().join("rendered")
    }

    /// bootServer.* for serve and for `render`'s ganesha.conf; serve's NFS port named as its
    /// --nfs-root asks.
    fn config_text(&self) -> String {
        format!(
            "{{ bootServer = {{ address = \"{SERVER_ADDRESS}\"; interface = \"{SERVER_INTERFACE}\"; subnet = \"10.77.0.0/24\"; \
             dhcpRange.start = \"10.77.0.100\"; dhcpRange.end = \"10.77.0.199\"; tftpRoot = \"{}\"; nfsExport = \"{}\"; \
             nfsMountOptions = \"vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock\"; }}; \
             customInstaller.rootDevice = \"/dev/vda\"; }}\n",
            self.tftp_root().display(),
            self.export_root().display()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The servers

/// The nixos-pxe binary under test: $NIXOS_PXE, else the one `cargo bench` built.
fn nixos_pxe() -> Result<PathBuf, String> {
    let path = std::env::var_os("NIXOS_PXE").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nixos-pxe")), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is missing: build it with `cargo build --release`, or name one with NIXOS_PXE=", path.display()))
    }
}

fn serve_tftp(bench: &Bench) -> ServerSpec {
    ServerSpec {
        name: SERVE,
        program: bench.nixos_pxe.display().to_string(),
        args: vec![
            "serve".into(),
            "--source".into(),
            "static".into(),
            "--config".into(),
            bench.workspace.config().display().to_string(),
            "--interface".into(),
            SERVER_INTERFACE.into(),
            "--dhcp".into(),
            "off".into(),
            "--tftp-root".into(),
            bench.workspace.tftp_root().display().to_string(),
            // The 50 clients are one address: lift the per-client cap (8 by default).
            "--per-client".into(),
            "1000".into(),
        ],
    }
}

/// tftpd-hpa in the foreground (-L); -u root because the files are in a root-only directory.
fn tftpd_hpa(bench: &Bench) -> ServerSpec {
    ServerSpec {
        name: "tftpd-hpa",
        program: "in.tftpd".into(),
        args: ["-L", "-u", "root", "-a", &format!("{SERVER_ADDRESS}:69"), "-s"]
            .iter()
            .map(|s| s.to_string())
            .chain([bench.workspace.tftp_root().display().to_string()])
            .collect(),
    }
}

/// dnsmasq with DNS off (--port=0) and no DHCP range: TFTP only. --user=root because the files
/// are in a root-only directory; --tftp-max=100 so that its default limit of 50 transfers does not
/// turn clients away in the concurrency table (serve's limit is 512; tftpd-hpa has none).
/// Without DHCP it opens no lease file; --leasefile-ro keeps the host's
/// /var/lib/misc/dnsmasq.leases untouched should a DHCP option ever be added here.
fn dnsmasq_tftp(bench: &Bench) -> ServerSpec {
    ServerSpec {
        name: "dnsmasq",
        program: "dnsmasq".into(),
        args: vec![
            "--keep-in-foreground".into(),
            "--port=0".into(),
            "--enable-tftp".into(),
            format!("--tftp-root={}", bench.workspace.tftp_root().display()),
            format!("--interface={SERVER_INTERFACE}"),
            "--bind-interfaces".into(),
            "--user=root".into(),
            "--pid-file".into(),
            "--log-facility=-".into(),
            "--conf-file=/dev/null".into(),
            "--tftp-max=100".into(),
            "--leasefile-ro".into(),
        ],
    }
}

fn tftp_servers(bench: &Bench) -> Vec<ServerSpec> {
    vec![serve_tftp(bench), tftpd_hpa(bench), dnsmasq_tftp(bench)]
}

/// An NFS server and the nfs-cp URL query that reaches it.
struct NfsServer {
    spec: ServerSpec,
    url_query: &'static str,
}

/// `nixos-pxe serve --nfs-root`: NFS and MOUNT on port 2049, no portmapper. None when this build
/// of serve has no NFS server.
fn serve_nfs(bench: &Bench) -> Result<Option<NfsServer>, String> {
    let help = run(Command::new(&bench.nixos_pxe).args(["serve", "--help"]))?;
    if !help.contains("--nfs-root") {
        return Ok(None);
    }
    let mut spec = serve_tftp(bench);
    spec.args.extend(["--nfs-root".to_string(), bench.workspace.export_root().display().to_string()]);
    // Its NFS handle key lives there (not in /var/lib/nixos-pxe on the machine running the bench).
    if help.contains("--state-dir") {
        spec.args.extend(["--state-dir".to_string(), bench.workspace.path().join("state").display().to_string()]);
    }
    Ok(Some(NfsServer { spec, url_query: "?version=3&nfsport=2049&mountport=2049" }))
}

/// nfs-ganesha from the ganesha.conf `nixos-pxe render` wrote, with rpcbind, in a mount
/// namespace with a private /run (their sockets and pid files); the host's /run is not touched.
fn ganesha_nfs(bench: &Bench) -> NfsServer {
    let script = format!(
        "mount -t tmpfs run /run; mkdir -p /run/rpcbind /run/ganesha; \
         rpcbind -w -f & \
         for i in $(seq 50); do [ -S /run/rpcbind.sock ] && break; sleep 0.1; done; \
         [ -S /run/rpcbind.sock ] || {{ echo 'rpcbind made no /run/rpcbind.sock within 5 s'; exit 1; }}; \
         exec ganesha.nfsd -F -f {} -L STDERR -p /run/ganesha/ganesha.pid",
        bench.workspace.rendered().join("ganesha.conf").display()
    );
    NfsServer {
        spec: ServerSpec {
            name: "nfs-ganesha",
            program: "unshare".into(),
            args: vec!["--mount".into(), "--propagation".into(), "private".into(), "sh".into(), "-ec".into(), script],
        },
        url_query: "?version=3",
    }
}

/// Writes ganesha.conf (and the other server configs) with `nixos-pxe render`.
fn render_configs(bench: &Bench) -> Result<(), String> {
    run(Command::new(&bench.nixos_pxe)
        .args(["render", "--source", "static", "--config"])
        .arg(bench.workspace.config())
        .arg("--out")
        .arg(bench.workspace.rendered()))
    .map(drop)
    .map_err(|e| format!("nixos-pxe render (for ganesha.conf): {e}"))
}

// ---------------------------------------------------------------------------------------------
// The clients

#[derive(Clone, Copy, PartialEq, Eq)]
enum TftpClient {
    Atftp,
    Curl,
}

impl TftpClient {
    fn name(self) -> &'static str {
        match self {
            TftpClient::Atftp => "atftp",
            TftpClient::Curl => "curl",
        }
    }
}

/// TFTP options a client asks for; None = not asked (RFC 1350's 512-byte blocks, one per ACK).
#[derive(Clone, Copy)]
struct TftpOptions {
    blksize: Option<u32>,
    windowsize: Option<u32>,
}

impl TftpOptions {
    fn label(self) -> String {
        match (self.blksize, self.windowsize) {
            (None, None) => "default (blksize 512)".into(),
            (Some(b), None) => format!("blksize {b}"),
            (Some(b), Some(w)) => format!("blksize {b}, windowsize {w}"),
            (None, Some(w)) => format!("windowsize {w}"),
        }
    }
}

/// One client with one set of options.
#[derive(Clone, Copy)]
struct TftpCase {
    client: TftpClient,
    options: TftpOptions,
}

const DEFAULT: TftpOptions = TftpOptions { blksize: None, windowsize: None };
/// The block size EDK2's PXE client asks for (an Ethernet frame's worth), alone and with a window.
const BLKSIZE: TftpOptions = TftpOptions { blksize: Some(1468), windowsize: None };
const BLKSIZE_WINDOW: TftpOptions = TftpOptions { blksize: Some(1468), windowsize: Some(4) };

/// What every server is measured with. curl cannot ask for windowsize.
const TFTP_CASES: &[TftpCase] = &[
    TftpCase { client: TftpClient::Atftp, options: DEFAULT },
    TftpCase { client: TftpClient::Atftp, options: BLKSIZE },
    TftpCase { client: TftpClient::Atftp, options: BLKSIZE_WINDOW },
    TftpCase { client: TftpClient::Curl, options: DEFAULT },
    TftpCase { client: TftpClient::Curl, options: BLKSIZE },
];

/// The client command that fetches `remote` from the server into `local`, in the client namespace.
fn tftp_fetch(ns: &Namespace, case: TftpCase, remote: &str, local: &Path) -> Command {
    let mut command = ns.command(case.client.name());
    match case.client {
        TftpClient::Atftp => {
            for (name, value) in [("blksize", case.options.blksize), ("windowsize", case.options.windowsize)] {
                if let Some(value) = value {
                    command.arg("--option").arg(format!("{name} {value}"));
                }
            }
            command.args(["-g", "-r", remote, "-l"]).arg(local).arg(SERVER_ADDRESS);
        }
        TftpClient::Curl => {
            if let Some(blksize) = case.options.blksize {
                command.arg("--tftp-blksize").arg(blksize.to_string());
            }
            command.args(["--silent", "--show-error", "--max-time", "300", "--output"]).arg(local).arg(format!("tftp://{SERVER_ADDRESS}/{remote}"));
        }
    }
    command.stdin(Stdio::null());
    command
}

/// nfs-cp (libnfs) copying `file` from the export into `local`, in the client namespace.
fn nfs_fetch(bench: &Bench, server: &NfsServer, file: &BenchFile, local: &Path) -> Command {
    let url = format!("nfs://{SERVER_ADDRESS}{}/{}{}", bench.workspace.export_root().display(), file.name, server.url_query);
    let mut command = bench.namespaces.client.command("nfs-cp");
    command.arg(url).arg(local).stdin(Stdio::null());
    command
}

/// Runs `command` (a client fetching `original`'s file into `received`) and returns how long it
/// took. A client that fails, or a received file that differs from `original`, is an error.
fn timed_fetch(mut command: Command, received: &Path, original: &Path) -> Result<Duration, String> {
    let _ = std::fs::remove_file(received);
    let start = Instant::now();
    let out = command.output().map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!("{command:?} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    }
    if !same_contents(received, original)? {
        return Err(format!("{command:?}: the received {} differs from {}", received.display(), original.display()));
    }
    std::fs::remove_file(received).map_err(|e| format!("remove {}: {e}", received.display()))?;
    Ok(took)
}

/// Readiness probe: the small file fetched whole over TFTP.
fn tftp_answers(bench: &Bench) -> bool {
    let case = TftpCase { client: TftpClient::Curl, options: DEFAULT };
    let mut command = tftp_fetch(&bench.namespaces.client, case, PROBE.name, &bench.workspace.received(0));
    command.args(["--max-time", "2"]).stderr(Stdio::null());
    timed_fetch(command, &bench.workspace.received(0), &bench.workspace.tftp_file(&PROBE)).is_ok()
}

/// Readiness probe: the small file fetched whole over NFS.
fn nfs_answers(bench: &Bench, server: &NfsServer) -> bool {
    let mut command = nfs_fetch(bench, server, &PROBE, &bench.workspace.received(0));
    command.stdout(Stdio::null()).stderr(Stdio::null());
    timed_fetch(command, &bench.workspace.received(0), &bench.workspace.tftp_file(&PROBE)).is_ok()
}

/// The options a server accepted when atftp asked for blksize 1468 and windowsize 4: its OACK,
/// as `atftp --trace` prints it on stderr ("none" when it sent no OACK).
fn accepted_options(bench: &Bench) -> Result<String, String> {
    let case = TftpCase { client: TftpClient::Atftp, options: BLKSIZE_WINDOW };
    let received = bench.workspace.received(0);
    let mut command = tftp_fetch(&bench.namespaces.client, case, PROBE.name, &received);
    command.arg("--trace");
    let out = command.output().map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let _ = std::fs::remove_file(&received);
    let trace = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{command:?} (asking for options) failed ({}): {trace}", out.status));
    }
    let oack = trace.lines().find_map(|line| line.trim().strip_prefix("received OACK <")).map(|rest| {
        // atftp ends the list with ", " and two backspaces before the '>'.
        let options = rest.replace('\u{8}', "");
        let options = options.trim_end_matches('>').split(',').map(|o| o.trim().replace(": ", " "));
        options.filter(|o| !o.is_empty()).collect::<Vec<_>>().join(", ")
    });
    Ok(oack.unwrap_or_else(|| "none".into()))
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// Everything a measurement needs. Dropped in this order: the namespaces' processes are killed
/// before their files are removed.
struct Bench {
    namespaces: Namespaces,
    workspace: Workspace,
    nixos_pxe: PathBuf,
}

/// One timed transfer.
struct Sample {
    server: &'static str,
    file: &'static str,
    bytes: usize,
    client: &'static str,
    options: String,
    took: Duration,
}

/// One line of the throughput table: a median, or a note why there is none.
struct Row {
    server: &'static str,
    file: &'static str,
    client: &'static str,
    options: String,
    mb_per_s: Option<f64>,
    /// The slowest and the fastest run, in MB/s.
    spread: Option<(f64, f64)>,
    note: Option<String>,
}

/// Median, slowest and fastest of `runs` (not empty).
fn median_and_extremes(mut runs: Vec<Duration>) -> (Duration, Duration, Duration) {
    runs.sort();
    (runs[runs.len() / 2], runs[runs.len() - 1], runs[0])
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// The median of each (server, file, client, options) in `samples`, in the order first measured.
fn rows_from_samples(samples: &[Sample]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for s in samples {
        let same = |r: &Row| r.server == s.server && r.file == s.file && r.client == s.client && r.options == s.options;
        if rows.iter().any(same) {
            continue;
        }
        let runs: Vec<Duration> = samples
            .iter()
            .filter(|t| t.server == s.server && t.file == s.file && t.client == s.client && t.options == s.options)
            .map(|t| t.took)
            .collect();
        let (median, slowest, fastest) = median_and_extremes(runs);
        rows.push(Row {
            server: s.server,
            file: s.file,
            client: s.client,
            options: s.options.clone(),
            mb_per_s: Some(mb_per_s(s.bytes, median)),
            spread: Some((mb_per_s(s.bytes, slowest), mb_per_s(s.bytes, fastest))),
            note: None,
        });
    }
    rows
}

/// The TFTP options one server accepted (its OACK).
struct Accepted {
    server: &'static str,
    oack: String,
}

/// TFTP: every server, file and client case, REPEATS times round the servers. Also returns the
/// options each server accepted.
fn tftp_throughput(bench: &Bench) -> Result<(Vec<Row>, Vec<Accepted>), String> {
    let mut samples = Vec::new();
    let mut accepted = Vec::new();
    let received = bench.workspace.received(0);
    for repeat in 1..=REPEATS {
        for spec in tftp_servers(bench) {
            eprintln!("bench: TFTP run {repeat}/{REPEATS}: {}", spec.name);
            let mut server = Server::start(&spec, &bench.namespaces.server, bench.workspace.log(spec.name))?;
            server.wait_until_ready(Duration::from_secs(10), || tftp_answers(bench))?;
            if repeat == 1 {
                accepted.push(Accepted { server: spec.name, oack: accepted_options(bench)? });
            }
            for file in [&KERNEL, &IMAGE] {
                for &case in TFTP_CASES {
                    let command = tftp_fetch(&bench.namespaces.client, case, file.name, &received);
                    let took = timed_fetch(command, &received, &bench.workspace.tftp_file(file)).map_err(|e| format!("{} (TFTP): {e}", spec.name))?;
                    samples.push(Sample { server: spec.name, file: file.label, bytes: file.bytes, client: case.client.name(), options: case.options.label(), took });
                }
            }
        }
    }
    Ok((rows_from_samples(&samples), accepted))
}

/// NFSv3: the image read by nfs-cp from serve and from ganesha, REPEATS times round the servers.
fn nfs_throughput(bench: &Bench) -> Result<Vec<Row>, String> {
    render_configs(bench)?;
    let serve = serve_nfs(bench)?;
    let servers: Vec<NfsServer> = serve.into_iter().chain([ganesha_nfs(bench)]).collect();
    let received = bench.workspace.received(0);
    let mut samples = Vec::new();
    for repeat in 1..=REPEATS {
        for server in &servers {
            eprintln!("bench: NFS run {repeat}/{REPEATS}: {}", server.spec.name);
            let log = bench.workspace.log(&format!("{}-nfs", server.spec.name));
            let mut running = Server::start(&server.spec, &bench.namespaces.server, log)?;
            running.wait_until_ready(Duration::from_secs(60), || nfs_answers(bench, server))?;
            let took = timed_fetch(nfs_fetch(bench, server, &IMAGE, &received), &received, &bench.workspace.tftp_file(&IMAGE))
                .map_err(|e| format!("{} (NFS): {e}", server.spec.name))?;
            samples.push(Sample { server: server.spec.name, file: IMAGE.label, bytes: IMAGE.bytes, client: "nfs-cp", options: "NFSv3, TCP".into(), took });
        }
    }
    let mut rows = rows_from_samples(&samples);
    if !servers.iter().any(|s| s.spec.name == SERVE) {
        rows.insert(
            0,
            Row { server: SERVE, file: IMAGE.label, client: "nfs-cp", options: "NFSv3, TCP".into(), mb_per_s: None, spread: None, note: Some("nixos-pxe serve: no NFS server yet".into()) },
        );
    }
    Ok(rows)
}

/// The concurrency table's line for one server and one set of options.
struct Concurrency {
    server: &'static str,
    options: String,
    completed: usize,
    failed: usize,
    p50: Duration,
    p99: Duration,
}

/// The value below which a fraction `q` of the sorted `times` lie (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// Starts CLIENTS atftp clients at once fetching the kernel; returns the times of those that
/// received it intact (each from its own start) and how many failed.
fn many_clients(bench: &Bench, options: TftpOptions) -> Result<(Vec<Duration>, usize), String> {
    let case = TftpCase { client: TftpClient::Atftp, options };
    let original = std::fs::read(bench.workspace.tftp_file(&KERNEL)).map_err(|e| format!("read the kernel: {e}"))?;
    let mut running: Vec<(usize, Instant, Child)> = Vec::new();
    for slot in 0..CLIENTS {
        let received = bench.workspace.received(slot);
        let _ = std::fs::remove_file(&received);
        let mut command = tftp_fetch(&bench.namespaces.client, case, KERNEL.name, &received);
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| format!("cannot start {command:?}: {e}"))?;
        running.push((slot, Instant::now(), child));
    }
    let (mut times, mut failed) = (Vec::new(), 0);
    let deadline = Instant::now() + CLIENT_DEADLINE;
    while !running.is_empty() {
        let mut still_running = Vec::new();
        for (slot, start, mut child) in running {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let received = bench.workspace.received(slot);
                    let intact = status.success() && std::fs::read(&received).is_ok_and(|data| data == original);
                    if intact { times.push(start.elapsed()) } else { failed += 1 }
                    let _ = std::fs::remove_file(&received);
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failed += 1;
                }
                Ok(None) => still_running.push((slot, start, child)),
                Err(_) => failed += 1,
            }
        }
        running = still_running;
        std::thread::sleep(Duration::from_millis(5));
    }
    times.sort();
    Ok((times, failed))
}

/// CLIENTS clients at once against each TFTP server, with blksize alone and with windowsize.
fn tftp_concurrency(bench: &Bench) -> Result<Vec<Concurrency>, String> {
    let mut lines = Vec::new();
    for options in [BLKSIZE, BLKSIZE_WINDOW] {
        for spec in tftp_servers(bench) {
            eprintln!("bench: {CLIENTS} clients at once, {}: {}", options.label(), spec.name);
            let mut server = Server::start(&spec, &bench.namespaces.server, bench.workspace.log(&format!("{}-many", spec.name)))?;
            server.wait_until_ready(Duration::from_secs(10), || tftp_answers(bench))?;
            let (times, failed) = many_clients(bench, options)?;
            lines.push(Concurrency {
                server: spec.name,
                options: options.label(),
                completed: times.len(),
                failed,
                p50: percentile(&times, 0.50).unwrap_or_default(),
                p99: percentile(&times, 0.99).unwrap_or_default(),
            });
        }
    }
    Ok(lines)
}

// ---------------------------------------------------------------------------------------------
// The report

/// The throughput rows as a Markdown table, each transfer's servers together, with each server's
/// rate divided by serve's for the same transfer.
fn throughput_table(rows: &[Row]) -> String {
    let mut table =
        format!("| server | file | client | options | MB/s (median of {REPEATS}) | slowest–fastest run | ratio to serve |\n|---|---|---|---|---:|---:|---:|\n");
    let key = |r: &Row| (r.file, r.client, r.options.clone());
    let mut transfers: Vec<(&str, &str, String)> = Vec::new();
    for row in rows {
        if !transfers.contains(&key(row)) {
            transfers.push(key(row));
        }
    }
    for transfer in &transfers {
        let group: Vec<&Row> = rows.iter().filter(|r| key(r) == *transfer).collect();
        let serve = group.iter().find(|r| r.server == SERVE).and_then(|r| r.mb_per_s);
        for row in group {
            let (rate, ratio) = match (row.mb_per_s, serve) {
                (Some(rate), Some(serve)) => (format!("{rate:.1}"), format!("{:.2}", rate / serve)),
                (Some(rate), None) => (format!("{rate:.1}"), "–".into()),
                (None, _) => (row.note.clone().unwrap_or_default(), "–".into()),
            };
            let spread = row.spread.map_or_else(|| "–".into(), |(slowest, fastest)| format!("{slowest:.1}–{fastest:.1}"));
            table += &format!("| {} | {} | {} | {} | {rate} | {spread} | {ratio} |\n", row.server, row.file, row.client, row.options);
        }
    }
    table
}

fn accepted_table(accepted: &[Accepted]) -> String {
    let mut table = String::from("| server | OACK to atftp asking blksize 1468, windowsize 4 |\n|---|---|\n");
    for a in accepted {
        table += &format!("| {} | {} |\n", a.server, a.oack);
    }
    table
}

fn concurrency_table(lines: &[Concurrency]) -> String {
    let mut table = format!(
        "| {CLIENTS} atftp clients at once, {} | options | completed | failed | p50 s | p99 s |\n|---|---|---:|---:|---:|---:|\n",
        KERNEL.label
    );
    for l in lines {
        table += &format!("| {} | {} | {} | {} | {:.2} | {:.2} |\n", l.server, l.options, l.completed, l.failed, l.p50.as_secs_f64(), l.p99.as_secs_f64());
    }
    table
}

/// Where and with what the figures were measured.
fn machine_description() -> String {
    let machine = common::cores_and_cpu();
    let versions = first_line(Command::new("dpkg-query").args([
        "-W",
        "-f=${Package} ${Version}, ",
        "tftpd-hpa",
        "dnsmasq-base",
        "nfs-ganesha",
        "atftp",
        "curl",
        "libnfs-utils",
    ]));
    format!(
        "{machine}, Linux {}; veth pair between two network namespaces; files on tmpfs; {}",
        first_line(Command::new("uname").arg("-r")),
        versions.trim_end_matches([',', ' '])
    )
}

/// Stops unless this runs as root and every program the benchmark starts is installed.
fn preflight() -> Result<(), String> {
    common::preflight("the benchmark makes network namespaces", PROGRAMS, "run dev/install-deps.sh")
}

fn bench() -> Result<String, String> {
    preflight()?;
    let started = Instant::now();
    let busy_before = busy_before_run();
    let cpu_before = cpu_time();
    let nixos_pxe = nixos_pxe()?;
    let workspace = Workspace::create()?;
    let namespaces = Namespaces::create(workspace.path())?;
    let bench = Bench { namespaces, workspace, nixos_pxe };
    let (mut rows, accepted) = tftp_throughput(&bench)?;
    rows.extend(nfs_throughput(&bench)?);
    let many = tftp_concurrency(&bench)?;
    let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    Ok(format!(
        "Measured by `cargo bench --bench serve` on {date} in {:.0} s.\n\
         Machine: {}.\n\
         CPU busy in the second before the run: {busy_before:.0}%; CPU time stolen by the hypervisor during it: {:.1}%.\n\
         MB/s = 10^6 bytes per second, from the client's start to its exit; ratio = this server's MB/s ÷ nixos-pxe serve's \
         in the same transfer (below 1: slower than serve). Every received file was compared byte for byte.\n\n{}\n{}\n{}",
        started.elapsed().as_secs_f64(),
        machine_description(),
        percent_since(&cpu_before, |t| t.stolen),
        throughput_table(&rows),
        accepted_table(&accepted),
        concurrency_table(&many)
    ))
}

fn main() {
    common::bench_main("serve", "as root", bench);
}
