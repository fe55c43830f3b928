//! The per-shard write-ahead log: append, group commit, durability policies, rotation,
//! reclaim, poisoning.
//!
//! One log per shard, owned by that shard's glommio executor (`!Send`). `append` encodes the
//! record into an in-memory queue and returns its LSN without awaiting. A committer task,
//! spawned on the same executor by `open`, takes everything queued since its last commit
//! (up to `max_batch_bytes`), writes it as whole blocks at a block boundary, fdatasyncs once,
//! advances `durable_lsn` and wakes every `durable` waiter it covers: many publishes, one
//! fsync. While one commit is on the disk the next one gathers.
//!
//! A failed write, sync or rotation poisons the log: every later `append` and every waiter
//! not yet covered gets [`WalError::Poisoned`]. It is never retried: after a failed
//! fdatasync the kernel may have dropped the dirty data and a retry could report success
//! for what is not stored. Restarting (reopening) recovers what is on disk.
//!
//! Not here: what a record means (the server's channel state), reading records back at
//! run time (the server keeps its windows in memory and rebuilds them from [`Recovery`]),
//! retention policy (the caller's `is_live`).

use crate::error::{is_full, PoisonKind, WalError};
use crate::format::{
    self, BODY_MAX_BYTES, CHANNEL_MAX_BYTES, RECORD_MAX_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::recovery::{self, Recovery};
use crate::storage::{DmaStorage, IoBuf, SegmentFile, Storage};
use futures_lite::FutureExt;
use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, HashMap, VecDeque},
    fmt, io,
    path::PathBuf,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

/// A log sequence number: strictly increasing per shard's log, from 1. `Lsn(0)` means none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What "durable" means. `docs/wal.md` states each promise; in short:
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// `durable(lsn)` resolves after the record was written and fdatasync returned: it
    /// survives a process crash and a machine crash (if the disk honours flushes).
    #[default]
    Fsync,
    /// `durable(lsn)` resolves at once; the record is written and fdatasynced within
    /// `batch_interval_ms` (plus one commit's time). A crash loses at most that window.
    Batch,
    /// Nothing touches the disk: `open` neither reads nor creates files, `durable` resolves
    /// at once, and a restart starts empty (the behaviour before the log existed).
    Memory,
}

impl Durability {
    /// `fsync`, `batch` or `memory` (the config file's spelling).
    pub fn parse(s: &str) -> Option<Durability> {
        match s {
            "fsync" => Some(Durability::Fsync),
            "batch" => Some(Durability::Batch),
            "memory" => Some(Durability::Memory),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Batch => "batch",
            Durability::Memory => "memory",
        }
    }
}

/// Every bound of one shard's log, its default and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// The shard's own directory, e.g. `data/wal/shard-0`. Nothing else may write there.
    pub dir: PathBuf,
    /// A segment is closed and the next one started once it holds this many bytes (it may
    /// pass it by one commit). Default 64 MiB: reclaim works in whole segments, so smaller
    /// segments free space sooner; larger ones mean fewer files. At least 8 KiB.
    pub segment_bytes: u64,
    /// Default [`Durability::Fsync`].
    pub durability: Durability,
    /// Under [`Durability::Batch`], queued records are written and synced at least this
    /// often. Default 10 ms: the loss window on a crash. 1 to 60 000.
    pub batch_interval_ms: u64,
    /// One group commit writes at most this much (a larger single record is written
    /// alone). Default 4 MiB: ~420 k records/s needs only ~256 records per sync
    /// (ARCHITECTURE.md pitfalls), and a bigger write only delays the waiters at its front.
    /// 4 KiB to 64 MiB.
    pub max_batch_bytes: usize,
    /// `append` refuses with [`WalError::Backpressure`] once this many encoded bytes are
    /// queued or being written. Default 16 MiB (four full commits): bounds the memory a slow
    /// disk can pin, per shard. At least `max_batch_bytes` and one largest record.
    pub max_unsynced_bytes: usize,
}

