//! The shiplog durable log: the source of truth.
//!
//! Owns the [`Log`] trait and its embedded backend, the segmented file log
//! ([`file::SegmentedLog`]); the Kafka backend (crate `shiplog-kafka`) plugs in behind the
//! same trait.
//!
//! Guarantees:
//! - [`Log::append`] resolves only once every record of the batch is durable (fsynced for
//!   the file log, acknowledged by all in-sync replicas for Kafka). There is no
//!   "unconfirmed" append: the type of the call makes the ingest promise impossible to
//!   break by accident.
//! - Readers only ever see durable records, in offset order, each exactly once per read
//!   position.
//! - State files are replaced atomically and directories locked by one mechanism each
//!   ([`durable`]), which every shiplog crate uses.

pub mod durable;
pub mod file;

pub use file::{
    FileLogConfig, RecoveryReport, RetentionPass, RetentionPolicy, SegmentedLog, VerifyReport,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use std::time::Duration;

/// A record's offset within its partition. Offsets are dense: 0, 1, 2, …
pub type Offset = u64;

/// A log partition. The file log has exactly one, partition 0.
pub type Partition = u32;

/// One record to append: `key` routes it (the project: Kafka keeps a project's events in
/// order), `value` is the event JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub key: Bytes,
    pub value: Bytes,
}

/// One record read back, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub partition: Partition,
    pub offset: Offset,
    pub key: Bytes,
    pub value: Bytes,
}

/// Where one appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    pub partition: Partition,
    pub offset: Offset,
}

/// Figures for `/metrics` and operations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes on disk (file log) or produced (Kafka).
    pub bytes: u64,
    /// Records durable in the log (file log: next offset).
    pub records: u64,
    /// Number of syncs (group commits) performed since open.
    pub syncs: u64,
    /// Number of segments (file log).
    pub segments: u64,
    /// Bytes the segments hold uncompressed (file log; equals `bytes` when none is
    /// compressed).
    pub raw_bytes: u64,
    /// Segments stored compressed (file log).
    pub compressed_segments: u64,
    /// The first offset the log holds a record for (file log; 0 for Kafka).
    pub first_offset: Offset,
    /// Where the log starts: offsets below were removed by retention (file log; 0 for
    /// Kafka, whose partitions each have theirs: [`Log::start_offset`]).
    pub start_offset: Offset,
}

/// Records a reader skipped because the bytes holding them are damaged (a corrupt byte in
/// a segment, say) or gone (segment files of the file log deleted by hand). Readers never
/// return damaged data and never stop at damage: they skip it and say so, once per reader,
/// through [`LogReader::take_skipped`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRange {
    pub partition: Partition,
    /// First offset skipped.
    pub first: Offset,
    /// Offset after the last one skipped (`first..end`).
    pub end: Offset,
    /// Where the damage is: segment file and byte range.
    pub location: String,
    /// What is wrong there (CRC mismatch, impossible length, …).
    pub reason: String,
}

/// Errors of the log, tagged so ingest can choose 507 / 503 / 500.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The disk is full: retry later, once space is freed (ingest: 507).
    #[error("no space left on the log's disk")]
    NoSpace,
    /// The backend is unreachable or overloaded (Kafka brokers down, queue full): retry
    /// (ingest: 503 + Retry-After).
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// The log was closed (shutdown).
    #[error("log is closed")]
    Closed,
    /// A record is larger than the log accepts.
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { size: usize, limit: usize },
    /// On-disk data is damaged where it must not be (not a torn tail).
    #[error("corrupt log at {location}: {reason}")]
    Corrupt { location: String, reason: String },
    /// A read asked for an offset the log no longer or not yet has.
    #[error("offset {offset} is out of range (log holds {start}..{end})")]
    OutOfRange {
        offset: Offset,
        start: Offset,
        end: Offset,
    },
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl LogError {
    /// Whether the same append may succeed later (so the client should retry).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LogError::NoSpace | LogError::Unavailable(_) | LogError::Closed
        )
    }
}

/// A durable, ordered, partitioned log.
pub trait Log: Send + Sync + 'static {
    /// Appends a batch and resolves once every record is durable, with the position of each
    /// record in batch order. Concurrent calls share syncs (group commit). On error, none of
    /// the batch may be assumed durable (the caller answers the client with an error, and a
    /// client retry is deduplicated by the ingest layer).
    fn append(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'static, Result<Vec<RecordPosition>, LogError>>;

    /// The partitions of this log.
    fn partitions(&self) -> Vec<Partition>;

    /// A reader of one partition, starting at `from` (inclusive); `from` = the partition's
    /// end is fine (the reader waits), beyond it is `OutOfRange`. Below the log's start
    /// ([`Log::start_offset`]), Kafka (whose retention deletes old records) answers
    /// `OutOfRange` with the partition's real start and end: here when the start it knows
    /// is past `from`, else from [`LogReader::next_batch`] once the read finds `from`
    /// deleted (retention ran since the start was last read); nothing is skipped silently.
    /// The file log starts at its start without reporting anything skipped (retention
    /// removed those offsets on purpose, and never one a reader of the server still
    /// needs), and reports as a [`SkippedRange`] only the offsets between its start and
    /// its first segment file (files deleted by hand).
    fn reader(&self, partition: Partition, from: Offset) -> Result<Box<dyn LogReader>, LogError>;

    /// Where a partition starts: the offsets below it were removed by retention (the file
    /// log's `[log] retention`, Kafka's topic retention) and no reader returns them. 0 when
    /// nothing was removed. Never blocks: Kafka answers the low watermark as last read
    /// (about every second), so its start may have moved on since.
    fn start_offset(&self, partition: Partition) -> Offset {
        let _ = partition;
        0
    }

    /// The next offset to be written in each partition (= count of durable records for the
    /// file log).
    fn end_offset(&self, partition: Partition) -> Offset;

    /// Syncs and stops accepting appends; pending appends complete first.
    fn close(&self) -> BoxFuture<'static, Result<(), LogError>>;

    fn stats(&self) -> LogStats;

    /// Every damaged or missing range found so far (by readers or scans) whose records
    /// readers skip; empty for a backend that has none.
    fn damage(&self) -> Vec<SkippedRange> {
        Vec::new()
    }
}

/// Reads durable records of one partition in offset order.
pub trait LogReader: Send {
    /// Returns up to `max_records` records (or about `max_bytes`), waiting at most `wait` for
    /// the first one; an empty vector means nothing new arrived in time.
    fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, LogError>>;

    /// The offset the next returned record will have.
    fn position(&self) -> Offset;

    /// Takes the ranges this reader skipped over since the last call, in offset order
    /// (damaged records: see [`SkippedRange`]). A consumer that must account for every
    /// offset (the projection) calls it after each batch; the records of a returned batch
    /// below a range's `first` come before it.
    fn take_skipped(&mut self) -> Vec<SkippedRange> {
        Vec::new()
    }
}
