//! The Phoenix-channels door (docs/realtime-js.md) over real sockets: a realtime-js-shaped
//! client at `/realtime/v1/websocket` joins, broadcasts (JSON and 2.0.0 binary pushes) with
//! acks, hears a native `/ws` publish and is heard by it; bad frames get their SPEC codes and
//! leave the connection and everyone else working; a missing key or an unknown `vsn` is
//! refused before the upgrade.

mod common;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const CH: &str = "wedding:main:w-1";
const TOPIC: &str = "realtime:wedding:main:w-1";

async fn phoenix(server: &TestServer, token: &str, vsn: &str) -> Raw {
    let url = format!(
        "ws://{}/realtime/v1/websocket?apikey={token}&vsn={vsn}",
        server.addr
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    Raw::from_ws(ws)
}

/// Waits for the frame with `ref` (2.0.0 arrays: index 1).
async fn reply(c: &mut Raw, r: &str) -> Value {
    c.wait_for(|v| v[1] == json!(r)).await
}

/// realtime-js 2.0.0's binary user broadcast push.
fn binary_push(join_ref: &str, r: &str, event: &str, payload: &str) -> Vec<u8> {
    let mut v = vec![
        3,
        join_ref.len() as u8,
        r.len() as u8,
        TOPIC.len() as u8,
        event.len() as u8,
        0,
        1,
    ];
    for s in [join_ref, r, TOPIC, event] {
        v.extend_from_slice(s.as_bytes());
    }
    v.extend_from_slice(payload.as_bytes());
    v
}

#[tokio::test]
async fn realtime_js_frames_meet_ws_clients_on_one_channel() {
    let server = TestServer::start("");
    let mut native = server
        .connect(&server.token("u-ws", "org-1", "coordinator", &["w-1"]))
        .await;
    assert_eq!(native.create(CH, Some("w-1")).await["op"], "created");
    assert_eq!(native.subscribe(CH).await["op"], "subscribed");
    let token = server.token("u-rt", "org-1", "photographer", &["w-1"]);
    let mut rt = phoenix(&server, &token, "2.0.0").await;

    // Heartbeat.
    rt.send(json!([null, "1", "phoenix", "heartbeat", {}]))
        .await;
    assert_eq!(
        reply(&mut rt, "1").await[4],
        json!({"status": "ok", "response": {}})
    );
    // Join with ack, then the channel's presence.
    let config = json!({"config": {"broadcast": {"ack": true, "self": false},
        "presence": {"key": ""}, "postgres_changes": [], "private": false}});
    rt.send(json!(["3", "3", TOPIC, "phx_join", config])).await;
    let joined = reply(&mut rt, "3").await;
    assert_eq!(joined[0], "3");
    assert_eq!(
        joined[4],
        json!({"status": "ok", "response": {"postgres_changes": []}})
    );
    let state = rt.wait_for(|v| v[3] == "presence_state").await;
    assert_eq!(state[2], TOPIC);

    // A JSON broadcast: acked with its id once stored; the /ws subscriber has it.
    let b = json!({"type": "broadcast", "event": "cake", "payload": {"at": "21:15"}});
    rt.send(json!(["3", "4", TOPIC, "broadcast", b])).await;
    let ack = reply(&mut rt, "4").await;
    assert_eq!(ack[4], json!({"status": "ok", "response": {"id": 1}}));
    let m = native.messages(CH, 1).await;
    assert_eq!(m[0]["type"], "broadcast");
    assert_eq!(m[0]["event"], "cake");
    assert_eq!(m[0]["payload"], json!({"at": "21:15"}));
    assert_eq!(m[0]["sender"]["user_id"], "u-rt");
    // A binary push (realtime-js 2.0.0's shape for broadcasts).
    let bin = binary_push("3", "5", "cake", r#"{"at":"21:30"}"#);
    rt.ws.send(Message::Binary(bin.into())).await.unwrap();
    assert_eq!(reply(&mut rt, "5").await[4]["response"]["id"], 2);
    assert_eq!(
        native.messages(CH, 1).await[0]["payload"],
        json!({"at": "21:30"})
    );
    // A /ws publish reaches the Phoenix client as a broadcast; its own did not come back.
    native.publish(CH, json!({"n": 3})).await;
    let got = rt.wait_for(|v| v[3] == "broadcast").await;
    assert_eq!(got[2], TOPIC);
    assert_eq!(got[4]["meta"]["id"], 3);
    assert_eq!(got[4]["event"], "general");
    assert_eq!(got[4]["payload"], json!({"n": 3}));

    // Bad input: each its code, the connection and the /ws client unharmed.
    rt.send_text("not json").await;
    let e = rt.wait_for(|v| v[3] == "phx_error").await;
    assert_eq!(e[4]["code"], "WS_BAD_REQUEST");
    rt.send(json!(["6", "6", "realtime:wedding:*:w-1", "phx_join", {}]))
        .await;
    assert_eq!(
        reply(&mut rt, "6").await[4]["response"]["code"],
        "WS_INVALID_CHANNEL"
    );
    rt.send(json!(["7", "7", "wedding:main:w-1", "phx_join", {}]))
        .await;
    assert_eq!(
        reply(&mut rt, "7").await[4]["response"]["code"],
        "WS_INVALID_CHANNEL"
    );
    rt.send(json!([
        null,
        "8",
        "realtime:wedding:main:w-9",
        "broadcast",
        b
    ]))
    .await;
    assert_eq!(
        reply(&mut rt, "8").await[4]["response"]["code"],
        "WS_SUBSCRIPTION_FAILED"
    );
    let big = "x".repeat(70_000);
    let b = json!({"type": "broadcast", "event": "e", "payload": {"big": big}});
    rt.send(json!(["3", "9", TOPIC, "broadcast", b])).await;
    assert_eq!(
        reply(&mut rt, "9").await[4]["response"]["code"],
        "WS_PAYLOAD_TOO_LARGE"
    );
    rt.ws
        .send(Message::Binary(vec![3, 1].into()))
        .await
        .unwrap();
    assert_eq!(
        rt.wait_for(|v| v[3] == "phx_error").await[4]["code"],
        "WS_BAD_REQUEST"
    );
    let pg = json!({"config": {"postgres_changes": [{"event": "*", "schema": "public"}]}});
    rt.send(json!([
        "10",
        "10",
        "realtime:wedding:main:w-2",
        "phx_join",
        pg
    ]))
    .await;
    assert_eq!(
        reply(&mut rt, "10").await[4]["response"]["code"],
        "WS_BAD_REQUEST"
    );
    // Another wedding's channel: refused with the isolation code.
    let mut other = server
        .connect(&server.token("u-x", "org-1", "coordinator", &["w-2"]))
        .await;
    assert_eq!(
        other.create("wedding:main:w-2", Some("w-2")).await["op"],
        "created"
    );
    rt.send(json!([
        "11",
        "11",
        "realtime:wedding:main:w-2",
        "phx_join",
        {}
    ]))
    .await;
    let r = reply(&mut rt, "11").await;
    assert_eq!(r[4]["status"], "error");
    assert_eq!(r[4]["response"]["code"], "WS_WEDDING_ISOLATION_VIOLATION");
    // Still working, both ways.
    rt.send(json!([null, "12", "phoenix", "heartbeat", {}]))
        .await;
    assert_eq!(reply(&mut rt, "12").await[4]["status"], "ok");
    native.publish(CH, json!({"n": 4})).await;
    let got = rt.wait_for(|v| v[3] == "broadcast").await;
    assert_eq!(got[4]["payload"], json!({"n": 4}));
    // Leave: ok, and nothing more for that topic.
    rt.send(json!(["3", "13", TOPIC, "phx_leave", {}])).await;
    assert_eq!(reply(&mut rt, "13").await[4]["status"], "ok");
}

#[tokio::test]
async fn upgrades_without_a_key_or_with_an_unknown_vsn_are_refused() {
    let server = TestServer::start("");
    let token = server.token("u-rt", "org-1", "photographer", &["w-1"]);
    for (query, status) in [
        ("vsn=2.0.0".to_owned(), 401),
        (format!("apikey={token}&vsn=3.0.0"), 400),
        ("apikey=not-a-jwt&vsn=2.0.0".to_owned(), 401),
    ] {
        let url = format!("ws://{}/realtime/v1/websocket?{query}", server.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), status, "{query}")
            }
            other => panic!("{query}: expected HTTP {status}, got {other:?}"),
        }
    }
    // `/socket/websocket` (Phoenix's default path) is the same door; 1.0.0 is objects.
    let url = format!(
        "ws://{}/socket/websocket?apikey={token}&vsn=1.0.0",
        server.addr
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let mut c = Raw::from_ws(ws);
    c.send(json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "1"}))
        .await;
    let r = c.wait_for(|v| v["ref"] == "1").await;
    assert_eq!(r["event"], "phx_reply");
    assert_eq!(r["payload"]["status"], "ok");
}

