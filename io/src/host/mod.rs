//! The host: one shard's side of everything that is not the owner's — the connections it
//! accepted, their local subscriptions and the fan-out to them, the REST calls waiting on
//! it — and the glue that runs the owner: it reads the clock once per step, hands the
//! owner its requests, and applies the effects (routes replies, frames and events to their
//! shards, writes registry records and audit events, counts).
//!
//! A handler runs with the shard borrowed and returns the messages it wants routed; the
//! caller routes them after the borrow ends, so handlers never re-enter each other.

pub mod connection;
pub mod cork;
pub mod phoenix;
mod phoenix_reply;
pub mod render;

pub use connection::{close_code, Conn, SHUTDOWN_REASON};

use crate::journal::{Catalog, Journal, JournalError};
use crate::mesh::{Router, ShardMsg};
use crate::notify::Notify;
use crate::owner::{Effect, Effects, Now, Owner, Record, Reply, RetentionRound};
use crate::IoConfig;
use bytes::Bytes;
use hashbrown::HashMap;
use ringbearer_core::channel_state::ConnRef;
use ringbearer_core::message::{access_frame, render_message_json, FrameBytes};
use ringbearer_core::{ChannelName, Priority};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Set in the id of a REST call waiting on this shard (not a connection): the two share
/// one id space per shard, and replies to a call land in its [`CallSlot`].
pub const CALL_BIT: u64 = 1 << 63;

/// A REST call waiting on this shard for its answers (see `api.rs`): replies to a
/// [`CALL_BIT`] id land here.
#[derive(Default)]
pub struct CallSlot {
    pub replies: RefCell<Vec<Reply>>,
    pub expect: std::cell::Cell<usize>,
    pub done: Notify,
}

/// A subscriber connection of this shard, as the fan-out sees it.
pub struct LocalSub {
    pub conn: Rc<Conn>,
}

pub type Out = Vec<(u32, ShardMsg)>;

/// A stable 64-bit hash of a channel name for the outbox's per-channel ordering (never 0).
pub fn channel_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

pub struct Shard {
    pub id: u32,
    pub shards: usize,
    pub cfg: Rc<IoConfig>,
    pub conns: HashMap<u64, Rc<Conn>>,
    pub next_conn: u64,
    /// Channel name → this shard's subscriber connections.
    local: HashMap<String, Vec<LocalSub>>,
    /// The channels this shard owns.
    pub owner: Owner,
    /// Where published messages are stored first; `None` is the `memory` policy.
    pub journal: Option<Rc<dyn Journal>>,
    /// Wakes the commit pump.
    pub commit_ready: Rc<Notify>,
    /// Connections the fan-out queued frames for, written at the end of the batch.
    pub cork: Rc<cork::Cork>,
    /// Wakes the presence flush: some owned channel's presence changed (set by `apply`).
    pub presence_ready: Rc<Notify>,
    /// Connections whose token was refreshed since the last heartbeat round: the sweep
    /// looks at them in its next round (`runtime/sweep.rs`).
    pub heartbeat_recheck: Vec<u64>,
    /// Where subscriptions, cursors and audit events are mirrored; `None` keeps them in
    /// memory only.
    pub catalog: Option<Arc<dyn Catalog>>,
    /// The clock of calendar decisions (which day it is).
    pub clock: crate::weddings::CalendarClock,
    /// REST calls of this shard waiting for answers, by their id.
    pub calls: HashMap<u64, Rc<CallSlot>>,
}

impl Shard {
    pub fn new(owner: Owner, cfg: Rc<IoConfig>) -> Self {
        Shard {
            id: owner.id,
            shards: owner.shards,
            journal: owner.journal(),
            cfg: cfg.clone(),
            conns: HashMap::new(),
            next_conn: 1,
            local: HashMap::new(),
            owner,
            commit_ready: Rc::new(Notify::default()),
            cork: Rc::new(cork::Cork::new(&cfg)),
            presence_ready: Rc::new(Notify::default()),
            heartbeat_recheck: Vec::new(),
            catalog: None,
            clock: Default::default(),
            calls: HashMap::new(),
        }
    }

    /// The owner's time for a step taken now.
    pub fn now(&self) -> Now {
        let ms = crate::clock::now_ms();
        Now {
            ms,
            calendar_ms: self.clock.at(ms),
        }
    }

