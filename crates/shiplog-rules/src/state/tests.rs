use super::*;
use crate::config::Rule;
use crate::config::{validate, RuleConfig, RulesSettings};
use crate::judge::MetricVerdict;
use crate::judgement::assess;
use chrono::Duration as D;
use serde_json::json;
use serde_json::Value;
use shiplog_events::{format_rfc3339, Origin};
use shiplog_events::{Event, Kind};

fn rules() -> Vec<Rule> {
    #[derive(serde::Deserialize)]
    struct F {
        rules: Vec<RuleConfig>,
    }
    let f: F = toml::from_str(
        "[[rules]]\nname = \"r\"\nkind = \"rollback\"\nproject = \"p\"\nenv = \"production\"\nmetric = \"error_rate\"\nwindow = \"10m\"\nmin_samples = 3\nmax_ratio = 1.5\naction = { command = [\"true\"] }\n",
    )
    .unwrap();
    validate(&f.rules, &RulesSettings::default()).unwrap()
}

fn state(now: DateTime<Utc>) -> State {
    State::new(Retention::for_rules(
        &rules(),
        &RulesSettings::default(),
        now,
    ))
}

fn ev(v: Value) -> Event {
    Event::from_json(v, Origin::Internal).unwrap()
}

/// An event built directly (the JSON round trip would dominate these tests' time).
#[allow(clippy::too_many_arguments)]
fn event(
    id: String,
    kind: Kind,
    env: &str,
    dep: &str,
    t: DateTime<Utc>,
    at: DateTime<Utc>,
    data: Value,
) -> Event {
    let Value::Object(data) = data else {
        unreachable!()
    };
    Event {
        id,
        kind,
        source: "ci".into(),
        time: Some(t),
        received_at: Some(at),
        project: "p".into(),
        env: Some(env.into()),
        commit: None,
        branch: None,
        deployment_id: Some(dep.into()),
        data,
        extra: Default::default(),
    }
}

