//! Recovery at open: check that no segment is missing, scan every segment in LSN order,
//! verify each record's checksum and LSN continuity, cut a torn tail of the last segment,
//! and refuse any other damage.
//!
//! The rules (each a row of the recovery table in `docs/wal.md`, each with a test):
//! - The start file (`START`) names the first LSN the log must hold. No segment starting
//!   there is [`WalError::MissingSegment`] (the oldest segments are gone). Segments wholly
//!   before it are what a reclaim meant to remove before a crash: they are removed now.
//!   A log without a start file gets one from its first segment if that segment is version
//!   1 (an upgrade: older losses cannot be told) or starts at LSN 1 (a crash while the log
//!   was created); otherwise it is [`WalError::StartFile`].
//! - Segments must continue each other: a segment's first LSN is the previous segment's
//!   next LSN. Otherwise [`WalError::Sequence`] (a missing middle segment, or a stray one).
//! - The last segment may end in a torn tail: damage with nothing valid after it. It is
//!   truncated to the block after its last whole commit, made durable, and reported
//!   ([`TailCut`]). Only a commit whose fdatasync never returned can be there.
//! - Damage in the last segment **followed by a valid commit** is not a torn write: each
//!   commit is synced before the next starts, so the damaged bytes were acknowledged.
//!   [`WalError::DamagedBeforeValid`], naming the segment and offset; nothing is changed.
//! - The last segment may have no valid header if the crash hit its creation (rotation):
//!   if it holds nothing beyond the header block, the header is rewritten.
//! - Any damage in another segment is [`WalError::Corrupt`], naming the segment and the
//!   offset: those records were acknowledged, and silently dropping them is not ours to
//!   decide (`ringbearer wal repair` is the operator's explicit choice).
//! - A version-1 last segment is not written to any more: the log goes on in a new
//!   version-2 segment (an empty one is rewritten as version 2).
//!
//! Not here: rebuilding channel windows from the records (the server does that).

use crate::error::WalError;
use crate::format::{self, StopReason, BLOCK_BYTES, SEGMENT_HEADER_BYTES, START_FILE_NAME};
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
    /// Segments before the start file's LSN, left by a reclaim interrupted by a crash, and
    /// removed at this open.
    pub reclaimed_at_open: Vec<String>,
    /// The start file was written at this open: for a new log, after a crash during its
    /// creation, or for a log written before the start file existed (an upgrade).
    pub start_written: Option<Lsn>,
    /// The last segment was in the version-1 format: writing goes on in a new segment.
    pub upgraded_from_v1: bool,
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
    /// The start file to write once the first segment exists (a new or upgraded log).
    pub write_start: Option<u64>,
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
            None if name == START_FILE_NAME => {}
            None => report.ignored_files.push(name),
        }
    }
    names.sort();
    report.ignored_files.sort();

    let start_path = dir.join(START_FILE_NAME);
    let start = match storage
        .read_small(&start_path)
        .await
        .map_err(|e| WalError::io("reading", &start_path, e))?
    {
        None => None,
        Some(b) => Some(format::decode_start(&b).map_err(|e| WalError::StartFile {
            path: start_path.clone(),
            problem: format!("unreadable start file: {e}"),
        })?),
    };
    let mut write_start = None;
    if let Some(s) = start {
        let at = names.iter().position(|(f, _)| *f >= s);
        match at.map(|i| names[i].0) {
            Some(f) if f == s => {
                // A reclaim wrote the start file and crashed before removing these.
                for (_, name) in names.drain(..at.unwrap_or(0)) {
                    let path = dir.join(&name);
                    storage
                        .remove(&path)
                        .await
                        .map_err(|e| WalError::io("removing reclaimed segment", &path, e))?;
                    storage
                        .sync_dir(dir)
                        .await
                        .map_err(|e| WalError::io("syncing directory", dir, e))?;
                    report.reclaimed_at_open.push(name);
                }
            }
            found => {
                return Err(WalError::MissingSegment {
                    dir: dir.to_owned(),
                    expected: s,
                    found: found.or(names.first().map(|n| n.0)),
                })
            }
        }
    } else if names.is_empty() {
        write_start = Some(1);
    }

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

        let header = match format::decode_header(&bytes) {
            Ok(h) if h.first_lsn == first => h,
            Ok(h) => {
                return Err(WalError::Corrupt {
                    segment: path,
                    offset: 16,
                    reason: StopReason::HeaderLsnMismatch {
                        name: first,
                        header: h.first_lsn,
                    },
                })
            }
            Err(e) if last && size <= SEGMENT_HEADER_BYTES => {
                // A crash while the segment was being created: nothing was ever written
                // after its header, so writing the header again loses nothing.
                let salt = new_salt(first);
                rewrite_header(&file, first, salt)
                    .await
                    .map_err(|e| WalError::io("rewriting header of", &path, e))?;
                report.tail_cut = Some(TailCut {
                    segment: path.clone(),
                    offset: 0,
                    kept_bytes: SEGMENT_HEADER_BYTES,
                    discarded_bytes: size,
                    reason: StopReason::BadHeader(e),
                });
                bytes = format::encode_header(first, salt).to_vec();
                bytes.resize(SEGMENT_HEADER_BYTES as usize, 0);
                format::decode_header(&bytes).expect("just encoded")
            }
            Err(e) => {
                return Err(WalError::Corrupt {
                    segment: path,
                    offset: 0,
                    reason: StopReason::BadHeader(e),
                })
            }
        };
        if i == 0 && start.is_none() && write_start.is_none() {
            // No start file. Version 1: a log from before the start file (losses before
            // this open cannot be told). Version 2 from LSN 1: a crash while the log was
            // created. Version 2 from a later LSN: the start file is gone.
            if header.version == format::FORMAT_VERSION_1 || first <= 1 {
                write_start = Some(first);
            } else {
                return Err(WalError::StartFile {
                    path: start_path,
                    problem: format!(
                        "missing, and the first segment {name} does not start at LSN 1: older segments may be missing"
                    ),
                });
            }
        }

        let scan = format::scan_records(&bytes, &header);
        let mut meta = SegmentMeta::new(first, path.clone(), scan.valid_end, header.salt);
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
            if let Some((valid_at, valid_lsn)) = scan.valid_after {
                return Err(WalError::DamagedBeforeValid {
                    segment: path,
                    offset,
                    reason,
                    valid_at,
                    valid_lsn,
                });
            }
            // Version 2: cut at the block boundary after the last whole commit. Its padding
            // (zeros, written and synced with it) stays, so the file keeps ending on a
            // block and a later crash can only add bytes where the next commit starts.
            let cut_to = if header.version == format::FORMAT_VERSION_1 {
                scan.valid_end
            } else {
                format::align_up(scan.valid_end)
            };
            file.truncate(cut_to)
                .await
                .map_err(|e| WalError::io("cutting the tail of", &path, e))?;
            report.tail_cut = Some(TailCut {
                segment: path.clone(),
                offset,
                kept_bytes: cut_to,
                discarded_bytes: size.saturating_sub(cut_to),
                reason,
            });
        }
        expected = Some(scan.next_lsn);
        if last && header.version == format::FORMAT_VERSION_1 {
            report.upgraded_from_v1 = true;
            if scan.records.is_empty() {
                // Nothing in it: it becomes a version-2 segment in place.
                meta.salt = new_salt(first);
                rewrite_header(&file, first, meta.salt)
                    .await
                    .map_err(|e| WalError::io("rewriting header of", &path, e))?;
                meta.bytes = SEGMENT_HEADER_BYTES;
                active = Some((file, SEGMENT_HEADER_BYTES));
            } else {
                // Complete as it is; the caller starts the next segment (version 2).
                file.sync()
                    .await
                    .map_err(|e| WalError::io("syncing", &path, e))?;
                let _ = file.close().await;
            }
        } else if last {
            // Durable before anything new is acknowledged after it: the cut, and any
            // recovered bytes that were only in the page cache (buffered fallback).
            file.sync()
                .await
                .map_err(|e| WalError::io("syncing", &path, e))?;
            active = Some((file, format::align_up(scan.valid_end)));
        } else {
            let _ = file.close().await;
        }
        segments.push_back(meta);
    }

    let next_lsn = expected.unwrap_or(1);
    report.records = records.len() as u64;
    report.first_lsn = records.first().map(|r| r.lsn).unwrap_or_default();
    report.next_lsn = Lsn(next_lsn);
    report.direct_io = storage.direct_io();
    report.start_written = write_start.map(Lsn);
    Ok(Recovered {
        recovery: Recovery { records, report },
        segments,
        active,
        next_lsn,
        write_start,
    })
}

