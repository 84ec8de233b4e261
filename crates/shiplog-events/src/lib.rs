//! The shiplog event model.
//!
//! Owns the public contract of PRODUCT.md: the envelope (`id`, `kind`, `source`, `time`,
//! `project`, `env`, `commit`, `branch`, `deployment_id`, `data`), the kinds and their
//! `data` fields ([`data_fields`]), validation with JSON-pointer field paths
//! ([`Event::from_json`], [`validate_data`]), the CloudEvents mapping ([`from_cloudevent`],
//! [`from_cloudevents_batch`]) and the v1 JSON Schemas ([`schema::v1_schemas`], checked in
//! as `schemas/v1/`), and what every reader of stored records shares: the one cheap look at
//! a record ([`RecordPeek`]), the one dedup key ([`dedup_key`]) and the one reader of stored
//! times ([`parse_time_micros`]).
//!
//! Guarantees:
//! - field names are those of PRODUCT.md and `schemas/v1/`; the schemas are rendered from
//!   the same rule tables as the Rust validation, and a test proves that both give the same
//!   verdict, and name the same field, on every example in `schemas/examples/`;
//! - unknown fields (in the envelope and in `data`, at any depth) are preserved in value;
//! - every rejection names the offending field as a JSON pointer (`/data/duration_ms`);
//! - an accepted event survives the log codec unchanged ([`Event::to_json_bytes`] then
//!   [`Event::from_json_bytes`]). To make that exact, times are kept to the microsecond
//!   and counts sent as integral floats (`12.0`) are stored as integers (`12`).
//!
//! Depends on no other shiplog crate.

mod cloudevents;
mod kind;
mod peek;
pub mod raw;
pub mod schema;
mod time;
mod validate;

pub use cloudevents::{from_cloudevent, from_cloudevents_batch, CLOUDEVENTS_SPECVERSION};
pub use kind::Kind;
pub use peek::{dedup_key, DedupKey, RecordPeek};
pub use raw::{RawEvent, Stamp, ValidEvent};
pub use time::parse_time_micros;
pub use validate::{
    data_fields, validate_data, FieldSpec, FieldType, DEPLOY_STATUSES, MAX_COUNT,
    MIGRATION_STATUSES, TRIGGERED_BY, VERDICTS,
};

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A rejection of one event: which field (a JSON pointer into the event as sent) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {error}")]
pub struct FieldError {
    /// JSON pointer of the offending field, e.g. `/data/duration_ms`; `""` for the whole event.
    pub field: String,
    /// Human-readable reason.
    pub error: String,
}

impl FieldError {
    /// A rejection of `field` (a JSON pointer) because of `error`.
    pub fn new(field: impl Into<String>, error: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            error: error.into(),
        }
    }
}

/// One event, as stored in the log: the envelope of PRODUCT.md plus `received_at`,
/// the time the server accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub kind: Kind,
    pub source: String,
    /// Event time as sent by the collector (absent: use `received_at`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_rfc3339")]
    pub time: Option<DateTime<Utc>>,
    /// Set by the server when the event is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_rfc3339")]
    pub received_at: Option<DateTime<Utc>>,
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    pub data: Map<String, Value>,
    /// Unknown envelope fields, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Who is submitting an event: collectors may not write `decision` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A collector over HTTP (or a Kafka producer): `decision` is refused.
    Collector,
    /// shiplog itself (rules): every kind is allowed.
    Internal,
}

/// Envelope field names of PRODUCT.md (plus `received_at`, set by the server), in the order
/// they are serialized.
pub const ENVELOPE_FIELDS: &[&str] = &[
    "id",
    "kind",
    "source",
    "time",
    "received_at",
    "project",
    "env",
    "commit",
    "branch",
    "deployment_id",
    "data",
];

/// The envelope's string keys: `id`, `source` and the correlation keys (each at most
/// [`MAX_KEY_LEN`], no control characters), in the order of the Parquet columns.
pub const ENVELOPE_KEYS: [&str; 7] = [
    "id",
    "source",
    "project",
    "env",
    "commit",
    "branch",
    "deployment_id",
];

// `Event::from_json` destructures the envelope fields in this order.
const _: () = assert!(ENVELOPE_FIELDS.len() == 11);

/// Longest accepted string for `id`, `source`, `project` and the correlation keys.
pub const MAX_KEY_LEN: usize = 512;

