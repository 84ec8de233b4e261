//! The ingest path: dedup on `(source, id)`, append to the log, wait for durability.
//!
//! [`Ingestor::ingest`] returns only after every accepted event is durable in the log
//! (it awaits [`Log::append`]), so an HTTP 2xx built from its result is a durability
//! promise.
//!
//! Dedup: a key is first reserved as *pending* (under one short lock), then appended; once
//! the append is durable it becomes *committed*, and on failure the reservation is removed
//! so a retry can store it. A concurrent request that meets a pending key waits for that
//! append's outcome before it answers "duplicate", so a `duplicates` count is never a lie.
//! An append whose request is dropped meanwhile (client gone, timeout) is still settled
//! when it resolves. Committed keys are kept for the dedup window (default 7 days, by
//! receive time) and are restored on start, so dedup holds across restarts. The index
//! itself ([`crate::dedup`]) holds about 8 bytes per key.
//!
//! Restarts: [`Ingestor::write_dedup_snapshot`] saves the committed keys with, per
//! partition, the log offset they cover, and [`Ingestor::restore_dedup`] loads them and
//! reads only the log after. Which offsets are covered is tracked as appends settle (they
//! can finish out of order): the covered offset of a partition is the end of the longest
//! prefix of its records whose appends have all committed their keys, and keys committed
//! for records above it are left out of a snapshot. So a snapshot never holds a key whose
//! record is not below its offsets, the one thing that would make shiplog answer
//! "duplicate" for an event it does not store.
//!
//! For the same reason a start uses a snapshot only if the log still holds every record
//! whose key it may hold ([`SnapshotRejected`] lists what else sends it to the whole log):
//! no partition ends below its covered offset, the record at `covered - 1` is the one the
//! snapshot saw (CRC32), and the records from the oldest one whose key it holds up to the
//! covered offset are all readable (their CRCs checked, nothing decoded: about a third of
//! the cost of reading them for keys). A snapshot that fails is deleted.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Deserialize;
use shiplog_events::{Event, Stamp, ValidEvent};
use shiplog_log::{Log, LogError, LogRecord, Offset, Partition, RecordPosition};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::dedup::{
    dedup_key, read_snapshot_file, record_crc, write_snapshot_file, Covered, DedupIndex, Key,
    Lookup, Snapshot, SnapshotError, SNAPSHOT_FILE,
};
use crate::metrics::Metrics;

/// What happened to the events of one request (the valid ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: usize,
    pub duplicates: usize,
}

/// Why an ingest failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// A concurrent request holding the same key failed to append it: retry.
    #[error("a concurrent append of the same event failed; retry")]
    ConcurrentFailure,
}

impl IngestError {
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Log(e) => e.is_retryable(),
            IngestError::ConcurrentFailure => true,
        }
    }
}

/// Accepts validated events into the log, exactly once per `(source, id)`.
pub struct Ingestor {
    log: Arc<dyn Log>,
    dedup: Arc<Mutex<DedupState>>,
    window: Duration,
    metrics: Arc<Metrics>,
    /// One snapshot write at a time.
    snapshot_writer: tokio::sync::Mutex<()>,
}

/// The index and what it covers of the log, under one lock.
struct DedupState {
    index: DedupIndex,
    coverage: BTreeMap<Partition, Coverage>,
    /// Whether `coverage` describes the index: set once the log was read at start
    /// ([`Ingestor::restore_dedup`], or [`Ingestor::rebuild_dedup`] from 0). No snapshot
    /// is written before.
    coverage_known: bool,
    /// Appends started and not yet settled.
    in_flight: usize,
    /// Keys committed by appends since start, and that count at the last snapshot written.
    commits: u64,
    snapshot_commits: u64,
    /// The covered offsets of the snapshot on disk, when this process loaded or wrote it.
    on_disk: Option<Vec<(Partition, Offset)>>,
}

/// Which records of a partition have their keys committed.
#[derive(Default)]
struct Coverage {
    /// Every record below it has had its key committed, or never will: a record the
    /// start's read skipped (damaged, or older than the window), or one of an append whose
    /// outcome was never learnt. Such a key is missing from the index, which at worst
    /// stores a retry twice (the projection dedups); never the other way round.
    watermark: Offset,
    /// Appends that committed above the watermark, before an earlier one finished: first
    /// offset -> (end, keys). A snapshot leaves these keys out.
    ahead: BTreeMap<Offset, (Offset, Vec<Key>)>,
}

