//! The `[[rules]]` and `[rules_settings]` sections of `shiplog.toml`, and their validation.
//!
//! Every validation error names the rule (`rules[2] (rollback-on-errors)`) and the key.

use crate::action::Template;
use serde::Deserialize;
use std::str::FromStr;
use std::time::Duration;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Watches each new deployment of project/env and rolls back a degraded one.
    Rollback,
    /// Compares a metric (or a SQL expression) with a limit on a cron schedule.
    Threshold,
    /// Monthly API spend against `budget_usd`, alerts at each level (50/80/100 %).
    Budget,
    /// Fires on a failed migration.
    MigrationFailed,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Rollback => "rollback",
            RuleKind::Threshold => "threshold",
            RuleKind::Budget => "budget",
            RuleKind::MigrationFailed => "migration_failed",
        }
    }
}

/// `baseline = "previous_deployment"` or a fixed number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Baseline {
    Fixed(f64),
    Named(String),
}

/// How the samples of a window are summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Mean,
    P95,
    Max,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Mean => "mean",
            Aggregate::P95 => "p95",
            Aggregate::Max => "max",
        }
    }

    /// The default for a metric: p95 for latency metrics (names containing `latency` or
    /// ending in `_p95`), the mean otherwise.
    pub fn default_for(metric: &str) -> Aggregate {
        if metric.contains("latency") || metric.ends_with("_p95") {
            Aggregate::P95
        } else {
            Aggregate::Mean
        }
    }
}

/// `action = { command = [...], timeout = "60s" }` or `{ webhook = "https://…", secret_env = "…" }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Argument vector; `command[0]` is the program (looked up in `PATH`), never a shell.
    pub command: Option<Vec<String>>,
    /// URL to POST the signed JSON decision to.
    pub webhook: Option<String>,
    /// Environment variable holding the webhook's HMAC secret.
    pub secret_env: Option<String>,
    /// Per attempt (default 60 s for commands, 10 s for webhooks).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Attempts in all (default 3).
    pub tries: Option<u32>,
    /// Wait before the second attempt, doubled each time (default 1 s).
    #[serde(default, with = "humantime_serde")]
    pub backoff: Option<Duration>,
}

/// One `[[rules]]` entry. Keys that do not apply to the rule's kind are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub kind: RuleKind,
    pub project: String,
    /// Environment (required for rollback rules; optional filter otherwise).
    pub env: Option<String>,
    /// Check name (rollback) or known metric (threshold).
    pub metric: Option<String>,
    /// Threshold rules: a SELECT returning one number, instead of `metric`.
    pub sql: Option<String>,
    /// Rollback: watch window after `succeeded`. Threshold: the period the metric covers.
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    pub baseline: Option<Baseline>,
    pub max_ratio: Option<f64>,
    pub max_value: Option<f64>,
    pub min_samples: Option<u32>,
    pub aggregate: Option<Aggregate>,
    #[serde(default)]
    pub dry_run: bool,
    pub action: Option<ActionConfig>,
    /// Cron schedule (5 fields, or 6-7 with seconds) for threshold and budget rules.
    pub schedule: Option<String>,
    /// Budget rules: the monthly budget in US dollars.
    pub budget_usd: Option<f64>,
    /// Budget rules: the percentages that alert (default 50, 80, 100).
    pub levels: Option<Vec<f64>>,
    /// Rollback rules: overrides `rules_settings.cooldown`.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
}

/// `[rules_settings]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSettings {
    /// Every rule records what it would do without doing it.
    pub dry_run: bool,
    /// After a rollback of a project/env, no other rollback of it for this long.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// On start, windows that closed longer ago than this are not judged (a rule added
    /// today does not roll back last month's deployments).
    #[serde(with = "humantime_serde")]
    pub catch_up: Duration,
    /// How often open windows and schedules are checked.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// How long the rules state remembers a deployment (and a decision) after the last
    /// record about it was received; the last successful deployments of each watched
    /// project/env are kept longer (they are baselines and rollback targets). Taken as at
    /// least the longest cooldown. See docs/rules.md, "State and memory".
    #[serde(with = "humantime_serde")]
    pub history: Duration,
    /// Not a config key: the environment variables that hold shiplog's own secrets (the
    /// tokens' `secret_env`), set by the program from its config. Command actions run
    /// without them, without every `SHIPLOG_*` variable and without the webhooks'
    /// `secret_env` (see [`crate::action::ActionEnv`]).
    #[serde(skip)]
    pub hide_env: Vec<String>,
    /// Not a config key: the directory of the state's snapshot (`<data_dir>/rules`), set by
    /// `serve`. None: no snapshot, every start reads the whole log.
    #[serde(skip)]
    pub state_dir: Option<std::path::PathBuf>,
}

