//! Security: secrets (token secrets, a webhook's HMAC secret) never appear in the server's
//! log (at `trace` level), in any answer, nor in `/metrics`.

mod support;

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use support::security::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_answers_or_metrics() {
    use axum::http::StatusCode;
    const HOOK_SECRET: &str = "whsec-9e7c5a3b1d2f4e6a8c0b";
    // A webhook receiver that always fails (so the error paths run) and echoes what it got
    // in its answer (which shiplog keeps as the output tail).
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    let text = format!("{headers:?} {}", String::from_utf8_lossy(&body));
                    g.lock().unwrap().push(text.clone());
                    (StatusCode::INTERNAL_SERVER_ERROR, text)
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // A closed port, for the connection-error path.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rules = format!(
        r#"
[[rules]]
name = "hook-rule"
kind = "rollback"
project = "sec"
env = "production"
metric = "error_rate"
window = "60s"
max_ratio = 1.5
action = {{ webhook = "http://{hook}/hook", secret_env = "SHIPLOG_TEST_HOOK_SECRET", tries = 2, backoff = "50ms" }}

[[rules]]
name = "closed-rule"
kind = "rollback"
project = "sec2"
env = "production"
metric = "error_rate"
window = "60s"
max_ratio = 1.5
action = {{ webhook = "http://{closed}/hook", secret_env = "SHIPLOG_TEST_HOOK_SECRET", tries = 1 }}
"#
    );
    let s = start(
        &rules,
        &[
            ("SHIPLOG_TEST_HOOK_SECRET", HOOK_SECRET),
            ("SHIPLOG_LOG", "trace"),
        ],
    );
    let url = s.server.url.clone();
    let c = client();
    let mut bodies: Vec<(String, String)> = Vec::new();
    let mut keep = |what: String, body: String| bodies.push((what, body));

    // Every route with every principal (good and bad tokens).
    for case in ROUTES {
        for &who in EVERYONE {
            let r = send(&c, &url, case, who).await;
            let h = format!("{:?}", r.headers().get_all("www-authenticate"));
            keep(
                format!("{} {} {who:?}", case.method, case.path),
                r.text().await.unwrap() + &h,
            );
        }
    }
    // Refusals that name the token or the scope, with near-miss and wrong-scope secrets.
    let near_misses = [
        format!("{}x", Who::Read.secret().unwrap()),
        Who::Read.secret().unwrap()[1..].to_string(),
        format!(" {}", Who::Admin.secret().unwrap()),
        Who::Admin.secret().unwrap().to_uppercase(),
        HOOK_SECRET.to_string(),
    ];
    for bad in &near_misses {
        for path in [
            "/v1/dashboards",
            "/metrics",
            "/",
            "/v1/gate?project=a&env=b",
        ] {
            let r = c
                .get(format!("{url}{path}"))
                .bearer_auth(bad)
                .send()
                .await
                .unwrap();
            keep(format!("GET {path} near miss"), r.text().await.unwrap());
            let r = c
                .get(format!("{url}{path}"))
                .header("cookie", format!("shiplog_token={bad}"))
                .send()
                .await
                .unwrap();
            keep(format!("GET {path} bad cookie"), r.text().await.unwrap());
        }
        let r = c
            .post(format!("{url}/v1/events"))
            .header("authorization", format!("Basic {bad}"))
            .json(&ev("build", A, "d"))
            .send()
            .await
            .unwrap();
        keep("events basic".into(), r.text().await.unwrap());
        let r = c
            .post(format!("{url}/login"))
            .form(&[("token", bad.as_str()), ("next", "/")])
            .send()
            .await
            .unwrap();
        keep("login near miss".into(), r.text().await.unwrap());
    }
    // Wrong scopes, each with its own secret.
    for who in [Who::Ingest, Who::Metrics, Who::IngestA] {
        let r = c
            .post(format!("{url}/login"))
            .form(&[("token", who.secret().unwrap())])
            .send()
            .await
            .unwrap();
        keep(format!("login {who:?}"), r.text().await.unwrap());
    }
    // A good sign-in (its Set-Cookie carries the token by design; the body must not).
    let r = c
        .post(format!("{url}/login"))
        .form(&[("token", Who::Read.secret().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    keep("login ok".into(), r.text().await.unwrap());
    // Errors of every kind.
    let errors: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (
            Who::Admin
                .auth(c.post(format!("{url}/v1/events")))
                .header("content-type", "application/json")
                .body("{not json"),
            "bad json",
        ),
        (
            Who::Admin
                .auth(c.post(format!("{url}/v1/events")))
                .header("content-type", "text/csv")
                .body("a,b"),
            "bad type",
        ),
        (
            Who::Admin
                .auth(c.post(format!("{url}/v1/events")))
                .header("content-encoding", "gzip")
                .header("content-type", "application/json")
                .body("not gzip"),
            "bad gzip",
        ),
        (
            Who::Admin
                .auth(c.post(format!("{url}/v1/events")))
                .json(&json!([{"id": "x", "kind": "nope"}])),
            "bad event",
        ),
        (
            Who::Admin
                .auth(c.post(format!("{url}/v1/query")))
                .json(&json!({"sql": "SELEC oops"})),
            "bad sql",
        ),
        (
            Who::Admin
                .auth(c.post(format!("{url}/v1/query")))
                .json(&json!({"sql": "SELECT * FROM read_text('/proc/self/environ')"})),
            "environ",
        ),
        (
            Who::Admin
                .auth(c.post(format!("{url}/v1/query")))
                .json(&json!({"sql": "SELECT * FROM duckdb_settings()"})),
            "settings",
        ),
        (
            Who::Admin
                .auth(c.post(format!("{url}/v1/query")))
                .json(&json!({"query": 1})),
            "bad query body",
        ),
        (
            Who::Admin.auth(c.get(format!("{url}/v1/dashboards/nope"))),
            "unknown dashboard",
        ),
        (
            Who::Admin.auth(c.get(format!("{url}/builds?range=bogus"))),
            "bad filter",
        ),
        (
            Who::Admin.auth(c.get(format!("{url}/v1/gate"))),
            "gate without params",
        ),
    ];
    for (rb, what) in errors {
        let r = rb.send().await.unwrap();
        keep(what.to_string(), r.text().await.unwrap());
    }

    // Make both webhooks fail (they run with the secret), and wait for their outcomes.
    for p in ["sec", "sec2"] {
        for batch in [
            json!([deploy_ev(p, &format!("{p}-1"), "https://one.example", None)]),
            json!([deploy_ev(
                p,
                &format!("{p}-2"),
                "https://two.example",
                Some(&format!("{p}-1"))
            )]),
            json!([smoke_failed(p, &format!("{p}-2"))]),
        ] {
            let (status, body) = post_events(&c, &url, Who::Admin, &batch).await;
            assert_eq!(status, 202, "{body}");
        }
    }
    let rows = rows_until(
        &c,
        &url,
        "SELECT project, outcome, extra FROM decisions ORDER BY project, time",
        4,
    )
    .await;
    let outcomes: Vec<&Value> = rows
        .iter()
        .filter(|r| r[1].as_str().is_some_and(|o| o.starts_with("failed")))
        .collect();
    assert_eq!(outcomes.len(), 2, "{rows:?}");
    keep("decisions".into(), json!(rows).to_string());
    assert_eq!(
        got.lock().unwrap().len(),
        2,
        "the receiver was called twice"
    );
    assert!(
        got.lock().unwrap()[0].contains("x-shiplog-signature"),
        "the webhook was signed"
    );
    for path in ["/v1/dashboards/decisions", "/decisions"] {
        let r = Who::Admin
            .auth(c.get(format!("{url}{path}")))
            .send()
            .await
            .unwrap();
        keep(path.into(), r.text().await.unwrap());
    }
    let metrics = Who::Metrics
        .auth(c.get(format!("{url}/metrics")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("shiplog_events_accepted_total"));
    keep("/metrics".into(), metrics);

    let mut server = s.server;
    assert_eq!(server.stop(), Some(0));
    let log = server.stderr();
    // The log is detailed enough to have leaked: requests, refusals and the webhooks.
    for needle in ["/v1/events", "sign-in refused", "hook-rule", "TRACE"] {
        assert!(log.contains(needle), "the server log lacks {needle:?}");
    }
    let mut secrets: Vec<String> = EVERYONE
        .iter()
        .filter_map(|w| w.token().map(|t| t.1.to_string()))
        .collect();
    secrets.push(HOOK_SECRET.to_string());
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the server log holds a secret"
        );
        for (what, body) in &bodies {
            assert!(
                !body.contains(secret.as_str()),
                "{what} answered with a secret"
            );
        }
    }
    for (what, body) in &bodies {
        for bad in &near_misses {
            assert!(!body.contains(bad.trim()), "{what} echoed a refused token");
        }
    }
    assert!(bodies.len() > 200, "{}", bodies.len());
}

// ---------------------------------------------------------------------------------------
// Browser sign-in.
