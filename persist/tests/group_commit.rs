//! Group commit: many concurrent publishers share far fewer write+fdatasync rounds than
//! records, every waiter resolves only once its record is durable, and a full queue refuses
//! with `Backpressure` instead of growing without bound.
mod common;

use common::*;
use ringbearer_persist::{Lsn, Wal, WalError};
use std::{cell::RefCell, rc::Rc};

#[test]
fn concurrent_appenders_share_syncs() {
    const APPENDERS: u64 = 64;
    const EACH: u64 = 20;
    let dir = TempDir::new("group");
    run(async {
        let cfg = config(dir.path(), 64 << 10);
        let (wal, _) = Wal::open(cfg.clone()).await.unwrap();
        let wal = Rc::new(wal);
        let acked = Rc::new(RefCell::new(Vec::new()));
        let tasks: Vec<_> = (0..APPENDERS)
            .map(|k| {
                let (wal, acked) = (wal.clone(), acked.clone());
                glommio::spawn_local(async move {
                    for id in 1..=EACH {
                        let lsn = append(&wal, k, id).unwrap();
                        wal.durable(lsn).await.unwrap();
                        // Durable means durable: the committer has synced past it.
                        assert!(wal.durable_lsn() >= lsn);
                        acked.borrow_mut().push(lsn);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let s = wal.stats();
        let records = APPENDERS * EACH;
        assert_eq!(s.appended, records);
        assert_eq!(s.synced_records, records);
        assert_eq!(s.durable_lsn, Lsn(records));
        // One appender at a time would need one sync per record; sharing needs about one
        // per round of appenders.
        assert!(
            s.synced_batches * 8 <= records,
            "expected far fewer syncs than records: {s:?}"
        );
        assert_eq!(acked.borrow().len() as u64, records);
        Rc::try_unwrap(wal).ok().unwrap().close().await.unwrap();

        let (wal, rec) = Wal::open(cfg).await.unwrap();
        assert_eq!(rec.records.len() as u64, records);
        check_all(&rec.records);
        wal.close().await.unwrap();
    });
}

#[test]
fn a_full_queue_refuses_with_backpressure() {
    let dir = TempDir::new("backpressure");
    run(async {
        let mut cfg = config(dir.path(), 64 << 20);
        cfg.max_batch_bytes = 64 << 10;
        cfg.max_unsynced_bytes = ringbearer_persist::format::RECORD_MAX_BYTES;
        let (wal, _) = Wal::open(cfg).await.unwrap();
        // `append` never awaits, so the committer cannot drain while this loop runs.
        let mut last = Lsn(0);
        let mut refused = None;
        for id in 1..100_000 {
            match append(&wal, 1, id) {
                Ok(lsn) => last = lsn,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        match refused {
            Some(WalError::Backpressure {
                unsynced_bytes,
                limit_bytes,
            }) => {
                assert!(unsynced_bytes <= limit_bytes);
                assert_eq!(wal.stats().unsynced_bytes, unsynced_bytes);
            }
            other => panic!("expected backpressure, got {other:?}"),
        }
        // A refused record took no LSN, and the log drains and accepts again.
        assert_eq!(wal.stats().next_lsn.0, last.0 + 1);
        wal.durable(last).await.unwrap();
        assert_eq!(wal.stats().unsynced_bytes, 0);
        let lsn = append(&wal, 1, 1_000_000).unwrap();
        assert_eq!(lsn.0, last.0 + 1);
        wal.durable(lsn).await.unwrap();
        wal.close().await.unwrap();
    });
}
