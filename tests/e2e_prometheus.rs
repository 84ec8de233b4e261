//! End-to-end test of the Prometheus source of rollback rules: a real Prometheus server
//! (Debian's `prometheus` package, started here on a free loopback port with a 1 s scrape
//! interval and a query log) scrapes a small app written in this test, which serves
//! request and error counters labelled by project and version. The real `shiplog serve`
//! reads them through its rules:
//!
//! - a new version that errors ten times more is rolled back once, within its window;
//! - a healthy one is judged healthy and not rolled back;
//! - the samples are `check` events in the `checks` view, with their source and query;
//! - a commit containing `"}` and `or vector(1)` reaches Prometheus as a literal label
//!   value (checked in Prometheus' own query log), so it reads no series: no sample;
//! - Prometheus stopped in the middle of a window: inconclusive, the reason in the decision,
//!   and `/metrics` counts the failed reads.
//!
//! Needs Prometheus (`apt-get install -y prometheus`; `scripts/setup-test-system.sh`, which
//! CI runs, installs it). Set `SHIPLOG_PROMETHEUS` to use another binary.

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{get_text, http, query, recorded, recorder, TestServer};

/// The rule's window and the source's interval.
const WINDOW_S: u64 = 30;
const INTERVAL_S: u64 = 3;
/// Committed by the hostile deployment: if it were not escaped, the query would end after
/// `[1m]))`, add `or vector(1)` and comment out the rest, and read the value 1.
const HOSTILE: &str = "v9\"}[1m])) or vector(1) #";

fn prometheus_bin() -> PathBuf {
    support::required_tool(
        "SHIPLOG_PROMETHEUS",
        &["/usr/bin/prometheus", "/usr/local/bin/prometheus"],
        "the Prometheus server is required by this test and was not found at \
         /usr/bin/prometheus. Install it with `sudo apt-get install -y prometheus` \
         (scripts/setup-test-system.sh, which CI runs, does it without starting a \
         service), or set SHIPLOG_PROMETHEUS to a prometheus binary.",
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Request and error counters per (project, version); each 100 ms every series gets 50
/// requests and `errors_per_50` errors.
type Counters = Arc<Mutex<Vec<(String, String, u64, u64, u64)>>>;

async fn start_app(series: &[(&str, &str, u64)]) -> (u16, Counters) {
    let counters: Counters = Arc::new(Mutex::new(
        series
            .iter()
            .map(|(p, v, e)| (p.to_string(), v.to_string(), *e, 0, 0))
            .collect(),
    ));
    let c = counters.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            for s in c.lock().unwrap().iter_mut() {
                s.3 += 50;
                s.4 += s.2;
            }
        }
    });
    let c = counters.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let c = c.clone();
            async move {
                let mut out = String::from(
                    "# TYPE app_requests_total counter\n# TYPE app_errors_total counter\n",
                );
                for (p, v, _, req, err) in c.lock().unwrap().iter() {
                    out.push_str(&format!(
                        "app_requests_total{{project=\"{p}\",version=\"{v}\"}} {req}\n\
                         app_errors_total{{project=\"{p}\",version=\"{v}\"}} {err}\n"
                    ));
                }
                out
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, counters)
}

/// A Prometheus server of this test; killed on drop.
struct Prometheus {
    child: Option<Child>,
    url: String,
    query_log: PathBuf,
}

