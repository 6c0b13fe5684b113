//! What serve remembers about the fleet's hosts, behind one small interface: the attempts it
//! handed out (with their tokens' hashes), every report the installers and installed systems
//! sent, and the requests for a reinstall. SQLite implements it for one server
//! ([`super::sqlite`]); PostgreSQL for several boot servers that serve one fleet
//! ([`super::postgres`]). Both pass one suite of tests (`super::store_tests`).
//!
//! The rules every implementation keeps:
//! - Each method is one transaction: a crash leaves the state before or after it, never between.
//! - Attempt numbers are never reused within a host's generation (`hand_out` refuses a taken one).
//! - A report is checked against the token hash of the attempt it names (constant time, see
//!   [`super::token`]). `booted` after an accepted `installed` is checked against the hash of the
//!   boot token that `installed` carried (the installed system has that token; the attempt's
//!   own, which was on the installer's kernel command line, no longer moves anything); while
//!   `installed` was never accepted, against the attempt's token.
//! - A report for an attempt that is not the host's latest one is refused, `booted` included: an
//!   old attempt's token changes nothing; so is one that would move a finished attempt
//!   (`failed`, `installed`) to another outcome. Only `nixos-pxe fleet reinstall` (and an
//!   `installed` of an attempt handed out after it) ends a reinstall request.
//! - `booted` for the latest attempt whose `installed` report was lost records it installed and
//!   confirmed at once.
//! - Bindings: the address serve's DHCP last saw each fleet MAC with ([`Store::bind`]); a
//!   host's token goes only to, and its reports are taken only from, its MACs' addresses.
//! - Every accepted report is kept (the history; text fields cut to [`MAX_FIELD`]); a refused
//!   one changes nothing.
//! - Transitions of one host take turns across every process that shares the store (another
//!   boot server included): two can never hand out one number, nor both accept `installed`.
//! - A store that cannot be reached says [`StoreError::Unavailable`] within a bounded time
//!   (serve then hands out nothing and keeps the reports it is sent for later).

use super::decide::HostState;
use crate::config::fleet::Mac;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// The state of the fleet's hosts, wherever it is kept.
pub trait Store: Send + Sync {
    /// What happened to `host`: its installed and confirmed generation, the reinstall request,
    /// and its attempts at `generation` (the generation the fleet wants now).
    fn host(&self, host: &str, generation: u32) -> Result<HostState, StoreError>;

    /// Records that `out.attempt` was handed out with the hash of its token, as `Pending`
    /// (and `out.replaces`, a `Pending` attempt whose plain token was lost, as `Replaced`).
    /// [`HandedOut::Taken`] when that number exists already: another request was first.
    fn hand_out(&self, out: &HandOut) -> Result<HandedOut, StoreError>;

    /// Checks and records a report; see the module's rules.
    fn report(&self, report: &Report) -> Result<Accepted, Refused>;

    /// `nixos-pxe fleet reinstall HOST`: install `host` again although its generation is
    /// installed. Cleared when an attempt handed out after the request reports `installed`.
    fn reinstall(&self, host: &str) -> Result<(), StoreError>;

    /// Records the fleet's hosts as serve read them (MACs, the wanted generation), so that
    /// `fleet status` can show them without the configuration. Hosts no longer in the fleet
    /// keep their history.
    fn sync_fleet(&self, hosts: &[FleetHost]) -> Result<(), StoreError>;

    /// Every host the store knows, by name.
    fn hosts(&self) -> Result<Vec<HostRecord>, StoreError>;

    /// Every accepted report of `host`, oldest first.
    fn history(&self, host: &str) -> Result<Vec<ReportRecord>, StoreError>;

    /// Records that `mac` has `address` now (its DHCP lease, or the address it asked the site's
    /// server for); any other MAC bound to that address loses its binding in the same step.
    fn bind(&self, mac: Mac, address: Ipv4Addr) -> Result<(), StoreError> {
        self.record_bindings(&[BindingChange::Bind(mac, address)])
    }

    /// Forgets the binding to `address` (it was given to a machine outside the fleet).
    fn unbind_address(&self, address: Ipv4Addr) -> Result<(), StoreError> {
        self.record_bindings(&[BindingChange::Unbind(address)])
    }

