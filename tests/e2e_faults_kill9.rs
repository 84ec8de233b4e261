//! Faults: kill -9 under sustained load while compactions run, and while a rollback action
//! runs; after each restart every acknowledged event is in the views exactly once.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::faults::*;
use support::{event, http, query, TestServer};

/// Clients posting batches until told to stop or the server dies; acknowledged events
/// are recorded.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(
        url: &str,
        clients: usize,
        tag: &str,
        acked: &Arc<Mutex<Vec<Value>>>,
        make: fn(&str, usize) -> Value,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let (url, acked, stop) = (format!("{url}/v1/events"), acked.clone(), stop.clone());
                let tag = format!("{tag}-c{c}");
                tokio::spawn(async move {
                    let client = http();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let batch: Vec<Value> = (0..20)
                            .map(|i| make(&format!("{tag}-{n}-{i}"), n + i))
                            .collect();
                        n += 1;
                        match client.post(&url).json(&batch).send().await {
                            Ok(r) if r.status().is_success() => {
                                let body: Value = r.json().await.unwrap();
                                assert_eq!(body["accepted"], 20, "{body}");
                                acked.lock().unwrap().extend(batch);
                            }
                            Ok(r) => panic!("unexpected status {}", r.status()),
                            Err(_) => return, // the server died: this batch's fate is unknown
                        }
                    }
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

/// An event dated one to three days ago (closed days, which compaction merges).
fn past_event(id: &str, i: usize) -> Value {
    let mut e = event(KINDS[i % 5], "load", id, "web");
    let day = chrono::Utc::now() - chrono::Duration::days(1 + (i % 3) as i64);
    e["time"] = json!(day.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    e
}

/// Whether a compaction was cut short: its merged temp file, or a committed state whose
/// compaction inputs are still on disk.
fn compaction_interrupted(parquet: &Path) -> Option<&'static str> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(parquet, &mut files);
    if files
        .iter()
        .any(|f| f.to_string_lossy().ends_with(".compact.tmp"))
    {
        return Some("merged file written, not committed");
    }
    let state: Value = std::fs::read(parquet.join("_state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    state["deletes"]
        .as_array()
        .is_some_and(|d| d.iter().any(|f| parquet.join(f.as_str().unwrap()).exists()))
        .then_some("committed, inputs not yet deleted")
}

/// kill -9 under sustained load while compactions run (every second, over many small
/// files of closed days): after each restart every acknowledged event is in the views
/// exactly once and the offsets are dense; the check at start finds every committed event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_compaction_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("SHIPLOG_PROJECTION__FLUSH_INTERVAL", "100ms"),
        ("SHIPLOG_PROJECTION__COMPACTION_SCHEDULE", "* * * * * *"),
    ];
    let client = http();
    let acked: Arc<Mutex<Vec<Value>>> = Arc::default();
    let mut interrupted = 0;
    let mut rounds = 0;
    while rounds < 12 && interrupted < 4 {
        rounds += 1;
        let mut server = TestServer::spawn_env(&data, &[], &env);
        if rounds > 1 {
            // After each restart: everything acknowledged is there once, no gap.
            wait_projected(&client, &server.url).await;
            let acked = acked.lock().unwrap().clone();
            assert_settled(&client, &server.url, &acked, &format!("restart {rounds}")).await;
        }
        let load = Load::start(&server.url, 4, &format!("r{rounds}"), &acked, past_event);
        // The first round builds up closed-day files; later ones kill while a compaction
        // is merging (its start line is the last compaction line of this server's log).
        let deadline = Instant::now() + Duration::from_secs(60);
        let at_start = acked.lock().unwrap().len();
        loop {
            // Under load: this round's clients have had events acknowledged.
            let loaded = acked.lock().unwrap().len() >= at_start + 400;
            let stderr = server.stderr();
            let merges = stderr.matches("compaction: merging").count();
            let merging = stderr.rfind("compaction: merging") > stderr.rfind("compacted");
            if (loaded && rounds == 1 && merges >= 3)
                || (loaded && rounds > 1 && merging)
                || Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Spread the kills over the merge: at its start, then a little later each round.
        tokio::time::sleep(Duration::from_millis(7 * (rounds as u64 - 1))).await;
        server.kill9();
        load.finish().await;
        let hit = compaction_interrupted(&data.join("parquet"));
        interrupted += hit.is_some() as usize;
        eprintln!(
            "round {rounds}: killed; compaction interrupted: {hit:?}; {} events acknowledged",
            acked.lock().unwrap().len()
        );
    }
    assert!(
        interrupted >= 1,
        "no kill landed inside a compaction in {rounds} rounds"
    );
    let mut server = TestServer::spawn_env(&data, &[], &env);
    wait_projected(&client, &server.url).await;
    let acked = acked.lock().unwrap().clone();
    assert_settled(&client, &server.url, &acked, "after the kills").await;
    let stderr = server.stderr();
    assert!(
        stderr.contains("projection checked: the Parquet files hold every committed event")
            && !stderr.contains("do not match the projection state"),
        "{stderr}"
    );
    assert_eq!(server.stop(), Some(0));
    let (code, out, _) = cli(&data, None, &["verify"]);
    assert_eq!(code, 0, "{out}");
    eprintln!(
        "{} events acknowledged over {rounds} kills, {interrupted} inside a compaction",
        acked.len()
    );
}

fn load_event(id: &str, i: usize) -> Value {
    event(KINDS[i % 5], "load", id, "other-project")
}

/// kill -9 under sustained load while a rollback action runs: after the restart the
/// action is not run again, the log holds its start decision and the outcome
/// "unknown: interrupted …" (docs/rules.md), no `rolled_back` deploy, and every
/// acknowledged event is in the views exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_a_rollback_action_under_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("data");
    let marker = root.join("calls");
    std::fs::create_dir_all(&marker).unwrap();
    let script = root.join("slow-rollback.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$$\" \"$@\" > '{m}/call.$$.tmp' && mv '{m}/call.$$.tmp' '{m}/call.$$'\nexec sleep 60\n",
            m = marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = root.join("shiplog.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[rules]]
name = "slow"
kind = "rollback"
project = "shop"
env = "production"
metric = "error_rate"
window = "10m"
baseline = "previous_deployment"
max_ratio = 1.5
min_samples = 5
action = {{ command = ["{}", "rollback", "{{previous_url}}"], timeout = "120s", tries = 1 }}
"#,
            script.display()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let client = http();
    let acked: Arc<Mutex<Vec<Value>>> = Arc::default();
    let mut server = TestServer::spawn_env(&data, &args, &[]);
    let load = Load::start(&server.url, 4, "a", &acked, load_event);

    let deploy = |dep: &str, prev: Option<&str>| {
        let mut data = json!({"status": "succeeded", "url": format!("https://{dep}.vercel.app"),
                              "provider": "vercel", "triggered_by": "ci"});
        if let Some(p) = prev {
            data["previous_deployment_id"] = json!(p);
        }
        json!({"id": format!("deploy-{dep}"), "kind": "deploy", "source": "ci", "project": "shop",
               "env": "production", "deployment_id": dep, "data": data})
    };
    let check = |dep: &str, i: usize, v: f64| {
        json!({"id": format!("check-{dep}-{i}"), "kind": "check", "source": "probe", "project": "shop",
               "env": "production", "deployment_id": dep, "data": {"name": "error_rate", "value": v}})
    };
    let mut mine: Vec<Value> = vec![deploy("dep-a", None)];
    mine.extend((0..5).map(|i| check("dep-a", i, 0.02)));
    mine.push(deploy("dep-b", Some("dep-a")));
    mine.extend((0..5).map(|i| check("dep-b", i, 0.5)));
    for e in &mine {
        post_ok(&client, &server.url, std::slice::from_ref(e)).await;
    }
    acked.lock().unwrap().extend(mine);

    // The action runs (it sleeps): kill -9 now, under load.
    let deadline = Instant::now() + Duration::from_secs(30);
    let call = loop {
        let calls: Vec<PathBuf> = std::fs::read_dir(&marker)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
            .collect();
        if let Some(c) = calls.first() {
            break c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the action did not run:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    server.kill9();
    load.finish().await;
    let call_text = std::fs::read_to_string(&call).unwrap();
    let pid: i32 = call_text.lines().next().unwrap().parse().unwrap();
    assert_eq!(
        call_text.lines().skip(1).collect::<Vec<_>>(),
        ["rollback", "https://dep-a.vercel.app"]
    );
    // The action's process group outlived the server: end it (it was started for us).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }

    let mut server = TestServer::spawn_env(&data, &args, &[]);
    let load = Load::start(&server.url, 4, "b", &acked, load_event);
    let sql = "SELECT json_extract_string(extra, '$.data.phase'), verdict, outcome, id FROM decisions WHERE deployment_id = 'dep-b' ORDER BY time";
    let deadline = Instant::now() + Duration::from_secs(30);
    let decisions = loop {
        let d = query(&client, &server.url, sql).await;
        if d.len() >= 2 {
            break d;
        }
        assert!(Instant::now() < deadline, "{d:?}\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // More load and rule ticks; then nothing else may have happened to dep-b.
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.finish().await;
    wait_projected(&client, &server.url).await;
    let again = query(&client, &server.url, sql).await;
    assert_eq!(again, decisions);
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert_eq!(
        decisions[0],
        vec![
            json!("start"),
            json!("degraded"),
            json!("started"),
            json!("rule/slow/dep-b/degraded")
        ]
    );
    assert_eq!(decisions[1][0], json!("outcome"));
    assert_eq!(decisions[1][3], json!("rule/slow/dep-b/degraded/outcome"));
    assert!(
        decisions[1][2]
            .as_str()
            .unwrap()
            .starts_with("unknown: interrupted"),
        "{decisions:?}"
    );
    let rolled_back = query(
        &client,
        &server.url,
        "SELECT count(*) FROM deploys WHERE status = 'rolled_back'",
    )
    .await;
    assert_eq!(rolled_back[0][0], json!(0));
    let calls = std::fs::read_dir(&marker).unwrap().count();
    assert_eq!(calls, 1, "the interrupted action ran again");

    let acked = acked.lock().unwrap().clone();
    let rows = rows_per_key(&client, &server.url).await;
    assert_exactly_once(&rows, &acked, "after the kill");
    assert_offsets_dense(&client, &server.url).await;
    assert_eq!(server.stop(), Some(0));

    // The log itself holds each decision once.
    let (log, _) = shiplog_log::file::SegmentedLog::open(
        &data.join("log"),
        shiplog_log::file::FileLogConfig::default(),
    )
    .unwrap();
    use shiplog_log::Log;
    let end = log.end_offset(0);
    let mut reader = log.reader(0, 0).unwrap();
    let mut decisions_in_log: BTreeMap<String, u32> = BTreeMap::new();
    while reader.position() < end {
        for e in reader
            .next_batch(10_000, 16 << 20, Duration::from_secs(1))
            .await
            .unwrap()
        {
            let v: Value = serde_json::from_slice(&e.value).unwrap();
            if v["kind"] == "decision" && v["deployment_id"] == "dep-b" {
                *decisions_in_log
                    .entry(v["id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(
        decisions_in_log,
        BTreeMap::from([
            ("rule/slow/dep-b/degraded".to_string(), 1),
            ("rule/slow/dep-b/degraded/outcome".to_string(), 1)
        ])
    );
    eprintln!("{} events acknowledged around the kill", acked.len());
}
