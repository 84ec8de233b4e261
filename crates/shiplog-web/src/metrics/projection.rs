//! The projection's series: its counters ([`ProjectionMetrics`]), its lag behind the log,
//! and whether this node stands by for another processor.

use super::{counter, gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use shiplog_log::Log;
use shiplog_store::{ProjectedOffsets, ProjectionMetrics};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A running projection: its counters and its committed offsets.
pub type RunningProjection = (Arc<ProjectionMetrics>, watch::Receiver<ProjectedOffsets>);

/// The projection of a node: `None` while it stands by (another processor holds the
/// Parquet directory), set when it runs.
pub type ProjectionSlot = Arc<Mutex<Option<RunningProjection>>>;

/// Durable events not yet in Parquet: the log's end minus the committed offsets, summed
/// over the partitions. `None` while the projection stands by.
pub fn projection_lag(slot: &ProjectionSlot, log: &dyn Log) -> Option<u64> {
    let (_, progress) = slot.lock().unwrap().clone()?;
    let projected: u64 = progress.borrow().values().sum();
    let end: u64 = log.partitions().iter().map(|p| log.end_offset(*p)).sum();
    Some(end.saturating_sub(projected))
}

pub struct ProjectionSeries {
    pub slot: ProjectionSlot,
    pub log: Arc<dyn Log>,
}

impl std::fmt::Debug for ProjectionSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProjectionSeries")
    }
}

impl Collector for ProjectionSeries {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut e;
        let running = self.slot.lock().unwrap().clone();
        gauge(
            e,
            "shiplog_projection_standby",
            "1 while this processor waits for the active one to stop.",
            running.is_none() as u64,
        )?;
        let Some((m, _)) = running else {
            return Ok(());
        };
        let counters = [
            ("shiplog_projection_rows_written", "Rows written to Parquet.", &m.rows_written),
            (
                "shiplog_projection_files_written",
                "Parquet files committed by flushes.",
                &m.files_written,
            ),
            (
                "shiplog_projection_bytes_written",
                "Parquet bytes committed by flushes.",
                &m.bytes_written,
            ),
            ("shiplog_projection_flushes", "Flushes committed.", &m.flushes),
            (
                "shiplog_projection_events_skipped",
                "Log entries that were not valid events (kept aside in parquet/_deadletter/).",
                &m.events_skipped,
            ),
            (
                "shiplog_projection_flush_errors",
                "Failed flushes (the projector reopened and retried).",
                &m.flush_errors,
            ),
            ("shiplog_projection_compactions", "Compaction runs.", &m.compactions),
            (
                "shiplog_projection_files_compacted",
                "Files merged away by compaction.",
                &m.files_compacted,
            ),
            (
                "shiplog_projection_partitions_deleted",
                "Date partitions deleted by retention.",
                &m.partitions_deleted,
            ),
            (
                "shiplog_projection_duplicates_dropped",
                "Events dropped by the projection as duplicates of a projected (source, id).",
                &m.duplicates_dropped,
            ),
            (
                "shiplog_projection_log_records_lost",
                "Log records lost to damage in the log's segments: skipped, kept as dead letters with where and why.",
                &m.log_records_lost,
            ),
        ];
        for (name, help, value) in counters {
            counter(e, name, help, value.load(Relaxed))?;
        }
        gauge(
            e,
            "shiplog_projection_last_flush_seconds",
            "Duration of the last flush.",
            m.last_flush_micros.load(Relaxed) as f64 / 1e6,
        )?;
        counter(
            e,
            "shiplog_projection_flush_seconds",
            "Total time spent flushing.",
            m.flush_micros_total.load(Relaxed) as f64 / 1e6,
        )?;
        gauge(
            e,
            "shiplog_projection_missing_events",
            "Committed events missing from the Parquet files (a file deleted by hand): run `shiplog replay`.",
            m.missing_events.load(Relaxed),
        )?;
        gauge(
            e,
            "shiplog_projection_extra_rows",
            "Parquet rows beyond the committed offsets (a file copied in by hand): run `shiplog replay`.",
            m.extra_rows.load(Relaxed),
        )?;
        if let Some(lag) = projection_lag(&self.slot, self.log.as_ref()) {
            gauge(
                e,
                "shiplog_projection_lag_events",
                "Durable events not yet in Parquet.",
                lag,
            )?;
        }
        Ok(())
    }
}
