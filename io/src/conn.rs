//! One client connection: the HTTP upgrade (or a plain HTTP answer), then two halves joined
//! in one task — a reader that feeds tungstenite's protocol state machine and handles
//! requests, and a writer that coalesces everything pending for the connection into one
//! socket write per wake-up (glommio's socket writes are plain `send(2)`: batching has to
//! come from here).
//!
//! Closing protocol: anything may call [`Conn::close`] (slow consumer, heartbeat timeout,
//! token expiry, shutdown, a protocol error). The writer then drops the backlog, writes the
//! close frame (bounded by the write timeout), and sets `done`; the reader stops at `done`.

use crate::auth::find_token;
use crate::http::{self, RequestHead};
use crate::notify::Notify;
use crate::outbox::{encode_frame, Opcode, OutFrame, Outbox};
use crate::shard::{ShardCtx, ShardMsg};
use crate::stream::Stream;
use bytes::Bytes;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use hashbrown::HashSet;
use ringbearer_core::channel_state::ConnRef;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::protocol::{self, parse_request, Request};
use ringbearer_core::{shard_for, ChannelName, Claims, Priority};
use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::protocol::{Role as WsRole, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

/// Close codes (RFC 6455 §7.4 and ours, `docs/protocol.md`).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    pub const SLOW_CONSUMER: u16 = 4001;
    /// The token expired and no fresh one came (`op: token`); reconnect with a new token.
    pub const TOKEN_EXPIRED: u16 = 4002;
}

/// The reason sent with [`close_code::GOING_AWAY`] when the server shuts down.
pub const SHUTDOWN_REASON: &str = "server shutting down; reconnect later";

pub struct Conn {
    pub id: u64,
    pub cref: ConnRef,
    claims: RefCell<Arc<Claims>>,
    pub outbox: RefCell<Outbox>,
    /// Channels whose `subscribed` reply reached this connection.
    pub channels: RefCell<HashSet<String>>,
    /// Channels with a subscribe on its way to the owner, each holding a reservation of
    /// the user's `subscriptions_per_user` until confirmed or refused.
    reserved: RefCell<HashSet<String>>,
    cfg: Rc<crate::IoConfig>,
    policy: Arc<crate::policy::Policy>,
    pub last_seen: Cell<Instant>,
    /// When the last heartbeat ping was queued (the connection's start before the first).
    last_ping: Cell<Instant>,
    /// Pings sent since the peer was last heard from.
    unanswered_pings: Cell<u8>,
    /// `token_expiring` was sent for the current token.
    expiry_warned: Cell<bool>,
    /// Set once: the close frame to send.
    closing: RefCell<Option<(u16, String)>>,
    /// The peer sent a close frame (tungstenite queues the reply itself); `closing` then
    /// holds the peer's code and reason.
    peer_closed: Cell<bool>,
    /// The peer's socket ended without a close frame (EOF or reset).
    peer_lost: Cell<bool>,
    /// A socket write failed part-way: the stream's framing is broken, so no close frame
    /// may follow; the socket is just dropped.
    write_failed: Cell<bool>,
    ping_due: Cell<bool>,
    pub wake_writer: Notify,
    pub done: Notify,
}

impl Conn {
    pub(crate) fn new(
        id: u64,
        cref: ConnRef,
        claims: Arc<Claims>,
        cfg: &Rc<crate::IoConfig>,
        policy: Arc<crate::policy::Policy>,
    ) -> Self {
        Conn {
            id,
            cref,
            claims: RefCell::new(claims),
            outbox: RefCell::new(Outbox::new(cfg.outbox_max_messages, cfg.outbox_max_bytes)),
            channels: RefCell::new(HashSet::new()),
            reserved: RefCell::new(HashSet::new()),
            cfg: cfg.clone(),
            policy,
            last_seen: Cell::new(Instant::now()),
            last_ping: Cell::new(Instant::now()),
            unanswered_pings: Cell::new(0),
            expiry_warned: Cell::new(false),
            closing: RefCell::new(None),
            peer_closed: Cell::new(false),
            peer_lost: Cell::new(false),
            write_failed: Cell::new(false),
            ping_due: Cell::new(false),
            wake_writer: Notify::default(),
            done: Notify::default(),
        }
    }

    pub fn claims(&self) -> Arc<Claims> {
        self.claims.borrow().clone()
    }

    /// Who the connection speaks for: (`org`, `sub`).
    pub fn user(&self) -> ringbearer_core::UserKey {
        self.claims.borrow().user_key()
    }

