//! Presence (SPEC §3, docs/protocol.md "Presence"): changes are coalesced per channel into
//! one `presence_diff` per flush interval; no presence frame carries more than
//! `presence_list_max` entries, and `subscribed` says the total; and whatever a subscriber
//! was handed on subscribe, with every later diff (or `presence_state`) applied, ends equal
//! to the channel's presence.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const CH: &str = "wedding:guests:w-9";

async fn connect(server: &TestServer, user: &str) -> Raw {
    server
        .connect(&server.token(user, "venue", "guest", &["w-9"]))
        .await
}

async fn setup(server: &TestServer) {
    let mut coord = server
        .connect(&server.token("coord", "venue", "coordinator", &["w-9"]))
        .await;
    assert_eq!(coord.create(CH, Some("w-9")).await["op"], "created");
}

fn is_presence(v: &Value) -> bool {
    (v["op"] == "presence_diff" || v["op"] == "presence_state") && v["channel"] == CH
}

/// Many joins within one interval reach a watcher as one diff, not one each. The interval
/// is 2 s so twenty subscribes fit in at most two of them, however busy the host.
#[tokio::test]
async fn many_joins_make_one_coalesced_diff() {
    let server = TestServer::start("[io]\npresence_flush_interval_ms = 2000\n");
    setup(&server).await;
    let mut watcher = connect(&server, "watcher").await;
    assert_eq!(watcher.subscribe(CH).await["op"], "subscribed");
    let mut joiners = Vec::new();
    for i in 0..20 {
        let mut c = connect(&server, &format!("j{i}")).await;
        assert_eq!(c.subscribe(CH).await["op"], "subscribed");
        joiners.push(c);
    }
    let mut seen = std::collections::HashSet::new();
    let mut diffs = 0;
    while seen.len() < 20 {
        let d = watcher.wait_for(is_presence).await;
        assert_eq!(d["op"], "presence_diff", "{d}");
        diffs += 1;
        for j in d["joins"].as_array().unwrap() {
            let user = j["user_id"].as_str().unwrap();
            if user.starts_with('j') {
                seen.insert(user.to_owned());
            }
        }
    }
    assert!(diffs <= 2, "20 joins in {diffs} diffs");
    // A repeat subscribe counts everyone: the watcher and the twenty.
    assert_eq!(watcher.subscribe(CH).await["presence_total"], 21);
}

/// A subscriber's view: the list handed on subscribe, then diffs and states applied.
struct View {
    raw: Raw,
    list: BTreeMap<String, Value>,
    total: u64,
}

impl View {
    async fn subscribe(mut raw: Raw, max: usize) -> View {
        let s = raw.subscribe(CH).await;
        assert_eq!(s["op"], "subscribed", "{s}");
        let list = s["presence"].as_array().unwrap();
        assert!(list.len() <= max, "subscribed list cut at {max}: {s}");
        View {
            list: keyed(list),
            total: s["presence_total"].as_u64().unwrap(),
            raw,
        }
    }

    /// Applies presence frames until `done` holds for the view.
    async fn follow(&mut self, max: usize, done: impl Fn(&View) -> bool) {
        while !done(self) {
            let v = self.raw.wait_for(is_presence).await;
            if v["op"] == "presence_state" {
                let list = v["presence"].as_array().unwrap();
                assert!(list.len() <= max, "{v}");
                self.list = keyed(list);
            } else {
                let joins = v["joins"].as_array().unwrap();
                let leaves = v["leaves"].as_array().unwrap();
                assert!(
                    joins.len() + leaves.len() <= max,
                    "diff within the cap: {v}"
                );
                for l in leaves {
                    self.list.remove(l["connection_id"].as_str().unwrap());
                }
                for j in joins {
                    self.list
                        .insert(j["connection_id"].as_str().unwrap().to_owned(), j.clone());
                }
            }
            self.total = v["total"].as_u64().unwrap();
        }
    }
}

async fn meta(m: &mut Raw, n: u32) {
    let r = m
        .request(json!({"op": "presence", "channel": CH, "meta": {"n": n}}))
        .await;
    assert_eq!(r["op"], "ok", "{r}");
}

fn keyed(list: &[Value]) -> BTreeMap<String, Value> {
    list.iter()
        .map(|e| (e["connection_id"].as_str().unwrap().to_owned(), e.clone()))
        .collect()
}

/// Joins, leaves, meta updates and disconnects, with subscribers arriving in between and
/// a cap of 5 on a channel of up to ~17: every frame stays within the cap, and every
/// subscriber ends with exactly the channel's window and total.
#[tokio::test]
async fn state_plus_later_diffs_is_the_truth_and_the_cap_holds() {
    const MAX: usize = 5;
    let server = TestServer::start(&format!("[limits]\npresence_list_max = {MAX}\n"));
    setup(&server).await;
    // The marker joins first, so it stays in everyone's window; its last meta update is
    // the signal that every earlier change has been announced.
    let mut marker = connect(&server, "marker").await;
    assert_eq!(marker.subscribe(CH).await["op"], "subscribed");
    let mut views = vec![View::subscribe(connect(&server, "o0").await, MAX).await];
    let mut members = Vec::new();
    for i in 0..12 {
        let mut c = connect(&server, &format!("m{i}")).await;
        assert_eq!(c.subscribe(CH).await["op"], "subscribed");
        members.push(c);
        if i == 6 {
            views.push(View::subscribe(connect(&server, "o1").await, MAX).await);
        }
    }
    members[2]
        .request(json!({"op": "unsubscribe", "channel": CH}))
        .await;
    meta(&mut members[0], 1).await;
    meta(&mut members[9], 1).await;
    views.push(View::subscribe(connect(&server, "o2").await, MAX).await);
    members[7]
        .request(json!({"op": "unsubscribe", "channel": CH}))
        .await;
    meta(&mut members[3], 2).await;
    drop(members.remove(4));
    // Its leave is noticed asynchronously: wait until announced (15 after the joins, 14
    // after m2 left, 15 with o2, 14 after m7 left, 13 without m4: never 13 before).
    views[0].follow(MAX, |v| v.total == 13).await;
    assert_eq!(members[1].subscribe(CH).await["op"], "subscribed", "repeat");
    views.push(View::subscribe(connect(&server, "o3").await, MAX).await);
    members[1]
        .request(json!({"op": "unsubscribe", "channel": CH}))
        .await;
    meta(&mut members[0], 3).await;
    // Nothing changes after this but the marker's meta.
    let r = marker
        .request(json!({"op": "presence", "channel": CH, "meta": {"done": true}}))
        .await;
    assert_eq!(r["op"], "ok");
    for v in &mut views {
        v.follow(MAX, |v| {
            v.list
                .values()
                .any(|e| e["user_id"] == "marker" && e["meta"]["done"] == true)
        })
        .await;
    }
    // The truth: a late subscriber's list and total, without its own entry (it joins
    // last, so the window before it is its list minus itself).
    let mut late = connect(&server, "late").await;
    let s = late.subscribe(CH).await;
    let mut truth = keyed(s["presence"].as_array().unwrap());
    truth.retain(|_, e| e["user_id"] != "late");
    let total = s["presence_total"].as_u64().unwrap() - 1;
    // marker, o0..o3, m0, m3, m5, m6, m8, m9, m10, m11 (m1, m2, m7 left; m4 dropped).
    assert_eq!(total, 13);
    assert_eq!(truth.len(), MAX);
    for (i, v) in views.iter().enumerate() {
        assert_eq!(v.list, truth, "observer o{i}");
        assert_eq!(v.total, total, "observer o{i}");
    }
}