    /// Records `changes` in their order, in one step (one sync of the disk for all).
    fn record_bindings(&self, changes: &[BindingChange]) -> Result<(), StoreError>;

    /// The address each of `macs` is bound to, for those that have one.
    fn bindings(&self, macs: &[Mac]) -> Result<Vec<(Mac, Ipv4Addr)>, StoreError>;

    /// Whether other boot servers share this store (a pending attempt this process did not hand
    /// out may then be another server's, just handed out, rather than one whose token was lost).
    fn shared(&self) -> bool {
        false
    }

    /// When attempt `attempt` of `host` at `generation` was handed out (ms since the epoch).
    fn handed_out_at(&self, host: &str, generation: u32, attempt: u32) -> Result<Option<i64>, StoreError>;
}

/// A change of the bindings of the fleet's MACs to addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingChange {
    /// `mac` has this address now; any other MAC bound to it loses its binding.
    Bind(Mac, Ipv4Addr),
    /// The address is no fleet MAC's any more.
    Unbind(Ipv4Addr),
}

/// A store that cannot do what was asked: what failed, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Backend(String),
    /// The store cannot be reached now (a database that is down, restarting or unreachable, or
    /// did not answer in time); the same call may succeed later.
    #[error("{0}")]
    Unavailable(String),
    #[error("no host {host} in {place}; it knows {}", if known.is_empty() { "no hosts yet (serve records a host when it starts with a fleet that has it)".to_string() } else { known.join(", ") })]
    UnknownHost { host: String, place: String, known: Vec<String> },
    #[error(
        "{place} has schema version {found}, newer than this nixos-pxe knows (up to {known}): it was written by a newer nixos-pxe; run that one, or move the file away to start with no state (every host is then new to serve)"
    )]
    FutureSchema { place: String, found: i64, known: i64 },
}

/// One attempt being handed out.
#[derive(Clone)]
pub struct HandOut {
    pub host: String,
    pub generation: u32,
    pub attempt: u32,
    /// [`super::token::hash`] of the attempt's token.
    pub token_hash: String,
    /// The MAC whose configuration carried it.
    pub mac: Mac,
    /// A `Pending` attempt of the same generation to mark `Replaced` in the same transaction.
    pub replaces: Option<u32>,
}

impl fmt::Debug for HandOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandOut")
            .field("host", &self.host)
            .field("generation", &self.generation)
            .field("attempt", &self.attempt)
            .field("mac", &self.mac)
            .field("replaces", &self.replaces)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandedOut {
    Created,
    /// The number exists already (another request, or another boot server, made it first).
    Taken,
}

/// A host as the fleet describes it, for [`Store::sync_fleet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetHost {
    pub name: String,
    pub macs: Vec<Mac>,
    pub generation: u32,
}

/// What happened, as the installer or the installed system says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The installer started (it got its kernel and NFS root).
    Started,
    /// A step of the installer began.
    Step,
    /// The system is on the disk (after sync, before the reboot).
    Installed,
    /// A step failed; the install stopped.
    Failed,
    /// The installed system booted (nix/report-module.nix), with its system path.
    Booted,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Step => "step",
            Event::Installed => "installed",
            Event::Failed => "failed",
            Event::Booted => "booted",
        }
    }

    pub fn parse(text: &str) -> Option<Event> {
        [Event::Started, Event::Step, Event::Installed, Event::Failed, Event::Booted].into_iter().find(|e| e.as_str() == text)
    }
}

/// A report as `POST /v1/report` carries it (JSON). Fields a newer installer adds are ignored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub host: String,
    pub generation: u32,
    pub attempt: u32,
    /// The attempt's token (`nixos-pxe.token=`); the installed system's `booted` carries it too.
    pub token: String,
    pub event: Event,
    /// `step`: the step starting; `failed`: the step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// A line for people: the step's title, the error of `failed`, the summary of `installed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `failed`: the last lines of the installer's console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// `installed`: the system installed; `booted`: the running system's store path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// `installed`: the hash ([`super::token::hash`]) of the boot token the installer left on the
    /// installed root for the first boot's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_token_hash: Option<String>,
    /// `booted`: that boot token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_token: Option<String>,
}

