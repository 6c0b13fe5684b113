//! The door of serve's NFS server. The NFS engine (the nfs3_server crate) reads each RPC record
//! into memory as long as its record mark says (2 GiB from 4 bytes), takes every connection it
//! is offered and stops serving at the first failed accept. So clients never reach it directly:
//! serve accepts them on the public port and relays their calls to the engine, listening on
//! loopback only, after checking them:
//! - a connection is let in only within the NFS caps, in all and per client address
//!   ([`super::limits::Gate`]);
//! - a call (a record) larger than [`NFS_MAX_RECORD`] ends the connection before anything is
//!   allocated for it, and a call's bytes are kept only as they arrive;
//! - calls in flight are bounded in bytes (the call and the largest reply it can get), per
//!   connection and in all, so a client that sends calls and never reads the replies holds a
//!   bounded amount of memory; a call whose transaction id is already in flight on this
//!   connection (a retransmission) is not passed on: the engine would not answer it twice;
//! - a peer that stalls is left: no call for [`Timeouts::nfs_idle`] with none in flight, a call
//!   begun and not finished within [`Timeouts::nfs_record`], a reply that cannot be written for
//!   [`Timeouts::send_stall`].
//!
//! The record format is RFC 5531 section 11: a 4-byte mark (top bit: last fragment; the rest:
//! the fragment's length) before each fragment of a record.

use super::limits::{Gate, NFS_IN_FLIGHT_BYTES_PER_CONNECTION, NFS_MAX_RECORD, Throttle, Timeouts, admit};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The largest reply an NFS READ gets from serve's engine (its rtmax; src/serve/nfs_fs.rs
/// clamps a READ's count to it).
pub const READ_MAX: u32 = 1 << 20;
/// What any other reply may need at most (attributes, a directory page within dtpref).
const SMALL_REPLY: u32 = 64 << 10;

/// A record mark: (fragment length, last fragment).
pub fn record_mark(bytes: [u8; 4]) -> (u32, bool) {
    let word = u32::from_be_bytes(bytes);
    (word & 0x7fff_ffff, word & 0x8000_0000 != 0)
}

/// What serve needs to know of a call: its transaction id and the most memory it and its reply
/// can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub xid: u32,
    pub bytes: u32,
}

/// Reads the RPC call header (RFC 5531: xid, CALL, rpcvers, prog, vers, proc, cred, verf) far
/// enough to bound the reply: NFSv3 READ (program 100003, procedure 6) asks for `count` bytes,
/// READDIR (16) and READDIRPLUS (17) for up to their count; every other reply is small. None
/// when the record is not a call.
pub fn call(record: &[u8]) -> Option<Call> {
    let word = |at: usize| record.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let xid = word(0)?;
    if word(4)? != 0 {
        return None; // not a CALL
    }
    let (prog, vers, procedure) = (word(12)?, word(16)?, word(20)?);
    // cred and verf: flavor, then an opaque of the given length, padded to 4.
    let mut at = 24;
    for _ in 0..2 {
        let len = word(at + 4)? as usize;
        at = at.checked_add(8)?.checked_add(len.checked_add(3)? & !3)?;
    }
    let reply = match (prog, vers, procedure) {
        (100_003, 3, 6) => {
            // READ3args: nfs_fh3 (opaque<64>), offset (8 bytes), count.
            let fh = word(at)? as usize;
            let count_at = at.checked_add(4)?.checked_add(fh.checked_add(3)? & !3)?.checked_add(8)?;
            word(count_at).unwrap_or(READ_MAX).min(READ_MAX)
        }
        // READDIR / READDIRPLUS: the reply is within the count the client gives, which the
        // engine bounds by the directory's size: take the larger bound.
        (100_003, 3, 16 | 17) => READ_MAX,
        _ => SMALL_REPLY,
    };
    Some(Call { xid, bytes: u32::try_from(record.len()).unwrap_or(u32::MAX).saturating_add(reply).saturating_add(4096) })
}

