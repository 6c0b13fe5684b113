//! serve's HTTP endpoint (axum on a tokio runtime of its own; HTTP/1.1, as GRUB speaks it):
//! - `GET /nixos-pxe/hosts/mac-<mac>.cfg`: the fleet's per-host GRUB configuration, made on
//!   request (src/serve/fleet.rs), the same as over TFTP; `mac-<mac>.json`: the same decision
//!   for the signed installer of Secure Boot mode (src/secure_boot/decision.rs);
//! - `GET` (and `HEAD`) of any regular file below the TFTP root, read-only, opened as TFTP opens
//!   it (src/serve/beneath.rs: nothing outside the root, no link out of it, no FIFO or device),
//!   with single byte ranges: GRUB's http module asks for `Range: bytes=N-` whenever it seeks
//!   backwards or past what it has buffered (http_seek in grub-core/net/http.c), and Debian's
//!   `linux` command reads the kernel whole and then seeks back to 0;
//! - `POST /v1/report`: an installer's or installed system's report, JSON: 200 accepted, 400
//!   unreadable, 403 wrong token or not from the host's address, 408 a body that did not arrive
//!   in time, 409 old attempt or finished one, 413 too big; every refusal logged with the host
//!   and why.
//!
//! The fleet's status is the operator's: `nixos-pxe fleet status` reads the state directory; no
//! endpoint on the boot network lists the hosts.
//!
//! Header names are written in title case (`Content-Length`): GRUB compares them byte for byte.

use crate::fleet::store::{Refused, Report};
use crate::serve::beneath::Root;
use crate::serve::http_socket;
use crate::serve::limits::{Gate, Throttle, Timeouts, admit};
use crate::serve::stall::StallLimited;
use crate::serve::fleet::{FleetService, HostFile, Via};
use crate::serve::tftp::{self, Refusal};
use crate::serve::tftp_packet::ErrorCode;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, FromRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::io::{self, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The largest report body taken (a log tail and a few lines); bigger ones get 413.
pub const MAX_BODY: usize = 256 * 1024;

/// What the endpoint serves.
pub struct Settings {
    /// The TFTP root: its files are served read-only.
    pub root: Arc<Root>,
    /// The fleet, when serve has one: per-host files, reports, hosts.
    pub fleet: Option<Arc<FleetService>>,
    /// The connections let in, in all and per client address.
    pub gate: Arc<Gate>,
    pub timeouts: Timeouts,
}

/// Where a request came from and arrived at, and how its connection ends.
#[derive(Debug, Clone)]
struct Conn {
    client: SocketAddr,
    local: SocketAddr,
    ending: Arc<http_socket::Ending>,
}

/// A listening socket on `address`, bound to `interface` when given.
pub fn bind(address: SocketAddr, interface: Option<&str>) -> io::Result<TcpListener> {
    // std sets SO_REUSEADDR: a restart right after a crash can bind again.
    let listener = TcpListener::bind(address)?;
    if let Some(interface) = interface {
        super::bind_to_device(&listener, interface)?;
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves on `listener` until `stop` is set.
pub fn serve(listener: TcpListener, settings: Settings, stop: &AtomicBool) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("http").enable_all().build()?;
    let address = listener.local_addr()?;
    let (gate, timeouts) = (Arc::clone(&settings.gate), settings.timeouts);
    let router = router(Arc::new(settings));
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(%address, "http: serving");
        let mut throttle = Throttle::default();
        while !stop.load(Ordering::Relaxed) {
            let Some((stream, client, permit)) = admit(&listener, &gate, &mut throttle, "http").await else { continue };
            let local = stream.local_addr().unwrap_or(address);
            let (stream, ending) = http_socket::accepted(stream);
            let conn = Conn { client, local, ending };
            let service = tower::ServiceExt::map_request(router.clone(), move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(conn.clone());
                request
            });
            tokio::spawn(async move {
                // The header timeout runs from the connection's start and from the end of each
                // response: it also ends an idle keep-alive connection.
                let served = hyper::server::conn::http1::Builder::new()
                    .title_case_headers(true)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(timeouts.http_header)
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(StallLimited::new(stream, timeouts.send_stall)),
                        hyper_util::service::TowerToHyperService::new(service),
                    )
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%client, "http: connection ended: {e}");
                }
                drop(permit);
            });
        }
        io::Result::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("http: stopped");
    Ok(())
}

