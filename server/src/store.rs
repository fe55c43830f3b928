//! Wires `ringbearer-persist` into `ringbearer-io`'s hooks: each shard's write-ahead log is
//! its [`Journal`] (publishes and channel creations are stored before anyone hears of them)
//! and the SQLite registry is the [`Catalog`] (channels mirrored for queries; subscriptions
//! and cursors written off the executors). At start, each shard's log is replayed into its
//! channels (`ringbearer_io::owner::rebuild`), and members come back from the registry.
//!
//! Log record convention: `id = 0` holds a channel's `ChannelCheckpoint` (metadata, last
//! id and shared-state documents) as JSON, written when the channel is created and at every retention round (the
//! newest wins); `id ≥ 1` is a message's rkyv frame.

use crate::webhooks::{self, Webhooks, WebhooksConfig};
use anyhow::{bail, Context, Result};
use ringbearer_core::channel_state::ChannelMeta;
use ringbearer_core::{Role, UserKey};
use ringbearer_io::journal::{
    Catalog, Entry, Journal, JournalError, JournalFactory, LocalBoxFuture, Opened,
};
use ringbearer_io::journal::{ParkedEvent, WebhookEvent};
use ringbearer_io::owner::rebuild::{rebuild, LogRecord};
use ringbearer_io::weddings::Wedding;
use ringbearer_persist::registry::{
    CursorAck, EventDate, Registry, RegistryConfig, SubscriptionRecord, WeddingRecord,
};
use ringbearer_persist::registry::{ParkedRecord, WebhookRow};
use ringbearer_persist::{Durability, Lsn, Record, Wal, WalConfig, WalError};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// `[storage]` in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `fsync` (default: a publish is answered after its record is fdatasynced), `batch`
    /// (answered at once, synced within `batch_interval_ms`: a crash may lose that window)
    /// or `memory` (nothing on disk; a restart starts empty).
    pub durability: String,
    /// Write-ahead log segment size; reclaim works in whole segments.
    pub segment_bytes: u64,
    /// `batch` policy: records are synced at least this often.
    pub batch_interval_ms: u64,
    /// Most bytes one group commit writes.
    pub max_batch_bytes: usize,
    /// Bytes queued but not yet synced, per shard, before publishes get `WS_OVERLOADED`.
    pub max_unsynced_bytes: usize,
    /// Registry jobs waiting for its thread before writes are dropped (and logged).
    pub registry_queue_capacity: usize,
    /// How long audit records are kept (SPEC §5), in seconds; 0 keeps them forever.
    /// Expired at start and every `AUDIT_EXPIRY_INTERVAL`. Default 90 days.
    pub audit_retention_secs: u64,
}

/// How often the audit log's retention runs while serving: hourly is fine-grained enough
/// for a retention counted in days, and costs one indexed DELETE.
const AUDIT_EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: "fsync".into(),
            segment_bytes: WalConfig::DEFAULT_SEGMENT_BYTES,
            batch_interval_ms: WalConfig::DEFAULT_BATCH_INTERVAL_MS,
            max_batch_bytes: WalConfig::DEFAULT_MAX_BATCH_BYTES,
            max_unsynced_bytes: WalConfig::DEFAULT_MAX_UNSYNCED_BYTES,
            registry_queue_capacity: RegistryConfig::default().queue_capacity,
            audit_retention_secs: 90 * 24 * 3600,
        }
    }
}

impl StorageConfig {
    pub fn durability(&self) -> Result<Durability> {
        Durability::parse(&self.durability).with_context(|| {
            format!(
                "invalid config: storage.durability must be fsync, batch or memory, not `{}`",
                self.durability
            )
        })
    }

    fn wal_config(&self, dir: PathBuf) -> Result<WalConfig> {
        let cfg = WalConfig {
            dir,
            segment_bytes: self.segment_bytes,
            durability: self.durability()?,
            batch_interval_ms: self.batch_interval_ms,
            max_batch_bytes: self.max_batch_bytes,
            max_unsynced_bytes: self.max_unsynced_bytes,
        };
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("invalid config: storage: {e}"))?;
        Ok(cfg)
    }
}

/// Name of the file recording the shard count the log was written with.
const SHARDS_FILE: &str = "SHARDS";

