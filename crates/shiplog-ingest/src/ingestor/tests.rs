use super::*;
use crate::dedup::{read_snapshot_file, Key, SnapshotError, SNAPSHOT_FILE};
use futures::future::BoxFuture;
use shiplog_events::Origin;
use shiplog_log::file::{FileLogConfig, SegmentedLog};
use shiplog_log::{LogReader, LogStats};
use shiplog_log::{Offset, Partition, RecordPosition};
use std::collections::HashSet;
use std::collections::VecDeque;
use std::path::Path;
use tokio::sync::oneshot;

const WEEK: Duration = Duration::from_secs(7 * 86_400);

fn event(source: &str, id: &str) -> Event {
    Event::from_json(
        serde_json::json!({"id": id, "kind": "check", "source": source, "project": "p",
            "data": {"name": "error_rate", "value": 0.01}}),
        Origin::Collector,
    )
    .unwrap()
}

fn events(source: &str, ids: std::ops::Range<usize>) -> Vec<Event> {
    ids.map(|i| event(source, &i.to_string())).collect()
}

fn open_log(dir: &Path) -> Arc<SegmentedLog> {
    Arc::new(SegmentedLog::open(dir, FileLogConfig::default()).unwrap().0)
}

fn ingestor(log: Arc<dyn Log>) -> Ingestor {
    Ingestor::new(log, WEEK, Arc::new(Metrics::default()))
}

/// The file log, with appends that resolve only once a gate opens (the next append
/// takes the next gate queued), or after a random delay: appends then finish out of
/// order, as they do under load.
struct GatedLog {
    inner: Arc<SegmentedLog>,
    gates: Mutex<VecDeque<oneshot::Receiver<()>>>,
    jitter: bool,
}

impl GatedLog {
    fn new(inner: Arc<SegmentedLog>, jitter: bool) -> Arc<GatedLog> {
        Arc::new(GatedLog {
            inner,
            gates: Mutex::default(),
            jitter,
        })
    }

    fn gate(&self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        self.gates.lock().unwrap().push_back(rx);
        tx
    }
}

impl Log for GatedLog {
    fn append(
        &self,
        records: Vec<LogRecord>,
    ) -> BoxFuture<'static, Result<Vec<RecordPosition>, LogError>> {
        let append = self.inner.append(records);
        let gate = self.gates.lock().unwrap().pop_front();
        let delay = if self.jitter {
            Duration::from_micros(rand_below(3000))
        } else {
            Duration::ZERO
        };
        Box::pin(async move {
            let result = append.await;
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            tokio::time::sleep(delay).await;
            result
        })
    }
    fn partitions(&self) -> Vec<Partition> {
        self.inner.partitions()
    }
    fn reader(&self, partition: Partition, from: Offset) -> Result<Box<dyn LogReader>, LogError> {
        self.inner.reader(partition, from)
    }
    fn end_offset(&self, partition: Partition) -> Offset {
        self.inner.end_offset(partition)
    }
    fn close(&self) -> BoxFuture<'static, Result<(), LogError>> {
        self.inner.close()
    }
    fn stats(&self) -> LogStats {
        self.inner.stats()
    }
}

fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::thread::current().id()) % n
}

/// The keys of the records of partition 0 below `end`.
async fn log_keys(log: &dyn Log, end: Offset) -> HashSet<Key> {
    let mut keys = HashSet::new();
    if end == 0 {
        return keys;
    }
    let mut reader = log.reader(0, 0).unwrap();
    while reader.position() < end {
        for e in reader
            .next_batch(10_000, 16 << 20, Duration::from_secs(1))
            .await
            .unwrap()
        {
            if e.offset < end {
                let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
                let (s, id) = (v["source"].as_str().unwrap(), v["id"].as_str().unwrap());
                keys.insert(dedup_key(s, id));
            }
        }
    }
    keys
}

