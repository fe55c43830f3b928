//! Cluster mode against a real three-server NATS JetStream cluster on loopback (issue 14,
//! docs/cluster.md): a node started while NATS is down reports degraded health and refuses
//! creates and publishes `WS_OVERLOADED` (retryable, with `retry_after`), then becomes
//! ready on its own once NATS is up; losing NATS later does the same and recovers too.
//! Health and metrics show the cluster's state. Channels created on one node are usable on
//! another; publishes from two nodes to one channel get contiguous ids that every
//! subscriber on every node sees in order; idempotency keys hold across nodes; a node
//! killed with SIGKILL loses nothing acknowledged and its clients resume on another node.

mod cluster_common;
mod common;
use cluster_common::NatsCluster;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CH: &str = "wedding:timeline:w-1";

fn cluster_config(nats: &NatsCluster, node: &str) -> String {
    format!(
        "[cluster]\nenabled = true\nurls = {}\nnode = \"{node}\"\nstream_replicas = 3\nconnect_timeout_ms = 500\nmax_reconnect_delay_ms = 200\nstatus_interval_ms = 100\n",
        nats.urls_toml()
    )
}

async fn health(server: &TestServer, token: &str) -> Value {
    let (status, body) = rest_call(server, "GET", "/api/websocket/health", token, None).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// Polls health until `pred` holds (bounded: the bridge checks every 100 ms here, NATS
/// elects leaders within seconds).
async fn health_until(server: &TestServer, token: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = health(server, token).await;
        if pred(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "health never got there: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_retryable_overloaded(v: &Value) {
    assert_error(v, "WS_OVERLOADED");
    assert_eq!(v["retryable"], true, "{v}");
    assert_eq!(v["retry_after"], 1, "{v}");
}

async fn metrics(server: &TestServer, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!("GET /api/websocket/metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert!(out.contains("\nringbearer_"), "{out}");
    out
}

#[tokio::test]
async fn nats_down_at_start_degrades_and_refuses_retryable_then_recovers_on_its_own() {
    let mut nats = NatsCluster::new(3);
    let server = TestServer::start(&cluster_config(&nats, "rb-1"));
    let token = server.token("coord", "venue", "coordinator", &["w-1"]);
    let mut c = server.connect(&token).await;

    // NATS is down: the node serves connections but stores nothing it could not keep.
    assert_retryable_overloaded(&c.create(CH, Some("w-1")).await);
    let h = health(&server, &token).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["cluster"]["node"], "rb-1", "{h}");
    assert_eq!(h["cluster"]["ready"], false, "{h}");
    assert_eq!(h["cluster"]["connected"], false, "{h}");
    assert!(
        h["alerts"].as_array().unwrap().iter().any(|a| a["message"]
            .as_str()
            .unwrap()
            .starts_with("cluster: not ready")),
        "{h}"
    );

    nats.start_all();
    let h = health_until(&server, &token, |h| h["cluster"]["ready"] == true).await;
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["cluster"]["connected"], true, "{h}");
    assert!(
        h["cluster"]["server"].as_str().unwrap().starts_with('n'),
        "{h}"
    );
    assert!(h["cluster"]["refused"].as_u64().unwrap() >= 1, "{h}");

    // Served again without a restart or a reconnect of the client.
    assert_eq!(c.create(CH, Some("w-1")).await["op"], "created");
    c.subscribe(CH).await;
    let p = c.publish(CH, json!({"n": 1})).await;
    assert_eq!(p["op"], "published", "{p}");

    let h = health_until(&server, &token, |h| h["cluster"]["stream_seq"] == 1).await;
    assert_eq!(h["cluster"]["delivered_seq"], 1, "{h}");
    assert_eq!(h["cluster"]["lag"], 0, "{h}");
    let m = metrics(&server, &token).await;
    assert!(m.contains("\nringbearer_cluster_ready 1\n"), "{m}");
    assert!(m.contains("\nringbearer_cluster_connects_total 1\n"), "{m}");
}

#[tokio::test]
async fn losing_nats_degrades_health_and_refuses_publishes_until_it_is_back() {
    let mut nats = NatsCluster::start3();
    let server = TestServer::start(&cluster_config(&nats, "rb-1"));
    let token = server.token("coord", "venue", "coordinator", &["w-1"]);
    health_until(&server, &token, |h| h["cluster"]["ready"] == true).await;
    let mut c = server.connect(&token).await;
    assert_eq!(c.create(CH, Some("w-1")).await["op"], "created");
    c.subscribe(CH).await;
    assert_eq!(c.publish(CH, json!({"n": 1})).await["id"], 1);

    nats.kill_all();
    let h = health_until(&server, &token, |h| h["cluster"]["ready"] == false).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_retryable_overloaded(&c.publish(CH, json!({"n": 2})).await);

    nats.start_all();
    health_until(&server, &token, |h| h["cluster"]["ready"] == true).await;
    let p = c.publish(CH, json!({"n": 2})).await;
    assert_eq!(p["op"], "published", "{p}");
    assert_eq!(p["id"], 2, "the refused publish took no id: {p}");
    let m = metrics(&server, &token).await;
    assert!(
        m.contains("\nringbearer_cluster_disconnects_total 1\n"),
        "{m}"
    );
}

#[tokio::test]
async fn cluster_mode_off_shows_no_cluster_in_health_and_metrics() {
    let server = TestServer::start("");
    let token = server.token("coord", "venue", "coordinator", &["w-1"]);
    let h = health(&server, &token).await;
    assert!(h.get("cluster").is_none(), "{h}");
    assert!(!metrics(&server, &token)
        .await
        .contains("ringbearer_cluster_"));
}

/// A secret both Ringbearer nodes share, so one token works on either.
const SECRET: &str = "cluster-test-secret-of-at-least-32-bytes";

fn node_config(nats: &NatsCluster, node: &str) -> String {
    format!(
        "[auth]\nhs256_secret = \"{SECRET}\"\n{}",
        cluster_config(nats, node)
    )
}

fn token(sub: &str, org: &str, role: &str, weddings: &[&str]) -> String {
    let now = now_s();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({
            "sub": sub, "org": org, "role": role, "tier": "professional",
            "weddings": weddings, "exp": now + 3600, "nbf": now - 1,
        }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Subscribes until the channel is known on this node (it arrives through the cluster's
/// key-value watch, bounded wait), then returns the reply.
async fn subscribe_when_known(c: &mut Raw, channel: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.subscribe(channel).await;
        if r["code"] != "WS_CHANNEL_NOT_FOUND" {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} never reached this node: {r}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_channel_created_on_one_node_is_subscribed_on_another_with_the_same_access_rules() {
    let nats = NatsCluster::start3();
    let a = TestServer::start(&node_config(&nats, "rb-a"));
    let b = TestServer::start(&node_config(&nats, "rb-b"));
    for s in [&a, &b] {
        health_until(s, &token("ops", "venue", "admin", &[]), |h| {
            h["cluster"]["ready"] == true
        })
        .await;
    }
    let coord = token("coord", "venue", "coordinator", &["w-1"]);
    let mut on_a = Raw::connect(&a.url(), &coord).await.unwrap();
    let created = on_a.create(CH, Some("w-1")).await;
    assert_eq!(created["op"], "created", "{created}");

    // The florist of the wedding, on the other node.
    let florist = token("florist", "blooms", "florist", &["w-1"]);
    let mut on_b = Raw::connect(&b.url(), &florist).await.unwrap();
    let sub = subscribe_when_known(&mut on_b, CH).await;
    assert_eq!(sub["op"], "subscribed", "{sub}");

    // Someone of another wedding is refused on node B as on node A.
    let stranger = token("snap", "lens", "photographer", &["w-2"]);
    let mut s_b = Raw::connect(&b.url(), &stranger).await.unwrap();
    let mut s_a = Raw::connect(&a.url(), &stranger).await.unwrap();
    let (rb, ra) = (s_b.subscribe(CH).await, s_a.subscribe(CH).await);
    assert_eq!(ra["op"], "error", "{ra}");
    assert_eq!(rb["code"], ra["code"], "node B: {rb}, node A: {ra}");

    // Creating the same name on node B is the same as a second create on node A.
    let again_b = Raw::connect(&b.url(), &coord)
        .await
        .unwrap()
        .create(CH, Some("w-1"))
        .await;
    let again_a = on_a.create(CH, Some("w-1")).await;
    assert_eq!(
        again_b["op"], again_a["op"],
        "node B: {again_b}, node A: {again_a}"
    );
    assert_eq!(
        again_b["code"], again_a["code"],
        "node B: {again_b}, node A: {again_a}"
    );

    // Shared state is not built for cluster mode: refused, never numbered apart from the
    // stream.
    let st = on_a
        .request(
            json!({"op": "state_set", "channel": CH, "doc": "d", "version": 0, "value": {"k": 1}}),
        )
        .await;
    assert_error(&st, "WS_BAD_REQUEST");
    assert!(
        st["message"].as_str().unwrap().contains("cluster mode"),
        "{st}"
    );

    let m = metrics(&b, &coord).await;
    assert!(
        m.contains("\nringbearer_cluster_channels_adopted_total 1\n"),
        "{m}"
    );
    let m = metrics(&a, &coord).await;
    assert!(
        m.contains("\nringbearer_cluster_channels_put_total 1\n"),
        "{m}"
    );
}

/// Publishes `n` messages `{from, n}` on `channel`, each retried while refused retryable
/// (`WS_OVERLOADED`: another node's append came first too often, or NATS is failing over),
/// after its `retry_after` as a client does; returns the ids.
async fn publish_all(c: &mut Raw, channel: &str, from: &str, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..n {
        loop {
            let p = c.publish(channel, json!({"from": from, "n": i})).await;
            if p["op"] == "published" {
                ids.push(p["id"].as_u64().unwrap());
                break;
            }
            assert_retryable_overloaded(&p);
            tokio::time::sleep(Duration::from_secs(p["retry_after"].as_u64().unwrap())).await;
        }
    }
    ids
}

#[tokio::test]
async fn two_nodes_publishing_to_one_channel_give_every_subscriber_the_same_contiguous_ids() {
    let nats = NatsCluster::start3();
    let a = TestServer::start(&node_config(&nats, "rb-a"));
    let b = TestServer::start(&node_config(&nats, "rb-b"));
    for s in [&a, &b] {
        health_until(s, &token("ops", "venue", "admin", &[]), |h| {
            h["cluster"]["ready"] == true
        })
        .await;
    }
    let coord = token("coord", "venue", "coordinator", &["w-1"]);
    let mut pub_a = Raw::connect(&a.url(), &coord).await.unwrap();
    assert_eq!(pub_a.create(CH, Some("w-1")).await["op"], "created");
    let mut pub_b = Raw::connect(&b.url(), &coord).await.unwrap();
    subscribe_when_known(&mut pub_b, CH).await;
    pub_a.subscribe(CH).await;
    // A subscriber on each node.
    let mut subs = Vec::new();
    for (s, who) in [(&a, "florist"), (&b, "photographer")] {
        let t = token(who, "vendors", who, &["w-1"]);
        let mut c = Raw::connect(&s.url(), &t).await.unwrap();
        assert_eq!(subscribe_when_known(&mut c, CH).await["op"], "subscribed");
        subs.push(c);
    }

    const N: usize = 40;
    let (ids_a, ids_b) = tokio::join!(
        publish_all(&mut pub_a, CH, "a", N),
        publish_all(&mut pub_b, CH, "b", N)
    );
    // Each publisher's own ids increase; together they are exactly 1..=2N.
    assert!(ids_a.windows(2).all(|w| w[0] < w[1]), "{ids_a:?}");
    assert!(ids_b.windows(2).all(|w| w[0] < w[1]), "{ids_b:?}");
    let mut all: Vec<u64> = ids_a.iter().chain(&ids_b).copied().collect();
    all.sort();
    assert_eq!(all, (1..=2 * N as u64).collect::<Vec<_>>());

    // Every subscriber, on either node, sees the same messages under the same ids, in order.
    let mut seen = Vec::new();
    for c in subs.iter_mut().chain([&mut pub_a, &mut pub_b]) {
        let got: Vec<(u64, String)> = c
            .messages(CH, 2 * N)
            .await
            .iter()
            .map(|m| (m["id"].as_u64().unwrap(), m["payload"].to_string()))
            .collect();
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=2 * N as u64).collect::<Vec<_>>());
        seen.push(got);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "the nodes disagree");
    // What each publisher was answered is what everyone saw.
    for (ids, from) in [(&ids_a, "a"), (&ids_b, "b")] {
        for (i, id) in ids.iter().enumerate() {
            let p = &seen[0][*id as usize - 1].1;
            let want = json!({"from": from, "n": i}).to_string();
            assert_eq!(p, &want, "message {id}");
        }
    }
}

#[tokio::test]
async fn an_idempotency_key_repeated_on_another_node_gets_the_first_id_and_no_second_message() {
    let nats = NatsCluster::start3();
    let a = TestServer::start(&node_config(&nats, "rb-a"));
    let b = TestServer::start(&node_config(&nats, "rb-b"));
    for s in [&a, &b] {
        health_until(s, &token("ops", "venue", "admin", &[]), |h| {
            h["cluster"]["ready"] == true
        })
        .await;
    }
    let coord = token("coord", "venue", "coordinator", &["w-1"]);
    let mut on_a = Raw::connect(&a.url(), &coord).await.unwrap();
    assert_eq!(on_a.create(CH, Some("w-1")).await["op"], "created");
    on_a.subscribe(CH).await;
    let mut on_b = Raw::connect(&b.url(), &coord).await.unwrap();
    subscribe_when_known(&mut on_b, CH).await;
    assert_eq!(on_a.publish(CH, json!({"n": 0})).await["id"], 1);
    let req = json!({"op": "publish", "channel": CH, "type": "general",
        "payload": {"n": 1}, "idempotency_key": "k-1"});
    let first = on_a.request(req.clone()).await;
    assert_eq!(first["op"], "published", "{first}");
    assert_eq!(first["id"], 2, "{first}");
    // The same key at once on the other node (its copy of the channel may not have the
    // message yet: JetStream's de-duplication answers), and again later.
    let again = on_b.request(req.clone()).await;
    assert_eq!(again["op"], "published", "{again}");
    assert_eq!(again["id"], first["id"], "{again}");
    let p = on_b.publish(CH, json!({"n": 2})).await;
    assert_eq!(
        p["id"],
        first["id"].as_u64().unwrap() + 1,
        "no second message: {p}"
    );
    for c in [&mut on_a, &mut on_b] {
        let got: Vec<(u64, Value)> = c
            .messages(CH, 3)
            .await
            .iter()
            .map(|m| (m["id"].as_u64().unwrap(), m["payload"].clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, json!({"n": 0})),
                (2, json!({"n": 1})),
                (3, json!({"n": 2}))
            ]
        );
    }
    let later = on_b.request(req).await;
    assert_eq!(later["id"], first["id"], "{later}");
}

/// One publish over the raw socket: the reply, or `None` when the connection ended first.
async fn try_publish(c: &mut Raw, r: &str, n: usize) -> Option<Value> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let req =
        json!({"op": "publish", "channel": CH, "type": "general", "payload": {"n": n}, "ref": r});
    c.ws.send(Message::Text(req.to_string().into()))
        .await
        .ok()?;
    loop {
        match tokio::time::timeout(WAIT, c.ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["ref"] == r {
                    return Some(v);
                }
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_node_killed_during_publishes_loses_nothing_acknowledged_and_its_subscriber_resumes_on_another(
) {
    let nats = NatsCluster::start3();
    let a = TestServer::start(&node_config(&nats, "rb-a"));
    let b = TestServer::start(&node_config(&nats, "rb-b"));
    for s in [&a, &b] {
        health_until(s, &token("ops", "venue", "admin", &[]), |h| {
            h["cluster"]["ready"] == true
        })
        .await;
    }
    let coord = token("coord", "venue", "coordinator", &["w-1"]);
    let mut pub_a = Raw::connect(&a.url(), &coord).await.unwrap();
    assert_eq!(pub_a.create(CH, Some("w-1")).await["op"], "created");
    // Sarah follows the channel on node A.
    let sarah = token("sarah", "vendors", "photographer", &["w-1"]);
    let mut s = Raw::connect(&a.url(), &sarah).await.unwrap();
    let sub = s.subscribe(CH).await;
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    let mut pub_b = Raw::connect(&b.url(), &coord).await.unwrap();
    subscribe_when_known(&mut pub_b, CH).await;

    // Both nodes publish; node A is killed (SIGKILL) once Sarah has seen 10 messages.
    // Each acknowledged publish: (id, its payload).
    let acked_b = tokio::spawn(async move {
        let mut acked = Vec::new();
        for n in 0..60 {
            let payload = json!({"b": n});
            loop {
                let p = pub_b.publish(CH, payload.clone()).await;
                if p["op"] == "published" {
                    acked.push((p["id"].as_u64().unwrap(), payload.to_string()));
                    break;
                }
                assert_retryable_overloaded(&p);
            }
        }
        acked
    });
    let acked_a = tokio::spawn(async move {
        let mut acked = Vec::new();
        for n in 0.. {
            match try_publish(&mut pub_a, &format!("a{n}"), n).await {
                Some(p) if p["op"] == "published" => {
                    acked.push((p["id"].as_u64().unwrap(), json!({"n": n}).to_string()))
                }
                Some(p) => assert_retryable_overloaded(&p),
                None => break,
            }
        }
        acked
    });
    let entry = |m: &Value| (m["id"].as_u64().unwrap(), m["payload"].to_string());
    let mut seen: Vec<(u64, String)> = Vec::new();
    while seen.len() < 10 {
        seen.push(entry(&s.messages(CH, 1).await[0]));
    }
    drop(a); // kill -9
             // Whatever was already on its way to Sarah before the kill.
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(200), {
        use futures_util::StreamExt;
        s.ws.next()
    })
    .await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["op"] == "message" {
                seen.push(entry(&v));
            }
        }
    }
    let acked_a = acked_a.await.unwrap();
    let acked_b = acked_b.await.unwrap();
    let last = acked_a
        .iter()
        .chain(&acked_b)
        .map(|(id, _)| *id)
        .max()
        .unwrap();

    // Her library moves to node B and resumes from the last id she saw.
    let mut s = Raw::connect(&b.url(), &sarah).await.unwrap();
    let r = s
        .request(json!({"op": "subscribe", "channel": CH,
            "last_seen_id": seen.last().unwrap().0, "epoch": epoch}))
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    assert_eq!(r["recovered"], true, "{r}");
    seen.extend(r["messages"].as_array().unwrap().iter().map(entry));
    while seen.last().map(|e| e.0) < Some(last) {
        seen.push(entry(&s.messages(CH, 1).await[0]));
    }
    // Nothing twice, nothing missing, in order; every acknowledged publish among them
    // under the id its publisher was given.
    let ids: Vec<u64> = seen.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=last).collect::<Vec<_>>());
    assert!(
        acked_a.len() >= 3,
        "node A acknowledged publishes before the kill: {acked_a:?}"
    );
    for a in acked_a.iter().chain(&acked_b) {
        assert!(seen.contains(a), "acknowledged {a:?} lost");
    }
    let mut payloads: Vec<&String> = seen.iter().map(|e| &e.1).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), seen.len(), "a message twice");
}

