//! What the namespace tests share: `with_serve_on_loopback` for serve's protocol tests, and the
//! PXE lab of the QEMU tests: a network namespace with the boot network, the servers
//! started in it, a UEFI QEMU client on its tap device, and the serial console read back.
//! Everything a test creates here (namespaces, processes) is removed when its owner is dropped,
//! also when the test panics, and by a watcher when the test process is killed. Nothing is sent
//! outside the namespace, and the host is checked to be as it was (host_state.rs).
#![allow(dead_code)] // each test binary uses part of it

pub mod bmc;
pub mod efi_disk;
pub mod host_state;
pub mod nix_format;
pub mod pypi_venv;
pub mod signing_keys;
pub mod stand_in_root;
pub mod virt_firmware;

pub use host_state::HostState;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
pub const GRUB_LIB: &str = "/usr/lib/grub/x86_64-efi";
/// GRUB's i386-pc modules (Debian's grub-pc-bin), for bios.0.
pub const GRUB_BIOS_LIB: &str = "/usr/lib/grub/i386-pc";
/// The boot server's address on the lab's bridge, as in the example configuration.
pub const SERVER_ADDRESS: &str = "10.42.0.1";
/// The MAC address of the QEMU client's NIC (QEMU's default for the first NIC, set explicitly).
pub const CLIENT_MAC: &str = "52:54:00:12:34:56";
/// How long a server may take to start listening on a busy two-core machine.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);

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
/// Dropped without a panic, it checks that the host is as it was when the lab was made
/// (`HostState`): among the rest, that nothing holds a file below the directories its servers
/// log to any more, and that its namespaces are gone.
pub struct Lab {
    pub ns: String,
    children: Vec<(Child, PathBuf)>,
    extra: Vec<String>,
    host_before: HostState,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let ns = format!("nixos-pxe-{tag}-{}", std::process::id());
        // The watcher first and the Lab before any command that can fail: a half-made namespace
        // is deleted by Drop on a panic and by the watcher when the test process is killed.
        reap_namespace_when_this_process_ends(&ns);
        host_state::namespace_owned(&ns);
        // A stale namespace of the same name (an earlier run killed by a signal) goes first.
        delete_namespace(&ns);
        let lab = Lab {
            ns,
            children: Vec::new(),
            extra: Vec::new(),
            host_before: HostState::now(),
        };
        sh(&format!(
            "ip netns add {ns}; ip -n {ns} link set lo up; ip -n {ns} link add br0 type bridge; \
             ip -n {ns} addr add {SERVER_ADDRESS}/24 dev br0; ip -n {ns} link set br0 up; \
             ip -n {ns} tuntap add dev tap0 mode tap; ip -n {ns} link set tap0 master br0 up",
            ns = lab.ns
        ));
        lab
    }

    /// A second namespace with `address`/24 on its eth0, joined to the lab's bridge by a veth
    /// pair: another machine on the boot network (a site DHCP server). Deleted with the lab.
    pub fn add_host(&mut self, suffix: &str, address: &str) -> String {
        let host = format!("{}-{suffix}", self.ns);
        reap_namespace_when_this_process_ends(&host);
        host_state::namespace_owned(&host);
        delete_namespace(&host);
        self.extra.push(host.clone());
        sh(&format!(
            "ip netns add {host}; ip -n {host} link set lo up; \
             ip -n {ns} link add veth-{suffix} type veth peer name eth0 netns {host}; \
             ip -n {ns} link set veth-{suffix} master br0 up; \
             ip -n {host} addr add {address}/24 dev eth0; ip -n {host} link set eth0 up",
            ns = self.ns
        ));
        host
    }

    /// Starts `args` inside the lab's namespace, stdout and stderr to `log`.
    pub fn spawn(&mut self, args: &[&str], log: &Path) {
        let ns = self.ns.clone();
        self.spawn_in(&ns, args, log);
    }

    /// Starts `args` in namespace `ns` (the lab's or one from `add_host`), in a process group
    /// of its own so that everything it starts is stopped with it. The directory of `log` (the
    /// test's own) is watched from now on: when the lab is dropped nothing may hold a file there.
    pub fn spawn_in(&mut self, ns: &str, args: &[&str], log: &Path) {
        let dir = log.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        assert!(
            !["/", "/tmp", "/var/tmp", "/run", "."].iter().any(|shared| dir == Path::new(shared)),
            "{}: a lab's logs go in the test's own directory (the guard watches it)",
            log.display()
        );
        self.host_before.watch(dir);
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

    /// An IPv6 router on the boot network: a dnsmasq that only sends router advertisements for
    /// fd42::/64 from br0 (no DHCP, no DNS). iPXE waits for one after its DHCP; without it it sent
    /// router solicitations for 13 s before it fetched the boot file (measured, see src/loader.rs).
    /// A site's router would answer the same way; the boot server's configs never do.
    pub fn advertise_ipv6_router(&mut self, dir: &Path) {
        sh(&format!("ip -n {} addr add fd42::1/64 dev br0 nodad", self.ns));
        let leases = format!("--dhcp-leasefile={}", dir.join("ipv6-router.leases").display());
        self.spawn(
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--log-facility=-",
                "--pid-file",
                "--conf-file=/dev/null",
                "--port=0",
                "--interface=br0",
                "--enable-ra",
                "--dhcp-range=::,constructor:br0,ra-only",
                &leases,
            ],
            &dir.join("ipv6-router.log"),
        );
    }

    /// The process started with `log` (`ip netns exec` execs the command, so this is its pid;
    /// through `sh -c '... exec PROGRAM'`, the program's).
    pub fn pid(&self, log: &Path) -> u32 {
        self.children.iter().find(|(_, l)| l == log).map(|(c, _)| c.id()).unwrap_or_else(|| panic!("no process of this lab logs to {}", log.display()))
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

    /// Waits until `ready` holds (a server listening, answering): fails the test at once with
    /// the log of a server that exited, and after SERVER_START_TIMEOUT with every server's log.
    pub fn wait_until_ready(&mut self, what: &str, mut ready: impl FnMut(&Lab) -> bool) {
        let start = Instant::now();
        loop {
            let exited = self.exited();
            assert!(exited.is_empty(), "a server exited while waiting for {what}:\n{}", exited.join("\n"));
            if ready(self) {
                return;
            }
            if start.elapsed() > SERVER_START_TIMEOUT {
                let logs: Vec<String> = self
                    .children
                    .iter()
                    .map(|(_, log)| format!("--- {}:\n{}", log.display(), std::fs::read_to_string(log).unwrap_or_default()))
                    .collect();
                panic!("not ready within {SERVER_START_TIMEOUT:?}: {what}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every one of `sockets` is bound in namespace `ns` (see `wait_until_ready`).
    pub fn wait_listening(&mut self, ns: &str, sockets: &[Socket]) {
        let what = format!("{sockets:?} bound in namespace {ns}");
        self.wait_until_ready(&what, |_| listening(ns, sockets));
    }

    /// Whether `args` run in namespace `ns` succeed (a client's probe of a server).
    pub fn probe(&self, ns: &str, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
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
            delete_namespace(ns);
            host_state::namespace_released(ns);
        }
        // After a panic the test has failed already; a second panic here would abort.
        if !std::thread::panicking() {
            self.host_before.assert_unchanged(&format!("the lab {}", self.ns));
        }
    }
}

/// A socket a server has bound, as /proc/net/{udp,tcp}[6] shows it in a namespace.
#[derive(Clone, Copy, Debug)]
pub enum Socket {
    /// Any UDP socket on this local port.
    Udp(u16),
    /// A TCP socket listening on this local port.
    TcpListen(u16),
}

/// Whether every one of `sockets` is bound in network namespace `ns`.
pub fn listening(ns: &str, sockets: &[Socket]) -> bool {
    let table = |proto: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat"])
            .args([format!("/proc/net/{proto}"), format!("/proc/net/{proto}6")])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    };
    let (udp, tcp) = (table("udp"), table("tcp"));
    sockets.iter().all(|socket| match *socket {
        Socket::Udp(port) => bound(&udp, port, None),
        Socket::TcpListen(port) => bound(&tcp, port, Some("0A")),
    })
}

/// Whether a /proc/net table has a socket on local `port` (in state `state`, hex, if given).
fn bound(table: &str, port: u16, state: Option<&str>) -> bool {
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && state.is_none_or(|s| fields.get(3) == Some(&s))
    })
}

