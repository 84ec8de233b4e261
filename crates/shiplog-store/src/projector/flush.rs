//! Flushing: the buffered log entries parsed into per-kind Arrow batches and written as
//! zstd Parquet files under temporary names (one per kind, UTC day and log partition, plus
//! the dead letters), several threads at a time for a large flush; [`super::commit`]
//! then makes them visible.

use super::commit::Staged;
use super::deadletter::DeadLetters;
use super::layout::{date_dir_name, date_of_micros, file_name};
use super::{CrashPoint, FlushReport, ParquetProjector};
use crate::convert::{decode_envelope, KindBatchBuilder};
use crate::fsutil::{create_dir_durable, IoAt};
use crate::pricing::PriceTable;
use crate::schema::kind_schema;
use crate::StoreError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use shiplog_events::Kind;
use shiplog_log::{LogEntry, Partition};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::time::Instant;

impl ParquetProjector {
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

        self.commit_flush(&staged)?;
        if let Some(d) = &mut self.dedup {
            d.committed(&self.root, new_keys, dedup_at);
        }
        self.crash_point(CrashPoint::AfterStateCommit)?;
        self.rename_staged(&staged)?;
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

/// Parses `entries` and writes one temp file per (kind, date, partition), plus one
/// dead-letter file for the entries that are not valid events.
pub(super) fn stage_files(
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
pub(super) fn validate_entry(value: &[u8]) -> Result<(), String> {
    let json: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    shiplog_events::Event::from_json(json, shiplog_events::Origin::Internal)
        .map(|_| ())
        .map_err(|e| format!("invalid event: {}: {}", e.field, e.error))
}

pub(super) fn batch_first_time(batch: &RecordBatch) -> i64 {
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
