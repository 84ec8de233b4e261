//! HTML of the dashboard pages: layout, filters, panels, empty states. No JavaScript is
//! needed; the filter form submits with GET.

use super::chart::{self, fmt_value, ChartArgs};
use super::engine::{dora_legend, num, Ctx, PanelData};
use super::spec::{ChartKind, Dashboard, PanelSpec, Status};
use super::{page_path, DashboardState, PanelOutcome};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

use crate::html::{percent_encode, COMPONENT};

fn url_enc(s: &str) -> String {
    percent_encode(s, COMPONENT)
}

const CSS: &str = r#"
:root{--bg:#f5f6f8;--card:#fff;--ink:#1f2328;--muted:#59636e;--line:#e3e6ea;--accent:#0072b2;
--good:#1a7f37;--good-bg:#dcf5e4;--warn:#8a5a00;--warn-bg:#fff1c9;--bad:#b33c00;--bad-bg:#ffe6da}
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;background:var(--bg);color:var(--ink);font-size:15px;line-height:1.45}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.top{background:#14202e;color:#fff;display:flex;align-items:center;gap:28px;padding:0 28px;height:56px}
.brand{font-weight:700;font-size:18px;letter-spacing:.2px;color:#fff}.brand span{color:#56b4e9}
.top nav{display:flex;gap:4px;flex-wrap:wrap}.top nav a{color:#c9d3de;padding:7px 12px;border-radius:7px;font-size:14px}
.top nav a:hover{background:#223247;text-decoration:none}.top nav a.on{background:#2b3f57;color:#fff}
main{max-width:1480px;margin:0 auto;padding:22px 28px 48px}
.head{display:flex;justify-content:space-between;align-items:flex-end;gap:20px;flex-wrap:wrap;margin-bottom:18px}
h1{font-size:24px;margin:0 0 4px}.sub{color:var(--muted);margin:0;font-size:14px}
form.filters{display:flex;gap:10px;align-items:flex-end;flex-wrap:wrap;background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 12px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:var(--muted);gap:3px}
form.filters select,form.filters input{font:inherit;font-size:14px;padding:5px 8px;border:1px solid #cfd5dc;border-radius:6px;background:#fff;min-width:110px}
form.filters button{font:inherit;font-size:14px;padding:6px 14px;border-radius:6px;border:0;background:var(--accent);color:#fff;cursor:pointer}
.grid{display:grid;grid-template-columns:repeat(12,minmax(0,1fr));gap:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:16px 18px;box-shadow:0 1px 2px rgba(20,32,46,.04);min-width:0}
.w-full{grid-column:span 12}.w-half{grid-column:span 6}.w-third{grid-column:span 4}.w-quarter{grid-column:span 3}
@media(max-width:1100px){.w-half,.w-third{grid-column:span 12}.w-quarter{grid-column:span 6}}
.card header{display:flex;justify-content:space-between;align-items:flex-start;gap:10px}
.card h2{font-size:15px;margin:0;font-weight:600}
.desc{color:var(--muted);font-size:13px;margin:4px 0 8px}
.pill{display:inline-flex;align-items:center;gap:4px;font-size:12px;font-weight:600;padding:2px 9px;border-radius:999px;white-space:nowrap}
.pill.good{color:var(--good);background:var(--good-bg)}.pill.warning{color:var(--warn);background:var(--warn-bg)}.pill.bad{color:var(--bad);background:var(--bad-bg)}
figure.chart{margin:6px 0 0}figure.chart svg{width:100%;height:auto;display:block}
ul.legend{list-style:none;display:flex;flex-wrap:wrap;gap:6px 16px;padding:0;margin:8px 0 0;font-size:13px;color:var(--muted)}
ul.legend i{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:6px;vertical-align:-1px}
ul.legend i.line{height:3px;border-radius:2px;vertical-align:3px;width:16px}ul.legend i.band{opacity:.35}
ul.legend i.circle{border-radius:50%}
.judgement .rule{margin:6px 0 18px}.judgement h3{font-size:15px;margin:4px 0}.judgement .reason{font-size:14px;margin:4px 0}.judgement .evidence{font-size:13px;margin:10px 0 2px}
.stat{font-size:34px;font-weight:650;margin:8px 0 2px;letter-spacing:-.5px}
.stat.good{color:var(--good)}.stat.warning{color:var(--warn)}.stat.bad{color:var(--bad)}
.statnote{color:var(--muted);font-size:12.5px}
.tablewrap{overflow-x:auto;margin-top:6px}
table{border-collapse:collapse;width:100%;font-size:13.5px}
th{text-align:left;color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.3px;border-bottom:1px solid var(--line);padding:6px 8px;white-space:nowrap}
td{border-bottom:1px solid #f0f2f4;padding:6px 8px;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th.num{text-align:right}
td.good{color:var(--good);font-weight:600}td.warning{color:var(--warn);font-weight:600}td.bad{color:var(--bad);font-weight:600}
td.err{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px;color:var(--bad);max-width:520px;white-space:pre-wrap}
.muted{color:var(--muted)}.empty{color:var(--muted);font-size:14px;padding:26px 0;text-align:center}
.panel-error{border-color:#f1b9a0;background:#fff8f5}.panel-error h2{color:var(--bad)}
.panel-error pre{white-space:pre-wrap;font-size:12.5px;margin:6px 0 0}
.banner{background:#fff8e1;border:1px solid #f3d48a;border-radius:10px;padding:10px 14px;margin-bottom:16px}
.welcome{max-width:900px}.welcome pre{background:#14202e;color:#e6edf3;padding:14px 16px;border-radius:10px;overflow-x:auto;font-size:13px}
.welcome h2{font-size:18px;margin:18px 0 6px}
footer{color:var(--muted);font-size:12px;margin-top:28px;text-align:center}
form.signout{margin-left:auto;display:flex;align-items:center;gap:10px;font-size:13px;color:#c9d3de}
form.signout button{font:inherit;font-size:13px;padding:5px 12px;border-radius:7px;border:1px solid #3a4f69;background:transparent;color:#fff;cursor:pointer}
form.signout button:hover{background:#223247}
"#;

fn nav(state: &DashboardState, current: &str, qs: &str) -> Markup {
    let mut items: Vec<(&i64, &Dashboard)> = state
        .dashboards
        .values()
        .filter_map(|d| d.nav.as_ref().map(|n| (n, d)))
        .collect();
    items.sort_by_key(|(n, d)| (**n, d.name.clone()));
    html! {
        @for (_, d) in items {
            a href={ (page_path(&d.name)) (qs) } class=[(d.name == current).then_some("on")] { (d.title) }
        }
    }
}

/// The header's sign-out form, for a browser signed in with the cookie (`session` is the
/// token's name, see [`crate::login::cookie_session`]). A same-origin `POST /logout`.
fn sign_out(session: Option<&str>) -> Markup {
    html! {
        @if let Some(name) = session {
            form.signout method="post" action="/logout" {
                span title="signed in with this token" { (name) }
                button type="submit" { "Sign out" }
            }
        }
    }
}

fn layout(
    state: &DashboardState,
    session: Option<&str>,
    current: &str,
    qs: &str,
    title: &str,
    body: Markup,
) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) " · shiplog" }
                style { (PreEscaped(CSS)) }
            }
            body {
                div.top {
                    a.brand href={ "/" (qs) } { "ship" span { "log" } }
                    nav { (nav(state, current, qs)) }
                    (sign_out(session))
                }
                main {
                    (body)
                    footer {
                        "shiplog · charts rendered on the server · "
                        a href="/v1/dashboards" { "JSON API" }
                    }
                }
            }
        }
    }
    .into_string()
}

fn filter_qs(ctx: &Ctx) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &ctx.project {
        parts.push(format!("project={}", url_enc(p)));
    }
    if let Some(e) = &ctx.env {
        parts.push(format!("env={}", url_enc(e)));
    }
    if ctx.range != "30d" && ctx.deployment.is_none() {
        parts.push(format!("range={}", url_enc(&ctx.range)));
        if ctx.range == "custom" {
            parts.push(format!("from={}", ctx.from.format("%Y-%m-%d")));
            parts.push(format!(
                "to={}",
                (ctx.to - chrono::Duration::seconds(1)).format("%Y-%m-%d")
            ));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn select(name: &str, label: &str, all: &str, options: &[String], current: Option<&str>) -> Markup {
    let mut opts: Vec<&str> = options.iter().map(String::as_str).collect();
    if let Some(c) = current {
        if !opts.contains(&c) {
            opts.push(c);
        }
    }
    html! {
        label {
            (label)
            select name=(name) {
                option value="" { (all) }
                @for v in opts {
                    option value=(v) selected[Some(v) == current] { (v) }
                }
            }
        }
    }
}

fn filters(ctx: &Ctx, projects: &[String], envs: &[String]) -> Markup {
    let ranges = [
        ("24h", "Last 24 hours"),
        ("7d", "Last 7 days"),
        ("30d", "Last 30 days"),
        ("90d", "Last 90 days"),
        ("custom", "Custom"),
    ];
    let (from, to) = if ctx.range == "custom" {
        (
            ctx.from.format("%Y-%m-%d").to_string(),
            (ctx.to - chrono::Duration::seconds(1))
                .format("%Y-%m-%d")
                .to_string(),
        )
    } else {
        (String::new(), String::new())
    };
    html! {
        form.filters method="get" {
            (select("project", "Project", "All projects", projects, ctx.project.as_deref()))
            (select("env", "Environment", "All environments", envs, ctx.env.as_deref()))
            label {
                "Time range"
                select name="range" {
                    @for (v, l) in ranges {
                        option value=(v) selected[ctx.range == v] { (l) }
                    }
                }
            }
            label { "From" input type="date" name="from" value=(from); }
            label { "To" input type="date" name="to" value=(to); }
            button type="submit" { "Apply" }
        }
    }
}

fn pill(status: Status, text: Option<&str>) -> Markup {
    let (icon, word) = match status {
        Status::None => return html! {},
        Status::Good => ("✓", "good"),
        Status::Warning => ("!", "warning"),
        Status::Bad => ("✕", "bad"),
    };
    html! {
        span class={ "pill " (status.as_str()) } { (icon) " " (text.unwrap_or(word)) }
    }
}

fn pretty(name: &str) -> String {
    let s = name.replace('_', " ");
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// A column header: `duration_s` → `Duration (s)`, `spend_usd` → `Spend (USD)`.
fn header(name: &str) -> String {
    for (suffix, unit) in [
        ("_ms", " (ms)"),
        ("_s", " (s)"),
        ("_usd", " (USD)"),
        ("_hours", " (h)"),
    ] {
        if let Some(base) = name.strip_suffix(suffix) {
            return pretty(base) + unit;
        }
    }
    pretty(name)
}

/// The unit of a table column, from its name's suffix.
fn column_unit(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    [
        ("_ms", "ms"),
        ("_s", "s"),
        ("_bytes", "bytes"),
        ("bytes", "bytes"),
        ("_usd", "usd"),
        ("usd", "usd"),
        ("_pct", "percent"),
        ("rate", "ratio"),
        ("_hours", "hours"),
        ("tokens", "tokens"),
    ]
    .iter()
    .find(|(suffix, _)| n.ends_with(suffix))
    .map(|(_, u)| *u)
}

/// A table cell's content, and whether it is a number (right-aligned).
fn cell(col: &str, v: &Value) -> (Markup, bool) {
    match v {
        Value::Null => (html! { span.muted { "—" } }, false),
        Value::Bool(true) => (html! { "✓ yes" }, false),
        Value::Bool(false) => (html! { "✕ no" }, false),
        Value::Number(_) => {
            let f = num(v).unwrap_or(0.0);
            let s = match column_unit(col) {
                Some(u) => fmt_value(f, Some(u)),
                None if f.fract() == 0.0 => format!("{f:.0}"),
                None => format!("{f:.3}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string(),
            };
            (html! { (s) }, true)
        }
        Value::String(s) => {
            if col.ends_with("deployment_id") || col == "deployment" {
                return (
                    html! { a href={ "/deployments/" (url_enc(s)) } { (s) } },
                    false,
                );
            }
            if let Some(t) = chart::parse_time(v).filter(|_| s.len() >= 19) {
                return (html! { (t.format("%b %-d, %H:%M")) }, false);
            }
            if s.starts_with("https://") && !s.contains(char::is_whitespace) {
                let short = s.trim_start_matches("https://");
                let short = if short.chars().count() > 42 {
                    format!("{}…", short.chars().take(41).collect::<String>())
                } else {
                    short.to_string()
                };
                return (
                    html! { a href=(s) rel="noopener noreferrer" { (short) } },
                    false,
                );
            }
            if col == "commit" && s.len() > 10 {
                return (html! { code { (&s[..10]) } }, false);
            }
            (html! { (s) }, false)
        }
        other => (html! { (other.to_string()) }, false),
    }
}

fn table(o: &PanelOutcome) -> Markup {
    let d = &o.data;
    let numeric: Vec<bool> = (0..d.columns.len())
        .map(|ci| d.rows.iter().any(|r| r[ci].is_number()))
        .collect();
    html! {
        div.tablewrap {
            table {
                thead {
                    tr {
                        @for (ci, c) in d.columns.iter().enumerate() {
                            th class=[numeric[ci].then_some("num")] { (header(c)) }
                        }
                    }
                }
                tbody {
                    @for (ri, row) in d.rows.iter().take(200).enumerate() {
                        tr {
                            @for (ci, v) in row.iter().enumerate() {
                                (table_cell(d, ri, ci, v))
                            }
                        }
                    }
                }
            }
        }
        @if d.rows.len() > 200 {
            p.muted { "Showing 200 of " (d.rows.len()) " rows." }
        }
    }
}

fn table_cell(d: &PanelData, ri: usize, ci: usize, v: &Value) -> Markup {
    let (text, is_num) = cell(&d.columns[ci], v);
    let st = d
        .cell_status
        .get(ri)
        .and_then(|s| s.get(ci))
        .copied()
        .unwrap_or(Status::None);
    let mut classes = Vec::new();
    if is_num {
        classes.push("num");
    }
    if st != Status::None {
        classes.push(st.as_str());
    }
    if d.columns[ci] == "error" && !v.is_null() {
        classes.push("err");
    }
    let icon = match st {
        Status::Good => "✓ ",
        Status::Warning => "! ",
        Status::Bad => "✕ ",
        Status::None => "",
    };
    html! { td class=(classes.join(" ")) { (icon) (text) } }
}

/// A card that reports an error instead of its content.
fn error_card(width: &str, title: &str, error: &str) -> Markup {
    html! {
        section class={ "card w-" (width) " panel-error" } {
            header { h2 { "⚠ " (title) } }
            pre { (error) }
        }
    }
}

fn panel_html(o: &PanelOutcome, ctx: &Ctx) -> Markup {
    let d = &o.data;
    let Some(spec) = o.spec else {
        return error_card("full", "Panel error", d.error.as_deref().unwrap_or(""));
    };
    let width = spec.width.clone().unwrap_or_else(|| match spec.kind {
        ChartKind::Stat => "quarter".into(),
        ChartKind::Table | ChartKind::Timeline => "full".into(),
        _ => "half".into(),
    });
    if let Some(e) = &d.error {
        return error_card(&width, &spec.title, e);
    }
    let status_text = d.dora_level.map(|level| format!("DORA: {level}"));
    let empty = d.rows.is_empty()
        || (spec.kind == ChartKind::Stat
            && d.value.is_none()
            && d.rows.first().is_none_or(|r| r.iter().all(Value::is_null)));
    let hint = spec.empty.clone().unwrap_or_else(|| {
        if ctx.range != "90d" && ctx.deployment.is_none() {
            "No data for these filters in this time range. Try a longer range or another project."
                .into()
        } else {
            "No data for these filters.".into()
        }
    });
    html! {
        section class={ "card w-" (width) } id={ "p-" (spec.id) } data-kind=(format!("{:?}", spec.kind)) data-status=(d.status.as_str()) {
            header { h2 { (spec.title) } (pill(d.status, status_text.as_deref())) }
            @if let Some(desc) = &spec.description {
                p.desc { (desc) }
            }
            @if empty {
                p.empty { (hint) }
            } @else {
                (panel_body(o, spec, &width))
            }
        }
    }
}

fn panel_body(o: &PanelOutcome, spec: &PanelSpec, width: &str) -> Markup {
    let d = &o.data;
    match spec.kind {
        ChartKind::Stat => {
            let vi = d.columns.iter().position(|c| c == "value").unwrap_or(0);
            let row = &d.rows[0];
            let text = match row.get(vi) {
                Some(v) if v.is_number() => {
                    html! { (fmt_value(num(v).unwrap_or(0.0), spec.unit.as_deref())) }
                }
                Some(Value::Null) | None => html! { "—" },
                Some(v) => cell(&d.columns[vi], v).0,
            };
            let mut notes = Vec::new();
            if let Some(i) = d.columns.iter().position(|c| c == "detail") {
                if let Some(s) = row[i].as_str() {
                    notes.push(s.to_string());
                }
            }
            if let Some(dora) = spec.dora {
                notes.push(dora_legend(dora).to_string());
            } else if let Some(b) = d.thresholds {
                let u = spec.unit.as_deref();
                let cmp = if b.higher_is_better { "≥" } else { "≤" };
                notes.push(format!(
                    "good {cmp} {} · warning {cmp} {}",
                    fmt_value(b.good, u),
                    fmt_value(b.warning, u)
                ));
            }
            html! {
                div class={ "stat " (d.status.as_str()) } { (text) }
                div.statnote {
                    @for (i, n) in notes.iter().enumerate() {
                        @if i > 0 { br; }
                        (n)
                    }
                }
            }
        }
        ChartKind::Table => table(o),
        kind => {
            let (w, ht) = match width {
                "full" => (1380, 300),
                "third" => (460, 280),
                "quarter" => (340, 240),
                _ => (690, 300),
            };
            chart::figure_or_error(chart::render(&ChartArgs {
                kind,
                unit: spec.unit.as_deref(),
                y_label: spec.y_label.as_deref(),
                columns: &d.columns,
                rows: &d.rows,
                band: d.thresholds,
                width: w,
                height: ht,
            }))
        }
    }
}

const CURL: &str = r#"curl -X POST http://127.0.0.1:7070/v1/events \
  -H 'Content-Type: application/json' \
  -d '{"id": "build-1", "kind": "build", "source": "ci", "project": "web-app",
       "env": "production", "commit": "3f2a9c1",
       "data": {"tool": "vite", "success": true, "duration_ms": 48200,
                "bundle_bytes": 812345, "gzip_bytes": 241000}}'"#;

fn welcome() -> Markup {
    html! {
        section.card.w-full.welcome {
            h2 { "No events yet" }
            p {
                "shiplog is running, but nothing has been sent to it. Dashboards fill in as soon as events arrive "
                "(about a second after they are accepted)."
            }
            h2 { "Send a first build" }
            pre { (CURL) }
            h2 { "Or" }
            ul {
                li { "add the Vite plugin (" code { "vite-plugin-shiplog" } ") to report every " code { "vite build" } ";" }
                li { "report deploys from CI: " code { "shiplog emit deploy --status succeeded --env production …" } ";" }
                li { "wrap migrations: " code { "shiplog migrate -- alembic upgrade head" } ";" }
                li {
                    "or explore with demo data: " code { "shiplog serve --demo" }
                    " on an empty data dir (this is what " code { "make run" } " does)."
                }
            }
            p.muted { "Event kinds: build, deploy, migration, api_cost, check — see PRODUCT.md for their fields." }
        }
    }
}

/// A dashboard's page; `session` is the token name of a cookie sign-in (a "Sign out"
/// button in the header), `None` otherwise. `extra`: sections computed beside the panels
/// (a deployment's rollback judgement, the dry-run backtest).
#[allow(clippy::too_many_arguments)] // one call site, each argument a different part of the page
pub fn dashboard_page(
    state: &DashboardState,
    session: Option<&str>,
    d: &Dashboard,
    ctx: &Ctx,
    facts: &(Vec<String>, Vec<String>, i64),
    outcomes: &[PanelOutcome],
    filter_error: Option<&str>,
    extra: Markup,
) -> String {
    let qs = filter_qs(ctx);
    let (title, sub) = match &ctx.deployment {
        Some(id) => (format!("Deployment {id}"), "Its build, the migrations before it, the checks after it, the cost since, and the decisions about it.".to_string()),
        None => (d.title.clone(), d.description.clone().unwrap_or_default()),
    };
    let no_data = facts.2 == 0 && state.query.is_some();
    let body = html! {
        div.head {
            div { h1 { (title) } p.sub { (sub) } }
            @if ctx.deployment.is_none() {
                (filters(ctx, &facts.0, &facts.1))
            }
        }
        @if let Some(e) = filter_error {
            div.banner { "Invalid filter: " (e) " — showing the last 30 days." }
        }
        @if let Some(e) = &d.error {
            (error_card("full", "This dashboard could not be loaded", e))
        }
        div.grid {
            (extra)
            @if no_data {
                (welcome())
                // Broken panels are reported even before there is data.
                @for o in outcomes.iter().filter(|o| o.data.error.is_some()) {
                    (panel_html(o, ctx))
                }
            } @else {
                @for o in outcomes {
                    (panel_html(o, ctx))
                }
            }
        }
    };
    layout(state, session, &d.name, &qs, &title, body)
}

pub fn message_page(
    state: &DashboardState,
    session: Option<&str>,
    title: &str,
    message: &str,
) -> String {
    let body = html! {
        div.head { div { h1 { (title) } p.sub { (message) } } }
    };
    layout(state, session, "", "", title, body)
}

pub fn not_found(state: &DashboardState, session: Option<&str>, name: &str) -> String {
    message_page(
        state,
        session,
        "Dashboard not found",
        &format!("There is no dashboard named {name:?}."),
    )
}

/// An HTML form of an authentication refusal (status and `WWW-Authenticate` kept).
pub fn auth_page(r: Response) -> Response {
    let status = r.status();
    let www = r
        .headers()
        .get(axum::http::header::WWW_AUTHENTICATE)
        .cloned();
    let msg = if status == StatusCode::FORBIDDEN {
        html! { "This token lacks the read scope. " a href="/login" { "Sign in" } " with a token that has it." }
    } else {
        html! {
            "shiplog has tokens configured. " a href="/login" { "Sign in" }
            " with a token that has the read scope; scripts send it as "
            code { "Authorization: Bearer …" } "."
        }
    };
    let page = html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                title { "Sign-in needed · shiplog" }
                style { (PreEscaped(CSS)) }
            }
            body { main { h1 { "Sign-in needed" } p { (msg) } } }
        }
    };
    let mut resp = (status, Html(page.into_string())).into_response();
    if let Some(w) = www {
        resp.headers_mut()
            .insert(axum::http::header::WWW_AUTHENTICATE, w);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Auth;
    use crate::dashboards::{default_budgets, default_thresholds, Thresholds};

    fn state() -> DashboardState {
        DashboardState::new(
            Auth::new(Vec::new()),
            None,
            None,
            Thresholds::new(default_thresholds(), &default_budgets()),
        )
    }

    /// Signed in with the cookie, every page's header has a "Sign out" form posting to
    /// /logout, with the token's name escaped; otherwise there is none.
    #[test]
    fn sign_out_button_only_with_a_cookie_session() {
        let s = state();
        let page = message_page(&s, Some("pm <team>"), "Forbidden", "no");
        assert!(
            page.contains(r#"<form class="signout" method="post" action="/logout">"#),
            "{page}"
        );
        assert!(page.contains("pm &lt;team&gt;") && page.contains(">Sign out</button>"));
        let top = &page[page.find(r#"<div class="top">"#).unwrap()..page.find("<main>").unwrap()];
        assert!(
            top.contains("/logout"),
            "the form is in the page header: {top}"
        );
        let page = not_found(&s, None, "nope");
        assert!(
            !page.contains("/logout") && !page.contains("Sign out"),
            "{page}"
        );
    }

    /// The 401 page sends people to the sign-in form, not to setting a cookie by hand.
    #[test]
    fn the_401_page_points_to_the_sign_in_form() {
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
            let mut r = status.into_response();
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            let r = auth_page(r);
            assert_eq!(r.status(), status);
            assert_eq!(r.headers()[axum::http::header::WWW_AUTHENTICATE], "Bearer");
            let body =
                futures::executor::block_on(axum::body::to_bytes(r.into_body(), 1 << 20)).unwrap();
            let body = String::from_utf8(body.to_vec()).unwrap();
            assert!(body.contains(r#"<a href="/login">Sign in</a>"#), "{body}");
            assert!(!body.contains("cookie"), "{body}");
        }
    }
}
