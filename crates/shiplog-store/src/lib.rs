//! The shiplog store: the projection log → Arrow → Parquet, and DuckDB on top of it.
//!
//! Owns `<data_dir>/parquet/`: [`ParquetProjector`] (and the [`run_projection`] task that
//! drives it for `serve`), [`compact`]ion and retention, [`replay`], and the read-only,
//! confined [`QueryEngine`].
//!
//! Guarantees:
//! - **exactly once**: every log offset below the committed offset of its partition is in
//!   exactly one visible Parquet row (or was counted as undecodable and skipped), whatever
//!   moment the process is killed at;
//! - an event is queryable at most `flush_interval` (default 1 s) + one log read wait after
//!   the log made it readable;
//! - the Parquet files are plain zstd Parquet that any reader opens; their columns are
//!   documented below and fixed per [`SCHEMA_VERSION`];
//! - projections are disposable: [`replay`] rebuilds them row for row from the log.
//!
//! # On-disk layout
//!
//! ```text
//! <data_dir>/parquet/
//!   _lock                      flock held by the one process projecting (serve, replay, compact)
//!   _state.json                the single commit point (below)
//!   _dedup/<micros>.keys       projected (source, id) keys, when dedup is on (Kafka backend)
//!   _partitions/p<P>/parquet/  one partition's own projection, same layout (Kafka processors
//!                              in a consumer group; the views read these too)
//!   <kind>/_schema/schema-v2.parquet          zero-row file: the kind's columns (so the view exists)
//!   <kind>/date=YYYY-MM-DD/p<P>-<first>-<last>.parquet
//! ```
//!
//! `<kind>` is `build`, `deploy`, `migration`, `api_cost`, `check`, `decision`; the date is
//! the UTC date of the event time; `P` the log partition; `first`/`last` the first and last
//! log offsets (12 digits, zero padded) of the rows in the file (rows are in offset order;
//! the offsets between them belong to other kinds or dates). Files being written end in
//! `.tmp` and are never matched by the views' `*.parquet` globs.
//!
//! # Commit protocol (two-phase, after Arroyo's Parquet sink)
//!
//! A flush (1) writes each file under `<final>.tmp` and fsyncs it; (2) atomically replaces
//! `_state.json` (write `_state.json.tmp`, fsync, rename, fsync dir) with the new next
//! offset per partition and the list of renames `tmp → final`: this is the commit; (3)
//! renames the files into place and fsyncs their directories. Compaction commits the same
//! way, with the list of files it replaces (`deletes`). Opening a projector recovers: it
//! completes the deletes and renames listed in the state (roll forward), deletes every other
//! `*.tmp` (uncommitted writes), and resumes reading the log at the state's offsets. A kill
//! before (2) loses only temp files (the events are re-read); a kill after (2) is completed
//! on restart. So no row is ever duplicated or lost.
//!
//! # Accounting for every offset
//!
//! `_state.json` also counts, per partition, the offsets committed without a row (dead
//! letters, damaged log records the reader skipped, dropped duplicates, gaps in the log's
//! offsets, rows deleted by retention), so rows on disk + that count = the committed
//! offset. [`ParquetProjector::coverage`] checks it from the files' footers (the projection
//! does at start; a Parquet file deleted by hand shows as missing events),
//! [`ParquetProjector::audit_offsets`] finds the exact offsets and [`describe_gaps`] names
//! their kinds, days and files from the log. Log records lost to damage in the log
//! ([`shiplog_log::LogReader::take_skipped`]) are committed as dead-letter lines with
//! `offset`, `end`, `count`, `error` and `location`.
//!
//! # Columns
//!
//! Every kind's files (and DuckDB view) start with the envelope:
//!
//! | column | type | |
//! |---|---|---|
//! | `time` | TIMESTAMP µs UTC | event time: `time` when sent, else `received_at` |
//! | `received_at` | TIMESTAMP µs UTC | when shiplog accepted the event |
//! | `id`, `source`, `project` | VARCHAR | |
//! | `env`, `commit`, `branch`, `deployment_id` | VARCHAR | null when absent |
//!
//! then the kind's `data` fields, named as in PRODUCT.md:
//!
//! | kind (view) | columns |
//! |---|---|
//! | `build` (`builds`) | `tool`, `tool_version`, `mode` VARCHAR; `success` BOOLEAN; `duration_ms` BIGINT; `phases` STRUCT(name VARCHAR, duration_ms BIGINT)[]; `modules_transformed`, `modules_total`, `bundle_bytes`, `gzip_bytes` BIGINT; `chunks` STRUCT(name VARCHAR, bytes BIGINT, gzip_bytes BIGINT)[]; `assets` STRUCT(name VARCHAR, bytes BIGINT)[]; `ci` STRUCT(provider VARCHAR, run_id VARCHAR, url VARCHAR) |
//! | `deploy` (`deploys`) | `status`, `url`, `provider`, `previous_deployment_id` VARCHAR; `duration_ms` BIGINT; `triggered_by` VARCHAR |
//! | `migration` (`migrations`) | `tool`, `database`, `version`, `name`, `status` VARCHAR; `duration_ms` BIGINT; `error`, `checksum` VARCHAR |
//! | `api_cost` (`api_costs`) | `provider`, `model` VARCHAR; `input_tokens`, `output_tokens`, `cached_tokens`, `cache_write_tokens`, `reasoning_tokens`, `requests` BIGINT; `cost_usd` DOUBLE; `cost_source`, `price_version`, `feature` VARCHAR; `usage` VARCHAR (the JSON object as sent) |
//! | `check` (`checks`) | `name` VARCHAR; `passed` BOOLEAN; `value` DOUBLE; `unit` VARCHAR; `errors`, `requests` BIGINT |
//! | `decision` (`decisions`) | `rule`, `verdict`, `metric` VARCHAR; `value`, `baseline`, `threshold` DOUBLE; `samples` BIGINT; `action`, `outcome` VARCHAR; `dry_run` BOOLEAN |
//!
//! `api_costs` columns are also derived (see [`pricing`] and docs/costs.md): token columns
//! the client did not send come from `usage` (OpenAI Chat Completions, OpenAI Responses or
//! Anthropic Messages, normalised so that `input_tokens` counts all input tokens and
//! `cached_tokens`/`cache_write_tokens` are the parts of it read from / written to the
//! prompt cache, `reasoning_tokens` part of `output_tokens`); `requests` is 1 when absent;
//! without `cost_usd` the row is priced with the [`PriceTable`] entry effective at the event
//! time (`price_version` = `<table> <effective_from> <provider>/<model>`); `cost_source` is
//! `client` (sent: it always wins), `priced` or `unpriced` (no price or no token count:
//! `cost_usd` null). A sent `cost_source`, or a sent `price_version` replaced by the
//! priced one, is kept in `extra`. [`replay`] re-prices with the configured table.
//!
//! Every kind's columns end with `extra` VARCHAR (JSON object of what has no column: unknown envelope fields
//! by name, and unknown `data` fields under `"data"`, e.g. `{"subject":"x","data":{"foo":1}}`;
//! null when there is none), `_partition` INTEGER and `_offset` BIGINT (the event's log
//! position). The `events` view unions the envelope columns of every kind with `kind`
//! VARCHAR first: `kind, time, received_at, id, source, project, env, commit, branch,
//! deployment_id, extra, _partition, _offset`.
//!
//! Type rules: a value of the column's type is stored as is; otherwise it is converted when
//! meaningful (a number or boolean into a VARCHAR column becomes its JSON text, an object
//! or array its compact JSON; a fractional number into BIGINT is rounded; a numeric string
//! into a number column is parsed) else stored as null — and whenever the stored value is
//! not an exact image of what was sent (also: unknown fields inside `phases`, `chunks`,
//! `assets` items or `ci`), the original JSON value is kept in `extra` too. Nothing sent is
//! lost. Log entries that are not JSON objects with a known `kind` are skipped and counted
//! (`shiplog_projection_events_skipped_total`). With [`ProjectorConfig::dedup_window`] set
//! (the Kafka backend), an event whose `(source, id)` was already projected within the
//! window is dropped and counted (`shiplog_projection_duplicates_dropped_total`); the
//! index of projected keys lives in `_dedup/` and is committed with each flush. Events always have `received_at` (ingest
//! sets it), an event with neither `time` nor `received_at` is dated 1970-01-01.

