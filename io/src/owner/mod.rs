//! The channel owner: the state of the channels one shard owns (by `shard_for(name)`) and
//! every rule about them — access, limits, idempotency, the kept window and cursors,
//! presence, the durability queue — as a deterministic state machine, quinn-proto style.
//!
//! It does no I/O and reads no clock: time comes in as [`Now`], requests as typed
//! [`Request`]s, and each step returns [`Effects`] (typed replies, frames for subscribing
//! shards, registry records and audit events) that the host (`host/`) routes and applies.
//! The one thing it calls out to is the shard's [`Journal`] `append`, which queues a record
//! in memory and answers at once with a position or a refusal; the wait for durability is
//! the host's, whose answer comes back in as [`Owner::committed`].
//!
//! One function decides who sees a message — `ringbearer_core::identity::may_see`, applied
//! by `ChannelState` — and every route (live delivery, resume, history, REST, counts) goes
//! through it. One file per operation:
//!
//! | file | operations |
//! |---|---|
//! | `create.rs` | `create` (and a wedding registered by it) |
//! | `subscribe.rs` | `subscribe`, `unsubscribe`, token `recheck`, disconnect |
//! | `enroll.rs` | subscriptions without a connection: `enroll`, `withdraw` |
//! | `publish.rs` | `publish` |
//! | `member.rs` | `ack`, `presence`, `typing`, the presence flush |
//! | `read.rs` | `resolve`, a user's list, an organization's list, a channel's detail, the watchdog's round |
//! | `state.rs` | shared state: `state_get`, `state_set`, `state_patch` |
//! | `commit.rs` | the pending queue: stored first, then answered and delivered |
//! | `rebuild.rs` | channels rebuilt from log records after a restart |
//! | `audit.rs` | the audit events the owner writes |
//! | `park.rs` | parking unacknowledged wedding-day messages (issue 16 item 5) |

pub mod audit;
mod cluster;
mod commit;
mod create;
pub mod effects;
mod enroll;
mod member;
mod park;
mod publish;
mod read;
pub mod rebuild;
mod state;
#[cfg(test)]
mod state_tests;
mod subscribe;
#[cfg(test)]
mod tests;

pub use commit::RetentionRound;
pub use create::{channel_id, shard_of_channel_id};
pub use effects::{
    Caller, ChannelDetail, ChannelEvent, ChannelSummary, Effect, Effects, Published, Recipients,
    Record, Reply, StateOk, StateView, SubscriberView, Tally,
};

use crate::journal::{Journal, RestoredChannel};
use crate::policy::Policy;
use crate::weddings::Weddings;
use crate::IoConfig;
use commit::Commit;
use hashbrown::{HashMap, HashSet};
use ringbearer_core::channel_state::{ChannelState, ConnRef};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::identity::{idempotency_scope, Target};
use ringbearer_core::message::{access_frame, upgrade_frame, FrameBytes};
use ringbearer_core::protocol::{CreateReq, PublishReq, StateWriteReq, SubscribeReq};
use ringbearer_core::{ChannelName, Claims, UserKey};
use std::rc::Rc;
use std::sync::Arc;

/// Most messages in the admin page's `recent_messages` of one channel.
pub const INSPECT_RECENT_MAX: usize = 50;

/// The time of one step: the wall clock (ids, timestamps, rates, the kept window) and the
/// calendar clock (which day it is for wedding-day rules; `[clock] start` may shift it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub ms: u64,
    pub calendar_ms: u64,
}

impl Now {
    /// Both clocks at `ms` (tests, and servers whose calendar is not shifted).
    pub fn at(ms: u64) -> Now {
        Now {
            ms,
            calendar_ms: ms,
        }
    }
}

/// One request to the owner: who asks (and where the answer goes), the request's `ref`,
/// the caller's verified claims and the operation.
#[derive(Clone, Debug)]
pub struct Request {
    pub from: Caller,
    pub r#ref: Option<String>,
    pub claims: Arc<Claims>,
    pub op: Op,
}

