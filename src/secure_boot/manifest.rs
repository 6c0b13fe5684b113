//! The manifest: the digest of every file the installer takes from the boot server in Secure
//! Boot mode, carried in the signed initrd, so that the firmware's check of the boot file covers
//! them too. A file's digest is its size and the BLAKE3 hash of each chunk of [`CHUNK`] bytes:
//! a streamed image can be checked piece by piece as it arrives, and no byte of a piece reaches
//! the disk before that piece has matched ([`Verified`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Read};

/// The chunk size: large enough that the list stays short (256 digests a GiB), small enough that
/// holding one back until it is checked costs little memory.
pub const CHUNK: u64 = 4 << 20;
/// The manifest's format; an installer refuses another.
pub const FORMAT: u32 = 1;

/// A file's digest: its path below serve's HTTP root, its size, its chunks' BLAKE3 hashes (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileDigest {
    pub path: String,
    pub size: u64,
    pub chunks: Vec<String>,
}

/// Everything the installer may fetch, by what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub chunk_size: u64,
    /// serve's HTTP endpoint, as the signed command line names it (`http://10.42.0.1:80`).
    pub server: String,
    /// The installer's programs (the NFS root's tools and their closure), a tar unpacked into the
    /// initrd's root.
    pub tools: FileDigest,
    /// Each system image, by the name config.json gives it (`systems/HASH.tar.zst`, or
    /// `system.tar.zst` for a single installer).
    pub images: BTreeMap<String, FileDigest>,
    /// The signed boot file (a unified kernel image) of the system each image holds, by the
    /// image's name.
    pub boot_files: BTreeMap<String, FileDigest>,
}

impl Manifest {
    pub fn parse(text: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(text).map_err(|e| format!("the manifest is not readable: {e}"))?;
        if m.format != FORMAT {
            return Err(format!("the manifest is of format {}, this installer reads format {FORMAT}: the boot server signed with another nixos-pxe", m.format));
        }
        if m.chunk_size != CHUNK {
            return Err(format!("the manifest's chunks are {} bytes, this installer checks {CHUNK}", m.chunk_size));
        }
        Ok(m)
    }
}

/// The digest of everything `reader` gives, as it would be recorded for `path`.
pub fn digest(path: &str, mut reader: impl Read) -> io::Result<FileDigest> {
    let mut chunks = Vec::new();
    let mut size = 0;
    let mut buf = vec![0; CHUNK as usize];
    loop {
        let n = fill(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        chunks.push(blake3::hash(&buf[..n]).to_hex().to_string());
        size += n as u64;
        if n < buf.len() {
            break;
        }
    }
    Ok(FileDigest { path: path.to_string(), size, chunks })
}

/// Reads until `buf` is full or the input ends; the count read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Why a file from the boot server is not the one that was signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("{path}: bytes {start}-{end} (chunk {index} of {count}) are not the ones that were signed (BLAKE3 {got}, the manifest says {want}): the file on the boot server was changed after `nixos-pxe sign`, or by someone on the way")]
    Chunk { path: String, index: usize, count: usize, start: u64, end: u64, got: String, want: String },
    #[error("{path}: {got} bytes arrived, the manifest says {want}: the file on the boot server was changed after `nixos-pxe sign`, or cut short on the way")]
    Size { path: String, got: u64, want: u64 },
}

/// A reader that passes on `inner`'s bytes one chunk at a time, each only after its hash has
/// matched the manifest; the first mismatch (a chunk, or the size: more or fewer bytes) is an
/// error of kind `InvalidData` holding a [`Mismatch`], and nothing of that chunk is passed on.
pub struct Verified<R> {
    inner: R,
    digest: FileDigest,
    buf: Vec<u8>,
    at: usize,
    len: usize,
    index: usize,
    read: u64,
    done: bool,
}

impl<R: Read> Verified<R> {
    pub fn new(inner: R, digest: FileDigest) -> Verified<R> {
        Verified { inner, digest, buf: vec![0; CHUNK as usize], at: 0, len: 0, index: 0, read: 0, done: false }
    }

    /// Bytes read from `inner` so far (for progress).
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    fn fail(&mut self, m: Mismatch) -> io::Error {
        self.done = true;
        io::Error::new(io::ErrorKind::InvalidData, m)
    }