/// The arguments every dnsmasq of the tests runs with, so that it leaves the host alone: its log
/// into the test's log (not syslog), no pid file (`--pid-file` without a path: /run/dnsmasq is
/// shared with every dnsmasq on the machine, and a second one there made the first exit with
/// status 3), and its leases in `lease_file` in the test's directory instead of the host's
/// /var/lib/misc/dnsmasq.leases. None of them changes the rendered configuration.
pub fn dnsmasq_host_safe_args(lease_file: &Path) -> Vec<String> {
    vec![
        "--keep-in-foreground".into(),
        "--log-facility=-".into(),
        "--pid-file".into(),
        format!("--dhcp-leasefile={}", lease_file.display()),
    ]
}

/// Kills every process in network namespace `ns` and deletes it; nothing if there is none.
pub fn delete_namespace(ns: &str) {
    let _ = Command::new("sh")
        .args(["-c", "ip netns pids \"$1\" 2>/dev/null | xargs -r kill -9; ip netns del \"$1\" 2>/dev/null; true", "delete-namespace", ns])
        .status();
}

/// Cleanup on interrupt: Drop does not run when the test binary is killed (Ctrl-C, a CI timeout,
/// kill -9), so a small watcher in a process group of its own (a terminal's Ctrl-C does not reach it)
/// waits for this process to end and then runs the shell `cleanup`. Register it before making
/// what it removes; after a normal Drop it finds nothing left to do.
pub fn reap_when_this_process_ends(cleanup: &str) {
    let script = format!("while kill -0 {pid} 2>/dev/null; do sleep 1; done; {cleanup}; true", pid = std::process::id());
    // Never waited for: it outlives this process by design.
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .expect("start the clean-up watcher");
}

