//! What operators see (issue 10, item 8): a line per connection opened and closed (with
//! the close code and reason, the peer address, the connection id and the user), a line
//! per refused upgrade (status, error code, address), heartbeat closes at `info`, REST
//! calls at `debug`; no colour escapes when stderr is a file; `--log-format json` (or
//! `[log] format = "json"`) writes one JSON object per line.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};

/// Asks for an upgrade with a forged token; returns the status line and the client's
/// local address (what the server logs as `peer`).
fn refused_upgrade(addr: std::net::SocketAddr) -> (String, std::net::SocketAddr) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let local = s.local_addr().unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer not.a.token\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    (answer.lines().next().unwrap_or("").to_owned(), local)
}

/// A `GET` on the REST door; returns the status line.
fn rest_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or("").to_owned()
}

/// Opens a connection as `sub`, checks it works, and closes it with 1000 from the client.
fn open_and_close(server: &TestServer, sub: &str) {
    let token = server.token(sub, "org-log", "coordinator", &["w-1"]);
    let mut raw = RawTcp::upgrade(server.addr, "/ws", &token, None);
    raw.send_json(&json!({"op": "ping", "ref": "p"}));
    assert_eq!(raw.read_json().unwrap()["op"], "pong");
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    raw.send_frame(0x8, &close);
    let (op, payload) = raw.read_frame().expect("the server's close reply");
    assert_eq!((op, &payload[..2]), (0x8, &1000u16.to_be_bytes()[..]));
}

#[test]
fn text_lines_for_connections_refusals_and_rest_calls_without_colour_codes() {
    let server = TestServer::start_custom("", |c| {
        c.env("RUST_LOG", "debug");
    });
    open_and_close(&server, "u-text");
    let opened = server.wait_log_line("for the connection opened", |l| {
        l.contains("connection opened") && l.contains("sub=u-text")
    });
    for part in ["org=org-log", "conn=c-", "peer=127.0.0.1:", "path=\"/ws\""] {
        assert!(opened.contains(part), "no {part} in {opened}");
    }
    assert!(opened.contains(" INFO "), "{opened}");
    let closed = server.wait_log_line("for the connection closed", |l| {
        l.contains("connection closed") && l.contains("sub=u-text")
    });
    for part in [
        "code=1000",
        "reason=bye",
        "by=\"peer\"",
        "conn=c-",
        "peer=127.0.0.1:",
    ] {
        assert!(closed.contains(part), "no {part} in {closed}");
    }

    let (status, client) = refused_upgrade(server.addr);
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    let refused = server.wait_log_line("for the refused upgrade", |l| {
        l.contains("upgrade refused") && l.contains(&format!("peer={client}"))
    });
    for part in [
        "status=401",
        "code=\"WS_UNAUTHORIZED\"",
        "path=\"/ws\"",
        " INFO ",
    ] {
        assert!(refused.contains(part), "no {part} in {refused}");
    }

    assert!(rest_get(server.addr, "/api/websocket/health").contains("200"));
    let call = server.wait_log_line("for the REST call", |l| {
        l.contains("REST call") && l.contains("path=\"/api/websocket/health\"")
    });
    for part in ["method=\"GET\"", "status=200", "duration_us=", "DEBUG"] {
        assert!(call.contains(part), "no {part} in {call}");
    }

    let log = server.log();
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a log written to a file:\n{log}"
    );
}

#[test]
fn a_heartbeat_timeout_is_logged_with_its_close_code() {
    let server = TestServer::start_custom(
        "[io]\nheartbeat_interval_ms = 300\nwedding_day_heartbeat_interval_ms = 300\n",
        |c| {
            c.env("RUST_LOG", "info");
        },
    );
    let token = server.token("u-silent", "org-log", "coordinator", &["w-1"]);
    // A client that never answers pings.
    let _silent = RawTcp::upgrade(server.addr, "/ws", &token, None);
    let line = server.wait_log_line("for the heartbeat close", |l| {
        l.contains("connection closed") && l.contains("sub=u-silent")
    });
    assert!(
        line.contains("code=4000") && line.contains("heartbeat timeout"),
        "{line}"
    );
}

fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let server = TestServer::start_custom("", |c| {
        c.env("RUST_LOG", "info").args(["--log-format", "json"]);
    });
    open_and_close(&server, "u-json");
    let (status, client) = refused_upgrade(server.addr);
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    server.wait_log_line("for the refused upgrade", |l| {
        l.contains("upgrade refused") && l.contains(&client.to_string())
    });
    server.wait_log_line("for the connection closed", |l| {
        l.contains("connection closed") && l.contains("u-json")
    });
    let lines = json_lines(&server.log());
    let find = |message: &str| {
        lines
            .iter()
            .find(|v| v["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in {lines:?}"))
            .clone()
    };
    let opened = find("connection opened");
    assert_eq!(opened["level"], "INFO");
    assert_eq!(opened["sub"], "u-json");
    assert_eq!(opened["org"], "org-log");
    assert!(
        opened["conn"].as_str().unwrap().starts_with("c-"),
        "{opened}"
    );
    let closed = find("connection closed");
    assert_eq!(closed["code"], 1000);
    assert_eq!(closed["reason"], "bye");
    assert_eq!(closed["by"], "peer");
    let refused = find("upgrade refused");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["code"], "WS_UNAUTHORIZED");
    assert_eq!(refused["peer"], client.to_string());
}

#[test]
fn the_log_format_can_come_from_the_config_file() {
    let server = TestServer::start_custom("[log]\nformat = \"json\"\n", |c| {
        c.env("RUST_LOG", "info");
    });
    open_and_close(&server, "u-config");
    server.wait_log_line("for the connection closed", |l| {
        l.contains("connection closed") && l.contains("u-config")
    });
    let lines = json_lines(&server.log());
    assert!(lines.iter().any(|v| v["message"] == "connection opened"));
}
