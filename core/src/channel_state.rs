//! One channel as its owner shard holds it: metadata, the kept window, its subscribers
//! (a subscription belongs to a user and outlives the connection, SPEC §2.2), their cursors,
//! presence and remembered idempotency keys. Plain data: the owner shard calls these methods
//! and routes what they return; nothing here does I/O or reads the clock.

use crate::access::{ChannelAccess, Role};
use crate::channel::ChannelName;
use crate::error::{ErrorCode, Refusal};
use crate::identity::{Target, UserKey};
use crate::limits::Limits;
use crate::presence::{Presence, PresenceDiff, PresenceEntry};
use crate::window::Window;
use hashbrown::HashMap;
use std::collections::VecDeque;

/// A connection, server-wide: the shard it lives on and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnRef {
    pub shard: u32,
    pub conn: u64,
}

impl ConnRef {
    /// The `connection_id` clients see in presence.
    pub fn public_id(self) -> String {
        format!("c-{}-{}", self.shard, self.conn)
    }
}

/// A channel's metadata: what its owner logs when it is created (as JSON) and rebuilds it
/// from after a restart.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelMeta {
    pub id: String,
    pub name: ChannelName,
    pub access: ChannelAccess,
    pub max_subscribers: usize,
    pub retention_ms: u64,
    pub created_at_ms: u64,
    /// Changes whenever the channel's ids restart (a new life of the channel).
    pub epoch: String,
}

/// What a shard logs about a channel: its metadata and the last id it had assigned. Logged
/// at creation (`last_id` 0) and again at every retention round, so the log alone can
/// rebuild the channel — numbering included — after older segments were reclaimed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelCheckpoint {
    pub meta: ChannelMeta,
    pub last_id: u64,
    /// The channel's shared-state documents as of `last_id` (docs/decisions.md §31), so
    /// they outlive the messages that wrote them. Absent in checkpoints written before.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub docs: std::collections::BTreeMap<String, crate::state_doc::Doc>,
}

#[derive(Clone, Debug)]
struct Member {
    /// Last acknowledged id (SPEC §2.3).
    cursor: u64,
    /// Connections of this user currently subscribed.
    online: u32,
    /// The role its last subscribed connection held (`None`: never connected, e.g.
    /// enrolled by a service, or restored from a registry that did not record it). Only
    /// counts of role-targeted messages read it; a reader's own role comes from its token.
    role: Option<Role>,
}

#[derive(Clone, Debug)]
struct OnlineSub {
    user: UserKey,
    role: Role,
    /// This connection's entry in the channel's presence.
    presence: u64,
}

/// A kept message and who it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Kept<F> {
    frame: F,
    target: Target,
}

impl<F> Kept<F> {
    fn visible_to(&self, viewer: &UserKey, role: Option<Role>) -> bool {
        self.target.admits(viewer, role)
    }
}

/// Where a subscriber wants to resume from.
#[derive(Clone, Debug, Default)]
pub struct ResumeFrom<'a> {
    pub last_seen_id: Option<u64>,
    pub epoch: Option<&'a str>,
    pub include_history: bool,
}

#[derive(Debug)]
pub struct SubscribeOutcome<F> {
    pub recovered: bool,
    pub messages: Vec<F>,
    /// The channel's presence now, at most `presence_list_max` entries in join order.
    pub presence: Vec<PresenceEntry>,
    /// How many entries the channel's presence holds (more than `presence.len()` when the
    /// list was cut at `presence_list_max`).
    pub presence_total: usize,
    /// A new subscription of this connection (false on a repeated subscribe). Its presence
    /// join is announced with the channel's next coalesced diff.
    pub joined: bool,
}

/// What the owner sends a channel's subscribers when its presence changed.
#[derive(Debug, PartialEq, Eq)]
pub enum PresenceFlush {
    /// The change of the window since the last flush (`presence_diff`).
    Diff(PresenceDiff),
    /// The diff would carry more than `presence_list_max` entries (heavy churn inside the
    /// window): the window itself instead, with the total (`presence_state`). Clients
    /// replace their list.
    State {
        entries: Vec<PresenceEntry>,
        total: usize,
    },
}

/// What [`ChannelState::enroll`] did.
#[derive(Debug)]
pub struct Enrolled<F> {
    /// The user was not subscribed before.
    pub new: bool,
    pub cursor: u64,
    pub recovered: bool,
    pub messages: Vec<F>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct PublishOutcome {
    pub id: u64,
    pub delivered: usize,
    pub queued: usize,
    /// Shards holding at least one online subscriber the message is for.
    pub shards: Vec<u32>,
    /// An idempotent repeat: nothing was appended or sent.
    pub duplicate: bool,
}

#[derive(Debug)]
pub struct ChannelState<F> {
    pub meta: ChannelMeta,
    window: Window<Kept<F>>,
    members: HashMap<UserKey, Member>,
    online: HashMap<ConnRef, OnlineSub>,
    /// Users whose subscription was withdrawn (REST) while connections of theirs stayed
    /// subscribed, with how many: a member made again for such a user starts with them
    /// online, so it is never counted both delivered and queued.
    withdrawn_online: HashMap<UserKey, u32>,
    /// Online subscriptions per shard, indexed by shard.
    per_shard: Vec<u32>,
    presence: Presence,
    /// Most presence entries in one frame (`Limits::presence_list_max`).
    presence_list_max: usize,
    /// Connections handed the current presence in `subscribed` with nothing changed since:
    /// the next flush skips them (it would tell them nothing, and right after a large
    /// resume it would push their backlog past its bound).
    presence_fresh: Vec<ConnRef>,
    /// When a presence frame last went out (for `presence_count_interval_ms`).
    presence_sent_ms: u64,
    idem: Idempotency,
    /// The highest id known stored; subscribers never see past it.
    durable_id: u64,
    /// The channel's publish rate (SPEC §1: 100 a minute).
    rate: crate::rate::TokenBucket,
}

impl<F: Clone> ChannelState<F> {
    pub fn new(meta: ChannelMeta, limits: &Limits, shards: usize) -> Self {
        let created_at_ms = meta.created_at_ms;
        let window = Window::new(limits.max_queued, meta.retention_ms);
        ChannelState {
            meta,
            window,
            members: HashMap::new(),
            online: HashMap::new(),
            withdrawn_online: HashMap::new(),
            per_shard: vec![0; shards],
            presence: Presence::default(),
            presence_list_max: limits.presence_list_max,
            presence_fresh: Vec::new(),
            presence_sent_ms: 0,
            idem: Idempotency::new(
                limits.idempotency_window_ms,
                limits.idempotency_max_keys_per_channel,
            ),
            durable_id: 0,
            rate: crate::rate::TokenBucket::full(
                limits.channel_messages_per_min,
                limits.rate_window_ms,
                created_at_ms,
            ),
        }
    }