/// The owner's operations, for every door.
#[derive(Clone, Debug)]
pub enum Op {
    Create(CreateReq),
    /// Subscribes the connection `from`.
    Subscribe(SubscribeReq),
    /// Ends the connection `from`'s subscription.
    Unsubscribe(ChannelName),
    /// `recipients`: answer who the message went to as well.
    Publish {
        req: PublishReq,
        recipients: bool,
    },
    Ack {
        channel: ChannelName,
        id: u64,
    },
    /// `meta` is JSON, validated by the door.
    Presence {
        channel: ChannelName,
        meta: String,
    },
    Typing {
        channel: ChannelName,
    },
    /// The connection's token was refreshed to `claims`: end its subscriptions on these
    /// channels that the new claims no longer reach (an `Unsubscribed` with the reason).
    Recheck {
        channels: Vec<ChannelName>,
    },
    /// Subscribes `user` (of the caller's organization) without a connection.
    Enroll {
        user: String,
        req: SubscribeReq,
    },
    /// Ends `user`'s subscription (of the caller's organization).
    Withdraw {
        user: String,
        channel: ChannelName,
    },
    /// Which channel has this `channel_id`?
    Resolve {
        id: String,
    },
    /// The channels `user` (of the caller's organization) is subscribed to on this shard
    /// that the caller may read.
    ListFor {
        user: String,
    },
    /// The admin view of one channel: `subscribers[offset..offset + limit]`.
    Inspect {
        channel: ChannelName,
        offset: usize,
        limit: usize,
    },
    /// The caller organization's channels on this shard: the first `take` by name.
    ListOrg {
        take: usize,
    },
    /// A shared-state document as stored.
    StateGet {
        channel: ChannelName,
        doc: String,
    },
    /// A shared-state write (compare-and-set on a version).
    StateWrite(StateWriteReq),
    /// The presence watchdog's round: who is present on these weddings' channels
    /// (`(wedding_id, owning organization)`); the server's service identity only.
    Watch {
        weddings: Vec<(String, String)>,
    },
}

/// The channels one shard owns.
pub struct Owner {
    /// This shard.
    pub id: u32,
    pub shards: usize,
    cfg: Rc<IoConfig>,
    /// Distinguishes this server's life in channel ids and epochs.
    boot: u64,
    channels: HashMap<String, ChannelState<Arc<FrameBytes>>>,
    next_channel: u64,
    /// Channels whose creation is logged but not yet stored.
    creating: HashSet<String>,
    /// Owned channels whose presence changed since the last flush (SPEC §3: announced as
    /// one coalesced diff per channel per `presence_flush_interval_ms`).
    presence_dirty: HashSet<String>,
    commit: Commit,
    /// Tier accounting shared by every shard (channels per organization, rates).
    policy: Arc<Policy>,
    /// Registered weddings, shared by every shard (SPEC §1 wedding day).
    weddings: Weddings,
    /// Each channel's shared-state documents (`state.rs`), by channel name.
    docs: HashMap<String, state::ChannelDocs>,
    /// Parking: per channel, the last message id the sweep has looked at (`park.rs`).
    parked_upto: HashMap<String, u64>,
    /// Cluster mode (`cluster.rs`): the bridge's link; `None` on a single node.
    cluster: Option<Arc<crate::cluster::Link>>,
    /// The last token given to a publish handed to the bridge.
    cluster_next: u64,
    /// Publishes handed to the bridge, by token, until acknowledged.
    cluster_waiting: HashMap<u64, cluster::ClusterWait>,
    /// Acknowledged publishes whose message this node has not applied yet.
    cluster_by_id: HashMap<(String, u64), cluster::ClusterWait>,
}

fn not_found(name: &ChannelName) -> Refusal {
    Refusal::new(
        ErrorCode::ChannelNotFound,
        format!("channel {name} does not exist"),
    )
}

fn not_subscribed() -> Refusal {
    Refusal::new(
        ErrorCode::SubscriptionFailed,
        "not subscribed to this channel",
    )
}

