//! `nixos-pxe pack`: a deterministic tar of store paths, files, symlinks and empty directories
//! (sorted entries, mtime 1, owner root), compressed; the system image and the NFS root tarball.
//! The same entries as a cpio (newc) archive are the installer's initrd in Secure Boot mode.

use crate::compression::{Codec, Encoder};
use crate::error::Error;
use camino::{Utf8Path, Utf8PathBuf};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// The modification time of every entry: 1, as in the Nix store (0 reads as "unknown" to some tools).
pub const MTIME: u64 = 1;

/// What goes into the archive.
#[derive(Debug, Default)]
pub struct Spec {
    /// Files listing store paths, one absolute path per line (closureInfo's `store-paths`).
    pub store_path_lists: Vec<Utf8PathBuf>,
    /// (destination in the archive, source file or directory).
    pub files: Vec<(String, Utf8PathBuf)>,
    /// (destination, link target).
    pub symlinks: Vec<(String, String)>,
    /// Empty directories.
    pub dirs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Dir { mode: u32 },
    File { source: Utf8PathBuf, mode: u32, size: u64 },
    Symlink { target: String },
}

/// What was written.
#[derive(Debug)]
pub struct Summary {
    pub entries: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Parses `DEST=VALUE` as the command line gives it.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((dest, value)) if !dest.is_empty() && !value.is_empty() => Ok((dest.to_string(), value.to_string())),
        _ => Err(format!("`{s}` is not DEST=SOURCE")),
    }
}

/// An archive path: relative, no `.` or `..` components, no empty ones.
fn archive_path(dest: &str) -> Result<String, Error> {
    let parts: Vec<&str> = dest.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(Error::Message(format!("`{dest}` is not a usable path inside the archive")));
    }
    Ok(parts.join("/"))
}

struct Collector {
    entries: BTreeMap<String, Entry>,
}

impl Collector {
    fn insert(&mut self, path: String, entry: Entry) -> Result<(), Error> {
        // Parents first: every directory on the way exists in the archive.
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().map(|(_, p)| p.to_vec()).unwrap_or_default() {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(parent.clone(), Entry::Dir { mode: 0o755 });
                }
                Some(Entry::Dir { .. }) => {}
                Some(_) => return Err(Error::Message(format!("`{parent}` is both a file and a directory in the archive"))),
            }
        }
        match self.entries.get(&path) {
            Some(existing) if *existing == entry => Ok(()),
            Some(Entry::Dir { .. }) if matches!(entry, Entry::Dir { .. }) => {
                self.entries.insert(path, entry);
                Ok(())
            }
            Some(_) => Err(Error::Message(format!("`{path}` is given twice with different contents"))),
            None => {
                self.entries.insert(path, entry);
                Ok(())
            }
        }
    }

    /// Adds `source` (file, symlink or directory tree, symlinks not followed) at `dest`.
    fn add_tree(&mut self, dest: &str, source: &Utf8Path) -> Result<(), Error> {
        let meta = fs::symlink_metadata(source).map_err(Error::io(source))?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(source).map_err(Error::io(source))?;
            let target = target.to_str().ok_or_else(|| Error::Message(format!("{source}: link target is not UTF-8")))?;
            self.insert(dest.to_string(), Entry::Symlink { target: target.to_string() })
        } else if meta.is_dir() {
            self.insert(dest.to_string(), Entry::Dir { mode })?;
            let mut children: Vec<Utf8PathBuf> = Vec::new();
            for child in fs::read_dir(source).map_err(Error::io(source))? {
                let child = child.map_err(Error::io(source))?;
                let path = Utf8PathBuf::from_path_buf(child.path())
                    .map_err(|p| Error::Message(format!("{}: file name is not UTF-8", p.display())))?;
                children.push(path);
            }
            children.sort();
            for child in children {
                let name = child.file_name().unwrap_or_default().to_string();
                self.add_tree(&format!("{dest}/{name}"), &child)?;
            }
            Ok(())
        } else if meta.is_file() {
            self.insert(dest.to_string(), Entry::File { source: source.to_owned(), mode, size: meta.size() })
        } else {
            Err(Error::Message(format!("{source} is neither a file, a directory nor a symlink")))
        }
    }
}

/// The archive format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// GNU tar: the system image, the NFS root, the Secure Boot mode's tools.
    Tar,
    /// cpio newc, as the kernel unpacks an initrd: the Secure Boot mode's installer initrd.
    Newc,
}

/// Writes the archive described by `spec` to `out`, through a temporary file.
pub fn pack(spec: &Spec, codec: Codec, out: &Utf8Path) -> Result<Summary, Error> {
    pack_as(spec, Format::Tar, codec, out)
}

