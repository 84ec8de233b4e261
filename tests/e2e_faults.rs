//! Faults against the real binary: a corrupt byte in a sealed log segment and in the
//! newest one, log segment files deleted by hand (the first ones, one in the middle), a
//! Parquet file deleted by hand, a disk that fills up, kill -9 under sustained load while a
//! compaction or a rollback action runs, and `migrate-log` from a damaged log. After each:
//! every acknowledged event is in the views exactly once (or, for records the damaged disk
//! lost, accounted for as a dead letter, never silently), and the checks (`shiplog log
//! verify`, `shiplog verify`) say what is wrong or that all is sound.

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{event, get_json, get_text, http, log_segments, query, TestServer, BIN};

const KINDS: [&str; 5] = ["build", "deploy", "migration", "api_cost", "check"];

type Key = (String, String);

fn key(e: &Value) -> Key {
    (
        e["source"].as_str().unwrap().to_string(),
        e["id"].as_str().unwrap().to_string(),
    )
}

/// Runs `shiplog <args> --data-dir <data>` (plus `--config` when given): exit code, stdout, stderr.
fn cli(data: &Path, config: Option<&Path>, args: &[&str]) -> (i32, String, String) {
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
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn metrics(client: &reqwest::Client, url: &str) -> String {
    get_text(client, &format!("{url}/metrics")).await
}

/// Posts a batch and returns the status, the `Retry-After` header and the body.
async fn post(
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

async fn post_ok(client: &reqwest::Client, url: &str, events: &[Value]) -> Value {
    let (status, _, body) = post(client, url, events).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rejected"], json!([]), "{body}");
    body
}

/// `n` events of the five kinds in turn, with ids `{tag}-0`, `{tag}-1`, ...
fn batch_of(tag: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| event(KINDS[i % 5], "faults", &format!("{tag}-{i}"), "web"))
        .collect()
}

/// Posts `batches` batches of `size` events (ids `{tag}-{b}-{i}`) one after the other, from
/// one client: on an empty log the event at index i has log offset i. Returns them in order.
async fn post_in_order(
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
fn flip_byte(path: &Path, at: usize, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

/// The first line of `text` (a server's stderr) that contains `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no warning:\n{text}"))
}

/// Waits until the projection has caught up with the log (lag 0 in `/metrics`).
async fn wait_projected(client: &reqwest::Client, url: &str) {
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
async fn rows_per_key(client: &reqwest::Client, url: &str) -> HashMap<Key, i64> {
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
fn exactly_once_problem(rows: &HashMap<Key, i64>, acked: &[Value]) -> Option<String> {
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

fn assert_exactly_once(rows: &HashMap<Key, i64>, acked: &[Value], context: &str) {
    if let Some(problem) = exactly_once_problem(rows, acked) {
        panic!("{context}: {problem}");
    }
}

/// What breaks "the projected offsets are exactly 0..log end: no gap, no duplicate".
async fn offsets_problem(client: &reqwest::Client, url: &str) -> Option<String> {
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

async fn assert_offsets_dense(client: &reqwest::Client, url: &str) {
    if let Some(problem) = offsets_problem(client, url).await {
        panic!("{problem}");
    }
}

/// Both checks, read again for a while when they fail: with a compaction every second, a
/// query that runs while a day's files are being merged misses that day's rows for a
/// moment (the inputs are deleted before the merged file is renamed in, so nothing is ever
/// counted twice; docs/operations.md). A real loss or duplicate fails every read.
async fn assert_settled(
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
fn dead_letters(data: &Path) -> Vec<(u64, u64, Value)> {
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

/// A corrupt byte in the middle of a sealed segment: `log verify` names the segment, the
/// byte range and the record lost; the server still starts (warning, `/metrics`), ingests
/// and serves every intact event; re-projecting from the log skips exactly the damaged
/// record, recorded as a dead letter; a client retry of the lost event stores it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_byte_in_a_sealed_segment_is_skipped_reported_and_the_rest_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("SHIPLOG_LOG__SEGMENT_BYTES", "65536")];
    let client = http();
    let mut server = TestServer::spawn_env(&data, &[], &env);
    // One client, batches in order: the event at index i has log offset i.
    let mut acked = post_in_order(&client, &server.url, "c", 10, 100).await;
    wait_projected(&client, &server.url).await;
    assert_eq!(server.stop(), Some(0));

    let segs = log_segments(&data);
    assert!(segs.len() >= 4, "{segs:?}");
    let victim = segs[2].clone();
    let victim_name = name_of(&victim);
    let at = std::fs::metadata(&victim).unwrap().len() as usize / 2;
    flip_byte(&victim, at, 0x20);

    // log verify names the segment, the byte range and what was lost.
    let (code, out, _) = cli(&data, None, &["log", "verify"]);
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("DAMAGED") && l.contains(&victim_name))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    eprintln!("{line}");
    let range = line
        .split("bytes ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let (start, end) = range.split_once("..").unwrap();
    let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
    assert!(start <= at && at < end, "{line}");
    assert!(line.contains("lost"), "{line}");
    assert_eq!(out.lines().filter(|l| l.starts_with("DAMAGED")).count(), 1);

    // The server starts, says where the damage is, and keeps serving and ingesting.
    let mut server = TestServer::spawn_env(&data, &[], &env);
    let m = metrics(&client, &server.url).await;
    assert_eq!(metric(&m, "shiplog_log_damaged_ranges"), Some(1.0), "{m}");
    let lost = metric(&m, "shiplog_log_damaged_records").unwrap() as u64;
    assert!((1..=3).contains(&lost), "{m}");
    let stderr = server.stderr();
    let warning = line_with(&stderr, "damaged log segment");
    assert!(
        warning.contains(&victim_name) && warning.contains(&range),
        "{warning}"
    );
    let fresh = batch_of("after", 50);
    let body = post_ok(&client, &server.url, &fresh).await;
    assert_eq!(body["accepted"], 50);
    acked.extend(fresh);
    wait_projected(&client, &server.url).await;
    // The projection had projected the damaged record before the disk damaged it.
    assert_exactly_once(
        &rows_per_key(&client, &server.url).await,
        &acked,
        "before re-projection",
    );
    assert_eq!(server.stop(), Some(0));

    // Projected again from the log (Parquet deleted): every intact record, the damaged
    // ones as dead letters naming the segment and bytes.
    std::fs::remove_dir_all(data.join("parquet")).unwrap();
    let mut server = TestServer::spawn_env(&data, &[], &env);
    wait_projected(&client, &server.url).await;
    let dead = dead_letters(&data);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (first, last_end, letter) = dead[0].clone();
    assert_eq!(last_end - first, lost);
    assert!(
        letter["location"].as_str().unwrap().contains(&victim_name)
            && letter["location"].as_str().unwrap().contains(&range)
            && letter["error"]
                .as_str()
                .unwrap()
                .contains("damaged log record"),
        "{letter}"
    );
    if lost == 1 {
        assert!(
            line.contains(&format!("record at offset {first} lost")),
            "{line}"
        );
    } else {
        assert!(
            line.contains(&format!("offsets {first}..={}", last_end - 1)),
            "{line}"
        );
    }
    let lost_events: Vec<Value> = acked[first as usize..last_end as usize].to_vec();
    let rows = rows_per_key(&client, &server.url).await;
    for e in &lost_events {
        assert!(!rows.contains_key(&key(e)), "{e} should be lost");
    }
    let intact: Vec<Value> = acked
        .iter()
        .filter(|e| !lost_events.contains(e))
        .cloned()
        .collect();
    assert_exactly_once(&rows, &intact, "re-projected");
    assert_eq!(rows.len(), intact.len());
    let m = metrics(&client, &server.url).await;
    assert_eq!(
        metric(&m, "shiplog_projection_log_records_lost_total"),
        Some(lost as f64),
        "{m}"
    );
    assert_eq!(
        metric(&m, "shiplog_projection_events_skipped_total"),
        Some(lost as f64)
    );

    // The dedup index could not hold the lost keys: a retry of everything stores exactly
    // the lost events again, and then every acknowledged event is there once.
    let mut accepted = 0;
    for chunk in acked.chunks(250) {
        let body = post_ok(&client, &server.url, chunk).await;
        accepted += body["accepted"].as_u64().unwrap();
    }
    assert_eq!(accepted, lost);
    wait_projected(&client, &server.url).await;
    let rows = rows_per_key(&client, &server.url).await;
    assert_exactly_once(&rows, &acked, "after the retry");
    assert_eq!(rows.len(), acked.len());
    assert_eq!(server.stop(), Some(0));

    // A replay gives the same: the damaged offsets as dead letters, the rest as rows.
    let (code, _, err) = cli(&data, None, &["replay"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("of which {lost} records lost to damage")),
        "{err}"
    );
    let (code, out, _) = cli(&data, None, &["verify"]);
    assert_eq!(code, 1, "the log is still damaged: {out}");
    assert!(
        out.contains(
            "projection: every committed event is in exactly one Parquet row or a dead letter"
        ),
        "{out}"
    );
    let mut server = TestServer::spawn_env(&data, &[], &env);
    let replayed = rows_per_key(&client, &server.url).await;
    assert_eq!(replayed, rows);
    assert_eq!(server.stop(), Some(0));
}

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

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "SKIPPED disk_full_answers_507_then_recovers: cannot mount a tmpfs here ({}); \
                     the injected-ENOSPC unit test of shiplog-log \
                     (write_errors_fail_the_group_and_leave_nothing) still covers the log",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED disk_full_answers_507_then_recovers: no mount command ({e}); the \
                     injected-ENOSPC unit test of shiplog-log still covers the log"
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `path` with a file until ENOSPC.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for size in [1 << 16, 4096, 512, 1] {
        let chunk = vec![0xa5u8; size];
        while f.write_all(&chunk).is_ok() {
            written += size as u64;
        }
    }
    let _ = f.sync_all();
    written
}

/// A disk that fills up: ingest answers 507 with Retry-After and stores nothing of those
/// requests; once space returns ingest succeeds, the refused events are accepted on retry
/// (none was half-stored), the projection catches up with every acknowledged event exactly
/// once, and the log and the projection verify clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_answers_507_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_tmpfs) = Tmpfs::mount(&mnt, "8m") else {
        return;
    };
    // Flushes 2 s after the first buffered event, so the events acknowledged just before
    // the disk fills meet the full disk in the projection too.
    let env = [("SHIPLOG_PROJECTION__FLUSH_INTERVAL", "2s")];
    let client = http();
    let mut server = TestServer::spawn_env(&mnt, &[], &env);
    let mut acked = post_in_order(&client, &server.url, "before", 4, 50).await;
    wait_projected(&client, &server.url).await;

    let pending = batch_of("pending", 50);
    post_ok(&client, &server.url, &pending).await;
    acked.extend(pending);
    let filler = mnt.join("filler");
    let filled = fill(&filler);
    eprintln!("filled the tmpfs with {filled} bytes");
    let mut refused: Vec<Vec<Value>> = Vec::new();
    for b in 0..20 {
        let batch = batch_of(&format!("full-{b}"), 50);
        let (status, retry, body) = post(&client, &server.url, &batch).await;
        match status {
            // Space left in a page already allocated: durable all the same.
            202 => {
                assert_eq!(body["accepted"], 50, "{body}");
                acked.extend(batch);
            }
            507 | 503 => {
                assert!(retry.is_some(), "{status} without Retry-After: {body}");
                refused.push(batch);
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(!refused.is_empty(), "the full disk refused nothing");
    let m = metrics(&client, &server.url).await;
    assert!(metric(&m, "shiplog_ingest_requests_refused_total").unwrap() >= refused.len() as f64);

    // The projection cannot write its files either: it fails, and retries.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics(&client, &server.url).await;
        if metric(&m, "shiplog_projection_flush_errors_total").unwrap() >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the projection never met the full disk:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What is stored is still served.
    let served = rows_per_key(&client, &server.url).await;
    assert_eq!(served.len(), 200);

    // Space returns.
    std::fs::remove_file(&filler).unwrap();
    for batch in &refused {
        let body = post_ok(&client, &server.url, batch).await;
        assert_eq!(body["accepted"], 50, "a refused event was stored: {body}");
        acked.extend(batch.iter().cloned());
    }
    let batch = batch_of("after", 50);
    post_ok(&client, &server.url, &batch).await;
    acked.extend(batch);
    wait_projected(&client, &server.url).await;
    let rows = rows_per_key(&client, &server.url).await;
    assert_exactly_once(&rows, &acked, "after the disk recovered");
    assert_eq!(rows.len(), acked.len());
    assert_offsets_dense(&client, &server.url).await;
    let m = metrics(&client, &server.url).await;
    eprintln!(
        "refused {} requests; projection flush errors while full: {:?}",
        refused.len(),
        metric(&m, "shiplog_projection_flush_errors_total")
    );
    assert_eq!(server.stop(), Some(0), "{}", server.stderr());

    let (code, out, _) = cli(&mnt, None, &["log", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("clean"), "{out}");
    let (code, out, _) = cli(&mnt, None, &["verify"]);
    assert_eq!(code, 0, "{out}");
}

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

/// Byte positions of the frames of a segment file (24-byte header, then frames of
/// `8 + length` bytes; `crates/shiplog-log/src/file.rs` has the format).
fn frame_starts(path: &Path) -> Vec<usize> {
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
fn base_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// The file name of `path`.
fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_string()
}

/// The log's record count, from `/healthz`.
async fn log_records(client: &reqwest::Client, url: &str) -> u64 {
    let health: Value = get_json(client, &format!("{url}/healthz")).await;
    health["log_records"].as_u64().unwrap()
}

/// After a start over a damaged log: new events are stored at `offsets` (right after the
/// last record kept) and every acknowledged event is projected exactly once.
async fn post_fresh_after_start(
    client: &reqwest::Client,
    url: &str,
    offsets: std::ops::Range<u64>,
    acked: &mut Vec<Value>,
) {
    let fresh = batch_of("fresh", (offsets.end - offsets.start) as usize);
    post_ok(client, url, &fresh).await;
    wait_projected(client, url).await;
    assert_eq!(
        offsets_of(client, url, "fresh-").await,
        offsets.collect::<Vec<u64>>()
    );
    acked.extend(fresh);
    assert_exactly_once(&rows_per_key(client, url).await, acked, "after the start");
}

/// The `_offset` of every event whose id starts with `prefix`, in order.
async fn offsets_of(client: &reqwest::Client, url: &str, prefix: &str) -> Vec<u64> {
    query(
        client,
        url,
        &format!("SELECT _offset FROM events WHERE id LIKE '{prefix}%' ORDER BY _offset"),
    )
    .await
    .into_iter()
    .map(|r| r[0].as_u64().unwrap())
    .collect()
}

/// A corrupt byte in the NEWEST segment, with acknowledged records after it: damage, not a
/// torn tail. The next start keeps every record after it (the log does not shrink), names
/// the damaged range (warning, `/metrics`, `log verify`), appends after the last record, and
/// a re-projection dead-letters exactly the damaged record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_newest_segment_keeps_the_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = http();
    let mut server = TestServer::spawn(&data, &[]);
    // One client, batches in order: the event at index i has log offset i.
    let mut acked = post_in_order(&client, &server.url, "n", 10, 50).await;
    wait_projected(&client, &server.url).await;
    assert_eq!(server.stop(), Some(0));

    let segs = log_segments(&data);
    assert_eq!(segs.len(), 1, "{segs:?}");
    let newest = segs[0].clone();
    let newest_name = name_of(&newest);
    let starts = frame_starts(&newest);
    assert_eq!(starts.len(), 500);
    flip_byte(&newest, starts[250] + 40, 0x20);
    let range = format!("{}..{}", starts[250], starts[251]);

    // log verify: damage with the record lost, not a torn tail.
    let (code, out, _) = cli(&data, None, &["log", "verify"]);
    assert_eq!(code, 1, "{out}");
    let damaged: Vec<&str> = out.lines().filter(|l| l.starts_with("DAMAGED")).collect();
    assert_eq!(damaged.len(), 1, "{out}");
    assert!(
        damaged[0].contains(&newest_name)
            && damaged[0].contains(&format!("bytes {range}"))
            && damaged[0].contains("record at offset 250 lost")
            && !damaged[0].contains("torn"),
        "{out}"
    );
    assert!(out.contains("499 records"), "{out}");

    // The start keeps the 249 records after it, says where the damage is, appends after.
    let mut server = TestServer::spawn(&data, &[]);
    assert_eq!(log_records(&client, &server.url).await, 500);
    let stderr = server.stderr();
    let warning = line_with(&stderr, "damaged log segment");
    assert!(
        warning.contains(&newest_name) && warning.contains(&range),
        "{warning}"
    );
    assert!(!stderr.contains("log tail repaired"), "{stderr}");
    let m = metrics(&client, &server.url).await;
    assert_eq!(metric(&m, "shiplog_log_damaged_ranges"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "shiplog_log_damaged_records"), Some(1.0), "{m}");
    // The damaged record had been projected before the disk damaged it.
    post_fresh_after_start(&client, &server.url, 500..520, &mut acked).await;
    assert_eq!(server.stop(), Some(0));

    // Projected again from the log: every record but the damaged one, which is a dead
    // letter naming the segment and bytes.
    std::fs::remove_dir_all(data.join("parquet")).unwrap();
    let mut server = TestServer::spawn(&data, &[]);
    wait_projected(&client, &server.url).await;
    let dead = dead_letters(&data);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].0, dead[0].1), (250, 251));
    let location = dead[0].2["location"].as_str().unwrap();
    assert!(
        location.contains(&newest_name) && location.contains(&range),
        "{location}"
    );
    let intact: Vec<Value> = acked
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 250)
        .map(|(_, e)| e.clone())
        .collect();
    let rows = rows_per_key(&client, &server.url).await;
    assert_exactly_once(&rows, &intact, "re-projected");
    assert_eq!(rows.len(), intact.len());
    assert_eq!(server.stop(), Some(0));
    let (code, out, _) = cli(&data, None, &["log", "verify"]);
    assert_eq!(code, 1);
    assert_eq!(out.lines().filter(|l| l.starts_with("DAMAGED")).count(), 1);
    assert!(out.contains("519 records"), "{out}");
}

/// Segment files deleted by hand: the first two (to free disk) and one in the middle. The
/// server starts with a warning naming the missing offsets; `log verify` names both ranges
/// and the files; the views keep what was projected; a re-projection dead-letters exactly
/// the missing offsets; `shiplog verify` finds the projection sound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_segment_files_are_named_skipped_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("SHIPLOG_LOG__SEGMENT_BYTES", "65536")];
    let client = http();
    let mut server = TestServer::spawn_env(&data, &[], &env);
    // One client, batches in order: the event at index i has log offset i.
    let mut acked = post_in_order(&client, &server.url, "s", 10, 100).await;
    wait_projected(&client, &server.url).await;
    assert_eq!(server.stop(), Some(0));

    let segs = log_segments(&data);
    assert!(segs.len() >= 5, "{segs:?}");
    let start = base_of(&segs[2]);
    let (m0, m1) = (base_of(&segs[3]), base_of(&segs[4]));
    for s in [&segs[0], &segs[1], &segs[3]] {
        std::fs::remove_file(s).unwrap();
    }

    let (code, out, _) = cli(&data, None, &["log", "verify"]);
    assert_eq!(code, 1, "{out}");
    let missing: Vec<&str> = out.lines().filter(|l| l.starts_with("MISSING")).collect();
    assert_eq!(missing.len(), 2, "{out}");
    assert!(
        missing[0].contains(&format!("offsets 0..={}", start - 1))
            && missing[0].contains(&name_of(&segs[2])),
        "{out}"
    );
    assert!(
        missing[1].contains(&format!("offsets {m0}..={}", m1 - 1))
            && missing[1].contains(&format!("{} is missing", name_of(&segs[3]))),
        "{out}"
    );

    // The server starts, and says what is missing.
    let mut server = TestServer::spawn_env(&data, &[], &env);
    let stderr = server.stderr();
    let warning = line_with(&stderr, "log segment files missing");
    assert!(warning.contains(&format!("0..{start}")), "{warning}");
    // The head range is known from the file names at open; the middle one once a reader
    // reaches it (every one does below, when the projection is rebuilt).
    let m = metrics(&client, &server.url).await;
    let known = metric(&m, "shiplog_log_damaged_records").unwrap() as u64;
    assert!(known == start || known == start + m1 - m0, "{m}");
    // What was projected stays; new events go on at the end.
    post_fresh_after_start(&client, &server.url, 1000..1030, &mut acked).await;
    assert_eq!(server.stop(), Some(0));

    // Projected again from the log (Parquet deleted): the missing offsets are dead letters.
    std::fs::remove_dir_all(data.join("parquet")).unwrap();
    let mut server = TestServer::spawn_env(&data, &[], &env);
    wait_projected(&client, &server.url).await;
    let dead = dead_letters(&data);
    let ranges: Vec<(u64, u64)> = dead.iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(ranges, vec![(0, start), (m0, m1)], "{dead:?}");
    assert!(
        dead.iter()
            .all(|d| d.2["error"].as_str().unwrap().contains("missing")),
        "{dead:?}"
    );
    let lost = |i: usize| (i as u64) < start || (m0..m1).contains(&(i as u64));
    let intact: Vec<Value> = acked
        .iter()
        .enumerate()
        .filter(|(i, _)| !lost(*i))
        .map(|(_, e)| e.clone())
        .collect();
    let rows = rows_per_key(&client, &server.url).await;
    assert_exactly_once(&rows, &intact, "re-projected");
    assert_eq!(rows.len(), intact.len());
    let m = metrics(&client, &server.url).await;
    assert_eq!(
        metric(&m, "shiplog_projection_log_records_lost_total"),
        Some((start + m1 - m0) as f64),
        "{m}"
    );
    assert_eq!(metric(&m, "shiplog_log_damaged_ranges"), Some(2.0), "{m}");
    assert_eq!(
        metric(&m, "shiplog_log_damaged_records"),
        Some((start + m1 - m0) as f64),
        "{m}"
    );
    let stderr = server.stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("damaged log segment") && l.contains(&name_of(&segs[3]))),
        "no warning names the missing middle file:\n{stderr}"
    );
    assert_eq!(server.stop(), Some(0));

    let (code, out, _) = cli(&data, None, &["verify"]);
    assert_eq!(code, 1, "the log still lacks those files: {out}");
    assert!(
        out.contains(
            "projection: every committed event is in exactly one Parquet row or a dead letter"
        ),
        "{out}"
    );
}

