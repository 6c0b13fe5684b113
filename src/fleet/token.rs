//! The secret of one install attempt: 256 random bits, written as 43 URL-safe base64 characters
//! on the installer's kernel command line (`nixos-pxe.token=`), kept by the store only as its
//! BLAKE3 hash (hexadecimal), and compared in constant time.

use std::io;

/// A new token: 32 bytes from the kernel's random source, URL-safe base64 without padding.
pub fn random() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        filled += rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()).map_err(io::Error::from)?;
    }
    Ok(base64_url(&bytes))
}

/// What the store keeps of a token: its BLAKE3 hash in hexadecimal (64 characters).
pub fn hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Whether `token` is the one whose hash is `stored`, in constant time (blake3::Hash compares
/// so). A stored value that is not a hash matches nothing.
pub fn matches(token: &str, stored: &str) -> bool {
    match blake3::Hash::from_hex(stored) {
        Ok(stored) => blake3::hash(token.as_bytes()) == stored,
        Err(_) => false,
    }
}

/// Whether `text` has the shape of a hash as [`hash`] writes it (for a hash a report carries).
pub fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// URL-safe base64 without padding (RFC 4648 section 5): safe on a kernel command line and in
/// JSON without quoting.
pub fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=group.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_differ() {
        let a = random().expect("random");
        let b = random().expect("random");
        assert_eq!(a.len(), 43, "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        // RFC 4648 section 10, in the URL-safe alphabet without padding.
        for (plain, encoded) in [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64_url(plain.as_bytes()), encoded);
        }
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn a_token_matches_its_hash_only() {
        let token = random().expect("random");
        let stored = hash(&token);
        assert!(is_hash(&stored));
        assert!(matches(&token, &stored));
        assert!(!matches(&format!("{token}x"), &stored));
        assert!(!matches("", &stored));
        assert!(!matches(&token, "not a hash"));
        assert!(!matches(&token, &hash("other")));
        assert!(!is_hash(&stored.to_uppercase()));
    }
}
