//! Faults against the real binary, the log's damage: a corrupt byte in a sealed log segment
//! and in the newest one, log segment files deleted by hand. After each: every
//! acknowledged event is in the views exactly once (or, for records the damaged disk lost,
//! accounted for as a dead letter, never silently), and the checks (`shiplog log verify`,
//! `shiplog verify`) say what is wrong or that all is sound.
//!
//! The other fault tests, by topic: `e2e_faults_parquet.rs` (a Parquet file deleted by
//! hand), `e2e_faults_disk.rs` (a disk that fills up), `e2e_faults_kill9.rs` (kill -9 under
//! sustained load while a compaction or a rollback action runs), `e2e_faults_migrate.rs`
//! (`migrate-log` from a damaged log). Their helpers are `tests/support/faults.rs`.

mod support;

use serde_json::Value;
use support::faults::*;
use support::{get_json, http, log_segments, query, TestServer};

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
