//! Fuzzes what the DHCP server does with a datagram: decode (dhcproto), build the reply in both modes,
//! encode it. None of it may panic, whatever the client sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixos_pxe_installer::serve::dhcp::{self, Mode, Settings};
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = dhcp::parse(data) else { return };
    for mode in [Mode::Authoritative, Mode::Proxy] {
        let settings = Settings {
            mode,
            server: Ipv4Addr::new(10, 42, 0, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            range: (Ipv4Addr::new(10, 42, 0, 100), Ipv4Addr::new(10, 42, 0, 102)),
            router: Some(Ipv4Addr::new(10, 42, 0, 1)),
            name_servers: vec![Ipv4Addr::new(10, 42, 0, 1)],
            domain: Some("pxe.test".into()),
            lease_seconds: 3600,
            tftp_server: "10.42.0.1".into(),
            root_path: "10.42.0.1:/srv/nfsroot,vers=3,tcp".into(),
            // With serve's HTTP on, so that HTTP boot clients (option 93 = 16) get their answer too.
            http_boot_url: Some("http://10.42.0.1/bootx64.efi".into()),
            // Both ways: BOOTP requests answered, and not.
            answer_bootp: data.first().is_some_and(|b| b & 1 == 1),
        };
        let mut table = settings.lease_table([]);
        let outcome = dhcp::reply(&settings, &mut table, &request, 1000, Ipv4Addr::new(10, 42, 0, 100));
        if let Some(reply) = outcome.reply {
            let _ = dhcp::destination(&request, &reply);
            let mut out = Vec::new();
            let _ = dhcproto::Encodable::encode(&reply, &mut dhcproto::Encoder::new(&mut out));
        }
    }
});
