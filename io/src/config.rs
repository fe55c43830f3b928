//! The runtime's bounds: shards, buffers, queues, timeouts. Each field has its default and
//! the reason beside it; `validate()` says how they relate and names the offending field.
//! The protocol/domain bounds live in `ringbearer_core::Limits`, embedded here as `limits`.

use crate::weddings::{CalendarClock, SaturdayMode, SaturdaySetting};
use ringbearer_core::access::RoleSet;
use ringbearer_core::calendar::{self, Zone};
use ringbearer_core::Limits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// TLS on the shared port (SPEC §4 `wss://`, `https://`): the config file's top-level
/// `[tls]` table. Both files set: every listener speaks TLS (one port, like Centrifugo);
/// neither: plaintext. A file that is missing, unreadable or not valid PEM stops the start
/// naming the field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first (`ringbearer dev-cert` writes one for local use).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }
}

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
    /// Entries of each of a shard's io_uring rings (glommio's default is 128). Every idle
    /// connection keeps a poll armed in its shard's main ring, and the kernel finds a
    /// request to cancel (glommio cancels a preemption timer each time the shard wakes) by
    /// scanning one bucket of a hash of `clamp(log2(2 × depth) − 5, 1, 8)` bits: at 128 that
    /// is 8 buckets, ~1,250 polls scanned per cancel at 10,000 connections; from 4096 on it
    /// is the kernel's largest, 256 buckets (`docs/performance.md`, "Quiet low rates").
    /// Costs ~1 MiB of ring memory per shard at 4096.
    pub ring_depth: usize,
    /// Cross-shard queue depth (glommio mesh). Shallow queues deadlocked upstream (#555)
    /// and cost ~18 µs/msg at depth 8 against ~0.2 µs at 1024.
    pub mesh_capacity: usize,
    /// Messages waiting for a full cross-shard queue, per peer, before new requests are
    /// refused with `WS_OVERLOADED` (deliveries and replies are never dropped).
    pub mesh_backlog_max: usize,
    /// WebSocket ping interval (SPEC §3: 30 s); two silent intervals close the connection.
    pub heartbeat_interval_ms: u64,
    /// The ping interval on a wedding day (SPEC §1: 10 s): for connections whose token
    /// reaches a wedding that is today, and for every connection in Saturday mode.
    pub wedding_day_heartbeat_interval_ms: u64,
    /// Time allowed from TCP accept to a complete upgrade request.
    pub handshake_timeout_ms: u64,
    /// Largest HTTP request head (request line + headers).
    pub max_handshake_bytes: usize,
    /// A socket write that makes no progress for this long ends the connection.
    pub write_timeout_ms: u64,
    /// After sending a close frame, how long to keep reading for the client's close
    /// before dropping the socket (RFC 6455 §7.1.1).
    pub close_linger_ms: u64,
    /// At shutdown, how long each shard waits, after telling its WebSocket clients 1001
    /// "going away", for its sockets to end (close handshakes, REST requests in flight)
    /// and for the other shards to get as far, before it stops its services and closes its
    /// log anyway. Clients that leave at once end the wait at once; this bounds the ones
    /// that do not answer (`close_linger_ms` already bounds each close). 0: do not wait.
    pub shutdown_drain_ms: u64,
    /// Bytes read from the socket per read call while data keeps coming (an idle
    /// connection reads into 256 bytes and switches up when a read fills them).
    pub socket_read_bytes: usize,
    /// The most the frame reader's input buffer keeps between reads: it holds only a frame
    /// still arriving, and a larger one is freed once handled, so an idle connection keeps
    /// at most this.
    pub ws_read_buffer_bytes: usize,
    /// Most bytes coalesced into one socket write (all frames pending for a connection go
    /// out in one `send(2)` up to this size).
    pub write_batch_bytes: usize,
    /// The fan-out writes what each plaintext connection is owed straight from the shard's
    /// loop, in one non-blocking `send(2)` per connection per batch, instead of waking the
    /// connection's writer task (which stays the fallback for TLS and full sockets). Off:
    /// every delivery wakes the writer, as before issue 15.
    pub direct_writes: bool,
    /// Outgoing backlog per connection, in frames. Past it the connection is a slow
    /// consumer: closed with 4001, its subscriptions kept for resume (SPEC §2.6).
    pub outbox_max_messages: usize,
    /// Outgoing backlog per connection, in bytes (same consequence).
    pub outbox_max_bytes: usize,
    /// Requests of one `/ws` connection with owners and not answered yet; at this many its
    /// reads pause until an answer comes (back-pressure: TCP slows the sender; nothing is
    /// refused or closed).
    pub max_inflight_requests: usize,
    /// Reads of a connection also pause while its outbox — with the answers still owed to
    /// its unanswered requests — holds this percentage of `outbox_max_messages`, or its
    /// bytes this percentage of `outbox_max_bytes` (its answers wait unread), so a client
    /// pipelining requests is slowed, never closed as a slow consumer by its own answers.
    pub read_pause_outbox_percent: usize,
    /// Clock skew tolerated on `exp`/`nbf`.
    pub token_leeway_secs: u64,
    /// How long before its token's `exp` a connection is told `token_expiring` (once per
    /// token); at `exp` + `token_leeway_secs` it is closed with 4002 unless refreshed.
    pub token_expiry_warning_secs: u64,
    /// Weddings kept in the server's table (registered through the REST API or loaded from
    /// the registry); a new one past it is refused with `WS_OVERLOADED`.
    pub max_weddings: usize,
    /// `Retry-After` (seconds) of the HTTP 503 `WS_OVERLOADED` given to an upgrade over
    /// `max_connections`.
    pub overloaded_retry_after_secs: u64,
    /// How often each shard runs retention: logs a checkpoint per channel, then deletes the
    /// oldest log segments whose records are all past `max_queued`/retention.
    pub reclaim_interval_ms: u64,
    /// Largest REST request body. A broadcast carries one payload (`limits.max_payload_bytes`,
    /// 64 KiB) plus its envelope; larger bodies get 413 without being read.
    pub max_http_body_bytes: usize,
    /// A kept-alive REST connection with no request for this long is closed.
    pub http_idle_timeout_ms: u64,
    /// Requests served on one REST connection before it is closed (clients reconnect).
    pub http_max_requests_per_connection: usize,
    /// How long a REST call waits for the channel's owner shard before answering 503
    /// `WS_OVERLOADED` (under `fsync` this includes the group commit).
    pub rest_call_timeout_ms: u64,
    /// Health's moving window: messages/s and latency are measured over this span (sampled
    /// once a second).
    pub health_window_ms: u64,
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
    /// Origins (`scheme://host[:port]`, or `scheme://*.domain` for its subdomains) whose
    /// browsers may open `/ws`; any other `Origin` gets HTTP 403 `WS_FORBIDDEN` before the
    /// upgrade. A request without `Origin` (a backend, a mobile app) is always allowed:
    /// this guards against cross-site WebSocket hijacking by other web pages, not against
    /// clients that choose their headers. Empty (the default) allows every origin, which
    /// is right while tokens never travel in cookies; list your app's origins in
    /// production so a page elsewhere cannot ride a browser's credentials.
    pub allowed_origins: Vec<String>,
    /// Open TCP connections per client address, server-wide (IPv6 by /64), counted from
    /// accept to close (handshakes and HTTP requests too); over it: HTTP 429
    /// `WS_RATE_LIMITED` with `retry_after`. 1,000 leaves room for a venue's guests behind
    /// one NAT address while one host cannot take all of `max_connections`. The load
    /// generator (perf/) opens 19,900 connections from 4 loopback addresses (~5,000
    /// each), so its server config raises this to 20,000.
    pub max_connections_per_ip: usize,
    /// Most messages one realtime-js join replays (`config.broadcast.replay.limit`, which
    /// defaults to it and is capped by it; docs/realtime-js.md). Replay reads the channel's
    /// kept window, so `limits.max_queued` bounds it too.
    pub realtime_replay_max: usize,
    /// permessage-deflate (RFC 7692): the `[io.permessage_deflate]` table.
    pub permessage_deflate: DeflateConfig,
    /// Loaded from the config file's top-level `[limits]` table, not from `[io]`.
    #[serde(skip)]
    pub limits: Limits,
    /// Loaded from the config file's top-level `[saturday]` table.
    #[serde(skip)]
    pub saturday: SaturdayConfig,
    /// Loaded from the config file's top-level `[clock]` table.
    #[serde(skip)]
    pub clock: ClockConfig,
    /// Loaded from the config file's top-level `[tls]` table, not from `[io]`.
    #[serde(skip)]
    pub tls: TlsConfig,
    /// Loaded from the config file's top-level `[routing]` table.
    #[serde(skip)]
    pub routing: RoutingConfig,
    /// Loaded from the config file's top-level `[watchdog]` table.
    #[serde(skip)]
    pub watchdog: WatchdogConfig,
    /// Loaded from the config file's top-level `[escalation]` table.
    #[serde(skip)]
    pub escalation: EscalationConfig,
}

