//! The read-only TFTP server of `nixos-pxe serve`: one listener, one thread and one ephemeral socket per
//! transfer; option negotiation (blksize, tsize, timeout, windowsize), rollover, and non-amplifying retransmission.

use super::tftp_packet::{self as packet, ErrorCode, Packet, Request};
use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use crate::serve::beneath::{Kind, Links, Root, kind};
use crate::serve::limits::Gate;
use rustix::fs::OFlags;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// RFC 2348: blksize between 8 and 65464.
pub const MIN_BLKSIZE: usize = 8;
pub const MAX_BLKSIZE: usize = 65464;
/// The largest window we agree to (RFC 7440 lets the server answer less than asked). It must stay far
/// below 65536 so an ACK's 16-bit block number maps to exactly one block of the window.
pub const MAX_WINDOW: u16 = 64;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The TFTP root, held open: every file is opened below it (src/serve/beneath.rs).
    pub root: Arc<Root>,
    /// Retransmission timeout unless the client asks for one (RFC 2349 `timeout`).
    pub timeout: Duration,
    /// Timeouts in a row without progress before a transfer is abandoned.
    pub retries: u32,
    /// Transfers at once, in all and per client address; more requests get "server busy"
    /// instead of another thread.
    pub gate: Arc<Gate>,
    /// The largest retransmission timeout a client may ask for; a larger `timeout` option is
    /// left out of the OACK (RFC 2349 lets the server decline it) and the default applies.
    pub max_timeout: Duration,
    /// SO_BINDTODEVICE for every socket (the transfer sockets too, so replies leave on that link).
    pub interface: Option<String>,
    /// Files made on request instead of read below the root (the fleet's per-host configs).
    pub generated: Option<Arc<dyn Generated>>,
}

impl std::fmt::Debug for dyn Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Generated(..)")
    }
}

impl Settings {
    pub fn new(root: &Path) -> io::Result<Settings> {
        let root = Arc::new(Root::open(root).map_err(|e| io::Error::new(e.kind(), format!("TFTP root {e}")))?);
        Ok(Settings {
            root,
            timeout: Duration::from_secs(1),
            retries: 5,
            gate: Gate::new(crate::serve::limits::MAX_TFTP_TRANSFERS, crate::serve::limits::DEFAULT_PER_CLIENT),
            max_timeout: crate::serve::limits::TIMEOUTS.tftp_max_timeout,
            interface: None,
            generated: None,
        })
    }
}

/// Files whose bytes are made when a client asks for them.
pub trait Generated: Send + Sync {
    /// The bytes of `relative` (a path below the root, as [`relative_path`] makes it), or None
    /// when this path is not generated (then the file below the root is served). `client` asked
    /// for it; `local` is the server's address the transfer is sent from.
    fn generate(&self, relative: &Path, client: SocketAddr, local: SocketAddr) -> Option<Result<Vec<u8>, Refusal>>;
}

/// What a transfer sends: a file, or bytes made for the request.
pub trait Source {
    /// Reads from `offset` into `buf`; fewer bytes (0 at the end) when there are no more.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl Source for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

impl Source for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// What was agreed for one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: usize,
    pub timeout: Duration,
    /// The wait for the client's first acknowledgement (of the OACK, or of block 1): the
    /// server's own timeout, whatever the client asked for. A request from a forged address is
    /// never acknowledged, and its transfer ends after `retries` of these.
    pub first_wait: Duration,
    pub window: u16,
    /// The OACK's options; empty means no OACK (plain RFC 1350, data starts at block 1).
    pub oack: Vec<(String, String)>,
}

