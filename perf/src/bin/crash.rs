//! `crash`: the durability crash loop at scale (durability issue). Starts the real server
//! (release build) on a fresh data directory with the `fsync` policy, runs publishers on
//! channels spread over every shard, kills the server with SIGKILL at random points,
//! restarts it on the same data, and after the last cycle checks that every publish it
//! answered with an id is stored exactly once, in order, under that id. Bounded: stops
//! after `--cycles` kills or `--max-secs`, whichever comes first, and kills the server on
//! every exit path.
//!
//! ```text
//! cargo build --release -p ringbearer -p ringbearer-perf
//! target/release/crash --cycles 50 --publishers 32 --channels 16 --out perf/results
//! ```

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(
    about = "SIGKILL the server under publish load, restart, verify nothing acknowledged was lost"
)]
struct Opts {
    /// Kill/restart cycles.
    #[arg(long, default_value_t = 20)]
    cycles: usize,
    /// Concurrent publishers (each its own connection).
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Channels the publishers share.
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Shards of the server.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Acknowledged publishes between kills: a random number in [min, max].
    #[arg(long, default_value_t = 100)]
    min_acks: usize,
    #[arg(long, default_value_t = 2000)]
    max_acks: usize,
    /// Payload bytes per publish.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Hard time bound for the whole run.
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
    #[arg(long, default_value = "target/release/ringbearer")]
    server_bin: PathBuf,
    /// Where to write `crash.json` and `crash.md` (optional).
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path, data: &Path, shards: usize) -> Result<Server> {
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            &shards.to_string(),
            "--config",
        ])
        .arg(data.join("crash.toml"))
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let first = lines.next().context("the server printed nothing")??;
    let addr = first
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .with_context(|| format!("unexpected first line: {first}"))?
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    Ok(Server { child, addr })
}

fn token(data: &Path) -> Result<String> {
    let secret = std::fs::read_to_string(data.join("dev-secret"))?
        .trim()
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = json!({"sub": "crash", "org": "perf", "role": "coordinator", "tier": "enterprise",
        "weddings": ["w-crash"], "exp": now + 86_400, "nbf": now - 1});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: &str, token: &str) -> Result<Ws> {
    let mut req = format!("ws://{addr}/ws").into_client_request()?;
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse()?);
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

/// Sends `req` and returns the reply with its `ref`, or `None` when the connection ends.
async fn call(ws: &mut Ws, req: Value) -> Option<Value> {
    let r = req["ref"].clone();
    ws.send(Message::Text(req.to_string().into())).await.ok()?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .ok()?
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).ok()?;
                if v["ref"] == r {
                    return Some(v);
                }
            }
            Some(Ok(_)) => {}
            _ => return None,
        }
    }
}

type Acked = Arc<Mutex<Vec<(String, u64, String)>>>;

async fn publisher(
    addr: String,
    token: String,
    channel: String,
    tag: String,
    payload: String,
    acked: Acked,
) {
    let Ok(mut ws) = connect(&addr, &token).await else {
        return;
    };
    for seq in 0u64.. {
        let key = format!("{tag}/{seq}");
        let req = json!({"op": "publish", "ref": key, "channel": channel, "type": "general", "payload": {"k": key, "p": payload}});
        match call(&mut ws, req).await {
            Some(v) if v["op"] == "published" => {
                acked
                    .lock()
                    .unwrap()
                    .push((channel.clone(), v["id"].as_u64().unwrap_or(0), key));
            }
            // A refusal while the server dies (e.g. WS_INTERNAL) is not an acknowledgement.
            Some(_) => {}
            None => return,
        }
    }
}

