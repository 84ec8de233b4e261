//! The judge: whether a new deployment is degraded compared with its baseline. Pure
//! functions of the samples and the settings: no clock, no I/O (the engine, backtest and the
//! seeded simulations all call the same code, so they agree).
//!
//! A verdict is a function of the *set* of samples: the looks are taken at the samples' own
//! times, in time order, so judging live (a look per arriving sample), after a restart, in a
//! backtest or in a replay gives the same verdict and the same deciding sample.
//!
//! Methods (docs/rules.md, "How a rollback rule judges"):
//! - [`Method::Sequential`] (the default): a group-sequential test with alpha spending
//!   ([`spending`]), re-evaluated at every sample with the false-rollback probability
//!   controlled over all looks; on error and request counts when every sample carries them
//!   (a two-sample test of proportions with a pooled variance, widened for overdispersion),
//!   else on the values (Student's t on pooled variance); one outlying interval per side is
//!   set aside ([`outlier`]); degraded only when the evidence crosses the boundary *and* the
//!   estimated ratio exceeds `max_ratio` (or the value `max_value`);
//! - [`Method::MannWhitney`]: Kayenta's rank test, one look when the window closes;
//! - [`Method::Threshold`]: the first versions' rule (an aggregate above the threshold once
//!   `min_samples` are in, re-checked at every sample), kept for comparison.

pub mod dist;
mod evidence;
mod mann_whitney;
pub mod outlier;
mod sequential;
pub mod sim;
pub mod spending;

pub use evidence::{format_value, Basis, Evidence};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// One check sample of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The counts behind a rate, when the check carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
}

impl Sample {
    pub fn value(time: DateTime<Utc>, value: f64) -> Sample {
        Sample {
            time,
            value: Some(value),
            errors: None,
            requests: None,
        }
    }

    pub fn counts(time: DateTime<Utc>, errors: u64, requests: u64) -> Sample {
        Sample {
            time,
            value: (requests > 0).then(|| errors as f64 / requests as f64),
            errors: Some(errors),
            requests: Some(requests),
        }
    }

    /// Whether it carries usable counts (requests > 0, errors ≤ requests).
    pub fn has_counts(&self) -> bool {
        matches!((self.errors, self.requests), (Some(e), Some(r)) if r > 0 && e <= r)
    }

    /// Errors per request (counts only).
    pub fn rate(&self) -> f64 {
        match (self.errors, self.requests) {
            (Some(e), Some(r)) if r > 0 => e as f64 / r as f64,
            _ => 0.0,
        }
    }

    /// The value judged: `value`, else the rate of the counts.
    pub fn metric_value(&self) -> f64 {
        self.value
            .or_else(|| self.has_counts().then(|| self.rate()))
            .unwrap_or(f64::NAN)
    }

    /// Whether it has something to judge.
    pub fn usable(&self) -> bool {
        self.metric_value().is_finite()
    }
}

/// How a metric is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Anytime-valid: a group-sequential test with alpha spending (the default).
    #[default]
    Sequential,
    /// Kayenta's Mann-Whitney U test, one look at the end of the window.
    MannWhitney,
    /// The aggregate compared with the threshold at every sample (no statistics).
    Threshold,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Sequential => "sequential",
            Method::MannWhitney => "mann_whitney",
            Method::Threshold => "threshold",
        }
    }
}

/// How the samples of a window are summarised by the threshold method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Summarises values: mean, p95 (nearest rank) or max.
    pub fn of(self, values: &[f64]) -> Option<f64> {
        if values.is_empty() {
            return None;
        }
        Some(match self {
            Aggregate::Mean => values.iter().sum::<f64>() / values.len() as f64,
            Aggregate::Max => values.iter().cloned().fold(f64::MIN, f64::max),
            Aggregate::P95 => {
                let mut v = values.to_vec();
                v.sort_by(|a, b| a.total_cmp(b));
                let rank = ((0.95 * v.len() as f64).ceil() as usize).clamp(1, v.len());
                v[rank - 1]
            }
        })
    }
}

/// What the new deployment is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Degraded when credibly above `ratio` × the baseline (the previous good deployment's
    /// samples, or a fixed baseline value).
    Ratio(f64),
    /// Degraded when credibly above this value (no baseline needed).
    Value(f64),
}

/// The baseline of a ratio limit.
#[derive(Debug, Clone, Copy)]
pub enum Reference<'a> {
    /// The samples of the baseline deployment over the same window length.
    Deployment(&'a [Sample]),
    /// A fixed value (`baseline = 0.02`).
    Fixed(f64),
    /// No usable baseline deployment is known.
    Missing,
}

