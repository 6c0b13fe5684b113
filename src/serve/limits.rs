//! What serve lets its clients use: open files, connections and transfers, per protocol and per
//! client address, and how long it waits on a peer. Set at start from the open-file limit serve
//! got (it raises its soft limit to the hard one), with a reserve kept for DHCP, the lease file
//! and the state database, and said in the start-up log. A client over its share is refused (a
//! TCP connection closed at once, a TFTP request answered "server busy"); nothing a client does
//! makes serve exit or take descriptors the other protocols need.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Descriptors kept aside for what every client needs served: the DHCP sockets, the lease file,
/// the state database and its journal, the runtimes' own, standard input and output.
pub const RESERVE: u64 = 64;

/// Descriptors one unit of each protocol may hold at once.
pub const FDS_PER_TFTP_TRANSFER: u64 = 2; // its socket and the file
pub const FDS_PER_HTTP_CONNECTION: u64 = 2; // the connection and a file being sent
/// The client's connection, the relay's connection to the NFS engine and the engine's end of it,
/// and the files the engine opens for the calls in flight.
pub const FDS_PER_NFS_CONNECTION: u64 = 6;

/// The most of each whatever the descriptors allow (threads for TFTP, memory for NFS and HTTP).
pub const MAX_TFTP_TRANSFERS: usize = 512;
pub const MAX_HTTP_CONNECTIONS: usize = 1024;
pub const MAX_NFS_CONNECTIONS: usize = 1024;

/// What one client address may hold of each protocol: a machine booting needs one TFTP transfer,
/// one HTTP connection (GRUB, then the installer's reports) and one or two NFS connections (the
/// kernel's MOUNT and NFS) at a time.
pub const DEFAULT_PER_CLIENT: usize = 8;

/// Timeouts on a peer that stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// HTTP: a request's headers must arrive within this, from the connection's start or the
    /// end of the previous response (hyper's header read timeout: it also ends an idle
    /// keep-alive connection).
    pub http_header: Duration,
    /// HTTP: a request body (a report) must arrive whole within this.
    pub http_body: Duration,
    /// HTTP and NFS: a response that makes no progress for this long (the client stopped
    /// reading) ends the connection.
    pub send_stall: Duration,
    /// NFS: a connection with no call for this long and none in flight is closed (knfsd closes
    /// idle TCP connections after about six minutes; the Linux client reconnects by itself).
    pub nfs_idle: Duration,
    /// NFS: a call whose first bytes came must be complete within this.
    pub nfs_record: Duration,
    /// TFTP: the largest retransmission timeout a client may ask for (RFC 2349 `timeout`).
    pub tftp_max_timeout: Duration,
}

pub const TIMEOUTS: Timeouts = Timeouts {
    http_header: Duration::from_secs(30),
    http_body: Duration::from_secs(30),
    send_stall: Duration::from_secs(60),
    nfs_idle: Duration::from_secs(360),
    nfs_record: Duration::from_secs(30),
    tftp_max_timeout: Duration::from_secs(10),
};

/// NFS memory: the largest call serve reads (a call is small; a READ's reply is what is big),
/// and how many bytes of calls and their replies may be in flight, in all and per connection.
pub const NFS_MAX_RECORD: usize = 1 << 20;
pub const NFS_IN_FLIGHT_BYTES: usize = 128 << 20;
pub const NFS_IN_FLIGHT_BYTES_PER_CONNECTION: usize = 8 << 20;

/// The caps serve runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// The open-file limit serve runs under (after raising it).
    pub open_files: u64,
    pub tftp_transfers: usize,
    pub http_connections: usize,
    pub nfs_connections: usize,
    pub per_client: usize,
}

/// Caps given on the command line (None: from the open-file limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    pub tftp_transfers: Option<usize>,
    pub http_connections: Option<usize>,
    pub nfs_connections: Option<usize>,
    pub per_client: Option<usize>,
}

/// Why asked caps cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the caps asked for need {needed} open files and serve may open {open_files} ({RESERVE} kept for DHCP and the state): \
     lower --tftp-transfers, --http-connections or --nfs-connections, or raise the limit (ulimit -n, systemd's LimitNOFILE=)"
)]
pub struct TooMany {
    pub needed: u64,
    pub open_files: u64,
}