/// The token is a secret: never in a log line or a debug dump.
impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("host", &self.host)
            .field("generation", &self.generation)
            .field("attempt", &self.attempt)
            .field("event", &self.event)
            .field("step", &self.step)
            .field("message", &self.message)
            .field("system", &self.system)
            .finish_non_exhaustive()
    }
}

/// The longest text a report field keeps (a log tail of 50 long lines fits). A longer one is
/// cut (a log tail keeps its end, where the error is; the others their start) rather than the
/// report refused: a `failed` report must not be lost to an installer's long lines.
pub const MAX_FIELD: usize = 32 * 1024;

/// `text` cut to at most [`MAX_FIELD`] bytes on a character boundary, keeping its end or start.
fn clip(text: &mut String, keep_end: bool) {
    if text.len() <= MAX_FIELD {
        return;
    }
    let marker = "[...] ";
    let room = MAX_FIELD - marker.len();
    if keep_end {
        let mut start = text.len() - room;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        *text = format!("{marker}{}", &text[start..]);
    } else {
        let mut end = room;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        *text = format!("{}{}", &text[..end], marker.trim_end());
    }
}

impl Report {
    /// The report with every text field at most [`MAX_FIELD`] bytes long (see there).
    pub fn clipped(mut self) -> Report {
        for field in [&mut self.step, &mut self.message, &mut self.system].into_iter().flatten() {
            clip(field, false);
        }
        if let Some(tail) = &mut self.log_tail {
            clip(tail, true);
        }
        self
    }

    /// What makes a report unreadable whatever the state: the answer is 400.
    pub fn check(&self) -> Result<(), String> {
        if self.host.is_empty() || self.host.len() > 63 {
            return Err(format!("host \"{}\" is not a fleet host name", self.host.escape_default()));
        }
        if self.generation == 0 || self.attempt == 0 {
            return Err("generation and attempt count from 1".into());
        }
        if self.token.is_empty() || self.token.len() > 256 {
            return Err("token is empty or too long".into());
        }
        if self.boot_token.as_ref().is_some_and(|t| t.is_empty() || t.len() > 256) {
            return Err("boot_token is empty or too long".into());
        }
        if let Some(hash) = &self.boot_token_hash
            && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err("boot_token_hash is not a BLAKE3 hash (64 hexadecimal digits)".into());
        }
        match self.event {
            Event::Booted if self.system.is_none() => Err("a booted report carries the running system's path (system)".into()),
            _ => Ok(()),
        }
    }
}

/// A report the store took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The attempt's outcome after it.
    pub status: AttemptStatus,
}

/// A report the store refused, and why (for the log and the answer's body).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The token is not the attempt's (or no such attempt was handed out): 403.
    #[error("{0}")]
    WrongToken(String),
    /// The report did not come from an address serve saw the host's MACs with: 403.
    #[error("{0}")]
    WrongAddress(String),
    /// The attempt is not the host's latest: 409.
    #[error("{0}")]
    OldAttempt(String),
    /// The attempt ended already and the report would change how: 409.
    #[error("{0}")]
    Ended(String),
    /// The report cannot be read (see [`Report::check`]): 400.
    #[error("{0}")]
    Invalid(String),
    /// The store failed; the installer may try again: 500.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An attempt's outcome as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptStatus {
    Pending,
    Running,
    Failed,
    Installed,
    Replaced,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Pending => "pending",
            AttemptStatus::Running => "running",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Installed => "installed",
            AttemptStatus::Replaced => "replaced",
        }
    }

    pub fn parse(text: &str) -> Option<AttemptStatus> {
        [AttemptStatus::Pending, AttemptStatus::Running, AttemptStatus::Failed, AttemptStatus::Installed, AttemptStatus::Replaced]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// No report changes it any more.
    pub fn is_final(self) -> bool {
        matches!(self, AttemptStatus::Failed | AttemptStatus::Installed | AttemptStatus::Replaced)
    }
}

