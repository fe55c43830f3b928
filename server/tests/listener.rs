//! The listener (issue 10, items 6 and 7): a server refuses to start on an address another
//! process listens on — another ringbearer (which shares ports among its own shards with
//! SO_REUSEPORT) or any other socket — naming the address, and exits non-zero; and a server
//! out of file descriptors warns at start-up with the numbers, answers new clients HTTP 503
//! `WS_OVERLOADED` instead of leaving them hanging, keeps its open connections working, and
//! logs the trouble at a bounded rate.

mod common;
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Instant;

/// Runs `serve` on `listen` with its own data directory until it exits (within `WAIT`);
/// returns its exit code and what it wrote. A server still running after `WAIT` (it
/// started) fails the test.
fn serve_expecting_exit(listen: &str) -> (Option<i32>, String, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = std::env::temp_dir().join(format!("rb-second-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("test.toml"), "").unwrap();
    let out = data.join("stdout");
    let err = data.join("stderr");
    let mut child = serve_command(&data, listen)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let status = status.unwrap_or_else(|| {
        panic!("the second server did not exit; stdout:\n{stdout}\nstderr:\n{stderr}")
    });
    (status.code(), stdout, stderr)
}

fn assert_refused(listen: &str, code: Option<i32>, stdout: &str, stderr: &str) {
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?}; stdout:\n{stdout}"
    );
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(
        stderr.contains(&format!("{listen}: address already in use")),
        "stderr does not name the address:\n{stderr}"
    );
}

#[test]
fn a_second_server_on_the_same_address_fails_to_start() {
    let first = TestServer::start("");
    let listen = first.addr.to_string();
    let (code, stdout, stderr) = serve_expecting_exit(&listen);
    assert_refused(&listen, code, &stdout, &stderr);
    // The first one still serves.
    let token = first.token("u-1", "org-1", "coordinator", &["w-1"]);
    let mut raw = RawTcp::upgrade(first.addr, "/ws", &token, None);
    raw.send_json(&serde_json::json!({"op": "ping", "ref": "p"}));
    assert_eq!(raw.read_json().unwrap()["op"], "pong");
}

#[test]
fn a_port_held_by_another_program_fails_the_start() {
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = other.local_addr().unwrap().to_string();
    let (code, stdout, stderr) = serve_expecting_exit(&listen);
    assert_refused(&listen, code, &stdout, &stderr);
}

/// The open-files limit (soft and hard) the server runs under in the test below: its own
/// ~25 descriptors plus a few dozen connections.
const NOFILE: u64 = 64;

enum Upgrade {
    Switched(std::net::TcpStream),
    Answered(u16, String),
}

/// Asks for a WebSocket upgrade on `path`; the answer must come within `WAIT`.
fn try_upgrade(addr: std::net::SocketAddr, path: &str) -> Upgrade {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            other => panic!(
                "no answer to an upgrade ({other:?} after {:?})",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let head = String::from_utf8(head).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    if status == 101 {
        return Upgrade::Switched(s);
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    Upgrade::Answered(status, body)
}

#[test]
fn out_of_file_descriptors_new_clients_get_503_and_the_log_stays_short() {
    let server = TestServer::start_custom("[io]\necho_endpoint = true\n", |c| {
        c.env("RUST_LOG", "info");
        // SAFETY: only setrlimit (async-signal-safe) between fork and exec.
        unsafe {
            c.pre_exec(|| {
                let l = libc::rlimit {
                    rlim_cur: NOFILE as libc::rlim_t,
                    rlim_max: NOFILE as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let warning = server.wait_log_line("warning about the open files limit", |l| {
        l.contains("open files limit is 64")
    });
    assert!(
        warning.contains("io.max_connections = 10000") && warning.contains("20000 in Saturday"),
        "{warning}"
    );
    let token = server.token("u-1", "org-1", "coordinator", &["w-1"]);
    let mut early = RawTcp::upgrade(server.addr, "/ws", &token, None);

    // Fill the descriptor table with echo connections until one is refused.
    let mut open = Vec::new();
    let (status, body) = loop {
        assert!(
            open.len() < NOFILE as usize,
            "{} connections accepted under a limit of {NOFILE}",
            open.len()
        );
        match try_upgrade(server.addr, "/echo") {
            Upgrade::Switched(s) => open.push(s),
            Upgrade::Answered(status, body) => break (status, body),
        }
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("WS_OVERLOADED"), "{body}");
    // Every further client is answered too (a slot freed meanwhile may even take one).
    let mut refused = 1;
    for _ in 0..20 {
        match try_upgrade(server.addr, "/echo") {
            Upgrade::Switched(s) => open.push(s),
            Upgrade::Answered(status, body) => {
                assert_eq!(status, 503, "{body}");
                assert!(body.contains("WS_OVERLOADED"), "{body}");
                refused += 1;
            }
        }
    }
    assert!(refused > 15, "only {refused} of 21 refused");

    // The connections already open still work.
    early.send_json(&json!({"op": "ping", "ref": "still-here"}));
    assert_eq!(early.read_json().unwrap()["ref"], "still-here");
    let mut echo = RawTcp::from_stream(open.pop().unwrap());
    echo.send_frame(0x1, b"hello");
    assert_eq!(echo.read_frame(), Some((0x1, b"hello".to_vec())));

    // A bounded number of log lines about it: one per shard so far (at most one per 10 s
    // per shard), where the unbounded server wrote ~170 a second.
    server.wait_log_line("about running out of descriptors", |l| {
        l.contains("out of file descriptors")
    });
    let log = server.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("out of file descriptors") || l.contains("accept failed"))
        .count();
    assert!((1..=4).contains(&lines), "{lines} lines:\n{log}");
}
