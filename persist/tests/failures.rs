//! A failed fdatasync or write, or a full disk, poisons the log: the waiting publishers and
//! every later append get an error, nothing unstored is acknowledged, `close` does not
//! panic, and after reopening every acknowledged record is there, with no record that was
//! refused.
mod common;

use common::*;
use ringbearer_persist::{
    fault::{FaultPlan, FaultStorage},
    DmaStorage, Lsn, PoisonKind, Wal, WalError,
};
use std::{cell::RefCell, rc::Rc};

/// Appends from 8 concurrent tasks until the log fails; returns the LSNs acknowledged
/// durable, the last LSN any append got, and the error publishers saw.
async fn publish_until_failure(wal: Rc<Wal<FaultStorage>>) -> (Vec<Lsn>, Lsn, WalError) {
    let acked = Rc::new(RefCell::new(Vec::new()));
    let last = Rc::new(RefCell::new(Lsn(0)));
    let error = Rc::new(RefCell::new(None));
    let tasks: Vec<_> = (0..8u64)
        .map(|k| {
            let (wal, acked, last, error) =
                (wal.clone(), acked.clone(), last.clone(), error.clone());
            glommio::spawn_local(async move {
                for id in 1..=10_000 {
                    let r = match append(&wal, k, id) {
                        Ok(lsn) => {
                            last.replace_with(|l| (*l).max(lsn));
                            wal.durable(lsn).await.map(|_| lsn)
                        }
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(lsn) => acked.borrow_mut().push(lsn),
                        Err(e) => {
                            error.borrow_mut().get_or_insert(e);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    let e = error.borrow_mut().take().expect("the log failed");
    let acked = acked.borrow().clone();
    let last = *last.borrow();
    (acked, last, e)
}

/// Reopens with plain storage and checks the promise.
async fn check_after_reopen(cfg: &ringbearer_persist::WalConfig, acked: &[Lsn], last: Lsn) {
    let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
    check_all(&rec.records);
    let max_acked = acked.iter().max().copied().unwrap_or_default();
    assert!(
        rec.records.last().map(|r| r.lsn).unwrap_or_default() >= max_acked,
        "acknowledged records lost: {:?}",
        rec.report
    );
    assert!(
        rec.records.iter().all(|r| r.lsn <= last),
        "a refused record came back"
    );
    assert_eq!(
        rec.records.first().map(|r| r.lsn.0),
        Some(1).filter(|_| !rec.records.is_empty())
    );
    wal.close().await.unwrap();
}

fn failing_run(name: &str, plan: Rc<FaultPlan>, expect_kind: PoisonKind) {
    let dir = TempDir::new(name);
    let cfg = config(dir.path(), 32 << 10);
    run(async {
        let storage = FaultStorage::new(DmaStorage::new(), plan.clone());
        let (wal, _) = Wal::open_with(cfg.clone(), storage).await.unwrap();
        let wal = Rc::new(wal);
        let (acked, last, e) = publish_until_failure(wal.clone()).await;
        assert!(
            !acked.is_empty(),
            "some records were acknowledged before the failure"
        );
        match &e {
            WalError::Poisoned {
                kind, durable_lsn, ..
            } => {
                assert_eq!(*kind, expect_kind);
                assert!(acked.iter().all(|l| l.0 <= *durable_lsn));
            }
            other => panic!("expected Poisoned, got {other}"),
        }
        assert_eq!(e.is_storage_full(), expect_kind == PoisonKind::StorageFull);
        // Every later call fails; stats say so.
        assert!(matches!(
            append(&wal, 99, 1),
            Err(WalError::Poisoned { .. })
        ));
        let s = wal.stats();
        assert!(s.poisoned);
        // Already durable stays Ok; anything later is refused.
        if let Some(l) = acked.last() {
            wal.durable(*l).await.unwrap();
        }
        if last > wal.durable_lsn() {
            assert!(matches!(
                wal.durable(last).await,
                Err(WalError::Poisoned { .. })
            ));
        }
        // close reports the poison and does not touch (close) the failed file.
        let wal = Rc::try_unwrap(wal).ok().unwrap();
        assert!(matches!(wal.close().await, Err(WalError::Poisoned { .. })));
        check_after_reopen(&cfg, &acked, last).await;
    });
}

#[test]
fn a_failed_sync_poisons_and_loses_nothing_acknowledged() {
    let plan = FaultPlan::new();
    // Sync 1 is the first segment's header; fail a later group commit.
    plan.fail_sync.set(Some(6));
    failing_run("sync", plan, PoisonKind::Sync);
}

#[test]
fn a_failed_torn_write_poisons_and_loses_nothing_acknowledged() {
    let plan = FaultPlan::new();
    plan.fail_write.set(Some(5));
    plan.torn.set(true);
    failing_run("write", plan, PoisonKind::Write);
}

#[test]
fn a_full_disk_is_an_error_not_corruption() {
    let plan = FaultPlan::new();
    // Room for a few segments, then ENOSPC part-way through a write.
    plan.capacity_bytes.set(Some(70_000));
    failing_run("full", plan, PoisonKind::StorageFull);
}

#[test]
fn a_failed_rotation_poisons() {
    let dir = TempDir::new("rotate");
    let cfg = config(dir.path(), 8 << 10);
    run(async {
        let plan = FaultPlan::new();
        let storage = FaultStorage::new(DmaStorage::new(), plan.clone());
        let (wal, _) = Wal::open_with(cfg.clone(), storage).await.unwrap();
        // Write 1 is the header; fill the first segment, then fail the next header write.
        let mut acked = Vec::new();
        let mut id = 0;
        while plan.writes.get() < 2 || wal.stats().bytes < 8 << 10 {
            id += 1;
            let lsn = append(&wal, 1, id).unwrap();
            wal.durable(lsn).await.unwrap();
            acked.push(lsn);
        }
        plan.fail_write.set(Some(plan.writes.get() + 1));
        id += 1;
        let lsn = append(&wal, 1, id).unwrap();
        let e = wal.durable(lsn).await.unwrap_err();
        assert!(
            matches!(
                e,
                WalError::Poisoned {
                    kind: PoisonKind::Rotate,
                    ..
                }
            ),
            "{e}"
        );
        assert!(wal.close().await.is_err());
        check_after_reopen(&cfg, &acked, lsn).await;
    });
}
