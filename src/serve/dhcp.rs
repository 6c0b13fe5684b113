//! The DHCP server of `nixos-pxe serve` (dhcproto): authoritative (leases from bootServer.dhcpRange plus
//! the PXE options) or proxy (PXE options only); replies are pure functions of the request and the lease table.

use super::lease_log::LeaseLog;
use super::leases::{Change, HwAddr, LeaseTable, NoAddress, Timing};
use super::limits::Throttle;
use crate::boot_file::{Firmware, HTTP_CLIENT_VENDOR_CLASS};
use crate::config::typed::BootServer;
use dhcproto::v4::{Decodable, Decoder, DhcpOption, Encodable, Encoder, Message, MessageType, Opcode, OptionCode};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Authoritative,
    Proxy,
}

/// What the replies carry, taken from bootServer.*.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub server: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub range: (Ipv4Addr, Ipv4Addr),
    pub router: Option<Ipv4Addr>,
    pub name_servers: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_seconds: u32,
    /// Option 66: the name if bootServer.name is set, else the address.
    pub tftp_server: String,
    /// Option 17: `<address>:<nfsExport>,<nfsMountOptions>`.
    pub root_path: String,
    /// Option 67 for a UEFI HTTP boot client in authoritative mode: the URL of bootx64.efi on
    /// serve's own HTTP endpoint (which serves the TFTP root). None when serve has no HTTP: such a
    /// client then gets no boot file, and `serve` says so in its log.
    pub http_boot_url: Option<String>,
    /// Answer BOOTP requests (no option 53) with an address, as the seed's ISC dhcpd did for old
    /// loaders (bootServer.answerBootp). Off: such a request is not answered.
    pub answer_bootp: bool,
}

impl Settings {
    /// From bootServer.*; says which option is missing.
    pub fn from_config(s: &BootServer, mode: Mode) -> Result<Settings, String> {
        let server = s.address.ok_or("bootServer.address is not set (e.g. \"10.42.0.1\")")?;
        let (_, prefix) = s.subnet_parts().ok_or("bootServer.subnet is not set (e.g. \"10.42.0.0/24\")")?;
        let netmask = Ipv4Addr::from(if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) });
        let range = match (mode, s.dhcp_range.start, s.dhcp_range.end) {
            (Mode::Authoritative, Some(a), Some(b)) => (a, b),
            (Mode::Authoritative, _, _) => return Err("bootServer.dhcpRange.start and .end are needed for authoritative DHCP".into()),
            (Mode::Proxy, _, _) => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
        };
        Ok(Settings {
            mode,
            server,
            netmask,
            range,
            router: s.router,
            name_servers: s.name_servers.clone(),
            domain: s.domain_name.clone(),
            lease_seconds: s.lease_seconds,
            tftp_server: s.tftp_server_name().unwrap_or_else(|| server.to_string()),
            root_path: format!("{server}:{},{}", s.nfs_export, s.nfs_mount_options),
            http_boot_url: None,
            answer_bootp: s.answer_bootp,
        })
    }

    /// The authoritative pool these settings describe, keeping addresses for `fleet`.
    pub fn lease_table(&self, fleet: impl IntoIterator<Item = HwAddr>) -> LeaseTable {
        match self.mode {
            Mode::Authoritative => LeaseTable::new(self.range, Timing::new(self.lease_seconds), fleet),
            // No pool: a proxy hands out no address.
            Mode::Proxy => LeaseTable::new((Ipv4Addr::BROADCAST, Ipv4Addr::UNSPECIFIED), Timing::new(self.lease_seconds), []),
        }
    }
}

/// The client's architecture (option 93), if it sent one.
fn architecture(request: &Message) -> Option<u16> {
    match request.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => None,
    }
}

/// Option 67 by the client's architecture (src/boot_file.rs): bios.0 for BIOS (0), bootx64.efi for
/// x86-64 UEFI (7, 9). A client that sends no option 93 (GRUB's own BOOTP, a Linux DHCP client)
/// gets bootx64.efi too, as before: it is past the firmware and ignores it. UEFI HTTP boot (16)
/// gets the URL of bootx64.efi on serve's HTTP endpoint, or nothing when serve has none.
fn boot_file(settings: &Settings, arch: Option<u16>) -> Option<String> {
    match arch.map(Firmware::from_architecture) {
        None => Some(Firmware::Uefi.file_name().to_string()),
        Some(Some(f @ (Firmware::Bios | Firmware::Uefi))) => Some(f.file_name().to_string()),
        Some(Some(Firmware::UefiHttp)) => settings.http_boot_url.clone().filter(|_| settings.mode == Mode::Authoritative),
        Some(None) => None,
    }
}

