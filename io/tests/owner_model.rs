//! A model-based test of the channel owner (issue 11 item 6): random sequences of
//! operations from three organizations whose users share ids, two weddings, every channel
//! type and several roles — create, subscribe (with and without a position, epoch or
//! history), unsubscribe, disconnect, open and targeted publishes with and without
//! idempotency keys, acks, presence, REST enroll/withdraw/list, stores that commit late or
//! fail, and restarts — go through the real owner with an in-memory log and registry, and
//! every observation (replies and error codes, who gets which message live, resume and
//! history, `delivered_count`/`queued_count`, `unread_count`, presence lists, the
//! registry's cursors) is compared with the reference model in `owner_model/model.rs`.
//!
//! Runs a bounded budget in `cargo test`; a longer run:
//! `PROPTEST_CASES=20000 cargo test -p ringbearer-io --test owner_model`.
//!
//! Today this drives `ringbearer_io::shard::Shard::handle` on two shards (the owner before
//! issue 11's split), routing its outputs as the runtime would; the connection side (which
//! connection of a shard a `Deliver` reaches) is the test's own few lines applying
//! `may_see`, since `Conn` cannot be built outside the crate.

#[path = "owner_model/model.rs"]
mod model;

use model::{Caller, EpochArg, Kind, Model, Obs, Op, PresenceView, Reply, Then};
use proptest::prelude::*;
use ringbearer_core::channel_state::{ChannelCheckpoint, ConnRef};
use ringbearer_core::identity::may_see;
use ringbearer_core::message::access_frame;
use ringbearer_core::protocol::{parse_request, Request, SubscribeReq};
use ringbearer_core::{ChannelName, Claims, Tier, UserKey};
use ringbearer_io::journal::{
    Catalog, Entry, Journal, JournalError, LocalBoxFuture, RestoredChannel, RestoredMessage,
};
use ringbearer_io::shard::{Shard, ShardMsg};
use ringbearer_io::IoConfig;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 2;

// ---- an in-memory log and registry ----

#[derive(Clone, Debug)]
enum Rec {
    Channel(Vec<u8>),
    Message { id: u64, frame: Vec<u8> },
}

/// A log held in memory: positions count appends; the test decides when they are durable
/// or fail (a failed store loses everything not yet durable).
#[derive(Default)]
struct MemJournal {
    records: RefCell<Vec<(u64, String, u64, Rec)>>,
    next: Cell<u64>,
    durable: Cell<u64>,
    refuse: Cell<bool>,
}

