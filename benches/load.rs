//! Load benchmark of `nixos-pxe serve` (issue 17): 200 fleet hosts go through the whole boot
//! conversation at the same moment while abusive connections of every kind run, and serve must
//! fail none of them.
//!
//! Each of the 200 clients is a network namespace of its own (its own stack, its own `eth0` with
//! its own MAC on a bridge in serve's namespace), so each has its own lease and address, as the
//! fleet's machines do: serve hands a host's install token only to, and takes its reports only
//! from, the address its DHCP gave that host's MAC. The conversation, as the firmware, GRUB, the
//! kernel and the installer hold it (each a thread of this program inside its client's namespace):
//!
//! 1. DHCP: DISCOVER and REQUEST with the client's MAC, option 93 = 7 (x64 UEFI) and vendor class
//!    PXEClient, broadcast, from port 68 (resent after 4, 8, 16 and 32 s, as EDK2's PXE does);
//!    the leased address is then set on `eth0` (SIOCSIFADDR);
//! 2. the loader: TFTP of bootx64.efi (1 MiB) with blksize 1024 and GRUB's lock-step
//!    retransmission timing;
//! 3. its per-host file over TFTP twice (GRUB's `[ -s FILE ]`, then `configfile FILE`): both must
//!    hold an install entry with the same attempt and token;
//! 4. the kernel: HTTP GET of nixos/bzImage (4 MiB);
//! 5. the installer's `started` report (POST /v1/report with the token) from its address;
//! 6. NFS: MOUNT of the export and READs of the system image (4 MiB, 1 MiB per READ) with the
//!    nfs3_client crate, as the installer's NFS root reads it;
//! 7. the installer's `installed` report.
//!
//! Every answer is checked (bytes by BLAKE3, the token, the 200s); a client stops at its first
//! failed step, as a machine would, and counts as failed there. Two runs, each with a fresh
//! serve and state directory: quiet, then under abuse. Under abuse an attacker namespace with 8
//! addresses of the boot network keeps, from 3 s before the clients start until the last has
//! finished, 50 connections of each kind going, each opened again as soon as serve ends it:
//!
//! - NFS: 25 connections sending a record mark of 2 GiB, 25 sending nothing (idle);
//! - TFTP: read requests for the kernel with timeout 255 that are never acknowledged;
//! - HTTP: report POSTs announcing 100,000 bytes of body and trickling one byte a second.
//!
//! serve runs with `--client-timeout 5 --stall-timeout 5 --nfs-idle-timeout 5`, so the abuse
//! cycles within the run. The clients and the attacker are threads of this program at nice 19,
//! serve at the nice this program was started with: on a machine of 2 cores the 350 threads of
//! the load would otherwise take most of serve's CPU time, which separate machines do not.
//! serve's logs are kept in target/bench-load-serve-<run>.log. Reported per run: completed and failed clients per step, p50/p99 of
//! each step and of the whole conversation, serve's peak RSS (VmHWM) and its peak descriptors
//! and threads (/proc, sampled every 50 ms), and how many abusive connections were made. The
//! goal is 0 failed legitimate clients.
//!
//! Run it as root (network namespaces), on an otherwise idle machine:
//!
//! ```text
//! cargo bench --bench load       # under a minute after the build
//! ```
//!
//! Network: serve's namespace (10.77.0.1/22 on bridge br0), 200 client namespaces and an
//! attacker namespace, all made by this program and removed with everything in them at the
//! end, on failure and on Ctrl-C (a watcher process). Files under target/; the tables go to
//! stdout and target/bench-load.md. `cargo test --all-targets` runs this program without
//! `--bench`: it only says how to run it.

mod common;

use common::{Namespace, Server, ServerSpec, busy_before_run, clean_up_when_this_process_ends, cpu_time, first_line, percent_since, process_cpu, run, sh};
use dhcproto::v4::{Architecture, Decodable, Decoder, DhcpOption, Encodable, Encoder, Flags, Message, MessageType, Opcode, OptionCode};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Fleet hosts booting at once.
const HOSTS: usize = 200;
/// Abusive connections of each kind at once.
const ABUSE_PER_KIND: usize = 50;
/// The attacker's addresses (10.77.0.66 on); serve lets each hold 8 of each kind.
const ATTACKER_ADDRESSES: u8 = 8;
/// serve's --client-timeout, --stall-timeout and --nfs-idle-timeout.
const CLIENT_TIMEOUT_S: u64 = 5;
/// How long the abuse runs before the clients start.
const ABUSE_HEAD_START: Duration = Duration::from_secs(3);
/// A run's clients not done by then count as failed; the abuse stops then at the latest.
const RUN_DEADLINE: Duration = Duration::from_secs(240);

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PREFIX: u8 = 22;
const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 252, 0);
const POOL: (&str, &str) = ("10.77.1.0", "10.77.2.255");
const BRIDGE: &str = "br0";
const EXPORT: &str = "/srv/nixos/nfsroot";
/// GRUB's TFTP block size.
const BLKSIZE: usize = 1024;

/// A file served to every client: where it is and what it holds.
struct Served {
    /// Below the TFTP root (also served over HTTP) or the NFS export.
    path: &'static str,
    bytes: usize,
    seed: u64,
}

const LOADER: Served = Served { path: "bootx64.efi", bytes: 1 << 20, seed: 1 };
const KERNEL: Served = Served { path: "nixos/bzImage", bytes: 4 << 20, seed: 2 };
const IMAGE: Served = Served { path: "nixos-pxe/system.tar.zst", bytes: 4 << 20, seed: 3 };

fn mac(i: usize) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x02, (i >> 8) as u8, i as u8]
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn host(i: usize) -> String {
    format!("h{i:03}")
}