/// One HTTP/1.1 POST with `Connection: close`: (status, JSON body).
fn post(server: &TestServer, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let status = text[9..12].parse().unwrap();
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[tokio::test]
async fn rest_broadcast_in_supabase_shape() {
    let server = TestServer::start("");
    let mut native = server
        .connect(&server.token("u-ws", "org-1", "coordinator", &["w-1"]))
        .await;
    assert_eq!(native.create(CH, Some("w-1")).await["op"], "created");
    assert_eq!(native.subscribe(CH).await["op"], "subscribed");
    let key = server.token("u-api", "org-1", "coordinator", &["w-1"]);
    let body = json!({"messages": [
        {"topic": CH, "event": "cake", "payload": {"at": "21:15"}, "private": false},
        {"topic": TOPIC, "event": "cake", "payload": {"at": "21:30"}},
    ]});
    // realtime-js sends its key in the `apikey` header.
    for path in ["/api/broadcast", "/realtime/v1/api/broadcast"] {
        let (status, v) = post(&server, path, &[("apikey", &key)], &body);
        assert_eq!(status, 202, "{v}");
        assert_eq!(v["success"], true);
        assert_eq!(v["data"]["messages"].as_array().unwrap().len(), 2);
    }
    let got = native.messages(CH, 4).await;
    let ids: Vec<u64> = got.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(got[1]["event"], "cake");
    assert_eq!(got[1]["type"], "broadcast");
    assert_eq!(got[1]["payload"], json!({"at": "21:30"}));
    // Refusals with their codes; nothing stored by them.
    let auth = format!("Bearer {key}");
    let h = [("Authorization", auth.as_str())];
    let cases = [
        (
            json!({"messages": [{"topic": CH, "event": "e", "payload": 1, "extra": 1}]}),
            400,
            "WS_BAD_REQUEST",
        ),
        (json!({"msgs": []}), 400, "WS_BAD_REQUEST"),
        (
            json!({"messages": [{"topic": "wedding:*:w-1", "event": "e", "payload": 1}]}),
            400,
            "WS_INVALID_CHANNEL",
        ),
        (
            json!({"messages": [{"topic": "wedding:main:w-9", "event": "e", "payload": 1}]}),
            404,
            "WS_CHANNEL_NOT_FOUND",
        ),
    ];
    for (b, status, code) in cases {
        let (s, v) = post(&server, "/api/broadcast", &h, &b);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{b} → {v}"
        );
    }
    let (s, v) = post(&server, "/api/broadcast", &[], &body);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("WS_UNAUTHORIZED"))
    );
    // Another wedding's channel, by a token without it.
    let mut other = server
        .connect(&server.token("u-x", "org-1", "coordinator", &["w-2"]))
        .await;
    assert_eq!(
        other.create("wedding:main:w-2", Some("w-2")).await["op"],
        "created"
    );
    let b = json!({"messages": [{"topic": "wedding:main:w-2", "event": "e", "payload": 1}]});
    let (s, v) = post(&server, "/api/broadcast", &h, &b);
    assert_eq!(
        v["error"]["code"], "WS_WEDDING_ISOLATION_VIOLATION",
        "{s} {v}"
    );
    native.publish(CH, json!({"n": 5})).await;
    assert_eq!(native.messages(CH, 1).await[0]["id"], 5);
}

