//! The one cheap look at a stored record, and the one dedup key.
//!
//! Several readers of the log need a few envelope fields of every record and nothing else:
//! the ingest dedup index rebuilt at start (`source`, `id`, `received_at`), the projection's
//! dedup on the Kafka backend (`source`, `id`), the rules engine choosing which records to
//! decode (`kind`, `project`, `env`, a check's `data.name`). [`RecordPeek::of`] reads them,
//! borrowed from the record's bytes: no tree is built, nothing is validated, every other
//! field (the whole `data` object but its `name`) is skipped by the lexer.
//!
//! A peek never fails on a field it does not need: a field of another type than a string is
//! read as absent, so each reader decides what an absent field means to it. It fails only
//! when the record is not a JSON object.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// The fingerprint of `(source, id)`, the dedup key of PRODUCT.md.
///
/// 64 bits, and not 128: the ingest dedup index holds every key of a 7-day window in memory
/// (tens of millions of keys under the server's RSS budget of 300 MB, docs/benchmarks.md),
/// 8 bytes per key in its sorted runs; 16 would double that. The cost is a collision chance
/// of N / 2^64 per new event with N keys held (about 5e-13 at 10 million keys): such an
/// event would be answered as a duplicate. The projection's dedup (Kafka backend) holds the
/// same keys, so both layers agree on what a duplicate is.
pub type DedupKey = u64;

/// The dedup key of `(source, id)`: xxh3-64 of `source`, a 0xff byte (which UTF-8 text never
/// holds, so `("a", "bc")` and `("ab", "c")` differ) and `id`.
///
/// This recipe is on disk: the ingest dedup snapshot (`index.snap`, version 1) and the
/// projection's `_dedup/*.keys` files hold its values. Changing it needs a new version of
/// both formats.
pub fn dedup_key(source: &str, id: &str) -> DedupKey {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(source.as_bytes());
    h.update(&[0xff]);
    h.update(id.as_bytes());
    h.digest()
}

/// The envelope fields of a stored record, borrowed from its bytes (see the module doc).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordPeek<'a> {
    pub id: Option<Cow<'a, str>>,
    pub source: Option<Cow<'a, str>>,
    pub kind: Option<Cow<'a, str>>,
    pub project: Option<Cow<'a, str>>,
    pub env: Option<Cow<'a, str>>,
    /// As stored (RFC 3339); [`crate::parse_time_micros`] reads it.
    pub received_at: Option<Cow<'a, str>>,
    /// `data.name` (a check's name).
    pub data_name: Option<Cow<'a, str>>,
}

impl<'a> RecordPeek<'a> {
    /// Peeks at a record's JSON; `Err` when it is not a JSON object.
    pub fn of(bytes: &'a [u8]) -> Result<RecordPeek<'a>, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The record's dedup key, when it has both a `source` and an `id`.
    pub fn dedup_key(&self) -> Option<DedupKey> {
        Some(dedup_key(self.source.as_deref()?, self.id.as_deref()?))
    }

    /// `received_at` in µs since the epoch, when present and readable.
    pub fn received_micros(&self) -> Option<i64> {
        crate::parse_time_micros(self.received_at.as_deref()?)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RecordPeek<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = RecordPeek<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut peek = RecordPeek::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "id" => &mut peek.id,
                "source" => &mut peek.source,
                "kind" => &mut peek.kind,
                "project" => &mut peek.project,
                "env" => &mut peek.env,
                "received_at" => &mut peek.received_at,
                "data" => {
                    peek.data_name = map.next_value::<DataName>()?.0;
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value::<Lenient>()?.0;
        }
        Ok(peek)
    }
}

/// A string, borrowed when it has no escapes; any other JSON value reads as `None`.
struct Lenient<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor { field: None })
            .map(Lenient)
    }
}

/// `data.name`: the `name` string of an object, `None` for any other value.
struct DataName<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for DataName<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor {
            field: Some("name"),
        })
        .map(DataName)
    }
}

/// Reads any JSON value: without `field`, a string as itself; with it, an object's string
/// member of that name. Everything else is skipped and reads as `None`.
struct LenientVisitor {
    field: Option<&'static str>,
}

impl LenientVisitor {
    fn string<'de>(&self, s: Cow<'de, str>) -> Option<Cow<'de, str>> {
        self.field.is_none().then_some(s)
    }
}

impl<'de> Visitor<'de> for LenientVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(self.string(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(self.string(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(self.string(Cow::Owned(s)))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if self.field == Some(key.as_ref()) {
                found = map.next_value::<Lenient>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_the_envelope_and_a_checks_name() {
        let rec = br#"{"received_at":"2026-11-21T10:00:00.5Z","id":"e-1","kind":"check",
            "source":"ci","project":"web","env":"production","time":"2026-11-21T09:00:00Z",
            "data":{"value":[1,{"name":"inner"}],"name":"error_rate","passed":true}}"#;
        let p = RecordPeek::of(rec).unwrap();
        assert_eq!(p.id.as_deref(), Some("e-1"));
        assert_eq!(p.source.as_deref(), Some("ci"));
        assert_eq!(p.kind.as_deref(), Some("check"));
        assert_eq!(p.project.as_deref(), Some("web"));
        assert_eq!(p.env.as_deref(), Some("production"));
        assert_eq!(p.data_name.as_deref(), Some("error_rate"));
        assert_eq!(p.dedup_key(), Some(dedup_key("ci", "e-1")));
        assert_eq!(p.received_micros(), Some(1_795_255_200_500_000));
        // Borrowed, not copied, when the text has no escapes.
        assert!(matches!(p.id, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn fields_of_another_type_read_as_absent() {
        let p =
            RecordPeek::of(br#"{"id":7,"source":"s\u0041","env":null,"data":[1],"kind":{"a":1}}"#)
                .unwrap();
        assert_eq!(p.id, None);
        assert_eq!(p.source.as_deref(), Some("sA"));
        assert_eq!(p.dedup_key(), None);
        assert_eq!((p.env, p.kind, p.data_name), (None, None, None));
        let p = RecordPeek::of(br#"{"data":"x","project":"p"}"#).unwrap();
        assert_eq!((p.data_name, p.project.as_deref()), (None, Some("p")));
        assert!(RecordPeek::of(b"[1,2]").is_err());
        assert!(RecordPeek::of(b"{\"id\":").is_err());
    }

    #[test]
    fn the_key_separates_source_from_id() {
        assert_ne!(dedup_key("a", "bc"), dedup_key("ab", "c"));
        // The recipe is on disk (index.snap, _dedup/*.keys): it must not change.
        assert_eq!(dedup_key("vite-plugin", "b-1"), 0x15ca_6ba2_a94b_09e1);
    }
}
