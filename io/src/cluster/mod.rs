//! Cluster mode (issue 14, docs/cluster.md): several nodes sharing fan-out and durable
//! channel logs through NATS JetStream. Off by default; with `[cluster] enabled = false`
//! nothing here runs and no shard looks at it.
//!
//! What is built (see docs/cluster.md's status table): the `[cluster]` settings
//! ([`ClusterConfig`]), the bridge thread (`bridge.rs`: the official `async-nats` client on
//! its own tokio runtime, never on a shard executor) that connects, sets up the JetStream
//! stream and key-value buckets and watches them, the [`Link`] the shards, health and
//! metrics read without blocking, and the publish gate ([`GatedFactory`]): while the bridge
//! is not ready (NATS unreachable, JetStream without quorum) every store a shard asks for
//! is refused `WS_OVERLOADED` with `retry_after`, so nothing is acknowledged that the
//! cluster could not keep.

mod bridge;
mod gate;

pub use bridge::start_bridge;
pub use gate::GatedFactory;

use crossbeam::queue::ArrayQueue;
use parking_lot::Mutex;
use ringbearer_core::channel_state::ChannelCheckpoint;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `[cluster]`: how this node reaches NATS JetStream. Every bound has its default here and
/// in docs/operations.md's example config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Off: the single-node engine (the default); nothing below is used.
    pub enabled: bool,
    /// NATS servers to try (`nats://host:port` or `tls://host:port`); the client also
    /// learns the cluster's other servers from the first one it reaches.
    pub urls: Vec<String>,
    /// This node's name, unique in the cluster (health, metrics, the NATS connection name).
    /// Empty: the host name.
    pub node: String,
    /// User and password for NATS (both or neither).
    pub user: Option<String>,
    pub password: Option<String>,
    /// A NATS token (instead of user and password).
    pub token: Option<String>,
    /// PEM CA certificates that sign the NATS servers' certificates; set: TLS is required.
    pub ca_file: Option<PathBuf>,
    /// Replicas of the message stream and key-value buckets (1, 3 or 5; 3 survives one
    /// server lost).
    pub stream_replicas: usize,
    /// The JetStream stream holding every channel's messages.
    pub stream: String,
    /// JetStream's de-duplication window for idempotency keys (SPEC §2.4: 10 minutes).
    pub duplicate_window_secs: u64,
    /// How long one attempt to reach a NATS server may take.
    pub connect_timeout_ms: u64,
    /// How long a JetStream request (stream info, publish acknowledgement) may take.
    pub request_timeout_ms: u64,
    /// Longest wait between reconnection attempts (backoff from 100 ms, doubling).
    pub max_reconnect_delay_ms: u64,
    /// How often the bridge checks the stream (health's `stream_seq`, readiness).
    pub status_interval_ms: u64,
    /// `retry_after` (seconds) of a store refused because the cluster is not ready.
    pub retry_after_secs: u64,
    /// Depth of each queue between the shards and the bridge (shards → bridge: channels
    /// created here; bridge → each shard: channels created elsewhere). A full queue to the
    /// bridge refuses the create `WS_OVERLOADED` (a shard never waits); a full queue to a
    /// shard makes the bridge wait.
    pub queue_capacity: usize,
    /// How often a shard takes what the bridge queued for it (channels created elsewhere
    /// become visible here within about this).
    pub poll_interval_ms: u64,
    /// How many times a publish is appended again after another node's append to the same
    /// channel came first; past it the publish is refused `WS_OVERLOADED` (retryable).
    pub publish_retries: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            urls: vec!["nats://127.0.0.1:4222".into()],
            node: String::new(),
            user: None,
            password: None,
            token: None,
            ca_file: None,
            stream_replicas: 3,
            stream: "RB_MSG".into(),
            duplicate_window_secs: 600,
            connect_timeout_ms: 2000,
            request_timeout_ms: 5000,
            max_reconnect_delay_ms: 2000,
            status_interval_ms: 500,
            retry_after_secs: 1,
            queue_capacity: 4096,
            poll_interval_ms: 10,
            publish_retries: 16,
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.urls.is_empty() {
            return Err("cluster.urls: name at least one NATS server".into());
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("cluster.user and cluster.password: set both or neither".into());
        }
        if self.token.is_some() && self.user.is_some() {
            return Err("cluster.token and cluster.user: set one way to log in".into());
        }
        if ![1, 3, 5].contains(&self.stream_replicas) {
            return Err("cluster.stream_replicas must be 1, 3 or 5".into());
        }
        if self.stream.is_empty()
            || !self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("cluster.stream: letters, digits, `_` and `-` only".into());
        }
        for (name, v) in [
            ("cluster.duplicate_window_secs", self.duplicate_window_secs),
            ("cluster.connect_timeout_ms", self.connect_timeout_ms),
            ("cluster.request_timeout_ms", self.request_timeout_ms),
            (
                "cluster.max_reconnect_delay_ms",
                self.max_reconnect_delay_ms,
            ),
            ("cluster.status_interval_ms", self.status_interval_ms),
            ("cluster.retry_after_secs", self.retry_after_secs),
            ("cluster.queue_capacity", self.queue_capacity as u64),
            ("cluster.poll_interval_ms", self.poll_interval_ms),
        ] {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        Ok(())
    }

    /// The node name: configured, or the host name.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
        match (rc, std::str::from_utf8(&buf[..end])) {
            (0, Ok(h)) if !h.is_empty() => h.to_owned(),
            _ => "ringbearer".into(),
        }
    }
}

