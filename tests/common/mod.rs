//! What the namespace tests share: `with_serve_on_loopback` for serve's protocol tests, and the
//! PXE lab of the QEMU tests: a network namespace with the boot network, the servers
//! started in it, a UEFI QEMU client on its tap device, and the serial console read back.
//! Everything a test creates here (namespaces, processes) is removed when its owner is dropped,
//! also when the test panics. Nothing is sent outside the namespace.
#![allow(dead_code)] // each test binary uses part of it

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
pub const GRUB_LIB: &str = "/usr/lib/grub/x86_64-efi";
/// The boot server's address on the lab's bridge, as in the example configuration.
pub const SERVER_ADDRESS: &str = "10.42.0.1";

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, fails the test with its output unless it succeeds, returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (dev/install-deps.sh test installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh(script: &str) -> String {
    run(Command::new("sh").args(["-ec", script]))
}

/// Runs this build's nixos-pxe from the project's root.
pub fn nixos_pxe(args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_nixos-pxe"))
        .args(args)
        .current_dir(root()))
}

/// One QEMU at a time in a test binary: under TCG two would starve each other on two cores.
static ONE_QEMU: Mutex<()> = Mutex::new(());

/// What keeps other QEMU boots waiting while one runs: the lock of this test binary and a lock
/// file for every process on the machine (several checkouts' test runs, a benchmark), held until
/// dropped.
pub struct OneQemu {
    _in_process: MutexGuard<'static, ()>,
    _machine: std::fs::File,
}

/// Root, the firmware and GRUB present; returns the guard that keeps other boots waiting.
pub fn preflight(programs: &[&str]) -> OneQemu {
    let in_process = ONE_QEMU.lock().unwrap_or_else(PoisonError::into_inner);
    assert_eq!(
        run(Command::new("id").arg("-u")),
        "0\n",
        "this test needs root for network namespaces (CI runs as root)"
    );
    for file in [OVMF_CODE, OVMF_VARS, GRUB_LIB].iter().chain(programs) {
        assert!(
            Path::new(file).exists(),
            "{file} missing: run dev/install-deps.sh test"
        );
    }
    let path = "/run/lock/nixos-pxe-qemu.lock";
    let machine = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: flock(2) on a descriptor this function owns; blocks until no other process holds it.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&machine), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {path}: {}", std::io::Error::last_os_error());
    OneQemu {
        _in_process: in_process,
        _machine: machine,
    }
}

