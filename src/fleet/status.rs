//! Every host of the fleet as `nixos-pxe fleet status` prints it and serve's `GET /v1/hosts`
//! answers it: its MACs, state, generations, latest attempt, last report and how long the
//! attempt took; with the fleet's configuration also what serve would hand it out now.

use super::decide::{Decision, decide};
use crate::config::fleet::Fleet;
use super::store::{AttemptStatus, Event, HostRecord, Store, StoreError};
use serde::Serialize;

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostStatus {
    pub host: String,
    /// From the configuration when given, else as serve last recorded them.
    pub macs: Vec<String>,
    /// `absent` (never handed out), `handed-out` (the installer has not reported yet),
    /// `installing`, `failed`, `installed`, `confirmed` (the installed system booted and said
    /// so), or `hold` (with the configuration: failed `fleet.maxAttempts` times).
    pub state: &'static str,
    /// Whether the configuration (or, without it, the fleet serve last read) has the host.
    pub in_fleet: bool,
    /// The generation the fleet wants.
    pub generation: Option<u32>,
    pub installed_generation: Option<u32>,
    pub confirmed: Option<ConfirmedView>,
    pub reinstall_requested: bool,
    /// Failed attempts since the last install (or reinstall request), at the latest attempt's generation.
    pub failures: u32,
    pub attempt: Option<AttemptView>,
    pub last_report: Option<ReportView>,
    /// What serve hands the host out now (only with the configuration).
    pub decision: Option<DecisionView>,
    /// The latest power action on the host's BMC (`fleet power`, `reinstall --power-cycle`,
    /// `apply`): who asked, when, the outcome, and every call with the BMC's answer.
    pub last_power_action: Option<PowerActionView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerActionView {
    pub id: i64,
    pub action: String,
    pub requested_by: String,
    pub at: String,
    pub outcome: super::store::PowerOutcome,
    pub bmc: String,
    pub summary: String,
    pub calls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfirmedView {
    pub generation: u32,
    pub system: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptView {
    pub generation: u32,
    pub number: u32,
    pub status: AttemptStatus,
    pub step: Option<String>,
    pub error: Option<String>,
    pub mac: Option<String>,
    pub handed_out_at: String,
    pub finished_at: Option<String>,
    /// From the hand-out to the end (or to now while it runs), in seconds.
    pub duration_s: f64,
    pub reports: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportView {
    pub generation: u32,
    pub attempt: u32,
    pub event: Event,
    pub step: Option<String>,
    pub message: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DecisionView {
    Install { attempt: u32 },
    /// An install over the installed generation (its entry does not boot the disk by its stamp).
    Reinstall { attempt: u32 },
    LocalBoot { why: String },
    Hold { why: String },
}

impl From<&Decision> for DecisionView {
    fn from(d: &Decision) -> DecisionView {
        match d {
            Decision::Install { attempt } => DecisionView::Install { attempt: *attempt },
            Decision::Reinstall { attempt } => DecisionView::Reinstall { attempt: *attempt },
            Decision::LocalBoot { why } => DecisionView::LocalBoot { why: why.clone() },
            Decision::Hold { why } => DecisionView::Hold { why: why.clone() },
        }
    }
}

/// Every host the store knows and every host of `fleet`, by name; `now` in milliseconds since
/// the Unix epoch (for the duration of a running attempt).
pub fn collect(store: &dyn Store, fleet: Option<&Fleet>, now: i64) -> Result<Vec<HostStatus>, StoreError> {
    let mut records = store.hosts()?;
    if let Some(fleet) = fleet {
        for spec in &fleet.hosts {
            if !records.iter().any(|r| r.name == spec.name) {
                records.push(HostRecord {
                    name: spec.name.clone(),
                    macs: Vec::new(),
                    generation: None,
                    installed_generation: None,
                    confirmed: None,
                    reinstall_requested: false,
                    latest: None,
                    failures: 0,
                    last_report: None,
                });
            }
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        let spec = fleet.and_then(|f| f.host(&record.name));
        let decision = match (fleet, spec) {
            (Some(fleet), Some(spec)) => Some(decide(Some(spec), &store.host(&record.name, spec.generation)?, fleet.unknown_hosts)),
            _ => None,
        };
        let power = store.power_actions(Some(&record.name), 1)?.into_iter().next().map(|a| PowerActionView {
            id: a.id,
            action: a.action,
            requested_by: a.requested_by,
            at: rfc3339(a.requested_at),
            outcome: a.outcome,
            bmc: a.bmc,
            summary: a.summary,
            calls: a.calls.lines().map(str::to_string).collect(),
        });
        rows.push(HostStatus { last_power_action: power, ..row(record, fleet, decision.as_ref(), now) });
    }
    Ok(rows)
}

fn row(record: HostRecord, fleet: Option<&Fleet>, decision: Option<&Decision>, now: i64) -> HostStatus {
    let spec = fleet.and_then(|f| f.host(&record.name));
    let confirmed_current = match (&record.confirmed, record.installed_generation) {
        (Some(c), Some(installed)) => c.generation >= installed,
        (Some(_), None) => true,
        _ => false,
    };
    let state = match (record.latest.as_ref().map(|a| a.status), decision) {
        (_, Some(Decision::Hold { .. })) => "hold",
        (None, _) if record.installed_generation.is_none() => "absent",
        (Some(AttemptStatus::Pending), _) => "handed-out",
        (Some(AttemptStatus::Running), _) => "installing",
        (Some(AttemptStatus::Failed), _) => "failed",
        (Some(AttemptStatus::Replaced), _) => "handed-out",
        _ if confirmed_current => "confirmed",
        _ => "installed",
    };
    HostStatus {
        macs: match spec {
            Some(spec) => spec.macs.iter().map(|m| m.to_string()).collect(),
            None => record.macs,
        },
        state,
        in_fleet: match fleet {
            Some(_) => spec.is_some(),
            None => record.generation.is_some(),
        },
        generation: spec.map(|s| s.generation).or(record.generation),
        installed_generation: record.installed_generation,
        confirmed: record.confirmed.map(|c| ConfirmedView { generation: c.generation, system: c.system }),
        reinstall_requested: record.reinstall_requested,
        failures: record.failures,
        attempt: record.latest.map(|a| AttemptView {
            duration_s: (a.finished_at.unwrap_or(now) - a.handed_out_at).max(0) as f64 / 1000.0,
            generation: a.generation,
            number: a.number,
            status: a.status,
            step: a.step,
            error: a.error,
            mac: a.mac,
            handed_out_at: rfc3339(a.handed_out_at),
            finished_at: a.finished_at.map(rfc3339),
            reports: a.reports,
        }),
        last_report: record.last_report.map(|r| ReportView {
            generation: r.generation,
            attempt: r.attempt,
            event: r.event,
            step: r.step,
            message: r.message,
            at: rfc3339(r.received_at),
        }),
        decision: decision.map(DecisionView::from),
        last_power_action: None,
        host: record.name,
    }
}

/// The rows as a table for people, one host a line, then the reasons of held hosts.
pub fn table(rows: &[HostStatus]) -> String {
    let header = ["HOST", "MACS", "STATE", "GENERATION", "ATTEMPT", "LAST REPORT", "DURATION", "NEXT BOOT", "LAST POWER ACTION"];
    let mut lines: Vec<[String; 9]> = vec![header.map(String::from)];
    for r in rows {
        let generation = format!(
            "{}/{}{}",
            r.installed_generation.map_or("-".into(), |g| g.to_string()),
            r.generation.map_or("-".into(), |g| g.to_string()),
            if r.reinstall_requested { " reinstall" } else { "" }
        );
        let attempt = r.attempt.as_ref().map_or("-".into(), |a| {
            let step = a.step.as_deref().map(|s| format!(" at {s}")).unwrap_or_default();
            format!("g{} #{} {}{step}", a.generation, a.number, a.status.as_str())
        });
        let report = r.last_report.as_ref().map_or("-".into(), |l| {
            let step = l.step.as_deref().map(|s| format!(" {s}")).unwrap_or_default();
            format!("{}{step} {}", l.event.as_str(), l.at)
        });
        let duration = r.attempt.as_ref().map_or("-".into(), |a| duration(a.duration_s));
        let next = match &r.decision {
            None => "-".to_string(),
            Some(DecisionView::Install { attempt }) => format!("install #{attempt}"),
            Some(DecisionView::Reinstall { attempt }) => format!("reinstall #{attempt}"),
            Some(DecisionView::LocalBoot { .. }) => "local boot".into(),
            Some(DecisionView::Hold { .. }) => "hold".into(),
        };
        let name = if r.in_fleet { r.host.clone() } else { format!("{} (not in the fleet)", r.host) };
        let macs = if r.macs.is_empty() { "-".into() } else { r.macs.join(",") };
        let power = r.last_power_action.as_ref().map_or("-".into(), |p| format!("{} {} {} by {}", p.action, p.outcome.as_str(), p.at, p.requested_by));
        lines.push([name, macs, r.state.to_string(), generation, attempt, report, duration, next, power]);
    }
    let widths: Vec<usize> = (0..9).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, w)| format!("{cell:w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for r in rows {
        if let Some(p) = &r.last_power_action {
            out.push_str(&format!("{} power action {} ({}, {}): {}\n", r.host, p.id, p.action, p.outcome.as_str(), p.summary));
        }
        if let Some(DecisionView::Hold { why }) = &r.decision {
            out.push_str(&format!("{} is held: {why}\n", r.host));
        }
        if let Some(a) = &r.attempt
            && a.status == AttemptStatus::Failed
        {
            out.push_str(&format!(
                "{} attempt {} failed at {}: {}\n",
                r.host,
                a.number,
                a.step.as_deref().unwrap_or("?"),
                a.error.as_deref().unwrap_or("(no message)")
            ));
        }
    }
    out
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC, to the second: `2026-11-30T19:26:01Z`.
pub fn rfc3339(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::sqlite::SqliteStore;
    use crate::fleet::store::{HandOut, Report};
    use crate::fleet::token;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199_999), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(4_102_444_800_000), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339(-1000), "1969-12-31T23:59:59Z");
    }

    fn fleet() -> Fleet {
        let mut tree = serde_json::to_value(crate::config::resolve(&Default::default(), camino::Utf8Path::new("t.nix")).expect("defaults").config).expect("json");
        tree["fleet"]["maxAttempts"] = 1.into();
        tree["fleet"]["hosts"] = serde_json::json!({
            "web1": { "macs": ["52:54:00:00:00:a1"], "generation": 1, "target": { "directory": "/w", "flake": null } },
            "web2": { "macs": ["52:54:00:00:00:a2"], "generation": 1, "target": { "directory": "/w", "flake": null } },
        });
        Fleet::from_config(&serde_json::from_value(tree).expect("config")).expect("fleet")
    }

    #[test]
    fn every_host_of_the_fleet_and_of_the_store_is_listed_with_its_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        let fleet = fleet();
        let t = token::random().expect("token");
        let mac = fleet.hosts[0].macs[0];
        store.hand_out(&HandOut { host: "web1".into(), generation: 1, attempt: 1, token_hash: token::hash(&t), mac, replaces: None }).expect("hand out");
        let failed = Report { step: Some("disk".into()), message: Some("the disk holds a GPT".into()), ..Report::new("web1", 1, 1, &t, Event::Failed) };
        store.report(&failed).expect("failed");
        store.hand_out(&HandOut { host: "old9".into(), generation: 1, attempt: 1, token_hash: "0".repeat(64), mac, replaces: None }).expect("hand out");
        let rows = collect(&store, Some(&fleet), i64::MAX / 2).expect("collect");
        let summary: Vec<(&str, &str, bool)> = rows.iter().map(|r| (r.host.as_str(), r.state, r.in_fleet)).collect();
        assert_eq!(summary, vec![("old9", "handed-out", false), ("web1", "hold", true), ("web2", "absent", true)]);
        let web1 = &rows[1];
        assert_eq!(web1.macs, vec!["52:54:00:00:00:a1"]);
        assert_eq!(web1.failures, 1);
        assert!(matches!(&web1.decision, Some(DecisionView::Hold { why }) if why.contains("step disk: the disk holds a GPT")));
        assert_eq!(rows[2].decision, Some(DecisionView::Install { attempt: 1 }));
        let json = serde_json::to_value(&rows).expect("json");
        assert_eq!(json[1]["attempt"]["status"], "failed");
        assert_eq!(json[1]["last_report"]["event"], "failed");
        assert_eq!(json[1]["decision"]["kind"], "hold");
        assert_eq!(json[2]["decision"], serde_json::json!({ "kind": "install", "attempt": 1 }));
        let text = table(&rows);
        assert!(text.starts_with("HOST"), "{text}");
        assert!(text.contains("old9 (not in the fleet)"), "{text}");
        assert!(text.contains("web1 is held: 1 attempts at web1 generation 1 failed"), "{text}");
        assert!(text.contains("web1 attempt 1 failed at disk: the disk holds a GPT"), "{text}");
        // The latest power action of each host, with who asked and what the BMC answered.
        assert!(rows.iter().all(|r| r.last_power_action.is_none()));
        for (summary, outcome) in [("was off; reset On, now on", crate::fleet::store::PowerOutcome::Done), ("did not answer", crate::fleet::store::PowerOutcome::Failed)] {
            store
                .record_power_action(&crate::fleet::store::PowerAction {
                    id: 0,
                    host: "web2".into(),
                    action: "on".into(),
                    requested_by: "root".into(),
                    requested_at: 1_700_000_000_000,
                    finished_at: 1_700_000_003_000,
                    bmc: "the Redfish BMC at https://10.0.0.5:443".into(),
                    outcome,
                    summary: summary.into(),
                    calls: "GET a => 200\nPOST b => 204".into(),
                })
                .expect("record");
        }
        let rows = collect(&store, Some(&fleet), 0).expect("collect");
        let web2 = rows.iter().find(|r| r.host == "web2").and_then(|r| r.last_power_action.clone()).expect("web2's power action");
        assert_eq!((web2.summary.as_str(), web2.outcome, web2.at.as_str(), web2.calls.len()), ("did not answer", crate::fleet::store::PowerOutcome::Failed, "2023-11-14T22:13:20Z", 2));
        let text = table(&rows);
        assert!(text.contains("on failed 2023-11-14T22:13:20Z by root"), "{text}");
        assert!(text.contains("web2 power action 2 (on, failed): did not answer"), "{text}");
        // Without the configuration: the store's view only, no decision.
        let rows = collect(&store, None, 0).expect("collect");
        assert_eq!(rows.iter().map(|r| (r.host.as_str(), r.state)).collect::<Vec<_>>(), vec![("old9", "handed-out"), ("web1", "failed")]);
        assert!(rows.iter().all(|r| r.decision.is_none()));
    }

    #[test]
    fn durations_read_easily() {
        assert_eq!((duration(0.4), duration(59.4), duration(61.0), duration(3725.0)), ("0s".into(), "59s".into(), "1m01s".into(), "1h02m".into()));
    }
}
