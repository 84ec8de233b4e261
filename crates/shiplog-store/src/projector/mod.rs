//! `ParquetProjector`: log entries → per-kind Arrow batches → zstd Parquet files,
//! committed exactly once through `_state.json` (see the crate docs for the protocol).
//!
//! - [`layout`]: where every file lives and how it is named (the only code that knows the
//!   Parquet layout, the consumer group's `_partitions/` included);
//! - [`flush`]: buffered entries to Parquet files under temporary names;
//! - [`commit`]: the commit through the state file, and recovery at open;
//! - [`compact`]: merging small files and closed days, and retention by age;
//! - [`deadletter`]: entries that are not events, and log records lost to damage.

pub mod commit;
pub mod compact;
pub mod deadletter;
pub mod flush;
pub mod keep;
pub mod layout;

pub use compact::{apply_retention, compact};
pub use deadletter::DEAD_LETTER_DIR;
pub use keep::KeptBelow;
pub use layout::{
    ensure_group_layout, file_name, group_partition_dir, parquet_dir, parse_file_name,
    projection_layout, ProjectionLayout, SCHEMA_VERSION,
};

use crate::fsutil::{create_dir_durable, lock_projection_dir, DirLock};
use crate::pricing::PriceTable;
use crate::state::State;
use crate::StoreError;
use chrono::NaiveDate;
use commit::recover;
use layout::write_schema_files;
use shiplog_events::Kind;
use shiplog_log::{LogEntry, Offset, Partition, SkippedRange};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Tuning of the projection. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectorConfig {
    /// Flush when this many events are buffered (default 100,000).
    pub flush_rows: usize,
    /// Flush when this many bytes of event JSON are buffered (default 16 MiB: the buffer
    /// and its Arrow columns are the projection's memory).
    pub flush_bytes: usize,
    /// Flush buffered events at the latest this long after the first one arrived
    /// (default 1 s, so an acknowledged event is queryable within 2 s).
    pub flush_interval: Duration,
    /// Records asked from the log per read (default 10,000).
    pub read_batch_records: usize,
    /// Cron expression (cron 0.15: `sec min hour day-of-month month day-of-week [year]`,
    /// UTC) for compaction and retention; default `"0 15 3 * * *"` (03:15:00 daily).
    pub compaction_schedule: String,
    /// Days to keep per kind (by event date, UTC); a kind not listed is kept forever.
    pub retention_days: BTreeMap<Kind, u32>,
    /// zstd level of the Parquet files (default 1: fast; compaction uses `compaction_zstd_level`).
    pub zstd_level: i32,
    /// zstd level of compacted files (default 3).
    pub compaction_zstd_level: i32,
    /// Threads used to parse and encode a large flush (default 2; 1 disables).
    pub threads: usize,
    /// Merge this many consecutive small files of a day as soon as they exist (default
    /// 16; below 2 disables); see [`ParquetProjector::merge_small_files`].
    pub merge_small_files: usize,
    /// A file under this size is small (default 32 MiB).
    pub small_file_bytes: u64,
    /// Prices `api_cost` events sent without `cost_usd` (default: the shipped table).
    pub prices: Arc<PriceTable>,
    /// Drop events whose `(source, id)` was already projected within this window (default
    /// `None`: off; the Kafka backend turns it on, since several ingest nodes only dedup in
    /// their own memory). The index is committed with each flush (`_dedup/`).
    pub dedup_window: Option<Duration>,
    /// Validate every entry against the event contract before projecting it (default
    /// off: the file log only holds events ingest validated; the Kafka backend turns it
    /// on, since any producer may write to the topic). Invalid entries are kept aside in
    /// `_deadletter/`, like undecodable ones, never dropped silently.
    pub validate: bool,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            flush_rows: 100_000,
            flush_bytes: 16 << 20,
            flush_interval: Duration::from_secs(1),
            read_batch_records: 10_000,
            compaction_schedule: "0 15 3 * * *".to_string(),
            retention_days: BTreeMap::new(),
            zstd_level: 1,
            compaction_zstd_level: 3,
            threads: 2,
            merge_small_files: 16,
            small_file_bytes: 32 << 20,
            prices: PriceTable::shipped(),
            dedup_window: None,
            validate: false,
        }
    }
}

/// Steps at which a test can make the projector fail as if the process were killed.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Temp files written and fsynced, state not yet committed.
    AfterTempWrite,
    /// State committed, no rename done.
    AfterStateCommit,
    /// State committed, the first rename (or delete) done, the rest not.
    MidRenames,
}

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Events projected into rows.
    pub rows: u64,
    /// Log entries that could not be decoded as events (skipped, counted).
    pub skipped: u64,
    /// Parquet files committed.
    pub files: u64,
    /// Bytes of Parquet written.
    pub bytes: u64,
    pub elapsed: Duration,
    /// Events dropped as duplicates of a projected `(source, id)` (dedup on).
    pub duplicates: u64,
    /// Log records lost to damage that the log's reader skipped (recorded in the dead
    /// letter with where and why; also counted in `skipped`).
    pub lost: u64,
}

/// What one compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Files merged away.
    pub files_in: u64,
    /// Files written.
    pub files_out: u64,
    pub rows: u64,
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// `(kind, date)` partitions deleted.
    pub partitions_deleted: Vec<(Kind, NaiveDate)>,
}

