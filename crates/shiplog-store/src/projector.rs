//! `ParquetProjector`: log entries → per-kind Arrow batches → zstd Parquet files,
//! committed exactly once through `_state.json` (see the crate docs for the protocol).

use crate::convert::{decode_envelope, KindBatchBuilder};
use crate::fsutil::{
    create_dir_durable, list_dir, lock_projection_dir, remove_file_if_exists, sync_dir, DirLock,
    IoAt,
};
use crate::pricing::PriceTable;
use crate::schema::kind_schema;
use crate::state::State;
use crate::StoreError;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use shiplog_events::Kind;
use shiplog_log::{LogEntry, Offset, Partition, SkippedRange};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Version of the per-kind columns; bumping it rewrites the schema-only files.
/// 2: `api_costs` gained `cache_write_tokens`, `reasoning_tokens` and `cost_source`.
pub const SCHEMA_VERSION: u32 = 2;

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

/// The parquet directory of a data directory.
pub fn parquet_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("parquet")
}

/// `p<partition>-<first offset>-<last offset>.parquet` (offsets zero-padded to 12 digits).
pub fn file_name(partition: Partition, first: Offset, last: Offset) -> String {
    format!("p{partition}-{first:012}-{last:012}.parquet")
}

/// Parses a name made by [`file_name`].
pub fn parse_file_name(name: &str) -> Option<(Partition, Offset, Offset)> {
    let rest = name.strip_prefix('p')?.strip_suffix(".parquet")?;
    let mut it = rest.splitn(3, '-');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

pub(crate) fn date_of_micros(micros: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .date_naive()
}

fn date_dir_name(d: NaiveDate) -> String {
    format!("date={}", d.format("%Y-%m-%d"))
}

fn parse_date_dir(name: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(name.strip_prefix("date=")?, "%Y-%m-%d").ok()
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

pub(crate) fn writer_props(level: i32) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(level).unwrap_or_default(),
        ))
        .set_created_by(format!("shiplog-store {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Writes `batches` to `path` (which must not exist) as one Parquet file, fsynced.
pub(crate) fn write_parquet(
    path: &Path,
    kind: Kind,
    batches: impl IntoIterator<Item = Result<RecordBatch, StoreError>>,
    level: i32,
) -> Result<(u64, u64), StoreError> {
    let file = File::create(path).at(path)?;
    let mut w = ArrowWriter::try_new(file, kind_schema(kind), Some(writer_props(level)))?;
    let mut rows = 0u64;
    for b in batches {
        let b = b?;
        rows += b.num_rows() as u64;
        w.write(&b)?;
    }
    let file = w.into_inner()?;
    file.sync_all().at(path)?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((rows, bytes))
}

/// One file written under its temp name, waiting for the commit.
struct Staged {
    tmp: PathBuf,
    fin: PathBuf,
    rows: u64,
    bytes: u64,
    /// The log partition of a Parquet file's rows (`None`: dead letters, dedup keys).
    partition: Option<Partition>,
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
        let _ = remove_file_if_exists(&root.join("_state.json.tmp"))?;
        let mut state = State::load(&root)?;
        let had_pending =
            !state.renames.is_empty() || !state.deletes.is_empty() || !state.expire.is_empty();
        complete_pending(&root, &state)?;
        remove_stray_temp_files(&root)?;
        let trash = root.join("_trash");
        if trash.exists() {
            fs::remove_dir_all(&trash).at(&trash)?;
        }
        if had_pending {
            state.renames.clear();
            state.deletes.clear();
            state.expire.clear();
            state.store(&root)?;
        }
        write_schema_files(&root)?;
        let buffered_next = state.offsets.clone();
        let dedup = match config.dedup_window {
            Some(w) => Some(crate::dedup::ProjectionDedup::load(&root, w)?),
            None => None,
        };
        if had_pending {
            tracing::info!(dir = %root.display(), "projection recovered: completed the last commit");
        }
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

    /// Writes the buffered events as Parquet files and commits them (see the crate docs).
    /// On error the projector must be dropped and reopened (recovery decides what
    /// survived).
    pub fn flush(&mut self) -> Result<FlushReport, StoreError> {
        let start = Instant::now();
        if self.buffer.is_empty() && self.skips.is_empty() {
            return Ok(FlushReport::default());
        }
        let mut entries = std::mem::take(&mut self.buffer);
        let skips = std::mem::take(&mut self.skips);
        let mut duplicates = 0;
        let mut new_keys = Vec::new();
        if let Some(d) = &self.dedup {
            (entries, new_keys, duplicates) = d.filter(entries);
        }
        let threads = if entries.len() >= 20_000 {
            self.config.threads.max(1)
        } else {
            1
        };
        let chunk = entries.len().div_ceil(threads);
        let root = &self.root;
        let level = self.config.zstd_level;
        let prices: &PriceTable = &self.config.prices;
        let validate = self.config.validate;
        let results: Vec<Result<(Vec<Staged>, u64), StoreError>> = if threads == 1 {
            vec![stage_files(root, &entries, level, prices, validate)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = entries
                    .chunks(chunk)
                    .map(|c| s.spawn(move || stage_files(root, c, level, prices, validate)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("projection thread panicked"))
                    .collect()
            })
        };
        let mut staged = Vec::new();
        let mut skipped = 0;
        for r in results {
            let (s, k) = r?;
            staged.extend(s);
            skipped += k;
        }
        let mut lost_letters = DeadLetters::default();
        for r in &skips {
            lost_letters.push_lost(r);
        }
        let lost = lost_letters.count;
        skipped += lost;
        if let Some(d) = lost_letters.stage(root)? {
            staged.push(d);
        }
        let parquet_files = staged
            .iter()
            .filter(|s| s.fin.extension().is_some_and(|e| e == "parquet"))
            .count() as u64;
        let dedup_at = crate::dedup::ProjectionDedup::now();
        if self.dedup.is_some() {
            if let Some((tmp, fin)) =
                crate::dedup::ProjectionDedup::stage(root, &new_keys, dedup_at)?
            {
                staged.push(Staged {
                    tmp,
                    fin,
                    rows: 0,
                    bytes: 0,
                    partition: None,
                });
            }
        }
        self.crash_point(CrashPoint::AfterTempWrite)?;

        let mut next = self.state.clone();
        next.offsets = self.buffered_next.clone();
        if let Some(absent) = &mut next.absent {
            // Offsets committed without a row: dead letters, damaged records, dropped
            // duplicates, gaps in the log's offsets.
            for (&part, &to) in &next.offsets {
                let from = self.state.offsets.get(&part).copied().unwrap_or(0);
                let rows: u64 = staged
                    .iter()
                    .filter(|s| s.partition == Some(part))
                    .map(|s| s.rows)
                    .sum();
                *absent.entry(part).or_insert(0) += (to - from).saturating_sub(rows);
            }
        }
        next.renames = staged
            .iter()
            .map(|s| (rel(root, &s.tmp), rel(root, &s.fin)))
            .collect();
        next.deletes.clear();
        next.expire.clear();
        next.store(root)?;
        self.state = next;
        self.buffered_bytes = 0;
        if let Some(d) = &mut self.dedup {
            d.committed(root, new_keys, dedup_at);
        }
        self.crash_point(CrashPoint::AfterStateCommit)?;

        let mut dirs = BTreeSet::new();
        for (i, s) in staged.iter().enumerate() {
            if i == 1 {
                self.crash_point(CrashPoint::MidRenames)?;
            }
            fs::rename(&s.tmp, &s.fin).at(&s.fin)?;
            let dir = s.fin.parent().expect("file has a dir").to_path_buf();
            if s.partition.is_some() {
                self.touched.insert(dir.clone());
            }
            dirs.insert(dir);
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        let rows: u64 = staged.iter().map(|s| s.rows).sum();
        let bytes: u64 = staged.iter().map(|s| s.bytes).sum();
        Ok(FlushReport {
            rows,
            skipped,
            files: parquet_files,
            bytes,
            elapsed: start.elapsed(),
            duplicates,
            lost,
        })
    }

    /// Merges the files of each closed day (date < `now`'s UTC date) into one file per kind,
    /// day and log partition, committed through the state file.
    pub fn compact(&mut self, now: DateTime<Utc>) -> Result<CompactionReport, StoreError> {
        let today = now.date_naive();
        let root = self.root.clone();
        let mut plan = MergePlan::default();
        for kind in Kind::ALL {
            for day_dir in list_dir(&root.join(kind.as_str()))? {
                let Some(date) = day_dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(parse_date_dir)
                else {
                    continue;
                };
                if date >= today {
                    continue;
                }
                for (p, files) in files_by_partition(&day_dir)? {
                    if files.len() < 2 {
                        continue;
                    }
                    tracing::info!(
                        kind = kind.as_str(),
                        %date,
                        partition = p,
                        files = files.len(),
                        "compaction: merging the files of a closed day"
                    );
                    plan.merge(
                        &root,
                        kind,
                        &day_dir,
                        p,
                        &files,
                        self.config.compaction_zstd_level,
                    )?;
                }
            }
        }
        self.commit_merges(plan)
    }

    /// Merges runs of small files in the day directories written since the last call, so
    /// that a busy day does not accumulate thousands of files before the nightly
    /// [`Self::compact`] (every file costs each query its metadata, in time and memory).
    ///
    /// Per kind, day and partition, a run of at least [`ProjectorConfig::merge_small_files`]
    /// consecutive files (by offset) of the same size tier (see [`merge_runs`]), each under
    /// [`ProjectorConfig::small_file_bytes`], is merged into one. Tiers keep the rewriting
    /// logarithmic: a merged file is merged again only with files of its own size, not
    /// with every new flush (which rewrote a busy day's data every 16 flushes).
    /// Committed through the state file, like every flush.
    pub fn merge_small_files(&mut self) -> Result<CompactionReport, StoreError> {
        let at = self.config.merge_small_files;
        let touched = std::mem::take(&mut self.touched);
        if at < 2 {
            return Ok(CompactionReport::default());
        }
        let root = self.root.clone();
        let mut plan = MergePlan::default();
        for day_dir in touched {
            let Some(kind) = day_dir
                .parent()
                .and_then(|k| k.file_name())
                .and_then(|n| n.to_str())
                .and_then(Kind::from_name)
            else {
                continue;
            };
            for (p, files) in files_by_partition(&day_dir)? {
                if files.len() < at {
                    continue;
                }
                let sizes: Vec<u64> = files
                    .iter()
                    .map(|f| fs::metadata(&f.2).map_or(u64::MAX, |m| m.len()))
                    .collect();
                for run in merge_runs(&sizes, at, self.config.small_file_bytes) {
                    tracing::debug!(
                        kind = kind.as_str(),
                        dir = %day_dir.display(),
                        partition = p,
                        files = run.len(),
                        "merging small files"
                    );
                    plan.merge(
                        &root,
                        kind,
                        &day_dir,
                        p,
                        &files[run],
                        self.config.zstd_level,
                    )?;
                }
            }
        }
        self.commit_merges(plan)
    }

    /// Commits the merged files of `plan` through the state file, then renames them into
    /// place and deletes their inputs.
    fn commit_merges(&mut self, plan: MergePlan) -> Result<CompactionReport, StoreError> {
        if plan.renames.is_empty() {
            return Ok(plan.report);
        }
        self.crash_point(CrashPoint::AfterTempWrite)?;
        let mut next = self.state.clone();
        next.renames = plan.renames;
        next.deletes = plan.deletes;
        next.expire.clear();
        next.store(&self.root)?;
        self.state = next;
        self.crash_point(CrashPoint::AfterStateCommit)?;
        apply_pending(
            &self.root,
            &self.state,
            self.crash == Some(CrashPoint::MidRenames),
        )?;
        Ok(plan.report)
    }

    /// Deletes whole date partitions older than each kind's retention, committed through
    /// the state file (which counts their rows as absent) and rolled forward on recovery.
    pub fn apply_retention(&mut self, now: DateTime<Utc>) -> Result<RetentionReport, StoreError> {
        let root = self.root.clone();
        let expired = expired_partitions(&root, &self.config.retention_days, now)?;
        if expired.is_empty() {
            return Ok(RetentionReport::default());
        }
        let mut next = self.state.clone();
        if let Some(absent) = &mut next.absent {
            for (_, _, dir) in &expired {
                for (partition, rows) in parquet_rows(dir)? {
                    *absent.entry(partition).or_insert(0) += rows;
                }
            }
        }
        next.renames.clear();
        next.deletes.clear();
        next.expire = expired.iter().map(|(_, _, dir)| rel(&root, dir)).collect();
        next.store(&root)?;
        self.state = next;
        apply_pending(&root, &self.state, false)?;
        let mut report = RetentionReport::default();
        for (kind, date, _) in expired {
            tracing::info!(kind = kind.as_str(), %date, "retention: deleted partition");
            report.partitions_deleted.push((kind, date));
        }
        Ok(report)
    }
}

/// A Parquet file of a day directory: its first and last log offsets, and its path.
type DayFile = (Offset, Offset, PathBuf);

/// Merged files written to temp paths, not yet committed.
#[derive(Default)]
struct MergePlan {
    renames: Vec<(String, String)>,
    deletes: Vec<String>,
    report: CompactionReport,
}

impl MergePlan {
    /// Writes `files` (one kind, day and partition, sorted by offset) into one temp file
    /// named for their whole offset range.
    fn merge(
        &mut self,
        root: &Path,
        kind: Kind,
        day_dir: &Path,
        p: Partition,
        files: &[DayFile],
        level: i32,
    ) -> Result<(), StoreError> {
        let first = files[0].0;
        let last = files.iter().map(|f| f.1).max().unwrap_or(first);
        let fin = day_dir.join(file_name(p, first, last));
        let tmp = day_dir.join(format!("{}.compact.tmp", file_name(p, first, last)));
        let batches = files.iter().flat_map(|f| read_batches(&f.2, kind));
        let (rows, _) = write_parquet(&tmp, kind, batches, level)?;
        self.report.rows += rows;
        self.report.files_in += files.len() as u64;
        self.report.files_out += 1;
        self.renames.push((rel(root, &tmp), rel(root, &fin)));
        self.deletes.extend(files.iter().map(|f| rel(root, &f.2)));
        Ok(())
    }
}

/// Size of the smallest tier above the first in [`merge_runs`].
const TIER_BASE: u64 = 1 << 20;

/// Which consecutive files to merge, given their sizes in offset order: runs of at least
/// `at` files of the same tier, each under `small` bytes. Tier 0 is under 1 MiB, tier
/// *t* is `[16^(t-1), 16^t)` MiB, so `at` = 16 merged files of one tier make (about) one
/// of the next, and a byte is rewritten once per tier it climbs.
pub(crate) fn merge_runs(sizes: &[u64], at: usize, small: u64) -> Vec<std::ops::Range<usize>> {
    let tier = |size: u64| -> Option<u32> {
        if size >= small {
            None
        } else if size < TIER_BASE {
            Some(0)
        } else {
            Some(1 + (size / TIER_BASE).ilog(16))
        }
    };
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=sizes.len() {
        let t = tier(sizes[start]);
        if i == sizes.len() || tier(sizes[i]) != t {
            if t.is_some() && i - start >= at.max(2) {
                runs.push(start..i);
            }
            start = i;
        }
    }
    runs
}

/// The Parquet files of a day directory per log partition, sorted by first offset.
fn files_by_partition(day_dir: &Path) -> Result<BTreeMap<Partition, Vec<DayFile>>, StoreError> {
    let mut groups: BTreeMap<Partition, Vec<DayFile>> = BTreeMap::new();
    for f in list_dir(day_dir)? {
        if let Some((p, a, b)) = f
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_file_name)
        {
            groups.entry(p).or_default().push((a, b, f));
        }
    }
    for files in groups.values_mut() {
        files.sort();
    }
    Ok(groups)
}

/// Reads a Parquet file's batches (for compaction), in the current columns of `kind`.
fn read_batches(
    path: &Path,
    kind: Kind,
) -> Box<dyn Iterator<Item = Result<RecordBatch, StoreError>>> {
    let open = || -> Result<_, StoreError> {
        let f = File::open(path).at(path)?;
        Ok(ParquetRecordBatchReaderBuilder::try_new(f)?
            .with_batch_size(64 * 1024)
            .build()?)
    };
    match open() {
        Ok(reader) => Box::new(reader.map(move |b| {
            b.map_err(StoreError::from)
                .and_then(|b| conform(b, kind).map_err(StoreError::from))
        })),
        Err(e) => Box::new(std::iter::once(Err(e))),
    }
}

/// A batch written with an older [`SCHEMA_VERSION`] in the current columns: columns are
/// taken by name, a column the file lacks is null.
fn conform(batch: RecordBatch, kind: Kind) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = kind_schema(kind);
    if batch.schema() == schema {
        return Ok(batch);
    }
    let cols = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => c.clone(),
            _ => arrow::array::new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema, cols)
}

