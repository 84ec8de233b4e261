//! Writing the dedup index's snapshot: the committed keys of the records the index covers
//! in order, and, per partition, the offset they cover.

use shiplog_log::{Offset, Partition};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::Ingestor;
use crate::dedup::{record_crc, write_snapshot_file, Covered, Key};

/// What [`Ingestor::write_dedup_snapshot`] wrote.
#[derive(Debug, Clone)]
pub struct SnapshotWritten {
    pub keys: u64,
    pub bytes: u64,
    /// Per partition, the offset the snapshot covers.
    pub covered: Vec<(Partition, Offset)>,
}

impl Ingestor {
    /// [`record_crc`] of the record at `offset`.
    pub(super) async fn record_crc(
        &self,
        partition: Partition,
        offset: Offset,
    ) -> Result<u32, String> {
        let mut reader = self
            .log
            .reader(partition, offset)
            .map_err(|e| e.to_string())?;
        let batch = reader
            .next_batch(1, 1, Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?;
        match batch.first() {
            Some(e) if e.offset == offset => Ok(record_crc(&e.key, &e.value)),
            Some(_) => Err("it is damaged (readers skip it)".into()),
            None => Err("the log returned nothing there".into()),
        }
    }

    /// Writes a snapshot of the committed keys to `<dir>/index.snap` (atomically), unless
    /// the one there already covers the same offsets (`Ok(None)`). The keys are taken under
    /// the lock (the sealed runs are shared, the recent set is copied), the file is written
    /// on a blocking thread.
    pub async fn write_dedup_snapshot(
        &self,
        dir: &Path,
    ) -> std::io::Result<Option<SnapshotWritten>> {
        let _one = self.snapshot_writer.lock().await;
        let partitions = self.log.partitions();
        let (image, covered, exclude, commits) = {
            let state = self.dedup.lock().unwrap();
            if !state.coverage_known {
                return Err(std::io::Error::other(
                    "the dedup index was not read from the log yet: it covers nothing known",
                ));
            }
            let covered = state.covered(&partitions);
            if state.on_disk.as_ref() == Some(&covered) {
                return Ok(None);
            }
            let exclude: HashSet<Key> = state
                .coverage
                .values()
                .flat_map(|c| c.ahead.values().flat_map(|(_, keys)| keys.iter().copied()))
                .collect();
            (state.index.image(), covered, exclude, state.commits)
        };
        let mut with_crc = Vec::with_capacity(covered.len());
        for &(partition, offset) in &covered {
            let last_crc = if offset == 0 {
                0
            } else {
                self.record_crc(partition, offset - 1)
                    .await
                    .map_err(|why| {
                        std::io::Error::other(format!(
                            "the record at offset {} of partition {partition}: {why}",
                            offset - 1
                        ))
                    })?
            };
            with_crc.push(Covered {
                partition,
                offset,
                last_crc,
            });
        }
        let (dir, window) = (dir.to_path_buf(), self.window.as_secs());
        let (keys, bytes) = tokio::task::spawn_blocking(move || {
            write_snapshot_file(&dir, window, &with_crc, image, &exclude)
        })
        .await
        .map_err(std::io::Error::other)??;
        let mut state = self.dedup.lock().unwrap();
        state.on_disk = Some(covered.clone());
        state.snapshot_commits = commits;
        Ok(Some(SnapshotWritten {
            keys,
            bytes,
            covered,
        }))
    }

    /// Keys committed by ingest since the last snapshot this process wrote (or since start).
    pub fn dedup_commits_since_snapshot(&self) -> u64 {
        let state = self.dedup.lock().unwrap();
        state.commits - state.snapshot_commits
    }
}
