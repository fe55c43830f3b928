//! TLS on the one port (SPEC §4 `wss://`, `https://`): a certificate made by the real
//! `ringbearer dev-cert` serves a `wss://` round trip (create, subscribe, publish, receive)
//! and an `https://` request; plaintext, garbage and abandoned handshakes are dropped
//! without harming the shards, and TLS clients connect fine afterwards; a bad `[tls]`
//! config stops the start naming the field.

mod common;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A directory with `cert.pem`/`key.pem` written by `ringbearer dev-cert`.
fn dev_cert() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("rb-devcert-{}-{n}", std::process::id()));
    let out = cli(&["dev-cert", "--out", dir.to_str().unwrap(), "--force"]);
    assert!(out.contains("cert_file = "), "{out}");
    dir
}

fn tls_config(dir: &Path) -> String {
    format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        dir.join("cert.pem").display().to_string(),
        dir.join("key.pem").display().to_string()
    )
}

/// A client that trusts exactly the dev certificate.
fn connector(dir: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("cert.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

async fn tls(s: &TestServer, c: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, c.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake")
}

async fn wss(s: &TestServer, c: &TlsConnector, token: &str) -> Raw<TlsStream<TcpStream>> {
    let stream = tls(s, c).await;
    let mut req = format!("wss://localhost:{}/ws", s.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("wss upgrade");
    Raw::from_ws(ws)
}

/// One whole HTTP response over TLS (asked to close after it).
async fn https_get(s: &TestServer, c: &TlsConnector, path: &str) -> String {
    let mut stream = tls(s, c).await;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("response within WAIT");
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn wss_round_trip_with_a_dev_cert() {
    let dir = dev_cert();
    let s = TestServer::start(&tls_config(&dir));
    let c = connector(&dir);
    let coord = s.token("coord", "org-1", "coordinator", &["w-tls"]);
    let photo = s.token("photo", "org-2", "photographer", &["w-tls"]);
    let mut a = wss(&s, &c, &coord).await;
    let mut b = wss(&s, &c, &photo).await;
    let created = a.create("wedding:main:w-tls", Some("w-tls")).await;
    assert_eq!(created["op"], "created", "{created}");
    for ws in [&mut a, &mut b] {
        let r = ws.subscribe("wedding:main:w-tls").await;
        assert_eq!(r["op"], "subscribed", "{r}");
    }
    // Big enough to span several TLS records.
    let text = "x".repeat(40_000);
    let p = a.publish("wedding:main:w-tls", json!({"text": text})).await;
    assert_eq!(p["op"], "published", "{p}");
    let got = b.messages("wedding:main:w-tls", 1).await;
    assert_eq!(got[0]["payload"]["text"], json!(text));
    assert_eq!(got[0]["id"], p["id"]);
    // https:// on the same port: the HTTP side answers through the same TLS stream.
    let r = https_get(&s, &c, "/no-such-path").await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(r.contains("WS_BAD_REQUEST"), "{r}");
    // The REST API over https://, counting what went through wss://.
    let r = https_get(&s, &c, "/api/websocket/health").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"total_messages\":1"), "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn plaintext_and_garbage_are_dropped_and_tls_still_works() {
    let dir = dev_cert();
    let mut s = TestServer::start(&tls_config(&dir));
    let c = connector(&dir);
    // A plaintext WebSocket upgrade on the TLS port fails.
    let plain = Raw::connect(&s.url(), &s.token("u", "o", "couple", &[])).await;
    assert!(plain.is_err(), "plaintext upgrade must not succeed");
    // A bogus TLS record, non-TLS bytes, and a client that connects and leaves without a
    // word: each is dropped, the server keeps serving.
    for bytes in [
        &b"\x16\x03\x01\xff\xff garbage that claims to be a TLS record"[..],
        b"\x00\x01\x02\x03\r\n\r\n",
        b"",
    ] {
        let mut t = TcpStream::connect(s.addr).await.unwrap();
        t.write_all(bytes).await.unwrap();
        if !bytes.is_empty() {
            let mut sink = Vec::new();
            // The server ends the connection (after an alert at most).
            let _ = tokio::time::timeout(WAIT, t.read_to_end(&mut sink))
                .await
                .expect("server ends a garbage connection");
        }
    }
    assert!(s.is_running());
    // Several TLS clients, so both shards' listeners are exercised.
    let token = s.token("later", "org-1", "coordinator", &["w-x"]);
    let mut conns = Vec::new();
    for _ in 0..6 {
        let mut ws = wss(&s, &c, &token).await;
        let r = ws.request(json!({"op": "ping"})).await;
        assert_eq!(r["op"], "pong", "{r}");
        conns.push(ws);
    }
    assert!(s.is_running());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_tls_config_stops_the_start_naming_the_field() {
    let dir = dev_cert();
    let data = std::env::temp_dir().join(format!("rb-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let cases = [
        (
            format!(
                "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = {:?}\n",
                dir.join("key.pem").display().to_string()
            ),
            "tls.cert_file",
        ),
        (
            format!(
                "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
                dir.join("cert.pem").display().to_string(),
                dir.join("cert.pem").display().to_string()
            ),
            "tls.key_file",
        ),
        (
            format!(
                "[tls]\ncert_file = {:?}\n",
                dir.join("cert.pem").display().to_string()
            ),
            "tls.key_file",
        ),
    ];
    for (config, field) in cases {
        std::fs::write(data.join("bad.toml"), &config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringbearer"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--shards",
                "1",
                "--config",
            ])
            .arg(data.join("bad.toml"))
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{config}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{config}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&data);
}

/// The project's own client (`ringbearer-client`, which `rb` wraps) over `wss://`, trusting
/// the dev certificate through `ClientConfig::ca_file`: create, subscribe, publish, receive.
/// Without the file it does not trust the self-signed certificate.
#[tokio::test]
async fn the_rust_client_speaks_wss_with_a_ca_file() {
    use ringbearer_client::{
        Client, ClientConfig, CreateChannel, Event, Publish, SubscribeOptions,
    };
    let dir = dev_cert();
    let s = TestServer::start(&tls_config(&dir));
    let url = format!("wss://localhost:{}/ws", s.addr.port());
    let token = s.token("coord", "org-1", "coordinator", &["w-tls"]);
    let (client, mut events) = Client::connect(ClientConfig {
        ca_file: Some(dir.join("cert.pem")),
        ..ClientConfig::new(url.clone(), token.clone())
    })
    .await
    .expect("wss:// connect with the dev cert");
    client
        .create(&CreateChannel {
            wedding_id: Some("w-tls".into()),
            ..CreateChannel::new("wedding:main:w-tls")
        })
        .await
        .unwrap();
    client
        .subscribe("wedding:main:w-tls", SubscribeOptions::default())
        .await
        .unwrap();
    let text = "y".repeat(40_000);
    let p = client
        .publish(&Publish::new(
            "wedding:main:w-tls",
            "general",
            json!({"text": text}),
        ))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .expect("the message in time")
            .expect("events open")
        {
            Event::Message(m) => {
                assert_eq!(m.id, p.id);
                assert_eq!(m.payload["text"], json!(text));
                break;
            }
            Event::Disconnected { reason } => panic!("dropped: {reason:?}"),
            _ => {}
        }
    }
    client.close().await;

    // A CA file that does not hold the server's certificate: the handshake is refused.
    let other = dev_cert();
    let refused = Client::connect(ClientConfig {
        ca_file: Some(other.join("cert.pem")),
        ..ClientConfig::new(url, token)
    })
    .await;
    let Err(e) = refused else {
        panic!("an untrusted certificate was accepted")
    };
    assert!(e.to_string().contains("TLS"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}