/// The opened stores: what the shards use, and the registry to close (drain) at shutdown.
pub struct Stores {
    pub store: ringbearer_io::Store,
    pub registry: Option<Registry>,
    /// The webhook sender (with the registry only): stop it before closing the registry.
    pub webhooks: Option<Arc<Webhooks>>,
}

/// Opens the stores under `data_dir` for `shards` shards. `memory` opens nothing.
pub fn open(
    data_dir: &Path,
    cfg: &StorageConfig,
    shards: usize,
    webhooks: &WebhooksConfig,
) -> Result<Stores> {
    webhooks.validate()?;
    if cfg.durability()? == Durability::Memory {
        if !webhooks.orgs.is_empty() {
            tracing::warn!(
                "webhooks need the registry: none are sent under storage.durability = memory"
            );
        }
        return Ok(Stores {
            store: ringbearer_io::Store::default(),
            registry: None,
            webhooks: None,
        });
    }
    // Absolute from here on: glommio opens a relative directory against dirfd -1 (EBADF on
    // the first directory fsync, glommio #637), and the README's `serve` uses `./data`.
    let data_dir = &std::path::absolute(data_dir)
        .with_context(|| format!("resolving data directory {}", data_dir.display()))?;
    let wal_dir = data_dir.join("wal");
    std::fs::create_dir_all(&wal_dir).with_context(|| format!("creating {}", wal_dir.display()))?;
    // Channels live in the log of the shard that owns them (a hash of the name, modulo the
    // shard count): the count must stay what the data was written with.
    let marker = wal_dir.join(SHARDS_FILE);
    match std::fs::read_to_string(&marker) {
        Ok(s) => {
            let was: usize = s
                .trim()
                .parse()
                .with_context(|| format!("reading {}", marker.display()))?;
            if was != shards {
                bail!(
                    "{} was written with {was} shards; start with --shards {was} (changing the shard count of existing data is not supported yet)",
                    data_dir.display()
                );
            }
        }
        Err(_) => {
            // The shard directories first: once the marker exists, a missing one was removed.
            for s in 0..shards {
                let d = wal_dir.join(format!("shard-{s}"));
                std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            }
            std::fs::write(&marker, format!("{shards}\n"))
                .with_context(|| format!("writing {}", marker.display()))?
        }
    }
    // A shard's whole log directory gone is not something its log can see (it would start
    // empty): the marker says the directories were made.
    for s in 0..shards {
        let d = wal_dir.join(format!("shard-{s}"));
        if !d.is_dir() {
            bail!(
                "{} is missing, but {} says this data directory was written with {shards} shards: shard {s}'s \
                 write-ahead log is gone. Restore it from a backup, or accept the loss with `ringbearer wal repair` \
                 (docs/operations.md, \"The log is damaged\")",
                d.display(),
                marker.display()
            );
        }
    }
    for s in 0..shards {
        cfg.wal_config(wal_dir.join(format!("shard-{s}")))?;
    }
    let registry = Registry::open(
        &data_dir.join("registry.sqlite3"),
        RegistryConfig {
            queue_capacity: cfg.registry_queue_capacity,
            ..RegistryConfig::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("opening the registry: {e}"))?;
    let weddings = load_weddings(&registry)?;
    if cfg.audit_retention_secs > 0 {
        // Once before serving (so a restart applies a shortened retention at once), then
        // hourly on a thread of its own (the registry call only queues; never a shard).
        expire_audit(&registry, cfg.audit_retention_secs);
        let (r, secs) = (registry.clone(), cfg.audit_retention_secs);
        std::thread::Builder::new()
            .name("audit-retention".into())
            .spawn(move || loop {
                std::thread::sleep(AUDIT_EXPIRY_INTERVAL);
                expire_audit(&r, secs);
            })
            .context("starting the audit retention thread")?;
    }
    let webhooks = Webhooks::start(webhooks.clone(), registry.clone())
        .context("starting the webhook sender")?;
    let factory = Arc::new(WalFactory {
        wal_dir,
        cfg: cfg.clone(),
        registry: registry.clone(),
    });
    Ok(Stores {
        store: ringbearer_io::Store {
            journal: Some(factory),
            catalog: Some(Arc::new(RegistryCatalog {
                registry: registry.clone(),
                webhooks: webhooks.clone(),
            })),
            weddings,
            cluster: None,
        },
        registry: Some(registry),
        webhooks: Some(webhooks),
    })
}

/// Deletes audit records older than `retention_secs`, logging what it did.
fn expire_audit(registry: &Registry, retention_secs: u64) {
    let before = now_ms().saturating_sub(retention_secs.saturating_mul(1000));
    match futures_lite::future::block_on(registry.expire_audit(before)) {
        Ok(0) => {}
        Ok(n) => tracing::info!(records = n, retention_secs, "audit records expired"),
        Err(e) => tracing::error!("audit retention failed: {e}"),
    }
}

/// Every stored wedding, for the server's table (SPEC §1 wedding day). A row the calendar
/// cannot use (an unknown time zone after a tz database change) is skipped and logged.
fn load_weddings(registry: &Registry) -> Result<Vec<Wedding>> {
    let loaded = futures_lite::future::block_on(registry.list_weddings(None))
        .map_err(|e| anyhow::anyhow!("registry: loading weddings: {e}"))?;
    for w in &loaded.warnings {
        tracing::warn!("registry row skipped: {w:?}");
    }
    let mut out = Vec::with_capacity(loaded.rows.len());
    for r in loaded.rows {
        let w = Wedding::new(
            &r.wedding_id,
            &r.organization_id,
            &r.event_date.to_string(),
            &r.time_zone,
        )
        .and_then(|w| {
            // The watchdog plan (docs/decisions.md §30), validated again like the rest.
            w.with_watch(
                r.ceremony_time.as_deref(),
                &r.key_roles,
                r.coordination_channel.as_deref(),
            )
        });
        match w {
            Ok(w) => out.push(w),
            Err(e) => tracing::warn!(wedding = %r.wedding_id, "stored wedding skipped: {e}"),
        }
    }
    Ok(out)
}

struct WalFactory {
    wal_dir: PathBuf,
    cfg: StorageConfig,
    registry: Registry,
}

impl JournalFactory for WalFactory {
    fn open(&self, shard: u32) -> LocalBoxFuture<'static, Result<Opened, String>> {
        let cfg = self
            .cfg
            .wal_config(self.wal_dir.join(format!("shard-{shard}")));
        let registry = self.registry.clone();
        Box::pin(async move {
            let cfg = cfg.map_err(|e| e.to_string())?;
            let (wal, recovery) = Wal::open(cfg)
                .await
                .map_err(|e| format!("write-ahead log: {e}"))?;
            let report = &recovery.report;
            tracing::info!(
                shard,
                segments = report.segments_scanned,
                records = report.records,
                direct_io = report.direct_io,
                "write-ahead log recovered"
            );
            if let Some(cut) = &report.tail_cut {
                // Damage with nothing valid after it: the commit a crash interrupted. Any
                // other damage fails `Wal::open` above and stops the start.
                tracing::warn!(shard, "cut a torn tail: {cut:?}");
            }
            if !report.reclaimed_at_open.is_empty() {
                tracing::info!(shard, segments = ?report.reclaimed_at_open, "finished an interrupted reclaim");
            }
            if report.upgraded_from_v1 {
                tracing::info!(
                    shard,
                    "write-ahead log upgraded: new segments use format version 2"
                );
            }
            let members = match registry.load_all_subscriptions().await {
                Ok(l) => {
                    for w in &l.warnings {
                        tracing::warn!(shard, "registry row skipped: {w:?}");
                    }
                    l.rows
                }
                Err(e) => return Err(format!("registry: loading subscriptions: {e}")),
            };
            let records = recovery.records.into_iter().map(|r| LogRecord {
                channel: r.channel,
                id: r.id,
                ts_ms: r.ts_ms,
                body: r.body,
            });
            let members = members.into_iter().map(|m| {
                // An unknown stored role (a newer binary's) reads as not known.
                let role = m.role.as_deref().and_then(Role::parse);
                (m.channel, UserKey::new(m.org, m.user_id), m.cursor, role)
            });
            let (restored, skipped) = rebuild(records, members);
            for s in skipped {
                tracing::error!(shard, "recovery left out: {s:?}");
            }
            for c in &restored {
                // The log is the truth about channels; the registry mirrors it. A crash
                // between the log's commit and the registry's loses the row, and every
                // later subscription to the channel would fail its foreign key: put it
                // back (queued before the shard serves, so before any subscription).
                fire("channel", registry.upsert_channel(c.meta.clone()));
            }
            let journal = WalJournal {
                wal: std::cell::RefCell::new(Some(Rc::new(wal))),
            };
            Ok((Rc::new(journal) as Rc<dyn Journal>, restored))
        })
    }
}

