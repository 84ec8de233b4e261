//! Checking a projection against its commit point: every offset below a partition's
//! committed offset is in exactly one Parquet row, or committed without one (a dead
//! letter, a damaged log record, a dropped duplicate, a row deleted by retention; counted
//! in `_state.json` as `absent`). A Parquet file deleted (or copied) by hand breaks that
//! count; [`ParquetProjector::coverage`] notices it from the files' footers, and
//! [`ParquetProjector::audit_offsets`] with [`describe_gaps`] finds which offsets, kinds,
//! dates and files.

use crate::convert::decode_envelope;
use crate::fsutil::{list_dir, IoAt};
use crate::projector::{
    file_name,
    layout::{date_of_micros, footer_rows},
    parse_file_name, ParquetProjector, DEAD_LETTER_DIR,
};
use crate::StoreError;
use chrono::{DateTime, NaiveDate, Utc};
use shiplog_events::Kind;
use shiplog_log::{Log, Offset, Partition};
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Row counts of one log partition against its commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionCoverage {
    /// Next offset to project (every offset below it is committed).
    pub committed: Offset,
    /// Rows in the Parquet files (footers).
    pub rows: u64,
    /// Offsets committed without a row (from `_state.json`).
    pub absent: u64,
}

impl PartitionCoverage {
    /// Committed offsets that are neither a row nor counted as absent.
    pub fn missing(&self) -> u64 {
        self.committed.saturating_sub(self.rows + self.absent)
    }

    /// Rows beyond what was committed (a file copied in by hand, say).
    pub fn extra(&self) -> u64 {
        (self.rows + self.absent).saturating_sub(self.committed)
    }
}

/// What [`ParquetProjector::coverage`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoverageReport {
    /// `false` when `_state.json` predates the counting of absent offsets: nothing can be
    /// said until the next replay.
    pub tracked: bool,
    pub partitions: BTreeMap<Partition, PartitionCoverage>,
    /// Parquet files read.
    pub files: u64,
}

impl CoverageReport {
    pub fn missing(&self) -> u64 {
        self.partitions.values().map(|p| p.missing()).sum()
    }

    pub fn extra(&self) -> u64 {
        self.partitions.values().map(|p| p.extra()).sum()
    }

    /// Rows and absent offsets add up to the committed offsets (or it cannot be told).
    pub fn is_consistent(&self) -> bool {
        !self.tracked || (self.missing() == 0 && self.extra() == 0)
    }
}

/// What [`ParquetProjector::audit_offsets`] found: the exact offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetAudit {
    /// Committed offsets with neither a row nor a dead letter (retention-deleted rows and
    /// dropped duplicates are among them: [`describe_gaps`] tells them apart).
    pub gaps: Vec<(Partition, Range<Offset>)>,
    /// Offsets held by more than one row: (partition, offset, rows).
    pub duplicates: Vec<(Partition, Offset, u32)>,
    /// Offsets at or above the committed offset held by a row (a file ahead of the state).
    pub beyond: u64,
}

impl OffsetAudit {
    pub fn gap_offsets(&self) -> u64 {
        self.gaps.iter().map(|(_, r)| r.end - r.start).sum()
    }
}

/// The Parquet files of a projection root, with their partition.
fn parquet_files(root: &Path) -> Result<Vec<(Partition, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        for day in list_dir(&root.join(kind.as_str()))? {
            if !day.is_dir() || day.file_name().is_some_and(|n| n == "_schema") {
                continue;
            }
            for f in list_dir(&day)? {
                if let Some((p, _, _)) = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(parse_file_name)
                {
                    out.push((p, f));
                }
            }
        }
    }
    Ok(out)
}

/// Offsets recorded in the dead-letter files: `offset` per line, up to `end` when given
/// (a range of damaged log records).
fn dead_letter_offsets(root: &Path) -> Result<Vec<(Partition, Range<Offset>)>, StoreError> {
    let mut out = Vec::new();
    for f in list_dir(&root.join(DEAD_LETTER_DIR))? {
        if f.extension().is_none_or(|e| e != "ndjson") {
            continue;
        }
        let text = std::fs::read_to_string(&f).at(&f)?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| StoreError::CorruptState {
                    path: f.clone(),
                    reason: format!("dead-letter line is not JSON: {e}"),
                })?;
            let (Some(p), Some(o)) = (v["partition"].as_u64(), v["offset"].as_u64()) else {
                continue;
            };
            let end = v["end"].as_u64().unwrap_or(o + 1);
            out.push((p as Partition, o..end));
        }
    }
    Ok(out)
}

