//! Retention: segments removed oldest first, never past what the caller needs, the log's
//! start moved forward crash-safely, and every reader knowing it.

use super::retention::*;
use super::tests::{read_all_skipping, runtime};
use super::*;
use bytes::Bytes;
use std::time::{Duration, SystemTime};

fn event(i: u64) -> LogRecord {
    LogRecord {
        key: Bytes::from("web"),
        value: Bytes::from(format!(
            r#"{{"id":"c-{i}","kind":"check","source":"probe","project":"web","data":{{"name":"smoke","passed":true}}}}"#
        )),
    }
}

fn config(compress: bool) -> FileLogConfig {
    FileLogConfig {
        segment_bytes: 16 << 10,
        compress_sealed: compress,
        ..FileLogConfig::default()
    }
}

fn fill(log: &SegmentedLog, rt: &tokio::runtime::Runtime, from: u64, n: u64) {
    rt.block_on(async {
        for chunk in (from..from + n).collect::<Vec<_>>().chunks(50) {
            log.append(chunk.iter().map(|&i| event(i)).collect())
                .await
                .unwrap();
        }
    });
}

fn bases(log: &SegmentedLog) -> Vec<Offset> {
    read_lock(&log.shared.table)
        .segments
        .iter()
        .map(|s| s.base)
        .collect()
}

fn by_size(max: u64) -> RetentionPolicy {
    RetentionPolicy {
        max_bytes: Some(max),
        max_age: None,
    }
}

#[test]
fn size_retention_removes_oldest_segments_only_below_keep_from() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, _) = SegmentedLog::open(dir.path(), config(false)).unwrap();
    fill(&log, &rt, 0, 2_000);
    let b = bases(&log);
    assert!(b.len() > 6, "{b:?}");
    let total = log.stats().bytes;

    // Nothing may go: every segment holds an offset the caller still needs.
    let pass = log
        .apply_retention(&by_size(total / 2), b[1] - 1, SystemTime::now())
        .unwrap();
    assert_eq!(pass.removed_segments, 0);
    assert!(pass.held_back_segments > 0);
    // keep_from must reach the second segment's base for the first one to go.
    assert_eq!(pass.held_back_until, Some(b[1]));
    assert_eq!(log.start_offset(0), 0);
    assert!(!dir.path().join(START_FILE).exists());

    // Up to b[3]: three segments go, the rest the policy wants is held back.
    let pass = log
        .apply_retention(&by_size(total / 2), b[3], SystemTime::now())
        .unwrap();
    assert_eq!(pass.removed_segments, 3);
    assert_eq!(pass.removed, 0..b[3]);
    assert_eq!(pass.start, b[3]);
    assert!(pass.held_back_segments > 0);
    assert_eq!(pass.held_back_until, Some(b[4]));
    assert_eq!(read_start(dir.path()).unwrap(), Some(b[3]));
    assert!(!segment_path(dir.path(), b[0]).exists());
    assert!(segment_path(dir.path(), b[3]).exists());

    // Everything below the limit that is allowed: the log ends under max_bytes.
    let pass = log
        .apply_retention(&by_size(total / 2), 2_000, SystemTime::now())
        .unwrap();
    assert!(pass.bytes <= total / 2, "{pass:?}");
    assert_eq!(pass.held_back_segments, 0);
    assert_eq!(pass.held_back_until, None);
    let start = pass.start;
    assert_eq!(log.stats().start_offset, start);
    assert_eq!(log.stats().first_offset, start);

    // Readers below the start begin at it and report nothing skipped.
    let (entries, skipped) = rt.block_on(read_all_skipping(&log, 0));
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(entries[0].offset, start);
    assert_eq!(entries.len() as u64, 2_000 - start);
    assert!(log.damage().is_empty());
    let first = log.first_record().unwrap();
    assert!(std::str::from_utf8(&first)
        .unwrap()
        .contains(&format!("\"c-{start}\"")));

    // verify: clean, the removed offsets named as such.
    drop(log);
    let report = verify(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.damage);
    assert_eq!(report.removed, 0..start);
    assert_eq!(report.records, 2_000 - start);
    let st = status(dir.path()).unwrap();
    assert_eq!((st.start_offset, st.first_offset), (start, start));

    // Reopened: the same start; appends go on at 2,000.
    let (log, report) = SegmentedLog::open(dir.path(), config(false)).unwrap();
    assert_eq!(report.missing, None);
    assert_eq!(report.records, 2_000 - start);
    fill(&log, &rt, 2_000, 10);
    let (entries, skipped) = rt.block_on(read_all_skipping(&log, 0));
    assert!(skipped.is_empty());
    assert_eq!(entries.last().unwrap().offset, 2_009);
}