    pub fn last_id(&self) -> u64 {
        self.window.last_id()
    }

    /// Rebuilds a channel after a restart from what was stored: its messages (ascending,
    /// contiguous ids; the oldest may be past 1 when older ones were reclaimed), each with
    /// its target, and its members with their cursors. Everything restored is durable;
    /// nobody is online.
    pub fn restore(
        meta: ChannelMeta,
        last_id: u64,
        limits: &Limits,
        shards: usize,
        messages: impl IntoIterator<Item = (u64, u64, F, Target)>,
        members: impl IntoIterator<Item = (UserKey, u64, Option<Role>)>,
        now_ms: u64,
    ) -> Self {
        let mut s = Self::new(meta, limits, shards);
        let mut messages = messages.into_iter().peekable();
        let start_after = match messages.peek() {
            Some((first, _, _, _)) => first - 1,
            // Every message was reclaimed: numbering continues from the checkpoint.
            None => last_id,
        };
        s.window = Window::new(limits.max_queued, s.meta.retention_ms).with_last_id(start_after);
        for (id, ts, frame, target) in messages {
            s.window.push(id, ts, Kept { frame, target }, now_ms);
        }
        s.durable_id = s.window.last_id();
        let last = s.durable_id;
        for (user, cursor, role) in members {
            s.members.insert(
                user,
                Member {
                    cursor: cursor.min(last),
                    online: 0,
                    role,
                },
            );
        }
        s
    }

    /// The oldest id still needed at `now_ms` (the next id when none is): log records of
    /// this channel below it are no longer needed. That is the oldest message kept after
    /// expiring by age — or an older one whose idempotency key is still remembered: keys
    /// travel inside the frames, and a publish retried after a restart within the key's
    /// window must still get its first id (SPEC §2.4).
    pub fn first_kept_id(&mut self, now_ms: u64) -> u64 {
        self.window.expire(now_ms);
        let kept = self
            .window
            .first_id()
            .unwrap_or(self.window.last_id() + 1)
            .min(self.durable_id + 1);
        match self.idem.oldest_id(now_ms) {
            Some(id) => kept.min(id),
            None => kept,
        }
    }

    /// Subscribed users and their cursors (for tools and tests).
    pub fn members(&self) -> impl Iterator<Item = (&UserKey, u64)> {
        self.members.iter().map(|(u, m)| (u, m.cursor))
    }

    /// Subscribed users with their cursor and how many of their connections are
    /// subscribed now (the admin page's per-channel view), in no particular order.
    pub fn subscribers(&self) -> impl Iterator<Item = (&UserKey, u64, u32)> {
        self.members.iter().map(|(u, m)| (u, m.cursor, m.online))
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn online_count(&self) -> usize {
        self.online.len()
    }

    /// The connections subscribed now.
    pub fn online_conns(&self) -> impl Iterator<Item = ConnRef> + '_ {
        self.online.keys().copied()
    }

    /// The user a connection is subscribed as.
    pub fn online_user(&self, conn: ConnRef) -> Option<UserKey> {
        self.online.get(&conn).map(|s| s.user.clone())
    }

    pub fn is_subscribed(&self, conn: ConnRef) -> bool {
        self.online.contains_key(&conn)
    }

    pub fn cursor(&self, user: &UserKey) -> Option<u64> {
        self.members.get(user).map(|m| m.cursor)
    }

    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// Whether presence changed since the last [`take_presence`](Self::take_presence)
    /// (a change of the count alone included, which may be held back).
    pub fn presence_changed(&self) -> bool {
        self.presence.has_changes()
    }

    /// Presence changes to announce (SPEC §3), coalesced since the last call: one diff, or
    /// the (cut) state when the diff would carry more than `presence_list_max` entries,
    /// and the connections to skip (their `subscribed` list is already the current state).
    /// `None` when nothing changed, the changes cancelled out, or only the count changed
    /// (joins and leaves past a full window) within `count_interval_ms` of the last frame:
    /// that waits, and [`presence_changed`](Self::presence_changed) stays true.
    pub fn take_presence(
        &mut self,
        now_ms: u64,
        count_interval_ms: u64,
    ) -> Option<(PresenceFlush, Vec<ConnRef>)> {
        if !self.presence.has_changes() {
            self.presence_fresh.clear();
            return None;
        }
        let max = self.presence_list_max;
        let total_only = now_ms >= self.presence_sent_ms.saturating_add(count_interval_ms);
        let diff = self.presence.take_diff(max, total_only)?;
        self.presence_sent_ms = now_ms;
        let skip = std::mem::take(&mut self.presence_fresh);
        let flush = if diff.len() > max {
            // Taken right after the diff: nothing is touched, nothing gets marked.
            PresenceFlush::State {
                entries: self.presence.snapshot(max),
                total: diff.total,
            }
        } else {
            PresenceFlush::Diff(diff)
        };
        Some((flush, skip))
    }

    /// Shards with at least one online subscriber.
    pub fn shards(&self) -> Vec<u32> {
        (0..self.per_shard.len() as u32)
            .filter(|s| self.per_shard[*s as usize] > 0)
            .collect()
    }

    /// Subscribes `conn` for `user`. Access has been checked by the caller; what it is
    /// handed (resumed, history) is only what `user` may see.
    pub fn subscribe(
        &mut self,
        conn: ConnRef,
        user: &UserKey,
        role: Role,
        from: ResumeFrom<'_>,
        now_ms: u64,
    ) -> Result<SubscribeOutcome<F>, Refusal> {
        let repeat = self.online.contains_key(&conn);
        if !repeat
            && !self.members.contains_key(user)
            && self.members.len() >= self.meta.max_subscribers
        {
            return Err(Refusal::new(
                ErrorCode::ChannelFull,
                format!(
                    "channel has reached max_subscribers ({})",
                    self.meta.max_subscribers
                ),
            ));
        }
        let stored = self.members.get(user).map(|m| m.cursor);
        let epoch_ok = from.epoch.is_none_or(|e| e == self.meta.epoch);
        let client_pos = if epoch_ok { from.last_seen_id } else { None };
        let position = match (stored, client_pos) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let (recovered, messages) = match position {
            Some(p) => {
                let (r, m) = self.visible_after(p, user, Some(role), now_ms);
                (r && epoch_ok, m)
            }
            // Another epoch's position (not trusted: recovered false), or history asked
            // for: everything kept.
            None if !epoch_ok || from.include_history => {
                (epoch_ok, self.visible_after(0, user, Some(role), now_ms).1)
            }
            None => (true, Vec::new()),
        };
        if !repeat {
            self.presence_fresh.clear();
            // A new member starts at the current durable end: it is owed nothing stored
            // before; anything still being stored reaches it live.
            let last = self.durable_id;
            let online = self.carried_online(user);
            let m = self.members.entry(user.clone()).or_insert(Member {
                cursor: position.unwrap_or(last).min(last),
                online,
                role: Some(role),
            });
            m.online += 1;
            m.role = Some(role);
            let presence = self.presence.join(PresenceEntry::new(
                user.sub.clone(),
                user.org.clone(),
                conn,
                role.as_str(),
            ));
            self.online.insert(
                conn,
                OnlineSub {
                    user: user.clone(),
                    role,
                    presence,
                },
            );
            self.per_shard[conn.shard as usize] += 1;
        }
        if !self.presence_fresh.contains(&conn) {
            self.presence_fresh.push(conn);
        }
        Ok(SubscribeOutcome {
            recovered,
            messages,
            presence: self.presence.snapshot(self.presence_list_max),
            presence_total: self.presence.len(),
            joined: !repeat,
        })
    }

