//! The registry's one error type, split by what the caller should do, and the mapping from
//! SQLite's result codes onto it. No I/O here.

use rusqlite::ErrorCode;

/// What went wrong with a registry call. Expected conditions (a missing row, an ack for a
/// subscription that is gone) are not errors: they are `None`, `false` or a count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The caller's input cannot be stored (out of range, too long, a channel that is not
    /// registered, a file that is not a Ringbearer registry). Retrying the same call fails
    /// the same way.
    #[error("registry refused the input: {0}")]
    Invalid(String),
    /// The registry's queue is full: nothing was queued. Retry later or shed load
    /// (`WS_OVERLOADED`, retryable).
    #[error("registry overloaded: its queue is full; nothing was stored, retry later")]
    Overloaded,
    /// The registry was closed (or its thread is gone): nothing was stored.
    #[error("registry closed")]
    Closed,
    /// SQLite could not do the work: I/O error, disk full, lock held by another process
    /// past the busy timeout. Nothing of this call was stored; retrying may succeed.
    #[error("registry storage error: {0}")]
    Storage(String),
    /// The database file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB, a failed integrity
    /// check) or a row holds a value this binary never writes. Restore from a backup.
    #[error("registry database is corrupt: {0}")]
    Corrupt(String),
    /// The database was written by a newer binary (schema `found`, this one knows up to
    /// `supported`); it is refused rather than misread. Run the newer binary.
    #[error(
        "registry schema version {found} is newer than this binary supports ({supported}); \
         run a newer ringbearer or restore a backup made by this version"
    )]
    TooNew { found: i64, supported: i64 },
}

impl RegistryError {
    /// Whether the same call may succeed later (`retryable` in the client's error).
    pub fn is_retryable(&self) -> bool {
        matches!(self, RegistryError::Overloaded | RegistryError::Storage(_))
    }

    /// The error to give a job whose work succeeded but whose transaction did not commit.
    pub(crate) fn not_committed(cause: &RegistryError) -> RegistryError {
        match cause {
            RegistryError::Corrupt(m) => RegistryError::Corrupt(m.clone()),
            other => RegistryError::Storage(format!(
                "not stored: the transaction it shared with other writes did not commit: {other}"
            )),
        }
    }
}

/// Extended result code of a failed foreign key constraint (SQLITE_CONSTRAINT_FOREIGNKEY).
const CONSTRAINT_FOREIGNKEY: i32 = 787;

/// Whether `e` is a failed foreign key: a row names a channel that is not registered.
pub(crate) fn is_foreign_key(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == CONSTRAINT_FOREIGNKEY)
}

/// Maps a SQLite error onto what the caller should do about it.
pub(crate) fn from_sqlite(e: rusqlite::Error) -> RegistryError {
    let rusqlite::Error::SqliteFailure(f, _) = &e else {
        return match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => {
                RegistryError::Corrupt(format!("a stored value has an unexpected type: {e}"))
            }
            other => RegistryError::Storage(other.to_string()),
        };
    };
    match f.code {
        ErrorCode::DatabaseCorrupt => RegistryError::Corrupt(format!("SQLITE_CORRUPT: {e}")),
        ErrorCode::NotADatabase => {
            RegistryError::Corrupt(format!("SQLITE_NOTADB (not an SQLite database): {e}"))
        }
        ErrorCode::DiskFull => RegistryError::Storage(format!(
            "disk full (SQLITE_FULL): the registry could not write; nothing of this call was \
             stored; free space (or raise max_db_bytes) and retry: {e}"
        )),
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => RegistryError::Storage(format!(
            "the registry database is locked by another connection for longer than \
             busy_timeout_ms: {e}"
        )),
        ErrorCode::ConstraintViolation => RegistryError::Invalid(format!("constraint: {e}")),
        ErrorCode::SystemIoFailure => {
            RegistryError::Storage(format!("I/O error (SQLITE_IOERR): {e}"))
        }
        ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied => {
            RegistryError::Storage(format!("cannot write the registry file: {e}"))
        }
        _ => RegistryError::Storage(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn sqlite_codes_map_by_what_the_caller_should_do() {
        // Primary result codes from sqlite3.h.
        const SQLITE_BUSY: i32 = 5;
        const SQLITE_IOERR: i32 = 10;
        const SQLITE_CORRUPT: i32 = 11;
        const SQLITE_FULL: i32 = 13;
        const SQLITE_NOTADB: i32 = 26;
        let full = from_sqlite(failure(SQLITE_FULL));
        assert!(matches!(&full, RegistryError::Storage(m) if m.contains("disk full")));
        assert!(full.is_retryable());
        assert!(matches!(
            from_sqlite(failure(SQLITE_CORRUPT)),
            RegistryError::Corrupt(_)
        ));
        assert!(matches!(
            from_sqlite(failure(SQLITE_NOTADB)),
            RegistryError::Corrupt(_)
        ));
        assert!(matches!(
            from_sqlite(failure(SQLITE_IOERR)),
            RegistryError::Storage(_)
        ));
        assert!(
            matches!(from_sqlite(failure(SQLITE_BUSY)), RegistryError::Storage(m) if m.contains("locked"))
        );
        let fk = failure(CONSTRAINT_FOREIGNKEY);
        assert!(is_foreign_key(&fk));
        assert!(matches!(from_sqlite(fk), RegistryError::Invalid(_)));
        assert!(!RegistryError::Invalid(String::new()).is_retryable());
    }
}
