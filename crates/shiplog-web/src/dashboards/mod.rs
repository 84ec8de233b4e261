//! Dashboards: server-rendered HTML pages with inline SVG charts, and their JSON form.
//!
//! Every page is a dashboard file (`dashboards/<name>.toml`, see `docs/dashboards.md`):
//! panels with SQL over the DuckDB views, a chart kind, a unit and thresholds. The built-in
//! files are compiled into the binary; `dashboards_dir` adds or overrides them by name. A
//! broken file or panel is reported on its page (naming the file and the panel) and in the
//! log; the other panels and dashboards still serve.
//!
//! Routes (scope `read` when tokens are configured; a token restricted to projects sees
//! only its projects):
//!
//! | route | |
//! |---|---|
//! | `GET /` | overview |
//! | `GET /builds`, `/deploys`, `/migrations`, `/costs`, `/decisions` | the built-in pages |
//! | `GET /deployments/{id}` | one deployment: build, migrations before, checks after, cost since, decisions |
//! | `GET /d/{name}` | any dashboard by name (folder dashboards) |
//! | `GET /v1/dashboards` | the dashboards and their load errors |
//! | `GET /v1/dashboards/{name}` | every panel's data, threshold and status as JSON |
//!
//! Query string filters: `project`, `env`, `range` (`24h`, `7d`, `30d` (default), `90d`,
//! `custom` with `from`/`to` as `YYYY-MM-DD` or RFC 3339), `deployment` (JSON API of the
//! `deployment` dashboard).

pub mod chart;
pub mod engine;
mod judgement;
mod pages;
pub mod spec;

use crate::auth::{Auth, Principal, Scope};
use crate::{authorize, error_response};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, NaiveDate, Utc};
pub use engine::{
    default_budgets, default_thresholds, Budget, Ctx, PanelData, ThresholdRule, Thresholds,
};
use serde_json::{json, Value};
pub use spec::{Dashboard, PanelSpec, Status};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Longest a panel query may run.
pub const PANEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// What the dashboard routes need.
pub struct DashboardState {
    pub auth: Auth,
    pub query: Option<Arc<shiplog_store::QueryEngine>>,
    pub dashboards: BTreeMap<String, Dashboard>,
    pub thresholds: Thresholds,
    /// Panel queries running at once, server-wide (one per core): DuckDB parallelizes
    /// within a query, and each query in flight holds its own scan buffers, so this bounds
    /// the memory a burst of page loads can take.
    pub query_slots: Arc<tokio::sync::Semaphore>,
    /// The rules engine, for the rollback judgement on a deployment's page (its open
    /// windows; concluded ones are read from the decisions).
    pub rules: Option<shiplog_rules::RulesEngine>,
}

impl DashboardState {
    /// Loads the built-ins and `dir`'s files.
    pub fn new(
        auth: Auth,
        query: Option<Arc<shiplog_store::QueryEngine>>,
        dir: Option<&std::path::Path>,
        thresholds: Thresholds,
    ) -> Self {
        DashboardState {
            auth,
            query,
            dashboards: spec::load_all(dir),
            thresholds,
            query_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            rules: None,
        }
    }
}

/// The dashboard routes (merge them into the main router).
pub fn routes(state: Arc<DashboardState>) -> Router {
    Router::new()
        .route("/", get(|s, h, q| page(s, h, q, "overview".to_string())))
        .route(
            "/builds",
            get(|s, h, q| page(s, h, q, "builds".to_string())),
        )
        .route(
            "/deploys",
            get(|s, h, q| page(s, h, q, "deploys".to_string())),
        )
        .route(
            "/migrations",
            get(|s, h, q| page(s, h, q, "migrations".to_string())),
        )
        .route("/costs", get(|s, h, q| page(s, h, q, "costs".to_string())))
        .route(
            "/decisions",
            get(|s, h, q| page(s, h, q, "decisions".to_string())),
        )
        .route("/d/{name}", get(named_page))
        .route("/deployments/{id}", get(deployment_page))
        .route("/v1/dashboards", get(list_json))
        .route("/v1/dashboards/{name}", get(dashboard_json))
        .route_layer(axum::middleware::from_fn(crate::login::redirect_to_login))
        .merge(crate::login::routes(state.auth.clone()))
        .with_state(state)
}

