//! `shiplog.toml`: the configuration file, `SHIPLOG_*` environment overrides, defaults.
//!
//! Precedence: command-line flag > environment > file > default.
//!
//! Environment: `SHIPLOG_<SECTION>__<KEY>=value` sets `<section>.<key>` (the value is read
//! as TOML when it parses as a TOML value, else as a string), e.g.
//! `SHIPLOG_SERVER__LISTEN=0.0.0.0:7070`, `SHIPLOG_PROJECTION__FLUSH_INTERVAL=500ms`.
//! Short forms: `SHIPLOG_LISTEN`, `SHIPLOG_DATA_DIR`, `SHIPLOG_CONFIG` (the file itself).
//!
//! Unknown keys are errors (a typo must not silently fall back to a default); every error
//! names the key and the file.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub tokens: Vec<TokenConfig>,
    pub log: LogConfig,
    pub projection: ProjectionConfig,
    /// `[pricing]`: the price table of `api_cost` records sent without `cost_usd`.
    pub pricing: PricingConfig,
    /// `[[rules]]`: rollback, threshold, budget and migration_failed rules (docs/rules.md).
    pub rules: Vec<shiplog_rules::RuleConfig>,
    /// `[rules_settings]`: global dry_run, cooldown, catch_up, tick.
    pub rules_settings: shiplog_rules::RulesSettings,
    /// `[[thresholds]]`: good/warning limits per metric, optionally per project and env
    /// (docs/dashboards.md). Metrics not named keep their defaults.
    pub thresholds: Vec<shiplog_web::dashboards::ThresholdRule>,
    /// `[[budgets]]`: daily/monthly API cost budgets (default: 60 USD/day, 1500 USD/month)
    /// and build budgets (`shiplog compare`), see [`crate::budgets`].
    pub budgets: Vec<crate::budgets::BudgetEntry>,
    /// A folder of `<name>.toml` dashboards that add to or override the built-in ones.
    pub dashboards_dir: Option<PathBuf>,
}

impl Config {
    /// The build budgets of `[[budgets]]` (`GET /v1/compare`).
    pub fn build_budgets(&self) -> Vec<shiplog_store::compare::BuildBudget> {
        self.budgets.iter().filter_map(|b| b.build()).collect()
    }

    /// The thresholds the dashboards use: the configured rules, the defaults of metrics
    /// the config does not name, and the budgets (or the default budget).
    pub fn effective_thresholds(&self) -> shiplog_web::dashboards::Thresholds {
        use shiplog_web::dashboards::{default_budgets, default_thresholds, Thresholds};
        let mut rules = self.thresholds.clone();
        for d in default_thresholds() {
            if !self.thresholds.iter().any(|t| t.metric == d.metric) {
                rules.push(d);
            }
        }
        let cost: Vec<_> = self.budgets.iter().filter_map(|b| b.cost()).collect();
        let budgets = if cost.is_empty() {
            default_budgets()
        } else {
            cost
        };
        Thresholds::new(rules, &budgets)
    }
}

/// `[pricing]`: the price table that prices `api_cost` records sent without `cost_usd`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// A price table (the format of the shipped `prices.toml`, see docs/costs.md) that
    /// overrides and extends the shipped one. Applies to new events; `shiplog reprice`
    /// applies it to history.
    pub prices_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the log, the Parquet projections and the state live.
    pub data_dir: PathBuf,
    /// Largest accepted request body, in bytes (also after gzip decompression).
    pub body_limit: usize,
    /// How long `(source, id)` is remembered for dedup.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// How long to wait for in-flight requests on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Whole-request timeout (slow clients get 408).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Budget of ingest request bytes in flight; beyond it ingest answers 503 with
    /// Retry-After instead of taking more memory. Each request reserves twice its body.
    pub max_inflight_bytes: usize,
    /// DuckDB's memory limit for queries and dashboards, in MiB.
    pub query_memory_mb: u64,
    /// Cap on the dedup keys held (about 8 bytes each); past it the oldest are forgotten
    /// before the end of `dedup_window`.
    pub dedup_max_keys: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7070".parse().unwrap(),
            data_dir: PathBuf::from("./shiplog-data"),
            body_limit: shiplog_web::DEFAULT_BODY_LIMIT,
            dedup_window: Duration::from_secs(7 * 24 * 3600),
            shutdown_grace: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_inflight_bytes: shiplog_ingest::admission::DEFAULT_MAX_INFLIGHT_BYTES,
            query_memory_mb: shiplog_store::DEFAULT_QUERY_MEMORY_MB,
            dedup_max_keys: shiplog_ingest::dedup::DEFAULT_MAX_KEYS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// The secret itself (prefer `secret_env`).
    #[serde(default)]
    pub secret: Option<String>,
    /// Name of an environment variable that holds the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    pub scopes: Vec<shiplog_web::auth::Scope>,
    /// Projects this token may touch (empty: all).
    #[serde(default)]
    pub projects: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `file` (the embedded segmented log, default) or `kafka`.
    pub backend: String,
    /// Segment size of the file log, in bytes.
    pub segment_bytes: u64,
    /// File log: compress sealed segments with zstd in the background (docs/operations.md).
    pub compress: bool,
    /// `[log.retention]`: file log only, off by default (docs/operations.md, "Log retention").
    pub retention: LogRetentionConfig,
    /// Kafka: `bootstrap.servers`, `host:port[,host:port…]` (required with `kafka`).
    pub brokers: Option<String>,
    /// Kafka: the topic (default `shiplog.events`); it must exist.
    pub topic: String,
    /// `[log.kafka]`: librdkafka settings passed through (e.g. `"security.protocol" =
    /// "SASL_SSL"`); `_` in a key reads as `.`.
    pub kafka: BTreeMap<String, toml::Value>,
    /// Kafka: processors join this consumer group and share the partitions, each
    /// partition projected into its own directory (docs/operations.md). Unset: one active
    /// processor projects every partition, the others wait as standbys.
    pub consumer_group: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            backend: "file".into(),
            segment_bytes: 64 << 20,
            compress: false,
            retention: LogRetentionConfig::default(),
            brokers: None,
            topic: shiplog_kafka::DEFAULT_TOPIC.into(),
            kafka: BTreeMap::new(),
            consumer_group: None,
        }
    }
}

