use super::recovery::*;
use super::*;
use crate::LogEntry;
use bytes::Bytes;
use futures::future::join_all;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn record(key: &[u8], value: &[u8]) -> LogRecord {
    LogRecord {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
    }
}

fn numbered(i: u64, value_len: usize) -> LogRecord {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(value_len.max(value.len()), b'x');
    record(format!("k{}", i % 7).as_bytes(), &value)
}

fn small(segment_bytes: u64) -> FileLogConfig {
    FileLogConfig {
        segment_bytes,
        ..FileLogConfig::default()
    }
}

async fn read_all(log: &SegmentedLog, from: Offset) -> Vec<LogEntry> {
    let mut reader = log.reader(0, from).unwrap();
    let mut out = Vec::new();
    loop {
        let batch = reader
            .next_batch(97, 1 << 20, Duration::ZERO)
            .await
            .unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    list_segments(dir).unwrap().pop().unwrap().1
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (log, report) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
        assert_eq!(
            report,
            RecoveryReport {
                segments: 1,
                ..Default::default()
            }
        );
        let positions = log
            .append(vec![
                record(b"a", b"one"),
                record(b"", b""),
                record(b"c", b"three"),
            ])
            .await
            .unwrap();
        assert_eq!(
            positions.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(log.append(vec![]).await.unwrap(), vec![]);
        assert_eq!(log.end_offset(0), 3);
        let entries = read_all(&log, 1).await;
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key, Bytes::new());
        assert_eq!(entries[1].value, Bytes::from_static(b"three"));
        let stats = log.stats();
        assert_eq!((stats.records, stats.segments, stats.syncs), (3, 1, 1));
        assert_eq!(
            stats.bytes,
            fs::metadata(last_segment(dir.path())).unwrap().len()
        );
        log.close().await.unwrap();
    });
    let (log, report) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(
        report,
        RecoveryReport {
            segments: 1,
            records: 3,
            ..Default::default()
        }
    );
    runtime().block_on(async {
        assert_eq!(read_all(&log, 0).await.len(), 3);
        assert!(matches!(
            log.reader(0, 4),
            Err(LogError::OutOfRange {
                offset: 4,
                start: 0,
                end: 3
            })
        ));
        assert!(log.reader(1, 0).is_err());
        assert!(verify(dir.path()).unwrap().is_clean());
    });
}

#[test]
fn rejects_oversized_records_and_second_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileLogConfig {
        max_record_bytes: 100,
        ..FileLogConfig::default()
    };
    let (log, _) = SegmentedLog::open(dir.path(), config).unwrap();
    assert!(matches!(
        SegmentedLog::open(dir.path(), FileLogConfig::default()),
        Err(LogError::Unavailable(_))
    ));
    runtime().block_on(async {
        let err = log.append(vec![record(b"k", &[0; 100])]).await.unwrap_err();
        assert!(matches!(
            err,
            LogError::RecordTooLarge {
                size: 101,
                limit: 100
            }
        ));
        log.append(vec![record(b"k", &[0; 99])]).await.unwrap();
    });
    drop(log);
    SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
}

#[test]
fn many_segments_readers_cross_and_seek() {
    let dir = tempfile::tempdir().unwrap();
    // ~90-byte frames, ~2,900 records per segment: several index entries per... segment
    // is below INDEX_INTERVAL, so use bigger segments for the index part below.
    let rt = runtime();
    let n = 3000u64;
    rt.block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), small(4096)).unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(37) {
            let batch = chunk.iter().map(|&i| numbered(i, 60)).collect();
            log.append(batch).await.unwrap();
        }
        assert!(log.stats().segments > 50, "{:?}", log.stats());
        let all = read_all(&log, 0).await;
        assert_eq!(all.len() as u64, n);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.offset, i as u64);
            assert_eq!(*e, entry_of(i as u64, numbered(i as u64, 60)));
        }
        for from in [1, 44, 45, 46, 1000, 2999, 3000] {
            let tail = read_all(&log, from).await;
            assert_eq!(tail.len() as u64, n - from);
            assert!(tail.first().is_none_or(|e| e.offset == from));
        }
        log.close().await.unwrap();
    });
    let (log, report) = SegmentedLog::open(dir.path(), small(4096)).unwrap();
    assert_eq!(report.records, n);
    assert_eq!(report.truncated_bytes, 0);
    rt.block_on(async {
        let tail = read_all(&log, 1234).await;
        assert_eq!(tail[0], entry_of(1234, numbered(1234, 60)));
        assert_eq!(tail.len() as u64, n - 1234);
    });
    let v = verify(dir.path()).unwrap();
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(v.records, n);
}

fn entry_of(offset: Offset, r: LogRecord) -> LogEntry {
    LogEntry {
        partition: 0,
        offset,
        key: r.key,
        value: r.value,
    }
}

#[test]
fn sparse_index_seeks_in_sealed_and_live_segments() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let n = 30_000u64;
    let config = small(512 << 10); // ~13,000 records of ~40 bytes per segment
    rt.block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), config.clone()).unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            log.append(chunk.iter().map(|&i| numbered(i, 20)).collect())
                .await
                .unwrap();
        }
        assert_eq!(log.stats().segments, 3);
        for from in [0, 4095, 4096, 4097, 12_345, 20_000, 29_999] {
            let mut reader = log.reader(0, from).unwrap();
            let batch = reader
                .next_batch(3, usize::MAX, Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(batch[0], entry_of(from, numbered(from, 20)));
            assert_eq!(reader.position(), from + batch.len() as u64);
        }
    });
    let (log, _) = SegmentedLog::open(dir.path(), config).unwrap();
    rt.block_on(async {
        for from in [9000, 8192, 1, 17_000, 28_000] {
            let mut reader = log.reader(0, from).unwrap();
            let batch = reader
                .next_batch(2, usize::MAX, Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(batch[0], entry_of(from, numbered(from, 20)));
        }
        // Sealed segments got indexed on first use.
        let table = read_lock(&log.shared.table);
        assert!(table.segments.iter().all(|s| s.indexed));
        assert!(table.segments[0].index.len() >= 3);
    });
}