/// One metric of a rule, as the judge needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    pub method: Method,
    /// The false-rollback probability this metric may use (its share of the rule's).
    pub alpha: f64,
    pub limit: Limit,
    pub min_samples: usize,
    /// The threshold method's summary.
    pub aggregate: Aggregate,
    pub critical: bool,
}

/// The watch window of a deployment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// When the deployment went live.
    pub start: DateTime<Utc>,
    pub length: Duration,
    /// The window has ended (on the engine's clock): a last verdict is due.
    pub closed: bool,
}

impl Window {
    pub fn end(&self) -> DateTime<Utc> {
        self.start
            .checked_add_signed(self.length)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The fraction of the window elapsed at `t`, in [0, 1].
    pub fn fraction(&self, t: DateTime<Utc>) -> f64 {
        let len = self.length.num_milliseconds().max(1) as f64;
        ((t - self.start).num_milliseconds() as f64 / len).clamp(0.0, 1.0)
    }
}

/// Where the judgement of one metric stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricVerdict {
    /// The window is open and nothing is decided yet.
    Judging,
    Degraded,
    Healthy,
    /// The window closed without enough data to judge.
    Inconclusive,
}

impl MetricVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricVerdict::Judging => "judging",
            MetricVerdict::Degraded => "degraded",
            MetricVerdict::Healthy => "healthy",
            MetricVerdict::Inconclusive => "inconclusive",
        }
    }
}

/// Judges one metric of a deployment: `new` are its samples within the window (any
/// order), `reference` the baseline.
pub fn judge_metric(
    spec: &MetricSpec,
    new: &[Sample],
    reference: Reference<'_>,
    window: &Window,
) -> Evidence {
    let mut new: Vec<Sample> = new
        .iter()
        .filter(|s| s.usable() && s.time <= window.end())
        .copied()
        .collect();
    new.sort_by_key(|s| s.time);
    let base: Option<Vec<Sample>> = match reference {
        Reference::Deployment(b) => Some(b.iter().filter(|s| s.usable()).copied().collect()),
        _ => None,
    };
    let mut ev = match spec.method {
        Method::Sequential => sequential::judge(spec, &new, reference_of(reference, &base), window),
        Method::MannWhitney => {
            mann_whitney::judge(spec, &new, reference_of(reference, &base), window)
        }
        Method::Threshold => threshold(spec, &new, reference_of(reference, &base), window),
    };
    ev.sentence();
    ev
}

fn reference_of<'a>(r: Reference<'a>, base: &'a Option<Vec<Sample>>) -> Reference<'a> {
    match (r, base) {
        (Reference::Deployment(_), Some(b)) => Reference::Deployment(b),
        (r, _) => r,
    }
}

/// The first versions' method: degraded at the first sample at which at least
/// `min_samples` samples are in and their aggregate exceeds the threshold (the baseline's
/// aggregate × `max_ratio`, or `max_value`).
fn threshold(
    spec: &MetricSpec,
    new: &[Sample],
    reference: Reference<'_>,
    window: &Window,
) -> Evidence {
    let mut ev = Evidence::new(spec, Basis::Values, new.len());
    let values: Vec<f64> = new.iter().map(Sample::metric_value).collect();
    let (baseline, threshold) = match (spec.limit, reference) {
        (Limit::Value(v), _) => (None, Some(v)),
        (Limit::Ratio(r), Reference::Fixed(b)) => (Some(b), Some(b * r)),
        (Limit::Ratio(r), Reference::Deployment(b)) => {
            ev.baseline_samples = Some(b.len());
            let bv: Vec<f64> = b.iter().map(Sample::metric_value).collect();
            let base = spec.aggregate.of(&bv);
            (base, base.map(|x| x * r))
        }
        (Limit::Ratio(_), Reference::Missing) => (None, None),
    };
    ev.baseline = baseline;
    ev.threshold = threshold;
    ev.value = spec.aggregate.of(&values);
    if let Some(t) = threshold {
        for k in spec.min_samples.max(1)..=values.len() {
            let v = spec.aggregate.of(&values[..k]).unwrap_or(f64::NAN);
            ev.looks += 1;
            if v > t {
                ev.value = Some(v);
                ev.samples = k;
                ev.verdict = MetricVerdict::Degraded;
                ev.deciding_time = Some(new[k - 1].time);
                return ev;
            }
        }
    }
    ev.verdict = ev.conclude_or_wait(window, threshold.is_some() && new.len() >= spec.min_samples);
    ev
}

