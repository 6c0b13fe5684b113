//! The fleet's state in SQLite: `<state-dir>/state.sqlite3`, in WAL mode with `synchronous =
//! FULL` (a transaction that returned is on the disk), one `BEGIN IMMEDIATE` transaction per
//! method, so that serve, `nixos-pxe fleet reinstall` and a second serve on the same file take
//! turns (each waits up to 5 s for the others).
//!
//! Tables: `hosts` (what the fleet wants and what was installed and confirmed), `attempts` (one
//! row per attempt handed out, with its token's hash and outcome) and `reports` (every accepted
//! report, the history). `PRAGMA user_version` is the schema's version; a newer file than this
//! program knows is refused, an older one is migrated in one transaction per step.

use super::decide::{AttemptSummary, Confirmed, HostState, Outcome};
use super::store::{
    Accepted, AttemptRecord, AttemptStatus, BindingChange, Event, FleetHost, HandOut, HandedOut, HostRecord, Refused, Report, ReportRecord, Store,
    StoreError,
};
use super::token;
use crate::config::fleet::Mac;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file below the state directory.
pub const FILE_NAME: &str = "state.sqlite3";

/// `MIGRATIONS[v]` takes a database from version `v` to `v + 1`; the last index + 1 is the
/// version this program writes. Never edit a step that was released: add one.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    "CREATE TABLE hosts (
        name TEXT PRIMARY KEY NOT NULL,
        -- The fleet's view, as serve last read it: a JSON list of MACs, the wanted generation.
        macs TEXT NOT NULL DEFAULT '[]',
        generation INTEGER,
        installed_generation INTEGER,
        confirmed_generation INTEGER,
        confirmed_system TEXT,
        -- NULL: no reinstall requested; else the seq of the newest attempt when it was (0: none).
        reinstall_after INTEGER
    ) STRICT;
    CREATE TABLE attempts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        host TEXT NOT NULL REFERENCES hosts(name),
        generation INTEGER NOT NULL CHECK (generation >= 1),
        number INTEGER NOT NULL CHECK (number >= 1),
        token_hash TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'failed', 'installed', 'replaced')),
        step TEXT,
        error TEXT,
        system TEXT,
        boot_token_hash TEXT,
        mac TEXT,
        handed_out_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        UNIQUE (host, generation, number)
    ) STRICT;
    CREATE TABLE reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        attempt_seq INTEGER NOT NULL REFERENCES attempts(seq),
        event TEXT NOT NULL,
        step TEXT,
        message TEXT,
        log_tail TEXT,
        system TEXT,
        received_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX reports_by_attempt ON reports(attempt_seq);",
    // 1 -> 2: `booted` is checked against the attempt's own token (the installed system reports
    // with it), so the hash of a separate boot token that `installed` carried is gone.
    "ALTER TABLE attempts DROP COLUMN boot_token_hash;",
    // 2 -> 3: the boot token again (after `installed`, the attempt's token, which any machine
    // that saw the installer's command line has, no longer confirms a boot), and the address
    // each fleet MAC was last seen with by serve's DHCP.
    "ALTER TABLE attempts ADD COLUMN boot_token_hash TEXT;
    CREATE TABLE bindings (
        mac TEXT PRIMARY KEY NOT NULL,
        address TEXT NOT NULL,
        seen_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX bindings_by_address ON bindings(address);",
];

