//! Proves every registry table round-trips: what is written is read back field for field
//! (channels, weddings, subscriptions, idempotency keys, audit records); upserts replace,
//! deletes remove (a channel's subscriptions and keys with it), and input the registry
//! cannot store is refused with `Invalid` before anything is queued.

mod registry_common;

use registry_common::*;
use ringbearer_core::ChannelType;
use ringbearer_persist::registry::{
    AuditAction, AuditEntry, AuditQuery, EventDate, IdempotencyRecord, RegistryError, WeddingRecord,
};
use serde_json::json;

#[test]
fn channels_round_trip_and_upsert_keeps_subscriptions() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    let a = channel("wedding:main:w-1");
    let mut b = channel("supplier:dashboard:s-9");
    b.access.wedding_id = None;
    b.access.kind = ChannelType::Broadcast;
    b.access.members = vec![];
    wait(reg.upsert_channel(a.clone())).unwrap();
    wait(reg.upsert_channel(b.clone())).unwrap();

    let loaded = wait(reg.load_channels()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.rows.len(), 2);
    // Ordered by name.
    assert!(same_channel(&loaded.rows[0], &b), "{:?}", loaded.rows[0]);
    assert!(same_channel(&loaded.rows[1], &a), "{:?}", loaded.rows[1]);

    // An upsert replaces the metadata and keeps the channel's subscriptions.
    wait(reg.upsert_subscription(sub("wedding:main:w-1", "u-1", 3))).unwrap();
    let mut a2 = a.clone();
    a2.max_subscribers = 10;
    a2.epoch = "e-second-life".into();
    a2.access.members.push("u-3".into());
    wait(reg.upsert_channel(a2.clone())).unwrap();
    let loaded = wait(reg.load_channels()).unwrap();
    assert!(same_channel(&loaded.rows[1], &a2));
    assert_eq!(
        wait(reg.load_subscriptions("wedding:main:w-1"))
            .unwrap()
            .rows
            .len(),
        1
    );

    assert!(wait(reg.delete_channel("supplier:dashboard:s-9")).unwrap());
    assert!(!wait(reg.delete_channel("supplier:dashboard:s-9")).unwrap());
    assert_eq!(wait(reg.load_channels()).unwrap().rows.len(), 1);
    reg.close().unwrap();
}

#[test]
fn weddings_round_trip() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    let w = |id: &str, org: &str, date: &str| WeddingRecord {
        wedding_id: id.into(),
        organization_id: org.into(),
        event_date: EventDate::parse(date).unwrap(),
        time_zone: "America/Argentina/Buenos_Aires".into(),
        updated_at_ms: 1_700_000_000_000,
        ceremony_time: None,
        key_roles: Vec::new(),
        coordination_channel: None,
    };
    wait(reg.upsert_wedding(w("w-2", "org-a", "2026-09-12"))).unwrap();
    wait(reg.upsert_wedding(w("w-1", "org-a", "2026-06-13"))).unwrap();
    wait(reg.upsert_wedding(w("w-3", "org-b", "2027-01-02"))).unwrap();

    assert_eq!(
        wait(reg.get_wedding("w-1")).unwrap(),
        Some(w("w-1", "org-a", "2026-06-13"))
    );
    assert_eq!(wait(reg.get_wedding("w-404")).unwrap(), None);

    let mut moved = w("w-1", "org-a", "2026-06-20");
    moved.time_zone = "Europe/London".into();
    moved.updated_at_ms += 1;
    // The watchdog plan (schema version 5) round-trips and is replaced by an upsert.
    moved.ceremony_time = Some("14:30".into());
    moved.key_roles = vec!["photographer".into(), "coordinator".into()];
    moved.coordination_channel = Some("wedding:ops:w-1".into());
    wait(reg.upsert_wedding(moved.clone())).unwrap();
    assert_eq!(wait(reg.get_wedding("w-1")).unwrap(), Some(moved.clone()));

    let org_a = wait(reg.list_weddings(Some("org-a"))).unwrap();
    assert!(org_a.warnings.is_empty());
    let ids: Vec<_> = org_a.rows.iter().map(|w| w.wedding_id.as_str()).collect();
    assert_eq!(ids, ["w-1", "w-2"], "ordered by event date");
    assert_eq!(wait(reg.list_weddings(None)).unwrap().rows.len(), 3);

    assert!(wait(reg.delete_wedding("w-3")).unwrap());
    assert_eq!(wait(reg.list_weddings(None)).unwrap().rows.len(), 2);

    let mut bad = w("w-9", "org-a", "2026-06-13");
    bad.time_zone = "../../etc/localtime".into();
    assert!(matches!(
        wait(reg.upsert_wedding(bad)),
        Err(RegistryError::Invalid(_))
    ));
    reg.close().unwrap();
}

