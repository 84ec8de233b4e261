//! The embedded log's lifecycle end to end: sealed segments compressed in the background
//! while the server ingests, and the server killed (SIGKILL) again and again meanwhile.
//! Every acknowledged event must stay readable exactly once: one row each in the
//! projection, and a log that `shiplog log verify` finds clean.

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

fn shiplog(args: &[&str], data: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .envs(ENV)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_compression_under_load_keeps_every_acknowledged_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    for round in 0..5u64 {
        let mut server = TestServer::spawn_env(&data, &[], &ENV);
        let stop = Arc::new(AtomicBool::new(false));
        let loads: Vec<_> = (0..4)
            .map(|k| {
                let first = (round as usize * 4 + k) * 10_000_000;
                tokio::spawn(load(server.url.clone(), first, stop.clone(), acked.clone()))
            })
            .collect();
        // Kill at a different moment of each round, while segments seal and compress.
        tokio::time::sleep(Duration::from_millis(1_200 + 350 * round)).await;
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

    let mut server = TestServer::spawn_env(&data, &[], &ENV);
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(120);
    let ids: Vec<String> = loop {
        let rows = query(&client, &server.url, "SELECT id FROM checks").await;
        let ids: Vec<String> = rows
            .into_iter()
            .map(|r| r[0].as_str().unwrap().to_string())
            .collect();
        if ids.len() >= acked.len() || Instant::now() > deadline {
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
    // Disk usage on /metrics: compressed segments, fewer bytes on disk than raw.
    let metrics = get_text(&client, &format!("{}/metrics", server.url)).await;
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(gauge("shiplog_log_compressed_segments") > 0.0);
    assert!(gauge("shiplog_log_bytes") < gauge("shiplog_log_raw_bytes"));
    assert_eq!(gauge("shiplog_log_first_offset"), 0.0);
    assert_eq!(server.stop(), Some(0));

    let (code, out) = shiplog(&["log", "verify"], &data);
    assert_eq!(code, 0, "log verify:\n{out}");
    let (code, out) = shiplog(&["log", "status"], &data);
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
