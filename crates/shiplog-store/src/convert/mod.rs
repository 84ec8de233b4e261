//! Log entry JSON → Arrow columns, without building a `serde_json::Value` tree.
//!
//! Every field is first captured as a borrowed `&RawValue` (a slice of the entry's bytes)
//! and then converted straight into the column's builder. Strings without escapes are
//! borrowed, never copied twice. Conversion rules (documented in the crate docs):
//! a value of the column's type is stored as is; a value of another type is converted
//! when that is meaningful (number → utf8 text, float → int64 rounded, numeric string →
//! number) and otherwise stored as null; whenever the stored value is not an exact
//! image of what was sent, the original JSON is also kept in `extra`.

use crate::pricing::{price_record, CostInput, PriceTable, Tokens};
use crate::schema::{self, ColType, ENVELOPE_STRINGS};
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListArray, StringBuilder,
    StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::record_batch::RecordBatch;
use serde_json::value::RawValue;
use shiplog_events::Kind;
use std::borrow::Cow;
use std::sync::Arc;

mod raw;

pub(crate) use raw::for_each_field;
use raw::{for_each_element, raw_bool, raw_f64, raw_i64, raw_str};
use shiplog_events::parse_time_micros;

/// `list<struct<…>>` built from plain child builders (faster than arrow's dyn
/// StructBuilder).
struct ListStructCol {
    item_fields: arrow::datatypes::Fields,
    /// child string builder (always `name`)
    name: StringBuilder,
    ints: Vec<Int64Builder>,
    offsets: Vec<i32>,
    validity: Vec<bool>,
}

impl ListStructCol {
    fn new(item_fields: arrow::datatypes::Fields) -> Self {
        let n_ints = item_fields.len() - 1;
        ListStructCol {
            item_fields,
            name: StringBuilder::new(),
            ints: (0..n_ints).map(|_| Int64Builder::new()).collect(),
            offsets: vec![0],
            validity: Vec::new(),
        }
    }

    /// Appends one list; returns whether it was an exact image of `raw`.
    fn append(&mut self, raw: Option<&RawValue>, int_names: &[&str]) -> bool {
        let Some(raw) = raw.filter(|r| r.get() != "null") else {
            self.offsets.push(*self.offsets.last().unwrap());
            self.validity.push(false);
            return true;
        };
        let mut exact = true;
        let mut count = 0i32;
        let name = &mut self.name;
        let ints = &mut self.ints;
        let is_list = for_each_element(raw.get(), |el| {
            count += 1;
            let mut got_name: Option<Cow<str>> = None;
            let mut got: [Option<i64>; 2] = [None, None];
            let r = for_each_field(el.get().as_bytes(), |k, v| {
                if k == "name" {
                    match raw_str(v) {
                        Some((s, e)) => {
                            exact &= e;
                            got_name = Some(s);
                        }
                        None => got_name = None,
                    }
                } else if let Some(i) = int_names.iter().position(|n| *n == k) {
                    let (val, e) = raw_i64(v);
                    exact &= e;
                    got[i] = val;
                } else {
                    exact = false;
                }
            });
            if r.is_err() {
                exact = false;
            }
            name.append_option(got_name.as_deref());
            for (i, b) in ints.iter_mut().enumerate() {
                b.append_option(got[i]);
            }
        });
        if !is_list {
            // roll back partially appended items is not possible with builders; a raw
            // value that is not an array never appended any (the visitor fails first).
            self.offsets.push(*self.offsets.last().unwrap());
            self.validity.push(false);
            return false;
        }
        self.offsets.push(self.offsets.last().unwrap() + count);
        self.validity.push(true);
        exact
    }

    fn finish(&mut self) -> ArrayRef {
        let mut children: Vec<ArrayRef> = vec![Arc::new(self.name.finish())];
        for b in &mut self.ints {
            children.push(Arc::new(b.finish()));
        }
        let structs = StructArray::new(self.item_fields.clone(), children, None);
        let offsets = OffsetBuffer::new(std::mem::replace(&mut self.offsets, vec![0]).into());
        let nulls = NullBuffer::from(std::mem::take(&mut self.validity));
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        Arc::new(ListArray::new(
            schema::list_item(self.item_fields.clone()),
            offsets,
            Arc::new(structs),
            nulls,
        ))
    }
}

