//! `nixos-pxe serve` attacked from the boot network as issue 17 found it could be: a record mark
//! claiming 2 GiB, a thousand idle NFS connections, pipelined READs never read, TFTP requests
//! from forged senders that never acknowledge, HTTP bodies trickled a byte at a time, responses
//! never read, a DHCP pool emptied with made-up MACs and BOOTP, a RELEASE in a fleet host's
//! name. serve runs as systemd gives a unit by default (`ulimit -n 1024`), with short timeouts
//! (3 s for clients, 5 s NFS idle) so each attack ends in seconds. After each attack a real client
//! (atftp, curl, libnfs, busybox udhcpc with a fleet MAC) still gets its file, mount or lease,
//! serve still runs, and its peak RSS, descriptors and threads, read from /proc, are within the
//! bounds below. Every attack is bounded in count and time; everything runs in network
//! namespaces this test makes (tests/common Lab: serve at 10.42.0.1 on br0, an attacker at
//! 10.42.0.66 with 24 more addresses, a client at 10.42.0.50, a fleet machine).
//!
//! `NIXOS_PXE_SERVE_BIN=/path/to/nixos-pxe` runs the attacks against another build of serve (how
//! they were checked against the code before the fixes).

mod common;

use common::{Lab, Socket};
use dhcproto::v4::{Decodable, Decoder, DhcpOption, Encodable, Encoder, Message, MessageType, Opcode};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 1);
const ATTACKER: &str = "10.42.0.66";
const CLIENT: &str = "10.42.0.50";
const FLEET_MAC: &str = "52:54:00:12:34:56";
const EXPORT: &str = "/srv/nixos/nfsroot";
/// The client timeouts serve runs with here (--client-timeout, --stall-timeout).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
const NFS_IDLE: Duration = Duration::from_secs(5);
/// The bounds every attack is held to. The NFS memory serve may hold for calls in flight is
/// 128 MiB in all (src/serve/limits.rs); the rest is the process itself (a debug build here).
const PEAK_RSS_MIB: u64 = 256;
/// What one client address may hold of each protocol (src/serve/limits.rs); the caps in all
/// follow from the descriptors serve has open at start, and are read from its start-up log.
const PER_CLIENT: usize = 8;

fn bin() -> String {
    std::env::var("NIXOS_PXE_SERVE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_nixos-pxe").to_string())
}

/// The lab with serve in it, an attacker, a client and a fleet machine.
struct Abuse {
    lab: Lab,
    dir: tempfile::TempDir,
    attacker: String,
    client: String,
    fleet: String,
    pid: u32,
}

/// Raises this test process's own open-file limit: the attacker opens more than 1024 sockets.
fn raise_own_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a struct this function owns.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

