//! The rules' in-memory state, rebuilt from the log: deployments, check samples, costs,
//! migrations and the decisions already taken. Applying an event is idempotent (the engine
//! applies its own decisions when written and again when it reads them back).
//!
//! The state is bounded, whatever the log holds (docs/rules.md, "State and memory"); the
//! bounds are [`Retention`]'s:
//! - check samples are kept only when a rollback rule can read them (watched project/env,
//!   a metric's check with a value or counts, or a failed `smoke`), only up to the end of
//!   the longest window after the deployment succeeded, at most `max_series_samples` per
//!   deployment and check name and `max_samples` in all; API costs likewise, in 10-second
//!   buckets, for rules with an `api_cost_per_request` metric;
//! - a deployment keeps its samples while a window of it may still be judged, while it is
//!   one of the `baselines` last good deployments of its project/env (a baseline and a
//!   rollback target), or, before it succeeds, for `history`;
//! - its facts (status, url, rules that concluded it, rollback started) are kept until
//!   `history` after the last record about it was received (longer while it is one of
//!   those baselines, its window is open or its rollback runs), at most `max_deployments`;
//! - decisions are kept with their deployment; migration alerts for `history`; the gate's
//!   per project/env facts for at most `max_envs` project/envs, migrations for the last
//!   [`MAX_MIGRATIONS`].
//!
//! Expiry runs on the stream's clock: the latest `received_at` applied (the wall clock once
//! the engine follows the log live, [`State::tick`]). So a rebuild from the log forgets what
//! the running engine had forgotten at the same point of the stream, and a decision is
//! never forgotten while its deployment could be judged again.

mod apply;
mod gate;
mod image;
pub mod model;
mod retention;
mod sweep;

pub(crate) use image::StateImage;
pub use model::{
    CostBucket, Deployment, GateReport, Judging, JudgingMetric, LastDeploy, MigrationRec,
    RollbackRec, Sample, Series, ThresholdRec,
};
pub(crate) use retention::chrono_dur;
pub use retention::Retention;

use crate::judge;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// The source of every event the rules write.
pub const SOURCE: &str = "shiplog-rules";

/// The most migrations kept for the gate (oldest dropped first).
pub const MAX_MIGRATIONS: usize = 20_000;
/// The most failed migrations waiting for the migration rules.
const MAX_PENDING_MIGRATIONS: usize = 10_000;
/// A migration's error text is kept up to this many bytes (the gate shows its first line).
pub const MAX_ERROR_BYTES: usize = 1024;
/// How far back the walk to the last good deployment goes.
const MAX_WALK: usize = 64;

/// Figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Deployments tracked.
    pub deployments: usize,
    /// Check samples held.
    pub samples: usize,
    /// Samples not kept or dropped because of a cap (per series or in all).
    pub samples_dropped: u64,
    /// Deployments forgotten because of the deployment cap while a window of them was open.
    pub open_evicted: u64,
}

/// What a forgotten deployment leaves behind (see [`State`]'s tombstones).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Tomb {
    failed: bool,
    rolled_back: bool,
    rollback_started: bool,
    #[serde(default)]
    degraded: bool,
}

/// The state. Its maps are private: the engine reads it through the queries below and
/// changes it only by [`State::apply`]ing events.
pub struct State {
    seq: u64,
    retention: Retention,
    /// The stream's clock: the latest receive time applied (or wall time given to `tick`).
    clock: DateTime<Utc>,
    last_sweep: DateTime<Utc>,
    applied_since_sweep: u64,
    /// Samples held in all deployments.
    samples: usize,
    stats: StateStats,
    /// (project, deployment) → what is known of it.
    deployments: HashMap<(String, String), Deployment>,
    /// Hashes of deployments forgotten under the cap after a rule concluded them, with
    /// their unsafe flags: a deployment seen again is not judged again.
    tombstones: HashMap<u64, (DateTime<Utc>, Tomb)>,
    /// Ids of the migration alerts written (so a restart does not alert twice).
    alerted: HashMap<String, DateTime<Utc>>,
    /// (project, deployment) → the rollback started for it (at most one).
    rollbacks: HashMap<(String, String), RollbackRec>,
    /// (project, env) → time of the last rollback action started (cooldown).
    last_rollback: HashMap<(String, String), DateTime<Utc>>,
    /// project → env → seq of the deployment that succeeded last.
    live: HashMap<String, HashMap<String, u64>>,
    /// (project, env) → seq, time and id of the last deploy success event.
    last_ok_seq: HashMap<(String, String), (u64, DateTime<Utc>, String)>,
    thresholds: HashMap<String, ThresholdRec>,
    /// (rule, month) → highest level fired.
    budget_fired: HashMap<(String, String), f64>,
    migrations: VecDeque<MigrationRec>,
    /// Failed migrations not yet looked at by the migration_failed rules.
    pending_failed_migrations: Vec<MigrationRec>,
    /// Prices `api_cost` records that came without a cost (None: the shipped table).
    prices: Option<std::sync::Arc<shiplog_store::PriceTable>>,
}