#[test]
fn a_crash_between_start_and_the_deletes_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let b = {
        let (log, _) = SegmentedLog::open(dir.path(), config(false)).unwrap();
        fill(&log, &rt, 0, 1_000);
        bases(&log)
    };
    // START written, files not deleted yet; and a `.zseg` the compressor renamed into
    // place for a segment retention had just removed.
    fs::write(dir.path().join(START_FILE), format!("{}\n", b[2])).unwrap();
    fs::copy(
        segment_path(dir.path(), b[1]),
        dir.path().join(format!("{:020}.zseg", b[1])),
    )
    .unwrap();
    let report = verify(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.damage);
    assert_eq!(report.removed, 0..b[2]);
    assert_eq!(report.leftovers.len(), 2, "{:?}", report.leftovers);

    let (log, _) = SegmentedLog::open(dir.path(), config(false)).unwrap();
    assert_eq!(bases(&log)[0], b[2]);
    assert!(!segment_path(dir.path(), b[0]).exists());
    assert!(!dir.path().join(format!("{:020}.zseg", b[1])).exists());
    let (entries, skipped) = rt.block_on(read_all_skipping(&log, 0));
    assert!(skipped.is_empty());
    assert_eq!(entries[0].offset, b[2]);
}

#[test]
fn files_deleted_by_hand_after_the_start_are_still_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let b = {
        let (log, _) = SegmentedLog::open(dir.path(), config(false)).unwrap();
        fill(&log, &rt, 0, 1_000);
        log.apply_retention(&by_size(0), bases(&log)[1], SystemTime::now())
            .unwrap();
        bases(&log)
    };
    fs::remove_file(segment_path(dir.path(), b[0])).unwrap();
    let (log, report) = SegmentedLog::open(dir.path(), config(false)).unwrap();
    assert_eq!(report.missing, Some(b[0]..b[1]));
    let (_, skipped) = rt.block_on(read_all_skipping(&log, 0));
    assert_eq!(
        skipped.iter().map(|r| r.first..r.end).collect::<Vec<_>>(),
        vec![b[0]..b[1]]
    );
    drop(log);
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.removed, 0..b[0]);
    assert_eq!(report.lost_records(), b[1] - b[0]);
}

#[test]
fn age_retention_uses_the_last_write_and_a_reader_inside_a_removed_segment_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, _) = SegmentedLog::open(dir.path(), config(false)).unwrap();
    fill(&log, &rt, 0, 1_000);
    let b = bases(&log);
    let day = Duration::from_secs(86_400);
    let old = SystemTime::now() - 3 * day;
    for &base in &b[..3] {
        fs::File::options()
            .write(true)
            .open(segment_path(dir.path(), base))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    // A reader half-way through the first segment.
    let mut reader = log.reader(0, 0).unwrap();
    let first = rt
        .block_on(reader.next_batch(3, 1 << 20, Duration::ZERO))
        .unwrap();
    assert_eq!(first.len(), 3);
    let policy = RetentionPolicy {
        max_age: Some(2 * day),
        max_bytes: None,
    };
    let pass = log
        .apply_retention(&policy, u64::MAX, SystemTime::now())
        .unwrap();
    assert_eq!(pass.removed_segments, 3);
    assert_eq!(pass.start, b[3]);
    let next = rt
        .block_on(reader.next_batch(3, 1 << 20, Duration::ZERO))
        .unwrap();
    assert_eq!(next[0].offset, b[3]);
    assert!(reader.take_skipped().is_empty());
    // Nothing older is left: a second pass removes nothing.
    let pass = log
        .apply_retention(&policy, u64::MAX, SystemTime::now())
        .unwrap();
    assert_eq!(pass.removed_segments, 0);
}

#[test]
fn compressed_segments_keep_their_age_and_go_like_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (log, _) = SegmentedLog::open(dir.path(), config(false)).unwrap();
    fill(&log, &rt, 0, 1_500);
    let b = bases(&log);
    let old = SystemTime::now() - Duration::from_secs(3_600);
    fs::File::options()
        .write(true)
        .open(segment_path(dir.path(), b[0]))
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert!(log.compress_sealed_now().segments >= 2);
    let zseg = dir.path().join(format!("{:020}.zseg", b[0]));
    let age = fs::metadata(&zseg).unwrap().modified().unwrap();
    assert_eq!(age, old);
    let pass = log
        .apply_retention(
            &RetentionPolicy {
                max_age: Some(Duration::from_secs(600)),
                max_bytes: None,
            },
            u64::MAX,
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(pass.removed_segments, 1);
    assert!(!zseg.exists());
    let (entries, skipped) = rt.block_on(read_all_skipping(&log, 0));
    assert!(skipped.is_empty());
    assert_eq!(entries.len() as u64, 1_500 - b[1]);
}
