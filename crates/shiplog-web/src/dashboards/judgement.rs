//! The rollback judgement on a deployment's page: for each rollback rule that judged it
//! (its decision in the log) or is judging it now (the rules engine's live state), the
//! verdict in words, the evidence of each metric, and a chart of each metric's samples
//! with the baseline's range and the threshold the rule compares with.

use super::chart::{self, fmt_value, JudgedArgs};
use crate::html::{percent_encode, COMPONENT};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde_json::Value;
use shiplog_rules::judge::{Evidence, MetricVerdict};
use std::collections::BTreeMap;
use std::time::Duration;

/// One rule's judgement of the deployment.
#[derive(Debug, Clone)]
pub struct RuleJudgement {
    pub rule: String,
    /// `healthy`, `degraded`, `inconclusive`, or `judging` (window still open).
    pub verdict: String,
    pub dry_run: bool,
    pub outcome: Option<String>,
    pub action: Option<String>,
    pub reason: String,
    pub decided_at: Option<DateTime<Utc>>,
    pub deciding_time: Option<DateTime<Utc>>,
    pub window: Duration,
    pub evidence: Vec<Evidence>,
}

const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        v => Some(v.to_string()),
    }
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    chart::parse_time(v)
}

/// The rules' decisions about deployment `id` (those of the projects `allowed`), newest
/// verdict per rule with its action's outcome.
fn decided(
    q: &shiplog_store::QueryEngine,
    id: &str,
    allowed: Option<&[String]>,
) -> Vec<RuleJudgement> {
    let sql = "SELECT rule, verdict, dry_run, outcome, action, time, project, \
               json_extract_string(extra, '$.data.phase') AS phase, \
               json_extract_string(extra, '$.data.reason') AS reason, \
               json_extract(extra, '$.data.evidence') AS evidence, \
               json_extract_string(extra, '$.data.window_ms') AS window_ms, \
               json_extract_string(extra, '$.data.deciding_sample_time') AS deciding, \
               json_extract_string(extra, '$.data.rule_kind') AS rule_kind \
               FROM decisions WHERE deployment_id = $1 ORDER BY time";
    let Ok(r) = q.query_internal(sql, &[Value::String(id.to_string())], QUERY_TIMEOUT) else {
        return Vec::new();
    };
    let mut by_rule: BTreeMap<String, RuleJudgement> = BTreeMap::new();
    for row in r.rows {
        let col = |i: usize| row.get(i).cloned().unwrap_or(Value::Null);
        if text(&col(12)).as_deref() != Some("rollback") {
            continue;
        }
        if let (Some(allowed), Some(p)) = (allowed, text(&col(6))) {
            if !allowed.contains(&p) {
                continue;
            }
        }
        let rule = text(&col(0)).unwrap_or_default();
        let phase = text(&col(7)).unwrap_or_else(|| "final".into());
        let outcome = text(&col(3));
        if phase == "outcome" {
            if let Some(j) = by_rule.get_mut(&rule) {
                j.outcome = outcome;
            }
            continue;
        }
        let evidence: Vec<Evidence> = match col(9) {
            Value::String(s) => serde_json::from_str(&s).unwrap_or_default(),
            v @ Value::Array(_) => serde_json::from_value(v).unwrap_or_default(),
            _ => Vec::new(),
        };
        by_rule.insert(
            rule.clone(),
            RuleJudgement {
                rule,
                verdict: text(&col(1)).unwrap_or_default(),
                dry_run: col(2).as_bool().unwrap_or(false),
                outcome,
                action: text(&col(4)),
                reason: text(&col(8)).unwrap_or_default(),
                decided_at: time(&col(5)),
                deciding_time: text(&col(11))
                    .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                    .map(|t| t.with_timezone(&Utc)),
                window: Duration::from_millis(
                    text(&col(10))
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(600_000),
                ),
                evidence,
            },
        );
    }
    by_rule.into_values().collect()
}

/// Where the judgement comes from: DuckDB (decisions, checks) and the rules engine.
#[derive(Clone)]
pub struct Sources {
    pub query: Option<std::sync::Arc<shiplog_store::QueryEngine>>,
    pub rules: Option<shiplog_rules::RulesEngine>,
}

