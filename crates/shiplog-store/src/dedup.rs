//! Projection-level dedup on `(source, id)` (Kafka backend: several ingest nodes each
//! dedup only in their own memory, so a client retry sent to another node reaches the log
//! twice; the projection drops the second copy).
//!
//! The index is persisted as one small file per flush, `_dedup/<unix_micros>.keys` (one
//! 64-bit key per line, 16 hex digits: [`shiplog_events::dedup_key`], the key ingest
//! uses), written as a temp file and renamed by the same commit as
//! the flush's Parquet files (it is listed in `_state.json`'s renames). So a key is in the
//! index exactly when its row is committed, whatever moment the process is killed at.
//! Files older than the window are deleted whole (every key of a file was committed at the
//! file's time).
//!
//! Files written before the key was shared hold 128-bit keys (32 hex digits), of another
//! recipe that nothing computes any more: their lines are skipped (counted in a warning)
//! and the files expire with the window like any other. Until then, a client retry of an
//! event projected before the upgrade, sent to another ingest node, may be projected twice.

use crate::fsutil::{create_dir_durable, list_dir, IoAt};
use crate::StoreError;
use shiplog_events::{DedupKey, RecordPeek};
use shiplog_log::LogEntry;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const DEDUP_DIR: &str = "_dedup";

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The committed keys of the window, in memory.
pub(crate) struct ProjectionDedup {
    window: Duration,
    keys: HashMap<DedupKey, i64>,
}

impl ProjectionDedup {
    /// Loads the committed index files of the window (call after recovery completed the
    /// last commit's renames): deletes leftover temp files and expired files.
    pub(crate) fn load(root: &Path, window: Duration) -> Result<ProjectionDedup, StoreError> {
        let dir = root.join(DEDUP_DIR);
        let cutoff = now_micros() - window.as_micros() as i64;
        let mut keys = HashMap::new();
        let mut legacy = 0u64;
        for f in list_dir(&dir)? {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                fs::remove_file(&f).at(&f)?;
                continue;
            }
            let Some(at) = name
                .strip_suffix(".keys")
                .and_then(|s| s.parse::<i64>().ok())
            else {
                continue;
            };
            if at < cutoff {
                fs::remove_file(&f).at(&f)?;
                continue;
            }
            let text = fs::read_to_string(&f).at(&f)?;
            for line in text.lines().map(str::trim) {
                match DedupKey::from_str_radix(line, 16) {
                    Ok(k) if line.len() == 16 => {
                        keys.insert(k, at);
                    }
                    _ => legacy += 1,
                }
            }
        }
        if legacy > 0 {
            tracing::warn!(
                keys = legacy,
                dir = %dir.display(),
                "projection dedup: keys of an older format skipped (until they expire, a \
                 retry of one of their events sent to another ingest node may be projected twice)"
            );
        }
        Ok(ProjectionDedup { window, keys })
    }

    /// Splits `entries` into those to project and the count of duplicates (of a committed
    /// key or of an earlier entry of the same batch); returns the new keys too. Entries that
    /// are not decodable are kept (the projection counts them as skipped).
    pub(crate) fn filter(&self, entries: Vec<LogEntry>) -> (Vec<LogEntry>, Vec<DedupKey>, u64) {
        let cutoff = now_micros() - self.window.as_micros() as i64;
        let mut new = HashSet::new();
        let mut kept = Vec::with_capacity(entries.len());
        let mut dups = 0;
        for e in entries {
            let peek = RecordPeek::of(&e.value).unwrap_or_default();
            let Some(key) = peek.dedup_key() else {
                kept.push(e);
                continue;
            };
            let committed = self.keys.get(&key).is_some_and(|&at| at >= cutoff);
            if committed || !new.insert(key) {
                dups += 1;
                tracing::debug!(source = ?peek.source, id = ?peek.id, partition = e.partition, offset = e.offset, "duplicate event dropped by the projection");
                continue;
            }
            kept.push(e);
        }
        (kept, new.into_iter().collect(), dups)
    }

    /// Writes the new keys to `_dedup/<at>.keys.tmp` (fsynced); returns (temp, final).
    pub(crate) fn stage(
        root: &Path,
        keys: &[DedupKey],
        at: i64,
    ) -> Result<Option<(PathBuf, PathBuf)>, StoreError> {
        if keys.is_empty() {
            return Ok(None);
        }
        let dir = root.join(DEDUP_DIR);
        create_dir_durable(&dir)?;
        let fin = dir.join(format!("{at:020}.keys"));
        let tmp = dir.join(format!("{at:020}.keys.tmp"));
        let mut text = String::with_capacity(keys.len() * 17);
        for k in keys {
            text.push_str(&format!("{k:016x}\n"));
        }
        let mut f = fs::File::create(&tmp).at(&tmp)?;
        f.write_all(text.as_bytes()).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        Ok(Some((tmp, fin)))
    }

    /// Records keys whose commit succeeded, and forgets (and deletes the files of) expired
    /// ones.
    pub(crate) fn committed(&mut self, root: &Path, keys: Vec<DedupKey>, at: i64) {
        for k in keys {
            self.keys.insert(k, at);
        }
        let cutoff = now_micros() - self.window.as_micros() as i64;
        if self.keys.values().any(|&t| t < cutoff) {
            self.keys.retain(|_, t| *t >= cutoff);
            if let Ok(files) = list_dir(&root.join(DEDUP_DIR)) {
                for f in files {
                    let at = f
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(".keys"))
                        .and_then(|s| s.parse::<i64>().ok());
                    if at.is_some_and(|t| t < cutoff) {
                        let _ = fs::remove_file(&f);
                    }
                }
            }
        }
    }

    pub(crate) fn now() -> i64 {
        now_micros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_the_older_format_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        let at = ProjectionDedup::now();
        let (tmp, fin) = ProjectionDedup::stage(root.path(), &[7, u64::MAX], at)
            .unwrap()
            .unwrap();
        fs::rename(tmp, fin).unwrap();
        let legacy = root
            .path()
            .join(DEDUP_DIR)
            .join(format!("{:020}.keys", at - 1));
        fs::write(&legacy, format!("{:032x}\n{:032x}\n", 5u128, u128::MAX)).unwrap();
        let d = ProjectionDedup::load(root.path(), Duration::from_secs(3600)).unwrap();
        let mut keys: Vec<DedupKey> = d.keys.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(keys, [7, u64::MAX]);
    }
}