/// `[io.permessage_deflate]`: WebSocket compression (RFC 7692, docs/protocol.md
/// "Compression"). Off by default: it costs CPU per message and per incoming compressed
/// message, and saves bandwidth mostly on large JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeflateConfig {
    /// Accept a client's `permessage-deflate` offer on `/ws`, the Phoenix door and `/echo`.
    pub enabled: bool,
    /// Compress every message on its own (sent to every client as
    /// `server_no_context_takeover`): no compressor per connection, and a message fanned
    /// out to many connections is compressed once per shard. `false` keeps a compressor
    /// (~300 KB) per connection whose client allows it: better ratio, per-connection CPU.
    pub server_no_context_takeover: bool,
    /// Ask clients to compress every message on its own (`client_no_context_takeover`):
    /// the server then holds an inflater (~43 KB) only while a compressed message is read.
    /// `false` lets a client keep its context, and the server an inflater for its life.
    pub client_no_context_takeover: bool,
    /// Outgoing messages shorter than this go uncompressed (deflate rarely shrinks them
    /// and costs the same per call).
    pub min_size_bytes: usize,
    /// Compression level, 1 (fastest) to 9 (smallest).
    pub level: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: false,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            min_size_bytes: 256,
            level: 6,
        }
    }
}

/// `[watchdog]`: the presence watchdog (SPEC §3, docs/decisions.md §30). On a wedding's
/// day, from `lead_minutes` before its ceremony to the end of the day, a key role with no
/// connection on the wedding's channels for `grace_seconds` raises one alert on the
/// coordination channel (and a `watchdog_absent` webhook), and a `back` message when it
/// returns; a presence `battery` under `battery_threshold_percent` raises one alert per
/// device. Checked every `check_interval_ms` (calendar clock, so `[clock] start` shifts it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchdogConfig {
    pub enabled: bool,
    /// How long before the ceremony the key roles are watched.
    pub lead_minutes: u64,
    /// How long a key role may be absent before the alert.
    pub grace_seconds: u64,
    /// How often presence is gathered from every shard.
    pub check_interval_ms: u64,
    /// A `battery` below this percentage (on a wedding day) raises a battery alert.
    pub battery_threshold_percent: u8,
    /// Priority of the alert messages: `low`, `normal`, `high`, `critical` or `emergency`.
    pub priority: String,
    /// Most alerts listed in health and on the admin page (active ones, newest first).
    pub max_listed_alerts: usize,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            enabled: true,
            lead_minutes: 30,
            grace_seconds: 300,
            check_interval_ms: 5000,
            battery_threshold_percent: 15,
            priority: "critical".into(),
            max_listed_alerts: 100,
        }
    }
}