/// Reads client events until `f` returns `Some`, all within 15 s.
async fn until<T>(
    events: &mut ringbearer_client::Events,
    mut f: impl FnMut(ringbearer_client::Event) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            if let Some(t) = f(events.next().await.expect("events ended")) {
                return t;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .expect("the awaited event in time")
}

/// The README's first real use across two nodes (issue 14 "done when"): Sarah's app (the
/// Rust client, given both nodes) on node A, Mike on node B; `kill -9` of node A moves
/// Sarah to node B with her messages — including the one she published on node A.
#[tokio::test]
async fn sarah_on_node_a_and_mike_on_node_b_then_node_a_dies_and_sarah_moves_with_her_messages() {
    use ringbearer_client::{Client, ClientConfig, Event, Publish, SubscribeOptions};
    let nats = NatsCluster::start3();
    let a = TestServer::start(&node_config(&nats, "rb-a"));
    let b = TestServer::start(&node_config(&nats, "rb-b"));
    for s in [&a, &b] {
        health_until(s, &token("ops", "venue", "admin", &[]), |h| {
            h["cluster"]["ready"] == true
        })
        .await;
    }
    let cfg = ClientConfig {
        backoff: ringbearer_client::Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            ..Default::default()
        },
        ..ClientConfig::new(a.url(), token("sarah", "couple-1", "couple", &["w-1"]))
            .with_failover([b.url()])
    };
    let (sarah, mut events) = Client::connect(cfg).await.unwrap();
    assert_eq!(sarah.server_url(), a.url());
    let create = ringbearer_client::CreateChannel {
        wedding_id: Some("w-1".into()),
        ..ringbearer_client::CreateChannel::new(CH)
    };
    sarah.create(&create).await.unwrap();
    sarah
        .subscribe(CH, SubscribeOptions::default())
        .await
        .unwrap();
    let mut mike = Raw::connect(&b.url(), &token("mike", "studio", "photographer", &["w-1"]))
        .await
        .unwrap();
    assert_eq!(
        subscribe_when_known(&mut mike, CH).await["op"],
        "subscribed"
    );

    let mut got: Vec<(u64, String)> = Vec::new();
    let take = |ev: Event, got: &mut Vec<(u64, String)>| {
        if let Event::Message(m) = ev {
            got.push((m.id, m.payload.to_string()));
        }
    };
    assert_eq!(
        mike.publish(CH, json!({"from": "mike", "n": 1})).await["id"],
        1
    );
    let mine = sarah
        .publish(&Publish::new(CH, "general", json!({"from": "sarah"})))
        .await
        .unwrap();
    assert_eq!(mine.id, 2);
    until(&mut events, |ev| {
        take(ev, &mut got);
        (got.len() >= 2).then_some(())
    })
    .await;

    drop(a); // kill -9 of node A
    for n in 3..=5 {
        assert_eq!(
            mike.publish(CH, json!({"from": "mike", "n": n})).await["id"],
            n
        );
    }
    let mut recovered = None;
    until(&mut events, |ev| {
        if let Event::Resubscribed { recovered: r, .. } = &ev {
            recovered = Some(*r);
        }
        take(ev, &mut got);
        (recovered.is_some() && got.len() >= 5).then_some(())
    })
    .await;
    assert_eq!(recovered, Some(true));
    assert_eq!(sarah.server_url(), b.url());
    let ids: Vec<u64> = got.iter().map(|m| m.0).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5], "every message once, in order");
    // Her own message is there on node B, as Mike sees it too.
    let on_b = mike.messages(CH, 5).await;
    assert_eq!(on_b[1]["payload"], json!({"from": "sarah"}));
    assert_eq!(got[1].1, json!({"from": "sarah"}).to_string());
    sarah.close().await;
}

