//! Faults: `migrate-log` from a damaged log names what it cannot copy and fails unless the
//! loss is accepted.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use support::faults::*;
use support::{http, log_segments, TestServer, BIN};

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
