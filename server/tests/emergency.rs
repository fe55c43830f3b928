//! `emergency` (SPEC §2, issue 16 item 1) over real sockets: only a channel's admin roles (or
//! `limits.emergency_roles`) may send one, and a refusal is audited; it passes exhausted user
//! and channel rates, held only by its own ceiling; every accepted one is audited; and it
//! overtakes a subscriber's full backlog of `critical` messages on another channel.

mod common;
use common::*;
use serde_json::{json, Value};

const CH: &str = "wedding:main:w-1";

fn emergency(n: u64) -> Value {
    json!({"op": "publish", "channel": CH, "type": "urgent", "priority": "emergency", "payload": {"n": n}})
}

/// The audit records `admin` sees, once at least `min` of `action` have landed (registry
/// writes are queued; bounded wait).
async fn audit_of(server: &TestServer, admin: &str, action: &str, min: usize) -> Vec<Value> {
    let mut found = Vec::new();
    for _ in 0..100 {
        let (status, v) = rest_call(server, "GET", "/api/websocket/audit", admin, None).await;
        assert_eq!(status, 200, "{v}");
        found = v["data"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == action)
            .cloned()
            .collect();
        if found.len() >= min {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_roles_send_emergency_and_refusals_are_audited() {
    let server = TestServer::start("[limits]\nemergency_roles = [\"venue\"]\n");
    let mut coord = server
        .connect(&server.token("coord", "studio", "coordinator", &["w-1"]))
        .await;
    assert_eq!(coord.create(CH, Some("w-1")).await["op"], "created");
    // A shared channel's admin list is its coordinators: a photographer may write, not
    // send an emergency.
    let mut photo = server
        .connect(&server.token("photo", "studio", "photographer", &["w-1"]))
        .await;
    let r = photo.request(emergency(0)).await;
    assert_error(&r, "WS_FORBIDDEN");
    let r = photo
        .request(json!({"op": "publish", "channel": CH, "type": "general", "priority": "critical", "payload": 1}))
        .await;
    assert_eq!(r["op"], "published", "{r}");
    // The coordinator may; so may a role the operator listed.
    let r = coord.request(emergency(1)).await;
    assert_eq!(r["op"], "published", "{r}");
    let mut venue = server
        .connect(&server.token("venue", "studio", "venue", &["w-1"]))
        .await;
    let r = venue.request(emergency(2)).await;
    assert_eq!(r["op"], "published", "{r}");
    // Nothing was stored for the refused one: ids 1 (critical), 2, 3.
    let mut reader = server
        .connect(&server.token("reader", "studio", "couple", &["w-1"]))
        .await;
    let s = reader
        .request(json!({"op": "subscribe", "channel": CH, "include_history": true}))
        .await;
    assert_eq!(message_ids(&s), vec![1, 2, 3], "{s}");
    assert_eq!(s["messages"][1]["priority"], "emergency", "{s}");

    let admin = server.token("boss", "studio", "admin", &["*"]);
    let denied = audit_of(&server, &admin, "denied", 1).await;
    assert!(
        denied
            .iter()
            .any(|r| r["actor_user_id"] == "photo" && r["detail"]["op"] == "publish"),
        "{denied:?}"
    );
    let sent = audit_of(&server, &admin, "emergency", 2).await;
    let mut who: Vec<&str> = sent
        .iter()
        .map(|r| r["actor_user_id"].as_str().unwrap())
        .collect();
    who.sort();
    assert_eq!(who, ["coord", "venue"], "{sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_passes_exhausted_rates_up_to_its_own_ceiling() {
    let server = TestServer::start(
        "[limits]\nchannel_messages_per_min = 2\nemergency_messages_per_min = 3\n",
    );
    let mut coord = server
        .connect(&server.token("coord", "studio", "coordinator", &["w-1"]))
        .await;
    coord.create(CH, Some("w-1")).await;
    for n in 0..2 {
        assert_eq!(coord.publish(CH, json!(n)).await["op"], "published");
    }
    let r = coord.publish(CH, json!(2)).await;
    assert_error(&r, "WS_RATE_LIMITED");
    let r = coord
        .request(json!({"op": "publish", "channel": CH, "type": "general", "priority": "critical", "payload": 1}))
        .await;
    assert_error(&r, "WS_RATE_LIMITED");
    // Not a wedding day, the channel's rate used up: emergency passes, up to its ceiling.
    for n in 0..3 {
        let r = coord.request(emergency(n)).await;
        assert_eq!(r["op"], "published", "{r}");
    }
    let r = coord.request(emergency(3)).await;
    assert_error(&r, "WS_RATE_LIMITED");
    assert!(r["message"].as_str().unwrap().contains("emergency"), "{r}");
    assert!(r["retry_after"].as_u64().is_some(), "{r}");
}

/// 120 × 32 KiB ≈ 3.8 MiB of `critical` on one channel: more than a tiny receive buffer and
/// the kernel's send buffer hold, so most of it waits in the connection's backlog.
const BACKLOG_MESSAGES: u64 = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_overtakes_a_full_backlog_of_critical() {
    let server = TestServer::start(
        "[io]\noutbox_max_bytes = 16777216\noutbox_max_messages = 10000\nwrite_timeout_ms = 60000\n[limits]\nmax_frame_bytes = 262144\nmax_queued = 500\nchannel_messages_per_min = 10000\n[limits.tiers.professional]\nmessages_per_min = 10000\nconnections_per_user = 20\nchannels_per_org = 50\nsubscriptions_per_user = 20\n",
    );
    const OTHER: &str = "wedding:alerts:w-1";
    let mut coord = server
        .connect(&server.token("coord", "studio", "coordinator", &["w-1"]))
        .await;
    coord.create(CH, Some("w-1")).await;
    coord.create(OTHER, Some("w-1")).await;
    let addr = server.addr;
    let token = server.token("slow", "studio", "photographer", &["w-1"]);
    let mut slow = tokio::task::spawn_blocking(move || {
        let mut raw = RawTcp::upgrade(addr, "/ws", &token, Some(4096));
        for ch in [CH, OTHER] {
            raw.send_json(&json!({"op": "subscribe", "ref": ch, "channel": ch}));
            assert_eq!(raw.read_json().unwrap()["op"], "subscribed");
        }
        raw
    })
    .await
    .unwrap();
    let blob = "c".repeat(32 * 1024);
    for n in 1..=BACKLOG_MESSAGES {
        let r = coord
            .request(json!({"op": "publish", "channel": CH, "type": "general", "priority": "critical", "payload": {"n": n, "blob": blob}}))
            .await;
        assert_eq!(r["op"], "published", "{r}");
    }
    let r = coord
        .request(json!({"op": "publish", "channel": OTHER, "type": "urgent", "priority": "emergency", "payload": "fire alarm"}))
        .await;
    assert_eq!(r["op"], "published", "{r}");
    // Read everything: the emergency arrives while critical messages published before it
    // are still to come; the critical ones stay in order.
    let (emergency_at, critical) = tokio::task::spawn_blocking(move || {
        let mut critical = Vec::new();
        let mut emergency_at = None;
        while critical.len() < BACKLOG_MESSAGES as usize || emergency_at.is_none() {
            let v = slow.read_json().expect("connection open");
            if v["op"] != "message" {
                continue;
            }
            if v["channel"] == OTHER {
                assert_eq!(v["priority"], "emergency");
                emergency_at = Some(critical.len());
            } else {
                critical.push(v["id"].as_u64().unwrap());
            }
        }
        (emergency_at.unwrap(), critical)
    })
    .await
    .unwrap();
    assert_eq!(critical, (1..=BACKLOG_MESSAGES).collect::<Vec<_>>());
    assert!(
        emergency_at < BACKLOG_MESSAGES as usize,
        "the emergency came after every critical message published before it"
    );
}
