//! The engine: tails the log, keeps [`State`], judges windows, writes decisions, runs
//! actions, and runs the cron rules.

use crate::action::{self, display_argv, render_argv};
use crate::config::{Action, Rule, RuleKind, RulesSettings};
use crate::snapshot::{self, Position};
use crate::state::{
    judge, Deployment, GateReport, MigrationRec, Retention, State, StateStats, Verdict, SOURCE,
};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use shiplog_events::{format_rfc3339, Event, Kind, Origin};
use shiplog_ingest::Ingestor;
use shiplog_log::{Log, LogError, Offset, Partition};
use shiplog_store::QueryEngine;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

struct Inner {
    rules: Vec<Rule>,
    settings: RulesSettings,
    state: Mutex<State>,
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
}

/// A running rules engine: its state answers the gate.
#[derive(Clone)]
pub struct RulesEngine {
    inner: Arc<Inner>,
}

enum Msg {
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

/// What one evaluation decided to do.
#[allow(clippy::large_enum_variant)]
enum Intent {
    /// Write these events; nothing runs.
    Write(Vec<Value>),
    /// Write the start decision, then run the action and write its outcome.
    Act {
        rule: usize,
        start: Value,
        argv: Vec<String>,
        body: Value,
        /// The outcome decision (data completed after the run).
        outcome: Value,
        /// Written when the action succeeded (rollbacks: the `rolled_back` deploy event).
        on_success: Option<Value>,
    },
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Builds a decision event (as JSON, validated on write).
fn decision(
    id: String,
    rule: &Rule,
    project: &str,
    env: Option<&str>,
    deployment_id: Option<&str>,
    data: Map<String, Value>,
) -> Value {
    let mut d = Map::new();
    d.insert("rule".into(), json!(rule.name()));
    d.insert("rule_kind".into(), json!(rule.cfg.kind.as_str()));
    d.extend(data);
    let mut e = json!({
        "id": id,
        "kind": "decision",
        "source": SOURCE,
        "time": format_rfc3339(&Utc::now()),
        "project": project,
        "data": d,
    });
    if let Some(env) = env {
        e["env"] = json!(env);
    }
    if let Some(dep) = deployment_id {
        e["deployment_id"] = json!(dep);
    }
    e
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<f64>) {
    if let Some(v) = v.filter(|v| v.is_finite()) {
        m.insert(k.into(), json!(v));
    }
}

/// When the cooldown of a project/env ends, if it is running at `now`.
pub fn cooldown_until(
    state: &State,
    project: &str,
    env: &str,
    cooldown: Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let last = state
        .last_rollback
        .get(&(project.to_string(), env.to_string()))?;
    let until = *last + chrono_dur(cooldown);
    (now < until).then_some(until)
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
    ) -> Result<RulesEngine, String> {
        for r in &rules {
            if let Some(Action::Webhook {
                secret_env: Some(var),
                ..
            }) = &r.action
            {
                if std::env::var(var).map(|s| s.is_empty()).unwrap_or(true) {
                    return Err(format!(
                        "rule {}: action.secret_env: environment variable {var} is not set",
                        r.name()
                    ));
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
                .collect::<Vec<_>>(),
        );
        let started_at = Utc::now();
        let retention = Retention::for_rules(&rules, &settings, started_at);
        let snapshot = settings
            .state_dir
            .clone()
            .map(|dir| (dir, snapshot::fingerprint(&retention, settings.catch_up)));
        let engine = RulesEngine {
            inner: Arc::new(Inner {
                action_env,
                snapshot,
                resumed: Mutex::new(None),
                saving: Arc::new(AtomicBool::new(false)),
                rules,
                settings,
                state: Mutex::new(State::new(retention.clone())),
                ingestor,
                query,
                started_at,
                ready: AtomicBool::new(false),
            }),
        };
        let log = engine.inner.ingestor.log().clone();
        tokio::spawn(engine.clone().run(log, retention, shutdown.clone()));
        for (i, r) in engine.inner.rules.iter().enumerate() {
            if r.schedule.is_some() {
                tokio::spawn(engine.clone().cron_loop(i, shutdown.clone()));
            }
        }
        info!(rules = engine.inner.rules.len(), "rules engine started");
        Ok(engine)
    }

    /// Resumes from the snapshot when it may be used (else starts from an empty state),
    /// reads every partition from where the state stands, and runs the main loop.
    async fn run(self, log: Arc<dyn Log>, retention: Retention, shutdown: watch::Receiver<bool>) {
        let mut positions: BTreeMap<Partition, Position> = BTreeMap::new();
        if let Some((dir, fingerprint)) = &self.inner.snapshot {
            match snapshot::load(dir, fingerprint, &retention, log.as_ref()).await {
                Ok((state, saved)) => {
                    info!(
                        deployments = state.stats().deployments,
                        positions = ?saved.iter().map(|p| (p.partition, p.offset)).collect::<Vec<_>>(),
                        "rules state resumed from its snapshot; reading the log from there"
                    );
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
            tokio::spawn(forward(
                log.clone(),
                *p,
                from,
                retention.clone(),
                tx.clone(),
                shutdown.clone(),
            ));
        }
        drop(tx);
        self.main_loop(rx, partitions.len(), positions, shutdown)
            .await;
    }

    /// Where this start resumed reading the log from the snapshot, per partition (None: it
    /// read the whole log).
    pub fn resumed_from(&self) -> Option<Vec<(Partition, Offset)>> {
        self.inner.resumed.lock().unwrap().clone()
    }

    /// Replaces the snapshot with the state and `positions` (encoded and written on a
    /// blocking thread; skipped while the previous one is still being written).
    async fn save_snapshot(&self, positions: &BTreeMap<Partition, Position>, wait: bool) {
        let Some((dir, fingerprint)) = self.inner.snapshot.clone() else {
            return;
        };
        if self.inner.saving.swap(true, Ordering::AcqRel) {
            return;
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
    }

    /// Whether the state was rebuilt from the log (the gate answers 503 before).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// How much the state holds (for `/metrics`).
    pub fn stats(&self) -> StateStats {
        self.inner.state.lock().unwrap().stats()
    }

    /// The engine's series in the Prometheus text format (for `/metrics`).
    pub fn render_metrics(&self) -> String {
        let s = self.stats();
        format!(
            "# HELP shiplog_rules_tracked_deployments Deployments the rules state holds (bounded, docs/rules.md).\n\
             # TYPE shiplog_rules_tracked_deployments gauge\nshiplog_rules_tracked_deployments {}\n\
             # HELP shiplog_rules_samples Check samples the rules state holds for open windows and baselines.\n\
             # TYPE shiplog_rules_samples gauge\nshiplog_rules_samples {}\n\
             # HELP shiplog_rules_samples_dropped_total Check samples not kept because of a cap (per deployment and check name, or in all).\n\
             # TYPE shiplog_rules_samples_dropped_total counter\nshiplog_rules_samples_dropped_total {}\n\
             # HELP shiplog_rules_open_windows_evicted_total Deployments forgotten under the deployment cap before a rule judged them.\n\
             # TYPE shiplog_rules_open_windows_evicted_total counter\nshiplog_rules_open_windows_evicted_total {}\n",
            s.deployments, s.samples, s.samples_dropped, s.open_evicted
        )
    }

    pub fn gate(&self, project: &str, env: &str) -> GateReport {
        self.inner
            .state
            .lock()
            .unwrap()
            .gate(project, env, &self.inner.rules)
    }

    async fn main_loop(
        self,
        mut rx: mpsc::Receiver<Msg>,
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
                            self.save_snapshot(&positions, false).await;
                            saved = Some((seq, positions.clone()));
                        }
                    }
                },
                _ = snapshot_tick.tick() => {
                    let seq = self.inner.state.lock().unwrap().seq();
                    let changed = saved.as_ref().is_none_or(|(s, p)| *s != seq || *p != positions);
                    if self.is_ready() && changed {
                        self.save_snapshot(&positions, false).await;
                        saved = Some((seq, positions.clone()));
                    }
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
                        self.save_snapshot(&positions, true).await;
                    }
                    break;
                }
            }
        }
    }