/// Why a connection was ended.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error("closed by the client")]
    Closed,
    #[error("a call of {0} bytes or more: larger than the {NFS_MAX_RECORD} any NFS call needs")]
    TooLarge(u64),
    #[error("not an RPC call")]
    NotACall,
    #[error("idle for {0:?} with no call in flight")]
    Idle(Duration),
    #[error("a call was begun and not finished within {0:?}")]
    SlowCall(Duration),
    #[error("the client read no reply for {0:?}")]
    SlowReader(Duration),
    #[error("the NFS engine: {0}")]
    Engine(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads one record (all its fragments) from `from`, at most `max` bytes, keeping only what has
/// arrived; the first byte may take `idle`, the rest `whole`. None at a clean end of stream
/// before a record begins.
pub async fn read_record(from: &mut (impl AsyncRead + Unpin), max: usize, idle: Duration, whole: Duration) -> Result<Option<Vec<u8>>, Ended> {
    let mut mark = [0u8; 4];
    let first = match tokio::time::timeout(idle, from.read(&mut mark[..1])).await {
        Err(_) => return Err(Ended::Idle(idle)),
        Ok(Ok(0)) => return Ok(None),
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(e.into()),
    };
    debug_assert_eq!(first, 1);
    let rest = async {
        let mut record = Vec::new();
        let mut have_mark = 1;
        loop {
            from.read_exact(&mut mark[have_mark..]).await.map_err(eof_closed)?;
            have_mark = 0;
            let (len, last) = record_mark(mark);
            let total = record.len() as u64 + u64::from(len);
            if total > max as u64 {
                return Err(Ended::TooLarge(total));
            }
            let mut left = len as usize;
            while left > 0 {
                let chunk = left.min(64 << 10);
                let at = record.len();
                record.resize(at + chunk, 0);
                from.read_exact(&mut record[at..]).await.map_err(eof_closed)?;
                left -= chunk;
            }
            if last {
                return Ok(record);
            }
        }
    };
    match tokio::time::timeout(whole, rest).await {
        Err(_) => Err(Ended::SlowCall(whole)),
        Ok(result) => result.map(Some),
    }
}

fn eof_closed(e: io::Error) -> Ended {
    if e.kind() == io::ErrorKind::UnexpectedEof { Ended::Closed } else { Ended::Io(e) }
}

/// Writes `record` as one last fragment.
async fn write_record(to: &mut (impl AsyncWrite + Unpin), record: &[u8]) -> io::Result<()> {
    let mark = (record.len() as u32 | 0x8000_0000).to_be_bytes();
    to.write_all(&mark).await?;
    to.write_all(record).await
}

/// What one relayed connection shares between its two directions: the calls in flight (by
/// transaction id, with the bytes each holds) and this connection's share of those bytes.
struct InFlight {
    calls: std::sync::Mutex<HashMap<u32, u32>>,
    mine: Semaphore,
    /// When a reply was last written: a connection with calls in flight is idle only when no
    /// reply came for as long (the engine does not answer a call whose id it saw within the
    /// last minute: such a call would otherwise keep the connection open for ever).
    last_reply: std::sync::Mutex<std::time::Instant>,
}

impl InFlight {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u32>> {
        self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Relays one client's connection to the engine at `engine` until either side ends it.
pub async fn relay(client: TcpStream, engine: SocketAddr, timeouts: Timeouts, all: Arc<Semaphore>) -> Ended {
    let inner = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(engine)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Ended::Engine(format!("cannot connect to {engine}: {e}")),
        Err(_) => return Ended::Engine(format!("no connection to {engine} within 5 s")),
    };
    let _ = inner.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut engine_read, mut engine_write) = inner.into_split();
    let state = Arc::new(InFlight {
        calls: std::sync::Mutex::new(HashMap::new()),
        mine: Semaphore::new(NFS_IN_FLIGHT_BYTES_PER_CONNECTION),
        last_reply: std::sync::Mutex::new(std::time::Instant::now()),
    });
    let calls = {
        let state = Arc::clone(&state);
        let all = Arc::clone(&all);
        async move {
            loop {
                let record = match read_record(&mut client_read, NFS_MAX_RECORD, timeouts.nfs_idle, timeouts.nfs_record).await {
                    Ok(Some(r)) => r,
                    Ok(None) => return Ended::Closed,
                    // Idle while calls are in flight: the client waits for replies, not a stall.
                    Err(Ended::Idle(idle)) if !state.calls().is_empty() && state.last_reply.lock().map(|t| t.elapsed() < idle).unwrap_or(false) => continue,
                    Err(e) => return e,
                };
                let Some(call) = call(&record) else { return Ended::NotACall };
                if state.calls().contains_key(&call.xid) {
                    continue; // a retransmission of a call in flight: its reply will come
                }
                // Memory first: this connection's share, then the server's; a reader that does
                // not read its replies waits here, with its next call unread.
                let bytes = call.bytes.min(NFS_IN_FLIGHT_BYTES_PER_CONNECTION as u32);
                let (Ok(mine), Ok(global)) = (state.mine.acquire_many(bytes).await, all.acquire_many(bytes).await) else {
                    return Ended::Engine("shutting down".into());
                };
                SemaphorePermit::forget(mine);
                SemaphorePermit::forget(global);
                state.calls().insert(call.xid, bytes);
                if let Err(e) = write_record(&mut engine_write, &record).await {
                    return Ended::Engine(format!("writing a call: {e}"));
                }
            }
        }
    };
    let replies = {
        let state = Arc::clone(&state);
        let all = Arc::clone(&all);
        async move {
            loop {
                // The engine's replies: trusted, but bounded too.
                let record = match read_record(&mut engine_read, 2 * READ_MAX as usize + SMALL_REPLY as usize, Duration::MAX, Duration::from_secs(30)).await {
                    Ok(Some(r)) => r,
                    Ok(None) => return Ended::Engine("closed the connection".into()),
                    Err(e) => return Ended::Engine(e.to_string()),
                };
                match tokio::time::timeout(timeouts.send_stall, write_record(&mut client_write, &record)).await {
                    Err(_) => return Ended::SlowReader(timeouts.send_stall),
                    Ok(Err(_)) => return Ended::Closed,
                    Ok(Ok(())) => {}
                }
                let xid = record.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if let Some(bytes) = xid.and_then(|x| state.calls().remove(&x)) {
                    state.mine.add_permits(bytes as usize);
                    all.add_permits(bytes as usize);
                }
                if let Ok(mut t) = state.last_reply.lock() {
                    *t = std::time::Instant::now();
                }
            }
        }
    };
    let ended = tokio::select! {
        e = calls => e,
        e = replies => e,
    };
    // Whatever was in flight is given back to the server's share.
    let left: usize = state.calls().drain().map(|(_, bytes)| bytes as usize).sum();
    all.add_permits(left);
    ended
}

/// Whether a line of `key` may be said now (see [`Throttle`]).
fn said(log: &std::sync::Mutex<Throttle>, key: &str) -> Option<u64> {
    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).allow(key, std::time::Instant::now())
}

