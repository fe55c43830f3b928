//! The Phoenix-channels door's side of a connection (`@supabase/realtime-js`,
//! `docs/realtime-js.md`): what a connection that came in at `/realtime/v1/websocket`
//! joined ([`Session`]), and the shapes it hears — `phx_reply`, `broadcast`,
//! `presence_state`/`presence_diff`, `system`, `phx_close` — in the serializer it asked
//! for (`vsn` 1.0.0: JSON objects; 2.0.0: JSON arrays `[join_ref, ref, topic, event,
//! payload]`). Rendered from the owner's typed replies and events, once per shard per
//! serializer for what every subscriber shares (stored messages, presence changes).
//!
//! Topics are `realtime:<channel name>`; the frames for a channel carry that topic.

use crate::owner::ChannelEvent;
use hashbrown::HashMap;
use ringbearer_core::access::Role;
use ringbearer_core::error::Refusal;
use ringbearer_core::message::{push_json_str, ArchivedMessageFrame};
use ringbearer_core::presence::{PresenceDiff, PresenceEntry};
use std::cell::RefCell;
use std::collections::VecDeque;

/// The prefix of every channel topic.
pub const TOPIC_PREFIX: &str = "realtime:";

/// The serializer a connection asked for with `vsn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vsn {
    /// `1.0.0`: each frame a JSON object `{join_ref, ref, topic, event, payload}`.
    V1,
    /// `2.0.0`: each frame a JSON array; the client may send broadcasts as binary frames.
    V2,
}

