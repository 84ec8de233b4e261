//! The rules' in-memory state, rebuilt from the log: deployments, check samples,
//! migrations and the decisions already taken. Applying an event is idempotent (the engine
//! applies its own decisions when written and again when it reads them back).

use crate::config::{Aggregate, Baseline, Rule};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shiplog_events::{Event, Kind};
use std::collections::{HashMap, HashSet, VecDeque};

/// The source of every event the rules write.
pub const SOURCE: &str = "shiplog-rules";

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub value: Option<f64>,
    pub passed: Option<bool>,
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: String,
    pub project: String,
    pub env: Option<String>,
    /// Order of first appearance.
    pub seq: u64,
    pub url: Option<String>,
    pub previous_id: Option<String>,
    pub status: String,
    pub succeeded_at: Option<DateTime<Utc>>,
    pub succeeded_seq: Option<u64>,
    pub failed: bool,
    pub rolled_back: bool,
}

impl Deployment {
    /// Why this deployment is not a safe rollback target (None: it is).
    pub fn unsafe_reason(&self) -> Option<String> {
        if self.rolled_back {
            Some(format!("{} was rolled back", self.id))
        } else if self.failed {
            Some(format!("{} failed", self.id))
        } else if self.succeeded_at.is_none() {
            Some(format!("{} never succeeded", self.id))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationRec {
    pub id: String,
    pub source: String,
    pub project: String,
    pub env: Option<String>,
    pub database: Option<String>,
    pub version: Option<String>,
    pub name: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub time: DateTime<Utc>,
    #[serde(skip)]
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackRec {
    pub rule: String,
    pub project: String,
    pub env: Option<String>,
    pub deployment_id: String,
    pub started_at: DateTime<Utc>,
    /// None while the action runs (or if shiplog stopped while it ran).
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
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

#[derive(Default)]
pub struct State {
    seq: u64,
    pub deployments: HashMap<(String, String), Deployment>,
    pub checks: HashMap<(String, String), Vec<Sample>>,
    /// Ids of the decisions (and deploy events) written by the rules.
    pub written: HashSet<String>,
    /// (rule, project, deployment) whose window was concluded.
    pub concluded: HashSet<(String, String, String)>,
    /// (project, deployment) → the rollback started for it (at most one).
    pub rollbacks: HashMap<(String, String), RollbackRec>,
    /// (project, env) → time of the last rollback action started (cooldown).
    pub last_rollback: HashMap<(String, String), DateTime<Utc>>,
    /// (project, env) → seq of the deployment that succeeded last.
    pub live: HashMap<(String, String), u64>,
    /// (project, env) → seq of the last deploy success event.
    pub last_ok_seq: HashMap<(String, String), (u64, DateTime<Utc>, String)>,
    pub thresholds: HashMap<String, ThresholdRec>,
    /// (rule, month) → highest level fired.
    pub budget_fired: HashMap<(String, String), f64>,
    pub migrations: VecDeque<MigrationRec>,
    /// Failed migrations not yet looked at by the migration_failed rules.
    pub pending_failed_migrations: Vec<MigrationRec>,
}

const MAX_MIGRATIONS: usize = 20_000;

fn env_key(e: &Event) -> String {
    e.env.clone().unwrap_or_default()
}

fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

impl State {
    pub fn apply(&mut self, e: &Event) {
        self.seq += 1;
        let seq = self.seq;
        let time = e.event_time().unwrap_or_else(Utc::now);
        match e.kind {
            Kind::Deploy => {
                let Some(dep) = &e.deployment_id else { return };
                if e.source == SOURCE && !self.written.insert(e.id.clone()) {
                    return;
                }
                let key = (e.project.clone(), dep.clone());
                let d = self.deployments.entry(key).or_insert_with(|| Deployment {
                    id: dep.clone(),
                    project: e.project.clone(),
                    env: e.env.clone(),
                    seq,
                    url: None,
                    previous_id: None,
                    status: String::new(),
                    succeeded_at: None,
                    succeeded_seq: None,
                    failed: false,
                    rolled_back: false,
                });
                if d.env.is_none() {
                    d.env = e.env.clone();
                }
                let status = e.data_str("status").unwrap_or("").to_string();
                // A rollback event names the target in previous_deployment_id: it does not
                // change what this deployment replaced.
                if status != "rolled_back" {
                    if let Some(u) = e.data_str("url") {
                        d.url = Some(u.to_string());
                    }
                    if let Some(p) = e.data_str("previous_deployment_id") {
                        d.previous_id = Some(p.to_string());
                    }
                }
                match status.as_str() {
                    "succeeded" | "promoted" => {
                        if d.succeeded_at.is_none() {
                            d.succeeded_at = Some(time);
                            d.succeeded_seq = Some(seq);
                        }
                        let k = (e.project.clone(), env_key(e));
                        let live = self.live.entry(k.clone()).or_insert(0);
                        *live = (*live).max(d.seq);
                        self.last_ok_seq.insert(k, (seq, time, dep.clone()));
                    }
                    "failed" => d.failed = true,
                    "rolled_back" => d.rolled_back = true,
                    _ => {}
                }
                d.status = status;
            }
            Kind::Check => {
                let Some(dep) = &e.deployment_id else { return };
                let Some(name) = e.data_str("name") else {
                    return;
                };
                self.checks
                    .entry((e.project.clone(), dep.clone()))
                    .or_default()
                    .push(Sample {
                        name: name.to_string(),
                        value: num(e.data.get("value")),
                        passed: e.data.get("passed").and_then(Value::as_bool),
                        time,
                    });
            }
            Kind::Migration => {
                let s = |f: &str| e.data_str(f).map(str::to_string);
                let rec = MigrationRec {
                    id: e.id.clone(),
                    source: e.source.clone(),
                    project: e.project.clone(),
                    env: e.env.clone(),
                    database: s("database"),
                    version: s("version"),
                    name: s("name"),
                    status: s("status").unwrap_or_default(),
                    error: s("error"),
                    time,
                    seq,
                };
                if rec.status == "failed" {
                    self.pending_failed_migrations.push(rec.clone());
                }
                self.migrations.push_back(rec);
                if self.migrations.len() > MAX_MIGRATIONS {
                    self.migrations.pop_front();
                }
            }
            Kind::Decision if e.source == SOURCE => self.apply_decision(e, time),
            _ => {}
        }
    }

    fn apply_decision(&mut self, e: &Event, time: DateTime<Utc>) {
        if !self.written.insert(e.id.clone()) {
            return;
        }
        let rule = e.data_str("rule").unwrap_or("").to_string();
        let kind = e.data_str("rule_kind").unwrap_or("");
        let phase = e.data_str("phase").unwrap_or("final");
        let dry_run = e
            .data
            .get("dry_run")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match kind {
            "rollback" => {
                let Some(dep) = e.deployment_id.clone() else {
                    return;
                };
                self.concluded
                    .insert((rule.clone(), e.project.clone(), dep.clone()));
                let key = (e.project.clone(), dep.clone());
                match phase {
                    "start" if !dry_run => {
                        self.rollbacks.entry(key).or_insert_with(|| RollbackRec {
                            rule,
                            project: e.project.clone(),
                            env: e.env.clone(),
                            deployment_id: dep,
                            started_at: time,
                            outcome: None,
                        });
                        let last = self
                            .last_rollback
                            .entry((e.project.clone(), env_key(e)))
                            .or_insert(time);
                        *last = (*last).max(time);
                    }
                    "outcome" => {
                        if let Some(r) = self.rollbacks.get_mut(&key) {
                            r.outcome = e.data_str("outcome").map(str::to_string);
                        }
                    }
                    _ => {}
                }
            }
            "threshold" if phase != "outcome" => {
                self.thresholds.insert(
                    rule.clone(),
                    ThresholdRec {
                        rule,
                        project: e.project.clone(),
                        env: e.env.clone(),
                        metric: e.data_str("metric").map(str::to_string),
                        verdict: e.data_str("verdict").unwrap_or("").to_string(),
                        value: num(e.data.get("value")),
                        threshold: num(e.data.get("threshold")),
                        since: time,
                    },
                );
            }
            "budget" if phase != "outcome" => {
                let month = e.data_str("month").unwrap_or("").to_string();
                let level = num(e.data.get("level")).unwrap_or(0.0);
                let l = self.budget_fired.entry((rule, month)).or_insert(0.0);
                *l = l.max(level);
            }
            _ => {}
        }
    }

    /// The deployment `d` replaced: its `previous_deployment_id`, else the last deployment
    /// of the same project/env that succeeded before it.
    pub fn previous_of(&self, d: &Deployment) -> Option<&Deployment> {
        if let Some(p) = &d.previous_id {
            return self.deployments.get(&(d.project.clone(), p.clone()));
        }
        self.deployments
            .values()
            .filter(|o| {
                o.project == d.project
                    && o.env == d.env
                    && o.seq < d.seq
                    && o.succeeded_at.is_some()
                    && o.unsafe_reason().is_none()
            })
            .max_by_key(|o| o.seq)
    }

    /// Values of `metric` for deployment `d` within its window.
    pub fn window_values(
        &self,
        d: &Deployment,
        metric: &str,
        window: chrono::Duration,
    ) -> Vec<(f64, DateTime<Utc>)> {
        let Some(start) = d.succeeded_at else {
            return Vec::new();
        };
        let end = start + window;
        self.checks
            .get(&(d.project.clone(), d.id.clone()))
            .map(|v| {
                v.iter()
                    .filter(|s| s.name == metric && s.time <= end)
                    .filter_map(|s| s.value.map(|x| (x, s.time)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first failed smoke check of `d` in its window.
    pub fn failed_smoke(&self, d: &Deployment, window: chrono::Duration) -> Option<&Sample> {
        let end = d.succeeded_at? + window;
        self.checks
            .get(&(d.project.clone(), d.id.clone()))?
            .iter()
            .find(|s| s.name == "smoke" && s.passed == Some(false) && s.time <= end)
    }

    /// Whether a deployment newer than `d` went live in its project/env.
    pub fn superseded(&self, d: &Deployment) -> bool {
        self.live
            .get(&(d.project.clone(), d.env.clone().unwrap_or_default()))
            .is_some_and(|s| *s > d.seq)
    }

    /// The gate report of a project/env.
    pub fn gate(&self, project: &str, env: &str, rules: &[Rule]) -> GateReport {
        let last_ok = self
            .last_ok_seq
            .get(&(project.to_string(), env.to_string()))
            .cloned();
        let env_matches = |e: &Option<String>| e.as_deref().is_none_or(|x| x == env);
        let mut failed_migrations = Vec::new();
        let relevant: Vec<&MigrationRec> = self
            .migrations
            .iter()
            .filter(|m| m.project == project && env_matches(&m.env))
            .collect();
        for (i, m) in relevant.iter().enumerate() {
            if m.status != "failed" {
                continue;
            }
            if last_ok.as_ref().is_some_and(|(seq, _, _)| *seq > m.seq) {
                continue;
            }
            // A later applied migration of the same database clears it.
            let fixed = relevant[i + 1..]
                .iter()
                .any(|n| n.status == "applied" && n.database == m.database);
            if !fixed {
                failed_migrations.push((*m).clone());
            }
        }
        let thresholds: Vec<ThresholdRec> = rules
            .iter()
            .filter(|r| r.cfg.kind == crate::config::RuleKind::Threshold)
            .filter(|r| r.cfg.project == project && env_matches(&r.cfg.env))
            .filter_map(|r| self.thresholds.get(r.name()))
            .filter(|t| t.verdict == "alert")
            .cloned()
            .collect();
        let active_rollbacks: Vec<RollbackRec> = self
            .rollbacks
            .values()
            .filter(|r| {
                r.project == project && r.env.as_deref() == Some(env) && r.outcome.is_none()
            })
            .cloned()
            .collect();
        let mut reasons = Vec::new();
        for m in &failed_migrations {
            reasons.push(format!(
                "migration {} failed{}{}",
                m.version.as_deref().or(m.name.as_deref()).unwrap_or(&m.id),
                m.database
                    .as_deref()
                    .map(|d| format!(" on {d}"))
                    .unwrap_or_default(),
                m.error
                    .as_deref()
                    .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
                    .unwrap_or_default()
            ));
        }
        for t in &thresholds {
            reasons.push(format!(
                "threshold rule {} is in alert: {} = {} > {}",
                t.rule,
                t.metric.as_deref().unwrap_or("sql"),
                t.value.map(|v| v.to_string()).unwrap_or("?".into()),
                t.threshold.map(|v| v.to_string()).unwrap_or("?".into()),
            ));
        }
        for r in &active_rollbacks {
            reasons.push(format!(
                "rule {} is rolling back {} (started {})",
                r.rule,
                r.deployment_id,
                shiplog_events::format_rfc3339(&r.started_at)
            ));
        }
        GateReport {
            project: project.to_string(),
            env: env.to_string(),
            safe: reasons.is_empty(),
            reasons,
            last_successful_deploy: last_ok.map(|(_, t, id)| LastDeploy {
                deployment_id: id,
                time: t,
            }),
            failed_migrations,
            thresholds_in_alert: thresholds,
            active_rollbacks,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LastDeploy {
    pub deployment_id: String,
    pub time: DateTime<Utc>,
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
}

/// The evaluation behind a rollback verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Eval {
    pub metric: String,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub threshold: Option<f64>,
    pub samples: usize,
    pub baseline_samples: Option<usize>,
    pub reason: String,
    /// The sample that decided (degraded).
    pub deciding_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The window is open and nothing is decided yet.
    Wait,
    Degraded(Eval),
    Healthy(Eval),
    Inconclusive(Eval),
}

/// Summarises values: mean, p95 (nearest rank) or max.
pub fn aggregate(agg: Aggregate, values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(match agg {
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

/// Judges a deployment's window.
///
/// - a failed smoke check is degraded at once;
/// - degraded as soon as at least `min_samples` samples are in and their aggregate exceeds
///   the threshold (the sample that tips it decides);
/// - when the window closes: fewer than `min_samples` samples, or no baseline, is
///   inconclusive; else healthy.
pub fn judge(
    rule: &Rule,
    values: &[(f64, DateTime<Utc>)],
    smoke_failed: Option<&Sample>,
    baseline_values: Option<&[f64]>,
    window_closed: bool,
) -> Verdict {
    let metric = rule.metric().to_string();
    let agg = rule.aggregate();
    let n = values.len();
    let xs: Vec<f64> = values.iter().map(|v| v.0).collect();
    let value = aggregate(agg, &xs);
    if let Some(s) = smoke_failed {
        return Verdict::Degraded(Eval {
            metric: "smoke".into(),
            value: Some(0.0),
            baseline: None,
            threshold: None,
            samples: 1,
            baseline_samples: None,
            reason: "the smoke check failed (passed = false)".into(),
            deciding_time: Some(s.time),
        });
    }
    let (baseline, baseline_samples, threshold) = match (rule.cfg.max_value, &rule.cfg.baseline) {
        (Some(max), _) => (None, None, Some(max)),
        (None, Some(Baseline::Fixed(b))) => {
            (Some(*b), None, Some(b * rule.cfg.max_ratio.unwrap_or(1.0)))
        }
        (None, _) => match baseline_values.and_then(|b| aggregate(agg, b).map(|x| (x, b.len()))) {
            Some((b, bn)) => (
                Some(b),
                Some(bn),
                Some(b * rule.cfg.max_ratio.unwrap_or(1.0)),
            ),
            None => (None, None, None),
        },
    };
    let eval = |reason: String, deciding_time| Eval {
        metric: metric.clone(),
        value,
        baseline,
        threshold,
        samples: n,
        baseline_samples,
        reason,
        deciding_time,
    };
    let describe_threshold = |t: f64| match (rule.cfg.max_value, baseline) {
        (Some(_), _) => format!("max_value {t}"),
        (None, Some(b)) => format!("{t} = {} × baseline {b}", rule.cfg.max_ratio.unwrap_or(1.0)),
        _ => format!("{t}"),
    };
    if let (Some(v), Some(t)) = (value, threshold) {
        if n >= rule.min_samples() && v > t {
            return Verdict::Degraded(eval(
                format!(
                    "{metric} {} {v} over {n} samples > {}",
                    agg.as_str(),
                    describe_threshold(t)
                ),
                values.iter().map(|s| s.1).max(),
            ));
        }
    }
    if !window_closed {
        return Verdict::Wait;
    }
    if n < rule.min_samples() {
        return Verdict::Inconclusive(eval(
            format!(
                "only {n} {metric} samples in the window (min_samples = {})",
                rule.min_samples()
            ),
            None,
        ));
    }
    match (value, threshold) {
        (Some(v), Some(t)) => Verdict::Healthy(eval(
            format!(
                "{metric} {} {v} over {n} samples <= {}",
                agg.as_str(),
                describe_threshold(t)
            ),
            None,
        )),
        _ => Verdict::Inconclusive(eval(
            "no baseline: the previous deployment has no samples of this metric in its window"
                .into(),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{validate, RuleConfig, RulesSettings};

    fn rule(extra: &str) -> Rule {
        #[derive(serde::Deserialize)]
        struct F {
            rules: Vec<RuleConfig>,
        }
        let f: F = toml::from_str(&format!(
            "[[rules]]\nname = \"r\"\nkind = \"rollback\"\nproject = \"p\"\nenv = \"production\"\nmetric = \"error_rate\"\nwindow = \"10m\"\nmin_samples = 3\naction = {{ command = [\"true\"] }}\n{extra}"
        ))
        .unwrap();
        validate(&f.rules, &RulesSettings::default())
            .unwrap()
            .remove(0)
    }

    fn vals(xs: &[f64]) -> Vec<(f64, DateTime<Utc>)> {
        let t0 = Utc::now();
        xs.iter()
            .enumerate()
            .map(|(i, x)| (*x, t0 + chrono::Duration::seconds(i as i64)))
            .collect()
    }

    #[test]
    fn verdicts() {
        let r = rule("max_ratio = 1.5\n");
        let base = [0.02, 0.02, 0.02];
        // Noisy but within 1.5 × 0.02 = 0.03: waits, then healthy.
        let noisy = vals(&[0.025, 0.015, 0.028, 0.02]);
        assert_eq!(judge(&r, &noisy, None, Some(&base), false), Verdict::Wait);
        assert!(matches!(
            judge(&r, &noisy, None, Some(&base), true),
            Verdict::Healthy(_)
        ));
        // Degraded as soon as min_samples are in and the mean is over: before the window ends.
        let bad = vals(&[0.09, 0.1, 0.08]);
        match judge(&r, &bad, None, Some(&base), false) {
            Verdict::Degraded(e) => {
                assert_eq!(e.samples, 3);
                assert!((e.threshold.unwrap() - 0.03).abs() < 1e-12);
                assert_eq!(e.baseline, Some(0.02));
                assert_eq!(e.deciding_time, Some(bad[2].1));
            }
            v => panic!("{v:?}"),
        }
        // Too few samples: never degraded, inconclusive at the end.
        let few = vals(&[0.5, 0.5]);
        assert_eq!(judge(&r, &few, None, Some(&base), false), Verdict::Wait);
        assert!(matches!(
            judge(&r, &few, None, Some(&base), true),
            Verdict::Inconclusive(_)
        ));
        // No baseline: inconclusive at the end.
        assert!(matches!(
            judge(&r, &bad, None, None, true),
            Verdict::Inconclusive(_)
        ));
        // Failed smoke: degraded at once, whatever the samples.
        let smoke = Sample {
            name: "smoke".into(),
            value: None,
            passed: Some(false),
            time: Utc::now(),
        };
        assert!(matches!(
            judge(&r, &[], Some(&smoke), None, false),
            Verdict::Degraded(_)
        ));
        // Fixed baseline and max_value.
        let r = rule("baseline = 0.01\nmax_ratio = 2\n");
        assert!(matches!(
            judge(&r, &vals(&[0.03, 0.03, 0.03]), None, None, false),
            Verdict::Degraded(_)
        ));
        let r = rule("max_value = 0.05\n");
        assert!(matches!(
            judge(&r, &vals(&[0.03, 0.03, 0.03]), None, None, true),
            Verdict::Healthy(_)
        ));
    }

    #[test]
    fn p95_and_mean() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(aggregate(Aggregate::P95, &v), Some(95.0));
        assert_eq!(aggregate(Aggregate::Mean, &[1.0, 3.0]), Some(2.0));
        assert_eq!(aggregate(Aggregate::P95, &[7.0]), Some(7.0));
        assert_eq!(aggregate(Aggregate::Max, &[]), None);
    }
}
