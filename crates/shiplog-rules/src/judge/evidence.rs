//! The evidence behind a metric's verdict, as recorded in the decision event and shown on
//! the deployment page, with the sentence that states it in words.

use super::{Method, MetricSpec, MetricVerdict, Window};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the test was computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Error and request counts (every sample carried them).
    Counts,
    /// The samples' values.
    Values,
}

/// One metric's evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub metric: String,
    pub verdict: MetricVerdict,
    pub method: Method,
    pub basis: Basis,
    #[serde(default)]
    pub critical: bool,
    /// The false-rollback probability this metric was tested at.
    pub alpha: f64,
    /// Samples of the new deployment judged (after any set aside), and the minimum.
    pub samples: usize,
    pub min_samples: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_samples: Option<usize>,
    /// The new deployment's rate or mean (the aggregate, for the threshold method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The practical limit: `baseline × max_ratio`, or `max_value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// value / baseline, and its (repeated) confidence interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_high: Option<f64>,
    /// The test statistic (z score; U for Mann-Whitney) and the boundary it was compared to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary: Option<f64>,
    /// The one-sided p-value at the look that decided (or the last look), and the level that
    /// look allowed (the boundary as a p-value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_limit: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_requests: Option<u64>,
    /// The range of the baseline's samples (after any set aside), for the charts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_high: Option<f64>,
    /// Samples set aside as outliers (their times), new deployment and baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outliers: Vec<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_outliers: Vec<DateTime<Utc>>,
    /// How many looks were taken.
    pub looks: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deciding_time: Option<DateTime<Utc>>,
    /// The verdict in words, e.g. "error_rate 2.4% vs 0.9% baseline, 2.6×, p < 0.001, 10
    /// vs 10 samples".
    pub reason: String,
}

impl Evidence {
    pub(crate) fn new(spec: &MetricSpec, basis: Basis, samples: usize) -> Evidence {
        Evidence {
            metric: spec.name.clone(),
            verdict: MetricVerdict::Judging,
            method: spec.method,
            basis,
            critical: spec.critical,
            alpha: spec.alpha,
            samples,
            min_samples: spec.min_samples,
            baseline_samples: None,
            value: None,
            baseline: None,
            threshold: None,
            ratio: None,
            ratio_low: None,
            ratio_high: None,
            statistic: None,
            boundary: None,
            p_value: None,
            p_limit: None,
            errors: None,
            requests: None,
            baseline_errors: None,
            baseline_requests: None,
            baseline_low: None,
            baseline_high: None,
            outliers: Vec::new(),
            baseline_outliers: Vec::new(),
            looks: 0,
            deciding_time: None,
            reason: String::new(),
        }
    }

    /// Not degraded: judging while the window is open; at its end healthy when the metric
    /// could be judged (a reference and `min_samples` samples), else inconclusive.
    pub(crate) fn conclude_or_wait(&self, window: &Window, judgeable: bool) -> MetricVerdict {
        if !window.closed {
            MetricVerdict::Judging
        } else if judgeable {
            MetricVerdict::Healthy
        } else {
            MetricVerdict::Inconclusive
        }
    }

    /// Fills `reason` from the figures.
    pub(crate) fn sentence(&mut self) {
        let m = &self.metric;
        let fmt = |v: f64| format_value(m, v);
        let counts = |n: usize, b: Option<usize>| match b {
            Some(b) => format!("{n} vs {b} samples"),
            None => format!("{n} samples"),
        };
        let mut parts: Vec<String> = Vec::new();
        match (self.value, self.baseline, self.threshold) {
            (Some(v), Some(b), _) => {
                parts.push(format!("{m} {} vs {} baseline", fmt(v), fmt(b)));
                if let Some(r) = self.ratio {
                    let mut s = format!("{}×", ratio(r));
                    if let (Some(lo), Some(hi)) = (self.ratio_low, self.ratio_high) {
                        s.push_str(&format!(" ({}–{}×)", ratio(lo), ratio(hi)));
                    }
                    parts.push(s);
                }
            }
            (Some(v), None, Some(t)) => parts.push(format!("{m} {} vs limit {}", fmt(v), fmt(t))),
            (Some(v), None, None) => parts.push(format!("{m} {}", fmt(v))),
            (None, _, _) => parts.push(m.to_string()),
        }
        if let Some(p) = self.p_value {
            let mut s = if p < 0.001 {
                "p < 0.001".to_string()
            } else {
                format!("p = {}", sig(p, 2))
            };
            if let Some(l) = self.p_limit {
                let rel = if p < l { "<" } else { "≥" };
                s.push_str(&format!(" {rel} {} allowed at this look", sig(l, 2)));
            }
            parts.push(s);
        }
        parts.push(counts(self.samples, self.baseline_samples));
        if !self.outliers.is_empty() || !self.baseline_outliers.is_empty() {
            parts.push(format!(
                "{} outlying interval{} set aside",
                self.outliers.len() + self.baseline_outliers.len(),
                if self.outliers.len() + self.baseline_outliers.len() > 1 {
                    "s"
                } else {
                    ""
                }
            ));
        }
        let head = match self.verdict {
            MetricVerdict::Judging => format!(
                "judging, {} of {} samples",
                self.samples + self.outliers.len(),
                self.min_samples
            ),
            MetricVerdict::Degraded => "degraded".to_string(),
            MetricVerdict::Healthy => "healthy".to_string(),
            MetricVerdict::Inconclusive => {
                let seen = self.samples + self.outliers.len();
                if seen < self.min_samples {
                    format!(
                        "inconclusive: only {seen} samples (min_samples = {})",
                        self.min_samples
                    )
                } else {
                    "inconclusive: no baseline (no earlier good deployment with samples of this metric)".to_string()
                }
            }
        };
        self.reason = format!("{head}: {}", parts.join(", "));
    }
}

/// A value of `metric` for people: rates as percentages, latencies in ms.
pub fn format_value(metric: &str, v: f64) -> String {
    let lower = metric.to_ascii_lowercase();
    if lower.contains("rate") || lower.contains("ratio") {
        format!("{}%", sig(v * 100.0, 2))
    } else if lower.contains("latency") || lower.ends_with("_ms") {
        format!("{} ms", sig(v, 3))
    } else if lower.contains("cost") || lower.contains("usd") {
        format!("${}", sig(v, 3))
    } else {
        sig(v, 3)
    }
}

fn ratio(r: f64) -> String {
    if r.is_infinite() {
        "∞".into()
    } else {
        sig(r, 2)
    }
}

/// `v` with `digits` significant digits (at least one decimal below 10).
fn sig(v: f64, digits: i32) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - mag).max(0) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_people_write_them() {
        assert_eq!(format_value("error_rate", 0.024), "2.4%");
        assert_eq!(format_value("error_rate", 0.0009), "0.090%");
        assert_eq!(format_value("latency_p95", 812.4), "812 ms");
        assert_eq!(format_value("api_cost_per_request", 0.00123), "$0.00123");
        assert_eq!(sig(2.6123, 2), "2.6");
        assert_eq!(sig(0.00041, 2), "0.00041");
    }
}
