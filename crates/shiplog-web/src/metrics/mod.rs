//! `GET /metrics`: the server's one registry (`prometheus-client`), in the Prometheus text
//! format 0.0.4.
//!
//! Metrics are registered once, when the server starts ([`server_registry`], then the
//! binary adds the projection's and the rules' collectors); nothing is formatted by hand.
//! Two kinds of series live in it:
//! - metrics the code updates as things happen (the ingest counters and the append-latency
//!   histogram, [`shiplog_ingest::Metrics`]);
//! - collectors that read state owned elsewhere on each scrape ([`server::ServerSeries`]:
//!   the log, admission and dedup; [`projection::ProjectionSeries`]; [`rules::RulesSeries`]).
//!
//! Why the text format 0.0.4 and not OpenMetrics: it is what `promtool check metrics` checks
//! and what every scraper reads, and in it a counter's `# HELP`/`# TYPE` name its samples'
//! `_total` name (OpenMetrics names the family without it, which promtool 2.42 rejects).

pub mod projection;
pub mod rules;
pub mod server;

use crate::auth::Scope;
use crate::{authorize, AppState};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeCounterValue as Count, EncodeGaugeValue as Gauge,
    EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use shiplog_ingest::admission::Admission;
use shiplog_ingest::{Ingestor, Metrics};
use std::sync::Arc;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder as Encoder;

/// The registry of a server: the ingest metrics and the server's own series (log,
/// admission, dedup). The caller registers the collectors of what else the node runs.
pub fn server_registry(
    ingestor: &Arc<Ingestor>,
    metrics: &Metrics,
    admission: &Arc<Admission>,
) -> Registry {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    registry.register_collector(Box::new(server::ServerSeries {
        ingestor: ingestor.clone(),
        admission: admission.clone(),
    }));
    registry
}

/// `GET /metrics` (scope `metrics`).
pub async fn metrics_text(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state.auth, &headers, Scope::Metrics) {
        return r;
    }
    let mut text = String::with_capacity(8192);
    if let Err(e) = prometheus_text::encode(&mut text, &state.registry) {
        tracing::error!(error = %e, "metrics encoding failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// The result of writing a series.
pub type Written = Result<(), std::fmt::Error>;

/// Writes one gauge of a collector (`help` as it is shown, period included).
pub fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: impl Gauge) -> Written {
    put(e, name, help, ConstGauge::new(v))
}

/// Writes one counter of a collector; `name` without its `_total` suffix, which the
/// encoder adds.
pub fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: impl Count) -> Written {
    put(e, name, help, ConstCounter::new(v))
}

fn put(e: &mut DescriptorEncoder, name: &str, help: &str, metric: impl EncodeMetric) -> Written {
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}
