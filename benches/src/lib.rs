//! Fixtures shared by the criterion benchmarks in `benches/benches/`: payloads of an exact
//! size, the publish request and message frame built around them, and the naive baseline
//! of the fan-out benchmark (a serde struct serialized once per subscriber).
//!
//! It measures nothing itself. The unit tests pin the fixtures' sizes and check that the
//! naive baseline produces the same JSON as our renderer, so the fan-out comparison is
//! between two ways of producing the same bytes.

use ringbearer_core::message::MessageFrame;
use ringbearer_core::{Priority, Role};
use serde::Serialize;

/// The channel every fixture uses (the example of `docs/protocol.md`).
pub const CHANNEL: &str = "wedding:main:w-12345";

/// A JSON object of exactly `len` bytes, shaped like an app's payload: a few scalar fields,
/// then (for larger sizes) a guest list, then a `note` string padded to the exact length.
///
/// Panics if `len` is below the smallest such object (64 bytes).
pub fn payload_json(len: usize) -> String {
    assert!(len >= 64, "payload fixtures start at 64 bytes");
    let mut s = String::from(r#"{"at":"21:15","item":"cake_cutting","moved_by":"u-1""#);
    // Room kept for `,"note":""}` (11 bytes) plus a guest entry (~60 bytes) and the padding.
    let mut first = true;
    let mut i = 0;
    while s.len() + 200 < len {
        s.push_str(if first { r#","guests":["# } else { "," });
        first = false;
        s.push_str(&format!(
            r#"{{"name":"Guest {i}","table":{},"rsvp":{},"diet":"none"}}"#,
            i % 40,
            i % 3 != 0
        ));
        i += 1;
    }
    if !first {
        s.push(']');
    }
    s.push_str(r#","note":""#);
    let pad = len - s.len() - 2;
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    assert_eq!(s.len(), len);
    s
}

/// A `publish` request as a client sends it (the example of `docs/protocol.md`), around
/// `payload`.
pub fn publish_request(payload: &str) -> String {
    format!(
        r#"{{"op":"publish","ref":"p1","channel":"{CHANNEL}","type":"timeline_change","event":"timeline:cake_cutting:moved","priority":"high","payload":{payload},"idempotency_key":"cake-1"}}"#
    )
}

/// The frame the channel's owner sends to every subscribing shard for that publish.
pub fn message_frame(payload: &str) -> MessageFrame {
    MessageFrame {
        id: 42,
        ts_ms: 1_795_341_600_000,
        channel: CHANNEL.into(),
        msg_type: "timeline_change".into(),
        event: Some("timeline:cake_cutting:moved".into()),
        priority: Priority::High as u8,
        payload: payload.into(),
        sender_user_id: "u-1".into(),
        sender_org: "org-1".into(),
        sender_role: Role::Coordinator.code(),
        target_user_id: None,
        target_org: None,
        target_roles: 0,
        wedding_context: None,
        idempotency_key: Some("cake-1".into()),
    }
}

/// The naive baseline's message: what a server without a render-once step would hold and
/// hand to `serde_json::to_vec` for every subscriber. The payload is a parsed `Value`.
#[derive(Debug, Serialize)]
pub struct NaiveMessage {
    pub op: &'static str,
    pub channel: String,
    pub id: u64,
    #[serde(rename = "type")]
    pub msg_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub priority: &'static str,
    pub payload: serde_json::Value,
    pub sender: NaiveSender,
    pub ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wedding_context: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NaiveSender {
    pub user_id: String,
    pub org: String,
    pub role: &'static str,
}

impl NaiveMessage {
    /// The same message as [`message_frame`], held as serde values.
    pub fn from_frame(f: &MessageFrame) -> NaiveMessage {
        NaiveMessage {
            op: "message",
            channel: f.channel.clone(),
            id: f.id,
            msg_type: f.msg_type.clone(),
            event: f.event.clone(),
            priority: Priority::from_code(f.priority).as_str(),
            payload: serde_json::from_str(&f.payload).expect("fixture payload is JSON"),
            sender: NaiveSender {
                user_id: f.sender_user_id.clone(),
                org: f.sender_org.clone(),
                role: Role::from_code(f.sender_role)
                    .map(Role::as_str)
                    .unwrap_or("supplier"),
            },
            ts: f.ts_ms,
            target_user_id: f.target_user_id.clone(),
            wedding_context: f
                .wedding_context
                .as_ref()
                .map(|w| serde_json::from_str(w).expect("fixture context is JSON")),
            idempotency_key: f.idempotency_key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbearer_core::message::{access_frame, render_message_json};
    use ringbearer_core::protocol::{parse_request, Request};
    use ringbearer_core::Limits;
    use serde_json::Value;

    #[test]
    fn payloads_have_the_exact_size_and_are_json() {
        for len in [64, 200, 4096, 16 * 1024] {
            let p = payload_json(len);
            assert_eq!(p.len(), len);
            let v: Value = serde_json::from_str(&p).unwrap();
            assert!(v.is_object());
        }
    }

    #[test]
    fn publish_requests_parse() {
        for len in [200, 16 * 1024] {
            let p = payload_json(len);
            let e = parse_request(&publish_request(&p), &Limits::default()).unwrap();
            let Request::Publish(req) = e.req else {
                panic!("not a publish")
            };
            assert_eq!(req.payload, p);
        }
    }

    #[test]
    fn naive_baseline_renders_the_same_json_as_ours() {
        let f = message_frame(&payload_json(200));
        let bytes = f.encode();
        let mut ours = Vec::new();
        render_message_json(access_frame(&bytes).unwrap(), &mut ours);
        let naive = serde_json::to_vec(&NaiveMessage::from_frame(&f)).unwrap();
        let (a, b): (Value, Value) = (
            serde_json::from_slice(&ours).unwrap(),
            serde_json::from_slice(&naive).unwrap(),
        );
        assert_eq!(a, b);
        // Same bytes up to key order and whitespace: the lengths match too.
        assert_eq!(ours.len(), naive.len());
    }
}
