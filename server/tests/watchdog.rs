//! The presence watchdog (SPEC §3, docs/decisions.md §30) over real sockets, the real binary
//! with 2 shards and the calendar clock set to a wedding day: a missing photographer raises
//! exactly one `watchdog:absent` on the wedding's coordination channel (delivered live to
//! the coordinator, never to another organization's users who share its user ids; another
//! organization's photographer on its own channel naming the wedding does not count), and a
//! `watchdog:back` when the photographer subscribes; the ceremony time and key roles
//! survive a restart (the alert comes again after it); a low battery alerts once per
//! device until it recovers; nothing fires before the lead time or on another day, and an
//! absence is sent once however many rounds still see it (the server's log); bad
//! typed presence meta is `WS_BAD_REQUEST` and leaves presence as it was.

mod common;
use common::*;
use serde_json::{json, Value};

const COORD_1: &str = "wedding:coordination:w-1";
const COORD_2: &str = "wedding:coordination:w-2";
const MAIN_1: &str = "wedding:main:w-1";
const MAIN_2: &str = "wedding:main:w-2";

fn config(clock: &str) -> String {
    format!(
        "[clock]\nstart = \"{clock}\"\n[saturday]\nmode = \"off\"\n\
         [watchdog]\ngrace_seconds = 1\ncheck_interval_ms = 100\n"
    )
}

