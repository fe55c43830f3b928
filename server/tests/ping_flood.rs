//! A client sending WebSocket pings without ever reading (issue 10, item 3): the pongs
//! tungstenite queues count against the connection's outgoing bound (`outbox_max_bytes`),
//! so the server's memory stays bounded, the flooder is closed with 4001 as a slow
//! consumer, and another client on the same server keeps receiving what is published.

mod common;
use common::*;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

const CH: &str = "wedding:main:w-1";
/// Bytes of pings the flooder sends at most. A server that keeps every pong (127 bytes per
/// 131-byte ping) grows by ~46 MiB (measured: +80 MB peak RSS without the bound).
const BUDGET: usize = 48 << 20;
/// Most the server's peak RSS may grow during the flood. Its outgoing bound here is
/// 256 KiB; measured with the bound: +6 to +10 MB (allocator slack for the doubling
/// buffers, the other clients' traffic).
const MAX_GROWTH: u64 = 24 << 20;

/// A `/proc/PID/status` field in bytes (`VmHWM`: peak resident set size).
fn vm(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// One masked ping frame with a 125-byte payload (the largest control frame).
fn ping_frame() -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut f = vec![0x89, 0x80 | 125];
    f.extend_from_slice(&mask);
    f.extend((0..125).map(|i| b'p' ^ mask[i % 4]));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_cut_off_as_a_slow_consumer_and_memory_stays_bounded() {
    let server = TestServer::start_custom(
        "[io]\noutbox_max_bytes = 262144\n[limits]\nmax_frame_bytes = 262144\n",
        |c| {
            c.env("RUST_LOG", "info");
        },
    );
    let mut coord = server
        .connect(&server.token("coord", "venue", "coordinator", &["w-1"]))
        .await;
    assert_eq!(coord.create(CH, Some("w-1")).await["op"], "created");
    let mut guest = server
        .connect(&server.token("guest", "family", "guest", &["w-1"]))
        .await;
    assert_eq!(guest.subscribe(CH).await["op"], "subscribed");
    let pid = server.pid();
    let peak_before = vm(pid, "VmHWM");

    let addr = server.addr;
    let token = server.token("flooder", "venue", "photographer", &["w-1"]);
    let flood = tokio::task::spawn_blocking(move || {
        // A 4 KiB receive buffer: the pongs back up into the server at once.
        let mut raw = RawTcp::upgrade(addr, "/ws", &token, Some(4096));
        raw.send_json(&json!({"op": "subscribe", "ref": "s", "channel": CH}));
        assert_eq!(raw.read_json().unwrap()["op"], "subscribed");
        raw.s
            .set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let chunk: Vec<u8> = ping_frame().repeat(500);
        let mut sent = 0usize;
        while sent < BUDGET {
            // Whole frames only: a short write resumes where it stopped.
            let at = sent % chunk.len();
            match raw.s.write(&chunk[at..]) {
                Ok(n) => sent += n,
                // The server stopped reading (it closed us) or reset the socket.
                Err(_) => break,
            }
        }
        let peak = vm(pid, "VmHWM");
        // Now read: the pongs that made it into the socket buffers, then the close.
        let mut ended = None;
        while let Some((op, payload)) = raw.read_frame() {
            if op == 0x8 {
                ended = Some(u16::from_be_bytes([payload[0], payload[1]]));
                break;
            }
        }
        (sent, peak, ended)
    });

    // Meanwhile, and after, the guest receives everything published.
    for n in 1..=20 {
        let p = coord.publish(CH, json!({ "n": n })).await;
        assert_eq!(p["op"], "published", "{p}");
    }
    let got = guest.messages(CH, 20).await;
    assert_eq!(got.len(), 20);

    let (sent, peak, ended) = flood.await.unwrap();
    let growth = peak.saturating_sub(peak_before);
    assert!(
        growth < MAX_GROWTH,
        "peak RSS grew by {growth} bytes while {sent} bytes of pings went in"
    );
    // (`sent` may still reach the budget: after its close frame the server reads and
    // discards for `close_linger_ms`, which costs no memory.)
    // The close frame reaches the flooder, unless the socket was reset after it; either
    // way the server closed it with 4001.
    assert!(matches!(ended, Some(4001) | None), "closed with {ended:?}");
    server.wait_log_line("closing the flooder with 4001", |l| {
        l.contains("connection closed") && l.contains("flooder") && l.contains("4001")
    });

    // Once the flooder is gone, the guest still receives.
    guest
        .wait_for(|v| {
            v["op"] == "presence_diff"
                && v["leaves"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|e| e["user_id"] == "flooder"))
        })
        .await;
    let p = coord.publish(CH, json!({ "n": 21 })).await;
    assert_eq!(p["op"], "published", "{p}");
    assert_eq!(guest.messages(CH, 1).await[0]["payload"]["n"], 21);
    // Its subscription was kept (SPEC §2.6): what was published while it was away waits
    // for it, and resuming recovers it.
    let mut back = server
        .connect(&server.token("flooder", "venue", "photographer", &["w-1"]))
        .await;
    let r = back.subscribe(CH).await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(message_ids(&r).last(), Some(&21), "{r}");
}
