//! `GET /v1/gate?project=P&env=E` (scope `read`): may this project/env be deployed now?
//!
//! Answered from the rules engine's state (rebuilt from the log, so it is current to the
//! last acknowledged event): failed migrations since the last successful deploy, threshold
//! rules in alert, and a rollback in progress. While the engine still rebuilds its state
//! the answer is 503 with `Retry-After`. `shiplog gate` is the client of this route.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

use crate::auth::Scope;
use crate::{authorize, error_response, AppState};

#[derive(Deserialize)]
pub(crate) struct GateParams {
    project: Option<String>,
    env: Option<String>,
}

pub(crate) async fn get_gate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(p): Query<GateParams>,
) -> Response {
    let principal = match authorize(&state.auth, &headers, Scope::Read) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(rules) = &state.rules else {
        return error_response(
            StatusCode::NOT_FOUND,
            "this node runs no rules engine: ask a node that serves the web role",
        );
    };
    let (Some(project), Some(env)) = (
        p.project.filter(|x| !x.is_empty()),
        p.env.filter(|x| !x.is_empty()),
    ) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "project and env are required: /v1/gate?project=P&env=E",
        );
    };
    if !principal.allows_project(&project) {
        return error_response(
            StatusCode::FORBIDDEN,
            format!("this token may not read project {project:?}"),
        );
    }
    if !rules.is_ready() {
        let mut r = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the rules state is being rebuilt from the log; retry",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    Json(rules.gate(&project, &env)).into_response()
}
