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
mod tests;
