//! The flags every scenario takes, and each scenario's defaults (the Saturday
//! figures, within this host's 20,000-open-files cap).

use crate::coord::ServerKind;
use anyhow::{bail, Result};
use clap::Args;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Scenario {
    /// S1: idle Saturday — everyone connected and subscribed, heartbeats on, held.
    S1,
    /// S2: one channel, every subscriber on it; publish rates rising.
    S2,
    /// S3: weddings — channels of 8 subscribers; aggregate publish rate swept.
    S3,
    /// S4: storms — cold connect of everyone, then drop all and reconnect with resume.
    S4,
    /// S5: offline replay — everyone away, 100 messages per channel, everyone back.
    S5,
    /// S6: publish → `published` acknowledgement latency under rising load.
    S6,
    /// S7: slow consumers — S3 at one rate, then 1 % of subscribers stop reading.
    S7,
    /// S8: channel switch — connected subscribers unsubscribe from their channel and
    /// subscribe to another with `last_seen_id`, messages waiting there; switch latency.
    S8,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::S1 => "s1-idle",
            Scenario::S2 => "s2-fanout",
            Scenario::S3 => "s3-weddings",
            Scenario::S4 => "s4-storm",
            Scenario::S5 => "s5-replay",
            Scenario::S6 => "s6-publish",
            Scenario::S7 => "s7-slow",
            Scenario::S8 => "s8-switch",
        }
    }

    /// The file stem of a run's results: the name, with `-tls` for `--tls` runs so they do
    /// not overwrite the plaintext ones.
    pub fn stem(self, tls: bool) -> String {
        if tls {
            format!("{}-tls", self.name())
        } else {
            self.name().to_owned()
        }
    }
}

#[derive(Clone, Debug, Args, serde::Serialize)]
pub struct Common {
    /// Server under test.
    #[arg(long, value_enum, default_value = "ringbearer", global = true)]
    pub server: ServerKind,
    /// Run against ringbearer, then the baseline, and report ratios.
    #[arg(long, global = true)]
    pub compare: bool,
    /// The ringbearer binary (release).
    #[arg(long, default_value = "target/release/ringbearer", global = true)]
    pub server_bin: PathBuf,
    /// Server shards (ringbearer) or runtime threads (baseline).
    #[arg(long, default_value_t = 2, global = true)]
    pub shards: usize,
    /// Subscriber connections [default: per scenario].
    #[arg(long, global = true)]
    pub connections: Option<u32>,
    /// Channels [default: per scenario].
    #[arg(long, global = true)]
    pub channels: Option<u32>,
    /// Publisher connections [default: per scenario].
    #[arg(long, global = true)]
    pub publishers: Option<u32>,
    /// Length of each measured step, seconds [default: per scenario].
    #[arg(long, global = true)]
    pub duration_secs: Option<f64>,
    /// Publish rate(s), messages/s over all publishers, comma-separated for a sweep
    /// [default: per scenario].
    #[arg(long, global = true)]
    pub rate: Option<String>,
    /// Worker processes [default: one per 9,000 connections].
    #[arg(long, global = true)]
    pub workers: Option<u32>,
    /// Source addresses client sockets bind to (loopback), comma-separated.
    #[arg(
        long,
        default_value = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5",
        global = true
    )]
    pub sources: String,
    /// Directory for the result JSON, the Markdown summary and the server's log.
    #[arg(long, default_value = "perf/results", global = true)]
    pub out: PathBuf,
    /// Approximate publish payload size, bytes.
    #[arg(long, default_value_t = 100, global = true)]
    pub payload_bytes: usize,
    /// The server's `storage.durability` (`fsync`, `batch` or `memory`) [default: the
    /// server's own default, `fsync` since the durability issue landed].
    #[arg(long, global = true)]
    pub durability: Option<String>,
    /// Server heartbeat interval, ms (the server's default).
    #[arg(long, default_value_t = 30_000, global = true)]
    pub heartbeat_ms: u64,
    /// Connection attempts in flight at once, per worker.
    #[arg(long, default_value_t = 256, global = true)]
    pub connect_concurrency: usize,
    /// S4: reconnect jitter, ms (each client waits uniformly 0..jitter).
    #[arg(long, default_value_t = 1000, global = true)]
    pub jitter_ms: u64,
    /// S5: messages queued per channel while everyone is away [default: 100]; S8: messages
    /// published to every channel before each switch step, so that each switch has them
    /// waiting [default: 10].
    #[arg(long, global = true)]
    pub per_channel: Option<u32>,
    /// Every connection speaks TLS (`wss://`): the server under test (and the baseline) get
    /// a self-signed certificate made for the run, the generator trusts it. Results go to
    /// `SCENARIO-tls.*`.
    #[arg(long, global = true)]
    pub tls: bool,
    /// S7: percent of subscribers that stop reading.
    #[arg(long, default_value_t = 1.0, global = true)]
    pub slow_percent: f64,
    /// S3: stop the sweep once p99 passes this, ms.
    #[arg(long, default_value_t = 50.0, global = true)]
    pub p99_limit_ms: f64,
    /// Requests in flight per publisher before it waits for replies. Keep it under the
    /// server's `outbox_max_messages` (1024): replies owed past that close the publisher
    /// with 4001 even though it reads them.
    #[arg(long, default_value_t = 512, global = true)]
    pub window: u32,
    /// Longest any one step (connect, publish, catch-up) may take, seconds.
    #[arg(long, default_value_t = 120, global = true)]
    pub step_timeout_secs: u64,
    /// The server is killed (and the run fails) if its RSS passes this, MiB.
    #[arg(long, default_value_t = 8192, global = true)]
    pub max_server_rss_mib: u64,
    /// The server is killed (and the run fails) if the workers' RSS together passes this, MiB.
    #[arg(long, default_value_t = 6144, global = true)]
    pub max_generator_rss_mib: u64,
    /// Hard bound on the whole run, seconds; workers exit by themselves after it.
    #[arg(long, default_value_t = 1800, global = true)]
    pub max_secs: u64,
}

