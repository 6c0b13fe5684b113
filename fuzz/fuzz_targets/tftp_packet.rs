//! Fuzzes the TFTP packet parser: any datagram must parse or give a typed error, never panic, and a
//! parsed request must encode back to a packet that parses to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixos_pxe_installer::serve::tftp_packet::{self as p, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(Packet::Rrq(r)) = p::parse(data) {
        let options: Vec<(&str, &str)> = r.options.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let again = p::encode_request(p::OP_RRQ, &r.filename, &r.mode, &options);
        if again.len() <= p::MAX_REQUEST {
            assert_eq!(p::parse(&again), Ok(Packet::Rrq(r)));
        }
    }
});
