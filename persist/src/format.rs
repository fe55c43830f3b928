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
//!   then zeros. Records start at offset 4096.
//! - A record is `[len u32][crc32c u32][lsn u64][id u64][ts_ms u64][channel_len u16]
//!   [channel][body]`, where `len` counts the bytes after the crc field and the crc covers
//!   the `len` field and those bytes.
//! - Each group commit starts on a block boundary and is zero-padded to the next one, so a
//!   commit never rewrites a block that holds acknowledged records. Zero bytes are padding:
//!   a `len` of 0 means "skip to the next block"; fewer than 4 bytes left in a block are
//!   always padding (a record never starts there).

use ringbearer_core::channel::CHANNEL_NAME_MAX_BYTES;
use std::fmt;

/// The format's block: commits start on and pad to this boundary, and it is the I/O unit
/// of direct I/O. A device whose logical block is larger than this is refused.
pub const BLOCK_BYTES: u64 = 4096;
/// The header occupies the whole first block, written once when the segment is created.
pub const SEGMENT_HEADER_BYTES: u64 = BLOCK_BYTES;
/// First eight bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RBWALSEG";
/// Version of this layout. Readers refuse other versions.
pub const FORMAT_VERSION: u16 = 1;
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

/// The 32 header bytes: magic, version, reserved, block size, first LSN, reserved, crc32c
/// of bytes 0..28.
pub fn encode_header(first_lsn: u64) -> [u8; HEADER_FIELDS_BYTES] {
    let mut h = [0u8; HEADER_FIELDS_BYTES];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // 10..12 reserved (flags), zero.
    h[12..16].copy_from_slice(&(BLOCK_BYTES as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    // 24..28 reserved, zero.
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
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
            HeaderError::Short => f.write_str("header shorter than 32 bytes"),
            HeaderError::BadMagic => f.write_str("bad magic"),
            HeaderError::BadChecksum => f.write_str("header checksum mismatch"),
            HeaderError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            HeaderError::UnsupportedBlockSize(b) => write!(f, "unsupported block size {b}"),
        }
    }
}