impl WalConfig {
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
    pub const MIN_SEGMENT_BYTES: u64 = 2 * format::BLOCK_BYTES;
    pub const DEFAULT_BATCH_INTERVAL_MS: u64 = 10;
    pub const MAX_BATCH_INTERVAL_MS: u64 = 60_000;
    pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;
    pub const MAX_MAX_BATCH_BYTES: usize = 64 << 20;
    pub const DEFAULT_MAX_UNSYNCED_BYTES: usize = 16 << 20;

    /// The defaults, for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> WalConfig {
        WalConfig {
            dir: dir.into(),
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            durability: Durability::Fsync,
            batch_interval_ms: Self::DEFAULT_BATCH_INTERVAL_MS,
            max_batch_bytes: Self::DEFAULT_MAX_BATCH_BYTES,
            max_unsynced_bytes: Self::DEFAULT_MAX_UNSYNCED_BYTES,
        }
    }

    /// Checks each bound and how they relate.
    pub fn validate(&self) -> Result<(), WalError> {
        let bad = |m: String| Err(WalError::Config(m));
        if self.dir.as_os_str().is_empty() {
            return bad("dir is empty".into());
        }
        if self.segment_bytes < Self::MIN_SEGMENT_BYTES {
            return bad(format!(
                "segment_bytes {} < {}",
                self.segment_bytes,
                Self::MIN_SEGMENT_BYTES
            ));
        }
        if self.batch_interval_ms == 0 || self.batch_interval_ms > Self::MAX_BATCH_INTERVAL_MS {
            return bad(format!(
                "batch_interval_ms {} not in 1..={}",
                self.batch_interval_ms,
                Self::MAX_BATCH_INTERVAL_MS
            ));
        }
        if self.max_batch_bytes < format::BLOCK_BYTES as usize
            || self.max_batch_bytes > Self::MAX_MAX_BATCH_BYTES
        {
            return bad(format!(
                "max_batch_bytes {} not in {}..={}",
                self.max_batch_bytes,
                format::BLOCK_BYTES,
                Self::MAX_MAX_BATCH_BYTES
            ));
        }
        if self.max_unsynced_bytes < self.max_batch_bytes
            || self.max_unsynced_bytes < RECORD_MAX_BYTES
        {
            return bad(format!(
                "max_unsynced_bytes {} must be at least max_batch_bytes ({}) and one largest record ({RECORD_MAX_BYTES})",
                self.max_unsynced_bytes, self.max_batch_bytes
            ));
        }
        Ok(())
    }
}

/// One record to append. `body` is the rkyv `MessageFrame` bytes that travelled between
/// shards; the log does not look inside.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub channel: &'a str,
    pub id: u64,
    pub ts_ms: u64,
    pub body: &'a [u8],
}

/// A record found by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredRecord {
    pub lsn: Lsn,
    pub channel: String,
    pub id: u64,
    pub ts_ms: u64,
    /// Not aligned: copy into a `FrameBytes` (16-byte aligned) before reading it as a frame.
    pub body: Vec<u8>,
}

/// What `reclaim` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    pub segments_removed: usize,
    pub bytes_removed: u64,
    pub records_removed: u64,
    /// First LSN still on disk after the reclaim (`Lsn(0)` under `Memory`).
    pub first_kept_lsn: Lsn,
}

/// A snapshot of the log's counters, for health and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Segment files, the active one included.
    pub segments: usize,
    /// Bytes in those files.
    pub bytes: u64,
    /// Records appended since open.
    pub appended: u64,
    /// Group commits completed (each one write and one fdatasync).
    pub synced_batches: u64,
    /// Records made durable by those commits.
    pub synced_records: u64,
    pub durable_lsn: Lsn,
    pub next_lsn: Lsn,
    /// Encoded bytes queued or being written.
    pub unsynced_bytes: usize,
    /// Whether a failure poisoned the log (see [`WalError::Poisoned`]).
    pub poisoned: bool,
    pub direct_io: bool,
}

