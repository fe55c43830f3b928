//! A model-based test of the channel owner (issue 11 item 6): random sequences of
//! operations from three organizations whose users share ids, two weddings, every channel
//! type and several roles — create, subscribe (with and without a position, epoch or
//! history), unsubscribe, disconnect, open and targeted publishes with and without
//! idempotency keys (over WebSocket, and over REST with `delivery_guarantees`), `emergency`
//! publishes (the channel's admin roles only, past the channel's rate), acks,
//! presence, typing, token refresh, REST enroll/withdraw/list/detail, stores that commit
//! late or fail, retention rounds, the clock passing the idempotency window, and restarts,
//! with small limits so they are met (kept window 4, presence lists 2, channels per
//! organization 2, 5 publishes per channel per minute) —
//! go through the real owner with an in-memory log and registry, and every observation is
//! compared with the reference model in `owner_model/model.rs`: replies and error codes,
//! who gets which message live (in id order per channel), resume and history,
//! `delivered_count`/`queued_count` and recipients, `unread_count`, the admin detail,
//! presence lists after each flush, typing relays, the registry's cursors, and an audit
//! record for every refusal of the access rule.
//!
//! `cargo test` runs 128 sequences of up to ~85 steps (under two seconds in debug); a
//! longer run: `PROPTEST_CASES=20000 cargo test -p ringbearer-io --test owner_model`, and
//! what it exercised: `PROPTEST_CASES=2000 cargo test -p ringbearer-io --test owner_model
//! coverage -- --ignored --nocapture`. The `regression_*` cases are sequences it found
//! (all fixed; one marked `#[ignore]` would be an owner bug not fixed yet).
//!
//! The driver plays the host for two shards: it hands each request to the owner of its
//! channel (`ringbearer_io::owner::Owner::handle`, time as an argument), completes the
//! log's pending stores when the sequence says (or fails them), applies the registry
//! records to a registry that behaves as `persist`'s, runs retention rounds as
//! `io/src/runtime/tasks.rs` does, and rebuilds the owners with `owner::rebuild` on a restart.
//! Which connection of a shard a `Deliver` reaches is the test's own few lines applying
//! `may_see` to the subscriptions the owner confirmed, by channel name as
//! `io/src/host/mod.rs` does (the host's fan-out is tested with real sockets in
//! `server/tests/`).

#[path = "owner_model/model.rs"]
mod model;

use model::{Caller, EpochArg, Kind, Model, Obs, Op, PresenceView, Reply, Then};
use proptest::prelude::*;
use ringbearer_core::access::RoleSet;
use ringbearer_core::channel_state::ConnRef;
use ringbearer_core::identity::may_see;
use ringbearer_core::message::{access_frame, FrameBytes};
use ringbearer_core::protocol::{parse_request, Request as Parsed, SubscribeReq};
use ringbearer_core::{ChannelName, Claims, Tier, UserKey};
use ringbearer_io::journal::{Entry, Journal, JournalError, LocalBoxFuture};
use ringbearer_io::owner::rebuild::{rebuild, LogRecord};
use ringbearer_io::owner::{self, ChannelEvent, Effect, Effects, Now, Owner, Record, Request};
use ringbearer_io::IoConfig;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 2;

// ---- an in-memory log ----

/// A log held in memory: positions count appends; the test decides when they are durable
/// or fail (a failed store loses everything not yet durable). Records are kept as the log
/// returns them to recovery.
#[derive(Default)]
struct MemJournal {
    records: RefCell<Vec<(u64, LogRecord)>>,
    next: Cell<u64>,
    durable: Cell<u64>,
    refuse: Cell<bool>,
}

impl MemJournal {
    fn stored(&self, upto: u64) {
        self.durable.set(self.durable.get().max(upto));
    }
    /// The store failed (or the process died): what was not durable is gone.
    fn failed(&self) {
        let d = self.durable.get();
        self.records.borrow_mut().retain(|r| r.0 <= d);
    }
}

impl Journal for MemJournal {
    fn append(&self, channel: &str, ts_ms: u64, entry: Entry<'_>) -> Result<u64, JournalError> {
        if self.refuse.get() {
            return Err(JournalError::Backpressure("test".into()));
        }
        let pos = self.next.get() + 1;
        self.next.set(pos);
        let (id, body) = match entry {
            Entry::Channel { meta_json } => (0, meta_json.to_vec()),
            Entry::Message { id, frame } => (id, frame.to_vec()),
        };
        self.records.borrow_mut().push((
            pos,
            LogRecord {
                channel: channel.to_owned(),
                id,
                ts_ms,
                body,
            },
        ));
        Ok(pos)
    }
    fn durable(&self, _: u64) -> LocalBoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async { Ok(()) })
    }
    fn segments(&self) -> usize {
        1
    }
    fn close(&self) -> LocalBoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async { Ok(()) })
    }
    fn reclaim(
        &self,
        _: ringbearer_io::journal::IsLive,
    ) -> LocalBoxFuture<'_, Result<usize, JournalError>> {
        Box::pin(async { Ok(0) })
    }
}

// ---- translation between the model's world and real requests ----

fn core_role(r: model::Role) -> ringbearer_core::Role {
    ringbearer_core::Role::parse(r.as_str()).expect("a role")
}

fn claims(p: usize) -> Arc<Claims> {
    let pr = model::PRINCIPALS[p];
    let mut weddings: Vec<String> = pr
        .weddings
        .iter()
        .map(|w| model::WEDDINGS[*w].to_owned())
        .collect();
    if pr.star {
        weddings.push("*".into());
    }
    Arc::new(Claims {
        sub: model::SUBS[pr.sub].into(),
        org: model::ORGS[pr.org].into(),
        role: core_role(pr.role),
        tier: Tier::Enterprise,
        weddings,
        exp: u64::MAX,
        nbf: None,
    })
}

fn user_key(u: model::User) -> UserKey {
    UserKey::new(model::ORGS[u.0], model::SUBS[u.1])
}

fn model_user(u: &UserKey) -> model::User {
    (
        model::ORGS.iter().position(|o| *o == u.org).expect("org"),
        model::SUBS.iter().position(|s| *s == u.sub).expect("sub"),
    )
}

fn channel(name: usize) -> ChannelName {
    ChannelName::parse(model::NAMES[name].0).expect("valid")
}

