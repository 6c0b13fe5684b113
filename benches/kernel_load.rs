//! Benchmark: GRUB loading the installer kernel from `nixos-pxe serve` over TFTP against HTTP, in
//! QEMU, side by side in one run (issue 11, "HTTP where it is faster").
//!
//! One UEFI QEMU machine (OVMF under TCG, as the end-to-end tests boot) PXE-boots GRUB from serve
//! (serve's DHCP and TFTP). GRUB configures its NIC from the firmware's lease, as the fleet's boot
//! loader does, and then runs `linux (tftp,10.42.0.1)/nixos/bzImage` and `linux
//! (http,10.42.0.1)/nixos/bzImage` in turn, ROUNDS times each, the order swapped every round (tftp
//! first in odd rounds, http first in even ones), and powers off. The kernel is the end-to-end
//! tests' (tests/e2e/build-test-kernel.sh, a real bzImage: `linux` checks its header). GRUB 2.06
//! asks TFTP for blksize 1024 and acknowledges every block before the next comes (lock-step, no
//! windowsize); its HTTP is one GET on one TCP connection.
//!
//! Timing: GRUB prints a line before and after each `linux` on its serial console (a file); this
//! program reads the file every 2 ms and stamps each line when it first sees it. A load's time
//! is from the line before to the line after: the transfer, GRUB's handling of the kernel image
//! and its one `linux` command, the same for both protocols except for the transfer. The time from
//! GRUB's start ("Welcome to GRUB!") to the first `linux` is printed too: the part of "GRUB start
//! to kernel loaded" that the protocol does not change. serve's log is checked afterwards: one TFTP
//! transfer of the whole kernel with blksize 1024 and one HTTP GET of it per load, or the run
//! fails.
//!
//! The GRUB image is made here with grub-mkimage from Debian's GRUB 2.06 modules (memdisk
//! grub.cfg, as `nixos-pxe mk-bootloader` makes its own) rather than by mk-bootloader, whose
//! grub.cfg boots the kernel: this one only loads it. serve runs with the test configuration
//! tests/configs/lab-serve.nix and `--http-port 80`.
//!
//! Run it as root (network namespaces; it takes the QEMU lock the end-to-end tests take):
//!
//! ```text
//! cargo bench --bench kernel_load                 # 4 rounds, about 2 minutes on 2 cores
//! cargo bench --bench kernel_load -- --rounds 6
//! cargo bench --bench kernel_load -- --capture    # also what a packet capture shows (below)
//! cargo bench --bench kernel_load -- --read-capture target/bench-kernel-load.pcap
//! ```
//!
//! `--capture` runs tcpdump (Debian's `tcpdump`: `apt-get install tcpdump`; not in
//! dev/packages.txt, as CI does not run benchmarks) on the lab's tap device, in the benchmark's
//! own namespace, for the whole run, and adds to the report, for each HTTP connection GRUB
//! opened, what bounds it: the MSS and window of GRUB's SYN, the server's segment sizes, GRUB's
//! ACKs, the bytes in flight against GRUB's window, the time to each ACK and the gaps of 5 ms and
//! more (benches/common/tcp_capture.rs reads the pcap). The capture is kept in
//! target/bench-kernel-load.pcap.
//!
//! The table goes to stdout and to target/bench-kernel-load.md.

mod common;
// The QEMU lab of the end-to-end tests: namespace, bridge, tap, OVMF client, the machine-wide lock.
#[path = "../tests/common/mod.rs"]
mod lab;

