//! The installer's reports to serve (`POST <nixos-pxe.report>/v1/report`, JSON): `started`, each
//! `step`, then `installed` (after sync, before the reboot) or `failed` (the step, the error, the
//! tail of the console). Each is retried with backoff (1 s doubling to 30 s) within a bound, and
//! its outcome said on the console; a report that does not arrive never fails the install.
//! Also the file the installed system's first boot reports `booted` from (nix/report-module.nix).
//! The report is serve's own type ([`crate::fleet::store::Report`]): one wire format.

use super::http::{self, Response, Url};
use super::kernel_args::FleetArgs;
use super::say;
use crate::error::Error;
pub use crate::fleet::store::{Event, Report};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// serve's endpoint for reports, below the `nixos-pxe.report=` address.
pub const ENDPOINT: &str = "/v1/report";
/// Where the installer leaves the boot token on the installed root, for nix/report-module.nix.
pub const BOOT_REPORT_FILE: &str = "var/lib/nixos-pxe/boot-report.json";

/// How long a report is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// At most this many tries.
    pub tries: u32,
    /// No try starts after this long from the first.
    pub within: Duration,
}

/// `started` and `step`: give up quickly and go on installing.
pub const BRIEF: Patience = Patience { tries: 3, within: Duration::from_secs(10) };
/// `installed` and `failed`: worth waiting for (about 2 minutes) before the reboot or the shell.
pub const PERSISTENT: Patience = Patience { tries: u32::MAX, within: Duration::from_secs(120) };
/// The longest one try (connect, send, read) may take.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// The wait after the `n`th failed try (from 1): 1 s, 2 s, 4 s, ... at most 30 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// How a report ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Accepted { tries: u32 },
    /// serve answered no (a wrong token, an old attempt, a report it cannot read): not retried.
    Refused { status: u16, reason: String, body: String },
    NotDelivered { tries: u32, why: String },
}

/// Time as the retry loop sees it: real, or a test's.
pub trait Clock {
    fn elapsed(&self) -> Duration;
    fn sleep(&self, d: Duration);
}

pub struct RealClock(Instant);

impl RealClock {
    pub fn start() -> RealClock {
        RealClock(Instant::now())
    }
}

impl Clock for RealClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Tries `post` (given the time one try may take) until serve accepts or refuses, or `patience`
/// runs out. A 5xx answer, 408 and 429 are retried like a network error; any other answer is final.
/// `retrying` hears of each failed try that will be tried again: its number, why, and the wait.
pub fn deliver(
    patience: Patience,
    clock: &impl Clock,
    mut post: impl FnMut(Duration) -> Result<Response, String>,
    mut retrying: impl FnMut(u32, &str, Duration),
) -> Delivery {
    let mut tries = 0;
    loop {
        tries += 1;
        let left = patience.within.saturating_sub(clock.elapsed());
        let why = match post(TRY_TIMEOUT.min(left).max(Duration::from_secs(1))) {
            Ok(r) if (200..300).contains(&r.status) => return Delivery::Accepted { tries },
            Ok(r) if r.status >= 500 || r.status == 408 || r.status == 429 => format!("{} {}{}", r.status, r.reason, short_body(&r.body)),
            Ok(r) => return Delivery::Refused { status: r.status, reason: r.reason, body: r.body },
            Err(e) => e,
        };
        let wait = backoff(tries);
        if tries >= patience.tries || clock.elapsed() + wait > patience.within {
            return Delivery::NotDelivered { tries, why };
        }
        retrying(tries, &why, wait);
        clock.sleep(wait);
    }
}

/// `: body`, on one line and short, when there is a body.
fn short_body(body: &str) -> String {
    let line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return String::new();
    }
    let cut: String = line.chars().take(200).collect();
    format!(": {cut}{}", if cut.len() < line.len() { "..." } else { "" })
}