fn name_index(s: &str) -> usize {
    model::NAMES
        .iter()
        .position(|(n, _)| *n == s)
        .unwrap_or_else(|| panic!("unknown channel {s}"))
}

fn owner_of(name: &str) -> usize {
    ringbearer_core::shard_for(name, SHARDS)
}

fn ids(frames: &[Arc<FrameBytes>]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| access_frame(f).expect("frame").id())
        .collect()
}

const CALL_BIT: u64 = 1 << 63;
/// The clock of step 0.
const T0: u64 = 1_800_000_000_000;

/// Two shards' owners as the host runs them, with the connection side reduced to "which
/// slot is subscribed to what".
struct World {
    cfg: Rc<IoConfig>,
    owners: Vec<Owner>,
    journals: Vec<Rc<MemJournal>>,
    /// The registry: subscriptions with their cursors and roles per channel, from the
    /// owners' records.
    registry: BTreeMap<String, BTreeMap<UserKey, (u64, Option<ringbearer_core::Role>)>>,
    /// The `channel_id` of each channel row in the registry.
    registry_ids: HashMap<String, String>,
    boot: u64,
    now: u64,
    generation: [u64; model::SLOTS],
    /// slot → channels its current connection is subscribed to (confirmed by the owner).
    host: BTreeMap<usize, BTreeSet<String>>,
    /// Epoch and channel id per channel name, as last answered.
    epochs: HashMap<String, String>,
    ids: HashMap<String, String>,
    /// Problems seen while reading the owner's output (beyond the model's shapes).
    anomalies: Vec<String>,
    /// step → the principal of that step's REST call.
    rest: HashMap<usize, usize>,
    /// (slot, channel) → the presence list its connection holds: the `subscribed` list
    /// with every `presence_diff`/`presence_state` since applied, by `connection_id`.
    views: BTreeMap<(usize, String), BTreeMap<String, PresenceView>>,
    known: model::Known,
    /// Connections whose token was refreshed to one without weddings.
    reduced: [bool; model::SLOTS],
    /// This step's audited refusals: (actor, channel, channel's organization, code).
    denied: Vec<(model::User, Option<String>, Option<String>, String)>,
}

impl World {
    fn new(known: model::Known) -> World {
        let mut cfg = IoConfig::default();
        cfg.limits.max_queued = model::MAX_QUEUED;
        cfg.limits.presence_list_max = model::PRESENCE_LIST_MAX;
        cfg.limits.tiers.enterprise.channels_per_org = model::CHANNELS_PER_ORG as u32;
        cfg.limits.channel_messages_per_min = model::CHANNEL_RATE as u32;
        // The model does not count per-user ceilings: out of reach.
        cfg.limits.emergency_messages_per_min = 1_000_000;
        cfg.limits.rate_window_ms = model::RATE_WINDOW_MS;
        // The routing table the model knows (`model::ROUTED_ROLES`).
        cfg.routing.default.insert(
            "rsvp_update".into(),
            RoleSet::of([
                ringbearer_core::Role::Couple,
                ringbearer_core::Role::Coordinator,
            ]),
        );
        let mut w = World {
            cfg: Rc::new(cfg),
            owners: Vec::new(),
            journals: (0..SHARDS).map(|_| Rc::default()).collect(),
            registry: BTreeMap::new(),
            registry_ids: HashMap::new(),
            boot: 1,
            now: T0,
            generation: [0; model::SLOTS],
            host: BTreeMap::new(),
            epochs: HashMap::new(),
            ids: HashMap::new(),
            anomalies: Vec::new(),
            rest: HashMap::new(),
            views: BTreeMap::new(),
            known,
            reduced: [false; model::SLOTS],
            denied: Vec::new(),
        };
        w.owners = w.fresh_owners();
        w
    }

    fn fresh_owners(&self) -> Vec<Owner> {
        let policy = Arc::new(ringbearer_io::policy::Policy::default());
        let weddings = ringbearer_io::weddings::Weddings::default();
        (0..SHARDS)
            .map(|i| {
                let journal: Rc<dyn Journal> = self.journals[i].clone();
                Owner::new(
                    i as u32,
                    SHARDS,
                    self.cfg.clone(),
                    self.boot,
                    Some(journal),
                    policy.clone(),
                    weddings.clone(),
                )
            })
            .collect()
    }

    /// The claims a caller acts with now (a refreshed connection's reduced token).
    fn claims_for(&self, c: Caller) -> Arc<Claims> {
        let mut cl = claims(c.principal());
        if let Caller::Conn(s) = c {
            if self.reduced[s] {
                Arc::make_mut(&mut cl).weddings.clear();
            }
        }
        cl
    }

    fn conn(&self, slot: usize) -> ConnRef {
        ConnRef {
            shard: (slot % SHARDS) as u32,
            conn: 1000 * (slot as u64 + 1) + self.generation[slot],
        }
    }

    /// The slot of a current connection (None: a call, or an older connection).
    fn slot_of(&self, c: ConnRef) -> Option<usize> {
        if c.conn & CALL_BIT != 0 {
            return None;
        }
        let slot = (c.conn / 1000 - 1) as usize;
        (slot < model::SLOTS && self.conn(slot) == c).then_some(slot)
    }

    fn call(step: usize) -> ConnRef {
        ConnRef {
            shard: 0,
            conn: CALL_BIT | step as u64,
        }
    }

    fn at(&self) -> Now {
        Now::at(self.now)
    }

    /// Hands `op` to the owner of `name` and applies what comes out.
    fn ask_owner(
        &mut self,
        name: &str,
        from: ConnRef,
        claims: Arc<Claims>,
        r: &str,
        op: owner::Op,
        obs: &mut Obs,
    ) {
        let req = Request {
            from,
            r#ref: Some(r.to_owned()),
            claims,
            op,
        };
        let now = self.at();
        let fx = self.owners[owner_of(name)].handle(now, req);
        self.apply_effects(fx, obs);
    }

