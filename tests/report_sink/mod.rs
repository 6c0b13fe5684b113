//! A report sink for the installer's reports: a small HTTP server, in a thread of the test that
//! has joined a network namespace the test made (setns applies to the calling thread only, so
//! the rest of the test stays where it was). It records each request (method, path, JSON body)
//! and answers what the test says. A stand-in for serve's POST /v1/report, which another part of
//! the project builds; the protocol (JSON fields, status codes) is the shared contract.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: serde_json::Value,
}

/// What the sink answers a report: status, reason phrase, body.
pub type Answer = fn(&serde_json::Value) -> (u16, &'static str, String);

pub fn accept_all(_: &serde_json::Value) -> (u16, &'static str, String) {
    (200, "OK", "{\"accepted\":true}\n".into())
}

pub struct Sink {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Listens on `bind` (e.g. "10.42.0.1:8080", or "127.0.0.1:0" for any port) inside the
    /// network namespace `ns` (a name under /run/netns).
    pub fn start(ns: &str, bind: &str, answer: Answer) -> Sink {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ns, bind) = (ns.to_string(), bind.to_string());
        let (kept, stopped) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let netns = std::fs::File::open(format!("/run/netns/{ns}")).expect("open the namespace");
            // SAFETY: setns(2) on a descriptor of a network namespace; it moves this thread only.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {ns}: {}", std::io::Error::last_os_error());
            let listener = TcpListener::bind(&bind).unwrap_or_else(|e| panic!("report sink: bind {bind} in {ns}: {e}"));
            listener.set_nonblocking(true).expect("nonblocking");
            tx.send(listener.local_addr().expect("address")).expect("send the address");
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(r) = handle(stream, answer) {
                            kept.lock().unwrap_or_else(PoisonError::into_inner).push(r);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        let address = rx.recv_timeout(Duration::from_secs(10)).expect("the report sink did not start");
        Sink { address, received, stop, thread: Some(thread) }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The reports' `event` (with `step` for step reports): `["started", "step network", ...]`.
    pub fn events(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| match (r.body["event"].as_str(), r.body["step"].as_str()) {
                (Some("step"), Some(step)) => format!("step {step}"),
                (Some(event), _) => event.to_string(),
                _ => format!("<no event: {}>", r.body),
            })
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request, answers it, returns what it was.
fn handle(mut stream: TcpStream, answer: Answer) -> Option<Received> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    let (head, body_start, length) = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse::<usize>().unwrap_or(0)))
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                break (head, end + 4, length);
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    let mut request_line = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (request_line.next().unwrap_or_default().to_string(), request_line.next().unwrap_or_default().to_string());
    let content_type = head.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim().to_string()));
    let body: serde_json::Value = serde_json::from_slice(&bytes[body_start..body_start + length]).unwrap_or(serde_json::Value::Null);
    let (status, reason, text) = answer(&body);
    let _ = write!(stream, "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
    Some(Received { method, path, content_type, body })
}

/// A network namespace of the test's own with loopback up (tests/common's `Namespace`, whose
/// name it keeps in `.0`): deleted when dropped, by a watcher when the test process is killed
/// first, and known to the host-state guard as owned while it lives.
pub struct Netns(pub String, crate::common::Namespace);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let ns = crate::common::Namespace::new(tag);
        Netns(ns.name.clone(), ns)
    }
}
