//! The heart of step 4: the system image's tar stream, decompressed while it is read, written onto
//! the mounted root. A module of its own so that benches/unpack.rs measures exactly the code the
//! installer runs.

use crate::compression::Codec;
use crate::error::Error;
use camino::Utf8Path;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the extraction reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Report {
    /// Before the first entry: the codec found and the image's size.
    Start { codec: Codec, image_bytes: u64 },
    /// Every 2 s, and once at the end.
    Progress { written: u64, read: u64, image_bytes: u64, elapsed: Duration },
}

/// What the extraction did.
#[derive(Debug, Clone, Copy)]
pub struct Extracted {
    /// Bytes of the (compressed) image read.
    pub bytes_read: u64,
    /// Bytes of file contents written.
    pub bytes_written: u64,
    /// Archive entries unpacked (files, directories, symlinks).
    pub entries: u64,
}

/// Counts the bytes read through it (the compressed image), for progress.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Unpacks the compressed tar `image` into `target` (owners, modes and mtimes as in the archive;
/// a path that leads outside `target` is refused), calling `report` as it goes.
pub fn extract(image: &Utf8Path, target: &Utf8Path, report: &mut dyn FnMut(Report)) -> Result<Extracted, Error> {
    let image_bytes = std::fs::metadata(image).map_err(Error::io(image))?.len();
    let file = std::fs::File::open(image).map_err(Error::io(image))?;
    let count = Arc::new(AtomicU64::new(0));
    let (codec, reader) = crate::compression::decoder(Counting { inner: file, count: count.clone() }).map_err(Error::io(image))?;
    report(Report::Start { codec, image_bytes });
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let start = Instant::now();
    let mut last = Instant::now();
    let (mut written, mut entries) = (0u64, 0u64);
    let progress = |written: u64| Report::Progress { written, read: count.load(Ordering::Relaxed), image_bytes, elapsed: start.elapsed() };
    for entry in archive.entries().map_err(|e| Error::Message(format!("reading {image}: {e}")))? {
        let mut entry = entry.map_err(|e| Error::Message(format!("reading {image}: {e}")))?;
        written += entry.size();
        entries += 1;
        let unpacked = entry.unpack_in(target).map_err(|e| {
            let path = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
            Error::Message(format!("unpacking {path} from {image} onto {target}: {e}"))
        })?;
        if !unpacked {
            return Err(Error::Message(format!("{image} holds a path outside the archive root; refusing it")));
        }
        if last.elapsed() >= Duration::from_secs(2) {
            report(progress(written));
            last = Instant::now();
        }
    }
    report(progress(written));
    Ok(Extracted { bytes_read: count.load(Ordering::Relaxed), bytes_written: written, entries })
}
