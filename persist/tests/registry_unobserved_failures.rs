//! Proves a registry write that fails after its caller stopped waiting (the shards'
//! fire-and-forget subscriptions, cursors and audit records) is never silent: it is logged at
//! `error` with the reason and counted in `Registry::unobserved_failures` — both a job that
//! fails on the registry thread (a subscription whose channel row is missing, a full disk)
//! and a call refused at the door (a closed registry).

mod registry_common;

use registry_common::*;
use ringbearer_persist::registry::{AuditAction, AuditEntry, Registry, RegistryConfig};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Collects every log line of the process (the registry logs from its own thread, so a
/// thread-local subscriber would not see it).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn entry(at_ms: u64, pad: usize) -> AuditEntry {
    AuditEntry {
        at_ms,
        actor_user_id: "u-1".into(),
        actor_org: "org-a".into(),
        action: AuditAction::Admin,
        channel: None,
        channel_org: None,
        detail: serde_json::json!({ "pad": "x".repeat(pad) }),
    }
}

#[test]
fn a_failed_write_nobody_waits_for_is_logged_and_counted() {
    let log = Captured::default();
    let sink = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();

    let (_dir, path) = temp_db();
    let reg = Registry::open(
        &path,
        RegistryConfig {
            max_db_bytes: Some(256 * 1024),
            ..config()
        },
    )
    .unwrap();

    // 1. A subscription whose channel row is not (yet) stored: the foreign key refuses it.
    drop(reg.upsert_subscription(sub("wedding:main:w-404", "u-1", 0)));
    // The queue is FIFO: once a later call is answered, the dropped one has been run.
    wait(reg.upsert_channel(channel("wedding:main:w-1"))).unwrap();
    assert_eq!(reg.unobserved_failures(), 1);
    let text = log.text();
    assert!(
        text.contains("ERROR")
            && text.contains("registry write failed")
            && text.contains("wedding:main:w-404"),
        "{text}"
    );

    // 2. A full disk (the file capped by `max_db_bytes`, as registry_disk_full.rs does).
    drop(reg.audit_batch((0..100).map(|i| entry(i, 10_000)).collect()));
    wait(reg.upsert_subscription(sub("wedding:main:w-1", "u-1", 0))).unwrap();
    assert_eq!(reg.unobserved_failures(), 2);
    assert!(log.text().contains("disk full"), "{}", log.text());

    // 3. Refused at the door: the registry is closed.
    reg.close().unwrap();
    drop(reg.upsert_subscription(sub("wedding:main:w-1", "u-2", 0)));
    assert_eq!(reg.unobserved_failures(), 3);
    assert!(log.text().contains("registry closed"), "{}", log.text());

    // An answer somebody heard is theirs to handle: not counted twice.
    assert!(wait(reg.upsert_subscription(sub("wedding:main:w-1", "u-3", 0))).is_err());
    assert_eq!(reg.unobserved_failures(), 3);
}
