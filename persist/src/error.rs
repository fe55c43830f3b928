//! The log's one error type, split by what the caller should do: fix the input
//! ([`WalError::InvalidRecord`], [`WalError::Config`]), back off and retry
//! ([`WalError::Backpressure`]), alert an operator ([`WalError::Poisoned`],
//! [`WalError::Corrupt`], [`WalError::DamagedBeforeValid`], [`WalError::Sequence`],
//! [`WalError::MissingSegment`], [`WalError::StartFile`], [`WalError::Io`]) or stop using
//! the handle ([`WalError::Closed`]).
//!
//! Cloneable, because one storage failure is reported to every waiting publisher.

use crate::format::StopReason;
use std::{fmt, io, path::PathBuf, sync::Arc};

#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// A configuration bound is out of range or bounds contradict each other.
    #[error("invalid write-ahead log config: {0}")]
    Config(String),

    /// The record breaks a limit (channel or body too long). Bad input; not retryable.
    #[error("record refused: {0}")]
    InvalidRecord(String),

    /// More than `max_unsynced_bytes` are queued or being written: the disk is not keeping
    /// up. Retryable (the server answers `WS_OVERLOADED`); nothing was queued.
    #[error("write-ahead log over capacity: {unsynced_bytes} bytes not yet synced (limit {limit_bytes})")]
    Backpressure {
        unsynced_bytes: usize,
        limit_bytes: usize,
    },

    /// An earlier write or fdatasync failed. The log accepts nothing more until it is
    /// reopened (process restart); records up to `durable_lsn` are stored, nothing after
    /// it was acknowledged as durable.
    #[error(
        "write-ahead log poisoned by a failed {kind} ({detail}); records up to LSN {durable_lsn} are stored, \
         nothing later is accepted until restart"
    )]
    Poisoned {
        kind: PoisonKind,
        detail: Arc<str>,
        durable_lsn: u64,
    },

    /// Damage that recovery must not cut: in a segment other than the last one, or a
    /// segment header that is broken with records after it. Acknowledged records would be
    /// lost by going on, so `open` refuses and changes nothing. See `docs/operations.md`,
    /// "The log is damaged".
    #[error(
        "segment {} is damaged at offset {offset}: {reason}; it is not a torn tail, so opening would drop \
         acknowledged records: the log is left as it is and does not open (run `ringbearer wal verify`; \
         docs/operations.md, \"The log is damaged\")",
        segment.display()
    )]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: StopReason,
    },

    /// Damage in the last segment with a valid commit after it. Each commit is synced before
    /// the next one starts, so the damaged bytes were synced (acknowledged) too: this is not
    /// a torn write, and cutting there would delete acknowledged records. `open` refuses
    /// and changes nothing.
    #[error(
        "segment {} is damaged at offset {offset}: {reason}; a valid commit follows at offset {valid_at} \
         (LSN {valid_lsn}), so this is not a torn write but damage to acknowledged records: the log is left \
         as it is and does not open (run `ringbearer wal verify`; docs/operations.md, \"The log is damaged\")",
        segment.display()
    )]
    DamagedBeforeValid {
        segment: PathBuf,
        offset: u64,
        reason: StopReason,
        valid_at: u64,
        valid_lsn: u64,
    },

    /// Segments do not continue each other (a missing or stray segment file).
    #[error(
        "segment {} starts at LSN {found} but LSN {expected} was expected: a segment is missing or stray \
         (run `ringbearer wal verify`; docs/operations.md, \"The log is damaged\")",
        segment.display()
    )]
    Sequence {
        segment: PathBuf,
        expected: u64,
        found: u64,
    },

    /// The oldest segments are missing: the start file says the log begins at `expected`,
    /// but no segment starts there (`found`: the first segment present, if any).
    #[error(
        "segment {} is missing from {}: the log's START file says it begins at LSN {expected}, but {}; \
         the log does not open (run `ringbearer wal verify`; docs/operations.md, \"The log is damaged\")",
        crate::format::segment_file_name(*expected),
        dir.display(),
        match found {
            Some(f) => format!("the first segment present is {}", crate::format::segment_file_name(*f)),
            None => "no segment is present".to_string(),
        }
    )]
    MissingSegment {
        dir: PathBuf,
        expected: u64,
        found: Option<u64>,
    },

    /// The start file is damaged, or missing from a log that must have one.
    #[error(
        "{}: {problem}; the log does not open (run `ringbearer wal verify`; docs/operations.md, \
         \"The log is damaged\")",
        path.display()
    )]
    StartFile { path: PathBuf, problem: String },

    /// An I/O error outside the commit path (opening, recovery, reclaim). Does not poison.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: Arc<io::Error>,
    },

    /// `durable` was asked about an LSN that was never handed out.
    #[error("LSN {lsn} has not been appended (next is {next})")]
    UnknownLsn { lsn: u64, next: u64 },

    /// The log is closing or its handle was dropped.
    #[error("write-ahead log closed")]
    Closed,
}

impl WalError {
    /// True when the disk (or quota) is full: the server answers `WS_OVERLOADED`, retryable,
    /// rather than `WS_INTERNAL`.
    pub fn is_storage_full(&self) -> bool {
        matches!(
            self,
            WalError::Poisoned {
                kind: PoisonKind::StorageFull,
                ..
            }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// What poisoned the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonKind {
    /// ENOSPC or EDQUOT from a write or a sync.
    StorageFull,
    /// A write failed or was short.
    Write,
    /// fdatasync failed: the kernel may have dropped the data, so retrying could
    /// acknowledge what is not stored.
    Sync,
    /// Creating the next segment failed.
    Rotate,
}

impl fmt::Display for PoisonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoisonKind::StorageFull => "write (storage full)",
            PoisonKind::Write => "write",
            PoisonKind::Sync => "fdatasync",
            PoisonKind::Rotate => "segment rotation",
        })
    }
}

/// Linux errno values (asm-generic), named here rather than adding libc for two numbers.
pub(crate) const ENOSPC: i32 = 28;
pub(crate) const EDQUOT: i32 = 122;

/// ENOSPC / EDQUOT.
pub(crate) fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}
