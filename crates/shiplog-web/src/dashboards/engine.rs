//! The panel engine: placeholders → bound parameters, query, threshold status.
//!
//! Placeholders a panel's SQL may use (each becomes `?` with a bound parameter; user input
//! is never spliced into SQL):
//!
//! | placeholder | becomes |
//! |---|---|
//! | `{filters}` | `project`/`env` filters (when set), `time` in the range, and the token's project restriction |
//! | `{scope}` | the same without the time range |
//! | `{from}`, `{to}` | the range bounds, `TIMESTAMPTZ` |
//! | `{project}`, `{env}` | the filter values, `VARCHAR` (NULL when unset) |
//! | `{bucket}` | `'hour'` for ranges up to 2 days, else `'day'` (for `date_trunc`) |
//! | `{days}` | the range length in days, `DOUBLE` |
//! | `{deployment}` | the deployment id of `/deployments/{id}`, `VARCHAR` |

use super::spec::{Band, Dora, PanelSpec, Status};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const PLACEHOLDERS: &[&str] = &[
    "filters",
    "scope",
    "from",
    "to",
    "project",
    "env",
    "bucket",
    "days",
    "deployment",
];

/// The filters of one request.
#[derive(Debug, Clone, Serialize)]
pub struct Ctx {
    pub project: Option<String>,
    pub env: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `24h`, `7d`, `30d`, `90d` or `custom`.
    pub range: String,
    pub deployment: Option<String>,
    /// Projects the token is restricted to (`None`: all).
    #[serde(skip)]
    pub allowed: Option<Vec<String>>,
}

impl Ctx {
    pub fn bucket(&self) -> &'static str {
        if self.to - self.from <= chrono::Duration::hours(48) {
            "hour"
        } else {
            "day"
        }
    }
}

