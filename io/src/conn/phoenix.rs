//! The Phoenix-channels door (`@supabase/realtime-js`, `docs/realtime-js.md`): a frame of a
//! connection that came in at `/realtime/v1/websocket` (or `/socket/websocket`) to an
//! answer — heartbeats and token refreshes here, everything about a channel as one typed
//! `owner::Request` to the channel's owner shard, exactly as `/ws` sends it
//! (`requests.rs`). The owner's replies come back rendered by `host/phoenix.rs`.
//!
//! | client event | owner operation |
//! |---|---|
//! | `phx_join` on `realtime:<channel>` | `Op::Subscribe` (replay: history) |
//! | `phx_leave` | `Op::Unsubscribe` |
//! | `broadcast` (JSON, or a 2.0.0 binary push) | `Op::Publish` (type `broadcast`) |
//! | `presence` `track` / `untrack` | `Op::Presence` (meta = payload, + the join's `presence.key` / `{}`) |
//! | `heartbeat` on `phoenix` | answered here; acknowledges what was delivered (`Op::Ack`) |
//! | `access_token` | the `/ws` token refresh (`requests::refresh_token`) |

use super::requests::refresh_token;
use crate::host::phoenix::{self, owner_ref, Session, Vsn, TOPIC_PREFIX};
use crate::host::{Conn, ShardCtx};
use crate::mesh::ShardMsg;
use crate::owner::{self, Op};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::message::Priority;
use ringbearer_core::protocol::{check_json_depth, PublishReq, SubscribeReq};
use ringbearer_core::{shard_for, ChannelName};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::rc::Rc;

/// One client frame, parsed.
#[derive(Debug, PartialEq)]
pub struct Frame<'a> {
    pub join_ref: Option<String>,
    pub r#ref: Option<String>,
    pub topic: String,
    pub event: String,
    /// JSON.
    pub payload: &'a str,
}

#[derive(Deserialize)]
struct V2<'a>(
    Option<String>,
    Option<String>,
    String,
    String,
    #[serde(borrow)] &'a RawValue,
);

#[derive(Deserialize)]
struct V1<'a> {
    join_ref: Option<String>,
    r#ref: Option<String>,
    topic: String,
    event: String,
    #[serde(borrow)]
    payload: &'a RawValue,
}

fn bad(m: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, m)
}

/// A text frame in serializer `vsn`, within the `/ws` bounds (`max_request_bytes`, JSON
/// depth); refs and topic at most `max_field_bytes`, without control characters.
pub fn parse_text<'a>(
    vsn: Vsn,
    text: &'a str,
    limits: &ringbearer_core::Limits,
) -> Result<Frame<'a>, Refusal> {
    if text.len() > limits.max_request_bytes {
        return Err(Refusal::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "frame is {} bytes; the limit is {} (max_request_bytes)",
                text.len(),
                limits.max_request_bytes
            ),
        ));
    }
    check_json_depth(text.as_bytes(), limits)?;
    let f = match vsn {
        Vsn::V2 => {
            let V2(join_ref, r#ref, topic, event, payload) = serde_json::from_str(text)
                .map_err(|e| bad(format!("not a Phoenix 2.0.0 frame: {e}")))?;
            Frame {
                join_ref,
                r#ref,
                topic,
                event,
                payload: payload.get(),
            }
        }
        Vsn::V1 => {
            let v: V1 = serde_json::from_str(text)
                .map_err(|e| bad(format!("not a Phoenix 1.0.0 frame: {e}")))?;
            Frame {
                join_ref: v.join_ref,
                r#ref: v.r#ref,
                topic: v.topic,
                event: v.event,
                payload: v.payload.get(),
            }
        }
    };
    check_fields(&f, limits)?;
    Ok(f)
}

