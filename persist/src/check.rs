//! Offline checking and repair of one log directory, for `ringbearer wal verify` and
//! `ringbearer wal repair`: plain blocking file I/O, no executor, no writes by `verify`.
//!
//! [`verify`] applies recovery's rules (`docs/wal.md`, "Recovery") without changing
//! anything and reports every segment (version, records, LSN range) and every finding:
//! damage that stops the log from opening, a torn tail that opening will cut, a missing
//! segment, a bad start file. [`repair`] is the operator's explicit choice, never run
//! automatically: it cuts the log at the first damage, keeping everything before it, and
//! moves what it drops (cut bytes, later segments) into a `repair-<unix seconds>` folder
//! beside the segments, reporting segments, byte ranges and record counts.
//!
//! Not for a log that a running server has open: stop the server first.

use crate::format::{self, SegmentHeader, StopReason, SEGMENT_HEADER_BYTES, START_FILE_NAME};
use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

/// One segment as [`verify`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentCheck {
    pub name: String,
    pub first_lsn: u64,
    /// Format version; `None` if the header is unreadable or names another LSN.
    pub version: Option<u16>,
    /// The header is unreadable (not merely naming another LSN than the file name).
    pub header_unreadable: bool,
    pub bytes: u64,
    /// Valid records (whole commits).
    pub records: u64,
    /// The LSN after its last valid record.
    pub next_lsn: u64,
    /// Where and why the scan stopped, if it did.
    pub stop: Option<(u64, String)>,
    /// End of the last whole commit (where a cut would go).
    pub valid_end: u64,
    /// Valid data past the damage (offset, LSN): the damage is not a torn tail.
    pub valid_after: Option<(u64, u64)>,
}

/// What is wrong, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The start file names LSN `expected`, but no segment starts there.
    MissingOldest { expected: u64, found: Option<u64> },
    /// The start file is unreadable, or missing from a version-2 log not starting at 1.
    StartFile(String),
    /// Segment `segment` (index) starts at `found`, but `expected` was next: a missing
    /// middle segment (`found > expected`) or a stray, overlapping one.
    Sequence {
        segment: usize,
        expected: u64,
        found: u64,
    },
    /// Damage the log cannot open with (acknowledged records are affected).
    Damage { segment: usize },
    /// Damage at the end of the last segment with nothing valid after it: opening cuts it.
    TornTail { segment: usize },
    /// Segments before the start file's LSN (an interrupted reclaim): opening removes them.
    LeftoverReclaim { names: Vec<String> },
}

impl Finding {
    /// Whether the log refuses to open because of it.
    pub fn is_damage(&self) -> bool {
        !matches!(
            self,
            Finding::TornTail { .. } | Finding::LeftoverReclaim { .. }
        )
    }
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCheck {
    pub dir: PathBuf,
    /// The start file's LSN, if there is a readable one.
    pub start: Option<u64>,
    /// Every segment file, in LSN order (leftovers of a reclaim included).
    pub segments: Vec<SegmentCheck>,
    pub findings: Vec<Finding>,
}

impl LogCheck {
    /// True if the log would refuse to open.
    pub fn is_damaged(&self) -> bool {
        self.findings.iter().any(Finding::is_damage)
    }

