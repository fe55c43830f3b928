//! Corked delivery (issue 15 item 2): the fan-out writes each plaintext subscriber's frames
//! straight from the shard's loop, one `send` per connection per batch, and hands what a
//! full socket cannot take to the connection's writer task without tearing a frame or
//! changing the order — with `io.direct_writes` on (the default) and off alike.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const W: &str = "wedding:coordination:w-1";
/// The config of these tests, with `io_extra` lines in its `[io]` section.
fn config(io_extra: &str) -> String {
    format!("[io]\noutbox_max_bytes = 8388608\n{io_extra}[limits]\nmax_frame_bytes = 262144\nmax_queued = 2000\nchannel_messages_per_min = 100000\n[limits.tiers.enterprise]\nmessages_per_min = 100000\nconnections_per_user = 100\nchannels_per_org = 500\nsubscriptions_per_user = 100\n")
}

/// 30 subscribers (on both shards) and a publisher that sends 200 publishes without waiting
/// for answers: every subscriber gets ids 1..=200 in order, whole.
async fn fan_out_in_order(server: &TestServer) {
    let coord = server.token_tier("coord", "org-a", "coordinator", "enterprise", &["w-1"]);
    let mut pubr = server.connect(&coord).await;
    assert_eq!(pubr.create(W, Some("w-1")).await["op"], "created");
    let mut subs = Vec::new();
    for i in 0..30 {
        let t = server.token_tier(
            &format!("s{i}"),
            "org-a",
            "photographer",
            "enterprise",
            &["w-1"],
        );
        let mut c = server.connect(&t).await;
        assert_eq!(c.subscribe(W).await["op"], "subscribed");
        subs.push(c);
    }
    const N: usize = 200;
    for i in 0..N {
        pubr.send(
            json!({"op": "publish", "ref": format!("p{i}"), "channel": W,
            "type": "general", "payload": {"i": i}}),
        )
        .await;
    }
    for i in 0..N {
        let r = pubr.wait_for(|v| v["ref"] == json!(format!("p{i}"))).await;
        assert_eq!(r["op"], "published", "{r}");
    }
    for (k, c) in subs.iter_mut().enumerate() {
        let got = c.messages(W, N).await;
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m["id"], json!(i as u64 + 1), "subscriber {k}: {m}");
            assert_eq!(m["payload"]["i"], json!(i), "subscriber {k}: {m}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fan_out_writes_from_the_loop_in_order() {
    let server = TestServer::start(&config(""));
    fan_out_in_order(&server).await;
    assert!(metric(&server, "ringbearer_writes_direct_total").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_direct_writes_off_every_delivery_goes_through_the_writer() {
    let server = TestServer::start(&config("direct_writes = false\n"));
    fan_out_in_order(&server).await;
    assert_eq!(metric(&server, "ringbearer_writes_direct_total").await, 0);
}

/// A subscriber with a tiny receive buffer stops reading while ~2.9 MB are published to
/// it: the direct write finds its socket full, leaves the rest of a frame to the writer,
/// and the writer finishes it before anything else. Read afterwards, every frame is whole
/// and in order; a subscriber that reads all along is never held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_socket_hands_the_rest_to_the_writer_without_tearing_a_frame() {
    let server = TestServer::start(&config(""));
    let coord = server.token_tier("coord", "org-a", "coordinator", "enterprise", &["w-1"]);
    let mut pubr = server.connect(&coord).await;
    assert_eq!(pubr.create(W, Some("w-1")).await["op"], "created");
    let fast_t = server.token_tier("fast", "org-a", "photographer", "enterprise", &["w-1"]);
    let mut fast = server.connect(&fast_t).await;
    assert_eq!(fast.subscribe(W).await["op"], "subscribed");

    let slow_t = server.token_tier("slow", "org-a", "photographer", "enterprise", &["w-1"]);
    let addr = server.addr;
    let mut slow = tokio::task::spawn_blocking(move || {
        let mut raw = RawTcp::upgrade(addr, "/ws", &slow_t, Some(4096));
        raw.send_json(&json!({"op": "subscribe", "ref": "s", "channel": W}));
        assert_eq!(raw.read_json().unwrap()["op"], "subscribed");
        raw
    })
    .await
    .unwrap();

    const N: usize = 120;
    let pad = |i: usize| -> String {
        let c = (b'a' + (i % 26) as u8) as char;
        std::iter::repeat_n(c, 24_000).collect()
    };
    let deferred_before = metric(&server, "ringbearer_writes_deferred_total").await;
    for i in 0..N {
        let r = pubr.publish(W, json!({"i": i, "pad": pad(i)})).await;
        assert_eq!(r["op"], "published", "{r}");
    }
    // The fast subscriber has everything while the slow one has read nothing.
    let got = fast.messages(W, N).await;
    assert_eq!(got.last().unwrap()["id"], json!(N as u64));
    let deadline = Instant::now() + WAIT;
    while metric(&server, "ringbearer_writes_deferred_total").await == deferred_before {
        assert!(
            Instant::now() < deadline,
            "no direct write found the socket full"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let payloads = tokio::task::spawn_blocking(move || {
        let mut out: Vec<Value> = Vec::new();
        while out.len() < N {
            let v = slow.read_json().expect("a whole frame");
            if v["op"] == "message" {
                out.push(v);
            }
        }
        out
    })
    .await
    .unwrap();
    for (i, m) in payloads.iter().enumerate() {
        assert_eq!(m["id"], json!(i as u64 + 1), "{}", m["id"]);
        assert_eq!(m["payload"]["i"], json!(i));
        assert_eq!(m["payload"]["pad"], json!(pad(i)), "frame {i} torn");
    }
}
