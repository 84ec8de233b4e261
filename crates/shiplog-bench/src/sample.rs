//! The one event generator the tests and the benchmarks share: a valid event of each
//! collector kind, with realistic fields, and request bodies of them whose ids change per
//! request at almost no cost.
//!
//! The end-to-end tests post [`sample_event`]s (`tests/support` re-exports it), the ingest,
//! decode, freshness, soak and RSS benchmarks post [`numbered_event`]s and
//! [`BodyTemplate`]s of them. Tests read some values back (a build's `duration_ms` of
//! 41000, `bundle_bytes` of 812345, its first phase `transform`, `env` `production`): keep
//! them.

use serde_json::{json, Value};

/// The collector kinds, in the order [`numbered_event`] cycles through them.
pub const KINDS: [&str; 5] = ["build", "deploy", "migration", "api_cost", "check"];

/// A valid event of `kind` (one of [`KINDS`]) with the given source, id and project; about
/// 300-500 bytes of JSON. Panics on another kind.
pub fn sample_event(kind: &str, source: &str, id: &str, project: &str) -> Value {
    let data = match kind {
        "build" => json!({"tool": "vite", "tool_version": "8.3.4", "mode": "production",
            "success": true, "duration_ms": 41_000,
            "phases": [{"name": "transform", "duration_ms": 30_100},
                       {"name": "render", "duration_ms": 8_000}],
            "modules_transformed": 1234, "bundle_bytes": 812_345, "gzip_bytes": 245_000,
            "chunks": [{"name": "index", "bytes": 500_000, "gzip_bytes": 150_000}]}),
        "deploy" => json!({"status": "succeeded", "url": "https://web-abc.vercel.app",
            "provider": "vercel", "duration_ms": 52_000, "triggered_by": "ci"}),
        "migration" => json!({"tool": "alembic", "database": "main", "version": "20261120_01",
            "name": "add_index", "status": "applied", "duration_ms": 1200}),
        "api_cost" => json!({"provider": "openai", "model": "gpt-4o", "input_tokens": 1200,
            "output_tokens": 300, "cached_tokens": 0, "requests": 1, "cost_usd": 0.006,
            "feature": "summaries"}),
        "check" => json!({"name": "error_rate", "value": 0.01, "unit": "ratio"}),
        other => panic!("no sample for kind {other}"),
    };
    json!({
        "id": id, "kind": kind, "source": source, "time": "2026-11-20T10:00:00Z",
        "project": project, "env": "production", "commit": "abc123", "branch": "main",
        "deployment_id": "dpl_1", "data": data
    })
}

/// Event `n` of benchmark run `run` (kinds in turn, id `bench-<run>-<n>`), as JSON text.
pub fn numbered_event(run: u64, n: u64) -> String {
    let kind = KINDS[(n % KINDS.len() as u64) as usize];
    sample_event(kind, "bench", &format!("bench-{run}-{n}"), "web-app").to_string()
}

/// A request body of [`numbered_event`]s built once, whose ids are patched in place per
/// request, so a load generator spends almost no CPU (it shares the machine with the
/// servers it measures).
pub struct BodyTemplate {
    bytes: Vec<u8>,
    /// Byte positions of each event's 12-digit sequence number.
    id_digits: Vec<usize>,
}

const ID_WIDTH: usize = 12;

impl BodyTemplate {
    /// A body of `batch` events (a JSON array when more than one).
    pub fn new(run: u64, batch: usize) -> Self {
        let mut bytes = Vec::new();
        let mut id_digits = Vec::new();
        if batch > 1 {
            bytes.push(b'[');
        }
        for i in 0..batch as u64 {
            if i > 0 {
                bytes.push(b',');
            }
            let marker = 999_999_999_900 + i;
            let ev = numbered_event(run, marker);
            let at = ev.find(&marker.to_string()).expect("id in event");
            id_digits.push(bytes.len() + at);
            bytes.extend_from_slice(ev.as_bytes());
        }
        if batch > 1 {
            bytes.push(b']');
        }
        BodyTemplate { bytes, id_digits }
    }

    /// The body with the events numbered from `first`.
    pub fn render(&self, first: u64) -> Vec<u8> {
        let mut out = self.bytes.clone();
        for (i, &at) in self.id_digits.iter().enumerate() {
            let mut n = first + i as u64;
            for d in out[at..at + ID_WIDTH].iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        out
    }

    /// The POST of the body with the events numbered from `first`, as the load generators
    /// send it.
    pub fn post(&self, client: &reqwest::Client, url: &str, first: u64) -> reqwest::RequestBuilder {
        client
            .post(url)
            .header("content-type", "application/json")
            .body(self.render(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiplog_events::{Event, Origin};

    #[test]
    fn every_sample_is_valid() {
        for kind in KINDS {
            let e = sample_event(kind, "s", "i-1", "p");
            Event::from_json(e.clone(), Origin::Collector)
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }

    #[test]
    fn a_template_renders_distinct_valid_events() {
        let t = BodyTemplate::new(3, 7);
        let a: Vec<Value> = serde_json::from_slice(&t.render(0)).unwrap();
        let b: Vec<Value> = serde_json::from_slice(&t.render(7)).unwrap();
        let ids: std::collections::BTreeSet<_> = a
            .iter()
            .chain(&b)
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 14);
        assert_eq!(a[0]["id"], "bench-3-000000000000");
        for e in a.into_iter().chain(b) {
            Event::from_json(e, Origin::Collector).unwrap();
        }
        let one: Value = serde_json::from_slice(&BodyTemplate::new(1, 1).render(42)).unwrap();
        assert_eq!(one["id"], "bench-1-000000000042");
    }
}
