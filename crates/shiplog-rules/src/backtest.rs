//! Backtest and shadow mode: the deployments in the log judged by the current or a
//! candidate rule set, without acting (`shiplog rules backtest`, `POST /v1/rules/backtest`,
//! the decisions page for rules in dry run).
//!
//! A verdict is a function of the samples (the judge looks at them in time order), so the
//! backtest does not replay time: it reads the log into a state (the rules' own decisions
//! left out, facts such as deploys and rollbacks kept), then judges each deployment in the
//! order they went live, with its samples up to the end of its window or until the next
//! deployment replaced it, whichever came first, exactly as the engine would have. A
//! deployment it finds degraded is no baseline for the later ones, as live.

use crate::config::{Rule, RuleSpec, RulesSettings};
use crate::decision::{DecisionData, Verdict};
use crate::engine::plan::rollback_decision;
use crate::engine::tail::decode_relevant;
use crate::judge::MetricVerdict;
use crate::judgement::assess;
use crate::state::{chrono_dur, Deployment, Retention, State, SOURCE};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shiplog_events::{Event, Kind};
use shiplog_log::{Log, LogError};
use std::time::Duration;

/// What to backtest.
#[derive(Debug, Clone)]
pub struct BacktestOptions {
    /// Only deployments that went live since then.
    pub since: Option<DateTime<Utc>>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Windows still open at this time are reported as judging.
    pub now: DateTime<Utc>,
}

/// One judged deployment.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestRow {
    pub deployment_id: String,
    pub project: String,
    pub env: Option<String>,
    pub live_at: DateTime<Utc>,
    /// `healthy`, `degraded`, `inconclusive`, `judging` (window still open) or
    /// `superseded` (replaced before a verdict: not judged, as live).
    pub verdict: String,
    /// For degraded: `would roll back to <id>` or `no_safe_target: …`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deciding_sample_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_deployment_id: Option<String>,
    pub reason: String,
    /// The decision the engine would have written (healthy, degraded, inconclusive), at the
    /// time it would have written it: the deciding sample for a degraded verdict (the
    /// engine decides on the sample's arrival), the window's end otherwise.
    #[serde(skip)]
    pub decision: Option<DecisionData>,
}

/// One rule's results.
#[derive(Debug, Clone, Serialize)]
pub struct RuleBacktest {
    pub rule: String,
    pub project: String,
    pub env: Option<String>,
    /// The rule is in dry run (per rule or globally) in the configuration backtested.
    pub dry_run: bool,
    /// Deployments with a verdict (healthy, degraded or inconclusive).
    pub judged: usize,
    pub would_roll_back: usize,
    /// Degraded, but no safe target: nothing would have run.
    pub degraded_no_target: usize,
    pub healthy: usize,
    pub inconclusive: usize,
    pub judging: usize,
    pub superseded: usize,
    pub deployments: Vec<BacktestRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    pub since: Option<DateTime<Utc>>,
    pub records_read: u64,
    pub rules: Vec<RuleBacktest>,
}

/// A candidate rule set: the `[[rules]]` (and optional `[rules_settings]`) of a TOML
/// document such as a shiplog.toml; its other tables are ignored.
#[derive(Debug, Default, serde::Deserialize)]
struct Candidate {
    #[serde(default)]
    rules: Vec<crate::config::RuleConfig>,
    #[serde(default)]
    rules_settings: Option<RulesSettings>,
}

/// Parses and validates a candidate rule set; `current` gives what a file cannot (prices,
/// hidden variables) and the settings when it has no `[rules_settings]`.
pub fn candidate(
    toml_text: &str,
    current: &RulesSettings,
) -> Result<(Vec<Rule>, RulesSettings), crate::RulesError> {
    let c: Candidate = toml::from_str(toml_text)
        .map_err(|e| crate::RulesError::config("candidate", "toml", e.to_string()))?;
    let mut settings = c.rules_settings.unwrap_or_else(|| current.clone());
    settings.prices = current.prices.clone();
    settings.hide_env = current.hide_env.clone();
    settings.state_dir = None;
    let rules = crate::config::validate(&c.rules, &settings)?;
    Ok((rules, settings))
}

