//! Each DHCP server hands each firmware its boot file, asked for real: ISC dhcpd, Kea and dnsmasq
//! (authoritative and proxy) started from `nixos-pxe render`'s files as they are, and
//! `nixos-pxe serve` in both modes, on a bridge in a network namespace this test makes; a raw DHCP
//! client in a second namespace sends DHCPDISCOVERs as the firmwares do (option 93 = 0 BIOS,
//! 7 and 9 x86-64 UEFI, 16 x86-64 UEFI HTTP with vendor class HTTPClient, 11 ARM64 UEFI) and
//! reads the boot file (option 67 or the file field) and option 60 of every reply; and one as GRUB
//! sends it (no option 93, and option 66 not asked for), whose reply must carry option 66: grub.cfg
//! reads the TFTP server from it.

mod common;

use common::Lab;
use dhcproto::v4::{Architecture, Decodable, Decoder, DhcpOption, Encodable, Encoder, Flags, Message, MessageType, OptionCode};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// One firmware's DHCPDISCOVER: its architecture and vendor class, as the real ones send them
/// (the classes are those iPXE and OVMF sent in the QEMU runs).
struct Client {
    arch: u16,
    vendor_class: &'static str,
}

const CLIENTS: &[Client] = &[
    Client { arch: 0, vendor_class: "PXEClient:Arch:00000:UNDI:002001" },
    Client { arch: 7, vendor_class: "PXEClient:Arch:00007:UNDI:003000" },
    Client { arch: 9, vendor_class: "PXEClient:Arch:00009:UNDI:003000" },
    Client { arch: 16, vendor_class: "HTTPClient:Arch:00016:UNDI:003000" },
    Client { arch: 11, vendor_class: "PXEClient:Arch:00011:UNDI:003000" },
];

/// What a client got: the boot file and option 60 of the reply that named a boot file, or None
/// when no reply did (no reply at all, or replies without a boot file).
type Got = Option<(String, Option<String>)>;

/// What all clients got: each firmware's boot file, and option 66 of the reply to GRUB's request.
#[derive(Debug)]
struct Asked {
    firmware: Vec<Got>,
    grub_tftp_server: Option<String>,
}

/// GRUB 2.06's own DHCPDISCOVER (net_bootp): no option 93, no vendor class, and the options it
/// asks for (captured from Debian's GRUB in the QEMU runs) do not include 66.
fn grub_discover() -> Message {
    let mut m = Message::new_with_id(xid(CLIENTS.len()), Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, &[0x52, 0x54, 0x00, 0x67, 0x72, 0x62]);
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(MessageType::Discover));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::Hostname,
        OptionCode::DomainName,
        OptionCode::RootPath,
        OptionCode::ExtensionsPath,
    ]));
    m
}

/// The client's own address on the boot network, for a PXE proxy's second step.
const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 250);