/// The schema version this program writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a transaction waits for another process's to end.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    /// Every transition, one at a time.
    conn: Mutex<Connection>,
    /// Reads, which in WAL mode need not wait for a transition's fsync.
    reader: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens `<dir>/state.sqlite3`, creating it (and migrating it to this version) if needed.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(dir, true)
    }

    /// Opens an existing `<dir>/state.sqlite3` (for `fleet status` and `fleet reinstall`).
    pub fn open_existing(dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.is_file() {
            return Err(StoreError::Backend(format!(
                "no fleet state in {}: {FILE_NAME} is missing (`nixos-pxe serve --state-dir {}` creates it when it serves a fleet)",
                dir.display(),
                dir.display()
            )));
        }
        Self::open_with(dir, false)
    }

    fn open_with(dir: &Path, create: bool) -> Result<SqliteStore, StoreError> {
        let path = dir.join(FILE_NAME);
        let place = path.display().to_string();
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let open = |flags| -> Result<Connection, StoreError> {
            let conn = Connection::open_with_flags(&path, flags).map_err(db(&place, "open"))?;
            conn.busy_timeout(BUSY_TIMEOUT).map_err(db(&place, "set the busy timeout"))?;
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(db(&place, "switch to WAL"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Backend(format!("{place}: SQLite kept journal mode {mode} instead of WAL (is the state directory on a network file system?)")));
            }
            conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;").map_err(db(&place, "set pragmas"))?;
            Ok(conn)
        };
        let conn = open(flags)?;
        let mut store = SqliteStore { conn: Mutex::new(conn), reader: Mutex::new(Connection::open_in_memory().map_err(db(&place, "open"))?), path: path.clone() };
        store.migrate()?;
        // Opened after the migration, so that it never sees a file without the schema.
        store.reader = Mutex::new(open(flags - OpenFlags::SQLITE_OPEN_CREATE)?);
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings the schema to [`SCHEMA_VERSION`], one transaction per step; refuses a newer one.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let place = self.place();
        let conn = self.conn.get_mut().unwrap_or_else(PoisonError::into_inner);
        loop {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db(&place, "begin the migration"))?;
            let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db(&place, "read the schema version"))?;
            if version > SCHEMA_VERSION {
                return Err(StoreError::FutureSchema { place, found: version, known: SCHEMA_VERSION });
            }
            let Some(step) = usize::try_from(version).ok().and_then(|v| MIGRATIONS.get(v)) else {
                return Ok(());
            };
            tx.execute_batch(step).map_err(db(&place, &format!("migrate the schema from version {version}")))?;
            tx.pragma_update(None, "user_version", version + 1).map_err(db(&place, "write the schema version"))?;
            tx.commit().map_err(db(&place, "commit the migration"))?;
        }
    }

    fn place(&self) -> String {
        self.path.display().to_string()
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic in another thread mid-transaction rolled that transaction back (Drop): the
        // connection is usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A rusqlite error as a [`StoreError`] naming the file and what was being done.
fn db(place: &str, doing: &str) -> impl Fn(rusqlite::Error) -> StoreError {
    let (place, doing) = (place.to_string(), doing.to_string());
    move |e| {
        let hint = match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                format!(" (another process held the database for more than {} s)", BUSY_TIMEOUT.as_secs())
            }
            Some(rusqlite::ErrorCode::DiskFull) => " (the disk is full)".to_string(),
            Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied) => {
                " (check that the state directory and its files belong to the user serve runs as)".to_string()
            }
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                " (the file is not a SQLite database or is damaged: move it away to start with no state)".to_string()
            }
            _ => String::new(),
        };
        StoreError::Backend(format!("{place}: cannot {doing}: {e}{hint}"))
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

fn status_of(text: &str) -> rusqlite::Result<AttemptStatus> {
    AttemptStatus::parse(text).ok_or_else(|| rusqlite::Error::InvalidColumnType(0, format!("status {text}"), rusqlite::types::Type::Text))
}

fn event_of(text: &str) -> rusqlite::Result<Event> {
    Event::parse(text).ok_or_else(|| rusqlite::Error::InvalidColumnType(0, format!("event {text}"), rusqlite::types::Type::Text))
}

/// An attempt row with what the state machine needs.
struct AttemptRow {
    seq: i64,
    number: u32,
    status: AttemptStatus,
    step: Option<String>,
    error: Option<String>,
}

impl Store for SqliteStore {
    fn host(&self, host: &str, generation: u32) -> Result<HostState, StoreError> {
        let place = self.place();
        let mut conn = self.read();
        let tx = conn.transaction().map_err(db(&place, "begin reading"))?;
        let row = tx
            .query_row(
                "SELECT installed_generation, confirmed_generation, confirmed_system, reinstall_after FROM hosts WHERE name = ?1",
                params![host],
                |r| Ok((r.get::<_, Option<u32>>(0)?, r.get::<_, Option<u32>>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, Option<i64>>(3)?)),
            )
            .optional()
            .map_err(db(&place, &format!("read host {host}")))?;
        let Some((installed_generation, confirmed_generation, confirmed_system, reinstall_after)) = row else {
            return Ok(HostState::default());
        };
        let mut statement = tx
            .prepare("SELECT seq, number, status, step, error FROM attempts WHERE host = ?1 AND generation = ?2 ORDER BY number")
            .map_err(db(&place, "read attempts"))?;
        let rows = statement
            .query_map(params![host, generation], |r| {
                Ok(AttemptRow { seq: r.get(0)?, number: r.get(1)?, status: status_of(&r.get::<_, String>(2)?)?, step: r.get(3)?, error: r.get(4)? })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db(&place, &format!("read the attempts of {host}")))?;
        let attempts = rows
            .into_iter()
            .map(|a| {
                // A reinstall request is the operator's "try again": the failed and abandoned
                // attempts before it no longer count towards maxAttempts, and their numbers
                // are still not reused.
                let before_request = reinstall_after.is_some_and(|after| a.seq <= after);
                let outcome = match a.status {
                    AttemptStatus::Failed | AttemptStatus::Running if before_request => Outcome::Replaced,
                    AttemptStatus::Pending => Outcome::Pending,
                    AttemptStatus::Running => Outcome::Running,
                    AttemptStatus::Failed => Outcome::Failed { step: a.step.unwrap_or_default(), error: a.error.unwrap_or_default() },
                    AttemptStatus::Installed => Outcome::Installed,
                    AttemptStatus::Replaced => Outcome::Replaced,
                };
                AttemptSummary { number: a.number, outcome }
            })
            .collect();
        Ok(HostState {
            installed_generation,
            confirmed: confirmed_generation.map(|generation| Confirmed { generation, system: confirmed_system.unwrap_or_default() }),
            attempts,
            reinstall_requested: reinstall_after.is_some(),
        })
    }

    fn hand_out(&self, out: &HandOut) -> Result<HandedOut, StoreError> {
        let place = self.place();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db(&place, "begin a hand-out"))?;
        tx.execute("INSERT INTO hosts (name) VALUES (?1) ON CONFLICT (name) DO NOTHING", params![out.host]).map_err(db(&place, "record the host"))?;
        let now = now_ms();
        if let Some(old) = out.replaces {
            tx.execute(
                "UPDATE attempts SET status = 'replaced', finished_at = ?4 WHERE host = ?1 AND generation = ?2 AND number = ?3 AND status = 'pending'",
                params![out.host, out.generation, old, now],
            )
            .map_err(db(&place, "mark the replaced attempt"))?;
        }
        let inserted = tx
            .execute(
                "INSERT INTO attempts (host, generation, number, token_hash, status, mac, handed_out_at) VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6)
                 ON CONFLICT (host, generation, number) DO NOTHING",
                params![out.host, out.generation, out.attempt, out.token_hash, out.mac.to_string(), now],
            )
            .map_err(db(&place, "record the attempt"))?;
        if inserted == 0 {
            // Dropping the transaction rolls the replacement back too.
            return Ok(HandedOut::Taken);
        }
        tx.commit().map_err(db(&place, "commit the hand-out"))?;
        Ok(HandedOut::Created)
    }