    /// Reserves a subscription to `channel` before asking its owner: `Ok(false)` when the
    /// connection already has (or is getting) it.
    pub fn reserve(&self, channel: &str) -> Result<bool, Refusal> {
        if self.channels.borrow().contains(channel) || self.reserved.borrow().contains(channel) {
            return Ok(false);
        }
        let max = self.cfg.limits.max_subscriptions_per_connection;
        if self.channels.borrow().len() + self.reserved.borrow().len() >= max {
            return Err(Refusal::new(
                ErrorCode::SubscriptionFailed,
                format!("at most {max} subscriptions per connection"),
            ));
        }
        self.policy.reserve_subscription(
            &self.claims(),
            &self.cfg.limits,
            crate::shard::now_ms(),
        )?;
        self.reserved.borrow_mut().insert(channel.to_owned());
        Ok(true)
    }

    fn release(&self) {
        self.policy
            .release_subscription(&self.claims(), &self.cfg.limits, crate::shard::now_ms());
    }

    /// Takes `channel` out of `reserved`; an emptied set gives its table back (most
    /// connections hold no reservation most of their life).
    fn unreserve(&self, channel: &str) -> bool {
        let mut r = self.reserved.borrow_mut();
        let was = r.remove(channel);
        if r.is_empty() {
            *r = HashSet::new();
        }
        was
    }

    /// The owner confirmed: `true` when the channel is new on this connection.
    pub fn confirm(&self, channel: &str) -> bool {
        let was_reserved = self.unreserve(channel);
        let added = self.channels.borrow_mut().insert(channel.to_owned());
        if was_reserved && !added {
            self.release();
        }
        added
    }

    /// The owner refused: give the reservation back.
    pub fn refused(&self, channel: &str) {
        if self.unreserve(channel) {
            self.release();
        }
    }

    /// Unsubscribed: `true` when it was subscribed here.
    pub fn unsubscribed(&self, channel: &str) -> bool {
        let had = self.channels.borrow_mut().remove(channel);
        if had {
            self.release();
        }
        had
    }

    /// The connection ended: every subscription and reservation it held is given back.
    /// Returns the channels it was subscribed to.
    pub fn release_all(&self) -> Vec<String> {
        let channels: Vec<String> = self.channels.borrow_mut().drain().collect();
        let reserved = self.reserved.borrow_mut().drain().count();
        for _ in 0..channels.len() + reserved {
            self.release();
        }
        channels
    }

    /// Whether the connection is user (`org`, `sub`) (SPEC §1 identity: never `sub` alone).
    pub fn is_user(&self, org: &str, sub: &str) -> bool {
        let c = self.claims.borrow();
        c.org == org && c.sub == sub
    }

    /// Channels subscribed or being subscribed to (for a token refresh's re-check).
    pub fn channels_held(&self) -> Vec<String> {
        let mut v: Vec<String> = self.channels.borrow().iter().cloned().collect();
        v.extend(self.reserved.borrow().iter().cloned());
        v
    }

    pub fn is_open(&self) -> bool {
        self.closing.borrow().is_none()
    }

    /// Starts closing with `code`; the first reason wins.
    pub fn close(&self, code: u16, reason: &str) {
        let mut c = self.closing.borrow_mut();
        if c.is_none() {
            *c = Some((code, reason.to_owned()));
            drop(c);
            self.wake_writer.notify();
        }
    }

    pub fn ping(&self) {
        self.ping_due.set(true);
        self.wake_writer.notify();
    }

    /// One heartbeat round at `now` with this connection's `interval` (SPEC §3): pings when
    /// one is due; closes with 4000 once two pings went unanswered and the peer has been
    /// silent for two intervals. (Counting unanswered pings, not only silence, keeps a
    /// connection whose interval just shrank — a wedding day began — from being closed for
    /// the longer silence the old interval allowed.)
    pub fn heartbeat(&self, now: Instant, interval: Duration) {
        if self.last_seen.get() > self.last_ping.get() {
            self.unanswered_pings.set(0);
        }
        if self.unanswered_pings.get() >= 2
            && now.duration_since(self.last_seen.get()) > interval * 2
        {
            if self.is_open() {
                crate::metrics::with(|m| {
                    m.heartbeat_closes.fetch_add(1, Ordering::Relaxed);
                });
            }
            self.close(close_code::HEARTBEAT_TIMEOUT, "heartbeat timeout");
        } else if now.duration_since(self.last_ping.get()) >= interval {
            self.unanswered_pings
                .set(self.unanswered_pings.get().saturating_add(1));
            self.last_ping.set(now);
            self.ping();
        }
    }

    /// Token expiry at `now_s` (SPEC §4 Tokens): tells the client `token_expiring` once,
    /// `warning_secs` before `exp`; past `exp` + `leeway_secs` sends `WS_UNAUTHORIZED` and
    /// closes with 4002. Returns whether the connection stays open.
    pub fn check_token_expiry(
        &self,
        claims: &Claims,
        now_s: u64,
        leeway_secs: u64,
        warning_secs: u64,
    ) -> bool {
        if now_s > claims.exp.saturating_add(leeway_secs) {
            let e = Refusal::new(
                ErrorCode::Unauthorized,
                "token expired; reconnect with a fresh token",
            );
            self.send_control(protocol::reply_error(None, &e).into());
            self.close(close_code::TOKEN_EXPIRED, "token expired");
            return false;
        }
        if !self.expiry_warned.get() && now_s.saturating_add(warning_secs) >= claims.exp {
            self.expiry_warned.set(true);
            self.send_control(protocol::token_expiring(claims.exp).into());
        }
        true
    }

