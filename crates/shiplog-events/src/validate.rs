//! Per-kind validation of `data` (PRODUCT.md, "Event kinds (v1)").
//!
//! The rules are tables of [`FieldSpec`]s, one per kind ([`data_fields`]); the JSON Schemas in
//! `schemas/v1/` are rendered from the same tables (see [`crate::schema`]), so the two cannot
//! drift apart. Rules:
//!
//! - a required field must be present and not `null`;
//! - an optional field may be absent or `null`; otherwise it is type-checked;
//! - counts (durations, bytes, tokens, …) are integers in `0..=`[`MAX_COUNT`]; an integral
//!   float such as `12.0` is an integer (as in JSON Schema) and is rewritten to `12` when the
//!   event is built, so readers can use `Value::as_u64`;
//! - unknown fields, at any depth, are accepted and kept.
//!
//! Validation allocates nothing unless it fails.
use crate::{FieldError, Kind};
use serde_json::{Map, Number, Value};
use std::fmt::{self, Write as _};

/// Largest accepted count (`2^53 - 1`, JavaScript's `Number.MAX_SAFE_INTEGER`): every
/// collector can send it exactly, and it fits a signed 64-bit column.
pub const MAX_COUNT: u64 = (1 << 53) - 1;

/// The type of one `data` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A JSON string.
    Str,
    /// `true` or `false`.
    Bool,
    /// An integer in `0..=MAX_COUNT` (durations in ms, bytes, tokens, counts).
    Count,
    /// Any JSON number (JSON cannot carry NaN or infinities).
    Number,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    /// Any JSON object, kept as sent (e.g. a provider's `usage` object).
    Object,
    /// An object with these known fields (others allowed).
    Struct(&'static [FieldSpec]),
    /// An array whose items are objects with these known fields (others allowed).
    Array(&'static [FieldSpec]),
    /// A string, or an integer in `0..=MAX_COUNT` (e.g. a CI `run_id`).
    StrOrCount,
}

/// One known field of a kind's `data` (or of an object nested in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
    /// One line for the JSON Schema's `description`.
    pub doc: &'static str,
}

const fn req(name: &'static str, ty: FieldType, doc: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        required: true,
        doc,
    }
}

const fn opt(name: &'static str, ty: FieldType, doc: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        required: false,
        doc,
    }
}

use FieldType::{Array, Bool, Count, Enum, Number as Num, Object, Str, StrOrCount, Struct};

/// `deploy.status` values.
pub const DEPLOY_STATUSES: &[&str] = &[
    "started",
    "succeeded",
    "failed",
    "rolled_back",
    "promoted",
    "cancelled",
];
/// `deploy.triggered_by` values.
pub const TRIGGERED_BY: &[&str] = &["person", "ci", "rule"];
/// `migration.status` values.
pub const MIGRATION_STATUSES: &[&str] = &["applied", "failed", "rolled_back", "skipped"];
/// `decision.verdict` values.
pub const VERDICTS: &[&str] = &["healthy", "degraded", "inconclusive", "alert"];

const PHASE: &[FieldSpec] = &[
    req(
        "name",
        Str,
        "Phase name, e.g. `transform`, `render-chunks`.",
    ),
    req("duration_ms", Count, "Phase duration in milliseconds."),
];
const CHUNK: &[FieldSpec] = &[
    req("name", Str, "Output file name of the chunk."),
    req("bytes", Count, "Size in bytes."),
    opt("gzip_bytes", Count, "Gzipped size in bytes."),
];
const ASSET: &[FieldSpec] = &[
    req("name", Str, "Output file name of the asset."),
    req("bytes", Count, "Size in bytes."),
];
const CI: &[FieldSpec] = &[
    opt("provider", Str, "CI provider, e.g. `github`."),
    opt("run_id", StrOrCount, "The CI run (string or integer)."),
    opt("url", Str, "Link to the CI run."),
];

