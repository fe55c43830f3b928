//! The door every client comes through: a shard accepts a TCP connection, completes the
//! TLS handshake when `[tls]` is configured, reads one request head (`http::read_head`,
//! within `handshake_timeout_ms`), and hands the connection to the `/ws` door (`ws.rs`,
//! with `requests.rs` turning request frames into the owner's typed requests) or to the
//! REST door (`rest.rs`, kept alive between requests). Refusals before any WebSocket exists
//! are answered in HTTP and logged here.
//!
//! It does not hold connection state (`host::Conn`) or render the owner's replies
//! (`host::render`).

pub mod phoenix;
mod requests;
mod rest;
mod ws;

use ws::run_ws;

/// What the doors of a shard serve besides the owner's operations: the binary's REST
/// routes (`None`: only `/ws` is served, and every other path is 404).
pub struct Doors {
    pub http: Option<Arc<dyn crate::api::HttpHandler>>,
}

use crate::auth::find_token;
pub use crate::host::close_code;
use crate::host::ShardCtx;
use crate::http::{self};
use crate::owner::{self};
use crate::stream::Stream;
use futures_lite::future;
use futures_lite::io::AsyncWriteExt;
use glommio::net::TcpStream;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::Claims;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) async fn respond(stream: &mut Stream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    let _ = stream.close().await;
}

/// Answers a request refused before any WebSocket exists and logs it at `info` (status,
/// error code, client address, path; `-` when the head never came).
pub(super) async fn refuse(
    stream: &mut Stream,
    status: u16,
    e: &Refusal,
    peer: Option<SocketAddr>,
    path: &str,
) {
    let upgrade = path == "/ws" || path == "/echo" || PHOENIX_PATHS.contains(&path);
    tracing::info!(
        status,
        code = e.code.as_str(),
        peer = %DisplayPeer(peer),
        path,
        reason = %e.message,
        "{}",
        if upgrade { "upgrade refused" } else { "request refused" }
    );
    respond(stream, &http::error_response(status, e)).await
}

/// Answers a client accepted into the shard's reserve descriptor while the process is out
/// of descriptors (`fds.rs`): HTTP 503 `WS_OVERLOADED` once its request head is in (after
/// the TLS handshake when configured), all within `fds::RESERVE_HEAD_TIMEOUT`; then the
/// socket is closed. Counted in the shard's bounded accept-error log line, not logged alone.
/// Returns the plain socket, answered and shut down, for the caller to keep as its reserve
/// descriptor (`fds::Reserve::hold`); `None` over TLS (the socket is closed).
pub async fn serve_overloaded(ctx: Rc<ShardCtx>, tcp: TcpStream) -> Option<TcpStream> {
    let cfg = ctx.cfg.clone();
    let started = Instant::now();
    let deadline = crate::fds::RESERVE_HEAD_TIMEOUT;
    let _ = tcp.set_write_timeout(Some(deadline));
    let mut stream = match &ctx.shared.tls {
        None => Stream::Plain(tcp),
        Some(acceptor) => {
            let handshake = Box::pin(acceptor.accept(tcp));
            let tls = future::or(async { Some(handshake.await) }, async {
                glommio::timer::sleep(deadline).await;
                None
            })
            .await;
            match tls {
                Some(Ok(s)) => Stream::Tls(Box::new(s)),
                _ => return None,
            }
        }
    };
    // The head is read before answering: closing a socket with the request unread resets
    // the connection, which can destroy the answer before the client reads it.
    let remaining = deadline.saturating_sub(started.elapsed());
    future::or(
        async {
            let mut buf = Vec::new();
            let _ = http::read_head(&mut stream, &mut buf, cfg.max_handshake_bytes).await;
        },
        glommio::timer::sleep(remaining),
    )
    .await;
    let e = Refusal {
        code: ErrorCode::Overloaded,
        message: "the server is out of file descriptors (its open files limit); retry later".into(),
        retry_after: Some(cfg.overloaded_retry_after_secs),
    };
    respond(&mut stream, &http::error_response(503, &e)).await;
    match stream {
        Stream::Plain(tcp) => {
            // `respond` shut the write side (FIN after the answer); nothing more is read.
            let _ = tcp.shutdown(std::net::Shutdown::Read).await;
            Some(tcp)
        }
        Stream::Tls(_) => None,
    }
}

