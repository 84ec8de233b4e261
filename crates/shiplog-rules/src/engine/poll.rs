//! The sources' poller: reads the metrics of rollback rules that have a `source`
//! (Prometheus, HTTP JSON) and writes what it read to the log as `check` events, through
//! the ingestor (the state reads them back from the log, like pushed checks).
//!
//! **The grid.** A deployment that went live at `s` is sampled at `s + k·interval`
//! (k = 1, 2, …) up to the end of its window, each sample covering the interval before
//! its time, and read `settle` after that time (min(interval / 2, 5 s): the scrape that
//! the query needs has arrived). The baseline deployment is read on the same grid over the
//! same window length after it went live, until the next deployment went live (a range
//! query for Prometheus, a request per interval for HTTP JSON). Sample ids name the grid
//! point (`source/<rule>/<metric>/<deployment>/<unix ms>`), so reading a point again (after
//! a restart, or a baseline that was read live before) is deduplicated by ingest.
//!
//! **Failures.** A read that fails (unreachable, an error answer, no series) makes no
//! sample: a `check` without a value whose `error` says why is written instead (id
//! `…/<unix ms>/error`), counted in `/metrics`, and the same points are read again one
//! interval later. A window whose source was still failing when it closed is inconclusive
//! ([`crate::judgement`]), with the reason in the decision.

use super::RulesEngine;
use crate::config::RuleSpec;
use crate::source::template::Fields;
use crate::source::{Fetched, Source, SourceError};
use crate::state::{chrono_dur, Deployment};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use shiplog_events::format_rfc3339;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, warn};

/// At most this many grid points per read (Prometheus refuses ranges over 11,000).
const MAX_POINTS: usize = 1000;

/// Which metric of which rule, for which deployment.
type Key = (usize, usize, String, String);

/// Where reading one deployment's metric stands.
#[derive(Debug, Clone, Default)]
struct Mark {
    /// The last grid point read.
    done: Option<DateTime<Utc>>,
    /// After a failure: not before this.
    retry_at: Option<DateTime<Utc>>,
}

/// One read to make.
struct Job {
    key: Key,
    fields: Fields,
    grid: Vec<DateTime<Utc>>,
    window: Duration,
    env: Option<String>,
    commit: Option<String>,
}

/// Source errors counted for `/metrics`, by (rule, source, class).
pub type ErrorCounts = BTreeMap<(String, &'static str, &'static str), u64>;

/// How long after a grid point it is read.
fn settle(interval: Duration) -> Duration {
    (interval / 2).min(Duration::from_secs(5))
}

/// The grid points of `d` after `done`, up to `limit`.
fn grid(
    d: &Deployment,
    interval: Duration,
    limit: DateTime<Utc>,
    done: Option<DateTime<Utc>>,
) -> Vec<DateTime<Utc>> {
    let Some(start) = d.succeeded_at else {
        return Vec::new();
    };
    let step = chrono_dur(interval);
    let mut k: i32 = match done {
        Some(t) if t >= start => {
            ((t - start).num_milliseconds() / step.num_milliseconds().max(1)) as i32 + 1
        }
        _ => 1,
    };
    let mut out = Vec::new();
    while out.len() < MAX_POINTS {
        let Some(t) = start.checked_add_signed(step * k) else {
            break;
        };
        if t > limit {
            break;
        }
        if done.is_none_or(|x| t > x) {
            out.push(t);
        }
        k += 1;
    }
    out
}

fn fields(d: &Deployment) -> Fields {
    Fields {
        deployment_id: d.id.clone(),
        project: d.project.clone(),
        env: d.env.clone(),
        commit: d.commit.clone(),
        branch: d.branch.clone(),
        url: d.url.clone(),
        previous_deployment_id: d.previous_id.clone(),
    }
}

impl RulesEngine {
    /// Whether any rule reads a source (the poller runs only then).
    pub(super) fn has_sources(&self) -> bool {
        self.sources().next().is_some()
    }

