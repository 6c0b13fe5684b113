//! Power control of a fleet host through its BMC: power on, off, cycle, read the state, and the
//! one-time network boot a reinstall needs. Redfish ([`redfish`], JSON over HTTPS with a pinned
//! certificate, [`tls`]) or IPMI ([`ipmi`], ipmitool through `crate::command`).
//!
//! Every operation is a list of [`Step`]s: a dry run prints each step's calls as the protocol
//! would make them ([`Bmc::describe`]), a real run makes them ([`run`]) and keeps each call with
//! the BMC's answer ([`Call`]), which the fleet's state records. A failed step ends the list:
//! nothing after it is sent.

pub mod ipmi;
pub mod redfish;
pub mod tls;

use crate::config::bmc::{BmcProtocol, BmcSpec, BootTarget};
use std::fmt;
use std::time::{Duration, Instant};

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PowerRequest {
    On,
    Off,
    /// Off and on again; a host that is off is powered on.
    Cycle,
    /// Read the power state only.
    Status,
}

impl PowerRequest {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerRequest::On => "on",
            PowerRequest::Off => "off",
            PowerRequest::Cycle => "cycle",
            PowerRequest::Status => "status",
        }
    }
}

/// A host's power as its BMC reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    /// Anything else (Redfish's PoweringOn, PoweringOff, Paused).
    Other(String),
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerState::On => f.write_str("on"),
            PowerState::Off => f.write_str("off"),
            PowerState::Other(s) => f.write_str(s),
        }
    }
}

/// The boot override as the BMC reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOverride {
    /// Redfish `BootSourceOverrideTarget` (`Pxe`), IPMI's boot device (`Force PXE`).
    pub target: String,
    /// Redfish `BootSourceOverrideEnabled` (`Once`, `Continuous`), IPMI's "next boot only".
    pub once: bool,
    pub enabled: String,
}

/// The reset a power request becomes, given the state the host is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    On,
    ForceOff,
    /// A running host restarted (Redfish ForceRestart, IPMI power cycle).
    Restart,
}

/// One step of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Find the host's system on the BMC (Redfish: the Systems collection, or the system named by
    /// bmc.systemId) and read its power state. Also what proves the BMC answers and takes the
    /// credentials, before anything is changed.
    ReadState,
    /// Ask for a one-time boot from the network, then read it back.
    BootOnce(BootTarget),
    /// Power the host on (off), off, or restart it (on) / on (off): decided from the state read.
    Power(PowerRequest),
    /// Wait until the power state is what the step before asked for.
    WaitForState,
}

/// One call made to the BMC, and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `GET https://10.0.0.5/redfish/v1/Systems`, `ipmitool ... chassis power status`.
    pub request: String,
    /// `200 {"PowerState": "On"}`, `Chassis Power is on`, or the error.
    pub answer: String,
}

/// What a real run found out, step by step.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub before: Option<PowerState>,
    pub boot: Option<BootOverride>,
    pub reset: Option<Reset>,
    pub after: Option<PowerState>,
}

/// How long to wait for a power change to show (BMCs apply them in seconds; sushy-tools' fake
/// driver in 1 to 11).
pub const POWER_WAIT: Duration = Duration::from_secs(60);

/// A BMC that cannot do what was asked: the host, the BMC, and what happened.
#[derive(Debug, thiserror::Error)]
#[error("{host}: {bmc} {kind}")]
pub struct BmcError {
    pub host: String,
    pub bmc: String,
    pub kind: Box<BmcErrorKind>,
}

#[derive(Debug, thiserror::Error)]
pub enum BmcErrorKind {
    #[error("did not answer: {0}")]
    Unreachable(String),
    #[error("refused the credentials of user \"{user}\" ({detail}): check bmc.user and the password in {password_file}")]
    Credentials { user: String, password_file: String, detail: String },
    #[error("answered {request} with a Redfish error: {detail}")]
    Redfish { request: String, detail: String },
    #[error("is not the BMC configured: {0}")]
    Certificate(String),
    #[error("did not take the one-time boot override: asked for {wanted}, it reads back {got}; nothing was reset")]
    OverrideNotTaken { wanted: String, got: String },
    #[error("stayed {got} for {seconds} s after {reset} (wanted {wanted})")]
    StateNotReached { wanted: String, got: String, reset: String, seconds: u64 },
    #[error("answered something this program cannot read: {0}")]
    Protocol(String),
    #[error("cannot be used: {0}")]
    Setup(String),
}

/// A BMC, whatever its protocol.
pub trait Bmc {
    /// The calls `step` makes, as a dry run prints them.
    fn describe(&self, step: Step) -> Vec<String>;
    fn power_state(&mut self) -> Result<PowerState, BmcErrorKind>;
    fn boot_once(&mut self, target: BootTarget) -> Result<BootOverride, BmcErrorKind>;
    fn reset(&mut self, reset: Reset) -> Result<(), BmcErrorKind>;
    /// Every call made so far, with its answer.
    fn calls(&self) -> &[Call];
}

/// Opens the BMC of `host` (reads the password file; for Redfish, the certificate file).
pub fn connect(host: &str, spec: &BmcSpec, uefi: bool) -> Result<Box<dyn Bmc>, BmcError> {
    let fail = |kind| BmcError { host: host.to_string(), bmc: spec.describe(), kind: Box::new(kind) };
    let password = read_password(&spec.password_file).map_err(|e| fail(BmcErrorKind::Setup(e)))?;
    Ok(match spec.protocol {
        BmcProtocol::Redfish => Box::new(redfish::Redfish::new(host, spec, password).map_err(fail)?),
        BmcProtocol::Ipmi => Box::new(ipmi::Ipmi::new(spec, password, uefi)),
    })
}

