//! The owner shard's durability hooks (SPEC §2.5): where a published message — and a
//! created channel — is stored before anyone hears of it, and where subscriptions and
//! cursors are mirrored. `io` defines the traits; `server/` plugs in the write-ahead log and
//! the registry from `ringbearer-persist` (the two crates do not depend on each other). With
//! no journal (`memory` policy) everything is durable as soon as the owner has it.
//!
//! The contract the shard relies on: `append` assigns positions in call order and never
//! awaits; `durable(pos)` resolves once everything appended up to `pos` is stored, and many
//! waiters share one sync (group commit); after a failure every later call fails too (a
//! poisoned log is never retried).

use ringbearer_core::channel_state::ChannelMeta;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// Too much is waiting to be stored; retry later (`WS_OVERLOADED`).
    Backpressure(String),
    /// Storing failed (I/O error, full disk, poisoned log); nothing new is accepted
    /// (`WS_INTERNAL`, retryable: a repaired disk or another node may take it).
    Failed(String),
    /// The store cannot be reached now and will be again (cluster mode: NATS or JetStream
    /// unavailable); `WS_OVERLOADED` with `retry_after`.
    Unavailable {
        reason: String,
        retry_after_secs: u64,
    },
}

/// What a shard logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A channel's `ChannelCheckpoint` (metadata, last id, shared-state documents) as JSON:
    /// logged before the `created` reply, and again at every retention round, so a restart
    /// rebuilds every channel that was ever answered for even after older segments were
    /// reclaimed.
    Channel { meta_json: &'a [u8] },
    /// A published message: its rkyv `MessageFrame`.
    Message { id: u64, frame: &'a [u8] },
}

/// `is_live(channel, highest id of that channel in a segment, newest ts in the segment)`.
pub type IsLive = Box<dyn Fn(&str, u64, u64) -> bool>;

/// One shard's log. Not `Send`: it lives on its shard's executor.
pub trait Journal {
    /// Queues an entry for `channel`; returns the position to wait for.
    fn append(&self, channel: &str, ts_ms: u64, entry: Entry<'_>) -> Result<u64, JournalError>;
    /// Resolves once everything appended up to `pos` is stored under the policy.
    fn durable(&self, pos: u64) -> LocalBoxFuture<'_, Result<(), JournalError>>;
    /// Segment files on disk (retention runs only when there is more than one).
    fn segments(&self) -> usize;
    /// Writes and syncs everything appended (graceful shutdown, SPEC §5: under `batch`,
    /// acknowledged records may still be unsynced); later appends fail.
    fn close(&self) -> LocalBoxFuture<'_, Result<(), JournalError>>;
    /// Deletes whole segments, oldest first, while every record in them is dead:
    /// `is_live(channel, highest id of that channel in the segment, newest ts)` false for
    /// every channel in it. Returns the segments removed.
    fn reclaim(&self, is_live: IsLive) -> LocalBoxFuture<'_, Result<usize, JournalError>>;
}

/// A stored message, as recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredMessage {
    pub id: u64,
    pub ts_ms: u64,
    /// The rkyv `MessageFrame` bytes as logged.
    pub frame: Vec<u8>,
}

/// A channel as recovered: metadata, kept messages (ascending, contiguous ids) and members.
#[derive(Clone, Debug)]
pub struct RestoredChannel {
    pub meta: ChannelMeta,
    /// The last id from the newest checkpoint: numbering continues from here when every
    /// message of the channel was reclaimed.
    pub last_id: u64,
    pub messages: Vec<RestoredMessage>,
    /// `((org, user_id), cursor, role its last connection held)`.
    pub members: Vec<(ringbearer_core::UserKey, u64, Option<ringbearer_core::Role>)>,
    /// The channel's shared-state documents: the checkpoint's, with every stored change
    /// after it applied (docs/decisions.md §31).
    pub docs: std::collections::BTreeMap<String, ringbearer_core::state_doc::Doc>,
}

/// A shard's opened journal and the channels it owned before.
pub type Opened = (Rc<dyn Journal>, Vec<RestoredChannel>);

/// Opens each shard's journal on that shard's executor, with what the shard owned before.
pub trait JournalFactory: Send + Sync {
    fn open(&self, shard: u32) -> LocalBoxFuture<'static, Result<Opened, String>>;
}

/// Where channels, subscriptions and cursors are mirrored (the registry). Calls never
/// block and never fail the request: the implementation queues and batches them, and logs
/// (and counts) any write that fails. A cursor that lags after a crash only means a message
/// is sent again (SPEC §2.3, at-least-once).
///
/// Order: the implementation must apply the calls made from one thread in call order (the
/// registry has one FIFO queue). Every call about a channel comes from its owner shard, and
/// the owner calls `channel_created` when it logs the channel — before it can accept a
/// subscription to it — so a subscription or cursor is never written before its channel.
pub trait Catalog: Send + Sync {
    /// A channel was created (called when it is logged, before it is durable: if the log
    /// then fails, `channel_dropped` follows).
    fn channel_created(&self, meta: &ChannelMeta);
    /// A channel whose creation was never stored (the log failed): forget it and whatever
    /// was mirrored for it.
    fn channel_dropped(&self, _channel: &str) {}
    /// `role`: the role the subscribing connection holds (`None`: enrolled by a service;
    /// keep the one recorded).
    fn subscribed(
        &self,
        channel: &str,
        user: &ringbearer_core::UserKey,
        role: Option<ringbearer_core::Role>,
        cursor: u64,
    );
    fn unsubscribed(&self, channel: &str, user: &ringbearer_core::UserKey);
    fn acked(&self, channel: &str, user: &ringbearer_core::UserKey, cursor: u64);
    /// A wedding was registered or changed (`POST /api/websocket/weddings`, after
    /// `Shared::weddings.upsert` accepted it).
    fn wedding_upserted(&self, w: &crate::weddings::Wedding);
    /// Records an audit event (SPEC §5). Like the rest, queued and never failing the
    /// request; the default drops it (no registry).
    fn audit(&self, _event: AuditEvent) {}
    /// Queues a signed webhook to `event.org`'s configured URL (SPEC §2 parking, §3
    /// watchdog): stored first, then delivered at least once, surviving restarts. The
    /// default drops it (no registry).
    fn webhook(&self, _event: WebhookEvent) {}
    /// A member had not acknowledged a wedding-day `critical`/`emergency` message in time
    /// (issue 16 item 5): store the dead-letter entry once and, when it is new, send a
    /// `message_parked` webhook to the channel's organization. The default drops it.
    fn parked(&self, _event: ParkedEvent) {}
}

/// One dead-letter entry (issue 16 item 5, docs/decisions.md §32).
#[derive(Clone, Debug, PartialEq)]
pub struct ParkedEvent {
    pub channel: String,
    /// The channel's organization: it sees the entry and gets the webhook.
    pub channel_org: String,
    pub wedding_id: Option<String>,
    pub message_id: u64,
    /// The member who did not acknowledge it.
    pub member: ringbearer_core::UserKey,
    /// `critical` or `emergency`.
    pub priority: &'static str,
    pub msg_type: String,
    pub event: Option<String>,
    /// The message's payload (raw JSON), for the app's SMS or e-mail fallback.
    pub payload: String,
    pub published_ms: u64,
    pub parked_ms: u64,
}

/// One webhook to send (SPEC §2 parking, §3 watchdog): the organization it goes to, what
/// happened (`kind`) and the JSON body the receiver gets.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEvent {
    pub org: String,
    /// `message_parked`, `watchdog_absent`, `watchdog_back` or `battery_low`.
    pub kind: &'static str,
    pub at_ms: u64,
    /// The event's fields; the sender wraps it with `kind`, `org`, `at_ms` and an id.
    pub body: serde_json::Value,
}

/// One audit event (SPEC §5): who did what, to which channel, when.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub at_ms: u64,
    pub actor_user_id: String,
    pub actor_org: String,
    /// `create`, `subscribe`, `unsubscribe`, `denied`, `admin`, `unauthorized`, `emergency` or
    /// `token_refresh`.
    pub action: &'static str,
    pub channel: Option<String>,
    /// The organization owning `channel` (or the wedding a refused create named): it sees
    /// the record too, so the owner of a channel sees every refusal on it (SPEC §1).
    pub channel_org: Option<String>,
    pub detail: serde_json::Value,
}
