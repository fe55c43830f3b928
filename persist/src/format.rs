//! The on-disk format of the write-ahead log, with pure encode and scan functions: segment
//! file names, the segment header, the record layout and the padding rules.
//!
//! No I/O and no clock here: bytes come in as arguments, so the parser is tested (and
//! property-tested against arbitrary bytes) without a disk. `docs/wal.md` documents every
//! byte; this file is the reference implementation of that page, and the two change
//! together (bump [`FORMAT_VERSION`] for any change).
//!
//! Summary (little-endian throughout):
//! - A segment is `{first_lsn:020}.wal`. Block 0 (4096 bytes) holds the 32-byte header,
//!   then zeros. Records start at offset 4096. Version 2 headers carry a random `salt`.
//! - A record is `[len u32][crc32c u32][lsn u64][id u64][ts_ms u64][channel_len u16]
//!   [channel][body]`, where `len` counts the bytes after the crc field and the crc covers
//!   the `len` field and those bytes.
//! - Each group commit starts on a block boundary and is zero-padded to the next one, so a
//!   commit never rewrites a block that holds acknowledged records. Fewer than 4 bytes left
//!   in a block are always padding (a record never starts there).
//! - Version 2: each commit opens with a 24-byte commit header (`RBCM`, a crc32c seeded with
//!   the segment's salt, first LSN, record count, length). A valid commit header after
//!   damage proves the damage is not a torn write: that commit was only written after the
//!   damaged one was synced. Version 1 (no commit headers, `len` 0 = "skip to the next
//!   block") is still read.

use ringbearer_core::channel::CHANNEL_NAME_MAX_BYTES;
use std::fmt;

/// The format's block: commits start on and pad to this boundary, and it is the I/O unit
/// of direct I/O. A device whose logical block is larger than this is refused.
pub const BLOCK_BYTES: u64 = 4096;
/// The header occupies the whole first block, written once when the segment is created.
pub const SEGMENT_HEADER_BYTES: u64 = BLOCK_BYTES;
/// First eight bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RBWALSEG";
/// Version of the layout this code writes. Readers accept it and [`FORMAT_VERSION_1`].
pub const FORMAT_VERSION: u16 = 2;
/// The first layout: no commit headers, no salt. Still read (segments written before the
/// upgrade); never written.
pub const FORMAT_VERSION_1: u16 = 1;
/// Version 2: the 24-byte header at the start of every commit.
pub const COMMIT_HEADER_BYTES: usize = 24;
/// First four bytes of a commit header. As a record `len` it would be ~1.3 GB, far above
/// any valid record, so a reader never confuses the two.
pub const COMMIT_MARKER: [u8; 4] = *b"RBCM";
/// Longest commit a reader accepts: the writer's largest `max_batch_bytes` (64 MiB) plus
/// one largest record (a commit takes at least one record).
pub const COMMIT_MAX_BYTES: usize = (64 << 20) + RECORD_MAX_BYTES + COMMIT_HEADER_BYTES;
/// Meaningful bytes of the header (the rest of block 0 is zero).
pub const HEADER_FIELDS_BYTES: usize = 32;
/// `len` + `crc`.
pub const RECORD_PREFIX_BYTES: usize = 8;
/// `lsn` + `id` + `ts_ms` + `channel_len`.
pub const RECORD_FIXED_BYTES: usize = 26;
/// Everything before the channel bytes.
pub const RECORD_HEADER_BYTES: usize = RECORD_PREFIX_BYTES + RECORD_FIXED_BYTES;
/// A channel name is at most this long (SPEC §1, as in `ringbearer_core::channel`).
pub const CHANNEL_MAX_BYTES: usize = CHANNEL_NAME_MAX_BYTES;
/// A record body (one rkyv `MessageFrame`) is at most this long. A frame carries at most
/// one 64 KiB payload plus its metadata; 1 MiB leaves room without letting one record
/// dominate a 4 MiB group commit.
pub const BODY_MAX_BYTES: usize = 1 << 20;
/// The longest encoded record.
pub const RECORD_MAX_BYTES: usize = RECORD_HEADER_BYTES + CHANNEL_MAX_BYTES + BODY_MAX_BYTES;
/// Segment files end with this; other files in the directory are ignored.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Digits of the zero-padded first LSN in a segment's name (u64::MAX has 20).
const SEGMENT_NAME_DIGITS: usize = 20;

/// `00000000000000000001.wal`: the first LSN, zero-padded so names sort in LSN order.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!(
        "{first_lsn:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    )
}