/// What the log knows about one segment: enough to reclaim it without reading it.
#[derive(Debug)]
pub(crate) struct SegmentMeta {
    pub first_lsn: u64,
    /// The LSN after its last record (== `first_lsn` when empty).
    pub next_lsn: u64,
    pub path: PathBuf,
    pub bytes: u64,
    /// Channel → highest record id in this segment.
    pub channels: HashMap<Box<str>, u64>,
    pub max_ts_ms: u64,
    /// The header's salt (seeds commit header checksums; 0 in a version-1 segment).
    pub salt: u32,
}

impl SegmentMeta {
    pub fn new(first_lsn: u64, path: PathBuf, bytes: u64, salt: u32) -> SegmentMeta {
        SegmentMeta {
            first_lsn,
            next_lsn: first_lsn,
            path,
            bytes,
            channels: HashMap::new(),
            max_ts_ms: 0,
            salt,
        }
    }

    pub fn note(&mut self, channel: &str, id: u64, ts_ms: u64) {
        match self.channels.get_mut(channel) {
            Some(max) => *max = (*max).max(id),
            None => {
                self.channels.insert(channel.into(), id);
            }
        }
        self.max_ts_ms = self.max_ts_ms.max(ts_ms);
    }
}

#[derive(Clone)]
struct Poison {
    kind: PoisonKind,
    detail: Arc<str>,
}

struct State<F> {
    /// The LSN the next append gets.
    next_lsn: u64,
    /// Every record ≤ this is written and synced (under `Memory`: appended).
    durable_lsn: u64,
    /// The last LSN handed to a commit.
    taken_lsn: u64,
    /// Encoded records not yet taken by a commit, back to back.
    pending: Vec<u8>,
    /// Encoded bytes of the commit on the disk now.
    inflight_bytes: usize,
    poison: Option<Poison>,
    /// `close` was called: no more appends; the committer drains the queue and stops.
    closing: bool,
    /// The handle was dropped without `close`: waiters get `Closed`.
    dropped: bool,
    waiters: BTreeMap<u64, Vec<Waker>>,
    committer: Option<Waker>,
    /// Oldest first; the last one is the active segment.
    segments: VecDeque<SegmentMeta>,
    active: Option<Rc<F>>,
    /// Where the next commit starts in the active segment (block-aligned).
    write_pos: u64,
    appended: u64,
    synced_batches: u64,
    synced_records: u64,
}

struct Shared<S: Storage> {
    cfg: WalConfig,
    storage: S,
    st: RefCell<State<S::File>>,
    reclaiming: Cell<bool>,
}

/// One shard's write-ahead log. Share it between the shard's tasks with `Rc<Wal>`.
pub struct Wal<S: Storage = DmaStorage> {
    sh: Rc<Shared<S>>,
    committer: Option<glommio::Task<()>>,
    closed: bool,
}

impl Wal<DmaStorage> {
    /// Opens (creating if needed) the log in `cfg.dir`, recovers what is there and starts
    /// the committer on the current glommio executor. Must run inside a glommio executor.
    pub async fn open(cfg: WalConfig) -> Result<(Wal, Recovery), WalError> {
        Wal::open_with(cfg, DmaStorage::new()).await
    }
}