    /// Kept, durable messages after `position` that `viewer` may see, and whether every
    /// message after `position` is still kept (SPEC §2.2). The one read path of resume,
    /// history and REST history.
    fn visible_after(
        &self,
        position: u64,
        viewer: &UserKey,
        role: Option<Role>,
        now_ms: u64,
    ) -> (bool, Vec<F>) {
        let r = self.window.resume(position, self.durable_id, now_ms);
        let messages = r
            .entries
            .into_iter()
            .filter(|e| e.item.visible_to(viewer, role))
            .map(|e| e.item.frame.clone())
            .collect();
        (r.recovered, messages)
    }

    /// The newest `n` kept, durable messages that `viewer` may see, oldest first: the same
    /// read path and visibility rule as resume and history (a message targeted at another
    /// user is never among them, whoever looks).
    pub fn recent_visible(
        &self,
        n: usize,
        viewer: &UserKey,
        role: Option<Role>,
        now_ms: u64,
    ) -> Vec<F> {
        let (_, mut messages) = self.visible_after(0, viewer, role, now_ms);
        let cut = messages.len().saturating_sub(n);
        messages.drain(..cut);
        messages
    }

    /// How many kept, durable messages after `user`'s cursor it may see (`unread_count`),
    /// as `role` (the reader's token role; `None`: the member's recorded role); `None` when
    /// it is not subscribed.
    pub fn unread(&self, user: &UserKey, role: Option<Role>) -> Option<u64> {
        let m = self.members.get(user)?;
        let (cursor, role) = (m.cursor, role.or(m.role));
        let n = self
            .window
            .iter()
            .filter(|e| e.id > cursor && e.id <= self.durable_id && e.item.visible_to(user, role))
            .count();
        Some(n as u64)
    }

    fn drop_online(&mut self, conn: ConnRef) -> Option<UserKey> {
        let sub = self.online.remove(&conn)?;
        self.per_shard[conn.shard as usize] -= 1;
        if let Some(m) = self.members.get_mut(&sub.user) {
            m.online -= 1;
        } else if let Some(n) = self.withdrawn_online.get_mut(&sub.user) {
            *n -= 1;
            if *n == 0 {
                self.withdrawn_online.remove(&sub.user);
            }
        }
        self.presence.leave(sub.presence);
        self.presence_fresh.clear();
        Some(sub.user)
    }

    /// The connection went away: its user stays subscribed (messages queue for it). Its
    /// presence leave goes out with the next flush. `false` if it was not subscribed.
    pub fn disconnect(&mut self, conn: ConnRef) -> bool {
        self.drop_online(conn).is_some()
    }

    /// The connection unsubscribed: if it was the user's last one on this channel, the
    /// user's subscription and cursor go too. `false` if it was not subscribed.
    pub fn unsubscribe(&mut self, conn: ConnRef) -> bool {
        let Some(user) = self.drop_online(conn) else {
            return false;
        };
        if self.members.get(&user).is_some_and(|m| m.online == 0) {
            self.members.remove(&user);
        }
        true
    }

    /// Cumulative ack: the cursor only moves forward and never past the last id.
    pub fn ack(&mut self, user: &UserKey, id: u64) -> bool {
        let last = self.durable_id;
        match self.members.get_mut(user) {
            Some(m) => {
                m.cursor = m.cursor.max(id.min(last));
                true
            }
            None => false,
        }
    }

    /// Sets a subscribed connection's presence meta (announced with the next flush);
    /// `false` if it is not subscribed.
    pub fn set_presence(&mut self, conn: ConnRef, meta: Box<serde_json::value::RawValue>) -> bool {
        let changed = self
            .online
            .get(&conn)
            .is_some_and(|s| self.presence.update(s.presence, meta));
        if changed {
            self.presence_fresh.clear();
        }
        changed
    }

    /// A subscribed connection's token was refreshed and holds `role` now: the connection,
    /// its user's membership (the role counts of offline members read) and its presence
    /// entry take it, so counts agree with live delivery, which reads the connection's
    /// current claims. `false` if it is not subscribed or already held `role`.
    pub fn set_role(&mut self, conn: ConnRef, role: Role) -> bool {
        let Some(s) = self.online.get_mut(&conn) else {
            return false;
        };
        if s.role == role {
            return false;
        }
        s.role = role;
        if let Some(m) = self.members.get_mut(&s.user) {
            m.role = Some(role);
        }
        if self.presence.set_role(s.presence, role.as_str()) {
            self.presence_fresh.clear();
        }
        true
    }

    /// Remembers an idempotency key of a stored message (recovery: the keys travel inside
    /// the message frames); keys older than the window are forgotten as usual.
    pub fn remember_idempotency(&mut self, key: &str, id: u64, ts_ms: u64, now_ms: u64) {
        if now_ms.saturating_sub(ts_ms) < self.idem.window_ms {
            self.idem.put(key, id, ts_ms);
        }
    }

    /// A remembered id for `key`, if it was used within the window.
    pub fn idempotent_id(&mut self, key: &str, now_ms: u64) -> Option<u64> {
        self.idem.get(key, now_ms)
    }

    /// Takes one publish from the channel's rate, or refuses with `WS_RATE_LIMITED` and the
    /// seconds until the next one would pass.
    pub fn take_publish(&mut self, limits: &Limits, now_ms: u64) -> Result<(), Refusal> {
        self.take_publish_scaled(limits, 1, now_ms)
    }

