//! The coordinator ↔ worker protocol: one JSON object per line, commands on the worker's
//! stdin, exactly one reply per command on its stdout. A worker whose stdin closes exits.
//!
//! Also the layout every process derives the same way from [`Init`]: which subscriber
//! belongs to which worker and channel, which publisher publishes to which channels, and the
//! names and users of all of them.

use crate::stats::{HistWire, WorkerCounters};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};

/// Everything a worker needs to know; sent once, first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Init {
    pub addr: SocketAddr,
    /// HS256 secret for the tokens (the baseline ignores tokens).
    pub secret: String,
    /// Local addresses client sockets bind to, round-robin by subscriber index.
    pub sources: Vec<Ipv4Addr>,
    pub worker: u32,
    pub workers: u32,
    /// Subscriber connections over all workers.
    pub subscribers: u32,
    pub channels: u32,
    /// Publisher connections over all workers.
    pub publishers: u32,
    /// `create` type of every channel: `shared` or `broadcast`.
    pub channel_type: String,
    /// Approximate size of each publish `payload`, bytes.
    pub payload_bytes: usize,
    /// Connection attempts in flight at once in this worker.
    pub connect_concurrency: usize,
    /// Keep, per message, the latency to its last subscriber (S2; costs a map entry per message).
    pub track_last: bool,
    /// The worker exits by itself this long after `Init`, whatever happens.
    pub deadline_secs: u64,
    /// `--tls`: the PEM certificate to trust; every connection speaks TLS.
    #[serde(default)]
    pub tls_ca_pem: Option<String>,
    /// S8: every subscriber also has a second channel ([`alt_channel_of`]) it may switch to
    /// (`Cmd::Switch`), and its token reaches both.
    #[serde(default)]
    pub switcher: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Cmd {
    Init(Init),
    /// Create this worker's share of the channels (index ≡ worker mod workers).
    CreateChannels {
        timeout_ms: u64,
    },
    /// Connect this worker's publishers (no subscription).
    ConnectPublishers {
        timeout_ms: u64,
    },
    /// Connect, upgrade and subscribe every subscriber of this worker. `resume` sends each
    /// one's last seen id; each waits a uniform random delay in `0..jitter_ms` first; failed
    /// attempts are counted and retried until `timeout_ms`.
    Connect {
        resume: bool,
        jitter_ms: u64,
        timeout_ms: u64,
    },
    /// Publish at `rate` messages/s over all publishers (0: as fast as the in-flight
    /// `window` per publisher allows) for `duration_ms`, or, when `per_channel` > 0, exactly
    /// that many messages to each channel. Waits for every reply, within `timeout_ms`.
    Publish {
        rate: f64,
        duration_ms: u64,
        per_channel: u32,
        window: u32,
        timeout_ms: u64,
    },
    /// Wait until every live subscriber has seen `last_ids[channel]` (0: nothing expected).
    WaitCaughtUp {
        last_ids: Vec<u64>,
        timeout_ms: u64,
    },
    /// Close every subscriber connection (FIN); their last seen ids are kept for resume.
    DropAll,
    /// S8: subscribers switch channel, one after another at `rate` switches/s over all
    /// workers for `duration_ms` (each subscriber at most once per command; 0: all at
    /// once): on its open connection each sends `unsubscribe` for its current channel and,
    /// pipelined, `subscribe` to its other one with `last_seen_id` (its position there), and
    /// is done when it has every message up to `last_ids[new channel]`. The time from the
    /// `unsubscribe` to that last message goes to `WorkerStats::switch`. Waits for every
    /// switch, within `timeout_ms`; `incomplete` counts the unfinished ones and `missing`
    /// what they still lacked.
    Switch {
        rate: f64,
        duration_ms: u64,
        last_ids: Vec<u64>,
        timeout_ms: u64,
    },
    /// Mark `percent` % of the subscribers slow: they stop reading the socket.
    SetSlow {
        percent: f64,
    },
    /// Let slow subscribers read again and drain, to see how the server ended them: waits
    /// until each is closed or has read up to `last_ids[channel]`.
    ReleaseSlow {
        last_ids: Vec<u64>,
        timeout_ms: u64,
    },
    /// Counters and histograms since the last reset.
    Stats {
        reset: bool,
    },
    Exit,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub error: Option<String>,
    pub elapsed_ms: u64,
    /// Items the command did not finish within its timeout (connections not subscribed,
    /// subscribers not caught up, replies not received).
    pub incomplete: u64,
    /// Messages still missing at the end of `WaitCaughtUp`, summed over lagging subscribers.
    pub missing: u64,
    /// `Publish`: the highest id the server assigned per channel, `(channel, id)`.
    pub last_ids: Vec<(u32, u64)>,
    pub stats: Option<WorkerStats>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    pub counters: WorkerCounters,
    /// Publish → subscriber one-way latency of live deliveries, µs.
    pub latency: HistWire,
    /// Publish → `published` reply latency, µs.
    pub ack: HistWire,
    /// Connection establishment per subscriber connection, µs: from the start of its first
    /// attempt (TCP connect; after any jitter delay and once the worker's
    /// `connect_concurrency` lets it start) through TLS (with `--tls`), the WebSocket upgrade
    /// and `subscribe`, to the `subscribed` reply (with what it recovered). Failed attempts
    /// and their retry back-off count in.
    #[serde(default)]
    pub connect: HistWire,
    /// S8: channel switch per switch, µs: `unsubscribe` sent → last recovered message in.
    #[serde(default)]
    pub switch: HistWire,
    /// `(publisher, seq, latency µs)`: the latency to the slowest subscriber seen by this
    /// worker, per message (only with `track_last`).
    pub last: Vec<(u32, u64, u64)>,
}

