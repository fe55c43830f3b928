//! Rendering of the Phoenix door's frames: both serializers, a stored message as a
//! `broadcast`, presence in Phoenix's `{key: {metas}}` shape, refusals with their code, and
//! the owner ref's round trip.

use super::*;
use ringbearer_core::channel_state::ConnRef;
use ringbearer_core::error::ErrorCode;
use ringbearer_core::message::{access_frame, MessageFrame};
use serde_json::{json, Value};

fn v(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn frames_in_both_serializers() {
    let f = reply_ok(Vsn::V2, Some("1"), Some("2"), "realtime:a:b:c", b"{}");
    assert_eq!(
        v(&f),
        json!(["1", "2", "realtime:a:b:c", "phx_reply", {"status": "ok", "response": {}}])
    );
    let f = reply_ok(Vsn::V1, None, Some("2"), "phoenix", b"{}");
    assert_eq!(
        v(&f),
        json!({"join_ref": null, "ref": "2", "topic": "phoenix", "event": "phx_reply",
               "payload": {"status": "ok", "response": {}}})
    );
    let e = Refusal {
        code: ErrorCode::RateLimited,
        message: "slow down \"now\"".into(),
        retry_after: Some(3),
    };
    let f = reply_error(Vsn::V2, Some("1"), Some("9"), "realtime:a:b:c", &e);
    assert_eq!(
        v(&f)[4],
        json!({"status": "error", "response": {"reason": "slow down \"now\"",
               "code": "WS_RATE_LIMITED", "retryable": true, "retry_after": 3}})
    );
    let c = closed_because(Vsn::V2, Some("4"), "wedding:main:w-1", &e);
    assert_eq!(v(&c[0])[3], "system");
    assert_eq!(v(&c[0])[4]["code"], "WS_RATE_LIMITED");
    assert_eq!(
        v(&c[1]),
        json!(["4", null, "realtime:wedding:main:w-1", "phx_close", {}])
    );
}

#[test]
fn a_stored_message_is_a_broadcast_with_its_id() {
    let frame = MessageFrame {
        id: 7,
        ts_ms: 1_795_341_600_000,
        channel: "wedding:main:w-1".into(),
        msg_type: "timeline_change".into(),
        event: None,
        priority: ringbearer_core::Priority::High as u8,
        payload: r#"{"cake":"21:15"}"#.into(),
        sender_user_id: "u-1".into(),
        sender_org: "org-1".into(),
        sender_role: Role::Coordinator.code(),
        target_user_id: None,
        target_org: None,
        target_roles: 0,
        wedding_context: None,
        idempotency_key: None,
    }
    .encode();
    let a = access_frame(&frame).unwrap();
    let m = v(&message(Vsn::V2, a, false));
    assert_eq!(m[2], "realtime:wedding:main:w-1");
    assert_eq!(m[3], "broadcast");
    assert_eq!(m[4]["type"], "broadcast");
    // No `event`: its type stands in.
    assert_eq!(m[4]["event"], "timeline_change");
    assert_eq!(m[4]["payload"], json!({"cake": "21:15"}));
    assert_eq!(m[4]["meta"]["id"], 7);
    assert_eq!(m[4]["meta"]["priority"], "high");
    assert_eq!(
        m[4]["meta"]["sender"],
        json!({"user_id": "u-1", "org": "org-1", "role": "coordinator"})
    );
    assert!(m[4]["meta"].get("replayed").is_none());
    let r = v(&message(Vsn::V1, a, true));
    assert_eq!(r["payload"]["meta"]["replayed"], true);
}

fn entry(user: &str, conn: u64, meta: &str) -> PresenceEntry {
    let mut e = PresenceEntry::new(
        user.into(),
        "org-1".into(),
        ConnRef { shard: 0, conn },
        "couple",
    );
    if meta != "{}" {
        e.meta = Some(serde_json::value::RawValue::from_string(meta.into()).unwrap());
    }
    e
}

#[test]
fn presence_in_phoenix_shape_only_tracked_entries() {
    let entries = vec![
        entry("u-1", 1, r#"{"activity":"ceremony","presence_key":"u-1"}"#),
        entry("u-2", 2, "{}"),
        entry("u-1", 3, r#"{"presence_key":"u-1"}"#),
        entry("u-3", 4, r#"{"location":"aisle"}"#),
    ];
    let s = v(&presence_state(
        Vsn::V2,
        "wedding:main:w-1",
        &entries,
        "org-1",
    ));
    assert_eq!(s[3], "presence_state");
    let state = &s[4];
    // The untracked connection is not there; two metas under one key; a /ws meta under the user.
    assert_eq!(state.as_object().unwrap().len(), 2);
    assert_eq!(state["u-1"]["metas"].as_array().unwrap().len(), 2);
    assert_eq!(state["u-1"]["metas"][0]["activity"], "ceremony");
    assert_eq!(state["u-3"]["metas"][0]["location"], "aisle");
    let r0 = state["u-1"]["metas"][0]["phx_ref"].as_str().unwrap();
    let r1 = state["u-1"]["metas"][1]["phx_ref"].as_str().unwrap();
    assert_ne!(r0, r1);
}

#[test]
fn a_meta_update_leaves_the_old_ref_and_joins_a_new_one() {
    let old = entry("u-1", 1, r#"{"activity":"ceremony","presence_key":"k"}"#);
    let new = entry("u-1", 1, r#"{"activity":"reception","presence_key":"k"}"#);
    let d = PresenceDiff {
        joins: vec![new.clone()],
        leaves: vec![old.clone()],
        total: 1,
    };
    let p = v(&presence_diff(Vsn::V2, "wedding:main:w-1", &d, "org-1").unwrap())[4].clone();
    let joined = p["joins"]["k"]["metas"][0]["phx_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let left = p["leaves"]["k"]["metas"][0]["phx_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    // Phoenix applies joins before leaves: equal refs would drop the new meta.
    assert_ne!(joined, left);
    // Re-joined with the same meta: the leave is dropped, the join stays.
    let d = PresenceDiff {
        joins: vec![old.clone()],
        leaves: vec![old.clone()],
        total: 1,
    };
    let p = v(&presence_diff(Vsn::V2, "c", &d, "org-1").unwrap())[4].clone();
    assert_eq!(p["leaves"], json!({}));
    // Only untracked entries changed: nothing to say.
    let d = PresenceDiff {
        joins: vec![entry("u-2", 2, "{}")],
        leaves: vec![],
        total: 2,
    };
    assert!(presence_diff(Vsn::V2, "c", &d, "org-1").is_none());
}

#[test]
fn owner_refs_round_trip() {
    let r = owner_ref('b', "wedding:main:w-1", Some("3"), Some("17"));
    let s = split_ref(&r).unwrap();
    assert_eq!(
        (s.kind, s.channel, s.join_ref, s.r#ref),
        ('b', "wedding:main:w-1", Some("3"), Some("17"))
    );
    let r = owner_ref('j', "a:b:c", None, None);
    let s = split_ref(&r).unwrap();
    assert_eq!((s.join_ref, s.r#ref), (None, None));
}

#[test]
fn own_broadcasts_are_skipped_once_and_acks_collected() {
    let s = Session::new(Vsn::V2, 4);
    s.topics.borrow_mut().insert("c".into(), Joined::default());
    assert!(!s.published("c", 5));
    assert!(s.deliver("c", 4));
    assert!(!s.deliver("c", 5), "its own message is skipped");
    // An own id that never came (an idempotent repeat) is forgotten by the next one.
    s.published("c", 6);
    assert!(s.deliver("c", 7));
    assert!(s.deliver("c", 8));
    // Acknowledged one heartbeat later (what the client has provably received).
    assert!(s.take_acks().is_empty());
    assert!(s.deliver("c", 9));
    assert_eq!(s.take_acks(), vec![("c".to_owned(), 8)]);
    assert_eq!(s.take_acks(), vec![("c".to_owned(), 9)]);
    assert!(s.take_acks().is_empty());
    // With `broadcast.self` nothing is skipped; with `ack` the reply is asked for.
    s.topics.borrow_mut().get_mut("c").unwrap().self_broadcast = true;
    s.topics.borrow_mut().get_mut("c").unwrap().ack = true;
    assert!(s.published("c", 10));
    assert!(s.deliver("c", 10));
}

/// Two organizations' users with one id are two presences, never one: a user of another
/// organization than the channel's is keyed `org/user_id` (unless it chose its own key).
#[test]
fn users_of_two_organizations_with_one_id_are_two_presences() {
    let mut other = entry("u-1", 2, r#"{"activity":"setup"}"#);
    other.org = "org-2".into();
    let entries = vec![entry("u-1", 1, r#"{"activity":"ceremony"}"#), other];
    let s = v(&presence_state(
        Vsn::V2,
        "wedding:main:w-1",
        &entries,
        "org-1",
    ));
    let state = s[4].as_object().unwrap();
    assert_eq!(state.len(), 2, "{state:?}");
    assert_eq!(state["u-1"]["metas"][0]["activity"], "ceremony");
    assert_eq!(state["org-2/u-1"]["metas"][0]["activity"], "setup");
}
