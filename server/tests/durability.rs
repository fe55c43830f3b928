//! Durability (SPEC §2.2–2.5) with the default `fsync` policy: a server killed with
//! SIGKILL and restarted on the same data directory still has every channel it answered
//! `created` for and every message it answered `published` for — exactly once, in order,
//! with ids continuing and idempotency keys remembered — across several random kill points
//! under publish load on channels owned by both shards.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_killed_server_keeps_what_it_answered_for() {
    let mut server = TestServer::start("");
    let coord_token = server.token("coord", "venue", "coordinator", &["w-1"]);
    let vendor_token = server.token("dj", "sound", "supplier", &["w-1"]);
    let mut coord = server.connect(&coord_token).await;
    let created = coord.create("wedding:timeline:w-1", Some("w-1")).await;
    assert_eq!(created["op"], "created");
    let org_channel = coord.create("venue:ops:venue-1", None).await;
    assert_eq!(org_channel["op"], "created");
    let mut dj = server.connect(&vendor_token).await;
    let sub = dj.subscribe("wedding:timeline:w-1").await;
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    for n in 1..=5 {
        let mut req = json!({"op": "publish", "channel": "wedding:timeline:w-1", "type": "timeline_change", "payload": {"n": n}});
        if n == 5 {
            req["idempotency_key"] = json!("cake-moved");
        }
        assert_eq!(coord.request(req).await["id"], n);
    }
    drop((coord, dj));

    server.kill_and_restart();

    let mut coord = server.connect(&coord_token).await;
    let again = coord.create("wedding:timeline:w-1", Some("w-1")).await;
    assert_eq!(
        again["channel_id"], created["channel_id"],
        "the same channel, restored"
    );
    assert_eq!(again["created_at"], created["created_at"]);
    let again = coord.create("venue:ops:venue-1", None).await;
    assert_eq!(again["channel_id"], org_channel["channel_id"]);
    let mut dj = server.connect(&vendor_token).await;
    let r = dj.request(json!({"op": "subscribe", "channel": "wedding:timeline:w-1", "last_seen_id": 2, "epoch": epoch})).await;
    assert_eq!(r["recovered"], true, "{r}");
    let ids: Vec<u64> = message_ids(&r);
    assert_eq!(ids, vec![3, 4, 5]);
    assert_eq!(r["messages"][2]["payload"]["n"], 5);
    // The idempotency key survived the crash; ids continue.
    let repeat = coord
        .request(json!({"op": "publish", "channel": "wedding:timeline:w-1", "type": "timeline_change", "payload": {"n": 5}, "idempotency_key": "cake-moved"}))
        .await;
    assert_eq!(
        (repeat["id"].as_u64(), repeat["delivered_count"].as_u64()),
        (Some(5), Some(0)),
        "{repeat}"
    );
    assert_eq!(
        coord.publish("wedding:timeline:w-1", json!({"n": 6})).await["id"],
        6
    );
    assert_eq!(dj.messages("wedding:timeline:w-1", 1).await[0]["id"], 6);
}

