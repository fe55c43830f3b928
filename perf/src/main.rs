//! `ringbearer-perf`: run a scenario (`s1` … `s8`), or, internally, a worker process or the
//! baseline server. See `perf/REPORT.md` for how to run each scenario.

use anyhow::Result;
use clap::{Parser, Subcommand};
use ringbearer_perf::coord::ServerKind;
use ringbearer_perf::opts::{Common, Scenario};
use ringbearer_perf::{baseline, report, scenario, worker};
use std::net::SocketAddr;

#[derive(Parser)]
#[command(
    name = "ringbearer-perf",
    about = "Whole-system load generator and scenario runner for Ringbearer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum Cmd {
    /// S1 idle Saturday: everyone connected and subscribed, heartbeats on, held.
    #[command(alias = "s1-idle")]
    S1,
    /// S2 one channel, all subscribers: broadcast fan-out at rising publish rates.
    #[command(alias = "s2-fanout")]
    S2,
    /// S3 weddings: channels of 8 subscribers, aggregate publish rate swept.
    #[command(alias = "s3-weddings")]
    S3,
    /// S4 storms: cold connect of everyone; drop all, reconnect with jitter and resume.
    #[command(alias = "s4-storm")]
    S4,
    /// S5 offline replay: everyone away, messages queued per channel, everyone returns.
    #[command(alias = "s5-replay")]
    S5,
    /// S6 publish → acknowledgement latency under rising load (not fsync-backed yet).
    #[command(alias = "s6-publish")]
    S6,
    /// S7 slow consumers: S3 at one rate, then 1 % of subscribers stop reading.
    #[command(alias = "s7-slow")]
    S7,
    /// S8 channel switch: subscribers unsubscribe and subscribe to another channel with
    /// recovery (messages waiting), at a rate of switches/s; switch latency p99.
    #[command(alias = "s8-switch")]
    S8,
    /// Internal: a worker process driven over stdin/stdout.
    #[command(hide = true)]
    Worker,
    /// The comparison baseline server (tokio + tokio-tungstenite + broadcast).
    #[command(hide = true)]
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// TLS certificate chain (PEM); with --tls-key, every connection is TLS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ringbearer-perf: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let scenario = match cli.cmd {
        Cmd::Worker => return worker::run(),
        Cmd::BaselineServer {
            listen,
            threads,
            tls_cert,
            tls_key,
        } => {
            let tls = tls_cert.as_deref().zip(tls_key.as_deref());
            return baseline::run(listen, threads, tls);
        }
        Cmd::S1 => Scenario::S1,
        Cmd::S2 => Scenario::S2,
        Cmd::S3 => Scenario::S3,
        Cmd::S4 => Scenario::S4,
        Cmd::S5 => Scenario::S5,
        Cmd::S6 => Scenario::S6,
        Cmd::S7 => Scenario::S7,
        Cmd::S8 => Scenario::S8,
    };
    let common = cli.common;
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let kinds = if common.compare {
        vec![ServerKind::Ringbearer, ServerKind::Baseline]
    } else {
        vec![common.server]
    };
    let mut results = Vec::new();
    for kind in kinds {
        results.push(scenario::run(&common, scenario, kind, &command_line)?);
    }
    let md = report::write(&common.out, &scenario.stem(common.tls), &results)?;
    println!("{md}");
    eprintln!(
        "wrote {}/{}.md and the JSON beside it",
        common.out.display(),
        scenario.stem(common.tls)
    );
    if results.iter().any(|r| r.error.is_some()) {
        anyhow::bail!("a run stopped early (see the summary)");
    }
    Ok(())
}
