//! What the owner hands back: typed replies to a caller, frames and events for subscribing
//! shards, registry records, audit events and counters. Nothing here is JSON: each door
//! renders the replies in its own shape (`conn/render.rs` for `/ws`, `server/src/rest/` for
//! REST), and the host applies the rest (`host/`).

use crate::journal::AuditEvent;
use crate::weddings::Wedding;
use ringbearer_core::channel_state::{ChannelMeta, ConnRef};
use ringbearer_core::error::Refusal;
use ringbearer_core::message::FrameBytes;
use ringbearer_core::presence::{PresenceDiff, PresenceEntry};
use ringbearer_core::state_doc::{Overrode, Writer};
use ringbearer_core::{ChannelName, Role, UserKey};
use std::sync::Arc;

/// Where an answer goes: a connection, or a REST call waiting on a shard (the host tells
/// them apart; the owner never does).
pub type Caller = ConnRef;

/// A typed answer to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Done, nothing to say (ack, presence, typing with a `ref`).
    Ok,
    Error(Refusal),
    Created {
        channel_id: String,
        name: ChannelName,
        created_at_ms: u64,
    },
    /// A connection's subscription is in place: what it missed (visible to it, oldest
    /// first) and the channel's presence.
    Subscribed {
        channel: ChannelName,
        epoch: String,
        recovered: bool,
        messages: Vec<Arc<FrameBytes>>,
        presence: Vec<PresenceEntry>,
        presence_total: usize,
        /// The channel's organization: a door that keys presence by user shows users of
        /// other organizations as `org/user_id`, never merged with a same-id user.
        org: String,
    },
    /// A connection's subscribe was refused: the connection gives its reservation back.
    SubscribeRefused {
        channel: ChannelName,
        error: Refusal,
    },
    /// A connection's subscription ended: asked for (`why` none) or because a refreshed
    /// token no longer reaches the channel.
    Unsubscribed {
        channel: ChannelName,
        why: Option<Refusal>,
    },
    Published(Published),
    /// A subscription without a connection (REST).
    Enrolled {
        channel: ChannelName,
        channel_id: String,
        epoch: String,
        wedding_id: Option<String>,
        new: bool,
        cursor: u64,
        recovered: bool,
        messages: Vec<Arc<FrameBytes>>,
    },
    Withdrawn {
        channel: ChannelName,
        removed: bool,
    },
    Resolved {
        channel: ChannelName,
    },
    /// A user's channels on one shard, each with its unread count.
    Subscriptions(Vec<ChannelSummary>),
    /// An organization's channels on one shard: the first `take` by name, and how many.
    OrgChannels {
        channels: Vec<ChannelSummary>,
        total: usize,
    },
    Detail(Box<ChannelDetail>),
    /// A shared-state document as stored (`state_get`).
    State(Box<StateView>),
    /// A shared-state write is stored (and delivered as message `id`).
    StateOk(Box<StateOk>),
    /// A shared-state write was refused: it was based on `yours`, and the document is now
    /// as `current` shows (the client re-bases on `current.version` and retries).
    StateConflict {
        current: Box<StateView>,
        yours: u64,
    },
    /// Unasked, to each connection of a writer a stale write outranked: its version
    /// `yours` of the document was replaced by `by`'s version `version`.
    StateOverridden {
        channel: ChannelName,
        doc: String,
        version: u64,
        yours: u64,
        by: Writer,
    },
    /// What this shard saw of the watched weddings (`Op::Watch`).
    Watched(Box<crate::watchdog::Sightings>),
}

/// A shared-state document (version 0 and no value or writer: never written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateView {
    pub channel: ChannelName,
    pub doc: String,
    pub version: u64,
    pub value: Option<serde_json::Map<String, serde_json::Value>>,
    pub writer: Option<Writer>,
}

/// A stored shared-state write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateOk {
    pub channel: ChannelName,
    pub doc: String,
    pub version: u64,
    /// The id of the `state` message that carries the change.
    pub id: u64,
    pub overrode: Option<Overrode>,
}

/// A stored message's answer (SPEC §2.5: sent once it is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub channel: ChannelName,
    pub id: u64,
    pub delivered: usize,
    pub queued: usize,
    /// Who it went to, when the request asked (`Op::Publish::recipients`).
    pub recipients: Option<Recipients>,
}

/// Who a stored message went to (SPEC §4 `delivery_guarantees`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipients {
    /// The channel's organization (a door shows its users by id alone).
    pub channel_org: String,
    /// Subscribers online now, who got it at once.
    pub online: Vec<UserKey>,
    /// Subscribers offline, who get it on resume.
    pub queued: Vec<UserKey>,
}

/// One channel in a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSummary {
    pub name: ChannelName,
    pub kind: &'static str,
    pub wedding_id: Option<String>,
    pub active_users: usize,
    pub members: usize,
    pub last_activity_ms: u64,
    /// For the subscriber the list is about (`Op::ListFor`).
    pub unread: Option<u64>,
}