/// `[log.retention]`: when sealed segments of the file log are removed. Only segments
/// already in the Parquet projection and covered by the dedup and rules snapshots go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogRetentionConfig {
    /// Remove sealed segments last written longer ago than this (`"30d"`); unset: no limit.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Remove the oldest sealed segments while the log's files take more bytes than this;
    /// unset: no limit.
    pub max_bytes: Option<u64>,
    /// How often the server checks the limits.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for LogRetentionConfig {
    fn default() -> Self {
        LogRetentionConfig {
            max_age: None,
            max_bytes: None,
            interval: Duration::from_secs(60),
        }
    }
}

impl LogRetentionConfig {
    /// The policy for [`shiplog_log::SegmentedLog::apply_retention`].
    pub fn policy(&self) -> shiplog_log::RetentionPolicy {
        shiplog_log::RetentionPolicy {
            max_age: self.max_age,
            max_bytes: self.max_bytes,
        }
    }
}

impl LogConfig {
    /// Whether the log is Kafka.
    pub fn is_kafka(&self) -> bool {
        self.backend == "kafka"
    }

    /// The Kafka client settings of `[log]` (backend `kafka`).
    pub fn kafka_config(&self) -> Result<shiplog_kafka::KafkaLogConfig> {
        let brokers = self
            .brokers
            .clone()
            .filter(|b| !b.trim().is_empty())
            .context("log.brokers is required with log.backend = \"kafka\"")?;
        let mut c = shiplog_kafka::KafkaLogConfig::new(brokers);
        c.topic = self.topic.clone();
        for (k, v) in &self.kafka {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    v.to_string()
                }
                _ => bail!("log.kafka.{k}: a string, number or boolean is required"),
            };
            c.settings.insert(k.clone(), v);
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionConfig {
    /// How often buffered events are written to Parquet.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Flush as soon as this many events are buffered.
    pub flush_rows: usize,
    /// Cron expression (with seconds) for compacting closed days.
    pub compaction_schedule: String,
    /// Days to keep per kind (`check = 30`); absent: forever.
    pub retention_days: BTreeMap<String, u32>,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        ProjectionConfig {
            flush_interval: Duration::from_secs(1),
            flush_rows: 100_000,
            compaction_schedule: "0 15 3 * * *".into(),
            retention_days: BTreeMap::new(),
        }
    }
}

/// Loads the config: the file (if any), then `SHIPLOG_*` overrides from `env`.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config> {
    let (mut table, origin) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| syntax_error(p, &text, &e))?;
            (table, p.display().to_string())
        }
        None => (toml::Table::new(), "defaults".to_string()),
    };
    let mut from_env = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("SHIPLOG_") else {
            continue;
        };
        let key: Vec<String> = match rest {
            "LISTEN" => vec!["server".into(), "listen".into()],
            "DATA_DIR" => vec!["server".into(), "data_dir".into()],
            "DASHBOARDS_DIR" => vec!["dashboards_dir".into()],
            r if r.contains("__") => r.split("__").map(|s| s.to_ascii_lowercase()).collect(),
            _ => continue,
        };
        set_key(&mut table, &key, parse_env_value(value))
            .with_context(|| format!("environment variable {name}"))?;
        from_env.push(name.clone());
    }
    let source = if from_env.is_empty() {
        origin
    } else {
        format!("{origin} (with {})", from_env.join(", "))
    };
    let mut config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{source}: {}", e.to_string().trim()))?;
    validate(&config).with_context(|| format!("invalid configuration in {source}"))?;
    // Rule commands run without the variables that hold shiplog's own secrets.
    config.rules_settings.hide_env = config.secret_env_names();
    Ok(config)
}