impl Vsn {
    /// `None` (the query has no `vsn`) is 1.0.0, as Phoenix has it.
    pub fn parse(v: Option<&str>) -> Option<Vsn> {
        match v {
            None | Some("1.0.0") => Some(Vsn::V1),
            Some("2.0.0") => Some(Vsn::V2),
            _ => None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a connection asked for when it joined one channel.
#[derive(Clone, Debug, Default)]
pub struct Joined {
    pub join_ref: Option<String>,
    /// `config.broadcast.self`: hear its own broadcasts.
    pub self_broadcast: bool,
    /// `config.broadcast.ack`: a broadcast is answered once stored.
    pub ack: bool,
    /// `config.presence.key` (empty: the user's id).
    pub presence_key: Option<String>,
    /// `config.broadcast.replay`: (`since` ms, `limit` already capped).
    pub replay: Option<(u64, usize)>,
    /// Ids of its own broadcasts not yet come back (`self_broadcast` false), oldest first.
    own: VecDeque<u64>,
    /// Highest id queued for the connection; the same at its last heartbeat; the highest
    /// acknowledged for it.
    pub delivered: u64,
    pub at_last_heartbeat: u64,
    pub acked: u64,
}

/// A Phoenix connection's state (on `host::Conn`).
#[derive(Debug)]
pub struct Session {
    pub vsn: Vsn,
    /// Channel name → what it joined (a join in flight included).
    pub topics: RefCell<HashMap<String, Joined>>,
    /// Most ids of own broadcasts remembered per channel (`io.outbox_max_messages`).
    own_max: usize,
}

impl Session {
    pub fn new(vsn: Vsn, own_max: usize) -> Session {
        Session {
            vsn,
            topics: RefCell::new(HashMap::new()),
            own_max: own_max.max(1),
        }
    }

    /// The join ref of `channel`, if joined.
    pub fn join_ref(&self, channel: &str) -> Option<Option<String>> {
        self.topics
            .borrow()
            .get(channel)
            .map(|j| j.join_ref.clone())
    }

    /// Our broadcast `id` on `channel` was stored: remember it if the connection must not
    /// hear it; `true` if the connection asked for an ack.
    pub fn published(&self, channel: &str, id: u64) -> bool {
        let mut t = self.topics.borrow_mut();
        let Some(j) = t.get_mut(channel) else {
            return false;
        };
        if !j.self_broadcast {
            if j.own.len() >= self.own_max {
                j.own.pop_front();
            }
            j.own.push_back(id);
        }
        j.ack
    }

    /// Stored message `id` of `channel` is about to be written: `false` if it is the
    /// connection's own broadcast it asked not to hear. Ids arrive in order per channel,
    /// so own ids below `id` will never come (an idempotent repeat) and are dropped.
    pub fn deliver(&self, channel: &str, id: u64) -> bool {
        let mut t = self.topics.borrow_mut();
        let Some(j) = t.get_mut(channel) else {
            return true;
        };
        j.delivered = j.delivered.max(id);
        while j.own.front().is_some_and(|&o| o < id) {
            j.own.pop_front();
        }
        if j.own.front() == Some(&id) {
            j.own.pop_front();
            return false;
        }
        true
    }

    /// A heartbeat came in: what the client has provably received, per channel, not yet
    /// acknowledged — (channel, id) — marked acknowledged.
    ///
    /// The proof: the heartbeat reply is queued behind every message queued before it
    /// (`Priority::Low`, FIFO), so it reaches the client after them, and Phoenix's client
    /// sends its next heartbeat only once the previous one was answered (else it closes and
    /// reconnects). So at heartbeat N everything queued by heartbeat N − 1 was received.
    pub fn take_acks(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (c, j) in self.topics.borrow_mut().iter_mut() {
            if j.at_last_heartbeat > j.acked {
                j.acked = j.at_last_heartbeat;
                out.push((c.clone(), j.acked));
            }
            j.at_last_heartbeat = j.delivered;
        }
        out
    }
}

/// One frame: `[join_ref, ref, topic, event, payload]` (2.0.0) or the object (1.0.0).
/// `payload` is JSON.
pub fn frame(
    vsn: Vsn,
    join_ref: Option<&str>,
    r#ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + topic.len() + payload.len());
    let opt = |out: &mut Vec<u8>, v: Option<&str>| match v {
        Some(s) => push_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    };
    match vsn {
        Vsn::V2 => {
            out.push(b'[');
            opt(&mut out, join_ref);
            out.push(b',');
            opt(&mut out, r#ref);
            out.push(b',');
            push_json_str(&mut out, topic);
            out.push(b',');
            push_json_str(&mut out, event);
            out.push(b',');
            out.extend_from_slice(payload);
            out.push(b']');
        }
        Vsn::V1 => {
            out.extend_from_slice(b"{\"join_ref\":");
            opt(&mut out, join_ref);
            out.extend_from_slice(b",\"ref\":");
            opt(&mut out, r#ref);
            out.extend_from_slice(b",\"topic\":");
            push_json_str(&mut out, topic);
            out.extend_from_slice(b",\"event\":");
            push_json_str(&mut out, event);
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(payload);
            out.push(b'}');
        }
    }
    out
}

/// The topic of `channel`.
pub fn topic(channel: &str) -> String {
    format!("{TOPIC_PREFIX}{channel}")
}

/// `phx_reply` with status `ok` and `response` (JSON).
pub fn reply_ok(
    vsn: Vsn,
    join_ref: Option<&str>,
    r#ref: Option<&str>,
    topic: &str,
    response: &[u8],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(32 + response.len());
    p.extend_from_slice(b"{\"status\":\"ok\",\"response\":");
    p.extend_from_slice(response);
    p.push(b'}');
    frame(vsn, join_ref, r#ref, topic, "phx_reply", &p)
}

/// The Ringbearer refusal as a JSON object: `{reason, code, retryable, retry_after?}`.
pub fn refusal_json(e: &Refusal) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 + e.message.len());
    p.extend_from_slice(b"{\"reason\":");
    push_json_str(&mut p, &e.message);
    p.extend_from_slice(b",\"code\":");
    push_json_str(&mut p, e.code.as_str());
    p.extend_from_slice(if e.code.retryable() {
        b",\"retryable\":true"
    } else {
        b",\"retryable\":false"
    });
    if let Some(s) = e.retry_after {
        p.extend_from_slice(format!(",\"retry_after\":{s}").as_bytes());
    }
    p.push(b'}');
    p
}

/// `phx_reply` with status `error`; the response carries the Ringbearer code.
pub fn reply_error(
    vsn: Vsn,
    join_ref: Option<&str>,
    r#ref: Option<&str>,
    topic: &str,
    e: &Refusal,
) -> Vec<u8> {
    let mut p = b"{\"status\":\"error\",\"response\":".to_vec();
    p.extend_from_slice(&refusal_json(e));
    p.push(b'}');
    frame(vsn, join_ref, r#ref, topic, "phx_reply", &p)
}

/// The server ended a channel's subscription (a refreshed token no longer reaches it): a
/// `system` message with the code, then `phx_close`.
pub fn closed_because(
    vsn: Vsn,
    join_ref: Option<&str>,
    channel: &str,
    e: &Refusal,
) -> Vec<Vec<u8>> {
    let topic = topic(channel);
    let mut p = b"{\"status\":\"error\",\"extension\":\"system\",\"channel\":".to_vec();
    push_json_str(&mut p, channel);
    p.extend_from_slice(b",\"message\":");
    push_json_str(&mut p, &e.message);
    p.extend_from_slice(b",\"code\":");
    push_json_str(&mut p, e.code.as_str());
    p.push(b'}');
    vec![
        frame(vsn, join_ref, None, &topic, "system", &p),
        frame(vsn, join_ref, None, &topic, "phx_close", b"{}"),
    ]
}

/// A stored message as a `broadcast`: `{type: "broadcast", event, payload, meta}` where
/// `event` is the message's `event` (its `type` when it has none) and `meta` says who sent
/// it and its id (`replayed` when it comes from the log on join).
pub fn message(vsn: Vsn, f: &ArchivedMessageFrame, replayed: bool) -> Vec<u8> {
    let mut p = Vec::with_capacity(160 + f.payload.len());
    p.extend_from_slice(b"{\"type\":\"broadcast\",\"event\":");
    match f.event.as_ref() {
        Some(e) => push_json_str(&mut p, e.as_str()),
        None => push_json_str(&mut p, f.msg_type.as_str()),
    }
    p.extend_from_slice(b",\"payload\":");
    p.extend_from_slice(f.payload.as_bytes());
    p.extend_from_slice(b",\"meta\":{\"id\":");
    p.extend_from_slice(f.id().to_string().as_bytes());
    if replayed {
        p.extend_from_slice(b",\"replayed\":true");
    }
    p.extend_from_slice(b",\"ts\":");
    p.extend_from_slice(f.ts_ms.to_native().to_string().as_bytes());
    p.extend_from_slice(b",\"type\":");
    push_json_str(&mut p, f.msg_type.as_str());
    p.extend_from_slice(b",\"priority\":\"");
    p.extend_from_slice(f.priority().as_str().as_bytes());
    p.extend_from_slice(b"\",\"sender\":{\"user_id\":");
    push_json_str(&mut p, f.sender_user_id.as_str());
    p.extend_from_slice(b",\"org\":");
    push_json_str(&mut p, f.sender_org.as_str());
    p.extend_from_slice(b",\"role\":\"");
    let role = Role::from_code(f.sender_role).map_or("supplier", Role::as_str);
    p.extend_from_slice(role.as_bytes());
    p.extend_from_slice(b"\"}}}");
    frame(vsn, None, None, &topic(f.channel.as_str()), "broadcast", &p)
}

/// A presence entry as realtime-js sees it: `None` when the connection never tracked
/// (its meta is `{}`); else its key (`presence_key` of the meta, else the user's id — as
/// `org/user_id` for a user of another organization than the channel's `org`, so two
/// organizations' users with one id are never one presence) and its meta object with a
/// `phx_ref` unique to this connection and meta.
fn presence_meta(e: &PresenceEntry, org: &str) -> Option<(String, Vec<u8>)> {
    let meta = e.meta_json().trim();
    if meta == "{}" || !meta.starts_with('{') {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Key {
        presence_key: Option<String>,
    }
    let key = serde_json::from_str::<Key>(meta)
        .ok()
        .and_then(|k| k.presence_key)
        .unwrap_or_else(|| {
            if e.org == org {
                e.user_id.clone()
            } else {
                format!("{}/{}", e.org, e.user_id)
            }
        });
    let mut out = Vec::with_capacity(meta.len() + 48);
    out.extend_from_slice(b"{\"phx_ref\":");
    push_json_str(&mut out, &phx_ref(e));
    let rest = meta[1..].trim_start();
    if rest != "}" {
        out.push(b',');
    }
    out.extend_from_slice(rest.as_bytes());
    Some((key, out))
}

/// A `phx_ref` that changes when the meta does (Phoenix applies a diff's joins before its
/// leaves, so an update's leave must not name the new entry's ref).
fn phx_ref(e: &PresenceEntry) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in e.meta_json().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{}.{:08x}", e.connection_id(), h as u32)
}

/// `{key: {metas: [...]}, ...}` of the tracked entries, keys in first-seen order.
fn presence_map(entries: &[PresenceEntry], skip: &[String], org: &str) -> Vec<u8> {
    let mut keys: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for e in entries {
        let Some((k, m)) = presence_meta(e, org) else {
            continue;
        };
        if skip.contains(&phx_ref(e)) {
            continue;
        }
        match keys.iter_mut().find(|(x, _)| *x == k) {
            Some((_, v)) => v.push(m),
            None => keys.push((k, vec![m])),
        }
    }
    let mut out = b"{".to_vec();
    for (i, (k, metas)) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(&mut out, k);
        out.extend_from_slice(b":{\"metas\":[");
        for (j, m) in metas.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(m);
        }
        out.extend_from_slice(b"]}");
    }
    out.push(b'}');
    out
}

/// `presence_state` for `channel` (no join ref: shared by every subscriber).
pub fn presence_state(vsn: Vsn, channel: &str, entries: &[PresenceEntry], org: &str) -> Vec<u8> {
    let p = presence_map(entries, &[], org);
    frame(vsn, None, None, &topic(channel), "presence_state", &p)
}

/// `presence_diff {joins, leaves}` for `channel`; `None` when no tracked entry changed.
/// A leave of an entry that also joins again (same connection, same meta) is dropped.
pub fn presence_diff(vsn: Vsn, channel: &str, d: &PresenceDiff, org: &str) -> Option<Vec<u8>> {
    let joined: Vec<String> = d
        .joins
        .iter()
        .filter(|e| presence_meta(e, org).is_some())
        .map(phx_ref)
        .collect();
    let joins = presence_map(&d.joins, &[], org);
    let leaves = presence_map(&d.leaves, &joined, org);
    if joins == b"{}" && leaves == b"{}" {
        return None;
    }
    let mut p = b"{\"joins\":".to_vec();
    p.extend_from_slice(&joins);
    p.extend_from_slice(b",\"leaves\":");
    p.extend_from_slice(&leaves);
    p.push(b'}');
    Some(frame(vsn, None, None, &topic(channel), "presence_diff", &p))
}

/// A channel event for Phoenix subscribers (`None`: nothing they hear; typing is not part
/// of realtime-js).
pub fn event(vsn: Vsn, channel: &str, event: &ChannelEvent) -> Option<Vec<u8>> {
    match event {
        ChannelEvent::PresenceDiff { diff, org } => presence_diff(vsn, channel, diff, org),
        ChannelEvent::PresenceState { entries, org, .. } => {
            Some(presence_state(vsn, channel, entries, org))
        }
        ChannelEvent::Typing { .. } => None,
    }
}

/// The owner-request `ref` of a Phoenix request: what it was (`kind`), its channel, and the
/// client's `join_ref` and `ref`, so the typed reply finds its frame again. Fields are
/// separated by U+001F (refused in client refs).
pub fn owner_ref(kind: char, channel: &str, join_ref: Option<&str>, r#ref: Option<&str>) -> String {
    format!(
        "{kind}\u{1f}{channel}\u{1f}{}\u{1f}{}",
        join_ref.unwrap_or(""),
        r#ref.unwrap_or("")
    )
}

/// A split [`owner_ref`]: (kind, channel, join_ref, ref).
pub struct OwnerRef<'a> {
    pub kind: char,
    pub channel: &'a str,
    pub join_ref: Option<&'a str>,
    pub r#ref: Option<&'a str>,
}

pub fn split_ref(s: &str) -> Option<OwnerRef<'_>> {
    let mut it = s.splitn(4, '\u{1f}');
    let kind = it.next()?.chars().next()?;
    let channel = it.next()?;
    let join_ref = it.next().filter(|v| !v.is_empty());
    let r#ref = it.next().filter(|v| !v.is_empty());
    Some(OwnerRef {
        kind,
        channel,
        join_ref,
        r#ref,
    })
}

#[cfg(test)]
mod tests;
