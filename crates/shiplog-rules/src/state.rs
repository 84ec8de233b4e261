//! The rules' in-memory state, rebuilt from the log: deployments, check samples,
//! migrations and the decisions already taken. Applying an event is idempotent (the engine
//! applies its own decisions when written and again when it reads them back).
//!
//! The state is bounded, whatever the log holds (docs/rules.md, "State and memory"); the
//! bounds are [`Retention`]'s:
//! - check samples are kept only when a rollback rule can read them (watched project/env,
//!   the rule's metric with a value, or a failed `smoke`), only up to the end of the longest
//!   window after the deployment succeeded, at most `max_series_samples` per deployment and
//!   check name and `max_samples` in all;
//! - a deployment keeps its samples while a window of it may still be judged, while it is
//!   one of the `baselines` last successful deployments of its project/env (a baseline and
//!   a rollback target), or, before it succeeds, for `history`;
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

use crate::config::{Aggregate, Baseline, Rule, RuleKind, RulesSettings};
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shiplog_events::{Event, Kind};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

/// The source of every event the rules write.
pub const SOURCE: &str = "shiplog-rules";

/// The most migrations kept for the gate (oldest dropped first).
pub const MAX_MIGRATIONS: usize = 20_000;
/// The most failed migrations waiting for the migration rules.
const MAX_PENDING_MIGRATIONS: usize = 10_000;
/// A migration's error text is kept up to this many bytes (the gate shows its first line).
const MAX_ERROR_BYTES: usize = 1024;
/// A sweep runs at least every this many applied events (and when a cap is exceeded).
const SWEEP_EVERY_EVENTS: u64 = 50_000;
/// Once live, a sweep runs at least this often.
const SWEEP_EVERY: chrono::Duration = chrono::Duration::seconds(10);

/// One check sample of a deployment (the check name is its series').
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub value: Option<f64>,
    pub passed: Option<bool>,
    pub time: DateTime<Utc>,
}

/// The samples of one check name of one deployment, in arrival order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// A rollback action was started for it (there is at most one per deployment).
    pub rollback_started: bool,
    /// Rules that concluded it: they decided, or found it not to be judged.
    pub concluded: Vec<String>,
    /// Forgotten under the deployment cap after a rule had concluded it, then seen again:
    /// no rule judges it again.
    pub judged_before: bool,
    /// When the last record about it was received (expiry).
    pub last_seen: DateTime<Utc>,
    /// Its check samples, by check name (see [`Retention`]).
    pub series: Vec<Series>,
}

impl Deployment {
    fn new(id: &str, project: &str, env: Option<&str>, seq: u64, at: DateTime<Utc>) -> Self {
        Deployment {
            id: id.to_string(),
            project: project.to_string(),
            env: env.map(str::to_string),
            seq,
            url: None,
            previous_id: None,
            status: String::new(),
            succeeded_at: None,
            succeeded_seq: None,
            failed: false,
            rolled_back: false,
            rollback_started: false,
            concluded: Vec::new(),
            judged_before: false,
            last_seen: at,
            series: Vec::new(),
        }
    }

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

    /// Whether `rule` concluded this deployment (or it was judged before it was forgotten).
    pub fn is_concluded(&self, rule: &str) -> bool {
        self.judged_before || self.concluded.iter().any(|r| r == rule)
    }

    /// The facts without the samples (cheap to clone).
    pub fn header(&self) -> Deployment {
        Deployment {
            series: Vec::new(),
            concluded: Vec::new(),
            ..self.clone_facts()
        }
    }

    fn clone_facts(&self) -> Deployment {
        Deployment {
            id: self.id.clone(),
            project: self.project.clone(),
            env: self.env.clone(),
            seq: self.seq,
            url: self.url.clone(),
            previous_id: self.previous_id.clone(),
            status: self.status.clone(),
            succeeded_at: self.succeeded_at,
            succeeded_seq: self.succeeded_seq,
            failed: self.failed,
            rolled_back: self.rolled_back,
            rollback_started: self.rollback_started,
            concluded: self.concluded.clone(),
            judged_before: self.judged_before,
            last_seen: self.last_seen,
            series: Vec::new(),
        }
    }

