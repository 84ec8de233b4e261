//! End-to-end tests of the collectors against the real binary and a real server:
//! `emit` in each CI provider's environment, retried jobs deduplicated, spool and `flush`
//! while the server is down, `migrate` around a real Alembic on SQLite (see
//! scripts/setup-test-python.sh), signals, and `probe` against a local HTTP server.
//! What the server stored is read back from its log after it stopped.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::{TestServer, BIN};

/// Runs `shiplog` with a clean environment (no CI variables of the machine running the
/// tests) plus `env`; the spool lives in `cache`.
fn shiplog(args: &[&str], env: &[(&str, &str)], cache: &Path) -> Output {
    shiplog_in(args, env, cache, None)
}

fn command(args: &[&str], env: &[(&str, &str)], cache: &Path, dir: Option<&Path>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cache)
        .env("XDG_CACHE_HOME", cache)
        .env("SHIPLOG_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd
}

fn shiplog_in(args: &[&str], env: &[(&str, &str)], cache: &Path, dir: Option<&Path>) -> Output {
    command(args, env, cache, dir)
        .output()
        .expect("run shiplog")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// Every event in a stopped server's log.
async fn stored(data: &Path) -> Vec<Value> {
    use shiplog_log::Log;
    let (log, _) = shiplog_log::file::SegmentedLog::open(
        &data.join("log"),
        shiplog_log::file::FileLogConfig::default(),
    )
    .unwrap();
    let end = log.end_offset(0);
    let mut reader = log.reader(0, 0).unwrap();
    let mut out = Vec::new();
    while reader.position() < end {
        for e in reader
            .next_batch(10_000, 16 << 20, Duration::from_secs(1))
            .await
            .unwrap()
        {
            out.push(serde_json::from_slice(&e.value).unwrap());
        }
    }
    out
}

fn spool_files(cache: &Path) -> Vec<PathBuf> {
    let dir = cache.join("shiplog").join("spool");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A loopback URL where nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

const GITHUB: &[(&str, &str)] = &[
    ("GITHUB_ACTIONS", "true"),
    ("GITHUB_SHA", "1111111111111111111111111111111111111111"),
    ("GITHUB_REF_NAME", "main"),
    ("GITHUB_RUN_ID", "9001"),
    ("GITHUB_RUN_ATTEMPT", "1"),
    ("GITHUB_JOB", "deploy"),
    ("GITHUB_SERVER_URL", "https://github.com"),
    ("GITHUB_REPOSITORY", "acme/web-app"),
];
const GITLAB: &[(&str, &str)] = &[
    ("GITLAB_CI", "true"),
    ("CI_COMMIT_SHA", "2222222222222222222222222222222222222222"),
    ("CI_COMMIT_REF_NAME", "release"),
    ("CI_PIPELINE_ID", "777"),
    ("CI_JOB_ID", "4242"),
    ("CI_JOB_NAME", "deploy-prod"),
    ("CI_JOB_URL", "https://gitlab.com/acme/web-app/-/jobs/4242"),
];
const CIRCLE: &[(&str, &str)] = &[
    ("CIRCLECI", "true"),
    ("CIRCLE_SHA1", "3333333333333333333333333333333333333333"),
    ("CIRCLE_BRANCH", "feature/x"),
    ("CIRCLE_WORKFLOW_ID", "wf-5f1e"),
    ("CIRCLE_BUILD_NUM", "88"),
    (
        "CIRCLE_BUILD_URL",
        "https://circleci.com/gh/acme/web-app/88",
    ),
    ("CIRCLE_JOB", "deploy"),
];
const VERCEL: &[(&str, &str)] = &[
    ("VERCEL", "1"),
    (
        "VERCEL_GIT_COMMIT_SHA",
        "4444444444444444444444444444444444444444",
    ),
    ("VERCEL_GIT_COMMIT_REF", "preview-branch"),
    ("VERCEL_DEPLOYMENT_ID", "dpl_v1"),
    ("VERCEL_URL", "web-app-abc.vercel.app"),
    ("VERCEL_ENV", "preview"),
];

/// A CI environment and what it maps to: provider, commit, branch, run_id, run URL.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// For each CI: the dry-run event maps the environment; sent, the server stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_maps_each_ci_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    let mut server = TestServer::spawn(&data, &[]);
    let cases: [Case; 4] = [
        (
            GITHUB,
            "github",
            "1111111111111111111111111111111111111111",
            "main",
            "9001",
            "https://github.com/acme/web-app/actions/runs/9001/attempts/1",
        ),
        (
            GITLAB,
            "gitlab",
            "2222222222222222222222222222222222222222",
            "release",
            "777",
            "https://gitlab.com/acme/web-app/-/jobs/4242",
        ),
        (
            CIRCLE,
            "circleci",
            "3333333333333333333333333333333333333333",
            "feature/x",
            "wf-5f1e",
            "https://circleci.com/gh/acme/web-app/88",
        ),
        (
            VERCEL,
            "vercel",
            "4444444444444444444444444444444444444444",
            "preview-branch",
            "dpl_v1",
            "https://web-app-abc.vercel.app",
        ),
    ];
    let mut sent = Vec::new();
    for (env, provider, commit, branch, run_id, run_url) in cases {
        let mut args = vec![
            "emit",
            "deploy",
            "--url",
            &server.url,
            "--project",
            "web-app",
            "--status",
            "started",
            "--data",
            "duration_ms=1200",
        ];
        if provider != "vercel" {
            args.extend(["--env", "production", "--deployment-id", "dpl_42"]);
        }
        let mut dry = args.clone();
        dry.push("--dry-run");
        let o = shiplog(&dry, env, &cache);
        assert!(o.status.success(), "{provider}: {}", show(&o));
        let ev: Value = serde_json::from_slice(&o.stdout).expect("dry-run prints the event");
        assert_eq!(ev["source"], format!("ci/{provider}"), "{ev}");
        assert_eq!(ev["commit"], commit, "{ev}");
        assert_eq!(ev["branch"], branch, "{ev}");
        assert_eq!(ev["data"]["ci"]["provider"], provider, "{ev}");
        assert_eq!(ev["data"]["ci"]["run_id"], run_id, "{ev}");
        assert_eq!(ev["data"]["ci"]["url"], run_url, "{ev}");
        assert_eq!(ev["data"]["status"], "started");
        assert_eq!(ev["data"]["triggered_by"], "ci");
        assert_eq!(ev["data"]["duration_ms"], 1200);
        assert!(
            ev["id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{provider}-")),
            "{ev}"
        );
        if provider == "vercel" {
            // Vercel's build is the deployment: env, deployment id and URL come from it.
            assert_eq!(ev["env"], "preview");
            assert_eq!(ev["deployment_id"], "dpl_v1");
            assert_eq!(ev["data"]["url"], "https://web-app-abc.vercel.app");
            assert_eq!(ev["data"]["provider"], "vercel");
        } else {
            assert_eq!(ev["env"], "production");
            assert_eq!(ev["deployment_id"], "dpl_42");
        }
        // The same command, sent: the id is the dry run's (stable in CI).
        let o = shiplog(&args, env, &cache);
        assert!(o.status.success(), "{provider}: {}", show(&o));
        let out = text(&o.stdout);
        assert!(
            out.starts_with("accepted: deploy "),
            "{provider}: {}",
            show(&o)
        );
        assert!(out.contains(ev["id"].as_str().unwrap()), "{out}");
        sent.push(ev);
    }
    // Flags win over the environment.
    let o = shiplog(
        &[
            "emit",
            "build",
            "--project",
            "web-app",
            "--commit",
            "cafe",
            "--branch",
            "hotfix",
            "--data",
            "success=true",
            "--data",
            "duration_ms=41000",
            "--data",
            "ci.run_id=1",
            "--dry-run",
        ],
        GITHUB,
        &cache,
    );
    assert!(o.status.success(), "{}", show(&o));
    let ev: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ev["commit"], "cafe");
    assert_eq!(ev["branch"], "hotfix");
    assert_eq!(ev["data"]["ci"]["run_id"], 1);
    assert_eq!(ev["data"]["ci"]["provider"], "github");

    assert_eq!(server.stop(), Some(0), "{}", server.stderr());
    let log = stored(&data).await;
    for ev in &sent {
        let got = log
            .iter()
            .find(|e| e["id"] == ev["id"] && e["source"] == ev["source"])
            .unwrap_or_else(|| panic!("not stored: {ev}"));
        for f in [
            "kind",
            "project",
            "env",
            "commit",
            "branch",
            "deployment_id",
        ] {
            assert_eq!(got[f], ev[f], "{f}");
        }
        assert_eq!(got["data"]["ci"], ev["data"]["ci"]);
    }
}