impl Default for RulesSettings {
    fn default() -> Self {
        RulesSettings {
            dry_run: false,
            cooldown: Duration::from_secs(30 * 60),
            catch_up: Duration::from_secs(3600),
            tick: Duration::from_millis(200),
            history: Duration::from_secs(7 * 86_400),
            hide_env: Vec::new(),
            state_dir: None,
        }
    }
}

/// Threshold metrics known by name (SQL over the DuckDB views, see `threshold_sql`).
pub const KNOWN_METRICS: &[&str] = &[
    "build_duration_p95",
    "build_duration_ms",
    "bundle_bytes",
    "gzip_bytes",
    "error_rate",
    "latency_p95",
    "migration_duration_p95",
    "migration_failures",
    "deploy_failure_rate",
    "api_spend_usd",
];

/// A rule after validation: parsed schedule and action templates.
#[derive(Debug, Clone)]
pub struct Rule {
    pub cfg: RuleConfig,
    pub schedule: Option<cron::Schedule>,
    pub action: Option<Action>,
}

/// A validated action.
#[derive(Debug, Clone)]
pub enum Action {
    Command {
        argv: Vec<Template>,
        timeout: Duration,
        tries: u32,
        backoff: Duration,
    },
    Webhook {
        url: String,
        secret_env: Option<String>,
        timeout: Duration,
        tries: u32,
        backoff: Duration,
    },
}

impl Action {
    pub fn tries(&self) -> u32 {
        match self {
            Action::Command { tries, .. } | Action::Webhook { tries, .. } => *tries,
        }
    }
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.cfg.name
    }
    pub fn window(&self) -> Duration {
        self.cfg.window.unwrap_or(Duration::from_secs(600))
    }
    pub fn min_samples(&self) -> usize {
        self.cfg.min_samples.unwrap_or(5) as usize
    }
    pub fn metric(&self) -> &str {
        self.cfg.metric.as_deref().unwrap_or("")
    }
    pub fn aggregate(&self) -> Aggregate {
        self.cfg
            .aggregate
            .unwrap_or_else(|| Aggregate::default_for(self.metric()))
    }
    pub fn matches(&self, project: &str, env: Option<&str>) -> bool {
        self.cfg.project == project
            && match (&self.cfg.env, env) {
                (None, _) => true,
                (Some(a), Some(b)) => a == b,
                (Some(_), None) => false,
            }
    }
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