    /// Number of samples held.
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    fn series(&self, name: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.name == name)
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
    /// The first [`MAX_ERROR_BYTES`] of the error text.
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

/// A rollback rule as the state sees it: what to keep for it.
#[derive(Debug, Clone)]
struct Watched {
    rule: String,
    project: String,
    env: String,
    metric: String,
    window: chrono::Duration,
}

/// What the state keeps and for how long (docs/rules.md, "State and memory").
#[derive(Debug, Clone)]
pub struct Retention {
    /// The rollback rules; `None` keeps every project, env and check name (tools, tests).
    watch: Option<Vec<Watched>>,
    /// Facts are forgotten this long after the last record about them was received.
    pub history: chrono::Duration,
    /// Windows that closed before this are never judged (`started_at - catch_up`).
    pub oldest: DateTime<Utc>,
    /// The most deployments tracked.
    pub max_deployments: usize,
    /// The most check samples held, over every deployment.
    pub max_samples: usize,
    /// The most samples held per deployment and check name (the first ones are kept).
    pub max_series_samples: usize,
    /// Successful deployments per project/env kept with their samples as baselines.
    pub baselines: usize,
    /// The most project/envs the gate remembers a last successful deploy for.
    pub max_envs: usize,
}

impl Default for Retention {
    /// Keeps every project and check name, with the default horizon and caps.
    fn default() -> Self {
        Retention {
            watch: None,
            history: chrono::Duration::days(7),
            oldest: DateTime::<Utc>::MIN_UTC,
            max_deployments: 20_000,
            max_samples: 500_000,
            max_series_samples: 10_000,
            baselines: 3,
            max_envs: 10_000,
        }
    }
}

fn chrono_dur(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Retention {
    /// What `rules` need, for an engine started at `started_at`.
    pub fn for_rules(
        rules: &[Rule],
        settings: &RulesSettings,
        started_at: DateTime<Utc>,
    ) -> Retention {
        let watch = rules
            .iter()
            .filter(|r| r.cfg.kind == RuleKind::Rollback)
            .map(|r| Watched {
                rule: r.name().to_string(),
                project: r.cfg.project.clone(),
                env: r.cfg.env.clone().unwrap_or_default(),
                metric: r.metric().to_string(),
                window: chrono_dur(r.window()),
            })
            .collect();
        let longest_cooldown = rules
            .iter()
            .filter_map(|r| r.cfg.cooldown)
            .chain([settings.cooldown])
            .max()
            .unwrap_or_default();
        Retention {
            watch: Some(watch),
            history: chrono_dur(settings.history.max(longest_cooldown)),
            oldest: started_at
                .checked_sub_signed(chrono_dur(settings.catch_up))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            ..Retention::default()
        }
    }

    /// What the state keeps, for a snapshot's fingerprint (a snapshot taken for other
    /// rules holds other samples).
    pub(crate) fn describe(&self) -> String {
        let mut w: Vec<String> = self
            .watch
            .iter()
            .flatten()
            .map(|w| {
                format!(
                    "{:?}",
                    (
                        &w.rule,
                        &w.project,
                        &w.env,
                        &w.metric,
                        w.window.num_milliseconds()
                    )
                )
            })
            .collect();
        w.sort();
        format!(
            "all={} watch={w:?} history={}",
            self.watch.is_none(),
            self.history.num_milliseconds()
        )
    }

    fn watched<'a>(&'a self, project: &'a str) -> impl Iterator<Item = &'a Watched> + 'a {
        self.watch
            .iter()
            .flatten()
            .filter(move |w| w.project == project)
    }

    /// Whether the deploy records of `project`/`env` are tracked (an unknown env may still
    /// turn out to be a watched one).
    pub fn watches_deploy(&self, project: &str, env: Option<&str>) -> bool {
        self.watch.is_none()
            || self
                .watched(project)
                .any(|w| env.is_none_or(|e| e == w.env))
    }

    /// Whether a check sample could be read by a rule: its project/env is watched and its
    /// name is a watched metric (with a value) or `smoke` (failed).
    pub fn keeps_check(
        &self,
        project: &str,
        env: Option<&str>,
        name: &str,
        value: Option<f64>,
        passed: Option<bool>,
    ) -> bool {
        let smoke_failed = name == "smoke" && passed == Some(false);
        if !smoke_failed && value.is_none() {
            return false;
        }
        self.watch.is_none()
            || self
                .watched(project)
                .any(|w| env.is_none_or(|e| e == w.env) && (smoke_failed || (w.metric == name)))
    }

    /// Whether a record can change the state at all: a cheap test on the envelope (and a
    /// check's name) to skip the full decoding of records the state would ignore.
    pub fn may_apply(
        &self,
        kind: Kind,
        project: &str,
        env: Option<&str>,
        check_name: Option<&str>,
    ) -> bool {
        match kind {
            Kind::Build | Kind::ApiCost => false,
            Kind::Check => match check_name {
                None => false,
                Some(name) => {
                    self.watch.is_none()
                        || self.watched(project).any(|w| {
                            env.is_none_or(|e| e == w.env) && (name == "smoke" || w.metric == name)
                        })
                }
            },
            _ => true,
        }
    }

    /// The longest window of the rules watching `project`/`env` (None: not known, keep all).
    fn max_window(&self, project: &str, env: Option<&str>) -> Option<chrono::Duration> {
        self.watch.as_ref()?;
        self.watched(project)
            .filter(|w| env.is_none_or(|e| e == w.env))
            .map(|w| w.window)
            .max()
    }

    /// Whether some rule may still judge `d` (its window has not closed before `oldest`,
    /// and no rule watching it concluded it yet).
    fn may_judge(&self, d: &Deployment) -> bool {
        let Some(s) = d.succeeded_at else {
            return false;
        };
        if d.failed || d.rolled_back || d.rollback_started || d.judged_before {
            return false;
        }
        match &self.watch {
            None => d.concluded.is_empty(),
            Some(_) => self.watched(&d.project).any(|w| {
                d.env.as_deref() == Some(w.env.as_str())
                    && !d.concluded.contains(&w.rule)
                    && s.checked_add_signed(w.window)
                        .is_none_or(|end| end >= self.oldest)
            }),
        }
    }
}

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
    pub deployments: HashMap<(String, String), Deployment>,
    /// Hashes of deployments forgotten under the cap after a rule concluded them, with
    /// their unsafe flags: a deployment seen again is not judged again.
    tombstones: HashMap<u64, (DateTime<Utc>, Tomb)>,
    /// Ids of the migration alerts written (so a restart does not alert twice).
    pub alerted: HashMap<String, DateTime<Utc>>,
    /// (project, deployment) → the rollback started for it (at most one).
    pub rollbacks: HashMap<(String, String), RollbackRec>,
    /// (project, env) → time of the last rollback action started (cooldown).
    pub last_rollback: HashMap<(String, String), DateTime<Utc>>,
    /// project → env → seq of the deployment that succeeded last.
    pub live: HashMap<String, HashMap<String, u64>>,
    /// (project, env) → seq of the last deploy success event.
    pub last_ok_seq: HashMap<(String, String), (u64, DateTime<Utc>, String)>,
    pub thresholds: HashMap<String, ThresholdRec>,
    /// (rule, month) → highest level fired.
    pub budget_fired: HashMap<(String, String), f64>,
    pub migrations: VecDeque<MigrationRec>,
    /// Failed migrations not yet looked at by the migration_failed rules.
    pub pending_failed_migrations: Vec<MigrationRec>,
}

