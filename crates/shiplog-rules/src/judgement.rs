//! From the state to the judge: the samples of a deployment and of its baseline for each
//! metric of a rollback rule, judged and combined. Used by the engine (live), the backtest
//! and the deployment page, so the three agree.

use crate::config::RollbackSpec;
use crate::judge::{self, Judgement, MetricSpec, MetricVerdict, Reference, Window};
use crate::state::{chrono_dur, Deployment, State};
use chrono::{DateTime, Utc};

/// A rule's judgement of one deployment, with what it was compared with.
#[derive(Debug, Clone)]
pub struct Assessment {
    pub judgement: Judgement,
    /// The baseline deployment (also the rollback target), or why there is none.
    pub baseline: Result<Deployment, String>,
    pub window: Window,
}

/// Judges `d` (a deployment that went live) under rollback rule `rule` at `now`.
pub fn assess(
    spec: &RollbackSpec,
    st: &State,
    d: &Deployment,
    now: DateTime<Utc>,
) -> Option<Assessment> {
    let start = d.succeeded_at?;
    let length = chrono_dur(spec.window);
    let window = Window {
        start,
        length,
        closed: now
            >= start
                .checked_add_signed(length)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
    };
    let baseline = st.baseline_of(d).map(Deployment::header);
    let spec_fixed = spec.fixed_baseline.is_some();
    let shares = judge::alpha_shares(
        spec.alpha,
        &spec.metrics.iter().map(|m| m.critical).collect::<Vec<_>>(),
    );
    let metrics = spec
        .metrics
        .iter()
        .zip(shares)
        .map(|(m, alpha)| {
            // API cost: per served request when both sides' checks count requests, else
            // per API call on both sides (never one unit against the other).
            let per_call = m.requests_from.as_ref().is_some_and(|from| {
                !st.reports_requests(d, from, length, None)
                    || baseline.as_ref().is_ok_and(|b| {
                        spec.fixed_baseline.is_none()
                            && !st.reports_requests(b, from, length, st.replaced_at(b))
                    })
            });
            let samples = |x: &Deployment, cut: Option<DateTime<Utc>>| match &m.requests_from {
                Some(from) => st.cost_samples(x, from, length, cut, per_call),
                None => st.window_samples(x, &m.name, length, cut),
            };
            let new = samples(d, None);
            let base_samples;
            let reference = match (spec.fixed_baseline, &baseline) {
                (Some(b), _) => Reference::Fixed(b),
                (None, Ok(b)) => {
                    // The baseline counts until the next deployment replaced it.
                    base_samples = samples(b, st.replaced_at(b));
                    Reference::Deployment(&base_samples)
                }
                (None, Err(_)) => Reference::Missing,
            };
            let spec = MetricSpec {
                name: m.name.clone(),
                method: m.method,
                alpha,
                limit: m.limit,
                min_samples: m.min_samples,
                aggregate: m.aggregate,
                critical: m.critical,
            };
            let mut evidence = judge::judge_metric(&spec, &new, reference, &window);
            if window.closed && evidence.verdict != MetricVerdict::Degraded {
                // A source failing when the window closed: what it did not read could have
                // changed the verdict, so it is no healthy one (and a failure is never a
                // degraded one: no sample was made up).
                let failing = |x: &Deployment| {
                    st.deployment(&x.project, &x.id)
                        .and_then(|x| x.series(&m.name))
                        .and_then(|s| s.failure.clone())
                };
                let why = failing(d).map(|f| (String::new(), f)).or_else(|| {
                    match (&baseline, spec_fixed) {
                        (Ok(b), false) => failing(b).map(|f| (format!("baseline {}: ", b.id), f)),
                        _ => None,
                    }
                });
                if let Some((whose, f)) = why {
                    evidence.verdict = MetricVerdict::Inconclusive;
                    evidence.reason = format!(
                        "inconclusive: {whose}{} (failing since {}, {} failed read{}); {}",
                        f.reason,
                        shiplog_events::format_rfc3339(&f.since),
                        f.reads,
                        if f.reads == 1 { "" } else { "s" },
                        evidence.reason
                    );
                }
            }
            evidence
        })
        .collect();
    let smoke = st.failed_smoke(d, length).map(|s| s.time);
    Some(Assessment {
        judgement: judge::combine(metrics, smoke, &window),
        baseline,
        window,
    })
}