    fn apply_effects(&mut self, fx: Effects, obs: &mut Obs) {
        for e in fx.list {
            match e {
                Effect::Reply { to, r#ref, reply } => self.reply(to, r#ref, reply, obs),
                Effect::Deliver { shard, frame } => {
                    let f = access_frame(&frame).expect("frame");
                    let name = f.channel.as_str().to_owned();
                    let id = f.id();
                    let target = f.target().map(|(o, s)| (o.to_owned(), s.to_owned()));
                    let roles = f.target_roles();
                    for (slot, chans) in &self.host {
                        if *slot % SHARDS != shard as usize || !chans.contains(&name) {
                            continue;
                        }
                        let principal = model::SLOT_PRINCIPAL[*slot];
                        let viewer = user_key(model::user_of(principal));
                        let role = core_role(model::PRINCIPALS[principal].role);
                        let t = target.as_ref().map(|(o, s)| (o.as_str(), s.as_str()));
                        if may_see(t, roles, &viewer, Some(role)) {
                            obs.delivered
                                .entry(*slot)
                                .or_default()
                                .push((name_index(&name), id));
                        }
                    }
                }
                Effect::Event {
                    shard,
                    channel,
                    event,
                    except,
                } => {
                    let name = channel.as_str().to_owned();
                    let slots: Vec<usize> = self
                        .host
                        .iter()
                        .filter(|(slot, chans)| {
                            **slot % SHARDS == shard as usize
                                && chans.contains(&name)
                                && !except.contains(&self.conn(**slot))
                        })
                        .map(|(slot, _)| *slot)
                        .collect();
                    for slot in slots {
                        let views: Vec<(String, PresenceView)> = match &*event {
                            ChannelEvent::PresenceDiff { diff: d, .. } => {
                                let view = self.views.entry((slot, name.clone())).or_default();
                                for l in &d.leaves {
                                    view.remove(&l.connection_id());
                                }
                                d.joins.iter().map(|e| self.entry(e)).collect()
                            }
                            ChannelEvent::PresenceState { entries, .. } => {
                                self.views.remove(&(slot, name.clone()));
                                entries.iter().map(|e| self.entry(e)).collect()
                            }
                            ChannelEvent::Typing { user, .. } => {
                                obs.typing
                                    .entry(slot)
                                    .or_default()
                                    .push((name_index(&name), model_user(user)));
                                continue;
                            }
                        };
                        self.views
                            .entry((slot, name.clone()))
                            .or_default()
                            .extend(views);
                    }
                }
                Effect::Record(r) => match r {
                    Record::ChannelCreated(meta) => {
                        // As `persist`'s registry does: an upsert of the channel's row that
                        // keeps the subscription rows under its name if they are this
                        // channel's (same `channel_id`), and drops another channel's.
                        let name = meta.name.as_str().to_owned();
                        if self.registry_ids.get(&name) != Some(&meta.id) {
                            self.registry.insert(name.clone(), BTreeMap::new());
                            self.registry_ids.insert(name, meta.id.clone());
                        }
                    }
                    Record::ChannelDropped(name) => {
                        self.registry.remove(name.as_str());
                        self.registry_ids.remove(name.as_str());
                        if self.known.unstored_channel_keeps_subscribers {
                            // Known divergence: the owner never tells the subscribers of a
                            // dropped channel; here they are ended as if it had.
                            for chans in self.host.values_mut() {
                                chans.remove(name.as_str());
                            }
                            self.views.retain(|(_, c), _| c != name.as_str());
                        }
                    }
                    Record::Subscribed {
                        channel,
                        user,
                        cursor,
                        role,
                    } => {
                        // As `persist`'s upsert: a subscription without a role keeps the
                        // stored one.
                        let rows = self
                            .registry
                            .entry(channel.as_str().to_owned())
                            .or_default();
                        let old = rows.get(&user).and_then(|r| r.1);
                        rows.insert(user, (cursor, role.or(old)));
                    }
                    Record::Acked {
                        channel,
                        user,
                        cursor,
                    } => {
                        let rows = self
                            .registry
                            .entry(channel.as_str().to_owned())
                            .or_default();
                        let role = rows.get(&user).and_then(|r| r.1);
                        rows.insert(user, (cursor, role));
                    }
                    Record::Unsubscribed { channel, user } => {
                        if let Some(m) = self.registry.get_mut(channel.as_str()) {
                            m.remove(&user);
                        }
                    }
                    Record::Audit(a) if a.action == "denied" => {
                        let code = a.detail["code"].as_str().unwrap_or("?").to_owned();
                        self.denied.push((
                            model_user(&UserKey::new(a.actor_org.clone(), a.actor_user_id.clone())),
                            a.channel.clone(),
                            a.channel_org.clone(),
                            code,
                        ));
                    }
                    Record::WeddingUpserted(_) | Record::Audit(_) | Record::Parked(_) => {}
                },
            }
        }
    }

    /// Records an answer in the model's shape.
    fn reply(&mut self, to: ConnRef, r#ref: Option<String>, reply: owner::Reply, obs: &mut Obs) {
        let step: usize = r#ref
            .as_deref()
            .and_then(|r| r.strip_prefix('r'))
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX);
        let caller = if to.conn & CALL_BIT != 0 {
            Caller::Rest(self.rest.get(&step).copied().unwrap_or(usize::MAX))
        } else {
            match self.slot_of(to) {
                Some(slot) => Caller::Conn(slot),
                // The connection has gone: its shard drops the answer.
                None => return,
            }
        };
        let r = match reply {
            owner::Reply::Ok => Reply::Ok,
            owner::Reply::Error(e) | owner::Reply::SubscribeRefused { error: e, .. } => {
                Reply::Error(e.code.as_str())
            }
            owner::Reply::Created {
                channel_id, name, ..
            } => {
                let name = name.as_str().to_owned();
                if let Some(old) = self.ids.get(&name) {
                    if *old != channel_id {
                        self.anomalies.push(format!(
                            "{name} created again with another id: {old} then {channel_id}"
                        ));
                    }
                }
                self.ids.insert(name, channel_id);
                Reply::Created
            }
            owner::Reply::Subscribed {
                channel,
                epoch,
                recovered,
                messages,
                presence,
                presence_total,
                ..
            } => {
                if let Caller::Conn(slot) = caller {
                    self.host
                        .entry(slot)
                        .or_default()
                        .insert(channel.as_str().to_owned());
                    let view = presence.iter().map(|e| self.entry(e)).collect();
                    self.views.insert((slot, channel.as_str().to_owned()), view);
                }
                self.epochs.insert(channel.as_str().to_owned(), epoch);
                let presence = presence
                    .iter()
                    .map(|e| {
                        let v = serde_json::to_value(e).expect("json");
                        self.presence_view(&v)
                    })
                    .collect();
                Reply::Subscribed {
                    recovered,
                    messages: ids(&messages),
                    presence,
                    presence_total,
                }
            }
            owner::Reply::Unsubscribed { channel, why } => {
                if let Caller::Conn(slot) = caller {
                    if let Some(h) = self.host.get_mut(&slot) {
                        h.remove(channel.as_str());
                    }
                    self.views.remove(&(slot, channel.as_str().to_owned()));
                }
                match why {
                    Some(e) => Reply::Dropped {
                        name: name_index(channel.as_str()),
                        code: e.code.as_str(),
                    },
                    None => Reply::Unsubscribed,
                }
            }
            owner::Reply::Published(p) => Reply::Published {
                id: p.id,
                delivered: p.delivered,
                queued: p.queued,
                recipients: p.recipients.map(|r| {
                    // In the model's order (no order is promised).
                    let users = |v: &[UserKey]| {
                        let mut u: Vec<model::User> = v.iter().map(model_user).collect();
                        u.sort();
                        u
                    };
                    (users(&r.online), users(&r.queued))
                }),
            },
            owner::Reply::Enrolled {
                new,
                cursor,
                recovered,
                messages,
                ..
            } => Reply::Enrolled {
                new,
                cursor,
                recovered,
                messages: ids(&messages),
            },
            owner::Reply::Withdrawn { removed, .. } => Reply::Withdrawn { removed },
            owner::Reply::Subscriptions(list) => {
                let mut l: Vec<(String, u64)> = list
                    .iter()
                    .map(|c| (c.name.as_str().to_owned(), c.unread.unwrap_or(u64::MAX)))
                    .collect();
                // Every shard answers a list; the door merges them.
                if let Some((_, _, Reply::List(prev))) = obs
                    .replies
                    .iter_mut()
                    .find(|(c, s, _)| *c == caller && *s == step)
                {
                    prev.append(&mut l);
                    prev.sort();
                    return;
                }
                l.sort();
                Reply::List(l)
            }
            owner::Reply::Detail(d) => {
                let mut subscribers: Vec<(model::User, usize, u64, u64)> = d
                    .subscribers
                    .iter()
                    .map(|s| {
                        let u = model_user(&s.user);
                        (u, s.online_connections as usize, s.cursor, s.unread)
                    })
                    .collect();
                subscribers.sort();
                Reply::Detail {
                    subscribers,
                    recent: ids(&d.recent),
                    presence: d.presence.iter().map(|e| self.entry(e).1).collect(),
                }
            }
            other => panic!("unexpected reply {other:?}"),
        };
        obs.replies.push((caller, step, r));
    }

