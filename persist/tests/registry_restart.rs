//! Proves the registry survives restarts: everything answered before a `close`, before the
//! last handle is dropped without `close`, or before the process is killed with SIGKILL is
//! there when the file is opened again — channels, weddings, subscriptions with their
//! cursors, idempotency keys and the audit log.

mod registry_common;

use registry_common::*;
use ringbearer_persist::registry::{
    AuditAction, AuditEntry, AuditQuery, CursorAck, EventDate, IdempotencyRecord, Registry,
    WeddingRecord,
};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CH: &str = "wedding:main:w-1";

fn wedding() -> WeddingRecord {
    WeddingRecord {
        wedding_id: "w-1".into(),
        organization_id: "org-a".into(),
        event_date: EventDate::new(2026, 6, 13).unwrap(),
        time_zone: "Europe/Lisbon".into(),
        updated_at_ms: 42,
        ceremony_time: None,
        key_roles: Vec::new(),
        coordination_channel: None,
    }
}

fn key() -> IdempotencyRecord {
    IdempotencyRecord {
        channel: CH.into(),
        key: "k-1".into(),
        message_id: 17,
        created_at_ms: 1_000,
    }
}

fn audit() -> AuditEntry {
    AuditEntry {
        at_ms: 9,
        actor_user_id: "u-1".into(),
        actor_org: "org-a".into(),
        action: AuditAction::Create,
        channel: Some(CH.into()),
        channel_org: None,
        detail: serde_json::json!({"type": "private"}),
    }
}

fn write_everything(reg: &Registry) {
    wait(reg.upsert_channel(channel(CH))).unwrap();
    wait(reg.upsert_wedding(wedding())).unwrap();
    wait(reg.upsert_subscription(sub(CH, "u-1", 0))).unwrap();
    wait(reg.advance_cursors(vec![CursorAck {
        channel: CH.into(),
        org: "org-1".into(),
        user_id: "u-1".into(),
        cursor: 12,
    }]))
    .unwrap();
    wait(reg.put_idempotency(key())).unwrap();
    wait(reg.audit(audit())).unwrap();
}

fn check_everything(reg: &Registry) {
    let channels = wait(reg.load_channels()).unwrap();
    assert_eq!(channels.rows.len(), 1);
    assert!(same_channel(&channels.rows[0], &channel(CH)));
    assert_eq!(wait(reg.get_wedding("w-1")).unwrap(), Some(wedding()));
    assert_eq!(
        wait(reg.load_all_subscriptions()).unwrap().rows,
        vec![sub(CH, "u-1", 12)]
    );
    assert_eq!(wait(reg.load_idempotency(0)).unwrap().rows, vec![key()]);
    let log = wait(reg.query_audit(AuditQuery::default())).unwrap().rows;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].entry, audit());
}

#[test]
fn everything_survives_close_and_reopen() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    write_everything(&reg);
    reg.close().unwrap();
    let reg = open(&path);
    check_everything(&reg);
    reg.close().unwrap();
}

#[test]
fn everything_survives_dropping_without_close() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    write_everything(&reg);
    drop(reg);
    let reg = open(&path);
    check_everything(&reg);
    reg.close().unwrap();
}

/// Set in the child process to the registry path; unset, `child_acks_until_killed` is a
/// no-op test.
const CHILD_ENV: &str = "RB_REGISTRY_KILL_CHILD";

#[test]
fn child_acks_until_killed() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let reg = open(std::path::Path::new(&path));
    let mut out = std::io::stdout().lock();
    for cursor in 1u64.. {
        // Ten acks in flight at once, so group commit is exercised while being killed.
        let replies: Vec<_> = (0..10)
            .map(|i| {
                reg.advance_cursors(vec![CursorAck {
                    channel: CH.into(),
                    org: "org-1".into(),
                    user_id: "u-1".into(),
                    cursor: cursor * 10 + i,
                }])
            })
            .collect();
        for r in replies {
            wait(r).unwrap();
        }
        writeln!(out, "acked {}", cursor * 10 + 9).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn answered_acks_survive_sigkill() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    write_everything(&reg);
    reg.close().unwrap();

    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_acks_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut last_acked = 0u64;
        // Kill at a different point each round.
        let wanted = 20 + round * 37;
        let mut seen = 0;
        while seen < wanted {
            let line = lines.next().expect("child output").unwrap();
            if let Some(n) = line.strip_prefix("acked ") {
                last_acked = n.parse().unwrap();
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let reg = open(&path);
        let subs = wait(reg.load_all_subscriptions()).unwrap().rows;
        assert!(
            subs[0].cursor >= last_acked,
            "round {round}: cursor {} < acked {last_acked}",
            subs[0].cursor
        );
        // The rest is intact too.
        assert_eq!(wait(reg.get_wedding("w-1")).unwrap(), Some(wedding()));
        reg.close().unwrap();
    }
}
