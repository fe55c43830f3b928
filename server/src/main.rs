//! `ringbearer`: the one binary. `serve` runs the server (no config file needed for a
//! loopback development run), `token` mints a JWT that `serve` on the same data directory
//! accepts, `dev-cert` writes a self-signed certificate for local `wss://`, `wal verify` /
//! `wal repair` check and explicitly repair the write-ahead log of a stopped server.

use std::sync::Arc;

mod assets;
mod config;
mod dev_cert;
mod rest;
mod store;
mod wal_cli;
mod webhooks;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use config::Config;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ringbearer_core::{Claims, Role, Tier};
use std::net::SocketAddr;
use std::path::PathBuf;

/// mimalloc, unless built with `--features system-alloc` (the C library's malloc, which
/// heap profilers such as heaptrack can see: docs/performance.md "Where an idle
/// connection's bytes go").
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Log format on stderr [default: text, or `log.format` in the config].
        #[arg(long, value_enum)]
        log_format: Option<config::LogFormat>,
    },
    /// Check (`verify`) or explicitly repair (`repair`) the write-ahead log of a stopped
    /// server (docs/operations.md, "The log is damaged").
    Wal {
        #[command(subcommand)]
        cmd: wal_cli::WalCmd,
    },
    /// Write a self-signed certificate and key (cert.pem, key.pem) for local `wss://`.
    DevCert {
        /// Directory to write into (created if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Comma-separated host names and IP addresses the certificate is valid for.
        #[arg(long, default_value = "localhost,127.0.0.1,::1")]
        hosts: String,
        /// Overwrite cert.pem/key.pem if they exist.
        #[arg(long)]
        force: bool,
    },
    /// Mint a token that `serve` with the same data directory or config accepts: HS256 with
    /// its secret, or RS256/ES256 with `--key` (a PEM private key).
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
        /// File holding the HS256 secret (as `auth.hs256_secret_file`), instead of the
        /// config's secret or the data directory's development secret.
        #[arg(long, conflicts_with = "key")]
        secret_file: Option<PathBuf>,
        /// PEM private key (PKCS#8; PKCS#1 for RSA) to sign with instead of the HS256 secret.
        #[arg(long, requires = "alg")]
        key: Option<PathBuf>,
        /// RS256 or ES256 (with --key).
        #[arg(long, requires = "key", value_parser = ["RS256", "ES256"])]
        alg: Option<String>,
        /// `kid` header naming the server's key (with --key).
        #[arg(long, requires = "key")]
        kid: Option<String>,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ringbearer: {e:#}");
        std::process::exit(2);
    }
}

/// The development secret `serve` made in `data_dir`; never creates one.
fn existing_dev_secret(data_dir: &std::path::Path) -> Result<Vec<u8>> {
    let path = data_dir.join(config::DEV_SECRET_FILE);
    if !path.exists() {
        bail!(
            "no development secret in {dir} ({file} does not exist), so no server would accept \
             a token signed now: start `ringbearer serve --data {dir}` first (it creates the \
             secret), pass the data directory that server uses with --data, or sign with the \
             server's configured secret (--secret-file FILE, or --config FILE with \
             auth.hs256_secret_file)",
            dir = data_dir.display(),
            file = path.display()
        );
    }
    Ok(config::dev_secret(data_dir)?.0)
}

