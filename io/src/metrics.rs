//! Live figures for health and Prometheus: one block of counters per shard, written only by
//! that shard (relaxed atomics, no contention) and summed when someone asks.
//!
//! Delivery latency is publish (`ts_ms` the owner stamped) to the moment the receiving
//! shard queues the frame for its subscribers; `ts_ms` has millisecond resolution, so each
//! sample reads up to 1 ms high. It does not include the socket write.

use ringbearer_core::error::ErrorCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the latency histogram's buckets, in microseconds (Prometheus `le`).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Roles as `wedding_analytics.supplier_activity` groups them (SPEC §4 health).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleGroup {
    Photographers,
    Venues,
    Catering,
    Others,
    /// Couples, coordinators, guests, admins and services: not suppliers.
    NotSupplier,
}

impl RoleGroup {
    pub fn of(role: ringbearer_core::Role) -> RoleGroup {
        use ringbearer_core::Role::*;
        match role {
            Photographer | Videographer => RoleGroup::Photographers,
            Venue => RoleGroup::Venues,
            Caterer => RoleGroup::Catering,
            Florist | Supplier => RoleGroup::Others,
            _ => RoleGroup::NotSupplier,
        }
    }
}

/// One shard's counters.
#[derive(Default)]
pub struct ShardMetrics {
    /// Messages this shard (as owner) stored and announced.
    pub published: AtomicU64,
    /// Frames queued to local subscriber connections.
    pub deliveries: AtomicU64,
    /// Channels this shard owns (a gauge).
    pub channels: AtomicU64,
    pub connections_opened: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    /// Reads paused for a connection's unanswered requests / its unread answers.
    pub read_pauses_inflight: AtomicU64,
    pub read_pauses_outbox: AtomicU64,
    /// Socket writes made straight from the fan-out, and those handed to the writer task
    /// because the socket was full (host/cork.rs).
    pub writes_direct: AtomicU64,
    pub writes_deferred: AtomicU64,
    pub heartbeat_closes: AtomicU64,
    pub http_requests: AtomicU64,
    /// Refusals sent, by `ErrorCode::ALL` index.
    pub refusals: [AtomicU64; ErrorCode::ALL.len()],
    /// Latency histogram: per bucket (not cumulative), then the overflow bucket.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    pub latency_sum_us: AtomicU64,
    /// Connected users per `RoleGroup` (supplier groups only, a gauge).
    pub suppliers: [AtomicU64; 4],
    /// Journal failures (a store that refused a write or sync).
    pub storage_failures: AtomicU64,
}

impl ShardMetrics {
    pub fn observe_latency_us(&self, us: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }

    pub fn refused(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.refusals[i].fetch_add(1, Relaxed);
        }
    }

    pub fn supplier_delta(&self, g: RoleGroup, up: bool) {
        let i = match g {
            RoleGroup::Photographers => 0,
            RoleGroup::Venues => 1,
            RoleGroup::Catering => 2,
            RoleGroup::Others => 3,
            RoleGroup::NotSupplier => return,
        };
        if up {
            self.suppliers[i].fetch_add(1, Relaxed);
        } else {
            self.suppliers[i].fetch_sub(1, Relaxed);
        }
    }
}

/// The sum over shards at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub published: u64,
    pub deliveries: u64,
    pub channels: u64,
    pub connections_opened: u64,
    pub slow_consumer_closes: u64,
    pub read_pauses_inflight: u64,
    pub read_pauses_outbox: u64,
    pub writes_direct: u64,
    pub writes_deferred: u64,
    pub heartbeat_closes: u64,
    pub http_requests: u64,
    pub refusals: Vec<(ErrorCode, u64)>,
    pub latency_buckets: Vec<u64>,
    pub latency_sum_us: u64,
    pub suppliers: [u64; 4],
    pub storage_failures: u64,
}