fn router(settings: Arc<Settings>) -> Router {
    Router::new()
        .route("/v1/report", post(report))
        .fallback(file)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(settings)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

async fn report(State(settings): State<Arc<Settings>>, Extension(conn): Extension<Conn>, request: axum::extract::Request) -> Response {
    let client = conn.client;
    let Some(fleet) = settings.fleet.clone() else {
        return json(StatusCode::NOT_FOUND, serde_json::json!({ "accepted": false, "error": "this boot server has no fleet" }));
    };
    // The whole body within the deadline, however slowly it trickles in.
    let deadline = settings.timeouts.http_body;
    let body = match tokio::time::timeout(deadline, Bytes::from_request(request, &())).await {
        Ok(Ok(body)) => body,
        Ok(Err(rejection)) => {
            tracing::warn!(%client, why = %rejection.body_text(), "fleet: report refused");
            return rejection.into_response();
        }
        Err(_) => {
            tracing::warn!(%client, "fleet: report refused: its body did not arrive within {deadline:?}");
            return json(StatusCode::REQUEST_TIMEOUT, serde_json::json!({ "accepted": false, "error": format!("the body did not arrive within {deadline:?}") }));
        }
    };
    let report: Report = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%client, bytes = body.len(), why = %e, "fleet: report refused: malformed");
            return json(StatusCode::BAD_REQUEST, serde_json::json!({ "accepted": false, "error": format!("malformed report: {e}") }));
        }
    };
    let result = tokio::task::spawn_blocking(move || fleet.report(&report, client)).await;
    let (status, error) = match result {
        Ok(Ok(crate::serve::fleet::Reported::Accepted(accepted))) => {
            return json(StatusCode::OK, serde_json::json!({ "accepted": true, "status": accepted.status.as_str() }));
        }
        // Kept on serve's disk until the store is back: the installer need not send it again.
        Ok(Ok(crate::serve::fleet::Reported::Kept)) => {
            return json(StatusCode::ACCEPTED, serde_json::json!({ "accepted": true, "kept": "the fleet's store is away; the report is kept and written when it is back" }));
        }
        Ok(Err(refused)) => (
            match &refused {
                Refused::Invalid(_) => StatusCode::BAD_REQUEST,
                Refused::WrongToken(_) | Refused::WrongAddress(_) => StatusCode::FORBIDDEN,
                Refused::OldAttempt(_) | Refused::Ended(_) => StatusCode::CONFLICT,
                Refused::Store(crate::fleet::store::StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
                Refused::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            refused.to_string(),
        ),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("internal: {e}")),
    };
    json(status, serde_json::json!({ "accepted": false, "error": error }))
}

