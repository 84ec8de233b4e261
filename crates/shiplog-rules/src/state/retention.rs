//! What the state keeps and for how long (docs/rules.md, "State and memory").

use super::model::Deployment;
use crate::config::{Rule, RulesSettings};
use chrono::{DateTime, Utc};
use shiplog_events::Kind;

/// A rollback rule as the state sees it: what to keep for it.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    rule: String,
    project: String,
    env: String,
    /// The check names its metrics read (with a value or counts), and the checks whose
    /// `requests` its cost metric divides by.
    checks: Vec<String>,
    /// It has an `api_cost_per_request` metric: the project/env's costs are kept.
    costs: bool,
    window: chrono::Duration,
}

/// What the state keeps and for how long.
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

pub(crate) fn chrono_dur(d: std::time::Duration) -> chrono::Duration {
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
            .filter_map(|r| r.rollback().map(|s| (r, s)))
            .map(|(r, s)| Watched {
                rule: r.name().to_string(),
                project: r.project.clone(),
                env: r.env.clone().unwrap_or_default(),
                checks: s
                    .metrics
                    .iter()
                    .map(|m| m.requests_from.clone().unwrap_or_else(|| m.name.clone()))
                    .collect(),
                costs: s.metrics.iter().any(|m| m.is_cost()),
                window: chrono_dur(s.window),
            })
            .collect();
        let longest_cooldown = rules
            .iter()
            .filter_map(|r| r.rollback().and_then(|s| s.cooldown))
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

    /// Like [`Retention::for_rules`], judging every window however old (backtests).
    pub fn for_backtest(
        rules: &[Rule],
        settings: &RulesSettings,
        history: chrono::Duration,
    ) -> Retention {
        Retention {
            oldest: DateTime::<Utc>::MIN_UTC,
            history,
            max_deployments: usize::MAX / 2,
            max_samples: usize::MAX / 2,
            ..Retention::for_rules(rules, settings, Utc::now())
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
                        &w.checks,
                        w.costs,
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

    fn watched<'a>(
        &'a self,
        project: &'a str,
        env: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Watched> + 'a {
        self.watch
            .iter()
            .flatten()
            .filter(move |w| w.project == project && env.is_none_or(|e| e == w.env))
    }

    /// Whether the deploy records of `project`/`env` are tracked (an unknown env may still
    /// turn out to be a watched one).
    pub fn watches_deploy(&self, project: &str, env: Option<&str>) -> bool {
        self.watch.is_none() || self.watched(project, env).next().is_some()
    }

    /// Whether a check sample could be read by a rule: its project/env is watched and its
    /// name is a watched metric (with a value or counts) or `smoke` (failed).
    pub fn keeps_check(
        &self,
        project: &str,
        env: Option<&str>,
        name: &str,
        has_data: bool,
        passed: Option<bool>,
    ) -> bool {
        let smoke_failed = name == "smoke" && passed == Some(false);
        if !smoke_failed && !has_data {
            return false;
        }
        self.watch.is_none()
            || self
                .watched(project, env)
                .any(|w| smoke_failed || w.checks.iter().any(|c| c == name))
    }

    /// Whether the `api_cost` records of `project`/`env` are kept.
    pub fn keeps_costs(&self, project: &str, env: Option<&str>) -> bool {
        self.watch.is_none() || self.watched(project, env).any(|w| w.costs)
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
            Kind::Build => false,
            Kind::ApiCost => self.keeps_costs(project, env),
            Kind::Check => match check_name {
                None => false,
                Some(name) => {
                    self.watch.is_none()
                        || self
                            .watched(project, env)
                            .any(|w| name == "smoke" || w.checks.iter().any(|c| c == name))
                }
            },
            _ => true,
        }
    }

    /// The longest window of the rules watching `project`/`env` (None: not known, keep all).
    pub(crate) fn max_window(&self, project: &str, env: Option<&str>) -> Option<chrono::Duration> {
        self.watch.as_ref()?;
        self.watched(project, env).map(|w| w.window).max()
    }

    /// Whether some rule may still judge `d` (its window has not closed before `oldest`,
    /// and no rule watching it concluded it yet).
    pub(crate) fn may_judge(&self, d: &Deployment) -> bool {
        let Some(s) = d.succeeded_at else {
            return false;
        };
        if d.failed || d.rolled_back || d.rollback_started || d.judged_before {
            return false;
        }
        match &self.watch {
            None => d.concluded.is_empty(),
            Some(_) => self
                .watched(&d.project, d.env.as_deref())
                .filter(|w| d.env.as_deref() == Some(w.env.as_str()))
                .any(|w| {
                    !d.concluded.contains(&w.rule)
                        && s.checked_add_signed(w.window)
                            .is_none_or(|end| end >= self.oldest)
                }),
        }
    }
}