    /// [`Self::take_publish`] at `multiplier` × `channel_messages_per_min` (a wedding day,
    /// SPEC §1). The capacity applies at once; the bucket is the same.
    pub fn take_publish_scaled(
        &mut self,
        limits: &Limits,
        multiplier: u32,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let cap = limits
            .channel_messages_per_min
            .saturating_mul(multiplier.max(1));
        self.rate
            .try_take(cap, limits.rate_window_ms, now_ms)
            .map_err(|wait_ms| Refusal {
                code: ErrorCode::RateLimited,
                message: format!(
                    "channel publish rate reached ({cap} per {} s{})",
                    limits.rate_window_ms / 1000,
                    if multiplier > 1 { ", wedding day" } else { "" }
                ),
                retry_after: Some(crate::rate::retry_after_secs(wait_ms)),
            })
    }

    /// The id the next publish will get.
    pub fn next_id(&self) -> u64 {
        self.window.next_id()
    }

    /// Appends a message built for `next_id()` and says where it goes, durable at once (the
    /// `memory` policy, or a caller that made it durable before calling). The caller sends
    /// the frame to `shards`; each shard delivers to its local subscribers (filtering
    /// `target_user`).
    pub fn publish(
        &mut self,
        frame: F,
        ts_ms: u64,
        target: &Target,
        idempotency_key: Option<&str>,
        now_ms: u64,
    ) -> PublishOutcome {
        let id = self.append(frame, ts_ms, target, idempotency_key, now_ms);
        self.mark_durable(id);
        self.outcome(id, target)
    }

    /// Appends a message built for `next_id()` that is not durable yet: it takes its id and
    /// its idempotency key, but no subscriber sees it (live, resumed or acked) until
    /// [`mark_durable`](Self::mark_durable) — or it is undone by
    /// [`rollback_to_durable`](Self::rollback_to_durable). SPEC §2.5: nothing is
    /// acknowledged or delivered before it is stored.
    pub fn append(
        &mut self,
        frame: F,
        ts_ms: u64,
        target: &Target,
        idempotency_key: Option<&str>,
        now_ms: u64,
    ) -> u64 {
        let id = self.window.next_id();
        let target = target.clone();
        // Not counted against the window until stored (SPEC §2.2: the newest `max_queued`
        // stored messages are kept; one that fails to store must not have pushed one out).
        self.window
            .push_pending(id, ts_ms, Kept { frame, target }, now_ms);
        if let Some(k) = idempotency_key {
            self.idem.put(k, id, now_ms);
        }
        id
    }

    /// Everything up to `id` is stored.
    pub fn mark_durable(&mut self, id: u64) {
        debug_assert!(id <= self.window.last_id());
        self.durable_id = self.durable_id.max(id);
        self.window.trim_stored(self.durable_id);
    }

    pub fn durable_id(&self) -> u64 {
        self.durable_id
    }

    /// The store failed: forget every message after the last durable one, ids included, so
    /// the next publish reuses them and no id is ever seen that was not stored.
    pub fn rollback_to_durable(&mut self) -> usize {
        let dropped = self.window.truncate_after(self.durable_id);
        self.idem.forget_ids_after(self.durable_id);
        dropped
    }

    /// Who a durable message `id` goes to now: connections it is delivered to, members it
    /// is queued for (no connection now), and the shards to send it to.
    pub fn outcome(&self, id: u64, target: &Target) -> PublishOutcome {
        let (delivered, queued, shards) = if target.is_everyone() {
            (
                self.online.len(),
                self.members.values().filter(|m| m.online == 0).count(),
                self.shards(),
            )
        } else {
            let mut shards: Vec<u32> = self
                .online
                .iter()
                .filter(|(_, s)| target.admits(&s.user, Some(s.role)))
                .map(|(c, _)| c.shard)
                .collect();
            let delivered = shards.len();
            shards.sort_unstable();
            shards.dedup();
            let queued = self
                .members
                .iter()
                .filter(|(u, m)| m.online == 0 && target.admits(u, m.role))
                .count();
            (delivered, queued, shards)
        };
        PublishOutcome {
            id,
            delivered,
            queued,
            shards,
            duplicate: false,
        }
    }

    /// Who a durable message goes to, by user: those with a subscribed connection now that
    /// it is for, and those it is queued for (the REST door's `delivery_guarantees`).
    pub fn recipients(&self, target: &Target) -> (Vec<UserKey>, Vec<UserKey>) {
        let mut online = Vec::new();
        let mut queued = Vec::new();
        for (u, m) in &self.members {
            if m.online > 0 {
                let live = self
                    .online
                    .values()
                    .any(|s| &s.user == u && target.admits(u, Some(s.role)));
                if live {
                    online.push(u.clone());
                }
            } else if target.admits(u, m.role) {
                queued.push(u.clone());
            }
        }
        online.sort_unstable();
        queued.sort_unstable();
        (online, queued)
    }

    /// Parking (issue 16 item 5): kept, stored messages after `after`, oldest first, up to
    /// the first published after `due_ms` and at most `max` of them; for each that
    /// `pick(id, ts_ms, frame)` keeps, the members who may see it (the one visibility rule)
    /// and whose cursor is below it. Also answers the last id looked at (the caller's next
    /// `after`, so every message is looked at once) and how many were looked at.
    #[allow(clippy::type_complexity)]
    pub fn unacked_due(
        &self,
        after: u64,
        due_ms: u64,
        max: usize,
        mut pick: impl FnMut(u64, u64, &F) -> bool,
    ) -> (u64, usize, Vec<(u64, &F, Vec<UserKey>)>) {
        let mut upto = after;
        let mut out = Vec::new();
        let mut looked = 0;
        for e in self.window.iter() {
            if e.id <= after {
                continue;
            }
            if e.id > self.durable_id || e.ts_ms > due_ms || looked == max {
                break;
            }
            looked += 1;
            upto = e.id;
            if !pick(e.id, e.ts_ms, &e.item.frame) {
                continue;
            }
            let mut who: Vec<UserKey> = self
                .members
                .iter()
                .filter(|(u, m)| m.cursor < e.id && e.item.visible_to(u, m.role))
                .map(|(u, _)| u.clone())
                .collect();
            if !who.is_empty() {
                who.sort_unstable();
                out.push((e.id, &e.item.frame, who));
            }
        }
        (upto, looked, out)
    }

    /// Kept messages (for tools and tests).
    pub fn kept(&self) -> impl Iterator<Item = (u64, &F)> {
        self.window.iter().map(|e| (e.id, &e.item.frame))
    }

