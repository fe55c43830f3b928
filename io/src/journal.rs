//! The owner shard's durability hook (SPEC §2.5): where a published message is stored
//! before anyone hears of it. `io` defines the trait; `server/` plugs in the write-ahead log
//! from `ringbearer-persist` (the two crates do not depend on each other). With no journal
//! (`memory` policy) a message is durable as soon as the owner appends it.
//!
//! The contract the shard relies on: `append` assigns positions in call order and never
//! awaits; `durable(pos)` resolves once everything appended up to `pos` is stored, and many
//! waiters share one sync (group commit); after a failure, every later call fails too (a
//! poisoned log is never retried).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// Too much is waiting to be stored; retry later (`WS_OVERLOADED`).
    Backpressure(String),
    /// Storing failed (I/O error, full disk, poisoned log); nothing new is accepted
    /// (`WS_INTERNAL`, retryable: another node or a repaired disk may take it).
    Failed(String),
}

/// One shard's log. Not `Send`: it lives on its shard's executor.
pub trait Journal {
    /// Queues a message frame; returns the position to wait for.
    fn append(&self, channel: &str, id: u64, ts_ms: u64, frame: &[u8])
        -> Result<u64, JournalError>;
    /// Resolves once everything appended up to `pos` is stored under the policy.
    fn durable(&self, pos: u64) -> LocalBoxFuture<'_, Result<(), JournalError>>;
}

/// Opens each shard's journal on that shard's executor.
pub trait JournalFactory: Send + Sync {
    fn open(&self, shard: u32) -> LocalBoxFuture<'static, Result<Rc<dyn Journal>, String>>;
}
