//! One connection's state as its shard holds it: who it is (its claims, refreshable), the
//! channels it is subscribed to or has a subscribe in flight for (each holding a
//! reservation of the user's `subscriptions_per_user`), its outgoing backlog in priority
//! order, heartbeats and token expiry, and the close protocol. The socket itself is served
//! by the `/ws` door (`conn.rs`), which reads from it and drains the backlog into it.
//!
//! Closing protocol: anything may call [`Conn::close`] (slow consumer, heartbeat timeout,
//! token expiry, shutdown, a protocol error). The writer then drops the backlog, writes the
//! close frame (bounded by the write timeout), and sets `done`; the reader stops at `done`.

use crate::notify::Notify;
use crate::outbox::{Opcode, OutFrame, Outbox};
use bytes::Bytes;
use ringbearer_core::access::RoleSet;
use ringbearer_core::channel_state::ConnRef;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::protocol;
use ringbearer_core::{Claims, Priority};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// RFC 6455 §7.1.5: a close frame with no status code (never sent on the wire).
    pub const NO_STATUS: u16 = 1005;
    /// RFC 6455 §7.1.5: the connection ended without a close frame (logs only).
    pub const ABNORMAL: u16 = 1006;
}

/// The reason sent with [`close_code::GOING_AWAY`] when the server shuts down.
pub const SHUTDOWN_REASON: &str = "server shutting down; reconnect later";

/// Why a connection's reads pause (see [`Conn::read_pause`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPause {
    /// `io.max_inflight_requests` of its requests are unanswered.
    Inflight,
    /// Its answers wait unread in the outbox (with those still to come for its unanswered
    /// requests).
    Outbox,
}

impl ReadPause {
    /// Counts the pause (`ringbearer_read_pauses_*_total`).
    pub fn count(self) {
        crate::metrics::with(|m| {
            let c = match self {
                ReadPause::Inflight => &m.read_pauses_inflight,
                ReadPause::Outbox => &m.read_pauses_outbox,
            };
            c.fetch_add(1, Ordering::Relaxed);
        });
    }
}