use common::{busy_before_run, cpu_time, first_line, percent_since};
use lab::{GRUB_LIB, Lab, Qemu, SERVER_ADDRESS, Socket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIG: &str = "tests/configs/lab-serve.nix";
const DEFAULT_ROUNDS: usize = 4;
/// Firmware, GRUB and every load under TCG on a busy machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const PROTOCOLS: [&str; 2] = ["tftp", "http"];

/// The order of the loads: round r loads tftp then http when r is odd, http then tftp when even.
fn order(rounds: usize) -> Vec<(usize, &'static str)> {
    (1..=rounds)
        .flat_map(|r| {
            let pair = if r % 2 == 1 { PROTOCOLS } else { [PROTOCOLS[1], PROTOCOLS[0]] };
            pair.map(|p| (r, p))
        })
        .collect()
}

/// grub.cfg: the serial console, the NIC as the firmware left it, the loads, power off. Each load
/// prints `kload: ROUND PROTOCOL start` and then `... loaded` or `... FAILED`.
fn grub_cfg(rounds: usize) -> String {
    let mut cfg = String::from(
        "serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n\
         terminal_input serial\n\
         terminal_output serial\n\
         insmod net\ninsmod efinet\ninsmod tftp\ninsmod http\ninsmod linux\n\
         echo \"kload: GRUB started on $net_default_interface (MAC $net_default_mac, address $net_default_ip, server $net_default_server)\"\n",
    );
    for (round, protocol) in order(rounds) {
        cfg += &format!(
            "echo \"kload: {round} {protocol} start\"\n\
             if linux ({protocol},{SERVER_ADDRESS})/nixos/bzImage; then echo \"kload: {round} {protocol} loaded\"; else echo \"kload: {round} {protocol} FAILED\"; fi\n"
        );
    }
    cfg + "echo \"kload: done\"\nhalt\n"
}

/// bootx64.efi with `cfg` as grub.cfg in its memdisk.
fn grub_image(dir: &Path, cfg: &str) -> Result<(), String> {
    let memdisk = dir.join("memdisk");
    std::fs::create_dir_all(memdisk.join("boot/grub")).map_err(|e| e.to_string())?;
    std::fs::write(memdisk.join("boot/grub/grub.cfg"), cfg).map_err(|e| e.to_string())?;
    let tar = dir.join("memdisk.tar");
    common::run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&memdisk).arg("boot"))?;
    common::run(
        Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-p", "(memdisk)/boot/grub", "-d", GRUB_LIB, "-m"])
            .arg(&tar)
            .arg("-o")
            .arg(dir.join("tftp/bootx64.efi"))
            .args(["memdisk", "tar", "normal", "echo", "test", "serial", "terminal", "net", "efinet", "tftp", "http", "linux", "halt"]),
    )?;
    Ok(())
}

