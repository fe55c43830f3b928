//! Shared state without lost updates (issue 16 item 4, docs/decisions.md §31) over real
//! sockets against the real binary: compare-and-set writes on a version where two
//! concurrent writers never both win and the loser is told the current value; atomic
//! patches; role precedence (a couple's stale write overrides a vendor's, who is told live
//! and in the stored change; a guest's is refused); documents that survive a crash and a
//! retention round that reclaimed the messages that wrote them; another organization's
//! user with the same id reaching nothing (refusals audited); bad input refused with its
//! SPEC code, changing nothing; writes taking the publish rates (wedding days included); a
//! channel's documents bounded so its checkpoint stays one log record; the REST door with the
//! same rules; and the Rust client.

mod common;
use common::*;
use serde_json::{json, Value};

const CH: &str = "wedding:plan:w-1";

fn set(doc: &str, version: u64, value: Value) -> Value {
    json!({"op": "state_set", "channel": CH, "doc": doc, "version": version, "value": value})
}

fn patch(doc: &str, version: u64, fields: Value) -> Value {
    json!({"op": "state_patch", "channel": CH, "doc": doc, "version": version, "fields": fields})
}

fn get(doc: &str) -> Value {
    json!({"op": "state_get", "channel": CH, "doc": doc})
}

/// A wedding channel of org-1 whose write list includes guests (the default shared
/// channel's does not), created by org-1's coordinator.
async fn channel(server: &TestServer) -> Raw {
    let mut coord = server
        .connect(&server.token("coord", "org-1", "coordinator", &["w-1"]))
        .await;
    let r = coord
        .request(json!({"op": "create", "name": CH, "wedding_id": "w-1",
            "permissions": {"write": ["couple", "coordinator", "photographer", "venue", "guest"]}}))
        .await;
    assert_eq!(r["op"], "created", "{r}");
    coord
}

async fn as_user(server: &TestServer, sub: &str, org: &str, role: &str) -> Raw {
    server
        .connect(&server.token(sub, org, role, &["w-1"]))
        .await
}

