//! Routing by role (SPEC §2 `target_roles`, issue 16 item 2): a message for some roles —
//! named by the publish, or given by the channel organization's routing table for its
//! `type` — reaches subscribers holding those roles alone, by every route: live, resume
//! after a restart, history on both doors, `unread_count`, `delivered_count`/`queued_count`
//! and REST `delivery_guarantees` (with members' roles restored after the restart). Two
//! organizations whose users share ids and hold different roles; bad `target_roles` are
//! refused with `WS_BAD_REQUEST` and change nothing.

mod common;
use common::*;
use serde_json::{json, Value};

const W: &str = "wedding:timeline:w-1";

/// org-a's table sends `rsvp_update` to couples and coordinators (the default), org-b's to
/// couples alone: the channel's organization (org-a) decides.
const CONFIG: &str = r#"
[routing.default]
rsvp_update = ["couple", "coordinator"]

[routing.orgs."org-b"]
rsvp_update = ["couple"]
"#;

async fn publish(c: &mut Raw, ty: &str, payload: &str, roles: Option<&[&str]>) -> Value {
    let mut req = json!({"op": "publish", "channel": W, "type": ty, "payload": payload});
    if let Some(r) = roles {
        req["target_roles"] = json!(r);
    }
    let r = c.request(req).await;
    assert_eq!(r["op"], "published", "{r}");
    r
}

fn payloads(subscribed: &Value) -> Vec<String> {
    subscribed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap().to_owned())
        .collect()
}

async fn unread(server: &TestServer, token: &str) -> Value {
    let (s, l) = rest_call(server, "GET", "/api/websocket/channels/list", token, None).await;
    assert_eq!(s, 200, "{l}");
    l["data"]["channels"][0]["unread_count"].clone()
}

