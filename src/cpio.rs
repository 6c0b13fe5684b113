//! The cpio "newc" format (`070701`), which the Linux kernel unpacks as its initramfs: what
//! `nixos-pxe pack --format newc` writes (the installer's initrd for Secure Boot mode) and what
//! `nixos-pxe sign` appends to it (the manifest). Written here rather than by `cpio` or
//! `bsdcpio`: deterministic (inode numbers in order, owner root, mtime fixed) and a few lines.
//! The kernel reads archives one after another in an initrd, compressed or not, so a signed
//! manifest can follow an archive made at build time (Documentation/driver-api/early-userspace).

use std::io::{self, Write};

/// File types as the mode's high bits give them (stat.h).
pub const DIRECTORY: u32 = 0o040000;
pub const REGULAR: u32 = 0o100000;
pub const SYMLINK: u32 = 0o120000;

/// Writes one archive's entries, in the order given, then the trailer.
pub struct Writer<W: Write> {
    out: W,
    next_inode: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Writer<W> {
        Writer { out, next_inode: 1, written: 0 }
    }

    /// One entry: `name` without a leading `/`, `mode` with its type bits, `data` the file's
    /// contents or a link's target (empty for a directory), `mtime` its time.
    pub fn entry(&mut self, name: &str, mode: u32, data: &[u8], mtime: u64) -> io::Result<()> {
        let inode = self.next_inode;
        self.next_inode += 1;
        let nlink = if mode & 0o170000 == DIRECTORY { 2 } else { 1 };
        self.header(inode, mode, nlink, mtime, data.len() as u64, name)?;
        self.put(data)?;
        self.pad()
    }

    /// The header of an entry whose `size` bytes of data the caller writes next with
    /// [`Writer::data`], then [`Writer::pad`] (large files, streamed).
    pub fn header(&mut self, inode: u32, mode: u32, nlink: u32, mtime: u64, size: u64, name: &str) -> io::Result<()> {
        let size = u32::try_from(size).map_err(|_| io::Error::other(format!("{name}: newc holds files below 4 GiB")))?;
        let mtime = u32::try_from(mtime).unwrap_or(u32::MAX);
        let namesize = name.len() + 1;
        let head = format!(
            "070701{inode:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{size:08X}{z:08X}{z:08X}{z:08X}{z:08X}{namesize:08X}{z:08X}",
            uid = 0,
            gid = 0,
            z = 0,
        );
        self.put(head.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    pub fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.put(bytes)
    }

    /// Zero bytes up to the next multiple of four (after a header's name, and after data).
    pub fn pad(&mut self) -> io::Result<()> {
        let rest = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0; 3][..rest])
    }

    /// A new inode number for an entry written with [`Writer::header`].
    pub fn inode(&mut self) -> u32 {
        let inode = self.next_inode;
        self.next_inode += 1;
        inode
    }

    /// The trailer; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let inode = self.inode();
        self.header(inode, 0, 1, 0, 0, "TRAILER!!!")?;
        Ok(self.out)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// The files of a newc archive, as (name, mode, data): for tests and for reading a manifest
/// back out of an initrd.
pub fn read(mut bytes: &[u8]) -> Result<Vec<(String, u32, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let start_len = bytes.len();
    loop {
        // Archives may be followed by zero padding and by more archives.
        let skipped = bytes.iter().take_while(|b| **b == 0).count();
        bytes = &bytes[skipped..];
        if bytes.is_empty() {
            return Ok(out);
        }
        let at = start_len - bytes.len();
        if bytes.len() < 110 || &bytes[..6] != b"070701" {
            return Err(format!("no newc header at byte {at}"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let text = std::str::from_utf8(&bytes[6 + i * 8..14 + i * 8]).map_err(|_| format!("a header field at byte {at} is not text"))?;
            u32::from_str_radix(text, 16).map_err(|_| format!("a header field at byte {at} is not hexadecimal"))
        };
        let (mode, size, namesize) = (field(1)?, field(6)? as usize, field(11)? as usize);
        let name_end = 110 + namesize;
        let data_start = name_end.div_ceil(4) * 4;
        let data_end = data_start + size;
        if bytes.len() < data_end || namesize == 0 {
            return Err(format!("the entry at byte {at} runs past the end"));
        }
        let name = String::from_utf8_lossy(&bytes[110..name_end - 1]).into_owned();
        let data = bytes[data_start..data_end].to_vec();
        bytes = &bytes[(data_end.div_ceil(4) * 4).min(bytes.len())..];
        if name == "TRAILER!!!" {
            continue;
        }
        out.push((name, mode, data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_two_archives_read_as_one() {
        let mut w = Writer::new(Vec::new());
        w.entry("nixos-pxe", DIRECTORY | 0o755, b"", 1).expect("dir");
        w.entry("nixos-pxe/config.json", REGULAR | 0o644, b"{}", 1).expect("file");
        w.entry("init", SYMLINK | 0o777, b"/nixos-pxe/tools/bin/nixos-pxe", 1).expect("link");
        let mut bytes = w.finish().expect("finish");
        assert_eq!(bytes.len() % 4, 0);
        let mut second = Writer::new(Vec::new());
        second.entry("nixos-pxe/secure-boot/manifest.json", REGULAR | 0o444, b"{\"format\":1}", 1).expect("file");
        bytes.extend(second.finish().expect("finish"));
        let read = read(&bytes).expect("read");
        let names: Vec<&str> = read.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["nixos-pxe", "nixos-pxe/config.json", "init", "nixos-pxe/secure-boot/manifest.json"]);
        assert_eq!(read[1].2, b"{}");
        assert_eq!(read[2].1, SYMLINK | 0o777);
        assert_eq!(read[3].2, b"{\"format\":1}");
    }

    /// The header as the kernel's init/initramfs.c parses it: 13 fields of 8 hex digits.
    #[test]
    fn a_header_is_110_bytes_and_names_are_padded() {
        let mut w = Writer::new(Vec::new());
        w.entry("a", REGULAR | 0o600, b"xyz", 7).expect("file");
        let bytes = w.finish().expect("finish");
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[6 + 8 * 5..6 + 8 * 6], b"00000007", "mtime");
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..115], b"xyz", "the name and its NUL padded to 4: 110 + 2 = 112");
    }
}
