//! Ringbearer's durable storage: the per-shard write-ahead log (segments, checksums, group
//! commit, durability policies, recovery, reclaim) and the SQLite registry ([`registry`]).
//!
//! One [`Wal`] per shard, owned by that shard's glommio executor. The owner appends each
//! published message's rkyv frame ([`Record`]) and answers the publisher once
//! [`Wal::durable`] resolves. At start, [`Wal::open`] returns every record still on disk
//! ([`Recovery`]) for the server to rebuild channel windows and next ids from.
//!
//! Layout: [`format`] (bytes on disk, pure), [`storage`] (file I/O behind a trait, glommio
//! DMA files), [`recovery`] (scan and cut at open), `wal` (append, group commit, reclaim),
//! [`fault`] (a failing storage for tests), [`check`] (offline verify and repair, for
//! `ringbearer wal verify` / `wal repair`). `docs/wal.md` documents the format, the
//! promises of each policy and every crash case with its test.
//!
//! This crate does not depend on `ringbearer-io`; `server/` composes the two.

pub mod check;
mod error;
pub mod fault;
pub mod format;
pub mod recovery;
/// The SQLite registry: channels, weddings, subscriptions and cursors, idempotency keys, audit log.
pub mod registry;
pub mod storage;
mod wal;

pub use error::{PoisonKind, WalError};
pub use recovery::{Recovery, RecoveryReport, TailCut};
pub use storage::{DmaStorage, SegmentFile, Storage};
pub use wal::{Durability, Lsn, ReclaimReport, Record, RecoveredRecord, Wal, WalConfig, WalStats};
