//! Proves the two doors apply one rule to request JSON (docs/protocol.md "Unknown fields"
//! and `limits.max_json_depth`): a field the op does not take is refused with
//! `WS_BAD_REQUEST` naming it on `/ws` as on REST, and nesting deeper than `max_json_depth`
//! (64) is refused on both, while 64 levels pass on both; the WebSocket stays usable after
//! each refusal.

mod common;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CH: &str = "venue:ops:v-1";

/// One REST call with a raw body; returns (status, JSON body).
async fn rest(server: &TestServer, path: &str, token: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    (status, serde_json::from_str(body).unwrap())
}

/// `{"a":{"a":…1…}}`-free nesting: `n` arrays around `1`.
fn nested(n: usize) -> String {
    format!("{}1{}", "[".repeat(n), "]".repeat(n))
}

fn assert_refused(v: &Value, needle: &str) {
    assert_eq!(v["op"], "error", "{v}");
    assert_eq!(v["code"], "WS_BAD_REQUEST", "{v}");
    assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
}

fn assert_rest_refused((status, v): &(u16, Value), needle: &str) {
    assert_eq!(*status, 400, "{v}");
    assert_eq!(v["error"]["code"], "WS_BAD_REQUEST", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(needle),
        "{v}"
    );
}

#[tokio::test]
async fn both_doors_refuse_unknown_fields_and_deep_nesting_alike() {
    let server = TestServer::start("");
    let token = server.token("planner", "venue", "coordinator", &[]);
    let mut ws = server.connect(&token).await;
    assert_eq!(ws.create(CH, None).await["op"], "created");

    // Unknown fields, named, on /ws (the `ref` is still echoed)…
    let r = ws
        .request(json!({"op": "subscribe", "channel": CH, "last_seen": 3}))
        .await;
    assert_refused(&r, "unknown field `last_seen`");
    let r = ws
        .request(json!({"op": "create", "name": "venue:ops:v-2", "description": "x"}))
        .await;
    assert_refused(&r, "unknown field `description`");
    // …a field of another op…
    let r = ws.request(json!({"op": "ping", "channel": CH})).await;
    assert_refused(&r, "unknown field `channel`");
    // …and on REST, worded the same.
    let body = json!({"channel_name": CH, "content": {"a": 1}, "type": "general", "priority": "normal", "colour": "red"});
    assert_rest_refused(
        &rest(
            &server,
            "/api/websocket/channels/broadcast",
            &token,
            &body.to_string(),
        )
        .await,
        "unknown field `colour`",
    );

    // Nesting: the request object is level 1, so a payload of 63 arrays is level 64.
    let publish = |payload: &str| {
        format!(
            r#"{{"op":"publish","ref":"deep","channel":"{CH}","type":"general","payload":{payload}}}"#
        )
    };
    ws.send_text(&publish(&nested(63))).await;
    let ok = ws.wait_for(|v| v["ref"] == "deep").await;
    assert_eq!(ok["op"], "published", "{ok}");
    for n in [64, 20_000] {
        ws.send_text(&publish(&nested(n))).await;
        let r = ws.wait_for(|v| v["op"] == "error").await;
        assert_refused(&r, "max_json_depth");
    }
    let broadcast = |content: &str| {
        format!(
            r#"{{"channel_name":"{CH}","type":"general","priority":"normal","content":{content}}}"#
        )
    };
    let (status, v) = rest(
        &server,
        "/api/websocket/channels/broadcast",
        &token,
        &broadcast(&nested(63)),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for n in [64, 20_000] {
        assert_rest_refused(
            &rest(
                &server,
                "/api/websocket/channels/broadcast",
                &token,
                &broadcast(&nested(n)),
            )
            .await,
            "max_json_depth",
        );
    }

    // The connection is still fine, and so is the channel.
    assert_eq!(ws.request(json!({"op": "ping"})).await["op"], "pong");
    assert_eq!(
        ws.publish(CH, json!({"after": true})).await["op"],
        "published"
    );
}
