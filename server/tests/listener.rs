//! The listener at start-up (issue 10, item 6): a server refuses to start on an address
//! another process listens on — another ringbearer (which shares ports among its own shards
//! with SO_REUSEPORT) or any other socket — naming the address, and exits non-zero.

mod common;
use common::*;
use std::process::Stdio;
use std::time::Instant;

/// Runs `serve` on `listen` with its own data directory until it exits (within `WAIT`);
/// returns its exit code and what it wrote. A server still running after `WAIT` (it
/// started) fails the test.
fn serve_expecting_exit(listen: &str) -> (Option<i32>, String, String) {
    let data =
        std::env::temp_dir().join(format!("rb-second-{}-{}", std::process::id(), now_s()));
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
