//! Proves audit queries: filtering by channel, by user and by time window (from inclusive,
//! to exclusive), combined filters, newest first with ties broken by id, the limit and its
//! bounds (1 to 1000), and retention by `expire_audit`.

mod registry_common;

use registry_common::*;
use ringbearer_persist::registry::{
    AuditAction, AuditEntry, AuditQuery, AuditRecord, Registry, RegistryError,
    AUDIT_QUERY_LIMIT_MAX,
};
use serde_json::json;

fn entry(at_ms: u64, user: &str, channel: Option<&str>, action: AuditAction) -> AuditEntry {
    AuditEntry {
        at_ms,
        actor_user_id: user.into(),
        actor_org: "org-a".into(),
        action,
        channel: channel.map(Into::into),
        channel_org: None,
        detail: json!({ "n": at_ms }),
    }
}

fn run(reg: &Registry, q: AuditQuery) -> Vec<AuditRecord> {
    let got = wait(reg.query_audit(q)).unwrap();
    assert!(got.warnings.is_empty());
    got.rows
}

fn times(rows: &[AuditRecord]) -> Vec<u64> {
    rows.iter().map(|r| r.entry.at_ms).collect()
}

/// 30 records: at 100..=129 ms, users u-0..u-2 in turn, channels A/B/none in another cycle.
fn seed(reg: &Registry) {
    let channels = [Some("wedding:main:w-a"), Some("wedding:main:w-b"), None];
    let batch: Vec<_> = (0..30u64)
        .map(|i| {
            entry(
                100 + i,
                &format!("u-{}", i % 3),
                channels[(i / 2 % 3) as usize],
                AuditAction::ALL[(i % 6) as usize],
            )
        })
        .collect();
    // Inserted out of time order: ordering must come from at_ms, not insertion.
    let (late, early) = batch.split_at(15);
    wait(reg.audit_batch(early.to_vec())).unwrap();
    wait(reg.audit_batch(late.to_vec())).unwrap();
}

#[test]
fn queries_filter_order_and_limit() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    seed(&reg);

    let all = run(
        &reg,
        AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        },
    );
    assert_eq!(
        times(&all),
        (100..130).rev().collect::<Vec<_>>(),
        "newest first"
    );

    let newest5 = run(
        &reg,
        AuditQuery {
            limit: 5,
            ..AuditQuery::default()
        },
    );
    assert_eq!(times(&newest5), [129, 128, 127, 126, 125]);

    let by_user = run(
        &reg,
        AuditQuery {
            actor_user_id: Some("u-1".into()),
            ..AuditQuery::default()
        },
    );
    assert_eq!(by_user.len(), 10);
    assert!(by_user.iter().all(|r| r.entry.actor_user_id == "u-1"));
    assert!(by_user
        .windows(2)
        .all(|w| w[0].entry.at_ms > w[1].entry.at_ms));

    let by_channel = run(
        &reg,
        AuditQuery {
            channel: Some("wedding:main:w-b".into()),
            ..AuditQuery::default()
        },
    );
    assert_eq!(
        times(&by_channel),
        [127, 126, 121, 120, 115, 114, 109, 108, 103, 102]
    );

    let window = run(
        &reg,
        AuditQuery {
            from_ms: Some(110),
            to_ms: Some(115),
            ..AuditQuery::default()
        },
    );
    assert_eq!(
        times(&window),
        [114, 113, 112, 111, 110],
        "from inclusive, to exclusive"
    );

    let combined = run(
        &reg,
        AuditQuery {
            org: None,
            channel: Some("wedding:main:w-a".into()),
            actor_user_id: Some("u-0".into()),
            from_ms: Some(105),
            to_ms: Some(125),
            limit: 2,
        },
    );
    // w-a at 100,101,106,107,112,113,118,119,124,125; u-0 at 100,103,106,…: both at
    // 100,106,112,118,124; inside [105, 125): 106..124; the newest two.
    assert_eq!(times(&combined), [124, 118]);

    let none = run(
        &reg,
        AuditQuery {
            channel: Some("wedding:main:w-zzz".into()),
            ..AuditQuery::default()
        },
    );
    assert!(none.is_empty());
    reg.close().unwrap();
}

#[test]
fn same_millisecond_records_come_newest_id_first() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    let ids: Vec<i64> = (0..3)
        .map(|_| {
            wait(reg.audit(entry(
                500,
                "u-1",
                Some("wedding:main:w-a"),
                AuditAction::Subscribe,
            )))
            .unwrap()
        })
        .collect();
    let got = run(&reg, AuditQuery::default());
    assert_eq!(
        got.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    reg.close().unwrap();
}

#[test]
fn the_limit_is_bounded() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    for limit in [0, AUDIT_QUERY_LIMIT_MAX + 1] {
        let e = wait(reg.query_audit(AuditQuery {
            limit,
            ..AuditQuery::default()
        }))
        .unwrap_err();
        assert!(matches!(e, RegistryError::Invalid(_)), "{limit}: {e:?}");
    }
    let batch: Vec<_> = (0..1100)
        .map(|i| entry(i, "u", None, AuditAction::Admin))
        .collect();
    wait(reg.audit_batch(batch)).unwrap();
    let got = run(
        &reg,
        AuditQuery {
            limit: AUDIT_QUERY_LIMIT_MAX,
            ..AuditQuery::default()
        },
    );
    assert_eq!(got.len(), 1000);
    assert_eq!(got[0].entry.at_ms, 1099);
    reg.close().unwrap();
}

#[test]
fn old_records_expire() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    seed(&reg);
    assert_eq!(wait(reg.expire_audit(120)).unwrap(), 20);
    let left = run(
        &reg,
        AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        },
    );
    assert_eq!(times(&left), (120..130).rev().collect::<Vec<_>>());
    assert_eq!(wait(reg.expire_audit(120)).unwrap(), 0);
    reg.close().unwrap();
}

/// SPEC §1/§5: an organization sees its own actors' records and every record about its
/// channels; the filter runs in the query, so `limit` counts visible records.
#[test]
fn organization_visibility_is_applied_before_the_limit() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    let mut entries = Vec::new();
    for i in 0..20u64 {
        // Odd: org-b's actors on org-a's channel (a refusal org-a must see); even: org-c
        // alone (org-a must not see it); every fifth: org-a itself.
        let (actor_org, channel_org) = match i {
            i if i % 5 == 0 => ("org-a", None),
            i if i % 2 == 1 => ("org-b", Some("org-a")),
            _ => ("org-c", Some("org-c")),
        };
        let mut e = entry(
            100 + i,
            "u-1",
            Some("wedding:main:w-a"),
            AuditAction::Denied,
        );
        e.actor_org = actor_org.into();
        e.channel_org = channel_org.map(Into::into);
        entries.push(e);
    }
    wait(reg.audit_batch(entries)).unwrap();
    let visible = |org: &str, limit: u32| {
        run(
            &reg,
            AuditQuery {
                org: Some(org.into()),
                limit,
                ..AuditQuery::default()
            },
        )
    };
    // org-a: 0, 5, 10, 15 (its own) and the 8 other odd ones (on its channel).
    let all = visible("org-a", 100);
    assert_eq!(all.len(), 12);
    assert!(all
        .iter()
        .all(|r| r.entry.actor_org == "org-a" || r.entry.channel_org.as_deref() == Some("org-a")));
    assert_eq!(visible("org-a", 3).len(), 3, "limit counts visible rows");
    let c = visible("org-c", 100);
    assert!(c.iter().all(|r| r.entry.actor_org == "org-c"));
    assert_eq!(visible("org-z", 10).len(), 0);
}
