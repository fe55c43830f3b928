//! Proves rows this binary never writes (put there by hand, another tool, or a bug) are
//! skipped and reported, not a panic: `load_*` return the good rows plus a warning naming
//! each bad one, and a single-row read returns `Corrupt` naming the row.

mod registry_common;

use registry_common::*;
use ringbearer_persist::registry::{AuditQuery, RegistryError};

#[test]
fn bad_rows_are_skipped_and_named() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    wait(reg.upsert_channel(channel("wedding:main:w-1"))).unwrap();
    {
        // Valid SQL, valid JSON, wrong for Ringbearer.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            r#"
            INSERT INTO channels VALUES ('Wedding:BAD name', 'ch_x', 'org-a', NULL, 'shared',
                '{"read":[],"write":[],"admin":[]}', 'u', '[]', 1, 1, 1, 'e');
            INSERT INTO channels VALUES ('wedding:main:w-2', 'ch_y', 'org-a', NULL, 'shared',
                '{"read":["pope"],"write":[],"admin":[]}', 'u', '[]', 1, 1, 1, 'e');
            INSERT INTO channels VALUES ('wedding:main:w-3', 'ch_z', 'org-a', NULL, 'secret',
                '{"read":[],"write":[],"admin":[]}', 'u', '{}', 1, 1, 1, 'e');
            INSERT INTO weddings (wedding_id, organization_id, event_date, time_zone, updated_at_ms)
                VALUES ('w-bad', 'org-a', '2026-02-30', 'UTC', 1);
            INSERT INTO weddings (wedding_id, organization_id, event_date, time_zone, updated_at_ms)
                VALUES ('w-good', 'org-a', '2026-02-28', 'UTC', 1);
            INSERT INTO weddings (wedding_id, organization_id, event_date, time_zone, updated_at_ms,
                key_roles) VALUES ('w-roles', 'org-a', '2026-02-28', 'UTC', 1, '{"a": 1}');
            INSERT INTO audit_log (at_ms, actor_user_id, actor_org, action, channel, detail)
                VALUES (1, 'u', 'org-a', 'teleport', NULL, '{}'),
                       (2, 'u', 'org-a', 'admin', NULL, '{}');
            "#,
        )
        .unwrap();
    }

    let channels = wait(reg.load_channels()).unwrap();
    assert_eq!(channels.rows.len(), 1);
    assert_eq!(channels.rows[0].name.as_str(), "wedding:main:w-1");
    let mut warned: Vec<String> = channels.warnings.iter().map(|w| w.to_string()).collect();
    warned.sort();
    assert_eq!(warned.len(), 3, "{warned:?}");
    assert!(
        warned[0].contains("\"Wedding:BAD name\"") && warned[0].contains("column name"),
        "{}",
        warned[0]
    );
    assert!(
        warned[1].contains("\"wedding:main:w-2\"") && warned[1].contains("permissions"),
        "{}",
        warned[1]
    );
    assert!(
        warned[2].contains("\"wedding:main:w-3\"") && warned[2].contains("type"),
        "{}",
        warned[2]
    );
    assert!(channels.warnings.iter().all(|w| w.table == "channels"));

    let weddings = wait(reg.list_weddings(None)).unwrap();
    assert_eq!(weddings.rows.len(), 1);
    assert_eq!(weddings.warnings.len(), 2);
    assert!(weddings.warnings.iter().any(|w| w.key.contains("w-bad")));
    // A watchdog plan whose key_roles is JSON but no list (schema version 5).
    assert!(
        weddings
            .warnings
            .iter()
            .any(|w| w.key.contains("w-roles") && w.problem.contains("key_roles")),
        "{:?}",
        weddings.warnings
    );
    let e = wait(reg.get_wedding("w-bad")).unwrap_err();
    assert!(
        matches!(&e, RegistryError::Corrupt(m) if m.contains("w-bad") && m.contains("event_date")),
        "{e:?}"
    );
    assert!(wait(reg.get_wedding("w-good")).unwrap().is_some());

    let audit = wait(reg.query_audit(AuditQuery::default())).unwrap();
    assert_eq!(audit.rows.len(), 1);
    assert_eq!(audit.warnings.len(), 1);
    assert!(audit.warnings[0].problem.contains("teleport"));
    reg.close().unwrap();
}