/// Invalid input exits 2 naming the field; no CI: random ids; a retried CI job sends the
/// same ids, which the server reports as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_validates_and_retried_jobs_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut server = TestServer::spawn(&dir.path().join("data"), &[]);
    let url = server.url.clone();

    let o = shiplog(
        &[
            "emit",
            "deploy",
            "--url",
            &url,
            "--project",
            "web-app",
            "--status",
            "shipped",
        ],
        &[],
        &cache,
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).contains("/data/status"), "{}", show(&o));
    let o = shiplog(
        &["emit", "deploy", "--url", &url, "--status", "started"],
        &[],
        &cache,
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).contains("/project"), "{}", show(&o));
    let o = shiplog(
        &[
            "emit",
            "check",
            "--url",
            &url,
            "--project",
            "p",
            "--data",
            "name",
        ],
        &[],
        &cache,
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));

    // Outside CI, each emit is a new event.
    let args = [
        "emit",
        "check",
        "--url",
        &url,
        "--project",
        "web-app",
        "--data",
        "name=smoke",
        "--status",
        "passed",
    ];
    for _ in 0..2 {
        let o = shiplog(&args, &[], &cache);
        assert!(
            text(&o.stdout).starts_with("accepted: check cli-"),
            "{}",
            show(&o)
        );
    }

    // A retried job (attempt 2): duplicates.
    let args = [
        "emit",
        "deploy",
        "--url",
        &url,
        "--project",
        "web-app",
        "--env",
        "production",
        "--status",
        "succeeded",
        "--deployment-id",
        "dpl_7",
    ];
    let o = shiplog(&args, GITHUB, &cache);
    assert!(
        text(&o.stdout).starts_with("accepted: deploy github-9001-"),
        "{}",
        show(&o)
    );
    let mut retry: Vec<(&str, &str)> = GITHUB.to_vec();
    retry.retain(|(k, _)| *k != "GITHUB_RUN_ATTEMPT");
    retry.push(("GITHUB_RUN_ATTEMPT", "2"));
    let o2 = shiplog(&args, &retry, &cache);
    assert!(o2.status.success(), "{}", show(&o2));
    assert!(
        text(&o2.stdout).starts_with("duplicate: deploy github-9001-"),
        "{}",
        show(&o2)
    );
    assert_eq!(
        text(&o.stdout).split_whitespace().nth(2),
        text(&o2.stdout).split_whitespace().nth(2)
    );
    // Another status in the same job is another event.
    let mut failed = args.to_vec();
    failed[9] = "failed";
    let o = shiplog(&failed, &retry, &cache);
    assert!(text(&o.stdout).starts_with("accepted: "), "{}", show(&o));
    assert_eq!(server.stop(), Some(0));
}