/// RFC 2347: options the server does not know or cannot honour are left out of the OACK; values out of
/// range are ignored (timeout, above `max_timeout` too) or lowered to our maximum (blksize,
/// windowsize), never refused.
pub fn negotiate(request: &Request, file_size: u64, default_timeout: Duration, max_timeout: Duration) -> Negotiated {
    let mut n = Negotiated { blksize: 512, timeout: default_timeout, first_wait: default_timeout, window: 1, oack: Vec::new() };
    for (name, value) in &request.options {
        let number = value.trim().parse::<u64>().ok();
        match (name.as_str(), number) {
            ("blksize", Some(v)) if v >= MIN_BLKSIZE as u64 => {
                n.blksize = v.min(MAX_BLKSIZE as u64) as usize;
                n.oack.push((name.clone(), n.blksize.to_string()));
            }
            ("timeout", Some(v)) if (1..=255).contains(&v) && Duration::from_secs(v) <= max_timeout => {
                n.timeout = Duration::from_secs(v);
                n.oack.push((name.clone(), v.to_string()));
            }
            ("tsize", Some(_)) => n.oack.push((name.clone(), file_size.to_string())),
            ("windowsize", Some(v)) if v >= 1 => {
                n.window = v.min(MAX_WINDOW as u64) as u16;
                n.oack.push((name.clone(), n.window.to_string()));
            }
            _ => {}
        }
    }
    n
}

/// Why a request was refused, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// Opens the regular file a client asked for, below the root and nowhere else. `..` anywhere is
/// refused; a leading `/` (or the root's own absolute path) is taken relative to the root, as
/// tftpd-hpa -s does; backslashes count as separators (some firmware sends them). The file is
/// opened by `openat2` below the root's descriptor: a symbolic link is followed only if it stays
/// below the root (relative, no `..` above it), never into another file system, and on kernels
/// without openat2 not at all. Only a regular file is sent: a FIFO or device node is refused
/// without being opened for reading.
pub fn open(root: &Root, requested: &str) -> Result<(File, u64), Refusal> {
    let refuse = |code, message: &str| Err(Refusal { code, message: message.to_string() });
    let relative = relative_path(root, requested)?;
    // O_PATH first: the type decides before anything is opened for reading.
    let fd = match root.open_below(&relative, OFlags::PATH, Links::FollowBeneath) {
        Ok(fd) => fd,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => refuse(ErrorCode::FileNotFound, "file not found"),
                Some(libc::EXDEV) => refuse(ErrorCode::AccessViolation, "access violation: a symlink or mount point leads outside the TFTP root"),
                Some(libc::ELOOP) => refuse(ErrorCode::AccessViolation, "access violation: symlinks are not followed (kernel without openat2)"),
                _ => refuse(ErrorCode::AccessViolation, "access violation"),
            };
        }
    };
    let stat = rustix::fs::fstat(&fd).map_err(|_| Refusal { code: ErrorCode::AccessViolation, message: "access violation".into() })?;
    match kind(&stat) {
        Kind::File => {}
        // Only where openat2 is missing: with it, a link at the end is followed below the root.
        Kind::Link => return refuse(ErrorCode::AccessViolation, "access violation: symlinks are not followed (kernel without openat2)"),
        Kind::Directory | Kind::Special => return refuse(ErrorCode::FileNotFound, "not a regular file"),
    }
    let file = match root.open_below(&relative, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY, Links::FollowBeneath) {
        Ok(fd) => File::from(fd),
        Err(e) => return refuse(ErrorCode::AccessViolation, &format!("cannot read: {e}")),
    };
    // The same file as the one whose type was checked (not swapped in between).
    match rustix::fs::fstat(&file) {
        Ok(opened) if kind(&opened) == Kind::File && opened.st_ino == stat.st_ino && opened.st_dev == stat.st_dev => {
            Ok((file, opened.st_size as u64))
        }
        _ => refuse(ErrorCode::FileNotFound, "not a regular file"),
    }
}

/// The path below the root a client's name means: backslashes as slashes, a leading `/` (or the
/// root's own absolute path) taken away, `.` dropped; `..` anywhere and an empty name refused.
pub fn relative_path(root: &Root, requested: &str) -> Result<PathBuf, Refusal> {
    let refuse = |code, message: &str| Err(Refusal { code, message: message.to_string() });
    let normalized = requested.replace('\\', "/");
    let relative = match Path::new(&normalized).strip_prefix(&root.path) {
        Ok(inside) => inside.to_path_buf(),
        Err(_) => PathBuf::from(normalized.trim_start_matches('/')),
    };
    if relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return refuse(ErrorCode::AccessViolation, "access violation: path leaves the TFTP root");
    }
    let relative: PathBuf = relative.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    if relative.as_os_str().is_empty() {
        return refuse(ErrorCode::FileNotFound, "not a regular file");
    }
    Ok(relative)
}

