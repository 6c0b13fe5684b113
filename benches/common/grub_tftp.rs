//! A TFTP client that reads as GRUB 2.06 does, for the benchmarks that play many GRUBs at once.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// GRUB's TFTP block size.
pub const BLKSIZE: usize = 1024;

/// A TFTP read of `path` from `server` as GRUB makes it (blksize 1024, tsize; lock-step),
/// resending its last packet after 400 ms, then 20 ms longer each time, 40 times at most without
/// progress (GRUB_NET_INTERVAL, GRUB_NET_INTERVAL_ADDITION, GRUB_NET_TRIES): the file's bytes.
/// `resends` counts the packets sent again.
pub fn get(server: SocketAddr, path: &str, resends: &mut u32) -> Result<Vec<u8>, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    let mut rrq = vec![0, 1];
    for part in [path, "octet", "tsize", "0", "blksize", &BLKSIZE.to_string()] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    socket.send_to(&rrq, server).map_err(|e| format!("send: {e}"))?;
    let (mut last, mut peer) = (rrq, server);
    let (mut data, mut expected, mut tries) = (Vec::new(), 1u16, 0u32);
    let mut buf = vec![0u8; BLKSIZE + 4];
    loop {
        socket.set_read_timeout(Some(Duration::from_millis(400 + 20 * u64::from(tries)))).map_err(|e| e.to_string())?;
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                tries += 1;
                if tries >= 40 {
                    return Err(format!("{path}: no answer after 40 tries"));
                }
                *resends += 1;
                socket.send_to(&last, peer).map_err(|e| format!("send: {e}"))?;
                continue;
            }
            Err(e) => return Err(format!("recv: {e}")),
        };
        if n < 4 {
            continue;
        }
        let packet = &buf[..n];
        match u16::from_be_bytes([packet[0], packet[1]]) {
            // OACK: acknowledged with block 0.
            6 => {
                peer = from;
                last = vec![0, 4, 0, 0];
            }
            3 => {
                let block = u16::from_be_bytes([packet[2], packet[3]]);
                peer = from;
                if block == expected {
                    data.extend_from_slice(&packet[4..]);
                    expected = expected.wrapping_add(1);
                }
                last = vec![0, 4, packet[2], packet[3]];
                if block == expected.wrapping_sub(1) && packet.len() - 4 < BLKSIZE {
                    socket.send_to(&last, peer).map_err(|e| format!("send: {e}"))?;
                    return Ok(data);
                }
            }
            5 => return Err(format!("{path}: TFTP error {}", String::from_utf8_lossy(&packet[4..]))),
            _ => continue,
        }
        tries = 0;
        socket.send_to(&last, peer).map_err(|e| format!("send: {e}"))?;
    }
}
