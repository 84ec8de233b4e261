//! The fast ingest path: validate an event straight from its JSON text, without building a
//! `serde_json::Value` tree, and store the text as sent with `received_at` spliced in.
//!
//! [`RawEvent::parse`] is a streaming check driven by the same field tables as
//! [`crate::validate_data`]. It allocates nothing for a valid event (strings are borrowed
//! unless they hold escapes). It only ever *vouches* for an event: on any doubt it returns
//! `None` and the caller goes through [`crate::Event::from_json`], which gives the verdict and
//! the field pointer of a rejection. So a rejection always comes from one place.
//!
//! It vouches only when the text, stored as sent, means exactly what the canonical
//! serialization of [`crate::Event::from_json`]'s result would mean to every reader:
//! - no envelope or known `data` field appears twice (JSON leaves duplicates undefined);
//! - no `received_at` is sent (the server sets it);
//! - `time`, when sent, is `YYYY-MM-DDTHH:MM:SS[.1-6 digits]Z` (no offset, no
//!   sub-microsecond digits, no leap second): the instant needs no rewriting;
//! - no count is written as a float (`12.0` is rewritten to `12` by the slow path);
//! - the kind is not `decision` (collectors may not write one).
//!
//! The equivalence is tested against the slow path on every example in `schemas/examples/`
//! and on generated events (see the tests below and the fuzz target `raw_vs_value`).

use crate::validate::{FieldSpec, FieldType, MAX_COUNT};
use crate::{data_fields, format_rfc3339, Kind, MAX_KEY_LEN};
use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// One event vouched for by the fast path: its JSON text as sent and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent<'a> {
    /// The event object's JSON text, exactly as received.
    pub json: &'a str,
    pub id: Cow<'a, str>,
    pub source: Cow<'a, str>,
    pub project: Cow<'a, str>,
    pub kind: Kind,
}

impl<'a> RawEvent<'a> {
    /// Checks one JSON object (the text of one event) as a collector's event. `None` means
    /// "not vouched for": the event may be valid or not, [`crate::Event::from_json`] decides.
    pub fn parse(json: &'a str) -> Option<RawEvent<'a>> {
        let mut de = serde_json::Deserializer::from_str(json);
        let env = de.deserialize_map(EnvelopeVisitor(None)).ok()?;
        de.end().ok()?;
        Self::finish(json, env)
    }

    /// The last checks of a parsed envelope: `data` (when it came before `kind`) and the
    /// required fields.
    fn finish(json: &'a str, env: Envelope<'a>) -> Option<RawEvent<'a>> {
        let kind = env.kind?;
        match env.data? {
            Data::Checked => {}
            Data::Later => {
                // `data` came before `kind`: read the whole event again with the kind known,
                // so `data` is checked at its real depth (nesting limits count from the
                // event, as when the stored record is read back).
                let mut de = serde_json::Deserializer::from_str(json);
                let again = de.deserialize_map(EnvelopeVisitor(Some(kind))).ok()?;
                if !matches!(again.data, Some(Data::Checked)) {
                    return None;
                }
            }
        }
        Some(RawEvent {
            json: json.trim_matches(|c: char| c.is_ascii_whitespace()),
            id: env.id?,
            source: env.source?,
            project: env.project?,
            kind,
        })
    }

    /// The bytes stored in the log: the text as sent, with `received_at` as its first member.
    pub fn record(&self, received_at: &Stamp) -> Vec<u8> {
        let body = self.json[1..].trim_start_matches(|c: char| c.is_ascii_whitespace());
        let at = received_at.text.as_bytes();
        let mut out = Vec::with_capacity(self.json.len() + at.len() + 20);
        out.extend_from_slice(b"{\"received_at\":\"");
        out.extend_from_slice(at);
        out.push(b'"');
        if !body.starts_with('}') {
            out.push(b',');
        }
        out.extend_from_slice(body.as_bytes());
        out
    }
}

/// A receive time, formatted once for all the events of a request.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub at: DateTime<Utc>,
    text: String,
}

impl Stamp {
    pub fn new(at: DateTime<Utc>) -> Stamp {
        Stamp {
            at,
            text: format_rfc3339(&at),
        }
    }
}