/// Every rule's judgement of deployment `id`: decided ones from the log, open windows from
/// the rules engine.
pub fn load(
    state: &Sources,
    id: &str,
    allowed: Option<&[String]>,
) -> (Vec<RuleJudgement>, Option<DateTime<Utc>>) {
    let mut out = match &state.query {
        Some(q) => decided(q, id, allowed),
        None => Vec::new(),
    };
    let mut live_at = None;
    if let Some(rules) = &state.rules {
        for v in rules.judging_now(None, id) {
            if out.iter().any(|j| j.rule == v.rule) {
                continue;
            }
            let j = &v.assessment.judgement;
            live_at = Some(v.assessment.window.start);
            out.push(RuleJudgement {
                rule: v.rule.clone(),
                verdict: "judging".into(),
                dry_run: v.dry_run,
                outcome: None,
                action: None,
                reason: format!("{}. {}", v.status, j.reason),
                decided_at: None,
                deciding_time: None,
                window: v
                    .assessment
                    .window
                    .length
                    .to_std()
                    .unwrap_or(Duration::from_secs(600)),
                evidence: j.metrics.clone(),
            });
        }
    }
    if live_at.is_none() {
        if let Some(q) = &state.query {
            let sql = "SELECT min(time) FROM deploys WHERE deployment_id = $1 AND status IN ('succeeded', 'promoted')";
            live_at = q
                .query_internal(sql, &[Value::String(id.to_string())], QUERY_TIMEOUT)
                .ok()
                .and_then(|r| r.rows.first().and_then(|row| row.first().and_then(time)));
        }
    }
    (out, live_at)
}

/// The samples of `metrics` for deployment `id` in its first `window` after `live_at`.
fn samples(
    state: &Sources,
    id: &str,
    live_at: DateTime<Utc>,
    window: Duration,
) -> BTreeMap<String, Vec<(DateTime<Utc>, f64)>> {
    let mut out: BTreeMap<String, Vec<(DateTime<Utc>, f64)>> = BTreeMap::new();
    let Some(q) = &state.query else {
        return out;
    };
    let end = live_at + chrono::Duration::from_std(window).unwrap_or_default();
    let sql = "SELECT time, name, coalesce(value, errors / nullif(requests, 0)) FROM checks \
               WHERE deployment_id = $1 AND time >= CAST($2 AS TIMESTAMPTZ) AND time <= CAST($3 AS TIMESTAMPTZ) \
               ORDER BY time LIMIT 20000";
    let params = [
        Value::String(id.to_string()),
        Value::String(shiplog_events::format_rfc3339(&live_at)),
        Value::String(shiplog_events::format_rfc3339(&end)),
    ];
    if let Ok(r) = q.query_internal(sql, &params, QUERY_TIMEOUT) {
        for row in r.rows {
            if let (Some(t), Some(name), Some(v)) = (
                row.first().and_then(time),
                row.get(1).and_then(text),
                row.get(2).and_then(super::engine::num),
            ) {
                out.entry(name).or_default().push((t, v));
            }
        }
    }
    out
}

fn verdict_class(v: &str) -> &'static str {
    match v {
        "degraded" => "bad",
        "healthy" => "good",
        _ => "warning",
    }
}

fn unit_of(metric: &str) -> Option<&'static str> {
    let m = metric.to_ascii_lowercase();
    if m.contains("rate") || m.contains("ratio") {
        Some("ratio")
    } else if m.contains("latency") || m.ends_with("_ms") {
        Some("ms")
    } else if m.contains("cost") || m.contains("usd") {
        Some("usd")
    } else {
        None
    }
}

/// The section's HTML (empty when no rollback rule judged the deployment).
pub fn render(state: &Sources, id: &str, allowed: Option<&[String]>) -> Markup {
    let (rules, live_at) = load(state, id, allowed);
    if rules.is_empty() {
        return html! {};
    }
    let window = rules.iter().map(|r| r.window).max().unwrap_or_default();
    let data = live_at
        .map(|t| samples(state, id, t, window))
        .unwrap_or_default();
    html! {
        section.card.w-full.judgement {
            header { h2 { "Rollback judgement" } }
            @for r in &rules {
                (rule_html(r, live_at, &data))
            }
        }
    }
}

/// One rule's verdict, when and how it acted, and each metric's evidence and chart.
fn rule_html(
    r: &RuleJudgement,
    live_at: Option<DateTime<Utc>>,
    data: &BTreeMap<String, Vec<(DateTime<Utc>, f64)>>,
) -> Markup {
    let after = |at: DateTime<Utc>| {
        r.deciding_time
            .map(|d| {
                format!(
                    ", {:.1} s after the deciding sample",
                    (at - d).num_milliseconds().max(0) as f64 / 1000.0
                )
            })
            .unwrap_or_default()
    };
    html! {
        div.rule {
            h3 {
                span class={ "pill " (verdict_class(&r.verdict)) } { (r.verdict) }
                " " (r.rule)
                @if r.dry_run { " " span.muted { "(dry run)" } }
            }
            p.reason { (r.reason) }
            @if let Some(at) = r.decided_at {
                p.muted { "decided " (shiplog_events::format_rfc3339(&at)) (after(at)) }
            }
            @if let Some(o) = &r.outcome {
                p.muted { "action: " (r.action.as_deref().unwrap_or("none")) " → " (o) }
            }
            @for ev in &r.evidence {
                (evidence_html(r, ev, live_at, data))
            }
        }
    }
}

