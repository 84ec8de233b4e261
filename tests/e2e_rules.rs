//! End-to-end tests of the rules engine against the real binary, with a recording script
//! as the action (run directly as argv[0], never through a shell command string): each
//! call writes its arguments, NUL-separated, to a file named after its time in ns.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{http, query, TestServer, BIN};

static N: AtomicU64 = AtomicU64::new(0);

fn uid() -> String {
    format!(
        "e{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A recording script in `dir`: appends each call; exits with `code`.
fn recorder(dir: &Path, name: &str, code: i32) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let calls = dir.join(format!("{name}-calls"));
    std::fs::create_dir_all(&calls).unwrap();
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nt=$(date +%s%N)\nf='{}'/call.$t.$$\nprintf '%s\\0' \"$@\" > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\necho \"recorded $# args\"\nexit {code}\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, calls)
}

/// Calls recorded so far: (unix time in ns, argv[1..]).
fn calls(dir: &Path) -> Vec<(u128, Vec<String>)> {
    let mut out: Vec<(u128, Vec<String>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            if name.ends_with(".tmp") || !name.starts_with("call.") {
                return None;
            }
            let t: u128 = name.split('.').nth(1)?.parse().ok()?;
            let bytes = std::fs::read(dir.join(&name)).ok()?;
            let args = bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            Some((t, args))
        })
        .collect();
    out.sort();
    out
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn deploy(project: &str, dep: &str, status: &str, url: &str, prev: Option<&str>) -> Value {
    let mut data =
        json!({"status": status, "url": url, "provider": "vercel", "triggered_by": "ci"});
    if let Some(p) = prev {
        data["previous_deployment_id"] = json!(p);
    }
    json!({"id": uid(), "kind": "deploy", "source": "ci/test", "project": project,
           "env": "production", "deployment_id": dep, "data": data})
}

fn check(project: &str, dep: &str, name: &str, value: Option<f64>, passed: Option<bool>) -> Value {
    let mut data = json!({"name": name});
    if let Some(v) = value {
        data["value"] = json!(v);
    }
    if let Some(p) = passed {
        data["passed"] = json!(p);
    }
    json!({"id": uid(), "kind": "check", "source": "probe/test", "project": project,
           "env": "production", "deployment_id": dep, "data": data})
}

fn migration(project: &str, status: &str, version: &str) -> Value {
    let mut data = json!({"tool": "alembic", "database": "main", "version": version, "status": status, "duration_ms": 800});
    if status == "failed" {
        data["error"] = json!("relation \"users\" already exists");
    }
    json!({"id": uid(), "kind": "migration", "source": "shiplog-migrate", "project": project,
           "env": "production", "data": data})
}

async fn post(client: &reqwest::Client, url: &str, events: Vec<Value>) {
    support::faults::post_ok(client, url, &events).await;
}

/// Polls a query until it returns at least `n` rows (the projection lags ~1 s).
async fn query_until(client: &reqwest::Client, url: &str, sql: &str, n: usize) -> Vec<Vec<Value>> {
    support::query_until(client, url, sql, n, Duration::from_secs(15)).await
}

async fn wait_calls(dir: &Path, n: usize, timeout: Duration) -> Vec<(u128, Vec<String>)> {
    let deadline = Instant::now() + timeout;
    loop {
        let c = calls(dir);
        if c.len() >= n || Instant::now() > deadline {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    data: PathBuf,
}

fn setup(rules: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let config = root.join("shiplog.toml");
    std::fs::write(&config, rules).unwrap();
    let data = root.join("data");
    Setup {
        _dir: dir,
        root,
        config,
        data,
    }
}

fn spawn(s: &Setup, env: &[(&str, &str)]) -> TestServer {
    TestServer::spawn_env(&s.data, &["--config", s.config.to_str().unwrap()], env)
}

fn rollback_rule(name: &str, project: &str, window: &str, script: &Path, extra: &str) -> String {
    format!(
        r#"
[[rules]]
name = "{name}"
kind = "rollback"
project = "{project}"
env = "production"
metric = "error_rate"
window = "{window}"
baseline = "previous_deployment"
max_ratio = 1.5
min_samples = 5
dry_run = false
action = {{ command = ["{}", "rollback", "{{previous_url}}", "--yes", "{{deployment_id}}", "{{previous_deployment_id}}", "{{project}}/{{env}}"], timeout = "10s", tries = 3, backoff = "100ms" }}
{extra}
"#,
        script.display()
    )
}

/// A baseline deployment `a` with five error_rate samples of 0.02, then `b` succeeded.
async fn baseline_then_new(client: &reqwest::Client, url: &str, project: &str, a: &str, b: &str) {
    post(
        client,
        url,
        vec![deploy(
            project,
            a,
            "succeeded",
            &format!("https://{a}.vercel.app"),
            None,
        )],
    )
    .await;
    post(
        client,
        url,
        (0..5)
            .map(|_| check(project, a, "error_rate", Some(0.02), None))
            .collect(),
    )
    .await;
    post(
        client,
        url,
        vec![deploy(
            project,
            b,
            "succeeded",
            &format!("https://{b}.vercel.app"),
            Some(a),
        )],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_degraded_and_inconclusive() {
    let tmp = tempfile::tempdir().unwrap();
    let (script, rec) = recorder(tmp.path(), "rec", 0);
    let rules = format!(
        "{}{}{}",
        rollback_rule("healthy-rule", "calm", "3s", &script, ""),
        rollback_rule("degraded-rule", "shop", "5s", &script, ""),
        rollback_rule("few-rule", "few", "2s", &script, ""),
    );
    let s = setup(&rules);
    let server = spawn(&s, &[]);
    let client = http();
    let url = server.url.clone();

    // 1. Healthy: noisy samples, all prefixes of >= 5 within 1.5 × 0.02.
    baseline_then_new(&client, &url, "calm", "calm-a", "calm-b").await;
    for v in [0.025, 0.018, 0.029, 0.021, 0.027, 0.02, 0.031, 0.019] {
        post(
            &client,
            &url,
            vec![check("calm", "calm-b", "error_rate", Some(v), None)],
        )
        .await;
    }
    // 3. Too few samples: two very bad ones.
    baseline_then_new(&client, &url, "few", "few-a", "few-b").await;
    post(
        &client,
        &url,
        (0..2)
            .map(|_| check("few", "few-b", "error_rate", Some(0.5), None))
            .collect(),
    )
    .await;

    // 2. Degraded: four bad samples, then the fifth decides.
    baseline_then_new(&client, &url, "shop", "shop-a", "shop-b").await;
    post(
        &client,
        &url,
        (0..4)
            .map(|_| check("shop", "shop-b", "error_rate", Some(0.1), None))
            .collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        calls(&rec).is_empty(),
        "4 samples < min_samples must not act"
    );
    let t0 = now_ns();
    post(
        &client,
        &url,
        vec![check("shop", "shop-b", "error_rate", Some(0.09), None)],
    )
    .await;
    let c = wait_calls(&rec, 1, Duration::from_secs(5)).await;
    assert_eq!(c.len(), 1, "the action ran once");
    let latency_ms = (c[0].0.saturating_sub(t0)) as f64 / 1e6;
    eprintln!("decision latency (deciding sample POST -> action running): {latency_ms:.1} ms");
    assert!(latency_ms < 1000.0, "latency {latency_ms} ms");
    assert_eq!(
        c[0].1,
        vec![
            "rollback",
            "https://shop-a.vercel.app",
            "--yes",
            "shop-b",
            "shop-a",
            "shop/production"
        ]
    );
    // More bad samples: still exactly one action.
    post(
        &client,
        &url,
        (0..5)
            .map(|_| check("shop", "shop-b", "error_rate", Some(0.2), None))
            .collect(),
    )
    .await;

    // Let every window close (5 s + margin).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let all = calls(&rec);
    assert_eq!(all.len(), 1, "exactly one action in all: {all:?}");

    let rows = query_until(
        &client,
        &url,
        "SELECT project, deployment_id, rule, verdict, outcome, value, baseline, threshold, samples, action, dry_run, json_extract_string(extra, '$.data.phase') \
         FROM decisions ORDER BY project, time",
        5,
    )
    .await;
    eprintln!("{rows:#?}");
    let find = |p: &str| {
        rows.iter()
            .filter(|r| r[0] == json!(p))
            .cloned()
            .collect::<Vec<_>>()
    };
    let calm = find("calm");
    assert_eq!(calm.len(), 1, "{calm:?}");
    assert_eq!(calm[0][1], json!("calm-b"));
    assert_eq!(calm[0][3], json!("healthy"));
    assert_eq!(calm[0][8], json!(8));
    let few = find("few");
    assert_eq!(few.len(), 1, "{few:?}");
    assert_eq!(few[0][3], json!("inconclusive"));
    assert_eq!(few[0][8], json!(2));
    let shop = query_until(
        &client,
        &url,
        "SELECT verdict, outcome, value, baseline, threshold, samples, action, dry_run, json_extract_string(extra, '$.data.phase'), CAST(json_extract_string(extra, '$.data.attempts') AS BIGINT) \
         FROM decisions WHERE project = 'shop' ORDER BY time",
        2,
    )
    .await;
    assert_eq!(shop.len(), 2, "{shop:?}");
    assert_eq!(shop[0][0], json!("degraded"));
    assert_eq!(shop[0][1], json!("started"));
    assert_eq!(shop[0][8], json!("start"));
    assert!(
        (shop[0][2].as_f64().unwrap() - 0.0980).abs() < 1e-9,
        "{:?}",
        shop[0][2]
    );
    assert!((shop[0][3].as_f64().unwrap() - 0.02).abs() < 1e-9);
    assert!((shop[0][4].as_f64().unwrap() - 0.03).abs() < 1e-9);
    assert_eq!(shop[0][5], json!(5));
    assert!(shop[0][6]
        .as_str()
        .unwrap()
        .contains("rollback https://shop-a.vercel.app --yes shop-b"));
    assert_eq!(shop[0][7], json!(false));
    assert_eq!(shop[1][1], json!("succeeded"));
    assert_eq!(shop[1][8], json!("outcome"));
    assert_eq!(shop[1][9], json!(1));
    let rb = query_until(
        &client,
        &url,
        "SELECT status, triggered_by, source, previous_deployment_id FROM deploys WHERE project = 'shop' AND deployment_id = 'shop-b' AND status = 'rolled_back'",
        1,
    )
    .await;
    assert_eq!(
        rb,
        vec![vec![
            json!("rolled_back"),
            json!("rule"),
            json!("shiplog-rules"),
            json!("shop-a")
        ]]
    );
    // And in the log itself.
    drop(server);
    let mut log_bytes = Vec::new();
    for e in std::fs::read_dir(s.data.join("log")).unwrap() {
        log_bytes.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    let log = String::from_utf8_lossy(&log_bytes);
    assert!(log.contains("\"id\":\"rule/degraded-rule/shop-b/degraded\""));
    assert!(log.contains("\"id\":\"rule/degraded-rule/shop-b/degraded/outcome\""));
    assert!(log.contains("\"id\":\"rule/degraded-rule/shop-b/rolled_back\""));
    let _ = s.root;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_window_and_after_action() {
    let tmp = tempfile::tempdir().unwrap();
    let (script, rec) = recorder(tmp.path(), "rec", 0);
    let s = setup(&rollback_rule("rs-rule", "rs", "6s", &script, ""));
    let mut server = spawn(&s, &[]);
    let client = http();

    // Mid-window restart: two samples, SIGKILL, restart, three more: the window completes.
    baseline_then_new(&client, &server.url, "rs", "rs-a", "rs-b").await;
    post(
        &client,
        &server.url,
        (0..2)
            .map(|_| check("rs", "rs-b", "error_rate", Some(0.021), None))
            .collect(),
    )
    .await;
    server.kill9();
    let server2 = spawn(&s, &[]);
    post(
        &client,
        &server2.url,
        (0..3)
            .map(|_| check("rs", "rs-b", "error_rate", Some(0.022), None))
            .collect(),
    )
    .await;
    let healthy = query_until(
        &client,
        &server2.url,
        "SELECT verdict, samples FROM decisions WHERE deployment_id = 'rs-b'",
        1,
    )
    .await;
    assert_eq!(healthy, vec![vec![json!("healthy"), json!(5)]]);
    assert!(calls(&rec).is_empty());

    // Right after an action: degrade rs-c, SIGKILL as soon as the action ran, restart.
    post(
        &client,
        &server2.url,
        vec![deploy(
            "rs",
            "rs-c",
            "succeeded",
            "https://rs-c.vercel.app",
            Some("rs-b"),
        )],
    )
    .await;
    post(
        &client,
        &server2.url,
        (0..5)
            .map(|_| check("rs", "rs-c", "error_rate", Some(0.5), None))
            .collect(),
    )
    .await;
    let c = wait_calls(&rec, 1, Duration::from_secs(5)).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].1[1], "https://rs-b.vercel.app");
    let mut server2 = server2;
    server2.kill9();
    let server3 = spawn(&s, &[]);
    // More samples after the restart, and time for the window to close.
    post(
        &client,
        &server3.url,
        (0..5)
            .map(|_| check("rs", "rs-c", "error_rate", Some(0.6), None))
            .collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(calls(&rec).len(), 1, "no repeated action after the restart");
    let d = query_until(
        &client,
        &server3.url,
        "SELECT json_extract_string(extra, '$.data.phase'), outcome FROM decisions WHERE deployment_id = 'rs-c' ORDER BY time",
        2,
    )
    .await;
    eprintln!("{d:?}");
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0], vec![json!("start"), json!("started")]);
    let outcome = d[1][1].as_str().unwrap();
    assert!(
        outcome == "succeeded" || outcome.starts_with("unknown: interrupted"),
        "{outcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_stay_one_argument_and_smoke_failure_is_degraded() {
    let tmp = tempfile::tempdir().unwrap();
    let (script, rec) = recorder(tmp.path(), "rec", 0);
    let s = setup(&rollback_rule("inj", "inj", "30s", &script, ""));
    let server = spawn(&s, &[]);
    let client = http();
    let bad = "x; rm -rf / --yes";
    post(
        &client,
        &server.url,
        vec![deploy(
            "inj",
            "--force",
            "succeeded",
            "https://ok.vercel.app $(touch /tmp/pwned)",
            None,
        )],
    )
    .await;
    post(
        &client,
        &server.url,
        vec![deploy(
            "inj",
            bad,
            "succeeded",
            "https://new.vercel.app",
            Some("--force"),
        )],
    )
    .await;
    post(
        &client,
        &server.url,
        vec![check("inj", bad, "smoke", None, Some(false))],
    )
    .await;
    let c = wait_calls(&rec, 1, Duration::from_secs(5)).await;
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].1,
        vec![
            "rollback",
            "https://ok.vercel.app $(touch /tmp/pwned)",
            "--yes",
            bad,
            "--force",
            "inj/production"
        ]
    );
    let rows = query_until(
        &client,
        &server.url,
        "SELECT metric, verdict, outcome FROM decisions WHERE project = 'inj' ORDER BY time",
        2,
    )
    .await;
    assert_eq!(
        rows[0],
        vec![json!("smoke"), json!("degraded"), json!("started")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_signed_and_failing_command_retried() {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use hmac::{Hmac, Mac};
    // A loopback receiver that verifies the signature; it answers 500 to the first request.
    let received: Arc<Mutex<Vec<(bool, Value)>>> = Arc::default();
    let r2 = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let received = r2.clone();
            async move {
                let sig = headers
                    .get("x-shiplog-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret-123").unwrap();
                mac.update(&body);
                let ok = sig
                    .strip_prefix("sha256=")
                    .and_then(|h| hex::decode(h).ok())
                    .is_some_and(|h| mac.verify_slice(&h).is_ok())
                    && headers.contains_key("x-shiplog-timestamp");
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let mut r = received.lock().unwrap();
                r.push((ok, v));
                if r.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else if ok {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let tmp = tempfile::tempdir().unwrap();
    let (fail_script, fail_rec) = recorder(tmp.path(), "fail", 3);
    let rules = format!(
        r#"
[[rules]]
name = "hook-rule"
kind = "rollback"
project = "hook"
env = "production"
metric = "error_rate"
window = "30s"
max_ratio = 1.5
action = {{ webhook = "http://{hook_addr}/hook", secret_env = "SHIPLOG_TEST_HOOK_SECRET", tries = 3, backoff = "100ms" }}
{}"#,
        rollback_rule("fail-rule", "fail", "30s", &fail_script, "")
    );
    let s = setup(&rules);
    let server = spawn(&s, &[("SHIPLOG_TEST_HOOK_SECRET", "hook-secret-123")]);
    let client = http();
    for p in ["hook", "fail"] {
        post(
            &client,
            &server.url,
            vec![deploy(
                p,
                &format!("{p}-a"),
                "succeeded",
                "https://a.example",
                None,
            )],
        )
        .await;
        post(
            &client,
            &server.url,
            vec![deploy(
                p,
                &format!("{p}-b"),
                "succeeded",
                "https://b.example",
                Some(&format!("{p}-a")),
            )],
        )
        .await;
        post(
            &client,
            &server.url,
            vec![check(p, &format!("{p}-b"), "smoke", None, Some(false))],
        )
        .await;
    }
    let c = wait_calls(&fail_rec, 3, Duration::from_secs(10)).await;
    assert_eq!(c.len(), 3, "three tries");
    let rows = query_until(
        &client,
        &server.url,
        "SELECT project, outcome, CAST(json_extract_string(extra, '$.data.attempts') AS BIGINT), json_extract_string(extra, '$.data.output_tail') FROM decisions WHERE json_extract_string(extra, '$.data.phase') = 'outcome' ORDER BY project",
        2,
    )
    .await;
    eprintln!("{rows:?}");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], json!("fail"));
    assert_eq!(rows[0][1], json!("failed: exit 3 after 3 tries"));
    assert_eq!(rows[0][2], json!(3));
    assert!(rows[0][3].as_str().unwrap().contains("recorded 6 args"));
    assert_eq!(rows[1][0], json!("hook"));
    assert_eq!(rows[1][1], json!("succeeded"));
    assert_eq!(rows[1][2], json!(2));
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(ok, _)| *ok), "signatures verify");
    assert_eq!(got[1].1["deployment_id"], json!("hook-b"));
    assert_eq!(got[1].1["data"]["verdict"], json!("degraded"));
    assert_eq!(got[1].1["previous_url"], json!("https://a.example"));
    // A failed rollback writes no rolled_back event.
    let rb = query(
        &client,
        &server.url,
        "SELECT project FROM deploys WHERE status = 'rolled_back' ORDER BY project",
    )
    .await;
    assert_eq!(rb, vec![vec![json!("hook")]]);
}

fn gate(url: &str, format: &str) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args([
            "gate",
            "--project",
            "db",
            "--env",
            "production",
            "--url",
            url,
            "--format",
            format,
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_follows_migrations() {
    let tmp = tempfile::tempdir().unwrap();
    let (script, rec) = recorder(tmp.path(), "alert", 0);
    let s = setup(&format!(
        "[[rules]]\nname = \"mig\"\nkind = \"migration_failed\"\nproject = \"db\"\naction = {{ command = [\"{}\", \"{{project}}\"] }}\n",
        script.display()
    ));
    let server = spawn(&s, &[]);
    let client = http();
    let url = server.url.clone();
    post(
        &client,
        &url,
        vec![deploy(
            "db",
            "db-1",
            "succeeded",
            "https://db1.example",
            None,
        )],
    )
    .await;
    let g = gate(&url, "text");
    assert_eq!(g.0, 0, "{}", g.1);
    assert!(g.1.contains("OK to deploy"), "{}", g.1);

    post(
        &client,
        &url,
        vec![migration("db", "failed", "20261121_add_users")],
    )
    .await;
    let g = gate(&url, "text");
    eprintln!("{}", g.1);
    assert_eq!(g.0, 1, "{}", g.1);
    assert!(
        g.1.contains("NOT safe")
            && g.1.contains("20261121_add_users")
            && g.1.contains("already exists"),
        "{}",
        g.1
    );
    let (code, json_out) = gate(&url, "json");
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["safe"], json!(false));
    assert_eq!(
        v["failed_migrations"][0]["version"],
        json!("20261121_add_users")
    );

    post(
        &client,
        &url,
        vec![migration("db", "applied", "20261121_add_users")],
    )
    .await;
    let g = gate(&url, "text");
    assert_eq!(g.0, 0, "{}", g.1);

    // The migration_failed rule fired once, with its action.
    let c = wait_calls(&rec, 1, Duration::from_secs(5)).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].1, vec!["db"]);
    let rows = query_until(&client, &url, "SELECT verdict, metric FROM decisions WHERE rule = 'mig' AND json_extract_string(extra, '$.data.phase') = 'start'", 1).await;
    assert_eq!(rows, vec![vec![json!("alert"), json!("migration_failed")]]);

    // Connection errors exit 2.
    drop(server);
    let g = gate(&url, "text");
    assert_eq!(g.0, 2, "{}", g.1);
}

/// Threshold and budget rules run on their cron schedule over DuckDB: an alert fires once
/// when a limit is crossed (not on every tick), its action runs once, and a budget fires
/// once per level reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_and_budget_rules_alert_once_per_crossing() {
    let tmp = tempfile::tempdir().unwrap();
    let (script, rec) = recorder(tmp.path(), "alert", 0);
    let s = setup(&format!(
        r#"
[[rules]]
name = "bundle-too-big"
kind = "threshold"
project = "web"
env = "production"
metric = "bundle_bytes"
max_value = 1000000
schedule = "* * * * * *"
action = {{ command = ["{script}", "{{project}}", "{{env}}"] }}

[[rules]]
name = "monthly-budget"
kind = "budget"
project = "web"
budget_usd = 100.0
schedule = "* * * * * *"
"#,
        script = script.display()
    ));
    let server = spawn(&s, &[]);
    let client = http();
    let url = server.url.clone();
    let now = chrono::Utc::now().to_rfc3339();
    let build = json!({"id": uid(), "kind": "build", "source": "vite-plugin", "project": "web",
        "env": "production", "time": now,
        "data": {"success": true, "duration_ms": 40000, "bundle_bytes": 1_500_000}});
    let cost = |usd: f64| {
        json!({"id": uid(), "kind": "api_cost", "source": "app", "project": "web",
            "env": "production", "time": now,
            "data": {"provider": "openai", "model": "gpt-4o", "cost_usd": usd}})
    };
    post(&client, &url, vec![build, cost(85.0)]).await;

    let sql_alerts = "SELECT value, threshold, outcome, id FROM decisions \
                      WHERE rule = 'bundle-too-big' AND verdict = 'alert' ORDER BY time";
    // One alert: its "started" decision (written before the action) and its outcome.
    let alerts = query_until(&client, &url, sql_alerts, 2).await;
    assert_eq!(alerts.len(), 2, "threshold alert: {alerts:?}");
    assert_eq!(alerts[0][0].as_f64(), Some(1_500_000.0));
    assert_eq!(alerts[0][1].as_f64(), Some(1_000_000.0));
    assert_eq!(alerts[0][2], "started");
    assert_eq!(alerts[1][2], "succeeded");
    // The budget rule alerts once for the highest level crossed (a jump from 0 to 85%
    // is one 80% alert, not a 50% and an 80% one); its id names the month and the level.
    let sql_budget = "SELECT value, id FROM decisions WHERE rule = 'monthly-budget' \
                      AND verdict = 'alert' ORDER BY value";
    let levels = query_until(&client, &url, sql_budget, 1).await;
    assert_eq!(levels.len(), 1, "{levels:?}");
    assert_eq!(levels[0][0].as_f64(), Some(85.0));
    assert!(
        levels[0][1].as_str().unwrap().ends_with("/80"),
        "{levels:?}"
    );

    // Several more ticks: no repeated alert, the action ran once with its arguments.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        query(&client, &url, sql_alerts).await.len(),
        2,
        "alert repeated"
    );
    let c = wait_calls(&rec, 1, Duration::from_secs(5)).await;
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].1, vec!["web".to_string(), "production".to_string()]);

    // Spend passes 100%: exactly one more budget alert, at level 100.
    post(&client, &url, vec![cost(20.0)]).await;
    let levels = query_until(&client, &url, sql_budget, 2).await;
    assert_eq!(levels.len(), 2, "{levels:?}");
    assert_eq!(levels[1][0].as_f64(), Some(105.0));
    assert!(
        levels[1][1].as_str().unwrap().ends_with("/100"),
        "{levels:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        query(&client, &url, sql_budget).await.len(),
        2,
        "budget alert repeated"
    );
    drop(server);
}

