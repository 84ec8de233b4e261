//! `POST /v1/query`: read-only SQL over the DuckDB views (scope `read`).
//!
//! The confinement itself (single read statement, DuckDB locked to the Parquet folder,
//! timeout) lives in `shiplog_store::QueryEngine`; this module maps its errors to statuses
//! and keeps DuckDB's blocking work off the async workers.

use crate::auth::Scope;
use crate::{authorize, error_response, AppState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use shiplog_store::QueryError;
use std::sync::Arc;
use std::time::Duration;

/// Longest a query may run.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub sql: String,
}

pub async fn post_query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let principal = match authorize(&state.auth, &headers, Scope::Read) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if principal.projects().is_some() {
        return error_response(
            StatusCode::FORBIDDEN,
            "tokens restricted to projects cannot run raw SQL (it could read other projects); \
             use the dashboards API",
        );
    }
    let Some(engine) = state.query.clone() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "queries are not served by this node",
        );
    };
    let request: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"sql\": \"…\"}}: {e}"),
            )
        }
    };
    let result =
        tokio::task::spawn_blocking(move || engine.query(&request.sql, QUERY_TIMEOUT)).await;
    match result {
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(e)) => error_response(query_error_status(&e), e.to_string()),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query task failed: {e}"),
        ),
    }
}

pub fn query_error_status(e: &QueryError) -> StatusCode {
    match e {
        QueryError::Forbidden(_) => StatusCode::FORBIDDEN,
        QueryError::Invalid(_) => StatusCode::BAD_REQUEST,
        QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
