//! A hostile review of the wedding-day features (issue 16): a token refresh that changes a
//! connection's role changes who it counts as by every route — live delivery, the
//! publish's `delivered_count`/`queued_count`, (after a restart, from the registry) REST
//! `delivery_guarantees`, and presence — as a fresh subscribe with the new token would.
//! Two organizations registering one new wedding at once: one owner, also after a restart.
//! A user a service enrolled reads REST history by its own token's role. The realtime-js
//! door applies role targets and the routing table live and in its replay after a SIGKILL.
//! Another organization's admin does not outrank org-1's couple on shared state.
//! Two organizations whose users share an id and hold different roles.

mod common;
use common::*;
use serde_json::{json, Value};

const W: &str = "wedding:timeline:w-1";

async fn publish_to(c: &mut Raw, payload: &str, roles: &[&str]) -> Value {
    let r = c
        .request(json!({"op": "publish", "channel": W, "type": "general",
                        "payload": payload, "target_roles": roles}))
        .await;
    assert_eq!(r["op"], "published", "{r}");
    r
}

#[tokio::test]
async fn a_refreshed_token_with_another_role_is_counted_and_recorded_as_that_role() {
    let mut server = TestServer::start("");
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let a1_photo = server.token("u-1", "org-a", "photographer", &["w-1"]);
    let a1_couple = server.token("u-1", "org-a", "couple", &["w-1"]);
    let b1_couple = server.token("u-1", "org-b", "couple", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    let mut a1 = server.connect(&a1_photo).await;
    assert_eq!(a1.subscribe(W).await["op"], "subscribed");
    let mut b1 = server.connect(&b1_couple).await;
    assert_eq!(b1.subscribe(W).await["op"], "subscribed");

    // org-a/u-1 becomes the couple on the same connection.
    let r = a1.request(json!({"op": "token", "token": a1_couple})).await;
    assert_eq!(r["op"], "ok", "{r}");
    // An owner op on W from the same connection lands after the re-check of the refresh.
    let r = a1
        .request(json!({"op": "state_get", "channel": W, "doc": "plan"}))
        .await;
    assert_ne!(r["op"], "error", "{r}");
    // Presence says so too (the watchdog counts roles from it).
    let mut watcher = server.connect(&coord).await;
    let r = watcher.subscribe(W).await;
    let mut roles: Vec<String> = r["presence"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .filter(|e| e["user_id"] == "u-1")
        .map(|e| {
            format!(
                "{}/{}",
                e["org"].as_str().unwrap(),
                e["role"].as_str().unwrap()
            )
        })
        .collect();
    roles.sort();
    assert_eq!(roles, vec!["org-a/couple", "org-b/couple"], "{r}");
    drop(watcher);

    // For the couple: both u-1s see it live, and both are counted.
    let p = publish_to(&mut c, "for couples", &["couple"]).await;
    for x in [&mut a1, &mut b1] {
        let m = x.messages(W, 1).await;
        assert_eq!(m[0]["payload"], "for couples");
    }
    assert_eq!(
        (p["delivered_count"].clone(), p["queued_count"].clone()),
        (json!(2), json!(0)),
        "org-a/u-1 is a couple now: {p}"
    );
    // For photographers: nobody holds that role any more.
    let p = publish_to(&mut c, "for photographers", &["photographer"]).await;
    assert_eq!(
        (p["delivered_count"].clone(), p["queued_count"].clone()),
        (json!(0), json!(0)),
        "no photographer is subscribed: {p}"
    );
    // Live delivery agrees: the next thing org-a/u-1 gets is the one after.
    publish_to(&mut c, "couples again", &["couple"]).await;
    let m = a1.messages(W, 1).await;
    assert_eq!(m[0]["payload"], "couples again", "{m:?}");
    b1.messages(W, 1).await;

    // Offline members are counted by the role their last connection held: the couple's,
    // also after a restart (the registry's).
    drop((a1, b1, c));
    server.restart(None);
    let (s, v) = rest_call(
        &server,
        "POST",
        "/api/websocket/channels/broadcast",
        &coord,
        Some(
            json!({"channel_name": W, "content": "after restart", "type": "general",
                    "priority": "normal", "target_roles": ["couple"]}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["data"]["delivery_guarantees"]["queued_delivery"],
        json!(["u-1", "org-b/u-1"]),
        "{v}"
    );
    let (s, v) = rest_call(
        &server,
        "POST",
        "/api/websocket/channels/broadcast",
        &coord,
        Some(
            json!({"channel_name": W, "content": "photographers", "type": "general",
                    "priority": "normal", "target_roles": ["photographer"]}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["queued_count"], 0, "{v}");
}

async fn rest_history(server: &TestServer, token: &str, body: Value) -> Vec<String> {
    let (s, v) = rest_call(
        server,
        "POST",
        "/api/websocket/channels/subscribe",
        token,
        Some(body),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["data"]["historical_messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|m| m["payload"].as_str().unwrap().to_owned())
        .collect()
}

/// A service enrolls org-a/u-1 (no role known); u-1 then enrolls itself with a couple's
/// token and asks for history: it gets the couple's messages (the token's role, as on
/// `/ws`), not the unknown role's. Then it connects as the couple and leaves: after a
/// restart it is counted as the couple, and org-b/u-1 (a photographer) as a photographer.
#[tokio::test]
async fn a_user_a_service_enrolled_reads_and_is_counted_by_its_own_role() {
    let mut server = TestServer::start("");
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let service = server.token("backend", "org-a", "service", &["w-1"]);
    let a1 = server.token("u-1", "org-a", "couple", &["w-1"]);
    let b1 = server.token("u-1", "org-b", "photographer", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    let got = rest_history(
        &server,
        &service,
        json!({"channel_name": W, "user_id": "u-1", "include_history": true}),
    )
    .await;
    assert!(got.is_empty(), "{got:?}");
    publish_to(&mut c, "for couples", &["couple"]).await;
    publish_to(&mut c, "for photographers", &["photographer"]).await;
    let p = publish_to(&mut c, "for couples 2", &["couple"]).await;
    assert_eq!(
        p["queued_count"], 0,
        "an enrolled member's role is unknown: {p}"
    );

    let got = rest_history(
        &server,
        &a1,
        json!({"channel_name": W, "include_history": true}),
    )
    .await;
    assert_eq!(
        got,
        vec!["for couples", "for couples 2"],
        "by the couple's token"
    );

    // Connects as the couple (the role is recorded), and as org-b's photographer.
    for t in [&a1, &b1] {
        let mut x = server.connect(t).await;
        assert_eq!(x.subscribe(W).await["op"], "subscribed");
    }
    drop(c);
    server.restart(None);
    for (roles, want) in [
        (json!(["couple"]), json!(["u-1"])),
        (json!(["photographer"]), json!(["org-b/u-1"])),
    ] {
        let (s, v) = rest_call(
            &server,
            "POST",
            "/api/websocket/channels/broadcast",
            &coord,
            Some(json!({"channel_name": W, "content": "x", "type": "general",
                        "priority": "normal", "target_roles": roles})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["data"]["delivery_guarantees"]["queued_delivery"], want,
            "{v}"
        );
    }
}

const TOPIC: &str = "realtime:wedding:timeline:w-1";

async fn phoenix(server: &TestServer, token: &str) -> Raw {
    let url = format!(
        "ws://{}/realtime/v1/websocket?apikey={token}&vsn=2.0.0",
        server.addr
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    Raw::from_ws(ws)
}

async fn phx_join(c: &mut Raw, config: Value) {
    c.send(json!(["1", "1", TOPIC, "phx_join", {"config": config}]))
        .await;
    let joined = c.wait_for(|v| v[1] == "1").await;
    assert_eq!(joined[4]["status"], "ok", "{joined}");
}

/// Broadcast payloads received until `last` (inclusive).
async fn phx_until(c: &mut Raw, last: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let m = c.wait_for(|v| v[3] == "broadcast").await;
        let p = m[4]["payload"].as_str().unwrap().to_owned();
        out.push(p.clone());
        if p == last {
            return out;
        }
    }
}

/// The realtime-js door applies role targets and the routing table like `/ws`: live
/// broadcasts, and the join's replay after a SIGKILL, for org-1/u-1 (couple) and org-2/u-1
/// (photographer); an `access_token` refresh to another role changes what it is delivered.
#[tokio::test]
async fn the_realtime_js_door_applies_role_targets_live_and_in_replay() {
    let mut server = TestServer::start("[routing.default]\nrsvp_update = [\"couple\"]\n");
    let coord = server.token("coord", "org-1", "coordinator", &["w-1"]);
    let a = server.token("u-1", "org-1", "couple", &["w-1"]);
    let b = server.token("u-1", "org-2", "photographer", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    let mut ra = phoenix(&server, &a).await;
    let mut rb = phoenix(&server, &b).await;
    phx_join(&mut ra, json!({})).await;
    phx_join(&mut rb, json!({})).await;
    let r = c
        .request(json!({"op": "publish", "channel": W, "type": "rsvp_update", "payload": "rsvp"}))
        .await;
    assert_eq!(r["delivered_count"], 1, "{r}");
    publish_to(&mut c, "photo", &["photographer"]).await;
    c.publish(W, json!("open")).await;
    assert_eq!(phx_until(&mut ra, "open").await, vec!["rsvp", "open"]);
    assert_eq!(phx_until(&mut rb, "open").await, vec!["photo", "open"]);

    // org-2/u-1 becomes a couple on this door.
    let couple_b = server.token("u-1", "org-2", "couple", &["w-1"]);
    rb.send(json!(["1", "2", TOPIC, "access_token", {"access_token": couple_b}]))
        .await;
    assert_eq!(rb.wait_for(|v| v[1] == "2").await[4]["status"], "ok");
    // A presence track lands at the owner after the refresh's re-check.
    let track = json!({"type": "presence", "event": "track", "payload": {}});
    rb.send(json!(["1", "3", TOPIC, "presence", track])).await;
    assert_eq!(rb.wait_for(|v| v[1] == "3").await[4]["status"], "ok");
    let r = c
        .request(json!({"op": "publish", "channel": W, "type": "rsvp_update", "payload": "rsvp 2"}))
        .await;
    assert_eq!(r["delivered_count"], 2, "{r}");
    publish_to(&mut c, "photo 2", &["photographer"]).await;
    c.publish(W, json!("open 2")).await;
    assert_eq!(phx_until(&mut rb, "open 2").await, vec!["rsvp 2", "open 2"]);
    drop((ra, rb, c));

    server.kill_and_restart();
    let replay = json!({"broadcast": {"replay": {"since": 0, "limit": 50}}});
    let all_couple = vec!["rsvp", "open", "rsvp 2", "open 2"];
    let mut ra = phoenix(&server, &a).await;
    phx_join(&mut ra, replay.clone()).await;
    assert_eq!(phx_until(&mut ra, "open 2").await, all_couple);
    let mut rb = phoenix(&server, &b).await;
    phx_join(&mut rb, replay.clone()).await;
    assert_eq!(
        phx_until(&mut rb, "open 2").await,
        vec!["photo", "open", "photo 2", "open 2"],
        "replayed as the photographer its token says"
    );
    let mut rb = phoenix(&server, &couple_b).await;
    phx_join(&mut rb, replay).await;
    assert_eq!(phx_until(&mut rb, "open 2").await, all_couple);
}

/// Two organizations register the same new wedding id at the same moment (REST
/// `weddings`, sent together without waiting): exactly one is answered 200 and owns it —
/// also after a restart, when the registry decides. The refused one stores nothing: the
/// winner can still change its wedding, the loser cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wedding_registered_by_two_organizations_at_once_has_one_owner_after_a_restart() {
    let mut server = TestServer::start("");
    let admins = [
        ("org-1", server.token("admin", "org-1", "admin", &["*"])),
        ("org-2", server.token("admin", "org-2", "admin", &["*"])),
    ];
    let body = |id: &str| json!({"wedding_id": id, "event_date": "2026-06-13", "time_zone": "UTC"});
    let ids: Vec<String> = (0..40).map(|i| format!("w-race-{i}")).collect();
    let mut winners = Vec::new();
    for id in &ids {
        let calls = admins.iter().map(|(_, t)| {
            rest_call(
                &server,
                "POST",
                "/api/websocket/weddings",
                t,
                Some(body(id)),
            )
        });
        let answers = futures_util::future::join_all(calls).await;
        let won: Vec<&str> = answers
            .iter()
            .zip(&admins)
            .filter(|((s, _), _)| *s == 200)
            .map(|(_, (org, _))| *org)
            .collect();
        assert_eq!(won.len(), 1, "{id}: {answers:?}");
        for (s, v) in &answers {
            if *s != 200 {
                assert_eq!(
                    (*s, &v["error"]["code"]),
                    (403, &json!("WS_FORBIDDEN")),
                    "{v}"
                );
            }
        }
        winners.push(won[0]);
    }
    server.restart(None);
    for (id, winner) in ids.iter().zip(&winners) {
        for (org, t) in &admins {
            let mut b = body(id);
            b["event_date"] = json!("2026-06-14");
            let (s, v) = rest_call(&server, "POST", "/api/websocket/weddings", t, Some(b)).await;
            let want = if org == winner { 200 } else { 403 };
            assert_eq!(
                s, want,
                "{id} as {org} after a restart (owner: {winner}): {v}"
            );
        }
    }
}

/// Shared state across organizations on one wedding: org-2's admin, whose token lists the
/// wedding, writes org-1's document over REST by `channel_id` from a stale version. It does
/// not outrank org-1's couple (answered `applied: false` with the couple's value, nothing
/// stored); a write on the current version goes through like any writer's.
#[tokio::test]
async fn another_organizations_admin_does_not_outrank_the_couple() {
    let server = TestServer::start("");
    let coord = server.token("coord", "org-1", "coordinator", &["w-1"]);
    let couple = server.token("u-1", "org-1", "couple", &["w-1"]);
    let admin2 = server.token("u-1", "org-2", "admin", &["w-1"]);
    let mut c = server.connect(&coord).await;
    let created = c.create(W, Some("w-1")).await;
    let channel_id = created["channel_id"].as_str().unwrap().to_owned();
    let mut k = server.connect(&couple).await;
    let r = k
        .request(
            json!({"op": "state_set", "channel": W, "doc": "menu", "version": 0,
                        "value": {"main": "fish"}}),
        )
        .await;
    assert_eq!(r["op"], "state_ok", "{r}");
    let write = |version: u64| {
        json!({"channel_id": channel_id, "doc": "menu", "version": version,
               "fields": {"main": "beef"}})
    };
    let path = "/api/websocket/channels/state";
    let (s, v) = rest_call(&server, "POST", path, &admin2, Some(write(0))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["applied"], false, "{v}");
    assert_eq!(v["data"]["value"], json!({"main": "fish"}), "{v}");
    assert_eq!(v["data"]["writer"]["org"], "org-1", "{v}");
    let q = format!("{path}?channel_id={channel_id}&doc=menu");
    let (_, v) = rest_call(&server, "GET", &q, &couple, None).await;
    assert_eq!(
        (&v["data"]["version"], &v["data"]["value"]),
        (&json!(1), &json!({"main": "fish"})),
        "{v}"
    );
    let (s, v) = rest_call(&server, "POST", path, &admin2, Some(write(1))).await;
    assert_eq!((s, &v["data"]["applied"]), (200, &json!(true)), "{v}");
}