fn run() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve {
            config,
            listen,
            data,
            shards,
            echo_endpoint,
            log_format,
        } => serve(config, listen, data, shards, echo_endpoint, log_format),
        Cmd::Token {
            config,
            data,
            sub,
            org,
            role,
            tier,
            weddings,
            ttl,
            secret_file,
            key,
            alg,
            kid,
        } => {
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
            let (header, key) = match (key, alg.as_deref()) {
                (Some(file), Some(alg)) => {
                    let pem = std::fs::read(&file)
                        .with_context(|| format!("reading --key {}", file.display()))?;
                    let (alg, key) = if alg == "RS256" {
                        (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem))
                    } else {
                        (Algorithm::ES256, EncodingKey::from_ec_pem(&pem))
                    };
                    let key = key.with_context(|| {
                        format!("--key {}: not a {alg:?} private key in PEM", file.display())
                    })?;
                    let mut h = Header::new(alg);
                    h.kid = kid;
                    (h, key)
                }
                _ => {
                    let cfg = load(config.as_ref())?;
                    let data_dir = data.unwrap_or(cfg.data_dir.clone());
                    let secret = match (secret_file, cfg.configured_secret()?) {
                        (Some(f), _) => {
                            let s = std::fs::read_to_string(&f)
                                .with_context(|| format!("reading --secret-file {}", f.display()))?
                                .trim_end()
                                .to_owned();
                            if s.is_empty() {
                                bail!("--secret-file {} is empty", f.display());
                            }
                            s.into_bytes()
                        }
                        (None, Some(s)) => s,
                        // Only an existing development secret: a fresh one would sign a
                        // token that no running server accepts.
                        (None, None) => existing_dev_secret(&data_dir)?,
                    };
                    (
                        Header::new(Algorithm::HS256),
                        EncodingKey::from_secret(&secret),
                    )
                }
            };
            let token = jsonwebtoken::encode(&header, &claims, &key)?;
            println!("{token}");
            Ok(())
        }
        Cmd::DevCert { out, hosts, force } => dev_cert::run(&out, &hosts, force),
        Cmd::Wal { cmd } => wal_cli::run(cmd),
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

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`): text lines, coloured only
/// when stderr is a terminal (a log file gets no escape codes), or JSON lines.
fn init_logging(format: config::LogFormat) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        config::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn serve(
    config_path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    shards: Option<usize>,
    echo_endpoint: bool,
    log_format: Option<config::LogFormat>,
) -> Result<()> {
    let mut cfg = load(config_path.as_ref())?;
    init_logging(log_format.unwrap_or(cfg.log.format));
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
    // The development secret is for a loopback run with no token key configured at all.
    let (secret, dev) = match cfg.configured_secret()? {
        Some(s) => (Some(s), None),
        None if !cfg.auth.public_keys.is_empty() => (None, None),
        None => {
            if !io.listen.ip().is_loopback() {
                bail!(
                    "refusing to listen on {} without a configured secret: the development secret is for loopback only; set auth.hs256_secret_file or auth.public_keys in a config file",
                    io.listen
                );
            }
            let (s, path, created) = config::dev_secret(&cfg.data_dir)?;
            (Some(s), Some((path, created)))
        }
    };
    let verifier = cfg.verifier(secret.as_deref(), io.token_leeway_secs)?;
    let mut opened = store::open(&cfg.data_dir, &cfg.storage, io.shard_count(), &cfg.webhooks)?;
    // Cluster mode (docs/cluster.md): the bridge thread, and every shard's journal behind
    // the gate that refuses stores (retryable) while the cluster is not ready.
    let cluster = if cfg.cluster.enabled {
        let link = Arc::new(ringbearer_io::cluster::Link::new(
            &cfg.cluster,
            io.shard_count(),
        ));
        ringbearer_io::cluster::start_bridge(cfg.cluster.clone(), link.clone())
            .context("starting the cluster bridge thread")?;
        opened.store.journal = Some(Arc::new(ringbearer_io::cluster::GatedFactory {
            inner: opened.store.journal.take(),
            link: link.clone(),
        }));
        opened.store.cluster = Some(link.clone());
        Some(link)
    } else {
        None
    };
    let routes = rest::Routes(Arc::new(rest::Rest::new(
        cfg.rest.clone(),
        opened.registry.clone(),
        opened.webhooks.clone(),
        cluster,
    )?));
    // Before anything is printed: a SIGTERM sent as soon as "listening" appears (a test,
    // a supervisor) must stop the server cleanly, not kill it with the default action.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let handle =
        ringbearer_io::start_with(io.clone(), verifier, opened.store, Some(Arc::new(routes)))
            .context("starting the server")?;
    let addr = handle.local_addr;
    println!(
        "ringbearer {} listening on {addr} ({} shards)",
        env!("CARGO_PKG_VERSION"),
        handle.shards
    );
    let ws = if io.tls.enabled() { "wss" } else { "ws" };
    println!("  WebSocket: {ws}://{addr}/ws");
    println!(
        "  storage: {} in {}",
        cfg.storage.durability,
        cfg.data_dir.display()
    );
    if io.echo_endpoint {
        println!("  echo (conformance): {ws}://{addr}/echo");
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
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down: closing connections with 1001");
    }
    handle.shutdown();
    handle.join();
    // The webhook sender ends after its attempt in flight (a row not yet removed is sent
    // again after the next start).
    if let Some(w) = &opened.webhooks {
        w.stop();
    }
    // Every shard has stopped: write out what the registry still has queued.
    if let Some(r) = opened.registry {
        if let Err(e) = r.close() {
            tracing::error!("closing the registry: {e}");
        }
    }
    println!("ringbearer stopped");
    Ok(())
}