const BUILD: &[FieldSpec] = &[
    opt("tool", Str, "Build tool, e.g. `vite`."),
    opt("tool_version", Str, "Build tool version."),
    opt("mode", Str, "Build mode, e.g. `production`."),
    req("success", Bool, "Whether the build succeeded."),
    req(
        "duration_ms",
        Count,
        "Wall-clock build duration in milliseconds.",
    ),
    opt("phases", Array(PHASE), "Build phases with their durations."),
    opt("modules_transformed", Count, "Modules transformed."),
    opt("modules_total", Count, "Modules in the module graph."),
    opt("bundle_bytes", Count, "Total output size in bytes."),
    opt("gzip_bytes", Count, "Total gzipped output size in bytes."),
    opt("chunks", Array(CHUNK), "Output chunks."),
    opt("assets", Array(ASSET), "Output assets."),
    opt("ci", Struct(CI), "The CI run the build belongs to."),
];

const DEPLOY: &[FieldSpec] = &[
    req("status", Enum(DEPLOY_STATUSES), "Deploy status."),
    opt("url", Str, "URL of the deployment."),
    opt("provider", Str, "Hosting provider, e.g. `vercel`."),
    opt(
        "previous_deployment_id",
        Str,
        "The deployment this one replaces.",
    ),
    opt("duration_ms", Count, "Deploy duration in milliseconds."),
    opt(
        "triggered_by",
        Enum(TRIGGERED_BY),
        "Who triggered the deploy.",
    ),
];

const MIGRATION: &[FieldSpec] = &[
    opt("tool", Str, "Migration tool, e.g. `alembic`, `supabase`."),
    opt("database", Str, "Target database."),
    opt("version", Str, "Migration version / revision."),
    opt("name", Str, "Migration name."),
    req("status", Enum(MIGRATION_STATUSES), "Migration outcome."),
    opt("duration_ms", Count, "Duration in milliseconds."),
    opt("error", Str, "Error text on failure."),
    opt("checksum", Str, "Checksum of the migration script."),
];

const API_COST: &[FieldSpec] = &[
    req(
        "provider",
        Str,
        "Model provider, e.g. `openai`, `anthropic`.",
    ),
    req("model", Str, "Model name as sent to the provider."),
    opt("input_tokens", Count, "Input (prompt) tokens."),
    opt("output_tokens", Count, "Output (completion) tokens."),
    opt("cached_tokens", Count, "Cached input tokens."),
    opt(
        "cache_write_tokens",
        Count,
        "Input tokens written to the prompt cache (Anthropic bills them above the input rate).",
    ),
    opt(
        "reasoning_tokens",
        Count,
        "Reasoning tokens, part of the output tokens.",
    ),
    opt("requests", Count, "Number of requests this record covers."),
    opt(
        "cost_usd",
        Num,
        "Cost in US dollars; priced from the price table when absent.",
    ),
    opt("price_version", Str, "Price table version used."),
    opt("feature", Str, "Product feature that made the calls."),
    opt(
        "usage",
        Object,
        "The provider's usage object, as returned by its API.",
    ),
];

const CHECK: &[FieldSpec] = &[
    req(
        "name",
        Str,
        "Check name: `smoke`, `health`, `error_rate`, `latency_p95`, …",
    ),
    opt("passed", Bool, "Whether the check passed."),
    opt("value", Num, "Measured value."),
    opt("unit", Str, "Unit of `value`, e.g. `ms`, `ratio`."),
    opt(
        "errors",
        Count,
        "Failed requests in the interval the check covers (with `requests`: the counts behind an error rate, which rollback rules test directly).",
    ),
    opt(
        "requests",
        Count,
        "Requests in the interval the check covers.",
    ),
    opt(
        "source",
        Str,
        "Where shiplog read the sample for a rollback rule: `prometheus` or `http_json` (absent on pushed checks).",
    ),
    opt(
        "query",
        Str,
        "The query (PromQL) or request (URL) the sample was read with, as sent.",
    ),
    opt(
        "error",
        Str,
        "Why a source gave no sample (unreachable, an error answer, no series); such a check has no value.",
    ),
];

