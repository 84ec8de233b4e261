//! Migrate-log: copies an embedded file log (of a stopped data dir) into a Kafka topic,
//! record for record (same key, same value), then verifies the count: the topic's end
//! offsets must have grown by exactly the number of records copied (so nothing else may
//! produce meanwhile: stop the ingest nodes). The file log is left untouched.
//!
//! Records the file log cannot give (damaged bytes, segment files deleted: the ranges its
//! reader skips) cannot be copied. Each such range is reported as it is met
//! ([`MigrateProgress::NotCopied`]), everything intact is copied, and the report lists what
//! was not ([`MigrateReport::lost`]); the caller decides whether that is acceptable.
//! Offsets below the file log's start, removed by its retention (`[log.retention]`), are
//! not read at all: they are named apart ([`MigrateReport::removed`]), not as lost.
//!
//! A copy interrupted half-way can be run again: the events already copied reach Kafka
//! twice, and the Kafka projection drops them by `(source, id)` within its dedup window.

use crate::{Error, KafkaLog};
use shiplog_log::{Log, LogRecord, Offset, Partition, SkippedRange};
use std::time::{Duration, Instant};

/// What [`copy_log`] reports as it goes.
#[derive(Debug)]
pub enum MigrateProgress<'a> {
    /// `copied` records of the `end` the partition holds are in Kafka.
    Copied { copied: u64, end: u64 },
    /// A range of the file log that cannot be read (damaged, or segment files deleted).
    NotCopied(&'a SkippedRange),
}

/// What [`copy_log`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// Records copied and verified (the topic grew by exactly this).
    pub copied: u64,
    /// Ranges of the file log that could not be copied, in offset order.
    pub lost: Vec<SkippedRange>,
    /// Per partition, the offsets below the file log's start (`0..start`): removed by its
    /// retention before the copy, so not copied (and not lost: they were meant to go).
    pub removed: Vec<(Partition, std::ops::Range<Offset>)>,
    pub elapsed: Duration,
}

impl MigrateReport {
    /// Records in [`Self::lost`].
    pub fn lost_records(&self) -> u64 {
        self.lost.iter().map(|r| r.end - r.first).sum()
    }
}

/// Copies every record of `file` below its end offsets at the start into `kafka`, then
/// checks that the topic grew by exactly the number copied.
pub async fn copy_log(
    file: &dyn Log,
    kafka: &KafkaLog,
    progress: &mut (dyn FnMut(MigrateProgress<'_>) + Send),
) -> Result<MigrateReport, Error> {
    let topic_end = |k: &KafkaLog| -> u64 { k.partitions().iter().map(|&p| k.end_offset(p)).sum() };
    let before = topic_end(kafka);
    let started = Instant::now();
    let mut report = MigrateReport::default();
    for part in file.partitions() {
        let end = file.end_offset(part);
        let start = file.start_offset(part);
        if start > 0 {
            report.removed.push((part, 0..start));
        }
        let mut reader = file.reader(part, start)?;
        loop {
            let at = reader.position();
            let batch = match at < end {
                true => {
                    reader
                        .next_batch(5_000, 16 << 20, Duration::from_millis(500))
                        .await?
                }
                false => Vec::new(),
            };
            for mut r in reader.take_skipped().into_iter().filter(|r| r.first < end) {
                r.end = r.end.min(end);
                progress(MigrateProgress::NotCopied(&r));
                report.lost.push(r);
            }
            if at >= end {
                break;
            }
            if batch.is_empty() && reader.position() == at {
                return Err(Error::Stalled {
                    at,
                    end,
                    copied: report.copied,
                });
            }
            let records: Vec<LogRecord> = batch
                .into_iter()
                .filter(|e| e.offset < end)
                .map(|e| LogRecord {
                    key: e.key,
                    value: e.value,
                })
                .collect();
            let n = records.len() as u64;
            kafka.append(records).await?;
            report.copied += n;
            progress(MigrateProgress::Copied {
                copied: report.copied,
                end,
            });
        }
    }
    // The watermarks of the topic, read again from the brokers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let grew = topic_end(kafka).saturating_sub(before);
    if grew != report.copied {
        return Err(Error::CountMismatch {
            copied: report.copied,
            grew,
        });
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
