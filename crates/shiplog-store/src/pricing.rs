//! API cost: provider usage objects → token columns, and the dated price table that prices
//! `api_cost` records sent without `cost_usd` (see docs/costs.md).
//!
//! # Token columns (one definition for every provider)
//!
//! | column | meaning |
//! |---|---|
//! | `input_tokens` | **all** input (prompt) tokens, cache reads and cache writes included |
//! | `cached_tokens` | input tokens read from the provider's prompt cache (a part of `input_tokens`) |
//! | `cache_write_tokens` | input tokens written to the cache (Anthropic; a part of `input_tokens`) |
//! | `output_tokens` | output tokens, reasoning tokens included |
//! | `reasoning_tokens` | reasoning tokens (OpenAI; a part of `output_tokens`) |
//!
//! So `input_tokens - cached_tokens - cache_write_tokens` is what is billed at the input
//! rate. From `data.usage`, when the record does not carry the column itself:
//!
//! - OpenAI Chat Completions (`prompt_tokens`, …): `input_tokens = prompt_tokens` (it
//!   includes the cached tokens), `cached_tokens = prompt_tokens_details.cached_tokens`,
//!   `output_tokens = completion_tokens`, `reasoning_tokens =
//!   completion_tokens_details.reasoning_tokens`.
//! - OpenAI Responses (`input_tokens`, `input_tokens_details`, …): the same, from
//!   `input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens`,
//!   `output_tokens_details.reasoning_tokens`.
//! - Anthropic Messages (`cache_read_input_tokens` / `cache_creation_input_tokens`):
//!   Anthropic's `input_tokens` *exclude* the cache, so `input_tokens = input_tokens +
//!   cache_read_input_tokens + cache_creation_input_tokens`, `cached_tokens =
//!   cache_read_input_tokens`, `cache_write_tokens = cache_creation_input_tokens` (of
//!   which `cache_creation.ephemeral_1h_input_tokens` are priced at the 1-hour rate).
//! - `{input_tokens, output_tokens}` alone means the same in both APIs.
//!
//! Fields the client sent in `data` always win over the usage object; `requests` is 1
//! when absent.

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The shipped table (`crates/shiplog-store/prices.toml`), compiled in.
pub const SHIPPED_PRICES: &str = include_str!("../prices.toml");

/// Token counts of one record, by the definitions of the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cached: Option<i64>,
    pub cache_write: Option<i64>,
    pub reasoning: Option<i64>,
    /// Of `cache_write`, the tokens written with Anthropic's 1-hour TTL (priced at
    /// `cache_write_1h`); not a column.
    pub cache_write_1h: Option<i64>,
}

impl Tokens {
    /// Each field of `self`, else of `other`.
    pub fn or(self, other: Tokens) -> Tokens {
        Tokens {
            input: self.input.or(other.input),
            output: self.output.or(other.output),
            cached: self.cached.or(other.cached),
            cache_write: self.cache_write.or(other.cache_write),
            reasoning: self.reasoning.or(other.reasoning),
            cache_write_1h: self.cache_write_1h.or(other.cache_write_1h),
        }
    }
}

fn count(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.round() as i64)
        }),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f.round() as i64),
        _ => None,
    }
}

fn nested(o: &Map<String, Value>, obj: &str, field: &str) -> Option<i64> {
    count(o.get(obj)?.as_object()?.get(field))
}