const DECISION: &[FieldSpec] = &[
    req("rule", Str, "Name of the rule that decided."),
    req("verdict", Enum(VERDICTS), "The rule's verdict."),
    opt("metric", Str, "Metric judged, e.g. `error_rate`."),
    opt("value", Num, "Observed value."),
    opt("baseline", Num, "Baseline value (previous deployment)."),
    opt("threshold", Num, "Threshold the value was compared to."),
    opt("samples", Count, "Number of samples behind `value`."),
    opt("action", Str, "Action taken or planned, e.g. `rollback`."),
    opt("outcome", Str, "Outcome of the action."),
    opt("dry_run", Bool, "True when the action was only simulated."),
];

/// The known `data` fields of a kind, in contract order.
pub fn data_fields(kind: Kind) -> &'static [FieldSpec] {
    match kind {
        Kind::Build => BUILD,
        Kind::Deploy => DEPLOY,
        Kind::Migration => MIGRATION,
        Kind::ApiCost => API_COST,
        Kind::Check => CHECK,
        Kind::Decision => DECISION,
    }
}

/// Validates a kind's `data` object against the v1 contract.
///
/// On failure the error's `field` is a JSON pointer into the whole event, e.g.
/// `/data/duration_ms` or `/data/phases/2/duration_ms`. The first problem found is reported.
pub fn validate_data(kind: Kind, data: &Map<String, Value>) -> Result<(), FieldError> {
    check_object(data_fields(kind), data, &Path::Data).map(|_| ())
}

/// Validates, then rewrites integral floats in count fields (`12.0`) as integers.
pub(crate) fn validate_and_normalize(
    kind: Kind,
    data: &mut Map<String, Value>,
) -> Result<(), FieldError> {
    let fields = data_fields(kind);
    if check_object(fields, data, &Path::Data)? {
        normalize_object(fields, data);
    }
    Ok(())
}

/// A JSON pointer built on the stack; rendered only when an error is reported.
enum Path<'a> {
    Data,
    Key(&'a Path<'a>, &'static str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Data => f.write_str("/data"),
            // Known field names contain neither `~` nor `/`: no escaping needed.
            Path::Key(parent, key) => write!(f, "{parent}/{key}"),
            Path::Index(parent, i) => write!(f, "{parent}/{i}"),
        }
    }
}

#[cold]
fn fail(at: &Path<'_>, error: impl Into<String>) -> FieldError {
    let mut field = String::new();
    let _ = write!(field, "{at}");
    FieldError::new(field, error)
}