impl Abuse {
    fn start(tag: &str) -> Abuse {
        raise_own_limit();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // The example fleet (4 fleet MACs) with a pool of 10 addresses and serve's own NFS.
        // The JSON form as the serve under test writes it (another build may know other options).
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fleet/installer.nix");
        let text = common::run(Command::new(bin()).args(["options", "--config", example, "--source", "static", "--as-config-json"]));
        let mut tree: Value = serde_json::from_str(&text).expect("config JSON");
        tree["bootServer"]["dhcpRange"] = serde_json::json!({ "start": "10.42.0.100", "end": "10.42.0.109" });
        tree["bootServer"]["nfsMountOptions"] = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock".into();
        std::fs::write(d.join("config.json"), tree.to_string()).expect("config");
        std::fs::create_dir_all(d.join("tftp/nixos")).expect("mkdir");
        std::fs::write(d.join("tftp/nixos/bzImage"), pattern(3_000_017)).expect("kernel");
        std::fs::create_dir_all(d.join("nfsroot")).expect("mkdir");
        std::fs::write(d.join("nfsroot/hello"), "hello from the NFS root\n").expect("hello");
        std::fs::write(d.join("nfsroot/big"), pattern(8 << 20)).expect("big");

        let mut lab = Lab::new(tag);
        let attacker = lab.add_host("atk", ATTACKER);
        for i in 67..91 {
            common::sh(&format!("ip -n {attacker} addr add 10.42.0.{i}/24 dev eth0"));
        }
        let client = lab.add_host("cli", CLIENT);
        // The fleet machine gets its address by DHCP: the one add_host gives it is taken away.
        let fleet = lab.add_host("flt", "10.42.0.249");
        common::sh(&format!("ip -n {fleet} addr flush dev eth0; ip -n {fleet} link set eth0 address {FLEET_MAC}"));
        // The timeouts where this build of serve has them (one built before them has not).
        let help = common::run(Command::new(bin()).args(["serve", "--help"]));
        let timeouts = match help.contains("--client-timeout") {
            true => format!("--client-timeout {0} --stall-timeout {0} --nfs-idle-timeout {1}", CLIENT_TIMEOUT.as_secs(), NFS_IDLE.as_secs()),
            false => String::new(),
        };
        let script = format!(
            "ulimit -Sn 1024 && ulimit -Hn 1024 && cd {} && exec {} serve --config config.json --interface br0 --dhcp authoritative \
             --tftp-root tftp --nfs-root nfsroot --state-dir state --http-port 80 {timeouts}",
            d.display(),
            bin(),
        );
        lab.spawn(&["sh", "-c", &script], &d.join("serve.log"));
        let ns = lab.ns.clone();
        lab.wait_listening(&ns, &[Socket::Udp(67), Socket::Udp(69), Socket::TcpListen(80), Socket::TcpListen(2049)]);
        let pid = lab.pid(&d.join("serve.log"));
        let mut a = Abuse { lab, dir, attacker, client, fleet, pid };
        a.legitimate_clients_are_served("at the start");
        a
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("serve.log")).unwrap_or_default()
    }

    /// A cap from serve's `limits` start-up line (`nfs_connections=63`).
    fn cap(&self, name: &str) -> usize {
        let log = self.log();
        let line = log.lines().find(|l| l.contains(" limits ")).unwrap_or_else(|| panic!("no limits line:\n{log}"));
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}="))?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {line}"))
    }

    /// A line of /proc/PID/status, in its first number (kB for memory).
    fn status(&self, key: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_else(|e| panic!("serve is gone ({e}):\n{}", self.log()));
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim_start_matches(':').split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{}/status", self.pid))
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map(|d| d.count()).unwrap_or(0)
    }

    fn peak_rss_mib(&self) -> u64 {
        self.status("VmHWM") / 1024
    }

    /// serve runs, and has stayed within the bounds.
    fn within_bounds(&mut self, after: &str) {
        let exited = self.lab.exited();
        assert!(exited.is_empty(), "serve exited {after}:\n{}", exited.join("\n"));
        let (peak, fds, threads) = (self.peak_rss_mib(), self.fds(), self.status("Threads"));
        eprintln!("serve_abuse: {after}: peak RSS {peak} MiB, {fds} descriptors, {threads} threads");
        assert!(peak < PEAK_RSS_MIB, "{after}: serve's peak RSS is {peak} MiB (bound {PEAK_RSS_MIB} MiB)");
        assert!(fds < 1024, "{after}: {fds} descriptors");
    }

    /// A real client of each protocol is served: TFTP and HTTP files, an NFS read, and a fleet
    /// machine's lease.
    fn legitimate_clients_are_served(&mut self, after: &str) {
        let d = self.dir().to_owned();
        let kernel = std::fs::read(d.join("tftp/nixos/bzImage")).expect("kernel");
        let out = d.join("client.out");
        let _ = std::fs::remove_file(&out);
        let ok = self.lab.probe(&self.client, &["atftp", "--option", "blksize 1468", "-g", "-r", "nixos/bzImage", "-l", &out.display().to_string(), "10.42.0.1"]);
        assert!(ok && std::fs::read(&out).ok().as_ref() == Some(&kernel), "{after}: TFTP failed for a real client\n{}", tail(&self.log()));
        let _ = std::fs::remove_file(&out);
        let ok = self.lab.probe(&self.client, &["curl", "-sSf", "--max-time", "20", "-o", &out.display().to_string(), "http://10.42.0.1/nixos/bzImage"]);
        assert!(ok && std::fs::read(&out).ok().as_ref() == Some(&kernel), "{after}: HTTP failed for a real client\n{}", tail(&self.log()));
        let nfs = Command::new("timeout")
            .args(["20", "ip", "netns", "exec", &self.client, "nfs-cat"])
            .arg(format!("nfs://10.42.0.1{EXPORT}/hello?version=3&nfsport=2049&mountport=2049"))
            .output()
            .expect("nfs-cat");
        assert_eq!(String::from_utf8_lossy(&nfs.stdout), "hello from the NFS root\n", "{after}: NFS failed for a real client\n{}", tail(&self.log()));
        let lease = self.fleet_lease();
        assert!(lease.is_some(), "{after}: the fleet machine {FLEET_MAC} got no lease\n{}", tail(&self.log()));
        self.within_bounds(after);
    }

    /// The address the fleet machine got from serve's DHCP (busybox udhcpc).
    fn fleet_lease(&self) -> Option<Ipv4Addr> {
        let _ = common::run(Command::new("ip").args(["-n", &self.fleet, "addr", "flush", "dev", "eth0"]));
        common::dhcp_lease(&self.fleet, self.dir()).and_then(|a| a.parse().ok())
    }

    /// Runs `f` on a thread inside namespace `ns`: its sockets are that namespace's.
    fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("namespace");
            // SAFETY: setns on a descriptor this thread owns; it moves this thread only.
            assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) }, 0, "setns {path}");
            f()
        })
        .join()
        .expect("attacker thread")
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A TCP connection from `source` (an address of the attacker's) to the server's `port`.
fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = bound_socket(source)?;
    let addr = SocketAddr::from((SERVER, port));
    // connect(2) on a socket bound to `source`.
    let raw: libc::sockaddr_in = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(SERVER).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: connect on a descriptor this function owns, with a sockaddr_in of the right size.
    let rc = unsafe { libc::connect(socket, (&raw as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: closing the descriptor this function made.
        unsafe { libc::close(socket) };
        return Err(std::io::Error::new(e.kind(), format!("connect to {addr}: {e}")));
    }
    // SAFETY: the descriptor is a connected TCP socket this function owns.
    Ok(unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(socket) })
}

/// A TCP socket bound to `source`, port chosen by the kernel.
fn bound_socket(source: Ipv4Addr) -> std::io::Result<i32> {
    // SAFETY: plain socket(2) and bind(2) calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let raw = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(source).to_be() },
            sin_zero: [0; 8],
        };
        if libc::bind(fd, (&raw as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

/// The attacker's 25 addresses.
fn attacker_addresses() -> Vec<Ipv4Addr> {
    (66..91).map(|i| Ipv4Addr::new(10, 42, 0, i)).collect()
}

/// Whether the server has closed `stream` (a read sees the end or an error) within `wait`.
fn closed_within(stream: &TcpStream, wait: Duration) -> bool {
    let mut stream = stream;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = stream.set_read_timeout(Some(left.min(Duration::from_millis(200))));
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return true,
        }
    }
}

/// Of `streams`, how many the server has left open after `wait` (each read once, briefly).
fn still_open(streams: &[TcpStream], wait: Duration) -> usize {
    std::thread::sleep(wait);
    streams.iter().filter(|s| !closed_within(s, Duration::from_millis(20))).count()
}

// ---- NFS ----

#[test]
fn an_nfs_record_mark_claiming_2_gib_allocates_nothing_and_ends_the_connection() {
    let mut a = Abuse::start("abuse-mark");
    let before = a.peak_rss_mib();
    let closed = Abuse::in_ns(&a.attacker, || {
        let mut streams: Vec<TcpStream> = (0..3).map(|_| connect_from(Ipv4Addr::new(10, 42, 0, 66), 2049).expect("connect")).collect();
        for s in &mut streams {
            s.write_all(&0x7fff_ffffu32.to_be_bytes()).expect("mark");
        }
        streams.iter().filter(|s| closed_within(s, Duration::from_secs(2))).count()
    });
    assert_eq!(closed, 3, "serve kept connections that announced 2 GiB calls");
    let after = a.peak_rss_mib();
    assert!(after < before + 16, "the marks cost serve {} MiB (peak {before} -> {after} MiB)", after - before);
    assert!(a.log().contains("larger than the 1048576 any NFS call needs"), "{}", tail(&a.log()));
    // 200 more from the same address, one after the other: the log does not grow a line each.
    Abuse::in_ns(&a.attacker, || {
        for _ in 0..200 {
            let mut s = connect_from(Ipv4Addr::new(10, 42, 0, 66), 2049).expect("connect");
            s.write_all(&0x7fff_ffffu32.to_be_bytes()).expect("mark");
            assert!(closed_within(&s, Duration::from_secs(2)), "a 2 GiB mark was kept");
        }
    });
    let said = a.log().lines().filter(|l| l.contains("larger than the 1048576")).count();
    assert!(said <= 2, "{said} log lines for 203 connections from one address (once a minute is the rule)");
    a.legitimate_clients_are_served("after 203 NFS marks of 2 GiB");
}

#[test]
fn a_thousand_idle_nfs_connections_neither_stop_serve_nor_shut_out_a_client() {
    let mut a = Abuse::start("abuse-nfsconn");
    // 1,025 from one address: only its share stays open.
    let streams = Abuse::in_ns(&a.attacker, || {
        (0..1025).filter_map(|_| connect_from(Ipv4Addr::new(10, 42, 0, 66), 2049).ok()).collect::<Vec<_>>()
    });
    let open = still_open(&streams, Duration::from_millis(500));
    assert!(open <= PER_CLIENT, "{open} of 1,025 connections from one address stayed open");
    a.legitimate_clients_are_served("with 1,025 NFS connections from one address");
    drop(streams);
    // From all 25 addresses at once, more than the cap: serve keeps serving, and once the idle
    // ones are closed (--nfs-idle-timeout) a client gets in again.
    let streams = Abuse::in_ns(&a.attacker, || {
        attacker_addresses().into_iter().flat_map(|source| (0..20).filter_map(move |_| connect_from(source, 2049).ok())).collect::<Vec<_>>()
    });
    let (open, cap) = (still_open(&streams, Duration::from_millis(500)), a.cap("nfs_connections"));
    assert!(open <= cap && cap < 500, "{open} NFS connections open, more than the cap of {cap}");
    a.within_bounds("with 500 NFS connections from 25 addresses");
    let open = still_open(&streams, NFS_IDLE + Duration::from_secs(2));
    assert_eq!(open, 0, "idle NFS connections were not closed after {NFS_IDLE:?}");
    a.legitimate_clients_are_served("after the idle NFS connections were closed");
}

/// Pipelined NFS READs of 1 MiB each whose replies are never read: the memory serve holds for
/// them is bounded.
#[test]
fn nfs_reads_whose_replies_are_never_read_hold_bounded_memory() {
    use nfs3_client::Nfs3ConnectionBuilder;
    use nfs3_client::nfs3_types::nfs3::{LOOKUP3args, Nfs3Result, diropargs3, filename3};
    use nfs3_client::nfs3_types::xdr_codec::{Opaque, Pack};
    use nfs3_client::tokio::TokioConnector;
    let mut a = Abuse::start("abuse-nfsread");
    let handle: Vec<u8> = Abuse::in_ns(&a.attacker, || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async {
            let mut c = Nfs3ConnectionBuilder::new(TokioConnector, "10.42.0.1", EXPORT)
                .mount_port(2049)
                .nfs3_port(2049)
                .connect_from_privileged_port(false)
                .mount()
                .await
                .expect("mount");
            let root = c.root_nfs_fh3();
            let args = LOOKUP3args { what: diropargs3 { dir: root, name: filename3(Opaque::owned(b"big".to_vec())) } };
            let found = match c.lookup(&args).await.expect("lookup") {
                Nfs3Result::Ok(ok) => ok.object,
                Nfs3Result::Err((s, _)) => panic!("LOOKUP big: {s:?}"),
            };
            let mut packed = Vec::new();
            found.pack(&mut packed).expect("pack the handle");
            packed
        })
    });
    let before = a.peak_rss_mib();
    // 8 connections (the address's share), each with 200 READs of 1 MiB sent and none read.
    let streams = Abuse::in_ns(&a.attacker, move || {
        (0..PER_CLIENT)
            .map(|c| {
                let mut s = connect_from(Ipv4Addr::new(10, 42, 0, 66), 2049).expect("connect");
                s.set_write_timeout(Some(Duration::from_secs(2))).expect("timeout");
                for i in 0..200u32 {
                    let mut call = Vec::new();
                    for w in [c as u32 * 1000 + i + 1, 0, 2, 100_003, 3, 6, 0, 0, 0, 0] {
                        call.extend(w.to_be_bytes());
                    }
                    call.extend(&handle);
                    call.extend(u64::from((i % 8) << 20).to_be_bytes());
                    call.extend((1u32 << 20).to_be_bytes());
                    let mut record = (call.len() as u32 | 0x8000_0000).to_be_bytes().to_vec();
                    record.extend(call);
                    if s.write_all(&record).is_err() {
                        break; // serve stopped reading this connection: it holds its share
                    }
                }
                s
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_secs(2));
    let after = a.peak_rss_mib();
    eprintln!("serve_abuse: 1,600 READs of 1 MiB unread: peak RSS {before} -> {after} MiB");
    // 8 connections x 8 MiB of calls in flight each, and the engine's buffers.
    assert!(after < before + 100, "unread READ replies cost serve {} MiB", after - before);
    a.within_bounds("with 1,600 unread READs of 1 MiB");
    drop(streams);
    a.legitimate_clients_are_served("after the unread READs");
}

// ---- TFTP ----

fn rrq_with_timeout_255() -> Vec<u8> {
    b"\x00\x01nixos/bzImage\x00octet\x00timeout\x00255\x00blksize\x001468\x00".to_vec()
}

#[test]
fn tftp_requests_that_never_acknowledge_hold_few_threads_for_seconds() {
    let mut a = Abuse::start("abuse-tftp");
    let threads = a.status("Threads");
    // 512 requests from one address (each from its own port, never acknowledged, never closed).
    let sockets = Abuse::in_ns(&a.attacker, || {
        (0..512)
            .map(|_| {
                let s = UdpSocket::bind((Ipv4Addr::new(10, 42, 0, 66), 0)).expect("bind");
                s.send_to(&rrq_with_timeout_255(), (SERVER, 69)).expect("send");
                s
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(500));
    let during = a.status("Threads");
    assert!(during <= threads + PER_CLIENT as u64, "{during} threads (from {threads}) for 512 requests from one address");
    a.legitimate_clients_are_served("during 512 unacknowledged TFTP requests from one address");
    drop(sockets);
    // 512 more from 25 addresses: the global cap holds, and the transfers end within seconds
    // (the first acknowledgement is waited for 1 s, 5 times, whatever timeout was asked).
    let sockets = Abuse::in_ns(&a.attacker, || {
        attacker_addresses()
            .into_iter()
            .cycle()
            .take(512)
            .map(|source| {
                let s = UdpSocket::bind((source, 0)).expect("bind");
                s.send_to(&rrq_with_timeout_255(), (SERVER, 69)).expect("send");
                s
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(500));
    let (during, cap) = (a.status("Threads"), a.cap("tftp_transfers") as u64);
    assert!(during <= threads + cap && cap < 512, "{during} threads (from {threads}) for 512 requests from 25 addresses, cap {cap}");
    a.within_bounds("during 512 unacknowledged TFTP requests from 25 addresses");
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.status("Threads") > threads + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let left = a.status("Threads");
    assert!(left <= threads + 2, "{left} threads (from {threads}) 15 s after the requests: unacknowledged transfers were kept");
    drop(sockets);
    a.legitimate_clients_are_served("after 1,024 unacknowledged TFTP requests");
}

// ---- HTTP ----

/// A report POST whose body comes one byte at a time: the headers and the first byte.
fn slow_post(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(b"POST /v1/report HTTP/1.1\r\nHost: 10.42.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
}

#[test]
fn http_bodies_trickled_and_responses_never_read_end_within_the_timeouts() {
    let mut a = Abuse::start("abuse-http");
    // 1,100 trickled POSTs from one address: its share is let in, and those end at the deadline.
    let streams = Abuse::in_ns(&a.attacker, || {
        (0..1100)
            .filter_map(|_| {
                let mut s = connect_from(Ipv4Addr::new(10, 42, 0, 66), 80).ok()?;
                slow_post(&mut s).ok()?;
                Some(s)
            })
            .collect::<Vec<_>>()
    });
    // One more byte a second on those still open, for longer than the client timeout.
    let started = Instant::now();
    let mut open = streams.len();
    while started.elapsed() < CLIENT_TIMEOUT + Duration::from_secs(2) {
        open = streams.iter().filter(|s| { let mut w: &TcpStream = s; w.write_all(b" ").is_ok() } && !closed_within(s, Duration::from_millis(5))).count();
        if started.elapsed() < Duration::from_secs(1) {
            assert!(open <= PER_CLIENT, "{open} trickling connections from one address stayed open");
            a.legitimate_clients_are_served("during 1,100 trickled HTTP bodies from one address");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(open, 0, "trickled bodies still open after {:?}", started.elapsed());
    drop(streams);
    assert!(a.log().contains("its body did not arrive within 3s"), "{}", tail(&a.log()));
    // From 25 addresses, past the cap; all end by the deadline, and serve serves again.
    let streams = Abuse::in_ns(&a.attacker, || {
        attacker_addresses()
            .into_iter()
            .flat_map(|source| {
                (0..44).filter_map(move |_| {
                    let mut s = connect_from(source, 80).ok()?;
                    slow_post(&mut s).ok()?;
                    Some(s)
                })
            })
            .collect::<Vec<_>>()
    });
    a.within_bounds("with 1,100 trickled HTTP bodies from 25 addresses");
    let open = still_open(&streams, CLIENT_TIMEOUT + Duration::from_secs(2));
    assert_eq!(open, 0, "trickled bodies from 25 addresses still open");
    drop(streams);
    // The kernel asked for and never read; an idle keep-alive connection.
    let (unread, idle) = Abuse::in_ns(&a.attacker, || {
        let mut unread = connect_from(Ipv4Addr::new(10, 42, 0, 66), 80).expect("connect");
        unread.write_all(b"GET /nixos/bzImage HTTP/1.1\r\nHost: 10.42.0.1\r\n\r\n").expect("get");
        let idle = connect_from(Ipv4Addr::new(10, 42, 0, 66), 80).expect("connect");
        (unread, idle)
    });
    std::thread::sleep(CLIENT_TIMEOUT + Duration::from_secs(2));
    assert!(closed_within(&idle, Duration::from_millis(500)), "an idle connection was kept past {CLIENT_TIMEOUT:?}");
    // The unread response: serve gave up writing; what the socket buffers held arrives, then the end.
    assert!(closed_within(&unread, Duration::from_secs(2)), "a response nobody read was kept past {CLIENT_TIMEOUT:?}");
    a.legitimate_clients_are_served("after trickled bodies, an unread response and an idle connection");
}

// ---- DHCP ----

fn dhcp_socket() -> UdpSocket {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 68)).expect("bind 68");
    s.set_broadcast(true).expect("broadcast");
    let name = b"eth0";
    // SAFETY: setsockopt with a live byte slice of its given length.
    let rc = unsafe { libc::setsockopt(std::os::fd::AsRawFd::as_raw_fd(&s), libc::SOL_SOCKET, libc::SO_BINDTODEVICE, name.as_ptr().cast(), name.len() as libc::socklen_t) };
    assert_eq!(rc, 0, "SO_BINDTODEVICE");
    s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    s
}

fn dhcp_message(mac: [u8; 6], kind: Option<MessageType>, xid: u32) -> Message {
    let mut m = Message::new_with_id(xid, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, &mac);
    m.set_flags(dhcproto::v4::Flags::default().set_broadcast());
    if let Some(k) = kind {
        m.opts_mut().insert(DhcpOption::MessageType(k));
    }
    m
}

fn send(s: &UdpSocket, m: &Message, to: (Ipv4Addr, u16)) {
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out)).expect("encode");
    s.send_to(&out, to).expect("send");
}

/// The reply to `xid`, if one comes within the socket's timeout.
fn answer_to(s: &UdpSocket, xid: u32) -> Option<Message> {
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        let (n, _) = s.recv_from(&mut buf).ok()?;
        if let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n]))
            && m.xid() == xid
            && m.opcode() == Opcode::BootReply
        {
            return Some(m);
        }
    }
    None
}

/// Every reply that comes within `window`, by xid.
fn replies(s: &UdpSocket, window: Duration) -> std::collections::HashMap<u32, Message> {
    let mut got = std::collections::HashMap::new();
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        let Ok((n, _)) = s.recv_from(&mut buf) else { continue };
        if let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n]))
            && m.opcode() == Opcode::BootReply
        {
            got.insert(m.xid(), m);
        }
    }
    got
}