fn check_fields(f: &Frame<'_>, limits: &ringbearer_core::Limits) -> Result<(), Refusal> {
    for (name, v) in [
        ("join_ref", f.join_ref.as_deref()),
        ("ref", f.r#ref.as_deref()),
        ("topic", Some(f.topic.as_str())),
        ("event", Some(f.event.as_str())),
    ] {
        if let Some(v) = v {
            if v.len() > limits.max_field_bytes || v.chars().any(char::is_control) {
                return Err(bad(format!(
                    "`{name}` must be at most {} bytes without control characters",
                    limits.max_field_bytes
                )));
            }
        }
    }
    Ok(())
}

/// A realtime-js 2.0.0 binary frame: a user broadcast push (kind 3) as the equivalent
/// `broadcast` frame, its payload JSON (encoding 1) and metadata merged in. Binary
/// payloads (encoding 0) are refused: Ringbearer stores JSON.
pub fn parse_binary(
    data: &[u8],
    limits: &ringbearer_core::Limits,
) -> Result<(Frame<'static>, String), Refusal> {
    if data.len() > limits.max_request_bytes {
        return Err(Refusal::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "frame over {} bytes (max_request_bytes)",
                limits.max_request_bytes
            ),
        ));
    }
    if data.len() < 7 || data[0] != 3 {
        return Err(bad(
            "binary frames must be realtime-js user broadcast pushes (kind 3)",
        ));
    }
    let lens = [data[1], data[2], data[3], data[4], data[5]].map(usize::from);
    let encoding = data[6];
    let mut at = 7;
    let mut parts = Vec::with_capacity(5);
    for n in lens {
        let s = data
            .get(at..at + n)
            .ok_or_else(|| bad("binary frame shorter than its header says"))?;
        parts.push(std::str::from_utf8(s).map_err(|_| bad("binary frame header is not UTF-8"))?);
        at += n;
    }
    if encoding != 1 {
        return Err(bad(
            "binary broadcast payloads are not supported; send JSON",
        ));
    }
    let payload = std::str::from_utf8(&data[at..]).map_err(|_| bad("payload is not UTF-8"))?;
    check_json_depth(payload.as_bytes(), limits)?;
    serde_json::from_str::<&RawValue>(payload)
        .map_err(|e| bad(format!("payload is not JSON: {e}")))?;
    let meta = parts[4];
    // The equivalent JSON push: {type, event, payload, ...metadata}.
    let mut body = String::with_capacity(payload.len() + meta.len() + 64);
    body.push_str("{\"type\":\"broadcast\",\"event\":");
    body.push_str(&serde_json::to_string(parts[3]).expect("string"));
    body.push_str(",\"payload\":");
    body.push_str(payload);
    if !meta.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(meta)
            .map_err(|e| bad(format!("metadata is not a JSON object: {e}")))?;
        for (k, v) in m {
            if k == "type" || k == "event" || k == "payload" {
                continue;
            }
            body.push(',');
            body.push_str(&serde_json::to_string(&k).expect("string"));
            body.push(':');
            body.push_str(&v.to_string());
        }
    }
    body.push('}');
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let f = Frame {
        join_ref: opt(parts[0]),
        r#ref: opt(parts[1]),
        topic: parts[2].to_owned(),
        event: "broadcast".to_owned(),
        payload: "",
    };
    check_fields(&f, limits)?;
    Ok((f, body))
}