impl Default for State {
    fn default() -> Self {
        State::new(Retention::default())
    }
}

impl State {
    pub fn new(retention: Retention) -> State {
        State {
            seq: 0,
            retention,
            clock: DateTime::<Utc>::MIN_UTC,
            last_sweep: DateTime::<Utc>::MIN_UTC,
            applied_since_sweep: 0,
            samples: 0,
            stats: StateStats::default(),
            deployments: HashMap::new(),
            tombstones: HashMap::new(),
            alerted: HashMap::new(),
            rollbacks: HashMap::new(),
            last_rollback: HashMap::new(),
            live: HashMap::new(),
            last_ok_seq: HashMap::new(),
            thresholds: HashMap::new(),
            budget_fired: HashMap::new(),
            migrations: VecDeque::new(),
            pending_failed_migrations: Vec::new(),
            prices: None,
        }
    }

    /// Prices `api_cost` records without a cost with `prices` (default: the shipped table).
    pub fn set_prices(&mut self, prices: Option<std::sync::Arc<shiplog_store::PriceTable>>) {
        self.prices = prices;
    }

    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Number of events applied (a change counter).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub fn stats(&self) -> StateStats {
        StateStats {
            deployments: self.deployments.len(),
            samples: self.samples,
            ..self.stats
        }
    }

    /// The stream's clock (the latest receive time applied, or the wall time of `tick`).
    pub fn clock(&self) -> DateTime<Utc> {
        self.clock
    }

