//! `shiplog migrate-log --to kafka`: the command around [`shiplog_kafka::copy_log`] (which
//! copies and verifies): it takes the data dir's lock, opens the file log and the Kafka
//! topic of `[log]` (brokers, topic, `[log.kafka]`), prints the progress, and exits 1 when
//! records could not be copied (damaged or deleted in the file log, each named), unless
//! `--accept-loss` says the loss is known and accepted (exit 0, the ranges still named).
//! A copy interrupted half-way can be run again: the Kafka projection drops the events
//! copied twice by `(source, id)` within `server.dedup_window`.

use crate::config::Config;
use crate::datadir::DataDirLock;
use anyhow::{bail, Context, Result};
use shiplog_kafka::MigrateProgress;
use shiplog_log::Log;
use std::process::ExitCode;

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
        let kafka = tokio::task::spawn_blocking(move || shiplog_kafka::KafkaLog::open(kc))
            .await?
            .with_context(|| format!("cannot open Kafka topic {topic} at {brokers}"))?;
        let mut progress = |p: MigrateProgress<'_>| match p {
            MigrateProgress::Copied { copied, end } => {
                eprintln!("shiplog migrate-log: {copied}/{end} records copied")
            }
            MigrateProgress::NotCopied(r) => {
                let n = r.end - r.first;
                eprintln!(
                    "shiplog migrate-log: NOT COPIED offsets {}..={} ({n} record{}) of \
                     partition {}: {} ({})",
                    r.first,
                    r.end - 1,
                    if n == 1 { "" } else { "s" },
                    r.partition,
                    r.reason,
                    r.location
                );
            }
        };
        let report = shiplog_kafka::copy_log(&file, &kafka, &mut progress)
            .await
            .context(
                "copying the file log to Kafka (run migrate-log again to resume; copies are \
                 deduplicated)",
            );
        kafka.close().await?;
        file.close().await?;
        let report = report?;
        let copied = report.copied;
        eprintln!(
            "shiplog migrate-log: {copied} records copied to Kafka and verified (the topic grew \
             by {copied}) in {:.1}s",
            report.elapsed.as_secs_f64()
        );
        for (partition, removed) in &report.removed {
            eprintln!(
                "shiplog migrate-log: offsets {}..{} of partition {partition} were not copied: \
                 the file log's retention ([log.retention]) removed them before; their events \
                 stay in the Parquet projection, but a replay from Kafka cannot rebuild them",
                removed.start, removed.end
            );
        }
        let lost = &report.lost;
        if lost.is_empty() {
            return anyhow::Ok(ExitCode::SUCCESS);
        }
        let missing = report.lost_records();
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
