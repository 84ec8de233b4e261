//! Faults: a Parquet file deleted by hand is detected, and replay repairs it.

mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::faults::*;
use support::{http, TestServer};

/// A Parquet file deleted by hand: `shiplog verify` names it and its offsets, the server
/// warns at start (and `/metrics` counts the missing events), and `shiplog replay`
/// repairs it: the views hold exactly the acknowledged events again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_parquet_file_is_detected_and_replay_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("SHIPLOG_PROJECTION__FLUSH_INTERVAL", "200ms")];
    let client = http();
    let mut server = TestServer::spawn_env(&data, &[], &env);
    let mut acked: Vec<Value> = Vec::new();
    for b in 0..6 {
        let batch = batch_of(&format!("d-{b}"), 60);
        post_ok(&client, &server.url, &batch).await;
        acked.extend(batch);
        // Let each batch make its own files.
        wait_projected(&client, &server.url).await;
    }
    assert_exactly_once(&rows_per_key(&client, &server.url).await, &acked, "before");
    assert_eq!(server.stop(), Some(0));

    // Delete one file of builds by hand. All events share a date, so the file holds the
    // builds between its first and last offsets.
    let day = std::fs::read_dir(data.join("parquet/build"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("date=")
        })
        .unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&day)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let victim = files[1].clone();
    let name = name_of(&victim);
    let parts: Vec<u64> = name
        .trim_end_matches(".parquet")
        .split('-')
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (first, last) = (parts[0], parts[1]);
    let gone: Vec<Value> = acked[first as usize..=last as usize]
        .iter()
        .filter(|e| e["kind"] == "build")
        .cloned()
        .collect();
    std::fs::remove_file(&victim).unwrap();
    let rel = victim
        .strip_prefix(data.join("parquet"))
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    let (code, out, _) = cli(&data, None, &["verify"]);
    eprintln!("{out}");
    assert_eq!(code, 1, "{out}");
    let missing: Vec<&str> = out.lines().filter(|l| l.starts_with("MISSING")).collect();
    assert_eq!(missing.len(), 1, "{out}");
    assert!(
        missing[0].contains(&rel)
            && missing[0].contains(&format!(
                "{} event(s), offsets {first}..={last}",
                gone.len()
            )),
        "{out}"
    );

    // At start: a warning naming the file, and the gauge.
    let mut server = TestServer::spawn_env(&data, &[], &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics(&client, &server.url).await;
        if metric(&m, "shiplog_projection_missing_events") == Some(gone.len() as f64) {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .stderr()
        .contains("events missing from the Parquet files")
    {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stderr = server.stderr();
    let warning = stderr
        .lines()
        .find(|l| l.contains("events missing from the Parquet files"))
        .unwrap();
    assert!(warning.contains(&rel), "{warning}");
    let rows = rows_per_key(&client, &server.url).await;
    assert_eq!(rows.len(), acked.len() - gone.len());
    assert!(gone.iter().all(|e| !rows.contains_key(&key(e))));
    assert_eq!(server.stop(), Some(0));

    // replay repairs it.
    let (code, _, err) = cli(&data, None, &["replay"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli(&data, None, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("every committed event is in exactly one Parquet row"),
        "{out}"
    );
    let mut server = TestServer::spawn_env(&data, &[], &env);
    let rows = rows_per_key(&client, &server.url).await;
    assert_exactly_once(&rows, &acked, "after replay");
    assert_eq!(rows.len(), acked.len());
    assert_offsets_dense(&client, &server.url).await;
    let m = metrics(&client, &server.url).await;
    assert_eq!(
        metric(&m, "shiplog_projection_missing_events"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(server.stop(), Some(0));
}
