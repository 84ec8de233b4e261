//! The engine: tails the log, keeps [`State`], judges windows, writes decisions, runs
//! actions, and runs the cron rules.
//!
//! - [`tail`]: reading the log into the state;
//! - [`plan`]: deciding what to do (no I/O, under the state's lock);
//! - [`cron`]: threshold and budget rules on their schedules;
//! - this module: the main loop, writing decisions and running actions.

pub mod cron;
pub mod plan;
mod poll;
pub(crate) mod tail;

pub use poll::ErrorCounts;

use crate::action;
use crate::config::{Action, Rule, RuleSpec, RulesSettings};
use crate::decision::{DecisionData, Phase, Verdict};
use crate::error::RulesError;
use crate::judge::MetricVerdict;
use crate::judgement::{assess, Assessment};
use crate::snapshot::{self, Position};
use crate::state::{GateReport, Judging, JudgingMetric, Retention, State, StateStats};
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use plan::{Intent, JudgeCache, Planned, Planner};
use serde_json::{json, Value};
use shiplog_events::{format_rfc3339, Event, Origin};
use shiplog_ingest::Ingestor;
use shiplog_log::{Log, Offset, Partition};
use shiplog_store::QueryEngine;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

struct Inner {
    rules: Vec<Rule>,
    settings: RulesSettings,
    state: Mutex<State>,
    judged: Mutex<JudgeCache>,
    ingestor: Arc<Ingestor>,
    query: Option<Arc<QueryEngine>>,
    started_at: DateTime<Utc>,
    ready: AtomicBool,
    /// The environment of command actions: without `SHIPLOG_*`, the webhooks' `secret_env`
    /// and `settings.hide_env`.
    action_env: action::ActionEnv,
    /// The state's snapshot: its directory and fingerprint.
    snapshot: Option<(PathBuf, String)>,
    /// Where the start resumed reading from a snapshot (None: from the log's start).
    resumed: Mutex<Option<Vec<(Partition, Offset)>>>,
    /// A snapshot is being written.
    saving: Arc<AtomicBool>,
    /// Requests for a snapshot now ([`RulesEngine::snapshot_now`]), answered by the main
    /// loop once it is written.
    snapshot_requests: mpsc::Sender<oneshot::Sender<()>>,
    /// The last backtest of the current rules (the decisions page), and when it ran.
    shadow: tokio::sync::Mutex<Option<(std::time::Instant, Arc<crate::backtest::BacktestReport>)>>,
    /// Failed reads of the rules' sources, for `/metrics`.
    source_errors: Mutex<poll::ErrorCounts>,
}

/// A running rules engine: its state answers the gate and the deployment page.
#[derive(Clone)]
pub struct RulesEngine {
    inner: Arc<Inner>,
}

pub(crate) enum Msg {
    /// Events of a partition (those the state can use), and where reading stands after
    /// them.
    Events {
        events: Vec<Event>,
        position: Position,
    },
    CaughtUp,
}

/// How often the state's snapshot is replaced (when it changed).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

/// A rule's view of one deployment, for the deployment page: the decision it wrote, or
/// where its judgement stands now.
#[derive(Debug, Clone)]
pub struct RuleView {
    pub rule: String,
    pub dry_run: bool,
    /// In words, e.g. "judging, 3 of 5 samples".
    pub status: String,
    pub assessment: Assessment,
}

