//! The engine over a long log: its state is rebuilt bounded, a recent deployment is still
//! judged against its baseline, and a restart repeats no decision.

use bytes::Bytes;
use chrono::{DateTime, Duration as D, Utc};
use serde_json::{json, Value};
use shiplog_events::{format_rfc3339, Event, Kind};
use shiplog_ingest::Ingestor;
use shiplog_ingest::Metrics;
use shiplog_log::{FileLogConfig, Log, LogRecord, SegmentedLog};
use shiplog_rules::{validate, RuleConfig, RulesEngine, RulesSettings};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const RULES: &str = r#"
[[rules]]
name = "r"
kind = "rollback"
project = "p"
env = "production"
metric = "error_rate"
window = "10m"
max_ratio = 1.5
min_samples = 5
dry_run = true
action = { command = ["true"] }

[[rules]]
name = "rq"
kind = "rollback"
project = "q"
env = "production"
metric = "error_rate"
window = "10m"
max_value = 0.1
min_samples = 5
dry_run = true
action = { command = ["true"] }
"#;

fn record(v: Value) -> LogRecord {
    LogRecord {
        key: Bytes::from(v["project"].as_str().unwrap().to_string()),
        value: Bytes::from(serde_json::to_vec(&v).unwrap()),
    }
}

fn deploy(project: &str, dep: &str, prev: Option<&str>, t: DateTime<Utc>) -> LogRecord {
    let mut data = json!({"status": "succeeded", "url": format!("https://{dep}.example")});
    if let Some(p) = prev {
        data["previous_deployment_id"] = json!(p);
    }
    record(
        json!({"id": format!("{dep}/ok"), "kind": "deploy", "source": "ci", "project": project,
                  "env": "production", "deployment_id": dep, "time": format_rfc3339(&t),
                  "received_at": format_rfc3339(&t), "data": data}),
    )
}

fn check(project: &str, dep: &str, value: f64, t: DateTime<Utc>, n: usize) -> LogRecord {
    record(
        json!({"id": format!("{dep}/c{n}"), "kind": "check", "source": "probe", "project": project,
                  "env": "production", "deployment_id": dep, "time": format_rfc3339(&t),
                  "received_at": format_rfc3339(&t),
                  "data": {"name": "error_rate", "value": value}}),
    )
}

fn build(dep: &str, t: DateTime<Utc>) -> LogRecord {
    record(
        json!({"id": format!("{dep}/b"), "kind": "build", "source": "vite", "project": "p",
                  "time": format_rfc3339(&t), "received_at": format_rfc3339(&t),
                  "data": {"tool": "vite", "success": true, "duration_ms": 30000}}),
    )
}

/// The decisions in the log, as (deployment, id), in log order.
async fn decisions(log: &Arc<dyn Log>) -> Vec<(String, String)> {
    let end = log.end_offset(0);
    let mut reader = log.reader(0, 0).unwrap();
    let mut out = Vec::new();
    while reader.position() < end {
        for e in reader
            .next_batch(10_000, 64 << 20, Duration::from_millis(100))
            .await
            .unwrap()
        {
            let ev = Event::from_json_bytes(&e.value).unwrap();
            if ev.kind == Kind::Decision {
                out.push((ev.deployment_id.unwrap_or_default(), ev.id));
            }
        }
    }
    out
}

fn start(log: &Arc<dyn Log>, shutdown: watch::Receiver<bool>) -> RulesEngine {
    start_with(log, RULES, RulesSettings::default(), shutdown)
}