impl Config {
    /// Every environment variable a `*_env` setting names: the tokens' and the webhooks'
    /// `secret_env`.
    pub fn secret_env_names(&self) -> Vec<String> {
        let tokens = self.tokens.iter().filter_map(|t| t.secret_env.clone());
        let hooks = self
            .rules
            .iter()
            .filter_map(|r| r.action()?.secret_env.clone());
        let mut names: Vec<String> = tokens.chain(hooks).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// A TOML syntax error of the config file: the file, line, column, the key (or table) where
/// it happened and the parser's message, but never the text of the line. The parser's own
/// report quotes the line, and a config line may hold a token secret (`secret = "…` with a
/// missing quote would print the secret to the terminal and into the service's logs).
fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = e.span() else {
        return anyhow::anyhow!("{}: TOML syntax error: {message}", path.display());
    };
    let at = floor_char_boundary(text, span.start.min(text.len()));
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..line_start].matches('\n').count() + 1;
    let column = text[line_start..at].chars().count() + 1;
    let place = match syntax_error_key(text, line_start) {
        Some(key) => format!(" ({key})"),
        None => String::new(),
    };
    anyhow::anyhow!(
        "{}: TOML syntax error at line {line}, column {column}{place}: {message}",
        path.display()
    )
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Where the syntax error of the line starting at `line_start` is: `key tokens[1].secret`,
/// or `in server` when the line's key cannot be named. Only what is known to be TOML structure
/// is named: a line (key or table header) counts only when everything before it parses, so
/// that no line inside a multi-line string (which could be a secret) is ever quoted.
fn syntax_error_key(text: &str, line_start: usize) -> Option<String> {
    let parses = |end: usize| text[..end].parse::<toml::Table>().is_ok();
    // the real table headers before the error line: (name, array of tables)
    let mut headers: Vec<(String, bool)> = Vec::new();
    let mut start = 0;
    for l in text[..line_start].split_inclusive('\n') {
        if let Some(h) = table_header(l) {
            if parses(start) {
                headers.push(h);
            }
        }
        start += l.len();
    }
    let table = headers.last().map(|(name, array)| {
        if *array {
            let n = headers.iter().filter(|h| h.0 == *name && h.1).count();
            format!("{name}[{}]", n - 1)
        } else {
            name.clone()
        }
    });
    let line = text[line_start..].split('\n').next().unwrap_or("");
    let key = if table_header(line).is_none() && parses(line_start) {
        line.split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| is_key(k))
    } else {
        None
    };
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("key {t}.{k}")),
        (None, Some(k)) => Some(format!("key {k}")),
        (Some(t), None) => Some(format!("in {t}")),
        (None, None) => None,
    }
}

/// `[name]` or `[[name]]` with a bare (dotted) name, and whether it is an array of tables.
fn table_header(line: &str) -> Option<(String, bool)> {
    let l = line.trim();
    let l = match l.find('#') {
        Some(i) => l[..i].trim_end(),
        None => l,
    };
    let (inner, array) = if let Some(i) = l.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
        (i, true)
    } else if let Some(i) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        (i, false)
    } else {
        return None;
    };
    let inner = inner.trim();
    is_key(inner).then(|| (inner.to_string(), array))
}