#[test]
fn concurrent_appenders_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), small(64 << 10)).unwrap();
        let log = Arc::new(log);
        let tasks = (0..8u64).map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..500u64 {
                    let r = record(&t.to_le_bytes(), &i.to_le_bytes());
                    let pos = log.append(vec![r]).await.unwrap();
                    got.push((pos[0].offset, t, i));
                }
                got
            })
        });
        let mut all: Vec<(Offset, u64, u64)> = Vec::new();
        for task in join_all(tasks).await {
            all.extend(task.unwrap());
        }
        all.sort();
        assert_eq!(
            all.iter().map(|a| a.0).collect::<Vec<_>>(),
            (0..4000).collect::<Vec<_>>()
        );
        // Per task, offsets grow with the append order.
        for t in 0..8 {
            let mine: Vec<_> = all.iter().filter(|a| a.1 == t).map(|a| a.2).collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>());
        }
        let stats = log.stats();
        assert!(stats.syncs < 4000, "{stats:?}");
        eprintln!("4000 appends by 8 tasks: {stats:?}");
        let entries = read_all(&log, 0).await;
        for (e, (offset, t, i)) in entries.iter().zip(&all) {
            assert_eq!(e.offset, *offset);
            assert_eq!(e.key.as_ref(), t.to_le_bytes());
            assert_eq!(e.value.as_ref(), i.to_le_bytes());
        }
    });
}

#[test]
fn reader_waits_for_durable_data() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
        let log = Arc::new(log);
        let mut reader = log.reader(0, 0).unwrap();
        let started = std::time::Instant::now();
        assert!(reader
            .next_batch(10, 1000, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty());
        assert!(started.elapsed() >= Duration::from_millis(50));
        let writer = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            writer.append(vec![record(b"k", b"v")]).await.unwrap();
        });
        let batch = reader
            .next_batch(10, 1000, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(reader.position(), 1);
    });
}

#[test]
fn tailing_reader_follows_appends_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), small(2048)).unwrap();
        let log = Arc::new(log);
        let mut reader = log.reader(0, 0).unwrap();
        let tail = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 2000 {
                let batch = reader
                    .next_batch(64, 1000, Duration::from_secs(10))
                    .await
                    .unwrap();
                assert!(!batch.is_empty(), "timed out after {} records", got.len());
                got.extend(batch);
            }
            got
        });
        let writers = (0..4u64).map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..50u64 {
                    let batch = (0..10)
                        .map(|j| numbered(t * 1000 + i * 10 + j, 50))
                        .collect();
                    log.append(batch).await.unwrap();
                }
            })
        });
        for w in join_all(writers).await {
            w.unwrap();
        }
        let got = tail.await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.offset).collect::<Vec<_>>(),
            (0..2000).collect::<Vec<_>>()
        );
        assert_eq!(got, read_all(&log, 0).await);
        assert!(log.stats().segments > 20);
    });
}

#[test]
fn batches_respect_max_bytes_but_return_at_least_one_record() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
        log.append((0..10).map(|i| numbered(i, 100)).collect())
            .await
            .unwrap();
        let mut reader = log.reader(0, 0).unwrap();
        assert_eq!(
            reader
                .next_batch(10, 0, Duration::ZERO)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            reader
                .next_batch(10, 250, Duration::ZERO)
                .await
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            reader
                .next_batch(100, usize::MAX, Duration::ZERO)
                .await
                .unwrap()
                .len(),
            6
        );
    });
}

#[test]
fn write_errors_fail_the_group_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), small(1024)).unwrap();
        log.append(vec![record(b"a", b"ok")]).await.unwrap();
        let seg = last_segment(dir.path());
        let len = fs::metadata(&seg).unwrap().len();
        let mut reader = log.reader(0, 1).unwrap();

        log.faults().fail_next_writes(1);
        let err = log.append(vec![record(b"b", &[7; 300])]).await.unwrap_err();
        assert!(matches!(err, LogError::NoSpace), "{err:?}");
        assert!(err.is_retryable());
        assert_eq!(fs::metadata(&seg).unwrap().len(), len);
        assert_eq!(log.end_offset(0), 1);

        log.faults().fail_next_syncs(1);
        let err = log.append(vec![record(b"c", &[8; 300])]).await.unwrap_err();
        assert!(matches!(err, LogError::Io(_)), "{err:?}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), len);
        assert!(reader
            .next_batch(10, 1 << 20, Duration::from_millis(20))
            .await
            .unwrap()
            .is_empty());

        // A failure in a group that rolled: the new segments are removed again.
        log.faults().fail_next_syncs(2);
        let big: Vec<_> = (0..10).map(|i| record(b"r", &[i; 300])).collect();
        assert!(log.append(big.clone()).await.is_err());
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        assert_eq!(fs::metadata(&seg).unwrap().len(), len);

        // The disk recovered: later appends work and get the next offsets.
        let pos = log.append(big).await.unwrap();
        assert_eq!(pos[0].offset, 1);
        assert!(log.stats().segments > 1);
        let batch = reader
            .next_batch(100, 1 << 20, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(batch.len(), 10);
        assert_eq!(batch[9].value.as_ref(), [9; 300]);
        log.close().await.unwrap();
    });
    let (log, report) = SegmentedLog::open(dir.path(), small(1024)).unwrap();
    assert_eq!((report.records, report.truncated_bytes), (11, 0));
    assert!(verify(dir.path()).unwrap().is_clean());
    drop(log);
}