impl MemJournal {
    fn stored(&self, upto: u64) {
        self.durable.set(self.durable.get().max(upto));
    }
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
        let rec = match entry {
            Entry::Channel { meta_json } => Rec::Channel(meta_json.to_vec()),
            Entry::Message { id, frame } => Rec::Message {
                id,
                frame: frame.to_vec(),
            },
        };
        self.records
            .borrow_mut()
            .push((pos, channel.to_owned(), ts_ms, rec));
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

/// The registry's mirror of subscriptions and cursors, per channel.
#[derive(Default)]
struct MemCatalog {
    members: Mutex<BTreeMap<String, BTreeMap<UserKey, u64>>>,
}

impl Catalog for MemCatalog {
    fn channel_created(&self, meta: &ringbearer_core::channel_state::ChannelMeta) {
        self.members
            .lock()
            .unwrap()
            .insert(meta.name.as_str().to_owned(), BTreeMap::new());
    }
    fn channel_dropped(&self, channel: &str) {
        self.members.lock().unwrap().remove(channel);
    }
    fn subscribed(&self, channel: &str, user: &UserKey, cursor: u64) {
        self.members
            .lock()
            .unwrap()
            .entry(channel.to_owned())
            .or_default()
            .insert(user.clone(), cursor);
    }
    fn unsubscribed(&self, channel: &str, user: &UserKey) {
        if let Some(m) = self.members.lock().unwrap().get_mut(channel) {
            m.remove(user);
        }
    }
    fn acked(&self, channel: &str, user: &UserKey, cursor: u64) {
        self.members
            .lock()
            .unwrap()
            .entry(channel.to_owned())
            .or_default()
            .insert(user.clone(), cursor);
    }
    fn wedding_upserted(&self, _: &ringbearer_io::weddings::Wedding) {}
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

/// Error codes as `&'static str` (the model's shape).
fn code(s: &str) -> &'static str {
    const CODES: [&str; 14] = [
        "WS_UNAUTHORIZED",
        "WS_FORBIDDEN",
        "WS_INVALID_CHANNEL",
        "WS_CHANNEL_NOT_FOUND",
        "WS_SUBSCRIPTION_FAILED",
        "WS_RATE_LIMITED",
        "WS_CHANNEL_FULL",
        "WS_TIER_LIMIT",
        "WS_PAYLOAD_TOO_LARGE",
        "WS_BAD_REQUEST",
        "WS_INVALID_WEDDING_CONTEXT",
        "WS_WEDDING_ISOLATION_VIOLATION",
        "WS_OVERLOADED",
        "WS_INTERNAL",
    ];
    CODES
        .iter()
        .find(|c| **c == s)
        .unwrap_or_else(|| panic!("unknown code {s}"))
}

const CALL_BIT: u64 = 1 << 63;

/// The two shards as the runtime would run them, with the connection side reduced to
/// "which slot is subscribed to what".
struct World {
    cfg: Rc<IoConfig>,
    shards: Vec<Shard>,
    journals: Vec<Rc<MemJournal>>,
    catalog: Arc<MemCatalog>,
    boot: u64,
    generation: [u64; model::SLOTS],
    /// slot → channels its current connection is subscribed to (confirmed by the owner).
    host: BTreeMap<usize, BTreeSet<String>>,
    /// Epoch and channel id per channel name, as last answered.
    epochs: HashMap<String, String>,
    ids: HashMap<String, String>,
    /// Problems seen while reading the owner's output (beyond the model's shapes).
    anomalies: Vec<String>,
    /// step → the principal of that step's REST call.
    rest: Rc<RefCell<HashMap<usize, usize>>>,
}

impl World {
    fn new() -> World {
        let mut cfg = IoConfig::default();
        cfg.limits.max_queued = model::MAX_QUEUED;
        let cfg = Rc::new(cfg);
        let catalog = Arc::new(MemCatalog::default());
        let journals: Vec<Rc<MemJournal>> = (0..SHARDS).map(|_| Rc::default()).collect();
        let mut w = World {
            cfg,
            shards: Vec::new(),
            journals,
            catalog,
            boot: 1,
            generation: [0; model::SLOTS],
            host: BTreeMap::new(),
            epochs: HashMap::new(),
            ids: HashMap::new(),
            anomalies: Vec::new(),
            rest: Rc::default(),
        };
        w.shards = w.fresh_shards();
        w
    }

