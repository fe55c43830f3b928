//! The admin page's data over real sockets (2 shards, the real binary): a channel's detail
//! (`GET /api/websocket/channels/detail`) shows its subscribers with cursors and unread
//! counts, online connections and presence, for its own organization's admin only — another
//! organization's admin is refused (even with the wedding in its token) and the refusal is
//! in the owner's audit log; recent messages follow the one visibility rule (a message
//! targeted at another user is absent); and the organization-wide channel list
//! (`channels/list?scope=organization`) holds the caller's organization's channels alone,
//! paginated, even when users of two organizations share ids.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// One REST GET over a fresh connection: (status, body).
async fn rest(server: &TestServer, path: &str, token: &str) -> (u16, Value) {
    rest_call(server, "GET", path, token, None).await
}

async fn detail(server: &TestServer, token: &str, query: &str) -> (u16, Value) {
    rest(
        server,
        &format!("/api/websocket/channels/detail?channel_name={W}{query}"),
        token,
    )
    .await
}

/// Polls the detail (bounded) until `done` holds: disconnects reach the owner shard
/// asynchronously.
async fn detail_when(server: &TestServer, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (s, v) = detail(server, token, "").await;
        assert_eq!(s, 200, "{v}");
        if done(&v["data"]) {
            return v["data"].clone();
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the detail never reached the expected state: {last:#}");
}

async fn publish(c: &mut Raw, payload: Value, target: Option<&str>) -> u64 {
    let mut req = json!({"op": "publish", "channel": W, "type": "general", "payload": payload});
    if let Some(t) = target {
        req["target_user_id"] = json!(t);
    }
    let r = c.request(req).await;
    assert_eq!(r["op"], "published", "{r}");
    r["id"].as_u64().unwrap()
}

fn subscriber_rows(d: &Value) -> Vec<(String, String, u64, u64, u64)> {
    d["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["org"].as_str().unwrap().to_owned(),
                s["user_id"].as_str().unwrap().to_owned(),
                s["online_connections"].as_u64().unwrap(),
                s["cursor"].as_u64().unwrap(),
                s["unread"].as_u64().unwrap(),
            )
        })
        .collect()
}

const W: &str = "wedding:timeline:w-1";

fn row(
    org: &str,
    user: &str,
    online: u64,
    cursor: u64,
    unread: u64,
) -> (String, String, u64, u64, u64) {
    (org.into(), user.into(), online, cursor, unread)
}