    /// A presence entry as (`connection_id`, the model's view).
    fn entry(&self, e: &ringbearer_core::presence::PresenceEntry) -> (String, PresenceView) {
        let v = serde_json::to_value(e).expect("json");
        (e.connection_id(), self.presence_view(&v))
    }

    fn presence_view(&self, e: &serde_json::Value) -> PresenceView {
        let user = model_user(&UserKey::new(
            e["org"].as_str().expect("org"),
            e["user_id"].as_str().expect("user_id"),
        ));
        let cid = e["connection_id"].as_str().expect("connection_id");
        let slot = (0..model::SLOTS)
            .find(|s| self.conn(*s).public_id() == cid)
            .unwrap_or(usize::MAX);
        let role = *[
            model::Role::Coordinator,
            model::Role::Photographer,
            model::Role::Couple,
            model::Role::Guest,
            model::Role::Venue,
            model::Role::Admin,
            model::Role::Service,
        ]
        .iter()
        .find(|r| Some(r.as_str()) == e["role"].as_str())
        .expect("role");
        let meta = e["meta"]["n"].as_u64().map(|n| n as u8);
        PresenceView {
            user,
            slot,
            role,
            meta,
        }
    }

    /// Completes what the shards' logs hold: stored, or failed.
    fn complete(&mut self, ok: bool, obs: &mut Obs) {
        for i in 0..SHARDS {
            let Some((_, upto)) = self.owners[i].pending_upto() else {
                continue;
            };
            let now = self.at();
            let fx = if ok {
                self.journals[i].stored(upto);
                self.owners[i].committed(now, upto, Ok(()))
            } else {
                self.journals[i].failed();
                self.owners[i].committed(now, upto, Err(JournalError::Failed("test".into())))
            };
            self.apply_effects(fx, obs);
        }
    }

    fn then(&mut self, then: Then, obs: &mut Obs) {
        match then {
            Then::Commit => self.complete(true, obs),
            Then::Fail => self.complete(false, obs),
            Then::Hold | Then::Refuse => {}
        }
    }

    /// A request as the WebSocket door parses it.
    fn request(
        &mut self,
        from: ConnRef,
        claims: Arc<Claims>,
        json: &serde_json::Value,
        recipients: bool,
        obs: &mut Obs,
    ) {
        let text = json.to_string();
        let env =
            parse_request(&text, &self.cfg.limits).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let r = env.r#ref.expect("a ref");
        let (name, op) = match env.req {
            Parsed::Create(req) => (req.name.as_str().to_owned(), owner::Op::Create(req)),
            Parsed::Subscribe(req) => (req.channel.as_str().to_owned(), owner::Op::Subscribe(req)),
            Parsed::Publish(req) => (
                req.channel.as_str().to_owned(),
                owner::Op::Publish { req, recipients },
            ),
            other => panic!("not built from JSON here: {other:?}"),
        };
        self.ask_owner(&name, from, claims, &r, op, obs);
    }