struct CiCol {
    cols: [StringBuilder; 3],
    validity: Vec<bool>,
}

impl CiCol {
    fn append(&mut self, raw: Option<&RawValue>) -> bool {
        let Some(raw) = raw.filter(|r| r.get() != "null") else {
            self.cols.iter_mut().for_each(|c| c.append_null());
            self.validity.push(false);
            return true;
        };
        let mut exact = true;
        let mut got: [Option<Cow<str>>; 3] = [None, None, None];
        let ok = for_each_field(raw.get().as_bytes(), |k, v| {
            let i = match &*k {
                "provider" => 0,
                "run_id" => 1,
                "url" => 2,
                _ => {
                    exact = false;
                    return;
                }
            };
            got[i] = raw_str(v).map(|(s, e)| {
                exact &= e;
                s
            });
        })
        .is_ok();
        for (c, g) in self.cols.iter_mut().zip(&got) {
            c.append_option(if ok { g.as_deref() } else { None });
        }
        self.validity.push(ok);
        exact && ok
    }

    fn finish(&mut self) -> ArrayRef {
        let children: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|c| Arc::new(c.finish()) as ArrayRef)
            .collect();
        let nulls = NullBuffer::from(std::mem::take(&mut self.validity));
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        Arc::new(StructArray::new(schema::ci_fields(), children, nulls))
    }
}

enum Col {
    Utf8(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    List(ListStructCol, &'static [&'static str]),
    Ci(CiCol),
}

impl Col {
    fn new(t: ColType) -> Col {
        match t {
            ColType::Utf8 | ColType::Json => Col::Utf8(StringBuilder::new()),
            ColType::Int64 => Col::Int64(Int64Builder::new()),
            ColType::Float64 => Col::Float64(Float64Builder::new()),
            ColType::Bool => Col::Bool(BooleanBuilder::new()),
            ColType::Phases => {
                Col::List(ListStructCol::new(schema::phase_fields()), &["duration_ms"])
            }
            ColType::Chunks => Col::List(
                ListStructCol::new(schema::chunk_fields()),
                &["bytes", "gzip_bytes"],
            ),
            ColType::Assets => Col::List(ListStructCol::new(schema::asset_fields()), &["bytes"]),
            ColType::Ci => Col::Ci(CiCol {
                cols: [
                    StringBuilder::new(),
                    StringBuilder::new(),
                    StringBuilder::new(),
                ],
                validity: Vec::new(),
            }),
        }
    }

    /// Appends one value (None = absent); returns whether the stored value is exact.
    fn append(&mut self, raw: Option<&RawValue>, json: bool) -> bool {
        match self {
            Col::Utf8(b) => match raw {
                None => {
                    b.append_null();
                    true
                }
                Some(r) if json => {
                    if r.get() == "null" {
                        b.append_null();
                    } else {
                        b.append_value(r.get());
                    }
                    true
                }
                Some(r) => match raw_str(r) {
                    Some((s, exact)) => {
                        b.append_value(s);
                        exact
                    }
                    None => {
                        b.append_null();
                        true
                    }
                },
            },
            Col::Int64(b) => {
                let (v, exact) = raw.map_or((None, true), raw_i64);
                b.append_option(v);
                exact
            }
            Col::Float64(b) => {
                let (v, exact) = raw.map_or((None, true), raw_f64);
                b.append_option(v);
                exact
            }
            Col::Bool(b) => {
                let (v, exact) = raw.map_or((None, true), raw_bool);
                b.append_option(v);
                exact
            }
            Col::List(l, names) => l.append(raw, names),
            Col::Ci(c) => c.append(raw),
        }
    }