    /// Subscribes `user` without a connection (the REST door, SPEC §4): the subscription
    /// and its cursor exist, so messages queue for the user until one of its connections
    /// resubscribes. No presence: nobody is connected. Returns whether the stored position
    /// was recovered, the kept messages after it that `from` asks for, and the cursor.
    /// Access has been checked by the caller.
    /// `role`: the user's role when it enrolls itself (`None`: a service enrolls it); a new
    /// member records it, an existing one keeps the role it has; history is read as `role`
    /// when given.
    pub fn enroll(
        &mut self,
        user: &UserKey,
        role: Option<Role>,
        from: ResumeFrom<'_>,
        now_ms: u64,
    ) -> Result<Enrolled<F>, Refusal> {
        let new = !self.members.contains_key(user);
        if new && self.members.len() >= self.meta.max_subscribers {
            return Err(Refusal::new(
                ErrorCode::ChannelFull,
                format!(
                    "channel has reached max_subscribers ({})",
                    self.meta.max_subscribers
                ),
            ));
        }
        let last = self.durable_id;
        let online = self.carried_online(user);
        let m = self.members.entry(user.clone()).or_insert(Member {
            cursor: last,
            online,
            role,
        });
        // History as the reader: a user enrolling itself reads by its token's role, a
        // service's enroll by the member's recorded one.
        let (cursor, role) = (m.cursor, role.or(m.role));
        let (recovered, messages) = if from.include_history {
            self.visible_after(0, user, role, now_ms)
        } else {
            (true, Vec::new())
        };
        Ok(Enrolled {
            new,
            cursor,
            recovered,
            messages,
        })
    }

    /// Ends `user`'s subscription and forgets its cursor and queue position (the REST
    /// door's unsubscribe). Connections of the user that are subscribed stay so until they
    /// unsubscribe or go; a later subscribe starts a new subscription at the current end.
    pub fn withdraw(&mut self, user: &UserKey) -> bool {
        match self.members.remove(user) {
            Some(m) => {
                if m.online > 0 {
                    self.withdrawn_online.insert(user.clone(), m.online);
                }
                true
            }
            None => false,
        }
    }

    /// For a user about to get a new member entry: its connections still subscribed from
    /// before a withdraw (0 when it already is a member).
    fn carried_online(&mut self, user: &UserKey) -> u32 {
        if self.members.contains_key(user) {
            return 0;
        }
        self.withdrawn_online.remove(user).unwrap_or(0)
    }

    /// When something last happened on the channel: its newest kept message, or creation.
    pub fn last_activity_ms(&self) -> u64 {
        self.window
            .iter()
            .filter(|e| e.id <= self.durable_id)
            .last()
            .map(|e| e.ts_ms)
            .unwrap_or(self.meta.created_at_ms)
    }

    /// Distinct users with a connection subscribed now.
    pub fn active_users(&self) -> usize {
        self.members.values().filter(|m| m.online > 0).count()
    }
}

/// Remembered idempotency keys: bounded by age and by count (oldest forgotten first).
#[derive(Debug)]
struct Idempotency {
    map: HashMap<String, (u64, u64)>,
    order: VecDeque<(String, u64)>,
    window_ms: u64,
    max_keys: usize,
}

impl Idempotency {
    fn new(window_ms: u64, max_keys: usize) -> Self {
        Idempotency {
            map: HashMap::new(),
            order: VecDeque::new(),
            window_ms,
            max_keys,
        }
    }

    fn expire(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        while let Some((k, t)) = self.order.front() {
            if *t >= cutoff && self.order.len() <= self.max_keys {
                break;
            }
            if self.map.get(k).is_some_and(|(_, at)| at == t) {
                self.map.remove(k);
            }
            self.order.pop_front();
        }
    }

    fn get(&mut self, key: &str, now_ms: u64) -> Option<u64> {
        self.expire(now_ms);
        self.map.get(key).map(|(id, _)| *id)
    }

    /// The oldest message id a remembered key names.
    fn oldest_id(&mut self, now_ms: u64) -> Option<u64> {
        self.expire(now_ms);
        self.map.values().map(|(id, _)| *id).min()
    }

    /// Forgets keys of messages that were rolled back.
    fn forget_ids_after(&mut self, id: u64) {
        self.map.retain(|_, (mid, _)| *mid <= id);
    }