    /// A retention round as the server runs it (`io/src/runtime/tasks.rs` `retention`): every
    /// channel's checkpoint is logged and stored (and with it everything pending, which the
    /// commit pump then answers), then the log drops every record that round calls dead —
    /// per record here, the limit of one record per segment.
    fn retention(&mut self, obs: &mut Obs) {
        self.complete(true, obs);
        for i in 0..SHARDS {
            let round_ms = self.now;
            let round = self.owners[i].retention_snapshot(round_ms);
            for (name, json) in &round.checkpoints {
                let pos = self.journals[i]
                    .append(name, round_ms, Entry::Channel { meta_json: json })
                    .expect("checkpoint logged");
                self.journals[i].stored(pos);
            }
            let first_kept = round.first_kept;
            self.journals[i].records.borrow_mut().retain(|(_, r)| {
                let Some(&first) = first_kept.get(&r.channel) else {
                    return true;
                };
                let newest_id = if r.id == 0 { 0 } else { r.id };
                newest_id >= first || r.ts_ms >= round_ms
            });
        }
    }

    /// A restart: every connection goes, what the logs did not store is lost, and the
    /// owners are rebuilt from the logs' records and the registry.
    fn restart(&mut self) {
        self.boot += 1;
        for g in self.generation.iter_mut() {
            *g += 1;
        }
        self.host.clear();
        self.views.clear();
        self.reduced = [false; model::SLOTS];
        let members: Vec<(String, UserKey, u64, Option<ringbearer_core::Role>)> = self
            .registry
            .iter()
            .flat_map(|(c, m)| {
                m.iter()
                    .map(|(u, (cur, role))| (c.clone(), u.clone(), *cur, *role))
            })
            .collect();
        let mut logged = BTreeSet::new();
        self.owners = self.fresh_owners();
        for i in 0..SHARDS {
            self.journals[i].failed();
            let records: Vec<LogRecord> = self.journals[i]
                .records
                .borrow()
                .iter()
                .map(|(_, r)| r.clone())
                .collect();
            let mine = members.iter().filter(|(c, ..)| owner_of(c) == i).cloned();
            let (channels, skipped) = rebuild(records, mine);
            if !skipped.is_empty() {
                self.anomalies.push(format!("rebuild skipped {skipped:?}"));
            }
            logged.extend(channels.iter().map(|c| c.meta.name.as_str().to_owned()));
            let now = self.at();
            self.owners[i].restore(channels, now);
        }
        // The registry keeps its rows of channels the log never stored (as `persist`'s
        // does); `rebuild` leaves their members out.
        let _ = logged;
    }

