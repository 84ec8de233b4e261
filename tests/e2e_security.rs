//! Security end-to-end tests against the real binary (issue 8, part 4; docs/security.md):
//!
//! - the scope matrix: every mounted route × {no token, bad token, each scope} ×
//!   {unrestricted, restricted to `proj-a`}, with the route table checked against the
//!   routers' source so that a new route without an entry fails;
//! - a token restricted to a project can neither write nor read another project through
//!   any endpoint (dashboards JSON and pages, the deployment page, gate, query API);
//! - the query API cannot read outside shiplog's data, write, or change its settings, over
//!   HTTP (crates/shiplog-store/tests/store.rs checks the engine itself);
//! - dashboard names in URLs cannot traverse paths (encoded variants, dashboards_dir);
//! - rule actions cannot be steered by event data (newlines, NUL, leading `-`, `$(…)`,
//!   another project's token); tests/e2e_rules.rs
//!   (`hostile_ids_stay_one_argument_and_smoke_failure_is_degraded`) already checks `;`,
//!   spaces, `--force` and `$(…)` inside one argument;
//! - secrets (token secrets, a webhook's HMAC secret) never appear in the server's log
//!   (at `trace` level), in any answer, nor in `/metrics`;
//! - the browser sign-in: `/login`, the cookie's attributes, redirects, CSRF refusals.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{event, TestServer};

const A: &str = "proj-a";
const B: &str = "proj-b";
/// Strings that only project B's events carry.
const B_MARKERS: &[&str] = &["proj-b", "leak-b"];

static N: AtomicU64 = AtomicU64::new(0);

fn uid(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Who makes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    NoToken,
    BadToken,
    Ingest,
    Read,
    Metrics,
    Admin,
    IngestA,
    ReadA,
    AdminA,
}

const EVERYONE: &[Who] = &[
    Who::NoToken,
    Who::BadToken,
    Who::Ingest,
    Who::Read,
    Who::Metrics,
    Who::Admin,
    Who::IngestA,
    Who::ReadA,
    Who::AdminA,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Ingest,
    Read,
    Metrics,
}

/// Not configured anywhere; it contains the admin secret, so a server that echoed a
/// refused token would also leak a real one.
const BAD_TOKEN: &str = "sec-admin-all-7b1d9f0c22e4x";

impl Who {
    /// (token name, secret, scopes, projects); `ReadA`'s secret comes from the environment.
    fn token(self) -> Option<(&'static str, &'static str, &'static str, &'static str)> {
        Some(match self {
            Who::NoToken | Who::BadToken => return None,
            Who::Ingest => ("ingest-all", "sec-ingest-all-5c0a1e77d3", "ingest", ""),
            Who::Read => ("read-all", "sec-read-all-91f2b6c4e8a0", "read", ""),
            Who::Metrics => ("scraper", "sec-metrics-0d4e6a8b2c19", "metrics", ""),
            Who::Admin => ("admin-all", "sec-admin-all-7b1d9f0c22e4", "admin", ""),
            Who::IngestA => ("ingest-a", "sec-ingest-a-3e5f7a9c1b2d", "ingest", A),
            Who::ReadA => ("read-a", "sec-read-a-from-env-6f8e0d2c4b", "read", A),
            Who::AdminA => ("admin-a", "sec-admin-a-2a4c6e8f0b1d", "admin", A),
        })
    }

    fn secret(self) -> Option<&'static str> {
        match self {
            Who::BadToken => Some(BAD_TOKEN),
            w => w.token().map(|t| t.1),
        }
    }

    fn allows(self, scope: Scope) -> bool {
        let Some((_, _, s, _)) = self.token() else {
            return false;
        };
        match scope {
            Scope::Ingest => s == "ingest" || s == "admin",
            Scope::Read => s == "read" || s == "admin",
            Scope::Metrics => s == "metrics" || s == "read" || s == "admin",
        }
    }

    fn restricted(self) -> bool {
        self.token().is_some_and(|t| !t.3.is_empty())
    }

    fn auth(self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.secret() {
            Some(s) => rb.bearer_auth(s),
            None => rb,
        }
    }
}

/// The environment variable that holds `read-a`'s secret (`secret_env`).
const READ_A_ENV: &str = "SHIPLOG_TEST_READ_A_SECRET";

fn env_for_tokens() -> Vec<(&'static str, &'static str)> {
    vec![(READ_A_ENV, Who::ReadA.secret().unwrap())]
}