/// Publishes on `channel` one at a time until the connection dies, recording each
/// acknowledged `(id, tag)`.
async fn publish_until_dead(
    url: String,
    token: String,
    channel: String,
    tag: String,
    acked: Arc<Mutex<Vec<(String, u64, String)>>>,
) {
    let Ok(mut c) = Raw::connect(&url, &token).await else {
        return;
    };
    for seq in 0u64.. {
        let payload = format!("{tag}/{seq}");
        let req = json!({"op": "publish", "ref": payload, "channel": channel, "type": "general", "payload": payload});
        if c.ws
            .send(Message::Text(req.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["ref"] == payload.as_str() {
                        assert_eq!(v["op"], "published", "{v}");
                        acked.lock().unwrap().push((
                            channel.clone(),
                            v["id"].as_u64().unwrap(),
                            payload.clone(),
                        ));
                        break;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    }
}

/// Every kept message of `channel`, read by subscribing with history and publishing a
/// marker: everything before the marker has arrived once the marker has.
async fn read_all(server: &TestServer, token: &str, channel: &str) -> Vec<(u64, String)> {
    let mut c = server.connect(token).await;
    let r = c
        .request(json!({"op": "subscribe", "channel": channel, "include_history": true}))
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    let mut got: Vec<(u64, String)> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["payload"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let marker = c.publish(channel, json!("marker")).await;
    let marker_id = marker["id"].as_u64().unwrap();
    loop {
        let m = c
            .wait_for(|v| v["op"] == "message" && v["channel"] == channel)
            .await;
        let id = m["id"].as_u64().unwrap();
        if id == marker_id {
            break;
        }
        got.push((id, m["payload"].as_str().unwrap().to_owned()));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_publish_survives_random_kill_points() {
    const CYCLES: usize = 4;
    let mut server = TestServer::start(
        "[limits]\nmax_queued = 1000000\nchannel_messages_per_min = 1000000\n[limits.tiers.enterprise]\nmessages_per_min = 1000000\nconnections_per_user = 100\nchannels_per_org = 500\nsubscriptions_per_user = 100\n",
    );
    let token = server.token_tier("svc", "venue", "coordinator", "enterprise", &["w-1"]);
    // Two channels on each shard.
    let channels: Vec<String> = (0..2)
        .flat_map(|shard| {
            (0..200)
                .map(|i| format!("wedding:crash{i}:w-1"))
                .filter(move |n| owner(n, 2) == shard)
                .take(2)
        })
        .collect();
    {
        let mut c = server.connect(&token).await;
        for ch in &channels {
            assert_eq!(c.create(ch, Some("w-1")).await["op"], "created");
        }
    }
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut rng = rand::thread_rng();
    for cycle in 0..CYCLES {
        let before = acked.lock().unwrap().len();
        let kill_after = before + rng.gen_range(20..200);
        let mut tasks = Vec::new();
        for (i, ch) in channels.iter().enumerate() {
            for p in 0..2 {
                tasks.push(tokio::spawn(publish_until_dead(
                    server.url(),
                    token.clone(),
                    ch.clone(),
                    format!("c{cycle}-ch{i}-p{p}"),
                    acked.clone(),
                )));
            }
        }
        let deadline = std::time::Instant::now() + WAIT * 3;
        while acked.lock().unwrap().len() < kill_after {
            assert!(std::time::Instant::now() < deadline, "publishing stalled");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        server.kill_and_restart();
        for t in tasks {
            tokio::time::timeout(WAIT, t)
                .await
                .expect("publisher noticed the crash")
                .unwrap();
        }
    }

    let acked = acked.lock().unwrap().clone();
    let mut by_channel: HashMap<String, HashMap<u64, String>> = HashMap::new();
    for (ch, id, payload) in &acked {
        assert!(
            by_channel
                .entry(ch.clone())
                .or_default()
                .insert(*id, payload.clone())
                .is_none(),
            "id {id} acknowledged twice on {ch}"
        );
    }
    let mut total_kept = 0;
    for ch in &channels {
        let kept = read_all(&server, &token, ch).await;
        total_kept += kept.len();
        // Ids from 1, contiguous, in order.
        let ids: Vec<u64> = kept.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids,
            (1..=ids.len() as u64).collect::<Vec<_>>(),
            "{ch}: ids contiguous and ordered"
        );
        // No message stored twice.
        let distinct: HashSet<&String> = kept
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.as_str() != "marker")
            .collect();
        let markers = kept.iter().filter(|(_, p)| p == "marker").count();
        assert_eq!(
            distinct.len() + markers,
            kept.len(),
            "{ch}: a message stored twice"
        );
        // Every acknowledged message is there, under its id.
        let kept: HashMap<u64, &String> = kept.iter().map(|(id, p)| (*id, p)).collect();
        for (id, payload) in by_channel.get(ch).into_iter().flatten() {
            assert_eq!(
                kept.get(id).copied(),
                Some(payload),
                "{ch}: acknowledged message {id} lost or changed"
            );
        }
    }
    assert!(
        acked.len() >= CYCLES * 20,
        "the load ran: {} acknowledged",
        acked.len()
    );
    eprintln!(
        "crash test: {CYCLES} kills, {} acknowledged, {total_kept} kept, 0 lost, 0 duplicated",
        acked.len()
    );
}

#[tokio::test]
async fn a_graceful_restart_keeps_subscriptions_and_cursors() {
    let mut server = TestServer::start("[limits]\nmax_queued = 3\n");
    const CH: &str = "wedding:gallery:w-2";
    let coord_token = server.token("coord", "venue", "coordinator", &["w-2"]);
    let dj_token = server.token("dj", "sound", "supplier", &["w-2"]);
    let carol_token = server.token("carol", "cakes", "caterer", &["w-2"]);
    let mut coord = server.connect(&coord_token).await;
    coord.create(CH, Some("w-2")).await;
    let mut dj = server.connect(&dj_token).await;
    dj.subscribe(CH).await;
    for n in 1..=2 {
        coord.publish(CH, json!(n)).await;
    }
    dj.messages(CH, 2).await;
    assert_eq!(
        dj.request(json!({"op": "ack", "channel": CH, "id": 2}))
            .await["op"],
        "ok"
    );
    let mut carol = server.connect(&carol_token).await;
    carol.subscribe(CH).await;
    drop((coord, dj, carol));
    assert!(server.stop().success());
    server.kill_and_restart();

    let mut coord = server.connect(&coord_token).await;
    let p = coord.publish(CH, json!(3)).await;
    assert_eq!(p["id"], 3);
    assert_eq!(
        p["queued_count"], 2,
        "both subscriptions survived the restart: {p}"
    );
    // The DJ resumes from its stored cursor (2) without sending a position.
    let mut dj = server.connect(&dj_token).await;
    let r = dj.subscribe(CH).await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(message_ids(&r), vec![3]);
    // Carol stays away while more is published than the window keeps (max_queued = 3).
    for n in 4..=7 {
        coord.publish(CH, json!(n)).await;
    }
    let mut carol = server.connect(&carol_token).await;
    let r = carol.subscribe(CH).await;
    assert_eq!(
        r["recovered"], false,
        "her position fell out of the window: {r}"
    );
    assert_eq!(message_ids(&r), vec![5, 6, 7]);
}

/// Segment files of shard `shard`'s log.
fn segments(server: &TestServer, shard: usize) -> usize {
    std::fs::read_dir(server.data.join(format!("wal/shard-{shard}")))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn retention_reclaims_old_segments_and_keeps_every_channel() {
    let mut server = TestServer::start(
        "[storage]\nsegment_bytes = 16384\n[io]\nreclaim_interval_ms = 200\n[limits]\nmax_queued = 5\nchannel_messages_per_min = 1000000\n[limits.tiers.enterprise]\nmessages_per_min = 1000000\nconnections_per_user = 100\nchannels_per_org = 500\nsubscriptions_per_user = 100\n",
    );
    let token = server.token_tier("coord", "venue", "coordinator", "enterprise", &["w-3"]);
    let busy = "wedding:busy:w-3";
    let shard = owner(busy, 2);
    // A quiet channel on the same shard: its only record is its creation, in the first
    // segment, which retention reclaims once a checkpoint has been logged.
    let quiet = (0..200)
        .map(|i| format!("wedding:quiet{i}:w-3"))
        .find(|n| owner(n, 2) == shard)
        .unwrap();
    let mut c = server.connect(&token).await;
    let quiet_created = c.create(&quiet, Some("w-3")).await;
    c.create(busy, Some("w-3")).await;
    let filler = "f".repeat(400);
    for n in 1..=300 {
        assert_eq!(c.publish(busy, json!({"n": n, "f": filler})).await["id"], n);
    }
    let grown = segments(&server, shard);
    assert!(grown >= 6, "300 × ~0.5 KiB over 16 KiB segments: {grown}");
    // Retention runs every 200 ms: wait for it to delete the old segments (what stays: the
    // segments holding the last 5 messages and this round's checkpoints, and the active one).
    let deadline = std::time::Instant::now() + WAIT;
    while segments(&server, shard) > 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "no segment reclaimed: {} left",
            segments(&server, shard)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(c);

    server.kill_and_restart();
    let mut c = server.connect(&token).await;
    let again = c.create(&quiet, Some("w-3")).await;
    assert_eq!(
        again["channel_id"], quiet_created["channel_id"],
        "the quiet channel survived retention"
    );
    let r = c
        .request(json!({"op": "subscribe", "channel": busy, "include_history": true}))
        .await;
    let ids: Vec<u64> = message_ids(&r);
    assert_eq!(
        ids,
        vec![296, 297, 298, 299, 300],
        "the kept window came back: {r}"
    );
    assert_eq!(
        c.publish(busy, json!("next")).await["id"],
        301,
        "ids continue"
    );
}

/// SPEC §5: a graceful stop flushes the log. Under `batch` a publish is answered before its
/// record is synced (within `batch_interval_ms`); SIGTERM right after must still keep it.
#[tokio::test]
async fn a_graceful_stop_flushes_the_batch_policy_log() {
    let mut server =
        TestServer::start("[storage]\ndurability = \"batch\"\nbatch_interval_ms = 60000\n");
    let token = server.token("coord", "venue", "coordinator", &["w-4"]);
    let mut c = server.connect(&token).await;
    c.create("wedding:batch:w-4", Some("w-4")).await;
    for n in 1..=20 {
        assert_eq!(c.publish("wedding:batch:w-4", json!(n)).await["id"], n);
    }
    drop(c);
    assert!(server.stop().success());
    server.kill_and_restart();
    let reader = server.token("reader", "venue", "coordinator", &["w-4"]);
    let mut r = server.connect(&reader).await;
    let s = r
        .request(
            json!({"op": "subscribe", "channel": "wedding:batch:w-4", "include_history": true}),
        )
        .await;
    assert_eq!(message_ids(&s), (1..=20).collect::<Vec<u64>>(), "{s}");
}