/// The watcher for network namespace `ns`: kills what still runs in it and deletes it.
pub fn reap_namespace_when_this_process_ends(ns: &str) {
    reap_when_this_process_ends(&format!("ip netns pids {ns} 2>/dev/null | xargs -r kill -9; ip netns del {ns} 2>/dev/null"));
}

/// A network namespace of this test process with a unique name starting with `tag`: made now,
/// deleted with everything in it when dropped (also on a panic) or, by a watcher, when the test
/// process is killed.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn new(tag: &str) -> Namespace {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("nixos-pxe-{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        reap_namespace_when_this_process_ends(&name);
        host_state::namespace_owned(&name);
        delete_namespace(&name);
        let ns = Namespace { name };
        run(Command::new("ip").args(["netns", "add", &ns.name]));
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        delete_namespace(&self.name);
        host_state::namespace_released(&self.name);
    }
}

/// Runs `cmd` (which must not outlive what `stop` stops) with stdout and stderr in files of
/// `dir` (a process it leaves behind cannot keep the test waiting on a pipe); after `timeout`
/// it calls `stop` and fails the test with the output so far. Returns the status and the output.
pub fn run_within(cmd: &mut Command, dir: &Path, timeout: Duration, stop: impl Fn()) -> (ExitStatus, String) {
    let (out, err) = (dir.join("run-within.stdout"), dir.join("run-within.stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            stop();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    match status {
        Some(status) => (status, text),
        None => panic!("{cmd:?} did not end within {timeout:?} and was stopped; its output:\n{text}"),
    }
}

/// How a QEMU client boots from the lab's network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Boot {
    /// OVMF's own UEFI PXE on a virtio NIC without an option ROM, as on a server's onboard NIC.
    OvmfPxe,
    /// OVMF's UEFI HTTP boot: its PXE turned off (fw_cfg opt/org.tianocore/IPv4PXESupport and
    /// IPv6PXESupport), so the "UEFI HTTPv4" boot option comes first.
    OvmfHttp,
    /// Legacy BIOS: SeaBIOS (machine pc) and the iPXE ROM of Debian's ipxe-qemu on the virtio NIC.
    SeaBiosIpxe,
}

/// SeaBIOS and the iPXE ROM QEMU loads for virtio-net-pci (from Debian's seabios and ipxe-qemu).
pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
pub const IPXE_VIRTIO_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

/// A client under TCG with the firmware and network boot of `Boot` (OVMF's UEFI PXE for `start`),
/// its NICs on the lab's tap devices, an optional virtio disk after the NICs in the boot order, the serial
/// console in a file. `-no-reboot`: a reboot ends QEMU, so an install that reboots is seen as an exit.
pub struct Qemu {
    child: Child,
    pub serial: PathBuf,
    pub log: PathBuf,
    pub started: Instant,
}

