//! A decision as a typed record: what the rules write to the log (`kind = "decision"`) and
//! read back when they rebuild their state. The contract fields come first
//! (docs/rules.md, "Decision events"); a field a decision does not have is left out.

use crate::config::{Rule, RuleKind};
use crate::judge::Evidence;
use crate::state::SOURCE;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use shiplog_events::format_rfc3339;

/// The verdict of a decision (the contract's `verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Degraded,
    Inconclusive,
    Alert,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Alert => "alert",
        }
    }
}

/// Where a decision stands in its action's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The action is about to run (durable before it runs).
    Start,
    /// The action's outcome.
    Outcome,
    /// A decision without an action (or whose action did not run).
    #[default]
    Final,
}

fn kind_name<S: serde::Serializer>(k: &RuleKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

/// The `data` of a decision event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionData {
    pub rule: String,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// The rendered argv (arguments JSON-quoted when needed) or the webhook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(serialize_with = "kind_name")]
    pub rule_kind: RuleKind,
    #[serde(default)]
    pub phase: Phase,
    /// The verdict in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Rollbacks: the method of the deciding metric, the window, the baseline deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_samples: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_deployment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deciding_sample_time: Option<DateTime<Utc>>,
    /// Per metric: method, statistic, p-value and interval, effect, samples on both sides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
    /// Outcome decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Budget rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<String>,
    /// Migration rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_error: Option<String>,
}

impl DecisionData {
    /// A decision of `rule` with nothing but its verdict.
    pub fn new(rule: &Rule, verdict: Verdict) -> DecisionData {
        DecisionData {
            rule: rule.name().to_string(),
            verdict,
            metric: None,
            value: None,
            baseline: None,
            threshold: None,
            samples: None,
            action: None,
            outcome: None,
            dry_run: false,
            rule_kind: rule.kind(),
            phase: Phase::Final,
            reason: None,
            method: None,
            aggregate: None,
            window_ms: None,
            baseline_samples: None,
            previous_deployment_id: None,
            decided_at: None,
            deciding_sample_time: None,
            evidence: Vec::new(),
            attempts: None,
            output_tail: None,
            exit_code: None,
            duration_ms: None,
            level: None,
            month: None,
            migration_id: None,
            migration_database: None,
            migration_version: None,
            migration_name: None,
            migration_error: None,
        }
    }

    /// Reads a decision's `data` from the log (None: not one the rules wrote in a form they
    /// know, ignored).
    pub fn read(data: &Map<String, Value>) -> Option<DecisionData> {
        let mut v = Value::Object(data.clone());
        // Numbers the engine never writes non-finite; a null in a number field is absent.
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, x| !x.is_null());
        }
        serde_json::from_value(v).ok()
    }

    /// The same decision in another phase.
    pub fn with_phase(&self, phase: Phase, outcome: Option<String>) -> DecisionData {
        DecisionData {
            phase,
            outcome,
            ..self.clone()
        }
    }

    /// The decision event: `id` (deterministic, so writing it twice is deduplicated),
    /// written now.
    pub fn event(
        &self,
        id: &str,
        project: &str,
        env: Option<&str>,
        deployment_id: Option<&str>,
    ) -> Value {
        let mut e = json!({
            "id": id,
            "kind": "decision",
            "source": SOURCE,
            "time": format_rfc3339(&Utc::now()),
            "project": project,
            "data": self.data(),
        });
        if let Some(env) = env {
            e["env"] = json!(env);
        }
        if let Some(dep) = deployment_id {
            e["deployment_id"] = json!(dep);
        }
        e
    }

    /// The `data` object (non-finite numbers left out: JSON has none).
    pub fn data(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("a decision serializes");
        if let Some(o) = v.as_object_mut() {
            for k in ["value", "baseline", "threshold", "level"] {
                if o.get(k)
                    .is_some_and(|x| x.as_f64().is_none_or(|f| !f.is_finite()))
                {
                    o.remove(k);
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiplog_events::{Event, Origin};

    fn rule() -> Rule {
        #[derive(serde::Deserialize)]
        struct F {
            rules: Vec<crate::config::RuleConfig>,
        }
        let f: F = toml::from_str("[[rules]]\nname = \"r\"\nkind = \"rollback\"\nproject = \"p\"\nenv = \"production\"\nmetric = \"error_rate\"\nwindow = \"10m\"\nmax_ratio = 1.5\naction = { command = [\"true\"] }\n").unwrap();
        crate::config::validate(&f.rules, &Default::default())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_decision_is_a_valid_event_and_reads_back_the_same() {
        let mut d = DecisionData::new(&rule(), Verdict::Degraded);
        d.metric = Some("error_rate".into());
        d.value = Some(0.05);
        d.baseline = Some(0.02);
        d.threshold = Some(f64::NAN);
        d.samples = Some(10);
        d.phase = Phase::Start;
        d.outcome = Some("started".into());
        let ev = d.event("rule/r/d1/degraded", "p", Some("production"), Some("d1"));
        assert!(ev["data"].get("threshold").is_none(), "no NaN in JSON");
        assert_eq!(ev["data"]["rule_kind"], "rollback");
        assert_eq!(ev["data"]["phase"], "start");
        let parsed = Event::from_json(ev, Origin::Internal).expect("valid decision event");
        let back = DecisionData::read(&parsed.data).unwrap();
        assert_eq!(back.verdict, Verdict::Degraded);
        assert_eq!(back.phase, Phase::Start);
        assert_eq!(back.rule_kind, RuleKind::Rollback);
        assert_eq!(back.value, Some(0.05));
        assert_eq!(back.threshold, None);
    }
}
