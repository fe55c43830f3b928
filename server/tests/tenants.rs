//! Isolation between organizations whose users share ids (SPEC §1), on every route a
//! message can take — live, resume, history, REST history, counts, presence — and across a
//! restart: a targeted message reaches its target alone; identity is (org, sub) for private
//! channels, cursors and targets; `*` and `wedding_id: "*"` never reach another
//! organization; a squatted wedding id gives the squatter nothing; another organization's
//! service cannot touch your users; a token refresh drops what the new token does not allow;
//! the audit log is per tenant, counts its `limit` in visible rows, shows a channel's owner
//! every refusal on it, and keeps a configured retention. One test per numbered bullet of
//! the isolation issue.

mod common;
use common::*;
use serde_json::{json, Value};

/// One REST call over a fresh connection: (status, body).
async fn rest(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    rest_call(server, method, path, token, body).await
}

async fn publish_to(
    c: &mut Raw,
    channel: &str,
    payload: Value,
    target: Option<(&str, Option<&str>)>,
) -> Value {
    let mut req =
        json!({"op": "publish", "channel": channel, "type": "general", "payload": payload});
    if let Some((user, org)) = target {
        req["target_user_id"] = json!(user);
        if let Some(o) = org {
            req["target_org"] = json!(o);
        }
    }
    let r = c.request(req).await;
    assert_eq!(r["op"], "published", "{r}");
    r
}

async fn resume(c: &mut Raw, channel: &str, last_seen: u64) -> Value {
    let r = c
        .request(json!({"op": "subscribe", "channel": channel, "last_seen_id": last_seen}))
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    r
}

fn payloads(subscribed: &Value) -> Vec<Value> {
    subscribed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].clone())
        .collect()
}

const W: &str = "wedding:timeline:w-1";