/// Pseudo-random bytes (xorshift64): nothing compresses or shortcuts them.
fn pseudo_random_bytes(bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
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

// ---------------------------------------------------------------------------------------------
// The network

/// serve's namespace with the bridge, the attacker's, and one per client; deleted (with whatever
/// runs in them) when dropped, and by a watcher process when this program is killed.
struct Network {
    server: Namespace,
    attacker: Namespace,
    clients: Vec<Namespace>,
}

impl Network {
    fn names() -> (String, String, Vec<String>) {
        let pid = std::process::id();
        let base = format!("nixos-pxe-load-{pid}");
        (format!("{base}-srv"), format!("{base}-atk"), (0..HOSTS).map(|i| format!("{base}-c{i}")).collect())
    }

    fn create(workdir: &Path) -> Result<Network, String> {
        let (server, attacker, clients) = Network::names();
        let all: Vec<&str> = [server.as_str(), attacker.as_str()].into_iter().chain(clients.iter().map(String::as_str)).collect();
        clean_up_when_this_process_ends(&all, workdir)?;
        let batch = |ns: Option<&str>, lines: &str| -> Result<(), String> {
            let file = workdir.join("ip.batch");
            std::fs::write(&file, lines).map_err(|e| format!("{}: {e}", file.display()))?;
            let mut command = Command::new("ip");
            if let Some(ns) = ns {
                command.args(["-n", ns]);
            }
            run(command.arg("-batch").arg(&file)).map(drop)
        };
        let adds: String = all.iter().map(|n| format!("netns add {n}\n")).collect();
        batch(None, &adds).map_err(|e| format!("cannot create the benchmark's network namespaces: {e}"))?;
        let mut links = format!("link set lo up\nlink add {BRIDGE} type bridge\naddr add {SERVER}/{PREFIX} dev {BRIDGE}\nlink set {BRIDGE} up\n");
        for (i, ns) in clients.iter().enumerate() {
            links += &format!("link add c{i} type veth peer name eth0 address {} netns {ns}\nlink set c{i} master {BRIDGE}\nlink set c{i} up\n", mac_text(mac(i)));
        }
        links += &format!("link add atk type veth peer name eth0 netns {attacker}\nlink set atk master {BRIDGE}\nlink set atk up\n");
        batch(Some(&server), &links).map_err(|e| format!("cannot join the namespaces to the bridge: {e}"))?;
        let mut attack = String::from("link set lo up\nlink set eth0 up\n");
        for a in attacker_addresses() {
            attack += &format!("addr add {a}/{PREFIX} dev eth0\n");
        }
        batch(Some(&attacker), &attack).map_err(|e| format!("cannot set up the attacker: {e}"))?;
        Ok(Network {
            server: Namespace::open(&server)?,
            attacker: Namespace::open(&attacker)?,
            clients: clients.iter().map(|n| Namespace::open(n)).collect::<Result<_, _>>()?,
        })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.server.kill_processes();
        let dels: String = [&self.server, &self.attacker].into_iter().chain(&self.clients).map(|n| format!("netns del {}\n", n.name)).collect();
        let file = std::env::temp_dir().join(format!("nixos-pxe-load-{}.batch", std::process::id()));
        if std::fs::write(&file, dels).is_ok() {
            let _ = run(Command::new("ip").arg("-force").arg("-batch").arg(&file));
            let _ = std::fs::remove_file(&file);
        }
    }
}

fn attacker_addresses() -> Vec<Ipv4Addr> {
    (0..ATTACKER_ADDRESSES).map(|i| Ipv4Addr::new(10, 77, 0, 66 + i)).collect()
}

/// An ioctl on `interface` with an ifreq the caller fills; the kernel acts in the calling
/// thread's network namespace.
fn interface_ioctl(interface: &str, request: libc::Ioctl, fill: impl FnOnce(&mut libc::ifreq)) -> std::io::Result<libc::ifreq> {
    // SAFETY: a datagram socket this function owns and closes, and an ifreq zeroed, named within
    // bounds and filled by the caller as the request expects.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in interface.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
            req.ifr_name[i] = b as libc::c_char;
        }
        fill(&mut req);
        let rc = libc::ioctl(fd, request, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 { Err(err) } else { Ok(req) }
    }
}

fn sockaddr(address: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in { sin_family: libc::AF_INET as libc::sa_family_t, sin_port: 0, sin_addr: libc::in_addr { s_addr: u32::from(address).to_be() }, sin_zero: [0; 8] };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Lowers the calling thread's priority to nice 19 (on Linux, nice is per thread): the load
/// generator yields the CPU to serve.
fn lowest_priority() {
    // SAFETY: setpriority on the calling thread (who = 0); no memory is passed.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
}

/// Brings `eth0` of the calling thread's namespace up, without an address (as a firmware starts).
fn bring_up(interface: &str) -> std::io::Result<()> {
    let flags = interface_ioctl(interface, libc::SIOCGIFFLAGS, |_| {})?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let up = unsafe { flags.ifr_ifru.ifru_flags } | libc::IFF_UP as libc::c_short;
    interface_ioctl(interface, libc::SIOCSIFFLAGS, |r| r.ifr_ifru.ifru_flags = up).map(drop)
}

/// Sets the leased address on `interface` (replacing the one it had), with the boot network's mask.
fn set_address(interface: &str, address: Ipv4Addr) -> std::io::Result<()> {
    interface_ioctl(interface, libc::SIOCSIFADDR, |r| r.ifr_ifru.ifru_addr = sockaddr(address))?;
    interface_ioctl(interface, libc::SIOCSIFNETMASK, |r| r.ifr_ifru.ifru_netmask = sockaddr(NETMASK)).map(drop)
}

/// Takes the address off `interface` (between runs).
fn clear_address(interface: &str) -> std::io::Result<()> {
    match interface_ioctl(interface, libc::SIOCSIFADDR, |r| r.ifr_ifru.ifru_addr = sockaddr(Ipv4Addr::UNSPECIFIED)) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        other => other.map(drop),
    }
}

