//! Signed webhooks (issue 16 item 5, docs/decisions.md §32): the `[webhooks]` config, the
//! signature, and the sender thread that drains the registry's durable outbox.
//!
//! Every webhook is stored in the registry (`webhook_outbox`) before any attempt to send
//! it, so it survives a restart and is delivered at least once; its `id` lets the receiver
//! drop a repeat. The sender is one thread of its own (never a shard's executor): it takes
//! due rows oldest first, POSTs each over HTTP/1.1 with a timeout, deletes it on a 2xx and
//! otherwise schedules the next attempt with exponential backoff and jitter, until
//! `max_age_ms`, after which the row is kept as `dead` (counted, logged, in health).
//!
//! It does not decide what is parked (`io/src/owner/park.rs`) nor store rows itself (the
//! registry does, on its own thread).

use anyhow::{bail, Result};
use hmac::{Hmac, Mac};
use ringbearer_persist::registry::{Enqueued, OutboxState, PendingWebhook, Registry, Reply};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the system's root certificates usually are (Debian/Ubuntu, Fedora/RHEL, Alpine
/// and macOS-like layouts), for `https://` receivers when `ca_file` is empty.
pub const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Smallest accepted webhook secret, in bytes.
pub const SECRET_MIN_BYTES: usize = 16;
/// Rows the sender takes from the outbox per round.
const BATCH: u32 = 100;
/// Most bytes of a receiver's answer read (the status line is all that counts).
const ANSWER_MAX_BYTES: usize = 8 * 1024;

/// `[webhooks]` in the config file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Connect, write and read timeout of one attempt.
    pub timeout_ms: u64,
    /// Wait before the second attempt; each later wait is `backoff_factor` times the one
    /// before, up to `max_backoff_ms`, with ±20 % jitter.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub backoff_factor: f64,
    /// A webhook not delivered this long after it was queued is given up (kept as `dead`
    /// in the outbox, counted and logged). Default one day.
    pub max_age_ms: u64,
    /// Webhooks waiting per organization; past it a new one is not stored (counted,
    /// logged, and a health alert).
    pub max_queued_per_org: u64,
    /// While webhooks wait (a retry is due later), the sender looks at the outbox at least
    /// this often (and at once when a webhook is queued).
    pub poll_interval_ms: u64,
    /// With nothing waiting, it looks this often only (a new webhook wakes it at once; this
    /// catches one stored while the hand-off queue was full): an idle server does not touch
    /// the registry every `poll_interval_ms`.
    pub idle_poll_interval_ms: u64,
    /// Health alerts when an organization's oldest waiting webhook has been failing for
    /// longer than this.
    pub alert_failing_ms: u64,
    /// PEM bundle of the roots trusted for `https://` receivers; empty: the system's
    /// bundle (the first of [`SYSTEM_CA_FILES`] that exists).
    pub ca_file: String,
    /// Per organization: `[webhooks.orgs."org-1"] url = "http://…", secret = "…"`. An
    /// organization without an entry gets no webhooks (its parked entries are still kept).
    pub orgs: BTreeMap<String, OrgWebhook>,
}

/// One organization's receiver.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgWebhook {
    /// `http://host[:port]/path` or `https://host[:port]/path`.
    pub url: String,
    /// The HMAC-SHA256 key (at least 16 bytes); the receiver keeps the same.
    pub secret: String,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_ms: 5_000,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            backoff_factor: 2.0,
            max_age_ms: 86_400_000,
            max_queued_per_org: 10_000,
            poll_interval_ms: 1_000,
            idle_poll_interval_ms: 30_000,
            alert_failing_ms: 60_000,
            ca_file: String::new(),
            orgs: BTreeMap::new(),
        }
    }
}

