//! Proves a damaged registry file gives a clear `Corrupt` error, never a panic: a garbled
//! header is refused at open, a garbled page is found by the open-time integrity check, and
//! with that check off the damage surfaces as `Corrupt` on the call that reads it while the
//! registry thread keeps answering.

mod registry_common;

use registry_common::*;
use ringbearer_persist::registry::{
    AuditAction, AuditEntry, AuditQuery, Registry, RegistryConfig, RegistryError,
};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// A registry with enough audit rows to span a few hundred pages, closed (so SQLite's WAL
/// is checkpointed into the main file and removed).
fn filled(path: &Path) -> u64 {
    let reg = open(path);
    let batch: Vec<_> = (0..2000u64)
        .map(|i| AuditEntry {
            at_ms: i,
            actor_user_id: format!("u-{}", i % 7),
            actor_org: "org-a".into(),
            action: AuditAction::Admin,
            channel: Some("wedding:main:w-1".into()),
            channel_org: None,
            detail: serde_json::json!({ "pad": "x".repeat(400), "i": i }),
        })
        .collect();
    wait(reg.audit_batch(batch)).unwrap();
    reg.close().unwrap();
    assert!(
        !path.with_extension("sqlite3-wal").exists(),
        "WAL checkpointed on close"
    );
    std::fs::metadata(path).unwrap().len()
}

fn overwrite(path: &Path, at: u64, len: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&vec![0xA5; len]).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_garbled_header_is_refused_at_open() {
    let (_dir, path) = temp_db();
    filled(&path);
    overwrite(&path, 0, 100);
    let e = Registry::open(&path, config()).unwrap_err();
    assert!(matches!(&e, RegistryError::Corrupt(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("corrupt") && msg.contains("registry.sqlite3"),
        "{msg}"
    );
}

#[test]
fn a_garbled_page_is_found_at_open() {
    let (_dir, path) = temp_db();
    let size = filled(&path);
    overwrite(&path, size / 2 / 4096 * 4096, 3 * 4096);
    let e = Registry::open(&path, config()).unwrap_err();
    assert!(matches!(&e, RegistryError::Corrupt(_)), "{e:?}");
}

#[test]
fn without_the_open_check_damage_fails_the_call_not_the_thread() {
    let (_dir, path) = temp_db();
    // The empty registry's pages (schema, every table's root) stay readable: its size.
    open(&path).close().unwrap();
    let schema = std::fs::metadata(&path).unwrap().len();
    let size = filled(&path);
    // Every page written after: the audit rows' leaves.
    overwrite(&path, schema, (size - schema) as usize);
    let reg = Registry::open(
        &path,
        RegistryConfig {
            check_on_open: false,
            ..config()
        },
    )
    .unwrap();
    let e = wait(reg.query_audit(AuditQuery {
        limit: 1000,
        ..AuditQuery::default()
    }))
    .unwrap_err();
    assert!(matches!(&e, RegistryError::Corrupt(_)), "{e:?}");
    assert!(!e.is_retryable());
    // The thread is alive: later calls get answers from SQLite, not `Closed`.
    for _ in 0..3 {
        let r = wait(reg.load_channels());
        assert!(!matches!(r, Err(RegistryError::Closed)), "{r:?}");
    }
    wait(reg.upsert_channel(channel("wedding:main:w-9"))).ok();
    reg.close().unwrap();
}