/// Reads the `_offset` column of a Parquet file.
fn read_offsets(path: &Path) -> Result<Vec<i64>, StoreError> {
    use arrow::array::{Array, Int64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let f = File::open(path).at(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)?;
    let schema = builder.parquet_schema();
    let Some(i) = (0..schema.num_columns()).find(|&i| schema.column(i).name() == "_offset") else {
        return Err(StoreError::CorruptState {
            path: path.to_path_buf(),
            reason: "the file has no _offset column".into(),
        });
    };
    let mask = ProjectionMask::leaves(schema, [i]);
    let mut out = Vec::new();
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| StoreError::CorruptState {
                path: path.to_path_buf(),
                reason: "_offset is not BIGINT".into(),
            })?;
        out.extend(col.iter().flatten());
    }
    Ok(out)
}

impl ParquetProjector {
    /// Counts the rows of every Parquet file (footers only) per log partition and compares
    /// them with the committed offsets and the absent counts of `_state.json`. Buffered,
    /// unflushed events play no part.
    pub fn coverage(&self) -> Result<CoverageReport, StoreError> {
        let state = self.state();
        let mut report = CoverageReport {
            tracked: state.absent.is_some(),
            ..Default::default()
        };
        for (&p, &committed) in &state.offsets {
            report.partitions.entry(p).or_default().committed = committed;
        }
        if let Some(absent) = &state.absent {
            for (&p, &n) in absent {
                report.partitions.entry(p).or_default().absent = n;
            }
        }
        for (p, f) in parquet_files(self.root())? {
            report.partitions.entry(p).or_default().rows += footer_rows(&f)?;
            report.files += 1;
        }
        Ok(report)
    }

    /// Reads the `_offset` of every row and the dead letters, and lists the committed
    /// offsets that have neither (gaps) and those held by several rows.
    pub fn audit_offsets(&self) -> Result<OffsetAudit, StoreError> {
        let committed = self.state().offsets.clone();
        let mut seen: BTreeMap<Partition, Vec<u8>> = committed
            .iter()
            .map(|(&p, &c)| (p, vec![0u8; c as usize]))
            .collect();
        let mut audit = OffsetAudit::default();
        for (p, f) in parquet_files(self.root())? {
            let counts = seen.entry(p).or_default();
            for o in read_offsets(&f)? {
                let o = o.max(0) as usize;
                match counts.get_mut(o) {
                    Some(c) => *c = c.saturating_add(1),
                    None => audit.beyond += 1,
                }
            }
        }
        for (p, range) in dead_letter_offsets(self.root())? {
            if let Some(counts) = seen.get_mut(&p) {
                for o in range {
                    if let Some(c) = counts.get_mut(o as usize) {
                        *c = c.saturating_add(1);
                    }
                }
            }
        }
        for (p, counts) in &seen {
            let mut start: Option<usize> = None;
            for (o, &c) in counts.iter().enumerate() {
                match (c, start) {
                    (0, None) => start = Some(o),
                    (0, Some(_)) => {}
                    (_, Some(s)) => {
                        audit.gaps.push((*p, s as Offset..o as Offset));
                        start = None;
                    }
                    _ => {}
                }
                if c > 1 {
                    audit.duplicates.push((*p, o as Offset, c as u32));
                }
            }
            if let Some(s) = start {
                audit.gaps.push((*p, s as Offset..counts.len() as Offset));
            }
        }
        Ok(audit)
    }
}

/// Events of one kind, date and partition that are missing from the projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingEvents {
    pub partition: Partition,
    /// `None`: the log entry is not an event (it should have been a dead letter).
    pub kind: Option<Kind>,
    pub date: NaiveDate,
    pub first: Offset,
    pub last: Offset,
    pub count: u64,
    /// Where their rows belong: `<kind>/date=<date>/p<P>-<first>-<last>.parquet` (exactly
    /// the deleted file when one file of that kind and day was deleted).
    pub file: String,
    /// Older than the kind's retention: deleted on purpose, not missing.
    pub expired: bool,
}

/// What [`describe_gaps`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GapReport {
    pub missing: Vec<MissingEvents>,
    /// Offsets of the gaps that the log itself has lost (damaged records).
    pub lost_in_log: u64,
}

impl GapReport {
    /// Events missing from the projection that should be there.
    pub fn missing_events(&self) -> u64 {
        self.missing
            .iter()
            .filter(|m| !m.expired)
            .map(|m| m.count)
            .sum()
    }
}

