//! Deciding what to do now, under the state's lock and without I/O: the rollback windows
//! to conclude (judged by [`crate::judgement`]), the failed migrations to alert on. The
//! engine executes the intents; the backtest only records them.

use crate::action::{display_argv, render_argv};
use crate::config::{Action, RollbackSpec, Rule, RuleSpec, RulesSettings};
use crate::decision::{DecisionData, Phase, Verdict};
use crate::judge::MetricVerdict;
use crate::judgement::{assess, Assessment};
use crate::state::{chrono_dur, Deployment, MigrationRec, State, SOURCE};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shiplog_events::format_rfc3339;
use std::collections::{BTreeMap, HashMap, HashSet};
use tracing::info;

/// A decision to write, with where it goes.
#[derive(Debug, Clone)]
pub struct Planned {
    pub id: String,
    pub data: DecisionData,
    pub project: String,
    pub env: Option<String>,
    pub deployment_id: Option<String>,
}

impl Planned {
    /// The two decisions of an action that runs: its start ("started", written before the
    /// action) and its outcome (id `<id>/outcome`, written after it).
    pub fn start_and_outcome(&self) -> (Planned, Planned) {
        let start = Planned {
            data: self.data.with_phase(Phase::Start, Some("started".into())),
            ..self.clone()
        };
        let outcome = Planned {
            id: format!("{}/outcome", self.id),
            data: self.data.with_phase(Phase::Outcome, None),
            ..self.clone()
        };
        (start, outcome)
    }

    pub fn event(&self) -> Value {
        self.data.event(
            &self.id,
            &self.project,
            self.env.as_deref(),
            self.deployment_id.as_deref(),
        )
    }
}

/// What one evaluation decided to do.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a handful per evaluation: boxing buys nothing
pub enum Intent {
    /// Write this decision; nothing runs.
    Write(Planned),
    /// Write the start decision, then run the action and write its outcome.
    Act {
        rule: usize,
        start: Planned,
        argv: Vec<String>,
        /// What a webhook receives.
        body: Value,
        /// The outcome decision (completed after the run).
        outcome: Planned,
        /// Written when the action succeeded (rollbacks: the `rolled_back` deploy event).
        on_success: Option<Value>,
    },
}

impl Intent {
    /// The decision this intent writes first.
    pub fn decision(&self) -> &Planned {
        match self {
            Intent::Write(p) => p,
            Intent::Act { start, .. } => start,
        }
    }
}

/// Judgements already made, by (rule, project, deployment), with the inputs they were made
/// from: a deployment is judged again only when its samples, its baseline's, or the
/// window's state changed (judging costs a boundary computation per look).
#[derive(Default)]
pub struct JudgeCache {
    entries: HashMap<(usize, String, String), (JudgeKey, Assessment)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct JudgeKey {
    revision: u64,
    baseline: Option<(String, u64)>,
    closed: bool,
}

impl JudgeCache {
    fn assess(
        &mut self,
        idx: usize,
        spec: &RollbackSpec,
        st: &State,
        d: &Deployment,
        now: DateTime<Utc>,
    ) -> Option<Assessment> {
        let end = d
            .succeeded_at?
            .checked_add_signed(chrono_dur(spec.window))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let key = JudgeKey {
            revision: d.revision,
            baseline: st.baseline_of(d).ok().map(|b| (b.id.clone(), b.revision)),
            closed: now >= end,
        };
        let k = (idx, d.project.clone(), d.id.clone());
        if let Some((old, a)) = self.entries.get(&k) {
            if *old == key {
                return Some(a.clone());
            }
        }
        let a = assess(spec, st, d, now)?;
        self.entries.insert(k, (key, a.clone()));
        Some(a)
    }

    /// Forgets the judgements of deployments that are concluded.
    fn forget(&mut self, idx: usize, project: &str, dep: &str) {
        self.entries
            .remove(&(idx, project.to_string(), dep.to_string()));
    }

    /// The last judgement of `dep` by rule `idx`, if any is held.
    pub fn get(&self, idx: usize, project: &str, dep: &str) -> Option<&Assessment> {
        self.entries
            .get(&(idx, project.to_string(), dep.to_string()))
            .map(|(_, a)| a)
    }
}

/// The rules and settings a plan is made for.
pub struct Planner<'a> {
    pub rules: &'a [Rule],
    pub settings: &'a RulesSettings,
    /// Windows that closed before this are not judged (start − catch_up).
    pub oldest: DateTime<Utc>,
}

