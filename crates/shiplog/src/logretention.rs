//! The log's retention in `serve` (`[log.retention]`, file log): every `interval`, the
//! sealed segments the policy asks for are removed, oldest first, but only those that
//! nothing needs any more. A segment is needed while it holds an offset at or above the
//! lowest of:
//! - the projection's committed offset (events not in Parquet yet);
//! - the record at the dedup snapshot's covered offset − 1 (a start checks it, then reads the
//!   log from the covered offset: keys of removed events come from the snapshot);
//! - the record the rules snapshot saw last (a start checks it and reads on from there).
//!
//! Nothing known (no projection running, no snapshot yet) keeps everything.
//!
//! Snapshots follow retention's need: serve writes the dedup snapshot only every million
//! keys and the rules engine its own every 30 s, so either can be what keeps a segment that
//! the projection already passed. When a pass holds segments back and the projection is not
//! what holds them, it asks for a fresh snapshot of each one that is (the dedup index
//! written, [`shiplog_rules::RulesEngine::snapshot_now`]) and tries again: at most once per
//! pass, and only when it frees a segment.
//!
//! With `max_bytes`, a pass brings the log down to `max_bytes` less what the log grew by
//! since the previous pass and one segment ([`pass_policy`]), so that it is still under
//! the limit when the next pass comes; docs/operations.md ("Sizing a disk") gives the rule for a limit that
//! can hold.
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