/// Normalises a provider's usage object (OpenAI Chat Completions, OpenAI Responses or
/// Anthropic Messages, as returned) into [`Tokens`]. Unknown shapes give what they have
/// of `input_tokens`/`output_tokens`.
pub fn usage_tokens(usage: &Value) -> Tokens {
    let Some(o) = usage.as_object() else {
        return Tokens::default();
    };
    if o.contains_key("prompt_tokens") || o.contains_key("completion_tokens") {
        // OpenAI Chat Completions: prompt_tokens include the cached ones.
        return Tokens {
            input: count(o.get("prompt_tokens")),
            output: count(o.get("completion_tokens")),
            cached: nested(o, "prompt_tokens_details", "cached_tokens"),
            cache_write: None,
            reasoning: nested(o, "completion_tokens_details", "reasoning_tokens"),
            cache_write_1h: None,
        };
    }
    let read = count(o.get("cache_read_input_tokens"));
    let write = count(o.get("cache_creation_input_tokens"));
    if read.is_some() || write.is_some() {
        // Anthropic Messages: input_tokens exclude cache reads and writes.
        let base = count(o.get("input_tokens"));
        let input = match (base, read, write) {
            (None, None, None) => None,
            (b, r, w) => Some(b.unwrap_or(0) + r.unwrap_or(0) + w.unwrap_or(0)),
        };
        return Tokens {
            input,
            output: count(o.get("output_tokens")),
            cached: read,
            cache_write: write,
            reasoning: None,
            cache_write_1h: nested(o, "cache_creation", "ephemeral_1h_input_tokens"),
        };
    }
    // OpenAI Responses (input_tokens include the cached ones), or a bare
    // {input_tokens, output_tokens} which means the same for every provider.
    Tokens {
        input: count(o.get("input_tokens")),
        output: count(o.get("output_tokens")),
        cached: nested(o, "input_tokens_details", "cached_tokens"),
        cache_write: None,
        reasoning: nested(o, "output_tokens_details", "reasoning_tokens"),
        cache_write_1h: None,
    }
}

/// One price: USD per million tokens, effective from a date on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `YYYY-MM-DD` (UTC).
    pub effective_from: String,
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
    #[serde(default)]
    pub cache_write_1h: Option<f64>,
    /// Where the figures come from (URL and date read).
    pub source: String,
    #[serde(default)]
    pub verified: Option<bool>,
    #[serde(default)]
    pub note: Option<String>,
    /// The table file the entry comes from (`prices.toml` for the shipped one).
    #[serde(skip)]
    pub origin: String,
    #[serde(skip)]
    pub from: Option<NaiveDate>,
}

impl PriceEntry {
    /// `<table> <effective_from> <provider>/<model>`, stored in `price_version`.
    pub fn version(&self) -> String {
        format!(
            "{} {} {}/{}",
            self.origin, self.effective_from, self.provider, self.model
        )
    }

    /// The cost of `t` at this price (USD, rounded to 1e-10 so sums print cleanly).
    /// Missing counts are 0; cached and cache-write tokens without their own rate are
    /// billed at `input`.
    pub fn cost(&self, t: &Tokens) -> f64 {
        let input = t.input.unwrap_or(0).max(0) as f64;
        let cached = t.cached.unwrap_or(0).max(0) as f64;
        let write = t.cache_write.unwrap_or(0).max(0) as f64;
        let write_1h = (t.cache_write_1h.unwrap_or(0).max(0) as f64).min(write);
        let uncached = (input - cached - write).max(0.0);
        let cached_rate = self.cached_input.unwrap_or(self.input);
        let write_rate = self.cache_write.unwrap_or(self.input);
        let write_1h_rate = self.cache_write_1h.unwrap_or(write_rate);
        let output = t.output.unwrap_or(0).max(0) as f64;
        let usd_per_million = uncached * self.input
            + cached * cached_rate
            + (write - write_1h) * write_rate
            + write_1h * write_1h_rate
            + output * self.output;
        (usd_per_million / 1e6 * 1e10).round() / 1e10
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default)]
    price: Vec<PriceEntry>,
}

/// The price table: the shipped entries, possibly overridden and extended by a file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PriceTable {
    entries: Vec<PriceEntry>,
}

/// How a record's cost was obtained (the `cost_source` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostSource {
    /// The client sent `cost_usd`.
    Client,
    /// Priced from the table at projection time.
    Priced,
    /// No `cost_usd`, and no price (or no token count) to compute it.
    Unpriced,
}

impl CostSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CostSource::Client => "client",
            CostSource::Priced => "priced",
            CostSource::Unpriced => "unpriced",
        }
    }
}

/// Whether `rest` (what follows a model name) names a dated snapshot or a moving alias of
/// it: `-2024-08-06`, `-20241022`, `-latest`, `@20241022`.
fn is_snapshot_suffix(rest: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(r) = rest.strip_prefix('@') {
        return digits(r, 8);
    }
    let Some(r) = rest.strip_prefix('-') else {
        return false;
    };
    if r == "latest" || digits(r, 8) {
        return true;
    }
    let p: Vec<&str> = r.split('-').collect();
    p.len() == 3 && digits(p[0], 4) && digits(p[1], 2) && digits(p[2], 2)
}

