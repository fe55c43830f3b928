//! An idle server lets its shards sleep: with connections subscribed and nothing happening,
//! the shard threads wake only for the once-a-second services (heartbeat sweep, health
//! sampler), not for a presence flush every 50 ms; and a presence change after the quiet
//! still goes out as a `presence_diff`.

mod common;
use common::*;
use serde_json::Value;
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