/// The verdict of a whole rule over its metrics, with the evidence of each.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: MetricVerdict,
    /// Per metric, in the rule's order.
    pub metrics: Vec<Evidence>,
    /// The metric that decided (degraded), or the first one.
    pub deciding: usize,
    /// When the deciding sample was taken (degraded).
    pub deciding_time: Option<DateTime<Utc>>,
    /// A failed smoke check decided.
    pub smoke: Option<DateTime<Utc>>,
    pub reason: String,
}

/// Combines the metrics of a rule into one verdict (docs/rules.md, "Several metrics"):
/// - a failed smoke check in the window is degraded at once;
/// - a degraded critical metric is degraded;
/// - the other metrics are degraded together when at least half of them are (rounded up);
/// - otherwise, while the window is open, judging; when it closed: inconclusive when a
///   critical metric, or every metric, could not be judged; else healthy.
///
/// The rule's false-rollback probability is split evenly between its critical metrics and
/// the group of the others (and within the group between its metrics), by [`alpha_shares`].
pub fn combine(
    metrics: Vec<Evidence>,
    smoke_failed: Option<DateTime<Utc>>,
    window: &Window,
) -> Judgement {
    if let Some(t) = smoke_failed {
        return Judgement {
            verdict: MetricVerdict::Degraded,
            deciding: 0,
            deciding_time: Some(t),
            smoke: Some(t),
            reason: "the smoke check failed (passed = false)".into(),
            metrics,
        };
    }
    let degraded_critical = metrics
        .iter()
        .enumerate()
        .filter(|(_, m)| m.critical && m.verdict == MetricVerdict::Degraded)
        .min_by_key(|(_, m)| m.deciding_time);
    if let Some((i, m)) = degraded_critical {
        return Judgement {
            verdict: MetricVerdict::Degraded,
            deciding: i,
            deciding_time: m.deciding_time,
            smoke: None,
            reason: m.reason.clone(),
            metrics,
        };
    }
    let others: Vec<usize> = (0..metrics.len())
        .filter(|i| !metrics[*i].critical)
        .collect();
    let mut degraded: Vec<usize> = others
        .iter()
        .copied()
        .filter(|i| metrics[*i].verdict == MetricVerdict::Degraded)
        .collect();
    degraded.sort_by_key(|i| metrics[*i].deciding_time);
    let needed = others.len().div_ceil(2).max(1);
    if !others.is_empty() && degraded.len() >= needed {
        let i = degraded[needed - 1];
        let reason = degraded[..needed]
            .iter()
            .map(|j| metrics[*j].reason.clone())
            .collect::<Vec<_>>()
            .join("; ");
        return Judgement {
            verdict: MetricVerdict::Degraded,
            deciding: i,
            deciding_time: metrics[i].deciding_time,
            smoke: None,
            reason,
            metrics,
        };
    }
    let first = 0;
    if !window.closed {
        let reason = metrics
            .iter()
            .map(|m| m.reason.clone())
            .collect::<Vec<_>>()
            .join("; ");
        return Judgement {
            verdict: MetricVerdict::Judging,
            deciding: first,
            deciding_time: None,
            smoke: None,
            reason,
            metrics,
        };
    }
    let unjudged = |m: &Evidence| m.verdict != MetricVerdict::Healthy;
    let critical_unjudged = metrics
        .iter()
        .position(|m| m.critical && unjudged(m) && m.verdict != MetricVerdict::Degraded);
    let all_unjudged = metrics
        .iter()
        .all(|m| m.verdict == MetricVerdict::Inconclusive);
    let verdict = if critical_unjudged.is_some() || all_unjudged || metrics.is_empty() {
        MetricVerdict::Inconclusive
    } else {
        MetricVerdict::Healthy
    };
    let deciding = critical_unjudged.unwrap_or(first);
    let reason = metrics
        .iter()
        .map(|m| m.reason.clone())
        .collect::<Vec<_>>()
        .join("; ");
    Judgement {
        verdict,
        deciding,
        deciding_time: None,
        smoke: None,
        reason,
        metrics,
    }
}

/// Splits a rule's false-rollback probability `alpha` over its metrics (`critical` flags, in
/// order): each critical metric gets `alpha / g`, the other metrics `alpha / g / k` each,
/// where `g` counts the critical metrics plus one for the group of the `k` others.
pub fn alpha_shares(alpha: f64, critical: &[bool]) -> Vec<f64> {
    let c = critical.iter().filter(|c| **c).count();
    let k = critical.len() - c;
    let groups = (c + usize::from(k > 0)).max(1) as f64;
    critical
        .iter()
        .map(|crit| {
            if *crit {
                alpha / groups
            } else {
                alpha / groups / k as f64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