/// When each console line was first seen, polling the file every 2 ms until QEMU ends.
fn stamp_console(qemu: &mut Qemu) -> Result<Vec<(Instant, String)>, String> {
    let mut lines: Vec<(Instant, String)> = Vec::new();
    let mut seen = 0usize;
    let start = Instant::now();
    loop {
        let ended = qemu.exit_status().is_some();
        let text = qemu.console();
        let now = Instant::now();
        // Only whole lines: a line still being written is stamped when its newline arrives.
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete > seen {
            lines.extend(text[seen..complete].lines().map(|l| (now, l.to_string())));
            seen = complete;
        }
        if ended {
            return Ok(lines);
        }
        if start.elapsed() > RUN_TIMEOUT {
            qemu.stop();
            return Err(format!("QEMU did not power off within {RUN_TIMEOUT:?}; its console:\n{}", lab::tail(&text)));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Load {
    round: usize,
    protocol: &'static str,
    seconds: f64,
}

/// The loads' times from the stamped console; any FAILED or missing line fails the run.
fn loads(lines: &[(Instant, String)], rounds: usize) -> Result<(f64, Vec<Load>), String> {
    let console = || lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n");
    // GRUB's serial terminal puts escape sequences (cursor, colours) in front of some lines.
    let ours = |line: &str| line.find("kload: ").map(|i| line[i..].trim().to_string());
    let at = |text: &str| lines.iter().find(|(_, l)| ours(l).as_deref() == Some(text)).map(|(t, _)| *t);
    let started = lines
        .iter()
        .find(|(_, l)| l.contains("Welcome to GRUB!"))
        .map(|(t, _)| *t)
        .ok_or_else(|| format!("GRUB did not start (no \"Welcome to GRUB!\"); the console:\n{}", lab::tail(&console())))?;
    if !lines.iter().any(|(_, l)| ours(l).is_some_and(|l| l.starts_with("kload: GRUB started"))) {
        return Err(format!("GRUB did not run the benchmark's grub.cfg; the console:\n{}", lab::tail(&console())));
    }
    let mut result = Vec::new();
    let mut first_start = None;
    for (round, protocol) in order(rounds) {
        let begin = at(&format!("kload: {round} {protocol} start"));
        let end = at(&format!("kload: {round} {protocol} loaded"));
        let (Some(begin), Some(end)) = (begin, end) else {
            return Err(format!("round {round}: the kernel was not loaded over {protocol}; the console:\n{}", lab::tail(&console())));
        };
        first_start.get_or_insert(begin);
        result.push(Load { round, protocol, seconds: (end - begin).as_secs_f64() });
    }
    let to_first = (first_start.unwrap_or(started) - started).as_secs_f64();
    Ok((to_first, result))
}

/// serve's log holds one TFTP transfer of the whole kernel with blksize 1024 and one HTTP GET of
/// it per load: the loads measured were those transfers. Returns the TFTP transfers' timeouts
/// (retransmissions) and serve's own seconds per TFTP transfer.
fn check_serve_log(log: &str, kernel_bytes: u64, rounds: usize) -> Result<(u64, Vec<f64>), String> {
    let field = |line: &str, key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).map(|v| v.trim_matches('"').to_string());
    let tftp: Vec<&str> = log.lines().filter(|l| l.contains("tftp: sent") && l.contains("nixos/bzImage")).collect();
    let http: Vec<&str> = log.lines().filter(|l| l.contains("http: sending") && l.contains("/nixos/bzImage")).collect();
    if tftp.len() != rounds || http.len() != rounds {
        return Err(format!("serve logged {} TFTP and {} HTTP transfers of the kernel, not {rounds} each:\n{log}", tftp.len(), http.len()));
    }
    let mut timeouts = 0;
    let mut seconds = Vec::new();
    for line in &tftp {
        let ok = field(line, "bytes").as_deref() == Some(&kernel_bytes.to_string()) && field(line, "blksize").as_deref() == Some("1024") && field(line, "windowsize").as_deref() == Some("1");
        if !ok {
            return Err(format!("a TFTP transfer of the kernel was not the whole file with blksize 1024, windowsize 1: {line}"));
        }
        timeouts += field(line, "timeouts").and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
        seconds.extend(field(line, "seconds").and_then(|s| s.parse::<f64>().ok()));
    }
    for line in &http {
        if field(line, "bytes").as_deref() != Some(&kernel_bytes.to_string()) || field(line, "offset").as_deref() != Some("0") {
            return Err(format!("an HTTP transfer of the kernel was not the whole file: {line}"));
        }
    }
    Ok((timeouts, seconds))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

fn machine_description() -> String {
    let machine = common::cores_and_cpu();
    let package = |name: &str| first_line(Command::new("dpkg-query").args(["-W", "-f", "${Version}", name]));
    format!(
        "{machine}, Linux {}; QEMU {} (TCG), OVMF {}, GRUB {} (grub-efi-amd64-bin); one virtio-net NIC on a tap device in a bridge, serve in the same network namespace",
        first_line(Command::new("uname").arg("-r")),
        first_line(Command::new("sh").args(["-c", "qemu-system-x86_64 --version | head -1 | awk '{print $4}'"])),
        package("ovmf"),
        package("grub-efi-amd64-bin"),
    )
}

/// tcpdump on the lab's tap device (the client's side of the bridge) writing HTTP's packets to
/// `file`, headers only; stopped (SIGINT, so that it writes out its buffer) when dropped.
struct Capture {
    tcpdump: std::process::Child,
    log: std::path::PathBuf,
}

impl Capture {
    fn start(ns: &str, file: &Path, log: &Path) -> Result<Capture, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let tcpdump = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", "tap0", "-n", "-U", "-s", "96", "-B", "8192", "-w"])
            .arg(file)
            .args(["tcp", "port", "80"])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start tcpdump (apt-get install tcpdump): {e}"))?;
        let capture = Capture { tcpdump, log: log.to_owned() };
        let started = Instant::now();
        while !std::fs::read_to_string(log).unwrap_or_default().contains("listening on") {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("tcpdump did not start within 30 s: {}", std::fs::read_to_string(log).unwrap_or_default()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(capture)
    }

    /// Stops tcpdump; its summary ("N packets captured ... N dropped by kernel").
    fn stop(mut self) -> String {
        // SAFETY: kill(2) on the tcpdump this struct started (`ip netns exec` execs it).
        unsafe { libc::kill(self.tcpdump.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.tcpdump.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|l| l.contains("packets")).collect::<Vec<_>>().join("; ")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Stopped already when `stop` ran; otherwise (a failed run) ended here.
        let _ = self.tcpdump.kill();
        let _ = self.tcpdump.wait();
    }
}

/// What the capture shows of each HTTP connection: the markdown for the report.
fn capture_report(pcap: &Path, tcpdump_summary: &str) -> Result<String, String> {
    let bytes = std::fs::read(pcap).map_err(|e| format!("{}: {e}", pcap.display()))?;
    let segments = common::tcp_capture::segments(&bytes, 80)?;
    let transfers = common::tcp_capture::transfers(&segments);
    Ok(format!(
        "Packet capture (tcpdump on tap0, the client's side of the bridge; {tcpdump_summary}): every HTTP connection GRUB opened, in order. \
         \"At the window\": the share of the server's data segments sent with the client's whole window in flight. \
         \"ACK after\": from a data segment leaving serve's side to the client's ACK covering it. \
         \"Close\": the first FIN or RST of the connection, either side's.\n\n{}",
        common::tcp_capture::report(&transfers)
    ))
}

fn bench(rounds: usize, capture: bool) -> Result<String, String> {
    if common::run(Command::new("id").arg("-u"))?.trim() != "0" {
        return Err("run it as root: the benchmark makes network namespaces".into());
    }
    // The machine-wide QEMU lock: the end-to-end tests' QEMUs would share the two cores.
    let _one_qemu = lab::preflight(&["/usr/bin/grub-mkimage", "/usr/bin/tar"]);
    let started = Instant::now();
    let busy_before = busy_before_run();
    let cpu_before = cpu_time();
    let target = lab::root().join("target");
    std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    let workdir = tempfile::Builder::new().prefix("bench-kernel-load-").tempdir_in(&target).map_err(|e| format!("cannot make a directory in target/: {e}"))?;
    let dir = workdir.path();
    std::fs::create_dir_all(dir.join("tftp/nixos")).map_err(|e| e.to_string())?;
    let kernel = lab::test_kernel(&["--source", "static", "--config", CONFIG]);
    std::fs::copy(&kernel, dir.join("tftp/nixos/bzImage")).map_err(|e| format!("copy {}: {e}", kernel.display()))?;
    let kernel_bytes = std::fs::metadata(&kernel).map_err(|e| e.to_string())?.len();
    grub_image(dir, &grub_cfg(rounds))?;

    let mut lab = Lab::new("kload");
    let serve_log = dir.join("serve.log");
    let config = lab::root().join(CONFIG);
    let path = |p: &Path| p.to_str().map(str::to_string).ok_or("a path that is not UTF-8");
    lab.spawn(
        &[
            env!("CARGO_BIN_EXE_nixos-pxe"),
            "serve",
            "--source",
            "static",
            "--config",
            &path(&config)?,
            "--interface",
            "br0",
            "--tftp-root",
            &path(&dir.join("tftp"))?,
            "--state-dir",
            &path(&dir.join("state"))?,
            "--http-port",
            "80",
        ],
        &serve_log,
    );
    let ns = lab.ns.clone();
    lab.wait_listening(&ns, &[Socket::Udp(67), Socket::Udp(69), Socket::TcpListen(80)]);
    let pcap = dir.join("http.pcap");
    let tcpdump = if capture { Some(Capture::start(&ns, &pcap, &dir.join("tcpdump.log"))?) } else { None };
    let mut qemu = Qemu::start(&lab, dir, 1024, None);
    let lines = stamp_console(&mut qemu)?;
    let captured = match tcpdump {
        Some(t) => {
            let summary = t.stop();
            let kept = lab::root().join("target/bench-kernel-load.pcap");
            std::fs::copy(&pcap, &kept).map_err(|e| format!("keep {}: {e}", pcap.display()))?;
            format!("\n{}\nThe capture is kept in target/bench-kernel-load.pcap.\n", capture_report(&pcap, &summary)?)
        }
        None => String::new(),
    };
    let (to_first, loads) = loads(&lines, rounds)?;
    let log = std::fs::read_to_string(&serve_log).unwrap_or_default();
    let (timeouts, mut serve_tftp_seconds) = check_serve_log(&log, kernel_bytes, rounds)?;
    drop(qemu);
    drop(lab);

    let mb_per_s = |s: f64| kernel_bytes as f64 / 1e6 / s;
    let mut table = "| round | protocol | s | MB/s |\n|---:|---|---:|---:|\n".to_string();
    for l in &loads {
        table += &format!("| {} | {} | {:.2} | {:.1} |\n", l.round, l.protocol, l.seconds, mb_per_s(l.seconds));
    }
    let of = |p: &str| loads.iter().filter(|l| l.protocol == p).map(|l| l.seconds).collect::<Vec<f64>>();
    let (mut tftp, mut http) = (of("tftp"), of("http"));
    let ratios: Vec<f64> = (1..=rounds)
        .map(|r| {
            let get = |p: &str| loads.iter().find(|l| l.round == r && l.protocol == p).map_or(f64::NAN, |l| l.seconds);
            get("tftp") / get("http")
        })
        .collect();
    let (min_ratio, max_ratio) = ratios.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let (tftp_median, http_median) = (median(&mut tftp), median(&mut http));
    let summary = format!(
        "| protocol | s (median of {rounds}) | fastest–slowest s | MB/s |\n|---|---:|---:|---:|\n\
         | TFTP (blksize 1024, lock-step) | {tftp_median:.2} | {:.2}–{:.2} | {:.1} |\n\
         | HTTP | {http_median:.2} | {:.2}–{:.2} | {:.1} |\n\n\
         TFTP time ÷ HTTP time: {:.1} (medians); round by round {min_ratio:.1}–{max_ratio:.1}. \
         serve's own time per TFTP transfer (from the request to the last ACK): median {:.2} s; \
         retransmissions (timeouts) in all TFTP transfers: {timeouts}. \
         From GRUB's start (its \"Welcome to GRUB!\") to the first `linux`: {to_first:.2} s, the same whichever protocol follows.\n",
        tftp[0],
        tftp[tftp.len() - 1],
        mb_per_s(tftp_median),
        http[0],
        http[http.len() - 1],
        mb_per_s(http_median),
        tftp_median / http_median,
        median(&mut serve_tftp_seconds),
    );
    let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    Ok(format!(
        "Measured by `cargo bench --bench kernel_load -- --rounds {rounds}` on {date} in {:.0} s.\n\
         Machine: {}.\n\
         CPU busy in the second before the run: {busy_before:.0}%; CPU time stolen by the hypervisor during it: {:.1}%.\n\
         Kernel: {kernel_bytes} bytes (the end-to-end tests' bzImage). One GRUB run, {rounds} rounds, tftp first in odd rounds, http first in even ones; \
         a load is timed from the console line before GRUB's `linux` to the line after it. MB/s = 10^6 bytes per second.\n\n{summary}\n{table}{captured}",
        started.elapsed().as_secs_f64(),
        machine_description(),
        percent_since(&cpu_before, |t| t.stolen),
    ))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and must not start QEMU.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("benches/kernel_load.rs: run it with `cargo bench --bench kernel_load` (as root)");
        return;
    }
    let rounds = match args.iter().position(|a| a == "--rounds").map(|i| args.get(i + 1).and_then(|n| n.parse::<usize>().ok())) {
        None => DEFAULT_ROUNDS,
        Some(Some(n)) if n >= 1 => n,
        Some(_) => {
            eprintln!("bench: --rounds takes a number of rounds, at least 1");
            std::process::exit(2);
        }
    };
    // What a capture kept from an earlier run shows, without running anything.
    if let Some(i) = args.iter().position(|a| a == "--read-capture") {
        let Some(file) = args.get(i + 1) else {
            eprintln!("bench: --read-capture takes a pcap file");
            std::process::exit(2);
        };
        match capture_report(Path::new(file), "read from a file") {
            Ok(report) => println!("{report}"),
            Err(e) => {
                eprintln!("bench: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let capture = args.iter().any(|a| a == "--capture");
    common::print_and_keep(bench(rounds, capture), "bench-kernel-load.md");
}
