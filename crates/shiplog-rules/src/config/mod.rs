//! The `[[rules]]` and `[rules_settings]` sections of `shiplog.toml`.
//!
//! A rule is a tagged enum on `kind`, one struct per kind, so a key that does not apply to a
//! kind is refused by serde with its name (no per-kind key lists) and a misspelt one too.
//! [`validate`] turns them into [`Rule`]s; every error names the rule and the key
//! (`rules[2] (rollback-on-errors): max_ratio: must be a positive number`).

mod validate;

pub use validate::{parse_schedule, validate};

use crate::action::Template;
use crate::judge::{Aggregate, Method};
use serde::Deserialize;
use std::time::Duration;

/// What a rule does (the `kind` key).
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

/// One `[[rules]]` entry, by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // read once at start, a handful per file
pub enum RuleConfig {
    Rollback(RollbackConfig),
    Threshold(ThresholdConfig),
    Budget(BudgetConfig),
    MigrationFailed(MigrationFailedConfig),
}

impl RuleConfig {
    pub fn kind(&self) -> RuleKind {
        match self {
            RuleConfig::Rollback(_) => RuleKind::Rollback,
            RuleConfig::Threshold(_) => RuleKind::Threshold,
            RuleConfig::Budget(_) => RuleKind::Budget,
            RuleConfig::MigrationFailed(_) => RuleKind::MigrationFailed,
        }
    }

    /// The action as written (its `secret_env` is one of shiplog's secrets).
    pub fn action(&self) -> Option<&ActionConfig> {
        match self {
            RuleConfig::Rollback(r) => r.action.as_ref(),
            RuleConfig::Threshold(r) => r.action.as_ref(),
            RuleConfig::Budget(r) => r.action.as_ref(),
            RuleConfig::MigrationFailed(r) => r.action.as_ref(),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            RuleConfig::Rollback(r) => &r.name,
            RuleConfig::Threshold(r) => &r.name,
            RuleConfig::Budget(r) => &r.name,
            RuleConfig::MigrationFailed(r) => &r.name,
        }
    }
}

/// A metric of a rollback rule, in `metrics = [...]`: a check name, or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // read once at start, a few per rule
pub enum MetricEntry {
    Name(String),
    Table(MetricConfig),
}

/// `{ name = "latency_p95", critical = true, max_ratio = 1.3 }`: the rule's settings apply
/// where a key is not given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    pub name: String,
    /// A degraded critical metric rolls back on its own.
    #[serde(default)]
    pub critical: bool,
    pub max_ratio: Option<f64>,
    pub max_value: Option<f64>,
    pub min_samples: Option<u32>,
    pub method: Option<Method>,
    pub aggregate: Option<Aggregate>,
    /// `api_cost_per_request` only: the check whose `requests` count the requests served
    /// (default `error_rate`).
    pub requests_from: Option<String>,
    /// Where the metric is read (Prometheus, HTTP JSON) instead of pushed checks.
    pub source: Option<crate::source::SourceConfig>,
}

/// `kind = "rollback"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackConfig {
    pub name: String,
    pub project: String,
    /// Required (validated, for a clear message).
    pub env: Option<String>,
    /// One check name to judge (or use `metrics`).
    pub metric: Option<String>,
    /// Several metrics, each optionally `critical`.
    #[serde(default)]
    pub metrics: Vec<MetricEntry>,
    /// The watch window after the deployment went live.
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    pub baseline: Option<Baseline>,
    pub max_ratio: Option<f64>,
    pub max_value: Option<f64>,
    pub min_samples: Option<u32>,
    /// The threshold method's summary of the samples.
    pub aggregate: Option<Aggregate>,
    /// `sequential` (default), `mann_whitney` or `threshold`.
    pub method: Option<Method>,
    /// 1 − the false-rollback probability the rule may have (default 0.99).
    pub confidence: Option<f64>,
    #[serde(default)]
    pub dry_run: bool,
    /// Overrides `rules_settings.cooldown`.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
    pub action: Option<ActionConfig>,
    /// Where `metric` is read (Prometheus, HTTP JSON) instead of pushed checks; with
    /// `metrics = [...]`, each metric has its own `source`.
    pub source: Option<crate::source::SourceConfig>,
}

/// `kind = "threshold"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    pub name: String,
    pub project: String,
    pub env: Option<String>,
    /// A known metric (see [`KNOWN_METRICS`]), or `sql`.
    pub metric: Option<String>,
    /// A SELECT returning one number.
    pub sql: Option<String>,
    /// The period the metric covers (default 24 h).
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    pub max_value: Option<f64>,
    pub schedule: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub action: Option<ActionConfig>,
}