/// Parses `entries` and writes one temp file per (kind, date, partition), plus one
/// dead-letter file for the entries that are not valid events.
fn stage_files(
    root: &Path,
    entries: &[LogEntry],
    level: i32,
    prices: &PriceTable,
    validate: bool,
) -> Result<(Vec<Staged>, u64), StoreError> {
    let mut builders: HashMap<(Kind, i32, Partition), KindBatchBuilder> = HashMap::new();
    let mut dead = DeadLetters::default();
    for e in entries {
        if validate {
            if let Err(reason) = validate_entry(&e.value) {
                dead.push(e, &reason);
                continue;
            }
        }
        let ev = match decode_envelope(&e.value) {
            Ok(ev) => ev,
            Err(err) => {
                dead.push(e, &format!("not a JSON event: {err}"));
                continue;
            }
        };
        let Some(kind) = ev.kind else {
            dead.push(e, "no known kind");
            continue;
        };
        let days = ev.event_micros().div_euclid(86_400_000_000) as i32;
        builders
            .entry((kind, days, e.partition))
            .or_insert_with(|| KindBatchBuilder::new(kind))
            .append(&ev, e.partition, e.offset, e.value.len(), prices);
    }
    let mut staged = Vec::new();
    let mut keys: Vec<_> = builders.keys().copied().collect();
    keys.sort();
    for key in keys {
        let b = builders.get_mut(&key).expect("key exists");
        let (kind, _, partition) = key;
        let (first, last) = (b.first_offset, b.last_offset);
        let batch = b.finish();
        let date = date_of_micros(batch_first_time(&batch));
        let dir = root.join(kind.as_str()).join(date_dir_name(date));
        create_dir_durable(&dir)?;
        let fin = dir.join(file_name(partition, first, last));
        let tmp = dir.join(format!("{}.tmp", file_name(partition, first, last)));
        if fin.exists() {
            return Err(StoreError::CorruptState {
                path: fin,
                reason:
                    "a file for these offsets already exists: the state file is behind the data"
                        .into(),
            });
        }
        let (rows, bytes) = write_parquet(&tmp, kind, std::iter::once(Ok(batch)), level)?;
        staged.push(Staged {
            tmp,
            fin,
            rows,
            bytes,
            partition: Some(partition),
        });
    }
    let skipped = dead.count;
    if let Some(d) = dead.stage(root)? {
        staged.push(d);
    }
    Ok((staged, skipped))
}