/// Reads every partition of `log` from its start and backtests `rules` over it.
pub async fn run_log(
    log: &dyn Log,
    rules: &[Rule],
    settings: &RulesSettings,
    opts: &BacktestOptions,
) -> Result<BacktestReport, LogError> {
    let retention = Retention::for_backtest(rules, settings, chrono::Duration::days(36_500));
    let mut events = Vec::new();
    let mut read = 0u64;
    for p in log.partitions() {
        let end = log.end_offset(p);
        // From the first offset the log still holds.
        let mut reader = match log.reader(p, 0) {
            Err(LogError::OutOfRange { start, .. }) => log.reader(p, start)?,
            r => r?,
        };
        while reader.position() < end {
            let batch = reader
                .next_batch(4096, 16 << 20, Duration::from_millis(50))
                .await?;
            if batch.is_empty() {
                break;
            }
            read += batch.len() as u64;
            events.extend(
                batch
                    .iter()
                    .filter_map(|r| decode_relevant(&retention, &r.value)),
            );
        }
    }
    let mut report = run(events, rules, settings, opts);
    report.records_read = read;
    Ok(report)
}

/// Backtests `rules` over `events` (in log order).
pub fn run(
    events: Vec<Event>,
    rules: &[Rule],
    settings: &RulesSettings,
    opts: &BacktestOptions,
) -> BacktestReport {
    let retention = Retention::for_backtest(rules, settings, chrono::Duration::days(36_500));
    let mut st = State::new(retention);
    st.set_prices(settings.prices.clone());
    let mut n = 0u64;
    for e in &events {
        // The rules' own decisions are what is being recomputed; their deploy events
        // (a real rollback happened) are facts and stay.
        if e.kind == Kind::Decision && e.source == SOURCE {
            continue;
        }
        st.apply(e);
        n += 1;
    }
    let mut out = Vec::new();
    for rule in rules {
        if opts.rule.as_deref().is_some_and(|r| r != rule.name()) {
            continue;
        }
        let RuleSpec::Rollback(spec) = &rule.spec else {
            continue;
        };
        let window = chrono_dur(spec.window);
        let mut r = RuleBacktest {
            rule: rule.name().to_string(),
            project: rule.project.clone(),
            env: rule.env.clone(),
            dry_run: rule.is_dry_run(settings),
            judged: 0,
            would_roll_back: 0,
            degraded_no_target: 0,
            healthy: 0,
            inconclusive: 0,
            judging: 0,
            superseded: 0,
            deployments: Vec::new(),
        };
        let deps: Vec<Deployment> = st
            .deployments_of(&rule.project, rule.env.as_deref())
            .into_iter()
            .filter(|d| d.succeeded_at.is_some() && !d.failed)
            .map(Deployment::header)
            .collect();
        for d in deps {
            let live = d.succeeded_at.expect("filtered");
            if opts.since.is_some_and(|s| live < s) {
                continue;
            }
            let end = live
                .checked_add_signed(window)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            // Judged as live: until its window ended or the next deployment replaced it.
            let replaced = st.replaced_at(&d);
            let cut = replaced.map_or(opts.now, |t| t.min(opts.now));
            let Some(a) = assess(spec, &st, &d, cut.min(end)) else {
                continue;
            };
            let closed = end <= cut;
            let decided_live = a
                .judgement
                .deciding_time
                .is_some_and(|t| replaced.is_none_or(|r| t <= r));
            let (verdict, action) = match a.judgement.verdict {
                MetricVerdict::Degraded if decided_live => {
                    let action = match &a.baseline {
                        Ok(b) => {
                            r.would_roll_back += 1;
                            format!("would roll back to {}", b.id)
                        }
                        Err(why) => {
                            r.degraded_no_target += 1;
                            format!("no_safe_target: {why}")
                        }
                    };
                    st.mark_degraded(&d.project, &d.id);
                    ("degraded", Some(action))
                }
                _ if !closed && replaced.is_some_and(|t| t < opts.now && t < end)
                    || a.judgement.verdict == MetricVerdict::Degraded =>
                {
                    r.superseded += 1;
                    ("superseded", None)
                }
                MetricVerdict::Judging | MetricVerdict::Degraded => {
                    r.judging += 1;
                    ("judging", None)
                }
                MetricVerdict::Healthy => {
                    r.healthy += 1;
                    ("healthy", None)
                }
                MetricVerdict::Inconclusive => {
                    r.inconclusive += 1;
                    ("inconclusive", None)
                }
            };
            let decision = match verdict {
                "healthy" => Some(Verdict::Healthy),
                "degraded" => Some(Verdict::Degraded),
                "inconclusive" => Some(Verdict::Inconclusive),
                _ => None,
            }
            .map(|v| {
                let at = match v {
                    Verdict::Degraded => a.judgement.deciding_time.unwrap_or(end),
                    _ => end,
                };
                let mut data = rollback_decision(rule, spec, &a, v, at);
                data.dry_run = r.dry_run;
                data
            });
            if decision.is_some() {
                r.judged += 1;
            }
            r.deployments.push(BacktestRow {
                deployment_id: d.id.clone(),
                project: d.project.clone(),
                env: d.env.clone(),
                live_at: live,
                verdict: verdict.to_string(),
                action,
                deciding_sample_time: a.judgement.deciding_time,
                baseline_deployment_id: a.baseline.as_ref().ok().map(|b| b.id.clone()),
                reason: a.judgement.reason.clone(),
                decision,
            });
        }
        out.push(r);
    }
    BacktestReport {
        since: opts.since,
        records_read: n,
        rules: out,
    }
}