/// The path of a dashboard's page.
pub fn page_path(name: &str) -> String {
    match name {
        "overview" => "/".into(),
        "builds" | "deploys" | "migrations" | "costs" | "decisions" => format!("/{name}"),
        other => format!("/d/{other}"),
    }
}

type Params = HashMap<String, String>;

/// Reads the filters of the query string.
pub fn parse_ctx(q: &Params, now: DateTime<Utc>) -> Result<Ctx, String> {
    let opt = |k: &str| -> Result<Option<String>, String> {
        match q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            Some(s) if s.len() > 200 => Err(format!("{k} is longer than 200 characters")),
            Some(s) => Ok(Some(s.to_string())),
            None => Ok(None),
        }
    };
    let range = opt("range")?.unwrap_or_else(|| {
        if q.contains_key("from") {
            "custom".into()
        } else {
            "30d".into()
        }
    });
    let parse_t = |k: &str, end: bool| -> Result<Option<DateTime<Utc>>, String> {
        let Some(s) = opt(k)? else { return Ok(None) };
        if let Ok(d) = NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
            let d = if end { d + Duration::days(1) } else { d };
            return Ok(Some(d.and_hms_opt(0, 0, 0).unwrap().and_utc()));
        }
        DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| format!("{k} = {s:?}: expected YYYY-MM-DD or an RFC 3339 time"))
    };
    let (from, to) = match range.as_str() {
        "24h" => (now - Duration::hours(24), now),
        "7d" => (now - Duration::days(7), now),
        "30d" => (now - Duration::days(30), now),
        "90d" => (now - Duration::days(90), now),
        "custom" => {
            let to = parse_t("to", true)?.unwrap_or(now);
            let from = parse_t("from", false)?.unwrap_or(to - Duration::days(30));
            if from >= to {
                return Err("from must be before to".into());
            }
            (from, to)
        }
        other => {
            return Err(format!(
                "range = {other:?}: expected 24h, 7d, 30d, 90d or custom"
            ))
        }
    };
    Ok(Ctx {
        project: opt("project")?,
        env: opt("env")?,
        from,
        to,
        range,
        deployment: opt("deployment")?,
        allowed: None,
    })
}

/// Authenticates a page or API request: the bearer header, else the `shiplog_token`
/// cookie (so a browser can open the pages when tokens are configured).
#[allow(clippy::result_large_err)] // the `Err` is the response, sent at once
fn auth(state: &DashboardState, headers: &HeaderMap) -> Result<Principal, Response> {
    if headers.get(header::AUTHORIZATION).is_none() {
        if let Some(token) = crate::auth::cookie_token(headers) {
            let mut h = headers.clone();
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                h.insert(header::AUTHORIZATION, v);
                return authorize(&state.auth, &h, Scope::Read);
            }
        }
    }
    authorize(&state.auth, headers, Scope::Read)
}

/// One panel's outcome on a page: its spec (absent when it did not parse) and data.
pub struct PanelOutcome<'a> {
    pub spec: Option<&'a PanelSpec>,
    pub data: PanelData,
}

fn failed(id: String, title: String, error: String) -> PanelData {
    PanelData {
        id,
        title,
        kind: spec::ChartKind::Table,
        unit: None,
        metric: None,
        thresholds: None,
        status: Status::None,
        value: None,
        dora_level: None,
        columns: vec![],
        rows: vec![],
        cell_status: vec![],
        error: Some(error),
        query_ms: 0.0,
    }
}