impl Event {
    /// Validates a JSON value as an event of the public contract and builds the event.
    /// The first problem found is returned with its JSON pointer.
    ///
    /// Checked in order: the value is an object; `id`, `source`, `project` (non-empty strings
    /// of at most [`MAX_KEY_LEN`] bytes); `kind` (a plain kind name, see [`Kind::from_name`];
    /// `decision` only from [`Origin::Internal`]); `time`, `received_at` (RFC 3339, see
    /// [`is_rfc3339`]); `env`, `commit`, `branch`, `deployment_id` (strings of at most
    /// [`MAX_KEY_LEN`] bytes); `data` (an object, checked by [`validate_data`]). None of the
    /// seven key strings may hold an ASCII control character ([`key_control_char`]).
    /// `null` counts as absent for every field. Other fields go to `extra`.
    pub fn from_json(value: Value, origin: Origin) -> Result<Event, FieldError> {
        let Value::Object(obj) = value else {
            return Err(FieldError::new("", "an event must be a JSON object"));
        };
        // One pass: envelope fields into slots (indexed like ENVELOPE_FIELDS), the rest into
        // `extra` in the order sent (`Map::remove` would reorder it).
        let mut slots: [Option<Value>; 11] = Default::default();
        let mut extra = Map::new();
        for (k, v) in obj {
            match ENVELOPE_FIELDS.iter().position(|f| *f == k) {
                Some(i) => slots[i] = Some(v),
                None => {
                    extra.insert(k, v);
                }
            }
        }
        let [id, kind, source, time, received_at, project, env, commit, branch, deployment_id, data] =
            slots;
        let id = take_key(id, "id", true)?.unwrap_or_default();
        let source = take_key(source, "source", true)?.unwrap_or_default();
        let project = take_key(project, "project", true)?.unwrap_or_default();
        let kind = match kind {
            None | Some(Value::Null) => return Err(FieldError::new("/kind", "is required")),
            Some(Value::String(s)) => Kind::from_name(&s).ok_or_else(|| {
                FieldError::new(
                    "/kind",
                    format!(
                        "unknown kind {s:?}; expected one of build, deploy, migration, api_cost, check"
                    ),
                )
            })?,
            Some(_) => return Err(FieldError::new("/kind", "must be a string")),
        };
        if kind == Kind::Decision && origin == Origin::Collector {
            return Err(FieldError::new(
                "/kind",
                "decision events are written by shiplog only",
            ));
        }
        let time = take_time(time, "time")?;
        let received_at = take_time(received_at, "received_at")?;
        let env = take_key(env, "env", false)?;
        let commit = take_key(commit, "commit", false)?;
        let branch = take_key(branch, "branch", false)?;
        let deployment_id = take_key(deployment_id, "deployment_id", false)?;
        let mut data = match data {
            None | Some(Value::Null) => return Err(FieldError::new("/data", "is required")),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(FieldError::new("/data", "must be an object")),
        };
        validate::validate_and_normalize(kind, &mut data)?;
        Ok(Event {
            id,
            kind,
            source,
            time,
            received_at,
            project,
            env,
            commit,
            branch,
            deployment_id,
            data,
            extra,
        })
    }

    /// The time the event happened: `time` when sent, else `received_at`.
    pub fn event_time(&self) -> Option<DateTime<Utc>> {
        self.time.or(self.received_at)
    }

    /// The dedup key of `(source, id)` ([`dedup_key`]).
    pub fn dedup_key(&self) -> DedupKey {
        dedup_key(&self.source, &self.id)
    }

    /// The JSON stored in the log (compact). Times are written as by [`format_rfc3339`].
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an Event always serializes")
    }

    /// Reads an event back from the log. Events in the log were validated on the way in;
    /// this only decodes.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// `data.<field>` as a string, if present and a string.
    pub fn data_str(&self, field: &str) -> Option<&str> {
        self.data.get(field).and_then(Value::as_str)
    }
}

/// The first ASCII control character (U+0000 to U+001F, U+007F) of an envelope key, with
/// its byte offset. Keys end up in file names, command arguments (a NUL cannot be passed
/// at all) and log lines, so none may hold one. UTF-8 encodes every other character with
/// bytes of 0x20 or more other than 0x7F, so looking at bytes is exact.
pub fn key_control_char(s: &str) -> Option<(usize, char)> {
    s.bytes()
        .position(|b| b < 0x20 || b == 0x7f)
        .map(|i| (i, char::from(s.as_bytes()[i])))
}

