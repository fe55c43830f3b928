//! The bridge thread: the official `async-nats` client on a current-thread tokio runtime of
//! its own, never on a shard executor. It connects (retrying forever, with backoff up to
//! `cluster.max_reconnect_delay_ms`), sets up the message stream and the key-value buckets
//! of docs/cluster.md, and checks the stream every `cluster.status_interval_ms`; the
//! [`Link`] carries what it finds to the shards (readiness), health and metrics.

use super::{kv_key, ClusterConfig, Inbound, Link, Outbound};
use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;
use ringbearer_core::channel_state::ChannelCheckpoint;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The key-value buckets docs/cluster.md places channel metadata and weddings in.
pub const BUCKETS: [&str; 2] = ["rb_channels", "rb_weddings"];

/// Starts the bridge thread; it runs until the process ends.
pub fn start_bridge(cfg: ClusterConfig, link: Arc<Link>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("rb-cluster".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the cluster bridge's runtime");
            rt.block_on(run(cfg, link));
        })
        .map(|_| ())
}

async fn run(cfg: ClusterConfig, link: Arc<Link>) {
    let max_delay = cfg.max_reconnect_delay_ms;
    let events = link.clone();
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("ringbearer {}", link.node))
        .connection_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .request_timeout(Some(Duration::from_millis(cfg.request_timeout_ms)))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| {
            let ms = 100u64.saturating_mul(1 << attempts.min(16));
            Duration::from_millis(ms.min(max_delay))
        })
        .event_callback(move |e| {
            let link = events.clone();
            async move {
                match e {
                    async_nats::Event::Connected => link.set_connected(true, None),
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        link.set_connected(false, None)
                    }
                    other => tracing::info!("cluster: NATS event: {other}"),
                }
            }
        });
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &cfg.token {
        opts = opts.token(t.clone());
    }
    if let Some(ca) = &cfg.ca_file {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = match opts.connect(cfg.urls.clone()).await {
        Ok(c) => c,
        Err(e) => {
            // Only a bad option gets here (retry_on_initial_connect retries the rest).
            link.set_ready(false, &format!("cannot use the NATS settings: {e}"));
            tracing::error!("cluster: cannot use the NATS settings: {e}");
            return;
        }
    };
    let js = jetstream::new(client.clone());
    let interval = Duration::from_millis(cfg.status_interval_ms);
    let mut set_up = false;
    loop {
        let state = client.connection_state();
        if state == async_nats::connection::State::Connected {
            let info = client.server_info();
            link.set_connected(true, Some(info.server_name.clone()));
            if !version_at_least(&info.version, 2, 10) {
                // Its clustered streams can accept two appends expecting the same last
                // subject sequence (nats-server issue 4320): ids would repeat.
                link.set_ready(
                    false,
                    &format!(
                        "nats-server {} is older than 2.10 (per-channel ids need it)",
                        info.version
                    ),
                );
                tokio::time::sleep(interval).await;
                continue;
            }
            if !set_up {
                match set_up_streams(&js, &cfg).await {
                    Ok(()) => {
                        set_up = true;
                        if let Some(rx) = link.outbound_rx.lock().take() {
                            tokio::spawn(outbound(js.clone(), cfg.clone(), rx, link.clone()));
                        }
                        tokio::spawn(watch_channels(js.clone(), link.clone()));
                        tokio::spawn(consume(js.clone(), cfg.clone(), link.clone()));
                    }
                    Err(e) => link.set_ready(false, &format!("JetStream set-up failed: {e}")),
                }
            }
            if set_up {
                match js.get_stream(&cfg.stream).await {
                    Ok(s) => match Ok::<_, String>(s.cached_info()) {
                        Ok(i) => {
                            link.set_stream_seq(i.state.last_sequence);
                            link.set_ready(true, "");
                        }
                        Err(e) => link.set_ready(false, &format!("stream info: {e}")),
                    },
                    Err(e) => link.set_ready(false, &format!("stream {}: {e}", cfg.stream)),
                }
            }
        } else {
            link.set_connected(false, None);
        }
        tokio::time::sleep(interval).await;
    }
}

/// Creates (or finds) the message stream and the buckets with the configured replicas.
async fn set_up_streams(js: &jetstream::Context, cfg: &ClusterConfig) -> Result<(), String> {
    js.get_or_create_stream(stream::Config {
        name: cfg.stream.clone(),
        subjects: vec!["rb.msg.>".into()],
        num_replicas: cfg.stream_replicas,
        duplicate_window: Duration::from_secs(cfg.duplicate_window_secs),
        allow_direct: true,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("stream {}: {e}", cfg.stream))?;
    // A bucket is a stream `KV_<bucket>` shaped as `async-nats` shapes it. Made directly:
    // `create_key_value` first asks for the account's info, whose 2.9 answer async-nats
    // 0.52 cannot parse ("data did not match any variant of untagged enum Response").
    for bucket in BUCKETS {
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            num_replicas: cfg.stream_replicas,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("bucket {bucket}: {e}"))?;
        js.get_key_value(bucket)
            .await
            .map_err(|e| format!("bucket {bucket}: {e}"))?;
    }
    Ok(())
}

