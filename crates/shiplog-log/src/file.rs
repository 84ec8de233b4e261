//! The segmented file log: shiplog's embedded, single-partition durable log.
//!
//! # On-disk format (version 1)
//!
//! A log is one directory. It holds:
//!
//! - `LOCK`: an empty file, `flock`ed exclusively while a [`SegmentedLog`] has the directory
//!   open, so two processes can never write the same log.
//! - Segment files named by the offset of their first record, zero-padded to 20 decimal
//!   digits: `00000000000000000000.seg`, `00000000000000004096.seg`, … The segments of a log
//!   cover dense, contiguous offset ranges: a segment's records run from its base offset up
//!   to (excluding) the base offset of the next segment. Files with other names are ignored.
//!
//! Every segment starts with a 24-byte header:
//!
//! ```text
//! +--------------------+----------------+-----------------+---------------------+
//! | magic "SHPLGSEG"   | version u32 LE | reserved u32 LE | base offset u64 LE  |
//! | 8 bytes            | = 1            | = 0             | = the file's name   |
//! +--------------------+----------------+-----------------+---------------------+
//! ```
//!
//! followed by record frames, back to back, with no padding:
//!
//! ```text
//! +---------------+---------------+------------------+----------------+-----+-------+
//! | length u32 LE | CRC32C u32 LE | offset u64 LE    | key len u16 LE | key | value |
//! +---------------+---------------+------------------+----------------+-----+-------+
//!                                 |<------------------ body ---------------------->|
//! ```
//!
//! - `length` is the byte length of the body: `10 + key len + value len` (so a frame is
//!   `18 + key + value` bytes). The value's length is implied by it.
//! - `CRC32C` (Castagnoli) covers the whole body: offset, key length, key and value.
//! - `offset` is the record's offset; within a segment the first frame holds the base offset
//!   and each next frame holds the previous offset + 1.
//! - Keys are at most 65,535 bytes; key + value at most [`FileLogConfig::max_record_bytes`].
//!
//! # Who creates and deletes files
//!
//! Only the log's writer thread creates, extends and truncates segments, and only
//! [`SegmentedLog::open`] (recovery) deletes one: an empty or header-torn *trailing* segment
//! left by a crash during a roll. On a failed group commit (a write or sync error) the writer
//! deletes the segments it created during that very group. Nothing else deletes segments:
//! retention (dropping whole sealed segments, oldest first) is not part of this version.
//! So a log always starts at offset 0; when the first segment file's base is above 0, the
//! files before it were deleted by hand (to free disk, say). The log then opens at the
//! first offset it has: a warning names the missing offsets, and readers report them like
//! damage (see "Damage" below).
//!
//! # Writing: group commit and rolling
//!
//! [`Log::append`] hands its batch to the writer thread through a channel and waits. The
//! writer takes the first waiting request and every request queued behind it (up to
//! [`FileLogConfig::max_batch_bytes`]), assigns offsets in queue order, encodes all frames
//! into one buffer, writes it with one `pwrite` at the end of the last segment, calls
//! `fdatasync` once, and only then completes every request of the group. While one sync
//! runs, new requests queue up and share the next one.
//!
//! Before a frame would take a non-empty segment past [`FileLogConfig::segment_bytes`], the
//! writer *rolls*: it writes and syncs what it has for the current segment (which becomes
//! sealed and is never written again), creates the next segment named by the next offset,
//! writes its header, and continues. A group that created a segment also fsyncs the
//! directory before acknowledging. A record larger than a segment gets a segment of its own.
//!
//! If a write or sync fails, every request of the group fails (`ENOSPC`/`EDQUOT` as
//! [`LogError::NoSpace`]), the segments created by the group are deleted, the segment that
//! was last when the group began is truncated back to its last synced length (and is the
//! last segment again), and the writer keeps serving later requests. If that truncation
//! fails too, it is retried before the next group writes anything.
//!
//! Readers never see a byte that is not synced: after each successful group commit the
//! writer publishes the durable lengths of the segments and then the durable end offset
//! (through a `tokio::sync::watch` channel); readers read only below both.
//!
//! # Recovery
//!
//! Sealed segments are not scanned at open (use [`verify`] to check them all); a reader
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
//!   skipped and reported by readers, named by [`verify`]), and the scan goes on from the
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
//! # Reading
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
//! range found so far in [`Log::damage`] (for `/metrics`), and the first reader to find a
//! range logs a warning naming the segment, the byte range and the offsets lost. Damage
//! that no valid frame follows loses the records up to the next segment's base; a sealed
//! segment that ends early (cut by hand, or the segment file after it deleted) loses the
//! offsets it lacks, up to the next file's base. Offsets below the first segment file
//! (files deleted) are skipped the same way: a reader asked to start below the first
//! offset the log has starts there and reports the offsets before it, and [`Log::damage`]
//! lists them. The scan that indexes a sealed segment on first use finds all of its
//! damage at once, so whatever reads the whole log (a rebuild of the dedup index without a
//! snapshot, a replay) reports every damaged range of the log; damage in the newest
//! segment is found at open. Damage in the last segment that no valid frame follows yet
//! cannot be bounded: the reader waits there (recovery truncates such bytes at the next
//! open, as a torn tail). In the newest segment a reader resynchronises only on a frame
//! past the bad bytes, as recovery does. [`verify`] uses the same resynchronising scans
//! and names every damaged or missing range, not only the first of a segment, each as the
//! next open and readers will treat it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{oneshot, watch};