/// The `state` messages a fresh reader finds in the channel's history.
async fn history(server: &TestServer) -> Vec<Value> {
    let mut r = as_user(server, "historian", "org-1", "coordinator").await;
    let s = r
        .request(json!({"op": "subscribe", "channel": CH, "include_history": true}))
        .await;
    assert_eq!(s["op"], "subscribed", "{s}");
    s["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "state")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sets_on_one_version_one_wins_and_the_other_is_told() {
    let server = TestServer::start("");
    let mut coord = channel(&server).await;
    let s = coord.subscribe(CH).await;
    assert_eq!(s["op"], "subscribed");
    let r = coord.request(get("timeline")).await;
    assert_eq!(
        (r["op"].clone(), r["version"].clone(), r["value"].clone()),
        (json!("state"), json!(0), Value::Null),
        "never written: {r}"
    );
    // Equal ranks (two coordinators, on both shards' connections): sent together, neither
    // waiting for the other's answer.
    let mut a = as_user(&server, "u-1", "org-1", "coordinator").await;
    let mut b = as_user(&server, "u-2", "org-1", "coordinator").await;
    let mut ra = set("timeline", 0, json!({"by": "a"}));
    ra["ref"] = json!("a");
    let mut rb = set("timeline", 0, json!({"by": "b"}));
    rb["ref"] = json!("b");
    a.send(ra).await;
    b.send(rb).await;
    let ra = a.wait_for(|v| v["ref"] == "a").await;
    let rb = b.wait_for(|v| v["ref"] == "b").await;
    let (won, lost, loser_value) = match (ra["op"].as_str(), rb["op"].as_str()) {
        (Some("state_ok"), Some("state_conflict")) => (ra, rb, json!({"by": "b"})),
        (Some("state_conflict"), Some("state_ok")) => (rb, ra, json!({"by": "a"})),
        _ => panic!("exactly one wins: {ra} / {rb}"),
    };
    assert_eq!(won["version"], 1, "{won}");
    // The loser is told what it lost to: the current value, version and writer.
    assert_eq!(lost["version"], 1, "{lost}");
    assert_eq!(lost["your_version"], 0, "{lost}");
    let winner_value = if loser_value["by"] == "a" {
        json!({"by": "b"})
    } else {
        json!({"by": "a"})
    };
    assert_eq!(lost["value"], winner_value, "{lost}");
    assert_eq!(lost["writer"]["role"], "coordinator", "{lost}");
    // Subscribers hear exactly one change, as a message with the new version.
    let m = coord.messages(CH, 1).await;
    assert_eq!(m[0]["type"], "state");
    assert_eq!(m[0]["event"], "state:timeline");
    assert_eq!(m[0]["payload"]["version"], 1);
    assert_eq!(m[0]["payload"]["value"], winner_value);
    // Nothing is lost: the loser re-bases on the version it was told and wins.
    let loser = if won["ref"] == "a" { &mut b } else { &mut a };
    let again = loser.request(set("timeline", 1, loser_value.clone())).await;
    assert_eq!(again["op"], "state_ok", "{again}");
    assert_eq!(again["version"], 2);
    let r = coord.request(get("timeline")).await;
    assert_eq!(
        (r["version"].clone(), r["value"].clone()),
        (json!(2), loser_value)
    );
    let h = history(&server).await;
    assert_eq!(h.len(), 2, "both writes are in the log: {h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_of_a_couple_and_a_vendor_end_with_the_couples() {
    let server = TestServer::start("");
    let _coord = channel(&server).await;
    let mut couple = as_user(&server, "u-1", "org-1", "couple").await;
    let mut vendor = as_user(&server, "u-2", "org-1", "photographer").await;
    // The vendor is subscribed, so it hears of an override live.
    assert_eq!(vendor.subscribe(CH).await["op"], "subscribed");
    let mut rc = set("shots", 0, json!({"list": ["rings"]}));
    rc["ref"] = json!("c");
    let mut rv = set("shots", 0, json!({"list": ["cake"]}));
    rv["ref"] = json!("v");
    vendor.send(rv).await;
    couple.send(rc).await;
    let rv = vendor.wait_for(|v| v["ref"] == "v").await;
    let rc = couple.wait_for(|v| v["ref"] == "c").await;
    assert_eq!(rc["op"], "state_ok", "the couple wins either way: {rc}");
    match rv["op"].as_str() {
        // The vendor's landed first: the couple's stale write overrode it, and the vendor
        // is told on its subscribed connection.
        Some("state_ok") => {
            assert_eq!(rc["version"], 2, "{rc}");
            assert_eq!(rc["overrode"]["user_id"], "u-2", "{rc}");
            let told = vendor.wait_for(|v| v["op"] == "state_overridden").await;
            assert_eq!(told["your_version"], 1, "{told}");
            assert_eq!(told["by"]["role"], "couple", "{told}");
        }
        // The couple's landed first: the vendor's is refused with it.
        Some("state_conflict") => {
            assert_eq!(rv["value"], json!({"list": ["rings"]}), "{rv}");
        }
        _ => panic!("the vendor is answered: {rv}"),
    }
    let r = couple.request(get("shots")).await;
    assert_eq!(r["value"], json!({"list": ["rings"]}), "{r}");
    assert_eq!(r["writer"]["role"], "couple", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_the_couple_overrides_a_vendor_who_is_told_and_a_guest_is_refused() {
    let server = TestServer::start("");
    let _coord = channel(&server).await;
    let mut couple = as_user(&server, "u-1", "org-1", "couple").await;
    let mut vendor = as_user(&server, "u-2", "org-1", "photographer").await;
    let mut guest = as_user(&server, "u-3", "org-1", "guest").await;
    assert_eq!(vendor.subscribe(CH).await["op"], "subscribed");
    // The vendor writes version 1; the couple, who read version 0, writes on it.
    let r = vendor
        .request(set("menu", 0, json!({"starter": "soup"})))
        .await;
    assert_eq!(
        (r["op"].clone(), r["version"].clone()),
        (json!("state_ok"), json!(1))
    );
    let r = couple
        .request(set("menu", 0, json!({"starter": "salad"})))
        .await;
    assert_eq!(r["op"], "state_ok", "the couple outranks the vendor: {r}");
    assert_eq!(r["version"], 2);
    assert_eq!(
        r["overrode"],
        json!({"user_id": "u-2", "org": "org-1", "role": "photographer", "version": 1})
    );
    // Told live.
    let told = vendor.wait_for(|v| v["op"] == "state_overridden").await;
    assert_eq!(told["channel"], CH);
    assert_eq!(told["doc"], "menu");
    assert_eq!(
        (told["version"].clone(), told["your_version"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(
        told["by"],
        json!({"user_id": "u-1", "org": "org-1", "role": "couple"})
    );
    // ... and in the stored change (what an offline writer finds on resume or history).
    let m = vendor
        .wait_for(|v| v["op"] == "message" && v["payload"]["version"] == 2)
        .await;
    assert_eq!(m["payload"]["overrode"]["user_id"], "u-2", "{m}");
    // A vendor's stale write over the couple's is refused with the couple's value.
    let r = vendor
        .request(set("menu", 1, json!({"starter": "bread"})))
        .await;
    assert_eq!(r["op"], "state_conflict", "{r}");
    assert_eq!(r["value"], json!({"starter": "salad"}));
    // A guest's stale write over the couple's is refused too; on the current version it
    // is a plain compare-and-set and applies.
    let r = guest
        .request(set("menu", 0, json!({"starter": "chips"})))
        .await;
    assert_eq!(r["op"], "state_conflict", "{r}");
    assert_eq!(
        (r["version"].clone(), r["writer"]["role"].clone()),
        (json!(2), json!("couple"))
    );
    let r = couple.request(get("menu")).await;
    assert_eq!(
        r["value"],
        json!({"starter": "salad"}),
        "nothing of the refused writes: {r}"
    );
    let r = guest
        .request(patch("menu", 2, json!({"dessert": "cake"})))
        .await;
    assert_eq!(
        (r["op"].clone(), r["version"].clone()),
        (json!("state_ok"), json!(3))
    );
    // The couple's own stale write over a guest's wins, and the guest (not subscribed) is
    // told through the stored change.
    let r = couple
        .request(set("menu", 2, json!({"starter": "salad"})))
        .await;
    assert_eq!(r["overrode"]["role"], "guest", "{r}");
    let h = history(&server).await;
    let overrode: Vec<Value> = h
        .iter()
        .map(|m| m["payload"]["overrode"]["user_id"].clone())
        .collect();
    assert_eq!(
        overrode,
        [Value::Null, json!("u-2"), Value::Null, json!("u-3")],
        "{h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_is_atomic() {
    let server = TestServer::start("[limits]\nstate_max_value_bytes = 200\n");
    let mut coord = channel(&server).await;
    assert_eq!(coord.subscribe(CH).await["op"], "subscribed");
    let r = coord
        .request(set(
            "seating",
            0,
            json!({"t1": ["ann", "bob"], "t2": ["cy"], "t3": []}),
        ))
        .await;
    assert_eq!(r["version"], 1, "{r}");
    let r = coord
        .request(patch(
            "seating",
            1,
            json!({"t1": ["ann"], "t3": null, "t4": ["bob"]}),
        ))
        .await;
    assert_eq!(
        (r["op"].clone(), r["version"].clone()),
        (json!("state_ok"), json!(2)),
        "{r}"
    );
    let r = coord.request(get("seating")).await;
    assert_eq!(
        r["value"],
        json!({"t1": ["ann"], "t2": ["cy"], "t4": ["bob"]}),
        "{r}"
    );
    // One change message, naming the fields and carrying the whole new value.
    let m = coord.messages(CH, 2).await;
    assert_eq!(
        m[1]["payload"]["fields"],
        json!({"t1": ["ann"], "t3": null, "t4": ["bob"]})
    );
    assert_eq!(m[1]["payload"]["value"], r["value"]);
    // A patch that would make the document too large applies none of its fields.
    let big = "x".repeat(165); // 182 bytes as sent, 207 once applied
    let r = coord
        .request(patch("seating", 2, json!({"t1": [], "t5": big})))
        .await;
    assert_error(&r, "WS_PAYLOAD_TOO_LARGE");
    // A stale patch applies none of its fields either.
    let r = coord
        .request(patch("seating", 1, json!({"t1": [], "t9": 1})))
        .await;
    assert_eq!(r["op"], "state_conflict", "{r}");
    let r = coord.request(get("seating")).await;
    assert_eq!(r["version"], 2);
    assert_eq!(
        r["value"],
        json!({"t1": ["ann"], "t2": ["cy"], "t4": ["bob"]}),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_crash() {
    let mut server = TestServer::start("");
    let mut coord = channel(&server).await;
    let mut couple = as_user(&server, "u-1", "org-1", "couple").await;
    couple
        .request(set("timeline", 0, json!({"ceremony": "14:00"})))
        .await;
    couple
        .request(patch("timeline", 1, json!({"dinner": "18:00"})))
        .await;
    coord
        .request(set("music", 0, json!({"first_dance": "song"})))
        .await;
    drop((coord, couple));
    server.kill_and_restart();
    let mut vendor = as_user(&server, "u-2", "org-1", "venue").await;
    let r = vendor.request(get("timeline")).await;
    assert_eq!(r["version"], 2, "{r}");
    assert_eq!(r["value"], json!({"ceremony": "14:00", "dinner": "18:00"}));
    assert_eq!(
        r["writer"],
        json!({"user_id": "u-1", "org": "org-1", "role": "couple"})
    );
    assert_eq!(vendor.request(get("music")).await["version"], 1);
    // The rules hold after the restart: the vendor's stale write loses to the couple's.
    let r = vendor.request(set("timeline", 1, json!({}))).await;
    assert_eq!(r["op"], "state_conflict", "{r}");
    let r = vendor
        .request(set("timeline", 2, json!({"ceremony": "14:30"})))
        .await;
    assert_eq!(
        (r["version"].clone(), r["id"].clone()),
        (json!(3), json!(4)),
        "ids continue: {r}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_retention_reclaiming_the_messages_that_wrote_it() {
    let mut server = TestServer::start(
        "[storage]\nsegment_bytes = 16384\n[io]\nreclaim_interval_ms = 200\n[limits]\nmax_queued = 5\nchannel_messages_per_min = 1000000\n[limits.tiers.enterprise]\nmessages_per_min = 1000000\nconnections_per_user = 100\nchannels_per_org = 500\nsubscriptions_per_user = 100\n",
    );
    let token = server.token_tier("coord", "org-1", "coordinator", "enterprise", &["w-1"]);
    let mut c = server.connect(&token).await;
    assert_eq!(c.create(CH, Some("w-1")).await["op"], "created");
    let r = c
        .request(set("timeline", 0, json!({"ceremony": "14:00"})))
        .await;
    assert_eq!(r["id"], 1, "{r}");
    let filler = "f".repeat(400);
    for n in 2..=300 {
        assert_eq!(c.publish(CH, json!({"n": n, "f": filler})).await["id"], n);
    }
    let shard = owner(CH, 2);
    let deadline = std::time::Instant::now() + WAIT;
    while segments(&server, shard) > 4 {
        assert!(std::time::Instant::now() < deadline, "no segment reclaimed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(c);
    server.kill_and_restart();
    let mut c = server.connect(&token).await;
    let s = c
        .request(json!({"op": "subscribe", "channel": CH, "last_seen_id": 1}))
        .await;
    assert_eq!(
        s["recovered"], false,
        "the change itself is gone from the window: {s}"
    );
    let r = c.request(get("timeline")).await;
    assert_eq!(
        (r["version"].clone(), r["value"].clone()),
        (json!(1), json!({"ceremony": "14:00"})),
        "the document outlived its message: {r}"
    );
    let r = c
        .request(set("timeline", 1, json!({"ceremony": "15:00"})))
        .await;
    assert_eq!(
        (r["version"].clone(), r["id"].clone()),
        (json!(2), json!(301)),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organizations_user_with_the_same_id_reaches_nothing() {
    let server = TestServer::start("");
    let _coord = channel(&server).await;
    let mut mine = as_user(&server, "u-1", "org-1", "couple").await;
    assert_eq!(mine.subscribe(CH).await["op"], "subscribed");
    mine.request(set("budget", 0, json!({"total": 100}))).await;
    let _ = mine.messages(CH, 1).await;
    // org-2's u-1, without the wedding (as publish answers it), and org-2's u-1 whose token
    // names w-1 on a channel of org-1 without a wedding.
    let mut theirs = server
        .connect(&server.token("u-1", "org-2", "couple", &["w-2"]))
        .await;
    let publish = theirs.publish(CH, json!(1)).await;
    assert_eq!(publish["op"], "error");
    for req in [
        get("budget"),
        set("budget", 1, json!({"total": 0})),
        patch("budget", 1, json!({"total": 0})),
        set("budget", 0, json!({"total": 0})),
    ] {
        let r = theirs.request(req).await;
        assert_eq!(
            r["code"], publish["code"],
            "the same answer as publish: {r}"
        );
        assert_eq!(r["code"], "WS_WEDDING_ISOLATION_VIOLATION");
    }
    let org_ch = "venue:notes:v-1";
    let mut coord1 = as_user(&server, "coord", "org-1", "coordinator").await;
    assert_eq!(coord1.create(org_ch, None).await["op"], "created");
    let r = coord1
        .request(json!({"op": "state_set", "channel": org_ch, "doc": "d", "version": 0, "value": {"k": 1}}))
        .await;
    assert_eq!(r["op"], "state_ok", "{r}");
    let mut theirs_w1 = as_user(&server, "u-1", "org-2", "coordinator").await;
    let publish = theirs_w1.publish(org_ch, json!(1)).await;
    for req in [
        json!({"op": "state_get", "channel": org_ch, "doc": "d"}),
        json!({"op": "state_set", "channel": org_ch, "doc": "d", "version": 1, "value": {}}),
    ] {
        let r = theirs_w1.request(req).await;
        assert_eq!(r["op"], "error", "{r}");
        assert_eq!(
            r["code"], publish["code"],
            "the same answer as publish: {r}"
        );
    }
    // Refused like a publish is: audited where org-1 sees it.
    let admin = server.token("boss", "org-1", "admin", &["*"]);
    let mut denied = Vec::new();
    for _ in 0..100 {
        let (status, v) = rest_call(&server, "GET", "/api/websocket/audit", &admin, None).await;
        assert_eq!(status, 200, "{v}");
        denied = v["data"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "denied" && r["actor_org"] == "org-2")
            .map(|r| r["detail"]["op"].clone())
            .collect::<Vec<_>>();
        if denied.iter().any(|op| op == "state_set") && denied.iter().any(|op| op == "state_get") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(denied.iter().any(|op| op == "state_set"), "{denied:?}");
    assert!(denied.iter().any(|op| op == "state_patch"), "{denied:?}");
    assert!(denied.iter().any(|op| op == "state_get"), "{denied:?}");
    // Nothing changed, and org-1's u-1 heard of nothing.
    let r = mine.request(get("budget")).await;
    assert_eq!(
        (r["version"].clone(), r["value"].clone()),
        (json!(1), json!({"total": 100}))
    );
    let r = coord1
        .request(json!({"op": "state_get", "channel": org_ch, "doc": "d"}))
        .await;
    assert_eq!(r["version"], 1, "{r}");
    assert_eq!(history(&server).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_code_and_changes_nothing() {
    let server =
        TestServer::start("[limits]\nstate_max_value_bytes = 100\nstate_docs_per_channel = 2\n");
    let mut coord = channel(&server).await;
    assert_eq!(coord.subscribe(CH).await["op"], "subscribed");
    let r = coord.request(set("plan", 0, json!({"a": 1}))).await;
    assert_eq!(r["version"], 1, "{r}");
    let _ = coord.messages(CH, 1).await;
    let cases = [
        (set("Plan", 1, json!({})), "WS_BAD_REQUEST"),
        (set("a/b", 1, json!({})), "WS_BAD_REQUEST"),
        (set(&"a".repeat(65), 1, json!({})), "WS_BAD_REQUEST"),
        (set("plan", 1, json!([1, 2])), "WS_BAD_REQUEST"),
        (set("plan", 1, json!("text")), "WS_BAD_REQUEST"),
        (set("plan", 1, Value::Null), "WS_BAD_REQUEST"),
        (patch("plan", 1, json!(7)), "WS_BAD_REQUEST"),
        (
            set("plan", 1, json!({"x": "y".repeat(100)})),
            "WS_PAYLOAD_TOO_LARGE",
        ),
        (
            json!({"op": "state_set", "channel": CH, "doc": "plan", "value": {}}),
            "WS_BAD_REQUEST",
        ),
        (
            json!({"op": "state_set", "channel": CH, "doc": "plan", "version": -1, "value": {}}),
            "WS_BAD_REQUEST",
        ),
        (
            json!({"op": "state_set", "channel": CH, "doc": "plan", "version": 1, "fields": {}}),
            "WS_BAD_REQUEST",
        ),
        (
            json!({"op": "state_get", "channel": "no channel", "doc": "plan"}),
            "WS_INVALID_CHANNEL",
        ),
        (
            json!({"op": "state_get", "channel": "wedding:none:w-1", "doc": "plan"}),
            "WS_CHANNEL_NOT_FOUND",
        ),
        // The reserved type cannot be published directly.
        (
            json!({"op": "publish", "channel": CH, "type": "state", "payload": {"doc": "plan", "version": 9, "value": {}}}),
            "WS_BAD_REQUEST",
        ),
    ];
    for (req, code) in cases {
        let r = coord.request(req.clone()).await;
        assert_error(&r, code);
        assert_eq!(r["op"], "error", "{req} -> {r}");
    }
    // A third document is past state_docs_per_channel (2).
    assert_eq!(
        coord.request(set("second", 0, json!({}))).await["op"],
        "state_ok"
    );
    assert_error(
        &coord.request(set("third", 0, json!({}))).await,
        "WS_BAD_REQUEST",
    );
    // Nothing changed: the document, and the channel heard only the one good write.
    let r = coord.request(get("plan")).await;
    assert_eq!(
        (r["version"].clone(), r["value"].clone()),
        (json!(1), json!({"a": 1}))
    );
    assert_eq!(coord.request(get("third")).await["version"], 0);
    let ids: Vec<Value> = history(&server)
        .await
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!(1), json!(2)]);
    // The REST broadcast cannot use the reserved type either.
    let token = server.token("coord", "org-1", "coordinator", &["w-1"]);
    let (status, v) = rest_call(
        &server,
        "POST",
        "/api/websocket/channels/broadcast",
        &token,
        Some(json!({"channel_name": CH, "type": "state", "content": {}})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (400, json!("WS_BAD_REQUEST")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_door_reads_and_writes_by_the_same_rules() {
    let server = TestServer::start("");
    let mut coord = channel(&server).await;
    let channel_id = coord.create(CH, Some("w-1")).await["channel_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let couple = server.token("u-1", "org-1", "couple", &["w-1"]);
    let vendor = server.token("u-2", "org-1", "photographer", &["w-1"]);
    let other = server.token("u-1", "org-2", "couple", &["w-2"]);
    let path = "/api/websocket/channels/state";
    let q = format!("{path}?channel_name={CH}&doc=flowers");
    let (status, v) = rest_call(&server, "GET", &q, &vendor, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["data"]["version"].clone(), v["data"]["value"].clone()),
        (json!(0), Value::Null)
    );
    let body = |version: u64, value: Value| json!({"channel_name": CH, "doc": "flowers", "version": version, "value": value});
    let (status, v) = rest_call(
        &server,
        "POST",
        path,
        &vendor,
        Some(body(0, json!({"roses": 10}))),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"],
        json!({"applied": true, "channel_name": CH, "doc": "flowers", "version": 1, "message_id": 1})
    );
    // A second create by an equal rank is not applied and gets the current document.
    let other_vendor = server.token("u-3", "org-1", "venue", &["w-1"]);
    let (status, v) = rest_call(
        &server,
        "POST",
        path,
        &other_vendor,
        Some(body(0, json!({"roses": 0}))),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["applied"], false, "{v}");
    assert_eq!(
        (v["data"]["version"].clone(), v["data"]["value"].clone()),
        (json!(1), json!({"roses": 10}))
    );
    // The couple's stale patch wins and names the vendor it overrode.
    let (status, v) = rest_call(
        &server,
        "POST",
        path,
        &couple,
        Some(json!({"channel_name": CH, "doc": "flowers", "version": 0, "fields": {"peonies": 5}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["version"], 2);
    assert_eq!(v["data"]["overrode"]["user_id"], "u-2", "{v}");
    let (_, v) = rest_call(&server, "GET", &q, &vendor, None).await;
    assert_eq!(
        v["data"]["value"],
        json!({"roses": 10, "peonies": 5}),
        "{v}"
    );
    assert_eq!(v["data"]["writer"]["role"], "couple");
    // Another organization's u-1 is refused like a publish is.
    let (status, v) = rest_call(&server, "GET", &q, &other, None).await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (403, json!("WS_WEDDING_ISOLATION_VIOLATION")),
        "{v}"
    );
    let (status, v) = rest_call(&server, "POST", path, &other, Some(body(2, json!({})))).await;
    assert_eq!(
        v["error"]["code"], "WS_WEDDING_ISOLATION_VIOLATION",
        "{status} {v}"
    );
    // Bad input.
    let (status, v) = rest_call(&server, "POST", path, &couple, Some(body(2, json!([1])))).await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (400, json!("WS_BAD_REQUEST")),
        "{v}"
    );
    let (status, v) = rest_call(
        &server,
        "GET",
        &format!("{path}?channel_name={CH}&doc=Bad"),
        &couple,
        None,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (400, json!("WS_BAD_REQUEST")),
        "{v}"
    );
    let (_, v) = rest_call(&server, "GET", &q, &vendor, None).await;
    assert_eq!(v["data"]["version"], 2, "nothing changed: {v}");
    // By channel_id too, both ways.
    let by_id = json!({"channel_id": channel_id, "doc": "flowers", "version": 2, "fields": {"roses": null}});
    let (status, v) = rest_call(&server, "POST", path, &couple, Some(by_id)).await;
    assert_eq!(
        (status, v["data"]["version"].clone()),
        (200, json!(3)),
        "{v}"
    );
    let q = format!("{path}?channel_id={channel_id}&doc=flowers");
    let (_, v) = rest_call(&server, "GET", &q, &vendor, None).await;
    assert_eq!(v["data"]["value"], json!({"peonies": 5}), "{v}");
    assert_eq!(v["data"]["channel_name"], CH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_reads_writes_and_hears_of_an_override() {
    use ringbearer_client::{Client, ClientConfig, Event, StateWrite, SubscribeOptions};
    let server = TestServer::start("");
    let _coord = channel(&server).await;
    let connect = |sub: &str, role: &str| {
        ClientConfig::new(server.url(), server.token(sub, "org-1", role, &["w-1"]))
    };
    let (vendor, mut vendor_events) = Client::connect(connect("u-2", "photographer"))
        .await
        .unwrap();
    let (couple, _couple_events) = Client::connect(connect("u-1", "couple")).await.unwrap();
    vendor
        .subscribe(CH, SubscribeOptions::default())
        .await
        .unwrap();
    let d = vendor.state_get(CH, "shots").await.unwrap();
    assert_eq!(
        (d.version, d.value.clone(), d.writer.clone()),
        (0, Value::Null, None)
    );
    let w = vendor
        .state_set(CH, "shots", 0, &json!({"list": ["rings"]}))
        .await
        .unwrap();
    assert!(
        matches!(
            w,
            StateWrite::Applied {
                version: 1,
                overrode: None,
                ..
            }
        ),
        "{w:?}"
    );
    let w = vendor
        .state_patch(CH, "shots", 0, &json!({"list": []}))
        .await
        .unwrap();
    match w {
        StateWrite::Conflict {
            current,
            your_version,
        } => {
            assert_eq!((current.version, your_version), (1, 0));
            assert_eq!(current.value, json!({"list": ["rings"]}));
        }
        other => panic!("{other:?}"),
    }
    let w = couple
        .state_patch(CH, "shots", 0, &json!({"list": ["rings", "cake"]}))
        .await
        .unwrap();
    match w {
        StateWrite::Applied {
            version, overrode, ..
        } => {
            assert_eq!(version, 2);
            assert_eq!(overrode.unwrap().user_id, "u-2");
        }
        other => panic!("{other:?}"),
    }
    let told = tokio::time::timeout(WAIT, async {
        loop {
            match vendor_events.next().await {
                Some(Event::StateOverridden {
                    doc,
                    version,
                    your_version,
                    by,
                    ..
                }) => return (doc, version, your_version, by.role),
                Some(_) => continue,
                None => panic!("events ended"),
            }
        }
    })
    .await
    .expect("told in time");
    assert_eq!(told, ("shots".into(), 2, 1, "couple".into()));
    let e = couple
        .state_set(CH, "Bad", 0, &json!({}))
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("WS_BAD_REQUEST"), "{e:?}");
}

/// A channel's documents are logged in its checkpoint, one record: they are bounded so the
/// record always fits (`state_max_bytes_per_channel`), and retention keeps working with a
/// channel full of large documents — which it could not if the checkpoint were refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_full_of_large_documents_still_checkpoints_and_reclaims() {
    let mut server = TestServer::start(
        "[storage]\nsegment_bytes = 262144\n[io]\nreclaim_interval_ms = 200\n[limits]\nmax_queued = 5\nchannel_messages_per_min = 1000000\n[limits.tiers.enterprise]\nmessages_per_min = 1000000\nconnections_per_user = 100\nchannels_per_org = 500\nsubscriptions_per_user = 100\n",
    );
    let token = server.token_tier("coord", "org-1", "coordinator", "enterprise", &["w-1"]);
    let mut c = server.connect(&token).await;
    assert_eq!(c.create(CH, Some("w-1")).await["op"], "created");
    let big = "b".repeat(60 * 1024 - 20);
    let mut stored = 0;
    for i in 0..20 {
        let r = c
            .request(set(&format!("doc-{i}"), 0, json!({"v": big})))
            .await;
        if r["op"] == "state_ok" {
            stored += 1;
            continue;
        }
        assert_error(&r, "WS_PAYLOAD_TOO_LARGE");
        break;
    }
    // 512 KiB by default: eight documents of 60 KiB, and the ninth is refused.
    assert_eq!(stored, 8);
    // The documents' changes are in the shard's first segment; publishes fill later ones.
    let shard = owner(CH, 2);
    let first = server
        .data
        .join(format!("wal/shard-{shard}/00000000000000000001.wal"));
    assert!(first.exists(), "{first:?}");
    let filler = "f".repeat(4000);
    for n in 0..200 {
        let r = c.publish(CH, json!({"n": n, "f": filler})).await;
        assert_eq!(r["op"], "published", "{r}");
    }
    assert!(segments(&server, shard) > 1);
    // Retention reclaims that segment once a checkpoint holding the documents is logged
    // (the messages that wrote them are out of the kept window of 5).
    let deadline = std::time::Instant::now() + WAIT;
    while first.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "retention never reclaimed the first segment: {} segments",
            segments(&server, shard)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(c);
    server.kill_and_restart();
    let mut c = server.connect(&token).await;
    for i in 0..8 {
        let r = c.request(get(&format!("doc-{i}"))).await;
        assert_eq!(r["version"], 1, "doc-{i} came back: {}", r["op"]);
        assert_eq!(r["value"]["v"].as_str().map(str::len), Some(big.len()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_count_against_the_publish_rates() {
    let server = TestServer::start("[limits]\nchannel_messages_per_min = 3\n");
    let mut coord = channel(&server).await;
    assert_eq!(coord.publish(CH, json!(1)).await["op"], "published");
    assert_eq!(
        coord.request(set("d", 0, json!({}))).await["op"],
        "state_ok"
    );
    assert_eq!(
        coord.request(patch("d", 1, json!({"a": 1}))).await["op"],
        "state_ok"
    );
    // The channel's rate (3 a minute) is used up by one publish and two writes.
    let r = coord.request(set("d", 2, json!({}))).await;
    assert_error(&r, "WS_RATE_LIMITED");
    assert!(r["retry_after"].as_u64().is_some_and(|s| s > 0), "{r}");
    assert_error(&coord.publish(CH, json!(2)).await, "WS_RATE_LIMITED");
    // Reads are not rated.
    assert_eq!(coord.request(get("d")).await["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_get_the_wedding_day_rates_like_publishes() {
    let server = TestServer::start(
        "[clock]\nstart = \"2026-06-13T10:30:00Z\"\n[saturday]\nmode = \"off\"\n[limits]\nchannel_messages_per_min = 2\n",
    );
    let admin = server.token("boss", "org-1", "admin", &["*"]);
    for (w, date) in [("w-1", "2026-06-13"), ("w-2", "2026-06-20")] {
        let body = json!({"wedding_id": w, "event_date": date, "time_zone": "Europe/London"});
        let (status, v) = rest_call(
            &server,
            "POST",
            "/api/websocket/weddings",
            &admin,
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    let mut c = server
        .connect(&server.token("coord", "org-1", "coordinator", &["w-1", "w-2"]))
        .await;
    let later = "wedding:plan:w-2";
    assert_eq!(c.create(CH, Some("w-1")).await["op"], "created");
    assert_eq!(c.create(later, Some("w-2")).await["op"], "created");
    for (channel, passes) in [(CH, 6), (later, 2)] {
        let mut n = 0;
        let refused = loop {
            let r = c
                .request(json!({"op": "state_set", "channel": channel, "doc": "d", "version": n, "value": {}}))
                .await;
            if r["op"] != "state_ok" {
                break r;
            }
            n += 1;
            assert!(n <= 20, "never refused");
        };
        assert_eq!(n, passes, "{channel}: 3 x 2 on the wedding's day, else 2");
        assert_error(&refused, "WS_RATE_LIMITED");
    }
}
