//! The DHCP leases on disk: `leases` in serve's state directory, one line per change, appended as
//! it happens (as ISC dhcpd's and Kea's memfile lease files are), replayed at start and rewritten
//! whole (compacted) then and whenever it has grown to several times the records it holds. So a
//! restarted serve does not hand out an address a running client holds.
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
        Ok(LeaseLog { path, file, appended: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `change`; compacts when the file holds several times more lines than records.
    pub fn record(&mut self, change: &Change, table: &LeaseTable) -> io::Result<()> {
        self.file.write_all(line(change).as_bytes())?;
        self.appended += 1;
        let records = table.records().count();
        if self.appended > 1024 && self.appended > 4 * records {
            self.file = compact(&self.path, table)?;
            self.appended = 0;
        }
        Ok(())
    }
}

/// Writes every record of `table` to a new file (0600, synced) renamed over `path`; returns it
/// open for appending.
fn compact(path: &Path, table: &LeaseTable) -> io::Result<File> {
    let temporary = path.with_extension("new");
    let mut out = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    let mut text = String::with_capacity(64 * (table.records().count() + 1));
    text.push_str(HEADER);
    text.push('\n');
    let mut records: Vec<&Lease> = table.records().collect();
    records.sort_by_key(|l| u32::from(l.address));
    for l in records {
        text.push_str(&line(&Change::Set(*l)));
    }
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&temporary, path)?;
    OpenOptions::new().append(true).open(path)
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
        for i in 0..3000u64 {
            let (_, change) = t.request(hw(1), Some(Ipv4Addr::new(10, 42, 0, 100)), 1000 + i).expect("ack");
            log.record(&change, &t).expect("record");
        }
        let lines = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read").lines().count();
        assert!(lines <= 1026, "{lines} lines for one lease");
    }
}