/// A record of a Kafka topic: key, value.
type TopicRecord = (Vec<u8>, Value);

/// Every record of a Kafka topic of the mock cluster.
fn topic_records(brokers: &str, topic: &str) -> Vec<TopicRecord> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "e2e-faults-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut total = 0;
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        total += (high - low) as usize;
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < total {
        assert!(Instant::now() < deadline, "read {} of {total}", out.len());
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            out.push((
                m.key().unwrap_or_default().to_vec(),
                serde_json::from_slice(m.payload().unwrap()).unwrap(),
            ));
        }
    }
    out
}

/// Runs `shiplog migrate-log --to kafka` (with `--accept-loss` when `accept`) into a new
/// mock cluster: exit code, stderr, and every record of the topic afterwards.
fn migrate_to_mock(data: &Path, accept: bool) -> (Option<i32>, String, Vec<TopicRecord>) {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("shiplog.events", 3, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["migrate-log", "--to", "kafka", "--data-dir"])
        .arg(data)
        .env("SHIPLOG_LOG__BROKERS", &brokers)
        .env("SHIPLOG_LOG__TOPIC", "shiplog.events")
        .env("SHIPLOG_LOG__KAFKA__MESSAGE_TIMEOUT_MS", "5000");
    if accept {
        cmd.arg("--accept-loss");
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let records = topic_records(&brokers, "shiplog.events");
    (out.status.code(), stderr, records)
}

/// The `a..=b` ranges of the "NOT COPIED offsets a..=b" lines of migrate-log.
fn not_copied(stderr: &str) -> Vec<(u64, u64)> {
    stderr
        .lines()
        .filter_map(|l| l.split("NOT COPIED offsets ").nth(1))
        .map(|rest| {
            let range = rest.split(' ').next().unwrap();
            let (a, b) = range.split_once("..=").unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// `migrate-log --to kafka` from a file log with a deleted first segment and a corrupt
/// byte: it names both ranges, copies every intact record, and exits 1 saying what was not
/// copied; with `--accept-loss` it copies the same and exits 0. Kafka is librdkafka's mock
/// cluster, in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_log_names_what_it_cannot_copy_and_fails_unless_the_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("SHIPLOG_LOG__SEGMENT_BYTES", "65536")];
    let client = http();
    let mut server = TestServer::spawn_env(&data, &[], &env);
    let acked = post_in_order(&client, &server.url, "k", 6, 100).await;
    assert_eq!(server.stop(), Some(0));
    let segs = log_segments(&data);
    assert!(segs.len() >= 3, "{segs:?}");
    std::fs::remove_file(&segs[0]).unwrap();
    let start = base_of(&segs[1]);
    let base2 = base_of(&segs[2]);
    let starts = frame_starts(&segs[2]);
    flip_byte(&segs[2], starts[3] + 30, 0x10);
    let expected_lost = vec![(0, start - 1), (base2 + 3, base2 + 3)];

    let intact: BTreeMap<String, Value> = acked
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            !expected_lost
                .iter()
                .any(|&(a, b)| (a..=b).contains(&(*i as u64)))
        })
        .map(|(_, e)| (e["id"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    let copied_ids = |records: &[TopicRecord]| -> Vec<String> {
        let mut ids: Vec<String> = records
            .iter()
            .map(|(_, v)| v["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };

    let d = data.clone();
    let (code, stderr, records) = tokio::task::spawn_blocking(move || migrate_to_mock(&d, false))
        .await
        .unwrap();
    eprintln!("{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(not_copied(&stderr), expected_lost, "{stderr}");
    assert!(
        stderr.contains(&name_of(&segs[1])) && stderr.contains(&name_of(&segs[2])),
        "{stderr}"
    );
    let n = intact.len();
    assert!(
        stderr.contains(&format!("{n} records copied to Kafka and verified"))
            && stderr.contains(&format!("NOT COMPLETE: {} records in 2 range(s)", 600 - n))
            && stderr.contains("--accept-loss"),
        "{stderr}"
    );
    assert_eq!(
        copied_ids(&records),
        intact.keys().cloned().collect::<Vec<_>>()
    );
    for (key, value) in &records {
        assert_eq!(key, b"web");
        assert_eq!(value["kind"], intact[value["id"].as_str().unwrap()]["kind"]);
    }

    let d = data.clone();
    let (code, stderr, records) = tokio::task::spawn_blocking(move || migrate_to_mock(&d, true))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(not_copied(&stderr), expected_lost, "{stderr}");
    assert!(
        stderr.contains("loss accepted with --accept-loss"),
        "{stderr}"
    );
    assert_eq!(
        copied_ids(&records),
        intact.keys().cloned().collect::<Vec<_>>()
    );
}
