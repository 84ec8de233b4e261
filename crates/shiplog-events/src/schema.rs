//! The v1 JSON Schemas (draft 2020-12), rendered from the validation tables.
//!
//! `schemas/v1/*.json` in the repository are exactly [`v1_schemas`] (a test fails when they
//! differ; run it with `SHIPLOG_BLESS=1` to rewrite them). Layout:
//!
//! - `envelope.json`: the envelope, `data` only required to be an object;
//! - `<kind>.json`: `allOf` the envelope, `kind` fixed, and the kind's `data` fields;
//! - `event.json`: any event: the envelope plus, by `kind`, the matching kind schema.
//!
//! All `$id`s live under [`SCHEMA_BASE`] and refer to each other by relative name, so a
//! validator resolves them from the local files (no network).
//!
//! Known difference, documented in the schema: `maxLength` counts characters, while shiplog
//! limits the envelope keys to [`MAX_KEY_LEN`] UTF-8 *bytes*; the two agree on ASCII keys.
//! `decision` events are refused from collectors (`Origin::Collector`), which a schema cannot
//! express.
use crate::validate::{data_fields, FieldSpec, FieldType, MAX_COUNT};
use crate::{Kind, MAX_KEY_LEN};
use serde_json::{json, Map, Value};

/// Base URI of the v1 schemas' `$id`s.
pub const SCHEMA_BASE: &str = "https://shiplog.dev/schemas/v1/";

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Shape of an RFC 3339 date-time, as accepted by [`crate::is_rfc3339`] (which also checks
/// the calendar and the leap-second rule, like the `date-time` format).
pub const RFC3339_PATTERN: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$";

/// Envelope keys (`id`, `source`, `project`, `env`, `commit`, `branch`, `deployment_id`)
/// hold no ASCII control character (U+0000 to U+001F, U+007F), as
/// [`crate::key_control_char`] checks.
pub const KEY_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F]*$";

/// Every v1 schema as `(file name, schema)`: `envelope.json`, `event.json`, then one per kind.
pub fn v1_schemas() -> Vec<(String, Value)> {
    let mut out = vec![
        ("envelope.json".to_string(), envelope_schema()),
        ("event.json".to_string(), event_schema()),
    ];
    for kind in Kind::ALL {
        out.push((format!("{kind}.json"), kind_schema(kind)));
    }
    out
}

/// The schema of one kind (`build.json`, …).
pub fn kind_schema(kind: Kind) -> Value {
    let (props, required) = object_fields(data_fields(kind));
    let origin = if kind == Kind::Decision {
        " Written by shiplog only: collectors may not send it."
    } else {
        ""
    };
    json!({
        "$schema": DRAFT,
        "$id": format!("{SCHEMA_BASE}{kind}.json"),
        "title": format!("shiplog {kind} event (v1)"),
        "description": format!("A `{kind}` event: the envelope plus the `{kind}` data fields. Unknown fields are allowed and kept.{origin}"),
        "allOf": [{ "$ref": "envelope.json" }],
        "properties": {
            "kind": { "const": kind.as_str() },
            "data": {
                "type": "object",
                "required": required,
                "properties": props,
                "additionalProperties": true
            }
        }
    })
}

/// The envelope schema (`envelope.json`).
pub fn envelope_schema() -> Value {
    let key_comment = format!(
        "shiplog limits this string to {MAX_KEY_LEN} UTF-8 bytes; maxLength counts characters, so the two agree on ASCII. The pattern refuses ASCII control characters (U+0000 to U+001F, U+007F)."
    );
    let required_key = |doc: &str| {
        json!({
            "description": doc,
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_LEN,
            "pattern": KEY_PATTERN,
            "$comment": key_comment,
        })
    };
    let optional_key = |doc: &str| {
        json!({
            "description": doc,
            "type": ["string", "null"],
            "maxLength": MAX_KEY_LEN,
            "pattern": KEY_PATTERN,
            "$comment": key_comment,
        })
    };
    let time = |doc: &str| {
        json!({
            "description": doc,
            "type": ["string", "null"],
            "format": "date-time",
            "pattern": RFC3339_PATTERN,
            "$comment": "shiplog also refuses a time whose offset takes it outside the years 0000-9999 in UTC.",
        })
    };
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    json!({
        "$schema": DRAFT,
        "$id": format!("{SCHEMA_BASE}envelope.json"),
        "title": "shiplog event envelope (v1)",
        "description": "The envelope every shiplog event shares. `data` holds the kind's fields (see <kind>.json). Unknown fields are allowed and kept.",
        "type": "object",
        "required": ["id", "kind", "source", "project", "data"],
        "properties": {
            "id": required_key("Chosen by the collector, unique per source; (source, id) is the dedup key."),
            "kind": {
                "description": "The event kind. `decision` is written by shiplog only.",
                "enum": kinds,
            },
            "source": required_key("The collector, e.g. `vite-plugin`, `ci/github`, `shiplog-migrate`."),
            "time": time("Event time (RFC 3339); the receive time is used when absent."),
            "received_at": time("Set by the server when the event is accepted."),
            "project": required_key("Project, e.g. `web-app`."),
            "env": optional_key("Environment, e.g. `production`, `preview`."),
            "commit": optional_key("Git commit SHA."),
            "branch": optional_key("Git branch."),
            "deployment_id": optional_key("The deployment this event belongs to."),
            "data": {
                "description": "Kind-specific fields.",
                "type": "object"
            }
        },
        "additionalProperties": true
    })
}

