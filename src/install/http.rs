//! A minimal HTTP/1.1 client for the installer's reports: one POST of a JSON body over a plain TCP
//! connection (`Connection: close`), the status and a short body read back; and in Secure Boot
//! mode one GET whose body is streamed (a system image: its bytes are checked against the signed
//! manifest by the caller, never trusted for being from this server). Hand-written rather
//! than a crate: the NFS root's closure carries every byte of it, the reports need nothing more
//! (no TLS, redirects, keep-alive, proxies or cookies), and what is here is short enough to read whole.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The most of a response the client keeps: serve's answers are a line or two.
const MAX_RESPONSE: usize = 64 * 1024;

/// An `http://HOST[:PORT][/PATH]` address (serve's, from `nixos-pxe.report=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    host: String,
    port: u16,
    /// Without a trailing slash; empty for the server's root.
    path: String,
}

impl FromStr for Url {
    type Err = String;

    fn from_str(text: &str) -> Result<Url, String> {
        let Some(rest) = text.strip_prefix("http://") else {
            return Err(if text.starts_with("https://") {
                "only http:// is supported (the installer has no TLS); give http://HOST[:PORT]".into()
            } else {
                "not an http:// address; give http://HOST[:PORT]".into()
            });
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal is bracketed: [fd00::1]:8080; a colon inside the brackets is not a port.
            Some((host, port)) if !port.contains(']') => (host, port.parse::<u16>().map_err(|_| format!("the port \"{port}\" is not a number from 1 to 65535"))?),
            _ => (authority, 80),
        };
        if host.is_empty() || port == 0 {
            return Err("no host or port 0; give http://HOST[:PORT]".into());
        }
        if let Some(c) = authority.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '?' | '#')) {
            return Err(format!("'{}' has no place in a host name", c.escape_default()));
        }
        let path = path.trim_end_matches('/');
        if path.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#')) {
            return Err("the path may not hold spaces, control characters, '?' or '#'".into());
        }
        let path = if path.is_empty() { String::new() } else { format!("/{path}") };
        Ok(Url { host: host.to_string(), port, path })
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

impl Url {
    /// The request target for `endpoint` (`/v1/report`) below this address's path.
    pub fn target(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.path)
    }

    /// `HOST:PORT` as the Host header and messages write it.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// The body as text (lossy), at most [`MAX_RESPONSE`] bytes.
    pub body: String,
}