    /// Rollback actions that were started but have no outcome in the log: shiplog stopped
    /// while they ran. They are never run again; their outcome is recorded as interrupted.
    async fn close_interrupted(&self) {
        let open: Vec<_> = {
            let st = self.inner.state.lock().unwrap();
            st.rollbacks
                .values()
                .filter(|r| r.outcome.is_none())
                .cloned()
                .collect()
        };
        for r in open {
            let Some(rule) = self.inner.rules.iter().find(|x| x.name() == r.rule) else {
                continue;
            };
            let mut data = Map::new();
            data.insert("verdict".into(), json!("degraded"));
            data.insert("phase".into(), json!("outcome"));
            data.insert("dry_run".into(), json!(false));
            data.insert(
                "outcome".into(),
                json!("unknown: interrupted (shiplog stopped while the action ran); not repeated"),
            );
            let id = format!("rule/{}/{}/degraded/outcome", rule.name(), r.deployment_id);
            let ev = decision(
                id,
                rule,
                &r.project,
                r.env.as_deref(),
                Some(&r.deployment_id),
                data,
            );
            warn!(rule = %r.rule, deployment = %r.deployment_id, "a rollback was interrupted by a restart; not repeating it");
            let _ = self.write(vec![ev]).await;
        }
    }

    /// Writes events through the ingestor (dedup on (source, id)), then applies them.
    async fn write(&self, values: Vec<Value>) -> Result<(), String> {
        let mut events = Vec::with_capacity(values.len());
        for v in values {
            events.push(
                Event::from_json(v, Origin::Internal).map_err(|e| format!("invalid event: {e}"))?,
            );
        }
        let now = Utc::now();
        self.inner
            .ingestor
            .ingest(events.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut st = self.inner.state.lock().unwrap();
        for mut e in events {
            e.received_at.get_or_insert(now);
            st.apply(&e);
        }
        Ok(())
    }

    async fn write_retrying(&self, values: Vec<Value>) {
        for attempt in 0..10u32 {
            match self.write(values.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    error!(error = %e, attempt, "cannot write a rules decision; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(attempt.min(5))).await;
                }
            }
        }
        error!("giving up writing a rules decision");
    }

    async fn evaluate(&self) {
        let intents = {
            let mut st = self.inner.state.lock().unwrap();
            self.plan(&mut st, Utc::now())
        };
        for intent in intents {
            match intent {
                Intent::Write(values) => {
                    if let Err(e) = self.write(values).await {
                        error!(error = %e, "cannot write a rules decision; will retry");
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
                    // The start decision is durable before the action runs: a crash between
                    // them is visible (no outcome) and never repeats the action.
                    if let Err(e) = self.write(vec![start]).await {
                        error!(error = %e, "cannot write a rollback decision; the action does not run now");
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
    }

    async fn run_action(
        &self,
        rule: usize,
        argv: Vec<String>,
        body: Value,
        mut outcome: Value,
        on_success: Option<Value>,
    ) {
        let r = &self.inner.rules[rule];
        let Some(action) = &r.action else { return };
        let id = outcome["id"].as_str().unwrap_or("").to_string();
        let report = action::run(action, &argv, &body, &id, &self.inner.action_env).await;
        info!(rule = %r.name(), outcome = %report.outcome, attempts = report.attempts, "action finished");
        let d = outcome["data"].as_object_mut().unwrap();
        d.insert("outcome".into(), json!(report.outcome));
        d.insert("attempts".into(), json!(report.attempts));
        d.insert("output_tail".into(), json!(report.output_tail));
        d.insert(
            "duration_ms".into(),
            json!(report.duration.as_millis() as u64),
        );
        if let Some(c) = report.exit_code {
            d.insert("exit_code".into(), json!(c));
        }
        outcome["time"] = json!(format_rfc3339(&Utc::now()));
        let mut values = vec![outcome];
        if report.ok {
            if let Some(mut ev) = on_success {
                ev["time"] = json!(format_rfc3339(&Utc::now()));
                values.push(ev);
            }
        }
        self.write_retrying(values).await;
    }

    /// Decides what to do now (under the state lock; no I/O).
    fn plan(&self, st: &mut State, now: DateTime<Utc>) -> Vec<Intent> {
        let mut out = Vec::new();
        let settings = &self.inner.settings;
        let oldest = self.inner.started_at - chrono_dur(settings.catch_up);
        let mut starting: HashSet<(String, String)> = HashSet::new();
        // Failed migrations.
        let failed: Vec<MigrationRec> = st.take_failed_migrations();
        for (i, rule) in self.inner.rules.iter().enumerate() {
            if rule.cfg.kind != RuleKind::MigrationFailed {
                continue;
            }
            for m in &failed {
                if !rule.matches(&m.project, m.env.as_deref()) || m.time < oldest {
                    continue;
                }
                let id = format!("rule/{}/{}/{}/alert", rule.name(), m.source, m.id);
                if st.alerted.contains_key(&id) {
                    continue;
                }
                let mut data = Map::new();
                data.insert("verdict".into(), json!("alert"));
                data.insert("metric".into(), json!("migration_failed"));
                data.insert("samples".into(), json!(1));
                data.insert("migration_id".into(), json!(m.id));
                for (k, v) in [
                    ("database", &m.database),
                    ("version", &m.version),
                    ("name", &m.name),
                    ("error", &m.error),
                ] {
                    if let Some(v) = v {
                        data.insert(format!("migration_{k}"), json!(v));
                    }
                }
                data.insert(
                    "reason".into(),
                    json!(format!(
                        "migration {} failed",
                        m.version.as_deref().or(m.name.as_deref()).unwrap_or(&m.id)
                    )),
                );
                out.extend(self.alert_intent(i, id, &m.project, m.env.as_deref(), None, data, st));
            }
        }
        // Rollback windows.
        for (i, rule) in self.inner.rules.iter().enumerate() {
            if rule.cfg.kind != RuleKind::Rollback {
                continue;
            }
            let window = chrono_dur(rule.window());
            // The deployments this rule may still judge, oldest first (their facts: the
            // samples stay in the state).
            let mut candidates: Vec<Deployment> = st
                .deployments
                .values()
                .filter(|d| {
                    d.succeeded_at.is_some()
                        && rule.matches(&d.project, d.env.as_deref())
                        && !d.is_concluded(rule.name())
                })
                .map(Deployment::header)
                .collect();
            candidates.sort_by_key(|d| d.seq);
            for d in &candidates {
                let end = d
                    .succeeded_at
                    .and_then(|s| s.checked_add_signed(window))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                if end < oldest || d.rolled_back || d.failed || st.superseded(d) {
                    // Too old to judge, already rolled back, or no longer live: never act.
                    st.conclude(&d.project, &d.id, rule.name());
                    continue;
                }
                let rkey = (d.project.clone(), d.id.clone());
                if d.rollback_started
                    || st.rollbacks.contains_key(&rkey)
                    || starting.contains(&rkey)
                {
                    st.conclude(&d.project, &d.id, rule.name());
                    continue;
                }
                let prev = st.previous_of(d).map(Deployment::header);
                let values = st.window_values(d, rule.metric(), window);
                let baseline_values: Option<Vec<f64>> = prev.as_ref().map(|p| {
                    st.window_values(p, rule.metric(), window)
                        .into_iter()
                        .map(|v| v.0)
                        .collect()
                });
                let verdict = judge(
                    rule,
                    &values,
                    st.failed_smoke(d, window).as_ref(),
                    baseline_values.as_deref(),
                    now >= end,
                );
                let (name, eval) = match verdict {
                    Verdict::Wait => continue,
                    Verdict::Healthy(e) => ("healthy", e),
                    Verdict::Inconclusive(e) => ("inconclusive", e),
                    Verdict::Degraded(e) => ("degraded", e),
                };
                let mut data = Map::new();
                data.insert("verdict".into(), json!(name));
                data.insert("metric".into(), json!(eval.metric));
                put(&mut data, "value", eval.value);
                put(&mut data, "baseline", eval.baseline);
                put(&mut data, "threshold", eval.threshold);
                data.insert("samples".into(), json!(eval.samples));
                if let Some(n) = eval.baseline_samples {
                    data.insert("baseline_samples".into(), json!(n));
                }
                data.insert("aggregate".into(), json!(rule.aggregate().as_str()));
                data.insert("window_ms".into(), json!(rule.window().as_millis() as u64));
                data.insert("reason".into(), json!(eval.reason));
                data.insert("decided_at".into(), json!(format_rfc3339(&now)));
                if let Some(t) = eval.deciding_time {
                    data.insert("deciding_sample_time".into(), json!(format_rfc3339(&t)));
                }
                if let Some(p) = &prev {
                    data.insert("previous_deployment_id".into(), json!(p.id));
                }
                let dry = rule.cfg.dry_run || settings.dry_run;
                data.insert("dry_run".into(), json!(dry));
                let id = format!("rule/{}/{}/{name}", rule.name(), d.id);
                let env = d.env.clone().unwrap_or_default();
                let ev = |data: Map<String, Value>| {
                    decision(
                        id.clone(),
                        rule,
                        &d.project,
                        d.env.as_deref(),
                        Some(&d.id),
                        data,
                    )
                };
                if name != "degraded" {
                    data.insert("phase".into(), json!("final"));
                    out.push(Intent::Write(vec![ev(data)]));
                    st.conclude(&d.project, &d.id, rule.name());
                    continue;
                }
                // Degraded: decide whether and how to act.
                let cooldown = rule.cfg.cooldown.unwrap_or(settings.cooldown);
                let skip = if let Some(until) = cooldown_until(st, &d.project, &env, cooldown, now)
                {
                    Some(format!(
                        "skipped: cooldown until {} (a rollback of {}/{} ran recently)",
                        format_rfc3339(&until),
                        d.project,
                        env
                    ))
                } else {
                    match &prev {
                        None => Some("no_safe_target: no previous deployment is known".to_string()),
                        Some(p) => p
                            .unsafe_reason()
                            .map(|why| format!("no_safe_target: {why}")),
                    }
                };
                let mut vars: BTreeMap<&str, String> = BTreeMap::new();
                vars.insert("deployment_id", d.id.clone());
                vars.insert("project", d.project.clone());
                vars.insert("env", env.clone());
                vars.insert("rule", rule.name().to_string());
                if let Some(u) = &d.url {
                    vars.insert("url", u.clone());
                }
                if let Some(p) = &prev {
                    vars.insert("previous_deployment_id", p.id.clone());
                    if let Some(u) = &p.url {
                        vars.insert("previous_url", u.clone());
                    }
                }
                let action = rule
                    .action
                    .as_ref()
                    .expect("validated: rollback rules have an action");
                let rendered = match action {
                    Action::Command { argv, .. } => {
                        render_argv(argv, &vars).map(|a| (display_argv(&a), a))
                    }
                    Action::Webhook { url, .. } => Ok((url.clone(), Vec::new())),
                };
                if let Ok((shown, _)) = &rendered {
                    data.insert("action".into(), json!(shown));
                }
                let final_outcome = match (&skip, &rendered) {
                    (Some(s), _) => Some(s.clone()),
                    (None, Err(e)) => {
                        Some(format!("no_safe_target: cannot render the action: {e}"))
                    }
                    (None, Ok(_)) if dry => Some("dry_run".to_string()),
                    _ => None,
                };
                if let Some(o) = final_outcome {
                    data.insert("phase".into(), json!("final"));
                    data.insert("outcome".into(), json!(o));
                    info!(rule = %rule.name(), deployment = %d.id, outcome = %o, "degraded; no action");
                    out.push(Intent::Write(vec![ev(data)]));
                    st.conclude(&d.project, &d.id, rule.name());
                    continue;
                }
                let (_, argv) = rendered.unwrap();
                let prev = prev.expect("checked: a safe target exists");
                let mut start_data = data.clone();
                start_data.insert("phase".into(), json!("start"));
                start_data.insert("outcome".into(), json!("started"));
                let start = ev(start_data);
                let mut outcome_data = data.clone();
                outcome_data.insert("phase".into(), json!("outcome"));
                let outcome = decision(
                    format!("{id}/outcome"),
                    rule,
                    &d.project,
                    d.env.as_deref(),
                    Some(&d.id),
                    outcome_data,
                );
                let mut body = start.clone();
                body["data"]["outcome"] = json!("started");
                body["previous_url"] = json!(prev.url);
                let mut rb = json!({
                    "id": format!("rule/{}/{}/rolled_back", rule.name(), d.id),
                    "kind": "deploy",
                    "source": SOURCE,
                    "project": d.project,
                    "deployment_id": d.id,
                    "data": {
                        "status": "rolled_back",
                        "triggered_by": "rule",
                        "previous_deployment_id": prev.id,
                        "rolled_back_to": prev.id,
                        "rule": rule.name(),
                        "decision_id": id,
                    }
                });
                if let Some(e) = &d.env {
                    rb["env"] = json!(e);
                }
                if let Some(u) = &prev.url {
                    rb["data"]["url"] = json!(u);
                }
                if let Some(p) = &d.previous_id {
                    rb["data"]["replaced_deployment_id"] = json!(p);
                }
                info!(rule = %rule.name(), deployment = %d.id, target = %prev.id, "degraded; rolling back");
                starting.insert(rkey);
                st.conclude(&d.project, &d.id, rule.name());
                out.push(Intent::Act {
                    rule: i,
                    start,
                    argv,
                    body,
                    outcome,
                    on_success: Some(rb),
                });
            }
        }
        out
    }

    /// An alert decision, with its action (if any) run after it is written.
    #[allow(clippy::too_many_arguments)]
    fn alert_intent(
        &self,
        rule_idx: usize,
        id: String,
        project: &str,
        env: Option<&str>,
        deployment_id: Option<&str>,
        mut data: Map<String, Value>,
        st: &State,
    ) -> Vec<Intent> {
        let _ = st;
        let rule = &self.inner.rules[rule_idx];
        let dry = rule.cfg.dry_run || self.inner.settings.dry_run;
        data.insert("dry_run".into(), json!(dry));
        let mut vars: BTreeMap<&str, String> = BTreeMap::new();
        vars.insert("project", project.to_string());
        vars.insert("env", env.unwrap_or("").to_string());
        vars.insert("rule", rule.name().to_string());
        let rendered = match &rule.action {
            None => None,
            Some(Action::Command { argv, .. }) => {
                Some(render_argv(argv, &vars).map(|a| (display_argv(&a), a)))
            }
            Some(Action::Webhook { url, .. }) => Some(Ok((url.clone(), Vec::new()))),
        };
        match rendered {
            None => {
                data.insert("phase".into(), json!("final"));
                vec![Intent::Write(vec![decision(
                    id,
                    rule,
                    project,
                    env,
                    deployment_id,
                    data,
                )])]
            }
            Some(Err(e)) => {
                data.insert("phase".into(), json!("final"));
                data.insert(
                    "outcome".into(),
                    json!(format!("failed: cannot render the action: {e}")),
                );
                vec![Intent::Write(vec![decision(
                    id,
                    rule,
                    project,
                    env,
                    deployment_id,
                    data,
                )])]
            }
            Some(Ok((shown, argv))) => {
                data.insert("action".into(), json!(shown));
                if dry {
                    data.insert("phase".into(), json!("final"));
                    data.insert("outcome".into(), json!("dry_run"));
                    return vec![Intent::Write(vec![decision(
                        id,
                        rule,
                        project,
                        env,
                        deployment_id,
                        data,
                    )])];
                }
                let mut start = data.clone();
                start.insert("phase".into(), json!("start"));
                start.insert("outcome".into(), json!("started"));
                let start = decision(id.clone(), rule, project, env, deployment_id, start);
                let mut od = data;
                od.insert("phase".into(), json!("outcome"));
                let outcome = decision(
                    format!("{id}/outcome"),
                    rule,
                    project,
                    env,
                    deployment_id,
                    od,
                );
                vec![Intent::Act {
                    rule: rule_idx,
                    body: start.clone(),
                    start,
                    argv,
                    outcome,
                    on_success: None,
                }]
            }
        }
    }

    async fn cron_loop(self, idx: usize, mut shutdown: watch::Receiver<bool>) {
        let rule = &self.inner.rules[idx];
        let schedule = rule.schedule.clone().expect("scheduled rule");
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
            let r = match rule.cfg.kind {
                RuleKind::Threshold => self.run_threshold(idx, next).await,
                RuleKind::Budget => self.run_budget(idx, next).await,
                _ => Ok(()),
            };
            if let Err(e) = r {
                warn!(rule = %rule.name(), error = %e, "scheduled rule evaluation failed");
            }
        }
    }

    async fn query_number(&self, sql: String, params: Vec<Value>) -> Result<Option<f64>, String> {
        let Some(q) = self.inner.query.clone() else {
            return Err("queries are not available on this node".into());
        };
        let r = tokio::task::spawn_blocking(move || {
            q.query_internal(&sql, &params, Duration::from_secs(30))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
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

    async fn run_threshold(&self, idx: usize, tick: DateTime<Utc>) -> Result<(), String> {
        let rule = &self.inner.rules[idx];
        let window = rule.cfg.window.unwrap_or(Duration::from_secs(24 * 3600));
        let since = format_rfc3339(&(Utc::now() - chrono_dur(window)));
        let (sql, params) = match (&rule.cfg.sql, &rule.cfg.metric) {
            (Some(sql), _) => (sql.clone(), Vec::new()),
            (None, Some(m)) => (
                threshold_sql(m).to_string(),
                vec![json!(rule.cfg.project), json!(rule.cfg.env), json!(since)],
            ),
            _ => return Ok(()),
        };
        let Some(value) = self.query_number(sql, params).await? else {
            return Ok(()); // no data: no change of state
        };
        let max = rule.cfg.max_value.unwrap_or(f64::INFINITY);
        let bad = value > max;
        let prev = self
            .inner
            .state
            .lock()
            .unwrap()
            .thresholds
            .get(rule.name())
            .map(|t| t.verdict.clone());
        let verdict = match (bad, prev.as_deref()) {
            (true, Some("alert")) => return Ok(()),
            (true, _) => "alert",
            (false, Some("alert")) => "healthy",
            (false, _) => return Ok(()),
        };
        let mut data = Map::new();
        data.insert("verdict".into(), json!(verdict));
        data.insert(
            "metric".into(),
            json!(rule.cfg.metric.clone().unwrap_or_else(|| "sql".into())),
        );
        put(&mut data, "value", Some(value));
        put(&mut data, "threshold", Some(max));
        data.insert("window_ms".into(), json!(window.as_millis() as u64));
        data.insert(
            "reason".into(),
            json!(format!(
                "{} = {value} {} max_value {max}",
                rule.cfg.metric.as_deref().unwrap_or("sql"),
                if bad { ">" } else { "<=" }
            )),
        );
        let id = format!("rule/{}/{}/{verdict}", rule.name(), format_rfc3339(&tick));
        let intents = if verdict == "alert" {
            let st = self.inner.state.lock().unwrap();
            self.alert_intent(
                idx,
                id,
                &rule.cfg.project,
                rule.cfg.env.as_deref(),
                None,
                data,
                &st,
            )
        } else {
            data.insert("phase".into(), json!("final"));
            data.insert(
                "dry_run".into(),
                json!(rule.cfg.dry_run || self.inner.settings.dry_run),
            );
            vec![Intent::Write(vec![decision(
                id,
                rule,
                &rule.cfg.project,
                rule.cfg.env.as_deref(),
                None,
                data,
            )])]
        };
        self.execute(intents).await
    }

    async fn run_budget(&self, idx: usize, _tick: DateTime<Utc>) -> Result<(), String> {
        let rule = &self.inner.rules[idx];
        let now = Utc::now();
        let month = now.format("%Y-%m").to_string();
        let month_start = format!("{month}-01T00:00:00Z");
        let sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM api_costs WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)";
        let spend = self
            .query_number(
                sql.into(),
                vec![
                    json!(rule.cfg.project),
                    json!(rule.cfg.env),
                    json!(month_start),
                ],
            )
            .await?
            .unwrap_or(0.0);
        let budget = rule.cfg.budget_usd.unwrap_or(f64::INFINITY);
        let mut levels = rule
            .cfg
            .levels
            .clone()
            .unwrap_or_else(|| vec![50.0, 80.0, 100.0]);
        levels.sort_by(|a, b| a.total_cmp(b));
        let fired = self
            .inner
            .state
            .lock()
            .unwrap()
            .budget_fired
            .get(&(rule.name().to_string(), month.clone()))
            .copied()
            .unwrap_or(0.0);
        let pct = spend / budget * 100.0;
        let Some(level) = levels.iter().rev().find(|l| pct >= **l).copied() else {
            return Ok(());
        };
        if level <= fired {
            return Ok(());
        }
        let mut data = Map::new();
        data.insert("verdict".into(), json!("alert"));
        data.insert("metric".into(), json!("api_spend_usd"));
        put(&mut data, "value", Some(spend));
        put(&mut data, "baseline", Some(budget));
        put(&mut data, "threshold", Some(budget * level / 100.0));
        data.insert("level".into(), json!(level));
        data.insert("month".into(), json!(month));
        data.insert(
            "reason".into(),
            json!(format!("API spend ${spend:.2} is {pct:.0}% of the ${budget:.2} monthly budget (level {level}%)")),
        );
        let id = format!("rule/{}/{month}/{level}", rule.name());
        let intents = {
            let st = self.inner.state.lock().unwrap();
            self.alert_intent(
                idx,
                id,
                &rule.cfg.project,
                rule.cfg.env.as_deref(),
                None,
                data,
                &st,
            )
        };
        self.execute(intents).await
    }

    async fn execute(&self, intents: Vec<Intent>) -> Result<(), String> {
        for intent in intents {
            match intent {
                Intent::Write(v) => self.write(v).await?,
                Intent::Act {
                    rule,
                    start,
                    argv,
                    body,
                    outcome,
                    on_success,
                } => {
                    self.write(vec![start]).await?;
                    let engine = self.clone();
                    tokio::spawn(async move {
                        engine
                            .run_action(rule, argv, body, outcome, on_success)
                            .await;
                    });
                }
            }
        }
        Ok(())
    }
}

/// The SQL of a known threshold metric; parameters: project, env (null: every env), since.
pub fn threshold_sql(metric: &str) -> &'static str {
    match metric {
        "build_duration_p95" => "SELECT quantile_cont(duration_ms, 0.95) FROM builds WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "build_duration_ms" => "SELECT duration_ms FROM builds WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ) ORDER BY time DESC LIMIT 1",
        "bundle_bytes" => "SELECT bundle_bytes FROM builds WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ) AND bundle_bytes IS NOT NULL ORDER BY time DESC LIMIT 1",
        "gzip_bytes" => "SELECT gzip_bytes FROM builds WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ) AND gzip_bytes IS NOT NULL ORDER BY time DESC LIMIT 1",
        "error_rate" => "SELECT avg(value) FROM checks WHERE name = 'error_rate' AND project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "latency_p95" => "SELECT quantile_cont(value, 0.95) FROM checks WHERE name = 'latency_p95' AND project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "migration_duration_p95" => "SELECT quantile_cont(duration_ms, 0.95) FROM migrations WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "migration_failures" => "SELECT count(*) FROM migrations WHERE status = 'failed' AND project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "deploy_failure_rate" => "SELECT avg(CASE WHEN status IN ('failed', 'rolled_back') THEN 1.0 ELSE 0.0 END) FROM deploys WHERE status IN ('succeeded', 'failed', 'rolled_back') AND project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        "api_spend_usd" => "SELECT COALESCE(SUM(cost_usd), 0) FROM api_costs WHERE project = $1 AND ($2::VARCHAR IS NULL OR env = $2) AND time >= CAST($3 AS TIMESTAMPTZ)",
        _ => "SELECT NULL",
    }
}

/// The envelope fields (and a check's name) that say whether the state can use a record.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    project: Cow<'a, str>,
    #[serde(borrow, default)]
    env: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<PeekData<'a>>,
}

#[derive(serde::Deserialize)]
struct PeekData<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// Decodes a record the state can use; `None` for one it would ignore (a build, a cost,
/// a check no rule reads: most of the log), found without decoding it fully. A record the
/// quick look cannot read is decoded fully.
fn decode_relevant(retention: &Retention, bytes: &[u8]) -> Option<Event> {
    if let Ok(p) = serde_json::from_slice::<Peek>(bytes) {
        if let Some(kind) = Kind::from_name(&p.kind) {
            let name = p.data.as_ref().and_then(|d| d.name.as_deref());
            if !retention.may_apply(kind, &p.project, p.env.as_deref(), name) {
                return None;
            }
        }
    }
    Event::from_json_bytes(bytes).ok()
}

/// Reads one partition from `from` (0, or where the snapshot stands) and forwards decoded
/// events (those the state can use) with the position after them; says when it reached the
/// end the log had at start.
async fn forward(
    log: Arc<dyn Log>,
    partition: u32,
    from: Offset,
    retention: Retention,
    tx: mpsc::Sender<Msg>,
    shutdown: watch::Receiver<bool>,
) {
    let end_at_start = log.end_offset(partition);
    let mut reader = match log.reader(partition, from) {
        Ok(r) => r,
        Err(LogError::OutOfRange { start, .. }) => match log.reader(partition, start) {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "rules: cannot read the log");
                return;
            }
        },
        Err(e) => {
            error!(error = %e, "rules: cannot read the log");
            return;
        }
    };
    let mut caught_up = false;
    if end_at_start <= reader.position() {
        caught_up = true;
        if tx.send(Msg::CaughtUp).await.is_err() {
            return;
        }
    }
    loop {
        if *shutdown.borrow() {
            return;
        }
        let batch = match reader
            .next_batch(4096, 16 << 20, Duration::from_millis(250))
            .await
        {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "rules: log read failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Some(last) = batch.last() {
            let events: Vec<Event> = batch
                .iter()
                .filter_map(|e| decode_relevant(&retention, &e.value))
                .collect();
            let position = Position {
                partition,
                offset: reader.position(),
                last: Some((last.offset, snapshot::record_hash(&last.value))),
            };
            if tx.send(Msg::Events { events, position }).await.is_err() {
                return;
            }
        }
        if !caught_up && reader.position() >= end_at_start {
            caught_up = true;
            if tx.send(Msg::CaughtUp).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(id: &str, status: &str, t: DateTime<Utc>) -> Event {
        Event::from_json(
            json!({"id": format!("{id}-{status}"), "kind": "deploy", "source": "ci", "project": "p",
                   "env": "production", "deployment_id": id, "time": format_rfc3339(&t),
                   "data": {"status": status, "url": format!("https://{id}.example")}}),
            Origin::Collector,
        )
        .unwrap()
    }

    #[test]
    fn cooldown_from_the_log() {
        let mut st = State::default();
        let now = Utc::now();
        assert_eq!(
            cooldown_until(&st, "p", "production", Duration::from_secs(60), now),
            None
        );
        let start = Event::from_json(
            json!({"id": "rule/r/d1/degraded", "kind": "decision", "source": SOURCE, "project": "p",
                   "env": "production", "deployment_id": "d1", "time": format_rfc3339(&now),
                   "data": {"rule": "r", "rule_kind": "rollback", "verdict": "degraded", "phase": "start", "dry_run": false}}),
            Origin::Internal,
        )
        .unwrap();
        st.apply(&start);
        st.apply(&start); // idempotent
        let until = cooldown_until(&st, "p", "production", Duration::from_secs(60), now).unwrap();
        assert!(
            until > now + chrono::Duration::seconds(59)
                && until <= now + chrono::Duration::seconds(60)
        );
        assert!(cooldown_until(
            &st,
            "p",
            "production",
            Duration::from_secs(60),
            now + chrono::Duration::seconds(61)
        )
        .is_none());
        assert!(cooldown_until(&st, "p", "staging", Duration::from_secs(60), now).is_none());
        // The rollback is in progress until its outcome is read.
        assert!(st.rollbacks[&("p".into(), "d1".into())].outcome.is_none());
        // A dry-run start does not count.
        let mut st2 = State::default();
        let mut dry = start.clone();
        dry.data.insert("dry_run".into(), json!(true));
        st2.apply(&dry);
        assert!(cooldown_until(&st2, "p", "production", Duration::from_secs(60), now).is_none());
    }

    #[test]
    fn targets_and_supersession() {
        let mut st = State::default();
        let t = Utc::now();
        st.apply(&deploy("a", "succeeded", t));
        st.apply(&deploy("b", "succeeded", t));
        let b = st.deployments[&("p".into(), "b".into())].clone();
        assert_eq!(st.previous_of(&b).unwrap().id, "a");
        st.apply(&deploy("a", "rolled_back", t));
        assert!(st.deployments[&("p".into(), "a".into())]
            .unsafe_reason()
            .is_some());
        assert!(
            st.previous_of(&b).is_none(),
            "a rolled back deployment is no target"
        );
        let a = st.deployments[&("p".into(), "a".into())].clone();
        assert!(st.superseded(&a) && !st.superseded(&b));
    }
}
