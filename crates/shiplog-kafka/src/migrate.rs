//! `shiplog migrate-log --to kafka`: copies the embedded file log of a (stopped) data dir
//! into the Kafka topic of `[log]` (brokers, topic, `[log.kafka]`), record for record (same
//! key, same value), then verifies the count: the topic's end offsets must have grown by
//! exactly the number of records copied (so nothing else may produce meanwhile: stop the
//! ingest nodes). The file log is left untouched.
//!
//! Records the file log cannot give (damaged bytes, segment files deleted: the ranges its
//! reader skips) cannot be copied. Each such range is named as it is met, everything intact
//! is copied, and the command then exits 1 saying what was not copied, unless
//! `--accept-loss` says the loss is known and accepted (exit 0, the ranges still named).
//!
//! A copy interrupted half-way can be run again: the events already copied reach Kafka
//! twice, and the Kafka projection drops them by `(source, id)` within
//! `server.dedup_window`.

use crate::config::Config;
use crate::datadir::DataDirLock;
use anyhow::{bail, Context, Result};
use shiplog_log::{Log, LogRecord, SkippedRange};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The Kafka topic of `[log]`.
    Kafka,
}

pub fn migrate_log(config: &Config, to: Target, accept_loss: bool) -> Result<ExitCode> {
    let Target::Kafka = to;
    let data_dir = &config.server.data_dir;
    if !crate::datadir::log_dir(data_dir).exists() {
        bail!(
            "{} holds no embedded log: nothing to migrate",
            data_dir.display()
        );
    }
    let kc = config
        .log
        .kafka_config()
        .context("migrate-log --to kafka reads the Kafka settings of [log]")?;
    let _lock = DataDirLock::acquire(data_dir, "shiplog migrate-log")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let file = crate::serve::open_file_log(config)?;
        let (brokers, topic) = (kc.brokers.clone(), kc.topic.clone());
        let kafka = tokio::task::spawn_blocking(move || shiplog_log::KafkaLog::open(kc))
            .await?
            .with_context(|| format!("cannot open Kafka topic {topic} at {brokers}"))?;
        let before: u64 = kafka
            .partitions()
            .iter()
            .map(|&p| kafka.end_offset(p))
            .sum();
        let started = Instant::now();
        let mut copied = 0u64;
        let mut lost: Vec<SkippedRange> = Vec::new();
        for part in file.partitions() {
            let end = file.end_offset(part);
            let mut reader = file.reader(part, 0).map_err(|e| {
                anyhow::anyhow!("reading partition {part} of the file log from offset 0: {e}")
            })?;
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
                    let n = r.end - r.first;
                    eprintln!(
                        "shiplog migrate-log: NOT COPIED offsets {}..={} ({n} record{}) of \
                         partition {part}: {} ({})",
                        r.first,
                        r.end - 1,
                        if n == 1 { "" } else { "s" },
                        r.reason,
                        r.location
                    );
                    lost.push(r);
                }
                if at >= end {
                    break;
                }
                if batch.is_empty() && reader.position() == at {
                    bail!(
                        "reading the file log stalled at offset {at} of {end} (run `shiplog log \
                         verify`); {copied} records were copied"
                    );
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
                kafka.append(records).await.context(
                    "appending to Kafka (run migrate-log again to resume; copies are deduplicated)",
                )?;
                copied += n;
                eprintln!("shiplog migrate-log: {copied}/{end} records copied");
            }
        }
        // The watermarks of the topic, read again from the brokers.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after: u64 = kafka
            .partitions()
            .iter()
            .map(|&p| kafka.end_offset(p))
            .sum();
        kafka.close().await?;
        file.close().await?;
        if after.saturating_sub(before) != copied {
            bail!(
                "verification failed: copied {copied} records but the topic grew by {} \
                 (did something else produce meanwhile?)",
                after.saturating_sub(before)
            );
        }
        eprintln!(
            "shiplog migrate-log: {copied} records copied to Kafka and verified (the topic grew \
             by {copied}) in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        if lost.is_empty() {
            return anyhow::Ok(ExitCode::SUCCESS);
        }
        let missing: u64 = lost.iter().map(|r| r.end - r.first).sum();
        let ranges = lost
            .iter()
            .map(|r| format!("{}..={}", r.first, r.end - 1))
            .collect::<Vec<_>>()
            .join(", ");
        if accept_loss {
            eprintln!(
                "shiplog migrate-log: {missing} records in {} range(s) of the file log were not \
                 copied (offsets {ranges}): damaged or deleted, loss accepted with --accept-loss",
                lost.len()
            );
            return anyhow::Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "shiplog migrate-log: NOT COMPLETE: {missing} records in {} range(s) of the file log \
             were not copied (offsets {ranges}): the log is damaged or segment files were \
             deleted there (`shiplog log verify` names them). Every other record was copied and \
             verified. To copy those records, restore the segment files from a backup (shiplog \
             stopped) and run migrate-log again (records copied twice are dropped by the Kafka \
             projection's dedup within server.dedup_window). A run with --accept-loss copies \
             the same and exits 0",
            lost.len()
        );
        anyhow::Ok(ExitCode::from(1))
    })
}
