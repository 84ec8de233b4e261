//! `shiplog build` and `shiplog compare` on the real binary against a real server:
//! a failing build command's exit code passes through and a failed build is recorded;
//! two builds of a branch compare in a table, Markdown and JSON (`GET /v1/compare`), and a
//! breached `[[budgets]]` limit makes `compare` exit 1.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{TestServer, BIN};

fn shiplog(args: &[&str], dir: &Path, url: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("SHIPLOG_URL", url)
        .env("SHIPLOG_SPOOL_DIR", dir.join("spool"))
        .env_remove("SHIPLOG_PROJECT")
        .env_remove("SHIPLOG_COMMIT")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("CI")
        .output()
        .expect("run shiplog")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn rows_when(url: &str, sql: &str, n: usize) -> Vec<Vec<serde_json::Value>> {
    let client = support::http();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = support::query(&client, url, sql).await;
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const CONFIG: &str = r#"
[[budgets]]
project = "web"
growth_percent = 5
build_time = "10m"

[[budgets]]
project = "docs"
bundle_bytes = 100000
"#;

fn start(tmp: &Path) -> TestServer {
    let config = tmp.join("shiplog.toml");
    std::fs::write(&config, CONFIG).unwrap();
    TestServer::spawn(&tmp.join("data"), &["--config", config.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_build_exits_with_its_code_and_is_recorded_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let o = shiplog(
        &[
            "build",
            "--project",
            "web",
            "--branch",
            "main",
            "--commit",
            "f00d",
            "--",
            "sh",
            "-c",
            "echo compiling; echo 'error: cannot find module ./missing' >&2; exit 3",
        ],
        tmp.path(),
        &server.url,
    );
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("compiling"),
        "the command's output is passed through: {}",
        show(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 build event"),
        "{}",
        show(&o)
    );
    let rows = rows_when(
        &server.url,
        "SELECT success, tool, \"commit\", branch, extra FROM builds WHERE project = 'web'",
        1,
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], false);
    assert_eq!(rows[0][1], "sh");
    assert_eq!(rows[0][2], "f00d");
    let extra: serde_json::Value = serde_json::from_str(rows[0][4].as_str().unwrap()).unwrap();
    assert_eq!(extra["data"]["exit_code"], 3);
    assert_eq!(
        extra["data"]["error"],
        "error: cannot find module ./missing"
    );

    // A command killed by a signal: 128+N, recorded as failed with the signal.
    let o = shiplog(
        &[
            "build",
            "--project",
            "sig",
            "--",
            "sh",
            "-c",
            "kill -TERM $$",
        ],
        tmp.path(),
        &server.url,
    );
    assert_eq!(o.status.code(), Some(143), "{}", show(&o));
    let rows = rows_when(
        &server.url,
        "SELECT success, extra FROM builds WHERE project = 'sig'",
        1,
    )
    .await;
    assert_eq!(rows[0][0], false);
    assert!(rows[0][1].as_str().unwrap().contains("killed by signal 15"));

    // The server down: the build's own exit code all the same, the event spooled.
    let o = Command::new(BIN)
        .args([
            "build",
            "--project",
            "web",
            "--url",
            "http://127.0.0.1:9",
            "--retries",
            "0",
            "--",
            "true",
        ])
        .env("SHIPLOG_SPOOL_DIR", tmp.path().join("spool-down"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        std::fs::read_dir(tmp.path().join("spool-down"))
            .unwrap()
            .count(),
        1
    );
}

/// Writes a dist/ folder: an entry chunk with a content hash, a vendor chunk, a CSS file.
fn write_dist(dir: &Path, hash: &str, entry_bytes: usize, extra_chunk: bool) {
    let dist = dir.join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::create_dir_all(dist.join("assets")).unwrap();
    let body: String = (0..entry_bytes)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    std::fs::write(dist.join(format!("assets/index-{hash}.js")), body).unwrap();
    std::fs::write(dist.join("assets/vendor-Zz91aa0B.js"), "v".repeat(20_000)).unwrap();
    std::fs::write(dist.join("assets/style-Qq81bb0C.css"), "body{}".repeat(100)).unwrap();
    if extra_chunk {
        std::fs::write(dist.join("assets/chart-Ww71cc0D.js"), "c".repeat(3_000)).unwrap();
    }
}

fn build(dir: &Path, url: &str, project: &str, commit: &str) -> Output {
    shiplog(
        &[
            "build",
            "--project",
            project,
            "--branch",
            "main",
            "--commit",
            commit,
            "--out",
            "dist",
            "--",
            "true",
        ],
        dir,
        url,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_two_builds_of_a_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let dir = tmp.path();

    write_dist(dir, "Aa11aa1A", 10_000, false);
    assert!(build(dir, &server.url, "web", "1111111aaaa")
        .status
        .success());
    write_dist(dir, "Bb22bb2B", 12_000, true);
    assert!(build(dir, &server.url, "web", "2222222bbbb")
        .status
        .success());
    rows_when(
        &server.url,
        "SELECT id FROM builds WHERE project = 'web'",
        2,
    )
    .await;

    // web: bundle growth 5% at most; the head grew by 5,000 bytes on ~36,600 (13.7%).
    let o = shiplog(
        &[
            "compare",
            "--project",
            "web",
            "--base",
            "main",
            "--head",
            "2222222",
        ],
        dir,
        &server.url,
    );
    assert_eq!(o.status.code(), Some(1), "a breach exits 1: {}", show(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.starts_with("web — 2222222 against main (1111111)"),
        "{table}"
    );
    assert!(table.contains("Bundle"), "{table}");
    assert!(table.contains("added assets/chart-Ww71cc0D.js"), "{table}");
    assert!(
        table.contains("grown assets/index-Bb22bb2B.js"),
        "the hashed entry is paired: {table}"
    );
    assert!(
        table.contains("1 added, 0 removed, 1 grown, 0 shrunk, 1 unchanged"),
        "{table}"
    );
    assert!(
        table.contains("bundle_growth_percent") && table.contains("BREACH"),
        "{table}"
    );
    assert!(
        table.contains("duration_ms") && table.contains("ok"),
        "{table}"
    );

    // JSON from the API: the numbers.
    let client = support::http();
    let r = client
        .get(format!(
            "{}/v1/compare?project=web&base=main&head=2222222",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c: serde_json::Value = r.json().await.unwrap();
    assert_eq!(c["verdict"], "breach");
    assert_eq!(c["bundle_bytes"]["change"], 5_000);
    assert_eq!(c["head"]["commit"], "2222222bbbb");
    assert_eq!(c["base"]["commit"], "1111111aaaa");
    let grown = c["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["status"] == "grown")
        .unwrap();
    assert_eq!(grown["base_name"], "assets/index-Aa11aa1A.js");
    assert_eq!(grown["bytes"]["change"], 2_000);

    // Markdown, for job summaries and pull requests.
    let o = shiplog(
        &[
            "compare",
            "--project",
            "web",
            "--head",
            "2222222",
            "--format",
            "markdown",
        ],
        dir,
        &server.url,
    );
    assert_eq!(o.status.code(), Some(1));
    let md = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(md.starts_with("### ❌ shiplog: web"), "{md}");
    assert!(
        md.contains("| added `assets/chart-Ww71cc0D.js` | – | 3.0 kB | +3.0 kB |"),
        "{md}"
    );

    // docs: within its budget (bundle 100 kB at most): exit 0.
    write_dist(dir, "Cc33cc3C", 10_000, false);
    assert!(build(dir, &server.url, "docs", "3333333cccc")
        .status
        .success());
    write_dist(dir, "Dd44dd4D", 10_100, false);
    assert!(build(dir, &server.url, "docs", "4444444dddd")
        .status
        .success());
    let o = shiplog(
        &[
            "compare",
            "--project",
            "docs",
            "--head",
            "4444444",
            "--format",
            "json",
        ],
        dir,
        &server.url,
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["verdict"], "pass");
    assert_eq!(c["budgets"][0]["metric"], "bundle_bytes");
    assert_eq!(c["budgets"][0]["passed"], true);

    // Errors: no such build (after the wait), a missing parameter.
    let o = shiplog(
        &[
            "compare",
            "--project",
            "nope",
            "--head",
            "abc",
            "--wait",
            "1s",
        ],
        dir,
        &server.url,
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no build of project \"nope\""));
    let r = client
        .get(format!("{}/v1/compare?project=web", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
