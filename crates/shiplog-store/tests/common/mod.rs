//! Test support: an in-memory `Log`.
#![allow(dead_code)]

pub mod gen;

use bytes::Bytes;
use futures::future::BoxFuture;
use shiplog_log::{
    Log, LogEntry, LogError, LogReader, LogRecord, LogStats, Offset, Partition, RecordPosition,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Inner {
    parts: Vec<Mutex<Vec<Bytes>>>,
    notify: tokio::sync::Notify,
    /// Per partition, where the log starts (retention): readers never return offsets below.
    starts: Mutex<std::collections::BTreeMap<Partition, Offset>>,
}

/// An in-memory log with `n` partitions; `append` routes by key hash (or partition 0).
#[derive(Clone)]
pub struct MemLog(Arc<Inner>);

impl MemLog {
    pub fn new(partitions: usize) -> MemLog {
        MemLog(Arc::new(Inner {
            parts: (0..partitions).map(|_| Mutex::new(Vec::new())).collect(),
            notify: tokio::sync::Notify::new(),
            starts: Mutex::default(),
        }))
    }

    /// Moves a partition's start (as retention does): readers skip the offsets below.
    pub fn set_start(&self, partition: Partition, start: Offset) {
        self.0.starts.lock().unwrap().insert(partition, start);
    }

    /// Appends directly (synchronously) to a partition.
    pub fn push(&self, partition: Partition, value: Vec<u8>) -> Offset {
        let mut p = self.0.parts[partition as usize].lock().unwrap();
        p.push(Bytes::from(value));
        drop(p);
        self.0.notify.notify_waiters();
        self.end_offset(partition) - 1
    }

    pub fn entries(&self, partition: Partition, from: Offset, to: Offset) -> Vec<LogEntry> {
        let p = self.0.parts[partition as usize].lock().unwrap();
        (from..to.min(p.len() as u64))
            .map(|o| LogEntry {
                partition,
                offset: o,
                key: Bytes::new(),
                value: p[o as usize].clone(),
            })
            .collect()
    }
}

impl Log for MemLog {
    fn append(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'static, Result<Vec<RecordPosition>, LogError>> {
        let me = self.clone();
        Box::pin(async move {
            let n = me.0.parts.len() as u64;
            Ok(records
                .into_iter()
                .map(|r| {
                    let partition = (r.key.iter().map(|b| *b as u64).sum::<u64>() % n) as u32;
                    let offset = me.push(partition, r.value.to_vec());
                    RecordPosition { partition, offset }
                })
                .collect())
        })
    }

    fn partitions(&self) -> Vec<Partition> {
        (0..self.0.parts.len() as u32).collect()
    }

    fn reader(&self, partition: Partition, from: Offset) -> Result<Box<dyn LogReader>, LogError> {
        Ok(Box::new(MemReader {
            log: self.clone(),
            partition,
            pos: from.max(self.start_offset(partition)),
        }))
    }

    fn start_offset(&self, partition: Partition) -> Offset {
        self.0
            .starts
            .lock()
            .unwrap()
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    fn end_offset(&self, partition: Partition) -> Offset {
        self.0.parts[partition as usize].lock().unwrap().len() as u64
    }

    fn close(&self) -> BoxFuture<'static, Result<(), LogError>> {
        Box::pin(async { Ok(()) })
    }

    fn stats(&self) -> LogStats {
        LogStats::default()
    }
}

struct MemReader {
    log: MemLog,
    partition: Partition,
    pos: Offset,
}

impl LogReader for MemReader {
    fn next_batch(
        &mut self,
        max_records: usize,
        _max_bytes: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, LogError>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let notified = self.log.0.notify.notified();
                let end = self.log.end_offset(self.partition);
                if end > self.pos {
                    let out = self.log.entries(
                        self.partition,
                        self.pos,
                        (self.pos + max_records as u64).min(end),
                    );
                    self.pos += out.len() as u64;
                    return Ok(out);
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Ok(Vec::new());
                }
            }
        })
    }

    fn position(&self) -> Offset {
        self.pos
    }
}