/// Finds `{name}` tokens (identifier characters only, so struct literals like `{'a': 1}`
/// are left alone).
fn tokens(sql: &str) -> Vec<(usize, usize, &str)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'{' {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j < b.len() && b[j] == b'}' && j > i + 1 {
                out.push((i, j + 1, &sql[i + 1..j]));
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

pub fn check_placeholders(sql: &str) -> Result<(), String> {
    for (_, _, name) in tokens(sql) {
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (known: {})",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if sql.trim().is_empty() {
        return Err("sql is empty".into());
    }
    Ok(())
}

fn s(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

fn ts(t: &DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// Expands the placeholders into `?` and the bound parameters, in order.
pub fn expand(sql: &str, ctx: &Ctx) -> Result<(String, Vec<Value>), String> {
    check_placeholders(sql)?;
    let toks = tokens(sql);
    if ctx.allowed.is_some() && !toks.iter().any(|t| t.2 == "filters" || t.2 == "scope") {
        return Err(
            "this panel does not filter by project ({filters} or {scope}), so tokens restricted to projects cannot see it"
                .into(),
        );
    }
    let mut out = String::with_capacity(sql.len() + 64);
    let mut params = Vec::new();
    let mut last = 0;
    for (a, b, name) in toks {
        out.push_str(&sql[last..a]);
        last = b;
        let scope = |out: &mut String, params: &mut Vec<Value>| {
            out.push_str("((project = ?::VARCHAR OR ?::VARCHAR IS NULL) AND (env = ?::VARCHAR OR ?::VARCHAR IS NULL)");
            params.extend([s(&ctx.project), s(&ctx.project), s(&ctx.env), s(&ctx.env)]);
            if let Some(allowed) = &ctx.allowed {
                out.push_str(" AND project IN (");
                for (i, p) in allowed.iter().enumerate() {
                    out.push_str(if i == 0 { "?" } else { ", ?" });
                    params.push(Value::String(p.clone()));
                }
                if allowed.is_empty() {
                    out.push_str("NULL");
                }
                out.push(')');
            }
            out.push(')');
        };
        match name {
            "scope" => scope(&mut out, &mut params),
            "filters" => {
                out.push('(');
                scope(&mut out, &mut params);
                out.push_str(" AND time >= ?::TIMESTAMPTZ AND time < ?::TIMESTAMPTZ)");
                params.extend([ts(&ctx.from), ts(&ctx.to)]);
            }
            "from" => {
                out.push_str("?::TIMESTAMPTZ");
                params.push(ts(&ctx.from));
            }
            "to" => {
                out.push_str("?::TIMESTAMPTZ");
                params.push(ts(&ctx.to));
            }
            "project" => {
                out.push_str("?::VARCHAR");
                params.push(s(&ctx.project));
            }
            "env" => {
                out.push_str("?::VARCHAR");
                params.push(s(&ctx.env));
            }
            "deployment" => {
                out.push_str("?::VARCHAR");
                params.push(s(&ctx.deployment));
            }
            "bucket" => {
                out.push_str("?::VARCHAR");
                params.push(Value::String(ctx.bucket().into()));
            }
            "days" => {
                out.push_str("?::DOUBLE");
                let days = (ctx.to - ctx.from).num_seconds() as f64 / 86_400.0;
                params.push(serde_json::json!(days));
            }
            _ => unreachable!("checked"),
        }
    }
    out.push_str(&sql[last..]);
    Ok((out, params))
}

/// One threshold entry of the config (`[[thresholds]]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    /// `build_duration_s`, `bundle_bytes`, `gzip_bytes`, `migration_duration_s`,
    /// `cost_daily_usd`, `cost_monthly_usd`, or any metric a dashboard names.
    pub metric: String,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    pub good: f64,
    pub warning: f64,
    #[serde(default)]
    pub higher_is_better: bool,
}

/// A cost budget (`[[budgets]]`): statuses good ≤ 80 %, warning ≤ 100 %, bad above.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub daily_usd: Option<f64>,
    #[serde(default)]
    pub monthly_usd: Option<f64>,
}

/// The defaults (the seeds' numbers): production builds < 60 s good, < 120 s warning.
pub fn default_thresholds() -> Vec<ThresholdRule> {
    let r = |metric: &str, env: Option<&str>, good: f64, warning: f64| ThresholdRule {
        metric: metric.into(),
        project: None,
        env: env.map(str::to_owned),
        good,
        warning,
        higher_is_better: false,
    };
    vec![
        r("build_duration_s", Some("production"), 60.0, 120.0),
        r("build_duration_s", None, 90.0, 180.0),
        r("bundle_bytes", None, 1_500_000.0, 2_500_000.0),
        r("gzip_bytes", None, 500_000.0, 800_000.0),
        r("migration_duration_s", None, 30.0, 120.0),
    ]
}

pub fn default_budgets() -> Vec<Budget> {
    vec![Budget {
        project: None,
        env: None,
        daily_usd: Some(60.0),
        monthly_usd: Some(1500.0),
    }]
}

/// Resolved thresholds: config rules first, then budgets as `cost_*` rules.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Thresholds {
    pub rules: Vec<ThresholdRule>,
}

impl Thresholds {
    pub fn new(mut rules: Vec<ThresholdRule>, budgets: &[Budget]) -> Self {
        for b in budgets {
            for (metric, v) in [
                ("cost_daily_usd", b.daily_usd),
                ("cost_monthly_usd", b.monthly_usd),
            ] {
                if let Some(v) = v {
                    rules.push(ThresholdRule {
                        metric: metric.into(),
                        project: b.project.clone(),
                        env: b.env.clone(),
                        good: v * 0.8,
                        warning: v,
                        higher_is_better: false,
                    });
                }
            }
        }
        Thresholds { rules }
    }

    /// The most specific rule for `metric` matching project/env (an unset filter matches
    /// any rule value; a rule naming a project beats one naming an env beats a generic one).
    pub fn band(&self, metric: &str, project: Option<&str>, env: Option<&str>) -> Option<Band> {
        let matches = |rv: &Option<String>, fv: Option<&str>| match (rv, fv) {
            (None, _) => Some(0),
            (Some(_), None) => Some(1),
            (Some(r), Some(f)) if r == f => Some(2),
            _ => None,
        };
        self.rules
            .iter()
            .filter(|r| r.metric == metric)
            .filter_map(|r| {
                let p = matches(&r.project, project)?;
                let e = matches(&r.env, env)?;
                Some((p * 4 + e, r))
            })
            .max_by_key(|(score, _)| *score)
            .map(|(_, r)| Band {
                good: r.good,
                warning: r.warning,
                higher_is_better: r.higher_is_better,
            })
    }
}

/// DORA performance level of a value (the bands of the State of DevOps reports).
pub fn dora_level(d: Dora, v: f64) -> (&'static str, Status) {
    let level = match d {
        // deploys per day
        Dora::DeploymentFrequency => {
            if v >= 1.0 {
                0
            } else if v >= 1.0 / 7.0 {
                1
            } else if v >= 1.0 / 30.0 {
                2
            } else {
                3
            }
        }
        // hours
        Dora::LeadTime => {
            if v < 24.0 {
                0
            } else if v < 24.0 * 7.0 {
                1
            } else if v < 24.0 * 30.0 {
                2
            } else {
                3
            }
        }
        // ratio
        Dora::ChangeFailureRate => {
            if v <= 0.05 {
                0
            } else if v <= 0.10 {
                1
            } else if v <= 0.15 {
                2
            } else {
                3
            }
        }
        // hours
        Dora::TimeToRestore => {
            if v < 1.0 {
                0
            } else if v < 24.0 {
                1
            } else if v < 24.0 * 7.0 {
                2
            } else {
                3
            }
        }
    };
    [
        ("Elite", Status::Good),
        ("High", Status::Good),
        ("Medium", Status::Warning),
        ("Low", Status::Bad),
    ][level]
}

pub fn dora_legend(d: Dora) -> &'static str {
    match d {
        Dora::DeploymentFrequency => "Elite ≥ 1/day · High ≥ 1/week · Medium ≥ 1/month",
        Dora::LeadTime => "Elite < 1 day · High < 1 week · Medium < 1 month",
        Dora::ChangeFailureRate => "Elite ≤ 5% · High ≤ 10% · Medium ≤ 15%",
        Dora::TimeToRestore => "Elite < 1 h · High < 1 day · Medium < 1 week",
    }
}

