//! The projection task of `serve` ([`run_projection`]) and [`replay`].

use crate::check::describe_gaps;
use crate::fsutil::{create_dir_durable, list_dir, lock_projection_dir, IoAt};
use crate::projector::{
    parquet_dir, CompactionReport, FlushReport, ParquetProjector, ProjectorConfig, RetentionReport,
};
use crate::StoreError;
use chrono::Utc;
use shiplog_log::{Log, LogError, LogReader, Offset, Partition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// Next offset to project per log partition: every event below it is queryable.
pub type ProjectedOffsets = BTreeMap<Partition, Offset>;

/// Counters of the projection (`shiplog-web` exposes them at `/metrics`).
#[derive(Debug, Default)]
pub struct ProjectionMetrics {
    pub rows_written: AtomicU64,
    pub files_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub flushes: AtomicU64,
    pub events_skipped: AtomicU64,
    pub flush_errors: AtomicU64,
    /// Duration of the last flush, µs.
    pub last_flush_micros: AtomicU64,
    /// Sum of flush durations, µs.
    pub flush_micros_total: AtomicU64,
    pub compactions: AtomicU64,
    pub files_compacted: AtomicU64,
    pub partitions_deleted: AtomicU64,
    /// Events dropped as duplicates by the projection's `(source, id)` dedup.
    pub duplicates_dropped: AtomicU64,
    /// Log records lost to damage in the log, skipped and recorded as dead letters.
    pub log_records_lost: AtomicU64,
    /// Committed events missing from the Parquet files (a file deleted by hand), as found
    /// by the check at start ([`ParquetProjector::coverage`]).
    pub missing_events: AtomicU64,
    /// Rows beyond the committed offsets (a file copied in by hand), same check.
    pub extra_rows: AtomicU64,
}

impl ProjectionMetrics {
    /// Counts a committed flush: rows, files, bytes, skipped entries, dropped duplicates,
    /// log records lost to damage, and its duration. Every projection (the single one,
    /// each partition of a consumer group) records its flushes here.
    pub fn record_flush(&self, r: &FlushReport) {
        self.rows_written.fetch_add(r.rows, Relaxed);
        self.files_written.fetch_add(r.files, Relaxed);
        self.bytes_written.fetch_add(r.bytes, Relaxed);
        self.events_skipped.fetch_add(r.skipped, Relaxed);
        self.duplicates_dropped.fetch_add(r.duplicates, Relaxed);
        self.log_records_lost.fetch_add(r.lost, Relaxed);
        self.flushes.fetch_add(1, Relaxed);
        let us = r.elapsed.as_micros() as u64;
        self.last_flush_micros.store(us, Relaxed);
        self.flush_micros_total.fetch_add(us, Relaxed);
    }

    /// Counts the small files merged after a flush.
    pub fn record_merge(&self, c: &CompactionReport) {
        self.files_compacted.fetch_add(c.files_in, Relaxed);
    }

    /// Counts a scheduled compaction and the retention pass that follows it.
    pub fn record_compaction(&self, c: &CompactionReport, r: &RetentionReport) {
        self.compactions.fetch_add(1, Relaxed);
        self.files_compacted.fetch_add(c.files_in, Relaxed);
        self.partitions_deleted
            .fetch_add(r.partitions_deleted.len() as u64, Relaxed);
    }
}

/// The running projection of `serve`.
#[derive(Debug)]
pub struct ProjectionHandle {
    /// Committed offsets; changes after every flush (rules wait on it).
    pub progress: watch::Receiver<ProjectedOffsets>,
    pub metrics: Arc<ProjectionMetrics>,
    /// Ends after `shutdown` turns true (a last flush is done first).
    pub task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

/// Longest single wait on the log, so shutdown is noticed quickly.
const MAX_WAIT: Duration = Duration::from_millis(200);

/// Opens the projector (recovery included) and spawns the projection loop: read the log
/// from the committed offsets, buffer, flush on size or `flush_interval`, compact and
/// apply retention on `compaction_schedule`. A failed flush is logged, counted, and retried
/// after reopening the projector (recovery), with backoff. Must be called inside a tokio
/// runtime.
pub async fn run_projection(
    log: Arc<dyn Log>,
    data_dir: PathBuf,
    config: ProjectorConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<ProjectionHandle, StoreError> {
    let schedule = cron::Schedule::from_str(&config.compaction_schedule).map_err(|e| {
        StoreError::Config(format!(
            "compaction_schedule {:?}: {e} (format: sec min hour day-of-month month day-of-week)",
            config.compaction_schedule
        ))
    })?;
    let dir = data_dir.clone();
    let cfg = config.clone();
    let projector = tokio::task::spawn_blocking(move || ParquetProjector::open(&dir, cfg))
        .await
        .expect("open task panicked")?;
    let (tx, rx) = watch::channel(projector.committed_offsets().clone());
    let metrics = Arc::new(ProjectionMetrics::default());
    let m = metrics.clone();
    let task = tokio::spawn(
        async move {
            projection_loop(
                log,
                data_dir,
                config,
                schedule,
                Some(projector),
                tx,
                m,
                shutdown,
            )
            .await
        }
        .instrument(tracing::info_span!("projection")),
    );
    Ok(ProjectionHandle {
        progress: rx,
        metrics,
        task,
    })
}

#[allow(clippy::too_many_arguments)]
async fn projection_loop(
    log: Arc<dyn Log>,
    data_dir: PathBuf,
    config: ProjectorConfig,
    schedule: cron::Schedule,
    mut projector: Option<ParquetProjector>,
    tx: watch::Sender<ProjectedOffsets>,
    metrics: Arc<ProjectionMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let mut backoff = Duration::from_millis(500);
    let mut next_compaction = schedule.upcoming(Utc).next();
    if let Some(p) = projector.take() {
        projector = Some(check_at_start(p, &log, &config, &metrics).await);
    }
    loop {
        let p = match projector.take() {
            Some(p) => p,
            None => {
                let dir = data_dir.clone();
                let cfg = config.clone();
                match tokio::task::spawn_blocking(move || ParquetProjector::open(&dir, cfg))
                    .await
                    .expect("open task panicked")
                {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "reopening the projection failed; retrying");
                        if wait_or_shutdown(&shutdown, backoff).await {
                            return Ok(());
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        let _ = tx.send(p.committed_offsets().clone());
        let before = p.committed_offsets().clone();
        let progress = tx.subscribe();
        match run_once(
            &log,
            p,
            &config,
            &schedule,
            &mut next_compaction,
            &tx,
            &metrics,
            &shutdown,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(e) => {
                metrics.flush_errors.fetch_add(1, Relaxed);
                if *progress.borrow() != before {
                    // It worked for a while: this is a new failure, not the same one again.
                    backoff = Duration::from_millis(500);
                }
                tracing::error!(error = %e, "projection failed; reopening (recovery) after backoff");
                if wait_or_shutdown(&shutdown, backoff).await {
                    return Ok(());
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Longest wait before reopening a failed projection (a full disk that got space again
/// is noticed within this).
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Most log entries read at start to name the files of missing events.
const DESCRIBE_LIMIT: u64 = 1_000_000;

/// The check at start: do the Parquet files hold every committed offset (a file deleted
/// or copied in by hand)? Counts rows from the footers; when they do not add up, finds the
/// exact offsets and names the kinds, days and files from the log. Reports with warnings
/// and the `missing_events` / `extra_rows` gauges; never stops the projection.
async fn check_at_start(
    p: ParquetProjector,
    log: &Arc<dyn Log>,
    config: &ProjectorConfig,
    metrics: &ProjectionMetrics,
) -> ParquetProjector {
    let started = Instant::now();
    let (p, checked) = on_blocking_thread(p, tracing::Span::current(), |p| {
        p.coverage().and_then(|c| {
            let audit = if c.is_consistent() {
                None
            } else {
                Some(p.audit_offsets()?)
            };
            Ok((c, audit))
        })
    })
    .await;
    let (coverage, audit) = match checked {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "could not check the Parquet files against the projection state");
            return p;
        }
    };
    if !coverage.tracked {
        tracing::info!("the projection state predates row accounting: the check of the Parquet files against it starts with the next `shiplog replay`");
        return p;
    }
    metrics.missing_events.store(coverage.missing(), Relaxed);
    metrics.extra_rows.store(coverage.extra(), Relaxed);
    let Some(audit) = audit else {
        tracing::info!(
            files = coverage.files,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "projection checked: the Parquet files hold every committed event"
        );
        return p;
    };
    for (part, c) in &coverage.partitions {
        if c.missing() > 0 || c.extra() > 0 {
            tracing::warn!(
                partition = part,
                committed = c.committed,
                rows = c.rows,
                absent = c.absent,
                missing = c.missing(),
                extra = c.extra(),
                "the Parquet files do not match the projection state: a file was deleted or copied by hand; run `shiplog replay` (server stopped) to rebuild them"
            );
        }
    }
    for (part, offset, rows) in audit.duplicates.iter().take(20) {
        tracing::warn!(
            partition = part,
            offset,
            rows,
            "an event is in more than one Parquet row"
        );
    }
    if config.dedup_window.is_some() {
        // Dropped duplicates leave offsets without rows too: only the counts tell.
        return p;
    }
    match describe_gaps(
        log.as_ref(),
        &audit.gaps,
        &config.retention_days,
        Utc::now(),
        DESCRIBE_LIMIT,
    )
    .await
    {
        Ok(gaps) => {
            for m in gaps.missing.iter().filter(|m| !m.expired) {
                tracing::warn!(
                    file = %m.file,
                    partition = m.partition,
                    offsets = %format!("{}..={}", m.first, m.last),
                    events = m.count,
                    "events missing from the Parquet files (deleted by hand?): run `shiplog replay`"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the missing events from the log"),
    }
    p
}

/// Sleeps `d`; true if shutdown was requested meanwhile.
async fn wait_or_shutdown(shutdown: &watch::Receiver<bool>, d: Duration) -> bool {
    let mut s = shutdown.clone();
    let _ = tokio::time::timeout(d, s.wait_for(|v| *v)).await;
    *shutdown.borrow()
}

#[allow(clippy::too_many_arguments)]
async fn run_once(
    log: &Arc<dyn Log>,
    mut p: ParquetProjector,
    config: &ProjectorConfig,
    schedule: &cron::Schedule,
    next_compaction: &mut Option<chrono::DateTime<Utc>>,
    tx: &watch::Sender<ProjectedOffsets>,
    metrics: &Arc<ProjectionMetrics>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let mut readers: Vec<Box<dyn LogReader>> = Vec::new();
    for part in log.partitions() {
        let next = p.next_offset(part);
        readers.push(log.reader(part, next).map_err(|e| match e {
            // Kafka's topic retention deleted events this projection had not read yet (the
            // file log's retention never does): the projection cannot go on without them.
            LogError::OutOfRange { start, .. } if start > next => StoreError::Config(format!(
                "partition {part} of the log starts at offset {start}: the events at offsets \
                 {next}..{start} were deleted (the topic's retention) before they were \
                 projected and are lost; `shiplog replay` keeps the rows projected so far \
                 and projects from the log's start (raise the topic's retention above the \
                 projection's lag)"
            )),
            e => e.into(),
        })?);
    }
    let mut first_buffered: Option<Instant> = None;
    loop {
        let stopping = *shutdown.borrow();
        let n = readers.len().max(1) as u32;
        for r in readers.iter_mut() {
            let wait = if stopping {
                Duration::ZERO
            } else {
                match first_buffered {
                    Some(t) => {
                        config
                            .flush_interval
                            .saturating_sub(t.elapsed())
                            .min(MAX_WAIT)
                            / n
                    }
                    None => MAX_WAIT / n,
                }
            };
            let batch = r
                .next_batch(
                    config.read_batch_records,
                    config.flush_bytes.max(1 << 20),
                    wait,
                )
                .await?;
            let skipped = r.take_skipped();
            if !batch.is_empty() || !skipped.is_empty() {
                first_buffered.get_or_insert_with(Instant::now);
                p.push_read(batch, skipped);
            }
        }
        let due = first_buffered.is_some_and(|t| t.elapsed() >= config.flush_interval);
        if p.buffered() > 0 && (p.should_flush() || due || stopping) {
            p = flush_blocking(p, tx, metrics).await?;
            p = merge_small_blocking(p, metrics).await?;
            first_buffered = None;
        }
        if stopping {
            return Ok(());
        }
        if next_compaction.is_some_and(|t| Utc::now() >= t) {
            p = compact_blocking(p, metrics).await?;
            *next_compaction = schedule.upcoming(Utc).next();
        }
    }
}

async fn flush_blocking(
    p: ParquetProjector,
    tx: &watch::Sender<ProjectedOffsets>,
    metrics: &ProjectionMetrics,
) -> Result<ParquetProjector, StoreError> {
    let span = tracing::info_span!(
        "flush",
        events = p.buffered(),
        rows = tracing::field::Empty,
        files = tracing::field::Empty,
        ms = tracing::field::Empty
    );
    let (p, r) = on_blocking_thread(p, span.clone(), ParquetProjector::flush).await;
    let report = r?;
    span.record("rows", report.rows);
    span.record("files", report.files);
    span.record("ms", report.elapsed.as_millis() as u64);
    metrics.record_flush(&report);
    tracing::debug!(parent: &span, "flushed");
    let _ = tx.send(p.committed_offsets().clone());
    Ok(p)
}

/// Runs `work` on the projector on a blocking thread, inside `span`, and hands the
/// projector back with its result.
async fn on_blocking_thread<T: Send + 'static>(
    mut p: ParquetProjector,
    span: tracing::Span,
    work: impl FnOnce(&mut ParquetProjector) -> T + Send + 'static,
) -> (ParquetProjector, T) {
    tokio::task::spawn_blocking(move || {
        let _g = span.enter();
        let r = work(&mut p);
        (p, r)
    })
    .await
    .expect("projection task panicked")
}

/// [`ParquetProjector::merge_small_files`] after a flush (its offsets are already sent).
async fn merge_small_blocking(
    p: ParquetProjector,
    metrics: &ProjectionMetrics,
) -> Result<ParquetProjector, StoreError> {
    let (p, r) = on_blocking_thread(
        p,
        tracing::Span::current(),
        ParquetProjector::merge_small_files,
    )
    .await;
    let c = r?;
    if c.files_in > 0 {
        metrics.record_merge(&c);
        tracing::debug!(
            files_in = c.files_in,
            files_out = c.files_out,
            "merged small files"
        );
    }
    Ok(p)
}

async fn compact_blocking(
    p: ParquetProjector,
    metrics: &ProjectionMetrics,
) -> Result<ParquetProjector, StoreError> {
    let span = tracing::info_span!("compaction");
    let (p, r) = on_blocking_thread(p, span.clone(), |p| {
        p.compact_and_apply_retention(Utc::now())
    })
    .await;
    let (c, ret) = r?;
    metrics.record_compaction(&c, &ret);
    tracing::info!(parent: &span, files_in = c.files_in, files_out = c.files_out, deleted = ret.partitions_deleted.len(), "compacted");
    Ok(p)
}

/// Progress of a replay, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    /// Log entries read so far.
    pub done: u64,
    /// Entries to read (sum of the partitions' end offsets when the replay started).
    pub total: u64,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub events: u64,
    pub rows: u64,
    /// Offsets without a row: invalid entries and damaged log records (dead letters).
    pub skipped: u64,
    /// Of `skipped`: log records lost to damage in the log.
    pub lost: u64,
    pub files: u64,
    pub elapsed: Duration,
    /// When the log starts above offset 0 (its retention removed the offsets below): the
    /// rows below its start, kept as they were since they cannot be rebuilt.
    pub kept: Option<crate::KeptBelow>,
}

/// Deletes the projection of `data_dir` and rebuilds it from offset 0 of every partition,
/// up to the log's end at the start. When the log starts above 0 in a partition
/// ([`Log::start_offset`]: its retention removed the offsets below), the rows below the
/// start are kept ([`ParquetProjector::keep_below`]) and only the rest is rebuilt. The directory lock must be free (stop `serve`
/// first). Parsing and writing run on the calling thread (use a multi-thread runtime).
pub async fn replay(
    log: &dyn Log,
    data_dir: &Path,
    config: &ProjectorConfig,
    progress: &mut dyn FnMut(ReplayProgress),
) -> Result<ReplayReport, StoreError> {
    let start = Instant::now();
    let root = parquet_dir(data_dir);
    create_dir_durable(&root)?;
    let lock = lock_projection_dir(&root)?;
    let parts = log.partitions();
    let starts: std::collections::BTreeMap<Partition, Offset> =
        parts.iter().map(|&q| (q, log.start_offset(q))).collect();
    let mut report = ReplayReport::default();
    if starts.values().any(|&s| s > 0) {
        let mut p = ParquetProjector::open_locked(root, config.clone(), lock)?;
        report.kept = Some(p.keep_below(&starts)?);
        return replay_from(log, p, config, progress, report, start).await;
    }
    for entry in list_dir(&root)? {
        if entry.file_name().is_some_and(|n| n == "_lock") {
            continue;
        }
        if entry.is_dir() {
            std::fs::remove_dir_all(&entry).at(&entry)?;
        } else {
            std::fs::remove_file(&entry).at(&entry)?;
        }
    }
    crate::fsutil::sync_dir(&root)?;
    let p = ParquetProjector::open_locked(root, config.clone(), lock)?;
    replay_from(log, p, config, progress, report, start).await
}

/// Projects every partition from the projector's next offset up to the log's end now.
async fn replay_from(
    log: &dyn Log,
    mut p: ParquetProjector,
    config: &ProjectorConfig,
    progress: &mut dyn FnMut(ReplayProgress),
    mut report: ReplayReport,
    start: Instant,
) -> Result<ReplayReport, StoreError> {
    let parts = log.partitions();
    let ends: Vec<Offset> = parts.iter().map(|&q| log.end_offset(q)).collect();
    let total: u64 = parts
        .iter()
        .zip(&ends)
        .map(|(&q, &end)| end.saturating_sub(p.next_offset(q)))
        .sum();
    progress(ReplayProgress { done: 0, total });
    for (&part, &end) in parts.iter().zip(&ends) {
        let from = p.next_offset(part);
        if end <= from {
            continue;
        }
        let mut reader = log.reader(part, from).map_err(|e| match e {
            LogError::OutOfRange { start, .. } => StoreError::Config(format!(
                "partition {part} of the log starts at offset {start}: events before it were deleted, a replay cannot rebuild them"
            )),
            e => e.into(),
        })?;
        while reader.position() < end {
            let batch = reader
                .next_batch(
                    config.read_batch_records,
                    config.flush_bytes.max(1 << 20),
                    Duration::from_millis(500),
                )
                .await?;
            let batch: Vec<_> = batch.into_iter().filter(|e| e.offset < end).collect();
            let skipped: Vec<_> = reader
                .take_skipped()
                .into_iter()
                .filter(|r| r.first < end)
                .map(|mut r| {
                    r.end = r.end.min(end);
                    r
                })
                .collect();
            report.events += batch.len() as u64;
            p.push_read(batch, skipped);
            if p.should_flush() {
                let r = p.flush()?;
                report.rows += r.rows;
                report.skipped += r.skipped;
                report.lost += r.lost;
                report.files += r.files;
                p.merge_small_files()?;
            }
            progress(ReplayProgress {
                done: report.events,
                total,
            });
        }
    }
    let r = p.flush()?;
    report.rows += r.rows;
    report.skipped += r.skipped;
    report.lost += r.lost;
    report.files += r.files;
    p.apply_retention(Utc::now())?;
    report.elapsed = start.elapsed();
    Ok(report)
}
