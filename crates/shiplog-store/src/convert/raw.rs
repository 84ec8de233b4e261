//! Reading a log entry's JSON lazily: fields and array elements as borrowed `&RawValue`
//! slices (no `serde_json::Value` tree), typed readers that say whether the value was an
//! exact image of its column's type, and the RFC 3339 time parser of the hot path.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use shiplog_events::raw::Str;
use std::borrow::Cow;
use std::fmt;

pub(super) struct FieldsSeed<F>(F);

impl<'de, F: FnMut(Cow<'de, str>, &'de RawValue)> DeserializeSeed<'de> for FieldsSeed<F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(Cow<'de, str>, &'de RawValue)> Visitor<'de> for FieldsSeed<F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<Str<'de>>()? {
            let v: &'de RawValue = map.next_value()?;
            (self.0)(k.0, v);
        }
        Ok(())
    }
}

pub(super) struct ElementsSeed<F>(F);

impl<'de, F: FnMut(&'de RawValue)> Visitor<'de> for ElementsSeed<F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<&'de RawValue>()? {
            (self.0)(v);
        }
        Ok(())
    }
}

/// Calls `f` for each member of a JSON object; false when `json` is not an object.
pub(crate) fn for_each_field<'de>(
    json: &'de [u8],
    f: impl FnMut(Cow<'de, str>, &'de RawValue),
) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    FieldsSeed(f).deserialize(&mut de)?;
    de.end()
}

pub(super) fn for_each_element<'de>(json: &'de str, f: impl FnMut(&'de RawValue)) -> bool {
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_seq(ElementsSeed(f)).is_ok()
}

// ---------- scalar conversions from raw JSON text ----------

/// The string a raw value stands for; `exact` is false when it was not a JSON string.
pub(super) fn raw_str(raw: &RawValue) -> Option<(Cow<'_, str>, bool)> {
    let s = raw.get();
    match s.as_bytes()[0] {
        b'"' => {
            let inner = &s[1..s.len() - 1];
            if !inner.contains('\\') {
                Some((Cow::Borrowed(inner), true))
            } else {
                serde_json::from_str::<String>(s)
                    .ok()
                    .map(|v| (Cow::Owned(v), true))
            }
        }
        b'n' => None,
        // numbers, booleans, objects and arrays: their JSON text
        _ => Some((Cow::Borrowed(s), false)),
    }
}

/// Returns (value, exact).
pub(super) fn raw_i64(raw: &RawValue) -> (Option<i64>, bool) {
    let s = raw.get();
    if s == "null" {
        return (None, true);
    }
    if let Ok(v) = s.parse::<i64>() {
        return (Some(v), true);
    }
    let num = if s.starts_with('"') {
        s[1..s.len() - 1].trim().parse::<f64>().ok()
    } else {
        s.parse::<f64>().ok()
    };
    match num {
        Some(f) if f.is_finite() && f.abs() < 9.2e18 => {
            let r = f.round();
            (Some(r as i64), false)
        }
        _ => (None, false),
    }
}

pub(super) fn raw_f64(raw: &RawValue) -> (Option<f64>, bool) {
    let s = raw.get();
    if s == "null" {
        return (None, true);
    }
    if let Ok(v) = s.parse::<f64>() {
        // `1e400` parses to inf: keep the original too.
        return (Some(v), v.is_finite());
    }
    if s.starts_with('"') {
        if let Ok(v) = s[1..s.len() - 1].trim().parse::<f64>() {
            return (Some(v), false);
        }
    }
    (None, false)
}

pub(super) fn raw_bool(raw: &RawValue) -> (Option<bool>, bool) {
    match raw.get() {
        "true" => (Some(true), true),
        "false" => (Some(false), true),
        "null" => (None, true),
        "\"true\"" => (Some(true), false),
        "\"false\"" => (Some(false), false),
        _ => (None, false),
    }
}

// ---------- builders ----------
