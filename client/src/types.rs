//! The public data of the client: what requests take ([`CreateChannel`], [`SubscribeOptions`],
//! [`Publish`]), what replies give ([`Created`], [`Subscribed`], [`Published`]), what the
//! server pushes ([`Message`], [`PresenceEntry`]) and the [`Event`]s an app reads.
//!
//! Field names follow docs/protocol.md. This module does no I/O and no encoding; `wire.rs`
//! turns these into frames and back.

use crate::error::{DisconnectReason, Error};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A message's priority (SPEC §2.6). Under back-pressure the server drains `emergency`
/// first, then `critical`, `high`, `normal`, `low`; ids are in order within one priority
/// class. Only a channel's admin roles may send `emergency`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
    Emergency,
}

impl Priority {
    /// How many priority classes there are.
    pub(crate) const CLASSES: usize = 5;

    /// 0 for `low` … 4 for `emergency`.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// `wedding_context` of a publish (SPEC §2). Its `wedding_id` must be the channel's wedding,
/// else the server answers `WS_INVALID_WEDDING_CONTEXT`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeddingContext {
    pub wedding_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_immediate_action: Option<bool>,
}

/// The `create` request. Only `name` is required; `None`/empty fields are left out of the
/// frame so the server applies its defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CreateChannel {
    /// `{scope}:{entity}:{id}`, e.g. `wedding:main:w-12345`.
    pub name: String,
    /// `private`, `shared` (the server's default) or `broadcast`.
    pub channel_type: Option<String>,
    pub wedding_id: Option<String>,
    /// `{read, write, admin}` role lists; default from the type.
    pub permissions: Option<Value>,
    /// User ids, for `private` channels.
    pub members: Vec<String>,
    pub max_subscribers: Option<u32>,
    pub message_retention_hours: Option<u32>,
}

impl CreateChannel {
    /// A `create` with only the name set.
    pub fn new(name: impl Into<String>) -> Self {
        CreateChannel {
            name: name.into(),
            ..CreateChannel::default()
        }
    }
}

/// The `created` reply. Creating an existing name returns the existing channel.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Created {
    pub channel_id: String,
    pub channel_name: String,
    /// RFC 3339, e.g. `2026-11-22T10:00:00.000Z`.
    pub created_at: String,
}

/// Options of [`crate::Client::subscribe`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// The last `id` the app saw on this channel (e.g. from its own storage). When `None`
    /// and this client has seen the channel before, the client's own highest id is sent.
    pub last_seen_id: Option<u64>,
    /// With no position, ask for the kept window.
    pub include_history: bool,
}

/// The `subscribed` reply, as the server sent it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Subscribed {
    pub channel: String,
    /// Identifies this life of the channel; the client sends it back on resubscribe.
    #[serde(deserialize_with = "crate::wire::de_epoch")]
    pub epoch: String,
    /// `false` when the resume position fell out of the kept window (or the epoch changed):
    /// `messages` is then everything kept, and the app should reload its state.
    pub recovered: bool,
    /// Every message of the reply, in `id` order, duplicates included. The new ones (after
    /// de-duplication) are ALSO emitted as [`Event::Message`] before this reply returns; an
    /// app that consumes [`crate::Events`] should not process these a second time.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Who is on the channel now: the first `presence_list_max` connections in join
    /// order (see docs/protocol.md, Presence), this one included.
    #[serde(default)]
    pub presence: Vec<PresenceEntry>,
    /// How many connections are present (more than `presence.len()` when it was cut).
    #[serde(default)]
    pub presence_total: usize,
}

/// The `publish` request.
#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub channel: String,
    /// `type`: `general`, `form_response`, `journey_update`, `timeline_change`, `payment`,
    /// `urgent`, or an app-defined word `[a-z0-9_]{1,32}`.
    pub msg_type: String,
    /// Free-form, ≤ 128 bytes, e.g. `timeline:cake_cutting:moved`.
    pub event: Option<String>,
    /// Always sent; default `normal`.
    pub priority: Priority,
    /// Any JSON value, at most the server's `max_payload_bytes` (64 KiB default) as sent.
    pub payload: Value,
    /// Deliver only to this user's connections.
    pub target_user_id: Option<String>,
    /// Deliver only to subscribers holding one of these roles (never with
    /// `target_user_id`); empty: everyone, or what the organization's routing table
    /// gives the type.
    pub target_roles: Vec<String>,
    /// Repeating a key on the same channel within 10 minutes returns the first `id`.
    pub idempotency_key: Option<String>,
    pub wedding_context: Option<WeddingContext>,
}

