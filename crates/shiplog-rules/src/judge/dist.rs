//! The distribution functions the judge needs, from `statrs`, behind names that say what
//! they are used for.

use statrs::distribution::{Binomial, ChiSquared, ContinuousCDF, DiscreteCDF, Normal, StudentsT};
use statrs::function::erf::erfc;

const SQRT_2: f64 = std::f64::consts::SQRT_2;

/// P(Z > z) for a standard normal Z (accurate far into the tail).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / SQRT_2)
}

/// The standard normal density.
pub fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// The z with P(Z > z) = p (p in (0, 1)); ±∞ at the ends.
pub fn normal_isf(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::INFINITY;
    }
    if p >= 1.0 {
        return f64::NEG_INFINITY;
    }
    let n = Normal::standard();
    // inverse_cdf loses precision near 1: use the symmetric side.
    if p < 0.5 {
        -n.inverse_cdf(p)
    } else {
        n.inverse_cdf(1.0 - p)
    }
}

/// P(T > t) for Student's t with `df` degrees of freedom.
pub fn t_sf(t: f64, df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(d) => {
            if t > 0.0 {
                d.cdf(-t)
            } else {
                1.0 - d.cdf(t)
            }
        }
        Err(_) => normal_sf(t),
    }
}

/// The standard-normal score with the same upper tail as `t` under Student's t with `df`
/// degrees of freedom: a t statistic put on the scale the sequential boundaries use.
pub fn t_as_z(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return t;
    }
    let p = t_sf(t, df);
    if p <= 0.0 {
        // Beyond f64's tail: the t value itself is a (conservative) bound.
        return t;
    }
    normal_isf(p).min(t.max(0.0) + 40.0)
}

/// The t quantile: the t with P(T > t) = p.
pub fn t_isf(p: f64, df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(d) => d.inverse_cdf(1.0 - p),
        Err(_) => normal_isf(p),
    }
}

/// P(X ≥ k) for X ~ Binomial(n, p).
pub fn binomial_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    match Binomial::new(p.clamp(0.0, 1.0), n) {
        Ok(b) => b.sf(k - 1),
        Err(_) => 1.0,
    }
}

/// The upper `p` quantile of the chi-squared distribution with `df` degrees of freedom.
pub fn chi2_isf(p: f64, df: f64) -> f64 {
    match ChiSquared::new(df) {
        Ok(c) => c.inverse_cdf(1.0 - p),
        Err(_) => f64::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn against_known_values() {
        assert!(close(normal_sf(1.959_963_984_540_054), 0.025, 1e-9));
        assert!(close(normal_sf(5.0), 2.866_515_718_791_939e-7, 1e-6));
        assert!(close(normal_isf(0.01), 2.326_347_874_040_841, 1e-9));
        assert!(close(normal_isf(0.99), -2.326_347_874_040_841, 1e-9));
        // t with 9 df: P(T > 2.262157) = 0.025.
        assert!(close(t_sf(2.262_157_163, 9.0), 0.025, 1e-6));
        assert!(close(t_isf(0.025, 9.0), 2.262_157_163, 1e-6));
        // A t score is a smaller z score (heavier tails).
        let z = t_as_z(3.0, 8.0);
        assert!(z < 3.0 && z > 2.0, "{z}");
        // Binomial(10, 0.5): P(X >= 8) = 56/1024.
        assert!(close(binomial_tail(8, 10, 0.5), 56.0 / 1024.0, 1e-9));
        assert_eq!(binomial_tail(0, 10, 0.5), 1.0);
        assert_eq!(binomial_tail(11, 10, 0.5), 0.0);
        assert!(close(chi2_isf(0.05, 9.0), 16.918_977_604_620_45, 1e-6));
    }
}