/// The first LSN named by a segment file name, or `None` for any other file.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// The 32 header bytes of a version-2 segment: magic, version, flags, block size, first
/// LSN, salt, crc32c of bytes 0..28.
pub fn encode_header(first_lsn: u64, salt: u32) -> [u8; HEADER_FIELDS_BYTES] {
    encode_header_version(FORMAT_VERSION, first_lsn, salt)
}

/// A version-1 header (bytes 24..28 reserved, zero): for tests that read old logs.
pub fn encode_header_v1(first_lsn: u64) -> [u8; HEADER_FIELDS_BYTES] {
    encode_header_version(FORMAT_VERSION_1, first_lsn, 0)
}

fn encode_header_version(version: u16, first_lsn: u64, salt: u32) -> [u8; HEADER_FIELDS_BYTES] {
    let mut h = [0u8; HEADER_FIELDS_BYTES];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&version.to_le_bytes());
    // 10..12 reserved (flags), zero.
    h[12..16].copy_from_slice(&(BLOCK_BYTES as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    h[24..28].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// [`FORMAT_VERSION`] or [`FORMAT_VERSION_1`].
    pub version: u16,
    pub first_lsn: u64,
    /// Version 2: seeds every commit header's crc, so commit headers of another segment (or
    /// bytes a user placed in a payload) never pass as this segment's. Version 1: 0.
    pub salt: u32,
}

/// Why a segment header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than the header's bytes (a crash while creating the segment).
    Short,
    BadMagic,
    BadChecksum,
    UnsupportedVersion(u16),
    UnsupportedBlockSize(u32),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short => f.write_str("shorter than 32 bytes"),
            HeaderError::BadMagic => f.write_str("bad magic"),
            HeaderError::BadChecksum => f.write_str("header checksum mismatch"),
            HeaderError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            HeaderError::UnsupportedBlockSize(b) => write!(f, "unsupported block size {b}"),
        }
    }
}