/// Bullets 1 and 2: a message for org-a's `u-2` reaches org-a's `u-2` alone — not org-a's
/// `u-1`, not org-b's `u-2` — live, on resume after a restart, in history, in REST history
/// and in `unread_count`.
#[tokio::test]
async fn a_targeted_message_reaches_its_target_alone_by_every_route() {
    let mut server = TestServer::start("");
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let a1 = server.token("u-1", "org-a", "couple", &["w-1"]);
    let a2 = server.token("u-2", "org-a", "couple", &["w-1"]);
    let b2 = server.token("u-2", "org-b", "photographer", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    let mut conns = Vec::new();
    for t in [&a1, &a2, &b2] {
        let mut x = server.connect(t).await;
        assert_eq!(x.subscribe(W).await["op"], "subscribed");
        conns.push(x);
    }
    // Live: only org-a's u-2 gets the targeted one; everybody gets the open one after it.
    let p = publish_to(&mut c, W, json!("for a/u-2"), Some(("u-2", None))).await;
    assert_eq!(p["delivered_count"], 1, "counted for its target alone: {p}");
    publish_to(&mut c, W, json!("open"), None).await;
    for (i, x) in conns.iter_mut().enumerate() {
        let got = x.messages(W, 1).await;
        let want = if i == 1 { "for a/u-2" } else { "open" };
        assert_eq!(got[0]["payload"], want, "live, connection {i}");
        if i == 1 {
            assert_eq!(got[0]["target_org"], "org-a");
            assert_eq!(x.messages(W, 1).await[0]["payload"], "open");
        }
    }
    // A target in another organization is named with it.
    let p = publish_to(&mut c, W, json!("for b/u-2"), Some(("u-2", Some("org-b")))).await;
    assert_eq!(p["delivered_count"], 1);
    assert_eq!(conns[2].messages(W, 1).await[0]["payload"], "for b/u-2");
    drop(conns);

    // Everyone away; two more, then a restart between publishing and reading.
    publish_to(&mut c, W, json!("for a/u-2 again"), Some(("u-2", None))).await;
    publish_to(&mut c, W, json!("open again"), None).await;
    drop(c);
    server.restart(None);

    // Counts (REST list, each user for itself).
    let unread = |v: &Value| v["data"]["channels"][0]["unread_count"].clone();
    let (_, l) = rest(&server, "GET", "/api/websocket/channels/list", &a1, None).await;
    assert_eq!(unread(&l), json!(2), "a/u-1: the open ones only: {l}");
    let (_, l) = rest(&server, "GET", "/api/websocket/channels/list", &a2, None).await;
    assert_eq!(
        unread(&l),
        json!(4),
        "a/u-2: the open ones and its own: {l}"
    );
    let (_, l) = rest(&server, "GET", "/api/websocket/channels/list", &b2, None).await;
    assert_eq!(
        unread(&l),
        json!(3),
        "b/u-2: the open ones and its own: {l}"
    );

    // Resume from the start of the channel.
    let mut x = server.connect(&a1).await;
    assert_eq!(
        payloads(&resume(&mut x, W, 0).await),
        vec![json!("open"), json!("open again")]
    );
    let mut x = server.connect(&b2).await;
    assert_eq!(
        payloads(&resume(&mut x, W, 0).await),
        vec![json!("open"), json!("for b/u-2"), json!("open again")]
    );
    let mut x = server.connect(&a2).await;
    assert_eq!(payloads(&resume(&mut x, W, 0).await).len(), 4);

    // History for a newcomer of either organization, on both doors.
    for org in ["org-a", "org-b"] {
        let t = server.token("u-new", org, "couple", &["w-1"]);
        let mut x = server.connect(&t).await;
        let r = x
            .request(json!({"op": "subscribe", "channel": W, "include_history": true}))
            .await;
        assert_eq!(
            payloads(&r),
            vec![json!("open"), json!("open again")],
            "history of {org}/u-new"
        );
        let t = server.token("u-rest", org, "couple", &["w-1"]);
        let (s, v) = rest(
            &server,
            "POST",
            "/api/websocket/channels/subscribe",
            &t,
            Some(json!({"channel_name": W, "include_history": true})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let got: Vec<Value> = v["data"]["historical_messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["payload"].clone())
            .collect();
        assert_eq!(
            got,
            vec![json!("open"), json!("open again")],
            "REST history of {org}"
        );
    }
}

/// Bullet 2: org-b's `u-1` is not org-a's `u-1`: not a member of its private channel, not
/// its cursor.
#[tokio::test]
async fn users_of_two_organizations_never_share_a_private_channel_or_a_cursor() {
    let mut server = TestServer::start("");
    let a1 = server.token("u-1", "org-a", "coordinator", &["w-1"]);
    let b1 = server.token("u-1", "org-b", "coordinator", &["w-1"]);
    let mut a = server.connect(&a1).await;
    let r = a
        .request(json!({"op": "create", "name": "couple:private:w-1", "type": "private", "wedding_id": "w-1"}))
        .await;
    assert_eq!(r["op"], "created", "{r}");
    publish_to(&mut a, "couple:private:w-1", json!("secret"), None).await;
    let mut b = server.connect(&b1).await;
    assert_error(
        &b.request(
            json!({"op": "subscribe", "channel": "couple:private:w-1", "include_history": true}),
        )
        .await,
        "WS_FORBIDDEN",
    );

    // Both subscribe to one shared channel; org-a acks everything; after a restart org-b's
    // u-1 still gets everything from its own cursor.
    assert_eq!(a.create(W, Some("w-1")).await["op"], "created");
    assert_eq!(a.subscribe(W).await["op"], "subscribed");
    assert_eq!(b.subscribe(W).await["op"], "subscribed");
    for i in 0..3 {
        publish_to(&mut a, W, json!(i), None).await;
    }
    let ack = a.request(json!({"op": "ack", "channel": W, "id": 3})).await;
    assert_eq!(ack["op"], "ok", "{ack}");
    drop((a, b));
    server.restart(None);
    let mut b = server.connect(&b1).await;
    let r = b.subscribe(W).await;
    assert_eq!(
        payloads(&r),
        vec![json!(0), json!(1), json!(2)],
        "org-b's own cursor: {r}"
    );
    let mut a = server.connect(&a1).await;
    let r = a.subscribe(W).await;
    assert!(payloads(&r).is_empty(), "org-a acked everything: {r}");
}

/// Bullets 3 and 4: `*` reaches only the admin's own organization's weddings; a wedding
/// named `*` is refused; re-creating another organization's channel is refused, not handed
/// over.
#[tokio::test]
async fn star_never_reaches_another_organization() {
    let server = TestServer::start("");
    let couple_a = server.token("couple", "org-a", "couple", &["w-3"]);
    let admin_b = server.token("admin", "org-b", "admin", &["*"]);
    let photo_b = server.token("photo", "org-b", "photographer", &["w-3"]);
    // org-a works wedding w-3 first.
    let mut a = server.connect(&couple_a).await;
    assert_eq!(
        a.create("wedding:main:w-3", Some("w-3")).await["op"],
        "created"
    );
    // org-b's admin cannot use `*` to create in it, on either door.
    let mut b = server.connect(&admin_b).await;
    assert_error(
        &b.create("wedding:timeline:w-3", Some("w-3")).await,
        "WS_WEDDING_ISOLATION_VIOLATION",
    );
    let (s, v) = rest(
        &server,
        "POST",
        "/api/websocket/channels/create",
        &admin_b,
        Some(json!({"name": "wedding:timeline:w-3", "wedding_id": "w-3"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("WS_WEDDING_ISOLATION_VIOLATION")),
        "{v}"
    );
    assert_error(
        &b.subscribe("wedding:main:w-3").await,
        "WS_WEDDING_ISOLATION_VIOLATION",
    );
    // `*` still works for org-b's own new wedding.
    assert_eq!(
        b.create("wedding:main:w-b9", Some("w-b9")).await["op"],
        "created"
    );
    // org-b's photographer, who lists w-3, may make org-b's own channel in it; org-a's
    // couple creating that name is told it is another organization's, and publishes nothing
    // into it by accident.
    let mut p = server.connect(&photo_b).await;
    assert_eq!(
        p.create("wedding:timeline:w-3", Some("w-3")).await["op"],
        "created"
    );
    assert_error(
        &a.create("wedding:timeline:w-3", Some("w-3")).await,
        "WS_FORBIDDEN",
    );
    // A wedding named `*` is no wedding, on both doors.
    for r in [
        a.request(json!({"op": "create", "name": "form:x:w-3", "wedding_id": "*"}))
            .await,
        b.request(
            json!({"op": "create", "name": "form:y:w-3", "wedding_context": {"wedding_id": "*"}}),
        )
        .await,
    ] {
        assert_error(&r, "WS_INVALID_WEDDING_CONTEXT");
    }
    let (s, v) = rest(
        &server,
        "POST",
        "/api/websocket/channels/create",
        &admin_b,
        Some(json!({"name": "form:z:w-3", "wedding_id": "*"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("WS_INVALID_WEDDING_CONTEXT")),
        "{v}"
    );
    // Bullet 8: a `wedding:` channel must name its wedding, on both doors.
    assert_error(
        &a.create("wedding:main:w-3x", None).await,
        "WS_INVALID_WEDDING_CONTEXT",
    );
    let (s, v) = rest(
        &server,
        "POST",
        "/api/websocket/channels/create",
        &admin_b,
        Some(json!({"name": "wedding:main:w-3x"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("WS_INVALID_WEDDING_CONTEXT")),
        "{v}"
    );
}

/// Bullet 5: the first organization to create a channel naming a wedding owns it; a later
/// registration by another organization is refused, across a restart too, and gives it no
/// reach into the owner's channels. The owner registers and changes it; a non-owner's
/// `wedding_context` on create changes nothing.
#[tokio::test]
async fn a_squatted_wedding_id_gives_the_squatter_nothing() {
    let mut server = TestServer::start("");
    let mike = server.token("mike", "venue-2", "couple", &["w-mike"]);
    let venue_admin = server.token("boss", "venue-2", "admin", &["*"]);
    let squatter = server.token("sq", "org-1", "admin", &["*"]);
    let mut m = server.connect(&mike).await;
    // WebSocket create with wedding_context registers the wedding for its first owner.
    let r = m
        .request(json!({"op": "create", "name": "wedding:timeline:w-mike",
            "wedding_context": {"wedding_id": "w-mike", "event_date": "2030-06-01", "time_zone": "Europe/London"}}))
        .await;
    assert_eq!(r["op"], "created", "{r}");
    let upsert =
        |date: &str| json!({"wedding_id": "w-mike", "event_date": date, "time_zone": "UTC"});
    for round in 0..2 {
        let (s, v) = rest(
            &server,
            "POST",
            "/api/websocket/weddings",
            &squatter,
            Some(upsert("2030-01-01")),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("WS_FORBIDDEN")),
            "round {round}: {v}"
        );
        let mut sq = server.connect(&squatter).await;
        assert_error(
            &sq.subscribe("wedding:timeline:w-mike").await,
            "WS_WEDDING_ISOLATION_VIOLATION",
        );
        assert_error(
            &sq.create("wedding:other:w-mike", Some("w-mike")).await,
            "WS_WEDDING_ISOLATION_VIOLATION",
        );
        let (s, v) = rest(
            &server,
            "POST",
            "/api/websocket/weddings",
            &venue_admin,
            Some(upsert("2030-06-02")),
        )
        .await;
        assert_eq!(s, 200, "the owner changes its wedding: {v}");
        assert_eq!(v["data"]["event_date"], "2030-06-02");
        if round == 0 {
            server.restart(None);
        }
    }
    // A wedding only named by a channel (never registered) is owned across a restart too.
    let m = server.connect(&mike).await;
    let t = server.token("mike", "venue-2", "couple", &["w-mike2"]);
    let mut m2 = server.connect(&t).await;
    assert_eq!(
        m2.create("wedding:main:w-mike2", Some("w-mike2")).await["op"],
        "created"
    );
    drop(m2);
    server.restart(None);
    let (s, v) = rest(
        &server,
        "POST",
        "/api/websocket/weddings",
        &squatter,
        Some(json!({"wedding_id": "w-mike2", "event_date": "2030-01-01", "time_zone": "UTC"})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    // Another organization naming the wedding in its own channel's context changes nothing.
    let photo = server.token("ph", "studio-9", "photographer", &["w-mike"]);
    let mut p = server.connect(&photo).await;
    let r = p
        .request(json!({"op": "create", "name": "supplier:shots:w-mike",
            "wedding_context": {"wedding_id": "w-mike", "event_date": "2031-01-01", "time_zone": "UTC"}}))
        .await;
    assert_eq!(r["op"], "created", "{r}");
    let (s, v) = rest(
        &server,
        "POST",
        "/api/websocket/channels/create",
        &venue_admin,
        Some(json!({"name": "venue:hall:w-mike", "wedding_id": "w-mike"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["data"]["wedding_context"]["event_date"], "2030-06-02",
        "{v}"
    );
    drop(m);
}

/// Bullet 6: a service of org-b whose token lists the wedding acts only on org-b's users:
/// its REST unsubscribe of `coord` leaves org-a's `coord` subscribed.
#[tokio::test]
async fn another_organizations_service_cannot_touch_your_users() {
    let server = TestServer::start("");
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let service_b = server.token("backend", "org-b", "service", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    assert_eq!(c.subscribe(W).await["op"], "subscribed");
    drop(c);
    let (s, v) = rest(
        &server,
        "POST",
        "/api/websocket/channels/unsubscribe",
        &service_b,
        Some(json!({"channel_name": W, "user_id": "coord"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["data"]["cleaned_resources"],
        json!([]),
        "nothing of org-a's was removed: {v}"
    );
    let (_, l) = rest(&server, "GET", "/api/websocket/channels/list", &coord, None).await;
    assert_eq!(
        l["data"]["channels"].as_array().unwrap().len(),
        1,
        "still subscribed: {l}"
    );
    // Its queue is intact: a message published now is waiting for org-a's coord.
    let mut other = server
        .connect(&server.token("u", "org-a", "coordinator", &["w-1"]))
        .await;
    publish_to(&mut other, W, json!("queued"), None).await;
    let mut c = server.connect(&coord).await;
    assert_eq!(payloads(&c.subscribe(W).await), vec![json!("queued")]);
}

/// Bullet 7: after `op: token` with a token that no longer lists `w-4`, the connection's
/// subscription to `w-4`'s channel ends (an `unsubscribed` with the reason), its messages
/// stop, presence on it is refused; `w-5`'s channel goes on.
#[tokio::test]
async fn a_refreshed_token_drops_what_it_no_longer_allows() {
    let server = TestServer::start("");
    let coord = server.token("coord", "org-a", "coordinator", &["w-4", "w-5"]);
    let mut c = server.connect(&coord).await;
    for w in ["w-4", "w-5"] {
        assert_eq!(
            c.create(&format!("wedding:main:{w}"), Some(w)).await["op"],
            "created"
        );
    }
    let user = server.token("pho", "org-b", "photographer", &["w-4", "w-5"]);
    let mut p = server.connect(&user).await;
    let mut watcher = server.connect(&coord).await;
    for w in ["w-4", "w-5"] {
        assert_eq!(
            p.subscribe(&format!("wedding:main:{w}")).await["op"],
            "subscribed"
        );
        assert_eq!(
            watcher.subscribe(&format!("wedding:main:{w}")).await["op"],
            "subscribed"
        );
    }
    let fresh = server.token("pho", "org-b", "photographer", &["w-5"]);
    let r = p.request(json!({"op": "token", "token": fresh})).await;
    assert_eq!(r["op"], "ok", "{r}");
    let gone = p
        .wait_for(|v| v["op"] == "unsubscribed" && v["channel"] == "wedding:main:w-4")
        .await;
    assert_eq!(gone["code"], "WS_WEDDING_ISOLATION_VIOLATION", "{gone}");
    // Presence leaves (the watcher sees the leave) and is refused from now on.
    let diff = watcher
        .wait_for(|v| {
            v["op"] == "presence_diff"
                && v["channel"] == "wedding:main:w-4"
                && v["leaves"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|e| e["user_id"] == "pho"))
        })
        .await;
    assert_eq!(diff["leaves"][0]["org"], "org-b");
    assert_error(
        &p.request(json!({"op": "presence", "channel": "wedding:main:w-4", "meta": {"activity": "ceremony"}}))
            .await,
        "WS_SUBSCRIPTION_FAILED",
    );
    // Messages of w-4 no longer arrive; w-5's do (ordered after anything of w-4).
    publish_to(&mut c, "wedding:main:w-4", json!("not for you"), None).await;
    publish_to(&mut c, "wedding:main:w-5", json!("still yours"), None).await;
    let m = p.wait_for(|v| v["op"] == "message").await;
    assert_eq!(m["payload"], "still yours", "{m}");
    assert_error(
        &p.subscribe("wedding:main:w-4").await,
        "WS_WEDDING_ISOLATION_VIOLATION",
    );
}

/// Bullet 9: audit per tenant. `limit` counts visible rows; a refusal on a channel is seen
/// by the channel's organization (and the attacker's); a REST create naming another
/// organization is audited; an unsubscribe is filed under the user's organization; token
/// refreshes are audited; records past `audit_retention_secs` are expired.
#[tokio::test]
async fn the_audit_log_is_usable_per_tenant() {
    let mut server = TestServer::start("");
    let admin_a = server.token("admin", "org-a", "admin", &["*"]);
    let admin_b = server.token("admin", "org-b", "admin", &["*"]);
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    // Lots of org-b activity on its own channels (noise org-a must not see, and that must
    // not eat org-a's `limit`).
    let mut b = server
        .connect(&server.token("u", "org-b", "coordinator", &["w-2"]))
        .await;
    for i in 0..12 {
        let name = format!("form:f{i}:w-2");
        assert_eq!(b.create(&name, Some("w-2")).await["op"], "created");
    }
    // org-b's attempts on org-a's channel.
    let mut intruder = server
        .connect(&server.token("x", "org-b", "couple", &["w-9"]))
        .await;
    assert_error(
        &intruder.subscribe(W).await,
        "WS_WEDDING_ISOLATION_VIOLATION",
    );
    let (s, _) = rest(
        &server,
        "POST",
        "/api/websocket/channels/create",
        &admin_b,
        Some(json!({"name": "venue:x:y", "organization_id": "org-a"})),
    )
    .await;
    assert_eq!(s, 403);
    // org-a's own: subscribe, unsubscribe, token refresh.
    assert_eq!(c.subscribe(W).await["op"], "subscribed");
    assert_eq!(
        c.request(json!({"op": "unsubscribe", "channel": W})).await["op"],
        "unsubscribed"
    );
    let fresh = server.token("coord", "org-a", "coordinator", &["w-1"]);
    assert_eq!(
        c.request(json!({"op": "token", "token": fresh})).await["op"],
        "ok"
    );
    // A bad token at the door.
    assert_eq!(
        rest(
            &server,
            "GET",
            "/api/websocket/channels/list",
            "not-a-token",
            None
        )
        .await
        .0,
        401
    );

    let audit = |v: &Value| v["data"]["records"].as_array().unwrap().clone();
    let want = [
        "create",
        "denied",
        "denied",
        "subscribe",
        "unsubscribe",
        "token_refresh",
    ];
    // Registry writes are queued: wait until every one has landed (bounded).
    let mut recs = Vec::new();
    for _ in 0..100 {
        let (_, v) = rest(&server, "GET", "/api/websocket/audit", &admin_a, None).await;
        recs = audit(&v);
        if recs.len() >= want.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut actions: Vec<&str> = recs.iter().map(|r| r["action"].as_str().unwrap()).collect();
    actions.sort_unstable();
    let mut sorted = want.to_vec();
    sorted.sort_unstable();
    assert_eq!(actions, sorted, "{recs:#?}");
    for r in &recs {
        assert!(
            r["actor_org"] == "org-a" || r["channel_org"] == "org-a",
            "only org-a's or about org-a: {r}"
        );
    }
    let unsub = recs.iter().find(|r| r["action"] == "unsubscribe").unwrap();
    assert_eq!(unsub["actor_org"], "org-a");
    assert_eq!(unsub["actor_user_id"], "coord");
    let denied: Vec<&Value> = recs.iter().filter(|r| r["action"] == "denied").collect();
    assert!(
        denied.iter().all(|r| r["actor_org"] == "org-b"),
        "{denied:?}"
    );
    // `limit` counts visible rows.
    let (_, v) = rest(
        &server,
        "GET",
        "/api/websocket/audit?limit=3",
        &admin_a,
        None,
    )
    .await;
    assert_eq!(audit(&v).len(), 3, "{v}");
    // org-b sees its own, the refusals included, and none of org-a's own actions.
    let (_, v) = rest(
        &server,
        "GET",
        "/api/websocket/audit?limit=100",
        &admin_b,
        None,
    )
    .await;
    let b_recs = audit(&v);
    assert!(
        b_recs.iter().all(|r| r["actor_org"] == "org-b"),
        "{b_recs:#?}"
    );
    assert_eq!(b_recs.iter().filter(|r| r["action"] == "denied").count(), 2);

    // Retention: records older than the configured retention go at the next start.
    drop((c, b, intruder));
    let newest = recs
        .iter()
        .map(|r| r["at_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    while now_s() * 1000 < newest + 2_000 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server.restart(Some("[storage]\naudit_retention_secs = 1\n"));
    let (_, v) = rest(&server, "GET", "/api/websocket/audit", &admin_a, None).await;
    assert_eq!(audit(&v), Vec::<Value>::new(), "expired: {v}");
}

/// Found by the owner model test: idempotency keys were per channel, so a publish by org-b's
/// `u-1` that happened to reuse org-a's `u-1`'s key was answered with org-a's message id
/// and never stored. Keys are per publisher (SPEC §2 promise 4: a publish *repeated*), on
/// a live server and after a restart (the keys come back from the stored frames).
#[tokio::test]
async fn an_idempotency_key_answers_only_for_its_own_publisher() {
    let mut server = TestServer::start("");
    let a = server.token("u-1", "org-a", "coordinator", &["w-1"]);
    let b = server.token("u-1", "org-b", "photographer", &["w-1"]);
    let publish = |payload: &str| json!({"op": "publish", "channel": W, "type": "general", "payload": payload, "idempotency_key": "same-key"});
    let mut ca = server.connect(&a).await;
    assert_eq!(ca.create(W, Some("w-1")).await["op"], "created");
    let first = ca.request(publish("from a")).await;
    assert_eq!(first["id"], 1, "{first}");
    let mut cb = server.connect(&b).await;
    let other = cb.request(publish("from b")).await;
    assert_eq!(
        other["id"], 2,
        "another publisher's key is its own: {other}"
    );
    // A real repeat is still answered with the first id, by each publisher.
    assert_eq!(ca.request(publish("from a")).await["id"], 1);
    assert_eq!(cb.request(publish("from b")).await["id"], 2);
    drop((ca, cb));
    server.restart(None);
    let mut cb = server.connect(&b).await;
    assert_eq!(
        cb.request(publish("from b")).await["id"],
        2,
        "after a restart"
    );
    let mut ca = server.connect(&a).await;
    assert_eq!(
        ca.request(publish("from a")).await["id"],
        1,
        "after a restart"
    );
    let s = ca
        .request(json!({"op": "subscribe", "channel": W, "include_history": true}))
        .await;
    assert_eq!(payloads(&s), [json!("from a"), json!("from b")], "{s}");
}
