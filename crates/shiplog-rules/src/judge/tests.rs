use super::sim::{self, Carried, Scenario, SimConfig};
use super::*;
use chrono::TimeZone;

fn t(min: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap() + Duration::seconds(60 * min)
}

fn window(closed: bool) -> Window {
    Window {
        start: t(0),
        length: Duration::minutes(10),
        closed,
    }
}

fn spec(method: Method) -> MetricSpec {
    MetricSpec {
        name: "error_rate".into(),
        method,
        alpha: 0.01,
        limit: Limit::Ratio(1.5),
        min_samples: 5,
        aggregate: Aggregate::Mean,
        critical: false,
    }
}

fn counts(rows: &[(u64, u64)]) -> Vec<Sample> {
    rows.iter()
        .enumerate()
        .map(|(i, (e, r))| Sample::counts(t(i as i64 + 1), *e, *r))
        .collect()
}

fn values(xs: &[f64]) -> Vec<Sample> {
    xs.iter()
        .enumerate()
        .map(|(i, v)| Sample::value(t(i as i64 + 1), *v))
        .collect()
}

fn base_counts() -> Vec<Sample> {
    counts(&[(4, 200); 10])
}

#[test]
fn a_clear_regression_is_degraded_early_with_its_evidence() {
    let new = counts(&[(20, 200); 10]);
    let ev = judge_metric(
        &spec(Method::Sequential),
        &new,
        Reference::Deployment(&base_counts()),
        &window(false),
    );
    assert_eq!(ev.verdict, MetricVerdict::Degraded, "{}", ev.reason);
    assert_eq!(ev.basis, Basis::Counts);
    // Decided at the first look (the fifth sample), long before the window's end.
    assert_eq!(ev.deciding_time, Some(t(5)));
    assert!((ev.ratio.unwrap() - 5.0).abs() < 1e-9);
    assert!(ev.ratio_low.unwrap() > 1.5 && ev.ratio_high.unwrap() > 5.0);
    assert!(ev.p_value.unwrap() < ev.p_limit.unwrap());
    assert!(
        ev.reason
            .starts_with("degraded: error_rate 10% vs 2.0% baseline, 5.0×"),
        "{}",
        ev.reason
    );
    assert!(ev.reason.contains("5 vs 10 samples"), "{}", ev.reason);
}

#[test]
fn looks_are_the_samples_so_the_verdict_does_not_depend_on_when_it_is_asked() {
    let new = counts(&[
        (4, 200),
        (5, 200),
        (3, 200),
        (14, 200),
        (15, 200),
        (16, 200),
        (14, 200),
        (15, 200),
    ]);
    let early = judge_metric(
        &spec(Method::Sequential),
        &new[..6],
        Reference::Deployment(&base_counts()),
        &window(false),
    );
    let late = judge_metric(
        &spec(Method::Sequential),
        &new,
        Reference::Deployment(&base_counts()),
        &window(true),
    );
    if early.verdict == MetricVerdict::Degraded {
        assert_eq!(late.deciding_time, early.deciding_time);
    }
    assert_eq!(late.verdict, MetricVerdict::Degraded, "{}", late.reason);
}

#[test]
fn one_blip_is_set_aside_and_the_deployment_is_healthy() {
    let mut rows = vec![(4, 200); 10];
    rows[3] = (50, 200);
    let ev = judge_metric(
        &spec(Method::Sequential),
        &counts(&rows),
        Reference::Deployment(&base_counts()),
        &window(true),
    );
    assert_eq!(ev.verdict, MetricVerdict::Healthy, "{}", ev.reason);
    assert_eq!(ev.outliers, vec![t(4)]);
    assert!(
        ev.reason.contains("1 outlying interval set aside"),
        "{}",
        ev.reason
    );
    // The threshold method is fooled by it: the mean of ten is 4.1% > 3%.
    let old = judge_metric(
        &spec(Method::Threshold),
        &counts(&rows),
        Reference::Deployment(&base_counts()),
        &window(true),
    );
    assert_eq!(old.verdict, MetricVerdict::Degraded);
}