impl RulesEngine {
    /// Starts the engine: rebuilds its state from the log (from its snapshot and the log
    /// after it when there is a usable one, else from the log's start), then follows it.
    /// Fails when a webhook's secret variable is not set.
    pub fn start(
        rules: Vec<Rule>,
        settings: RulesSettings,
        ingestor: Arc<Ingestor>,
        query: Option<Arc<QueryEngine>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<RulesEngine, RulesError> {
        for r in &rules {
            if let Some(Action::Webhook {
                secret_env: Some(var),
                ..
            }) = &r.action
            {
                if std::env::var(var).map(|s| s.is_empty()).unwrap_or(true) {
                    return Err(RulesError::MissingSecret {
                        rule: r.name().to_string(),
                        var: var.clone(),
                    });
                }
            }
        }
        let mut source_secrets = Vec::new();
        for r in &rules {
            for m in r.rollback().map_or(&[][..], |s| &s.metrics[..]) {
                for var in m.source.iter().flat_map(|s| s.secret_envs()) {
                    if std::env::var(&var).map(|s| s.is_empty()).unwrap_or(true) {
                        return Err(RulesError::MissingSourceSecret {
                            rule: r.name().to_string(),
                            var,
                        });
                    }
                    source_secrets.push(var);
                }
            }
        }
        let webhook_secrets = rules.iter().filter_map(|r| match &r.action {
            Some(Action::Webhook { secret_env, .. }) => secret_env.clone(),
            _ => None,
        });
        let action_env = action::ActionEnv::new(
            settings
                .hide_env
                .iter()
                .cloned()
                .chain(webhook_secrets)
                .chain(source_secrets)
                .collect::<Vec<_>>(),
        );
        let started_at = Utc::now();
        let retention = Retention::for_rules(&rules, &settings, started_at);
        let snapshot = settings
            .state_dir
            .clone()
            .map(|dir| (dir, snapshot::fingerprint(&retention, settings.catch_up)));
        let mut state = State::new(retention.clone());
        state.set_prices(settings.prices.clone());
        let (snapshot_requests, requests) = mpsc::channel(4);
        let engine = RulesEngine {
            inner: Arc::new(Inner {
                action_env,
                snapshot,
                resumed: Mutex::new(None),
                saving: Arc::new(AtomicBool::new(false)),
                snapshot_requests,
                shadow: tokio::sync::Mutex::new(None),
                source_errors: Mutex::new(poll::ErrorCounts::new()),
                rules,
                settings,
                state: Mutex::new(state),
                judged: Mutex::new(JudgeCache::default()),
                ingestor,
                query,
                started_at,
                ready: AtomicBool::new(false),
            }),
        };
        let log = engine.inner.ingestor.log().clone();
        tokio::spawn(
            engine
                .clone()
                .run(log, retention, requests, shutdown.clone()),
        );
        if engine.has_sources() {
            tokio::spawn(engine.clone().poll_loop(shutdown.clone()));
        }
        for (i, r) in engine.inner.rules.iter().enumerate() {
            if r.schedule().is_some() {
                tokio::spawn(engine.clone().cron_loop(i, shutdown.clone()));
            }
        }
        info!(rules = engine.inner.rules.len(), "rules engine started");
        Ok(engine)
    }

    /// Resumes from the snapshot when it may be used (else starts from an empty state),
    /// reads every partition from where the state stands, and runs the main loop.
    async fn run(
        self,
        log: Arc<dyn Log>,
        retention: Retention,
        requests: mpsc::Receiver<oneshot::Sender<()>>,
        shutdown: watch::Receiver<bool>,
    ) {
        let mut positions: BTreeMap<Partition, Position> = BTreeMap::new();
        if let Some((dir, fingerprint)) = &self.inner.snapshot {
            match snapshot::load(dir, fingerprint, &retention, log.as_ref()).await {
                Ok((mut state, saved)) => {
                    info!(
                        deployments = state.stats().deployments,
                        positions = ?saved.iter().map(|p| (p.partition, p.offset)).collect::<Vec<_>>(),
                        "rules state resumed from its snapshot; reading the log from there"
                    );
                    state.set_prices(self.inner.settings.prices.clone());
                    *self.inner.state.lock().unwrap() = state;
                    *self.inner.resumed.lock().unwrap() =
                        Some(saved.iter().map(|p| (p.partition, p.offset)).collect());
                    positions = saved.into_iter().map(|p| (p.partition, p)).collect();
                }
                Err(why) => info!(
                    reason = %why,
                    "rules state snapshot not used: rebuilding the state from the whole log"
                ),
            }
        }
        // Few batches in flight: decoded events waiting here are memory too.
        let (tx, rx) = mpsc::channel(8);
        let partitions = log.partitions();
        for p in &partitions {
            let from = positions.get(p).map_or(0, |x| x.offset);
            tokio::spawn(tail::forward(
                log.clone(),
                *p,
                from,
                retention.clone(),
                tx.clone(),
                shutdown.clone(),
            ));
        }
        drop(tx);
        self.main_loop(rx, requests, partitions.len(), positions, shutdown)
            .await;
    }

    /// Where this start resumed reading the log from the snapshot, per partition (None: it
    /// read the whole log).
    pub fn resumed_from(&self) -> Option<Vec<(Partition, Offset)>> {
        self.inner.resumed.lock().unwrap().clone()
    }

    /// Replaces the snapshot with the state and `positions` (encoded and written on a
    /// blocking thread; skipped while the previous one is still being written). False when
    /// skipped.
    async fn save_snapshot(&self, positions: &BTreeMap<Partition, Position>, wait: bool) -> bool {
        let Some((dir, fingerprint)) = self.inner.snapshot.clone() else {
            return false;
        };
        if self.inner.saving.swap(true, Ordering::AcqRel) {
            return false;
        }
        let image = self.inner.state.lock().unwrap().image();
        let positions: Vec<Position> = positions.values().cloned().collect();
        let saving = self.inner.saving.clone();
        let task = tokio::task::spawn_blocking(move || {
            let r = snapshot::encode(&fingerprint, &positions, image)
                .and_then(|bytes| snapshot::write(&dir, &bytes).map_err(|e| e.to_string()));
            saving.store(false, Ordering::Release);
            if let Err(e) = r {
                warn!(error = %e, dir = %dir.display(), "cannot write the rules state snapshot (the next start reads the whole log)");
            }
        });
        if wait {
            let _ = task.await;
        }
        true
    }

    /// [`Self::save_snapshot`], after the write still running (a periodic one) if any,
    /// and waits for it. False when there is no snapshot directory.
    async fn save_snapshot_waiting(&self, positions: &BTreeMap<Partition, Position>) -> bool {
        while self.inner.snapshot.is_some() {
            if self.save_snapshot(positions, true).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Writes the snapshot now, with the state as far as the engine has read the log, and
    /// returns once it is on disk (or was current already, or the engine is not ready or
    /// has no snapshot directory). Log retention asks for it when the snapshot is what
    /// keeps it from removing segments: the periodic one is only written every
    /// [`SNAPSHOT_EVERY`]. Cheap when the state did not change: only the positions move.
    pub async fn snapshot_now(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.snapshot_requests.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether the state was rebuilt from the log (the gate answers 503 before).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// How much the state holds (for `/metrics`).
    pub fn stats(&self) -> StateStats {
        self.inner.state.lock().unwrap().stats()
    }

    /// The rules, as configured.
    pub fn rules(&self) -> &[Rule] {
        &self.inner.rules
    }

    pub fn settings(&self) -> &RulesSettings {
        &self.inner.settings
    }

    /// The gate report of a project/env, with the deployments still being judged.
    pub fn gate(&self, project: &str, env: &str) -> GateReport {
        let st = self.inner.state.lock().unwrap();
        let mut report = st.gate(project, env, &self.inner.rules);
        let now = Utc::now();
        for (rule, a) in self.judging(&st, Some(project), Some(env), None, now) {
            let d = &a.1;
            report.judging.push(Judging {
                rule: rule.to_string(),
                deployment_id: d.clone(),
                window_ends: a.0.window.end(),
                metrics: a
                    .0
                    .judgement
                    .metrics
                    .iter()
                    .map(|m| JudgingMetric {
                        metric: m.metric.clone(),
                        samples: m.samples + m.outliers.len(),
                        min_samples: m.min_samples,
                    })
                    .collect(),
                status: judging_status(&a.0),
            });
        }
        report
    }

    /// The open windows of `project`/`env` (or of one deployment) and their judgement now.
    fn judging<'a>(
        &'a self,
        st: &State,
        project: Option<&str>,
        env: Option<&str>,
        deployment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Vec<(&'a str, (Assessment, String))> {
        let mut out = Vec::new();
        for rule in &self.inner.rules {
            let RuleSpec::Rollback(spec) = &rule.spec else {
                continue;
            };
            if project.is_some_and(|p| rule.project != p)
                || env.is_some_and(|e| rule.env.as_deref() != Some(e))
            {
                continue;
            }
            for d in st.open_candidates(rule.name(), &rule.project, rule.env.as_deref()) {
                if deployment.is_some_and(|x| x != d.id)
                    || st.superseded(&d)
                    || d.failed
                    || d.rolled_back
                {
                    continue;
                }
                if let Some(a) = assess(spec, st, &d, now) {
                    if a.judgement.verdict == MetricVerdict::Judging {
                        out.push((rule.name(), (a, d.id.clone())));
                    }
                }
            }
        }
        out
    }

    /// Backtests the current rules, or the `candidate` rule set (TOML), over the log.
    pub async fn backtest(
        &self,
        candidate: Option<&str>,
        opts: &crate::backtest::BacktestOptions,
    ) -> Result<crate::backtest::BacktestReport, RulesError> {
        let (rules, settings) = match candidate {
            Some(text) => crate::backtest::candidate(text, &self.inner.settings)?,
            None => (self.inner.rules.clone(), self.inner.settings.clone()),
        };
        if let Some(name) = &opts.rule {
            if !rules.iter().any(|r| r.name() == name) {
                return Err(RulesError::config(
                    "backtest",
                    "rule",
                    format!("no rule named {name:?}"),
                ));
            }
        }
        let log = self.inner.ingestor.log().clone();
        Ok(crate::backtest::run_log(log.as_ref(), &rules, &settings, opts).await?)
    }

    /// The backtest of the current rules over the deployments of the last 90 days, run
    /// again when the last one is older than `max_age` (the decisions page: a page load
    /// does not read the whole log each time).
    pub async fn shadow_backtest(
        &self,
        max_age: Duration,
    ) -> Result<Arc<crate::backtest::BacktestReport>, RulesError> {
        let mut held = self.inner.shadow.lock().await;
        if let Some((at, report)) = held.as_ref() {
            if at.elapsed() < max_age {
                return Ok(report.clone());
            }
        }
        let now = Utc::now();
        let opts = crate::backtest::BacktestOptions {
            since: Some(now - chrono::Duration::days(90)),
            rule: None,
            now,
        };
        let report = Arc::new(self.backtest(None, &opts).await?);
        *held = Some((std::time::Instant::now(), report.clone()));
        Ok(report)
    }

    /// The rollback rules in dry run (per rule or globally), for the decisions page.
    pub fn dry_run_rules(&self) -> Vec<String> {
        self.inner
            .rules
            .iter()
            .filter(|r| {
                matches!(r.spec, RuleSpec::Rollback(_)) && r.is_dry_run(&self.inner.settings)
            })
            .map(|r| r.name().to_string())
            .collect()
    }

    /// Where each rollback rule's judgement of deployment `id` stands now, while its window
    /// is open (concluded ones are in their decisions); `project` narrows it.
    pub fn judging_now(&self, project: Option<&str>, id: &str) -> Vec<RuleView> {
        let st = self.inner.state.lock().unwrap();
        let now = Utc::now();
        self.judging(&st, project, None, Some(id), now)
            .into_iter()
            .map(|(rule, (assessment, _))| RuleView {
                rule: rule.to_string(),
                dry_run: self
                    .inner
                    .rules
                    .iter()
                    .find(|r| r.name() == rule)
                    .is_some_and(|r| r.is_dry_run(&self.inner.settings)),
                status: judging_status(&assessment),
                assessment,
            })
            .collect()
    }

    async fn main_loop(
        self,
        mut rx: mpsc::Receiver<Msg>,
        mut requests: mpsc::Receiver<oneshot::Sender<()>>,
        partitions: usize,
        mut positions: BTreeMap<Partition, Position>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut caught_up = 0;
        if partitions == 0 {
            self.inner.ready.store(true, Ordering::Release);
        }
        let mut tick = tokio::time::interval(self.inner.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snapshot_tick = tokio::time::interval(SNAPSHOT_EVERY);
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // (state seq, positions) of the last snapshot written.
        let mut saved: Option<(u64, BTreeMap<Partition, Position>)> = None;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => break,
                    Some(Msg::Events { events, position }) => {
                        {
                            let mut st = self.inner.state.lock().unwrap();
                            for e in &events {
                                st.apply(e);
                            }
                        }
                        positions.insert(position.partition, position);
                        if self.is_ready() {
                            self.evaluate().await;
                        }
                    }
                    Some(Msg::CaughtUp) => {
                        caught_up += 1;
                        if caught_up == partitions {
                            let stats = {
                                let mut st = self.inner.state.lock().unwrap();
                                st.tick(Utc::now());
                                st.sweep();
                                st.stats()
                            };
                            self.inner.ready.store(true, Ordering::Release);
                            info!(
                                deployments = stats.deployments,
                                samples = stats.samples,
                                "rules state caught up with the log"
                            );
                            self.close_interrupted().await;
                            self.evaluate().await;
                            let seq = self.inner.state.lock().unwrap().seq();
                            if self.save_snapshot(&positions, false).await {
                                saved = Some((seq, positions.clone()));
                            }
                        }
                    }
                },
                _ = snapshot_tick.tick() => {
                    let seq = self.inner.state.lock().unwrap().seq();
                    let changed = saved.as_ref().is_none_or(|(s, p)| *s != seq || *p != positions);
                    if self.is_ready() && changed && self.save_snapshot(&positions, false).await {
                        saved = Some((seq, positions.clone()));
                    }
                }
                Some(reply) = requests.recv() => {
                    let seq = self.inner.state.lock().unwrap().seq();
                    let changed = saved.as_ref().is_none_or(|(s, p)| *s != seq || *p != positions);
                    if self.is_ready() && changed && self.save_snapshot_waiting(&positions).await {
                        saved = Some((seq, positions.clone()));
                    }
                    let _ = reply.send(());
                }
                _ = tick.tick() => {
                    if self.is_ready() {
                        // Once live, the state expires on the wall clock.
                        self.inner.state.lock().unwrap().tick(Utc::now());
                        self.evaluate().await;
                    }
                }
                _ = shutdown.changed() => {
                    if self.is_ready() {
                        self.save_snapshot_waiting(&positions).await;
                    }
                    break;
                }
            }
        }
    }

    /// Rollback actions that were started but have no outcome in the log: shiplog stopped
    /// while they ran. They are never run again; their outcome is recorded as interrupted.
    async fn close_interrupted(&self) {
        let open = self.inner.state.lock().unwrap().unfinished_rollbacks();
        for r in open {
            let Some(rule) = self.inner.rules.iter().find(|x| x.name() == r.rule) else {
                continue;
            };
            let mut data = DecisionData::new(rule, Verdict::Degraded);
            data.phase = Phase::Outcome;
            data.outcome = Some(
                "unknown: interrupted (shiplog stopped while the action ran); not repeated".into(),
            );
            let planned = Planned {
                id: format!("rule/{}/{}/degraded/outcome", rule.name(), r.deployment_id),
                data,
                project: r.project.clone(),
                env: r.env.clone(),
                deployment_id: Some(r.deployment_id.clone()),
            };
            warn!(rule = %r.rule, deployment = %r.deployment_id, "a rollback was interrupted by a restart; not repeating it");
            let _ = self.write(vec![planned.event()]).await;
        }
    }

    /// Writes events through the ingestor (dedup on (source, id)), then applies them.
    async fn write(&self, values: Vec<Value>) -> Result<(), RulesError> {
        let mut events = Vec::with_capacity(values.len());
        for v in values {
            events.push(
                Event::from_json(v, Origin::Internal)
                    .map_err(|e| RulesError::InvalidEvent(e.to_string()))?,
            );
        }
        let now = Utc::now();
        self.inner
            .ingestor
            .ingest(events.clone())
            .await
            .map_err(|e| RulesError::Write(e.to_string()))?;
        let mut st = self.inner.state.lock().unwrap();
        for mut e in events {
            e.received_at.get_or_insert(now);
            st.apply(&e);
        }
        Ok(())
    }

    /// Writes events through the ingestor only: the state reads them back from the log
    /// (checks, unlike decisions, are not idempotent to apply, and a point read again is a
    /// duplicate that ingest drops).
    async fn ingest_only(&self, values: Vec<Value>) -> Result<(), RulesError> {
        let mut events = Vec::with_capacity(values.len());
        for v in values {
            events.push(
                Event::from_json(v, Origin::Internal)
                    .map_err(|e| RulesError::InvalidEvent(e.to_string()))?,
            );
        }
        self.inner
            .ingestor
            .ingest(events)
            .await
            .map_err(|e| RulesError::Write(e.to_string()))?;
        Ok(())
    }

    /// Writes `values`, in 10 tries at most: 200 ms doubled up to 6.4 s between them, with
    /// jitter.
    async fn write_retrying(&self, values: Vec<Value>) {
        let mut waits = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_millis(6400))
            .with_max_times(9)
            .with_jitter()
            .build();
        for attempt in 1u32.. {
            let Err(e) = self.write(values.clone()).await else {
                return;
            };
            let Some(wait) = waits.next() else {
                error!(error = %e, attempt, "giving up writing a rules decision");
                return;
            };
            error!(error = %e, attempt, "cannot write a rules decision; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn evaluate(&self) {
        let intents = {
            let mut st = self.inner.state.lock().unwrap();
            let mut cache = self.inner.judged.lock().unwrap();
            let planner = Planner {
                rules: &self.inner.rules,
                settings: &self.inner.settings,
                oldest: self.inner.started_at
                    - crate::state::chrono_dur(self.inner.settings.catch_up),
            };
            planner.plan(&mut st, Utc::now(), &mut cache)
        };
        if let Err(e) = self.execute(intents).await {
            error!(error = %e, "cannot write a rules decision; will retry");
        }
    }

    /// Writes each intent's decision; for an action, its start decision is durable before
    /// the action runs (a crash between them is visible, no outcome, and never repeats it).
    async fn execute(&self, intents: Vec<Intent>) -> Result<(), RulesError> {
        let mut first_error = None;
        for intent in intents {
            match intent {
                Intent::Write(p) => {
                    if let Err(e) = self.write(vec![p.event()]).await {
                        first_error.get_or_insert(e);
                    }
                }
                Intent::Act {
                    rule,
                    start,
                    argv,
                    body,
                    outcome,
                    on_success,
                } => {
                    if let Err(e) = self.write(vec![start.event()]).await {
                        error!(error = %e, "cannot write a rollback decision; the action does not run now");
                        first_error.get_or_insert(e);
                        continue;
                    }
                    let engine = self.clone();
                    tokio::spawn(async move {
                        engine
                            .run_action(rule, argv, body, outcome, on_success)
                            .await;
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn run_action(
        &self,
        rule: usize,
        argv: Vec<String>,
        body: Value,
        mut outcome: Planned,
        on_success: Option<Value>,
    ) {
        let r = &self.inner.rules[rule];
        let Some(action) = &r.action else { return };
        let report = action::run(action, &argv, &body, &outcome.id, &self.inner.action_env).await;
        info!(rule = %r.name(), outcome = %report.outcome, attempts = report.attempts, "action finished");
        let d = &mut outcome.data;
        d.outcome = Some(report.outcome.clone());
        d.attempts = Some(report.attempts);
        d.output_tail = Some(report.output_tail.clone());
        d.duration_ms = Some(report.duration.as_millis() as u64);
        d.exit_code = report.exit_code;
        let mut values = vec![outcome.event()];
        if report.ok {
            if let Some(mut ev) = on_success {
                ev["time"] = json!(format_rfc3339(&Utc::now()));
                values.push(ev);
            }
        }
        self.write_retrying(values).await;
    }
}

/// "judging, 3 of 5 samples" (the metric furthest from its minimum), or "judging: …" once
/// every metric has its minimum.
fn judging_status(a: &Assessment) -> String {
    let short = a
        .judgement
        .metrics
        .iter()
        .map(|m| (m.samples + m.outliers.len(), m.min_samples))
        .filter(|(n, min)| n < min)
        .min_by_key(|(n, min)| (*n as i64) - (*min as i64));
    match short {
        Some((n, min)) => format!("judging, {n} of {min} samples"),
        None => "judging: enough samples, no credible degradation yet".to_string(),
    }
}