/// The bytes of a POST of `body` (JSON) to `url` + `endpoint`.
pub fn post_request(url: &Url, endpoint: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nixos-pxe/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.target(endpoint),
        url.authority(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Sends `request` on `stream` and reads the response (until the body's length, or the end of the
/// connection). Separate from the connection so that tests can give it any stream.
pub fn exchange(mut stream: impl Read + Write, request: &[u8]) -> Result<Response, String> {
    stream.write_all(request).map_err(|e| format!("sending the request: {e}"))?;
    stream.flush().map_err(|e| format!("sending the request: {e}"))?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(done) = parse(&bytes, false)? {
            return Ok(done);
        }
        if bytes.len() > MAX_RESPONSE {
            return Err(format!("the response is longer than {MAX_RESPONSE} bytes"));
        }
        match stream.read(&mut chunk) {
            // At the end, `parse` has the whole response or says what is missing.
            Ok(0) => return parse(&bytes, true)?.ok_or_else(|| "the connection closed early".to_string()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
}

/// The response once `bytes` holds all of it (headers and a body of the announced length), else
/// `None`. `at_end`: the connection has closed, so what is there is all there is.
fn parse(bytes: &[u8], at_end: bool) -> Result<Option<Response>, String> {
    let Some(header_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if at_end { Err(format!("the connection closed after {} bytes, before the response's headers ended", bytes.len())) } else { Ok(None) };
    };
    let head = String::from_utf8_lossy(&bytes[..header_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code, reason) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let status = match code.parse::<u16>() {
        Ok(s) if version.starts_with("HTTP/1.") && (100..=599).contains(&s) => s,
        _ => return Err(format!("not an HTTP/1.x response: \"{}\"", status_line.escape_default())),
    };
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string()))
    };
    let body = &bytes[header_end + 4..];
    let body = if header("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        match dechunk(body)? {
            Some(b) => b,
            None if at_end => return Err("the connection closed inside a chunked body".into()),
            None => return Ok(None),
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().map_err(|_| format!("Content-Length \"{length}\" is not a number"))?;
        if body.len() < length {
            return if at_end { Err(format!("the connection closed after {} of {length} body bytes", body.len())) } else { Ok(None) };
        }
        body[..length].to_vec()
    } else if at_end {
        body.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, reason: reason.to_string(), body: String::from_utf8_lossy(&body).into_owned() }))
}

/// A chunked body's data, once its last (empty) chunk has arrived.
fn dechunk(mut bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut data = Vec::new();
    loop {
        let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
        let size_text = String::from_utf8_lossy(&bytes[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("a chunk size \"{size_text}\" is not hexadecimal"))?;
        let rest = &bytes[line_end + 2..];
        if size == 0 {
            return Ok(Some(data));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&rest[..size]);
        bytes = &rest[size + 2..];
    }
}

/// POSTs `body` to `url` + `endpoint` over a new TCP connection; connecting, sending and reading
/// together take at most `timeout`.
pub fn post(url: &Url, endpoint: &str, body: &[u8], timeout: Duration) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let addresses: Vec<_> = (url.host.trim_start_matches('[').trim_end_matches(']'), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    let mut last = format!("{} resolves to no address", url.host);
    for address in addresses {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{last}; no time left for {address}"));
        }
        match TcpStream::connect_timeout(&address, left) {
            Ok(stream) => {
                let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
                stream.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
                return exchange(stream, &post_request(url, endpoint, body)).map_err(|e| format!("{address}: {e}"));
            }
            Err(e) => last = format!("connecting to {address}: {e}"),
        }
    }
    Err(last)
}

/// A response body being streamed: at most `length` bytes, then the end.
pub struct Download {
    stream: Box<dyn Read + Send>,
    /// Content-Length.
    pub length: u64,
    left: u64,
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.stream.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("the connection closed {} bytes before the announced {}", self.left, self.length)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The largest header block of a GET's response.
const MAX_HEADERS: usize = 16 * 1024;

/// The bytes of a GET of `url` + `path`.
pub fn get_request(url: &Url, path: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nixos-pxe/{}\r\nConnection: close\r\n\r\n",
        url.target(path),
        url.authority(),
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// Sends a GET on `stream` and reads the response's headers: a 200 with a Content-Length gives
/// the body as a [`Download`]; any other status is an error with the body's first line.
pub fn start_get(mut stream: impl Read + Write + Send + 'static, request: &[u8]) -> Result<Download, String> {
    stream.write_all(request).map_err(|e| format!("sending the request: {e}"))?;
    stream.flush().map_err(|e| format!("sending the request: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line: what follows is the body, left in the stream.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEADERS {
            return Err(format!("the response's headers are longer than {MAX_HEADERS} bytes"));
        }
        match stream.read(&mut byte) {
            Ok(0) => return Err(format!("the connection closed after {} bytes, before the response's headers ended", head.len())),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code, reason) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default().trim());
    let status = match code.parse::<u16>() {
        Ok(s) if version.starts_with("HTTP/1.") => s,
        _ => return Err(format!("not an HTTP/1.x response: \"{}\"", status_line.escape_default())),
    };
    let header = |name: &str| text.lines().skip(1).find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string()));
    let length = match header("content-length") {
        Some(l) => l.parse::<u64>().map_err(|_| format!("Content-Length \"{l}\" is not a number"))?,
        None => return Err(format!("{status} {reason} without a Content-Length")),
    };
    if status != 200 {
        // The body's start whole (up to 4 KiB or the end), not what one read returns: a server
        // may send it in pieces.
        let mut body = Vec::new();
        let _ = Read::by_ref(&mut stream).take(length.min(4096)).read_to_end(&mut body);
        let said = String::from_utf8_lossy(&body).lines().next().unwrap_or_default().to_string();
        return Err(format!("{status} {reason}{}", if said.is_empty() { String::new() } else { format!(": {said}") }));
    }
    Ok(Download { stream: Box::new(stream), length, left: length })
}

/// GETs `url` + `path` over a new TCP connection: connecting within `timeout`, then each read
/// of the body within `timeout` again (a stalled server fails the download, a slow one does not).
pub fn get(url: &Url, path: &str, timeout: Duration) -> Result<Download, String> {
    let addresses: Vec<_> = (url.host.trim_start_matches('[').trim_end_matches(']'), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    let mut last = format!("{} resolves to no address", url.host);
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
                stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
                return start_get(stream, &get_request(url, path)).map_err(|e| format!("GET {url}{path}: {e}"));
            }
            Err(e) => last = format!("connecting to {address}: {e}"),
        }
    }
    Err(format!("GET {url}{path}: {last}"))
}