/// Validates the rules; the error names the rule and the key.
pub fn validate(rules: &[RuleConfig], settings: &RulesSettings) -> Result<Vec<Rule>, String> {
    let _ = settings;
    let mut out = Vec::with_capacity(rules.len());
    let mut names = std::collections::HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let at = format!("rules[{i}] ({})", r.name);
        let err = |key: &str, msg: &str| Err(format!("{at}: {key}: {msg}"));
        if r.name.trim().is_empty() {
            return Err(format!("rules[{i}]: name: must not be empty"));
        }
        if r.name.contains('/') {
            return err("name", "must not contain '/'");
        }
        if !names.insert(r.name.clone()) {
            return err("name", "another rule has the same name");
        }
        if r.project.is_empty() {
            return err("project", "must not be empty");
        }
        let refuse = |key: &str, present: bool| -> Result<(), String> {
            if present {
                Err(format!(
                    "{at}: {key}: does not apply to kind = \"{}\"",
                    r.kind.as_str()
                ))
            } else {
                Ok(())
            }
        };
        let mut schedule = None;
        match r.kind {
            RuleKind::Rollback => {
                if r.env.as_deref().unwrap_or("").is_empty() {
                    return err("env", "is required for rollback rules");
                }
                if r.metric.as_deref().unwrap_or("").is_empty() {
                    return err(
                        "metric",
                        "is required (the check name to judge, e.g. \"error_rate\")",
                    );
                }
                if r.window.is_none() {
                    return err("window", "is required (e.g. \"10m\")");
                }
                if r.window == Some(Duration::ZERO) {
                    return err("window", "must be longer than 0s");
                }
                match (r.max_ratio, r.max_value) {
                    (None, None) => return err("max_ratio", "set max_ratio or max_value"),
                    (Some(_), Some(_)) => {
                        return err("max_value", "set max_ratio or max_value, not both")
                    }
                    (Some(x), None) if !(x.is_finite() && x > 0.0) => {
                        return err("max_ratio", "must be a positive number")
                    }
                    (None, Some(x)) if !x.is_finite() => {
                        return err("max_value", "must be a number")
                    }
                    _ => {}
                }
                match &r.baseline {
                    Some(Baseline::Named(s)) if s != "previous_deployment" => {
                        return err(
                            "baseline",
                            &format!("must be \"previous_deployment\" or a number, not {s:?}"),
                        )
                    }
                    Some(Baseline::Fixed(x)) if !x.is_finite() || *x < 0.0 => {
                        return err("baseline", "must be a non-negative number")
                    }
                    Some(_) if r.max_value.is_some() => {
                        return err("baseline", "is only used with max_ratio")
                    }
                    _ => {}
                }
                if r.min_samples == Some(0) {
                    return err("min_samples", "must be at least 1");
                }
                if r.action.is_none() {
                    return err("action", "is required for rollback rules");
                }
                refuse("sql", r.sql.is_some())?;
                refuse("schedule", r.schedule.is_some())?;
                refuse("budget_usd", r.budget_usd.is_some())?;
                refuse("levels", r.levels.is_some())?;
            }
            RuleKind::Threshold => {
                match (&r.metric, &r.sql) {
                    (None, None) => return err("metric", "set metric or sql"),
                    (Some(_), Some(_)) => return err("sql", "set metric or sql, not both"),
                    (Some(m), None) if !KNOWN_METRICS.contains(&m.as_str()) => {
                        return err(
                            "metric",
                            &format!("unknown metric {m:?}; known: {}", KNOWN_METRICS.join(", ")),
                        )
                    }
                    _ => {}
                }
                match r.max_value {
                    None => return err("max_value", "is required for threshold rules"),
                    Some(x) if !x.is_finite() => return err("max_value", "must be a number"),
                    _ => {}
                }
                refuse("max_ratio", r.max_ratio.is_some())?;
                refuse("baseline", r.baseline.is_some())?;
                refuse("min_samples", r.min_samples.is_some())?;
                refuse("budget_usd", r.budget_usd.is_some())?;
                refuse("levels", r.levels.is_some())?;
                refuse("cooldown", r.cooldown.is_some())?;
                schedule = Some(required_schedule(r, &at)?);
            }
            RuleKind::Budget => {
                match r.budget_usd {
                    None => return err("budget_usd", "is required for budget rules"),
                    Some(x) if !(x.is_finite() && x > 0.0) => {
                        return err("budget_usd", "must be a positive number")
                    }
                    _ => {}
                }
                if let Some(levels) = &r.levels {
                    if levels.is_empty() || levels.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
                        return err("levels", "must be a non-empty list of positive percentages");
                    }
                }
                refuse("metric", r.metric.is_some())?;
                refuse("sql", r.sql.is_some())?;
                refuse("max_ratio", r.max_ratio.is_some())?;
                refuse("max_value", r.max_value.is_some())?;
                refuse("baseline", r.baseline.is_some())?;
                refuse("min_samples", r.min_samples.is_some())?;
                refuse("window", r.window.is_some())?;
                refuse("cooldown", r.cooldown.is_some())?;
                schedule = Some(required_schedule(r, &at)?);
            }
            RuleKind::MigrationFailed => {
                refuse("metric", r.metric.is_some())?;
                refuse("sql", r.sql.is_some())?;
                refuse("max_ratio", r.max_ratio.is_some())?;
                refuse("max_value", r.max_value.is_some())?;
                refuse("baseline", r.baseline.is_some())?;
                refuse("min_samples", r.min_samples.is_some())?;
                refuse("window", r.window.is_some())?;
                refuse("schedule", r.schedule.is_some())?;
                refuse("budget_usd", r.budget_usd.is_some())?;
                refuse("levels", r.levels.is_some())?;
                refuse("cooldown", r.cooldown.is_some())?;
            }
        }
        let action = match &r.action {
            None => None,
            Some(a) => Some(validate_action(a, r.kind, &at)?),
        };
        out.push(Rule {
            cfg: r.clone(),
            schedule,
            action,
        });
    }
    Ok(out)
}

