//! Parking and escalation (issue 16 item 5) over real sockets, with the real binary, 2
//! shards, the calendar clock on Saturday 13 June 2026 and a local webhook receiver (a
//! `TcpListener` here that checks every signature with the organization's secret): an
//! unacknowledged wedding-day `critical` is parked for the member who did not ack it —
//! shown to its own organization only, though org-1/u-1 and org-2/u-1 share an id — and its
//! webhook arrives signed; an acknowledged one, a `normal` one and one of a wedding that is
//! not today are not parked; a receiver outage (500s) only delays delivery; a webhook
//! queued before a SIGKILL is delivered after the restart, once parked and never parked
//! again; bad filters get `WS_BAD_REQUEST` and non-admins `WS_FORBIDDEN`; a role-targeted
//! `critical` is parked for the targeted roles alone (a refreshed token's role included).

mod common;
use common::*;
use hmac::{Hmac, Mac};
use ringbearer_persist::registry::{EventDate, Registry, RegistryConfig, WeddingRecord};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET_1: &str = "whsec_org1_0123456789abcdef";
const SECRET_2: &str = "whsec_org2_fedcba9876543210";

/// One request the receiver got, with the status it answered.
#[derive(Debug)]
struct Hook {
    path: String,
    id: String,
    body: Value,
    status: u16,
    signed_ok: bool,
}