fn bind_to_device(socket: &impl AsRawFd, interface: &str) -> std::io::Result<()> {
    // SAFETY: setsockopt reads `interface.len()` bytes from a live slice; the fd is `socket`'s.
    let rc = unsafe {
        libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_BINDTODEVICE, interface.as_ptr().cast(), interface.len() as libc::socklen_t)
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

// ---------------------------------------------------------------------------------------------
// One client's conversation

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Dhcp,
    Loader,
    HostFile,
    Kernel,
    Started,
    Nfs,
    Installed,
}

const STEPS: [Step; 7] = [Step::Dhcp, Step::Loader, Step::HostFile, Step::Kernel, Step::Started, Step::Nfs, Step::Installed];

impl Step {
    fn label(self) -> &'static str {
        match self {
            Step::Dhcp => "DHCP DISCOVER-OFFER-REQUEST-ACK",
            Step::Loader => "bootx64.efi over TFTP (1 MiB, blksize 1024)",
            Step::HostFile => "per-host file over TFTP, twice",
            Step::Kernel => "kernel over HTTP (4 MiB)",
            Step::Started => "`started` report over HTTP",
            Step::Nfs => "NFS MOUNT and READs of the image (4 MiB)",
            Step::Installed => "`installed` report over HTTP",
        }
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientRun {
    times: Vec<(Step, Duration)>,
    /// The step it stopped at, and why.
    failed: Option<(Step, String)>,
    whole: Option<Duration>,
    dhcp_sends: u32,
    tftp_resends: u32,
}

/// What one client needs to know.
struct Expected {
    loader: blake3::Hash,
    kernel: blake3::Hash,
    image: blake3::Hash,
}

fn one_client(i: usize, expected: &Expected, deadline: Instant) -> ClientRun {
    let mut r = ClientRun::default();
    let start = Instant::now();
    let result = conversation(i, expected, deadline, &mut r);
    match result {
        Ok(()) => r.whole = Some(start.elapsed()),
        Err((step, why)) => r.failed = Some((step, why)),
    }
    r
}

/// Runs `f` as `step`: its time is kept; a failure, or the run's deadline, ends the conversation.
fn step<T>(r: &mut ClientRun, step: Step, deadline: Instant, f: impl FnOnce(&mut ClientRun) -> Result<T, String>) -> Result<T, (Step, String)> {
    if Instant::now() > deadline {
        return Err((step, "the run's deadline passed before this step".into()));
    }
    let start = Instant::now();
    let out = f(r).map_err(|e| (step, e))?;
    r.times.push((step, start.elapsed()));
    Ok(out)
}

fn conversation(i: usize, expected: &Expected, deadline: Instant, r: &mut ClientRun) -> Result<(), (Step, String)> {
    let mac = mac(i);
    let lease = step(r, Step::Dhcp, deadline, |r| {
        let (address, sends) = dhcp(mac, 0x4c00_0000 | i as u32)?;
        r.dhcp_sends = sends;
        set_address("eth0", address).map_err(|e| format!("SIOCSIFADDR {address}: {e}"))?;
        Ok(address)
    })?;
    step(r, Step::Loader, deadline, |r| {
        let data = tftp_get(LOADER.path, &mut r.tftp_resends)?;
        if blake3::hash(&data) == expected.loader { Ok(()) } else { Err(format!("bootx64.efi: {} bytes that differ from the file", data.len())) }
    })?;
    let (attempt, token) = step(r, Step::HostFile, deadline, |r| {
        let path = format!("nixos-pxe/hosts/mac-{}.cfg", mac_text(mac));
        let first = String::from_utf8_lossy(&tftp_get(&path, &mut r.tftp_resends)?).into_owned();
        let Some(entry) = install_args(&first) else {
            return Err(format!("{path} from {lease} has no install entry with a token: {:.200}", first.replace('\n', " | ")));
        };
        let second = String::from_utf8_lossy(&tftp_get(&path, &mut r.tftp_resends)?).into_owned();
        if install_args(&second).as_ref() != Some(&entry) {
            return Err(format!("{path}: the second fetch is another attempt"));
        }
        Ok(entry)
    })?;
    step(r, Step::Kernel, deadline, |_| {
        let (status, hash, bytes) = http_get(KERNEL.path)?;
        match (status, hash == expected.kernel) {
            (200, true) => Ok(()),
            (200, false) => Err(format!("{}: {bytes} bytes that differ from the file", KERNEL.path)),
            (code, _) => Err(format!("{}: HTTP {code}", KERNEL.path)),
        }
    })?;
    let report = |event: &str| {
        let body = json!({
            "host": host(i), "generation": 1, "attempt": attempt, "token": token, "event": event, "step": "",
            "message": event, "system": "/nix/store/bench-system",
        });
        match post_report(&body.to_string())? {
            200 => Ok(()),
            code => Err(format!("{event} report from {lease} answered {code}")),
        }
    };
    step(r, Step::Started, deadline, |_| report("started"))?;
    step(r, Step::Nfs, deadline, |_| {
        let hash = nfs_read_image()?;
        if hash == expected.image { Ok(()) } else { Err("the image read over NFS differs from the file".into()) }
    })?;
    step(r, Step::Installed, deadline, |_| report("installed"))?;
    Ok(())
}

/// (attempt, token) of an install entry.
fn install_args(cfg: &str) -> Option<(u32, String)> {
    let arg = |name: &str| cfg.split_whitespace().find_map(|w| w.strip_prefix(name)).map(|v| v.trim_end_matches(';').to_string());
    Some((arg("nixos-pxe.attempt=")?.parse().ok()?, arg("nixos-pxe.token=")?))
}

/// A DHCP message from `mac` as a UEFI PXE firmware sends it (broadcast reply asked for).
fn dhcp_message(mac: [u8; 6], kind: MessageType, xid: u32) -> Message {
    let mut m = Message::new_with_id(xid, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, &mac);
    m.set_flags(Flags::default().set_broadcast());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(7)));
    opts.insert(DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003016".to_vec()));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::TFTPServerName,
        OptionCode::BootfileName,
    ]));
    m
}