fn is_pxe_client(request: &Message) -> bool {
    matches!(request.opts().get(OptionCode::ClassIdentifier), Some(DhcpOption::ClassIdentifier(c)) if c.starts_with(b"PXEClient"))
}

/// A UEFI HTTP boot client: option 93 = 16 (x64 UEFI HTTP). EDK2 also sends vendor class
/// `HTTPClient:Arch:00016:...` and takes an offer only when it echoes `HTTPClient` in option 60.
pub fn is_http_boot_client(request: &Message) -> bool {
    architecture(request).and_then(Firmware::from_architecture) == Some(Firmware::UefiHttp)
}

/// Why a UEFI HTTP boot client gets no boot file from these settings, if it gets none: the log
/// says it once (a firmware retries every few seconds).
pub fn http_boot_refusal(settings: &Settings) -> Option<&'static str> {
    match (settings.mode, &settings.http_boot_url) {
        // As dnsmasq's proxy: HTTPClient is not a PXE proxy's class, and the site's server, which
        // answers the client first with an address, would have to name the URL.
        (Mode::Proxy, _) => Some(
            "in proxy mode serve answers PXE clients only; have the site's DHCP server answer vendor class HTTPClient with option 60 \
             HTTPClient and the URL of bootx64.efi on serve's HTTP endpoint, or boot the machine over PXE",
        ),
        (Mode::Authoritative, None) => Some(
            "serve has no HTTP endpoint to send it to (--http-port 0, or no fleet and no --http-port); give serve --http-port PORT, \
             or boot the machine over PXE",
        ),
        (Mode::Authoritative, Some(_)) => None,
    }
}

/// What one request did, besides the reply: for the lease file, the log and the fleet.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The reply to send, if any.
    pub reply: Option<Message>,
    /// A change of the pool the lease file must record.
    pub change: Option<Change>,
    /// An address this client was seen to have: the lease it was given (authoritative), or the
    /// one it asked the site's server for or sent from (proxy).
    pub seen: Option<(HwAddr, Ipv4Addr)>,
    /// Why a request that wanted an answer got none, or a change that was not made.
    pub note: Option<Note>,
}

/// Why serve stayed silent or changed nothing, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    NoAddress(NoAddress),
    /// A RELEASE or DECLINE that is not from the lease's holder.
    NotTheHolder { kind: MessageType, address: Ipv4Addr },
    /// A BOOTP request (no option 53) while bootServer.answerBootp is off.
    Bootp,
}

impl Outcome {
    fn silent() -> Outcome {
        Outcome::default()
    }

    fn noted(note: Note) -> Outcome {
        Outcome { note: Some(note), ..Outcome::default() }
    }
}

/// The address option 50 names, or ciaddr.
fn wanted_address(request: &Message) -> Option<Ipv4Addr> {
    match request.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(a)) => Some(*a),
        _ => Some(request.ciaddr()).filter(|a| !a.is_unspecified()),
    }
}

