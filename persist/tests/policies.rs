//! The durability policies keep their documented promises: `memory` never touches the
//! disk and never syncs; `batch` acknowledges at once and syncs within its interval;
//! `close` flushes under both disk policies.
mod common;

use common::*;
use ringbearer_persist::{Durability, Lsn, Wal};
use std::time::{Duration, Instant};

#[test]
fn memory_never_syncs_and_writes_nothing() {
    let dir = TempDir::new("memory");
    let wal_dir = dir.path().join("shard-0");
    run(async {
        let mut cfg = config(&wal_dir, 1 << 20);
        cfg.durability = Durability::Memory;
        let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
        assert!(rec.records.is_empty());
        for id in 1..=100 {
            let lsn = append(&wal, 1, id).unwrap();
            assert_eq!(lsn, Lsn(id));
            wal.durable(lsn).await.unwrap();
        }
        let s = wal.stats();
        assert_eq!(s.synced_batches, 0);
        assert_eq!(s.segments, 0);
        assert_eq!(s.appended, 100);
        assert_eq!(s.durable_lsn, Lsn(100));
        wal.close().await.unwrap();
        assert!(!wal_dir.exists(), "memory policy created files");
        // A restart starts empty.
        let (wal, rec) = Wal::open(cfg).await.unwrap();
        assert!(rec.records.is_empty());
        assert_eq!(append(&wal, 1, 1).unwrap(), Lsn(1));
        wal.close().await.unwrap();
    });
}

#[test]
fn batch_acknowledges_at_once_and_syncs_within_the_interval() {
    let dir = TempDir::new("batch");
    run(async {
        let mut cfg = config(dir.path(), 1 << 20);
        cfg.durability = Durability::Batch;
        // Long enough that no stall of a loaded machine syncs before the check below;
        // the wait after it is bounded and on the event.
        cfg.batch_interval_ms = 2_000;
        let (wal, _) = Wal::open(cfg.clone()).await.unwrap();
        let mut last = Lsn(0);
        for id in 1..=50 {
            last = append(&wal, 1, id).unwrap();
            // Resolves without waiting for a sync.
            wal.durable(last).await.unwrap();
        }
        assert!(wal.durable_lsn() < last, "nothing synced yet");
        // Within the interval (plus a commit), the committer syncs by itself. Bounded wait
        // on the event, polling the counter.
        let start = Instant::now();
        while wal.durable_lsn() < last {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "batch never synced"
            );
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert!(wal.stats().synced_batches >= 1);
        assert!(wal.stats().synced_batches <= 2, "{:?}", wal.stats());
        // close flushes what is queued.
        for id in 51..=60 {
            append(&wal, 1, id).unwrap();
        }
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(cfg).await.unwrap();
        assert_eq!(rec.records.len(), 60);
        check_all(&rec.records);
        wal.close().await.unwrap();
    });
}

#[test]
fn fsync_close_flushes_unawaited_appends() {
    let dir = TempDir::new("close");
    run(async {
        let cfg = config(dir.path(), 1 << 20);
        let (wal, _) = Wal::open(cfg.clone()).await.unwrap();
        for id in 1..=10 {
            append(&wal, 2, id).unwrap();
        }
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(cfg).await.unwrap();
        assert_eq!(rec.records.len(), 10);
        wal.close().await.unwrap();
    });
}