impl Publish {
    /// A `normal` publish with only the required fields.
    pub fn new(channel: impl Into<String>, msg_type: impl Into<String>, payload: Value) -> Self {
        Publish {
            channel: channel.into(),
            msg_type: msg_type.into(),
            event: None,
            priority: Priority::Normal,
            payload,
            target_user_id: None,
            target_roles: Vec::new(),
            idempotency_key: None,
            wedding_context: None,
        }
    }
}

/// The `published` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Published {
    /// The message's id on the channel (the first one's, for a repeated idempotency key).
    pub id: u64,
    /// Connections it was sent to at once (the publisher's own included).
    pub delivered_count: u64,
    /// Subscribed users who were offline and will get it on resubscribe.
    pub queued_count: u64,
}

/// Who published a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderInfo {
    pub user_id: String,
    pub role: String,
}

/// A delivered message (the `message` op; also the items of `subscribed.messages`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub channel: String,
    /// Per channel, strictly increasing.
    pub id: u64,
    #[serde(rename = "type")]
    pub msg_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    pub payload: Value,
    pub sender: SenderInfo,
    /// Milliseconds since the Unix epoch, server clock at publish.
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_user_id: Option<String>,
    /// The roles it was for (empty: not targeted at roles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_roles: Vec<String>,
    /// As the publisher sent it (see [`WeddingContext`]); kept as JSON so a publisher's
    /// extra or differently typed field never makes a message unreadable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wedding_context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// One connection's presence on a channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub user_id: String,
    pub connection_id: String,
    pub role: String,
    /// The JSON object set with `presence`; `{}` right after subscribing.
    #[serde(default)]
    pub meta: Value,
}

/// What the client tells the app, in order, through [`crate::Events`].
///
/// Order guarantees: per channel, `Message`s come in the order the server sent them, never
/// twice (de-duplicated by id). After a lost connection: `Disconnected`, zero or more
/// `ReconnectFailed`, `Reconnected`, then per remembered channel either `Resubscribed`
/// followed by that channel's recovered messages, or `ResubscribeFailed`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A message, live or recovered, not seen before on this client.
    Message(Message),
    /// Presence changed on a channel: remove `leaves`, then add `joins`, keyed by
    /// `connection_id` (an update is a leave of the old entry and a join of the new one).
    /// The server coalesces changes, so one diff may carry many; `total` is the count of
    /// connections present after it.
    PresenceDiff {
        channel: String,
        joins: Vec<PresenceEntry>,
        leaves: Vec<PresenceEntry>,
        total: usize,
    },
    /// The channel's presence list replaced whole (sent instead of a diff that would have
    /// been longer than the server's `presence_list_max`), with the total count.
    PresenceState {
        channel: String,
        presence: Vec<PresenceEntry>,
        total: usize,
    },
    /// Another user's stale write outranked this user's version `your_version` of a
    /// shared-state document (docs/protocol.md "Shared state"); the document is now at
    /// `version`, written by `by`.
    StateOverridden {
        channel: String,
        doc: String,
        version: u64,
        your_version: u64,
        by: crate::state::StateWriter,
    },
    /// Someone else on the channel is typing.
    Typing {
        channel: String,
        user_id: String,
        role: String,
    },
    /// The connection was lost (not after [`crate::Client::close`]). Requests in flight
    /// failed with [`Error::Disconnected`]; new ones fail with [`Error::NotConnected`]
    /// until `Reconnected`.
    Disconnected { reason: DisconnectReason },
    /// Reconnect attempt `attempt` (1 = the first after the disconnection), to the server
    /// `url`, failed; the client keeps trying, the next server of its list first (see
    /// [`crate::ClientConfig::failover_urls`]). An [`Error::Unauthorized`] here usually
    /// means the token expired: give the client a [`crate::TokenSource::Dynamic`] or close it.
    ReconnectFailed {
        attempt: u32,
        url: String,
        error: Error,
    },
    /// A new connection is open (to [`crate::Client::server_url`], which may be another
    /// server than before). Resubscription of every remembered channel is under way.
    Reconnected,
    /// A remembered channel was subscribed again after a reconnect. Its recovered messages
    /// follow as `Message` events. `recovered: false` means some were dropped from the kept
    /// window (or the channel's epoch changed): reload state.
    Resubscribed { channel: String, recovered: bool },
    /// A remembered channel could not be subscribed again; the client forgets it.
    ResubscribeFailed { channel: String, error: Error },
}
