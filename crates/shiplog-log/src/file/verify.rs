//! The full check behind `shiplog log verify`: every segment scanned, every damaged or
//! missing range named as readers and the next open will treat it.

use super::compress::SegmentFile;
use std::path::{Path, PathBuf};

use super::format::*;
use super::missing_head_range;
use super::retention::live_segments;
use super::scan::{scan_newest, scan_sealed};
use crate::{LogError, Offset};

/// Result of [`verify`]: a full scan of every segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: u64,
    /// Valid records found (damaged ranges are skipped, the records after them counted).
    pub records: u64,
    /// Total size of the segment files.
    pub bytes: u64,
    /// Every damaged place found, in segment and byte order.
    pub damage: Vec<SegmentDamage>,
    /// Offsets removed by retention (`0..start`, the log's `START` file): not damage.
    pub removed: std::ops::Range<Offset>,
    /// Segment files an interrupted retention pass left below the start; the next open
    /// deletes them (not damage either).
    pub leftovers: Vec<PathBuf>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }

    /// Records lost in the damaged ranges whose extent is known.
    pub fn lost_records(&self) -> u64 {
        self.damage
            .iter()
            .filter_map(|d| d.lost.as_ref())
            .map(|r| r.end - r.start)
            .sum()
    }
}

/// One damaged place in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDamage {
    /// The segment file; for offsets below the first segment file, the name the first
    /// missing file had.
    pub segment: PathBuf,
    /// Byte position in the segment file where the damage starts.
    pub position: u64,
    /// Byte position where readable frames resume (the end of the file when none do).
    pub end: u64,
    /// Offsets of the records lost in it (empty when only bytes between records are bad);
    /// `None` when unknown: damage that no valid frame follows at the end of the newest
    /// segment, which the next open truncates as a torn tail.
    pub lost: Option<std::ops::Range<Offset>>,
    /// Whether the records lost are in no bytes at all rather than in damaged bytes:
    /// segment files missing (deleted before the first one, or between two), or a
    /// segment cut short.
    pub missing: bool,
    pub reason: String,
}

/// Scans every segment of the log in `dir` (header, every frame's CRC and offset, offsets
/// contiguous across segments from offset 0) and reports each damaged range with segment,
/// byte range and the offsets lost in it, as readers and recovery will treat it. After a
/// damaged range the scan resynchronises on the next valid frame (see [`SegmentedLog`](super::SegmentedLog)'s
/// reading), so every damaged place is named, not only the first of a segment. Offsets in
/// no segment file (files deleted) are named too. Read only; meant for a log that is not
/// open (on a live log the tail may show in-flight bytes).
pub fn verify(dir: &Path) -> Result<VerifyReport, LogError> {
    let mut report = VerifyReport::default();
    let (start, segments, leftovers) = live_segments(dir)?;
    report.removed = 0..start;
    report.leftovers = leftovers;
    // A file log starts at offset 0, or at its `START` (retention): offsets between there
    // and the first segment file were in files deleted.
    if let Some((base, path)) = segments.first().filter(|(base, _)| *base > start) {
        report.damage.push(SegmentDamage {
            segment: segment_path(dir, start),
            position: 0,
            end: 0,
            lost: Some(start..*base),
            missing: true,
            reason: missing_head_range(dir, path, start, *base).reason,
        });
    }
    let mut expected_base: Option<Offset> = segments.first().map(|s| s.0);
    for (i, (base, path)) in segments.iter().enumerate() {
        let (base, path) = (*base, path.clone());
        let upper = segments.get(i + 1).map(|s| s.0);
        report.segments += 1;
        let file = SegmentFile::open(&path)?;
        let len = file.len()?;
        report.bytes += file.disk_len()?;
        let damage =
            |position: u64, end: u64, lost: Option<std::ops::Range<Offset>>, reason: String| {
                SegmentDamage {
                    segment: path.clone(),
                    position,
                    end,
                    missing: position == end && lost.as_ref().is_some_and(|r| !r.is_empty()),
                    lost,
                    reason,
                }
            };
        if let Some(expected) = expected_base.filter(|&expected| expected != base) {
            report.damage.push(damage(
                0,
                0,
                (expected < base).then_some(expected..base),
                format!("segment starts at offset {base}, the previous one ends at {expected}"),
            ));
        }
        let header = match check_header(&read_header(&file, len)?, base) {
            Err(reason) => Err(match upper {
                Some(_) => reason,
                None => format!("{reason}; the next start refuses to open the log"),
            }),
            Ok(Header::Torn(reason)) if len <= SEGMENT_HEADER_LEN => Err(match upper {
                Some(_) => reason,
                None => format!(
                    "{reason}; the newest segment, which the next start removes as a torn \
                     write (or writes afresh when it is the only one)"
                ),
            }),
            // A header of zeros: readers (and recovery, for the newest segment) read the
            // frames after it.
            Ok(Header::Torn(reason)) => Ok(Some(reason)),
            Ok(Header::Valid) => Ok(None),
        };
        let zeroed = match header {
            Err(reason) => {
                report.damage.push(damage(0, len, None, reason));
                expected_base = upper;
                continue;
            }
            Ok(zeroed) => zeroed,
        };
        let scan = match upper {
            Some(_) => scan_sealed(&file, base, len, upper)?,
            None => scan_newest(&file, base, len)?,
        };
        if let Some(reason) = zeroed {
            if upper.is_none() && scan.records == 0 {
                report.damage.push(damage(
                    0,
                    len,
                    None,
                    format!(
                        "{reason} and no valid record after it, in the newest segment: the next \
                         start removes it as a torn write (or writes it afresh when it is the \
                         only one)"
                    ),
                ));
                continue;
            }
            let what = match upper {
                Some(_) => "readers read the records after it",
                None => "the next start writes it again and keeps the records after it",
            };
            report.damage.push(damage(
                0,
                SEGMENT_HEADER_LEN,
                Some(base..base),
                format!("{reason}; {what}"),
            ));
        }
        report.records += scan.records;
        let bad_blocks = file.bad_blocks();
        for d in &scan.damage {
            // In a compressed segment, name the block that does not check out.
            let reason = match bad_blocks.iter().find(|b| b.raw.contains(&d.start)) {
                Some(b) => format!(
                    "{} (raw bytes {}..{}, file bytes {}..{}); {}",
                    b.reason, b.raw.start, b.raw.end, b.file.start, b.file.end, d.reason
                ),
                None => d.reason.clone(),
            };
            report
                .damage
                .push(damage(d.start, d.end, Some(d.first..d.resume), reason));
        }
        expected_base = match scan.stop {
            Some((position, reason)) => {
                // Only in the newest segment: nothing valid follows, so the next start
                // takes it for a torn write and truncates the segment here.
                report.damage.push(damage(
                    position,
                    len,
                    None,
                    format!(
                        "{reason}; no valid record follows in the newest segment: a torn \
                         write, which the next start truncates here"
                    ),
                ));
                None
            }
            None => Some(scan.next_offset),
        };
    }
    Ok(report)
}