/// Checks a log entry against the event contract (`shiplog_events`), as ingest does.
fn validate_entry(value: &[u8]) -> Result<(), String> {
    let json: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    shiplog_events::Event::from_json(json, shiplog_events::Origin::Internal)
        .map(|_| ())
        .map_err(|e| format!("invalid event: {}: {}", e.field, e.error))
}

/// Entries that are not valid events, kept aside in `_deadletter/` as NDJSON
/// (`{"partition", "offset", "error", "value"}`), committed with the flush that skipped
/// them so a replay writes the same files again.
#[derive(Default)]
struct DeadLetters {
    count: u64,
    first: Option<(Partition, u64)>,
    ndjson: Vec<u8>,
}

/// Folder of the dead-letter files, under the Parquet root.
pub const DEAD_LETTER_DIR: &str = "_deadletter";

impl DeadLetters {
    fn push(&mut self, e: &LogEntry, reason: &str) {
        tracing::warn!(
            partition = e.partition,
            offset = e.offset,
            reason,
            "log entry is not a valid event; kept aside in _deadletter/"
        );
        self.count += 1;
        self.first.get_or_insert((e.partition, e.offset));
        let line = serde_json::json!({
            "partition": e.partition,
            "offset": e.offset,
            "error": reason,
            "value": String::from_utf8_lossy(&e.value),
        });
        serde_json::to_writer(&mut self.ndjson, &line).expect("JSON to a Vec");
        self.ndjson.push(b'\n');
    }