#[cold]
fn wrong_type(at: &Path<'_>, expected: &str, got: &Value) -> FieldError {
    fail(at, format!("must be {expected}, got {}", type_name(got)))
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a non-integer number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks the known fields of one object. Returns whether a count was written as a float.
///
/// One pass over the object's entries, matching names against the (short) spec table: no
/// hashing. Type errors are reported in the object's order, then missing required fields in
/// the table's order.
fn check_object(
    fields: &'static [FieldSpec],
    obj: &Map<String, Value>,
    at: &Path<'_>,
) -> Result<bool, FieldError> {
    let mut floats = false;
    let mut present: u64 = 0; // bit i: fields[i] present and not null (tables have <= 64)
    for (key, v) in obj {
        let Some(i) = fields.iter().position(|f| f.name == key) else {
            continue;
        };
        if v.is_null() {
            continue;
        }
        present |= 1 << i;
        floats |= check_value(fields[i].ty, v, &Path::Key(at, fields[i].name))?;
    }
    for (i, spec) in fields.iter().enumerate() {
        if spec.required && present & (1 << i) == 0 {
            return Err(fail(&Path::Key(at, spec.name), "is required"));
        }
    }
    Ok(floats)
}

fn check_value(ty: FieldType, v: &Value, at: &Path<'_>) -> Result<bool, FieldError> {
    match (ty, v) {
        (FieldType::Str, Value::String(_)) => Ok(false),
        (FieldType::Str, _) => Err(wrong_type(at, "a string", v)),
        (FieldType::Bool, Value::Bool(_)) => Ok(false),
        (FieldType::Bool, _) => Err(wrong_type(at, "a boolean (true or false)", v)),
        (FieldType::Number, Value::Number(_)) => Ok(false),
        (FieldType::Number, _) => Err(wrong_type(at, "a number", v)),
        (FieldType::Count | FieldType::StrOrCount, Value::Number(n)) => {
            check_count(n).map_err(|e| fail(at, e))
        }
        (FieldType::StrOrCount, Value::String(_)) => Ok(false),
        (FieldType::StrOrCount, _) => Err(wrong_type(at, "a string or a non-negative integer", v)),
        (FieldType::Count, _) => Err(wrong_type(at, "a non-negative integer", v)),
        (FieldType::Enum(allowed), Value::String(s)) if allowed.contains(&s.as_str()) => Ok(false),
        (FieldType::Enum(allowed), _) => Err(fail(
            at,
            format!("must be one of {}, got {v}", allowed.join(", ")),
        )),
        (FieldType::Object, Value::Object(_)) => Ok(false),
        (FieldType::Object, _) => Err(wrong_type(at, "an object", v)),
        (FieldType::Struct(fields), Value::Object(obj)) => check_object(fields, obj, at),
        (FieldType::Struct(_), _) => Err(wrong_type(at, "an object", v)),
        (FieldType::Array(fields), Value::Array(items)) => {
            let mut floats = false;
            for (i, item) in items.iter().enumerate() {
                let here = Path::Index(at, i);
                match item {
                    Value::Object(obj) => floats |= check_object(fields, obj, &here)?,
                    _ => return Err(wrong_type(&here, "an object", item)),
                }
            }
            Ok(floats)
        }
        (FieldType::Array(_), _) => Err(wrong_type(at, "an array of objects", v)),
    }
}

/// Ok(true) for an integral float (to be normalized), Ok(false) for an integer.
fn check_count(n: &Number) -> Result<bool, String> {
    if let Some(u) = n.as_u64() {
        return if u <= MAX_COUNT {
            Ok(false)
        } else {
            Err(format!("must be at most {MAX_COUNT}, got {u}"))
        };
    }
    if n.is_i64() {
        return Err(format!("must not be negative, got {n}"));
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() != 0.0 || !f.is_finite() {
        Err(format!("must be a non-negative integer, got {n}"))
    } else if f < 0.0 {
        Err(format!("must not be negative, got {n}"))
    } else if f > MAX_COUNT as f64 {
        Err(format!("must be at most {MAX_COUNT}, got {n}"))
    } else {
        Ok(true)
    }
}

/// Rewrites integral floats of count fields as integers (after a successful check).
fn normalize_object(fields: &'static [FieldSpec], obj: &mut Map<String, Value>) {
    for spec in fields {
        let Some(v) = obj.get_mut(spec.name) else {
            continue;
        };
        match (spec.ty, v) {
            (FieldType::Count | FieldType::StrOrCount, Value::Number(n)) => {
                if let (None, Some(f)) = (n.as_u64(), n.as_f64()) {
                    // Checked: integral, finite, within 0..=MAX_COUNT (-0.0 becomes 0).
                    *n = Number::from(f.abs() as u64);
                }
            }
            (FieldType::Struct(inner), Value::Object(o)) => normalize_object(inner, o),
            (FieldType::Array(inner), Value::Array(items)) => {
                for item in items {
                    if let Value::Object(o) = item {
                        normalize_object(inner, o);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(kind: Kind, data: Value) -> Result<(), FieldError> {
        validate_data(kind, data.as_object().unwrap())
    }

    fn field(kind: Kind, data: Value) -> String {
        check(kind, data).unwrap_err().field
    }

    #[test]
    fn build_rules() {
        assert!(check(Kind::Build, json!({"success": true, "duration_ms": 1200})).is_ok());
        assert_eq!(
            field(Kind::Build, json!({"duration_ms": 1})),
            "/data/success"
        );
        assert_eq!(
            field(Kind::Build, json!({"success": true})),
            "/data/duration_ms"
        );
        for bad in [
            json!(1.5),
            json!(-1),
            json!("12"),
            json!(-1.0),
            json!(1e300),
            json!(true),
        ] {
            let e = check(Kind::Build, json!({"success": true, "duration_ms": bad})).unwrap_err();
            assert_eq!(e.field, "/data/duration_ms", "{bad}: {e}");
        }
        assert!(check(Kind::Build, json!({"success": true, "duration_ms": 12.0})).is_ok());
        assert!(check(
            Kind::Build,
            json!({"success": true, "duration_ms": MAX_COUNT})
        )
        .is_ok());
        assert_eq!(
            field(
                Kind::Build,
                json!({"success": true, "duration_ms": MAX_COUNT + 1})
            ),
            "/data/duration_ms"
        );
        let phases = json!({"success": true, "duration_ms": 3,
            "phases": [{"name": "a", "duration_ms": 1}, {"name": "b", "duration_ms": 1},
                       {"name": "c", "duration_ms": "x"}]});
        assert_eq!(field(Kind::Build, phases), "/data/phases/2/duration_ms");
        let chunk = json!({"success": true, "duration_ms": 3, "chunks": [{"name": "a"}]});
        assert_eq!(field(Kind::Build, chunk), "/data/chunks/0/bytes");
        let item = json!({"success": true, "duration_ms": 3, "assets": [null]});
        assert_eq!(field(Kind::Build, item), "/data/assets/0");
        let ci = json!({"success": true, "duration_ms": 3, "ci": {"run_id": -4}});
        assert_eq!(field(Kind::Build, ci), "/data/ci/run_id");
        let ci = json!({"success": true, "duration_ms": 3, "ci": {"run_id": 42, "x": 1}});
        assert!(check(Kind::Build, ci).is_ok());
        let nulls = json!({"success": true, "duration_ms": 3, "tool": null, "ci": null});
        assert!(check(Kind::Build, nulls).is_ok());
    }

    #[test]
    fn enums_and_other_kinds() {
        assert!(check(Kind::Deploy, json!({"status": "promoted"})).is_ok());
        assert_eq!(
            field(Kind::Deploy, json!({"status": "done"})),
            "/data/status"
        );
        assert_eq!(
            field(
                Kind::Deploy,
                json!({"status": "failed", "triggered_by": "bot"})
            ),
            "/data/triggered_by"
        );
        assert_eq!(field(Kind::Migration, json!({})), "/data/status");
        assert_eq!(
            field(Kind::ApiCost, json!({"provider": "openai"})),
            "/data/model"
        );
        assert_eq!(
            field(
                Kind::ApiCost,
                json!({"provider": "openai", "model": "m", "usage": []})
            ),
            "/data/usage"
        );
        assert_eq!(
            field(
                Kind::ApiCost,
                json!({"provider": "openai", "model": "m", "cost_usd": "0.1"})
            ),
            "/data/cost_usd"
        );
        assert_eq!(field(Kind::Check, json!({"passed": true})), "/data/name");
        assert_eq!(
            field(Kind::Decision, json!({"rule": "r", "verdict": "ok"})),
            "/data/verdict"
        );
    }

    #[test]
    fn tables_fit_the_presence_mask() {
        fn walk(fields: &[FieldSpec]) {
            assert!(fields.len() <= 64);
            for f in fields {
                if let FieldType::Struct(inner) | FieldType::Array(inner) = f.ty {
                    walk(inner);
                }
            }
        }
        for kind in Kind::ALL {
            walk(data_fields(kind));
        }
    }

    #[test]
    fn normalizes_integral_floats() {
        let mut data = json!({"success": true, "duration_ms": 12.0,
            "phases": [{"name": "a", "duration_ms": -0.0}], "ci": {"run_id": 7.0}, "x": 1.0});
        let obj = data.as_object_mut().unwrap();
        validate_and_normalize(Kind::Build, obj).unwrap();
        assert_eq!(
            data,
            json!({"success": true, "duration_ms": 12,
            "phases": [{"name": "a", "duration_ms": 0}], "ci": {"run_id": 7}, "x": 1.0})
        );
    }
}