#[test]
fn close_completes_pending_appends_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
        let pending: Vec<_> = (0..50)
            .map(|i| log.append(vec![numbered(i, 100)]))
            .collect();
        let closing = log.close();
        assert!(matches!(
            log.append(vec![numbered(0, 1)]).await,
            Err(LogError::Closed)
        ));
        closing.await.unwrap();
        for (i, p) in join_all(pending).await.into_iter().enumerate() {
            assert_eq!(p.unwrap()[0].offset, i as u64);
        }
        log.close().await.unwrap(); // twice is fine
                                    // Durable records stay readable after close.
        assert_eq!(read_all(&log, 0).await.len(), 50);
        // The directory is released: it can be opened again while `log` still exists.
        let (again, report) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
        assert_eq!(report.records, 50);
        drop(again);
    });
}

#[test]
fn drop_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let _guard = rt.enter();
    let (log, _) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
    let pending = log.append(vec![numbered(1, 10)]);
    drop(log);
    // Queued appends are still committed by a dropped log.
    assert_eq!(rt.block_on(pending).unwrap()[0].offset, 0);
    let (_, report) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(report.records, 1);
}

#[test]
fn recovery_handles_torn_headers_and_empty_segments() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
        log.append(vec![numbered(0, 10), numbered(1, 10)])
            .await
            .unwrap();
    });
    // A crash during a roll: an empty file, then a partial header.
    for content in [
        &b""[..],
        &segment_header(2)[..7],
        &[0u8; 24][..],
        &segment_header(2)[..],
    ] {
        fs::write(segment_path(dir.path(), 2), content).unwrap();
        let (log, report) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
        assert_eq!((report.segments, report.records), (1, 2), "{report:?}");
        assert_eq!(report.truncated_bytes, content.len() as u64);
        assert!(report
            .dropped_reason
            .unwrap()
            .contains("removed trailing segment"));
        drop(log);
    }
    // The only segment with a torn header is rewritten.
    let other = tempfile::tempdir().unwrap();
    fs::write(segment_path(other.path(), 0), &segment_header(0)[..5]).unwrap();
    let (log, report) = SegmentedLog::open(other.path(), FileLogConfig::default()).unwrap();
    assert_eq!((report.records, report.truncated_bytes), (0, 5));
    rt.block_on(async { log.append(vec![numbered(0, 1)]).await.unwrap() });
    drop(log);
    // A complete but foreign header is damage, not a torn write.
    let mut bad = segment_header(0);
    bad[0] = b'X';
    fs::write(segment_path(other.path(), 0), bad).unwrap();
    assert!(matches!(
        SegmentedLog::open(other.path(), FileLogConfig::default()),
        Err(LogError::Corrupt { .. })
    ));
}

/// Reads everything from `from` to the end, with the ranges the reader skipped.
pub(super) async fn read_all_skipping(
    log: &SegmentedLog,
    from: Offset,
) -> (Vec<LogEntry>, Vec<SkippedRange>) {
    let mut reader = log.reader(0, from).unwrap();
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    loop {
        let batch = reader
            .next_batch(13, 1 << 20, Duration::ZERO)
            .await
            .unwrap();
        skipped.extend(reader.take_skipped());
        if batch.is_empty() {
            return (out, skipped);
        }
        out.extend(batch);
    }
}

/// Byte position of the frame of `offset` in segment `path` (of base `base`).
fn frame_position(path: &Path, base: Offset, offset: Offset) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut pos = SEGMENT_HEADER_LEN as usize;
    let mut o = base;
    while o < offset {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += FRAME_PREFIX + len;
        o += 1;
    }
    pos as u64
}

fn flip(path: &Path, at: u64, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= mask;
    fs::write(path, bytes).unwrap();
}

#[test]
fn verify_reports_damage_in_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    append_numbered(dir.path(), small(1024), 40);
    let segments = list_segments(dir.path()).unwrap();
    assert!(segments.len() > 3);
    let (base, victim) = segments[1].clone();
    // A byte inside the value of the third record of the second segment.
    let start = frame_position(&victim, base, base + 2);
    let at = start + 40;
    flip(&victim, at, 0x40);
    let next = frame_position(&victim, base, base + 3);
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    let d = &report.damage[0];
    assert_eq!(&d.segment, &victim);
    assert_eq!((d.position, d.end), (start, next), "{report:?}");
    assert_eq!(d.lost, Some(base + 2..base + 3));
    assert!(d.reason.contains("CRC32C"), "{report:?}");
    assert_eq!(report.records, 39);
    assert_eq!(report.lost_records(), 1);

    // Readers skip the damaged record, say so, and return every other one intact.
    let (log, _) = SegmentedLog::open(dir.path(), small(1024)).unwrap();
    runtime().block_on(async {
        let (entries, skipped) = read_all_skipping(&log, 0).await;
        let offsets: Vec<Offset> = entries.iter().map(|e| e.offset).collect();
        let expected: Vec<Offset> = (0..40).filter(|&o| o != base + 2).collect();
        assert_eq!(offsets, expected);
        for e in &entries {
            assert_eq!(e.value, numbered(e.offset, 100).value);
        }
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!((skipped[0].first, skipped[0].end), (base + 2, base + 3));
        assert!(
            skipped[0]
                .location
                .contains(&format!("bytes {start}..{next}"))
                && skipped[0]
                    .location
                    .contains(victim.file_name().unwrap().to_str().unwrap()),
            "{skipped:?}"
        );
        assert_eq!(log.damage(), skipped);
        // From inside and after the damaged range.
        let (entries, skipped) = read_all_skipping(&log, base + 2).await;
        assert_eq!(entries[0].offset, base + 3);
        assert_eq!((skipped[0].first, skipped[0].end), (base + 2, base + 3));
        let (entries, skipped) = read_all_skipping(&log, base + 3).await;
        assert_eq!(entries.len() as u64, 40 - base - 3);
        assert!(skipped.is_empty());
        // The log goes on: appends after the damage read back.
        log.append(vec![numbered(40, 100)]).await.unwrap();
        let (entries, _) = read_all_skipping(&log, 0).await;
        assert_eq!(entries.last().unwrap().offset, 40);
    });
}