impl Caps {
    /// The caps for `open_files` descriptors of which `in_use` are open already: the reserve set
    /// aside, the rest shared 3:3:4 by TFTP, HTTP and NFS (each within its maximum, at least 1);
    /// asked caps as given, if they fit.
    pub fn new(open_files: u64, in_use: u64, asked: Asked) -> Result<Caps, TooMany> {
        let spare = open_files.saturating_sub(RESERVE + in_use);
        let share = |parts: u64, per: u64, max: usize| usize::try_from(spare * parts / 10 / per).unwrap_or(max).clamp(1, max);
        let caps = Caps {
            open_files,
            tftp_transfers: asked.tftp_transfers.unwrap_or_else(|| share(3, FDS_PER_TFTP_TRANSFER, MAX_TFTP_TRANSFERS)),
            http_connections: asked.http_connections.unwrap_or_else(|| share(3, FDS_PER_HTTP_CONNECTION, MAX_HTTP_CONNECTIONS)),
            nfs_connections: asked.nfs_connections.unwrap_or_else(|| share(4, FDS_PER_NFS_CONNECTION, MAX_NFS_CONNECTIONS)),
            per_client: asked.per_client.unwrap_or(DEFAULT_PER_CLIENT).max(1),
        };
        let needed = caps.tftp_transfers as u64 * FDS_PER_TFTP_TRANSFER
            + caps.http_connections as u64 * FDS_PER_HTTP_CONNECTION
            + caps.nfs_connections as u64 * FDS_PER_NFS_CONNECTION
            + RESERVE
            + in_use;
        if needed > open_files {
            return Err(TooMany { needed, open_files });
        }
        Ok(caps)
    }
}

/// Raises the soft open-file limit to the hard one; returns (before, after).
pub fn raise_open_files() -> (u64, u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return (before, limit.maximum.unwrap_or(u64::MAX));
        }
    }
    (before, before)
}

/// Descriptors this process has open now.
pub fn open_now() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(16)
}

/// Why a client was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The protocol's cap is reached.
    All(usize),
    /// This client address holds its share already.
    Client(usize),
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::All(n) => write!(f, "all {n} in use"),
            Full::Client(n) => write!(f, "this client holds its {n} already"),
        }
    }
}

/// Counts one protocol's connections (or transfers) in all and per client address.
#[derive(Debug)]
pub struct Gate {
    total: usize,
    per_client: usize,
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One place taken in a [`Gate`], given back when dropped.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    client: IpAddr,
}

impl Gate {
    pub fn new(total: usize, per_client: usize) -> Arc<Gate> {
        Arc::new(Gate { total, per_client, held: Mutex::new((0, HashMap::new())) })
    }

    /// A place for `client`, or why not.
    pub fn enter(self: &Arc<Gate>, client: IpAddr) -> Result<Permit, Full> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.0 >= self.total {
            return Err(Full::All(self.total));
        }
        let mine = held.1.entry(client).or_insert(0);
        if *mine >= self.per_client {
            return Err(Full::Client(self.per_client));
        }
        *mine += 1;
        held.0 += 1;
        Ok(Permit { gate: Arc::clone(self), client })
    }

    /// Places in use now.
    pub fn in_use(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).0
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.gate.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.0 = held.0.saturating_sub(1);
        if let Some(n) = held.1.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.1.remove(&self.client);
            }
        }
    }
}

/// How often the same warning about one kind of thing is said at most.
pub const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Says a warning once per [`WARN_INTERVAL`] per key; counts what it did not say.
#[derive(Default)]
pub struct Throttle {
    last: HashMap<String, (Instant, u64)>,
}

