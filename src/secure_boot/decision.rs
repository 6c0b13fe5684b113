//! serve's per-host decision in Secure Boot mode, as `nixos-pxe/hosts/mac-<MAC>.json` carries it:
//! the signed installer has one command line for every host, so it asks serve over HTTP what the
//! per-host GRUB file tells a machine in the NFS-root mode. serve writes it, the installer reads
//! it: one type for both.

use serde::{Deserialize, Serialize};

/// What the machine does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "camelCase", deny_unknown_fields)]
pub enum HostDecision {
    /// Install: the words to add to the kernel command line (`nixos-pxe.host=`, `.generation=`,
    /// `.attempt=`, `.token=`, `.report=`, `.mac=`), as the per-host GRUB file puts them on the
    /// installer's.
    Install { words: String },
    /// Boot the installed system (the disk).
    LocalBoot { why: String },
    /// Neither: wait and ask again.
    Hold { why: String },
    /// serve cannot decide now, or not for the address that asked: wait and ask again.
    Wait { why: String },
}

/// The per-host decision's file name, beside the per-host GRUB file (`mac-<MAC>.cfg`).
pub fn file_name(mac: &crate::config::fleet::Mac) -> String {
    format!("mac-{mac}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_read_as_they_are_written() {
        for d in [
            HostDecision::Install { words: "nixos-pxe.host=a nixos-pxe.generation=1".into() },
            HostDecision::LocalBoot { why: "installed".into() },
            HostDecision::Hold { why: "failed twice".into() },
            HostDecision::Wait { why: "the store is away".into() },
        ] {
            let text = serde_json::to_string(&d).expect("json");
            assert_eq!(serde_json::from_str::<HostDecision>(&text).expect("read"), d, "{text}");
        }
        assert_eq!(serde_json::to_string(&HostDecision::LocalBoot { why: "x".into() }).expect("json"), r#"{"decision":"localBoot","why":"x"}"#);
        assert!(serde_json::from_str::<HostDecision>(r#"{"decision":"format","words":""}"#).is_err());
    }
}
