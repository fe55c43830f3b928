//! Recovery at open: scan every segment in LSN order, verify each record's checksum and
//! LSN continuity, cut a torn or corrupt tail of the last segment, and refuse corruption
//! anywhere else.
//!
//! The rules (each a row of the crash table in `docs/wal.md`, each with a test):
//! - Segments must continue each other: a segment's first LSN is the previous segment's
//!   next LSN. Otherwise [`WalError::Sequence`] (a missing or stray segment). A gap before
//!   the first segment is not detectable: it looks like reclaimed segments.
//! - The last segment may end in a torn, zeroed or corrupt tail: it is truncated to the end
//!   of its last valid record, made durable, and reported ([`TailCut`]). Only records whose
//!   commit never completed can be there, because a commit is acknowledged only after its
//!   fdatasync, and the next commit starts after it.
//! - The last segment may have no valid header if the crash hit its creation (rotation):
//!   if it holds nothing beyond the header block, the header is rewritten.
//! - Any damage in another segment is [`WalError::Corrupt`], naming the segment and the
//!   offset: those records were acknowledged, and silently dropping them is not ours to
//!   decide.
//!
//! Not here: rebuilding channel windows from the records (the server does that).

use crate::error::WalError;
use crate::format::{self, StopReason, BLOCK_BYTES, SEGMENT_HEADER_BYTES};
use crate::storage::{IoBuf, SegmentFile, Storage};
use crate::wal::{Lsn, RecoveredRecord, SegmentMeta};
use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
};

/// Segments are read in pieces of this size (a multiple of the block).
const READ_CHUNK_BYTES: usize = 1 << 20;

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every valid record, in LSN order (consecutive LSNs).
    pub records: Vec<RecoveredRecord>,
    pub report: RecoveryReport,
}

/// A summary of recovery, for the log and for health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments_scanned: usize,
    pub records: u64,
    /// Bytes of valid records and their segment headers.
    pub bytes: u64,
    /// LSN of the first recovered record (`Lsn(0)` if none).
    pub first_lsn: Lsn,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// The tail cut from the last segment, if any.
    pub tail_cut: Option<TailCut>,
    /// Files in the directory that are not segments (left alone).
    pub ignored_files: Vec<String>,
    /// Whether segments are opened with O_DIRECT (false: the buffered fallback).
    pub direct_io: bool,
}

/// A tail cut from the last segment at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    pub segment: PathBuf,
    /// Where the scan stopped.
    pub offset: u64,
    /// The segment's length after the cut (end of its last valid record).
    pub kept_bytes: u64,
    /// Bytes removed from the end of the segment.
    pub discarded_bytes: u64,
    pub reason: StopReason,
}

/// Recovery's result, with what the log needs to go on writing.
pub(crate) struct Recovered<F> {
    pub recovery: Recovery,
    pub segments: VecDeque<SegmentMeta>,
    /// The last segment, open for writing, and the offset of the next commit.
    pub active: Option<(F, u64)>,
    pub next_lsn: u64,
}