impl Owner {
    /// An owner with no channels. `journal` `None` is the `memory` policy: durable as soon
    /// as the owner has it.
    pub fn new(
        id: u32,
        shards: usize,
        cfg: Rc<IoConfig>,
        boot: u64,
        journal: Option<Rc<dyn Journal>>,
        policy: Arc<Policy>,
        weddings: Weddings,
    ) -> Owner {
        Owner {
            id,
            shards,
            cfg,
            boot,
            channels: HashMap::new(),
            next_channel: 1,
            creating: HashSet::new(),
            presence_dirty: HashSet::new(),
            commit: Commit::new(journal),
            policy,
            weddings,
            docs: HashMap::new(),
            parked_upto: HashMap::new(),
            cluster: None,
            cluster_next: 0,
            cluster_waiting: HashMap::new(),
            cluster_by_id: HashMap::new(),
        }
    }

    /// Cluster mode: publishes go through `link`'s bridge (`cluster.rs`).
    pub fn set_cluster(&mut self, link: Arc<crate::cluster::Link>) {
        self.cluster = Some(link);
    }

    pub fn journal(&self) -> Option<Rc<dyn Journal>> {
        self.commit.journal()
    }

    pub fn owned_channels(&self) -> usize {
        self.channels.len()
    }

    /// One step: handles `req` at `now`.
    pub fn handle(&mut self, now: Now, req: Request) -> Effects {
        let mut fx = Effects::default();
        let Request {
            from,
            r#ref,
            claims,
            op,
        } = req;
        let r = r#ref.as_deref();
        match op {
            Op::Create(req) => self.create(&mut fx, now, from, r, &claims, req),
            Op::Subscribe(req) => self.subscribe(&mut fx, now, from, r, &claims, req),
            Op::Unsubscribe(channel) => self.unsubscribe(&mut fx, now, from, r, &channel),
            Op::Publish { req, recipients } => {
                self.publish(&mut fx, now, from, r, &claims, req, recipients)
            }
            Op::Ack { channel, id } => self.ack(&mut fx, from, r, &claims, &channel, id),
            Op::Presence { channel, meta } => self.presence(&mut fx, from, r, &channel, meta),
            Op::Typing { channel } => self.typing(&mut fx, from, r, &claims, &channel),
            Op::Recheck { channels } => self.recheck(&mut fx, now, from, &claims, channels),
            Op::Enroll { user, req } => {
                let user = UserKey::new(claims.org.clone(), user);
                self.enroll(&mut fx, now, from, r, &claims, &user, req)
            }
            Op::Withdraw { user, channel } => {
                let user = UserKey::new(claims.org.clone(), user);
                self.withdraw(&mut fx, now, from, r, &claims, &user, &channel)
            }
            Op::Resolve { id } => self.resolve(&mut fx, from, r, &id),
            Op::ListFor { user } => {
                let user = UserKey::new(claims.org.clone(), user);
                self.list_for(&mut fx, from, r, &claims, &user)
            }
            Op::Inspect {
                channel,
                offset,
                limit,
            } => self.inspect(&mut fx, now, from, r, &claims, &channel, offset, limit),
            Op::ListOrg { take } => self.list_org(&mut fx, from, r, &claims, take),
            Op::StateGet { channel, doc } => {
                self.state_get(&mut fx, now, from, r, &claims, &channel, &doc)
            }
            Op::StateWrite(req) => self.state_write(&mut fx, now, from, r, &claims, req),
            Op::Watch { weddings } => self.watch(&mut fx, from, r, &claims, &weddings),
        }
        fx
    }

    /// A connection ended: its subscriptions to these channels go offline (the users'
    /// subscriptions and cursors stay, SPEC §2.2).
    pub fn disconnect(&mut self, conn: ConnRef, channels: &[ChannelName]) -> Effects {
        for channel in channels {
            let Some(ch) = self.channels.get_mut(channel.as_str()) else {
                continue;
            };
            if ch.disconnect(conn) {
                mark_presence(&mut self.presence_dirty, ch);
            }
        }
        Effects::default()
    }