impl Totals {
    pub fn sum(shards: &[ShardMetrics]) -> Totals {
        let mut t = Totals {
            refusals: ErrorCode::ALL.iter().map(|c| (*c, 0)).collect(),
            latency_buckets: vec![0; LATENCY_BUCKETS_US.len() + 1],
            ..Totals::default()
        };
        for s in shards {
            t.published += s.published.load(Relaxed);
            t.deliveries += s.deliveries.load(Relaxed);
            t.channels += s.channels.load(Relaxed);
            t.connections_opened += s.connections_opened.load(Relaxed);
            t.slow_consumer_closes += s.slow_consumer_closes.load(Relaxed);
            t.read_pauses_inflight += s.read_pauses_inflight.load(Relaxed);
            t.read_pauses_outbox += s.read_pauses_outbox.load(Relaxed);
            t.writes_direct += s.writes_direct.load(Relaxed);
            t.writes_deferred += s.writes_deferred.load(Relaxed);
            t.heartbeat_closes += s.heartbeat_closes.load(Relaxed);
            t.http_requests += s.http_requests.load(Relaxed);
            t.latency_sum_us += s.latency_sum_us.load(Relaxed);
            t.storage_failures += s.storage_failures.load(Relaxed);
            for (i, r) in s.refusals.iter().enumerate() {
                t.refusals[i].1 += r.load(Relaxed);
            }
            for (i, b) in s.latency_buckets.iter().enumerate() {
                t.latency_buckets[i] += b.load(Relaxed);
            }
            for (i, g) in s.suppliers.iter().enumerate() {
                t.suppliers[i] = t.suppliers[i].wrapping_add(g.load(Relaxed));
            }
        }
        t
    }

    pub fn latency_count(&self) -> u64 {
        self.latency_buckets.iter().sum()
    }
}

/// Latency figures over a window: the difference of two histogram snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencyWindow {
    pub count: u64,
    pub average_ms: f64,
    /// The upper bound of the bucket holding the 99th percentile (0 with no samples).
    pub p99_ms: f64,
}

impl LatencyWindow {
    pub fn between(older: &Totals, newer: &Totals) -> LatencyWindow {
        let buckets: Vec<u64> = newer
            .latency_buckets
            .iter()
            .zip(older.latency_buckets.iter().chain(std::iter::repeat(&0)))
            .map(|(n, o)| n.saturating_sub(*o))
            .collect();
        let count: u64 = buckets.iter().sum();
        if count == 0 {
            return LatencyWindow::default();
        }
        let sum = newer.latency_sum_us.saturating_sub(older.latency_sum_us);
        let rank = (count * 99).div_ceil(100);
        let mut seen = 0;
        let mut p99_us = *LATENCY_BUCKETS_US.last().expect("buckets");
        for (i, b) in buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                p99_us = LATENCY_BUCKETS_US
                    .get(i)
                    .copied()
                    .unwrap_or(2 * LATENCY_BUCKETS_US[LATENCY_BUCKETS_US.len() - 1]);
                break;
            }
        }
        LatencyWindow {
            count,
            average_ms: sum as f64 / count as f64 / 1000.0,
            p99_ms: p99_us as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_sums_and_p99_come_from_the_right_bucket() {
        let shards: Vec<ShardMetrics> = (0..2).map(|_| ShardMetrics::default()).collect();
        let before = Totals::sum(&shards);
        for _ in 0..98 {
            shards[0].observe_latency_us(300);
        }
        shards[1].observe_latency_us(40_000);
        shards[1].observe_latency_us(40_000);
        let after = Totals::sum(&shards);
        assert_eq!(after.latency_count(), 100);
        let w = LatencyWindow::between(&before, &after);
        assert_eq!(w.count, 100);
        assert_eq!(w.p99_ms, 50.0);
        assert!((w.average_ms - (98.0 * 0.3 + 80.0) / 100.0).abs() < 1e-9);
        // Only what happened in the window counts.
        shards[0].observe_latency_us(300);
        let w = LatencyWindow::between(&after, &Totals::sum(&shards));
        assert_eq!((w.count, w.p99_ms), (1, 0.5));
    }

    #[test]
    fn refusals_are_counted_by_code() {
        let s = ShardMetrics::default();
        s.refused(ErrorCode::RateLimited);
        s.refused(ErrorCode::RateLimited);
        let t = Totals::sum(std::slice::from_ref(&s));
        assert!(t.refusals.contains(&(ErrorCode::RateLimited, 2)));
    }
}

thread_local! {
    /// This shard's block (set once when the shard starts; absent on other threads).
    static LOCAL: std::cell::RefCell<Option<(std::sync::Arc<[ShardMetrics]>, usize)>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes block `me` of `all` this thread's (called by each shard at start).
pub fn install(all: std::sync::Arc<[ShardMetrics]>, me: usize) {
    LOCAL.with(|l| *l.borrow_mut() = Some((all, me)));
}

/// Runs `f` on this shard's block; does nothing off the shards (unit tests).
pub fn with(f: impl FnOnce(&ShardMetrics)) {
    LOCAL.with(|l| {
        if let Some((all, me)) = &*l.borrow() {
            f(&all[*me]);
        }
    });
}