/// The console line for a report's outcome: `report installed: accepted`.
pub fn describe(what: &str, delivery: &Delivery) -> String {
    match delivery {
        Delivery::Accepted { tries: 1 } => format!("report {what}: accepted"),
        Delivery::Accepted { tries } => format!("report {what}: accepted (after {tries} tries)"),
        Delivery::Refused { status, reason, body } => {
            let why = match status {
                403 => "serve does not take this attempt's token",
                409 => "serve has moved on from this attempt (a newer attempt or generation of this host)",
                400 => "serve could not read it",
                _ => "serve answered no",
            };
            format!("report {what}: refused ({status} {reason}{}): {why}; not retried", short_body(body))
        }
        Delivery::NotDelivered { tries: 1, why } => format!("report {what}: not delivered after 1 try: {why}"),
        Delivery::NotDelivered { tries, why } => format!("report {what}: not delivered after {tries} tries: {why}"),
    }
}

/// The console line for a failed try that is tried again: `report installed: try 1 failed:
/// connecting to ...: Connection refused (os error 111); trying again in 1 s`.
pub fn describe_retry(what: &str, tries: u32, why: &str, wait: Duration) -> String {
    format!("report {what}: try {tries} failed: {why}; trying again in {} s", wait.as_secs())
}

/// Sends one fleet install's reports to serve.
pub struct Reporter {
    url: Url,
    template: Report,
}

impl Reporter {
    /// `None` when the per-host file carried no report address (`nixos-pxe render`'s files).
    pub fn new(fleet: &FleetArgs) -> Option<Reporter> {
        let served = fleet.served.as_ref()?;
        Some(Reporter {
            url: served.report.clone(),
            template: Report::new(&fleet.host, fleet.generation, served.attempt, &served.token, Event::Started),
        })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The report of `event` for this attempt, the rest to be filled in.
    pub fn report(&self, event: Event) -> Report {
        Report { event, ..self.template.clone() }
    }

    /// Sends `report`, says on the console how it went, and returns that.
    pub fn send(&self, what: &str, report: &Report, patience: Patience) -> Delivery {
        let body = serde_json::to_vec(report).unwrap_or_default();
        let delivery = deliver(
            patience,
            &RealClock::start(),
            |timeout| http::post(&self.url, ENDPOINT, &body, timeout),
            |tries, why, wait| say(&describe_retry(what, tries, why, wait)),
        );
        say(&describe(what, &delivery));
        delivery
    }

    pub fn started(&self, message: String) {
        self.send("started", &Report { message: Some(message), ..self.report(Event::Started) }, BRIEF);
    }

    pub fn step(&self, name: &str, message: String) {
        let report = Report { step: Some(name.to_string()), message: Some(message), ..self.report(Event::Step) };
        self.send(&format!("step {name}"), &report, BRIEF);
    }

    /// `installed`, with the hash of the boot token the installed root holds (if it got one).
    pub fn installed(&self, system: &str, message: String, boot: Option<&BootReport>) {
        let report = Report {
            system: Some(system.to_string()),
            message: Some(message),
            boot_token_hash: boot.map(BootReport::token_hash),
            ..self.report(Event::Installed)
        };
        self.send("installed", &report, PERSISTENT);
    }

    pub fn failed(&self, step: &str, error: &str, log_tail: &[String]) {
        let report = Report {
            step: Some(step.to_string()),
            message: Some(error.to_string()),
            log_tail: Some(log_tail.join("\n")),
            ..self.report(Event::Failed)
        };
        self.send("failed", &report, PERSISTENT);
    }
}

/// What the installed system needs to report its first boot: written to [`BOOT_REPORT_FILE`]
/// (mode 0600) on the installed root, read by nix/report-module.nix's unit.
///
/// Two secrets: a boot token made here, whose hash goes to serve in `installed`, and which
/// alone confirms the boot once serve took that report (it never left this machine before the
/// boot report itself); and the attempt's own token, for when `installed` was lost (serve then
/// takes `booted` with it, if this attempt is still the host's latest). Neither gives whoever
/// reads the file (root on the installed system) more than this attempt's reports.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootReport {
    /// serve's address (`nixos-pxe.report=`); the unit POSTs to it + /v1/report.
    pub report: String,
    pub host: String,
    pub generation: u32,
    pub attempt: u32,
    /// The attempt's token (`nixos-pxe.token=`).
    pub token: String,
    /// The boot token.
    pub boot_token: String,
}

