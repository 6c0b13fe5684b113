//! A kernel configuration symbol as the options and the fragment write it: the one rule both the
//! option schema (checking `nfsroot.extraKernelOptions`) and the fragment use, with nothing else
//! to depend on.

/// `SYMBOL` or `SYMBOL=VALUE` (an optional `CONFIG_` prefix is dropped) into name and value.
pub fn parse_symbol(s: &str) -> Option<(String, String)> {
    let s = s.strip_prefix("CONFIG_").unwrap_or(s);
    let (name, value) = match s.split_once('=') {
        Some((n, v)) if !v.is_empty() && !v.contains('\n') => (n, v),
        Some(_) => return None,
        None => (s, "y"),
    };
    let name_ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    name_ok.then(|| (name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_parse() {
        assert_eq!(parse_symbol("IXGBE"), Some(("IXGBE".into(), "y".into())));
        assert_eq!(parse_symbol("CONFIG_NR_CPUS=512"), Some(("NR_CPUS".into(), "512".into())));
        assert_eq!(parse_symbol("ixgbe"), None);
        assert_eq!(parse_symbol("A=B=C").map(|p| p.1), Some("B=C".into()));
        assert_eq!(parse_symbol("FOO="), None);
        assert_eq!(parse_symbol("9P_FS"), None);
    }
}
