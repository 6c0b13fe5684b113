//! Secure Boot with the site's own keys (`bootServer.secureBoot`). The firmware verifies the
//! boot file, a unified kernel image signed with the site's db key; everything the installer
//! takes from the network afterwards is checked against a manifest of digests inside that
//! signed image:
//!
//! - [`manifest`]: what the manifest holds (each file's size and the BLAKE3 digest of each of its
//!   chunks) and the reader that lets a chunk through only once it matches ([`manifest::Verified`]);
//! - [`keys`]: the key and the certificate, checked with `openssl` (a certificate that is not
//!   one, a key that does not belong to it, a key in the Nix store), for `check` and `sign`;
//! - [`pe`]: where a section may go in systemd-stub's PE image;
//! - [`sign`]: `nixos-pxe sign`, on the boot server where the key is: signs each installed
//!   system's boot file, writes the manifest, appends it to the installer's initrd, assembles the
//!   unified kernel image with `objcopy` and signs it with `sbsign`.
//!
//! - [`decision`]: serve's per-host decision as the signed installer reads it.
//!
//! The installer's side is in `crate::install::secure`.

pub mod decision;
pub mod keys;
pub mod manifest;
pub mod pe;
pub mod sign;

/// Where the signed files lie below serve's HTTP root (and the signer's output directory).
pub const HTTP_DIR: &str = "nixos-pxe/secure-boot";
/// Where the manifest is in the installer's initrd (and in the signer's output, for reading).
pub const MANIFEST_PATH: &str = "nixos-pxe/secure-boot/manifest.json";
