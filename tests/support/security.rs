//! The fixtures of the security tests (`tests/e2e_security*.rs`): the tokens of every
//! scope, unrestricted and restricted to project A, the server they configure, and the
//! requests made as each of them.

use super::{event, TestServer};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const A: &str = "proj-a";
pub const B: &str = "proj-b";
/// Strings that only project B's events carry.
pub const B_MARKERS: &[&str] = &["proj-b", "leak-b"];

pub static N: AtomicU64 = AtomicU64::new(0);

pub fn uid(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Who makes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
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

pub const EVERYONE: &[Who] = &[
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
pub enum Scope {
    Ingest,
    Read,
    Metrics,
}

/// Not configured anywhere; it contains the admin secret, so a server that echoed a
/// refused token would also leak a real one.
pub const BAD_TOKEN: &str = "sec-admin-all-7b1d9f0c22e4x";

impl Who {
    /// (token name, secret, scopes, projects); `ReadA`'s secret comes from the environment.
    pub fn token(self) -> Option<(&'static str, &'static str, &'static str, &'static str)> {
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

    pub fn secret(self) -> Option<&'static str> {
        match self {
            Who::BadToken => Some(BAD_TOKEN),
            w => w.token().map(|t| t.1),
        }
    }

    pub fn allows(self, scope: Scope) -> bool {
        let Some((_, _, s, _)) = self.token() else {
            return false;
        };
        match scope {
            Scope::Ingest => s == "ingest" || s == "admin",
            Scope::Read => s == "read" || s == "admin",
            Scope::Metrics => s == "metrics" || s == "read" || s == "admin",
        }
    }

    pub fn restricted(self) -> bool {
        self.token().is_some_and(|t| !t.3.is_empty())
    }

    pub fn auth(self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.secret() {
            Some(s) => rb.bearer_auth(s),
            None => rb,
        }
    }
}

/// The environment variable that holds `read-a`'s secret (`secret_env`).
pub const READ_A_ENV: &str = "SHIPLOG_TEST_READ_A_SECRET";

pub fn env_for_tokens() -> Vec<(&'static str, &'static str)> {
    vec![(READ_A_ENV, Who::ReadA.secret().unwrap())]
}

/// The `[[tokens]]` of every server here.
pub fn tokens_toml() -> String {
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
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn hour_ago() -> String {
    (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An event of `project` for deployment `dep`; project B's carry the B markers.
pub fn ev(kind: &str, project: &str, dep: &str) -> Value {
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

pub async fn post_events(c: &reqwest::Client, url: &str, who: Who, events: &Value) -> (u16, Value) {
    let r = who
        .auth(c.post(format!("{url}/v1/events")))
        .json(events)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn sql(c: &reqwest::Client, url: &str, who: Who, sql: &str) -> (u16, Value) {
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
pub async fn rows_until(c: &reqwest::Client, url: &str, q: &str, n: usize) -> Vec<Value> {
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
pub struct Server {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub server: TestServer,
}

pub fn start(extra: &str, env: &[(&str, &str)]) -> Server {
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
pub async fn seed(c: &reqwest::Client, url: &str) {
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

/// `GET path` sent byte for byte (no client-side normalisation of `..` or escapes).
pub fn raw_get(base: &str, path: &str, token: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    raw_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n"),
    )
}

/// Sends `head` (request line and headers, each ending in CRLF, then an optional body
/// after an empty line) and reads the answer.
pub fn raw_request(addr: &str, head: &str) -> (u16, String) {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No token needed: the status is the same for everyone.
    Public(u16),
    Scope(Scope),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// One valid event of project A (a fresh id each time).
    EventA,
    Sql,
    EmptyForm,
}

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub method: &'static str,
    /// As mounted (`/d/{name}`).
    pub route: &'static str,
    /// A concrete request.
    pub path: &'static str,
    pub need: Need,
    /// An HTML page: a browser without a token is sent to `/login` (303).
    pub page: bool,
    /// Whether a project-restricted token with the scope is served.
    pub restricted_ok: bool,
    /// The status of an authorised request.
    pub ok: u16,
    pub body: Body,
}

pub const fn case(
    method: &'static str,
    route: &'static str,
    path: &'static str,
    need: Need,
) -> Case {
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

pub const fn page(route: &'static str, path: &'static str) -> Case {
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
pub const ROUTES: &[Case] = &[
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
    case(
        "GET",
        "/v1/compare",
        "/v1/compare?project=proj-a&base=main",
        Need::Scope(Scope::Read),
    ),
    case(
        "GET",
        "/v1/rules/backtest",
        "/v1/rules/backtest",
        Need::Scope(Scope::Read),
    ),
    Case {
        ok: 400, // no candidate rules in the body: refused, naming what is missing
        ..case(
            "POST",
            "/v1/rules/backtest",
            "/v1/rules/backtest",
            Need::Scope(Scope::Read),
        )
    },
    case("GET", "/login", "/login", Need::Public(200)),
    Case {
        body: Body::EmptyForm,
        ..case("POST", "/login", "/login", Need::Public(401))
    },
    case("POST", "/logout", "/logout", Need::Public(303)),
];

pub fn expected(c: &Case, who: Who) -> u16 {
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

pub async fn send(c: &reqwest::Client, url: &str, case: &Case, who: Who) -> reqwest::Response {
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

pub fn deploy_ev(project: &str, dep: &str, url: &str, prev: Option<&str>) -> Value {
    let mut data =
        json!({"status": "succeeded", "url": url, "provider": "vercel", "triggered_by": "ci"});
    if let Some(p) = prev {
        data["previous_deployment_id"] = json!(p);
    }
    json!({"id": uid("dep"), "kind": "deploy", "source": "ci/test", "project": project,
           "env": "production", "deployment_id": dep, "data": data})
}

pub fn smoke_failed(project: &str, dep: &str) -> Value {
    json!({"id": uid("chk"), "kind": "check", "source": "probe/test", "project": project,
           "env": "production", "deployment_id": dep, "data": {"name": "smoke", "passed": false}})
}
