//! The registry: channels, weddings, subscriptions with their cursors, idempotency keys and
//! the audit log, in one SQLite file — kept off the shards' executors (ARCHITECTURE.md:
//! "nothing on a shard's hot path blocks").
//!
//! One dedicated thread owns the `rusqlite::Connection`. Callers put jobs on a bounded
//! crossbeam queue and get a [`Reply`], a future (no runtime needed: glommio, tokio or
//! `block_on` all work) that resolves once the thread has done the work and, for writes,
//! committed it. A full queue answers [`RegistryError::Overloaded`] at once: a call never
//! blocks its caller. The thread commits whatever is queued together (group commit, see
//! `worker.rs`), so a burst of acks costs one fsync, not one per ack.
//!
//! What it does not do: read the clock (times come in as arguments), hold the messages
//! themselves (the write-ahead log does), or decide who may do what (`core::access`).
//!
//! Durability: SQLite's WAL journal with `synchronous=FULL`: a commit returns after SQLite's
//! WAL file is fsynced, so an answered write survives a power cut, not only a process crash.
//! (`synchronous=NORMAL`, SQLite's usual WAL pairing, fsyncs only at checkpoints: a machine
//! crash could lose the last commits — an ack's cursor or an idempotency key the client was
//! told about, breaking SPEC §2.3 and §2.5 across restarts.) Group commit pays for it.
//!
//! ```text
//! shards ──try_send(job)──▶ [bounded queue] ──▶ rb-registry thread ──▶ SQLite (WAL, FULL)
//!    ▲                                                 │
//!    └──────────── oneshot answer (after COMMIT) ◀─────┘
//! ```

mod error;
mod escalation;
mod records;
mod schema;
mod store;
mod worker;

pub use error::RegistryError;
pub use escalation::{
    Enqueued, OutboxState, ParkedQuery, ParkedRecord, PendingWebhook, WebhookRow,
    PARKED_QUERY_LIMIT_MAX,
};
pub use records::{
    is_time_zone_name, AuditAction, AuditEntry, AuditQuery, AuditRecord, CursorAck, EventDate,
    IdempotencyRecord, Loaded, RowWarning, SubscriptionRecord, WeddingRecord,
    AUDIT_DETAIL_MAX_BYTES, AUDIT_QUERY_LIMIT_MAX, ID_MAX_BYTES, TIME_ZONE_MAX_BYTES,
};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};

use crossbeam::channel::{self, Sender, TrySendError};
use error::from_sqlite;
use futures_channel::oneshot;
use records::{check_id, check_wedding, to_i64};
use ringbearer_core::channel_state::ChannelMeta;
use rusqlite::Connection;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;
use store::{AuditRow, ChannelRow};
use worker::{Msg, Task};

/// Every bound of the registry, with its default and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Jobs waiting for the registry thread. Past this a call fails at once with
    /// `Overloaded` instead of waiting. Default 65,536: about a second of the heaviest
    /// expected load (20,000 clients resubscribing after a restart) at a few µs per job.
    pub queue_capacity: usize,
    /// Most jobs committed in one transaction (one fsync). Default 1,024: large enough to
    /// amortise the fsync, small enough that one group's answers are not held for long.
    pub group_commit_max: usize,
    /// How long a statement waits for a lock another connection holds (a backup, the
    /// `sqlite3` shell) before failing with `Storage`. Default 5,000 ms. The thread is stuck
    /// for that long, so keep it short.
    pub busy_timeout_ms: u64,
    /// Most rows in one batch call (`advance_cursors`, `audit_batch`). Default 65,536.
    pub batch_rows_max: usize,
    /// Cap on the database file's size; writes past it fail like a full disk. Default
    /// `None` (the file system is the limit).
    pub max_db_bytes: Option<u64>,
    /// Run `PRAGMA quick_check` at open and refuse a damaged file with `Corrupt` rather than
    /// meet the damage later, mid-service. Default on (it reads the whole file: a few ms
    /// per MB).
    pub check_on_open: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            queue_capacity: 65_536,
            group_commit_max: 1_024,
            busy_timeout_ms: 5_000,
            batch_rows_max: 65_536,
            max_db_bytes: None,
            check_on_open: true,
        }
    }
}