/// The snapshot in `dir` holds exactly the keys of the records below its covered offset.
async fn assert_snapshot_matches_log(dir: &Path, log: &dyn Log) -> (Offset, usize) {
    let snap = read_snapshot_file(dir).unwrap().unwrap();
    assert_eq!(snap.covered.len(), 1);
    let covered = snap.covered[0].offset;
    let held: HashSet<Key> = snap.runs().flat_map(|(_, k)| k.iter().copied()).collect();
    let stored = log_keys(log, covered).await;
    let without_record = held.difference(&stored).count();
    assert_eq!(
        without_record, 0,
        "{without_record} keys in the snapshot have no record below offset {covered}"
    );
    let missing = stored.difference(&held).count();
    assert_eq!(
        missing, 0,
        "{missing} records below offset {covered} have no key in the snapshot"
    );
    (covered, held.len())
}

async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_only_the_log_after_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = tmp.path().join("dedup");
    let log = open_log(&tmp.path().join("log"));
    let first = ingestor(log.clone());
    // No snapshot yet: the whole log (empty) is read.
    let r = first.restore_dedup(&snaps).await.unwrap();
    assert!(r.rejected.is_none() && r.snapshot_keys == 0);
    first.ingest(events("a", 0..300)).await.unwrap();
    let w = first.write_dedup_snapshot(&snaps).await.unwrap().unwrap();
    assert_eq!((w.keys, w.covered.clone()), (300, vec![(0, 300)]));
    // Nothing new: the file is current.
    assert!(first.write_dedup_snapshot(&snaps).await.unwrap().is_none());
    first.ingest(events("a", 300..350)).await.unwrap();

    let second = ingestor(log.clone());
    let r = second.restore_dedup(&snaps).await.unwrap();
    assert!(r.rejected.is_none(), "{:?}", r.rejected);
    assert_eq!((r.snapshot_keys, r.records_read, r.log_keys), (300, 50, 50));
    // The records whose keys the snapshot holds were checked (not decoded).
    assert_eq!(r.records_checked, 300);
    let o = second.ingest(events("a", 0..350)).await.unwrap();
    assert_eq!((o.accepted, o.duplicates), (0, 350));
    let o = second.ingest(events("a", 350..360)).await.unwrap();
    assert_eq!((o.accepted, o.duplicates), (10, 0));
    second.write_dedup_snapshot(&snaps).await.unwrap().unwrap();
    assert_eq!(assert_snapshot_matches_log(&snaps, &*log).await, (360, 360));
}

/// Starts an ingestor on `log` (no snapshot yet), stores 200 events of source "old" in
/// it and writes their snapshot to `snaps`.
async fn snapshot_old_events(log: Arc<dyn Log>, snaps: &Path) {
    let ing = ingestor(log);
    ing.restore_dedup(snaps).await.unwrap();
    ing.ingest(events("old", 0..200)).await.unwrap();
    ing.write_dedup_snapshot(snaps).await.unwrap().unwrap();
}

/// Starts on a log of `n` events of source "new", with the snapshot of 200 events of
/// source "old" written in a log of its own.
async fn restore_on_another_log(
    root: &Path,
    n: usize,
) -> (Ingestor, DedupRestore, std::path::PathBuf) {
    let snaps = root.join("dedup");
    let old = open_log(&root.join("old-log"));
    snapshot_old_events(old.clone(), &snaps).await;
    old.close().await.unwrap();
    let log = open_log(&root.join("log"));
    ingestor(log.clone())
        .ingest(events("new", 0..n))
        .await
        .unwrap();
    let ing = ingestor(log);
    let r = ing.restore_dedup(&snaps).await.unwrap();
    (ing, r, snaps)
}