    /// Valid records in every segment.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }
}

/// Checks the log in `dir` without changing anything.
pub fn verify(dir: &Path) -> io::Result<LogCheck> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(first) = format::parse_segment_file_name(&name) {
            names.push((first, name));
        }
    }
    names.sort();
    let mut check = LogCheck {
        dir: dir.to_owned(),
        start: None,
        segments: Vec::new(),
        findings: Vec::new(),
    };
    match fs::read(dir.join(START_FILE_NAME)) {
        Ok(b) => match format::decode_start(&b) {
            Ok(s) => check.start = Some(s),
            Err(e) => check
                .findings
                .push(Finding::StartFile(format!("unreadable start file: {e}"))),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for (first, name) in &names {
        check
            .segments
            .push(check_segment(&dir.join(name), name, *first)?);
    }
    let n = check.segments.len();
    // Where the log begins.
    let mut begin = 0;
    if let Some(s) = check.start {
        match check.segments.iter().position(|g| g.first_lsn >= s) {
            Some(i) if check.segments[i].first_lsn == s => {
                if i > 0 {
                    let names = check.segments[..i].iter().map(|g| g.name.clone()).collect();
                    check.findings.push(Finding::LeftoverReclaim { names });
                }
                begin = i;
            }
            i => check.findings.push(Finding::MissingOldest {
                expected: s,
                found: i
                    .map(|i| check.segments[i].first_lsn)
                    .or(check.segments.first().map(|g| g.first_lsn)),
            }),
        }
    } else if let Some(g) = check.segments.first() {
        let v1 = g.version == Some(format::FORMAT_VERSION_1);
        if !v1 && g.first_lsn > 1 && check.findings.is_empty() {
            check.findings.push(Finding::StartFile(format!(
                "START is missing, and the first segment {} does not start at LSN 1: older segments may be missing",
                g.name
            )));
        }
    }
    let mut expected: Option<u64> = None;
    for i in begin..n {
        let g = &check.segments[i];
        let want = expected.unwrap_or(g.first_lsn.max(1));
        if g.first_lsn != want {
            check.findings.push(Finding::Sequence {
                segment: i,
                expected: want,
                found: g.first_lsn,
            });
            break;
        }
        if g.stop.is_some() {
            let last = i + 1 == n;
            // As recovery: a half-created last segment, or damage with nothing after it.
            let half_created = g.header_unreadable && g.bytes <= SEGMENT_HEADER_BYTES;
            if last && (half_created || g.version.is_some() && g.valid_after.is_none()) {
                check.findings.push(Finding::TornTail { segment: i });
            } else {
                check.findings.push(Finding::Damage { segment: i });
                break;
            }
        }
        expected = Some(g.next_lsn);
    }
    Ok(check)
}

fn check_segment(path: &Path, name: &str, first: u64) -> io::Result<SegmentCheck> {
    let bytes = fs::read(path)?;
    let mut g = SegmentCheck {
        name: name.to_owned(),
        first_lsn: first,
        version: None,
        header_unreadable: false,
        bytes: bytes.len() as u64,
        records: 0,
        next_lsn: first,
        stop: None,
        valid_end: 0,
        valid_after: None,
    };
    let header: SegmentHeader = match format::decode_header(&bytes) {
        Ok(h) if h.first_lsn == first => h,
        Ok(h) => {
            g.stop = Some((
                16,
                StopReason::HeaderLsnMismatch {
                    name: first,
                    header: h.first_lsn,
                }
                .to_string(),
            ));
            return Ok(g);
        }
        Err(e) => {
            g.header_unreadable = true;
            g.stop = Some((0, StopReason::BadHeader(e).to_string()));
            return Ok(g);
        }
    };
    g.version = Some(header.version);
    let scan = format::scan_records(&bytes, &header);
    g.records = scan.records.len() as u64;
    g.next_lsn = scan.next_lsn;
    g.valid_end = scan.valid_end;
    g.stop = scan.stop.map(|(at, why)| (at, why.to_string()));
    g.valid_after = scan.valid_after;
    Ok(g)
}

/// The last LSN + 1 that `g` seems to hold, counting valid commits past its damage.
fn end_lsn_of(dir: &Path, g: &SegmentCheck) -> u64 {
    let Ok(bytes) = fs::read(dir.join(&g.name)) else {
        return g.next_lsn;
    };
    let Ok(h) = format::decode_header(&bytes) else {
        return g.next_lsn;
    };
    let mut end = g.next_lsn;
    let block = format::BLOCK_BYTES as usize;
    let mut b = (g.valid_end as usize).next_multiple_of(block).max(block);
    while b + format::COMMIT_HEADER_BYTES <= bytes.len() {
        if h.version == format::FORMAT_VERSION {
            if let Some(c) = format::decode_commit_header(&bytes[b..], h.salt) {
                end = end.max(c.first_lsn + u64::from(c.records));
            }
        }
        b += block;
    }
    end
}

impl fmt::Display for LogCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.dir.display())?;
        match self.start {
            Some(s) => writeln!(f, "  START: the log begins at LSN {s}")?,
            None => writeln!(f, "  START: none")?,
        }
        for g in &self.segments {
            let version = g.version.map_or("?".to_string(), |v| v.to_string());
            write!(
                f,
                "  {}  v{version}  {} bytes  {} records",
                g.name, g.bytes, g.records
            )?;
            if g.records > 0 {
                write!(f, "  LSN {}..={}", g.first_lsn, g.next_lsn - 1)?;
            }
            writeln!(f)?;
        }
        if self.segments.is_empty() {
            writeln!(f, "  no segments")?;
        }
        for finding in &self.findings {
            let seg = |i: &usize| &self.segments[*i];
            match finding {
                Finding::MissingOldest { expected, found } => writeln!(
                    f,
                    "  DAMAGE: segment {} is missing (START says the log begins at LSN {expected}; {})",
                    format::segment_file_name(*expected),
                    match found {
                        Some(x) => format!("first segment present: {}", format::segment_file_name(*x)),
                        None => "no segment present".into(),
                    }
                )?,
                Finding::StartFile(p) => writeln!(f, "  DAMAGE: {START_FILE_NAME}: {p}")?,
                Finding::Sequence {
                    segment,
                    expected,
                    found,
                } => writeln!(
                    f,
                    "  DAMAGE: {} starts at LSN {found} but LSN {expected} was expected: {}",
                    seg(segment).name,
                    if found > expected {
                        format!(
                            "segment {} (LSN {expected}..={}) is missing",
                            format::segment_file_name(*expected),
                            found - 1
                        )
                    } else {
                        "a stray segment overlaps the one before it".into()
                    }
                )?,
                Finding::Damage { segment } => {
                    let g = seg(segment);
                    let (at, why) = g.stop.clone().unwrap_or_default();
                    write!(f, "  DAMAGE: {} at offset {at}: {why}", g.name)?;
                    match g.valid_after {
                        Some((o, l)) => writeln!(
                            f,
                            "; a valid commit follows at offset {o} (LSN {l}): not a torn write"
                        )?,
                        None => writeln!(f, "; acknowledged records follow in later segments")?,
                    }
                }
                Finding::TornTail { segment } => {
                    let g = seg(segment);
                    let (at, why) = g.stop.clone().unwrap_or_default();
                    writeln!(
                        f,
                        "  torn tail: {} at offset {at}: {why}; nothing valid after it (the server cuts it at start; {} bytes)",
                        g.name,
                        g.bytes.saturating_sub(g.valid_end)
                    )?
                }
                Finding::LeftoverReclaim { names } => writeln!(
                    f,
                    "  note: {} before START (an interrupted reclaim; removed at start)",
                    names.join(", ")
                )?,
            }
        }
        let verdict = if self.is_damaged() {
            "DAMAGED: the log does not open (see docs/operations.md, \"The log is damaged\")"
        } else {
            "ok"
        };
        writeln!(f, "  {} records; {verdict}", self.records())
    }
}