    /// Drives `op` (step number `step`) and returns what was seen.
    fn apply(&mut self, step: usize, op: &Op, m: &Model) -> Obs {
        let mut obs = Obs::default();
        self.now += 1;
        let r = format!("r{step}");
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
                let n = model::NAMES[name].0;
                if !m.exists(name) {
                    // A new life of the name: new id, new epoch.
                    self.ids.remove(n);
                    self.epochs.remove(n);
                }
                let p = by.principal();
                let org = model::PRINCIPALS[p].org;
                let mut req =
                    serde_json::json!({"op": "create", "ref": r, "name": n, "type": kind.as_str()});
                if let Some(w) = model::NAMES[name].1.or(wedding) {
                    req["wedding_id"] = model::WEDDINGS[w].into();
                }
                if kind == Kind::Private {
                    let list: Vec<serde_json::Value> = model::members_of(members, org)
                        .into_iter()
                        .map(|u| {
                            if u.0 == org {
                                serde_json::Value::from(model::SUBS[u.1])
                            } else {
                                serde_json::json!({"org": model::ORGS[u.0], "user_id": model::SUBS[u.1]})
                            }
                        })
                        .collect();
                    req["members"] = list.into();
                }
                if staff {
                    let roles =
                        |v: &[model::Role]| -> Vec<&str> { v.iter().map(|r| r.as_str()).collect() };
                    req["permissions"] = serde_json::json!({
                        "read": roles(&model::STAFF_READ),
                        "write": roles(&model::STAFF_WRITE),
                        "admin": ["coordinator"],
                    });
                }
                if let Some(n) = max_subscribers {
                    req["max_subscribers"] = n.into();
                }
                let from = match by {
                    Caller::Conn(s) => self.conn(s),
                    Caller::Rest(p) => {
                        self.rest.insert(step, p);
                        Self::call(step)
                    }
                };
                self.journals[owner_of(n)].refuse.set(then == Then::Refuse);
                let cl = self.claims_for(by);
                self.request(from, cl, &req, false, &mut obs);
                self.journals[owner_of(n)].refuse.set(false);
                self.then(then, &mut obs);
            }
            Op::Subscribe {
                slot,
                name,
                last_seen,
                epoch,
                history,
            } => {
                let n = model::NAMES[name].0;
                let mut req = serde_json::json!({"op": "subscribe", "ref": r, "channel": n, "include_history": history});
                if let Some(id) = last_seen {
                    req["last_seen_id"] = id.into();
                }
                match epoch {
                    EpochArg::None => {}
                    EpochArg::Current => {
                        if let Some(e) = self.epochs.get(n) {
                            req["epoch"] = e.clone().into();
                        }
                    }
                    EpochArg::Stale => req["epoch"] = "stale-epoch".into(),
                }
                let from = self.conn(slot);
                let cl = self.claims_for(Caller::Conn(slot));
                self.request(from, cl, &req, false, &mut obs);
            }
            Op::Unsubscribe { slot, name } => {
                let from = self.conn(slot);
                let op = owner::Op::Unsubscribe(channel(name));
                self.ask_owner(
                    model::NAMES[name].0,
                    from,
                    self.claims_for(Caller::Conn(slot)),
                    &r,
                    op,
                    &mut obs,
                );
            }
            Op::Disconnect { slot } => {
                let conn = self.conn(slot);
                let chans = self.host.remove(&slot).unwrap_or_default();
                let mut by_owner: BTreeMap<usize, Vec<ChannelName>> = BTreeMap::new();
                for c in chans {
                    by_owner
                        .entry(owner_of(&c))
                        .or_default()
                        .push(ChannelName::parse(&c).expect("valid"));
                }
                for (o, channels) in by_owner {
                    let fx = self.owners[o].disconnect(conn, &channels);
                    self.apply_effects(fx, &mut obs);
                }
                self.views.retain(|(s, _), _| *s != slot);
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
                let n = model::NAMES[name].0;
                let ty = if routed { "rsvp_update" } else { "general" };
                let mut req = serde_json::json!({"op": "publish", "ref": r, "channel": n, "type": ty, "payload": {"step": step}});
                if roles != 0 {
                    let names: Vec<&str> = model::Role::ALL
                        .iter()
                        .filter(|r| roles & (1 << **r as u8) != 0)
                        .map(|r| r.as_str())
                        .collect();
                    req["target_roles"] = names.into();
                }
                if emergency {
                    req["priority"] = "emergency".into();
                }
                if let Some((org, sub)) = target {
                    req["target_user_id"] = model::SUBS[sub].into();
                    if let Some(o) = org {
                        req["target_org"] = model::ORGS[o].into();
                    }
                }
                if let Some(k) = key {
                    req["idempotency_key"] = format!("k{k}").into();
                }
                let p = model::SLOT_PRINCIPAL[slot];
                let from = if rest {
                    self.rest.insert(step, p);
                    Self::call(step)
                } else {
                    self.conn(slot)
                };
                self.journals[owner_of(n)].refuse.set(then == Then::Refuse);
                let cl = if rest {
                    claims(p)
                } else {
                    self.claims_for(Caller::Conn(slot))
                };
                self.request(from, cl, &req, rest, &mut obs);
                self.journals[owner_of(n)].refuse.set(false);
                self.then(then, &mut obs);
            }
            Op::Ack { slot, name, id } => {
                let from = self.conn(slot);
                let op = owner::Op::Ack {
                    channel: channel(name),
                    id,
                };
                self.ask_owner(
                    model::NAMES[name].0,
                    from,
                    self.claims_for(Caller::Conn(slot)),
                    &r,
                    op,
                    &mut obs,
                );
            }
            Op::Presence { slot, name, meta } => {
                let from = self.conn(slot);
                let op = owner::Op::Presence {
                    channel: channel(name),
                    meta: format!("{{\"n\":{meta}}}"),
                };
                self.ask_owner(
                    model::NAMES[name].0,
                    from,
                    self.claims_for(Caller::Conn(slot)),
                    &r,
                    op,
                    &mut obs,
                );
            }
            Op::Enroll {
                caller,
                sub,
                name,
                history,
            } => {
                self.rest.insert(step, caller);
                let op = owner::Op::Enroll {
                    user: model::SUBS[sub].into(),
                    req: SubscribeReq {
                        channel: channel(name),
                        last_seen_id: None,
                        epoch: None,
                        include_history: history,
                    },
                };
                self.ask_owner(
                    model::NAMES[name].0,
                    Self::call(step),
                    claims(caller),
                    &r,
                    op,
                    &mut obs,
                );
            }
            Op::Withdraw { caller, sub, name } => {
                self.rest.insert(step, caller);
                let op = owner::Op::Withdraw {
                    user: model::SUBS[sub].into(),
                    channel: channel(name),
                };
                self.ask_owner(
                    model::NAMES[name].0,
                    Self::call(step),
                    claims(caller),
                    &r,
                    op,
                    &mut obs,
                );
            }
            Op::List { caller, sub } => {
                self.rest.insert(step, caller);
                for i in 0..SHARDS {
                    let req = Request {
                        from: Self::call(step),
                        r#ref: Some(r.clone()),
                        claims: claims(caller),
                        op: owner::Op::ListFor {
                            user: model::SUBS[sub].into(),
                        },
                    };
                    let now = self.at();
                    let fx = self.owners[i].handle(now, req);
                    self.apply_effects(fx, &mut obs);
                }
            }
            Op::Flush { fail } => self.complete(!fail, &mut obs),
            Op::Wait => self.now += model::WAIT_MS,
            Op::Tick => {
                for i in 0..SHARDS {
                    let now = self.at();
                    let fx = self.owners[i].flush_presence(now);
                    self.apply_effects(fx, &mut obs);
                }
            }
            Op::Typing { slot, name } => {
                let from = self.conn(slot);
                let cl = self.claims_for(Caller::Conn(slot));
                let op = owner::Op::Typing {
                    channel: channel(name),
                };
                self.ask_owner(model::NAMES[name].0, from, cl, &r, op, &mut obs);
            }
            Op::Refresh { slot } => {
                self.reduced[slot] = true;
                let conn = self.conn(slot);
                let cl = self.claims_for(Caller::Conn(slot));
                let chans = self.host.get(&slot).cloned().unwrap_or_default();
                let mut by_owner: BTreeMap<usize, Vec<ChannelName>> = BTreeMap::new();
                for c in chans {
                    by_owner
                        .entry(owner_of(&c))
                        .or_default()
                        .push(ChannelName::parse(&c).expect("valid"));
                }
                for (o, channels) in by_owner {
                    let req = Request {
                        from: conn,
                        r#ref: None,
                        claims: cl.clone(),
                        op: owner::Op::Recheck { channels },
                    };
                    let now = self.at();
                    let fx = self.owners[o].handle(now, req);
                    self.apply_effects(fx, &mut obs);
                }
            }
            Op::Inspect { caller, name } => {
                self.rest.insert(step, caller);
                let op = owner::Op::Inspect {
                    channel: channel(name),
                    offset: 0,
                    limit: 100,
                };
                let cl = claims(caller);
                self.ask_owner(model::NAMES[name].0, Self::call(step), cl, &r, op, &mut obs);
            }
            Op::Retention => self.retention(&mut obs),
            Op::Restart => self.restart(),
        }
        obs
    }

    /// The registry's subscriptions and cursors of channel `name`.
    fn registry(&self, name: usize) -> BTreeMap<model::User, u64> {
        self.registry
            .get(model::NAMES[name].0)
            .map(|m| m.iter().map(|(u, c)| (model_user(u), c.0)).collect())
            .unwrap_or_default()
    }
}

/// Replies compared by (step, caller): a step answers each caller at most once, and two
/// shards' logs complete in either order.
type Seen = (
    Vec<(usize, Caller, Reply)>,
    BTreeMap<(usize, usize), Vec<u64>>,
    BTreeMap<usize, Vec<(usize, model::User)>>,
);

fn normalize(mut o: Obs) -> Seen {
    let mut replies: Vec<(usize, Caller, Reply)> =
        o.replies.drain(..).map(|(c, s, r)| (s, c, r)).collect();
    replies.sort();
    // Per connection and channel, in order (SPEC §2.1); across channels no order is promised.
    let mut per: BTreeMap<(usize, usize), Vec<u64>> = BTreeMap::new();
    for (slot, v) in o.delivered {
        for (name, id) in v {
            per.entry((slot, name)).or_default().push(id);
        }
    }
    // Typing indicators: per connection, across channels in any order.
    for v in o.typing.values_mut() {
        v.sort();
    }
    (replies, per, o.typing)
}

