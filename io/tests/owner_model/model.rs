//! The reference model of the channel owner's rules (SPEC §1-3, docs/protocol.md "Who sees
//! what" and "Promises"), written from the documents and not from the code, and the random
//! operations that drive it. Plain Rust: nothing here knows the owner's types; the driver
//! (`owner_model.rs`) turns each [`Op`] into a real request and the owner's answers into
//! [`Obs`], and compares them with what [`Model::apply`] predicts.
//!
//! The world is small on purpose, so that random sequences collide: three organizations
//! whose users share ids (`org-a/u-1`, `org-b/u-1`, `org-c/u-1`), two weddings, four channel
//! names, eight connection slots over two shards, and a kept window of
//! [`MAX_QUEUED`] messages.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The kept window of every channel (the owner's `max_queued` in the test's config).
pub const MAX_QUEUED: usize = 4;
/// Most entries in a presence list (`presence_list_max`): small, so that lists are cut
/// and the window of the first connections in join order moves (SPEC §3, protocol.md
/// "Presence").
pub const PRESENCE_LIST_MAX: usize = 2;
/// Channels per organization (every token is of a tier with this limit): small, so that
/// creates meet it, and refused or failed creates must give their place back.
pub const CHANNELS_PER_ORG: usize = 2;
/// Publishes per channel per [`RATE_WINDOW_MS`] (`channel_messages_per_min`): small, so
/// that bursts meet it (SPEC §1; a token bucket: a burst of this many, refilled
/// continuously over the window).
pub const CHANNEL_RATE: u64 = 5;
pub const RATE_WINDOW_MS: u64 = 60_000;
/// SPEC §2.4: a repeated idempotency key within 10 minutes returns the first id.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 10 * 60 * 1000;
/// What [`Op::Wait`] moves the clock by: past the idempotency window, well inside the
/// retention (24 h) and the rate windows' refill.
pub const WAIT_MS: u64 = 11 * 60 * 1000;

/// Behaviours of today's owner that differ from the SPEC, found by this test and reported
/// (see the regression cases in `owner_model.rs`). While one is `true` the model predicts
/// the owner's behaviour instead, so random runs keep looking for other divergences; set it
/// to `false` once the owner is fixed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Known {
    /// A create that is never stored (the log refused it or failed) still makes its
    /// organization the wedding's owner until the next restart (SPEC §1: the owner is the
    /// organization that created the first channel with it).
    pub unstored_create_claims_wedding: bool,
    /// A connection may subscribe to a channel whose creation is still being stored; if
    /// the store fails the channel is dropped but its subscribers are never told, so their
    /// shards keep delivering that name to them — including messages of a later channel of
    /// the same name created by another organization. (The driver, not the model, plays
    /// this one: while `true` it ends those subscriptions itself.)
    pub unstored_channel_keeps_subscribers: bool,
}

pub const KNOWN: Known = Known {
    unstored_create_claims_wedding: false,
    unstored_channel_keeps_subscribers: false,
};

pub const ORGS: [&str; 3] = ["org-a", "org-b", "org-c"];
pub const WEDDINGS: [&str; 2] = ["w-1", "w-2"];
/// User ids: every organization may have each of them.
pub const SUBS: [&str; 3] = ["u-1", "u-2", "boss"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Variants are bits of a `roles` mask (`1 << role as u8`).
    Coordinator,
    Photographer,
    Couple,
    Guest,
    Venue,
    Admin,
    Service,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Coordinator,
        Role::Photographer,
        Role::Couple,
        Role::Guest,
        Role::Venue,
        Role::Admin,
        Role::Service,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Photographer => "photographer",
            Role::Couple => "couple",
            Role::Guest => "guest",
            Role::Venue => "venue",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
    fn org_wide(self) -> bool {
        matches!(self, Role::Admin | Role::Service)
    }
}

/// A token's claims: who, with which role, reaching which weddings (`star`: `["*"]`).
#[derive(Clone, Copy, Debug)]
pub struct Principal {
    pub org: usize,
    pub sub: usize,
    pub role: Role,
    pub weddings: &'static [usize],
    pub star: bool,
}

/// Everyone who acts. Users of different organizations share ids on purpose.
pub const PRINCIPALS: [Principal; 9] = [
    // 0: org-a/u-1, coordinator of w-1.
    Principal {
        org: 0,
        sub: 0,
        role: Role::Coordinator,
        weddings: &[0],
        star: false,
    },
    // 1: org-b/u-1, a photographer working both weddings.
    Principal {
        org: 1,
        sub: 0,
        role: Role::Photographer,
        weddings: &[0, 1],
        star: false,
    },
    // 2: org-a/u-2, the couple of w-1.
    Principal {
        org: 0,
        sub: 1,
        role: Role::Couple,
        weddings: &[0],
        star: false,
    },
    // 3: org-b/u-2, a guest of both.
    Principal {
        org: 1,
        sub: 1,
        role: Role::Guest,
        weddings: &[0, 1],
        star: false,
    },
    // 4: org-c/u-1, the venue of w-2.
    Principal {
        org: 2,
        sub: 0,
        role: Role::Venue,
        weddings: &[1],
        star: false,
    },
    // 5: org-b/boss, org-b's admin with every wedding of org-b.
    Principal {
        org: 1,
        sub: 2,
        role: Role::Admin,
        weddings: &[],
        star: true,
    },
    // 6: org-a/boss, org-a's backend (service) with every wedding of org-a.
    Principal {
        org: 0,
        sub: 2,
        role: Role::Service,
        weddings: &[],
        star: true,
    },
    // 7: org-c/u-2, a guest of w-2.
    Principal {
        org: 2,
        sub: 1,
        role: Role::Guest,
        weddings: &[1],
        star: false,
    },
    // 8: org-a/u-1 again, with a guest's token (one user, two roles on two connections).
    Principal {
        org: 0,
        sub: 0,
        role: Role::Guest,
        weddings: &[0],
        star: false,
    },
];

/// Connection slots: slot `s` is a connection of `SLOT_PRINCIPAL[s]` on shard `s % 2`.
/// Slot 6 is org-a/u-1 again with a guest's token (principal 8), slot 7 a second
/// connection of principal 1.
pub const SLOT_PRINCIPAL: [usize; 8] = [0, 1, 2, 3, 4, 5, 8, 1];
pub const SLOTS: usize = SLOT_PRINCIPAL.len();

/// Candidate channel names, and the wedding a `wedding:` name must name.
pub const NAMES: [(&str, Option<usize>); 4] = [
    ("wedding:main:w-1", Some(0)),
    ("wedding:main:w-2", Some(1)),
    ("venue:hall:v-1", None),
    ("collaboration:team:t-1", None),
];

