//! Helpers shared by the registry tests: temporary registries, sample records, a second
//! SQLite connection that holds the write lock (to keep the registry thread busy without a
//! test-only hook), and `wait` to drive a registry `Reply` from a plain thread.
#![allow(dead_code)]

use ringbearer_core::access::ChannelAccess;
use ringbearer_core::channel_state::ChannelMeta;
use ringbearer_core::{ChannelName, ChannelType, Permissions, Role};
use ringbearer_persist::registry::{Registry, RegistryConfig, SubscriptionRecord};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Drives a future to completion on this thread (the registry needs no runtime).
pub fn wait<F: Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

/// A fresh directory and the registry path inside it (the file does not exist yet).
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("rb-registry-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("registry.sqlite3");
    (dir, path)
}

/// Test bounds: a generous busy timeout, because tests hold the lock on purpose.
pub fn config() -> RegistryConfig {
    RegistryConfig {
        busy_timeout_ms: 30_000,
        ..RegistryConfig::default()
    }
}

pub fn open(path: &Path) -> Registry {
    Registry::open(path, config()).expect("open registry")
}

/// A channel of wedding `w-{n}` with distinctive values in every field.
pub fn channel(name: &str) -> ChannelMeta {
    let kind = ChannelType::Private;
    let mut permissions = Permissions::default_for(kind);
    permissions.admin.push(Role::Coordinator);
    ChannelMeta {
        id: format!("ch_{}", name.replace(':', "_")),
        name: ChannelName::parse(name).expect("valid channel name"),
        access: ChannelAccess {
            org: "org-a".into(),
            wedding_id: Some("w-1".into()),
            kind,
            permissions,
            creator: "u-creator".into(),
            members: vec!["u-1".into(), "u-2".into()],
        },
        max_subscribers: 250,
        retention_ms: 86_400_000,
        created_at_ms: 1_795_341_600_000,
        epoch: "e-7f3a".into(),
    }
}

pub fn sub(channel: &str, user: &str, cursor: u64) -> SubscriptionRecord {
    SubscriptionRecord {
        channel: channel.into(),
        org: "org-1".into(),
        user_id: user.into(),
        cursor,
        subscribed_at_ms: 1_795_341_600_000,
        role: None,
    }
}

/// `ChannelMeta` has no `PartialEq`; its `Debug` shows every field.
pub fn same_channel(a: &ChannelMeta, b: &ChannelMeta) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// A second connection holding SQLite's write lock (as a backup tool would): the registry
/// thread's next transaction waits in the busy handler until this is released.
pub struct WriteLock(Option<rusqlite::Connection>);

impl WriteLock {
    pub fn take(path: &Path) -> WriteLock {
        let c = rusqlite::Connection::open(path).expect("second connection");
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").expect("write lock");
        WriteLock(Some(c))
    }

    pub fn release(mut self) {
        if let Some(c) = self.0.take() {
            c.execute_batch("ROLLBACK").unwrap();
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.execute_batch("ROLLBACK");
        }
    }
}