impl WebhooksConfig {
    /// Checks every field, naming the offending one.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("webhooks.timeout_ms", self.timeout_ms),
            ("webhooks.initial_backoff_ms", self.initial_backoff_ms),
            ("webhooks.max_backoff_ms", self.max_backoff_ms),
            ("webhooks.max_age_ms", self.max_age_ms),
            ("webhooks.max_queued_per_org", self.max_queued_per_org),
            ("webhooks.poll_interval_ms", self.poll_interval_ms),
            ("webhooks.idle_poll_interval_ms", self.idle_poll_interval_ms),
        ] {
            if v == 0 {
                bail!("invalid config: {name} must be greater than 0");
            }
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            bail!("invalid config: webhooks.max_backoff_ms must be at least initial_backoff_ms");
        }
        if !(self.backoff_factor >= 1.0 && self.backoff_factor <= 10.0) {
            bail!("invalid config: webhooks.backoff_factor must be 1 to 10");
        }
        for (org, h) in &self.orgs {
            Target::parse(&h.url)
                .map_err(|e| anyhow::anyhow!("invalid config: webhooks.orgs.\"{org}\".url: {e}"))?;
            if h.secret.len() < SECRET_MIN_BYTES {
                bail!(
                    "invalid config: webhooks.orgs.\"{org}\".secret must be at least {SECRET_MIN_BYTES} bytes"
                );
            }
        }
        Ok(())
    }

    /// The TLS client for `https://` receivers, if any organization has one: the roots
    /// of `ca_file` (or the system's), ring provider. A missing or empty bundle stops the
    /// start, naming the field.
    pub fn tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        if !self.orgs.values().any(|h| h.url.starts_with("https://")) {
            return Ok(None);
        }
        let path = if self.ca_file.is_empty() {
            SYSTEM_CA_FILES
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .map(|p| p.to_string())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "invalid config: an https:// webhook needs root certificates: set webhooks.ca_file (none of {SYSTEM_CA_FILES:?} exists)"
                    )
                })?
        } else {
            self.ca_file.clone()
        };
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|e| anyhow::anyhow!("invalid config: webhooks.ca_file {path}: {e}"))?;
        for c in certs {
            let c =
                c.map_err(|e| anyhow::anyhow!("invalid config: webhooks.ca_file {path}: {e}"))?;
            // A bundle may hold certificates webpki cannot use as roots; skip those.
            let _ = roots.add(c);
        }
        if roots.is_empty() {
            bail!("invalid config: webhooks.ca_file {path} holds no usable certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS client: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(cfg)))
    }

    /// The wait before attempt `attempts + 1` (`attempts` ≥ 1 failed), with `jitter` in
    /// [-1, 1] scaling ±20 %.
    pub fn backoff_ms(&self, attempts: u32, jitter: f64) -> u64 {
        let exp = self
            .backoff_factor
            .powi(attempts.saturating_sub(1).min(64) as i32);
        let base = (self.initial_backoff_ms as f64 * exp).min(self.max_backoff_ms as f64);
        (base * (1.0 + 0.2 * jitter.clamp(-1.0, 1.0))).max(1.0) as u64
    }
}