/// A scenario's resolved parameters.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Params {
    pub connections: u32,
    pub channels: u32,
    pub publishers: u32,
    pub duration_secs: f64,
    pub rates: Vec<f64>,
    pub workers: u32,
    pub channel_type: &'static str,
}

/// Connections one worker process holds at most (20,000 open files per process here).
pub const PER_WORKER_MAX: u32 = 9_000;

impl Common {
    /// `--per-channel` or the scenario's default.
    pub fn per_channel(&self, s: Scenario) -> u32 {
        self.per_channel
            .unwrap_or(if s == Scenario::S8 { 10 } else { 100 })
    }

    pub fn sources(&self) -> Result<Vec<Ipv4Addr>> {
        let mut out = Vec::new();
        for s in self
            .sources
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let ip: Ipv4Addr = s
                .parse()
                .map_err(|_| anyhow::anyhow!("bad source address `{s}`"))?;
            if !ip.is_loopback() {
                bail!(
                    "source address {ip} is not loopback: this generator only loads this machine"
                );
            }
            out.push(ip);
        }
        Ok(out)
    }

    pub fn params(&self, s: Scenario) -> Result<Params> {
        // (connections, channels or 0 for connections/8, publishers, step s, rates, type)
        let (conns, chans, pubs, dur, rates, kind): (u32, u32, u32, f64, &str, &str) = match s {
            Scenario::S1 => (19_900, 0, 0, 60.0, "0", "shared"),
            Scenario::S2 => (19_900, 1, 1, 10.0, "1,5,15", "broadcast"),
            Scenario::S3 => (19_896, 0, 4, 10.0, "2000,4000,8000,16000,32000", "shared"),
            Scenario::S4 => (19_900, 0, 2, 0.0, "0", "shared"),
            Scenario::S5 => (19_896, 0, 4, 0.0, "0", "shared"),
            Scenario::S6 => (100, 100, 8, 5.0, "10000,25000,50000,100000", "shared"),
            Scenario::S7 => (19_896, 0, 4, 10.0, "8000", "shared"),
            Scenario::S8 => (19_896, 0, 4, 5.0, "200,1000", "shared"),
        };
        let connections = self.connections.unwrap_or(conns);
        let channels = self
            .channels
            .unwrap_or(if chans == 0 { connections / 8 } else { chans })
            .max(1);
        let publishers = self.publishers.unwrap_or(pubs).min(channels);
        let rates = self
            .rate
            .as_deref()
            .unwrap_or(rates)
            .split(',')
            .map(|r| r.trim().parse::<f64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| anyhow::anyhow!("--rate takes numbers, comma-separated"))?;
        let total = connections + publishers;
        let workers = self
            .workers
            .unwrap_or(total.div_ceil(PER_WORKER_MAX))
            .max(1);
        if total.div_ceil(workers) > PER_WORKER_MAX {
            bail!(
                "{total} connections over {workers} workers is more than {PER_WORKER_MAX} per process (the open-files cap is 20,000): raise --workers"
            );
        }
        if connections > 0 && channels > connections && s != Scenario::S6 {
            bail!("more channels ({channels}) than connections ({connections})");
        }
        if s == Scenario::S8 && channels < 2 {
            bail!("S8 needs at least 2 channels (each subscriber switches between two)");
        }
        Ok(Params {
            connections,
            channels,
            publishers,
            duration_secs: self.duration_secs.unwrap_or(dur),
            rates,
            workers,
            channel_type: kind,
        })
    }
}