/// The calls `steps` would make, without reading any secret or sending anything.
pub fn describe(spec: &BmcSpec, steps: &[Step], uefi: bool) -> Vec<String> {
    let bmc: Box<dyn Bmc> = match spec.protocol {
        BmcProtocol::Redfish => Box::new(redfish::Redfish::offline(spec)),
        BmcProtocol::Ipmi => Box::new(ipmi::Ipmi::new(spec, String::new(), uefi)),
    };
    steps.iter().flat_map(|s| bmc.describe(*s)).collect()
}

/// The password: the file's first line (a trailing newline is not part of it).
pub fn read_password(file: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read the password file {file}: {e}"))?;
    let password = text.lines().next().unwrap_or_default().to_string();
    if password.is_empty() {
        return Err(format!("the password file {file} is empty"));
    }
    Ok(password)
}

/// The reset that makes `request` true from `state`: `None` when there is nothing to do.
pub fn reset_for(request: PowerRequest, state: &PowerState) -> Option<Reset> {
    match (request, state) {
        (PowerRequest::Status, _) | (PowerRequest::On, PowerState::On) | (PowerRequest::Off, PowerState::Off) => None,
        (PowerRequest::On, _) | (PowerRequest::Cycle, PowerState::Off) => Some(Reset::On),
        (PowerRequest::Off, _) => Some(Reset::ForceOff),
        (PowerRequest::Cycle, _) => Some(Reset::Restart),
    }
}

/// Runs `steps` on `bmc` in order; `before_power` runs between the boot override and the reset
/// (a reinstall is marked there, once the BMC is known to answer and to have taken the
/// override). Stops at the first failure: what was found until then, and the failure.
pub fn run(bmc: &mut dyn Bmc, steps: &[Step], before_power: &mut dyn FnMut() -> Result<(), String>) -> (Findings, Option<BmcErrorKind>) {
    let mut found = Findings::default();
    for step in steps {
        let result = match *step {
            Step::ReadState => bmc.power_state().map(|s| found.before = Some(s)),
            Step::BootOnce(target) => bmc.boot_once(target).map(|b| found.boot = Some(b)),
            Step::Power(request) => {
                if let Err(why) = before_power() {
                    return (found, Some(BmcErrorKind::Setup(why)));
                }
                let reset = found.before.as_ref().and_then(|s| reset_for(request, s));
                found.reset = reset;
                match reset {
                    Some(r) => bmc.reset(r),
                    None => Ok(()),
                }
            }
            Step::WaitForState => match found.reset {
                None => Ok(()),
                Some(reset) => wait_for(bmc, reset, POWER_WAIT).map(|s| found.after = Some(s)),
            },
        };
        if let Err(e) = result {
            return (found, Some(e));
        }
    }
    (found, None)
}

/// Reads the power state once a second until it is what `reset` leads to, for at most `limit`.
fn wait_for(bmc: &mut dyn Bmc, reset: Reset, limit: Duration) -> Result<PowerState, BmcErrorKind> {
    let wanted = if reset == Reset::ForceOff { PowerState::Off } else { PowerState::On };
    let start = Instant::now();
    loop {
        let state = bmc.power_state()?;
        if state == wanted {
            return Ok(state);
        }
        if start.elapsed() >= limit {
            return Err(BmcErrorKind::StateNotReached {
                wanted: wanted.to_string(),
                got: state.to_string(),
                reset: format!("{reset:?}"),
                seconds: limit.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The steps of each command.
pub fn steps_for(request: PowerRequest) -> Vec<Step> {
    match request {
        PowerRequest::Status => vec![Step::ReadState],
        other => vec![Step::ReadState, Step::Power(other), Step::WaitForState],
    }
}

/// A reinstall's or an apply's: the one-time network boot, then on (off) or a restart (on).
pub fn network_boot_steps(target: BootTarget) -> Vec<Step> {
    vec![Step::ReadState, Step::BootOnce(target), Step::Power(PowerRequest::Cycle), Step::WaitForState]
}

/// Retries with backoff: `attempt` 0, 1, 2 wait 0.5, 1, 2 s before the next try.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 << attempt.min(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_becomes_the_reset_its_state_needs() {
        assert_eq!(reset_for(PowerRequest::Cycle, &PowerState::On), Some(Reset::Restart));
        assert_eq!(reset_for(PowerRequest::Cycle, &PowerState::Off), Some(Reset::On), "a cycle of a host that is off powers it on");
        assert_eq!(reset_for(PowerRequest::On, &PowerState::On), None);
        assert_eq!(reset_for(PowerRequest::On, &PowerState::Other("PoweringOff".into())), Some(Reset::On));
        assert_eq!(reset_for(PowerRequest::Off, &PowerState::Off), None);
        assert_eq!(reset_for(PowerRequest::Off, &PowerState::On), Some(Reset::ForceOff));
        assert_eq!(reset_for(PowerRequest::Status, &PowerState::On), None);
        assert_eq!((backoff(0), backoff(2)), (Duration::from_millis(500), Duration::from_secs(2)));
    }

    #[test]
    fn a_password_is_the_files_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").expect("write");
        assert_eq!(read_password(file.to_str().expect("utf8")), Ok("s3cret".into()));
        std::fs::write(&file, "\n").expect("write");
        assert!(read_password(file.to_str().expect("utf8")).unwrap_err().contains("is empty"));
        assert!(read_password("/nonexistent/pw").unwrap_err().contains("cannot read the password file /nonexistent/pw"));
    }
}