use crate::{
    Log, LogEntry, LogError, LogReader, LogRecord, LogStats, Offset, Partition, RecordPosition,
    SkippedRange,
};

/// The first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHPLGSEG";
/// The on-disk format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: u64 = 24;
/// Bytes a frame adds to key + value: length, CRC, offset, key length.
pub const FRAME_OVERHEAD: usize = 18;
/// Bytes of a frame before its body: length and CRC.
const FRAME_PREFIX: usize = 8;
/// Body bytes before the key: offset and key length.
const BODY_PREFIX: usize = 10;
/// One sparse index entry per this many records of a segment (a power of two).
pub const INDEX_INTERVAL: u64 = 4096;
/// Readers and scans read segments in chunks of this size.
const READ_CHUNK: usize = 1 << 20;
const SEGMENT_SUFFIX: &str = ".seg";
const LOCK_FILE: &str = "LOCK";

/// Sizes of the file log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLogConfig {
    /// A segment is rolled before a frame would take it past this size (default 64 MiB).
    pub segment_bytes: u64,
    /// Largest key + value of one record (default 16 MiB).
    pub max_record_bytes: usize,
    /// Largest sum of frames written by one group commit (default 8 MiB). The first request
    /// of a group is always taken, whatever its size.
    pub max_batch_bytes: usize,
}

impl Default for FileLogConfig {
    fn default() -> Self {
        FileLogConfig {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            max_batch_bytes: 8 << 20,
        }
    }
}