impl WatchdogConfig {
    /// The alert priority, checked.
    pub fn priority(&self) -> Result<ringbearer_core::Priority, String> {
        ringbearer_core::Priority::parse(&self.priority).ok_or_else(|| {
            format!(
                "watchdog.priority `{}` must be low, normal, high, critical or emergency",
                self.priority.escape_default()
            )
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        self.priority()?;
        if self.check_interval_ms == 0 {
            return Err("watchdog.check_interval_ms must be greater than 0".into());
        }
        if self.battery_threshold_percent > 100 {
            return Err("watchdog.battery_threshold_percent must be at most 100".into());
        }
        if self.lead_minutes > 24 * 60 {
            return Err("watchdog.lead_minutes must be at most 1440 (a day)".into());
        }
        if self.max_listed_alerts == 0 {
            return Err("watchdog.max_listed_alerts must be greater than 0".into());
        }
        Ok(())
    }
}

/// `[routing]` (SPEC §2 `target_roles`): which roles a message `type` goes to when its
/// publish names neither `target_user_id` nor `target_roles`. An organization's own rows
/// (`[routing.orgs."org-1"]`) decide for its channels; types it does not name fall back to
/// `[routing.default]`; a type in neither goes to everyone on the channel. `emergency`
/// publishes always go to everyone unless they name `target_roles` themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// `type = ["role", ...]` for every organization.
    pub default: BTreeMap<String, RoleSet>,
    /// Per organization (the channel's): `type = ["role", ...]`.
    pub orgs: BTreeMap<String, BTreeMap<String, RoleSet>>,
}

impl RoutingConfig {
    /// The roles a message of `msg_type` on a channel of `org` goes to (empty: everyone).
    pub fn roles_for(&self, org: &str, msg_type: &str) -> RoleSet {
        self.orgs
            .get(org)
            .and_then(|t| t.get(msg_type))
            .or_else(|| self.default.get(msg_type))
            .copied()
            .unwrap_or(RoleSet::EMPTY)
    }

