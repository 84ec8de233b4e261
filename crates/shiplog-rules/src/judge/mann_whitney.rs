//! Kayenta's method: the Mann-Whitney U test (one-sided: the new deployment's values tend to
//! be larger), with the Hodges-Lehmann shift and an effect-size floor, at one look when the
//! window closes. A single look keeps the test's level; the price is that a degradation is
//! only acted on at the end of the window. Ranks make it robust to a single outlier without
//! setting anything aside. On counts, each interval's rate is one observation.

use super::dist::{normal_isf, normal_sf};
use super::evidence::{Basis, Evidence};
use super::{Limit, MetricSpec, MetricVerdict, Reference, Sample, Window};

pub(super) fn judge(
    spec: &MetricSpec,
    new: &[Sample],
    reference: Reference<'_>,
    window: &Window,
) -> Evidence {
    let basis = if !new.is_empty() && new.iter().all(Sample::has_counts) {
        Basis::Counts
    } else {
        Basis::Values
    };
    let mut ev = Evidence::new(spec, basis, new.len());
    let x: Vec<f64> = new.iter().map(Sample::metric_value).collect();
    if !x.is_empty() {
        ev.value = Some(mean(&x));
    }
    let (Limit::Ratio(ratio), Reference::Deployment(base)) = (spec.limit, reference) else {
        // Validation refuses it; judged as no baseline.
        ev.verdict = ev.conclude_or_wait(window, false);
        return ev;
    };
    let y: Vec<f64> = base.iter().map(Sample::metric_value).collect();
    ev.baseline_samples = Some(y.len());
    if y.len() >= 2 {
        let b = mean(&y);
        ev.baseline = Some(b);
        ev.threshold = Some(b * ratio);
        ev.baseline_low = y.iter().cloned().reduce(f64::min);
        ev.baseline_high = y.iter().cloned().reduce(f64::max);
        if b > 0.0 && !x.is_empty() {
            ev.ratio = Some(mean(&x) / b);
        }
    }
    let judgeable = y.len() >= 2 && x.len() >= spec.min_samples;
    if !window.closed || !judgeable {
        ev.verdict = ev.conclude_or_wait(window, judgeable);
        return ev;
    }
    ev.looks = 1;
    let (u, z) = u_statistic(&x, &y);
    ev.statistic = Some(u);
    let p = normal_sf(z);
    ev.p_value = Some(p);
    ev.p_limit = Some(spec.alpha);
    ev.boundary = Some(normal_isf(spec.alpha));
    // Hodges-Lehmann shift with its distribution-free confidence interval, as a ratio.
    if let Some(b) = ev.baseline.filter(|b| *b > 0.0) {
        let (lo, hi) = shift_interval(&x, &y, spec.alpha);
        ev.ratio_low = Some(((b + lo) / b).max(0.0));
        ev.ratio_high = Some((b + hi) / b);
    }
    let above = ev.threshold.zip(ev.value).is_some_and(|(t, v)| v > t);
    ev.verdict = if p < spec.alpha && above {
        ev.deciding_time = new.iter().map(|s| s.time).max();
        MetricVerdict::Degraded
    } else {
        MetricVerdict::Healthy
    };
    ev
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// U of `x` over `y` (pairs where x > y, ties count a half) and its z score (normal
/// approximation with the tie correction and a continuity correction).
pub(super) fn u_statistic(x: &[f64], y: &[f64]) -> (f64, f64) {
    let (n, m) = (x.len() as f64, y.len() as f64);
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|v| (*v, true))
        .chain(y.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = all.len();
    let mut rank_x = 0.0;
    let mut ties = 0.0;
    let mut i = 0;
    while i < total {
        let mut j = i;
        while j + 1 < total && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        for item in &all[i..=j] {
            if item.1 {
                rank_x += r;
            }
        }
        i = j + 1;
    }
    let u = rank_x - n * (n + 1.0) / 2.0;
    let nn = n + m;
    let var = n * m / 12.0 * ((nn + 1.0) - ties / (nn * (nn - 1.0)));
    if var <= 0.0 {
        return (u, 0.0);
    }
    let z = (u - n * m / 2.0 - 0.5) / var.sqrt();
    (u, z)
}

/// The Hodges-Lehmann two-sided (1 − 2α) interval of the shift x − y: order statistics of
/// the pairwise differences at the normal-approximation ranks.
fn shift_interval(x: &[f64], y: &[f64], alpha: f64) -> (f64, f64) {
    let mut d: Vec<f64> = x
        .iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect();
    d.sort_by(|a, b| a.total_cmp(b));
    let (n, m) = (x.len() as f64, y.len() as f64);
    let k = (n * m / 2.0 - normal_isf(alpha) * (n * m * (n + m + 1.0) / 12.0).sqrt()).floor();
    let k = (k.max(0.0) as usize).min(d.len() - 1);
    (d[k], d[d.len() - 1 - k])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u_against_a_hand_count() {
        // x = {3, 4}, y = {1, 2, 3}: pairs x > y: 3>1, 3>2, 4>1, 4>2, 4>3 = 5, 3=3 half: 5.5.
        let (u, z) = u_statistic(&[3.0, 4.0], &[1.0, 2.0, 3.0]);
        assert_eq!(u, 5.5);
        assert!(z > 0.0);
        let (u, _) = u_statistic(&[1.0], &[2.0]);
        assert_eq!(u, 0.0);
    }
}