/// One subscriber in a channel's detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberView {
    pub user: UserKey,
    pub online_connections: u32,
    pub cursor: u64,
    pub unread: u64,
}

/// The admin page's view of one channel.
#[derive(Clone, Debug)]
pub struct ChannelDetail {
    pub name: ChannelName,
    pub channel_id: String,
    pub kind: &'static str,
    pub wedding_id: Option<String>,
    pub created_at_ms: u64,
    pub last_id: u64,
    pub durable_id: u64,
    pub last_activity_ms: u64,
    pub members: usize,
    pub active_users: usize,
    pub online_connections: usize,
    pub offset: usize,
    pub limit: usize,
    pub subscribers: Vec<SubscriberView>,
    pub presence: Vec<PresenceEntry>,
    pub presence_total: usize,
    /// Newest last, visible to the viewer.
    pub recent: Vec<Arc<FrameBytes>>,
}

/// Something every subscriber of a channel on a shard hears that is not a stored message.
#[derive(Debug)]
pub enum ChannelEvent {
    /// `org` is the channel's organization (see `Reply::Subscribed`).
    PresenceDiff {
        diff: PresenceDiff,
        org: String,
    },
    /// The window itself (a diff would have been too long).
    PresenceState {
        entries: Vec<PresenceEntry>,
        total: usize,
        org: String,
    },
    Typing {
        user: UserKey,
        role: Role,
    },
}

/// A registry write (`journal::Catalog`), applied in this order.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    ChannelCreated(Box<ChannelMeta>),
    ChannelDropped(ChannelName),
    /// `role`: the role of the connection that subscribed (`None`: enrolled by a service).
    Subscribed {
        channel: ChannelName,
        user: UserKey,
        cursor: u64,
        role: Option<ringbearer_core::Role>,
    },
    Unsubscribed {
        channel: ChannelName,
        user: UserKey,
    },
    Acked {
        channel: ChannelName,
        user: UserKey,
        cursor: u64,
    },
    WeddingUpserted(Box<Wedding>),
    Audit(Box<AuditEvent>),
    /// A member did not acknowledge a wedding-day message in time (`park.rs`).
    Parked(Box<crate::journal::ParkedEvent>),
}

/// One effect of a step of the owner, in the order it must happen.
#[derive(Debug)]
pub enum Effect {
    Reply {
        to: Caller,
        r#ref: Option<String>,
        reply: Reply,
    },
    /// A stored message for `shard`'s subscribers (one frame per shard, not per subscriber).
    Deliver {
        shard: u32,
        frame: Arc<FrameBytes>,
    },
    /// An event for `shard`'s subscribers of `channel`, except `except` (its own
    /// connections among those that must not hear it).
    Event {
        shard: u32,
        channel: ChannelName,
        event: Arc<ChannelEvent>,
        except: Vec<ConnRef>,
    },
    Record(Record),
}

/// Counter changes the host adds to its metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Messages stored and announced.
    pub published: u64,
    /// Journal failures (a store that refused a write or sync).
    pub storage_failures: u64,
}

/// Everything one step produced.
#[derive(Debug, Default)]
pub struct Effects {
    pub list: Vec<Effect>,
    pub tally: Tally,
    /// The commit pipeline has something new to wait for.
    pub wake_commit: bool,
}

impl Effects {
    pub fn reply(&mut self, to: Caller, r#ref: Option<&str>, reply: Reply) {
        self.list.push(Effect::Reply {
            to,
            r#ref: r#ref.map(str::to_owned),
            reply,
        });
    }

    pub fn refuse(&mut self, to: Caller, r#ref: Option<&str>, e: Refusal) {
        self.reply(to, r#ref, Reply::Error(e));
    }

    pub fn record(&mut self, r: Record) {
        self.list.push(Effect::Record(r));
    }

    pub fn audit(&mut self, e: AuditEvent) {
        self.record(Record::Audit(Box::new(e)));
    }

    /// `event` for every shard in `shards`, except connections in `except`.
    pub fn event(
        &mut self,
        shards: Vec<u32>,
        channel: &ChannelName,
        event: ChannelEvent,
        except: &[ConnRef],
    ) {
        let event = Arc::new(event);
        for s in shards {
            self.list.push(Effect::Event {
                shard: s,
                channel: channel.clone(),
                event: event.clone(),
                // Each shard needs only its own connections.
                except: except.iter().copied().filter(|c| c.shard == s).collect(),
            });
        }
    }

    /// Replies in this step, for tests.
    pub fn replies(&self) -> impl Iterator<Item = (&Caller, &Reply)> {
        self.list.iter().filter_map(|e| match e {
            Effect::Reply { to, reply, .. } => Some((to, reply)),
            _ => None,
        })
    }
}
