//! From [`RuleConfig`]s to [`Rule`]s; every error names the rule and the key.

use super::*;
use crate::error::RulesError;
use crate::judge::Limit;
use std::str::FromStr;

/// Where a rule stands in the file, for messages: `rules[2] (rollback-on-errors)`.
struct At(String);

impl At {
    fn err(&self, key: &str, message: impl Into<String>) -> RulesError {
        RulesError::config(&self.0, key, message)
    }
}

/// A rule of a config entry that has the common fields (`name`, `project`, `env`,
/// `dry_run`, `action`) and the given spec.
macro_rules! rule_of {
    ($c:expr, $kind:expr, $spec:expr, $at:expr) => {
        Rule {
            name: $c.name.clone(),
            project: project(&$c.project, $at)?,
            env: $c.env.clone(),
            dry_run: $c.dry_run,
            action: action($c.action.as_ref(), $kind, $at)?,
            spec: $spec,
        }
    };
}

/// Parses a cron expression; five fields (`*/1 * * * *`) get a `0` seconds field in front.
pub fn parse_schedule(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("invalid cron expression {expr:?}: {e}"))
}

/// Validates the rules.
pub fn validate(rules: &[RuleConfig], settings: &RulesSettings) -> Result<Vec<Rule>, RulesError> {
    let _ = settings;
    let mut out = Vec::with_capacity(rules.len());
    let mut names = std::collections::HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let name = r.name();
        if name.trim().is_empty() {
            return Err(RulesError::config(
                &format!("rules[{i}]"),
                "name",
                "must not be empty",
            ));
        }
        let at = At(format!("rules[{i}] ({name})"));
        if name.contains('/') {
            return Err(at.err("name", "must not contain '/'"));
        }
        if !names.insert(name.to_string()) {
            return Err(at.err("name", "another rule has the same name"));
        }
        let rule = match r {
            RuleConfig::Rollback(c) => rollback(c, &at)?,
            RuleConfig::Threshold(c) => {
                rule_of!(
                    c,
                    RuleKind::Threshold,
                    RuleSpec::Threshold(threshold(c, &at)?),
                    &at
                )
            }
            RuleConfig::Budget(c) => {
                rule_of!(c, RuleKind::Budget, RuleSpec::Budget(budget(c, &at)?), &at)
            }
            RuleConfig::MigrationFailed(c) => {
                rule_of!(c, RuleKind::MigrationFailed, RuleSpec::MigrationFailed, &at)
            }
        };
        out.push(rule);
    }
    Ok(out)
}

fn project(p: &str, at: &At) -> Result<String, RulesError> {
    if p.is_empty() {
        return Err(at.err("project", "must not be empty"));
    }
    Ok(p.to_string())
}

fn limit(
    max_ratio: Option<f64>,
    max_value: Option<f64>,
    key: &str,
    at: &At,
) -> Result<Option<Limit>, RulesError> {
    match (max_ratio, max_value) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(at.err(
            &format!("{key}max_value"),
            "set max_ratio or max_value, not both",
        )),
        (Some(x), None) if !(x.is_finite() && x > 0.0) => {
            Err(at.err(&format!("{key}max_ratio"), "must be a positive number"))
        }
        (None, Some(x)) if !x.is_finite() => {
            Err(at.err(&format!("{key}max_value"), "must be a number"))
        }
        (Some(x), None) => Ok(Some(Limit::Ratio(x))),
        (None, Some(x)) => Ok(Some(Limit::Value(x))),
    }
}

