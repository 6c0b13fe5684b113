//! `nixos-pxe serve` with a fleet, against real clients in network namespaces this test creates
//! (tests/common Lab: serve on the lab's bridge at 10.42.0.1, the clients in a second namespace
//! joined to it): the per-host GRUB configuration over TFTP (atftp, curl) and HTTP (curl), the
//! reports an installer sends (right, wrong and old tokens, malformed, too big), the state after
//! each (`nixos-pxe fleet status --json`), files below the TFTP root over HTTP with byte ranges,
//! and serve killed with SIGKILL in the middle of many installers' reports. serve runs without
//! DHCP here, so the fleet trusts the boot network (`fleet.trustBootNetwork`): one client
//! namespace plays every host. What that option turns off, tokens and reports tied to the
//! addresses serve's DHCP saw, is tested in tests/serve_trust.rs.

mod common;

use common::Lab;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SERVER: &str = "10.42.0.1";
const PORT: u16 = 8080;
const WEB1: &str = "52:54:00:12:34:56";
const STRANGER: &str = "52:54:00:99:99:99";
const BIN: &str = env!("CARGO_BIN_EXE_nixos-pxe");

/// The example fleet as JSON, with `edit` applied (fewer attempts, more hosts).
fn config(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let text = common::nixos_pxe(&["options", "--config", "examples/fleet/installer.nix", "--source", "static", "--as-config-json"]);
    let mut tree: Value = serde_json::from_str(&text).expect("config JSON");
    tree["fleet"]["trustBootNetwork"] = true.into();
    edit(&mut tree);
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&tree).expect("json")).expect("write config");
    path
}

/// A TFTP root with a kernel of pseudo-random bytes, a link out of the root, a secret beside it.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("nixos")).expect("mkdir");
    let kernel: Vec<u8> = (0..3_000_017u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(root.join("nixos/bzImage"), kernel).expect("kernel");
    std::fs::write(dir.path().join("secret"), "beside the root\n").expect("secret");
    std::os::unix::fs::symlink("../secret", root.join("escape")).expect("symlink");
    dir
}

/// The lab with serve in it and a client namespace; returns the client namespace's name.
fn lab(tag: &str, dir: &Path) -> (Lab, String) {
    let mut lab = Lab::new(tag);
    let client = lab.add_host("cli", "10.42.0.50");
    start_serve(&mut lab, dir);
    (lab, client)
}

fn server_log(dir: &Path) -> PathBuf {
    dir.join("server.log")
}

