//! Resume (SPEC §2.2–2.3): a subscriber that drops its connection and resubscribes with its
//! last seen id gets exactly the missed messages with `recovered: true`; a position older
//! than the kept window gets `recovered: false` and the kept tail; the stored cursor (last
//! ack) counts too; the client library reconnects through a network blip by itself.

mod common;
use common::*;
use ringbearer_client::{Client, ClientConfig, Event, Publish, SubscribeOptions};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const CH: &str = "wedding:timeline:w-9";

#[tokio::test]
async fn dropped_connection_resumes_exactly_the_missed_messages() {
    let server = TestServer::start("[limits]\nmax_queued = 5\n");
    let coord_token = server.token("coord", "venue", "coordinator", &["w-9"]);
    let mut coord = server.connect(&coord_token).await;
    assert_eq!(coord.create(CH, Some("w-9")).await["op"], "created");
    // The coordinator watches presence, so the test waits for the server to notice each
    // drop instead of guessing how long that takes.
    coord.subscribe(CH).await;
    let vendor_token = server.token("florist", "blooms", "florist", &["w-9"]);

    let mut v = server.connect(&vendor_token).await;
    let sub = v.subscribe(CH).await;
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        coord.publish(CH, json!({"n": n})).await;
    }
    let seen = v.messages(CH, 3).await;
    assert_eq!(seen[2]["id"], 3);
    drop(v); // the phone drops off the venue Wi-Fi
    left(&mut coord, "florist").await;

    for n in 4..=6 {
        let p = coord.publish(CH, json!({"n": n})).await;
        assert_eq!(
            p["delivered_count"], 1,
            "only the coordinator is online: {p}"
        );
        assert_eq!(
            p["queued_count"], 1,
            "the florist is subscribed but away: {p}"
        );
    }
    let mut v = server.connect(&vendor_token).await;
    let r = v
        .request(json!({"op": "subscribe", "channel": CH, "last_seen_id": 3, "epoch": epoch}))
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    assert_eq!(r["recovered"], true);
    let ids: Vec<u64> = message_ids(&r);
    assert_eq!(ids, vec![4, 5, 6]);
    // Live messages follow with no gap and no repeat.
    coord.publish(CH, json!({"n": 7})).await;
    assert_eq!(v.messages(CH, 1).await[0]["id"], 7);
    assert_eq!(v.request(json!({"op": "ping"})).await["op"], "pong");
    assert!(
        v.backlog.iter().all(|m| m["op"] != "message"),
        "{:?}",
        v.backlog
    );

    // Ack 7, drop, miss 8: resubscribing without a position resumes from the cursor.
    assert_eq!(
        v.request(json!({"op": "ack", "channel": CH, "id": 7}))
            .await["op"],
        "ok"
    );
    drop(v);
    left(&mut coord, "florist").await;
    coord.publish(CH, json!({"n": 8})).await;
    let mut v = server.connect(&vendor_token).await;
    let r = v.subscribe(CH).await;
    assert_eq!(r["recovered"], true);
    assert_eq!(message_ids(&r), vec![8]);

    // Away for longer than the window holds (max_queued = 5): recovered false, the tail.
    drop(v);
    left(&mut coord, "florist").await;
    for n in 9..=20 {
        coord.publish(CH, json!({"n": n})).await;
    }
    let mut v = server.connect(&vendor_token).await;
    let r = v
        .request(json!({"op": "subscribe", "channel": CH, "last_seen_id": 8}))
        .await;
    assert_eq!(r["recovered"], false, "{r}");
    let ids: Vec<u64> = message_ids(&r);
    assert_eq!(ids, vec![16, 17, 18, 19, 20]);

    // A position from another epoch is not trusted.
    let mut w = server
        .connect(&server.token("caterer", "food", "caterer", &["w-9"]))
        .await;
    let r = w
        .request(
            json!({"op": "subscribe", "channel": CH, "last_seen_id": 19, "epoch": "someone-else"}),
        )
        .await;
    assert_eq!(r["recovered"], false, "{r}");

    // Unsubscribing ends the subscription: nothing is queued for the user any more.
    assert_eq!(
        v.request(json!({"op": "unsubscribe", "channel": CH})).await["op"],
        "unsubscribed"
    );
    let p = coord.publish(CH, json!({"n": 21})).await;
    assert_eq!(p["queued_count"], 0, "{p}");
}

