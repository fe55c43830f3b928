//! Damage before the last segment (a flipped byte, a missing segment, a broken header) makes
//! `open` fail with an error naming the segment and offset, instead of dropping
//! acknowledged records; the documented operator action (`wal repair`) then opens the log.
mod common;

use common::*;
use ringbearer_persist::{format::StopReason, Wal, WalError};
use std::fs;

fn write_rotated_log(dir: &std::path::Path) -> ringbearer_persist::WalConfig {
    let cfg = config(dir, 8 << 10);
    run(async {
        let (wal, _) = Wal::open(cfg.clone()).await.unwrap();
        for id in 1..=120 {
            let lsn = append(&wal, id % 3, id).unwrap();
            if id % 10 == 0 {
                wal.durable(lsn).await.unwrap();
            }
        }
        wal.close().await.unwrap();
    });
    assert!(segments(dir).len() >= 4);
    cfg
}

#[test]
fn a_corrupt_middle_segment_fails_open_naming_it() {
    let dir = TempDir::new("middle");
    let cfg = write_rotated_log(dir.path());
    let segs = segments(dir.path());
    let victim = segs[1].clone();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[4096 + 100] ^= 0xff;
    fs::write(&victim, &bytes).unwrap();
    run(async {
        match Wal::open(cfg.clone()).await {
            Err(WalError::Corrupt {
                segment,
                offset,
                reason,
            }) => {
                assert_eq!(segment, victim);
                assert!((4096..=4096 + 100).contains(&offset), "{offset}");
                assert_eq!(reason, StopReason::Checksum);
                let msg = WalError::Corrupt {
                    segment,
                    offset,
                    reason,
                }
                .to_string();
                assert!(
                    msg.contains(victim.to_str().unwrap()) && msg.contains("wal verify"),
                    "{msg}"
                );
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
        }
        // Nothing was cut or rewritten by the failed open.
        assert_eq!(fs::read(&victim).unwrap(), bytes);
    });
    // Operator action (docs/operations.md): `wal repair` cuts the log at the damage, moves
    // what it drops aside and says how many records that is; the log then opens.
    let report = ringbearer_persist::check::repair(dir.path()).unwrap();
    assert!(report.records_dropped > 0, "{report}");
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.contains(victim.file_name().unwrap().to_str().unwrap())),
        "{report}"
    );
    run(async {
        let (wal, rec) = Wal::open(cfg).await.unwrap();
        assert!(!rec.records.is_empty());
        check_all(&rec.records);
        assert_eq!(
            rec.records.len() as u64 + report.records_dropped,
            120,
            "{report}"
        );
        assert_eq!(rec.report.tail_cut, None);
        wal.close().await.unwrap();
    });
}

#[test]
fn a_missing_middle_segment_fails_open() {
    let dir = TempDir::new("missing");
    let cfg = write_rotated_log(dir.path());
    let segs = segments(dir.path());
    fs::remove_file(&segs[2]).unwrap();
    run(async {
        match Wal::open(cfg).await {
            Err(WalError::Sequence {
                segment,
                expected,
                found,
            }) => {
                assert_eq!(segment, segs[3]);
                assert!(expected < found);
            }
            other => panic!("expected Sequence, got {:?}", other.map(|_| ())),
        }
    });
}

#[test]
fn a_broken_header_in_a_middle_segment_fails_open() {
    let dir = TempDir::new("header");
    let cfg = write_rotated_log(dir.path());
    let segs = segments(dir.path());
    let mut bytes = fs::read(&segs[0]).unwrap();
    bytes[3] = b'?';
    fs::write(&segs[0], &bytes).unwrap();
    run(async {
        match Wal::open(cfg).await {
            Err(WalError::Corrupt {
                segment,
                offset: 0,
                reason: StopReason::BadHeader(_),
            }) => {
                assert_eq!(segment, segs[0]);
            }
            other => panic!("expected Corrupt header, got {:?}", other.map(|_| ())),
        }
    });
}

#[test]
fn a_stray_or_renamed_segment_fails_open() {
    let dir = TempDir::new("stray");
    let cfg = write_rotated_log(dir.path());
    let segs = segments(dir.path());
    // A copy of an old segment under a name inside the log's range: its LSNs overlap.
    let stray = dir
        .path()
        .join(ringbearer_persist::format::segment_file_name(2));
    fs::copy(&segs[0], &stray).unwrap();
    run(async {
        match Wal::open(cfg.clone()).await {
            Err(WalError::Sequence { segment, .. }) => assert_eq!(segment, stray),
            other => panic!("expected Sequence, got {:?}", other.map(|_| ())),
        }
    });
    fs::remove_file(&stray).unwrap();
    // A segment's file replaced by another segment's bytes: the header disagrees with the name.
    fs::copy(&segs[1], &segs[2]).unwrap();
    run(async {
        match Wal::open(cfg).await {
            Err(WalError::Corrupt {
                segment,
                reason: StopReason::HeaderLsnMismatch { .. },
                ..
            }) => {
                assert_eq!(segment, segs[2])
            }
            other => panic!("expected a header mismatch, got {:?}", other.map(|_| ())),
        }
    });
}
