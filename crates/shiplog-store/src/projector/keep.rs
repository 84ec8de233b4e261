//! Replay over a log whose start moved forward (the file log's `[log.retention]`): the
//! rows of the offsets the log no longer holds cannot be rebuilt, so they are kept.
//!
//! [`ParquetProjector::keep_below`] keeps, per log partition, every row whose `_offset` is
//! below the log's start, and removes the others (which the replay then writes again): a
//! file entirely below the start is kept as it is, one entirely at or above it is deleted,
//! one across it is rewritten with the rows below (`p<P>-<first>-<last kept>.parquet`).
//! Dead-letter files are cut the same way. Committed through the state file like a
//! compaction (temp files, then `_state.json` with the renames, deletes and the start as
//! the next offset, then the renames and deletes), so a kill at any point leaves the old
//! projection or the cut one, and a replay run again does the same.

use super::commit::apply_pending;
use super::compact::read_batches;
use super::deadletter::DEAD_LETTER_DIR;
use super::flush::write_parquet;
use super::layout::{day_dirs, file_name, files_by_partition, footer_rows, rel};
use super::ParquetProjector;
use crate::fsutil::{list_dir, IoAt};
use crate::StoreError;
use arrow::array::{Array, BooleanArray, Int64Array};
use arrow::record_batch::RecordBatch;
use shiplog_events::Kind;
use shiplog_log::{Offset, Partition};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// What [`ParquetProjector::keep_below`] kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptBelow {
    /// Per partition, the offset below which rows were kept (the log's start).
    pub below: BTreeMap<Partition, Offset>,
    /// Rows kept.
    pub rows: u64,
    /// Parquet files kept (the rewritten ones included).
    pub files: u64,
    /// Of `files`: those rewritten to drop their rows at or above the start.
    pub cut: u64,
    /// The oldest and newest day directories holding kept rows.
    pub days: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
}

/// The rows of `batch` whose `_offset` is below `start`; `last` is raised to the highest
/// kept.
fn rows_below(
    batch: RecordBatch,
    start: Offset,
    last: &Cell<Option<Offset>>,
) -> Result<RecordBatch, StoreError> {
    let offsets = batch
        .column_by_name("_offset")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| StoreError::Config("a Parquet file without an _offset column".into()))?;
    let keep: BooleanArray = offsets
        .iter()
        .map(|o| Some(o.is_some_and(|o| (o as u64) < start)))
        .collect();
    for o in offsets.iter().flatten() {
        if (o as u64) < start {
            last.set(Some(last.get().map_or(o as u64, |l| l.max(o as u64))));
        }
    }
    Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
}

/// What [`dead_letters_below`] keeps of a dead-letter file.
struct DeadLettersBelow {
    lines: String,
    count: u64,
    first: Option<Offset>,
    /// Every line was below the start: the file stays as it is.
    whole: bool,
}

/// The dead-letter lines of `text` below `start` (a damaged range across it is cut at
/// it), their count and first offset.
fn dead_letters_below(text: &str, start: Offset) -> DeadLettersBelow {
    let (mut out, mut count, mut first, mut whole) = (String::new(), 0u64, None, true);
    for line in text.lines() {
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(offset) = v.get("offset").and_then(|o| o.as_u64()) else {
            continue;
        };
        if offset >= start {
            whole = false;
            continue;
        }
        let n = match v.get("end").and_then(|e| e.as_u64()) {
            Some(end) => {
                whole &= end <= start;
                let end = end.min(start);
                v["end"] = end.into();
                v["count"] = (end - offset).into();
                end - offset
            }
            None => 1,
        };
        count += n;
        first.get_or_insert(offset);
        out.push_str(&v.to_string());
        out.push('\n');
    }
    DeadLettersBelow {
        lines: out,
        count,
        first,
        whole,
    }
}

