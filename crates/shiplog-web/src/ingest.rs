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
//! Committed keys are kept for the dedup window (default 7 days, by receive time) and are
//! rebuilt from the log on start, so dedup holds across restarts. The index itself
//! ([`crate::dedup`]) holds about 8 bytes per key.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use shiplog_events::{Event, Stamp, ValidEvent};
use shiplog_log::{Log, LogError, LogRecord, Offset};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::dedup::{dedup_key, DedupIndex, Lookup};
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
    dedup: Mutex<DedupIndex>,
    window: Duration,
    metrics: Arc<Metrics>,
}

impl Ingestor {
    pub fn new(log: Arc<dyn Log>, window: Duration, metrics: Arc<Metrics>) -> Self {
        Ingestor {
            log,
            dedup: Mutex::new(DedupIndex::new(window)),
            window,
            metrics,
        }
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    /// Rebuilds the dedup index from the log (every partition, from `from`), keeping the
    /// keys received within the window. Returns the number of keys loaded.
    pub async fn rebuild_dedup(&self, from: Offset) -> Result<usize, LogError> {
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
        let mut loaded = 0;
        for partition in self.log.partitions() {
            let end = self.log.end_offset(partition);
            if end <= from {
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
                let mut index = self.dedup.lock().unwrap();
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
                        index.commit(dedup_key(&k.source, &k.id), at);
                        loaded += 1;
                    }
                }
            }
        }
        Ok(loaded)
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
            let mut index = self.dedup.lock().unwrap();
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
        let result = if records.is_empty() {
            Ok(Vec::new())
        } else {
            let started = Instant::now();
            let r = self.log.append(records).await;
            self.metrics.observe_append(started.elapsed());
            r
        };
        {
            let mut index = self.dedup.lock().unwrap();
            for &key in &keys {
                if result.is_ok() {
                    index.commit(key, now_secs);
                } else {
                    index.release(key);
                }
            }
        }
        let _ = done_tx.send(Some(result.is_ok()));
        result?;
        outcome.accepted = keys.len();
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
        self.dedup.lock().unwrap().set_max_keys(max_keys);
    }

    /// Keys forgotten before the end of the window because of the cap.
    pub fn dedup_evicted(&self) -> u64 {
        self.dedup.lock().unwrap().evicted
    }

    /// Number of keys currently held for dedup.
    pub fn dedup_len(&self) -> usize {
        self.dedup.lock().unwrap().len()
    }

    /// Approximate bytes held by the dedup index.
    pub fn dedup_bytes(&self) -> usize {
        self.dedup.lock().unwrap().bytes()
    }
}
