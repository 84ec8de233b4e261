//! The embedded log's lifecycle end to end: sealed segments compressed in the background,
//! or removed by retention, while the server ingests, and the server killed (SIGKILL)
//! again and again meanwhile. Every acknowledged event must stay readable exactly once:
//! one row each in the projection, and a log that `shiplog log verify` finds clean.

mod support;

use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{event, get_text, http, query, TestServer, BIN};

const ENV: [(&str, &str); 2] = [
    ("SHIPLOG_LOG__COMPRESS", "true"),
    // Small segments: many seal and get compressed while the load runs.
    ("SHIPLOG_LOG__SEGMENT_BYTES", "65536"),
];

/// Posts batches of 50 `check` events with fresh ids until `stop`, recording the ids of
/// every batch answered 202 (durable).
async fn load(url: String, first: usize, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) {
    let client = http();
    let mut next = first;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<String> = (next..next + 50).map(|i| format!("e-{i}")).collect();
        next += 50;
        let batch: Vec<Value> = ids
            .iter()
            .map(|id| event("check", "load", id, "web"))
            .collect();
        match client
            .post(format!("{url}/v1/events"))
            .json(&batch)
            .send()
            .await
        {
            Ok(r) if r.status() == 202 => acked.lock().unwrap().extend(ids),
            Ok(_) => {}
            Err(_) => return, // the server was killed
        }
    }
}