    /// Advances the clock to `now` (wall time, once the engine follows the log live) and
    /// sweeps when one is due.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        if now > self.clock {
            self.clock = now;
        }
        if self.clock - self.last_sweep >= sweep::SWEEP_EVERY {
            self.sweep();
        }
    }

    /// A deployment by project and id.
    pub fn deployment(&self, project: &str, id: &str) -> Option<&Deployment> {
        self.deployments.get(&(project.to_string(), id.to_string()))
    }

    /// The deployments that succeeded in `project`/`env` (`None`: any env), not concluded by
    /// `rule`, oldest first (their facts: the samples stay in the state).
    pub fn open_candidates(&self, rule: &str, project: &str, env: Option<&str>) -> Vec<Deployment> {
        let mut v: Vec<Deployment> = self
            .deployments
            .values()
            .filter(|d| {
                d.succeeded_at.is_some()
                    && d.project == project
                    && env.is_none_or(|e| d.env.as_deref() == Some(e))
                    && !d.is_concluded(rule)
            })
            .map(Deployment::header)
            .collect();
        v.sort_by_key(|d| d.seq);
        v
    }

    /// Every deployment of `project` (`env`: only that env) with samples or a window, for
    /// tools (backtest).
    pub fn deployments_of(&self, project: &str, env: Option<&str>) -> Vec<&Deployment> {
        let mut v: Vec<&Deployment> = self
            .deployments
            .values()
            .filter(|d| d.project == project && env.is_none_or(|e| d.env.as_deref() == Some(e)))
            .collect();
        v.sort_by_key(|d| d.seq);
        v
    }

    /// Records that `rule` concluded deployment `dep` of `project` (decided, or found it
    /// not to be judged).
    pub fn conclude(&mut self, project: &str, dep: &str, rule: &str) {
        if let Some(d) = self
            .deployments
            .get_mut(&(project.to_string(), dep.to_string()))
        {
            if !d.concluded.iter().any(|r| r == rule) {
                d.concluded.push(rule.to_string());
            }
        }
    }

    /// Marks a deployment as judged degraded (the backtest's own verdicts, which it does
    /// not write to the log).
    pub fn mark_degraded(&mut self, project: &str, dep: &str) {
        if let Some(d) = self
            .deployments
            .get_mut(&(project.to_string(), dep.to_string()))
        {
            d.degraded = true;
        }
    }

    /// The baseline and rollback target of `d`: the last deployment of its project/env that
    /// served and was not degraded. Its `previous_deployment_id` when that one is good;
    /// when it names one that failed, was cancelled, rolled back, never succeeded or was
    /// judged degraded, the walk goes on from there (its own previous deployment, else the
    /// last good one before it). `Err` says why there is none: a named deployment that is
    /// not known (it may be older than what shiplog saw) is never guessed.
    pub fn baseline_of(&self, d: &Deployment) -> Result<&Deployment, String> {
        let mut cur = d;
        let mut skipped: Vec<String> = Vec::new();
        for _ in 0..MAX_WALK {
            let next = match &cur.previous_id {
                Some(p) => match self.deployment(&d.project, p) {
                    Some(x) => x,
                    None => {
                        return Err(format!(
                            "the previous deployment {p} is not known{}",
                            skipped_note(&skipped)
                        ))
                    }
                },
                None => match self.last_good_before(d, cur.seq) {
                    Some(x) => return Ok(x),
                    None => {
                        return Err(format!(
                            "no earlier good deployment of {}/{} is known{}",
                            d.project,
                            d.env.as_deref().unwrap_or(""),
                            skipped_note(&skipped)
                        ))
                    }
                },
            };
            match next.unsafe_reason() {
                None => return Ok(next),
                Some(why) => {
                    skipped.push(why);
                    cur = next;
                }
            }
        }
        Err(format!("no good deployment within {MAX_WALK} steps back"))
    }

    fn last_good_before(&self, d: &Deployment, seq: u64) -> Option<&Deployment> {
        self.deployments
            .values()
            .filter(|o| {
                o.project == d.project
                    && o.env == d.env
                    && o.seq < seq
                    && o.unsafe_reason().is_none()
            })
            .max_by_key(|o| o.seq)
    }

    /// The judge's samples of check `metric` for deployment `d`: those within its window
    /// (`window` after it went live), and before `cut` when given (a baseline stops
    /// counting when the next deployment replaced it).
    pub fn window_samples(
        &self,
        d: &Deployment,
        metric: &str,
        window: chrono::Duration,
        cut: Option<DateTime<Utc>>,
    ) -> Vec<judge::Sample> {
        let Some(start) = d.succeeded_at else {
            return Vec::new();
        };
        let end = window_end(start, window, cut);
        self.deployment(&d.project, &d.id)
            .and_then(|s| s.series(metric))
            .map(|s| {
                s.samples
                    .iter()
                    // The deployment's own window: from going live (a check sent before,
                    // against a preview, says nothing of production traffic) to its end.
                    .filter(|x| {
                        x.time >= start
                            && x.time <= end
                            && (x.value.is_some() || x.requests.is_some())
                    })
                    .map(Sample::judged)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `requests` of `d`'s checks `requests_from` in its window (before `cut`), by
    /// time: the intervals its API cost is divided by.
    fn request_counts(
        &self,
        d: &Deployment,
        requests_from: &str,
        window: chrono::Duration,
        cut: Option<DateTime<Utc>>,
    ) -> Vec<(DateTime<Utc>, u64)> {
        let Some(start) = d.succeeded_at else {
            return Vec::new();
        };
        let end = window_end(start, window, cut);
        let mut checks: Vec<(DateTime<Utc>, u64)> = self
            .deployment(&d.project, &d.id)
            .and_then(|s| s.series(requests_from))
            .map(|s| {
                s.samples
                    .iter()
                    .filter(|x| x.time <= end)
                    .filter_map(|x| x.requests.map(|r| (x.time, r)))
                    .collect()
            })
            .unwrap_or_default();
        checks.sort();
        checks
    }

    /// Whether `d`'s checks `requests_from` report `requests` in its window: its API cost
    /// is then judged per served request, else per API call.
    pub fn reports_requests(
        &self,
        d: &Deployment,
        requests_from: &str,
        window: chrono::Duration,
        cut: Option<DateTime<Utc>>,
    ) -> bool {
        !self
            .request_counts(d, requests_from, window, cut)
            .is_empty()
    }

    /// The samples of `api_cost_per_request` for `d`: its spend per request served, per
    /// interval. The intervals end at the samples of check `requests_from` that carry
    /// `requests` (spend since the previous one / its requests); when none carries them,
    /// per API call, per minute of the window.
    pub fn cost_samples(
        &self,
        d: &Deployment,
        requests_from: &str,
        window: chrono::Duration,
        cut: Option<DateTime<Utc>>,
        per_call: bool,
    ) -> Vec<judge::Sample> {
        let (Some(start), Some(stored)) = (d.succeeded_at, self.deployment(&d.project, &d.id))
        else {
            return Vec::new();
        };
        let end = window_end(start, window, cut);
        let costs: Vec<&CostBucket> = stored.costs.iter().filter(|c| c.start <= end).collect();
        let checks = self.request_counts(d, requests_from, window, cut);
        let mut out = Vec::new();
        if checks.is_empty() || per_call {
            let minute = chrono::Duration::minutes(1);
            let mut t = start;
            while t < end {
                let (usd, calls) = costs
                    .iter()
                    .filter(|c| c.start >= t && c.start < t + minute)
                    .fold((0.0, 0u64), |(u, n), c| (u + c.usd, n + c.calls));
                if calls > 0 {
                    out.push(judge::Sample::value(t + minute, usd / calls as f64));
                }
                t += minute;
            }
            return out;
        }
        let mut from = start - model::COST_BUCKET;
        for (t, requests) in checks {
            let usd: f64 = costs
                .iter()
                .filter(|c| c.start > from && c.start <= t)
                .map(|c| c.usd)
                .sum();
            if requests > 0 {
                out.push(judge::Sample::value(t, usd / requests as f64));
            }
            from = t;
        }
        out
    }

    /// The first failed smoke check of `d` in its window.
    pub fn failed_smoke(&self, d: &Deployment, window: chrono::Duration) -> Option<Sample> {
        let end = window_end(d.succeeded_at?, window, None);
        self.deployment(&d.project, &d.id)?
            .series("smoke")?
            .samples
            .iter()
            .find(|s| s.passed == Some(false) && s.time <= end)
            .copied()
    }

    /// Whether a deployment newer than `d` went live in its project/env.
    pub fn superseded(&self, d: &Deployment) -> bool {
        sweep::superseded_in(&self.live, d)
    }

    /// When the next deployment of `d`'s project/env went live after it (the end of `d`'s
    /// samples as a baseline).
    pub fn replaced_at(&self, d: &Deployment) -> Option<DateTime<Utc>> {
        self.deployments
            .values()
            .filter(|o| o.project == d.project && o.env == d.env && o.seq > d.seq)
            .filter_map(|o| o.succeeded_at)
            .min()
    }

    /// Whether a rollback was started for `project`/`dep` (by any rule).
    pub fn rollback_of(&self, project: &str, dep: &str) -> Option<&RollbackRec> {
        self.rollbacks.get(&(project.to_string(), dep.to_string()))
    }

    /// Rollbacks started whose outcome is not in the log.
    pub fn unfinished_rollbacks(&self) -> Vec<RollbackRec> {
        self.rollbacks
            .values()
            .filter(|r| r.outcome.is_none())
            .cloned()
            .collect()
    }

    /// When the cooldown of a project/env ends, if it is running at `now`.
    pub fn cooldown_until(
        &self,
        project: &str,
        env: &str,
        cooldown: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let last = self
            .last_rollback
            .get(&(project.to_string(), env.to_string()))?;
        let until = *last + chrono_dur(cooldown);
        (now < until).then_some(until)
    }

    /// Whether the migration alert `id` was written.
    pub fn alerted(&self, id: &str) -> bool {
        self.alerted.contains_key(id)
    }

    /// The last verdict a threshold rule wrote.
    pub fn threshold(&self, rule: &str) -> Option<&ThresholdRec> {
        self.thresholds.get(rule)
    }

    /// The highest budget level a rule fired in `month` (0 when none).
    pub fn budget_fired(&self, rule: &str, month: &str) -> f64 {
        self.budget_fired
            .get(&(rule.to_string(), month.to_string()))
            .copied()
            .unwrap_or(0.0)
    }

    /// The failed migrations not yet looked at, received within `history` (older ones were
    /// looked at before: their alerts may be forgotten, they must not fire again).
    pub fn take_failed_migrations(&mut self) -> Vec<MigrationRec> {
        let horizon = self
            .clock
            .checked_sub_signed(self.retention.history)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut v = std::mem::take(&mut self.pending_failed_migrations);
        v.retain(|m| m.received >= horizon);
        v
    }
}

fn window_end(
    start: DateTime<Utc>,
    window: chrono::Duration,
    cut: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let end = start
        .checked_add_signed(window)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    cut.map_or(end, |c| end.min(c))
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", skipped.join(", "))
    }
}

/// FNV-1a of project, a separator and deployment: stable across builds (tombstones are
/// kept in the snapshot).
pub(crate) fn tomb_key(project: &str, deployment: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in project.bytes().chain([0xff]).chain(deployment.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