impl Planner<'_> {
    /// Decides what to do at `now`, concluding what it decides in `st`.
    pub fn plan(&self, st: &mut State, now: DateTime<Utc>, cache: &mut JudgeCache) -> Vec<Intent> {
        let mut out = Vec::new();
        let failed: Vec<MigrationRec> = st.take_failed_migrations();
        for (i, rule) in self.rules.iter().enumerate() {
            if matches!(rule.spec, RuleSpec::MigrationFailed) {
                self.migration_alerts(i, rule, &failed, st, &mut out);
            }
        }
        let mut starting: HashSet<(String, String)> = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if let RuleSpec::Rollback(spec) = &rule.spec {
                self.rollback_windows(i, rule, spec, st, now, cache, &mut starting, &mut out);
            }
        }
        out
    }

    fn migration_alerts(
        &self,
        i: usize,
        rule: &Rule,
        failed: &[MigrationRec],
        st: &State,
        out: &mut Vec<Intent>,
    ) {
        for m in failed {
            if !rule.matches(&m.project, m.env.as_deref()) || m.time < self.oldest {
                continue;
            }
            let id = format!("rule/{}/{}/{}/alert", rule.name(), m.source, m.id);
            if st.alerted(&id) {
                continue;
            }
            let mut data = DecisionData::new(rule, Verdict::Alert);
            data.metric = Some("migration_failed".into());
            data.samples = Some(1);
            data.migration_id = Some(m.id.clone());
            data.migration_database = m.database.clone();
            data.migration_version = m.version.clone();
            data.migration_name = m.name.clone();
            data.migration_error = m.error.clone();
            data.reason = Some(format!(
                "migration {} failed",
                m.version.as_deref().or(m.name.as_deref()).unwrap_or(&m.id)
            ));
            out.push(alert_intent(
                self.rules,
                self.settings,
                i,
                Planned {
                    id,
                    data,
                    project: m.project.clone(),
                    env: m.env.clone(),
                    deployment_id: None,
                },
            ));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rollback_windows(
        &self,
        i: usize,
        rule: &Rule,
        spec: &RollbackSpec,
        st: &mut State,
        now: DateTime<Utc>,
        cache: &mut JudgeCache,
        starting: &mut HashSet<(String, String)>,
        out: &mut Vec<Intent>,
    ) {
        let window = chrono_dur(spec.window);
        for d in st.open_candidates(rule.name(), &rule.project, rule.env.as_deref()) {
            let end = d
                .succeeded_at
                .and_then(|s| s.checked_add_signed(window))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            let rkey = (d.project.clone(), d.id.clone());
            if end < self.oldest
                || d.rolled_back
                || d.failed
                || st.superseded(&d)
                || d.rollback_started
                || st.rollback_of(&d.project, &d.id).is_some()
                || starting.contains(&rkey)
            {
                // Too old to judge, rolled back or failed, no longer live, or being rolled
                // back: never act.
                st.conclude(&d.project, &d.id, rule.name());
                cache.forget(i, &d.project, &d.id);
                continue;
            }
            let Some(a) = cache.assess(i, spec, st, &d, now) else {
                continue;
            };
            let verdict = match a.judgement.verdict {
                MetricVerdict::Judging => continue,
                MetricVerdict::Healthy => Verdict::Healthy,
                MetricVerdict::Inconclusive => Verdict::Inconclusive,
                MetricVerdict::Degraded => Verdict::Degraded,
            };
            st.conclude(&d.project, &d.id, rule.name());
            cache.forget(i, &d.project, &d.id);
            let mut data = rollback_decision(rule, spec, &a, verdict, now);
            data.dry_run = rule.is_dry_run(self.settings);
            let planned = Planned {
                id: decision_id(rule.name(), &d.id, verdict),
                data,
                project: d.project.clone(),
                env: d.env.clone(),
                deployment_id: Some(d.id.clone()),
            };
            if verdict != Verdict::Degraded {
                out.push(Intent::Write(planned));
                continue;
            }
            out.push(self.rollback_intent(i, rule, spec, st, &d, &a, planned, now));
            if matches!(out.last(), Some(Intent::Act { .. })) {
                starting.insert(rkey);
            }
        }
    }

    /// A degraded verdict: whether and how to act.
    #[allow(clippy::too_many_arguments)]
    fn rollback_intent(
        &self,
        i: usize,
        rule: &Rule,
        spec: &RollbackSpec,
        st: &State,
        d: &Deployment,
        a: &Assessment,
        mut planned: Planned,
        now: DateTime<Utc>,
    ) -> Intent {
        let env = d.env.clone().unwrap_or_default();
        let dry = rule.is_dry_run(self.settings);
        let cooldown = spec.cooldown.unwrap_or(self.settings.cooldown);
        let target = a.baseline.as_ref().ok();
        let skip = if let Some(until) = st.cooldown_until(&d.project, &env, cooldown, now) {
            Some(format!(
                "skipped: cooldown until {} (a rollback of {}/{} ran recently)",
                format_rfc3339(&until),
                d.project,
                env
            ))
        } else {
            a.baseline
                .as_ref()
                .err()
                .map(|why| format!("no_safe_target: {why}"))
        };
        let mut vars: BTreeMap<&str, String> = BTreeMap::new();
        vars.insert("deployment_id", d.id.clone());
        vars.insert("project", d.project.clone());
        vars.insert("env", env.clone());
        vars.insert("rule", rule.name().to_string());
        if let Some(u) = &d.url {
            vars.insert("url", u.clone());
        }
        if let Some(p) = target {
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
            Action::Command { argv, .. } => render_argv(argv, &vars).map(|a| (display_argv(&a), a)),
            Action::Webhook { url, .. } => Ok((url.clone(), Vec::new())),
        };
        if let Ok((shown, _)) = &rendered {
            planned.data.action = Some(shown.clone());
        }
        let final_outcome = match (&skip, &rendered) {
            (Some(s), _) => Some(s.clone()),
            (None, Err(e)) => Some(format!("no_safe_target: cannot render the action: {e}")),
            (None, Ok(_)) if dry => Some("dry_run".to_string()),
            _ => None,
        };
        if let Some(o) = final_outcome {
            planned.data.outcome = Some(o.clone());
            info!(rule = %rule.name(), deployment = %d.id, outcome = %o, "degraded; no action");
            return Intent::Write(planned);
        }
        let (_, argv) = rendered.expect("checked: rendered");
        let target = target.expect("checked: a safe target exists");
        let (start, outcome) = planned.start_and_outcome();
        let mut body = start.event();
        body["previous_url"] = json!(target.url);
        let mut rb = json!({
            "id": format!("rule/{}/{}/rolled_back", rule.name(), d.id),
            "kind": "deploy",
            "source": SOURCE,
            "project": d.project,
            "deployment_id": d.id,
            "data": {
                "status": "rolled_back",
                "triggered_by": "rule",
                "previous_deployment_id": target.id,
                "rolled_back_to": target.id,
                "rule": rule.name(),
                "decision_id": planned.id,
            }
        });
        if let Some(e) = &d.env {
            rb["env"] = json!(e);
        }
        if let Some(u) = &target.url {
            rb["data"]["url"] = json!(u);
        }
        if let Some(p) = &d.previous_id {
            rb["data"]["replaced_deployment_id"] = json!(p);
        }
        info!(rule = %rule.name(), deployment = %d.id, target = %target.id, "degraded; rolling back");
        Intent::Act {
            rule: i,
            start,
            argv,
            body,
            outcome,
            on_success: Some(rb),
        }
    }
}

/// The id of a rollback rule's decision about a deployment: deterministic, so a decision
/// written twice (a restart, the demo and the engine) is deduplicated.
pub fn decision_id(rule: &str, deployment_id: &str, verdict: Verdict) -> String {
    format!("rule/{rule}/{deployment_id}/{}", verdict.as_str())
}

/// The decision of a concluded rollback window: the deciding metric's figures in the
/// contract fields, every metric's evidence, and the verdict in words.
pub(crate) fn rollback_decision(
    rule: &Rule,
    spec: &RollbackSpec,
    a: &Assessment,
    verdict: Verdict,
    now: DateTime<Utc>,
) -> DecisionData {
    let j = &a.judgement;
    let mut data = DecisionData::new(rule, verdict);
    data.window_ms = Some(spec.window.as_millis() as u64);
    data.decided_at = Some(now);
    data.deciding_sample_time = j.deciding_time;
    data.previous_deployment_id = a.baseline.as_ref().ok().map(|b| b.id.clone());
    if let Some(t) = j.smoke {
        data.metric = Some("smoke".into());
        data.value = Some(0.0);
        data.samples = Some(1);
        data.deciding_sample_time = Some(t);
    } else if let Some(m) = j.metrics.get(j.deciding) {
        data.metric = Some(m.metric.clone());
        data.value = m.value;
        data.baseline = m.baseline;
        data.threshold = m.threshold;
        data.samples = Some(m.samples as u64);
        data.baseline_samples = m.baseline_samples.map(|n| n as u64);
        data.method = Some(m.method.as_str().to_string());
        if let Some(rm) = spec.metrics.get(j.deciding) {
            data.aggregate = Some(rm.aggregate.as_str().to_string());
        }
    }
    data.reason = Some(j.reason.clone());
    data.evidence = j.metrics.clone();
    data
}

/// An alert decision, with its action (if any) run after it is written.
pub fn alert_intent(
    rules: &[Rule],
    settings: &RulesSettings,
    rule_idx: usize,
    mut planned: Planned,
) -> Intent {
    let rule = &rules[rule_idx];
    let dry = rule.is_dry_run(settings);
    planned.data.dry_run = dry;
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("project", planned.project.clone());
    vars.insert("env", planned.env.clone().unwrap_or_default());
    vars.insert("rule", rule.name().to_string());
    let rendered = match &rule.action {
        None => return Intent::Write(planned),
        Some(Action::Command { argv, .. }) => {
            render_argv(argv, &vars).map(|a| (display_argv(&a), a))
        }
        Some(Action::Webhook { url, .. }) => Ok((url.clone(), Vec::new())),
    };
    match rendered {
        Err(e) => {
            planned.data.outcome = Some(format!("failed: cannot render the action: {e}"));
            Intent::Write(planned)
        }
        Ok((shown, argv)) => {
            planned.data.action = Some(shown);
            if dry {
                planned.data.outcome = Some("dry_run".into());
                return Intent::Write(planned);
            }
            let (start, outcome) = planned.start_and_outcome();
            Intent::Act {
                rule: rule_idx,
                body: start.event(),
                start,
                argv,
                outcome,
                on_success: None,
            }
        }
    }
}
