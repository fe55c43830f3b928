//! One shard: the channels it owns (by `shard_for(name)`), the connections it accepted, and
//! the handlers for every message between shards. Seastar-style ownership: only the owner
//! touches a channel's state; other shards ask it through [`ShardMsg`]s.
//!
//! A handler runs with the shard borrowed and returns the messages it wants routed; the
//! caller routes them after the borrow ends, so handlers never re-enter each other.

use crate::conn::Conn;
use crate::journal::{AuditEvent, Catalog, Entry, Journal, JournalError, RestoredChannel};
use crate::notify::Notify;
use crate::router::Router;
use crate::IoConfig;
use bytes::Bytes;
use hashbrown::HashMap;
use ringbearer_core::access::{self, Action, ChannelAccess};
use ringbearer_core::channel_state::{
    ChannelMeta, ChannelState, ConnRef, PresenceFlush, ResumeFrom,
};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::message::{access_frame, render_message_json, FrameBytes, MessageFrame};
use ringbearer_core::protocol::{self, CreateReq, PublishReq, SubscribeReq};
use ringbearer_core::{ChannelName, Claims, Permissions, Priority, Role, UserKey};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

/// Everything that travels between shards. Requests carry the caller's verified claims;
/// messages travel as one shared rkyv frame per subscribing shard.
pub enum ShardMsg {
    // connection shard → owner
    Create {
        from: ConnRef,
        r#ref: Option<String>,
        claims: Arc<Claims>,
        req: CreateReq,
    },
    Subscribe {
        from: ConnRef,
        r#ref: Option<String>,
        claims: Arc<Claims>,
        req: SubscribeReq,
    },
    Unsubscribe {
        from: ConnRef,
        r#ref: Option<String>,
        channel: ChannelName,
    },
    /// The connection's token was refreshed: end its subscriptions on these channels that
    /// the new claims no longer allow (SPEC §4 tokens; an `unsubscribed` with the reason).
    Recheck {
        conn: ConnRef,
        claims: Arc<Claims>,
        channels: Vec<ChannelName>,
    },
    Publish {
        from: ConnRef,
        r#ref: Option<String>,
        claims: Arc<Claims>,
        req: PublishReq,
    },
    Ack {
        from: ConnRef,
        r#ref: Option<String>,
        user: UserKey,
        channel: ChannelName,
        id: u64,
    },
    Presence {
        from: ConnRef,
        r#ref: Option<String>,
        channel: ChannelName,
        meta: String,
    },
    Typing {
        from: ConnRef,
        r#ref: Option<String>,
        user: UserKey,
        role: Role,
        channel: ChannelName,
    },
    Disconnect {
        conn: ConnRef,
        channels: Vec<ChannelName>,
    },
    // owner → connection shard(s)
    Reply {
        to: ConnRef,
        bytes: Bytes,
    },
    Subscribed {
        to: ConnRef,
        channel: ChannelName,
        frames: Vec<Bytes>,
    },
    /// A refused subscribe: the error reply; the reservation is given back.
    SubscribeRefused {
        to: ConnRef,
        channel: ChannelName,
        bytes: Bytes,
    },
    Unsubscribed {
        to: ConnRef,
        channel: ChannelName,
        bytes: Bytes,
    },
    Deliver {
        frame: Arc<FrameBytes>,
    },
    Broadcast {
        channel: ChannelName,
        bytes: Bytes,
        /// Connections not to send it to (the typist; subscribers whose presence list is
        /// already current).
        except: Vec<ConnRef>,
    },
    // the REST door (api.rs) → owner; answered with `Reply` to the call's `from`
    /// Which channel has this `channel_id`? (The id names its owner shard.)
    Resolve {
        from: ConnRef,
        id: String,
    },
    /// Subscribe `user` without a connection (`claims` are the caller's; `user` is of the
    /// caller's organization).
    Enroll {
        from: ConnRef,
        claims: Arc<Claims>,
        user: UserKey,
        req: SubscribeReq,
    },
    /// End `user`'s subscription (`claims` are the caller's).
    Withdraw {
        from: ConnRef,
        claims: Arc<Claims>,
        user: UserKey,
        channel: ChannelName,
    },
    /// The channels `user` is subscribed to on this shard that the caller (`claims`) may
    /// read (sent to every shard).
    ListFor {
        from: ConnRef,
        claims: Arc<Claims>,
        user: UserKey,
    },
    /// The admin page's view of one channel (`GET /api/websocket/channels/detail`): read
    /// only, for the admin and service roles of the channel's own organization. Answers
    /// `subscribers[offset..offset + limit]` (sorted by org, then user id).
    Inspect {
        from: ConnRef,
        claims: Arc<Claims>,
        channel: ChannelName,
        offset: usize,
        limit: usize,
    },
    /// The channels of the caller's organization on this shard (the admin page's list,
    /// `scope=organization`; sent to every shard): the first `take` by name, and how many
    /// there are.
    ListOrg {
        from: ConnRef,
        claims: Arc<Claims>,
        take: usize,
    },
}

/// Most messages in the admin page's `recent_messages` of one channel.
pub const INSPECT_RECENT_MAX: usize = 50;

/// A REST call waiting on this shard for its answers (see `api.rs`): `ShardMsg::Reply`s to
/// a connection id that is not a connection land here.
#[derive(Default)]
pub struct CallSlot {
    pub replies: RefCell<Vec<Bytes>>,
    pub expect: std::cell::Cell<usize>,
    pub done: Notify,
}

/// A subscriber connection of this shard, as the fan-out sees it.
pub struct LocalSub {
    pub conn: Rc<Conn>,
}

pub struct Shard {
    pub id: u32,
    pub shards: usize,
    pub cfg: Rc<IoConfig>,
    /// Distinguishes this server's life in channel ids and epochs.
    pub boot: u64,
    pub conns: HashMap<u64, Rc<Conn>>,
    pub next_conn: u64,
    /// Channel name → this shard's subscriber connections.
    local: HashMap<String, Vec<LocalSub>>,
    /// Channels this shard owns.
    owned: HashMap<String, ChannelState<Arc<FrameBytes>>>,
    next_channel: u64,
    /// Where published messages are stored first; `None` is the `memory` policy.
    pub journal: Option<Rc<dyn Journal>>,
    /// Publishes appended to the journal, in position order, awaiting durability.
    pending: VecDeque<Pending>,
    /// The journal position of the newest append.
    last_pos: u64,
    /// Wakes the commit pump.
    pub commit_ready: Rc<Notify>,
    /// Tier accounting shared by every shard (channels per organization).
    pub policy: Arc<crate::policy::Policy>,
    /// Where subscriptions and cursors are mirrored; `None` keeps them in memory only.
    pub catalog: Option<Arc<dyn Catalog>>,
    /// Registered weddings, shared by every shard (SPEC §1 wedding day).
    pub weddings: crate::weddings::Weddings,
    /// The clock of calendar decisions (which day it is).
    pub clock: crate::weddings::CalendarClock,
    /// Channels whose creation is logged but not yet stored.
    creating: hashbrown::HashSet<String>,
    /// REST calls of this shard waiting for answers, by their connection id.
    pub calls: HashMap<u64, Rc<CallSlot>>,
    /// Owned channels whose presence changed since the last flush (SPEC §3: announced as
    /// one coalesced diff per channel per `presence_flush_interval_ms`).
    presence_dirty: hashbrown::HashSet<String>,
}

pub type Out = Vec<(u32, ShardMsg)>;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A stable 64-bit hash of a channel name for the outbox's per-channel ordering (never 0).
pub fn channel_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