#[test]
fn readers_resync_after_bad_lengths_cut_segments_and_damage_found_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let segments = rt.block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), small(1024)).unwrap();
        for i in 0..60 {
            log.append(vec![numbered(i, 100)]).await.unwrap();
        }
        let segments = list_segments(dir.path()).unwrap();
        assert!(segments.len() > 6, "{segments:?}");
        // Segment 1: a length field made huge (runs past the file).
        let (b1, s1) = segments[1].clone();
        flip(&s1, frame_position(&s1, b1, b1) + 3, 0x7f);
        // Segment 2: two damaged records, the second its last one (no frame follows).
        let (b2, s2) = segments[2].clone();
        let n2 = segments[3].0 - b2;
        flip(&s2, frame_position(&s2, b2, b2 + 1) + 9, 0x01); // inside the offset field
        flip(&s2, frame_position(&s2, b2, b2 + n2 - 1) + 30, 0x10);
        // These segments were indexed by the writer: the reader finds the damage now.
        let (entries, skipped) = read_all_skipping(&log, 0).await;
        let ranges: Vec<(Offset, Offset)> = skipped.iter().map(|r| (r.first, r.end)).collect();
        assert_eq!(
            ranges,
            vec![(b1, b1 + 1), (b2 + 1, b2 + 2), (b2 + n2 - 1, b2 + n2)],
            "{skipped:#?}"
        );
        assert_eq!(entries.len(), 57);
        for e in &entries {
            assert_eq!(e.value, numbered(e.offset, 100).value);
        }
        assert_eq!(log.damage().len(), 3);
        // A second reader meets the recorded ranges.
        assert_eq!(read_all_skipping(&log, 0).await.1, skipped);
        log.close().await.unwrap();
        segments
    });
    // Segment 3 cut by hand before its last record, while shiplog was stopped.
    let (b3, s3) = segments[3].clone();
    let b4 = segments[4].0;
    let cut = frame_position(&s3, b3, b4 - 1);
    OpenOptions::new()
        .write(true)
        .open(&s3)
        .unwrap()
        .set_len(cut)
        .unwrap();
    // After a reopen the scan of each sealed segment on first use finds every range, and
    // so does verify.
    let report = verify(dir.path()).unwrap();
    let lost: Vec<_> = report
        .damage
        .iter()
        .map(|d| d.lost.clone().unwrap())
        .collect();
    assert_eq!(lost.len(), 4, "{report:#?}");
    assert_eq!(lost[3], b4 - 1..b4);
    assert_eq!(report.lost_records(), 4);
    let (log, _) = SegmentedLog::open(dir.path(), small(1024)).unwrap();
    rt.block_on(async {
        let (entries, skipped) = read_all_skipping(&log, 0).await;
        let ranges: Vec<_> = skipped.iter().map(|r| r.first..r.end).collect();
        assert_eq!(ranges, lost, "{report:#?}");
        assert_eq!(entries.len(), 56);
        for e in &entries {
            assert_eq!(e.value, numbered(e.offset, 100).value);
        }
    });
}

/// What a crash may leave after the last acknowledged frame.
#[derive(Debug, Clone)]
enum Tail {
    Random(Vec<u8>),
    /// A valid next frame cut after this many bytes (modulo its length).
    Partial(usize),
    BadCrc,
    WrongOffset,
    Zeros(usize),
    /// A new segment file holding this prefix of a header plus a frame.
    NewSegment(usize),
}

fn tail_strategy() -> impl Strategy<Value = Tail> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Tail::Random),
        any::<usize>().prop_map(Tail::Partial),
        Just(Tail::BadCrc),
        Just(Tail::WrongOffset),
        (1usize..40).prop_map(Tail::Zeros),
        (0usize..80).prop_map(Tail::NewSegment),
    ]
}

