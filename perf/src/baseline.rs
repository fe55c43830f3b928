//! The comparison baseline (`ringbearer-perf baseline-server`): a minimal pub/sub server
//! written the way a Rust team would by default, used only to put our figures in
//! proportion. tokio's multi-thread runtime, `TcpListener::bind` (tokio's backlog, 1024),
//! tokio-tungstenite with its default config, one task per connection, requests parsed
//! into `serde_json::Value`, one `tokio::sync::broadcast` channel per topic (capacity
//! 1024, a lagging receiver's connection is closed with 4001) and `ws.send()` (write +
//! flush) per outgoing frame. The system allocator.
//!
//! It speaks the subset of `docs/protocol.md` the generator drives: `create`, `subscribe`
//! (with `last_seen_id` resume from the last 100 messages), `unsubscribe` (S8), `publish`
//! with its `published` reply, `message` frames with a per-channel increasing `id`, and
//! `ping`. Tokens are not checked; there is no presence, no priorities, no heartbeat.
//!
//! With `--tls-cert`/`--tls-key` (the generator's `--tls`) every connection is TLS first:
//! tokio-rustls (the ring provider, rustls' defaults) in front of the same code.
//!
//! It prints `baseline listening on ADDR (N threads)` first, like `ringbearer serve`.

use anyhow::{Context, Result};
use futures_util::stream::{AbortHandle, BoxStream, SelectAll};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Messages kept per channel for resume (as `limits.max_queued` in ringbearer).
const KEPT: usize = 100;
/// Capacity of each topic's broadcast channel.
const BROADCAST_CAPACITY: usize = 1024;

struct Channel {
    tx: broadcast::Sender<Utf8Bytes>,
    inner: Mutex<Inner>,
}

struct Inner {
    next_id: u64,
    window: VecDeque<(u64, Utf8Bytes)>,
}

#[derive(Default)]
struct State {
    channels: Mutex<HashMap<String, Arc<Channel>>>,
}

/// The TLS acceptor for `--tls-cert`/`--tls-key` (PEM files).
fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

pub fn run(listen: SocketAddr, threads: usize, tls: Option<(&Path, &Path)>) -> Result<()> {
    let acceptor = tls.map(|(c, k)| tls_acceptor(c, k)).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        println!(
            "baseline listening on {} ({} threads)",
            listener.local_addr()?,
            threads
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        let state = Arc::new(State::default());
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    let st = state.clone();
                    let _ = s.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let _ = match acceptor {
                            None => connection(s, st).await,
                            Some(a) => match a.accept(s).await {
                                Ok(t) => connection(t, st).await,
                                Err(_) => Ok(()),
                            },
                        };
                    });
                }
                Err(e) => {
                    eprintln!("baseline: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    })
}

type Feed = BoxStream<'static, Result<Utf8Bytes, broadcast::error::RecvError>>;

fn feed(rx: broadcast::Receiver<Utf8Bytes>) -> Feed {
    futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await;
        if matches!(item, Err(broadcast::error::RecvError::Closed)) {
            return None;
        }
        Some((item, rx))
    })
    .boxed()
}

async fn connection<S>(stream: S, state: Arc<State>) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    let mut feeds = Feeds::default();
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let reply = request(&state, &t, &mut feeds);
                    ws.send(Message::Text(reply.into())).await?;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            Some(item) = feeds.all.next(), if !feeds.all.is_empty() => match item {
                Ok(text) => ws.send(Message::Text(text)).await?,
                Err(_) => {
                    let _ = ws
                        .close(Some(CloseFrame {
                            code: CloseCode::Library(4001),
                            reason: "slow consumer".into(),
                        }))
                        .await;
                    break;
                }
            },
        }
    }
    Ok(())
}

fn error(r: &Value, code: &str, message: &str) -> String {
    serde_json::json!({"op": "error", "ref": r, "code": code, "message": message, "retryable": false})
        .to_string()
}

/// A connection's subscriptions: every feed in one `SelectAll`, and per channel the handle
/// that ends its feed (`unsubscribe`).
#[derive(Default)]
struct Feeds {
    all: SelectAll<Feed>,
    by_channel: HashMap<String, AbortHandle>,
}

