//! Bad input gets the SPEC's error code and loses nothing: malformed JSON, unknown ops,
//! invalid channel names (injection attempts included), oversized payloads and frames,
//! binary and non-UTF-8 frames, bad tokens and bad HTTP. Throughout, a bystander keeps
//! receiving its wedding's messages and the server keeps serving.

mod common;
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use tokio_tungstenite::tungstenite::Error as WsError;

const CH: &str = "wedding:main:w-1";

#[tokio::test]
async fn refused_requests_leave_the_connection_and_everyone_else_intact() {
    let server = TestServer::start("");
    let token = server.token("coord", "venue", "coordinator", &["w-1"]);
    let mut c = server.connect(&token).await;
    assert_eq!(c.create(CH, Some("w-1")).await["op"], "created");
    let mut bystander = server
        .connect(&server.token("photo", "studio", "photographer", &["w-1"]))
        .await;
    bystander.subscribe(CH).await;

    // Malformed JSON: no ref can be read, the error comes without one.
    for bad in ["{", "not json", "[1,2]", "\"op\"", "{\"op\":}", ""] {
        c.send_text(bad).await;
        let e = c.next().await;
        assert_error(&e, "WS_BAD_REQUEST");
        assert!(e.get("ref").is_none(), "{e}");
    }
    // Unknown or missing op, wrong field types: the ref is echoed.
    for req in [
        json!({"op": "explode"}),
        json!({"op": "SUBSCRIBE", "channel": CH}),
        json!({"channel": CH}),
        json!({"op": "subscribe"}),
        json!({"op": "subscribe", "channel": 42}),
        json!({"op": "ack", "channel": CH, "id": "seven"}),
        json!({"op": "publish", "channel": CH, "type": "general"}),
        json!({"op": "publish", "channel": CH, "type": "Not A Type", "payload": 1}),
        json!({"op": "publish", "channel": CH, "type": "general", "payload": 1, "priority": "urgent!"}),
        json!({"op": "create", "name": CH, "type": "secret"}),
        json!({"op": "create", "name": CH, "permissions": {"read": ["king"]}}),
    ] {
        let e = c.request(req.clone()).await;
        assert_error(&e, "WS_BAD_REQUEST");
    }
    // Invalid channel names, refused before any lookup.
    for name in [
        "wedding:main:w-1;DROP TABLE channels",
        "wedding:*:w-1",
        "wedding:main:*",
        "../../etc/passwd",
        "wedding:main:w-1\u{0}",
        "wedding:main:w-1\r\nX-Injected: 1",
        "Wedding:main:w-1",
        "wedding:main:w-1:extra",
        "wedding:main:' OR '1'='1",
        "wedding:main:<script>alert(1)</script>",
        "",
        &"x".repeat(129),
    ] {
        for req in [
            json!({"op": "subscribe", "channel": name}),
            json!({"op": "publish", "channel": name, "type": "general", "payload": 1}),
            json!({"op": "create", "name": name}),
        ] {
            assert_error(&c.request(req).await, "WS_INVALID_CHANNEL");
        }
    }
    // Unknown channel.
    assert_error(
        &c.subscribe("wedding:main:w-404").await,
        "WS_CHANNEL_NOT_FOUND",
    );
    // Not subscribed: ack, presence, typing.
    for req in [
        json!({"op": "ack", "channel": CH, "id": 1}),
        json!({"op": "presence", "channel": CH, "meta": {}}),
        json!({"op": "typing", "channel": CH}),
    ] {
        assert_error(&c.request(req).await, "WS_SUBSCRIPTION_FAILED");
    }
    // Wedding context of another wedding.
    let e = c.request(json!({"op": "publish", "channel": CH, "type": "general", "payload": 1, "wedding_context": {"wedding_id": "w-2"}})).await;
    assert_error(&e, "WS_INVALID_WEDDING_CONTEXT");
    // Oversized payload (limit 64 KiB): refused, the connection stays usable.
    let big = "x".repeat(64 * 1024);
    let e = c.publish(CH, json!(big)).await;
    assert_error(&e, "WS_PAYLOAD_TOO_LARGE");
    // A request over max_request_bytes but under the frame limit: same.
    // It is refused before parsing, so its ref cannot be echoed.
    c.send(json!({"op": "ping", "ref": "big", "junk": "y".repeat(100 * 1024)}))
        .await;
    let e = c.next().await;
    assert_error(&e, "WS_PAYLOAD_TOO_LARGE");
    assert!(e.get("ref").is_none(), "{e}");
    // Binary frames are refused.
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![1u8, 2, 3].into(),
    ))
    .await
    .unwrap();
    assert_error(&c.next().await, "WS_BAD_REQUEST");
    // Bad token refresh: refused, the old token stays in force.
    assert_error(
        &c.request(json!({"op": "token", "token": "garbage"})).await,
        "WS_UNAUTHORIZED",
    );
    let other_user = server.token("someone-else", "venue", "coordinator", &["w-1"]);
    assert_error(
        &c.request(json!({"op": "token", "token": other_user})).await,
        "WS_UNAUTHORIZED",
    );
    let fresh = server.token("coord", "venue", "coordinator", &["w-1"]);
    assert_eq!(
        c.request(json!({"op": "token", "token": fresh})).await["op"],
        "ok"
    );

    // After all of that, the connection works and the bystander saw only real messages.
    let p = c.publish(CH, json!({"real": 1})).await;
    assert_eq!(p["id"], 1, "nothing refused was stored: {p}");
    let got = bystander.messages(CH, 1).await;
    assert_eq!(got[0]["payload"]["real"], 1);
    assert_eq!(bystander.request(json!({"op": "ping"})).await["op"], "pong");
    assert!(
        bystander
            .backlog
            .iter()
            .all(|v| v["op"] != "message" && v["op"] != "error"),
        "{:?}",
        bystander.backlog
    );
}