/// Runs every panel of a dashboard (concurrently) and judges the results.
pub async fn run_dashboard<'a>(
    state: &DashboardState,
    d: &'a Dashboard,
    ctx: &Ctx,
) -> Vec<PanelOutcome<'a>> {
    let mut futs = Vec::new();
    for (i, p) in d.panels.iter().enumerate() {
        let engine = state.query.clone();
        let slots = state.query_slots.clone();
        let ctx = ctx.clone();
        let file = d.file.clone();
        futs.push(async move {
            let spec = match p {
                Ok(s) => s,
                Err(e) => {
                    return PanelOutcome {
                        spec: None,
                        data: failed(
                            format!("panel_{}", i + 1),
                            format!("Panel {}", i + 1),
                            e.clone(),
                        ),
                    }
                }
            };
            let name = format!("{file}, panel {} \"{}\"", i + 1, spec.title);
            let mut data = failed(spec.id.clone(), spec.title.clone(), String::new());
            data.kind = spec.kind;
            data.unit = spec.unit.clone();
            data.metric = spec.metric.clone();
            data.error = None;
            let Some(engine) = engine else {
                data.error = Some("queries are not served by this node".into());
                return PanelOutcome {
                    spec: Some(spec),
                    data,
                };
            };
            let (sql, params) = match engine::expand(&spec.sql, &ctx) {
                Ok(x) => x,
                Err(e) => {
                    data.error = Some(format!("{name}: {e}"));
                    return PanelOutcome {
                        spec: Some(spec),
                        data,
                    };
                }
            };
            let _slot = slots.acquire_owned().await;
            let started = Instant::now();
            let r = tokio::task::spawn_blocking(move || {
                engine.query_internal(&sql, &params, PANEL_TIMEOUT)
            })
            .await;
            data.query_ms = started.elapsed().as_secs_f64() * 1000.0;
            match r {
                Ok(Ok(r)) => {
                    data.columns = r.columns;
                    data.rows = r.rows;
                }
                Ok(Err(e)) => data.error = Some(format!("{name}: {e}")),
                Err(e) => data.error = Some(format!("{name}: query task failed: {e}")),
            }
            PanelOutcome {
                spec: Some(spec),
                data,
            }
        });
    }
    let mut out = futures::future::join_all(futs).await;
    for o in &mut out {
        if let (Some(spec), None) = (o.spec, &o.data.error) {
            engine::judge(spec, ctx, &state.thresholds, &mut o.data);
        }
        if let Some(e) = &o.data.error {
            tracing::warn!(dashboard = %d.name, "{e}");
        }
    }
    out
}

/// Projects and environments that have data (for the filter menus), and the event count.
async fn facts(state: &DashboardState, ctx: &Ctx) -> (Vec<String>, Vec<String>, i64) {
    let Some(engine) = state.query.clone() else {
        return (vec![], vec![], 0);
    };
    let mut c = ctx.clone();
    c.project = None;
    c.env = None;
    let Ok((sql, params)) = engine::expand(
        "SELECT project, env, count(*) AS n FROM events WHERE {scope} GROUP BY ALL ORDER BY 1, 2",
        &c,
    ) else {
        return (vec![], vec![], 0);
    };
    let r =
        tokio::task::spawn_blocking(move || engine.query_internal(&sql, &params, PANEL_TIMEOUT))
            .await;
    let Ok(Ok(r)) = r else {
        return (vec![], vec![], 0);
    };
    let mut projects = Vec::new();
    let mut envs = Vec::new();
    let mut n = 0;
    for row in r.rows {
        if let Some(p) = row[0].as_str() {
            if !projects.contains(&p.to_string()) {
                projects.push(p.to_string());
            }
        }
        if let Some(e) = row[1].as_str() {
            if !envs.contains(&e.to_string()) {
                envs.push(e.to_string());
            }
        }
        n += row[2].as_i64().unwrap_or(0);
    }
    envs.sort();
    (projects, envs, n)
}

fn restrict(ctx: &mut Ctx, principal: &Principal) {
    if let Some(p) = principal.projects() {
        ctx.allowed = Some(p.to_vec());
    }
}