/// Registers a wedding as `org`'s admin; the REST answer's `data`.
async fn register(s: &TestServer, org: &str, body: Value) -> Value {
    let admin = s.token("admin", org, "admin", &["*"]);
    let (status, v) = rest_call(s, "POST", "/api/websocket/weddings", &admin, Some(body)).await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

fn plan(id: &str, date: &str, ceremony: &str) -> Value {
    json!({"wedding_id": id, "event_date": date, "time_zone": "UTC",
        "ceremony_time": ceremony, "key_roles": ["photographer"]})
}

/// Polls health (as `token`'s caller) until its `alerts` satisfy `pred`, within `WAIT`.
async fn wait_health(s: &TestServer, token: &str, pred: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, h) = rest_call(s, "GET", "/api/websocket/health", token, None).await;
        let alerts = h["data"]["alerts"].to_string();
        if pred(&alerts) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never matched: {alerts}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn is_event(v: &Value, channel: &str, event: &str) -> bool {
    v["op"] == "message" && v["channel"] == channel && v["event"] == event
}

/// Every message kept on `channel`, as a fresh subscriber of `org` sees them.
async fn history(s: &TestServer, org: &str, wedding: &str, channel: &str) -> Vec<Value> {
    let mut c = s
        .connect(&s.token("reader", org, "coordinator", &[wedding]))
        .await;
    let r = c
        .request(json!({"op": "subscribe", "channel": channel, "include_history": true}))
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    r["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_missing_photographer_is_alerted_once_and_back_and_again_after_a_restart() {
    let mut s = TestServer::start(&config("2026-06-13T13:35:00Z"));
    // Two organizations, one day, user ids shared: org-1/u-1 coordinates w-1; org-2/u-1
    // is w-2's photographer (present), org-2/u-9 coordinates w-2.
    let mut coord = s
        .connect(&s.token("u-1", "org-1", "coordinator", &["w-1"]))
        .await;
    let r = coord.create(COORD_1, Some("w-1")).await;
    assert_eq!(r["op"], "created", "{r}");
    let r = coord.create(MAIN_1, Some("w-1")).await;
    assert_eq!(r["op"], "created", "{r}");
    assert_eq!(coord.subscribe(COORD_1).await["op"], "subscribed");
    let mut other_photo = s
        .connect(&s.token("u-1", "org-2", "photographer", &["w-2"]))
        .await;
    let r = other_photo.create(MAIN_2, Some("w-2")).await;
    assert_eq!(r["op"], "created", "{r}");
    assert_eq!(other_photo.subscribe(MAIN_2).await["op"], "subscribed");
    let mut other_coord = s
        .connect(&s.token("u-9", "org-2", "coordinator", &["w-2"]))
        .await;
    assert_eq!(
        other_coord.create(COORD_2, Some("w-2")).await["op"],
        "created"
    );
    assert_eq!(other_coord.subscribe(COORD_2).await["op"], "subscribed");
    // Another organization's user with the same id cannot reach w-1's alerts.
    let r = other_photo.subscribe(COORD_1).await;
    assert_eq!(r["op"], "error", "{r}");
    // A photographer of org-2 whose token lists w-1, on org-2's own channel naming w-1:
    // not org-1's photographer, so it does not count as present for w-1.
    let mut squatter = s
        .connect(&s.token("u-1", "org-2", "photographer", &["w-1"]))
        .await;
    let r = squatter.create("wedding:vendor:w-1", Some("w-1")).await;
    assert_eq!(r["op"], "created", "{r}");
    assert_eq!(
        squatter.subscribe("wedding:vendor:w-1").await["op"],
        "subscribed"
    );

    let d = register(&s, "org-2", plan("w-2", "2026-06-13", "14:00")).await;
    assert_eq!(d["key_roles"], json!(["photographer"]));
    let d = register(&s, "org-1", plan("w-1", "2026-06-13", "14:00")).await;
    assert_eq!(d["ceremony_time"], "14:00");
    assert_eq!(d["coordination_channel"], COORD_1);
    assert_eq!(d["is_wedding_day"], true);

    // No photographer of org-1 on w-1's channels: after the grace, one alert, live.
    let a = coord
        .wait_for(|v| is_event(v, COORD_1, "watchdog:absent"))
        .await;
    assert_eq!(a["type"], "urgent", "{a}");
    assert_eq!(a["priority"], "critical", "{a}");
    assert_eq!(a["sender"]["user_id"], "ringbearer", "{a}");
    assert_eq!(a["sender"]["role"], "service", "{a}");
    assert_eq!(a["payload"]["wedding_id"], "w-1");
    assert_eq!(a["payload"]["role"], "photographer");
    assert_eq!(a["payload"]["ceremony_at"], "2026-06-13T14:00:00.000Z");
    assert!(a["payload"]["absent_since"]
        .as_str()
        .unwrap()
        .starts_with("2026-06-13T13:3"));
    // Health lists it for org-1 and not for org-2.
    let t1 = s.token("admin", "org-1", "admin", &["*"]);
    let (_, h) = rest_call(&s, "GET", "/api/websocket/health", &t1, None).await;
    let alerts = h["data"]["alerts"].as_array().unwrap();
    assert!(
        alerts
            .iter()
            .any(|x| x["kind"] == "watchdog_absent" && x["wedding_id"] == "w-1"),
        "{h}"
    );
    let t2 = s.token("admin", "org-2", "admin", &["*"]);
    let (_, h2) = rest_call(&s, "GET", "/api/websocket/health", &t2, None).await;
    assert!(
        !h2.to_string().contains("w-1"),
        "org-2 sees org-1's alert: {h2}"
    );

    // A round later (a battery alert needs one), still one alert; then the photographer
    // comes: `back`.
    let r = coord
        .request(json!({"op": "presence", "channel": COORD_1,
            "meta": {"battery": 9, "device_id": "tablet"}}))
        .await;
    assert_eq!(r["op"], "ok", "{r}");
    coord
        .wait_for(|v| is_event(v, COORD_1, "battery:low"))
        .await;
    let mut photo = s
        .connect(&s.token("p-1", "org-1", "photographer", &["w-1"]))
        .await;
    assert_eq!(photo.subscribe(MAIN_1).await["op"], "subscribed");
    let b = coord
        .wait_for(|v| is_event(v, COORD_1, "watchdog:back"))
        .await;
    assert_eq!(b["payload"]["role"], "photographer");
    assert_eq!(b["payload"]["absent_since"], a["payload"]["absent_since"]);
    let kept = history(&s, "org-1", "w-1", COORD_1).await;
    let events: Vec<&str> = kept.iter().map(|m| m["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["watchdog:absent", "battery:low", "watchdog:back"]);
    // org-2's coordinator heard nothing of it (w-2's photographer is present).
    let seen = history(&s, "org-2", "w-2", COORD_2).await;
    assert!(seen.is_empty(), "{seen:?}");
    let pong = other_coord.request(json!({"op": "ping"})).await;
    assert_eq!(pong["op"], "pong", "{pong}");
    assert!(
        !other_coord.backlog.iter().any(|v| v["op"] == "message"),
        "org-2's coordinator got a message: {:?}",
        other_coord.backlog
    );

    // The plan survives a restart: with no photographer connected, the alert comes again.
    drop(photo);
    s.restart(Some(&config("2026-06-13T13:45:00Z")));
    let mut coord = s
        .connect(&s.token("u-1", "org-1", "coordinator", &["w-1"]))
        .await;
    assert_eq!(coord.subscribe(COORD_1).await["op"], "subscribed");
    let a2 = coord
        .wait_for(|v| is_event(v, COORD_1, "watchdog:absent"))
        .await;
    assert!(a2["payload"]["absent_since"]
        .as_str()
        .unwrap()
        .starts_with("2026-06-13T13:4"));
    assert!(a2["id"].as_u64() > a["id"].as_u64());
    // Upserting the date alone keeps the plan.
    let d = register(
        &s,
        "org-1",
        json!({"wedding_id": "w-1", "event_date": "2026-06-13", "time_zone": "UTC"}),
    )
    .await;
    assert_eq!(d["ceremony_time"], "14:00");
    assert_eq!(d["key_roles"], json!(["photographer"]));
}

#[tokio::test]
async fn low_battery_alerts_once_per_device_until_it_recovers() {
    let s = TestServer::start(&config("2026-06-13T09:00:00Z"));
    let mut coord = s
        .connect(&s.token("u-1", "org-1", "coordinator", &["w-1"]))
        .await;
    assert_eq!(coord.create(COORD_1, Some("w-1")).await["op"], "created");
    assert_eq!(coord.subscribe(COORD_1).await["op"], "subscribed");
    // A wedding today with no ceremony time: no roles watched, batteries are.
    register(
        &s,
        "org-1",
        json!({"wedding_id": "w-1", "event_date": "2026-06-13", "time_zone": "UTC"}),
    )
    .await;
    assert_eq!(coord.create(MAIN_1, Some("w-1")).await["op"], "created");
    // One user, two devices (two connections, each with its own meta).
    let mut phone = s
        .connect(&s.token("u-2", "org-1", "couple", &["w-1"]))
        .await;
    let mut watch = s
        .connect(&s.token("u-2", "org-1", "couple", &["w-1"]))
        .await;
    for c in [&mut phone, &mut watch] {
        assert_eq!(c.subscribe(MAIN_1).await["op"], "subscribed");
    }
    let meta = |battery: u64, device: &'static str| {
        json!({"op": "presence", "channel": MAIN_1,
            "meta": {"battery": battery, "device_id": device, "activity": "setup"}})
    };
    assert_eq!(phone.request(meta(5, "phone")).await["op"], "ok");
    let first = coord
        .wait_for(|v| is_event(v, COORD_1, "battery:low"))
        .await;
    assert_eq!(first["payload"]["battery"], 5);
    assert_eq!(first["payload"]["user_id"], "u-2");
    assert_eq!(first["payload"]["device"], "org-1/u-2/phone");
    // Lower again: nothing new; another device: its own alert (a later round, so the
    // first device was looked at again meanwhile).
    assert_eq!(phone.request(meta(4, "phone")).await["op"], "ok");
    assert_eq!(watch.request(meta(3, "watch")).await["op"], "ok");
    let second = coord
        .wait_for(|v| is_event(v, COORD_1, "battery:low"))
        .await;
    assert_eq!(second["payload"]["device"], "org-1/u-2/watch", "{second}");
    // Both in health; back to the threshold (seen by a round: its alert clears), then
    // down: alerted again.
    let t = s.token("admin", "org-1", "admin", &["*"]);
    wait_health(&s, &t, |h| {
        h.contains("org-1/u-2/phone") && h.contains("org-1/u-2/watch")
    })
    .await;
    assert_eq!(watch.request(meta(15, "watch")).await["op"], "ok");
    assert_eq!(phone.request(meta(60, "phone")).await["op"], "ok");
    wait_health(&s, &t, |h| {
        !h.contains("org-1/u-2/phone") && !h.contains("org-1/u-2/watch")
    })
    .await;
    assert_eq!(phone.request(meta(2, "phone")).await["op"], "ok");
    let third = coord
        .wait_for(|v| is_event(v, COORD_1, "battery:low"))
        .await;
    assert_eq!(third["payload"]["device"], "org-1/u-2/phone", "{third}");
    assert_eq!(third["payload"]["battery"], 2);
    let kept = history(&s, "org-1", "w-1", COORD_1).await;
    assert_eq!(kept.len(), 3, "{kept:?}");
}

#[tokio::test]
async fn nothing_fires_before_the_lead_time_or_on_another_day_and_an_absence_is_sent_once() {
    // 13:00: w-early's ceremony at 14:00 is 60 min away (lead 30); w-tomorrow would be
    // watched now but is tomorrow; w-ctl (13:20) is watched, and shows rounds happened.
    let s = TestServer::start_custom(&config("2026-06-13T13:00:00Z"), |c| {
        c.env("RUST_LOG", "warn,ringbearer_io::runtime::watchdog=info");
    });
    let mut coord = s
        .connect(&s.token("u-1", "org-1", "coordinator", &["w-ctl"]))
        .await;
    assert_eq!(
        coord
            .create("wedding:coordination:w-ctl", Some("w-ctl"))
            .await["op"],
        "created"
    );
    assert_eq!(
        coord.subscribe("wedding:coordination:w-ctl").await["op"],
        "subscribed"
    );
    register(&s, "org-1", plan("w-early", "2026-06-13", "14:00")).await;
    register(&s, "org-1", plan("w-tomorrow", "2026-06-14", "13:10")).await;
    register(&s, "org-1", plan("w-ctl", "2026-06-13", "13:20")).await;
    coord
        .wait_for(|v| is_event(v, "wedding:coordination:w-ctl", "watchdog:absent"))
        .await;
    // Another round after that one (the battery alert needs a later round).
    let r = coord
        .request(
            json!({"op": "presence", "channel": "wedding:coordination:w-ctl",
            "meta": {"battery": 1}}),
        )
        .await;
    assert_eq!(r["op"], "ok", "{r}");
    coord
        .wait_for(|v| is_event(v, "wedding:coordination:w-ctl", "battery:low"))
        .await;
    // The absence was sent (and its webhook queued) once, though later rounds still saw
    // the photographer missing (the stored message alone could not tell: a resend carries
    // the same idempotency key).
    s.wait_log_line("the battery alert", |l| {
        l.contains("watchdog alert sent") && l.contains("battery:low")
    });
    let sent = s
        .log()
        .lines()
        .filter(|l| l.contains("watchdog alert sent") && l.contains("watchdog:absent"))
        .count();
    assert_eq!(sent, 1, "{}", s.log());
    // The watchdog creates a coordination channel when it first alerts: these never were.
    let mut admin = s.connect(&s.token("admin", "org-1", "admin", &["*"])).await;
    for c in [
        "wedding:coordination:w-early",
        "wedding:coordination:w-tomorrow",
    ] {
        let r = admin.subscribe(c).await;
        assert_error(&r, "WS_CHANNEL_NOT_FOUND");
    }
}

#[tokio::test]
async fn bad_typed_meta_and_plans_are_refused_and_change_nothing() {
    let s = TestServer::start(&config("2026-06-13T09:00:00Z"));
    let mut a = s
        .connect(&s.token("u-1", "org-1", "photographer", &["w-1"]))
        .await;
    assert_eq!(a.create(MAIN_1, Some("w-1")).await["op"], "created");
    assert_eq!(a.subscribe(MAIN_1).await["op"], "subscribed");
    let good =
        json!({"activity": "at_venue", "location": "x-marquee", "battery": 80, "mood": "ok"});
    let r = a
        .request(json!({"op": "presence", "channel": MAIN_1, "meta": good}))
        .await;
    assert_eq!(r["op"], "ok", "{r}");
    for bad in [
        json!({"activity": "napping"}),
        json!({"location": "moon"}),
        json!({"battery": 101}),
        json!({"battery": "full"}),
        json!({"battery": 5.5}),
    ] {
        let r = a
            .request(json!({"op": "presence", "channel": MAIN_1, "meta": bad}))
            .await;
        assert_error(&r, "WS_BAD_REQUEST");
    }
    // Another org's user with the same id sees u-1's presence as it was.
    let mut b = s
        .connect(&s.token("u-1", "org-2", "coordinator", &["w-1"]))
        .await;
    let r = b.subscribe(MAIN_1).await;
    assert_eq!(r["op"], "subscribed", "{r}");
    let mine = r["presence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["org"] == "org-1" && p["user_id"] == "u-1")
        .cloned()
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(mine["meta"], good);
    // Bad plans: WS_INVALID_WEDDING_CONTEXT, and the wedding stays unregistered.
    let admin = s.token("admin", "org-1", "admin", &["*"]);
    for (field, v) in [
        ("ceremony_time", json!("25:00")),
        ("key_roles", json!(["dj"])),
        ("key_roles", json!("photographer")),
        ("coordination_channel", json!("not a channel")),
    ] {
        let mut body = json!({"wedding_id": "w-9", "event_date": "2026-06-13", "time_zone": "UTC"});
        body[field] = v;
        let (status, r) =
            rest_call(&s, "POST", "/api/websocket/weddings", &admin, Some(body)).await;
        assert_eq!(status, 400, "{r}");
        assert_eq!(r["error"]["code"], "WS_INVALID_WEDDING_CONTEXT", "{r}");
    }
}

/// The realtime-js door's `track` goes through the same typed-meta check.
#[tokio::test]
async fn the_realtime_js_door_checks_typed_meta_too() {
    let s = TestServer::start("");
    let mut native = s
        .connect(&s.token("coord", "org-1", "coordinator", &["w-1"]))
        .await;
    assert_eq!(native.create(MAIN_1, Some("w-1")).await["op"], "created");
    let token = s.token("u-1", "org-1", "photographer", &["w-1"]);
    let url = format!(
        "ws://{}/realtime/v1/websocket?apikey={token}&vsn=2.0.0",
        s.addr
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let mut rt = Raw::from_ws(ws);
    let topic = format!("realtime:{MAIN_1}");
    rt.send(json!(["1", "1", topic, "phx_join", {"config": {"presence": {"key": ""}}}]))
        .await;
    assert_eq!(rt.wait_for(|v| v[1] == "1").await[4]["status"], "ok");
    let track = |r: &str, meta: Value| json!(["1", r, topic, "presence", {"type": "presence", "event": "track", "payload": meta}]);
    rt.send(track(
        "2",
        json!({"activity": "photography", "location": "ceremony_area"}),
    ))
    .await;
    assert_eq!(rt.wait_for(|v| v[1] == "2").await[4]["status"], "ok");
    for (r, bad) in [
        ("3", json!({"activity": "napping"})),
        ("4", json!({"battery": 101})),
        ("5", json!({"location": "moon"})),
    ] {
        rt.send(track(r, bad)).await;
        let e = rt.wait_for(|v| v[1] == r).await;
        assert_eq!(e[4]["status"], "error", "{e}");
        assert_eq!(e[4]["response"]["code"], "WS_BAD_REQUEST", "{e}");
    }
    let sub = native.subscribe(MAIN_1).await;
    let entry = sub["presence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user_id"] == "u-1")
        .cloned()
        .unwrap_or_else(|| panic!("{sub}"));
    assert_eq!(
        entry["meta"],
        json!({"activity": "photography", "location": "ceremony_area"})
    );
}