fn deploy(
    dep: &str,
    prev: Option<&str>,
    status: &str,
    t: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Event {
    let mut data = json!({"status": status, "url": format!("https://{dep}.example")});
    if let Some(p) = prev {
        data["previous_deployment_id"] = json!(p);
    }
    event(
        format!("{dep}/{status}"),
        Kind::Deploy,
        "production",
        dep,
        t,
        at,
        data,
    )
}

fn check(
    dep: &str,
    env: &str,
    name: &str,
    value: f64,
    t: DateTime<Utc>,
    at: DateTime<Utc>,
    n: u64,
) -> Event {
    let data = json!({"name": name, "value": value});
    event(
        format!("{dep}/{name}/{env}/{n}"),
        Kind::Check,
        env,
        dep,
        t,
        at,
        data,
    )
}

fn decision(dep: &str, verdict: &str, at: DateTime<Utc>) -> Event {
    ev(
        json!({"id": format!("rule/r/{dep}/{verdict}"), "kind": "decision", "source": SOURCE, "project": "p",
              "env": "production", "deployment_id": dep, "time": format_rfc3339(&at),
              "received_at": format_rfc3339(&at),
              "data": {"rule": "r", "rule_kind": "rollback", "verdict": verdict, "phase": "final", "dry_run": false}}),
    )
}

/// Feeds deployment `i`: succeeded (replacing `i - 1`), three error_rate samples, and
/// samples no rule reads (another check name, another env).
fn feed(st: &mut State, i: u64, t: DateTime<Utc>, at: DateTime<Utc>) {
    let dep = format!("d{i}");
    let prev = (i > 0).then(|| format!("d{}", i - 1));
    st.apply(&deploy(&dep, prev.as_deref(), "succeeded", t, at));
    for n in 0..3 {
        st.apply(&check(
            &dep,
            "production",
            "error_rate",
            0.02,
            t + D::seconds(1),
            at,
            n,
        ));
    }
    st.apply(&check(
        &dep,
        "production",
        "latency_p95",
        120.0,
        t + D::seconds(1),
        at,
        9,
    ));
    st.apply(&check(
        &dep,
        "preview",
        "error_rate",
        0.5,
        t + D::seconds(1),
        at,
        9,
    ));
}

/// Judges `dep` the way the engine does (window closed).
fn verdict(st: &State, dep: &str) -> crate::judge::Judgement {
    let r = &rules()[0];
    let d = st.deployment("p", dep).expect("known").header();
    assess(r.rollback().unwrap(), st, &d, Utc::now() + D::hours(1))
        .expect("live")
        .judgement
}

#[test]
fn a_hundred_thousand_deployments_stay_under_the_caps() {
    let now = Utc::now();
    let mut st = state(now);
    let caps = st.retention().clone();
    let n = 100_000u64;
    for i in 0..n {
        // All received within `history`: only the caps bound the state.
        let t = now - D::seconds((n - i) as i64);
        feed(&mut st, i, t, now - D::milliseconds((n - i) as i64));
        let s = st.stats();
        assert!(s.deployments <= caps.max_deployments, "{i}: {s:?}");
        assert!(s.samples <= caps.max_samples, "{i}: {s:?}");
    }
    st.sweep();
    let s = st.stats();
    assert!(s.deployments <= caps.max_deployments, "{s:?}");
    // Samples only of the open window (the live deployment) and the baselines: the
    // superseded ones were decided-or-never-judged and keep no samples.
    assert!(s.samples <= (1 + caps.baselines) * 3, "{s:?}");
    // What no rule reads was never kept: the latency samples and the preview env.
    let last = &st.deployments[&("p".to_string(), format!("d{}", n - 1))];
    assert_eq!(last.series.len(), 1);
    assert_eq!(last.series[0].samples.len(), 3);
    // A new deployment is still judged against its baseline, the one it replaced.
    let t = now;
    st.apply(&deploy(
        "new",
        Some(&format!("d{}", n - 1)),
        "succeeded",
        t,
        now,
    ));
    for k in 0..3 {
        st.apply(&check(
            "new",
            "production",
            "error_rate",
            0.5,
            t + D::seconds(1),
            now,
            k,
        ));
    }
    let j = verdict(&st, "new");
    assert_eq!(j.verdict, MetricVerdict::Degraded, "{}", j.reason);
    let e = &j.metrics[0];
    assert_eq!(e.baseline, Some(0.02));
    assert_eq!(e.baseline_samples, Some(3));
    assert_eq!(e.samples, 3);
}

#[test]
fn facts_expire_after_history_on_the_streams_clock() {
    let now = Utc::now();
    let mut st = state(now);
    let n = 100_000u64;
    // One deployment a minute for ~69 days, received as they happened.
    for i in 0..n {
        let t = now - D::minutes((n - i) as i64);
        feed(&mut st, i, t, t);
    }
    st.tick(now);
    st.sweep();
    let s = st.stats();
    let within = 7 * 24 * 60; // deployments received within `history` (7 days)
    assert!(s.deployments <= within + 1, "{s:?}");
    assert!(s.deployments >= within - 1, "{s:?}");
    assert_eq!(s.open_evicted, 0);
    assert!(s.samples <= 4 * 3, "{s:?}");
    let has = |i: u64| {
        st.deployments
            .contains_key(&("p".to_string(), format!("d{i}")))
    };
    assert!(!has(n - 8 * 24 * 60), "received 8 days ago: forgotten");
    assert!(has(n - 6 * 24 * 60), "received 6 days ago: kept");
    assert!(has(n - 1));
}

#[test]
fn a_baseline_outlives_history() {
    // A deployment live for a month is still the baseline of the next one.
    let now = Utc::now();
    let mut st = state(now);
    let old = now - D::days(30);
    feed(&mut st, 0, old, old);
    for k in 0..2000u64 {
        // Unrelated traffic moves the stream's clock on.
        st.apply(&check(
            "elsewhere",
            "production",
            "latency_p95",
            1.0,
            now,
            old + D::hours(k as i64 / 3),
            k,
        ));
    }
    st.tick(now);
    st.sweep();
    assert!(st
        .deployments
        .contains_key(&("p".to_string(), "d0".to_string())));
    st.apply(&deploy("d1", Some("d0"), "succeeded", now, now));
    for k in 0..3 {
        st.apply(&check("d1", "production", "error_rate", 0.021, now, now, k));
    }
    let j = verdict(&st, "d1");
    assert_eq!(j.verdict, MetricVerdict::Healthy, "{}", j.reason);
}

#[test]
fn a_deployment_forgotten_under_the_cap_is_not_judged_again() {
    let now = Utc::now();
    let mut st = state(now);
    st.retention.max_deployments = 100;
    let early = now - D::seconds(10);
    st.apply(&deploy("judged", None, "succeeded", early, early));
    st.apply(&decision("judged", "healthy", early));
    st.apply(&deploy("bad", None, "failed", early, early));
    assert!(st.deployments[&("p".into(), "judged".into())].is_concluded("r"));
    for i in 0..1000 {
        feed(&mut st, i, now, now - D::milliseconds(1000 - i as i64));
    }
    assert!(st.stats().deployments <= 100);
    assert!(!st.deployments.contains_key(&("p".into(), "judged".into())));
    assert!(!st.deployments.contains_key(&("p".into(), "bad".into())));
    // Both show up again: "judged" is not judged again, "bad" is still no target.
    st.apply(&deploy("judged", None, "succeeded", now, now));
    st.apply(&deploy("bad", None, "succeeded", now, now));
    assert!(st.deployments[&("p".into(), "judged".into())].is_concluded("r"));
    assert!(st.deployments[&("p".into(), "bad".into())]
        .unsafe_reason()
        .is_some());
}

#[test]
fn samples_are_capped_per_series_and_in_all() {
    let now = Utc::now();
    let mut st = state(now);
    st.retention.max_series_samples = 100;
    st.retention.max_samples = 1000;
    st.apply(&deploy("a", None, "succeeded", now, now));
    for k in 0..500 {
        st.apply(&check("a", "production", "error_rate", 0.01, now, now, k));
    }
    assert_eq!(st.stats().samples, 100);
    assert_eq!(st.stats().samples_dropped, 400);
    // Samples after the window's end are never kept.
    st.apply(&check(
        "a",
        "production",
        "error_rate",
        0.01,
        now + D::minutes(11),
        now,
        999,
    ));
    assert_eq!(st.stats().samples, 100);
    // Many deployments not yet succeeded, each with samples: the total stays capped.
    for i in 0..100 {
        for k in 0..50 {
            st.apply(&check(
                &format!("pending{i}"),
                "production",
                "error_rate",
                0.01,
                now,
                now,
                k,
            ));
        }
        assert!(st.stats().samples <= 1000);
    }
    // The open window kept its samples: the pending ones went first.
    let a = &st.deployments[&("p".into(), "a".into())];
    assert_eq!(a.sample_count(), 100);
}

#[test]
fn a_snapshot_image_restores_the_same_state() {
    let now = Utc::now();
    let mut st = state(now);
    st.retention.max_deployments = 50;
    for i in 0..80 {
        feed(&mut st, i, now, now - D::milliseconds(100 - i as i64));
    }
    st.apply(&deploy("x", Some("d79"), "succeeded", now, now));
    st.apply(&event(
        "x/smoke".into(),
        Kind::Check,
        "production",
        "x",
        now,
        now,
        json!({"name": "smoke", "passed": false}),
    ));
    let start = ev(
        json!({"id": "rule/r/x/degraded", "kind": "decision", "source": SOURCE,
        "project": "p", "env": "production", "deployment_id": "x", "time": format_rfc3339(&now),
        "data": {"rule": "r", "rule_kind": "rollback", "verdict": "degraded", "phase": "start",
                 "dry_run": false}}),
    );
    st.apply(&start);
    let migration = ev(
        json!({"id": "m1", "kind": "migration", "source": "ci", "project": "p",
        "env": "production", "time": format_rfc3339(&now),
        "data": {"status": "failed", "database": "main", "version": "7", "error": "boom"}}),
    );
    st.apply(&migration);
    let alert = ev(
        json!({"id": "rule/mf/ci/m1/alert", "kind": "decision", "source": SOURCE,
        "project": "p", "time": format_rfc3339(&now),
        "data": {"rule": "mf", "rule_kind": "migration_failed", "verdict": "alert", "phase": "final"}}),
    );
    st.apply(&alert);
    let budget = ev(
        json!({"id": "rule/b/2026-11/80", "kind": "decision", "source": SOURCE,
        "project": "p", "time": format_rfc3339(&now),
        "data": {"rule": "b", "rule_kind": "budget", "verdict": "alert", "level": 80,
                 "month": now.format("%Y-%m").to_string()}}),
    );
    st.apply(&budget);
    assert!(!st.tombstones.is_empty(), "the cap left tombstones");

    let bytes = serde_json::to_vec(&st.image()).unwrap();
    let back = State::from_image(
        serde_json::from_slice(&bytes).unwrap(),
        st.retention.clone(),
    );
    assert_eq!(back.stats(), st.stats());
    assert_eq!(back.seq, st.seq);
    let json = |s: &State| {
        let mut v: Vec<Value> = s
            .deployments
            .values()
            .map(|d| serde_json::to_value(d).unwrap())
            .collect();
        v.sort_by_key(|d| d.to_string());
        v
    };
    assert_eq!(json(&back), json(&st));
    let gate = |s: &State| serde_json::to_value(s.gate("p", "production", &rules())).unwrap();
    assert_eq!(gate(&back), gate(&st));
    assert_eq!(gate(&back)["safe"], json!(false)); // the failed migration, the rollback
    assert_eq!(back.alerted.len(), 1);
    assert_eq!(back.budget_fired, st.budget_fired);
    assert_eq!(back.tombstones.len(), st.tombstones.len());
    assert_eq!(back.last_rollback, st.last_rollback);
    assert_eq!(back.live, st.live);
    assert_eq!(back.pending_failed_migrations.len(), 1);
    assert_eq!(
        back.pending_failed_migrations[0].received,
        st.pending_failed_migrations[0].received
    );
    let x = &back.deployments[&("p".into(), "x".into())];
    assert!(x.rollback_started && x.is_concluded("r"));
    assert!(back.failed_smoke(x, D::minutes(10)).is_some());
}

#[test]
fn an_older_threshold_decision_read_back_changes_nothing() {
    let mut st = State::default();
    let now = Utc::now();
    let th = |verdict: &str, t: DateTime<Utc>| {
        ev(
            json!({"id": format!("rule/t/{}/{verdict}", format_rfc3339(&t)), "kind": "decision", "source": SOURCE,
                  "project": "p", "time": format_rfc3339(&t),
                  "data": {"rule": "t", "rule_kind": "threshold", "verdict": verdict, "phase": "final"}}),
        )
    };
    let alert = th("alert", now);
    let healthy = th("healthy", now + D::seconds(60));
    st.apply(&alert);
    st.apply(&healthy);
    st.apply(&alert); // read back from the log after the newer one was applied
    assert_eq!(st.thresholds["t"].verdict, "healthy");
    st.apply(&healthy);
    assert_eq!(st.thresholds["t"].verdict, "healthy");
}

fn deploy_ev(dep: &str, status: &str, prev: Option<&str>, t: DateTime<Utc>) -> Event {
    deploy(dep, prev, status, t, t)
}

#[test]
fn the_baseline_walks_past_deployments_that_did_not_serve_or_were_degraded() {
    let now = Utc::now();
    let mut st = state(now);
    let t = |m: i64| now - D::minutes(100 - m);
    st.apply(&deploy_ev("good", "succeeded", None, t(0)));
    // A failed deployment never served; a later one names it as its previous deployment.
    st.apply(&deploy_ev("broken", "started", Some("good"), t(10)));
    st.apply(&deploy_ev("broken", "failed", Some("good"), t(11)));
    st.apply(&deploy_ev("new", "succeeded", Some("broken"), t(20)));
    let new = st.deployment("p", "new").unwrap().header();
    assert_eq!(st.baseline_of(&new).unwrap().id, "good");
    // A cancelled one and one judged degraded are walked past too.
    st.apply(&deploy_ev("c", "cancelled", Some("new"), t(30)));
    st.apply(&decision("new", "degraded", t(25)));
    st.apply(&deploy_ev("next", "succeeded", Some("c"), t(40)));
    let next = st.deployment("p", "next").unwrap().header();
    assert_eq!(st.baseline_of(&next).unwrap().id, "good");
    // Without previous_deployment_id: the last good one before it.
    st.apply(&deploy_ev("orphan", "succeeded", None, t(50)));
    let orphan = st.deployment("p", "orphan").unwrap().header();
    assert_eq!(st.baseline_of(&orphan).unwrap().id, "next");
    // A named previous deployment nobody saw is never guessed.
    st.apply(&deploy_ev("x", "succeeded", Some("unseen"), t(60)));
    let x = st.deployment("p", "x").unwrap().header();
    let why = st.baseline_of(&x).unwrap_err();
    assert!(why.contains("unseen is not known"), "{why}");
}

#[test]
fn a_baseline_stops_counting_when_it_was_replaced() {
    let now = Utc::now();
    let mut st = state(now);
    let t0 = now - D::hours(2);
    st.apply(&deploy_ev("a", "succeeded", None, t0));
    for k in 0..6 {
        st.apply(&check(
            "a",
            "production",
            "error_rate",
            0.02,
            t0 + D::minutes(k),
            t0,
            k as u64,
        ));
    }
    st.apply(&deploy_ev(
        "b",
        "succeeded",
        Some("a"),
        t0 + D::minutes(3) + D::seconds(30),
    ));
    let a = st.deployment("p", "a").unwrap().header();
    let cut = st.replaced_at(&a);
    assert_eq!(
        st.window_samples(&a, "error_rate", D::minutes(10), cut)
            .len(),
        4
    );
    assert_eq!(
        st.window_samples(&a, "error_rate", D::minutes(10), None)
            .len(),
        6
    );
}

#[test]
fn api_cost_per_request_pairs_spend_with_the_requests_served() {
    let rules = {
        #[derive(serde::Deserialize)]
        struct F {
            rules: Vec<RuleConfig>,
        }
        let f: F = toml::from_str(
            "[[rules]]\nname = \"c\"\nkind = \"rollback\"\nproject = \"p\"\nenv = \"production\"\nmetrics = [\"api_cost_per_request\"]\nwindow = \"10m\"\nmax_ratio = 1.5\naction = { command = [\"true\"] }\n",
        )
        .unwrap();
        validate(&f.rules, &RulesSettings::default()).unwrap()
    };
    let now = Utc::now();
    let mut st = State::new(Retention::for_rules(&rules, &RulesSettings::default(), now));
    let t0 = now - D::hours(1);
    st.apply(&deploy_ev("a", "succeeded", None, t0));
    for k in 1..=3i64 {
        // 100 requests served per minute, and $0.50 of model calls (one tagged with the
        // deployment, one attributed by time).
        st.apply(&event(
            format!("a/er/{k}"),
            Kind::Check,
            "production",
            "a",
            t0 + D::minutes(k),
            t0,
            json!({"name": "error_rate", "value": 0.01, "errors": 1, "requests": 100}),
        ));
        st.apply(&event(
            format!("a/cost/{k}"),
            Kind::ApiCost,
            "production",
            "a",
            t0 + D::minutes(k) - D::seconds(20),
            t0,
            json!({"provider": "openai", "model": "gpt-4o", "cost_usd": 0.25}),
        ));
        let mut untagged = event(
            format!("u/cost/{k}"),
            Kind::ApiCost,
            "production",
            "a",
            t0 + D::minutes(k) - D::seconds(30),
            t0,
            json!({"provider": "openai", "model": "gpt-4o", "cost_usd": 0.25, "requests": 2}),
        );
        untagged.deployment_id = None;
        st.apply(&untagged);
    }
    let a = st.deployment("p", "a").unwrap().header();
    let s = st.cost_samples(&a, "error_rate", D::minutes(10), None, false);
    assert_eq!(s.len(), 3, "{s:?}");
    for x in &s {
        assert!((x.value.unwrap() - 0.005).abs() < 1e-12, "{s:?}");
    }
    // Without requests on the checks: per API call, per minute.
    let per_call = st.cost_samples(&a, "latency_p95", D::minutes(10), None, false);
    assert_eq!(per_call.len(), 3, "{per_call:?}");
    assert!(
        (per_call[0].value.unwrap() - 0.5 / 3.0).abs() < 1e-12,
        "{per_call:?}"
    );
    // When the other side has no requests, both are judged per call: the same unit.
    assert!(st.reports_requests(&a, "error_rate", D::minutes(10), None));
    assert!(!st.reports_requests(&a, "latency_p95", D::minutes(10), None));
    let forced = st.cost_samples(&a, "error_rate", D::minutes(10), None, true);
    assert_eq!(
        forced.iter().map(|x| x.value).collect::<Vec<_>>(),
        per_call.iter().map(|x| x.value).collect::<Vec<_>>()
    );
}

#[test]
fn cooldown_from_the_log() {
    let mut st = State::default();
    let now = Utc::now();
    let cd = std::time::Duration::from_secs(60);
    assert_eq!(st.cooldown_until("p", "production", cd, now), None);
    let start = ev(
        json!({"id": "rule/r/d1/degraded", "kind": "decision", "source": SOURCE, "project": "p",
               "env": "production", "deployment_id": "d1", "time": format_rfc3339(&now),
               "data": {"rule": "r", "rule_kind": "rollback", "verdict": "degraded", "phase": "start", "dry_run": false}}),
    );
    st.apply(&start);
    st.apply(&start); // idempotent
    let until = st.cooldown_until("p", "production", cd, now).unwrap();
    assert!(until > now + D::seconds(59) && until <= now + D::seconds(60));
    assert!(st
        .cooldown_until("p", "production", cd, now + D::seconds(61))
        .is_none());
    assert!(st.cooldown_until("p", "staging", cd, now).is_none());
    // The rollback is in progress until its outcome is read.
    assert!(st.rollback_of("p", "d1").unwrap().outcome.is_none());
    // A dry-run start does not count.
    let mut st2 = State::default();
    let mut dry = start.clone();
    dry.data.insert("dry_run".into(), json!(true));
    st2.apply(&dry);
    assert!(st2.cooldown_until("p", "production", cd, now).is_none());
}

/// A source's failed read (a check without a value, with `source` and `error`) is never a
/// sample; while it lasts at the window's close the verdict is inconclusive and says why;
/// the next sample clears it.
#[test]
fn a_failing_source_makes_the_window_inconclusive() {
    let now = Utc::now();
    let t = now - D::minutes(30);
    let mut st = state(now);
    feed(&mut st, 0, t, t);
    feed(&mut st, 1, t + D::minutes(1), t + D::minutes(1));
    for n in 0..3 {
        st.apply(&check(
            "d1",
            "production",
            "error_rate",
            0.02,
            t + D::minutes(2),
            t + D::minutes(2),
            10 + n,
        ));
    }
    assert_eq!(verdict(&st, "d1").verdict, MetricVerdict::Healthy);
    let failure = |n: u64, at: DateTime<Utc>| {
        event(
            format!("source/r/error_rate/d1/{n}/error"),
            Kind::Check,
            "production",
            "d1",
            at,
            at,
            json!({"name": "error_rate", "source": "prometheus", "rule": "r",
                   "error": "prometheus unreachable: connection refused"}),
        )
    };
    st.apply(&failure(1, t + D::minutes(3)));
    st.apply(&failure(2, t + D::minutes(4)));
    let d = st.deployment("p", "d1").unwrap();
    assert_eq!(d.series[0].samples.len(), 6, "a failure is no sample");
    let j = verdict(&st, "d1");
    assert_eq!(j.verdict, MetricVerdict::Inconclusive);
    assert!(
        j.reason.starts_with(&format!(
            "inconclusive: prometheus unreachable: connection refused (failing since {}, 2 failed reads); ",
            format_rfc3339(&(t + D::minutes(3)))
        )),
        "{}",
        j.reason
    );
    // The source answers again: its sample clears the failure.
    st.apply(&check(
        "d1",
        "production",
        "error_rate",
        0.02,
        t + D::minutes(5),
        t + D::minutes(5),
        20,
    ));
    assert_eq!(verdict(&st, "d1").verdict, MetricVerdict::Healthy);
}
