//! The subset of the native protocol (`docs/protocol.md`) the generator speaks: the
//! requests it sends (`create`, `subscribe`, `publish`) written straight into strings, and a
//! cheap reading of the server's frames — the `op` from the frame's first bytes (every
//! server frame opens with `{"op":"…"`), and a borrowed serde parse of only the fields a
//! frame of interest needs. `presence_diff` and other frames are recognised and skipped
//! without parsing.
//!
//! Each publish carries a stamp in its payload, `{"t":SEND_NS,"p":PUBLISHER,"s":SEQ,"x":PAD}`:
//! the send time on CLOCK_MONOTONIC (one clock for every process of the machine) and a
//! per-publisher sequence. Its `ref` is `SEND_NS.CHANNEL`, so the `published` reply gives
//! the acknowledgement latency without any per-request state.

use crate::proto::channel_name;
use serde::Deserialize;
use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Message,
    Subscribed,
    Published,
    Created,
    Error,
    /// Anything else (`presence_diff`, `typing`, `pong`, `ok`, …).
    Other,
}

/// The `op` of a server frame, from its prefix; a frame not shaped like ours is parsed.
pub fn op(text: &str) -> Op {
    let rest = match text.strip_prefix("{\"op\":\"") {
        Some(r) => r,
        None => return op_slow(text),
    };
    let name = match rest.find('"') {
        Some(n) => &rest[..n],
        None => return Op::Other,
    };
    match name {
        "message" => Op::Message,
        "subscribed" => Op::Subscribed,
        "published" => Op::Published,
        "created" => Op::Created,
        "error" => Op::Error,
        _ => Op::Other,
    }
}

fn op_slow(text: &str) -> Op {
    #[derive(Deserialize)]
    struct OpOnly<'a> {
        #[serde(borrow)]
        op: &'a str,
    }
    match serde_json::from_str::<OpOnly>(text) {
        Ok(o) => op(&format!("{{\"op\":\"{}\"}}", o.op)),
        Err(_) => Op::Other,
    }
}

/// The stamp a publisher put in the payload.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Stamp {
    /// Send time, ns on CLOCK_MONOTONIC.
    pub t: u64,
    /// Publisher index.
    pub p: u32,
    /// Per-publisher sequence.
    pub s: u64,
}

#[derive(Debug, Deserialize)]
pub struct MessageFrame<'a> {
    #[serde(borrow)]
    pub channel: &'a str,
    pub id: u64,
    #[serde(default)]
    pub payload: Option<Stamp>,
}

#[derive(Debug, Deserialize)]
pub struct SubscribedFrame<'a> {
    #[serde(borrow, default)]
    pub channel: &'a str,
    #[serde(default = "yes")]
    pub recovered: bool,
    #[serde(borrow, default)]
    pub messages: Vec<MessageFrame<'a>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub struct PublishedFrame<'a> {
    #[serde(borrow, default, rename = "ref")]
    pub r#ref: Option<&'a str>,
    pub id: u64,
}

#[derive(Debug, Deserialize)]
pub struct ErrorFrame {
    #[serde(default, rename = "ref")]
    pub r#ref: Option<String>,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// `(send_ns, channel)` from a publish `ref` written by [`publish`].
pub fn parse_publish_ref(r: &str) -> Option<(u64, u32)> {
    let (t, c) = r.split_once('.')?;
    Some((t.parse().ok()?, c.parse().ok()?))
}

pub fn create(c: u32, channel_type: &str) -> String {
    format!(
        "{{\"op\":\"create\",\"ref\":\"c{c}\",\"name\":\"{}\",\"type\":\"{channel_type}\",\"wedding_id\":\"w-{c}\"}}",
        channel_name(c)
    )
}

pub fn subscribe(c: u32, last_seen_id: Option<u64>) -> String {
    let mut s = format!(
        "{{\"op\":\"subscribe\",\"ref\":\"s\",\"channel\":\"{}\"",
        channel_name(c)
    );
    if let Some(id) = last_seen_id {
        let _ = write!(s, ",\"last_seen_id\":{id}");
    }
    s.push('}');
    s
}

pub fn unsubscribe(c: u32) -> String {
    format!(
        "{{\"op\":\"unsubscribe\",\"ref\":\"u\",\"channel\":\"{}\"}}",
        channel_name(c)
    )
}

/// One publish request to channel `c`, stamped `now_ns`, with `pad` bytes of padding.
pub fn publish(c: u32, publisher: u32, seq: u64, now_ns: u64, pad: &str) -> String {
    let mut s = String::with_capacity(160 + pad.len());
    let _ = write!(
        s,
        "{{\"op\":\"publish\",\"ref\":\"{now_ns}.{c}\",\"channel\":\"wedding:perf:w-{c}\",\"type\":\"general\",\"payload\":{{\"t\":{now_ns},\"p\":{publisher},\"s\":{seq},\"x\":\"{pad}\"}}}}"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_server_writes() {
        let m = r#"{"op":"message","channel":"wedding:perf:w-3","id":42,"type":"general","priority":"normal","payload":{"t":123,"p":1,"s":9,"x":"aaa"},"sender":{"user_id":"p-1","role":"service"},"ts":1}"#;
        assert_eq!(op(m), Op::Message);
        let f: MessageFrame = serde_json::from_str(m).unwrap();
        assert_eq!((f.channel, f.id), ("wedding:perf:w-3", 42));
        let st = f.payload.unwrap();
        assert_eq!((st.t, st.p, st.s), (123, 1, 9));
        let s = format!(
            r#"{{"op":"subscribed","ref":"s","channel":"wedding:perf:w-3","epoch":"e","recovered":false,"messages":[{m}],"presence":[{{"user_id":"u"}}]}}"#
        );
        assert_eq!(op(&s), Op::Subscribed);
        let f: SubscribedFrame = serde_json::from_str(&s).unwrap();
        assert!(!f.recovered);
        assert_eq!(f.messages[0].id, 42);
        let p = r#"{"op":"published","ref":"77.3","channel":"wedding:perf:w-3","id":5,"delivered_count":8,"queued_count":0}"#;
        assert_eq!(op(p), Op::Published);
        let f: PublishedFrame = serde_json::from_str(p).unwrap();
        assert_eq!(parse_publish_ref(f.r#ref.unwrap()), Some((77, 3)));
        assert_eq!(op(r#"{"op":"presence_diff","joins":[]}"#), Op::Other);
        assert_eq!(op(r#"{"ref":"x","op":"error","code":"A"}"#), Op::Error);
        let req: serde_json::Value = serde_json::from_str(&publish(3, 1, 9, 123, "aaa")).unwrap();
        assert_eq!(req["payload"]["t"], 123);
        let req: serde_json::Value = serde_json::from_str(&subscribe(3, Some(7))).unwrap();
        assert_eq!(req["last_seen_id"], 7);
        let req: serde_json::Value = serde_json::from_str(&unsubscribe(3)).unwrap();
        assert_eq!(
            (&req["op"], &req["channel"]),
            (&"unsubscribe".into(), &"wedding:perf:w-3".into())
        );
        let req: serde_json::Value = serde_json::from_str(&create(3, "shared")).unwrap();
        assert_eq!(req["wedding_id"], "w-3");
    }
}