/// An event that passed validation, by either path.
#[derive(Debug, Clone, PartialEq)]
pub enum ValidEvent<'a> {
    /// Vouched for by the fast path: stored as sent.
    Raw(RawEvent<'a>),
    /// Built by [`crate::Event::from_json`]: stored in its canonical serialization.
    /// (Boxed: the fast path's variant is the common one and a quarter of the size.)
    Event(Box<crate::Event>),
}

impl From<crate::Event> for ValidEvent<'_> {
    fn from(e: crate::Event) -> Self {
        ValidEvent::Event(Box::new(e))
    }
}

impl ValidEvent<'_> {
    pub fn id(&self) -> &str {
        match self {
            ValidEvent::Raw(r) => &r.id,
            ValidEvent::Event(e) => &e.id,
        }
    }

    pub fn source(&self) -> &str {
        match self {
            ValidEvent::Raw(r) => &r.source,
            ValidEvent::Event(e) => &e.source,
        }
    }

    pub fn project(&self) -> &str {
        match self {
            ValidEvent::Raw(r) => &r.project,
            ValidEvent::Event(e) => &e.project,
        }
    }

    /// The bytes stored in the log, with `received_at` set.
    pub fn into_record(self, received_at: &Stamp) -> Vec<u8> {
        match self {
            ValidEvent::Raw(r) => r.record(received_at),
            ValidEvent::Event(mut e) => {
                e.received_at = Some(received_at.at);
                e.to_json_bytes()
            }
        }
    }

    /// The event as a value (for tests and tools; the ingest path stores [`Self::record`]).
    /// `received_at` is left as sent (`None` on the fast path).
    pub fn into_event(self) -> crate::Event {
        match self {
            ValidEvent::Event(e) => *e,
            ValidEvent::Raw(r) => serde_json::from_str(r.json)
                .ok()
                .and_then(|v| crate::Event::from_json(v, crate::Origin::Collector).ok())
                .expect("an event vouched for by the fast path is valid on the slow path"),
        }
    }
}

/// One element of a JSON array: its text, and the fast path's event when vouched for.
pub type Element<'a> = (&'a str, Option<RawEvent<'a>>);

/// Walks a JSON array once, checking each element with the fast path as it goes.
/// `None` when `json` is not exactly one well-formed JSON array (the caller's slow path
/// then reads the whole body and says what is wrong).
pub fn split_array(json: &str) -> Option<Vec<Element<'_>>> {
    let ws = |s: &str| s.trim_start_matches([' ', '\t', '\n', '\r']).len();
    let mut at = json.len() - ws(json);
    if !json[at..].starts_with('[') {
        return None;
    }
    at += 1;
    at = json.len() - ws(&json[at..]);
    let mut out = Vec::new();
    if json[at..].starts_with(']') {
        at += 1;
    } else {
        loop {
            let rest = &json[at..];
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Envelope>();
            let (len, event) = match stream.next() {
                Some(Ok(env)) => {
                    let len = stream.byte_offset();
                    (len, RawEvent::finish(&rest[..len], env))
                }
                _ => {
                    // Not vouched for: find the element's end without judging it.
                    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Any>();
                    match stream.next() {
                        Some(Ok(_)) => (stream.byte_offset(), None),
                        _ => return None,
                    }
                }
            };
            out.push((&rest[..len], event));
            at += len;
            at = json.len() - ws(&json[at..]);
            match json.as_bytes().get(at) {
                Some(b',') => {
                    at += 1;
                    at = json.len() - ws(&json[at..]);
                }
                Some(b']') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (ws(&json[at..]) == 0).then_some(out)
}

impl<'de> serde::Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EnvelopeVisitor(None))
    }
}

/// Any failure: the slow path gives the verdict, so the message is never shown.
fn doubt<E: de::Error>() -> E {
    E::custom("")
}

#[derive(Default)]
struct Envelope<'a> {
    id: Option<Cow<'a, str>>,
    source: Option<Cow<'a, str>>,
    project: Option<Cow<'a, str>>,
    kind: Option<Kind>,
    data: Option<Data>,
}