/// The policy of one pass: with `max_bytes`, the limit less a headroom of `growth` (what
/// the log grew by since the previous pass: growing as much again keeps it under the
/// limit) and one segment (the segment being written swings by up to its size between
/// passes), but never less than half the limit.
pub fn pass_policy(policy: &RetentionPolicy, growth: u64, segment_bytes: u64) -> RetentionPolicy {
    RetentionPolicy {
        max_bytes: policy
            .max_bytes
            .map(|max| max - growth.saturating_add(segment_bytes).min(max / 2)),
        ..*policy
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
    target_bytes: AtomicU64,
    snapshots_asked: AtomicU64,
}

/// The retention task's inputs.
pub struct LogRetention {
    pub log: Arc<SegmentedLog>,
    pub policy: RetentionPolicy,
    pub interval: Duration,
    /// `[log] segment_bytes` (see [`pass_policy`]).
    pub segment_bytes: u64,
    pub ingestor: Arc<Ingestor>,
    pub dedup_dir: PathBuf,
    pub dedup_covered: Arc<DedupCovered>,
    pub rules_dir: PathBuf,
    /// The rules engine, asked for a fresh snapshot when its own holds segments back.
    pub rules: Option<shiplog_rules::RulesEngine>,
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

    async fn apply(&self, policy: RetentionPolicy, keep_from: Offset) -> Option<RetentionPass> {
        let log = self.log.clone();
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

    /// Writes a fresh snapshot of each reader that alone keeps the segments below `until`
    /// (the projection already passed it; otherwise a snapshot would not free anything).
    /// True when one was asked for.
    async fn refresh_snapshots(&self, needed: Needed, until: Offset) -> bool {
        if needed.projection < until {
            return false;
        }
        let mut asked = false;
        if needed.dedup < until {
            crate::serve::snapshot_dedup(&self.ingestor, &self.dedup_dir, &self.dedup_covered)
                .await;
            asked = true;
        }
        if needed.rules < until {
            if let Some(rules) = &self.rules {
                rules.snapshot_now().await;
                asked = true;
            }
        }
        if asked {
            self.metrics.snapshots_asked.fetch_add(1, Relaxed);
        }
        asked
    }

    /// One pass (`growth`: what the log grew by since the previous one, see [`pass_policy`]):
    /// removes what may go; when a snapshot is what holds segments back, writes it and
    /// tries again.
    pub async fn pass(&self, growth: u64) -> Option<RetentionPass> {
        let policy = pass_policy(&self.policy, growth, self.segment_bytes);
        let needed = self.needed();
        let mut pass = self.apply(policy, needed.keep_from()).await?;
        if let Some(until) = pass.held_back_until {
            if self.refresh_snapshots(needed, until).await {
                let again = self.needed();
                if again.keep_from() > needed.keep_from() {
                    let more = self.apply(policy, again.keep_from()).await?;
                    pass.removed_segments += more.removed_segments;
                    pass.removed_bytes += more.removed_bytes;
                    pass.removed.end = more.removed.end;
                    pass.held_back_segments = more.held_back_segments;
                    pass.held_back_bytes = more.held_back_bytes;
                    pass.held_back_until = more.held_back_until;
                    pass.start = more.start;
                    pass.bytes = more.bytes;
                }
            }
        }
        let keep_from = self.needed().keep_from();
        let m = &self.metrics;
        m.passes.fetch_add(1, Relaxed);
        m.removed_segments.fetch_add(pass.removed_segments, Relaxed);
        m.removed_bytes.fetch_add(pass.removed_bytes, Relaxed);
        m.held_back_bytes.store(pass.held_back_bytes, Relaxed);
        m.keep_from.store(keep_from, Relaxed);
        m.target_bytes.store(policy.max_bytes.unwrap_or(0), Relaxed);
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
        // The log's bytes after the previous pass: what it grew by since is the headroom
        // the next pass leaves.
        let mut after: Option<u64> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let before = self.log.stats().bytes;
            let growth = after.map_or(0, |a| before.saturating_sub(a));
            if let Some(pass) = self.pass(growth).await {
                after = Some(pass.bytes);
            }
        }
    }
}

/// The log's extent and the retention's counters on `/metrics`, read on each scrape.
pub struct RetentionSeries {
    pub log: Arc<SegmentedLog>,
    pub metrics: Option<Arc<RetentionMetrics>>,
    /// `[log.retention] max_bytes`.
    pub max_bytes: Option<u64>,
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
        let counters = [
            (
                "shiplog_log_retention_passes",
                "Passes of [log.retention].",
                &m.passes,
            ),
            (
                "shiplog_log_retention_removed_segments",
                "Sealed segments removed by [log.retention].",
                &m.removed_segments,
            ),
            (
                "shiplog_log_retention_removed_bytes",
                "Bytes on disk of the segments removed by [log.retention].",
                &m.removed_bytes,
            ),
            (
                "shiplog_log_retention_snapshots_asked",
                "Passes that wrote a fresh dedup or rules snapshot because it alone held segments back.",
                &m.snapshots_asked,
            ),
            (
                "shiplog_log_retention_failures",
                "Retention passes that failed (the server log says why).",
                &m.failures,
            ),
        ];
        for (name, help, value) in counters {
            counter(e, name, help, value.load(Relaxed))?;
        }
        let mut gauges = vec![
            (
                "shiplog_log_retention_held_back_bytes",
                "Bytes [log.retention] would remove but keeps: not projected yet or not covered by the dedup or rules snapshot.",
                m.held_back_bytes.load(Relaxed),
            ),
            (
                "shiplog_log_retention_keep_from",
                "The lowest offset still needed (projection, dedup and rules snapshots): segments below it may go.",
                m.keep_from.load(Relaxed),
            ),
        ];
        if let Some(max) = self.max_bytes {
            gauges.push((
                "shiplog_log_retention_max_bytes",
                "[log.retention] max_bytes: the limit of the log's bytes on disk.",
                max,
            ));
            gauges.push((
                "shiplog_log_retention_target_bytes",
                "What the last pass brought the log down to: max_bytes less what the log grew by during the interval before (so it stays under max_bytes until the next pass).",
                m.target_bytes.load(Relaxed),
            ));
        }
        for (name, help, value) in gauges {
            gauge(e, name, help, value as i64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_leaves_the_growth_of_an_interval_as_headroom_but_keeps_half_the_limit() {
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(60)),
            max_bytes: Some(1000),
        };
        assert_eq!(pass_policy(&policy, 0, 0), policy);
        assert_eq!(pass_policy(&policy, 300, 0).max_bytes, Some(700));
        assert_eq!(pass_policy(&policy, 300, 100).max_bytes, Some(600));
        assert_eq!(pass_policy(&policy, 900, 100).max_bytes, Some(500));
        assert_eq!(pass_policy(&policy, u64::MAX, 100).max_bytes, Some(500));
        assert_eq!(pass_policy(&policy, 300, 100).max_age, policy.max_age);
        let by_age = RetentionPolicy {
            max_age: Some(Duration::from_secs(60)),
            max_bytes: None,
        };
        assert_eq!(pass_policy(&by_age, 300, 100), by_age);
    }
}