/// serve in the lab (bound to br0 and 10.42.0.1, from the configuration), its log appended to
/// server.log; returns once it serves TFTP and HTTP.
fn start_serve(lab: &mut Lab, dir: &Path) {
    // The log of an earlier run (before a kill) is kept: Lab::spawn starts the file afresh.
    let before = std::fs::read_to_string(server_log(dir)).unwrap_or_default();
    let mut old = std::fs::read_to_string(dir.join("server.log.old")).unwrap_or_default();
    old.push_str(&before);
    std::fs::write(dir.join("server.log.old"), old).expect("keep the log");
    let script = format!("cd {} && exec {BIN} serve --config config.json --dhcp off --tftp-root root --state-dir state --http-port {PORT}", dir.display());
    lab.spawn(&["sh", "-c", &script], &server_log(dir));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(server_log(dir)).unwrap_or_default();
        if text.contains("http: serving") && text.contains("tftp: serving") {
            break;
        }
        let exited = lab.exited();
        assert!(exited.is_empty(), "serve exited:\n{}", exited.join("\n"));
        assert!(Instant::now() < deadline, "serve did not start within 20 s:\n{before}{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every line serve logged in this test, across restarts.
fn whole_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log.old")).unwrap_or_default() + &std::fs::read_to_string(server_log(dir)).unwrap_or_default()
}

/// curl in the client namespace: (HTTP status, body). Status 0: no answer (curl failed).
fn curl(ns: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl (dev/packages.txt installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn url(path: &str) -> String {
    format!("http://{SERVER}:{PORT}{path}")
}

/// POSTs `report` (any JSON) to /v1/report.
fn post(ns: &str, report: &Value) -> (u16, String) {
    curl(ns, &["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &report.to_string(), &url("/v1/report")])
}

fn host_cfg_path(mac: &str) -> String {
    format!("nixos-pxe/hosts/mac-{mac}.cfg")
}

/// The per-host file over TFTP with atftp.
fn atftp(ns: &str, dir: &Path, mac: &str) -> String {
    let out = dir.join("atftp.out");
    let _ = std::fs::remove_file(&out);
    common::run(Command::new("ip").args(["netns", "exec", ns, "atftp", "--option", "tsize", "-g", "-r", &host_cfg_path(mac), "-l"]).arg(&out).arg(SERVER));
    std::fs::read_to_string(&out).expect("atftp wrote the file")
}

/// (attempt, token) on an install entry's kernel line.
fn install_args(cfg: &str) -> (u32, String) {
    let arg = |name: &str| cfg.split_whitespace().find_map(|w| w.strip_prefix(name)).map(|v| v.trim_end_matches(';').to_string());
    let attempt = arg("nixos-pxe.attempt=").unwrap_or_else(|| panic!("no install entry with an attempt:\n{cfg}"));
    (attempt.parse().expect("number"), arg("nixos-pxe.token=").unwrap_or_else(|| panic!("no token:\n{cfg}")))
}

fn report(host: &str, generation: u32, attempt: u32, token: &str, event: &str) -> Value {
    json!({ "host": host, "generation": generation, "attempt": attempt, "token": token, "event": event })
}

/// `fleet status --json` as serve's state directory has it.
fn status(dir: &Path) -> Vec<Value> {
    let state = dir.join("state");
    let config = dir.join("config.json");
    let text = common::nixos_pxe(&["fleet", "status", "--state-dir", state.to_str().expect("utf-8"), "--config", config.to_str().expect("utf-8"), "--json"]);
    serde_json::from_str(&text).expect("status JSON")
}

fn host_status(dir: &Path, host: &str) -> Value {
    status(dir).into_iter().find(|h| h["host"] == host).unwrap_or_else(|| panic!("{host} not in fleet status"))
}

#[test]
fn per_host_configs_and_reports_move_the_state_as_designed() {
    let dir = setup();
    config(dir.path(), |c| c["fleet"]["maxAttempts"] = 2.into());
    let (_lab, ns) = lab("fleet", dir.path());
    let d = dir.path();

    // A stranger: back to the firmware, never an install, nothing recorded for it.
    let stranger = atftp(&ns, d, STRANGER);
    assert!(stranger.contains("not in the fleet") && stranger.contains("\n  exit\n") && !stranger.contains("linux "), "{stranger}");

    // web1: attempt 1 over TFTP, and the same bytes again over curl's TFTP and over HTTP.
    let first = atftp(&ns, d, WEB1);
    let (attempt, t1) = install_args(&first);
    assert_eq!((attempt, t1.len()), (1, 43), "{first}");
    // serve's default: the kernel over TFTP (GRUB loaded it faster so in benches/kernel_load.rs).
    assert!(first.contains("linux (tftp)/nixos/bzImage "), "{first}");
    assert!(first.contains(&format!("nixos-pxe.report=http://{SERVER}:{PORT} ")), "{first}");
    assert_eq!(curl(&ns, &[&format!("tftp://{SERVER}/{}", host_cfg_path(WEB1))]), (0, first.clone()), "curl's TFTP (status 0: not HTTP)");
    assert_eq!(curl(&ns, &[&url(&format!("/{}", host_cfg_path(WEB1)))]), (200, first.clone()));
    assert_eq!(host_status(d, "web1")["state"], "handed-out");
    assert_eq!(curl(&ns, &[&url("/nixos-pxe/hosts/mac-nonsense.cfg")]).0, 404);

    // Refused, each with its status, and nothing changes.
    let (code, body) = post(&ns, &report("web1", 1, 1, "not-the-token-at-all-but-43-characters-long", "started"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("the token is not attempt 1 of web1 generation 1's"), "{body}");
    assert_eq!(post(&ns, &report("nosuch", 1, 1, &t1, "started")).0, 403);
    assert_eq!(post(&ns, &report("web1", 1, 9, &t1, "started")).0, 403, "an attempt never handed out");
    let (code, body) = curl(&ns, &["-X", "POST", "--data-binary", "{\"host\": \"web1\", \"generation\": ", &url("/v1/report")]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("malformed report"), "{body}");
    assert_eq!(post(&ns, &json!({ "host": "web1", "event": "started" })).0, 400, "fields missing");
    assert_eq!(post(&ns, &report("web1", 1, 1, &t1, "exploded")).0, 400, "an unknown event");
    let huge = dir.path().join("huge.json");
    std::fs::write(&huge, format!("{{\"host\":\"web1\",\"log_tail\":\"{}\"}}", "x".repeat(2 << 20))).expect("huge");
    let (code, _) = curl(&ns, &["-X", "POST", "--data-binary", &format!("@{}", huge.display()), &url("/v1/report")]);
    assert_eq!(code, 413, "a 2 MiB body");
    assert_eq!(host_status(d, "web1")["state"], "handed-out", "refusals change nothing");

    // The installer of attempt 1 reports, and fails at unpack.
    let (code, body) = post(&ns, &report("web1", 1, 1, &t1, "started"));
    assert_eq!((code, body.contains("\"status\":\"running\"")), (200, true), "{body}");
    assert_eq!(post(&ns, &json!({ "host": "web1", "generation": 1, "attempt": 1, "token": t1, "event": "step", "step": "partition", "message": "step 3/7 partition" })).0, 200);
    assert_eq!(host_status(d, "web1")["state"], "installing");
    let failed = json!({ "host": "web1", "generation": 1, "attempt": 1, "token": t1, "event": "failed", "step": "unpack", "message": "short read", "log_tail": "line 1\nline 2" });
    assert_eq!(post(&ns, &failed).0, 200);
    let web1 = host_status(d, "web1");
    assert_eq!((web1["state"].as_str(), web1["failures"].as_u64(), web1["attempt"]["error"].as_str()), (Some("failed"), Some(1), Some("short read")));
    assert_eq!(web1["attempt"]["reports"], 3);
    assert_eq!(post(&ns, &report("web1", 1, 1, &t1, "step")).0, 409, "a failed attempt does not run again");

    // Booting from the network again: attempt 2 with a new token; attempt 1's is now old.
    let second = curl(&ns, &[&url(&format!("/{}", host_cfg_path(WEB1)))]).1;
    let (attempt, t2) = install_args(&second);
    assert_eq!(attempt, 2);
    assert_ne!(t2, t1);
    let (code, body) = post(&ns, &report("web1", 1, 1, &t1, "failed"));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("is not web1's latest attempt"), "{body}");
    assert_eq!(post(&ns, &report("web1", 1, 2, &t1, "started")).0, 403, "attempt 1's token for attempt 2");

    // Attempt 2 installs: from now on the host boots from its disk.
    assert_eq!(post(&ns, &report("web1", 1, 2, &t2, "started")).0, 200);
    let installed = json!({
        "host": "web1", "generation": 1, "attempt": 2, "token": t2, "event": "installed", "system": "/nix/store/aaaa-nixos-system-web1",
    });
    assert_eq!(post(&ns, &installed).0, 200);
    assert_eq!(post(&ns, &installed).0, 200, "a retried report whose answer was lost is taken again");
    let local = atftp(&ns, d, WEB1);
    assert!(local.contains("is installed (its first boot has not reported yet)") && !local.contains("linux "), "{local}");
    assert_eq!(host_status(d, "web1")["state"], "installed");
    // The installed system reports booted with its attempt's token (left on its disk), no other.
    let booted = json!({ "host": "web1", "generation": 1, "attempt": 2, "token": t1, "event": "booted", "system": "/nix/store/aaaa-nixos-system-web1" });
    assert_eq!(post(&ns, &booted).0, 403);
    let booted = json!({ "host": "web1", "generation": 1, "attempt": 2, "token": t2, "event": "booted", "system": "/nix/store/aaaa-nixos-system-web1" });
    assert_eq!(post(&ns, &booted).0, 200);
    let web1 = host_status(d, "web1");
    assert_eq!((web1["state"].as_str(), web1["confirmed"]["generation"].as_u64()), (Some("confirmed"), Some(1)));
    assert_eq!(web1["decision"]["kind"], "local-boot");

    // The imperative escape hatch, and what it says about the declarative one.
    let state = d.join("state");
    let said = common::nixos_pxe(&["fleet", "reinstall", "--state-dir", state.to_str().expect("utf-8"), "web1"]);
    assert!(said.contains("bump fleet.hosts.web1.generation"), "{said}");
    assert_eq!(install_args(&atftp(&ns, d, WEB1)).0, 3);

    // The fleet's status is not listed on the boot network.
    let (code, _) = curl(&ns, &[&url("/v1/hosts")]);
    assert_eq!(code, 404, "GET /v1/hosts");
    let table = common::nixos_pxe(&["fleet", "status", "--state-dir", state.to_str().expect("utf-8")]);
    assert!(table.lines().any(|l| l.starts_with("web1 ") && l.contains("handed-out") && l.contains("g1 #3 pending")), "{table}");

    // Every decision and every refusal is in serve's log, with the host and why.
    let log = whole_log(d);
    for needle in [
        "fleet: decision mac=52:54:00:99:99:99 host=\"-\"",
        "decision=\"local-boot\"",
        "fleet: decision mac=52:54:00:12:34:56 host=\"web1\" generation=1 attempt=1 decision=\"install\" why=\"a new attempt\" via=\"tftp\"",
        "why=\"the same pending attempt again\" via=\"http\"",
        "fleet: report refused host=\"web1\" generation=1 attempt=1 event=\"started\"",
        "why=the token is not attempt 1 of web1 generation 1's",
        "why=attempt 1 of web1 generation 1 is not web1's latest attempt",
        "fleet: report refused: malformed",
        "why=Failed to buffer the request body: length limit exceeded",
        "fleet: report accepted host=\"web1\" generation=1 attempt=2 event=\"installed\"",
    ] {
        assert!(log.contains(needle), "serve's log lacks {needle:?}:\n{log}");
    }
}

#[test]
fn files_below_the_root_over_http_as_grub_reads_them() {
    let dir = setup();
    config(dir.path(), |_| {});
    let (_lab, ns) = lab("fleethttp", dir.path());
    let kernel = std::fs::read(dir.path().join("root/nixos/bzImage")).expect("kernel");
    let out = dir.path().join("got");
    let got = |args: &[&str]| {
        let _ = std::fs::remove_file(&out);
        let mut all = vec!["-o", out.to_str().expect("utf-8")];
        all.extend(args);
        let out_status = Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-sS", "-D", "-", "--path-as-is"])
            .args(&all)
            .output()
            .expect("curl");
        (String::from_utf8_lossy(&out_status.stdout).into_owned(), std::fs::read(&out).unwrap_or_default())
    };
    let (headers, body) = got(&[&url("/nixos/bzImage")]);
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    // GRUB matches "Content-Length: " byte for byte (grub-core/net/http.c parse_line).
    assert!(headers.contains("\r\nContent-Length: 3000017\r\n"), "{headers}");
    assert!(body == kernel, "the kernel over HTTP differs");
    // GRUB's seek: Range: bytes=N- after a connection of its own.
    let (headers, body) = got(&["-H", "Range: bytes=2999000-", &url("/nixos/bzImage")]);
    assert!(headers.starts_with("HTTP/1.1 206") && headers.contains("\r\nContent-Range: bytes 2999000-3000016/3000017\r\n"), "{headers}");
    assert!(body == kernel[2_999_000..], "the range differs");
    let (headers, body) = got(&["-r", "10-19", &url("/nixos/bzImage")]);
    assert!(headers.starts_with("HTTP/1.1 206") && body == kernel[10..20], "{headers}");
    let (headers, _) = got(&["-r", "3000017-", &url("/nixos/bzImage")]);
    assert!(headers.starts_with("HTTP/1.1 416") && headers.contains("Content-Range: bytes */3000017"), "{headers}");
    // HEAD: the headers of the whole file (curl -I writes them to -o too, so only they count).
    let (headers, _) = got(&["-I", &url("/nixos/bzImage")]);
    assert!(headers.starts_with("HTTP/1.1 200") && headers.contains("Content-Length: 3000017"), "{headers}");
    // Nothing outside the root, by name or by link; no directory; read-only.
    for (path, code) in [("/../secret", "403"), ("/nixos/../../secret", "403"), ("/escape", "403"), ("/nixos", "404"), ("/missing", "404"), ("/%2e%2e/secret", "403")] {
        let (headers, body) = got(&[&url(path)]);
        assert!(headers.starts_with(&format!("HTTP/1.1 {code}")), "{path}: {headers}");
        assert!(!String::from_utf8_lossy(&body).contains("beside the root"), "{path} served the secret");
    }
    let (headers, _) = got(&["-X", "PUT", "--data-binary", "x", &url("/nixos/bzImage")]);
    assert!(headers.starts_with("HTTP/1.1 405"), "{headers}");
    assert!(std::fs::read(dir.path().join("root/nixos/bzImage")).expect("kernel") == kernel);
}

/// A TCP connection to serve from a thread moved into network namespace `ns`, with a receive
/// buffer of `receive_buffer` bytes, when given, set before the connection is made (a small one
/// keeps most of a response unacknowledged until it is read, as GRUB's 8192-byte window does).
fn connect_from(ns: &str, receive_buffer: Option<libc::c_int>) -> std::net::TcpStream {
    use std::os::fd::{AsRawFd, FromRawFd};
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let handle = std::fs::File::open(format!("/run/netns/{ns}")).expect("the client namespace");
        // SAFETY: setns(2) moves this thread only; the descriptor is open for the call. socket(2),
        // setsockopt(2) with an int and connect(2) with a sockaddr_in built here; the descriptor
        // is given to the TcpStream, which closes it.
        unsafe {
            assert_eq!(libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET), 0, "setns: {}", std::io::Error::last_os_error());
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            if let Some(size) = receive_buffer {
                libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, std::ptr::from_ref(&size).cast(), size_of::<libc::c_int>() as libc::socklen_t);
            }
            let address = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: PORT.to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(SERVER.parse::<std::net::Ipv4Addr>().expect("address")).to_be() },
                sin_zero: [0; 8],
            };
            let r = libc::connect(fd, std::ptr::from_ref(&address).cast(), size_of::<libc::sockaddr_in>() as libc::socklen_t);
            assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
            std::net::TcpStream::from_raw_fd(fd)
        }
    })
    .join()
    .expect("the connecting thread")
}