/// What the runs exercised (printed by `coverage`): how often each kind of answer was seen.
static SEEN: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn count(replies: &[(usize, Caller, Reply)], delivered: usize) {
    let mut seen = SEEN.lock().unwrap();
    for (_, _, r) in replies {
        let k = match r {
            Reply::Error(c) => format!("error {c}"),
            Reply::Subscribed {
                recovered,
                messages,
                presence,
                ..
            } => format!(
                "subscribed recovered={recovered} messages={} presence>1={}",
                !messages.is_empty(),
                presence.len() > 1
            ),
            Reply::Published { queued, .. } => format!("published queued>0={}", *queued > 0),
            Reply::Enrolled { messages, .. } => {
                format!("enrolled messages={}", !messages.is_empty())
            }
            Reply::List(l) => format!("list unread>0={}", l.iter().any(|x| x.1 > 0)),
            Reply::Detail { recent, .. } => format!("detail recent={}", !recent.is_empty()),
            other => format!("{other:?}"),
        };
        *seen.entry(k).or_default() += 1;
    }
    *seen.entry("live deliveries".into()).or_default() += delivered;
}

/// Runs `ops` through the model and the shards; the first divergence, described.
fn run(ops: &[Op], known: model::Known) -> Result<(), String> {
    let mut m = Model::new(0, known);
    let mut w = World::new(known);
    for (step, op) in ops.iter().enumerate() {
        w.denied.clear();
        let seen = w.apply(step, op, &m);
        let want = m.apply(step, op);
        // SPEC §1: every refusal of the access rule is audited, where the channel's own
        // organization sees it.
        let mut audited: Vec<(model::User, Option<String>, String)> = w
            .denied
            .iter()
            .map(|(u, c, _, code)| (*u, c.clone(), code.clone()))
            .collect();
        let mut refused: Vec<(model::User, Option<String>, String)> = want
            .replies
            .iter()
            .filter_map(|(caller, _, r)| match r {
                Reply::Error(c @ ("WS_FORBIDDEN" | "WS_WEDDING_ISOLATION_VIOLATION")) => {
                    let p = m.principal(*caller);
                    let ch = op.channel().map(|n| model::NAMES[n].0.to_owned());
                    Some(((p.org, p.sub), ch, (*c).to_owned()))
                }
                _ => None,
            })
            .collect();
        audited.sort();
        refused.sort();
        if audited != refused {
            return Err(format!(
                "step {step}: {op:?}\n  refusals {refused:?}\n  audited {audited:?}"
            ));
        }
        for (_, c, org, _) in &w.denied {
            let exists = c.as_deref().map(name_index).and_then(|n| m.channel_org(n));
            if let Some(o) = exists {
                if org.as_deref() != Some(model::ORGS[o]) {
                    return Err(format!(
                        "step {step}: {op:?}\n  refusal on {c:?} audited for {org:?}, not its owner {}",
                        model::ORGS[o]
                    ));
                }
            }
        }
        let (seen, want) = (normalize(seen), normalize(want));
        count(&want.0, want.1.values().map(Vec::len).sum());
        if seen != want || !w.anomalies.is_empty() {
            return Err(format!(
                "step {step}: {op:?}\n  model: {want:?}\n  owner: {seen:?}\n  anomalies: {:?}",
                w.anomalies
            ));
        }
        if matches!(op, Op::Tick) {
            // Every subscribed connection's list is the channel's presence (SPEC §3).
            for ((slot, ch), view) in &w.views {
                let name = name_index(ch);
                let want: BTreeMap<String, PresenceView> = m
                    .presence(name)
                    .into_iter()
                    .map(|v| (w.conn(v.slot).public_id(), v))
                    .collect();
                if *view != want {
                    return Err(format!(
                        "step {step}: slot {slot}'s presence of {ch}:\n  model {want:?}\n  owner {view:?}"
                    ));
                }
            }
        }
        // The registry's subscriptions of every channel that exists: what a restart
        // rebuilds them from.
        for name in (0..model::NAMES.len()).filter(|n| m.exists(*n)) {
            let (mine, theirs) = (m.cursors(name), w.registry(name));
            if mine != theirs {
                return Err(format!(
                    "step {step}: {op:?}\n  registry of {}: model {mine:?}, owner {theirs:?}",
                    model::NAMES[name].0
                ));
            }
        }
    }
    let mut seen = SEEN.lock().unwrap();
    for (k, n) in &m.stats {
        *seen.entry((*k).to_owned()).or_default() += n;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 4096,
        // Failing sequences are kept as named regression cases below, not in a file.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_owner_agrees_with_the_model(ops in model::ops(80)) {
        if let Err(e) = run(&ops, model::KNOWN) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// What random runs exercise: `cargo test -p ringbearer-io --test owner_model coverage --
/// --ignored --nocapture`.
#[test]
#[ignore]
fn coverage() {
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&model::ops(80), |ops| {
            run(&ops, model::KNOWN).map_err(proptest::test_runner::TestCaseError::fail)
        })
        .unwrap();
    for (k, n) in SEEN.lock().unwrap().iter() {
        println!("{n:>8}  {k}");
    }
}

// ---- regression cases: sequences the random runs found, kept by name ----

fn create(slot: usize, name: usize, kind: Kind, wedding: Option<usize>, then: Then) -> Op {
    Op::Create {
        by: Caller::Conn(slot),
        name,
        kind,
        wedding,
        members: 0,
        staff: false,
        max_subscribers: None,
        then,
    }
}

fn publish(slot: usize, name: usize, then: Then) -> Op {
    Op::Publish {
        slot,
        name,
        target: None,
        roles: 0,
        routed: false,
        key: None,
        rest: false,
        emergency: false,
        then,
    }
}

fn subscribe(slot: usize, name: usize, history: bool) -> Op {
    Op::Subscribe {
        slot,
        name,
        last_seen: None,
        epoch: EpochArg::None,
        history,
    }
}

/// Found by the random runs: org-b's `u-2` is withdrawn over REST while its connection
/// stays subscribed, then enrolled again; a publish counted it both delivered (its
/// connection) and queued (a member "with no connection"), and its connection leaving
/// underflowed the count. Fixed in `core/src/channel_state.rs`.
#[test]
fn regression_withdrawn_while_connected_then_enrolled_is_not_queued() {
    let ops = vec![
        create(1, 3, Kind::Shared, Some(1), Then::Commit),
        subscribe(3, 3, false),
        Op::Withdraw {
            caller: 5,
            sub: 1,
            name: 3,
        },
        Op::Enroll {
            caller: 1,
            sub: 1,
            name: 3,
            history: false,
        },
        publish(1, 3, Then::Commit),
        Op::Disconnect { slot: 3 },
        publish(1, 3, Then::Commit),
    ];
    run(&ops, model::KNOWN).unwrap();
}

/// Found by the random runs: with the kept window full of stored messages (4), a publish
/// still being stored pushed the oldest stored one out, so a history subscribe meanwhile
/// missed it — and had the store failed, it stayed lost until a restart. Fixed in
/// `core/src/window.rs` and `core/src/channel_state.rs`.
#[test]
fn regression_a_pending_publish_never_evicts_a_stored_one() {
    let ops = vec![
        Op::Create {
            by: Caller::Conn(1),
            name: 3,
            kind: Kind::Private,
            wedding: Some(1),
            members: 4, // org-c/u-1, slot 4
            staff: false,
            max_subscribers: None,
            then: Then::Commit,
        },
        publish(4, 3, Then::Commit),
        publish(4, 3, Then::Commit),
        publish(4, 3, Then::Commit),
        publish(4, 3, Then::Commit),
        publish(4, 3, Then::Hold),
        subscribe(4, 3, true),
        Op::Flush { fail: true },
        Op::Disconnect { slot: 4 },
        subscribe(4, 3, true),
    ];
    run(&ops, model::KNOWN).unwrap();
}

/// Found by the random runs (fixed in `owner/create.rs`, `owner/commit.rs` and
/// `Weddings::unclaim`): org-a's create of `wedding:main:w-1` is refused (its store failed),
/// so no channel names `w-1`; yet org-b's admin (`weddings: ["*"]`) was then refused
/// creating it with `WS_WEDDING_ISOLATION_VIOLATION`: the failed create still made org-a
/// the wedding's owner (until a restart, which derives owners from stored channels). SPEC
/// §1: the owner is the organization that created the first channel with it.
#[test]
fn regression_an_unstored_create_does_not_claim_the_wedding() {
    let ops = vec![
        create(0, 0, Kind::Shared, None, Then::Fail),
        create(5, 0, Kind::Shared, None, Then::Commit),
    ];
    run(&ops, model::Known::default()).unwrap();
}

/// Found by the random runs (fixed in `owner/commit.rs`: the subscribers of a dropped
/// channel get `unsubscribed` with the store's refusal): org-a's coordinator (slot 0, shard
/// 0) subscribes to `venue:hall:v-1` while its creation is still being stored; the store
/// fails and the channel is dropped, but the subscriber was never told, so its shard kept
/// the subscription. Org-c's venue then creates its own `venue:hall:v-1` (an org-c channel)
/// and subscribes on the same shard: org-c's message was delivered to org-a's coordinator
/// too — across the tenant boundary.
#[test]
fn regression_a_dropped_channel_leaves_no_subscribers_behind() {
    let ops = vec![
        create(0, 2, Kind::Shared, None, Then::Hold),
        subscribe(0, 2, false),
        Op::Flush { fail: true },
        create(4, 2, Kind::Shared, None, Then::Commit),
        subscribe(4, 2, false),
        publish(4, 2, Then::Commit),
    ];
    let known = model::Known {
        unstored_channel_keeps_subscribers: false,
        ..model::KNOWN
    };
    run(&ops, known).unwrap();
}

/// Found by the random runs: a publish with an idempotency key, four more (the window holds
/// four), a retention round, a restart, and the publish retried with its key a moment
/// later: the round had dropped the first message's log record (out of the window), and
/// with it the key (keys travel inside the frames), so the retry was stored again as a new
/// message (SPEC §2.4: it returns the first id). Fixed in `core/src/channel_state.rs`
/// (`first_kept_id` keeps what a remembered key needs).
#[test]
fn regression_a_retry_after_retention_and_restart_gets_its_first_id() {
    let keyed = Op::Publish {
        slot: 5,
        name: 2,
        target: None,
        roles: 0,
        routed: false,
        key: Some(1),
        rest: false,
        emergency: false,
        then: Then::Commit,
    };
    let mut ops = vec![
        create(5, 2, Kind::Shared, None, Then::Commit),
        keyed.clone(),
    ];
    ops.extend((0..4).map(|_| publish(5, 2, Then::Commit)));
    ops.extend([Op::Retention, Op::Restart, keyed]);
    run(&ops, model::KNOWN).unwrap();
}

/// Found while making the driver's registry behave like `persist`'s (the random runs
/// reach it only rarely): org-a creates `venue:hall:v-1`, org-a's `u-1` subscribes while the creation is
/// being stored, and the process dies before it is stored. The registry keeps the
/// channel's row and the subscription; when org-c later creates its own `venue:hall:v-1`,
/// the registry's upsert keeps that subscription under the name, and after the next
/// restart org-a's `u-1` is a member of org-c's channel: counted in org-c's `queued_count`
/// and named in its `delivery_guarantees` (SPEC §1: never counted for a user without
/// access). Fixed in `persist/src/registry/store.rs` (`upsert_channel` drops another
/// channel's rows of that name); the driver's registry does as `persist`'s now does.
#[test]
fn regression_a_never_stored_channel_leaves_no_subscriptions_to_its_successor() {
    let ops = vec![
        create(0, 2, Kind::Shared, None, Then::Hold),
        subscribe(0, 2, false),
        Op::Restart,
        create(4, 2, Kind::Shared, None, Then::Commit),
        Op::Restart,
        Op::Publish {
            slot: 4,
            name: 2,
            target: None,
            roles: 0,
            routed: false,
            key: None,
            rest: true,
            emergency: false,
            then: Then::Commit,
        },
    ];
    run(&ops, model::KNOWN).unwrap();
}
