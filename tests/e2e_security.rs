//! Security end-to-end tests against the real binary (issue 8, part 4; docs/security.md),
//! the routes and scopes: every mounted route × {no token, bad token, each scope} ×
//! {unrestricted, restricted to `proj-a`}, with the route table checked against the
//! routers' source so that a new route without an entry fails; a token restricted to a
//! project can neither write nor read another project through any endpoint (dashboards
//! JSON and pages, the deployment page, gate, query API).
//!
//! The other security tests, by topic: `e2e_security_query.rs` (the query API cannot read
//! outside shiplog's data or write), `e2e_security_paths.rs` (dashboard names cannot
//! traverse paths), `e2e_security_actions.rs` (rule actions cannot be steered by event
//! data), `e2e_security_secrets.rs` (secrets never appear in logs, answers or metrics),
//! `e2e_security_signin.rs` (the browser sign-in). Their fixtures are
//! `tests/support/security.rs`.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use support::security::*;

/// The (method, route) pairs mounted by the server's routers, read from their source:
/// every `.route("<path>", <method>(…)[.<method>(…)])` in crates/*/src. Other ways of
/// mounting (`nest`, `route_service`, `fallback`) are refused, so that none escapes the
/// table. `crates/shiplog-bench/src/ingest.rs` is skipped: its router is the no-op server
/// that `shiplog bench ingest` compares against, never served by `shiplog serve`.
fn mounted_routes() -> BTreeSet<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    let mut stack = vec![root.join("crates")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                // only the crates' src folders hold server code
                if name != "tests" && name != "benches" && name != "target" {
                    stack.push(p);
                }
            } else if name.ends_with(".rs") && p.components().any(|c| c.as_os_str() == "src") {
                files.push(p);
            }
        }
    }
    let mut out = BTreeSet::new();
    for f in files {
        if f.ends_with("crates/shiplog-bench/src/ingest.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for other in [
            ".nest(",
            ".nest_service(",
            ".route_service(",
            ".fallback(",
            ".fallback_service(",
        ] {
            assert!(
                !text.contains(other),
                "{} mounts routes with {other}: teach mounted_routes() and ROUTES about it",
                f.display()
            );
        }
        let b = text.as_bytes();
        let mut at = 0;
        while let Some(i) = text[at..].find(".route(") {
            let start = at + i + ".route(".len();
            // the arguments, up to the matching ')'
            let (mut depth, mut j, mut in_str) = (1, start, false);
            while depth > 0 {
                match b[j] {
                    b'"' if b[j - 1] != b'\\' => in_str = !in_str,
                    b'(' if !in_str => depth += 1,
                    b')' if !in_str => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            let args = &text[start..j - 1];
            at = j;
            let path = args
                .split('"')
                .nth(1)
                .unwrap_or_else(|| panic!("{}: a route without a literal path", f.display()))
                .to_string();
            // methods at the top level of the arguments: get(…).post(…)
            let ab = args.as_bytes();
            let mut depth = 0;
            for k in 0..ab.len() {
                match ab[k] {
                    b'(' => depth += 1,
                    b')' => depth -= 1,
                    _ => {}
                }
                if depth != 0 || (k > 0 && (ab[k - 1].is_ascii_alphanumeric() || ab[k - 1] == b'_'))
                {
                    continue;
                }
                for m in [
                    "get", "post", "put", "patch", "delete", "head", "options", "any",
                ] {
                    if args[k..].starts_with(&format!("{m}(")) {
                        out.insert((m.to_ascii_uppercase(), path.clone()));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn route_table_matches_the_routers() {
    let mounted = mounted_routes();
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|c| (c.method.to_string(), c.route.to_string()))
        .collect();
    assert!(
        mounted.len() >= 18,
        "the source scan found too few routes: {mounted:?}"
    );
    let missing: Vec<_> = mounted.difference(&table).collect();
    let stale: Vec<_> = table.difference(&mounted).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ROUTES is out of step with the routers.\n  mounted but not in ROUTES (add them, with \
         what they need): {missing:?}\n  in ROUTES but not mounted: {stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_matrix_and_project_restrictions() {
    let s = start("", &[]);
    let url = s.server.url.clone();
    let c = client();
    seed(&c, &url).await;
    // The gate answers 503 while the rules state is rebuilt.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Who::Admin
        .auth(c.get(format!("{url}/v1/gate?project=proj-a&env=production")))
        .send()
        .await
        .unwrap()
        .status()
        == 503
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    for case in ROUTES {
        for &who in EVERYONE {
            let want = expected(case, who);
            let r = send(&c, &url, case, who).await;
            let got = r.status().as_u16();
            let headers = r.headers().clone();
            let body = r.text().await.unwrap_or_default();
            checked += 1;
            if got != want {
                failures.push(format!(
                    "{} {} as {who:?}: {got}, expected {want}: {}",
                    case.method,
                    case.path,
                    body.chars().take(200).collect::<String>()
                ));
                continue;
            }
            // The shape of refusals: JSON with WWW-Authenticate for the API, the sign-in
            // form for pages.
            if want == 401 && !case.page && matches!(case.need, Need::Scope(_)) {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                assert!(v["error"].is_string(), "{} {who:?}: {body}", case.path);
                assert_eq!(headers["www-authenticate"], "Bearer", "{}", case.path);
            }
            if want == 303 && case.page {
                let loc = headers["location"].to_str().unwrap();
                assert!(loc.starts_with("/login?next=/"), "{}: {loc}", case.path);
            }
            // A restricted principal's 2xx answer carries nothing of project B.
            if want / 100 == 2 && who.restricted() {
                for m in B_MARKERS {
                    assert!(
                        !body.contains(m),
                        "{} {} as {who:?} shows {m}",
                        case.method,
                        case.path
                    );
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, ROUTES.len() * EVERYONE.len());

    // Unknown routes are 404 (405 for a known path with another method) for everyone.
    for &who in EVERYONE {
        let r = who
            .auth(c.get(format!("{url}/v1/nope")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{who:?}");
        let r = who
            .auth(c.delete(format!("{url}/v1/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{who:?}");
    }

    // --- Writes: a restricted token writes its project only; the rest of a batch goes on.
    for who in [Who::IngestA, Who::AdminA] {
        let mine = ev("build", A, "dpl-a-2");
        let theirs = ev("build", B, "dpl-b-2");
        let (status, body) = post_events(&c, &url, who, &json!([mine, theirs])).await;
        assert_eq!(status, 207, "{who:?}: {body}");
        assert_eq!(body["accepted"], 1, "{body}");
        assert_eq!(body["rejected"][0]["index"], 1, "{body}");
        assert_eq!(body["rejected"][0]["field"], "/project", "{body}");
        let (status, body) = post_events(&c, &url, who, &json!([ev("deploy", B, "x")])).await;
        assert_eq!(status, 400, "{who:?}: {body}");
        // CloudEvents with the project as an extension attribute are judged the same way.
        let ce = json!({"specversion": "1.0", "type": "build", "source": "sec-test",
            "id": uid("ce"), "project": B, "time": hour_ago(),
            "data": {"tool": "vite", "success": true, "duration_ms": 1}});
        let r = who
            .auth(c.post(format!("{url}/v1/events")))
            .header("content-type", "application/cloudevents+json")
            .body(ce.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{who:?}");
        let ids = [mine["id"].as_str().unwrap(), theirs["id"].as_str().unwrap()];
        let rows = rows_until(
            &c,
            &url,
            &format!("SELECT id FROM events WHERE id = '{}'", ids[0]),
            1,
        )
        .await;
        assert_eq!(rows.len(), 1);
        let (_, body) = sql(
            &c,
            &url,
            Who::Admin,
            &format!(
                "SELECT count(*) FROM events WHERE id = '{}' OR id = '{}'",
                ids[1],
                ce["id"].as_str().unwrap()
            ),
        )
        .await;
        assert_eq!(
            body["rows"],
            json!([[0]]),
            "project B's events were refused"
        );
    }

    // --- Reads: every dashboard, as JSON and as a page, the deployment of B, gate, query.
    let list: Value = Who::Read
        .auth(c.get(format!("{url}/v1/dashboards")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<String> = list["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.len() >= 7, "{names:?}");
    let mut reads: Vec<String> = Vec::new();
    for n in &names {
        reads.push(format!("/v1/dashboards/{n}"));
        reads.push(format!("/d/{n}"));
    }
    for r in [
        "/",
        "/v1/dashboards/deployment?deployment=dpl-b-1",
        "/deployments/dpl-b-1",
        "/deployments/dpl-b-1?project=proj-a",
        "/v1/dashboards/deploys?range=90d",
    ] {
        reads.push(r.to_string());
    }
    let mut unrestricted_saw_b = 0;
    for path in &reads {
        for who in [Who::Read, Who::ReadA, Who::AdminA] {
            let r = who
                .auth(c.get(format!("{url}{path}")))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_eq!(status, 200, "{path} as {who:?}: {body}");
            let shows_b = B_MARKERS.iter().any(|m| body.contains(m));
            if who.restricted() {
                assert!(!shows_b, "{path} as {who:?} shows project B");
            } else if shows_b {
                unrestricted_saw_b += 1;
            }
        }
    }
    // The markers are real: an unrestricted token sees B on most of these.
    assert!(
        unrestricted_saw_b * 2 >= reads.len(),
        "an unrestricted token saw project B on only {unrestricted_saw_b} of {} reads",
        reads.len()
    );
    // Asking for B explicitly is refused, never answered with B's data.
    for who in [Who::ReadA, Who::AdminA] {
        for path in [
            "/v1/dashboards/builds?project=proj-b".to_string(),
            "/builds?project=proj-b".to_string(),
            "/d/costs?project=proj-b".to_string(),
            "/v1/gate?project=proj-b&env=production".to_string(),
        ] {
            let r = who
                .auth(c.get(format!("{url}{path}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path} as {who:?}");
        }
        let (status, body) = sql(
            &c,
            &url,
            who,
            "SELECT project, commit FROM events WHERE project = 'proj-b'",
        )
        .await;
        assert_eq!(status, 403, "{who:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("restricted"),
            "{body}"
        );
        assert!(!body.to_string().contains("leak-b"), "{body}");
    }
    let r = Who::Read
        .auth(c.get(format!("{url}/v1/gate?project=proj-b&env=production")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// ---------------------------------------------------------------------------------------
// The query API's sandbox, over HTTP.