/// The state as saved in a snapshot (maps with composite keys as lists).
#[derive(Serialize, Deserialize)]
pub(crate) struct StateImage {
    seq: u64,
    clock: DateTime<Utc>,
    deployments: Vec<Deployment>,
    tombstones: Vec<(u64, DateTime<Utc>, Tomb)>,
    alerted: Vec<(String, DateTime<Utc>)>,
    rollbacks: Vec<RollbackImage>,
    last_rollback: Vec<(String, String, DateTime<Utc>)>,
    live: HashMap<String, HashMap<String, u64>>,
    last_ok_seq: Vec<(String, String, u64, DateTime<Utc>, String)>,
    thresholds: HashMap<String, ThresholdRec>,
    budget_fired: Vec<(String, String, f64)>,
    migrations: Vec<MigrationImage>,
    pending_failed_migrations: Vec<MigrationImage>,
}

/// A migration with the fields the gate's JSON leaves out.
#[derive(Serialize, Deserialize)]
struct MigrationImage {
    #[serde(flatten)]
    rec: MigrationRec,
    seq: u64,
    received: DateTime<Utc>,
}

impl From<&MigrationRec> for MigrationImage {
    fn from(m: &MigrationRec) -> Self {
        MigrationImage {
            rec: m.clone(),
            seq: m.seq,
            received: m.received,
        }
    }
}

impl From<MigrationImage> for MigrationRec {
    fn from(m: MigrationImage) -> Self {
        MigrationRec {
            seq: m.seq,
            received: m.received,
            ..m.rec
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RollbackImage {
    #[serde(flatten)]
    rec: RollbackRec,
    last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Tomb {
    failed: bool,
    rolled_back: bool,
    rollback_started: bool,
}

impl Default for State {
    fn default() -> Self {
        State::new(Retention::default())
    }
}

fn env_key(e: &Event) -> String {
    e.env.clone().unwrap_or_default()
}

fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

/// FNV-1a of project, a separator and deployment: stable across builds (tombstones are
/// kept in the snapshot).
fn tomb_key(project: &str, deployment: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in project.bytes().chain([0xff]).chain(deployment.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
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
        }
    }

    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Number of events applied (a change counter).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// A copy of everything the state holds, for a snapshot.
    pub(crate) fn image(&self) -> StateImage {
        StateImage {
            seq: self.seq,
            clock: self.clock,
            deployments: self.deployments.values().cloned().collect(),
            tombstones: self
                .tombstones
                .iter()
                .map(|(k, (t, v))| (*k, *t, *v))
                .collect(),
            alerted: self.alerted.iter().map(|(k, t)| (k.clone(), *t)).collect(),
            rollbacks: self
                .rollbacks
                .values()
                .map(|r| RollbackImage {
                    rec: r.clone(),
                    last_seen: r.last_seen,
                })
                .collect(),
            last_rollback: self
                .last_rollback
                .iter()
                .map(|((p, e), t)| (p.clone(), e.clone(), *t))
                .collect(),
            live: self.live.clone(),
            last_ok_seq: self
                .last_ok_seq
                .iter()
                .map(|((p, e), (s, t, d))| (p.clone(), e.clone(), *s, *t, d.clone()))
                .collect(),
            thresholds: self.thresholds.clone(),
            budget_fired: self
                .budget_fired
                .iter()
                .map(|((r, m), l)| (r.clone(), m.clone(), *l))
                .collect(),
            migrations: self.migrations.iter().map(MigrationImage::from).collect(),
            pending_failed_migrations: self
                .pending_failed_migrations
                .iter()
                .map(MigrationImage::from)
                .collect(),
        }
    }

    /// The state a snapshot saved, under `retention` (the current rules').
    pub(crate) fn from_image(img: StateImage, retention: Retention) -> State {
        let mut st = State::new(retention);
        st.seq = img.seq;
        st.clock = img.clock;
        st.last_sweep = img.clock;
        for d in img.deployments {
            st.samples += d.sample_count();
            st.deployments.insert((d.project.clone(), d.id.clone()), d);
        }
        st.tombstones = img
            .tombstones
            .into_iter()
            .map(|(k, t, v)| (k, (t, v)))
            .collect();
        st.alerted = img.alerted.into_iter().collect();
        st.rollbacks = img
            .rollbacks
            .into_iter()
            .map(|r| {
                let key = (r.rec.project.clone(), r.rec.deployment_id.clone());
                (
                    key,
                    RollbackRec {
                        last_seen: r.last_seen,
                        ..r.rec
                    },
                )
            })
            .collect();
        st.last_rollback = img
            .last_rollback
            .into_iter()
            .map(|(p, e, t)| ((p, e), t))
            .collect();
        st.live = img.live;
        st.last_ok_seq = img
            .last_ok_seq
            .into_iter()
            .map(|(p, e, s, t, d)| ((p, e), (s, t, d)))
            .collect();
        st.thresholds = img.thresholds;
        st.budget_fired = img
            .budget_fired
            .into_iter()
            .map(|(r, m, l)| ((r, m), l))
            .collect();
        st.migrations = img.migrations.into_iter().map(MigrationRec::from).collect();
        st.pending_failed_migrations = img
            .pending_failed_migrations
            .into_iter()
            .map(MigrationRec::from)
            .collect();
        st
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
        if self.clock - self.last_sweep >= SWEEP_EVERY {
            self.sweep();
        }
    }

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
            Kind::Migration => self.apply_migration(e, seq, time, at),
            Kind::Decision if e.source == SOURCE => self.apply_decision(e, seq, time, at),
            _ => {}
        }
        self.applied_since_sweep += 1;
        if self.applied_since_sweep >= SWEEP_EVERY_EVENTS
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
                evict_oldest(&mut self.last_ok_seq, |v| v.1, self.retention.max_envs);
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
                }
            }
            "failed" => d.failed = true,
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