/// `p<P>-<offset>-n<count>.ndjson`: partition and first offset of a dead-letter file.
fn parse_dead_letter_name(name: &str) -> Option<(Partition, Offset)> {
    let rest = name.strip_prefix('p')?.strip_suffix(".ndjson")?;
    let mut parts = rest.splitn(3, '-');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl ParquetProjector {
    /// Keeps the rows (and dead letters) below `starts` per partition and removes the
    /// rest, then commits `starts` as the next offsets (see the module doc). A partition
    /// absent from `starts` keeps nothing.
    pub fn keep_below(
        &mut self,
        starts: &BTreeMap<Partition, Offset>,
    ) -> Result<KeptBelow, StoreError> {
        let root = self.root.clone();
        let start_of = |p: Partition| starts.get(&p).copied().unwrap_or(0);
        let mut kept = KeptBelow {
            below: starts.clone(),
            ..KeptBelow::default()
        };
        let mut rows: BTreeMap<Partition, u64> = BTreeMap::new();
        let (mut renames, mut deletes) = (Vec::new(), Vec::new());
        for kind in Kind::ALL {
            for (date, day_dir) in day_dirs(&root, kind)? {
                let mut any = false;
                for (p, files) in files_by_partition(&day_dir)? {
                    let start = start_of(p);
                    for (first, last, path) in files {
                        if first >= start {
                            deletes.push(rel(&root, &path));
                            continue;
                        }
                        let n = if last < start {
                            footer_rows(&path)?
                        } else {
                            let (n, fin) = self.cut(kind, &day_dir, p, first, &path, start)?;
                            deletes.push(rel(&root, &path));
                            if let Some((tmp, fin)) = fin {
                                renames.push((rel(&root, &tmp), rel(&root, &fin)));
                                kept.cut += 1;
                            }
                            n
                        };
                        if n > 0 {
                            any = true;
                            kept.files += 1;
                            kept.rows += n;
                            *rows.entry(p).or_default() += n;
                        }
                    }
                }
                if any {
                    kept.days = Some(match kept.days {
                        None => (date, date),
                        Some((a, b)) => (a.min(date), b.max(date)),
                    });
                }
            }
        }
        let dead = root.join(DEAD_LETTER_DIR);
        for path in list_dir(&dead)? {
            let Some((p, first)) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_dead_letter_name)
            else {
                continue;
            };
            let start = start_of(p);
            if first >= start {
                deletes.push(rel(&root, &path));
                continue;
            }
            let text = fs::read_to_string(&path).at(&path)?;
            let below = dead_letters_below(&text, start);
            if below.whole {
                continue;
            }
            deletes.push(rel(&root, &path));
            if let Some(first) = below.first {
                let count = below.count;
                let fin = dead.join(format!("p{p}-{first:012}-n{count}.ndjson"));
                let tmp = dead.join(format!("p{p}-{first:012}-n{count}.ndjson.cut.tmp"));
                let mut f = fs::File::create(&tmp).at(&tmp)?;
                std::io::Write::write_all(&mut f, below.lines.as_bytes()).at(&tmp)?;
                f.sync_all().at(&tmp)?;
                renames.push((rel(&root, &tmp), rel(&root, &fin)));
            }
        }
        let mut next = self.state.clone();
        next.offsets = starts.clone();
        next.absent = Some(
            starts
                .iter()
                .map(|(&p, &s)| (p, s - rows.get(&p).copied().unwrap_or(0)))
                .collect(),
        );
        next.renames = renames;
        next.deletes = deletes;
        next.expire.clear();
        next.store(&root)?;
        self.state = next;
        self.buffered_next = self.state.offsets.clone();
        apply_pending(&root, &self.state, false)?;
        Ok(kept)
    }

    /// Writes the rows of `path` below `start` to a temp file; returns the rows and (temp,
    /// final) paths, `None` when no row is below.
    #[allow(clippy::type_complexity)]
    fn cut(
        &self,
        kind: Kind,
        day_dir: &Path,
        p: Partition,
        first: Offset,
        path: &Path,
        start: Offset,
    ) -> Result<(u64, Option<(std::path::PathBuf, std::path::PathBuf)>), StoreError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = day_dir.join(format!("{name}.cut.tmp"));
        let last = Cell::new(None);
        let batches = read_batches(path, kind).map(|b| b.and_then(|b| rows_below(b, start, &last)));
        let (n, _) = write_parquet(&tmp, kind, batches, self.config.compaction_zstd_level)?;
        match last.get() {
            Some(last) if n > 0 => Ok((n, Some((tmp, day_dir.join(file_name(p, first, last)))))),
            _ => {
                fs::remove_file(&tmp).at(&tmp)?;
                Ok((0, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_cut_at_the_start() {
        let text = concat!(
            r#"{"partition":0,"offset":3,"error":"bad","value":"x"}"#,
            "\n",
            r#"{"partition":0,"offset":5,"end":12,"count":7,"error":"damaged","location":"s"}"#,
            "\n",
            r#"{"partition":0,"offset":20,"error":"bad","value":"y"}"#,
            "\n"
        );
        let below = dead_letters_below(text, 10);
        assert_eq!(
            (below.count, below.first, below.whole),
            (1 + 5, Some(3), false)
        );
        assert_eq!(below.lines.lines().count(), 2);
        assert!(below.lines.contains(r#""end":10"#) && below.lines.contains(r#""count":5"#));
        assert!(dead_letters_below(text, 50).whole);
        assert_eq!(
            parse_dead_letter_name("p0-000000000003-n6.ndjson"),
            Some((0, 3))
        );
    }
}