/// A webhook receiver on 127.0.0.1:0 answering `status` (changeable), checking each
/// request's signature with the secret of its path (`/hook1`: org-1, `/hook2`: org-2).
struct Receiver {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    got: mpsc::Receiver<Hook>,
    /// Requests received but not yet asked for, in arrival order.
    backlog: std::cell::RefCell<Vec<Hook>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        Self::start_tls(status, None)
    }

    /// Like `start`, over TLS with `tls` when given.
    fn start_tls(status: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let st = Arc::new(AtomicU16::new(status));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, got) = mpsc::channel();
        let (st2, stop2) = (st.clone(), stop.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(s) = s else { continue };
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let status = st2.load(Ordering::Relaxed);
                let h = match &tls {
                    None => answer(s, status),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                        answer(rustls::StreamOwned::new(conn, s), status)
                    }
                };
                if let Some(h) = h {
                    let _ = tx.send(h);
                }
            }
        });
        Receiver {
            addr,
            status: st,
            got,
            backlog: Default::default(),
            stop,
        }
    }

    fn set_status(&self, s: u16) {
        self.status.store(s, Ordering::Relaxed);
    }

    /// The first request matching `pred` (others stay for later calls), within `WAIT`.
    fn next(&self, what: &str, pred: impl Fn(&Hook) -> bool) -> Hook {
        self.next_within(WAIT, &pred)
            .unwrap_or_else(|| panic!("no webhook {what} within {WAIT:?}"))
    }

    fn next_within(&self, wait: Duration, pred: &impl Fn(&Hook) -> bool) -> Option<Hook> {
        {
            let mut b = self.backlog.borrow_mut();
            if let Some(i) = b.iter().position(pred) {
                return Some(b.remove(i));
            }
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.got.recv_timeout(left) {
                Ok(h) => {
                    assert!(h.signed_ok, "bad signature: {h:?}");
                    if pred(&h) {
                        return Some(h);
                    }
                    self.backlog.borrow_mut().push(h);
                }
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// Reads one request and answers `status`.
fn answer(mut s: impl Read + Write, status: u16) -> Option<Hook> {
    let h = read_hook(&mut s, status)?;
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = s.flush();
    Some(h)
}

/// Parses one POST; checks `X-Ringbearer-Signature` against `v1=hex(HMAC-SHA256(secret,
/// "{timestamp}.{body}"))` written here independently of the server's code.
fn read_hook(s: &mut impl Read, status: u16) -> Option<Hook> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = match req.parse(&buf).ok()? {
            httparse::Status::Complete(head) => Some((
                head,
                req.method.map(str::to_owned),
                req.path.map(str::to_owned),
                req.headers
                    .iter()
                    .map(|x| {
                        (
                            x.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(x.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>(),
            )),
            httparse::Status::Partial => None,
        };
        if let Some((head, method, path, hs)) = parsed {
            let h = |name: &str| hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let len: usize = h("content-length")?.parse().ok()?;
            while buf.len() < head + len {
                let n = s.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let raw = &buf[head..head + len];
            let path = path?;
            assert_eq!(method.as_deref(), Some("POST"));
            assert_eq!(h("content-type").as_deref(), Some("application/json"));
            let secret = if path == "/hook2" { SECRET_2 } else { SECRET_1 };
            let ts = h("x-ringbearer-timestamp")?;
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(format!("{ts}.").as_bytes());
            mac.update(raw);
            let want: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let fresh = ts
                .parse::<u64>()
                .is_ok_and(|t| t.abs_diff(now_s() * 1000) < 300_000);
            let body: Value = serde_json::from_slice(raw).ok()?;
            let id = h("x-ringbearer-id")?;
            return Some(Hook {
                signed_ok: fresh
                    && h("x-ringbearer-signature") == Some(format!("v1={want}"))
                    && body["id"] == id.as_str(),
                path,
                id,
                body,
                status,
            });
        }
    }
}

/// Weddings in the registry before the server starts: w-1 (org-1) and w-2 (org-2) are
/// today, w-later (org-1) is next week.
async fn seed(data: &std::path::Path) {
    std::fs::create_dir_all(data).unwrap();
    let r = Registry::open(&data.join("registry.sqlite3"), RegistryConfig::default()).unwrap();
    for (id, org, date) in [
        ("w-1", "org-1", "2026-06-13"),
        ("w-later", "org-1", "2026-06-20"),
        ("w-2", "org-2", "2026-06-13"),
    ] {
        r.upsert_wedding(WeddingRecord {
            wedding_id: id.into(),
            organization_id: org.into(),
            event_date: EventDate::parse(date).unwrap(),
            time_zone: "UTC".into(),
            updated_at_ms: 1,
            ceremony_time: None,
            key_roles: Vec::new(),
            coordination_channel: None,
        })
        .await
        .unwrap();
    }
    r.close().unwrap();
}

fn config(rx: &Receiver, park_after_ms: u64) -> String {
    config_with(rx, park_after_ms, "http", "localhost", "")
}

fn config_with(rx: &Receiver, park_after_ms: u64, scheme: &str, host: &str, extra: &str) -> String {
    format!(
        r#"[clock]
start = "2026-06-13T10:30:00Z"
[saturday]
mode = "off"
[limits]
emergency_roles = ["coordinator"]
[escalation]
park_after_ms = {park_after_ms}
sweep_interval_ms = 50
[webhooks]
timeout_ms = 2000
initial_backoff_ms = 50
max_backoff_ms = 200
poll_interval_ms = 50
alert_failing_ms = 100
{extra}
[webhooks.orgs."org-1"]
url = "{scheme}://{host}:{port}/hook1"
secret = "{SECRET_1}"
[webhooks.orgs."org-2"]
url = "{scheme}://{host}:{port}/hook2"
secret = "{SECRET_2}"
"#,
        port = rx.addr.port()
    )
}

async fn start(rx: &Receiver, park_after_ms: u64) -> TestServer {
    start_with(&config(rx, park_after_ms)).await
}

async fn start_with(config: &str) -> TestServer {
    let data = std::env::temp_dir().join(format!(
        "rb-esc-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    ));
    seed(&data).await;
    TestServer::start_in(&data, config)
}

/// `n` channel names all owned by shard 0, so one sweep looks at all of them.
fn names(tag: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("wedding:main:{tag}-{i}"))
        .filter(|c| owner(c, 2) == 0)
        .take(n)
        .collect()
}

async fn publish(c: &mut Raw, channel: &str, priority: &str) -> u64 {
    let r = c
        .request(
            json!({"op": "publish", "channel": channel, "type": "urgent",
            "priority": priority, "payload": {"text": "the car is late"}}),
        )
        .await;
    assert_eq!(r["op"], "published", "{r}");
    r["id"].as_u64().unwrap()
}

async fn subscriber(s: &TestServer, user: &str, org: &str, wedding: &str, chans: &[&str]) -> Raw {
    let mut c = s
        .connect(&s.token(user, org, "photographer", &[wedding]))
        .await;
    for ch in chans {
        let r = c.subscribe(ch).await;
        assert_eq!(r["op"], "subscribed", "{r}");
    }
    c
}

async fn parked(s: &TestServer, token: &str, query: &str) -> Vec<(String, u64, String, String)> {
    let (status, v) = rest_call(
        s,
        "GET",
        &format!("/api/websocket/parked{query}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let mut out: Vec<_> = v["data"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["channel"].as_str().unwrap().to_owned(),
                e["message_id"].as_u64().unwrap(),
                e["user_org"].as_str().unwrap().to_owned(),
                e["user_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits (bounded) until health's alerts do or do not mention failing webhooks of org-1.
async fn wait_failing_alert(s: &TestServer, present: bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = rest_call(s, "GET", "/api/websocket/health", "-", None).await;
        let alerts = v["data"]["alerts"].clone();
        let has = alerts.as_array().unwrap().iter().any(|a| {
            a["message"]
                .as_str()
                .is_some_and(|m| m.contains("webhooks to organization org-1 failing"))
        });
        if has == present {
            return alerts;
        }
        assert!(Instant::now() < deadline, "alert present = {has}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_parked(h: &Hook, channel: &str, id: u64, user: &str) -> bool {
    h.body["kind"] == "message_parked"
        && h.body["data"]["channel"] == channel
        && h.body["data"]["message_id"] == id
        && h.body["data"]["user_id"] == user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_wedding_day_critical_is_parked_for_its_org_and_signed() {
    let rx = Receiver::start(200);
    let s = start(&rx, 1500).await;
    let n = names("esc", 3);
    let (c1, later, c2) = (n[0].as_str(), n[1].as_str(), n[2].as_str());
    // org-1: a wedding-day channel and one of next week's wedding.
    let mut coord1 = s
        .connect(&s.token("coord", "org-1", "coordinator", &["w-1", "w-later"]))
        .await;
    assert_eq!(coord1.create(c1, Some("w-1")).await["op"], "created");
    assert_eq!(coord1.create(later, Some("w-later")).await["op"], "created");
    // org-2 (same user ids): a wedding-day channel.
    let mut coord2 = s
        .connect(&s.token("coord", "org-2", "coordinator", &["w-2"]))
        .await;
    assert_eq!(coord2.create(c2, Some("w-2")).await["op"], "created");
    let mut u1 = subscriber(&s, "u-1", "org-1", "w-1", &[c1]).await;
    let _u1_later = subscriber(&s, "u-1", "org-1", "w-later", &[later]).await;
    let mut u2 = subscriber(&s, "u-2", "org-1", "w-1", &[c1]).await;
    let _u1_org2 = subscriber(&s, "u-1", "org-2", "w-2", &[c2]).await;

    // The cases that must not park, published first (due first).
    let not_today = publish(&mut coord1, later, "critical").await;
    let crit = publish(&mut coord1, c1, "critical").await;
    let normal = publish(&mut coord1, c1, "normal").await;
    // u-2 acknowledges the critical in time; u-1 never does.
    let m = u2
        .wait_for(|v| v["op"] == "message" && v["id"] == crit)
        .await;
    u2.send(json!({"op": "ack", "channel": c1, "id": m["id"]}))
        .await;
    let crit2 = publish(&mut coord2, c2, "critical").await;

    let h = rx.next("for org-1/u-1", |h| is_parked(h, c1, crit, "u-1"));
    assert_eq!(h.path, "/hook1");
    assert_eq!(h.body["org"], "org-1");
    assert_eq!(h.body["data"]["user_org"], "org-1");
    assert_eq!(h.body["data"]["priority"], "critical");
    assert_eq!(h.body["data"]["wedding_id"], "w-1");
    assert_eq!(h.body["data"]["payload"]["text"], "the car is late");
    let h2 = rx.next("for org-2/u-1", |h| is_parked(h, c2, crit2, "u-1"));
    assert_eq!(
        (h2.path.as_str(), &h2.body["org"]),
        ("/hook2", &json!("org-2"))
    );
    assert_eq!(h2.body["data"]["user_org"], "org-2");

    // A later critical on the same shard: once it is parked, a sweep has looked at
    // everything published before it.
    let sentinel = publish(&mut coord1, c1, "critical").await;
    rx.next("for the sentinel", |h| is_parked(h, c1, sentinel, "u-1"));
    rx.next("for the sentinel", |h| is_parked(h, c1, sentinel, "u-2"));

    let admin1 = s.token("boss", "org-1", "admin", &[]);
    let admin2 = s.token("boss", "org-2", "admin", &[]);
    let e = |c: &str, id: u64, org: &str, u: &str| (c.to_owned(), id, org.to_owned(), u.to_owned());
    assert_eq!(
        parked(&s, &admin1, "").await,
        vec![
            e(c1, crit, "org-1", "u-1"),
            e(c1, sentinel, "org-1", "u-1"),
            e(c1, sentinel, "org-1", "u-2"),
        ],
        "not the acked ({crit} by u-2), the normal ({normal}) nor next week's ({not_today})"
    );
    assert_eq!(
        parked(&s, &admin2, "").await,
        vec![e(c2, crit2, "org-2", "u-1")]
    );
    assert_eq!(
        parked(
            &s,
            &admin1,
            &format!("?wedding_id=w-1&channel={c1}&limit=1")
        )
        .await
        .len(),
        1
    );
    assert!(parked(&s, &admin1, "?wedding_id=w-2").await.is_empty());

    // Bad input: its code, nothing lost.
    for q in [
        "?limit=0",
        "?limit=100000",
        "?open=maybe",
        "?before=x",
        "?nope=1",
    ] {
        let (st, v) = rest_call(
            &s,
            "GET",
            &format!("/api/websocket/parked{q}"),
            &admin1,
            None,
        )
        .await;
        assert_eq!(st, 400, "{q}: {v}");
        assert_eq!(v["error"]["code"], "WS_BAD_REQUEST", "{q}: {v}");
    }
    let vendor = s.token("u-1", "org-1", "photographer", &["w-1"]);
    let (st, v) = rest_call(&s, "GET", "/api/websocket/parked", &vendor, None).await;
    assert_eq!(
        (st, &v["error"]["code"]),
        (403, &json!("WS_FORBIDDEN")),
        "{v}"
    );
    assert_eq!(parked(&s, &admin1, "").await.len(), 3);
    // u-1 reads it after all: the entry is resolved, not removed.
    u1.send(json!({"op": "ack", "channel": c1, "id": sentinel}))
        .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = rest_call(&s, "GET", "/api/websocket/parked?open=true", &admin1, None).await;
        let open = v["data"]["entries"].as_array().unwrap().len();
        if open == 1 {
            break; // u-2's sentinel entry
        }
        assert!(Instant::now() < deadline, "acks did not resolve: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A role-targeted wedding-day `critical` is parked only for members holding a targeted
/// role — by the role their connection holds now, also after a token refresh changed it —
/// never for another role, and its webhook goes to the channel's organization alone: on
/// org-1's channel, org-1/u-1 (couple) and org-1/u-2 (photographer, refreshed to couple)
/// are parked for it; org-2/u-1 (a photographer of org-2 invited to w-1) is not, and
/// nothing reaches org-2's receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_targeted_critical_is_parked_for_those_roles_alone() {
    let rx = Receiver::start(200);
    let s = start(&rx, 300).await;
    let c1 = names("roles", 1).remove(0);
    let c1 = c1.as_str();
    let mut coord = s
        .connect(&s.token("coord", "org-1", "coordinator", &["w-1"]))
        .await;
    assert_eq!(coord.create(c1, Some("w-1")).await["op"], "created");
    let mut couple = s
        .connect(&s.token("u-1", "org-1", "couple", &["w-1"]))
        .await;
    assert_eq!(couple.subscribe(c1).await["op"], "subscribed");
    let mut u2 = subscriber(&s, "u-2", "org-1", "w-1", &[c1]).await;
    let r = u2
        .request(json!({"op": "token", "token": s.token("u-2", "org-1", "couple", &["w-1"])}))
        .await;
    assert_eq!(r["op"], "ok", "{r}");
    // Lands after the refresh's re-check (same connection, same owner).
    let r = u2
        .request(json!({"op": "state_get", "channel": c1, "doc": "plan"}))
        .await;
    assert_ne!(r["op"], "error", "{r}");
    let _other = subscriber(&s, "u-1", "org-2", "w-1", &[c1]).await;

    let r = coord
        .request(json!({"op": "publish", "channel": c1, "type": "urgent",
            "priority": "critical", "target_roles": ["couple"],
            "payload": {"text": "for the couple"}}))
        .await;
    assert_eq!(r["op"], "published", "{r}");
    let targeted = r["id"].as_u64().unwrap();
    // For everyone: once it is parked for all three, the targeted one has been looked at.
    let sentinel = publish(&mut coord, c1, "critical").await;
    rx.next("u-1", |h| is_parked(h, c1, targeted, "u-1"));
    rx.next("u-2", |h| is_parked(h, c1, targeted, "u-2"));
    for u in ["u-1", "u-2"] {
        rx.next("sentinel, org-1", |h| {
            is_parked(h, c1, sentinel, u) && h.body["data"]["user_org"] == "org-1"
        });
    }
    let h = rx.next("sentinel, org-2/u-1", |h| {
        is_parked(h, c1, sentinel, "u-1") && h.body["data"]["user_org"] == "org-2"
    });
    assert_eq!(h.path, "/hook1", "the channel's organization's receiver");
    let admin1 = s.token("boss", "org-1", "admin", &[]);
    let e = |id: u64, org: &str, u: &str| (c1.to_owned(), id, org.to_owned(), u.to_owned());
    assert_eq!(
        parked(&s, &admin1, "").await,
        vec![
            e(targeted, "org-1", "u-1"),
            e(targeted, "org-1", "u-2"),
            e(sentinel, "org-1", "u-1"),
            e(sentinel, "org-1", "u-2"),
            e(sentinel, "org-2", "u-1"),
        ]
    );
    let b = rx.backlog.borrow();
    assert!(
        b.iter()
            .all(|h| h.path == "/hook1" && h.body["data"]["message_id"] == sentinel),
        "nothing else was sent: {b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_survive_a_receiver_outage_and_a_kill() {
    let rx = Receiver::start(500);
    let mut s = start(&rx, 300).await;
    let c1 = names("out", 1).remove(0);
    let c1 = c1.as_str();
    let mut coord = s
        .connect(&s.token("coord", "org-1", "coordinator", &["w-1"]))
        .await;
    assert_eq!(coord.create(c1, Some("w-1")).await["op"], "created");
    let _u1 = subscriber(&s, "u-1", "org-1", "w-1", &[c1]).await;

    // The receiver is down (500): attempts repeat with the same id until it is back.
    let a = publish(&mut coord, c1, "critical").await;
    let first = rx.next("first attempt", |h| is_parked(h, c1, a, "u-1"));
    assert_eq!(first.status, 500);
    let again = rx.next("a retry", |h| is_parked(h, c1, a, "u-1"));
    assert_eq!(again.id, first.id, "a retry resends the same webhook");
    // Failing for longer than alert_failing_ms: health says so.
    let alerts = wait_failing_alert(&s, true).await;
    assert!(alerts.to_string().contains("warning"), "{alerts}");
    rx.set_status(200);
    let ok = rx.next("delivery", |h| h.id == first.id && h.status == 200);
    assert_eq!(ok.body, first.body, "byte-identical body");
    wait_failing_alert(&s, false).await;

    // Queued, failing, then the server is killed: delivered after the restart.
    rx.set_status(500);
    let b = publish(&mut coord, c1, "critical").await;
    let queued = rx.next("before the kill", |h| is_parked(h, c1, b, "u-1"));
    drop(coord);
    s.kill_and_restart();
    rx.set_status(200);
    let after = rx.next("after the restart", |h| {
        h.status == 200 && is_parked(h, c1, b, "u-1")
    });
    assert_eq!(after.id, queued.id, "the stored webhook, not a new one");

    // The restarted sweep looked at the kept window again: nothing parked twice.
    let mut coord = s
        .connect(&s.token("coord", "org-1", "coordinator", &["w-1"]))
        .await;
    let c = publish(&mut coord, c1, "emergency").await;
    rx.next_within(WAIT, &|h: &Hook| {
        if !is_parked(h, c1, c, "u-1") {
            // Only repeats of the stored ones may come (at least once), never new ids.
            assert!(
                h.id == first.id || h.id == queued.id,
                "a second webhook: {h:?}"
            );
        }
        is_parked(h, c1, c, "u-1")
    })
    .expect("the third (an emergency) is parked");
    let admin = s.token("boss", "org-1", "admin", &[]);
    let e = |id: u64| (c1.to_owned(), id, "org-1".to_owned(), "u-1".to_owned());
    assert_eq!(parked(&s, &admin, "").await, vec![e(a), e(b), e(c)]);
    // Counted since the restart: the stored one and the emergency were sent.
    let metrics = get_text(&s, "/api/websocket/metrics").await;
    let sent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ringbearer_webhooks_sent_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(sent.is_some_and(|n| n >= 2), "{metrics}");
}

/// A GET's body as text (for `/metrics`).
async fn get_text(s: &TestServer, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, c.read_to_string(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_gets_the_webhook_over_tls() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::env::temp_dir().join(format!("rb-esc-cert-{}", std::process::id()));
    let out = cli(&["dev-cert", "--out", dir.to_str().unwrap(), "--force"]);
    assert!(out.contains("cert_file = "), "{out}");
    let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let rx = Receiver::start_tls(200, Some(Arc::new(tls)));
    let ca = format!("ca_file = {:?}", dir.join("cert.pem").display().to_string());
    let s = start_with(&config_with(&rx, 300, "https", "localhost", &ca)).await;
    let c1 = names("tls", 1).remove(0);
    let mut coord = s
        .connect(&s.token("coord", "org-1", "coordinator", &["w-1"]))
        .await;
    assert_eq!(coord.create(&c1, Some("w-1")).await["op"], "created");
    let _u1 = subscriber(&s, "u-1", "org-1", "w-1", &[&c1]).await;
    let id = publish(&mut coord, &c1, "critical").await;
    let h = rx.next("over TLS", |h| is_parked(h, &c1, id, "u-1"));
    assert_eq!((h.status, h.path.as_str()), (200, "/hook1"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The watchdog's alerts (issue 16 item 3) go out through the same signed, stored
/// webhooks: a missing photographer on a wedding day reaches org-1's receiver as
/// `watchdog_absent`, its return as `watchdog_back`, and org-2's receiver gets neither.
#[tokio::test]
async fn watchdog_alerts_arrive_as_signed_webhooks_of_their_organization() {
    let rx = Receiver::start(200);
    let watchdog = "[watchdog]\ngrace_seconds = 1\ncheck_interval_ms = 100\n";
    let s = start_with(&config_with(&rx, 0, "http", "localhost", watchdog)).await;
    let mut coord = s
        .connect(&s.token("coord", "org-1", "coordinator", &["w-1"]))
        .await;
    assert_eq!(
        coord.create("wedding:main:w-1", Some("w-1")).await["op"],
        "created"
    );
    // The clock says 10:30; the ceremony at 10:45 puts the watch in force now.
    let admin = s.token("admin", "org-1", "admin", &["*"]);
    let plan = json!({"wedding_id": "w-1", "event_date": "2026-06-13", "time_zone": "UTC",
                      "ceremony_time": "10:45", "key_roles": ["photographer"]});
    let (status, v) = rest_call(&s, "POST", "/api/websocket/weddings", &admin, Some(plan)).await;
    assert_eq!(status, 200, "{v}");

    let absent = rx.next("watchdog_absent", |h| h.body["kind"] == "watchdog_absent");
    assert_eq!(absent.path, "/hook1", "org-1's receiver: {absent:?}");
    assert_eq!(absent.body["org"], "org-1");
    assert_eq!(
        absent.body["data"]["wedding_id"], "w-1",
        "{:?}",
        absent.body
    );
    assert_eq!(
        absent.body["data"]["role"], "photographer",
        "{:?}",
        absent.body
    );

    // The photographer arrives: the back webhook follows.
    let mut photo = s
        .connect(&s.token("photo", "org-1", "photographer", &["w-1"]))
        .await;
    assert_eq!(
        photo.subscribe("wedding:main:w-1").await["op"],
        "subscribed"
    );
    let back = rx.next("watchdog_back", |h| h.body["kind"] == "watchdog_back");
    assert_eq!(back.path, "/hook1");
    assert_ne!(back.id, absent.id);
    // Nothing of w-1 ever went to org-2's receiver.
    assert!(
        rx.next_within(Duration::ZERO, &|h: &Hook| h.path == "/hook2")
            .is_none(),
        "org-2 got a webhook of org-1's wedding"
    );
}