/// What [`SegmentedLog::open`] found and repaired; the caller logs it.
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
/// damaged range the scan resynchronises on the next valid frame (see [`SegmentedLog`]'s
/// reading), so every damaged place is named, not only the first of a segment. Offsets in
/// no segment file (files deleted) are named too. Read only; meant for a log that is not
/// open (on a live log the tail may show in-flight bytes).
pub fn verify(dir: &Path) -> Result<VerifyReport, LogError> {
    let mut report = VerifyReport::default();
    let segments = list_segments(dir)?;
    // A file log starts at offset 0: offsets below the first segment file were in files
    // deleted.
    if let Some((base, path)) = segments.first().filter(|(base, _)| *base > 0) {
        report.damage.push(SegmentDamage {
            segment: segment_path(dir, 0),
            position: 0,
            end: 0,
            lost: Some(0..*base),
            missing: true,
            reason: missing_head_range(dir, path, 0, *base).reason,
        });
    }
    let mut expected_base: Option<Offset> = segments.first().map(|s| s.0);
    for (i, (base, path)) in segments.iter().enumerate() {
        let (base, path) = (*base, path.clone());
        let upper = segments.get(i + 1).map(|s| s.0);
        report.segments += 1;
        let file = File::open(&path)?;
        let len = file.metadata()?.len();
        report.bytes += len;
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
        for d in &scan.damage {
            report.damage.push(damage(
                d.start,
                d.end,
                Some(d.first..d.resume),
                d.reason.clone(),
            ));
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

/// The embedded durable log: one partition (0) stored as segment files in a directory.
/// See the [module documentation](self) for the format and the guarantees.
pub struct SegmentedLog {
    shared: Arc<Shared>,
    sender: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stopped: watch::Receiver<()>,
    dir: PathBuf,
    config: FileLogConfig,
}

impl std::fmt::Debug for SegmentedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentedLog")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("end", &*self.shared.durable.borrow())
            .finish()
    }
}

impl SegmentedLog {
    /// Opens (creating if needed) the log in `dir`, recovers its tail, and starts the writer
    /// thread. Fails with [`LogError::Unavailable`] if another process has it open.
    pub fn open(
        dir: &Path,
        config: FileLogConfig,
    ) -> Result<(SegmentedLog, RecoveryReport), LogError> {
        validate_config(&config)?;
        fs::create_dir_all(dir)?;
        let lock = lock_dir(dir)?;
        let dir_file = File::open(dir)?;
        let mut segments = list_segments(dir)?;
        let mut report = RecoveryReport::default();
        let tail = recover_tail(dir, &dir_file, &mut segments, &mut report)?;

        let mut infos: Vec<SegmentInfo> = segments[..segments.len() - 1]
            .iter()
            .map(|(base, path)| -> Result<SegmentInfo, LogError> {
                Ok(SegmentInfo {
                    base: *base,
                    path: path.clone(),
                    len: fs::metadata(path)?.len(),
                    index: Vec::new(),
                    indexed: false,
                    damage: Vec::new(),
                })
            })
            .collect::<Result<_, _>>()?;
        let (tail_base, tail_path) = segments.last().cloned().expect("recovery leaves a segment");
        for d in &tail.damage {
            // Damage in the newest segment that valid records follow: not a torn tail.
            warn_damage(&tail_path, d);
            report.damage.push(skipped_range(&tail_path, d));
        }
        infos.push(SegmentInfo {
            base: tail_base,
            path: tail_path.clone(),
            len: tail.len,
            index: tail.index,
            indexed: true,
            damage: tail.damage,
        });
        let table = Table { segments: infos };
        if let Some(missing) = table.missing_below(dir, 0) {
            tracing::warn!(
                missing_offsets = %format!("{}..{}", missing.first, missing.end),
                first_segment = %table.segments[0].path.display(),
                "log segment files missing: the log starts at offset {}; readers start there and \
                 report offsets {}..{} as skipped, the projection records those it had not \
                 projected as dead letters (deleted by hand? run `shiplog log verify`)",
                missing.end,
                missing.first,
                missing.end,
            );
            report.missing = Some(missing.first..missing.end);
        }
        let start = table.segments[0].base;
        report.segments = table.segments.len() as u64;
        report.records = tail.next_offset - start;

        let (durable, _) = watch::channel(tail.next_offset);
        let shared = Arc::new(Shared {
            table: RwLock::new(table),
            durable,
            syncs: AtomicU64::new(0),
            faults: Faults::default(),
        });
        let (sender, receiver) = mpsc::channel();
        let (stopped_tx, stopped) = watch::channel(());
        let writer = Writer {
            dir: dir.to_path_buf(),
            dir_file,
            _lock: lock,
            config: config.clone(),
            file: tail.file,
            tail_base,
            tail_path,
            tail_len: tail.len,
            next_offset: tail.next_offset,
            dirty: false,
            buf: Vec::new(),
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("shiplog-log-writer".into())
            .spawn(move || writer.run(receiver, stopped_tx))?;
        let log = SegmentedLog {
            shared,
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            stopped,
            dir: dir.to_path_buf(),
            config,
        };
        Ok((log, report))
    }

    /// [`verify`] for this log's directory.
    pub fn verify(dir: &Path) -> Result<VerifyReport, LogError> {
        verify(dir)
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first offset the log holds.
    pub fn start_offset(&self) -> Offset {
        read_lock(&self.shared.table).segments[0].base
    }

    #[cfg(test)]
    pub(crate) fn faults(&self) -> &Faults {
        &self.shared.faults
    }
}

impl Drop for SegmentedLog {
    fn drop(&mut self) {
        // Dropping the sender lets the writer drain what is queued and exit.
        lock(&self.sender).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Log for SegmentedLog {
    fn append(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'static, Result<Vec<RecordPosition>, LogError>> {
        let mut bytes = 0usize;
        for record in &records {
            let size = record.key.len() + record.value.len();
            if size > self.config.max_record_bytes {
                return err_future(LogError::RecordTooLarge {
                    size,
                    limit: self.config.max_record_bytes,
                });
            }
            if record.key.len() > u16::MAX as usize {
                return err_future(LogError::RecordTooLarge {
                    size: record.key.len(),
                    limit: u16::MAX as usize,
                });
            }
            bytes += FRAME_OVERHEAD + size;
        }
        let (reply, response) = oneshot::channel();
        let sent = match &*lock(&self.sender) {
            None => false,
            Some(_) if records.is_empty() => return Box::pin(async { Ok(Vec::new()) }),
            Some(sender) => sender
                .send(AppendRequest {
                    records,
                    bytes,
                    reply,
                })
                .is_ok(),
        };
        if !sent {
            return err_future(LogError::Closed);
        }
        Box::pin(async move { response.await.unwrap_or(Err(LogError::Closed)) })
    }

    fn partitions(&self) -> Vec<Partition> {
        vec![0]
    }

    fn reader(&self, partition: Partition, from: Offset) -> Result<Box<dyn LogReader>, LogError> {
        if partition != 0 {
            return Err(LogError::Unavailable(format!(
                "partition {partition} does not exist (the file log has partition 0 only)"
            )));
        }
        let durable = self.shared.durable.subscribe();
        let end = *durable.borrow();
        // Below the first segment file: the files holding those offsets are gone. Start at
        // the first offset there is and report the rest as skipped, like damage.
        let (start, missing) = {
            let table = read_lock(&self.shared.table);
            (table.segments[0].base, table.missing_below(&self.dir, from))
        };
        if from > end {
            return Err(LogError::OutOfRange {
                offset: from,
                start,
                end,
            });
        }
        Ok(Box::new(SegmentReader {
            shared: self.shared.clone(),
            durable,
            next: from.max(start),
            cursor: None,
            skipped: missing.into_iter().collect(),
        }))
    }

    fn end_offset(&self, partition: Partition) -> Offset {
        if partition == 0 {
            *self.shared.durable.borrow()
        } else {
            0
        }
    }

    fn close(&self) -> BoxFuture<'static, Result<(), LogError>> {
        // Queued appends stay in the channel and are committed before the writer exits.
        lock(&self.sender).take();
        let mut stopped = self.stopped.clone();
        Box::pin(async move {
            // The writer drops its end after its last group commit and closing its files.
            while stopped.changed().await.is_ok() {}
            Ok(())
        })
    }

    fn damage(&self) -> Vec<SkippedRange> {
        let table = read_lock(&self.shared.table);
        let missing = table.missing_below(&self.dir, 0);
        missing
            .into_iter()
            .chain(
                table
                    .segments
                    .iter()
                    .flat_map(|s| s.damage.iter().map(|d| skipped_range(&s.path, d))),
            )
            .collect()
    }

    fn stats(&self) -> LogStats {
        let table = read_lock(&self.shared.table);
        LogStats {
            bytes: table.segments.iter().map(|s| s.len).sum(),
            records: *self.shared.durable.borrow(),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            segments: table.segments.len() as u64,
        }
    }
}

fn err_future<T: Send + 'static>(error: LogError) -> BoxFuture<'static, Result<T, LogError>> {
    Box::pin(async move { Err(error) })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn validate_config(config: &FileLogConfig) -> Result<(), LogError> {
    let invalid = |msg: &str| {
        Err(LogError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file log config: {msg}"),
        )))
    };
    if config.segment_bytes < 2 * SEGMENT_HEADER_LEN {
        return invalid("segment_bytes is too small");
    }
    if config.max_record_bytes > (u32::MAX as usize - BODY_PREFIX) {
        return invalid("max_record_bytes must fit a u32 frame length");
    }
    if config.max_batch_bytes == 0 {
        return invalid("max_batch_bytes must be positive");
    }
    Ok(())
}

/// The state shared by the log handle, the writer thread and the readers.
struct Shared {
    table: RwLock<Table>,
    /// The durable end offset; published after the table is updated.
    durable: watch::Sender<Offset>,
    syncs: AtomicU64,
    faults: Faults,
}

struct Table {
    /// Sorted by base offset; never empty.
    segments: Vec<SegmentInfo>,
}

impl Table {
    /// Index of the segment holding `offset` (the last one whose base is ≤ offset).
    fn find(&self, offset: Offset) -> Option<usize> {
        self.segments
            .partition_point(|s| s.base <= offset)
            .checked_sub(1)
    }

    /// The offsets from `from` up to the first segment file, when it starts above `from`:
    /// a file log starts at offset 0 and never deletes a sealed segment itself, so these
    /// were in segment files deleted (by hand, to free disk, say).
    fn missing_below(&self, dir: &Path, from: Offset) -> Option<SkippedRange> {
        let first = &self.segments[0];
        (from < first.base).then(|| missing_head_range(dir, &first.path, from, first.base))
    }
}

/// Offsets `from..start` of the segment files missing before `first` (whose base is
/// `start`), as readers report them.
fn missing_head_range(dir: &Path, first: &Path, from: Offset, start: Offset) -> SkippedRange {
    let name = first.file_name().unwrap_or_default().to_string_lossy();
    SkippedRange {
        partition: 0,
        first: from,
        end: start,
        location: format!("{}: no segment file before {name}", dir.display()),
        reason: format!(
            "segment files missing (deleted by hand?): no segment file holds offsets 0..{start}, \
             the log starts at {name}"
        ),
    }
}

/// A damaged range of segment `path` as readers report it.
fn skipped_range(path: &Path, d: &Damage) -> SkippedRange {
    SkippedRange {
        partition: 0,
        first: d.first,
        end: d.resume,
        location: format!("{} bytes {}..{}", path.display(), d.start, d.end),
        reason: d.reason.clone(),
    }
}

struct SegmentInfo {
    base: Offset,
    path: PathBuf,
    /// Durable length in bytes: readers read below it.
    len: u64,
    /// Sparse index: (offset, byte position of its frame), ascending.
    index: Vec<(Offset, u64)>,
    /// Whether `index` is complete (sealed segments found at open are indexed lazily).
    indexed: bool,
    /// Damaged ranges found so far, by start position; readers skip them.
    damage: Vec<Damage>,
}

/// Error injection for tests: each counter fails that many upcoming operations.
#[derive(Default)]
pub(crate) struct Faults {
    /// Upcoming writes fail with ENOSPC after writing half their bytes.
    fail_writes: AtomicU32,
    /// Upcoming fdatasyncs fail with EIO.
    fail_syncs: AtomicU32,
}

impl Faults {
    #[cfg(test)]
    pub(crate) fn fail_next_writes(&self, n: u32) {
        self.fail_writes.store(n, Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(crate) fn fail_next_syncs(&self, n: u32) {
        self.fail_syncs.store(n, Ordering::SeqCst);
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn write_all_at(&self, file: &File, data: &[u8], pos: u64) -> io::Result<()> {
        if Self::take(&self.fail_writes) {
            file.write_all_at(&data[..data.len() / 2], pos)?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        file.write_all_at(data, pos)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        if Self::take(&self.fail_syncs) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        file.sync_data()
    }
}

fn map_io_error(error: &io::Error) -> LogError {
    match error.raw_os_error() {
        Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => LogError::NoSpace,
        _ => LogError::Io(io::Error::new(error.kind(), error.to_string())),
    }
}

fn segment_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(segment_name(base))
}

/// The file name of the segment whose first record has offset `base`.
fn segment_name(base: Offset) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// Segment files of `dir`, sorted by base offset.
fn list_segments(dir: &Path) -> Result<Vec<(Offset, PathBuf)>, LogError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(base) = digits.parse::<Offset>() else {
            continue;
        };
        segments.push((base, entry.path()));
    }
    segments.sort();
    Ok(segments)
}

fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(LogError::Unavailable(format!(
                "log directory {} is in use by another log instance",
                dir.display()
            )));
        }
        return Err(error.into());
    }
    Ok(file)
}

fn segment_header(base: Offset) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&base.to_le_bytes());
    header
}

