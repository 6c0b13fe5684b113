//! The DHCP leases on disk: `leases` in serve's state directory, one line per change, appended as
//! it happens (as ISC dhcpd's and Kea's memfile lease files are), replayed at start and rewritten
//! whole (compacted) then and whenever it has grown to several times the records it holds. So a
//! restarted serve does not hand out an address a running client holds.
//!
//! A compaction while serving writes and syncs the new file in a thread of its own: its sync
//! takes tens of milliseconds on a busy disk, and at thousands of requests a second (a renewal is
//! a line) the DHCP thread would stop answering that long, every few hundred milliseconds, while
//! the socket's buffer overflows. The lines appended meanwhile go to the current file and are
//! copied to the new one before it replaces the current one, so either file holds every change.
//!
//! Lines: `nixos-pxe leases 1` first, then `set HW ADDRESS STATE UNTIL` and `free ADDRESS`
//! (UNTIL in seconds since the Unix epoch). A line that cannot be read is skipped and said once
//! with its line number; the file is never lost for it. Each change is written with one `write`
//! and not synced: a crash of serve loses nothing, a power loss the changes of the last seconds
//! (as Kea's memfile, which does not sync either).

use super::leases::{Change, HwAddr, Lease, LeaseTable, State};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "leases";
const HEADER: &str = "nixos-pxe leases 1";

/// The open lease file.
pub struct LeaseLog {
    path: PathBuf,
    file: File,
    /// Lines appended since the last compaction.
    appended: usize,
    /// A compaction under way, if any.
    compacting: Option<Compaction>,
}

/// A compaction under way: the thread writing and syncing the new file (`leases.new`) from a
/// snapshot of the table, and the lines appended to the current file since the snapshot.
struct Compaction {
    thread: std::thread::JoinHandle<io::Result<File>>,
    since: Vec<u8>,
    lines: usize,
}

/// One line as text.
pub fn line(change: &Change) -> String {
    match change {
        Change::Set(l) => format!("set {} {} {} {}\n", l.hw, l.address, l.state.as_str(), l.until),
        Change::Free(a) => format!("free {a}\n"),
    }
}

/// One line read back; None when it is not one.
pub fn parse(text: &str) -> Option<Change> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["set", hw, address, state, until] => Some(Change::Set(Lease {
            hw: HwAddr::parse(hw)?,
            address: address.parse::<Ipv4Addr>().ok()?,
            state: State::parse(state)?,
            until: until.parse().ok()?,
        })),
        ["free", address] => Some(Change::Free(address.parse().ok()?)),
        _ => None,
    }
}

