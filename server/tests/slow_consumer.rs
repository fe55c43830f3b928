//! Slow consumers (SPEC §2.6): a subscriber that stops reading is disconnected once its
//! outgoing backlog passes its bound, never stalling anyone else; its subscription is kept,
//! so when it comes back it resumes with exactly what it missed.

mod common;
use common::*;
use ringbearer_client::{Client, ClientConfig, Event, SubscribeOptions};
use serde_json::json;

const CH: &str = "wedding:photos:w-7";
/// 300 × 32 KiB ≈ 9.6 MiB: more than the kernel buffers (≈ 4 MiB send buffer plus a tiny
/// receive buffer) and the 1 MiB backlog bound can hold.
const MESSAGES: u64 = 300;
const PAYLOAD_BYTES: usize = 32 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_without_stalling_others_and_resumes() {
    let server = TestServer::start(
        "[io]\noutbox_max_bytes = 1048576\nwrite_timeout_ms = 500\n[limits]\nmax_frame_bytes = 262144\nmax_queued = 500\nchannel_messages_per_min = 10000\n[limits.tiers.professional]\nmessages_per_min = 10000\nconnections_per_user = 20\nchannels_per_org = 50\nsubscriptions_per_user = 20\n",
    );
    let mut coord = server
        .connect(&server.token("coord", "venue", "coordinator", &["w-7"]))
        .await;
    coord.create(CH, Some("w-7")).await;
    let (fast, mut events) = Client::connect(ClientConfig::new(
        server.url(),
        server.token("fast", "studio", "photographer", &["w-7"]),
    ))
    .await
    .unwrap();
    fast.subscribe(CH, SubscribeOptions::default())
        .await
        .unwrap();

    let addr = server.addr;
    let slow_token = server.token("slow", "blooms", "florist", &["w-7"]);
    let mut slow = tokio::task::spawn_blocking(move || {
        let mut raw = RawTcp::upgrade(addr, "/ws", &slow_token, Some(4096));
        raw.send_json(&json!({"op": "subscribe", "ref": "s", "channel": CH}));
        assert_eq!(raw.read_json().unwrap()["op"], "subscribed");
        raw
    })
    .await
    .unwrap();

    let payload = "p".repeat(PAYLOAD_BYTES);
    for n in 1..=MESSAGES {
        let p = coord.publish(CH, json!({"n": n, "blob": payload})).await;
        assert_eq!(p["op"], "published", "{p}");
    }
    // The fast subscriber got everything, in order, while the slow one sat there.
    let mut ids = Vec::new();
    let mut slow_left = false;
    while ids.len() < MESSAGES as usize || !slow_left {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .expect("fast subscriber starved")
            .unwrap()
        {
            Event::Message(m) => ids.push(m.id),
            Event::PresenceDiff { leaves, .. } if leaves.iter().any(|e| e.user_id == "slow") => {
                slow_left = true
            }
            _ => {}
        }
    }
    assert_eq!(ids, (1..=MESSAGES).collect::<Vec<_>>());

    // The slow one now reads what reached it before the cut, then the end.
    let last_seen = tokio::task::spawn_blocking(move || {
        let mut last = 0;
        while let Some((op, p)) = slow.read_frame() {
            if op == 0x1 {
                let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
                if v["op"] == "message" {
                    let id = v["id"].as_u64().unwrap();
                    assert_eq!(id, last + 1, "in order with no gap up to the cut");
                    last = id;
                }
            }
            if op == 0x8 {
                break;
            }
        }
        last
    })
    .await
    .unwrap();
    assert!(
        last_seen < MESSAGES,
        "the slow consumer was cut off before the end"
    );

    // It comes back and resumes from what it saw: exactly the rest.
    let mut back = server
        .connect(&server.token("slow", "blooms", "florist", &["w-7"]))
        .await;
    let r = back
        .request(json!({"op": "subscribe", "channel": CH, "last_seen_id": last_seen}))
        .await;
    assert_eq!(r["recovered"], true, "{}", r["recovered"]);
    let mut got: Vec<u64> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    let rest = back
        .messages(CH, (MESSAGES - last_seen) as usize - got.len())
        .await;
    got.extend(rest.iter().map(|m| m["id"].as_u64().unwrap()));
    assert_eq!(got, (last_seen + 1..=MESSAGES).collect::<Vec<_>>());
    fast.close().await;
}
