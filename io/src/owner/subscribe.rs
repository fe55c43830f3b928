//! A connection's subscriptions: `subscribe` (with resume from `last_seen_id`/`epoch` or
//! history, SPEC §2.3), `unsubscribe`, and the re-check after a token refresh that ends
//! what the new token no longer reaches (SPEC §4 tokens).

use super::effects::{Caller, Effects, Record, Reply};
use super::{audit, check_access, mark_presence, not_found, Now, Owner};
use hashbrown::HashSet;
use ringbearer_core::access::{self, Action};
use ringbearer_core::channel_state::{ChannelState, ConnRef, ResumeFrom};
use ringbearer_core::protocol::SubscribeReq;
use ringbearer_core::{ChannelName, Claims};

impl Owner {
    pub(super) fn subscribe(
        &mut self,
        fx: &mut Effects,
        now: Now,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        req: SubscribeReq,
    ) {
        let refuse = |fx: &mut Effects, error| {
            let channel = req.channel.clone();
            fx.reply(from, r#ref, Reply::SubscribeRefused { channel, error });
        };
        let Some(ch) = self.channels.get_mut(req.channel.as_str()) else {
            return refuse(fx, not_found(&req.channel));
        };
        if let Err(e) = check_access(fx, now, ch, claims, Action::Read, "subscribe") {
            return refuse(fx, e);
        }
        let user = claims.user_key();
        let resume = ResumeFrom {
            last_seen_id: req.last_seen_id,
            epoch: req.epoch.as_deref(),
            include_history: req.include_history,
        };
        let o = match ch.subscribe(from, &user, claims.role, resume, now.ms) {
            Ok(o) => o,
            Err(e) => return refuse(fx, e),
        };
        if o.joined {
            let channel = req.channel.clone();
            let cursor = ch.cursor(&user).unwrap_or(0);
            fx.record(Record::Subscribed {
                channel,
                user,
                cursor,
                role: Some(claims.role),
            });
            fx.audit(audit::event(
                now.ms,
                claims,
                "subscribe",
                Some((req.channel.as_str(), &ch.meta.access.org)),
                serde_json::json!({"connection_id": from.public_id(), "recovered": o.recovered}),
            ));
        }
        // The join (and anything the list handed out must be kept up to date on) goes out
        // with the channel's next presence flush.
        mark_presence(&mut self.presence_dirty, ch);
        let reply = Reply::Subscribed {
            channel: req.channel,
            epoch: ch.meta.epoch.clone(),
            recovered: o.recovered,
            messages: o.messages,
            presence: o.presence,
            presence_total: o.presence_total,
            org: ch.meta.access.org.clone(),
        };
        fx.reply(from, r#ref, reply);
    }

    pub(super) fn unsubscribe(
        &mut self,
        fx: &mut Effects,
        now: Now,
        from: Caller,
        r#ref: Option<&str>,
        channel: &ChannelName,
    ) {
        let Some(ch) = self.channels.get_mut(channel.as_str()) else {
            return fx.refuse(from, r#ref, not_found(channel));
        };
        let detail = serde_json::json!({"connection_id": from.public_id()});
        end_subscription(fx, now, &mut self.presence_dirty, ch, from, detail);
        let reply = Reply::Unsubscribed {
            channel: channel.clone(),
            why: None,
        };
        fx.reply(from, r#ref, reply);
    }

    /// A connection's token was refreshed: each of `channels` it is subscribed to that the
    /// new claims may no longer read is ended as an unsubscribe would end it (its presence
    /// leaves; the user's subscription goes with its last connection), and the connection is
    /// told with an `Unsubscribed` carrying the reason. One still allowed under another
    /// role takes that role (counts, the member's recorded role, presence).
    pub(super) fn recheck(
        &mut self,
        fx: &mut Effects,
        now: Now,
        conn: ConnRef,
        claims: &Claims,
        channels: Vec<ChannelName>,
    ) {
        for channel in channels {
            let Some(ch) = self.channels.get_mut(channel.as_str()) else {
                continue;
            };
            if !ch.is_subscribed(conn) {
                continue;
            }
            let Err(why) = access::check(&ch.meta.access, claims, Action::Read) else {
                // Still allowed, maybe as another role: counted and recorded as that role
                // from now on (live delivery already reads the new claims).
                if ch.set_role(conn, claims.role) {
                    mark_presence(&mut self.presence_dirty, ch);
                    let user = claims.user_key();
                    let cursor = ch.cursor(&user).unwrap_or(0);
                    fx.record(Record::Subscribed {
                        channel,
                        user,
                        cursor,
                        role: Some(claims.role),
                    });
                }
                continue;
            };
            let detail = serde_json::json!({
                "connection_id": conn.public_id(),
                "reason": "token_refresh",
                "code": why.code.as_str(),
            });
            end_subscription(fx, now, &mut self.presence_dirty, ch, conn, detail);
            let why = Some(why);
            fx.reply(conn, None, Reply::Unsubscribed { channel, why });
        }
    }
}

/// Ends `conn`'s subscription to `ch` as an `unsubscribe` does: its presence leaves, and the
/// user's subscription and cursor go with its last connection (in the registry too). Audited
/// under the user's own organization, visible to the channel's. `false` if `conn` was not
/// subscribed.
fn end_subscription<F: Clone>(
    fx: &mut Effects,
    now: Now,
    presence_dirty: &mut HashSet<String>,
    ch: &mut ChannelState<F>,
    conn: ConnRef,
    detail: serde_json::Value,
) -> bool {
    let Some(user) = ch.online_user(conn) else {
        return false;
    };
    if !ch.unsubscribe(conn) {
        return false;
    }
    let channel = &ch.meta.name;
    if ch.cursor(&user).is_none() {
        fx.record(Record::Unsubscribed {
            channel: channel.clone(),
            user: user.clone(),
        });
    }
    fx.audit(crate::journal::AuditEvent {
        at_ms: now.ms,
        actor_user_id: user.sub.clone(),
        actor_org: user.org.clone(),
        action: "unsubscribe",
        channel: Some(channel.as_str().to_owned()),
        channel_org: Some(ch.meta.access.org.clone()),
        detail,
    });
    mark_presence(presence_dirty, ch);
    true
}
