//! The REST API of SPEC §4 over real sockets (2 shards): every endpoint's success shape,
//! the failure shapes with their HTTP statuses (bad credentials, content type, JSON,
//! fields, sizes, paths, methods, tenant boundary, limits), `WS_CHANNEL_FULL` at
//! `max_subscribers`, audit records for what the test did, and health/metrics figures
//! that equal what the test drove.

mod common;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "test-key-0123456789abcdef0123";

fn config(extra: &str) -> String {
    format!(
        "[[rest.api_keys]]\nname = \"venue-backend\"\norganization_id = \"org-1\"\nkey = \"{KEY}\"\n{extra}"
    )
}

/// One HTTP response: status, headers (lowercased names), body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// Asserts the SPEC §4 failure shape with `status` and `code`; returns the error.
    fn refused(&self, status: u16, code: &str) -> Value {
        let v = self.json();
        assert_eq!(self.status, status, "{v}");
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(v["error"]["retryable"].is_boolean());
        v["error"].clone()
    }
    fn data(&self) -> Value {
        let v = self.json();
        assert_eq!(self.status, 200, "{v}");
        assert_eq!(v["success"], true, "{v}");
        v["data"].clone()
    }
}

/// Reads one response (Content-Length framed) from `s`, leaving anything after it.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Resp {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = r.parse(buf).expect("an HTTP response") {
            let status = r.code.unwrap();
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            while buf.len() < n + len {
                read_some(s, buf).await;
            }
            let body = buf[n..n + len].to_vec();
            buf.drain(..n + len);
            return Resp {
                status,
                headers,
                body,
            };
        }
        read_some(s, buf).await;
    }
}

async fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
        .await
        .expect("response in time")
        .unwrap();
    assert!(n > 0, "connection closed before a whole response");
    buf.extend_from_slice(&chunk[..n]);
}

