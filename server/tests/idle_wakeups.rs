//! An idle server lets its shards sleep: with connections subscribed and nothing happening,
//! the shard threads wake only for the once-a-second services (heartbeat sweep, health
//! sampler), not for a presence flush every 50 ms; a presence change after the quiet still
//! goes out as a `presence_diff`; and the heartbeat sweep, which looks at a connection only
//! when something is due for it, still shortens a connected token's interval at once when
//! a wedding it reaches is registered for today.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CH: &str = "wedding:guests:w-quiet";

/// The voluntary context switches (a thread going to sleep) of every shard thread of `pid`,
/// summed: each time an executor parks in io_uring is one.
fn shard_sleeps(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.starts_with("rb-shard") {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                total += v.trim().parse::<u64>().unwrap();
            }
        }
    }
    total
}

/// A `presence_diff` of the channel announcing that `user` joined.
fn joined(v: &Value, user: &str) -> bool {
    v["op"] == "presence_diff"
        && v["channel"] == CH
        && v["joins"]
            .as_array()
            .is_some_and(|j| j.iter().any(|e| e["user_id"] == user))
}

#[tokio::test]
async fn idle_shards_sleep_and_presence_still_flows() {
    let server = TestServer::start("");
    let mut coord = server
        .connect(&server.token("coord", "venue", "coordinator", &["w-quiet"]))
        .await;
    assert_eq!(coord.create(CH, Some("w-quiet")).await["op"], "created");
    assert_eq!(coord.subscribe(CH).await["op"], "subscribed");
    let mut guest = server
        .connect(&server.token("guest-1", "venue", "guest", &["w-quiet"]))
        .await;
    assert_eq!(guest.subscribe(CH).await["op"], "subscribed");
    coord.wait_for(|v| joined(v, "guest-1")).await;

    // Quiet now: count how often the shard threads go to sleep over a few seconds. Each
    // shard has a heartbeat sweep every second and shard 0 a health sample; a flush timer
    // every 50 ms would add 20 a second per shard (2 shards: 40/s, measured 45/s before).
    let span = Duration::from_secs(3);
    let pid = server.pid();
    let before = shard_sleeps(pid);
    let at = Instant::now();
    tokio::time::sleep(span).await;
    let sleeps = shard_sleeps(pid) - before;
    let per_sec = sleeps as f64 / at.elapsed().as_secs_f64();
    eprintln!("idle: the shard threads went to sleep {per_sec:.1} times a second");
    assert!(
        per_sec < 15.0,
        "shard threads went to sleep {per_sec:.1} times a second while idle ({sleeps} in {:?})",
        at.elapsed()
    );

    // A change after the quiet wakes the flush: the coordinator hears of the new guest.
    let mut late = server
        .connect(&server.token("guest-2", "venue", "guest", &["w-quiet"]))
        .await;
    assert_eq!(late.subscribe(CH).await["op"], "subscribed");
    coord.wait_for(|v| joined(v, "guest-2")).await;
}

/// Connected while its wedding is not yet known, a dead peer is due for its first ping in
/// 60 s; once the wedding is registered for today (the calendar clock says 13 June 2026),
/// the next round revisits every connection and the fast 200 ms heartbeat closes it with
/// 4000 — within the read timeout of 10 s, where a schedule that missed the new day would
/// wait out the 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedding_registered_for_today_speeds_up_connected_tokens() {
    let s = TestServer::start(
        "[clock]\nstart = \"2026-06-13T10:30:00Z\"\n[saturday]\nmode = \"off\"\n\
         [io]\nheartbeat_interval_ms = 60000\nwedding_day_heartbeat_interval_ms = 200\n",
    );
    let addr = s.addr;
    let token = s.token("late", "studio", "photographer", &["w-late"]);
    let mut raw = tokio::task::spawn_blocking(move || RawTcp::upgrade(addr, "/ws", &token, None))
        .await
        .unwrap();
    // A round or two schedule it at the slow interval. (Too short a pause under load would
    // only make the test weaker, never fail it: a connection first seen after the
    // registration gets the fast interval anyway.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let admin = s.token("admin", "studio", "admin", &["*"]);
    let body = json!({"wedding_id": "w-late", "event_date": "2026-06-13", "time_zone": "UTC"});
    let (status, v) = rest_call(&s, "POST", "/api/websocket/weddings", &admin, Some(body)).await;
    assert_eq!(status, 200, "{v}");
    let at = Instant::now();
    let code = tokio::task::spawn_blocking(move || loop {
        match raw.read_frame() {
            Some((0x8, p)) => return u16::from_be_bytes([p[0], p[1]]),
            Some(_) => {}
            None => panic!("no close frame: the new wedding day did not reach the sweep"),
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 4000, "closed after two missed fast pings");
    assert!(at.elapsed() < WAIT);
}
