//! shiplog on Kafka: everything that speaks the Kafka protocol.
//!
//! - [`KafkaLog`] ([`log`]): the scale-out backend of the [`shiplog_log::Log`] trait
//!   (idempotent producer, acknowledged by all in-sync replicas before `append` resolves);
//! - [`group`]: processors sharing the topic's partitions in a consumer group, each
//!   partition projected by [`shiplog_store`] into its own directory (the store owns that
//!   layout);
//! - [`migrate`]: copying an embedded file log into a topic, verified by count.
//!
//! Guarantees: the projection's position comes from its Parquet state, never from Kafka's
//! committed offsets (those only serve lag monitoring), so a processor killed at any
//! moment resumes without a gap or a duplicate.

pub mod group;
pub mod log;
pub mod migrate;

pub use group::run_group_projection;
pub use log::{KafkaLog, KafkaLogConfig, DEFAULT_TOPIC};
pub use migrate::{copy_log, MigrateProgress, MigrateReport};

/// Errors of the Kafka crate beyond the log's own ([`shiplog_log::LogError`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// librdkafka refused: a client could not be created or subscribed.
    #[error("{what}: {source}")]
    Client {
        what: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Log(#[from] shiplog_log::LogError),
    #[error(transparent)]
    Store(#[from] shiplog_store::StoreError),
    /// Migrate-log: the file log gave nothing more before its end (run `shiplog log verify`).
    #[error("reading the file log stalled at offset {at} of {end}; {copied} records were copied")]
    Stalled { at: u64, end: u64, copied: u64 },
    /// Migrate-log: the topic did not grow by the number of records copied.
    #[error(
        "verification failed: copied {copied} records but the topic grew by {grew} (did \
         something else produce meanwhile?)"
    )]
    CountMismatch { copied: u64, grew: u64 },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