/// The schema of any event (`event.json`): the envelope, then the kind's schema by `kind`.
pub fn event_schema() -> Value {
    let by_kind: Vec<Value> = Kind::ALL
        .iter()
        .map(|k| {
            json!({
                "if": { "properties": { "kind": { "const": k.as_str() } }, "required": ["kind"] },
                "then": { "$ref": format!("{k}.json") }
            })
        })
        .collect();
    json!({
        "$schema": DRAFT,
        "$id": format!("{SCHEMA_BASE}event.json"),
        "title": "shiplog event (v1)",
        "description": "Any shiplog v1 event: the envelope, and the data fields of its kind.",
        "$ref": "envelope.json",
        "allOf": by_kind
    })
}

fn object_fields(fields: &[FieldSpec]) -> (Map<String, Value>, Vec<&'static str>) {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in fields {
        props.insert(f.name.to_string(), field_schema(f));
        if f.required {
            required.push(f.name);
        }
    }
    (props, required)
}

fn field_schema(f: &FieldSpec) -> Value {
    // Optional fields may be null (treated as absent); required ones may not.
    let types = |t: &[&str]| -> Value {
        let mut v: Vec<Value> = t.iter().map(|s| json!(s)).collect();
        if !f.required {
            v.push(json!("null"));
        }
        if v.len() == 1 {
            v.pop().unwrap_or_default()
        } else {
            Value::Array(v)
        }
    };
    let mut s = Map::new();
    s.insert("description".into(), json!(f.doc));
    match f.ty {
        FieldType::Str => {
            s.insert("type".into(), types(&["string"]));
        }
        FieldType::Bool => {
            s.insert("type".into(), types(&["boolean"]));
        }
        FieldType::Number => {
            s.insert("type".into(), types(&["number"]));
        }
        FieldType::Count | FieldType::StrOrCount => {
            // Not `"type": ["integer", "null"]`: jsonschema 0.30 does not count `12.0` as an
            // integer inside a type array (it does for `"type": "integer"`, as the spec says).
            let count = json!({ "type": "integer", "minimum": 0, "maximum": MAX_COUNT });
            let mut any_of = Vec::new();
            if f.ty == FieldType::StrOrCount {
                any_of.push(json!({ "type": "string" }));
            }
            if f.required && any_of.is_empty() {
                if let Value::Object(count) = count {
                    s.extend(count);
                }
            } else {
                any_of.push(count);
                if !f.required {
                    any_of.push(json!({ "type": "null" }));
                }
                s.insert("anyOf".into(), Value::Array(any_of));
            }
        }
        FieldType::Enum(values) => {
            let mut v: Vec<Value> = values.iter().map(|s| json!(s)).collect();
            if !f.required {
                v.push(Value::Null);
            }
            s.insert("enum".into(), Value::Array(v));
        }
        FieldType::Object => {
            s.insert("type".into(), types(&["object"]));
        }
        FieldType::Struct(fields) => {
            let (props, required) = object_fields(fields);
            s.insert("type".into(), types(&["object"]));
            if !required.is_empty() {
                s.insert("required".into(), json!(required));
            }
            s.insert("properties".into(), Value::Object(props));
        }
        FieldType::Array(fields) => {
            let (props, required) = object_fields(fields);
            s.insert("type".into(), types(&["array"]));
            s.insert(
                "items".into(),
                json!({ "type": "object", "required": required, "properties": props }),
            );
        }
    }
    Value::Object(s)
}
