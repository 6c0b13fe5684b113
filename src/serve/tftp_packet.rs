//! TFTP packets (RFC 1350, options RFC 2347/2348/2349/7440): pure parsing and encoding over byte slices.
//! Parsing never panics; anything truncated, oversized or malformed is a typed `PacketError` (fuzzed in fuzz/).

use std::fmt;

pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// Largest request we accept: a request fits one packet of the default size plus options (RFC 2347
/// keeps requests under 512 bytes; real clients stay far below 1 KiB).
pub const MAX_REQUEST: usize = 1024;

/// TFTP error codes (RFC 1350 section 5, RFC 2347 code 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTid = 5,
    FileExists = 6,
    NoSuchUser = 7,
    OptionRefused = 8,
}

impl ErrorCode {
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTid,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            _ => ErrorCode::NotDefined,
        }
    }
}

/// A request (RRQ or WRQ): file name, mode and options in the order the client sent them,
/// names lower-cased (RFC 2347: option names are case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: String,
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request),
    Wrq(Request),
    Data { block: u16, data: &'a [u8] },
    Ack { block: u16 },
    Error { code: u16, message: String },
    Oack { options: Vec<(String, String)> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet of {0} bytes is shorter than the 2-byte opcode")]
    TooShort(usize),
    #[error("unknown opcode {0} (expected 1..6)")]
    UnknownOpcode(u16),
    #[error("{what} is not terminated by a NUL byte")]
    Unterminated { what: &'static str },
    #[error("{what} is not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("request of {0} bytes is larger than {MAX_REQUEST}")]
    Oversized(usize),
    #[error("{what} of {len} bytes; expected {expected}")]
    BadLength { what: &'static str, len: usize, expected: &'static str },
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
    #[error("empty file name")]
    EmptyFilename,
}

/// Parses one datagram.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, PacketError> {
    let (head, body) = match buf {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => return Err(PacketError::TooShort(buf.len())),
    };
    match head {
        OP_RRQ | OP_WRQ => {
            if buf.len() > MAX_REQUEST {
                return Err(PacketError::Oversized(buf.len()));
            }
            let request = parse_request(body)?;
            Ok(if head == OP_RRQ { Packet::Rrq(request) } else { Packet::Wrq(request) })
        }
        OP_DATA => match body {
            [a, b, data @ ..] => Ok(Packet::Data { block: u16::from_be_bytes([*a, *b]), data }),
            _ => Err(PacketError::BadLength { what: "DATA", len: buf.len(), expected: "at least 4" }),
        },
        OP_ACK => match body {
            // Some clients pad ACKs; the block number is all that matters.
            [a, b, ..] => Ok(Packet::Ack { block: u16::from_be_bytes([*a, *b]) }),
            _ => Err(PacketError::BadLength { what: "ACK", len: buf.len(), expected: "4" }),
        },
        OP_ERROR => match body {
            [a, b, rest @ ..] => {
                // The message should be NUL-terminated; a missing NUL is tolerated (we only log it).
                let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
                let message = String::from_utf8_lossy(&rest[..end]).into_owned();
                Ok(Packet::Error { code: u16::from_be_bytes([*a, *b]), message })
            }
            _ => Err(PacketError::BadLength { what: "ERROR", len: buf.len(), expected: "at least 4" }),
        },
        OP_OACK => Ok(Packet::Oack { options: parse_options(body)? }),
        other => Err(PacketError::UnknownOpcode(other)),
    }
}

fn parse_request(body: &[u8]) -> Result<Request, PacketError> {
    let (filename, rest) = cstr(body, "file name")?;
    if filename.is_empty() {
        return Err(PacketError::EmptyFilename);
    }
    let (mode, rest) = cstr(rest, "mode")?;
    let options = parse_options(rest)?;
    Ok(Request { filename: filename.to_string(), mode: mode.to_ascii_lowercase(), options })
}

fn parse_options(mut rest: &[u8]) -> Result<Vec<(String, String)>, PacketError> {
    let mut options = Vec::new();
    while !rest.is_empty() {
        // Some clients pad the request with trailing NULs: an empty name ends the list.
        if rest.iter().all(|&c| c == 0) {
            break;
        }
        let (name, after) = cstr(rest, "option name")?;
        let (value, after) = cstr(after, "option value").map_err(|_| PacketError::OptionWithoutValue(name.to_string()))?;
        options.push((name.to_ascii_lowercase(), value.to_string()));
        rest = after;
    }
    Ok(options)
}

fn cstr<'a>(buf: &'a [u8], what: &'static str) -> Result<(&'a str, &'a [u8]), PacketError> {
    let end = buf.iter().position(|&c| c == 0).ok_or(PacketError::Unterminated { what })?;
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| PacketError::NotUtf8 { what })?;
    Ok((text, &buf[end + 1..]))
}