/// What [`repair`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// One line per action: what was dropped or changed, with byte ranges and records.
    pub actions: Vec<String>,
    /// Records dropped (counted by LSN: those before the cut are kept).
    pub records_dropped: u64,
    /// Where dropped bytes and segments were moved (`None` if nothing was dropped).
    pub moved_to: Option<PathBuf>,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.actions.is_empty() {
            return writeln!(f, "  nothing to repair");
        }
        for a in &self.actions {
            writeln!(f, "  {a}")?;
        }
        write!(f, "  records dropped: {}", self.records_dropped)?;
        if let Some(p) = &self.moved_to {
            write!(f, "; dropped bytes and segments moved to {}", p.display())?;
        }
        writeln!(f)
    }
}

/// Bound on repair passes (each fixes the first finding).
const REPAIR_PASSES_MAX: usize = 64;

/// Cuts the log in `dir` at its first damage so that it opens again, keeping every record
/// before the damage. Dropped bytes and segments are moved to `dir/repair-<unix seconds>`,
/// never deleted. The operator's explicit choice: never called by the server.
pub fn repair(dir: &Path) -> io::Result<RepairReport> {
    let mut report = RepairReport::default();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("repair-{stamp}"));
    let move_aside = |name: &str| -> io::Result<()> {
        fs::create_dir_all(&aside)?;
        fs::rename(dir.join(name), aside.join(name))
    };
    for _ in 0..REPAIR_PASSES_MAX {
        let check = verify(dir)?;
        let Some(first) = check.findings.iter().find(|f| f.is_damage()).cloned() else {
            break;
        };
        let segs = &check.segments;
        // Drops segments `from..` (moved aside), counting their records by LSN.
        let drop_from = |from: usize, report: &mut RepairReport| -> io::Result<u64> {
            let mut lsn_end = 0;
            for g in &segs[from..] {
                lsn_end = lsn_end.max(end_lsn_of(dir, g));
                move_aside(&g.name)?;
                report
                    .actions
                    .push(format!("dropped segment {} ({} bytes)", g.name, g.bytes));
            }
            Ok(lsn_end)
        };
        match first {
            Finding::MissingOldest { expected, found } => match found {
                Some(f) => {
                    write_start(dir, f)?;
                    report.records_dropped += f.saturating_sub(expected);
                    report.actions.push(format!(
                            "accepted the loss of LSN {expected}..={} (segments missing); START now says {f}",
                            f - 1
                        ));
                }
                None => {
                    move_aside(START_FILE_NAME)?;
                    report.actions.push(format!(
                            "no segment is left; START (LSN {expected}) moved aside: the log starts empty"
                        ));
                }
            },
            Finding::StartFile(_) => {
                match segs.first() {
                    Some(g) => write_start(dir, g.first_lsn)?,
                    None => move_aside(START_FILE_NAME)?,
                }
                report.actions.push(format!(
                    "rewrote START from the first segment present ({})",
                    segs.first().map_or("none".into(), |g| g.name.clone())
                ));
            }
            Finding::Sequence {
                segment,
                expected,
                found,
            } => {
                if found > expected {
                    report.actions.push(format!(
                        "cut the log at the missing segment {} (LSN {expected}..={})",
                        format::segment_file_name(expected),
                        found - 1
                    ));
                    let end = drop_from(segment, &mut report)?;
                    report.records_dropped += end.saturating_sub(expected);
                } else {
                    let g = &segs[segment];
                    move_aside(&g.name)?;
                    report.actions.push(format!(
                        "moved aside stray segment {} ({} records overlapping LSN {found}..)",
                        g.name, g.records
                    ));
                }
            }
            Finding::Damage { segment } => {
                let g = &segs[segment];
                let mut end = end_lsn_of(dir, g);
                if segment + 1 < segs.len() {
                    end = end.max(drop_from(segment + 1, &mut report)?);
                }
                let path = dir.join(&g.name);
                let bytes = fs::read(&path)?;
                // As recovery: a version-2 segment keeps its last whole commit's padding.
                let cut_end = if g.version == Some(format::FORMAT_VERSION) {
                    format::align_up(g.valid_end)
                } else {
                    g.valid_end
                };
                let cut = cut_end.min(bytes.len() as u64);
                fs::create_dir_all(&aside)?;
                let saved = aside.join(format!("{}.from-{cut}", g.name));
                fs::write(&saved, &bytes[cut as usize..])?;
                fs::File::open(&saved)?.sync_all()?;
                let file = fs::OpenOptions::new().write(true).open(&path)?;
                file.set_len(cut)?;
                file.sync_all()?;
                let (at, why) = g.stop.clone().unwrap_or_default();
                report.records_dropped += end.saturating_sub(g.next_lsn);
                report.actions.push(format!(
                    "cut {} at offset {cut} (damage at offset {at}: {why}): dropped bytes {cut}..{} ({} bytes) and {} records from LSN {} on",
                    g.name,
                    bytes.len(),
                    bytes.len() as u64 - cut,
                    end.saturating_sub(g.next_lsn),
                    g.next_lsn,
                ));
            }
            Finding::TornTail { .. } | Finding::LeftoverReclaim { .. } => unreachable!(),
        }
        fs::File::open(dir)?.sync_all()?;
    }
    if aside.exists() {
        fs::File::open(&aside)?.sync_all()?;
        report.moved_to = Some(aside);
    }
    Ok(report)
}

/// Writes the start file (temporary file, fsync, rename, directory fsync).
fn write_start(dir: &Path, first_lsn: u64) -> io::Result<()> {
    let tmp = dir.join(format!("{START_FILE_NAME}.tmp"));
    fs::write(&tmp, format::encode_start(first_lsn))?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, dir.join(START_FILE_NAME))?;
    fs::File::open(dir)?.sync_all()
}
