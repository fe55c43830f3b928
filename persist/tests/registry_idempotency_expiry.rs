//! Proves idempotency keys expire by age (SPEC §2.5: a key repeated within 10 minutes
//! returns the first id, also after a restart): `load_idempotency(since)` returns only keys
//! created at or after `since`, `expire_idempotency(before)` deletes exactly the older ones,
//! and both hold across a restart.

mod registry_common;

use registry_common::*;
use ringbearer_persist::registry::IdempotencyRecord;

const WINDOW_MS: u64 = 10 * 60 * 1000;

fn key(channel: &str, k: &str, id: u64, at: u64) -> IdempotencyRecord {
    IdempotencyRecord {
        channel: channel.into(),
        key: k.into(),
        message_id: id,
        created_at_ms: at,
    }
}

#[test]
fn keys_expire_by_age() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    let (a, b) = ("wedding:main:w-1", "wedding:main:w-2");
    wait(reg.upsert_channel(channel(a))).unwrap();
    wait(reg.upsert_channel(channel(b))).unwrap();
    let t0 = 1_795_341_600_000;
    // One key a minute for 20 minutes, alternating channels.
    for m in 0..20u64 {
        let ch = if m % 2 == 0 { a } else { b };
        wait(reg.put_idempotency(key(ch, &format!("k-{m}"), 100 + m, t0 + m * 60_000))).unwrap();
    }
    let now = t0 + 19 * 60_000 + 30_000;
    let live = wait(reg.load_idempotency(now - WINDOW_MS)).unwrap();
    assert!(live.warnings.is_empty());
    let mut got: Vec<u64> = live.rows.iter().map(|r| r.message_id).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (110..120).collect::<Vec<_>>(),
        "the last 10 minutes only"
    );

    // Expire everything older than the window; the boundary key (created exactly at the
    // cut-off) stays.
    let cut = t0 + 10 * 60_000;
    assert_eq!(wait(reg.expire_idempotency(cut)).unwrap(), 10);
    assert_eq!(wait(reg.expire_idempotency(cut)).unwrap(), 0);
    reg.close().unwrap();

    let reg = open(&path);
    let all = wait(reg.load_idempotency(0)).unwrap();
    assert_eq!(all.rows.len(), 10);
    assert!(all.rows.iter().all(|r| r.created_at_ms >= cut));
    assert!(all.rows.contains(&key(a, "k-10", 110, cut)));
    reg.close().unwrap();
}