/// Takes what the shards hand over, in order: channels created here go to `rb_channels`
/// (a write that fails is tried again until stored), publishes to the stream
/// ([`publish`]).
async fn outbound(
    js: jetstream::Context,
    cfg: ClusterConfig,
    mut rx: tokio::sync::mpsc::Receiver<Outbound>,
    link: Arc<Link>,
) {
    let mut store: Option<kv::Store> = None;
    // Per channel: the stream sequence and id of its newest message this node knows.
    let mut last: HashMap<String, (u64, u64)> = HashMap::new();
    while let Some(o) = rx.recv().await {
        match o {
            Outbound::ChannelCreated { name, checkpoint } => {
                let value = bytes::Bytes::from(checkpoint);
                loop {
                    if store.is_none() {
                        store = js.get_key_value(BUCKETS[0]).await.ok();
                    }
                    let put = match &store {
                        Some(s) => s
                            .put(kv_key(&name), value.clone())
                            .await
                            .map_err(|e| e.to_string()),
                        None => Err("bucket not reachable".into()),
                    };
                    match put {
                        Ok(_) => {
                            link.channels_put.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(channel = %name, "cluster: storing the channel in {} failed, retrying: {e}", BUCKETS[0]);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
            Outbound::Publish {
                shard,
                token,
                channel,
                frame,
                msg_id,
            } => {
                let answer = match publish(&js, &cfg, &mut last, &channel, frame, msg_id).await {
                    Ok(id) => Inbound::Acked { token, id },
                    Err(reason) => {
                        last.remove(&channel);
                        Inbound::Refused { token, reason }
                    }
                };
                push(&link, shard as usize, answer).await;
            }
        }
    }
}

/// The stream subject of a channel.
pub fn subject(channel: &str) -> String {
    format!("rb.msg.{}", kv_key(channel))
}

/// Header: the channel's message id.
const ID_HEADER: &str = "Rb-Id";
/// Header: the channel name (subjects encode it).
const CHANNEL_HEADER: &str = "Rb-Channel";

/// Appends `frame` to the stream as the channel's next message: id = the id of the
/// channel's last message + 1, expecting that message to still be the last on the subject
/// (`Nats-Expected-Last-Subject-Sequence`). Another node's append in between makes
/// JetStream refuse it; the last message is read again and the append retried, up to
/// `cluster.publish_retries` times. So ids follow the stream's order: strictly increasing
/// and contiguous per channel. A repeated idempotency key within the duplicate window is
/// answered with the first message's id.
async fn publish(
    js: &jetstream::Context,
    cfg: &ClusterConfig,
    last: &mut HashMap<String, (u64, u64)>,
    channel: &str,
    mut frame: Box<ringbearer_core::message::MessageFrame>,
    msg_id: Option<String>,
) -> Result<u64, String> {
    let subject = subject(channel);
    let stream = js
        .get_stream_no_info(&cfg.stream)
        .await
        .map_err(|e| format!("stream: {e}"))?;
    for _ in 0..=cfg.publish_retries {
        let (seq, id) = match last.get(channel) {
            Some(&l) => l,
            None => {
                let l = last_of(&stream, &subject).await?;
                last.insert(channel.to_owned(), l);
                l
            }
        };
        frame.id = id + 1;
        let mut p = jetstream::message::PublishMessage::build()
            .payload(bytes::Bytes::from(frame.encode().into_vec()))
            .expected_last_subject_sequence(seq)
            .header(ID_HEADER, frame.id.to_string().as_str())
            .header(CHANNEL_HEADER, channel);
        if let Some(m) = &msg_id {
            p = p.message_id(m);
        }
        let ack = match js.send_publish(subject.clone(), p).await {
            Ok(f) => f.await,
            Err(e) => return Err(format!("publish: {e}")),
        };
        match ack {
            Ok(a) if a.duplicate => {
                // The key's first message: its id is in its header.
                let m = stream
                    .direct_get(a.sequence)
                    .await
                    .map_err(|e| format!("reading the first of a repeated key: {e}"))?;
                return id_of(&m.headers).ok_or_else(|| "a message without an id".into());
            }
            Ok(a) => {
                last.insert(channel.to_owned(), (a.sequence, frame.id));
                return Ok(frame.id);
            }
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                last.remove(channel);
            }
            Err(e) => return Err(format!("publish: {e}")),
        }
    }
    Err(format!(
        "the channel is busy on other nodes ({} tries, cluster.publish_retries); retry",
        cfg.publish_retries + 1
    ))
}

/// The stream sequence and id of the channel's last message; `(0, 0)` for none.
async fn last_of(
    stream: &jetstream::stream::Stream<()>,
    subject: &str,
) -> Result<(u64, u64), String> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok((
            m.sequence,
            id_of(&m.headers).ok_or("a message without an id")?,
        )),
        Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(format!("reading the channel's last message: {e}")),
    }
}

fn id_of(h: &async_nats::HeaderMap) -> Option<u64> {
    h.get(ID_HEADER)?.as_str().parse().ok()
}

/// Queues `item` for shard `shard`; a full queue makes the bridge wait, never the shard.
async fn push(link: &Link, shard: usize, item: Inbound) {
    let Some(q) = link.inbound.get(shard) else {
        return;
    };
    let mut item = item;
    while let Err(back) = q.push(item) {
        item = back;
        tokio::time::sleep(Duration::from_millis(link.poll_interval_ms)).await;
    }
}

/// Reads the whole stream in order from its start (a consumer made again from the next
/// sequence whenever it fails) and hands each message to the shard owning its channel; a
/// channel not seen yet is read from `rb_channels` first and handed over before its first
/// message, so a shard always knows the channel of a message.
async fn consume(js: jetstream::Context, cfg: ClusterConfig, link: Arc<Link>) {
    let shards = link.inbound.len();
    let mut known: HashSet<String> = HashSet::new();
    let mut next_seq = 1u64;
    loop {
        let messages = async {
            let stream = js
                .get_stream_no_info(&cfg.stream)
                .await
                .map_err(|e| e.to_string())?;
            // An ephemeral pull consumer without acknowledgements, in memory, delivering in
            // stream order; its heartbeat is short so a lost server is noticed within
            // about a second (async-nats's ordered consumer waits two 15 s heartbeats),
            // and then this loop makes a new one from the next sequence.
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::Config {
                    filter_subject: "rb.msg.>".into(),
                    deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: next_seq,
                    },
                    ack_policy: jetstream::consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(30),
                    memory_storage: true,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            consumer
                .stream()
                .max_messages_per_batch(256)
                .expires(Duration::from_secs(2))
                .heartbeat(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("cluster: consuming the stream failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(m) = messages.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!("cluster: the stream's consumer ended: {e}");
                    break;
                }
            };
            let seq = m.info().map(|i| i.stream_sequence).unwrap_or(next_seq);
            next_seq = seq + 1;
            link.delivered_seq.store(seq, Ordering::Relaxed);
            let headers = m.headers.clone().unwrap_or_default();
            let (Some(channel), Some(id)) = (
                headers.get(CHANNEL_HEADER).map(|c| c.as_str().to_owned()),
                id_of(&headers),
            ) else {
                tracing::warn!(
                    seq,
                    "cluster: a stream message without channel or id; skipped"
                );
                continue;
            };
            let shard = ringbearer_core::shard_for(&channel, shards);
            if !known.contains(&channel) {
                if let Some(cp) = channel_of(&js, &channel).await {
                    push(&link, shard, Inbound::Channel(Box::new(cp))).await;
                }
                known.insert(channel.clone());
            }
            let frame = m.payload.to_vec();
            push(&link, shard, Inbound::Message { channel, id, frame }).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The channel's checkpoint from `rb_channels`, waiting (bounded) for a create whose write
/// is still on its way.
async fn channel_of(js: &jetstream::Context, channel: &str) -> Option<ChannelCheckpoint> {
    for _ in 0..100 {
        if let Ok(store) = js.get_key_value(BUCKETS[0]).await {
            if let Ok(Some(v)) = store.get(kv_key(channel)).await {
                return serde_json::from_slice(&v).ok();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::error!(
        channel,
        "cluster: a message of a channel missing from {}",
        BUCKETS[0]
    );
    None
}

/// Follows `rb_channels` from its start (and again from the next revision whenever the
/// watch ends, e.g. after NATS was lost) and queues every channel to its owning shard.
async fn watch_channels(js: jetstream::Context, link: Arc<Link>) {
    let mut next_revision = 0u64;
    let shards = link.inbound.len();
    loop {
        let watch = match js.get_key_value(BUCKETS[0]).await {
            Ok(store) if next_revision == 0 => store.watch_with_history(">").await,
            Ok(store) => store.watch_all_from_revision(next_revision).await,
            Err(e) => {
                tracing::debug!("cluster: {} not reachable: {e}", BUCKETS[0]);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!("cluster: watching {} failed: {e}", BUCKETS[0]);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(entry) = watch.next().await {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!("cluster: the watch of {} ended: {e}", BUCKETS[0]);
                    break;
                }
            };
            next_revision = entry.revision + 1;
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let cp: ChannelCheckpoint = match serde_json::from_slice(&entry.value) {
                Ok(cp) => cp,
                Err(e) => {
                    tracing::warn!(key = %entry.key, "cluster: unreadable channel in {}: {e}", BUCKETS[0]);
                    continue;
                }
            };
            let shard = ringbearer_core::shard_for(cp.meta.name.as_str(), shards);
            push(&link, shard, Inbound::Channel(Box::new(cp))).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `version` (`2.10.4`, `2.11.0-beta`) is at least `major.minor`.
fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_versions_compare() {
        assert!(super::version_at_least("2.10.0", 2, 10));
        assert!(super::version_at_least("2.15.1", 2, 10));
        assert!(super::version_at_least("3.0.0", 2, 10));
        assert!(!super::version_at_least("2.9.10", 2, 10));
        assert!(!super::version_at_least("garbage", 2, 10));
    }
}
