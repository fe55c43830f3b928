//! The HTTP/1.1 side of the shared port: reading one request head (bounded in size and
//! time by the caller), routing it, and writing plain responses. Parsing is httparse's;
//! the WebSocket accept key is tungstenite's (RFC 6455 §4.2.2).

use ringbearer_core::error::{ErrorCode, Refusal};

/// The parts of a request head we route on, owned so the read buffer can be reused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    pub authorization: Option<String>,
    pub protocols: Option<String>,
    /// `Sec-WebSocket-Extensions`, every such header joined with ", " (RFC 6455 §9.1).
    pub extensions: Option<String>,
    pub origin: Option<String>,
    /// `Content-Length`, when given (conflicting values are refused while parsing).
    pub content_length: Option<usize>,
    pub content_type: Option<String>,
    /// `Transfer-Encoding` other than `identity` (chunked bodies are refused: 411).
    pub chunked: bool,
    /// Whether the client lets the connection stay open after the response (HTTP/1.1
    /// unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    pub api_key: Option<String>,
    /// The `apikey` header realtime-js sends with its REST broadcasts (a Ringbearer JWT or
    /// API key; read only by `POST /api/broadcast`, docs/realtime-js.md).
    pub apikey: Option<String>,
}

/// Most headers one request may carry.
pub const MAX_HEADERS: usize = 64;

