//! Compaction (merging the small files of busy days as they appear, and each closed day
//! into one file per kind and partition) and retention (whole date partitions older than
//! each kind's limit), both committed through the state file like a flush.

use super::commit::apply_pending;
use super::flush::write_parquet;
use super::layout::{day_dirs, file_name, files_by_partition, parquet_rows, rel, DayFile};
use super::{CompactionReport, ParquetProjector, ProjectorConfig, RetentionReport};
use crate::fsutil::IoAt;
use crate::schema::kind_schema;
use crate::StoreError;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use shiplog_events::Kind;
use shiplog_log::Partition;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

impl ParquetProjector {
    /// Merges the files of each closed day (date < `now`'s UTC date) into one file per kind,
    /// day and log partition, committed through the state file.
    pub fn compact(&mut self, now: DateTime<Utc>) -> Result<CompactionReport, StoreError> {
        let today = now.date_naive();
        let root = self.root.clone();
        let mut plan = MergePlan::default();
        for kind in Kind::ALL {
            for (date, day_dir) in day_dirs(&root, kind)? {
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
        self.commit_replacements(plan.renames, plan.deletes)?;
        Ok(plan.report)
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
        self.commit_replacements(plan.renames, plan.deletes)?;
        Ok(plan.report)
    }

    /// The scheduled maintenance: [`Self::compact`] the closed days, then
    /// [`Self::apply_retention`].
    pub fn compact_and_apply_retention(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<(CompactionReport, RetentionReport), StoreError> {
        let c = self.compact(now)?;
        Ok((c, self.apply_retention(now)?))
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

/// Merged files written to temp paths, not yet committed.
#[derive(Default)]
pub(super) struct MergePlan {
    renames: Vec<(String, String)>,
    deletes: Vec<String>,
    report: CompactionReport,
}

impl MergePlan {
    /// Writes `files` (one kind, day and partition, sorted by offset) into one temp file
    /// named for their whole offset range.
    pub(super) fn merge(
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
pub(super) const TIER_BASE: u64 = 1 << 20;

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

/// Reads a Parquet file's batches (for compaction), in the current columns of `kind`.
pub(super) fn read_batches(
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
pub(super) fn conform(
    batch: RecordBatch,
    kind: Kind,
) -> Result<RecordBatch, arrow::error::ArrowError> {
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

/// The date directories older than each kind's retention: `(kind, date, dir)`.
pub(super) fn expired_partitions(
    root: &Path,
    retention: &BTreeMap<Kind, u32>,
    now: DateTime<Utc>,
) -> Result<Vec<(Kind, NaiveDate, PathBuf)>, StoreError> {
    let today = now.date_naive();
    let mut out = Vec::new();
    for (&kind, &days) in retention {
        let cutoff = today - chrono::Days::new(days as u64);
        for (date, dir) in day_dirs(root, kind)? {
            if date < cutoff {
                out.push((kind, date, dir));
            }
        }
    }
    Ok(out)
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
    use crate::convert::decode_envelope;
    use crate::pricing::PriceTable;
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