/// Server down: the event is spooled and emit exits 0 (4 with --strict); `flush` delivers
/// the spool oldest first and moves refused events to rejected/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_spools_and_flush_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    let down = dead_url();
    let base = [
        "--url",
        &down,
        "--project",
        "web-app",
        "--env",
        "production",
        "--retries",
        "2",
    ];
    let mut a = vec!["emit", "deploy", "--status", "started", "--id", "spooled-1"];
    a.extend(base);
    let t = std::time::Instant::now();
    let o = shiplog(&a, &[], &cache);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        text(&o.stdout).starts_with("spooled: deploy spooled-1"),
        "{}",
        show(&o)
    );
    assert!(text(&o.stderr).contains("shiplog flush"), "{}", show(&o));
    // Retries: 200ms + 400ms of backoff, and not much more.
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    let mut a = vec![
        "emit",
        "deploy",
        "--status",
        "succeeded",
        "--id",
        "spooled-2",
        "--strict",
    ];
    a.extend(base);
    let o = shiplog(&a, &[], &cache);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert_eq!(spool_files(&cache).len(), 2);

    // flush while still down: nothing lost, exit 0 (4 with --strict).
    let o = shiplog(&["flush", "--url", &down, "--retries", "0"], &[], &cache);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(text(&o.stdout).contains("0 sent"), "{}", show(&o));
    assert!(text(&o.stdout).contains("2 left"), "{}", show(&o));

    // An event the server refuses (planted: emit itself validates first).
    let spool = cache.join("shiplog").join("spool");
    std::fs::write(
        spool.join("9999999999999-000000-1-00000000.json"),
        r#"{"id":"bad","kind":"deploy","source":"x","project":"web-app","data":{"status":"nope"}}"#,
    )
    .unwrap();

    let mut server = TestServer::spawn(&data, &[]);
    let o = shiplog(&["flush", "--url", &server.url], &[], &cache);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(
        text(&o.stdout).contains("2 sent (2 accepted, 0 duplicate), 1 rejected, 0 left"),
        "{}",
        show(&o)
    );
    assert!(spool_files(&cache).is_empty());
    let rejected = spool.join("rejected");
    assert!(rejected
        .join("9999999999999-000000-1-00000000.json")
        .exists());
    let reason =
        std::fs::read_to_string(rejected.join("9999999999999-000000-1-00000000.json.reason.txt"))
            .unwrap();
    assert!(reason.contains("/data/status"), "{reason}");
    // Flushing again: nothing to do.
    let o = shiplog(&["flush", "--url", &server.url], &[], &cache);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(text(&o.stdout).contains("0 sent"), "{}", show(&o));

    assert_eq!(server.stop(), Some(0));
    let log = stored(&data).await;
    let ids: Vec<&str> = log.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["spooled-1", "spooled-2"], "oldest first");
    assert_eq!(log[0]["data"]["status"], "started");
    assert_eq!(log[0]["source"], "shiplog-cli");
}