impl std::fmt::Debug for BootReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootReport").field("report", &self.report).field("host", &self.host).field("attempt", &self.attempt).finish_non_exhaustive()
    }
}

impl BootReport {
    /// The first boot's report of this attempt, with a new boot token.
    pub fn new(reporter: &Reporter) -> std::io::Result<BootReport> {
        let t = &reporter.template;
        Ok(BootReport {
            report: reporter.url.to_string(),
            host: t.host.clone(),
            generation: t.generation,
            attempt: t.attempt,
            token: t.token.clone(),
            boot_token: crate::fleet::token::random()?,
        })
    }

    /// What `installed` tells serve of the boot token.
    pub fn token_hash(&self) -> String {
        crate::fleet::token::hash(&self.boot_token)
    }

    /// Writes it below `root` (the mounted installed system), readable by root only.
    pub fn write(&self, root: &Utf8Path) -> Result<camino::Utf8PathBuf, Error> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let file = root.join(BOOT_REPORT_FILE);
        let dir = file.parent().unwrap_or(root);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(Error::io(dir))?;
        let mut out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&file).map_err(Error::io(&file))?;
        let text = serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        out.write_all(text.as_bytes()).map_err(Error::io(&file))?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::kernel_args;

    /// A clock that only moves when slept on, or by what a try costs.
    #[derive(Default)]
    struct TestClock {
        now: std::cell::Cell<Duration>,
        slept: std::cell::RefCell<Vec<u64>>,
    }

    impl Clock for TestClock {
        fn elapsed(&self) -> Duration {
            self.now.get()
        }

        fn sleep(&self, d: Duration) {
            self.now.set(self.now.get() + d);
            self.slept.borrow_mut().push(d.as_secs());
        }
    }

    fn answer(status: u16, reason: &str, body: &str) -> Result<Response, String> {
        Ok(Response { status, reason: reason.into(), body: body.into() })
    }

    /// Runs `deliver` against `answers` (one per try; the last repeats), each try costing
    /// `cost`; returns the outcome, the waits and the time each try was allowed.
    fn run(patience: Patience, cost: Duration, answers: &[Result<Response, String>]) -> (Delivery, Vec<u64>, Vec<u64>) {
        let clock = TestClock::default();
        let mut timeouts = Vec::new();
        let mut n = 0;
        let mut retries = Vec::new();
        let delivery = deliver(
            patience,
            &clock,
            |timeout| {
                timeouts.push(timeout.as_secs());
                clock.now.set(clock.now.get() + cost);
                let a = answers[n.min(answers.len() - 1)].clone();
                n += 1;
                a
            },
            |tries, _, wait| retries.push((tries, wait.as_secs())),
        );
        let slept = clock.slept.into_inner();
        // Each wait was announced before it was slept, with the number of the try that failed.
        let announced: Vec<(u32, u64)> = slept.iter().enumerate().map(|(i, s)| (i as u32 + 1, *s)).collect();
        assert_eq!(retries, announced, "every wait announced once, before it");
        (delivery, slept, timeouts)
    }

    #[test]
    fn a_failed_try_that_is_retried_says_so_on_the_console() {
        assert_eq!(
            describe_retry("installed", 1, "connecting to 10.42.0.1:80: Connection refused (os error 111)", Duration::from_secs(1)),
            "report installed: try 1 failed: connecting to 10.42.0.1:80: Connection refused (os error 111); trying again in 1 s"
        );
    }

    #[test]
    fn backoff_doubles_from_one_second_to_thirty() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30, 30]);
    }

    #[test]
    fn accepted_at_once_or_after_retries() {
        assert_eq!(run(PERSISTENT, Duration::ZERO, &[answer(200, "OK", "")]), (Delivery::Accepted { tries: 1 }, vec![], vec![10]));
        let flaky = [Err("connecting to 10.42.0.1:80: Connection refused (os error 111)".to_string()), answer(503, "Service Unavailable", ""), answer(200, "OK", "{}")];
        assert_eq!(run(PERSISTENT, Duration::ZERO, &flaky), (Delivery::Accepted { tries: 3 }, vec![1, 2], vec![10, 10, 10]));
    }

    #[test]
    fn installed_is_tried_for_about_two_minutes_then_given_up() {
        let down = [Err("connecting to 10.42.0.1:80: Connection refused (os error 111)".to_string())];
        let (delivery, slept, _) = run(PERSISTENT, Duration::ZERO, &down);
        // Tries at 0, 1, 3, 7, 15, 31, 61, 91 s; the next would start at 121 s.
        assert_eq!(slept, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(delivery, Delivery::NotDelivered { tries: 8, why: down[0].clone().unwrap_err() });
        // Tries that each hang until their 10 s timeout: fewer of them, still within the bound.
        let (delivery, slept, timeouts) = run(PERSISTENT, TRY_TIMEOUT, &[Err("timed out".to_string())]);
        assert_eq!(delivery, Delivery::NotDelivered { tries: 6, why: "timed out".into() });
        assert_eq!(slept, [1, 2, 4, 8, 16]);
        assert_eq!(timeouts, [10, 10, 10, 10, 10, 10]);
        let total: u64 = slept.iter().sum::<u64>() + 10 * 6;
        assert!(total <= 130, "{total} s");
    }

    #[test]
    fn a_step_report_gives_up_quickly() {
        let (delivery, slept, _) = run(BRIEF, Duration::ZERO, &[answer(502, "Bad Gateway", "upstream\nwent away")]);
        assert_eq!(delivery, Delivery::NotDelivered { tries: 3, why: "502 Bad Gateway: upstream went away".into() });
        assert_eq!(slept, [1, 2]);
        let (delivery, slept, timeouts) = run(BRIEF, TRY_TIMEOUT, &[Err("timed out".to_string())]);
        assert_eq!((delivery, slept, timeouts), (Delivery::NotDelivered { tries: 1, why: "timed out".into() }, vec![], vec![10]));
    }

    #[test]
    fn wrong_token_old_attempt_and_malformed_are_not_retried() {
        for (status, reason) in [(403, "Forbidden"), (409, "Conflict"), (400, "Bad Request"), (404, "Not Found")] {
            let (delivery, slept, _) = run(PERSISTENT, Duration::ZERO, &[answer(status, reason, "no"), answer(200, "OK", "")]);
            assert_eq!(delivery, Delivery::Refused { status, reason: reason.into(), body: "no".into() });
            assert!(slept.is_empty(), "{status} was retried");
        }
        for status in [408, 429, 500] {
            let (delivery, ..) = run(PERSISTENT, Duration::ZERO, &[answer(status, "x", ""), answer(200, "OK", "")]);
            assert_eq!(delivery, Delivery::Accepted { tries: 2 }, "{status} is retried");
        }
    }

    #[test]
    fn outcomes_read_well_on_the_console() {
        assert_eq!(describe("installed", &Delivery::Accepted { tries: 1 }), "report installed: accepted");
        assert_eq!(describe("step disk", &Delivery::Accepted { tries: 2 }), "report step disk: accepted (after 2 tries)");
        assert_eq!(
            describe("installed", &Delivery::NotDelivered { tries: 8, why: "connecting to 10.42.0.1:80: Connection refused (os error 111)".into() }),
            "report installed: not delivered after 8 tries: connecting to 10.42.0.1:80: Connection refused (os error 111)"
        );
        assert_eq!(
            describe("started", &Delivery::Refused { status: 409, reason: "Conflict".into(), body: "attempt 2 is not web1's latest (3)\n".into() }),
            "report started: refused (409 Conflict: attempt 2 is not web1's latest (3)): serve has moved on from this attempt (a newer attempt or generation of this host); not retried"
        );
        assert_eq!(
            describe("failed", &Delivery::Refused { status: 403, reason: "Forbidden".into(), body: String::new() }),
            "report failed: refused (403 Forbidden): serve does not take this attempt's token; not retried"
        );
    }

    fn reporter() -> Reporter {
        let token = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN-_0";
        let args = kernel_args::parse(&format!(
            "nixos-pxe.host=web1 nixos-pxe.generation=2 nixos-pxe.attempt=3 nixos-pxe.token={token} nixos-pxe.report=http://10.42.0.1:8080 nixos-pxe.mac=52:54:00:00:00:a1"
        ))
        .expect("args");
        Reporter::new(&args.fleet.expect("fleet")).expect("served")
    }

    /// The wire format serve reads (the shared contract): field names, event names, absent
    /// fields left out.
    #[test]
    fn reports_are_the_protocols_json() {
        let r = reporter();
        let step = Report { step: Some("unpack".into()), message: Some("step 4/7 unpack".into()), ..r.report(Event::Step) };
        assert_eq!(
            serde_json::to_value(&step).expect("json"),
            serde_json::json!({ "host": "web1", "generation": 2, "attempt": 3, "token": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN-_0",
                                "event": "step", "step": "unpack", "message": "step 4/7 unpack" })
        );
        let installed = Report { system: Some("/nix/store/x-nixos-system".into()), ..r.report(Event::Installed) };
        let json = serde_json::to_value(&installed).expect("json");
        assert_eq!((json["event"].as_str(), json["system"].as_str()), (Some("installed"), Some("/nix/store/x-nixos-system")));
        assert_eq!(json.as_object().map(|o| o.len()), Some(6), "host, generation, attempt, token, event, system: {json}");
        let failed = Report { step: Some("disk".into()), message: Some("no".into()), log_tail: Some("a\nb".into()), ..r.report(Event::Failed) };
        assert_eq!(serde_json::to_value(&failed).expect("json")["log_tail"], "a\nb");
        let back: Report = serde_json::from_str(r#"{"host":"h","generation":1,"attempt":1,"token":"t","event":"booted","system":"/nix/store/s"}"#).expect("parse");
        assert_eq!((back.event, back.system.as_deref()), (Event::Booted, Some("/nix/store/s")));
        assert!(!format!("{installed:?}").contains("abcdefgh"), "no token in debug output");
        assert_eq!(r.url().to_string(), "http://10.42.0.1:8080");
    }

    #[test]
    fn the_boot_report_file_is_readable_by_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Utf8Path::from_path(dir.path()).expect("utf8");
        let boot = BootReport::new(&reporter()).expect("a boot token");
        let file = boot.write(root).expect("write");
        assert_eq!(file, root.join("var/lib/nixos-pxe/boot-report.json"));
        assert_eq!(std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(file.parent().expect("dir")).expect("meta").permissions().mode() & 0o777, 0o700);
        let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
        assert_eq!(
            back,
            serde_json::json!({
                "report": "http://10.42.0.1:8080", "host": "web1", "generation": 2, "attempt": 3, "token": boot.token, "boot_token": boot.boot_token
            })
        );
        // The attempt's own token (for when `installed` never arrived), and a boot token of its
        // own whose hash `installed` carries.
        assert_eq!(boot.token, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN-_0");
        assert_eq!(boot.boot_token.len(), 43);
        assert_ne!(boot.boot_token, boot.token);
        assert_ne!(BootReport::new(&reporter()).expect("another").boot_token, boot.boot_token, "a new boot token each time");
        assert!(crate::fleet::token::matches(&boot.boot_token, &boot.token_hash()));
        assert!(!format!("{boot:?}").contains(&boot.boot_token), "no token in debug output");
    }
}