pub(crate) async fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
) -> Result<Recovered<S::File>, WalError> {
    let mut report = RecoveryReport::default();
    let mut names = Vec::new();
    for name in storage
        .list(dir)
        .await
        .map_err(|e| WalError::io("listing", dir, e))?
    {
        match format::parse_segment_file_name(&name) {
            Some(first) => names.push((first, name)),
            None => report.ignored_files.push(name),
        }
    }
    names.sort();
    report.ignored_files.sort();

    let mut records = Vec::new();
    let mut segments = VecDeque::new();
    let mut active = None;
    let mut expected: Option<u64> = None;
    for (i, (first, name)) in names.iter().enumerate() {
        let (first, last) = (*first, i + 1 == names.len());
        let path = dir.join(name);
        let want = expected.unwrap_or(first.max(1));
        if first != want {
            return Err(WalError::Sequence {
                segment: path,
                expected: want,
                found: first,
            });
        }
        let file = storage
            .open(&path)
            .await
            .map_err(|e| WalError::io("opening segment", &path, e))?;
        let size = file
            .size()
            .await
            .map_err(|e| WalError::io("reading size of", &path, e))?;
        let mut bytes = read_all(&file, size)
            .await
            .map_err(|e| WalError::io("reading segment", &path, e))?;
        report.segments_scanned += 1;

        match format::decode_header(&bytes) {
            Ok(h) if h == first => {}
            Ok(h) => {
                return Err(WalError::Corrupt {
                    segment: path,
                    offset: 16,
                    reason: StopReason::HeaderLsnMismatch {
                        name: first,
                        header: h,
                    },
                })
            }
            Err(e) if last && size <= SEGMENT_HEADER_BYTES => {
                // A crash while the segment was being created: nothing was ever written
                // after its header, so writing the header again loses nothing.
                rewrite_header(&file, first)
                    .await
                    .map_err(|e| WalError::io("rewriting header of", &path, e))?;
                report.tail_cut = Some(TailCut {
                    segment: path.clone(),
                    offset: 0,
                    kept_bytes: SEGMENT_HEADER_BYTES,
                    discarded_bytes: size,
                    reason: StopReason::BadHeader(e),
                });
                bytes = format::encode_header(first).to_vec();
                bytes.resize(SEGMENT_HEADER_BYTES as usize, 0);
            }
            Err(e) => {
                return Err(WalError::Corrupt {
                    segment: path,
                    offset: 0,
                    reason: StopReason::BadHeader(e),
                })
            }
        }

        let scan = format::scan_records(&bytes, first);
        let mut meta = SegmentMeta::new(first, path.clone(), scan.valid_end);
        for r in &scan.records {
            meta.note(r.channel, r.id, r.ts_ms);
            records.push(RecoveredRecord {
                lsn: Lsn(r.lsn),
                channel: r.channel.to_owned(),
                id: r.id,
                ts_ms: r.ts_ms,
                body: r.body.to_vec(),
            });
        }
        meta.next_lsn = scan.next_lsn;
        report.bytes += scan.valid_end;
        if let Some((offset, reason)) = scan.stop {
            if !last {
                return Err(WalError::Corrupt {
                    segment: path,
                    offset,
                    reason,
                });
            }
            file.truncate(scan.valid_end)
                .await
                .map_err(|e| WalError::io("cutting the tail of", &path, e))?;
            report.tail_cut = Some(TailCut {
                segment: path.clone(),
                offset,
                kept_bytes: scan.valid_end,
                discarded_bytes: size - scan.valid_end,
                reason,
            });
        }
        expected = Some(scan.next_lsn);
        segments.push_back(meta);
        if last {
            // Durable before anything new is acknowledged after it: the cut, and any
            // recovered bytes that were only in the page cache (buffered fallback).
            file.sync()
                .await
                .map_err(|e| WalError::io("syncing", &path, e))?;
            active = Some((file, format::align_up(scan.valid_end)));
        } else {
            let _ = file.close().await;
        }
    }

    let next_lsn = expected.unwrap_or(1);
    report.records = records.len() as u64;
    report.first_lsn = records.first().map(|r| r.lsn).unwrap_or_default();
    report.next_lsn = Lsn(next_lsn);
    report.direct_io = storage.direct_io();
    Ok(Recovered {
        recovery: Recovery { records, report },
        segments,
        active,
        next_lsn,
    })
}

async fn read_all<F: SegmentFile>(file: &F, size: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let want = READ_CHUNK_BYTES.min((size - out.len() as u64) as usize);
        let chunk = file.read_at(out.len() as u64, want).await?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Writes a segment's header block at offset 0 (no sync).
pub(crate) async fn write_header<F: SegmentFile>(file: &F, first_lsn: u64) -> io::Result<()> {
    let mut buf = file.alloc(BLOCK_BYTES as usize);
    let b = buf.bytes_mut();
    b.fill(0);
    b[..format::HEADER_FIELDS_BYTES].copy_from_slice(&format::encode_header(first_lsn));
    let n = file.write_at(buf, 0).await?;
    if n as u64 != BLOCK_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short header write: {n} of {BLOCK_BYTES} bytes"),
        ));
    }
    Ok(())
}

async fn rewrite_header<F: SegmentFile>(file: &F, first_lsn: u64) -> io::Result<()> {
    file.truncate(0).await?;
    write_header(file, first_lsn).await?;
    file.sync().await
}

/// Creates a segment: the file, its header, fdatasync. The caller syncs the directory.
pub(crate) async fn create_segment<S: Storage>(
    storage: &S,
    path: &Path,
    first_lsn: u64,
) -> io::Result<S::File> {
    let file = storage.create(path).await?;
    // On failure the file is dropped, never closed (IMPORTANT: see storage.rs).
    write_header(&file, first_lsn).await?;
    file.sync().await?;
    Ok(file)
}