/// `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`: the `X-Ringbearer-Signature`
/// header. `timestamp` is the `X-Ringbearer-Timestamp` header (unix milliseconds).
pub fn signature(secret: &[u8], timestamp_ms: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + 64);
    out.push_str("v1=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The JSON a receiver gets: `{id, kind, org, at_ms, data}`.
pub fn body(id: &str, kind: &str, org: &str, at_ms: u64, data: serde_json::Value) -> String {
    serde_json::json!({"id": id, "kind": kind, "org": org, "at_ms": at_ms, "data": data})
        .to_string()
}

/// A fresh webhook id (`wh_` and 32 hex digits).
pub fn new_id() -> String {
    let b: [u8; 16] = rand::random();
    let mut s = String::from("wh_");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Where one organization's webhooks go.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(url: &str) -> std::result::Result<Target, String> {
        let (tls, rest, default_port) = if let Some(r) = url.strip_prefix("https://") {
            (true, r, 443)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r, 80)
        } else {
            return Err("must start with http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bad port `{}`", p.escape_default()))?,
            ),
            _ => (authority, default_port),
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err("needs a host and a path without spaces".into());
        }
        Ok(Target {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

/// Counters and the outbox's state, for health and `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub given_up: AtomicU64,
    pub overflowed: AtomicU64,
    /// Events for an organization without a configured receiver (dropped).
    pub unconfigured: AtomicU64,
    /// Per organization, refreshed by the sender every round.
    pub outbox: Mutex<Vec<OutboxState>>,
    /// Overflows per organization since start.
    pub overflow_by_org: Mutex<BTreeMap<String, u64>>,
}

impl WebhookStats {
    pub fn queued(&self) -> u64 {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|o| o.waiting)
            .sum()
    }

    /// Health alerts: a queue failing for longer than `alert_failing_ms`, an overflow.
    pub fn alerts(&self, now_ms: u64, alert_failing_ms: u64) -> Vec<String> {
        let mut out = Vec::new();
        for o in self.outbox.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(since) = o.failing_since_ms {
                if now_ms.saturating_sub(since) > alert_failing_ms {
                    out.push(format!(
                        "webhooks to organization {} failing for {} s ({} waiting)",
                        o.org,
                        now_ms.saturating_sub(since) / 1000,
                        o.waiting
                    ));
                }
            }
            if o.dead > 0 {
                out.push(format!(
                    "{} webhook(s) to organization {} were given up after webhooks.max_age_ms",
                    o.dead, o.org
                ));
            }
        }
        for (org, n) in self
            .overflow_by_org
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            out.push(format!(
                "webhook queue of organization {org} overflowed: {n} webhook(s) not stored (webhooks.max_queued_per_org)"
            ));
        }
        out
    }
}

/// A store in flight for the sender to await, or `None`: look at the outbox now (or stop).
/// The organization, what it is (logged once stored), and the store's answer.
type Handoff = Option<(String, String, Reply<Enqueued>)>;

