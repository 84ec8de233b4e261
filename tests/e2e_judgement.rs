//! The rollback judge end to end, on the real binary: nine scenarios a team meets, each in
//! its own project with its own rule, judged by one server. Each gets the expected verdict,
//! at most one action (a recording script, run as argv), and a degraded one is decided
//! within 1 s of the sample that decided it (the engine judges as each sample arrives).
//!
//! Times: every deployment went live a few seconds ago (the events carry their times) and
//! its window is 10 s, so windows close while the test runs; the samples are posted one by
//! one, as a probe would, with fixed counts (no randomness: the verdicts are exact).
//! Then `shiplog rules backtest` over the same log agrees with every decision, `shiplog
//! gate` shows nothing still judging, and the deployment page states the verdict with the
//! baseline's range and the threshold.

mod support;

use chrono::{DateTime, Duration as D, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use support::faults::post_ok;
use support::{http, query_until, recorded, recorder, TestServer, BIN};

const WINDOW_S: i64 = 10;

/// The two tests run one after the other: the demo's generation takes the cores, and the
/// scenarios measure how soon a decision follows its deciding sample.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn deploy(p: &str, id: &str, status: &str, at: DateTime<Utc>, prev: Option<&str>) -> Value {
    let mut data =
        json!({"status": status, "url": format!("https://{id}.example.com"), "provider": "vercel"});
    if let Some(prev) = prev {
        data["previous_deployment_id"] = json!(prev);
    }
    json!({"id": format!("{p}-{id}-{status}"), "kind": "deploy", "source": "ci/test", "project": p,
           "env": "production", "deployment_id": id, "time": ts(at), "data": data})
}

/// A check sample: `errors` of `requests` (with the rate as value) or a value alone.
fn sample(p: &str, dep: &str, name: &str, i: usize, at: DateTime<Utc>, s: S) -> Value {
    let data = match s {
        S::Counts(e, n) => {
            json!({"name": name, "errors": e, "requests": n, "value": e as f64 / n as f64, "unit": "ratio"})
        }
        S::Rate(v) => json!({"name": name, "value": v, "unit": "ratio"}),
        S::Ms(v) => json!({"name": name, "value": v, "unit": "ms"}),
        S::Smoke(ok) => json!({"name": name, "passed": ok}),
    };
    json!({"id": format!("{p}-{dep}-{name}-{i}"), "kind": "check", "source": "probe/test",
           "project": p, "env": "production", "deployment_id": dep, "time": ts(at), "data": data})
}

#[derive(Clone, Copy, Debug)]
enum S {
    Counts(u64, u64),
    Rate(f64),
    Ms(f64),
    Smoke(bool),
}

/// A normal error-rate series around 2% of 200 requests (fixed, varied counts).
const NORMAL: [u64; 10] = [4, 3, 5, 4, 2, 4, 6, 3, 4, 5];

fn counts(errors: &[u64]) -> Vec<S> {
    errors.iter().map(|e| S::Counts(*e, 200)).collect()
}

