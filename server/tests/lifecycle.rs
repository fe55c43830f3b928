//! The binary's life: `token` mints what `serve` accepts; `serve` refuses a non-loopback
//! address without a configured secret; `--echo-endpoint` serves RFC 6455 echo on the same
//! connection code as `/ws`; SIGTERM closes clients with 1001 and exits cleanly.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::process::Command;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn token_command_mints_what_serve_accepts() {
    let server = TestServer::start("");
    let out = Command::new(env!("CARGO_BIN_EXE_ringbearer"))
        .args([
            "token",
            "--sub",
            "sarah",
            "--org",
            "org-1",
            "--role",
            "couple",
            "--tier",
            "starter",
            "--weddings",
            "w-1,w-2",
            "--ttl",
            "10m",
        ])
        .arg("--data")
        .arg(&server.data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut c = server.connect(&token).await;
    assert_eq!(c.request(json!({"op": "ping"})).await["op"], "pong");
    // Bad arguments are refused with a message, not a token.
    let out = Command::new(env!("CARGO_BIN_EXE_ringbearer"))
        .args([
            "token",
            "--sub",
            "x",
            "--org",
            "o",
            "--role",
            "couple",
            "--weddings",
            "*",
        ])
        .arg("--data")
        .arg(&server.data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin and service"));
}

#[test]
fn serve_refuses_a_public_address_without_a_secret() {
    let dir = std::env::temp_dir().join(format!("rb-public-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_ringbearer"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .arg("--data")
        .arg(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a configured secret"));
    // An invalid config is refused at start, naming the field.
    let cfg = std::env::temp_dir().join(format!("rb-badcfg-{}.toml", std::process::id()));
    std::fs::write(&cfg, "[io]\nmesh_capacity = 4\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringbearer"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&cfg);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("io.mesh_capacity"));
}

#[tokio::test]
async fn echo_endpoint_echoes_text_and_binary() {
    let server = TestServer::start("[io]\necho_endpoint = true\n");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/echo", server.addr))
        .await
        .unwrap();
    ws.send(Message::Text("héllo".into())).await.unwrap();
    ws.send(Message::Binary(vec![0u8, 1, 2, 255].into()))
        .await
        .unwrap();
    let big = "z".repeat(200_000);
    ws.send(Message::Text(big.clone().into())).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Ping(_) | Message::Pong(_) => {}
            m => got.push(m),
        }
    }
    assert_eq!(got[0], Message::Text("héllo".into()));
    assert_eq!(got[1], Message::Binary(vec![0u8, 1, 2, 255].into()));
    assert_eq!(got[2], Message::Text(big.into()));
}

#[tokio::test]
async fn sigterm_tells_clients_to_reconnect_later_and_exits_cleanly() {
    let mut server = TestServer::start("");
    let mut a = server.connect(&server.token("a", "o", "couple", &[])).await;
    let mut b = server.connect(&server.token("b", "o", "couple", &[])).await;
    assert_eq!(a.request(json!({"op": "ping"})).await["op"], "pong");
    assert_eq!(b.request(json!({"op": "ping"})).await["op"], "pong");
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(a.ended().await, Ended::Close(Some(1001)));
    assert_eq!(b.ended().await, Ended::Close(Some(1001)));
    assert!(!server.is_running());
}

/// `token` on a data directory with no development secret refuses (naming the directory and
/// what to do) instead of creating a secret no running server knows; `--secret-file` signs
/// with the server's configured secret.
#[tokio::test]
async fn token_refuses_a_data_directory_without_a_secret() {
    let empty = std::env::temp_dir().join(format!("rb-nosecret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&empty);
    let out = Command::new(env!("CARGO_BIN_EXE_ringbearer"))
        .args(["token", "--sub", "u", "--org", "o", "--role", "couple"])
        .arg("--data")
        .arg(&empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "minted {:?}", out.stdout);
    assert!(out.stdout.is_empty());
    assert!(
        err.contains(&*empty.to_string_lossy())
            && err.contains("serve")
            && err.contains("--secret-file"),
        "{err}"
    );
    assert!(!empty.join("dev-secret").exists(), "no secret was created");
    let _ = std::fs::remove_dir_all(&empty);

    // A server with a configured secret file: `--secret-file` mints what it accepts.
    let secret = std::env::temp_dir().join(format!("rb-secret-{}", std::process::id()));
    std::fs::write(&secret, "an-operator-secret-of-at-least-32-bytes!\n").unwrap();
    let server = TestServer::start(&format!(
        "[auth]\nhs256_secret_file = {:?}\n",
        secret.to_str().unwrap()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_ringbearer"))
        .args(["token", "--sub", "u", "--org", "o", "--role", "couple"])
        .arg("--secret-file")
        .arg(&secret)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&secret);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut c = server.connect(&token).await;
    assert_eq!(c.request(json!({"op": "ping"})).await["op"], "pong");
}