/// Subscribers `[start, end)` of worker `w`.
pub fn subscriber_range(init: &Init, w: u32) -> (u32, u32) {
    let n = init.subscribers as u64;
    let k = init.workers as u64;
    ((n * w as u64 / k) as u32, (n * (w as u64 + 1) / k) as u32)
}

/// Subscriber `i` listens on channel `i mod channels`, so a channel's subscribers are
/// spread over every worker.
pub fn channel_of(init: &Init, i: u32) -> u32 {
    i % init.channels
}

/// Publisher `j` lives in worker `j mod workers` and publishes to channels `c ≡ j mod
/// publishers`, round robin.
pub fn publisher_channels(init: &Init, j: u32) -> Vec<u32> {
    (j..init.channels)
        .step_by(init.publishers as usize)
        .collect()
}

/// S8: the channel subscriber `i` switches to from [`channel_of`] (and back): the one
/// half the channels away, so the two never share a subscriber group.
pub fn alt_channel_of(init: &Init, i: u32) -> u32 {
    (channel_of(init, i) + init.channels / 2) % init.channels
}

pub fn channel_name(c: u32) -> String {
    format!("wedding:perf:w-{c}")
}

pub fn wedding(c: u32) -> String {
    format!("w-{c}")
}

/// The channel index from a name made by [`channel_name`].
pub fn channel_index(name: &str) -> Option<u32> {
    name.strip_prefix("wedding:perf:w-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(subscribers: u32, channels: u32, publishers: u32, workers: u32) -> Init {
        Init {
            addr: "127.0.0.1:1".parse().unwrap(),
            secret: String::new(),
            sources: vec![],
            worker: 0,
            workers,
            subscribers,
            channels,
            publishers,
            channel_type: "shared".into(),
            payload_bytes: 0,
            connect_concurrency: 1,
            track_last: false,
            deadline_secs: 1,
            tls_ca_pem: None,
            switcher: false,
        }
    }

    #[test]
    fn layout_covers_everyone_once() {
        let i = init(1001, 125, 7, 3);
        let mut seen = 0;
        for w in 0..3 {
            let (a, b) = subscriber_range(&i, w);
            assert_eq!(a, seen);
            seen = b;
        }
        assert_eq!(seen, 1001);
        let mut chans: Vec<u32> = (0..7).flat_map(|j| publisher_channels(&i, j)).collect();
        chans.sort();
        assert_eq!(chans, (0..125).collect::<Vec<_>>());
        assert_eq!(channel_index(&channel_name(42)), Some(42));
        // S8's second channel is another one, and every channel is someone's second.
        let mut alts: Vec<u32> = (0..1001).map(|k| alt_channel_of(&i, k)).collect();
        assert!((0..1001).all(|k| alt_channel_of(&i, k) != channel_of(&i, k)));
        alts.sort();
        alts.dedup();
        assert_eq!(alts, (0..125).collect::<Vec<_>>());
        let cmd = serde_json::to_string(&Cmd::Stats { reset: true }).unwrap();
        assert!(matches!(
            serde_json::from_str::<Cmd>(&cmd).unwrap(),
            Cmd::Stats { reset: true }
        ));
    }
}
