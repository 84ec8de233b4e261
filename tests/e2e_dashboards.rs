//! End-to-end test of the dashboards: the real binary with demo data (`serve --demo`, written
//! through the ingest path), every page loaded in headless Chromium, each chart checked for
//! data marks, no page showing an error, screenshots saved under `target/screenshots/`.
//! Also: the JSON API, the empty state on an empty server, and a broken dashboard file in a
//! configured folder (its error names the file and the panel; the others still serve).
//!
//! Needs Chromium (`apt-get install -y chromium`; `.ci/run` installs it). Set
//! `SHIPLOG_CHROMIUM` to use another binary.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{get_json, get_text, http, query, TestServer};

fn chromium() -> PathBuf {
    support::required_tool(
        "SHIPLOG_CHROMIUM",
        &[
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
            "/usr/bin/google-chrome",
        ],
        "headless Chromium is required by the dashboard test and was not found at \
         /usr/bin/chromium. Install it with `sudo apt-get install -y chromium` (CI's \
         .ci/run does), or set SHIPLOG_CHROMIUM to a Chromium/Chrome binary.",
    )
}

/// Runs Chromium headless with the flags these machines need (ENVIRONMENT.md).
fn chromium_run(args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let child = cmd.spawn().expect("start chromium");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => String::from_utf8_lossy(&out.expect("chromium output").stdout).into_owned(),
        Err(_) => {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("chromium did not finish within 120 s ({args:?})");
        }
    }
}

fn dump_dom(url: &str) -> String {
    chromium_run(&["--dump-dom".to_string(), url.to_string()])
}