/// Projects log entries into Parquet, exactly once. Owns `<data_dir>/parquet/` while it
/// lives (an exclusive lock on `_lock`).
pub struct ParquetProjector {
    root: PathBuf,
    config: ProjectorConfig,
    state: State,
    buffer: Vec<LogEntry>,
    /// Ranges of damaged log records the reader skipped, to record with the next flush.
    skips: Vec<SkippedRange>,
    buffered_bytes: usize,
    /// Next expected offset per partition, including buffered entries.
    buffered_next: BTreeMap<Partition, Offset>,
    crash: Option<CrashPoint>,
    /// Day directories written since the last [`Self::merge_small_files`].
    touched: BTreeSet<PathBuf>,
    dedup: Option<crate::dedup::ProjectionDedup>,
    _lock: DirLock,
}

impl std::fmt::Debug for ParquetProjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetProjector")
            .field("root", &self.root)
            .field("offsets", &self.state.offsets)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl ParquetProjector {
    /// Opens (creating) `<data_dir>/parquet/`, takes its lock and recovers: completes the
    /// renames and deletes of the last commit, removes uncommitted temp files, and
    /// resumes from the committed offsets.
    pub fn open(data_dir: &Path, config: ProjectorConfig) -> Result<ParquetProjector, StoreError> {
        let root = parquet_dir(data_dir);
        create_dir_durable(&root)?;
        let lock = lock_projection_dir(&root)?;
        Self::open_locked(root, config, lock)
    }

    pub(crate) fn open_locked(
        root: PathBuf,
        config: ProjectorConfig,
        lock: DirLock,
    ) -> Result<ParquetProjector, StoreError> {
        let state = recover(&root)?;
        write_schema_files(&root)?;
        let buffered_next = state.offsets.clone();
        let dedup = match config.dedup_window {
            Some(w) => Some(crate::dedup::ProjectionDedup::load(&root, w)?),
            None => None,
        };
        Ok(ParquetProjector {
            root,
            config,
            state,
            buffer: Vec::new(),
            skips: Vec::new(),
            buffered_bytes: 0,
            buffered_next,
            crash: None,
            touched: BTreeSet::new(),
            dedup,
            _lock: lock,
        })
    }

    /// The parquet directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &ProjectorConfig {
        &self.config
    }

    /// The next offset to read from `partition` (committed + buffered).
    pub fn next_offset(&self, partition: Partition) -> Offset {
        self.buffered_next.get(&partition).copied().unwrap_or(0)
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// The committed (durable, queryable) next offset per partition.
    pub fn committed_offsets(&self) -> &BTreeMap<Partition, Offset> {
        &self.state.offsets
    }

    /// Events (and skipped ranges of damaged records) buffered and not yet flushed.
    pub fn buffered(&self) -> usize {
        self.buffer.len() + self.skips.len()
    }

    /// Buffers what a log reader returned: `entries`, and the `skipped` ranges of damaged
    /// records it reported with them ([`shiplog_log::LogReader::take_skipped`]). Each
    /// skipped offset is committed with the next flush as a dead letter (where, why), so
    /// the projection accounts for every offset: a row, or a dead letter.
    pub fn push_read(&mut self, entries: Vec<LogEntry>, skipped: Vec<SkippedRange>) {
        if skipped.is_empty() {
            return self.push(entries);
        }
        let mut skipped = skipped.into_iter().peekable();
        let mut run = Vec::with_capacity(entries.len());
        for e in entries {
            while let Some(r) =
                skipped.next_if(|r| r.partition == e.partition && r.first <= e.offset)
            {
                self.push(std::mem::take(&mut run));
                self.skip(r);
            }
            run.push(e);
        }
        self.push(run);
        for r in skipped {
            self.skip(r);
        }
    }

    /// Records a skipped range of damaged log records (the part not already projected).
    fn skip(&mut self, mut r: SkippedRange) {
        let next = self.buffered_next.entry(r.partition).or_insert(0);
        if r.end <= *next {
            return;
        }
        r.first = r.first.max(*next);
        *next = r.end;
        tracing::warn!(
            partition = r.partition,
            offsets = %format!("{}..{}", r.first, r.end),
            location = %r.location,
            reason = %r.reason,
            "damaged log records skipped by the projection; recorded in _deadletter/"
        );
        self.skips.push(r);
    }

    /// Buffers entries. Entries below a partition's next offset (already projected or
    /// buffered) are ignored, so re-delivered entries never make duplicates.
    pub fn push(&mut self, entries: Vec<LogEntry>) {
        for e in entries {
            let next = self.buffered_next.entry(e.partition).or_insert(0);
            if e.offset < *next {
                continue;
            }
            if e.offset > *next {
                tracing::warn!(
                    partition = e.partition,
                    expected = *next,
                    got = e.offset,
                    "gap in the log's offsets"
                );
            }
            *next = e.offset + 1;
            self.buffered_bytes += e.value.len();
            self.buffer.push(e);
        }
    }

    /// Whether the buffer reached `flush_rows` or `flush_bytes`.
    pub fn should_flush(&self) -> bool {
        self.buffer.len() >= self.config.flush_rows
            || self.buffered_bytes >= self.config.flush_bytes
    }

    #[doc(hidden)]
    pub fn inject_crash(&mut self, at: CrashPoint) {
        self.crash = Some(at);
    }

    fn crash_point(&self, at: CrashPoint) -> Result<(), StoreError> {
        if self.crash == Some(at) {
            return Err(StoreError::InjectedCrash(at));
        }
        Ok(())
    }
}