fn refusal_status(refusal: &Refusal) -> StatusCode {
    match refusal.code {
        ErrorCode::FileNotFound => StatusCode::NOT_FOUND,
        ErrorCode::AccessViolation => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A per-host configuration or a file below the root.
async fn file(State(settings): State<Arc<Settings>>, Extension(conn): Extension<Conn>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not served here; GET and HEAD are"));
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(path) = percent_decode(uri.path()) else {
        return text(StatusCode::BAD_REQUEST, "the path is not percent-encoded UTF-8");
    };
    let relative = match tftp::relative_path(&settings.root, &path) {
        Ok(r) => r,
        Err(refusal) => return text(refusal_status(&refusal), refusal.message),
    };
    if let Some(fleet) = settings.fleet.clone()
        && let Some(mac) = FleetService::mac_of(&relative)
    {
        let (mac, form) = match mac {
            Ok(asked) => asked,
            Err(why) => return text(StatusCode::NOT_FOUND, format!("not found: {why}")),
        };
        let (client, local) = (conn.client, conn.local.ip());
        let made = tokio::task::spawn_blocking(move || fleet.host_file(mac, form, Via::Http, client, local)).await;
        let content_type = match form {
            HostFile::Grub => "text/plain; charset=utf-8",
            HostFile::Decision => "application/json",
        };
        return match made {
            Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
            Ok(Err(e)) => {
                tracing::error!(%mac, client = %conn.client, "fleet: cannot make the configuration: {e}");
                text(StatusCode::INTERNAL_SERVER_ERROR, "the boot server cannot decide now; see its log")
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("internal: {e}")),
        };
    }
    let root = Arc::clone(&settings.root);
    let opened = match tokio::task::spawn_blocking(move || tftp::open(&root, &path)).await {
        Ok(Ok(x)) => x,
        Ok(Err(refusal)) => {
            tracing::warn!(client = %conn.client, path = uri.path(), "http: refused: {}", refusal.message);
            return text(refusal_status(&refusal), refusal.message);
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("internal: {e}")),
    };
    let (mut file, size) = opened;
    let (status, start, len) = match byte_range(headers.get(header::RANGE), size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((first, last))) => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
        Err(()) => {
            let mut response = text(StatusCode::RANGE_NOT_SATISFIABLE, format!("the file has {size} bytes"));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return response;
        }
    };
    tracing::info!(client = %conn.client, path = uri.path(), bytes = len, offset = start, "http: sending");
    if let Err(e) = file.seek(SeekFrom::Start(start)) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read: {e}"));
    }
    let body = match method {
        Method::HEAD => Body::empty(),
        // Reads of 256 KiB: a capture of GRUB loading the kernel showed no short segment at their
        // boundaries (the socket's buffer stays full while GRUB takes 536 bytes a segment), so
        // their size does not matter to GRUB; what does is in http_socket.rs.
        _ => Body::from_stream(tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file).take(len), 256 * 1024)),
    };
    let grub_reads_to_end = method == Method::GET && headers.get(header::USER_AGENT).is_some_and(|agent| agent.as_bytes().starts_with(b"GRUB "));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    if grub_reads_to_end {
        // GRUB's http module waits 400 ms more at the end of every file unless the connection
        // fails (src/serve/http_socket.rs): this response is the connection's last, and it is
        // reset once GRUB has acknowledged all of it.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        conn.ending.reset_when_acknowledged();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    response
}

/// The one byte range of a `Range` header, as (first, last) inclusive and within `size`:
/// `Ok(None)` serves the whole file (no header, or one this server ignores, as RFC 9110 allows:
/// several ranges, another unit, a malformed one), `Err` is 416 (it starts past the end).
fn byte_range(header: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.to_str().ok()).and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Ok(None) };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) if n == 0 || size == 0 => Err(()),
        (true, _, Some(n)) => Ok(Some((size.saturating_sub(n), size - 1))),
        (false, Some(a), _) if a >= size => Err(()),
        (false, Some(a), None) if last.trim().is_empty() => Ok(Some((a, size - 1))),
        (false, Some(a), Some(b)) if a <= b => Ok(Some((a, b.min(size - 1)))),
        _ => Ok(None),
    }
}

/// `%XX` sequences decoded; None for a bad escape or a result that is not UTF-8 or holds NUL.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.contains('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_grub_and_curl_send_them() {
        let r = |h: &str, size| byte_range(Some(&HeaderValue::from_str(h).expect("header")), size);
        assert_eq!(byte_range(None, 10), Ok(None));
        assert_eq!(r("bytes=0-", 10), Ok(Some((0, 9))));
        assert_eq!(r("bytes=4-", 10), Ok(Some((4, 9))), "GRUB's http_seek");
        assert_eq!(r("bytes=2-5", 10), Ok(Some((2, 5))));
        assert_eq!(r("bytes=2-500", 10), Ok(Some((2, 9))));
        assert_eq!(r("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(r("bytes=-30", 10), Ok(Some((0, 9))));
        assert_eq!(r("bytes=10-", 10), Err(()));
        assert_eq!(r("bytes=-0", 10), Err(()));
        assert_eq!(r("bytes=0-", 0), Err(()));
        for ignored in ["bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=x-", "bytes=1"] {
            assert_eq!(r(ignored, 10), Ok(None), "{ignored}");
        }
    }

    #[test]
    fn paths_are_percent_decoded_strictly() {
        assert_eq!(percent_decode("/nixos/bzImage").as_deref(), Some("/nixos/bzImage"));
        assert_eq!(percent_decode("/a%20b/%2e%2E").as_deref(), Some("/a b/.."));
        assert_eq!(percent_decode("/nixos-pxe/hosts/mac-52%3A54:00:00:00:a1.cfg").as_deref(), Some("/nixos-pxe/hosts/mac-52:54:00:00:00:a1.cfg"));
        for bad in ["/%", "/%4", "/%zz", "/%00", "/%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
