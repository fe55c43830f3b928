//! The `/ws` protocol's shapes (`docs/protocol.md`) for the owner's typed replies and
//! channel events: rendered on the connection's shard, once per reply (and once per shard
//! for an event every local subscriber shares).

use crate::owner::{ChannelEvent, Reply};
use bytes::Bytes;
use ringbearer_core::message::{access_frame, render_message_json, FrameBytes};
use ringbearer_core::protocol;
use ringbearer_core::ChannelName;
use std::sync::Arc;

/// A stored message as its `message` JSON object (`None` if the frame is unreadable, which
/// is logged where frames are decoded).
pub fn message(f: &FrameBytes) -> Option<Vec<u8>> {
    let a = access_frame(f).ok()?;
    let mut buf = Vec::new();
    render_message_json(a, &mut buf);
    Some(buf)
}

/// `subscribed`: as many recovered messages inline as fit in one frame of `budget` bytes
/// (at least one); the rest follow as `message` frames, in order.
#[allow(clippy::too_many_arguments)]
pub fn subscribed(
    r#ref: Option<&str>,
    channel: &ChannelName,
    epoch: &str,
    recovered: bool,
    messages: &[Arc<FrameBytes>],
    presence: &[ringbearer_core::presence::PresenceEntry],
    presence_total: usize,
    budget: usize,
) -> Vec<Bytes> {
    let mut inline: Vec<Vec<u8>> = Vec::new();
    let mut rest: Vec<Bytes> = Vec::new();
    let mut used = 0;
    for f in messages {
        let Some(buf) = message(f) else { continue };
        if rest.is_empty() && (inline.is_empty() || used + buf.len() <= budget) {
            used += buf.len();
            inline.push(buf);
        } else {
            rest.push(buf.into());
        }
    }
    let reply = protocol::reply_subscribed(
        r#ref,
        channel.as_str(),
        epoch,
        recovered,
        inline.iter().map(Vec::as_slice),
        presence,
        presence_total,
    );
    let mut frames = Vec::with_capacity(1 + rest.len());
    frames.push(Bytes::from(reply));
    frames.extend(rest);
    frames
}

/// Every reply but `subscribed` as one `/ws` frame; `None` when nothing is said (an `ok`
/// to a request without a `ref`).
pub fn reply(r#ref: Option<&str>, reply: &Reply) -> Option<Vec<u8>> {
    Some(match reply {
        Reply::Ok => protocol::reply_ok(r#ref?),
        Reply::Error(e) | Reply::SubscribeRefused { error: e, .. } => {
            protocol::reply_error(r#ref, e)
        }
        Reply::Created {
            channel_id,
            name,
            created_at_ms,
        } => protocol::reply_created(r#ref, channel_id, name.as_str(), *created_at_ms),
        Reply::Unsubscribed { channel, why: None } => {
            protocol::reply_unsubscribed(r#ref, channel.as_str())
        }
        Reply::Unsubscribed {
            channel,
            why: Some(why),
        } => protocol::unsubscribed_because(channel.as_str(), why),
        Reply::Published(p) => {
            protocol::reply_published(r#ref, p.channel.as_str(), p.id, p.delivered, p.queued)
        }
        Reply::State(v) => state_view("state", r#ref, v, None),
        Reply::StateConflict { current, yours } => {
            state_view("state_conflict", r#ref, current, Some(*yours))
        }
        Reply::StateOk(ok) => {
            let mut o = head("state_ok", r#ref);
            o.insert("channel".into(), ok.channel.as_str().into());
            o.insert("doc".into(), ok.doc.as_str().into());
            o.insert("version".into(), ok.version.into());
            o.insert("id".into(), ok.id.into());
            if let Some(x) = &ok.overrode {
                o.insert("overrode".into(), serde_json::json!(x));
            }
            serde_json::to_vec(&o).expect("serializes")
        }
        Reply::StateOverridden {
            channel,
            doc,
            version,
            yours,
            by,
        } => {
            let mut o = head("state_overridden", r#ref);
            o.insert("channel".into(), channel.as_str().into());
            o.insert("doc".into(), doc.as_str().into());
            o.insert("version".into(), (*version).into());
            o.insert("your_version".into(), (*yours).into());
            o.insert("by".into(), serde_json::json!(by));
            serde_json::to_vec(&o).expect("serializes")
        }
        Reply::Subscribed { .. } => unreachable!("rendered by `subscribed`"),
        // REST-only answers never reach a connection; rendered as the internal error they
        // would be.
        _ => protocol::reply_error(
            r#ref,
            &ringbearer_core::error::Refusal::new(
                ringbearer_core::error::ErrorCode::Internal,
                "an answer for another door",
            ),
        ),
    })
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

fn head(op: &str, r#ref: Option<&str>) -> JsonObject {
    let mut o = JsonObject::new();
    o.insert("op".into(), op.into());
    if let Some(r) = r#ref {
        o.insert("ref".into(), r.into());
    }
    o
}

/// `state` / `state_conflict`: a document as stored (`value` and `writer` null when it was
/// never written); a conflict adds the version the refused write was based on.
fn state_view(
    op: &str,
    r#ref: Option<&str>,
    v: &crate::owner::StateView,
    yours: Option<u64>,
) -> Vec<u8> {
    let mut o = head(op, r#ref);
    o.insert("channel".into(), v.channel.as_str().into());
    o.insert("doc".into(), v.doc.as_str().into());
    o.insert("version".into(), v.version.into());
    let value = v.value.clone().map_or(serde_json::Value::Null, Into::into);
    o.insert("value".into(), value);
    o.insert("writer".into(), serde_json::json!(v.writer));
    if let Some(y) = yours {
        o.insert("your_version".into(), y.into());
    }
    serde_json::to_vec(&o).expect("serializes")
}

/// A channel event as its `/ws` frame.
pub fn event(channel: &ChannelName, event: &ChannelEvent) -> Vec<u8> {
    match event {
        ChannelEvent::PresenceDiff { diff, .. } => protocol::presence_diff(channel.as_str(), diff),
        ChannelEvent::PresenceState { entries, total, .. } => {
            protocol::presence_state(channel.as_str(), entries, *total)
        }
        ChannelEvent::Typing { user, role } => {
            protocol::typing(channel.as_str(), &user.sub, &user.org, *role)
        }
    }
}