async fn render_page(
    state: &DashboardState,
    headers: &HeaderMap,
    q: &Params,
    name: &str,
    deployment: Option<String>,
) -> Response {
    let principal = match auth(state, headers) {
        Ok(p) => p,
        Err(r) => return pages::auth_page(r),
    };
    let session = crate::login::cookie_session(headers, &principal);
    let session = session.as_deref();
    let Some(d) = state.dashboards.get(name) else {
        return (
            StatusCode::NOT_FOUND,
            Html(pages::not_found(state, session, name)),
        )
            .into_response();
    };
    let (mut ctx, filter_error) = match parse_ctx(q, Utc::now()) {
        Ok(c) => (c, None),
        Err(e) => (
            parse_ctx(&Params::new(), Utc::now()).expect("defaults parse"),
            Some(e),
        ),
    };
    if deployment.is_some() {
        ctx.deployment = deployment;
        ctx.range = "90d".into();
        ctx.from = ctx.to - Duration::days(365);
    }
    restrict(&mut ctx, &principal);
    if let (Some(p), Some(allowed)) = (&ctx.project, &ctx.allowed) {
        if !allowed.contains(p) {
            return (
                StatusCode::FORBIDDEN,
                Html(pages::message_page(
                    state,
                    session,
                    "Forbidden",
                    &format!("this token may not read project {p:?}"),
                )),
            )
                .into_response();
        }
    }
    let judgement = async {
        let Some(id) = ctx.deployment.clone() else {
            return maud::html! {};
        };
        let _slot = state.query_slots.acquire().await;
        let allowed = ctx.allowed.clone();
        let sources = judgement::Sources {
            query: state.query.clone(),
            rules: state.rules.clone(),
        };
        tokio::task::spawn_blocking(move || judgement::render(&sources, &id, allowed.as_deref()))
            .await
            .unwrap_or_else(|_| maud::html! {})
    };
    let shadow = async {
        match (&state.rules, name) {
            (Some(rules), "decisions") => judgement::dry_run_backtest(rules, &ctx).await,
            _ => maud::html! {},
        }
    };
    let (facts, outcomes, judged, shadow) = tokio::join!(
        facts(state, &ctx),
        run_dashboard(state, d, &ctx),
        judgement,
        shadow
    );
    let extra = maud::html! { (judged) (shadow) };
    let html = pages::dashboard_page(
        state,
        session,
        d,
        &ctx,
        &facts,
        &outcomes,
        filter_error.as_deref(),
        extra,
    );
    let status = if filter_error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

async fn page(
    State(state): State<Arc<DashboardState>>,
    headers: HeaderMap,
    Query(q): Query<Params>,
    name: String,
) -> Response {
    render_page(&state, &headers, &q, &name, None).await
}

async fn named_page(
    State(state): State<Arc<DashboardState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<Params>,
) -> Response {
    if !spec::valid_name(&name) {
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::message_page(
                &state,
                None,
                "Invalid dashboard name",
                "names are a-z, 0-9, _ and -",
            )),
        )
            .into_response();
    }
    render_page(&state, &headers, &q, &name, None).await
}

async fn deployment_page(
    State(state): State<Arc<DashboardState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Response {
    if id.is_empty() || id.len() > 200 {
        return (
            StatusCode::BAD_REQUEST,
            Html(pages::message_page(
                &state,
                None,
                "Invalid deployment id",
                "1 to 200 characters",
            )),
        )
            .into_response();
    }
    render_page(&state, &headers, &q, "deployment", Some(id)).await
}

async fn list_json(State(state): State<Arc<DashboardState>>, headers: HeaderMap) -> Response {
    if let Err(r) = auth(&state, &headers) {
        return r;
    }
    let list: Vec<Value> = state
        .dashboards
        .values()
        .map(|d| {
            let errors: Vec<&String> = d
                .error
                .iter()
                .chain(d.panels.iter().filter_map(|p| p.as_ref().err()))
                .collect();
            json!({
                "name": d.name, "title": d.title, "file": d.file, "page": page_path(&d.name),
                "panels": d.panels.len(), "errors": errors,
            })
        })
        .collect();
    Json(json!({ "dashboards": list })).into_response()
}

async fn dashboard_json(
    State(state): State<Arc<DashboardState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<Params>,
) -> Response {
    let principal = match auth(&state, &headers) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if !spec::valid_name(&name) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid dashboard name (a-z, 0-9, _ and -)",
        );
    }
    let Some(d) = state.dashboards.get(&name) else {
        return error_response(
            StatusCode::NOT_FOUND,
            format!("no dashboard named {name:?}"),
        );
    };
    let mut ctx = match parse_ctx(&q, Utc::now()) {
        Ok(c) => c,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    restrict(&mut ctx, &principal);
    if let (Some(p), Some(allowed)) = (&ctx.project, &ctx.allowed) {
        if !allowed.contains(p) {
            return error_response(
                StatusCode::FORBIDDEN,
                format!("this token may not read project {p:?}"),
            );
        }
    }
    let outcomes = run_dashboard(&state, d, &ctx).await;
    let status = outcomes
        .iter()
        .map(|o| o.data.status)
        .max()
        .unwrap_or(Status::None);
    let panels: Vec<&PanelData> = outcomes.iter().map(|o| &o.data).collect();
    Json(json!({
        "name": d.name,
        "title": d.title,
        "file": d.file,
        "error": d.error,
        "filters": ctx,
        "status": status,
        "panels": panels,
    }))
    .into_response()
}
