//! The log's retention in `serve` (`[log.retention]`, file log): every `interval`, the
//! sealed segments the policy asks for are removed, oldest first, but only those that
//! nothing needs any more. A segment is needed while it holds an offset at or above the
//! lowest of:
//! - the projection's committed offset (events not in Parquet yet);
//! - the record at the dedup snapshot's covered offset − 1 (a start checks it, then reads the
//!   log from the covered offset: keys of removed events come from the snapshot);
//! - the record the rules snapshot saw last (a start checks it and reads on from there).
//!
//! Nothing known (no projection running, no snapshot yet) keeps everything. When the dedup
//! snapshot is what holds retention back, it is written then (otherwise serve writes it
//! only every million keys): the rules engine writes its own every 30 s.
//!
//! The removal itself is [`SegmentedLog::apply_retention`] (crash-safe, the `START` file).

use shiplog_ingest::Ingestor;
use shiplog_log::file::SegmentedLog;
use shiplog_log::{Log, Offset, RetentionPass, RetentionPolicy};
use shiplog_web::metrics::{counter, gauge, Collector, Encoder, Written};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{info, warn};

/// The file log has one partition.
const PARTITION: u32 = 0;

/// What the dedup snapshot on disk covers (partition 0), as serve last wrote or found it.
#[derive(Debug, Default)]
pub struct DedupCovered(Mutex<Option<Offset>>);

impl DedupCovered {
    /// Records a snapshot written with these covered offsets (they only grow).
    pub fn written(&self, covered: &[(u32, Offset)]) {
        if let Some(&(_, offset)) = covered.iter().find(|(p, _)| *p == PARTITION) {
            let mut at = self.0.lock().unwrap();
            *at = Some(at.map_or(offset, |a| a.max(offset)));
        }
    }

    /// Reads what the snapshot in `dir` covers, when nothing was recorded yet (at start).
    fn load(&self, dir: &std::path::Path) {
        if self.0.lock().unwrap().is_some() {
            return;
        }
        match shiplog_ingest::dedup::read_snapshot_file(dir) {
            Ok(Some(s)) => {
                let covered: Vec<(u32, Offset)> =
                    s.covered.iter().map(|c| (c.partition, c.offset)).collect();
                self.written(&covered);
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "log retention: cannot read the dedup snapshot"),
        }
    }

    /// The lowest offset a start from the snapshot reads (the record at covered − 1).
    fn keep_from(&self) -> Offset {
        self.0.lock().unwrap().map_or(0, |c| c.saturating_sub(1))
    }
}

/// The lowest offsets each reader of the log still needs (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    pub projection: Offset,
    pub dedup: Offset,
    pub rules: Offset,
}

impl Needed {
    pub fn keep_from(&self) -> Offset {
        self.projection.min(self.dedup).min(self.rules)
    }
}

/// Figures of the retention task for `/metrics`.
#[derive(Debug, Default)]
pub struct RetentionMetrics {
    passes: AtomicU64,
    removed_segments: AtomicU64,
    removed_bytes: AtomicU64,
    held_back_bytes: AtomicU64,
    keep_from: AtomicU64,
    failures: AtomicU64,
}

/// The retention task's inputs.
pub struct LogRetention {
    pub log: Arc<SegmentedLog>,
    pub policy: RetentionPolicy,
    pub interval: Duration,
    pub ingestor: Arc<Ingestor>,
    pub dedup_dir: PathBuf,
    pub dedup_covered: Arc<DedupCovered>,
    pub rules_dir: PathBuf,
    /// The projection's committed offset of partition 0 (`None`: not projecting yet).
    pub projected: Arc<dyn Fn() -> Option<Offset> + Send + Sync>,
    pub metrics: Arc<RetentionMetrics>,
}

impl LogRetention {
    fn needed(&self) -> Needed {
        let rules = match shiplog_rules::snapshot::covered(&self.rules_dir) {
            Ok(Some(positions)) => positions
                .iter()
                .find(|(p, _)| *p == PARTITION)
                .map_or(0, |(_, o)| *o),
            Ok(None) => 0,
            Err(e) => {
                warn!(error = %e, "log retention: cannot read the rules snapshot (keeping the log)");
                0
            }
        };
        Needed {
            projection: (self.projected)().unwrap_or(0),
            dedup: self.dedup_covered.keep_from(),
            rules,
        }
    }

    async fn apply(&self, keep_from: Offset) -> Option<RetentionPass> {
        let (log, policy) = (self.log.clone(), self.policy);
        let pass = tokio::task::spawn_blocking(move || {
            log.apply_retention(&policy, keep_from, SystemTime::now())
        })
        .await;
        match pass {
            Ok(Ok(pass)) => Some(pass),
            Ok(Err(e)) => {
                self.metrics.failures.fetch_add(1, Relaxed);
                warn!(error = %e, "log retention pass failed (the log keeps its segments; retried next interval)");
                None
            }
            Err(e) => {
                self.metrics.failures.fetch_add(1, Relaxed);
                warn!(error = %e, "log retention task failed");
                None
            }
        }
    }

