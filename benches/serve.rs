//! Benchmark of `nixos-pxe serve` against the daemons it replaces, side by side in one run:
//! TFTP (tftpd-hpa, dnsmasq) on a 12 MB kernel with and without blksize/windowsize, 50 TFTP
//! clients at once, and NFSv3 (nfs-ganesha) reading a 200 MB image.
//!
//! Run as root: `cargo bench --bench serve` (prints the tables; the last one is kept in
//! target/bench-serve.md). Everything runs in two network namespaces this program makes (server
//! 10.77.0.1, client 10.77.0.2) joined by a veth pair; files live on tmpfs (/dev/shm), so disks do
//! not enter the figures. One client program for every server: atftp for TFTP, libnfs's nfs-cp for
//! NFS (the host kernel has no NFS client). Every received file is compared with the original: a
//! wrong transfer stops the run instead of giving a number. Figures are medians of 3 runs.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_NS: &str = "nixos-pxe-bench-srv";
const CLIENT_NS: &str = "nixos-pxe-bench-cli";
const SERVER: &str = "10.77.0.1";
const KERNEL_BYTES: usize = 12 << 20;
const IMAGE_BYTES: usize = 200 << 20;
const REPEATS: usize = 3;
const CLIENTS: usize = 50;

fn sh(script: &str) -> Result<String, String> {
    let out = Command::new("sh").args(["-ec", script]).output().map_err(|e| format!("sh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{script}` failed: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The two namespaces and the veth pair; removed (with whatever runs in them) when dropped.
struct Network;

impl Network {
    fn new() -> Result<Network, String> {
        Network::remove();
        sh(&format!(
            "ip netns add {SERVER_NS}; ip netns add {CLIENT_NS}; \
             ip -n {SERVER_NS} link set lo up; ip -n {CLIENT_NS} link set lo up; \
             ip -n {SERVER_NS} link add veth-s type veth peer name veth-c netns {CLIENT_NS}; \
             ip -n {SERVER_NS} addr add {SERVER}/24 dev veth-s; ip -n {SERVER_NS} link set veth-s up; \
             ip -n {CLIENT_NS} addr add 10.77.0.2/24 dev veth-c; ip -n {CLIENT_NS} link set veth-c up"
        ))?;
        Ok(Network)
    }

    fn remove() {
        for ns in [SERVER_NS, CLIENT_NS] {
            let _ = sh(&format!("ip netns pids {ns} 2>/dev/null | xargs -r kill -9; ip netns del {ns} 2>/dev/null; true"));
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        Network::remove();
    }
}

/// A server process in the server namespace (its own process group), stopped when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn start(name: &'static str, script: &str, log: &Path) -> Result<Server, String> {
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", SERVER_NS, "sh", "-ec", script])
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        let mut server = Server { child };
        // Up when it listens; a server that exits instead is reported with its log.
        std::thread::sleep(Duration::from_millis(1500));
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("{name} exited ({status}):\n{}", std::fs::read_to_string(log).unwrap_or_default()));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this program created for the server.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Pseudo-random bytes (xorshift), so compression or caching of zeros cannot flatter anyone.
fn random_file(path: &Path, bytes: usize, seed: u64) -> Result<(), String> {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(bytes + 8);
    while data.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(bytes);
    std::fs::write(path, data).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `script` in the client namespace and returns how long it took; a failure or a received
/// file that differs from `expect` is an error.
fn timed_client(script: &str, received: &Path, expect: &Path) -> Result<Duration, String> {
    let _ = std::fs::remove_file(received);
    let start = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", CLIENT_NS, "sh", "-ec", script])
        .output()
        .map_err(|e| format!("client: {e}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!("`{script}` failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    }
    let (a, b) = (std::fs::read(received).map_err(|e| format!("{}: {e}", received.display()))?, std::fs::read(expect).map_err(|e| e.to_string())?);
    if a != b {
        return Err(format!("`{script}`: the received file differs from {} ({} of {} bytes)", expect.display(), a.len(), b.len()));
    }
    Ok(took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// One row of a throughput table.
struct Row {
    what: String,
    server: &'static str,
    rate: f64,
}

/// The TFTP servers under test, each started with TFTP only, on port 69 of the server namespace.
fn tftp_servers(dir: &Path, config: &Path) -> Vec<(&'static str, String)> {
    let root = dir.join("tftp");
    vec![
        (
            "nixos-pxe serve",
            format!(
                "exec {} serve --source static --config {} --interface veth-s --dhcp off --tftp-root {}",
                env!("CARGO_BIN_EXE_nixos-pxe"),
                config.display(),
                root.display()
            ),
        ),
        // -u root: the files are in a root-private directory; -L: foreground.
        ("tftpd-hpa", format!("exec in.tftpd -L -u root -a {SERVER}:69 -s {}", root.display())),
        (
            "dnsmasq",
            format!(
                "exec dnsmasq --keep-in-foreground --port=0 --enable-tftp --tftp-root={} --interface=veth-s --bind-interfaces \
                 --user=root --pid-file --log-facility=- --conf-file=/dev/null --tftp-max=100",
                root.display()
            ),
        ),
    ]
}

/// The client's TFTP options: as GRUB asks (none beyond blksize 512 here: plain RFC 1350) and as
/// EDK2 asks (blksize 1468, windowsize 4). A server that does not know an option ignores it.
const TFTP_OPTIONS: &[(&str, &str)] = &[("blksize 512 (RFC 1350)", ""), ("blksize 1468, windowsize 4", "--option \"blksize 1468\" --option \"windowsize 4\"")];

fn tftp_throughput(dir: &Path, config: &Path) -> Result<Vec<Row>, String> {
    let kernel = dir.join("tftp/nixos/bzImage");
    let received = dir.join("client/bzImage");
    let mut rows = Vec::new();
    for (name, script) in tftp_servers(dir, config) {
        let _server = Server::start(name, &script, &dir.join(format!("{}.log", name.replace(' ', "-"))))?;
        for (label, options) in TFTP_OPTIONS {
            let client = format!("atftp {options} -g -r nixos/bzImage -l {} {SERVER}", received.display());
            let runs = (0..REPEATS).map(|_| timed_client(&client, &received, &kernel)).collect::<Result<Vec<_>, _>>()?;
            rows.push(Row { what: format!("TFTP 12 MB kernel, {label}"), server: name, rate: mb_per_s(KERNEL_BYTES, median(runs)) });
        }
    }
    Ok(rows)
}

/// 50 clients at once, blksize 1468 and windowsize 4, each timed from the common start.
struct Concurrency {
    server: &'static str,
    completed: usize,
    failed: usize,
    p50: Duration,
    p99: Duration,
}

fn tftp_concurrency(dir: &Path, config: &Path) -> Result<Vec<Concurrency>, String> {
    let kernel = std::fs::read(dir.join("tftp/nixos/bzImage")).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (name, script) in tftp_servers(dir, config) {
        let _server = Server::start(name, &script, &dir.join(format!("{}-many.log", name.replace(' ', "-"))))?;
        let start = Instant::now();
        let clients: Vec<(PathBuf, Child)> = (0..CLIENTS)
            .map(|i| {
                let received = dir.join(format!("client/many-{i}"));
                let _ = std::fs::remove_file(&received);
                let child = Command::new("ip")
                    .args(["netns", "exec", CLIENT_NS, "atftp", "--option", "blksize 1468", "--option", "windowsize 4", "-g", "-r", "nixos/bzImage", "-l"])
                    .arg(&received)
                    .arg(SERVER)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("atftp: {e}"))?;
                Ok((received, child))
            })
            .collect::<Result<_, String>>()?;
        let mut times = Vec::new();
        let mut failed = 0;
        let mut pending = clients;
        // Each client's time is when it was seen done (polled every 10 ms).
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (received, mut child) in pending {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        let good = status.success() && std::fs::read(&received).is_ok_and(|d| d == kernel);
                        if good {
                            times.push(start.elapsed());
                        } else {
                            failed += 1;
                        }
                    }
                    Ok(None) => still.push((received, child)),
                    Err(_) => failed += 1,
                }
            }
            pending = still;
            std::thread::sleep(Duration::from_millis(10));
        }
        times.sort();
        let at = |q: f64| times.get(((times.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default();
        out.push(Concurrency { server: name, completed: times.len(), failed, p50: at(0.50), p99: at(0.99) });
    }
    Ok(out)
}

fn nfs_throughput(dir: &Path, config: &Path, rendered: &Path) -> Result<Vec<Row>, String> {
    let export = dir.join("export");
    let image = export.join("system.tar.zst");
    let received = dir.join("client/image");
    let servers: Vec<(&'static str, String, String)> = vec![
        (
            "nixos-pxe serve",
            format!(
                "exec {} serve --source static --config {} --interface veth-s --dhcp off --tftp-root {} --nfs-root {}",
                env!("CARGO_BIN_EXE_nixos-pxe"),
                config.display(),
                dir.join("tftp").display(),
                export.display()
            ),
            "?version=3&nfsport=2049&mountport=2049".into(),
        ),
        // ganesha from the ganesha.conf `nixos-pxe render` wrote, with rpcbind, in a mount
        // namespace with a private /run (their sockets and pid files).
        (
            "nfs-ganesha",
            format!(
                "exec unshare --mount --propagation private sh -ec 'mount -t tmpfs run /run && mkdir -p /run/rpcbind /var/run/ganesha && \
                 (rpcbind -w -f &) && sleep 1 && exec ganesha.nfsd -F -f {} -L {} -p /run/ganesha.pid'",
                rendered.join("ganesha.conf").display(),
                dir.join("ganesha-internal.log").display()
            ),
            "?version=3".into(),
        ),
    ];
    let mut rows = Vec::new();
    for (name, script, query) in servers {
        let _server = Server::start(name, &script, &dir.join(format!("{}-nfs.log", name.replace(' ', "-"))))?;
        // ganesha takes a few seconds more before it answers MOUNT.
        std::thread::sleep(Duration::from_secs(3));
        let client = format!("nfs-cp 'nfs://{SERVER}{}/system.tar.zst{query}' {} >/dev/null", export.display(), received.display());
        let runs = (0..REPEATS).map(|_| timed_client(&client, &received, &image)).collect::<Result<Vec<_>, _>>()?;
        rows.push(Row { what: "NFSv3 200 MB image (nfs-cp)".into(), server: name, rate: mb_per_s(IMAGE_BYTES, median(runs)) });
    }
    Ok(rows)
}

/// The throughput rows as a Markdown table: MB/s, and how many times faster serve is than each.
fn throughput_table(rows: &[Row]) -> String {
    let mut t = String::from("| transfer | server | MB/s | serve ÷ this |\n|---|---|---:|---:|\n");
    // Each transfer's servers together, in the order they ran.
    let mut order: Vec<&str> = Vec::new();
    for row in rows {
        if !order.contains(&row.what.as_str()) {
            order.push(&row.what);
        }
    }
    let grouped = order.iter().flat_map(|what| rows.iter().filter(move |r| r.what == *what));
    for row in grouped {
        let serve = rows.iter().find(|r| r.what == row.what && r.server == "nixos-pxe serve").map_or(f64::NAN, |r| r.rate);
        t += &format!("| {} | {} | {:.1} | {:.2} |\n", row.what, row.server, row.rate, serve / row.rate);
    }
    t
}

fn concurrency_table(rows: &[Concurrency]) -> String {
    let mut t = format!(
        "| {CLIENTS} TFTP clients at once (12 MB, blksize 1468, windowsize 4) | completed | failed | p50 s | p99 s |\n|---|---:|---:|---:|---:|\n"
    );
    for r in rows {
        t += &format!("| {} | {} | {} | {:.2} | {:.2} |\n", r.server, r.completed, r.failed, r.p50.as_secs_f64(), r.p99.as_secs_f64());
    }
    t
}

fn bench() -> Result<String, String> {
    if sh("id -u")?.trim() != "0" {
        return Err("run as root: the benchmark makes network namespaces".into());
    }
    for program in ["atftp", "nfs-cp", "in.tftpd", "dnsmasq", "ganesha.nfsd", "rpcbind"] {
        if sh(&format!("command -v {program}")).is_err() {
            return Err(format!("{program} missing: run dev/install-deps.sh"));
        }
    }
    let dir = tempfile::Builder::new().prefix("nixos-pxe-bench").tempdir_in("/dev/shm").map_err(|e| format!("a directory on /dev/shm: {e}"))?;
    let d = dir.path();
    for sub in ["tftp/nixos", "export", "client", "rendered"] {
        std::fs::create_dir_all(d.join(sub)).map_err(|e| e.to_string())?;
    }
    random_file(&d.join("tftp/nixos/bzImage"), KERNEL_BYTES, 1)?;
    random_file(&d.join("export/system.tar.zst"), IMAGE_BYTES, 2)?;
    let config = d.join("bench.nix");
    std::fs::write(
        &config,
        format!(
            "{{ bootServer = {{ address = \"{SERVER}\"; interface = \"veth-s\"; subnet = \"10.77.0.0/24\"; dhcpRange.start = \"10.77.0.100\"; dhcpRange.end = \"10.77.0.199\"; \
             tftpRoot = \"{}\"; nfsExport = \"{}\"; \
             nfsMountOptions = \"vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock\"; }}; \
             customInstaller.rootDevice = \"/dev/vda\"; }}\n",
            d.join("tftp").display(),
            d.join("export").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let rendered = d.join("rendered");
    let out = Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(["render", "--source", "static", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&rendered)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("nixos-pxe render: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let _network = Network::new()?;
    eprintln!("bench: TFTP throughput ({REPEATS} runs each) ...");
    let mut rows = tftp_throughput(d, &config)?;
    eprintln!("bench: NFS throughput ({REPEATS} runs each) ...");
    rows.extend(nfs_throughput(d, &config, &rendered)?);
    eprintln!("bench: {CLIENTS} concurrent TFTP clients ...");
    let many = tftp_concurrency(d, &config)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    Ok(format!(
        "Measured by `cargo bench --bench serve` ({cores} cores; veth pair between two network namespaces; files on tmpfs; \
         medians of {REPEATS} runs; one client program per protocol: atftp, nfs-cp).\n\n{}\n{}",
        throughput_table(&rows),
        concurrency_table(&many)
    ))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing of the sort and must not
    // run a multi-minute benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/serve.rs: run it with `cargo bench --bench serve` (as root)");
        return;
    }
    match bench() {
        Ok(report) => {
            println!("{report}");
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-serve.md");
            if let Err(e) = std::fs::write(&path, &report) {
                eprintln!("bench: cannot write {}: {e}", path.display());
            }
        }
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    }
}