    fn apply_check(&mut self, e: &Event, seq: u64, time: DateTime<Utc>, at: DateTime<Utc>) {
        let Some(dep) = &e.deployment_id else { return };
        let Some(name) = e.data_str("name") else {
            return;
        };
        let value = num(e.data.get("value"));
        let passed = e.data.get("passed").and_then(Value::as_bool);
        if !self
            .retention
            .keeps_check(&e.project, e.env.as_deref(), name, value, passed)
        {
            return;
        }
        let max_series = self.retention.max_series_samples;
        let known_env = match &e.env {
            Some(env) => Some(env.clone()),
            None => self
                .deployments
                .get(&(e.project.clone(), dep.clone()))
                .and_then(|d| d.env.clone()),
        };
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
                });
                d.series.last_mut().unwrap()
            }
        };
        if series.samples.len() >= max_series {
            self.stats.samples_dropped += 1;
            return;
        }
        series.samples.push(Sample {
            value,
            passed,
            time,
        });
        self.samples += 1;
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
        if self.migrations.len() > MAX_MIGRATIONS {
            self.migrations.pop_front();
        }
    }

    fn apply_decision(&mut self, e: &Event, seq: u64, time: DateTime<Utc>, at: DateTime<Utc>) {
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
                let Some(dep) = e.deployment_id.as_deref() else {
                    return;
                };
                let started = phase == "start" && !dry_run;
                let d = self.entry(&e.project, dep, e.env.as_deref(), seq, at);
                if !d.concluded.contains(&rule) {
                    d.concluded.push(rule.clone());
                }
                if started {
                    d.rollback_started = true;
                }
                let key = (e.project.clone(), dep.to_string());
                match phase {
                    "start" if started => {
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
                    "outcome" => {
                        if let Some(r) = self.rollbacks.get_mut(&key) {
                            r.outcome = e.data_str("outcome").map(str::to_string);
                            r.last_seen = r.last_seen.max(at);
                        }
                    }
                    _ => {}
                }
            }
            "threshold" if phase != "outcome" => {
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
            "migration_failed" if phase != "outcome" => {
                let t = self.alerted.entry(e.id.clone()).or_insert(at);
                *t = (*t).max(at);
            }
            _ => {}
        }
    }

    /// Forgets what no rule can use any more and enforces the caps (see [`Retention`]).
    /// Runs on the stream's clock.
    pub fn sweep(&mut self) {
        let now = self.clock;
        self.applied_since_sweep = 0;
        self.last_sweep = now;
        let ret = &self.retention;
        let horizon = now
            .checked_sub_signed(ret.history)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // Baselines (and rollback targets): the last safe successful deployments of each
        // project/env.
        let mut by_env: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
        for d in self.deployments.values() {
            if d.succeeded_at.is_some() && !d.failed && !d.rolled_back {
                by_env
                    .entry((d.project.as_str(), d.env.as_deref().unwrap_or("")))
                    .or_default()
                    .push(d.seq);
            }
        }
        // By seq: unique per deployment.
        let mut pinned: HashSet<u64> = HashSet::new();
        for (_, mut v) in by_env {
            v.sort_unstable_by_key(|seq| std::cmp::Reverse(*seq));
            pinned.extend(v.into_iter().take(ret.baselines));
        }
        let (live, rollbacks) = (&self.live, &self.rollbacks);
        let classify = |k: &(String, String), d: &Deployment| -> Class {
            if pinned.contains(&d.seq) || rollbacks.get(k).is_some_and(|r| r.outcome.is_none()) {
                Class::Kept
            } else if ret.may_judge(d) && !superseded_in(live, d) {
                Class::Open
            } else if d.succeeded_at.is_none()
                && !d.failed
                && !d.rolled_back
                && d.last_seen >= horizon
            {
                Class::Pending
            } else {
                Class::Done
            }
        };
        let mut freed = 0;
        self.deployments.retain(|k, d| {
            let class = classify(k, d);
            let baseline_only = class == Class::Kept && !pinned.contains(&d.seq);
            if (class == Class::Done || baseline_only) && !d.series.is_empty() {
                // Decided and no baseline: its samples are of no more use.
                freed += d.sample_count();
                d.series = Vec::new();
            }
            class != Class::Done || d.last_seen >= horizon
        });
        self.samples -= freed;

        // The deployment cap: forget the least useful first (done, then not yet
        // succeeded, then open windows, oldest first); never a baseline or a running
        // rollback. A forgotten deployment that a rule concluded (or might have) leaves a
        // tombstone, so it is not judged again if it shows up again.
        if self.deployments.len() > ret.max_deployments {
            let target = ret.max_deployments * 9 / 10;
            let mut order: Vec<(Class, DateTime<Utc>, (String, String))> = self
                .deployments
                .iter()
                .map(|(k, d)| {
                    let class = classify(k, d);
                    let age = match class {
                        Class::Open => d.succeeded_at.unwrap_or(d.last_seen),
                        _ => d.last_seen,
                    };
                    (class, age, k.clone())
                })
                .filter(|(class, _, _)| *class != Class::Kept)
                .collect();
            order.sort();
            for (class, _, k) in order {
                if self.deployments.len() <= target {
                    break;
                }
                let Some(d) = self.deployments.remove(&k) else {
                    continue;
                };
                self.samples -= d.sample_count();
                if class == Class::Open {
                    self.stats.open_evicted += 1;
                }
                if class != Class::Pending {
                    self.tombstones.insert(
                        tomb_key(&k.0, &k.1),
                        (
                            now,
                            Tomb {
                                failed: d.failed,
                                rolled_back: d.rolled_back,
                                rollback_started: d.rollback_started,
                            },
                        ),
                    );
                }
            }
        }

        // The sample cap: drop whole series, not yet succeeded deployments first, then
        // baselines, then open windows (oldest first).
        if self.samples > ret.max_samples {
            let target = ret.max_samples * 9 / 10;
            let mut order: Vec<(u8, DateTime<Utc>, (String, String))> = self
                .deployments
                .iter()
                .filter(|(_, d)| !d.series.is_empty())
                .map(|(k, d)| {
                    let rank = match classify(k, d) {
                        Class::Pending | Class::Done => 0,
                        Class::Kept => 1,
                        Class::Open => 2,
                    };
                    (rank, d.succeeded_at.unwrap_or(d.last_seen), k.clone())
                })
                .collect();
            order.sort();
            for (_, _, k) in order {
                if self.samples <= target {
                    break;
                }
                if let Some(d) = self.deployments.get_mut(&k) {
                    let n = d.sample_count();
                    d.series = Vec::new();
                    self.samples -= n;
                    self.stats.samples_dropped += n as u64;
                }
            }
        }

        let max_tombs = ret.max_deployments * 10;
        self.tombstones.retain(|_, (t, _)| *t >= horizon);
        if self.tombstones.len() > max_tombs {
            evict_oldest(&mut self.tombstones, |v| v.0, max_tombs);
        }
        self.alerted.retain(|_, t| *t >= horizon);
        if self.alerted.len() > ret.max_deployments {
            evict_oldest(&mut self.alerted, |t| *t, ret.max_deployments);
        }
        self.rollbacks
            .retain(|_, r| r.outcome.is_none() || r.last_seen >= horizon);
        self.last_rollback.retain(|_, t| *t >= horizon);
        let envs: usize = self.live.values().map(HashMap::len).sum();
        if envs > ret.max_envs {
            // Only without rules (every project/env is tracked): forget the quietest.
            let mut seqs: Vec<u64> = self
                .live
                .values()
                .flat_map(|m| m.values().copied())
                .collect();
            seqs.sort_unstable();
            let cut = seqs[seqs.len() - ret.max_envs * 9 / 10];
            for m in self.live.values_mut() {
                m.retain(|_, s| *s >= cut);
            }
            self.live.retain(|_, m| !m.is_empty());
        }
        // Budget levels of the current and the previous month are enough.
        let first = now.date_naive().with_day(1).unwrap_or(now.date_naive());
        let prev_month = first
            .pred_opt()
            .map(|d| d.format("%Y-%m").to_string())
            .unwrap_or_default();
        self.budget_fired.retain(|(_, m), _| *m >= prev_month);
        self.pending_failed_migrations
            .retain(|m| m.received >= horizon);
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

    fn stored(&self, d: &Deployment) -> Option<&Deployment> {
        self.deployments.get(&(d.project.clone(), d.id.clone()))
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
        let end = start
            .checked_add_signed(window)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.stored(d)
            .and_then(|s| s.series(metric))
            .map(|s| {
                s.samples
                    .iter()
                    .filter(|s| s.time <= end)
                    .filter_map(|s| s.value.map(|x| (x, s.time)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first failed smoke check of `d` in its window.
    pub fn failed_smoke(&self, d: &Deployment, window: chrono::Duration) -> Option<Sample> {
        let end = d
            .succeeded_at?
            .checked_add_signed(window)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.stored(d)?
            .series("smoke")?
            .samples
            .iter()
            .find(|s| s.passed == Some(false) && s.time <= end)
            .copied()
    }

    /// Whether a deployment newer than `d` went live in its project/env.
    pub fn superseded(&self, d: &Deployment) -> bool {
        superseded_in(&self.live, d)
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

/// How useful a deployment is, in the order the caps forget them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Decided (or never to be judged), no baseline: facts only, until `history`.
    Done,
    /// Not succeeded yet (it may): facts and samples until `history`.
    Pending,
    /// A window of it may still be judged.
    Open,
    /// A baseline or rollback target, or its rollback runs: never forgotten.
    Kept,
}

fn superseded_in(live: &HashMap<String, HashMap<String, u64>>, d: &Deployment) -> bool {
    live.get(&d.project)
        .and_then(|m| m.get(d.env.as_deref().unwrap_or("")))
        .is_some_and(|s| *s > d.seq)
}

/// Removes the oldest entries (by `time`) until `map` holds 90 % of `max`.
fn evict_oldest<K: Clone + Eq + Hash, V>(
    map: &mut HashMap<K, V>,
    time: impl Fn(&V) -> DateTime<Utc>,
    max: usize,
) {
    let target = max * 9 / 10;
    if map.len() <= target {
        return;
    }
    let mut order: Vec<(DateTime<Utc>, K)> =
        map.iter().map(|(k, v)| (time(v), k.clone())).collect();
    order.sort_by_key(|a| a.0);
    let excess = map.len() - target;
    for (_, k) in order.into_iter().take(excess) {
        map.remove(&k);
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

/// The bounds of the state: many deployments, expiry on the stream's clock, the caps.
#[cfg(test)]
mod memory_tests {
    use super::*;
    use crate::config::{validate, RuleConfig};
    use chrono::Duration as D;
    use serde_json::json;
    use shiplog_events::{format_rfc3339, Origin};

    fn rules() -> Vec<Rule> {
        #[derive(serde::Deserialize)]
        struct F {
            rules: Vec<RuleConfig>,
        }
        let f: F = toml::from_str(
            "[[rules]]\nname = \"r\"\nkind = \"rollback\"\nproject = \"p\"\nenv = \"production\"\nmetric = \"error_rate\"\nwindow = \"10m\"\nmin_samples = 3\nmax_ratio = 1.5\naction = { command = [\"true\"] }\n",
        )
        .unwrap();
        validate(&f.rules, &RulesSettings::default()).unwrap()
    }

    fn state(now: DateTime<Utc>) -> State {
        State::new(Retention::for_rules(
            &rules(),
            &RulesSettings::default(),
            now,
        ))
    }

    fn ev(v: Value) -> Event {
        Event::from_json(v, Origin::Internal).unwrap()
    }

    /// An event built directly (the JSON round trip would dominate these tests' time).
    #[allow(clippy::too_many_arguments)]
    fn event(
        id: String,
        kind: Kind,
        env: &str,
        dep: &str,
        t: DateTime<Utc>,
        at: DateTime<Utc>,
        data: Value,
    ) -> Event {
        let Value::Object(data) = data else {
            unreachable!()
        };
        Event {
            id,
            kind,
            source: "ci".into(),
            time: Some(t),
            received_at: Some(at),
            project: "p".into(),
            env: Some(env.into()),
            commit: None,
            branch: None,
            deployment_id: Some(dep.into()),
            data,
            extra: Default::default(),
        }
    }

    fn deploy(
        dep: &str,
        prev: Option<&str>,
        status: &str,
        t: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Event {
        let mut data = json!({"status": status, "url": format!("https://{dep}.example")});
        if let Some(p) = prev {
            data["previous_deployment_id"] = json!(p);
        }
        event(
            format!("{dep}/{status}"),
            Kind::Deploy,
            "production",
            dep,
            t,
            at,
            data,
        )
    }

    fn check(
        dep: &str,
        env: &str,
        name: &str,
        value: f64,
        t: DateTime<Utc>,
        at: DateTime<Utc>,
        n: u64,
    ) -> Event {
        let data = json!({"name": name, "value": value});
        event(
            format!("{dep}/{name}/{env}/{n}"),
            Kind::Check,
            env,
            dep,
            t,
            at,
            data,
        )
    }

    fn decision(dep: &str, verdict: &str, at: DateTime<Utc>) -> Event {
        ev(
            json!({"id": format!("rule/r/{dep}/{verdict}"), "kind": "decision", "source": SOURCE, "project": "p",
                  "env": "production", "deployment_id": dep, "time": format_rfc3339(&at),
                  "received_at": format_rfc3339(&at),
                  "data": {"rule": "r", "rule_kind": "rollback", "verdict": verdict, "phase": "final", "dry_run": false}}),
        )
    }

    /// Feeds deployment `i`: succeeded (replacing `i - 1`), three error_rate samples, and
    /// samples no rule reads (another check name, another env).
    fn feed(st: &mut State, i: u64, t: DateTime<Utc>, at: DateTime<Utc>) {
        let dep = format!("d{i}");
        let prev = (i > 0).then(|| format!("d{}", i - 1));
        st.apply(&deploy(&dep, prev.as_deref(), "succeeded", t, at));
        for n in 0..3 {
            st.apply(&check(
                &dep,
                "production",
                "error_rate",
                0.02,
                t + D::seconds(1),
                at,
                n,
            ));
        }
        st.apply(&check(
            &dep,
            "production",
            "latency_p95",
            120.0,
            t + D::seconds(1),
            at,
            9,
        ));
        st.apply(&check(
            &dep,
            "preview",
            "error_rate",
            0.5,
            t + D::seconds(1),
            at,
            9,
        ));
    }

    /// Judges `dep` the way the engine does (window closed).
    fn verdict(st: &State, dep: &str) -> Verdict {
        let r = &rules()[0];
        let w = D::minutes(10);
        let d = &st.deployments[&("p".to_string(), dep.to_string())];
        let prev = st.previous_of(d).expect("the previous deployment is known");
        let base: Vec<f64> = st
            .window_values(prev, "error_rate", w)
            .into_iter()
            .map(|v| v.0)
            .collect();
        let values = st.window_values(d, "error_rate", w);
        judge(
            r,
            &values,
            st.failed_smoke(d, w).as_ref(),
            Some(&base),
            true,
        )
    }

    #[test]
    fn a_hundred_thousand_deployments_stay_under_the_caps() {
        let now = Utc::now();
        let mut st = state(now);
        let caps = st.retention().clone();
        let n = 100_000u64;
        for i in 0..n {
            // All received within `history`: only the caps bound the state.
            let t = now - D::seconds((n - i) as i64);
            feed(&mut st, i, t, now - D::milliseconds((n - i) as i64));
            let s = st.stats();
            assert!(s.deployments <= caps.max_deployments, "{i}: {s:?}");
            assert!(s.samples <= caps.max_samples, "{i}: {s:?}");
        }
        st.sweep();
        let s = st.stats();
        assert!(s.deployments <= caps.max_deployments, "{s:?}");
        // Samples only of the open window (the live deployment) and the baselines: the
        // superseded ones were decided-or-never-judged and keep no samples.
        assert!(s.samples <= (1 + caps.baselines) * 3, "{s:?}");
        // What no rule reads was never kept: the latency samples and the preview env.
        let last = &st.deployments[&("p".to_string(), format!("d{}", n - 1))];
        assert_eq!(last.series.len(), 1);
        assert_eq!(last.series[0].samples.len(), 3);
        // A new deployment is still judged against its baseline, the one it replaced.
        let t = now;
        st.apply(&deploy(
            "new",
            Some(&format!("d{}", n - 1)),
            "succeeded",
            t,
            now,
        ));
        for k in 0..3 {
            st.apply(&check(
                "new",
                "production",
                "error_rate",
                0.5,
                t + D::seconds(1),
                now,
                k,
            ));
        }
        match verdict(&st, "new") {
            Verdict::Degraded(e) => {
                assert_eq!(e.baseline, Some(0.02));
                assert_eq!(e.baseline_samples, Some(3));
                assert_eq!(e.samples, 3);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn facts_expire_after_history_on_the_streams_clock() {
        let now = Utc::now();
        let mut st = state(now);
        let n = 100_000u64;
        // One deployment a minute for ~69 days, received as they happened.
        for i in 0..n {
            let t = now - D::minutes((n - i) as i64);
            feed(&mut st, i, t, t);
        }
        st.tick(now);
        st.sweep();
        let s = st.stats();
        let within = 7 * 24 * 60; // deployments received within `history` (7 days)
        assert!(s.deployments <= within + 1, "{s:?}");
        assert!(s.deployments >= within - 1, "{s:?}");
        assert_eq!(s.open_evicted, 0);
        assert!(s.samples <= 4 * 3, "{s:?}");
        let has = |i: u64| {
            st.deployments
                .contains_key(&("p".to_string(), format!("d{i}")))
        };
        assert!(!has(n - 8 * 24 * 60), "received 8 days ago: forgotten");
        assert!(has(n - 6 * 24 * 60), "received 6 days ago: kept");
        assert!(has(n - 1));
    }

    #[test]
    fn a_baseline_outlives_history() {
        // A deployment live for a month is still the baseline of the next one.
        let now = Utc::now();
        let mut st = state(now);
        let old = now - D::days(30);
        feed(&mut st, 0, old, old);
        for k in 0..2000u64 {
            // Unrelated traffic moves the stream's clock on.
            st.apply(&check(
                "elsewhere",
                "production",
                "latency_p95",
                1.0,
                now,
                old + D::hours(k as i64 / 3),
                k,
            ));
        }
        st.tick(now);
        st.sweep();
        assert!(st
            .deployments
            .contains_key(&("p".to_string(), "d0".to_string())));
        st.apply(&deploy("d1", Some("d0"), "succeeded", now, now));
        for k in 0..3 {
            st.apply(&check("d1", "production", "error_rate", 0.021, now, now, k));
        }
        assert!(matches!(verdict(&st, "d1"), Verdict::Healthy(_)));
    }

    #[test]
    fn a_deployment_forgotten_under_the_cap_is_not_judged_again() {
        let now = Utc::now();
        let mut st = state(now);
        st.retention.max_deployments = 100;
        let early = now - D::seconds(10);
        st.apply(&deploy("judged", None, "succeeded", early, early));
        st.apply(&decision("judged", "healthy", early));
        st.apply(&deploy("bad", None, "failed", early, early));
        assert!(st.deployments[&("p".into(), "judged".into())].is_concluded("r"));
        for i in 0..1000 {
            feed(&mut st, i, now, now - D::milliseconds(1000 - i as i64));
        }
        assert!(st.stats().deployments <= 100);
        assert!(!st.deployments.contains_key(&("p".into(), "judged".into())));
        assert!(!st.deployments.contains_key(&("p".into(), "bad".into())));
        // Both show up again: "judged" is not judged again, "bad" is still no target.
        st.apply(&deploy("judged", None, "succeeded", now, now));
        st.apply(&deploy("bad", None, "succeeded", now, now));
        assert!(st.deployments[&("p".into(), "judged".into())].is_concluded("r"));
        assert!(st.deployments[&("p".into(), "bad".into())]
            .unsafe_reason()
            .is_some());
    }

    #[test]
    fn samples_are_capped_per_series_and_in_all() {
        let now = Utc::now();
        let mut st = state(now);
        st.retention.max_series_samples = 100;
        st.retention.max_samples = 1000;
        st.apply(&deploy("a", None, "succeeded", now, now));
        for k in 0..500 {
            st.apply(&check("a", "production", "error_rate", 0.01, now, now, k));
        }
        assert_eq!(st.stats().samples, 100);
        assert_eq!(st.stats().samples_dropped, 400);
        // Samples after the window's end are never kept.
        st.apply(&check(
            "a",
            "production",
            "error_rate",
            0.01,
            now + D::minutes(11),
            now,
            999,
        ));
        assert_eq!(st.stats().samples, 100);
        // Many deployments not yet succeeded, each with samples: the total stays capped.
        for i in 0..100 {
            for k in 0..50 {
                st.apply(&check(
                    &format!("pending{i}"),
                    "production",
                    "error_rate",
                    0.01,
                    now,
                    now,
                    k,
                ));
            }
            assert!(st.stats().samples <= 1000);
        }
        // The open window kept its samples: the pending ones went first.
        let a = &st.deployments[&("p".into(), "a".into())];
        assert_eq!(a.sample_count(), 100);
    }

    #[test]
    fn a_snapshot_image_restores_the_same_state() {
        let now = Utc::now();
        let mut st = state(now);
        st.retention.max_deployments = 50;
        for i in 0..80 {
            feed(&mut st, i, now, now - D::milliseconds(100 - i as i64));
        }
        st.apply(&deploy("x", Some("d79"), "succeeded", now, now));
        st.apply(&event(
            "x/smoke".into(),
            Kind::Check,
            "production",
            "x",
            now,
            now,
            json!({"name": "smoke", "passed": false}),
        ));
        let start = ev(
            json!({"id": "rule/r/x/degraded", "kind": "decision", "source": SOURCE,
            "project": "p", "env": "production", "deployment_id": "x", "time": format_rfc3339(&now),
            "data": {"rule": "r", "rule_kind": "rollback", "verdict": "degraded", "phase": "start",
                     "dry_run": false}}),
        );
        st.apply(&start);
        let migration = ev(
            json!({"id": "m1", "kind": "migration", "source": "ci", "project": "p",
            "env": "production", "time": format_rfc3339(&now),
            "data": {"status": "failed", "database": "main", "version": "7", "error": "boom"}}),
        );
        st.apply(&migration);
        let alert = ev(
            json!({"id": "rule/mf/ci/m1/alert", "kind": "decision", "source": SOURCE,
            "project": "p", "time": format_rfc3339(&now),
            "data": {"rule": "mf", "rule_kind": "migration_failed", "verdict": "alert", "phase": "final"}}),
        );
        st.apply(&alert);
        let budget = ev(
            json!({"id": "rule/b/2026-11/80", "kind": "decision", "source": SOURCE,
            "project": "p", "time": format_rfc3339(&now),
            "data": {"rule": "b", "rule_kind": "budget", "verdict": "alert", "level": 80,
                     "month": now.format("%Y-%m").to_string()}}),
        );
        st.apply(&budget);
        assert!(!st.tombstones.is_empty(), "the cap left tombstones");

        let bytes = serde_json::to_vec(&st.image()).unwrap();
        let back = State::from_image(
            serde_json::from_slice(&bytes).unwrap(),
            st.retention.clone(),
        );
        assert_eq!(back.stats(), st.stats());
        assert_eq!(back.seq, st.seq);
        let json = |s: &State| {
            let mut v: Vec<Value> = s
                .deployments
                .values()
                .map(|d| serde_json::to_value(d).unwrap())
                .collect();
            v.sort_by_key(|d| d.to_string());
            v
        };
        assert_eq!(json(&back), json(&st));
        let gate = |s: &State| serde_json::to_value(s.gate("p", "production", &rules())).unwrap();
        assert_eq!(gate(&back), gate(&st));
        assert_eq!(gate(&back)["safe"], json!(false)); // the failed migration, the rollback
        assert_eq!(back.alerted.len(), 1);
        assert_eq!(back.budget_fired, st.budget_fired);
        assert_eq!(back.tombstones.len(), st.tombstones.len());
        assert_eq!(back.last_rollback, st.last_rollback);
        assert_eq!(back.live, st.live);
        assert_eq!(back.pending_failed_migrations.len(), 1);
        assert_eq!(
            back.pending_failed_migrations[0].received,
            st.pending_failed_migrations[0].received
        );
        let x = &back.deployments[&("p".into(), "x".into())];
        assert!(x.rollback_started && x.is_concluded("r"));
        assert!(back.failed_smoke(x, D::minutes(10)).is_some());
    }

    #[test]
    fn an_older_threshold_decision_read_back_changes_nothing() {
        let mut st = State::default();
        let now = Utc::now();
        let th = |verdict: &str, t: DateTime<Utc>| {
            ev(
                json!({"id": format!("rule/t/{}/{verdict}", format_rfc3339(&t)), "kind": "decision", "source": SOURCE,
                      "project": "p", "time": format_rfc3339(&t),
                      "data": {"rule": "t", "rule_kind": "threshold", "verdict": verdict, "phase": "final"}}),
            )
        };
        let alert = th("alert", now);
        let healthy = th("healthy", now + D::seconds(60));
        st.apply(&alert);
        st.apply(&healthy);
        st.apply(&alert); // read back from the log after the newer one was applied
        assert_eq!(st.thresholds["t"].verdict, "healthy");
        st.apply(&healthy);
        assert_eq!(st.thresholds["t"].verdict, "healthy");
    }
}