    /// A range of records lost to damage in the log: one line with `offset` (the first),
    /// `end` (after the last), `count`, `error` and `location` (segment, byte range).
    fn push_lost(&mut self, r: &SkippedRange) {
        let count = r.end - r.first;
        self.count += count;
        self.first.get_or_insert((r.partition, r.first));
        let line = serde_json::json!({
            "partition": r.partition,
            "offset": r.first,
            "end": r.end,
            "count": count,
            "error": format!("damaged log record{}: {}", if count == 1 { "" } else { "s" }, r.reason),
            "location": r.location,
        });
        serde_json::to_writer(&mut self.ndjson, &line).expect("JSON to a Vec");
        self.ndjson.push(b'\n');
    }

    fn stage(self, root: &Path) -> Result<Option<Staged>, StoreError> {
        let Some((partition, offset)) = self.first else {
            return Ok(None);
        };
        let dir = root.join(DEAD_LETTER_DIR);
        create_dir_durable(&dir)?;
        let name = format!("p{partition}-{offset:012}-n{}.ndjson", self.count);
        let fin = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        let mut f = fs::File::create(&tmp).at(&tmp)?;
        std::io::Write::write_all(&mut f, &self.ndjson).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        Ok(Some(Staged {
            tmp,
            fin,
            rows: 0,
            bytes: self.ndjson.len() as u64,
            partition: None,
        }))
    }
}