/// `access_token` is `/ws`'s token refresh: another user's token is refused with
/// `WS_UNAUTHORIZED`; a fresh token of the same user that no longer reaches the channel
/// ends its subscription with a `system` message carrying the code, then `phx_close`.
#[tokio::test]
async fn access_token_refreshes_and_ends_what_it_no_longer_reaches() {
    let server = TestServer::start("");
    let mut native = server
        .connect(&server.token("u-ws", "org-1", "coordinator", &["w-1"]))
        .await;
    assert_eq!(native.create(CH, Some("w-1")).await["op"], "created");
    let token = server.token("u-rt", "org-1", "photographer", &["w-1"]);
    let mut rt = phoenix(&server, &token, "2.0.0").await;
    rt.send(json!(["1", "1", TOPIC, "phx_join", {"config": {}}]))
        .await;
    assert_eq!(reply(&mut rt, "1").await[4]["status"], "ok");
    let other = server.token("u-other", "org-1", "photographer", &["w-1"]);
    rt.send(json!(["1", "2", TOPIC, "access_token", {"access_token": other}]))
        .await;
    assert_eq!(
        reply(&mut rt, "2").await[4]["response"]["code"],
        "WS_UNAUTHORIZED"
    );
    let fresh = server.token("u-rt", "org-1", "photographer", &["w-1"]);
    rt.send(json!(["1", "3", TOPIC, "access_token", {"access_token": fresh}]))
        .await;
    assert_eq!(reply(&mut rt, "3").await[4]["status"], "ok");
    native.publish(CH, json!({"n": 1})).await;
    assert_eq!(
        rt.wait_for(|v| v[3] == "broadcast").await[4]["payload"],
        json!({"n": 1})
    );
    let elsewhere = server.token("u-rt", "org-1", "photographer", &["w-2"]);
    rt.send(json!(["1", "4", TOPIC, "access_token", {"access_token": elsewhere}]))
        .await;
    assert_eq!(reply(&mut rt, "4").await[4]["status"], "ok");
    let system = rt.wait_for(|v| v[3] == "system").await;
    assert_eq!(system[0], "1");
    assert_eq!(system[4]["code"], "WS_WEDDING_ISOLATION_VIOLATION");
    let close = rt.wait_for(|v| v[3] == "phx_close").await;
    assert_eq!(close[2], TOPIC);
    // The topic is no longer joined: a broadcast on it is refused.
    let b = json!({"type": "broadcast", "event": "e", "payload": {}});
    rt.send(json!(["1", "5", TOPIC, "broadcast", b])).await;
    let r = reply(&mut rt, "5").await;
    assert_eq!(r[4]["response"]["code"], "WS_SUBSCRIPTION_FAILED");
}