/// GETs a small document (at most `limit` bytes) whole.
pub fn get_small(url: &Url, path: &str, timeout: Duration, limit: u64) -> Result<Vec<u8>, String> {
    let mut d = get(url, path, timeout)?;
    if d.length > limit {
        return Err(format!("GET {url}{path}: {} bytes, more than the {limit} expected", d.length));
    }
    let mut body = Vec::new();
    d.read_to_end(&mut body).map_err(|e| format!("GET {url}{path}: {e}"))?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A server on a socket pair answering a GET with `answer`; the client's download, read whole.
    fn download(answer: &'static [u8]) -> Result<Vec<u8>, String> {
        let (client, mut server) = UnixStream::pair().expect("socket pair");
        let handle = std::thread::spawn(move || {
            let mut request = vec![0u8; 4096];
            let _ = server.read(&mut request).expect("read");
            for piece in answer.chunks(7) {
                let _ = server.write_all(piece);
            }
        });
        client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let result = start_get(client, &get_request(&url("http://10.42.0.1"), "/f")).and_then(|mut d| {
            let mut body = Vec::new();
            d.read_to_end(&mut body).map_err(|e| e.to_string())?;
            Ok(body)
        });
        handle.join().expect("server");
        result
    }

    #[test]
    fn a_get_streams_exactly_the_announced_body() {
        assert_eq!(download(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nAccept-Ranges: bytes\r\n\r\nhello"), Ok(b"hello".to_vec()));
        assert_eq!(download(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef"), Ok(b"abc".to_vec()), "not a byte more");
        assert_eq!(download(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"), Err("the connection closed 6 bytes before the announced 9".into()));
        assert_eq!(download(b"HTTP/1.1 404 Not Found\r\nContent-Length: 15\r\n\r\nnot found: x\nyz"), Err("404 Not Found: not found: x".into()));
        assert_eq!(download(b"HTTP/1.1 200 OK\r\n\r\nabc"), Err("200 OK without a Content-Length".into()));
        assert_eq!(String::from_utf8(get_request(&url("http://10.42.0.1:8080"), "/nixos-pxe/x")).expect("utf8"), format!("GET /nixos-pxe/x HTTP/1.1\r\nHost: 10.42.0.1:8080\r\nUser-Agent: nixos-pxe/{}\r\nConnection: close\r\n\r\n", env!("CARGO_PKG_VERSION")));
    }

    fn url(s: &str) -> Url {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn addresses_parse_with_their_port_and_path() {
        assert_eq!(url("http://10.42.0.1").to_string(), "http://10.42.0.1:80");
        assert_eq!(url("http://10.42.0.1:8080/").to_string(), "http://10.42.0.1:8080");
        assert_eq!(url("http://boot.example:81/pxe/").target("/v1/report"), "/pxe/v1/report");
        assert_eq!(url("http://10.42.0.1:80").target("/v1/report"), "/v1/report");
        assert_eq!(url("http://[fd00::1]:8080").authority(), "[fd00::1]:8080");
        assert_eq!(url("http://[fd00::1]").authority(), "[fd00::1]:80");
        for (bad, why) in [
            ("https://10.42.0.1", "only http://"),
            ("10.42.0.1", "not an http://"),
            ("http://10.42.0.1:http", "the port \"http\" is not a number"),
            ("http://10.42.0.1:0", "port 0"),
            ("http://:80", "no host"),
            ("http://user@10.42.0.1", "'@' has no place"),
            ("http://10.42.0.1/a?b", "the path may not"),
        ] {
            let err = bad.parse::<Url>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_request_is_one_post_with_its_length_and_connection_close() {
        let text = String::from_utf8(post_request(&url("http://10.42.0.1:8080/pxe"), "/v1/report", b"{\"a\":1}")).expect("utf8");
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            text,
            format!(
                "POST /pxe/v1/report HTTP/1.1\r\nHost: 10.42.0.1:8080\r\nUser-Agent: nixos-pxe/{version}\r\nContent-Type: application/json\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{{\"a\":1}}"
            )
        );
    }

    /// A server on the other end of a socket pair: reads the request, answers `answer` in
    /// pieces, and keeps the connection open unless `close` (the client must stop at the
    /// announced length and not wait for the end).
    fn serve(answer: &'static [u8], close: bool) -> (Result<Response, String>, Vec<u8>) {
        let (client, mut server) = UnixStream::pair().expect("socket pair");
        let handle = std::thread::spawn(move || {
            let mut request = vec![0u8; 4096];
            let n = server.read(&mut request).expect("read");
            request.truncate(n);
            for piece in answer.chunks(5) {
                server.write_all(piece).expect("write");
                std::thread::sleep(Duration::from_millis(1));
            }
            if !close {
                // Hold the connection until the client has read its answer and dropped its end.
                let _ = server.read(&mut [0u8; 1]);
            }
            request
        });
        client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let result = exchange(&client, b"POST / HTTP/1.1\r\n\r\n");
        drop(client);
        (result, handle.join().expect("server"))
    }

    #[test]
    fn responses_are_read_to_their_length_chunked_or_to_the_end() {
        let (r, request) = serve(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 15\r\n\r\n{\"accepted\":1}\n", false);
        assert_eq!(request, b"POST / HTTP/1.1\r\n\r\n");
        assert_eq!(r, Ok(Response { status: 200, reason: "OK".into(), body: "{\"accepted\":1}\n".into() }));
        let (r, _) = serve(b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nold \r\n7;x=y\r\nattempt\r\n0\r\n\r\n", false);
        assert_eq!(r, Ok(Response { status: 409, reason: "Conflict".into(), body: "old attempt".into() }));
        let (r, _) = serve(b"HTTP/1.0 403 Forbidden\r\n\r\nwrong token", true);
        assert_eq!(r, Ok(Response { status: 403, reason: "Forbidden".into(), body: "wrong token".into() }));
    }

    #[test]
    fn broken_responses_are_errors_that_say_how() {
        let (r, _) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true);
        assert_eq!(r, Err("the connection closed after 5 of 10 body bytes".into()));
        let (r, _) = serve(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", true);
        assert_eq!(r, Err("not an HTTP/1.x response: \"SSH-2.0-OpenSSH_9.2\"".into()));
        let (r, _) = serve(b"HTTP/1.1 200", true);
        assert_eq!(r, Err("the connection closed after 12 bytes, before the response\'s headers ended".into()));
        let (r, _) = serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n", true);
        assert_eq!(r, Err("the connection closed inside a chunked body".into()));
        let (r, _) = serve(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", true);
        assert_eq!(r, Err("Content-Length \"x\" is not a number".into()));
    }
}