impl Throttle {
    /// Some(number of times it was not said since) when `key` may be said now.
    pub fn allow(&mut self, key: &str, now: Instant) -> Option<u64> {
        if self.last.len() > 1024 {
            self.last.retain(|_, (at, _)| now.duration_since(*at) < WARN_INTERVAL);
        }
        match self.last.get_mut(key) {
            Some((at, _)) if now.duration_since(*at) >= WARN_INTERVAL => {
                let (_, quiet) = self.last.insert(key.to_string(), (now, 0)).unwrap_or((now, 0));
                Some(quiet)
            }
            Some((_, quiet)) => {
                *quiet += 1;
                None
            }
            None => {
                self.last.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// The next connection on `listener` that `gate` lets in, with its place; None after a quarter
/// of a second without one (the caller looks at its stop flag). A failed accept (out of
/// descriptors) is said and waited out; a client over its share is closed at once. Either is
/// said at most once a minute (per address for the refusals), naming `protocol`.
pub async fn admit(
    listener: &tokio::net::TcpListener,
    gate: &Arc<Gate>,
    throttle: &mut Throttle,
    protocol: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr, Permit)> {
    let accepted = tokio::select! {
        accepted = listener.accept() => accepted,
        () = tokio::time::sleep(Duration::from_millis(250)) => return None,
    };
    let (stream, client) = match accepted {
        Ok(x) => x,
        Err(e) => {
            if let Some(quiet) = throttle.allow("accept", Instant::now()) {
                tracing::warn!(quiet, "{protocol}: accept: {e}; waiting");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            return None;
        }
    };
    match gate.enter(client.ip()) {
        Ok(permit) => Some((stream, client, permit)),
        Err(full) => {
            if let Some(quiet) = throttle.allow(&format!("full {}", client.ip()), Instant::now()) {
                tracing::warn!(%client, quiet, "{protocol}: connection refused: {full}");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn caps_follow_the_open_file_limit_and_keep_the_reserve() {
        let caps = Caps::new(1024, 20, Asked::default()).expect("caps");
        let spare = 1024 - RESERVE - 20;
        assert_eq!((caps.tftp_transfers, caps.http_connections, caps.nfs_connections), (141, 141, 62));
        let used = caps.tftp_transfers as u64 * 2 + caps.http_connections as u64 * 2 + caps.nfs_connections as u64 * 6;
        assert!(used <= spare, "{used} > {spare}");
        // systemd's usual hard limit: each at its maximum.
        let big = Caps::new(524_288, 20, Asked::default()).expect("caps");
        assert_eq!((big.tftp_transfers, big.http_connections, big.nfs_connections), (MAX_TFTP_TRANSFERS, MAX_HTTP_CONNECTIONS, MAX_NFS_CONNECTIONS));
        // A tiny limit still lets one of each in.
        let tiny = Caps::new(64, 20, Asked::default());
        assert!(tiny.is_err(), "one of each does not fit in 64 with the reserve: {tiny:?}");
    }

    #[test]
    fn asked_caps_that_do_not_fit_are_refused_with_what_to_do() {
        let e = Caps::new(1024, 20, Asked { nfs_connections: Some(1000), ..Asked::default() }).expect_err("too many");
        assert!(e.to_string().contains("ulimit -n") && e.to_string().contains("--nfs-connections"), "{e}");
        let ok = Caps::new(1024, 20, Asked { nfs_connections: Some(10), per_client: Some(2), ..Asked::default() }).expect("fits");
        assert_eq!((ok.nfs_connections, ok.per_client), (10, 2));
    }

    #[test]
    fn a_gate_counts_in_all_and_per_client_and_gives_places_back() {
        let gate = Gate::new(3, 2);
        let (a, b) = (IpAddr::V4(Ipv4Addr::new(10, 42, 0, 100)), IpAddr::V4(Ipv4Addr::new(10, 42, 0, 101)));
        let a1 = gate.enter(a).expect("a1");
        let _a2 = gate.enter(a).expect("a2");
        assert_eq!(gate.enter(a).map(drop), Err(Full::Client(2)));
        let _b1 = gate.enter(b).expect("b1");
        assert_eq!(gate.enter(b).map(drop), Err(Full::All(3)));
        drop(a1);
        assert_eq!(gate.in_use(), 2);
        let _b2 = gate.enter(b).expect("b2 after a1 left");
    }
}