/// Joins `TOPIC` with `config` and waits for the ok.
async fn join(c: &mut Raw, r: &str, config: Value) {
    c.send(json!([r, r, TOPIC, "phx_join", {"config": config}]))
        .await;
    let joined = reply(c, r).await;
    assert_eq!(joined[4]["status"], "ok", "{joined}");
}

/// Who sees what, on this door too, with two organizations whose users share an id:
/// org-1's `u-1` and org-2's `u-1` (its token lists the wedding) both join the channel of
/// org-1's wedding. A message targeted at org-1's `u-1` reaches it alone, live and in a
/// replay after a restart; and their presences are two (`u-1` and `org-2/u-1`), not one.
#[tokio::test]
async fn two_organizations_users_with_one_id_stay_apart_on_this_door() {
    let mut server = TestServer::start("");
    let coord = server.token("coord", "org-1", "coordinator", &["w-1"]);
    let mut native = server.connect(&coord).await;
    assert_eq!(native.create(CH, Some("w-1")).await["op"], "created");
    let a = server.token("u-1", "org-1", "photographer", &["w-1"]);
    let b = server.token("u-1", "org-2", "photographer", &["w-1"]);
    let mut ra = phoenix(&server, &a, "2.0.0").await;
    let mut rb = phoenix(&server, &b, "2.0.0").await;
    join(&mut ra, "1", json!({"presence": {"key": ""}})).await;
    join(&mut rb, "1", json!({"presence": {"key": ""}})).await;
    for (c, what) in [(&mut ra, "org-1"), (&mut rb, "org-2")] {
        let track = json!({"type": "presence", "event": "track", "payload": {"who": what}});
        c.send(json!(["1", "2", TOPIC, "presence", track])).await;
        assert_eq!(reply(c, "2").await[4]["status"], "ok");
    }
    // Presence: a client joining now is handed two keys, one per organization's u-1.
    let watcher = server.token("w", "org-1", "coordinator", &["w-1"]);
    let mut rw = phoenix(&server, &watcher, "2.0.0").await;
    rw.send(json!(["1", "1", TOPIC, "phx_join", {"config": {}}]))
        .await;
    let state = rw.wait_for(|v| v[3] == "presence_state").await;
    let mut keys: Vec<&String> = state[4].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["org-2/u-1", "u-1"],
        "one presence per organization's u-1"
    );
    assert_eq!(state[4]["u-1"]["metas"][0]["who"], "org-1");
    assert_eq!(state[4]["org-2/u-1"]["metas"][0]["who"], "org-2");
    drop(rw);
    // Live: the targeted message reaches org-1's u-1 only; the open one reaches both.
    let p = native
        .request(json!({"op": "publish", "channel": CH, "type": "general", "payload": "for org-1/u-1", "target_user_id": "u-1"}))
        .await;
    assert_eq!(p["delivered_count"], 1, "{p}");
    native.publish(CH, json!("open")).await;
    let got = ra.wait_for(|v| v[3] == "broadcast").await;
    assert_eq!(got[4]["payload"], "for org-1/u-1");
    assert_eq!(
        ra.wait_for(|v| v[3] == "broadcast").await[4]["payload"],
        "open"
    );
    let got = rb.wait_for(|v| v[3] == "broadcast").await;
    assert_eq!(
        got[4]["payload"], "open",
        "org-2's u-1 never gets org-1's u-1's message"
    );
    drop((ra, rb, native));

    // After a restart, a replay from the start: the same rule.
    server.restart(None);
    let replay = json!({"broadcast": {"replay": {"since": 0, "limit": 50}}});
    let mut rb = phoenix(&server, &b, "2.0.0").await;
    join(&mut rb, "1", replay.clone()).await;
    let got = rb.wait_for(|v| v[3] == "broadcast").await;
    assert_eq!(got[4]["payload"], "open", "replayed: only what it may see");
    assert_eq!(got[4]["meta"]["id"], 2);
    let mut ra = phoenix(&server, &a, "2.0.0").await;
    join(&mut ra, "1", replay).await;
    let got = ra.wait_for(|v| v[3] == "broadcast").await;
    assert_eq!(got[4]["payload"], "for org-1/u-1");
    assert_eq!(
        ra.wait_for(|v| v[3] == "broadcast").await[4]["payload"],
        "open"
    );
}
