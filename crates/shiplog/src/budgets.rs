//! `[[budgets]]` entries of the config: API cost limits (the dashboards' `daily_usd`,
//! `monthly_usd`) and build limits (`shiplog compare`, `GET /v1/compare`), in one table
//! so that a project's budgets sit together. An entry may set either kind or both.

use serde::Deserialize;
use shiplog_store::compare::BuildBudget;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetEntry {
    /// The project it applies to (default: every project).
    #[serde(default)]
    pub project: Option<String>,
    /// Cost budgets only: the environment.
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub daily_usd: Option<f64>,
    #[serde(default)]
    pub monthly_usd: Option<f64>,
    /// Most total bytes of a build's chunks and assets.
    #[serde(default)]
    pub bundle_bytes: Option<u64>,
    /// Most total gzip bytes.
    #[serde(default)]
    pub gzip_bytes: Option<u64>,
    /// Most bytes of one chunk (every chunk, or those `chunk` matches).
    #[serde(default)]
    pub chunk_bytes: Option<u64>,
    /// The chunks `chunk_bytes` applies to: a name with `*` wildcards.
    #[serde(default)]
    pub chunk: Option<String>,
    /// Longest build, e.g. "90s".
    #[serde(default, with = "humantime_serde")]
    pub build_time: Option<Duration>,
    /// Most growth of the bundle (and of its gzip size) against the base build, in %.
    #[serde(default)]
    pub growth_percent: Option<f64>,
    /// Most growth of the build time against the base build, in %.
    #[serde(default)]
    pub build_growth_percent: Option<f64>,
}

impl BudgetEntry {
    /// The cost part, when the entry has one.
    pub fn cost(&self) -> Option<shiplog_web::dashboards::Budget> {
        (self.daily_usd.is_some() || self.monthly_usd.is_some()).then(|| {
            shiplog_web::dashboards::Budget {
                project: self.project.clone(),
                env: self.env.clone(),
                daily_usd: self.daily_usd,
                monthly_usd: self.monthly_usd,
            }
        })
    }

    /// The build part, when the entry has one.
    pub fn build(&self) -> Option<BuildBudget> {
        let b = BuildBudget {
            project: self.project.clone(),
            bundle_bytes: self.bundle_bytes,
            gzip_bytes: self.gzip_bytes,
            chunk_bytes: self.chunk_bytes,
            chunk: self.chunk.clone(),
            duration_ms: self
                .build_time
                .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            growth_percent: self.growth_percent,
            build_growth_percent: self.build_growth_percent,
        };
        b.is_set().then_some(b)
    }

    /// The mistakes an entry can hold, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if self.cost().is_none() && self.build().is_none() {
            return Err(
                "set a cost limit (daily_usd, monthly_usd) or a build limit \
                 (bundle_bytes, gzip_bytes, chunk_bytes, build_time, growth_percent, \
                 build_growth_percent)"
                    .into(),
            );
        }
        if self.chunk.is_some() && self.chunk_bytes.is_none() {
            return Err("chunk: names the chunks of chunk_bytes, which is not set".into());
        }
        if self.env.is_some() && self.cost().is_none() {
            return Err(
                "env: applies to cost limits only (builds are compared per project)".into(),
            );
        }
        for (name, v) in [
            ("growth_percent", self.growth_percent),
            ("build_growth_percent", self.build_growth_percent),
            ("daily_usd", self.daily_usd),
            ("monthly_usd", self.monthly_usd),
        ] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(format!("{name}: must be a number >= 0"));
            }
        }
        Ok(())
    }
}