fn rollback(c: &RollbackConfig, at: &At) -> Result<Rule, RulesError> {
    let env = match c.env.as_deref() {
        Some(e) if !e.is_empty() => e.to_string(),
        _ => return Err(at.err("env", "is required for rollback rules")),
    };
    let window = match c.window {
        None => return Err(at.err("window", "is required (e.g. \"10m\")")),
        Some(w) if w.is_zero() => return Err(at.err("window", "must be longer than 0s")),
        Some(w) => w,
    };
    let rule_limit = limit(c.max_ratio, c.max_value, "", at)?;
    let fixed_baseline = match &c.baseline {
        None => None,
        Some(Baseline::Named(s)) if s == "previous_deployment" => None,
        Some(Baseline::Named(s)) => {
            return Err(at.err(
                "baseline",
                format!("must be \"previous_deployment\" or a number, not {s:?}"),
            ))
        }
        Some(Baseline::Fixed(x)) if !x.is_finite() || *x < 0.0 => {
            return Err(at.err("baseline", "must be a non-negative number"))
        }
        Some(Baseline::Fixed(x)) => Some(*x),
    };
    if fixed_baseline.is_some() && c.max_value.is_some() {
        return Err(at.err("baseline", "is only used with max_ratio"));
    }
    if c.min_samples == Some(0) {
        return Err(at.err("min_samples", "must be at least 1"));
    }
    let confidence = c.confidence.unwrap_or(DEFAULT_CONFIDENCE);
    if !(confidence > 0.5 && confidence < 1.0) {
        return Err(at.err(
            "confidence",
            "must be between 0.5 and 1 (e.g. 0.99: at most 1% of healthy deployments rolled back)",
        ));
    }
    let entries: Vec<MetricConfig> =
        match (&c.metric, c.metrics.is_empty()) {
            (Some(_), false) => return Err(at.err("metrics", "set metric or metrics, not both")),
            (None, true) => return Err(at.err(
                "metric",
                "is required (the check name to judge, e.g. \"error_rate\"), or metrics = [...]",
            )),
            (Some(m), true) => vec![MetricConfig {
                name: m.clone(),
                critical: false,
                max_ratio: None,
                max_value: None,
                min_samples: None,
                method: None,
                aggregate: None,
                requests_from: None,
                source: c.source.clone(),
            }],
            (None, false) => c
                .metrics
                .iter()
                .map(|m| match m {
                    MetricEntry::Name(n) => MetricConfig {
                        name: n.clone(),
                        critical: false,
                        max_ratio: None,
                        max_value: None,
                        min_samples: None,
                        method: None,
                        aggregate: None,
                        requests_from: None,
                        source: None,
                    },
                    MetricEntry::Table(t) => t.clone(),
                })
                .collect(),
        };
    if c.source.is_some() && c.metric.is_none() {
        return Err(at.err(
            "source",
            "with metrics = [...], give each metric its own source",
        ));
    }
    let mut metrics = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::new();
    for (j, m) in entries.iter().enumerate() {
        let key = if c.metric.is_some() {
            String::new()
        } else {
            format!("metrics[{j}].")
        };
        if m.name.is_empty() {
            return Err(at.err(&format!("{key}name"), "must not be empty"));
        }
        if m.name == "smoke" {
            return Err(at.err(
                &format!("{key}name"),
                "a failed smoke check always rolls back; it is not a metric to judge",
            ));
        }
        if !seen.insert(m.name.clone()) {
            return Err(at.err(&format!("{key}name"), "the same metric twice"));
        }
        let limit = match limit(m.max_ratio, m.max_value, &key, at)?.or(rule_limit) {
            Some(l) => l,
            None => {
                return Err(at.err(
                    &format!("{key}max_ratio"),
                    if key.is_empty() {
                        "set max_ratio or max_value".to_string()
                    } else {
                        format!(
                            "set max_ratio or max_value on metric {:?} or on the rule",
                            m.name
                        )
                    },
                ))
            }
        };
        if m.min_samples == Some(0) {
            return Err(at.err(&format!("{key}min_samples"), "must be at least 1"));
        }
        let method = m.method.or(c.method).unwrap_or_default();
        if method == Method::MannWhitney
            && (fixed_baseline.is_some() || matches!(limit, Limit::Value(_)))
        {
            return Err(at.err(
                &format!("{key}method"),
                "mann_whitney compares with the previous deployment: it needs max_ratio and baseline = \"previous_deployment\"",
            ));
        }
        if m.requests_from.is_some() && m.name != API_COST_PER_REQUEST {
            return Err(at.err(
                &format!("{key}requests_from"),
                format!("only applies to {API_COST_PER_REQUEST}"),
            ));
        }
        if m.source.is_some() && m.name == API_COST_PER_REQUEST {
            return Err(at.err(
                &format!("{key}source"),
                format!("{API_COST_PER_REQUEST} is computed from api_cost records"),
            ));
        }
        let source = m
            .source
            .as_ref()
            .map(crate::source::Source::from_config)
            .transpose()
            .map_err(|(k, msg)| at.err(&format!("{key}{k}"), msg))?;
        metrics.push(RollbackMetric {
            source,
            name: m.name.clone(),
            critical: m.critical,
            method,
            limit,
            min_samples: m.min_samples.or(c.min_samples).unwrap_or(5) as usize,
            aggregate: m
                .aggregate
                .or(c.aggregate)
                .unwrap_or_else(|| Aggregate::default_for(&m.name)),
            requests_from: (m.name == API_COST_PER_REQUEST).then(|| {
                m.requests_from
                    .clone()
                    .unwrap_or_else(|| "error_rate".to_string())
            }),
        });
    }
    let action = match action(c.action.as_ref(), RuleKind::Rollback, at)? {
        Some(a) => Some(a),
        None => return Err(at.err("action", "is required for rollback rules")),
    };
    Ok(Rule {
        name: c.name.clone(),
        project: project(&c.project, at)?,
        env: Some(env),
        dry_run: c.dry_run,
        action,
        spec: RuleSpec::Rollback(RollbackSpec {
            window,
            metrics,
            fixed_baseline,
            alpha: 1.0 - confidence,
            cooldown: c.cooldown,
        }),
    })
}