    fn report(&self, report: &Report) -> Result<Accepted, Refused> {
        report.check().map_err(Refused::Invalid)?;
        let report = &report.clone().clipped();
        let place = self.place();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db(&place, "begin a report"))?;
        let (host, generation, number) = (report.host.as_str(), report.generation, report.attempt);
        let what = format!("attempt {number} of {host} generation {generation}");
        let row = tx
            .query_row(
                "SELECT seq, token_hash, status, boot_token_hash FROM attempts WHERE host = ?1 AND generation = ?2 AND number = ?3",
                params![host, generation, number],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, status_of(&r.get::<_, String>(2)?)?, r.get::<_, Option<String>>(3)?)),
            )
            .optional()
            .map_err(db(&place, "read the attempt"))?;
        // Without a matching token nothing about the host is said, not even whether it exists.
        let Some((seq, token_hash, status, boot_token_hash)) = row else {
            return Err(Refused::WrongToken(format!("{what} was never handed out")));
        };
        // After an accepted `installed`, `booted` needs the boot token it named; every other
        // report (and `booted` whose `installed` was lost) the attempt's own token.
        match (report.event, &boot_token_hash) {
            (Event::Booted, Some(hash)) => {
                if !report.boot_token.as_deref().is_some_and(|t| token::matches(t, hash)) {
                    return Err(Refused::WrongToken(format!("the boot token is not the one {what}'s installed report named")));
                }
            }
            _ => {
                if !token::matches(&report.token, &token_hash) {
                    return Err(Refused::WrongToken(format!("the token is not {what}'s")));
                }
            }
        }
        // Every report is for the host's latest attempt only: an old attempt's token, `booted`
        // too, changes nothing.
        let later: Vec<(u32, u32, AttemptStatus)> = {
            let mut statement = tx
                .prepare("SELECT generation, number, status FROM attempts WHERE host = ?1 AND seq > ?2 ORDER BY seq")
                .map_err(db(&place, "read the later attempts"))?;
            statement
                .query_map(params![host, seq], |r| Ok((r.get(0)?, r.get(1)?, status_of(&r.get::<_, String>(2)?)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db(&place, "read the later attempts"))?
        };
        if let Some((latest_generation, latest_number, _)) = later.last() {
            return Err(Refused::OldAttempt(format!(
                "{what} is not {host}'s latest attempt (attempt {latest_number} of generation {latest_generation} is){}",
                if status == AttemptStatus::Replaced { "; it was replaced when serve restarted before it reported" } else { "" }
            )));
        }
        let now = now_ms();
        let new_status = match (report.event, status) {
            (Event::Started | Event::Step, AttemptStatus::Pending | AttemptStatus::Running) => {
                tx.execute(
                    "UPDATE attempts SET status = 'running', started_at = COALESCE(started_at, ?2), step = COALESCE(?3, step) WHERE seq = ?1",
                    params![seq, now, report.step],
                )
                .map_err(db(&place, "record the step"))?;
                AttemptStatus::Running
            }
            (Event::Failed, AttemptStatus::Pending | AttemptStatus::Running) => {
                tx.execute(
                    "UPDATE attempts SET status = 'failed', step = COALESCE(?2, step), error = ?3, started_at = COALESCE(started_at, ?4), finished_at = ?4 WHERE seq = ?1",
                    params![seq, report.step, report.message, now],
                )
                .map_err(db(&place, "record the failure"))?;
                AttemptStatus::Failed
            }
            (Event::Installed, AttemptStatus::Pending | AttemptStatus::Running) => {
                record_installed(&tx, &place, host, generation, seq, report.system.as_deref(), now)?;
                tx.execute("UPDATE attempts SET boot_token_hash = ?2 WHERE seq = ?1", params![seq, report.boot_token_hash])
                    .map_err(db(&place, "record the boot token"))?;
                AttemptStatus::Installed
            }
            // The same outcome again: a retry whose first answer was lost. Kept, changes nothing.
            (Event::Failed, AttemptStatus::Failed) | (Event::Installed, AttemptStatus::Installed) => status,
            (Event::Booted, AttemptStatus::Pending | AttemptStatus::Running | AttemptStatus::Installed) => {
                if status != AttemptStatus::Installed {
                    // Its `installed` report was lost, but the installed system runs: the install
                    // finished (the installer writes the stamp, and the system boots, only then).
                    record_installed(&tx, &place, host, generation, seq, report.system.as_deref(), now)?;
                }
                tx.execute(
                    "UPDATE hosts SET confirmed_generation = ?2, confirmed_system = ?3 WHERE name = ?1",
                    params![host, generation, report.system],
                )
                .map_err(db(&place, "record the boot"))?;
                AttemptStatus::Installed
            }
            (event, status) => {
                return Err(Refused::Ended(format!("{what} is {} already; a {} report cannot change that", status.as_str(), event.as_str())));
            }
        };
        tx.execute(
            "INSERT INTO reports (attempt_seq, event, step, message, log_tail, system, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![seq, report.event.as_str(), report.step, report.message, report.log_tail, report.system, now],
        )
        .map_err(db(&place, "keep the report"))?;
        tx.commit().map_err(db(&place, "commit the report"))?;
        Ok(Accepted { status: new_status })
    }

    fn reinstall(&self, host: &str) -> Result<(), StoreError> {
        let place = self.place();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db(&place, "begin"))?;
        let changed = tx
            .execute(
                "UPDATE hosts SET reinstall_after = (SELECT COALESCE(MAX(seq), 0) FROM attempts WHERE host = ?1) WHERE name = ?1",
                params![host],
            )
            .map_err(db(&place, "record the reinstall"))?;
        if changed == 0 {
            let mut statement = tx.prepare("SELECT name FROM hosts ORDER BY name").map_err(db(&place, "list hosts"))?;
            let known = statement
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db(&place, "list hosts"))?;
            return Err(StoreError::UnknownHost { host: host.to_string(), place, known });
        }
        tx.commit().map_err(db(&place, "commit the reinstall"))
    }

    fn sync_fleet(&self, hosts: &[FleetHost]) -> Result<(), StoreError> {
        let place = self.place();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db(&place, "begin"))?;
        for h in hosts {
            let macs = serde_json::to_string(&h.macs.iter().map(|m| m.to_string()).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "INSERT INTO hosts (name, macs, generation) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET macs = excluded.macs, generation = excluded.generation",
                params![h.name, macs, h.generation],
            )
            .map_err(db(&place, &format!("record host {}", h.name)))?;
        }
        tx.commit().map_err(db(&place, "commit the fleet"))
    }

    fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let place = self.place();
        let mut conn = self.read();
        let tx = conn.transaction().map_err(db(&place, "begin reading"))?;
        let mut statement = tx
            .prepare("SELECT name, macs, generation, installed_generation, confirmed_generation, confirmed_system, reinstall_after FROM hosts ORDER BY name")
            .map_err(db(&place, "list hosts"))?;
        let hosts = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<u32>>(2)?,
                    r.get::<_, Option<u32>>(3)?,
                    r.get::<_, Option<u32>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db(&place, "list hosts"))?;
        let mut records = Vec::with_capacity(hosts.len());
        for (name, macs, generation, installed_generation, confirmed_generation, confirmed_system, reinstall_after) in hosts {
            let attempts = attempt_records(&tx, &name).map_err(db(&place, &format!("read the attempts of {name}")))?;
            // The newest attempt that was not replaced before it started (one the machine booted
            // its disk instead of leaves the installed one the latest that counts).
            let latest = attempts.iter().rev().find(|(_, a)| a.status != AttemptStatus::Replaced).or(attempts.last()).map(|(_, a)| a.clone());
            let failures = latest.as_ref().map_or(0, |l| {
                let series = attempts.iter().filter(|(_, a)| a.generation == l.generation);
                let last_installed = series.clone().filter(|(_, a)| a.status == AttemptStatus::Installed).map(|(seq, _)| *seq).max().unwrap_or(0);
                let start = last_installed.max(reinstall_after.unwrap_or(0));
                series.filter(|(seq, a)| *seq > start && a.status == AttemptStatus::Failed).count() as u32
            });
            let last_report = tx
                .query_row(
                    "SELECT a.generation, a.number, r.event, r.step, r.message, r.log_tail, r.system, r.received_at
                     FROM reports r JOIN attempts a ON a.seq = r.attempt_seq WHERE a.host = ?1 ORDER BY r.id DESC LIMIT 1",
                    params![name],
                    report_record,
                )
                .optional()
                .map_err(db(&place, &format!("read the last report of {name}")))?;
            records.push(HostRecord {
                macs: serde_json::from_str(&macs).unwrap_or_default(),
                generation,
                installed_generation,
                confirmed: confirmed_generation.map(|generation| Confirmed { generation, system: confirmed_system.unwrap_or_default() }),
                reinstall_requested: reinstall_after.is_some(),
                latest,
                failures,
                last_report,
                name,
            });
        }
        Ok(records)
    }

    fn history(&self, host: &str) -> Result<Vec<ReportRecord>, StoreError> {
        let place = self.place();
        let conn = self.read();
        let mut statement = conn
            .prepare(
                "SELECT a.generation, a.number, r.event, r.step, r.message, r.log_tail, r.system, r.received_at
                 FROM reports r JOIN attempts a ON a.seq = r.attempt_seq WHERE a.host = ?1 ORDER BY r.id",
            )
            .map_err(db(&place, "read the history"))?;
        statement
            .query_map(params![host], report_record)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db(&place, &format!("read the history of {host}")))
    }

    fn record_bindings(&self, changes: &[BindingChange]) -> Result<(), StoreError> {
        let place = self.place();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db(&place, "begin a binding"))?;
        for change in changes {
            match *change {
                BindingChange::Bind(mac, address) => {
                    tx.execute("DELETE FROM bindings WHERE address = ?1 AND mac <> ?2", params![address.to_string(), mac.to_string()])
                        .map_err(db(&place, "unbind the address"))?;
                    tx.execute(
                        "INSERT INTO bindings (mac, address, seen_at) VALUES (?1, ?2, ?3) ON CONFLICT (mac) DO UPDATE SET address = excluded.address, seen_at = excluded.seen_at",
                        params![mac.to_string(), address.to_string(), now_ms()],
                    )
                    .map_err(db(&place, "record the binding"))?;
                }
                BindingChange::Unbind(address) => {
                    tx.execute("DELETE FROM bindings WHERE address = ?1", params![address.to_string()]).map_err(db(&place, "unbind the address"))?;
                }
            }
        }
        tx.commit().map_err(db(&place, "commit the bindings"))
    }

    fn bindings(&self, macs: &[Mac]) -> Result<Vec<(Mac, Ipv4Addr)>, StoreError> {
        let place = self.place();
        let conn = self.read();
        let mut statement = conn.prepare_cached("SELECT address FROM bindings WHERE mac = ?1").map_err(db(&place, "read bindings"))?;
        let mut found = Vec::new();
        for mac in macs {
            let address: Option<String> = statement.query_row(params![mac.to_string()], |r| r.get(0)).optional().map_err(db(&place, "read a binding"))?;
            if let Some(address) = address.and_then(|a| a.parse().ok()) {
                found.push((*mac, address));
            }
        }
        Ok(found)
    }

    fn handed_out_at(&self, host: &str, generation: u32, attempt: u32) -> Result<Option<i64>, StoreError> {
        let place = self.place();
        let conn = self.read();
        conn.query_row("SELECT handed_out_at FROM attempts WHERE host = ?1 AND generation = ?2 AND number = ?3", params![host, generation, attempt], |r| r.get(0))
            .optional()
            .map_err(db(&place, "read the attempt"))
    }
}