fn screenshot(url: &str, path: &Path) {
    let _ = std::fs::remove_file(path);
    chromium_run(&[
        format!("--screenshot={}", path.display()),
        "--window-size=1440,2400".to_string(),
        url.to_string(),
    ]);
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    assert!(
        len > 20_000,
        "screenshot {} is missing or blank ({len} bytes)",
        path.display()
    );
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// Data marks inside one chart's SVG: circles, polygons, opaque non-white rects (bars; not
/// the background nor the translucent threshold bands), and the vertices of polylines with
/// 3+ points (series; axes and grid lines have 2) and of polygons (areas).
fn data_marks(svg: &str) -> usize {
    let mut n = 0;
    for piece in svg.split('<').skip(1) {
        let tag = piece.split('>').next().unwrap_or("");
        let name = tag.split([' ', '/']).next().unwrap_or("");
        match name {
            "circle" => n += 1,
            "polygon" => n += attr(tag, "points").map_or(1, |p| p.split_whitespace().count()),
            "rect" => {
                let opaque = attr(tag, "opacity").is_none_or(|o| o == "1");
                let fill = attr(tag, "fill").unwrap_or("").to_ascii_uppercase();
                if opaque && fill != "#FFFFFF" && fill != "NONE" {
                    n += 1;
                }
            }
            "polyline" => {
                // a series: every vertex is a data point
                let points = attr(tag, "points").map_or(0, |p| p.split_whitespace().count());
                if points >= 3 {
                    n += points;
                }
            }
            _ => {}
        }
    }
    n
}

/// The `<figure class="chart">` elements of a page: (panel title, svg).
fn charts(dom: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for section in dom.split("<section class=\"card").skip(1) {
        let title = section
            .split("<h2>")
            .nth(1)
            .and_then(|s| s.split("</h2>").next())
            .unwrap_or("?")
            .to_string();
        for fig in section.split("<figure class=\"chart\"").skip(1) {
            let svg = fig.split("</figure>").next().unwrap_or("").to_string();
            out.push((title.clone(), svg));
        }
    }
    out
}

fn assert_no_error(page: &str, dom: &str) {
    assert!(
        dom.contains("</html>") || dom.contains("</body>"),
        "{page}: no page was rendered:\n{dom}"
    );
    for bad in [
        "panel-error\"",
        "panel-error ",
        "Invalid filter",
        "could not be loaded",
        "query failed",
        "invalid query",
    ] {
        if let Some(i) = dom.find(bad) {
            if bad.starts_with("panel-error") && dom[..i].ends_with('.') {
                continue; // the CSS rule, not an element
            }
            panic!(
                "{page} shows an error ({bad}): …{}…",
                &dom[i.saturating_sub(300)..(i + 600).min(dom.len())]
            );
        }
    }
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until the projection has caught up with the demo data (the count stops moving).
async fn wait_projected(client: &reqwest::Client, url: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = -1;
    loop {
        let n = query(client, url, "SELECT count(*) FROM events").await[0][0]
            .as_i64()
            .unwrap();
        if n > 5_000 && n == last {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "demo data not projected after 120 s ({n} rows)"
        );
        last = n;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_dashboards_in_chromium() {
    chromium(); // fail early, with the install hint
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::spawn(&data, &["--demo"]);
    let client = http();
    let rows = wait_projected(&client, &server.url).await;
    eprintln!("demo data: {rows} events projected");

    let rolled_back = query(
        &client,
        &server.url,
        "SELECT deployment_id FROM deploys WHERE status = 'rolled_back' LIMIT 1",
    )
    .await;
    let rolled_back = rolled_back[0][0]
        .as_str()
        .expect("the demo has a rollback")
        .to_string();

    let pages = [
        ("overview", "/".to_string(), 2),
        ("builds", "/builds".into(), 5),
        ("deploys", "/deploys".into(), 3),
        ("migrations", "/migrations".into(), 2),
        ("costs", "/costs".into(), 4),
        ("decisions", "/decisions".into(), 1),
        ("deployment", format!("/deployments/{rolled_back}"), 3),
        (
            "builds-web-app-production-90d",
            "/builds?project=web-app&env=production&range=90d".into(),
            5,
        ),
        ("costs-7d", "/costs?range=7d".into(), 4),
        ("deploys-24h", "/deploys?range=24h".into(), 0),
    ];
    let shots = screenshots_dir();
    for (name, path, min_charts) in &pages {
        let url = format!("{}{}", server.url, path);
        let dom = dump_dom(&url);
        assert_no_error(path, &dom);
        let charts = charts(&dom);
        assert!(
            charts.len() >= *min_charts,
            "{path}: {} charts, expected at least {min_charts}",
            charts.len()
        );
        for (title, svg) in &charts {
            let marks = data_marks(svg);
            // the full-range pages have many points; short ranges may have one
            let min = if path.contains("range=24h") { 1 } else { 3 };
            assert!(
                marks >= min,
                "{path}: chart {title:?} has {marks} data marks:\n{}",
                &svg[..svg.len().min(2000)]
            );
            assert!(
                svg.contains("<text"),
                "{path}: chart {title:?} has no axis labels"
            );
        }
        eprintln!("{path}: {} charts, all with data marks", charts.len());
        screenshot(&url, &shots.join(format!("{name}.png")));
    }
    // What the demo must show on the pages.
    let deploys = dump_dom(&format!("{}/deploys", server.url));
    for text in [
        "Deployment frequency",
        "Lead time for changes",
        "Change failure rate",
        "Time to restore",
        "DORA: ",
        "Rolled back",
        "Failed",
    ] {
        assert!(deploys.contains(text), "/deploys lacks {text:?}");
    }
    let migrations = dump_dom(&format!("{}/migrations", server.url));
    assert!(
        migrations.contains("DuplicateColumn"),
        "the failed migration's error text is shown"
    );
    let deployment = dump_dom(&format!("{}/deployments/{rolled_back}", server.url));
    for text in [
        "rolled_back",
        "degraded",
        "vercel rollback",
        "Error rate after the deploy",
        // the rollback judgement: the verdict in words with its evidence, and the chart
        // of the samples against the baseline's range and the threshold
        "Rollback judgement",
        "web-rollback-on-regression",
        "baseline range",
        "threshold",
        "vs 10 samples",
        "after the deciding sample",
    ] {
        assert!(
            deployment.contains(text),
            "/deployments/{rolled_back} lacks {text:?}"
        );
    }

    // `serve --demo` runs the demo's rules in dry run: the decisions page shows how they
    // would have judged (their backtest), with the flagged deployments linked.
    let decisions = dump_dom(&format!("{}/decisions?range=90d", server.url));
    for text in [
        "Dry-run rules",
        "web-rollback-on-regression",
        "api-rollback-on-regression",
        &format!("/deployments/{rolled_back}"),
    ] {
        assert!(decisions.contains(text), "/decisions lacks {text:?}");
    }

    // JSON: every panel with its data and status; thresholds from the defaults.
    for name in [
        "overview",
        "builds",
        "deploys",
        "migrations",
        "costs",
        "decisions",
    ] {
        let r = client
            .get(format!("{}/v1/dashboards/{name}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let body: Value = r.json().await.unwrap();
        let panels = body["panels"].as_array().unwrap();
        assert!(!panels.is_empty());
        for p in panels {
            assert!(p["error"].is_null(), "{name}/{}: {}", p["id"], p["error"]);
            assert!(["none", "good", "warning", "bad"].contains(&p["status"].as_str().unwrap()));
            assert!(p["columns"].is_array() && p["rows"].is_array());
        }
    }
    let body: Value = get_json(
        &client,
        &format!(
            "{}/v1/dashboards/builds?project=web-app&env=production&range=7d",
            server.url
        ),
    )
    .await;
    let median = body["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "median_build_time")
        .unwrap();
    assert_eq!(
        median["thresholds"],
        json!({"good": 60.0, "warning": 120.0, "higher_is_better": false})
    );
    assert_eq!(
        median["status"], "warning",
        "web-app production builds slowed down after the upgrade: {median}"
    );
    let body: Value = get_json(
        &client,
        &format!(
            "{}/v1/dashboards/deployment?deployment={rolled_back}",
            server.url
        ),
    )
    .await;
    let checks = body["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "checks_passed")
        .unwrap();
    assert_eq!(checks["status"], "bad", "{checks}");
    // filters are bound parameters: quotes are data, not SQL
    let r = client
        .get(format!(
            "{}/v1/dashboards/builds?project=x%27%20OR%201%3D1%20--",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["panels"][0]["value"],
        Value::Null,
        "{}",
        body["panels"][0]
    );
    let r = client
        .get(format!("{}/v1/dashboards/builds?range=1y", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_server_and_broken_dashboard_file() {
    let dir = tempfile::tempdir().unwrap();
    let dash = dir.path().join("dashboards");
    std::fs::create_dir_all(&dash).unwrap();
    std::fs::write(
        dash.join("team.toml"),
        r#"title = "Team"
[[panels]]
title = "Build count"
kind = "stat"
sql = "SELECT count(*) AS value FROM builds WHERE {filters}"

[[panels]]
title = "Pie of doom"
kind = "pie"
sql = "SELECT 1"

[[panels]]
title = "Bad column"
kind = "line"
sql = "SELECT no_such_column FROM builds WHERE {filters}"
"#,
    )
    .unwrap();
    std::fs::write(dash.join("syntax.toml"), "title = \"Oops\"\n[[panels]\n").unwrap();
    std::fs::write(dash.join("Not.Valid.toml"), "title = \"x\"\n").unwrap();
    let config = dir.path().join("shiplog.toml");
    std::fs::write(
        &config,
        format!(
            "dashboards_dir = {:?}\n[[thresholds]]\nmetric = \"build_duration_s\"\ngood = 30\nwarning = 45\n[[budgets]]\nmonthly_usd = 100\n",
            dash.display().to_string()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = TestServer::spawn(&data, &["--config", config.to_str().unwrap()]);
    let client = http();

    // Empty state: every page answers 200 with what to send, never an error.
    for path in [
        "/",
        "/builds",
        "/deploys",
        "/migrations",
        "/costs",
        "/decisions",
        "/deployments/nope",
    ] {
        let r = client
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("No events yet") && html.contains("curl"),
            "{path}: no empty state"
        );
        assert_no_error(path, &html);
    }
    if Path::new("/usr/bin/chromium").exists() || std::env::var("SHIPLOG_CHROMIUM").is_ok() {
        let dom = dump_dom(&format!("{}/", server.url));
        assert!(dom.contains("No events yet"));
        screenshot(
            &format!("{}/", server.url),
            &screenshots_dir().join("empty-overview.png"),
        );
    }
    // JSON on an empty server: panels with no rows, no errors.
    let body: Value = get_json(&client, &format!("{}/v1/dashboards/builds", server.url)).await;
    for p in body["panels"].as_array().unwrap() {
        assert!(p["error"].is_null(), "{p}");
    }
    let median = body["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "median_build_time")
        .unwrap();
    assert_eq!(
        median["thresholds"]["good"], 30.0,
        "the config's threshold is used"
    );

    // The broken file: errors name the file and the panel; the good panel serves.
    let body: Value = get_json(&client, &format!("{}/v1/dashboards/team", server.url)).await;
    let panels = body["panels"].as_array().unwrap();
    assert_eq!(panels.len(), 3);
    assert!(panels[0]["error"].is_null(), "{}", panels[0]);
    assert_eq!(panels[0]["rows"], json!([[0]]));
    let e = panels[1]["error"].as_str().unwrap();
    assert!(
        e.contains("team.toml") && e.contains("Pie of doom") && e.contains("pie"),
        "{e}"
    );
    let e = panels[2]["error"].as_str().unwrap();
    assert!(
        e.contains("team.toml") && e.contains("Bad column") && e.contains("no_such_column"),
        "{e}"
    );
    let html = get_text(&client, &format!("{}/d/team", server.url)).await;
    assert!(
        html.contains("team.toml") && html.contains("Pie of doom") && html.contains("Bad column"),
        "{html}"
    );
    let body: Value = get_json(&client, &format!("{}/v1/dashboards/syntax", server.url)).await;
    assert!(
        body["error"].as_str().unwrap().contains("syntax.toml"),
        "{body}"
    );
    let list: Value = get_json(&client, &format!("{}/v1/dashboards", server.url)).await;
    let names: Vec<&str> = list["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"team")
            && names.contains(&"builds")
            && !names.iter().any(|n| n.contains('.')),
        "{names:?}"
    );
    // Names cannot leave the folder.
    for bad in ["..%2F..%2Fetc%2Fpasswd", "Not.Valid", "a%00b", "a%2Fb"] {
        let r = client
            .get(format!("{}/v1/dashboards/{bad}", server.url))
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 400 || r.status() == 404,
            "{bad}: {}",
            r.status()
        );
        let r = client
            .get(format!("{}/d/{bad}", server.url))
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 400 || r.status() == 404,
            "{bad}: {}",
            r.status()
        );
    }
    assert!(
        server.stderr().contains("Pie of doom"),
        "the broken panel is logged"
    );

    // After one event, the page shows panels and the built-ins still serve.
    let ev = json!({"id": "b1", "kind": "build", "source": "ci", "project": "web", "env": "production",
        "data": {"tool": "vite", "success": true, "duration_ms": 50_000}});
    let r = client
        .post(format!("{}/v1/events", server.url))
        .json(&ev)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: Value = get_json(
            &client,
            &format!("{}/v1/dashboards/builds?range=24h", server.url),
        )
        .await;
        let median = body["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "median_build_time")
            .unwrap()
            .clone();
        if median["value"] == 50.0 {
            assert_eq!(
                median["status"], "bad",
                "50 s > warning 45 s from the config: {median}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the event never showed: {median}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let html = get_text(&client, &format!("{}/builds?range=24h", server.url)).await;
    assert!(!html.contains("No events yet") && html.contains("Median build time"));
}

/// The DORA "time to restore" panel on known incidents: a rollback counts from its
/// deployment going live, a failure until the next success of the same project and
/// environment; a failure never restored and other environments do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dora_time_to_restore_counts_rollbacks_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::spawn(&dir.path().join("data"), &[]);
    let client = http();
    let t0 = chrono::Utc::now() - chrono::Duration::hours(12);
    let deploy = |id: &str, project: &str, env: &str, dpl: &str, status: &str, minutes: i64| {
        json!({
            "id": id, "kind": "deploy", "source": "ci", "project": project, "env": env,
            "deployment_id": dpl,
            "time": (t0 + chrono::Duration::minutes(minutes)).to_rfc3339(),
            "data": {"status": status, "provider": "vercel"}
        })
    };
    let events = json!([
        // rollback: live at 0, rolled back at 30 -> 0.5 h
        deploy("1", "a", "production", "d1", "succeeded", 0),
        deploy("2", "a", "production", "d1", "rolled_back", 30),
        // failure at 60, next success of a/production at 180 -> 2 h
        deploy("3", "a", "production", "d2", "failed", 60),
        deploy("4", "b", "production", "d3", "succeeded", 120),
        deploy("5", "a", "production", "d4", "succeeded", 180),
        deploy("6", "a", "production", "d5", "succeeded", 240),
        // never restored: not an incident with a duration
        deploy("7", "b", "production", "d6", "failed", 300),
        // staging: not in the production figure
        deploy("8", "a", "staging", "d7", "failed", 60),
        deploy("9", "a", "staging", "d8", "succeeded", 70),
    ]);
    let r = client
        .post(format!("{}/v1/events", server.url))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while query(&client, &server.url, "SELECT count(*) FROM deploys").await[0][0] != 9 {
        assert!(Instant::now() < deadline, "deploys not projected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ttr = |body: Value| -> (f64, String) {
        let p = body["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == "Time to restore")
            .cloned()
            .unwrap();
        assert!(p["error"].is_null(), "{p}");
        let cols = p["columns"].as_array().unwrap();
        let at = |name: &str| cols.iter().position(|c| c == name).unwrap();
        let row = &p["rows"][0];
        (
            row[at("value")].as_f64().unwrap(),
            row[at("detail")].as_str().unwrap().to_string(),
        )
    };
    let prod: Value = get_json(&client, &format!("{}/v1/dashboards/deploys", server.url)).await;
    assert_eq!(ttr(prod), (1.25, "2 incidents in range".to_string()));
    let staging: Value = get_json(
        &client,
        &format!("{}/v1/dashboards/deploys?env=staging", server.url),
    )
    .await;
    let (hours, detail) = ttr(staging);
    assert!((hours - 10.0 / 60.0).abs() < 1e-9, "{hours}");
    assert_eq!(detail, "1 incidents in range");
}