fn take_key(
    value: Option<Value>,
    field: &'static str,
    required: bool,
) -> Result<Option<String>, FieldError> {
    match value {
        None | Some(Value::Null) if required => {
            Err(FieldError::new(format!("/{field}"), "is required"))
        }
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if required && s.is_empty() {
                Err(FieldError::new(format!("/{field}"), "must not be empty"))
            } else if s.len() > MAX_KEY_LEN {
                Err(FieldError::new(
                    format!("/{field}"),
                    format!("is longer than {MAX_KEY_LEN} bytes"),
                ))
            } else if let Some((at, c)) = key_control_char(&s) {
                Err(FieldError::new(
                    format!("/{field}"),
                    format!(
                        "must not contain control characters (U+0000 to U+001F, U+007F): \
                         U+{:04X} at byte {at}",
                        c as u32
                    ),
                ))
            } else {
                Ok(Some(s))
            }
        }
        Some(_) => Err(FieldError::new(format!("/{field}"), "must be a string")),
    }
}

fn take_time(
    value: Option<Value>,
    field: &'static str,
) -> Result<Option<DateTime<Utc>>, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_rfc3339(&s)
            .map(|t| Some(truncate_to_micros(t)))
            .map_err(|e| FieldError::new(format!("/{field}"), e)),
        Some(_) => Err(FieldError::new(
            format!("/{field}"),
            "must be an RFC 3339 timestamp string",
        )),
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-21T10:00:00Z`, with offset or fraction).
///
/// Accepts what [`is_rfc3339`] accepts (the JSON Schema `date-time` format), except a time
/// whose offset takes it outside the years 0000-9999 in UTC.
pub fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    if !is_rfc3339(s) {
        return Err(format!(
            "is not an RFC 3339 timestamp (like 2026-11-21T10:00:00Z): {s:?}"
        ));
    }
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("is not an RFC 3339 timestamp ({e}): {s:?}"))?;
    // An offset can carry 0000-01-01 or 9999-12-31 out of four-digit years in UTC, which
    // RFC 3339 cannot write back.
    if !(0..=9999).contains(&t.year()) {
        return Err(format!(
            "is out of range: in UTC it falls outside the years 0000-9999: {s:?}"
        ));
    }
    Ok(t)
}

/// Whether `s` is an RFC 3339 `date-time` (section 5.6), as JSON Schema's `date-time` format
/// defines it: `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)`, `T` and `Z` in either case, a
/// real calendar date, hours 00-23, minutes 00-59, offsets up to 23:59, and second 60 only
/// at 23:59 UTC (a leap second). A space instead of `T` is refused.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let d2 = |i: usize| -> Option<u32> {
        let (x, y) = (b[i], b[i + 1]);
        (x.is_ascii_digit() && y.is_ascii_digit())
            .then(|| u32::from(x - b'0') * 10 + u32::from(y - b'0'))
    };
    let (Some(y1), Some(y2), Some(month), Some(day)) = (d2(0), d2(2), d2(5), d2(8)) else {
        return false;
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return false;
    }
    let year = y1 * 100 + y2;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days {
        return false;
    }
    let (Some(hour), Some(minute), Some(second)) = (d2(11), d2(14), d2(17)) else {
        return false;
    };
    if b[13] != b':' || b[16] != b':' || hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    // Offset, in minutes east of UTC.
    let offset: i32 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (Some(oh), Some(om)) = (d2(i + 1), d2(i + 4)) else {
                return false;
            };
            if oh > 23 || om > 59 {
                return false;
            }
            let m = (oh * 60 + om) as i32;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return false,
    };
    if second == 60 {
        // A leap second happens at 23:59:60 UTC.
        let utc = ((hour * 60 + minute) as i32 - offset).rem_euclid(24 * 60);
        return utc == 23 * 60 + 59;
    }
    true
}

/// Drops sub-microsecond digits: the log and the Parquet files keep microseconds.
fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond();
    t.with_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

/// Formats a time the way shiplog stores it: RFC 3339, UTC, microseconds.
pub fn format_rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

mod opt_rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_rfc3339(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(None),
            // Decoding the log: accept whatever `format_rfc3339` wrote (including years
            // outside 0000-9999, which a time zone offset can produce at the edges).
            Some(s) => s
                .parse::<DateTime<Utc>>()
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}
