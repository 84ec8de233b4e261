//! Forgetting what no rule can use any more, and the caps (docs/rules.md, "State and
//! memory").

use super::model::Deployment;
use super::{tomb_key, State, Tomb};
use chrono::{DateTime, Datelike, Utc};
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// A sweep runs at least every this many applied events (and when a cap is exceeded).
pub(super) const SWEEP_EVERY_EVENTS: u64 = 50_000;
/// Once live, a sweep runs at least this often.
pub(super) const SWEEP_EVERY: chrono::Duration = chrono::Duration::seconds(10);

impl State {
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
            if d.unsafe_reason().is_none() {
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
            if class == Class::Done || baseline_only {
                // Decided and no baseline: its samples are of no more use.
                freed += d.clear_samples();
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
                                degraded: d.degraded,
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
                .filter(|(_, d)| d.sample_count() > 0)
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
                    let n = d.clear_samples();
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

pub(super) fn superseded_in(live: &HashMap<String, HashMap<String, u64>>, d: &Deployment) -> bool {
    live.get(&d.project)
        .and_then(|m| m.get(d.env.as_deref().unwrap_or("")))
        .is_some_and(|s| *s > d.seq)
}

/// Removes the oldest entries (by `time`) until `map` holds 90 % of `max`.
pub(super) fn evict_oldest<K: Clone + Eq + Hash, V>(
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