impl super::copy::Copyable for SqliteStore {
    fn dump(&self) -> Result<super::copy::Dump, StoreError> {
        use super::copy::{AttemptRow, BindingRow, Dump, HostRow, ReportRow};
        let place = self.place();
        let mut conn = self.read();
        let tx = conn.transaction().map_err(db(&place, "begin reading"))?;
        let all = |sql: &str| -> Result<rusqlite::Statement<'_>, StoreError> { tx.prepare(sql).map_err(db(&place, "read the rows")) };
        let hosts = all("SELECT name, macs, generation, installed_generation, confirmed_generation, confirmed_system, reinstall_after FROM hosts ORDER BY name")?
            .query_map([], |r| Ok(HostRow { name: r.get(0)?, macs: r.get(1)?, generation: r.get(2)?, installed_generation: r.get(3)?, confirmed_generation: r.get(4)?, confirmed_system: r.get(5)?, reinstall_after: r.get(6)? }))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db(&place, "read the hosts"))?;
        let attempts = all("SELECT seq, host, generation, number, token_hash, status, step, error, system, boot_token_hash, mac, handed_out_at, started_at, finished_at FROM attempts ORDER BY seq")?
            .query_map([], |r| {
                Ok(AttemptRow {
                    seq: r.get(0)?, host: r.get(1)?, generation: r.get(2)?, number: r.get(3)?, token_hash: r.get(4)?, status: r.get(5)?, step: r.get(6)?,
                    error: r.get(7)?, system: r.get(8)?, boot_token_hash: r.get(9)?, mac: r.get(10)?, handed_out_at: r.get(11)?, started_at: r.get(12)?, finished_at: r.get(13)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db(&place, "read the attempts"))?;
        let reports = all("SELECT id, attempt_seq, event, step, message, log_tail, system, received_at FROM reports ORDER BY id")?
            .query_map([], |r| Ok(ReportRow { id: r.get(0)?, attempt_seq: r.get(1)?, event: r.get(2)?, step: r.get(3)?, message: r.get(4)?, log_tail: r.get(5)?, system: r.get(6)?, received_at: r.get(7)? }))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db(&place, "read the reports"))?;
        let bindings = all("SELECT mac, address, seen_at FROM bindings ORDER BY mac")?
            .query_map([], |r| Ok(BindingRow { mac: r.get(0)?, address: r.get(1)?, seen_at: r.get(2)? }))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db(&place, "read the bindings"))?;
        Ok(Dump { hosts, attempts, reports, bindings })
    }