/// `data` is checked as it is read when `kind` came first (the usual order), else kept
/// as text and checked once the kind is known.
enum Data {
    Checked,
    Later,
}

/// Reads the envelope; `data` is checked inline when the kind is known by then (from an
/// earlier `kind` member, or given).
struct EnvelopeVisitor(Option<Kind>);

/// Bits of the envelope fields seen, to refuse duplicates.
const ID: u16 = 1;
const KIND: u16 = 2;
const SOURCE: u16 = 4;
const TIME: u16 = 8;
const PROJECT: u16 = 16;
const ENV: u16 = 32;
const COMMIT: u16 = 64;
const BRANCH: u16 = 128;
const DEPLOYMENT_ID: u16 = 256;
const DATA: u16 = 512;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
        let mut env = Envelope::default();
        let mut seen = 0u16;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            let bit = match key.0.as_ref() {
                "id" => ID,
                "kind" => KIND,
                "source" => SOURCE,
                "time" => TIME,
                "project" => PROJECT,
                "env" => ENV,
                "commit" => COMMIT,
                "branch" => BRANCH,
                "deployment_id" => DEPLOYMENT_ID,
                "data" => DATA,
                "received_at" => return Err(doubt()),
                _ => {
                    map.next_value::<Any>()?;
                    continue;
                }
            };
            if seen & bit != 0 {
                return Err(doubt());
            }
            seen |= bit;
            match bit {
                ID => {
                    env.id = Some(
                        map.next_value_seed(KeyString { required: true })?
                            .ok_or_else(doubt)?,
                    )
                }
                SOURCE => {
                    env.source = Some(
                        map.next_value_seed(KeyString { required: true })?
                            .ok_or_else(doubt)?,
                    )
                }
                PROJECT => {
                    env.project = Some(
                        map.next_value_seed(KeyString { required: true })?
                            .ok_or_else(doubt)?,
                    )
                }
                ENV | COMMIT | BRANCH | DEPLOYMENT_ID => {
                    map.next_value_seed(KeyString { required: false })?;
                }
                KIND => {
                    let name = map.next_value::<Str<'de>>()?;
                    match Kind::from_name(&name.0) {
                        Some(Kind::Decision) | None => return Err(doubt()),
                        Some(k) => env.kind = Some(k),
                    }
                }
                TIME => map.next_value_seed(TimeCheck)?,
                _ => {
                    // DATA
                    env.data = Some(match env.kind.or(self.0) {
                        Some(kind) => {
                            map.next_value_seed(ObjectCheck(data_fields(kind)))?;
                            Data::Checked
                        }
                        None => {
                            // Checked once the kind is known (see `RawEvent::finish`).
                            map.next_value::<Any>()?;
                            Data::Later
                        }
                    });
                }
            }
        }
        Ok(env)
    }
}

/// Any JSON value, read as fully as a `serde_json::Value` would be but kept nowhere:
/// strings are unescaped (a lone surrogate is an error), numbers are range-checked
/// (`1e400` is an error) and nesting counts against serde_json's depth limit. `IgnoredAny`
/// and `RawValue` skip values without these checks, so text they pass could be stored and
/// then fail to read back (found by the fuzzer: tests/fuzz-corpus/).
struct Any;

impl<'de> serde::Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor).map(|()| Any)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Any>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<Any>()?.is_some() {
            map.next_value::<Any>()?;
        }
        Ok(())
    }
}

/// A string borrowed from the input when it holds no escape (also the projection's field
/// names and values).
pub struct Str<'a>(pub Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor).map(Str)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// An envelope key field: a string of at most [`MAX_KEY_LEN`] bytes without an ASCII
/// control character ([`crate::key_control_char`]), non-empty when required; `null` is
/// absent (`Ok(None)`), which is a doubt when required.
struct KeyString {
    required: bool,
}

impl<'de> DeserializeSeed<'de> for KeyString {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyString {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        if self.required {
            Err(doubt())
        } else {
            Ok(None)
        }
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.check(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.check(Cow::Owned(v.to_owned()))
    }
}

impl KeyString {
    fn check<'de, E: de::Error>(&self, v: Cow<'de, str>) -> Result<Option<Cow<'de, str>>, E> {
        if (self.required && v.is_empty())
            || v.len() > MAX_KEY_LEN
            || crate::key_control_char(&v).is_some()
        {
            Err(doubt())
        } else {
            Ok(Some(v))
        }
    }
}