/// Decodes and checks a segment header (version 1 or 2).
pub fn decode_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
    let h = bytes.get(..HEADER_FIELDS_BYTES).ok_or(HeaderError::Short)?;
    if h[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if crc32c::crc32c(&h[0..28]) != u32_at(h, 28) {
        return Err(HeaderError::BadChecksum);
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != FORMAT_VERSION && version != FORMAT_VERSION_1 {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let block = u32_at(h, 12);
    if u64::from(block) != BLOCK_BYTES {
        return Err(HeaderError::UnsupportedBlockSize(block));
    }
    Ok(SegmentHeader {
        version,
        first_lsn: u64_at(h, 16),
        salt: u32_at(h, 24),
    })
}

/// The header at the start of every version-2 commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitHeader {
    /// LSN of the commit's first record.
    pub first_lsn: u64,
    /// Records in the commit (at least 1).
    pub records: u32,
    /// Bytes from the commit's start to the end of its last record (the header included,
    /// the zero padding to the next block not).
    pub bytes: u32,
}

/// `[marker "RBCM"][crc u32][first_lsn u64][records u32][bytes u32]`; the crc is CRC32C of
/// the segment's salt (4 bytes, little-endian) followed by bytes 8..24.
pub fn encode_commit_header(salt: u32, c: &CommitHeader) -> [u8; COMMIT_HEADER_BYTES] {
    let mut h = [0u8; COMMIT_HEADER_BYTES];
    h[0..4].copy_from_slice(&COMMIT_MARKER);
    h[8..16].copy_from_slice(&c.first_lsn.to_le_bytes());
    h[16..20].copy_from_slice(&c.records.to_le_bytes());
    h[20..24].copy_from_slice(&c.bytes.to_le_bytes());
    let crc = commit_crc(salt, &h);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

fn commit_crc(salt: u32, h: &[u8]) -> u32 {
    crc32c::crc32c_append(
        crc32c::crc32c(&salt.to_le_bytes()),
        &h[8..COMMIT_HEADER_BYTES],
    )
}

/// The commit header at `b[0..]`, if one is there: marker, salted crc and plausible
/// fields. `None` for anything else (including too few bytes).
pub fn decode_commit_header(b: &[u8], salt: u32) -> Option<CommitHeader> {
    let h = b.get(..COMMIT_HEADER_BYTES)?;
    if h[0..4] != COMMIT_MARKER || commit_crc(salt, h) != u32_at(h, 4) {
        return None;
    }
    let c = CommitHeader {
        first_lsn: u64_at(h, 8),
        records: u32_at(h, 16),
        bytes: u32_at(h, 20),
    };
    let min = COMMIT_HEADER_BYTES + RECORD_HEADER_BYTES;
    (c.records >= 1 && (min..=COMMIT_MAX_BYTES).contains(&(c.bytes as usize))).then_some(c)
}

/// Name of the start file in a log's directory: the first LSN the log must still hold.
/// Written (atomically: a temporary file, fdatasync, rename, directory fsync) when the log
/// is created and by every reclaim before it removes a segment, so a missing oldest segment
/// is told apart from a reclaimed one.
pub const START_FILE_NAME: &str = "START";
/// First eight bytes of the start file.
pub const START_MAGIC: [u8; 8] = *b"RBWALSTA";
/// The start file's length.
pub const START_FILE_BYTES: usize = 32;
/// Version of the start file's layout.
pub const START_VERSION: u16 = 1;

/// The start file: magic, version, reserved (10..16), first LSN (16..24), reserved (24..28),
/// crc32c of bytes 0..28.
pub fn encode_start(first_lsn: u64) -> [u8; START_FILE_BYTES] {
    let mut h = [0u8; START_FILE_BYTES];
    h[0..8].copy_from_slice(&START_MAGIC);
    h[8..10].copy_from_slice(&START_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The first LSN a start file names.
pub fn decode_start(bytes: &[u8]) -> Result<u64, HeaderError> {
    if bytes.len() != START_FILE_BYTES {
        return Err(HeaderError::Short);
    }
    if bytes[0..8] != START_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if crc32c::crc32c(&bytes[0..28]) != u32_at(bytes, 28) {
        return Err(HeaderError::BadChecksum);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != START_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    Ok(u64_at(bytes, 16))
}

/// Bytes `encode_record` appends for a record with these lengths.
pub fn encoded_len(channel_len: usize, body_len: usize) -> usize {
    RECORD_HEADER_BYTES + channel_len + body_len
}

/// Appends one record to `out`. The caller has checked the limits
/// ([`CHANNEL_MAX_BYTES`], [`BODY_MAX_BYTES`]).
pub fn encode_record(out: &mut Vec<u8>, lsn: u64, id: u64, ts_ms: u64, channel: &str, body: &[u8]) {
    assert!(channel.len() <= CHANNEL_MAX_BYTES && body.len() <= BODY_MAX_BYTES);
    let start = out.len();
    let len = (RECORD_FIXED_BYTES + channel.len() + body.len()) as u32;
    out.reserve(RECORD_PREFIX_BYTES + len as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, patched below
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&ts_ms.to_le_bytes());
    out.extend_from_slice(&(channel.len() as u16).to_le_bytes());
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(body);
    let crc = record_crc(&out[start..start + 4], &out[start + RECORD_PREFIX_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn record_crc(len_field: &[u8], rest: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_field), rest)
}

/// The encoded length of the record starting at `bytes[0]` (an already validated record,
/// e.g. in the writer's queue).
pub fn record_len_at(bytes: &[u8]) -> usize {
    RECORD_PREFIX_BYTES + u32_at(bytes, 0) as usize
}

/// A record read in place from a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub lsn: u64,
    pub id: u64,
    pub ts_ms: u64,
    pub channel: &'a str,
    pub body: &'a [u8],
}

/// Reads the fields of an encoded record whose checksum was verified (or that this process
/// encoded). `None` if the fields do not fit together.
pub fn decode_fields(rec: &[u8]) -> Option<RecordRef<'_>> {
    let len = u32_at(rec, 0) as usize;
    let end = RECORD_PREFIX_BYTES + len;
    if len < RECORD_FIXED_BYTES || rec.len() < end {
        return None;
    }
    let channel_len = usize::from(u16::from_le_bytes([rec[32], rec[33]]));
    if channel_len > CHANNEL_MAX_BYTES || RECORD_HEADER_BYTES + channel_len > end {
        return None;
    }
    let channel =
        std::str::from_utf8(&rec[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + channel_len]).ok()?;
    Some(RecordRef {
        lsn: u64_at(rec, 8),
        id: u64_at(rec, 16),
        ts_ms: u64_at(rec, 24),
        channel,
        body: &rec[RECORD_HEADER_BYTES + channel_len..end],
    })
}

/// Why a scan stopped before the end of a segment. In the last segment this is where the
/// tail is cut; anywhere else it is corruption of acknowledged data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The segment header is missing, short or invalid.
    BadHeader(HeaderError),
    /// The header names a different first LSN than the file name.
    HeaderLsnMismatch { name: u64, header: u64 },
    /// A record (or its length field) runs past the end of the file: a torn write.
    Truncated,
    /// A record's checksum does not match: a torn or corrupted write.
    Checksum,
    /// A length field outside `[26, RECORD_MAX_BYTES - 8]`.
    BadLength(u32),
    /// Padding (after a commit, or the last bytes of a block) that is not all zero.
    NonZeroPadding,
    /// A whole zero block where a record must start, with only zeros after it: a zeroed tail
    /// (an extended but unwritten file end).
    ZeroedTail,
    /// A whole zero block where a record must start, followed by non-zero bytes.
    ZeroBlock,
    /// A checksummed record whose fields do not fit together (channel length, UTF-8).
    BadFields,
    /// A record whose LSN is not the next one.
    LsnOutOfSequence { expected: u64, found: u64 },
    /// Version 2: no valid commit header where a commit must start (non-zero bytes that are
    /// not a commit header with this segment's salt).
    BadCommitHeader,
    /// Version 2: a commit's records do not end where its header says.
    CommitLength,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::BadHeader(e) => write!(f, "bad segment header: {e}"),
            StopReason::HeaderLsnMismatch { name, header } => {
                write!(
                    f,
                    "header says first LSN {header} but the file name says {name}"
                )
            }
            StopReason::Truncated => {
                f.write_str("record runs past the end of the file (torn write)")
            }
            StopReason::Checksum => f.write_str("record checksum mismatch"),
            StopReason::BadLength(l) => write!(f, "implausible record length {l}"),
            StopReason::NonZeroPadding => f.write_str("non-zero bytes in padding"),
            StopReason::ZeroedTail => f.write_str("zero-filled tail"),
            StopReason::ZeroBlock => f.write_str("zero block followed by data"),
            StopReason::BadFields => f.write_str("record fields inconsistent"),
            StopReason::LsnOutOfSequence { expected, found } => {
                write!(f, "LSN out of sequence: expected {expected}, found {found}")
            }
            StopReason::BadCommitHeader => {
                f.write_str("no valid commit header where a commit starts")
            }
            StopReason::CommitLength => {
                f.write_str("commit records do not end where its header says")
            }
        }
    }
}

/// The result of scanning one segment's bytes.
#[derive(Debug)]
pub struct SegmentScan<'a> {
    /// Valid records, in order, LSNs consecutive from the header's first LSN.
    pub records: Vec<RecordRef<'a>>,
    /// End of the last valid record (or of the header): the length the file is cut to.
    pub valid_end: u64,
    /// The LSN the next record must carry.
    pub next_lsn: u64,
    /// Where and why the scan stopped early; `None` if it consumed the whole file.
    pub stop: Option<(u64, StopReason)>,
    /// After a stop: the offset and first LSN of valid data found past the damage — a commit
    /// header (version 2) or a record (version 1) at a later block boundary, with an LSN at
    /// least `next_lsn`. `Some` means the damage is not a torn tail: that data was written
    /// after the damaged commit had been synced, so the damaged bytes were acknowledged.
    pub valid_after: Option<(u64, u64)>,
}