/// The two things a transfer does with the network; a UDP socket in the server, a scripted peer in tests.
pub trait Link {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()>;
    /// A datagram from the client, or None when `deadline` passes first.
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<usize>>;
}

/// A socket connected to the client: the kernel drops datagrams from any other address.
pub struct UdpLink(pub UdpSocket);

impl Link for UdpLink {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        self.0.send(datagram).map(|_| ())
    }
    fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        self.0.set_read_timeout(Some(left))?;
        match self.0.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("no acknowledgement after {0} timeouts")]
    Timeout(u32),
    #[error("client sent error {code}: {message}")]
    Client { code: u16, message: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Counters of one transfer, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub bytes: u64,
    pub blocks: u64,
    /// DATA packets sent, retransmissions included.
    pub data_sent: u64,
    pub timeouts: u64,
}

/// One retransmission timeout without progress: counted for this wait and for the transfer's
/// statistics; more than `retries` in a row abandon the transfer.
fn count_timeout(timeouts: &mut u32, stats: &mut Stats, retries: u32) -> Result<(), TransferError> {
    *timeouts += 1;
    stats.timeouts += 1;
    if *timeouts > retries { Err(TransferError::Timeout(*timeouts)) } else { Ok(()) }
}

/// Sends `source` (`size` bytes) with the negotiated options.
///
/// Retransmission, and why it cannot amplify:
/// - State: `acked` = highest block the client has acknowledged in order (blocks count from 1 and are
///   numbered on the wire modulo 65536, so they roll over to 0 after 65535); `next` = next block to send.
///   We send while `next <= acked + window`, so at most one window is ever outstanding.
/// - An ACK is mapped to the one block of the outstanding window [acked, next-1] with that 16-bit number.
///   Only an ACK that ADVANCES `acked` causes sending: it slides the window by the blocks it acknowledges.
///   If it acknowledges less than everything sent (RFC 7440: the client saw a gap and acknowledges the
///   last block it got in order), we go back to acked+1, so one advancing ACK sends at most one window.
/// - A duplicate ACK (same block again) or a stale one (outside the window, e.g. delayed from before a
///   rollover) is ignored: it sends nothing and does not reset the timer. This is the Sorcerer's
///   Apprentice fix of RFC 1123 4.2.3.1 extended to windows; servers that resent the window on each
///   duplicate turned EDK2's 1.7 MB into 20 GB.
/// - Timeout (no advancing ACK for `timeout`): resend the window from acked+1, once per timeout period;
///   after `retries` timeouts in a row the transfer is abandoned.
pub fn send_file(link: &mut dyn Link, source: &dyn Source, size: u64, n: &Negotiated, retries: u32) -> Result<Stats, TransferError> {
    let mut stats = Stats::default();
    let mut buf = vec![0u8; MAX_BLKSIZE + 4];
    if !n.oack.is_empty() {
        let oack = packet::encode_oack(&n.oack);
        let mut timeouts = 0;
        link.send(&oack)?;
        let mut deadline = Instant::now() + n.first_wait;
        loop {
            match link.recv(&mut buf, deadline)? {
                None => {
                    count_timeout(&mut timeouts, &mut stats, retries)?;
                    link.send(&oack)?;
                    deadline = Instant::now() + n.first_wait;
                }
                Some(len) => match packet::parse(&buf[..len]) {
                    Ok(Packet::Ack { block: 0 }) => break,
                    Ok(Packet::Error { code, message }) => return Err(TransferError::Client { code, message }),
                    _ => {}
                },
            }
        }
    }

    let blksize = n.blksize as u64;
    // A file that is an exact multiple of blksize ends with an empty block.
    let last = size / blksize + 1;
    let window = u64::from(n.window.max(1));
    let mut data = vec![0u8; n.blksize];
    let mut out = Vec::with_capacity(n.blksize + 4);
    let mut acked: u64 = 0;
    let mut next: u64 = 1;
    let mut timeouts = 0;
    // Until the client has acknowledged something it may be no client at all (see first_wait).
    let wait = |acked: u64| if acked == 0 && n.oack.is_empty() { n.first_wait } else { n.timeout };
    let mut deadline = Instant::now() + wait(acked);
    loop {
        while next <= last && next <= acked + window {
            let offset = (next - 1) * blksize;
            let want = (size.saturating_sub(offset)).min(blksize) as usize;
            let got = read_full(source, &mut data[..want], offset)?;
            packet::encode_data(&mut out, (next % 65536) as u16, &data[..got]);
            link.send(&out)?;
            stats.data_sent += 1;
            next += 1;
        }
        match link.recv(&mut buf, deadline)? {
            None => {
                count_timeout(&mut timeouts, &mut stats, retries)?;
                next = acked + 1;
                deadline = Instant::now() + wait(acked);
            }
            Some(len) => match packet::parse(&buf[..len]) {
                Ok(Packet::Ack { block }) => {
                    let sent = next - 1;
                    let Some(block) = ack_to_block(block, acked, sent) else { continue };
                    if block <= acked {
                        continue; // duplicate: see above
                    }
                    acked = block;
                    timeouts = 0;
                    deadline = Instant::now() + n.timeout;
                    if acked == last {
                        stats.blocks = last;
                        stats.bytes = size;
                        return Ok(stats);
                    }
                    if acked < sent {
                        next = acked + 1;
                    }
                }
                Ok(Packet::Error { code, message }) => return Err(TransferError::Client { code, message }),
                _ => {}
            },
        }
    }
}