fn batches_strategy() -> impl Strategy<Value = Vec<Vec<(Vec<u8>, Vec<u8>)>>> {
    let rec = (
        proptest::collection::vec(any::<u8>(), 0..12),
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    proptest::collection::vec(proptest::collection::vec(rec, 1..8), 1..12)
}

fn frame(offset: Offset, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(&mut buf, offset, key, value);
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Acknowledged records survive whatever unacknowledged bytes a crash leaves behind,
    /// byte-identical and in order, and nothing else appears.
    #[test]
    fn acknowledged_records_survive_a_torn_tail(
        batches in batches_strategy(),
        concurrent in any::<bool>(),
        segment_bytes in prop_oneof![Just(700u64), Just(64u64 << 20)],
        tail in tail_strategy(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let config = small(segment_bytes);
        let mut acked: BTreeMap<Offset, LogRecord> = BTreeMap::new();
        rt.block_on(async {
            let (log, _) = SegmentedLog::open(dir.path(), config.clone()).unwrap();
            let batches: Vec<Vec<LogRecord>> = batches
                .iter()
                .map(|b| b.iter().map(|(k, v)| record(k, v)).collect())
                .collect();
            let results = if concurrent {
                join_all(batches.iter().map(|b| log.append(b.clone()))).await
            } else {
                let mut results = Vec::new();
                for b in &batches {
                    results.push(log.append(b.clone()).await);
                }
                results
            };
            for (batch, result) in batches.into_iter().zip(results) {
                for (r, p) in batch.into_iter().zip(result.unwrap()) {
                    acked.insert(p.offset, r);
                }
            }
            log.close().await.unwrap();
        });
        let end = acked.len() as u64;
        prop_assert_eq!(acked.keys().copied().collect::<Vec<_>>(), (0..end).collect::<Vec<_>>());

        let seg = last_segment(dir.path());
        let garbage_len = match &tail {
            Tail::Random(bytes) => { append_bytes(&seg, bytes); bytes.len() }
            Tail::Partial(cut) => {
                let f = frame(end, b"key", &[5; 50]);
                let cut = 1 + cut % (f.len() - 1);
                append_bytes(&seg, &f[..cut]);
                cut
            }
            Tail::BadCrc => {
                let mut f = frame(end, b"key", b"value");
                f[5] ^= 1;
                append_bytes(&seg, &f);
                f.len()
            }
            Tail::WrongOffset => {
                let f = frame(end + 1, b"key", b"value");
                append_bytes(&seg, &f);
                f.len()
            }
            Tail::Zeros(n) => { append_bytes(&seg, &vec![0; *n]); *n }
            Tail::NewSegment(cut) => {
                let mut bytes = segment_header(end).to_vec();
                bytes.extend(frame(end, b"k", b"v"));
                let cut = (*cut).min(bytes.len() - 1);
                fs::write(segment_path(dir.path(), end), &bytes[..cut]).unwrap();
                cut
            }
        };

        let (log, report) = SegmentedLog::open(dir.path(), config.clone()).unwrap();
        prop_assert_eq!(report.records, end);
        prop_assert_eq!(report.truncated_bytes, garbage_len as u64);
        prop_assert!(report.dropped_reason.is_some() || garbage_len == 0);
        let entries = rt.block_on(read_all(&log, 0));
        prop_assert_eq!(entries.len() as u64, end);
        for e in entries {
            let r = &acked[&e.offset];
            prop_assert_eq!(&e.key, &r.key);
            prop_assert_eq!(&e.value, &r.value);
        }
        // The repaired log takes new appends at the right offset.
        let pos = rt.block_on(log.append(vec![record(b"after", b"crash")])).unwrap();
        prop_assert_eq!(pos[0].offset, end);
        drop(log);
        prop_assert!(verify(dir.path()).unwrap().is_clean());
    }

    /// Whatever bytes of sealed segments are damaged, a reader returns every record outside
    /// the ranges it reports as skipped, byte-identical, and the returned and skipped
    /// offsets cover the log exactly once; verify names the same ranges.
    #[test]
    fn damaged_sealed_segments_are_skipped_exactly(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 20..80),
        hits in proptest::collection::vec((any::<usize>(), any::<u64>(), 1u8..=255), 1..5),
        from_pick in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let records: Vec<LogRecord> = values.iter().map(|v| record(b"k", v)).collect();
        rt.block_on(async {
            let (log, _) = SegmentedLog::open(dir.path(), small(600)).unwrap();
            for r in &records {
                log.append(vec![r.clone()]).await.unwrap();
            }
        });
        let end = records.len() as u64;
        let segments = list_segments(dir.path()).unwrap();
        let sealed = &segments[..segments.len() - 1];
        prop_assume!(!sealed.is_empty());
        for (seg, at, mask) in &hits {
            let path = &sealed[seg % sealed.len()].1;
            let len = fs::metadata(path).unwrap().len();
            flip(path, SEGMENT_HEADER_LEN + at % (len - SEGMENT_HEADER_LEN), *mask);
        }
        let report = verify(dir.path()).unwrap();
        prop_assert!(!report.is_clean());
        let (log, _) = SegmentedLog::open(dir.path(), small(600)).unwrap();
        let (entries, skipped) = rt.block_on(read_all_skipping(&log, 0));
        let mut covered = Vec::new();
        let mut e = entries.iter().peekable();
        let mut s = skipped.iter().peekable();
        loop {
            match (e.peek(), s.peek()) {
                (Some(x), Some(r)) if x.offset < r.first => covered.push(e.next().unwrap().offset),
                (_, Some(_)) => { let r = s.next().unwrap(); covered.extend(r.first..r.end) }
                (Some(_), None) => covered.push(e.next().unwrap().offset),
                (None, None) => break,
            }
        }
        prop_assert_eq!(covered, (0..end).collect::<Vec<_>>());
        for x in &entries {
            prop_assert_eq!(&x.value, &records[x.offset as usize].value);
        }
        let from_verify: Vec<_> = report.damage.iter().filter_map(|d| d.lost.clone()).filter(|r| !r.is_empty()).collect();
        let from_reader: Vec<_> = skipped.iter().map(|r| r.first..r.end).collect();
        prop_assert_eq!(from_verify, from_reader);
        // A reader starting anywhere sees the same suffix.
        let from = from_pick % (end + 1);
        let (tail, _) = rt.block_on(read_all_skipping(&log, from));
        let expected: Vec<Offset> = entries.iter().map(|x| x.offset).filter(|&o| o >= from).collect();
        prop_assert_eq!(tail.iter().map(|x| x.offset).collect::<Vec<_>>(), expected);
    }

    /// Cutting the tail segment anywhere keeps exactly the frames wholly before the cut.
    #[test]
    fn cut_tail_keeps_the_whole_frames_before_the_cut(
        batches in batches_strategy(),
        cut in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let records: Vec<LogRecord> =
            batches.iter().flatten().map(|(k, v)| record(k, v)).collect();
        rt.block_on(async {
            let (log, _) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
            for b in &batches {
                log.append(b.iter().map(|(k, v)| record(k, v)).collect()).await.unwrap();
            }
        });
        let seg = last_segment(dir.path());
        let len = fs::metadata(&seg).unwrap().len();
        let cut = SEGMENT_HEADER_LEN + cut % (len - SEGMENT_HEADER_LEN + 1);
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();
        let mut end = SEGMENT_HEADER_LEN;
        let kept = records
            .iter()
            .take_while(|r| {
                end += (FRAME_OVERHEAD + r.key.len() + r.value.len()) as u64;
                end <= cut
            })
            .count();
        let (log, report) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
        prop_assert_eq!(report.records, kept as u64);
        let entries = rt.block_on(read_all(&log, 0));
        prop_assert_eq!(entries.len(), kept);
        for (e, r) in entries.iter().zip(&records) {
            prop_assert_eq!(&e.key, &r.key);
            prop_assert_eq!(&e.value, &r.value);
        }
    }
}

/// Appends records 0..n of 100 bytes one at a time to the log in `dir`, then closes it.
fn append_numbered(dir: &Path, config: FileLogConfig, n: u64) {
    runtime().block_on(async {
        let (log, _) = SegmentedLog::open(dir, config).unwrap();
        for i in 0..n {
            log.append(vec![numbered(i, 100)]).await.unwrap();
        }
        log.close().await.unwrap();
    });
}

/// Ten records of 100 bytes in one segment, the log closed: (segment base, path).
fn ten_in_one_segment(dir: &Path) -> (Offset, PathBuf) {
    append_numbered(dir, FileLogConfig::default(), 10);
    list_segments(dir).unwrap().pop().unwrap()
}

/// Verify on another thread, failing instead of hanging if it does not return.
fn verify_within(dir: &Path, limit: Duration) -> VerifyReport {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || tx.send(verify(&dir).unwrap()));
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("verify did not return within {limit:?}"))
}