/// `time`: `null`, or an RFC 3339 UTC time with `Z` and at most 6 fraction digits.
struct TimeCheck;

impl<'de> DeserializeSeed<'de> for TimeCheck {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TimeCheck {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a time")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        // With `Z` and a second below 60, `is_rfc3339` is all `parse_rfc3339` checks.
        if is_plain_utc_micros(s) && crate::is_rfc3339(s) {
            Ok(())
        } else {
            Err(doubt())
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z` with uppercase `T` and `Z` and a second below 60: the
/// shape whose instant every reader takes exactly as the canonical form.
fn is_plain_utc_micros(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || b[10] != b'T' || b[b.len() - 1] != b'Z' || b[17] > b'5' {
        return false;
    }
    match b.len() {
        20 => true,
        22..=27 => b[19] == b'.',
        _ => false,
    }
}

/// The known fields of one object (a kind's `data`, a struct, an array item): each checked
/// by its type, each at most once, the required ones present and not `null`.
#[derive(Clone, Copy)]
struct ObjectCheck(&'static [FieldSpec]);

impl<'de> DeserializeSeed<'de> for ObjectCheck {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectCheck {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fields = self.0;
        let (mut seen, mut present) = (0u64, 0u64);
        while let Some(key) = map.next_key::<Str<'de>>()? {
            let Some(i) = fields.iter().position(|f| f.name == key.0) else {
                map.next_value::<Any>()?;
                continue;
            };
            if seen & (1 << i) != 0 {
                return Err(doubt());
            }
            seen |= 1 << i;
            if map.next_value_seed(ValueCheck(fields[i].ty))? {
                present |= 1 << i;
            }
        }
        let missing = fields
            .iter()
            .enumerate()
            .any(|(i, f)| f.required && present & (1 << i) == 0);
        if missing {
            Err(doubt())
        } else {
            Ok(())
        }
    }
}

/// One known field's value, by type; `Ok(false)` for `null` (absent).
#[derive(Clone, Copy)]
struct ValueCheck(FieldType);

impl<'de> DeserializeSeed<'de> for ValueCheck {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueCheck {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        match self.0 {
            FieldType::Bool => Ok(true),
            _ => Err(doubt()),
        }
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        match self.0 {
            FieldType::Number => Ok(true),
            FieldType::Count | FieldType::StrOrCount if v <= MAX_COUNT => Ok(true),
            _ => Err(doubt()),
        }
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        // serde_json hands non-negative integers to visit_u64: this one is negative.
        match self.0 {
            FieldType::Number => Ok(true),
            _ => Err(doubt()),
        }
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        // A float count is either refused or rewritten by the slow path.
        match self.0 {
            FieldType::Number => Ok(true),
            _ => Err(doubt()),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match self.0 {
            FieldType::Str | FieldType::StrOrCount => Ok(true),
            FieldType::Enum(allowed) if allowed.contains(&v) => Ok(true),
            _ => Err(doubt()),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        match self.0 {
            FieldType::Object => {
                AnyVisitor.visit_map(map)?;
                Ok(true)
            }
            FieldType::Struct(fields) => {
                ObjectCheck(fields).visit_map(map)?;
                Ok(true)
            }
            _ => Err(doubt()),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let FieldType::Array(fields) = self.0 else {
            return Err(doubt());
        };
        while seq.next_element_seed(ObjectCheck(fields))?.is_some() {}
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Origin};
    use serde_json::Value;

    /// The fast path's verdict against the slow path's, and the stored meaning.
    fn agree(json: &str) -> bool {
        let slow = serde_json::from_str::<Value>(json)
            .ok()
            .map(|v| Event::from_json(v, Origin::Collector));
        let Some(fast) = RawEvent::parse(json) else {
            return false;
        };
        let slow = slow
            .expect("fast path vouched for text that is not JSON")
            .unwrap_or_else(|e| panic!("fast path vouched for an invalid event ({e}): {json}"));
        let at = "2026-11-21T10:00:00.123456Z"
            .parse::<DateTime<Utc>>()
            .unwrap();
        let stamp = Stamp::new(at);
        let stored = Event::from_json_bytes(&fast.record(&stamp)).expect("record decodes");
        let mut expected = slow;
        expected.received_at = Some(at);
        assert_eq!(stored, expected, "{json}");
        assert_eq!(
            (
                fast.id.as_ref(),
                fast.source.as_ref(),
                fast.project.as_ref()
            ),
            (
                expected.id.as_str(),
                expected.source.as_str(),
                expected.project.as_str()
            )
        );
        // The stored bytes are also what the canonical encoder would mean, as a JSON value.
        let a: Value = serde_json::from_slice(&fast.record(&stamp)).unwrap();
        let b: Value = serde_json::from_slice(&expected.to_json_bytes()).unwrap();
        let normalize_time = |mut v: Value| {
            if let Some(t) = v.get("time").and_then(Value::as_str) {
                let t = t.parse::<DateTime<Utc>>().unwrap();
                v["time"] = Value::String(format_rfc3339(&t));
            }
            if let Some(o) = v.as_object_mut() {
                o.retain(|_, x| !x.is_null());
            }
            v
        };
        assert_eq!(normalize_time(a), normalize_time(b), "{json}");
        true
    }

    fn examples(dir: &str) -> Vec<(String, String)> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/examples/");
        let mut out = Vec::new();
        for e in std::fs::read_dir(format!("{root}{dir}")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|x| x.to_str()) == Some("json")
                && !p.ends_with("expected.json")
            {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
        out
    }

    #[test]
    fn vouches_for_every_valid_example_and_no_invalid_one() {
        let valid = examples("valid");
        assert!(valid.len() >= 10);
        // These take the slow path by design: a time with an offset, a float count, and
        // decisions (never from a collector). Every other valid example must be vouched for.
        let slow = [
            "build-failed-local.json",
            "build-ci-string-run-id.json",
            "decision-budget-alert-dry-run.json",
            "decision-rollback.json",
        ];
        for (path, json) in &valid {
            let expect_slow = slow.iter().any(|s| path.ends_with(s));
            assert_eq!(agree(json), !expect_slow, "{path}");
        }
        for (path, json) in examples("invalid") {
            assert!(RawEvent::parse(&json).is_none(), "vouched for {path}");
        }
    }

    #[test]
    fn doubts_send_the_event_to_the_slow_path() {
        let base = |extra: &str, data: &str| {
            format!(
                r#"{{"id":"a","kind":"build","source":"s","project":"p"{extra},"data":{{"success":true,"duration_ms":{data}}}}}"#
            )
        };
        assert!(agree(&base("", "1200")));
        assert!(agree(&base(
            r#","time":"2026-11-21T10:00:00.123Z""#,
            "1200"
        )));
        assert!(agree(&base(r#","env":null,"x":{"y":[1,2]}"#, "0")));
        for json in [
            base("", "12.0"),                                         // float count
            base("", "-1"),                                           // negative
            base(r#","received_at":"2026-11-21T10:00:00Z""#, "1"),    // server's field
            base(r#","id":"b""#, "1"),                                // duplicate
            base(r#","time":"2026-11-21T10:00:00+01:00""#, "1"),      // offset
            base(r#","time":"2026-11-21T10:00:00.1234567Z""#, "1"),   // sub-µs
            base(r#","time":"2026-12-31T23:59:60Z""#, "1"),           // leap second
            base(r#","env":"""#, "1").replace(r#""id":"a""#, r#""id":"""#), // empty id
            r#"{"id":"a","kind":"decision","source":"s","project":"p","data":{}}"#.into(),
            r#"{"id":"a","kind":"build","source":"s","project":"p","data":{"success":true,"duration_ms":1,"success":false}}"#.into(),
            r#"{"id":"a","kind":"build","source":"s","project":"p","data":{"success":true}}"#.into(),
            r#"[1]"#.into(),
        ] {
            assert!(RawEvent::parse(&json).is_none(), "vouched for {json}");
        }
    }

    /// ASCII control characters (U+0000 to U+001F, U+007F) in any envelope key: the slow
    /// path refuses the event naming the field, the fast path never vouches for it.
    /// Other characters, C1 controls (U+0080 to U+009F) included, are kept.
    #[test]
    fn control_characters_in_keys_are_refused_by_both_paths() {
        let fields = [
            "id",
            "source",
            "project",
            "env",
            "commit",
            "branch",
            "deployment_id",
        ];
        let event = |field: &str, value: &str| {
            let mut v = serde_json::json!({"id": "a", "kind": "check", "source": "s",
                "project": "p", "data": {"name": "smoke", "passed": true}});
            v[field] = Value::String(value.to_string());
            v
        };
        for field in fields {
            for c in (0u8..0x20).chain([0x7f]).map(char::from) {
                let value = format!("dep{c}x");
                let v = event(field, &value);
                // escaped as \u00XX (and a raw DEL, which JSON allows unescaped)
                let mut texts = vec![serde_json::to_string(&v).unwrap()];
                if c == '\u{7f}' {
                    texts.push(texts[0].replace("\\u007f", "\u{7f}"));
                    assert!(texts[1].as_bytes().contains(&0x7f), "{}", texts[1]);
                }
                for json in &texts {
                    assert!(RawEvent::parse(json).is_none(), "vouched for {json:?}");
                    assert!(
                        split_array(&format!("[{json}]")).unwrap()[0].1.is_none(),
                        "{json:?}"
                    );
                }
                let e = Event::from_json(v, Origin::Collector).unwrap_err();
                assert_eq!(e.field, format!("/{field}"), "{e}");
                assert_eq!(
                    e.error,
                    format!(
                        "must not contain control characters (U+0000 to U+001F, U+007F): \
                         U+{:04X} at byte 3",
                        c as u32
                    )
                );
            }
            for ok in [
                "dep\u{80}x",
                "dep\u{9f}x",
                "déploiement",
                "dep 1",
                "🚀",
                "a\\b\"c",
            ] {
                let json = serde_json::to_string(&event(field, ok)).unwrap();
                assert!(agree(&json), "not vouched for: {json}");
            }
        }
    }

    #[test]
    fn record_splices_received_at_first() {
        let json = " {\"id\":\"a\",\"kind\":\"check\",\"source\":\"s\",\"project\":\"p\",\"data\":{\"name\":\"n\",\"passed\":true}} ";
        let ev = RawEvent::parse(json).unwrap();
        let at = "2026-11-21T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let rec = String::from_utf8(ev.record(&Stamp::new(at))).unwrap();
        assert!(rec.starts_with("{\"received_at\":\"2026-11-21T10:00:00.000000Z\",\"id\":\"a\""));
        assert!(rec.ends_with("}}"));
    }

    /// Whatever the fast path vouches for reads back: deep nesting in unknown fields (with
    /// `data` before or after `kind`), lone surrogates, numbers out of range.
    #[test]
    fn vouched_records_always_read_back() {
        let at = Stamp::new("2026-11-21T10:00:00Z".parse::<DateTime<Utc>>().unwrap());
        let data = |extra: &str| format!(r#"{{"name":"n","passed":true,"x":{extra}}}"#);
        let mut vouched_deep = 0;
        for depth in 100..140 {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            for json in [
                format!(
                    r#"{{"id":"a","kind":"check","source":"s","project":"p","data":{}}}"#,
                    data(&deep)
                ),
                format!(
                    r#"{{"data":{},"id":"a","kind":"check","source":"s","project":"p"}}"#,
                    data(&deep)
                ),
                format!(
                    r#"{{"id":"a","kind":"check","source":"s","project":"p","y":{deep},"data":{}}}"#,
                    data("1")
                ),
            ] {
                if let Some(ev) = RawEvent::parse(&json) {
                    vouched_deep += 1;
                    let rec = ev.record(&at);
                    serde_json::from_slice::<Value>(&rec).expect("vouched record reads back");
                    Event::from_json_bytes(&rec).expect("vouched record decodes");
                }
            }
        }
        assert!(vouched_deep > 0, "shallow enough nesting is vouched for");
        for bad in [r#""\ud800""#, "1e400", "-1e999", r#"{"\udfff":1}"#] {
            let json = format!(
                r#"{{"id":"a","kind":"check","source":"s","project":"p","data":{}}}"#,
                data(bad)
            );
            assert!(RawEvent::parse(&json).is_none(), "vouched for {json}");
        }
    }

    #[test]
    fn split_array_agrees_with_the_json_parser() {
        let ev = r#"{"id":"a","kind":"check","source":"s","project":"p","data":{"name":"n","passed":true}}"#;
        for (json, n) in [
            (format!("[{ev}]"), Some(1)),
            (format!(" [ {ev} ,\n{ev}\t] \n"), Some(2)),
            ("[]".to_string(), Some(0)),
            (" [ ] ".to_string(), Some(0)),
            (format!("[{ev},1,\"x\",null,[{ev}]]"), Some(5)),
            (format!("[{ev},]"), None),
            (format!("[,{ev}]"), None),
            (format!("[{ev}"), None),
            (format!("[{ev}] x"), None),
            (format!("[{ev}][]"), None),
            (format!("[{ev} {ev}]"), None),
            ("[1 2]".to_string(), None),
            ("[tru]".to_string(), None),
        ] {
            let split = split_array(&json);
            assert_eq!(split.as_ref().map(Vec::len), n, "{json}");
            assert_eq!(
                split.is_some(),
                serde_json::from_str::<Value>(&json).is_ok(),
                "{json}"
            );
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("null".to_string()),
                Just("true".to_string()),
                Just("0".to_string()),
                Just("12.0".to_string()),
                Just("-3".to_string()),
                Just("1.5".to_string()),
                Just("9007199254740992".to_string()),
                Just("\"x\"".to_string()),
                Just("\"\"".to_string()),
                Just("\"succeeded\"".to_string()),
                Just("\"applied\"".to_string()),
                Just("\"a\\u00e9\\n\"".to_string()),
                Just("{}".to_string()),
                Just("[]".to_string()),
                Just("[{\"name\":\"a\",\"duration_ms\":3}]".to_string()),
                Just("[{\"name\":\"a\",\"bytes\":3}]".to_string()),
                Just("{\"input_tokens\":1}".to_string()),
            ]
        }

        fn field_name() -> impl Strategy<Value = String> {
            let names: Vec<&'static str> = Kind::ALL
                .iter()
                .flat_map(|k| data_fields(*k).iter().map(|f| f.name))
                .chain(["unknown", "other"])
                .collect();
            proptest::sample::select(names).prop_map(str::to_string)
        }

        /// A minimal valid object for these fields (the required ones, by type).
        fn minimal(fields: &[FieldSpec]) -> Vec<String> {
            fields
                .iter()
                .filter(|f| f.required)
                .map(|f| {
                    let v = match f.ty {
                        FieldType::Str => "\"x\"".to_string(),
                        FieldType::Bool => "true".into(),
                        FieldType::Count | FieldType::StrOrCount => "1".into(),
                        FieldType::Number => "1.5".into(),
                        FieldType::Enum(a) => format!("\"{}\"", a[0]),
                        FieldType::Object | FieldType::Array(_) => "{}".into(),
                        FieldType::Struct(inner) => format!("{{{}}}", minimal(inner).join(",")),
                    };
                    let v = if matches!(f.ty, FieldType::Array(_)) {
                        "[]".into()
                    } else {
                        v
                    };
                    format!("\"{}\":{v}", f.name)
                })
                .collect()
        }

        fn element() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(r#"{"id":"a","kind":"check","source":"s","project":"p","data":{"name":"n","passed":true}}"#.to_string()),
                Just(r#"{"id":"b","kind":"check","source":"s","project":"p","data":{"name":"n","passed":1}}"#.to_string()),
                Just(r#"{"kind":"check","data":{"name":"n","passed":true},"id":"c","source":"s","project":"p","x":[{},[]]}"#.to_string()),
                Just("{}".to_string()),
                Just("[]".to_string()),
                Just("\"s\"".to_string()),
                Just("-1.5e3".to_string()),
                Just("null".to_string()),
                Just("{\"id\":".to_string()),
                Just("tru".to_string()),
                Just("}".to_string()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]
            /// Arrays of random elements, separators and whitespace: split_array accepts
            /// exactly what the JSON parser accepts, with the same elements, and vouches
            /// only for elements the slow path accepts.
            #[test]
            fn split_array_matches_the_parser(
                parts in proptest::collection::vec((element(), prop_oneof![Just(","), Just(" , "), Just("\n,"), Just(""), Just(",,")]), 0..6),
                open in prop_oneof![Just("["), Just(" [\n"), Just("")],
                close in prop_oneof![Just("]"), Just("] "), Just(""), Just("]]")],
            ) {
                let mut json = open.to_string();
                for (i, (e, sep)) in parts.iter().enumerate() {
                    if i > 0 { json.push_str(sep); }
                    json.push_str(e);
                }
                json.push_str(close);
                let parsed = serde_json::from_str::<Value>(&json).ok();
                match (split_array(&json), parsed) {
                    (None, None) => {}
                    (None, Some(v)) => prop_assert!(!v.is_array(), "refused a valid array: {}", json),
                    (Some(_), None) => prop_assert!(false, "accepted invalid JSON: {}", json),
                    (Some(items), Some(Value::Array(values))) => {
                        prop_assert_eq!(items.len(), values.len());
                        for ((text, fast), value) in items.iter().zip(values) {
                            prop_assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), &value);
                            if fast.is_some() {
                                prop_assert!(agree(text));
                            }
                        }
                    }
                    (Some(_), Some(_)) => prop_assert!(false, "split a non-array: {}", json),
                }
            }

            /// Random data objects under every kind, with random envelope variations: whenever
            /// the fast path vouches, the slow path accepts and the stored meaning is equal.
            #[test]
            fn fast_path_never_vouches_for_what_the_slow_path_refuses(
                kind in proptest::sample::select(vec!["build", "deploy", "migration", "api_cost", "check", "decision", "nope"]),
                fields in proptest::collection::vec((field_name(), value()), 0..10),
                time in prop_oneof![Just(None), Just(Some("\"2026-11-21T10:00:00Z\"")), Just(Some("\"2026-11-21T10:00:00.5Z\"")),
                                    Just(Some("\"2026-11-21T10:00:00+02:00\"")), Just(Some("null")), Just(Some("3"))],
                id in prop_oneof![Just("\"e1\""), Just("\"\""), Just("null"), Just("7"), Just("\"e\\\"1\""),
                                  Just("\"e\\u00001\""), Just("\"e\\n\""), Just("\"e\\u001f\""), Just("\"e\u{7f}\""), Just("\"e\u{80}\"")],
                env in prop_oneof![Just(None), Just(Some("\"prod\"")), Just(Some("null")), Just(Some("1")),
                                   Just(Some("\"pr\\u0000od\"")), Just(Some("\"prod\\r\\n\"")), Just(Some("\"\\u007f\""))],
                drop_required in proptest::bool::weighted(0.1),
            ) {
                let mut data: Vec<String> = match (Kind::from_name(kind), drop_required) {
                    (Some(k), false) => minimal(data_fields(k)),
                    _ => Vec::new(),
                };
                data.extend(fields.iter().map(|(k, v)| format!("\"{k}\":{v}")));
                let data = data.join(",");
                let mut json = format!(r#"{{"id":{id},"kind":"{kind}","source":"s","project":"p","data":{{{data}}}"#);
                if let Some(t) = time { json.push_str(&format!(",\"time\":{t}")); }
                if let Some(e) = env { json.push_str(&format!(",\"env\":{e}")); }
                json.push('}');
                let vouched = agree(&json);
                // Sanity: the generator reaches the fast path (a clean event is vouched for).
                if fields.is_empty() && !drop_required && id == "\"e1\"" && kind != "decision" && kind != "nope"
                    && matches!(time, None | Some("\"2026-11-21T10:00:00Z\"") | Some("\"2026-11-21T10:00:00.5Z\"") | Some("null"))
                    && matches!(env, None | Some("\"prod\"") | Some("null")) {
                    prop_assert!(vouched, "clean event not vouched for: {}", json);
                }
            }
        }
    }
}
