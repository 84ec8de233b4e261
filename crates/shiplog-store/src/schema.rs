//! The columns of each kind's Parquet files (and DuckDB view). See the crate docs for the
//! table; this module is the single definition the projector, compaction and the query
//! engine share.

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use shiplog_events::Kind;
use std::sync::{Arc, OnceLock};

/// How a `data` field (or an envelope string) is typed in Arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColType {
    Utf8,
    Int64,
    Float64,
    Bool,
    /// `list<struct<name utf8, duration_ms int64>>`
    Phases,
    /// `list<struct<name utf8, bytes int64, gzip_bytes int64>>`
    Chunks,
    /// `list<struct<name utf8, bytes int64>>`
    Assets,
    /// `struct<provider utf8, run_id utf8, url utf8>`
    Ci,
    /// Any JSON value, stored as its compact JSON text (utf8).
    Json,
}

/// Envelope string columns, in column order, after `time` and `received_at`.
pub(crate) const ENVELOPE_STRINGS: [&str; 7] = shiplog_events::ENVELOPE_KEYS;

/// The `data` fields of one kind that get their own column, in column order.
pub(crate) fn data_fields(kind: Kind) -> &'static [(&'static str, ColType)] {
    use ColType::*;
    match kind {
        Kind::Build => &[
            ("tool", Utf8),
            ("tool_version", Utf8),
            ("mode", Utf8),
            ("success", Bool),
            ("duration_ms", Int64),
            ("phases", Phases),
            ("modules_transformed", Int64),
            ("modules_total", Int64),
            ("bundle_bytes", Int64),
            ("gzip_bytes", Int64),
            ("chunks", Chunks),
            ("assets", Assets),
            ("ci", Ci),
        ],
        Kind::Deploy => &[
            ("status", Utf8),
            ("url", Utf8),
            ("provider", Utf8),
            ("previous_deployment_id", Utf8),
            ("duration_ms", Int64),
            ("triggered_by", Utf8),
        ],
        Kind::Migration => &[
            ("tool", Utf8),
            ("database", Utf8),
            ("version", Utf8),
            ("name", Utf8),
            ("status", Utf8),
            ("duration_ms", Int64),
            ("error", Utf8),
            ("checksum", Utf8),
        ],
        Kind::ApiCost => &[
            ("provider", Utf8),
            ("model", Utf8),
            ("input_tokens", Int64),
            ("output_tokens", Int64),
            ("cached_tokens", Int64),
            ("cache_write_tokens", Int64),
            ("reasoning_tokens", Int64),
            ("requests", Int64),
            ("cost_usd", Float64),
            ("cost_source", Utf8),
            ("price_version", Utf8),
            ("feature", Utf8),
            ("usage", Json),
        ],
        Kind::Check => &[
            ("name", Utf8),
            ("passed", Bool),
            ("value", Float64),
            ("unit", Utf8),
            ("errors", Int64),
            ("requests", Int64),
        ],
        Kind::Decision => &[
            ("rule", Utf8),
            ("verdict", Utf8),
            ("metric", Utf8),
            ("value", Float64),
            ("baseline", Float64),
            ("threshold", Float64),
            ("samples", Int64),
            ("action", Utf8),
            ("outcome", Utf8),
            ("dry_run", Bool),
        ],
    }
}

pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub(crate) fn phase_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("duration_ms", DataType::Int64, true),
    ])
}

pub(crate) fn chunk_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("bytes", DataType::Int64, true),
        Field::new("gzip_bytes", DataType::Int64, true),
    ])
}

pub(crate) fn asset_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("bytes", DataType::Int64, true),
    ])
}

pub(crate) fn ci_fields() -> Fields {
    Fields::from(vec![
        Field::new("provider", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
    ])
}

pub(crate) fn list_item(fields: Fields) -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(fields), true))
}

fn col_data_type(t: ColType) -> DataType {
    match t {
        ColType::Utf8 | ColType::Json => DataType::Utf8,
        ColType::Int64 => DataType::Int64,
        ColType::Float64 => DataType::Float64,
        ColType::Bool => DataType::Boolean,
        ColType::Phases => DataType::List(list_item(phase_fields())),
        ColType::Chunks => DataType::List(list_item(chunk_fields())),
        ColType::Assets => DataType::List(list_item(asset_fields())),
        ColType::Ci => DataType::Struct(ci_fields()),
    }
}

fn build_schema(kind: Kind) -> SchemaRef {
    let mut fields = vec![
        Field::new("time", timestamp_type(), false),
        Field::new("received_at", timestamp_type(), true),
    ];
    for name in ENVELOPE_STRINGS {
        fields.push(Field::new(name, DataType::Utf8, true));
    }
    for (name, t) in data_fields(kind) {
        fields.push(Field::new(*name, col_data_type(*t), true));
    }
    fields.push(Field::new("extra", DataType::Utf8, true));
    fields.push(Field::new("_partition", DataType::Int32, false));
    fields.push(Field::new("_offset", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The Arrow schema of one kind's Parquet files.
pub fn kind_schema(kind: Kind) -> SchemaRef {
    static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| Kind::ALL.iter().map(|k| build_schema(*k)).collect());
    let i = Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("kind in ALL");
    all[i].clone()
}

/// The envelope columns common to every kind (the `events` view), in order; `kind` is
/// added by the view.
pub const ENVELOPE_COLUMNS: [&str; 12] = [
    "time",
    "received_at",
    "id",
    "source",
    "project",
    "env",
    "commit",
    "branch",
    "deployment_id",
    "extra",
    "_partition",
    "_offset",
];
