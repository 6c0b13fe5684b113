//! The decision for a machine that PXE-boots: install, boot from its disk, or hold. A pure
//! function of what the fleet wants ([`HostSpec`]) and what happened to the host ([`HostState`],
//! kept by serve's store); no I/O, no clock.

use crate::config::fleet::{HostSpec, UnknownHosts};

/// What happened to one host, as the store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// The newest generation an install reported `installed` for.
    pub installed_generation: Option<u32>,
    /// The installed system reported `booted`.
    pub confirmed: Option<Confirmed>,
    /// The attempts at the desired generation, oldest first.
    pub attempts: Vec<AttemptSummary>,
    /// `nixos-pxe fleet reinstall HOST`: install again although the generation is installed.
    /// The store clears it when an attempt made after the request reports `installed`.
    pub reinstall_requested: bool,
}

/// The installed system booted and said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub generation: u32,
    /// The running system's store path (`readlink -f /run/current-system`).
    pub system: String,
}

/// One install attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSummary {
    /// 1, 2, ... within the generation.
    pub number: u32,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The configuration was handed out; the installer has not reported yet.
    Pending,
    /// The installer reported it started (and maybe steps); not finished.
    Running,
    Failed { step: String, error: String },
    Installed,
    /// Handed out and never started: serve restarted before the installer reported, and the
    /// attempt's plain token (kept only in memory) was lost with it, so a new attempt was handed
    /// out in its place; or the machine booted its disk instead (the completion stamp of an
    /// earlier attempt whose `installed` report was lost) and that attempt's `booted` report
    /// arrived. Not a failure, so it does not count towards `max_attempts`; its number is not
    /// reused.
    Replaced,
}

/// What the machine gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Boot the installer; `attempt` numbers it within the generation. Its entry first looks for
    /// the host's completion stamp on the disks and boots the disk that has it: an install whose
    /// `installed` report was lost is not done twice.
    Install { attempt: u32 },
    /// Boot the installer over a generation the store knows as installed (`nixos-pxe fleet
    /// reinstall`, or a reinstall under way): the disk's completion stamp is the old install's,
    /// so this entry must not look for it (it would boot the disk and undo the request).
    Reinstall { attempt: u32 },
    /// Boot from the local disk (or let the firmware go on); `why` says why, for the console.
    LocalBoot { why: String },
    /// Neither: a menu that says `why` and waits.
    Hold { why: String },
}

impl Decision {
    /// The attempt an install or reinstall hands out.
    pub fn attempt(&self) -> Option<u32> {
        match self {
            Decision::Install { attempt } | Decision::Reinstall { attempt } => Some(*attempt),
            Decision::LocalBoot { .. } | Decision::Hold { .. } => None,
        }
    }
}

