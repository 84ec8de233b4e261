//! The counters and the histogram the ingest path keeps, as `prometheus-client` metrics.
//!
//! The server registers them once in its registry ([`Metrics::register`]; `shiplog-web`
//! exposes it at `GET /metrics`); the hot path pays one relaxed atomic add per counter and
//! one short lock per append for the histogram. Benchmarks and tests use unregistered
//! metrics ([`Metrics::default`]).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Upper bounds (seconds) of the append-latency histogram buckets.
pub const APPEND_LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The ingest path's counters (the HTTP server counts requests and events in them).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub events_accepted: Counter,
    pub events_rejected: Counter,
    pub events_duplicate: Counter,
    pub requests_refused: Counter,
    pub append_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            events_accepted: Counter::default(),
            events_rejected: Counter::default(),
            events_duplicate: Counter::default(),
            requests_refused: Counter::default(),
            append_latency: Histogram::new(APPEND_LATENCY_BUCKETS),
        }
    }
}

impl Metrics {
    pub fn observe_append(&self, d: Duration) {
        self.append_latency.observe(d.as_secs_f64());
    }

    /// Registers every series in `registry` (counters get their `_total` suffix there; the
    /// registry ends each help text with a period).
    pub fn register(&self, registry: &mut Registry) {
        let counters = [
            (
                "shiplog_events_accepted",
                "Events accepted and durable in the log",
                &self.events_accepted,
            ),
            (
                "shiplog_events_rejected",
                "Events rejected by validation or authorization",
                &self.events_rejected,
            ),
            (
                "shiplog_events_duplicate",
                "Events already stored (same source and id)",
                &self.events_duplicate,
            ),
            (
                "shiplog_ingest_requests_refused",
                "Ingest requests refused as a whole (4xx/5xx)",
                &self.requests_refused,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "shiplog_log_append_seconds",
            "Time from append call to durable acknowledgement",
            self.append_latency.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;

    #[test]
    fn series_keep_their_names_in_the_text_format() {
        let m = Metrics::default();
        m.events_accepted.inc_by(6);
        m.observe_append(Duration::from_millis(3));
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains(
            "# HELP shiplog_events_accepted_total Events accepted and durable in the log.\n\
             # TYPE shiplog_events_accepted_total counter\nshiplog_events_accepted_total 6\n"
        ));
        assert!(text.contains("shiplog_log_append_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("shiplog_log_append_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("shiplog_log_append_seconds_count 1\n"));
    }
}