fn reply_err(out: &mut Out, to: ConnRef, r#ref: Option<&str>, e: &Refusal) {
    crate::metrics::with(|m| m.refused(e.code));
    out.push((
        to.shard,
        ShardMsg::Reply {
            to,
            bytes: protocol::reply_error(r#ref, e).into(),
        },
    ));
}

/// Sends `bytes` to every shard in `shards` for its local subscribers of `channel`
/// (presence diffs, typing), skipping `except`.
fn broadcast(
    out: &mut Out,
    shards: Vec<u32>,
    channel: &ChannelName,
    bytes: Vec<u8>,
    except: Vec<ConnRef>,
) {
    let bytes = Bytes::from(bytes);
    for s in shards {
        out.push((
            s,
            ShardMsg::Broadcast {
                channel: channel.clone(),
                bytes: bytes.clone(),
                // Each shard needs only its own connections.
                except: except.iter().copied().filter(|c| c.shard == s).collect(),
            },
        ));
    }
}

/// Sends a durable message to each subscribing shard and answers the publisher.
fn deliver_and_reply(
    out: &mut Out,
    channel: &ChannelName,
    o: &ringbearer_core::channel_state::PublishOutcome,
    frame: &Arc<FrameBytes>,
    to: ConnRef,
    r#ref: Option<&str>,
    recipients: Option<(Vec<String>, Vec<String>)>,
) {
    // The answer goes first: routed after the deliveries it would wait behind the fan-out
    // to every local subscriber (measured: `published` p50 ~13 ms with 2,000 subscribers).
    crate::metrics::with(|m| {
        m.published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let mut reply = protocol::reply_published(r#ref, channel.as_str(), o.id, o.delivered, o.queued);
    if let Some((online, queued)) = recipients {
        // A REST call: who it went to (SPEC §4 `delivery_guarantees`).
        reply.pop();
        reply.extend_from_slice(b",\"immediate\":");
        serde_json::to_writer(&mut reply, &online).expect("json");
        reply.extend_from_slice(b",\"queued\":");
        serde_json::to_writer(&mut reply, &queued).expect("json");
        reply.push(b'}');
    }
    out.push((
        to.shard,
        ShardMsg::Reply {
            to,
            bytes: reply.into(),
        },
    ));
    for s in &o.shards {
        out.push((
            *s,
            ShardMsg::Deliver {
                frame: frame.clone(),
            },
        ));
    }
}

/// Who a durable message goes to, for the REST door's `delivery_guarantees`: users of the
/// channel's organization by their id, others as `org/id`.
fn rest_recipients<F: Clone>(
    ch: &ChannelState<F>,
    target: Option<&UserKey>,
) -> (Vec<String>, Vec<String>) {
    let org = &ch.meta.access.org;
    let shown = |v: Vec<UserKey>| -> Vec<String> {
        v.into_iter()
            .map(|u| if &u.org == org { u.sub } else { u.to_string() })
            .collect()
    };
    let (online, queued) = ch.recipients(target);
    (shown(online), shown(queued))
}

fn journal_refusal(e: &JournalError) -> Refusal {
    match e {
        JournalError::Backpressure(m) => {
            Refusal::new(ErrorCode::Overloaded, format!("not stored, retry: {m}"))
        }
        JournalError::Failed(m) => Refusal::new(ErrorCode::Internal, format!("not stored: {m}")),
    }
}

/// One retention round's inputs (see `Shard::retention_snapshot`).
pub struct RetentionRound {
    /// `(channel, ChannelCheckpoint JSON)` to log before reclaiming.
    pub checkpoints: Vec<(String, Vec<u8>)>,
    /// Per channel, the oldest id still kept.
    pub first_kept: HashMap<String, u64>,
}

/// A request whose answer waits for the journal.
struct Pending {
    pos: u64,
    channel: ChannelName,
    to: ConnRef,
    r#ref: Option<String>,
    kind: PendingKind,
}

enum PendingKind {
    /// A published message: delivered and answered once stored.
    Message {
        id: u64,
        target: Option<UserKey>,
        frame: Arc<FrameBytes>,
    },
    /// An idempotent repeat of a message still being stored.
    Repeat { id: u64 },
    /// A created channel (or a re-create of one still being stored).
    Created { reply: Bytes },
}

/// Records an audit event through the catalog, if there is one.
fn audit(
    catalog: &Option<Arc<dyn Catalog>>,
    claims: &Claims,
    action: &'static str,
    channel: Option<(&str, &str)>,
    detail: serde_json::Value,
) {
    if let Some(c) = catalog {
        c.audit(AuditEvent {
            at_ms: now_ms(),
            actor_user_id: claims.sub.clone(),
            actor_org: claims.org.clone(),
            action,
            channel: channel.map(|(name, _)| name.to_owned()),
            channel_org: channel.map(|(_, org)| org.to_owned()),
            detail,
        });
    }
}

/// Audits a refusal of the access rule (SPEC §1: a refused attempt is written to the audit
/// log, where the channel's own organization `owner` sees it); other refusals (limits, bad
/// input) are only counted.
fn audit_denied(
    catalog: &Option<Arc<dyn Catalog>>,
    claims: &Claims,
    op: &str,
    channel: &str,
    owner: Option<&str>,
    e: &Refusal,
) {
    if matches!(
        e.code,
        ErrorCode::Forbidden | ErrorCode::WeddingIsolationViolation | ErrorCode::Unauthorized
    ) {
        if let Some(c) = catalog {
            c.audit(AuditEvent {
                at_ms: now_ms(),
                actor_user_id: claims.sub.clone(),
                actor_org: claims.org.clone(),
                action: "denied",
                channel: Some(channel.to_owned()),
                channel_org: owner.map(str::to_owned),
                detail: serde_json::json!({"op": op, "code": e.code.as_str(), "message": e.message}),
            });
        }
    }
}

/// Audits a refused credential (SPEC §5: denied access). The token could not be verified,
/// so nothing in it is trusted: the record has no actor or organization (an operator reads
/// it in the registry), with the door, the peer address and the reason.
pub fn audit_unauthorized(
    catalog: &Option<Arc<dyn Catalog>>,
    door: &str,
    peer: Option<std::net::SocketAddr>,
    e: &Refusal,
) {
    if let Some(c) = catalog {
        c.audit(AuditEvent {
            at_ms: now_ms(),
            actor_user_id: String::new(),
            actor_org: String::new(),
            action: "unauthorized",
            channel: None,
            channel_org: None,
            detail: serde_json::json!({
                "door": door,
                "address": peer.map(|p| p.to_string()),
                "code": e.code.as_str(),
                "message": e.message,
            }),
        });
    }
}

/// Audits an accepted in-band token refresh (`op: token`).
pub fn audit_token_refresh(catalog: &Option<Arc<dyn Catalog>>, claims: &Claims, conn: ConnRef) {
    audit(
        catalog,
        claims,
        "token_refresh",
        None,
        serde_json::json!({
            "connection_id": conn.public_id(),
            "weddings": claims.weddings,
            "exp": claims.exp,
        }),
    );
}

/// Audits a refused in-band token refresh, under the connection's current (verified)
/// identity.
pub fn audit_refused_refresh(
    catalog: &Option<Arc<dyn Catalog>>,
    claims: &Claims,
    conn: ConnRef,
    e: &Refusal,
) {
    audit(
        catalog,
        claims,
        "denied",
        None,
        serde_json::json!({
            "op": "token",
            "connection_id": conn.public_id(),
            "code": e.code.as_str(),
            "message": e.message,
        }),
    );
}

/// The access rule (`ringbearer_core::access::check`) for `claims` doing `action` on `ch`;
/// a refusal is audited where the channel's organization sees it.
fn check_access<F: Clone>(
    catalog: &Option<Arc<dyn Catalog>>,
    ch: &ChannelState<F>,
    claims: &Claims,
    action: Action,
    op: &str,
) -> Result<(), Refusal> {
    access::check(&ch.meta.access, claims, action).inspect_err(|e| {
        let org = ch.meta.access.org.as_str();
        audit_denied(catalog, claims, op, ch.meta.name.as_str(), Some(org), e);
    })
}

/// Audits a stored channel creation; the actor is its creator.
fn audit_created(catalog: &Option<Arc<dyn Catalog>>, meta: &ChannelMeta) {
    if let Some(c) = catalog {
        c.audit(AuditEvent {
            at_ms: now_ms(),
            actor_user_id: meta.access.creator.clone(),
            actor_org: meta.access.org.clone(),
            action: "create",
            channel: Some(meta.name.as_str().to_owned()),
            channel_org: Some(meta.access.org.clone()),
            detail: serde_json::json!({
                "channel_id": meta.id,
                "type": meta.access.kind.as_str(),
                "wedding_id": meta.access.wedding_id,
            }),
        });
    }
}

/// Ends `conn`'s subscription to `ch` as an `unsubscribe` does: its presence leaves, and the
/// user's subscription and cursor go with its last connection (in the registry too). Audited
/// under the user's own organization, visible to the channel's. `false` if `conn` was not
/// subscribed.
fn end_subscription<F: Clone>(
    catalog: &Option<Arc<dyn Catalog>>,
    presence_dirty: &mut hashbrown::HashSet<String>,
    ch: &mut ChannelState<F>,
    conn: ConnRef,
    now: u64,
    detail: serde_json::Value,
) -> bool {
    let user = ch.online_user(conn);
    if !ch.unsubscribe(conn) {
        return false;
    }
    if let (Some(c), Some(u)) = (catalog, &user) {
        let channel = ch.meta.name.as_str();
        if ch.cursor(u).is_none() {
            c.unsubscribed(channel, u);
        }
        c.audit(AuditEvent {
            at_ms: now,
            actor_user_id: u.sub.clone(),
            actor_org: u.org.clone(),
            action: "unsubscribe",
            channel: Some(channel.to_owned()),
            channel_org: Some(ch.meta.access.org.clone()),
            detail,
        });
    }
    mark_presence(presence_dirty, ch);
    true
}

/// Notes that `ch`'s presence has changes to announce at the next flush.
fn mark_presence<F: Clone>(dirty: &mut hashbrown::HashSet<String>, ch: &ChannelState<F>) {
    let name = ch.meta.name.as_str();
    if ch.presence_changed() && !dirty.contains(name) {
        dirty.insert(name.to_owned());
    }
}

/// Answers a REST call (`api.rs`) with a JSON object.
fn reply_json(out: &mut Out, to: ConnRef, v: &serde_json::Value) {
    out.push((
        to.shard,
        ShardMsg::Reply {
            to,
            bytes: serde_json::to_vec(v).expect("json").into(),
        },
    ));
}

fn reply_ok(out: &mut Out, to: ConnRef, r#ref: Option<&str>) {
    if let Some(r) = r#ref {
        out.push((
            to.shard,
            ShardMsg::Reply {
                to,
                bytes: protocol::reply_ok(r).into(),
            },
        ));
    }
}

impl Shard {
    pub fn new(id: u32, shards: usize, cfg: Rc<IoConfig>, boot: u64) -> Self {
        Shard {
            id,
            shards,
            cfg,
            boot,
            conns: HashMap::new(),
            next_conn: 1,
            local: HashMap::new(),
            owned: HashMap::new(),
            next_channel: 1,
            journal: None,
            pending: VecDeque::new(),
            last_pos: 0,
            commit_ready: Rc::new(Notify::default()),
            policy: Arc::default(),
            catalog: None,
            weddings: Default::default(),
            clock: Default::default(),
            creating: hashbrown::HashSet::new(),
            calls: HashMap::new(),
            presence_dirty: hashbrown::HashSet::new(),
        }
    }

    /// Rebuilds the channels this shard owned before a restart (before it serves anyone).
    pub fn restore(&mut self, channels: Vec<RestoredChannel>, now_ms: u64) {
        for rc in channels {
            let name = rc.meta.name.as_str().to_owned();
            if ringbearer_core::shard_for(&name, self.shards) as u32 != self.id {
                // The server refuses to start with another shard count than the data was
                // written with, so this is a bug, not an operator mistake.
                tracing::error!(shard = self.id, channel = %name, "restored channel is not ours; skipped");
                continue;
            }
            let mut limits = self.cfg.limits.clone();
            limits.message_retention_hours = (rc.meta.retention_ms / 3_600_000).max(1);
            self.policy.count_restored_channel(&rc.meta.access.org);
            if let Some(w) = &rc.meta.access.wedding_id {
                // Ownership of a wedding only named by channels (SPEC §1) is derived again.
                self.weddings
                    .claim(w, &rc.meta.access.org, rc.meta.created_at_ms);
            }
            let messages: Vec<(u64, u64, Arc<FrameBytes>, Option<UserKey>)> = rc
                .messages
                .into_iter()
                .map(|m| {
                    let mut f = FrameBytes::with_capacity(m.frame.len());
                    f.extend_from_slice(&m.frame);
                    let target = access_frame(&f)
                        .ok()
                        .and_then(|a| a.target().map(|(o, s)| UserKey::new(o, s)));
                    (m.id, m.ts_ms, Arc::new(f), target)
                })
                .collect();
            // Idempotency keys travel inside the frames: a publish retried after a crash
            // still gets its first id (SPEC §2.4).
            let keys: Vec<(String, u64, u64)> = messages
                .iter()
                .filter_map(|(id, ts, f, _)| {
                    let a = access_frame(f).ok()?;
                    let k = a.idempotency_key.as_ref()?;
                    Some((k.as_str().to_owned(), *id, *ts))
                })
                .collect();
            let mut st = ChannelState::restore(
                rc.meta,
                rc.last_id,
                &limits,
                self.shards,
                messages,
                rc.members,
                now_ms,
            );
            for (k, id, ts) in keys {
                st.remember_idempotency(&k, id, ts, now_ms);
            }
            self.owned.insert(name, st);
        }
        let n = self.owned.len() as u64;
        crate::metrics::with(|m| m.channels.store(n, std::sync::atomic::Ordering::Relaxed));
    }

    /// One retention round's inputs: a checkpoint record per owned channel (to log before
    /// reclaiming) and, per channel, the oldest id still kept. Records below it — and
    /// checkpoints older than this round's (`ts < now_ms`) — are dead.
    pub fn retention_snapshot(&mut self, now_ms: u64) -> RetentionRound {
        let mut checkpoints = Vec::with_capacity(self.owned.len());
        let mut first_kept = HashMap::with_capacity(self.owned.len());
        for (name, ch) in self.owned.iter_mut() {
            if self.creating.contains(name) {
                continue;
            }
            let cp = ringbearer_core::channel_state::ChannelCheckpoint {
                meta: ch.meta.clone(),
                last_id: ch.durable_id(),
            };
            checkpoints.push((name.clone(), serde_json::to_vec(&cp).expect("serializes")));
            first_kept.insert(name.clone(), ch.first_kept_id(now_ms));
        }
        RetentionRound {
            checkpoints,
            first_kept,
        }
    }

    /// The newest pending position, if any publish awaits durability.
    pub fn pending_upto(&self) -> Option<(Rc<dyn Journal>, u64)> {
        let j = self.journal.clone()?;
        self.pending.back().map(|p| (j, p.pos))
    }

    pub fn owned_channels(&self) -> usize {
        self.owned.len()
    }

    fn on_enroll(
        &mut self,
        out: &mut Out,
        from: ConnRef,
        claims: &Claims,
        user: &UserKey,
        req: SubscribeReq,
        now: u64,
    ) {
        let Some(ch) = self.owned.get_mut(req.channel.as_str()) else {
            return reply_err(out, from, None, &Self::not_found(&req.channel));
        };
        let org = ch.meta.access.org.clone();
        if let Err(e) = check_access(&self.catalog, ch, claims, Action::Read, "subscribe") {
            return reply_err(out, from, None, &e);
        }
        let resume = ResumeFrom {
            last_seen_id: None,
            epoch: None,
            include_history: req.include_history,
        };
        let en = match ch.enroll(user, resume, now) {
            Ok(en) => en,
            Err(e) => return reply_err(out, from, None, &e),
        };
        if en.new {
            if let Some(c) = &self.catalog {
                c.subscribed(req.channel.as_str(), user, en.cursor);
            }
        }
        let mut reply = Vec::with_capacity(128);
        reply.extend_from_slice(b"{\"op\":\"enrolled\",\"channel\":");
        serde_json::to_writer(&mut reply, req.channel.as_str()).expect("json");
        reply.extend_from_slice(b",\"channel_id\":");
        serde_json::to_writer(&mut reply, &ch.meta.id).expect("json");
        reply.extend_from_slice(b",\"epoch\":");
        serde_json::to_writer(&mut reply, &ch.meta.epoch).expect("json");
        reply.extend_from_slice(b",\"wedding_id\":");
        serde_json::to_writer(&mut reply, &ch.meta.access.wedding_id).expect("json");
        reply.extend_from_slice(
            format!(
                ",\"new\":{},\"cursor\":{},\"recovered\":{},\"messages\":[",
                en.new, en.cursor, en.recovered
            )
            .as_bytes(),
        );
        let mut first = true;
        for f in &en.messages {
            if let Ok(a) = access_frame(f) {
                if !first {
                    reply.push(b',');
                }
                first = false;
                render_message_json(a, &mut reply);
            }
        }
        reply.extend_from_slice(b"]}");
        let detail = serde_json::json!({"user_id": user.sub, "via": "rest", "new": en.new});
        out.push((
            from.shard,
            ShardMsg::Reply {
                to: from,
                bytes: reply.into(),
            },
        ));
        audit(
            &self.catalog,
            claims,
            "subscribe",
            Some((req.channel.as_str(), &org)),
            detail,
        );
    }

    /// Announces the presence changes of every owned channel that has some: one
    /// `presence_diff` (or, past `presence_list_max` entries, one `presence_state`) per
    /// channel to each shard with subscribers (SPEC §3). Run every
    /// `presence_flush_interval_ms`; a subscriber joining meanwhile got the current list in
    /// its `subscribed` reply, which was routed before this.
    pub fn flush_presence(&mut self, now_ms: u64) -> Out {
        let mut out = Out::new();
        if self.presence_dirty.is_empty() {
            return out;
        }
        let count_interval_ms = self.cfg.presence_count_interval_ms;
        for name in std::mem::take(&mut self.presence_dirty) {
            let Some(ch) = self.owned.get_mut(&name) else {
                continue;
            };
            let taken = ch.take_presence(now_ms, count_interval_ms);
            if ch.presence_changed() {
                // A change of the count alone, held back: try again next time.
                self.presence_dirty.insert(name.clone());
            }
            let Some((flush, skip)) = taken else {
                continue;
            };
            let bytes = match flush {
                PresenceFlush::Diff(d) => protocol::presence_diff(&name, &d),
                PresenceFlush::State { entries, total } => {
                    protocol::presence_state(&name, &entries, total)
                }
            };
            broadcast(&mut out, ch.shards(), &ch.meta.name, bytes, skip);
        }
        out
    }

    /// The admin page's view of one channel (`ShardMsg::Inspect`). Only the admin and
    /// service roles of the channel's own organization may look; anyone else gets the
    /// access rule's refusal (or `WS_FORBIDDEN`), audited for the channel's owner. Recent
    /// messages follow the one visibility rule for the viewer: a message targeted at
    /// another user is not shown, even to the owner's admin.
    #[allow(clippy::too_many_arguments)]
    fn on_inspect(
        &mut self,
        out: &mut Out,
        from: ConnRef,
        claims: &Claims,
        channel: &ChannelName,
        offset: usize,
        limit: usize,
        now: u64,
    ) {
        let Some(ch) = self.owned.get(channel.as_str()) else {
            return reply_err(out, from, None, &Self::not_found(channel));
        };
        let org = &ch.meta.access.org;
        if !(claims.role.is_org_wide() && &claims.org == org) {
            let e = access::check(&ch.meta.access, claims, Action::Admin)
                .err()
                .unwrap_or_else(|| {
                    Refusal::new(
                        ErrorCode::Forbidden,
                        "a channel's detail is for the admin and service roles of its organization",
                    )
                });
            audit_denied(
                &self.catalog,
                claims,
                "inspect",
                channel.as_str(),
                Some(org),
                &e,
            );
            return reply_err(out, from, None, &e);
        }
        let mut subs: Vec<(&UserKey, u64, u32)> = ch.subscribers().collect();
        subs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let subscribers: Vec<serde_json::Value> = subs
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(user, cursor, online)| {
                serde_json::json!({
                    "org": user.org,
                    "user_id": user.sub,
                    "online_connections": online,
                    "cursor": cursor,
                    "unread": ch.unread(user).unwrap_or(0),
                })
            })
            .collect();
        let presence: Vec<&ringbearer_core::presence::PresenceEntry> = ch
            .presence()
            .iter()
            .take(self.cfg.limits.presence_list_max)
            .collect();
        let viewer = claims.user_key();
        let recent: Vec<serde_json::Value> = ch
            .recent_visible(INSPECT_RECENT_MAX, &viewer, now)
            .iter()
            .filter_map(|f| {
                let mut buf = Vec::new();
                render_message_json(access_frame(f).ok()?, &mut buf);
                serde_json::from_slice(&buf).ok()
            })
            .collect();
        let v = serde_json::json!({
            "op": "detail",
            "name": channel.as_str(),
            "channel_id": ch.meta.id,
            "type": ch.meta.access.kind.as_str(),
            "wedding_id": ch.meta.access.wedding_id,
            "created_at": ringbearer_core::time::rfc3339_ms(ch.meta.created_at_ms),
            "last_id": ch.last_id(),
            "durable_id": ch.durable_id(),
            "last_activity": ringbearer_core::time::rfc3339_ms(ch.last_activity_ms()),
            "members": ch.member_count(),
            "active_users": ch.active_users(),
            "online_connections": ch.online_count(),
            "offset": offset,
            "limit": limit,
            "subscribers": subscribers,
            "presence": presence,
            "presence_total": ch.presence().len(),
            "recent_messages": recent,
        });
        reply_json(out, from, &v);
    }

    /// The channels of the caller's organization on this shard (`ShardMsg::ListOrg`): the
    /// first `take` by name and the count. Admin and service roles only.
    fn on_list_org(&mut self, out: &mut Out, from: ConnRef, claims: &Claims, take: usize) {
        if !claims.role.is_org_wide() {
            let e = Refusal::new(
                ErrorCode::Forbidden,
                "the organization's channel list is for the admin and service roles",
            );
            return reply_err(out, from, None, &e);
        }
        let mut mine: Vec<&ChannelState<Arc<FrameBytes>>> = self
            .owned
            .values()
            .filter(|c| c.meta.access.org == claims.org)
            .collect();
        let total = mine.len();
        if take < total {
            mine.select_nth_unstable_by(take, |a, b| {
                a.meta.name.as_str().cmp(b.meta.name.as_str())
            });
            mine.truncate(take);
        }
        mine.sort_unstable_by(|a, b| a.meta.name.as_str().cmp(b.meta.name.as_str()));
        let list: Vec<serde_json::Value> = mine
            .iter()
            .map(|ch| {
                serde_json::json!({
                    "name": ch.meta.name.as_str(),
                    "type": ch.meta.access.kind.as_str(),
                    "wedding_id": ch.meta.access.wedding_id,
                    "active_users": ch.active_users(),
                    "members": ch.member_count(),
                    "last_activity": ringbearer_core::time::rfc3339_ms(ch.last_activity_ms()),
                })
            })
            .collect();
        let v = serde_json::json!({"op": "list", "channels": list, "total": total});
        reply_json(out, from, &v);
    }

    fn not_found(name: &ChannelName) -> Refusal {
        Refusal::new(
            ErrorCode::ChannelNotFound,
            format!("channel {name} does not exist"),
        )
    }

    /// Handles one message; returns what to route next.
    pub fn handle(&mut self, msg: ShardMsg) -> Out {
        let mut out = Out::new();
        let now = now_ms();
        match msg {
            ShardMsg::Create {
                from,
                r#ref,
                claims,
                req,
            } => self.on_create(&mut out, from, r#ref.as_deref(), &claims, req, now),
            ShardMsg::Subscribe {
                from,
                r#ref,
                claims,
                req,
            } => self.on_subscribe(&mut out, from, r#ref.as_deref(), &claims, req, now),
            ShardMsg::Publish {
                from,
                r#ref,
                claims,
                req,
            } => self.on_publish(&mut out, from, r#ref.as_deref(), &claims, req, now),
            ShardMsg::Unsubscribe {
                from,
                r#ref,
                channel,
            } => {
                let Some(ch) = self.owned.get_mut(channel.as_str()) else {
                    reply_err(&mut out, from, r#ref.as_deref(), &Self::not_found(&channel));
                    return out;
                };
                let detail = serde_json::json!({"connection_id": from.public_id()});
                end_subscription(
                    &self.catalog,
                    &mut self.presence_dirty,
                    ch,
                    from,
                    now,
                    detail,
                );
                let bytes = protocol::reply_unsubscribed(r#ref.as_deref(), channel.as_str()).into();
                out.push((
                    from.shard,
                    ShardMsg::Unsubscribed {
                        to: from,
                        channel,
                        bytes,
                    },
                ));
            }
            ShardMsg::Ack {
                from,
                r#ref,
                user,
                channel,
                id,
            } => match self.owned.get_mut(channel.as_str()) {
                None => reply_err(&mut out, from, r#ref.as_deref(), &Self::not_found(&channel)),
                Some(ch) => {
                    let before = ch.cursor(&user);
                    ch.ack(&user, id);
                    let after = ch.cursor(&user);
                    if let (Some(c), Some(cur)) = (&self.catalog, after) {
                        if after != before {
                            c.acked(channel.as_str(), &user, cur);
                        }
                    }
                    reply_ok(&mut out, from, r#ref.as_deref());
                }
            },
            ShardMsg::Presence {
                from,
                r#ref,
                channel,
                meta,
            } => {
                let Some(ch) = self.owned.get_mut(channel.as_str()) else {
                    reply_err(&mut out, from, r#ref.as_deref(), &Self::not_found(&channel));
                    return out;
                };
                let meta =
                    serde_json::value::RawValue::from_string(meta).expect("validated at ingress");
                if ch.set_presence(from, meta) {
                    mark_presence(&mut self.presence_dirty, ch);
                    reply_ok(&mut out, from, r#ref.as_deref());
                } else {
                    reply_err(
                        &mut out,
                        from,
                        r#ref.as_deref(),
                        &Refusal::new(
                            ErrorCode::SubscriptionFailed,
                            "not subscribed to this channel",
                        ),
                    );
                }
            }
            ShardMsg::Typing {
                from,
                r#ref,
                user,
                role,
                channel,
            } => {
                let Some(ch) = self.owned.get(channel.as_str()) else {
                    reply_err(&mut out, from, r#ref.as_deref(), &Self::not_found(&channel));
                    return out;
                };
                if !ch.is_subscribed(from) {
                    reply_err(
                        &mut out,
                        from,
                        r#ref.as_deref(),
                        &Refusal::new(
                            ErrorCode::SubscriptionFailed,
                            "not subscribed to this channel",
                        ),
                    );
                    return out;
                }
                broadcast(
                    &mut out,
                    ch.shards(),
                    &channel,
                    protocol::typing(channel.as_str(), &user.sub, &user.org, role),
                    vec![from],
                );
                reply_ok(&mut out, from, r#ref.as_deref());
            }
            ShardMsg::Recheck {
                conn,
                claims,
                channels,
            } => self.on_recheck(&mut out, conn, &claims, channels, now),
            ShardMsg::Disconnect { conn, channels } => {
                for channel in channels {
                    let Some(ch) = self.owned.get_mut(channel.as_str()) else {
                        continue;
                    };
                    if ch.disconnect(conn) {
                        mark_presence(&mut self.presence_dirty, ch);
                    }
                }
            }
            ShardMsg::Reply { to, bytes } => {
                if let Some(c) = self.conns.get(&to.conn) {
                    c.send_control(bytes);
                } else if let Some(call) = self.calls.get(&to.conn) {
                    call.replies.borrow_mut().push(bytes);
                    if call.replies.borrow().len() >= call.expect.get() {
                        call.done.notify();
                    }
                }
            }
            ShardMsg::Resolve { from, id } => {
                let name = self
                    .owned
                    .values()
                    .find(|c| c.meta.id == id)
                    .map(|c| c.meta.name.clone());
                match name {
                    Some(n) => {
                        let v = serde_json::json!({"op": "resolved", "channel": n.as_str()});
                        reply_json(&mut out, from, &v);
                    }
                    None => reply_err(
                        &mut out,
                        from,
                        None,
                        &Refusal::new(
                            ErrorCode::ChannelNotFound,
                            format!("no channel has id {}", id.escape_default()),
                        ),
                    ),
                }
            }
            ShardMsg::Enroll {
                from,
                claims,
                user,
                req,
            } => self.on_enroll(&mut out, from, &claims, &user, req, now),
            ShardMsg::Withdraw {
                from,
                claims,
                user,
                channel,
            } => {
                let Some(ch) = self.owned.get_mut(channel.as_str()) else {
                    reply_err(&mut out, from, None, &Self::not_found(&channel));
                    return out;
                };
                let org = ch.meta.access.org.clone();
                if let Err(e) =
                    check_access(&self.catalog, ch, &claims, Action::Read, "unsubscribe")
                {
                    reply_err(&mut out, from, None, &e);
                    return out;
                }
                let removed = ch.withdraw(&user);
                if removed {
                    if let Some(c) = &self.catalog {
                        c.unsubscribed(channel.as_str(), &user);
                    }
                }
                audit(
                    &self.catalog,
                    &claims,
                    "unsubscribe",
                    Some((channel.as_str(), &org)),
                    serde_json::json!({"user_id": user.sub, "via": "rest", "removed": removed}),
                );
                let v = serde_json::json!({
                    "op": "withdrawn",
                    "channel": channel.as_str(),
                    "removed": removed,
                });
                reply_json(&mut out, from, &v);
            }
            ShardMsg::ListFor { from, claims, user } => {
                let mut list = Vec::new();
                for ch in self.owned.values() {
                    let Some(unread) = ch.unread(&user) else {
                        continue;
                    };
                    // Isolation (SPEC §1): never listed for a caller without access.
                    if access::check(&ch.meta.access, &claims, Action::Read).is_err() {
                        continue;
                    }
                    list.push(serde_json::json!({
                        "name": ch.meta.name.as_str(),
                        "type": ch.meta.access.kind.as_str(),
                        "active_users": ch.active_users(),
                        "last_activity": ringbearer_core::time::rfc3339_ms(ch.last_activity_ms()),
                        "unread_count": unread,
                    }));
                }
                let v = serde_json::json!({"op": "list", "channels": list});
                reply_json(&mut out, from, &v);
            }
            ShardMsg::Inspect {
                from,
                claims,
                channel,
                offset,
                limit,
            } => self.on_inspect(&mut out, from, &claims, &channel, offset, limit, now),
            ShardMsg::ListOrg { from, claims, take } => {
                self.on_list_org(&mut out, from, &claims, take)
            }
            ShardMsg::SubscribeRefused { to, channel, bytes } => {
                if let Some(c) = self.conns.get(&to.conn) {
                    c.refused(channel.as_str());
                    c.send_control(bytes);
                }
            }
            ShardMsg::Subscribed {
                to,
                channel,
                frames,
            } => {
                self.on_subscribed(&mut out, to, channel, frames);
            }
            ShardMsg::Unsubscribed { to, channel, bytes } => {
                if let Some(c) = self.conns.get(&to.conn).cloned() {
                    if c.unsubscribed(channel.as_str()) {
                        self.remove_local(channel.as_str(), to.conn);
                        c.outbox
                            .borrow_mut()
                            .forget_channel(channel_hash(channel.as_str()));
                    }
                    c.send_control(bytes);
                }
            }
            ShardMsg::Deliver { frame } => self.on_deliver(&frame),
            ShardMsg::Broadcast {
                channel,
                bytes,
                except,
            } => {
                if let Some(subs) = self.local.get(channel.as_str()) {
                    for s in subs {
                        // Connection ids are per shard: compare the whole reference.
                        if except.contains(&s.conn.cref) {
                            continue;
                        }
                        s.conn.send_message(Priority::Normal, 0, bytes.clone());
                    }
                }
            }
        }
        out
    }

    fn on_create(
        &mut self,
        out: &mut Out,
        from: ConnRef,
        r#ref: Option<&str>,
        claims: &Claims,
        req: CreateReq,
        now: u64,
    ) {
        let name = req.name.as_str();
        if let Some(ch) = self.owned.get(name) {
            // SPEC §4: creating a name that exists returns it to a caller of its own
            // organization with access. Another organization is told, never silently handed
            // a channel it does not own (its permissions, its members, its audit).
            let access = access::check(&ch.meta.access, claims, Action::Read).and_then(|()| {
                if ch.meta.access.org == claims.org {
                    Ok(())
                } else {
                    Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "a channel of that name belongs to another organization; subscribe to it instead",
                    ))
                }
            });
            match access {
                Ok(()) if self.creating.contains(name) => {
                    // Still being stored: answer when it is.
                    let reply =
                        protocol::reply_created(r#ref, &ch.meta.id, name, ch.meta.created_at_ms);
                    self.pending.push_back(Pending {
                        pos: self.last_pos,
                        channel: req.name.clone(),
                        to: from,
                        r#ref: r#ref.map(str::to_owned),
                        kind: PendingKind::Created {
                            reply: reply.into(),
                        },
                    });
                    self.commit_ready.notify();
                }
                Ok(()) => {
                    let bytes =
                        protocol::reply_created(r#ref, &ch.meta.id, name, ch.meta.created_at_ms);
                    out.push((
                        from.shard,
                        ShardMsg::Reply {
                            to: from,
                            bytes: bytes.into(),
                        },
                    ));
                }
                Err(e) => {
                    let owner = ch.meta.access.org.clone();
                    audit_denied(&self.catalog, claims, "create", name, Some(&owner), &e);
                    reply_err(out, from, r#ref, &e)
                }
            }
            return;
        }
        if claims.role == Role::Guest {
            let e = Refusal::new(ErrorCode::Forbidden, "guests may not create channels");
            audit_denied(&self.catalog, claims, "create", name, None, &e);
            return reply_err(out, from, r#ref, &e);
        }
        if let Some(w) = &req.wedding_id {
            // `*` reaches only the token's own organization's weddings (SPEC §1); a wedding
            // listed by id is reached whoever owns it.
            let owner = self.weddings.owner(w);
            if !claims.may_create_in_wedding(w, owner.as_deref()) {
                let e = Refusal::new(
                    ErrorCode::WeddingIsolationViolation,
                    "this token does not give access to that wedding",
                );
                audit_denied(&self.catalog, claims, "create", name, owner.as_deref(), &e);
                return reply_err(out, from, r#ref, &e);
            }
            if let Err(e) = self.register_from_create(claims, w, owner.as_deref(), &req) {
                return reply_err(out, from, r#ref, &e);
            }
        }
        let limits = &self.cfg.limits;
        if self.owned.len() >= limits.max_channels_per_shard {
            return reply_err(
                out,
                from,
                r#ref,
                &Refusal::new(
                    ErrorCode::Overloaded,
                    "channel capacity reached (max_channels_per_shard)",
                ),
            );
        }
        // Last check before creating: a reservation is never taken for a refused create.
        if let Err(e) = self.policy.reserve_channel(claims, limits) {
            return reply_err(out, from, r#ref, &e);
        }
        let n = self.next_channel;
        self.next_channel += 1;
        let meta = ChannelMeta {
            id: format!(
                "ch_{:012x}{:02x}{:06x}",
                self.boot & 0xffff_ffff_ffff,
                self.id,
                n
            ),
            name: req.name.clone(),
            access: ChannelAccess {
                org: claims.org.clone(),
                wedding_id: req.wedding_id,
                kind: req.kind,
                permissions: req
                    .permissions
                    .unwrap_or_else(|| Permissions::default_for(req.kind)),
                creator: claims.sub.clone(),
                members: req.members,
            },
            max_subscribers: req.max_subscribers.unwrap_or(limits.max_subscribers),
            retention_ms: req
                .message_retention_hours
                .map(|h| h * 3_600_000)
                .unwrap_or(limits.retention_ms()),
            created_at_ms: now,
            epoch: format!("{:x}-{:x}-{:x}", self.boot & 0xffff_ffff, self.id, n),
        };
        let bytes: Bytes = protocol::reply_created(r#ref, &meta.id, name, now).into();
        if let Some(w) = &meta.access.wedding_id {
            self.weddings.claim(w, &meta.access.org, now);
        }
        if let Some(journal) = &self.journal {
            // Logged before it is answered for, so a restart rebuilds it.
            let checkpoint = ringbearer_core::channel_state::ChannelCheckpoint {
                meta: meta.clone(),
                last_id: 0,
            };
            let json = serde_json::to_vec(&checkpoint).expect("ChannelCheckpoint serializes");
            let pos = match journal.append(name, now, Entry::Channel { meta_json: &json }) {
                Ok(pos) => pos,
                Err(e) => {
                    self.policy.release_channel(claims);
                    return reply_err(out, from, r#ref, &journal_refusal(&e));
                }
            };
            self.last_pos = pos;
            // Mirrored now, not once durable: a subscribe may be accepted before then, and
            // the registry must see the channel's row first (journal.rs, `Catalog` order).
            if let Some(c) = &self.catalog {
                c.channel_created(&meta);
            }
            self.creating.insert(name.to_owned());
            self.pending.push_back(Pending {
                pos,
                channel: req.name.clone(),
                to: from,
                r#ref: r#ref.map(str::to_owned),
                kind: PendingKind::Created { reply: bytes },
            });
            self.commit_ready.notify();
        } else {
            if let Some(c) = &self.catalog {
                c.channel_created(&meta);
            }
            audit_created(&self.catalog, &meta);
            out.push((from.shard, ShardMsg::Reply { to: from, bytes }));
        }
        let mut channel_limits = limits.clone();
        channel_limits.message_retention_hours = meta.retention_ms / 3_600_000;
        self.owned.insert(
            name.to_owned(),
            ChannelState::new(meta, &channel_limits, self.shards),
        );
        crate::metrics::with(|m| {
            m.channels
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
    }

    fn on_subscribe(
        &mut self,
        out: &mut Out,
        from: ConnRef,
        r#ref: Option<&str>,
        claims: &Claims,
        req: SubscribeReq,
        now: u64,
    ) {
        let refuse = |out: &mut Out, e: &Refusal| {
            crate::metrics::with(|m| m.refused(e.code));
            let bytes = protocol::reply_error(r#ref, e).into();
            let channel = req.channel.clone();
            out.push((
                from.shard,
                ShardMsg::SubscribeRefused {
                    to: from,
                    channel,
                    bytes,
                },
            ));
        };
        let Some(ch) = self.owned.get_mut(req.channel.as_str()) else {
            return refuse(out, &Self::not_found(&req.channel));
        };
        if let Err(e) = check_access(&self.catalog, ch, claims, Action::Read, "subscribe") {
            return refuse(out, &e);
        }
        let user = claims.user_key();
        let resume = ResumeFrom {
            last_seen_id: req.last_seen_id,
            epoch: req.epoch.as_deref(),
            include_history: req.include_history,
        };
        let o = match ch.subscribe(from, &user, claims.role, resume, now) {
            Ok(o) => o,
            Err(e) => return refuse(out, &e),
        };
        if let (Some(c), true) = (&self.catalog, o.joined) {
            c.subscribed(req.channel.as_str(), &user, ch.cursor(&user).unwrap_or(0));
            audit(
                &self.catalog,
                claims,
                "subscribe",
                Some((req.channel.as_str(), &ch.meta.access.org)),
                serde_json::json!({"connection_id": from.public_id(), "recovered": o.recovered}),
            );
        }
        // The reply carries as many recovered messages as fit in one frame of
        // `max_request_bytes`; the rest follow as `message` frames, in order.
        let budget = self.cfg.limits.max_request_bytes;
        let mut inline: Vec<Vec<u8>> = Vec::new();
        let mut rest: Vec<Bytes> = Vec::new();
        let mut used = 0;
        for f in &o.messages {
            let mut buf = Vec::new();
            match access_frame(f) {
                Ok(a) => render_message_json(a, &mut buf),
                Err(_) => continue,
            }
            if rest.is_empty() && (inline.is_empty() || used + buf.len() <= budget) {
                used += buf.len();
                inline.push(buf);
            } else {
                rest.push(buf.into());
            }
        }
        let reply = protocol::reply_subscribed(
            r#ref,
            req.channel.as_str(),
            &ch.meta.epoch,
            o.recovered,
            inline.iter().map(Vec::as_slice),
            &o.presence,
            o.presence_total,
        );
        let mut frames = Vec::with_capacity(1 + rest.len());
        frames.push(Bytes::from(reply));
        frames.extend(rest);
        // The join (and anything the list handed out must be kept up to date on) goes
        // out with the channel's next presence flush.
        mark_presence(&mut self.presence_dirty, ch);
        out.push((
            from.shard,
            ShardMsg::Subscribed {
                to: from,
                channel: req.channel,
                frames,
            },
        ));
    }

    fn on_publish(
        &mut self,
        out: &mut Out,
        from: ConnRef,
        r#ref: Option<&str>,
        claims: &Claims,
        req: PublishReq,
        now: u64,
    ) {
        let Some(ch) = self.owned.get_mut(req.channel.as_str()) else {
            return reply_err(out, from, r#ref, &Self::not_found(&req.channel));
        };
        if let Err(e) = check_access(&self.catalog, ch, claims, Action::Write, "publish") {
            return reply_err(out, from, r#ref, &e);
        }
        if let Some(w) = &req.context_wedding_id {
            if ch.meta.access.wedding_id.as_deref() != Some(w.as_str()) {
                return reply_err(
                    out,
                    from,
                    r#ref,
                    &Refusal::new(
                        ErrorCode::InvalidWeddingContext,
                        "wedding_context.wedding_id is not this channel's wedding",
                    ),
                );
            }
        }
        if let Some(k) = &req.idempotency_key {
            if let Some(id) = ch.idempotent_id(k, now) {
                if id <= ch.durable_id() {
                    let bytes = protocol::reply_published(r#ref, req.channel.as_str(), id, 0, 0);
                    out.push((
                        from.shard,
                        ShardMsg::Reply {
                            to: from,
                            bytes: bytes.into(),
                        },
                    ));
                } else {
                    // The first publish is still being stored: answer when it is.
                    self.pending.push_back(Pending {
                        pos: self.last_pos,
                        channel: req.channel,
                        to: from,
                        r#ref: r#ref.map(str::to_owned),
                        kind: PendingKind::Repeat { id },
                    });
                    self.commit_ready.notify();
                }
                return;
            }
        }
        // SPEC §1 rates, decided here where the channel's wedding is known: a wedding-day
        // channel gets `wedding_day_rate_multiplier` × the user and channel rates, and its
        // `critical` publishes skip both, held only by `critical_messages_per_min`.
        let limits = &self.cfg.limits;
        let wedding_day = ch
            .meta
            .access
            .wedding_id
            .as_deref()
            .is_some_and(|w| self.weddings.is_wedding_day(w, self.clock.now_ms()));
        let rated = if wedding_day && req.priority == Priority::Critical {
            self.policy.take_critical(claims, limits, now)
        } else {
            let m = if wedding_day {
                limits.wedding_day_rate_multiplier
            } else {
                1
            };
            self.policy
                .take_message_scaled(claims, limits, m, now)
                .and_then(|()| ch.take_publish_scaled(limits, m, now))
        };
        if let Err(e) = rated {
            return reply_err(out, from, r#ref, &e);
        }
        let id = ch.next_id();
        let frame = MessageFrame {
            id,
            ts_ms: now,
            channel: req.channel.as_str().to_owned(),
            msg_type: req.msg_type,
            event: req.event,
            priority: req.priority as u8,
            payload: req.payload,
            sender_user_id: claims.sub.clone(),
            sender_org: claims.org.clone(),
            sender_role: claims.role.code(),
            // A target is one user of one organization: the publisher's own unless named.
            target_org: req
                .target_user_id
                .as_ref()
                .map(|_| req.target_org.unwrap_or_else(|| claims.org.clone())),
            target_user_id: req.target_user_id,
            wedding_context: req.wedding_context,
            idempotency_key: req.idempotency_key,
        };
        let bytes = Arc::new(frame.encode());
        let target = frame
            .target_user_id
            .as_ref()
            .zip(frame.target_org.as_ref())
            .map(|(sub, org)| UserKey::new(org.clone(), sub.clone()));
        let Some(journal) = &self.journal else {
            // `memory` policy: durable on append.
            let o = ch.publish(
                bytes.clone(),
                now,
                target.as_ref(),
                frame.idempotency_key.as_deref(),
                now,
            );
            let recipients = from.is_call().then(|| rest_recipients(ch, target.as_ref()));
            return deliver_and_reply(out, &req.channel, &o, &bytes, from, r#ref, recipients);
        };
        // Stored first, then heard of (SPEC §2.5): the commit pump answers and delivers
        // once the journal says the position is durable.
        let pos = match journal.append(
            req.channel.as_str(),
            now,
            Entry::Message { id, frame: &bytes },
        ) {
            Ok(pos) => pos,
            Err(e) => return reply_err(out, from, r#ref, &journal_refusal(&e)),
        };
        self.last_pos = pos;
        ch.append(
            bytes.clone(),
            now,
            target.as_ref(),
            frame.idempotency_key.as_deref(),
            now,
        );
        self.pending.push_back(Pending {
            pos,
            channel: req.channel,
            to: from,
            r#ref: r#ref.map(str::to_owned),
            kind: PendingKind::Message {
                id,
                target,
                frame: bytes,
            },
        });
        self.commit_ready.notify();
    }

    /// The journal answered for everything up to `upto`: deliver and answer what is now
    /// stored, in log order; or, on failure, refuse everything waiting and roll the
    /// channels back so no id that was not stored is ever seen.
    pub fn complete_pending(&mut self, upto: u64, result: Result<(), JournalError>) -> Out {
        let mut out = Out::new();
        match result {
            Ok(()) => {
                while self.pending.front().is_some_and(|p| p.pos <= upto) {
                    let p = self.pending.pop_front().expect("front");
                    let Some(ch) = self.owned.get_mut(p.channel.as_str()) else {
                        continue;
                    };
                    match p.kind {
                        PendingKind::Repeat { id } => {
                            let bytes = protocol::reply_published(
                                p.r#ref.as_deref(),
                                p.channel.as_str(),
                                id,
                                0,
                                0,
                            );
                            out.push((
                                p.to.shard,
                                ShardMsg::Reply {
                                    to: p.to,
                                    bytes: bytes.into(),
                                },
                            ));
                        }
                        PendingKind::Message { id, target, frame } => {
                            ch.mark_durable(id);
                            let o = ch.outcome(id, target.as_ref());
                            let recipients =
                                p.to.is_call().then(|| rest_recipients(ch, target.as_ref()));
                            deliver_and_reply(
                                &mut out,
                                &p.channel,
                                &o,
                                &frame,
                                p.to,
                                p.r#ref.as_deref(),
                                recipients,
                            );
                        }
                        PendingKind::Created { reply } => {
                            if self.creating.remove(p.channel.as_str()) {
                                audit_created(&self.catalog, &ch.meta);
                            }
                            out.push((
                                p.to.shard,
                                ShardMsg::Reply {
                                    to: p.to,
                                    bytes: reply,
                                },
                            ));
                        }
                    }
                }
            }
            Err(e) => {
                let refusal = journal_refusal(&e);
                crate::metrics::with(|m| {
                    m.storage_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
                tracing::error!(
                    shard = self.id,
                    "journal failed, refusing {} waiting requests: {e:?}",
                    self.pending.len()
                );
                let mut touched: Vec<ChannelName> = Vec::new();
                for p in self.pending.drain(..) {
                    reply_err(&mut out, p.to, p.r#ref.as_deref(), &refusal);
                    if !touched.contains(&p.channel) {
                        touched.push(p.channel);
                    }
                }
                for c in touched {
                    if self.creating.remove(c.as_str()) {
                        // Never stored: the channel never existed.
                        if let Some(ch) = self.owned.remove(c.as_str()) {
                            if let Some(cat) = &self.catalog {
                                cat.channel_dropped(c.as_str());
                            }
                            self.policy.release_channel_of(&ch.meta.access.org);
                            crate::metrics::with(|m| {
                                m.channels
                                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                            });
                        }
                    } else if let Some(ch) = self.owned.get_mut(c.as_str()) {
                        ch.rollback_to_durable();
                    }
                }
            }
        }
        out
    }

    /// A connection's token was refreshed: each of `channels` it is subscribed to that the
    /// new claims may no longer read is ended as an unsubscribe would end it (its presence
    /// leaves; the user's subscription goes with its last connection), and the connection is
    /// told with an `unsubscribed` carrying the reason.
    fn on_recheck(
        &mut self,
        out: &mut Out,
        conn: ConnRef,
        claims: &Claims,
        channels: Vec<ChannelName>,
        now: u64,
    ) {
        for channel in channels {
            let Some(ch) = self.owned.get_mut(channel.as_str()) else {
                continue;
            };
            if !ch.is_subscribed(conn) {
                continue;
            }
            let Err(why) = access::check(&ch.meta.access, claims, Action::Read) else {
                continue;
            };
            let detail = serde_json::json!({
                "connection_id": conn.public_id(),
                "reason": "token_refresh",
                "code": why.code.as_str(),
            });
            end_subscription(
                &self.catalog,
                &mut self.presence_dirty,
                ch,
                conn,
                now,
                detail,
            );
            let bytes = protocol::unsubscribed_because(channel.as_str(), &why).into();
            out.push((
                conn.shard,
                ShardMsg::Unsubscribed {
                    to: conn,
                    channel,
                    bytes,
                },
            ));
        }
    }

    /// A create's `wedding_context {event_date, time_zone}` (SPEC §1: it registers the
    /// wedding). Registered when nobody owns the wedding yet, or when the creator's
    /// organization does and the creator is its `admin`/`service` (or the facts are the
    /// registered ones). Facts named by another organization's create change nothing: the
    /// channel is created, the owner's facts stay.
    fn register_from_create(
        &self,
        claims: &Claims,
        wedding_id: &str,
        owner: Option<&str>,
        req: &CreateReq,
    ) -> Result<(), Refusal> {
        let Some(f) = &req.wedding_facts else {
            return Ok(());
        };
        let w =
            crate::weddings::Wedding::new(wedding_id, &claims.org, &f.event_date, &f.time_zone)?;
        match owner {
            Some(o) if o != claims.org => return Ok(()),
            Some(_) => {
                let same = self.weddings.get(wedding_id).is_some_and(|old| {
                    old.event_date == w.event_date && old.time_zone == w.time_zone
                });
                if same {
                    return Ok(());
                }
                if !claims.role.is_org_wide() {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "only the organization's admin or service changes a registered wedding's date or zone",
                    ));
                }
            }
            None => {}
        }
        let stored = self.weddings.upsert(w)?;
        if let Some(c) = &self.catalog {
            c.wedding_upserted(&stored);
        }
        Ok(())
    }

    fn on_subscribed(
        &mut self,
        out: &mut Out,
        to: ConnRef,
        channel: ChannelName,
        frames: Vec<Bytes>,
    ) {
        let owner = ringbearer_core::shard_for(channel.as_str(), self.shards) as u32;
        let Some(c) = self.conns.get(&to.conn).cloned().filter(|c| c.is_open()) else {
            // The connection ended while the owner was subscribing it: undo.
            out.push((
                owner,
                ShardMsg::Disconnect {
                    conn: to,
                    channels: vec![channel],
                },
            ));
            return;
        };
        if c.confirm(channel.as_str()) {
            self.local
                .entry(channel.as_str().to_owned())
                .or_default()
                .push(LocalSub { conn: c.clone() });
        }
        c.send_burst(frames);
    }

    fn on_deliver(&mut self, frame: &FrameBytes) {
        let Ok(f) = access_frame(frame) else {
            tracing::error!("dropping a corrupt frame between shards");
            return;
        };
        let Some(subs) = self.local.get(f.channel.as_str()) else {
            return;
        };
        // Serialize once per shard; every local subscriber shares these bytes.
        let mut buf = Vec::new();
        render_message_json(f, &mut buf);
        let bytes = Bytes::from(buf);
        let prio = f.priority();
        let h = channel_hash(f.channel.as_str());
        let target = f.target();
        let mut sent = 0;
        for s in subs {
            // The one visibility rule (ringbearer_core::identity::may_see), as on every
            // other route: a target is (org, sub).
            if target.is_some_and(|(org, sub)| !s.conn.is_user(org, sub)) {
                continue;
            }
            s.conn.send_message(prio, h, bytes.clone());
            sent += 1;
        }
        let ts_ms = f.ts_ms.to_native();
        crate::metrics::with(|m| {
            m.deliveries
                .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
            if sent > 0 {
                m.observe_latency_us(now_us().saturating_sub(ts_ms.saturating_mul(1000)));
            }
        });
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
                (
                    owner,
                    ShardMsg::Disconnect {
                        conn: conn.cref,
                        channels,
                    },
                )
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
mod tests {
    use super::*;
    use ringbearer_core::Tier;

    fn claims(sub: &str) -> Arc<Claims> {
        Arc::new(Claims {
            sub: sub.into(),
            org: "o".into(),
            role: Role::Couple,
            tier: Tier::Free,
            weddings: vec![],
            exp: u64::MAX,
            nbf: None,
        })
    }

    /// Regression: connection ids are per shard, so "everyone but the sender" must compare
    /// the shard too — connection 1 of shard 1 is not connection 1 of shard 0.
    #[test]
    fn broadcast_except_compares_shard_and_connection() {
        let cfg = Rc::new(IoConfig::default());
        let mut shard = Shard::new(1, 2, cfg.clone(), 0);
        let mine = ConnRef { shard: 1, conn: 1 };
        let conn = Rc::new(Conn::new(1, mine, claims("u"), &cfg, Arc::default()));
        shard.conns.insert(1, conn.clone());
        let ch = ChannelName::parse("venue:hall:v1").unwrap();
        let owner = ringbearer_core::shard_for(ch.as_str(), 2) as u32;
        let out = shard.handle(ShardMsg::Subscribed {
            to: mine,
            channel: ch.clone(),
            frames: vec![Bytes::from_static(b"{}")],
        });
        assert!(
            out.is_empty(),
            "subscribed locally, nothing to route (owner {owner})"
        );
        assert_eq!(conn.outbox.borrow().len(), 1);
        let other_shard_same_id = ConnRef { shard: 0, conn: 1 };
        shard.handle(ShardMsg::Broadcast {
            channel: ch.clone(),
            bytes: Bytes::from_static(b"{}"),
            except: vec![other_shard_same_id],
        });
        assert_eq!(conn.outbox.borrow().len(), 2, "not the sender: delivered");
        shard.handle(ShardMsg::Broadcast {
            channel: ch,
            bytes: Bytes::from_static(b"{}"),
            except: vec![mine],
        });
        assert_eq!(conn.outbox.borrow().len(), 2, "the sender itself: skipped");
    }

    /// Regression: a refused subscribe gives its reservation back (free tier: 3
    /// subscriptions per user; five refusals in a row must not use them up).
    #[test]
    fn refused_subscribes_give_their_reservation_back() {
        let cfg = Rc::new(IoConfig::default());
        let mut shard = Shard::new(0, 1, cfg.clone(), 0);
        let me = ConnRef { shard: 0, conn: 1 };
        let policy = Arc::new(crate::policy::Policy::default());
        let conn = Rc::new(Conn::new(1, me, claims("u"), &cfg, policy));
        shard.conns.insert(1, conn.clone());
        for i in 0..5 {
            let channel = ChannelName::parse(&format!("venue:hall:nope-{i}")).unwrap();
            assert!(conn.reserve(channel.as_str()).unwrap());
            let req = SubscribeReq {
                channel,
                last_seen_id: None,
                epoch: None,
                include_history: false,
            };
            let out = shard.handle(ShardMsg::Subscribe {
                from: me,
                r#ref: None,
                claims: claims("u"),
                req,
            });
            for (_, m) in out {
                shard.handle(m);
            }
        }
        assert_eq!(
            conn.outbox.borrow().len(),
            5,
            "five WS_CHANNEL_NOT_FOUND replies"
        );
        for i in 0..3 {
            assert!(
                conn.reserve(&format!("venue:hall:ok-{i}")).unwrap(),
                "reservation {i} available"
            );
        }
        assert_eq!(
            conn.reserve("venue:hall:ok-3").unwrap_err().code,
            ErrorCode::TierLimit
        );
    }
}

#[cfg(test)]
mod journal_tests {
    use super::*;
    use crate::journal::LocalBoxFuture;
    use ringbearer_core::protocol::{parse_request, Request};
    use ringbearer_core::Tier;
    use std::cell::Cell;

    /// A journal whose positions count appends; `durable` is never awaited here (the tests
    /// call `complete_pending` themselves, as the commit pump would).
    #[derive(Default)]
    struct CountingJournal {
        appended: Cell<u64>,
        refuse: Cell<bool>,
    }

    impl Journal for CountingJournal {
        fn append(&self, _: &str, _: u64, _: Entry<'_>) -> Result<u64, JournalError> {
            if self.refuse.get() {
                return Err(JournalError::Backpressure("test".into()));
            }
            self.appended.set(self.appended.get() + 1);
            Ok(self.appended.get())
        }
        fn durable(&self, _: u64) -> LocalBoxFuture<'_, Result<(), JournalError>> {
            Box::pin(async { Ok(()) })
        }
        fn segments(&self) -> usize {
            1
        }
        fn close(&self) -> LocalBoxFuture<'_, Result<(), JournalError>> {
            Box::pin(async { Ok(()) })
        }
        fn reclaim(
            &self,
            _: crate::journal::IsLive,
        ) -> LocalBoxFuture<'_, Result<usize, JournalError>> {
            Box::pin(async { Ok(0) })
        }
    }

    fn claims() -> Arc<Claims> {
        Arc::new(Claims {
            sub: "u".into(),
            org: "o".into(),
            role: Role::Coordinator,
            tier: Tier::Free,
            weddings: vec!["w".into()],
            exp: u64::MAX,
            nbf: None,
        })
    }

    const ME: ConnRef = ConnRef { shard: 0, conn: 1 };

    fn request(shard: &mut Shard, json: &str) -> Out {
        let env = parse_request(json, &shard.cfg.limits).unwrap();
        let msg = match env.req {
            Request::Create(req) => ShardMsg::Create {
                from: ME,
                r#ref: env.r#ref,
                claims: claims(),
                req,
            },
            Request::Publish(req) => ShardMsg::Publish {
                from: ME,
                r#ref: env.r#ref,
                claims: claims(),
                req,
            },
            Request::Subscribe(req) => ShardMsg::Subscribe {
                from: ME,
                r#ref: env.r#ref,
                claims: claims(),
                req,
            },
            other => panic!("not used here: {other:?}"),
        };
        shard.handle(msg)
    }

    /// The JSON replies in `out`, as text.
    fn replies(out: &Out) -> Vec<String> {
        out.iter()
            .filter_map(|(_, m)| match m {
                ShardMsg::Reply { bytes, .. } => Some(String::from_utf8(bytes.to_vec()).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn delivers(out: &Out) -> usize {
        out.iter()
            .filter(|(_, m)| matches!(m, ShardMsg::Deliver { .. }))
            .count()
    }

    fn shard_with_journal() -> (Shard, Rc<CountingJournal>) {
        let cfg = Rc::new(IoConfig::default());
        let mut shard = Shard::new(0, 1, cfg, 0);
        let j = Rc::new(CountingJournal::default());
        shard.journal = Some(j.clone());
        // A create is answered only once stored.
        let out = request(
            &mut shard,
            r#"{"op":"create","name":"wedding:main:w","wedding_id":"w"}"#,
        );
        assert!(out.is_empty());
        let (_, upto) = shard.pending_upto().unwrap();
        let r = replies(&shard.complete_pending(upto, Ok(())));
        assert!(r[0].contains(r#""op":"created""#), "{r:?}");
        let out = request(
            &mut shard,
            r#"{"op":"subscribe","channel":"wedding:main:w"}"#,
        );
        assert!(out
            .iter()
            .any(|(_, m)| matches!(m, ShardMsg::Subscribed { .. })));
        (shard, j)
    }

    #[test]
    fn a_channel_whose_creation_was_not_stored_never_existed() {
        let cfg = Rc::new(IoConfig::default());
        let mut shard = Shard::new(0, 1, cfg, 0);
        shard.journal = Some(Rc::new(CountingJournal::default()));
        request(
            &mut shard,
            r#"{"op":"create","ref":"c","name":"wedding:gone:w","wedding_id":"w"}"#,
        );
        let (_, upto) = shard.pending_upto().unwrap();
        let r = replies(&shard.complete_pending(upto, Err(JournalError::Failed("x".into()))));
        assert!(r[0].contains("WS_INTERNAL"), "{r:?}");
        assert_eq!(shard.owned_channels(), 0);
    }

    const PUBLISH: &str = r#"{"op":"publish","ref":"p","channel":"wedding:main:w","type":"general","payload":1,"idempotency_key":"k"}"#;

    #[test]
    fn nothing_is_answered_or_delivered_before_it_is_durable() {
        let (mut shard, _) = shard_with_journal();
        let out = request(&mut shard, PUBLISH);
        assert!(out.is_empty(), "no reply, no delivery yet");
        // An idempotent repeat of a message still being stored waits too.
        assert!(request(&mut shard, PUBLISH).is_empty());
        let (_, upto) = shard.pending_upto().unwrap();
        let out = shard.complete_pending(upto, Ok(()));
        assert_eq!(delivers(&out), 1, "delivered once");
        let r = replies(&out);
        assert_eq!(r.len(), 2);
        assert!(r[0].contains(r#""id":1,"delivered_count":1"#), "{}", r[0]);
        assert!(
            r[1].contains(r#""id":1,"delivered_count":0"#),
            "the repeat: {}",
            r[1]
        );
        assert!(shard.pending_upto().is_none());
    }

    #[test]
    fn a_failed_store_refuses_and_reuses_the_ids() {
        let (mut shard, j) = shard_with_journal();
        request(&mut shard, PUBLISH);
        request(
            &mut shard,
            r#"{"op":"publish","ref":"q","channel":"wedding:main:w","type":"general","payload":2}"#,
        );
        let (_, upto) = shard.pending_upto().unwrap();
        let out = shard.complete_pending(upto, Err(JournalError::Failed("disk on fire".into())));
        assert_eq!(delivers(&out), 0);
        let r = replies(&out);
        assert_eq!(r.len(), 2);
        assert!(
            r.iter()
                .all(|x| x.contains("WS_INTERNAL") && x.contains(r#""retryable":true"#)),
            "{r:?}"
        );
        // Backpressure at append: refused at once, nothing taken.
        j.refuse.set(true);
        let r = replies(&request(&mut shard, PUBLISH));
        assert!(r[0].contains("WS_OVERLOADED"), "{r:?}");
        j.refuse.set(false);
        // The next publish gets id 1 again: ids 1 and 2 were never stored, never seen.
        request(&mut shard, PUBLISH);
        let (_, upto) = shard.pending_upto().unwrap();
        let r = replies(&shard.complete_pending(upto, Ok(())));
        assert!(r[0].contains(r#""id":1"#), "{r:?}");
    }

    #[test]
    fn restore_continues_ids_and_idempotency_keys() {
        use crate::journal::{RestoredChannel, RestoredMessage};
        use ringbearer_core::channel_state::ChannelMeta;
        let cfg = Rc::new(IoConfig::default());
        let mut shard = Shard::new(0, 1, cfg, 0);
        let name = ChannelName::parse("wedding:main:w").unwrap();
        let meta = ChannelMeta {
            id: "ch_1".into(),
            name: name.clone(),
            access: ChannelAccess {
                org: "o".into(),
                wedding_id: Some("w".into()),
                kind: ringbearer_core::ChannelType::Shared,
                permissions: Permissions::default_for(ringbearer_core::ChannelType::Shared),
                creator: "u".into(),
                members: vec![],
            },
            max_subscribers: 100,
            retention_ms: 3_600_000,
            created_at_ms: now_ms(),
            epoch: "e".into(),
        };
        let frame = |id: u64, key: Option<&str>| RestoredMessage {
            id,
            ts_ms: now_ms(),
            frame: MessageFrame {
                id,
                ts_ms: now_ms(),
                channel: name.as_str().into(),
                msg_type: "general".into(),
                event: None,
                priority: 1,
                payload: "1".into(),
                sender_user_id: "u".into(),
                sender_org: "o".into(),
                sender_role: Role::Coordinator.code(),
                target_user_id: None,
                target_org: None,
                wedding_context: None,
                idempotency_key: key.map(Into::into),
            }
            .encode()
            .to_vec(),
        };
        shard.restore(
            vec![RestoredChannel {
                meta,
                last_id: 8,
                messages: vec![frame(7, None), frame(8, Some("cake"))],
                members: vec![(UserKey::new("o", "bob"), 7)],
            }],
            now_ms(),
        );
        let r = replies(&request(
            &mut shard,
            r#"{"op":"publish","channel":"wedding:main:w","type":"general","payload":2,"idempotency_key":"cake"}"#,
        ));
        assert!(
            r[0].contains(r#""id":8,"delivered_count":0"#),
            "the key survived: {r:?}"
        );
        let r = replies(&request(
            &mut shard,
            r#"{"op":"publish","channel":"wedding:main:w","type":"general","payload":3}"#,
        ));
        assert!(r[0].contains(r#""id":9"#), "ids continue: {r:?}");
        assert_eq!(
            shard.owned["wedding:main:w"].cursor(&UserKey::new("o", "bob")),
            Some(7)
        );
    }
}