enum Header {
    Valid,
    /// Not a complete header: a crash while the segment was being created.
    Torn(String),
}

fn read_header(file: &File, file_len: u64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; file_len.min(SEGMENT_HEADER_LEN) as usize];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// `Err` is damage that is not a torn write.
fn check_header(bytes: &[u8], base: Offset) -> Result<Header, String> {
    if bytes.len() < SEGMENT_HEADER_LEN as usize {
        return Ok(Header::Torn(format!(
            "partial segment header ({} of {SEGMENT_HEADER_LEN} bytes)",
            bytes.len()
        )));
    }
    if bytes.iter().all(|&b| b == 0) {
        return Ok(Header::Torn("all-zero segment header".into()));
    }
    if bytes[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    let header_base = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if header_base != base {
        return Err(format!(
            "header base offset {header_base} does not match the file name ({base})"
        ));
    }
    Ok(Header::Valid)
}

fn encode_frame(buf: &mut Vec<u8>, offset: Offset, key: &[u8], value: &[u8]) {
    let body_len = (BODY_PREFIX + key.len() + value.len()) as u32;
    buf.extend_from_slice(&body_len.to_le_bytes());
    let crc_at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let body_at = buf.len();
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = crc32c::crc32c(&buf[body_at..]);
    buf[crc_at..body_at].copy_from_slice(&crc.to_le_bytes());
}

enum Parsed {
    /// A whole, CRC-checked frame of `total` bytes; key at `18..18+key_len`, value after.
    Frame {
        offset: Offset,
        key_len: usize,
        total: usize,
    },
    /// The frame needs this many bytes in all.
    Incomplete(usize),
    Bad(String),
}

fn parse_frame(buf: &[u8]) -> Parsed {
    if buf.len() < FRAME_PREFIX {
        return Parsed::Incomplete(FRAME_PREFIX);
    }
    let body_len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if body_len < BODY_PREFIX {
        return Parsed::Bad(format!(
            "frame length {body_len} is below the minimum of {BODY_PREFIX}"
        ));
    }
    let total = FRAME_PREFIX + body_len;
    if buf.len() < total {
        return Parsed::Incomplete(total);
    }
    let stored = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let body = &buf[FRAME_PREFIX..total];
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Parsed::Bad(format!(
            "CRC32C mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    let offset = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let key_len = u16::from_le_bytes(body[8..10].try_into().expect("2 bytes")) as usize;
    if BODY_PREFIX + key_len > body_len {
        return Parsed::Bad(format!("key length {key_len} runs past the frame"));
    }
    Parsed::Frame {
        offset,
        key_len,
        total,
    }
}

struct Scan {
    /// End of the last valid frame.
    valid_len: u64,
    records: u64,
    next_offset: Offset,
    index: Vec<(Offset, u64)>,
    /// Damaged ranges skipped ([`scan_sealed`] only).
    damage: Vec<Damage>,
    /// Where and why the scan stopped before the end of the file.
    stop: Option<(u64, String)>,
}

/// A damaged range of a segment, skipped by readers: bytes `start..end` hold no readable
/// frame, and the records `first..resume` were in them (none when `first == resume`:
/// only bytes between frames are bad). Frames resume at `end` with offset `resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Damage {
    start: u64,
    end: u64,
    first: Offset,
    resume: Offset,
    reason: String,
}

/// Walks the frames of a segment from its header to `file_len`, checking CRCs and offsets;
/// stops at the first damage (tail recovery: what follows is a torn write).
fn scan_segment(file: &File, base: Offset, file_len: u64) -> io::Result<Scan> {
    scan_from(file, base, SEGMENT_HEADER_LEN, base, file_len)
}

/// Walks the frames of a segment from byte `start` (where offset `next` is expected) to
/// `file_len`, stopping at the first damage.
fn scan_from(
    file: &File,
    base: Offset,
    start: u64,
    next: Offset,
    file_len: u64,
) -> io::Result<Scan> {
    let mut scan = Scan {
        valid_len: start,
        records: 0,
        next_offset: next,
        index: Vec::new(),
        damage: Vec::new(),
        stop: None,
    };
    let mut data: Vec<u8> = Vec::new();
    let mut data_pos = start; // file position of data[0]
    let mut cursor = 0usize;
    loop {
        let pos = data_pos + cursor as u64;
        match parse_frame(&data[cursor..]) {
            Parsed::Frame { offset, total, .. } => {
                if offset != scan.next_offset {
                    scan.stop = Some((
                        pos,
                        format!("frame holds offset {offset}, expected {}", scan.next_offset),
                    ));
                    break;
                }
                if (offset - base) & (INDEX_INTERVAL - 1) == 0 {
                    scan.index.push((offset, pos));
                }
                cursor += total;
                scan.records += 1;
                scan.next_offset += 1;
                scan.valid_len = pos + total as u64;
            }
            Parsed::Incomplete(need) => {
                let available = file_len.saturating_sub(pos);
                if available == 0 {
                    break;
                }
                if need as u64 > available {
                    let reason = if available < FRAME_PREFIX as u64 {
                        format!("torn frame header ({available} bytes at the end of the file)")
                    } else {
                        format!(
                            "frame of {need} bytes runs past the end of the file ({available} bytes left)"
                        )
                    };
                    scan.stop = Some((pos, reason));
                    break;
                }
                data.drain(..cursor);
                cursor = 0;
                data_pos = pos;
                let have = data.len();
                let want = need.max(READ_CHUNK).min(available as usize);
                data.resize(want, 0);
                file.read_exact_at(&mut data[have..], data_pos + have as u64)?;
            }
            Parsed::Bad(reason) => {
                scan.stop = Some((pos, reason));
                break;
            }
        }
    }
    Ok(scan)
}

/// Walks every frame of a segment whose records are acknowledged (a sealed one), skipping
/// damaged ranges: after damage it resynchronises on the next valid frame ([`resync`]).
/// `upper` is the base offset of the next segment (where this one's records must end);
/// with it, damage that no valid frame follows runs to the end of the file and loses the
/// records up to `upper`, and a segment that ends early loses the rest. Without it (the
/// last segment) such damage is left in `stop`: its extent is unknown.
fn scan_sealed(file: &File, base: Offset, len: u64, upper: Option<Offset>) -> io::Result<Scan> {
    scan_skipping(file, base, len, upper, Resync::Sealed)
}

/// Walks every frame of the newest segment, telling damage from a torn tail: damage that
/// a valid frame with a plausible offset follows (found *after* the damaged bytes, see
/// [`Resync::Newest`]) is recorded in `damage` and skipped, like damage in a sealed
/// segment; the first damage that no valid frame follows is the torn tail, left in `stop`
/// (recovery truncates the file at `valid_len`, the end of the last valid frame).
fn scan_newest(file: &File, base: Offset, len: u64) -> io::Result<Scan> {
    scan_skipping(file, base, len, None, Resync::Newest)
}

fn scan_skipping(
    file: &File,
    base: Offset,
    len: u64,
    upper: Option<Offset>,
    mode: Resync,
) -> io::Result<Scan> {
    let mut scan = scan_segment(file, base, len)?;
    while let Some((start, reason)) = scan.stop.take() {
        let first = scan.next_offset;
        match resync(file, start, len, first, upper, mode)? {
            Some((end, resume)) => {
                scan.damage.push(Damage {
                    start,
                    end,
                    first,
                    resume,
                    reason,
                });
                let more = scan_from(file, base, end, resume, len)?;
                scan.valid_len = more.valid_len;
                scan.records += more.records;
                scan.next_offset = more.next_offset;
                scan.index.extend(more.index);
                scan.stop = more.stop;
            }
            None => {
                match upper {
                    Some(resume) => {
                        scan.damage.push(Damage {
                            start,
                            end: len,
                            first,
                            resume: resume.max(first),
                            reason,
                        });
                        scan.next_offset = resume.max(first);
                    }
                    // Nothing valid follows in the last segment: its extent is unknown.
                    None => scan.stop = Some((start, reason)),
                }
                break;
            }
        }
    }
    if let Some(upper) = upper {
        if scan.stop.is_none() && scan.next_offset < upper {
            let end = scan.next_offset;
            scan.damage.push(Damage {
                start: len,
                end: len,
                first: end,
                resume: upper,
                reason: format!(
                    "offsets {end}..{upper} are in no segment file: {this} ends at offset \
                     {end} and the next file is {next} ({missing} is missing, deleted by hand?, \
                     or {this} was cut short)",
                    this = segment_name(base),
                    next = segment_name(upper),
                    missing = segment_name(end),
                ),
            });
            scan.next_offset = upper;
        }
    }
    Ok(scan)
}

/// Where [`resync`] may resume after damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resync {
    /// A sealed segment: anywhere from the damaged position on, including right there (a
    /// whole frame holding a later offset: records missing without bytes).
    Sealed,
    /// The newest segment: only after the damaged position. A torn write leaves
    /// unacknowledged bytes after the last synced frame but never a whole frame holding a
    /// later offset where the next one belongs; such a frame with nothing valid after it is
    /// truncated with the torn tail.
    Newest,
}

/// Finds the first position at or after `from` (the start of a damaged frame that should
/// hold offset `expected`) where a whole frame with a valid CRC32C holds a plausible
/// offset: at least `expected`, below `upper` when known, and at most one record per
/// minimal frame (18 bytes) since `from`, since the lost frames lay between. Returns the
/// position and that offset. A false match needs a 32-bit CRC to agree by chance on top
/// of the length, key length and offset checks; record values are JSON, which never holds
/// the zero bytes a frame header of a plausible length has.
fn resync(
    file: &File,
    from: u64,
    len: u64,
    expected: Offset,
    upper: Option<Offset>,
    mode: Resync,
) -> io::Result<Option<(u64, Offset)>> {
    let mut window: Vec<u8> = Vec::new();
    let mut window_pos = from;
    let mut c = if mode == Resync::Newest {
        from + 1
    } else {
        from
    };
    while c + FRAME_OVERHEAD as u64 <= len {
        if c + FRAME_OVERHEAD as u64 > window_pos + window.len() as u64 {
            window_pos = c;
            let n = (len - c).min(READ_CHUNK as u64) as usize;
            window.resize(n, 0);
            file.read_exact_at(&mut window, c)?;
        }
        let i = (c - window_pos) as usize;
        let h = &window[i..i + FRAME_OVERHEAD];
        let body_len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as u64;
        let offset = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        let key_len = u16::from_le_bytes(h[16..18].try_into().expect("2 bytes")) as u64;
        // A valid frame right at `from` may hold any later offset (records missing without
        // bytes); further on, the lost frames took at least 18 bytes each.
        let most = if c == from {
            Offset::MAX
        } else {
            expected.saturating_add((c - from) / FRAME_OVERHEAD as u64)
        };
        let plausible = body_len >= BODY_PREFIX as u64
            && c + FRAME_PREFIX as u64 + body_len <= len
            && BODY_PREFIX as u64 + key_len <= body_len
            && offset >= expected
            && offset <= most
            && upper.is_none_or(|u| offset < u);
        if plausible {
            let stored = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
            let body_at = i + FRAME_PREFIX;
            let body_end = body_at + body_len as usize;
            let computed = if body_end <= window.len() {
                crc32c::crc32c(&window[body_at..body_end])
            } else {
                let mut body = vec![0u8; body_len as usize];
                file.read_exact_at(&mut body, c + FRAME_PREFIX as u64)?;
                crc32c::crc32c(&body)
            };
            if computed == stored {
                return Ok(Some((c, offset)));
            }
        }
        c += 1;
    }
    Ok(None)
}

struct RecoveredTail {
    file: File,
    len: u64,
    next_offset: Offset,
    index: Vec<(Offset, u64)>,
    /// Damaged ranges of the segment that valid frames follow: kept, skipped by readers.
    damage: Vec<Damage>,
}

/// Repairs the last segment (see the module doc), creating the first one for a new log.
/// Leaves `segments` holding the segments that remain.
fn recover_tail(
    dir: &Path,
    dir_file: &File,
    segments: &mut Vec<(Offset, PathBuf)>,
    report: &mut RecoveryReport,
) -> Result<RecoveredTail, LogError> {
    let mut reasons: Vec<String> = Vec::new();
    let result = loop {
        let Some((base, path)) = segments.last().cloned() else {
            let path = segment_path(dir, 0);
            let file = create_fresh_segment(&path, 0)?;
            dir_file.sync_all()?;
            segments.push((0, path));
            break RecoveredTail {
                file,
                len: SEGMENT_HEADER_LEN,
                next_offset: 0,
                index: Vec::new(),
                damage: Vec::new(),
            };
        };
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let file_len = file.metadata()?.len();
        let only = segments.len() == 1;
        let (records, stop) = match check_header(&read_header(&file, file_len)?, base) {
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
                    true => Some(scan_newest(&file, base, file_len)?),
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
                let scan = scan_newest(&file, base, file_len)?;
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
fn create_fresh_segment(path: &Path, base: Offset) -> io::Result<File> {
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

struct AppendRequest {
    records: Vec<LogRecord>,
    /// Sum of the frame sizes.
    bytes: usize,
    reply: oneshot::Sender<Result<Vec<RecordPosition>, LogError>>,
}

/// The writer thread's state: the only code that changes segment files.
struct Writer {
    dir: PathBuf,
    dir_file: File,
    _lock: File,
    config: FileLogConfig,
    /// The last segment, open for writing.
    file: File,
    tail_base: Offset,
    tail_path: PathBuf,
    /// Synced length of the last segment.
    tail_len: u64,
    /// Next offset to assign (= durable end).
    next_offset: Offset,
    /// A failed group may have left bytes past `tail_len` that could not be truncated yet.
    dirty: bool,
    buf: Vec<u8>,
    shared: Arc<Shared>,
}

/// What one group commit changed, to publish on success or undo on failure.
struct Group {
    /// The segment that was the tail when the group began, if the group rolled.
    original: Option<File>,
    /// Segments this group created.
    created: Vec<PathBuf>,
    /// Durable lengths and new index entries per segment touched, in order.
    updates: Vec<SegmentUpdate>,
    seg_base: Offset,
    seg_path: PathBuf,
    /// File position where `Writer::buf` goes in the current segment.
    seg_start: u64,
    index: Vec<(Offset, u64)>,
    next: Offset,
}

struct SegmentUpdate {
    base: Offset,
    path: PathBuf,
    len: u64,
    index: Vec<(Offset, u64)>,
}

impl Writer {
    fn run(mut self, requests: mpsc::Receiver<AppendRequest>, stopped: watch::Sender<()>) {
        let max_batch = self.config.max_batch_bytes;
        let mut carry: Option<AppendRequest> = None;
        loop {
            let first = match carry.take() {
                Some(request) => request,
                None => match requests.recv() {
                    Ok(request) => request,
                    Err(_) => break, // every sender is gone and the queue is drained
                },
            };
            let mut bytes = first.bytes;
            let mut group = vec![first];
            while bytes < max_batch {
                match requests.try_recv() {
                    Ok(request) if bytes + request.bytes > max_batch => {
                        carry = Some(request);
                        break;
                    }
                    Ok(request) => {
                        bytes += request.bytes;
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        drop(self); // close the files and release the directory lock
        drop(stopped); // then tell close() we are done
    }

    fn commit(&mut self, requests: Vec<AppendRequest>) {
        let first_offset = self.next_offset;
        let mut group = Group {
            original: None,
            created: Vec::new(),
            updates: Vec::new(),
            seg_base: self.tail_base,
            seg_path: self.tail_path.clone(),
            seg_start: self.tail_len,
            index: Vec::new(),
            next: self.next_offset,
        };
        match self.write_group(&requests, &mut group) {
            Ok(()) => {
                self.publish(group);
                let mut offset = first_offset;
                for request in requests {
                    let n = request.records.len() as u64;
                    let positions = (offset..offset + n)
                        .map(|offset| RecordPosition {
                            partition: 0,
                            offset,
                        })
                        .collect();
                    offset += n;
                    let _ = request.reply.send(Ok(positions));
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = requests.len(), "log group commit failed");
                self.rollback(group);
                for request in requests {
                    let _ = request.reply.send(Err(map_io_error(&error)));
                }
            }
        }
    }

    fn write_group(&mut self, requests: &[AppendRequest], g: &mut Group) -> io::Result<()> {
        let faults = &self.shared.faults;
        if self.dirty {
            self.file.set_len(self.tail_len)?;
            faults.sync_data(&self.file)?;
            self.dirty = false;
        }
        self.buf.clear();
        for record in requests.iter().flat_map(|r| &r.records) {
            let frame_len = (FRAME_OVERHEAD + record.key.len() + record.value.len()) as u64;
            let current = g.seg_start + self.buf.len() as u64;
            if current > SEGMENT_HEADER_LEN && current + frame_len > self.config.segment_bytes {
                // Seal the current segment, then roll to a new one named by the next offset.
                faults.write_all_at(&self.file, &self.buf, g.seg_start)?;
                faults.sync_data(&self.file)?;
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                g.updates.push(SegmentUpdate {
                    base: g.seg_base,
                    path: g.seg_path.clone(),
                    len: current,
                    index: std::mem::take(&mut g.index),
                });
                let path = segment_path(&self.dir, g.next);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?;
                g.created.push(path.clone());
                let previous = std::mem::replace(&mut self.file, file);
                if g.original.is_none() {
                    g.original = Some(previous);
                }
                faults.write_all_at(&self.file, &segment_header(g.next), 0)?;
                g.seg_base = g.next;
                g.seg_path = path;
                g.seg_start = SEGMENT_HEADER_LEN;
                self.buf.clear();
            }
            if (g.next - g.seg_base) & (INDEX_INTERVAL - 1) == 0 {
                g.index.push((g.next, g.seg_start + self.buf.len() as u64));
            }
            encode_frame(&mut self.buf, g.next, &record.key, &record.value);
            g.next += 1;
        }
        faults.write_all_at(&self.file, &self.buf, g.seg_start)?;
        faults.sync_data(&self.file)?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        if !g.created.is_empty() {
            self.dir_file.sync_all()?;
        }
        g.updates.push(SegmentUpdate {
            base: g.seg_base,
            path: g.seg_path.clone(),
            len: g.seg_start + self.buf.len() as u64,
            index: std::mem::take(&mut g.index),
        });
        Ok(())
    }

    /// Makes a committed group visible: segment table first, then the durable end.
    fn publish(&mut self, g: Group) {
        self.tail_base = g.seg_base;
        self.tail_path = g.seg_path;
        self.tail_len = g.seg_start + self.buf.len() as u64;
        self.next_offset = g.next;
        {
            let mut table = write_lock(&self.shared.table);
            for update in g.updates {
                match table.segments.last_mut() {
                    Some(last) if last.base == update.base => {
                        last.len = update.len;
                        last.index.extend(update.index);
                    }
                    _ => table.segments.push(SegmentInfo {
                        base: update.base,
                        path: update.path,
                        len: update.len,
                        index: update.index,
                        indexed: true,
                        damage: Vec::new(),
                    }),
                }
            }
        }
        self.shared.durable.send_replace(self.next_offset);
    }

    /// Undoes a failed group: deletes the segments it created and truncates the tail back
    /// to its synced length. If that fails too, retries before the next group.
    fn rollback(&mut self, g: Group) {
        if let Some(original) = g.original {
            self.file = original;
        }
        for path in &g.created {
            if let Err(error) = fs::remove_file(path) {
                tracing::error!(%error, path = %path.display(), "could not remove segment of a failed group");
            }
        }
        if !g.created.is_empty() {
            if let Err(error) = self.dir_file.sync_all() {
                tracing::error!(%error, "could not sync the log directory");
            }
        }
        let truncated = self
            .file
            .set_len(self.tail_len)
            .and_then(|()| self.shared.faults.sync_data(&self.file));
        if let Err(error) = truncated {
            tracing::error!(%error, "could not truncate the log tail after a failed write");
            self.dirty = true;
        }
    }
}

/// Runs blocking file I/O from async code without stalling the runtime's other tasks.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

struct SegmentReader {
    shared: Arc<Shared>,
    durable: watch::Receiver<Offset>,
    /// Offset of the next record to return.
    next: Offset,
    cursor: Option<ReadCursor>,
    /// Ranges skipped over damage, not yet taken by the consumer.
    skipped: Vec<SkippedRange>,
}

struct ReadCursor {
    base: Offset,
    file: File,
    /// Read but not yet returned bytes; starts at a frame boundary.
    buf: Bytes,
    /// File position just after `buf`.
    read_pos: u64,
}

/// How many skipped ranges a reader keeps for a consumer that never takes them.
const MAX_PENDING_SKIPS: usize = 1024;

/// Records a damaged range of segment `base` (once), with a warning naming the segment,
/// the bytes and the records lost. Returns the range as recorded.
fn register_damage(shared: &Shared, base: Offset, damage: Damage) -> Damage {
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
fn warn_damage(path: &Path, damage: &Damage) {
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
        let file = File::open(&path)?;
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
fn segment_limit(shared: &Shared, base: Offset) -> (u64, Option<Offset>) {
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
    fn read_available(
        &mut self,
        end: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
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

#[cfg(test)]
mod tests;