/// The answer to one request from `peer` at `now` (seconds since the Unix epoch), with what it
/// changed. Authoritative: addresses from `table`; proxy: only PXE clients, no address.
pub fn reply(settings: &Settings, table: &mut LeaseTable, request: &Message, now: u64, peer: Ipv4Addr) -> Outcome {
    if request.opcode() != Opcode::BootRequest {
        return Outcome::silent();
    }
    let Some(hw) = HwAddr::new(request.chaddr()) else { return Outcome::silent() };
    let kind = request.opts().msg_type();
    if settings.mode == Mode::Proxy {
        return proxy_reply(settings, request, kind, peer, hw);
    }
    // A REQUEST for another server's offer (option 54 names it) is not for us.
    if let Some(DhcpOption::ServerIdentifier(id)) = request.opts().get(OptionCode::ServerIdentifier)
        && *id != settings.server
        && kind == Some(MessageType::Request)
    {
        return Outcome::silent();
    }
    let (answer, lease) = match kind {
        Some(MessageType::Discover) => match table.offer(hw, now) {
            Ok(address) => (MessageType::Offer, Some((address, None))),
            Err(why) => return Outcome::noted(Note::NoAddress(why)),
        },
        Some(MessageType::Request) => match table.request(hw, wanted_address(request), now) {
            Ok((lease, change)) => (MessageType::Ack, Some((lease.address, Some(change)))),
            // Not its address (another's, outside the range, or none left): a NAK, so that the
            // client starts over with a DISCOVER.
            Err(_) => (MessageType::Nak, None),
        },
        None if settings.answer_bootp => match table.request(hw, None, now) {
            Ok((lease, change)) => (MessageType::Ack, Some((lease.address, Some(change)))),
            Err(why) => return Outcome::noted(Note::NoAddress(why)),
        },
        None => return Outcome::noted(Note::Bootp),
        Some(MessageType::Inform) => (MessageType::Ack, None),
        Some(k @ MessageType::Release) => {
            return match table.release(hw, request.ciaddr(), peer) {
                Ok(change) => Outcome { change: Some(change), ..Outcome::silent() },
                Err(_) => Outcome::noted(Note::NotTheHolder { kind: k, address: request.ciaddr() }),
            };
        }
        Some(k @ MessageType::Decline) => {
            let address = wanted_address(request).unwrap_or(Ipv4Addr::UNSPECIFIED);
            return match table.decline(hw, address, now) {
                Ok(change) => Outcome { change: Some(change), ..Outcome::silent() },
                Err(_) => Outcome::noted(Note::NotTheHolder { kind: k, address }),
            };
        }
        Some(_) => return Outcome::silent(),
    };
    let (yiaddr, change) = lease.unwrap_or((Ipv4Addr::UNSPECIFIED, None));
    let seen = (answer == MessageType::Ack && !yiaddr.is_unspecified()).then_some((hw, yiaddr));
    let message = build(settings, request, answer, yiaddr, kind);
    Outcome { reply: Some(message), change, seen, note: None }
}

/// Proxy mode: PXE clients only, no address; the address a client asks the site's server for
/// (option 50, ciaddr) or sends from (port 4011, unicast) is what it was seen to have.
fn proxy_reply(settings: &Settings, request: &Message, kind: Option<MessageType>, peer: Ipv4Addr, hw: HwAddr) -> Outcome {
    let seen = match kind {
        Some(MessageType::Request) => wanted_address(request).or(Some(peer).filter(|p| !p.is_unspecified())),
        _ => Some(peer).filter(|p| !p.is_unspecified()),
    }
    .map(|a| (hw, a));
    let answer = match kind {
        Some(MessageType::Discover) => MessageType::Offer,
        Some(MessageType::Request) => MessageType::Ack,
        _ => return Outcome { seen, ..Outcome::silent() },
    };
    if !is_pxe_client(request) {
        return Outcome { seen, ..Outcome::silent() };
    }
    Outcome { reply: Some(build(settings, request, answer, Ipv4Addr::UNSPECIFIED, kind)), seen, ..Outcome::silent() }
}