    /// Appends a value computed by the projection (api_cost's derived columns).
    fn append_derived(&mut self, d: Derived) {
        match (self, d) {
            (Col::Int64(b), Derived::I64(v)) => b.append_option(v),
            (Col::Float64(b), Derived::F64(v)) => b.append_option(v),
            (Col::Utf8(b), Derived::Str(v)) => b.append_option(v),
            _ => unreachable!("derived value of the column's type"),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Utf8(b) => Arc::new(b.finish()),
            Col::Int64(b) => Arc::new(b.finish()),
            Col::Float64(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::List(l, _) => l.finish(),
            Col::Ci(c) => c.finish(),
        }
    }
}

/// A value the projection computes for a column instead of copying it from `data`.
enum Derived {
    I64(Option<i64>),
    F64(Option<f64>),
    Str(Option<String>),
}

fn slot_i64(r: Option<&RawValue>) -> Option<i64> {
    r.and_then(|r| raw_i64(r).0)
}

/// The derived columns of one `api_cost` row (see `pricing`): token columns from `usage`
/// when not sent, `requests` 1 when absent, `cost_usd`/`price_version` priced when no cost
/// was sent, and `cost_source` always. Indexed like `fields`; None = copy from `data`.
fn api_cost_derived(
    fields: &[(&str, ColType)],
    slots: &[Option<&RawValue>],
    at_micros: i64,
    prices: &PriceTable,
) -> Vec<Option<Derived>> {
    let idx = |name: &str| fields.iter().position(|(n, _)| *n == name);
    let slot = |name: &str| {
        idx(name)
            .and_then(|i| slots[i])
            .filter(|r| r.get() != "null")
    };
    let text = |name: &str| slot(name).and_then(raw_str).map(|(s, _)| s);
    let provider = text("provider");
    let model = text("model");
    let price_version = text("price_version");
    let usage: Option<serde_json::Value> = slot("usage")
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .filter(|v: &serde_json::Value| v.is_object());
    let explicit = Tokens {
        input: slot_i64(slot("input_tokens")),
        output: slot_i64(slot("output_tokens")),
        cached: slot_i64(slot("cached_tokens")),
        cache_write: slot_i64(slot("cache_write_tokens")),
        reasoning: slot_i64(slot("reasoning_tokens")),
        cache_write_1h: None,
    };
    let cost_usd = slot("cost_usd").and_then(|r| raw_f64(r).0);
    let out = price_record(
        &CostInput {
            provider: provider.as_deref(),
            model: model.as_deref(),
            at_micros,
            explicit,
            requests: slot_i64(slot("requests")),
            usage: usage.as_ref(),
            cost_usd,
            price_version: price_version.as_deref(),
        },
        prices,
    );
    let mut d: Vec<Option<Derived>> = fields.iter().map(|_| None).collect();
    let mut set = |name: &str, v: Derived| {
        if let Some(i) = idx(name) {
            d[i] = Some(v);
        }
    };
    for (name, sent, value) in [
        ("input_tokens", explicit.input, out.tokens.input),
        ("output_tokens", explicit.output, out.tokens.output),
        ("cached_tokens", explicit.cached, out.tokens.cached),
        (
            "cache_write_tokens",
            explicit.cache_write,
            out.tokens.cache_write,
        ),
        ("reasoning_tokens", explicit.reasoning, out.tokens.reasoning),
    ] {
        if sent.is_none() && slot(name).is_none() {
            set(name, Derived::I64(value));
        }
    }
    if slot("requests").is_none() {
        set("requests", Derived::I64(Some(out.requests)));
    }
    if cost_usd.is_none() {
        set("cost_usd", Derived::F64(out.cost_usd));
        if out.price_version.as_deref() != price_version.as_deref() {
            set("price_version", Derived::Str(out.price_version));
        }
    }
    set(
        "cost_source",
        Derived::Str(Some(out.source.as_str().to_string())),
    );
    d
}

/// Accumulates the rows of one kind (one output file) in Arrow builders.
pub(crate) struct KindBatchBuilder {
    kind: Kind,
    fields: &'static [(&'static str, ColType)],
    time: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    strings: Vec<StringBuilder>,
    data: Vec<Col>,
    extra: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    rows: usize,
    /// Approximate input bytes (JSON) appended.
    pub(crate) bytes: usize,
    pub(crate) first_offset: u64,
    pub(crate) last_offset: u64,
}

/// One event captured as borrowed raw fields.
pub(crate) struct RawEvent<'a> {
    pub kind: Option<Kind>,
    pub time: Option<i64>,
    pub received_at: Option<i64>,
    envelope: [Option<&'a RawValue>; 7],
    time_raw: Option<&'a RawValue>,
    received_raw: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    extra: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawEvent<'a> {
    /// The event time in µs: `time`, else `received_at`, else the epoch (never happens for
    /// events accepted by ingest, which always sets `received_at`).
    pub fn event_micros(&self) -> i64 {
        self.time.or(self.received_at).unwrap_or(0)
    }
}

