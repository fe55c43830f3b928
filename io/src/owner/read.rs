//! Reads of the owner's channels for the REST door and the admin page: which channel has
//! an id, a user's channels with their unread counts, an organization's channel list, and
//! one channel's detail. Each is filtered by the caller's access (SPEC §1: never listed for
//! a caller without it) and, for messages, by the one visibility rule.

use super::effects::{Caller, ChannelDetail, ChannelSummary, Effects, Reply, SubscriberView};
use super::{deny, not_found, Now, Owner, INSPECT_RECENT_MAX};
use ringbearer_core::access::{self, Action};
use ringbearer_core::channel_state::ChannelState;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::{ChannelName, Claims, UserKey};

fn summary<F: Clone>(ch: &ChannelState<F>, unread: Option<u64>) -> ChannelSummary {
    ChannelSummary {
        name: ch.meta.name.clone(),
        kind: ch.meta.access.kind.as_str(),
        wedding_id: ch.meta.access.wedding_id.clone(),
        active_users: ch.active_users(),
        members: ch.member_count(),
        last_activity_ms: ch.last_activity_ms(),
        unread,
    }
}

impl Owner {
    pub(super) fn resolve(
        &mut self,
        fx: &mut Effects,
        from: Caller,
        r#ref: Option<&str>,
        id: &str,
    ) {
        let name = self
            .channels
            .values()
            .find(|c| c.meta.id == id)
            .map(|c| c.meta.name.clone());
        match name {
            Some(channel) => fx.reply(from, r#ref, Reply::Resolved { channel }),
            None => fx.refuse(
                from,
                r#ref,
                Refusal::new(
                    ErrorCode::ChannelNotFound,
                    format!("no channel has id {}", id.escape_default()),
                ),
            ),
        }
    }

    pub(super) fn list_for(
        &mut self,
        fx: &mut Effects,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        user: &UserKey,
    ) {
        let mut list = Vec::new();
        // The reader's own role when it asks for itself; for another user (a service), the
        // role that user's last connection held.
        let role = claims.is_user(user).then_some(claims.role);
        for ch in self.channels.values() {
            let Some(unread) = ch.unread(user, role) else {
                continue;
            };
            // Isolation (SPEC §1): never listed for a caller without access.
            if access::check(&ch.meta.access, claims, Action::Read).is_err() {
                continue;
            }
            list.push(summary(ch, Some(unread)));
        }
        fx.reply(from, r#ref, Reply::Subscriptions(list));
    }

    /// The caller organization's channels on this shard: the first `take` by name and the
    /// count. Admin and service roles only.
    pub(super) fn list_org(
        &mut self,
        fx: &mut Effects,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        take: usize,
    ) {
        if !claims.role.is_org_wide() {
            let e = Refusal::new(
                ErrorCode::Forbidden,
                "the organization's channel list is for the admin and service roles",
            );
            return fx.refuse(from, r#ref, e);
        }
        let mut mine: Vec<&ChannelState<_>> = self
            .channels
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
        let channels = mine.iter().map(|ch| summary(ch, None)).collect();
        fx.reply(from, r#ref, Reply::OrgChannels { channels, total });
    }

    /// The admin page's view of one channel. Only the admin and service roles of the
    /// channel's own organization may look; anyone else gets the access rule's refusal (or
    /// `WS_FORBIDDEN`), audited for the channel's owner. Recent messages follow the one
    /// visibility rule for the viewer: a message targeted at another user is not shown, even
    /// to the owner's admin.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn inspect(
        &mut self,
        fx: &mut Effects,
        now: Now,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        channel: &ChannelName,
        offset: usize,
        limit: usize,
    ) {
        let Some(ch) = self.channels.get(channel.as_str()) else {
            return fx.refuse(from, r#ref, not_found(channel));
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
            deny(fx, now, claims, "inspect", channel.as_str(), Some(org), &e);
            return fx.refuse(from, r#ref, e);
        }
        let mut subs: Vec<(&UserKey, u64, u32)> = ch.subscribers().collect();
        subs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let subscribers = subs
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(user, cursor, online)| SubscriberView {
                user: (*user).clone(),
                online_connections: *online,
                cursor: *cursor,
                unread: ch.unread(user, None).unwrap_or(0),
            })
            .collect();
        let presence = ch
            .presence()
            .iter()
            .take(self.cfg.limits.presence_list_max)
            .cloned()
            .collect();
        let detail = ChannelDetail {
            name: channel.clone(),
            channel_id: ch.meta.id.clone(),
            kind: ch.meta.access.kind.as_str(),
            wedding_id: ch.meta.access.wedding_id.clone(),
            created_at_ms: ch.meta.created_at_ms,
            last_id: ch.last_id(),
            durable_id: ch.durable_id(),
            last_activity_ms: ch.last_activity_ms(),
            members: ch.member_count(),
            active_users: ch.active_users(),
            online_connections: ch.online_count(),
            offset,
            limit,
            subscribers,
            presence,
            presence_total: ch.presence().len(),
            recent: ch.recent_visible(
                INSPECT_RECENT_MAX,
                &claims.user_key(),
                Some(claims.role),
                now.ms,
            ),
        };
        fx.reply(from, r#ref, Reply::Detail(Box::new(detail)));
    }
}

impl Owner {
    /// The presence watchdog's round (docs/decisions.md §30): on this shard's channels of
    /// each wedding in `weddings` (`(wedding_id, owning organization)`) — channels of the
    /// owning organization naming it — which roles have a connection present, and the
    /// `battery` of each entry that gives one. For the server's own service identity only.
    pub(super) fn watch(
        &mut self,
        fx: &mut Effects,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        weddings: &[(String, String)],
    ) {
        if claims.role != ringbearer_core::Role::Service {
            let e = Refusal::new(ErrorCode::Forbidden, "the watchdog's own op");
            return fx.refuse(from, r#ref, e);
        }
        let mut seen = crate::watchdog::Sightings::default();
        if !weddings.is_empty() {
            let owners: std::collections::HashMap<&str, &str> = weddings
                .iter()
                .map(|(w, o)| (w.as_str(), o.as_str()))
                .collect();
            for ch in self.channels.values() {
                let Some(w) = ch.meta.access.wedding_id.as_deref() else {
                    continue;
                };
                if owners.get(w) != Some(&ch.meta.access.org.as_str()) {
                    continue;
                }
                for e in ch.presence().iter() {
                    seen.roles.entry(w.to_owned()).or_default().insert(e.role);
                    // Metas were checked at the door; one unreadable here is skipped.
                    let Ok(t) = ringbearer_core::presence_meta::check_json(e.meta_json()) else {
                        continue;
                    };
                    if let Some(battery) = t.battery {
                        let conn = e.connection_id();
                        seen.batteries.push(crate::watchdog::BatteryReading {
                            wedding_id: w.to_owned(),
                            device: crate::watchdog::device_key(
                                &e.org,
                                &e.user_id,
                                t.device_id.as_deref(),
                                &conn,
                            ),
                            org: e.org.clone(),
                            user_id: e.user_id.clone(),
                            role: e.role,
                            battery,
                        });
                    }
                }
            }
        }
        fx.reply(from, r#ref, Reply::Watched(Box::new(seen)));
    }
}