    fn load(&self, dump: &super::copy::Dump) -> Result<(), StoreError> {
        let place = self.place();
        let found = self.dump()?;
        if !found.is_empty() {
            return Err(super::copy::not_empty(&place, &found));
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db(&place, "begin the copy"))?;
        for h in &dump.hosts {
            tx.execute(
                "INSERT INTO hosts (name, macs, generation, installed_generation, confirmed_generation, confirmed_system, reinstall_after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![h.name, h.macs, h.generation, h.installed_generation, h.confirmed_generation, h.confirmed_system, h.reinstall_after],
            )
            .map_err(db(&place, &format!("copy host {}", h.name)))?;
        }
        for a in &dump.attempts {
            tx.execute(
                "INSERT INTO attempts (seq, host, generation, number, token_hash, status, step, error, system, boot_token_hash, mac, handed_out_at, started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![a.seq, a.host, a.generation, a.number, a.token_hash, a.status, a.step, a.error, a.system, a.boot_token_hash, a.mac, a.handed_out_at, a.started_at, a.finished_at],
            )
            .map_err(db(&place, "copy an attempt"))?;
        }
        for r in &dump.reports {
            tx.execute(
                "INSERT INTO reports (id, attempt_seq, event, step, message, log_tail, system, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![r.id, r.attempt_seq, r.event, r.step, r.message, r.log_tail, r.system, r.received_at],
            )
            .map_err(db(&place, "copy a report"))?;
        }
        for b in &dump.bindings {
            tx.execute("INSERT INTO bindings (mac, address, seen_at) VALUES (?1, ?2, ?3)", params![b.mac, b.address, b.seen_at]).map_err(db(&place, "copy a binding"))?;
        }
        tx.commit().map_err(db(&place, "commit the copy"))
    }
}

