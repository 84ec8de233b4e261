//! Counters and histograms exposed at `GET /metrics` in the Prometheus text format.
//!
//! Hand-rolled on atomics: a handful of series does not warrant a metrics framework, and
//! the hot path (ingest) pays one relaxed atomic add per counter.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the append-latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A Prometheus histogram with fixed buckets.
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.buckets[i].load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    pub events_accepted: AtomicU64,
    pub events_rejected: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub requests_refused: AtomicU64,
    pub append_latency: Histogram,
}

/// A gauge or counter rendered from state owned elsewhere (log bytes, projection lag…).
pub struct ExternalSeries {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: &'static str,
    pub value: f64,
}

impl Metrics {
    pub fn observe_append(&self, d: Duration) {
        self.append_latency.observe(d);
    }

    /// Renders every series in the Prometheus text exposition format.
    pub fn render(&self, external: &[ExternalSeries]) -> String {
        let mut out = String::with_capacity(2048);
        let counters = [
            (
                "shiplog_events_accepted_total",
                "Events accepted and durable in the log.",
                &self.events_accepted,
            ),
            (
                "shiplog_events_rejected_total",
                "Events rejected by validation or authorization.",
                &self.events_rejected,
            ),
            (
                "shiplog_events_duplicate_total",
                "Events already stored (same source and id).",
                &self.events_duplicate,
            ),
            (
                "shiplog_ingest_requests_refused_total",
                "Ingest requests refused as a whole (4xx/5xx).",
                &self.requests_refused,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Relaxed)
            );
        }
        self.append_latency.render(
            &mut out,
            "shiplog_log_append_seconds",
            "Time from append call to durable acknowledgement.",
        );
        for s in external {
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} {}\n{} {}",
                s.name, s.help, s.name, s.kind, s.name, s.value
            );
        }
        out
    }
}
