//! Generators shared by the property tests.
#![allow(dead_code)]
use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};
use shiplog_events::{data_fields, FieldType, Kind, ENVELOPE_FIELDS, MAX_COUNT};

pub fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_./:@-]{0,24}",
        "\\PC{0,12}",
        Just("\u{0}\"\\/\n\t".to_string()),
    ]
}

pub fn any_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
        (-1e6f64..1e6).prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any_number(),
        any_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A key that is not one of `known`.
pub fn unknown_key(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    any_string().prop_filter("unknown field", move |k| !known.contains(&k.as_str()))
}

pub fn count() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..=MAX_COUNT).prop_map(Value::from),
        (0u32..100_000).prop_map(|n| json!(n as f64)), // integral floats are counts too
        Just(json!(0)),
    ]
}

pub fn value_of(ty: FieldType) -> BoxedStrategy<Value> {
    match ty {
        FieldType::Str => any_string().prop_map(Value::String).boxed(),
        FieldType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        FieldType::Number => any_number().boxed(),
        FieldType::Count => count().boxed(),
        FieldType::StrOrCount => prop_oneof![count(), any_string().prop_map(Value::String)].boxed(),
        FieldType::Enum(values) => prop::sample::select(values)
            .prop_map(|s| Value::String(s.to_string()))
            .boxed(),
        FieldType::Object => prop::collection::vec((any_string(), any_json()), 0..4)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
            .boxed(),
        FieldType::Struct(fields) => object_of(fields).prop_map(Value::Object).boxed(),
        FieldType::Array(fields) => prop::collection::vec(object_of(fields), 0..4)
            .prop_map(|items| Value::Array(items.into_iter().map(Value::Object).collect()))
            .boxed(),
    }
}

/// A valid object for these field specs: required fields, some optional ones (or null), and
/// unknown fields.
pub fn object_of(
    fields: &'static [shiplog_events::FieldSpec],
) -> BoxedStrategy<Map<String, Value>> {
    let known: Vec<&'static str> = fields.iter().map(|f| f.name).collect();
    let known: &'static [&'static str] = Box::leak(known.into_boxed_slice());
    let per_field: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .iter()
        .map(|f| {
            let name = f.name.to_string();
            let v = value_of(f.ty);
            if f.required {
                v.prop_map(move |v| Some((name.clone(), v))).boxed()
            } else {
                prop_oneof![
                    2 => Just(None),
                    1 => Just(Some((name.clone(), Value::Null))),
                    3 => v.prop_map(move |v| Some((name.clone(), v))),
                ]
                .boxed()
            }
        })
        .collect();
    (
        per_field,
        prop::collection::vec((unknown_key(known), any_json()), 0..3),
    )
        .prop_map(|(known, unknown)| {
            let mut m = Map::new();
            for (k, v) in known.into_iter().flatten() {
                m.insert(k, v);
            }
            for (k, v) in unknown {
                m.entry(k).or_insert(v);
            }
            m
        })
        .boxed()
}

/// An RFC 3339 time within 0001-9998 (so no offset leaves four-digit years), any offset,
/// nanosecond fractions, and either letter case.
pub fn rfc3339() -> impl Strategy<Value = String> {
    (
        31_622_400i64..253_370_764_800,
        prop::option::of(0u32..1_000_000_000),
        -1439i32..=1439,
        any::<bool>(),
    )
        .prop_map(|(secs, nanos, offset_min, lower)| {
            let t = chrono::DateTime::from_timestamp(secs, nanos.unwrap_or(0)).unwrap();
            let off = chrono::FixedOffset::east_opt(offset_min * 60).unwrap();
            let fmt = match nanos {
                None => "%Y-%m-%dT%H:%M:%S%:z",
                Some(_) => "%Y-%m-%dT%H:%M:%S%.f%:z",
            };
            let s = t.with_timezone(&off).format(fmt).to_string();
            if lower {
                s.replace('T', "t")
            } else {
                s
            }
        })
}

pub fn key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9_./:@-]{1,40}", "\\PC{1,16}"]
}

pub fn optional<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop::option::of(s).boxed()
}

/// A valid event of any kind, as a collector (or shiplog, for `decision`) would send it.
pub fn valid_event() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(Kind::ALL.to_vec()),
        key(),
        key(),
        key(),
        optional(rfc3339()),
        optional(rfc3339()),
        [
            optional(key()),
            optional(key()),
            optional(key()),
            optional(key()),
        ],
        prop::collection::vec((unknown_key(ENVELOPE_FIELDS), any_json()), 0..3),
    )
        .prop_flat_map(|(kind, id, source, project, time, received, keys, extra)| {
            object_of(data_fields(kind)).prop_map(move |data| {
                let mut ev = Map::new();
                ev.insert("id".into(), json!(id));
                ev.insert("kind".into(), json!(kind.as_str()));
                ev.insert("source".into(), json!(source));
                ev.insert("project".into(), json!(project));
                if let Some(t) = &time {
                    ev.insert("time".into(), json!(t));
                }
                if let Some(t) = &received {
                    ev.insert("received_at".into(), json!(t));
                }
                for (name, v) in ["env", "commit", "branch", "deployment_id"]
                    .iter()
                    .zip(&keys)
                {
                    if let Some(v) = v {
                        ev.insert(name.to_string(), json!(v));
                    }
                }
                for (k, v) in &extra {
                    ev.entry(k.clone()).or_insert(v.clone());
                }
                ev.insert("data".into(), Value::Object(data));
                Value::Object(ev)
            })
        })
}

/// Counts equal as numbers (`12.0` is stored as `12`); everything else equal as JSON.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() != y.is_f64() => {
            x.as_f64() == y.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Every JSON pointer in `v` (including `""`).
pub fn collect_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                collect_pointers(v, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect_pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Proptest cases: `PROPTEST_CASES` when set (for long runs), else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