    /// Handles one message; returns what to route next.
    pub fn handle(&mut self, msg: ShardMsg) -> Out {
        match msg {
            ShardMsg::Request(req) => {
                let fx = self.owner.handle(self.now(), req);
                self.apply(fx)
            }
            ShardMsg::Disconnect { conn, channels } => {
                let fx = self.owner.disconnect(conn, &channels);
                self.apply(fx)
            }
            ShardMsg::Reply { to, r#ref, reply } => self.on_reply(to, r#ref.as_deref(), reply),
            ShardMsg::Deliver { frame } => {
                self.on_deliver(&frame);
                Out::new()
            }
            ShardMsg::Event {
                channel,
                event,
                except,
            } => {
                if let Some(subs) = self.local.get(channel.as_str()) {
                    // Rendered once per protocol (and serializer) that has a subscriber here.
                    let mut ws: Option<Bytes> = None;
                    let mut phx: [Option<Option<Bytes>>; 2] = [None, None];
                    for s in subs {
                        // Connection ids are per shard: compare the whole reference.
                        if except.contains(&s.conn.cref) {
                            continue;
                        }
                        let bytes = match &s.conn.phoenix {
                            None => ws
                                .get_or_insert_with(|| render::event(&channel, &event).into())
                                .clone(),
                            Some(p) => {
                                let slot = phx[p.vsn.index()].get_or_insert_with(|| {
                                    phoenix::event(p.vsn, channel.as_str(), &event).map(Bytes::from)
                                });
                                match slot {
                                    Some(b) => b.clone(),
                                    None => continue,
                                }
                            }
                        };
                        self.cork.send(&s.conn, Priority::Normal, 0, bytes);
                    }
                }
                Out::new()
            }
        }
    }

    /// Carries out what the owner decided, in order: messages to route are returned,
    /// registry records and audit events go to the catalog, counters to this shard's
    /// metrics.
    pub fn apply(&mut self, fx: Effects) -> Out {
        let Effects {
            list,
            tally,
            wake_commit,
        } = fx;
        let mut out = Out::with_capacity(list.len());
        for e in list {
            match e {
                Effect::Reply { to, r#ref, reply } => {
                    out.push((to.shard, ShardMsg::Reply { to, r#ref, reply }))
                }
                Effect::Deliver { shard, frame } => out.push((shard, ShardMsg::Deliver { frame })),
                Effect::Event {
                    shard,
                    channel,
                    event,
                    except,
                } => out.push((
                    shard,
                    ShardMsg::Event {
                        channel,
                        event,
                        except,
                    },
                )),
                Effect::Record(r) => self.record(r),
            }
        }
        crate::metrics::with(|m| {
            m.published.fetch_add(tally.published, Relaxed);
            m.storage_failures
                .fetch_add(tally.storage_failures, Relaxed);
            m.channels
                .store(self.owner.owned_channels() as u64, Relaxed);
        });
        if wake_commit {
            self.commit_ready.notify();
        }
        // Every change of owner state passes here, so the flush need not poll for it.
        if self.owner.presence_pending() && !self.presence_ready.is_set() {
            self.presence_ready.notify();
        }
        out
    }

    fn record(&self, r: Record) {
        let Some(c) = &self.catalog else { return };
        match r {
            Record::ChannelCreated(meta) => c.channel_created(&meta),
            Record::ChannelDropped(name) => c.channel_dropped(name.as_str()),
            Record::Subscribed {
                channel,
                user,
                cursor,
                role,
            } => c.subscribed(channel.as_str(), &user, role, cursor),
            Record::Unsubscribed { channel, user } => c.unsubscribed(channel.as_str(), &user),
            Record::Acked {
                channel,
                user,
                cursor,
            } => c.acked(channel.as_str(), &user, cursor),
            Record::WeddingUpserted(w) => c.wedding_upserted(&w),
            Record::Audit(e) => c.audit(*e),
            Record::Parked(e) => c.parked(*e),
        }
    }

    /// Writes an audit event of a door (a refused token, a token refresh).
    pub fn audit(&self, e: crate::journal::AuditEvent) {
        self.record(Record::Audit(Box::new(e)));
    }

    /// The newest pending position, if any publish awaits durability.
    pub fn pending_upto(&self) -> Option<(Rc<dyn Journal>, u64)> {
        self.owner.pending_upto()
    }

    /// The journal answered for everything up to `upto` (see `Owner::committed`).
    pub fn complete_pending(&mut self, upto: u64, result: Result<(), JournalError>) -> Out {
        let fx = self.owner.committed(self.now(), upto, result);
        self.apply(fx)
    }

    /// Announces presence changes (see `Owner::flush_presence`).
    pub fn flush_presence(&mut self, now_ms: u64) -> Out {
        let now = Now {
            ms: now_ms,
            calendar_ms: self.clock.at(now_ms),
        };
        let fx = self.owner.flush_presence(now);
        self.apply(fx)
    }

    /// Parks what is due (see `Owner::park_due`).
    pub fn park_due(&mut self, now_ms: u64, park_after_ms: u64) -> Out {
        let now = Now {
            ms: now_ms,
            calendar_ms: self.clock.at(now_ms),
        };
        let fx = self.owner.park_due(now, park_after_ms);
        self.apply(fx)
    }

    /// One retention round's inputs (see `Owner::retention_snapshot`).
    pub fn retention_snapshot(&mut self, now_ms: u64) -> RetentionRound {
        self.owner.retention_snapshot(now_ms)
    }

    pub fn owned_channels(&self) -> usize {
        self.owner.owned_channels()
    }

    /// An answer from an owner for a connection or a REST call of this shard.
    fn on_reply(&mut self, to: ConnRef, r#ref: Option<&str>, reply: Reply) -> Out {
        let mut out = Out::new();
        if to.conn & CALL_BIT != 0 {
            if let Some(call) = self.calls.get(&to.conn) {
                call.replies.borrow_mut().push(reply);
                if call.replies.borrow().len() >= call.expect.get() {
                    call.done.notify();
                }
            }
            return out;
        }
        let conn = self.conns.get(&to.conn).cloned();
        if let Some(c) = &conn {
            // Every reply answers one request, but those the owner sends unasked: an
            // `unsubscribed` with a reason (a refreshed token, a channel never stored) and a
            // `state_overridden` notice (to the overridden writer).
            if !matches!(
                &reply,
                Reply::Unsubscribed { why: Some(_), .. } | Reply::StateOverridden { .. }
            ) {
                c.request_answered();
            }
        }
        if let Some(c) = conn.clone() {
            if let Some(p) = c.phoenix.clone() {
                return self.on_phoenix_reply(c, &p, to, r#ref, reply);
            }
        }
        match reply {
            Reply::Subscribed {
                channel,
                epoch,
                recovered,
                messages,
                presence,
                presence_total,
                ..
            } => {
                let owner = ringbearer_core::shard_for(channel.as_str(), self.shards) as u32;
                let Some(c) = conn.filter(|c| c.is_open()) else {
                    // The connection ended while the owner was subscribing it: undo.
                    let channels = vec![channel];
                    out.push((owner, ShardMsg::Disconnect { conn: to, channels }));
                    return out;
                };
                let frames = render::subscribed(
                    r#ref,
                    &channel,
                    &epoch,
                    recovered,
                    &messages,
                    &presence,
                    presence_total,
                    self.cfg.limits.max_request_bytes,
                );
                self.confirm_local(&c, &channel);
                c.send_burst(frames);
            }
            Reply::SubscribeRefused { channel, error } => {
                crate::metrics::with(|m| m.refused(error.code));
                if let Some(c) = conn {
                    c.refused(channel.as_str());
                    c.send_control(ringbearer_core::protocol::reply_error(r#ref, &error).into());
                }
            }
            Reply::Unsubscribed { channel, why } => {
                if let Some(c) = conn {
                    if c.unsubscribed(channel.as_str()) {
                        self.remove_local(channel.as_str(), to.conn);
                        c.outbox
                            .borrow_mut()
                            .forget_channel(channel_hash(channel.as_str()));
                    }
                    let reply = Reply::Unsubscribed { channel, why };
                    if let Some(bytes) = render::reply(r#ref, &reply) {
                        c.send_control(bytes.into());
                    }
                }
            }
            reply => {
                if let Reply::Error(e) = &reply {
                    crate::metrics::with(|m| m.refused(e.code));
                }
                if let Some(c) = conn {
                    if let Some(bytes) = render::reply(r#ref, &reply) {
                        c.send_control(bytes.into());
                    }
                }
            }
        }
        out
    }

    fn on_deliver(&mut self, frame: &FrameBytes) {
        let Ok(f) = access_frame(frame) else {
            tracing::error!("dropping a corrupt frame between shards");
            return;
        };
        let Some(subs) = self.local.get(f.channel.as_str()) else {
            return;
        };
        // Serialize once per shard and protocol; every local subscriber of that protocol
        // shares these bytes.
        let mut ws: Option<Bytes> = None;
        let mut phx: [Option<Bytes>; 2] = [None, None];
        let prio = f.priority();
        let h = channel_hash(f.channel.as_str());
        let (target, roles) = (f.target(), f.target_roles());
        let everyone = target.is_none() && roles.is_empty();
        let mut sent = 0;
        for s in subs {
            // The one visibility rule (ringbearer_core::identity::may_see), as on every
            // other route: a target is (org, sub), or roles.
            if !everyone && !s.conn.may_see(target, roles) {
                continue;
            }
            let bytes = match &s.conn.phoenix {
                None => ws
                    .get_or_insert_with(|| {
                        let mut buf = Vec::new();
                        render_message_json(f, &mut buf);
                        buf.into()
                    })
                    .clone(),
                Some(p) => {
                    // Its own broadcast, unless it joined with `broadcast.self`.
                    if !p.deliver(f.channel.as_str(), f.id()) {
                        continue;
                    }
                    phx[p.vsn.index()]
                        .get_or_insert_with(|| phoenix::message(p.vsn, f, false).into())
                        .clone()
                }
            };
            self.cork.send(&s.conn, prio, h, bytes);
            sent += 1;
        }
        let ts_ms = f.ts_ms.to_native();
        crate::metrics::with(|m| {
            m.deliveries.fetch_add(sent, Relaxed);
            if sent > 0 {
                m.observe_latency_us(
                    crate::clock::now_us().saturating_sub(ts_ms.saturating_mul(1000)),
                );
            }
        });
    }

    /// A connection's subscription is in place: the fan-out reaches it from now on.
    fn confirm_local(&mut self, c: &Rc<Conn>, channel: &ChannelName) {
        if c.confirm(channel.as_str()) {
            self.local
                .entry(channel.as_str().to_owned())
                .or_default()
                .push(LocalSub { conn: c.clone() });
        }
    }

    fn remove_local(&mut self, channel: &str, conn: u64) {
        if let Some(v) = self.local.get_mut(channel) {
            v.retain(|s| s.conn.id != conn);
            if v.is_empty() {
                self.local.remove(channel);
            }
        }
    }

    /// A connection ended: forget it here and tell the owners of its channels.
    pub fn forget_conn(&mut self, conn: &Conn) -> Out {
        self.conns.remove(&conn.id);
        let channels = conn.release_all();
        let mut by_owner: HashMap<u32, Vec<ChannelName>> = HashMap::new();
        for c in channels {
            self.remove_local(&c, conn.id);
            let owner = ringbearer_core::shard_for(&c, self.shards) as u32;
            if let Ok(name) = ChannelName::parse(&c) {
                by_owner.entry(owner).or_default().push(name);
            }
        }
        by_owner
            .into_iter()
            .map(|(owner, channels)| {
                let conn = conn.cref;
                (owner, ShardMsg::Disconnect { conn, channels })
            })
            .collect()
    }
}

/// A shard's state plus its router, shared by its tasks.
pub struct ShardCtx {
    pub state: RefCell<Shard>,
    pub router: Rc<Router>,
    pub cfg: Rc<IoConfig>,
    pub shared: Arc<crate::shared::Shared>,
}

impl ShardCtx {
    /// Handles a message and routes what it produced.
    pub fn dispatch(&self, msg: ShardMsg) {
        let out = self.state.borrow_mut().handle(msg);
        self.route_all(out);
    }

    pub fn route_all(&self, out: Out) {
        for (dest, m) in out {
            self.router.route(dest, m);
        }
    }
}

#[cfg(test)]
mod tests;