    /// Cluster mode (docs/cluster.md): a channel another node created, as its checkpoint
    /// came through the cluster's key-value bucket. Known here already (ours, or being
    /// created here): left as it is, `None`. Otherwise it is set up as a restored channel
    /// with no messages and no members, so the same access rules apply on every node, and
    /// mirrored to the registry (its subscriptions and cursors are kept there as for any).
    pub fn adopt(
        &mut self,
        cp: ringbearer_core::channel_state::ChannelCheckpoint,
        now: Now,
    ) -> Option<Effects> {
        let name = cp.meta.name.as_str();
        if self.channels.contains_key(name)
            || self.creating.contains(name)
            || ringbearer_core::shard_for(name, self.shards) as u32 != self.id
        {
            return None;
        }
        let mut fx = Effects::default();
        fx.record(Record::ChannelCreated(Box::new(cp.meta.clone())));
        self.restore(
            vec![RestoredChannel {
                meta: cp.meta,
                last_id: 0,
                messages: Vec::new(),
                members: Vec::new(),
                docs: Default::default(),
            }],
            now,
        );
        Some(fx)
    }

    /// Rebuilds the channels this shard owned before a restart (before it serves anyone).
    pub fn restore(&mut self, channels: Vec<RestoredChannel>, now: Now) {
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
            // Frames logged by an older version are read in the current one (no role
            // target); an unreadable frame stays as it is and is never rendered.
            let messages: Vec<(u64, u64, Arc<FrameBytes>, Target)> = rc
                .messages
                .into_iter()
                .map(|m| {
                    let f = upgrade_frame(&m.frame).unwrap_or_else(|| {
                        let mut f = FrameBytes::with_capacity(m.frame.len());
                        f.extend_from_slice(&m.frame);
                        f
                    });
                    let target = access_frame(&f).map(|a| a.target_of()).unwrap_or_default();
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
                    let (org, sub) = (a.sender_org.as_str(), a.sender_user_id.as_str());
                    Some((idempotency_scope(org, sub, k.as_str()), *id, *ts))
                })
                .collect();
            let mut st = ChannelState::restore(
                rc.meta,
                rc.last_id,
                &limits,
                self.shards,
                messages,
                rc.members,
                now.ms,
            );
            for (k, id, ts) in keys {
                st.remember_idempotency(&k, id, ts, now.ms);
            }
            if !rc.docs.is_empty() {
                self.docs
                    .insert(name.clone(), state::ChannelDocs::stored(rc.docs));
            }
            self.channels.insert(name, st);
        }
    }
}

/// Notes that `ch`'s presence has changes to announce at the next flush.
fn mark_presence<F: Clone>(dirty: &mut HashSet<String>, ch: &ChannelState<F>) {
    let name = ch.meta.name.as_str();
    if ch.presence_changed() && !dirty.contains(name) {
        dirty.insert(name.to_owned());
    }
}

/// The access rule (`ringbearer_core::access::check`) for `claims` doing `action` on `ch`;
/// a refusal is audited where the channel's organization sees it.
fn check_access<F: Clone>(
    fx: &mut Effects,
    now: Now,
    ch: &ChannelState<F>,
    claims: &Claims,
    action: ringbearer_core::access::Action,
    op: &str,
) -> Result<(), Refusal> {
    ringbearer_core::access::check(&ch.meta.access, claims, action).inspect_err(|e| {
        let org = ch.meta.access.org.as_str();
        deny(fx, now, claims, op, ch.meta.name.as_str(), Some(org), e);
    })
}

/// Audits `e` if it is a refusal of the access rule (see `audit::denied`).
fn deny(
    fx: &mut Effects,
    now: Now,
    claims: &Claims,
    op: &str,
    channel: &str,
    owner: Option<&str>,
    e: &Refusal,
) {
    if let Some(a) = audit::denied(now.ms, claims, op, channel, owner, e) {
        fx.audit(a);
    }
}