/// What the bridge knows, for the shards (readiness, without blocking), health and metrics.
/// Written by the bridge thread only (the counters by whoever counts).
pub struct Link {
    pub node: String,
    pub retry_after_secs: u64,
    pub poll_interval_ms: u64,
    /// Shards → bridge (never blocks: `try_send`).
    outbound: tokio::sync::mpsc::Sender<Outbound>,
    /// The bridge takes the receiving end once.
    outbound_rx: Mutex<Option<tokio::sync::mpsc::Receiver<Outbound>>>,
    /// Bridge → shard `i`: channels created on other nodes, the stream's messages, the
    /// answers to this shard's publishes.
    pub inbound: Vec<ArrayQueue<Inbound>>,
    /// The stream sequence of the newest message this node's consumer took.
    pub delivered_seq: AtomicU64,
    /// Channels created here and written to the `rb_channels` bucket.
    pub channels_put: AtomicU64,
    /// Channels of other nodes adopted by this node's shards.
    pub adopted: AtomicU64,
    /// NATS connected and the stream and buckets set up: stores are accepted.
    ready: AtomicBool,
    /// The NATS connection is up (it may be up while JetStream has no quorum).
    connected: AtomicBool,
    /// The stream's last sequence at the newest check.
    stream_seq: AtomicU64,
    /// When `ready` last changed (Unix ms).
    since_ms: AtomicU64,
    /// Stores refused because the cluster was not ready.
    pub refused: AtomicU64,
    /// Times the NATS connection was established (first and each reconnection).
    pub connects: AtomicU64,
    /// Times it was lost.
    pub disconnects: AtomicU64,
    /// The server connected to and the newest reason the cluster is not ready.
    detail: Mutex<(String, String)>,
}

/// A snapshot of [`Link`] for health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub node: String,
    pub ready: bool,
    pub connected: bool,
    pub stream_seq: u64,
    pub since_ms: u64,
    pub server: String,
    pub problem: String,
    pub refused: u64,
    pub connects: u64,
    pub disconnects: u64,
    pub channels_put: u64,
    pub adopted: u64,
    pub delivered_seq: u64,
}

/// What a shard hands the bridge.
#[derive(Debug)]
pub enum Outbound {
    /// A channel created on this node: its checkpoint JSON, for the `rb_channels` bucket.
    ChannelCreated { name: String, checkpoint: Vec<u8> },
    /// A publish that passed every rule: the bridge gives it the channel's next id, appends
    /// it to the stream and answers `shard` with [`Inbound::Acked`] or
    /// [`Inbound::Refused`] for `token`. `msg_id`: JetStream's de-duplication key (the
    /// publisher-scoped idempotency key).
    Publish {
        shard: u32,
        token: u64,
        channel: String,
        frame: Box<ringbearer_core::message::MessageFrame>,
        msg_id: Option<String>,
    },
}

/// What the bridge hands a shard.
#[derive(Debug)]
pub enum Inbound {
    /// A channel created on some node (this one included), from `rb_channels`.
    Channel(Box<ChannelCheckpoint>),
    /// Message `id` of `channel`, in stream order.
    Message {
        channel: String,
        id: u64,
        frame: Vec<u8>,
    },
    /// Publish `token` was stored as message `id`.
    Acked { token: u64, id: u64 },
    /// Publish `token` was not stored.
    Refused { token: u64, reason: String },
}

/// A channel name as a key-value key: NATS keys allow `[-/_=.a-zA-Z0-9]` and `.` separates
/// tokens, so every other byte (and `.`, `=`) is written `=XX` (hex).
pub fn kv_key(name: &str) -> String {
    let mut k = String::with_capacity(name.len() + 8);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            k.push(b as char);
        } else {
            k.push_str(&format!("={b:02X}"));
        }
    }
    k
}

