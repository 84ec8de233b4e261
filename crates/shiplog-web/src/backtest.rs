//! `GET /v1/rules/backtest` and `POST /v1/rules/backtest` (scope `read`): the deployments
//! in the log judged by the server's rollback rules (GET) or by a candidate rule set (POST,
//! the body a TOML document with `[[rules]]`), without acting. `shiplog rules backtest` is
//! the client; the decisions page shows the same report for the rules in dry run.
//!
//! Query parameters: `rule` (one rule), `since` (`90d`, `12h`: deployments that went live
//! since then; default 90 days), `format` (`json`, default, or `table`). A token restricted
//! to some projects sees the rules of those projects only.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use shiplog_rules::backtest::{BacktestOptions, BacktestReport};
use shiplog_rules::RulesError;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Scope;
use crate::Principal;
use crate::{authorize, error_response, AppState};

/// Deployments judged by default: those that went live in the last 90 days.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(90 * 86_400);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    rule: Option<String>,
    since: Option<String>,
    format: Option<String>,
}

pub(crate) async fn get_backtest(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    answer(&state, &headers, params, None).await
}

pub(crate) async fn post_backtest(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    body: String,
) -> Response {
    answer(&state, &headers, params, Some(body)).await
}

/// `90d`, `12h`, `30m` or any humantime duration.
pub fn parse_since(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("since: {s:?} is not a duration such as 90d or 12h: {e}"))
}

async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    candidate: Option<String>,
) -> Response {
    let principal = match authorize(&state.auth, headers, Scope::Read) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if candidate.as_deref().is_some_and(|b| b.trim().is_empty()) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "body: a TOML document with the candidate [[rules]] is required (GET backtests the server's rules)",
        );
    }
    let Some(rules) = &state.rules else {
        return error_response(
            StatusCode::NOT_FOUND,
            "this node runs no rules engine: ask a node that serves the web role",
        );
    };
    let format = p.format.unwrap_or_else(|| "json".into());
    if !matches!(format.as_str(), "json" | "table") {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!("format: {format:?} is not one of json, table"),
        );
    }
    let since = match p.since.as_deref().map(parse_since).transpose() {
        Ok(d) => d.unwrap_or(DEFAULT_SINCE),
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    let now = Utc::now();
    let opts = BacktestOptions {
        since: chrono::Duration::from_std(since)
            .ok()
            .and_then(|d| now.checked_sub_signed(d)),
        rule: p.rule.filter(|r| !r.is_empty()),
        now,
    };
    let report = match rules.backtest(candidate.as_deref(), &opts).await {
        Ok(r) => visible(r, &principal),
        Err(e @ RulesError::Config { .. }) => {
            return error_response(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if format == "table" {
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            report.table(true),
        )
            .into_response();
    }
    Json(report).into_response()
}

/// The rules of the projects `principal` may read.
fn visible(mut report: BacktestReport, principal: &Principal) -> BacktestReport {
    report
        .rules
        .retain(|r| principal.allows_project(&r.project));
    report
}