/// DATA header + payload, written into `out` (cleared first) so a transfer reuses one buffer.
pub fn encode_data(out: &mut Vec<u8>, block: u16, data: &[u8]) {
    out.clear();
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(data);
}

pub fn encode_ack(block: u16) -> Vec<u8> {
    let mut out = OP_ACK.to_be_bytes().to_vec();
    out.extend_from_slice(&block.to_be_bytes());
    out
}

pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = OP_ERROR.to_be_bytes().to_vec();
    out.extend_from_slice(&(code as u16).to_be_bytes());
    // A NUL inside the message would end it early on the client: drop them.
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
    out
}

pub fn encode_oack(options: &[(String, String)]) -> Vec<u8> {
    let mut out = OP_OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// A request with options, as a client sends it (tests and the benchmark use it).
pub fn encode_request(opcode: u16, filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = opcode.to_be_bytes().to_vec();
    for part in [filename, mode].into_iter().chain(options.iter().flat_map(|(n, v)| [*n, *v])) {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", *self as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_with_options_round_trips() {
        let raw = encode_request(OP_RRQ, "nixos/bzImage", "OCTET", &[("BlkSize", "1468"), ("tsize", "0")]);
        let Packet::Rrq(r) = parse(&raw).expect("valid") else { panic!("not an RRQ") };
        assert_eq!(r.filename, "nixos/bzImage");
        assert_eq!(r.mode, "octet");
        assert_eq!(r.options, vec![("blksize".into(), "1468".into()), ("tsize".into(), "0".into())]);
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        assert_eq!(parse(&[]), Err(PacketError::TooShort(0)));
        assert_eq!(parse(&[0]), Err(PacketError::TooShort(1)));
        assert_eq!(parse(&[0, 9]), Err(PacketError::UnknownOpcode(9)));
        assert!(matches!(parse(&[0, 4, 1]), Err(PacketError::BadLength { .. })));
        assert_eq!(parse(b"\x00\x01file"), Err(PacketError::Unterminated { what: "file name" }));
        assert_eq!(parse(b"\x00\x01file\x00octet\x00blksize\x00"), Err(PacketError::OptionWithoutValue("blksize".into())));
        assert_eq!(parse(b"\x00\x01\x00octet\x00"), Err(PacketError::EmptyFilename));
        assert_eq!(parse(b"\x00\x01\xff\x00octet\x00"), Err(PacketError::NotUtf8 { what: "file name" }));
        let mut big = encode_request(OP_RRQ, "f", "octet", &[]);
        big.resize(MAX_REQUEST + 1, b'a');
        assert_eq!(parse(&big), Err(PacketError::Oversized(MAX_REQUEST + 1)));
    }

    #[test]
    fn data_ack_error_parse() {
        let mut buf = Vec::new();
        encode_data(&mut buf, 65535, b"abc");
        assert_eq!(parse(&buf), Ok(Packet::Data { block: 65535, data: b"abc" }));
        assert_eq!(parse(&encode_ack(7)), Ok(Packet::Ack { block: 7 }));
        assert_eq!(
            parse(&encode_error(ErrorCode::AccessViolation, "no\0pe")),
            Ok(Packet::Error { code: 2, message: "nope".into() })
        );
    }
}
