//! The default method: a group-sequential one-sided test, looked at as samples arrive.
//!
//! At each look (a sample, in time order, once `min_samples` are in; later looks only when
//! the information grew by at least [`MIN_GROWTH`]) the judge computes
//! - on **counts** (every sample on both sides carries `errors` and `requests`): the two
//!   proportions' difference over its standard error under "no difference" (pooled rate),
//!   widened by the dispersion between intervals when it is significantly above binomial
//!   noise (quasi-binomial); information = 1 / (1/requests_new + 1/requests_baseline);
//! - on **values**: Student's t on the difference of means with the pooled variance, put on
//!   the normal scale; information = 1 / (1/n_new + 1/n_baseline);
//! - against a fixed baseline or `max_value`: the same one-sample statistics;
//!
//! and compares it with the look's boundary from [`super::spending`]. Degraded at the first
//! look where the statistic reaches the boundary *and* the estimate is above the practical
//! limit (`max_ratio` × baseline, or `max_value`). One outlying interval per side is set
//! aside first ([`super::outlier`]).

use super::dist::{chi2_isf, normal_sf, t_as_z};
use super::evidence::{Basis, Evidence};
use super::spending::{spent_by, Boundaries};
use super::{outlier, Limit, MetricSpec, MetricVerdict, Reference, Sample, Window};

/// A later look is taken only when the information grew by this fraction since the last one
/// (so thousands of samples make tens of looks, not thousands).
pub const MIN_GROWTH: f64 = 0.05;
/// The dispersion between intervals is used only when its chi-squared test rejects pure
/// binomial noise at this level.
const DISPERSION_TEST: f64 = 0.05;

/// The summary of one side's samples (after an outlier is set aside).
#[derive(Debug, Clone, Default)]
struct Side {
    n: usize,
    mean: f64,
    var: f64,
    errors: u64,
    requests: u64,
    low: f64,
    high: f64,
    /// Pearson chi-squared of the intervals around the side's own rate, and its df.
    chi2: f64,
    df: usize,
    /// Mean and variance of the square roots of the values (all values ≥ 0), the scale the
    /// values are tested on: it steadies the variance of skewed, rate-like samples.
    root_mean: f64,
    root_var: f64,
    nonnegative: bool,
}

impl Side {
    fn of(samples: &[&Sample], counts: bool) -> Side {
        let n = samples.len();
        let values: Vec<f64> = samples.iter().map(|s| s.metric_value()).collect();
        let mean = if counts {
            let (e, r) = totals(samples);
            if r > 0 {
                e as f64 / r as f64
            } else {
                0.0
            }
        } else if n > 0 {
            values.iter().sum::<f64>() / n as f64
        } else {
            0.0
        };
        let (_, var) = mean_var(&values);
        let nonnegative = values.iter().all(|x| *x >= 0.0);
        let roots: Vec<f64> = values.iter().map(|x| x.max(0.0).sqrt()).collect();
        let (root_mean, root_var) = mean_var(&roots);
        let (errors, requests) = if counts { totals(samples) } else { (0, 0) };
        let (mut chi2, mut df) = (0.0, 0);
        if counts && n > 1 && mean > 0.0 && mean < 1.0 {
            for s in samples {
                let r = s.requests.unwrap_or(0) as f64;
                let e = s.errors.unwrap_or(0) as f64;
                chi2 += (e - r * mean).powi(2) / (r * mean * (1.0 - mean));
            }
            df = n - 1;
        }
        Side {
            n,
            mean,
            var,
            errors,
            requests,
            low: values.iter().cloned().fold(f64::INFINITY, f64::min),
            high: values.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            chi2,
            df,
            root_mean,
            root_var,
            nonnegative,
        }
    }
}

/// The mean and the sample variance (0 below two values).
fn mean_var(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var)
}

fn totals(samples: &[&Sample]) -> (u64, u64) {
    samples.iter().fold((0, 0), |(e, r), s| {
        (e + s.errors.unwrap_or(0), r + s.requests.unwrap_or(0))
    })
}

/// `samples` without the outlier, and the outlier's time.
fn trimmed<'a>(
    samples: &[&'a Sample],
    counts: bool,
) -> (Vec<&'a Sample>, Option<chrono::DateTime<chrono::Utc>>) {
    match outlier::find(samples, counts) {
        Some(i) => {
            let t = samples[i].time;
            let mut v = samples.to_vec();
            v.remove(i);
            (v, Some(t))
        }
        None => (samples.to_vec(), None),
    }
}

