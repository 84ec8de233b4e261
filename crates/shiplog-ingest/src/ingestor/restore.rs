//! A start: the dedup index restored from its snapshot (when it checks out against the
//! log) and the log written after it, or from the whole log.

use chrono::Utc;
use shiplog_events::RecordPeek;
use shiplog_log::{LogError, Offset, Partition};
use std::path::Path;
use std::time::Duration;

use super::Ingestor;
use crate::dedup::{read_snapshot_file, Snapshot, SnapshotError, SNAPSHOT_FILE};

/// Why a dedup snapshot found at start was not used (the whole log is read instead).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotRejected {
    #[error("the snapshot file cannot be used: {0}")]
    Unreadable(#[from] SnapshotError),
    #[error(
        "it was taken with a dedup window of {snapshot} s, shorter than the {configured} s \
         configured"
    )]
    WindowGrew { snapshot: u64, configured: u64 },
    #[error("it covers partition {0}, which the log does not have")]
    UnknownPartition(Partition),
    #[error(
        "partition {partition} of the log ends at offset {end}, below the offset {covered} \
         the snapshot covers (the log was truncated or replaced)"
    )]
    LogTruncated {
        partition: Partition,
        end: Offset,
        covered: Offset,
    },
    #[error(
        "the record at offset {offset} of partition {partition} is not the one the snapshot \
         saw there (the log was replaced, or truncated and written again)"
    )]
    RecordChanged {
        partition: Partition,
        offset: Offset,
    },
    #[error("the record at offset {offset} of partition {partition} cannot be read: {reason}")]
    RecordUnreadable {
        partition: Partition,
        offset: Offset,
        reason: String,
    },
    #[error(
        "offsets {first}..{end} of partition {partition} are damaged or missing in the log \
         ({location}): the snapshot may hold their keys, and they must not count as stored"
    )]
    Damaged {
        partition: Partition,
        first: Offset,
        end: Offset,
        location: String,
    },
}

/// What [`Ingestor::restore_dedup`] did.
#[derive(Debug)]
pub struct DedupRestore {
    /// Keys loaded from the snapshot (0 when none was used).
    pub snapshot_keys: usize,
    /// Records below the snapshot's offsets checked to be still readable (CRC, not
    /// decoded): those whose keys it may hold.
    pub records_checked: u64,
    /// Why the snapshot found was not used (and deleted).
    pub rejected: Option<SnapshotRejected>,
    /// Records read from the log: those after the snapshot, or all of them.
    pub records_read: u64,
    /// Keys taken from those records (the ones received within the window).
    pub log_keys: usize,
}

/// What a read of the log at start found.
struct KeysRead {
    keys: usize,
    records: u64,
    /// Per partition, the offset read up to.
    ends: Vec<(Partition, Offset)>,
}

impl Ingestor {
    /// Rebuilds the dedup index from the log (every partition, from `from`), keeping the
    /// keys received within the window. Returns the number of keys loaded.
    pub async fn rebuild_dedup(&self, from: Offset) -> Result<usize, LogError> {
        let starts: Vec<_> = self.log.partitions().iter().map(|p| (*p, from)).collect();
        let read = self.read_keys(&starts).await?;
        if from == 0 {
            self.set_coverage(&read.ends);
        }
        Ok(read.keys)
    }

    /// Restores the dedup index at start: from the snapshot in `dir` when there is one
    /// that checks out against the log, plus the log written after it; else from the
    /// whole log, and a snapshot that did not check out is deleted (see
    /// [`SnapshotRejected`]).
    pub async fn restore_dedup(&self, dir: &Path) -> Result<DedupRestore, LogError> {
        let owned = dir.to_path_buf();
        let found = tokio::task::spawn_blocking(move || read_snapshot_file(&owned))
            .await
            .map_err(|e| LogError::Io(std::io::Error::other(e)))?;
        let mut records_checked = 0;
        let (snapshot, rejected) = match found {
            Ok(None) => (None, None),
            Ok(Some(snapshot)) => match self.check_snapshot(&snapshot).await {
                Ok(checked) => {
                    records_checked = checked;
                    (Some(snapshot), None)
                }
                Err(why) => (None, Some(why)),
            },
            Err(e) => (None, Some(SnapshotRejected::Unreadable(e))),
        };
        if rejected.is_some() {
            // Never to be considered again: a later log could happen to pass the checks.
            let _ = std::fs::remove_file(dir.join(SNAPSHOT_FILE));
        }
        let mut starts: Vec<(Partition, Offset)> =
            self.log.partitions().iter().map(|p| (*p, 0)).collect();
        let mut snapshot_keys = 0;
        if let Some(snapshot) = snapshot {
            for (partition, from) in &mut starts {
                if let Some(c) = snapshot.covered.iter().find(|c| c.partition == *partition) {
                    *from = c.offset;
                }
            }
            snapshot_keys = snapshot.len();
            let cutoff = Utc::now().timestamp() - self.window.as_secs() as i64;
            let mut state = self.dedup.lock().unwrap();
            state.index.load(snapshot);
            state.index.expire(cutoff);
            state.on_disk = Some(starts.clone());
        }
        let read = self.read_keys(&starts).await?;
        self.set_coverage(&read.ends);
        Ok(DedupRestore {
            snapshot_keys,
            records_checked,
            rejected,
            records_read: read.records,
            log_keys: read.keys,
        })
    }

