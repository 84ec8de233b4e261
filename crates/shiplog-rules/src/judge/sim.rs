//! Seeded simulations of the judge: how often it rolls back a healthy deployment, and how
//! often it catches a degraded one, measured rather than promised (`shiplog bench
//! judgement`, docs/benchmarks.md; a test asserts the goals on the seeded run).
//!
//! Each simulated deployment and its baseline report `samples` intervals of about
//! `requests` requests (Poisson) each, spread over a 10-minute window; the baseline's error
//! probability is drawn uniformly between `base_low` and `base_high`, and each interval's
//! errors are binomial. Scenarios: healthy (the same probability), healthy with one
//! transient blip (one interval at 25% errors), and degraded by a factor. Each deployment is
//! judged as the engine does: a look at every sample as it arrives, a last verdict at the
//! window's end, either with the counts on the samples or with their rates only.

use super::{
    alpha_shares, judge_metric, Aggregate, Limit, Method, MetricSpec, MetricVerdict, Reference,
    Sample, Window,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Poisson};

/// What the simulation draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Deployments per scenario.
    pub deployments: usize,
    pub seed: u64,
    /// Samples per window, on both sides.
    pub samples: usize,
    /// Mean requests per sample.
    pub requests: f64,
    pub base_low: f64,
    pub base_high: f64,
    /// The error rate of a blip interval.
    pub blip: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            deployments: 2000,
            seed: 20261203,
            samples: 10,
            requests: 200.0,
            base_low: 0.005,
            base_high: 0.05,
            blip: 0.25,
        }
    }
}

/// A simulated situation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    Healthy,
    /// Healthy, with one interval (at a random place) at the blip's error rate.
    Blip,
    /// Every interval's error probability multiplied by this factor.
    Degraded(f64),
}

impl Scenario {
    pub fn label(&self) -> String {
        match self {
            Scenario::Healthy => "healthy".into(),
            Scenario::Blip => "healthy + one blip".into(),
            Scenario::Degraded(f) => format!("degraded {f}×"),
        }
    }

    fn index(&self) -> u64 {
        match self {
            Scenario::Healthy => 1,
            Scenario::Blip => 2,
            Scenario::Degraded(f) => 100 + (f * 100.0) as u64,
        }
    }
}

/// How the samples carry the error rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// `errors` and `requests` on every sample.
    Counts,
    /// Only `value` (the rate), as most probes send today.
    RateOnly,
}

impl Carried {
    pub fn label(self) -> &'static str {
        match self {
            Carried::Counts => "errors + requests",
            Carried::RateOnly => "rate only",
        }
    }
}

/// The rule judged: `method` with the docs' default rule otherwise (`max_ratio = 1.5`,
/// `min_samples = 5`, a 10-minute window) at confidence `1 - alpha`.
pub fn default_spec(method: Method, alpha: f64) -> MetricSpec {
    MetricSpec {
        name: "error_rate".into(),
        method,
        alpha: alpha_shares(alpha, &[false])[0],
        limit: Limit::Ratio(1.5),
        min_samples: 5,
        aggregate: Aggregate::Mean,
        critical: false,
    }
}

/// The outcome of one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    pub scenario: Scenario,
    pub method: Method,
    pub carried: Carried,
    pub deployments: usize,
    /// Judged degraded (a rollback), by the window's end.
    pub degraded: usize,
    /// Judged degraded before the window's end (at a look before the last sample).
    pub early: usize,
    pub inconclusive: usize,
    /// Per band of baseline error probability: (low, high, degraded, deployments).
    pub bands: Vec<(f64, f64, usize, usize)>,
}

impl SimResult {
    pub fn rate(&self) -> f64 {
        self.degraded as f64 / self.deployments.max(1) as f64
    }
}

/// The baseline bands the results are broken down by.
pub const BANDS: [(f64, f64); 4] = [(0.005, 0.01), (0.01, 0.02), (0.02, 0.035), (0.035, 0.05)];

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