/// Decodes the envelope of one log entry. `Err` when the entry is not a JSON object.
pub(crate) fn decode_envelope(bytes: &[u8]) -> Result<RawEvent<'_>, serde_json::Error> {
    let mut ev = RawEvent {
        kind: None,
        time: None,
        received_at: None,
        envelope: [None; 7],
        time_raw: None,
        received_raw: None,
        data: None,
        extra: Vec::new(),
    };
    let mut kind_raw: Option<&RawValue> = None;
    for_each_field(bytes, |k, v| match &*k {
        "kind" => kind_raw = Some(v),
        "time" => ev.time_raw = Some(v),
        "received_at" => ev.received_raw = Some(v),
        "data" => ev.data = Some(v),
        other => match ENVELOPE_STRINGS.iter().position(|n| *n == other) {
            Some(i) => ev.envelope[i] = Some(v),
            None => ev.extra.push((k, v)),
        },
    })?;
    ev.kind = kind_raw
        .and_then(raw_str)
        .and_then(|(s, _)| Kind::parse(&s));
    let t = |r: Option<&RawValue>| r.and_then(raw_str).and_then(|(s, _)| parse_time_micros(&s));
    ev.time = t(ev.time_raw);
    ev.received_at = t(ev.received_raw);
    Ok(ev)
}

fn push_json_key(out: &mut String, k: &str) {
    if out.len() > 1 {
        out.push(',');
    }
    if k.bytes()
        .all(|c| c >= 0x20 && c != b'"' && c != b'\\' && c < 0x7f)
    {
        out.push('"');
        out.push_str(k);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(k).expect("string serializes"));
    }
    out.push(':');
}

impl KindBatchBuilder {
    pub(crate) fn new(kind: Kind) -> Self {
        let fields = schema::data_fields(kind);
        KindBatchBuilder {
            kind,
            fields,
            time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            received_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            strings: (0..ENVELOPE_STRINGS.len())
                .map(|_| StringBuilder::new())
                .collect(),
            data: fields.iter().map(|(_, t)| Col::new(*t)).collect(),
            extra: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            rows: 0,
            bytes: 0,
            first_offset: 0,
            last_offset: 0,
        }
    }

    /// Appends one decoded event; `prices` prices `api_cost` events sent without a cost.
    pub(crate) fn append(
        &mut self,
        ev: &RawEvent<'_>,
        partition: u32,
        offset: u64,
        len: usize,
        prices: &PriceTable,
    ) {
        if self.rows == 0 {
            self.first_offset = offset;
        }
        self.last_offset = offset;
        self.rows += 1;
        self.bytes += len;
        let mut extra = String::new();
        extra.push('{');
        self.time.append_value(ev.event_micros());
        self.received_at.append_option(ev.received_at);
        // time/received_at that did not parse: keep what was sent.
        if ev.time.is_none() {
            if let Some(r) = ev.time_raw.filter(|r| r.get() != "null") {
                push_json_key(&mut extra, "time");
                extra.push_str(r.get());
            }
        }
        if ev.received_at.is_none() {
            if let Some(r) = ev.received_raw.filter(|r| r.get() != "null") {
                push_json_key(&mut extra, "received_at");
                extra.push_str(r.get());
            }
        }
        for (i, b) in self.strings.iter_mut().enumerate() {
            match ev.envelope[i].and_then(raw_str) {
                Some((s, exact)) => {
                    b.append_value(&s);
                    if !exact {
                        push_json_key(&mut extra, ENVELOPE_STRINGS[i]);
                        extra.push_str(ev.envelope[i].unwrap().get());
                    }
                }
                None => b.append_null(),
            }
        }
        for (k, v) in &ev.extra {
            push_json_key(&mut extra, k);
            extra.push_str(v.get());
        }
        // data
        let mut slots: [Option<&RawValue>; 16] = [None; 16];
        let mut data_extra = String::new();
        data_extra.push('{');
        let fields = self.fields;
        if let Some(d) = ev.data {
            let r = for_each_field(d.get().as_bytes(), |k, v| {
                match fields.iter().position(|(n, _)| *n == k) {
                    Some(i) => slots[i] = Some(v),
                    None => {
                        push_json_key(&mut data_extra, &k);
                        data_extra.push_str(v.get());
                    }
                }
            });
            if r.is_err() {
                // `data` is not an object: keep it whole.
                push_json_key(&mut extra, "data");
                extra.push_str(d.get());
            }
        }
        let mut derived = if self.kind == Kind::ApiCost {
            api_cost_derived(fields, &slots[..fields.len()], ev.event_micros(), prices)
        } else {
            Vec::new()
        };
        for (i, col) in self.data.iter_mut().enumerate() {
            let json = fields[i].1 == ColType::Json;
            let exact = match derived.get_mut(i).and_then(Option::take) {
                // A computed value: what was sent (if anything) is kept in `extra`.
                Some(d) => {
                    col.append_derived(d);
                    slots[i].is_none_or(|r| r.get() == "null")
                }
                None => col.append(slots[i], json),
            };
            if !exact {
                push_json_key(&mut data_extra, fields[i].0);
                data_extra.push_str(slots[i].map_or("null", |r| r.get()));
            }
        }
        if data_extra.len() > 1 {
            data_extra.push('}');
            push_json_key(&mut extra, "data");
            extra.push_str(&data_extra);
        }
        if extra.len() > 1 {
            extra.push('}');
            self.extra.append_value(&extra);
        } else {
            self.extra.append_null();
        }
        self.partition.append_value(partition as i32);
        self.offset.append_value(offset as i64);
    }

