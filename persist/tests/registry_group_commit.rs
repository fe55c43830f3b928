//! Proves group commit keeps each call's outcome its own: calls queued together commit in
//! one transaction, no call is answered before that commit, and a call that fails inside
//! the group (a foreign-key violation) is rolled back alone while the others are stored.

mod registry_common;

use futures_lite::future::poll_once;
use registry_common::*;
use ringbearer_persist::registry::{
    AuditAction, AuditEntry, AuditQuery, IdempotencyRecord, RegistryError,
};

const CH: &str = "wedding:main:w-1";

fn key(channel: &str, k: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        channel: channel.into(),
        key: k.into(),
        message_id: 7,
        created_at_ms: 1_000,
    }
}

#[test]
fn a_failing_call_does_not_take_its_group_down() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    wait(reg.upsert_channel(channel(CH))).unwrap();

    let lock = WriteLock::take(&path);
    let mut first = reg.upsert_channel(channel("wedding:main:w-2"));
    let mut good_key = reg.put_idempotency(key(CH, "k-ok"));
    let mut orphan_key = reg.put_idempotency(key("wedding:main:w-404", "k-bad"));
    let mut subscription = reg.upsert_subscription(sub(CH, "u-1", 3));
    let mut audit = reg.audit(AuditEntry {
        at_ms: 5,
        actor_user_id: "u-1".into(),
        actor_org: "org-a".into(),
        action: AuditAction::Subscribe,
        channel: Some(CH.into()),
        channel_org: None,
        detail: serde_json::json!({}),
    });
    // Nothing is answered while nothing can commit.
    assert!(wait(poll_once(&mut first)).is_none());
    assert!(wait(poll_once(&mut good_key)).is_none());
    assert!(wait(poll_once(&mut orphan_key)).is_none());
    assert!(wait(poll_once(&mut subscription)).is_none());
    assert!(wait(poll_once(&mut audit)).is_none());
    lock.release();

    wait(first).unwrap();
    wait(good_key).unwrap();
    let e = wait(orphan_key).unwrap_err();
    assert!(
        matches!(&e, RegistryError::Invalid(m) if m.contains("wedding:main:w-404")),
        "{e:?}"
    );
    wait(subscription).unwrap();
    wait(audit).unwrap();

    assert_eq!(wait(reg.load_channels()).unwrap().rows.len(), 2);
    let keys = wait(reg.load_idempotency(0)).unwrap().rows;
    assert_eq!(keys, vec![key(CH, "k-ok")]);
    assert_eq!(
        wait(reg.load_subscriptions(CH)).unwrap().rows,
        vec![sub(CH, "u-1", 3)]
    );
    assert_eq!(
        wait(reg.query_audit(AuditQuery::default()))
            .unwrap()
            .rows
            .len(),
        1
    );
    reg.close().unwrap();
}