/// The last look taken: the samples in, the statistic, its boundary, the new side and the
/// outlier set aside.
type LastLook = (
    usize,
    Look,
    f64,
    Side,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// One look's statistic.
struct Look {
    z: f64,
    info: f64,
    /// The estimated difference (new − reference) and its standard error.
    diff: f64,
    se: f64,
}

pub(super) fn judge(
    spec: &MetricSpec,
    new: &[Sample],
    reference: Reference<'_>,
    window: &Window,
) -> Evidence {
    let base: Option<&[Sample]> = match reference {
        Reference::Deployment(b) => Some(b),
        _ => None,
    };
    let counts = new.iter().all(Sample::has_counts)
        && base.is_none_or(|b| b.iter().all(Sample::has_counts))
        && !new.is_empty();
    let basis = if counts { Basis::Counts } else { Basis::Values };
    let mut ev = Evidence::new(spec, basis, new.len());

    // The reference: a baseline deployment's samples (outlier set aside), a fixed value, or
    // the limit itself.
    let base_side = base.map(|b| {
        let refs: Vec<&Sample> = b.iter().collect();
        let (kept, out) = trimmed(&refs, counts);
        ev.baseline_outliers.extend(out);
        Side::of(&kept, counts)
    });
    if let Some(b) = &base_side {
        ev.baseline_samples = Some(b.n);
        if b.n > 0 {
            ev.baseline = Some(b.mean);
            ev.baseline_low = Some(b.low);
            ev.baseline_high = Some(b.high);
        }
        if counts {
            ev.baseline_errors = Some(b.errors);
            ev.baseline_requests = Some(b.requests);
        }
    }
    let (reference_value, practical) = match (spec.limit, reference, &base_side) {
        (Limit::Value(v), _, _) => (Some(v), Some(v)),
        (Limit::Ratio(r), Reference::Fixed(b), _) => (Some(b), Some(b * r)),
        (Limit::Ratio(r), Reference::Deployment(_), Some(b)) if usable_baseline(b, counts) => {
            (Some(b.mean), Some(b.mean * r))
        }
        _ => (None, None),
    };
    if let (Limit::Ratio(_), Reference::Fixed(b)) = (spec.limit, reference) {
        ev.baseline = Some(b);
    }
    ev.threshold = practical;

    let mut bounds = Boundaries::new();
    let mut last_info = 0.0f64;
    let refs: Vec<&Sample> = new.iter().collect();
    let mut outcome: Option<LastLook> = None;
    for k in spec.min_samples.max(1)..=new.len() {
        let (kept, out) = trimmed(&refs[..k], counts);
        let side = Side::of(&kept, counts);
        let Some(look) = statistic(&side, base_side.as_ref(), reference_value, spec, counts) else {
            continue;
        };
        let last = k == new.len();
        if look.info < last_info * (1.0 + MIN_GROWTH) && !(last && look.info > last_info) {
            continue;
        }
        last_info = look.info;
        let alpha = spent_by(spec.alpha, window.fraction(new[k - 1].time));
        let c = bounds.next(look.info, alpha);
        ev.looks += 1;
        let above = practical.is_some_and(|p| side.mean > p);
        let crossed = look.z >= c && above;
        outcome = Some((k, look, c, side, out));
        if crossed {
            break;
        }
    }
    match outcome {
        None => {
            ev.verdict = ev.conclude_or_wait(window, false);
            if let Some(v) = new.iter().map(Sample::metric_value).reduce(|a, b| a + b) {
                ev.value = Some(v / new.len() as f64);
            }
        }
        Some((k, look, c, side, out)) => {
            ev.samples = side.n;
            ev.value = Some(side.mean);
            ev.outliers.extend(out);
            if counts {
                ev.errors = Some(side.errors);
                ev.requests = Some(side.requests);
            }
            ev.statistic = Some(look.z);
            ev.boundary = c.is_finite().then_some(c);
            ev.p_value = Some(normal_sf(look.z));
            ev.p_limit = c.is_finite().then(|| normal_sf(c));
            if let Some(r) = reference_value.filter(|r| *r > 0.0) {
                if matches!(spec.limit, Limit::Ratio(_)) {
                    ev.ratio = Some(side.mean / r);
                    if c.is_finite() {
                        ev.ratio_low = Some(((r + look.diff - c * look.se) / r).max(0.0));
                        ev.ratio_high = Some((r + look.diff + c * look.se) / r);
                    }
                }
            }
            let above = practical.is_some_and(|p| side.mean > p);
            if look.z >= c && above {
                ev.verdict = MetricVerdict::Degraded;
                ev.deciding_time = Some(new[k - 1].time);
            } else {
                ev.verdict = ev.conclude_or_wait(window, new.len() >= spec.min_samples);
            }
        }
    }
    ev
}

fn usable_baseline(b: &Side, counts: bool) -> bool {
    if counts {
        b.requests > 0
    } else {
        b.n >= 2
    }
}

/// The look's statistic, or None when it cannot be computed yet (no reference, too few
/// values for a variance).
fn statistic(
    new: &Side,
    base: Option<&Side>,
    reference: Option<f64>,
    spec: &MetricSpec,
    counts: bool,
) -> Option<Look> {
    let reference = reference?;
    let two_sample = matches!(spec.limit, Limit::Ratio(_)) && base.is_some();
    if counts {
        if new.requests == 0 {
            return None;
        }
        let nn = new.requests as f64;
        let phi = dispersion(new, base.filter(|_| two_sample));
        if two_sample {
            let b = base?;
            let nb = b.requests as f64;
            let pooled = (new.errors + b.errors) as f64 / (nn + nb);
            let var = (pooled * (1.0 - pooled)).max(0.25 / (nn + nb).powi(2))
                * phi
                * (1.0 / nn + 1.0 / nb);
            let se = var.sqrt();
            let diff = new.mean - b.mean;
            // Yates's continuity correction: the counts are discrete.
            let corrected = diff - 0.5 * (1.0 / nn + 1.0 / nb);
            Some(Look {
                z: corrected.max(0.0).min(diff) / se + diff.min(0.0) / se,
                info: 1.0 / (1.0 / nn + 1.0 / nb),
                diff,
                se,
            })
        } else {
            let p0 = reference.clamp(0.0, 1.0);
            let var = (p0 * (1.0 - p0)).max(0.25 / nn.powi(2)) * phi / nn;
            let se = var.sqrt();
            let diff = new.mean - reference;
            Some(Look {
                z: diff / se,
                info: nn,
                diff,
                se,
            })
        }
    } else if two_sample {
        let b = base?;
        if new.n < 2 || b.n < 2 {
            return None;
        }
        let (n, m) = (new.n as f64, b.n as f64);
        let df = n + m - 2.0;
        let info = 1.0 / (1.0 / n + 1.0 / m);
        let t_on = |(xm, xv): (f64, f64), (ym, yv): (f64, f64)| {
            let pooled = ((n - 1.0) * xv + (m - 1.0) * yv) / df;
            let floor = (1e-3 * xm.abs().max(ym.abs())).powi(2).max(1e-300);
            let se = (pooled.max(floor) / info).sqrt();
            ((xm - ym) / se, se)
        };
        // The test on the square roots when every value is ≥ 0 (rates, latencies, costs);
        // the difference and its interval are reported on the values' own scale.
        let (t, _) = if new.nonnegative && b.nonnegative {
            t_on((new.root_mean, new.root_var), (b.root_mean, b.root_var))
        } else {
            t_on((new.mean, new.var), (b.mean, b.var))
        };
        let (_, se) = t_on((new.mean, new.var), (b.mean, b.var));
        Some(Look {
            z: t_as_z(t, df),
            info,
            diff: new.mean - b.mean,
            se,
        })
    } else {
        if new.n < 2 {
            return None;
        }
        let n = new.n as f64;
        let floor = (1e-3 * new.mean.abs().max(reference.abs()))
            .powi(2)
            .max(1e-300);
        let se = (new.var.max(floor) / n).sqrt();
        let diff = new.mean - reference;
        Some(Look {
            z: t_as_z(diff / se, n - 1.0),
            info: n,
            diff,
            se,
        })
    }
}

/// The quasi-binomial dispersion of the intervals (both sides pooled): their chi-squared
/// over its degrees of freedom when that rejects binomial noise, else 1.
fn dispersion(new: &Side, base: Option<&Side>) -> f64 {
    let (chi2, df) = base
        .into_iter()
        .chain([new])
        .fold((0.0, 0usize), |(c, d), s| (c + s.chi2, d + s.df));
    if df == 0 || chi2 <= chi2_isf(DISPERSION_TEST, df as f64) {
        1.0
    } else {
        chi2 / df as f64
    }
}
