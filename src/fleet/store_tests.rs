//! One suite of tests for every [`Store`]: each test below runs against SQLite (a file in a
//! temporary directory) and PostgreSQL (a fresh database on a throwaway server this test binary
//! starts, see [`super::pg_cluster`]), so that the rules of [`super::store`] hold for both.

use super::decide::{Confirmed, Decision, HostState, Outcome, decide};
use super::store::{AttemptStatus, Event, FleetHost, HandOut, HandedOut, Refused, Report, Store};
use super::token;
use crate::config::fleet::{HostSpec, Mac, UnknownHosts};
use std::net::Ipv4Addr;
use std::sync::Arc;

pub const MAC: Mac = Mac::new([0x52, 0x54, 0, 0, 0, 0xa1]);

/// Where a test's store lives; [`Place::open`] opens it again (a restart of serve).
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Place {
    pub fn sqlite() -> Place {
        Place::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    pub fn postgres() -> Place {
        let cluster = super::pg_cluster::Cluster::shared();
        Place::Postgres(cluster.fresh_database("suite").unwrap_or_else(|e| panic!("{e}")))
    }

    pub fn open(&self) -> Arc<dyn Store> {
        match self {
            Place::Sqlite(dir) => Arc::new(super::sqlite::SqliteStore::open(dir.path()).expect("open")),
            Place::Postgres(url) => Arc::new(super::postgres::PostgresStore::open(url, None).expect("open")),
        }
    }
}

pub fn hand_out(store: &dyn Store, host: &str, generation: u32, attempt: u32, replaces: Option<u32>) -> (HandedOut, String) {
    let token = token::random().expect("random");
    let out = HandOut { host: host.into(), generation, attempt, token_hash: token::hash(&token), mac: MAC, replaces };
    (store.hand_out(&out).expect("hand out"), token)
}

pub fn report(host: &str, generation: u32, attempt: u32, token: &str, event: Event) -> Report {
    Report {
        host: host.into(),
        generation,
        attempt,
        token: token.into(),
        event,
        step: None,
        message: None,
        log_tail: None,
        system: None,
        boot_token_hash: None,
        boot_token: None,
    }
}

pub fn outcomes(state: &HostState) -> Vec<(u32, Outcome)> {
    state.attempts.iter().map(|a| (a.number, a.outcome.clone())).collect()
}

pub fn spec(generation: u32, max_attempts: u32) -> HostSpec {
    let config = crate::config::resolve(&Default::default(), camino::Utf8Path::new("t.nix")).expect("defaults").config;
    HostSpec { name: "web1".into(), macs: vec![MAC], generation, max_attempts, install: config.custom_installer, image: None }
}

/// The attempt's hand-out time, as both stores keep it.
pub fn the_hand_out_time_is_kept(place: &Place) {
    let store = place.open();
    assert_eq!(store.handed_out_at("web1", 1, 1).expect("read"), None);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    hand_out(store.as_ref(), "web1", 1, 1, None);
    let at = store.handed_out_at("web1", 1, 1).expect("read").expect("handed out");
    assert!(at >= before && at < before + 60_000, "{at} vs {before}");
}

pub fn an_install_goes_pending_running_installed_confirmed(place: &Place) {
    let store = place.open();
    let (created, token) = hand_out(&*store, "web1", 2, 1, None);
    assert_eq!(created, HandedOut::Created);
    assert_eq!(outcomes(&store.host("web1", 2).expect("host")), vec![(1, Outcome::Pending)]);
    assert_eq!(store.report(&report("web1", 2, 1, &token, Event::Started)).expect("started").status, AttemptStatus::Running);
    let step = Report { step: Some("partition".into()), ..report("web1", 2, 1, &token, Event::Step) };
    assert_eq!(store.report(&step).expect("step").status, AttemptStatus::Running);
    let installed = Report { system: Some("/nix/store/abc-nixos-system".into()), ..report("web1", 2, 1, &token, Event::Installed) };
    assert_eq!(store.report(&installed).expect("installed").status, AttemptStatus::Installed);
    // A retry of the same report whose answer was lost: taken again, nothing changes.
    assert_eq!(store.report(&installed).expect("again").status, AttemptStatus::Installed);
    let state = store.host("web1", 2).expect("host");
    assert_eq!((state.installed_generation, state.confirmed.clone()), (Some(2), None));
    // booted: with the attempt's token (the installer left it on the disk), no other.
    let booted = Report { system: Some("/nix/store/abc-nixos-system".into()), ..report("web1", 2, 1, &token::random().expect("random"), Event::Booted) };
    assert!(matches!(store.report(&booted), Err(Refused::WrongToken(_))));
    let booted = Report { token: token.clone(), ..booted };
    assert_eq!(store.report(&booted).expect("booted").status, AttemptStatus::Installed);
    let state = store.host("web1", 2).expect("host");
    assert_eq!(state.confirmed, Some(Confirmed { generation: 2, system: "/nix/store/abc-nixos-system".into() }));
    assert!(matches!(decide(Some(&spec(2, 3)), &state, UnknownHosts::Hold), Decision::LocalBoot { .. }));
    // The history holds every accepted report, in order.
    let events: Vec<Event> = store.history("web1").expect("history").iter().map(|r| r.event).collect();
    assert_eq!(events, vec![Event::Started, Event::Step, Event::Installed, Event::Installed, Event::Booted]);
    let record = &store.hosts().expect("hosts")[0];
    let latest = record.latest.as_ref().expect("latest");
    assert_eq!((latest.status, latest.step.as_deref(), latest.reports), (AttemptStatus::Installed, Some("partition"), 5));
    assert!(latest.finished_at.is_some() && latest.started_at.is_some());
    assert_eq!(record.last_report.as_ref().map(|r| r.event), Some(Event::Booted));
}

/// The installer's `installed` report was lost: serve saw attempt 1 start and no more. The
/// machine PXE-booted again (attempt 2 handed out), found its completion stamp and booted
/// its disk; the installed system's `booted` report, with attempt 1's token, records the
/// install and its confirmation in one step, and attempt 2, never started, is replaced.
pub fn booted_records_an_install_whose_installed_report_was_lost(place: &Place) {
    let store = place.open();
    let (_, first) = hand_out(&*store, "web1", 1, 1, None);
    store.report(&report("web1", 1, 1, &first, Event::Started)).expect("started");
    store.report(&Report { step: Some("finish".into()), ..report("web1", 1, 1, &first, Event::Step) }).expect("step");
    let system = "/nix/store/abc-nixos-system-web1";
    let booted = Report { system: Some(system.into()), ..report("web1", 1, 1, &first, Event::Booted) };
    // Not with a made-up token.
    assert!(matches!(store.report(&Report { token: token::random().expect("random"), ..booted.clone() }), Err(Refused::WrongToken(_))));
    // With the attempt's own token, while it is the host's latest: installed and confirmed.
    assert_eq!(store.report(&booted).expect("booted").status, AttemptStatus::Installed);
    let state = store.host("web1", 1).expect("host");
    assert_eq!(outcomes(&state), vec![(1, Outcome::Installed)]);
    assert_eq!((state.installed_generation, state.confirmed.clone()), (Some(1), Some(Confirmed { generation: 1, system: system.into() })));
    assert!(matches!(decide(Some(&spec(1, 3)), &state, UnknownHosts::Hold), Decision::LocalBoot { .. }), "{state:?}");
    let record = &store.hosts().expect("hosts")[0];
    let latest = record.latest.as_ref().expect("latest");
    assert_eq!((latest.number, latest.status, latest.system.as_deref()), (1, AttemptStatus::Installed, Some(system)));
    // The retried `booted` changes nothing.
    assert_eq!(store.report(&booted).expect("again").status, AttemptStatus::Installed);
    let events: Vec<(u32, Event)> = store.history("web1").expect("history").iter().map(|r| (r.attempt, r.event)).collect();
    assert_eq!(events, vec![(1, Event::Started), (1, Event::Step), (1, Event::Booted), (1, Event::Booted)]);
}

/// Issue 18: an old attempt's token changes nothing. gamma booted again mid-install
/// (attempt 2 handed out): `booted` with attempt 1's token is 409 and the state unchanged;
/// during a requested reinstall, attempt 1's `booted` neither confirms nor cancels it.
pub fn an_old_attempts_token_changes_nothing_booted_included(place: &Place) {
    let store = place.open();
    let (_, first) = hand_out(&*store, "gamma", 1, 1, None);
    store.report(&report("gamma", 1, 1, &first, Event::Started)).expect("started");
    let (_, second) = hand_out(&*store, "gamma", 1, 2, None);
    let booted = Report { system: Some("/nix/store/made-up".into()), ..report("gamma", 1, 1, &first, Event::Booted) };
    assert!(matches!(store.report(&booted), Err(Refused::OldAttempt(_))), "{:?}", store.report(&booted));
    let state = store.host("gamma", 1).expect("host");
    assert_eq!(outcomes(&state), vec![(1, Outcome::Running), (2, Outcome::Pending)]);
    assert_eq!((state.installed_generation, state.confirmed), (None, None));
    // The real installer of attempt 2 goes on.
    assert_eq!(store.report(&report("gamma", 1, 2, &second, Event::Started)).expect("started").status, AttemptStatus::Running);

    // alpha: installed and confirmed by attempt 1 (with its boot token), then reinstalled.
    let (_, first) = hand_out(&*store, "alpha", 1, 1, None);
    let boot_token = token::random().expect("random");
    let installed = Report { system: Some("/nix/store/s1".into()), boot_token_hash: Some(token::hash(&boot_token)), ..report("alpha", 1, 1, &first, Event::Installed) };
    store.report(&installed).expect("installed");
    let booted = Report { system: Some("/nix/store/s1".into()), boot_token: Some(boot_token.clone()), ..report("alpha", 1, 1, &first, Event::Booted) };
    store.report(&booted).expect("booted with the boot token");
    store.reinstall("alpha").expect("reinstall");
    let (_, second) = hand_out(&*store, "alpha", 1, 2, None);
    assert!(matches!(store.report(&booted), Err(Refused::OldAttempt(_))), "attempt 1's boot after the reinstall was handed out");
    let state = store.host("alpha", 1).expect("host");
    assert!(state.reinstall_requested, "the reinstall request stands");
    assert_eq!(outcomes(&state), vec![(1, Outcome::Installed), (2, Outcome::Pending)]);
    assert_eq!(store.report(&report("alpha", 1, 2, &second, Event::Started)).expect("the reinstall starts").status, AttemptStatus::Running);
}

/// Issue 18: after `installed` named a boot token, the attempt's token (which was on the
/// installer's kernel command line) no longer confirms a boot: only the boot token does.
pub fn after_installed_only_the_boot_token_confirms_the_boot(place: &Place) {
    let store = place.open();
    let (_, attempt_token) = hand_out(&*store, "web1", 1, 1, None);
    let boot_token = token::random().expect("random");
    let installed = Report { system: Some("/nix/store/s1".into()), boot_token_hash: Some(token::hash(&boot_token)), ..report("web1", 1, 1, &attempt_token, Event::Installed) };
    store.report(&installed).expect("installed");
    let booted = |boot: Option<&str>| Report { system: Some("/nix/store/s1".into()), boot_token: boot.map(str::to_string), ..report("web1", 1, 1, &attempt_token, Event::Booted) };
    for wrong in [None, Some(attempt_token.as_str()), Some("made-up")] {
        assert!(matches!(store.report(&booted(wrong)), Err(Refused::WrongToken(_))), "{wrong:?}");
    }
    assert_eq!(store.host("web1", 1).expect("host").confirmed, None);
    assert_eq!(store.report(&booted(Some(&boot_token))).expect("the boot token").status, AttemptStatus::Installed);
    assert_eq!(store.host("web1", 1).expect("host").confirmed.map(|c| c.system), Some("/nix/store/s1".to_string()));
}

/// The address each fleet MAC was seen with; an address given to another MAC leaves the old.
pub fn bindings_follow_the_latest_address_and_an_address_has_one_mac(place: &Place) {
    let store = place.open();
    let other = Mac::new([0x52, 0x54, 0, 0, 0, 0xa2]);
    let (a, b) = (Ipv4Addr::new(10, 42, 0, 100), Ipv4Addr::new(10, 42, 0, 101));
    store.bind(MAC, a).expect("bind");
    store.bind(other, b).expect("bind");
    assert_eq!(store.bindings(&[MAC, other]).expect("read"), vec![(MAC, a), (other, b)]);
    store.bind(MAC, b).expect("rebind");
    assert_eq!(store.bindings(&[MAC, other]).expect("read"), vec![(MAC, b)], "b is MAC's now, other lost it");
    store.unbind_address(b).expect("unbind");
    assert_eq!(store.bindings(&[MAC, other]).expect("read"), vec![]);
    drop(store);
    let store = place.open();
    store.bind(MAC, a).expect("bind");
    drop(store);
    assert_eq!(place.open().bindings(&[MAC]).expect("read"), vec![(MAC, a)], "kept across a restart");
}

/// A reinstall replaces the confirmed system: until the new one's first boot reports, the
/// host is installed, not confirmed (and serve does not say it booted).
pub fn a_reinstall_waits_for_its_own_boot_to_be_confirmed(place: &Place) {
    let store = place.open();
    let booted = |attempt, token: &str| Report { system: Some(format!("/nix/store/s{attempt}")), ..report("web1", 1, attempt, token, Event::Booted) };
    let (_, first) = hand_out(&*store, "web1", 1, 1, None);
    store.report(&report("web1", 1, 1, &first, Event::Installed)).expect("installed");
    store.report(&booted(1, &first)).expect("booted");
    assert_eq!(store.host("web1", 1).expect("host").confirmed, Some(Confirmed { generation: 1, system: "/nix/store/s1".into() }));
    store.reinstall("web1").expect("reinstall");
    let (_, second) = hand_out(&*store, "web1", 1, 2, None);
    store.report(&report("web1", 1, 2, &second, Event::Installed)).expect("installed");
    let state = store.host("web1", 1).expect("host");
    assert_eq!((state.installed_generation, state.confirmed.clone(), state.reinstall_requested), (Some(1), None, false));
    let d = decide(Some(&spec(1, 3)), &state, UnknownHosts::Hold);
    assert!(matches!(&d, Decision::LocalBoot { why } if why.contains("its first boot has not reported yet")), "{d:?}");
    store.report(&booted(2, &second)).expect("booted");
    assert_eq!(store.host("web1", 1).expect("host").confirmed, Some(Confirmed { generation: 1, system: "/nix/store/s2".into() }));
}

pub fn booted_for_an_attempt_that_a_started_one_followed_or_that_failed_is_refused(place: &Place) {
    let store = place.open();
    let system = Some("/nix/store/abc-nixos-system".to_string());
    let (_, first) = hand_out(&*store, "web1", 1, 1, None);
    store.report(&report("web1", 1, 1, &first, Event::Started)).expect("started");
    let (_, second) = hand_out(&*store, "web1", 1, 2, None);
    store.report(&report("web1", 1, 2, &second, Event::Started)).expect("started");
    // Attempt 2 runs (it may be writing the disk now): attempt 1's boot is old news.
    let old = store.report(&Report { system: system.clone(), ..report("web1", 1, 1, &first, Event::Booted) }).unwrap_err();
    assert!(matches!(&old, Refused::OldAttempt(why) if why.contains("attempt 2 of generation 1 is")), "{old:?}");
    store.report(&Report { step: Some("disk".into()), message: Some("not empty".into()), ..report("web1", 1, 2, &second, Event::Failed) }).expect("failed");
    let ended = store.report(&Report { system: system.clone(), ..report("web1", 1, 2, &second, Event::Booted) }).unwrap_err();
    assert!(matches!(&ended, Refused::Ended(why) if why.contains("is failed already")), "{ended:?}");
    assert_eq!(store.host("web1", 1).expect("host").installed_generation, None, "refusals changed nothing");
}

pub fn wrong_tokens_old_attempts_and_changes_after_the_end_are_refused(place: &Place) {
    let store = place.open();
    let (_, first) = hand_out(&*store, "web1", 1, 1, None);
    let wrong = store.report(&report("web1", 1, 1, "not-the-token", Event::Started)).unwrap_err();
    assert!(matches!(&wrong, Refused::WrongToken(why) if why == "the token is not attempt 1 of web1 generation 1's"), "{wrong:?}");
    let never = store.report(&report("web1", 1, 7, &first, Event::Started)).unwrap_err();
    assert!(matches!(&never, Refused::WrongToken(why) if why.contains("never handed out")), "{never:?}");
    let stranger = store.report(&report("db9", 1, 1, &first, Event::Started)).unwrap_err();
    assert!(matches!(stranger, Refused::WrongToken(_)));
    let long_tail = format!("{}\nthe last line", "an installer's long line\n".repeat(5000));
    let failed = Report { step: Some("disk".into()), message: Some("not empty".into()), log_tail: Some(long_tail), ..report("web1", 1, 1, &first, Event::Failed) };
    store.report(&failed).expect("a failed report with a long log tail is taken, cut");
    let kept = store.history("web1").expect("history")[0].log_tail.clone().unwrap_or_default();
    assert!(kept.len() <= crate::fleet::store::MAX_FIELD && kept.ends_with("\nthe last line"), "{}", kept.len());
    // Ended: a failed attempt does not become installed, nor running again.
    let late = store.report(&report("web1", 1, 1, &first, Event::Step)).unwrap_err();
    assert!(matches!(&late, Refused::Ended(why) if why.contains("is failed already")), "{late:?}");
    let (_, second) = hand_out(&*store, "web1", 1, 2, None);
    let old = store.report(&report("web1", 1, 1, &first, Event::Failed)).unwrap_err();
    assert!(matches!(&old, Refused::OldAttempt(why) if why.contains("attempt 2 of generation 1 is")), "{old:?}");
    // The old attempt's token does not work for the new attempt either.
    assert!(matches!(store.report(&report("web1", 1, 2, &first, Event::Started)), Err(Refused::WrongToken(_))));
    store.report(&report("web1", 1, 2, &second, Event::Started)).expect("started");
    let state = store.host("web1", 1).expect("host");
    assert_eq!(
        outcomes(&state),
        vec![(1, Outcome::Failed { step: "disk".into(), error: "not empty".into() }), (2, Outcome::Running)]
    );
    // Refusals changed nothing: the history has the two accepted reports only.
    assert_eq!(store.history("web1").expect("history").len(), 2);
    let invalid = store.report(&report("", 1, 1, &first, Event::Started)).unwrap_err();
    assert!(matches!(invalid, Refused::Invalid(_)));
}

pub fn a_replaced_attempt_gives_way_and_a_taken_number_changes_nothing(place: &Place) {
    let store = place.open();
    let (_, lost) = hand_out(&*store, "web1", 1, 1, None);
    let (created, fresh) = hand_out(&*store, "web1", 1, 2, Some(1));
    assert_eq!(created, HandedOut::Created);
    assert_eq!(outcomes(&store.host("web1", 1).expect("host")), vec![(1, Outcome::Replaced), (2, Outcome::Pending)]);
    let old = store.report(&report("web1", 1, 1, &lost, Event::Started)).unwrap_err();
    assert!(matches!(&old, Refused::OldAttempt(why) if why.contains("replaced when serve restarted")), "{old:?}");
    // Number 2 again (another request was first): Taken, and its replacement of 1 undone.
    let (taken, _) = hand_out(&*store, "web1", 1, 2, Some(1));
    assert_eq!(taken, HandedOut::Taken);
    store.report(&report("web1", 1, 2, &fresh, Event::Started)).expect("the first hand-out's token still works");
    // Booting from the network again abandons the running attempt 2: one of two allowed
    // (the replaced 1 does not count), and the next number is 3.
    assert_eq!(decide(Some(&spec(1, 2)), &store.host("web1", 1).expect("host"), UnknownHosts::Hold), Decision::Install { attempt: 3 });
}

pub fn a_reinstall_lifts_a_hold_and_clears_once_installed(place: &Place) {
    let store = place.open();
    let err = store.reinstall("web1").unwrap_err().to_string();
    assert!(err.contains("no host web1 in") && err.contains("knows no hosts yet"), "{err}");
    for n in 1..=2 {
        let (_, t) = hand_out(&*store, "web1", 1, n, None);
        store.report(&Report { step: Some("disk".into()), ..report("web1", 1, n, &t, Event::Failed) }).expect("failed");
    }
    assert!(matches!(decide(Some(&spec(1, 2)), &store.host("web1", 1).expect("host"), UnknownHosts::Hold), Decision::Hold { .. }));
    assert_eq!(store.hosts().expect("hosts")[0].failures, 2);
    store.reinstall("web1").expect("reinstall");
    let state = store.host("web1", 1).expect("host");
    assert!(state.reinstall_requested);
    assert_eq!(decide(Some(&spec(1, 2)), &state, UnknownHosts::Hold), Decision::Install { attempt: 3 }, "{state:?}");
    assert_eq!(store.hosts().expect("hosts")[0].failures, 0);
    let (_, t) = hand_out(&*store, "web1", 1, 3, None);
    store.report(&report("web1", 1, 3, &t, Event::Installed)).expect("installed");
    let state = store.host("web1", 1).expect("host");
    assert!(!state.reinstall_requested, "an install after the request clears it");
    assert!(matches!(decide(Some(&spec(1, 2)), &state, UnknownHosts::Hold), Decision::LocalBoot { .. }));
    // An installed host asked to reinstall: the next boot installs, with a fresh budget.
    store.reinstall("web1").expect("reinstall");
    assert_eq!(decide(Some(&spec(1, 2)), &store.host("web1", 1).expect("host"), UnknownHosts::Hold), Decision::Reinstall { attempt: 4 });
    let err = store.reinstall("web2").unwrap_err().to_string();
    assert!(err.ends_with("it knows web1"), "{err}");
}

pub fn the_fleet_s_view_is_recorded_and_kept_for_hosts_that_left_it(place: &Place) {
    let store = place.open();
    let host = |name: &str, generation| FleetHost { name: name.into(), macs: vec![MAC], generation };
    store.sync_fleet(&[host("web1", 1), host("db1", 3)]).expect("sync");
    store.sync_fleet(&[host("web1", 2)]).expect("sync");
    let hosts = store.hosts().expect("hosts");
    let summary: Vec<(&str, Option<u32>, &[String])> = hosts.iter().map(|h| (h.name.as_str(), h.generation, h.macs.as_slice())).collect();
    let macs = vec!["52:54:00:00:00:a1".to_string()];
    assert_eq!(summary, vec![("db1", Some(3), macs.as_slice()), ("web1", Some(2), macs.as_slice())]);
}

/// Several processes' worth of connections (one store each) and threads sharing one store,
/// all at once: every number is handed out once, every report is kept, none twice.
pub fn concurrent_transitions_from_many_threads_lose_nothing(place: &Place) {
    let shared = place.open();
    const THREADS: u32 = 8;
    const ROUNDS: u32 = 10;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let shared = Arc::clone(&shared);
            scope.spawn(move || {
                let own;
                let store: &dyn Store = if t % 2 == 0 {
                    own = place.open();
                    own.as_ref()
                } else {
                    shared.as_ref()
                };
                for round in 1..=ROUNDS {
                    // Everyone races for attempt `round` of the contested host...
                    let _ = hand_out(store, "contested", 1, round, None);
                    // ...and runs its own host's attempt through to its end.
                    let host = format!("h{t}");
                    let (created, token) = hand_out(store, &host, 1, round, None);
                    assert_eq!(created, HandedOut::Created);
                    for event in [Event::Started, Event::Step, Event::Step] {
                        store.report(&report(&host, 1, round, &token, event)).expect("report");
                    }
                    store.report(&Report { step: Some("unpack".into()), ..report(&host, 1, round, &token, Event::Failed) }).expect("failed");
                }
            });
        }
    });
    let store = place.open();
    let contested = store.host("contested", 1).expect("host");
    assert_eq!(outcomes(&contested), (1..=ROUNDS).map(|n| (n, Outcome::Pending)).collect::<Vec<_>>(), "each number once");
    for t in 0..THREADS {
        let history = store.history(&format!("h{t}")).expect("history");
        assert_eq!(history.len(), (ROUNDS * 4) as usize, "h{t}");
        let state = store.host(&format!("h{t}"), 1).expect("host");
        assert!(state.attempts.iter().all(|a| matches!(a.outcome, Outcome::Failed { .. })), "{state:?}");
    }
}