#[test]
fn damage_in_the_newest_segment_that_valid_records_follow_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seg) = ten_in_one_segment(dir.path());
    let start = frame_position(&seg, base, 4);
    let next = frame_position(&seg, base, 5);
    flip(&seg, start + 30, 0x08);

    // verify says what the next start does: the range is damage, records 5.. stay.
    let report = verify_within(dir.path(), Duration::from_secs(30));
    assert_eq!(report.damage.len(), 1, "{report:?}");
    let d = &report.damage[0];
    assert_eq!(
        (d.position, d.end, d.lost.clone()),
        (start, next, Some(4..5))
    );
    assert!(d.reason.contains("CRC32C") && !d.missing, "{report:?}");
    assert_eq!(report.records, 9);

    let rt = runtime();
    let (log, recovery) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(
        (recovery.records, recovery.truncated_bytes),
        (10, 0),
        "{recovery:?}"
    );
    assert_eq!(recovery.dropped_reason, None);
    let ranges: Vec<_> = recovery.damage.iter().map(|r| r.first..r.end).collect();
    assert_eq!(ranges, vec![4..5]);
    assert!(recovery.damage[0]
        .location
        .contains(&format!("bytes {start}..{next}")));
    rt.block_on(async {
        let (entries, skipped) = read_all_skipping(&log, 0).await;
        let offsets: Vec<Offset> = entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
        for e in &entries {
            assert_eq!(e.value, numbered(e.offset, 100).value);
        }
        assert_eq!(skipped, recovery.damage);
        assert_eq!(log.damage(), recovery.damage);
        // From inside and after the damaged range.
        let (entries, skipped) = read_all_skipping(&log, 4).await;
        assert_eq!((entries[0].offset, skipped.len()), (5, 1));
        let (entries, skipped) = read_all_skipping(&log, 7).await;
        assert_eq!((entries[0].offset, skipped.len()), (7, 0));
        // Appends go on after the last valid record.
        let pos = log.append(vec![numbered(10, 100)]).await.unwrap();
        assert_eq!(pos[0].offset, 10);
        assert_eq!(read_all_skipping(&log, 0).await.0.len(), 10);
        log.close().await.unwrap();
    });
    drop(log);

    // Damage in the last record, with nothing valid after it: a torn tail, truncated; the
    // kept range stays.
    let last = frame_position(&seg, base, 10);
    flip(&seg, last + 25, 0x01);
    let report = verify_within(dir.path(), Duration::from_secs(30));
    assert_eq!(report.damage.len(), 2, "{report:?}");
    assert_eq!(report.damage[0].lost, Some(4..5));
    assert_eq!(
        (report.damage[1].position, report.damage[1].lost.clone()),
        (last, None)
    );
    assert!(report.damage[1].reason.contains("torn"), "{report:?}");
    let (log, recovery) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(recovery.records, 10);
    assert_eq!(recovery.truncated_bytes, (FRAME_OVERHEAD + 2 + 100) as u64);
    assert_eq!(recovery.damage.len(), 1);
    rt.block_on(async {
        assert_eq!(
            log.append(vec![numbered(10, 7)]).await.unwrap()[0].offset,
            10
        );
    });
    drop(log);
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert_eq!(report.records, 10);
}

