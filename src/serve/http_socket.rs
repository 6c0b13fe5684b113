//! serve's HTTP connections at the TCP level, as packet captures of GRUB 2.06 loading the kernel
//! showed them (`cargo bench --bench kernel_load -- --capture`; README, "The kernel over TFTP and
//! over HTTP"). Every accepted connection goes through `accepted`; a response that GRUB's http
//! module reads to the end is marked with `Ending::reset_when_acknowledged`.
//!
//! What the capture showed, and what GRUB's source (grub-core/net/{tcp,http,net}.c, the same in
//! 2.06 and 2.12) explains:
//! - GRUB reads a file by polling the NIC until 20 packets are queued (or, for HTTP, until the
//!   connection fails), for up to 400 ms (and 20 ms more per try) each time. Its http module
//!   registers no handler for the server's FIN, so at the end of a file, with fewer than 20 packets
//!   left to come, it went on polling for 0.42–0.44 s after the last byte had arrived, in every
//!   kernel load (a third of the load's time under QEMU; as long on real hardware). A reset
//!   calls its error handler, which marks the end of the file: so once GRUB has acknowledged every
//!   byte of the response (so that it holds all of it), the connection is closed with RST.
//! - GRUB's SYN carries no MSS option, so the server's kernel sends 536-byte segments (RFC 9293's
//!   default), and GRUB offers a window of 8192 bytes, not a multiple of 536: at its edge, the 152
//!   bytes left over went out as a segment of their own, about once a window (450 of 7,975
//!   segments). Each costs GRUB as much as a full one. TCP_CORK while GRUB's response is written
//!   sends whole segments only; it is lifted when the response is done.
//! - TCP_NODELAY on every connection: the last segment of a response goes out at once instead of
//!   waiting (Nagle) for the acknowledgement of everything before it.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long a connection marked for a reset waits for the client to acknowledge the response;
/// after that it is closed the ordinary way (FIN). GRUB stalls its window while the command
/// reading the file does other work; a client that went away never acknowledges.
const ACKNOWLEDGED_WITHIN: Duration = Duration::from_secs(60);
/// The first and the longest pause between two looks at what the client has not acknowledged.
/// GRUB acknowledges a full window (15 segments) in about 2 ms under QEMU's emulation.
const FIRST_LOOK: Duration = Duration::from_millis(1);
const LONGEST_LOOK: Duration = Duration::from_millis(100);

/// How a connection ends: shared by the connection's socket and the handler answering on it.
#[derive(Debug, Default)]
pub struct Ending {
    reset: AtomicBool,
}

impl Ending {
    /// This connection's response is one GRUB reads to its end: write it in whole segments and,
    /// once the client has acknowledged all of it, close with RST (see the module's comment). The
    /// response must say `Connection: close`, so that it is the connection's last.
    pub fn reset_when_acknowledged(&self) {
        self.reset.store(true, Ordering::Relaxed);
    }

    fn resets(&self) -> bool {
        self.reset.load(Ordering::Relaxed)
    }
}

/// An accepted connection with TCP_NODELAY set, and what decides how it ends.
pub fn accepted(stream: TcpStream) -> (Socket, Arc<Ending>) {
    // See the module's comment; a socket refusing the option still serves, as before.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("http: TCP_NODELAY: {e}");
    }
    let ending = Arc::new(Ending::default());
    (Socket { stream, ending: Arc::clone(&ending), corked: false, closing: None }, ending)
}

/// The connection's stream: reads and writes go to the TCP stream; its shutdown, for a connection
/// marked by `Ending::reset_when_acknowledged`, waits until the client has acknowledged everything
/// and leaves the socket to be closed with RST when hyper drops it.
pub struct Socket {
    stream: TcpStream,
    ending: Arc<Ending>,
    corked: bool,
    closing: Option<Closing>,
}