/// Reads the log entries of `gaps` and groups them by kind, event date and partition, so
/// a report can name the missing file; gaps older than the kind's retention are marked
/// expired. Reads at most `limit` entries.
pub async fn describe_gaps(
    log: &dyn Log,
    gaps: &[(Partition, Range<Offset>)],
    retention_days: &BTreeMap<Kind, u32>,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<GapReport, StoreError> {
    // (partition, kind, date) → (first, last, count)
    type Group = (Partition, Option<Kind>, NaiveDate);
    let mut groups: BTreeMap<Group, (Offset, Offset, u64)> = BTreeMap::new();
    let mut report = GapReport::default();
    let mut read = 0u64;
    for (p, range) in gaps {
        if read >= limit {
            break;
        }
        let mut reader = log.reader(*p, range.start)?;
        while reader.position() < range.end && read < limit {
            let batch = reader
                .next_batch(10_000, 64 << 20, Duration::from_millis(500))
                .await?;
            for r in reader.take_skipped() {
                report.lost_in_log += r.end.min(range.end).saturating_sub(r.first);
            }
            if batch.is_empty() {
                break;
            }
            for e in batch.into_iter().filter(|e| e.offset < range.end) {
                read += 1;
                let (kind, micros) = match decode_envelope(&e.value) {
                    Ok(ev) => (ev.kind, ev.event_micros()),
                    Err(_) => (None, 0),
                };
                let g = groups
                    .entry((*p, kind, date_of_micros(micros)))
                    .or_insert((e.offset, e.offset, 0));
                g.0 = g.0.min(e.offset);
                g.1 = g.1.max(e.offset);
                g.2 += 1;
            }
        }
    }
    let today = now.date_naive();
    for ((partition, kind, date), (first, last, count)) in groups {
        let expired = kind
            .and_then(|k| retention_days.get(&k))
            .is_some_and(|&days| date < today - chrono::Days::new(days as u64));
        let file = match kind {
            Some(k) => format!(
                "{}/date={}/{}",
                k.as_str(),
                date.format("%Y-%m-%d"),
                file_name(partition, first, last)
            ),
            None => "(not an event: no file)".to_string(),
        };
        report.missing.push(MissingEvents {
            partition,
            kind,
            date,
            first,
            last,
            count,
            file,
            expired,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projector::{parquet_dir, ProjectorConfig};
    use bytes::Bytes;
    use shiplog_log::{FileLogConfig, LogEntry, LogRecord, SegmentedLog, SkippedRange};

    const KINDS: [&str; 3] = ["build", "deploy", "check"];

    fn event(i: u64, day: u32) -> serde_json::Value {
        let kind = KINDS[(i % 3) as usize];
        let data = match kind {
            "build" => serde_json::json!({"tool": "vite", "success": true, "duration_ms": i}),
            "deploy" => serde_json::json!({"status": "succeeded"}),
            _ => serde_json::json!({"name": "error_rate", "value": 0.01}),
        };
        serde_json::json!({"id": format!("e{i}"), "kind": kind, "source": "t", "project": "p",
            "time": format!("2026-11-{day:02}T10:00:00Z"),
            "received_at": "2026-11-21T10:00:00Z", "data": data})
    }

    fn entry(offset: Offset, value: Vec<u8>) -> LogEntry {
        LogEntry {
            partition: 0,
            offset,
            key: Bytes::new(),
            value: Bytes::from(value),
        }
    }

    fn rel_files(root: &Path) -> Vec<String> {
        parquet_files(root)
            .unwrap()
            .into_iter()
            .map(|(_, f)| f.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// Rows plus absent offsets add up through flushes with dead letters and damaged
    /// records, compaction and retention; a file deleted by hand is found, down to its
    /// name, and only it.
    #[test]
    fn coverage_finds_a_deleted_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // The log: 300 events over days 17..=20, one entry that is not an event (100).
        let (log, _) =
            SegmentedLog::open(&dir.path().join("log"), FileLogConfig::default()).unwrap();
        let values: Vec<Vec<u8>> = (0..300u64)
            .map(|i| {
                if i == 100 {
                    b"not json".to_vec()
                } else {
                    serde_json::to_vec(&event(i, 17 + (i / 75) as u32)).unwrap()
                }
            })
            .collect();
        rt.block_on(
            log.append(
                values
                    .iter()
                    .map(|v| LogRecord {
                        key: Bytes::new(),
                        value: Bytes::from(v.clone()),
                    })
                    .collect(),
            ),
        )
        .unwrap();

        let mut config = ProjectorConfig {
            flush_rows: 1_000_000,
            ..ProjectorConfig::default()
        };
        config.retention_days.insert(Kind::Check, 2);
        let mut p = ParquetProjector::open(dir.path(), config.clone()).unwrap();
        // Three flushes; offsets 150..153 are reported skipped as damaged by the reader.
        let entries: Vec<LogEntry> = values
            .iter()
            .enumerate()
            .map(|(i, v)| entry(i as Offset, v.clone()))
            .collect();
        p.push(entries[..120].to_vec());
        p.flush().unwrap();
        let damaged = SkippedRange {
            partition: 0,
            first: 150,
            end: 153,
            location: "log/00000000000000000000.seg bytes 100..200".into(),
            reason: "CRC32C mismatch".into(),
        };
        let kept: Vec<LogEntry> = entries[120..250]
            .iter()
            .filter(|e| !(150..153).contains(&e.offset))
            .cloned()
            .collect();
        p.push_read(kept, vec![damaged]);
        let r = p.flush().unwrap();
        assert_eq!((r.lost, r.skipped), (3, 3));
        p.push(entries[250..].to_vec());
        p.flush().unwrap();
        let dead = std::fs::read_to_string(
            parquet_dir(dir.path()).join("_deadletter/p0-000000000150-n3.ndjson"),
        )
        .unwrap();
        assert!(
            dead.contains("\"end\":153")
                && dead.contains("CRC32C")
                && dead.contains("bytes 100..200"),
            "{dead}"
        );

        let c = p.coverage().unwrap();
        assert!(c.tracked && c.is_consistent(), "{c:?}");
        assert_eq!(c.partitions[&0].committed, 300);
        assert_eq!(c.partitions[&0].absent, 4);
        let a = p.audit_offsets().unwrap();
        assert_eq!(a, OffsetAudit::default());

        // Compaction and retention keep the accounts.
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(p.compact(now).unwrap().files_in > 0);
        let expired = p.apply_retention(now).unwrap();
        assert_eq!(expired.partitions_deleted.len(), 2, "{expired:?}"); // checks of the 17th, 18th
        let c = p.coverage().unwrap();
        assert!(c.is_consistent(), "{c:?}");
        let a = p.audit_offsets().unwrap();
        let expired_rows: u64 = a.gap_offsets();
        assert_eq!(c.partitions[&0].absent, 4 + expired_rows);
        let gaps = rt
            .block_on(describe_gaps(
                &log,
                &a.gaps,
                &config.retention_days,
                now,
                u64::MAX,
            ))
            .unwrap();
        assert!(gaps.missing.iter().all(|m| m.expired), "{gaps:?}");
        assert_eq!(gaps.missing_events(), 0);

        // A file deleted by hand.
        let root = parquet_dir(dir.path());
        let files = rel_files(&root);
        let victim = files
            .iter()
            .find(|f| f.starts_with("deploy/date=2026-11-19/"))
            .unwrap()
            .clone();
        let victim_rows = footer_rows(&root.join(&victim)).unwrap();
        std::fs::remove_file(root.join(&victim)).unwrap();
        let c = p.coverage().unwrap();
        assert!(!c.is_consistent());
        assert_eq!((c.missing(), c.extra()), (victim_rows, 0));
        let a = p.audit_offsets().unwrap();
        assert_eq!(a.gap_offsets(), expired_rows + victim_rows);
        let gaps = rt
            .block_on(describe_gaps(
                &log,
                &a.gaps,
                &config.retention_days,
                now,
                u64::MAX,
            ))
            .unwrap();
        let missing: Vec<_> = gaps.missing.iter().filter(|m| !m.expired).collect();
        assert_eq!(missing.len(), 1, "{gaps:?}");
        assert_eq!(missing[0].file, victim);
        assert_eq!(missing[0].count, victim_rows);
        assert_eq!(gaps.missing_events(), victim_rows);

        // A file copied in by hand: rows beyond the count, offsets held twice.
        let other = files.iter().find(|f| f.starts_with("build/")).unwrap();
        let copy = root
            .join(other)
            .with_file_name("p0-000000000000-000000000000.parquet");
        std::fs::copy(root.join(other), &copy).unwrap();
        let c = p.coverage().unwrap();
        assert_eq!(
            c.extra(),
            footer_rows(&copy).unwrap().saturating_sub(victim_rows)
        );
        let a = p.audit_offsets().unwrap();
        assert_eq!(a.duplicates.len() as u64, footer_rows(&copy).unwrap());
    }

    /// A state written before the counting of absent offsets says nothing (no false alarm).
    #[test]
    fn an_older_state_is_not_judged() {
        let dir = tempfile::tempdir().unwrap();
        let root = parquet_dir(dir.path());
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            root.join("_state.json"),
            r#"{"version":1,"offsets":{"0":500},"renames":[],"deletes":[]}"#,
        )
        .unwrap();
        let p = ParquetProjector::open(dir.path(), ProjectorConfig::default()).unwrap();
        let c = p.coverage().unwrap();
        assert!(!c.tracked && c.is_consistent(), "{c:?}");
    }
}