impl<S: Storage> Wal<S> {
    /// [`Wal::open`] over any storage (tests pass a [`crate::fault::FaultStorage`]).
    pub async fn open_with(mut cfg: WalConfig, storage: S) -> Result<(Wal<S>, Recovery), WalError> {
        cfg.validate()?;
        // IMPORTANT: every path handed to glommio is absolute. glommio 0.9 opens a relative
        // directory against dirfd -1 (`Directory::open`, glommio #637): a relative `dir`
        // failed the first directory fsync with EBADF. Resolved once here, so the segment
        // paths, the reports and every later fsync use the absolute form.
        cfg.dir = std::path::absolute(&cfg.dir)
            .map_err(|e| WalError::io("resolving the absolute path of", &cfg.dir, e))?;
        let mut st = State {
            next_lsn: 1,
            durable_lsn: 0,
            taken_lsn: 0,
            pending: Vec::new(),
            inflight_bytes: 0,
            poison: None,
            closing: false,
            dropped: false,
            waiters: BTreeMap::new(),
            committer: None,
            segments: VecDeque::new(),
            active: None,
            write_pos: 0,
            appended: 0,
            synced_batches: 0,
            synced_records: 0,
        };
        let mut recovery = Recovery::default();
        recovery.report.next_lsn = Lsn(1);
        if cfg.durability != Durability::Memory {
            let dir = &cfg.dir;
            storage
                .create_dir_all(dir)
                .await
                .map_err(|e| WalError::io("creating", dir, e))?;
            let rec = recovery::recover(&storage, dir).await?;
            st.segments = rec.segments;
            let (file, pos) = match rec.active {
                Some(active) => active,
                None => {
                    let path = dir.join(format::segment_file_name(rec.next_lsn));
                    let salt = recovery::new_salt(rec.next_lsn);
                    let file = recovery::create_segment(&storage, &path, rec.next_lsn, salt)
                        .await
                        .map_err(|e| WalError::io("creating segment", &path, e))?;
                    st.segments.push_back(SegmentMeta::new(
                        rec.next_lsn,
                        path,
                        SEGMENT_HEADER_BYTES,
                        salt,
                    ));
                    (file, SEGMENT_HEADER_BYTES)
                }
            };
            // Makes the newest segment's directory entry durable, whoever created it.
            storage
                .sync_dir(dir)
                .await
                .map_err(|e| WalError::io("syncing directory", dir, e))?;
            // After the first segment exists: a crash before this leaves a log whose first
            // segment starts at LSN 1 (or is version 1), which recovery accepts.
            if let Some(first) = rec.write_start {
                recovery::write_start(&storage, dir, first).await?;
            }
            st.active = Some(Rc::new(file));
            st.write_pos = pos;
            st.next_lsn = rec.next_lsn;
            recovery = rec.recovery;
        }
        st.durable_lsn = st.next_lsn - 1;
        st.taken_lsn = st.next_lsn - 1;
        let sh = Rc::new(Shared {
            cfg,
            storage,
            st: RefCell::new(st),
            reclaiming: Cell::new(false),
        });
        let committer = (sh.cfg.durability != Durability::Memory)
            .then(|| glommio::spawn_local(run_committer(sh.clone())));
        Ok((
            Wal {
                sh,
                committer,
                closed: false,
            },
            recovery,
        ))
    }

    /// Queues a record and returns its log sequence number (strictly increasing). Never
    /// awaits. Refuses a record over the limits ([`WalError::InvalidRecord`]), past
    /// `max_unsynced_bytes` ([`WalError::Backpressure`]), after a failure
    /// ([`WalError::Poisoned`]) or after `close` ([`WalError::Closed`]); a refused record
    /// takes no LSN.
    pub fn append(&self, rec: &Record<'_>) -> Result<Lsn, WalError> {
        if rec.channel.len() > CHANNEL_MAX_BYTES {
            return Err(WalError::InvalidRecord(format!(
                "channel name of {} bytes (max {CHANNEL_MAX_BYTES})",
                rec.channel.len()
            )));
        }
        if rec.body.len() > BODY_MAX_BYTES {
            return Err(WalError::InvalidRecord(format!(
                "body of {} bytes (max {BODY_MAX_BYTES})",
                rec.body.len()
            )));
        }
        let cfg = &self.sh.cfg;
        let mut st = self.sh.st.borrow_mut();
        if let Some(p) = &st.poison {
            return Err(poisoned(p, st.durable_lsn));
        }
        if st.closing || st.dropped {
            return Err(WalError::Closed);
        }
        let lsn = st.next_lsn;
        if cfg.durability == Durability::Memory {
            st.next_lsn += 1;
            st.durable_lsn = lsn;
            st.appended += 1;
            return Ok(Lsn(lsn));
        }
        let size = format::encoded_len(rec.channel.len(), rec.body.len());
        let unsynced = st.pending.len() + st.inflight_bytes;
        if unsynced + size > cfg.max_unsynced_bytes {
            return Err(WalError::Backpressure {
                unsynced_bytes: unsynced,
                limit_bytes: cfg.max_unsynced_bytes,
            });
        }
        let was_empty = st.pending.is_empty();
        format::encode_record(
            &mut st.pending,
            lsn,
            rec.id,
            rec.ts_ms,
            rec.channel,
            rec.body,
        );
        st.next_lsn += 1;
        st.appended += 1;
        let wake = match cfg.durability {
            Durability::Fsync => true,
            // The first record starts the interval; a full batch ends it early.
            _ => was_empty || st.pending.len() >= cfg.max_batch_bytes,
        };
        let committer = if wake { st.committer.take() } else { None };
        drop(st);
        if let Some(w) = committer {
            w.wake();
        }
        Ok(Lsn(lsn))
    }