/// The reply message itself.
fn build(settings: &Settings, request: &Message, answer_type: MessageType, yiaddr: Ipv4Addr, kind: Option<MessageType>) -> Message {
    let mac = request.chaddr();
    let mut m = Message::new_with_id(request.xid(), Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, settings.server, request.giaddr(), &mac[..mac.len().min(16)]);
    m.set_opcode(Opcode::BootReply).set_flags(request.flags());
    m.set_htype(request.htype());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(answer_type));
    opts.insert(DhcpOption::ServerIdentifier(settings.server));
    if answer_type == MessageType::Nak {
        return m;
    }
    if kind != Some(MessageType::Inform) {
        m.set_yiaddr(yiaddr);
    } else {
        m.set_ciaddr(request.ciaddr());
    }
    let file = boot_file(settings, architecture(request));
    // An HTTP boot offer names itself HTTPClient (EDK2's HttpBootDxe skips one that does not).
    let http_boot = is_http_boot_client(request) && file.is_some();
    let opts = m.opts_mut();
    if http_boot {
        opts.insert(DhcpOption::ClassIdentifier(HTTP_CLIENT_VENDOR_CLASS.as_bytes().to_vec()));
    }
    if settings.mode == Mode::Authoritative {
        opts.insert(DhcpOption::SubnetMask(settings.netmask));
        if let Some(r) = settings.router {
            opts.insert(DhcpOption::Router(vec![r]));
        }
        if !settings.name_servers.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(settings.name_servers.clone()));
        }
        if let Some(d) = &settings.domain {
            opts.insert(DhcpOption::DomainName(d.clone()));
        }
        if kind != Some(MessageType::Inform) {
            opts.insert(DhcpOption::AddressLeaseTime(settings.lease_seconds));
        }
        opts.insert(DhcpOption::RootPath(settings.root_path.clone()));
    } else {
        // RFC 4578 / PXE: a proxy offer identifies itself as PXEClient.
        opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    }
    opts.insert(DhcpOption::TFTPServerName(settings.tftp_server.as_bytes().to_vec()));
    if let Some(file) = file {
        opts.insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
        // fname is 128 bytes; a URL of an IPv4 address, a port and bootx64.efi is under 45.
        if file.len() <= 128 {
            m.set_fname_str(file);
        }
    }
    m.set_sname_str(&settings.tftp_server);
    m
}

/// Where a reply goes (RFC 2131 4.1): the relay, the client's own address, or broadcast.
pub fn destination(request: &Message, reply: &Message) -> SocketAddr {
    if !request.giaddr().is_unspecified() {
        return SocketAddr::from((request.giaddr(), 67));
    }
    if !request.ciaddr().is_unspecified() && reply.opts().msg_type() != Some(MessageType::Nak) {
        return SocketAddr::from((request.ciaddr(), 68));
    }
    SocketAddr::from((Ipv4Addr::BROADCAST, 68))
}

/// Decodes one datagram. dhcproto 0.15 has `debug_assert!`s on option lengths taken from the wire
/// (options.rs, e.g. the bulk lease query options): a debug build panics on such a packet, a release build
/// decodes it. Found by fuzz/fuzz_targets/dhcp_reply.rs; caught here so a debug build keeps serving.
pub fn parse(buf: &[u8]) -> Result<Message, String> {
    let message = match std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(buf))) {
        Ok(decoded) => decoded.map_err(|e| e.to_string())?,
        Err(_) => return Err("dhcproto rejected the packet (assertion in its decoder)".into()),
    };
    // dhcproto's chaddr() slices chaddr[..hlen] and panics (release builds too) when hlen > 16; such a
    // packet is malformed anyway (RFC 2131: chaddr is 16 bytes). Found by the fuzz target.
    if message.hlen() > 16 {
        return Err(format!("hardware address length {} is more than 16", message.hlen()));
    }
    Ok(message)
}

