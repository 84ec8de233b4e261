//! What the state knows: deployments with their check samples and costs, migrations, the
//! rollbacks, threshold and budget states.

use crate::judge;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One check sample of a deployment (the check name is its series').
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
}

impl Sample {
    /// The sample as the judge reads it.
    pub fn judged(&self) -> judge::Sample {
        judge::Sample {
            time: self.time,
            value: self.value,
            errors: self.errors,
            requests: self.requests,
        }
    }
}

/// The samples of one check name of one deployment, in arrival order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub samples: Vec<Sample>,
    /// The source of this metric (Prometheus, HTTP JSON) is failing: its last read gave no
    /// sample. Cleared by the next sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<SourceFailure>,
}

/// A source that failed to give a deployment's samples, since its last sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFailure {
    /// The first failed read since the last sample.
    pub since: DateTime<Utc>,
    /// Failed reads since the last sample.
    pub reads: u32,
    /// The last read's error, e.g. `prometheus unreachable: …`.
    pub reason: String,
}

/// API spend attributed to a deployment in one [`COST_BUCKET`] of time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostBucket {
    /// The bucket's start.
    pub start: DateTime<Utc>,
    pub usd: f64,
    /// API calls (the records' `requests`, 1 each by default).
    pub calls: u64,
}

/// The width of a cost bucket.
pub const COST_BUCKET: chrono::Duration = chrono::Duration::seconds(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub project: String,
    pub env: Option<String>,
    /// Order of first appearance.
    pub seq: u64,
    pub url: Option<String>,
    pub previous_id: Option<String>,
    /// The envelope's commit and branch (sources' `{commit}`, `{branch}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub status: String,
    pub succeeded_at: Option<DateTime<Utc>>,
    pub succeeded_seq: Option<u64>,
    /// Failed (or cancelled): it never served.
    pub failed: bool,
    pub rolled_back: bool,
    /// A rollback rule judged it degraded (dry run included): it is no baseline and no
    /// rollback target.
    #[serde(default)]
    pub degraded: bool,
    /// A rollback action was started for it (there is at most one per deployment).
    pub rollback_started: bool,
    /// Rules that concluded it: they decided, or found it not to be judged.
    pub concluded: Vec<String>,
    /// Forgotten under the deployment cap after a rule had concluded it, then seen again:
    /// no rule judges it again.
    pub judged_before: bool,
    /// When the last record about it was received (expiry).
    pub last_seen: DateTime<Utc>,
    /// Its check samples, by check name (see [`super::Retention`]).
    pub series: Vec<Series>,
    /// Its API spend over time (rules with `api_cost_per_request` only).
    #[serde(default)]
    pub costs: Vec<CostBucket>,
    /// Bumped whenever its samples or costs change (the engine re-judges only then).
    #[serde(default)]
    pub revision: u64,
}

impl Deployment {
    pub(crate) fn new(
        id: &str,
        project: &str,
        env: Option<&str>,
        seq: u64,
        at: DateTime<Utc>,
    ) -> Self {
        Deployment {
            id: id.to_string(),
            project: project.to_string(),
            env: env.map(str::to_string),
            seq,
            url: None,
            previous_id: None,
            commit: None,
            branch: None,
            status: String::new(),
            succeeded_at: None,
            succeeded_seq: None,
            failed: false,
            rolled_back: false,
            degraded: false,
            rollback_started: false,
            concluded: Vec::new(),
            judged_before: false,
            last_seen: at,
            series: Vec::new(),
            costs: Vec::new(),
            revision: 0,
        }
    }

    /// Why this deployment is no baseline and no rollback target (None: it is one): it
    /// must have served (succeeded or promoted) and not have failed, been rolled back or
    /// been judged degraded.
    pub fn unsafe_reason(&self) -> Option<String> {
        if self.rolled_back {
            Some(format!("{} was rolled back", self.id))
        } else if self.failed {
            Some(format!("{} failed", self.id))
        } else if self.succeeded_at.is_none() {
            Some(format!("{} never succeeded", self.id))
        } else if self.degraded {
            Some(format!("{} was judged degraded", self.id))
        } else {
            None
        }
    }

