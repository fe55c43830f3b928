//! The bridge thread: the official `async-nats` client on a current-thread tokio runtime of
//! its own, never on a shard executor. It connects (retrying forever, with backoff up to
//! `cluster.max_reconnect_delay_ms`), sets up the message stream and the key-value buckets
//! of docs/cluster.md, and checks the stream every `cluster.status_interval_ms`; the
//! [`Link`] carries what it finds to the shards (readiness), health and metrics.

use super::{kv_key, ClusterConfig, Link, Outbound};
use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;
use ringbearer_core::channel_state::ChannelCheckpoint;
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
            link.set_connected(true, Some(client.server_info().server_name));
            if !set_up {
                match set_up_streams(&js, &cfg).await {
                    Ok(()) => {
                        set_up = true;
                        if let Some(rx) = link.outbound_rx.lock().take() {
                            tokio::spawn(put_channels(js.clone(), rx, link.clone()));
                        }
                        tokio::spawn(watch_channels(js.clone(), link.clone()));
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

/// Writes the channels created on this node to `rb_channels`, in creation order; a write
/// that fails is tried again (after a pause) until it is stored.
async fn put_channels(
    js: jetstream::Context,
    mut rx: tokio::sync::mpsc::Receiver<Outbound>,
    link: Arc<Link>,
) {
    let mut store: Option<kv::Store> = None;
    while let Some(Outbound::ChannelCreated { name, checkpoint }) = rx.recv().await {
        let value = bytes::Bytes::from(checkpoint);
        loop {
            if store.is_none() {
                store = js.get_key_value(BUCKETS[0]).await.ok();
            }
            let put = match &store {
                Some(s) => s.put(kv_key(&name), value.clone()).await.map_err(|e| e.to_string()),
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
            let q = &link.inbound[ringbearer_core::shard_for(cp.meta.name.as_str(), shards)];
            let mut cp = cp;
            // A full queue: the bridge waits for the shard, never the other way round.
            while let Err(back) = q.push(cp) {
                cp = back;
                tokio::time::sleep(Duration::from_millis(link.poll_interval_ms)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