/// Two servers (two stores on one state) take `failed` and `installed` for one attempt at the
/// same moment, 40 times: exactly one is accepted each time and the other refused as ended, and
/// the attempt's outcome is the accepted one's. Without the host's row lock both were accepted.
pub fn an_attempt_ends_once_when_two_servers_race(place: &Place) {
    let (a, b) = (place.open(), place.open());
    for round in 1..=40u32 {
        let host = format!("race{round}");
        let (_, token) = hand_out(a.as_ref(), &host, 1, 1, None);
        a.report(&report(&host, 1, 1, &token, Event::Started)).expect("started");
        let barrier = std::sync::Barrier::new(2);
        let (failed, installed) = std::thread::scope(|scope| {
            let failed = scope.spawn(|| {
                barrier.wait();
                a.report(&Report { step: Some("disk".into()), ..report(&host, 1, 1, &token, Event::Failed) })
            });
            let installed = scope.spawn(|| {
                barrier.wait();
                b.report(&Report { system: Some("/nix/store/s".into()), ..report(&host, 1, 1, &token, Event::Installed) })
            });
            (failed.join().expect("thread"), installed.join().expect("thread"))
        });
        let winner = match (&failed, &installed) {
            (Ok(_), Err(Refused::Ended(_))) => AttemptStatus::Failed,
            (Err(Refused::Ended(_)), Ok(_)) => AttemptStatus::Installed,
            other => panic!("round {round}: both or neither accepted: {other:?}"),
        };
        let latest = a.hosts().expect("hosts").into_iter().find(|h| h.name == host).and_then(|h| h.latest).expect("latest");
        assert_eq!((latest.status, latest.reports), (winner, 2), "round {round}");
    }
}

/// Each test of the suite, once per store.
macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::Place::sqlite()) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(&super::Place::postgres()) } )*
        }
    };
}

for_each_store!(
    an_install_goes_pending_running_installed_confirmed,
    booted_records_an_install_whose_installed_report_was_lost,
    an_old_attempts_token_changes_nothing_booted_included,
    after_installed_only_the_boot_token_confirms_the_boot,
    bindings_follow_the_latest_address_and_an_address_has_one_mac,
    a_reinstall_waits_for_its_own_boot_to_be_confirmed,
    booted_for_an_attempt_that_a_started_one_followed_or_that_failed_is_refused,
    wrong_tokens_old_attempts_and_changes_after_the_end_are_refused,
    a_replaced_attempt_gives_way_and_a_taken_number_changes_nothing,
    a_reinstall_lifts_a_hold_and_clears_once_installed,
    the_fleet_s_view_is_recorded_and_kept_for_hosts_that_left_it,
    concurrent_transitions_from_many_threads_lose_nothing,
    the_hand_out_time_is_kept,
    an_attempt_ends_once_when_two_servers_race
);
