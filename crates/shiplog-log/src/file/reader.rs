//! Reading: from any offset, skipping damage and saying so.
//!
//! # Finding the start
//!
//! A reader finds the segment holding its start offset by base offset, jumps to the nearest
//! entry of that segment's sparse in-memory index (one entry per [`INDEX_INTERVAL`]
//! records, kept by the writer for new segments and built on first use for sealed segments
//! found at open), and scans forward. It then reads sequentially in 1 MiB chunks, checking
//! every frame's CRC and offset, crossing into the next segment at the end of a sealed one.
//! Returned keys and values are zero-copy slices of the chunk they were read in (so a
//! record kept alive keeps its chunk alive). A batch holds at least one record when one is
//! available, then stops at `max_records` or once `max_bytes` of keys and values are reached.
//!

//! # Damage: readers skip it, and say so
//!
//! A sealed segment holds acknowledged records only, so bytes there that do not check out
//! (a CRC mismatch, an impossible length, a wrong offset: a flipped bit on the disk, a
//! damaged copy) are damage, not a torn write, and recovery never truncates them; neither
//! does it truncate bad bytes in the newest segment that valid frames follow (see
//! "Recovery"). A reader
//! that meets damage neither returns the bad bytes nor stops: it *resynchronises* on the
//! next frame that checks out — scanning forward byte by byte for a whole frame whose
//! CRC32C matches and whose offset is plausible (at least the one expected, below the next
//! segment's base, at most one record per 18 bytes skipped) — and continues there. The
//! records in between are skipped: the reader reports each skipped range (offsets,
//! segment, byte range, reason) through [`LogReader::take_skipped`], the log lists every
//! range found so far in [`crate::Log::damage`] (for `/metrics`), and the first reader to find a
//! range logs a warning naming the segment, the byte range and the offsets lost. Damage
//! that no valid frame follows loses the records up to the next segment's base; a sealed
//! segment that ends early (cut by hand, or the segment file after it deleted) loses the
//! offsets it lacks, up to the next file's base. Offsets below the first segment file
//! (files deleted) are skipped the same way: a reader asked to start below the first
//! offset the log has starts there and reports the offsets before it, and [`crate::Log::damage`]
//! lists them. The scan that indexes a sealed segment on first use finds all of its
//! damage at once, so whatever reads the whole log (a rebuild of the dedup index without a
//! snapshot, a replay) reports every damaged range of the log; damage in the newest
//! segment is found at open. Damage in the last segment that no valid frame follows yet
//! cannot be bounded: the reader waits there (recovery truncates such bytes at the next
//! open, as a torn tail). In the newest segment a reader resynchronises only on a frame
//! past the bad bytes, as recovery does. [`verify()`](super::verify()) uses the same resynchronising scans
//! and names every damaged or missing range, not only the first of a segment, each as the
//! next open and readers will treat it.

use super::compress::SegmentFile;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::format::*;
use super::scan::{resync, scan_sealed, Damage, Resync};
use super::{read_lock, skipped_range, write_lock, Shared};
use crate::{LogEntry, LogError, LogReader, Offset, SkippedRange};

/// Runs blocking file I/O from async code without stalling the runtime's other tasks.
pub(super) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

pub(super) struct SegmentReader {
    pub(super) shared: Arc<Shared>,
    pub(super) durable: watch::Receiver<Offset>,
    /// Offset of the next record to return.
    pub(super) next: Offset,
    pub(super) cursor: Option<ReadCursor>,
    /// Ranges skipped over damage, not yet taken by the consumer.
    pub(super) skipped: Vec<SkippedRange>,
}

pub(super) struct ReadCursor {
    pub(super) base: Offset,
    pub(super) file: SegmentFile,
    /// Read but not yet returned bytes; starts at a frame boundary.
    pub(super) buf: Bytes,
    /// File position just after `buf`.
    pub(super) read_pos: u64,
}

/// How many skipped ranges a reader keeps for a consumer that never takes them.
pub(super) const MAX_PENDING_SKIPS: usize = 1024;

/// Records a damaged range of segment `base` (once), with a warning naming the segment,
/// the bytes and the records lost. Returns the range as recorded.
pub(super) fn register_damage(shared: &Shared, base: Offset, damage: Damage) -> Damage {
    let mut table = write_lock(&shared.table);
    let Some(i) = table.find(base) else {
        return damage;
    };
    let s = &mut table.segments[i];
    if let Some(known) = s.damage.iter().find(|d| d.start == damage.start) {
        return known.clone();
    }
    warn_damage(&s.path, &damage);
    let at = s.damage.partition_point(|d| d.start < damage.start);
    s.damage.insert(at, damage.clone());
    damage
}