/// Sends `m` and waits for the reply `accept` takes (same xid and MAC), resending after 4, 8, 16
/// and 32 s (EDK2's PxeBcDhcp4 timeouts). The reply and how many times `m` was sent.
fn dhcp_exchange(socket: &UdpSocket, m: &Message, accept: impl Fn(&Message) -> bool) -> Result<(Message, u32), String> {
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out)).map_err(|e| format!("encode: {e}"))?;
    let mut buf = [0u8; 1500];
    for (n, wait) in [4u64, 8, 16, 32].into_iter().enumerate() {
        socket.send_to(&out, (Ipv4Addr::BROADCAST, 67)).map_err(|e| format!("send: {e}"))?;
        let until = Instant::now() + Duration::from_secs(wait);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).map_err(|e| e.to_string())?;
            let Ok((len, _)) = socket.recv_from(&mut buf) else { continue };
            // Every client's broadcast replies reach every client: only this one's count.
            if let Ok(reply) = Message::decode(&mut Decoder::new(&buf[..len]))
                && reply.opcode() == Opcode::BootReply
                && reply.xid() == m.xid()
                && reply.chaddr() == m.chaddr()
                && accept(&reply)
            {
                return Ok((reply, n as u32 + 1));
            }
        }
    }
    Err(format!("no answer to {:?} after 4 tries in 60 s", m.opts().msg_type()))
}

/// A lease for `mac`: its address and how many DHCP messages it took.
fn dhcp(mac: [u8; 6], xid: u32) -> Result<(Ipv4Addr, u32), String> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 68)).map_err(|e| format!("bind port 68: {e}"))?;
    socket.set_broadcast(true).map_err(|e| e.to_string())?;
    bind_to_device(&socket, "eth0").map_err(|e| format!("SO_BINDTODEVICE eth0: {e}"))?;
    let kind = |k: MessageType| move |m: &Message| m.opts().msg_type() == Some(k);
    let (offer, offers) = dhcp_exchange(&socket, &dhcp_message(mac, MessageType::Discover, xid), kind(MessageType::Offer))?;
    let mut request = dhcp_message(mac, MessageType::Request, xid);
    request.opts_mut().insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    let server = match offer.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => return Err("the OFFER has no server identifier".into()),
    };
    request.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    let either = |m: &Message| matches!(m.opts().msg_type(), Some(MessageType::Ack | MessageType::Nak));
    let (ack, requests) = dhcp_exchange(&socket, &request, either)?;
    if ack.opts().msg_type() != Some(MessageType::Ack) {
        return Err(format!("REQUEST for {} was refused (NAK)", offer.yiaddr()));
    }
    Ok((ack.yiaddr(), offers + requests))
}

/// A TFTP read of `path` as GRUB makes it (blksize 1024, tsize; lock-step), resending its last
/// packet after 400 ms, then 20 ms longer each time, 40 times at most (GRUB_NET_INTERVAL,
/// GRUB_NET_INTERVAL_ADDITION, GRUB_NET_TRIES): the file's bytes.
fn tftp_get(path: &str, resends: &mut u32) -> Result<Vec<u8>, String> {
    let server = SocketAddr::from((SERVER, 69));
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    let mut rrq = vec![0, 1];
    for part in [path, "octet", "tsize", "0", "blksize", &BLKSIZE.to_string()] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    socket.send_to(&rrq, server).map_err(|e| format!("send: {e}"))?;
    let (mut last, mut peer) = (rrq, server);
    let (mut data, mut expected, mut tries) = (Vec::new(), 1u16, 0u32);
    let mut buf = vec![0u8; BLKSIZE + 4];
    loop {
        socket.set_read_timeout(Some(Duration::from_millis(400 + 20 * u64::from(tries)))).map_err(|e| e.to_string())?;
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => {
                tries += 1;
                if tries >= 40 {
                    return Err(format!("{path}: no answer after 40 tries"));
                }
                *resends += 1;
                socket.send_to(&last, peer).map_err(|e| format!("send: {e}"))?;
                continue;
            }
        };
        if n < 4 {
            continue;
        }
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
        tries = 0;
        socket.send_to(&last, peer).map_err(|e| format!("send: {e}"))?;
    }
}