/// Asks for every client from namespace `ns` (interface eth0), as the firmware does, on a thread
/// of its own that enters the namespace (setns), so the test process stays where it is:
/// DHCPDISCOVER broadcast; from an authoritative server the offer names the file. A PXE proxy's
/// offer may not: dnsmasq's names none and gives BIOS clients a boot menu (option 43), and the
/// client then asks the proxy again on port 4011, unicast from its address, for the menu's first
/// boot item, as the PXE specification has it (iPXE and OVMF did so in the QEMU runs).
fn ask_all(ns: &str, proxy: bool) -> Asked {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let netns = std::fs::File::open(format!("/run/netns/{ns}")).expect("open the client's namespace");
        // SAFETY: setns(2) on this thread only, with a descriptor this thread owns.
        let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 68)).expect("bind port 68 in the client's namespace");
        socket.set_broadcast(true).expect("SO_BROADCAST");
        let device = b"eth0\0";
        // SAFETY: setsockopt(2) on the socket above with a NUL-terminated interface name.
        let rc = unsafe {
            libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_BINDTODEVICE, device.as_ptr().cast(), device.len() as libc::socklen_t)
        };
        assert_eq!(rc, 0, "SO_BINDTODEVICE eth0: {}", std::io::Error::last_os_error());
        for (i, client) in CLIENTS.iter().enumerate() {
            send(&socket, &discover(i, client), (Ipv4Addr::BROADCAST, 67));
        }
        send(&socket, &grub_discover(), (Ipv4Addr::BROADCAST, 67));
        // An authoritative server offers every client an address; dnsmasq and ISC dhcpd ping an
        // address before offering it (up to 3 s each), so wait until all have answered. A proxy
        // answers at once, and only some clients: a fixed window.
        let window = if proxy { Duration::from_secs(4) } else { Duration::from_secs(40) };
        let mut replies = collect(&socket, window, !proxy);
        if proxy {
            for (i, client) in CLIENTS.iter().enumerate() {
                let Some(offer) = replies[i].as_ref().filter(|r| boot_file(r).is_none()) else { continue };
                let server = match offer.opts().get(OptionCode::ServerIdentifier) {
                    Some(DhcpOption::ServerIdentifier(a)) => *a,
                    _ => offer.siaddr(),
                };
                send(&socket, &boot_server_request(i, client, offer), (server, 4011));
            }
            for (i, ack) in collect(&socket, Duration::from_secs(4), false).into_iter().enumerate().take(CLIENTS.len()) {
                if ack.is_some() {
                    replies[i] = ack;
                }
            }
        }
        let grub_tftp_server = replies[CLIENTS.len()].as_ref().and_then(|r| match r.opts().get(OptionCode::TFTPServerName) {
            Some(DhcpOption::TFTPServerName(n)) => Some(String::from_utf8_lossy(n).trim_end_matches('\0').to_string()),
            _ => None,
        });
        let firmware = replies[..CLIENTS.len()].iter().map(|r| r.as_ref().and_then(|r| boot_file(r).map(|f| (f, vendor_class(r))))).collect();
        Asked { firmware, grub_tftp_server }
    })
    .join()
    .expect("the client thread")
}

fn send(socket: &UdpSocket, m: &Message, to: (Ipv4Addr, u16)) {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).expect("encode");
    socket.send_to(&buf, to).expect("send");
}

/// The replies to CLIENTS and then GRUB for up to `window`, the one naming a boot file kept where
/// there are several; with `until_all`, it ends as soon as every one has one.
fn collect(socket: &UdpSocket, window: Duration, until_all: bool) -> Vec<Option<Message>> {
    let mut replies: Vec<Option<Message>> = vec![None; CLIENTS.len() + 1];
    let end = Instant::now() + window;
    let mut buf = [0u8; 1500];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if until_all && replies.iter().all(Option::is_some) {
            break;
        }
        socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).expect("timeout");
        let Ok((len, _)) = socket.recv_from(&mut buf) else { break };
        let Ok(reply) = Message::decode(&mut Decoder::new(&buf[..len])) else { continue };
        let Some(i) = (0..=CLIENTS.len()).find(|i| reply.xid() == xid(*i)) else { continue };
        if replies[i].as_ref().is_none_or(|r| boot_file(r).is_none()) {
            replies[i] = Some(reply);
        }
    }
    replies
}

/// The PXE client's second step with a proxy: DHCPREQUEST to the proxy's port 4011 from its own
/// address, naming the first boot item of the proxy's menu (option 43, PXE_BOOT_MENU 9), if any,
/// in PXE_BOOT_ITEM (71, layer 0).
fn boot_server_request(i: usize, client: &Client, offer: &Message) -> Message {
    let mut m = discover(i, client);
    m.set_ciaddr(CLIENT_ADDRESS).set_flags(Flags::default());
    m.opts_mut().insert(DhcpOption::MessageType(MessageType::Request));
    if let Some(DhcpOption::VendorExtensions(pxe)) = offer.opts().get(OptionCode::VendorExtensions)
        && let Some(menu) = pxe_option(pxe, 9)
        && menu.len() >= 2
    {
        m.opts_mut().insert(DhcpOption::VendorExtensions(vec![71, 4, menu[0], menu[1], 0, 0, 255]));
    }
    m
}

/// One option of the PXE options encapsulated in option 43.
fn pxe_option(mut bytes: &[u8], tag: u8) -> Option<&[u8]> {
    while let [t, rest @ ..] = bytes {
        if *t == 255 {
            return None;
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        if *t == tag {
            return Some(value);
        }
        bytes = &rest[usize::from(len)..];
    }
    None
}

fn vendor_class(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(String::from_utf8_lossy(v).into_owned()),
        _ => None,
    }
}

fn xid(i: usize) -> u32 {
    0x6e70_7800 + i as u32
}