/// After a power loss the page cache may have written an unsynced group out of order: a
/// hole, then whole frames of the same group, then a torn end. The frames after the hole
/// are kept (never acknowledged, but real records at their offsets), the hole is damage,
/// the torn end is truncated, and appends continue after the last kept record.
#[test]
fn an_unsynced_tail_with_a_hole_keeps_the_valid_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
        log.append((0..5).map(|i| numbered(i, 100)).collect())
            .await
            .unwrap();
        log.close().await.unwrap();
    });
    let seg = last_segment(dir.path());
    let synced = fs::metadata(&seg).unwrap().len();
    // The group of offsets 5..13 as the writer encodes it.
    let mut group = Vec::new();
    let mut at = vec![];
    for i in 5..13 {
        at.push(group.len());
        let r = numbered(i, 100);
        encode_frame(&mut group, i, &r.key, &r.value);
    }
    // Frame 5 and half of frame 6 never reached the disk; frame 12 is cut.
    group[..at[1] + 40].fill(0);
    group.truncate(at[7] + 50);
    append_bytes(&seg, &group);

    let (log, recovery) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(recovery.records, 12, "{recovery:?}");
    assert_eq!(recovery.truncated_bytes, 50);
    let ranges: Vec<_> = recovery.damage.iter().map(|r| r.first..r.end).collect();
    assert_eq!(ranges, vec![5..7]);
    assert!(
        recovery.damage[0].location.contains(&format!(
            "bytes {}..{}",
            synced,
            synced + at[2] as u64
        )),
        "{recovery:?}"
    );
    rt.block_on(async {
        let (entries, skipped) = read_all_skipping(&log, 0).await;
        let offsets: Vec<Offset> = entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4, 7, 8, 9, 10, 11]);
        for e in &entries {
            assert_eq!(e.value, numbered(e.offset, 100).value);
        }
        assert_eq!(skipped, recovery.damage);
        let pos = log.append(vec![numbered(12, 100)]).await.unwrap();
        assert_eq!(pos[0].offset, 12);
    });
    drop(log);
    let report = verify(dir.path()).unwrap();
    let lost: Vec<_> = report.damage.iter().map(|d| d.lost.clone()).collect();
    assert_eq!(lost, vec![Some(5..7)], "{report:?}");
    // A second start finds the same and truncates nothing.
    let (_, again) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!((again.records, again.truncated_bytes), (13, 0));
    assert_eq!(again.damage, recovery.damage);
}

/// A newest segment whose first page (header and first records) is zeros, with valid
/// records after it: the header is written again and the records kept.
#[test]
fn a_zeroed_header_of_the_newest_segment_is_written_again_when_records_follow() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    append_numbered(dir.path(), small(1024), 20);
    let (base, seg) = list_segments(dir.path()).unwrap().pop().unwrap();
    assert!(base > 0 && base + 3 <= 20, "{base}");
    let zeroed = frame_position(&seg, base, base + 1) + 10;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[..zeroed as usize].fill(0);
    fs::write(&seg, &bytes).unwrap();

    let report = verify_within(dir.path(), Duration::from_secs(30));
    let lost: Vec<_> = report.damage.iter().map(|d| d.lost.clone()).collect();
    assert_eq!(
        lost,
        vec![Some(base..base), Some(base..base + 2)],
        "{report:?}"
    );
    assert!(
        report.damage[0].reason.contains("writes it again"),
        "{report:?}"
    );

    let (log, recovery) = SegmentedLog::open(dir.path(), small(1024)).unwrap();
    assert_eq!(
        (recovery.records, recovery.truncated_bytes),
        (20, 0),
        "{recovery:?}"
    );
    assert_eq!(fs::read(&seg).unwrap()[..24], segment_header(base));
    rt.block_on(async {
        let (entries, skipped) = read_all_skipping(&log, 0).await;
        assert_eq!(entries.len(), 18);
        let ranges: Vec<_> = skipped.iter().map(|r| r.first..r.end).collect();
        assert_eq!(ranges, vec![base..base + 2]);
        assert_eq!(
            log.append(vec![numbered(20, 10)]).await.unwrap()[0].offset,
            20
        );
    });
}

#[test]
fn verify_names_a_torn_tail_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seg) = ten_in_one_segment(dir.path());
    let end = fs::metadata(&seg).unwrap().len();
    let mut torn = frame(10, b"k", &[7; 60]);
    torn.truncate(40);
    append_bytes(&seg, &torn);
    let report = verify_within(dir.path(), Duration::from_secs(30));
    assert_eq!(report.records, 10);
    assert_eq!(report.damage.len(), 1, "{report:?}");
    let d = &report.damage[0];
    assert_eq!((d.position, d.end, d.lost.clone()), (end, end + 40, None));
    assert!(d.reason.contains("torn write"), "{report:?}");
    let (_, recovery) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!((recovery.records, recovery.truncated_bytes), (10, 40));
    assert!(recovery.damage.is_empty());
    assert_eq!(base, 0);
}

/// Segment files deleted by hand, oldest first (to free disk): the log opens at its first
/// offset, readers from below it start there and report the missing offsets like damage,
/// and verify names them.
#[test]
fn deleted_first_segments_are_skipped_reported_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    append_numbered(dir.path(), small(1024), 40);
    let segments = list_segments(dir.path()).unwrap();
    assert!(segments.len() > 4, "{segments:?}");
    fs::remove_file(&segments[0].1).unwrap();
    fs::remove_file(&segments[1].1).unwrap();
    let (start, first) = segments[2].clone();
    let first_name = first.file_name().unwrap().to_str().unwrap().to_string();

    let report = verify(dir.path()).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    let d = &report.damage[0];
    assert_eq!((d.lost.clone(), d.missing), (Some(0..start), true));
    assert_eq!(d.segment, segment_path(dir.path(), 0));
    assert!(d.reason.contains(&first_name), "{report:?}");
    assert_eq!(report.records, 40 - start);

    let (log, recovery) = SegmentedLog::open(dir.path(), small(1024)).unwrap();
    assert_eq!(recovery.missing, Some(0..start));
    assert_eq!(recovery.records, 40 - start);
    assert_eq!(log.stats().first_offset, start);
    let damage = log.damage();
    assert_eq!((damage[0].first, damage[0].end), (0, start));
    rt.block_on(async {
        let (entries, skipped) = read_all_skipping(&log, 0).await;
        assert_eq!(
            entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
            (start..40).collect::<Vec<_>>()
        );
        for e in &entries {
            assert_eq!(e.value, numbered(e.offset, 100).value);
        }
        assert_eq!(skipped, damage);
        assert!(
            skipped[0].location.contains(&first_name) && skipped[0].reason.contains("missing"),
            "{skipped:?}"
        );
        let (entries, skipped) = read_all_skipping(&log, 3).await;
        assert_eq!(entries[0].offset, start);
        assert_eq!((skipped[0].first, skipped[0].end), (3, start));
        let (_, skipped) = read_all_skipping(&log, start).await;
        assert!(skipped.is_empty());
        assert!(matches!(
            log.reader(0, 41),
            Err(LogError::OutOfRange { .. })
        ));
        assert_eq!(
            log.append(vec![numbered(40, 100)]).await.unwrap()[0].offset,
            40
        );
    });
}