impl PriceTable {
    /// Parses one table file; `origin` names it in `price_version` and in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PriceTable, String> {
        let file: TableFile =
            toml::from_str(text).map_err(|e| format!("{origin}: {}", e.to_string().trim()))?;
        let mut entries = Vec::with_capacity(file.price.len());
        for (i, mut e) in file.price.into_iter().enumerate() {
            let name = format!("{origin}: price[{i}] ({}/{})", e.provider, e.model);
            e.provider = e.provider.trim().to_ascii_lowercase();
            e.model = e.model.trim().to_ascii_lowercase();
            e.aliases = e
                .aliases
                .iter()
                .map(|a| a.trim().to_ascii_lowercase())
                .collect();
            if e.provider.is_empty() || e.model.is_empty() {
                return Err(format!("{name}: provider and model must not be empty"));
            }
            let from =
                NaiveDate::parse_from_str(e.effective_from.trim(), "%Y-%m-%d").map_err(|_| {
                    format!(
                        "{name}: effective_from {:?} is not a YYYY-MM-DD date",
                        e.effective_from
                    )
                })?;
            for (field, v) in [
                ("input", Some(e.input)),
                ("output", Some(e.output)),
                ("cached_input", e.cached_input),
                ("cache_write", e.cache_write),
                ("cache_write_1h", e.cache_write_1h),
            ] {
                if let Some(v) = v {
                    if !v.is_finite() || v < 0.0 {
                        return Err(format!(
                            "{name}: {field} = {v} must be a price >= 0 (USD per million tokens)"
                        ));
                    }
                }
            }
            if e.source.trim().is_empty() {
                return Err(format!(
                    "{name}: source must say where the figures come from"
                ));
            }
            e.from = Some(from);
            e.effective_from = from.format("%Y-%m-%d").to_string();
            e.origin = origin.to_string();
            entries.push(e);
        }
        Ok(PriceTable { entries })
    }

    /// The shipped table (parsed once).
    pub fn shipped() -> Arc<PriceTable> {
        static SHIPPED: OnceLock<Arc<PriceTable>> = OnceLock::new();
        SHIPPED
            .get_or_init(|| {
                Arc::new(
                    PriceTable::parse(SHIPPED_PRICES, "prices.toml")
                        .expect("the shipped prices.toml is valid"),
                )
            })
            .clone()
    }

    /// The shipped table overridden and extended by the table file at `path`: an entry of
    /// the file with the same provider, model and `effective_from` as a shipped one
    /// replaces it, the others are added.
    pub fn shipped_with_file(path: &Path) -> Result<PriceTable, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the price table {}: {e}", path.display()))?;
        let origin = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let extra = PriceTable::parse(&text, &origin)
            .map_err(|e| e.replacen(&origin, &path.display().to_string(), 1))?;
        let mut table = (*PriceTable::shipped()).clone();
        table.merge(extra);
        Ok(table)
    }

    /// Adds `other`'s entries, replacing those with the same provider, model and date.
    pub fn merge(&mut self, other: PriceTable) {
        for e in other.entries {
            self.entries
                .retain(|s| !(s.provider == e.provider && s.model == e.model && s.from == e.from));
            self.entries.push(e);
        }
    }

    pub fn entries(&self) -> &[PriceEntry] {
        &self.entries
    }

    /// The canonical model of the table `model` stands for: an exact name or alias, else
    /// the longest name or alias of which `model` is a dated snapshot.
    fn canonical(&self, provider: &str, model: &str) -> Option<&str> {
        let mut best: Option<(&str, usize)> = None;
        for e in self.entries.iter().filter(|e| e.provider == provider) {
            for name in std::iter::once(&e.model).chain(&e.aliases) {
                if name == model {
                    return Some(&e.model);
                }
                if let Some(rest) = model.strip_prefix(name.as_str()) {
                    if is_snapshot_suffix(rest) && best.is_none_or(|(_, l)| name.len() > l) {
                        best = Some((&e.model, name.len()));
                    }
                }
            }
        }
        best.map(|(m, _)| m)
    }

    /// The entry pricing `provider`/`model` on the UTC date of `at_micros`.
    pub fn lookup(&self, provider: &str, model: &str, at_micros: i64) -> Option<&PriceEntry> {
        let provider = provider.trim().to_ascii_lowercase();
        let mut model = model.trim().to_ascii_lowercase();
        if let Some(m) = model.strip_prefix(&format!("{provider}/")) {
            model = m.to_string();
        }
        let canonical = self.canonical(&provider, &model)?;
        let date = chrono::DateTime::from_timestamp_micros(at_micros)?.date_naive();
        self.entries
            .iter()
            .filter(|e| e.provider == provider && e.model == canonical)
            .filter(|e| e.from.is_some_and(|f| f <= date))
            .max_by_key(|e| e.from)
    }
}