#[test]
fn subscriptions_round_trip_and_go_with_their_channel() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    for c in ["wedding:main:w-1", "wedding:main:w-2"] {
        wait(reg.upsert_channel(channel(c))).unwrap();
    }
    wait(reg.upsert_subscription(sub("wedding:main:w-1", "u-b", 5))).unwrap();
    wait(reg.upsert_subscription(sub("wedding:main:w-1", "u-a", 0))).unwrap();
    wait(reg.upsert_subscription(sub("wedding:main:w-2", "u-a", 9))).unwrap();

    let one = wait(reg.load_subscriptions("wedding:main:w-1")).unwrap();
    assert_eq!(
        one.rows,
        vec![
            sub("wedding:main:w-1", "u-a", 0),
            sub("wedding:main:w-1", "u-b", 5)
        ]
    );
    let all = wait(reg.load_all_subscriptions()).unwrap();
    assert_eq!(all.rows.len(), 3);
    assert_eq!(all.rows[2], sub("wedding:main:w-2", "u-a", 9));

    // A repeated subscribe keeps the first subscribed_at_ms and never lowers the cursor.
    let mut again = sub("wedding:main:w-1", "u-b", 2);
    again.subscribed_at_ms += 60_000;
    wait(reg.upsert_subscription(again)).unwrap();
    let one = wait(reg.load_subscriptions("wedding:main:w-1")).unwrap();
    assert_eq!(one.rows[1], sub("wedding:main:w-1", "u-b", 5));

    assert!(wait(reg.delete_subscription("wedding:main:w-1", "org-1", "u-a")).unwrap());
    assert!(!wait(reg.delete_subscription("wedding:main:w-1", "org-1", "u-a")).unwrap());
    // Deleting the channel deletes its subscriptions.
    wait(reg.delete_channel("wedding:main:w-2")).unwrap();
    let all = wait(reg.load_all_subscriptions()).unwrap();
    assert_eq!(all.rows, vec![sub("wedding:main:w-1", "u-b", 5)]);

    // A subscription needs a registered channel.
    let e = wait(reg.upsert_subscription(sub("wedding:main:w-404", "u-a", 0))).unwrap_err();
    assert!(
        matches!(&e, RegistryError::Invalid(m) if m.contains("not in the registry")),
        "{e:?}"
    );
    // Ids past the registry's range are refused before queueing.
    let e = wait(reg.upsert_subscription(sub("wedding:main:w-1", "u-a", u64::MAX))).unwrap_err();
    assert!(matches!(e, RegistryError::Invalid(_)), "{e:?}");
    reg.close().unwrap();
}