struct WalJournal {
    /// `None` once closed (graceful shutdown).
    wal: std::cell::RefCell<Option<Rc<Wal>>>,
}

impl WalJournal {
    fn wal(&self) -> Result<Rc<Wal>, JournalError> {
        self.wal
            .borrow()
            .clone()
            .ok_or_else(|| JournalError::Failed("the log is closed (shutting down)".into()))
    }
}

fn journal_error(e: WalError) -> JournalError {
    match e {
        WalError::Backpressure { .. } => JournalError::Backpressure(e.to_string()),
        other => JournalError::Failed(other.to_string()),
    }
}

impl Journal for WalJournal {
    fn append(&self, channel: &str, ts_ms: u64, entry: Entry<'_>) -> Result<u64, JournalError> {
        let (id, body) = match entry {
            Entry::Channel { meta_json } => (0, meta_json),
            Entry::Message { id, frame } => (id, frame),
        };
        self.wal()?
            .append(&Record {
                channel,
                id,
                ts_ms,
                body,
            })
            .map(|l| l.0)
            .map_err(journal_error)
    }

    fn durable(&self, pos: u64) -> LocalBoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async move { self.wal()?.durable(Lsn(pos)).await.map_err(journal_error) })
    }

    fn segments(&self) -> usize {
        self.wal.borrow().as_ref().map_or(0, |w| w.stats().segments)
    }

    fn close(&self) -> LocalBoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async move {
            let Some(wal) = self.wal.borrow_mut().take() else {
                return Ok(());
            };
            // Other holders (a retention round, a commit wait) end with the shard; if one
            // is still here the log is left to them and to recovery.
            match Rc::try_unwrap(wal) {
                Ok(wal) => wal.close().await.map_err(journal_error),
                Err(_) => Err(JournalError::Failed(
                    "log still in use at shutdown; recovery will cover it".into(),
                )),
            }
        })
    }

    fn reclaim(
        &self,
        is_live: ringbearer_io::journal::IsLive,
    ) -> LocalBoxFuture<'_, Result<usize, JournalError>> {
        Box::pin(async move {
            let r = self
                .wal()?
                .reclaim(|c, id, ts| is_live(c, id, ts))
                .await
                .map_err(journal_error)?;
            Ok(r.segments_removed)
        })
    }
}

