//! Property: over random sequences of appends, waits, crashes (an unclean stop that loses
//! the queue, then a torn, garbled or zero-filled tail past the last acknowledged record)
//! and reopens, recovery never yields a record that was not appended and always yields
//! every record acknowledged durable before the crash.
mod common;

use common::*;
use proptest::prelude::*;
use ringbearer_persist::{Lsn, Wal, WalConfig};
use std::{collections::BTreeMap, fs, io::Write, path::PathBuf};

#[derive(Clone, Debug)]
enum Op {
    /// Append `n` records of channel `k` with bodies around `size` bytes; if `wait`, await
    /// durability of the last one (acknowledging all of them).
    Append { k: u64, n: u64, wait: bool },
    /// Crash: `lost` more appends that never reach the disk, no close, then the last
    /// segment is cut somewhere past the acknowledged end (`cut` is a fraction of the
    /// room) and `tail` is written over what is left.
    Crash { lost: u64, cut: f64, tail: Tail },
}

#[derive(Clone, Copy, Debug)]
enum Tail {
    Nothing,
    Zeros(u16),
    Garbage(u16, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..4, 1u64..24, any::<bool>()).prop_map(|(k, n, wait)| Op::Append { k, n, wait }),
        1 => (0u64..8, 0.0f64..1.0, prop_oneof![
            Just(Tail::Nothing),
            (1u16..9000).prop_map(Tail::Zeros),
            (1u16..9000, any::<u8>()).prop_map(|(n, b)| Tail::Garbage(n, b)),
        ]).prop_map(|(lost, cut, tail)| Op::Crash { lost, cut, tail }),
    ]
}

/// Where acknowledged data ends: the last segment and its length when the last
/// acknowledgement came back. Later commits only add after it, or rotate.
#[derive(Clone, Debug, Default)]
struct Floor {
    segment: Option<PathBuf>,
    len: u64,
}

fn floor_now(cfg: &WalConfig) -> Floor {
    let seg = segments(&cfg.dir).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    Floor {
        segment: Some(seg),
        len,
    }
}

fn crash_tail(cfg: &WalConfig, floor: &Floor, cut: f64, tail: Tail) {
    let seg = segments(&cfg.dir).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // Past the acknowledged end only; a segment created after it may lose even its header.
    let low = if floor.segment.as_ref() == Some(&seg) {
        floor.len
    } else {
        0
    };
    let at = low + ((len - low) as f64 * cut) as u64;
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(at).unwrap();
    drop(f);
    // A segment's header is synced before anything is written after it, so a real crash
    // never leaves bytes after a broken header.
    if at < 4096 {
        return;
    }
    let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    match tail {
        Tail::Nothing => {}
        Tail::Zeros(n) => f.write_all(&vec![0u8; n as usize]).unwrap(),
        Tail::Garbage(n, b) => {
            let g: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ b).collect();
            f.write_all(&g).unwrap()
        }
    }
}

fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = TempDir::new("prop");
    let cfg = config(dir.path(), 12 << 10);
    run(async move {
        // Everything appended and possibly on disk: lsn -> (k, id).
        let mut appended: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut acked: u64 = 0;
        let mut floor = Floor::default();
        let mut next_id = 1u64;
        let (mut wal, _) = Wal::open(cfg.clone()).await.unwrap();
        for op in ops.into_iter().chain([Op::Crash {
            lost: 0,
            cut: 1.0,
            tail: Tail::Nothing,
        }]) {
            match op {
                Op::Append { k, n, wait } => {
                    let mut last = Lsn(0);
                    for _ in 0..n {
                        last = append(&wal, k, next_id).unwrap();
                        appended.insert(last.0, (k, next_id));
                        next_id += 1;
                    }
                    if wait {
                        wal.durable(last).await.unwrap();
                        acked = acked.max(last.0);
                        floor = floor_now(&cfg);
                    }
                }
                Op::Crash { lost, cut, tail } => {
                    // Let the committer go idle, so no write is in flight at the crash.
                    let last = wal.stats().next_lsn.0 - 1;
                    wal.durable(Lsn(last)).await.unwrap();
                    // These never reach the disk: the committer has not run yet.
                    for _ in 0..lost {
                        append(&wal, 9, next_id).unwrap();
                        next_id += 1;
                    }
                    drop(wal);
                    crash_tail(&cfg, &floor, cut, tail);

                    let (w, rec) = Wal::open(cfg.clone()).await.unwrap();
                    wal = w;
                    check_all(&rec.records);
                    for r in &rec.records {
                        let k: u64 = r.channel.rsplit('-').next().unwrap().parse().unwrap();
                        prop_assert_eq!(
                            appended.get(&r.lsn.0),
                            Some(&(k, r.id)),
                            "never appended: {:?}",
                            r.lsn
                        );
                    }
                    let recovered_to = rec.records.last().map_or(0, |r| r.lsn.0);
                    prop_assert!(
                        recovered_to >= acked,
                        "acknowledged {} but recovered to {}: {:?}",
                        acked,
                        recovered_to,
                        rec.report
                    );
                    // What was not recovered is gone; its LSNs are handed out again.
                    appended.retain(|lsn, _| *lsn <= recovered_to);
                    // No reclaim here, so the log starts at LSN 1 and goes on right after.
                    prop_assert_eq!(rec.report.next_lsn.0, recovered_to + 1);
                    floor = floor_now(&cfg);
                }
            }
        }
        wal.close().await.unwrap();
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn crashes_never_invent_or_lose_acknowledged_records(ops in prop::collection::vec(op(), 1..16)) {
        run_ops(ops)?;
    }
}
