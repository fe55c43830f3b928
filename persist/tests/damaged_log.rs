//! Damage that is not a torn tail makes `open` refuse and change nothing: a flipped bit or
//! a zeroed block in the active segment with valid commits after it, a missing oldest
//! segment, a missing start file; `check::verify` reports each (and a torn tail as
//! harmless), and `check::repair` cuts the log so it opens, reporting what it dropped.
mod common;

use common::*;
use ringbearer_persist::check::{self, Finding};
use ringbearer_persist::format::{self, StopReason};
use ringbearer_persist::{Wal, WalConfig, WalError};
use std::{fs, path::Path};

/// `n` records of channel 1 in commits of 10 (appends never yield, so each `durable` await
/// commits the ten queued before it), in one segment.
fn write_one_segment(dir: &Path, n: u64) -> WalConfig {
    let cfg = config(dir, 64 << 20);
    run(async {
        let (wal, _) = Wal::open(cfg.clone()).await.unwrap();
        for id in 1..=n {
            let lsn = append(&wal, 1, id).unwrap();
            if id % 10 == 0 {
                wal.durable(lsn).await.unwrap();
            }
        }
        wal.close().await.unwrap();
    });
    assert_eq!(segments(dir).len(), 1);
    cfg
}

/// 120 records over several small segments.
fn write_rotated(dir: &Path) -> WalConfig {
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

fn open_err(cfg: &WalConfig) -> WalError {
    run(async {
        match Wal::open(cfg.clone()).await {
            Ok(_) => panic!("the damaged log opened"),
            Err(e) => e,
        }
    })
}

/// Opens, checks every record and the count, closes.
fn open_count(cfg: &WalConfig) -> u64 {
    run(async {
        let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
        check_all(&rec.records);
        assert_eq!(rec.report.tail_cut, None, "{:?}", rec.report);
        wal.close().await.unwrap();
        rec.records.len() as u64
    })
}

fn damage_refused(dir: &Path, damage: impl FnOnce(&mut Vec<u8>)) {
    let cfg = write_one_segment(dir, 400);
    let seg = segments(dir).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let len = bytes.len();
    damage(&mut bytes);
    assert_eq!(bytes.len(), len);
    fs::write(&seg, &bytes).unwrap();
    let half = (len / 2) as u64;

    let e = open_err(&cfg);
    match &e {
        WalError::DamagedBeforeValid {
            segment,
            offset,
            valid_at,
            ..
        } => {
            assert_eq!(segment, &seg);
            assert!(
                *offset <= half && half - offset < 8192,
                "{offset} vs {half}"
            );
            assert!(*valid_at > half, "{valid_at}");
        }
        other => panic!("expected DamagedBeforeValid, got {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(seg.to_str().unwrap()) && msg.contains("offset"),
        "{msg}"
    );
    // Nothing was cut or rewritten.
    assert_eq!(fs::read(&seg).unwrap(), bytes);

    let v = check::verify(dir).unwrap();
    assert!(v.is_damaged(), "{v}");
    assert_eq!(v.findings, vec![Finding::Damage { segment: 0 }], "{v}");
    let text = v.to_string();
    assert!(
        text.contains(seg.file_name().unwrap().to_str().unwrap()) && text.contains("DAMAGE"),
        "{text}"
    );
    assert_eq!(fs::read(&seg).unwrap(), bytes, "verify changed nothing");

    // The operator's choice: repair cuts at the damage and says what it dropped.
    let r = check::repair(dir).unwrap();
    assert!(r.records_dropped > 150 && r.records_dropped < 250, "{r}");
    let saved = r.moved_to.clone().unwrap();
    assert!(
        fs::read_dir(&saved).unwrap().count() == 1,
        "the cut bytes are kept aside"
    );
    assert_eq!(open_count(&cfg) + r.records_dropped, 400, "{r}");
    assert!(!check::verify(dir).unwrap().is_damaged());
}

#[test]
fn a_bit_flip_mid_segment_with_commits_after_it_refuses_to_open() {
    let dir = TempDir::new("flip-mid");
    damage_refused(dir.path(), |b| {
        let half = b.len() / 2;
        b[half] ^= 0x08;
    });
}

#[test]
fn a_zeroed_block_mid_segment_refuses_to_open() {
    let dir = TempDir::new("zero-mid");
    damage_refused(dir.path(), |b| {
        let half = (b.len() / 2) / 4096 * 4096;
        b[half..half + 4096].fill(0);
    });
}

#[test]
fn a_torn_last_commit_is_still_cut_and_verify_calls_it_harmless() {
    let dir = TempDir::new("torn");
    let cfg = write_one_segment(dir.path(), 400);
    let seg = segments(dir.path()).pop().unwrap();
    // The last commit (records 391..=400) was cut short: its commit header is at the last
    // block boundary holding one.
    let bytes = fs::read(&seg).unwrap();
    let salt = format::decode_header(&bytes).unwrap().salt;
    let last_commit = (4096..bytes.len())
        .step_by(4096)
        .rev()
        .find(|&b| {
            format::decode_commit_header(&bytes[b..], salt).is_some_and(|c| c.first_lsn == 391)
        })
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(last_commit as u64 + 500)
        .unwrap();
    let v = check::verify(dir.path()).unwrap();
    assert!(!v.is_damaged(), "{v}");
    assert_eq!(v.findings, vec![Finding::TornTail { segment: 0 }]);
    assert!(v.to_string().contains("torn tail"), "{v}");
    run(async {
        let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
        assert_eq!(rec.records.len(), 390);
        let cut = rec.report.tail_cut.clone().expect("a cut");
        assert_eq!(cut.reason, StopReason::Truncated);
        wal.close().await.unwrap();
    });
}

#[test]
fn a_missing_oldest_segment_refuses_to_open() {
    let dir = TempDir::new("missing-oldest");
    let cfg = write_rotated(dir.path());
    let segs = segments(dir.path());
    fs::remove_file(&segs[0]).unwrap();
    let second =
        format::parse_segment_file_name(segs[1].file_name().unwrap().to_str().unwrap()).unwrap();
    let e = open_err(&cfg);
    match &e {
        WalError::MissingSegment {
            expected, found, ..
        } => {
            assert_eq!(*expected, 1);
            assert_eq!(*found, Some(second));
        }
        other => panic!("expected MissingSegment, got {other}"),
    }
    assert!(e.to_string().contains(&format::segment_file_name(1)), "{e}");
    let v = check::verify(dir.path()).unwrap();
    assert_eq!(
        v.findings,
        vec![Finding::MissingOldest {
            expected: 1,
            found: Some(second)
        }]
    );
    assert!(v.to_string().contains(&format::segment_file_name(1)), "{v}");
    let r = check::repair(dir.path()).unwrap();
    assert_eq!(r.records_dropped, second - 1, "{r}");
    assert_eq!(open_count(&cfg), 120 - (second - 1));
}

#[test]
fn a_missing_middle_segment_is_reported_and_repair_keeps_what_is_before_it() {
    let dir = TempDir::new("missing-middle");
    let cfg = write_rotated(dir.path());
    let segs = segments(dir.path());
    fs::remove_file(&segs[2]).unwrap();
    assert!(matches!(open_err(&cfg), WalError::Sequence { .. }));
    let v = check::verify(dir.path()).unwrap();
    assert!(
        matches!(v.findings[..], [Finding::Sequence { segment: 2, .. }]),
        "{v}"
    );
    assert!(v.to_string().contains("is missing"), "{v}");
    let third =
        format::parse_segment_file_name(segs[2].file_name().unwrap().to_str().unwrap()).unwrap();
    let r = check::repair(dir.path()).unwrap();
    assert_eq!(r.records_dropped, 120 - (third - 1), "{r}");
    assert_eq!(open_count(&cfg), third - 1);
}

#[test]
fn a_missing_start_file_with_older_segments_gone_refuses_to_open() {
    let dir = TempDir::new("no-start");
    let cfg = write_rotated(dir.path());
    let segs = segments(dir.path());
    fs::remove_file(dir.path().join(format::START_FILE_NAME)).unwrap();
    fs::remove_file(&segs[0]).unwrap();
    assert!(matches!(open_err(&cfg), WalError::StartFile { .. }));
    assert!(matches!(
        check::verify(dir.path()).unwrap().findings[..],
        [Finding::StartFile(_)]
    ));
}

#[test]
fn segments_left_by_an_interrupted_reclaim_are_removed_at_open() {
    let dir = TempDir::new("reclaim-left");
    let cfg = write_rotated(dir.path());
    let segs = segments(dir.path());
    // The reclaim moved the start file to the third segment and crashed before removing.
    let third =
        format::parse_segment_file_name(segs[2].file_name().unwrap().to_str().unwrap()).unwrap();
    fs::write(
        dir.path().join(format::START_FILE_NAME),
        format::encode_start(third),
    )
    .unwrap();
    let v = check::verify(dir.path()).unwrap();
    assert!(!v.is_damaged(), "{v}");
    run(async {
        let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
        assert_eq!(rec.report.reclaimed_at_open.len(), 2);
        assert_eq!(rec.records.first().unwrap().lsn.0, third);
        wal.close().await.unwrap();
    });
    assert_eq!(segments(dir.path()), segs[2..].to_vec());
}

#[test]
fn a_version_1_log_is_read_and_continued_in_a_version_2_segment() {
    let dir = TempDir::new("v1");
    // A version-1 segment as the previous release wrote it: no commit headers, one commit
    // per block, zero padding.
    let mut seg = vec![0u8; 4096];
    seg[..32].copy_from_slice(&format::encode_header_v1(1));
    for id in 1..=3u64 {
        let mut q = Vec::new();
        let (ch, b) = (channel(1), body(1, id));
        format::encode_record(&mut q, id, id, 1_000 + id, &ch, &b);
        q.resize(q.len().next_multiple_of(4096), 0);
        seg.extend_from_slice(&q);
    }
    fs::write(dir.path().join(format::segment_file_name(1)), &seg).unwrap();
    let cfg = config(dir.path(), 64 << 20);
    run(async {
        let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
        assert_eq!(rec.records.len(), 3);
        check_all(&rec.records);
        assert!(rec.report.upgraded_from_v1);
        let lsn = append(&wal, 1, 4).unwrap();
        assert_eq!(lsn.0, 4);
        wal.durable(lsn).await.unwrap();
        wal.close().await.unwrap();
    });
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2, "writing goes on in a new segment");
    assert_eq!(
        fs::read(&segs[0]).unwrap(),
        seg,
        "the version-1 segment is unchanged"
    );
    assert_eq!(open_count(&cfg), 4);
    let v = check::verify(dir.path()).unwrap();
    assert!(!v.is_damaged(), "{v}");
    assert_eq!(v.segments[0].version, Some(1));
    assert_eq!(v.segments[1].version, Some(2));
}