/// The block in [acked, sent] whose number on the wire is `wire`, if any.
fn ack_to_block(wire: u16, acked: u64, sent: u64) -> Option<u64> {
    let distance = u64::from(wire.wrapping_sub((acked % 65536) as u16));
    let block = acked + distance;
    (block <= sent).then_some(block)
}

fn read_full(source: &dyn Source, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match source.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break, // the file shrank while we served it: send what there is
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A UDP socket on `addr`, bound to `interface` when given (needs CAP_NET_RAW/root).
pub fn bind(addr: SocketAddr, interface: Option<&str>) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    if let Some(interface) = interface {
        super::bind_to_device(&socket, interface)?;
    }
    Ok(socket)
}

/// How long after its transfer ended a read request identical to one already taken (same client
/// address and port, same bytes) still counts as a retransmission of it, not as a new request.
/// A client resends its RRQ until an answer arrives (GRUB every 400 ms or so), and a busy server
/// finds several copies waiting: each would start a transfer of its own and, for a generated
/// file, make it again (for a fleet host, decide again: a copy handled after the installer
/// started would look like the machine booting from the network again). So a copy is dropped
/// while the transfer its first copy started runs, and for this long after; that transfer
/// answers the client. GRUB opens each file from a new port (25300, 25301, ... from its start),
/// so the same port asks again only after a reboot, which takes longer than this.
pub const RETRANSMITTED_RRQ: Duration = Duration::from_secs(5);

/// When the transfer of a taken request ended (None: it runs).
type Ended = Arc<std::sync::Mutex<Option<Instant>>>;

/// The read requests whose transfers run or ended within [`RETRANSMITTED_RRQ`].
#[derive(Default)]
pub struct RecentRequests(std::collections::HashMap<(SocketAddr, Vec<u8>), Ended>);

impl RecentRequests {
    /// None when `datagram` from `peer` is a copy of a request whose transfer runs or ended at
    /// most [`RETRANSMITTED_RRQ`] before `now`; else it is taken, and the transfer it starts
    /// sets the returned end when it ends.
    pub fn take(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) -> Option<Ended> {
        let recent = |ended: &Ended| match *ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            None => true,
            Some(at) => now.saturating_duration_since(at) < RETRANSMITTED_RRQ,
        };
        if self.0.get(&(peer, datagram.to_vec())).is_some_and(recent) {
            return None;
        }
        if self.0.len() >= 4096 {
            self.0.retain(|_, ended| recent(ended));
        }
        let ended: Ended = Arc::default();
        self.0.insert((peer, datagram.to_vec()), Arc::clone(&ended));
        Some(ended)
    }

    /// Forgets a request that started no transfer (the server was busy): its copies may.
    pub fn forget(&mut self, peer: SocketAddr, datagram: &[u8]) {
        self.0.remove(&(peer, datagram.to_vec()));
    }
}

/// Marks the transfer ended when dropped (also when it panics).
struct EndsTransfer(Ended);

