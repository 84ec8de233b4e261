//! `shiplog migrate-log --to kafka`: copies the embedded file log of a (stopped) data dir
//! into the Kafka topic of `[log]` (brokers, topic, `[log.kafka]`), record for record (same
//! key, same value), then verifies the count: the topic's end offsets must have grown by
//! exactly the number of records copied (so nothing else may produce meanwhile: stop the
//! ingest nodes). The file log is left untouched.
//!
//! A copy interrupted half-way can be run again: the events already copied reach Kafka
//! twice, and the Kafka projection drops them by `(source, id)` within
//! `server.dedup_window`.

use crate::config::Config;
use crate::datadir::DataDirLock;
use anyhow::{bail, Context, Result};
use shiplog_log::{Log, LogRecord};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The Kafka topic of `[log]`.
    Kafka,
}

pub fn migrate_log(config: &Config, to: Target) -> Result<ExitCode> {
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
        for part in file.partitions() {
            let end = file.end_offset(part);
            let mut reader = file.reader(part, 0).map_err(|e| {
                anyhow::anyhow!("reading partition {part} of the file log from offset 0: {e}")
            })?;
            while reader.position() < end {
                let batch = reader
                    .next_batch(5_000, 16 << 20, Duration::from_millis(500))
                    .await?;
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
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
