//! `create` (SPEC §4): a new channel is logged before it is answered for; a name that
//! exists is returned to a caller of its own organization with access, and refused to
//! anyone else. A create naming a `wedding_context` with a date and zone registers the
//! wedding (SPEC §1).

use super::effects::{Caller, Effects, Record};
use super::{audit, commit, deny, Now, Owner};
use crate::journal::Entry;
use ringbearer_core::access::{self, Action, ChannelAccess};
use ringbearer_core::channel_state::{ChannelCheckpoint, ChannelMeta, ChannelState};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::protocol::CreateReq;
use ringbearer_core::{Claims, Permissions, Role};

/// A channel's `channel_id`: `ch_` + 12 hex digits of the server's boot + 2 of its owner
/// shard + 6 of the shard's sequence, so an id names its owner shard
/// ([`shard_of_channel_id`]) and never repeats across restarts.
pub fn channel_id(boot: u64, shard: u32, n: u64) -> String {
    format!("ch_{:012x}{:02x}{:06x}", boot & 0xffff_ffff_ffff, shard, n)
}

/// The owner shard a well-formed `channel_id` names (`None`: not one of ours).
pub fn shard_of_channel_id(id: &str) -> Option<u32> {
    const BOOT_HEX: usize = 12;
    const SHARD_HEX: usize = 2;
    const SEQ_HEX: usize = 6;
    id.strip_prefix("ch_")
        .filter(|r| r.len() == BOOT_HEX + SHARD_HEX + SEQ_HEX)
        .filter(|r| r.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|r| u32::from_str_radix(&r[BOOT_HEX..BOOT_HEX + SHARD_HEX], 16).ok())
}

