//! The shiplog HTTP server (axum).
//!
//! Owns the ingest API (`POST /v1/events`), health (`GET /healthz`), metrics
//! (`GET /metrics`), the query API (`POST /v1/query`), the deploy gate (`GET /v1/gate`),
//! the dashboards and authentication (bearer tokens with scopes). It is HTTP only: the
//! ingest path itself is `shiplog-ingest`, the rules `shiplog-rules`, the queries
//! `shiplog-store`.
//!
//! Guarantees:
//! - a 2xx from `POST /v1/events` is sent only after every accepted event is durable in the
//!   log (the handler awaits [`Ingestor::ingest_valid`], which awaits `Log::append`);
//! - a request is refused as a whole only with a status that says whether to retry
//!   (4xx: fix the request; 503/507 + `Retry-After`: retry later);
//! - every rejected event is reported with its index in the body and the JSON pointer of
//!   the offending field.

pub mod auth;
pub mod backtest;
pub mod compare;
pub mod dashboards;
pub mod gate;
pub mod html;
pub mod login;
pub mod metrics;
pub mod query;

use auth::{Auth, AuthError, Principal, Scope};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde_json::json;
use shiplog_ingest::admission::Admission;
use shiplog_ingest::decode;
use shiplog_ingest::metrics::Metrics;
use shiplog_ingest::{IngestError, Ingestor};
use shiplog_log::LogError;
use std::sync::Arc;
use std::time::Instant;

/// Default request body limit: 10 MiB (also the limit after gzip decompression).
pub const DEFAULT_BODY_LIMIT: usize = 10 << 20;

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub ingestor: Arc<Ingestor>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub body_limit: usize,
    pub started: Instant,
    /// The one metrics registry, rendered by `GET /metrics` ([`metrics::server_registry`]).
    pub registry: prometheus_client::registry::Registry,
    /// DuckDB over the projections (absent on nodes that do not serve queries).
    pub query: Option<Arc<shiplog_store::QueryEngine>>,
    /// The budget of ingest request bytes in flight (503 when spent).
    pub admission: Arc<Admission>,
    /// The rules engine, whose state answers `GET /v1/gate` (absent on nodes that do not
    /// serve queries: the route is not mounted there).
    pub rules: Option<shiplog_rules::RulesEngine>,
}

/// One rejected event of a request.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Rejection {
    pub index: usize,
    pub field: String,
    pub error: String,
}

/// The body of every `POST /v1/events` answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
pub struct IngestResponse {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejection>,
    /// Set when the request was refused as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The ingest, query, health and metrics routes, and `/v1/gate` when the state has a rules
/// engine. The binary merges the dashboard routes into this router.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/v1/events", post(post_events))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics_text))
        .route("/v1/query", post(query::post_query));
    if state.rules.is_some() {
        router = router.route("/v1/gate", get(gate::get_gate)).route(
            "/v1/rules/backtest",
            get(backtest::get_backtest).post(backtest::post_backtest),
        );
    }
    router.with_state(state)
}