    /// Resolves once every record with lsn ≤ `lsn` is durable under the policy. Concurrent
    /// waiters share one write+fdatasync (group commit): many publishes, one fsync.
    /// Under `Batch` and `Memory` it resolves at once. An LSN that was already durable
    /// before a failure stays `Ok`; any other gets [`WalError::Poisoned`] once the log is
    /// poisoned.
    pub async fn durable(&self, lsn: Lsn) -> Result<(), WalError> {
        std::future::poll_fn(|cx| self.poll_durable(lsn.0, cx)).await
    }

    fn poll_durable(&self, lsn: u64, cx: &mut Context<'_>) -> Poll<Result<(), WalError>> {
        let mut st = self.sh.st.borrow_mut();
        if lsn >= st.next_lsn {
            return Poll::Ready(Err(WalError::UnknownLsn {
                lsn,
                next: st.next_lsn,
            }));
        }
        if lsn <= st.durable_lsn {
            return Poll::Ready(Ok(()));
        }
        if let Some(p) = &st.poison {
            return Poll::Ready(Err(poisoned(p, st.durable_lsn)));
        }
        if self.sh.cfg.durability != Durability::Fsync {
            return Poll::Ready(Ok(()));
        }
        if st.dropped {
            return Poll::Ready(Err(WalError::Closed));
        }
        st.waiters.entry(lsn).or_default().push(cx.waker().clone());
        Poll::Pending
    }