impl Coverage {
    fn add(&mut self, first: Offset, end: Offset, keys: &[Key]) {
        if first > self.watermark {
            self.ahead.insert(first, (end, keys.to_vec()));
            return;
        }
        self.watermark = self.watermark.max(end);
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() > self.watermark {
                break;
            }
            let (end, _) = entry.remove();
            self.watermark = self.watermark.max(end);
        }
    }

    /// With no append in flight, a gap below an `ahead` range can never fill (its records'
    /// keys were not learnt): cover it.
    fn close_gaps(&mut self) {
        if let Some(end) = self.ahead.values().map(|(end, _)| *end).max() {
            self.watermark = self.watermark.max(end);
            self.ahead.clear();
        }
    }
}

impl DedupState {
    /// An append resolved: `positions` when durable (one per key, in order), `None` when
    /// it failed.
    fn settle(&mut self, keys: &[Key], positions: Option<&[RecordPosition]>, at: i64) {
        self.in_flight -= 1;
        match positions {
            Some(positions) if positions.len() == keys.len() => {
                for (&key, p) in keys.iter().zip(positions) {
                    self.index.commit(key, at, (p.partition, p.offset));
                }
                self.commits += keys.len() as u64;
                self.cover(keys, positions);
            }
            Some(positions) => {
                // A backend that does not say where each record went (none does): the keys
                // are stored, at offsets unknown, so coverage skips them when no append is
                // in flight, and a start checks their partitions for damage from 0.
                let partition = positions.first().map_or(0, |p| p.partition);
                for &key in keys {
                    self.index.commit(key, at, (partition, 0));
                }
                self.commits += keys.len() as u64;
            }
            None => {
                for &key in keys {
                    self.index.release(key);
                }
            }
        }
        if self.in_flight == 0 {
            self.coverage.values_mut().for_each(Coverage::close_gaps);
        }
    }

    fn cover(&mut self, keys: &[Key], positions: &[RecordPosition]) {
        let mut i = 0;
        while i < positions.len() {
            let (partition, first) = (positions[i].partition, positions[i].offset);
            let mut j = i + 1;
            while j < positions.len()
                && positions[j].partition == partition
                && positions[j].offset == first + (j - i) as u64
            {
                j += 1;
            }
            self.coverage.entry(partition).or_default().add(
                first,
                first + (j - i) as u64,
                &keys[i..j],
            );
            i = j;
        }
    }

    fn covered(&self, partitions: &[Partition]) -> Vec<(Partition, Offset)> {
        partitions
            .iter()
            .map(|p| (*p, self.coverage.get(p).map_or(0, |c| c.watermark)))
            .collect()
    }
}

/// An append in flight and the keys it reserved. It settles them (commit or release) when
/// the append resolves, even if the request that started it is dropped meanwhile (a client
/// gone, a timeout): its records may become durable all the same, and a key left pending
/// would make every retry of its event fail.
struct Append {
    dedup: Arc<Mutex<DedupState>>,
    keys: Vec<Key>,
    at: i64,
    done: Option<watch::Sender<Option<bool>>>,
    future: Option<BoxFuture<'static, Result<Vec<RecordPosition>, LogError>>>,
    /// Whether a drop before the end hands the append to a task of its own (the request's
    /// append), or gives up on it (that task's, dropped by a runtime shutting down).
    hand_over: bool,
}

impl Append {
    async fn finish(mut self) -> Result<(), LogError> {
        let result = self.future.as_mut().expect("finished once").await;
        self.future = None;
        self.settle(&result);
        result.map(drop)
    }

    fn settle(&mut self, result: &Result<Vec<RecordPosition>, LogError>) {
        self.dedup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .settle(&self.keys, result.as_deref().ok(), self.at);
        if let Some(done) = self.done.take() {
            let _ = done.send(Some(result.is_ok()));
        }
    }
}

impl Drop for Append {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        if self.hand_over {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(
                    Append {
                        dedup: self.dedup.clone(),
                        keys: std::mem::take(&mut self.keys),
                        at: self.at,
                        done: self.done.take(),
                        future: Some(future),
                        hand_over: false,
                    }
                    .finish(),
                );
                return;
            }
        }
        // No runtime to finish it on (the process is ending): release the keys. The
        // records' fate is unknown, so coverage passes over them (see Coverage).
        drop(future);
        self.settle(&Err(LogError::Closed));
    }
}

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