/// An error answer with a JSON body `{"error": …}`.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Authenticates a request and checks its scope; the `Err` is the answer to send.
// The `Err` is the response, sent at once by every caller: boxing it would only add an
// allocation to the refusal path.
#[allow(clippy::result_large_err)]
pub fn authorize(auth: &Auth, headers: &HeaderMap, scope: Scope) -> Result<Principal, Response> {
    let principal = auth
        .authenticate(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
        .map_err(|e| {
            let msg = match e {
                AuthError::Missing => "missing bearer token (Authorization: Bearer …)",
                AuthError::Unknown => "unknown token",
            };
            let mut r = error_response(StatusCode::UNAUTHORIZED, msg);
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        })?;
    if !principal.allows(scope) {
        return Err(error_response(
            StatusCode::FORBIDDEN,
            format!("this token lacks the {scope:?} scope").to_lowercase(),
        ));
    }
    Ok(principal)
}

fn refuse(state: &AppState, status: StatusCode, message: String) -> Response {
    state.metrics.requests_refused.inc();
    let body = IngestResponse {
        error: Some(message),
        ..Default::default()
    };
    let mut r = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE
        || status == StatusCode::INSUFFICIENT_STORAGE
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

async fn post_events(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let principal = match authorize(&state.auth, &parts.headers, Scope::Ingest) {
        Ok(p) => p,
        Err(r) => {
            state.metrics.requests_refused.inc();
            return r;
        }
    };
    // A header that is not visible ASCII names no type or encoding we know: 415, rather
    // than reading it as absent.
    let header_str = |name: header::HeaderName| match parts.headers.get(&name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            format!(
                "the {name} header is not readable text; use application/json, \
                 application/x-ndjson or a CloudEvents type"
            )
        }),
    };
    let (content_type, content_encoding) = match (
        header_str(header::CONTENT_TYPE),
        header_str(header::CONTENT_ENCODING),
    ) {
        (Ok(t), Ok(e)) => (t, e),
        (Err(m), _) | (_, Err(m)) => return refuse(&state, StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
    };
    // Refuse an unknown content type before reading the body.
    let format = match decode::body_format(content_type) {
        Ok(f) => f,
        Err(e) => return refuse(&state, status(e.status), e.message),
    };
    // Reserve the memory this request may hold before reading its body; refuse at once
    // when the budget is spent (the client retries after Retry-After).
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let cost = Admission::cost(content_length, state.body_limit);
    let Some(_reservation) = state.admission.try_admit(cost) else {
        // Read and discard the body (a chunk at a time, up to the limit) before answering:
        // a client still sending would otherwise see a reset instead of the 503.
        drain(body, state.body_limit).await;
        return at_capacity(&state);
    };
    let bytes = match read_body(body, state.body_limit).await {
        Ok(b) => b,
        Err(r) => return refuse(&state, r.0, r.1),
    };
    let body = match decode::decode_content(content_encoding, &bytes, state.body_limit) {
        Ok(b) => b,
        Err(e) => return refuse(&state, status(e.status), e.message),
    };
    // A decompressed body holds memory beyond the reservation made for the wire bytes.
    let _decompressed = match &body {
        std::borrow::Cow::Owned(b) => match state.admission.try_admit(b.len()) {
            Some(r) => Some(r),
            None => return at_capacity(&state),
        },
        std::borrow::Cow::Borrowed(_) => None,
    };
    let decoded = match decode::decode_body(format, &body) {
        Ok(d) => d,
        Err(e) => return refuse(&state, status(e.status), e.message),
    };

    let total = decoded.len();
    let mut rejected = Vec::new();
    let mut valid = Vec::with_capacity(total);
    for (index, result) in decoded.into_iter().enumerate() {
        match result {
            Ok(event) if !principal.allows_project(event.project()) => rejected.push(Rejection {
                index,
                field: "/project".into(),
                error: format!("this token may not write to project {:?}", event.project()),
            }),
            Ok(event) => valid.push(event),
            Err(e) => rejected.push(Rejection {
                index,
                field: e.field,
                error: e.error,
            }),
        }
    }
    state.metrics.events_rejected.inc_by(rejected.len() as u64);
    let outcome = if valid.is_empty() {
        Default::default()
    } else {
        match state.ingestor.ingest_valid(valid).await {
            Ok(o) => o,
            Err(e) => return refuse(&state, ingest_error_status(&e), e.to_string()),
        }
    };
    state
        .metrics
        .events_accepted
        .inc_by(outcome.accepted as u64);
    state
        .metrics
        .events_duplicate
        .inc_by(outcome.duplicates as u64);
    let code = if rejected.is_empty() {
        StatusCode::ACCEPTED
    } else if rejected.len() < total {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = IngestResponse {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        rejected,
        error: None,
    };
    (code, Json(body)).into_response()
}

/// Reads a body to its end, or past `limit`, keeping nothing.
async fn drain(mut body: Body, limit: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            seen += data.len();
            if seen > limit {
                break;
            }
        }
    }
}

fn at_capacity(state: &AppState) -> Response {
    refuse(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "ingest is at capacity ({} MiB of requests in flight); retry after the Retry-After delay",
            state.admission.capacity() >> 20
        ),
    )
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// The status for a failed ingest: 507 when the disk is full, 503 when the log may
/// recover (retry), 500 otherwise.
pub fn ingest_error_status(e: &IngestError) -> StatusCode {
    match e {
        IngestError::Log(LogError::NoSpace) => StatusCode::INSUFFICIENT_STORAGE,
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        IngestError::Log(LogError::RecordTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Reads a body up to `limit` bytes: over it is 413, a broken connection 400.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, (StatusCode, String)> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds the limit of {limit} bytes"),
        )),
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        )),
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let log = state.ingestor.log();
    let end: u64 = log.partitions().iter().map(|p| log.end_offset(*p)).sum();
    Json(json!({
        "status": "ok",
        "uptime_seconds": state.started.elapsed().as_secs(),
        "log_records": end,
    }))
    .into_response()
}
