//! The projection's `(source, id)` dedup (on with the Kafka backend).

use serde_json::json;
use shiplog_log::LogEntry;
use shiplog_store::*;
use std::path::Path;
use std::time::Duration;

fn cfg() -> ProjectorConfig {
    ProjectorConfig {
        dedup_window: Some(Duration::from_secs(3600)),
        ..ProjectorConfig::default()
    }
}

fn entry(partition: u32, offset: u64, id: &str) -> LogEntry {
    let ev = json!({"id": id, "kind": "check", "source": "probe", "received_at": "2026-11-20T10:00:00Z",
                    "project": "web", "data": {"name": "up", "passed": true}});
    LogEntry {
        partition,
        offset,
        key: Default::default(),
        value: serde_json::to_vec(&ev).unwrap().into(),
    }
}

fn ids(dir: &Path) -> Vec<String> {
    let q = QueryEngine::open(dir).unwrap();
    let r = q
        .query("SELECT id FROM checks ORDER BY id", Duration::from_secs(30))
        .unwrap();
    r.rows
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_repeated_source_and_id_is_projected_once_across_partitions_flushes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ParquetProjector::open(dir.path(), cfg()).unwrap();
    // same event in two partitions (two ingest nodes) and twice in one batch
    p.push(vec![entry(0, 0, "a"), entry(0, 1, "b"), entry(0, 2, "b")]);
    p.push(vec![entry(1, 0, "a"), entry(1, 1, "c")]);
    let r = p.flush().unwrap();
    assert_eq!((r.rows, r.duplicates), (3, 2));
    assert_eq!(p.committed_offsets().get(&0), Some(&3));
    assert_eq!(p.committed_offsets().get(&1), Some(&2));
    // a batch of only duplicates still advances the offsets
    p.push(vec![entry(2, 0, "c")]);
    let r = p.flush().unwrap();
    assert_eq!((r.rows, r.duplicates, r.files), (0, 1, 0));
    assert_eq!(p.committed_offsets().get(&2), Some(&1));
    drop(p);
    // after a restart the index is read back
    let mut p = ParquetProjector::open(dir.path(), cfg()).unwrap();
    p.push(vec![entry(1, 2, "b"), entry(1, 3, "d")]);
    let r = p.flush().unwrap();
    assert_eq!((r.rows, r.duplicates), (1, 1));
    drop(p);
    assert_eq!(ids(dir.path()), ["a", "b", "c", "d"]);
}

#[test]
fn a_flush_killed_before_its_commit_does_not_remember_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ParquetProjector::open(dir.path(), cfg()).unwrap();
    p.push(vec![entry(0, 0, "a")]);
    p.flush().unwrap();
    p.push(vec![entry(0, 1, "x"), entry(0, 2, "a")]);
    p.inject_crash(CrashPoint::AfterTempWrite);
    assert!(p.flush().is_err());
    drop(p);
    let mut p = ParquetProjector::open(dir.path(), cfg()).unwrap();
    assert_eq!(p.next_offset(0), 1);
    p.push(vec![entry(0, 1, "x"), entry(0, 2, "a")]);
    p.inject_crash(CrashPoint::MidRenames);
    assert!(p.flush().is_err());
    drop(p);
    // committed before the crash: recovery completes the renames, keys included
    let mut p = ParquetProjector::open(dir.path(), cfg()).unwrap();
    assert_eq!(p.next_offset(0), 3);
    p.push(vec![entry(0, 3, "x")]);
    let r = p.flush().unwrap();
    assert_eq!((r.rows, r.duplicates), (0, 1));
    drop(p);
    assert_eq!(ids(dir.path()), ["a", "x"]);
}

#[test]
fn off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ParquetProjector::open(dir.path(), ProjectorConfig::default()).unwrap();
    p.push(vec![entry(0, 0, "a"), entry(0, 1, "a")]);
    let r = p.flush().unwrap();
    assert_eq!((r.rows, r.duplicates), (2, 0));
    assert!(!dir.path().join("parquet").join("_dedup").exists());
}