/// Sends `GET /nixos/bzImage` with `user_agent` (and `range`, a Range header's value, when given)
/// on `stream`, waits, and reads the response: its head, its body (Content-Length bytes), and how
/// the connection went on afterwards: "reset", "closed" (FIN) or "open" (nothing within 1 s).
fn get_as(stream: &mut std::net::TcpStream, user_agent: &str, range: Option<&str>, wait_before_reading: Duration) -> (String, Vec<u8>, &'static str) {
    use std::io::{Read, Write};
    // As GRUB 2.06 writes it (grub-core/net/http.c http_establish).
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    write!(stream, "GET /nixos/bzImage HTTP/1.1\r\nHost: {SERVER}\r\nUser-Agent: {user_agent}\r\n{range}\r\n").expect("send the request");
    std::thread::sleep(wait_before_reading);
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head_end = None;
    let mut length = None;
    loop {
        if let (Some(end), Some(len)) = (head_end, length)
            && got.len() >= end + len
        {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the response after {} bytes: {e}", got.len()),
        }
        if head_end.is_none()
            && let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n")
        {
            head_end = Some(i + 4);
            let head = String::from_utf8_lossy(&got[..i]).into_owned();
            length = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|v| v.trim().parse::<usize>().ok());
        }
    }
    let end = head_end.expect("a response head");
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let body = got[end..].to_vec();
    stream.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    let after = match stream.read(&mut buf) {
        Ok(0) => "closed",
        Ok(_) => "more bytes",
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset",
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => "open",
        Err(_) => "failed",
    };
    (head, body, after)
}

