//! Proves batched acks (SPEC §2.3): `advance_cursors` applies a whole batch, never moves a
//! cursor backwards (within a batch, across batches, or against a later upsert), skips acks
//! for subscriptions that are gone instead of resurrecting them, and refuses an oversized or
//! out-of-range batch as a whole.

mod registry_common;

use registry_common::*;
use ringbearer_persist::registry::{CursorAck, Registry, RegistryConfig, RegistryError};

const CH: &str = "wedding:main:w-1";

fn ack(user: &str, cursor: u64) -> CursorAck {
    CursorAck {
        channel: CH.into(),
        org: "org-1".into(),
        user_id: user.into(),
        cursor,
    }
}

fn cursors(reg: &Registry) -> Vec<(String, u64)> {
    wait(reg.load_subscriptions(CH))
        .unwrap()
        .rows
        .into_iter()
        .map(|s| (s.user_id, s.cursor))
        .collect()
}

#[test]
fn cursors_only_move_forward() {
    let (_dir, path) = temp_db();
    let reg = Registry::open(
        &path,
        RegistryConfig {
            batch_rows_max: 100,
            ..config()
        },
    )
    .unwrap();
    wait(reg.upsert_channel(channel(CH))).unwrap();
    for u in ["a", "b", "c"] {
        wait(reg.upsert_subscription(sub(CH, u, 10))).unwrap();
    }

    // Out of order within one batch: the maximum wins, the lower ack is a no-op.
    let n = wait(reg.advance_cursors(vec![ack("a", 15), ack("a", 12), ack("b", 9), ack("c", 11)]))
        .unwrap();
    assert_eq!(n, 4, "every ack matched an existing subscription");
    assert_eq!(
        cursors(&reg),
        [("a".into(), 15), ("b".into(), 10), ("c".into(), 11)]
    );

    // A later, stale batch does not move anything back.
    wait(reg.advance_cursors(vec![ack("a", 1), ack("b", 0), ack("c", 11)])).unwrap();
    assert_eq!(
        cursors(&reg),
        [("a".into(), 15), ("b".into(), 10), ("c".into(), 11)]
    );

    // Nor does a stale upsert (a resubscribe carrying an old position).
    wait(reg.upsert_subscription(sub(CH, "a", 3))).unwrap();
    assert_eq!(cursors(&reg)[0], ("a".into(), 15));

    // Many batches queued at once, each higher: the last one wins.
    let replies: Vec<_> = (16..=60)
        .map(|c| reg.advance_cursors(vec![ack("a", c)]))
        .collect();
    for r in replies {
        wait(r).unwrap();
    }
    assert_eq!(cursors(&reg)[0], ("a".into(), 60));
    reg.close().unwrap();
}

#[test]
fn acks_for_gone_subscriptions_are_skipped() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    wait(reg.upsert_channel(channel(CH))).unwrap();
    wait(reg.upsert_subscription(sub(CH, "a", 0))).unwrap();
    wait(reg.upsert_subscription(sub(CH, "b", 0))).unwrap();
    wait(reg.delete_subscription(CH, "org-1", "b")).unwrap();
    let mut other = ack("a", 5);
    other.channel = "wedding:main:w-404".into();
    let n = wait(reg.advance_cursors(vec![ack("a", 4), ack("b", 4), other])).unwrap();
    assert_eq!(n, 1);
    assert_eq!(cursors(&reg), [("a".into(), 4)], "b was not resurrected");
    assert_eq!(wait(reg.advance_cursors(vec![])).unwrap(), 0);
    reg.close().unwrap();
}

#[test]
fn a_bad_batch_is_refused_whole() {
    let (_dir, path) = temp_db();
    let reg = Registry::open(
        &path,
        RegistryConfig {
            batch_rows_max: 3,
            ..config()
        },
    )
    .unwrap();
    wait(reg.upsert_channel(channel(CH))).unwrap();
    wait(reg.upsert_subscription(sub(CH, "a", 0))).unwrap();

    let e = wait(reg.advance_cursors(vec![ack("a", 1), ack("a", 2), ack("a", 3), ack("a", 4)]))
        .unwrap_err();
    assert!(
        matches!(&e, RegistryError::Invalid(m) if m.contains("batch_rows_max")),
        "{e:?}"
    );
    let e = wait(reg.advance_cursors(vec![ack("a", 7), ack("a", u64::MAX)])).unwrap_err();
    assert!(matches!(e, RegistryError::Invalid(_)), "{e:?}");
    assert_eq!(
        cursors(&reg),
        [("a".into(), 0)],
        "nothing of a refused batch applied"
    );
    reg.close().unwrap();
}