#[tokio::test]
async fn one_nats_server_killed_the_r3_stream_keeps_serving_in_order() {
    let mut nats = NatsCluster::start3();
    let a = TestServer::start(&node_config(&nats, "rb-a"));
    let b = TestServer::start(&node_config(&nats, "rb-b"));
    for s in [&a, &b] {
        health_until(s, &token("ops", "venue", "admin", &[]), |h| {
            h["cluster"]["ready"] == true
        })
        .await;
    }
    let coord = token("coord", "venue", "coordinator", &["w-1"]);
    let mut pub_a = Raw::connect(&a.url(), &coord).await.unwrap();
    assert_eq!(pub_a.create(CH, Some("w-1")).await["op"], "created");
    pub_a.subscribe(CH).await;
    let mut on_b = Raw::connect(&b.url(), &coord).await.unwrap();
    subscribe_when_known(&mut on_b, CH).await;
    let before = publish_all(&mut pub_a, CH, "a", 10).await;
    assert_eq!(before, (1..=10).collect::<Vec<_>>());
    // SIGKILL of the server node A's bridge is connected to (or any: all are tried).
    let server = health(&a, &coord).await["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_owned();
    let i = server[1..].parse::<usize>().unwrap() - 1;
    nats.kill_node(i);
    // Publishes go on (a few may be refused retryable while the client reconnects and
    // the stream elects a leader, and are retried).
    let after = publish_all(&mut pub_a, CH, "a", 10).await;
    assert_eq!(after, (11..=20).collect::<Vec<_>>());
    let ids: Vec<u64> = on_b
        .messages(CH, 20)
        .await
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
}