/// A segment file deleted between two others: its offsets are in no file. Readers skip
/// them like damage (the segment before it "ends early"), and verify and the reason name
/// the missing file.
#[test]
fn a_deleted_middle_segment_is_skipped_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    append_numbered(dir.path(), small(1024), 40);
    let segments = list_segments(dir.path()).unwrap();
    assert!(segments.len() > 4, "{segments:?}");
    let (b2, s2) = segments[2].clone();
    let b3 = segments[3].0;
    let name = s2.file_name().unwrap().to_str().unwrap().to_string();
    fs::remove_file(&s2).unwrap();

    let report = verify(dir.path()).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    let d = &report.damage[0];
    assert_eq!((d.lost.clone(), d.missing), (Some(b2..b3), true));
    assert_eq!(d.segment, segments[1].1);
    assert!(
        d.reason.contains(&format!("{name} is missing")),
        "{report:?}"
    );

    let (log, recovery) = SegmentedLog::open(dir.path(), small(1024)).unwrap();
    assert_eq!(recovery.missing, None);
    rt.block_on(async {
        let (entries, skipped) = read_all_skipping(&log, 0).await;
        let expected: Vec<Offset> = (0..40).filter(|o| !(b2..b3).contains(o)).collect();
        assert_eq!(
            entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
            expected
        );
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!((skipped[0].first, skipped[0].end), (b2, b3));
        assert!(skipped[0].reason.contains(&name), "{skipped:?}");
        assert_eq!(log.damage(), skipped);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever records of the newest segment are damaged, the next start keeps every
    /// intact record that an intact record follows, skipping (and reporting) exactly the
    /// damaged ones before it, and truncates only the damaged records at the very end;
    /// appends continue at the right offset, and verify said beforehand what it would do.
    #[test]
    fn damage_in_the_newest_segment_is_kept_unless_nothing_valid_follows(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 4..40),
        hits in proptest::collection::vec((any::<usize>(), any::<usize>(), 1u8..=255), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let records: Vec<LogRecord> = values.iter().map(|v| record(b"k", v)).collect();
        rt.block_on(async {
            let (log, _) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
            for r in &records {
                log.append(vec![r.clone()]).await.unwrap();
            }
            log.close().await.unwrap();
        });
        let n = records.len();
        let seg = last_segment(dir.path());
        let positions: Vec<u64> = (0..=n as u64).map(|i| frame_position(&seg, 0, i)).collect();
        let before = fs::read(&seg).unwrap();
        for (rec, at, mask) in &hits {
            let i = rec % n;
            let frame_len = (positions[i + 1] - positions[i]) as usize;
            flip(&seg, positions[i] + (at % frame_len) as u64, *mask);
        }
        // The records whose bytes changed (two hits on one byte may cancel out).
        let after = fs::read(&seg).unwrap();
        let damaged: std::collections::BTreeSet<u64> = (0..n)
            .filter(|&i| {
                let frame = positions[i] as usize..positions[i + 1] as usize;
                before[frame.clone()] != after[frame]
            })
            .map(|i| i as u64)
            .collect();
        // Where the torn tail starts: after the last intact record.
        let kept_end = (0..n as u64).rev().find(|i| !damaged.contains(i)).map_or(0, |i| i + 1);
        let mut runs: Vec<std::ops::Range<Offset>> = Vec::new();
        for &i in damaged.iter().filter(|&&i| i < kept_end) {
            match runs.last_mut() {
                Some(r) if r.end == i => r.end += 1,
                _ => runs.push(i..i + 1),
            }
        }

        let report = verify(dir.path()).unwrap();
        let known: Vec<_> = report.damage.iter().filter_map(|d| d.lost.clone()).collect();
        prop_assert_eq!(&known, &runs);
        prop_assert_eq!(report.damage.len() - known.len(), usize::from(kept_end < n as u64));

        let (log, recovery) = SegmentedLog::open(dir.path(), FileLogConfig::default()).unwrap();
        prop_assert_eq!(recovery.records, kept_end);
        let (entries, skipped) = rt.block_on(read_all_skipping(&log, 0));
        let expected: Vec<Offset> = (0..kept_end).filter(|i| !damaged.contains(i)).collect();
        prop_assert_eq!(entries.iter().map(|e| e.offset).collect::<Vec<_>>(), expected);
        for e in &entries {
            prop_assert_eq!(&e.value, &records[e.offset as usize].value);
        }
        prop_assert_eq!(skipped.iter().map(|r| r.first..r.end).collect::<Vec<_>>(), runs.clone());
        prop_assert_eq!(&skipped, &recovery.damage);
        let pos = rt.block_on(log.append(vec![record(b"after", b"damage")])).unwrap();
        prop_assert_eq!(pos[0].offset, kept_end);
        drop(log);
        let after: Vec<_> = verify(dir.path()).unwrap().damage.iter().map(|d| d.lost.clone()).collect();
        prop_assert_eq!(after, runs.into_iter().map(Some).collect::<Vec<_>>());
    }
}
