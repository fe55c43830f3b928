//! Parsing of the Phoenix door's client frames: both serializers, realtime-js's binary
//! broadcast push, and the refusals for what does not fit.

use super::*;
use ringbearer_core::Limits;

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn v2_arrays_and_v1_objects_parse_to_the_same_frame() {
    let v2 = r#"["1","2","realtime:wedding:main:w-1","phx_join",{"config":{}}]"#;
    let f = parse_text(Vsn::V2, v2, &limits()).unwrap();
    assert_eq!(f.join_ref.as_deref(), Some("1"));
    assert_eq!(f.r#ref.as_deref(), Some("2"));
    assert_eq!(f.topic, "realtime:wedding:main:w-1");
    assert_eq!(f.event, "phx_join");
    assert_eq!(f.payload, r#"{"config":{}}"#);
    let v1 = r#"{"topic":"realtime:wedding:main:w-1","event":"phx_join","payload":{"config":{}},"ref":"2","join_ref":"1"}"#;
    assert_eq!(parse_text(Vsn::V1, v1, &limits()).unwrap(), f);
    // A heartbeat has no join ref.
    let hb = parse_text(Vsn::V2, r#"[null,"3","phoenix","heartbeat",{}]"#, &limits()).unwrap();
    assert_eq!(hb.join_ref, None);
}

#[test]
fn bad_frames_get_their_codes() {
    let l = limits();
    for bad in [
        r#"{"topic":"x"}"#,
        r#"["1","2","t"]"#,
        r#"[1,2,"t","e",{}]"#,
        "not json",
    ] {
        assert_eq!(
            parse_text(Vsn::V2, bad, &l).unwrap_err().code,
            ErrorCode::BadRequest,
            "{bad}"
        );
    }
    // A ref with a control character (it could forge the owner ref's separator).
    let e = parse_text(Vsn::V2, "[\"1\",\"2\u{1f}x\",\"t\",\"e\",{}]", &l).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    let big = format!(
        r#"[null,"1","t","broadcast",{{"p":"{}"}}]"#,
        "x".repeat(l.max_request_bytes)
    );
    assert_eq!(
        parse_text(Vsn::V2, &big, &l).unwrap_err().code,
        ErrorCode::PayloadTooLarge
    );
    let deep = format!(
        "[null,\"1\",\"t\",\"e\",{}1{}]",
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(
        parse_text(Vsn::V2, &deep, &l).unwrap_err().code,
        ErrorCode::BadRequest
    );
}

/// realtime-js 2.0.0's `_encodeUserBroadcastPush`, byte for byte.
fn user_broadcast_push(
    join_ref: &str,
    r: &str,
    topic: &str,
    event: &str,
    meta: &str,
    enc: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = vec![
        3,
        join_ref.len() as u8,
        r.len() as u8,
        topic.len() as u8,
        event.len() as u8,
        meta.len() as u8,
        enc,
    ];
    for s in [join_ref, r, topic, event, meta] {
        v.extend_from_slice(s.as_bytes());
    }
    v.extend_from_slice(payload);
    v
}

#[test]
fn binary_user_broadcast_push_becomes_a_broadcast() {
    let data = user_broadcast_push(
        "1",
        "5",
        "realtime:wedding:main:w-1",
        "cake",
        r#"{"idempotency_key":"k-1"}"#,
        1,
        br#"{"at":"21:15"}"#,
    );
    let (f, body) = parse_binary(&data, &limits()).unwrap();
    assert_eq!(f.join_ref.as_deref(), Some("1"));
    assert_eq!(f.r#ref.as_deref(), Some("5"));
    assert_eq!(f.topic, "realtime:wedding:main:w-1");
    assert_eq!(f.event, "broadcast");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "broadcast");
    assert_eq!(v["event"], "cake");
    assert_eq!(v["payload"]["at"], "21:15");
    assert_eq!(v["idempotency_key"], "k-1");
    // Without metadata.
    let data = user_broadcast_push("", "6", "realtime:x", "e", "", 1, b"[1,2]");
    let (f, body) = parse_binary(&data, &limits()).unwrap();
    assert_eq!(f.join_ref, None);
    assert_eq!(body, r#"{"type":"broadcast","event":"e","payload":[1,2]}"#);
}

#[test]
fn binary_frames_that_do_not_fit_are_refused() {
    let l = limits();
    // A binary payload (encoding 0): Ringbearer stores JSON.
    let data = user_broadcast_push("1", "2", "realtime:x", "e", "", 0, &[0, 1, 2]);
    assert_eq!(
        parse_binary(&data, &l).unwrap_err().code,
        ErrorCode::BadRequest
    );
    // Another kind, a short header, lengths past the end, a payload that is not JSON.
    let mut other = user_broadcast_push("1", "2", "realtime:x", "e", "", 1, b"{}");
    other[0] = 4;
    let mut short = user_broadcast_push("1", "2", "realtime:x", "e", "", 1, b"");
    short[3] = 200;
    for d in [
        other,
        vec![3, 0, 0],
        short,
        user_broadcast_push("1", "2", "realtime:x", "e", "", 1, b"{nope"),
    ] {
        assert_eq!(
            parse_binary(&d, &l).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }
    // Metadata that is not an object.
    let d = user_broadcast_push("1", "2", "realtime:x", "e", "[1]", 1, b"{}");
    assert_eq!(
        parse_binary(&d, &l).unwrap_err().code,
        ErrorCode::BadRequest
    );
}

#[test]
fn join_config_reads_what_realtime_js_sends() {
    // realtime-js 2.109.0's join payload, as it sends it.
    let p = r#"{"config":{"broadcast":{"ack":true,"self":false,"replay":{"since":1700000000000,"limit":10}},"presence":{"key":"","enabled":true},"postgres_changes":[],"private":true},"access_token":"t","version":"realtime-js/2.109.0"}"#;
    let j: JoinPayload = serde_json::from_str(p).unwrap();
    assert!(j.config.broadcast.ack);
    assert!(!j.config.broadcast.self_);
    let r = j.config.broadcast.replay.unwrap();
    assert_eq!((r.since, r.limit), (1_700_000_000_000, Some(10)));
    assert!(j.config.postgres_changes.is_empty());
    assert_eq!(j.access_token.as_deref(), Some("t"));
    // An empty payload is every default.
    let j: JoinPayload = serde_json::from_str("{}").unwrap();
    assert!(!j.config.broadcast.ack && j.config.broadcast.replay.is_none());
}