/// A NIC of the client: the tap device (in the lab's namespace) it is on, its MAC (QEMU's default
/// 52:54:00:12:34:56 when `None`), and its place in the firmware's boot order (`None`: not in it).
/// NICs are given to QEMU in order, so the first is the lowest PCI slot: the kernel's eth0.
#[derive(Debug, Clone, Copy)]
pub struct Nic<'a> {
    pub tap: &'a str,
    pub mac: Option<&'a str>,
    pub bootindex: Option<u32>,
}

/// The lab's one client NIC: tap0, CLIENT_MAC, first in the boot order.
pub const ONE_NIC: &[Nic<'static>] = &[Nic { tap: "tap0", mac: Some(CLIENT_MAC), bootindex: Some(1) }];

impl Qemu {
    pub fn start(lab: &Lab, dir: &Path, memory_mib: u32, disk: Option<&Path>) -> Qemu {
        Qemu::start_with(lab, dir, memory_mib, disk, Boot::OvmfPxe, ONE_NIC)
    }

    pub fn start_with_nics(lab: &Lab, dir: &Path, memory_mib: u32, disk: Option<&Path>, nics: &[Nic]) -> Qemu {
        Qemu::start_with(lab, dir, memory_mib, disk, Boot::OvmfPxe, nics)
    }

    pub fn start_with(lab: &Lab, dir: &Path, memory_mib: u32, disk: Option<&Path>, boot: Boot, nics: &[Nic]) -> Qemu {
        let (args, serial) = qemu_args(dir, memory_mib, disk, boot, nics);
        let log = dir.join("qemu.log");
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

/// QEMU's command line for a client (see `Qemu::start_with`) and its serial console's file. Each
/// NIC's device has the id `nicN` (N its place in `nics`) and the disk's `disk0`, so a monitor can
/// name them (tests/e2e/bmc-bridge.py sets their bootindex).
pub fn qemu_args(dir: &Path, memory_mib: u32, disk: Option<&Path>, boot: Boot, nics: &[Nic]) -> (Vec<String>, PathBuf) {
    let serial = dir.join("serial.log");
    let mut args: Vec<String> = ["qemu-system-x86_64", "-accel", "tcg", "-no-reboot", "-display", "none", "-monitor", "none"]
        .map(String::from)
        .to_vec();
    match boot {
        Boot::OvmfPxe | Boot::OvmfHttp => {
            let vars = dir.join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars).expect("copy OVMF vars");
            args.extend([
                "-machine".into(),
                "q35".into(),
                "-drive".into(),
                format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
                "-drive".into(),
                format!("if=pflash,format=raw,file={}", vars.display()),
            ]);
            if boot == Boot::OvmfHttp {
                for knob in ["IPv4PXESupport", "IPv6PXESupport"] {
                    args.extend(["-fw_cfg".into(), format!("name=opt/org.tianocore/{knob},string=no")]);
                }
            }
        }
        // Machine pc with its default SeaBIOS; the NICs keep QEMU's default ROM (iPXE).
        // -display none, not -nographic: with no display QEMU does not have SeaBIOS mirror
        // the VGA text to the serial port, which would put every character GRUB prints
        // (`terminal_output serial console`) there twice.
        Boot::SeaBiosIpxe => args.extend(["-machine".into(), "pc".into()]),
    }
    for (i, nic) in nics.iter().enumerate() {
        args.push("-netdev".into());
        args.push(format!("tap,id=n{i},ifname={},script=no,downscript=no", nic.tap));
        args.push("-device".into());
        // OVMF boots by its own UEFI network stack: no option ROM, as on an onboard NIC.
        let mut device = format!("virtio-net-pci,netdev=n{i},id=nic{i}");
        if boot != Boot::SeaBiosIpxe {
            device.push_str(",romfile=");
        }
        if let Some(index) = nic.bootindex {
            device.push_str(&format!(",bootindex={index}"));
        }
        if let Some(mac) = nic.mac {
            device.push_str(&format!(",mac={mac}"));
        }
        args.push(device);
    }
    if nics.is_empty() {
        // No NIC at all, not QEMU's default one: a client that boots its disk only.
        args.extend(["-nic".into(), "none".into()]);
    }
    args.extend(["-m".into(), memory_mib.to_string(), "-serial".into(), format!("file:{}", serial.display())]);
    if let Some(disk) = disk {
        args.extend([
            "-drive".into(),
            format!("file={},format=raw,if=none,id=d0", disk.display()),
            "-device".into(),
            // After the NICs in the boot order, as a server's disk is: OVMF connects only the devices
            // in the boot order, so without it GRUB sees no disk and `exit` goes to the setup app.
            "virtio-blk-pci,drive=d0,bootindex=9,id=disk0".into(),
        ]);
    }
    (args, serial)
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
    std::fs::write(fragment.path(), test_kernel_fragment(&nixos_pxe(&args))).expect("write fragment");
    let out = run(Command::new("bash")
        .arg(root().join("tests/e2e/build-test-kernel.sh"))
        .arg(fragment.path()));
    PathBuf::from(
        out.lines()
            .last()
            .expect("build-test-kernel.sh prints the kernel's path"),
    )
}

/// The test kernel's fragment from `kernel-config`'s: its symbols, sorted, plus an initrd's
/// (BLK_DEV_INITRD, RD_ZSTD: what bootServer.secureBoot adds), without the comments. So every
/// configuration whose fragment has the same symbols, Secure Boot's included, gets the same
/// kernel: one build per machine (about 13 minutes on two cores) instead of one more for
/// tests/secure_boot.rs. A kernel that can unpack an initrd boots without one as before.
pub fn test_kernel_fragment(from_kernel_config: &str) -> String {
    let mut symbols: Vec<&str> = from_kernel_config.lines().filter(|l| l.starts_with("CONFIG_")).collect();
    symbols.extend(["CONFIG_BLK_DEV_INITRD=y", "CONFIG_RD_ZSTD=y"]);
    symbols.sort_unstable();
    symbols.dedup();
    format!("# The test kernel: `nixos-pxe kernel-config`'s symbols and an initrd's (tests/common test_kernel_fragment).\n{}\n", symbols.join("\n"))
}

/// How long one `with_serve_on_loopback` script may take, transfers with packet loss included.
pub const LOOPBACK_SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the bash `script` in a fresh network namespace (loopback only) and a private mount
/// namespace (a file system the script mounts inside serve's roots is seen by serve and by
/// nothing outside) in `dir`, after starting `nixos-pxe serve SERVE_ARGS` there and waiting (up
/// to 10 s) for `ready` in its log (server.log); a server that never logs it fails the run with
/// its log. `fail MSG` in the script ends it with the server's log. Afterwards serve gets SIGINT
/// and must exit 0 and log `stopped`. Whatever ends the script (a failing command, the
/// LOOPBACK_SCRIPT_TIMEOUT, the test process killed) also ends serve and deletes the namespace;
/// then the host must be as it was (`HostState`, `dir` watched). Returns whether all of it held,
/// and the output.
pub fn with_serve_on_loopback(dir: &Path, serve_args: &str, ready: &str, script: &str, stopped: &str) -> (bool, String) {
    let bin = env!("CARGO_BIN_EXE_nixos-pxe");
    let full = format!(
        r#"set -eu
cd {dir}
{bin} serve {serve_args} 2>server.log &
SERVER=$!
# A failing command (set -e) or `fail` must not leave serve running: stop it on every exit.
trap 'kill -9 $SERVER 2>/dev/null || true' EXIT
fail() {{ echo "FAILED: $*"; cat server.log; exit 1; }}
# wait_for_log PATTERN SECONDS: whether serve logs a line matching PATTERN (grep) within SECONDS.
wait_for_log() {{ local i; for i in $(seq $(( $2 * 10 ))); do grep -q -- "$1" server.log && return 0; sleep 0.1; done; grep -q -- "$1" server.log; }}
ready=
for i in $(seq 100); do
  if grep -q "{ready}" server.log; then ready=yes; break; fi
  kill -0 $SERVER 2>/dev/null || fail "serve exited before it logged '{ready}'"
  sleep 0.1
done
[ -n "$ready" ] || fail "serve did not log '{ready}' within 10 s"
{script}
kill -INT $SERVER
wait $SERVER || fail "server exited with status $? after SIGINT"
grep -q "{stopped}" server.log || fail "no clean stop in the log"
echo ALL-OK
"#,
        dir = dir.display()
    );
    let host_before = HostState::below(&[dir]);
    let ns = Namespace::new("lo");
    let (status, text) = run_within(
        Command::new("ip").args(["netns", "exec", &ns.name, "unshare", "--mount", "--propagation", "private", "bash", "-c", &full]),
        dir,
        LOOPBACK_SCRIPT_TIMEOUT,
        || delete_namespace(&ns.name),
    );
    drop(ns);
    host_before.assert_unchanged("a serve on loopback");
    (status.success() && text.contains("ALL-OK"), text)
}

/// busybox udhcpc in namespace `ns` (on its eth0): the address it got from the boot network's
/// DHCP server, configured on eth0 as a client does. The script goes to `dir`.
pub fn dhcp_lease(ns: &str, dir: &Path) -> Option<String> {
    let script = dir.join(format!("udhcpc-{ns}.sh"));
    std::fs::write(&script, "#!/bin/sh\nif [ \"$1\" = bound ]; then echo \"ip=$ip\"; ip addr add \"$ip/$mask\" dev \"$interface\"; fi\nexit 0\n").expect("udhcpc script");
    run(Command::new("chmod").arg("+x").arg(&script));
    let out = Command::new("timeout")
        .args(["30", "ip", "netns", "exec", ns, "busybox", "udhcpc", "-f", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-s"])
        .arg(&script)
        .output()
        .expect("run busybox udhcpc (dev/packages.txt: busybox-static)");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("ip=")).map(str::to_string)
}

/// A DHCPRELEASE of `address` in the name of `mac`, sent from namespace `ns` at `from` (an
/// address of its own) to the server at 10.42.0.1: what a neighbour forging a release sends.
pub fn forge_dhcp_release(ns: &str, from: &str, mac: &str, address: &str) {
    let script = format!(
        "import socket,struct\n\
         mac=bytes.fromhex('{mac}')\n\
         p=struct.pack('!BBBBIHH4s4s4s4s16s64s128s',1,1,6,0,0x1234,0,0,socket.inet_aton('{address}'),bytes(4),bytes(4),bytes(4),mac+bytes(10),b'',b'')\n\
         p+=bytes([99,130,83,99,53,1,7,54,4,10,42,0,1,255])\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('{from}',68))\n\
         s.sendto(p,('10.42.0.1',67))\n",
        mac = mac.replace(':', "")
    );
    run(Command::new("ip").args(["netns", "exec", ns, "python3", "-c", &script]));
}

/// curl in the network namespace `ns` with `args`: (HTTP status, body). Status 0: no answer
/// (curl failed; it waits 20 s at most).
pub fn curl_in(ns: &str, args: &[&str]) -> (u16, String) {
    let (code, body, _) = curl_in_saying(ns, args);
    (code, body)
}

/// [`curl_in`], with curl's own message (why there was no answer, for status 0).
pub fn curl_in_saying(ns: &str, args: &[&str]) -> (u16, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl (dev/packages.txt installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string(), String::from_utf8_lossy(&out.stderr).trim().to_string())
}

/// `nixos-pxe serve` in the network namespace `ns` serving the files below `root` over HTTP on
/// `port` (no DHCP, no fleet, TFTP on a port the kernel picks), its log `dir`/serve.log; stopped
/// when dropped, and killed with the test process.
pub struct ServeFiles {
    child: Child,
}

impl ServeFiles {
    pub fn start(ns: &str, dir: &Path, root: &Path, port: u16) -> ServeFiles {
        let config = dir.join("serve-config.json");
        std::fs::write(&config, "{}").expect("write");
        let log = dir.join("serve.log");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_nixos-pxe"), "serve", "--config"])
            .arg(&config)
            .args(["--dhcp", "off", "--tftp-port", "0", "--http-port", &port.to_string(), "--tftp-root"])
            .arg(root)
            .arg("--state-dir")
            .arg(dir.join("serve-state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        // SAFETY: prctl(2) is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
        let child = command.spawn().expect("serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("http: serving") {
            assert!(Instant::now() < deadline, "serve did not start:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        ServeFiles { child }
    }
}

impl Drop for ServeFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