    /// Takes the accumulated rows as a record batch (the builder is reset).
    pub(crate) fn finish(&mut self) -> RecordBatch {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.received_at.finish()),
        ];
        for b in &mut self.strings {
            cols.push(Arc::new(b.finish()));
        }
        for c in &mut self.data {
            cols.push(c.finish());
        }
        cols.push(Arc::new(self.extra.finish()));
        cols.push(Arc::new(self.partition.finish()));
        cols.push(Arc::new(self.offset.finish()));
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(schema::kind_schema(self.kind), cols)
            .expect("builders match the kind's schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_cost_derived_columns_and_extra() {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{Float64Type, Int64Type};
        let prices = PriceTable::shipped();
        let rows = [
            // usage only: tokens derived, priced; a sent cost_source and price_version
            // without a cost are kept in extra
            r#"{"kind":"api_cost","id":"a","time":"2026-11-20T10:00:00Z","data":{"provider":"anthropic","model":"claude-3-5-haiku-20241022","price_version":"old","cost_source":"me","usage":{"input_tokens":1000,"cache_read_input_tokens":0,"output_tokens":100}}}"#,
            // explicit tokens win; client cost wins
            r#"{"kind":"api_cost","id":"b","time":"2026-11-20T10:00:00Z","data":{"provider":"openai","model":"gpt-4o","input_tokens":5,"cost_usd":0.5,"usage":{"prompt_tokens":1000,"completion_tokens":100}}}"#,
        ];
        let mut b = KindBatchBuilder::new(Kind::ApiCost);
        for (i, r) in rows.iter().enumerate() {
            let ev = decode_envelope(r.as_bytes()).unwrap();
            b.append(&ev, 0, i as u64, r.len(), &prices);
        }
        let batch = b.finish();
        let col = |n: &str| batch.column_by_name(n).unwrap().clone();
        let ints = |n: &str| col(n).as_primitive::<Int64Type>().clone();
        let strs = |n: &str| col(n).as_string::<i32>().clone();
        assert_eq!(ints("input_tokens").values(), &[1000, 5]);
        assert_eq!(ints("output_tokens").values(), &[100, 100]);
        assert_eq!(ints("requests").values(), &[1, 1]);
        let cost = col("cost_usd").as_primitive::<Float64Type>().clone();
        assert!((cost.value(0) - (1000.0 * 0.8 + 100.0 * 4.0) / 1e6).abs() < 1e-12);
        assert_eq!(cost.value(1), 0.5);
        assert_eq!(strs("cost_source").value(0), "priced");
        assert_eq!(strs("cost_source").value(1), "client");
        assert_eq!(
            strs("price_version").value(0),
            "prices.toml 2024-11-04 anthropic/claude-3-5-haiku"
        );
        assert!(strs("price_version").is_null(1));
        let extra: serde_json::Value = serde_json::from_str(strs("extra").value(0)).unwrap();
        assert_eq!(
            extra,
            serde_json::json!({"data": {"price_version": "old", "cost_source": "me"}})
        );
        assert!(strs("extra").is_null(1));
    }
}