    /// Every record ≤ this is written and fdatasynced (under `Memory`: appended).
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.sh.st.borrow().durable_lsn)
    }

    /// Deletes whole segments (never the active one) in which every record is dead:
    /// `is_live(channel, max_id_of_that_channel_in_segment, max_ts_in_segment)` false for
    /// all. Only the oldest segments go: it stops at the first segment that holds a live
    /// record, so the segments left always continue each other and a missing segment is
    /// detected at open. Each removal is made durable (directory fsync) before the next.
    /// `is_live` must not call back into the log. A reclaim already running makes this one
    /// return an empty report.
    pub async fn reclaim(
        &self,
        is_live: impl Fn(&str, u64, u64) -> bool,
    ) -> Result<ReclaimReport, WalError> {
        let mut report = ReclaimReport::default();
        if self.sh.cfg.durability == Durability::Memory || self.sh.reclaiming.replace(true) {
            return Ok(report);
        }
        let _running = ResetOnDrop(&self.sh.reclaiming);
        let (victims, first_kept): (Vec<(PathBuf, u64, u64)>, u64) = {
            let st = self.sh.st.borrow();
            let older = st.segments.len().saturating_sub(1);
            let victims = st
                .segments
                .iter()
                .take(older)
                .take_while(|s| {
                    !s.channels
                        .iter()
                        .any(|(c, id)| is_live(c, *id, s.max_ts_ms))
                })
                .map(|s| (s.path.clone(), s.bytes, s.next_lsn - s.first_lsn))
                .collect::<Vec<_>>();
            let first_kept = st.segments.get(victims.len()).map_or(0, |s| s.first_lsn);
            (victims, first_kept)
        };
        let dir = &self.sh.cfg.dir;
        if !victims.is_empty() {
            // The start file moves first: a crash after it leaves older segments that the
            // next open removes; the other order would leave a log that looks truncated.
            recovery::write_start(&self.sh.storage, dir, first_kept).await?;
        }
        for (path, bytes, records) in victims {
            self.sh
                .storage
                .remove(&path)
                .await
                .map_err(|e| WalError::io("removing segment", &path, e))?;
            {
                let mut st = self.sh.st.borrow_mut();
                let front = st
                    .segments
                    .pop_front()
                    .expect("the removed segment is listed");
                assert_eq!(front.path, path, "segments are removed oldest first");
            }
            report.segments_removed += 1;
            report.bytes_removed += bytes;
            report.records_removed += records;
            self.sh
                .storage
                .sync_dir(dir)
                .await
                .map_err(|e| WalError::io("syncing directory", dir, e))?;
        }
        report.first_kept_lsn = Lsn(self
            .sh
            .st
            .borrow()
            .segments
            .front()
            .map_or(0, |s| s.first_lsn));
        Ok(report)
    }

    pub fn stats(&self) -> WalStats {
        let st = self.sh.st.borrow();
        WalStats {
            segments: st.segments.len(),
            bytes: st.segments.iter().map(|s| s.bytes).sum(),
            appended: st.appended,
            synced_batches: st.synced_batches,
            synced_records: st.synced_records,
            durable_lsn: Lsn(st.durable_lsn),
            next_lsn: Lsn(st.next_lsn),
            unsynced_bytes: st.pending.len() + st.inflight_bytes,
            poisoned: st.poison.is_some(),
            direct_io: self.sh.cfg.durability != Durability::Memory && self.sh.storage.direct_io(),
        }
    }

    /// Stops accepting appends, writes and syncs everything queued (under every policy but
    /// `Memory`), stops the committer and closes the active segment. If the log is poisoned
    /// it returns that error and drops the failed file without closing it (IMPORTANT:
    /// closing a failed glommio writer can panic; see ARCHITECTURE.md pitfalls).
    pub async fn close(mut self) -> Result<(), WalError> {
        self.closed = true;
        let committer = {
            let mut st = self.sh.st.borrow_mut();
            st.closing = true;
            st.committer.take()
        };
        if let Some(w) = committer {
            w.wake();
        }
        if let Some(task) = self.committer.take() {
            task.await;
        }
        let (poison, durable, active) = {
            let mut st = self.sh.st.borrow_mut();
            (st.poison.clone(), st.durable_lsn, st.active.take())
        };
        if let Some(p) = poison {
            drop(active);
            return Err(poisoned(&p, durable));
        }
        if let Some(file) = active.and_then(|f| Rc::try_unwrap(f).ok()) {
            file.close()
                .await
                .map_err(|e| WalError::io("closing", self.sh.cfg.dir.clone(), e))?;
        }
        Ok(())
    }
}

impl<S: Storage> Drop for Wal<S> {
    /// Dropped without `close` (a crash, in tests): the committer is cancelled with the
    /// task handle, nothing more is written, and waiters get [`WalError::Closed`].
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let waiters = {
            let mut st = self.sh.st.borrow_mut();
            st.dropped = true;
            std::mem::take(&mut st.waiters)
        };
        waiters.into_values().flatten().for_each(Waker::wake);
    }
}

struct ResetOnDrop<'a>(&'a Cell<bool>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

