//! The deploy gate's view of the state.

use super::model::{GateReport, LastDeploy, MigrationRec, RollbackRec, ThresholdRec};
use super::State;
use crate::config::{Rule, RuleKind};

impl State {
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
            .filter(|r| r.kind() == RuleKind::Threshold)
            .filter(|r| r.project == project && env_matches(&r.env))
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
            judging: Vec::new(),
        }
    }
}