impl Feeds {
    fn add(&mut self, name: &str, rx: broadcast::Receiver<Utf8Bytes>) {
        let (f, h) = futures_util::stream::abortable(feed(rx));
        if let Some(old) = self.by_channel.insert(name.to_owned(), h) {
            old.abort();
        }
        self.all.push(f.boxed());
    }

    fn remove(&mut self, name: &str) {
        if let Some(h) = self.by_channel.remove(name) {
            h.abort();
        }
    }
}

fn request(state: &State, text: &str, feeds: &mut Feeds) -> String {
    let Ok(req) = serde_json::from_str::<Value>(text) else {
        return error(&Value::Null, "WS_BAD_REQUEST", "malformed JSON");
    };
    let r = req.get("ref").cloned().unwrap_or(Value::Null);
    let op = req.get("op").and_then(Value::as_str).unwrap_or("");
    match op {
        "ping" => serde_json::json!({"op": "pong", "ref": r}).to_string(),
        "create" => {
            let Some(name) = req.get("name").and_then(Value::as_str) else {
                return error(&r, "WS_BAD_REQUEST", "create needs `name`");
            };
            state
                .channels
                .lock()
                .unwrap()
                .entry(name.to_owned())
                .or_insert_with(|| {
                    Arc::new(Channel {
                        tx: broadcast::channel(BROADCAST_CAPACITY).0,
                        inner: Mutex::new(Inner {
                            next_id: 1,
                            window: VecDeque::new(),
                        }),
                    })
                });
            format!(
                "{{\"op\":\"created\",\"ref\":{r},\"channel_id\":{n},\"channel_name\":{n},\"created_at\":\"1970-01-01T00:00:00.000Z\"}}",
                n = Value::from(name)
            )
        }
        "unsubscribe" => {
            let Some(name) = req.get("channel").and_then(Value::as_str) else {
                return error(&r, "WS_BAD_REQUEST", "needs `channel`");
            };
            feeds.remove(name);
            serde_json::json!({"op": "unsubscribed", "ref": r, "channel": name}).to_string()
        }
        "subscribe" | "publish" => {
            let Some(name) = req.get("channel").and_then(Value::as_str) else {
                return error(&r, "WS_BAD_REQUEST", "needs `channel`");
            };
            let Some(ch) = state.channels.lock().unwrap().get(name).cloned() else {
                return error(&r, "WS_CHANNEL_NOT_FOUND", "no such channel");
            };
            let name_json = Value::from(name).to_string();
            if op == "subscribe" {
                let last_seen = req.get("last_seen_id").and_then(Value::as_u64);
                let inner = ch.inner.lock().unwrap();
                let mut msgs = String::new();
                if let Some(p) = last_seen {
                    for (id, m) in &inner.window {
                        if *id > p {
                            if !msgs.is_empty() {
                                msgs.push(',');
                            }
                            msgs.push_str(m.as_str());
                        }
                    }
                }
                feeds.add(name, ch.tx.subscribe());
                drop(inner);
                format!(
                    "{{\"op\":\"subscribed\",\"ref\":{r},\"channel\":{name_json},\"epoch\":\"baseline\",\"recovered\":true,\"messages\":[{msgs}],\"presence\":[]}}"
                )
            } else {
                let payload = req.get("payload").cloned().unwrap_or(Value::Null);
                let kind = req.get("type").cloned().unwrap_or(Value::from("general"));
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let mut inner = ch.inner.lock().unwrap();
                let id = inner.next_id;
                inner.next_id += 1;
                let mut msg = String::new();
                let _ = write!(
                    msg,
                    "{{\"op\":\"message\",\"channel\":{name_json},\"id\":{id},\"type\":{kind},\"priority\":\"normal\",\"payload\":{payload},\"sender\":{{\"user_id\":\"anonymous\",\"role\":\"service\"}},\"ts\":{ts}}}"
                );
                let msg = Utf8Bytes::from(msg);
                inner.window.push_back((id, msg.clone()));
                if inner.window.len() > KEPT {
                    inner.window.pop_front();
                }
                let delivered = ch.tx.send(msg).unwrap_or(0);
                drop(inner);
                format!(
                    "{{\"op\":\"published\",\"ref\":{r},\"channel\":{name_json},\"id\":{id},\"delivered_count\":{delivered},\"queued_count\":0}}"
                )
            }
        }
        _ => error(&r, "WS_BAD_REQUEST", "unknown op"),
    }
}