impl Drop for EndsTransfer {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }
}

/// Serves until `stop` is set: reads requests on `listener`, starts a transfer thread for each RRQ.
pub fn serve(listener: UdpSocket, settings: Settings, stop: &AtomicBool) -> io::Result<()> {
    let settings = Arc::new(settings);
    let mut recent = RecentRequests::default();
    let mut throttle = crate::serve::limits::Throttle::default();
    listener.set_read_timeout(Some(Duration::from_millis(250)))?;
    tracing::info!(address = %listener.local_addr()?, root = %settings.root.path.display(), "tftp: serving");
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let (len, peer) = match listener.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => continue,
            Err(e) => {
                // A socket error (an ICMP error queued by a transfer, ENOBUFS): say it, go on.
                if let Some(quiet) = throttle.allow("recv", Instant::now()) {
                    tracing::warn!(quiet, "tftp: receive failed: {e}");
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        match packet::parse(&buf[..len]) {
            Ok(Packet::Rrq(request)) => {
                let Some(ended) = recent.take(peer, &buf[..len], Instant::now()) else {
                    tracing::debug!(client = %peer, file = %request.filename, "tftp: a retransmitted request, answered by the transfer its first copy started");
                    continue;
                };
                let permit = match settings.gate.enter(peer.ip()) {
                    Ok(p) => p,
                    Err(full) => {
                        if let Some(quiet) = throttle.allow(&format!("busy {}", peer.ip()), Instant::now()) {
                            tracing::warn!(client = %peer, file = %request.filename, quiet, "tftp: refused, server busy: {full}");
                        }
                        let _ = listener.send_to(&packet::encode_error(ErrorCode::NotDefined, "server busy"), peer);
                        recent.forget(peer, &buf[..len]);
                        continue;
                    }
                };
                let settings = Arc::clone(&settings);
                let spawned = std::thread::Builder::new().name(format!("tftp {peer}")).spawn(move || {
                    let _ends = EndsTransfer(ended);
                    transfer(&settings, peer, &request);
                    drop(permit);
                });
                if let Err(e) = spawned {
                    tracing::error!(client = %peer, "tftp: cannot start a transfer thread: {e}");
                }
            }
            Ok(Packet::Wrq(request)) => {
                tracing::warn!(client = %peer, file = %request.filename, "tftp: write request refused (read-only server)");
                let _ = listener.send_to(&packet::encode_error(ErrorCode::AccessViolation, "read-only server"), peer);
            }
            // DATA/ACK/ERROR on port 69 belong to no transfer; garbage is dropped without an answer so the
            // server cannot be used to reflect traffic.
            Ok(other) => tracing::debug!(client = %peer, "tftp: ignored {other:?} on the request port"),
            Err(e) => tracing::warn!(client = %peer, bytes = len, "tftp: malformed request: {e}"),
        }
    }
    tracing::info!(transfers_running = settings.gate.in_use(), "tftp: stopped");
    Ok(())
}

/// One read request, start to end, on its own socket (RFC 1350: a new TID per transfer).
fn transfer(settings: &Settings, peer: SocketAddr, request: &Request) {
    let started = Instant::now();
    let file_name = request.filename.as_str();
    let socket = match bind(SocketAddr::new(unspecified(peer), 0), settings.interface.as_deref()).and_then(|s| s.connect(peer).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(client = %peer, file = file_name, "tftp: cannot open a transfer socket: {e}");
            return;
        }
    };
    let mut link = UdpLink(socket);
    let refuse = |link: &mut UdpLink, code: ErrorCode, message: &str| {
        tracing::warn!(client = %peer, file = file_name, code = code as u16, "tftp: refused: {message}");
        let _ = link.send(&packet::encode_error(code, message));
    };
    if request.mode != "octet" && request.mode != "netascii" {
        return refuse(&mut link, ErrorCode::IllegalOperation, "only octet mode is served");
    }
    let generated = match (&settings.generated, relative_path(&settings.root, file_name)) {
        (Some(generated), Ok(relative)) => {
            let local = link.0.local_addr().unwrap_or_else(|_| SocketAddr::new(unspecified(peer), 0));
            generated.generate(&relative, peer, local)
        }
        _ => None,
    };
    let (file, bytes);
    let (source, size): (&dyn Source, u64) = match generated {
        Some(Ok(made)) => {
            bytes = made;
            (&bytes, bytes.len() as u64)
        }
        Some(Err(r)) => return refuse(&mut link, r.code, &r.message),
        None => match open(&settings.root, file_name) {
            Ok((opened, size)) => {
                file = opened;
                (&file, size)
            }
            Err(r) => return refuse(&mut link, r.code, &r.message),
        },
    };
    let n = negotiate(request, size, settings.timeout, settings.max_timeout);
    match send_file(&mut link, source, size, &n, settings.retries) {
        Ok(stats) => {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(
                client = %peer, file = file_name, bytes = stats.bytes, blksize = n.blksize, windowsize = n.window,
                sent = stats.data_sent, timeouts = stats.timeouts, seconds,
                mb_per_s = stats.bytes as f64 / 1e6 / seconds.max(1e-9), "tftp: sent"
            );
        }
        // A client that only asked for tsize ends the transfer with error 8 after the OACK.
        Err(TransferError::Client { code: 8, .. }) => {
            tracing::info!(client = %peer, file = file_name, bytes = size, "tftp: client ended after the OACK (option query)")
        }
        Err(e) => {
            tracing::warn!(client = %peer, file = file_name, seconds = started.elapsed().as_secs_f64(), "tftp: transfer failed: {e}")
        }
    }
}