    /// Whether `rule` concluded this deployment (or it was judged before it was forgotten).
    pub fn is_concluded(&self, rule: &str) -> bool {
        self.judged_before || self.concluded.iter().any(|r| r == rule)
    }

    /// The facts without the samples (cheap to clone).
    pub fn header(&self) -> Deployment {
        Deployment {
            id: self.id.clone(),
            project: self.project.clone(),
            env: self.env.clone(),
            seq: self.seq,
            url: self.url.clone(),
            previous_id: self.previous_id.clone(),
            commit: self.commit.clone(),
            branch: self.branch.clone(),
            status: self.status.clone(),
            succeeded_at: self.succeeded_at,
            succeeded_seq: self.succeeded_seq,
            failed: self.failed,
            rolled_back: self.rolled_back,
            degraded: self.degraded,
            rollback_started: self.rollback_started,
            concluded: Vec::new(),
            judged_before: self.judged_before,
            last_seen: self.last_seen,
            series: Vec::new(),
            costs: Vec::new(),
            revision: self.revision,
        }
    }

    /// Number of samples held (cost buckets count as samples).
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum::<usize>() + self.costs.len()
    }

    pub(crate) fn series(&self, name: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.name == name)
    }

    pub(crate) fn clear_samples(&mut self) -> usize {
        let n = self.sample_count();
        if n > 0 {
            self.series = Vec::new();
            self.costs = Vec::new();
            self.revision += 1;
        }
        n
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationRec {
    pub id: String,
    pub source: String,
    pub project: String,
    pub env: Option<String>,
    pub database: Option<String>,
    pub version: Option<String>,
    pub name: Option<String>,
    pub status: String,
    /// The first [`super::MAX_ERROR_BYTES`] of the error text.
    pub error: Option<String>,
    pub time: DateTime<Utc>,
    #[serde(skip)]
    pub seq: u64,
    /// When it was received (expiry).
    #[serde(skip)]
    pub received: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackRec {
    pub rule: String,
    pub project: String,
    pub env: Option<String>,
    pub deployment_id: String,
    pub started_at: DateTime<Utc>,
    /// None while the action runs (or if shiplog stopped while it ran).
    pub outcome: Option<String>,
    /// When the last decision about it was received (expiry).
    #[serde(skip)]
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThresholdRec {
    pub rule: String,
    pub project: String,
    pub env: Option<String>,
    pub metric: Option<String>,
    pub verdict: String,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastDeploy {
    pub deployment_id: String,
    pub time: DateTime<Utc>,
}

/// A deployment a rollback rule is still judging (the gate and the deployment page show
/// it as "judging, n of min samples").
#[derive(Debug, Clone, Serialize)]
pub struct Judging {
    pub rule: String,
    pub deployment_id: String,
    pub window_ends: DateTime<Utc>,
    /// Per metric: its name, the samples in and the minimum.
    pub metrics: Vec<JudgingMetric>,
    /// In words, e.g. "judging, 3 of 5 samples".
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct JudgingMetric {
    pub metric: String,
    pub samples: usize,
    pub min_samples: usize,
}

/// What `GET /v1/gate` answers and `shiplog gate` prints.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    pub project: String,
    pub env: String,
    pub safe: bool,
    pub reasons: Vec<String>,
    pub last_successful_deploy: Option<LastDeploy>,
    pub failed_migrations: Vec<MigrationRec>,
    pub thresholds_in_alert: Vec<ThresholdRec>,
    pub active_rollbacks: Vec<RollbackRec>,
    /// Deployments still being judged (information: they do not make the gate unsafe).
    pub judging: Vec<Judging>,
}