#[test]
fn grub_gets_the_whole_file_and_then_a_reset_other_clients_keep_the_connection() {
    let dir = setup();
    config(dir.path(), |_| {});
    let (_lab, ns) = lab("fleetrst", dir.path());
    let kernel = std::fs::read(dir.path().join("root/nixos/bzImage")).expect("kernel");
    // GRUB's http module ignores the server's FIN and polls 400 ms more at the end of every file;
    // a reset ends that (src/serve/http_socket.rs). The client reads only after 1 s, through a
    // 4 KiB receive buffer (as GRUB's window, most of the file waits for it to read).
    const GRUB: &str = "GRUB 2.06-13+deb12u2";
    let mut grub = connect_from(&ns, Some(4096));
    let (head, body, after) = get_as(&mut grub, GRUB, None, Duration::from_secs(1));
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("\r\nConnection: close\r\n"), "{head}");
    assert_eq!(body.len(), kernel.len(), "GRUB's body is cut short");
    assert!(body == kernel, "GRUB's body differs");
    assert_eq!(after, "reset", "after GRUB's whole file, the connection ends with RST");
    // GRUB's seek (a range from an offset, on a connection of its own) ends the same way. The
    // reset waits until GRUB has acknowledged everything: here every packet serve sends with data
    // is dropped before the client sees it for the first 0.6 s, so that the whole response (10,000
    // bytes, one flight) is sent and lost; a reset then would leave the client without it.
    common::sh(&format!(
        "ip netns exec {ns} nft add table inet lost && \
         ip netns exec {ns} nft add chain inet lost input '{{ type filter hook input priority 0; }}' && \
         ip netns exec {ns} nft add rule inet lost input tcp sport {PORT} ip length '>' 100 counter drop"
    ));
    let mut grub = connect_from(&ns, None);
    let lift = {
        let ns = ns.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            common::sh(&format!("ip netns exec {ns} nft list table inet lost && ip netns exec {ns} nft delete table inet lost"))
        })
    };
    let tail = kernel.len() - 10_000;
    let (head, body, after) = get_as(&mut grub, GRUB, Some(&format!("bytes={tail}-")), Duration::ZERO);
    let dropped = lift.join().expect("the thread lifting the drop");
    assert!(!dropped.contains("packets 0 "), "the drop rule dropped nothing:\n{dropped}");
    assert!(head.starts_with("HTTP/1.1 206") && head.contains("\r\nConnection: close\r\n"), "{head}");
    assert!(body == kernel[tail..], "GRUB's range differs ({} bytes)", body.len());
    assert_eq!(after, "reset", "after GRUB's range, the connection ends with RST");
    // Any other client: no Connection: close, and the connection stays open for its next request.
    let mut other = connect_from(&ns, Some(4096));
    let (head, body, after) = get_as(&mut other, "curl/7.88.1", None, Duration::from_secs(1));
    assert!(head.starts_with("HTTP/1.1 200") && !head.contains("Connection: close"), "{head}");
    assert!(body == kernel, "curl's body differs");
    assert_eq!(after, "open", "a client other than GRUB keeps its connection");
}