impl RegistryConfig {
    /// Every bound positive and in range.
    pub fn validate(&self) -> Result<(), RegistryError> {
        let bad = |m: &str| Err(RegistryError::Invalid(format!("registry config: {m}")));
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1");
        }
        if self.group_commit_max == 0 {
            return bad("group_commit_max must be at least 1");
        }
        if self.batch_rows_max == 0 {
            return bad("batch_rows_max must be at least 1");
        }
        if self.busy_timeout_ms > i32::MAX as u64 {
            return bad("busy_timeout_ms is too large");
        }
        if self.max_db_bytes.is_some_and(|b| b < 64 * 1024) {
            return bad("max_db_bytes must be at least 64 KiB");
        }
        Ok(())
    }
}

/// The answer to a registry call: a future that resolves when the registry thread has done
/// the work (and committed it, for a write).
///
/// IMPORTANT: the job is queued when the method is called, not when this is first polled,
/// and dropping a `Reply` does not cancel it: the write still happens, only the answer is
/// lost. Fire-and-forget writes (batched acks) may drop it; callers that promise durability
/// to a client must await it.
///
/// A failure is never silent: when the caller dropped its `Reply` before hearing the
/// answer, the failure is logged (at `error`) and counted in
/// [`Registry::unobserved_failures`] — by the registry thread for a job that failed, by
/// the `Reply`'s drop for a call refused at the door (`Overloaded`, `Closed`, invalid
/// input).
#[derive(Debug)]
pub struct Reply<T> {
    state: Result<oneshot::Receiver<Result<T, RegistryError>>, Option<RegistryError>>,
    unobserved: Arc<AtomicU64>,
}

impl<T> Reply<T> {
    fn refused(e: RegistryError, unobserved: Arc<AtomicU64>) -> Self {
        Reply {
            state: Err(Some(e)),
            unobserved,
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        match &mut self.state {
            Err(Some(e)) => worker::unobserved_failure(&self.unobserved, e),
            Ok(rx) => {
                // The answer may have arrived before this drop: then the thread's send
                // succeeded and only this side can see the failure. `close` first, so a
                // send racing this drop either lands before (read here) or fails (logged
                // by the thread): never both, never neither.
                rx.close();
                if let Ok(Some(Err(e))) = rx.try_recv() {
                    worker::unobserved_failure(&self.unobserved, &e);
                }
            }
            Err(None) => {}
        }
    }
}

impl<T> Future for Reply<T> {
    type Output = Result<T, RegistryError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            Err(e) => Poll::Ready(Err(e.take().unwrap_or(RegistryError::Closed))),
            Ok(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(answer)) => Poll::Ready(answer),
                // The thread dropped the job without answering: it was closing.
                Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(RegistryError::Closed)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// A handle on the registry; clones share the one thread. `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Sender<Msg>,
    /// Set by `close()`: from then on calls answer `Closed` without queueing.
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<Result<(), RegistryError>>>>,
    path: PathBuf,
    batch_rows_max: usize,
    /// Failed calls whose caller was no longer waiting (logged as they happen).
    unobserved: Arc<AtomicU64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Work(_) => "Work",
            Msg::Shutdown => "Shutdown",
        })
    }
}