impl RuleBacktest {
    /// The deployments a team should look at: degraded and inconclusive ones.
    pub fn flagged(&self) -> Vec<&BacktestRow> {
        self.deployments
            .iter()
            .filter(|d| d.verdict == "degraded" || d.verdict == "inconclusive")
            .collect()
    }

    /// Recounts the totals from `deployments` (after some were left out).
    pub fn recount(&mut self) {
        let n = |v: &str| self.deployments.iter().filter(|d| d.verdict == v).count();
        self.healthy = n("healthy");
        self.inconclusive = n("inconclusive");
        self.judging = n("judging");
        self.superseded = n("superseded");
        let degraded: Vec<&BacktestRow> = self
            .deployments
            .iter()
            .filter(|d| d.verdict == "degraded")
            .collect();
        self.degraded_no_target = degraded
            .iter()
            .filter(|d| {
                d.action
                    .as_deref()
                    .is_some_and(|a| a.starts_with("no_safe_target"))
            })
            .count();
        self.would_roll_back = degraded.len() - self.degraded_no_target;
        self.judged = self.healthy + self.inconclusive + degraded.len();
    }
}

impl BacktestReport {
    /// The report as a table for a terminal.
    pub fn table(&self, list: bool) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "{:<28} {:>7} {:>15} {:>10} {:>8} {:>13} {:>8} {:>11}\n",
            "rule",
            "judged",
            "would roll back",
            "no target",
            "healthy",
            "inconclusive",
            "judging",
            "superseded"
        ));
        for r in &self.rules {
            s.push_str(&format!(
                "{:<28} {:>7} {:>15} {:>10} {:>8} {:>13} {:>8} {:>11}{}\n",
                r.rule,
                r.judged,
                r.would_roll_back,
                r.degraded_no_target,
                r.healthy,
                r.inconclusive,
                r.judging,
                r.superseded,
                if r.dry_run { "  (dry run)" } else { "" }
            ));
        }
        if list {
            for r in &self.rules {
                let flagged = r.flagged();
                if flagged.is_empty() {
                    continue;
                }
                s.push_str(&format!("\n{}:\n", r.rule));
                for d in flagged {
                    s.push_str(&format!(
                        "  {} {} {}: {}{}\n",
                        shiplog_events::format_rfc3339(&d.live_at),
                        d.deployment_id,
                        d.verdict,
                        d.reason,
                        d.action
                            .as_deref()
                            .map(|a| format!(" → {a}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        s
    }
}