    pub fn send_control(&self, data: Bytes) {
        self.push(|o| {
            o.push_control(OutFrame {
                opcode: Opcode::Text,
                channel: 0,
                data,
            })
        });
    }

    /// A reply followed by frames that must stay with it (see `Outbox::push_control_burst`).
    pub fn send_burst(&self, frames: Vec<Bytes>) {
        let frames = frames
            .into_iter()
            .map(|data| OutFrame {
                opcode: Opcode::Text,
                channel: 0,
                data,
            })
            .collect();
        self.push(|o| o.push_control_burst(frames));
    }

    pub fn send_message(&self, p: Priority, channel: u64, data: Bytes) {
        self.push(|o| {
            o.push_message(
                p,
                OutFrame {
                    opcode: Opcode::Text,
                    channel,
                    data,
                },
            )
        });
    }

    fn push(&self, f: impl FnOnce(&mut Outbox) -> Result<(), crate::outbox::Overflow>) {
        if !self.is_open() {
            return;
        }
        if f(&mut self.outbox.borrow_mut()).is_err() {
            return self.slow_consumer();
        }
        self.wake_writer.notify();
    }

    /// SPEC §2.6: past a bounded backlog the consumer is disconnected; its subscriptions
    /// stay, so resuming recovers what it missed.
    fn slow_consumer(&self) {
        if self.is_open() {
            crate::metrics::with(|m| {
                m.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
            });
        }
        self.close(
            close_code::SLOW_CONSUMER,
            "slow consumer: outgoing backlog over its bound",
        );
    }

    /// tungstenite writes its own replies (a pong per ping, the close reply) into the
    /// connection's buffer, outside the outbox: `auto_reply_bytes` of them count against
    /// the same `outbox_max_bytes`, so a client sending pings without reading is a slow
    /// consumer like any other (without this, its pongs grew without bound).
    fn check_auto_replies(&self, auto_reply_bytes: usize) {
        if self.outbox.borrow().bytes() + auto_reply_bytes > self.cfg.outbox_max_bytes {
            self.slow_consumer();
        }
    }
}

/// What an idle connection's reader holds: enough for a typical request frame.
const SMALL_READ_BYTES: usize = 256;
/// Buffers larger than this are released once empty instead of kept between uses (the
/// socket write buffer and the input tungstenite reads from). Small enough that an idle connection does
/// not keep the capacity of its largest reply (a `subscribed` with its presence list),
/// large enough that one ~450-byte message per wake-up reuses it.
const RETAINED_BUFFER_BYTES: usize = 512;

/// Bytes per read of an upgrade request head: most heads (a token included) fit in one,
/// and the head is bounded by `max_handshake_bytes` anyway.
const HEAD_READ_BYTES: usize = 1024;

/// Bytes per read while discarding what a client sends after our close frame
/// (`close_linger_ms`): nothing of it is kept, so one modest buffer serves.
const LINGER_READ_BYTES: usize = 4096;

/// Longest close reason we send: RFC 6455 §5.5 caps a control frame's payload at 125
/// bytes, 2 of which are the close code.
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// `reason` cut to [`MAX_CLOSE_REASON_BYTES`] at a character boundary (RFC 6455 §7.4: the
/// reason is UTF-8, and a client fails a connection whose close reason is not).
fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The stream tungstenite's state machine reads from and writes into: plain buffers. The
/// socket I/O is ours.
#[derive(Default)]
struct Buffers {
    rx: Vec<u8>,
    rx_pos: usize,
    tx: Vec<u8>,
}

impl Read for Buffers {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = &self.rx[self.rx_pos..];
        if avail.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.rx_pos += n;
        if self.rx_pos == self.rx.len() {
            if self.rx.capacity() > RETAINED_BUFFER_BYTES {
                self.rx = Vec::new();
            } else {
                self.rx.clear();
            }
            self.rx_pos = 0;
        }
        Ok(n)
    }
}