    /// Fills the next chunk and checks it; false at the end of a file that matched whole.
    fn next_chunk(&mut self) -> io::Result<bool> {
        let n = fill(&mut self.inner, &mut self.buf)?;
        self.read += n as u64;
        let count = self.digest.chunks.len();
        if n == 0 {
            self.done = true;
            if self.index == count && self.read == self.digest.size {
                return Ok(false);
            }
            let m = Mismatch::Size { path: self.digest.path.clone(), got: self.read, want: self.digest.size };
            return Err(self.fail(m));
        }
        // More bytes than the manifest's size, or a chunk beyond its list: the size is wrong.
        if self.read > self.digest.size || self.index >= count {
            let m = Mismatch::Size { path: self.digest.path.clone(), got: self.read, want: self.digest.size };
            return Err(self.fail(m));
        }
        let got = blake3::hash(&self.buf[..n]).to_hex().to_string();
        let want = &self.digest.chunks[self.index];
        if &got != want {
            let start = self.index as u64 * CHUNK;
            let m = Mismatch::Chunk { path: self.digest.path.clone(), index: self.index + 1, count, start, end: start + n as u64 - 1, got, want: want.clone() };
            return Err(self.fail(m));
        }
        self.index += 1;
        self.at = 0;
        self.len = n;
        Ok(true)
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.len && (self.done || !self.next_chunk()?) {
            return Ok(0);
        }
        let n = out.len().min(self.len - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads `reader` to its end through [`Verified`], keeping nothing: the pre-pass over a file
/// that is too big to keep (a system image), before anything is written. Returns the bytes read.
pub fn check_all(reader: impl Read, digest: &FileDigest) -> io::Result<u64> {
    let mut v = Verified::new(reader, digest.clone());
    let mut sink = vec![0; 1 << 20];
    loop {
        if v.read(&mut sink)? == 0 {
            return Ok(v.bytes_read());
        }
    }
}

/// The [`Mismatch`] inside an error from [`Verified`], if that is what it is.
pub fn mismatch(e: &io::Error) -> Option<&Mismatch> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Mismatch>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    fn read_all(r: impl Read, d: &FileDigest) -> (Vec<u8>, Option<io::Error>) {
        let mut v = Verified::new(r, d.clone());
        let mut out = Vec::new();
        let mut buf = vec![0; 100_000];
        loop {
            match v.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn the_signed_bytes_pass_whole() {
        for n in [0, 1, CHUNK as usize - 1, CHUNK as usize, CHUNK as usize + 1, 3 * CHUNK as usize + 17] {
            let data = bytes(n);
            let d = digest("f", &data[..]).expect("digest");
            assert_eq!((d.size, d.chunks.len()), (n as u64, (n as u64).div_ceil(CHUNK) as usize));
            let (out, err) = read_all(&data[..], &d);
            assert!(err.is_none(), "{n}: {err:?}");
            assert_eq!(out, data, "{n}");
            assert_eq!(check_all(&data[..], &d).expect("check"), n as u64);
        }
    }

    /// One byte changed in the third chunk: the first two chunks pass, nothing of the third
    /// does, and the error names the chunk and its bytes.
    #[test]
    fn no_byte_of_a_changed_chunk_is_passed_on() {
        let data = bytes(3 * CHUNK as usize + 17);
        let d = digest("systems/web.tar.zst", &data[..]).expect("digest");
        let mut changed = data.clone();
        changed[2 * CHUNK as usize + 5] ^= 1;
        let (out, err) = read_all(&changed[..], &d);
        assert_eq!(out.len(), 2 * CHUNK as usize, "exactly the two chunks before the change");
        let err = err.expect("a mismatch");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        match mismatch(&err) {
            Some(Mismatch::Chunk { index, count, start, end, .. }) => assert_eq!((*index, *count, *start, *end), (3, 4, 2 * CHUNK, 3 * CHUNK - 1)),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("systems/web.tar.zst: bytes 8388608-12582911 (chunk 3 of 4) are not the ones that were signed"), "{err}");
        assert!(check_all(&changed[..], &d).is_err());
    }

    #[test]
    fn a_longer_or_shorter_file_is_refused() {
        let data = bytes(CHUNK as usize + 10);
        let d = digest("f", &data[..]).expect("digest");
        let (_, err) = read_all(&data[..data.len() - 1], &d);
        assert!(matches!(err.as_ref().and_then(mismatch), Some(Mismatch::Chunk { index: 2, .. })), "{err:?}");
        let mut longer = data.clone();
        longer.push(0);
        let (out, err) = read_all(&longer[..], &d);
        assert!(matches!(err.as_ref().and_then(mismatch), Some(Mismatch::Size { got, want, .. }) if *got == *want + 1), "{err:?}");
        assert_eq!(out.len(), CHUNK as usize);
        // Whole chunks appended after the last one: the size is wrong.
        let mut appended = data.clone();
        appended.extend(bytes(CHUNK as usize));
        let short = digest("f", &data[..CHUNK as usize]).expect("digest");
        let (out, err) = read_all(&appended[..], &short);
        assert!(matches!(err.as_ref().and_then(mismatch), Some(Mismatch::Size { .. })), "{err:?}");
        assert_eq!(out.len(), CHUNK as usize);
        let (_, err) = read_all(&data[..0], &d);
        assert!(matches!(err.as_ref().and_then(mismatch), Some(Mismatch::Size { got: 0, .. })), "{err:?}");
    }

    #[test]
    fn the_manifest_says_its_format() {
        let m = Manifest {
            format: FORMAT,
            chunk_size: CHUNK,
            server: "http://10.42.0.1:80".into(),
            tools: digest("nixos-pxe/secure-boot/tools.tar.zst", &b"t"[..]).expect("digest"),
            images: BTreeMap::new(),
            boot_files: BTreeMap::new(),
        };
        let text = serde_json::to_vec(&m).expect("json");
        assert_eq!(Manifest::parse(&text), Ok(m.clone()));
        let other = serde_json::to_vec(&Manifest { format: 2, ..m }).expect("json");
        assert!(Manifest::parse(&other).unwrap_err().contains("format 2"));
    }
}