/// What the projection knows of one `api_cost` record.
#[derive(Debug, Clone, Default)]
pub struct CostInput<'a> {
    pub provider: Option<&'a str>,
    pub model: Option<&'a str>,
    /// Event time, µs since the epoch.
    pub at_micros: i64,
    /// The token columns the client sent.
    pub explicit: Tokens,
    pub requests: Option<i64>,
    /// `data.usage`, when it is an object.
    pub usage: Option<&'a Value>,
    pub cost_usd: Option<f64>,
    pub price_version: Option<&'a str>,
}

/// The values of the derived columns.
#[derive(Debug, Clone, PartialEq)]
pub struct CostOutcome {
    pub tokens: Tokens,
    pub requests: i64,
    pub cost_usd: Option<f64>,
    pub price_version: Option<String>,
    pub source: CostSource,
}

/// Token columns, `requests`, the cost and its source for one record (module docs).
pub fn price_record(input: &CostInput<'_>, table: &PriceTable) -> CostOutcome {
    let from_usage = input.usage.map(usage_tokens).unwrap_or_default();
    let mut tokens = input.explicit.or(from_usage);
    if input.explicit.cache_write.is_some() {
        // The 1-hour share is only known from the usage object it came with.
        tokens.cache_write_1h = None;
    }
    let requests = input.requests.unwrap_or(1);
    if let Some(c) = input.cost_usd {
        return CostOutcome {
            tokens,
            requests,
            cost_usd: Some(c),
            price_version: input.price_version.map(str::to_string),
            source: CostSource::Client,
        };
    }
    let has_tokens = tokens.input.is_some() || tokens.output.is_some();
    let entry = match (input.provider, input.model) {
        (Some(p), Some(m)) if has_tokens => table.lookup(p, m, input.at_micros),
        _ => None,
    };
    match entry {
        Some(e) => CostOutcome {
            tokens,
            requests,
            cost_usd: Some(e.cost(&tokens)),
            price_version: Some(e.version()),
            source: CostSource::Priced,
        },
        None => CostOutcome {
            tokens,
            requests,
            cost_usd: None,
            price_version: input.price_version.map(str::to_string),
            source: CostSource::Unpriced,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn micros(date: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(&format!("{date}T12:00:00Z"))
            .unwrap()
            .timestamp_micros()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn openai_chat_completions_usage() {
        let u = json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}});
        let t = usage_tokens(&u);
        assert_eq!(t.input, Some(2006));
        assert_eq!(t.cached, Some(1920));
        assert_eq!(t.output, Some(300));
        assert_eq!(t.reasoning, Some(128));
        assert_eq!(t.cache_write, None);
    }

    #[test]
    fn openai_responses_usage() {
        let u = json!({"input_tokens": 328, "input_tokens_details": {"cached_tokens": 256},
            "output_tokens": 52, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 380});
        let t = usage_tokens(&u);
        assert_eq!(
            (t.input, t.cached, t.output, t.reasoning),
            (Some(328), Some(256), Some(52), Some(0))
        );
    }

    #[test]
    fn anthropic_usage_counts_the_cache_into_input() {
        let u = json!({"input_tokens": 50, "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 2000, "output_tokens": 400,
            "cache_creation": {"ephemeral_5m_input_tokens": 600, "ephemeral_1h_input_tokens": 400},
            "service_tier": "standard"});
        let t = usage_tokens(&u);
        assert_eq!(t.input, Some(3050));
        assert_eq!(t.cached, Some(2000));
        assert_eq!(t.cache_write, Some(1000));
        assert_eq!(t.cache_write_1h, Some(400));
        assert_eq!(t.output, Some(400));
        // a bare {input_tokens, output_tokens} is the same in every API
        let t = usage_tokens(&json!({"input_tokens": 10, "output_tokens": 2}));
        assert_eq!((t.input, t.output, t.cached), (Some(10), Some(2), None));
        assert_eq!(usage_tokens(&json!([1])), Tokens::default());
    }

    #[test]
    fn snapshot_suffixes() {
        for s in ["-2024-08-06", "-20241022", "-latest", "@20241022"] {
            assert!(is_snapshot_suffix(s), "{s}");
        }
        for s in [
            "",
            "-mini",
            "-1-20250805",
            "-2024-08",
            "-audio-preview",
            "x-20241022",
        ] {
            assert!(!is_snapshot_suffix(s), "{s}");
        }
    }

    #[test]
    fn lookup_exact_alias_snapshot_and_dates() {
        let t = PriceTable::shipped();
        let at = micros("2026-11-21");
        let e = t.lookup("openai", "gpt-4o-2024-11-20", at).unwrap();
        assert_eq!(e.model, "gpt-4o");
        assert_eq!(e.input, 2.50);
        // an exact snapshot entry beats the snapshot match of its family
        assert_eq!(
            t.lookup("openai", "gpt-4o-2024-05-13", at).unwrap().input,
            5.00
        );
        // the longest name wins: gpt-4o-mini, not gpt-4o
        assert_eq!(
            t.lookup("OpenAI", "gpt-4o-mini-2024-07-18", at)
                .unwrap()
                .model,
            "gpt-4o-mini"
        );
        assert_eq!(
            t.lookup("anthropic", "claude-3-5-sonnet-20241022", at)
                .unwrap()
                .model,
            "claude-3-5-sonnet"
        );
        assert_eq!(
            t.lookup("anthropic", "claude-sonnet-4-20250514", at)
                .unwrap()
                .model,
            "claude-sonnet-4"
        );
        assert_eq!(
            t.lookup("anthropic", "claude-sonnet-4-5-20250929", at)
                .unwrap()
                .model,
            "claude-sonnet-4-5"
        );
        assert_eq!(
            t.lookup("anthropic", "claude-opus-4-1-20250805", at)
                .unwrap()
                .model,
            "claude-opus-4-1"
        );
        assert_eq!(
            t.lookup("anthropic", "claude-opus-4-0", at).unwrap().model,
            "claude-opus-4"
        );
        assert_eq!(
            t.lookup("anthropic", "claude-3-7-sonnet-latest", at)
                .unwrap()
                .model,
            "claude-3-7-sonnet"
        );
        assert_eq!(
            t.lookup("openai", "openai/gpt-4.1", at).unwrap().model,
            "gpt-4.1"
        );
        // effective dates: o3 before and after the June 2025 cut, and before launch
        assert_eq!(
            t.lookup("openai", "o3-2025-04-16", micros("2025-05-01"))
                .unwrap()
                .input,
            10.0
        );
        assert_eq!(
            t.lookup("openai", "o3-2025-04-16", micros("2025-06-10"))
                .unwrap()
                .input,
            2.0
        );
        assert!(t.lookup("openai", "o3", micros("2025-01-01")).is_none());
        // unknown models and providers stay unpriced
        assert!(t.lookup("openai", "gpt-4o-audio-preview", at).is_none());
        assert!(t.lookup("mistral", "mistral-large", at).is_none());
        assert!(t.lookup("anthropic", "gpt-4o", at).is_none());
    }

    #[test]
    fn costs_and_sources() {
        let t = PriceTable::shipped();
        let usage = json!({"prompt_tokens": 2000, "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 1000}});
        let out = price_record(
            &CostInput {
                provider: Some("openai"),
                model: Some("gpt-4o-mini"),
                at_micros: micros("2026-11-21"),
                usage: Some(&usage),
                ..Default::default()
            },
            &t,
        );
        assert_eq!(out.source, CostSource::Priced);
        assert_eq!(out.requests, 1);
        // 1000 × 0.15 + 1000 × 0.075 + 500 × 0.60 per million
        assert!(close(out.cost_usd.unwrap(), 0.000525), "{out:?}");
        assert_eq!(
            out.price_version.as_deref(),
            Some("prices.toml 2024-07-18 openai/gpt-4o-mini")
        );

        // Anthropic with 5m and 1h cache writes
        let usage = json!({"input_tokens": 100, "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 10000, "output_tokens": 1000,
            "cache_creation": {"ephemeral_5m_input_tokens": 600, "ephemeral_1h_input_tokens": 400}});
        let out = price_record(
            &CostInput {
                provider: Some("anthropic"),
                model: Some("claude-sonnet-4-20250514"),
                at_micros: micros("2026-11-21"),
                usage: Some(&usage),
                ..Default::default()
            },
            &t,
        );
        // 100 × 3 + 10000 × 0.30 + 600 × 3.75 + 400 × 6 + 1000 × 15 per million
        let want = (300.0 + 3000.0 + 2250.0 + 2400.0 + 15000.0) / 1e6;
        assert!(close(out.cost_usd.unwrap(), want), "{out:?}");
        assert_eq!(out.tokens.input, Some(11100));

        // explicit fields win over the usage object
        let out = price_record(
            &CostInput {
                provider: Some("anthropic"),
                model: Some("claude-sonnet-4"),
                at_micros: micros("2026-11-21"),
                explicit: Tokens {
                    output: Some(10),
                    ..Default::default()
                },
                requests: Some(3),
                usage: Some(&usage),
                ..Default::default()
            },
            &t,
        );
        assert_eq!(out.tokens.output, Some(10));
        assert_eq!(out.tokens.input, Some(11100));
        assert_eq!(out.requests, 3);

        // a client cost always wins
        let out = price_record(
            &CostInput {
                provider: Some("openai"),
                model: Some("gpt-4o"),
                at_micros: micros("2026-11-21"),
                usage: Some(&usage),
                cost_usd: Some(1.5),
                price_version: Some("mine-1"),
                ..Default::default()
            },
            &t,
        );
        assert_eq!(out.source, CostSource::Client);
        assert_eq!(out.cost_usd, Some(1.5));
        assert_eq!(out.price_version.as_deref(), Some("mine-1"));

        // unknown model, or no tokens at all: unpriced
        for (model, usage) in [
            ("gpt-99", Some(json!({"prompt_tokens": 1}))),
            ("gpt-4o", None),
        ] {
            let out = price_record(
                &CostInput {
                    provider: Some("openai"),
                    model: Some(model),
                    at_micros: micros("2026-11-21"),
                    usage: usage.as_ref(),
                    ..Default::default()
                },
                &t,
            );
            assert_eq!(out.source, CostSource::Unpriced, "{model}");
            assert_eq!(out.cost_usd, None);
            assert_eq!(out.price_version, None);
        }
    }

    #[test]
    fn override_file_replaces_and_extends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("our-prices.toml");
        std::fs::write(
            &p,
            r#"
[[price]]
provider = "openai"
model = "gpt-4o"
effective_from = "2024-10-02"
input = 2.0
output = 8.0
source = "negotiated contract, 2026-11-01"

[[price]]
provider = "mistral"
model = "mistral-large"
effective_from = "2025-01-01"
input = 2.0
output = 6.0
source = "https://mistral.ai/pricing (2026-11-21)"
"#,
        )
        .unwrap();
        let t = PriceTable::shipped_with_file(&p).unwrap();
        let at = micros("2026-11-21");
        let e = t.lookup("openai", "gpt-4o", at).unwrap();
        assert_eq!((e.input, e.origin.as_str()), (2.0, "our-prices.toml"));
        assert_eq!(e.version(), "our-prices.toml 2024-10-02 openai/gpt-4o");
        assert!(t.lookup("mistral", "mistral-large-2411", at).is_none());
        assert!(t.lookup("mistral", "mistral-large", at).is_some());
        assert_eq!(t.entries().len(), PriceTable::shipped().entries().len() + 1);

        std::fs::write(
            &p,
            "[[price]]\nprovider = \"x\"\nmodel = \"y\"\neffective_from = \"soon\"\ninput = 1\noutput = 1\nsource = \"s\"\n",
        )
        .unwrap();
        let e = PriceTable::shipped_with_file(&p).unwrap_err();
        assert!(
            e.contains("price[0]") && e.contains("effective_from") && e.contains("our-prices"),
            "{e}"
        );
        std::fs::write(&p, "[[price]]\nprovider = \"x\"\nmodel = \"y\"\neffective_from = \"2025-01-01\"\ninput = 1\noutput = 1\nsource = \"s\"\ninptu = 3\n").unwrap();
        let e = PriceTable::shipped_with_file(&p).unwrap_err();
        assert!(e.contains("inptu"), "{e}");
    }

    #[test]
    fn every_shipped_entry_cites_a_source() {
        let t = PriceTable::shipped();
        assert!(t.entries().len() >= 20);
        for e in t.entries() {
            assert!(e.source.starts_with("https://"), "{}", e.model);
            assert!(e.verified.is_some(), "{}", e.model);
        }
    }
}
