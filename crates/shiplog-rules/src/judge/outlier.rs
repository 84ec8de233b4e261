//! Setting aside one outlying interval, so that a single transient blip (a cold start, one
//! bad minute) never decides a rollback on its own.
//!
//! At most one sample per side is set aside: the worst one (highest rate or value), and only
//! when it is far outside what the other samples of the same deployment make plausible:
//! - with counts: its errors are improbable (upper binomial tail below [`COUNTS_TAIL`]) at
//!   the rate of the other intervals, and its rate is at least [`MIN_FACTOR`] times theirs;
//! - with values only: it lies above a one-sided prediction bound of the others (Student's t
//!   at [`VALUES_TAIL`], with a spread of at least a quarter of their mean), and is at least
//!   [`MIN_FACTOR`] times their mean when that mean is positive.
//!
//! A degradation that lasts shows in several intervals and is not set aside; a deployment that
//! breaks in its very last interval is judged without that interval (two bad intervals are
//! needed), which is the price of never rolling back on one blip.

use super::dist::{binomial_tail, t_isf};
use super::Sample;

/// Upper binomial tail below which an interval's error count is an outlier.
pub const COUNTS_TAIL: f64 = 1e-6;
/// One-sided tail of the prediction bound for values.
pub const VALUES_TAIL: f64 = 1e-4;
/// An outlier is at least this many times the others' rate or mean.
pub const MIN_FACTOR: f64 = 2.0;

/// The index of the sample to set aside, if any, among `samples` (counts when `counts`).
pub fn find(samples: &[&Sample], counts: bool) -> Option<usize> {
    if samples.len() < 3 {
        return None;
    }
    if counts {
        let (i, worst) = samples
            .iter()
            .enumerate()
            .filter(|(_, s)| s.requests.unwrap_or(0) > 0)
            .max_by(|a, b| a.1.rate().total_cmp(&b.1.rate()))?;
        let (errors, requests) = samples
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .fold((0u64, 0u64), |(e, r), (_, s)| {
                (e + s.errors.unwrap_or(0), r + s.requests.unwrap_or(0))
            });
        if requests == 0 {
            return None;
        }
        let rest = (errors as f64 / requests as f64).max(0.5 / requests as f64);
        let k = worst.errors.unwrap_or(0);
        let n = worst.requests.unwrap_or(0);
        let far = binomial_tail(k, n, rest) < COUNTS_TAIL;
        (far && worst.rate() >= MIN_FACTOR * rest).then_some(i)
    } else {
        let (i, worst) = samples
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.metric_value().total_cmp(&b.1.metric_value()))?;
        let rest: Vec<f64> = samples
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.metric_value())
            .collect();
        let k = rest.len() as f64;
        let mean = rest.iter().sum::<f64>() / k;
        let var = rest.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0);
        let sd = var.sqrt().max(0.25 * mean.abs()).max(1e-12);
        let bound = mean + t_isf(VALUES_TAIL, k - 1.0) * sd * (1.0 + 1.0 / k).sqrt();
        let x = worst.metric_value();
        let relative = mean <= 0.0 || x >= MIN_FACTOR * mean;
        (x > bound && relative).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn counts(xs: &[(u64, u64)]) -> Vec<Sample> {
        xs.iter()
            .map(|(e, r)| Sample::counts(Utc::now(), *e, *r))
            .collect()
    }

    fn values(xs: &[f64]) -> Vec<Sample> {
        xs.iter().map(|v| Sample::value(Utc::now(), *v)).collect()
    }

    fn refs(v: &[Sample]) -> Vec<&Sample> {
        v.iter().collect()
    }

    #[test]
    fn a_blip_is_set_aside_a_lasting_rise_is_not() {
        let blip = counts(&[(4, 200), (3, 190), (50, 200), (5, 210), (4, 200)]);
        assert_eq!(find(&refs(&blip), true), Some(2));
        let raised = counts(&[(12, 200), (9, 190), (14, 200), (11, 210), (10, 200)]);
        assert_eq!(find(&refs(&raised), true), None);
        let values_blip = values(&[
            215.0, 220.0, 780.0, 210.0, 205.0, 212.0, 224.0, 208.0, 216.0, 219.0,
        ]);
        assert_eq!(find(&refs(&values_blip), false), Some(2));
        let slow = values(&[
            410.0, 430.0, 450.0, 470.0, 455.0, 420.0, 440.0, 480.0, 465.0, 435.0,
        ]);
        assert_eq!(find(&refs(&slow), false), None);
        // Too few samples to tell.
        assert_eq!(find(&refs(&values(&[1.0, 100.0])), false), None);
    }
}
