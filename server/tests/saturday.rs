//! Saturday mode (SPEC §1) over real sockets: forced on, `max_connections` doubles (2 → 4
//! here) and the next upgrade is refused cleanly with HTTP 503 `WS_OVERLOADED` and a
//! `Retry-After`; in `auto` mode the set calendar clock decides — a Saturday doubles, a
//! Tuesday does not, and the day is counted in the configured time zone; and while it is on,
//! every connection gets the fast (wedding-day) heartbeat.

mod common;
use common::*;
use serde_json::{json, Value};

/// Opens connections until one is refused; returns the count and the refusal's status,
/// `Retry-After` and body. The open ones are kept in `open`.
async fn fill(s: &TestServer, open: &mut Vec<Raw>, most: usize) -> (usize, u16, String, Value) {
    for n in 0..most {
        let token = s.token(&format!("u{n}"), "venue", "coordinator", &[]);
        match Raw::connect(&s.url(), &token).await {
            Ok(mut raw) => {
                // Served, not just accepted.
                assert_eq!(raw.request(json!({"op": "ping"})).await["op"], "pong");
                open.push(raw);
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or(b"null"))
                    .expect("a JSON body");
                return (n, resp.status().as_u16(), retry, body);
            }
            Err(e) => panic!("connection {n}: {e}"),
        }
    }
    panic!("{most} connections all accepted");
}

fn assert_overloaded(status: u16, retry: &str, body: &Value) {
    assert_eq!(status, 503);
    assert!(
        retry.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After {retry:?}"
    );
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], "WS_OVERLOADED", "{body}");
    assert_eq!(body["error"]["retryable"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_on_doubles_capacity_and_refuses_the_next_cleanly() {
    let s = TestServer::start("[io]\nmax_connections = 2\n[saturday]\nmode = \"on\"\n");
    let mut open = Vec::new();
    let (n, status, retry, body) = fill(&s, &mut open, 10).await;
    assert_eq!(n, 4, "2 x max_connections");
    assert_overloaded(status, &retry, &body);
    // The refused one harmed nothing: the others are served, and a freed place is reused.
    for c in &mut open {
        assert_eq!(c.request(json!({"op": "ping"})).await["op"], "pong");
    }
    let mut gone = open.pop().unwrap();
    gone.ws.close(None).await.unwrap();
    assert!(matches!(gone.ended().await, Ended::Close(_)));
    let mut again = Vec::new();
    // The server counts the closed one out when its task ends: retry (bounded) until it has.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (n, status, retry, body) = fill(&s, &mut again, 10).await;
        assert_overloaded(status, &retry, &body);
        if n == 1 {
            break;
        }
        assert_eq!(n, 0);
        assert!(
            std::time::Instant::now() < deadline,
            "the freed place never came back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_follows_the_calendar_in_its_time_zone() {
    let cases = [
        // (calendar start, time zone, capacity)
        ("2026-06-13T10:00:00Z", "UTC", 4), // a Saturday
        ("2026-06-16T10:00:00Z", "UTC", 2), // a Tuesday
        ("2026-06-12T12:00:00Z", "Pacific/Kiritimati", 4), // Friday in UTC, Saturday there
        ("2026-06-13T12:00:00Z", "Pacific/Kiritimati", 2), // Saturday in UTC, Sunday there
    ];
    for (start, tz, cap) in cases {
        let s = TestServer::start(&format!(
            "[io]\nmax_connections = 2\n[saturday]\nmode = \"auto\"\ndays = [\"saturday\"]\ntime_zone = \"{tz}\"\n[clock]\nstart = \"{start}\"\n"
        ));
        let mut open = Vec::new();
        let (n, status, retry, body) = fill(&s, &mut open, 10).await;
        assert_eq!(n, cap, "{start} in {tz}");
        assert_overloaded(status, &retry, &body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_gets_the_fast_heartbeat_while_it_is_on() {
    let s = TestServer::start(
        "[io]\nheartbeat_interval_ms = 60000\nwedding_day_heartbeat_interval_ms = 200\n[saturday]\nmode = \"on\"\n",
    );
    let addr = s.addr;
    // No wedding in its token: Saturday mode alone makes its pings fast.
    let token = s.token("dj", "sound", "supplier", &[]);
    let code = tokio::task::spawn_blocking(move || {
        let mut raw = RawTcp::upgrade(addr, "/ws", &token, None);
        loop {
            match raw.read_frame() {
                Some((0x8, p)) => return u16::from_be_bytes([p[0], p[1]]),
                Some(_) => {}
                None => panic!("socket ended without a close frame"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 4000);
}