/// The start falls back to the whole log: nothing of the snapshot is used, the file is
/// deleted, and the events only the snapshot knew are stored when sent again.
async fn assert_full_rebuild(ing: &Ingestor, r: &DedupRestore, snaps: &Path, records: u64) {
    assert_eq!((r.snapshot_keys, r.records_read), (0, records));
    assert!(!snaps.join(SNAPSHOT_FILE).exists());
    let o = ing.ingest(events("old", 0..200)).await.unwrap();
    assert_eq!((o.accepted, o.duplicates), (200, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_shorter_than_the_snapshot_is_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    // The log now ends below offset 200: truncated, or a restore of an older copy.
    let (ing, r, snaps) = restore_on_another_log(tmp.path(), 150).await;
    assert!(
        matches!(
            r.rejected,
            Some(SnapshotRejected::LogTruncated {
                partition: 0,
                end: 150,
                covered: 200
            })
        ),
        "{:?}",
        r.rejected
    );
    assert_full_rebuild(&ing, &r, &snaps, 150).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_again_past_the_snapshot_is_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    // Long enough to pass the offset check, but not the log the snapshot saw.
    let (ing, r, snaps) = restore_on_another_log(tmp.path(), 250).await;
    assert!(
        matches!(
            r.rejected,
            Some(SnapshotRejected::RecordChanged {
                partition: 0,
                offset: 199
            })
        ),
        "{:?}",
        r.rejected
    );
    assert_full_rebuild(&ing, &r, &snaps, 250).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_damaged_below_the_snapshot_is_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (snaps, dir) = (tmp.path().join("dedup"), tmp.path().join("log"));
    let small = FileLogConfig {
        segment_bytes: 8 << 10,
        ..FileLogConfig::default()
    };
    let log = Arc::new(SegmentedLog::open(&dir, small.clone()).unwrap().0);
    snapshot_old_events(log.clone(), &snaps).await;
    log.close().await.unwrap();
    drop(log);
    // A flipped bit in a sealed segment, after the snapshot was written.
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let mut bytes = std::fs::read(&segments[1]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&segments[1], bytes).unwrap();

    let log = Arc::new(SegmentedLog::open(&dir, small).unwrap().0);
    let ing = ingestor(log.clone());
    let r = ing.restore_dedup(&snaps).await.unwrap();
    let Some(SnapshotRejected::Damaged {
        partition: 0,
        first,
        end,
        ..
    }) = r.rejected
    else {
        panic!("{:?}", r.rejected)
    };
    assert!(first < end && end < 200, "{first}..{end}");
    assert_eq!(r.snapshot_keys, 0);
    // The damaged records' events are stored again when sent again.
    let o = ing.ingest(events("old", 0..200)).await.unwrap();
    assert_eq!(o.accepted as u64, end - first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_or_a_longer_window_is_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = tmp.path().join("dedup");
    let log = open_log(&tmp.path().join("log"));
    snapshot_old_events(log.clone(), &snaps).await;
    let file = snaps.join(SNAPSHOT_FILE);
    let good = std::fs::read(&file).unwrap();

    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&file, &bad).unwrap();
    let again = ingestor(log.clone());
    let r = again.restore_dedup(&snaps).await.unwrap();
    assert!(
        matches!(
            r.rejected,
            Some(SnapshotRejected::Unreadable(SnapshotError::Crc { .. }))
        ),
        "{:?}",
        r.rejected
    );
    assert_eq!((r.snapshot_keys, r.records_read), (0, 200));
    assert!(!file.exists());
    // The whole log was read: the events are duplicates still.
    let o = again.ingest(events("old", 0..200)).await.unwrap();
    assert_eq!(o.duplicates, 200);

    std::fs::write(&file, &good[..good.len() - 3]).unwrap();
    let r = ingestor(log.clone()).restore_dedup(&snaps).await.unwrap();
    assert!(
        matches!(
            r.rejected,
            Some(SnapshotRejected::Unreadable(SnapshotError::Truncated))
        ),
        "{:?}",
        r.rejected
    );

    // A longer window than the snapshot's: it lacks keys the window now keeps.
    std::fs::write(&file, &good).unwrap();
    let longer = Ingestor::new(log.clone(), WEEK * 2, Arc::new(Metrics::default()));
    let r = longer.restore_dedup(&snaps).await.unwrap();
    assert!(
        matches!(r.rejected, Some(SnapshotRejected::WindowGrew { .. })),
        "{:?}",
        r.rejected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_covers_only_appends_that_committed_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = tmp.path().join("dedup");
    let file_log = open_log(&tmp.path().join("log"));
    let log = GatedLog::new(file_log.clone(), false);
    let ing = Arc::new(ingestor(log.clone()));
    ing.restore_dedup(&snaps).await.unwrap();
    ing.ingest(events("a", 0..5)).await.unwrap();
    // A: durable at offsets 5..15, but its request has not committed the keys yet.
    let gate = log.gate();
    let a = tokio::spawn({
        let ing = ing.clone();
        async move { ing.ingest(events("a", 5..15)).await.unwrap() }
    });
    until(|| log.end_offset(0) == 15).await;
    // B: offsets 15..25, committed before A.
    ing.ingest(events("b", 0..10)).await.unwrap();
    ing.write_dedup_snapshot(&snaps).await.unwrap().unwrap();
    // Neither A's records (keys not committed) nor B's (above A's) are covered.
    assert_eq!(assert_snapshot_matches_log(&snaps, &*log).await, (5, 5));
    gate.send(()).unwrap();
    assert_eq!(a.await.unwrap().accepted, 10);
    ing.write_dedup_snapshot(&snaps).await.unwrap().unwrap();
    assert_eq!(assert_snapshot_matches_log(&snaps, &*log).await, (25, 25));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_still_settles_its_append() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = tmp.path().join("dedup");
    let log = GatedLog::new(open_log(&tmp.path().join("log")), false);
    let ing = Arc::new(ingestor(log.clone()));
    ing.restore_dedup(&snaps).await.unwrap();
    let gate = log.gate();
    let request = tokio::spawn({
        let ing = ing.clone();
        async move { ing.ingest(events("a", 0..10)).await }
    });
    until(|| log.end_offset(0) == 10).await;
    // The client went away (or the request timed out) while its append was in flight.
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    gate.send(()).unwrap();
    // Its events are durable: a retry is answered as duplicates, not refused forever
    // as a concurrent failure by a key left pending.
    let o = ing.ingest(events("a", 0..10)).await.unwrap();
    assert_eq!((o.accepted, o.duplicates), (0, 10));
    ing.write_dedup_snapshot(&snaps).await.unwrap().unwrap();
    assert_eq!(assert_snapshot_matches_log(&snaps, &*log).await, (10, 10));
}

#[test]
fn a_runtime_stopping_mid_append_releases_its_keys() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let log = GatedLog::new(open_log(&tmp.path().join("log")), false);
    let ing = Arc::new(ingestor(log.clone()));
    rt.block_on(ing.restore_dedup(&tmp.path().join("dedup")))
        .unwrap();
    let _gate = log.gate();
    rt.spawn({
        let ing = ing.clone();
        async move { ing.ingest(events("a", 0..10)).await }
    });
    rt.block_on(until(|| log.end_offset(0) == 10));
    // The request's task is dropped, then the task it handed its append to.
    drop(rt);
    let state = ing.dedup.lock().unwrap();
    assert_eq!(state.in_flight, 0);
    assert!(matches!(
        state.index.lookup(dedup_key("a", "0")),
        Lookup::Absent
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_taken_under_concurrent_load_match_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = tmp.path().join("dedup");
    let log = GatedLog::new(open_log(&tmp.path().join("log")), true);
    let ing = Arc::new(ingestor(log.clone()));
    ing.restore_dedup(&snaps).await.unwrap();
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let ing = ing.clone();
            tokio::spawn(async move {
                for n in 0..40 {
                    let first = n * 7;
                    ing.ingest(events(&format!("w{w}"), first..first + 7))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut covered = Vec::new();
    while !writers.iter().all(|w| w.is_finished()) {
        if ing.write_dedup_snapshot(&snaps).await.unwrap().is_some() {
            covered.push(assert_snapshot_matches_log(&snaps, &*log).await.0);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    ing.write_dedup_snapshot(&snaps).await.unwrap();
    assert_eq!(
        assert_snapshot_matches_log(&snaps, &*log).await,
        (16 * 40 * 7, 16 * 40 * 7)
    );
    assert!(covered.len() >= 3, "{covered:?}");
}