#[tokio::test]
async fn frames_over_the_hard_limit_and_invalid_utf8_close_only_that_connection() {
    let server = TestServer::start("");
    let token = server.token("coord", "venue", "coordinator", &["w-1"]);
    let mut c = server.connect(&token).await;
    c.create(CH, Some("w-1")).await;
    let mut bystander = server
        .connect(&server.token("photo", "studio", "photographer", &["w-1"]))
        .await;
    bystander.subscribe(CH).await;

    // Over max_frame_bytes (1 MiB): error, then close 1009.
    let mut raw = RawTcp::upgrade(server.addr, "/ws", &token, None);
    raw.send_frame(0x1, &vec![b' '; 1024 * 1024 + 1]);
    let e = raw.read_json().expect("an error before the close");
    assert_error(&e, "WS_PAYLOAD_TOO_LARGE");
    let (op, payload) = raw.read_frame().expect("close frame");
    assert_eq!(op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);

    // Text that is not UTF-8: close 1007.
    let mut raw = RawTcp::upgrade(server.addr, "/ws", &token, None);
    raw.send_frame(0x1, &[0xff, 0xfe, 0xfd]);
    let (op, payload) = raw.read_frame().expect("close frame");
    assert_eq!(op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);

    // An unmasked client frame is a protocol error: close 1002.
    let mut raw = RawTcp::upgrade(server.addr, "/ws", &token, None);
    raw.s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let (op, payload) = raw.read_frame().expect("close frame");
    assert_eq!(op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);

    let p = c.publish(CH, json!({"still": "here"})).await;
    assert_eq!(p["delivered_count"], 1, "{p}");
    assert_eq!(
        bystander.messages(CH, 1).await[0]["payload"]["still"],
        "here"
    );
}

/// The HTTP status and body code of a refused upgrade.
async fn refused(url: &str, token: Option<&str>) -> (u16, String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Err(WsError::Http(resp)) => {
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}")).unwrap();
            assert_eq!(body["success"], false, "{body}");
            (
                resp.status().as_u16(),
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("upgrade was accepted"),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let server = TestServer::start("");
    let url = server.url();
    let now = now_s();
    let claims = |exp: u64, nbf: u64| json!({"sub": "u", "org": "o", "role": "couple", "tier": "free", "weddings": ["w-1"], "exp": exp, "nbf": nbf});
    let expired = server.token_claims(claims(now - 3600, now - 7200));
    let not_yet = server.token_claims(claims(now + 7200, now + 3600));
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(now + 3600, now),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-servers-secret-not-the-servers"),
    )
    .unwrap();
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims(now + 3600, now),
        &jsonwebtoken::EncodingKey::from_secret(&server.secret()),
    )
    .unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims(now + 3600, now).to_string())
    );
    let star_couple = server.token_claims(json!({"sub": "u", "org": "o", "role": "couple", "tier": "free", "weddings": ["*"], "exp": now + 3600}));
    let no_exp = server.token_claims(
        json!({"sub": "u", "org": "o", "role": "couple", "tier": "free", "weddings": []}),
    );
    let bad_role = server.token_claims(json!({"sub": "u", "org": "o", "role": "emperor", "tier": "free", "weddings": [], "exp": now + 3600}));
    for (what, t) in [
        ("expired", Some(expired.as_str())),
        ("not yet valid", Some(not_yet.as_str())),
        ("wrong key", Some(wrong_key.as_str())),
        ("algorithm confusion (HS512)", Some(hs512.as_str())),
        ("alg none", Some(alg_none.as_str())),
        ("* for a couple", Some(star_couple.as_str())),
        ("no exp", Some(no_exp.as_str())),
        ("unknown role", Some(bad_role.as_str())),
        ("garbage", Some("a.b.c")),
        ("missing", None),
    ] {
        assert_eq!(
            refused(&url, t).await,
            (401, "WS_UNAUTHORIZED".to_owned()),
            "{what}"
        );
    }
    // The token may also come as ?token= or in Sec-WebSocket-Protocol.
    let good = server.token("u", "o", "couple", &["w-1"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}?token={good}"))
        .await
        .unwrap();
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"op":"ping","ref":"q"}"#.into(),
    ))
    .await
    .unwrap();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("ringbearer.v1, {good}").parse().unwrap(),
    );
    let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "ringbearer.v1");
}

#[tokio::test]
async fn bad_http_gets_a_clear_status() {
    let server = TestServer::start("");
    let ask = |req: Vec<u8>| {
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(&req).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let r = ask(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    assert!(r.starts_with("HTTP/1.1 426"), "{r}");
    let r = ask(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec());
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(r.contains("WS_BAD_REQUEST"), "{r}");
    let r = ask(b"\x16\x03\x01\x02\x00 binary garbage\r\n\r\n".to_vec());
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let mut huge = b"GET /ws HTTP/1.1\r\n".to_vec();
    huge.extend(
        std::iter::repeat_n(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".as_slice(),
            400,
        )
        .flatten(),
    );
    let r = ask(huge);
    assert!(
        r.starts_with("HTTP/1.1 431") || r.starts_with("HTTP/1.1 400"),
        "{r}"
    );
    // The echo endpoint is off by default.
    let r = ask(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec());
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    // Still serving.
    let mut c = server.connect(&server.token("u", "o", "couple", &[])).await;
    assert_eq!(c.request(json!({"op": "ping"})).await["op"], "pong");
}
