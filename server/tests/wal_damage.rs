//! One flipped bit in the middle of a shard's active log segment (valid commits after it)
//! does not silently delete acknowledged messages: the real server refuses to start, names
//! the segment in its error and exits non-zero, `ringbearer wal verify` names it too, and
//! the file on disk is unchanged. `ringbearer wal repair` is the explicit way back. A
//! deleted oldest segment stops the start too, naming the missing file.
mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const CH: &str = "wedding:timeline:w-1";
/// Under the default per-channel rate limit (100 a minute).
const PUBLISHED: u64 = 80;

/// Runs the binary with `args` to completion, within `WAIT`.
fn run_bin(args: &[&str], data: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringbearer"));
    cmd.args(args)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    let (tx, rx) = std::sync::mpsc::channel();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("ringbearer {args:?} did not finish within {WAIT:?}");
        }
    }
}

fn segments_of(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_flipped_bit_mid_segment_stops_the_server_naming_the_segment() {
    let mut server = TestServer::start("");
    let token = server.token("coord", "org-1", "coordinator", &["w-1"]);
    let mut c = server.connect(&token).await;
    assert_eq!(c.create(CH, Some("w-1")).await["op"], "created");
    for n in 1..=PUBLISHED {
        // Each publish waits for its answer: one group commit each, synced before the next.
        let p = c.publish(CH, json!({"n": n})).await;
        assert_eq!(p["id"], n, "{p}");
    }
    drop(c);
    assert!(server.stop().success());

    let data = server.data.clone();
    let shard = data.join(format!("wal/shard-{}", owner(CH, 2)));
    let seg = segments_of(&shard).pop().unwrap();
    let name = seg.file_name().unwrap().to_str().unwrap().to_owned();
    let mut bytes = std::fs::read(&seg).unwrap();
    let half = bytes.len() / 2;
    bytes[half] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let config = data.join("test.toml");
    let start = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--config",
        config.to_str().unwrap(),
    ];
    let out = run_bin(&start, &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("serve ({}):\n{stderr}", out.status);
    assert!(
        !out.status.success(),
        "the server started on a damaged log: {stderr}"
    );
    assert!(
        stderr.contains(&name) && stderr.contains("offset") && stderr.contains("not a torn write"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "the segment was changed"
    );

    let out = run_bin(&["wal", "verify"], &data);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "wal verify:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "verify passed a damaged log: {stdout}"
    );
    assert!(
        stdout.contains(&name) && stdout.contains("DAMAGE"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "verify changed the segment"
    );

    // The operator's explicit choice: repair, then the server starts with what was before
    // the damage.
    let out = run_bin(&["wal", "repair"], &data);
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("wal repair:\n{report}");
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&name) && report.contains("records dropped"),
        "{report}"
    );
    assert!(run_bin(&["wal", "verify"], &data).status.success());
    server.kill_and_restart();
    let mut c = server.connect(&token).await;
    let r = c
        .request(json!({"op": "subscribe", "channel": CH, "last_seen_id": 0}))
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    let ids = message_ids(&r);
    assert!(!ids.is_empty() && ids.len() < PUBLISHED as usize, "{ids:?}");
}

/// Deleting the oldest segment (it holds the channel's creation record) used to make the
/// channel vanish without a word; now the server refuses to start naming the missing file.
#[tokio::test]
async fn a_missing_oldest_segment_stops_the_server_naming_it() {
    // Small segments: the log rotates every commit or two.
    let mut server = TestServer::start("[storage]\nsegment_bytes = 8192\n");
    let token = server.token("coord", "org-1", "coordinator", &["w-1"]);
    let mut c = server.connect(&token).await;
    assert_eq!(c.create(CH, Some("w-1")).await["op"], "created");
    for n in 1..=20u64 {
        assert_eq!(c.publish(CH, json!({"n": n})).await["id"], n);
    }
    drop(c);
    assert!(server.stop().success());

    let data = server.data.clone();
    let shard = data.join(format!("wal/shard-{}", owner(CH, 2)));
    let segs = segments_of(&shard);
    assert!(segs.len() > 2, "{segs:?}");
    let oldest = segs[0].file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::remove_file(&segs[0]).unwrap();

    let config = data.join("test.toml");
    let out = run_bin(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--config",
            config.to_str().unwrap(),
        ],
        &data,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the server started without its oldest segment: {stderr}"
    );
    assert!(
        stderr.contains(&oldest) && stderr.contains("missing"),
        "{stderr}"
    );
    let out = run_bin(&["wal", "verify"], &data);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&oldest) && stdout.contains("missing"),
        "{stdout}"
    );
}

/// A shard's whole log directory removed: the log alone would start empty; the data
/// directory's `wal/SHARDS` says it existed, so the server refuses, and `wal verify` says so.
#[tokio::test]
async fn a_missing_shard_directory_stops_the_server_naming_it() {
    let mut server = TestServer::start("");
    let token = server.token("coord", "org-1", "coordinator", &["w-1"]);
    let mut c = server.connect(&token).await;
    assert_eq!(c.create(CH, Some("w-1")).await["op"], "created");
    assert_eq!(c.publish(CH, json!({"n": 1})).await["id"], 1);
    drop(c);
    assert!(server.stop().success());
    let data = server.data.clone();
    let shard = data.join(format!("wal/shard-{}", owner(CH, 2)));
    std::fs::remove_dir_all(&shard).unwrap();

    let config = data.join("test.toml");
    let start = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--config",
        config.to_str().unwrap(),
    ];
    let out = run_bin(&start, &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(shard.to_str().unwrap()) && stderr.contains("missing"),
        "{stderr}"
    );
    let out = run_bin(&["wal", "verify"], &data);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(shard.to_str().unwrap()) && stdout.contains("missing"),
        "{stdout}"
    );
    // Accepting the loss explicitly lets it start (that shard empty).
    assert!(run_bin(&["wal", "repair"], &data).status.success());
    server.kill_and_restart();
}