#[test]
fn too_few_samples_wait_then_are_inconclusive() {
    let new = counts(&[(40, 200); 4]);
    let s = spec(Method::Sequential);
    let open = judge_metric(
        &s,
        &new,
        Reference::Deployment(&base_counts()),
        &window(false),
    );
    assert_eq!(open.verdict, MetricVerdict::Judging);
    assert!(
        open.reason.starts_with("judging, 4 of 5 samples"),
        "{}",
        open.reason
    );
    let closed = judge_metric(
        &s,
        &new,
        Reference::Deployment(&base_counts()),
        &window(true),
    );
    assert_eq!(closed.verdict, MetricVerdict::Inconclusive);
    assert!(
        closed.reason.contains("only 4 samples"),
        "{}",
        closed.reason
    );
}

#[test]
fn no_baseline_is_inconclusive_never_degraded() {
    let new = counts(&[(40, 200); 10]);
    let s = spec(Method::Sequential);
    let ev = judge_metric(&s, &new, Reference::Missing, &window(true));
    assert_eq!(ev.verdict, MetricVerdict::Inconclusive, "{}", ev.reason);
    assert!(ev.reason.contains("no baseline"), "{}", ev.reason);
    let ev = judge_metric(&s, &new, Reference::Deployment(&[]), &window(true));
    assert_eq!(ev.verdict, MetricVerdict::Inconclusive);
}

#[test]
fn the_practical_floor_keeps_small_credible_increases_from_acting() {
    // 1.2× on a large sample: statistically clear, but under max_ratio = 1.5.
    let base = counts(&[(200, 10_000); 10]);
    let new = counts(&[(240, 10_000); 10]);
    let ev = judge_metric(
        &spec(Method::Sequential),
        &new,
        Reference::Deployment(&base),
        &window(true),
    );
    assert!(ev.p_value.unwrap() < 1e-6);
    assert_eq!(ev.verdict, MetricVerdict::Healthy, "{}", ev.reason);
}

#[test]
fn latency_values_in_ms() {
    let base = values(&[
        210.0, 220.0, 205.0, 215.0, 230.0, 212.0, 208.0, 219.0, 221.0, 214.0,
    ]);
    let slow = values(&[520.0, 540.0, 505.0, 560.0, 515.0, 530.0]);
    let mut s = spec(Method::Sequential);
    s.name = "latency_p95".into();
    let ev = judge_metric(&s, &slow, Reference::Deployment(&base), &window(false));
    assert_eq!(ev.verdict, MetricVerdict::Degraded, "{}", ev.reason);
    assert_eq!(ev.basis, Basis::Values);
    assert!(ev.reason.contains("ms vs 215 ms baseline"), "{}", ev.reason);
    let fine = values(&[
        215.0, 225.0, 210.0, 208.0, 222.0, 230.0, 219.0, 211.0, 216.0, 220.0,
    ]);
    let ev = judge_metric(&s, &fine, Reference::Deployment(&base), &window(true));
    assert_eq!(ev.verdict, MetricVerdict::Healthy, "{}", ev.reason);
}

#[test]
fn fixed_baseline_and_max_value() {
    let new = values(&[0.031, 0.029, 0.033, 0.030, 0.032, 0.031]);
    let mut s = spec(Method::Sequential);
    s.limit = Limit::Ratio(2.0);
    let ev = judge_metric(&s, &new, Reference::Fixed(0.01), &window(false));
    assert_eq!(ev.verdict, MetricVerdict::Degraded, "{}", ev.reason);
    s.limit = Limit::Value(0.05);
    let ev = judge_metric(&s, &new, Reference::Missing, &window(true));
    assert_eq!(ev.verdict, MetricVerdict::Healthy, "{}", ev.reason);
    s.limit = Limit::Value(0.02);
    let ev = judge_metric(&s, &new, Reference::Missing, &window(false));
    assert_eq!(ev.verdict, MetricVerdict::Degraded, "{}", ev.reason);
}

