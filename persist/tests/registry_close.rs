//! Proves `close()` drains: every call queued before it is done and answered, a dropped
//! reply's write still happens, calls after it answer `Closed` at once, a second `close` is
//! harmless, and everything answered is there on reopen.

mod registry_common;

use registry_common::*;
use ringbearer_persist::registry::{CursorAck, RegistryError};

const CH: &str = "wedding:main:w-1";

#[test]
fn close_drains_the_queue() {
    let (_dir, path) = temp_db();
    let reg = open(&path);
    wait(reg.upsert_channel(channel(CH))).unwrap();
    let replies: Vec<_> = (0..500)
        .map(|i| reg.upsert_subscription(sub(CH, &format!("u-{i:03}"), i)))
        .collect();
    // Fire and forget: the answer is dropped, the write is not.
    drop(reg.advance_cursors(vec![CursorAck {
        channel: CH.into(),
        org: "org-1".into(),
        user_id: "u-000".into(),
        cursor: 9_999,
    }]));
    let clone = reg.clone();
    reg.close().unwrap();
    for r in replies {
        wait(r).unwrap();
    }
    assert_eq!(
        wait(clone.load_channels()).unwrap_err(),
        RegistryError::Closed
    );
    assert_eq!(
        wait(reg.upsert_channel(channel(CH))).unwrap_err(),
        RegistryError::Closed
    );
    clone.close().unwrap();

    let reg = open(&path);
    let subs = wait(reg.load_subscriptions(CH)).unwrap().rows;
    assert_eq!(subs.len(), 500);
    assert_eq!(subs[0].cursor, 9_999);
    assert_eq!(subs[499].cursor, 499);
    reg.close().unwrap();
}
