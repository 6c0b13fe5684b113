//! Reports serve took while its store could not be reached (a shared database that is down or
//! cut off): `<state-dir>/report-spool`, one JSON report a line, each line written and synced
//! before the installer hears 202, and written to the store, oldest first, when it can be
//! reached again (then the file is emptied). A report the store then refuses (an old attempt, a
//! wrong token) is said in the log and dropped, as it would have been at once.

use crate::fleet::store::Report;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "report-spool";

/// The longest spool kept: about 5,000 reports with long log tails; beyond it a report is not
/// taken (the installer retries, and the database is what must come back).
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    /// An append and the rewrite of [`Spool::drop_first`] take turns: a report kept while the
    /// others are written is not lost by the rewrite.
    turn: std::sync::Mutex<()>,
}

impl Spool {
    pub fn new(state_dir: &Path) -> Spool {
        Spool { path: state_dir.join(FILE_NAME), turn: std::sync::Mutex::new(()) }
    }

    fn turn(&self) -> std::sync::MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `report` and syncs it to the disk.
    pub fn keep(&self, report: &Report) -> Result<(), String> {
        let _turn = self.turn();
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size > MAX_BYTES {
            return Err(format!("{} holds {size} bytes of reports already", self.path.display()));
        }
        let mut line = serde_json::to_string(report).map_err(|e| e.to_string())?;
        line.push('\n');
        let mut file = OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        file.write_all(line.as_bytes()).and_then(|()| file.sync_data()).map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// The reports kept, oldest first (a line cut short by a crash is left out).
    pub fn read(&self) -> Result<Vec<Report>, String> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let mut reports = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("{}: {e}", self.path.display()))?;
            if let Ok(r) = serde_json::from_str::<Report>(&line) {
                reports.push(r);
            }
        }
        Ok(reports)
    }

    pub fn is_empty(&self) -> bool {
        std::fs::metadata(&self.path).map(|m| m.len() == 0).unwrap_or(true)
    }

    /// Keeps only the reports after the first `written` (those are in the store now).
    pub fn drop_first(&self, written: usize) -> Result<(), String> {
        let _turn = self.turn();
        let rest: Vec<Report> = self.read()?.into_iter().skip(written).collect();
        let tmp = self.path.with_extension("tmp");
        let mut text = String::new();
        for r in &rest {
            text.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
            text.push('\n');
        }
        let mut file = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_data()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::store::Event;

    #[test]
    fn kept_reports_come_back_in_order_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path());
        assert!(spool.is_empty() && spool.read().expect("read").is_empty());
        let r = |attempt| Report {
            host: "web1".into(), generation: 1, attempt, token: "t".into(), event: Event::Step,
            step: None, message: None, log_tail: None, system: None, boot_token_hash: None, boot_token: None,
        };
        for a in 1..=3 {
            spool.keep(&r(a)).expect("keep");
        }
        // A crash mid-append leaves half a line.
        OpenOptions::new().append(true).open(spool.path()).expect("open").write_all(b"{\"host\":\"web").expect("write");
        assert_eq!(spool.read().expect("read").iter().map(|r| r.attempt).collect::<Vec<_>>(), vec![1, 2, 3]);
        spool.drop_first(2).expect("drop");
        assert_eq!(spool.read().expect("read").iter().map(|r| r.attempt).collect::<Vec<_>>(), vec![3]);
        spool.drop_first(1).expect("drop");
        assert!(spool.is_empty());
    }
}
