//! Compressed sealed segments: reads, seeks, verify, damage, and crash states.

use super::compress::*;
use super::format::*;
use super::tests::{read_all_skipping, runtime};
use super::*;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// JSON-like records, compressible as events are.
fn event(i: u64) -> LogRecord {
    LogRecord {
        key: Bytes::from(format!("project-{}", i % 3)),
        value: Bytes::from(format!(
            r#"{{"id":"build-{i}","kind":"build","source":"vite-plugin","project":"web-app","data":{{"duration_ms":{},"success":true}}}}"#,
            i * 37 % 100_000
        )),
    }
}

fn config(compress: bool) -> FileLogConfig {
    FileLogConfig {
        segment_bytes: 64 << 10,
        compress_sealed: compress,
        ..FileLogConfig::default()
    }
}

/// Appends `n` events and waits until every sealed segment but the last is compressed.
fn compressed_log(dir: &Path, n: u64) -> u64 {
    let rt = runtime();
    rt.block_on(async {
        let (log, _) = SegmentedLog::open(dir, config(true)).unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            log.append(chunk.iter().map(|&i| event(i)).collect())
                .await
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = log.stats();
            if s.compressed_segments + 2 >= s.segments && s.segments > 2 {
                return s.compressed_segments;
            }
            assert!(
                Instant::now() < deadline,
                "compression did not catch up: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[test]
fn compressed_segments_read_seek_and_verify_like_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5_000;
    let compressed = compressed_log(dir.path(), n);
    assert!(compressed >= 3, "{compressed} segments compressed");
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".zseg")), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    // Open again (the compressed segments are found at open), read all and seek.
    let rt = runtime();
    let (log, report) = SegmentedLog::open(dir.path(), config(false)).unwrap();
    assert_eq!(report.records, n);
    let stats = log.stats();
    assert!(
        stats.bytes * 3 < stats.raw_bytes,
        "compressed {} of {} raw bytes",
        stats.bytes,
        stats.raw_bytes
    );
    for from in [0, 1, 777, 4096, n - 1] {
        let (entries, skipped) = rt.block_on(read_all_skipping(&log, from));
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(entries.len() as u64, n - from);
        for e in &entries {
            assert_eq!(e.value, event(e.offset).value, "offset {}", e.offset);
        }
    }
    // Appends continue after the compressed segments.
    rt.block_on(log.append(vec![event(n)])).unwrap();
    drop(log);
    let v = verify(dir.path()).unwrap();
    assert!(v.is_clean(), "{:?}", v.damage);
    assert_eq!(v.records, n + 1);
}

#[test]
fn a_flipped_byte_in_a_compressed_block_is_named_by_verify_and_skipped_by_readers() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5_000;
    compressed_log(dir.path(), n);
    let segments = list_segments(dir.path()).unwrap();
    let (base, path) = segments
        .iter()
        .find(|(_, p)| is_compressed(p))
        .cloned()
        .unwrap();
    let upper = segments
        .iter()
        .find(|(b, _)| *b > base)
        .map(|(b, _)| *b)
        .unwrap();
    // A byte in the middle of the first block's compressed bytes.
    let len = fs::metadata(&path).unwrap().len();
    let at = (SEGMENT_HEADER_LEN + 32 + len) / 2;
    let mut bytes = fs::read(&path).unwrap();
    bytes[at as usize] ^= 0x5a;
    fs::write(&path, bytes).unwrap();

    let v = verify(dir.path()).unwrap();
    let named: Vec<_> = v.damage.iter().filter(|d| d.segment == path).collect();
    assert_eq!(named.len(), 1, "{:?}", v.damage);
    assert!(
        named[0]
            .reason
            .contains("compressed block 0 does not check out"),
        "{}",
        named[0].reason
    );
    assert_eq!(named[0].lost, Some(base..upper));
    assert_eq!(v.lost_records(), upper - base);

    let rt = runtime();
    let (log, _) = SegmentedLog::open(dir.path(), config(false)).unwrap();
    let (entries, skipped) = rt.block_on(read_all_skipping(&log, 0));
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!((skipped[0].first, skipped[0].end), (base, upper));
    assert!(
        skipped[0].location.contains(".zseg"),
        "{}",
        skipped[0].location
    );
    let offsets: Vec<Offset> = entries.iter().map(|e| e.offset).collect();
    let expected: Vec<Offset> = (0..n).filter(|o| !(base..upper).contains(o)).collect();
    assert_eq!(offsets, expected);
}

#[test]
fn an_interrupted_compression_leaves_one_complete_form_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let n = 3_000;
    rt.block_on(async {
        let (log, _) = SegmentedLog::open(dir.path(), config(false)).unwrap();
        log.append((0..n).map(event).collect()).await.unwrap();
    });
    let segments = list_segments(dir.path()).unwrap();
    assert!(segments.len() > 3);
    // Segment 0: killed after the rename (both forms on disk). Segment 1: killed before it
    // (a partial temp file). Segment 2: not started.
    let (b0, b1) = (segments[0].0, segments[1].0);
    compress_segment(dir.path(), b0, segments[1].0, &|| false)
        .unwrap()
        .unwrap();
    compress_segment(dir.path(), b1, segments[2].0, &|| false)
        .unwrap()
        .unwrap();
    let z1 = compressed_path(dir.path(), b1);
    let tmp = dir.path().join(format!("{b1:020}.zseg.tmp"));
    let partial = fs::read(&z1).unwrap();
    fs::write(&tmp, &partial[..partial.len() / 2]).unwrap();
    fs::remove_file(&z1).unwrap();
    assert!(segment_path(dir.path(), b0).exists());

    let (log, report) = SegmentedLog::open(dir.path(), config(false)).unwrap();
    assert_eq!(report.records, n);
    assert!(
        !segment_path(dir.path(), b0).exists(),
        "the .seg of a renamed .zseg is removed"
    );
    assert!(compressed_path(dir.path(), b0).exists());
    assert!(!tmp.exists(), "a partial .zseg.tmp is removed");
    assert!(segment_path(dir.path(), b1).exists());
    let (entries, skipped) = rt.block_on(read_all_skipping(&log, 0));
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(entries.len() as u64, n);
    assert!(entries.iter().all(|e| e.value == event(e.offset).value));
}