fn unspecified(peer: SocketAddr) -> std::net::IpAddr {
    match peer {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::Write;

    fn request(options: &[(&str, &str)]) -> Request {
        Request { filename: "f".into(), mode: "octet".into(), options: options.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect() }
    }

    #[test]
    fn negotiation_clamps_and_ignores() {
        let n = negotiate(&request(&[("blksize", "70000"), ("tsize", "0"), ("windowsize", "1000"), ("timeout", "0"), ("x", "1")]), 42, Duration::from_secs(1), Duration::from_secs(255));
        assert_eq!(n.blksize, MAX_BLKSIZE);
        assert_eq!(n.window, MAX_WINDOW);
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert_eq!(n.oack, vec![("blksize".into(), "65464".into()), ("tsize".into(), "42".into()), ("windowsize".into(), "64".into())]);
        let n = negotiate(&request(&[("blksize", "7"), ("timeout", "3")]), 0, Duration::from_secs(1), Duration::from_secs(255));
        assert_eq!((n.blksize, n.timeout), (512, Duration::from_secs(3)));
        assert!(negotiate(&request(&[]), 0, Duration::from_secs(1), Duration::from_secs(255)).oack.is_empty());
    }

    #[test]
    fn a_client_timeout_above_the_cap_is_declined_and_the_first_wait_is_the_servers() {
        let cap = Duration::from_secs(10);
        let n = negotiate(&request(&[("timeout", "255"), ("blksize", "1024")]), 0, Duration::from_secs(1), cap);
        assert_eq!((n.timeout, n.first_wait), (Duration::from_secs(1), Duration::from_secs(1)));
        assert_eq!(n.oack, vec![("blksize".into(), "1024".into())], "the timeout is left out of the OACK");
        let n = negotiate(&request(&[("timeout", "10")]), 0, Duration::from_secs(1), cap);
        assert_eq!((n.timeout, n.first_wait), (Duration::from_secs(10), Duration::from_secs(1)));
    }

    #[test]
    fn ack_mapping_survives_rollover() {
        assert_eq!(ack_to_block(0, 65535, 65536 + 3), Some(65536));
        assert_eq!(ack_to_block(65535, 65535, 65536 + 3), Some(65535));
        assert_eq!(ack_to_block(5, 65535, 65536 + 3), None);
        assert_eq!(ack_to_block(3, 0, 4), Some(3));
    }

    #[test]
    fn paths_outside_the_root_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("nixos")).expect("mkdir");
        std::fs::write(root.join("nixos/bzImage"), b"kernel").expect("write");
        std::fs::write(dir.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).expect("symlink");
        std::os::unix::fs::symlink("../secret", root.join("up")).expect("symlink");
        std::os::unix::fs::symlink("..", root.join("parent")).expect("symlink");
        std::os::unix::fs::symlink("/", root.join("hostroot")).expect("symlink");
        std::os::unix::fs::symlink("nixos/bzImage", root.join("in")).expect("symlink");
        std::os::unix::fs::symlink("nixos", root.join("dir")).expect("symlink");
        rustix::fs::mkfifoat(rustix::fs::CWD, root.join("fifo"), rustix::fs::Mode::from_raw_mode(0o644)).expect("mkfifo");
        let root = Root::open(&root).expect("root");
        let code = |p: &str| open(&root, p).map(|(_, size)| size).map_err(|r| r.code);
        assert_eq!(code("nixos/bzImage"), Ok(6));
        assert_eq!(code("/nixos/bzImage"), Ok(6));
        assert_eq!(code(&format!("{}/nixos/bzImage", root.path.display())), Ok(6));
        assert_eq!(code("in"), Ok(6), "a link that stays below the root is followed");
        assert_eq!(code("dir/bzImage"), Ok(6));
        assert_eq!(code("./nixos/./bzImage"), Ok(6));
        assert_eq!(code("../secret"), Err(ErrorCode::AccessViolation));
        assert_eq!(code("nixos/../../secret"), Err(ErrorCode::AccessViolation));
        assert_eq!(code("..\\secret"), Err(ErrorCode::AccessViolation));
        for link_out in ["out", "up", "parent/secret", "hostroot/etc/hostname", "hostroot/etc/shadow"] {
            assert_eq!(code(link_out), Err(ErrorCode::AccessViolation), "{link_out}");
        }
        assert_eq!(code("/etc/passwd"), Err(ErrorCode::FileNotFound));
        assert_eq!(code("nixos"), Err(ErrorCode::FileNotFound));
        assert_eq!(code("missing"), Err(ErrorCode::FileNotFound));
        assert_eq!(code(""), Err(ErrorCode::FileNotFound));
        // A FIFO is refused without being opened for reading (which would block).
        assert_eq!(code("fifo"), Err(ErrorCode::FileNotFound));
        // Without openat2 no link is followed, not even one inside.
        root.force_component_walk();
        assert_eq!(code("nixos/bzImage"), Ok(6));
        assert_eq!(code("in"), Err(ErrorCode::AccessViolation));
        assert_eq!(code("hostroot/etc/shadow"), Err(ErrorCode::AccessViolation));
    }

    /// A scripted client: answers every DATA packet it is sent, counting them; `dup` repeats each ACK.
    struct Client {
        inbox: VecDeque<Vec<u8>>,
        window: u64,
        received: Vec<u8>,
        expected_block: u64,
        since_ack: u64,
        data_packets: u64,
        dup: bool,
        /// Drop the DATA packets whose (absolute) send index is listed, as loss would.
        lose: Vec<u64>,
    }

    impl Link for Client {
        fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
            match packet::parse(datagram).expect("server sends valid packets") {
                Packet::Oack { .. } => self.inbox.push_back(packet::encode_ack(0)),
                Packet::Data { block, data } => {
                    self.data_packets += 1;
                    assert!(self.data_packets <= 200_000, "amplification: {} DATA packets sent", self.data_packets);
                    if self.lose.contains(&self.data_packets) {
                        return Ok(());
                    }
                    let ack = |b: u64| packet::encode_ack((b % 65536) as u16);
                    if block == (self.expected_block % 65536) as u16 {
                        self.received.extend_from_slice(data);
                        self.since_ack += 1;
                        let done = data.len() < 512;
                        if self.since_ack == self.window || done {
                            self.since_ack = 0;
                            self.inbox.push_back(ack(self.expected_block));
                            if self.dup {
                                self.inbox.push_back(ack(self.expected_block));
                                self.inbox.push_back(ack(self.expected_block.saturating_sub(1)));
                            }
                        }
                        self.expected_block += 1;
                    } else {
                        // RFC 7440: out of order, acknowledge the last block received in order.
                        self.since_ack = 0;
                        self.inbox.push_back(ack(self.expected_block - 1));
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8], _deadline: Instant) -> io::Result<Option<usize>> {
            Ok(self.inbox.pop_front().map(|p| {
                buf[..p.len()].copy_from_slice(&p);
                p.len()
            }))
        }
    }

    fn run(size: usize, window: u16, dup: bool, lose: Vec<u64>) -> (Stats, Client, Vec<u8>) {
        let mut f = tempfile::tempfile().expect("tempfile");
        let content: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&content).expect("write");
        let n = negotiate(&request(&[("windowsize", &window.to_string()), ("tsize", "0")]), size as u64, Duration::from_millis(1), Duration::from_secs(255));
        let mut client = Client { inbox: VecDeque::new(), window: window.into(), received: Vec::new(), expected_block: 1, since_ack: 0, data_packets: 0, dup, lose };
        let stats = send_file(&mut client, &f, size as u64, &n, 5).expect("transfer");
        (stats, client, content)
    }

    #[test]
    fn duplicate_and_stale_acks_send_nothing_extra() {
        // 100 blocks and the final empty one (exact multiple of 512), window 4, every ACK doubled plus a stale one.
        let (stats, client, content) = run(512 * 100, 4, true, vec![]);
        assert_eq!(client.received, content);
        assert_eq!(stats.data_sent, 101, "one DATA packet per block, none resent for duplicate ACKs");
        assert_eq!(client.data_packets, 101);
    }

    #[test]
    fn a_lost_block_costs_at_most_one_window() {
        let (stats, client, content) = run(512 * 40 + 17, 8, false, vec![3]);
        assert_eq!(client.received, content);
        // Block 3 lost: the client acknowledges 2 on seeing 4; blocks 3..10 are resent once.
        assert!(stats.data_sent <= 41 + 8, "sent {}", stats.data_sent);
    }

    #[test]
    fn a_retransmitted_request_starts_no_second_transfer() {
        let mut recent = RecentRequests::default();
        let (a, b): (SocketAddr, SocketAddr) = ("10.0.0.5:25300".parse().expect("addr"), "10.0.0.5:25301".parse().expect("addr"));
        let rrq = b"\0\x01nixos-pxe/hosts/mac-52:54:00:00:00:a1.cfg\0octet\0";
        let t = Instant::now();
        let ended = recent.take(a, rrq, t).expect("the first copy is taken");
        assert!(recent.take(a, rrq, t + Duration::from_millis(400)).is_none());
        assert!(recent.take(a, rrq, t + Duration::from_secs(60)).is_none(), "its transfer still runs");
        assert!(recent.take(b, rrq, t + Duration::from_millis(1)).is_some(), "the next open, from the next port, is new");
        assert!(recent.take(a, b"\0\x01other\0octet\0", t).is_some(), "another file is new");
        let end = t + Duration::from_secs(61);
        *ended.lock().expect("lock") = Some(end);
        assert!(recent.take(a, rrq, end + Duration::from_secs(4)).is_none(), "just after its transfer ended");
        assert!(recent.take(a, rrq, end + RETRANSMITTED_RRQ).is_some(), "later: a new request (a reboot)");
        drop(EndsTransfer(Arc::clone(&ended)));
        assert!(ended.lock().expect("lock").is_some());
    }

    #[test]
    fn generated_bytes_are_sent_like_a_file() {
        let content: Vec<u8> = (0..512 * 3 + 7).map(|i| (i % 251) as u8).collect();
        for window in [1u16, 4] {
            let n = negotiate(&request(&[("windowsize", &window.to_string())]), content.len() as u64, Duration::from_millis(1), Duration::from_secs(255));
            let mut client = Client { inbox: VecDeque::new(), window: window.into(), received: Vec::new(), expected_block: 1, since_ack: 0, data_packets: 0, dup: false, lose: vec![2] };
            let stats = send_file(&mut client, &content, content.len() as u64, &n, 5).expect("transfer");
            assert_eq!(client.received, content);
            assert_eq!(stats.blocks, 4);
        }
        let mut buf = [0u8; 8];
        assert_eq!(Source::read_at(&content, &mut buf, content.len() as u64 - 3).expect("read"), 3);
        assert_eq!(Source::read_at(&content, &mut buf, u64::MAX).expect("read"), 0);
    }

    #[test]
    fn block_numbers_roll_over() {
        let (stats, client, content) = run(512 * 65536 + 100, 16, false, vec![]);
        assert_eq!(client.received.len(), content.len());
        assert!(client.received == content);
        assert_eq!(stats.blocks, 65537);
    }
}