#[tokio::test]
async fn role_targets_and_the_routing_table_reach_those_roles_alone_by_every_route() {
    let mut server = TestServer::start(CONFIG);
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    // Same ids, different roles, in two organizations.
    let a1 = server.token("u-1", "org-a", "couple", &["w-1"]);
    let a2 = server.token("u-2", "org-a", "photographer", &["w-1"]);
    let b1 = server.token("u-1", "org-b", "photographer", &["w-1"]);
    let b2 = server.token("u-2", "org-b", "couple", &["w-1"]);
    // Each organization reads the table that applies to its channels.
    for (t, want) in [
        (&a1, json!(["couple", "coordinator"])),
        (&b1, json!(["couple"])),
    ] {
        let (s, v) = rest_call(&server, "GET", "/api/websocket/routing", t, None).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["data"]["routing"]["rsvp_update"], want, "{v}");
    }
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    let mut conns = Vec::new();
    for t in [&a1, &a2, &b1, &b2] {
        let mut x = server.connect(t).await;
        assert_eq!(x.subscribe(W).await["op"], "subscribed");
        conns.push(x);
    }

    // Live. 1: named roles; 2: the routing table (org-a's channel: couple, coordinator);
    // 3: everyone.
    let p = publish(&mut c, "general", "photographers", Some(&["photographer"])).await;
    assert_eq!(
        (p["delivered_count"].clone(), p["queued_count"].clone()),
        (json!(2), json!(0)),
        "{p}"
    );
    let p = publish(&mut c, "rsvp_update", "rsvp", None).await;
    assert_eq!(
        p["delivered_count"], 2,
        "the two couples (coord is not subscribed): {p}"
    );
    publish(&mut c, "general", "open", None).await;
    let want_live = [
        vec!["rsvp", "open"],          // a/u-1 couple
        vec!["photographers", "open"], // a/u-2 photographer
        vec!["photographers", "open"], // b/u-1 photographer
        vec!["rsvp", "open"],          // b/u-2 couple
    ];
    for (i, x) in conns.iter_mut().enumerate() {
        let got: Vec<Value> = x.messages(W, 2).await;
        let got: Vec<&str> = got.iter().map(|m| m["payload"].as_str().unwrap()).collect();
        assert_eq!(got, want_live[i], "live, connection {i}");
    }
    // The message says who it was for.
    let mut x = server.connect(&a2).await;
    let r = x
        .request(json!({"op": "subscribe", "channel": W, "last_seen_id": 0}))
        .await;
    assert_eq!(
        r["messages"][0]["target_roles"],
        json!(["photographer"]),
        "{r}"
    );
    let mut x = server.connect(&a1).await;
    let r = x
        .request(json!({"op": "subscribe", "channel": W, "last_seen_id": 0}))
        .await;
    assert_eq!(
        r["messages"][0]["target_roles"],
        json!(["couple", "coordinator"]),
        "{r}"
    );
    drop(x);

    // Bad targets: refused, nothing stored, ids stay contiguous.
    for bad in [
        json!({"target_roles": ["photographer", "wizard"]}),
        json!({"target_roles": []}),
        json!({"target_roles": ["couple"], "target_user_id": "u-1"}),
        json!({"target_roles": "couple"}),
    ] {
        let mut req = json!({"op": "publish", "channel": W, "type": "general", "payload": "bad"});
        for (k, v) in bad.as_object().unwrap() {
            req[k] = v.clone();
        }
        let r = c.request(req).await;
        assert_error(&r, "WS_BAD_REQUEST");
    }

    // Everyone away: queued counts read each member's role.
    drop(conns);
    let p = publish(&mut c, "general", "couples", Some(&["couple"])).await;
    assert_eq!(
        (p["delivered_count"].clone(), p["queued_count"].clone()),
        (json!(0), json!(2)),
        "{p}"
    );
    assert_eq!(p["id"], 4, "the refused publishes took no id: {p}");
    publish(&mut c, "rsvp_update", "rsvp again", None).await;
    drop(c);
    server.restart(None);

    // After the restart the members' roles come back from the registry: a REST broadcast
    // counts and names the couples alone.
    let (s, v) = rest_call(
        &server,
        "POST",
        "/api/websocket/channels/broadcast",
        &coord,
        Some(
            json!({"channel_name": W, "content": "couples, after restart", "type": "general",
                    "priority": "normal", "target_roles": ["couple"]}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let d = &v["data"];
    assert_eq!(
        (d["delivered_count"].clone(), d["queued_count"].clone()),
        (json!(0), json!(2)),
        "{v}"
    );
    assert_eq!(
        d["delivery_guarantees"]["queued_delivery"],
        json!(["u-1", "org-b/u-2"]),
        "{v}"
    );

    // unread_count, each user for itself.
    assert_eq!(
        unread(&server, &a1).await,
        json!(5),
        "a/u-1 couple: 2,3,4,5,6"
    );
    assert_eq!(
        unread(&server, &a2).await,
        json!(2),
        "a/u-2 photographer: 1,3"
    );
    assert_eq!(
        unread(&server, &b1).await,
        json!(2),
        "b/u-1 photographer: 1,3"
    );
    assert_eq!(
        unread(&server, &b2).await,
        json!(5),
        "b/u-2 couple: 2,3,4,5,6"
    );

    // Resume from the start.
    let couple = vec![
        "rsvp",
        "open",
        "couples",
        "rsvp again",
        "couples, after restart",
    ];
    let photographer = vec!["photographers", "open"];
    for (t, want) in [
        (&a1, &couple),
        (&a2, &photographer),
        (&b1, &photographer),
        (&b2, &couple),
    ] {
        let mut x = server.connect(t).await;
        let r = x
            .request(json!({"op": "subscribe", "channel": W, "last_seen_id": 0}))
            .await;
        assert_eq!(&payloads(&r), want, "resume {r}");
    }

    // History for newcomers of either organization, on both doors: by the newcomer's role.
    for org in ["org-a", "org-b"] {
        let guest = server.token("u-new", org, "guest", &["w-1"]);
        let mut x = server.connect(&guest).await;
        let r = x
            .request(json!({"op": "subscribe", "channel": W, "include_history": true}))
            .await;
        assert_eq!(payloads(&r), vec!["open"], "history of {org}/u-new guest");
        let co = server.token("u-co", org, "coordinator", &["w-1"]);
        let (s, v) = rest_call(
            &server,
            "POST",
            "/api/websocket/channels/subscribe",
            &co,
            Some(json!({"channel_name": W, "include_history": true})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let got: Vec<&str> = v["data"]["historical_messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["payload"].as_str().unwrap())
            .collect();
        assert_eq!(
            got,
            vec!["rsvp", "open", "rsvp again"],
            "REST history of {org}/u-co coordinator"
        );
    }
}
