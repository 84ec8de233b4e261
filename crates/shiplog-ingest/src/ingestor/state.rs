//! The dedup state of an [`Ingestor`](super::Ingestor): the index, which records of the
//! log it covers, and the appends in flight that settle their keys.

use futures::future::BoxFuture;
use shiplog_log::{LogError, Offset, Partition, RecordPosition};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use crate::dedup::{DedupIndex, Key};

/// The index and what it covers of the log, under one lock.
pub(super) struct DedupState {
    pub(super) index: DedupIndex,
    pub(super) coverage: BTreeMap<Partition, Coverage>,
    /// Whether `coverage` describes the index: set once the log was read at start
    /// ([`Ingestor::restore_dedup`](super::Ingestor::restore_dedup), or [`Ingestor::rebuild_dedup`](super::Ingestor::rebuild_dedup) from 0). No snapshot
    /// is written before.
    pub(super) coverage_known: bool,
    /// Appends started and not yet settled.
    pub(super) in_flight: usize,
    /// Keys committed by appends since start, and that count at the last snapshot written.
    pub(super) commits: u64,
    pub(super) snapshot_commits: u64,
    /// The covered offsets of the snapshot on disk, when this process loaded or wrote it.
    pub(super) on_disk: Option<Vec<(Partition, Offset)>>,
}

/// Which records of a partition have their keys committed.
#[derive(Default)]
pub(super) struct Coverage {
    /// Every record below it has had its key committed, or never will: a record the
    /// start's read skipped (damaged, or older than the window), or one of an append whose
    /// outcome was never learnt. Such a key is missing from the index, which at worst
    /// stores a retry twice (the projection dedups); never the other way round.
    pub(super) watermark: Offset,
    /// Appends that committed above the watermark, before an earlier one finished: first
    /// offset -> (end, keys). A snapshot leaves these keys out.
    pub(super) ahead: BTreeMap<Offset, (Offset, Vec<Key>)>,
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
    pub(super) fn new(index: DedupIndex) -> DedupState {
        DedupState {
            index,
            coverage: BTreeMap::new(),
            coverage_known: false,
            in_flight: 0,
            commits: 0,
            snapshot_commits: 0,
            on_disk: None,
        }
    }

    /// An append resolved: `positions` when durable (one per key, in order), `None` when
    /// it failed.
    pub(super) fn settle(&mut self, keys: &[Key], positions: Option<&[RecordPosition]>, at: i64) {
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

    pub(super) fn covered(&self, partitions: &[Partition]) -> Vec<(Partition, Offset)> {
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
pub(super) struct Append {
    pub(super) dedup: Arc<Mutex<DedupState>>,
    pub(super) keys: Vec<Key>,
    pub(super) at: i64,
    pub(super) done: Option<watch::Sender<Option<bool>>>,
    pub(super) future: Option<BoxFuture<'static, Result<Vec<RecordPosition>, LogError>>>,
    /// Whether a drop before the end hands the append to a task of its own (the request's
    /// append), or gives up on it (that task's, dropped by a runtime shutting down).
    pub(super) hand_over: bool,
}

impl Append {
    pub(super) async fn finish(mut self) -> Result<(), LogError> {
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
