//! How a disk says "host H's install of generation G is on me": the GPT disk GUID (set by the
//! installer's sfdisk script as `label-id:`) is derived from H and G, so the disk probe can tell
//! this host's own unfinished attempt (which it may overwrite) from any other disk (which it
//! still refuses). And the completion stamp, written on the ESP last, that the per-host GRUB
//! configuration looks for before it installs.

use std::fmt;
use std::str::FromStr;

/// A GUID as sfdisk and blkid print it (`8-4-4-4-12` hexadecimal digits), held in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid([u8; 16]);

/// The GPT disk GUID that marks a disk as `host`'s install of `generation`: a UUID (version 8,
/// "custom"; RFC 9562 variant) from the first 16 bytes of
/// blake3("nixos-pxe disk marker\0" + host + "\0" + generation in decimal).
pub fn disk_guid(host: &str, generation: u32) -> Guid {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"nixos-pxe disk marker\0");
    hasher.update(host.as_bytes());
    hasher.update(b"\0");
    hasher.update(generation.to_string().as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Guid(bytes)
}

/// Whether a disk whose GPT disk GUID is `found` holds `host`'s own (unfinished) install of
/// `generation`, so that `wipe = "if-empty"` may still overwrite it.
pub fn is_own_attempt(found: &Guid, host: &str, generation: u32) -> bool {
    *found == disk_guid(host, generation)
}

/// The file the installer writes on the ESP last: `/nixos-pxe/done-<host>-g<generation>`.
pub fn done_stamp(host: &str, generation: u32) -> String {
    format!("/nixos-pxe/done-{host}-g{generation}")
}

impl Guid {
    /// The GUID from the 16 bytes of a GPT header's DiskGUID field (offset 56 of LBA 1): the
    /// first three fields are stored little-endian there.
    pub fn from_gpt_bytes(raw: [u8; 16]) -> Guid {
        let mut b = raw;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Guid(b)
    }

    /// The 16 bytes as a GPT header stores them.
    pub fn to_gpt_bytes(&self) -> [u8; 16] {
        let mut b = self.0;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        b
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Why a text is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a GUID; expected 8-4-4-4-12 hexadecimal digits")]
pub struct GuidError(pub String);

impl FromStr for Guid {
    type Err = GuidError;

    /// `8-4-4-4-12` hexadecimal digits, any case (as sfdisk --disk-id and blkid print it).
    fn from_str(text: &str) -> Result<Guid, GuidError> {
        let groups: Vec<&str> = text.split('-').collect();
        let shape_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]) && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
        if !shape_ok {
            return Err(GuidError(text.to_string()));
        }
        let digits = groups.concat();
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| GuidError(text.to_string()))?;
        }
        Ok(Guid(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_marker_is_a_fixed_v8_uuid_per_host_and_generation() {
        let g = disk_guid("web1", 2);
        // Pinned: the installer and the disk probe of another version must agree on it.
        assert_eq!(g.to_string(), "13f382a9-8e37-8674-a4c7-f1998c12517e");
        let text = g.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "8", "version 8: {text}");
        assert!("89ab".contains(&text[19..20]), "RFC 9562 variant: {text}");
        assert_eq!(disk_guid("web1", 2), g, "deterministic");
        assert_ne!(disk_guid("web1", 3), g);
        assert_ne!(disk_guid("web2", 2), g);
        // The separator keeps "web1" + "12" apart from "web11" + "2".
        assert_ne!(disk_guid("web1", 12), disk_guid("web11", 2));
        assert!(is_own_attempt(&g, "web1", 2));
        assert!(!is_own_attempt(&g, "web1", 1));
        assert_eq!(text.parse::<Guid>(), Ok(g));
        assert_eq!(text.to_uppercase().parse::<Guid>(), Ok(g));
        assert!("9b1f5b86-0c73-8f6c-9c4b".parse::<Guid>().is_err());
        assert!("zb1f5b86-0c73-8f6c-9c4b-7a0f5e0e23a1".parse::<Guid>().is_err());
        assert_eq!(Guid::from_gpt_bytes(g.to_gpt_bytes()), g);
        assert_eq!(done_stamp("web1", 2), "/nixos-pxe/done-web1-g2");
    }

    /// sfdisk writes the GUID given as `label-id:` into the GPT header; reading the header's
    /// bytes back with `from_gpt_bytes` gives the same GUID (so the probe can read it raw).
    #[test]
    fn sfdisk_writes_the_marker_where_the_probe_reads_it() {
        let sfdisk = which::which("sfdisk").expect("sfdisk (util-linux's fdisk package) is needed for this test");
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image).and_then(|f| f.set_len(8 << 20)).expect("image file");
        let guid = disk_guid("db1", 7);
        let script = format!("label: gpt\nlabel-id: {guid}\n,,U\n");
        let mut child = Command::new(&sfdisk)
            .arg("--no-reread")
            .arg("--no-tell-kernel")
            .arg(&image)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run sfdisk");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), script.as_bytes()).expect("script");
        let out = child.wait_with_output().expect("sfdisk");
        assert!(out.status.success(), "sfdisk: {}", String::from_utf8_lossy(&out.stderr));
        let bytes = std::fs::read(&image).expect("read image");
        let header = &bytes[512..1024];
        assert_eq!(&header[..8], b"EFI PART");
        let raw: [u8; 16] = header[56..72].try_into().expect("16 bytes");
        assert_eq!(Guid::from_gpt_bytes(raw), guid);
        let printed = Command::new(&sfdisk).arg("--disk-id").arg(&image).output().expect("sfdisk --disk-id");
        let printed = String::from_utf8_lossy(&printed.stdout).trim().to_string();
        assert_eq!(printed.parse::<Guid>(), Ok(guid), "sfdisk --disk-id printed {printed}");
    }
}