fn alembic_bin() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.venv-test/bin/alembic")
        .canonicalize()
        .ok()?;
    p.exists().then_some(p)
}

const ALEMBIC_INI: &str = r#"[alembic]
script_location = migrations
sqlalchemy.url = sqlite:///app.db

[loggers]
keys = root,sqlalchemy,alembic
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARN
handlers = console
qualname =
[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine
[logger_alembic]
level = INFO
handlers =
qualname = alembic
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"#;

const ALEMBIC_ENV: &str = r#"from logging.config import fileConfig
from alembic import context
from sqlalchemy import engine_from_config, pool
config = context.config
fileConfig(config.config_file_name)
engine = engine_from_config(config.get_section(config.config_ini_section),
                            prefix="sqlalchemy.", poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
print("env.py done")
"#;

fn revision(rev: &str, down: Option<&str>, message: &str, sql: &str) -> String {
    format!(
        "\"\"\"{message}\"\"\"\nfrom alembic import op\nrevision = {rev:?}\ndown_revision = {}\nbranch_labels = None\ndepends_on = None\n\ndef upgrade():\n    op.execute({sql:?})\n\ndef downgrade():\n    pass\n",
        down.map_or("None".to_string(), |d| format!("{d:?}"))
    )
}

/// A real Alembic on SQLite: output and exit code pass through; one event per migration
/// with its revision and message; the failing one carries the SQL error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_wraps_a_real_alembic() {
    let Some(alembic) = alembic_bin() else {
        eprintln!(
            "SKIPPED migrate_wraps_a_real_alembic: .venv-test/bin/alembic not found; \
             run scripts/setup-test-python.sh (needs python3 with venv and PyPI access)"
        );
        return;
    };
    let alembic = alembic.to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    let proj = dir.path().join("proj");
    std::fs::create_dir_all(proj.join("migrations/versions")).unwrap();
    std::fs::write(proj.join("alembic.ini"), ALEMBIC_INI).unwrap();
    std::fs::write(proj.join("migrations/env.py"), ALEMBIC_ENV).unwrap();
    std::fs::write(
        proj.join("migrations/versions/a1b2c3_create_users.py"),
        revision(
            "a1b2c3",
            None,
            "create users table",
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
        ),
    )
    .unwrap();
    // The second revision fails with a SQL error.
    let second = proj.join("migrations/versions/d4e5f6_add_email.py");
    std::fs::write(
        &second,
        revision(
            "d4e5f6",
            Some("a1b2c3"),
            "add email to users",
            "ALTER TABLE no_such_table ADD COLUMN email TEXT",
        ),
    )
    .unwrap();

    let mut server = TestServer::spawn(&data, &[]);
    let args = [
        "migrate",
        "--url",
        &server.url,
        "--project",
        "web-app",
        "--env",
        "production",
        "--database",
        "app",
        "--tool",
        "alembic",
        "--",
        &alembic,
        "upgrade",
        "head",
    ];
    let o = shiplog_in(&args, GITHUB, &cache, Some(&proj));
    assert_eq!(
        o.status.code(),
        Some(1),
        "alembic's exit code: {}",
        show(&o)
    );
    let err = text(&o.stderr);
    // Passed through unchanged.
    assert!(
        err.contains(
            "INFO  [alembic.runtime.migration] Running upgrade  -> a1b2c3, create users table"
        ),
        "{}",
        show(&o)
    );
    assert!(
        err.contains("Traceback (most recent call last)"),
        "{}",
        show(&o)
    );
    assert!(err.contains("2 migration event(s)"), "{}", show(&o));
    assert!(err.contains("2 accepted"), "{}", show(&o));

    // Fix the revision and run again: only the second runs now, and succeeds.
    std::fs::write(
        &second,
        revision(
            "d4e5f6",
            Some("a1b2c3"),
            "add email to users",
            "ALTER TABLE users ADD COLUMN email TEXT",
        ),
    )
    .unwrap();
    let o = shiplog_in(&args, GITHUB, &cache, Some(&proj));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    // stdout passes through too (env.py prints).
    assert_eq!(text(&o.stdout), "env.py done\n", "{}", show(&o));
    assert!(text(&o.stderr).contains("1 accepted"), "{}", show(&o));
    // Nothing left to do: one `skipped` event; the same again is a duplicate.
    let o = shiplog_in(&args, GITHUB, &cache, Some(&proj));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("[- skipped]: 1 accepted"),
        "{}",
        show(&o)
    );
    let o = shiplog_in(&args, GITHUB, &cache, Some(&proj));
    assert!(text(&o.stderr).contains("1 duplicate"), "{}", show(&o));

    assert_eq!(server.stop(), Some(0));
    let log = stored(&data).await;
    let rows: Vec<(String, String, String)> = log
        .iter()
        .map(|e| {
            (
                e["data"]["version"].as_str().unwrap_or("-").to_string(),
                e["data"]["name"].as_str().unwrap_or("-").to_string(),
                e["data"]["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let row = |v: &str, n: &str, s: &str| (v.to_string(), n.to_string(), s.to_string());
    assert_eq!(
        rows,
        [
            row("a1b2c3", "create users table", "applied"),
            row("d4e5f6", "add email to users", "failed"),
            row("d4e5f6", "add email to users", "applied"),
            row("-", "-", "skipped"),
        ]
    );
    for e in &log {
        assert_eq!(e["kind"], "migration");
        assert_eq!(e["source"], "ci/github");
        assert_eq!(e["project"], "web-app");
        assert_eq!(e["commit"], "1111111111111111111111111111111111111111");
        assert_eq!(e["data"]["tool"], "alembic");
        assert_eq!(e["data"]["database"], "app");
        assert!(e["data"]["duration_ms"].as_u64().is_some(), "{e}");
    }
    let failed = &log[1]["data"];
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.starts_with("sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) no such table: no_such_table"),
        "{error}"
    );
    assert!(
        error.contains("[SQL: ALTER TABLE no_such_table ADD COLUMN email TEXT]"),
        "{error}"
    );
    assert_eq!(failed["exit_code"], 1);
    assert!(log[0]["data"].get("error").is_none());
}

/// Exit codes pass through, signals give 128+N and a failed event, SIGTERM sent to
/// shiplog reaches the command, and a server that is down never changes the exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_exit_codes_and_signals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    let mut server = TestServer::spawn(&data, &[]);
    let url = server.url.clone();
    let run = |cmd: &[&str], version: &str| {
        let mut a = vec![
            "migrate",
            "--url",
            &url,
            "--project",
            "web-app",
            "--version",
            version,
            "--",
        ];
        a.extend(cmd);
        shiplog(&a, &[], &cache)
    };
    let o = run(&["sh", "-c", "echo out; echo err >&2; exit 3"], "v-exit3");
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert_eq!(text(&o.stdout), "out\n");
    assert!(text(&o.stderr).starts_with("err\n"), "{}", show(&o));

    let o = run(&["sh", "-c", "kill -9 $$"], "v-kill9");
    assert_eq!(o.status.code(), Some(137), "{}", show(&o));

    let o = run(&["/no/such/migrate-tool"], "v-missing");
    assert_eq!(o.status.code(), Some(127), "{}", show(&o));

    // SIGTERM to shiplog is forwarded to the command.
    let started = dir.path().join("v-term-started");
    let child = command(
        &[
            "migrate",
            "--url",
            &url,
            "--project",
            "web-app",
            "--version",
            "v-term",
            "--",
            "sh",
            "-c",
            "touch \"$0\" && exec sleep 30",
            started.to_str().unwrap(),
        ],
        &[],
        &cache,
        None,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The command runs for at least 400 ms before the signal, however slow the start.
    for _ in 0..200 {
        if started.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.exists(), "the migration command never started");
    tokio::time::sleep(Duration::from_millis(450)).await;
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let t = std::time::Instant::now();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", show(&o));
    assert!(t.elapsed() < Duration::from_secs(10));

    // Server down: the command's exit code all the same, the event spooled.
    let down = dead_url();
    let o = shiplog(
        &[
            "migrate",
            "--url",
            &down,
            "--retries",
            "0",
            "--project",
            "web-app",
            "--",
            "true",
        ],
        &[],
        &cache,
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(spool_files(&cache).len(), 1, "{}", show(&o));
    let o = shiplog(
        &[
            "migrate",
            "--url",
            &down,
            "--retries",
            "0",
            "--project",
            "web-app",
            "--strict",
            "--",
            "false",
        ],
        &[],
        &cache,
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    // No project: not reported, but the command still runs with its exit code.
    let o = shiplog(
        &["migrate", "--url", &url, "--", "sh", "-c", "exit 5"],
        &[],
        &cache,
    );
    assert_eq!(o.status.code(), Some(5), "{}", show(&o));
    assert!(text(&o.stderr).contains("/project"), "{}", show(&o));

    assert_eq!(server.stop(), Some(0));
    let log = stored(&data).await;
    let by_version = |v: &str| {
        log.iter()
            .find(|e| e["data"]["version"] == v)
            .unwrap_or_else(|| panic!("no event for {v}"))["data"]
            .clone()
    };
    let d = by_version("v-exit3");
    assert_eq!(d["status"], "failed");
    assert_eq!(d["error"], "err");
    assert_eq!(d["exit_code"], 3);
    assert_eq!(d["tool"], "custom");
    let d = by_version("v-kill9");
    assert_eq!(d["status"], "failed");
    assert_eq!(d["error"], "killed by signal 9");
    assert_eq!(d["exit_code"], 137);
    let d = by_version("v-missing");
    assert_eq!(d["status"], "failed");
    assert!(d["error"]
        .as_str()
        .unwrap()
        .starts_with("cannot run /no/such/migrate-tool"));
    let d = by_version("v-term");
    assert_eq!(d["status"], "failed");
    assert_eq!(d["error"], "killed by signal 15");
    assert!(d["duration_ms"].as_u64().unwrap() >= 400, "{d}");
    assert_eq!(log.len(), 4, "{log:#?}");
}

/// `probe` against a local HTTP server that fails one request in five: per round a
/// latency_p95, an error_rate of 0.2 and a failed health check; a restarted probe sends the
/// same ids (duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probe_reports_checks_per_round() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let h = h.clone();
            async move {
                let n = h.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                if n % 5 == 4 {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down")
                } else {
                    (axum::http::StatusCode::OK, "ok")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    let mut server = TestServer::spawn(&data, &[]);
    let args = [
        "probe",
        "--server",
        &server.url,
        "--url",
        &target,
        "--deployment",
        "dpl_probe",
        "--project",
        "web-app",
        "--env",
        "production",
        "--every",
        "200ms",
        "--for",
        "600ms",
        "--samples",
        "5",
    ];
    let (a, c) = (args.map(String::from), cache.clone());
    let o = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        shiplog(&a, &[], &c)
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("round 2:"), "{out}");
    assert!(!out.contains("round 3:"), "{out}");
    assert!(
        out.contains("9 check event(s), 9 accepted, 0 duplicate, 0 rejected, 0 spooled"),
        "{out}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 15);

    // Restarted: rounds 0-1 again are duplicates.
    let mut again = args.to_vec();
    again[args.len() - 3] = "400ms"; // --for
    let a: Vec<String> = again.iter().map(|s| s.to_string()).collect();
    let c = cache.clone();
    let o = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        shiplog(&a, &[], &c)
    })
    .await
    .unwrap();
    assert!(
        text(&o.stdout).contains("6 check event(s), 0 accepted, 6 duplicate"),
        "{}",
        show(&o)
    );

    assert_eq!(server.stop(), Some(0));
    let log = stored(&data).await;
    assert_eq!(log.len(), 9);
    for e in &log {
        assert_eq!(e["kind"], "check");
        assert_eq!(e["deployment_id"], "dpl_probe");
        assert_eq!(e["source"], "shiplog-probe");
        assert_eq!(e["data"]["samples"], 5);
    }
    let named =
        |n: &str| -> Vec<&Value> { log.iter().filter(|e| e["data"]["name"] == n).collect() };
    let p95 = named("latency_p95");
    assert_eq!(p95.len(), 3);
    for e in &p95 {
        assert_eq!(e["data"]["unit"], "ms");
        let v = e["data"]["value"].as_f64().unwrap();
        assert!((5.0..2000.0).contains(&v), "{e}");
    }
    let er = named("error_rate");
    assert_eq!(er.len(), 3);
    for e in &er {
        assert_eq!(e["data"]["unit"], "ratio");
        assert_eq!(e["data"]["value"], 0.2, "{e}");
    }
    let health = named("health");
    assert_eq!(health.len(), 3);
    for e in &health {
        assert_eq!(e["data"]["passed"], false, "{e}");
        // The last request of each round is the failing fifth.
        assert_eq!(e["data"]["value"], 503, "{e}");
    }
    let rounds: Vec<u64> = health
        .iter()
        .map(|e| e["data"]["round"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds, [0, 1, 2]);
}
