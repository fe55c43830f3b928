//! The state every shard shares (read-mostly, behind one `Arc`): the token verifier,
//! server-wide counts and limits, the weddings table and calendar, the REST handler, TLS,
//! and the shutdown signal.
//!
//! It does not start, run or stop anything (that is `runtime/`), and it holds no channel
//! state: channels belong to their owner shard.

use crate::auth::TokenVerifier;
use crate::signal::Signal;
use crate::weddings::{CalendarClock, SaturdayMode, Weddings};
use parking_lot::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

/// State shared by every shard (read-mostly).
pub struct Shared {
    pub verifier: TokenVerifier,
    /// Open WebSocket connections, server-wide (for `max_connections`).
    pub connections: AtomicUsize,
    /// Set once, by `ServerHandle::shutdown`: every shard awaits it to begin its
    /// ordered stop (`runtime/mod.rs`), and open event streams end on it.
    pub shutdown: Signal,
    /// Tier accounting across shards.
    pub policy: Arc<crate::policy::Policy>,
    /// Counters, one block per shard (`metrics.rs`).
    pub metrics: Arc<[crate::metrics::ShardMetrics]>,
    /// Totals sampled once a second over `health_window_ms`, oldest first.
    pub samples: Mutex<std::collections::VecDeque<(Instant, crate::metrics::Totals)>>,
    pub started: Instant,
    /// Registered weddings (SPEC §1); persist an upsert through the `Catalog`.
    pub weddings: Weddings,
    /// The clock of calendar decisions (wedding day, Saturday mode); see `[clock]`.
    pub clock: CalendarClock,
    /// Saturday mode as configured.
    pub saturday: SaturdayMode,
    /// `io.max_connections` outside Saturday mode.
    pub base_max_connections: usize,
    /// Open connections per client address, across shards (`max_connections_per_ip`).
    pub ips: Arc<crate::policy::IpTable>,
    /// Set when `[tls]` is configured: every accepted connection speaks TLS.
    pub tls: Option<futures_rustls::TlsAcceptor>,
    /// The soft open-files limit in force (after raising it to the hard limit at start).
    pub open_files_limit: u64,
    /// The presence watchdog's alerts in force, for health and the admin page.
    pub watch_alerts: crate::watchdog::ActiveAlerts,
}

impl Shared {
    /// Calendar now (Unix ms): the wall clock unless `[clock] start` shifted it.
    pub fn calendar_now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether Saturday mode is on at calendar time `now_ms`.
    pub fn saturday_mode(&self, now_ms: u64) -> bool {
        self.saturday.is_active(now_ms)
    }

    /// SPEC §4 health `wedding_day_mode`: Saturday mode is on, or some wedding is today
    /// (calendar time `now_ms`, e.g. [`Shared::calendar_now_ms`]).
    pub fn wedding_day_mode(&self, now_ms: u64) -> bool {
        self.saturday_mode(now_ms) || self.active_weddings_today(now_ms) > 0
    }

    /// SPEC §4 health `wedding_analytics.active_weddings_today`.
    pub fn active_weddings_today(&self, now_ms: u64) -> usize {
        self.weddings.active_today(now_ms)
    }

    /// The connection cap at calendar time `now_ms` (doubled in Saturday mode).
    pub fn max_connections(&self, now_ms: u64) -> usize {
        self.saturday
            .max_connections(self.base_max_connections, now_ms)
    }
}