/// What [`Ingestor::write_dedup_snapshot`] wrote.
#[derive(Debug, Clone)]
pub struct SnapshotWritten {
    pub keys: u64,
    pub bytes: u64,
    /// Per partition, the offset the snapshot covers.
    pub covered: Vec<(Partition, Offset)>,
}

/// What a read of the log at start found.
struct KeysRead {
    keys: usize,
    records: u64,
    /// Per partition, the offset read up to.
    ends: Vec<(Partition, Offset)>,
}

impl Ingestor {
    pub fn new(log: Arc<dyn Log>, window: Duration, metrics: Arc<Metrics>) -> Self {
        Ingestor {
            log,
            dedup: Arc::new(Mutex::new(DedupState {
                index: DedupIndex::new(window),
                coverage: BTreeMap::new(),
                coverage_known: false,
                in_flight: 0,
                commits: 0,
                snapshot_commits: 0,
                on_disk: None,
            })),
            window,
            metrics,
            snapshot_writer: tokio::sync::Mutex::new(()),
        }
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

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

    /// [`record_crc`] of the record at `offset`.
    async fn record_crc(&self, partition: Partition, offset: Offset) -> Result<u32, String> {
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
        #[derive(Deserialize)]
        struct KeyFields<'a> {
            #[serde(borrow)]
            id: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            source: std::borrow::Cow<'a, str>,
            #[serde(borrow, default)]
            received_at: Option<std::borrow::Cow<'a, str>>,
        }
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
                    let Ok(k) = serde_json::from_slice::<KeyFields>(&entry.value) else {
                        continue;
                    };
                    let at = k
                        .received_at
                        .as_deref()
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map(|t| t.timestamp())
                        .unwrap_or(i64::MAX);
                    if at >= cutoff {
                        let record = (entry.partition, entry.offset);
                        state.index.commit(dedup_key(&k.source, &k.id), at, record);
                        read.keys += 1;
                    }
                }
            }
            read.ends.push((partition, reader.position()));
        }
        Ok(read)
    }

    /// Appends the events that are not duplicates and waits until they are durable.
    /// `received_at` is set on each event here.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, IngestError> {
        self.ingest_valid(events.into_iter().map(ValidEvent::from).collect())
            .await
    }

    /// [`Self::ingest`] for events validated by either path of the decoder: fast-path
    /// events are stored as the text sent, with `received_at` spliced in.
    pub async fn ingest_valid(
        &self,
        events: Vec<ValidEvent<'_>>,
    ) -> Result<IngestOutcome, IngestError> {
        let now = Utc::now();
        let now_secs = now.timestamp();
        let (done_tx, done_rx) = watch::channel(None);
        let mut outcome = IngestOutcome::default();
        let mut keys = Vec::with_capacity(events.len());
        let mut fresh = Vec::with_capacity(events.len());
        let mut waits = Vec::new();
        {
            let mut state = self.dedup.lock().unwrap();
            let index = &mut state.index;
            index.expire(now_secs - self.window.as_secs() as i64);
            for event in events {
                let key = dedup_key(event.source(), event.id());
                match index.lookup(key) {
                    Lookup::Committed => outcome.duplicates += 1,
                    Lookup::Pending(rx) if rx.same_channel(&done_rx) => outcome.duplicates += 1,
                    Lookup::Pending(rx) => waits.push(rx.clone()),
                    Lookup::Absent => {
                        index.reserve(key, done_rx.clone());
                        keys.push(key);
                        fresh.push(event);
                    }
                }
            }
            if !keys.is_empty() {
                state.in_flight += 1;
            }
        }
        // Serialized outside the lock.
        let stamp = Stamp::new(now);
        let records: Vec<LogRecord> = fresh
            .into_iter()
            .map(|event| LogRecord {
                key: Bytes::copy_from_slice(event.project().as_bytes()),
                value: Bytes::from(event.into_record(&stamp)),
            })
            .collect();
        let accepted = keys.len();
        if !records.is_empty() {
            let started = Instant::now();
            let append = Append {
                dedup: self.dedup.clone(),
                keys,
                at: now_secs,
                done: Some(done_tx),
                future: Some(self.log.append(records)),
                hand_over: true,
            };
            let result = append.finish().await;
            self.metrics.observe_append(started.elapsed());
            result?;
        }
        outcome.accepted = accepted;
        for mut rx in waits {
            let ok = match rx.wait_for(Option::is_some).await {
                Ok(v) => v.unwrap_or(false),
                Err(_) => false,
            };
            if !ok {
                return Err(IngestError::ConcurrentFailure);
            }
            outcome.duplicates += 1;
        }
        Ok(outcome)
    }

    /// Caps the keys held for dedup (`server.dedup_max_keys`; see [`crate::dedup`]).
    pub fn set_dedup_max_keys(&self, max_keys: usize) {
        self.dedup.lock().unwrap().index.set_max_keys(max_keys);
    }

    /// Keys forgotten before the end of the window because of the cap.
    pub fn dedup_evicted(&self) -> u64 {
        self.dedup.lock().unwrap().index.evicted
    }

    /// Number of keys currently held for dedup.
    pub fn dedup_len(&self) -> usize {
        self.dedup.lock().unwrap().index.len()
    }

    /// Approximate bytes held by the dedup index.
    pub fn dedup_bytes(&self) -> usize {
        self.dedup.lock().unwrap().index.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiplog_events::Origin;
    use shiplog_log::file::{FileLogConfig, SegmentedLog};
    use shiplog_log::{LogReader, LogStats};
    use std::collections::VecDeque;
    use tokio::sync::oneshot;

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    fn event(source: &str, id: &str) -> Event {
        Event::from_json(
            serde_json::json!({"id": id, "kind": "check", "source": source, "project": "p",
                "data": {"name": "error_rate", "value": 0.01}}),
            Origin::Collector,
        )
        .unwrap()
    }

    fn events(source: &str, ids: std::ops::Range<usize>) -> Vec<Event> {
        ids.map(|i| event(source, &i.to_string())).collect()
    }

    fn open_log(dir: &Path) -> Arc<SegmentedLog> {
        Arc::new(SegmentedLog::open(dir, FileLogConfig::default()).unwrap().0)
    }

    fn ingestor(log: Arc<dyn Log>) -> Ingestor {
        Ingestor::new(log, WEEK, Arc::new(Metrics::default()))
    }

    /// The file log, with appends that resolve only once a gate opens (the next append
    /// takes the next gate queued), or after a random delay: appends then finish out of
    /// order, as they do under load.
    struct GatedLog {
        inner: Arc<SegmentedLog>,
        gates: Mutex<VecDeque<oneshot::Receiver<()>>>,
        jitter: bool,
    }

    impl GatedLog {
        fn new(inner: Arc<SegmentedLog>, jitter: bool) -> Arc<GatedLog> {
            Arc::new(GatedLog {
                inner,
                gates: Mutex::default(),
                jitter,
            })
        }

        fn gate(&self) -> oneshot::Sender<()> {
            let (tx, rx) = oneshot::channel();
            self.gates.lock().unwrap().push_back(rx);
            tx
        }
    }

    impl Log for GatedLog {
        fn append(
            &self,
            records: Vec<LogRecord>,
        ) -> BoxFuture<'static, Result<Vec<RecordPosition>, LogError>> {
            let append = self.inner.append(records);
            let gate = self.gates.lock().unwrap().pop_front();
            let delay = if self.jitter {
                Duration::from_micros(rand_below(3000))
            } else {
                Duration::ZERO
            };
            Box::pin(async move {
                let result = append.await;
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                tokio::time::sleep(delay).await;
                result
            })
        }
        fn partitions(&self) -> Vec<Partition> {
            self.inner.partitions()
        }
        fn reader(
            &self,
            partition: Partition,
            from: Offset,
        ) -> Result<Box<dyn LogReader>, LogError> {
            self.inner.reader(partition, from)
        }
        fn end_offset(&self, partition: Partition) -> Offset {
            self.inner.end_offset(partition)
        }
        fn close(&self) -> BoxFuture<'static, Result<(), LogError>> {
            self.inner.close()
        }
        fn stats(&self) -> LogStats {
            self.inner.stats()
        }
    }

    fn rand_below(n: u64) -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::thread::current().id()) % n
    }

    /// The keys of the records of partition 0 below `end`.
    async fn log_keys(log: &dyn Log, end: Offset) -> HashSet<Key> {
        let mut keys = HashSet::new();
        if end == 0 {
            return keys;
        }
        let mut reader = log.reader(0, 0).unwrap();
        while reader.position() < end {
            for e in reader
                .next_batch(10_000, 16 << 20, Duration::from_secs(1))
                .await
                .unwrap()
            {
                if e.offset < end {
                    let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
                    let (s, id) = (v["source"].as_str().unwrap(), v["id"].as_str().unwrap());
                    keys.insert(dedup_key(s, id));
                }
            }
        }
        keys
    }

    /// The snapshot in `dir` holds exactly the keys of the records below its covered offset.
    async fn assert_snapshot_matches_log(dir: &Path, log: &dyn Log) -> (Offset, usize) {
        let snap = read_snapshot_file(dir).unwrap().unwrap();
        assert_eq!(snap.covered.len(), 1);
        let covered = snap.covered[0].offset;
        let held: HashSet<Key> = snap.runs().flat_map(|(_, k)| k.iter().copied()).collect();
        let stored = log_keys(log, covered).await;
        let without_record = held.difference(&stored).count();
        assert_eq!(
            without_record, 0,
            "{without_record} keys in the snapshot have no record below offset {covered}"
        );
        let missing = stored.difference(&held).count();
        assert_eq!(
            missing, 0,
            "{missing} records below offset {covered} have no key in the snapshot"
        );
        (covered, held.len())
    }

    async fn until(mut f: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_reads_only_the_log_after_the_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let snaps = tmp.path().join("dedup");
        let log = open_log(&tmp.path().join("log"));
        let first = ingestor(log.clone());
        // No snapshot yet: the whole log (empty) is read.
        let r = first.restore_dedup(&snaps).await.unwrap();
        assert!(r.rejected.is_none() && r.snapshot_keys == 0);
        first.ingest(events("a", 0..300)).await.unwrap();
        let w = first.write_dedup_snapshot(&snaps).await.unwrap().unwrap();
        assert_eq!((w.keys, w.covered.clone()), (300, vec![(0, 300)]));
        // Nothing new: the file is current.
        assert!(first.write_dedup_snapshot(&snaps).await.unwrap().is_none());
        first.ingest(events("a", 300..350)).await.unwrap();

        let second = ingestor(log.clone());
        let r = second.restore_dedup(&snaps).await.unwrap();
        assert!(r.rejected.is_none(), "{:?}", r.rejected);
        assert_eq!((r.snapshot_keys, r.records_read, r.log_keys), (300, 50, 50));
        // The records whose keys the snapshot holds were checked (not decoded).
        assert_eq!(r.records_checked, 300);
        let o = second.ingest(events("a", 0..350)).await.unwrap();
        assert_eq!((o.accepted, o.duplicates), (0, 350));
        let o = second.ingest(events("a", 350..360)).await.unwrap();
        assert_eq!((o.accepted, o.duplicates), (10, 0));
        second.write_dedup_snapshot(&snaps).await.unwrap().unwrap();
        assert_eq!(assert_snapshot_matches_log(&snaps, &*log).await, (360, 360));
    }

    /// Starts an ingestor on `log` (no snapshot yet), stores 200 events of source "old" in
    /// it and writes their snapshot to `snaps`.
    async fn snapshot_old_events(log: Arc<dyn Log>, snaps: &Path) {
        let ing = ingestor(log);
        ing.restore_dedup(snaps).await.unwrap();
        ing.ingest(events("old", 0..200)).await.unwrap();
        ing.write_dedup_snapshot(snaps).await.unwrap().unwrap();
    }

    /// Starts on a log of `n` events of source "new", with the snapshot of 200 events of
    /// source "old" written in a log of its own.
    async fn restore_on_another_log(
        root: &Path,
        n: usize,
    ) -> (Ingestor, DedupRestore, std::path::PathBuf) {
        let snaps = root.join("dedup");
        let old = open_log(&root.join("old-log"));
        snapshot_old_events(old.clone(), &snaps).await;
        old.close().await.unwrap();
        let log = open_log(&root.join("log"));
        ingestor(log.clone())
            .ingest(events("new", 0..n))
            .await
            .unwrap();
        let ing = ingestor(log);
        let r = ing.restore_dedup(&snaps).await.unwrap();
        (ing, r, snaps)
    }

    /// The start falls back to the whole log: nothing of the snapshot is used, the file is
    /// deleted, and the events only the snapshot knew are stored when sent again.
    async fn assert_full_rebuild(ing: &Ingestor, r: &DedupRestore, snaps: &Path, records: u64) {
        assert_eq!((r.snapshot_keys, r.records_read), (0, records));
        assert!(!snaps.join(SNAPSHOT_FILE).exists());
        let o = ing.ingest(events("old", 0..200)).await.unwrap();
        assert_eq!((o.accepted, o.duplicates), (200, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_shorter_than_the_snapshot_is_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        // The log now ends below offset 200: truncated, or a restore of an older copy.
        let (ing, r, snaps) = restore_on_another_log(tmp.path(), 150).await;
        assert!(
            matches!(
                r.rejected,
                Some(SnapshotRejected::LogTruncated {
                    partition: 0,
                    end: 150,
                    covered: 200
                })
            ),
            "{:?}",
            r.rejected
        );
        assert_full_rebuild(&ing, &r, &snaps, 150).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_written_again_past_the_snapshot_is_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        // Long enough to pass the offset check, but not the log the snapshot saw.
        let (ing, r, snaps) = restore_on_another_log(tmp.path(), 250).await;
        assert!(
            matches!(
                r.rejected,
                Some(SnapshotRejected::RecordChanged {
                    partition: 0,
                    offset: 199
                })
            ),
            "{:?}",
            r.rejected
        );
        assert_full_rebuild(&ing, &r, &snaps, 250).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_damaged_below_the_snapshot_is_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let (snaps, dir) = (tmp.path().join("dedup"), tmp.path().join("log"));
        let small = FileLogConfig {
            segment_bytes: 8 << 10,
            ..FileLogConfig::default()
        };
        let log = Arc::new(SegmentedLog::open(&dir, small.clone()).unwrap().0);
        snapshot_old_events(log.clone(), &snaps).await;
        log.close().await.unwrap();
        drop(log);
        // A flipped bit in a sealed segment, after the snapshot was written.
        let mut segments: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segments.sort();
        assert!(segments.len() >= 3, "{segments:?}");
        let mut bytes = std::fs::read(&segments[1]).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        std::fs::write(&segments[1], bytes).unwrap();

        let log = Arc::new(SegmentedLog::open(&dir, small).unwrap().0);
        let ing = ingestor(log.clone());
        let r = ing.restore_dedup(&snaps).await.unwrap();
        let Some(SnapshotRejected::Damaged {
            partition: 0,
            first,
            end,
            ..
        }) = r.rejected
        else {
            panic!("{:?}", r.rejected)
        };
        assert!(first < end && end < 200, "{first}..{end}");
        assert_eq!(r.snapshot_keys, 0);
        // The damaged records' events are stored again when sent again.
        let o = ing.ingest(events("old", 0..200)).await.unwrap();
        assert_eq!(o.accepted as u64, end - first);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_snapshot_or_a_longer_window_is_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let snaps = tmp.path().join("dedup");
        let log = open_log(&tmp.path().join("log"));
        snapshot_old_events(log.clone(), &snaps).await;
        let file = snaps.join(SNAPSHOT_FILE);
        let good = std::fs::read(&file).unwrap();

        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x01;
        std::fs::write(&file, &bad).unwrap();
        let again = ingestor(log.clone());
        let r = again.restore_dedup(&snaps).await.unwrap();
        assert!(
            matches!(
                r.rejected,
                Some(SnapshotRejected::Unreadable(SnapshotError::Crc { .. }))
            ),
            "{:?}",
            r.rejected
        );
        assert_eq!((r.snapshot_keys, r.records_read), (0, 200));
        assert!(!file.exists());
        // The whole log was read: the events are duplicates still.
        let o = again.ingest(events("old", 0..200)).await.unwrap();
        assert_eq!(o.duplicates, 200);

        std::fs::write(&file, &good[..good.len() - 3]).unwrap();
        let r = ingestor(log.clone()).restore_dedup(&snaps).await.unwrap();
        assert!(
            matches!(
                r.rejected,
                Some(SnapshotRejected::Unreadable(SnapshotError::Truncated))
            ),
            "{:?}",
            r.rejected
        );

        // A longer window than the snapshot's: it lacks keys the window now keeps.
        std::fs::write(&file, &good).unwrap();
        let longer = Ingestor::new(log.clone(), WEEK * 2, Arc::new(Metrics::default()));
        let r = longer.restore_dedup(&snaps).await.unwrap();
        assert!(
            matches!(r.rejected, Some(SnapshotRejected::WindowGrew { .. })),
            "{:?}",
            r.rejected
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_covers_only_appends_that_committed_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let snaps = tmp.path().join("dedup");
        let file_log = open_log(&tmp.path().join("log"));
        let log = GatedLog::new(file_log.clone(), false);
        let ing = Arc::new(ingestor(log.clone()));
        ing.restore_dedup(&snaps).await.unwrap();
        ing.ingest(events("a", 0..5)).await.unwrap();
        // A: durable at offsets 5..15, but its request has not committed the keys yet.
        let gate = log.gate();
        let a = tokio::spawn({
            let ing = ing.clone();
            async move { ing.ingest(events("a", 5..15)).await.unwrap() }
        });
        until(|| log.end_offset(0) == 15).await;
        // B: offsets 15..25, committed before A.
        ing.ingest(events("b", 0..10)).await.unwrap();
        ing.write_dedup_snapshot(&snaps).await.unwrap().unwrap();
        // Neither A's records (keys not committed) nor B's (above A's) are covered.
        assert_eq!(assert_snapshot_matches_log(&snaps, &*log).await, (5, 5));
        gate.send(()).unwrap();
        assert_eq!(a.await.unwrap().accepted, 10);
        ing.write_dedup_snapshot(&snaps).await.unwrap().unwrap();
        assert_eq!(assert_snapshot_matches_log(&snaps, &*log).await, (25, 25));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_request_still_settles_its_append() {
        let tmp = tempfile::tempdir().unwrap();
        let snaps = tmp.path().join("dedup");
        let log = GatedLog::new(open_log(&tmp.path().join("log")), false);
        let ing = Arc::new(ingestor(log.clone()));
        ing.restore_dedup(&snaps).await.unwrap();
        let gate = log.gate();
        let request = tokio::spawn({
            let ing = ing.clone();
            async move { ing.ingest(events("a", 0..10)).await }
        });
        until(|| log.end_offset(0) == 10).await;
        // The client went away (or the request timed out) while its append was in flight.
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        gate.send(()).unwrap();
        // Its events are durable: a retry is answered as duplicates, not refused forever
        // as a concurrent failure by a key left pending.
        let o = ing.ingest(events("a", 0..10)).await.unwrap();
        assert_eq!((o.accepted, o.duplicates), (0, 10));
        ing.write_dedup_snapshot(&snaps).await.unwrap().unwrap();
        assert_eq!(assert_snapshot_matches_log(&snaps, &*log).await, (10, 10));
    }

    #[test]
    fn a_runtime_stopping_mid_append_releases_its_keys() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let log = GatedLog::new(open_log(&tmp.path().join("log")), false);
        let ing = Arc::new(ingestor(log.clone()));
        rt.block_on(ing.restore_dedup(&tmp.path().join("dedup")))
            .unwrap();
        let _gate = log.gate();
        rt.spawn({
            let ing = ing.clone();
            async move { ing.ingest(events("a", 0..10)).await }
        });
        rt.block_on(until(|| log.end_offset(0) == 10));
        // The request's task is dropped, then the task it handed its append to.
        drop(rt);
        let state = ing.dedup.lock().unwrap();
        assert_eq!(state.in_flight, 0);
        assert!(matches!(
            state.index.lookup(dedup_key("a", "0")),
            Lookup::Absent
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn snapshots_taken_under_concurrent_load_match_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let snaps = tmp.path().join("dedup");
        let log = GatedLog::new(open_log(&tmp.path().join("log")), true);
        let ing = Arc::new(ingestor(log.clone()));
        ing.restore_dedup(&snaps).await.unwrap();
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let ing = ing.clone();
                tokio::spawn(async move {
                    for n in 0..40 {
                        let first = n * 7;
                        ing.ingest(events(&format!("w{w}"), first..first + 7))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        let mut covered = Vec::new();
        while !writers.iter().all(|w| w.is_finished()) {
            if ing.write_dedup_snapshot(&snaps).await.unwrap().is_some() {
                covered.push(assert_snapshot_matches_log(&snaps, &*log).await.0);
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        for w in writers {
            w.await.unwrap();
        }
        ing.write_dedup_snapshot(&snaps).await.unwrap();
        assert_eq!(
            assert_snapshot_matches_log(&snaps, &*log).await,
            (16 * 40 * 7, 16 * 40 * 7)
        );
        assert!(covered.len() >= 3, "{covered:?}");
    }
}