    /// (rule index, metric index, source) of every metric read from a source.
    fn sources(&self) -> impl Iterator<Item = (usize, usize, &Source)> + '_ {
        self.inner
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.rollback().map(|s| (i, s)))
            .flat_map(|(i, spec)| {
                spec.metrics
                    .iter()
                    .enumerate()
                    .filter_map(move |(j, m)| m.source.as_ref().map(|s| (i, j, s)))
            })
    }

    /// The source errors counted so far, by (rule, source, class).
    pub fn source_errors(&self) -> ErrorCounts {
        self.inner.source_errors.lock().unwrap().clone()
    }

    /// Polls the sources until shutdown.
    pub(super) async fn poll_loop(self, mut shutdown: watch::Receiver<bool>) {
        let client = match reqwest::Client::builder().build() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot build the HTTP client of the rules' sources");
                return;
            }
        };
        let tick = self
            .sources()
            .map(|(_, _, s)| s.interval / 4)
            .min()
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut marks: HashMap<Key, Mark> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => break,
            }
            if !self.is_ready() {
                continue;
            }
            let now = Utc::now();
            let (jobs, live) = self.poll_jobs(now, &marks);
            marks.retain(|k, _| live.contains_key(k));
            for job in jobs {
                let mark = marks.entry(job.key.clone()).or_default();
                self.read_one(&client, job, mark).await;
            }
        }
    }

    /// The reads due at `now`, and every key still of use (the others' marks are dropped).
    fn poll_jobs(
        &self,
        now: DateTime<Utc>,
        marks: &HashMap<Key, Mark>,
    ) -> (Vec<Job>, HashMap<Key, ()>) {
        let st = self.inner.state.lock().unwrap();
        let oldest = self.inner.started_at - chrono_dur(self.inner.settings.catch_up);
        let mut jobs = Vec::new();
        let mut live = HashMap::new();
        for (i, j, source) in self.sources() {
            let rule = &self.inner.rules[i];
            let RuleSpec::Rollback(spec) = &rule.spec else {
                continue;
            };
            let window = chrono_dur(spec.window);
            let ready_at = now - chrono_dur(settle(source.interval));
            for d in st.open_candidates(rule.name(), &rule.project, rule.env.as_deref()) {
                let Some(start) = d.succeeded_at else {
                    continue;
                };
                let end = start
                    .checked_add_signed(window)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                if end < oldest
                    || d.failed
                    || d.rolled_back
                    || d.rollback_started
                    || st.superseded(&d)
                {
                    continue;
                }
                let mut targets = vec![(d.clone(), end.min(ready_at))];
                if spec.fixed_baseline.is_none() {
                    if let Ok(b) = st.baseline_of(&d) {
                        let bend = b
                            .succeeded_at
                            .and_then(|s| s.checked_add_signed(window))
                            .unwrap_or(DateTime::<Utc>::MAX_UTC);
                        let cut = st.replaced_at(b).map_or(bend, |r| r.min(bend));
                        targets.push((b.header(), cut.min(ready_at)));
                    }
                }
                for (x, limit) in targets {
                    let key = (i, j, x.project.clone(), x.id.clone());
                    if live.insert(key.clone(), ()).is_some() {
                        continue;
                    }
                    let mark = marks.get(&key).cloned().unwrap_or_default();
                    if mark.retry_at.is_some_and(|r| now < r) {
                        continue;
                    }
                    let points = grid(&x, source.interval, limit, mark.done);
                    if points.is_empty() {
                        continue;
                    }
                    jobs.push(Job {
                        key,
                        fields: fields(&x),
                        grid: points,
                        window: spec.window,
                        env: x.env.clone(),
                        commit: x.commit.clone(),
                    });
                }
            }
        }
        (jobs, live)
    }

    /// Reads one job's points and writes what it read (samples, or the failure).
    async fn read_one(&self, client: &reqwest::Client, job: Job, mark: &mut Mark) {
        let (i, j, _, _) = job.key;
        let rule = &self.inner.rules[i];
        let Some(m) = rule.rollback().and_then(|s| s.metrics.get(j)) else {
            return;
        };
        let Some(source) = &m.source else { return };
        let reading = tokio::time::timeout(
            source.timeout * 3,
            source.read(client, &job.fields, &job.grid, job.window),
        )
        .await
        .unwrap_or_else(|_| crate::source::Reading {
            query: String::new(),
            result: Err(SourceError::Unreachable(format!(
                "{} unreachable: no answer in {:?}",
                source.name(),
                source.timeout * 3
            ))),
        });
        let envelope = |id: String, time: DateTime<Utc>, data: Map<String, Value>| {
            let mut ev = json!({
                "id": id,
                "kind": "check",
                "source": format!("shiplog-rules/{}", source.name()),
                "time": format_rfc3339(&time),
                "project": job.fields.project,
                "deployment_id": job.fields.deployment_id,
                "data": data,
            });
            if let Some(env) = &job.env {
                ev["env"] = json!(env);
            }
            if let Some(c) = &job.commit {
                ev["commit"] = json!(c);
            }
            ev
        };
        let base_id = format!(
            "source/{}/{}/{}",
            rule.name(),
            m.name,
            job.fields.deployment_id
        );
        let mut data = Map::new();
        data.insert("name".into(), json!(m.name));
        data.insert("source".into(), json!(source.name()));
        data.insert("rule".into(), json!(rule.name()));
        if !reading.query.is_empty() {
            data.insert("query".into(), json!(reading.query));
        }
        match reading.result {
            Ok(samples) if !samples.is_empty() => {
                let last = samples.iter().map(|s| s.time).max();
                let events: Vec<Value> = samples
                    .iter()
                    .map(|s: &Fetched| {
                        let mut d = data.clone();
                        if let Some(v) = s.value {
                            d.insert("value".into(), json!(v));
                        }
                        if let (Some(e), Some(r)) = (s.errors, s.requests) {
                            d.insert("errors".into(), json!(e));
                            d.insert("requests".into(), json!(r));
                            d.insert("unit".into(), json!("ratio"));
                        }
                        envelope(
                            format!("{base_id}/{}", s.time.timestamp_millis()),
                            s.time,
                            d,
                        )
                    })
                    .collect();
                match self.ingest_only(events).await {
                    Ok(()) => {
                        mark.done = last.max(mark.done);
                        mark.retry_at = None;
                        debug!(rule = %rule.name(), deployment = %job.fields.deployment_id, samples = samples.len(), "source samples written");
                    }
                    Err(e) => warn!(error = %e, "cannot write source samples; reading them again"),
                }
            }
            // Read, but no interval had a request: no rate to judge, and no failure.
            Ok(_) => {
                mark.done = job.grid.last().copied().max(mark.done);
                mark.retry_at = None;
            }
            Err(err) => {
                let at = *job.grid.last().expect("a job has points");
                warn!(rule = %rule.name(), deployment = %job.fields.deployment_id, error = %err, "rule source failed: no sample");
                *self
                    .inner
                    .source_errors
                    .lock()
                    .unwrap()
                    .entry((rule.name().to_string(), source.name(), err.class()))
                    .or_insert(0) += 1;
                let mut d = data;
                d.insert("error".into(), json!(err.to_string()));
                let ev = envelope(format!("{base_id}/{}/error", at.timestamp_millis()), at, d);
                if let Err(e) = self.ingest_only(vec![ev]).await {
                    warn!(error = %e, "cannot write a source failure");
                }
                mark.retry_at = Some(Utc::now() + chrono_dur(source.interval));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_points_follow_the_deployment() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut d = Deployment::new("d", "p", Some("e"), 1, t0);
        d.succeeded_at = Some(t0);
        let s = |x| t0 + chrono::Duration::seconds(x);
        let g = grid(&d, Duration::from_secs(3), s(10), None);
        assert_eq!(g, vec![s(3), s(6), s(9)]);
        let g = grid(&d, Duration::from_secs(3), s(13), Some(s(6)));
        assert_eq!(g, vec![s(9), s(12)]);
        assert!(grid(&d, Duration::from_secs(3), s(2), None).is_empty());
    }
}
