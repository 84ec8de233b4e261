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
use chrono::Utc;
use shiplog_events::{Event, Stamp, ValidEvent};
use shiplog_log::{Log, LogError, LogRecord};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::dedup::{dedup_key, DedupIndex, Lookup};
use crate::metrics::Metrics;
use state::{Append, DedupState};

mod restore;
mod snapshot;
mod state;
#[cfg(test)]
mod tests;

pub use restore::{DedupRestore, SnapshotRejected};
pub use snapshot::SnapshotWritten;

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

impl Ingestor {
    pub fn new(log: Arc<dyn Log>, window: Duration, metrics: Arc<Metrics>) -> Self {
        Ingestor {
            log,
            dedup: Arc::new(Mutex::new(DedupState::new(DedupIndex::new(window)))),
            window,
            metrics,
            snapshot_writer: tokio::sync::Mutex::new(()),
        }
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
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