pub struct Conn {
    pub id: u64,
    pub cref: ConnRef,
    pub(crate) claims: RefCell<Arc<Claims>>,
    pub outbox: RefCell<Outbox>,
    /// Channels whose `subscribed` reply reached this connection.
    pub channels: RefCell<ChannelSet>,
    /// Channels with a subscribe on its way to the owner, each holding a reservation of
    /// the user's `subscriptions_per_user` until confirmed or refused.
    pub(crate) reserved: RefCell<ChannelSet>,
    pub(crate) cfg: Rc<crate::IoConfig>,
    pub(crate) policy: Arc<crate::policy::Policy>,
    pub last_seen: Cell<Instant>,
    /// When the last heartbeat ping was queued (the connection's start before the first).
    pub(crate) last_ping: Cell<Instant>,
    /// Pings sent since the peer was last heard from.
    pub(crate) unanswered_pings: Cell<u8>,
    /// `token_expiring` was sent for the current token.
    pub(crate) expiry_warned: Cell<bool>,
    /// Set once: the close frame to send.
    pub(crate) closing: RefCell<Option<(u16, String)>>,
    /// The peer sent a close frame (tungstenite queues the reply itself); `closing` then
    /// holds the peer's code and reason.
    pub(crate) peer_closed: Cell<bool>,
    /// The peer's socket ended without a close frame (EOF or reset).
    pub(crate) peer_lost: Cell<bool>,
    /// A socket write failed part-way: the stream's framing is broken, so no close frame
    /// may follow; the socket is just dropped.
    pub(crate) write_failed: Cell<bool>,
    pub(crate) ping_due: Cell<bool>,
    pub wake_writer: Notify,
    /// The writer task is parked with nothing of its own to write (see `host/cork.rs`).
    pub(crate) writer_idle: Cell<bool>,
    /// The socket, for direct writes from the fan-out; unset for TLS, when
    /// `io.direct_writes` is off, and before the socket is dropped.
    pub(crate) fd: super::cork::DirectFd,
    /// Bytes a direct write could not finish; the writer sends them before anything else.
    pub(crate) unsent: RefCell<Vec<u8>>,
    /// In its shard's cork list.
    pub(crate) corked: Cell<bool>,
    /// Requests handed to owners and not answered yet (the `/ws` door counts them).
    pub(crate) inflight: Cell<u32>,
    /// Set when reads may go on after a pause (a reply came, or the outbox drained).
    pub(crate) resume_reads: Notify,
    pub done: Notify,
    /// Set for a connection of the Phoenix-channels door (`/realtime/v1/websocket`): what
    /// it joined and its serializer; `None` for `/ws`.
    pub phoenix: Option<Rc<super::phoenix::Session>>,
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
            channels: RefCell::default(),
            reserved: RefCell::default(),
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
            writer_idle: Cell::new(false),
            fd: Default::default(),
            unsent: RefCell::default(),
            corked: Cell::new(false),
            inflight: Cell::new(0),
            resume_reads: Notify::default(),
            done: Notify::default(),
            phoenix: None,
        }
    }

    pub fn claims(&self) -> Arc<Claims> {
        self.claims.borrow().clone()
    }

    /// Issue 15 item 5, back-pressure rather than disconnection for a client that sends
    /// faster than it is answered: reads pause while `io.max_inflight_requests` of its
    /// requests are with owners, or while its outbox is over `io.read_pause_outbox_percent`
    /// of its bounds (it is not reading what it asked for). TCP then slows the sender; a
    /// client that sends without ever reading is held, not closed, until others' messages
    /// fill its outbox (a slow consumer, SPEC §2.6).
    pub fn reads_paused(&self) -> bool {
        self.read_pause().is_some()
    }

    /// Why reads must pause now, if they must.
    pub fn read_pause(&self) -> Option<ReadPause> {
        let pct = self.cfg.read_pause_outbox_percent;
        let o = self.outbox.borrow();
        let inflight = self.inflight.get() as usize;
        if inflight >= self.cfg.max_inflight_requests {
            Some(ReadPause::Inflight)
        } else if (o.len() + inflight) * 100 >= self.cfg.outbox_max_messages * pct
            || o.bytes() * 100 >= self.cfg.outbox_max_bytes * pct
        {
            // Each unanswered request will add at least one frame: counted before it does.
            Some(ReadPause::Outbox)
        } else {
            None
        }
    }

    /// A request went to an owner.
    pub(crate) fn request_sent(&self) {
        self.inflight.set(self.inflight.get().saturating_add(1));
    }

    /// An owner answered a request (every owner operation a connection sends answers once).
    pub(crate) fn request_answered(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.resume_reads.notify();
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
            crate::clock::now_ms(),
        )?;
        self.reserved.borrow_mut().insert(channel);
        Ok(true)
    }

    pub(crate) fn release(&self) {
        self.policy
            .release_subscription(&self.claims(), &self.cfg.limits, crate::clock::now_ms());
    }

    /// Takes `channel` out of `reserved`.
    pub(crate) fn unreserve(&self, channel: &str) -> bool {
        self.reserved.borrow_mut().remove(channel)
    }

    /// The owner confirmed: `true` when the channel is new on this connection.
    pub fn confirm(&self, channel: &str) -> bool {
        let was_reserved = self.unreserve(channel);
        let added = self.channels.borrow_mut().insert(channel);
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
        let channels: Vec<String> = self
            .channels
            .take()
            .0
            .into_iter()
            .map(String::from)
            .collect();
        let reserved = self.reserved.take().len();
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

    /// Whether this connection may see a message for user `target` and `roles`: the one
    /// visibility rule (`identity::may_see`) with its current claims' identity and role.
    pub fn may_see(&self, target: Option<(&str, &str)>, roles: RoleSet) -> bool {
        let c = self.claims.borrow();
        ringbearer_core::identity::may_see(
            target,
            roles,
            &ringbearer_core::UserKey::new(c.org.as_str(), c.sub.as_str()),
            Some(c.role),
        )
    }

    /// Channels subscribed or being subscribed to (for a token refresh's re-check).
    pub fn channels_held(&self) -> Vec<String> {
        let mut v: Vec<String> = self.channels.borrow().iter().map(String::from).collect();
        v.extend(self.reserved.borrow().iter().map(String::from));
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

    /// Queues a ping for the writer task to send.
    pub fn ping(&self) {
        self.ping_due.set(true);
        self.wake_writer.notify();
    }

    /// One heartbeat round at `now` with this connection's `interval` (SPEC §3): `true`
    /// when a ping is due (the caller sends it: `Cork::ping`); closes with 4000 once two pings went unanswered and the peer has been
    /// silent for two intervals. (Counting unanswered pings, not only silence, keeps a
    /// connection whose interval just shrank — a wedding day began — from being closed for
    /// the longer silence the old interval allowed.)
    pub fn heartbeat(&self, now: Instant, interval: Duration) -> bool {
        let mut ping = false;
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
            ping = true;
            // A connection quiet for a whole interval gives its queues' buffers back
            // (a busy one keeps them: they are the fan-out's hot path).
            self.outbox.borrow_mut().shrink_idle();
        }
        ping
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
            // A Phoenix client has no frame for it: the close code and reason say it.
            if self.phoenix.is_none() {
                self.send_control(protocol::reply_error(None, &e).into());
            }
            self.close(close_code::TOKEN_EXPIRED, "token expired");
            return false;
        }
        if !self.expiry_warned.get() && now_s.saturating_add(warning_secs) >= claims.exp {
            self.expiry_warned.set(true);
            if self.phoenix.is_some() {
                // realtime-js refreshes by itself (`access_token`); it has no such frame.
                return true;
            }
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

    /// Queues a channel message without waking the writer: the fan-out's path when
    /// direct writes are on (the shard's `Cork` writes it at the end of the batch).
    pub(crate) fn queue_message(&self, p: Priority, channel: u64, data: Bytes) -> bool {
        if !self.is_open() {
            return false;
        }
        let frame = OutFrame {
            opcode: Opcode::Text,
            channel,
            data,
        };
        if self.outbox.borrow_mut().push_message(p, frame).is_err() {
            self.slow_consumer();
            return false;
        }
        true
    }

    /// The socket, if a direct write may go to it now: plaintext, the writer parked,
    /// nothing left over from an earlier direct write.
    pub(crate) fn direct_fd(&self) -> Option<std::os::fd::RawFd> {
        let fd = self.fd.get()?;
        (self.writer_idle.get() && self.unsent.borrow().is_empty()).then_some(fd)
    }

    pub(crate) fn push(&self, f: impl FnOnce(&mut Outbox) -> Result<(), crate::outbox::Overflow>) {
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
    pub(crate) fn slow_consumer(&self) {
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
    pub(crate) fn check_auto_replies(&self, auto_reply_bytes: usize) {
        if self.outbox.borrow().bytes() + auto_reply_bytes > self.cfg.outbox_max_bytes {
            self.slow_consumer();
        }
    }
}

/// The channels of one connection: a few names (at most
/// `limits.max_subscriptions_per_connection`), looked up on subscribe and unsubscribe only,
/// never per delivery. A vector of exact capacity instead of a hash set: an empty one
/// allocates nothing, one channel costs its name plus 16 bytes (a `HashSet<String>` took
/// ~115 bytes of table for one name: docs/performance.md, the byte budget).
#[derive(Debug, Default)]
pub struct ChannelSet(Vec<Box<str>>);

impl ChannelSet {
    pub fn contains(&self, channel: &str) -> bool {
        self.0.iter().any(|c| &**c == channel)
    }

    /// `true` when it was not there.
    pub fn insert(&mut self, channel: &str) -> bool {
        if self.contains(channel) {
            return false;
        }
        self.0.reserve_exact(1);
        self.0.push(channel.into());
        true
    }

    /// `true` when it was there.
    pub fn remove(&mut self, channel: &str) -> bool {
        let Some(i) = self.0.iter().position(|c| &**c == channel) else {
            return false;
        };
        self.0.swap_remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        true
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|c| &**c)
    }
}
