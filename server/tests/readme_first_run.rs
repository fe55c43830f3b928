//! The README's first command starts the server: `ringbearer serve` with no config file and
//! no `--data`, from a fresh working directory (so the data lands in the relative `./data`),
//! under the default `fsync` durability. It answers `GET /api/websocket/health`, stores a
//! published message, and serves it again after a restart.
//!
//! The one departure from the README: `--listen 127.0.0.1:0` instead of the default
//! `127.0.0.1:8080`, because a test cannot rely on port 8080 being free (the kernel picks a
//! free port; the server prints it). Everything else is the default.
mod common;

use common::{message_ids, Raw, WAIT};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `ringbearer serve` as the README runs it, in `cwd`; killed on drop.
struct ReadmeServer {
    child: Child,
    addr: SocketAddr,
}

impl ReadmeServer {
    fn start(cwd: &Path) -> ReadmeServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringbearer"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(cwd)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringbearer");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = match lines.next() {
            Some(Ok(l)) => l,
            _ => {
                let status = child.wait().unwrap();
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("`ringbearer serve` did not start ({status}): {err}");
            }
        };
        let addr = first
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .parse()
            .unwrap();
        std::thread::spawn(move || for _ in lines {});
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {l}");
            }
        });
        ReadmeServer { child, addr }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "{s}");
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no clean stop");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for ReadmeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn health(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /api/websocket/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

/// `ringbearer token` as the README runs it (no `--data`: the default `./data`), in `cwd`.
fn readme_token(cwd: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ringbearer"))
        .args([
            "token",
            "--sub",
            "coord-sarah",
            "--org",
            "venue-1",
            "--role",
            "coordinator",
            "--tier",
            "professional",
            "--weddings",
            "w-sarah",
        ])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn the_readme_first_command_serves_and_keeps_a_message_across_a_restart() {
    let cwd = std::env::temp_dir().join(format!("rb-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(&cwd).unwrap();
    const CH: &str = "wedding:timeline:w-sarah";

    let server = ReadmeServer::start(&cwd);
    let h = health(server.addr);
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert!(h.contains("\"success\":true"), "{h}");
    assert!(
        cwd.join("data/wal/shard-0").is_dir(),
        "the log is in ./data"
    );
    let token = readme_token(&cwd);
    let mut c = Raw::connect(&format!("ws://{}/ws", server.addr), &token)
        .await
        .unwrap();
    let created = c.create(CH, Some("w-sarah")).await;
    assert_eq!(created["op"], "created", "{created}");
    let p = c.publish(CH, json!({"cake_cutting": "21:15"})).await;
    assert_eq!(p["op"], "published", "{p}");
    assert_eq!(p["id"], 1);
    drop(c);
    server.stop();

    let server = ReadmeServer::start(&cwd);
    let mut c = Raw::connect(&format!("ws://{}/ws", server.addr), &token)
        .await
        .unwrap();
    let r = c
        .request(json!({"op": "subscribe", "channel": CH, "last_seen_id": 0}))
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    assert_eq!(message_ids(&r), vec![1]);
    assert_eq!(r["messages"][0]["payload"]["cake_cutting"], "21:15", "{r}");
    drop(c);
    server.stop();
    let _ = std::fs::remove_dir_all(&cwd);
}