/// A user: (organization, id) indexes into [`ORGS`] and [`SUBS`].
pub type User = (usize, usize);

pub fn user_of(p: usize) -> User {
    (PRINCIPALS[p].org, PRINCIPALS[p].sub)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Shared,
    Broadcast,
    Private,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Shared => "shared",
            Kind::Broadcast => "broadcast",
            Kind::Private => "private",
        }
    }
}

/// A private channel's named members (bit set): bit 0 the creator organization's `u-2`
/// (`"u-2"`), bit 1 `{org-b, u-1}`, bit 2 `{org-c, u-1}`.
pub fn members_of(mask: u8, creator_org: usize) -> Vec<User> {
    let mut v = Vec::new();
    if mask & 1 != 0 {
        v.push((creator_org, 1));
    }
    if mask & 2 != 0 {
        v.push((1, 0));
    }
    if mask & 4 != 0 {
        v.push((2, 0));
    }
    v
}

/// Custom role lists a create may give instead of its type's defaults ("staff"): read by
/// coordinators, photographers and venues, written by coordinators.
pub const STAFF_READ: [Role; 3] = [Role::Coordinator, Role::Photographer, Role::Venue];
pub const STAFF_WRITE: [Role; 1] = [Role::Coordinator];

/// What the log does during a create or publish (whether or not it appended anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// The log takes it and makes it durable at once.
    Commit,
    /// It stays pending until a later [`Op::Flush`] (or another commit).
    Hold,
    /// The log takes it, then the store fails: everything pending is refused.
    Fail,
    /// The log refuses the append (backpressure): refused at once, nothing taken.
    Refuse,
}

/// Where a caller is: a connection slot, or a REST call by a principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Caller {
    Conn(usize),
    Rest(usize),
}

