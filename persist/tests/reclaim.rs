//! `reclaim` deletes only whole segments whose every record is dead, oldest first, never
//! the active one; a crash (a failed removal) in the middle of it leaves a log that opens.
mod common;

use common::*;
use ringbearer_persist::{
    fault::{FaultPlan, FaultStorage},
    DmaStorage, Wal,
};
use std::collections::HashMap;

#[test]
fn reclaim_deletes_only_dead_segments() {
    let dir = TempDir::new("reclaim");
    let cfg = config(dir.path(), 8 << 10);
    run(async {
        let (wal, _) = Wal::open(cfg.clone()).await.unwrap();
        // Channel 1 publishes throughout; channel 2 only at the start.
        for id in 1..=150 {
            let k = if id <= 10 { 2 } else { 1 };
            let lsn = append(&wal, k, id).unwrap();
            wal.durable(lsn).await.unwrap();
        }
        let before = wal.stats();
        assert!(before.segments >= 5, "{before:?}");

        // Everything alive: nothing goes.
        let r = wal.reclaim(|_, _, _| true).await.unwrap();
        assert_eq!(r.segments_removed, 0);

        // Keep channel 1's records with id > 100, and all of channel 2: channel 2 lives in
        // the first segment, which pins everything after it.
        let keep_from = HashMap::from([(channel(1), 100u64), (channel(2), 0)]);
        let live = |c: &str, max_id: u64, _ts: u64| max_id > keep_from[c];
        let r = wal.reclaim(live).await.unwrap();
        assert_eq!(
            r.segments_removed, 0,
            "a live record in the oldest segment pins the rest"
        );

        // Channel 2 expired too: the oldest segments go up to the first one holding a
        // channel-1 record with id > 100.
        let live = |c: &str, max_id: u64, _ts: u64| c == channel(1) && max_id > 100;
        let r = wal.reclaim(live).await.unwrap();
        assert!(r.segments_removed >= 2, "{r:?}");
        let after = wal.stats();
        assert_eq!(after.segments, before.segments - r.segments_removed);
        assert_eq!(after.bytes, before.bytes - r.bytes_removed);
        assert_eq!(segments(dir.path()).len(), after.segments);

        // Everything dead: all but the active segment go.
        let r = wal.reclaim(|_, _, _| false).await.unwrap();
        assert_eq!(wal.stats().segments, 1);
        assert!(r.first_kept_lsn.0 > 100);
        wal.close().await.unwrap();

        // What is left recovers, continuing from a later LSN; records >100 of channel 1
        // that were in the kept segment are there.
        let (wal, rec) = Wal::open(cfg).await.unwrap();
        check_all(&rec.records);
        assert_eq!(rec.report.next_lsn.0, 151);
        assert!(rec.records.iter().all(|r| r.id > 100));
        wal.close().await.unwrap();
    });
}

#[test]
fn a_crash_during_reclaim_leaves_a_log_that_opens() {
    let dir = TempDir::new("reclaim-crash");
    let cfg = config(dir.path(), 8 << 10);
    run(async {
        let plan = FaultPlan::new();
        plan.fail_remove.set(Some(2));
        let storage = FaultStorage::new(DmaStorage::new(), plan.clone());
        let (wal, _) = Wal::open_with(cfg.clone(), storage).await.unwrap();
        for id in 1..=100 {
            let lsn = append(&wal, 1, id).unwrap();
            wal.durable(lsn).await.unwrap();
        }
        let before = wal.stats().segments;
        // The second removal fails: the first segment is gone, the rest stay.
        let e = wal.reclaim(|_, _, _| false).await.unwrap_err();
        assert!(e.to_string().contains("removing segment"), "{e}");
        assert_eq!(wal.stats().segments, before - 1);
        // The log still works; a retry finishes the job.
        let lsn = append(&wal, 1, 101).unwrap();
        wal.durable(lsn).await.unwrap();
        let r = wal.reclaim(|_, _, _| false).await.unwrap();
        assert!(r.segments_removed >= 1);
        drop(wal); // a crash: no close
        let (wal, rec) = Wal::open(cfg).await.unwrap();
        check_all(&rec.records);
        assert_eq!(rec.records.last().unwrap().id, 101);
        wal.close().await.unwrap();
    });
}