    fn fresh_shards(&self) -> Vec<Shard> {
        let policy = Arc::new(ringbearer_io::policy::Policy::default());
        let weddings = ringbearer_io::weddings::Weddings::default();
        (0..SHARDS)
            .map(|i| {
                let mut s = Shard::new(i as u32, SHARDS, self.cfg.clone(), self.boot);
                s.journal = Some(self.journals[i].clone());
                s.catalog = Some(self.catalog.clone());
                s.policy = policy.clone();
                s.weddings = weddings.clone();
                s
            })
            .collect()
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

    /// Hands `msg` to the owner of `name` and routes what comes out.
    fn to_owner(&mut self, name: &str, msg: ShardMsg, ctx: &mut Ctx) {
        let out = self.shards[owner_of(name)].handle(msg);
        self.route(out, ctx);
    }

    fn route(&mut self, out: Vec<(u32, ShardMsg)>, ctx: &mut Ctx) {
        for (dest, msg) in out {
            match msg {
                ShardMsg::Reply { to, bytes } => {
                    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                    self.reply(to, v, ctx);
                }
                ShardMsg::SubscribeRefused { to, bytes, .. } => {
                    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                    self.reply(to, v, ctx);
                }
                ShardMsg::Subscribed {
                    to,
                    channel,
                    frames,
                } => {
                    let Some(slot) = self.slot_of(to) else {
                        self.anomalies.push(format!("subscribed to a gone {to:?}"));
                        continue;
                    };
                    self.host
                        .entry(slot)
                        .or_default()
                        .insert(channel.as_str().to_owned());
                    let mut v: serde_json::Value =
                        serde_json::from_slice(&frames[0]).expect("json");
                    // Recovered messages past one frame follow as `message` frames.
                    for f in &frames[1..] {
                        let m: serde_json::Value = serde_json::from_slice(f).expect("json");
                        v["messages"].as_array_mut().expect("messages").push(m);
                    }
                    self.reply(to, v, ctx);
                }
                ShardMsg::Unsubscribed { to, channel, bytes } => {
                    if let Some(slot) = self.slot_of(to) {
                        if let Some(h) = self.host.get_mut(&slot) {
                            h.remove(channel.as_str());
                        }
                    }
                    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                    self.reply(to, v, ctx);
                }
                ShardMsg::Deliver { frame } => {
                    let f = access_frame(&frame).expect("frame");
                    let name = f.channel.as_str().to_owned();
                    let id = f.id();
                    let target = f.target().map(|(o, s)| (o.to_owned(), s.to_owned()));
                    for (slot, chans) in &self.host {
                        if *slot % SHARDS != dest as usize || !chans.contains(&name) {
                            continue;
                        }
                        let viewer = user_key(model::user_of(model::SLOT_PRINCIPAL[*slot]));
                        let t = target.as_ref().map(|(o, s)| (o.as_str(), s.as_str()));
                        if may_see(t, &viewer) {
                            ctx.obs
                                .delivered
                                .entry(*slot)
                                .or_default()
                                .push((name_index(&name), id));
                        }
                    }
                }
                ShardMsg::Broadcast { .. } => {}
                other => self.anomalies.push(format!(
                    "unexpected output to shard {dest}: {}",
                    variant(&other)
                )),
            }
        }
    }

    /// Records an answer in the model's shape.
    fn reply(&mut self, to: ConnRef, v: serde_json::Value, ctx: &mut Ctx) {
        let (caller, step) = if to.conn & CALL_BIT != 0 {
            let step = (to.conn & !CALL_BIT) as usize;
            (Caller::Rest(ctx.rest_caller(step)), step)
        } else {
            let Some(slot) = self.slot_of(to) else {
                // The connection has gone: its shard drops the answer.
                return;
            };
            let step = v["ref"]
                .as_str()
                .and_then(|r| r.strip_prefix('r'))
                .and_then(|s| s.parse().ok())
                .unwrap_or(usize::MAX);
            (Caller::Conn(slot), step)
        };
        let ids = |v: &serde_json::Value| -> Vec<u64> {
            v.as_array()
                .expect("messages")
                .iter()
                .map(|m| m["id"].as_u64().expect("id"))
                .collect()
        };
        let r = match v["op"].as_str().expect("op") {
            "error" => Reply::Error(code(v["code"].as_str().expect("code"))),
            "created" => {
                let name = v["channel_name"].as_str().expect("name").to_owned();
                let id = v["channel_id"].as_str().expect("id").to_owned();
                if let Some(old) = self.ids.get(&name) {
                    if *old != id {
                        self.anomalies.push(format!(
                            "{name} created again with another id: {old} then {id}"
                        ));
                    }
                }
                self.ids.insert(name, id);
                Reply::Created
            }
            "subscribed" => {
                let name = v["channel"].as_str().expect("channel").to_owned();
                self.epochs
                    .insert(name, v["epoch"].as_str().expect("epoch").to_owned());
                let presence = v["presence"]
                    .as_array()
                    .expect("presence")
                    .iter()
                    .map(|e| self.presence_view(e))
                    .collect::<Vec<_>>();
                if v["presence_total"].as_u64() != Some(presence.len() as u64) {
                    self.anomalies
                        .push(format!("presence_total is not the list's length: {v}"));
                }
                Reply::Subscribed {
                    recovered: v["recovered"].as_bool().expect("recovered"),
                    messages: ids(&v["messages"]),
                    presence,
                }
            }
            "unsubscribed" => Reply::Unsubscribed,
            "published" => Reply::Published {
                id: v["id"].as_u64().expect("id"),
                delivered: v["delivered_count"].as_u64().expect("d") as usize,
                queued: v["queued_count"].as_u64().expect("q") as usize,
            },
            "ok" => Reply::Ok,
            "enrolled" => Reply::Enrolled {
                new: v["new"].as_bool().expect("new"),
                cursor: v["cursor"].as_u64().expect("cursor"),
                recovered: v["recovered"].as_bool().expect("recovered"),
                messages: ids(&v["messages"]),
            },
            "withdrawn" => Reply::Withdrawn {
                removed: v["removed"].as_bool().expect("removed"),
            },
            "list" => {
                let mut l: Vec<(String, u64)> = v["channels"]
                    .as_array()
                    .expect("channels")
                    .iter()
                    .map(|c| {
                        (
                            c["name"].as_str().expect("name").to_owned(),
                            c["unread_count"].as_u64().expect("unread"),
                        )
                    })
                    .collect();
                // Every shard answers a list; the door merges them.
                if let Some((_, _, Reply::List(prev))) = ctx
                    .obs
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
            other => panic!("unexpected reply {other}: {v}"),
        };
        ctx.obs.replies.push((caller, step, r));
    }

    fn presence_view(&self, e: &serde_json::Value) -> PresenceView {
        let org = e["org"].as_str().expect("org");
        let sub = e["user_id"].as_str().expect("user_id");
        let user = (
            model::ORGS.iter().position(|o| *o == org).expect("org"),
            model::SUBS.iter().position(|s| *s == sub).expect("sub"),
        );
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
    fn complete(&mut self, ok: bool, ctx: &mut Ctx) {
        for i in 0..SHARDS {
            let Some((_, upto)) = self.shards[i].pending_upto() else {
                continue;
            };
            let out = if ok {
                self.journals[i].stored(upto);
                self.shards[i].complete_pending(upto, Ok(()))
            } else {
                self.journals[i].failed();
                self.shards[i].complete_pending(upto, Err(JournalError::Failed("test".into())))
            };
            self.route(out, ctx);
        }
    }

    fn then(&mut self, then: Then, ctx: &mut Ctx) {
        match then {
            Then::Commit => self.complete(true, ctx),
            Then::Fail => self.complete(false, ctx),
            Then::Hold | Then::Refuse => {}
        }
    }

    fn request(&mut self, from: ConnRef, p: usize, json: &str, ctx: &mut Ctx) {
        let env = parse_request(json, &self.cfg.limits).unwrap_or_else(|e| panic!("{json}: {e:?}"));
        let claims = claims(p);
        let r#ref = env.r#ref;
        let (name, msg) = match env.req {
            Request::Create(req) => (
                req.name.as_str().to_owned(),
                ShardMsg::Create {
                    from,
                    r#ref,
                    claims,
                    req,
                },
            ),
            Request::Subscribe(req) => (
                req.channel.as_str().to_owned(),
                ShardMsg::Subscribe {
                    from,
                    r#ref,
                    claims,
                    req,
                },
            ),
            Request::Publish(req) => (
                req.channel.as_str().to_owned(),
                ShardMsg::Publish {
                    from,
                    r#ref,
                    claims,
                    req,
                },
            ),
            other => panic!("not built from JSON here: {other:?}"),
        };
        self.to_owner(&name, msg, ctx);
    }

    /// A restart: every connection goes, the shards are rebuilt from what the logs stored
    /// and the registry holds.
    fn restart(&mut self) {
        self.boot += 1;
        for g in self.generation.iter_mut() {
            *g += 1;
        }
        self.host.clear();
        let members = self.catalog.members.lock().unwrap().clone();
        let mut per_shard: Vec<Vec<RestoredChannel>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for (i, j) in self.journals.iter().enumerate() {
            j.failed(); // what was not durable is lost
            let mut chans: BTreeMap<String, RestoredChannel> = BTreeMap::new();
            for (_, name, ts, rec) in j.records.borrow().iter() {
                match rec {
                    Rec::Channel(json) => {
                        let cp: ChannelCheckpoint = serde_json::from_slice(json).expect("cp");
                        chans.insert(
                            name.clone(),
                            RestoredChannel {
                                meta: cp.meta,
                                last_id: cp.last_id,
                                messages: Vec::new(),
                                members: Vec::new(),
                            },
                        );
                    }
                    Rec::Message { id, frame } => {
                        let c = chans.get_mut(name).expect("a message of a logged channel");
                        c.messages.push(RestoredMessage {
                            id: *id,
                            ts_ms: *ts,
                            frame: frame.clone(),
                        });
                    }
                }
            }
            for (name, c) in chans.iter_mut() {
                c.members = members
                    .get(name)
                    .map(|m| m.iter().map(|(u, c)| (u.clone(), *c)).collect())
                    .unwrap_or_default();
            }
            per_shard[i] = chans.into_values().collect();
        }
        // The registry forgets channels the log never stored.
        {
            let logged: BTreeSet<String> = per_shard
                .iter()
                .flatten()
                .map(|c| c.meta.name.as_str().to_owned())
                .collect();
            self.catalog
                .members
                .lock()
                .unwrap()
                .retain(|n, _| logged.contains(n));
        }
        self.shards = self.fresh_shards();
        for (i, chans) in per_shard.into_iter().enumerate() {
            self.shards[i].restore(chans, ringbearer_io::shard::now_ms());
        }
    }

    /// Drives `op` (step number `step`) and returns what was seen.
    fn apply(&mut self, step: usize, op: &Op, m: &Model) -> Obs {
        let mut ctx = Ctx {
            obs: Obs::default(),
            rest: self.rest.clone(),
        };
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
                        ctx.rest.borrow_mut().insert(step, p);
                        Self::call(step)
                    }
                };
                self.journals[owner_of(n)].refuse.set(then == Then::Refuse);
                self.request(from, p, &req.to_string(), &mut ctx);
                self.journals[owner_of(n)].refuse.set(false);
                self.then(then, &mut ctx);
                // The shard stamps channels with the wall clock in ms, and a restart gives a
                // wedding to the organization of its earliest channel: two channels of one
                // wedding created in the same ms tie, and the restore order decides (a
                // finding reported to the lead). Keep creates in distinct ms here.
                let t = ringbearer_io::shard::now_ms();
                while ringbearer_io::shard::now_ms() == t {
                    std::hint::spin_loop();
                }
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
                self.request(
                    from,
                    model::SLOT_PRINCIPAL[slot],
                    &req.to_string(),
                    &mut ctx,
                );
            }
            Op::Unsubscribe { slot, name } => {
                let msg = ShardMsg::Unsubscribe {
                    from: self.conn(slot),
                    r#ref: Some(r),
                    channel: channel(name),
                };
                self.to_owner(model::NAMES[name].0, msg, &mut ctx);
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
                for (owner, channels) in by_owner {
                    let out = self.shards[owner].handle(ShardMsg::Disconnect { conn, channels });
                    self.route(out, &mut ctx);
                }
                self.generation[slot] += 1;
            }
            Op::Publish {
                slot,
                name,
                target,
                key,
                then,
            } => {
                let n = model::NAMES[name].0;
                let mut req = serde_json::json!({"op": "publish", "ref": r, "channel": n, "type": "general", "payload": {"step": step}});
                if let Some((org, sub)) = target {
                    req["target_user_id"] = model::SUBS[sub].into();
                    if let Some(o) = org {
                        req["target_org"] = model::ORGS[o].into();
                    }
                }
                if let Some(k) = key {
                    req["idempotency_key"] = format!("k{k}").into();
                }
                let from = self.conn(slot);
                self.journals[owner_of(n)].refuse.set(then == Then::Refuse);
                self.request(
                    from,
                    model::SLOT_PRINCIPAL[slot],
                    &req.to_string(),
                    &mut ctx,
                );
                self.journals[owner_of(n)].refuse.set(false);
                self.then(then, &mut ctx);
            }
            Op::Ack { slot, name, id } => {
                let msg = ShardMsg::Ack {
                    from: self.conn(slot),
                    r#ref: Some(r),
                    user: user_key(model::user_of(model::SLOT_PRINCIPAL[slot])),
                    channel: channel(name),
                    id,
                };
                self.to_owner(model::NAMES[name].0, msg, &mut ctx);
            }
            Op::Presence { slot, name, meta } => {
                let msg = ShardMsg::Presence {
                    from: self.conn(slot),
                    r#ref: Some(r),
                    channel: channel(name),
                    meta: format!("{{\"n\":{meta}}}"),
                };
                self.to_owner(model::NAMES[name].0, msg, &mut ctx);
            }
            Op::Enroll {
                caller,
                sub,
                name,
                history,
            } => {
                ctx.rest.borrow_mut().insert(step, caller);
                let org = model::PRINCIPALS[caller].org;
                let msg = ShardMsg::Enroll {
                    from: Self::call(step),
                    claims: claims(caller),
                    user: user_key((org, sub)),
                    req: SubscribeReq {
                        channel: channel(name),
                        last_seen_id: None,
                        epoch: None,
                        include_history: history,
                    },
                };
                self.to_owner(model::NAMES[name].0, msg, &mut ctx);
            }
            Op::Withdraw { caller, sub, name } => {
                ctx.rest.borrow_mut().insert(step, caller);
                let org = model::PRINCIPALS[caller].org;
                let msg = ShardMsg::Withdraw {
                    from: Self::call(step),
                    claims: claims(caller),
                    user: user_key((org, sub)),
                    channel: channel(name),
                };
                self.to_owner(model::NAMES[name].0, msg, &mut ctx);
            }
            Op::List { caller, sub } => {
                ctx.rest.borrow_mut().insert(step, caller);
                let org = model::PRINCIPALS[caller].org;
                for i in 0..SHARDS {
                    let out = self.shards[i].handle(ShardMsg::ListFor {
                        from: Self::call(step),
                        claims: claims(caller),
                        user: user_key((org, sub)),
                    });
                    self.route(out, &mut ctx);
                }
            }
            Op::Flush { fail } => self.complete(!fail, &mut ctx),
            Op::Wait => unreachable!("the shard reads the wall clock: no Wait"),
            Op::Restart => self.restart(),
        }
        ctx.obs
    }