fn request_bytes(
    method: &str,
    path: &str,
    auth: &[(&str, &str)],
    body: Option<&[u8]>,
    ct: &str,
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (k, v) in auth {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    r.push_str("Connection: close\r\n\r\n");
    let mut r = r.into_bytes();
    if let Some(b) = body {
        r.extend_from_slice(b);
    }
    r
}

async fn http(server: &TestServer, bytes: &[u8]) -> Resp {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_response(&mut s, &mut Vec::new()).await
}

async fn post(server: &TestServer, path: &str, auth: (&str, &str), body: Value) -> Resp {
    let b = serde_json::to_vec(&body).unwrap();
    http(
        server,
        &request_bytes("POST", path, &[auth], Some(&b), "application/json"),
    )
    .await
}

async fn get(server: &TestServer, path: &str, auth: &[(&str, &str)]) -> Resp {
    http(server, &request_bytes("GET", path, auth, None, "")).await
}

fn key() -> (&'static str, &'static str) {
    ("X-API-Key", KEY)
}

fn bearer(t: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {t}"))
}

const CREATE: &str = "/api/websocket/channels/create";
const SUBSCRIBE: &str = "/api/websocket/channels/subscribe";
const BROADCAST: &str = "/api/websocket/channels/broadcast";
const UNSUBSCRIBE: &str = "/api/websocket/channels/unsubscribe";
const LIST: &str = "/api/websocket/channels/list";
const WEDDINGS: &str = "/api/websocket/weddings";
const AUDIT: &str = "/api/websocket/audit";

#[tokio::test]
async fn every_endpoint_answers_its_success_shape() {
    let server = TestServer::start(&config(""));
    let today = {
        let d = (now_s() / 86_400) as i64;
        // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
        let z = d + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let dd = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}-{dd:02}")
    };
    let w = post(
        &server,
        WEDDINGS,
        key(),
        json!({"wedding_id": "w-1", "event_date": today, "time_zone": "UTC"}),
    )
    .await
    .data();
    assert_eq!(w["wedding_id"], "w-1");
    assert_eq!(w["organization_id"], "org-1");
    assert_eq!(w["is_wedding_day"], true, "{w}");

    let coord = server.token("u-coord", "org-1", "coordinator", &["w-1"]);
    let created = post(
        &server,
        CREATE,
        (bearer(&coord).0, &bearer(&coord).1),
        json!({"name": "wedding:main:w-1", "type": "shared", "wedding_id": "w-1",
               "organization_id": "org-1", "description": "the main feed"}),
    )
    .await
    .data();
    let channel_id = created["channel_id"].as_str().unwrap().to_owned();
    assert_eq!(created["channel_name"], "wedding:main:w-1");
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(created["wedding_context"]["wedding_id"], "w-1");
    assert_eq!(created["wedding_context"]["event_date"], today.as_str());
    assert_eq!(created["wedding_context"]["is_wedding_day"], true);

    // A service subscribes an offline user by channel id; a WebSocket user is online.
    let sub = post(
        &server,
        SUBSCRIBE,
        key(),
        json!({"channel_id": channel_id, "user_id": "u-away"}),
    )
    .await
    .data();
    assert_eq!(sub["channel_id"], channel_id.as_str());
    assert_eq!(sub["user_id"], "u-away");
    assert_eq!(sub["wedding_day_priority"], true);
    assert!(sub["subscription_id"].as_str().is_some());
    assert!(sub["subscribed_at"].as_str().is_some());
    let mut online = server
        .connect(&server.token("u-here", "org-1", "photographer", &["w-1"]))
        .await;
    assert_eq!(
        online.subscribe("wedding:main:w-1").await["op"],
        "subscribed"
    );

    let sent = post(
        &server,
        BROADCAST,
        key(),
        json!({"channel_name": "wedding:main:w-1", "type": "timeline_change",
               "priority": "high", "event": "timeline:moved", "content": {"at": "15:30"},
               "idempotency_key": "move-1"}),
    )
    .await
    .data();
    assert_eq!(sent["message_id"], 1);
    assert_eq!(sent["delivered_count"], 1);
    assert_eq!(sent["queued_count"], 1);
    assert_eq!(
        sent["delivery_guarantees"]["immediate_delivery"],
        json!(["u-here"])
    );
    assert_eq!(
        sent["delivery_guarantees"]["queued_delivery"],
        json!(["u-away"])
    );
    assert_eq!(sent["delivery_guarantees"]["failed_delivery"], json!([]));
    let m = online.messages("wedding:main:w-1", 1).await;
    assert_eq!(m[0]["payload"], json!({"at": "15:30"}));
    assert_eq!(m[0]["sender"]["role"], "service");
    // Idempotent: the same key answers the first id.
    let again = post(
        &server,
        BROADCAST,
        key(),
        json!({"channel_name": "wedding:main:w-1", "type": "timeline_change",
               "priority": "high", "content": {"at": "15:30"}, "idempotency_key": "move-1"}),
    )
    .await
    .data();
    assert_eq!(again["message_id"], 1);

    // The offline user's list shows it unread; history comes with a subscribe.
    let list = get(&server, &format!("{LIST}?user_id=u-away"), &[key()])
        .await
        .data();
    assert_eq!(list["channels"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["channels"][0]["name"], "wedding:main:w-1");
    assert_eq!(list["channels"][0]["type"], "shared");
    assert_eq!(list["channels"][0]["unread_count"], 1);
    assert_eq!(list["channels"][0]["active_users"], 1);
    let hist = post(
        &server,
        SUBSCRIBE,
        key(),
        json!({"channel_name": "wedding:main:w-1", "user_id": "u-away", "include_history": true}),
    )
    .await
    .data();
    assert_eq!(hist["historical_messages"][0]["id"], 1, "{hist}");

    let gone = post(
        &server,
        UNSUBSCRIBE,
        key(),
        json!({"channel_name": "wedding:main:w-1", "user_id": "u-away", "cleanup_queues": true}),
    )
    .await
    .data();
    assert!(gone["unsubscribed_at"].as_str().is_some());
    assert!(gone["cleaned_resources"]
        .as_array()
        .unwrap()
        .contains(&json!("subscription")));
    let list = get(&server, &format!("{LIST}?user_id=u-away"), &[key()])
        .await
        .data();
    assert_eq!(list["channels"], json!([]));

    // The audit log holds what happened, filterable by channel and user.
    let audit = get(
        &server,
        &format!("{AUDIT}?channel=wedding:main:w-1"),
        &[key()],
    )
    .await
    .data();
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for a in ["create", "subscribe", "unsubscribe"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let by_coord = get(&server, &format!("{AUDIT}?user_id=u-coord"), &[key()])
        .await
        .data();
    assert!(by_coord["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["actor_user_id"] == "u-coord"));
    assert_eq!(by_coord["records"][0]["action"], "create");
    // ... and by time: nothing from an hour ahead, everything up to it.
    let later = (now_s() + 3600) * 1000;
    let none = get(&server, &format!("{AUDIT}?from={later}"), &[key()])
        .await
        .data();
    assert_eq!(none["records"], json!([]));
    let upto = get(&server, &format!("{AUDIT}?to={later}&limit=1000"), &[key()])
        .await
        .data();
    assert!(upto["records"].as_array().unwrap().len() >= actions.len());
    let admin = get(
        &server,
        &format!("{AUDIT}?user_id=service:venue-backend"),
        &[key()],
    )
    .await
    .data();
    assert!(admin["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "admin"));

    let health = get(&server, "/api/websocket/health", &[]).await.data();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["metrics"]["active_connections"], 1);
    assert_eq!(health["metrics"]["wedding_day_mode"], true, "{health}");
    assert_eq!(health["wedding_analytics"]["active_weddings_today"], 1);
    let metrics = get(&server, "/api/websocket/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
}

#[tokio::test]
async fn every_failure_has_its_shape_and_status() {
    let server = TestServer::start(&config("[limits]\nchannel_messages_per_min = 2\n"));
    let coord = server.token("u-1", "org-1", "coordinator", &["w-1"]);
    let auth = bearer(&coord);
    let auth = (auth.0, auth.1.as_str());
    let body = json!({"name": "wedding:main:w-1", "wedding_id": "w-1"});

    // Credentials.
    let b = serde_json::to_vec(&body).unwrap();
    http(
        &server,
        &request_bytes("POST", CREATE, &[], Some(&b), "application/json"),
    )
    .await
    .refused(401, "WS_UNAUTHORIZED");
    post(
        &server,
        CREATE,
        ("Authorization", "Bearer not.a.jwt"),
        body.clone(),
    )
    .await
    .refused(401, "WS_UNAUTHORIZED");
    post(
        &server,
        CREATE,
        ("X-API-Key", "wrong-key-0123456789abcdef"),
        body.clone(),
    )
    .await
    .refused(401, "WS_UNAUTHORIZED");
    // Shapes of the request itself.
    http(
        &server,
        &request_bytes("POST", CREATE, &[auth], Some(&b), "text/plain"),
    )
    .await
    .refused(415, "WS_BAD_REQUEST");
    http(
        &server,
        &request_bytes(
            "POST",
            CREATE,
            &[auth],
            Some(b"{\"name\":"),
            "application/json",
        ),
    )
    .await
    .refused(400, "WS_BAD_REQUEST");
    http(
        &server,
        &request_bytes("POST", CREATE, &[auth], Some(b"[1,2]"), "application/json"),
    )
    .await
    .refused(400, "WS_BAD_REQUEST");
    post(
        &server,
        CREATE,
        auth,
        json!({"name": "wedding:main:w-1", "colour": "red"}),
    )
    .await
    .refused(400, "WS_BAD_REQUEST");
    let big = vec![b' '; 200 * 1024];
    http(
        &server,
        &request_bytes("POST", CREATE, &[auth], Some(&big), "application/json"),
    )
    .await
    .refused(413, "WS_PAYLOAD_TOO_LARGE");
    let chunked = format!(
        "POST {CREATE} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {coord}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    http(&server, chunked.as_bytes())
        .await
        .refused(411, "WS_BAD_REQUEST");
    get(&server, "/api/websocket/nothing", &[auth])
        .await
        .refused(404, "WS_BAD_REQUEST");
    let r = get(&server, CREATE, &[auth]).await;
    r.refused(405, "WS_BAD_REQUEST");
    assert_eq!(r.header("allow"), Some("POST"));
    // The channel rules (the same as the WebSocket door's).
    post(
        &server,
        CREATE,
        auth,
        json!({"name": "wedding:main:w-1", "description": "x".repeat(1025)}),
    )
    .await
    .refused(400, "WS_BAD_REQUEST");
    post(
        &server,
        CREATE,
        auth,
        json!({"name": "wedding:main:w-1;drop"}),
    )
    .await
    .refused(400, "WS_INVALID_CHANNEL");
    post(
        &server,
        CREATE,
        auth,
        json!({"name": "wedding:main:w-2", "wedding_id": "w-2"}),
    )
    .await
    .refused(403, "WS_WEDDING_ISOLATION_VIOLATION");
    post(
        &server,
        CREATE,
        auth,
        json!({"name": "wedding:main:w-1", "organization_id": "org-2"}),
    )
    .await
    .refused(403, "WS_FORBIDDEN");
    post(
        &server,
        SUBSCRIBE,
        auth,
        json!({"channel_name": "wedding:main:nowhere"}),
    )
    .await
    .refused(404, "WS_CHANNEL_NOT_FOUND");
    post(
        &server,
        SUBSCRIBE,
        auth,
        json!({"channel_id": "ch_00000000000000000001"}),
    )
    .await
    .refused(404, "WS_CHANNEL_NOT_FOUND");
    post(&server, CREATE, auth, body.clone()).await.data();
    post(
        &server,
        SUBSCRIBE,
        auth,
        json!({"channel_name": "wedding:main:w-1", "user_id": "someone-else"}),
    )
    .await
    .refused(403, "WS_FORBIDDEN");
    let outsider = server.token("u-x", "org-2", "photographer", &["w-9"]);
    let o = bearer(&outsider);
    post(
        &server,
        SUBSCRIBE,
        (o.0, &o.1),
        json!({"channel_name": "wedding:main:w-1"}),
    )
    .await
    .refused(403, "WS_WEDDING_ISOLATION_VIOLATION");
    post(
        &server,
        WEDDINGS,
        auth,
        json!({"wedding_id": "w-1", "event_date": "2026-06-13", "time_zone": "UTC"}),
    )
    .await
    .refused(403, "WS_FORBIDDEN");
    post(
        &server,
        WEDDINGS,
        key(),
        json!({"wedding_id": "w-1", "event_date": "2026-13-40", "time_zone": "UTC"}),
    )
    .await
    .refused(400, "WS_INVALID_WEDDING_CONTEXT");
    get(&server, AUDIT, &[auth])
        .await
        .refused(403, "WS_FORBIDDEN");
    get(&server, &format!("{AUDIT}?limit=0"), &[key()])
        .await
        .refused(400, "WS_BAD_REQUEST");
    // Limits: the channel takes 2 a minute; the third is refused with when to retry.
    let msg = json!({"channel_name": "wedding:main:w-1", "type": "general", "priority": "normal", "content": 1});
    post(&server, BROADCAST, auth, msg.clone()).await.data();
    post(&server, BROADCAST, auth, msg.clone()).await.data();
    let r = post(&server, BROADCAST, auth, msg.clone()).await;
    let e = r.refused(429, "WS_RATE_LIMITED");
    assert_eq!(e["retryable"], true);
    assert!(e["retryAfter"].as_u64().unwrap() >= 1, "{e}");
    assert_eq!(
        r.header("retry-after").map(str::to_owned),
        Some(e["retryAfter"].to_string())
    );
    post(&server, BROADCAST, auth, json!({"channel_name": "wedding:main:w-1", "type": "general", "priority": "urgent!", "content": 1}))
        .await
        .refused(400, "WS_BAD_REQUEST");

    // The refused isolation attempt is in the audit log as denied, where the channel's own
    // organization sees it (SPEC §1), filed under the attacker's organization.
    let audit = get(&server, &format!("{AUDIT}?user_id=u-x"), &[key()])
        .await
        .data();
    let records = audit["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{audit}");
    assert_eq!(records[0]["action"], "denied");
    assert_eq!(records[0]["actor_org"], "org-2");
    assert_eq!(records[0]["channel_org"], "org-1");
    // Nothing above disturbed the server: WebSocket still works.
    let mut c = server.connect(&coord).await;
    assert_eq!(c.subscribe("wedding:main:w-1").await["op"], "subscribed");
}

#[tokio::test]
async fn denied_access_is_audited_for_the_callers_organization() {
    let server = TestServer::start(&config(""));
    let coord = server.token("u-1", "org-1", "coordinator", &["w-1"]);
    let a = bearer(&coord);
    post(
        &server,
        CREATE,
        (a.0, &a.1),
        json!({"name": "wedding:main:w-1", "wedding_id": "w-1", "type": "private"}),
    )
    .await
    .data();
    // A guest of the same organization and wedding is refused a private channel.
    let guest = server.token("u-guest", "org-1", "guest", &["w-1"]);
    let g = bearer(&guest);
    post(
        &server,
        SUBSCRIBE,
        (g.0, &g.1),
        json!({"channel_name": "wedding:main:w-1"}),
    )
    .await
    .refused(403, "WS_FORBIDDEN");
    let audit = get(&server, &format!("{AUDIT}?user_id=u-guest"), &[key()])
        .await
        .data();
    let r = &audit["records"][0];
    assert_eq!(r["action"], "denied", "{audit}");
    assert_eq!(r["channel"], "wedding:main:w-1");
    assert_eq!(r["detail"]["code"], "WS_FORBIDDEN");
}

#[tokio::test]
async fn another_organizations_service_lists_nothing_of_ours() {
    let other_key = "other-key-0123456789abcdef012";
    let server = TestServer::start(&config(&format!(
        "[[rest.api_keys]]\nname = \"snoop\"\norganization_id = \"org-2\"\nkey = \"{other_key}\"\n"
    )));
    post(
        &server,
        CREATE,
        key(),
        json!({"name": "venue:private-notes:v-1", "type": "private", "members": ["u-1"]}),
    )
    .await
    .data();
    post(
        &server,
        SUBSCRIBE,
        key(),
        json!({"channel_name": "venue:private-notes:v-1", "user_id": "u-1"}),
    )
    .await
    .data();
    let ours = get(&server, &format!("{LIST}?user_id=u-1"), &[key()])
        .await
        .data();
    assert_eq!(ours["channels"].as_array().unwrap().len(), 1, "{ours}");
    let theirs = get(
        &server,
        &format!("{LIST}?user_id=u-1"),
        &[("X-API-Key", other_key)],
    )
    .await
    .data();
    assert_eq!(theirs["channels"], json!([]), "{theirs}");
    // Nor can it subscribe the user, publish, or unsubscribe anyone there.
    let other = ("X-API-Key", other_key);
    post(
        &server,
        SUBSCRIBE,
        other,
        json!({"channel_name": "venue:private-notes:v-1", "user_id": "u-9"}),
    )
    .await
    .refused(403, "WS_FORBIDDEN");
    post(
        &server,
        BROADCAST,
        other,
        json!({"channel_name": "venue:private-notes:v-1", "type": "general", "content": 1}),
    )
    .await
    .refused(403, "WS_FORBIDDEN");
    post(
        &server,
        UNSUBSCRIBE,
        other,
        json!({"channel_name": "venue:private-notes:v-1", "user_id": "u-1"}),
    )
    .await
    .refused(403, "WS_FORBIDDEN");
}

#[tokio::test]
async fn channel_full_at_max_subscribers_on_both_doors() {
    let server = TestServer::start(&config(""));
    post(
        &server,
        CREATE,
        key(),
        json!({"name": "venue:ballroom:v-1", "max_subscribers": 2}),
    )
    .await
    .data();
    for u in ["a", "b"] {
        post(
            &server,
            SUBSCRIBE,
            key(),
            json!({"channel_name": "venue:ballroom:v-1", "user_id": u}),
        )
        .await
        .data();
    }
    post(
        &server,
        SUBSCRIBE,
        key(),
        json!({"channel_name": "venue:ballroom:v-1", "user_id": "c"}),
    )
    .await
    .refused(409, "WS_CHANNEL_FULL");
    let mut ws = server
        .connect(&server.token("d", "org-1", "venue", &[]))
        .await;
    assert_error(&ws.subscribe("venue:ballroom:v-1").await, "WS_CHANNEL_FULL");
    // A member already in comes back in.
    let mut a = server
        .connect(&server.token("a", "org-1", "venue", &[]))
        .await;
    assert_eq!(a.subscribe("venue:ballroom:v-1").await["op"], "subscribed");
}

#[tokio::test]
async fn health_and_metrics_count_what_was_driven() {
    let server = TestServer::start(&config(""));
    let t = |u: &str| server.token(u, "org-1", "photographer", &["w-1"]);
    let mut publisher = server
        .connect(&server.token("p", "org-1", "coordinator", &["w-1"]))
        .await;
    publisher.create("wedding:main:w-1", Some("w-1")).await;
    // Three subscribers; with 2 shards, connections land on both.
    let mut subs = Vec::new();
    for u in ["s1", "s2", "s3"] {
        let mut c = server.connect(&t(u)).await;
        assert_eq!(c.subscribe("wedding:main:w-1").await["op"], "subscribed");
        subs.push(c);
    }
    const N: u64 = 5;
    for i in 0..N {
        assert_eq!(
            publisher.publish("wedding:main:w-1", json!(i)).await["op"],
            "published"
        );
    }
    for c in &mut subs {
        assert_eq!(
            c.messages("wedding:main:w-1", N as usize).await.len(),
            N as usize
        );
    }
    let h = get(&server, "/api/websocket/health", &[]).await.data();
    assert_eq!(h["metrics"]["total_messages"], N, "{h}");
    assert_eq!(h["metrics"]["total_deliveries"], 3 * N, "{h}");
    assert_eq!(h["metrics"]["active_connections"], 4);
    assert_eq!(h["metrics"]["total_channels"], 1);
    assert_eq!(
        h["wedding_analytics"]["supplier_activity"]["photographers"],
        3
    );
    assert!(h["metrics"]["p99_latency_ms"].as_f64().is_some());
    let m = String::from_utf8(get(&server, "/api/websocket/metrics", &[]).await.body).unwrap();
    let value = |name: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("ringbearer_messages_published_total"), N);
    assert_eq!(value("ringbearer_deliveries_total"), 3 * N);
    assert_eq!(value("ringbearer_connections"), 4);
    assert_eq!(value("ringbearer_channels"), 1);
    assert!(value("ringbearer_delivery_latency_seconds_count") >= 1);
    assert!(m.contains("ringbearer_delivery_latency_seconds_bucket{le=\"+Inf\"}"));
    // A refusal is counted by its code.
    let e = publisher.publish("wedding:main:nowhere", json!(1)).await;
    assert_error(&e, "WS_CHANNEL_NOT_FOUND");
    let m = String::from_utf8(get(&server, "/api/websocket/metrics", &[]).await.body).unwrap();
    assert!(
        m.contains("ringbearer_refusals_total{code=\"WS_CHANNEL_NOT_FOUND\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn requests_share_a_kept_alive_connection() {
    let server = TestServer::start(&config(""));
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..3 {
        s.write_all(b"GET /api/websocket/health HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut s, &mut buf).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    // Two pipelined requests in one write are answered in order.
    s.write_all(b"GET /api/websocket/health HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s, &mut buf).await.status, 200);
    let last = read_response(&mut s, &mut buf).await;
    assert_eq!(last.status, 404);
    assert_eq!(last.header("connection"), Some("close"));
}