/// The warning for a damaged range, logged once per range by whoever finds it first.
pub(super) fn warn_damage(path: &Path, damage: &Damage) {
    tracing::warn!(
        segment = %path.display(),
        bytes = %format!("{}..{}", damage.start, damage.end),
        lost_offsets = %format!("{}..{}", damage.first, damage.resume),
        lost_records = damage.resume - damage.first,
        reason = %damage.reason,
        "damaged log segment: readers skip this byte range (run `shiplog log verify`; restore the segment from a backup)"
    );
}

impl SegmentReader {
    /// Opens the segment holding `offset` at the nearest index entry at or before it.
    /// A sealed segment found at open is scanned (and its damage recorded) on first use.
    fn open_at(&self, offset: Offset) -> Result<ReadCursor, LogError> {
        let mut attempt = 0;
        let (base, path, len, indexed, upper, file) = loop {
            let (base, path, len, indexed, upper) = {
                let table = read_lock(&self.shared.table);
                let start = table.segments[0].base;
                let end = *self.durable.borrow();
                let i = table
                    .find(offset)
                    .ok_or(LogError::OutOfRange { offset, start, end })?;
                let s = &table.segments[i];
                let upper = table.segments.get(i + 1).map(|n| n.base);
                (s.base, s.path.clone(), s.len, s.indexed, upper)
            };
            match SegmentFile::open(&path) {
                Ok(file) => break (base, path, len, indexed, upper, file),
                // The compressor replaced the `.seg` by its `.zseg` meanwhile: the table
                // names the new file now.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 3 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        };
        if !indexed {
            let scan = scan_sealed(&file, base, len, upper)?;
            if let Some((position, reason)) = scan.stop {
                // Only the last segment has no upper bound, and it is always indexed.
                return Err(LogError::Corrupt {
                    location: format!("{} byte {position}", path.display()),
                    reason,
                });
            }
            for d in scan.damage {
                register_damage(&self.shared, base, d);
            }
            let mut table = write_lock(&self.shared.table);
            if let Some(i) = table.find(base) {
                let s = &mut table.segments[i];
                if s.base == base && !s.indexed {
                    s.index = scan.index;
                    s.indexed = true;
                }
            }
        }
        let read_pos = {
            let table = read_lock(&self.shared.table);
            let s = &table.segments[table.find(base).expect("segment present")];
            let i = s.index.partition_point(|&(o, _)| o <= offset);
            if i == 0 {
                SEGMENT_HEADER_LEN
            } else {
                s.index[i - 1].1
            }
        };
        Ok(ReadCursor {
            base,
            file,
            buf: Bytes::new(),
            read_pos,
        })
    }

    /// The cursor met damage at byte `position` of its segment, where offset `self.next`
    /// was expected: finds the damaged range (recorded by the segment's scan, or found
    /// now by resynchronising), moves past it and notes the records skipped. `false` when
    /// the range cannot be bounded yet: damage in the last segment that no valid frame
    /// follows (yet); the reader then waits for more records.
    fn skip_damage(&mut self, position: u64, reason: String) -> Result<bool, LogError> {
        let cursor = self.cursor.as_ref().expect("reading with a cursor");
        let base = cursor.base;
        let (known, path, len, upper) = {
            let table = read_lock(&self.shared.table);
            let i = table.find(base).expect("segment present");
            let s = &table.segments[i];
            (
                s.damage.iter().find(|d| d.start == position).cloned(),
                s.path.clone(),
                s.len,
                table.segments.get(i + 1).map(|n| n.base),
            )
        };
        let damage = match known {
            Some(d) => d,
            None => {
                // In the newest segment, as at recovery: a frame after the damaged bytes.
                let mode = match upper {
                    Some(_) => Resync::Sealed,
                    None => Resync::Newest,
                };
                let found = resync(&cursor.file, position, len, self.next, upper, mode)?;
                let damage = match (found, upper) {
                    (Some((end, resume)), _) => Damage {
                        start: position,
                        end,
                        first: self.next,
                        resume,
                        reason,
                    },
                    (None, Some(upper)) => Damage {
                        start: position,
                        end: len,
                        first: self.next,
                        resume: upper.max(self.next),
                        reason,
                    },
                    (None, None) => return Ok(false),
                };
                register_damage(&self.shared, base, damage)
            }
        };
        if damage.end <= position && damage.resume <= self.next {
            // Nothing to skip past: the bytes here are not what the record says.
            return Err(LogError::Corrupt {
                location: format!("{} byte {position}", path.display()),
                reason: damage.reason,
            });
        }
        if damage.resume > self.next {
            if self.skipped.len() < MAX_PENDING_SKIPS {
                self.skipped.push(SkippedRange {
                    first: self.next,
                    ..skipped_range(&path, &damage)
                });
            }
            self.next = damage.resume;
        }
        let cursor = self.cursor.as_mut().expect("reading with a cursor");
        cursor.buf = Bytes::new();
        cursor.read_pos = damage.end;
        Ok(true)
    }
}

/// Durable length of the segment `base`, and the base of the next segment if any.
pub(super) fn segment_limit(shared: &Shared, base: Offset) -> (u64, Option<Offset>) {
    let table = read_lock(&shared.table);
    match table.find(base) {
        Some(i) => (
            table.segments[i].len,
            table.segments.get(i + 1).map(|s| s.base),
        ),
        None => (0, None),
    }
}

impl SegmentReader {
    /// Reads records below `end` that are available now, skipping damaged ranges.
    pub(super) fn read_available(
        &mut self,
        end: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        let start = read_lock(&self.shared.table).start;
        if self.next < start {
            // Retention removed these offsets (and maybe the segment of the cursor): they
            // are not damage, the reader goes on at the log's start.
            self.next = start;
            self.cursor = None;
        }
        if self.next >= end {
            return Ok(Vec::new());
        }
        let wanted = (end - self.next).min(max_records as u64) as usize;
        let mut out = Vec::with_capacity(wanted.min(8192));
        let mut bytes = 0usize;
        while self.next < end && out.len() < max_records && (out.is_empty() || bytes < max_bytes) {
            if self.cursor.is_none() {
                self.cursor = Some(self.open_at(self.next)?);
            }
            let cursor = self.cursor.as_mut().expect("cursor just set");
            // Damage met at this byte of the segment, and why.
            let damaged: (u64, String) = match parse_frame(&cursor.buf) {
                Parsed::Frame {
                    offset,
                    key_len,
                    total,
                } => {
                    if offset < self.next {
                        // Skipping from an index entry (or a damaged range) to the start offset.
                        cursor.buf = cursor.buf.slice(total..);
                        continue;
                    }
                    if offset != self.next {
                        (
                            cursor.read_pos - cursor.buf.len() as u64,
                            format!("frame holds offset {offset}, expected {}", self.next),
                        )
                    } else {
                        let key_end = FRAME_OVERHEAD + key_len;
                        out.push(LogEntry {
                            partition: 0,
                            offset,
                            key: cursor.buf.slice(FRAME_OVERHEAD..key_end),
                            value: cursor.buf.slice(key_end..total),
                        });
                        bytes += total - FRAME_OVERHEAD;
                        cursor.buf = cursor.buf.slice(total..);
                        self.next += 1;
                        continue;
                    }
                }
                Parsed::Incomplete(need) => {
                    let (limit, next_base) = segment_limit(&self.shared, cursor.base);
                    if cursor.read_pos < limit {
                        let have = cursor.buf.len();
                        // `have < need` here, so at least one byte is read.
                        let more = need
                            .max(READ_CHUNK)
                            .saturating_sub(have)
                            .min((limit - cursor.read_pos) as usize);
                        let mut chunk = Vec::with_capacity(have + more);
                        chunk.extend_from_slice(&cursor.buf);
                        chunk.resize(have + more, 0);
                        cursor
                            .file
                            .read_exact_at(&mut chunk[have..], cursor.read_pos)?;
                        cursor.read_pos += more as u64;
                        cursor.buf = Bytes::from(chunk);
                        continue;
                    } else if let (true, Some(next_base)) = (cursor.buf.is_empty(), next_base) {
                        if next_base <= self.next {
                            self.cursor = None; // on to the next segment
                            continue;
                        }
                        (
                            cursor.read_pos,
                            format!(
                                "segment ends before offset {}, the next one starts at {next_base}",
                                self.next
                            ),
                        )
                    } else if cursor.buf.is_empty() {
                        break; // the durable end has not reached the table yet
                    } else {
                        (
                            cursor.read_pos - cursor.buf.len() as u64,
                            "frame runs past the durable end of the segment".into(),
                        )
                    }
                }
                Parsed::Bad(reason) => (cursor.read_pos - cursor.buf.len() as u64, reason),
            };
            let (position, reason) = damaged;
            if !self.skip_damage(position, reason)? {
                break;
            }
        }
        Ok(out)
    }
}

impl LogReader for SegmentReader {
    fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, LogError>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let end = *self.durable.borrow_and_update();
                if self.next < end && max_records > 0 {
                    let batch = blocking(|| self.read_available(end, max_records, max_bytes))?;
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                }
                match tokio::time::timeout_at(deadline, self.durable.changed()).await {
                    Ok(Ok(())) => continue,
                    // Timed out, or the log is gone: nothing new.
                    Ok(Err(_)) | Err(_) => return Ok(Vec::new()),
                }
            }
        })
    }

    fn position(&self) -> Offset {
        self.next
    }

    fn take_skipped(&mut self) -> Vec<SkippedRange> {
        std::mem::take(&mut self.skipped)
    }
}
