//! Damage at the end of the last segment with nothing valid after it (a flipped byte or a
//! cut in the last commit, a zero-filled tail, a half-created segment) is a torn tail: it is
//! cut at open (to the end of the last whole commit) and reported; every record before it
//! comes back intact, and the log goes on appending after the cut.
mod common;

use common::*;
use ringbearer_persist::{format::StopReason, Lsn, Wal};
use std::{fs, io::Write, path::Path};

/// Writes records 1..=n of channel 1 in commits of 5 (appends do not yield, so the
/// committer takes all five at the `durable` await), closes, returns the config.
fn write_log(dir: &Path, n: u64) -> ringbearer_persist::WalConfig {
    let cfg = config(dir, 1 << 20);
    run(async {
        let (wal, _) = Wal::open(cfg.clone()).await.unwrap();
        for id in 1..=n {
            let lsn = append(&wal, 1, id).unwrap();
            if id % 5 == 0 {
                wal.durable(lsn).await.unwrap();
            }
        }
        wal.close().await.unwrap();
    });
    cfg
}

/// Reopens, checks what was kept, appends one more and checks it lands after the cut.
fn reopen_expect(cfg: &ringbearer_persist::WalConfig, kept: usize, reason: Option<StopReason>) {
    run(async {
        let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
        assert_eq!(rec.records.len(), kept, "{:?}", rec.report);
        check_all(&rec.records);
        assert_eq!(
            rec.report.tail_cut.as_ref().map(|c| c.reason),
            reason,
            "{:?}",
            rec.report
        );
        if let Some(cut) = &rec.report.tail_cut {
            assert_eq!(fs::metadata(&cut.segment).unwrap().len(), cut.kept_bytes);
        }
        let lsn = append(&wal, 1, 10_000).unwrap();
        assert_eq!(lsn, Lsn(kept as u64 + 1));
        wal.durable(lsn).await.unwrap();
        wal.close().await.unwrap();
        // The cut is final: the next open finds a clean log with the new record.
        let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
        assert_eq!(rec.report.tail_cut, None);
        assert_eq!(rec.records.len(), kept + 1);
        assert_eq!(rec.records[kept].id, 10_000);
        wal.close().await.unwrap();
    });
}

/// Offset of the record with 0-based index `i` in a single-segment log written by
/// `write_log` (found by scanning the file the same way recovery does).
fn record_offset(seg: &Path, i: usize) -> u64 {
    let bytes = fs::read(seg).unwrap();
    let header = ringbearer_persist::format::decode_header(&bytes).unwrap();
    let scan = ringbearer_persist::format::scan_records(&bytes, &header);
    let r = &scan.records[i];
    // The body is unique; locate it.
    let start = bytes
        .windows(r.body.len())
        .position(|w| w == r.body)
        .unwrap();
    (start - ringbearer_persist::format::RECORD_HEADER_BYTES - r.channel.len()) as u64
}

#[test]
fn a_flipped_byte_in_the_last_commit_cuts_that_commit() {
    let dir = TempDir::new("flip");
    let cfg = write_log(dir.path(), 20);
    let seg = segments(dir.path()).pop().unwrap();
    // Record 18 is in the last commit (16..=20): nothing valid follows it.
    let at = record_offset(&seg, 17) + 40;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[at as usize] ^= 0x5a;
    fs::write(&seg, bytes).unwrap();
    reopen_expect(&cfg, 15, Some(StopReason::Checksum));
}

#[test]
fn a_cut_mid_record_is_a_torn_tail() {
    let dir = TempDir::new("truncate");
    let cfg = write_log(dir.path(), 20);
    let seg = segments(dir.path()).pop().unwrap();
    let at = record_offset(&seg, 17) + 20;
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(at)
        .unwrap();
    // The whole torn commit goes (its fdatasync never returned), not only its last records.
    reopen_expect(&cfg, 15, Some(StopReason::Truncated));
}

#[test]
fn a_zero_filled_tail_is_cut() {
    let dir = TempDir::new("zeroed");
    let cfg = write_log(dir.path(), 20);
    let seg = segments(dir.path()).pop().unwrap();
    // The file grew but the blocks never got their data (as after a crash mid-extension).
    let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&vec![0u8; 3 * 4096]).unwrap();
    drop(f);
    reopen_expect(&cfg, 20, Some(StopReason::ZeroedTail));
}

#[test]
fn zeros_over_the_last_commit_cut_it() {
    let dir = TempDir::new("zeroed-commit");
    let cfg = write_log(dir.path(), 20);
    let seg = segments(dir.path()).pop().unwrap();
    // The last commit (records 16..=20) started on a block boundary, with its commit
    // header; zero it out.
    let start = record_offset(&seg, 15) - ringbearer_persist::format::COMMIT_HEADER_BYTES as u64;
    assert_eq!(start % 4096, 0);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[start as usize..].fill(0);
    fs::write(&seg, bytes).unwrap();
    reopen_expect(&cfg, 15, Some(StopReason::ZeroedTail));
}

#[test]
fn a_half_created_segment_from_a_crash_during_rotation_is_rebuilt() {
    let header = ringbearer_persist::format::encode_header(21, 9).to_vec();
    let mut flipped = header.clone();
    flipped[20] ^= 1;
    // The next segment was being created: its header is missing, short, garbled, or its
    // block is allocated but was never written.
    for content in [vec![], header[..10].to_vec(), flipped, vec![0u8; 4096]] {
        let dir = TempDir::new("rotation");
        let cfg = write_log(dir.path(), 20);
        let next = dir
            .path()
            .join(ringbearer_persist::format::segment_file_name(21));
        fs::write(&next, &content).unwrap();
        run(async {
            let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
            assert_eq!(rec.records.len(), 20);
            let cut = rec.report.tail_cut.clone().expect("reported");
            assert_eq!(cut.segment, next);
            assert!(matches!(cut.reason, StopReason::BadHeader(_)), "{cut:?}");
            assert_eq!(append(&wal, 1, 21).unwrap(), Lsn(21));
            wal.close().await.unwrap();
            let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
            assert_eq!(rec.records.len(), 21);
            assert_eq!(rec.report.tail_cut, None);
            assert_eq!(rec.report.segments_scanned, 2);
            wal.close().await.unwrap();
        });
    }
}

#[test]
fn a_crash_right_after_rotation_leaves_an_empty_segment_that_is_reused() {
    let dir = TempDir::new("rotation-done");
    let cfg = write_log(dir.path(), 20);
    // The header of the next segment is durable, no record is in it yet.
    let next = dir
        .path()
        .join(ringbearer_persist::format::segment_file_name(21));
    let mut block = ringbearer_persist::format::encode_header(21, 9).to_vec();
    block.resize(4096, 0);
    fs::write(&next, &block).unwrap();
    run(async {
        let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
        assert_eq!(rec.records.len(), 20);
        assert_eq!(rec.report.tail_cut, None);
        assert_eq!(append(&wal, 1, 21).unwrap(), Lsn(21));
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(cfg.clone()).await.unwrap();
        assert_eq!(rec.records.len(), 21);
        assert_eq!(
            segments(dir.path()),
            vec![segments(dir.path())[0].clone(), next.clone()]
        );
        wal.close().await.unwrap();
    });
}