/// A DHCPDISCOVER as a PXE or HTTP boot firmware sends it: broadcast reply asked for (the client
/// has no address), option 93, option 60, option 97 (UUID: a PXE proxy wants it) and the options it asks for.
fn discover(i: usize, client: &Client) -> Message {
    let mac = [0x52, 0x54, 0x00, 0x93, client.arch as u8, i as u8];
    let mut m = Message::new_with_id(xid(i), Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, &mac);
    m.set_flags(Flags::default().set_broadcast());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(client.arch)));
    opts.insert(DhcpOption::ClassIdentifier(client.vendor_class.as_bytes().to_vec()));
    opts.insert(DhcpOption::ClientMachineIdentifier(vec![0; 17]));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::ClassIdentifier,
        OptionCode::TFTPServerName,
        OptionCode::BootfileName,
        OptionCode::ClientMachineIdentifier,
    ]));
    m
}

/// Option 67, else the file field: the firmwares read either. ISC dhcpd and Kea end option 67
/// with a NUL, which the firmwares ignore.
fn boot_file(m: &Message) -> Option<String> {
    let bytes = match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => f.as_slice(),
        _ => m.fname()?,
    };
    let name = String::from_utf8_lossy(bytes).trim_end_matches('\0').to_string();
    (!name.is_empty()).then_some(name)
}

/// What each client of CLIENTS must get from an authoritative server of the rendered configs.
fn rendered_authoritative() -> Vec<Got> {
    vec![
        Some(("bios.0".into(), None)),
        Some(("bootx64.efi".into(), None)),
        Some(("bootx64.efi".into(), None)),
        Some(("http://10.42.0.1/bootx64.efi".into(), Some("HTTPClient".into()))),
        None,
    ]
}

/// The lab's server side: a JSON configuration for the boot network on br0.
fn config(dir: &Path, mode: &str) -> String {
    let tree = serde_json::json!({ "bootServer": {
        "address": "10.42.0.1", "interface": "br0", "subnet": "10.42.0.0/24", "dhcpMode": mode,
        "dhcpRange": if mode == "proxy" { serde_json::json!({}) } else { serde_json::json!({ "start": "10.42.0.100", "end": "10.42.0.199" }) },
        "tftpRoot": dir.join("tftp").to_str().expect("utf-8"),
    }});
    let file = dir.join(format!("{mode}.json"));
    std::fs::write(&file, tree.to_string()).expect("write config");
    std::fs::create_dir_all(dir.join("tftp")).expect("mkdir tftp");
    file.to_str().expect("utf-8").to_string()
}

fn render(dir: &Path, mode: &str) -> std::path::PathBuf {
    let out = dir.join(format!("rendered-{mode}"));
    common::nixos_pxe(&["render", "--config", &config(dir, mode), "--out", out.to_str().expect("utf-8")]);
    out
}

/// The DHCP servers under test.
#[derive(Clone, Copy, Debug)]
enum Server {
    IscDhcpd,
    Kea,
    Dnsmasq,
    DnsmasqProxy,
    /// serve, authoritative, with its HTTP endpoint (--http-port 80).
    Serve,
    /// serve, authoritative, without HTTP (no fleet, no --http-port).
    ServeWithoutHttp,
    /// serve as a proxy, with its HTTP endpoint.
    ServeProxy,
}

