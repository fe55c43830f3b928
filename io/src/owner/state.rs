//! Shared state (SPEC §3, docs/decisions.md §31): `state_get`, `state_set`, `state_patch`.
//!
//! A channel's documents live next to it (`Owner::docs`). A write is decided by
//! `ringbearer_core::state_doc::decide` against the newest version — one still being stored
//! included, so two writes on one version never both win — and then takes the path of a
//! publish: the rates, the next id, a message of type `state` in the log, and once the log
//! says it is stored, the answer (`state_ok`), the fan-out to subscribers and, when the
//! write overrode someone, a `state_overridden` to that writer's subscribed connections.
//! Reads see stored versions only. A failed store drops the changes still being stored with
//! the messages that carried them (`rollback`).
//!
//! The stored documents go into every checkpoint of the channel (`retention_snapshot`), and
//! `rebuild.rs` applies the changes logged after it, so they outlive both restarts and the
//! retention that reclaims the messages that wrote them.

use super::commit::PendingKind;
use super::effects::{Caller, Effect, Effects, Reply, StateOk, StateView};
use super::{check_access, not_found, Now, Owner};
use crate::journal::Entry;
use ringbearer_core::access::{Action, Claims};
use ringbearer_core::channel_state::ChannelState;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::identity::Target;
use ringbearer_core::message::{FrameBytes, MessageFrame};
use ringbearer_core::protocol::StateWriteReq;
use ringbearer_core::state_doc::{
    decide, Change, ChangePayload, Decision, Doc, Overrode, Writer, STATE_TYPE,
};
use ringbearer_core::{ChannelName, Priority, UserKey};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// A document and the size of its value as JSON (what `state_max_value_bytes` and
/// `state_max_bytes_per_channel` count).
#[derive(Clone, Debug)]
pub(super) struct Held {
    doc: Doc,
    bytes: usize,
}

impl Held {
    fn new(doc: Doc) -> Held {
        let bytes = value_bytes(&doc);
        Held { doc, bytes }
    }
}

fn value_bytes(doc: &Doc) -> usize {
    serde_json::to_vec(&doc.value).map_or(usize::MAX, |v| v.len())
}

/// One channel's documents: those stored, and changes still being stored, in id order.
#[derive(Debug, Default)]
pub(super) struct ChannelDocs {
    stored: BTreeMap<String, Held>,
    pending: VecDeque<(u64, String, Held)>,
}

impl ChannelDocs {
    pub(super) fn stored(stored: BTreeMap<String, Doc>) -> ChannelDocs {
        ChannelDocs {
            stored: stored.into_iter().map(|(k, d)| (k, Held::new(d))).collect(),
            pending: VecDeque::new(),
        }
    }

    /// The stored documents (for a checkpoint).
    pub(super) fn snapshot(&self) -> BTreeMap<String, Doc> {
        self.stored
            .iter()
            .map(|(k, h)| (k.clone(), h.doc.clone()))
            .collect()
    }

    fn stored_doc(&self, doc: &str) -> Option<&Doc> {
        self.stored.get(doc).map(|h| &h.doc)
    }

    /// The newest version of `doc`, one still being stored included.
    fn newest(&self, doc: &str) -> Option<&Held> {
        self.pending
            .iter()
            .rev()
            .find(|(_, name, _)| name == doc)
            .map(|(_, _, h)| h)
            .or_else(|| self.stored.get(doc))
    }

    fn is_pending(&self, doc: &str) -> bool {
        self.pending.iter().any(|(_, name, _)| name == doc)
    }

    /// The documents' names, newest versions included.
    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.stored.keys().map(String::as_str).collect();
        names.extend(self.pending.iter().map(|(_, n, _)| n.as_str()));
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Documents there would be with `doc`.
    fn count_with(&self, doc: &str) -> usize {
        let names = self.names();
        names.len() + usize::from(!names.contains(&doc))
    }

    /// The channel's value bytes (newest versions) with `doc` at `bytes`.
    fn bytes_with(&self, doc: &str, bytes: usize) -> usize {
        let others: usize = self
            .names()
            .into_iter()
            .filter(|n| *n != doc)
            .filter_map(|n| self.newest(n))
            .map(|h| h.bytes)
            .sum();
        others.saturating_add(bytes)
    }

    /// The change carried by message `id` is stored.
    fn stored_upto(&mut self, id: u64) {
        while self.pending.front().is_some_and(|(i, _, _)| *i <= id) {
            let (_, name, held) = self.pending.pop_front().expect("front");
            self.stored.insert(name, held);
        }
    }

    /// The store failed: changes still being stored never happened.
    pub(super) fn rollback(&mut self) {
        self.pending.clear();
    }
}

/// What a stored change still has to do once its message is stored.
#[derive(Debug)]
pub(super) struct StateWrite {
    pub(super) id: u64,
    pub(super) frame: Arc<FrameBytes>,
    pub(super) writer: Writer,
    pub(super) ok: StateOk,
}

