//! Proves the registry is usable from the shards: a `Registry` is `Clone + Send + Sync`, a
//! `Reply` is `Send`, and replies resolve on glommio executors (no tokio), from two shards
//! sharing one registry at once.

mod registry_common;

use glommio::{LocalExecutorBuilder, Placement};
use registry_common::*;
use ringbearer_persist::registry::{CursorAck, Registry, Reply};

const CH: &str = "wedding:main:w-1";

fn assert_handle<T: Clone + Send + Sync + 'static>() {}
fn assert_send<T: Send + 'static>() {}

#[test]
fn replies_resolve_on_glommio_executors() {
    assert_handle::<Registry>();
    assert_send::<Reply<Vec<u8>>>();

    let (_dir, path) = temp_db();
    let reg = open(&path);
    wait(reg.upsert_channel(channel(CH))).unwrap();

    let shards: Vec<_> = (0..2)
        .map(|shard| {
            let reg = reg.clone();
            std::thread::spawn(move || {
                LocalExecutorBuilder::new(Placement::Unbound)
                    .io_memory(256 << 10)
                    .make()
                    .expect("glommio executor")
                    .run(async move {
                        for u in 0..50 {
                            let user = format!("s{shard}-u{u}");
                            reg.upsert_subscription(sub(CH, &user, 0)).await.unwrap();
                            let acks = vec![CursorAck {
                                channel: CH.into(),
                                org: "org-1".into(),
                                user_id: user,
                                cursor: u + 1,
                            }];
                            assert_eq!(reg.advance_cursors(acks).await.unwrap(), 1);
                        }
                    });
            })
        })
        .collect();
    for s in shards {
        s.join().unwrap();
    }
    let subs = wait(reg.load_subscriptions(CH)).unwrap().rows;
    assert_eq!(subs.len(), 100);
    assert_eq!(
        subs.iter().map(|s| s.cursor).sum::<u64>(),
        2 * (1..=50).sum::<u64>()
    );
    reg.close().unwrap();
}