/// Opens the connection and sets it up: pragmas, integrity check, migrations.
fn open_connection(path: &Path, cfg: &RegistryConfig) -> Result<Connection, RegistryError> {
    let at = |e: RegistryError| match e {
        RegistryError::Storage(m) => {
            RegistryError::Storage(format!("registry {}: {m}", path.display()))
        }
        RegistryError::Corrupt(m) => {
            RegistryError::Corrupt(format!("registry {}: {m}", path.display()))
        }
        RegistryError::Invalid(m) => {
            RegistryError::Invalid(format!("registry {}: {m}", path.display()))
        }
        other => other,
    };
    let mut conn = Connection::open(path).map_err(|e| at(from_sqlite(e)))?;
    conn.busy_timeout(Duration::from_millis(cfg.busy_timeout_ms))
        .map_err(|e| at(from_sqlite(e)))?;
    // Every statement the registry runs stays prepared (about 20, plus audit filter shapes).
    conn.set_prepared_statement_cache_capacity(64);
    // The first statement that reads the file: a damaged header fails here (SQLITE_NOTADB).
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(|e| at(from_sqlite(e)))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(at(RegistryError::Storage(format!(
            "cannot use SQLite's WAL journal here (got journal_mode={mode})"
        ))));
    }
    // See the module comment: a commit is durable when it returns.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| at(from_sqlite(e)))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| at(from_sqlite(e)))?;
    // Sorts and groups in memory: a temporary file would take a descriptor at a moment
    // the server does not choose (when it is out of them, the listeners' reserve slot).
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(|e| at(from_sqlite(e)))?;
    // Keep the WAL file from staying large after a burst (it is reused, then truncated).
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(|e| at(from_sqlite(e)))?;
    if let Some(bytes) = cfg.max_db_bytes {
        let page: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(|e| at(from_sqlite(e)))?;
        let pages = (bytes / page.max(512) as u64).max(1);
        conn.pragma_update(None, "max_page_count", pages as i64)
            .map_err(|e| at(from_sqlite(e)))?;
    }
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .map_err(|e| at(from_sqlite(e)))?;
    if fk != 1 {
        return Err(at(RegistryError::Storage(
            "SQLite refused foreign_keys=ON".into(),
        )));
    }
    if cfg.check_on_open {
        quick_check(&conn).map_err(at)?;
    }
    schema::migrate(&mut conn).map_err(at)?;
    Ok(conn)
}

/// `PRAGMA quick_check`: `Corrupt` with SQLite's first findings unless it says "ok".
fn quick_check(conn: &Connection) -> Result<(), RegistryError> {
    let mut findings = Vec::new();
    conn.pragma_query(None, "quick_check", |r| {
        if findings.len() < 5 {
            findings.push(r.get::<_, String>(0)?);
        }
        Ok(())
    })
    .map_err(from_sqlite)?;
    if findings.len() == 1 && findings[0] == "ok" {
        return Ok(());
    }
    Err(RegistryError::Corrupt(format!(
        "integrity check failed: {}",
        findings.join("; ")
    )))
}