/// The first LSN recorded in a segment header.
pub fn decode_header(bytes: &[u8]) -> Result<u64, HeaderError> {
    let h = bytes.get(..HEADER_FIELDS_BYTES).ok_or(HeaderError::Short)?;
    if h[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if crc32c::crc32c(&h[0..28]) != u32_at(h, 28) {
        return Err(HeaderError::BadChecksum);
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let block = u32_at(h, 12);
    if u64::from(block) != BLOCK_BYTES {
        return Err(HeaderError::UnsupportedBlockSize(block));
    }
    Ok(u64_at(h, 16))
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
}

/// Scans a segment's records (after a header already checked to say `first_lsn`): pure, so
/// it is fuzzed directly. Never panics on any input.
pub fn scan_records(bytes: &[u8], first_lsn: u64) -> SegmentScan<'_> {
    let block = BLOCK_BYTES as usize;
    let n = bytes.len();
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    let mut scan = SegmentScan {
        records: Vec::new(),
        valid_end: SEGMENT_HEADER_BYTES.min(n as u64),
        next_lsn: first_lsn,
        stop: None,
    };
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
        let len = u32_at(bytes, pos);
        if len == 0 {
            if pos.is_multiple_of(block) {
                let why = if all_zero(&bytes[pos..]) {
                    StopReason::ZeroedTail
                } else {
                    StopReason::ZeroBlock
                };
                scan.stop = stop(pos, why);
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
        let len_usize = len as usize;
        if !(RECORD_FIXED_BYTES..=RECORD_MAX_BYTES - RECORD_PREFIX_BYTES).contains(&len_usize) {
            scan.stop = stop(pos, StopReason::BadLength(len));
            return scan;
        }
        let end = pos + RECORD_PREFIX_BYTES + len_usize;
        if end > n {
            scan.stop = stop(pos, StopReason::Truncated);
            return scan;
        }
        let rec = &bytes[pos..end];
        if record_crc(&rec[0..4], &rec[RECORD_PREFIX_BYTES..]) != u32_at(rec, 4) {
            scan.stop = stop(pos, StopReason::Checksum);
            return scan;
        }
        let Some(r) = decode_fields(rec) else {
            scan.stop = stop(pos, StopReason::BadFields);
            return scan;
        };
        if r.lsn != scan.next_lsn {
            scan.stop = stop(
                pos,
                StopReason::LsnOutOfSequence {
                    expected: scan.next_lsn,
                    found: r.lsn,
                },
            );
            return scan;
        }
        scan.records.push(r);
        scan.next_lsn += 1;
        pos = end;
        scan.valid_end = end as u64;
    }
    scan
}

/// Lays out queued records (each encoded by [`encode_record`], back to back in `queued`)
/// for one commit that starts on a block boundary, applying the padding rules. Calls
/// `place(src_range, dst_offset)` for each record taken and returns `(records taken, bytes
/// of queue consumed, padded commit size)`. Takes at least one record, then stops before
/// the commit would pass `max_bytes`.
pub fn layout_commit(
    queued: &[u8],
    max_bytes: usize,
    mut place: impl FnMut(std::ops::Range<usize>, usize),
) -> (u64, usize, usize) {
    let block = BLOCK_BYTES as usize;
    let (mut src, mut dst, mut n) = (0usize, 0usize, 0u64);
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
    (n, src, dst.next_multiple_of(block))
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

    fn segment(first: u64, commits: &[&[(u64, &str, &[u8])]]) -> Vec<u8> {
        let mut seg = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        seg[..HEADER_FIELDS_BYTES].copy_from_slice(&encode_header(first));
        let mut lsn = first;
        for commit in commits {
            let mut q = Vec::new();
            for (id, ch, body) in commit.iter() {
                encode_record(&mut q, lsn, *id, 7, ch, body);
                lsn += 1;
            }
            let base = seg.len();
            let (_, used, size) = layout_commit(&q, usize::MAX, |src, at| {
                let need = base + at + src.len();
                if seg.len() < need {
                    seg.resize(need, 0);
                }
                seg[base + at..base + at + src.len()].copy_from_slice(&q[src]);
            });
            assert_eq!(used, q.len());
            seg.resize(base + size, 0);
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
        let h = encode_header(42);
        assert_eq!(decode_header(&h), Ok(42));
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
        let scan = scan_records(&seg, 10);
        assert_eq!(scan.stop, None);
        assert_eq!(scan.next_lsn, 14);
        let ids: Vec<u64> = scan.records.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert_eq!(scan.records[2].body, &big[..]);
        // The second commit starts on the second record block.
        assert_eq!(u32_at(&seg, 8192), (26 + 5 + 5000) as u32);
    }

    #[test]
    fn a_record_never_starts_in_the_last_three_bytes_of_a_block() {
        // Fill a block so exactly 2 bytes remain, then add one more record.
        let first_len = 4096 - 2 - RECORD_HEADER_BYTES - 5;
        let body = vec![1u8; first_len];
        let seg = segment(1, &[&[(1, "a:b:c", &body), (2, "a:b:c", b"x")]]);
        let scan = scan_records(&seg, 1);
        assert_eq!(scan.stop, None);
        assert_eq!(scan.records.len(), 2);
        assert_eq!(u32_at(&seg, 8192), (26 + 5 + 1) as u32);
    }

    #[test]
    fn damage_is_found_where_it_is() {
        let seg = segment(1, &[&[(1, "a:b:c", b"one"), (2, "a:b:c", b"two")]]);
        let second = 4096 + 34 + 5 + 3;
        // Flipped byte in the second record's body.
        let mut bad = seg.clone();
        bad[second + 40] ^= 0xff;
        let s = scan_records(&bad, 1);
        assert_eq!(s.stop, Some((second as u64, StopReason::Checksum)));
        assert_eq!(s.valid_end, second as u64);
        assert_eq!(s.records.len(), 1);
        // Truncated mid-record.
        let s = scan_records(&seg[..second + 10], 1);
        assert_eq!(s.stop, Some((second as u64, StopReason::Truncated)));
        // Zero-filled tail: a zero block after the data.
        let mut z = seg.clone();
        z.extend_from_slice(&[0u8; 8192]);
        let s = scan_records(&z, 1);
        assert_eq!(s.stop, Some((8192, StopReason::ZeroedTail)));
        assert_eq!(s.records.len(), 2);
        // Garbage in the padding.
        let mut p = seg.clone();
        let last = p.len() - 1;
        p[last] = 1;
        assert_eq!(
            scan_records(&p, 1).stop.map(|s| s.1),
            Some(StopReason::NonZeroPadding)
        );
        // Wrong first LSN.
        assert_eq!(
            scan_records(&seg, 5).stop.map(|s| s.1),
            Some(StopReason::LsnOutOfSequence {
                expected: 5,
                found: 1
            })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..12_000)) {
            let mut seg = vec![0u8; 4096];
            seg.extend_from_slice(&bytes);
            let s = scan_records(&seg, 1);
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
            let s = scan_records(&bad, 1);
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