/// `Ok(Some((head, consumed)))` once the head is complete; `Ok(None)` while incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("malformed HTTP request: {e}"),
            ))
        }
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let http11 = req.version == Some(1);
    let mut head = RequestHead {
        method: req.method.unwrap_or("").to_owned(),
        path: path.to_owned(),
        query,
        keep_alive: http11,
        ..RequestHead::default()
    };
    let bad = |m: &str| Err(Refusal::new(ErrorCode::BadRequest, m));
    for h in req.headers.iter() {
        let Ok(v) = std::str::from_utf8(h.value) else {
            continue;
        };
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Ok(n) = v.trim().parse::<usize>() else {
                return bad("malformed Content-Length");
            };
            if head.content_length.is_some_and(|m| m != n) {
                return bad("conflicting Content-Length headers");
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(v.trim().to_owned());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked |= !v.trim().eq_ignore_ascii_case("identity");
        } else if name.eq_ignore_ascii_case("x-api-key") {
            head.api_key = Some(v.trim().to_owned());
        } else if name.eq_ignore_ascii_case("apikey") {
            head.apikey = Some(v.trim().to_owned());
        } else if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket = v
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            for t in v.split(',').map(str::trim) {
                if t.eq_ignore_ascii_case("upgrade") {
                    head.connection_upgrade = true;
                } else if t.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = Some(v.trim().to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = Some(v.trim().to_owned());
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(v.to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            head.protocols = Some(v.to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            match &mut head.extensions {
                Some(e) => {
                    e.push_str(", ");
                    e.push_str(v);
                }
                None => head.extensions = Some(v.to_owned()),
            }
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(v.to_owned());
        }
    }
    Ok(Some((head, consumed)))
}

/// Bytes asked of the socket per read while a request head arrives. On the heap, never in a
/// future: an array would stay in every connection's future after the handshake.
pub const HEAD_READ_CHUNK_BYTES: usize = 1024;

/// The one request-head reader of both doors: reads until `buf` holds a whole request head
/// and returns it, leaving what followed it in `buf` (a pipelined request, or the first
/// WebSocket frames). `Ok(None)` when the peer closed (or failed) before a whole head came;
/// a head over `max_bytes` is refused with 431 and garbage with 400. Time bounds are the
/// caller's (`handshake_timeout_ms` for a new connection, `http_idle_timeout_ms` between
/// kept-alive requests).
pub async fn read_head<S: futures_lite::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max_bytes: usize,
) -> Result<Option<RequestHead>, (u16, Refusal)> {
    use futures_lite::io::AsyncReadExt;
    let mut chunk = Vec::new();
    loop {
        match parse_head(buf) {
            Ok(Some((head, used))) => {
                buf.drain(..used);
                return Ok(Some(head));
            }
            Ok(None) if buf.len() >= max_bytes => {
                return Err((
                    431,
                    Refusal::new(ErrorCode::BadRequest, "request head too large"),
                ))
            }
            Ok(None) => {}
            Err(e) => return Err((400, e)),
        }
        if chunk.is_empty() {
            chunk = vec![0u8; HEAD_READ_CHUNK_BYTES];
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

impl RequestHead {
    /// Checks the upgrade headers of RFC 6455 §4.2.1.
    pub fn check_upgrade(&self) -> Result<&str, Refusal> {
        let bad = |m: &str| Err(Refusal::new(ErrorCode::BadRequest, m));
        if self.method != "GET" {
            return bad("WebSocket upgrade needs GET");
        }
        if !self.upgrade_websocket || !self.connection_upgrade {
            return bad("this endpoint needs a WebSocket upgrade (Upgrade: websocket)");
        }
        if self.ws_version.as_deref() != Some("13") {
            return bad("Sec-WebSocket-Version must be 13");
        }
        match self.ws_key.as_deref() {
            Some(k) if k.len() == 24 => Ok(k),
            _ => bad("missing or malformed Sec-WebSocket-Key"),
        }
    }
}

/// The 101 response completing the upgrade.
pub fn switching_protocols(key: &str, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        r.push_str("Sec-WebSocket-Protocol: ");
        r.push_str(p);
        r.push_str("\r\n");
    }
    if let Some(e) = extensions {
        r.push_str("Sec-WebSocket-Extensions: ");
        r.push_str(e);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A complete response with a JSON body; the connection closes after it.
pub fn json_response(status: u16, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n{extra_headers}\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A response with any body, for the REST door: `keep_alive` says whether the connection
/// stays open after it.
pub fn response(
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    extra_headers: &str,
) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\nCache-Control: no-store\r\n{extra_headers}\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The SPEC §4 REST failure body for a refusal (`retryAfter` in seconds, when known).
pub fn error_body(e: &Refusal) -> Vec<u8> {
    let mut err = serde_json::json!({
        "code": e.code.as_str(),
        "message": e.message,
        "retryable": e.code.retryable(),
    });
    if let Some(s) = e.retry_after {
        err["retryAfter"] = s.into();
    }
    serde_json::to_vec(&serde_json::json!({"success": false, "error": err})).expect("serializable")
}

/// The REST error shape of SPEC §4 for a refusal, with the status that fits its code.
pub fn error_response(status: u16, e: &Refusal) -> Vec<u8> {
    crate::metrics::with(|m| m.refused(e.code));
    let body = error_body(e);
    let mut extra = String::new();
    if status == 426 {
        extra.push_str("Upgrade: websocket\r\n");
    }
    if let Some(s) = e.retry_after {
        extra.push_str(&format!("Retry-After: {s}\r\n"));
    }
    json_response(status, &body, &extra)
}

/// Checks one `io.allowed_origins` entry: `http(s)://host[:port]`, or `http(s)://*.domain`
/// (any subdomain of `domain`, on the default port unless one is given).
pub fn check_origin_pattern(p: &str) -> Result<(), &'static str> {
    let rest = p
        .strip_prefix("https://")
        .or_else(|| p.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest.is_empty()
        || rest.contains(['/', '?', '#', '@'])
        || rest.chars().any(|c| c.is_whitespace() || !c.is_ascii())
    {
        return Err("must be scheme://host[:port], ASCII, with no path");
    }
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    if host.is_empty() || host.contains('*') {
        return Err("may use `*` only as a leading `*.` label");
    }
    Ok(())
}

/// Whether a browser page at `origin` may open a WebSocket (RFC 6455 §10.2): `true` when
/// there is no `Origin` header (not a browser), when `allowed` is empty, or when an entry
/// matches (scheme and host case-insensitively, port exactly).
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed.is_empty() {
        return true;
    }
    let origin = origin.trim();
    allowed.iter().any(|p| origin_matches(p, origin))
}

fn origin_matches(pattern: &str, origin: &str) -> bool {
    let (Some((ps, prest)), Some((os, orest))) =
        (pattern.split_once("://"), origin.split_once("://"))
    else {
        return false;
    };
    if !ps.eq_ignore_ascii_case(os) {
        return false;
    }
    match prest.strip_prefix("*.") {
        None => prest.eq_ignore_ascii_case(orest),
        Some(domain) => {
            // `label.domain` with a non-empty label: the byte before `domain` is a dot.
            let Some(cut) = orest.len().checked_sub(domain.len() + 1) else {
                return false;
            };
            cut > 0
                && orest.is_char_boundary(cut)
                && orest[cut..].starts_with('.')
                && orest[cut + 1..].eq_ignore_ascii_case(domain)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws?token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nEXTRA";

    #[test]
    fn parses_an_upgrade_and_reports_leftovers() {
        assert!(parse_head(&UPGRADE[..20]).unwrap().is_none());
        let (h, n) = parse_head(UPGRADE).unwrap().unwrap();
        assert_eq!(&UPGRADE[n..], b"EXTRA");
        assert_eq!(h.path, "/ws");
        assert_eq!(h.query.as_deref(), Some("token=abc"));
        assert_eq!(h.check_upgrade().unwrap(), "dGhlIHNhbXBsZSBub25jZQ==");
        // RFC 6455 §1.3's example key and accept value.
        let r =
            String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", None, None)).unwrap();
        assert!(
            r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{r}"
        );
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        let allowed = vec![
            "https://app.example.com".to_string(),
            "http://localhost:3000".to_string(),
            "https://*.venue.example".to_string(),
        ];
        for ok in [
            None,
            Some("https://app.example.com"),
            Some("HTTPS://App.Example.com"),
            Some("http://localhost:3000"),
            Some("https://a.venue.example"),
            Some("https://a.b.venue.example"),
        ] {
            assert!(origin_allowed(&allowed, ok), "{ok:?}");
        }
        for bad in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://evil.example.com",
            "https://app.example.com.evil.io",
            "http://localhost:3001",
            "https://venue.example",
            "https://evilvenue.example",
            "https://a.venue.example:444",
            "null",
            "",
        ] {
            assert!(!origin_allowed(&allowed, Some(bad)), "{bad}");
        }
        assert!(origin_allowed(&[], Some("https://anything.example")));
        for p in ["https://a.b", "http://*.x.y:8080", "http://[::1]:3000"] {
            check_origin_pattern(p).unwrap();
        }
        for p in [
            "a.b",
            "https://",
            "https://a.b/",
            "https://*",
            "https://a.*.b",
            "ftp://x",
        ] {
            assert!(check_origin_pattern(p).is_err(), "{p}");
        }
    }

    #[test]
    fn refuses_garbage_and_plain_gets() {
        assert!(parse_head(b"\x00\x01\x02 nonsense\r\n\r\n").is_err());
        let (h, _) = parse_head(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.check_upgrade().unwrap_err().code, ErrorCode::BadRequest);
        let r = error_response(401, &Refusal::new(ErrorCode::Unauthorized, "no"));
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(s.ends_with(r#"{"error":{"code":"WS_UNAUTHORIZED","message":"no","retryable":false},"success":false}"#));
        let mut e = Refusal::new(ErrorCode::RateLimited, "slow down");
        e.retry_after = Some(5);
        let s = String::from_utf8(error_response(429, &e)).unwrap();
        assert!(s.contains("\r\nRetry-After: 5\r\n"), "{s}");
        assert!(s.contains(r#""retryAfter":5"#), "{s}");
    }
}
