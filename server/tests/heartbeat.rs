//! Heartbeats (SPEC §3): a peer that stops answering pings is closed with 4000 after two
//! intervals and leaves presence, as the other subscribers see; a peer that answers stays.
//! The interval is set to 200 ms so the test is quick; the waits are on events.

mod common;
use common::*;
use ringbearer_client::{Client, ClientConfig, Event, SubscribeOptions};
use std::time::{Duration, Instant};

const CH: &str = "venue:ballroom:w-5";
const INTERVAL_MS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_is_closed_after_two_intervals_and_leaves_presence() {
    let server = TestServer::start(&format!("[io]\nheartbeat_interval_ms = {INTERVAL_MS}\n"));
    // A well-behaved client (its library answers pings) watches presence.
    let (watcher, mut events) = Client::connect(ClientConfig::new(
        server.url(),
        server.token("coord", "venue", "coordinator", &["w-5"]),
    ))
    .await
    .unwrap();
    watcher
        .create(&ringbearer_client::CreateChannel {
            wedding_id: Some("w-5".into()),
            ..ringbearer_client::CreateChannel::new(CH)
        })
        .await
        .unwrap();
    watcher
        .subscribe(CH, SubscribeOptions::default())
        .await
        .unwrap();

    // The dead peer: upgrades, subscribes, then reads but never answers a ping.
    let addr = server.addr;
    let token = server.token("dj", "sound", "supplier", &["w-5"]);
    let dead = tokio::task::spawn_blocking(move || {
        let mut raw = RawTcp::upgrade(addr, "/ws", &token, None);
        raw.send_json(&serde_json::json!({"op": "subscribe", "ref": "s", "channel": CH}));
        let sub = raw.read_json().unwrap();
        assert_eq!(sub["op"], "subscribed", "{sub}");
        let silent_since = Instant::now();
        let mut pings = 0;
        loop {
            match raw.read_frame() {
                Some((0x9, _)) => pings += 1,
                Some((0x8, p)) => {
                    return (
                        u16::from_be_bytes([p[0], p[1]]),
                        pings,
                        silent_since.elapsed(),
                    )
                }
                Some(_) => {}
                None => panic!("socket ended without a close frame"),
            }
        }
    });

    // The watcher sees the DJ join, then leave.
    let mut joined = false;
    loop {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .expect("presence in time")
            .unwrap()
        {
            Event::PresenceDiff { joins, leaves, .. } => {
                if joins.iter().any(|e| e.user_id == "dj") {
                    joined = true;
                }
                if leaves.iter().any(|e| e.user_id == "dj") {
                    break;
                }
            }
            Event::Disconnected { reason } => panic!("the live client was dropped: {reason:?}"),
            _ => {}
        }
    }
    assert!(joined);
    let (code, pings, silent) = dead.await.unwrap();
    assert_eq!(code, 4000, "heartbeat timeout close code");
    assert!(
        pings >= 2,
        "pinged at least twice before closing, got {pings}"
    );
    assert!(
        silent >= Duration::from_millis(2 * INTERVAL_MS),
        "closed after {silent:?}: too early"
    );
    // The live client is still connected and served.
    assert!(watcher.ping().await.is_ok());
    watcher.close().await;
}
