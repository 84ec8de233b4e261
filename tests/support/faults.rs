//! The helpers of the fault tests (`tests/e2e_faults*.rs`): posting in order, reading the
//! views back per (source, id), and the checks that every acknowledged event is in the
//! views exactly once with dense offsets.

use super::{event, get_text, query, BIN};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub const KINDS: [&str; 5] = ["build", "deploy", "migration", "api_cost", "check"];

pub type Key = (String, String);

pub fn key(e: &Value) -> Key {
    (
        e["source"].as_str().unwrap().to_string(),
        e["id"].as_str().unwrap().to_string(),
    )
}

/// Runs `shiplog <args> --data-dir <data>` (plus `--config` when given): exit code, stdout, stderr.
pub fn cli(data: &Path, config: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args).arg("--data-dir").arg(data);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.env("SHIPLOG_LOG", "info").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of a series in a Prometheus text page.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub async fn metrics(client: &reqwest::Client, url: &str) -> String {
    get_text(client, &format!("{url}/metrics")).await
}

/// Posts a batch and returns the status, the `Retry-After` header and the body.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    events: &[Value],
) -> (u16, Option<String>, Value) {
    let r = client
        .post(format!("{url}/v1/events"))
        .json(&events)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

pub async fn post_ok(client: &reqwest::Client, url: &str, events: &[Value]) -> Value {
    let (status, _, body) = post(client, url, events).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rejected"], json!([]), "{body}");
    body
}

/// `n` events of the five kinds in turn, with ids `{tag}-0`, `{tag}-1`, ...
pub fn batch_of(tag: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| event(KINDS[i % 5], "faults", &format!("{tag}-{i}"), "web"))
        .collect()
}

/// Posts `batches` batches of `size` events (ids `{tag}-{b}-{i}`) one after the other, from
/// one client: on an empty log the event at index i has log offset i. Returns them in order.
pub async fn post_in_order(
    client: &reqwest::Client,
    url: &str,
    tag: &str,
    batches: usize,
    size: usize,
) -> Vec<Value> {
    let mut acked = Vec::new();
    for b in 0..batches {
        let batch = batch_of(&format!("{tag}-{b}"), size);
        post_ok(client, url, &batch).await;
        acked.extend(batch);
    }
    acked
}

/// Flips the bits of `mask` in the byte at `at` of the file at `path`.
pub fn flip_byte(path: &Path, at: usize, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

/// The first line of `text` (a server's stderr) that contains `needle`.
pub fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no warning:\n{text}"))
}

/// Waits until the projection has caught up with the log (lag 0 in `/metrics`).
pub async fn wait_projected(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let m = metrics(client, url).await;
        if metric(&m, "shiplog_projection_lag_events") == Some(0.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the projection did not catch up:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many rows of `events` each (source, id) has.
pub async fn rows_per_key(client: &reqwest::Client, url: &str) -> HashMap<Key, i64> {
    query(
        client,
        url,
        "SELECT source, id, count(*) FROM events GROUP BY ALL",
    )
    .await
    .into_iter()
    .map(|r| {
        (
            (
                r[0].as_str().unwrap().to_string(),
                r[1].as_str().unwrap().to_string(),
            ),
            r[2].as_i64().unwrap(),
        )
    })
    .collect()
}

/// What breaks "every acknowledged event is in the views exactly once, no event twice".
pub fn exactly_once_problem(rows: &HashMap<Key, i64>, acked: &[Value]) -> Option<String> {
    let twice: Vec<_> = rows.iter().filter(|(_, n)| **n != 1).take(5).collect();
    if !twice.is_empty() {
        return Some(format!("events in several rows: {twice:?}"));
    }
    let missing: Vec<Key> = acked
        .iter()
        .map(key)
        .filter(|k| !rows.contains_key(k))
        .take(5)
        .collect();
    (!missing.is_empty())
        .then(|| format!("acknowledged events missing from the views: {missing:?}"))
}

pub fn assert_exactly_once(rows: &HashMap<Key, i64>, acked: &[Value], context: &str) {
    if let Some(problem) = exactly_once_problem(rows, acked) {
        panic!("{context}: {problem}");
    }
}

/// What breaks "the projected offsets are exactly 0..log end: no gap, no duplicate".
pub async fn offsets_problem(client: &reqwest::Client, url: &str) -> Option<String> {
    let r = query(
        client,
        url,
        "SELECT count(*), count(DISTINCT _offset), coalesce(min(_offset), 0), coalesce(max(_offset), -1) FROM events",
    )
    .await;
    let health: Value = client
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let end = health["log_records"].as_i64().unwrap();
    (r[0] != vec![json!(end), json!(end), json!(0), json!(end - 1)]).then(|| {
        format!(
            "rows, distinct offsets, min, max = {:?}; the log holds {end} records",
            r[0]
        )
    })
}

pub async fn assert_offsets_dense(client: &reqwest::Client, url: &str) {
    if let Some(problem) = offsets_problem(client, url).await {
        panic!("{problem}");
    }
}

/// Both checks, read again for a while when they fail: with a compaction every second, a
/// query that runs while a day's files are being merged misses that day's rows for a
/// moment (the inputs are deleted before the merged file is renamed in, so nothing is ever
/// counted twice; docs/operations.md). A real loss or duplicate fails every read.
pub async fn assert_settled(
    client: &reqwest::Client,
    url: &str,
    acked: &[Value],
    context: &str,
) -> HashMap<Key, i64> {
    let mut last = String::new();
    for _ in 0..50 {
        let rows = rows_per_key(client, url).await;
        let problem = match exactly_once_problem(&rows, acked) {
            Some(p) => Some(p),
            None => offsets_problem(client, url).await,
        };
        match problem {
            None => return rows,
            Some(p) => last = p,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{context}: {last}");
}

/// (first offset, end offset, line) of every dead letter.
pub fn dead_letters(data: &Path) -> Vec<(u64, u64, Value)> {
    let dir = data.join("parquet/_deadletter");
    let mut out = Vec::new();
    for f in std::fs::read_dir(&dir).into_iter().flatten() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "ndjson") {
            for line in std::fs::read_to_string(&f).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let first = v["offset"].as_u64().unwrap();
                let end = v["end"].as_u64().unwrap_or(first + 1);
                out.push((first, end, v));
            }
        }
    }
    out.sort_by_key(|d| d.0);
    out
}

/// The file name of `path`.
pub fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_string()
}

/// Byte positions of the frames of a segment file (24-byte header, then frames of
/// `8 + length` bytes; `crates/shiplog-log/src/file.rs` has the format).
pub fn frame_starts(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let mut starts = Vec::new();
    let mut pos = 24;
    while pos + 8 <= bytes.len() {
        starts.push(pos);
        pos += 8 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
    }
    starts
}

/// The base offset of a segment file, from its name.
pub fn base_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}
