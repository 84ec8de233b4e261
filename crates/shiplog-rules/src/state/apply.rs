//! Applying one event to the state.

use super::model::{
    CostBucket, Deployment, MigrationRec, RollbackRec, Sample, Series, SourceFailure, ThresholdRec,
    COST_BUCKET,
};
use super::{sweep, tomb_key, State, MAX_ERROR_BYTES, MAX_PENDING_MIGRATIONS, SOURCE};
use crate::config::RuleKind;
use crate::decision::{DecisionData, Phase, Verdict};
use chrono::{DateTime, Utc};
use serde_json::Value;
use shiplog_events::{Event, Kind};

fn env_key(e: &Event) -> String {
    e.env.clone().unwrap_or_default()
}

fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

fn count(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl State {
    pub fn apply(&mut self, e: &Event) {
        self.seq += 1;
        let seq = self.seq;
        // Receive time, never ahead of this machine's clock (a record's received_at is the
        // server's; a later one could only come from a clock that was wrong).
        let wall = Utc::now();
        let at = e.received_at.map_or(wall, |t| t.min(wall));
        if at > self.clock {
            self.clock = at;
        }
        let time = e.event_time().unwrap_or(at);
        match e.kind {
            Kind::Deploy => self.apply_deploy(e, seq, time, at),
            Kind::Check => self.apply_check(e, seq, time, at),
            Kind::ApiCost => self.apply_cost(e, seq, time, at),
            Kind::Migration => self.apply_migration(e, seq, time, at),
            Kind::Decision if e.source == SOURCE => self.apply_decision(e, seq, time, at),
            _ => {}
        }
        self.applied_since_sweep += 1;
        if self.applied_since_sweep >= sweep::SWEEP_EVERY_EVENTS
            || self.deployments.len() > self.retention.max_deployments
            || self.samples > self.retention.max_samples
        {
            self.sweep();
        }
    }

    /// The entry of a deployment, created when absent (restoring what a tombstone says).
    fn entry(
        &mut self,
        project: &str,
        dep: &str,
        env: Option<&str>,
        seq: u64,
        at: DateTime<Utc>,
    ) -> &mut Deployment {
        let key = (project.to_string(), dep.to_string());
        let tombstones = &mut self.tombstones;
        let d = self.deployments.entry(key).or_insert_with(|| {
            let mut d = Deployment::new(dep, project, env, seq, at);
            if let Some((_, t)) = tombstones.remove(&tomb_key(project, dep)) {
                d.judged_before = true;
                d.failed = t.failed;
                d.rolled_back = t.rolled_back;
                d.rollback_started = t.rollback_started;
                d.degraded = t.degraded;
            }
            d
        });
        if d.env.is_none() {
            d.env = env.map(str::to_string);
        }
        if at > d.last_seen {
            d.last_seen = at;
        }
        d
    }

    fn apply_deploy(&mut self, e: &Event, seq: u64, time: DateTime<Utc>, at: DateTime<Utc>) {
        let Some(dep) = &e.deployment_id else { return };
        let status = e.data_str("status").unwrap_or("").to_string();
        let succeeded = matches!(status.as_str(), "succeeded" | "promoted");
        if succeeded {
            // The gate knows the last successful deploy of every project/env.
            self.last_ok_seq
                .insert((e.project.clone(), env_key(e)), (seq, time, dep.clone()));
            if self.last_ok_seq.len() > self.retention.max_envs {
                sweep::evict_oldest(&mut self.last_ok_seq, |v| v.1, self.retention.max_envs);
            }
        }
        let known = self
            .deployments
            .contains_key(&(e.project.clone(), dep.clone()));
        if !known && !self.retention.watches_deploy(&e.project, e.env.as_deref()) {
            return;
        }
        let window = self.retention.max_window(&e.project, e.env.as_deref());
        let d = self.entry(&e.project, dep, e.env.as_deref(), seq, at);
        // A rollback event names the target in previous_deployment_id: it does not
        // change what this deployment replaced.
        if status != "rolled_back" {
            if let Some(u) = e.data_str("url") {
                d.url = Some(u.to_string());
            }
            if let Some(p) = e.data_str("previous_deployment_id") {
                d.previous_id = Some(p.to_string());
            }
            if let Some(c) = &e.commit {
                d.commit = Some(c.clone());
            }
            if let Some(b) = &e.branch {
                d.branch = Some(b.clone());
            }
        }
        let mut trimmed = 0;
        match status.as_str() {
            "succeeded" | "promoted" if d.succeeded_at.is_none() => {
                d.succeeded_at = Some(time);
                d.succeeded_seq = Some(seq);
                // Samples after the longest window can never be read.
                if let Some(end) = window.and_then(|w| time.checked_add_signed(w)) {
                    for s in &mut d.series {
                        let before = s.samples.len();
                        s.samples.retain(|x| x.time <= end);
                        trimmed += before - s.samples.len();
                    }
                    let before = d.costs.len();
                    d.costs.retain(|c| c.start <= end);
                    trimmed += before - d.costs.len();
                }
                d.revision += 1;
            }
            // A cancelled deployment never served either.
            "failed" | "cancelled" | "canceled" => d.failed = true,
            "rolled_back" => d.rolled_back = true,
            _ => {}
        }
        d.status = status;
        let d_seq = d.seq;
        self.samples -= trimmed;
        if succeeded {
            let live = self
                .live
                .entry(e.project.clone())
                .or_default()
                .entry(env_key(e))
                .or_insert(0);
            *live = (*live).max(d_seq);
        }
    }

    /// The env of a record, or the env already known for its deployment.
    fn known_env(&self, e: &Event, dep: &str) -> Option<String> {
        match &e.env {
            Some(env) => Some(env.clone()),
            None => self
                .deployments
                .get(&(e.project.clone(), dep.to_string()))
                .and_then(|d| d.env.clone()),
        }
    }

    fn apply_check(&mut self, e: &Event, seq: u64, time: DateTime<Utc>, at: DateTime<Utc>) {
        let Some(dep) = &e.deployment_id else { return };
        let Some(name) = e.data_str("name") else {
            return;
        };
        let value = num(e.data.get("value"));
        let passed = e.data.get("passed").and_then(Value::as_bool);
        let requests = count(e.data.get("requests"));
        let errors = count(e.data.get("errors"));
        let has_data = value.is_some() || requests.is_some();
        // A polled source's failed read: a check without data whose `error` says why.
        let failure = match (has_data, e.data_str("source"), e.data_str("error")) {
            (false, Some(_), Some(why)) => Some(truncate(why.to_string(), MAX_ERROR_BYTES)),
            _ => None,
        };
        if !self.retention.keeps_check(
            &e.project,
            e.env.as_deref(),
            name,
            has_data || failure.is_some(),
            passed,
        ) {
            return;
        }
        let max_series = self.retention.max_series_samples;
        let known_env = self.known_env(e, dep);
        let window = self.retention.max_window(&e.project, known_env.as_deref());
        let d = self.entry(&e.project, dep, e.env.as_deref(), seq, at);
        if let (Some(s), Some(w)) = (d.succeeded_at, window) {
            if s.checked_add_signed(w).is_some_and(|end| time > end) {
                // After every window of it: no rule reads it.
                return;
            }
        }
        let series = match d.series.iter().position(|s| s.name == name) {
            Some(i) => &mut d.series[i],
            None => {
                d.series.push(Series {
                    name: name.to_string(),
                    samples: Vec::new(),
                    failure: None,
                });
                d.series.last_mut().expect("just pushed")
            }
        };
        if let Some(reason) = failure {
            series.failure = Some(match series.failure.take() {
                Some(f) => SourceFailure {
                    since: f.since.min(time),
                    reads: f.reads.saturating_add(1),
                    reason,
                },
                None => SourceFailure {
                    since: time,
                    reads: 1,
                    reason,
                },
            });
            d.revision += 1;
            return;
        }
        if has_data {
            series.failure = None;
        }
        if series.samples.len() >= max_series {
            self.stats.samples_dropped += 1;
            return;
        }
        series.samples.push(Sample {
            time,
            value,
            passed,
            errors,
            requests,
        });
        d.revision += 1;
        self.samples += 1;
    }

    /// An `api_cost` record adds to the spend of its deployment (its `deployment_id`, else
    /// the deployment of its project/env live at its time), priced when it has no cost.
    fn apply_cost(&mut self, e: &Event, seq: u64, time: DateTime<Utc>, at: DateTime<Utc>) {
        if !self.retention.keeps_costs(&e.project, e.env.as_deref()) {
            return;
        }
        let Some(usd) = crate::cost::usd(e, self.prices.as_deref()) else {
            return;
        };
        let calls = count(e.data.get("requests")).unwrap_or(1);
        let dep = match &e.deployment_id {
            Some(d) => d.clone(),
            None => match self.live_at(&e.project, e.env.as_deref(), time) {
                Some(d) => d,
                None => return,
            },
        };
        let known_env = self.known_env(e, &dep);
        let window = self.retention.max_window(&e.project, known_env.as_deref());
        let max_series = self.retention.max_series_samples;
        let d = self.entry(&e.project, &dep, e.env.as_deref(), seq, at);
        if let (Some(s), Some(w)) = (d.succeeded_at, window) {
            if time < s || s.checked_add_signed(w).is_some_and(|end| time > end) {
                return;
            }
        }
        let start = bucket_start(time);
        match d.costs.iter_mut().find(|c| c.start == start) {
            Some(c) => {
                c.usd += usd;
                c.calls += calls;
            }
            None => {
                if d.costs.len() >= max_series {
                    self.stats.samples_dropped += 1;
                    return;
                }
                d.costs.push(CostBucket { start, usd, calls });
                d.revision += 1;
                self.samples += 1;
                return;
            }
        }
        d.revision += 1;
    }

    /// The deployment of `project`/`env` live at `time`: the last one that went live
    /// before it.
    fn live_at(&self, project: &str, env: Option<&str>, time: DateTime<Utc>) -> Option<String> {
        self.deployments
            .values()
            .filter(|d| d.project == project && env.is_none_or(|e| d.env.as_deref() == Some(e)))
            .filter(|d| d.succeeded_at.is_some_and(|s| s <= time) && !d.failed)
            .max_by_key(|d| d.succeeded_at)
            .map(|d| d.id.clone())
    }

    fn apply_migration(&mut self, e: &Event, seq: u64, time: DateTime<Utc>, at: DateTime<Utc>) {
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
            error: s("error").map(|x| truncate(x, MAX_ERROR_BYTES)),
            time,
            seq,
            received: at,
        };
        // Only a failed migration that a migration rule may still alert on waits for them
        // (plan() skips older ones).
        if rec.status == "failed" && time >= self.retention.oldest {
            if self.pending_failed_migrations.len() >= MAX_PENDING_MIGRATIONS {
                self.pending_failed_migrations.remove(0);
            }
            self.pending_failed_migrations.push(rec.clone());
        }
        self.migrations.push_back(rec);
        if self.migrations.len() > super::MAX_MIGRATIONS {
            self.migrations.pop_front();
        }
    }

    fn apply_decision(&mut self, e: &Event, seq: u64, time: DateTime<Utc>, at: DateTime<Utc>) {
        let Some(d) = DecisionData::read(&e.data) else {
            return;
        };
        let rule = d.rule.clone();
        match d.rule_kind {
            RuleKind::Rollback => {
                let Some(dep) = e.deployment_id.as_deref() else {
                    return;
                };
                let started = d.phase == Phase::Start && !d.dry_run;
                let entry = self.entry(&e.project, dep, e.env.as_deref(), seq, at);
                if !entry.concluded.contains(&rule) {
                    entry.concluded.push(rule.clone());
                }
                if d.verdict == Verdict::Degraded {
                    entry.degraded = true;
                }
                if started {
                    entry.rollback_started = true;
                }
                let key = (e.project.clone(), dep.to_string());
                match d.phase {
                    Phase::Start if started => {
                        let r = self.rollbacks.entry(key).or_insert_with(|| RollbackRec {
                            rule,
                            project: e.project.clone(),
                            env: e.env.clone(),
                            deployment_id: dep.to_string(),
                            started_at: time,
                            outcome: None,
                            last_seen: at,
                        });
                        r.last_seen = r.last_seen.max(at);
                        let last = self
                            .last_rollback
                            .entry((e.project.clone(), env_key(e)))
                            .or_insert(time);
                        *last = (*last).max(time);
                    }
                    Phase::Outcome => {
                        if let Some(r) = self.rollbacks.get_mut(&key) {
                            r.outcome = d.outcome.clone();
                            r.last_seen = r.last_seen.max(at);
                        }
                    }
                    _ => {}
                }
            }
            RuleKind::Threshold if d.phase != Phase::Outcome => {
                // Newest wins: an older decision read back after a newer one was applied
                // (the engine applies its own decisions when written) changes nothing.
                if self.thresholds.get(&rule).is_some_and(|t| t.since > time) {
                    return;
                }
                self.thresholds.insert(
                    rule.clone(),
                    ThresholdRec {
                        rule,
                        project: e.project.clone(),
                        env: e.env.clone(),
                        metric: d.metric.clone(),
                        verdict: d.verdict.as_str().to_string(),
                        value: d.value,
                        threshold: d.threshold,
                        since: time,
                    },
                );
            }
            RuleKind::Budget if d.phase != Phase::Outcome => {
                let month = d.month.clone().unwrap_or_default();
                let level = d.level.unwrap_or(0.0);
                let l = self.budget_fired.entry((rule, month)).or_insert(0.0);
                *l = l.max(level);
            }
            RuleKind::MigrationFailed if d.phase != Phase::Outcome => {
                let t = self.alerted.entry(e.id.clone()).or_insert(at);
                *t = (*t).max(at);
            }
            _ => {}
        }
    }
}

/// The start of the cost bucket holding `t`.
fn bucket_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let w = COST_BUCKET.num_milliseconds();
    let ms = t.timestamp_millis();
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(w)).unwrap_or(t)
}