/// The webhook side of the server: queues (through the registry) and the sender thread.
pub struct Webhooks {
    pub cfg: WebhooksConfig,
    pub stats: Arc<WebhookStats>,
    /// Stores in flight, handed to the sender thread, which awaits them (counting
    /// overflows) and then looks at the outbox at once.
    queued: SyncSender<Handoff>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Webhooks {
    /// Starts the sender thread.
    pub fn start(cfg: WebhooksConfig, registry: Registry) -> Result<Arc<Webhooks>> {
        cfg.validate()?;
        let tls = cfg.tls()?;
        let stats = Arc::new(WebhookStats::default());
        // A queue per store in flight: bounded like the registry's own queue.
        let (tx, rx) = std::sync::mpsc::sync_channel(4096);
        let stop = Arc::new(AtomicBool::new(false));
        let sender = Sender {
            cfg: cfg.clone(),
            stats: stats.clone(),
            registry: registry.clone(),
            stop: stop.clone(),
            tls,
        };
        let thread = std::thread::Builder::new()
            .name("rb-webhooks".into())
            .spawn(move || sender.run(rx))?;
        Ok(Arc::new(Webhooks {
            cfg,
            stats,
            queued: tx,
            stop,
            thread: Mutex::new(Some(thread)),
        }))
    }

    pub fn configured(&self, org: &str) -> bool {
        self.cfg.orgs.contains_key(org)
    }

    /// Hands a store in flight to the sender (never blocks: a full hand-off queue only
    /// means the sender learns of the row at its next poll; the row is stored anyway).
    pub fn track(&self, org: String, what: String, reply: Reply<Enqueued>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queued.try_send(Some((org, what, reply)))
        {
            tracing::debug!("webhook hand-off queue full; the sender polls");
        }
    }

    /// Stops the sender after the attempt in flight (a row not yet deleted is sent again
    /// after the next start: at least once).
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
        let _ = self.queued.try_send(None);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

struct Sender {
    cfg: WebhooksConfig,
    stats: Arc<WebhookStats>,
    registry: Registry,
    stop: Arc<AtomicBool>,
    /// For `https://` receivers.
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Sender {
    fn run(self, rx: Receiver<Handoff>) {
        let busy = Duration::from_millis(self.cfg.poll_interval_ms);
        let idle = Duration::from_millis(self.cfg.idle_poll_interval_ms);
        let block = futures_lite::future::block_on;
        loop {
            if self.stop.load(Relaxed) {
                return;
            }
            let waiting = self.round();
            if self.stop.load(Relaxed) {
                return;
            }
            // Wait for a new row or the next poll; take every hand-off that is ready.
            let poll = if waiting { busy } else { idle };
            let mut next = match rx.recv_timeout(poll) {
                Ok(x) => x,
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            while let Some((org, what, reply)) = next.take() {
                match block(reply) {
                    Ok(Enqueued::Overflow) => {
                        self.stats.overflowed.fetch_add(1, Relaxed);
                        *self
                            .stats
                            .overflow_by_org
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(org.clone())
                            .or_default() += 1;
                        tracing::warn!(%org, max = self.cfg.max_queued_per_org, "webhook queue full: webhook not stored");
                    }
                    Ok(Enqueued::Stored) => tracing::info!(%org, "{what}"),
                    Ok(Enqueued::Duplicate) => {}
                    Err(e) => tracing::error!(%org, "storing a webhook failed: {e}"),
                }
                next = rx.try_recv().ok().flatten();
            }
        }
    }

    /// Sends what is due, then refreshes the outbox's state for health. Answers whether
    /// webhooks still wait (or the outbox could not be read: look again soon).
    fn round(&self) -> bool {
        use futures_lite::future::block_on;
        let due = match block_on(self.registry.due_webhooks(now_ms(), BATCH)) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("webhook outbox not readable: {e}");
                return true;
            }
        };
        for w in &due.warnings {
            tracing::error!("webhook outbox row skipped: {w:?}");
        }
        // An organization whose receiver failed waits for its backoff (the registry
        // postponed its other rows too): one dead receiver costs one attempt a backoff
        // period, not one per waiting row, and never holds up the others.
        let mut failed = std::collections::HashSet::new();
        for p in due.rows {
            if self.stop.load(Relaxed) {
                return true;
            }
            if failed.contains(&p.row.org) {
                continue;
            }
            if !self.attempt(&p) {
                failed.insert(p.row.org.clone());
            }
        }
        match block_on(self.registry.outbox_state()) {
            Ok(s) => {
                let waiting = s.iter().any(|o| o.waiting > 0);
                *self.stats.outbox.lock().unwrap_or_else(|p| p.into_inner()) = s;
                waiting
            }
            Err(e) => {
                tracing::debug!("webhook outbox state not readable: {e}");
                true
            }
        }
    }

    /// One attempt; `false` when it failed.
    fn attempt(&self, p: &PendingWebhook) -> bool {
        let block = futures_lite::future::block_on;
        let org = &p.row.org;
        let result = match self.cfg.orgs.get(org) {
            Some(h) => send(
                h,
                self.tls.as_ref(),
                &p.row.id,
                p.row.body.as_bytes(),
                self.cfg.timeout_ms,
            ),
            None => Err("no receiver configured for this organization any more".into()),
        };
        let now = now_ms();
        match result {
            Ok(()) => {
                self.stats.sent.fetch_add(1, Relaxed);
                if let Err(e) = block(self.registry.webhook_delivered(p.seq)) {
                    tracing::error!(id = %p.row.id, "webhook delivered but not removed (it will be sent again): {e}");
                }
                true
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                let attempts = p.attempts + 1;
                let dead = now.saturating_sub(p.row.created_at_ms) >= self.cfg.max_age_ms;
                let jitter = rand::random::<f64>() * 2.0 - 1.0;
                let next = now + self.cfg.backoff_ms(attempts, jitter);
                if dead {
                    self.stats.given_up.fetch_add(1, Relaxed);
                    tracing::error!(%org, id = %p.row.id, attempts, "webhook given up after webhooks.max_age_ms: {e}");
                } else {
                    tracing::warn!(%org, id = %p.row.id, attempts, "webhook attempt failed: {e}");
                }
                if let Err(e) = block(self.registry.webhook_failed(p.seq, now, next, e, dead)) {
                    tracing::error!(id = %p.row.id, "recording a webhook failure: {e}");
                }
                false
            }
        }
    }
}

/// One HTTP/1.1 POST (over TLS for `https://`); `Ok` on a 2xx status.
fn send(
    h: &OrgWebhook,
    tls: Option<&Arc<rustls::ClientConfig>>,
    id: &str,
    body: &[u8],
    timeout_ms: u64,
) -> std::result::Result<(), String> {
    let t = Target::parse(&h.url)?;
    let timeout = Duration::from_millis(timeout_ms);
    let addrs: Vec<_> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", t.host))?
        .collect();
    let mut last = format!("{} resolved to no address", t.host);
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    let s = stream.ok_or(last)?;
    // The socket's timeouts bound every read and write, TLS handshake included.
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    if !t.tls {
        return exchange(s, &t, h, id, body);
    }
    let cfg = tls.ok_or("https:// without a TLS client (config changed?)")?;
    let name = rustls::pki_types::ServerName::try_from(t.host.clone())
        .map_err(|e| format!("{}: {e}", t.host))?;
    let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    exchange(rustls::StreamOwned::new(conn, s), &t, h, id, body)
}

/// Writes the request and reads the status line.
fn exchange(
    mut s: impl Read + Write,
    t: &Target,
    h: &OrgWebhook,
    id: &str,
    body: &[u8],
) -> std::result::Result<(), String> {
    let ts = now_ms();
    let host = if t.port == if t.tls { 443 } else { 80 } {
        t.host.clone()
    } else {
        format!("{}:{}", t.host, t.port)
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringbearer/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Ringbearer-Id: {id}\r\nX-Ringbearer-Timestamp: {ts}\r\nX-Ringbearer-Signature: {}\r\nConnection: close\r\n\r\n",
        t.path,
        env!("CARGO_PKG_VERSION"),
        body.len(),
        signature(h.secret.as_bytes(), ts, body),
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .and_then(|()| s.flush())
        .map_err(|e| format!("sending: {e}"))?;
    let mut answer = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < ANSWER_MAX_BYTES {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&answer);
    let line = line.lines().next().unwrap_or("");
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: `{}`", line.escape_default()))?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("receiver answered {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed vector, computed independently:
    /// `printf '1700000000000.{"id":"wh_1"}' | openssl dgst -sha256 -hmac 'whsec_test_0123456789'`.
    #[test]
    fn signature_matches_a_fixed_vector() {
        assert_eq!(
            signature(
                b"whsec_test_0123456789",
                1_700_000_000_000,
                br#"{"id":"wh_1"}"#
            ),
            "v1=ec8c9ac820902ffb2be59bd87f199d796e9c6e3317e6340a6b23e2056934b445"
        );
    }

    #[test]
    fn urls_and_backoff() {
        let t = Target::parse("http://127.0.0.1:9000/hook").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 9000, "/hook")
        );
        let t = Target::parse("http://example.com").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        let t = Target::parse("https://example.com/h").unwrap();
        assert_eq!((t.tls, t.port), (true, 443));
        assert!(Target::parse("ftp://x/").is_err());
        let c = WebhooksConfig::default();
        assert_eq!(c.backoff_ms(1, 0.0), 1000);
        assert_eq!(c.backoff_ms(2, 0.0), 2000);
        assert_eq!(c.backoff_ms(30, 0.0), 300_000);
        assert_eq!(c.backoff_ms(1, 1.0), 1200);
        c.validate().unwrap();
    }
}