/// One side's samples: `rates[i]` per interval, at minutes 1..=n of a window from `start`.
fn draw(
    rng: &mut ChaCha8Rng,
    rates: &[f64],
    requests: f64,
    start: DateTime<Utc>,
    carried: Carried,
) -> Vec<Sample> {
    let poisson = Poisson::new(requests).expect("positive mean");
    rates
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let n = (poisson.sample(rng) as u64).max(1);
            let e = Binomial::new(n, p.clamp(0.0, 1.0))
                .expect("probability")
                .sample(rng);
            let time = start + Duration::seconds(60 * (i as i64 + 1));
            match carried {
                Carried::Counts => Sample::counts(time, e, n),
                // Probes round the rate they send.
                Carried::RateOnly => Sample::value(time, (e as f64 / n as f64 * 1e4).round() / 1e4),
            }
        })
        .collect()
}

/// Runs one scenario.
pub fn run(spec: &MetricSpec, scenario: Scenario, carried: Carried, cfg: &SimConfig) -> SimResult {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (scenario.index() << 32));
    let mut out = SimResult {
        scenario,
        method: spec.method,
        carried,
        deployments: cfg.deployments,
        degraded: 0,
        early: 0,
        inconclusive: 0,
        bands: BANDS.iter().map(|(l, h)| (*l, *h, 0, 0)).collect(),
    };
    let length = Duration::seconds(60 * cfg.samples as i64);
    for _ in 0..cfg.deployments {
        let p: f64 = rng.gen_range(cfg.base_low..cfg.base_high);
        let base_start = t0();
        let new_start = t0() + Duration::hours(1);
        let base = draw(
            &mut rng,
            &vec![p; cfg.samples],
            cfg.requests,
            base_start,
            carried,
        );
        let mut rates = vec![p; cfg.samples];
        match scenario {
            Scenario::Healthy => {}
            Scenario::Blip => {
                let i = rng.gen_range(0..cfg.samples);
                rates[i] = cfg.blip;
            }
            Scenario::Degraded(f) => rates.iter_mut().for_each(|r| *r *= f),
        }
        let new = draw(&mut rng, &rates, cfg.requests, new_start, carried);
        let window = Window {
            start: new_start,
            length,
            closed: true,
        };
        let ev = judge_metric(spec, &new, Reference::Deployment(&base), &window);
        let band = out.bands.iter_mut().find(|b| p >= b.0 && p < b.1);
        if let Some(b) = band {
            b.3 += 1;
        }
        match ev.verdict {
            MetricVerdict::Degraded => {
                out.degraded += 1;
                if ev.deciding_time < new.iter().map(|s| s.time).max() {
                    out.early += 1;
                }
                if let Some(b) = out.bands.iter_mut().find(|b| p >= b.0 && p < b.1) {
                    b.2 += 1;
                }
            }
            MetricVerdict::Inconclusive => out.inconclusive += 1,
            _ => {}
        }
    }
    out
}

/// The scenarios of the benchmark, in order.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::Healthy,
        Scenario::Blip,
        Scenario::Degraded(1.5),
        Scenario::Degraded(2.0),
        Scenario::Degraded(2.5),
        Scenario::Degraded(3.0),
    ]
}

/// Every scenario × how the rate is carried × method, at confidence `1 - alpha`.
pub fn table(cfg: &SimConfig, alpha: f64, methods: &[Method]) -> Vec<SimResult> {
    let mut out = Vec::new();
    for method in methods {
        let spec = default_spec(*method, alpha);
        for carried in [Carried::RateOnly, Carried::Counts] {
            for s in scenarios() {
                out.push(run(&spec, s, carried, cfg));
            }
        }
    }
    out
}

/// The goals of the judgement issue, checked on a table's rows for one method and carrier:
/// false rollbacks ≤ 1% (healthy) and ≤ 2% (one blip), detection ≥ 95% at 2.5×.
pub fn goals_met(rows: &[SimResult], method: Method, carried: Carried) -> Result<(), String> {
    let find = |s: Scenario| {
        rows.iter()
            .find(|r| r.method == method && r.carried == carried && r.scenario == s)
            .ok_or_else(|| format!("no row for {}", s.label()))
    };
    let healthy = find(Scenario::Healthy)?.rate();
    let blip = find(Scenario::Blip)?.rate();
    let caught = find(Scenario::Degraded(2.5))?.rate();
    let mut errors = Vec::new();
    if healthy > 0.01 {
        errors.push(format!("healthy rolled back {:.2}% > 1%", healthy * 100.0));
    }
    if blip > 0.02 {
        errors.push(format!("one blip rolled back {:.2}% > 2%", blip * 100.0));
    }
    if caught < 0.95 {
        errors.push(format!("2.5× caught {:.2}% < 95%", caught * 100.0));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