fn batch_first_time(batch: &RecordBatch) -> i64 {
    use arrow::array::{Array, TimestampMicrosecondArray};
    let a = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("column 0 is time");
    if a.is_empty() {
        0
    } else {
        a.value(0)
    }
}

/// Completes the renames and deletes a committed state lists (idempotent).
fn complete_pending(root: &Path, state: &State) -> Result<(), StoreError> {
    apply_pending(root, state, false)
}

fn apply_pending(root: &Path, state: &State, crash_mid: bool) -> Result<(), StoreError> {
    let mut dirs = BTreeSet::new();
    let mut steps = 0;
    // Expired date directories: out of the views' globs atomically (a rename), then gone.
    for d in &state.expire {
        let dir = root.join(d);
        if dir.exists() {
            let trash = root.join("_trash");
            create_dir_durable(&trash)?;
            let to = trash.join(d.replace('/', "-"));
            if to.exists() {
                fs::remove_dir_all(&to).at(&to)?;
            }
            fs::rename(&dir, &to).at(&to)?;
            sync_dir(dir.parent().unwrap_or(root))?;
            fs::remove_dir_all(&to).at(&to)?;
        }
    }
    // Deletes first, then renames: a concurrent reader may miss a compacted day for a
    // moment but never counts it twice.
    for d in &state.deletes {
        if crash_mid && steps == 1 {
            return Err(StoreError::InjectedCrash(CrashPoint::MidRenames));
        }
        let p = root.join(d);
        if remove_file_if_exists(&p)? {
            dirs.insert(p.parent().unwrap_or(root).to_path_buf());
        }
        steps += 1;
    }
    for (tmp, fin) in &state.renames {
        if crash_mid && steps == 1 {
            return Err(StoreError::InjectedCrash(CrashPoint::MidRenames));
        }
        let (t, f) = (root.join(tmp), root.join(fin));
        if t.exists() {
            fs::rename(&t, &f).at(&f)?;
            dirs.insert(f.parent().unwrap_or(root).to_path_buf());
        } else if !f.exists() {
            // Deleted since (retention): nothing to do.
            tracing::debug!(file = %f.display(), "pending rename: neither temp nor final file exists");
        }
        steps += 1;
    }
    for d in dirs {
        sync_dir(&d)?;
    }
    Ok(())
}

