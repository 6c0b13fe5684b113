//! What the benchmarks share: shell commands, the server and client network namespaces joined by
//! a veth pair (removed with everything in them when dropped, and by a watcher process when the
//! benchmark is killed), servers started in a namespace, and the machine's CPU time.
#![allow(dead_code)] // each benchmark uses part of it

pub mod tcp_capture;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVER_ADDRESS: &str = "10.77.0.1";
pub const CLIENT_ADDRESS: &str = "10.77.0.2";
pub const SERVER_INTERFACE: &str = "veth-s";
pub const CLIENT_INTERFACE: &str = "veth-c";

// ---------------------------------------------------------------------------------------------
// Shell commands, namespaces and servers

/// Runs `command`, returns its stdout; a failure names the command and carries its stderr.
pub fn run(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{command:?} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

pub fn sh(script: &str) -> Result<String, String> {
    run(Command::new("sh").args(["-ec", script]))
}

/// A network namespace, held open so that commands can enter it with setns(2) without the
/// process start of `ip netns exec` in every timed transfer.
pub struct Namespace {
    pub name: String,
    handle: File,
}

impl Namespace {
    pub fn open(name: &str) -> Result<Namespace, String> {
        let path = format!("/run/netns/{name}");
        let handle = File::open(&path).map_err(|e| format!("open network namespace {path}: {e}"))?;
        Ok(Namespace { name: name.to_string(), handle })
    }

    /// Moves the calling thread into this namespace (setns(2) affects the thread only).
    pub fn enter(&self) -> std::io::Result<()> {
        // SAFETY: setns(2) on a descriptor `self` keeps open.
        if unsafe { libc::setns(self.handle.as_raw_fd(), libc::CLONE_NEWNET) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }

    /// `program` to be started inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let fd = self.handle.as_raw_fd();
        let mut command = Command::new(program);
        // SAFETY: setns(2) is async-signal-safe; `fd` stays open as long as `self` (the bench's
        // namespaces outlive every command started in them).
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
        command
    }

    /// Kills every process left in the namespace and waits (up to 5 s) until none is left.
    pub fn kill_processes(&self) {
        let _ = sh(&format!("ip netns pids {} 2>/dev/null | xargs -r kill -9", self.name));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match run(Command::new("ip").args(["netns", "pids", &self.name])) {
                Ok(pids) if pids.trim().is_empty() => return,
                Err(_) => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// The server and client namespaces joined by a veth pair; deleted (with whatever runs in them)
/// when dropped.
pub struct Namespaces {
    pub server: Namespace,
    pub client: Namespace,
}

impl Namespaces {
    /// Also starts the watcher that deletes them and `workdir` when this process ends in a way
    /// that runs no destructor (Ctrl-C, kill).
    pub fn create(workdir: &Path) -> Result<Namespaces, String> {
        Namespaces::create_segment(workdir, "", 24)
    }

    /// The same with the addresses in a /`prefix` network (a DHCP pool larger than a /24).
    #[allow(dead_code)]
    pub fn create_with_prefix(workdir: &Path, prefix: u8) -> Result<Namespaces, String> {
        Namespaces::create_segment(workdir, "", prefix)
    }

    /// A pair of namespaces with the addresses in a /`prefix` network; another call with another
    /// `tag` makes another network segment with the same addresses (`tag` tells the pairs apart).
    #[allow(dead_code)]
    pub fn create_segment(workdir: &Path, tag: &str, prefix: u8) -> Result<Namespaces, String> {
        let pid = std::process::id();
        let (server, client) = (format!("nixos-pxe-bench-srv-{tag}{pid}"), format!("nixos-pxe-bench-cli-{tag}{pid}"));
        clean_up_when_this_process_ends(&[&server, &client], workdir)?;
        sh(&format!(
            "ip netns add {server}; ip netns add {client}; \
             ip -n {server} link set lo up; ip -n {client} link set lo up; \
             ip -n {server} link add {SERVER_INTERFACE} type veth peer name {CLIENT_INTERFACE} netns {client}; \
             ip -n {server} addr add {SERVER_ADDRESS}/{prefix} dev {SERVER_INTERFACE}; ip -n {server} link set {SERVER_INTERFACE} up; \
             ip -n {client} addr add {CLIENT_ADDRESS}/{prefix} dev {CLIENT_INTERFACE}; ip -n {client} link set {CLIENT_INTERFACE} up"
        ))
        .map_err(|e| format!("cannot create the benchmark's network namespaces: {e}"))?;
        Ok(Namespaces { server: Namespace::open(&server)?, client: Namespace::open(&client)? })
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            ns.kill_processes();
            let _ = run(Command::new("ip").args(["netns", "del", &ns.name]));
        }
    }
}

/// A watcher in a process group of its own (a terminal's Ctrl-C does not reach it) waits for this
/// process to end, then kills what still runs in `namespaces`, deletes them and removes `workdir`.
/// After a normal end there is nothing left for it to do.
pub fn clean_up_when_this_process_ends(namespaces: &[&str], workdir: &Path) -> Result<(), String> {
    let mut script = format!("while kill -0 {} 2>/dev/null; do sleep 1; done; ", std::process::id());
    for ns in namespaces {
        script += &format!("ip netns pids {ns} 2>/dev/null | xargs -r kill -9; ip netns del {ns} 2>/dev/null; ");
    }
    script += "rm -rf -- \"$1\"";
    Command::new("sh")
        .args(["-c", &script, "bench-cleanup"])
        .arg(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the clean-up watcher: {e}"))
}

/// How to start one server: a program and its arguments, run in the server namespace.
pub struct ServerSpec {
    pub name: &'static str,
    pub program: String,
    pub args: Vec<String>,
}

/// A running server (in a process group of its own); killed, with everything it started, when
/// dropped.
pub struct Server<'a> {
    name: &'static str,
    child: Child,
    log: PathBuf,
    namespace: &'a Namespace,
}

impl<'a> Server<'a> {
    pub fn start(spec: &ServerSpec, namespace: &'a Namespace, log: PathBuf) -> Result<Server<'a>, String> {
        let file = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let stderr = file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let child = namespace
            .command(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {} ({}): {e}", spec.name, spec.program))?;
        Ok(Server { name: spec.name, child, log, namespace })
    }

    /// Waits until `probe` succeeds; an exit of the server or `timeout` is an error with its log.
    pub fn wait_until_ready(&mut self, timeout: Duration, mut probe: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited ({status}) before it answered:\n{}", self.name, self.log_text()));
            }
            if probe() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not answer within {} s:\n{}", self.name, timeout.as_secs(), self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's process id (the program started, not a shell around it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the server has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log {}: {e})", self.log.display()))
    }
}

impl Drop for Server<'_> {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this program created for the server.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
        // The next server binds the same ports: wait until nothing of this one is left.
        self.namespace.kill_processes();
    }
}