/// `kind = "budget"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub name: String,
    pub project: String,
    pub env: Option<String>,
    /// The monthly budget in US dollars.
    pub budget_usd: Option<f64>,
    /// The percentages that alert (default 50, 80, 100).
    pub levels: Option<Vec<f64>>,
    pub schedule: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub action: Option<ActionConfig>,
}

/// `kind = "migration_failed"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationFailedConfig {
    pub name: String,
    pub project: String,
    pub env: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub action: Option<ActionConfig>,
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
    /// Not a config key: the price table that prices `api_cost` records without a cost
    /// (the server's, for `api_cost_per_request`); None: the shipped table.
    #[serde(skip)]
    pub prices: Option<std::sync::Arc<shiplog_store::PriceTable>>,
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
            prices: None,
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

/// The rollback metric computed from `api_cost` records: the deployment's spend per request
/// it served.
pub const API_COST_PER_REQUEST: &str = "api_cost_per_request";

/// The default confidence of a rollback rule: at most 1% of healthy deployments rolled back.
pub const DEFAULT_CONFIDENCE: f64 = 0.99;

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub project: String,
    pub env: Option<String>,
    pub dry_run: bool,
    pub action: Option<Action>,
    pub spec: RuleSpec,
}

/// What a validated rule does.
#[derive(Debug, Clone)]
pub enum RuleSpec {
    Rollback(RollbackSpec),
    Threshold(ThresholdSpec),
    Budget(BudgetSpec),
    MigrationFailed,
}

/// A rollback rule's judgement settings.
#[derive(Debug, Clone)]
pub struct RollbackSpec {
    pub window: Duration,
    pub metrics: Vec<RollbackMetric>,
    /// None: the previous good deployment; Some: a fixed baseline value.
    pub fixed_baseline: Option<f64>,
    /// 1 − confidence: the rule's false-rollback probability.
    pub alpha: f64,
    pub cooldown: Option<Duration>,
}

/// One metric of a rollback rule, with the rule's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackMetric {
    pub name: String,
    pub critical: bool,
    pub method: Method,
    pub limit: crate::judge::Limit,
    pub min_samples: usize,
    pub aggregate: Aggregate,
    /// `api_cost_per_request`: the check name whose `requests` are the requests served.
    pub requests_from: Option<String>,
    /// Read from this source by the engine's poller (None: pushed checks).
    pub source: Option<crate::source::Source>,
}

impl RollbackMetric {
    /// Computed from `api_cost` records rather than read from checks.
    pub fn is_cost(&self) -> bool {
        self.name == API_COST_PER_REQUEST
    }
}

#[derive(Debug, Clone)]
pub struct ThresholdSpec {
    pub metric: Option<String>,
    pub sql: Option<String>,
    pub window: Duration,
    pub max_value: f64,
    pub schedule: cron::Schedule,
}

#[derive(Debug, Clone)]
pub struct BudgetSpec {
    pub budget_usd: f64,
    /// Sorted ascending.
    pub levels: Vec<f64>,
    pub schedule: cron::Schedule,
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
        &self.name
    }

    pub fn kind(&self) -> RuleKind {
        match self.spec {
            RuleSpec::Rollback(_) => RuleKind::Rollback,
            RuleSpec::Threshold(_) => RuleKind::Threshold,
            RuleSpec::Budget(_) => RuleKind::Budget,
            RuleSpec::MigrationFailed => RuleKind::MigrationFailed,
        }
    }

    pub fn rollback(&self) -> Option<&RollbackSpec> {
        match &self.spec {
            RuleSpec::Rollback(r) => Some(r),
            _ => None,
        }
    }

    pub fn schedule(&self) -> Option<&cron::Schedule> {
        match &self.spec {
            RuleSpec::Threshold(t) => Some(&t.schedule),
            RuleSpec::Budget(b) => Some(&b.schedule),
            _ => None,
        }
    }

    pub fn matches(&self, project: &str, env: Option<&str>) -> bool {
        self.project == project
            && match (&self.env, env) {
                (None, _) => true,
                (Some(a), Some(b)) => a == b,
                (Some(_), None) => false,
            }
    }

    /// Whether this rule acts for real (neither it nor the settings are in dry run).
    pub fn is_dry_run(&self, settings: &RulesSettings) -> bool {
        self.dry_run || settings.dry_run
    }
}

#[cfg(test)]
mod tests;