fn view(channel: &ChannelName, doc: &str, d: Option<&Doc>) -> StateView {
    StateView {
        channel: channel.clone(),
        doc: doc.to_owned(),
        version: d.map_or(0, |d| d.version),
        value: d.map(|d| d.value.clone()),
        writer: d.map(|d| d.writer.clone()),
    }
}

impl Owner {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn state_get(
        &mut self,
        fx: &mut Effects,
        now: Now,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        channel: &ChannelName,
        doc: &str,
    ) {
        let Some(ch) = self.channels.get(channel.as_str()) else {
            return fx.refuse(from, r#ref, not_found(channel));
        };
        if let Err(e) = check_access(fx, now, ch, claims, Action::Read, "state_get") {
            return fx.refuse(from, r#ref, e);
        }
        let d = self
            .docs
            .get(channel.as_str())
            .and_then(|c| c.stored_doc(doc));
        fx.reply(from, r#ref, Reply::State(Box::new(view(channel, doc, d))));
    }

    pub(super) fn state_write(
        &mut self,
        fx: &mut Effects,
        now: Now,
        from: Caller,
        r#ref: Option<&str>,
        claims: &Claims,
        req: StateWriteReq,
    ) {
        if self.cluster.is_some() {
            // Its changes take ids in the channel's log, which the stream orders in cluster
            // mode: not built yet (docs/cluster.md), refused rather than numbered twice.
            let e = Refusal::new(
                ErrorCode::BadRequest,
                "shared state is not available in cluster mode yet (docs/cluster.md)",
            );
            return fx.refuse(from, r#ref, e);
        }
        let StateWriteReq {
            channel,
            doc,
            version,
            change,
        } = req;
        let op = match change {
            Change::Set(_) => "state_set",
            Change::Patch(_) => "state_patch",
        };
        let Some(ch) = self.channels.get_mut(channel.as_str()) else {
            return fx.refuse(from, r#ref, not_found(&channel));
        };
        if let Err(e) = check_access(fx, now, ch, claims, Action::Write, op) {
            return fx.refuse(from, r#ref, e);
        }
        // A write is a publish for the rates (SPEC §1, wedding days included).
        let limits = &self.cfg.limits;
        let wedding_day = ch
            .meta
            .access
            .wedding_id
            .as_deref()
            .is_some_and(|w| self.weddings.is_wedding_day(w, now.calendar_ms));
        let m = if wedding_day {
            limits.wedding_day_rate_multiplier
        } else {
            1
        };
        let rated = self
            .policy
            .take_message_scaled(claims, limits, m, now.ms)
            .and_then(|()| ch.take_publish_scaled(limits, m, now.ms));
        if let Err(e) = rated {
            return fx.refuse(from, r#ref, e);
        }
        let docs = self.docs.entry(channel.as_str().to_owned()).or_default();
        let current = docs.newest(&doc).map(|h| &h.doc);
        if current.is_none() && docs.count_with(&doc) > limits.state_docs_per_channel {
            let e = Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "the channel holds {} documents (state_docs_per_channel)",
                    limits.state_docs_per_channel
                ),
            );
            return fx.refuse(from, r#ref, e);
        }
        let writer = Writer {
            user_id: claims.sub.clone(),
            org: claims.org.clone(),
            role: claims.role,
        };
        let fields = match &change {
            Change::Patch(f) => Some(f.clone()),
            Change::Set(_) => None,
        };
        let (new, overrode) = match decide(current, version, &writer, change) {
            Decision::Apply { doc, overrode } => (doc, overrode),
            Decision::Conflict => {
                if docs.is_pending(&doc) {
                    // The newest version is still being stored: answered with it once it
                    // is (never with a version that was not stored).
                    let kind = PendingKind::StateConflict {
                        doc,
                        yours: version,
                    };
                    self.commit.wait_behind(&channel, from, r#ref, kind);
                    fx.wake_commit = true;
                } else {
                    let current = Box::new(view(&channel, &doc, current));
                    let reply = Reply::StateConflict {
                        current,
                        yours: version,
                    };
                    fx.reply(from, r#ref, reply);
                }
                return;
            }
        };
        let new = Held::new(new);
        if new.bytes > limits.state_max_value_bytes {
            let e = Refusal::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the document would be {} bytes; the limit is {} (state_max_value_bytes)",
                    new.bytes, limits.state_max_value_bytes
                ),
            );
            return fx.refuse(from, r#ref, e);
        }
        // The channel's documents travel in one checkpoint record (decisions.md §31).
        let total = docs.bytes_with(&doc, new.bytes);
        if total > limits.state_max_bytes_per_channel {
            let e = Refusal::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the channel's documents would be {total} bytes; the limit is {} (state_max_bytes_per_channel)",
                    limits.state_max_bytes_per_channel
                ),
            );
            return fx.refuse(from, r#ref, e);
        }
        let payload = ChangePayload {
            doc: doc.clone(),
            version: new.doc.version,
            value: new.doc.value.clone(),
            writer,
            fields,
            overrode: overrode.clone(),
        };
        let writer = payload.writer.clone();
        let payload = serde_json::to_string(&payload).expect("serializes");
        if payload.len() > limits.max_payload_bytes {
            // A change is a message: its payload (the new value, a patch's fields too)
            // keeps the SPEC's payload bound.
            let e = Refusal::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the change would be a {}-byte message payload; the limit is {} (max_payload_bytes)",
                    payload.len(),
                    limits.max_payload_bytes
                ),
            );
            return fx.refuse(from, r#ref, e);
        }
        let id = ch.next_id();
        let frame = MessageFrame {
            id,
            ts_ms: now.ms,
            channel: channel.as_str().to_owned(),
            msg_type: STATE_TYPE.to_owned(),
            event: Some(format!("state:{doc}")),
            priority: Priority::Normal as u8,
            payload,
            sender_user_id: claims.sub.clone(),
            sender_org: claims.org.clone(),
            sender_role: claims.role.code(),
            target_user_id: None,
            target_org: None,
            // Every reader of the channel sees every change (no routing table for `state`).
            target_roles: 0,
            wedding_context: None,
            idempotency_key: None,
        };
        let bytes = Arc::new(frame.encode());
        let w = StateWrite {
            id,
            frame: bytes.clone(),
            writer,
            ok: StateOk {
                channel: channel.clone(),
                doc: doc.clone(),
                version: new.doc.version,
                id,
                overrode,
            },
        };
        if self.commit.is_memory() {
            // `memory` policy: durable on append.
            ch.publish(bytes, now.ms, &Target::default(), None, now.ms);
            docs.stored.insert(doc, new);
            return stored(fx, ch, w, from, r#ref);
        }
        let pos = match self.commit.append(
            channel.as_str(),
            now.ms,
            Entry::Message { id, frame: &bytes },
        ) {
            Ok(pos) => pos,
            Err(e) => return fx.refuse(from, r#ref, e),
        };
        ch.append(bytes, now.ms, &Target::default(), None, now.ms);
        docs.pending.push_back((id, doc, new));
        self.commit
            .push(pos, &channel, from, r#ref, PendingKind::State(Box::new(w)));
        fx.wake_commit = true;
    }

    /// A pending state write or conflict answer whose turn came (`commit.rs`).
    pub(super) fn complete_state(
        &mut self,
        fx: &mut Effects,
        to: Caller,
        r#ref: Option<&str>,
        channel: &ChannelName,
        kind: PendingKind,
    ) {
        let Some(ch) = self.channels.get_mut(channel.as_str()) else {
            return;
        };
        let docs = self.docs.entry(channel.as_str().to_owned()).or_default();
        match kind {
            PendingKind::State(w) => {
                ch.mark_durable(w.id);
                assert!(
                    ch.durable_id() <= ch.last_id(),
                    "durable id past the last id"
                );
                docs.stored_upto(w.id);
                stored(fx, ch, *w, to, r#ref);
            }
            PendingKind::StateConflict { doc, yours } => {
                let current = Box::new(view(channel, &doc, docs.stored_doc(&doc)));
                fx.reply(to, r#ref, Reply::StateConflict { current, yours });
            }
            _ => unreachable!("not a state write"),
        }
    }
}

/// A stored change: answered, delivered to every subscribing shard, and the writer it
/// overrode told on each of its connections subscribed to the channel.
fn stored(
    fx: &mut Effects,
    ch: &ChannelState<Arc<FrameBytes>>,
    w: StateWrite,
    to: Caller,
    r#ref: Option<&str>,
) {
    fx.tally.published += 1;
    let o = ch.outcome(w.id, &Target::default());
    let overrode = w.ok.overrode.clone();
    let (channel, doc, version) = (w.ok.channel.clone(), w.ok.doc.clone(), w.ok.version);
    let writer = w.writer;
    fx.reply(to, r#ref, Reply::StateOk(Box::new(w.ok)));
    for s in o.shards {
        fx.list.push(Effect::Deliver {
            shard: s,
            frame: w.frame.clone(),
        });
    }
    if let Some(Overrode {
        user_id,
        org,
        version: yours,
        ..
    }) = overrode
    {
        let loser = UserKey::new(org, user_id);
        for conn in ch.online_conns() {
            if ch.online_user(conn).as_ref() == Some(&loser) {
                let told = Reply::StateOverridden {
                    channel: channel.clone(),
                    doc: doc.clone(),
                    version,
                    yours,
                    by: writer.clone(),
                };
                fx.reply(conn, None, told);
            }
        }
    }
}