/// A salt for a new segment's header: distinct per segment and unknowable to a client that
/// could place bytes in a payload (time, process id, LSN and a counter, mixed by CRC32C).
pub(crate) fn new_salt(first_lsn: u64) -> u32 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(&nanos.to_le_bytes());
    b[8..16].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
    b[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    b[24..32].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let addr = &b as *const _ as u64;
    crc32c::crc32c_append(crc32c::crc32c(&b), &addr.to_le_bytes())
}

/// Writes the start file naming `first_lsn` (atomic and durable).
pub(crate) async fn write_start<S: Storage>(
    storage: &S,
    dir: &Path,
    first_lsn: u64,
) -> Result<(), WalError> {
    storage
        .replace_small(dir, START_FILE_NAME, &format::encode_start(first_lsn))
        .await
        .map_err(|e| WalError::io("writing", dir.join(START_FILE_NAME), e))
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
pub(crate) async fn write_header<F: SegmentFile>(
    file: &F,
    first_lsn: u64,
    salt: u32,
) -> io::Result<()> {
    let mut buf = file.alloc(BLOCK_BYTES as usize);
    let b = buf.bytes_mut();
    b.fill(0);
    b[..format::HEADER_FIELDS_BYTES].copy_from_slice(&format::encode_header(first_lsn, salt));
    let n = file.write_at(buf, 0).await?;
    if n as u64 != BLOCK_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short header write: {n} of {BLOCK_BYTES} bytes"),
        ));
    }
    Ok(())
}

async fn rewrite_header<F: SegmentFile>(file: &F, first_lsn: u64, salt: u32) -> io::Result<()> {
    file.truncate(0).await?;
    write_header(file, first_lsn, salt).await?;
    file.sync().await
}

/// Creates a segment: the file, its header, fdatasync. The caller syncs the directory.
pub(crate) async fn create_segment<S: Storage>(
    storage: &S,
    path: &Path,
    first_lsn: u64,
    salt: u32,
) -> io::Result<S::File> {
    let file = storage.create(path).await?;
    // On failure the file is dropped, never closed (IMPORTANT: see storage.rs).
    write_header(&file, first_lsn, salt).await?;
    file.sync().await?;
    Ok(file)
}