pub fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        Value::Bool(b) => Some(*b as u8 as f64),
        _ => None,
    }
}

/// A panel's result with its status.
#[derive(Debug, Clone, Serialize)]
pub struct PanelData {
    pub id: String,
    pub title: String,
    pub kind: super::spec::ChartKind,
    pub unit: Option<String>,
    pub metric: Option<String>,
    pub thresholds: Option<Band>,
    pub status: Status,
    /// The value the status was judged on.
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dora_level: Option<&'static str>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// Per row, per status column: the cell statuses (tables with `status_columns`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cell_status: Vec<Vec<Status>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub query_ms: f64,
}

/// Judges a panel's result.
pub fn judge(spec: &PanelSpec, ctx: &Ctx, th: &Thresholds, data: &mut PanelData) {
    let band = spec
        .metric
        .as_deref()
        .and_then(|m| th.band(m, ctx.project.as_deref(), ctx.env.as_deref()))
        .or(spec.thresholds);
    data.thresholds = band;
    use super::spec::ChartKind::*;
    let value = match spec.kind {
        Stat => data
            .columns
            .iter()
            .position(|c| c == "value")
            .or(Some(0))
            .and_then(|i| data.rows.first().and_then(|r| r.get(i)).and_then(num)),
        Line | Area | Bar => data.rows.last().and_then(|r| r.get(1)).and_then(num),
        StackedBar => {
            if data.columns.len() == 3 {
                // long form: sum the values of the last x
                let lastx = data.rows.last().and_then(|r| r.first()).cloned();
                lastx.map(|x| {
                    data.rows
                        .iter()
                        .filter(|r| r.first() == Some(&x))
                        .filter_map(|r| r.get(2).and_then(num))
                        .sum()
                })
            } else {
                data.rows
                    .last()
                    .map(|r| r.iter().skip(1).filter_map(num).sum())
            }
        }
        Table | Timeline => None,
    };
    data.value = value;
    if let (Some(d), Some(v)) = (spec.dora, value) {
        let (level, status) = dora_level(d, v);
        data.dora_level = Some(level);
        data.status = status;
    } else if let (Some(b), Some(v)) = (band, value) {
        data.status = b.status(v);
    }
    if !spec.status_columns.is_empty() {
        let pi = data.columns.iter().position(|c| c == "project");
        let ei = data.columns.iter().position(|c| c == "env");
        let mut worst = Status::None;
        for row in &data.rows {
            let p = pi.and_then(|i| row[i].as_str()).or(ctx.project.as_deref());
            let e = ei.and_then(|i| row[i].as_str()).or(ctx.env.as_deref());
            let mut statuses = Vec::with_capacity(row.len());
            for (ci, c) in data.columns.iter().enumerate() {
                let st = spec
                    .status_columns
                    .get(c)
                    .and_then(|m| th.band(m, p, e))
                    .zip(num(&row[ci]))
                    .map_or(Status::None, |(b, v)| b.status(v));
                worst = worst.max(st);
                statuses.push(st);
            }
            data.cell_status.push(statuses);
        }
        if data.status == Status::None {
            data.status = worst;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            project: Some("web'; DROP".into()),
            env: None,
            from: Utc::now() - chrono::Duration::days(7),
            to: Utc::now(),
            range: "7d".into(),
            deployment: None,
            allowed: None,
        }
    }

    #[test]
    fn placeholders_become_parameters() {
        let (sql, params) = expand(
            "SELECT 1 FROM builds WHERE {filters} AND x = {bucket} AND {'a': 1} IS NOT NULL",
            &ctx(),
        )
        .unwrap();
        assert!(!sql.contains("DROP") && !sql.contains("{filters}"), "{sql}");
        assert!(sql.contains("{'a': 1}"));
        assert_eq!(sql.matches('?').count(), params.len());
        assert_eq!(params[0], Value::String("web'; DROP".into()));
        assert!(expand("SELECT {nope}", &ctx()).is_err());
        let mut c = ctx();
        c.allowed = Some(vec!["web".into()]);
        assert!(expand("SELECT 1 FROM builds", &c).is_err());
        let (sql, params) = expand("SELECT 1 FROM builds WHERE {scope}", &c).unwrap();
        assert!(sql.contains("project IN (?)"));
        assert_eq!(sql.matches('?').count(), params.len());
    }

    #[test]
    fn most_specific_threshold_wins() {
        let th = Thresholds::new(
            {
                let mut r = default_thresholds();
                r.push(ThresholdRule {
                    metric: "build_duration_s".into(),
                    project: Some("api".into()),
                    env: Some("production".into()),
                    good: 10.0,
                    warning: 20.0,
                    higher_is_better: false,
                });
                r
            },
            &default_budgets(),
        );
        assert_eq!(
            th.band("build_duration_s", Some("web"), Some("production"))
                .unwrap()
                .good,
            60.0
        );
        assert_eq!(
            th.band("build_duration_s", Some("web"), Some("preview"))
                .unwrap()
                .good,
            90.0
        );
        assert_eq!(
            th.band("build_duration_s", Some("api"), Some("production"))
                .unwrap()
                .good,
            10.0
        );
        assert_eq!(
            th.band("cost_monthly_usd", None, None).unwrap().warning,
            1500.0
        );
        assert!(th.band("nothing", None, None).is_none());
    }

    #[test]
    fn dora_levels() {
        assert_eq!(dora_level(Dora::DeploymentFrequency, 1.2).0, "Elite");
        assert_eq!(dora_level(Dora::ChangeFailureRate, 0.2).0, "Low");
        assert_eq!(dora_level(Dora::TimeToRestore, 3.0).0, "High");
    }
}