/// `phx_join`'s payload (unknown fields are ignored, as Phoenix servers do).
#[derive(Deserialize, Default)]
#[serde(default)]
struct JoinPayload {
    config: JoinConfig,
    access_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JoinConfig {
    broadcast: BroadcastConfig,
    presence: PresenceConfig,
    postgres_changes: Vec<serde_json::Value>,
    private: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BroadcastConfig {
    #[serde(rename = "self")]
    self_: bool,
    ack: bool,
    replay: Option<ReplayConfig>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ReplayConfig {
    since: u64,
    limit: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PresenceConfig {
    key: String,
}

/// A `broadcast` push's payload; `idempotency_key` and `priority` are Ringbearer's
/// extensions (extra fields of `channel.send`).
#[derive(Deserialize)]
struct BroadcastPayload<'a> {
    event: String,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    idempotency_key: Option<String>,
    priority: Option<String>,
}

#[derive(Deserialize)]
struct PresencePayload<'a> {
    event: String,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct TokenPayload {
    access_token: String,
}

/// Handles one text frame of a Phoenix connection.
pub(super) fn handle_text(ctx: &Rc<ShardCtx>, conn: &Rc<Conn>, p: &Session, text: &str) {
    match parse_text(p.vsn, text, &ctx.cfg.limits) {
        Ok(f) => handle(ctx, conn, p, &f, f.payload),
        Err(e) => unreadable(conn, p, &e),
    }
}

/// Handles one binary frame of a Phoenix connection (2.0.0 broadcast pushes).
pub(super) fn handle_binary(ctx: &Rc<ShardCtx>, conn: &Rc<Conn>, p: &Session, data: &[u8]) {
    match parse_binary(data, &ctx.cfg.limits) {
        Ok((f, body)) => handle(ctx, conn, p, &f, &body),
        Err(e) => unreadable(conn, p, &e),
    }
}

/// A frame we could not read has no topic to answer on: `phx_error` on `phoenix`.
fn unreadable(conn: &Conn, p: &Session, e: &Refusal) {
    crate::metrics::with(|m| m.refused(e.code));
    let body = phoenix::refusal_json(e);
    conn.send_control(phoenix::frame(p.vsn, None, None, "phoenix", "phx_error", &body).into());
}

fn refuse(conn: &Conn, p: &Session, f: &Frame<'_>, e: &Refusal) {
    crate::metrics::with(|m| m.refused(e.code));
    let frame = phoenix::reply_error(
        p.vsn,
        f.join_ref.as_deref(),
        f.r#ref.as_deref(),
        &f.topic,
        e,
    );
    conn.send_control(frame.into());
}

fn ok(conn: &Conn, p: &Session, f: &Frame<'_>, response: &[u8]) {
    let frame = phoenix::reply_ok(
        p.vsn,
        f.join_ref.as_deref(),
        f.r#ref.as_deref(),
        &f.topic,
        response,
    );
    conn.send_control(frame.into());
}

fn handle(ctx: &Rc<ShardCtx>, conn: &Rc<Conn>, p: &Session, f: &Frame<'_>, payload: &str) {
    if f.topic == "phoenix" {
        if f.event == "heartbeat" {
            // Behind every message queued before it (see `Session::take_acks`).
            let r = f.r#ref.as_deref();
            let reply = phoenix::reply_ok(p.vsn, None, r, "phoenix", b"{}");
            conn.send_message(Priority::Low, 0, reply.into());
            return acknowledge(ctx, conn, p);
        }
        return refuse(
            conn,
            p,
            f,
            &bad(format!("unknown event `{}` on `phoenix`", f.event)),
        );
    }
    let channel = match f.topic.strip_prefix(TOPIC_PREFIX) {
        // A topic that is not `realtime:` + a valid channel name is refused, never guessed.
        Some(name) => match ChannelName::parse(name) {
            Ok(c) => c,
            Err(e) => return refuse(conn, p, f, &e),
        },
        None => {
            let e = Refusal::new(
                ErrorCode::InvalidChannel,
                format!("topics are `{TOPIC_PREFIX}<channel name>`"),
            );
            return refuse(conn, p, f, &e);
        }
    };
    let r = match f.event.as_str() {
        "phx_join" => join(ctx, conn, p, f, channel, payload),
        "phx_leave" => {
            // Not joined (nor a join in flight): nothing to end.
            let held = conn.channels_held().iter().any(|c| c == channel.as_str());
            if p.join_ref(channel.as_str()).is_none() && !held {
                ok(conn, p, f, b"{}");
                return;
            }
            let r = owner_ref(
                'l',
                channel.as_str(),
                f.join_ref.as_deref(),
                f.r#ref.as_deref(),
            );
            to_owner(ctx, conn, channel.clone(), r, Op::Unsubscribe(channel))
        }
        "access_token" => match serde_json::from_str::<TokenPayload>(payload) {
            Ok(t) => refresh_token(ctx, conn, &t.access_token).map(|()| ok(conn, p, f, b"{}")),
            Err(e) => Err(bad(format!("access_token: {e}"))),
        },
        "broadcast" => broadcast(ctx, conn, p, f, channel, payload),
        "presence" => presence(ctx, conn, p, f, channel, payload),
        other => Err(bad(format!("unknown event `{}`", other.escape_default()))),
    };
    if let Err(e) = r {
        refuse(conn, p, f, &e);
    }
}

fn join(
    ctx: &Rc<ShardCtx>,
    conn: &Rc<Conn>,
    p: &Session,
    f: &Frame<'_>,
    channel: ChannelName,
    payload: &str,
) -> Result<(), Refusal> {
    let j: JoinPayload =
        serde_json::from_str(payload).map_err(|e| bad(format!("phx_join payload: {e}")))?;
    if !j.config.postgres_changes.is_empty() {
        return Err(bad(
            "postgres_changes is not supported: Ringbearer has no database to follow (docs/realtime-js.md)",
        ));
    }
    let _ = j.config.private; // every Ringbearer channel is authorized (docs/realtime-js.md)
    if let Some(t) = &j.access_token {
        // realtime-js repeats its token in every join: the one the connection already
        // has is not a refresh (no audit, no re-check).
        let same = ctx
            .shared
            .verifier
            .verify(t)
            .is_ok_and(|c| c == *conn.claims());
        if !same {
            refresh_token(ctx, conn, t)?;
        }
    }
    let replay = j.config.broadcast.replay.map(|r| {
        let cap = ctx.cfg.realtime_replay_max;
        (r.since, r.limit.unwrap_or(cap).min(cap))
    });
    let key = Some(j.config.presence.key).filter(|k| !k.is_empty());
    if key
        .as_ref()
        .is_some_and(|k| k.len() > ctx.cfg.limits.max_field_bytes)
    {
        return Err(bad("config.presence.key is too long"));
    }
    conn.reserve(channel.as_str())?;
    {
        let mut topics = p.topics.borrow_mut();
        let e = topics.entry(channel.as_str().to_owned()).or_default();
        e.join_ref = f.join_ref.clone();
        e.self_broadcast = j.config.broadcast.self_;
        e.ack = j.config.broadcast.ack;
        e.presence_key = key;
        e.replay = replay;
    }
    let req = SubscribeReq {
        channel: channel.clone(),
        last_seen_id: None,
        epoch: None,
        include_history: replay.is_some(),
    };
    let r = owner_ref(
        'j',
        channel.as_str(),
        f.join_ref.as_deref(),
        f.r#ref.as_deref(),
    );
    to_owner(ctx, conn, channel.clone(), r, Op::Subscribe(req)).inspect_err(|_| {
        conn.refused(channel.as_str());
        p.topics.borrow_mut().remove(channel.as_str());
    })
}

fn joined(p: &Session, channel: &ChannelName) -> Result<(), Refusal> {
    match p.join_ref(channel.as_str()) {
        Some(_) => Ok(()),
        None => Err(Refusal::new(
            ErrorCode::SubscriptionFailed,
            "unmatched topic: join it first",
        )),
    }
}

fn broadcast(
    ctx: &Rc<ShardCtx>,
    conn: &Rc<Conn>,
    p: &Session,
    f: &Frame<'_>,
    channel: ChannelName,
    payload: &str,
) -> Result<(), Refusal> {
    joined(p, &channel)?;
    let limits = &ctx.cfg.limits;
    let b: BroadcastPayload =
        serde_json::from_str(payload).map_err(|e| bad(format!("broadcast payload: {e}")))?;
    let body = b.payload.map_or("null", RawValue::get);
    if body.len() > limits.max_payload_bytes {
        return Err(Refusal::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "payload is {} bytes; the limit is {} (max_payload_bytes)",
                body.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    let field = |v: &str, name: &str| {
        if v.len() > limits.max_field_bytes {
            Err(bad(format!("`{name}` is too long")))
        } else {
            Ok(())
        }
    };
    field(&b.event, "event")?;
    if let Some(k) = &b.idempotency_key {
        field(k, "idempotency_key")?;
    }
    let priority = match b.priority.as_deref() {
        None => Priority::Normal,
        Some(s) => Priority::parse(s).ok_or_else(|| bad(format!("unknown priority `{s}`")))?,
    };
    let req = PublishReq {
        channel: channel.clone(),
        msg_type: "broadcast".into(),
        event: Some(b.event),
        priority,
        payload: body.to_owned(),
        target_user_id: None,
        target_org: None,
        target_roles: None,
        idempotency_key: b.idempotency_key,
        wedding_context: None,
        context_wedding_id: None,
    };
    let r = owner_ref(
        'b',
        channel.as_str(),
        f.join_ref.as_deref(),
        f.r#ref.as_deref(),
    );
    let op = Op::Publish {
        req,
        recipients: false,
    };
    to_owner(ctx, conn, channel, r, op)
}

fn presence(
    ctx: &Rc<ShardCtx>,
    conn: &Rc<Conn>,
    p: &Session,
    f: &Frame<'_>,
    channel: ChannelName,
    payload: &str,
) -> Result<(), Refusal> {
    joined(p, &channel)?;
    if !conn.channels.borrow().contains(channel.as_str()) {
        return Err(Refusal::new(
            ErrorCode::SubscriptionFailed,
            "not subscribed to this channel",
        ));
    }
    let pp: PresencePayload =
        serde_json::from_str(payload).map_err(|e| bad(format!("presence payload: {e}")))?;
    let meta = match pp.event.as_str() {
        "track" => {
            let mut m: serde_json::Map<String, serde_json::Value> = match pp.payload {
                None => Default::default(),
                Some(v) if v.get() == "null" => Default::default(),
                Some(v) => serde_json::from_str(v.get())
                    .map_err(|_| bad("presence track payload must be a JSON object"))?,
            };
            // The key the join named, if any; else the renderer keys the entry by its
            // user, as `org/user_id` for a user of another organization than the
            // channel's (`host/phoenix.rs`), which only the owner's side knows.
            let key = p
                .topics
                .borrow()
                .get(channel.as_str())
                .and_then(|j| j.presence_key.clone());
            match key {
                Some(k) => m.insert("presence_key".into(), k.into()),
                None => m.remove("presence_key"),
            };
            // The typed fields (`activity`, `location`, `battery`) as on `/ws`.
            ringbearer_core::presence_meta::check(&m)?;
            let meta = serde_json::to_string(&m).expect("a map serializes");
            let max = ctx.cfg.limits.max_presence_meta_bytes;
            if meta.len() > max {
                return Err(Refusal::new(
                    ErrorCode::PayloadTooLarge,
                    format!("presence meta over {max} bytes (max_presence_meta_bytes)"),
                ));
            }
            meta
        }
        "untrack" => "{}".to_owned(),
        other => {
            return Err(bad(format!(
                "unknown presence event `{}`",
                other.escape_default()
            )))
        }
    };
    let r = owner_ref(
        'p',
        channel.as_str(),
        f.join_ref.as_deref(),
        f.r#ref.as_deref(),
    );
    to_owner(
        ctx,
        conn,
        channel.clone(),
        r,
        Op::Presence { channel, meta },
    )
}

/// Acknowledges, for the user's durable subscription, what the client has received on each
/// joined channel (all that was queued by its previous heartbeat, `Session::take_acks`;
/// SPEC §2.3: realtime-js has no acks of its own). A connection lost between heartbeats
/// gets the rest again on its next join.
fn acknowledge(ctx: &Rc<ShardCtx>, conn: &Rc<Conn>, p: &Session) {
    for (c, id) in p.take_acks() {
        let Ok(channel) = ChannelName::parse(&c) else {
            continue;
        };
        if !conn.channels.borrow().contains(channel.as_str()) {
            continue;
        }
        let owner = shard_for(channel.as_str(), ctx.state.borrow().shards) as u32;
        let req = owner::Request {
            from: conn.cref,
            r#ref: None,
            claims: conn.claims(),
            op: Op::Ack { channel, id },
        };
        ctx.router.route(owner, ShardMsg::Request(req));
    }
}

/// Sends `op` to `channel`'s owner shard, unless that shard's queue is saturated.
fn to_owner(
    ctx: &Rc<ShardCtx>,
    conn: &Rc<Conn>,
    channel: ChannelName,
    r#ref: String,
    op: Op,
) -> Result<(), Refusal> {
    let owner = shard_for(channel.as_str(), ctx.state.borrow().shards) as u32;
    if ctx.router.backlog(owner) >= ctx.cfg.mesh_backlog_max {
        return Err(Refusal::new(
            ErrorCode::Overloaded,
            "the channel's shard is saturated; retry",
        ));
    }
    let req = owner::Request {
        from: conn.cref,
        r#ref: Some(r#ref),
        claims: conn.claims(),
        op,
    };
    ctx.router.route(owner, ShardMsg::Request(req));
    Ok(())
}

#[cfg(test)]
mod tests;