/// The detail's subscribers (sorted by org, then user id), their cursors, unread counts and
/// online connections, the presence with activity and location, and the figures equal
/// what the test drove; pages are bounded; a user of the organization without the admin
/// role is refused.
#[tokio::test]
async fn the_detail_shows_subscribers_cursors_unread_and_presence() {
    let server = TestServer::start("");
    let admin = server.token("admin", "org-a", "admin", &["*"]);
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    let mut a1 = server
        .connect(&server.token("u-1", "org-a", "couple", &["w-1"]))
        .await;
    let mut a2 = server
        .connect(&server.token("u-2", "org-a", "couple", &["w-1"]))
        .await;
    let mut b1 = server
        .connect(&server.token("u-1", "org-b", "photographer", &["w-1"]))
        .await;
    for x in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(x.subscribe(W).await["op"], "subscribed");
    }
    for i in 1..=3 {
        publish(&mut c, json!(format!("m{i}")), None).await;
    }
    let r = a1
        .request(json!({"op": "ack", "channel": W, "id": 2}))
        .await;
    assert_ne!(r["op"], "error", "{r}");
    let r = a2
        .request(json!({"op": "presence", "channel": W,
            "meta": {"activity": "ceremony", "location": "ceremony_area"}}))
        .await;
    assert_ne!(r["op"], "error", "{r}");
    drop(b1);

    let d = detail_when(&server, &admin, |d| d["online_connections"] == 2).await;
    assert_eq!(d["name"], W);
    assert_eq!(d["type"], "shared");
    assert_eq!(d["wedding_id"], "w-1");
    assert!(d["channel_id"].as_str().unwrap().starts_with("ch_"), "{d}");
    assert!(d["created_at"].as_str().is_some(), "{d}");
    assert_eq!(
        (d["last_id"].clone(), d["durable_id"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(
        (d["members"].clone(), d["active_users"].clone()),
        (json!(3), json!(2))
    );
    assert_eq!(
        subscriber_rows(&d),
        vec![
            row("org-a", "u-1", 1, 2, 1),
            row("org-a", "u-2", 1, 0, 3),
            row("org-b", "u-1", 0, 0, 3),
        ],
        "{d:#}"
    );
    let presence = d["presence"].as_array().unwrap();
    assert_eq!(d["presence_total"], 2, "{d:#}");
    let mut who: Vec<(String, String)> = presence
        .iter()
        .map(|p| {
            (
                p["org"].as_str().unwrap().into(),
                p["user_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    who.sort();
    assert_eq!(
        who,
        vec![
            ("org-a".into(), "u-1".into()),
            ("org-a".into(), "u-2".into())
        ]
    );
    let u2 = presence.iter().find(|p| p["user_id"] == "u-2").unwrap();
    assert_eq!(
        u2["meta"],
        json!({"activity": "ceremony", "location": "ceremony_area"})
    );
    let payloads: Vec<&Value> = d["recent_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["payload"])
        .collect();
    assert_eq!(payloads, vec!["m1", "m2", "m3"]);

    // One page: offset 1, limit 2; bounds refused with WS_INVALID_MESSAGE-style 400s.
    let (s, v) = detail(&server, &admin, "&offset=1&limit=2").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        subscriber_rows(&v["data"]),
        vec![row("org-a", "u-2", 1, 0, 3), row("org-b", "u-1", 0, 0, 3)]
    );
    assert_eq!(v["data"]["members"], 3);
    for bad in ["&limit=0", "&limit=201", "&offset=x"] {
        let (s, v) = detail(&server, &admin, bad).await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    // By channel id too.
    let id = d["channel_id"].as_str().unwrap();
    let (s, v) = rest(
        &server,
        &format!("/api/websocket/channels/detail?channel_id={id}"),
        &admin,
    )
    .await;
    assert_eq!((s, v["data"]["name"].clone()), (200, json!(W)), "{v}");
    // The organization's coordinator reads the channel but does not get its detail.
    let (s, v) = detail(&server, &coord, "").await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "WS_FORBIDDEN", "{v}");
}

/// Another organization's admin is refused — WS_FORBIDDEN when its token lists the
/// wedding, WS_WEDDING_ISOLATION_VIOLATION when it holds `*` — and both refusals are in the
/// channel owner's audit log.
#[tokio::test]
async fn another_organizations_admin_is_refused_and_the_owner_sees_it() {
    let server = TestServer::start("");
    let admin_a = server.token("admin", "org-a", "admin", &["*"]);
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    let listed = server.token("admin", "org-b", "admin", &["w-1"]);
    let (s, v) = detail(&server, &listed, "").await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (403, json!("WS_FORBIDDEN")),
        "{v}"
    );
    assert!(
        v.get("data").is_none(),
        "nothing of the channel is shown: {v}"
    );
    let star = server.token("admin", "org-b", "admin", &["*"]);
    let (s, v) = detail(&server, &star, "").await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (403, json!("WS_WEDDING_ISOLATION_VIOLATION")),
        "{v}"
    );

    // Registry writes are queued: wait (bounded) until both refusals landed.
    let mut denied = Vec::new();
    for _ in 0..100 {
        let (s, v) = rest(
            &server,
            "/api/websocket/audit?channel=wedding:timeline:w-1",
            &admin_a,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        denied = v["data"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "denied" && r["detail"]["op"] == "inspect")
            .cloned()
            .collect();
        if denied.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(denied.len(), 2, "{denied:#?}");
    let mut codes: Vec<&str> = denied
        .iter()
        .map(|r| {
            assert_eq!(r["actor_org"], "org-b");
            assert_eq!(r["actor_user_id"], "admin");
            assert_eq!(r["channel_org"], "org-a");
            assert_eq!(r["channel"], W);
            r["detail"]["code"].as_str().unwrap()
        })
        .collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        vec!["WS_FORBIDDEN", "WS_WEDDING_ISOLATION_VIOLATION"]
    );
}

/// `recent_messages` are what the viewing admin may see under the one visibility rule: a
/// message targeted at another user is absent, even for the channel owner's admin, while
/// its target's unread count has it.
#[tokio::test]
async fn a_message_targeted_at_another_user_is_not_in_recent_messages() {
    let server = TestServer::start("");
    let admin = server.token("admin", "org-a", "admin", &["*"]);
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    for u in ["u-1", "u-2"] {
        let mut x = server
            .connect(&server.token(u, "org-a", "couple", &["w-1"]))
            .await;
        assert_eq!(x.subscribe(W).await["op"], "subscribed");
    }
    publish(&mut c, json!("open 1"), None).await;
    let secret = publish(&mut c, json!("for u-2 only"), Some("u-2")).await;
    publish(&mut c, json!("open 2"), None).await;

    let d = detail_when(&server, &admin, |d| d["online_connections"] == 0).await;
    assert_eq!(d["last_id"], 3);
    let recent = d["recent_messages"].as_array().unwrap();
    let payloads: Vec<&Value> = recent.iter().map(|m| &m["payload"]).collect();
    assert_eq!(payloads, vec!["open 1", "open 2"], "{d:#}");
    assert!(recent.iter().all(|m| m["id"] != secret));
    assert_eq!(
        subscriber_rows(&d),
        vec![row("org-a", "u-1", 0, 0, 2), row("org-a", "u-2", 0, 0, 3)],
        "the target counts it; nobody else does"
    );
}

/// `channels/list?scope=organization`: every channel of the caller's organization on both
/// shards, sorted by name, paginated — none of another organization's, though its users
/// have the same ids — and admin or service only; without `scope`, the per-user list.
#[tokio::test]
async fn the_organization_list_shows_only_the_callers_channels() {
    let server = TestServer::start("");
    let admin_a = server.token("admin", "org-a", "admin", &["*"]);
    let admin_b = server.token("admin", "org-b", "admin", &["*"]);
    let mut a = server.connect(&admin_a).await;
    let mut b = server.connect(&admin_b).await;
    let ours: Vec<String> = (0..6).map(|i| format!("venue:a{i}:main")).collect();
    let theirs: Vec<String> = (0..4).map(|i| format!("venue:b{i}:main")).collect();
    let shards: std::collections::BTreeSet<usize> = ours.iter().map(|n| owner(n, 2)).collect();
    assert_eq!(shards.len(), 2, "org-a's channels span both shards");
    for n in &ours {
        assert_eq!(a.create(n, None).await["op"], "created");
    }
    for n in &theirs {
        assert_eq!(b.create(n, None).await["op"], "created");
    }
    // org-b's `admin` and `u-1` (ids org-a also uses) subscribe to org-b's channels.
    assert_eq!(b.subscribe(&theirs[0]).await["op"], "subscribed");
    let mut bu = server
        .connect(&server.token("u-1", "org-b", "coordinator", &[]))
        .await;
    assert_eq!(bu.subscribe(&theirs[1]).await["op"], "subscribed");
    // org-a's `u-1` on one of org-a's.
    let mut au = server
        .connect(&server.token("u-1", "org-a", "coordinator", &[]))
        .await;
    assert_eq!(au.subscribe(&ours[2]).await["op"], "subscribed");

    let list = "/api/websocket/channels/list?scope=organization";
    let names = |v: &Value| -> Vec<String> {
        v["data"]["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (s, v) = rest(&server, list, &admin_a).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(names(&v), ours, "{v:#}");
    assert_eq!(v["data"]["total"], 6);
    let c2 = &v["data"]["channels"][2];
    assert_eq!(
        (c2["members"].clone(), c2["active_users"].clone()),
        (json!(1), json!(1)),
        "{c2}"
    );
    assert_eq!(c2["type"], "shared", "{c2}");
    assert!(
        c2["last_activity"].as_str().is_some() && c2.get("wedding_id").is_some(),
        "{c2}"
    );
    let (_, v) = rest(&server, list, &admin_b).await;
    assert_eq!(names(&v), theirs, "{v:#}");
    assert_eq!(v["data"]["channels"][0]["members"], 1);

    // Pages.
    let (_, v) = rest(&server, &format!("{list}&offset=2&limit=3"), &admin_a).await;
    assert_eq!(names(&v), ours[2..5].to_vec());
    assert_eq!(v["data"]["total"], 6);
    let (_, v) = rest(&server, &format!("{list}&offset=5&limit=3"), &admin_a).await;
    assert_eq!(names(&v), ours[5..].to_vec());
    let (s, _) = rest(&server, &format!("{list}&limit=201"), &admin_a).await;
    assert_eq!(s, 400);

    // Not for other roles; the default stays the caller's own subscriptions.
    let (s, v) = rest(
        &server,
        list,
        &server.token("u-1", "org-a", "coordinator", &[]),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (403, json!("WS_FORBIDDEN")),
        "{v}"
    );
    let (s, v) = rest(&server, "/api/websocket/channels/list", &admin_b).await;
    assert_eq!(s, 200);
    assert_eq!(names(&v), vec![theirs[0].clone()]);
    let (_, v) = rest(&server, "/api/websocket/channels/list", &admin_a).await;
    assert!(
        names(&v).is_empty(),
        "org-a's admin subscribed to nothing: {v}"
    );
}
