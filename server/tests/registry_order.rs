//! Proves a subscription the client was told about survives a restart even when it raced
//! its channel's creation (issue 10 #4): `subscribe` sent right behind `create` on the same
//! connection (before `created` came back), and `subscribe` from other connections right
//! after `created`. Messages published while the subscribers are away are delivered after
//! the restart from the cursor the server kept (the registry's subscription rows), and the
//! per-organization channel count survives the restart too (issue 10 #5).

mod common;
use common::*;
use serde_json::{json, Value};

/// Resubscribes without `last_seen_id`: with one, the kept window alone would answer and
/// the test could not tell whether the server kept the subscription. Without it, only the
/// stored cursor (a registry row) says what this user is owed.
async fn owed_ids(c: &mut Raw, channel: &str) -> Vec<u64> {
    let r = c
        .request(json!({"op": "subscribe", "channel": channel}))
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    message_ids(&r)
}

#[tokio::test]
async fn a_subscription_racing_its_channel_creation_survives_a_restart() {
    let mut server = TestServer::start("");
    let planner = server.token("planner", "venue", "coordinator", &[]);
    let florist = server.token("florist", "venue", "florist", &[]);
    let boss = server.token("boss", "venue", "admin", &[]);

    // 1. Same connection, back to back: four channels (both owner shards), each `create`
    //    immediately followed by `subscribe`, nothing awaited in between.
    let raced: Vec<String> = (0..4).map(|i| format!("venue:ops:raced-{i}")).collect();
    assert!(raced.iter().any(|c| owner(c, 2) == 0) && raced.iter().any(|c| owner(c, 2) == 1));
    let mut p = server.connect(&planner).await;
    for (i, name) in raced.iter().enumerate() {
        p.send(json!({"op": "create", "name": name, "ref": format!("c{i}")}))
            .await;
        p.send(json!({"op": "subscribe", "channel": name, "ref": format!("s{i}")}))
            .await;
    }
    for i in 0..raced.len() {
        let c = p.wait_for(|v| v["ref"] == format!("c{i}")).await;
        assert_eq!(c["op"], "created", "{c}");
        let s = p.wait_for(|v| v["ref"] == format!("s{i}")).await;
        assert_eq!(s["op"], "subscribed", "{s}");
    }

    // 2. Across connections (and shards): created on one, subscribed on another as soon
    //    as `created` arrives.
    let crossed: Vec<String> = (0..2)
        .map(|i| format!("venue:flowers:crossed-{i}"))
        .collect();
    let mut f = server.connect(&florist).await;
    for name in &crossed {
        let c = p.create(name, None).await;
        assert_eq!(c["op"], "created", "{c}");
        let s = f.subscribe(name).await;
        assert_eq!(s["op"], "subscribed", "{s}");
    }
    drop((p, f));

    // Published while both subscribers are away.
    let mut b = server.connect(&boss).await;
    for name in raced.iter().chain(&crossed) {
        for n in 1..=3 {
            let r = b.publish(name, json!({"n": n})).await;
            assert_eq!(r["id"], n, "{r}");
        }
    }
    drop(b);

    // A graceful stop drains the registry's queue, so nothing here depends on timing: a
    // row that is missing after the restart was never going to be written.
    server.stop();
    server.kill_and_restart();

    let mut p = server.connect(&planner).await;
    for name in &raced {
        assert_eq!(owed_ids(&mut p, name).await, [1, 2, 3], "{name}");
    }
    let mut f = server.connect(&florist).await;
    for name in &crossed {
        assert_eq!(owed_ids(&mut f, name).await, [1, 2, 3], "{name}");
    }
}

#[tokio::test]
async fn the_channels_per_org_tier_limit_survives_a_restart() {
    let mut server = TestServer::start("");
    let admin = server.token_tier("owner", "tiny-studio", "admin", "free", &[]);
    let mut c = server.connect(&admin).await;
    for i in 0..3 {
        let r = c.create(&format!("supplier:dashboard:s-{i}"), None).await;
        assert_eq!(r["op"], "created", "{r}");
    }
    let r: Value = c.create("supplier:dashboard:s-3", None).await;
    assert_error(&r, "WS_TIER_LIMIT");
    drop(c);

    server.kill_and_restart();

    let mut c = server.connect(&admin).await;
    let r = c.create("supplier:dashboard:s-4", None).await;
    assert_error(&r, "WS_TIER_LIMIT");
    // The three it has are still its own (a create of an existing name answers it).
    let r = c.create("supplier:dashboard:s-0", None).await;
    assert_eq!(r["op"], "created", "{r}");
}
