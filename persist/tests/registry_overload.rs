//! Proves a full registry queue answers `Overloaded` at once instead of blocking the caller:
//! with the registry thread held up (another connection holds SQLite's write lock) and a
//! queue of 4, a call is refused while the lock is still held, after at least 4 were
//! accepted; every call that was accepted completes once the thread can work again.

mod registry_common;

use futures_lite::future::poll_once;
use registry_common::*;
use ringbearer_persist::registry::{Registry, RegistryConfig, RegistryError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const CH: &str = "wedding:main:w-1";
const CAPACITY: usize = 4;

#[test]
fn a_full_queue_refuses_at_once() {
    let (_dir, path) = temp_db();
    let reg = Registry::open(
        &path,
        RegistryConfig {
            queue_capacity: CAPACITY,
            ..config()
        },
    )
    .unwrap();
    wait(reg.upsert_channel(channel(CH))).unwrap();

    // Hold the write lock on another thread; it lets go when told, or after a bound, so a
    // call that wrongly blocked would end this test as a failure instead of hanging it.
    let lock = WriteLock::take(&path);
    let released = Arc::new(AtomicBool::new(false));
    let (go, told) = mpsc::channel::<()>();
    let watchdog = {
        let released = released.clone();
        std::thread::spawn(move || {
            let _ = told.recv_timeout(Duration::from_secs(20));
            released.store(true, Ordering::SeqCst);
            lock.release();
        })
    };

    let mut accepted = Vec::new();
    let mut refused_at = None;
    for i in 0..100 {
        let mut reply = reg.upsert_subscription(sub(CH, &format!("u-{i}"), 0));
        match wait(poll_once(&mut reply)) {
            None => accepted.push(reply),
            Some(Err(RegistryError::Overloaded)) => {
                refused_at = Some(i);
                break;
            }
            Some(other) => panic!("call {i} answered {other:?} while the lock is held"),
        }
    }
    let refused_at = refused_at.expect("a full queue refuses");
    assert!(
        !released.load(Ordering::SeqCst),
        "Overloaded came back while the thread was still stuck: no call blocked"
    );
    // At least CAPACITY were queued before the refusal. (How many more depends on how many
    // the thread took into its group commit before the lock stopped it: scheduling, not a
    // property — so it is not asserted.)
    assert!(
        refused_at >= CAPACITY,
        "refused after only {refused_at} accepted calls"
    );
    let e = RegistryError::Overloaded;
    assert!(e.is_retryable());

    go.send(()).unwrap();
    watchdog.join().unwrap();
    for r in accepted {
        wait(r).unwrap();
    }
    let subs = wait(reg.load_subscriptions(CH)).unwrap();
    assert_eq!(subs.rows.len(), refused_at, "every accepted call was done");
    reg.close().unwrap();
}
