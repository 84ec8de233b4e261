//! The scheduled rules: thresholds and budgets, evaluated on their cron schedules with
//! DuckDB over the projection.

use super::plan::{alert_intent, Intent, Planned};
use super::RulesEngine;
use crate::config::{BudgetSpec, RuleSpec, ThresholdSpec};
use crate::decision::{DecisionData, Verdict};
use crate::error::RulesError;
use crate::state::chrono_dur;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shiplog_events::format_rfc3339;
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// The SQL of a known threshold metric; parameters: project, env (null: every env), since.
pub fn threshold_sql(metric: &str) -> &'static str {
    match metric {
        "build_duration_p95" => "SELECT quantile_cont(duration_ms, 0.95) FROM builds WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "build_duration_ms" => "SELECT duration_ms FROM builds WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ) ORDER BY time DESC LIMIT 1",
        "bundle_bytes" => "SELECT bundle_bytes FROM builds WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ) AND bundle_bytes IS NOT NULL ORDER BY time DESC LIMIT 1",
        "gzip_bytes" => "SELECT gzip_bytes FROM builds WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ) AND gzip_bytes IS NOT NULL ORDER BY time DESC LIMIT 1",
        "error_rate" => "SELECT avg(coalesce(value, errors / nullif(requests, 0))) FROM checks WHERE name = 'error_rate' AND project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "latency_p95" => "SELECT quantile_cont(value, 0.95) FROM checks WHERE name = 'latency_p95' AND project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "migration_duration_p95" => "SELECT quantile_cont(duration_ms, 0.95) FROM migrations WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "migration_failures" => "SELECT count(*) FROM migrations WHERE status = 'failed' AND project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "deploy_failure_rate" => "SELECT avg(CASE WHEN status IN ('failed', 'rolled_back') THEN 1.0 ELSE 0.0 END) FROM deploys WHERE status IN ('succeeded', 'failed', 'rolled_back') AND project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "api_spend_usd" => "SELECT COALESCE(SUM(cost_usd), 0) FROM api_costs WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        _ => "SELECT NULL",
    }
}

impl RulesEngine {
    pub(super) async fn cron_loop(self, idx: usize, mut shutdown: watch::Receiver<bool>) {
        let rule = &self.inner.rules[idx];
        let Some(schedule) = rule.schedule().cloned() else {
            return;
        };
        loop {
            let Some(next) = schedule.upcoming(Utc).next() else {
                return;
            };
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            while !self.is_ready() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let r = match &rule.spec {
                RuleSpec::Threshold(t) => self.run_threshold(idx, t, next).await,
                RuleSpec::Budget(b) => self.run_budget(idx, b).await,
                _ => Ok(()),
            };
            if let Err(e) = r {
                warn!(rule = %rule.name(), error = %e, "scheduled rule evaluation failed");
            }
        }
    }

    async fn query_number(
        &self,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Option<f64>, RulesError> {
        let Some(q) = self.inner.query.clone() else {
            return Err(RulesError::Query(
                "queries are not available on this node".into(),
            ));
        };
        let r = tokio::task::spawn_blocking(move || {
            q.query_internal(&sql, &params, Duration::from_secs(30))
        })
        .await
        .map_err(|e| RulesError::Query(e.to_string()))?
        .map_err(|e| RulesError::Query(e.to_string()))?;
        let cell = r
            .rows
            .first()
            .and_then(|row| row.first())
            .cloned()
            .unwrap_or(Value::Null);
        Ok(match cell {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            _ => None,
        })
    }

    async fn run_threshold(
        &self,
        idx: usize,
        spec: &ThresholdSpec,
        tick: DateTime<Utc>,
    ) -> Result<(), RulesError> {
        let rule = &self.inner.rules[idx];
        let since = format_rfc3339(&(Utc::now() - chrono_dur(spec.window)));
        let (sql, params) = match (&spec.sql, &spec.metric) {
            (Some(sql), _) => (sql.clone(), Vec::new()),
            (None, Some(m)) => (
                threshold_sql(m).to_string(),
                vec![json!(rule.project), json!(rule.env), json!(since)],
            ),
            _ => return Ok(()),
        };
        let Some(value) = self.query_number(sql, params).await? else {
            return Ok(()); // no data: no change of state
        };
        let bad = value > spec.max_value;
        let prev = self
            .inner
            .state
            .lock()
            .unwrap()
            .threshold(rule.name())
            .map(|t| t.verdict.clone());
        let verdict = match (bad, prev.as_deref()) {
            (true, Some("alert")) => return Ok(()),
            (true, _) => Verdict::Alert,
            (false, Some("alert")) => Verdict::Healthy,
            (false, _) => return Ok(()),
        };
        let metric = spec.metric.clone().unwrap_or_else(|| "sql".into());
        let mut data = DecisionData::new(rule, verdict);
        data.value = Some(value);
        data.threshold = Some(spec.max_value);
        data.window_ms = Some(spec.window.as_millis() as u64);
        data.reason = Some(format!(
            "{metric} = {value} {} max_value {}",
            if bad { ">" } else { "<=" },
            spec.max_value
        ));
        data.metric = Some(metric);
        let planned = Planned {
            id: format!(
                "rule/{}/{}/{}",
                rule.name(),
                format_rfc3339(&tick),
                verdict.as_str()
            ),
            data,
            project: rule.project.clone(),
            env: rule.env.clone(),
            deployment_id: None,
        };
        let intent = if verdict == Verdict::Alert {
            alert_intent(&self.inner.rules, &self.inner.settings, idx, planned)
        } else {
            let mut planned = planned;
            planned.data.dry_run = rule.is_dry_run(&self.inner.settings);
            Intent::Write(planned)
        };
        self.execute(vec![intent]).await
    }

    async fn run_budget(&self, idx: usize, spec: &BudgetSpec) -> Result<(), RulesError> {
        let rule = &self.inner.rules[idx];
        let now = Utc::now();
        let month = now.format("%Y-%m").to_string();
        let month_start = format!("{month}-01T00:00:00Z");
        let sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM api_costs WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)";
        let spend = self
            .query_number(
                sql.into(),
                vec![json!(rule.project), json!(rule.env), json!(month_start)],
            )
            .await?
            .unwrap_or(0.0);
        let budget = spec.budget_usd;
        let fired = self
            .inner
            .state
            .lock()
            .unwrap()
            .budget_fired(rule.name(), &month);
        let pct = spend / budget * 100.0;
        let Some(level) = spec.levels.iter().rev().find(|l| pct >= **l).copied() else {
            return Ok(());
        };
        if level <= fired {
            return Ok(());
        }
        let mut data = DecisionData::new(rule, Verdict::Alert);
        data.metric = Some("api_spend_usd".into());
        data.value = Some(spend);
        data.baseline = Some(budget);
        data.threshold = Some(budget * level / 100.0);
        data.level = Some(level);
        data.month = Some(month.clone());
        data.reason = Some(format!(
            "API spend ${spend:.2} is {pct:.0}% of the ${budget:.2} monthly budget (level {level}%)"
        ));
        let planned = Planned {
            id: format!("rule/{}/{month}/{level}", rule.name()),
            data,
            project: rule.project.clone(),
            env: rule.env.clone(),
            deployment_id: None,
        };
        let intent = alert_intent(&self.inner.rules, &self.inner.settings, idx, planned);
        self.execute(vec![intent]).await
    }
}