/// One simulated installer: fetches its configuration over HTTP, then posts `reports` step
/// reports and `installed`, each retried (as the real one does) until serve answers; records
/// which messages serve acknowledged with 200.
fn installer(ns: &str, mac: &str, host: &str, reports: usize, acked: &Mutex<Vec<(String, String)>>, answered: &AtomicUsize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let cfg = loop {
        let (code, body) = curl(ns, &[&url(&format!("/{}", host_cfg_path(mac)))]);
        if code == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "{host}: no configuration: {code} {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (attempt, token) = install_args(&cfg);
    let send = |event: &str, message: String| loop {
        let r = json!({ "host": host, "generation": 1, "attempt": attempt, "token": token, "event": event, "step": "unpack", "message": message });
        let (code, body) = post(ns, &r);
        match code {
            200 => {
                acked.lock().expect("lock").push((host.to_string(), message));
                answered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // No answer: serve is down (killed); try again, as the installer does.
            0 => {
                assert!(Instant::now() < deadline, "{host}: serve did not come back");
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => panic!("{host}: {event} {message} refused: {code} {body}"),
        }
    };
    send("started", format!("{host} started"));
    for k in 0..reports {
        send("step", format!("{host} n={k}"));
    }
    send("installed", format!("{host} installed"));
}

/// Eight installers report at once; serve is killed with SIGKILL in the middle and started
/// again on the same state directory. Every report serve answered 200 is in the history, no
/// attempt was lost (every installer's token still works after the restart: the hashes are in
/// the store), and every host ends installed.
#[test]
fn serve_killed_mid_reports_keeps_every_answered_report() {
    const HOSTS: usize = 8;
    const REPORTS: usize = 30;
    let dir = setup();
    config(dir.path(), |c| {
        let target = c["fleet"]["hosts"]["web1"]["target"].clone();
        let hosts: serde_json::Map<String, Value> = (0..HOSTS)
            .map(|i| (format!("h{i}"), json!({ "macs": [format!("52:54:00:00:01:{i:02x}")], "generation": 1, "target": target, "customInstaller": {} })))
            .collect();
        c["fleet"]["hosts"] = Value::Object(hosts);
    });
    let (mut lab, ns) = lab("fleetkill", dir.path());
    let acked = Arc::new(Mutex::new(Vec::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..HOSTS)
        .map(|i| {
            let (ns, acked, answered) = (ns.clone(), Arc::clone(&acked), Arc::clone(&answered));
            std::thread::spawn(move || installer(&ns, &format!("52:54:00:00:01:{i:02x}"), &format!("h{i}"), REPORTS, &acked, &answered))
        })
        .collect();
    // Kill in the middle: after about a third of all the reports were answered.
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::Relaxed) < HOSTS * REPORTS / 3 {
        assert!(Instant::now() < deadline, "the installers did not get going");
        std::thread::sleep(Duration::from_millis(5));
    }
    lab.kill(&server_log(dir.path()));
    let at_kill = answered.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    start_serve(&mut lab, dir.path());
    for w in workers {
        w.join().expect("an installer failed");
    }
    assert!(at_kill < HOSTS * (REPORTS + 2), "serve was killed after everything was sent");

    let store = nixos_pxe_installer::fleet::sqlite::SqliteStore::open_existing(&dir.path().join("state")).expect("state");
    use nixos_pxe_installer::fleet::store::Store;
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len(), HOSTS * (REPORTS + 2));
    for (host, message) in &acked {
        let history = store.history(host).expect("history");
        assert!(history.iter().any(|r| r.message.as_deref() == Some(message.as_str())), "{host}: the answered report {message:?} is lost");
    }
    for h in status(dir.path()) {
        assert_eq!((h["state"].as_str(), h["attempt"]["number"].as_u64()), (Some("installed"), Some(1)), "{h}");
    }
    let log = whole_log(dir.path());
    assert!(log.matches("fleet: serving").count() == 2, "serve started twice:\n{log}");
}

/// A UDP socket on `port` inside namespace `ns` (made by a thread that entered it; the socket
/// stays in that namespace wherever it is used).
fn udp_in(ns: &str, port: u16) -> std::net::UdpSocket {
    let netns = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).expect("netns");
        // SAFETY: setns on a descriptor this thread owns; affects this thread only.
        assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) }, 0, "setns");
        std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind")
    })
    .join()
    .expect("thread")
}