/// Rule commands run without shiplog's own secrets: a command that prints its environment
/// sees PATH, HOME and the operator's variables, but no `SHIPLOG_*` variable and none that
/// a `secret_env` names (a token's, a webhook's). What it prints lands in the decision's
/// `output_tail`, which any read token can see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_commands_do_not_inherit_shiplogs_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("env.out");
    let script = tmp.path().join("print-env.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv > '{0}.tmp' && mv '{0}.tmp' '{0}'\nenv\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    const ADMIN: &str = "admin-secret-e2e-0123456789";
    const HOOK: &str = "hook-secret-e2e-0123456789";
    const EXTRA: &str = "shiplog-extra-e2e-0123456789";
    let config = format!(
        r#"
[[tokens]]
name = "admin"
secret_env = "E2E_ADMIN_TOKEN"
scopes = ["admin"]

[[rules]]
name = "hook"
kind = "migration_failed"
project = "other"
action = {{ webhook = "http://127.0.0.1:9/hook", secret_env = "E2E_HOOK_SECRET" }}
{}"#,
        rollback_rule("envp", "envp", "30s", &script, "")
    );
    let s = setup(&config);
    let server = spawn(
        &s,
        &[
            ("E2E_ADMIN_TOKEN", ADMIN),
            ("E2E_HOOK_SECRET", HOOK),
            ("SHIPLOG_E2E_EXTRA", EXTRA),
            ("E2E_KEEP", "kept-value"),
        ],
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN}").parse().unwrap(),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = server.url.clone();
    post(
        &client,
        &url,
        vec![deploy(
            "envp",
            "env-a",
            "succeeded",
            "https://a.vercel.app",
            None,
        )],
    )
    .await;
    post(
        &client,
        &url,
        vec![deploy(
            "envp",
            "env-b",
            "succeeded",
            "https://b.vercel.app",
            Some("env-a"),
        )],
    )
    .await;
    post(
        &client,
        &url,
        vec![check("envp", "env-b", "smoke", None, Some(false))],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !out.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let printed = std::fs::read_to_string(&out).expect("the action ran");
    let names: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(names.contains(&"PATH"), "{printed}");
    if std::env::var_os("HOME").is_some() {
        assert!(names.contains(&"HOME"), "{printed}");
    }
    assert!(printed.contains("E2E_KEEP=kept-value\n"), "{printed}");
    for name in &names {
        assert!(!name.starts_with("SHIPLOG_"), "{name} in {printed}");
    }
    for hidden in ["E2E_ADMIN_TOKEN", "E2E_HOOK_SECRET"] {
        assert!(!names.contains(&hidden), "{hidden} in {printed}");
    }
    for secret in [ADMIN, HOOK, EXTRA] {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    // the decision's output_tail (what read tokens see) holds none of them either
    let rows = query_until(
        &client,
        &url,
        "SELECT json_extract_string(extra, '$.data.output_tail') FROM decisions WHERE project = 'envp' AND outcome = 'succeeded'",
        1,
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let tail = rows[0][0].as_str().unwrap();
    assert!(tail.contains("PATH="), "{tail}");
    for secret in [ADMIN, HOOK, EXTRA] {
        assert!(!tail.contains(secret), "{secret} in {tail}");
    }
}