/// Scans a segment's records after its header (already decoded and checked against the
/// file name): pure, so it is fuzzed directly. Never panics on any input.
pub fn scan_records<'a>(bytes: &'a [u8], header: &SegmentHeader) -> SegmentScan<'a> {
    let mut scan = if header.version == FORMAT_VERSION_1 {
        scan_v1(bytes, header.first_lsn)
    } else {
        scan_v2(bytes, header.first_lsn, header.salt)
    };
    if let Some((at, _)) = scan.stop {
        scan.valid_after = find_valid_after(bytes, at, scan.next_lsn, header);
    }
    scan
}

fn new_scan<'a>(n: usize, first_lsn: u64) -> SegmentScan<'a> {
    SegmentScan {
        records: Vec::new(),
        valid_end: SEGMENT_HEADER_BYTES.min(n as u64),
        next_lsn: first_lsn,
        stop: None,
        valid_after: None,
    }
}

/// The first valid commit header (version 2) or checksummed record (version 1) at a block
/// boundary after `at` whose LSN is at least `next_lsn`.
fn find_valid_after(bytes: &[u8], at: u64, next_lsn: u64, h: &SegmentHeader) -> Option<(u64, u64)> {
    let block = BLOCK_BYTES as usize;
    let mut b = (at as usize / block + 1) * block;
    while b + 4 <= bytes.len() {
        let found = if h.version == FORMAT_VERSION_1 {
            checked_record(bytes, b).ok().map(|(r, _)| r.lsn)
        } else {
            decode_commit_header(&bytes[b..], h.salt).map(|c| c.first_lsn)
        };
        if let Some(lsn) = found.filter(|&l| l >= next_lsn) {
            return Some((b as u64, lsn));
        }
        b += block;
    }
    None
}