/// One scenario: the metrics of its rule, the baseline's samples, what happens, the verdict.
struct Scenario {
    project: &'static str,
    /// The rule's metric lines (`metric = …` or `metrics = […]`).
    metrics: &'static str,
    /// Per metric name, the baseline deployment's samples.
    baseline: Vec<(&'static str, Vec<S>)>,
    /// A failed deployment between the baseline and the new one (named by the new one).
    failed_between: bool,
    /// Per metric name, the new deployment's samples (interleaved in time).
    new: Vec<(&'static str, Vec<S>)>,
    expect: &'static str,
}

/// A rule on `error_rate` alone, a normal baseline, the new deployment's error counts.
fn on_errors(project: &'static str, errors: &[u64], expect: &'static str) -> Scenario {
    Scenario {
        project,
        metrics: r#"metric = "error_rate""#,
        baseline: vec![("error_rate", counts(&NORMAL))],
        failed_between: false,
        new: vec![("error_rate", counts(errors))],
        expect,
    }
}

/// A clear regression: about 11% errors against the baseline's 2%.
const REGRESSED: [u64; 10] = [22, 19, 25, 21, 24, 20, 23, 22, 18, 21];

fn scenarios() -> Vec<Scenario> {
    let blip = {
        let mut e = NORMAL.to_vec();
        e[3] = 50; // one interval at 25% (a cold start)
        e
    };
    let latency_base = [
        212.0, 198.0, 225.0, 205.0, 219.0, 201.0, 230.0, 208.0, 215.0, 196.0,
    ];
    vec![
        on_errors("healthy-noisy", &[5, 2, 4, 6, 3, 4, 5, 3, 2, 4], "healthy"),
        on_errors("one-blip", &blip, "healthy"),
        on_errors("clear-regression", &REGRESSED, "degraded"),
        on_errors(
            "slow-burn",
            &[4, 6, 8, 10, 12, 14, 16, 18, 20, 22],
            "degraded",
        ),
        on_errors("too-few", &[30, 28, 33], "inconclusive"),
        Scenario {
            failed_between: true,
            ..on_errors("previous-failed", &REGRESSED, "degraded")
        },
        Scenario {
            new: vec![
                ("smoke", vec![S::Smoke(false)]),
                ("error_rate", counts(&NORMAL)),
            ],
            ..on_errors("failed-smoke", &NORMAL, "degraded")
        },
        Scenario {
            project: "latency-ms",
            metrics: r#"metrics = [{ name = "latency_p95", max_ratio = 1.3 }]"#,
            baseline: vec![(
                "latency_p95",
                latency_base.iter().map(|v| S::Ms(*v)).collect(),
            )],
            failed_between: false,
            new: vec![(
                "latency_p95",
                latency_base.iter().map(|v| S::Ms(v * 2.0)).collect(),
            )],
            expect: "degraded",
        },
        Scenario {
            project: "multi-critical",
            metrics: r#"metrics = [{ name = "error_rate", critical = true }, "latency_p95", "cpu"]"#,
            baseline: vec![
                ("error_rate", counts(&NORMAL)),
                (
                    "latency_p95",
                    latency_base.iter().map(|v| S::Ms(*v)).collect(),
                ),
                (
                    "cpu",
                    NORMAL
                        .iter()
                        .map(|e| S::Rate(0.38 + *e as f64 / 100.0))
                        .collect(),
                ),
            ],
            failed_between: false,
            new: vec![
                ("error_rate", counts(&REGRESSED)),
                (
                    "latency_p95",
                    latency_base.iter().map(|v| S::Ms(*v)).collect(),
                ),
                (
                    "cpu",
                    NORMAL
                        .iter()
                        .rev()
                        .map(|e| S::Rate(0.38 + *e as f64 / 100.0))
                        .collect(),
                ),
            ],
            expect: "degraded",
        },
    ]
}

fn rules(scenarios: &[Scenario], script: &std::path::Path) -> String {
    let mut s = String::from("[rules_settings]\ntick = \"100ms\"\n");
    for sc in scenarios {
        s.push_str(&format!(
            r#"
[[rules]]
name = "judge-{p}"
kind = "rollback"
project = "{p}"
env = "production"
{m}
window = "{WINDOW_S}s"
max_ratio = 1.5
min_samples = 5
action = {{ command = ["{script}", "{{project}}", "{{deployment_id}}", "{{previous_deployment_id}}", "{{previous_url}}"], timeout = "10s" }}
"#,
            p = sc.project,
            m = sc.metrics,
            script = script.display()
        ));
    }
    s
}

/// Samples of every metric interleaved in time: the i-th sample of each at live + (i+1)·Δ.
fn timeline(
    p: &str,
    dep: &str,
    live: DateTime<Utc>,
    series: &[(&'static str, Vec<S>)],
) -> Vec<Value> {
    let step = D::milliseconds(WINDOW_S * 1000 / 11);
    let mut out = Vec::new();
    let longest = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (j, (name, v)) in series.iter().enumerate() {
            if let Some(s) = v.get(i) {
                let at = live + step * (i as i32 + 1) + D::milliseconds(j as i64);
                out.push(sample(p, dep, name, i, at, *s));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_scenarios_each_get_the_expected_verdict() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let (script, calls) = recorder(tmp.path());
    let scs = scenarios();
    let config = tmp.path().join("shiplog.toml");
    std::fs::write(&config, rules(&scs, &script)).unwrap();
    let server = TestServer::spawn(
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = server.url.clone();
    let c = http();

    // The baselines: live 40 s ago, their windows long closed, replaced by the new ones.
    let now = Utc::now();
    for sc in &scs {
        let base_live = now - D::seconds(40);
        let mut ev = vec![deploy(sc.project, "base", "succeeded", base_live, None)];
        ev.extend(timeline(sc.project, "base", base_live, &sc.baseline));
        post_ok(&c, &url, &ev).await;
    }
    // The new deployments go live now (one failed deployment first where the scenario says).
    let live = Utc::now();
    for sc in &scs {
        let prev = if sc.failed_between {
            post_ok(
                &c,
                &url,
                &[deploy(
                    sc.project,
                    "broken",
                    "failed",
                    live - D::seconds(5),
                    Some("base"),
                )],
            )
            .await;
            "broken"
        } else {
            "base"
        };
        post_ok(
            &c,
            &url,
            &[deploy(sc.project, "new", "succeeded", live, Some(prev))],
        )
        .await;
    }
    // `shiplog gate` shows a deployment still being judged, with its samples so far.
    let deadline = Instant::now() + Duration::from_secs(10);
    let gate = loop {
        let out = Command::new(BIN)
            .args([
                "gate",
                "--project",
                "too-few",
                "--env",
                "production",
                "--url",
                &url,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("judging, 0 of 5 samples") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        gate.contains("deployments still being judged: 1")
            && gate.contains("judging, 0 of 5 samples"),
        "{gate}"
    );
    // The samples, posted one at a time as they fall due; each one's arrival recorded.
    let mut due: Vec<(DateTime<Utc>, &str, Value)> = Vec::new();
    for sc in &scs {
        for e in timeline(sc.project, "new", live, &sc.new) {
            let at = DateTime::parse_from_rfc3339(e["time"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc);
            due.push((at, sc.project, e));
        }
    }
    due.sort_by_key(|(at, _, _)| *at);
    let mut arrived: BTreeMap<(String, String), DateTime<Utc>> = BTreeMap::new();
    for (at, project, e) in due {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        post_ok(&c, &url, std::slice::from_ref(&e)).await;
        arrived.insert(
            (project.to_string(), e["time"].as_str().unwrap().to_string()),
            Utc::now(),
        );
    }

    // Every window closes 10 s after going live: each scenario has its decision by then.
    let sql = "SELECT project, verdict, json_extract_string(extra, '$.data.deciding_sample_time'), \
               json_extract_string(extra, '$.data.decided_at'), json_extract_string(extra, '$.data.reason'), \
               json_extract_string(extra, '$.data.previous_deployment_id') \
               FROM decisions WHERE deployment_id = 'new' AND coalesce(json_extract_string(extra, '$.data.phase'), 'final') <> 'outcome'";
    let rows = query_until(&c, &url, sql, scs.len(), Duration::from_secs(30)).await;
    let by_project: BTreeMap<String, Vec<Value>> = rows
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r.clone()))
        .collect();
    // Give any late, wrong second action time to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let actions = recorded(&calls);
    let mut report = String::new();
    for sc in &scs {
        let row = by_project
            .get(sc.project)
            .unwrap_or_else(|| panic!("{}: no decision; rows {rows:?}", sc.project));
        let verdict = row[1].as_str().unwrap();
        report.push_str(&format!("{}: {verdict}: {}\n", sc.project, row[4]));
        assert_eq!(verdict, sc.expect, "{}: {row:?}", sc.project);
        let acted: Vec<&Vec<String>> = actions.iter().filter(|a| a[0] == sc.project).collect();
        assert!(
            acted.len() <= 1,
            "{}: acted {} times",
            sc.project,
            acted.len()
        );
        if sc.expect == "degraded" {
            assert_eq!(acted.len(), 1, "{}: no action: {actions:?}", sc.project);
            // The rollback target: the last deployment that served, past a failed one.
            assert_eq!(
                acted[0][1..],
                ["new", "base", "https://base.example.com"],
                "{}",
                sc.project
            );
            assert_eq!(row[5], json!("base"), "{}", sc.project);
            // Decided within 1 s of the deciding sample's arrival.
            let deciding = row[2].as_str().expect("a deciding sample");
            let decided = DateTime::parse_from_rfc3339(row[3].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc);
            let arrival = arrived
                .iter()
                .find(|((p, t), _)| {
                    p == sc.project
                        && DateTime::parse_from_rfc3339(t).unwrap()
                            == DateTime::parse_from_rfc3339(deciding).unwrap()
                })
                .map(|(_, a)| *a)
                .unwrap_or_else(|| panic!("{}: deciding sample {deciding} not posted", sc.project));
            let lag = decided - arrival;
            assert!(
                lag < D::seconds(1),
                "{}: decided {lag} after its deciding sample arrived",
                sc.project
            );
        } else {
            assert!(acted.is_empty(), "{}: acted: {acted:?}", sc.project);
        }
    }
    eprintln!("{report}");

    // The backtest of the same rules over the same log agrees with every decision.
    let out = Command::new(BIN)
        .args(["rules", "backtest", "--format", "json", "--url", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bt: Value = serde_json::from_slice(&out.stdout).unwrap();
    for sc in &scs {
        let rule = bt["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["project"] == sc.project)
            .unwrap();
        let row = rule["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["deployment_id"] == "new")
            .unwrap();
        assert_eq!(
            row["verdict"], sc.expect,
            "backtest of {}: {row}",
            sc.project
        );
    }
    let table = Command::new(BIN)
        .args([
            "rules",
            "backtest",
            "--rule",
            "judge-slow-burn",
            "--url",
            &url,
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("judge-slow-burn") && table.contains("new degraded"),
        "{table}"
    );

    // The deployment page states the verdict in words, with the baseline's range and the
    // threshold drawn on the chart.
    let page = c
        .get(format!("{url}/deployments/new?project=clear-regression"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Rollback judgement"), "no judgement section");
    assert!(page.contains("judge-clear-regression"));
    assert!(
        page.contains("baseline range") && page.contains("threshold"),
        "{page}"
    );
    assert!(
        page.contains("vs") && page.contains("samples"),
        "no evidence sentence"
    );
}

/// The demo's decisions are the real judge's: `shiplog rules backtest` over the demo data,
/// with the demo's rules (all in dry run, as `serve --demo` runs them), gives every
/// deployment the verdict of its decision in the log, and no decision is left unexplained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_over_the_demo_agrees_with_its_decisions() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = Command::new(BIN)
        .args(["demo", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shiplog-bench/src/demo/rules.toml"
    ))
    .unwrap();
    let config = tmp.path().join("shiplog.toml");
    std::fs::write(
        &config,
        format!("[rules_settings]\ndry_run = true\n{rules}"),
    )
    .unwrap();
    let server = TestServer::spawn(&data, &["--config", config.to_str().unwrap()]);
    let c = http();
    let sql = "SELECT rule, deployment_id, verdict FROM decisions \
               WHERE coalesce(json_extract_string(extra, '$.data.phase'), 'final') <> 'outcome' \
               ORDER BY rule, deployment_id";
    // The projection catches up with the demo's events first.
    let decided = query_until(&c, &server.url, sql, 50, Duration::from_secs(60)).await;
    let decided: BTreeMap<(String, String), String> = decided
        .into_iter()
        .map(|r| {
            (
                (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()),
                r[2].as_str().unwrap().into(),
            )
        })
        .collect();
    let out = Command::new(BIN)
        .args([
            "rules",
            "backtest",
            "--format",
            "json",
            "--url",
            &server.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bt: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut backtested: BTreeMap<(String, String), String> = BTreeMap::new();
    // A demo deployment whose window closes while the test runs is decided by the live
    // engine at some point of it: those of the last 20 minutes are left out of both sides.
    let recent = Utc::now() - D::minutes(20);
    let mut decided = decided;
    for r in bt["rules"].as_array().unwrap() {
        for d in r["deployments"].as_array().unwrap() {
            let live: DateTime<Utc> = d["live_at"].as_str().unwrap().parse().unwrap();
            if live > recent {
                decided.remove(&(
                    r["rule"].as_str().unwrap().to_string(),
                    d["deployment_id"].as_str().unwrap().to_string(),
                ));
                continue;
            }
            let v = d["verdict"].as_str().unwrap();
            if matches!(v, "healthy" | "degraded" | "inconclusive") {
                backtested.insert(
                    (
                        r["rule"].as_str().unwrap().into(),
                        d["deployment_id"].as_str().unwrap().into(),
                    ),
                    v.into(),
                );
            }
        }
    }
    let count =
        |m: &BTreeMap<(String, String), String>, v: &str| m.values().filter(|x| *x == v).count();
    eprintln!(
        "demo: {} decisions ({} degraded, {} inconclusive); backtest {} judged",
        decided.len(),
        count(&decided, "degraded"),
        count(&decided, "inconclusive"),
        backtested.len()
    );
    assert!(count(&decided, "degraded") >= 2, "{decided:?}");
    assert!(count(&decided, "inconclusive") >= 1, "{decided:?}");
    assert_eq!(decided, backtested);
    // The table names the flagged deployments.
    let table = Command::new(BIN)
        .args(["rules", "backtest", "--url", &server.url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("web-rollback-on-regression") && table.contains("degraded"),
        "{table}"
    );
    // The decisions page shows the backtest of the rules in dry run.
    let page = c
        .get(format!("{}/decisions?range=90d", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Dry-run rules"),
        "no backtest section on the decisions page"
    );
    assert!(page.contains("api-rollback-on-regression"));
}