fn start_with(
    log: &Arc<dyn Log>,
    rules: &str,
    settings: RulesSettings,
    shutdown: watch::Receiver<bool>,
) -> RulesEngine {
    #[derive(serde::Deserialize)]
    struct F {
        rules: Vec<RuleConfig>,
    }
    let f: F = toml::from_str(rules).unwrap();
    let rules = validate(&f.rules, &settings).unwrap();
    // A fresh ingestor with an empty dedup index: a repeated decision would be stored.
    let ingestor = Arc::new(Ingestor::new(
        log.clone(),
        Duration::from_secs(7 * 86_400),
        Arc::new(Metrics::default()),
    ));
    RulesEngine::start(rules, settings, ingestor, None, shutdown).unwrap()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_log_rebuilds_bounded_and_a_restart_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = SegmentedLog::open(&dir.path().join("log"), FileLogConfig::default()).unwrap();
    let log: Arc<dyn Log> = Arc::new(log);
    let now = Utc::now();

    // 100 days of history: a deployment every 7.2 minutes with a sample and a build.
    let n = 20_000i64;
    let mut batch = Vec::new();
    for i in 0..n {
        let t = now - D::days(100) + D::milliseconds(i * 432_000);
        let dep = format!("old{i}");
        let prev = (i > 0).then(|| format!("old{}", i - 1));
        batch.push(deploy("p", &dep, prev.as_deref(), t));
        batch.push(check("p", &dep, 0.02, t + D::seconds(5), 0));
        batch.push(build(&dep, t));
        if batch.len() >= 6000 {
            log.append(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    // Now: `base` went live with five healthy samples, then `bad` replaced it and degrades.
    let t = now - D::minutes(3);
    batch.push(deploy("p", "base", Some(&format!("old{}", n - 1)), t));
    batch.extend((0..5).map(|k| check("p", "base", 0.02, t + D::seconds(10), k)));
    let t = now - D::minutes(2);
    batch.push(deploy("p", "bad", Some("base"), t));
    batch.extend((0..5).map(|k| check("p", "bad", 0.5, t + D::seconds(10), k)));
    // `done` (project q) was judged by a previous run: its decision is in the log, and
    // its samples would be degraded now. It must not be judged again.
    batch.push(deploy("q", "done", None, t));
    batch.extend((0..5).map(|k| check("q", "done", 0.5, t + D::seconds(10), k)));
    batch.push(record(
        json!({"id": "rule/rq/done/healthy", "kind": "decision",
        "source": "shiplog-rules", "project": "q", "env": "production", "deployment_id": "done",
        "time": format_rfc3339(&t), "received_at": format_rfc3339(&(t + D::seconds(1))),
        "data": {"rule": "rq", "rule_kind": "rollback", "verdict": "healthy", "phase": "final",
                 "dry_run": false}}),
    ));
    log.append(batch).await.unwrap();

    let (tx, rx) = watch::channel(false);
    let engine = start(&log, rx);
    until("the rebuild", || engine.is_ready()).await;
    let stats = engine.stats();
    // Rebuilt bounded: the deployments received within `history` (7 days: 1400 of the old
    // ones) and the three new ones; samples only of the open windows and the baselines.
    assert!(stats.deployments <= 1400 + 3 + 1, "{stats:?}");
    assert!(stats.deployments >= 1400 - 1, "{stats:?}");
    assert!(stats.samples <= 3 * 5 + 3, "{stats:?}");
    // `bad` is judged against `base` at once (dry run: a decision, nothing runs).
    let mut found = Vec::new();
    for _ in 0..200 {
        found = decisions(&log).await;
        if found.iter().any(|(d, _)| d == "bad") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        found,
        vec![
            ("done".to_string(), "rule/rq/done/healthy".to_string()),
            ("bad".to_string(), "rule/r/bad/degraded".to_string()),
        ],
        "one decision, for the degraded deployment; none for history or for `done`"
    );
    tx.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A restart: rebuilt from the log, it decides nothing again.
    let (tx2, rx2) = watch::channel(false);
    let engine = start(&log, rx2);
    until("the second rebuild", || engine.is_ready()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(decisions(&log).await, found, "nothing decided twice");
    // As bounded as the first time (one old deployment may have crossed the horizon since).
    let again = engine.stats();
    assert!(
        again.deployments.abs_diff(stats.deployments) <= 1,
        "{again:?} vs {stats:?}"
    );
    assert!(again.samples <= 3 * 5 + 3, "{again:?}");
    tx2.send(true).unwrap();
}

/// A log with history, `base` live and `bad` degrading now (as in the test above).
async fn history_log(dir: &std::path::Path, n: i64) -> Arc<dyn Log> {
    let (log, _) = SegmentedLog::open(dir, FileLogConfig::default()).unwrap();
    let log: Arc<dyn Log> = Arc::new(log);
    let now = Utc::now();
    let mut batch = Vec::new();
    for i in 0..n {
        let t = now - D::days(100) + D::milliseconds(i * 432_000);
        let dep = format!("old{i}");
        let prev = (i > 0).then(|| format!("old{}", i - 1));
        batch.push(deploy("p", &dep, prev.as_deref(), t));
        batch.push(check("p", &dep, 0.02, t + D::seconds(5), 0));
    }
    let t = now - D::minutes(3);
    batch.push(deploy("p", "base", Some(&format!("old{}", n - 1)), t));
    batch.extend((0..5).map(|k| check("p", "base", 0.02, t + D::seconds(10), k)));
    let t = now - D::minutes(2);
    batch.push(deploy("p", "bad", Some("base"), t));
    batch.extend((0..5).map(|k| check("p", "bad", 0.5, t + D::seconds(10), k)));
    log.append(batch).await.unwrap();
    log
}

async fn until_decided(log: &Arc<dyn Log>, dep: &str) -> Vec<(String, String)> {
    for _ in 0..200 {
        let found = decisions(log).await;
        if found.iter().any(|(d, _)| d == dep) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no decision for {dep}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_resumes_from_the_snapshot_only_when_it_is_this_logs_and_these_rules() {
    let dir = tempfile::tempdir().unwrap();
    let log = history_log(&dir.path().join("log"), 2000).await;
    let settings = RulesSettings {
        state_dir: Some(dir.path().join("rules")),
        ..RulesSettings::default()
    };
    let snapshot = dir.path().join("rules").join(shiplog_rules::snapshot::FILE);

    // First start: no snapshot, the whole log is read; `bad` is judged; the snapshot is
    // written once the state is rebuilt, and again at shutdown.
    let history_end = log.end_offset(0);
    let (tx, rx) = watch::channel(false);
    let engine = start_with(&log, RULES, settings.clone(), rx);
    until("the rebuild", || engine.is_ready()).await;
    assert_eq!(engine.resumed_from(), None);
    let first = until_decided(&log, "bad").await;
    assert_eq!(first.len(), 1, "{first:?}");
    until("the snapshot", || snapshot.exists()).await;
    let stats = engine.stats();
    tx.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = log.end_offset(0);

    // Meanwhile: `next` replaces `bad` and degrades too.
    let t = Utc::now() - D::seconds(30);
    let mut batch = vec![deploy("p", "next", Some("base"), t)];
    batch.extend((0..5).map(|k| check("p", "next", 0.4, t + D::seconds(1), k)));
    log.append(batch).await.unwrap();

    // Second start: resumes where the snapshot stands (the end of the log when it
    // stopped), judges `next` against `base` (kept in the snapshot) and nothing twice.
    let (tx, rx) = watch::channel(false);
    let engine = start_with(&log, RULES, settings.clone(), rx);
    until("the resumed rebuild", || engine.is_ready()).await;
    let from = engine.resumed_from().expect("resumed from the snapshot");
    assert_eq!(from.len(), 1);
    assert!(
        from[0].0 == 0 && from[0].1 >= history_end && from[0].1 <= end,
        "{from:?}"
    );
    let second = until_decided(&log, "next").await;
    assert_eq!(
        second
            .iter()
            .map(|(d, id)| (d.as_str(), id.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("bad", "rule/r/bad/degraded"),
            ("next", "rule/r/next/degraded")
        ]
    );
    let resumed = engine.stats();
    assert!(
        resumed.deployments.abs_diff(stats.deployments + 1) <= 1,
        "{resumed:?} vs {stats:?}"
    );
    tx.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Other rules: the snapshot kept what the old ones needed, so the whole log is read.
    let other_rules = RULES.replace("window = \"10m\"", "window = \"11m\"");
    let (tx, rx) = watch::channel(false);
    let engine = start_with(&log, &other_rules, settings.clone(), rx);
    until("the rebuild with other rules", || engine.is_ready()).await;
    assert_eq!(engine.resumed_from(), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(decisions(&log).await, second, "nothing decided twice");
    tx.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Another log under the same state directory (and the rules of its snapshot): not
    // mistaken for this one.
    let other = history_log(&dir.path().join("other-log"), 2100).await;
    let (tx, rx) = watch::channel(false);
    let engine = start_with(&other, &other_rules, settings.clone(), rx);
    until("the rebuild of another log", || engine.is_ready()).await;
    assert_eq!(engine.resumed_from(), None);
    until_decided(&other, "bad").await;
    tx.send(true).unwrap();
}

/// How fast the state is rebuilt from a log shaped like the 10M-event benchmark's (55 %
/// checks of four names over four projects and three envs, builds, costs, deploys,
/// migrations, decisions; received over 90 days). Run in release:
/// `SHIPLOG_REBUILD_EVENTS=2000000 cargo test --release -p shiplog-rules --test rebuild -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn rebuild_throughput() {
    let n: u64 = std::env::var("SHIPLOG_REBUILD_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = SegmentedLog::open(&dir.path().join("log"), FileLogConfig::default()).unwrap();
    let log: Arc<dyn Log> = Arc::new(log);
    let now = Utc::now();
    let span = D::days(90).num_milliseconds();
    let projects = ["p", "checkout", "api", "docs"];
    let mut batch = Vec::new();
    for i in 0..n {
        let t = now - D::days(90) + D::milliseconds((i as i128 * span as i128 / n as i128) as i64);
        let ts = format_rfc3339(&t);
        let g = i / 40;
        let project = projects[(g % 4) as usize];
        let env = match g % 10 {
            0..=5 => "production",
            6..=8 => "preview",
            _ => "staging",
        };
        let dep = format!("dpl_{g:09x}");
        let r = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 100;
        let (kind, data) = if r < 55 {
            let name = ["smoke", "health", "error_rate", "latency_p95"][(i % 4) as usize];
            (
                "check",
                json!({"name": name, "passed": true, "value": 0.01, "unit": "ratio"}),
            )
        } else if r < 70 {
            (
                "build",
                json!({"tool": "vite", "tool_version": "8.3.0", "mode": "production", "success": true,
                "duration_ms": 42000, "phases": [{"name": "transform", "duration_ms": 20000},
                {"name": "render", "duration_ms": 12000}], "modules_transformed": 1800,
                "modules_total": 4000, "bundle_bytes": 900000, "gzip_bytes": 270000,
                "chunks": [{"name": "assets/chunk-0-a1b2c3.js", "bytes": 120000, "gzip_bytes": 36000},
                           {"name": "assets/chunk-1-d4e5f6.js", "bytes": 80000, "gzip_bytes": 24000}],
                "assets": [{"name": "index.html", "bytes": 1200}],
                "ci": {"provider": "github", "run_id": "9000000001", "url": "https://github.com/acme/web/actions/runs/9000000001"}}),
            )
        } else if r < 82 {
            (
                "api_cost",
                json!({"provider": "openai", "model": "gpt-4.1-mini", "input_tokens": 1200,
                "output_tokens": 300, "cached_tokens": 0, "requests": 1, "cost_usd": 0.0012, "feature": "chat"}),
            )
        } else if r < 92 {
            let status = ["started", "succeeded", "succeeded", "failed"][(i % 4) as usize];
            (
                "deploy",
                json!({"status": status, "url": format!("https://{project}-{dep}.vercel.app"),
                "provider": "vercel", "previous_deployment_id": format!("dpl_{:09x}", g.saturating_sub(1)),
                "duration_ms": 52000, "triggered_by": "ci"}),
            )
        } else if r < 97 {
            (
                "migration",
                json!({"tool": "alembic", "database": "main", "version": format!("2026{:05}", i % 100_000),
                "name": "add_orders_index", "status": "applied", "duration_ms": 1200}),
            )
        } else {
            (
                "decision",
                json!({"rule": "error-rate-after-deploy", "verdict": "healthy", "metric": "error_rate",
                "value": 0.01, "baseline": 0.01, "threshold": 0.02, "samples": 60, "dry_run": false}),
            )
        };
        let source = if kind == "decision" {
            "shiplog-rules"
        } else {
            "bench"
        };
        batch.push(record(
            json!({"id": format!("bench-{i:012}"), "kind": kind, "source": source,
            "time": ts, "received_at": ts, "project": project, "env": env, "commit": "3f2a9c1e",
            "branch": "main", "deployment_id": dep, "data": data}),
        ));
        if batch.len() >= 20_000 {
            log.append(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    log.append(batch).await.unwrap();

    // The whole log decoded as before (every record into an Event), for comparison.
    let cpu0 = cpu_seconds();
    let started = std::time::Instant::now();
    let mut reader = log.reader(0, 0).unwrap();
    let mut decoded = 0u64;
    while reader.position() < n {
        for e in reader
            .next_batch(4096, 16 << 20, Duration::from_millis(100))
            .await
            .unwrap()
        {
            decoded += Event::from_json_bytes(&e.value).is_ok() as u64;
        }
    }
    let full = started.elapsed();
    let full_cpu = cpu_seconds() - cpu0;

    let (_tx, rx) = watch::channel(false);
    let cpu0 = cpu_seconds();
    let started = std::time::Instant::now();
    let engine = start(&log, rx);
    until("the rebuild", || engine.is_ready()).await;
    let rebuild = started.elapsed();
    let rebuild_cpu = cpu_seconds() - cpu0;
    let s = engine.stats();
    eprintln!(
        "{n} events: rules rebuild {:.2} s wall, {rebuild_cpu:.2} s CPU ({:.0} events per CPU \
         second), {} deployments, {} samples tracked; reading and decoding every record as an \
         Event alone took {:.2} s wall, {full_cpu:.2} s CPU ({decoded} events)",
        rebuild.as_secs_f64(),
        n as f64 / rebuild_cpu,
        s.deployments,
        s.samples,
        full.as_secs_f64()
    );
    assert!(s.deployments <= 20_000 && s.samples <= 500_000);
}

/// CPU time used by this process so far (user + system), in seconds.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}