/// The record at `pos` if its length, checksum and fields are valid, with its end.
fn checked_record(bytes: &[u8], pos: usize) -> Result<(RecordRef<'_>, usize), StopReason> {
    let n = bytes.len();
    if pos + 4 > n {
        return Err(StopReason::Truncated);
    }
    let len = u32_at(bytes, pos);
    let len_usize = len as usize;
    if !(RECORD_FIXED_BYTES..=RECORD_MAX_BYTES - RECORD_PREFIX_BYTES).contains(&len_usize) {
        return Err(StopReason::BadLength(len));
    }
    let end = pos + RECORD_PREFIX_BYTES + len_usize;
    if end > n {
        return Err(StopReason::Truncated);
    }
    let rec = &bytes[pos..end];
    if record_crc(&rec[0..4], &rec[RECORD_PREFIX_BYTES..]) != u32_at(rec, 4) {
        return Err(StopReason::Checksum);
    }
    let r = decode_fields(rec).ok_or(StopReason::BadFields)?;
    Ok((r, end))
}

/// Version 1: commits have no header; a `len` of 0 off a block boundary is the padding after
/// a commit, at a block boundary it is the end of the data.
fn scan_v1(bytes: &[u8], first_lsn: u64) -> SegmentScan<'_> {
    let block = BLOCK_BYTES as usize;
    let n = bytes.len();
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    let mut scan = new_scan(n, first_lsn);
    let stop = |at: usize, why: StopReason| Some((at as u64, why));
    while pos < n {
        let block_end = (pos / block + 1) * block;
        if block_end - pos < 4 {
            // The last 1–3 bytes of a block never start a record.
            let end = block_end.min(n);
            if !all_zero(&bytes[pos..end]) {
                scan.stop = stop(pos, StopReason::NonZeroPadding);
                return scan;
            }
            pos = end;
            continue;
        }
        if pos + 4 > n {
            scan.stop = stop(pos, StopReason::Truncated);
            return scan;
        }
        if u32_at(bytes, pos) == 0 {
            if pos.is_multiple_of(block) {
                scan.stop = stop(pos, zero_block_reason(&bytes[pos..]));
                return scan;
            }
            // Commit padding up to the next block.
            let end = block_end.min(n);
            if !all_zero(&bytes[pos..end]) {
                scan.stop = stop(pos, StopReason::NonZeroPadding);
                return scan;
            }
            pos = end;
            continue;
        }
        match next_record(bytes, pos, &mut scan) {
            Ok(end) => pos = end,
            Err(why) => {
                scan.stop = stop(pos, why);
                return scan;
            }
        }
    }
    scan
}

fn zero_block_reason(rest: &[u8]) -> StopReason {
    if all_zero(rest) {
        StopReason::ZeroedTail
    } else {
        StopReason::ZeroBlock
    }
}

/// Checks the record at `pos` (length, checksum, fields, LSN), adds it to `scan` and returns
/// its end.
fn next_record<'a>(
    bytes: &'a [u8],
    pos: usize,
    scan: &mut SegmentScan<'a>,
) -> Result<usize, StopReason> {
    let (r, end) = checked_record(bytes, pos)?;
    if r.lsn != scan.next_lsn {
        return Err(StopReason::LsnOutOfSequence {
            expected: scan.next_lsn,
            found: r.lsn,
        });
    }
    scan.records.push(r);
    scan.next_lsn += 1;
    scan.valid_end = end as u64;
    Ok(end)
}

/// Version 2: each commit starts on a block boundary with a commit header, holds exactly
/// the records it names, ends where it says, and is zero-padded to the next block. Only
/// whole commits are returned: a commit that does not check out entirely was never
/// acknowledged if it is the tail (its fdatasync did not return), and `valid_end` (where a
/// tail is cut) is the end of the last whole commit.
fn scan_v2(bytes: &[u8], first_lsn: u64, salt: u32) -> SegmentScan<'_> {
    let n = bytes.len();
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    let mut scan = new_scan(n, first_lsn);
    while pos < n {
        // A commit starts here (a block boundary).
        let (kept, kept_lsn, kept_end) = (scan.records.len(), scan.next_lsn, scan.valid_end);
        match scan_commit(bytes, pos, salt, &mut scan) {
            Ok(next) => pos = next,
            Err((at, why)) => {
                scan.records.truncate(kept);
                scan.next_lsn = kept_lsn;
                scan.valid_end = kept_end;
                scan.stop = Some((at as u64, why));
                return scan;
            }
        }
    }
    scan
}