/// A network namespace holding the boot network: bridge br0 with the server's address and tap0
/// for QEMU. Owns the processes started in it and any extra namespaces joined to the bridge.
pub struct Lab {
    pub ns: String,
    children: Vec<(Child, PathBuf)>,
    extra: Vec<String>,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let ns = format!("nixos-pxe-{tag}-{}", std::process::id());
        // A stale namespace of the same name (an earlier run killed by a signal) goes first.
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&format!(
            "ip netns add {ns}; ip -n {ns} link set lo up; ip -n {ns} link add br0 type bridge; \
             ip -n {ns} addr add {SERVER_ADDRESS}/24 dev br0; ip -n {ns} link set br0 up; \
             ip -n {ns} tuntap add dev tap0 mode tap; ip -n {ns} link set tap0 master br0 up"
        ));
        reap_when_this_process_ends(&ns);
        Lab {
            ns,
            children: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// A second namespace with `address`/24 on its eth0, joined to the lab's bridge by a veth
    /// pair: another machine on the boot network (a site DHCP server). Deleted with the lab.
    pub fn add_host(&mut self, suffix: &str, address: &str) -> String {
        let host = format!("{}-{suffix}", self.ns);
        let _ = Command::new("ip").args(["netns", "del", &host]).output();
        sh(&format!(
            "ip netns add {host}; ip -n {host} link set lo up; \
             ip -n {ns} link add veth-{suffix} type veth peer name eth0 netns {host}; \
             ip -n {ns} link set veth-{suffix} master br0 up; \
             ip -n {host} addr add {address}/24 dev eth0; ip -n {host} link set eth0 up",
            ns = self.ns
        ));
        reap_when_this_process_ends(&host);
        self.extra.push(host.clone());
        host
    }

    /// Starts `args` inside the lab's namespace, stdout and stderr to `log`.
    pub fn spawn(&mut self, args: &[&str], log: &Path) {
        let ns = self.ns.clone();
        self.spawn_in(&ns, args, log);
    }

    /// Starts `args` in namespace `ns` (the lab's or one from `add_host`), in a process group
    /// of its own so that everything it starts is stopped with it.
    pub fn spawn_in(&mut self, ns: &str, args: &[&str], log: &Path) {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {args:?}: {e}"));
        self.children.push((child, log.to_owned()));
    }

    /// SIGKILL to the process group started with `log` (a crash, not a clean stop), and waits
    /// for it; it is no longer one of the lab's processes.
    pub fn kill(&mut self, log: &Path) {
        let Some(i) = self.children.iter().position(|(_, l)| l == log) else {
            panic!("no process of this lab logs to {}", log.display());
        };
        let (mut child, _) = self.children.remove(i);
        // SAFETY: kill(2) on the process group this lab created for the spawn.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
    }

    /// The servers that have exited, each with its log: a server that rejected its rendered
    /// configuration fails the test at once instead of after a boot timeout.
    pub fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(child, log)| match child.try_wait() {
                Ok(Some(status)) => Some(format!(
                    "{} exited ({status}):\n{}",
                    log.display(),
                    std::fs::read_to_string(log.as_path()).unwrap_or_default()
                )),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            // SAFETY: kill(2) on the process group this lab created for the spawn.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        for ns in self.extra.iter().chain([&self.ns]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Cleanup on interrupt: Drop does not run when the test binary is killed (Ctrl-C, a CI timeout),
/// so a small watcher in a session of its own (a terminal's Ctrl-C does not reach it) waits for
/// this process to end and then kills what still runs in namespace `ns` and deletes it. After a
/// normal Drop it finds nothing left to do.
fn reap_when_this_process_ends(ns: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         ip netns pids {ns} 2>/dev/null | xargs -r kill -9; ip netns del {ns} 2>/dev/null; true",
        pid = std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

/// A UEFI client: OVMF under TCG, a virtio NIC on tap0 with OVMF's own PXE (no option ROM, as on
/// a server's onboard NIC) first in the boot order, an optional virtio disk, the serial console
/// in a file. `-no-reboot`: a reboot ends QEMU, so an install that reboots is seen as an exit.
pub struct Qemu {
    child: Child,
    pub serial: PathBuf,
    pub log: PathBuf,
    pub started: Instant,
}

impl Qemu {
    pub fn start(lab: &Lab, dir: &Path, memory_mib: u32, disk: Option<&Path>) -> Qemu {
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy(OVMF_VARS, &vars).expect("copy OVMF vars");
        let serial = dir.join("serial.log");
        let log = dir.join("qemu.log");
        let mut args: Vec<String> = [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-machine",
            "q35",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device",
            "virtio-net-pci,netdev=n0,romfile=,bootindex=1",
        ]
        .map(String::from)
        .to_vec();
        args.extend([
            "-m".into(),
            memory_mib.to_string(),
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", vars.display()),
            "-serial".into(),
            format!("file:{}", serial.display()),
        ]);
        if let Some(disk) = disk {
            args.extend([
                "-drive".into(),
                format!("file={},format=raw,if=none,id=d0", disk.display()),
                "-device".into(),
                "virtio-blk-pci,drive=d0".into(),
            ]);
        }
        let file = std::fs::File::create(&log).expect("qemu log");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("start qemu");
        Qemu {
            child,
            serial,
            log,
            started: Instant::now(),
        }
    }

    pub fn console(&self) -> String {
        console(&self.serial)
    }

    /// QEMU's exit status once it has ended (a reboot or power-off with -no-reboot).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A serial console log as text, carriage returns dropped.
pub fn console(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).replace('\r', "")
}

/// Whether every one of `expect` appears in `text`, in that order. Lines are joined first, so a
/// message GRUB wrapped at the terminal's width still matches.
pub fn in_order(text: &str, expect: &[&str]) -> bool {
    let flat = text.replace('\n', " ");
    let mut rest = flat.as_str();
    for e in expect {
        match rest.find(e) {
            Some(i) => rest = &rest[i + e.len()..],
            None => return false,
        }
    }
    true
}

/// The last 80 lines of a console, for failure messages.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// The test kernel for `config`: built by tests/e2e/build-test-kernel.sh from Debian's
/// linux-source with `nixos-pxe kernel-config`'s fragment, cached outside the work tree keyed by
/// the fragment's, the base config's and the source's hashes (only the first run pays, ~13 min on
/// two cores). $NIXOS_PXE_TEST_KERNEL overrides it.
pub fn test_kernel(config_args: &[&str]) -> PathBuf {
    if let Some(k) = std::env::var_os("NIXOS_PXE_TEST_KERNEL") {
        return PathBuf::from(k);
    }
    let fragment = tempfile::NamedTempFile::new().expect("temp file");
    let mut args = vec!["kernel-config"];
    args.extend(config_args);
    std::fs::write(fragment.path(), nixos_pxe(&args)).expect("write fragment");
    let out = run(Command::new("bash")
        .arg(root().join("tests/e2e/build-test-kernel.sh"))
        .arg(fragment.path()));
    PathBuf::from(
        out.lines()
            .last()
            .expect("build-test-kernel.sh prints the kernel's path"),
    )
}

/// Runs the bash `script` in a fresh network namespace (`unshare -n`, loopback only) in `dir`,
/// after starting `nixos-pxe serve SERVE_ARGS` there and waiting for `ready` in its log
/// (server.log). `fail MSG` in the script ends it with the server's log. Afterwards serve gets
/// SIGINT and must exit 0 and log `stopped`. Returns whether all of it held, and the output.
pub fn with_serve_on_loopback(dir: &Path, serve_args: &str, ready: &str, script: &str, stopped: &str) -> (bool, String) {
    let bin = env!("CARGO_BIN_EXE_nixos-pxe");
    let full = format!(
        r#"set -eu
cd {dir}
ip link set lo up
{bin} serve {serve_args} 2>server.log &
SERVER=$!
for i in $(seq 50); do grep -q "{ready}" server.log && break; sleep 0.1; done
fail() {{ echo "FAILED: $*"; cat server.log; kill -INT $SERVER; exit 1; }}
{script}
kill -INT $SERVER
wait $SERVER || fail "server exited with status $? after SIGINT"
grep -q "{stopped}" server.log || fail "no clean stop in the log"
echo ALL-OK
"#,
        dir = dir.display()
    );
    let out = Command::new("unshare")
        .args(["-n", "bash", "-c", &full])
        .output()
        .expect("run unshare (needs root)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains("ALL-OK"), text)
}