/// The registry as the shards' catalog. Writes are queued on the registry's thread and not
/// awaited (a `Reply` still runs when dropped); a failed write is logged and counted by the
/// registry. Ordering: one FIFO queue, and every write about a channel comes from its owner
/// shard, which queues the channel's row when it logs the channel (before any subscription
/// to it can be accepted): a subscription row never reaches SQLite before its channel row
/// (docs/decisions.md, "Registry write order").
struct RegistryCatalog {
    registry: Registry,
    webhooks: Arc<Webhooks>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Queues a registry write without waiting for it. A write that fails — refused at the
/// door (queue full, registry closed) or on the registry thread (full disk, a missing
/// channel row) — is logged at `error` and counted by the registry itself
/// (`Registry::unobserved_failures`), never silently dropped.
fn fire<T>(_what: &str, reply: ringbearer_persist::registry::Reply<T>) {
    drop(reply);
}

impl Catalog for RegistryCatalog {
    fn channel_created(&self, meta: &ChannelMeta) {
        fire("channel", self.registry.upsert_channel(meta.clone()));
    }

    fn channel_dropped(&self, channel: &str) {
        fire("channel removal", self.registry.delete_channel(channel));
    }

    fn subscribed(&self, channel: &str, user: &UserKey, role: Option<Role>, cursor: u64) {
        fire(
            "subscription",
            self.registry.upsert_subscription(SubscriptionRecord {
                channel: channel.to_owned(),
                org: user.org.clone(),
                user_id: user.sub.clone(),
                cursor,
                subscribed_at_ms: now_ms(),
                role: role.map(|r| r.as_str().to_owned()),
            }),
        );
    }

    fn unsubscribed(&self, channel: &str, user: &UserKey) {
        fire(
            "unsubscription",
            self.registry
                .delete_subscription(channel, &user.org, &user.sub),
        );
    }