mod check;
pub mod compare;
mod convert;
mod dedup;
mod fsutil;
pub mod pricing;
mod projector;
mod query;
mod run;
mod schema;
mod state;

pub use check::{
    describe_gaps, CoverageReport, GapReport, MissingEvents, OffsetAudit, PartitionCoverage,
};
pub use pricing::{CostSource, PriceTable};
pub use projector::{
    apply_retention, compact, ensure_group_layout, file_name, group_partition_dir, parquet_dir,
    parse_file_name, projection_layout, CompactionReport, CrashPoint, FlushReport, KeptBelow,
    ParquetProjector, ProjectionLayout, ProjectorConfig, RetentionReport, SCHEMA_VERSION,
};
pub use query::{
    QueryEngine, QueryError, QueryResult, DEFAULT_MEMORY_MB as DEFAULT_QUERY_MEMORY_MB,
};
pub use run::{
    replay, run_projection, ProjectedOffsets, ProjectionHandle, ProjectionMetrics, ReplayProgress,
    ReplayReport,
};
pub use schema::{kind_schema, ENVELOPE_COLUMNS};

use std::path::PathBuf;

/// Errors of the projection, compaction and replay.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or projector) holds the directory's lock.
    #[error("the projection directory {0} is in use by another shiplog process")]
    Locked(PathBuf),
    /// `_state.json` cannot be read, or the files disagree with it.
    #[error("projection state {path} is damaged: {reason}")]
    CorruptState { path: PathBuf, reason: String },
    /// A configuration value is invalid (e.g. the compaction cron expression).
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Log(#[from] shiplog_log::LogError),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("duckdb: {0}")]
    DuckDb(#[from] duckdb::Error),
    /// A test-injected failure (see [`CrashPoint`]).
    #[error("injected crash at {0:?}")]
    InjectedCrash(CrashPoint),
}

impl StoreError {
    /// Whether retrying later (after reopening) may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Config(_))
    }
}