/// Serves one accepted TCP connection to its end: the TLS handshake when `[tls]` is
/// configured, then one request head (both within `handshake_timeout_ms`).
pub async fn serve(ctx: Rc<ShardCtx>, doors: Rc<Doors>, tcp: TcpStream) {
    let cfg = ctx.cfg.clone();
    let accepted = Instant::now();
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_write_timeout(Some(Duration::from_millis(cfg.write_timeout_ms)));
    // Counted from accept to close, so one address cannot hold every handshake slot
    // either. A refusal is answered once the request head is in (an answer sent before
    // the client has written its request can be lost to a reset).
    let peer = tcp.peer_addr().ok();
    let ip_slot = peer.map(|a| ctx.shared.ips.acquire(a.ip(), cfg.max_connections_per_ip));
    let deadline = Duration::from_millis(cfg.handshake_timeout_ms);
    let mut stream = match &ctx.shared.tls {
        None => Stream::Plain(tcp),
        Some(acceptor) => {
            // SPEC §4 `wss://`: the TLS handshake counts within `handshake_timeout_ms`.
            // Plaintext, garbage or a stalled handshake has no TLS session to answer in:
            // the socket is just dropped.
            // Boxed (~1.3 KB mid-handshake) so it can never set the size of this future,
            // which every plaintext connection carries too.
            let handshake = Box::pin(acceptor.accept(tcp));
            // At shutdown a handshake still under way is dropped: it has no session yet
            // to be told "going away" in (`runtime/mod.rs` step 2).
            let tls = future::or(async { Some(handshake.await) }, async {
                future::or(glommio::timer::sleep(deadline), ctx.shared.shutdown.wait()).await;
                None
            })
            .await;
            match tls {
                Some(Ok(s)) => Stream::Tls(Box::new(s)),
                Some(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    return;
                }
                None => return,
            }
        }
    };
    let remaining = deadline.saturating_sub(accepted.elapsed());
    let mut leftover = Vec::new();
    let shutdown = async {
        ctx.shared.shutdown.wait().await;
        Some(Ok(None))
    };
    let head = future::or(
        async { Some(http::read_head(&mut stream, &mut leftover, cfg.max_handshake_bytes).await) },
        future::or(shutdown, async {
            glommio::timer::sleep(remaining).await;
            None
        }),
    )
    .await;
    // At shutdown a request head still under way ends the connection like a peer that
    // left (`Ok(None)`): nothing was asked, so nothing is answered.
    let head = match head {
        None => {
            let e = Refusal::new(ErrorCode::BadRequest, "handshake timeout");
            return refuse(&mut stream, 408, &e, peer, "-").await;
        }
        Some(Ok(None)) => return,
        Some(Err((status, e))) => return refuse(&mut stream, status, &e, peer, "-").await,
        Some(Ok(Some(h))) => h,
    };
    let _ip_slot = match ip_slot {
        Some(Err(e)) => return refuse(&mut stream, 429, &e, peer, &head.path).await,
        Some(Ok(slot)) => Some(slot),
        None => None,
    };
    match head.path.as_str() {
        "/ws" => {
            let key = match head.check_upgrade() {
                Ok(k) => k.to_owned(),
                Err(e) => return refuse(&mut stream, 426, &e, peer, &head.path).await,
            };
            // RFC 6455 §10.2: a browser page from an origin not listed is refused before
            // any WebSocket state exists.
            if let Err(e) = check_origin(&cfg, &head) {
                return refuse(&mut stream, 403, &e, peer, &head.path).await;
            }
            let found = find_token(
                head.authorization.as_deref(),
                head.query.as_deref(),
                head.protocols.as_deref(),
            );
            let Some(found) = found else {
                let e = Refusal::new(
                    ErrorCode::Unauthorized,
                    "no token: use Authorization: Bearer, ?token= or Sec-WebSocket-Protocol",
                );
                return refuse(&mut stream, 401, &e, peer, &head.path).await;
            };
            let claims = match verify_audited(&ctx, found.token, "/ws", peer) {
                Ok(c) => c,
                Err(e) => return refuse(&mut stream, 401, &e, peer, &head.path).await,
            };
            let protocol = found.echo_protocol.map(str::to_owned);
            let deflate = negotiate_deflate(&cfg, &head);
            // The head's strings (the token among them) are not needed for the
            // connection's life: free them before it starts (S1 memory per connection).
            drop(head);
            run_ws(
                ctx,
                stream,
                &key,
                protocol.as_deref(),
                claims,
                leftover,
                false,
                None,
                peer,
                deflate,
            )
            .await
        }
        // Boxed: a future is as large as its largest state, and every `/ws` connection's
        // `serve` would otherwise carry the Phoenix door's upgrade state for life.
        p if PHOENIX_PATHS.contains(&p) => {
            Box::pin(serve_phoenix(ctx, stream, head, leftover, peer)).await
        }
        "/echo" if cfg.echo_endpoint => {
            let key = match head.check_upgrade() {
                Ok(k) => k.to_owned(),
                Err(e) => return refuse(&mut stream, 426, &e, peer, &head.path).await,
            };
            let claims = Arc::new(Claims {
                sub: "echo".into(),
                org: "echo".into(),
                role: ringbearer_core::Role::Guest,
                tier: ringbearer_core::Tier::Free,
                weddings: vec![],
                exp: u64::MAX,
                nbf: None,
            });
            let deflate = negotiate_deflate(&cfg, &head);
            drop(head);
            run_ws(
                ctx, stream, &key, None, claims, leftover, true, None, peer, deflate,
            )
            .await
        }
        _ => {
            // Everything else is the REST door (SPEC §4), kept alive between requests.
            // Boxed: a future is as large as its largest state, and every `/ws`
            // connection's `serve` would otherwise carry the REST door's buffers for life.
            let handler = doors.http.clone();
            Box::pin(rest::serve_http(
                ctx,
                handler,
                &mut stream,
                head,
                leftover,
                peer,
            ))
            .await
        }
    }
}