    /// The table that applies to `org`: its rows over the defaults.
    pub fn table_for(&self, org: &str) -> BTreeMap<String, RoleSet> {
        let mut t = self.default.clone();
        if let Some(own) = self.orgs.get(org) {
            t.extend(own.iter().map(|(k, v)| (k.clone(), *v)));
        }
        t
    }

    pub fn validate(&self) -> Result<(), String> {
        let tables = std::iter::once(("default".to_owned(), &self.default))
            .chain(self.orgs.iter().map(|(o, t)| (format!("orgs.\"{o}\""), t)));
        for (name, table) in tables {
            for (ty, roles) in table {
                if roles.is_empty() {
                    return Err(format!(
                        "routing.{name}.{ty}: name at least one role (leave the type out to send it to everyone)"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `[escalation]`: parking of unacknowledged wedding-day messages (issue 16 item 5,
/// docs/decisions.md §32). On a channel whose wedding is today, a `critical` or
/// `emergency` message a member may see and has not acknowledged `park_after_ms` after it
/// was published is parked (a dead-letter entry per member, and a `message_parked`
/// webhook to the channel's organization).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationConfig {
    /// How long a member has to acknowledge; 0 turns parking off. Default 5 minutes.
    pub park_after_ms: u64,
    /// How often each shard looks for messages to park (its own channels only).
    pub sweep_interval_ms: u64,
    /// Most kept messages one sweep of one shard looks at (each is looked at once, when
    /// due): after a restart the whole kept window comes due at once, and this keeps that
    /// catch-up from holding the shard's executor; the rest waits for the next sweeps.
    pub sweep_max_messages: usize,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        EscalationConfig {
            park_after_ms: 300_000,
            sweep_interval_ms: 5_000,
            sweep_max_messages: 10_000,
        }
    }
}

/// `[saturday]`: the server-wide wedding-day mode (SPEC §1 "Saturday mode"). While it is
/// active, every connection's heartbeat is `io.wedding_day_heartbeat_interval_ms` and
/// `io.max_connections` is multiplied by `capacity_multiplier`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaturdayConfig {
    /// `auto` (on the `days`, in `time_zone`), `on` (forced) or `off` (forced).
    pub mode: SaturdaySetting,
    /// Weekday names (`saturday`, `sunday`, `friday`, …).
    pub days: Vec<String>,
    /// IANA zone the `days` are counted in.
    pub time_zone: String,
    /// `max_connections` multiplier while active (SPEC §1: 10,000 → 20,000).
    pub capacity_multiplier: u32,
}

impl Default for SaturdayConfig {
    fn default() -> Self {
        SaturdayConfig {
            mode: SaturdaySetting::Auto,
            days: vec!["saturday".into()],
            time_zone: "UTC".into(),
            capacity_multiplier: 2,
        }
    }
}

impl SaturdayConfig {
    /// The resolved mode, or the offending field.
    pub fn resolve(&self) -> Result<SaturdayMode, String> {
        let mut days = Vec::new();
        for d in &self.days {
            days.push(calendar::parse_weekday(d).ok_or_else(|| {
                format!(
                    "saturday.days: `{}` is not a weekday name",
                    d.escape_default()
                )
            })?);
        }
        if days.is_empty() && self.mode == SaturdaySetting::Auto {
            return Err("saturday.days must name at least one day when mode is auto".into());
        }
        let zone = Zone::parse(&self.time_zone).map_err(|e| format!("saturday.{}", e.message))?;
        if self.capacity_multiplier == 0 {
            return Err("saturday.capacity_multiplier must be at least 1".into());
        }
        Ok(SaturdayMode {
            setting: self.mode,
            days,
            zone,
            capacity_multiplier: self.capacity_multiplier,
        })
    }
}

/// `[clock]`: FOR TESTS AND REHEARSALS ONLY. With `start` set, the calendar (which day it
/// is, for wedding days and Saturday mode) starts at that instant when the server starts and
/// advances in real time. Rate windows, heartbeats and token expiry keep the real clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// RFC 3339 instant, e.g. `2026-06-13T10:00:00Z`. Unset: the real date.
    pub start: Option<String>,
}

impl ClockConfig {
    /// The calendar clock, reading `start` at `real_now_ms`.
    pub fn resolve(&self, real_now_ms: u64) -> Result<CalendarClock, String> {
        match &self.start {
            None => Ok(CalendarClock::real()),
            Some(s) => calendar::parse_instant_ms(s)
                .map(|start| CalendarClock::starting_at(start, real_now_ms))
                .ok_or_else(|| {
                    format!(
                        "clock.start `{}` must be an RFC 3339 instant like 2026-06-13T10:00:00Z",
                        s.escape_default()
                    )
                }),
        }
    }
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
            ring_depth: 4096,
            mesh_capacity: 1024,
            mesh_backlog_max: 65_536,
            heartbeat_interval_ms: 30_000,
            wedding_day_heartbeat_interval_ms: 10_000,
            handshake_timeout_ms: 10_000,
            max_handshake_bytes: 8 * 1024,
            write_timeout_ms: 10_000,
            close_linger_ms: 1000,
            shutdown_drain_ms: 2000,
            socket_read_bytes: 4096,
            ws_read_buffer_bytes: 512,
            write_batch_bytes: 64 * 1024,
            direct_writes: true,
            outbox_max_messages: 1024,
            outbox_max_bytes: 4 * 1024 * 1024,
            max_inflight_requests: 256,
            read_pause_outbox_percent: 50,
            token_leeway_secs: 5,
            token_expiry_warning_secs: 60,
            max_weddings: 100_000,
            overloaded_retry_after_secs: 5,
            reclaim_interval_ms: 60_000,
            max_http_body_bytes: 128 * 1024,
            http_idle_timeout_ms: 30_000,
            http_max_requests_per_connection: 1000,
            rest_call_timeout_ms: 10_000,
            health_window_ms: 10_000,
            presence_flush_interval_ms: 50,
            presence_count_interval_ms: 1000,
            echo_endpoint: false,
            allowed_origins: Vec::new(),
            max_connections_per_ip: 1000,
            realtime_replay_max: 1000,
            permessage_deflate: DeflateConfig::default(),
            limits: Limits::default(),
            saturday: SaturdayConfig::default(),
            clock: ClockConfig::default(),
            tls: TlsConfig::default(),
            routing: RoutingConfig::default(),
            watchdog: WatchdogConfig::default(),
            escalation: EscalationConfig::default(),
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
        self.routing.validate()?;
        let positive = [
            ("io.max_connections", self.max_connections),
            ("io.max_connections_per_ip", self.max_connections_per_ip),
            ("io.mesh_capacity", self.mesh_capacity),
            ("io.mesh_backlog_max", self.mesh_backlog_max),
            ("io.max_handshake_bytes", self.max_handshake_bytes),
            ("io.socket_read_bytes", self.socket_read_bytes),
            ("io.ws_read_buffer_bytes", self.ws_read_buffer_bytes),
            ("io.write_batch_bytes", self.write_batch_bytes),
            ("io.outbox_max_messages", self.outbox_max_messages),
            ("io.outbox_max_bytes", self.outbox_max_bytes),
            ("io.max_http_body_bytes", self.max_http_body_bytes),
            (
                "io.http_max_requests_per_connection",
                self.http_max_requests_per_connection,
            ),
            ("io.max_weddings", self.max_weddings),
            ("io.realtime_replay_max", self.realtime_replay_max),
            ("io.max_inflight_requests", self.max_inflight_requests),
            (
                "escalation.sweep_max_messages",
                self.escalation.sweep_max_messages,
            ),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if !(1..=9).contains(&self.permessage_deflate.level) {
            return Err("io.permessage_deflate.level must be 1 to 9".into());
        }
        for (name, v) in [
            ("io.heartbeat_interval_ms", self.heartbeat_interval_ms),
            (
                "io.wedding_day_heartbeat_interval_ms",
                self.wedding_day_heartbeat_interval_ms,
            ),
            (
                "io.overloaded_retry_after_secs",
                self.overloaded_retry_after_secs,
            ),
            ("io.handshake_timeout_ms", self.handshake_timeout_ms),
            ("io.write_timeout_ms", self.write_timeout_ms),
            ("io.reclaim_interval_ms", self.reclaim_interval_ms),
            ("io.http_idle_timeout_ms", self.http_idle_timeout_ms),
            ("io.rest_call_timeout_ms", self.rest_call_timeout_ms),
            ("io.health_window_ms", self.health_window_ms),
            (
                "io.presence_flush_interval_ms",
                self.presence_flush_interval_ms,
            ),
            (
                "escalation.sweep_interval_ms",
                self.escalation.sweep_interval_ms,
            ),
        ] {
            if v == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if !(1..=100).contains(&self.read_pause_outbox_percent) {
            return Err("io.read_pause_outbox_percent must be 1 to 100".into());
        }
        if self.shards > 256 {
            return Err("io.shards must be at most 256".into());
        }
        if self.listen_backlog < 1 {
            return Err("io.listen_backlog must be at least 1".into());
        }
        if !(1..=32_768).contains(&self.ring_depth) {
            return Err("io.ring_depth must be 1 to 32768 (the kernel's largest ring)".into());
        }
        if self.mesh_capacity < 64 {
            return Err(
                "io.mesh_capacity must be at least 64 (shallow mesh queues deadlock)".into(),
            );
        }
        self.saturday.resolve()?;
        self.clock.resolve(0)?;
        self.watchdog.validate()?;
        if self.outbox_max_bytes < self.limits.max_frame_bytes {
            return Err("io.outbox_max_bytes must be at least limits.max_frame_bytes".into());
        }
        for o in &self.allowed_origins {
            crate::http::check_origin_pattern(o)
                .map_err(|why| format!("io.allowed_origins: `{o}` {why}"))?;
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err("tls.cert_file and tls.key_file must be set together".into());
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
        for depth in [0, 65_536] {
            let c = IoConfig {
                ring_depth: depth,
                ..IoConfig::default()
            };
            assert!(c.validate().unwrap_err().contains("io.ring_depth"));
        }
        for (sat, field) in [
            (
                SaturdayConfig {
                    days: vec!["caturday".into()],
                    ..SaturdayConfig::default()
                },
                "saturday.days",
            ),
            (
                SaturdayConfig {
                    time_zone: "Nowhere/Town".into(),
                    ..SaturdayConfig::default()
                },
                "saturday.time_zone",
            ),
            (
                SaturdayConfig {
                    capacity_multiplier: 0,
                    ..SaturdayConfig::default()
                },
                "saturday.capacity_multiplier",
            ),
        ] {
            let c = IoConfig {
                saturday: sat,
                ..IoConfig::default()
            };
            let e = c.validate().unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        let c = IoConfig {
            clock: ClockConfig {
                start: Some("next saturday".into()),
            },
            ..IoConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("clock.start"));
        let c = IoConfig {
            allowed_origins: vec!["https://app.example.com/path".into()],
            ..IoConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("allowed_origins"));
        let c = IoConfig {
            tls: TlsConfig {
                cert_file: Some("c.pem".into()),
                key_file: None,
            },
            ..IoConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("tls.key_file"));
    }
}