    /// One pass: removes what may go; writes the dedup snapshot first when it alone holds
    /// segments back, then tries again.
    pub async fn pass(&self) -> Option<RetentionPass> {
        let needed = self.needed();
        let mut pass = self.apply(needed.keep_from()).await?;
        if pass.held_back_segments > 0 && needed.dedup < needed.projection.min(needed.rules) {
            crate::serve::snapshot_dedup(&self.ingestor, &self.dedup_dir, &self.dedup_covered)
                .await;
            let again = self.needed();
            if again.keep_from() > needed.keep_from() {
                let more = self.apply(again.keep_from()).await?;
                pass.removed_segments += more.removed_segments;
                pass.removed_bytes += more.removed_bytes;
                pass.removed.end = more.removed.end;
                pass.held_back_segments = more.held_back_segments;
                pass.held_back_bytes = more.held_back_bytes;
                pass.start = more.start;
                pass.bytes = more.bytes;
            }
        }
        let keep_from = self.needed().keep_from();
        let m = &self.metrics;
        m.passes.fetch_add(1, Relaxed);
        m.removed_segments.fetch_add(pass.removed_segments, Relaxed);
        m.removed_bytes.fetch_add(pass.removed_bytes, Relaxed);
        m.held_back_bytes.store(pass.held_back_bytes, Relaxed);
        m.keep_from.store(keep_from, Relaxed);
        if pass.held_back_segments > 0 {
            info!(
                segments = pass.held_back_segments,
                bytes = pass.held_back_bytes,
                keep_from,
                "log retention held segments back: still needed by the projection or a snapshot"
            );
        }
        Some(pass)
    }

    /// Runs a pass every `interval` until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let dedup_dir = self.dedup_dir.clone();
        let covered = self.dedup_covered.clone();
        let _ = tokio::task::spawn_blocking(move || covered.load(&dedup_dir)).await;
        info!(
            max_age = ?self.policy.max_age,
            max_bytes = ?self.policy.max_bytes,
            interval = ?self.interval,
            "log retention on"
        );
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            self.pass().await;
        }
    }
}

/// The log's extent and the retention's counters on `/metrics`, read on each scrape.
pub struct RetentionSeries {
    pub log: Arc<SegmentedLog>,
    pub metrics: Option<Arc<RetentionMetrics>>,
}

impl std::fmt::Debug for RetentionSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetentionSeries")
    }
}

impl Collector for RetentionSeries {
    fn encode(&self, mut e: Encoder) -> Written {
        let e = &mut e;
        let stats = self.log.stats();
        let end = self.log.end_offset(PARTITION);
        gauge(
            e,
            "shiplog_log_start_offset",
            "Where the log starts: offsets below were removed by [log.retention].",
            stats.start_offset as i64,
        )?;
        gauge(
            e,
            "shiplog_log_last_offset",
            "The last offset written (-1 while the log is empty).",
            end as i64 - 1,
        )?;
        let oldest = self
            .log
            .first_record()
            .and_then(|v| shiplog_events::RecordPeek::of(&v).ok()?.received_micros());
        if let Some(micros) = oldest {
            gauge(
                e,
                "shiplog_log_oldest_event_received_seconds",
                "When shiplog received the oldest event the log keeps (Unix time).",
                micros as f64 / 1e6,
            )?;
        }
        let Some(m) = &self.metrics else {
            return Ok(());
        };
        counter(
            e,
            "shiplog_log_retention_passes",
            "Passes of [log.retention].",
            m.passes.load(Relaxed),
        )?;
        counter(
            e,
            "shiplog_log_retention_removed_segments",
            "Sealed segments removed by [log.retention].",
            m.removed_segments.load(Relaxed),
        )?;
        counter(
            e,
            "shiplog_log_retention_removed_bytes",
            "Bytes on disk of the segments removed by [log.retention].",
            m.removed_bytes.load(Relaxed),
        )?;
        gauge(
            e,
            "shiplog_log_retention_held_back_bytes",
            "Bytes [log.retention] would remove but keeps: not projected yet or not covered by the dedup or rules snapshot.",
            m.held_back_bytes.load(Relaxed) as i64,
        )?;
        gauge(
            e,
            "shiplog_log_retention_keep_from",
            "The lowest offset still needed (projection, dedup and rules snapshots): segments below it may go.",
            m.keep_from.load(Relaxed) as i64,
        )?;
        counter(
            e,
            "shiplog_log_retention_failures",
            "Retention passes that failed (the server log says why).",
            m.failures.load(Relaxed),
        )
    }
}