/// Attempt `seq` of `host` installed `generation` (`installed`, or `booted` when that was lost):
/// the attempt's outcome, the host's installed generation, a reinstall request made before the
/// attempt was handed out is done, and a confirmation of this or an older generation was of the
/// system this install replaced (the new one's first boot confirms it again).
fn record_installed(tx: &rusqlite::Transaction<'_>, place: &str, host: &str, generation: u32, seq: i64, system: Option<&str>, now: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE attempts SET status = 'installed', system = ?2, started_at = COALESCE(started_at, ?3), finished_at = ?3 WHERE seq = ?1",
        params![seq, system, now],
    )
    .map_err(db(place, "record the install"))?;
    tx.execute(
        "UPDATE hosts SET installed_generation = MAX(COALESCE(installed_generation, 0), ?2),
            reinstall_after = CASE WHEN reinstall_after < ?3 THEN NULL ELSE reinstall_after END,
            confirmed_system = CASE WHEN confirmed_generation <= ?2 THEN NULL ELSE confirmed_system END,
            confirmed_generation = CASE WHEN confirmed_generation <= ?2 THEN NULL ELSE confirmed_generation END
         WHERE name = ?1",
        params![host, generation, seq],
    )
    .map_err(db(place, "record the installed generation"))?;
    Ok(())
}

/// Every attempt of `host`, oldest first, with its seq.
fn attempt_records(conn: &Connection, host: &str) -> rusqlite::Result<Vec<(i64, AttemptRecord)>> {
    let mut statement = conn.prepare(
        "SELECT seq, generation, number, status, step, error, system, mac, handed_out_at, started_at, finished_at,
                (SELECT COUNT(*) FROM reports WHERE attempt_seq = seq)
         FROM attempts WHERE host = ?1 ORDER BY seq",
    )?;
    statement
        .query_map(params![host], |r| {
            Ok((
                r.get(0)?,
                AttemptRecord {
                    generation: r.get(1)?,
                    number: r.get(2)?,
                    status: status_of(&r.get::<_, String>(3)?)?,
                    step: r.get(4)?,
                    error: r.get(5)?,
                    system: r.get(6)?,
                    mac: r.get(7)?,
                    handed_out_at: r.get(8)?,
                    started_at: r.get(9)?,
                    finished_at: r.get(10)?,
                    reports: r.get(11)?,
                },
            ))
        })?
        .collect()
}

