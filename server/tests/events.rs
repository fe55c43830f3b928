//! The admin page's live stream, `GET /api/websocket/events` (server-sent events), over raw
//! TCP against the real binary with 2 shards: `health` events keep coming on one request and
//! follow a publish made meanwhile; only an admin or service caller gets it (403, 401
//! otherwise); `?channel_name=` adds the channel's `detail`, and another organization's
//! channel gives one `error` event with the refusal code, then the end of the stream; the
//! per-shard bound answers 503 `WS_OVERLOADED` with `Retry-After`; SIGTERM stops the server
//! promptly with a stream open.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP response read incrementally: its head, then server-sent events as they come.
struct Stream {
    s: TcpStream,
    status: u16,
    head: String,
    buf: Vec<u8>,
}

impl Stream {
    /// Sends `GET path` with `auth` (a whole header line, or none) and reads the head.
    async fn open(server: &TestServer, path: &str, auth: Option<&str>) -> Stream {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let auth = auth.map(|a| format!("{a}\r\n")).unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
                .await
                .expect("a response head in time")
                .unwrap();
            assert!(n > 0, "closed before a whole head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).unwrap();
        buf.drain(..end + 4);
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Stream {
            s,
            status,
            head,
            buf,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// A non-streamed answer's JSON body (it has a Content-Length).
    async fn body(mut self) -> Value {
        let len: usize = self.header("Content-Length").unwrap().parse().unwrap();
        while self.buf.len() < len {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.s.read(&mut chunk))
                .await
                .expect("a body in time")
                .unwrap();
            assert!(n > 0, "closed before the whole body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        serde_json::from_slice(&self.buf[..len]).unwrap()
    }

    /// The next event (name, JSON data), skipping comment lines; `None` when the server
    /// ended the stream.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + 2);
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((event, serde_json::from_str(&data).unwrap()));
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.s.read(&mut chunk))
                .await
                .expect("an event (or the end) in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

const W: &str = "wedding:timeline:w-1";
const CONFIG: &str = "[rest]\nevents_interval_ms = 300\n";

/// Two `health` events arrive on one request, and a publish made after the first shows in
/// a later one (`total_messages` grows) without any new request; the head is a stream's.
#[tokio::test]
async fn health_events_keep_coming_and_follow_a_publish() {
    let server = TestServer::start(CONFIG);
    let admin = server.token("admin", "org-a", "admin", &["*"]);
    let mut s = Stream::open(&server, "/api/websocket/events", Some(&bearer(&admin))).await;
    assert_eq!(s.status, 200, "{}", s.head);
    assert!(
        s.header("Content-Type")
            .unwrap()
            .starts_with("text/event-stream"),
        "{}",
        s.head
    );
    assert_eq!(s.header("Cache-Control"), Some("no-store"));
    assert_eq!(s.header("Content-Length"), None, "{}", s.head);
    let (e, first) = s.next().await.expect("a first event");
    assert_eq!(e, "health");
    assert_eq!(first["metrics"]["total_messages"], 0, "{first}");
    assert!(first["status"].is_string(), "{first}");

    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    assert_eq!(c.publish(W, json!("hello")).await["op"], "published");

    let started = Instant::now();
    loop {
        let (e, h) = s.next().await.expect("the stream goes on");
        assert_eq!(e, "health");
        if h["metrics"]["total_messages"] == 1 {
            assert_eq!(h["metrics"]["total_channels"], 1, "{h}");
            break;
        }
        assert!(started.elapsed() < WAIT, "the publish never showed: {h}");
    }
}

/// Only the admin and service roles get the stream: another role gets 403, no credentials
/// 401, both in the REST error shape; an API key (service) is let in.
#[tokio::test]
async fn the_stream_needs_an_admin_or_service_caller() {
    let key = "k".repeat(32);
    let server = TestServer::start(&format!(
        "{CONFIG}[[rest.api_keys]]\nname = \"backend\"\norganization_id = \"org-a\"\nkey = \"{key}\"\n"
    ));
    let couple = server.token("u-1", "org-a", "couple", &["w-1"]);
    let s = Stream::open(&server, "/api/websocket/events", Some(&bearer(&couple))).await;
    assert_eq!(s.status, 403, "{}", s.head);
    let v = s.body().await;
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["code"], "WS_FORBIDDEN", "{v}");

    let s = Stream::open(&server, "/api/websocket/events", None).await;
    assert_eq!(s.status, 401, "{}", s.head);
    let v = s.body().await;
    assert_eq!(v["error"]["code"], "WS_UNAUTHORIZED", "{v}");

    let mut s = Stream::open(
        &server,
        "/api/websocket/events",
        Some(&format!("X-API-Key: {key}")),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.head);
    assert_eq!(s.next().await.expect("an event").0, "health");
}

/// With `?channel_name=`, each health event is followed by the channel's detail for its own
/// organization's admin; another organization's admin gets one `error` event with the
/// refusal code and the stream ends.
#[tokio::test]
async fn a_channel_detail_streams_for_its_organization_only() {
    let server = TestServer::start(CONFIG);
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    assert_eq!(c.publish(W, json!("m1")).await["op"], "published");

    let path = format!("/api/websocket/events?channel_name={W}");
    let admin_a = server.token("admin", "org-a", "admin", &["*"]);
    let mut s = Stream::open(&server, &path, Some(&bearer(&admin_a))).await;
    assert_eq!(s.status, 200, "{}", s.head);
    assert_eq!(s.next().await.expect("health").0, "health");
    let (e, d) = s.next().await.expect("detail");
    assert_eq!(e, "detail", "{d}");
    assert_eq!(d["name"], W, "{d}");
    assert_eq!(d["last_id"], 1, "{d}");
    assert!(d.get("op").is_none(), "{d}");

    // The same refusals as `channels/detail` (admin_detail.rs), as one event each.
    for (weddings, code) in [
        ("w-1", "WS_FORBIDDEN"),
        ("*", "WS_WEDDING_ISOLATION_VIOLATION"),
    ] {
        let admin_b = server.token("admin", "org-b", "admin", &[weddings]);
        let mut s = Stream::open(&server, &path, Some(&bearer(&admin_b))).await;
        assert_eq!(s.status, 200, "{}", s.head);
        let (e, v) = s.next().await.expect("an error event");
        assert_eq!(e, "error", "{v}");
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(s.next().await.is_none(), "the stream ends after the error");
    }
}

/// `rest.events_max_streams_per_shard = 1` with 2 shards: a third stream is refused with
/// 503 `WS_OVERLOADED` and `Retry-After` (at most two are open, one per shard); once the
/// streams are closed, a new one is served again.
#[tokio::test]
async fn streams_per_shard_are_bounded() {
    let server =
        TestServer::start("[rest]\nevents_interval_ms = 100\nevents_max_streams_per_shard = 1\n");
    let admin = server.token("admin", "org-a", "admin", &["*"]);
    let auth = bearer(&admin);
    let mut open = Vec::new();
    let mut refused = None;
    for _ in 0..3 {
        let s = Stream::open(&server, "/api/websocket/events", Some(&auth)).await;
        match s.status {
            200 => open.push(s),
            503 => {
                refused = Some(s);
                break;
            }
            other => panic!("unexpected {other}: {}", s.head),
        }
    }
    assert!(open.len() <= 2, "more streams than shards x 1");
    let refused = refused.expect("the third stream at the latest is refused");
    assert!(refused.header("Retry-After").is_some(), "{}", refused.head);
    let v = refused.body().await;
    assert_eq!(v["error"]["code"], "WS_OVERLOADED", "{v}");
    // The open ones keep streaming.
    for s in &mut open {
        assert_eq!(s.next().await.expect("an event").0, "health");
    }
    // Closed streams give their slots back (noticed at their next write).
    drop(open);
    let deadline = Instant::now() + WAIT;
    let mut served = 0;
    while served < 2 {
        assert!(Instant::now() < deadline, "slots never came back");
        let mut s = Stream::open(&server, "/api/websocket/events", Some(&auth)).await;
        if s.status == 200 {
            assert_eq!(s.next().await.expect("an event").0, "health");
            served += 1;
        } else {
            assert_eq!(s.status, 503, "{}", s.head);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// SIGTERM with a stream open (and a long interval): the server exits cleanly and promptly,
/// and the stream ends.
#[tokio::test]
async fn sigterm_does_not_wait_for_an_open_stream() {
    let mut server = TestServer::start("[rest]\nevents_interval_ms = 600000\n");
    let admin = server.token("admin", "org-a", "admin", &["*"]);
    let mut s = Stream::open(&server, "/api/websocket/events", Some(&bearer(&admin))).await;
    assert_eq!(s.status, 200, "{}", s.head);
    assert_eq!(s.next().await.expect("an event").0, "health");
    let started = Instant::now();
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopping took {:?}",
        started.elapsed()
    );
    assert!(s.next().await.is_none(), "the stream ended");
}