    /// The registry's subscriptions and cursors of channel `name`.
    fn registry(&self, name: usize) -> BTreeMap<model::User, u64> {
        let n = model::NAMES[name].0;
        self.catalog
            .members
            .lock()
            .unwrap()
            .get(n)
            .map(|m| {
                m.iter()
                    .map(|(u, c)| {
                        let org = model::ORGS.iter().position(|o| *o == u.org).expect("org");
                        let sub = model::SUBS.iter().position(|s| *s == u.sub).expect("sub");
                        ((org, sub), *c)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn variant(m: &ShardMsg) -> &'static str {
    match m {
        ShardMsg::Create { .. } => "Create",
        ShardMsg::Subscribe { .. } => "Subscribe",
        ShardMsg::Disconnect { .. } => "Disconnect",
        _ => "another",
    }
}

/// One step's collection: what was seen, and which principal each REST call was (a call's
/// answer may come in a later step, when its store completes).
struct Ctx {
    obs: Obs,
    rest: Rc<RefCell<HashMap<usize, usize>>>,
}

impl Ctx {
    fn rest_caller(&self, step: usize) -> usize {
        self.rest.borrow().get(&step).copied().unwrap_or(usize::MAX)
    }
}

/// Replies compared by (step, caller): a step answers each caller at most once, and two
/// shards' logs complete in either order.
fn normalize(
    mut o: Obs,
) -> (
    Vec<(usize, Caller, Reply)>,
    BTreeMap<(usize, usize), Vec<u64>>,
) {
    let mut replies: Vec<(usize, Caller, Reply)> =
        o.replies.drain(..).map(|(c, s, r)| (s, c, r)).collect();
    replies.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    // Per connection and channel, in order (SPEC §2.1); across channels no order is promised.
    let mut per: BTreeMap<(usize, usize), Vec<u64>> = BTreeMap::new();
    for (slot, v) in o.delivered {
        for (name, id) in v {
            per.entry((slot, name)).or_default().push(id);
        }
    }
    (replies, per)
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
            other => format!("{other:?}"),
        };
        *seen.entry(k).or_default() += 1;
    }
    *seen.entry("live deliveries".into()).or_default() += delivered;
}

/// Runs `ops` through the model and the shards; the first divergence, described.
fn run(ops: &[Op], known: model::Known) -> Result<(), String> {
    let mut m = Model::new(0, known);
    let mut w = World::new();
    for (step, op) in ops.iter().enumerate() {
        let seen = w.apply(step, op, &m);
        let want = m.apply(step, op);
        let (seen, want) = (normalize(seen), normalize(want));
        count(&want.0, want.1.values().map(Vec::len).sum());
        if seen != want || !w.anomalies.is_empty() {
            return Err(format!(
                "step {step}: {op:?}\n  model: {want:?}\n  owner: {seen:?}\n  anomalies: {:?}",
                w.anomalies
            ));
        }
        for name in 0..model::NAMES.len() {
            let (mine, theirs) = (m.cursors(name), w.registry(name));
            if mine != theirs {
                return Err(format!(
                    "step {step}: {op:?}\n  registry of {}: model {mine:?}, owner {theirs:?}",
                    model::NAMES[name].0
                ));
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
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
        let ops: Vec<Op> = ops.into_iter().filter(|o| !matches!(o, Op::Wait)).collect();
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
            let ops: Vec<Op> = ops.into_iter().filter(|o| !matches!(o, Op::Wait)).collect();
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
        key: None,
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

/// Found by the random runs, NOT fixed (in the owner; reported to the lead): org-a's
/// create of `wedding:main:w-1` is refused (its store failed), so no channel names `w-1`;
/// yet org-b's admin (`weddings: ["*"]`) is then refused creating it with
/// `WS_WEDDING_ISOLATION_VIOLATION`: the failed create still made org-a the wedding's owner
/// (until a restart, which derives owners from stored channels). SPEC §1: the owner is the
/// organization that created the first channel with it. Run with `--ignored`.
#[test]
#[ignore = "owner bug, reported: an unstored create claims its wedding"]
fn regression_an_unstored_create_does_not_claim_the_wedding() {
    let ops = vec![
        create(0, 0, Kind::Shared, None, Then::Fail),
        create(5, 0, Kind::Shared, None, Then::Commit),
    ];
    run(&ops, model::Known::default()).unwrap();
}