impl Owner {
    pub(super) fn create(
        &mut self,
        fx: &mut Effects,
        now: Now,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        req: CreateReq,
    ) {
        let name = req.name.as_str();
        if let Some(ch) = self.channels.get(name) {
            // SPEC §4: creating a name that exists returns it to a caller of its own
            // organization with access. Another organization is told, never silently handed
            // a channel it does not own (its permissions, its members, its audit).
            let access = access::check(&ch.meta.access, claims, Action::Read).and_then(|()| {
                if ch.meta.access.org == claims.org {
                    Ok(())
                } else {
                    Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "a channel of that name belongs to another organization; subscribe to it instead",
                    ))
                }
            });
            match access {
                // Still being stored: answered when it is.
                Ok(()) if self.creating.contains(name) => {
                    self.wait_for_repeat(&req.name, from, r#ref, None);
                    fx.wake_commit = true;
                }
                Ok(()) => fx.reply(from, r#ref, commit::created_reply(ch)),
                Err(e) => {
                    let owner = ch.meta.access.org.clone();
                    deny(fx, now, claims, "create", name, Some(&owner), &e);
                    fx.refuse(from, r#ref, e);
                }
            }
            return;
        }
        if claims.role == Role::Guest {
            let e = Refusal::new(ErrorCode::Forbidden, "guests may not create channels");
            deny(fx, now, claims, "create", name, None, &e);
            return fx.refuse(from, r#ref, e);
        }
        if let Some(w) = &req.wedding_id {
            // `*` reaches only the token's own organization's weddings (SPEC §1); a wedding
            // listed by id is reached whoever owns it.
            let owner = self.weddings.owner(w);
            if !claims.may_create_in_wedding(w, owner.as_deref()) {
                let e = Refusal::new(
                    ErrorCode::WeddingIsolationViolation,
                    "this token does not give access to that wedding",
                );
                deny(fx, now, claims, "create", name, owner.as_deref(), &e);
                return fx.refuse(from, r#ref, e);
            }
            if let Err(e) = self.register_from_create(fx, claims, w, owner.as_deref(), &req) {
                return fx.refuse(from, r#ref, e);
            }
        }
        let limits = &self.cfg.limits;
        if self.channels.len() >= limits.max_channels_per_shard {
            let e = Refusal::new(
                ErrorCode::Overloaded,
                "channel capacity reached (max_channels_per_shard)",
            );
            return fx.refuse(from, r#ref, e);
        }
        // Last check before creating: a reservation is never taken for a refused create.
        if let Err(e) = self.policy.reserve_channel(claims, limits) {
            return fx.refuse(from, r#ref, e);
        }
        let n = self.next_channel;
        self.next_channel += 1;
        let meta = ChannelMeta {
            id: channel_id(self.boot, self.id, n),
            name: req.name.clone(),
            access: ChannelAccess {
                org: claims.org.clone(),
                wedding_id: req.wedding_id,
                kind: req.kind,
                permissions: req
                    .permissions
                    .unwrap_or_else(|| Permissions::default_for(req.kind)),
                creator: claims.sub.clone(),
                members: req.members,
            },
            max_subscribers: req.max_subscribers.unwrap_or(limits.max_subscribers),
            retention_ms: req
                .message_retention_hours
                .map(|h| h * 3_600_000)
                .unwrap_or(limits.retention_ms()),
            created_at_ms: now.ms,
            epoch: format!("{:x}-{:x}-{:x}", self.boot & 0xffff_ffff, self.id, n),
        };
        if let Some(w) = &meta.access.wedding_id {
            self.weddings.claim(w, &meta.access.org, now.ms);
        }
        let mut channel_limits = limits.clone();
        channel_limits.message_retention_hours = meta.retention_ms / 3_600_000;
        let ch = ChannelState::new(meta.clone(), &channel_limits, self.shards);
        if self.commit.is_memory() {
            fx.record(Record::ChannelCreated(Box::new(meta.clone())));
            fx.audit(audit::created(now.ms, &meta));
            fx.reply(from, r#ref, commit::created_reply(&ch));
        } else {
            // Logged before it is answered for, so a restart rebuilds it.
            let checkpoint = ChannelCheckpoint {
                meta: meta.clone(),
                last_id: 0,
                docs: Default::default(),
            };
            let json = serde_json::to_vec(&checkpoint).expect("ChannelCheckpoint serializes");
            let pos = match self
                .commit
                .append(name, now.ms, Entry::Channel { meta_json: &json })
            {
                Ok(pos) => pos,
                Err(e) => {
                    self.policy.release_channel(claims);
                    if let Some(w) = &meta.access.wedding_id {
                        self.weddings.unclaim(w, &meta.access.org);
                    }
                    return fx.refuse(from, r#ref, e);
                }
            };
            // Mirrored now, not once durable: a subscribe may be accepted before then, and
            // the registry must see the channel's row first (journal.rs, `Catalog` order).
            fx.record(Record::ChannelCreated(Box::new(meta.clone())));
            self.creating.insert(name.to_owned());
            self.wait_for_create(pos, &req.name, from, r#ref);
            fx.wake_commit = true;
        }
        self.channels.insert(name.to_owned(), ch);
    }

    /// A create's `wedding_context {event_date, time_zone}` (SPEC §1: it registers the
    /// wedding). Registered when nobody owns the wedding yet, or when the creator's
    /// organization does and the creator is its `admin`/`service` (or the facts are the
    /// registered ones). Facts named by another organization's create change nothing: the
    /// channel is created, the owner's facts stay.
    fn register_from_create(
        &self,
        fx: &mut Effects,
        claims: &Claims,
        wedding_id: &str,
        owner: Option<&str>,
        req: &CreateReq,
    ) -> Result<(), Refusal> {
        let Some(f) = &req.wedding_facts else {
            return Ok(());
        };
        let w =
            crate::weddings::Wedding::new(wedding_id, &claims.org, &f.event_date, &f.time_zone)?;
        match owner {
            Some(o) if o != claims.org => return Ok(()),
            Some(_) => {
                let same = self.weddings.get(wedding_id).is_some_and(|old| {
                    old.event_date == w.event_date && old.time_zone == w.time_zone
                });
                if same {
                    return Ok(());
                }
                if !claims.role.is_org_wide() {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        "only the organization's admin or service changes a registered wedding's date or zone",
                    ));
                }
            }
            None => {}
        }
        let w = match self.weddings.get(wedding_id) {
            Some(old) => w.keeping_watch_of(&old),
            None => w,
        };
        let stored = self.weddings.upsert(w)?;
        fx.record(Record::WeddingUpserted(Box::new(stored)));
        Ok(())
    }
}