/// The decision for a machine: `spec` is the host its MAC belongs to (`None`: not in the
/// fleet), `state` what happened to that host, `unknown` what strangers get.
///
/// - A stranger gets local boot or hold, by `fleet.unknownHosts`; never an install.
/// - An attempt handed out and not started (`Pending`) is handed out again with the same
///   number: fetching the configuration twice does not burn an attempt.
/// - A host whose generation is installed (or newer: lowering `generation` never reinstalls)
///   boots locally, confirmed or not, unless a reinstall was requested or a reinstall is under
///   way (attempts after the last `Installed` one: the disk may be half written).
/// - Otherwise the attempts since the last `Installed` one count: each `Failed` one and each
///   `Running` one (the machine booted from the network again, so that install was abandoned).
///   When they reach `max_attempts` the host is held, with the last failure and what to do.
/// - Otherwise the next attempt: one more than the highest number so far.
///
/// An install of a generation the store knows as installed is a [`Decision::Reinstall`] (see
/// there); attempts `Replaced` (never started) count as none when deciding whether a reinstall
/// is under way.
pub fn decide(spec: Option<&HostSpec>, state: &HostState, unknown: UnknownHosts) -> Decision {
    let Some(spec) = spec else {
        return match unknown {
            UnknownHosts::LocalBoot => Decision::LocalBoot { why: "not in the fleet (fleet.unknownHosts = \"local-boot\")".into() },
            UnknownHosts::Hold => Decision::Hold {
                why: "not in the fleet (fleet.unknownHosts = \"hold\"): add its MAC to fleet.hosts.<name>.macs to install it".into(),
            },
        };
    };
    let last_installed = state.attempts.iter().filter(|a| a.outcome == Outcome::Installed).map(|a| a.number).max();
    // The attempts of the current series: since the last one that installed.
    // Attempts replaced before they started (their token lost, or a `booted` report showed that
    // an earlier attempt had finished) are no part of it.
    let series: Vec<&AttemptSummary> =
        state.attempts.iter().filter(|a| last_installed.is_none_or(|n| a.number > n) && a.outcome != Outcome::Replaced).collect();
    let installed = [state.installed_generation, state.confirmed.as_ref().map(|c| c.generation)].into_iter().flatten().max();
    let installed = installed.is_some_and(|g| g >= spec.generation) || last_installed.is_some();
    let install = |attempt| if installed { Decision::Reinstall { attempt } } else { Decision::Install { attempt } };
    if let Some(pending) = series.iter().rev().find(|a| a.outcome == Outcome::Pending) {
        return install(pending.number);
    }
    if installed && !state.reinstall_requested && series.is_empty() {
        let generation = state.installed_generation.unwrap_or(spec.generation).max(spec.generation);
        let why = match &state.confirmed {
            Some(c) if c.generation >= spec.generation => format!("{} generation {} is installed and booted ({})", spec.name, c.generation, c.system),
            _ => format!("{} generation {generation} is installed (its first boot has not reported yet)", spec.name),
        };
        return Decision::LocalBoot { why };
    }
    let failed: Vec<&&AttemptSummary> = series.iter().filter(|a| matches!(a.outcome, Outcome::Failed { .. } | Outcome::Running)).collect();
    if failed.len() as u64 >= u64::from(spec.max_attempts) {
        let last = match failed.last().map(|a| (&a.outcome, a.number)) {
            Some((Outcome::Failed { step, error }, n)) => format!("attempt {n}: step {step}: {error}"),
            Some((_, n)) => format!("attempt {n} was abandoned (the machine booted from the network again during the install)"),
            None => "none".into(),
        };
        return Decision::Hold {
            why: format!(
                "{} attempts at {} generation {} failed; last: {last}. Fix it and bump fleet.hosts.{}.generation, or run `nixos-pxe fleet reinstall {}`",
                failed.len(),
                spec.name,
                spec.generation,
                spec.name,
                spec.name
            ),
        };
    }
    let next = state.attempts.iter().map(|a| a.number).max().unwrap_or(0) + 1;
    install(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fleet::Fleet;

    fn spec(generation: u32, max_attempts: u32) -> HostSpec {
        let config = crate::config::resolve(&Default::default(), camino::Utf8Path::new("t.nix")).expect("defaults").config;
        HostSpec {
            name: "web1".into(),
            macs: vec!["52:54:00:00:00:a1".parse().expect("mac")],
            generation,
            max_attempts,
            install: config.custom_installer,
            image: None,
            bmc: None,
        }
    }

    fn attempt(number: u32, outcome: Outcome) -> AttemptSummary {
        AttemptSummary { number, outcome }
    }

    fn failed(number: u32) -> AttemptSummary {
        attempt(number, Outcome::Failed { step: "disk".into(), error: format!("error {number}") })
    }

    fn state(installed: Option<u32>, attempts: Vec<AttemptSummary>) -> HostState {
        HostState { installed_generation: installed, attempts, ..HostState::default() }
    }

    fn install(n: u32) -> Decision {
        Decision::Install { attempt: n }
    }

    fn reinstall(n: u32) -> Decision {
        Decision::Reinstall { attempt: n }
    }

    fn is_local(d: &Decision) -> bool {
        matches!(d, Decision::LocalBoot { .. })
    }

    #[test]
    fn an_unknown_mac_is_never_installed() {
        // Whatever the state says (a store keyed by host never has one for a stranger; the
        // decision must not depend on it anyway).
        for state in [HostState::default(), state(None, vec![attempt(1, Outcome::Pending)])] {
            let local = decide(None, &state, UnknownHosts::LocalBoot);
            assert!(matches!(&local, Decision::LocalBoot { why } if why.contains("not in the fleet")), "{local:?}");
            let hold = decide(None, &state, UnknownHosts::Hold);
            assert!(matches!(&hold, Decision::Hold { why } if why.contains("fleet.hosts.<name>.macs")), "{hold:?}");
        }
    }

    #[test]
    fn a_new_host_gets_attempt_one() {
        assert_eq!(decide(Some(&spec(1, 3)), &HostState::default(), UnknownHosts::Hold), install(1));
    }

    #[test]
    fn a_pending_attempt_is_handed_out_again_without_burning_one() {
        let s = state(None, vec![failed(1), attempt(2, Outcome::Pending)]);
        assert_eq!(decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot), install(2));
        // Even when the failures before it already reach the limit: it was handed out.
        let s = state(None, vec![failed(1), failed(2), failed(3), attempt(4, Outcome::Pending)]);
        assert_eq!(decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot), install(4));
    }

    #[test]
    fn a_replaced_attempt_is_neither_reused_nor_counted_as_a_failure() {
        // Attempt 2 was handed out, serve restarted and lost its token: attempt 3 replaced it.
        let s = state(None, vec![failed(1), attempt(2, Outcome::Replaced), attempt(3, Outcome::Pending)]);
        assert_eq!(decide(Some(&spec(1, 2)), &s, UnknownHosts::LocalBoot), install(3));
        let s = state(None, vec![failed(1), attempt(2, Outcome::Replaced)]);
        assert_eq!(decide(Some(&spec(1, 2)), &s, UnknownHosts::LocalBoot), install(3), "one failure of two allowed; 2 is not reused");
    }

    #[test]
    fn a_running_attempt_that_boots_from_the_network_again_was_abandoned() {
        let s = state(None, vec![attempt(1, Outcome::Running)]);
        assert_eq!(decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot), install(2));
        let s = state(None, vec![attempt(1, Outcome::Running), attempt(2, Outcome::Running), attempt(3, Outcome::Running)]);
        let d = decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot);
        assert!(matches!(&d, Decision::Hold { why } if why.contains("last: attempt 3 was abandoned")), "{d:?}");
    }

    #[test]
    fn failures_below_the_limit_retry_and_at_the_limit_hold_with_the_last_error() {
        assert_eq!(decide(Some(&spec(1, 3)), &state(None, vec![failed(1), failed(2)]), UnknownHosts::LocalBoot), install(3));
        let d = decide(Some(&spec(2, 3)), &state(Some(1), vec![failed(1), attempt(2, Outcome::Running), failed(3)]), UnknownHosts::LocalBoot);
        let Decision::Hold { why } = d else { panic!("{d:?}") };
        assert_eq!(
            why,
            "3 attempts at web1 generation 2 failed; last: attempt 3: step disk: error 3. Fix it and bump fleet.hosts.web1.generation, or run `nixos-pxe fleet reinstall web1`"
        );
        // maxAttempts = 1: the first failure holds.
        assert!(matches!(decide(Some(&spec(1, 1)), &state(None, vec![failed(1)]), UnknownHosts::LocalBoot), Decision::Hold { .. }));
    }

    #[test]
    fn an_installed_generation_boots_locally_confirmed_or_not() {
        let unconfirmed = state(Some(1), vec![attempt(1, Outcome::Installed)]);
        let d = decide(Some(&spec(1, 3)), &unconfirmed, UnknownHosts::Hold);
        assert!(matches!(&d, Decision::LocalBoot { why } if why == "web1 generation 1 is installed (its first boot has not reported yet)"), "{d:?}");
        let confirmed = HostState { confirmed: Some(Confirmed { generation: 1, system: "/nix/store/abc-nixos".into() }), ..unconfirmed.clone() };
        let d = decide(Some(&spec(1, 3)), &confirmed, UnknownHosts::Hold);
        assert!(matches!(&d, Decision::LocalBoot { why } if why.contains("installed and booted (/nix/store/abc-nixos)")), "{d:?}");
        // Installed after failures: the failures no longer count.
        let s = state(Some(1), vec![failed(1), failed(2), attempt(3, Outcome::Installed)]);
        assert!(is_local(&decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot)));
        // The store lost the attempts (or never kept them): the installed generation decides.
        assert!(is_local(&decide(Some(&spec(1, 3)), &state(Some(1), vec![]), UnknownHosts::LocalBoot)));
        // An Installed attempt whose generation the store did not record still counts.
        assert!(is_local(&decide(Some(&spec(1, 3)), &state(None, vec![attempt(1, Outcome::Installed)]), UnknownHosts::LocalBoot)));
    }

    #[test]
    fn a_newer_generation_installs_and_an_older_one_never_does() {
        // The attempts are those of the desired generation: none yet for generation 2.
        assert_eq!(decide(Some(&spec(2, 3)), &state(Some(1), vec![]), UnknownHosts::LocalBoot), install(1));
        assert!(is_local(&decide(Some(&spec(1, 3)), &state(Some(2), vec![]), UnknownHosts::LocalBoot)));
        let confirmed_newer = HostState { confirmed: Some(Confirmed { generation: 3, system: "/s".into() }), ..HostState::default() };
        assert!(is_local(&decide(Some(&spec(2, 3)), &confirmed_newer, UnknownHosts::LocalBoot)));
    }

    #[test]
    fn a_requested_reinstall_installs_again_with_a_fresh_budget() {
        let mut s = state(Some(1), vec![failed(1), failed(2), attempt(3, Outcome::Installed)]);
        s.reinstall_requested = true;
        assert_eq!(decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot), reinstall(4));
        s.attempts.push(attempt(4, Outcome::Pending));
        assert_eq!(decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot), reinstall(4));
        s.attempts[3] = failed(4);
        s.attempts.extend([failed(5), failed(6)]);
        assert!(matches!(decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot), Decision::Hold { .. }));
    }

    #[test]
    fn a_reinstall_under_way_continues_even_after_the_request_is_cleared() {
        // Generation 1 installed, a reinstall started and the machine rebooted in the middle:
        // its disk is half written, so it must not be sent to it.
        let s = state(Some(1), vec![attempt(1, Outcome::Installed), attempt(2, Outcome::Running)]);
        assert_eq!(decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot), reinstall(3));
        let s = state(Some(1), vec![attempt(1, Outcome::Installed), attempt(2, Outcome::Pending)]);
        assert_eq!(decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot), reinstall(2));
    }

    /// The install entry boots a disk that has the host's completion stamp: right for a first
    /// install whose `installed` report was lost, wrong for a reinstall of the same generation
    /// (the stamp is the old install's). Only what the store knows tells them apart.
    #[test]
    fn an_install_over_an_installed_generation_is_a_reinstall() {
        // Not known as installed: an install (whose entry may find an unreported install's stamp).
        assert_eq!(decide(Some(&spec(1, 3)), &state(None, vec![attempt(1, Outcome::Running)]), UnknownHosts::LocalBoot), install(2));
        assert_eq!(decide(Some(&spec(2, 3)), &state(Some(1), vec![]), UnknownHosts::LocalBoot), install(1));
        // Known as installed (by the generation, an Installed attempt, or a confirmation): a reinstall.
        let mut requested = state(Some(1), vec![attempt(1, Outcome::Installed)]);
        requested.reinstall_requested = true;
        assert_eq!(decide(Some(&spec(1, 3)), &requested, UnknownHosts::LocalBoot), reinstall(2));
        let mut by_generation_only = state(Some(1), vec![]);
        by_generation_only.reinstall_requested = true;
        assert_eq!(decide(Some(&spec(1, 3)), &by_generation_only, UnknownHosts::LocalBoot), reinstall(1));
        let confirmed = HostState {
            confirmed: Some(Confirmed { generation: 1, system: "/s".into() }),
            reinstall_requested: true,
            ..HostState::default()
        };
        assert_eq!(decide(Some(&spec(1, 3)), &confirmed, UnknownHosts::LocalBoot), reinstall(1));
        assert_eq!(reinstall(7).attempt(), Some(7));
        assert_eq!(Decision::Hold { why: String::new() }.attempt(), None);
    }

    #[test]
    fn an_attempt_replaced_because_an_earlier_one_booted_leaves_the_host_installed() {
        // Attempt 1's `installed` was lost; attempt 2 was handed out, the machine booted its disk
        // by the stamp instead, and attempt 1's `booted` report made 1 installed and 2 replaced.
        let s = state(Some(1), vec![attempt(1, Outcome::Installed), attempt(2, Outcome::Replaced)]);
        assert!(is_local(&decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot)), "{:?}", decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot));
        let mut s = s;
        s.reinstall_requested = true;
        assert_eq!(decide(Some(&spec(1, 3)), &s, UnknownHosts::LocalBoot), reinstall(3), "2 is not reused");
    }

    #[test]
    fn every_state_class_gets_a_decision_that_never_installs_a_stranger() {
        // Every combination of the state's parts, for a host and for a stranger.
        let outcomes = || vec![Outcome::Pending, Outcome::Running, Outcome::Installed, Outcome::Failed { step: "s".into(), error: "e".into() }, Outcome::Replaced];
        let mut histories: Vec<Vec<AttemptSummary>> = vec![vec![]];
        for a in outcomes() {
            histories.push(vec![attempt(1, a.clone())]);
            for b in outcomes() {
                histories.push(vec![attempt(1, a.clone()), attempt(2, b)]);
            }
        }
        let fleet = Fleet { hosts: vec![spec(2, 2)], max_attempts: 2, unknown_hosts: UnknownHosts::Hold, trust_boot_network: false };
        for attempts in &histories {
            for installed in [None, Some(1), Some(2), Some(3)] {
                for reinstall in [false, true] {
                    let s = HostState { installed_generation: installed, attempts: attempts.clone(), reinstall_requested: reinstall, confirmed: None };
                    let stranger = decide(fleet.host_by_mac(&"52:54:00:00:00:ff".parse().expect("mac")), &s, fleet.unknown_hosts);
                    assert!(matches!(stranger, Decision::Hold { .. }), "{s:?}");
                    let d = decide(fleet.host("web1"), &s, fleet.unknown_hosts);
                    // A reinstall exactly when the store knows the generation as installed:
                    // only then may the install entry not trust the disk's completion stamp.
                    let known = installed.is_some_and(|g| g >= 2) || attempts.iter().any(|a| a.outcome == Outcome::Installed);
                    assert_eq!(matches!(d, Decision::Reinstall { .. }), known && d.attempt().is_some(), "{s:?} -> {d:?}");
                    if let Some(attempt) = d.attempt() {
                        // A new number, or the pending one's: never one that failed or ran.
                        let reused = attempts.iter().find(|a| a.number == attempt);
                        assert!(reused.is_none_or(|a| a.outcome == Outcome::Pending), "{s:?} -> {d:?}");
                    }
                }
            }
        }
    }
}
