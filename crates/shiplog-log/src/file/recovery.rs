//! Recovery: what [`SegmentedLog::open`](super::SegmentedLog::open)(super::SegmentedLog::open) repairs.
//!
//! Sealed segments are not scanned at open (use [`verify()`](super::verify()) to check them all); a reader
//! scans each one on first use (below). The last (newest) segment is scanned frame by
//! frame from its header. A frame is bad when it is torn or wrong: fewer than 8 bytes
//! left, a length running past the end of the file, a length below 10, a CRC mismatch, a
//! key length past the body, or an offset other than the expected next one.
//!
//! Recovery must tell a *torn tail* from *damage*. A crash can only spoil what was written
//! after the last `fdatasync`, and an acknowledgement comes only after it, so a torn write
//! is at the end: nothing acknowledged follows it. At a bad frame the scan therefore looks
//! for a valid frame *after* the bad bytes, with the same resynchronising search readers
//! use on damage (below), except that the frame must start past the bad position:
//!
//! - When none follows, the bad bytes are a torn tail. The file is truncated to the end of
//!   the last good frame and synced, and the [`RecoveryReport`] says how many bytes were
//!   dropped and why.
//! - When one follows, the bad range is damage, not a torn tail: it is kept, recorded as a
//!   damaged range of the segment (in [`RecoveryReport::damage`], logged as a warning,
//!   skipped and reported by readers, named by [`verify()`](super::verify())), and the scan goes on from the
//!   valid frame. Appends continue after the last valid frame.
//!
//! After a crash the page cache may have written an unsynced group out of order, so the
//! unsynced end can also hold a hole (zeros, or a frame cut by a page that never reached
//! the disk) followed by whole, valid frames of the same group. Those records were never
//! acknowledged, but they are real records at their own offsets: they are kept, and the
//! hole is reported as damage like any other (its records' clients got no answer and send
//! them again; ingest deduplicates what was kept, the projection dead-letters the hole).
//!
//! A trailing segment that is shorter than a header, or holds no valid record, is deleted
//! when an older segment exists (a crash during a roll); when it is the only segment it is
//! rewritten as an empty segment. A header of zeros followed by valid frames is written
//! again (the frames are kept, as after any damage). A complete header with the wrong magic,
//! an unknown version, or a base offset that disagrees with the file name is not a torn
//! write: open fails with [`LogError::Corrupt`] and leaves the files alone.
//!

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::compress::SegmentFile;
use super::format::*;
use super::scan::{scan_newest, Damage};
use crate::{LogError, Offset, SkippedRange};

/// What [`SegmentedLog::open`](super::SegmentedLog::open) found and repaired; the caller logs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments of the log after recovery.
    pub segments: u64,
    /// Records in the log after recovery (end offset − start offset).
    pub records: u64,
    /// Bytes removed from the tail (torn frames, empty or torn trailing segments).
    pub truncated_bytes: u64,
    /// Why bytes were removed, with file and byte position; `None` for a clean open.
    pub dropped_reason: Option<String>,
    /// Damaged ranges found in the newest segment that valid records follow. They are not
    /// a torn tail, so they were kept: readers skip them and report them, as damage in a
    /// sealed segment (each was also logged as a warning).
    pub damage: Vec<SkippedRange>,
    /// Offsets below the first segment file (`0..first base`): the segment files that held
    /// them are missing (each open logs a warning). Readers start after them.
    pub missing: Option<std::ops::Range<Offset>>,
}

pub(super) struct RecoveredTail {
    pub(super) file: File,
    pub(super) len: u64,
    pub(super) next_offset: Offset,
    pub(super) index: Vec<(Offset, u64)>,
    /// Damaged ranges of the segment that valid frames follow: kept, skipped by readers.
    pub(super) damage: Vec<Damage>,
}