fn evidence_html(
    r: &RuleJudgement,
    ev: &Evidence,
    live_at: Option<DateTime<Utc>>,
    data: &BTreeMap<String, Vec<(DateTime<Utc>, f64)>>,
) -> Markup {
    let basis = match ev.basis {
        shiplog_rules::judge::Basis::Counts => "errors and requests",
        shiplog_rules::judge::Basis::Values => "values",
    };
    let line = html! {
        p.evidence {
            b { (ev.metric) }
            @if ev.critical { " (critical)" }
            " — " (ev.reason) " (" (ev.method.as_str()) ", " (basis)
            // the metric's share of the rule's false-rollback probability
            ", false-rollback share α = " (percent(ev.alpha)) ")"
        }
    };
    let (Some(start), Some(points)) = (live_at, data.get(&ev.metric)) else {
        return line;
    };
    let minutes = |t: DateTime<Utc>| (t - start).num_milliseconds() as f64 / 60_000.0;
    let pts: Vec<(f64, f64)> = points.iter().map(|(t, v)| (minutes(*t), *v)).collect();
    let outliers: Vec<f64> = ev.outliers.iter().map(|t| minutes(*t)).collect();
    let unit = unit_of(&ev.metric);
    let deciding = if ev.verdict == MetricVerdict::Degraded {
        ev.deciding_time.map(minutes)
    } else {
        None
    };
    let figure = chart::figure_or_error(chart::judged_chart(&JudgedArgs {
        metric: &ev.metric,
        unit,
        samples: &pts,
        outliers: &outliers,
        deciding,
        window_minutes: r.window.as_secs_f64() / 60.0,
        baseline: ev.baseline,
        baseline_range: ev.baseline_low.zip(ev.baseline_high),
        threshold: ev.threshold,
        width: 900,
        height: 260,
    }));
    html! {
        (line)
        (figure)
        @if let (Some(b), Some(t)) = (ev.baseline, ev.threshold) {
            p.muted {
                "baseline " (fmt_value(b, unit)) " (" (ev.baseline_samples.unwrap_or(0))
                " samples), threshold " (fmt_value(t, unit))
            }
        }
    }
}

/// The decisions page's section for rollback rules in dry run: how each would have judged
/// the deployments of the page's range (the backtest, without acting), so a team sees how
/// a rule behaves before enabling it. Empty when no rule is in dry run.
pub async fn dry_run_backtest(rules: &shiplog_rules::RulesEngine, ctx: &super::Ctx) -> Markup {
    let dry = rules.dry_run_rules();
    if dry.is_empty() {
        return html! {};
    }
    let mut report = match rules.shadow_backtest(Duration::from_secs(60)).await {
        Ok(r) => (*r).clone(),
        Err(e) => {
            return html! {
                section.card.w-full.judgement {
                    header { h2 { "Dry-run rules: backtest" } }
                    div.panel-error { pre { (e) } }
                }
            }
        }
    };
    report.rules.retain(|r| {
        dry.contains(&r.rule)
            && ctx.project.as_ref().is_none_or(|p| &r.project == p)
            && ctx.allowed.as_ref().is_none_or(|a| a.contains(&r.project))
    });
    // The page's range (the backtest covers the last 90 days, refreshed every minute).
    for r in &mut report.rules {
        r.deployments
            .retain(|d| d.live_at >= ctx.from && d.live_at <= ctx.to);
        r.recount();
    }
    backtest_html(&report)
}

/// A backtest report as HTML: a row of counts per rule, then its flagged deployments.
pub fn backtest_html(report: &shiplog_rules::backtest::BacktestReport) -> Markup {
    let columns = [
        "rule",
        "project",
        "judged",
        "would roll back",
        "no safe target",
        "healthy",
        "inconclusive",
        "judging",
    ];
    html! {
        section.card.w-full.judgement {
            header { h2 { "Dry-run rules: how they would have judged" } }
            p.muted {
                "Each rollback rule in dry run, replayed over the deployments of this range by the "
                "same judge, without acting (" code { "shiplog rules backtest" } ")."
            }
            table.data {
                thead { tr { @for c in columns { th { (c) } } } }
                tbody {
                    @for r in &report.rules {
                        tr {
                            td { (r.rule) } td { (r.project) } td { (r.judged) }
                            td { (r.would_roll_back) } td { (r.degraded_no_target) }
                            td { (r.healthy) } td { (r.inconclusive) } td { (r.judging) }
                        }
                    }
                }
            }
            @for r in &report.rules {
                @let flagged = r.flagged();
                @if !flagged.is_empty() {
                    h3 { (r.rule) }
                    ul.flagged {
                        @for d in flagged {
                            li {
                                span class={ "pill " (verdict_class(&d.verdict)) } { (d.verdict) }
                                " "
                                a href={ "/deployments/" (percent_encode(&d.deployment_id, COMPONENT)) } { (d.deployment_id) }
                                " " (shiplog_events::format_rfc3339(&d.live_at)) ": " (d.reason)
                                @if let Some(a) = &d.action { " → " (a) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// 0.005 → "0.5%", 0.0025 → "0.25%".
fn percent(p: f64) -> String {
    let t = format!("{:.2}", p * 100.0);
    format!("{}%", t.trim_end_matches('0').trim_end_matches('.'))
}