impl Registry {
    /// Opens (or creates) the registry at `path`, brings its schema up to
    /// [`SCHEMA_VERSION`] and starts its thread.
    ///
    /// Blocking (file I/O, migrations): call it at start-up, before or beside the
    /// executors, not from a shard's task. Refuses a damaged file (`Corrupt`), a schema newer
    /// than this binary (`TooNew`) and a file that is not a registry (`Invalid`).
    pub fn open(path: &Path, cfg: RegistryConfig) -> Result<Registry, RegistryError> {
        cfg.validate()?;
        let conn = open_connection(path, &cfg)?;
        let (queue, rx) = channel::bounded(cfg.queue_capacity);
        let group_commit_max = cfg.group_commit_max;
        let thread = std::thread::Builder::new()
            .name("rb-registry".into())
            .spawn(move || worker::run(conn, rx, group_commit_max))
            .map_err(|e| {
                RegistryError::Storage(format!("cannot start the registry thread: {e}"))
            })?;
        Ok(Registry {
            inner: Arc::new(Inner {
                queue,
                closed: AtomicBool::new(false),
                thread: Mutex::new(Some(thread)),
                path: path.to_owned(),
                batch_rows_max: cfg.batch_rows_max,
                unobserved: Arc::default(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Calls that failed after their caller dropped the `Reply` (fire-and-forget writes
    /// that were not stored); each was also logged at `error`. For health and metrics.
    pub fn unobserved_failures(&self) -> u64 {
        self.inner.unobserved.load(Ordering::Relaxed)
    }

    /// Jobs waiting for the thread (for health and metrics).
    pub fn queued(&self) -> usize {
        self.inner.queue.len()
    }

    /// Stops taking calls (they answer `Closed`), lets the thread finish everything queued
    /// before, and joins it; the connection is closed, which checkpoints SQLite's WAL into
    /// the main file. Returns the close's error, if any. Later calls to `close` return
    /// `Ok(())`.
    ///
    /// Blocking (it waits for the queue to drain): call it at shutdown, off the executors.
    /// Dropping every handle without `close` also stops the thread after the queue drains,
    /// without waiting for it.
    pub fn close(&self) -> Result<(), RegistryError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Waits for room if the queue is full; fails only if the thread is already gone.
        let _ = self.inner.queue.send(Msg::Shutdown);
        let handle = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match handle {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(RegistryError::Storage(
                    "the registry thread panicked".into(),
                ))
            }),
            None => Ok(()),
        }
    }

    /// Queues `work` for the thread, or answers at once (`Overloaded`, `Closed`).
    fn submit<T, F>(&self, work: F) -> Reply<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, RegistryError> + Send + 'static,
    {
        let unobserved = self.inner.unobserved.clone();
        if self.inner.closed.load(Ordering::Acquire) {
            return Reply::refused(RegistryError::Closed, unobserved);
        }
        let (tx, rx) = oneshot::channel();
        match self.inner.queue.try_send(Msg::Work(Box::new(Task::new(
            work,
            tx,
            unobserved.clone(),
        )))) {
            Ok(()) => Reply {
                state: Ok(rx),
                unobserved,
            },
            Err(TrySendError::Full(_)) => Reply::refused(RegistryError::Overloaded, unobserved),
            Err(TrySendError::Disconnected(_)) => Reply::refused(RegistryError::Closed, unobserved),
        }
    }

    /// `submit` after the caller-side checks of `prepared` passed.
    fn submit_checked<P, T, F>(&self, prepared: Result<P, RegistryError>, work: F) -> Reply<T>
    where
        P: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&Connection, P) -> Result<T, RegistryError> + Send + 'static,
    {
        match prepared {
            Ok(p) => self.submit(move |conn| work(conn, p)),
            Err(e) => Reply::refused(e, self.inner.unobserved.clone()),
        }
    }

    fn check_batch(&self, what: &str, len: usize) -> Result<(), RegistryError> {
        if len > self.inner.batch_rows_max {
            return Err(RegistryError::Invalid(format!(
                "{what}: {len} rows is more than batch_rows_max ({})",
                self.inner.batch_rows_max
            )));
        }
        Ok(())
    }

    // ---- channels ----

    /// Creates the channel or replaces its metadata; its subscriptions and idempotency keys
    /// stay — unless the row held another channel of that name (another `channel_id`),
    /// whose subscriptions and keys go with it.
    pub fn upsert_channel(&self, meta: ChannelMeta) -> Reply<()> {
        self.submit_checked(channel_row(meta), |conn, row| {
            store::upsert_channel(conn, &row)
        })
    }

    /// Every channel, by name. Rows this binary cannot read are skipped and listed in
    /// `warnings`.
    pub fn load_channels(&self) -> Reply<Loaded<ChannelMeta>> {
        self.submit(store::load_channels)
    }

    /// Deletes the channel with its subscriptions and idempotency keys (not its audit
    /// records). `false` if there was none.
    pub fn delete_channel(&self, name: &str) -> Reply<bool> {
        let name = name.to_owned();
        self.submit(move |conn| store::delete_channel(conn, &name))
    }

    // ---- weddings ----

    pub fn upsert_wedding(&self, wedding: WeddingRecord) -> Reply<()> {
        self.submit_checked(check_wedding(&wedding).map(|()| wedding), |conn, w| {
            store::upsert_wedding(conn, &w)
        })
    }

    pub fn get_wedding(&self, wedding_id: &str) -> Reply<Option<WeddingRecord>> {
        let id = wedding_id.to_owned();
        self.submit(move |conn| store::get_wedding(conn, &id))
    }

    /// The weddings of one organization (or all), by event date.
    pub fn list_weddings(&self, organization_id: Option<&str>) -> Reply<Loaded<WeddingRecord>> {
        let org = organization_id.map(str::to_owned);
        self.submit(move |conn| store::list_weddings(conn, org.as_deref()))
    }

    pub fn delete_wedding(&self, wedding_id: &str) -> Reply<bool> {
        let id = wedding_id.to_owned();
        self.submit(move |conn| store::delete_wedding(conn, &id))
    }

    // ---- subscriptions ----

    /// Creates the subscription (the channel must be registered, else `Invalid`). On an
    /// existing one, keeps its `subscribed_at_ms` and moves the cursor forward only: to
    /// start a subscription over, delete it first.
    pub fn upsert_subscription(&self, sub: SubscriptionRecord) -> Reply<()> {
        let checked = (|| {
            check_id("channel", &sub.channel)?;
            check_id("user_id", &sub.user_id)?;
            check_id("org", &sub.org)?;
            to_i64("cursor", sub.cursor)?;
            to_i64("subscribed_at_ms", sub.subscribed_at_ms)?;
            Ok(sub)
        })();
        self.submit_checked(checked, |conn, s| store::upsert_subscription(conn, &s))
    }

    /// `false` if there was none.
    pub fn delete_subscription(&self, channel: &str, org: &str, user_id: &str) -> Reply<bool> {
        let (c, o, u) = (channel.to_owned(), org.to_owned(), user_id.to_owned());
        self.submit(move |conn| store::delete_subscription(conn, &c, &o, &u))
    }

    /// A channel's subscriptions, by user.
    pub fn load_subscriptions(&self, channel: &str) -> Reply<Loaded<SubscriptionRecord>> {
        let c = channel.to_owned();
        self.submit(move |conn| store::load_subscriptions(conn, Some(&c)))
    }

    /// Every subscription, by channel then user (for start-up).
    pub fn load_all_subscriptions(&self) -> Reply<Loaded<SubscriptionRecord>> {
        self.submit(|conn| store::load_subscriptions(conn, None))
    }

    /// Batched acks (SPEC §2.3): applies the whole batch atomically in one transaction,
    /// each cursor moving to `MAX(stored, given)` — never backwards. Acks for subscriptions
    /// that no longer exist are skipped (an ack does not resurrect an unsubscribe). Answers
    /// how many subscriptions matched.
    pub fn advance_cursors(&self, batch: Vec<CursorAck>) -> Reply<usize> {
        let checked = self
            .check_batch("advance_cursors", batch.len())
            .and_then(|()| {
                for a in &batch {
                    to_i64("cursor", a.cursor)?;
                }
                Ok(batch)
            });
        self.submit_checked(checked, |conn, b| store::advance_cursors(conn, &b))
    }

    // ---- idempotency keys ----

    /// Remembers the id a keyed publish got (the channel must be registered, else
    /// `Invalid`); a later put with the same key replaces it.
    pub fn put_idempotency(&self, rec: IdempotencyRecord) -> Reply<()> {
        let checked = (|| {
            check_id("channel", &rec.channel)?;
            check_id("idempotency key", &rec.key)?;
            to_i64("message_id", rec.message_id)?;
            to_i64("created_at_ms", rec.created_at_ms)?;
            Ok(rec)
        })();
        self.submit_checked(checked, |conn, r| store::put_idempotency(conn, &r))
    }

    /// Keys created at or after `since_ms` (for start-up: now minus the 10-minute window).
    pub fn load_idempotency(&self, since_ms: u64) -> Reply<Loaded<IdempotencyRecord>> {
        self.submit_checked(to_i64("since_ms", since_ms), |conn, t| {
            store::load_idempotency(conn, t)
        })
    }

    /// Forgets keys created before `before_ms`; answers how many.
    pub fn expire_idempotency(&self, before_ms: u64) -> Reply<u64> {
        self.submit_checked(to_i64("before_ms", before_ms), |conn, t| {
            store::expire_idempotency(conn, t)
        })
    }

    // ---- audit log ----

    /// Appends one record; answers its id.
    pub fn audit(&self, entry: AuditEntry) -> Reply<i64> {
        self.submit_checked(audit_row(entry).map(|r| vec![r]), |conn, rows| {
            store::audit(conn, &rows)
        })
    }

    /// Appends many records in one transaction (all or none).
    pub fn audit_batch(&self, entries: Vec<AuditEntry>) -> Reply<()> {
        let checked = self
            .check_batch("audit_batch", entries.len())
            .and_then(|()| entries.into_iter().map(audit_row).collect());
        self.submit_checked(checked, |conn, rows: Vec<AuditRow>| {
            store::audit(conn, &rows).map(|_| ())
        })
    }

    /// Records matching every given filter, newest first (by `at_ms`, then id), at most
    /// `limit` (1 to [`AUDIT_QUERY_LIMIT_MAX`]).
    pub fn query_audit(&self, query: AuditQuery) -> Reply<Loaded<AuditRecord>> {
        let checked = (|| {
            if query.limit == 0 || query.limit > AUDIT_QUERY_LIMIT_MAX {
                return Err(RegistryError::Invalid(format!(
                    "audit query limit must be 1 to {AUDIT_QUERY_LIMIT_MAX} (got {})",
                    query.limit
                )));
            }
            if let Some(t) = query.from_ms {
                to_i64("from_ms", t)?;
            }
            if let Some(t) = query.to_ms {
                to_i64("to_ms", t)?;
            }
            Ok(query)
        })();
        self.submit_checked(checked, |conn, q| store::query_audit(conn, &q))
    }

    /// Deletes records older than `before_ms` (the audit log's retention); answers how many.
    pub fn expire_audit(&self, before_ms: u64) -> Reply<u64> {
        self.submit_checked(to_i64("before_ms", before_ms), |conn, t| {
            store::expire_audit(conn, t)
        })
    }
}

fn channel_row(m: ChannelMeta) -> Result<ChannelRow, RegistryError> {
    check_id("channel id", &m.id)?;
    check_id("organization_id", &m.access.org)?;
    check_id("creator", &m.access.creator)?;
    check_id("epoch", &m.epoch)?;
    if let Some(w) = &m.access.wedding_id {
        check_id("wedding_id", w)?;
    }
    let json = |what: &str, r: serde_json::Result<String>| {
        r.map_err(|e| RegistryError::Invalid(format!("channel {what}: {e}")))
    };
    Ok(ChannelRow {
        name: m.name.as_str().to_owned(),
        kind: m.access.kind.as_str(),
        permissions: json("permissions", serde_json::to_string(&m.access.permissions))?,
        members: json("members", serde_json::to_string(&m.access.members))?,
        max_subscribers: to_i64("max_subscribers", m.max_subscribers as u64)?,
        retention_ms: to_i64("retention_ms", m.retention_ms)?,
        created_at_ms: to_i64("created_at_ms", m.created_at_ms)?,
        channel_id: m.id,
        organization_id: m.access.org,
        wedding_id: m.access.wedding_id,
        creator: m.access.creator,
        epoch: m.epoch,
    })
}

fn audit_row(e: AuditEntry) -> Result<AuditRow, RegistryError> {
    // An unauthenticated attempt has no verified identity: its actor may be empty.
    for (field, v) in [
        ("actor_user_id", &e.actor_user_id),
        ("actor_org", &e.actor_org),
    ] {
        if !(e.action == AuditAction::Unauthorized && v.is_empty()) {
            check_id(field, v)?;
        }
    }
    if let Some(c) = &e.channel {
        check_id("channel", c)?;
    }
    if let Some(o) = &e.channel_org {
        check_id("channel_org", o)?;
    }
    let detail = e.detail.to_string();
    if detail.len() > AUDIT_DETAIL_MAX_BYTES {
        return Err(RegistryError::Invalid(format!(
            "audit detail is {} bytes, more than {AUDIT_DETAIL_MAX_BYTES}",
            detail.len()
        )));
    }
    Ok(AuditRow {
        at_ms: to_i64("at_ms", e.at_ms)?,
        actor_user_id: e.actor_user_id,
        actor_org: e.actor_org,
        action: e.action.as_str(),
        channel: e.channel,
        channel_org: e.channel_org,
        detail,
    })
}