impl Caller {
    pub fn principal(self) -> usize {
        match self {
            Caller::Conn(s) => SLOT_PRINCIPAL[s],
            Caller::Rest(p) => p,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochArg {
    None,
    /// The channel's epoch (the driver fills in the real one).
    Current,
    /// An epoch of another life of the channel.
    Stale,
}

#[derive(Clone, Debug)]
pub enum Op {
    Create {
        by: Caller,
        name: usize,
        kind: Kind,
        /// For names outside the `wedding` scope: which wedding, if any.
        wedding: Option<usize>,
        members: u8,
        staff: bool,
        max_subscribers: Option<usize>,
        then: Then,
    },
    Subscribe {
        slot: usize,
        name: usize,
        last_seen: Option<u64>,
        epoch: EpochArg,
        history: bool,
    },
    Unsubscribe {
        slot: usize,
        name: usize,
    },
    /// The connection goes away (its subscriptions stay; the slot's next op is a new
    /// connection).
    Disconnect {
        slot: usize,
    },
    Publish {
        slot: usize,
        name: usize,
        /// (`target_org` if given, `target_user_id`).
        target: Option<(Option<usize>, usize)>,
        /// `target_roles` as a mask of [`Role`] bits (0: none; never with `target`).
        roles: u8,
        /// `type: "rsvp_update"`, which the driver's routing table sends to the couple and
        /// the coordinator when the publish names no target (and is not an emergency).
        routed: bool,
        key: Option<u8>,
        /// A REST broadcast by the slot's principal (no connection), which is also told who
        /// the message went to (`delivery_guarantees`).
        rest: bool,
        /// `priority: "emergency"` (SPEC §2): only the channel's admin roles; exempt from
        /// the channel's rate.
        emergency: bool,
        then: Then,
    },
    Ack {
        slot: usize,
        name: usize,
        id: u64,
    },
    Presence {
        slot: usize,
        name: usize,
        meta: u8,
    },
    /// REST subscribe of `sub` of the caller's organization.
    Enroll {
        caller: usize,
        sub: usize,
        name: usize,
        history: bool,
    },
    /// REST unsubscribe of `sub` of the caller's organization.
    Withdraw {
        caller: usize,
        sub: usize,
        name: usize,
    },
    /// REST list of `sub`'s channels (with `unread_count`) as the caller may see them.
    List {
        caller: usize,
        sub: usize,
    },
    /// Everything pending is completed: stored, or (`fail`) refused.
    Flush {
        fail: bool,
    },
    /// The clock moves [`WAIT_MS`].
    Wait,
    /// A typing indicator: relayed to the channel's other subscribed connections.
    Typing {
        slot: usize,
        name: usize,
    },
    /// The connection refreshes its token (`op: token`) to one listing no wedding (and no
    /// `*`): its subscriptions the new claims no longer reach end, each with an unasked
    /// `unsubscribed`; its later requests carry the new claims.
    Refresh {
        slot: usize,
    },
    /// The admin page's view of a channel (REST `channels/detail`), by a principal.
    Inspect {
        caller: usize,
        name: usize,
    },
    /// The owners announce presence changes (the periodic flush): afterwards every
    /// subscribed connection's presence list — its `subscribed` list with every diff since
    /// applied — must be the channel's presence.
    Tick,
    /// A retention round: the owners checkpoint every channel and the log drops what is no
    /// longer kept (messages out of the window). Invisible by the SPEC: nothing kept, no
    /// cursor and no idempotency key within its window is lost. (The checkpoints are
    /// stored, and so, with them, is everything pending: group commit.)
    Retention,
    /// The process restarts: every connection is gone, anything not durable is lost, and
    /// the owner is rebuilt from the log and the registry.
    Restart,
}

impl Op {
    /// The channel an operation names, if one.
    pub fn channel(&self) -> Option<usize> {
        match *self {
            Op::Create { name, .. }
            | Op::Subscribe { name, .. }
            | Op::Unsubscribe { name, .. }
            | Op::Publish { name, .. }
            | Op::Ack { name, .. }
            | Op::Presence { name, .. }
            | Op::Enroll { name, .. }
            | Op::Withdraw { name, .. }
            | Op::Typing { name, .. }
            | Op::Inspect { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// One entry of a `subscribed` reply's presence list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PresenceView {
    pub user: User,
    pub slot: usize,
    pub role: Role,
    pub meta: Option<u8>,
}

/// An answer as the model predicts it (the driver renders the owner's into this shape).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reply {
    /// An `unsubscribed` nobody asked for (after a token refresh), with its code.
    Dropped {
        name: usize,
        code: &'static str,
    },
    Created,
    Subscribed {
        recovered: bool,
        messages: Vec<u64>,
        /// The first [`PRESENCE_LIST_MAX`] connections in join order, and how many there
        /// are.
        presence: Vec<PresenceView>,
        presence_total: usize,
    },
    Unsubscribed,
    Published {
        id: u64,
        delivered: usize,
        queued: usize,
        /// For a REST broadcast: subscribed users online, and offline, that may see it.
        recipients: Option<(Vec<User>, Vec<User>)>,
    },
    /// `ok` to an ack or a presence update.
    Ok,
    /// A channel's detail: subscribers (user, online connections, cursor, unread), the
    /// newest kept messages the viewer may see, and the presence list.
    Detail {
        subscribers: Vec<(User, usize, u64, u64)>,
        recent: Vec<u64>,
        presence: Vec<PresenceView>,
    },
    Enrolled {
        new: bool,
        cursor: u64,
        recovered: bool,
        messages: Vec<u64>,
    },
    Withdrawn {
        removed: bool,
    },
    /// (channel name, `unread_count`), sorted by name.
    List(Vec<(String, u64)>),
    Error(&'static str),
}

/// What one step is seen to do: replies (to whom, for which step's request), and the
/// messages delivered live to each connection slot, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Obs {
    /// (caller, the step whose request it answers, the reply), in the order given.
    pub replies: Vec<(Caller, usize, Reply)>,
    /// slot → (channel name index, id) in delivery order.
    pub delivered: BTreeMap<usize, Vec<(usize, u64)>>,
    /// slot → (channel name index, who is typing) relayed to it.
    pub typing: BTreeMap<usize, Vec<(usize, User)>>,
}

#[derive(Clone, Debug)]
struct Msg {
    target: Option<User>,
    /// Role mask (0: every role).
    roles: u8,
}

/// The routing table the driver configures: `rsvp_update` → couple, coordinator.
pub const ROUTED_ROLES: u8 = (1 << Role::Couple as u8) | (1 << Role::Coordinator as u8);

fn role_admitted(roles: u8, role: Option<Role>) -> bool {
    roles == 0 || role.is_some_and(|r| roles & (1 << r as u8) != 0)
}

#[derive(Clone, Debug)]
struct OnlineSub {
    slot: usize,
    user: User,
    role: Role,
    meta: Option<u8>,
}

impl OnlineSub {
    fn view(&self) -> PresenceView {
        PresenceView {
            user: self.user,
            slot: self.slot,
            role: self.role,
            meta: self.meta,
        }
    }
}

#[derive(Clone, Debug)]
struct Chan {
    org: usize,
    wedding: Option<usize>,
    kind: Kind,
    creator: usize,
    members_named: Vec<User>,
    staff: bool,
    max_subscribers: usize,
    /// The creation is stored.
    stored: bool,
    /// When it was created (for the wedding's owner: the earliest channel's organization).
    created_seq: u64,
    /// Every message not rolled back, durable or pending, by id.
    messages: BTreeMap<u64, Msg>,
    durable_id: u64,
    /// Subscribed users and their cursors.
    subs: BTreeMap<User, u64>,
    /// The role each member's last joining connection held (absent: enrolled, never
    /// joined since); read only where `subs` has the user.
    roles: BTreeMap<User, Role>,
    /// Subscribed connections, in presence join order.
    online: Vec<OnlineSub>,
    /// The publish rate's bucket: what is used, in 1/`RATE_WINDOW_MS` tokens, and when.
    rate_used: u64,
    rate_at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Read,
    Write,
    Admin,
}

impl Chan {
    fn last_id(&self) -> u64 {
        self.messages
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.durable_id)
    }

    /// SPEC §1's access rule, from the SPEC: the tenant boundary, the organization's
    /// admin/service, private membership as (org, sub), then the role lists.
    fn check(&self, p: &Principal, action: Action) -> Result<(), &'static str> {
        match self.wedding {
            Some(w) => {
                let reaches = p.weddings.contains(&w) || (p.star && p.org == self.org);
                if !reaches {
                    return Err("WS_WEDDING_ISOLATION_VIOLATION");
                }
            }
            None => {
                if p.org != self.org {
                    return Err("WS_FORBIDDEN");
                }
            }
        }
        if p.role.org_wide() && p.org == self.org {
            return Ok(());
        }
        if self.kind == Kind::Private {
            let me = (p.org, p.sub);
            let creator = me == (self.org, self.creator);
            if !creator && !self.members_named.contains(&me) {
                return Err("WS_FORBIDDEN");
            }
        }
        let allowed = match (action, self.staff, self.kind) {
            (Action::Admin, true, _) => p.role == Role::Coordinator,
            (Action::Admin, false, Kind::Private) => p.role.org_wide(),
            (Action::Admin, false, _) => p.role.org_wide() || p.role == Role::Coordinator,
            (Action::Read, true, _) => STAFF_READ.contains(&p.role),
            (Action::Write, true, _) => STAFF_WRITE.contains(&p.role),
            (_, false, Kind::Private) => true,
            (Action::Read, false, _) => true,
            (Action::Write, false, Kind::Shared) => p.role != Role::Guest,
            (Action::Write, false, Kind::Broadcast) => matches!(
                p.role,
                Role::Coordinator | Role::Venue | Role::Admin | Role::Service
            ),
        };
        if allowed {
            Ok(())
        } else {
            Err("WS_FORBIDDEN")
        }
    }

    /// The kept window: the newest [`MAX_QUEUED`] stored messages (SPEC §2.2). Messages
    /// still being stored are never seen and never push a stored one out.
    fn kept(&self) -> Vec<u64> {
        let durable: Vec<u64> = self
            .messages
            .range(..=self.durable_id)
            .map(|(id, _)| *id)
            .collect();
        durable[durable.len().saturating_sub(MAX_QUEUED)..].to_vec()
    }

    fn may_see(&self, id: u64, viewer: User, role: Option<Role>) -> bool {
        let m = &self.messages[&id];
        m.target.is_none_or(|t| t == viewer) && role_admitted(m.roles, role)
    }

    fn member_role(&self, u: User) -> Option<Role> {
        self.roles.get(&u).copied()
    }

    /// What follows `position` for `viewer` holding `role`, and whether nothing after it
    /// was dropped.
    fn visible_after(&self, position: u64, viewer: User, role: Option<Role>) -> (bool, Vec<u64>) {
        let kept = self.kept();
        let first = kept.first().copied().unwrap_or(self.durable_id + 1);
        let (recovered, ids): (bool, Vec<u64>) = if position > self.durable_id {
            // A position from the future (another life's ids): not trusted.
            (false, kept)
        } else if position + 1 >= first {
            (true, kept.into_iter().filter(|id| *id > position).collect())
        } else {
            (false, kept)
        };
        (
            recovered,
            ids.into_iter()
                .filter(|id| self.may_see(*id, viewer, role))
                .collect(),
        )
    }

    /// As `role` (the reader's own), else as the member's recorded role.
    fn unread(&self, user: User, role: Option<Role>) -> Option<u64> {
        let cursor = *self.subs.get(&user)?;
        let role = role.or(self.member_role(user));
        Some(
            self.kept()
                .into_iter()
                .filter(|id| *id > cursor && self.may_see(*id, user, role))
                .count() as u64,
        )
    }

    /// Takes one publish from the channel's rate at `now` (SPEC §1's token bucket: refilled
    /// by `CHANNEL_RATE` per `RATE_WINDOW_MS`, at most `CHANNEL_RATE` at once).
    fn take_rate(&mut self, now: u64) -> bool {
        let refill = now.saturating_sub(self.rate_at) * CHANNEL_RATE;
        self.rate_used = self.rate_used.saturating_sub(refill);
        self.rate_at = self.rate_at.max(now);
        if self.rate_used + RATE_WINDOW_MS <= CHANNEL_RATE * RATE_WINDOW_MS {
            self.rate_used += RATE_WINDOW_MS;
            true
        } else {
            false
        }
    }

    fn is_online(&self, slot: usize) -> bool {
        self.online.iter().any(|o| o.slot == slot)
    }

    fn online_of(&self, user: User) -> usize {
        self.online.iter().filter(|o| o.user == user).count()
    }
}

#[derive(Clone, Debug)]
enum Pending {
    Created {
        to: Waiter,
        name: usize,
    },
    Message {
        to: Waiter,
        name: usize,
        id: u64,
        recipients: bool,
    },
    Repeat {
        to: Waiter,
        id: u64,
    },
}

/// Who waits for a pending answer: a caller, for its request of step `step`, on its
/// connection of generation `generation` (an answer to a connection that has gone since is
/// never seen).
#[derive(Clone, Copy, Debug)]
struct Waiter {
    to: Caller,
    step: usize,
    generation: u64,
}

/// The reference state.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub now: u64,
    step: usize,
    seq: u64,
    channels: BTreeMap<usize, Chan>,
    /// Idempotency keys per channel and publisher (SPEC §2 promise 4: a publish
    /// *repeated*; another user's key never answers for it): → (id, when).
    keys: BTreeMap<(usize, User, u8), (u64, u64)>,
    pending: Vec<Pending>,
    /// Connection generation per slot (a new connection after each disconnect/restart).
    pub generation: [u64; SLOTS],
    /// Which known divergences to predict (the owner's behaviour) instead of the SPEC's.
    known: Known,
    /// How often interesting branches were taken (printed by the `coverage` run).
    pub stats: BTreeMap<&'static str, usize>,
    restarted: bool,
    /// Connections whose token was refreshed to one without weddings ([`Op::Refresh`]).
    pub reduced: [bool; SLOTS],
    /// Weddings claimed by creates that were not stored ([`Known`]); until a restart.
    claimed: BTreeMap<usize, usize>,
}

impl Model {
    /// A model predicting the SPEC, except for the owner's `known` divergences.
    pub fn new(now: u64, known: Known) -> Model {
        Model {
            now,
            known,
            ..Model::default()
        }
    }

    /// Whether channel `name` exists (stored or being stored).
    pub fn exists(&self, name: usize) -> bool {
        self.channels.contains_key(&name)
    }

    fn hit(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    /// The claims a caller acts with now.
    pub fn principal(&self, c: Caller) -> Principal {
        match c {
            Caller::Conn(s) => {
                let mut p = PRINCIPALS[SLOT_PRINCIPAL[s]];
                if self.reduced[s] {
                    p.weddings = &[];
                    p.star = false;
                }
                p
            }
            Caller::Rest(p) => PRINCIPALS[p],
        }
    }

    /// The organization that owns channel `name`, if it exists.
    pub fn channel_org(&self, name: usize) -> Option<usize> {
        self.channels.get(&name).map(|c| c.org)
    }

    /// The presence list of channel `name` now: its first [`PRESENCE_LIST_MAX`]
    /// connections in join order.
    pub fn presence(&self, name: usize) -> Vec<PresenceView> {
        self.channels
            .get(&name)
            .map(|c| {
                c.online
                    .iter()
                    .take(PRESENCE_LIST_MAX)
                    .map(OnlineSub::view)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Users subscribed to `name` and their cursors (for checks against the registry).
    pub fn cursors(&self, name: usize) -> BTreeMap<User, u64> {
        self.channels
            .get(&name)
            .map(|c| c.subs.clone())
            .unwrap_or_default()
    }

    /// The owner of a wedding: the organization of its earliest channel (SPEC §1).
    fn wedding_owner(&self, w: usize) -> Option<usize> {
        if let Some(org) = self.claimed.get(&w) {
            return Some(*org);
        }
        self.channels
            .values()
            .filter(|c| c.wedding == Some(w))
            .min_by_key(|c| c.created_seq)
            .map(|c| c.org)
    }

    /// Applies `op` as step number `step` and predicts what is seen.
    pub fn apply(&mut self, step: usize, op: &Op) -> Obs {
        self.step = step;
        self.now += 1;
        let mut obs = Obs::default();
        match *op {
            Op::Create {
                by,
                name,
                kind,
                wedding,
                members,
                staff,
                max_subscribers,
                then,
            } => {
                self.create(
                    &mut obs,
                    by,
                    name,
                    kind,
                    wedding,
                    members,
                    staff,
                    max_subscribers,
                    then,
                );
                self.then(&mut obs, then);
            }
            Op::Subscribe {
                slot,
                name,
                last_seen,
                epoch,
                history,
            } => {
                let r = self.subscribe(slot, name, last_seen, epoch, history);
                obs.replies.push((Caller::Conn(slot), step, r));
            }
            Op::Unsubscribe { slot, name } => {
                let r = match self.channels.get_mut(&name) {
                    None => Reply::Error("WS_CHANNEL_NOT_FOUND"),
                    Some(c) => {
                        if let Some(i) = c.online.iter().position(|o| o.slot == slot) {
                            let o = c.online.remove(i);
                            if c.online_of(o.user) == 0 {
                                c.subs.remove(&o.user);
                            }
                        }
                        Reply::Unsubscribed
                    }
                };
                obs.replies.push((Caller::Conn(slot), step, r));
            }
            Op::Disconnect { slot } => {
                for c in self.channels.values_mut() {
                    c.online.retain(|o| o.slot != slot);
                }
                self.generation[slot] += 1;
                self.reduced[slot] = false;
            }
            Op::Publish {
                slot,
                name,
                target,
                roles,
                routed,
                key,
                rest,
                emergency,
                then,
            } => {
                let aim = (roles, routed);
                self.publish(
                    &mut obs, slot, name, target, aim, key, rest, emergency, then,
                );
                self.then(&mut obs, then);
            }
            Op::Ack { slot, name, id } => {
                let user = user_of(SLOT_PRINCIPAL[slot]);
                let r = match self.channels.get_mut(&name) {
                    None => Reply::Error("WS_CHANNEL_NOT_FOUND"),
                    Some(c) => {
                        let last = c.durable_id;
                        if let Some(cur) = c.subs.get_mut(&user) {
                            *cur = (*cur).max(id.min(last));
                        }
                        Reply::Ok
                    }
                };
                obs.replies.push((Caller::Conn(slot), step, r));
            }
            Op::Presence { slot, name, meta } => {
                let r = match self.channels.get_mut(&name) {
                    None => Reply::Error("WS_CHANNEL_NOT_FOUND"),
                    Some(c) => match c.online.iter_mut().find(|o| o.slot == slot) {
                        None => Reply::Error("WS_SUBSCRIPTION_FAILED"),
                        Some(o) => {
                            o.meta = Some(meta);
                            Reply::Ok
                        }
                    },
                };
                obs.replies.push((Caller::Conn(slot), step, r));
            }
            Op::Enroll {
                caller,
                sub,
                name,
                history,
            } => {
                let p = PRINCIPALS[caller];
                let user = (p.org, sub);
                let r = match self.channels.get_mut(&name) {
                    None => Reply::Error("WS_CHANNEL_NOT_FOUND"),
                    Some(c) => match c.check(&p, Action::Read) {
                        Err(e) => Reply::Error(e),
                        Ok(()) => {
                            let new = !c.subs.contains_key(&user);
                            if new && c.subs.len() >= c.max_subscribers {
                                Reply::Error("WS_CHANNEL_FULL")
                            } else {
                                if new {
                                    // A user enrolling itself brings its role; a service
                                    // enrolling it does not know one.
                                    if (p.org, p.sub) == user {
                                        c.roles.insert(user, p.role);
                                    } else {
                                        c.roles.remove(&user);
                                    }
                                }
                                let cursor = *c.subs.entry(user).or_insert(c.durable_id);
                                // History as the reader: its own token's role when it
                                // enrolls itself, else the member's recorded one.
                                let role = if (p.org, p.sub) == user {
                                    Some(p.role)
                                } else {
                                    c.member_role(user)
                                };
                                let (recovered, messages) = if history {
                                    c.visible_after(0, user, role)
                                } else {
                                    (true, vec![])
                                };
                                Reply::Enrolled {
                                    new,
                                    cursor,
                                    recovered,
                                    messages,
                                }
                            }
                        }
                    },
                };
                obs.replies.push((Caller::Rest(caller), step, r));
            }
            Op::Withdraw { caller, sub, name } => {
                let p = PRINCIPALS[caller];
                let r = match self.channels.get_mut(&name) {
                    None => Reply::Error("WS_CHANNEL_NOT_FOUND"),
                    Some(c) => match c.check(&p, Action::Read) {
                        Err(e) => Reply::Error(e),
                        Ok(()) => Reply::Withdrawn {
                            removed: c.subs.remove(&(p.org, sub)).is_some(),
                        },
                    },
                };
                obs.replies.push((Caller::Rest(caller), step, r));
            }
            Op::List { caller, sub } => {
                let p = PRINCIPALS[caller];
                let user = (p.org, sub);
                let mut list: Vec<(String, u64)> = self
                    .channels
                    .iter()
                    .filter(|(_, c)| c.check(&p, Action::Read).is_ok())
                    .filter_map(|(n, c)| {
                        // The reader's own role when it asks for itself.
                        let role = ((p.org, p.sub) == user).then_some(p.role);
                        Some((NAMES[*n].0.to_owned(), c.unread(user, role)?))
                    })
                    .collect();
                list.sort();
                obs.replies
                    .push((Caller::Rest(caller), step, Reply::List(list)));
            }
            Op::Flush { fail } => self.complete(&mut obs, !fail),
            Op::Wait => self.now += WAIT_MS,
            Op::Tick => {}
            Op::Retention => self.complete(&mut obs, true),
            Op::Inspect { caller, name } => {
                let p = PRINCIPALS[caller];
                let r = match self.channels.get(&name) {
                    None => Reply::Error("WS_CHANNEL_NOT_FOUND"),
                    // Only the channel organization's admin and service look.
                    Some(c) if !(p.role.org_wide() && p.org == c.org) => {
                        Reply::Error(c.check(&p, Action::Admin).err().unwrap_or("WS_FORBIDDEN"))
                    }
                    Some(c) => Reply::Detail {
                        subscribers: c
                            .subs
                            .iter()
                            .map(|(u, cur)| {
                                (*u, c.online_of(*u), *cur, c.unread(*u, None).unwrap_or(0))
                            })
                            .collect(),
                        // The viewer is the admin: a message targeted at anyone else is
                        // not shown, not even on its channel's own admin page.
                        recent: c.visible_after(0, (p.org, p.sub), Some(p.role)).1,
                        presence: c
                            .online
                            .iter()
                            .take(PRESENCE_LIST_MAX)
                            .map(OnlineSub::view)
                            .collect(),
                    },
                };
                obs.replies.push((Caller::Rest(caller), step, r));
            }
            Op::Typing { slot, name } => {
                let user = user_of(SLOT_PRINCIPAL[slot]);
                let r = match self.channels.get(&name) {
                    None => Reply::Error("WS_CHANNEL_NOT_FOUND"),
                    Some(c) if !c.is_online(slot) => Reply::Error("WS_SUBSCRIPTION_FAILED"),
                    Some(c) => {
                        for o in c.online.iter().filter(|o| o.slot != slot) {
                            obs.typing.entry(o.slot).or_default().push((name, user));
                        }
                        Reply::Ok
                    }
                };
                obs.replies.push((Caller::Conn(slot), step, r));
            }
            Op::Refresh { slot } => {
                self.reduced[slot] = true;
                let p = self.principal(Caller::Conn(slot));
                for (name, c) in self.channels.iter_mut() {
                    let Some(i) = c.online.iter().position(|o| o.slot == slot) else {
                        continue;
                    };
                    let Err(code) = c.check(&p, Action::Read) else {
                        continue;
                    };
                    let o = c.online.remove(i);
                    if c.online_of(o.user) == 0 {
                        c.subs.remove(&o.user);
                    }
                    let r = Reply::Dropped { name: *name, code };
                    obs.replies.push((Caller::Conn(slot), usize::MAX, r));
                }
            }
            Op::Restart => self.restart(),
        }
        obs
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        obs: &mut Obs,
        by: Caller,
        name: usize,
        kind: Kind,
        wedding: Option<usize>,
        members: u8,
        staff: bool,
        max_subscribers: Option<usize>,
        then: Then,
    ) {
        let step = self.step;
        let p = self.principal(by);
        let wedding = NAMES[name].1.or(wedding);
        if let Some(c) = self.channels.get(&name) {
            // An existing name: the same error a subscribe would get; another organization
            // with access is told WS_FORBIDDEN; its own organization gets the channel.
            let r = c.check(&p, Action::Read).and_then(|()| {
                let own = c.org == p.org;
                own.then_some(()).ok_or("WS_FORBIDDEN")
            });
            match r {
                Err(e) => obs.replies.push((by, step, Reply::Error(e))),
                Ok(()) if !c.stored => {
                    let to = self.waiter(by);
                    self.pending.push(Pending::Created { to, name })
                }
                Ok(()) => obs.replies.push((by, step, Reply::Created)),
            }
            return;
        }
        if p.role == Role::Guest {
            obs.replies.push((by, step, Reply::Error("WS_FORBIDDEN")));
            return;
        }
        if let Some(w) = wedding {
            let owner = self.wedding_owner(w);
            let listed = p.weddings.contains(&w);
            let star = p.star && owner.is_none_or(|o| o == p.org);
            if !listed && !star {
                obs.replies
                    .push((by, step, Reply::Error("WS_WEDDING_ISOLATION_VIOLATION")));
                return;
            }
        }
        // SPEC §1 tiers: channels per organization (those being stored count).
        if self.channels.values().filter(|c| c.org == p.org).count() >= CHANNELS_PER_ORG {
            obs.replies.push((by, step, Reply::Error("WS_TIER_LIMIT")));
            return;
        }
        if let Some(w) = wedding {
            if self.known.unstored_create_claims_wedding && self.wedding_owner(w).is_none() {
                self.claimed.insert(w, p.org);
            }
        }
        if then == Then::Refuse {
            obs.replies.push((by, step, Reply::Error("WS_OVERLOADED")));
            return;
        }
        self.seq += 1;
        self.channels.insert(
            name,
            Chan {
                org: p.org,
                wedding,
                kind,
                creator: p.sub,
                members_named: if kind == Kind::Private {
                    members_of(members, p.org)
                } else {
                    vec![]
                },
                staff,
                max_subscribers: max_subscribers.unwrap_or(100),
                stored: false,
                created_seq: self.seq,
                messages: BTreeMap::new(),
                durable_id: 0,
                subs: BTreeMap::new(),
                roles: BTreeMap::new(),
                online: Vec::new(),
                rate_used: 0,
                rate_at: self.now,
            },
        );
        let to = self.waiter(by);
        self.pending.push(Pending::Created { to, name });
    }

    /// After a create or publish, whatever it did: `Commit` and `Fail` complete everything
    /// pending (group commit: the log answers for all of it at once).
    fn then(&mut self, obs: &mut Obs, then: Then) {
        match then {
            Then::Commit => self.complete(obs, true),
            Then::Fail => self.complete(obs, false),
            Then::Hold | Then::Refuse => {}
        }
    }

    fn subscribe(
        &mut self,
        slot: usize,
        name: usize,
        last_seen: Option<u64>,
        epoch: EpochArg,
        history: bool,
    ) -> Reply {
        let p = self.principal(Caller::Conn(slot));
        let user = (p.org, p.sub);
        let Some(c) = self.channels.get_mut(&name) else {
            return Reply::Error("WS_CHANNEL_NOT_FOUND");
        };
        if let Err(e) = c.check(&p, Action::Read) {
            return Reply::Error(e);
        }
        let repeat = c.is_online(slot);
        if !repeat && !c.subs.contains_key(&user) && c.subs.len() >= c.max_subscribers {
            return Reply::Error("WS_CHANNEL_FULL");
        }
        let epoch_ok = epoch != EpochArg::Stale;
        let client = if epoch_ok { last_seen } else { None };
        let stored = c.subs.get(&user).copied();
        let position = match (stored, client) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let restarted = self.restarted;
        let (recovered, messages) = match position {
            Some(pos) => {
                let (r, m) = c.visible_after(pos, user, Some(p.role));
                *self
                    .stats
                    .entry(match (r && epoch_ok, m.is_empty(), restarted) {
                        (true, false, true) => "resume with messages after a restart",
                        (true, false, false) => "resume with messages",
                        (false, _, _) => "resume not recovered",
                        (true, true, _) => "resume with nothing missed",
                    })
                    .or_default() += 1;
                (r && epoch_ok, m)
            }
            None if !epoch_ok || history => (epoch_ok, c.visible_after(0, user, Some(p.role)).1),
            None => (true, vec![]),
        };
        if !repeat {
            let last = c.durable_id;
            c.subs
                .entry(user)
                .or_insert(position.unwrap_or(last).min(last));
            c.roles.insert(user, p.role);
            c.online.push(OnlineSub {
                slot,
                user,
                role: p.role,
                meta: None,
            });
        }
        let presence = c
            .online
            .iter()
            .take(PRESENCE_LIST_MAX)
            .map(OnlineSub::view)
            .collect();
        Reply::Subscribed {
            recovered,
            messages,
            presence,
            presence_total: c.online.len(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        obs: &mut Obs,
        slot: usize,
        name: usize,
        target: Option<(Option<usize>, usize)>,
        (roles, routed): (u8, bool),
        key: Option<u8>,
        rest: bool,
        emergency: bool,
        then: Then,
    ) {
        let step = self.step;
        let to = if rest {
            Caller::Rest(SLOT_PRINCIPAL[slot])
        } else {
            Caller::Conn(slot)
        };
        let p = self.principal(to);
        let Some(c) = self.channels.get_mut(&name) else {
            obs.replies
                .push((to, step, Reply::Error("WS_CHANNEL_NOT_FOUND")));
            return;
        };
        if let Err(e) = c.check(&p, Action::Write) {
            obs.replies.push((to, step, Reply::Error(e)));
            return;
        }
        if let Some(k) = key {
            if let Some(&(id, at)) = self.keys.get(&(name, (p.org, p.sub), k)) {
                if self.now.saturating_sub(at) <= IDEMPOTENCY_WINDOW_MS {
                    *self
                        .stats
                        .entry(if id <= c.durable_id {
                            "idempotent repeat of a stored message"
                        } else {
                            "idempotent repeat of a message being stored"
                        })
                        .or_default() += 1;
                    if id <= c.durable_id {
                        obs.replies.push((
                            to,
                            step,
                            Reply::Published {
                                id,
                                delivered: 0,
                                queued: 0,
                                recipients: None,
                            },
                        ));
                    } else {
                        let to = self.waiter(to);
                        self.pending.push(Pending::Repeat { to, id });
                    }
                    return;
                }
            }
        }
        if emergency {
            // SPEC §2: only for the roles of the channel's `admin` list (and its
            // organization's admin/service); a refusal is audited like any other.
            if c.check(&p, Action::Admin).is_err() {
                obs.replies.push((to, step, Reply::Error("WS_FORBIDDEN")));
                *self.stats.entry("emergency refused").or_default() += 1;
                return;
            }
            *self.stats.entry("emergency taken").or_default() += 1;
        }
        // An emergency skips the channel's rate (its own per-user ceiling is set out of
        // reach by the driver).
        if !emergency && !c.take_rate(self.now) {
            obs.replies
                .push((to, step, Reply::Error("WS_RATE_LIMITED")));
            return;
        }
        if then == Then::Refuse {
            obs.replies.push((to, step, Reply::Error("WS_OVERLOADED")));
            return;
        }
        let id = c.last_id() + 1;
        if key.is_some_and(|k| self.keys.contains_key(&(name, (p.org, p.sub), k))) {
            *self
                .stats
                .entry("idempotency key reused after its window")
                .or_default() += 1;
        }
        let target = target.map(|(org, sub)| (org.unwrap_or(p.org), sub));
        // Named roles, else the routing table's for the type (never for an emergency).
        let roles = match (target, roles) {
            (Some(_), _) => 0,
            (None, r) if r != 0 => r,
            (None, _) if routed && !emergency => ROUTED_ROLES,
            _ => 0,
        };
        if roles != 0 {
            *self.stats.entry("role-targeted publish").or_default() += 1;
        }
        c.messages.insert(id, Msg { target, roles });
        if let Some(k) = key {
            self.keys.insert((name, (p.org, p.sub), k), (id, self.now));
        }
        let to = self.waiter(to);
        self.pending.push(Pending::Message {
            to,
            name,
            id,
            recipients: rest,
        });
    }

    fn waiter(&self, to: Caller) -> Waiter {
        Waiter {
            to,
            step: self.step,
            generation: match to {
                Caller::Conn(s) => self.generation[s],
                Caller::Rest(_) => 0,
            },
        }
    }

    /// An answer that waited: seen unless its connection has gone.
    fn answer(&self, obs: &mut Obs, w: Waiter, r: Reply) {
        let gone = matches!(w.to, Caller::Conn(s) if self.generation[s] != w.generation);
        if !gone {
            obs.replies.push((w.to, w.step, r));
        }
    }

    /// The log answered for everything pending: stored (`ok`), or the store failed and
    /// everything waiting is refused and forgotten — ids, keys, channels being created.
    fn complete(&mut self, obs: &mut Obs, ok: bool) {
        let pending = std::mem::take(&mut self.pending);
        if !ok {
            for p in &pending {
                let (Pending::Created { to, .. }
                | Pending::Message { to, .. }
                | Pending::Repeat { to, .. }) = p;
                self.answer(obs, *to, Reply::Error("WS_INTERNAL"));
            }
            if !pending.is_empty() {
                self.hit("failed store with something pending");
            }
            // A channel never stored is gone: whoever subscribed while it was being stored
            // is told, with the store's refusal.
            for (name, c) in self.channels.iter().filter(|(_, c)| !c.stored) {
                for o in &c.online {
                    let r = Reply::Dropped {
                        name: *name,
                        code: "WS_INTERNAL",
                    };
                    obs.replies.push((Caller::Conn(o.slot), usize::MAX, r));
                    *self
                        .stats
                        .entry("subscriber of a dropped channel told")
                        .or_default() += 1;
                }
            }
            self.forget_unstored();
            return;
        }
        for p in pending {
            match p {
                Pending::Created { to, name } => {
                    if let Some(c) = self.channels.get_mut(&name) {
                        c.stored = true;
                    }
                    self.answer(obs, to, Reply::Created);
                }
                Pending::Repeat { to, id } => self.answer(
                    obs,
                    to,
                    Reply::Published {
                        id,
                        delivered: 0,
                        queued: 0,
                        recipients: None,
                    },
                ),
                Pending::Message {
                    to,
                    name,
                    id,
                    recipients,
                } => {
                    let c = self.channels.get_mut(&name).expect("pending channel");
                    c.durable_id = id;
                    let mut delivered = 0;
                    for o in &c.online {
                        if c.may_see(id, o.user, Some(o.role)) {
                            delivered += 1;
                            obs.delivered.entry(o.slot).or_default().push((name, id));
                            let m = &c.messages[&id];
                            if m.target.is_some() || m.roles != 0 {
                                *self.stats.entry("targeted live delivery").or_default() += 1;
                            }
                        } else {
                            *self
                                .stats
                                .entry("targeted, withheld from a subscriber")
                                .or_default() += 1;
                        }
                    }
                    let queued = c
                        .subs
                        .keys()
                        .filter(|u| c.online_of(**u) == 0)
                        .filter(|u| c.may_see(id, **u, c.member_role(**u)))
                        .count();
                    let recipients = recipients.then(|| {
                        let (mut online, mut offline) = (vec![], vec![]);
                        for u in c.subs.keys() {
                            if c.online_of(*u) > 0 {
                                let live = c
                                    .online
                                    .iter()
                                    .any(|o| o.user == *u && c.may_see(id, *u, Some(o.role)));
                                if live {
                                    online.push(*u);
                                }
                            } else if c.may_see(id, *u, c.member_role(*u)) {
                                offline.push(*u);
                            }
                        }
                        (online, offline)
                    });
                    let r = Reply::Published {
                        id,
                        delivered,
                        queued,
                        recipients,
                    };
                    self.answer(obs, to, r);
                }
            }
        }
    }

    /// Drops everything not stored: channels being created, messages being stored, and
    /// their idempotency keys.
    fn forget_unstored(&mut self) {
        self.channels.retain(|_, c| c.stored);
        for (name, c) in self.channels.iter_mut() {
            let d = c.durable_id;
            c.messages.retain(|id, _| *id <= d);
            self.keys.retain(|(n, _, _), (id, _)| n != name || *id <= d);
        }
        let names: BTreeSet<usize> = self.channels.keys().copied().collect();
        self.keys.retain(|(n, _, _), _| names.contains(n));
    }

    fn restart(&mut self) {
        self.restarted = true;
        if self.channels.values().any(|c| !c.subs.is_empty()) {
            self.hit("restart with subscriptions");
        }
        self.claimed.clear();
        // Pending work never got an answer; it was not stored.
        self.pending.clear();
        self.forget_unstored();
        for c in self.channels.values_mut() {
            c.online.clear();
            // Rates live in memory: a restarted channel's bucket is full.
            c.rate_used = 0;
        }
        for g in self.generation.iter_mut() {
            *g += 1;
        }
        self.reduced = [false; SLOTS];
        // Keys come back from the stored frames, each for what is left of its window.
        let now = self.now;
        self.keys
            .retain(|_, (_, at)| now.saturating_sub(*at) < IDEMPOTENCY_WINDOW_MS);
    }
}

// ---- the generator ----

fn then() -> impl Strategy<Value = Then> {
    prop_oneof![
        8 => Just(Then::Commit),
        2 => Just(Then::Hold),
        1 => Just(Then::Fail),
        1 => Just(Then::Refuse),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Shared),
        1 => Just(Kind::Broadcast),
        2 => Just(Kind::Private),
    ]
}

fn caller() -> impl Strategy<Value = Caller> {
    prop_oneof![
        4 => (0..SLOTS).prop_map(Caller::Conn),
        1 => (0..PRINCIPALS.len()).prop_map(Caller::Rest),
    ]
}

/// A channel name: the sequence's `focus` three times in five, so that operations meet.
fn name_near(focus: usize) -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(focus), 2 => 0..NAMES.len()]
}

/// One random operation, mostly on channel `focus`. Weighted so that publishes, subscribes
/// and acks dominate.
pub fn op(focus: usize) -> impl Strategy<Value = Op> {
    let name = move || name_near(focus);
    prop_oneof![
        4 => (caller(), name(), kind(), proptest::option::of(0..WEDDINGS.len()), 0u8..8, prop::bool::weighted(0.15),
              prop_oneof![4 => Just(None), 1 => (1usize..3).prop_map(Some)], then())
            .prop_map(|(by, name, kind, wedding, members, staff, max_subscribers, then)| Op::Create {
                by, name, kind, wedding, members, staff, max_subscribers, then
            }),
        9 => (0..SLOTS, name(), proptest::option::of(0u64..10),
              prop_oneof![4 => Just(EpochArg::None), 2 => Just(EpochArg::Current), 1 => Just(EpochArg::Stale)],
              any::<bool>())
            .prop_map(|(slot, name, last_seen, epoch, history)| Op::Subscribe { slot, name, last_seen, epoch, history }),
        1 => (0..SLOTS, name()).prop_map(|(slot, name)| Op::Unsubscribe { slot, name }),
        1 => (0..SLOTS).prop_map(|slot| Op::Disconnect { slot }),
        12 => (0..SLOTS, name(),
              prop_oneof![
                  3 => Just((None, 0u8)),
                  2 => (proptest::option::of(0..ORGS.len()), 0..SUBS.len()).prop_map(|t| (Some(t), 0u8)),
                  2 => (1u8..128).prop_map(|r| (None, r)),
              ],
              prop::bool::weighted(0.3),
              proptest::option::of(0u8..2), prop::bool::weighted(0.15), prop::bool::weighted(0.1), then())
            .prop_map(|(slot, name, (target, roles), routed, key, rest, emergency, then)| Op::Publish { slot, name, target, roles, routed, key, rest, emergency, then }),
        3 => (0..SLOTS, name(), 0u64..12).prop_map(|(slot, name, id)| Op::Ack { slot, name, id }),
        1 => (0..SLOTS, name(), 0u8..3).prop_map(|(slot, name, meta)| Op::Presence { slot, name, meta }),
        2 => (0..PRINCIPALS.len(), 0..SUBS.len(), name(), any::<bool>())
            .prop_map(|(caller, sub, name, history)| Op::Enroll { caller, sub, name, history }),
        1 => (0..PRINCIPALS.len(), 0..SUBS.len(), name())
            .prop_map(|(caller, sub, name)| Op::Withdraw { caller, sub, name }),
        2 => (0..PRINCIPALS.len(), 0..SUBS.len()).prop_map(|(caller, sub)| Op::List { caller, sub }),
        1 => prop::bool::weighted(0.25).prop_map(|fail| Op::Flush { fail }),
        1 => Just(Op::Wait),
        3 => Just(Op::Tick),
        1 => (0..SLOTS, name()).prop_map(|(slot, name)| Op::Typing { slot, name }),
        1 => (0..SLOTS).prop_map(|slot| Op::Refresh { slot }),
        1 => (0..PRINCIPALS.len(), name()).prop_map(|(caller, name)| Op::Inspect { caller, name }),
        1 => Just(Op::Retention),
        1 => Just(Op::Restart),
    ]
}

/// A create that succeeds (a creator allowed to name the channel's wedding), stored at
/// once: the start of every sequence, so that most later operations find channels.
fn setup_create(only: Option<usize>) -> impl Strategy<Value = Op> {
    // (name, slot of the creator, wedding for names outside the `wedding` scope)
    let mut valid: Vec<(usize, usize, Option<usize>)> = vec![
        (0, 0, None),
        (0, 1, None),
        (1, 1, None),
        (1, 4, None),
        (2, 0, None),
        (2, 4, None),
        (2, 5, None),
        (2, 1, Some(0)),
        (3, 0, Some(0)),
        (3, 2, None),
        (3, 1, Some(1)),
        (3, 4, None),
    ];
    if let Some(n) = only {
        valid.retain(|v| v.0 == n);
    }
    (
        prop::sample::select(valid),
        kind(),
        0u8..8,
        prop_oneof![4 => Just(None), 1 => (1usize..3).prop_map(Some)],
    )
        .prop_map(
            |((name, slot, wedding), kind, members, max_subscribers)| Op::Create {
                by: Caller::Conn(slot),
                name,
                kind,
                wedding,
                members,
                staff: false,
                max_subscribers,
                then: Then::Commit,
            },
        )
}

/// A sequence: a channel in focus, created first with one to three others, then up to
/// `max` random operations, mostly on it.
pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    (0..NAMES.len()).prop_flat_map(move |focus| {
        (
            setup_create(Some(focus)),
            proptest::collection::vec(setup_create(None), 1..4),
            proptest::collection::vec(op(focus), 1..max),
        )
            .prop_map(|(first, mut a, b)| {
                a.insert(0, first);
                a.extend(b);
                a
            })
    })
}
