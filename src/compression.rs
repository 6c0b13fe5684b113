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
pub fn decoder<'a, R: Read + 'a>(inner: R) -> io::Result<(Codec, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::with_capacity(1 << 20, inner);
    let codec = Codec::sniff(buffered.fill_buf()?);
    let reader: Box<dyn Read + 'a> = match codec {
        Codec::Zstd => Box::new(zstd::Decoder::with_buffer(buffered)?),
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Codec::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(buffered)),
        Codec::None => Box::new(buffered),
    };
    Ok((codec, reader))
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
}
