//! Reading a packet capture of HTTP downloads (tcpdump's pcap file, Ethernet frames with IPv4):
//! per TCP connection, what bounds the transfer — the segment size the server used, the window the
//! client offered, how much was in flight, how often the client acknowledged, and where the
//! transfer waited (gaps between packets). benches/kernel_load.rs's `--capture` uses it on GRUB's
//! loads of the kernel.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One TCP segment as captured.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Seconds since the capture's first packet.
    pub at: f64,
    pub from_server: bool,
    pub client_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload: u32,
    /// The MSS option's value, when the segment carries one (SYNs).
    pub mss: Option<u16>,
    /// TCP option kinds present (2 MSS, 3 window scale, 4 SACK permitted, 8 timestamps).
    pub options: Vec<u8>,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The TCP segments to or from `server_port` in a pcap file (microsecond or nanosecond
/// timestamps, either byte order, link type Ethernet). Other packets are skipped.
pub fn segments(pcap: &[u8], server_port: u16) -> Result<Vec<Segment>, String> {
    let magic = pcap.get(0..4).ok_or("the capture is shorter than a pcap header")?;
    let (little, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => return Err(format!("not a pcap file (magic {magic:02x?})")),
    };
    let word = |at: usize| -> Option<u32> {
        let b: [u8; 4] = pcap.get(at..at + 4)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let link = word(20).ok_or("the pcap header is cut short")?;
    if link != 1 {
        return Err(format!("the capture's link type is {link}, not Ethernet (1)"));
    }
    let mut out = Vec::new();
    let mut at = 24;
    let mut first: Option<f64> = None;
    while at + 16 <= pcap.len() {
        let (Some(sec), Some(frac), Some(caplen)) = (word(at), word(at + 4), word(at + 8)) else { break };
        // A record cut short is the last one, written as tcpdump was stopped.
        let Some(frame) = pcap.get(at + 16..at + 16 + caplen as usize) else { break };
        at += 16 + caplen as usize;
        let time = f64::from(sec) + f64::from(frac) / if nanos { 1e9 } else { 1e6 };
        let start = *first.get_or_insert(time);
        if let Some(segment) = tcp_segment(frame, server_port, time - start) {
            out.push(segment);
        }
    }
    Ok(out)
}

/// The TCP segment in an Ethernet frame, when it is IPv4 TCP to or from `server_port`. The
/// payload length comes from the IP header, so a capture cut short (`tcpdump -s`) still counts it.
fn tcp_segment(frame: &[u8], server_port: u16, at: f64) -> Option<Segment> {
    if be16(frame, 12)? != 0x0800 {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let total = usize::from(be16(ip, 2)?);
    let tcp = ip.get(ihl..)?;
    let (src, dst) = (be16(tcp, 0)?, be16(tcp, 2)?);
    let from_server = src == server_port;
    if !from_server && dst != server_port {
        return None;
    }
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    let mut options = Vec::new();
    let mut mss = None;
    let mut i = 20;
    while i < doff {
        let kind = *tcp.get(i)?;
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let len = usize::from(*tcp.get(i + 1)?).max(2);
                if kind == 2 {
                    mss = be16(tcp, i + 2);
                }
                options.push(kind);
                i += len;
            }
        }
    }
    Some(Segment {
        at,
        from_server,
        client_port: if from_server { dst } else { src },
        seq: be32(tcp, 4)?,
        ack: be32(tcp, 8)?,
        flags: *tcp.get(13)?,
        window: be16(tcp, 14)?,
        payload: u32::try_from(total.checked_sub(ihl + doff)?).ok()?,
        mss,
        options,
    })
}

/// One connection's transfer, as the capture shows it.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub client_port: u16,
    /// When the client's SYN was captured (seconds since the capture's first packet).
    pub start_at: f64,
    /// The client's SYN: its MSS option (None: none sent), its window and option kinds.
    pub syn_mss: Option<u16>,
    pub syn_window: u16,
    pub syn_options: Vec<u8>,
    /// Bytes the server sent (payload, first copies only), and in how many segments.
    pub bytes: u64,
    pub data_segments: u64,
    /// The largest and the most common payload of the server's segments.
    pub largest_segment: u32,
    pub usual_segment: u32,
    /// Server segments that repeated a sequence number already sent.
    pub retransmissions: u64,
    /// The client's segments without payload (its ACKs and window updates).
    pub client_acks: u64,
    /// The windows the client offered during the transfer (smallest, largest) and how many of its
    /// segments offered none (a zero window: it stalled the server).
    pub window_min: u16,
    pub window_max: u16,
    pub zero_windows: u64,
    /// From the client's SYN to the first FIN or RST (either side's); from the first to the last
    /// data segment; from the last data segment to that FIN or RST (what the client waited for
    /// before it closed, or the server before it reset).
    pub seconds: f64,
    pub data_seconds: f64,
    pub close_after_ms: f64,
    /// Bytes in flight (sent, not yet acknowledged) just after each server data segment: median
    /// and largest; and the share of data segments sent with the client's whole window in flight
    /// (less than one more full segment would have fit).
    pub in_flight_median: u32,
    pub in_flight_max: u32,
    pub window_full_share: f64,
    /// Gaps between consecutive packets of the data phase: median, and the gaps of 5 ms and more
    /// (a timer, not packet work: Nagle against delayed ACK, a persist or retransmission timer).
    pub gap_median_ms: f64,
    pub long_gaps: Vec<(f64, f64, &'static str)>,
    /// Time from a server data segment to the client's ACK covering it: median, in ms.
    pub ack_delay_median_ms: f64,
}

/// One `Transfer` per client connection that carried data from the server, in the order the
/// connections began.
pub fn transfers(segments: &[Segment]) -> Vec<Transfer> {
    let mut by_port: BTreeMap<u16, Vec<&Segment>> = BTreeMap::new();
    for s in segments {
        by_port.entry(s.client_port).or_default().push(s);
    }
    let mut out: Vec<Transfer> = by_port.values().filter_map(|c| transfer(c)).collect();
    out.sort_by(|a, b| a.start_at.total_cmp(&b.start_at));
    out
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn transfer(conn: &[&Segment]) -> Option<Transfer> {
    let syn = conn.iter().find(|s| !s.from_server && s.flags & SYN != 0 && s.flags & ACK == 0)?;
    let data: Vec<&&Segment> = conn.iter().filter(|s| s.from_server && s.payload > 0).collect();
    if data.is_empty() {
        return None;
    }
    let close_at = conn.iter().find(|s| s.flags & (FIN | RST) != 0).map_or(conn[conn.len() - 1].at, |s| s.at);
    let (first_data, last_data) = (data[0].at, data[data.len() - 1].at);
    let client_window_segments: Vec<&&Segment> = conn.iter().filter(|s| !s.from_server && s.flags & SYN == 0 && s.at >= first_data && s.at <= last_data).collect();

    // Walk the connection in order, keeping the highest sequence sent and acknowledged.
    let mut sent_end: Option<u32> = None;
    let mut acked: Option<u32> = None;
    let mut window = syn.window;
    let mut in_flight = Vec::new();
    let mut full = 0u64;
    let mut retransmissions = 0u64;
    let mut bytes = 0u64;
    let mut sizes: BTreeMap<u32, u64> = BTreeMap::new();
    // Data segments not yet acknowledged: (end sequence, time sent), for the ACK delay.
    let mut waiting: std::collections::VecDeque<(u32, f64)> = std::collections::VecDeque::new();
    let mut ack_delays = Vec::new();
    let ahead = |a: u32, b: u32| a.wrapping_sub(b) as i32 > 0;
    let largest = data.iter().map(|s| s.payload).max().unwrap_or(0);
    for s in conn {
        if s.from_server {
            if s.payload == 0 {
                continue;
            }
            let end = s.seq.wrapping_add(s.payload);
            if sent_end.is_some_and(|e| !ahead(end, e)) {
                retransmissions += 1;
                continue;
            }
            sent_end = Some(end);
            bytes += u64::from(s.payload);
            *sizes.entry(s.payload).or_default() += 1;
            waiting.push_back((end, s.at));
            if let Some(a) = acked {
                let flight = end.wrapping_sub(a);
                in_flight.push(flight);
                if u32::from(window).saturating_sub(flight) < largest {
                    full += 1;
                }
            }
        } else if s.flags & ACK != 0 {
            if acked.is_none_or(|a| ahead(s.ack, a)) {
                acked = Some(s.ack);
            }
            window = s.window;
            while waiting.front().is_some_and(|(end, _)| !ahead(*end, s.ack)) {
                let (_, sent) = waiting.pop_front().unwrap_or_default();
                ack_delays.push((s.at - sent) * 1e3);
            }
        }
    }
    // Gaps between consecutive packets (either direction) from the first to the last data segment.
    let phase: Vec<&&Segment> = conn.iter().filter(|s| s.at >= first_data && s.at <= last_data).collect();
    let mut gaps = Vec::new();
    let mut long_gaps = Vec::new();
    for pair in phase.windows(2) {
        let gap = pair[1].at - pair[0].at;
        gaps.push(gap * 1e3);
        if gap >= 0.005 {
            let what = match (pair[0].from_server, pair[1].from_server) {
                (true, true) => "server to server",
                (true, false) => "server to client",
                (false, true) => "client to server",
                (false, false) => "client to client",
            };
            long_gaps.push((pair[0].at - first_data, gap * 1e3, what));
        }
    }
    in_flight.sort_unstable();
    let windows = client_window_segments.iter().map(|s| s.window);
    Some(Transfer {
        client_port: syn.client_port,
        syn_mss: syn.mss,
        syn_window: syn.window,
        syn_options: syn.options.clone(),
        bytes,
        data_segments: sizes.values().sum(),
        largest_segment: largest,
        usual_segment: sizes.iter().max_by_key(|(_, n)| **n).map_or(0, |(size, _)| *size),
        retransmissions,
        client_acks: conn.iter().filter(|s| !s.from_server && s.payload == 0 && s.flags & SYN == 0).count() as u64,
        window_min: windows.clone().min().unwrap_or(0),
        window_max: windows.max().unwrap_or(0),
        zero_windows: client_window_segments.iter().filter(|s| s.window == 0).count() as u64,
        seconds: close_at - syn.at,
        data_seconds: last_data - first_data,
        close_after_ms: (close_at - last_data) * 1e3,
        in_flight_median: in_flight.get(in_flight.len() / 2).copied().unwrap_or(0),
        in_flight_max: in_flight.last().copied().unwrap_or(0),
        window_full_share: if in_flight.is_empty() { 0.0 } else { full as f64 / in_flight.len() as f64 },
        gap_median_ms: median_f64(gaps),
        long_gaps,
        ack_delay_median_ms: median_f64(ack_delays),
        start_at: syn.at,
    })
}

/// The option kinds of a SYN by name.
fn option_names(kinds: &[u8]) -> String {
    if kinds.is_empty() {
        return "none".into();
    }
    let names: Vec<String> = kinds
        .iter()
        .map(|k| match k {
            2 => "MSS".into(),
            3 => "window scale".into(),
            4 => "SACK permitted".into(),
            8 => "timestamps".into(),
            other => format!("kind {other}"),
        })
        .collect();
    names.join(", ")
}

/// A markdown table of `transfers`, one row each, and the gaps of 5 ms and more under it.
pub fn report(transfers: &[Transfer]) -> String {
    let mut out = String::from(
        "| connection | client SYN: MSS, window, options | bytes | server segments: usual / largest payload | retransmitted | client ACKs | client window min–max (zero) | in flight median / max | at the window | ACK after (median) | packet gap median | SYN to close s | data s | last data to close |\n\
         |---|---|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for t in transfers {
        let _ = writeln!(
            out,
            "| :{} | {}, {}, {} | {} | {} × {} / {} | {} | {} | {}–{} ({}) | {} / {} | {:.0}% | {:.2} ms | {:.3} ms | {:.3} | {:.3} | {:.0} ms |",
            t.client_port,
            t.syn_mss.map_or("no MSS".to_string(), |m| format!("MSS {m}")),
            t.syn_window,
            option_names(&t.syn_options),
            t.bytes,
            t.data_segments,
            t.usual_segment,
            t.largest_segment,
            t.retransmissions,
            t.client_acks,
            t.window_min,
            t.window_max,
            t.zero_windows,
            t.in_flight_median,
            t.in_flight_max,
            t.window_full_share * 100.0,
            t.ack_delay_median_ms,
            t.gap_median_ms,
            t.seconds,
            t.data_seconds,
            t.close_after_ms,
        );
    }
    for t in transfers {
        if t.long_gaps.is_empty() {
            continue;
        }
        let total: f64 = t.long_gaps.iter().map(|(_, ms, _)| ms).sum();
        let listed: Vec<String> = t.long_gaps.iter().take(8).map(|(at, ms, what)| format!("{ms:.1} ms at {at:.3} s ({what})")).collect();
        let _ = writeln!(
            out,
            "\nConnection :{}: {} gaps of 5 ms or more between packets, {total:.0} ms in all: {}{}",
            t.client_port,
            t.long_gaps.len(),
            listed.join(", "),
            if t.long_gaps.len() > 8 { ", ..." } else { "" }
        );
    }
    out
}