/// Repairs the last segment (see the module doc), creating the first one for a new log
/// (at `start`, where the log starts). Leaves `segments` holding the segments that remain.
pub(super) fn recover_tail(
    dir: &Path,
    dir_file: &File,
    segments: &mut Vec<(Offset, PathBuf)>,
    start: Offset,
    report: &mut RecoveryReport,
) -> Result<RecoveredTail, LogError> {
    let mut reasons: Vec<String> = Vec::new();
    let result = loop {
        let Some((base, path)) = segments.last().cloned() else {
            let path = segment_path(dir, start);
            let file = create_fresh_segment(&path, start)?;
            dir_file.sync_all()?;
            segments.push((start, path));
            break RecoveredTail {
                file,
                len: SEGMENT_HEADER_LEN,
                next_offset: start,
                index: Vec::new(),
                damage: Vec::new(),
            };
        };
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let file_len = file.metadata()?.len();
        let only = segments.len() == 1;
        let (records, stop) = match check_header(
            &read_header(&SegmentFile::Plain(file.try_clone()?), file_len)?,
            base,
        ) {
            Err(reason) => {
                return Err(LogError::Corrupt {
                    location: format!("{} byte 0", path.display()),
                    reason,
                })
            }
            Ok(Header::Torn(reason)) => {
                // A whole header of zeros with bytes after it: a page that never reached
                // the disk (a crash during the group that created the segment) or damage.
                // Valid frames after it are kept, as after any damage: the header is
                // written again.
                let scan = match file_len > SEGMENT_HEADER_LEN {
                    true => Some(scan_newest(
                        &SegmentFile::Plain(file.try_clone()?),
                        base,
                        file_len,
                    )?),
                    false => None,
                };
                match scan {
                    Some(scan) if scan.records > 0 => {
                        // Synced with the frames kept, below.
                        file.write_all_at(&segment_header(base), 0)?;
                        tracing::warn!(
                            segment = %path.display(),
                            %reason,
                            records = scan.records,
                            "rewrote the header of the newest log segment: valid records follow it"
                        );
                        let stop = scan.stop.clone();
                        (Some(scan), stop)
                    }
                    _ => (None, Some((0, reason))),
                }
            }
            Ok(Header::Valid) => {
                let scan = scan_newest(&SegmentFile::Plain(file.try_clone()?), base, file_len)?;
                let stop = scan.stop.clone();
                (Some(scan), stop)
            }
        };
        let has_records = records.as_ref().is_some_and(|s| s.records > 0);
        if !has_records && !only {
            // A crash during a roll: drop the empty trailing segment, the previous one
            // becomes the tail again.
            drop(file);
            fs::remove_file(&path)?;
            dir_file.sync_all()?;
            report.truncated_bytes += file_len;
            let why = stop.map(|(_, r)| r).unwrap_or_else(|| "no records".into());
            reasons.push(format!(
                "{}: removed trailing segment ({why})",
                path.display()
            ));
            segments.pop();
            continue;
        }
        match records {
            None => {
                // The only segment, and its header is torn: start it afresh.
                drop(file);
                let file = create_fresh_segment(&path, base)?;
                report.truncated_bytes += file_len;
                let why = stop.map(|(_, r)| r).unwrap_or_default();
                reasons.push(format!(
                    "{}: rewrote segment header ({why})",
                    path.display()
                ));
                break RecoveredTail {
                    file,
                    len: SEGMENT_HEADER_LEN,
                    next_offset: base,
                    index: Vec::new(),
                    damage: Vec::new(),
                };
            }
            Some(scan) => {
                if let Some((position, why)) = stop {
                    file.set_len(scan.valid_len)?;
                    report.truncated_bytes += file_len - scan.valid_len;
                    reasons.push(format!(
                        "{} byte {position}: truncated {} bytes ({why}; no valid record \
                         follows: a torn tail)",
                        path.display(),
                        file_len - scan.valid_len
                    ));
                }
                // Readers will take every record kept here for durable, but the frames
                // after the last acknowledged one may never have been synced (a kill -9
                // after the write, before the fdatasync): sync them, and the directory
                // (a segment created by that group), before anything reads them.
                file.sync_all()?;
                dir_file.sync_all()?;
                break RecoveredTail {
                    file,
                    len: scan.valid_len,
                    next_offset: scan.next_offset,
                    index: scan.index,
                    damage: scan.damage,
                };
            }
        }
    };
    if !reasons.is_empty() {
        let reason = reasons.join("; ");
        tracing::warn!(truncated_bytes = report.truncated_bytes, %reason, "log tail repaired");
        report.dropped_reason = Some(reason);
    }
    Ok(result)
}

/// Creates (or empties) a segment with just its header, synced.
pub(super) fn create_fresh_segment(path: &Path, base: Offset) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all_at(&segment_header(base), 0)?;
    file.sync_all()?;
    Ok(file)
}