/// The `[[tokens]]` of every server here.
fn tokens_toml() -> String {
    let mut out = String::new();
    for who in EVERYONE {
        let Some((name, secret, scope, project)) = who.token() else {
            continue;
        };
        out.push_str(&format!("[[tokens]]\nname = \"{name}\"\n"));
        if *who == Who::ReadA {
            out.push_str(&format!("secret_env = \"{READ_A_ENV}\"\n"));
        } else {
            out.push_str(&format!("secret = \"{secret}\"\n"));
        }
        out.push_str(&format!("scopes = [\"{scope}\"]\n"));
        if !project.is_empty() {
            out.push_str(&format!("projects = [\"{project}\"]\n"));
        }
        out.push('\n');
    }
    out
}

/// A client that does not follow redirects (the tests look at them).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn hour_ago() -> String {
    (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An event of `project` for deployment `dep`; project B's carry the B markers.
fn ev(kind: &str, project: &str, dep: &str) -> Value {
    let mut e = event(kind, "sec-test", &uid(kind), project);
    e["time"] = json!(hour_ago());
    e["deployment_id"] = json!(dep);
    if project == B {
        e["commit"] = json!("leak-b-commit");
        if kind == "deploy" {
            e["data"]["url"] = json!("https://leak-b.example");
        }
    }
    e
}

async fn post_events(c: &reqwest::Client, url: &str, who: Who, events: &Value) -> (u16, Value) {
    let r = who
        .auth(c.post(format!("{url}/v1/events")))
        .json(events)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn sql(c: &reqwest::Client, url: &str, who: Who, sql: &str) -> (u16, Value) {
    let r = who
        .auth(c.post(format!("{url}/v1/query")))
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls an admin query until it returns at least `n` rows (the projection lags ~1 s).
async fn rows_until(c: &reqwest::Client, url: &str, q: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = sql(c, url, Who::Admin, q).await;
        assert_eq!(status, 200, "{q}: {body}");
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A server with every token; `extra` is appended to the config.
struct Server {
    _dir: tempfile::TempDir,
    root: PathBuf,
    server: TestServer,
}

fn start(extra: &str, env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let config = root.join("shiplog.toml");
    // `extra` first: its top-level keys must precede the tables.
    std::fs::write(&config, format!("{extra}\n{}", tokens_toml())).unwrap();
    let mut all_env = env_for_tokens();
    all_env.extend_from_slice(env);
    let server = TestServer::spawn_env(
        &root.join("data"),
        &["--config", config.to_str().unwrap()],
        &all_env,
    );
    Server {
        _dir: dir,
        root,
        server,
    }
}

/// Events of both projects (builds, deploys, checks, migrations, costs), queryable.
async fn seed(c: &reqwest::Client, url: &str) {
    let mut events = Vec::new();
    for (p, dep) in [(A, "dpl-a-1"), (B, "dpl-b-1")] {
        for kind in ["build", "deploy", "migration", "api_cost", "check"] {
            events.push(ev(kind, p, dep));
        }
    }
    let (status, body) = post_events(c, url, Who::Admin, &Value::Array(events)).await;
    assert_eq!(status, 202, "{body}");
    let rows = rows_until(
        c,
        url,
        "SELECT DISTINCT project, kind FROM events ORDER BY 1, 2",
        10,
    )
    .await;
    assert_eq!(rows.len(), 10, "{rows:?}");
}

// ---------------------------------------------------------------------------------------
// The route table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// No token needed: the status is the same for everyone.
    Public(u16),
    Scope(Scope),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    /// One valid event of project A (a fresh id each time).
    EventA,
    Sql,
    EmptyForm,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    method: &'static str,
    /// As mounted (`/d/{name}`).
    route: &'static str,
    /// A concrete request.
    path: &'static str,
    need: Need,
    /// An HTML page: a browser without a token is sent to `/login` (303).
    page: bool,
    /// Whether a project-restricted token with the scope is served.
    restricted_ok: bool,
    /// The status of an authorised request.
    ok: u16,
    body: Body,
}

const fn case(method: &'static str, route: &'static str, path: &'static str, need: Need) -> Case {
    Case {
        method,
        route,
        path,
        need,
        page: false,
        restricted_ok: true,
        ok: 200,
        body: Body::None,
    }
}

const fn page(route: &'static str, path: &'static str) -> Case {
    Case {
        page: true,
        ..case("GET", route, path, Need::Scope(Scope::Read))
    }
}

/// Every route the server mounts (role `all`), with what it needs. The routers are
/// `shiplog_web::router` (crates/shiplog-web/src/lib.rs, `/v1/gate` included),
/// `dashboards::routes` (dashboards/mod.rs) and `login::routes` (login.rs);
/// `mounted_routes()` reads them, and
/// `route_table_matches_the_routers` fails when a route has no entry here.
const ROUTES: &[Case] = &[
    Case {
        ok: 202,
        body: Body::EventA,
        ..case(
            "POST",
            "/v1/events",
            "/v1/events",
            Need::Scope(Scope::Ingest),
        )
    },
    case("GET", "/healthz", "/healthz", Need::Public(200)),
    case("GET", "/metrics", "/metrics", Need::Scope(Scope::Metrics)),
    Case {
        restricted_ok: false, // raw SQL could read any project: refused, not filtered
        body: Body::Sql,
        ..case("POST", "/v1/query", "/v1/query", Need::Scope(Scope::Read))
    },
    page("/", "/"),
    page("/builds", "/builds"),
    page("/deploys", "/deploys"),
    page("/migrations", "/migrations"),
    page("/costs", "/costs"),
    page("/decisions", "/decisions"),
    page("/d/{name}", "/d/builds"),
    page("/deployments/{id}", "/deployments/dpl-a-1"),
    case(
        "GET",
        "/v1/dashboards",
        "/v1/dashboards",
        Need::Scope(Scope::Read),
    ),
    case(
        "GET",
        "/v1/dashboards/{name}",
        "/v1/dashboards/deploys",
        Need::Scope(Scope::Read),
    ),
    case(
        "GET",
        "/v1/gate",
        "/v1/gate?project=proj-a&env=production",
        Need::Scope(Scope::Read),
    ),
    case("GET", "/login", "/login", Need::Public(200)),
    Case {
        body: Body::EmptyForm,
        ..case("POST", "/login", "/login", Need::Public(401))
    },
    case("POST", "/logout", "/logout", Need::Public(303)),
];

fn expected(c: &Case, who: Who) -> u16 {
    match c.need {
        Need::Public(code) => code,
        Need::Scope(scope) => match who {
            Who::NoToken if c.page => 303,
            Who::NoToken | Who::BadToken => 401,
            w if !w.allows(scope) => 403,
            w if w.restricted() && !c.restricted_ok => 403,
            _ => c.ok,
        },
    }
}

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

async fn send(c: &reqwest::Client, url: &str, case: &Case, who: Who) -> reqwest::Response {
    let full = format!("{url}{}", case.path);
    let rb = match case.method {
        "GET" => c.get(&full),
        "POST" => c.post(&full),
        m => panic!("no client for {m}"),
    };
    let rb = match case.body {
        Body::None => rb,
        Body::EventA => rb.json(&ev("build", A, "dpl-a-1")),
        Body::Sql => rb.json(&json!({"sql": "SELECT count(*) FROM events"})),
        Body::EmptyForm => rb
            .header("content-type", "application/x-www-form-urlencoded")
            .body("token=&next=%2F"),
    };
    who.auth(rb).send().await.unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_cannot_read_outside_the_data_or_write() {
    let s = start("", &[]);
    let url = s.server.url.clone();
    let c = client();
    seed(&c, &url).await;
    let root = &s.root;
    let parquet = root.join("data/parquet").canonicalize().unwrap();
    let p = parquet.display().to_string();
    let r = root.display().to_string();
    let segment = std::fs::read_dir(root.join("data/log"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".seg"))
        .expect("a log segment");
    // Files that must not appear.
    let written = [
        root.join("copy.csv"),
        parquet.join("copy.parquet"),
        root.join("attached.db"),
        root.join("q.csv"),
        root.join("multi.csv"),
    ];

    // (SQL, what it tries)
    let attempts: Vec<(String, &str)> = vec![
        (
            "SELECT * FROM read_csv('/etc/passwd')".into(),
            "read a system file",
        ),
        (
            "SELECT * FROM read_csv_auto('/etc/passwd', header = false)".into(),
            "read a system file",
        ),
        (
            "SELECT * FROM read_text('/etc/passwd')".into(),
            "read a system file",
        ),
        (
            "SELECT * FROM read_blob('/etc/passwd')".into(),
            "read a system file",
        ),
        (
            "SELECT * FROM '/etc/passwd'".into(),
            "replacement scan of a system file",
        ),
        (
            "SELECT * FROM read_json_objects('/etc/passwd')".into(),
            "read a system file",
        ),
        (
            "SELECT * FROM read_parquet('/etc/passwd')".into(),
            "read a system file",
        ),
        ("SELECT * FROM glob('/')".into(), "list the root"),
        ("SELECT * FROM glob('/*')".into(), "list the root"),
        (
            "SELECT * FROM glob('/etc/*')".into(),
            "list a system folder",
        ),
        (
            format!("SELECT * FROM read_text('{p}/../../shiplog.toml')"),
            "read the config (token secrets) through ../",
        ),
        (
            format!("SELECT * FROM read_text('{p}/../../../../../../../../etc/passwd')"),
            "escape the parquet dir with ../",
        ),
        (
            format!("SELECT * FROM read_blob('{p}/../log/{segment}')"),
            "read the raw log through ../",
        ),
        (
            format!("SELECT * FROM glob('{p}/../*')"),
            "list the data dir through ../",
        ),
        (
            format!("SELECT * FROM glob('{p}/../../*')"),
            "list the data dir's parent through ../",
        ),
        (
            format!("SELECT * FROM read_text('{p}/./../../shiplog.toml')"),
            "read the config through ./../",
        ),
        (
            format!("SELECT * FROM read_csv('{r}/shiplog.toml')"),
            "read the config by its path",
        ),
        (
            format!("SELECT * FROM read_text('{p}_sibling/x')"),
            "a sibling with the parquet dir's name as prefix",
        ),
        (
            format!("SELECT getenv('{READ_A_ENV}')"),
            "read a token secret from the environment",
        ),
        (
            "SELECT * FROM read_csv('https://example.com/x.csv')".into(),
            "network access",
        ),
        (format!("COPY (SELECT 1) TO '{r}/copy.csv'"), "write a file"),
        (
            format!("COPY (SELECT 1) TO '{p}/copy.parquet' (FORMAT parquet)"),
            "write into the parquet dir",
        ),
        (
            format!("SELECT * FROM query('COPY (SELECT 1) TO ''{r}/q.csv''')"),
            "write through query()",
        ),
        (
            format!("ATTACH '{r}/attached.db' AS x"),
            "create a database file",
        ),
        ("ATTACH ':memory:' AS m".into(), "attach"),
        ("INSTALL httpfs".into(), "install an extension"),
        ("LOAD httpfs".into(), "load an extension"),
        (
            format!("LOAD '{r}/evil.duckdb_extension'"),
            "load a file as an extension",
        ),
        ("PRAGMA database_list".into(), "pragma"),
        ("PRAGMA enable_profiling".into(), "pragma"),
        (
            "SET enable_external_access = true".into(),
            "reopen file access",
        ),
        (
            "SET allowed_directories = ['/']".into(),
            "widen the sandbox",
        ),
        ("RESET lock_configuration".into(), "unlock the settings"),
        (
            "SELECT set_config('threads', '1')".into(),
            "set through a function",
        ),
        ("CREATE TABLE t AS SELECT 1 AS x".into(), "create a table"),
        (
            "CREATE OR REPLACE VIEW builds AS SELECT 1".into(),
            "replace a view",
        ),
        ("CREATE MACRO m() AS 1".into(), "create a macro"),
        ("DROP VIEW builds".into(), "drop a view"),
        ("INSERT INTO builds SELECT * FROM builds".into(), "insert"),
        ("SELECT 1; SELECT 2".into(), "two statements"),
        (
            format!("SELECT 1; COPY (SELECT 1) TO '{r}/multi.csv'"),
            "a write after a read",
        ),
        ("CALL pragma_version()".into(), "call"),
        (
            "EXPORT DATABASE '/tmp/shiplog-export-test'".into(),
            "export",
        ),
        ("CHECKPOINT".into(), "checkpoint"),
        ("DETACH memory".into(), "detach"),
    ];
    let mut failures = Vec::new();
    for (q, what) in &attempts {
        let (status, body) = sql(&c, &url, Who::Admin, q).await;
        let text = body.to_string();
        let leaked = [
            "root:x:0",
            "[[tokens]]",
            "sec-",
            "/etc/",
            "/bin",
            "leak-b-commit",
        ]
        .iter()
        .find(|m| text.contains(*m) && !q.contains(*m));
        let refused = status == 400 || status == 403;
        // glob() of a folder it may not list answers no rows rather than an error.
        let empty = status == 200 && body["rows"] == json!([]);
        if !(refused || (q.contains("glob(") && empty)) || leaked.is_some() {
            failures.push(format!("{what}: {q} -> {status} {text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "not confined:\n{}",
        failures.join("\n")
    );
    for f in &written {
        assert!(!f.exists(), "{} was written", f.display());
    }
    assert!(!Path::new("/tmp/shiplog-export-test").exists());
    // Nothing was created or replaced: the views are intact, the table does not exist.
    let (status, body) = sql(&c, &url, Who::Admin, "SELECT count(*) FROM builds").await;
    assert_eq!(
        (status, body["rows"].clone()),
        (200, json!([[2]])),
        "{body}"
    );
    let (status, _) = sql(&c, &url, Who::Admin, "SELECT * FROM t").await;
    assert_eq!(status, 400);
    // And the sandbox is not "refuse everything": shiplog's own files are readable.
    let (status, body) = sql(
        &c,
        &url,
        Who::Admin,
        &format!("SELECT count(*) FROM read_parquet('{p}/build/date=*/*.parquet')"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([[2]]));
}

// ---------------------------------------------------------------------------------------
// Path traversal through dashboard names.

/// `GET path` sent byte for byte (no client-side normalisation of `..` or escapes).
fn raw_get(base: &str, path: &str, token: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    raw_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n"),
    )
}

/// Sends `head` (request line and headers, each ending in CRLF, then an optional body
/// after an empty line) and reads the answer.
fn raw_request(addr: &str, head: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    match head.split_once("\r\n\r\n") {
        Some((h, body)) => write!(s, "{h}\r\nConnection: close\r\n\r\n{body}").unwrap(),
        None => write!(s, "{head}Connection: close\r\n\r\n").unwrap(),
    }
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_names_cannot_traverse_paths() {
    // A dashboards_dir with one good file, files whose names are not dashboard names, and a
    // dashboard file outside it that a traversal would reach.
    let outer = tempfile::tempdir().unwrap();
    let dash = outer.path().join("dashboards");
    std::fs::create_dir_all(&dash).unwrap();
    let panel = |title: &str| {
        format!(
            "title = \"{title}\"\n[[panels]]\ntitle = \"p\"\nkind = \"stat\"\nsql = \"SELECT 1 AS x FROM events WHERE {{filters}}\"\n"
        )
    };
    std::fs::write(dash.join("team.toml"), panel("TEAM-DASH")).unwrap();
    std::fs::write(outer.path().join("outside.toml"), panel("OUTSIDE-MARKER")).unwrap();
    for bad in ["Bad Name.toml", ".hidden.toml", "-lead.toml", "UPPER.toml"] {
        std::fs::write(dash.join(bad), panel("BADNAME-MARKER")).unwrap();
    }
    let s = start(&format!("dashboards_dir = \"{}\"\n", dash.display()), &[]);
    let url = s.server.url.clone();
    let token = Who::Admin.secret().unwrap();

    let list: Value = Who::Admin
        .auth(client().get(format!("{url}/v1/dashboards")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"team"), "{names:?}");
    assert!(!list.to_string().contains("BADNAME-MARKER"));
    for n in &names {
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
            "{n}"
        );
    }
    let base = url.clone();
    let ok = tokio::task::spawn_blocking(move || raw_get(&base, "/v1/dashboards/team", token))
        .await
        .unwrap();
    assert_eq!(ok.0, 200);
    assert!(ok.1.contains("TEAM-DASH"));

    let mut probes = Vec::new();
    for prefix in ["/v1/dashboards/", "/d/"] {
        for name in [
            "..%2F..%2Fetc%2Fpasswd",
            "..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
            "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
            "..%252F..%252Fetc%252Fpasswd",
            "%252e%252e%252fetc%252fpasswd",
            "..%5C..%5Cetc%5Cpasswd",
            "..%c0%af..%c0%afetc%c0%afpasswd",
            "%c0%ae%c0%ae%2fetc%2fpasswd",
            "..%2Foutside",
            "..%2F..%2Fdashboards%2Fteam",
            "%2e%2e",
            "..",
            "../../etc/passwd",
            "..;/etc/passwd",
            "team%00.toml",
            "team%2Etoml",
            "%2Fetc%2Fpasswd",
            "%2fetc%2fpasswd%00",
            "Bad%20Name",
            ".hidden",
            "-lead",
            "UPPER",
            "outside",
        ] {
            probes.push(format!("{prefix}{name}"));
        }
    }
    probes.push("/v1/dashboards/..%2F..%2Fetc%2Fpasswd?project=..%2F..%2Fetc".into());
    probes.push("/deployments/..%2F..%2F..%2Fetc%2Fpasswd".into());
    probes.push("/v1/dashboards/deployment?deployment=..%2F..%2Fetc%2Fpasswd".into());
    let base = url.clone();
    let answers = tokio::task::spawn_blocking(move || {
        probes
            .into_iter()
            .map(|p| {
                let (status, text) = raw_get(&base, &p, token);
                (p, status, text)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (path, status, text) in answers {
        // The deployment id is a query parameter (never a path): the page answers,
        // about no deployment.
        let allowed: &[u16] = if path.starts_with("/deployments/") || path.contains("deployment=") {
            &[200]
        } else {
            &[400, 404]
        };
        assert!(
            allowed.contains(&status),
            "{path}: {status}\n{}",
            text.chars().take(400).collect::<String>()
        );
        for m in ["root:x:0", "OUTSIDE-MARKER", "BADNAME-MARKER"] {
            assert!(!text.contains(m), "{path} answered with {m}");
        }
        // (HTML pages list every dashboard's title in their navigation.)
        if path.starts_with("/v1/") {
            assert!(
                !text.contains("TEAM-DASH"),
                "{path} served another dashboard"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rule actions and event data.

/// A recording script: each call writes its arguments, NUL-separated, to its own file.
fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let calls = dir.join("calls");
    std::fs::create_dir_all(&calls).unwrap();
    let script = dir.join("rec.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nf='{}'/call.$$\nprintf '%s\\0' \"$@\" > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, calls)
}

fn recorded(dir: &Path) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            continue;
        }
        let bytes = std::fs::read(e.path()).unwrap();
        let mut args: Vec<String> = bytes
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        args.pop(); // after the last NUL
        out.push(args);
    }
    out
}

fn deploy_ev(project: &str, dep: &str, url: &str, prev: Option<&str>) -> Value {
    let mut data =
        json!({"status": "succeeded", "url": url, "provider": "vercel", "triggered_by": "ci"});
    if let Some(p) = prev {
        data["previous_deployment_id"] = json!(p);
    }
    json!({"id": uid("dep"), "kind": "deploy", "source": "ci/test", "project": project,
           "env": "production", "deployment_id": dep, "data": data})
}

fn smoke_failed(project: &str, dep: &str) -> Value {
    json!({"id": uid("chk"), "kind": "check", "source": "probe/test", "project": project,
           "env": "production", "deployment_id": dep, "data": {"name": "smoke", "passed": false}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_actions_cannot_be_steered_by_event_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (script, calls) = recorder(tmp.path());
    let pwned = tmp.path().join("pwned");
    let rule = |project: &str| {
        format!(
            r#"
[[rules]]
name = "roll-{project}"
kind = "rollback"
project = "{project}"
env = "production"
metric = "error_rate"
window = "60s"
max_ratio = 1.5
action = {{ command = ["{}", "rollback", "{{previous_url}}", "--id={{deployment_id}}", "{{deployment_id}}", "{{previous_deployment_id}}", "--yes"], timeout = "10s", tries = 1 }}
"#,
            script.display()
        )
    };
    // `proj-a` is the project the restricted ingest token may write; the rules watch others.
    let s = start(&format!("{}{}", rule("steer"), rule("victim")), &[]);
    let url = s.server.url.clone();
    let c = client();

    // Values that a shell, a naive split or getopt would act on. Deployment ids may not hold
    // control characters (refused at ingest, below); a URL may.
    let prev_id = "-rf --no-preserve-root";
    let prev_url = format!(
        "--force\n--token=x; $(touch {p}) `touch {p}` | touch {p} > {p} *\r\u{7f}\u{1b}[31m",
        p = pwned.display()
    );
    let new_id = "--yes -- $HOME ${IFS} 'quoted' \"dq\" \\ [31m";
    for bad in [
        "-rf\n--no-preserve-root",
        "--yes\r\n",
        "x\u{7f}",
        "x\u{1b}[31m",
    ] {
        let (status, body) = post_events(
            &c,
            &url,
            Who::Admin,
            &json!([deploy_ev("steer", bad, "https://x.example", None)]),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["rejected"][0]["field"], "/deployment_id", "{body}");
    }
    for batch in [
        json!([deploy_ev("steer", prev_id, &prev_url, None)]),
        json!([deploy_ev(
            "steer",
            new_id,
            "https://new.example",
            Some(prev_id)
        )]),
    ] {
        let (status, body) = post_events(&c, &url, Who::Admin, &batch).await;
        assert_eq!(status, 202, "{body}");
    }

    // Another project's rollback cannot be triggered with a token of proj-a.
    for batch in [
        json!([deploy_ev("victim", "v-1", "https://v1.example", None)]),
        json!([deploy_ev(
            "victim",
            "v-2",
            "https://v2.example",
            Some("v-1")
        )]),
    ] {
        let (status, body) = post_events(&c, &url, Who::Admin, &batch).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = post_events(
        &c,
        &url,
        Who::IngestA,
        &json!([smoke_failed("victim", "v-2")]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["rejected"][0]["field"], "/project");

    // Now the real failure of `steer`; its action is the only one to run.
    let (status, body) = post_events(
        &c,
        &url,
        Who::Admin,
        &json!([smoke_failed("steer", new_id)]),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while recorded(&calls).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rules engine handles the log in order: the rejected check never reached it, and
    // the decision of `steer` (a later event) is recorded.
    let rows = rows_until(
        &c,
        &url,
        "SELECT project, verdict FROM decisions ORDER BY time",
        1,
    )
    .await;
    assert!(rows.iter().all(|r| r[0] == "steer"), "{rows:?}");
    let got = recorded(&calls);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0],
        vec![
            "rollback".to_string(),
            prev_url.clone(),
            format!("--id={new_id}"),
            new_id.to_string(),
            prev_id.to_string(),
            "--yes".to_string(),
        ],
        "every value stays one argument, byte for byte"
    );
    assert!(!pwned.exists(), "a shell ran");
}

/// A NUL cannot be passed in an argument: the action is refused, named in the decision,
/// and nothing runs with a truncated value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_event_data_never_runs_a_truncated_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let (script, calls) = recorder(tmp.path());
    let rules = format!(
        r#"
[[rules]]
name = "roll-nul"
kind = "rollback"
project = "nul"
env = "production"
metric = "error_rate"
window = "60s"
max_ratio = 1.5
action = {{ command = ["{}", "rollback", "{{previous_url}}"], timeout = "10s", tries = 1 }}
"#,
        script.display()
    );
    let s = start(&rules, &[]);
    let url = s.server.url.clone();
    let c = client();
    for batch in [
        json!([deploy_ev(
            "nul",
            "n-1",
            "https://ok.example\u{0}--force",
            None
        )]),
        json!([deploy_ev("nul", "n-2", "https://n2.example", Some("n-1"))]),
        json!([smoke_failed("nul", "n-2")]),
    ] {
        let (status, body) = post_events(&c, &url, Who::Admin, &batch).await;
        assert_eq!(status, 202, "{body}");
    }
    let rows = rows_until(
        &c,
        &url,
        "SELECT outcome FROM decisions WHERE json_extract_string(extra, '$.data.phase') = 'outcome'",
        1,
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let outcome = rows[0][0].as_str().unwrap();
    assert!(outcome.starts_with("failed"), "{outcome}");
    assert!(
        recorded(&calls).is_empty(),
        "ran with a truncated argument: {:?}",
        recorded(&calls)
    );
}

// ---------------------------------------------------------------------------------------
// Secrets.

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

fn set_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sign_in_with_a_cookie() {
    let s = start("", &[]);
    let url = s.server.url.clone();
    let host = url.trim_start_matches("http://").to_string();
    let c = client();
    seed(&c, &url).await;
    let read = Who::Read.secret().unwrap();

    // A page without credentials goes to the form, remembering where it was going; the
    // JSON API answers 401.
    let r = c
        .get(format!("{url}/deploys?range=7d"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/deploys%3Frange%3D7d");
    let r = c.get(format!("{url}/v1/dashboards")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A navigation from another site reloads itself first (a Strict cookie is not sent
    // with it), then goes to the form.
    let r = c
        .get(format!("{url}/deploys"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("http-equiv=\"refresh\""));

    let r = c
        .get(format!("{url}/login?next=/deploys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let form = r.text().await.unwrap();
    assert!(form.contains(r#"name="token""#) && form.contains(r#"type="password""#));
    assert!(form.contains(r#"value="/deploys""#));

    // Wrong tokens: 401 / 403, the form again, no cookie.
    for (token, status) in [
        ("nope-nope-nope-nope", 401),
        ("", 401),
        (Who::Ingest.secret().unwrap(), 403),
        (Who::Metrics.secret().unwrap(), 403),
    ] {
        let r = c
            .post(format!("{url}/login"))
            .header("origin", format!("http://{host}"))
            .form(&[("token", token), ("next", "/deploys")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{token}");
        assert!(set_cookie(&r).is_none());
    }
    // Cross-site sign-in (login CSRF) is refused.
    for (name, value) in [
        ("origin", "https://evil.example".to_string()),
        ("origin", "null".to_string()),
        ("sec-fetch-site", "cross-site".to_string()),
        ("sec-fetch-site", "same-site".to_string()),
    ] {
        let r = c
            .post(format!("{url}/login"))
            .header(name, value.as_str())
            .form(&[("token", read)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        assert!(set_cookie(&r).is_none());
    }
    // An open redirect is not possible.
    for next in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
    ] {
        let r = c
            .post(format!("{url}/login"))
            .header("sec-fetch-site", "same-origin")
            .form(&[("token", read), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/", "{next}");
    }

    // The sign-in: 303 to next, the cookie HttpOnly, SameSite=Strict, Path=/.
    let r = c
        .post(format!("{url}/login"))
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", read), ("next", "/deploys?range=7d")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/deploys?range=7d");
    let cookie = set_cookie(&r).unwrap();
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(attrs[0], format!("shiplog_token={read}"));
    for a in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&a), "{cookie}");
    }
    assert!(!attrs.contains(&"Secure"), "plain http: {cookie}");
    let jar = attrs[0].to_string();

    // The browser now reads pages and the JSON API with the cookie.
    let r = c
        .get(format!("{url}/deploys"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        B_MARKERS.iter().any(|m| text.contains(m)),
        "an unrestricted read token"
    );
    // Its header has a sign-out form (a bearer header, which scripts send, gets none).
    assert!(
        text.contains(r#"<form class="signout" method="post" action="/logout">"#)
            && text.contains("read-all"),
        "no sign-out button"
    );
    let r = c
        .get(format!("{url}/deploys"))
        .bearer_auth(read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains("/logout"));
    // A bad bearer header gets the 401 page, which points to the sign-in form.
    let r = c
        .get(format!("{url}/deploys"))
        .bearer_auth("nope-nope-nope-nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#"<a href="/login">Sign in</a>"#) && !text.contains("cookie"),
        "{text}"
    );
    let r = c
        .get(format!("{url}/v1/dashboards/deploys"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{url}/login"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("read-all") && text.contains("/logout"),
        "{text}"
    );
    // The cookie never authenticates a POST of the API (no CSRF on them).
    let r = c
        .post(format!("{url}/v1/query"))
        .header("cookie", &jar)
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let admin_jar = format!("shiplog_token={}", Who::Admin.secret().unwrap());
    let r = c
        .post(format!("{url}/v1/events"))
        .header("cookie", &admin_jar)
        .json(&ev("build", A, "csrf"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A restricted token's cookie sees its project only.
    let jar_a = format!("shiplog_token={}", Who::ReadA.secret().unwrap());
    let r = c
        .get(format!("{url}/deploys"))
        .header("cookie", &jar_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!B_MARKERS.iter().any(|m| text.contains(m)));

    // Behind a TLS-terminating proxy the cookie is Secure.
    let r = c
        .post(format!("{url}/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", read)])
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&r).unwrap().contains("; Secure"));

    // A stale cookie: to the form, and the cookie is cleared.
    let r = c
        .get(format!("{url}/costs"))
        .header("cookie", "shiplog_token=revoked-token-0000000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(set_cookie(&r).unwrap().contains("Max-Age=0"));

    // Sign-out: same-origin only; it clears the cookie.
    let r = c
        .post(format!("{url}/logout"))
        .header("cookie", &jar)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r).is_none());
    let r = c
        .post(format!("{url}/logout"))
        .header("cookie", &jar)
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let cleared = set_cookie(&r).unwrap();
    assert!(
        cleared.starts_with("shiplog_token=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

/// Without tokens (loopback only) there is nothing to sign in to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_needs_no_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::spawn(&dir.path().join("data"), &[]);
    let c = client();
    let r = c
        .get(format!("{}/login?next=/costs", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/costs");
    let r = c.get(format!("{}/costs", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // DNS rebinding: a page of another site, its name re-pointed at 127.0.0.1, reaches the
    // port from the user's browser with its own name in Host. Without tokens, only
    // loopback names are served.
    let addr = server.url.trim_start_matches("http://").to_string();
    let port = addr.rsplit_once(':').unwrap().1.to_string();
    let answers = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for host in [
            format!("evil.example:{port}"),
            "evil.example".to_string(),
            format!("localhost.evil.example:{port}"),
            format!("127.0.0.1.nip.io:{port}"),
            format!("10.1.2.3:{port}"),
        ] {
            for path in ["/v1/dashboards", "/costs", "/healthz"] {
                let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
                out.push((host.clone(), path, 403, raw_request(&addr, &head)));
            }
            let body = r#"{"sql": "SELECT count(*) FROM events"}"#;
            let head = format!(
                "POST /v1/query HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            out.push((host.clone(), "/v1/query", 403, raw_request(&addr, &head)));
        }
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
            "app.localhost".to_string(),
        ] {
            let head = format!("GET /v1/dashboards HTTP/1.1\r\nHost: {host}\r\n");
            out.push((host.clone(), "/v1/dashboards", 200, raw_request(&addr, &head)));
        }
        out
    })
    .await
    .unwrap();
    for (host, path, want, (status, text)) in answers {
        assert_eq!(status, want, "Host: {host} {path}: {text}");
        if want == 403 {
            assert!(text.contains("loopback"), "{text}");
        }
    }
}