/// Starts `server` in the lab from its rendered file (or serve from the configuration), asks
/// with every client from a second namespace, and compares with `want`: the firmwares' boot files,
/// and (authoritative servers only: a proxy does not answer GRUB) option 66 in GRUB's reply.
fn answers(server: Server, want: Vec<Got>) {
    assert_eq!(common::run(std::process::Command::new("id").arg("-u")), "0\n", "this test needs root for network namespaces");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut lab = Lab::new(&format!("arch-{server:?}").to_lowercase());
    let client = lab.add_host("cli", "10.42.0.250");
    let log = d.join("server.log");
    let proxy = matches!(server, Server::DnsmasqProxy | Server::ServeProxy);
    let mode = if proxy { "proxy" } else { "authoritative" };
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    let ready = match server {
        Server::IscDhcpd => {
            let rendered = render(d, mode);
            std::fs::write(d.join("dhcpd.leases"), "").expect("leases");
            let (conf, leases, pid) = (path(&rendered.join("dhcpd.conf")), path(&d.join("dhcpd.leases")), path(&d.join("dhcpd.pid")));
            lab.spawn(&["dhcpd", "-4", "-f", "-d", "-cf", &conf, "-lf", &leases, "-pf", &pid, "br0"], &log);
            "Server starting service."
        }
        Server::Kea => {
            // Kea's lease, lock and pid files in a private mount namespace (as render_pxe_boot.rs does).
            let conf = path(&render(d, mode).join("kea-dhcp4.json"));
            let script = "mount -t tmpfs tmpfs /run && mkdir -p /run/kea && mount -t tmpfs tmpfs /var/lib && \
                          mkdir /var/lib/kea && exec kea-dhcp4 -c \"$1\"";
            lab.spawn(&["unshare", "--mount", "sh", "-c", script, "kea", &conf], &log);
            "DHCP4_STARTED"
        }
        Server::Dnsmasq | Server::DnsmasqProxy => {
            let conf = format!("--conf-file={}", path(&render(d, mode).join("dnsmasq.conf")));
            let leases = format!("--dhcp-leasefile={}", path(&d.join("dnsmasq.leases")));
            lab.spawn(&["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--pid-file", &leases, &conf], &log);
            "DHCP, sockets bound exclusively to interface br0"
        }
        Server::Serve | Server::ServeWithoutHttp | Server::ServeProxy => {
            let bin = env!("CARGO_BIN_EXE_nixos-pxe");
            let conf = config(d, mode);
            let tftp = path(&d.join("tftp"));
            // Its leases in the test's directory, not the host's /var/lib/nixos-pxe.
            let state = path(&d.join("serve-state"));
            let mut args = vec![bin, "serve", "--config", &conf, "--interface", "br0", "--dhcp", mode, "--tftp-root", &tftp, "--state-dir", &state];
            if !matches!(server, Server::ServeWithoutHttp) {
                args.extend(["--http-port", "80"]);
            }
            lab.spawn(&args, &log);
            "dhcp: serving"
        }
    };
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains(ready) {
        let exited = lab.exited();
        assert!(exited.is_empty() && start.elapsed() < Duration::from_secs(30), "{server:?} did not log {ready:?}:\n{}\n{}", exited.join("\n"), std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
    let asked = ask_all(&client, proxy);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    for (i, c) in CLIENTS.iter().enumerate() {
        assert_eq!(asked.firmware[i], want[i], "{server:?}: option 93 = {} ({}); all: {asked:?}\n--- server log:\n{log}", c.arch, c.vendor_class);
    }
    let want_66 = (!proxy).then(|| "10.42.0.1".to_string());
    assert_eq!(asked.grub_tftp_server, want_66, "{server:?}: option 66 in the reply to GRUB's request; all: {asked:?}\n--- server log:\n{log}");
}

#[test]
fn isc_dhcpd_hands_each_architecture_its_boot_file() {
    answers(Server::IscDhcpd, rendered_authoritative());
}

#[test]
fn kea_hands_each_architecture_its_boot_file() {
    answers(Server::Kea, rendered_authoritative());
}

#[test]
fn dnsmasq_hands_each_architecture_its_boot_file() {
    answers(Server::Dnsmasq, rendered_authoritative());
}

/// What each client must get from a PXE proxy: the PXE firmwares their files (the replies say
/// PXEClient); UEFI HTTP boot nothing (dnsmasq's proxy answers only PXEClient, and so does serve's).
fn proxy() -> Vec<Got> {
    let pxe = |file: &str| Some((file.to_string(), Some("PXEClient".to_string())));
    vec![pxe("bios.0"), pxe("bootx64.efi"), pxe("bootx64.efi"), None, None]
}

#[test]
fn dnsmasq_as_proxy_hands_each_pxe_architecture_its_boot_file() {
    answers(Server::DnsmasqProxy, proxy());
}

/// serve with its HTTP endpoint answers as the rendered configs do, UEFI HTTP boot with
/// `HTTPClient` and the URL of bootx64.efi there; without HTTP that client gets no URL (and serve
/// says why, tests/serve_dhcp.rs); as a proxy it answers the PXE firmwares only, as dnsmasq does.
#[test]
fn serve_hands_each_architecture_its_boot_file() {
    answers(Server::Serve, rendered_authoritative());
    let mut want = rendered_authoritative();
    want[3] = None;
    answers(Server::ServeWithoutHttp, want);
    answers(Server::ServeProxy, proxy());
}