fn mac_text(mac: &[u8]) -> String {
    mac.iter().take(6).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Where replies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerTo {
    /// Port 67: the relay, the client's address or broadcast (RFC 2131 4.1).
    Rfc2131,
    /// Port 4011, the PXE boot server port: back to the sender. A UEFI PXE client that got an
    /// address from the site's server and only a boot file name from a proxy (no PXE vendor
    /// options) asks the proxy again there, unicast, before it downloads (EDK2 does).
    Sender,
}

/// The PXE boot server port of proxy DHCP.
pub const PXE_BOOT_SERVER_PORT: u16 = 4011;

/// The authoritative pool and the file that keeps it (none in proxy mode or without a state
/// directory, as in tests of the reply alone).
pub struct Pool {
    pub table: LeaseTable,
    pub log: Option<LeaseLog>,
}

/// Hears of the addresses clients were seen to have (the fleet binds its hosts' MACs to them).
pub trait Observer: Send + Sync {
    /// `leased`: serve gave `hw` this address (authoritative), so no other machine has it now;
    /// else the client asked the site's server for it or sent from it (proxy), a claim only.
    fn seen(&self, hw: HwAddr, address: Ipv4Addr, leased: bool);
}

/// Tells `observer` of every bound lease in `table`, at start: the fleet's bindings follow the
/// lease file, which is written before each answer, also where the store missed one (a crash
/// before the store's writer thread wrote it).
pub fn announce_leases(table: &LeaseTable, observer: &dyn Observer) {
    for lease in table.records().filter(|l| l.state == super::leases::State::Bound) {
        observer.seen(lease.hw, lease.address, true);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Serves until `stop` is set.
pub fn serve(socket: UdpSocket, settings: Settings, stop: &AtomicBool, answer_to: AnswerTo, mut pool: Pool, observer: Option<Arc<dyn Observer>>) -> io::Result<()> {
    socket.set_broadcast(true)?;
    socket.set_read_timeout(Some(Duration::from_millis(250)))?;
    tracing::info!(address = %socket.local_addr()?, mode = ?settings.mode, server = %settings.server, ?answer_to, "dhcp: serving");
    if settings.mode == Mode::Authoritative && answer_to == AnswerTo::Rfc2131 {
        let counts = pool.table.counts(unix_now());
        tracing::info!(
            pool = %counts, lease_seconds = settings.lease_seconds, grace_seconds = pool.table.timing().grace_seconds,
            file = pool.log.as_ref().map(|l| l.path().display().to_string()).unwrap_or_default(), bootp = settings.answer_bootp,
            "dhcp: leases"
        );
    }
    let mut buf = vec![0u8; 4096];
    let mut throttle = Throttle::default();
    // Said once per run, not per packet: a firmware retries its DISCOVER every few seconds.
    let mut told_no_http_boot = false;
    while !stop.load(Ordering::Relaxed) {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => continue,
            Err(e) => {
                // A socket error (ENOBUFS, a network that went away): say it, wait, go on.
                if let Some(quiet) = throttle.allow("recv", Instant::now()) {
                    tracing::warn!(quiet, "dhcp: receive failed: {e}");
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let request = match parse(&buf[..len]) {
            Ok(m) => m,
            Err(e) => {
                if let Some(quiet) = throttle.allow(&format!("malformed {}", peer.ip()), Instant::now()) {
                    tracing::warn!(client = %peer, bytes = len, quiet, "dhcp: malformed packet: {e}");
                }
                continue;
            }
        };
        let mac = mac_text(request.chaddr());
        if let Some(why) = http_boot_refusal(&settings).filter(|_| is_http_boot_client(&request) && !told_no_http_boot) {
            told_no_http_boot = true;
            tracing::warn!(mac, "dhcp: a UEFI HTTP boot client (option 93 = 16) was not answered with a boot file: {why} (said once)");
        }
        let peer_ip = match peer.ip() {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let now = unix_now();
        let outcome = reply(&settings, &mut pool.table, &request, now, peer_ip);
        if let Some(change) = &outcome.change
            && let Some(log) = &mut pool.log
            && let Err(e) = log.record(change, &pool.table)
            && let Some(quiet) = throttle.allow("lease file", Instant::now())
        {
            tracing::error!(file = %log.path().display(), quiet, "dhcp: cannot write the lease file: {e}; leases given now are lost if serve restarts");
        }
        if let (Some((hw, address)), Some(observer)) = (outcome.seen, &observer) {
            observer.seen(hw, address, settings.mode == Mode::Authoritative);
        }
        match &outcome.note {
            Some(Note::NoAddress(why)) => {
                if let Some(quiet) = throttle.allow("pool", Instant::now()) {
                    let counts = pool.table.counts(now);
                    match why {
                        NoAddress::PoolFull => tracing::warn!(mac, quiet, pool = %counts, "dhcp: the pool is full: no address for this client"),
                        NoAddress::KeptForFleet { .. } => tracing::warn!(
                            mac, quiet, pool = %counts,
                            "dhcp: no address for a machine outside the fleet: the free addresses left are kept for the fleet's MACs that have none"
                        ),
                    }
                }
            }
            Some(Note::NotTheHolder { kind, address }) => {
                if let Some(quiet) = throttle.allow(&format!("holder {mac}"), Instant::now()) {
                    tracing::warn!(mac, ?kind, %address, client = %peer, quiet, "dhcp: ignored: not from the holder of that lease (its MAC, its address)");
                }
            }
            Some(Note::Bootp) => {
                if let Some(quiet) = throttle.allow("bootp", Instant::now()) {
                    tracing::warn!(mac, quiet, "dhcp: a BOOTP request (no option 53) was not answered: bootServer.answerBootp is off");
                }
            }
            None => {}
        }
        let Some(answer) = outcome.reply else {
            tracing::debug!(mac, kind = ?request.opts().msg_type(), "dhcp: not answered");
            continue;
        };
        let mut out = Vec::new();
        if let Err(e) = answer.encode(&mut Encoder::new(&mut out)) {
            tracing::error!(mac, "dhcp: cannot encode the reply: {e}");
            continue;
        }
        let to = match answer_to {
            AnswerTo::Rfc2131 => destination(&request, &answer),
            AnswerTo::Sender => peer,
        };
        match socket.send_to(&out, to) {
            Ok(_) => tracing::info!(
                mac, request = ?request.opts().msg_type().unwrap_or(MessageType::Unknown(0)), reply = ?answer.opts().msg_type(),
                address = %answer.yiaddr(), arch = ?architecture(&request), to = %to, "dhcp: answered"
            ),
            Err(e) => {
                if let Some(quiet) = throttle.allow("send", Instant::now()) {
                    tracing::warn!(mac, to = %to, quiet, "dhcp: cannot send the reply: {e}");
                }
            }
        }
    }
    tracing::info!("dhcp: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Architecture;

    fn settings(mode: Mode) -> Settings {
        Settings {
            mode,
            server: Ipv4Addr::new(10, 42, 0, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            range: (Ipv4Addr::new(10, 42, 0, 100), Ipv4Addr::new(10, 42, 0, 101)),
            router: None,
            name_servers: vec![],
            domain: None,
            lease_seconds: 600,
            tftp_server: "10.42.0.1".into(),
            root_path: "10.42.0.1:/srv/nfsroot,vers=3,tcp".into(),
            http_boot_url: None,
            answer_bootp: false,
        }
    }

    /// A pool of the settings' range without a fleet.
    fn pool(s: &Settings) -> LeaseTable {
        s.lease_table([])
    }

    /// The reply alone, at one fixed time, from no address (a broadcast).
    fn answer(s: &Settings, table: &mut LeaseTable, request: &Message) -> Option<Message> {
        reply(s, table, request, 1000, Ipv4Addr::UNSPECIFIED).reply
    }

    fn request(mac: u8, kind: Option<MessageType>, arch: Option<u16>) -> Message {
        let mut m = Message::new_with_id(7, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, &[2, 0, 0, 0, 0, mac]);
        if let Some(k) = kind {
            m.opts_mut().insert(DhcpOption::MessageType(k));
        }
        if let Some(a) = arch {
            m.opts_mut().insert(DhcpOption::ClientSystemArchitecture(Architecture::from(a)));
        }
        m
    }

    fn option(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
        m.opts().get(code)
    }

    #[test]
    fn a_bootp_request_is_answered_only_when_answer_bootp_is_on() {
        let off = settings(Mode::Authoritative);
        let outcome = reply(&off, &mut pool(&off), &request(1, None, None), 1000, Ipv4Addr::UNSPECIFIED);
        assert!(outcome.reply.is_none() && outcome.change.is_none(), "{outcome:?}");
        assert_eq!(outcome.note, Some(Note::Bootp));
        let on = Settings { answer_bootp: true, ..settings(Mode::Authoritative) };
        let r = answer(&on, &mut pool(&on), &request(1, None, None)).expect("answered");
        assert_eq!(r.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(r.yiaddr(), Ipv4Addr::new(10, 42, 0, 100));
        assert_eq!(r.siaddr(), Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(option(&r, OptionCode::RootPath), Some(&DhcpOption::RootPath("10.42.0.1:/srv/nfsroot,vers=3,tcp".into())));
        assert_eq!(option(&r, OptionCode::BootfileName), Some(&DhcpOption::BootfileName(b"bootx64.efi".to_vec())));
    }

    /// Option 67 and the fname field, as the client's firmware reads either.
    fn boot_file_of(m: &Message) -> Option<String> {
        let option = match option(m, OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8_lossy(f).into_owned()),
            _ => None,
        };
        let fname = m.fname_str().and_then(Result::ok).filter(|f| !f.is_empty()).map(str::to_string);
        assert_eq!(option, fname, "option 67 and fname agree");
        option
    }

    #[test]
    fn boot_file_by_architecture() {
        let s = settings(Mode::Authoritative);
        let cases: &[(Option<u16>, Option<&str>)] = &[
            (Some(0), Some("bios.0")),
            (Some(7), Some("bootx64.efi")),
            (Some(9), Some("bootx64.efi")),
            // GRUB's own request and the kernel's carry no option 93.
            (None, Some("bootx64.efi")),
            // UEFI HTTP boot wants a URL on serve's HTTP endpoint, which these settings do not
            // have (below with one); IA32 and ARM64 UEFI.
            (Some(16), None),
            (Some(6), None),
            (Some(11), None),
        ];
        for (i, (arch, want)) in cases.iter().enumerate() {
            let mut leases = pool(&s);
            let offer = answer(&s, &mut leases, &request(i as u8, Some(MessageType::Discover), *arch)).expect("offer");
            assert_eq!(boot_file_of(&offer).as_deref(), *want, "arch {arch:?}");
        }
        // In proxy mode too: a BIOS PXE client gets bios.0.
        let mut bios = request(1, Some(MessageType::Discover), Some(0));
        bios.opts_mut().insert(DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()));
        let r = answer(&settings(Mode::Proxy), &mut pool(&settings(Mode::Proxy)), &bios).expect("proxy offer");
        assert_eq!(boot_file_of(&r).as_deref(), Some("bios.0"));
    }

    /// A DISCOVER as EDK2's HttpBootDxe sends it: option 93 = 16, vendor class HTTPClient.
    fn http_boot_discover(mac: u8) -> Message {
        let mut m = request(mac, Some(MessageType::Discover), Some(16));
        m.opts_mut().insert(DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()));
        m
    }

    /// The encoded reply's options as (code, bytes), read back from the wire form.
    fn wire_options(m: &Message) -> Vec<(u8, Vec<u8>)> {
        let mut raw = Vec::new();
        m.encode(&mut Encoder::new(&mut raw)).expect("encode");
        assert_eq!(&raw[236..240], &[99, 130, 83, 99], "the magic cookie");
        let (mut options, mut at) = (Vec::new(), 240);
        while at < raw.len() && raw[at] != 255 {
            if raw[at] == 0 {
                at += 1;
                continue;
            }
            let len = usize::from(raw[at + 1]);
            options.push((raw[at], raw[at + 2..at + 2 + len].to_vec()));
            at += 2 + len;
        }
        options
    }

    #[test]
    fn an_http_boot_client_gets_httpclient_and_the_url_on_serves_http_endpoint() {
        let url = "http://10.42.0.1:8080/bootx64.efi";
        let s = Settings { http_boot_url: Some(url.into()), ..settings(Mode::Authoritative) };
        assert_eq!(http_boot_refusal(&s), None);
        let mut leases = pool(&s);
        for (kind, code) in [(MessageType::Discover, 2), (MessageType::Request, 5)] {
            let mut asked = http_boot_discover(1);
            asked.opts_mut().insert(DhcpOption::MessageType(kind));
            if kind == MessageType::Request {
                asked.opts_mut().insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 42, 0, 100)));
            }
            let r = answer(&s, &mut leases, &asked).unwrap_or_else(|| panic!("{kind:?}: no reply"));
            let options = wire_options(&r);
            let get = |code: u8| options.iter().filter(|(c, _)| *c == code).map(|(_, v)| v.clone()).collect::<Vec<_>>();
            assert_eq!(get(53), [vec![code]], "{kind:?}: an OFFER, then an ACK");
            assert_eq!(get(60), [b"HTTPClient".to_vec()], "{kind:?}: option 60 is HTTPClient, once");
            assert_eq!(get(67), [url.as_bytes().to_vec()], "{kind:?}: option 67 is the URL");
            assert_eq!(boot_file_of(&r).as_deref(), Some(url), "{kind:?}: fname too");
        }
        // A PXE client of the same server gets its file name and no HTTPClient.
        let r = answer(&s, &mut pool(&s), &request(2, Some(MessageType::Discover), Some(7))).expect("offer");
        assert!(option(&r, OptionCode::ClassIdentifier).is_none());
        assert_eq!(boot_file_of(&r).as_deref(), Some("bootx64.efi"));
    }

    #[test]
    fn without_http_or_as_a_proxy_an_http_boot_client_gets_no_boot_file() {
        let s = settings(Mode::Authoritative);
        let offer = answer(&s, &mut pool(&s), &http_boot_discover(1)).expect("an address still");
        assert!(wire_options(&offer).iter().all(|(c, _)| *c != 60 && *c != 67), "no HTTPClient, no boot file: {offer:?}");
        assert!(http_boot_refusal(&s).is_some_and(|why| why.contains("--http-port")));
        // A proxy answers PXE clients only, as dnsmasq's does, HTTP or not.
        let s = Settings { http_boot_url: Some("http://10.42.0.1/bootx64.efi".into()), ..settings(Mode::Proxy) };
        assert!(answer(&s, &mut pool(&s), &http_boot_discover(1)).is_none(), "a proxy stays silent");
        assert!(http_boot_refusal(&s).is_some_and(|why| why.contains("proxy mode")));
    }

    #[test]
    fn range_exhaustion() {
        let s = settings(Mode::Authoritative);
        let mut leases = pool(&s);
        let uefi = answer(&s, &mut leases, &request(1, Some(MessageType::Discover), Some(7))).expect("offer");
        answer(&s, &mut leases, &request(2, Some(MessageType::Discover), Some(0))).expect("offer");
        assert!(answer(&s, &mut leases, &request(3, Some(MessageType::Discover), Some(7))).is_none(), "range of 2 is full");
        // The same client keeps its address.
        assert_eq!(answer(&s, &mut leases, &request(1, Some(MessageType::Discover), Some(7))).map(|r| r.yiaddr()), Some(uefi.yiaddr()));
    }

    #[test]
    fn request_for_another_address_is_nakked() {
        let s = settings(Mode::Authoritative);
        let mut leases = pool(&s);
        let mut req = request(1, Some(MessageType::Request), None);
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 42, 0, 150)));
        assert_eq!(answer(&s, &mut leases, &req).and_then(|r| r.opts().msg_type()), Some(MessageType::Nak));
    }

    #[test]
    fn proxy_answers_pxe_clients_only_and_hands_out_no_address() {
        let s = settings(Mode::Proxy);
        let mut leases = pool(&s);
        assert!(answer(&s, &mut leases, &request(1, Some(MessageType::Discover), Some(7))).is_none());
        let mut pxe = request(1, Some(MessageType::Discover), Some(7));
        pxe.opts_mut().insert(DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007".to_vec()));
        let r = answer(&s, &mut leases, &pxe).expect("proxy offer");
        assert_eq!(r.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(option(&r, OptionCode::RootPath).is_none());
        assert!(option(&r, OptionCode::BootfileName).is_some());
    }

    #[test]
    fn at_start_the_observer_hears_of_bound_leases_only() {
        struct Heard(std::sync::Mutex<Vec<(HwAddr, Ipv4Addr)>>);
        impl Observer for Heard {
            fn seen(&self, hw: HwAddr, address: Ipv4Addr, leased: bool) {
                assert!(leased, "a lease from the file is serve's own");
                self.0.lock().expect("lock").push((hw, address));
            }
        }
        let s = Settings { range: (Ipv4Addr::new(10, 42, 0, 100), Ipv4Addr::new(10, 42, 0, 103)), ..settings(Mode::Authoritative) };
        let mut table = pool(&s);
        let hw = |n: u8| HwAddr::new(&[2, 0, 0, 0, 0, n]).expect("hw");
        let bound = table.offer(hw(1), 1000).expect("offer");
        table.request(hw(1), Some(bound), 1000).expect("ack");
        table.offer(hw(2), 1000).expect("only offered");
        let declined = table.offer(hw(3), 1000).expect("offer");
        table.request(hw(3), Some(declined), 1000).expect("ack");
        table.decline(hw(3), declined, 1000).expect("declined");
        let heard = Heard(std::sync::Mutex::new(Vec::new()));
        announce_leases(&table, &heard);
        assert_eq!(heard.0.into_inner().expect("lock"), vec![(hw(1), bound)]);
    }

    #[test]
    fn oversized_hardware_address_is_malformed_not_a_panic() {
        let mut raw = Vec::new();
        request(1, Some(MessageType::Discover), None).encode(&mut Encoder::new(&mut raw)).expect("encode");
        raw[2] = 40; // hlen
        assert!(parse(&raw).is_err());
        assert!(parse(&raw[..10]).is_err());
    }
}