/// [`pack`] in `format`.
pub fn pack_as(spec: &Spec, format: Format, codec: Codec, out: &Utf8Path) -> Result<Summary, Error> {
    let mut collector = Collector { entries: BTreeMap::new() };
    for list in &spec.store_path_lists {
        let text = fs::read_to_string(list).map_err(Error::io(list))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !line.starts_with('/') {
                return Err(Error::Message(format!("{list}: `{line}` is not an absolute store path")));
            }
            collector.add_tree(&archive_path(line)?, Utf8Path::new(line))?;
        }
    }
    for (dest, source) in &spec.files {
        collector.add_tree(&archive_path(dest)?, source)?;
    }
    for (dest, target) in &spec.symlinks {
        collector.insert(archive_path(dest)?, Entry::Symlink { target: target.clone() })?;
    }
    for dest in &spec.dirs {
        collector.insert(archive_path(dest)?, Entry::Dir { mode: 0o755 })?;
    }

    let tmp = Utf8PathBuf::from(format!("{out}.tmp-{}", std::process::id()));
    let result = match format {
        Format::Tar => write_archive(&collector.entries, codec, &tmp),
        Format::Newc => write_newc(&collector.entries, codec, &tmp),
    };
    match result {
        Ok(bytes_in) => {
            fs::rename(&tmp, out).map_err(Error::io(out))?;
            let bytes_out = fs::metadata(out).map_err(Error::io(out))?.len();
            Ok(Summary { entries: collector.entries.len(), bytes_in, bytes_out })
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

fn write_archive(entries: &BTreeMap<String, Entry>, codec: Codec, path: &Utf8Path) -> Result<u64, Error> {
    let file = fs::File::create(path).map_err(Error::io(path))?;
    let encoder = Encoder::new(codec, BufWriter::with_capacity(1 << 20, file)).map_err(Error::io(path))?;
    let mut builder = tar::Builder::new(encoder);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut bytes = 0;
    for (name, entry) in entries {
        match entry {
            Entry::Dir { mode } => {
                let mut h = header(tar::EntryType::Directory, *mode, 0);
                builder.append_data(&mut h, format!("{name}/"), std::io::empty()).map_err(Error::io(path))?;
            }
            Entry::File { source, mode, size } => {
                let mut h = header(tar::EntryType::Regular, *mode, *size);
                let f = fs::File::open(source).map_err(Error::io(source))?;
                builder.append_data(&mut h, name, f).map_err(Error::io(source))?;
                bytes += size;
            }
            Entry::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                builder.append_link(&mut h, name, target).map_err(Error::io(path))?;
            }
        }
    }
    let encoder = builder.into_inner().map_err(Error::io(path))?;
    let mut inner = encoder.finish().map_err(Error::io(path))?;
    inner.flush().map_err(Error::io(path))?;
    Ok(bytes)
}

/// The entries as a newc archive (parents before children: the map is sorted by path).
fn write_newc(entries: &BTreeMap<String, Entry>, codec: Codec, path: &Utf8Path) -> Result<u64, Error> {
    use crate::cpio;
    let file = fs::File::create(path).map_err(Error::io(path))?;
    let encoder = Encoder::new(codec, BufWriter::with_capacity(1 << 20, file)).map_err(Error::io(path))?;
    let mut w = cpio::Writer::new(encoder);
    let mut bytes = 0;
    for (name, entry) in entries {
        match entry {
            Entry::Dir { mode } => w.entry(name, cpio::DIRECTORY | mode, b"", MTIME).map_err(Error::io(path))?,
            Entry::Symlink { target } => w.entry(name, cpio::SYMLINK | 0o777, target.as_bytes(), MTIME).map_err(Error::io(path))?,
            Entry::File { source, mode, size } => {
                let inode = w.inode();
                w.header(inode, cpio::REGULAR | mode, 1, MTIME, *size, name).map_err(Error::io(path))?;
                let mut f = fs::File::open(source).map_err(Error::io(source))?;
                let copied = std::io::copy(&mut f, &mut WriterData(&mut w)).map_err(Error::io(source))?;
                if copied != *size {
                    return Err(Error::Message(format!("{source} changed size while it was packed ({size} then {copied} bytes)")));
                }
                w.pad().map_err(Error::io(path))?;
                bytes += size;
            }
        }
    }
    let encoder = w.finish().map_err(Error::io(path))?;
    let mut inner = encoder.finish().map_err(Error::io(path))?;
    inner.flush().map_err(Error::io(path))?;
    Ok(bytes)
}

/// A file's contents streamed into a newc entry.
struct WriterData<'a, W: Write>(&'a mut crate::cpio::Writer<W>);

impl<W: Write> Write for WriterData<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.data(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_relative_and_clean() {
        assert_eq!(archive_path("/nix/store/abc").expect("ok"), "nix/store/abc");
        assert_eq!(archive_path("./a//b/").expect("ok"), "a/b");
        assert!(archive_path("a/../b").is_err());
        assert!(archive_path("/").is_err());
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_pair("=x").is_err());
    }
}