/// A host as [`Store::hosts`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub name: String,
    /// As serve last read them from the fleet (empty if it never did).
    pub macs: Vec<String>,
    /// The generation the fleet wanted when serve last read it.
    pub generation: Option<u32>,
    pub installed_generation: Option<u32>,
    pub confirmed: Option<super::decide::Confirmed>,
    pub reinstall_requested: bool,
    /// The newest attempt, of any generation.
    pub latest: Option<AttemptRecord>,
    /// Failed or abandoned attempts of the latest attempt's generation since its last install.
    pub failures: u32,
    pub last_report: Option<ReportRecord>,
}

/// One attempt, in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub generation: u32,
    pub number: u32,
    pub status: AttemptStatus,
    /// The last step reported (for `failed`, the step that failed).
    pub step: Option<String>,
    /// `failed`: the error.
    pub error: Option<String>,
    /// `installed`: the system installed.
    pub system: Option<String>,
    pub mac: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub handed_out_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Reports accepted for it.
    pub reports: u32,
}

/// One accepted report, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRecord {
    pub generation: u32,
    pub attempt: u32,
    pub event: Event,
    pub step: Option<String>,
    pub message: Option<String>,
    pub log_tail: Option<String>,
    pub system: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub received_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(event: Event) -> Report {
        Report {
            host: "web1".into(),
            generation: 1,
            attempt: 1,
            token: "t".into(),
            event,
            step: None,
            message: None,
            log_tail: None,
            system: None,
            boot_token_hash: None,
            boot_token: None,
        }
    }

    #[test]
    fn the_wire_form_is_the_clients() {
        let json = r#"{"host":"web1","generation":2,"attempt":1,"token":"abc","event":"failed","step":"disk","message":"no disk","log_tail":"a\nb","future":1}"#;
        let r: Report = serde_json::from_str(json).expect("parse");
        assert_eq!((r.event, r.step.as_deref(), r.log_tail.as_deref()), (Event::Failed, Some("disk"), Some("a\nb")));
        assert!(r.check().is_ok());
        assert!(!format!("{r:?}").contains("abc"), "the token never appears in a debug dump");
        assert!(serde_json::from_str::<Report>(r#"{"host":"web1","generation":1,"attempt":1,"token":"t","event":"exploded"}"#).is_err());
    }

    #[test]
    fn unreadable_reports_are_refused_before_any_state_is_read() {
        assert!(report(Event::Installed).check().is_ok());
        // A newer installer's extra field is ignored; a boot token hash must be one.
        let newer: Report = serde_json::from_str(r#"{"host":"web1","generation":1,"attempt":1,"token":"t","event":"installed","future":"x"}"#).expect("parse");
        assert!(newer.check().is_ok());
        let bad: Report = serde_json::from_str(r#"{"host":"web1","generation":1,"attempt":1,"token":"t","event":"installed","boot_token_hash":"x"}"#).expect("parse");
        assert!(bad.check().unwrap_err().contains("64 hexadecimal"));
        let good = Report { boot_token_hash: Some(crate::fleet::token::hash("b")), ..report(Event::Installed) };
        assert!(good.check().is_ok());
        assert!(!format!("{:?}", Report { boot_token: Some("secret-boot".into()), ..report(Event::Booted) }).contains("secret-boot"));
        assert!(report(Event::Booted).check().unwrap_err().contains("system"));
        // Long text is cut, not refused: the log tail keeps its end, the message its start.
        let mut r = report(Event::Failed);
        r.log_tail = Some(format!("{}the error", "é".repeat(MAX_FIELD)));
        r.message = Some(format!("the start{}", "x".repeat(MAX_FIELD)));
        assert!(r.check().is_ok());
        let r = r.clipped();
        let (tail, message) = (r.log_tail.unwrap_or_default(), r.message.unwrap_or_default());
        assert!(tail.len() <= MAX_FIELD && tail.starts_with("[...] ") && tail.ends_with("éthe error"), "{}", &tail[tail.len() - 20..]);
        assert!(message.len() <= MAX_FIELD && message.starts_with("the start") && message.ends_with("[...]"));
        let mut r = report(Event::Step);
        r.attempt = 0;
        assert!(r.check().is_err());
        r.attempt = 1;
        r.host = String::new();
        assert!(r.check().is_err());
    }
}
