//! Ringbearer's durable storage: the per-shard write-ahead log and the SQLite registry.
//!
//! Not built yet: the foundation keeps each channel's window in memory (see
//! `ringbearer_core::window`). The durability issue fills this crate; `server/` will compose it
//! with `io/`, which never depends on it.
