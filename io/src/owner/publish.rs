//! `publish` (SPEC §2): the access rule, the wedding context, idempotency keys (a repeat
//! gets the first id, even while the first is being stored), the rates (wedding days get
//! `wedding_day_rate_multiplier` and `critical` its own budget), then the next id, the log,
//! and — once stored — the answer and the fan-out (`commit.rs`).

use super::commit::deliver_and_reply;
use super::effects::{Caller, Effects, Published, Reply};
use super::{audit, check_access, deny, not_found, Now, Owner};
use crate::journal::Entry;
use ringbearer_core::access::{self, Action, RoleSet};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::identity::{idempotency_scope, Target};
use ringbearer_core::message::MessageFrame;
use ringbearer_core::protocol::PublishReq;
use ringbearer_core::{Claims, Priority, UserKey};
use std::sync::Arc;

impl Owner {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish(
        &mut self,
        fx: &mut Effects,
        now: Now,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        req: PublishReq,
        recipients: bool,
    ) {
        if req.msg_type == ringbearer_core::state_doc::STATE_TYPE {
            // Shared-state changes are written by `state_set`/`state_patch` only (§31).
            let e = Refusal::new(
                ErrorCode::BadRequest,
                "type `state` is reserved for shared-state changes (state_set, state_patch)",
            );
            return fx.refuse(from, r#ref, e);
        }
        let Some(ch) = self.channels.get_mut(req.channel.as_str()) else {
            return fx.refuse(from, r#ref, not_found(&req.channel));
        };
        if let Err(e) = check_access(fx, now, ch, claims, Action::Write, "publish") {
            return fx.refuse(from, r#ref, e);
        }
        if let Some(w) = &req.context_wedding_id {
            if ch.meta.access.wedding_id.as_deref() != Some(w.as_str()) {
                let e = Refusal::new(
                    ErrorCode::InvalidWeddingContext,
                    "wedding_context.wedding_id is not this channel's wedding",
                );
                return fx.refuse(from, r#ref, e);
            }
        }
        // Keys are the publisher's own: another user's key never answers for this publish.
        let scoped = req
            .idempotency_key
            .as_deref()
            .map(|k| idempotency_scope(&claims.org, &claims.sub, k));
        if let Some(k) = &scoped {
            if let Some(id) = ch.idempotent_id(k, now.ms) {
                if id <= ch.durable_id() {
                    let published = Published {
                        channel: req.channel.clone(),
                        id,
                        delivered: 0,
                        queued: 0,
                        recipients: None,
                    };
                    fx.reply(from, r#ref, Reply::Published(published));
                } else {
                    // The first publish is still being stored: answered when it is.
                    self.wait_for_repeat(&req.channel, from, r#ref, Some(id));
                    fx.wake_commit = true;
                }
                return;
            }
        }
        let limits = &self.cfg.limits;
        if req.priority == Priority::Emergency {
            // SPEC §2: `emergency` is for the roles of the channel's `admin` list (and its
            // organization's admin/service), or those `limits.emergency_roles` names.
            let allowed = limits.emergency_roles.contains(&claims.role)
                || access::check(&ch.meta.access, claims, Action::Admin).is_ok();
            if !allowed {
                let e = Refusal::new(
                    ErrorCode::Forbidden,
                    "emergency is for the channel's admin roles (or limits.emergency_roles)",
                );
                let (name, org) = (ch.meta.name.as_str(), ch.meta.access.org.as_str());
                deny(fx, now, claims, "publish", name, Some(org), &e);
                return fx.refuse(from, r#ref, e);
            }
        }
        // SPEC §1 rates, decided here where the channel's wedding is known: a wedding-day
        // channel gets `wedding_day_rate_multiplier` × the user and channel rates, and its
        // `critical` publishes skip both, held only by `critical_messages_per_min`. An
        // `emergency` skips them on any day, held only by `emergency_messages_per_min`.
        let wedding_day = ch
            .meta
            .access
            .wedding_id
            .as_deref()
            .is_some_and(|w| self.weddings.is_wedding_day(w, now.calendar_ms));
        let rated = if req.priority == Priority::Emergency {
            self.policy.take_emergency(claims, limits, now.ms)
        } else if wedding_day && req.priority == Priority::Critical {
            self.policy.take_critical(claims, limits, now.ms)
        } else {
            let m = if wedding_day {
                limits.wedding_day_rate_multiplier
            } else {
                1
            };
            self.policy
                .take_message_scaled(claims, limits, m, now.ms)
                .and_then(|()| ch.take_publish_scaled(limits, m, now.ms))
        };
        if let Err(e) = rated {
            return fx.refuse(from, r#ref, e);
        }
        // Who it is for (SPEC §2): the user or roles the publish names, else the roles the
        // channel organization's routing table gives its type. An `emergency` goes to
        // everyone unless it names roles itself.
        let roles = match (&req.target_user_id, req.target_roles) {
            (Some(_), _) => RoleSet::EMPTY,
            (None, Some(r)) => r,
            (None, None) if req.priority == Priority::Emergency => RoleSet::EMPTY,
            (None, None) => self
                .cfg
                .routing
                .roles_for(&ch.meta.access.org, &req.msg_type),
        };
        let id = ch.next_id();
        let frame = MessageFrame {
            id,
            ts_ms: now.ms,
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
            target_roles: roles.bits(),
            wedding_context: req.wedding_context,
            idempotency_key: req.idempotency_key,
        };
        let bytes = Arc::new(frame.encode());
        let target = Target {
            user: frame
                .target_user_id
                .as_ref()
                .zip(frame.target_org.as_ref())
                .map(|(sub, org)| UserKey::new(org.clone(), sub.clone())),
            roles,
        };
        if req.priority == Priority::Emergency {
            // Always audited (SPEC §2), when taken: the id it was given and who it is for.
            let detail = serde_json::json!({
                "id": id,
                "type": frame.msg_type,
                "target_user_id": frame.target_user_id,
                "target_org": frame.target_org,
                "target_roles": roles,
            });
            let channel = Some((req.channel.as_str(), ch.meta.access.org.as_str()));
            fx.audit(audit::event(now.ms, claims, "emergency", channel, detail));
        }
        if self.cluster.is_some() {
            // Cluster mode: the stream gives the id and orders the channel (`cluster.rs`).
            let msg_id = scoped.map(|k| format!("{}\n{k}", req.channel.as_str()));
            let channel = req.channel.clone();
            return self
                .publish_clustered(fx, from, r#ref, &channel, frame, target, msg_id, recipients);
        }
        let key = scoped.as_deref();
        if self.commit.is_memory() {
            // `memory` policy: durable on append.
            let o = ch.publish(bytes.clone(), now.ms, &target, key, now.ms);
            return deliver_and_reply(fx, ch, o, &target, &bytes, from, r#ref, recipients);
        }
        // Stored first, then heard of (SPEC §2.5): answered and delivered once the journal
        // says the position is durable.
        let entry = Entry::Message { id, frame: &bytes };
        let pos = match self.commit.append(req.channel.as_str(), now.ms, entry) {
            Ok(pos) => pos,
            Err(e) => return fx.refuse(from, r#ref, e),
        };
        ch.append(bytes.clone(), now.ms, &target, key, now.ms);
        self.wait_for_message(
            pos,
            &req.channel,
            from,
            r#ref,
            (id, target, bytes, recipients),
        );
        fx.wake_commit = true;
    }
}