/// Where realtime-js (and other Phoenix-channels clients) connect: `<endpoint>/websocket`
/// for the endpoints `/realtime/v1` (Supabase's) and `/socket` (Phoenix's default).
pub const PHOENIX_PATHS: [&str; 2] = ["/realtime/v1/websocket", "/socket/websocket"];

/// The value of `name` in a query string (as sent: realtime-js's keys need no decoding).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The Phoenix-channels door (`phoenix.rs`): the upgrade with `apikey` (a Ringbearer JWT,
/// the same claims and keys as `/ws`) and `vsn` (`1.0.0` or `2.0.0`) in the query.
async fn serve_phoenix(
    ctx: Rc<ShardCtx>,
    mut stream: Stream,
    head: http::RequestHead,
    leftover: Vec<u8>,
    peer: Option<SocketAddr>,
) {
    let path = head.path.clone();
    let key = match head.check_upgrade() {
        Ok(k) => k.to_owned(),
        Err(e) => return refuse(&mut stream, 426, &e, peer, &path).await,
    };
    if let Err(e) = check_origin(&ctx.cfg, &head) {
        return refuse(&mut stream, 403, &e, peer, &path).await;
    }
    let query = head.query.as_deref();
    let Some(vsn) = crate::host::phoenix::Vsn::parse(query_param(query, "vsn")) else {
        let e = Refusal::new(ErrorCode::BadRequest, "vsn must be 1.0.0 or 2.0.0");
        return refuse(&mut stream, 400, &e, peer, &path).await;
    };
    let token = query_param(query, "apikey")
        .filter(|t| !t.is_empty())
        .or_else(|| find_token(head.authorization.as_deref(), query, None).map(|f| f.token));
    let Some(token) = token else {
        let e = Refusal::new(
            ErrorCode::Unauthorized,
            "no token: pass a Ringbearer JWT as `apikey` (docs/realtime-js.md)",
        );
        return refuse(&mut stream, 401, &e, peer, &path).await;
    };
    let claims = match verify_audited(&ctx, token, "/realtime/v1/websocket", peer) {
        Ok(c) => c,
        Err(e) => return refuse(&mut stream, 401, &e, peer, &path).await,
    };
    let deflate = negotiate_deflate(&ctx.cfg, &head);
    drop(head);
    run_ws(
        ctx,
        stream,
        &key,
        None,
        claims,
        leftover,
        false,
        Some(vsn),
        peer,
        deflate,
    )
    .await
}

/// permessage-deflate for this upgrade, when enabled and offered acceptably (RFC 7692).
fn negotiate_deflate(
    cfg: &crate::IoConfig,
    head: &http::RequestHead,
) -> Option<crate::deflate::Negotiated> {
    crate::deflate::negotiate(&cfg.permessage_deflate, head.extensions.as_deref())
}

/// RFC 6455 §10.2: a browser page from an origin not in `io.allowed_origins` is refused
/// before any WebSocket state exists (both WebSocket doors).
fn check_origin(cfg: &crate::IoConfig, head: &http::RequestHead) -> Result<(), Refusal> {
    if http::origin_allowed(&cfg.allowed_origins, head.origin.as_deref()) {
        return Ok(());
    }
    Err(Refusal::new(
        ErrorCode::Forbidden,
        "this Origin may not open WebSockets here (io.allowed_origins)",
    ))
}

/// The claims of an upgrade's token; a refused one is audited under `door` (SPEC §5: the
/// record trusts nothing of the token, see `owner::audit::unauthorized`).
fn verify_audited(
    ctx: &ShardCtx,
    token: &str,
    door: &str,
    peer: Option<SocketAddr>,
) -> Result<Arc<Claims>, Refusal> {
    ctx.shared
        .verifier
        .verify(token)
        .map(Arc::new)
        .inspect_err(|e| {
            let now = crate::clock::now_ms();
            ctx.state
                .borrow()
                .audit(owner::audit::unauthorized(now, door, peer, e));
        })
}

/// A peer address for logs (`-` when unknown).
pub(super) struct DisplayPeer(pub(super) Option<SocketAddr>);

impl std::fmt::Display for DisplayPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn returns, without calling it.
    fn future_size<A, B, C, R>(_: impl Fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every connection's task is this future for its whole life (S1: memory per idle
    /// connection): a door's upgrade state must not be inlined into it. Regression: the
    /// Phoenix door's upgrade, inlined, added ~1.5 KiB to every `/ws` connection
    /// (`ringbearer-perf s1`: 7.1 → 8.7 KiB per idle connection) until it was boxed.
    /// 2,792 bytes in a debug build when this test was written (3,752 with the Phoenix
    /// upgrade inlined), plus headroom for small changes.
    const SERVE_FUTURE_BYTES_MAX: usize = 3072;

    #[test]
    fn a_connection_task_stays_small() {
        let serve_bytes = future_size(serve);
        eprintln!("serve future: {serve_bytes} bytes");
        assert!(serve_bytes <= SERVE_FUTURE_BYTES_MAX, "{serve_bytes} bytes");
    }
}