/// GET `path` on a new connection: the status, the body's BLAKE3 and its length.
fn http_get(path: &str) -> Result<(u16, blake3::Hash, usize), String> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((SERVER, 80)), Duration::from_secs(10)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    write!(stream, "GET /{path} HTTP/1.1\r\nHost: {SERVER}\r\nConnection: close\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::new();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut body = 0;
    loop {
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        if head.ends_with(b"\r\n\r\n") {
            hasher.update(&buf[..n]);
            body += n;
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = head.split_off(end + 4);
            hasher.update(&rest);
            body += rest.len();
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok()).ok_or_else(|| format!("not an HTTP answer: {text:.80}"))?;
    Ok((status, hasher.finalize(), body))
}

/// POSTs `body` to /v1/report on a new connection, as the installer does: the HTTP status.
fn post_report(body: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((SERVER, 80)), Duration::from_secs(10)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let request = format!(
        "POST /v1/report HTTP/1.1\r\nHost: {SERVER}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok()).ok_or_else(|| format!("not an HTTP answer: {text:.80}"))
}

/// MOUNT of the export, LOOKUP of the image and READs of it, 1 MiB each, to its end: the BLAKE3
/// of what was read.
fn nfs_read_image() -> Result<blake3::Hash, String> {
    use nfs3_client::Nfs3ConnectionBuilder;
    use nfs3_client::nfs3_types::nfs3::{LOOKUP3args, Nfs3Result, READ3args, diropargs3, filename3};
    use nfs3_client::nfs3_types::xdr_codec::Opaque;
    use nfs3_client::tokio::TokioConnector;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(async {
        let work = async {
            let mut c = Nfs3ConnectionBuilder::new(TokioConnector, SERVER.to_string(), EXPORT)
                .mount_port(2049)
                .nfs3_port(2049)
                .connect_from_privileged_port(false)
                .mount()
                .await
                .map_err(|e| format!("MOUNT: {e}"))?;
            let mut handle = c.root_nfs_fh3();
            for name in IMAGE.path.split('/') {
                let args = LOOKUP3args { what: diropargs3 { dir: handle.clone(), name: filename3(Opaque::owned(name.as_bytes().to_vec())) } };
                handle = match c.lookup(&args).await.map_err(|e| format!("LOOKUP {name}: {e}"))? {
                    Nfs3Result::Ok(found) => found.object,
                    Nfs3Result::Err((s, _)) => return Err(format!("LOOKUP {name}: {s:?}")),
                };
            }
            let mut hasher = blake3::Hasher::new();
            let mut offset = 0u64;
            loop {
                let read = c.read(&READ3args { file: handle.clone(), offset, count: 1 << 20 }).await.map_err(|e| format!("READ at {offset}: {e}"))?;
                let ok = match read {
                    Nfs3Result::Ok(ok) => ok,
                    Nfs3Result::Err((s, _)) => return Err(format!("READ at {offset}: {s:?}")),
                };
                hasher.update(&ok.data);
                offset += ok.data.len() as u64;
                if ok.eof || ok.data.is_empty() {
                    break;
                }
            }
            c.unmount().await.map_err(|e| format!("UMNT: {e}"))?;
            Ok(hasher.finalize())
        };
        tokio::time::timeout(Duration::from_secs(60), work).await.map_err(|_| "NFS: no end within 60 s".to_string())?
    })
}

// ---------------------------------------------------------------------------------------------
// The abuse

#[derive(Clone, Copy, PartialEq, Eq)]
enum Abuse {
    /// A record mark of 2 GiB, then nothing.
    NfsMark,
    /// A connection that sends nothing.
    NfsIdle,
    /// A read request never acknowledged.
    TftpUnacknowledged,
    /// A report POST trickling its body a byte a second.
    HttpTrickle,
}

/// How many abusive connections (TFTP: requests) were made, by kind.
#[derive(Default)]
struct AbuseCounts {
    nfs_mark: AtomicU64,
    nfs_idle: AtomicU64,
    tftp: AtomicU64,
    http: AtomicU64,
    /// Connections refused or failed at once (serve at a cap, or an error).
    refused: AtomicU64,
}

/// A TCP connection from `source` to serve's `port`.
fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    // SAFETY: socket, bind and connect on a descriptor this function owns (closed on failure,
    // handed to TcpStream on success), with sockaddr_in of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let at = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() },
            sin_zero: [0; 8],
        };
        let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let (local, remote) = (at(source, 0), at(SERVER, port));
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), size) != 0 || libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), size) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(<TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd))
    }
}

/// Waits until serve closes `stream` or `stop` is set; `tick` runs every second (a trickle).
fn hold_until_closed(stream: &mut TcpStream, stop: &AtomicBool, mut tick: impl FnMut(&mut TcpStream) -> bool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            if !tick(stream) {
                return;
            }
        }
    }
}

/// One abusive slot: opens its kind of connection from `source` again and again until `stop`.
fn abuse_slot(kind: Abuse, source: Ipv4Addr, stop: &AtomicBool, counts: &AbuseCounts) {
    while !stop.load(Ordering::Relaxed) {
        match kind {
            Abuse::NfsMark | Abuse::NfsIdle => match connect_from(source, 2049) {
                Ok(mut s) => {
                    if kind == Abuse::NfsMark {
                        counts.nfs_mark.fetch_add(1, Ordering::Relaxed);
                        let _ = s.write_all(&0x7fff_ffffu32.to_be_bytes());
                    } else {
                        counts.nfs_idle.fetch_add(1, Ordering::Relaxed);
                    }
                    hold_until_closed(&mut s, stop, |_| true);
                }
                Err(_) => {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(200));
                }
            },
            Abuse::TftpUnacknowledged => {
                let Ok(socket) = UdpSocket::bind((source, 0)) else {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                };
                let rrq = format!("\0\x01{}\0octet\0timeout\x00255\0blksize\x001468\0", KERNEL.path);
                if socket.send_to(rrq.as_bytes(), (SERVER, 69)).is_ok() {
                    counts.tftp.fetch_add(1, Ordering::Relaxed);
                }
                // Never acknowledged; the socket stays open (no ICMP ends the transfer early)
                // until serve gives up: it resends for its timeout times its retries.
                let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = [0u8; 1600];
                let mut quiet_since = Instant::now();
                while !stop.load(Ordering::Relaxed) && quiet_since.elapsed() < Duration::from_secs(3) {
                    if socket.recv_from(&mut buf).is_ok() {
                        quiet_since = Instant::now();
                    }
                }
            }
            Abuse::HttpTrickle => match connect_from(source, 80) {
                Ok(mut s) => {
                    counts.http.fetch_add(1, Ordering::Relaxed);
                    let head = format!("POST /v1/report HTTP/1.1\r\nHost: {SERVER}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{");
                    if s.write_all(head.as_bytes()).is_ok() {
                        hold_until_closed(&mut s, stop, |s| s.write_all(b" ").is_ok());
                    }
                }
                Err(_) => {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(200));
                }
            },
        }
    }
}