#[test]
fn mann_whitney_decides_once_at_the_end() {
    let new = counts(&[(20, 200); 10]);
    let s = spec(Method::MannWhitney);
    let open = judge_metric(
        &s,
        &new,
        Reference::Deployment(&base_counts()),
        &window(false),
    );
    assert_eq!(open.verdict, MetricVerdict::Judging);
    let closed = judge_metric(
        &s,
        &new,
        Reference::Deployment(&base_counts()),
        &window(true),
    );
    assert_eq!(closed.verdict, MetricVerdict::Degraded, "{}", closed.reason);
    assert!(closed.statistic.unwrap() > 99.0);
}

#[test]
fn combining_metrics() {
    let w = window(true);
    let ev = |name: &str, critical: bool, verdict: MetricVerdict| {
        let mut e = Evidence::new(
            &MetricSpec {
                critical,
                name: name.into(),
                ..spec(Method::Sequential)
            },
            Basis::Values,
            10,
        );
        e.verdict = verdict;
        e.deciding_time = (verdict == MetricVerdict::Degraded).then(|| t(6));
        e.reason = format!("{name} {}", verdict.as_str());
        e
    };
    use MetricVerdict::*;
    // A degraded critical metric decides alone.
    let j = combine(
        vec![
            ev("a", true, Degraded),
            ev("b", false, Healthy),
            ev("c", false, Healthy),
        ],
        None,
        &w,
    );
    assert_eq!((j.verdict, j.deciding), (Degraded, 0));
    // One non-critical metric of three is not enough; two are.
    let j = combine(
        vec![
            ev("a", true, Healthy),
            ev("b", false, Degraded),
            ev("c", false, Healthy),
            ev("d", false, Healthy),
        ],
        None,
        &w,
    );
    assert_eq!(j.verdict, Healthy);
    let j = combine(
        vec![
            ev("a", true, Healthy),
            ev("b", false, Degraded),
            ev("c", false, Degraded),
            ev("d", false, Healthy),
        ],
        None,
        &w,
    );
    assert_eq!(j.verdict, Degraded);
    // A critical metric that could not be judged makes the rule inconclusive.
    let j = combine(
        vec![ev("a", true, Inconclusive), ev("b", false, Healthy)],
        None,
        &w,
    );
    assert_eq!(j.verdict, Inconclusive);
    // A non-critical one without data does not.
    let j = combine(
        vec![ev("a", true, Healthy), ev("b", false, Inconclusive)],
        None,
        &w,
    );
    assert_eq!(j.verdict, Healthy);
    // A failed smoke check decides at once.
    let j = combine(vec![ev("a", true, Judging)], Some(t(2)), &window(false));
    assert_eq!((j.verdict, j.smoke), (Degraded, Some(t(2))));
    assert_eq!(
        alpha_shares(0.01, &[true, false, false]),
        vec![0.005, 0.0025, 0.0025]
    );
    assert_eq!(alpha_shares(0.01, &[false]), vec![0.01]);
}

/// The seeded simulation of the goals (deterministic: the same figures every run;
/// `shiplog bench judgement` prints them). Fails if the default method misses a goal.
#[test]
fn seeded_simulation_meets_the_goals() {
    // The defaults of `shiplog bench judgement`: the figures it prints are these.
    let cfg = SimConfig::default();
    let rows = sim::table(&cfg, 0.01, &[Method::Sequential, Method::Threshold]);
    for carried in [Carried::Counts, Carried::RateOnly] {
        sim::goals_met(&rows, Method::Sequential, carried)
            .unwrap_or_else(|e| panic!("sequential, {}: {e}", carried.label()));
        // The first versions' method misses them (the reason for this work).
        assert!(sim::goals_met(&rows, Method::Threshold, carried).is_err());
    }
    let again = sim::run(
        &sim::default_spec(Method::Sequential, 0.01),
        Scenario::Degraded(2.5),
        Carried::Counts,
        &cfg,
    );
    let first = rows
        .iter()
        .find(|r| {
            r.method == Method::Sequential
                && r.carried == Carried::Counts
                && r.scenario == Scenario::Degraded(2.5)
        })
        .unwrap();
    assert_eq!(&again, first, "the simulation is deterministic");
}