/// Sends `rrq` from `socket` and reads the whole file (512-byte blocks), or None when nothing
/// answers within 2 s.
fn tftp_from(socket: &std::net::UdpSocket, rrq: &[u8]) -> Option<String> {
    socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    socket.send_to(rrq, (SERVER, 69)).expect("send");
    let mut data = Vec::new();
    let mut buf = [0u8; 600];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).ok()?;
        assert_eq!(&buf[..2], &[0, 3], "DATA expected: {:?}", &buf[..n]);
        data.extend_from_slice(&buf[4..n]);
        socket.send_to(&[0, 4, buf[2], buf[3]], peer).expect("ack");
        if n < 516 {
            return Some(String::from_utf8(data).expect("utf-8"));
        }
    }
}

/// A copy of GRUB's read request that arrives after the installer started (a retransmission the
/// server found late) is not the machine booting again: no second transfer, no new attempt.
#[test]
fn a_retransmitted_request_is_not_a_new_boot() {
    let dir = setup();
    config(dir.path(), |_| {});
    let (_lab, ns) = lab("fleetrrq", dir.path());
    let socket = udp_in(&ns, 25300);
    let rrq = [b"\0\x01".as_slice(), host_cfg_path(WEB1).as_bytes(), b"\0octet\0"].concat();
    let (attempt, token) = install_args(&tftp_from(&socket, &rrq).expect("the first request is answered"));
    assert_eq!(attempt, 1);
    assert_eq!(post(&ns, &report("web1", 1, 1, &token, "started")).0, 200);
    // The same datagram from the same port again, at once: a retransmission. Then, from the same
    // port, a request for a file that is not there: serve reads its request port in order, so
    // that one's answer shows the copy has been handled; nothing else may come (silence alone
    // would also be what a serve that had not got to the copy yet sends).
    socket.send_to(&rrq, (SERVER, 69)).expect("send the copy");
    socket.send_to(b"\0\x01no-such-file\0octet\0", (SERVER, 69)).expect("send the next request");
    socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut answers = Vec::new();
    let mut buf = [0u8; 600];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(answers, ["\0\x05\0\x01file not found\0"], "a copy of a request already answered started a transfer, or serve did not handle it");
    let decisions = whole_log(dir.path()).lines().filter(|l| l.contains("fleet: decision")).count();
    assert_eq!(decisions, 1, "the copy was decided again:\n{}", whole_log(dir.path()));
    let web1 = host_status(dir.path(), "web1");
    assert_eq!((web1["state"].as_str(), web1["attempt"]["number"].as_u64()), (Some("installing"), Some(1)), "{web1}");
    // The next open (GRUB's next port) is a new request.
    let next = udp_in(&ns, 25301);
    assert_eq!(install_args(&tftp_from(&next, &rrq).expect("answered")).0, 2, "from another port it is the machine asking again");
}