/// The abusive slots: ABUSE_PER_KIND of each kind (NFS: half marks, half idle), spread over the
/// attacker's addresses.
fn abuse_plan() -> Vec<(Abuse, Ipv4Addr)> {
    let addresses = attacker_addresses();
    let kinds = (0..ABUSE_PER_KIND)
        .map(|n| if n % 2 == 0 { Abuse::NfsMark } else { Abuse::NfsIdle })
        .chain(std::iter::repeat_n(Abuse::TftpUnacknowledged, ABUSE_PER_KIND))
        .chain(std::iter::repeat_n(Abuse::HttpTrickle, ABUSE_PER_KIND));
    kinds.enumerate().map(|(n, kind)| (kind, addresses[n % addresses.len()])).collect()
}

// ---------------------------------------------------------------------------------------------
// serve

/// The nixos-pxe binary under test: $NIXOS_PXE, else the one `cargo bench` built.
fn nixos_pxe() -> Result<PathBuf, String> {
    let path = std::env::var_os("NIXOS_PXE").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_nixos-pxe")), PathBuf::from);
    if path.is_file() { Ok(path) } else { Err(format!("{} is missing: build it, or name one with NIXOS_PXE=", path.display())) }
}

/// examples/fleet/installer.nix on the benchmark's network with HOSTS hosts, one MAC each, and
/// serve's own NFS; the files every client fetches.
fn write_files(nixos_pxe: &Path, workdir: &Path) -> Result<Expected, String> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet/installer.nix");
    let text = run(Command::new(nixos_pxe).args(["options", "--source", "static", "--as-config-json", "--config"]).arg(&example))?;
    let mut tree: Value = serde_json::from_str(&text).map_err(|e| format!("options --as-config-json: {e}"))?;
    let server = &mut tree["bootServer"];
    server["address"] = SERVER.to_string().into();
    server["interface"] = BRIDGE.into();
    server["subnet"] = format!("10.77.0.0/{PREFIX}").into();
    server["dhcpRange"] = json!({ "start": POOL.0, "end": POOL.1 });
    server["router"] = SERVER.to_string().into();
    server["nameServers"] = json!([SERVER.to_string()]);
    server["tftpRoot"] = workdir.join("tftp").display().to_string().into();
    server["nfsExport"] = EXPORT.into();
    server["nfsMountOptions"] = "vers=3,tcp,port=2049,mountport=2049,mountproto=tcp,nolock".into();
    let target = tree["fleet"]["hosts"]["web1"]["target"].clone();
    tree["fleet"]["hosts"] = (0..HOSTS).map(|i| (host(i), json!({ "macs": [mac_text(mac(i))], "generation": 1, "target": target, "customInstaller": {} }))).collect();
    let config = workdir.join("fleet.json");
    std::fs::write(&config, serde_json::to_string_pretty(&tree).unwrap_or_default()).map_err(|e| format!("{}: {e}", config.display()))?;
    let hash = |root: &str, file: &Served| -> Result<blake3::Hash, String> {
        let path = workdir.join(root).join(file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let data = pseudo_random_bytes(file.bytes, file.seed);
        std::fs::write(&path, &data).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(blake3::hash(&data))
    };
    Ok(Expected { loader: hash("tftp", &LOADER)?, kernel: hash("tftp", &KERNEL)?, image: hash("nfsroot", &IMAGE)? })
}

fn serve_spec(nixos_pxe: &Path, workdir: &Path, state: &Path) -> ServerSpec {
    let path = |p: &Path| p.display().to_string();
    let timeout = CLIENT_TIMEOUT_S.to_string();
    ServerSpec {
        name: "nixos-pxe serve",
        program: path(nixos_pxe),
        args: [
            "serve",
            "--config",
            &path(&workdir.join("fleet.json")),
            "--dhcp",
            "authoritative",
            "--interface",
            BRIDGE,
            "--tftp-root",
            &path(&workdir.join("tftp")),
            "--nfs-root",
            &path(&workdir.join("nfsroot")),
            "--state-dir",
            &path(state),
            "--http-port",
            "80",
            "--client-timeout",
            &timeout,
            "--stall-timeout",
            &timeout,
            "--nfs-idle-timeout",
            &timeout,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    }
}

/// serve's peaks, sampled from /proc while a run goes on.
#[derive(Default, Clone, Copy)]
struct Peaks {
    fds: usize,
    threads: u64,
}

fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.trim_start_matches(':').split_whitespace().next()?.parse().ok())
}

