//! The Kafka backend against librdkafka's in-process mock cluster.

use bytes::Bytes;
use rdkafka::mocking::MockCluster;
use shiplog_kafka::{KafkaLog, KafkaLogConfig};
use shiplog_log::{Log, LogEntry, LogError, LogRecord, Partition};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

const TOPIC: &str = "shiplog.events";

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(3).expect("mock cluster");
    mock.create_topic(TOPIC, 3, 1).expect("create topic");
    mock
}

fn config(brokers: String) -> KafkaLogConfig {
    let mut c = KafkaLogConfig::new(brokers);
    c.settings
        .insert("message.timeout.ms".into(), "3000".into());
    c
}

fn rec(key: &str, value: String) -> LogRecord {
    LogRecord {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from(value),
    }
}

async fn read_all(log: &KafkaLog) -> Vec<LogEntry> {
    let mut out = Vec::new();
    for p in log.partitions() {
        let end = log.end_offset(p);
        let mut r = log.reader(p, 0).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while r.position() < end {
            assert!(
                std::time::Instant::now() < deadline,
                "reading partition {p} timed out"
            );
            out.extend(
                r.next_batch(1000, 1 << 20, Duration::from_millis(500))
                    .await
                    .unwrap(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_over_three_partitions() {
    let mock = cluster();
    let log = KafkaLog::open(config(mock.bootstrap_servers())).unwrap();
    assert_eq!(log.partitions(), vec![0, 1, 2]);
    let records: Vec<LogRecord> = (0..60)
        .map(|i| rec(&format!("project-{}", i % 6), format!("{{\"n\":{i}}}")))
        .collect();
    let positions = log.append(records.clone()).await.unwrap();
    assert_eq!(positions.len(), 60);
    let total: u64 = log.partitions().iter().map(|&p| log.end_offset(p)).sum();
    assert_eq!(total, 60);
    let used: HashSet<Partition> = positions.iter().map(|p| p.partition).collect();
    assert!(used.len() > 1, "six keys all went to one partition");
    let entries = read_all(&log).await;
    assert_eq!(entries.len(), 60);
    for (r, pos) in records.iter().zip(&positions) {
        let e = entries
            .iter()
            .find(|e| e.partition == pos.partition && e.offset == pos.offset)
            .expect("appended record is readable at its position");
        assert_eq!((&e.key, &e.value), (&r.key, &r.value));
    }
    // a reader started in the middle starts there
    let p = positions[10];
    let mut r = log.reader(p.partition, p.offset).unwrap();
    let b = r
        .next_batch(1, 1 << 20, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(b[0].offset, p.offset);
    assert_eq!(b[0].value, records[10].value);
    assert_eq!(r.position(), p.offset + 1);
    log.close().await.unwrap();
    assert!(matches!(
        log.append(vec![rec("a", "{}".into())]).await,
        Err(LogError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projects_events_stay_in_order_in_one_partition() {
    let mock = cluster();
    let log = KafkaLog::open(config(mock.bootstrap_servers())).unwrap();
    for batch in 0..5 {
        let records: Vec<LogRecord> = (0..40)
            .map(|i| rec(&format!("p{}", i % 4), format!("{}", batch * 40 + i)))
            .collect();
        log.append(records).await.unwrap();
    }
    let entries = read_all(&log).await;
    assert_eq!(entries.len(), 200);
    let mut per_key: BTreeMap<Bytes, (Partition, Vec<u64>)> = BTreeMap::new();
    let mut sorted = entries.clone();
    sorted.sort_by_key(|e| (e.partition, e.offset));
    for e in sorted {
        let n: u64 = std::str::from_utf8(&e.value).unwrap().parse().unwrap();
        let slot = per_key
            .entry(e.key.clone())
            .or_insert((e.partition, vec![]));
        assert_eq!(slot.0, e.partition, "a key spans two partitions");
        slot.1.push(n);
    }
    assert_eq!(per_key.len(), 4);
    for (k, (_, ns)) in per_key {
        let mut s = ns.clone();
        s.sort_unstable();
        assert_eq!(ns, s, "key {k:?} out of order");
        assert_eq!(ns.len(), 50);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn brokers_down_is_unavailable_and_nothing_acknowledged_is_lost() {
    let mock = cluster();
    let log = KafkaLog::open(config(mock.bootstrap_servers())).unwrap();
    let mut acked: Vec<Bytes> = Vec::new();
    let first: Vec<LogRecord> = (0..30)
        .map(|i| rec(&format!("k{}", i % 5), format!("a{i}")))
        .collect();
    log.append(first.clone()).await.unwrap();
    acked.extend(first.iter().map(|r| r.value.clone()));

    for b in 1..=3 {
        mock.broker_down(b).unwrap();
    }
    let started = std::time::Instant::now();
    let err = log
        .append((0..10).map(|i| rec("k0", format!("down{i}"))).collect())
        .await
        .expect_err("append must fail while every broker is down");
    assert!(matches!(err, LogError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(20));
    for b in 1..=3 {
        mock.broker_up(b).unwrap();
    }

    // appends resume once the brokers are back
    let mut ok = false;
    for attempt in 0..20 {
        let batch: Vec<LogRecord> = (0..20)
            .map(|i| rec(&format!("k{}", i % 5), format!("b{attempt}-{i}")))
            .collect();
        if log.append(batch.clone()).await.is_ok() {
            acked.extend(batch.iter().map(|r| r.value.clone()));
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ok, "appends did not resume after the brokers came back");
    // give the watermark refresh a moment (failed batches may still land later)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let entries = read_all(&log).await;
    let values: Vec<&Bytes> = entries.iter().map(|e| &e.value).collect();
    for v in &acked {
        assert_eq!(
            values.iter().filter(|x| **x == v).count(),
            1,
            "acknowledged record {v:?} must be in the log exactly once (idempotent producer)"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_topic_or_no_broker_fails_to_open() {
    let mock = cluster();
    let mut c = config(mock.bootstrap_servers());
    c.topic = "nope".into();
    c.metadata_timeout = Duration::from_secs(3);
    assert!(matches!(KafkaLog::open(c), Err(LogError::Unavailable(_))));
    let mut c = config("127.0.0.1:1".into());
    c.metadata_timeout = Duration::from_secs(2);
    assert!(matches!(KafkaLog::open(c), Err(LogError::Unavailable(_))));
}

/// The same round trip against a real Kafka-protocol broker, when one is given:
/// `SHIPLOG_TEST_KAFKA=127.0.0.1:9092 cargo test -p shiplog-log --test kafka` (a fresh
/// topic of 3 partitions is created). Skipped otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn round_trip_against_a_real_broker_when_given() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let Ok(brokers) = std::env::var("SHIPLOG_TEST_KAFKA") else {
        eprintln!("SHIPLOG_TEST_KAFKA is not set: skipped");
        return;
    };
    let topic = format!(
        "shiplog-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r.iter().all(|t| t.is_ok()), "{r:?}");
    let mut c = config(brokers);
    c.topic = topic;
    c.settings
        .insert("message.timeout.ms".into(), "15000".into());
    let log = KafkaLog::open(c).unwrap();
    let records: Vec<LogRecord> = (0..30)
        .map(|i| rec(&format!("project-{}", i % 4), format!("{{\"n\":{i}}}")))
        .collect();
    let positions = log.append(records.clone()).await.unwrap();
    assert_eq!(positions.len(), 30);
    let entries = read_all(&log).await;
    assert_eq!(entries.len(), 30);
    for (r, pos) in records.iter().zip(&positions) {
        assert!(entries
            .iter()
            .any(|e| e.partition == pos.partition && e.offset == pos.offset && e.value == r.value));
    }
}

/// migrate-log's copy: every record of a file log lands in the topic once, keys and
/// values unchanged, and the report's count is the topic's growth.
#[tokio::test(flavor = "multi_thread")]
async fn copy_log_copies_a_file_log_record_for_record_and_verifies_the_count() {
    let mock = cluster();
    let kafka = KafkaLog::open(config(mock.bootstrap_servers())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = shiplog_log::SegmentedLog::open(
        dir.path(),
        shiplog_log::FileLogConfig {
            segment_bytes: 4096,
            ..Default::default()
        },
    )
    .unwrap();
    let records: Vec<LogRecord> = (0..300)
        .map(|i| rec(&format!("project-{}", i % 5), format!("{{\"n\":{i}}}")))
        .collect();
    file.append(records.clone()).await.unwrap();
    let mut copied_seen = 0;
    let report = shiplog_kafka::copy_log(&file, &kafka, &mut |p| {
        if let shiplog_kafka::MigrateProgress::Copied { copied, .. } = p {
            copied_seen = copied;
        }
    })
    .await
    .unwrap();
    assert_eq!(report.copied, 300);
    assert_eq!(copied_seen, 300);
    assert!(report.lost.is_empty());
    let mut got: Vec<(Bytes, Bytes)> = read_all(&kafka)
        .await
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    let mut want: Vec<(Bytes, Bytes)> = records.into_iter().map(|r| (r.key, r.value)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

/// A valid `check` event of about `pad` bytes (random letters: lz4 barely shrinks them).
fn big_event(i: u64, pad: usize, rng: &mut u64) -> String {
    let note: String = (0..pad)
        .map(|_| {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            (b'a' + (*rng % 26) as u8) as char
        })
        .collect();
    format!(
        r#"{{"id":"evt-{i:04}","kind":"check","source":"probe","received_at":"2026-11-20T10:{:02}:{:02}Z","project":"web","data":{{"name":"error_rate","value":0.02,"note":"{note}"}}}}"#,
        i / 60,
        i % 60
    )
}

/// The topic's retention moves a partition's start: `Log::start_offset` follows the low
/// watermark, a reader below it is `OutOfRange` with the real start and end (never a silent
/// skip), a reader at it reads on, and a replay keeps the Parquet rows below the start and
/// rebuilds the rest, each offset exactly once.
///
/// librdkafka's mock cluster has no DeleteRecords, but it is a broker with retention: a
/// partition keeps at most 5 MiB of message sets and drops the oldest beyond, moving the
/// low watermark as Kafka's `retention.bytes` does.
#[tokio::test(flavor = "multi_thread")]
async fn the_topics_retention_moves_the_start_and_replay_keeps_the_rows_below_it() {
    use shiplog_store::{replay, ParquetProjector, ProjectorConfig};
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, 1, 1).expect("create topic");
    let log = KafkaLog::open(config(mock.bootstrap_servers())).unwrap();
    assert_eq!(log.start_offset(0), 0);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = 0u64;
    let mut append = async |n: u64, rng: &mut u64| {
        for _ in 0..n {
            let value = big_event(next, 100_000, rng);
            log.append(vec![rec("web", value)]).await.unwrap();
            next += 1;
        }
    };

    // 45 events of 100 kB: under the partition's 5 MiB, all kept, all projected.
    append(45, &mut rng).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = ProjectorConfig::default();
    let first = replay(&log, dir.path(), &cfg, &mut |_| {}).await.unwrap();
    assert_eq!(first.events, 45);
    assert_eq!(first.kept, None);

    // 35 more: the oldest go.
    append(35, &mut rng).await;
    let end = 80;
    // The start as read after the last append: a refresh during the appends saw an
    // earlier one, so wait until two refreshes (every second) agree.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    let start = loop {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let now = log.start_offset(0);
        if now > 0 && now == seen {
            break now;
        }
        seen = now;
        assert!(
            std::time::Instant::now() < deadline,
            "the low watermark never settled (start {now}, end {})",
            log.end_offset(0)
        );
    };
    assert!(start > 0 && start < 45, "start {start}");
    assert_eq!(log.end_offset(0), end);

    // Below the start: out of range, with where the partition holds records now.
    match log.reader(0, 3) {
        Err(LogError::OutOfRange {
            offset,
            start: s,
            end: e,
        }) => assert_eq!((offset, s, e), (3, start, end)),
        Err(e) => panic!("reading below the start: {e}"),
        Ok(_) => panic!("a reader below the start must be OutOfRange"),
    }
    // At the start: every record from there, in order.
    let mut r = log.reader(0, start).unwrap();
    let mut offsets = Vec::new();
    while r.position() < end {
        assert!(std::time::Instant::now() < deadline + Duration::from_secs(20));
        for e in r
            .next_batch(100, 16 << 20, Duration::from_millis(500))
            .await
            .unwrap()
        {
            assert!(std::str::from_utf8(&e.value)
                .unwrap()
                .contains(&format!("\"evt-{:04}\"", e.offset)));
            offsets.push(e.offset);
        }
    }
    assert_eq!(offsets, (start..end).collect::<Vec<_>>());

    // Replay keeps the rows below the start (their events are gone from Kafka) and
    // rebuilds the rest: every offset once, none missing.
    let again = replay(&log, dir.path(), &cfg, &mut |_| {}).await.unwrap();
    let kept = again.kept.expect("rows below the start kept");
    assert_eq!(kept.rows, start, "{kept:?}");
    assert_eq!(again.events, end - start);
    let p = ParquetProjector::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(p.next_offset(0), end);
    let audit = p.audit_offsets().unwrap();
    assert!(
        audit.gaps.is_empty() && audit.duplicates.is_empty() && audit.beyond == 0,
        "{audit:?}"
    );
    assert!(p.coverage().unwrap().is_consistent());
}

/// A reader made while the start it knew was still 0 finds its offset deleted when it
/// reads: `OutOfRange` from `next_batch`, with the start read again then (or from
/// `reader` itself when the background refresh got there first). Either way no record
/// below the start is returned and nothing is skipped silently.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_that_finds_its_offset_deleted_is_out_of_range_with_the_new_start() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, 1, 1).expect("create topic");
    let log = KafkaLog::open(config(mock.bootstrap_servers())).unwrap();
    let mut rng = 7u64;
    for i in 0..80 {
        log.append(vec![rec("web", big_event(i, 100_000, &mut rng))])
            .await
            .unwrap();
    }
    // Straight away, before the refresh a second later may have read the new start.
    let outcome: Result<(), LogError> = match log.reader(0, 0) {
        Err(e) => Err(e),
        Ok(mut r) => {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no error reading offset 0"
                );
                match r
                    .next_batch(100, 16 << 20, Duration::from_millis(500))
                    .await
                {
                    Ok(batch) => assert!(batch.is_empty(), "offset 0 is deleted: {batch:?}"),
                    Err(e) => break Err(e),
                }
            }
        }
    };
    let start = log.start_offset(0);
    assert!(start > 0);
    match outcome {
        Err(LogError::OutOfRange {
            offset: 0,
            start: s,
            end: e,
        }) => {
            assert_eq!(s, start);
            assert_eq!(e, 80);
        }
        other => panic!("expected OutOfRange at offset 0, got {other:?}"),
    }
}
