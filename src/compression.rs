//! Compressed streams for the system image and the NFS root tarball: written with the configured
//! codec, read by sniffing the magic bytes (so a renamed file still unpacks).

use std::io::{self, BufRead, BufReader, Read, Write};

/// A codec, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    Zstd,
    Gzip,
    Xz,
    None,
}

impl Codec {
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Zstd => ".zst",
            Codec::Gzip => ".gz",
            Codec::Xz => ".xz",
            Codec::None => "",
        }
    }

    /// The codec whose magic bytes start `head`; plain data otherwise.
    pub fn sniff(head: &[u8]) -> Codec {
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Codec::Zstd
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Codec::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Codec::Xz
        } else {
            Codec::None
        }
    }
}

impl From<crate::config::typed::Compression> for Codec {
    fn from(c: crate::config::typed::Compression) -> Self {
        use crate::config::typed::Compression as C;
        match c {
            C::Zstd => Codec::Zstd,
            C::Gzip => Codec::Gzip,
            C::Xz => Codec::Xz,
        }
    }
}

/// A compressing writer that must be finished to write its trailer.
pub enum Encoder<W: Write> {
    Zstd(zstd::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    Xz(xz2::write::XzEncoder<W>),
    None(W),
}

impl<W: Write> Encoder<W> {
    pub fn new(codec: Codec, inner: W) -> io::Result<Self> {
        Ok(match codec {
            Codec::Zstd => {
                let mut e = zstd::Encoder::new(inner, 6)?;
                // Multithreaded compression: the image is packed once and unpacked many times.
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
                e.multithread(threads)?;
                Encoder::Zstd(e)
            }
            // Fixed level and no file name or time in the header: the output is deterministic.
            Codec::Gzip => Encoder::Gzip(flate2::GzBuilder::new().mtime(0).write(inner, flate2::Compression::new(6))),
            Codec::Xz => Encoder::Xz(xz2::write::XzEncoder::new(inner, 6)),
            Codec::None => Encoder::None(inner),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Xz(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

/// A decompressing reader for whatever codec `inner` starts with.
pub fn decoder<'a, R: Read + Send + 'a>(inner: R) -> io::Result<(Codec, Box<dyn Read + Send + 'a>)> {
    let mut buffered = BufReader::with_capacity(1 << 20, inner);
    let codec = Codec::sniff(buffered.fill_buf()?);
    let reader: Box<dyn Read + Send + 'a> = match codec {
        Codec::Zstd => Box::new(zstd::Decoder::with_buffer(buffered)?),
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Codec::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(buffered)),
        Codec::None => Box::new(buffered),
    };
    Ok((codec, reader))
}

/// Size of the pieces a [`ReadAhead`] hands over.
const READ_AHEAD_CHUNK: usize = 1 << 20;
/// Pieces decoded ahead of the reader (and the buffers that circulate: this many plus two).
const READ_AHEAD_DEPTH: usize = 8;

/// What the reading thread of a [`ReadAhead`] sends.
enum Piece {
    Data(Vec<u8>),
    Failed(io::Error),
    End,
}

/// Reads `inner` in a thread of its own, [`READ_AHEAD_DEPTH`] pieces of 1 MiB ahead, so that
/// decompression runs on one core while the consumer (the installer's file writes) runs on
/// another. Buffers go back to the thread to be refilled rather than freed. The thread stops when
/// `inner` ends or fails (the error is the reader's next result) or when this is dropped.
pub struct ReadAhead {
    pieces: std::sync::mpsc::Receiver<Piece>,
    empties: std::sync::mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    finished: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadAhead {
    pub fn new<R: Read + Send + 'static>(mut inner: R) -> io::Result<ReadAhead> {
        let (send_piece, pieces) = std::sync::mpsc::sync_channel(READ_AHEAD_DEPTH);
        let (empties, recycled) = std::sync::mpsc::sync_channel::<Vec<u8>>(READ_AHEAD_DEPTH + 2);
        let thread = std::thread::Builder::new().name("read-ahead".into()).spawn(move || {
            loop {
                let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0; READ_AHEAD_CHUNK]);
                buf.resize(READ_AHEAD_CHUNK, 0);
                let mut filled = 0;
                let piece = loop {
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break None,
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break None;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Some(Piece::Failed(e)),
                    }
                };
                let ended = filled < buf.len();
                buf.truncate(filled);
                let stop = piece.is_some();
                if (!buf.is_empty() && send_piece.send(Piece::Data(buf)).is_err()) || stop || ended {
                    // Dropped reader, or the last piece: one final word, then the thread ends.
                    let _ = send_piece.send(piece.unwrap_or(Piece::End));
                    return;
                }
            }
        })?;
        Ok(ReadAhead { pieces, empties, current: Vec::new(), at: 0, finished: false, thread: Some(thread) })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.finished {
                return Ok(0);
            }
            match self.pieces.recv() {
                Ok(Piece::Data(data)) => {
                    let used = std::mem::replace(&mut self.current, data);
                    self.at = 0;
                    let _ = self.empties.try_send(used);
                }
                Ok(Piece::End) => self.finished = true,
                Ok(Piece::Failed(e)) => {
                    self.finished = true;
                    return Err(e);
                }
                // The thread ended without its final word: it panicked.
                Err(_) => {
                    self.finished = true;
                    return Err(io::Error::other("the read-ahead thread stopped in the middle of the stream"));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Unblock the thread (its next send fails), then wait for it.
        let (_, closed) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.pieces, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_is_sniffed() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for codec in [Codec::Zstd, Codec::Gzip, Codec::Xz, Codec::None] {
            let mut e = Encoder::new(codec, Vec::new()).expect("encoder");
            e.write_all(&data).expect("write");
            let packed = e.finish().expect("finish");
            let (seen, mut d) = decoder(&packed[..]).expect("decoder");
            assert_eq!(seen, codec);
            let mut out = Vec::new();
            d.read_to_end(&mut out).expect("read");
            assert_eq!(out, data, "{codec:?}");
        }
    }

    /// The read-ahead gives the same bytes as the stream, across piece boundaries and in reads
    /// of every size, and ends where the stream ends.
    #[test]
    fn read_ahead_passes_the_stream_through_unchanged() {
        let data: Vec<u8> = (0..(READ_AHEAD_CHUNK * 3 + 12345) as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let mut e = Encoder::new(Codec::Zstd, Vec::new()).expect("encoder");
        e.write_all(&data).expect("write");
        let packed = e.finish().expect("finish");
        let (_, d) = decoder(std::io::Cursor::new(packed)).expect("decoder");
        let mut ahead = ReadAhead::new(d).expect("thread");
        let mut out = Vec::new();
        let mut buf = vec![0u8; 7919];
        let mut size = 1;
        loop {
            let n = ahead.read(&mut buf[..size]).expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            size = size % buf.len() + 1;
        }
        assert_eq!(out.len(), data.len());
        assert!(out == data, "the bytes differ");
        assert_eq!(ahead.read(&mut buf).expect("read after the end"), 0);
    }

    /// A stream that fails in the middle fails the reader with that error (after the bytes that
    /// came before it), never a silent end.
    #[test]
    fn read_ahead_reports_the_streams_error() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated image"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut ahead = ReadAhead::new(Failing(READ_AHEAD_CHUNK + 10)).expect("thread");
        let mut out = Vec::new();
        let err = ahead.read_to_end(&mut out).expect_err("the error must come through");
        assert_eq!(err.to_string(), "truncated image");
        assert_eq!(out.len(), READ_AHEAD_CHUNK + 10);
    }

    /// Dropping the reader half-way stops the thread (the drop would hang otherwise).
    #[test]
    fn read_ahead_stops_when_dropped() {
        let mut ahead = ReadAhead::new(std::io::repeat(1)).expect("thread");
        let mut buf = [0u8; 100];
        ahead.read_exact(&mut buf).expect("read");
        drop(ahead);
    }
}
