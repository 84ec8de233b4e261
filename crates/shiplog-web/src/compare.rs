//! `GET /v1/compare?project=P&base=main[&head=COMMIT][&tool=T][&format=json|markdown|table]`
//! (scope `read`): a build against the latest successful build of the base branch, with
//! the `[[budgets]]` verdict. The comparison itself is `shiplog_store::compare`, shared with
//! `shiplog compare`; this module maps it to HTTP and keeps DuckDB off the async workers.
//!
//! 200 with the comparison (a breach is in `verdict`, not in the status: the request
//! succeeded), 400 for a missing parameter, 403 for a project the token may not read,
//! 404 when no build matches the head, 503 on a node that serves no queries.

use crate::auth::Scope;
use crate::{authorize, error_response, AppState};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use shiplog_store::compare::{self, BuildBudget, CompareError, CompareRequest};
use std::sync::Arc;

struct CompareState {
    app: Arc<AppState>,
    budgets: Vec<BuildBudget>,
}

/// The route, with the build budgets of the configuration.
pub fn routes(app: Arc<AppState>, budgets: Vec<BuildBudget>) -> Router {
    Router::new()
        .route("/v1/compare", get(get_compare))
        .with_state(Arc::new(CompareState { app, budgets }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    project: Option<String>,
    base: Option<String>,
    head: Option<String>,
    tool: Option<String>,
    format: Option<String>,
}

async fn get_compare(
    State(state): State<Arc<CompareState>>,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let principal = match authorize(&state.app.auth, &headers, Scope::Read) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let (Some(project), Some(base)) = (nonempty(p.project), nonempty(p.base)) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "project and base are required: /v1/compare?project=web-app&base=main[&head=COMMIT]",
        );
    };
    let format = p.format.unwrap_or_else(|| "json".into());
    if !matches!(format.as_str(), "json" | "markdown" | "table") {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!("format: {format:?} is not one of json, markdown, table"),
        );
    }
    if !principal.allows_project(&project) {
        return error_response(
            StatusCode::FORBIDDEN,
            format!("this token may not read project {project:?}"),
        );
    }
    let Some(engine) = state.app.query.clone() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "queries are not served by this node",
        );
    };
    let req = CompareRequest {
        project,
        base,
        head: nonempty(p.head),
        tool: nonempty(p.tool),
    };
    let budgets = state.budgets.clone();
    let result =
        tokio::task::spawn_blocking(move || compare::compare(&engine, &req, &budgets)).await;
    let comparison = match result {
        Ok(Ok(c)) => c,
        Ok(Err(CompareError::NoHead(m))) => return error_response(StatusCode::NOT_FOUND, m),
        Ok(Err(CompareError::Query(e))) => {
            return error_response(crate::query::query_error_status(&e), e.to_string())
        }
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("compare task failed: {e}"),
            )
        }
    };
    match format.as_str() {
        "markdown" => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            compare::render_markdown(&comparison),
        )
            .into_response(),
        "table" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            compare::render_table(&comparison),
        )
            .into_response(),
        _ => Json(comparison).into_response(),
    }
}