/// Accepts NFS clients on `listener` within `gate` and relays each to the engine at `engine`,
/// until `stop` is set. A failed accept (out of descriptors) is said and waited out.
pub async fn serve(listener: TcpListener, engine: SocketAddr, gate: Arc<Gate>, timeouts: Timeouts, in_flight_bytes: usize, stop: &AtomicBool) {
    let all = Arc::new(Semaphore::new(in_flight_bytes));
    let mut throttle = Throttle::default();
    let log = Arc::new(std::sync::Mutex::new(Throttle::default()));
    while !stop.load(Ordering::Relaxed) {
        let Some((stream, client, permit)) = admit(&listener, &gate, &mut throttle, "NFS").await else { continue };
        // Said once a minute per address and kind: a client that connects and misbehaves in a
        // loop must not grow serve's log by a line per 4-byte connection.
        if let Some(quiet) = said(&log, &format!("connection {}", client.ip())) {
            tracing::info!(%client, connections = gate.in_use(), quiet, "NFS: connection");
        }
        let (all, log) = (Arc::clone(&all), Arc::clone(&log));
        tokio::spawn(async move {
            let ended = relay(stream, engine, timeouts, all).await;
            let kind = std::mem::discriminant(&ended);
            match ended {
                Ended::Closed => tracing::debug!(%client, "NFS: connection closed"),
                _ => {
                    if let Some(quiet) = said(&log, &format!("ended {} {kind:?}", client.ip())) {
                        match ended {
                            Ended::Idle(_) => tracing::info!(%client, quiet, "NFS: connection ended: {ended}"),
                            _ => tracing::warn!(%client, quiet, "NFS: connection ended: {ended}"),
                        }
                    }
                }
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_bytes(prog: u32, vers: u32, procedure: u32, cred: &[u8], args: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        for w in [7u32, 0, 2, prog, vers, procedure, 1, cred.len() as u32] {
            r.extend(w.to_be_bytes());
        }
        r.extend(cred);
        r.resize(r.len().next_multiple_of(4), 0);
        r.extend([0u8; 8]); // verf: AUTH_NONE, empty
        r.extend(args);
        r
    }

    #[test]
    fn record_marks_read_length_and_last() {
        assert_eq!(record_mark([0x80, 0, 0, 0x10]), (16, true));
        assert_eq!(record_mark([0x7f, 0xff, 0xff, 0xff]), (0x7fff_ffff, false));
    }

    #[test]
    fn a_read_call_is_bounded_by_its_count_and_others_are_small() {
        let mut read = Vec::new();
        read.extend(8u32.to_be_bytes());
        read.extend([1u8; 8]); // the handle
        read.extend(0u64.to_be_bytes()); // offset
        read.extend(4096u32.to_be_bytes()); // count
        let r = call_bytes(100_003, 3, 6, &[9; 5], &read);
        assert_eq!(call(&r), Some(Call { xid: 7, bytes: r.len() as u32 + 4096 + 4096 }));
        // A count beyond rtmax is bounded by rtmax (the engine answers a short read).
        let mut huge = read.clone();
        let at = huge.len() - 4;
        huge[at..].copy_from_slice(&u32::MAX.to_be_bytes());
        let r = call_bytes(100_003, 3, 6, &[], &huge);
        assert_eq!(call(&r).map(|c| c.bytes), Some(r.len() as u32 + READ_MAX + 4096));
        let getattr = call_bytes(100_003, 3, 1, &[], &[0; 12]);
        assert_eq!(call(&getattr).map(|c| c.bytes), Some(getattr.len() as u32 + SMALL_REPLY + 4096));
        // A reply, or a truncated header, is no call.
        let mut reply = getattr.clone();
        reply[7] = 1;
        assert_eq!(call(&reply), None);
        assert_eq!(call(&getattr[..10]), None);
        // A credential length that runs past the end.
        let mut lying = call_bytes(100_003, 3, 6, &[], &read);
        lying[28..32].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(call(&lying).is_none_or(|c| c.bytes >= SMALL_REPLY));
    }

    #[tokio::test]
    async fn a_record_larger_than_the_limit_ends_before_it_is_read() {
        // A mark claiming 2 GiB, and nothing after it.
        let data: Vec<u8> = 0x7fff_ffffu32.to_be_bytes().to_vec();
        let mut from = &data[..];
        let e = read_record(&mut from, NFS_MAX_RECORD, Duration::from_secs(1), Duration::from_secs(1)).await.expect_err("too large");
        assert!(matches!(e, Ended::TooLarge(n) if n == 0x7fff_ffff), "{e}");
        // Fragments that together pass the limit.
        let mut many = Vec::new();
        for _ in 0..3 {
            many.extend(((NFS_MAX_RECORD / 2) as u32).to_be_bytes());
            many.extend(vec![0u8; NFS_MAX_RECORD / 2]);
        }
        let mut from = &many[..];
        assert!(matches!(read_record(&mut from, NFS_MAX_RECORD, Duration::from_secs(1), Duration::from_secs(1)).await, Err(Ended::TooLarge(_))));
        // Two fragments within it make one record.
        let mut two = Vec::new();
        two.extend(3u32.to_be_bytes());
        two.extend(b"abc");
        two.extend((0x8000_0000u32 | 2).to_be_bytes());
        two.extend(b"de");
        let mut from = &two[..];
        assert_eq!(read_record(&mut from, 16, Duration::from_secs(1), Duration::from_secs(1)).await.expect("read"), Some(b"abcde".to_vec()));
        let mut empty: &[u8] = &[];
        assert_eq!(read_record(&mut empty, 16, Duration::from_secs(1), Duration::from_secs(1)).await.expect("end"), None);
    }

    #[tokio::test]
    async fn a_call_begun_and_not_finished_ends_and_silence_is_idle() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&(0x8000_0000u32 | 100).to_be_bytes()).await.expect("write");
        client.write_all(b"only some").await.expect("write");
        let e = read_record(&mut server, 1024, Duration::from_secs(5), Duration::from_millis(200)).await.expect_err("slow");
        assert!(matches!(e, Ended::SlowCall(_)), "{e}");
        let (_quiet, mut server) = tokio::io::duplex(64);
        let e = read_record(&mut server, 1024, Duration::from_millis(100), Duration::from_secs(5)).await.expect_err("idle");
        assert!(matches!(e, Ended::Idle(_)), "{e}");
    }
}
