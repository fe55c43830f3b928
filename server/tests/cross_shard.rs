//! Cross-shard routing (ARCHITECTURE "Flow of one message"): with 2 shards, a publish from a
//! connection on one shard reaches subscribers on the other, whichever shard owns the
//! channel, and presence and typing cross shards too.

mod common;
use common::*;
use serde_json::json;

/// A channel name owned by `shard` (of 2).
fn owned_by(shard: usize, tag: &str) -> String {
    (0..1000)
        .map(|i| format!("wedding:{tag}:w-1-{i}"))
        .find(|n| owner(n, 2) == shard)
        .unwrap()
}

#[tokio::test]
async fn publish_on_one_shard_is_delivered_on_the_other() {
    let server = TestServer::start("");
    let mut coord = server
        .connect(&server.token("coord", "venue", "coordinator", &["w-1"]))
        .await;
    let probe = "wedding:probe:w-1";
    assert_eq!(coord.create(probe, Some("w-1")).await["op"], "created");
    let chans = [owned_by(0, "owned0"), owned_by(1, "owned1")];
    for c in &chans {
        assert_eq!(coord.create(c, Some("w-1")).await["op"], "created");
    }

    // SO_REUSEPORT spreads connections over the shards' listeners by the 4-tuple's hash;
    // open connections until one sits on each shard (each try is a coin flip).
    let mut on: [Option<(Raw, String)>; 2] = [None, None];
    for i in 0..64 {
        let user = format!("u-{i}");
        let mut c = server
            .connect(&server.token(&user, "venue", "photographer", &["w-1"]))
            .await;
        let sub = c.subscribe(probe).await;
        let shard = Raw::shard_of(&sub, &user) as usize;
        if on[shard].is_none() {
            on[shard] = Some((c, user));
        }
        if on.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some((mut a, _)), Some((mut b, b_user))] = on else {
        panic!("64 connections all landed on one shard")
    };

    for (k, c) in chans.iter().enumerate() {
        assert_eq!(a.subscribe(c).await["op"], "subscribed");
        assert_eq!(b.subscribe(c).await["op"], "subscribed");
        // Shard 0 publishes, shard 1 receives, and the other way round.
        for n in 0..3 {
            let p = a.publish(c, json!({"from": "a", "n": n})).await;
            assert_eq!(p["delivered_count"], 2, "{p}");
            let q = b.publish(c, json!({"from": "b", "n": n})).await;
            assert_eq!(q["delivered_count"], 2, "{q}");
        }
        for conn in [&mut a, &mut b] {
            let got = conn.messages(c, 6).await;
            let ids: Vec<u64> = got.iter().map(|m| m["id"].as_u64().unwrap()).collect();
            assert_eq!(
                ids,
                vec![1, 2, 3, 4, 5, 6],
                "channel {k}: in id order on both shards"
            );
        }
        // Typing crosses shards and is not echoed to the typist.
        let r = b.request(json!({"op": "typing", "channel": c})).await;
        assert_eq!(r["op"], "ok");
        let t = a
            .wait_for(|v| v["op"] == "typing" && v["channel"] == c.as_str())
            .await;
        assert_eq!(t["user_id"], b_user.as_str());
        // Presence meta crosses shards as a diff.
        let r = b
            .request(json!({"op": "presence", "channel": c, "meta": {"activity": "ceremony"}}))
            .await;
        assert_eq!(r["op"], "ok", "{r}");
        // (Coalesced: the same diff may also carry joins not announced yet.)
        let d = a
            .wait_for(|v| {
                v["op"] == "presence_diff"
                    && v["channel"] == c.as_str()
                    && v["joins"]
                        .as_array()
                        .is_some_and(|j| j.iter().any(|e| e["meta"]["activity"] == "ceremony"))
            })
            .await;
        let joined = d["joins"].as_array().unwrap();
        let e = joined
            .iter()
            .find(|e| e["meta"]["activity"] == "ceremony")
            .unwrap();
        assert_eq!(e["user_id"], b_user.as_str());
        assert_eq!(d["total"], 2, "{d}");
    }

    // Targeted delivery: only the target user's connection gets it, across shards.
    let c = &chans[0];
    let p = a.request(json!({"op": "publish", "channel": c, "type": "payment", "payload": {"due": 1}, "target_user_id": b_user})).await;
    assert_eq!(p["delivered_count"], 1, "{p}");
    let m = b.messages(c, 1).await;
    assert_eq!(m[0]["target_user_id"], b_user.as_str());
    assert_eq!(a.request(json!({"op": "ping"})).await["op"], "pong");
    assert!(
        a.backlog
            .iter()
            .all(|v| !(v["op"] == "message" && v["id"] == 7)),
        "{:?}",
        a.backlog
    );

    // Disconnecting on one shard leaves presence as seen from the other.
    drop(b);
    let left = a
        .wait_for(|v| {
            v["op"] == "presence_diff"
                && v["channel"] == c.as_str()
                && v["leaves"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|e| e["user_id"] == b_user.as_str()))
        })
        .await;
    assert_eq!(left["joins"], json!([]));
}