fn required_schedule(r: &RuleConfig, at: &str) -> Result<cron::Schedule, String> {
    match &r.schedule {
        None => Err(format!(
            "{at}: schedule: is required for {} rules (e.g. \"*/5 * * * *\")",
            r.kind.as_str()
        )),
        Some(s) => parse_schedule(s).map_err(|e| format!("{at}: schedule: {e}")),
    }
}

fn validate_action(a: &ActionConfig, kind: RuleKind, at: &str) -> Result<Action, String> {
    let tries = a.tries.unwrap_or(3);
    if tries == 0 || tries > 20 {
        return Err(format!("{at}: action.tries: must be between 1 and 20"));
    }
    let backoff = a.backoff.unwrap_or(Duration::from_secs(1));
    match (&a.command, &a.webhook) {
        (None, None) => Err(format!("{at}: action: set command or webhook")),
        (Some(_), Some(_)) => Err(format!("{at}: action: set command or webhook, not both")),
        (Some(argv), None) => {
            if a.secret_env.is_some() {
                return Err(format!("{at}: action.secret_env: only applies to webhooks"));
            }
            if argv.is_empty() || argv[0].is_empty() {
                return Err(format!(
                    "{at}: action.command: must name a program: [\"program\", \"arg\", …]"
                ));
            }
            let mut templates = Vec::with_capacity(argv.len());
            for (j, arg) in argv.iter().enumerate() {
                let t =
                    Template::parse(arg).map_err(|e| format!("{at}: action.command[{j}]: {e}"))?;
                if j == 0 && t.has_placeholders() {
                    return Err(format!(
                        "{at}: action.command[0]: the program must be literal (no placeholders)"
                    ));
                }
                if kind != RuleKind::Rollback && t.uses_deployment_placeholders() {
                    return Err(format!(
                        "{at}: action.command[{j}]: deployment placeholders only apply to rollback rules"
                    ));
                }
                templates.push(t);
            }
            let timeout = a.timeout.unwrap_or(Duration::from_secs(60));
            if timeout.is_zero() {
                return Err(format!("{at}: action.timeout: must be longer than 0s"));
            }
            Ok(Action::Command {
                argv: templates,
                timeout,
                tries,
                backoff,
            })
        }
        (None, Some(url)) => {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| format!("{at}: action.webhook: invalid URL {url:?}: {e}"))?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err(format!("{at}: action.webhook: must be an http(s) URL"));
            }
            if let Some(var) = &a.secret_env {
                if var.is_empty() {
                    return Err(format!("{at}: action.secret_env: must name a variable"));
                }
            }
            Ok(Action::Webhook {
                url: url.clone(),
                secret_env: a.secret_env.clone(),
                timeout: a.timeout.unwrap_or(Duration::from_secs(10)),
                tries,
                backoff,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        rules: Vec<RuleConfig>,
    }

    fn parse(text: &str) -> Result<Vec<Rule>, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        validate(&f.rules, &RulesSettings::default())
    }

    #[test]
    fn the_issue_example_parses() {
        let rules = parse(
            r#"
[[rules]]
name = "rollback-on-errors"
kind = "rollback"
project = "web-app"
env = "production"
metric = "error_rate"
window = "10m"
baseline = "previous_deployment"
max_ratio = 1.5
min_samples = 5
dry_run = false
action = { command = ["vercel", "rollback", "{previous_url}", "--yes"], timeout = "60s" }

[[rules]]
name = "fixed"
kind = "rollback"
project = "web-app"
env = "production"
metric = "latency_p95"
window = "2s"
baseline = 0.02
max_ratio = 2
action = { webhook = "https://example.com/hook", secret_env = "SHIPLOG_WEBHOOK_SECRET" }

[[rules]]
name = "slow-builds"
kind = "threshold"
project = "web-app"
metric = "build_duration_p95"
max_value = 120000
schedule = "*/1 * * * *"

[[rules]]
name = "spend"
kind = "budget"
project = "web-app"
budget_usd = 200
schedule = "0 */5 * * * *"

[[rules]]
name = "mig"
kind = "migration_failed"
project = "web-app"
"#,
        )
        .unwrap();
        assert_eq!(rules.len(), 5);
        assert_eq!(rules[0].window(), Duration::from_secs(600));
        assert_eq!(rules[1].cfg.baseline, Some(Baseline::Fixed(0.02)));
        assert_eq!(rules[1].aggregate(), Aggregate::P95);
        assert_eq!(rules[0].aggregate(), Aggregate::Mean);
        assert!(rules[2].schedule.is_some());
        assert!(matches!(rules[1].action, Some(Action::Webhook { .. })));
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_rule_and_the_key() {
        let base = "[[rules]]\nname = \"r1\"\nkind = \"rollback\"\nproject = \"p\"\nenv = \"production\"\nmetric = \"error_rate\"\nwindow = \"1m\"\n";
        let e = err(&format!("{base}max_ratio = 1.5\n"));
        assert!(e.contains("rules[0] (r1)") && e.contains("action"), "{e}");
        let e = err(&format!("{base}action = {{ command = [\"x\"] }}\n"));
        assert!(e.contains("rules[0] (r1): max_ratio"), "{e}");
        let e = err(&format!(
            "{base}max_ratio = 1.5\nbaseline = \"yesterday\"\naction = {{ command = [\"x\"] }}\n"
        ));
        assert!(e.contains("baseline") && e.contains("yesterday"), "{e}");
        let e = err(&format!(
            "{base}max_ratio = 1.5\naction = {{ command = [\"x\", \"{{deploy_id}}\"] }}\n"
        ));
        assert!(
            e.contains("action.command[1]") && e.contains("deploy_id"),
            "{e}"
        );
        let e = err(&format!(
            "{base}max_ratio = 1.5\naction = {{ command = [\"{{previous_url}}\"] }}\n"
        ));
        assert!(e.contains("action.command[0]"), "{e}");
        let e = err(&format!(
            "{base}max_ratio = 1.5\naction = {{ command = [\"x\"], webhook = \"https://a\" }}\n"
        ));
        assert!(e.contains("not both"), "{e}");
        let e = err(&format!(
            "{base}max_ratio = 1.5\nschedule = \"* * * * *\"\naction = {{ command = [\"x\"] }}\n"
        ));
        assert!(
            e.contains("schedule") && e.contains("does not apply"),
            "{e}"
        );
        // Unknown keys are refused by serde with their name.
        let e = err(&format!("{base}max_ratio = 1.5\nmax_ration = 2\n"));
        assert!(e.contains("max_ration"), "{e}");
        let e = err("[[rules]]\nname = \"t\"\nkind = \"threshold\"\nproject = \"p\"\nmetric = \"nope\"\nmax_value = 1\nschedule = \"* * * * *\"\n");
        assert!(
            e.contains("rules[0] (t): metric") && e.contains("unknown metric"),
            "{e}"
        );
        let e = err("[[rules]]\nname = \"t\"\nkind = \"threshold\"\nproject = \"p\"\nmetric = \"bundle_bytes\"\nmax_value = 1\nschedule = \"every minute\"\n");
        assert!(e.contains("rules[0] (t): schedule"), "{e}");
        let e = err("[[rules]]\nname = \"b\"\nkind = \"budget\"\nproject = \"p\"\nschedule = \"* * * * *\"\n");
        assert!(e.contains("rules[0] (b): budget_usd"), "{e}");
    }

    #[test]
    fn five_field_cron_gets_seconds() {
        assert!(parse_schedule("*/1 * * * *").is_ok());
        assert!(parse_schedule("0 */1 * * * *").is_ok());
        assert!(parse_schedule("nope").is_err());
    }
}
