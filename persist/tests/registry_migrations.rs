//! Proves the registry's schema handling: an empty file is migrated to the current version
//! in WAL mode, reopening changes nothing and keeps the data, a schema newer than the binary
//! is refused with `TooNew` (and left untouched), and another application's database is
//! refused rather than written into.

mod registry_common;

use registry_common::*;
use ringbearer_persist::registry::{Registry, RegistryError, APPLICATION_ID, SCHEMA_VERSION};

fn header(path: &std::path::Path) -> (i64, i32, String) {
    let c = rusqlite::Connection::open(path).unwrap();
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let app: i32 = c
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    (v, app, mode)
}

fn tables(path: &std::path::Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut s = c
        .prepare("SELECT name FROM sqlite_schema WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    let names = s.query_map([], |r| r.get(0)).unwrap();
    names.map(Result::unwrap).collect()
}

#[test]
fn an_empty_file_is_migrated_and_reopening_is_idempotent() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    wait(reg.upsert_channel(channel("wedding:main:w-1"))).unwrap();
    reg.close().unwrap();

    let (version, app, mode) = header(&path);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(app, APPLICATION_ID);
    assert_eq!(mode, "wal", "WAL journal mode is persistent in the file");
    let first = tables(&path);
    for t in [
        "channels",
        "weddings",
        "subscriptions",
        "idempotency_keys",
        "audit_log",
    ] {
        assert!(first.iter().any(|n| n == t), "{t} in {first:?}");
    }
    for i in ["audit_log_by_channel", "audit_log_by_actor"] {
        assert!(first.iter().any(|n| n == i), "{i} in {first:?}");
    }

    for _ in 0..2 {
        let reg = open(&path);
        let loaded = wait(reg.load_channels()).unwrap();
        assert_eq!(loaded.rows.len(), 1);
        assert!(loaded.warnings.is_empty());
        reg.close().unwrap();
        assert_eq!(header(&path).0, SCHEMA_VERSION);
        assert_eq!(tables(&path), first);
    }
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let (_dir, path) = temp_db();
    open(&path).close().unwrap();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match Registry::open(&path, config()) {
        Err(RegistryError::TooNew { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    let e = Registry::open(&path, config()).unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");
    assert_eq!(header(&path).0, SCHEMA_VERSION + 1);
}

#[test]
fn another_applications_database_is_refused() {
    let (_dir, path) = temp_db();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER);")
            .unwrap();
    }
    let e = Registry::open(&path, config()).unwrap_err();
    assert!(
        matches!(&e, RegistryError::Invalid(m) if m.contains("not a Ringbearer registry")),
        "{e:?}"
    );

    let (_dir2, other) = temp_db();
    {
        let c = rusqlite::Connection::open(&other).unwrap();
        c.pragma_update(None, "application_id", 0x1234).unwrap();
    }
    let e = Registry::open(&other, config()).unwrap_err();
    assert!(matches!(e, RegistryError::Invalid(_)), "{e:?}");
}