/// One version-2 commit at `pos`: adds its records to `scan` and returns where the next
/// commit starts, or where and why it failed.
fn scan_commit<'a>(
    bytes: &'a [u8],
    pos: usize,
    salt: u32,
    scan: &mut SegmentScan<'a>,
) -> Result<usize, (usize, StopReason)> {
    let block = BLOCK_BYTES as usize;
    let n = bytes.len();
    if pos + 4 > n {
        return Err((pos, StopReason::Truncated));
    }
    if u32_at(bytes, pos) == 0 {
        return Err((pos, zero_block_reason(&bytes[pos..])));
    }
    let Some(c) = decode_commit_header(&bytes[pos..], salt) else {
        let why = if pos + COMMIT_HEADER_BYTES > n {
            StopReason::Truncated
        } else {
            StopReason::BadCommitHeader
        };
        return Err((pos, why));
    };
    if c.first_lsn != scan.next_lsn {
        let why = StopReason::LsnOutOfSequence {
            expected: scan.next_lsn,
            found: c.first_lsn,
        };
        return Err((pos, why));
    }
    let commit_end = pos + c.bytes as usize;
    let mut p = pos + COMMIT_HEADER_BYTES;
    for _ in 0..c.records {
        let block_end = (p / block + 1) * block;
        if block_end - p < 4 {
            let end = block_end.min(n);
            if !all_zero(&bytes[p..end]) {
                return Err((p, StopReason::NonZeroPadding));
            }
            p = end;
        }
        match next_record(bytes, p, scan) {
            Ok(end) if end <= commit_end => p = end,
            // The record checks out but runs past the commit: the header lies.
            Ok(_) => return Err((p, StopReason::CommitLength)),
            Err(why) => return Err((p, why)),
        }
    }
    if p != commit_end {
        return Err((p, StopReason::CommitLength));
    }
    let padded = commit_end.next_multiple_of(block).min(n);
    if !all_zero(&bytes[commit_end..padded]) {
        return Err((commit_end, StopReason::NonZeroPadding));
    }
    scan.valid_end = commit_end as u64;
    Ok(padded)
}

/// How one commit is laid out (see [`layout_commit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitLayout {
    /// Records taken from the queue.
    pub records: u64,
    /// Bytes of the queue they occupy.
    pub consumed: usize,
    /// The commit header's `bytes`: from the commit's start to the end of its last record.
    pub content_bytes: usize,
    /// The commit's size on disk: `content_bytes` rounded up to the block.
    pub padded_bytes: usize,
}

