//! Wedding day (SPEC §1) over real sockets, with the calendar clock set to Saturday
//! 13 June 2026, 10:30 UTC and weddings stored in the registry before the server starts
//! (so loading them at start is covered too): a wedding whose `event_date` is today in its
//! own time zone gets 3× the channel and user publish rates (the N-th passes, the N+1-th is
//! `WS_RATE_LIMITED` with `retry_after`) while another wedding keeps 1×; `critical` skips
//! both rates on a wedding-day channel up to its own ceiling, and nowhere else; and
//! connections whose token reaches a wedding that is today get the 10 s-style fast
//! heartbeat (200 ms here) while the others keep the slow one.

mod common;
use common::*;
use ringbearer_persist::registry::{EventDate, Registry, RegistryConfig, WeddingRecord};
use serde_json::{json, Value};

const TODAY: &str = "wedding:main:w-today";
const LATER: &str = "wedding:main:w-later";
/// 2026-06-14 in Kiritimati (UTC+14) is today at 10:30 UTC on the 13th.
const KIRI: &str = "wedding:main:w-kiri";

/// Stores the test's weddings in `data`'s registry, as an earlier run would have.
async fn seed(data: &std::path::Path) {
    std::fs::create_dir_all(data).unwrap();
    let r = Registry::open(&data.join("registry.sqlite3"), RegistryConfig::default()).unwrap();
    for (id, date, tz) in [
        ("w-today", "2026-06-13", "Europe/London"),
        ("w-later", "2026-06-20", "Europe/London"),
        ("w-kiri", "2026-06-14", "Pacific/Kiritimati"),
    ] {
        r.upsert_wedding(WeddingRecord {
            wedding_id: id.into(),
            organization_id: "studio".into(),
            event_date: EventDate::parse(date).unwrap(),
            time_zone: tz.into(),
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

async fn start(extra: &str) -> TestServer {
    let data = std::env::temp_dir().join(format!(
        "rb-wday-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    ));
    seed(&data).await;
    TestServer::start_in(
        &data,
        &format!("[clock]\nstart = \"2026-06-13T10:30:00Z\"\n[saturday]\nmode = \"off\"\n{extra}"),
    )
}

async fn coordinator(s: &TestServer) -> Raw {
    let mut c = s
        .connect(&s.token(
            "coord",
            "studio",
            "coordinator",
            &["w-today", "w-later", "w-kiri"],
        ))
        .await;
    for (name, w) in [(TODAY, "w-today"), (LATER, "w-later"), (KIRI, "w-kiri")] {
        let r = c.create(name, Some(w)).await;
        assert_eq!(r["op"], "created", "{r}");
    }
    c
}

async fn publish(c: &mut Raw, channel: &str, priority: &str) -> Value {
    c.request(
        json!({"op": "publish", "channel": channel, "type": "urgent",
        "priority": priority, "payload": {"n": 1}}),
    )
    .await
}

/// Publishes until refused; returns how many passed and the refusal.
async fn until_refused(c: &mut Raw, channel: &str, priority: &str, most: usize) -> (usize, Value) {
    for n in 0..most {
        let r = publish(c, channel, priority).await;
        if r["op"] != "published" {
            return (n, r);
        }
    }
    panic!("{most} publishes on {channel} all passed");
}

fn assert_rate_limited(e: &Value) {
    assert_error(e, "WS_RATE_LIMITED");
    assert_eq!(e["retryable"], true, "{e}");
    assert!(e["retry_after"].as_u64().is_some_and(|s| s >= 1), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_rate_is_tripled_on_the_weddings_own_day() {
    let s = start("[limits]\nchannel_messages_per_min = 2\n").await;
    let mut c = coordinator(&s).await;
    let (n, e) = until_refused(&mut c, TODAY, "normal", 20).await;
    assert_eq!(n, 6, "3 x 2 on the wedding day");
    assert_rate_limited(&e);
    let (n, e) = until_refused(&mut c, KIRI, "normal", 20).await;
    assert_eq!(n, 6, "today in Kiritimati although the 13th in UTC");
    assert_rate_limited(&e);
    let (n, e) = until_refused(&mut c, LATER, "normal", 20).await;
    assert_eq!(n, 2, "another wedding keeps 1 x");
    assert_rate_limited(&e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_rate_is_tripled_for_publishes_to_a_wedding_day_channel() {
    let s = start(
        "[limits.tiers.free]\nmessages_per_min = 2\nconnections_per_user = 5\nchannels_per_org = 10\nsubscriptions_per_user = 5\n",
    )
    .await;
    let _owner = coordinator(&s).await;
    let mut a = s
        .connect(&s.token_tier("a", "studio", "coordinator", "free", &["w-today"]))
        .await;
    let (n, e) = until_refused(&mut a, TODAY, "normal", 20).await;
    assert_eq!(n, 6, "3 x the free tier's 2");
    assert_rate_limited(&e);
    assert!(e["message"].as_str().unwrap().contains("tier"), "{e}");
    let mut b = s
        .connect(&s.token_tier("b", "studio", "coordinator", "free", &["w-later"]))
        .await;
    let (n, e) = until_refused(&mut b, LATER, "normal", 20).await;
    assert_eq!(n, 2);
    assert_rate_limited(&e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_skips_the_rates_of_a_wedding_day_channel_up_to_its_ceiling() {
    let s = start("[limits]\nchannel_messages_per_min = 2\ncritical_messages_per_min = 3\n").await;
    let mut c = coordinator(&s).await;
    let (n, e) = until_refused(&mut c, TODAY, "normal", 20).await;
    assert_eq!(n, 6);
    assert_rate_limited(&e);
    // The channel is rate limited; critical still passes, up to its ceiling.
    let (n, e) = until_refused(&mut c, TODAY, "critical", 20).await;
    assert_eq!(n, 3, "critical_messages_per_min");
    assert_rate_limited(&e);
    assert!(e["message"].as_str().unwrap().contains("critical"), "{e}");
    // Not a wedding day: critical is an ordinary publish.
    let (n, _) = until_refused(&mut c, LATER, "normal", 20).await;
    assert_eq!(n, 2);
    let e = publish(&mut c, LATER, "critical").await;
    assert_rate_limited(&e);
    // Delivered like any message, in id order, to a subscriber.
    let mut sub = s
        .connect(&s.token("sub", "studio", "photographer", &["w-today"]))
        .await;
    let r = sub
        .request(json!({"op": "subscribe", "channel": TODAY, "include_history": true}))
        .await;
    assert_eq!(message_ids(&r), (1..=9).collect::<Vec<_>>(), "{r}");
}

/// A peer that never answers pings; returns its close code.
fn dead_peer(addr: std::net::SocketAddr, token: String) -> u16 {
    let mut raw = RawTcp::upgrade(addr, "/ws", &token, None);
    loop {
        match raw.read_frame() {
            Some((0x8, p)) => return u16::from_be_bytes([p[0], p[1]]),
            Some(_) => {}
            None => panic!("socket ended without a close frame"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reaching_a_wedding_today_get_the_fast_heartbeat() {
    let s = start("[io]\nheartbeat_interval_ms = 60000\nwedding_day_heartbeat_interval_ms = 200\n")
        .await;
    let addr = s.addr;
    // Connected first: it would see a ping if the slow one were due.
    let mut other = RawTcp::upgrade(
        addr,
        "/ws",
        &s.token("other", "studio", "photographer", &["w-later"]),
        None,
    );
    let today = s.token("today", "studio", "photographer", &["w-today"]);
    let star = s.token("admin", "studio", "admin", &["*"]);
    let a = tokio::task::spawn_blocking(move || dead_peer(addr, today));
    let b = tokio::task::spawn_blocking(move || dead_peer(addr, star));
    assert_eq!(a.await.unwrap(), 4000, "closed after two missed fast pings");
    assert_eq!(b.await.unwrap(), 4000, "`*` of the wedding's organization");
    // The slow connection got no ping in that time, and is still served.
    let pings = tokio::task::spawn_blocking(move || {
        other.send_json(&json!({"op": "ping", "ref": "p"}));
        let mut pings = 0;
        loop {
            match other.read_frame().expect("still open") {
                (0x9, _) => pings += 1,
                (0x1, p) => {
                    let v: Value = serde_json::from_slice(&p).unwrap();
                    assert_eq!(v["op"], "pong", "{v}");
                    return pings;
                }
                (op, _) => panic!("unexpected frame {op}"),
            }
        }
    });
    assert_eq!(pings.await.unwrap(), 0);
}