fn report_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportRecord> {
    Ok(ReportRecord {
        generation: r.get(0)?,
        attempt: r.get(1)?,
        event: event_of(&r.get::<_, String>(2)?)?,
        step: r.get(3)?,
        message: r.get(4)?,
        log_tail: r.get(5)?,
        system: r.get(6)?,
        received_at: r.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::store_tests::{MAC, hand_out, outcomes, report};
    use std::io::{BufRead, BufReader};

    #[test]
    fn a_new_file_is_wal_at_the_current_version_and_keeps_what_was_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteStore::open(dir.path()).expect("open");
            hand_out(&store, "web1", 1, 1, None);
        }
        let conn = Connection::open(dir.path().join(FILE_NAME)).expect("open raw");
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("mode");
        assert_eq!((version, mode.as_str()), (SCHEMA_VERSION, "wal"));
        drop(conn);
        let store = SqliteStore::open_existing(dir.path()).expect("reopen");
        assert_eq!(outcomes(&store.host("web1", 1).expect("host")), vec![(1, Outcome::Pending)]);
        let missing = SqliteStore::open_existing(&dir.path().join("nowhere")).unwrap_err().to_string();
        assert!(missing.contains("state.sqlite3 is missing") && missing.contains("serve --state-dir"), "{missing}");
    }

    /// A file of schema version 1 (an installer then sent a boot token's hash with `installed`):
    /// migrated to the current version on open, its attempts and their tokens kept.
    #[test]
    fn a_version_1_file_is_migrated_and_keeps_its_attempts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = token::random().expect("random");
        {
            let conn = Connection::open(dir.path().join(FILE_NAME)).expect("open raw");
            conn.execute_batch(MIGRATIONS[0]).expect("version 1 schema");
            conn.execute_batch("PRAGMA user_version = 1; INSERT INTO hosts (name) VALUES ('web1');").expect("host");
            conn.execute(
                "INSERT INTO attempts (host, generation, number, token_hash, status, boot_token_hash, handed_out_at) VALUES ('web1', 1, 1, ?1, 'running', NULL, 0)",
                params![token::hash(&token)],
            )
            .expect("attempt");
        }
        let store = SqliteStore::open(dir.path()).expect("open and migrate");
        let conn = Connection::open(dir.path().join(FILE_NAME)).expect("open raw");
        assert_eq!(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).expect("version"), SCHEMA_VERSION);
        // Version 2 dropped the boot token's hash, version 3 brought it back, empty for the old
        // attempt, and the bindings.
        let hash: Option<String> = conn.query_row("SELECT boot_token_hash FROM attempts", [], |r| r.get(0)).expect("the column is back");
        assert_eq!(hash, None);
        assert_eq!(store.bindings(&[MAC]).expect("bindings"), vec![]);
        // The attempt's `installed` never came: `booted` with its own token counts.
        let booted = Report { system: Some("/nix/store/s".into()), ..report("web1", 1, 1, &token, Event::Booted) };
        assert_eq!(store.report(&booted).expect("booted with the attempt's token").status, AttemptStatus::Installed);
    }

    #[test]
    fn a_file_from_a_newer_version_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join(FILE_NAME)).expect("open raw");
        conn.execute_batch("PRAGMA user_version = 99; CREATE TABLE future (x INTEGER);").expect("future");
        drop(conn);
        let err = SqliteStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::FutureSchema { found: 99, known: SCHEMA_VERSION, .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("schema version 99, newer than this nixos-pxe knows (up to 3)") && text.contains("move the file away"), "{text}");
        let conn = Connection::open(dir.path().join(FILE_NAME)).expect("open raw");
        assert_eq!(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).expect("version"), 99);
        assert!(conn.prepare("SELECT * FROM hosts").is_err(), "nothing was created in it");
    }

    const LOOP_DIR: &str = "NIXOS_PXE_STORE_LOOP_DIR";
    /// Store calls per host in the write loop: hand-out, started, three steps, installed.
    const OPS_PER_HOST: u64 = 6;

    /// The write loop: host after host, each handed out, started, stepped and installed,
    /// printing `committed N` after each call returned. Run alone it does 20 hosts and checks
    /// them; as the child of the crash test (LOOP_DIR set) it runs until it is killed.
    #[test]
    fn a_write_loop_commits_each_transition_whole() {
        let child_dir = std::env::var_os(LOOP_DIR).map(PathBuf::from);
        let own = tempfile::tempdir().expect("tempdir");
        let dir = child_dir.clone().unwrap_or_else(|| own.path().to_path_buf());
        let hosts = if child_dir.is_some() { 1_000_000 } else { 20 };
        let store = SqliteStore::open(&dir).expect("open");
        // Only the child prints (to the pipe its parent reads), past the harness's capture.
        let mut out: Box<dyn std::io::Write> = if child_dir.is_some() { Box::new(std::io::stdout().lock()) } else { Box::new(std::io::sink()) };
        let mut committed = 0u64;
        for i in 0..hosts {
            let host = format!("h{i}");
            let (created, token) = hand_out(&store, &host, 1, 1, None);
            assert_eq!(created, HandedOut::Created);
            committed += 1;
            let _ = std::io::Write::write_all(&mut out, format!("committed {committed}\n").as_bytes());
            let steps = [Event::Started, Event::Step, Event::Step, Event::Step, Event::Installed];
            for (k, event) in steps.into_iter().enumerate() {
                let r = Report {
                    step: Some(format!("s{k}")),
                    system: Some("/nix/store/x".into()),
                    ..report(&host, 1, 1, &token, event)
                };
                store.report(&r).expect("report");
                committed += 1;
                let _ = std::io::Write::write_all(&mut out, format!("committed {committed}\n").as_bytes());
                let _ = std::io::Write::flush(&mut out);
            }
        }
        if child_dir.is_none() {
            check_whole(&SqliteStore::open(&dir).expect("reopen"), committed);
        }
    }

    /// Everything the loop printed as committed is there, and each host is in a state one
    /// whole transaction made: its attempt's outcome agrees with its reports.
    fn check_whole(store: &SqliteStore, printed: u64) {
        let conn = store.lock();
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity");
        assert_eq!(integrity, "ok");
        drop(conn);
        let hosts = store.hosts().expect("hosts");
        let mut present = 0u64;
        for h in &hosts {
            let latest = h.latest.as_ref().expect("a host row comes with its attempt");
            let history = store.history(&h.name).expect("history");
            assert_eq!(latest.reports as usize, history.len());
            let expected_status = match history.last().map(|r| r.event) {
                None => AttemptStatus::Pending,
                Some(Event::Installed) => AttemptStatus::Installed,
                Some(_) => AttemptStatus::Running,
            };
            assert_eq!(latest.status, expected_status, "{}: {latest:?} with {} reports", h.name, history.len());
            assert_eq!(h.installed_generation.is_some(), expected_status == AttemptStatus::Installed, "{}", h.name);
            // The step is the last one a started or step report named (installed keeps it).
            let last_step = history.iter().rev().find(|r| r.event != Event::Installed).and_then(|r| r.step.as_deref());
            assert_eq!(latest.step.as_deref(), last_step, "{}", h.name);
            present += 1 + history.len() as u64;
        }
        // What was printed was committed; at most the one call under way when the loop died
        // may have committed without being printed.
        assert!(present == printed || present == printed + 1, "{present} transitions in the store, {printed} printed as committed");
        // And the hosts are h0, h1, ... without a gap.
        let mut numbers: Vec<u64> = hosts.iter().filter_map(|h| h.name.strip_prefix('h')?.parse().ok()).collect();
        numbers.sort_unstable();
        assert!(numbers.iter().enumerate().all(|(i, n)| i as u64 == *n), "{numbers:?}");
        assert_eq!(numbers.len() as u64, present.div_ceil(OPS_PER_HOST));
    }

    /// kill -9 of a process in the middle of its write loop, then the file reopened: nothing it
    /// reported as committed is lost, nothing is half written.
    #[test]
    fn a_process_killed_mid_write_loses_nothing_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = std::env::current_exe().expect("test binary");
        // Ten kills, each at another point: after a different count, then after a different
        // delay, so that they land anywhere in a transaction and between two.
        for round in 0..10u64 {
            let sub = dir.path().join(format!("round{round}"));
            std::fs::create_dir(&sub).expect("mkdir");
            let mut child = std::process::Command::new(&exe)
                .args(["--exact", "fleet::sqlite::tests::a_write_loop_commits_each_transition_whole", "--nocapture", "--test-threads", "1"])
                .env(LOOP_DIR, &sub)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start the write loop");
            let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
            let mut printed = 0u64;
            // Kill at a different point each round, never on a host boundary on purpose.
            let kill_after = 150 + round * 37;
            for line in lines.by_ref() {
                let line = line.expect("read");
                if let Some(n) = line.strip_prefix("committed ") {
                    printed = n.parse().expect("number");
                    if printed >= kill_after {
                        break;
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(round * 173));
            child.kill().expect("SIGKILL");
            // Lines the loop wrote before it died are in the pipe still: committed as well.
            for line in lines {
                if let Some(n) = line.expect("read").strip_prefix("committed ") {
                    printed = n.parse().expect("number");
                }
            }
            let status = child.wait().expect("wait");
            assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "the loop ended by itself: {status}");
            assert!(printed >= kill_after, "the loop printed only {printed}");
            check_whole(&SqliteStore::open(&sub).expect("reopen after the kill"), printed);
        }
    }
}
