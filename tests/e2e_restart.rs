//! End-to-end tests of the dedup index's snapshot (`<data_dir>/dedup/index.snap`): a
//! restart loads it and reads only the log written after it, and a log that is no longer
//! the one it saw makes the server read the whole log instead, so an event the log lost is
//! stored again when its client retries, never answered as a duplicate.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{event, http, log_segments, TestServer};

const N: usize = 2000;

fn events(source: &str, ids: std::ops::Range<usize>) -> Vec<Value> {
    ids.map(|i| event("check", source, &format!("e-{i}"), "web"))
        .collect()
}

/// Posts `events` in batches; returns (accepted, duplicates).
async fn post(server: &TestServer, events: &[Value]) -> (u64, u64) {
    let client = http();
    let (mut accepted, mut duplicates) = (0, 0);
    for batch in events.chunks(250) {
        let r = client
            .post(format!("{}/v1/events", server.url))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        accepted += body["accepted"].as_u64().unwrap();
        duplicates += body["duplicates"].as_u64().unwrap();
    }
    (accepted, duplicates)
}

fn snapshot(data: &Path) -> PathBuf {
    data.join("dedup").join("index.snap")
}

/// The "dedup index restored" line of a start: (snapshot_keys, records_read).
fn restored(server: &TestServer) -> (u64, u64) {
    let stderr = server.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("dedup index restored"))
        .unwrap_or_else(|| panic!("no restore line in:\n{stderr}"));
    let field = |name: &str| -> u64 {
        let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("snapshot_keys"), field("records_read"))
}

/// Cuts the newest log segment to half its length, as a restore of an older copy or a
/// damaged disk would; returns the records the log holds after recovery.
fn cut_the_log(data: &Path) -> u64 {
    let segments = log_segments(data);
    let newest = segments.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Recovery drops the torn frame at the cut; the server will find the same log.
    let (log, _) = shiplog_log::file::SegmentedLog::open(
        &data.join("log"),
        shiplog_log::file::FileLogConfig::default(),
    )
    .unwrap();
    use shiplog_log::Log;
    log.end_offset(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_only_the_log_written_after_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::spawn(&data, &[]);
    assert_eq!(post(&server, &events("ci", 0..N)).await, (N as u64, 0));
    assert_eq!(server.stop(), Some(0), "{}", server.stderr());
    assert!(
        std::fs::metadata(snapshot(&data)).unwrap().len() > 8 * N as u64,
        "no snapshot written at SIGTERM"
    );

    let mut server = TestServer::spawn(&data, &[]);
    assert_eq!(restored(&server), (N as u64, 0), "{}", server.stderr());
    // Old events from the whole range are duplicates; new ones are stored.
    let mut old = events("ci", 0..100);
    old.extend(events("ci", 1000..1100));
    old.extend(events("ci", N - 100..N));
    assert_eq!(post(&server, &old).await, (0, 300));
    assert_eq!(post(&server, &events("ci", N..N + 100)).await, (100, 0));
    // A crash writes no snapshot: the next start reads what came after the last one.
    server.kill9();

    let mut server = TestServer::spawn(&data, &[]);
    assert_eq!(restored(&server), (N as u64, 100), "{}", server.stderr());
    assert_eq!(
        post(&server, &events("ci", 0..N + 100)).await,
        (0, N as u64 + 100)
    );
    assert_eq!(server.stop(), Some(0), "{}", server.stderr());
    let server = TestServer::spawn(&data, &[]);
    assert_eq!(
        restored(&server),
        (N as u64 + 100, 0),
        "{}",
        server.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_below_the_snapshot_is_read_whole_and_lost_events_are_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::spawn(&data, &[]);
    let sent = events("ci", 0..N);
    assert_eq!(post(&server, &sent).await, (N as u64, 0));
    assert_eq!(server.stop(), Some(0), "{}", server.stderr());
    assert!(snapshot(&data).exists());

    let kept = cut_the_log(&data);
    assert!(kept > 0 && kept < N as u64 - 100, "{kept}");
    let mut server = TestServer::spawn(&data, &[]);
    // The events the log lost are stored when sent again; the others are duplicates.
    assert_eq!(
        post(&server, &sent).await,
        (N as u64 - kept, kept),
        "(accepted, duplicates) of the {N} events sent before the cut"
    );
    let stderr = server.stderr();
    assert!(
        stderr.contains("dedup snapshot not used") && stderr.contains("was truncated"),
        "{stderr}"
    );
    assert_eq!(restored(&server), (0, kept), "{stderr}");
    assert!(
        !snapshot(&data).exists(),
        "the rejected snapshot is deleted"
    );
    assert_eq!(server.stop(), Some(0), "{}", server.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_and_written_again_past_the_snapshot_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::spawn(&data, &[]);
    let sent = events("ci", 0..N);
    assert_eq!(post(&server, &sent).await, (N as u64, 0));
    assert_eq!(server.stop(), Some(0), "{}", server.stderr());
    let stale = std::fs::read(snapshot(&data)).unwrap();

    // The log loses its tail, then gets other events past the offset the snapshot covers.
    let kept = cut_the_log(&data);
    assert!(kept < N as u64 - 100, "{kept}");
    let mut server = TestServer::spawn(&data, &[]);
    let other = events("vite", 0..1500);
    assert_eq!(post(&server, &other).await, (1500, 0));
    server.kill9();
    assert!(kept + 1500 > N as u64);
    // And a snapshot from before the cut is there: a data dir put together from copies
    // taken at different times, say. Its offset check passes; its record check must not.
    std::fs::write(snapshot(&data), &stale).unwrap();

    let mut server = TestServer::spawn(&data, &[]);
    assert_eq!(
        post(&server, &sent).await,
        (N as u64 - kept, kept),
        "(accepted, duplicates) of the {N} events sent before the cut"
    );
    assert_eq!(post(&server, &other).await, (0, 1500));
    let stderr = server.stderr();
    assert!(
        stderr.contains("dedup snapshot not used")
            && stderr.contains("is not the one the snapshot saw"),
        "{stderr}"
    );
    assert_eq!(restored(&server), (0, kept + 1500), "{stderr}");
    assert_eq!(server.stop(), Some(0), "{}", server.stderr());
}
