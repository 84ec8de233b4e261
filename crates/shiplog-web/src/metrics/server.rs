//! The series read from the server's own state on each scrape: the log, the ingest
//! admission budget and the dedup index.

use super::{counter, gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use shiplog_ingest::admission::Admission;
use shiplog_ingest::Ingestor;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

#[derive(Clone)]
pub struct ServerSeries {
    pub ingestor: Arc<Ingestor>,
    pub admission: Arc<Admission>,
}

impl std::fmt::Debug for ServerSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSeries")
    }
}

impl Collector for ServerSeries {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let log = self.ingestor.log();
        let stats = log.stats();
        let damage = log.damage();
        let e = &mut e;
        gauge(
            e,
            "shiplog_log_bytes",
            "Bytes the log holds on disk.",
            stats.bytes,
        )?;
        gauge(
            e,
            "shiplog_log_raw_bytes",
            "Bytes the log's segments hold uncompressed (equals shiplog_log_bytes when none is compressed).",
            stats.raw_bytes,
        )?;
        gauge(
            e,
            "shiplog_log_compressed_segments",
            "Sealed segments stored compressed ([log] compress).",
            stats.compressed_segments,
        )?;
        gauge(
            e,
            "shiplog_log_first_offset",
            "The first offset the log holds.",
            stats.first_offset,
        )?;
        gauge(
            e,
            "shiplog_log_records",
            "Records durable in the log.",
            stats.records,
        )?;
        counter(
            e,
            "shiplog_log_syncs",
            "Group commits (fdatasync calls) since start.",
            stats.syncs,
        )?;
        gauge(
            e,
            "shiplog_log_damaged_ranges",
            "Damaged byte ranges found in the log's segments; readers skip them (the server log names each one; run `shiplog log verify`).",
            damage.len() as u64,
        )?;
        gauge(
            e,
            "shiplog_log_damaged_records",
            "Records lost in damaged ranges of the log.",
            damage.iter().map(|r| r.end - r.first).sum::<u64>(),
        )?;
        gauge(
            e,
            "shiplog_ingest_inflight_bytes",
            "Bytes reserved by ingest requests being served.",
            self.admission.in_flight() as u64,
        )?;
        counter(
            e,
            "shiplog_ingest_shed",
            "Ingest requests answered 503 because the in-flight budget was spent.",
            self.admission.shed.load(Relaxed),
        )?;
        gauge(
            e,
            "shiplog_dedup_keys",
            "Keys held for deduplication.",
            self.ingestor.dedup_len() as u64,
        )?;
        counter(
            e,
            "shiplog_dedup_evicted_keys",
            "Dedup keys forgotten before the end of the window because of server.dedup_max_keys.",
            self.ingestor.dedup_evicted(),
        )?;
        gauge(
            e,
            "shiplog_dedup_bytes",
            "Approximate memory held by the dedup index.",
            self.ingestor.dedup_bytes() as u64,
        )
    }
}