/// Runs the CLI; returns its exit code, stdout and stderr.
fn shiplog(args: &[&str], data: &std::path::Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs rounds of load (4 writers) on a server killed (SIGKILL) at a different moment of
/// each round; returns the ids acknowledged (202).
async fn killed_under_load(
    data: &std::path::Path,
    env: &[(&str, &str)],
    rounds: u64,
    round_ms: u64,
) -> Vec<String> {
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    for round in 0..rounds {
        let mut server = TestServer::spawn_env(data, &[], env);
        let stop = Arc::new(AtomicBool::new(false));
        let loads: Vec<_> = (0..4)
            .map(|k| {
                let first = (round as usize * 4 + k) * 10_000_000;
                tokio::spawn(load(server.url.clone(), first, stop.clone(), acked.clone()))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(round_ms + 350 * round)).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for l in loads {
            l.await.unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1_000,
        "only {} events acknowledged",
        acked.len()
    );
    acked
}

/// Waits until the `checks` projection holds every acknowledged id (or 120 s passed), then
/// asserts that it holds each exactly once. (It may hold more: events made durable by a
/// request whose answer the kill cut off.)
async fn assert_projected_once(url: &str, acked: &[String]) {
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(120);
    let ids: Vec<String> = loop {
        let rows = query(&client, url, "SELECT id FROM checks").await;
        let ids: Vec<String> = rows
            .into_iter()
            .map(|r| r[0].as_str().unwrap().to_string())
            .collect();
        let have: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        if acked.iter().all(|id| have.contains(id.as_str())) || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut seen = std::collections::HashMap::new();
    for id in &ids {
        *seen.entry(id.as_str()).or_insert(0u32) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "events projected twice: {twice:?}");
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events missing, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

/// The value of a series on `/metrics`.
async fn gauge(url: &str, name: &str) -> f64 {
    let metrics = get_text(&http(), &format!("{url}/metrics")).await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_compression_under_load_keeps_every_acknowledged_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Killed at a different moment of each round, while segments seal and compress.
    let acked = killed_under_load(&data, &ENV, 5, 1_200).await;

    let mut server = TestServer::spawn_env(&data, &[], &ENV);
    assert_projected_once(&server.url, &acked).await;
    // Disk usage on /metrics: compressed segments, fewer bytes on disk than raw.
    let url = server.url.clone();
    assert!(gauge(&url, "shiplog_log_compressed_segments").await > 0.0);
    assert!(gauge(&url, "shiplog_log_bytes").await < gauge(&url, "shiplog_log_raw_bytes").await);
    assert_eq!(gauge(&url, "shiplog_log_first_offset").await, 0.0);
    assert_eq!(server.stop(), Some(0));

    let (code, out, _) = shiplog(&["log", "verify"], &data, &ENV);
    assert_eq!(code, 0, "log verify:\n{out}");
    let (code, out, _) = shiplog(&["log", "status"], &data, &ENV);
    assert_eq!(code, 0);
    let compressed: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("segments"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(compressed > 0, "no segment was compressed:\n{out}");
    let leftovers: Vec<_> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Small segments compressed and removed by retention (at most ~4 segments on disk, checked
/// every 200 ms) while the server ingests and is killed.
const RETENTION_ENV: [(&str, &str); 5] = [
    ("SHIPLOG_LOG__COMPRESS", "true"),
    ("SHIPLOG_LOG__SEGMENT_BYTES", "65536"),
    ("SHIPLOG_LOG__RETENTION__MAX_BYTES", "200000"),
    ("SHIPLOG_LOG__RETENTION__INTERVAL", "200ms"),
    ("SHIPLOG_PROJECTION__FLUSH_INTERVAL", "200ms"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_retention_under_load_keeps_every_acknowledged_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acked = killed_under_load(&data, &RETENTION_ENV, 6, 2_500).await;
    // Retention ran (and moved the log's start) in the rounds that were killed.
    let start: u64 = std::fs::read_to_string(data.join("log/START"))
        .expect("retention removed nothing while the server was killed")
        .trim()
        .parse()
        .unwrap();
    assert!(start > 0);
    eprintln!(
        "after the killed rounds: {} events acknowledged, the log starts at {start}",
        acked.len()
    );

    let mut server = TestServer::spawn_env(&data, &[], &RETENTION_ENV);
    // The projection keeps every event, those whose segments retention removed included.
    assert_projected_once(&server.url, &acked).await;
    let url = server.url.clone();
    let start = gauge(&url, "shiplog_log_start_offset").await;
    assert!(start > 0.0, "retention removed nothing");
    assert!(gauge(&url, "shiplog_log_first_offset").await >= start);
    assert!(gauge(&url, "shiplog_log_last_offset").await >= acked.len() as f64 - 1.0);
    assert!(gauge(&url, "shiplog_log_oldest_event_received_seconds").await > 1.7e9);
    assert!(gauge(&url, "shiplog_log_retention_removed_segments_total").await >= 0.0);

    // Sent again, events whose records retention removed are still known to dedup (its
    // snapshot covers them): no second row. A fresh one after them is projected.
    let again: Vec<Value> = acked[..50]
        .iter()
        .map(|id| event("check", "load", id, "web"))
        .chain([event("check", "load", "after-retention", "web")])
        .collect();
    let r = http()
        .post(format!("{url}/v1/events"))
        .json(&again)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut all = acked.clone();
    all.push("after-retention".into());
    assert_projected_once(&url, &all).await;
    assert_eq!(server.stop(), Some(0));

    let (code, out, _) = shiplog(&["log", "verify"], &data, &RETENTION_ENV);
    assert_eq!(code, 0, "log verify:\n{out}");
    assert!(out.contains("removed by retention"), "{out}");
    let (code, out, _) = shiplog(&["log", "status"], &data, &RETENTION_ENV);
    assert_eq!(code, 0);
    assert!(out.contains("removed       offsets 0.."), "{out}");
    assert!(out.contains("max_bytes 200000"), "{out}");

    // A replay keeps the rows the log no longer holds, says so, and rebuilds the rest: the
    // projection still holds every event once.
    let (code, _, err) = shiplog(&["replay"], &data, &RETENTION_ENV);
    assert_eq!(code, 0, "replay:\n{err}");
    assert!(err.contains("were KEPT as they were"), "{err}");
    let mut server = TestServer::spawn_env(&data, &[], &RETENTION_ENV);
    assert_projected_once(&server.url, &all).await;
    assert_eq!(server.stop(), Some(0));
    let (code, out, _) = shiplog(&["verify"], &data, &RETENTION_ENV);
    assert_eq!(code, 0, "verify after replay:\n{out}");
}