impl Write for Buffers {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Ws {
    ctx: WebSocketContext,
    bufs: Buffers,
    /// Fail-fast UTF-8 over the raw input (tungstenite checks only whole frames).
    scan: crate::utf8_scan::Utf8Scan,
}

fn ws_config(cfg: &crate::IoConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(cfg.ws_read_buffer_bytes)
        .write_buffer_size(0)
        .max_write_buffer_size(cfg.outbox_max_bytes)
        .max_message_size(Some(cfg.limits.max_frame_bytes))
        .max_frame_size(Some(cfg.limits.max_frame_bytes))
        .accept_unmasked_frames(false)
}

/// Reads an HTTP request head, bounded in size; `None` on EOF, oversize or garbage (with
/// the refusal to send, if any).
async fn read_head(
    stream: &mut Stream,
    max: usize,
) -> Result<(RequestHead, Vec<u8>), Option<(u16, Refusal)>> {
    let mut buf = Vec::with_capacity(HEAD_READ_BYTES);
    // On the heap, like the linger buffer in `run_ws`: an array would stay in every
    // connection's future after the handshake.
    let mut chunk = vec![0u8; HEAD_READ_BYTES];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| None)?;
        if n == 0 {
            return Err(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        match http::parse_head(&buf) {
            Ok(Some((head, used))) => return Ok((head, buf[used..].to_vec())),
            Ok(None) if buf.len() >= max => {
                return Err(Some((
                    431,
                    Refusal::new(ErrorCode::BadRequest, "request head too large"),
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(Some((400, e))),
        }
    }
}

async fn respond(stream: &mut Stream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    let _ = stream.close().await;
}

/// Answers a request refused before any WebSocket exists and logs it at `info` (status,
/// error code, client address, path; `-` when the head never came).
async fn refuse(
    stream: &mut Stream,
    status: u16,
    e: &Refusal,
    peer: Option<SocketAddr>,
    path: &str,
) {
    let upgrade = path == "/ws" || path == "/echo";
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
pub async fn serve_overloaded(ctx: Rc<ShardCtx>, tcp: TcpStream) {
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
                _ => return,
            }
        }
    };
    // The head is read before answering: closing a socket with the request unread resets
    // the connection, which can destroy the answer before the client reads it.
    let remaining = deadline.saturating_sub(started.elapsed());
    future::or(
        async {
            let _ = read_head(&mut stream, cfg.max_handshake_bytes).await;
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
}

/// Serves one accepted TCP connection to its end: the TLS handshake when `[tls]` is
/// configured, then one request head (both within `handshake_timeout_ms`).
pub async fn serve(ctx: Rc<ShardCtx>, tcp: TcpStream) {
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
            let tls = future::or(async { Some(handshake.await) }, async {
                glommio::timer::sleep(deadline).await;
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
    let head = future::or(
        async { Some(read_head(&mut stream, cfg.max_handshake_bytes).await) },
        async {
            glommio::timer::sleep(remaining).await;
            None
        },
    )
    .await;
    let (head, leftover) = match head {
        None => {
            let e = Refusal::new(ErrorCode::BadRequest, "handshake timeout");
            return refuse(&mut stream, 408, &e, peer, "-").await;
        }
        Some(Err(None)) => return,
        Some(Err(Some((status, e)))) => return refuse(&mut stream, status, &e, peer, "-").await,
        Some(Ok(h)) => h,
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
            if !http::origin_allowed(&cfg.allowed_origins, head.origin.as_deref()) {
                let e = Refusal::new(
                    ErrorCode::Forbidden,
                    "this Origin may not open WebSockets here (io.allowed_origins)",
                );
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
            let claims = match ctx.shared.verifier.verify(found.token) {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    crate::shard::audit_unauthorized(&ctx.state.borrow().catalog, "/ws", peer, &e);
                    return refuse(&mut stream, 401, &e, peer, &head.path).await;
                }
            };
            let protocol = found.echo_protocol.map(str::to_owned);
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
                peer,
            )
            .await
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
            drop(head);
            run_ws(ctx, stream, &key, None, claims, leftover, true, peer).await
        }
        _ => {
            // Everything else is the REST door (SPEC §4), kept alive between requests.
            // Boxed: a future is as large as its largest state, and every `/ws`
            // connection's `serve` would otherwise carry the REST door's buffers for life.
            Box::pin(crate::api::serve_http(
                ctx,
                &mut stream,
                head,
                leftover,
                peer,
            ))
            .await
        }
    }
}

/// Counts a connection against `max_connections` and the user's `connections_per_user`
/// for as long as it lives.
struct Admission<'a> {
    shared: &'a crate::shared::Shared,
    /// The claims it was counted under (`None` for the echo endpoint).
    user: Option<(Arc<Claims>, &'a ringbearer_core::Limits)>,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some((c, l)) = &self.user {
            let g = crate::metrics::RoleGroup::of(c.role);
            crate::metrics::with(|m| m.supplier_delta(g, false));
            self.shared
                .policy
                .close_connection(c, l, crate::shard::now_ms());
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_ws(
    ctx: Rc<ShardCtx>,
    mut stream: Stream,
    key: &str,
    protocol: Option<&str>,
    claims: Arc<Claims>,
    leftover: Vec<u8>,
    echo: bool,
    peer: Option<SocketAddr>,
) {
    let cfg = ctx.cfg.clone();
    let shared = ctx.shared.clone();
    let path = if echo { "/echo" } else { "/ws" };
    // SPEC §1 Saturday mode: the cap doubles while it is on.
    let max = shared.max_connections(shared.calendar_now_ms());
    if shared.connections.fetch_add(1, Ordering::Relaxed) >= max {
        shared.connections.fetch_sub(1, Ordering::Relaxed);
        let e = Refusal {
            code: ErrorCode::Overloaded,
            message: format!("server at capacity ({max} connections); retry later"),
            retry_after: Some(cfg.overloaded_retry_after_secs),
        };
        return refuse(&mut stream, 503, &e, peer, path).await;
    }
    let mut admission = Admission {
        shared: &shared,
        user: None,
    };
    if !echo {
        if let Err(e) = shared
            .policy
            .open_connection(&claims, &cfg.limits, crate::shard::now_ms())
        {
            return refuse(&mut stream, 429, &e, peer, path).await;
        }
        admission.user = Some((claims.clone(), &cfg.limits));
        let g = crate::metrics::RoleGroup::of(claims.role);
        crate::metrics::with(|m| {
            m.connections_opened.fetch_add(1, Ordering::Relaxed);
            m.supplier_delta(g, true);
        });
    }
    if stream
        .write_all(&http::switching_protocols(key, protocol))
        .await
        .is_err()
        || stream.flush().await.is_err()
    {
        return;
    }
    let conn = {
        let mut st = ctx.state.borrow_mut();
        let id = st.next_conn;
        st.next_conn += 1;
        let cref = ConnRef {
            shard: st.id,
            conn: id,
        };
        let conn = Rc::new(Conn::new(id, cref, claims, &cfg, shared.policy.clone()));
        st.conns.insert(id, conn.clone());
        conn
    };
    // Upgraded after its shard told every connection to go (`runtime/mod.rs` step 2).
    if shared.shutdown.is_set() {
        conn.close(close_code::GOING_AWAY, SHUTDOWN_REASON);
    }
    let opened = Instant::now();
    log_opened(&conn, peer, echo);
    let mut scan = crate::utf8_scan::Utf8Scan::default();
    let leftover_text_ok = scan.feed(&leftover);
    let ws = RefCell::new(Ws {
        ctx: WebSocketContext::from_partially_read(leftover, WsRole::Server, Some(ws_config(&cfg))),
        bufs: Buffers::default(),
        scan,
    });
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let reader = async {
        // Anything already buffered after the head is handled before the first read.
        process(&ctx, &conn, &ws, echo);
        if !leftover_text_ok {
            conn.close(close_code::INVALID_DATA, "text frame is not UTF-8");
        }
        // An idle connection holds only `small`; a read that fills it switches to a
        // `socket_read_bytes` buffer until reads come back short again (memory per idle
        // connection is what 20,000 phones cost; see docs/performance.md S1).
        let mut small = [0u8; SMALL_READ_BYTES];
        let mut big: Option<Vec<u8>> = None;
        while conn.is_open() {
            let buf: &mut [u8] = match &mut big {
                Some(b) => b,
                None => &mut small,
            };
            let cap = buf.len();
            let n = match rd.read(buf).await {
                Ok(0) | Err(_) => {
                    if conn.is_open() {
                        conn.peer_lost.set(true);
                    }
                    conn.close(close_code::NORMAL, "");
                    break;
                }
                Ok(n) => n,
            };
            conn.last_seen.set(Instant::now());
            let data = match &big {
                Some(b) => &b[..n],
                None => &small[..n],
            };
            let text_ok = {
                let mut w = ws.borrow_mut();
                w.bufs.rx.extend_from_slice(data);
                w.scan.feed(data)
            };
            // Whole messages before the invalid bytes are still handled, in order.
            process(&ctx, &conn, &ws, echo);
            if !text_ok {
                // RFC 6455 §8.1: fail fast, even inside a frame that has not ended.
                conn.close(close_code::INVALID_DATA, "text frame is not UTF-8");
            }
            if n == cap && big.is_none() {
                big = Some(vec![0u8; cfg.socket_read_bytes.max(SMALL_READ_BYTES)]);
            } else if n < cap && big.is_some() {
                big = None;
            }
        }
    };
    let writer = async {
        let mut tx: Vec<u8> = Vec::new();
        loop {
            conn.wake_writer.wait().await;
            let closing = conn.closing.borrow().clone();
            {
                let mut w = ws.borrow_mut();
                let Ws {
                    ctx: wsctx, bufs, ..
                } = &mut *w;
                let _ = wsctx.flush(bufs);
                tx.append(&mut bufs.tx);
            }
            if let Some((code, reason)) = closing {
                // A slow or dead consumer gets nothing more (not even the pongs tungstenite
                // queued); any other close first sends the replies still queued (e.g. the
                // error that explains a 1009).
                let cut_off = !conn.peer_closed.get()
                    && (code == close_code::SLOW_CONSUMER || code == close_code::HEARTBEAT_TIMEOUT);
                if cut_off {
                    tx.clear();
                } else {
                    conn.outbox
                        .borrow_mut()
                        .drain_control_into(&mut tx, cfg.write_batch_bytes);
                }
                conn.outbox.borrow_mut().clear();
                if conn.write_failed.get() {
                    break;
                }
                if !conn.peer_closed.get() {
                    let mut payload = code.to_be_bytes().to_vec();
                    payload.extend_from_slice(close_reason(&reason).as_bytes());
                    tx.push(0x88);
                    tx.push(payload.len() as u8);
                    tx.extend_from_slice(&payload);
                }
                let _ = wr.write_all(&tx).await;
                let _ = wr.flush().await;
                let _ = wr.close().await;
                break;
            }
            if conn.ping_due.replace(false) {
                encode_frame(&mut tx, Opcode::Ping, b"");
            }
            loop {
                conn.outbox
                    .borrow_mut()
                    .drain_into(&mut tx, cfg.write_batch_bytes);
                if tx.is_empty() {
                    break;
                }
                // `flush` pushes out a TLS record rustls held back on a full socket; it
                // costs nothing on plaintext.
                if wr.write_all(&tx).await.is_err() || wr.flush().await.is_err() {
                    conn.write_failed.set(true);
                    conn.close(close_code::INTERNAL, "write failed or timed out");
                    break;
                }
                tx.clear();
                if conn.outbox.borrow().is_empty() || !conn.is_open() {
                    break;
                }
            }
            // Keep a small write buffer between wake-ups; give a large one back.
            if tx.capacity() > RETAINED_BUFFER_BYTES {
                tx = Vec::new();
            }
            if !conn.is_open() {
                conn.wake_writer.notify();
            }
        }
        conn.done.notify();
    };
    future::zip(future::or(reader, conn.done.wait_sticky()), writer).await;
    // After our close frame, keep reading (and discarding) briefly: closing a socket with
    // unread input sends a reset, which can destroy the close frame before the client
    // reads it (RFC 6455 §7.1.1 has the server wait for the client's close).
    if !conn.peer_closed.get() && !conn.write_failed.get() {
        let linger = Duration::from_millis(cfg.close_linger_ms);
        // On the heap: an array here would be part of every connection's future for its
        // whole life (futures are as large as their largest state), ~4 KiB each.
        let mut sink = vec![0u8; LINGER_READ_BYTES];
        future::or(
            async {
                while let Ok(n) = rd.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            },
            glommio::timer::sleep(linger),
        )
        .await;
    }
    log_closed(&conn, peer, opened);
    let out = ctx.state.borrow_mut().forget_conn(&conn);
    ctx.route_all(out);
}

/// `info`: one line per WebSocket connection opened (docs/operations.md "Logging").
fn log_opened(conn: &Conn, peer: Option<SocketAddr>, echo: bool) {
    let c = conn.claims();
    tracing::info!(
        conn = %format_args!("c-{}-{}", conn.cref.shard, conn.cref.conn),
        peer = %DisplayPeer(peer),
        org = %c.org,
        sub = %c.sub,
        role = c.role.as_str(),
        path = if echo { "/echo" } else { "/ws" },
        "connection opened"
    );
}

/// `info`: one line per WebSocket connection closed, with who closed it, the close code
/// and reason (4000 heartbeat timeout and 4001 slow consumer among them), and how long it
/// lived.
fn log_closed(conn: &Conn, peer: Option<SocketAddr>, opened: Instant) {
    let (code, reason) = conn
        .closing
        .borrow()
        .clone()
        .unwrap_or((close_code::NORMAL, String::new()));
    let (by, code, reason) = if conn.peer_lost.get() {
        (
            "peer",
            1006,
            "connection lost without a close frame".to_owned(),
        )
    } else if conn.peer_closed.get() {
        ("peer", code, reason)
    } else {
        ("server", code, reason)
    };
    let c = conn.claims();
    tracing::info!(
        conn = %format_args!("c-{}-{}", conn.cref.shard, conn.cref.conn),
        peer = %DisplayPeer(peer),
        org = %c.org,
        sub = %c.sub,
        by,
        code,
        reason = %reason,
        duration_ms = opened.elapsed().as_millis() as u64,
        "connection closed"
    );
}

/// A peer address for logs (`-` when unknown).
struct DisplayPeer(Option<SocketAddr>);

impl std::fmt::Display for DisplayPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("-"),
        }
    }
}

/// Runs tungstenite over whatever bytes have arrived and handles each complete message.
fn process(ctx: &Rc<ShardCtx>, conn: &Rc<Conn>, ws: &RefCell<Ws>, echo: bool) {
    loop {
        if !conn.is_open() {
            return;
        }
        let r = {
            let mut w = ws.borrow_mut();
            let Ws {
                ctx: wsctx, bufs, ..
            } = &mut *w;
            wsctx.read(bufs)
        };
        match r {
            Ok(Message::Text(t)) => {
                if echo {
                    conn.send_control(Bytes::copy_from_slice(t.as_bytes()));
                } else {
                    handle_text(ctx, conn, t.as_str());
                }
            }
            Ok(Message::Binary(b)) => {
                if echo {
                    conn.push(|o| {
                        o.push_control(OutFrame {
                            opcode: Opcode::Binary,
                            channel: 0,
                            data: b,
                        })
                    });
                } else {
                    let e = Refusal::new(
                        ErrorCode::BadRequest,
                        "binary frames are not accepted; send JSON text",
                    );
                    conn.send_control(protocol::reply_error(None, &e).into());
                }
            }
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => {
                // tungstenite queued the pong for a ping (written into `bufs.tx` by its next
                // read or flush); the writer flushes it.
                let auto = ws.borrow().bufs.tx.len();
                conn.check_auto_replies(auto);
                conn.wake_writer.notify();
            }
            Ok(Message::Close(frame)) => {
                if conn.is_open() {
                    conn.peer_closed.set(true);
                }
                match frame {
                    Some(f) => conn.close(u16::from(f.code), f.reason.as_str()),
                    // RFC 6455 §7.1.5: no status code (1005; never sent on the wire).
                    None => conn.close(1005, ""),
                }
                return;
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(tungstenite::Error::Capacity(e)) => {
                let r = Refusal::new(
                    ErrorCode::PayloadTooLarge,
                    format!("{e}; the limit is max_frame_bytes"),
                );
                conn.send_control(protocol::reply_error(None, &r).into());
                conn.close(close_code::TOO_BIG, "frame over max_frame_bytes");
                return;
            }
            Err(tungstenite::Error::Utf8(_)) => {
                conn.close(close_code::INVALID_DATA, "text frame is not UTF-8");
                return;
            }
            Err(tungstenite::Error::Protocol(e)) => {
                conn.close(close_code::PROTOCOL_ERROR, &e.to_string());
                return;
            }
            Err(_) => {
                conn.close(close_code::NORMAL, "");
                return;
            }
        }
    }
}

fn send_refusal(conn: &Conn, r#ref: Option<&str>, e: &Refusal) {
    crate::metrics::with(|m| m.refused(e.code));
    conn.send_control(protocol::reply_error(r#ref, e).into());
}

/// Handles one request frame of a `/ws` connection.
fn handle_text(ctx: &Rc<ShardCtx>, conn: &Rc<Conn>, text: &str) {
    let cfg = &ctx.cfg;
    let env = match parse_request(text, &cfg.limits) {
        Ok(e) => e,
        Err(e) => return send_refusal(conn, e.r#ref.as_deref(), &e.refusal),
    };
    let r#ref = env.r#ref;
    let from = conn.cref;
    let shards = ctx.state.borrow().shards;
    let subscribed = |c: &ringbearer_core::ChannelName| conn.channels.borrow().contains(c.as_str());
    let not_subscribed = || {
        Refusal::new(
            ErrorCode::SubscriptionFailed,
            "not subscribed to this channel",
        )
    };
    let (owner, msg) = match env.req {
        Request::Ping => return conn.send_control(protocol::reply_pong(r#ref.as_deref()).into()),
        Request::Token { token } => {
            match ctx.shared.verifier.verify(&token) {
                Ok(c) => {
                    let cur = conn.claims();
                    if c.sub != cur.sub || c.org != cur.org {
                        let e = Refusal::new(
                            ErrorCode::Unauthorized,
                            "a refreshed token must name the same sub and org",
                        );
                        crate::shard::audit_refused_refresh(
                            &ctx.state.borrow().catalog,
                            &cur,
                            from,
                            &e,
                        );
                        return send_refusal(conn, r#ref.as_deref(), &e);
                    }
                    let claims = Arc::new(c);
                    *conn.claims.borrow_mut() = claims.clone();
                    // A fresh token gets its own warning before it expires.
                    conn.expiry_warned.set(false);
                    if let Some(r) = &r#ref {
                        conn.send_control(protocol::reply_ok(r).into());
                    }
                    crate::shard::audit_token_refresh(&ctx.state.borrow().catalog, &claims, from);
                    // What the new token no longer allows ends now (SPEC §4): each owner
                    // re-checks this connection's channels. Sent on the same ordered path as
                    // subscribes, so one still in flight is re-checked after it lands.
                    let mut by_owner: std::collections::HashMap<u32, Vec<ChannelName>> =
                        Default::default();
                    for c in conn.channels_held() {
                        if let Ok(name) = ChannelName::parse(&c) {
                            by_owner
                                .entry(shard_for(&c, shards) as u32)
                                .or_default()
                                .push(name);
                        }
                    }
                    for (owner, channels) in by_owner {
                        ctx.router.route(
                            owner,
                            ShardMsg::Recheck {
                                conn: from,
                                claims: claims.clone(),
                                channels,
                            },
                        );
                    }
                }
                Err(e) => {
                    let c = conn.claims();
                    crate::shard::audit_refused_refresh(&ctx.state.borrow().catalog, &c, from, &e);
                    send_refusal(conn, r#ref.as_deref(), &e)
                }
            }
            return;
        }
        Request::Create(req) => {
            let owner = shard_for(req.name.as_str(), shards);
            (
                owner,
                ShardMsg::Create {
                    from,
                    r#ref,
                    claims: conn.claims(),
                    req,
                },
            )
        }
        Request::Subscribe(req) => {
            if let Err(e) = conn.reserve(req.channel.as_str()) {
                return send_refusal(conn, r#ref.as_deref(), &e);
            }
            let owner = shard_for(req.channel.as_str(), shards);
            (
                owner,
                ShardMsg::Subscribe {
                    from,
                    r#ref,
                    claims: conn.claims(),
                    req,
                },
            )
        }
        Request::Unsubscribe { channel } => (
            shard_for(channel.as_str(), shards),
            ShardMsg::Unsubscribe {
                from,
                r#ref,
                channel,
            },
        ),
        Request::Publish(req) => {
            // The user's rate is taken by the owner, which knows whether the channel's
            // wedding is today (SPEC §1: 3× and `critical`).
            let owner = shard_for(req.channel.as_str(), shards);
            (
                owner,
                ShardMsg::Publish {
                    from,
                    r#ref,
                    claims: conn.claims(),
                    req,
                },
            )
        }
        Request::Ack { channel, id } => {
            if !subscribed(&channel) {
                return send_refusal(conn, r#ref.as_deref(), &not_subscribed());
            }
            let owner = shard_for(channel.as_str(), shards);
            (
                owner,
                ShardMsg::Ack {
                    from,
                    r#ref,
                    user: conn.user(),
                    channel,
                    id,
                },
            )
        }
        Request::Presence { channel, meta } => {
            if !subscribed(&channel) {
                return send_refusal(conn, r#ref.as_deref(), &not_subscribed());
            }
            (
                shard_for(channel.as_str(), shards),
                ShardMsg::Presence {
                    from,
                    r#ref,
                    channel,
                    meta,
                },
            )
        }
        Request::Typing { channel } => {
            if !subscribed(&channel) {
                return send_refusal(conn, r#ref.as_deref(), &not_subscribed());
            }
            let c = conn.claims();
            let owner = shard_for(channel.as_str(), shards);
            (
                owner,
                ShardMsg::Typing {
                    from,
                    r#ref,
                    user: c.user_key(),
                    role: c.role,
                    channel,
                },
            )
        }
    };
    let owner = owner as u32;
    if ctx.router.backlog(owner) >= cfg.mesh_backlog_max {
        if let ShardMsg::Subscribe { req, .. } = &msg {
            conn.refused(req.channel.as_str());
        }
        let e = Refusal::new(
            ErrorCode::Overloaded,
            "the channel's shard is saturated; retry",
        );
        return send_refusal(conn, msg_ref(&msg), &e);
    }
    ctx.router.route(owner, msg);
}

fn msg_ref(m: &ShardMsg) -> Option<&str> {
    match m {
        ShardMsg::Create { r#ref, .. }
        | ShardMsg::Subscribe { r#ref, .. }
        | ShardMsg::Unsubscribe { r#ref, .. }
        | ShardMsg::Publish { r#ref, .. }
        | ShardMsg::Ack { r#ref, .. }
        | ShardMsg::Presence { r#ref, .. }
        | ShardMsg::Typing { r#ref, .. } => r#ref.as_deref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §5.5 and §7.4: a close reason fits the control frame with its code, and is
    /// never cut inside a UTF-8 character.
    #[test]
    fn close_reasons_fit_the_frame_and_stay_utf8() {
        assert_eq!(close_reason(SHUTDOWN_REASON), SHUTDOWN_REASON);
        let long = "x".repeat(200);
        assert_eq!(close_reason(&long).len(), MAX_CLOSE_REASON_BYTES);
        // 122 ASCII bytes then a 3-byte character across the limit.
        let split = format!("{}€€", "y".repeat(122));
        let cut = close_reason(&split);
        assert_eq!(cut.len(), 122);
        assert!(2 + close_reason(&"é".repeat(100)).len() <= 125);
    }
}