/// CPU time (user + system) process `pid` has used so far, from /proc/PID/stat.
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces and parentheses): the 3rd, state,
    // comes first, so the 14th (utime) and 15th (stime) are at 11 and 12.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The first line of `command`'s output, or what went wrong.
pub fn first_line(command: &mut Command) -> String {
    run(command).map_or_else(|e| e, |out| out.lines().next().unwrap_or_default().trim().to_string())
}

/// The machine's CPU time so far, from /proc/stat's "cpu" line: all, idle (with iowait), and
/// stolen by the hypervisor, in ticks.
pub struct CpuTime {
    pub all: u64,
    pub idle: u64,
    pub stolen: u64,
}

pub fn cpu_time() -> CpuTime {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let first = stat.lines().next().unwrap_or_default();
    // user nice system idle iowait irq softirq steal (guest time is already counted in user).
    let ticks: Vec<u64> = first.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    CpuTime { all: ticks.iter().sum(), idle: at(3) + at(4), stolen: at(7) }
}

/// The share of the machine's CPU time since `before` that `part` picks out, in percent.
pub fn percent_since(before: &CpuTime, part: impl Fn(&CpuTime) -> u64) -> f64 {
    let now = cpu_time();
    let all = now.all.saturating_sub(before.all).max(1);
    part(&now).saturating_sub(part(before)) as f64 * 100.0 / all as f64
}

/// How busy the machine is before the run (other builds or tests), over one second, in percent.
/// Warns when it is busy: other work slows the servers unevenly and blurs the ratios.
pub fn busy_before_run() -> f64 {
    let before = cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let busy = 100.0 - percent_since(&before, |t| t.idle);
    if busy > 10.0 {
        eprintln!("bench: warning: the machine is {busy:.0}% busy before the run: other work will blur the figures");
    }
    busy
}

// ---------------------------------------------------------------------------------------------
// The report

/// Prints a benchmark's report and keeps it in `target/<file>` (the README's tables are copied
/// from there), or says why the benchmark failed; either failure exits with status 1.
pub fn print_and_keep(result: Result<String, String>, file: &str) {
    let report = result.unwrap_or_else(|e| {
        eprintln!("bench: {e}");
        std::process::exit(1);
    });
    println!("{report}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join(file);
    if let Err(e) = std::fs::write(&path, &report) {
        eprintln!("bench: cannot write {}: {e}", path.display());
        std::process::exit(1);
    }
}

/// "N cores (CPU model)": how every benchmark's machine description begins.
pub fn cores_and_cpu() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| info.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())))
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu})")
}
