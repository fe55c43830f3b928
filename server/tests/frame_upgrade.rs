//! Upgrading in place: a log holding message frames of version 1 (written before frames had
//! a version prefix and `target_roles`) is recovered by today's server — resumed in order,
//! a version-1 user target still honoured, numbering continued — and new messages are
//! written in the current version next to them.

mod common;
use common::*;
use glommio::{LocalExecutorBuilder, Placement};
use ringbearer_core::message::MessageFrameV1;
use ringbearer_persist::{Record, Wal, WalConfig};
use serde_json::json;

const W: &str = "wedding:timeline:w-1";

/// Appends `frames` to the shard's log as a server before frame version 2 would have.
fn append_v1(dir: std::path::PathBuf, frames: Vec<MessageFrameV1>) {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .expect("glommio executor")
        .run(async move {
            let (wal, _) = Wal::open(WalConfig::new(dir)).await.expect("open the log");
            let mut last = None;
            for f in &frames {
                let body = f.encode();
                let lsn = wal
                    .append(&Record {
                        channel: &f.channel,
                        id: f.id,
                        ts_ms: f.ts_ms,
                        body: &body,
                    })
                    .expect("append");
                last = Some(lsn);
            }
            wal.durable(last.expect("frames")).await.expect("durable");
            wal.close().await.expect("close");
        });
}

fn v1(id: u64, payload: &str, target: Option<(&str, &str)>) -> MessageFrameV1 {
    MessageFrameV1 {
        id,
        ts_ms: now_s() * 1000,
        channel: W.into(),
        msg_type: "general".into(),
        event: None,
        priority: 1,
        payload: format!("\"{payload}\""),
        sender_user_id: "coord".into(),
        sender_org: "org-a".into(),
        sender_role: ringbearer_core::Role::Coordinator.code(),
        target_user_id: target.map(|t| t.1.to_owned()),
        target_org: target.map(|t| t.0.to_owned()),
        wedding_context: None,
        idempotency_key: None,
    }
}

#[tokio::test]
async fn a_log_with_version_1_frames_recovers_and_continues() {
    let mut server = TestServer::start("");
    let coord = server.token("coord", "org-a", "coordinator", &["w-1"]);
    let a1 = server.token("u-1", "org-a", "couple", &["w-1"]);
    let b1 = server.token("u-1", "org-b", "couple", &["w-1"]);
    let mut c = server.connect(&coord).await;
    assert_eq!(c.create(W, Some("w-1")).await["op"], "created");
    drop(c);
    assert!(server.stop().success());

    let dir = server
        .data
        .join("wal")
        .join(format!("shard-{}", owner(W, 2)));
    append_v1(
        dir,
        vec![
            v1(1, "old one", None),
            v1(2, "old, for org-a/u-1", Some(("org-a", "u-1"))),
            v1(3, "old three", None),
        ],
    );
    server.restart(None);

    let payloads = |r: &serde_json::Value| -> Vec<String> {
        r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["payload"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut x = server.connect(&a1).await;
    let r = x
        .request(json!({"op": "subscribe", "channel": W, "last_seen_id": 0}))
        .await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(
        payloads(&r),
        ["old one", "old, for org-a/u-1", "old three"],
        "{r}"
    );
    let mut y = server.connect(&b1).await;
    let r = y
        .request(json!({"op": "subscribe", "channel": W, "last_seen_id": 0}))
        .await;
    assert_eq!(
        payloads(&r),
        ["old one", "old three"],
        "org-b/u-1 is not the target: {r}"
    );

    // Numbering continues; the new frame (version 2) sits next to the old ones.
    let mut c = server.connect(&coord).await;
    let p = c
        .request(
            json!({"op": "publish", "channel": W, "type": "general", "payload": "new",
                         "target_roles": ["couple"]}),
        )
        .await;
    assert_eq!(p["id"], 4, "{p}");
    assert_eq!(x.messages(W, 1).await[0]["payload"], "new");
    drop((c, x, y));
    server.restart(None);
    let mut x = server.connect(&a1).await;
    let r = x
        .request(json!({"op": "subscribe", "channel": W, "last_seen_id": 1}))
        .await;
    assert_eq!(
        payloads(&r),
        ["old, for org-a/u-1", "old three", "new"],
        "{r}"
    );
}