impl Prometheus {
    async fn start(dir: &Path, app_port: u16) -> Prometheus {
        let port = free_port();
        let query_log = dir.join("query.log");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  query_log_file: {}\n\
                 scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['127.0.0.1:{app_port}']\n",
                query_log.display()
            ),
        )
        .unwrap();
        let stderr = std::fs::File::create(dir.join("prometheus.stderr")).unwrap();
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            query_log,
        };
        let client = http();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = client
                .get(format!("{}/-/ready", p.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready; stderr:\n{}",
                std::fs::read_to_string(dir.join("prometheus.stderr")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        p
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The PromQL of every query Prometheus logged.
    fn queries(&self) -> Vec<String> {
        std::fs::read_to_string(&self.query_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["params"]["query"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rule(project: &str, prom: &str, script: &Path) -> String {
    format!(
        r#"
[[rules]]
name = "prom-{project}"
kind = "rollback"
project = "{project}"
env = "production"
metric = "error_rate"
window = "{WINDOW_S}s"
max_ratio = 1.5
min_samples = 3
action = {{ command = ["{script}", "rollback", "{{previous_url}}", "{{deployment_id}}"], timeout = "10s" }}

[rules.source]
prometheus = "{prom}"
interval = "{INTERVAL_S}s"
errors = 'sum(increase(app_errors_total{{project="{{project}}",version="{{commit}}"}}[{{interval}}]))'
requests = 'sum(increase(app_requests_total{{project="{{project}}",version="{{commit}}"}}[{{interval}}]))'
"#,
        script = script.display()
    )
}

fn deploy(project: &str, dep: &str, commit: &str, prev: Option<&str>) -> Value {
    let mut data = json!({"status": "succeeded", "url": format!("https://{dep}.example.app"),
                          "provider": "vercel", "triggered_by": "ci"});
    if let Some(p) = prev {
        data["previous_deployment_id"] = json!(p);
    }
    json!({"id": format!("deploy-{dep}"), "kind": "deploy", "source": "ci/test",
           "project": project, "env": "production", "commit": commit,
           "deployment_id": dep, "data": data})
}

async fn post(client: &reqwest::Client, url: &str, events: Vec<Value>) {
    support::faults::post_ok(client, url, &events).await;
}

/// The decisions of a rule about a deployment: (verdict, outcome, reason, phase).
async fn decisions(client: &reqwest::Client, url: &str, rule: &str, dep: &str) -> Vec<Vec<Value>> {
    query(
        client,
        url,
        &format!(
            "SELECT verdict, outcome, json_extract_string(extra, '$.data.reason'), \
             coalesce(json_extract_string(extra, '$.data.phase'), 'final'), deployment_id \
             FROM decisions WHERE rule = '{rule}' AND deployment_id = '{dep}' ORDER BY time"
        ),
    )
    .await
}

async fn wait_decision(
    client: &reqwest::Client,
    url: &str,
    rule: &str,
    dep: &str,
    timeout: Duration,
) -> Vec<Vec<Value>> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows = decisions(client, url, rule, dep).await;
        if !rows.is_empty() || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_source_rolls_back_judges_and_fails_safe() {
    let tmp = tempfile::tempdir().unwrap();
    let (app_port, _counters) = start_app(&[
        ("bad", "v1", 1),
        ("bad", "v2", 10),
        ("good", "v1", 1),
        ("good", "v2", 1),
        ("stop", "v1", 1),
        ("stop", "v2", 1),
        ("hostile", "v1", 1),
    ])
    .await;
    let mut prom = Prometheus::start(tmp.path(), app_port).await;
    let (script, calls) = recorder(tmp.path());
    let config = tmp.path().join("shiplog.toml");
    let rules: String = ["bad", "good", "stop", "hostile"]
        .iter()
        .map(|p| rule(p, &prom.url, &script))
        .collect();
    std::fs::write(&config, rules).unwrap();
    let server = TestServer::spawn(
        &tmp.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = server.url.clone();
    let client = http();

    // The baselines go live; the new versions 15 s later (five baseline samples each).
    for p in ["bad", "good", "stop", "hostile"] {
        post(
            &client,
            &url,
            vec![deploy(p, &format!("{p}-v1"), "v1", None)],
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let live = Instant::now();
    post(
        &client,
        &url,
        vec![
            deploy("bad", "bad-v2", "v2", Some("bad-v1")),
            deploy("good", "good-v2", "v2", Some("good-v1")),
            deploy("hostile", "hostile-v2", HOSTILE, Some("hostile-v1")),
        ],
    )
    .await;

    // 1. Errors ten times more: rolled back within the window.
    let bad = wait_decision(
        &client,
        &url,
        "prom-bad",
        "bad-v2",
        Duration::from_secs(WINDOW_S),
    )
    .await;
    let decided_in = live.elapsed();
    assert!(
        !bad.is_empty() && bad[0][0] == "degraded",
        "bad: {bad:?}\n{}",
        server.stderr()
    );
    assert!(
        decided_in < Duration::from_secs(WINDOW_S),
        "rolled back after {decided_in:?}, past the {WINDOW_S}s window"
    );
    eprintln!("bad version judged degraded {decided_in:?} after going live: {bad:?}");

    // 2. The healthy one, and the hostile one, conclude when their window closes.
    let good = wait_decision(
        &client,
        &url,
        "prom-good",
        "good-v2",
        Duration::from_secs(WINDOW_S + 15),
    )
    .await;
    assert_eq!(good.len(), 1, "good: {good:?}");
    assert_eq!(good[0][0], "healthy", "good: {good:?}");
    let hostile = wait_decision(
        &client,
        &url,
        "prom-hostile",
        "hostile-v2",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(hostile.len(), 1, "hostile: {hostile:?}");
    assert_eq!(hostile[0][0], "inconclusive", "hostile: {hostile:?}");
    let reason = hostile[0][2].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("inconclusive: prometheus: no series for "),
        "hostile reason: {reason}"
    );

    // The bad one was rolled back exactly once (start + outcome decisions, one action).
    let bad = decisions(&client, &url, "prom-bad", "bad-v2").await;
    let phases: Vec<&str> = bad.iter().map(|r| r[3].as_str().unwrap()).collect();
    assert_eq!(phases, vec!["start", "outcome"], "bad: {bad:?}");
    assert_eq!(bad[1][1], "succeeded", "bad: {bad:?}");
    let recorded_calls = recorded(&calls);
    assert_eq!(recorded_calls.len(), 1, "calls: {recorded_calls:?}");
    assert_eq!(
        recorded_calls[0],
        vec!["rollback", "https://bad-v1.example.app", "bad-v2"]
    );

    // 3. The samples judged are in the checks view, with their source and query; the
    // baselines' were read with a range query on the same grid.
    let rows = query(
        &client,
        &url,
        "SELECT deployment_id, source, count(*), sum(errors)::DOUBLE, sum(requests)::DOUBLE, \
         min(json_extract_string(extra, '$.data.source')), min(json_extract_string(extra, '$.data.query')) \
         FROM checks WHERE value IS NOT NULL GROUP BY deployment_id, source ORDER BY deployment_id",
    )
    .await;
    let by_dep: HashMap<String, Vec<Value>> = rows
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r.clone()))
        .collect();
    for dep in ["bad-v1", "bad-v2", "good-v1", "good-v2"] {
        let r = by_dep
            .get(dep)
            .unwrap_or_else(|| panic!("no samples of {dep}: {rows:?}"));
        assert_eq!(r[1], "shiplog-rules/prometheus", "{r:?}");
        assert!(
            r[2].as_i64().unwrap() >= 3,
            "{r:?}\nall: {rows:?}\n{:?}",
            query(
                &client,
                &url,
                "SELECT deployment_id, time, id, value, errors, requests FROM checks ORDER BY time"
            )
            .await
        );
        assert_eq!(r[5], "prometheus", "{r:?}");
        let q = r[6].as_str().unwrap();
        assert!(
            q.contains(&format!(
                "project=\"{}\",version=\"{}\"",
                dep.split('-').next().unwrap(),
                dep.split('-').nth(1).unwrap()
            )),
            "{q}"
        );
    }
    eprintln!("samples judged, by deployment: {rows:?}");
    let rate = |dep: &str| {
        let r = &by_dep[dep];
        r[3].as_f64().unwrap() / r[4].as_f64().unwrap()
    };
    assert!(rate("bad-v2") > 0.15 && rate("bad-v1") < 0.03, "{rows:?}");
    assert!(
        !by_dep.contains_key("hostile-v2"),
        "the hostile commit read a value: {rows:?}"
    );

    // 4. The hostile value reached Prometheus as one literal label value.
    let queries = prom.queries();
    let escaped = format!("version=\"{}\"", HOSTILE.replace('"', "\\\""));
    assert!(
        queries.iter().any(|q| q.contains(&escaped)),
        "no query with {escaped} in Prometheus' query log: {queries:?}"
    );
    assert!(
        !queries
            .iter()
            .any(|q| q.contains("version=\"v9\"}[1m])) or vector(1)")),
        "an unescaped hostile query reached Prometheus: {queries:?}"
    );

    // 5. Prometheus stops in the middle of a window: inconclusive, and why.
    let stop_live = Instant::now();
    post(
        &client,
        &url,
        vec![deploy("stop", "stop-v2", "v2", Some("stop-v1"))],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(WINDOW_S / 3)).await;
    let before_stop = query(
        &client,
        &url,
        "SELECT count(*) FROM checks WHERE deployment_id = 'stop-v2' AND value IS NOT NULL",
    )
    .await;
    assert!(
        before_stop[0][0].as_i64().unwrap() >= 1,
        "no sample before Prometheus stopped: {before_stop:?}"
    );
    prom.stop();
    let stop = wait_decision(
        &client,
        &url,
        "prom-stop",
        "stop-v2",
        Duration::from_secs(WINDOW_S + 15).saturating_sub(stop_live.elapsed()),
    )
    .await;
    assert_eq!(stop.len(), 1, "stop: {stop:?}\n{}", server.stderr());
    assert_eq!(stop[0][0], "inconclusive", "stop: {stop:?}");
    let reason = stop[0][2].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("inconclusive: prometheus unreachable: "),
        "stop reason: {reason}"
    );
    assert!(reason.contains("failed read"), "stop reason: {reason}");
    let failures = query(
        &client,
        &url,
        "SELECT count(*) FROM checks WHERE deployment_id = 'stop-v2' \
         AND json_extract_string(extra, '$.data.error') LIKE 'prometheus unreachable%' AND value IS NULL",
    )
    .await;
    assert!(failures[0][0].as_i64().unwrap() >= 1, "{failures:?}");
    assert_eq!(
        recorded(&calls).len(),
        1,
        "only the bad version was rolled back"
    );

    // 6. /metrics counts the failed reads.
    let metrics = get_text(&client, &format!("{url}/metrics")).await;
    for series in [
        "shiplog_rules_source_errors_total{rule=\"prom-stop\",source=\"prometheus\",class=\"unreachable\"}",
        "shiplog_rules_source_errors_total{rule=\"prom-hostile\",source=\"prometheus\",class=\"no_data\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
}