/// Every kept message of `channel`: subscribe with history, publish a marker, read until it.
async fn read_all(addr: &str, token: &str, channel: &str) -> Result<Vec<(u64, String)>> {
    let mut ws = connect(addr, token).await?;
    let r = call(
        &mut ws,
        json!({"op": "subscribe", "ref": "s", "channel": channel, "include_history": true}),
    )
    .await
    .context("subscribe")?;
    let mut got = Vec::new();
    for m in r["messages"].as_array().context("messages")? {
        got.push((
            m["id"].as_u64().unwrap_or(0),
            m["payload"]["k"].as_str().unwrap_or("").to_owned(),
        ));
    }
    // The history beyond the reply's inline part follows as `message` frames: send the
    // marker without waiting for its reply, and collect every message until the marker.
    let marker = json!({"op": "publish", "ref": "m", "channel": channel, "type": "general", "payload": {"k": "marker"}});
    ws.send(Message::Text(marker.to_string().into())).await?;
    loop {
        let Some(Ok(Message::Text(t))) =
            tokio::time::timeout(Duration::from_secs(60), ws.next()).await?
        else {
            bail!("connection ended while reading {channel}");
        };
        let v: Value = serde_json::from_str(&t)?;
        if v["op"] != "message" || v["channel"] != channel {
            continue;
        }
        let id = v["id"].as_u64().unwrap_or(0);
        let key = v["payload"]["k"].as_str().unwrap_or("").to_owned();
        if key == "marker" {
            return Ok(got);
        }
        got.push((id, key));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let o = Opts::parse();
    let started = Instant::now();
    let data = std::env::temp_dir().join(format!("rb-crash-{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        data.join("crash.toml"),
        // Every message is kept so every acknowledgement can be checked, so the reader's
        // history burst is huge: its outgoing backlog bound is raised to match.
        "[io]\noutbox_max_messages = 100000000\noutbox_max_bytes = 17179869184\n[limits]\nmax_queued = 10000000\nmax_subscribers = 1000\nchannel_messages_per_min = 100000000\n[limits.tiers.enterprise]\nmessages_per_min = 100000000\nconnections_per_user = 10000\nchannels_per_org = 100000\nsubscriptions_per_user = 10000\n",
    )?;
    let result = run(&o, &data, started).await;
    let _ = std::fs::remove_dir_all(&data);
    let report = result?;
    println!("{report}");
    if let Some(dir) = &o.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("crash.md"), format!("{report}\n"))?;
    }
    Ok(())
}

async fn run(o: &Opts, data: &Path, started: Instant) -> Result<String> {
    let mut server = start(&o.server_bin, data, o.shards)?;
    let token = token(data)?;
    let channels: Vec<String> = (0..o.channels)
        .map(|i| format!("wedding:crash{i}:w-crash"))
        .collect();
    {
        let mut ws = connect(&server.addr, &token).await?;
        for (i, ch) in channels.iter().enumerate() {
            let r = call(&mut ws, json!({"op": "create", "ref": format!("c{i}"), "name": ch, "wedding_id": "w-crash"})).await;
            if r.as_ref().map(|v| v["op"] != "created").unwrap_or(true) {
                bail!("create {ch}: {r:?}");
            }
        }
    }
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let payload = "x".repeat(o.payload_bytes);
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    for cycle in 0..o.cycles {
        if started.elapsed() > Duration::from_secs(o.max_secs) {
            break;
        }
        let target =
            acked.lock().unwrap().len() + rng.gen_range(o.min_acks..=o.max_acks.max(o.min_acks));
        let tasks: Vec<_> = (0..o.publishers)
            .map(|p| {
                tokio::spawn(publisher(
                    server.addr.clone(),
                    token.clone(),
                    channels[p % channels.len()].clone(),
                    format!("c{cycle}p{p}"),
                    payload.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(1..5))).await;
        }
        drop(server); // SIGKILL
        kills += 1;
        server = start(&o.server_bin, data, o.shards)?;
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
    let acked = acked.lock().unwrap().clone();
    let mut lost = 0usize;
    let mut duplicated = 0usize;
    let mut out_of_order = 0usize;
    let mut kept_total = 0usize;
    let mut want: HashMap<&str, HashMap<u64, &str>> = HashMap::new();
    for (ch, id, key) in &acked {
        want.entry(ch.as_str())
            .or_default()
            .insert(*id, key.as_str());
    }
    for ch in &channels {
        let kept = read_all(&server.addr, &token, ch).await?;
        kept_total += kept.len();
        if std::env::var_os("CRASH_DEBUG").is_some() {
            let max_acked = want.get(ch.as_str()).and_then(|m| m.keys().max().copied());
            eprintln!(
                "{ch}: kept {} (ids {:?}..{:?}), acknowledged up to {max_acked:?}",
                kept.len(),
                kept.first().map(|k| k.0),
                kept.last().map(|k| k.0)
            );
        }
        out_of_order += kept.windows(2).filter(|w| w[1].0 != w[0].0 + 1).count();
        let mut seen = HashSet::new();
        duplicated += kept
            .iter()
            .filter(|(_, k)| k != "marker" && !seen.insert(k.clone()))
            .count();
        let by_id: HashMap<u64, &str> = kept.iter().map(|(id, k)| (*id, k.as_str())).collect();
        for (id, key) in want.get(ch.as_str()).into_iter().flatten() {
            if by_id.get(id) != Some(key) {
                lost += 1;
            }
        }
    }
    let report = format!(
        "| cycles (kills) | publishers | channels | shards | acknowledged | kept | lost | duplicated | out of order | seconds |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n| {kills} | {} | {} | {} | {} | {kept_total} | {lost} | {duplicated} | {out_of_order} | {:.0} |",
        o.publishers,
        o.channels,
        o.shards,
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    if lost + duplicated + out_of_order > 0 {
        bail!("durability violated:\n{report}");
    }
    Ok(report)
}