fn sample_peaks(pid: u32, stop: &AtomicBool) -> Peaks {
    let mut peaks = Peaks::default();
    while !stop.load(Ordering::Relaxed) {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        peaks.fds = peaks.fds.max(fds);
        peaks.threads = peaks.threads.max(proc_status(pid, "Threads").unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    peaks
}

// ---------------------------------------------------------------------------------------------
// A run

struct RunResult {
    label: &'static str,
    clients: Vec<ClientRun>,
    wall: Duration,
    peak_rss_kib: u64,
    peaks: Peaks,
    /// serve's descriptors and threads when the clients were released (the abuse running).
    at_release: Peaks,
    serve_cpu: Duration,
    abuse: Option<AbuseCounts>,
}

fn one_run(nixos_pxe: &Path, network: &Network, workdir: &Path, expected: &Expected, label: &'static str, with_abuse: bool) -> Result<RunResult, String> {
    eprintln!("bench: {label}");
    let state = workdir.join(format!("state-{}", label.replace(' ', "-")));
    let log = workdir.join(format!("serve-{}.log", label.replace(' ', "-")));
    let mut server = Server::start(&serve_spec(nixos_pxe, workdir, &state), &network.server, log.clone())?;
    server.wait_until_ready(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        ["dhcp: serving", "tftp: serving", "http: serving", "NFS: serving"].iter().all(|s| text.contains(s))
    })?;
    let pid = server.pid();
    let cpu_before = process_cpu(pid);
    // Each client's interface up and without an address, before anything is timed.
    std::thread::scope(|scope| -> Result<(), String> {
        let handles: Vec<_> = network
            .clients
            .iter()
            .map(|ns| {
                scope.spawn(move || -> Result<(), String> {
                    ns.enter().map_err(|e| format!("setns {}: {e}", ns.name))?;
                    bring_up("eth0").map_err(|e| format!("{}: eth0 up: {e}", ns.name))?;
                    clear_address("eth0").map_err(|e| format!("{}: eth0 address: {e}", ns.name))
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("a set-up thread panicked".into())))
    })?;
    let stop_abuse = AtomicBool::new(false);
    let stop_sampling = AtomicBool::new(false);
    let counts = AbuseCounts::default();
    let deadline = Instant::now() + RUN_DEADLINE;
    let barrier = Barrier::new(HOSTS + 1);
    let expected = Arc::new(Expected { loader: expected.loader, kernel: expected.kernel, image: expected.image });
    let (clients, wall, peaks, at_release) = std::thread::scope(|scope| -> Result<_, String> {
        let sampler = scope.spawn(|| sample_peaks(pid, &stop_sampling));
        let mut abusers = Vec::new();
        if with_abuse {
            for (kind, source) in abuse_plan() {
                let (stop, counts, attacker) = (&stop_abuse, &counts, &network.attacker);
                let spawned = std::thread::Builder::new().stack_size(256 << 10).spawn_scoped(scope, move || {
                    lowest_priority();
                    if attacker.enter().is_ok() {
                        abuse_slot(kind, source, stop, counts);
                    }
                });
                abusers.push(spawned.map_err(|e| format!("cannot start an attacker thread: {e}"))?);
            }
            std::thread::sleep(ABUSE_HEAD_START);
        }
        let at_release = Peaks {
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
            threads: proc_status(pid, "Threads").unwrap_or(0),
        };
        let handles = network
            .clients
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (barrier, expected) = (&barrier, Arc::clone(&expected));
                std::thread::Builder::new().stack_size(1 << 20).spawn_scoped(scope, move || {
                    lowest_priority();
                    let inside = ns.enter();
                    barrier.wait();
                    match inside {
                        Ok(()) => one_client(i, &expected, deadline),
                        Err(e) => ClientRun { failed: Some((Step::Dhcp, format!("setns: {e}"))), ..ClientRun::default() },
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot start a client thread: {e}"))?;
        barrier.wait();
        let start = Instant::now();
        let clients: Vec<ClientRun> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| ClientRun { failed: Some((Step::Dhcp, "client thread panicked".into())), ..ClientRun::default() }))
            .collect();
        let wall = start.elapsed();
        stop_abuse.store(true, Ordering::Relaxed);
        for a in abusers {
            let _ = a.join();
        }
        stop_sampling.store(true, Ordering::Relaxed);
        let peaks = sampler.join().unwrap_or_default();
        Ok((clients, wall, peaks, at_release))
    })?;
    let peak_rss_kib = proc_status(pid, "VmHWM").unwrap_or(0);
    let serve_cpu = process_cpu(pid).saturating_sub(cpu_before);
    if let Some(status) = server.exited() {
        return Err(format!("serve exited ({status}) during the run:\n{}", server.log_text()));
    }
    drop(server);
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-load-serve-{}.log", label.replace(' ', "-")));
    std::fs::copy(&log, &kept).map_err(|e| format!("keep {}: {e}", kept.display()))?;
    Ok(RunResult { label, clients, wall, peak_rss_kib, peaks, at_release, serve_cpu, abuse: with_abuse.then_some(counts) })
}

// ---------------------------------------------------------------------------------------------
// The report

fn percentile(values: &[Duration], q: f64) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".into(), |d| format!("{:.0}", d.as_secs_f64() * 1000.0))
}

fn run_table(r: &RunResult) -> String {
    let mut table = format!(
        "| {} | completed | failed here | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|\n",
        r.label
    );
    for s in STEPS {
        let times: Vec<Duration> = r.clients.iter().flat_map(|c| c.times.iter().filter(|(t, _)| *t == s).map(|(_, d)| *d)).collect();
        let failed = r.clients.iter().filter(|c| c.failed.as_ref().is_some_and(|(t, _)| *t == s)).count();
        table += &format!("| {} | {} | {failed} | {} | {} | {} |\n", s.label(), times.len(), ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)), ms(percentile(&times, 1.0)));
    }
    let whole: Vec<Duration> = r.clients.iter().filter_map(|c| c.whole).collect();
    let failed = r.clients.iter().filter(|c| c.failed.is_some()).count();
    table += &format!(
        "| **the whole conversation** | **{}** | **{failed}** | {} | {} | {} |\n",
        whole.len(),
        ms(percentile(&whole, 0.5)),
        ms(percentile(&whole, 0.99)),
        ms(percentile(&whole, 1.0))
    );
    table
}

fn totals_table(runs: &[RunResult]) -> String {
    let mut table = String::from(
        "| run | clients completed | failed | wall s | serve peak RSS MiB | peak descriptors (at release) | peak threads (at release) | serve CPU s | DHCP messages sent | TFTP resends | abusive connections made (NFS mark / NFS idle / TFTP / HTTP; refused) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in runs {
        let completed = r.clients.iter().filter(|c| c.whole.is_some()).count();
        let abuse = r.abuse.as_ref().map_or_else(
            || "none".to_string(),
            |a| {
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                format!("{} / {} / {} / {}; {}", get(&a.nfs_mark), get(&a.nfs_idle), get(&a.tftp), get(&a.http), get(&a.refused))
            },
        );
        table += &format!(
            "| {} | {completed}/{HOSTS} | {} | {:.1} | {:.0} | {} ({}) | {} ({}) | {:.1} | {} | {} | {abuse} |\n",
            r.label,
            HOSTS - completed,
            r.wall.as_secs_f64(),
            r.peak_rss_kib as f64 / 1024.0,
            r.peaks.fds,
            r.at_release.fds,
            r.peaks.threads,
            r.at_release.threads,
            r.serve_cpu.as_secs_f64(),
            r.clients.iter().map(|c| u64::from(c.dhcp_sends)).sum::<u64>(),
            r.clients.iter().map(|c| u64::from(c.tftp_resends)).sum::<u64>(),
        );
    }
    table
}

fn failures(runs: &[RunResult]) -> String {
    let mut text = String::new();
    for r in runs {
        let failed: Vec<String> = r.clients.iter().enumerate().filter_map(|(i, c)| c.failed.as_ref().map(|(s, why)| format!("{} at {s:?}: {why}", host(i)))).collect();
        if !failed.is_empty() {
            text += &format!("\n{}: {} clients failed; the first ones:\n", r.label, failed.len());
            for f in failed.iter().take(10) {
                text += &format!("- {f}\n");
            }
        }
    }
    text
}

fn machine_description() -> String {
    let machine = common::cores_and_cpu();
    let disk = first_line(Command::new("sh").args(["-c", "df --output=source,fstype target | tail -1 | tr -s ' '"]).current_dir(env!("CARGO_MANIFEST_DIR")));
    format!("{machine}, Linux {}; {HOSTS} client namespaces and an attacker's on a bridge in serve's; state directory on {disk}", first_line(Command::new("uname").arg("-r")))
}

/// Raises this process's open-file limit: 200 clients and 150 abusive connections hold sockets.
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

fn bench() -> Result<String, String> {
    if run(Command::new("id").arg("-u"))?.trim() != "0" {
        return Err("run it as root: the benchmark makes network namespaces".into());
    }
    sh("command -v ip >/dev/null").map_err(|_| "ip (iproute2) is missing".to_string())?;
    raise_own_limit();
    let started = Instant::now();
    let busy_before = busy_before_run();
    let load_before = first_line(Command::new("cat").arg("/proc/loadavg"));
    let cpu_before = cpu_time();
    let nixos_pxe = nixos_pxe()?;
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    let workdir = tempfile::Builder::new().prefix("bench-load-").tempdir_in(&target).map_err(|e| format!("cannot make a directory in target/: {e}"))?;
    let expected = write_files(&nixos_pxe, workdir.path())?;
    let network = Network::create(workdir.path())?;
    let runs = vec![
        one_run(&nixos_pxe, &network, workdir.path(), &expected, "quiet", false)?,
        one_run(&nixos_pxe, &network, workdir.path(), &expected, "under abuse", true)?,
    ];
    drop(network);
    let load_after = first_line(Command::new("cat").arg("/proc/loadavg"));
    let date = first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    let failed: usize = runs.iter().map(|r| r.clients.iter().filter(|c| c.failed.is_some()).count()).sum();
    let load = |l: &str| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    Ok(format!(
        "Measured by `cargo bench --bench load` on {date} in {:.0} s.\n\
         Machine: {}.\n\
         CPU busy in the second before the run: {busy_before:.0}%; load average before: {}, after: {}; CPU time stolen by the hypervisor during it: {:.1}%.\n\
         {HOSTS} fleet hosts, each its own namespace, MAC and lease, released at once; serve --client-timeout {CLIENT_TIMEOUT_S} --stall-timeout {CLIENT_TIMEOUT_S} \
         --nfs-idle-timeout {CLIENT_TIMEOUT_S}, a fresh state per run. Under abuse: {ABUSE_PER_KIND} connections of each kind from {ATTACKER_ADDRESSES} addresses, \
         from {} s before the clients until the last ended. Goal: 0 failed legitimate clients; failed: {failed}.\n\n{}\n{}\n{}{}",
        started.elapsed().as_secs_f64(),
        machine_description(),
        load(&load_before),
        load(&load_after),
        percent_since(&cpu_before, |t| t.stolen),
        ABUSE_HEAD_START.as_secs(),
        runs.iter().map(run_table).collect::<Vec<_>>().join("\n"),
        totals_table(&runs),
        "",
        failures(&runs)
    ))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and must not start it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/load.rs: run it with `cargo bench --bench load` (as root)");
        return;
    }
    common::print_and_keep(bench(), "bench-load.md");
}