/// Deletes `*.tmp` files of uncommitted writes in every kind's date directories and in
/// the dead-letter folder.
fn remove_stray_temp_files(root: &Path) -> Result<(), StoreError> {
    for f in list_dir(&root.join(DEAD_LETTER_DIR))? {
        if f.extension().is_some_and(|e| e == "tmp") {
            tracing::info!(file = %f.display(), "removing uncommitted temp file");
            fs::remove_file(&f).at(&f)?;
        }
    }
    for kind in Kind::ALL {
        for dir in list_dir(&root.join(kind.as_str()))? {
            if !dir.is_dir() {
                continue;
            }
            for f in list_dir(&dir)? {
                if f.extension().is_some_and(|e| e == "tmp") {
                    tracing::info!(file = %f.display(), "removing uncommitted temp file");
                    fs::remove_file(&f).at(&f)?;
                }
            }
        }
    }
    Ok(())
}

/// The schema-only (zero-row) file of a kind, so its view exists before any event.
pub(crate) fn schema_file(root: &Path, kind: Kind) -> PathBuf {
    root.join(kind.as_str())
        .join("_schema")
        .join(format!("schema-v{SCHEMA_VERSION}.parquet"))
}

/// Writes each kind's schema-only file if missing, removing older versions.
pub(crate) fn write_schema_files(root: &Path) -> Result<(), StoreError> {
    for kind in Kind::ALL {
        let path = schema_file(root, kind);
        if path.exists() {
            continue;
        }
        let dir = path.parent().expect("has dir");
        create_dir_durable(dir)?;
        for old in list_dir(dir)? {
            fs::remove_file(&old).at(&old)?;
        }
        let tmp = path.with_extension("tmp");
        write_parquet(&tmp, kind, std::iter::empty(), 1)?;
        fs::rename(&tmp, &path).at(&path)?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// The date directories older than each kind's retention: `(kind, date, dir)`.
fn expired_partitions(
    root: &Path,
    retention: &BTreeMap<Kind, u32>,
    now: DateTime<Utc>,
) -> Result<Vec<(Kind, NaiveDate, PathBuf)>, StoreError> {
    let today = now.date_naive();
    let mut out = Vec::new();
    for (&kind, &days) in retention {
        let cutoff = today - chrono::Days::new(days as u64);
        for dir in list_dir(&root.join(kind.as_str()))? {
            let Some(date) = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_date_dir)
            else {
                continue;
            };
            if date < cutoff {
                out.push((kind, date, dir));
            }
        }
    }
    Ok(out)
}

/// Rows per log partition of the Parquet files in `dir`, from their footers.
pub(crate) fn parquet_rows(dir: &Path) -> Result<BTreeMap<Partition, u64>, StoreError> {
    let mut out = BTreeMap::new();
    for f in list_dir(dir)? {
        let Some((partition, _, _)) = f
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_file_name)
        else {
            continue;
        };
        *out.entry(partition).or_insert(0) += footer_rows(&f)?;
    }
    Ok(out)
}