fn stranger_mac(n: u32) -> [u8; 6] {
    [0x02, 0xee, (n >> 16) as u8, (n >> 8) as u8, n as u8, 0x01]
}

/// `count` strangers with made-up MACs, all at once: DISCOVERs, then a REQUEST for each offer.
/// The addresses they were given.
fn take_addresses(s: &UdpSocket, count: u32) -> Vec<Ipv4Addr> {
    for n in 1..=count {
        send(s, &dhcp_message(stranger_mac(n), Some(MessageType::Discover), n), (Ipv4Addr::BROADCAST, 67));
    }
    let offers = replies(s, Duration::from_secs(2));
    for (n, offer) in &offers {
        let mut request = dhcp_message(stranger_mac(*n), Some(MessageType::Request), n + 1_000_000);
        request.opts_mut().insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
        request.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        send(s, &request, (Ipv4Addr::BROADCAST, 67));
    }
    replies(s, Duration::from_secs(2))
        .into_values()
        .filter(|m| m.opts().msg_type() == Some(MessageType::Ack))
        .map(|m| m.yiaddr())
        .collect()
}

#[test]
fn strangers_cannot_empty_the_pool_for_the_fleet_nor_release_its_leases() {
    let mut a = Abuse::start("abuse-dhcp");
    let fleet_address = a.fleet_lease().expect("the fleet machine's lease");
    // 500 made-up MACs asking for an address, then 100 BOOTP requests: a pool of 10 with 4
    // fleet MACs gives strangers at most 6 (the fleet machine holds one of the 4).
    let taken = Abuse::in_ns(&a.attacker, || {
        let s = dhcp_socket();
        let mut taken = take_addresses(&s, 500);
        for n in 0..100u32 {
            let bootp = dhcp_message([0x02, 0xbb, 0, 0, (n >> 8) as u8, n as u8], None, 7_000_000 + n);
            send(&s, &bootp, (Ipv4Addr::BROADCAST, 67));
        }
        taken.extend(replies(&s, Duration::from_secs(1)).into_values().map(|m| m.yiaddr()));
        taken
    });
    taken.iter().for_each(|t| assert_ne!(*t, fleet_address, "a stranger was given the fleet machine's address"));
    let mut distinct = taken.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() <= 7, "strangers got {} addresses of a pool of 10 with 4 fleet MACs: {distinct:?}", distinct.len());
    // The fleet machine still gets its address; the full pool is said at the default level,
    // once (not once per request).
    assert_eq!(a.fleet_lease(), Some(fleet_address));
    let log = a.log();
    let said = log.lines().filter(|l| l.contains("WARN") && l.contains("dhcp: no address for a machine outside the fleet")).count();
    assert!((1..=2).contains(&said), "the pool kept for the fleet was said {said} times:\n{}", tail(&log));
    assert!(log.contains("bound,") && log.contains("of the fleet's 4 MACs have no lease"), "no counts by state:\n{}", tail(&log));
    assert!(log.contains("BOOTP request (no option 53) was not answered"), "{}", tail(&log));
    // A RELEASE in the fleet machine's name, from the attacker's address: ignored.
    Abuse::in_ns(&a.attacker, move || {
        let s = UdpSocket::bind((Ipv4Addr::new(10, 42, 0, 66), 68)).expect("bind");
        let mut release = dhcp_message(mac_bytes(FLEET_MAC), Some(MessageType::Release), 9_000_001);
        release.set_ciaddr(fleet_address);
        release.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        send(&s, &release, (SERVER, 67));
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.log().contains("dhcp: ignored: not from the holder of that lease"), "{}", tail(&a.log()));
    let leases = std::fs::read_to_string(a.dir().join("state/leases")).expect("the lease file");
    assert!(leases.lines().any(|l| l.starts_with(&format!("set {FLEET_MAC} {fleet_address} bound "))), "{leases}");
    // The lease survives a restart of serve: a stranger asking for that very address is refused.
    let log_path = a.dir().join("serve.log");
    a.lab.kill(&log_path);
    let d = a.dir().to_owned();
    let script = format!(
        "ulimit -Sn 1024 && ulimit -Hn 1024 && cd {} && exec {} serve --config config.json --interface br0 --dhcp authoritative --tftp-root tftp --state-dir state --http-port 0",
        d.display(),
        bin()
    );
    a.lab.spawn(&["sh", "-c", &script], &d.join("serve2.log"));
    let ns = a.lab.ns.clone();
    a.lab.wait_listening(&ns, &[Socket::Udp(67)]);
    let refused = Abuse::in_ns(&a.attacker, move || {
        let s = dhcp_socket();
        let mut request = dhcp_message([0x02, 0xcc, 0, 0, 0, 1], Some(MessageType::Request), 8_000_001);
        request.opts_mut().insert(DhcpOption::RequestedIpAddress(fleet_address));
        send(&s, &request, (Ipv4Addr::BROADCAST, 67));
        answer_to(&s, 8_000_001).map(|m| m.opts().msg_type())
    });
    assert_eq!(refused, Some(Some(MessageType::Nak)), "a restarted serve gave the fleet machine's address away");
    assert_eq!(a.fleet_lease(), Some(fleet_address), "the fleet machine's address after the restart");
}

fn mac_bytes(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (i, h) in text.split(':').enumerate() {
        mac[i] = u8::from_str_radix(h, 16).expect("hex");
    }
    mac
}
