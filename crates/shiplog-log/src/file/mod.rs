//! The segmented file log: shiplog's embedded, single-partition durable log.
//!
//! A log is one directory of segment files. Each concern has its module, and each module's
//! documentation describes the part of the format it implements:
//!
//! - [`format`](mod@format): the directory, the segment header and the record frame (the on-disk
//!   format, version 1);
//! - [`writer`]: group commit, rolling, and what a failed write undoes;
//! - [`recovery`]: what [`SegmentedLog::open`] repairs, and how a torn tail is told from
//!   damage;
//! - [`scan`]: walking a segment's frames and resynchronising after damage;
//! - [`reader`]: reading from any offset, and skipping damage (and saying so);
//! - [`verify`](mod@verify): the full check behind `shiplog log verify`;
//! - [`compress`]: sealed segments stored as seekable zstd blocks (`<base>.zseg`);
//! - [`retention`]: whole sealed segments removed oldest first, and the `START` file;
//! - [`status`]: disk usage and extent, read-only.
//!
//! # Who creates and deletes files
//!
//! Only the log's writer thread creates, extends and truncates segments, and only
//! [`SegmentedLog::open`] (recovery) deletes one: an empty or header-torn *trailing* segment
//! left by a crash during a roll. On a failed group commit (a write or sync error) the writer
//! deletes the segments it created during that very group. The compressor thread
//! (`[log] compress`) replaces a sealed `<base>.seg` by `<base>.zseg` holding the same
//! records, crash-safely (see [`compress`]). Retention ([`retention`], `[log] retention`)
//! deletes whole sealed segments, oldest first, after moving the log's start forward in the
//! `START` file; [`SegmentedLog::open`] deletes segment files that an interrupted retention
//! pass left below `START`. Nothing else deletes segments.
//! So a log starts at offset 0, or at the offset `START` holds. When the first segment
//! file's base is above that, the files before it were deleted by hand (to free disk,
//! say). The log then opens at the first offset it has: a warning names the missing
//! offsets, and readers report them like damage (see [`reader`]); offsets below `START`
//! were removed on purpose and are reported by no one as damage.
//!
//! The directory's `LOCK` file is held with [`crate::durable::DirLock`] while a
//! [`SegmentedLog`] has the directory open, so two processes never write the same log.

pub mod compress;
pub mod format;
pub mod reader;
pub mod recovery;
pub mod retention;
pub mod scan;
pub mod status;
pub mod verify;
pub mod writer;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use futures::future::BoxFuture;

use crate::durable::{DirLock, LockError};
use tokio::sync::{oneshot, watch};

use crate::{
    Log, LogError, LogReader, LogRecord, LogStats, Offset, Partition, RecordPosition, SkippedRange,
};

pub use format::{
    FORMAT_VERSION, FRAME_OVERHEAD, INDEX_INTERVAL, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};
pub use recovery::RecoveryReport;
pub use retention::{read_start, RetentionPass, RetentionPolicy, START_FILE};
pub use status::{status, LogStatus};
pub use verify::{verify, SegmentDamage, VerifyReport};

use format::*;
use reader::{warn_damage, SegmentReader};
use recovery::recover_tail;
use scan::Damage;
use writer::{AppendRequest, Faults, Writer};

/// Sizes and background work of the file log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLogConfig {
    /// A segment is rolled before a frame would take it past this size (default 64 MiB).
    pub segment_bytes: u64,
    /// Largest key + value of one record (default 16 MiB).
    pub max_record_bytes: usize,
    /// Largest sum of frames written by one group commit (default 8 MiB). The first request
    /// of a group is always taken, whatever its size.
    pub max_batch_bytes: usize,
    /// Compress sealed segments in the background ([`compress`]; default off).
    pub compress_sealed: bool,
}

impl Default for FileLogConfig {
    fn default() -> Self {
        FileLogConfig {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            max_batch_bytes: 8 << 20,
            compress_sealed: false,
        }
    }
}

