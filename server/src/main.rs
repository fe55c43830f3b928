//! `ringbearer`: the one binary. `serve` runs the server (no config file needed for a
//! loopback development run), `token` mints a JWT that `serve` on the same data directory
//! accepts.

use std::sync::Arc;

mod config;
mod rest;
mod store;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use config::Config;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mimalloc::MiMalloc;
use ringbearer_core::{Claims, Role, Tier};
use std::net::SocketAddr;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(
    name = "ringbearer",
    version,
    about = "Real-time channel server for wedding-coordination apps"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        /// TOML config file (see docs/operations.md). Flags below override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory [default: ./data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Number of shards (executors) [default: online CPUs].
        #[arg(long)]
        shards: Option<usize>,
        /// Serve GET /echo for the Autobahn conformance suite.
        #[arg(long)]
        echo_endpoint: bool,
    },
    /// Mint a token (HS256) that `serve` with the same data directory or config accepts.
    Token {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// User id.
        #[arg(long)]
        sub: String,
        /// Organization id.
        #[arg(long)]
        org: String,
        /// couple, coordinator, photographer, videographer, venue, caterer, florist,
        /// supplier, guest, admin or service.
        #[arg(long)]
        role: String,
        /// free, starter, professional, scale or enterprise.
        #[arg(long, default_value = "free")]
        tier: String,
        /// Comma-separated wedding ids (`*` only for admin/service).
        #[arg(long, default_value = "")]
        weddings: String,
        /// Lifetime: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ringbearer: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve {
            config,
            listen,
            data,
            shards,
            echo_endpoint,
        } => serve(config, listen, data, shards, echo_endpoint),
        Cmd::Token {
            config,
            data,
            sub,
            org,
            role,
            tier,
            weddings,
            ttl,
        } => {
            let cfg = load(config.as_ref())?;
            let data_dir = data.unwrap_or(cfg.data_dir.clone());
            let secret = match cfg.configured_secret()? {
                Some(s) => s,
                None => config::dev_secret(&data_dir)?.0,
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let claims = Claims {
                sub,
                org,
                role: Role::parse(&role).with_context(|| format!("unknown role `{role}`"))?,
                tier: Tier::parse(&tier).with_context(|| format!("unknown tier `{tier}`"))?,
                weddings: weddings
                    .split(',')
                    .map(str::trim)
                    .filter(|w| !w.is_empty())
                    .map(String::from)
                    .collect(),
                exp: now + parse_ttl(&ttl)?,
                nbf: Some(now),
            };
            claims
                .validate()
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(&secret),
            )?;
            println!("{token}");
            Ok(())
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

/// `90s`, `30m`, `1h`, `7d` or plain seconds.
fn parse_ttl(s: &str) -> Result<u64> {
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid --ttl `{s}` (use 90s, 30m, 1h, 7d)"))?;
    if n == 0 {
        bail!("--ttl must be positive");
    }
    Ok(n * mult)
}

fn serve(
    config_path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    shards: Option<usize>,
    echo_endpoint: bool,
) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cfg = load(config_path.as_ref())?;
    if let Some(d) = data {
        cfg.data_dir = d;
    }
    if let Some(l) = listen {
        cfg.io.listen = l;
    }
    if let Some(n) = shards {
        cfg.io.shards = n;
    }
    cfg.io.echo_endpoint |= echo_endpoint;
    let io = cfg.io_config()?;
    let (secret, dev) = match cfg.configured_secret()? {
        Some(s) => (s, None),
        None => {
            if !io.listen.ip().is_loopback() {
                bail!(
                    "refusing to listen on {} without a configured secret: the development secret is for loopback only; set auth.hs256_secret_file in a config file",
                    io.listen
                );
            }
            let (s, path, created) = config::dev_secret(&cfg.data_dir)?;
            (s, Some((path, created)))
        }
    };
    let verifier = ringbearer_io::TokenVerifier::hs256(&secret, io.token_leeway_secs);
    let opened = store::open(&cfg.data_dir, &cfg.storage, io.shard_count())?;
    let routes = rest::Routes(Arc::new(rest::Rest::new(
        cfg.rest.clone(),
        opened.registry.clone(),
    )?));
    let handle =
        ringbearer_io::start_with(io.clone(), verifier, opened.store, Some(Arc::new(routes)))
            .context("starting the server")?;
    let addr = handle.local_addr;
    println!(
        "ringbearer {} listening on {addr} ({} shards)",
        env!("CARGO_PKG_VERSION"),
        handle.shards
    );
    println!("  WebSocket: ws://{addr}/ws");
    println!(
        "  storage: {} in {}",
        cfg.storage.durability,
        cfg.data_dir.display()
    );
    if io.echo_endpoint {
        println!("  echo (conformance): ws://{addr}/echo");
    }
    if let Some((path, created)) = dev {
        println!(
            "  development secret: {} ({}; loopback only)",
            path.display(),
            if created { "created now" } else { "existing" }
        );
        println!(
            "  mint a token: ringbearer token --data {} --sub u-1 --org org-1 --role coordinator --tier professional --weddings w-1",
            cfg.data_dir.display()
        );
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down: closing connections with 1001");
    }
    handle.shutdown();
    handle.join();
    // Every shard has stopped: write out what the registry still has queued.
    if let Some(r) = opened.registry {
        if let Err(e) = r.close() {
            tracing::error!("closing the registry: {e}");
        }
    }
    println!("ringbearer stopped");
    Ok(())
}