fn required_schedule(
    s: Option<&str>,
    kind: RuleKind,
    at: &At,
) -> Result<cron::Schedule, RulesError> {
    match s {
        None => Err(at.err(
            "schedule",
            format!(
                "is required for {} rules (e.g. \"*/5 * * * *\")",
                kind.as_str()
            ),
        )),
        Some(s) => parse_schedule(s).map_err(|e| at.err("schedule", e)),
    }
}

fn threshold(c: &ThresholdConfig, at: &At) -> Result<ThresholdSpec, RulesError> {
    match (&c.metric, &c.sql) {
        (None, None) => return Err(at.err("metric", "set metric or sql")),
        (Some(_), Some(_)) => return Err(at.err("sql", "set metric or sql, not both")),
        (Some(m), None) if !KNOWN_METRICS.contains(&m.as_str()) => {
            return Err(at.err(
                "metric",
                format!("unknown metric {m:?}; known: {}", KNOWN_METRICS.join(", ")),
            ))
        }
        _ => {}
    }
    let max_value = match c.max_value {
        None => return Err(at.err("max_value", "is required for threshold rules")),
        Some(x) if !x.is_finite() => return Err(at.err("max_value", "must be a number")),
        Some(x) => x,
    };
    Ok(ThresholdSpec {
        metric: c.metric.clone(),
        sql: c.sql.clone(),
        window: c.window.unwrap_or(Duration::from_secs(24 * 3600)),
        max_value,
        schedule: required_schedule(c.schedule.as_deref(), RuleKind::Threshold, at)?,
    })
}

fn budget(c: &BudgetConfig, at: &At) -> Result<BudgetSpec, RulesError> {
    let budget_usd = match c.budget_usd {
        None => return Err(at.err("budget_usd", "is required for budget rules")),
        Some(x) if !(x.is_finite() && x > 0.0) => {
            return Err(at.err("budget_usd", "must be a positive number"))
        }
        Some(x) => x,
    };
    let mut levels = c.levels.clone().unwrap_or_else(|| vec![50.0, 80.0, 100.0]);
    if levels.is_empty() || levels.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
        return Err(at.err("levels", "must be a non-empty list of positive percentages"));
    }
    levels.sort_by(|a, b| a.total_cmp(b));
    Ok(BudgetSpec {
        budget_usd,
        levels,
        schedule: required_schedule(c.schedule.as_deref(), RuleKind::Budget, at)?,
    })
}

fn action(a: Option<&ActionConfig>, kind: RuleKind, at: &At) -> Result<Option<Action>, RulesError> {
    let Some(a) = a else { return Ok(None) };
    let tries = a.tries.unwrap_or(3);
    if tries == 0 || tries > 20 {
        return Err(at.err("action.tries", "must be between 1 and 20"));
    }
    let backoff = a.backoff.unwrap_or(Duration::from_secs(1));
    match (&a.command, &a.webhook) {
        (None, None) => Err(at.err("action", "set command or webhook")),
        (Some(_), Some(_)) => Err(at.err("action", "set command or webhook, not both")),
        (Some(argv), None) => {
            if a.secret_env.is_some() {
                return Err(at.err("action.secret_env", "only applies to webhooks"));
            }
            if argv.is_empty() || argv[0].is_empty() {
                return Err(at.err(
                    "action.command",
                    "must name a program: [\"program\", \"arg\", …]",
                ));
            }
            let mut templates = Vec::with_capacity(argv.len());
            for (j, arg) in argv.iter().enumerate() {
                let key = format!("action.command[{j}]");
                let t = Template::parse(arg).map_err(|e| at.err(&key, e))?;
                if j == 0 && t.has_placeholders() {
                    return Err(at.err(&key, "the program must be literal (no placeholders)"));
                }
                if kind != RuleKind::Rollback && t.uses_deployment_placeholders() {
                    return Err(
                        at.err(&key, "deployment placeholders only apply to rollback rules")
                    );
                }
                templates.push(t);
            }
            let timeout = a.timeout.unwrap_or(Duration::from_secs(60));
            if timeout.is_zero() {
                return Err(at.err("action.timeout", "must be longer than 0s"));
            }
            Ok(Some(Action::Command {
                argv: templates,
                timeout,
                tries,
                backoff,
            }))
        }
        (None, Some(url)) => {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| at.err("action.webhook", format!("invalid URL {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err(at.err("action.webhook", "must be an http(s) URL"));
            }
            if a.secret_env.as_deref() == Some("") {
                return Err(at.err("action.secret_env", "must name a variable"));
            }
            Ok(Some(Action::Webhook {
                url: url.clone(),
                secret_env: a.secret_env.clone(),
                timeout: a.timeout.unwrap_or(Duration::from_secs(10)),
                tries,
                backoff,
            }))
        }
    }
}