/// Regression (found by io/tests/owner_model.rs): a channel whose creation never reached
/// the log (the process died first) leaves its row and subscriptions in the registry; a
/// new channel of the same name (a new `channel_id`, perhaps another organization's) must
/// not inherit them — after the next restart they would be its members, counted in its
/// `queued_count` and named in its `delivery_guarantees`. An upsert of the same channel
/// (same id: a checkpoint, a restart) keeps them.
#[test]
fn a_new_channel_of_an_old_name_starts_without_the_old_ones_subscriptions() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    let old = channel("venue:hall:v-1");
    wait(reg.upsert_channel(old.clone())).unwrap();
    wait(reg.upsert_subscription(sub("venue:hall:v-1", "u-a", 0))).unwrap();
    let key = IdempotencyRecord {
        channel: "venue:hall:v-1".into(),
        key: "k".into(),
        message_id: 1,
        created_at_ms: 1,
    };
    wait(reg.put_idempotency(key)).unwrap();
    // The same channel again: everything stays.
    wait(reg.upsert_channel(old.clone())).unwrap();
    assert_eq!(
        wait(reg.load_subscriptions("venue:hall:v-1"))
            .unwrap()
            .rows
            .len(),
        1
    );
    // Another channel of that name.
    let mut new = old;
    new.id = "ch_another_life".into();
    new.access.org = "org-c".into();
    wait(reg.upsert_channel(new.clone())).unwrap();
    assert!(wait(reg.load_subscriptions("venue:hall:v-1"))
        .unwrap()
        .rows
        .is_empty());
    assert!(wait(reg.load_idempotency(0)).unwrap().rows.is_empty());
    let loaded = wait(reg.load_channels()).unwrap();
    assert_eq!(loaded.rows, vec![new]);
    reg.close().unwrap();
}

#[test]
fn idempotency_keys_round_trip() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    wait(reg.upsert_channel(channel("wedding:main:w-1"))).unwrap();
    let key = |k: &str, id: u64, at: u64| IdempotencyRecord {
        channel: "wedding:main:w-1".into(),
        key: k.into(),
        message_id: id,
        created_at_ms: at,
    };
    wait(reg.put_idempotency(key("k-1", 41, 1_000))).unwrap();
    wait(reg.put_idempotency(key("k-2", 42, 2_000))).unwrap();
    let loaded = wait(reg.load_idempotency(0)).unwrap();
    assert_eq!(
        loaded.rows,
        vec![key("k-1", 41, 1_000), key("k-2", 42, 2_000)]
    );
    // A key reused after it expired gets the new message.
    wait(reg.put_idempotency(key("k-1", 77, 3_000))).unwrap();
    assert_eq!(
        wait(reg.load_idempotency(2_500)).unwrap().rows,
        vec![key("k-1", 77, 3_000)]
    );

    let mut orphan = key("k-3", 1, 1);
    orphan.channel = "wedding:main:w-404".into();
    assert!(matches!(
        wait(reg.put_idempotency(orphan)),
        Err(RegistryError::Invalid(_))
    ));
    reg.close().unwrap();
}

#[test]
fn audit_records_round_trip() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    let entry = AuditEntry {
        at_ms: 1_795_341_600_123,
        actor_user_id: "u-1".into(),
        actor_org: "org-a".into(),
        action: AuditAction::Denied,
        channel: Some("wedding:main:w-1".into()),
        channel_org: None,
        detail: json!({"code": "WS_WEDDING_ISOLATION_VIOLATION", "nested": [1, 2.5, null, "é"]}),
    };
    let id = wait(reg.audit(entry.clone())).unwrap();
    let mut org_wide = entry.clone();
    org_wide.channel = None;
    org_wide.action = AuditAction::Admin;
    org_wide.at_ms += 1;
    wait(reg.audit_batch(vec![org_wide.clone()])).unwrap();

    let got = wait(reg.query_audit(AuditQuery::default())).unwrap();
    assert!(got.warnings.is_empty());
    assert_eq!(got.rows.len(), 2);
    assert_eq!(got.rows[0].entry, org_wide);
    assert_eq!(got.rows[1].entry, entry);
    assert_eq!(got.rows[1].id, id);
    assert!(got.rows[0].id > id);

    let mut huge = entry.clone();
    huge.detail = json!("x".repeat(20_000));
    assert!(matches!(
        wait(reg.audit(huge)),
        Err(RegistryError::Invalid(_))
    ));
    let mut nobody = entry;
    nobody.actor_user_id.clear();
    assert!(matches!(
        wait(reg.audit(nobody)),
        Err(RegistryError::Invalid(_))
    ));
    reg.close().unwrap();
}