    fn wedding_upserted(&self, w: &Wedding) {
        // `Wedding::new` checked the date; a date the registry cannot hold is logged.
        let Some(event_date) = EventDate::parse(&w.event_date) else {
            tracing::warn!(wedding = %w.id, "wedding not stored: unreadable event_date");
            return;
        };
        let (ceremony_time, key_roles, coordination_channel) = w.watch_fields();
        fire(
            "wedding",
            self.registry.upsert_wedding(WeddingRecord {
                wedding_id: w.id.clone(),
                organization_id: w.organization_id.clone(),
                event_date,
                time_zone: w.time_zone.clone(),
                updated_at_ms: now_ms(),
                ceremony_time,
                key_roles,
                coordination_channel,
            }),
        );
    }

    fn acked(&self, channel: &str, user: &UserKey, cursor: u64) {
        // The cursor, and the member's parked entries it passes marked acknowledged (one
        // job; the UPDATE is indexed and usually changes nothing).
        fire(
            "cursor",
            self.registry.ack_resolving(
                CursorAck {
                    channel: channel.to_owned(),
                    org: user.org.clone(),
                    user_id: user.sub.clone(),
                    cursor,
                },
                now_ms(),
            ),
        );
    }

    fn webhook(&self, e: WebhookEvent) {
        let w = &self.webhooks;
        if !w.configured(&e.org) {
            w.stats
                .unconfigured
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(org = %e.org, kind = e.kind, "no webhook configured for the organization");
            return;
        }
        let id = webhooks::new_id();
        let row = WebhookRow {
            body: webhooks::body(&id, e.kind, &e.org, e.at_ms, e.body),
            id,
            org: e.org.clone(),
            kind: e.kind.to_owned(),
            created_at_ms: now_ms(),
        };
        let reply = self.registry.enqueue_webhook(row, w.cfg.max_queued_per_org);
        w.track(e.org, format!("webhook {} queued", e.kind), reply);
    }

    fn parked(&self, e: ParkedEvent) {
        let w = &self.webhooks;
        let payload: serde_json::Value =
            serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null);
        let hook = w.configured(&e.channel_org).then(|| {
            let id = webhooks::new_id();
            let data = serde_json::json!({
                "channel": e.channel,
                "wedding_id": e.wedding_id,
                "message_id": e.message_id,
                "priority": e.priority,
                "type": e.msg_type,
                "event": e.event,
                "payload": payload,
                "user_id": e.member.sub,
                "user_org": e.member.org,
                "published_at_ms": e.published_ms,
                "parked_at_ms": e.parked_ms,
            });
            WebhookRow {
                body: webhooks::body(&id, "message_parked", &e.channel_org, e.parked_ms, data),
                id,
                org: e.channel_org.clone(),
                kind: "message_parked".into(),
                created_at_ms: now_ms(),
            }
        });
        if hook.is_none() {
            w.stats
                .unconfigured
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let what = format!(
            "wedding-day message parked: {} #{} not acknowledged by {} in time",
            e.channel, e.message_id, e.member
        );
        let reply = self.registry.park(
            ParkedRecord {
                channel: e.channel,
                message_id: e.message_id,
                org: e.member.org,
                user_id: e.member.sub,
                channel_org: e.channel_org.clone(),
                wedding_id: e.wedding_id,
                priority: e.priority.to_owned(),
                msg_type: e.msg_type,
                published_at_ms: e.published_ms,
                parked_at_ms: e.parked_ms,
                acked_at_ms: None,
            },
            hook,
            w.cfg.max_queued_per_org,
        );
        w.track(e.channel_org, what, reply);
    }

    fn audit(&self, e: ringbearer_io::journal::AuditEvent) {
        let Some(action) = ringbearer_persist::registry::AuditAction::parse(e.action) else {
            tracing::error!(action = e.action, "unknown audit action; not recorded");
            return;
        };
        fire(
            "audit",
            self.registry
                .audit(ringbearer_persist::registry::AuditEntry {
                    at_ms: e.at_ms,
                    actor_user_id: e.actor_user_id,
                    actor_org: e.actor_org,
                    action,
                    channel: e.channel,
                    channel_org: e.channel_org,
                    detail: e.detail,
                }),
        );
    }
}