struct Closing {
    until: Instant,
    /// Whether the cork is off: the last partial segment may go.
    uncorked: bool,
    /// What was left at the last look (unsent, then unacknowledged bytes) and the pause before
    /// the next: 1 ms while it shrinks, doubled (up to LONGEST_LOOK) while it does not.
    left: libc::c_int,
    pause: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

fn set_int_option(stream: &TcpStream, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt(2) on a descriptor `stream` owns, with a pointer to an int and its size.
    let r = unsafe { libc::setsockopt(stream.as_raw_fd(), level, name, std::ptr::from_ref(&value).cast(), size_of::<libc::c_int>() as libc::socklen_t) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn int_option(stream: &TcpStream, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) on a descriptor `stream` owns, into an int with its size.
    let r = unsafe { libc::getsockopt(stream.as_raw_fd(), level, name, std::ptr::from_mut(&mut value).cast(), &raw mut len) };
    if r == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
}

fn uncork(stream: &TcpStream) {
    // With TCP_NODELAY, lifting the cork sends a last partial segment at once.
    if let Err(e) = set_int_option(stream, libc::IPPROTO_TCP, libc::TCP_CORK, 0) {
        tracing::debug!("http: TCP_CORK off: {e}");
    }
}

/// Bytes of the send queue: with SIOCOUTQNSD those not sent yet, with TIOCOUTQ (SIOCOUTQ) those
/// the client has not acknowledged yet (sent or not).
fn send_queue(stream: &TcpStream, request: libc::Ioctl) -> io::Result<libc::c_int> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: ioctl(2) SIOCOUTQ or SIOCOUTQNSD on a TCP socket `stream` owns writes one int.
    let r = unsafe { libc::ioctl(stream.as_raw_fd(), request, &raw mut bytes) };
    if r == 0 { Ok(bytes) } else { Err(io::Error::last_os_error()) }
}

impl Socket {
    /// Before the first byte of a response marked for a reset: whole segments only.
    fn cork_if_marked(&mut self) {
        if !self.corked && self.ending.resets() {
            self.corked = true;
            if let Err(e) = set_int_option(&self.stream, libc::IPPROTO_TCP, libc::TCP_CORK, 1) {
                tracing::debug!("http: TCP_CORK: {e}");
            }
        }
    }

    /// The end of a marked connection, once hyper has written the whole response: whole segments
    /// until less than one is left to send, then the rest; Ready once the client has acknowledged
    /// every byte (SO_LINGER 0 set: dropping the socket sends RST), or after an ordinary shutdown
    /// (FIN) when it has not within ACKNOWLEDGED_WITHIN or the socket cannot say.
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let corked = self.corked;
        let closing = self.closing.get_or_insert_with(|| Closing {
            until: Instant::now() + ACKNOWLEDGED_WITHIN,
            uncorked: !corked,
            left: libc::c_int::MAX,
            pause: FIRST_LOOK,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        });
        loop {
            let left = if closing.uncorked {
                send_queue(&self.stream, libc::TIOCOUTQ)
            } else {
                send_queue(&self.stream, libc::SIOCOUTQNSD)
            };
            let left = match left {
                Ok(left) => left,
                Err(e) => {
                    tracing::debug!("http: the send queue: {e}");
                    break;
                }
            };
            if !closing.uncorked {
                let segment = int_option(&self.stream, libc::IPPROTO_TCP, libc::TCP_MAXSEG).unwrap_or(0);
                if left < segment.max(1) {
                    closing.uncorked = true;
                    closing.left = libc::c_int::MAX;
                    // Only the last partial segment is left (corked, it would wait): send it.
                    uncork(&self.stream);
                    continue;
                }
            } else if left == 0 {
                let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                // SAFETY: setsockopt(2) SO_LINGER on a descriptor `self` owns, with a linger struct.
                let r = unsafe { libc::setsockopt(self.stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, std::ptr::from_ref(&linger).cast(), size_of::<libc::linger>() as libc::socklen_t) };
                if r == 0 {
                    return Poll::Ready(Ok(()));
                }
                tracing::debug!("http: SO_LINGER: {}", io::Error::last_os_error());
                break;
            }
            if Instant::now() >= closing.until {
                break;
            }
            closing.pause = if left < closing.left { FIRST_LOOK } else { (closing.pause * 2).min(LONGEST_LOOK) };
            closing.left = left;
            closing.sleep.as_mut().reset(tokio::time::Instant::now() + closing.pause);
            ready!(closing.sleep.as_mut().poll(cx));
        }
        // The ordinary end: the rest sent, then FIN.
        if !closing.uncorked {
            closing.uncorked = true;
            uncork(&self.stream);
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.cork_if_marked();
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.cork_if_marked();
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.ending.resets() { self.poll_reset(cx) } else { Pin::new(&mut self.stream).poll_shutdown(cx) }
    }
}