/// A bare or dotted TOML key (`secret`, `log.kafka`): letters, digits, `_`, `-`, `.`.
fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.split('.').all(|part| {
            let part = part.trim();
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

fn parse_env_value(value: &str) -> toml::Value {
    // A bare TOML value (`true`, `42`, `["a"]`) parses; anything else is a string.
    match format!("v = {value}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| value.into()),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

fn set_key(table: &mut toml::Table, key: &[String], value: toml::Value) -> Result<()> {
    let (last, parents) = key.split_last().context("empty key")?;
    let mut t = table;
    for k in parents {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        t = entry
            .as_table_mut()
            .with_context(|| format!("{k} is not a table"))?;
    }
    // Numbers given for string keys stay usable: listen/data_dir are strings.
    let value = match (last.as_str(), value) {
        ("listen" | "data_dir" | "dashboards_dir", v) if !v.is_str() => {
            toml::Value::String(v.to_string())
        }
        (_, v) => v,
    };
    t.insert(last.clone(), value);
    Ok(())
}

fn validate(config: &Config) -> Result<()> {
    match config.log.backend.as_str() {
        "file" => {}
        "kafka" => {
            config.log.kafka_config()?;
            if config.log.topic.trim().is_empty() {
                bail!("log.topic must not be empty");
            }
        }
        other => bail!("log.backend = {other:?}: \"file\" or \"kafka\""),
    }
    let retention = &config.log.retention;
    if retention.policy().is_enabled() && config.log.is_kafka() {
        bail!(
            "log.retention applies to the file log; a Kafka topic is bounded by its own \
             retention (retention.ms, retention.bytes)"
        );
    }
    if retention.max_age.is_some_and(|a| a.is_zero()) {
        bail!("log.retention.max_age must be above 0 (unset it to keep segments of any age)");
    }
    if retention.interval.is_zero() {
        bail!("log.retention.interval must be above 0");
    }
    for (i, t) in config.tokens.iter().enumerate() {
        match (&t.secret, &t.secret_env) {
            (Some(_), Some(_)) => bail!(
                "tokens[{i}] ({}): set secret or secret_env, not both",
                t.name
            ),
            (None, None) => bail!("tokens[{i}] ({}): secret or secret_env is required", t.name),
            (Some(s), None) if s.chars().count() < MIN_SECRET_CHARS => {
                bail!(
                    "tokens[{i}] ({}): secret must be at least {MIN_SECRET_CHARS} characters",
                    t.name
                )
            }
            (None, Some(var)) if !is_env_name(var) => bail!(
                "tokens[{i}] ({}): secret_env must be the name of an environment variable \
                 (letters, digits and _), not the secret itself",
                t.name
            ),
            _ => {}
        }
        if t.scopes.is_empty() {
            bail!("tokens[{i}] ({}): scopes must not be empty", t.name);
        }
    }
    if let Some(p) = &config.pricing.prices_file {
        shiplog_store::PriceTable::shipped_with_file(p)
            .map_err(|e| anyhow::anyhow!("pricing.prices_file: {e}"))?;
    }
    for kind in config.projection.retention_days.keys() {
        if shiplog_events::Kind::parse(kind).is_none() {
            bail!("projection.retention_days.{kind}: unknown kind");
        }
    }
    shiplog_rules::validate(&config.rules, &config.rules_settings).map_err(anyhow::Error::msg)?;
    for (i, t) in config.thresholds.iter().enumerate() {
        let ordered = if t.higher_is_better {
            t.good >= t.warning
        } else {
            t.good <= t.warning
        };
        if !ordered {
            bail!(
                "thresholds[{i}] ({}): good = {} and warning = {} are in the wrong order ({})",
                t.metric,
                t.good,
                t.warning,
                if t.higher_is_better {
                    "higher_is_better: good must be >= warning"
                } else {
                    "good must be <= warning"
                }
            );
        }
    }
    for (i, b) in config.budgets.iter().enumerate() {
        if let Err(e) = b.check() {
            bail!("budgets[{i}].{e}");
        }
    }
    Ok(())
}

/// The shortest token secret accepted, from the file (`secret`) or the environment
/// (`secret_env`) alike.
pub const MIN_SECRET_CHARS: usize = 16;

/// A portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Config {
    /// The configured tokens with their secrets resolved from the process environment.
    pub fn tokens(&self) -> Result<Vec<shiplog_web::auth::Token>> {
        self.tokens_from(|var| std::env::var_os(var))
    }

    /// The configured tokens, `secret_env` looked up with `env`. Errors name the token and
    /// the variable, never the secret.
    fn tokens_from(
        &self,
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Vec<shiplog_web::auth::Token>> {
        self.tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let secret = match (&t.secret, &t.secret_env) {
                    (Some(s), _) => s.clone(),
                    (None, Some(var)) => {
                        let value = env(var).with_context(|| {
                            format!(
                                "tokens[{i}] ({}): environment variable {var} is not set",
                                t.name
                            )
                        })?;
                        let Ok(value) = value.into_string() else {
                            bail!(
                                "tokens[{i}] ({}): environment variable {var} is not valid UTF-8",
                                t.name
                            );
                        };
                        if value.chars().count() < MIN_SECRET_CHARS {
                            bail!(
                                "tokens[{i}] ({}): the secret in environment variable {var} \
                                 must be at least {MIN_SECRET_CHARS} characters{}",
                                t.name,
                                if value.is_empty() {
                                    " (it is empty)"
                                } else {
                                    ""
                                }
                            );
                        }
                        value
                    }
                    (None, None) => unreachable!("validated"),
                };
                Ok(shiplog_web::auth::Token::new(
                    t.name.clone(),
                    &secret,
                    t.scopes.clone(),
                    t.projects.clone(),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
