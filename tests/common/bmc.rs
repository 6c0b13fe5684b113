//! A real Redfish BMC for the tests: sushy-tools' emulator (PyPI, pinned in dev/sushy-tools.txt)
//! with its fake systems driver, over HTTPS with a certificate the test makes with openssl, HTTP
//! Basic authentication from an htpasswd file, and its external notifier, whose every PUT (the
//! system's whole state after each change) a small receiver keeps as a JSON line. Everything runs
//! in a network namespace the caller gives; nothing leaves it.

use super::{Lab, run};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The requirements file the venv is made from (its hash names the venv).
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dev/sushy-tools.txt");

/// The venv with sushy-tools (tests/common/pypi_venv.rs).
pub fn sushy_venv() -> PathBuf {
    super::pypi_venv::venv("sushy-tools", REQUIREMENTS)
}

/// A certificate and its key for `name` at 127.0.0.1 (and, with `ip`, that address too), by
/// openssl: (certificate, key).
pub fn make_certificate(dir: &Path, name: &str, ip: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name}"))
        .args(["-addext", &format!("subjectAltName=IP:{ip}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

/// `AB:CD:...` as openssl prints a certificate's SHA-256 fingerprint.
pub fn fingerprint(cert: &Path) -> String {
    let out = run(Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256", "-in"]).arg(cert));
    out.trim().rsplit('=').next().unwrap_or_default().to_string()
}

/// One fake system of the emulator.
pub struct FakeSystem<'a> {
    pub uuid: &'a str,
    pub name: &'a str,
    pub power: &'a str,
    pub mac: &'a str,
}

/// A running emulator and its notifier receiver, in namespace `ns` on 127.0.0.1.
pub struct Emulator {
    pub dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    pub notifications: PathBuf,
}

impl Emulator {
    /// Starts the emulator (and the notifier receiver on `port + 1`) in the lab's namespace
    /// `ns` with `systems`, its certificate `cert`/`key`, the account `user`/`password`, and
    /// `extra` lines of Python configuration; returns once it answers. Without `own_receiver`
    /// the caller listens on `port + 1` itself (tests/e2e/bmc-bridge.py).
    #[allow(clippy::too_many_arguments)]
    pub fn start(lab: &mut Lab, ns: &str, dir: &Path, port: u16, cert: &Path, key: &Path, user: &str, password: &str, systems: &[FakeSystem], extra: &str, own_receiver: bool) -> Emulator {
        let venv = sushy_venv();
        let dir = dir.join(format!("sushy-{port}"));
        std::fs::create_dir_all(dir.join("state")).expect("mkdir");
        let hash = run(Command::new(venv.join("bin/python"))
            .args(["-c", "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=4)).decode())", password]));
        std::fs::write(dir.join("htpasswd"), format!("{user}:{}\n", hash.trim())).expect("htpasswd");
        let systems: Vec<String> = systems
            .iter()
            .map(|s| {
                format!(
                    "{{'uuid': '{}', 'name': '{}', 'power_state': '{}', 'external_notifier': True, 'nics': [{{'mac': '{}', 'ip': '10.42.0.9'}}]}}",
                    s.uuid, s.name, s.power, s.mac
                )
            })
            .collect();
        let config = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_SSL_CERT = '{cert}'\n\
             SUSHY_EMULATOR_SSL_KEY = '{key}'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{auth}'\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{systems}]\n\
             EXTERNAL_NOTIFICATION_URL = 'http://127.0.0.1:{notify}/notify'\n\
             {extra}\n",
            cert = cert.display(),
            key = key.display(),
            auth = dir.join("htpasswd").display(),
            state = dir.join("state").display(),
            systems = systems.join(", "),
            notify = port + 1,
        );
        std::fs::write(dir.join("emulator.conf"), config).expect("config");
        let notifications = dir.join("notifications.jsonl");
        let receiver = format!(
            "import http.server, sys\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_PUT(self):\n\
             \x20       body = self.rfile.read(int(self.headers['Content-Length']))\n\
             \x20       with open('{file}', 'ab') as f: f.write(body.replace(b'\\n', b' ') + b'\\n')\n\
             \x20       self.send_response(204); self.end_headers()\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.ThreadingHTTPServer(('127.0.0.1', {notify}), H).serve_forever()\n",
            file = notifications.display(),
            notify = port + 1
        );
        std::fs::write(dir.join("receiver.py"), receiver).expect("receiver");
        let log = dir.join("emulator.log");
        let python = venv.join("bin/python");
        if own_receiver {
            lab.spawn_in(ns, &[super::pypi_venv::PYTHON, dir.join("receiver.py").to_str().expect("utf8")], &dir.join("receiver.log"));
        }
        lab.spawn_in(
            ns,
            &[python.to_str().expect("utf8"), "-u", venv.join("bin/sushy-emulator").to_str().expect("utf8"), "--config", dir.join("emulator.conf").to_str().expect("utf8")],
            &log,
        );
        let emulator = Emulator { dir, port, log, notifications };
        let ns_owned = ns.to_string();
        lab.wait_listening(&ns_owned, &[super::Socket::TcpListen(port), super::Socket::TcpListen(port + 1)]);
        emulator
    }

    /// Every request the emulator logged, in order: (method, path, status).
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        let text = strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        text.lines()
            .filter_map(|l| {
                let quoted = l.split('"').nth(1)?;
                let mut words = quoted.split_whitespace();
                let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
                let status = l.split('"').nth(2)?.split_whitespace().next()?.parse().ok()?;
                Some((method, path, status))
            })
            .collect()
    }

    /// The requests logged after the first `skip`, as `METHOD PATH STATUS` lines.
    pub fn requests_since(&self, skip: usize) -> Vec<String> {
        self.requests().into_iter().skip(skip).map(|(m, p, s)| format!("{m} {p} {s}")).collect()
    }

    /// Every state the notifier was sent, in order.
    pub fn notifications(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.notifications)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (up to 10 s) until the notifier has been sent `count` states.
    pub fn wait_notifications(&self, count: usize) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let seen = self.notifications();
            if seen.len() >= count || start.elapsed() > Duration::from_secs(10) {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Text without the ANSI colour sequences werkzeug puts around some log lines.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