/// Number of rows of a Parquet file, from its footer.
pub(crate) fn footer_rows(path: &Path) -> Result<u64, StoreError> {
    use parquet::file::reader::FileReader;
    let f = File::open(path).at(path)?;
    let reader = parquet::file::reader::SerializedFileReader::new(f)?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Compacts the closed days of a data directory whose projection is not running (takes
/// the directory's lock; fails with [`StoreError::Locked`] when `serve` holds it —
/// `serve` compacts on its own schedule).
pub fn compact(data_dir: &Path, now: DateTime<Utc>) -> Result<CompactionReport, StoreError> {
    let mut p = ParquetProjector::open(data_dir, ProjectorConfig::default())?;
    p.compact(now)
}

/// Applies retention to a data directory whose projection is not running.
pub fn apply_retention(
    data_dir: &Path,
    retention_days: &BTreeMap<Kind, u32>,
    now: DateTime<Utc>,
) -> Result<RetentionReport, StoreError> {
    let config = ProjectorConfig {
        retention_days: retention_days.clone(),
        ..ProjectorConfig::default()
    };
    ParquetProjector::open(data_dir, config)?.apply_retention(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};

    #[test]
    fn small_files_merge_within_their_size_tier() {
        const K: u64 = 1 << 10;
        const M: u64 = 1 << 20;
        let small = 32 * M;
        // 16 flush files: one run.
        assert_eq!(merge_runs(&[50 * K; 16], 16, small), vec![0..16]);
        assert!(merge_runs(&[50 * K; 15], 16, small).is_empty());
        // A merged 1.2 MiB file is not rewritten with the next 16 flush files...
        let mut sizes = vec![1_200 * K];
        sizes.extend([50 * K; 16]);
        assert_eq!(merge_runs(&sizes, 16, small), vec![1..17]);
        // ...but with 15 more of its own tier.
        let mut sizes = vec![1_200 * K; 16];
        sizes.extend([50 * K; 3]);
        assert_eq!(merge_runs(&sizes, 16, small), vec![0..16]);
        // Tier 1 is [1, 16) MiB, tier 2 [16, 32) here; large files split runs and stay.
        let mut sizes = vec![20 * M; 16];
        sizes.push(40 * M);
        sizes.extend([2 * M; 16]);
        assert_eq!(merge_runs(&sizes, 16, small), vec![0..16, 17..33]);
        assert!(merge_runs(&[40 * M; 20], 16, small).is_empty());
        assert!(merge_runs(&[], 16, small).is_empty());
    }

    #[test]
    fn batches_of_an_older_schema_are_read_in_the_current_columns() {
        // A v1 api_cost file had no cache_write_tokens/reasoning_tokens/cost_source.
        let json = r#"{"kind":"api_cost","id":"a","time":"2026-11-20T10:00:00Z","data":{"provider":"openai","model":"gpt-4o","input_tokens":7,"cache_write_tokens":3}}"#;
        let mut b = crate::convert::KindBatchBuilder::new(Kind::ApiCost);
        let ev = decode_envelope(json.as_bytes()).unwrap();
        b.append(&ev, 0, 0, json.len(), &PriceTable::shipped());
        let full = b.finish();
        let schema = full.schema();
        let keep: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| {
                !["cache_write_tokens", "reasoning_tokens", "cost_source"]
                    .contains(&schema.field(i).name().as_str())
            })
            .collect();
        let old = full.project(&keep).unwrap();
        assert_ne!(old.schema(), kind_schema(Kind::ApiCost));
        let b = conform(old, Kind::ApiCost).unwrap();
        assert_eq!(b.schema(), kind_schema(Kind::ApiCost));
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        assert_eq!(
            col("input_tokens")
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            7
        );
        assert!(col("cost_source").is_null(0));
        assert!(col("cache_write_tokens").is_null(0));
        assert_eq!(
            col("model")
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0),
            "gpt-4o"
        );
    }
}