    fn put(&mut self, key: &str, id: u64, now_ms: u64) {
        self.map.insert(key.to_owned(), (id, now_ms));
        self.order.push_back((key.to_owned(), now_ms));
        self.expire(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::ChannelAccess;
    use crate::channel::{ChannelType, Permissions};

    fn state(max_subscribers: usize) -> ChannelState<u64> {
        let limits = Limits {
            max_queued: 5,
            ..Limits::default()
        };
        let meta = ChannelMeta {
            id: "ch_1".into(),
            name: ChannelName::parse("wedding:main:w-1").unwrap(),
            access: ChannelAccess {
                org: "o".into(),
                wedding_id: Some("w-1".into()),
                kind: ChannelType::Shared,
                permissions: Permissions::default_for(ChannelType::Shared),
                creator: "u0".into(),
                members: vec![],
            },
            max_subscribers,
            retention_ms: 1_000_000,
            created_at_ms: 0,
            epoch: "e1".into(),
        };
        ChannelState::new(meta, &limits, 2)
    }

    const A0: ConnRef = ConnRef { shard: 0, conn: 1 };
    const A1: ConnRef = ConnRef { shard: 1, conn: 2 };
    const B1: ConnRef = ConnRef { shard: 1, conn: 3 };

    fn u(sub: &str) -> UserKey {
        UserKey::new("o", sub)
    }

    fn publish(s: &mut ChannelState<u64>, now: u64) -> PublishOutcome {
        let id = s.next_id();
        s.publish(id, now, &Target::default(), None, now)
    }

    #[test]
    fn offline_members_are_queued_and_resume_from_their_cursor() {
        let mut s = state(10);
        s.subscribe(A0, &u("alice"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        s.subscribe(B1, &u("bob"), Role::Photographer, ResumeFrom::default(), 0)
            .unwrap();
        let o = publish(&mut s, 1);
        assert_eq!((o.id, o.delivered, o.queued), (1, 2, 0));
        assert_eq!(o.shards, vec![0, 1]);
        assert!(s.ack(&u("bob"), 1));
        assert!(s.disconnect(B1));
        let o = publish(&mut s, 2);
        assert_eq!((o.delivered, o.queued, o.shards.clone()), (1, 1, vec![0]));
        publish(&mut s, 3);
        // Bob comes back without a position: the stored cursor (1) drives the resume.
        let r = s
            .subscribe(A1, &u("bob"), Role::Photographer, ResumeFrom::default(), 4)
            .unwrap();
        assert!(r.recovered);
        assert_eq!(r.messages, vec![2, 3]);
        // With a later last_seen_id, the later of the two wins.
        s.disconnect(A1);
        let from = ResumeFrom {
            last_seen_id: Some(2),
            ..Default::default()
        };
        let r = s
            .subscribe(A1, &u("bob"), Role::Photographer, from, 4)
            .unwrap();
        assert_eq!(r.messages, vec![3]);
    }

    #[test]
    fn fallen_out_of_the_window_is_not_recovered() {
        let mut s = state(10);
        s.subscribe(A0, &u("alice"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        for t in 0..8 {
            publish(&mut s, t);
        }
        let from = ResumeFrom {
            last_seen_id: Some(1),
            ..Default::default()
        };
        let r = s.subscribe(B1, &u("carol"), Role::Couple, from, 9).unwrap();
        assert!(!r.recovered);
        assert_eq!(r.messages, vec![4, 5, 6, 7, 8]);
        // Another epoch's position is not trusted.
        let from = ResumeFrom {
            last_seen_id: Some(7),
            epoch: Some("old"),
            ..Default::default()
        };
        let r = s.subscribe(A1, &u("dave"), Role::Couple, from, 9).unwrap();
        assert!(!r.recovered);
        assert_eq!(r.messages.len(), 5);
    }

    #[test]
    fn new_subscribers_get_history_only_when_asked() {
        let mut s = state(10);
        publish(&mut s, 0);
        let r = s
            .subscribe(A0, &u("a"), Role::Couple, ResumeFrom::default(), 1)
            .unwrap();
        assert!(r.recovered && r.messages.is_empty());
        let from = ResumeFrom {
            include_history: true,
            ..Default::default()
        };
        let r = s.subscribe(A1, &u("b"), Role::Couple, from, 1).unwrap();
        assert_eq!(r.messages, vec![1]);
        // A new member is owed nothing before it joined.
        assert_eq!(s.cursor(&u("b")), Some(1));
    }

    #[test]
    fn channel_full_counts_users_not_connections() {
        let mut s = state(1);
        s.subscribe(A0, &u("a"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        s.subscribe(A1, &u("a"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        let e = s
            .subscribe(B1, &u("b"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ChannelFull);
        // An offline member still holds its place.
        s.disconnect(A0);
        s.disconnect(A1);
        assert!(s
            .subscribe(B1, &u("b"), Role::Couple, ResumeFrom::default(), 0)
            .is_err());
        // Unsubscribing frees it.
        s.subscribe(A0, &u("a"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        assert!(s.unsubscribe(A0));
        s.subscribe(B1, &u("b"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
    }

    #[test]
    fn presence_follows_connections() {
        let mut s = state(10);
        let r = s
            .subscribe(A0, &u("a"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        assert!(r.joined);
        assert_eq!((r.presence.len(), r.presence_total), (1, 1), "sees itself");
        let Some((PresenceFlush::Diff(d), skip)) = s.take_presence(0, 0) else {
            panic!("a join to announce")
        };
        assert_eq!(skip, vec![A0], "its own list is already current");
        assert_eq!(d.joins[0].connection_id(), "c-0-1");
        let r = s
            .subscribe(A0, &u("a"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        assert!(!r.joined, "repeat subscribe joins nothing");
        assert_eq!(s.take_presence(0, 0), None);
        let meta =
            serde_json::value::RawValue::from_string(r#"{"activity":"setup"}"#.into()).unwrap();
        assert!(s.set_presence(A0, meta));
        let Some((PresenceFlush::Diff(d), _)) = s.take_presence(0, 0) else {
            panic!("an update to announce")
        };
        assert_eq!(d.joins[0].meta_json(), r#"{"activity":"setup"}"#);
        assert!(s.disconnect(A0));
        let Some((PresenceFlush::Diff(d), _)) = s.take_presence(0, 0) else {
            panic!("a leave to announce")
        };
        assert_eq!(d.leaves[0].connection_id(), "c-0-1");
        assert!(s.presence().is_empty());
        assert!(!s.disconnect(A0));
    }

    /// Many subscribers joining within one interval cost one diff, and every list a
    /// subscriber or a flush carries stays within `presence_list_max`, with the total.
    #[test]
    fn presence_is_coalesced_and_capped() {
        let limits = Limits {
            presence_list_max: 3,
            ..Limits::default()
        };
        let meta = state(100).meta.clone();
        let mut s = ChannelState::<u64>::new(meta, &limits, 2);
        let conn = |i: u64| ConnRef { shard: 0, conn: i };
        for i in 0..3 {
            let user = format!("u{i}");
            let r = s
                .subscribe(conn(i), &u(&user), Role::Guest, ResumeFrom::default(), 0)
                .unwrap();
            assert_eq!(r.presence_total as u64, i + 1);
        }
        let Some((PresenceFlush::Diff(d), skip)) = s.take_presence(0, 0) else {
            panic!("one diff for three joins")
        };
        assert_eq!(skip, vec![conn(2)], "only the last one's list is current");
        assert_eq!(d.joins.len(), 3);
        assert_eq!(s.take_presence(0, 0), None, "nothing left to announce");
        for i in 3..10 {
            let user = format!("u{i}");
            let r = s
                .subscribe(conn(i), &u(&user), Role::Guest, ResumeFrom::default(), 0)
                .unwrap();
            assert_eq!(r.presence.len(), 3, "cut at presence_list_max");
            assert_eq!(r.presence_total as u64, i + 1);
            assert_eq!(r.presence[0].connection_id(), "c-0-0", "oldest first");
        }
        // Seven joins past a full window: only the total changes.
        let Some((PresenceFlush::Diff(d), _)) = s.take_presence(0, 0) else {
            panic!("a diff")
        };
        assert!(d.is_empty());
        assert_eq!(d.total, 10);
        // A leave inside the window and a join past it: the next in line moves up.
        s.disconnect(conn(0));
        s.subscribe(conn(10), &u("u10"), Role::Guest, ResumeFrom::default(), 0)
            .unwrap();
        let Some((PresenceFlush::Diff(d), _)) = s.take_presence(0, 0) else {
            panic!("one diff")
        };
        assert_eq!(d.leaves[0].connection_id(), "c-0-0");
        assert_eq!(d.joins[0].connection_id(), "c-0-3");
        assert_eq!((d.joins.len(), d.leaves.len(), d.total), (1, 1, 10));
        // Churn inside the window beyond presence_list_max entries: the state instead.
        for i in 1..4 {
            let meta = serde_json::value::RawValue::from_string(format!(r#"{{"n":{i}}}"#)).unwrap();
            s.set_presence(conn(i), meta);
        }
        s.disconnect(conn(1));
        match s.take_presence(0, 0) {
            Some((PresenceFlush::State { entries, total }, _)) => {
                assert_eq!((entries.len(), total), (3, 9));
                assert_eq!(entries[0].connection_id(), "c-0-2");
            }
            other => panic!("expected the state, got {other:?}"),
        }
    }

    #[test]
    fn subscribers_carry_cursor_and_online_connections() {
        let mut s = state(10);
        s.subscribe(A0, &u("a"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        s.subscribe(A1, &u("a"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        s.subscribe(
            B1,
            &UserKey::new("p", "a"),
            Role::Couple,
            ResumeFrom::default(),
            0,
        )
        .unwrap();
        publish(&mut s, 1);
        publish(&mut s, 2);
        assert!(s.ack(&u("a"), 1));
        assert!(s.disconnect(B1));
        let mut all: Vec<_> = s.subscribers().map(|(k, c, n)| (k.clone(), c, n)).collect();
        all.sort();
        assert_eq!(
            all,
            vec![(u("a"), 1, 2), (UserKey::new("p", "a"), 0, 0)],
            "one entry per (org, sub), the same id in two organizations apart"
        );
    }

    #[test]
    fn recent_visible_is_the_newest_the_viewer_may_see() {
        let mut s = state(10);
        let a = u("a");
        let b = u("b");
        s.publish(1, 0, &Target::default(), None, 0);
        s.publish(2, 0, &Target::user(b.clone()), None, 0);
        s.publish(3, 0, &Target::default(), None, 0);
        s.publish(4, 0, &Target::user(a.clone()), None, 0);
        // Appended, not stored yet: nobody sees it.
        s.append(5, 0, &Target::default(), None, 0);
        assert_eq!(s.recent_visible(10, &a, None, 0), vec![1, 3, 4]);
        assert_eq!(s.recent_visible(2, &a, None, 0), vec![3, 4]);
        assert_eq!(s.recent_visible(10, &b, None, 0), vec![1, 2, 3]);
        let admin = UserKey::new("o", "admin");
        assert_eq!(
            s.recent_visible(10, &admin, None, 0),
            vec![1, 3],
            "a message targeted at another user is not shown, not even to an admin"
        );
        assert_eq!(
            s.recent_visible(10, &UserKey::new("other", "a"), None, 0),
            vec![1, 3]
        );
        assert!(s.recent_visible(0, &a, None, 0).is_empty());
    }

    #[test]
    fn targeted_and_idempotent_publish() {
        let mut s = state(10);
        s.subscribe(A0, &u("a"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        s.subscribe(B1, &u("b"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        let o = s.publish(1, 0, &Target::user(u("b")), Some("k"), 0);
        assert_eq!((o.delivered, o.queued, o.shards), (1, 0, vec![1]));
        assert_eq!(s.idempotent_id("k", 1000), Some(1));
        assert_eq!(s.idempotent_id("k", 10 * 60 * 1000 + 1), None);
    }

    #[test]
    fn a_targeted_message_reaches_its_target_alone_by_every_route() {
        // Two organizations with a user `u-1` each, and org o's `u-2`.
        let mut s = state(10);
        let a = UserKey::new("o", "u-1");
        let b = UserKey::new("other", "u-1");
        let c = UserKey::new("o", "u-2");
        for (conn, who) in [(A0, &a), (A1, &b), (B1, &c)] {
            s.subscribe(conn, who, Role::Couple, ResumeFrom::default(), 0)
                .unwrap();
            assert!(s.disconnect(conn));
        }
        let o = s.publish(1, 0, &Target::user(a.clone()), None, 0);
        assert_eq!(
            (o.delivered, o.queued),
            (0, 1),
            "counted for its target only"
        );
        s.publish(2, 0, &Target::default(), None, 0);
        let (online, queued) = s.recipients(&Target::user(a.clone()));
        assert!(online.is_empty() && queued == vec![a.clone()]);
        // Counts.
        assert_eq!(s.unread(&a, None), Some(2));
        assert_eq!(s.unread(&b, None), Some(1));
        assert_eq!(s.unread(&c, None), Some(1));
        // Resume from the stored cursor, and history.
        for (conn, who, want) in [(A0, &a, vec![1, 2]), (A1, &b, vec![2]), (B1, &c, vec![2])] {
            let r = s
                .subscribe(conn, who, Role::Couple, ResumeFrom::default(), 0)
                .unwrap();
            assert_eq!(r.messages, want, "resume of {who}");
            s.disconnect(conn);
            let from = ResumeFrom {
                include_history: true,
                ..Default::default()
            };
            let fresh = UserKey::new(who.org.clone(), format!("{}-new", who.sub));
            let r = s.subscribe(conn, &fresh, Role::Couple, from, 0).unwrap();
            assert_eq!(r.messages, vec![2], "history of {fresh}");
            s.unsubscribe(conn);
        }
        // The REST door's history.
        let from = ResumeFrom {
            include_history: true,
            ..Default::default()
        };
        assert_eq!(
            s.enroll(&b, None, from.clone(), 0).unwrap().messages,
            vec![2]
        );
        let d = UserKey::new("o", "u-9");
        assert_eq!(s.enroll(&d, None, from, 0).unwrap().messages, vec![2]);
    }

    #[test]
    fn users_of_two_organizations_never_share_a_cursor() {
        let mut s = state(10);
        let a = UserKey::new("o", "u-1");
        let b = UserKey::new("other", "u-1");
        s.subscribe(A0, &a, Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        s.subscribe(A1, &b, Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        publish(&mut s, 1);
        publish(&mut s, 2);
        assert!(s.ack(&a, 2));
        assert_eq!(s.cursor(&a), Some(2));
        assert_eq!(s.cursor(&b), Some(0));
        assert_eq!(s.member_count(), 2);
        assert!(s.unsubscribe(A0));
        assert_eq!(s.cursor(&a), None);
        assert_eq!(s.cursor(&b), Some(0));
    }

    /// Regression (found by io/tests/owner_model.rs): a user withdrawn over REST while its
    /// connection stays subscribed, then enrolled (or subscribed) again, is one user with
    /// one connection online — never counted both delivered and queued, and its connection
    /// leaving does not underflow the count.
    #[test]
    fn withdrawn_while_connected_then_back_counts_its_connection() {
        let mut s = state(10);
        let a = u("a");
        s.subscribe(A0, &a, Role::Guest, ResumeFrom::default(), 0)
            .unwrap();
        assert!(s.withdraw(&a));
        assert!(s.enroll(&a, None, ResumeFrom::default(), 0).unwrap().new);
        let o = publish(&mut s, 1);
        assert_eq!((o.delivered, o.queued), (1, 0), "online, so not queued");
        assert_eq!(s.active_users(), 1);
        // A second connection after a withdraw: two online, one user.
        assert!(s.withdraw(&a));
        s.subscribe(A1, &a, Role::Guest, ResumeFrom::default(), 0)
            .unwrap();
        let o = publish(&mut s, 2);
        assert_eq!((o.delivered, o.queued), (2, 0));
        // The first connection unsubscribes: the user is still subscribed by the second.
        assert!(s.unsubscribe(A0));
        assert!(
            s.cursor(&a).is_some(),
            "its other connection still holds it"
        );
        let o = publish(&mut s, 3);
        assert_eq!((o.delivered, o.queued), (1, 0));
        assert!(s.disconnect(A1));
        let o = publish(&mut s, 4);
        assert_eq!((o.delivered, o.queued), (0, 1), "offline now: queued");
    }

    /// Regression (found by io/tests/owner_model.rs): a message still being stored never
    /// pushes a stored one out of the kept window (SPEC §2.2: the newest `max_queued`
    /// stored messages are kept) — neither while it is pending nor after its store failed.
    #[test]
    fn a_pending_message_never_evicts_a_stored_one() {
        let mut s = state(10); // max_queued 5
        for t in 1..=5 {
            publish(&mut s, t);
        }
        let history = || ResumeFrom {
            include_history: true,
            ..Default::default()
        };
        s.append(6, 6, &Target::default(), None, 6);
        let r = s
            .subscribe(A0, &u("a"), Role::Couple, history(), 6)
            .unwrap();
        assert_eq!(r.messages, vec![1, 2, 3, 4, 5], "while 6 is being stored");
        assert_eq!(s.rollback_to_durable(), 1);
        let from = ResumeFrom {
            last_seen_id: Some(0),
            ..Default::default()
        };
        let r = s.subscribe(B1, &u("b"), Role::Couple, from, 6).unwrap();
        assert!(r.recovered, "nothing stored was dropped");
        assert_eq!(r.messages, vec![1, 2, 3, 4, 5], "after 6 failed to store");
        // Once stored, a message takes its place in the window as usual.
        publish(&mut s, 7);
        assert_eq!(
            s.kept().map(|(id, _)| id).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );
    }

    /// Regression (found by io/tests/owner_model.rs): retention keeps the log records of
    /// messages whose idempotency key is still remembered, even out of the kept window, so a
    /// publish retried after a restart within 10 minutes still gets its first id (SPEC
    /// §2.4); the keys travel inside the frames.
    #[test]
    fn retention_keeps_what_a_remembered_key_needs() {
        let mut s = state(10); // max_queued 5
        let id = s.next_id();
        s.publish(id, 0, &Target::default(), Some("k"), 0);
        for t in 1..=6 {
            publish(&mut s, t);
        }
        assert_eq!(
            s.kept().next().map(|(id, _)| id),
            Some(3),
            "1 left the window"
        );
        assert_eq!(
            s.first_kept_id(10),
            1,
            "its key is remembered: its record stays"
        );
        let window = 10 * 60 * 1000;
        assert_eq!(
            s.first_kept_id(window + 1),
            3,
            "once the key is forgotten, it may go"
        );
    }

    #[test]
    fn acks_never_move_backwards_or_past_the_end() {
        let mut s = state(10);
        s.subscribe(A0, &u("a"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        publish(&mut s, 0);
        publish(&mut s, 0);
        s.ack(&u("a"), 2);
        s.ack(&u("a"), 1);
        assert_eq!(s.cursor(&u("a")), Some(2));
        s.ack(&u("a"), 99);
        assert_eq!(s.cursor(&u("a")), Some(2));
        assert!(!s.ack(&u("nobody"), 1));
    }

    #[test]
    fn nothing_is_seen_before_it_is_durable_and_rollback_reuses_ids() {
        let mut s = state(10);
        s.subscribe(A0, &u("a"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        let id1 = s.append(1, 0, &Target::default(), Some("k1"), 0);
        assert_eq!(id1, 1);
        // Not durable: a resubscriber gets nothing, an ack cannot reach it.
        s.disconnect(A0);
        let from = ResumeFrom {
            last_seen_id: Some(0),
            ..Default::default()
        };
        let r = s
            .subscribe(A0, &u("a"), Role::Couple, from.clone(), 0)
            .unwrap();
        assert!(r.recovered && r.messages.is_empty());
        s.ack(&u("a"), 1);
        assert_eq!(s.cursor(&u("a")), Some(0));
        s.mark_durable(1);
        s.disconnect(A0);
        let r = s
            .subscribe(A0, &u("a"), Role::Couple, from.clone(), 0)
            .unwrap();
        assert_eq!(r.messages, vec![1]);
        // Two more appended, then the store fails: both are forgotten, ids and keys too.
        s.append(2, 0, &Target::default(), Some("k2"), 0);
        s.append(3, 0, &Target::default(), None, 0);
        assert_eq!(s.rollback_to_durable(), 2);
        assert_eq!(s.next_id(), 2);
        assert_eq!(s.idempotent_id("k2", 0), None);
        assert_eq!(s.idempotent_id("k1", 0), Some(1));
        let o = s.publish(2, 0, &Target::default(), None, 0);
        assert_eq!((o.id, s.durable_id()), (2, 2));
    }

    #[test]
    fn restore_continues_ids_and_cursors() {
        let limits = Limits {
            max_queued: 5,
            ..Limits::default()
        };
        let meta = state(10).meta.clone();
        let json = serde_json::to_string(&meta).unwrap();
        let meta: ChannelMeta = serde_json::from_str(&json).unwrap();
        let msgs = (41..=47).map(|id| (id, 0, id, Target::default()));
        let mut s = ChannelState::restore(
            meta.clone(),
            40,
            &limits,
            2,
            msgs,
            vec![(u("bob"), 44, None)],
            0,
        );
        assert_eq!((s.last_id(), s.durable_id(), s.next_id()), (47, 47, 48));
        // Bob comes back without a position: his stored cursor drives the resume.
        let r = s
            .subscribe(A0, &u("bob"), Role::Couple, ResumeFrom::default(), 0)
            .unwrap();
        assert!(r.recovered);
        assert_eq!(r.messages, vec![45, 46, 47]);
        // All messages reclaimed: numbering continues from the checkpoint's last id.
        let s2 = ChannelState::<u64>::restore(meta, 47, &limits, 2, std::iter::empty(), vec![], 0);
        assert_eq!(s2.next_id(), 48);
        // A stored name that is not valid is refused, not trusted.
        let bad = json.replace("wedding:main:w-1", "wedding:main:w-1;DROP");
        assert!(serde_json::from_str::<ChannelMeta>(&bad).is_err());
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        let mut i = Idempotency::new(1000, 3);
        for n in 0..5 {
            i.put(&format!("k{n}"), n, 0);
        }
        assert_eq!(i.map.len(), 3);
        assert_eq!(i.get("k0", 0), None);
        assert_eq!(i.get("k4", 0), Some(4));
    }
}