    /// Whether a snapshot may be used with this log (see [`SnapshotRejected`]); returns the
    /// records checked to be readable.
    async fn check_snapshot(&self, snapshot: &Snapshot) -> Result<u64, SnapshotRejected> {
        let configured = self.window.as_secs();
        if snapshot.window_secs < configured {
            return Err(SnapshotRejected::WindowGrew {
                snapshot: snapshot.window_secs,
                configured,
            });
        }
        let partitions = self.log.partitions();
        for c in &snapshot.covered {
            if c.offset == 0 {
                continue;
            }
            if !partitions.contains(&c.partition) {
                return Err(SnapshotRejected::UnknownPartition(c.partition));
            }
            let end = self.log.end_offset(c.partition);
            if end < c.offset {
                return Err(SnapshotRejected::LogTruncated {
                    partition: c.partition,
                    end,
                    covered: c.offset,
                });
            }
            let offset = c.offset - 1;
            match self.record_crc(c.partition, offset).await {
                Ok(crc) if crc == c.last_crc => {}
                Ok(_) => {
                    return Err(SnapshotRejected::RecordChanged {
                        partition: c.partition,
                        offset,
                    })
                }
                Err(reason) => {
                    return Err(SnapshotRejected::RecordUnreadable {
                        partition: c.partition,
                        offset,
                        reason,
                    })
                }
            }
        }
        // Last, as it reads most: the records whose keys the snapshot may hold must all be
        // readable still. A key whose record was damaged (or its segment deleted) since
        // would answer "duplicate" for an event the log no longer has.
        let mut checked = 0;
        for c in &snapshot.covered {
            if let Some(first) = snapshot.first_offset(c.partition) {
                if first < c.offset {
                    checked += self.check_readable(c.partition, first, c.offset).await?;
                }
            }
        }
        Ok(checked)
    }

    /// Reads `from..to` of a partition, checking every record (CRC) but decoding none;
    /// returns the records read.
    async fn check_readable(
        &self,
        partition: Partition,
        from: Offset,
        to: Offset,
    ) -> Result<u64, SnapshotRejected> {
        let unreadable = |reason: String| SnapshotRejected::RecordUnreadable {
            partition,
            offset: from,
            reason,
        };
        let mut reader = self
            .log
            .reader(partition, from)
            .map_err(|e| unreadable(e.to_string()))?;
        let mut read = 0;
        while reader.position() < to {
            let most = (to - reader.position()).min(65_536) as usize;
            let batch = reader
                .next_batch(most, 64 << 20, Duration::from_secs(1))
                .await
                .map_err(|e| unreadable(e.to_string()))?;
            if let Some(r) = reader.take_skipped().into_iter().find(|r| r.first < to) {
                return Err(SnapshotRejected::Damaged {
                    partition,
                    first: r.first,
                    end: r.end,
                    location: r.location,
                });
            }
            if batch.is_empty() {
                return Err(unreadable(format!(
                    "the log returned nothing at offset {}",
                    reader.position()
                )));
            }
            read += batch.len() as u64;
        }
        Ok(read)
    }

    fn set_coverage(&self, ends: &[(Partition, Offset)]) {
        let mut state = self.dedup.lock().unwrap();
        for &(partition, end) in ends {
            let c = state.coverage.entry(partition).or_default();
            c.watermark = c.watermark.max(end);
        }
        state.coverage_known = true;
    }

    /// Reads the keys of the records from `starts` (per partition) to the log's end into
    /// the index, keeping those received within the window.
    async fn read_keys(&self, starts: &[(Partition, Offset)]) -> Result<KeysRead, LogError> {
        let cutoff = Utc::now().timestamp() - self.window.as_secs() as i64;
        let mut read = KeysRead {
            keys: 0,
            records: 0,
            ends: Vec::with_capacity(starts.len()),
        };
        for &(partition, from) in starts {
            let end = self.log.end_offset(partition);
            if end <= from {
                read.ends.push((partition, from));
                continue;
            }
            let mut reader = self.log.reader(partition, from)?;
            while reader.position() < end {
                let batch = reader
                    .next_batch(65_536, 64 << 20, Duration::from_millis(100))
                    .await?;
                // Damaged records are skipped by the reader (which logs where): their keys
                // cannot be known, so a retry of one of them is stored again.
                for r in reader.take_skipped() {
                    tracing::warn!(
                        partition = r.partition,
                        offsets = %format!("{}..{}", r.first, r.end),
                        location = %r.location,
                        "dedup index: damaged log records skipped; a client retry of one of them is accepted again"
                    );
                }
                if batch.is_empty() {
                    break;
                }
                read.records += batch.len() as u64;
                let mut state = self.dedup.lock().unwrap();
                for entry in batch {
                    let Ok(peek) = RecordPeek::of(&entry.value) else {
                        continue;
                    };
                    let Some(key) = peek.dedup_key() else {
                        continue;
                    };
                    let at = peek
                        .received_micros()
                        .map_or(i64::MAX, |us| us.div_euclid(1_000_000));
                    if at >= cutoff {
                        let record = (entry.partition, entry.offset);
                        state.index.commit(key, at, record);
                        read.keys += 1;
                    }
                }
            }
            read.ends.push((partition, reader.position()));
        }
        Ok(read)
    }
}