/// The embedded durable log: one partition (0) stored as segment files in a directory.
/// See the [module documentation](self) for the format and the guarantees.
pub struct SegmentedLog {
    shared: Arc<Shared>,
    sender: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    compressor: Mutex<Option<compress::Compressor>>,
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
        compress::finish_interrupted(dir)?;
        let dir_file = File::open(dir)?;
        let start = retention::read_start(dir)?.unwrap_or(0);
        let mut segments = retention::remove_below_start(dir, list_segments(dir)?, start)?;
        let mut report = RecoveryReport::default();
        let tail = recover_tail(dir, &dir_file, &mut segments, start, &mut report)?;
        if tail.next_offset < start {
            return Err(LogError::Corrupt {
                location: dir.join(retention::START_FILE).display().to_string(),
                reason: format!(
                    "the log starts at offset {start}, but its newest segment ends at offset {} \
                     (segment files deleted by hand?)",
                    tail.next_offset
                ),
            });
        }

        let mut infos: Vec<SegmentInfo> = segments[..segments.len() - 1]
            .iter()
            .map(|(base, path)| -> Result<SegmentInfo, LogError> {
                let file = compress::SegmentFile::open(path)?;
                Ok(SegmentInfo {
                    base: *base,
                    path: path.clone(),
                    len: file.len()?,
                    disk_len: file.disk_len()?,
                    index: Vec::new(),
                    indexed: false,
                    damage: Vec::new(),
                    keep_plain: false,
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
            disk_len: tail.len,
            index: tail.index,
            indexed: true,
            damage: tail.damage,
            keep_plain: false,
        });
        let table = Table {
            segments: infos,
            start,
        };
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
        report.segments = table.segments.len() as u64;
        report.records = tail.next_offset - table.first_held();

        let (durable, _) = watch::channel(tail.next_offset);
        let shared = Arc::new(Shared {
            table: RwLock::new(table),
            durable,
            syncs: AtomicU64::new(0),
            faults: Faults::default(),
            maintenance: Mutex::new(()),
            first_record: Mutex::new(None),
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
            compressor: Mutex::new(None),
            stopped,
            dir: dir.to_path_buf(),
            config,
        };
        if log.config.compress_sealed {
            *self::lock(&log.compressor) = Some(compress::Compressor::start(
                log.shared.clone(),
                log.dir.clone(),
            )?);
        }
        Ok((log, report))
    }

    /// [`verify()`](verify()) for this log's directory.
    pub fn verify(dir: &Path) -> Result<VerifyReport, LogError> {
        verify(dir)
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Compresses every sealed segment that can be, now, on the calling thread (what the
    /// background compressor does, for `shiplog log compress` and benchmarks). Returns the
    /// figures of the segments compressed by this call.
    pub fn compress_sealed_now(&self) -> compress::CompressSummary {
        let started = std::time::Instant::now();
        let mut summary = compress::CompressSummary::default();
        while let Some(r) = compress::compress_next(&self.shared, &self.dir, &|| false) {
            summary.add(r);
        }
        summary.elapsed = started.elapsed();
        summary
    }

    /// The value of the first record the log holds (the oldest event kept), if readable.
    /// Cached until the log's start moves.
    pub fn first_record(&self) -> Option<bytes::Bytes> {
        let first = read_lock(&self.shared.table).first_held();
        if let Some((at, value)) = &*lock(&self.shared.first_record) {
            if *at == first {
                return Some(value.clone());
            }
        }
        let mut reader = SegmentReader {
            shared: self.shared.clone(),
            durable: self.shared.durable.subscribe(),
            next: first,
            cursor: None,
            skipped: Vec::new(),
        };
        let end = *self.shared.durable.borrow();
        let entry = reader.read_available(end, 1, 1).ok()?.into_iter().next()?;
        *lock(&self.shared.first_record) = Some((entry.offset, entry.value.clone()));
        Some(entry.value)
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
        if let Some(compressor) = lock(&self.compressor).take() {
            compressor.stop();
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
            (table.first_held(), table.missing_below(&self.dir, from))
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

    fn start_offset(&self, _partition: Partition) -> Offset {
        read_lock(&self.shared.table).start
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
            bytes: table.segments.iter().map(|s| s.disk_len).sum(),
            raw_bytes: table.segments.iter().map(|s| s.len).sum(),
            first_offset: table.first_held(),
            start_offset: table.start,
            compressed_segments: table
                .segments
                .iter()
                .filter(|s| compress::is_compressed(&s.path))
                .count() as u64,
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

/// Takes the directory's `LOCK` ([`crate::durable::DirLock`]).
fn lock_dir(dir: &Path) -> Result<DirLock, LogError> {
    DirLock::acquire(&dir.join(LOCK_FILE)).map_err(|e| match e {
        LockError::Held { .. } => LogError::Unavailable(format!(
            "log directory {} is in use by another log instance",
            dir.display()
        )),
        LockError::Io { source, .. } => LogError::Io(source),
    })
}

/// The state shared by the log handle, the writer thread and the readers.
struct Shared {
    table: RwLock<Table>,
    /// The durable end offset; published after the table is updated.
    durable: watch::Sender<Offset>,
    syncs: AtomicU64,
    faults: Faults,
    /// Held by the compressor while it replaces a segment and by retention while it
    /// removes some: never both at once.
    maintenance: Mutex<()>,
    /// The first record the log holds, by offset (see [`SegmentedLog::first_record`]).
    first_record: Mutex<Option<(Offset, bytes::Bytes)>>,
}

struct Table {
    /// Sorted by base offset; never empty.
    segments: Vec<SegmentInfo>,
    /// Where the log starts (the offset `START` holds; 0 without it): offsets below were
    /// removed by retention. The first segment starts at or (files deleted by hand) above
    /// it, or holds it.
    start: Offset,
}

impl Table {
    /// Index of the segment holding `offset` (the last one whose base is ≤ offset).
    fn find(&self, offset: Offset) -> Option<usize> {
        self.segments
            .partition_point(|s| s.base <= offset)
            .checked_sub(1)
    }

    /// The offsets from `from` (or the log's start, when above) up to the first segment
    /// file, when it starts above them: retention never removes past the start, so these
    /// were in segment files deleted (by hand, to free disk, say).
    fn missing_below(&self, dir: &Path, from: Offset) -> Option<SkippedRange> {
        let first = &self.segments[0];
        let from = from.max(self.start);
        (from < first.base).then(|| missing_head_range(dir, &first.path, from, first.base))
    }

    /// The first offset a segment holds a record for: the start, or the first segment's
    /// base when files were deleted by hand after the start.
    fn first_held(&self) -> Offset {
        self.start.max(self.segments[0].base)
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
            "segment files missing (deleted by hand?): no segment file holds offsets \
             {from}..{start}, the first one is {name}"
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
    /// Durable length in bytes of the raw segment (for a compressed one, of the `.seg` it
    /// was): readers read below it.
    len: u64,
    /// Bytes on disk.
    disk_len: u64,
    /// Sparse index: (offset, byte position of its frame), ascending.
    index: Vec<(Offset, u64)>,
    /// Whether `index` is complete (sealed segments found at open are indexed lazily).
    indexed: bool,
    /// Damaged ranges found so far, by start position; readers skip them.
    damage: Vec<Damage>,
    /// The compressor found damage here: the segment stays plain (readers and `verify`
    /// name the damaged bytes where they are).
    keep_plain: bool,
}

fn map_io_error(error: &io::Error) -> LogError {
    match error.raw_os_error() {
        Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => LogError::NoSpace,
        _ => LogError::Io(io::Error::new(error.kind(), error.to_string())),
    }
}

#[cfg(test)]
mod compress_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;
