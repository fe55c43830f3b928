//! Counters and HDR latency histograms kept by each worker, their wire form between worker
//! and coordinator (a histogram travels as its non-empty `(value, count)` buckets), and the
//! merge the coordinator does over every worker.
//!
//! Latencies are recorded in microseconds, 1 µs to 10 min, 3 significant digits.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Highest latency recorded, in µs (larger values are clamped and counted as such).
const LATENCY_US_MAX: u64 = 600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static bounds are valid")
}

pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, LATENCY_US_MAX));
}

/// A histogram as it travels from a worker: its non-empty buckets.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HistWire(pub Vec<(u64, u64)>);

impl HistWire {
    pub fn from_hist(h: &Histogram<u64>) -> HistWire {
        HistWire(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for &(v, n) in &self.0 {
            let _ = h.record_n(v.clamp(1, LATENCY_US_MAX), n);
        }
    }
}

/// Percentiles of one histogram, in µs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// What one worker counted since its last reset. Every field adds up across workers,
/// except the per-message maxima in `last_subscriber` (merged by max).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerCounters {
    /// Connection attempts that failed (TCP connect, upgrade, or timeout); retried ones too.
    pub connect_errors: u64,
    /// Subscribe requests answered with `error`.
    pub subscribe_errors: u64,
    /// Connections that reached `subscribed`.
    pub subscribed: u64,
    /// Of those, connections over TLS (a completed rustls handshake: `--tls`).
    #[serde(default)]
    pub tls_subscribed: u64,
    /// `subscribed` replies with `recovered: false`.
    pub not_recovered: u64,
    /// Live `message` frames received by subscribers.
    pub deliveries: u64,
    /// Messages received inside `subscribed` replies (resume), plus any that followed them.
    pub replayed: u64,
    /// Ids skipped: sum over every jump of `id - last - 1`.
    pub gaps: u64,
    /// Messages with an id at or below one already seen on that connection's channel.
    pub duplicates: u64,
    /// Messages for a channel the connection did not subscribe to.
    pub foreign: u64,
    /// Subscriber connections the server ended (close frame or EOF) outside a planned drop,
    /// by close code (`eof` when no close frame came); `slow:CODE` for subscribers that had
    /// been told to stop reading (S7), which are not errors.
    pub closed: BTreeMap<String, u64>,
    /// Publish requests sent.
    pub published: u64,
    /// `published` replies received.
    pub acked: u64,
    /// `error` replies by code (publish or create).
    pub errors: BTreeMap<String, u64>,
    /// The first few error texts, for the report.
    pub error_samples: Vec<String>,
    /// Ticks where the publisher could not send what the rate asked because of its
    /// in-flight window.
    pub window_stalls: u64,
}

impl WorkerCounters {
    pub fn merge(&mut self, o: &WorkerCounters) {
        self.connect_errors += o.connect_errors;
        self.subscribe_errors += o.subscribe_errors;
        self.subscribed += o.subscribed;
        self.tls_subscribed += o.tls_subscribed;
        self.not_recovered += o.not_recovered;
        self.deliveries += o.deliveries;
        self.replayed += o.replayed;
        self.gaps += o.gaps;
        self.duplicates += o.duplicates;
        self.foreign += o.foreign;
        for (k, v) in &o.closed {
            *self.closed.entry(k.clone()).or_default() += v;
        }
        self.published += o.published;
        self.acked += o.acked;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for s in &o.error_samples {
            if self.error_samples.len() < 8 {
                self.error_samples.push(s.clone());
            }
        }
        self.window_stalls += o.window_stalls;
    }

    pub fn error(&mut self, code: &str, sample: impl FnOnce() -> String) {
        *self.errors.entry(code.to_owned()).or_default() += 1;
        if self.error_samples.len() < 8 {
            self.error_samples.push(sample());
        }
    }

    pub fn total_errors(&self) -> u64 {
        self.connect_errors
            + self.subscribe_errors
            + self.errors.values().sum::<u64>()
            + self
                .closed
                .iter()
                .filter(|(k, _)| !k.starts_with("slow:"))
                .map(|(_, v)| v)
                .sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_through_the_wire_form() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=1000 {
            record(&mut a, v);
            record(&mut b, v * 10);
        }
        let mut m = new_histogram();
        HistWire::from_hist(&a).add_to(&mut m);
        let wire = serde_json::to_string(&HistWire::from_hist(&b)).unwrap();
        serde_json::from_str::<HistWire>(&wire)
            .unwrap()
            .add_to(&mut m);
        assert_eq!(m.len(), 2000);
        let s = LatencySummary::of(&m);
        assert!(s.max_us >= 9990 && s.max_us <= 10010, "{s:?}");
        // 1000 values of a plus the 91 of b at or below 910: the 1000th is ~910.
        assert!(s.p50_us >= 905 && s.p50_us <= 915, "{s:?}");
    }
}
