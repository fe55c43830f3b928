//! Back-pressure, not disconnection, for a client that sends faster than it reads (issue 15
//! item 5): a publisher that pipelines thousands of publishes while reading nothing is
//! slowed — the server stops reading its socket while its answers wait unread — and is
//! never closed as a slow consumer by its own answers; once it reads, every publish is
//! answered exactly once, in order, and the connection is still open.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Write;

const W: &str = "wedding:timeline:w-1";
const N: usize = 2000;

/// A small outbox (pauses at 32 frames) and rates out of the way.
const CONFIG: &str = r#"
[io]
outbox_max_messages = 64

[limits]
channel_messages_per_min = 1000000

[limits.tiers.enterprise]
messages_per_min = 1000000
connections_per_user = 100
channels_per_org = 500
subscriptions_per_user = 100
"#;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x81];
    let n = payload.len();
    assert!(n < 65536);
    if n < 126 {
        f.push(0x80 | n as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test]
async fn a_pipelining_publisher_is_slowed_never_closed() {
    let server = TestServer::start(CONFIG);
    let coord = server.token_tier("coord", "org-a", "coordinator", "enterprise", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");

    // A small receive buffer: its answers back up at once while it reads nothing.
    let mut p = RawTcp::upgrade(server.addr, "/ws", &coord, Some(4096));
    let mut out = p.s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..N {
            let req = json!({"op": "publish", "ref": format!("p{i}"), "channel": W,
                             "type": "general", "payload": {"i": i, "pad": "x".repeat(64)}});
            // Blocks while the server is not reading: that is the back-pressure.
            out.write_all(&frame(req.to_string().as_bytes())).unwrap();
        }
    });

    // The server paused this client's reads because its answers waited unread.
    let deadline = std::time::Instant::now() + WAIT;
    while metric(&server, "ringbearer_read_pauses_outbox_total").await == 0 {
        if std::time::Instant::now() > deadline {
            let a = metric(&server, "ringbearer_read_pauses_inflight_total").await;
            let b = metric(&server, "ringbearer_slow_consumer_closes_total").await;
            let c = metric(&server, "ringbearer_messages_published_total").await;
            panic!("reads never paused on the outbox (inflight pauses {a}, slow consumers {b}, published {c})");
        }
        tokio::task::yield_now().await;
    }

    // Now it reads: every publish answered once, in order, ids contiguous.
    let answers = tokio::task::spawn_blocking(move || {
        let mut got: Vec<Value> = Vec::with_capacity(N);
        while got.len() < N {
            match p.read_json() {
                Some(v) => got.push(v),
                None => panic!("connection ended after {} answers", got.len()),
            }
        }
        p.send_json(&json!({"op": "ping", "ref": "last"}));
        let pong = p.read_json().expect("still open");
        (got, pong)
    })
    .await
    .unwrap();
    writer.join().unwrap();
    let (got, pong) = answers;
    assert_eq!(pong["op"], "pong", "{pong}");
    for (i, a) in got.iter().enumerate() {
        assert_eq!(a["op"], "published", "answer {i}: {a}");
        assert_eq!(a["ref"], format!("p{i}"), "in order: {a}");
        assert_eq!(a["id"], i as u64 + 1, "contiguous: {a}");
    }
    assert_eq!(
        metric(&server, "ringbearer_slow_consumer_closes_total").await,
        0
    );
}