/// Waits until `watcher` sees `user` leave presence on `CH`.
async fn left(watcher: &mut Raw, user: &str) {
    watcher
        .wait_for(|v| {
            v["op"] == "presence_diff"
                && v["channel"] == CH
                && v["leaves"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|e| e["user_id"] == user))
        })
        .await;
}

#[tokio::test]
async fn idempotent_publish_returns_the_first_id() {
    let server = TestServer::start("");
    let mut coord = server
        .connect(&server.token("coord", "venue", "coordinator", &["w-9"]))
        .await;
    coord.create(CH, Some("w-9")).await;
    let mut v = server
        .connect(&server.token("v", "x", "venue", &["w-9"]))
        .await;
    v.subscribe(CH).await;
    let req = json!({"op": "publish", "channel": CH, "type": "urgent", "payload": {"ceremony": "indoors"}, "idempotency_key": "rain-1"});
    let a = coord.request(req.clone()).await;
    let b = coord.request(req).await;
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["delivered_count"], 0);
    assert_eq!(v.messages(CH, 1).await[0]["idempotency_key"], "rain-1");
    assert_eq!(v.request(json!({"op": "ping"})).await["op"], "pong");
    assert!(
        v.backlog.iter().all(|m| m["op"] != "message"),
        "delivered once: {:?}",
        v.backlog
    );
}

/// A loopback TCP proxy that can cut every connection and refuse new ones: a network blip.
struct Blip {
    addr: std::net::SocketAddr,
    cut: watch::Sender<u64>,
    blocked: Arc<AtomicBool>,
}

impl Blip {
    async fn start(upstream: std::net::SocketAddr) -> Blip {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(0u64);
        let blocked = Arc::new(AtomicBool::new(false));
        let (cut2, blocked2) = (cut.clone(), blocked.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                if blocked2.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let mut rx = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = rx.changed() => {}
                    }
                });
            }
        });
        Blip { addr, cut, blocked }
    }

    fn cut_and_block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn client_library_recovers_every_message_through_a_network_blip() {
    let server = TestServer::start("");
    let blip = Blip::start(server.addr).await;
    let mut coord = server
        .connect(&server.token("coord", "venue", "coordinator", &["w-9"]))
        .await;
    coord.create(CH, Some("w-9")).await;

    let cfg = ClientConfig::new(
        format!("ws://{}/ws", blip.addr),
        server.token("photo", "studio", "photographer", &["w-9"]),
    );
    let (client, mut events) = Client::connect(cfg).await.unwrap();
    client
        .subscribe(CH, SubscribeOptions::default())
        .await
        .unwrap();
    for n in 1..=3 {
        coord.publish(CH, json!({"n": n})).await;
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Some(Event::Message(m)) = tokio::time::timeout(WAIT, events.next()).await.unwrap() {
            got.push(m.id);
        }
    }

    blip.cut_and_block();
    loop {
        match tokio::time::timeout(WAIT, events.next()).await.unwrap() {
            Some(Event::Disconnected { .. }) => break,
            Some(Event::Message(m)) => got.push(m.id),
            _ => {}
        }
    }
    // Published while the photographer is away.
    for n in 4..=8 {
        coord.publish(CH, json!({"n": n})).await;
    }
    assert!(
        matches!(client.publish(&Publish::new(CH, "general", json!(0))).await, Err(e) if e.is_retryable())
    );
    blip.unblock();

    let mut resubscribed = None;
    while got.len() < 8 || resubscribed.is_none() {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .expect("recovered in time")
        {
            Some(Event::Message(m)) => got.push(m.id),
            Some(Event::Resubscribed { recovered, .. }) => resubscribed = Some(recovered),
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
    assert_eq!(resubscribed, Some(true));
    // And live again afterwards.
    coord.publish(CH, json!({"n": 9})).await;
    loop {
        if let Some(Event::Message(m)) = tokio::time::timeout(WAIT, events.next()).await.unwrap() {
            got.push(m.id);
            break;
        }
    }
    assert_eq!(
        got,
        (1..=9).collect::<Vec<u64>>(),
        "every message exactly once, in order"
    );
    client.close().await;
}