impl LeaseLog {
    /// Replays `dir/leases` into `table` (records that expired before `now` are kept: they say
    /// who last had an address), then rewrites it compacted and keeps it open for appending.
    pub fn open(dir: &Path, table: &mut LeaseTable) -> io::Result<LeaseLog> {
        let path = dir.join(FILE_NAME);
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        match File::open(&path) {
            Ok(file) => {
                let mut skipped = Vec::new();
                for (n, text) in BufReader::new(file).lines().enumerate() {
                    let text = text.map_err(named)?;
                    if n == 0 && text == HEADER {
                        continue;
                    }
                    match parse(&text) {
                        Some(change) => table.apply(change),
                        None if text.trim().is_empty() => {}
                        None => skipped.push(n + 1),
                    }
                }
                if !skipped.is_empty() {
                    tracing::warn!(file = %path.display(), lines = ?skipped, "dhcp: lease file lines that are not leases were skipped (a torn last line after a crash is one)");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(named(e)),
        }
        let file = compact(&path, table).map_err(named)?;
        Ok(LeaseLog { path, file, appended: 0, compacting: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `change`. When the file holds several times more lines than records, starts a
    /// compaction in the background; puts a finished one in place.
    pub fn record(&mut self, change: &Change, table: &LeaseTable) -> io::Result<()> {
        let text = line(change);
        self.file.write_all(text.as_bytes())?;
        self.appended += 1;
        match &mut self.compacting {
            Some(c) => {
                c.since.extend_from_slice(text.as_bytes());
                c.lines += 1;
                if c.thread.is_finished() {
                    self.finish_compaction()?;
                }
            }
            None if self.appended > 1024 && self.appended > 4 * table.record_count() => {
                let (text, temporary) = (snapshot(table), self.path.with_extension("new"));
                let thread = std::thread::Builder::new().name("lease-file".into()).spawn(move || write_synced(&temporary, &text))?;
                self.compacting = Some(Compaction { thread, since: Vec::new(), lines: 0 });
            }
            None => {}
        }
        Ok(())
    }

    /// Waits for a compaction under way and puts its file in place.
    pub fn settle(&mut self) -> io::Result<()> {
        self.finish_compaction()
    }

    /// Copies the lines appended since the snapshot to the compacted file and renames it over the
    /// current one. On a failure the current file, which holds every change, stays, and the next
    /// compaction is tried after as many lines again.
    fn finish_compaction(&mut self) -> io::Result<()> {
        let Some(c) = self.compacting.take() else { return Ok(()) };
        let put_in_place = |path: &Path| -> io::Result<File> {
            let mut new = c.thread.join().map_err(|_| io::Error::other("the lease file's compaction thread panicked"))??;
            new.write_all(&c.since)?;
            std::fs::rename(path.with_extension("new"), path)?;
            Ok(new)
        };
        match put_in_place(&self.path) {
            Ok(new) => {
                self.file = new;
                self.appended = c.lines;
                Ok(())
            }
            Err(e) => {
                self.appended = 0;
                Err(io::Error::new(e.kind(), format!("compacting {}: {e}", self.path.display())))
            }
        }
    }
}

impl Drop for LeaseLog {
    fn drop(&mut self) {
        if let Err(e) = self.settle() {
            tracing::warn!("dhcp: {e} (the lease file as it is holds every lease)");
        }
    }
}

/// The lease file's whole text for `table`: the header and one line per record, by address.
fn snapshot(table: &LeaseTable) -> String {
    let mut text = String::with_capacity(64 * (table.record_count() + 1));
    text.push_str(HEADER);
    text.push('\n');
    let mut records: Vec<&Lease> = table.records().collect();
    records.sort_by_key(|l| u32::from(l.address));
    for l in records {
        text.push_str(&line(&Change::Set(*l)));
    }
    text
}

/// Writes `text` to `temporary` (0600) and syncs it; returns it open, positioned at its end.
fn write_synced(temporary: &Path, text: &str) -> io::Result<File> {
    let mut out = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(temporary)?;
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    Ok(out)
}

/// Writes every record of `table` to a new file (synced) renamed over `path`; returns it open
/// for appending.
fn compact(path: &Path, table: &LeaseTable) -> io::Result<File> {
    let temporary = path.with_extension("new");
    let file = write_synced(&temporary, &snapshot(table))?;
    std::fs::rename(&temporary, path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::leases::Timing;

    fn table() -> LeaseTable {
        LeaseTable::new((Ipv4Addr::new(10, 42, 0, 100), Ipv4Addr::new(10, 42, 0, 103)), Timing::new(600), [])
    }

    fn hw(n: u8) -> HwAddr {
        HwAddr::new(&[2, 0, 0, 0, 0, n]).expect("hw")
    }

    #[test]
    fn lines_read_back_as_written() {
        let lease = Lease { hw: hw(1), address: Ipv4Addr::new(10, 42, 0, 100), state: State::Bound, until: 1_700_000_000 };
        for change in [Change::Set(lease), Change::Free(lease.address)] {
            assert_eq!(parse(&line(&change)), Some(change));
        }
        for bad in ["set", "set 02:00:00:00:00:01 10.42.0.100 bound", "set 02:00 10.42.0.999 bound 1", "free x", "gone 10.42.0.1"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_restarted_table_has_the_leases_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = table();
        let mut log = LeaseLog::open(dir.path(), &mut t).expect("open");
        for n in 1..=3 {
            let a = t.offer(hw(n), 1000).expect("offer");
            let (_, change) = t.request(hw(n), Some(a), 1000).expect("ack");
            log.record(&change, &t).expect("record");
        }
        let change = t.release(hw(2), Ipv4Addr::new(10, 42, 0, 101), Ipv4Addr::new(10, 42, 0, 101)).expect("release");
        log.record(&change, &t).expect("record");
        drop(log);
        // A crash in the middle of a line.
        let path = dir.path().join(FILE_NAME);
        std::fs::OpenOptions::new().append(true).open(&path).and_then(|mut f| f.write_all(b"set 02:00:00:00:00:09 10.4")).expect("append");
        let mut again = table();
        let _log = LeaseLog::open(dir.path(), &mut again).expect("reopen");
        assert_eq!(again.counts(1000), t.counts(1000));
        assert_eq!(again.lease_of(&hw(3)), t.lease_of(&hw(3)));
        assert_eq!(again.lease_of(&hw(2)), None);
        // Compacted: a header and one line per record, the torn line gone.
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.starts_with(HEADER), "{text}");
    }

    #[test]
    fn the_file_is_compacted_when_it_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = table();
        let mut log = LeaseLog::open(dir.path(), &mut t).expect("open");
        let mut compactions = 0;
        for i in 0..3000u64 {
            let (_, change) = t.request(hw(1), Some(Ipv4Addr::new(10, 42, 0, 100)), 1000 + i).expect("ack");
            log.record(&change, &t).expect("record");
            // Each compaction done before the next line (as when requests come slower than the
            // disk syncs): the file never holds more than the threshold.
            if log.compacting.is_some() {
                compactions += 1;
                log.settle().expect("settle");
            }
        }
        let lines = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read").lines().count();
        assert!(lines <= 1026 && compactions == 2, "{lines} lines for one lease after {compactions} compactions");
    }

    #[test]
    fn changes_made_while_a_compaction_runs_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = table();
        let mut log = LeaseLog::open(dir.path(), &mut t).expect("open");
        for n in 1..=3 {
            let a = t.offer(hw(n), 1000).expect("offer");
            let (_, change) = t.request(hw(n), Some(a), 1000).expect("ack");
            log.record(&change, &t).expect("record");
        }
        let renew = |t: &mut LeaseTable, n: u8, at: u64| t.request(hw(n), Some(Ipv4Addr::new(10, 42, 0, 99 + n)), at).expect("renewal").1;
        let mut at = 1001;
        while log.compacting.is_none() {
            let change = renew(&mut t, 1, at);
            log.record(&change, &t).expect("record");
            at += 1;
        }
        // The compaction runs from a snapshot taken before these: the first is always appended
        // while it runs (later ones too, or after it was put in place).
        let released = t.release(hw(3), Ipv4Addr::new(10, 42, 0, 102), Ipv4Addr::new(10, 42, 0, 102)).expect("release");
        log.record(&released, &t).expect("record");
        for change in [renew(&mut t, 2, at + 1), renew(&mut t, 1, at + 2)] {
            log.record(&change, &t).expect("record");
        }
        log.settle().expect("settle");
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read");
        assert!(text.lines().count() < 10, "not compacted:\n{text}");
        drop(log);
        let mut again = table();
        let _log = LeaseLog::open(dir.path(), &mut again).expect("reopen");
        for n in 1..=3 {
            assert_eq!(again.lease_of(&hw(n)), t.lease_of(&hw(n)), "hw {n} after the compaction:\n{text}");
        }
        assert_eq!(again.counts(at), t.counts(at));
    }
}