fn poisoned(p: &Poison, durable_lsn: u64) -> WalError {
    WalError::Poisoned {
        kind: p.kind,
        detail: p.detail.clone(),
        durable_lsn,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// For the first queued record.
    Idle,
    /// Under `Batch`, for a full batch (the interval timer runs beside it).
    Gathering,
}

impl<S: Storage> Shared<S> {
    /// Ready(true) to commit, Ready(false) to stop.
    fn poll_work(&self, wait: Wait, cx: &mut Context<'_>) -> Poll<bool> {
        let mut st = self.st.borrow_mut();
        if st.poison.is_some() || st.dropped {
            return Poll::Ready(false);
        }
        let ready = match wait {
            Wait::Idle => !st.pending.is_empty(),
            Wait::Gathering => st.pending.len() >= self.cfg.max_batch_bytes,
        };
        if ready {
            return Poll::Ready(true);
        }
        if st.closing {
            // Idle: nothing left to write. Gathering: stop waiting and write it now.
            return Poll::Ready(wait == Wait::Gathering);
        }
        st.committer = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poison(&self, kind: PoisonKind, e: io::Error) {
        let waiters = {
            let mut st = self.st.borrow_mut();
            st.poison = Some(Poison {
                kind,
                detail: e.to_string().into(),
            });
            st.pending = Vec::new();
            st.inflight_bytes = 0;
            std::mem::take(&mut st.waiters)
        };
        waiters.into_values().flatten().for_each(Waker::wake);
    }
}

async fn run_committer<S: Storage>(sh: Rc<Shared<S>>) {
    loop {
        if !std::future::poll_fn(|cx| sh.poll_work(Wait::Idle, cx)).await {
            return;
        }
        if sh.cfg.durability == Durability::Batch {
            let interval = Duration::from_millis(sh.cfg.batch_interval_ms);
            let full = async {
                std::future::poll_fn(|cx| sh.poll_work(Wait::Gathering, cx)).await;
            };
            glommio::timer::sleep(interval).or(full).await;
        }
        loop {
            match commit_once(&sh).await {
                Ok(true) => {}
                Ok(false) => break,
                Err((kind, e)) => {
                    sh.poison(kind, e);
                    return;
                }
            }
        }
    }
}

type Failure = (PoisonKind, io::Error);

fn failure(default: PoisonKind) -> impl Fn(io::Error) -> Failure {
    move |e| {
        if is_full(&e) {
            (PoisonKind::StorageFull, e)
        } else {
            (default, e)
        }
    }
}

/// One group commit: rotate if the active segment is full, take up to `max_batch_bytes`
/// of queued records, write them as whole blocks, fdatasync, publish. `Ok(false)` if
/// nothing was queued.
async fn commit_once<S: Storage>(sh: &Shared<S>) -> Result<bool, Failure> {
    let rotate_to = {
        let st = sh.st.borrow();
        if st.pending.is_empty() || st.poison.is_some() || st.dropped {
            return Ok(false);
        }
        let active = st.segments.back().expect("an active segment");
        (st.write_pos >= sh.cfg.segment_bytes && active.next_lsn > active.first_lsn)
            .then_some(active.next_lsn)
    };
    if let Some(first) = rotate_to {
        rotate(sh, first)
            .await
            .map_err(failure(PoisonKind::Rotate))?;
    }

    let (file, buf, pos, size, last_lsn, records) = {
        let mut guard = sh.st.borrow_mut();
        let st = &mut *guard;
        let file = st.active.clone().expect("an active segment");
        let pos = st.write_pos;
        let layout = format::layout_commit(&st.pending, sh.cfg.max_batch_bytes, |_, _| {});
        let (records, consumed, size) = (layout.records, layout.consumed, layout.padded_bytes);
        let mut buf = file.alloc(size);
        let out = buf.bytes_mut();
        let seg = st.segments.back_mut().expect("an active segment");
        out[..format::COMMIT_HEADER_BYTES].copy_from_slice(&format::encode_commit_header(
            seg.salt,
            &format::CommitHeader {
                first_lsn: st.taken_lsn + 1,
                records: records as u32,
                bytes: layout.content_bytes as u32,
            },
        ));
        let pending = &st.pending[..consumed];
        let mut filled = format::COMMIT_HEADER_BYTES;
        format::layout_commit(pending, usize::MAX, |src, at| {
            out[filled..at].fill(0);
            let rec = &pending[src];
            out[at..at + rec.len()].copy_from_slice(rec);
            filled = at + rec.len();
            let r = format::decode_fields(rec).expect("encoded by append");
            seg.note(r.channel, r.id, r.ts_ms);
        });
        out[filled..].fill(0);
        seg.next_lsn += records;
        st.pending.drain(..consumed);
        st.inflight_bytes = consumed;
        st.taken_lsn += records;
        (file, buf, pos, size, st.taken_lsn, records)
    };

    let written = file
        .write_at(buf, pos)
        .await
        .map_err(failure(PoisonKind::Write))?;
    if written != size {
        // O_DIRECT writes come back short when the disk fills up (write(2)).
        return Err((
            PoisonKind::StorageFull,
            io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {size} bytes at offset {pos}"),
            ),
        ));
    }
    file.sync().await.map_err(failure(PoisonKind::Sync))?;

    let ready = {
        let mut st = sh.st.borrow_mut();
        st.write_pos = pos + size as u64;
        let end = st.write_pos;
        st.segments.back_mut().expect("an active segment").bytes = end;
        st.durable_lsn = last_lsn;
        st.inflight_bytes = 0;
        st.synced_batches += 1;
        st.synced_records += records;
        let later = st.waiters.split_off(&(last_lsn + 1));
        std::mem::replace(&mut st.waiters, later)
    };
    ready.into_values().flatten().for_each(Waker::wake);
    Ok(true)
}

/// Starts the segment whose first record is `first_lsn`: create it with its header,
/// fdatasync, fsync the directory, then switch. The previous segment is complete (every
/// commit is synced before the next) and is closed.
async fn rotate<S: Storage>(sh: &Shared<S>, first_lsn: u64) -> io::Result<()> {
    let path = sh.cfg.dir.join(format::segment_file_name(first_lsn));
    let salt = recovery::new_salt(first_lsn);
    let file = recovery::create_segment(&sh.storage, &path, first_lsn, salt).await?;
    sh.storage.sync_dir(&sh.cfg.dir).await?;
    let old = {
        let mut st = sh.st.borrow_mut();
        st.write_pos = SEGMENT_HEADER_BYTES;
        st.segments.push_back(SegmentMeta::new(
            first_lsn,
            path,
            SEGMENT_HEADER_BYTES,
            salt,
        ));
        st.active.replace(Rc::new(file))
    };
    if let Some(old) = old.and_then(|f| Rc::try_unwrap(f).ok()) {
        // Its data is already synced; a failing close cannot lose any of it.
        let _ = old.close().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bounds_are_checked() {
        let c = WalConfig::new("data/wal/shard-0");
        c.validate().unwrap();
        assert_eq!(c.durability, Durability::Fsync);
        assert_eq!(c.segment_bytes, 64 << 20);
        assert_eq!(c.batch_interval_ms, 10);
        assert_eq!(c.max_batch_bytes, 4 << 20);
        let bad = [
            WalConfig {
                dir: PathBuf::new(),
                ..c.clone()
            },
            WalConfig {
                segment_bytes: 4096,
                ..c.clone()
            },
            WalConfig {
                batch_interval_ms: 0,
                ..c.clone()
            },
            WalConfig {
                max_batch_bytes: 100,
                ..c.clone()
            },
            WalConfig {
                max_unsynced_bytes: (4 << 20) - 1,
                ..c.clone()
            },
            WalConfig {
                max_batch_bytes: 4096,
                max_unsynced_bytes: 8192,
                ..c.clone()
            },
        ];
        for b in bad {
            assert!(matches!(b.validate(), Err(WalError::Config(_))), "{b:?}");
        }
    }

    #[test]
    fn durability_names_round_trip() {
        for d in [Durability::Fsync, Durability::Batch, Durability::Memory] {
            assert_eq!(Durability::parse(d.as_str()), Some(d));
        }
        assert_eq!(Durability::parse("FSYNC"), None);
    }

    #[test]
    fn segment_meta_keeps_the_highest_id_per_channel() {
        let mut m = SegmentMeta::new(1, PathBuf::from("x"), 0, 0);
        m.note("a:b:c", 5, 10);
        m.note("a:b:c", 3, 30);
        m.note("a:b:d", 1, 20);
        assert_eq!(m.channels["a:b:c"], 5);
        assert_eq!(m.channels["a:b:d"], 1);
        assert_eq!(m.max_ts_ms, 30);
    }
}
