//! What a subscriber does on a channel besides reading: `ack` (its cursor, SPEC §2.3),
//! `presence` (its entry's meta, SPEC §3), `typing`; and the presence flush that announces
//! each channel's changes as one coalesced diff per `presence_flush_interval_ms`.

use super::effects::{Caller, ChannelEvent, Effects, Record, Reply};
use super::{mark_presence, not_found, not_subscribed, Now, Owner};
use ringbearer_core::channel_state::PresenceFlush;
use ringbearer_core::{ChannelName, Claims};

impl Owner {
    pub(super) fn ack(
        &mut self,
        fx: &mut Effects,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        channel: &ChannelName,
        id: u64,
    ) {
        let Some(ch) = self.channels.get_mut(channel.as_str()) else {
            return fx.refuse(from, r#ref, not_found(channel));
        };
        let user = claims.user_key();
        let before = ch.cursor(&user);
        ch.ack(&user, id);
        let after = ch.cursor(&user);
        if let Some(cursor) = after.filter(|_| after != before) {
            let channel = channel.clone();
            fx.record(Record::Acked {
                channel,
                user,
                cursor,
            });
        }
        // Answered even without a `ref` (the door renders nothing then): the door counts
        // answers to pace a client's reads.
        fx.reply(from, r#ref, Reply::Ok);
    }

    pub(super) fn presence(
        &mut self,
        fx: &mut Effects,
        from: Caller,
        r#ref: Option<&str>,
        channel: &ChannelName,
        meta: String,
    ) {
        let Some(ch) = self.channels.get_mut(channel.as_str()) else {
            return fx.refuse(from, r#ref, not_found(channel));
        };
        let meta = match serde_json::value::RawValue::from_string(meta) {
            Ok(m) => m,
            Err(e) => {
                let e = ringbearer_core::error::Refusal::new(
                    ringbearer_core::error::ErrorCode::BadRequest,
                    format!("presence meta is not JSON: {e}"),
                );
                return fx.refuse(from, r#ref, e);
            }
        };
        if !ch.set_presence(from, meta) {
            return fx.refuse(from, r#ref, not_subscribed());
        }
        mark_presence(&mut self.presence_dirty, ch);
        fx.reply(from, r#ref, Reply::Ok);
    }

    pub(super) fn typing(
        &mut self,
        fx: &mut Effects,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        channel: &ChannelName,
    ) {
        let Some(ch) = self.channels.get(channel.as_str()) else {
            return fx.refuse(from, r#ref, not_found(channel));
        };
        if !ch.is_subscribed(from) {
            return fx.refuse(from, r#ref, not_subscribed());
        }
        let event = ChannelEvent::Typing {
            user: claims.user_key(),
            role: claims.role,
        };
        fx.event(ch.shards(), channel, event, &[from]);
        fx.reply(from, r#ref, Reply::Ok);
    }

    /// Whether some owned channel has presence changes not yet announced (the presence
    /// flush sleeps until this turns true: an idle shard takes no flush timer).
    pub fn presence_pending(&self) -> bool {
        !self.presence_dirty.is_empty()
    }

    /// Announces the presence changes of every owned channel that has some: one
    /// `PresenceDiff` (or, past `presence_list_max` entries, one `PresenceState`) per
    /// channel to each shard with subscribers (SPEC §3). Run every
    /// `presence_flush_interval_ms`; a subscriber joining meanwhile got the current list in
    /// its `Subscribed` reply, which was routed before this.
    pub fn flush_presence(&mut self, now: Now) -> Effects {
        let mut fx = Effects::default();
        if self.presence_dirty.is_empty() {
            return fx;
        }
        let count_interval_ms = self.cfg.presence_count_interval_ms;
        for name in std::mem::take(&mut self.presence_dirty) {
            let Some(ch) = self.channels.get_mut(&name) else {
                continue;
            };
            let taken = ch.take_presence(now.ms, count_interval_ms);
            if ch.presence_changed() {
                // A change of the count alone, held back: try again next time.
                self.presence_dirty.insert(name.clone());
            }
            let Some((flush, skip)) = taken else {
                continue;
            };
            let org = ch.meta.access.org.clone();
            let event = match flush {
                PresenceFlush::Diff(diff) => ChannelEvent::PresenceDiff { diff, org },
                PresenceFlush::State { entries, total } => ChannelEvent::PresenceState {
                    entries,
                    total,
                    org,
                },
            };
            fx.event(ch.shards(), &ch.meta.name, event, &skip);
        }
        fx
    }
}