/// Lays out queued records (each encoded by [`encode_record`], back to back in `queued`)
/// for one version-2 commit that starts on a block boundary: the commit header first (the
/// caller writes it at offset 0), then the records, applying the padding rules. Calls
/// `place(src_range, dst_offset)` for each record taken. Takes at least one record, then
/// stops before the commit would pass `max_bytes`.
pub fn layout_commit(
    queued: &[u8],
    max_bytes: usize,
    mut place: impl FnMut(std::ops::Range<usize>, usize),
) -> CommitLayout {
    let block = BLOCK_BYTES as usize;
    let (mut src, mut dst, mut n) = (0usize, COMMIT_HEADER_BYTES, 0u64);
    while src < queued.len() {
        let len = record_len_at(&queued[src..]);
        let at = if block - dst % block < 4 {
            dst.next_multiple_of(block)
        } else {
            dst
        };
        if n > 0 && at + len > max_bytes {
            break;
        }
        place(src..src + len, at);
        src += len;
        dst = at + len;
        n += 1;
    }
    CommitLayout {
        records: n,
        consumed: src,
        content_bytes: dst,
        padded_bytes: dst.next_multiple_of(block),
    }
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SALT: u32 = 0x5a17_0001;

    fn header(first: u64) -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            first_lsn: first,
            salt: SALT,
        }
    }

    /// A version-2 segment holding `commits`, as the writer lays it out.
    fn segment(first: u64, commits: &[&[(u64, &str, &[u8])]]) -> Vec<u8> {
        let mut seg = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        seg[..HEADER_FIELDS_BYTES].copy_from_slice(&encode_header(first, SALT));
        let mut lsn = first;
        for commit in commits {
            let mut q = Vec::new();
            let commit_first = lsn;
            for (id, ch, body) in commit.iter() {
                encode_record(&mut q, lsn, *id, 7, ch, body);
                lsn += 1;
            }
            let base = seg.len();
            let l = layout_commit(&q, usize::MAX, |src, at| {
                let need = base + at + src.len();
                if seg.len() < need {
                    seg.resize(need, 0);
                }
                seg[base + at..base + at + src.len()].copy_from_slice(&q[src]);
            });
            assert_eq!(l.consumed, q.len());
            seg.resize(base + l.padded_bytes, 0);
            let ch = CommitHeader {
                first_lsn: commit_first,
                records: l.records as u32,
                bytes: l.content_bytes as u32,
            };
            seg[base..base + COMMIT_HEADER_BYTES].copy_from_slice(&encode_commit_header(SALT, &ch));
        }
        seg
    }

    #[test]
    fn names_sort_in_lsn_order_and_parse_back() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_file_name("00000000000000000001.wal"), Some(1));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert!(segment_file_name(9) < segment_file_name(10));
        for bad in [
            "1.wal",
            "0000000000000000000a.wal",
            "00000000000000000001.wal.tmp",
            "x",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_round_trips_and_refuses_damage() {
        let h = encode_header(42, 7);
        assert_eq!(
            decode_header(&h),
            Ok(SegmentHeader {
                version: 2,
                first_lsn: 42,
                salt: 7
            })
        );
        let v1 = encode_header_v1(42);
        assert_eq!(
            decode_header(&v1).map(|h| (h.version, h.first_lsn)),
            Ok((1, 42))
        );
        assert_eq!(decode_header(&h[..10]), Err(HeaderError::Short));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderError::BadChecksum));
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(decode_header(&bad), Err(HeaderError::BadMagic));
    }

    #[test]
    fn record_layout_is_as_documented() {
        let mut out = Vec::new();
        encode_record(&mut out, 0x0102, 0x0304, 0x0506, "ab", b"xyz");
        assert_eq!(out.len(), 34 + 2 + 3);
        assert_eq!(&out[0..4], &(26u32 + 5).to_le_bytes());
        assert_eq!(&out[8..16], &0x0102u64.to_le_bytes());
        assert_eq!(&out[16..24], &0x0304u64.to_le_bytes());
        assert_eq!(&out[24..32], &0x0506u64.to_le_bytes());
        assert_eq!(&out[32..34], &2u16.to_le_bytes());
        assert_eq!(&out[34..36], b"ab");
        assert_eq!(&out[36..39], b"xyz");
        let mut crc_input = out[0..4].to_vec();
        crc_input.extend_from_slice(&out[8..]);
        assert_eq!(&out[4..8], &crc32c::crc32c(&crc_input).to_le_bytes());
    }

    #[test]
    fn commits_pad_to_blocks_and_scan_back() {
        let big = vec![9u8; 5000];
        let seg = segment(
            10,
            &[
                &[(1, "a:b:c", b"one"), (2, "a:b:c", b"two")],
                &[(3, "a:b:d", &big)],
                &[(4, "a:b:c", b"four")],
            ],
        );
        assert_eq!(seg.len() as u64 % BLOCK_BYTES, 0);
        let scan = scan_records(&seg, &header(10));
        assert_eq!(scan.stop, None);
        assert_eq!(scan.next_lsn, 14);
        let ids: Vec<u64> = scan.records.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert_eq!(scan.records[2].body, &big[..]);
        // The second commit starts on the second record block, with its header.
        assert_eq!(
            decode_commit_header(&seg[8192..], SALT),
            Some(CommitHeader {
                first_lsn: 12,
                records: 1,
                bytes: (COMMIT_HEADER_BYTES + 34 + 5 + 5000) as u32
            })
        );
        assert_eq!(u32_at(&seg, 8192 + 24), (26 + 5 + 5000) as u32);
        // Another segment's salt does not read this one's commit headers.
        assert_eq!(decode_commit_header(&seg[8192..], SALT + 1), None);
    }

    #[test]
    fn a_record_never_starts_in_the_last_three_bytes_of_a_block() {
        // Fill a block so exactly 2 bytes remain, then add one more record.
        let first_len = 4096 - 2 - COMMIT_HEADER_BYTES - RECORD_HEADER_BYTES - 5;
        let body = vec![1u8; first_len];
        let seg = segment(1, &[&[(1, "a:b:c", &body), (2, "a:b:c", b"x")]]);
        let scan = scan_records(&seg, &header(1));
        assert_eq!(scan.stop, None);
        assert_eq!(scan.records.len(), 2);
        assert_eq!(u32_at(&seg, 8192), (26 + 5 + 1) as u32);
    }

    #[test]
    fn damage_is_found_where_it_is() {
        let seg = segment(1, &[&[(1, "a:b:c", b"one"), (2, "a:b:c", b"two")]]);
        let second = 4096 + COMMIT_HEADER_BYTES + 34 + 5 + 3;
        // Flipped byte in the second record's body.
        let mut bad = seg.clone();
        bad[second + 40] ^= 0xff;
        let s = scan_records(&bad, &header(1));
        assert_eq!(s.stop, Some((second as u64, StopReason::Checksum)));
        // Only whole commits count: the commit holding the damaged record is not returned.
        assert_eq!(s.valid_end, 4096);
        assert_eq!(s.records.len(), 0);
        assert_eq!(s.valid_after, None);
        // Truncated mid-record.
        let s = scan_records(&seg[..second + 10], &header(1));
        assert_eq!(s.stop, Some((second as u64, StopReason::Truncated)));
        // Zero-filled tail: a zero block after the data.
        let mut z = seg.clone();
        z.extend_from_slice(&[0u8; 8192]);
        let s = scan_records(&z, &header(1));
        assert_eq!(s.stop, Some((8192, StopReason::ZeroedTail)));
        assert_eq!(s.records.len(), 2);
        // Garbage in the padding.
        let mut p = seg.clone();
        let last = p.len() - 1;
        p[last] = 1;
        assert_eq!(
            scan_records(&p, &header(1)).stop.map(|s| s.1),
            Some(StopReason::NonZeroPadding)
        );
        // A damaged commit header.
        let mut h = seg.clone();
        h[4096 + 9] ^= 1;
        assert_eq!(
            scan_records(&h, &header(1)).stop,
            Some((4096, StopReason::BadCommitHeader))
        );
        // Wrong first LSN.
        assert_eq!(
            scan_records(&seg, &header(5)).stop.map(|s| s.1),
            Some(StopReason::LsnOutOfSequence {
                expected: 5,
                found: 1
            })
        );
    }

    #[test]
    fn damage_followed_by_a_later_commit_is_told_apart_from_a_torn_tail() {
        let c: &[(u64, &str, &[u8])] = &[(1, "a:b:c", b"one"), (2, "a:b:c", b"two")];
        let d: &[(u64, &str, &[u8])] = &[(3, "a:b:c", b"three")];
        let seg = segment(1, &[c, d, d]);
        // A bit flip in the first commit: two valid commits follow it.
        let mut bad = seg.clone();
        bad[4096 + 60] ^= 0x10;
        let s = scan_records(&bad, &header(1));
        assert_eq!(s.stop.map(|s| s.1), Some(StopReason::Checksum));
        assert_eq!(s.valid_after, Some((8192, 3)));
        // A zeroed block where the first commit was.
        let mut z = seg.clone();
        z[4096..8192].fill(0);
        let s = scan_records(&z, &header(1));
        assert_eq!(s.stop, Some((4096, StopReason::ZeroBlock)));
        assert_eq!(s.valid_after, Some((8192, 3)));
        // The same damage in the last commit: nothing valid after it (a torn tail).
        let mut t = seg.clone();
        t[3 * 4096 + 40] ^= 0x10;
        let s = scan_records(&t, &header(1));
        assert!(s.stop.is_some());
        assert_eq!(s.valid_after, None);
        assert_eq!(s.records.len(), 3);
        // Version 1: a checksummed record at a later block boundary is found the same way.
        let mut v1 = vec![0u8; 4096];
        v1[..32].copy_from_slice(&encode_header_v1(1));
        for (lsn, body) in [(1u64, b"one".as_slice()), (2, b"two")] {
            let mut q = Vec::new();
            encode_record(&mut q, lsn, lsn, 7, "a:b:c", body);
            q.resize(4096, 0);
            v1.extend_from_slice(&q);
        }
        let h1 = decode_header(&v1).unwrap();
        assert_eq!(scan_records(&v1, &h1).records.len(), 2);
        v1[4096 + 40] ^= 1;
        let s = scan_records(&v1, &h1);
        assert_eq!(s.stop, Some((4096, StopReason::Checksum)));
        assert_eq!(s.valid_after, Some((8192, 2)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..12_000)) {
            let mut seg = vec![0u8; 4096];
            seg.extend_from_slice(&bytes);
            let s = scan_records(&seg, &header(1));
            prop_assert!(s.valid_end as usize <= seg.len());
            let v1 = SegmentHeader { version: FORMAT_VERSION_1, ..header(1) };
            let s = scan_records(&seg, &v1);
            prop_assert!(s.valid_end as usize <= seg.len());
            let _ = decode_header(&bytes);
        }

        #[test]
        fn any_single_byte_flip_is_detected_or_harmless(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 1..6),
            at in any::<prop::sample::Index>(), bit in 0u8..8,
        ) {
            let recs: Vec<(u64, &str, &[u8])> = bodies.iter().enumerate().map(|(i, b)| (i as u64, "w:x:y", &b[..])).collect();
            let seg = segment(1, &[&recs]);
            let i = 4096 + at.index(seg.len() - 4096);
            let mut bad = seg.clone();
            bad[i] ^= 1 << bit;
            let s = scan_records(&bad, &header(1));
            // Every record reported is byte-identical to what was written.
            for (r, b) in s.records.iter().zip(&bodies) {
                prop_assert_eq!(r.body, &b[..]);
            }
            // The flipped byte is in a record that is not reported, or in padding that stops the scan.
            prop_assert!(s.stop.is_some());
            prop_assert!(s.valid_end as usize <= i);
        }
    }
}
