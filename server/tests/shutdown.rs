//! A graceful stop is prompt when its clients leave at once, however long
//! `io.shutdown_drain_ms` allows: with a WebSocket client, an open event stream
//! (`GET /api/websocket/events`) and an idle kept-alive REST connection, SIGTERM gives the
//! client 1001, ends the stream and the REST connection, and the process exits 0 in a
//! fraction of the drain setting (each shard waits on its sockets ending, not a timer);
//! a client that has connected but not sent its request head does not hold it either; and
//! a client that never leaves holds the stop for `io.shutdown_drain_ms`, not longer.

mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far longer than the test may take: a stop that waits for it fails.
const DRAIN_MS: u64 = 30_000;
/// A stop with every client leaving at once takes well under this (measured: ~0.1 s).
const PROMPT: Duration = Duration::from_secs(5);

/// Sends `GET path` with a bearer token on `s`, kept alive, and reads until `until` is in
/// what came back; returns it.
async fn get(s: &mut TcpStream, path: &str, token: &str, until: &[u8]) -> Vec<u8> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.windows(until.len()).any(|w| w == until) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    got
}

/// Reads `s` until the server closes it (within `WAIT`).
async fn until_closed(s: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("the server closed the connection in time")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn stop_with_a_client_a_stream_and_an_idle_rest_connection_is_prompt() {
    let server = TestServer::start(&format!(
        "[io]\nshutdown_drain_ms = {DRAIN_MS}\n[rest]\nevents_interval_ms = 600000\n"
    ));
    let admin = server.token("admin", "org-a", "admin", &["*"]);
    let mut ws = server.connect(&server.token("a", "o", "couple", &[])).await;
    assert_eq!(ws.request(json!({"op": "ping"})).await["op"], "pong");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let first = get(&mut stream, "/api/websocket/events", &admin, b"\n\n").await;
    let first = String::from_utf8_lossy(&first);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("event: health"), "{first}");
    let mut rest = TcpStream::connect(server.addr).await.unwrap();
    let answer = get(&mut rest, "/api/websocket/health", &admin, b"}").await;
    assert!(answer.starts_with(b"HTTP/1.1 200"));

    let started = Instant::now();
    let mut server = server;
    let stopping = tokio::task::spawn_blocking(move || {
        let status = server.stop();
        (server, status)
    });
    assert_eq!(ws.ended().await, Ended::Close(Some(1001)));
    // The client leaves at once (its socket closes).
    drop(ws);
    until_closed(&mut stream).await;
    until_closed(&mut rest).await;
    let (mut server, status) = stopping.await.unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(!server.is_running());
    assert!(
        took < PROMPT,
        "stopping took {took:?} (io.shutdown_drain_ms = {DRAIN_MS})"
    );
}

/// A client that neither answers the close nor closes its socket (under a long
/// `io.close_linger_ms`) holds the stop for `io.shutdown_drain_ms`, then the server exits 0.
#[tokio::test]
async fn a_client_that_never_leaves_holds_the_stop_for_the_drain_setting_only() {
    const DRAIN: Duration = Duration::from_millis(500);
    let mut server = TestServer::start(&format!(
        "[io]\nshutdown_drain_ms = {}\nclose_linger_ms = 600000\n",
        DRAIN.as_millis()
    ));
    let mut ws = server.connect(&server.token("a", "o", "couple", &[])).await;
    assert_eq!(ws.request(json!({"op": "ping"})).await["op"], "pong");
    // `ws` is not read again until the server has exited: it never answers the close.
    let started = Instant::now();
    let status = server.stop();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took >= DRAIN, "stopped in {took:?}, before the client left");
    assert!(took < PROMPT, "stopping took {took:?}");
    assert_eq!(ws.ended().await, Ended::Close(Some(1001)));
}

/// A client that connected and sent nothing yet (no request head; under a long
/// `io.handshake_timeout_ms`) is dropped at shutdown: it does not hold the stop until the
/// drain setting or its handshake timeout runs out.
#[tokio::test]
async fn a_connection_without_a_request_head_does_not_hold_the_stop() {
    let mut server = TestServer::start(&format!(
        "[io]\nshutdown_drain_ms = {DRAIN_MS}\nhandshake_timeout_ms = 600000\n"
    ));
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // A request answered on another connection gives the shards time to accept it (were it
    // still in the kernel's queue at the stop, the listener's close would end it as well,
    // and the test would pass without looking at the head wait).
    let admin = server.token("admin", "org-a", "admin", &["*"]);
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    let answer = get(&mut other, "/api/websocket/health", &admin, b"}").await;
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    drop(other);
    let started = Instant::now();
    let stopping = tokio::task::spawn_blocking(move || {
        let status = server.stop();
        (server, status)
    });
    until_closed(&mut silent).await;
    let (_server, status) = stopping.await.unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < PROMPT,
        "stopping took {took:?} (io.shutdown_drain_ms = {DRAIN_MS})"
    );
}
