//! Subscriptions without a connection (the REST door's subscribe and unsubscribe): a
//! durable membership and cursor for a user of the caller's own organization, with no
//! presence. The same access rule as a connection's subscribe.

use super::effects::{Caller, Effects, Record, Reply};
use super::{audit, check_access, not_found, Now, Owner};
use ringbearer_core::access::Action;
use ringbearer_core::channel_state::ResumeFrom;
use ringbearer_core::protocol::SubscribeReq;
use ringbearer_core::{ChannelName, Claims, UserKey};

impl Owner {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn enroll(
        &mut self,
        fx: &mut Effects,
        now: Now,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        user: &UserKey,
        req: SubscribeReq,
    ) {
        let Some(ch) = self.channels.get_mut(req.channel.as_str()) else {
            return fx.refuse(from, r#ref, not_found(&req.channel));
        };
        if let Err(e) = check_access(fx, now, ch, claims, Action::Read, "subscribe") {
            return fx.refuse(from, r#ref, e);
        }
        let resume = ResumeFrom {
            last_seen_id: None,
            epoch: None,
            include_history: req.include_history,
        };
        // A user enrolling itself brings its role; a service enrolling a user does not know it.
        let role = claims.is_user(user).then_some(claims.role);
        let en = match ch.enroll(user, role, resume, now.ms) {
            Ok(en) => en,
            Err(e) => return fx.refuse(from, r#ref, e),
        };
        if en.new {
            fx.record(Record::Subscribed {
                channel: req.channel.clone(),
                user: user.clone(),
                cursor: en.cursor,
                role,
            });
        }
        let reply = Reply::Enrolled {
            channel: req.channel.clone(),
            channel_id: ch.meta.id.clone(),
            epoch: ch.meta.epoch.clone(),
            wedding_id: ch.meta.access.wedding_id.clone(),
            new: en.new,
            cursor: en.cursor,
            recovered: en.recovered,
            messages: en.messages,
        };
        let detail = serde_json::json!({"user_id": user.sub, "via": "rest", "new": en.new});
        let org = ch.meta.access.org.clone();
        fx.reply(from, r#ref, reply);
        fx.audit(audit::event(
            now.ms,
            claims,
            "subscribe",
            Some((req.channel.as_str(), &org)),
            detail,
        ));
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn withdraw(
        &mut self,
        fx: &mut Effects,
        now: Now,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        user: &UserKey,
        channel: &ChannelName,
    ) {
        let Some(ch) = self.channels.get_mut(channel.as_str()) else {
            return fx.refuse(from, r#ref, not_found(channel));
        };
        if let Err(e) = check_access(fx, now, ch, claims, Action::Read, "unsubscribe") {
            return fx.refuse(from, r#ref, e);
        }
        let removed = ch.withdraw(user);
        if removed {
            fx.record(Record::Unsubscribed {
                channel: channel.clone(),
                user: user.clone(),
            });
        }
        fx.audit(audit::event(
            now.ms,
            claims,
            "unsubscribe",
            Some((channel.as_str(), &ch.meta.access.org)),
            serde_json::json!({"user_id": user.sub, "via": "rest", "removed": removed}),
        ));
        let channel = channel.clone();
        fx.reply(from, r#ref, Reply::Withdrawn { channel, removed });
    }
}
