//! The runtime's bounds: shards, buffers, queues, timeouts. Each field has its default and
//! the reason beside it; `validate()` says how they relate and names the offending field.
//! The protocol/domain bounds live in `ringbearer_core::Limits`, embedded here as `limits`.

use ringbearer_core::Limits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IoConfig {
    /// Where to listen. One port serves `GET /ws`, `GET /echo` and (later) the REST API.
    pub listen: SocketAddr,
    /// Executors, one per core by default (0 = number of online CPUs).
    pub shards: usize,
    /// Pin each shard to a CPU. Off lets tests run several servers on a 2-core machine.
    pub pin_shards: bool,
    /// Kernel accept queue per shard listener. glommio's own `bind` hard-codes 1024, which
    /// drops SYNs in a connect storm (each retry costs the client 1 s).
    pub listen_backlog: i32,
    /// Server-wide connection cap; over it, upgrades get HTTP 503 `WS_OVERLOADED`.
    pub max_connections: usize,
    /// io_uring registered buffer memory per executor. glommio's default is 10 MiB, over
    /// the 8 MiB memlock cap of unprivileged users here.
    pub io_memory_bytes: usize,
    /// Cross-shard queue depth (glommio mesh). Shallow queues deadlocked upstream (#555)
    /// and cost ~18 µs/msg at depth 8 against ~0.2 µs at 1024.
    pub mesh_capacity: usize,
    /// Messages waiting for a full cross-shard queue, per peer, before new requests are
    /// refused with `WS_OVERLOADED` (deliveries and replies are never dropped).
    pub mesh_backlog_max: usize,
    /// WebSocket ping interval (SPEC §3: 30 s); two silent intervals close the connection.
    pub heartbeat_interval_ms: u64,
    /// Time allowed from TCP accept to a complete upgrade request.
    pub handshake_timeout_ms: u64,
    /// Largest HTTP request head (request line + headers).
    pub max_handshake_bytes: usize,
    /// A socket write that makes no progress for this long ends the connection.
    pub write_timeout_ms: u64,
    /// After sending a close frame, how long to keep reading for the client's close
    /// before dropping the socket (RFC 6455 §7.1.1).
    pub close_linger_ms: u64,
    /// Bytes read from the socket per read call while data keeps coming (an idle
    /// connection reads into 256 bytes and switches up when a read fills them).
    pub socket_read_bytes: usize,
    /// tungstenite's input buffer, allocated whole when the connection opens (its default,
    /// 128 KiB, costs ~135 KB per connection). It grows per frame when a frame needs more
    /// and is filled from memory, not the socket, so small costs no syscalls.
    pub ws_read_buffer_bytes: usize,
    /// Most bytes coalesced into one socket write (all frames pending for a connection go
    /// out in one `send(2)` up to this size).
    pub write_batch_bytes: usize,
    /// Outgoing backlog per connection, in frames. Past it the connection is a slow
    /// consumer: closed with 4001, its subscriptions kept for resume (SPEC §2.6).
    pub outbox_max_messages: usize,
    /// Outgoing backlog per connection, in bytes (same consequence).
    pub outbox_max_bytes: usize,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub token_leeway_secs: u64,
    /// How often each shard runs retention: logs a checkpoint per channel, then deletes the
    /// oldest log segments whose records are all past `max_queued`/retention.
    pub reclaim_interval_ms: u64,
    /// How often each shard announces presence changes (SPEC §3): joins, leaves and meta
    /// updates of a channel within one interval go out as one `presence_diff`. Shorter is
    /// fresher presence; longer is fewer frames on busy channels.
    pub presence_flush_interval_ms: u64,
    /// On a channel past `limits.presence_list_max`, joins and leaves outside the listed
    /// window change only the count; such a change alone is announced at most this often
    /// (a change to the list goes out at the next flush and carries the count).
    pub presence_count_interval_ms: u64,
    /// Adds `GET /echo` for the Autobahn conformance suite. Off by default.
    pub echo_endpoint: bool,
    /// Loaded from the config file's top-level `[limits]` table, not from `[io]`.
    #[serde(skip)]
    pub limits: Limits,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            listen: "127.0.0.1:8080".parse().expect("valid"),
            shards: 0,
            pin_shards: false,
            listen_backlog: 4096,
            max_connections: 10_000,
            io_memory_bytes: 512 * 1024,
            mesh_capacity: 1024,
            mesh_backlog_max: 65_536,
            heartbeat_interval_ms: 30_000,
            handshake_timeout_ms: 10_000,
            max_handshake_bytes: 8 * 1024,
            write_timeout_ms: 10_000,
            close_linger_ms: 1000,
            socket_read_bytes: 4096,
            ws_read_buffer_bytes: 512,
            write_batch_bytes: 64 * 1024,
            outbox_max_messages: 1024,
            outbox_max_bytes: 4 * 1024 * 1024,
            token_leeway_secs: 5,
            reclaim_interval_ms: 60_000,
            presence_flush_interval_ms: 50,
            presence_count_interval_ms: 1000,
            echo_endpoint: false,
            limits: Limits::default(),
        }
    }
}

impl IoConfig {
    /// The shard count after resolving 0 to the online CPU count.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.shards
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.limits.validate()?;
        let positive = [
            ("io.max_connections", self.max_connections),
            ("io.mesh_capacity", self.mesh_capacity),
            ("io.mesh_backlog_max", self.mesh_backlog_max),
            ("io.max_handshake_bytes", self.max_handshake_bytes),
            ("io.socket_read_bytes", self.socket_read_bytes),
            ("io.ws_read_buffer_bytes", self.ws_read_buffer_bytes),
            ("io.write_batch_bytes", self.write_batch_bytes),
            ("io.outbox_max_messages", self.outbox_max_messages),
            ("io.outbox_max_bytes", self.outbox_max_bytes),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        for (name, v) in [
            ("io.heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("io.handshake_timeout_ms", self.handshake_timeout_ms),
            ("io.write_timeout_ms", self.write_timeout_ms),
            ("io.reclaim_interval_ms", self.reclaim_interval_ms),
            (
                "io.presence_flush_interval_ms",
                self.presence_flush_interval_ms,
            ),
        ] {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.shards > 256 {
            return Err("io.shards must be at most 256".into());
        }
        if self.listen_backlog < 1 {
            return Err("io.listen_backlog must be at least 1".into());
        }
        if self.mesh_capacity < 64 {
            return Err(
                "io.mesh_capacity must be at least 64 (shallow mesh queues deadlock)".into(),
            );
        }
        if self.outbox_max_bytes < self.limits.max_frame_bytes {
            return Err("io.outbox_max_bytes must be at least limits.max_frame_bytes".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        IoConfig::default().validate().unwrap();
        let c = IoConfig {
            mesh_capacity: 8,
            ..IoConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("mesh_capacity"));
    }
}