impl Link {
    pub fn new(cfg: &ClusterConfig, shards: usize) -> Link {
        let (tx, rx) = tokio::sync::mpsc::channel(cfg.queue_capacity);
        Link {
            node: cfg.node_name(),
            retry_after_secs: cfg.retry_after_secs,
            poll_interval_ms: cfg.poll_interval_ms,
            outbound: tx,
            outbound_rx: Mutex::new(Some(rx)),
            inbound: (0..shards)
                .map(|_| ArrayQueue::new(cfg.queue_capacity))
                .collect(),
            channels_put: AtomicU64::new(0),
            adopted: AtomicU64::new(0),
            delivered_seq: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            stream_seq: AtomicU64::new(0),
            since_ms: AtomicU64::new(crate::clock::now_ms()),
            refused: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            detail: Mutex::new((String::new(), "not connected yet".into())),
        }
    }

    /// Whether stores are accepted now (one atomic load: cheap on a shard).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn state(&self) -> LinkState {
        let (server, problem) = self.detail.lock().clone();
        LinkState {
            node: self.node.clone(),
            ready: self.ready(),
            connected: self.connected.load(Ordering::Relaxed),
            stream_seq: self.stream_seq.load(Ordering::Relaxed),
            since_ms: self.since_ms.load(Ordering::Relaxed),
            server,
            problem,
            refused: self.refused.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            channels_put: self.channels_put.load(Ordering::Relaxed),
            adopted: self.adopted.load(Ordering::Relaxed),
            delivered_seq: self.delivered_seq.load(Ordering::Relaxed),
        }
    }

    /// Queues `o` for the bridge; `false` when the queue is full (the caller refuses).
    pub fn send(&self, o: Outbound) -> bool {
        self.outbound.try_send(o).is_ok()
    }

    fn set_connected(&self, up: bool, server: Option<String>) {
        let was = self.connected.swap(up, Ordering::AcqRel);
        if up && !was {
            self.connects.fetch_add(1, Ordering::Relaxed);
        }
        if !up && was {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = server {
            self.detail.lock().0 = s;
        }
        if !up {
            self.set_ready(false, "the NATS connection is lost");
        }
    }

    fn set_ready(&self, ready: bool, problem: &str) {
        let mut d = self.detail.lock();
        d.1 = if ready {
            String::new()
        } else {
            problem.to_owned()
        };
        if self.ready.swap(ready, Ordering::AcqRel) != ready {
            self.since_ms
                .store(crate::clock::now_ms(), Ordering::Relaxed);
            if ready {
                tracing::info!(node = %self.node, "cluster: ready (NATS connected, JetStream set up)");
            } else {
                tracing::warn!(node = %self.node, "cluster: not ready, stores refused (retryable): {problem}");
            }
        }
    }

    fn set_stream_seq(&self, seq: u64) {
        self.stream_seq.store(seq, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_every_bad_setting_is_named() {
        let d = ClusterConfig::default();
        assert!(!d.enabled);
        d.validate().unwrap();
        let on = ClusterConfig {
            enabled: true,
            ..ClusterConfig::default()
        };
        on.validate().unwrap();
        let bad = |f: &dyn Fn(&mut ClusterConfig), field: &str| {
            let mut c = on.clone();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(field), "{e}");
            // Off, nothing is checked: a disabled section never stops a start.
            c.enabled = false;
            c.validate().unwrap();
        };
        bad(&|c| c.urls.clear(), "cluster.urls");
        bad(&|c| c.user = Some("u".into()), "cluster.user");
        bad(
            &|c| {
                c.user = Some("u".into());
                c.password = Some("p".into());
                c.token = Some("t".into());
            },
            "cluster.token",
        );
        bad(&|c| c.stream_replicas = 2, "cluster.stream_replicas");
        bad(&|c| c.stream = "a.b".into(), "cluster.stream");
        bad(&|c| c.status_interval_ms = 0, "cluster.status_interval_ms");
        bad(&|c| c.retry_after_secs = 0, "cluster.retry_after_secs");
    }

    #[test]
    fn the_node_name_defaults_to_the_host_name() {
        let c = ClusterConfig::default();
        assert!(!c.node_name().is_empty());
        let c = ClusterConfig {
            node: "rb-1".into(),
            ..c
        };
        assert_eq!(c.node_name(), "rb-1");
    }

    #[test]
    fn channel_names_become_valid_distinct_keys() {
        assert_eq!(kv_key("wedding:timeline:w-1"), "wedding=3Atimeline=3Aw-1");
        assert_eq!(kv_key("a.b"), "a=2Eb");
        assert_ne!(kv_key("a=2E"), kv_key("a."));
        assert_eq!(kv_key("plain_name-1"), "plain_name-1");
    }
}
