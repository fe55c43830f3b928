//! Proves a full disk (SQLITE_FULL, made here by capping the file with `max_db_bytes`) gives
//! a retryable `Storage` error that says so, never acknowledges a write that was not stored
//! (also for the calls that shared its transaction), leaves what was stored readable, and
//! recovers once space is freed.

mod registry_common;

use registry_common::*;
use ringbearer_persist::registry::{
    AuditAction, AuditEntry, AuditQuery, Registry, RegistryConfig, RegistryError,
};

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

fn stored_times(reg: &Registry) -> Vec<u64> {
    let mut t: Vec<u64> = wait(reg.query_audit(AuditQuery {
        limit: 1000,
        ..AuditQuery::default()
    }))
    .unwrap()
    .rows
    .iter()
    .map(|r| r.entry.at_ms)
    .collect();
    t.sort_unstable();
    t
}

#[test]
fn a_full_disk_is_a_clear_error_and_never_a_false_ack() {
    let (_dir, path) = temp_db();
    let reg = Registry::open(
        &path,
        RegistryConfig {
            max_db_bytes: Some(256 * 1024),
            ..config()
        },
    )
    .unwrap();
    wait(reg.audit(entry(1, 10))).unwrap();

    // Queued together behind a held lock so they share one group: a small write, one that
    // cannot fit, another small one.
    let lock = WriteLock::take(&path);
    let before = reg.audit(entry(2, 10));
    let big = reg.audit_batch((0..100).map(|i| entry(1000 + i, 10_000)).collect());
    let after = reg.audit(entry(3, 10));
    lock.release();
    let (before, big, after) = (wait(before), wait(big), wait(after));

    let e = big.unwrap_err();
    assert!(
        matches!(&e, RegistryError::Storage(m) if m.contains("disk full")),
        "{e:?}"
    );
    assert!(e.is_retryable());
    // Whatever SQLite rolled back, an Ok answer means stored and an error means not.
    let stored = stored_times(&reg);
    assert!(stored.contains(&1));
    assert!(
        !stored.iter().any(|t| *t >= 1000),
        "nothing of the failed batch"
    );
    assert_eq!(
        before.is_ok(),
        stored.contains(&2),
        "{before:?} vs {stored:?}"
    );
    assert_eq!(
        after.is_ok(),
        stored.contains(&3),
        "{after:?} vs {stored:?}"
    );

    // Fill to the brim one record at a time until the disk is full.
    let mut at = 10_000;
    let full = loop {
        at += 1;
        match wait(reg.audit(entry(at, 2_000))) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&full, RegistryError::Storage(m) if m.contains("disk full")),
        "{full:?}"
    );
    let stored = stored_times(&reg);
    assert!(stored.contains(&(at - 1)) && !stored.contains(&at));

    // Free space: writes work again.
    assert!(wait(reg.expire_audit(at)).unwrap() > 0);
    wait(reg.audit(entry(at + 1, 2_000))).unwrap();
    assert_eq!(stored_times(&reg), vec![at + 1]);
    reg.close().unwrap();
}
