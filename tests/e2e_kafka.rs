//! End-to-end test of the Kafka backend against the real binary and librdkafka's mock
//! cluster (started in this test process; the servers connect to its bootstrap address):
//! two ingest nodes, one processor, one web node over the processor's Parquet directory.
//! The same event posted to both ingest nodes lands once; brokers down → 503 + Retry-After
//! and nothing acknowledged is lost; the processor killed (SIGKILL) and restarted resumes
//! with neither duplicates nor gaps; roles other than `all` refuse the file log.

mod support;

use rdkafka::mocking::MockCluster;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::{event, get_text, http, query, TestServer, BIN};

const KINDS: [&str; 5] = ["build", "deploy", "migration", "api_cost", "check"];

fn kafka_env(brokers: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SHIPLOG_LOG__BACKEND", "kafka".into()),
        ("SHIPLOG_LOG__BROKERS", brokers.into()),
        ("SHIPLOG_LOG__TOPIC", "shiplog.events".into()),
        // pass-through librdkafka setting (`_` reads as `.`): fail fast when brokers are down
        ("SHIPLOG_LOG__KAFKA__MESSAGE_TIMEOUT_MS", "3000".into()),
        ("SHIPLOG_PROJECTION__FLUSH_INTERVAL", "200ms".into()),
    ]
}

fn spawn(dir: &std::path::Path, role: &str, env: &[(&'static str, String)]) -> TestServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestServer::spawn_env(dir, &["--role", role], &env)
}

async fn post(client: &reqwest::Client, url: &str, events: &[Value]) -> reqwest::Response {
    client
        .post(format!("{url}/v1/events"))
        .json(&json!(events))
        .send()
        .await
        .unwrap()
}

/// Posts until acknowledged (a 503 is retried with the same ids, as a client does).
async fn post_ok(client: &reqwest::Client, url: &str, events: &[Value]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = post(client, url, events).await;
        if r.status().is_success() {
            return;
        }
        assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
        assert!(Instant::now() < deadline, "ingest kept answering 503");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The ids in the `events` view (with repeats).
async fn ids(client: &reqwest::Client, url: &str) -> Vec<String> {
    query(client, url, "SELECT id FROM events ORDER BY id")
        .await
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

async fn wait_for_ids(client: &reqwest::Client, url: &str, want: &BTreeSet<String>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = ids(client, url).await;
        let set: BTreeSet<String> = got.iter().cloned().collect();
        if want.is_subset(&set) || Instant::now() > deadline {
            // a little longer, so that a duplicate would have time to show up too
            tokio::time::sleep(Duration::from_millis(800)).await;
            return ids(client, url).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn batch(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            event(
                KINDS[i % KINDS.len()],
                "e2e",
                &format!("{prefix}-{i:04}"),
                &format!("project-{}", i % 7),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ingest_nodes_one_processor_one_web_node_over_kafka() {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("shiplog.events", 3, 1).unwrap();
    let env = kafka_env(&mock.bootstrap_servers());
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let client = http();

    let mut processor = spawn(&shared, "process", &env);
    // a second processor on the same directory waits as a standby
    let standby = spawn(&shared, "process", &env);
    let web = spawn(&shared, "web", &env);
    let ingest_a = spawn(&dir.path().join("ingest-a"), "ingest", &env);
    let ingest_b = spawn(&dir.path().join("ingest-b"), "ingest", &env);

    // nodes refuse what their role does not do
    let r = post(&client, &processor.url, &batch("nope", 1)).await;
    assert_eq!(r.status(), 404);
    let r = post(&client, &web.url, &batch("nope", 1)).await;
    assert_eq!(r.status(), 404);
    let r = client
        .get(format!("{}/healthz", processor.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let mut acked: BTreeSet<String> = BTreeSet::new();
    // 1. round trip through both ingest nodes
    for (url, prefix) in [(&ingest_a.url, "a"), (&ingest_b.url, "b")] {
        let evs = batch(prefix, 60);
        let r = post(&client, url, &evs).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        acked.extend(evs.iter().map(|e| e["id"].as_str().unwrap().to_string()));
    }
    // 2. the same event to both ingest nodes (a client retry against another node)
    let dup = vec![event("deploy", "e2e", "dup-1", "web")];
    for url in [&ingest_a.url, &ingest_b.url] {
        let r = post(&client, url, &dup).await;
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["accepted"], 1,
            "each node dedups only in its own memory"
        );
    }
    acked.insert("dup-1".into());
    let got = wait_for_ids(&client, &web.url, &acked).await;
    let set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(set, acked, "every acknowledged event is queryable");
    assert_eq!(got.len(), acked.len(), "no event is projected twice");
    let rows = query(
        &client,
        &web.url,
        "SELECT count(*) FROM deploys WHERE id = 'dup-1'",
    )
    .await;
    assert_eq!(rows[0][0], 1);
    let m = get_text(&client, &format!("{}/metrics", processor.url)).await;
    assert!(
        m.contains("shiplog_projection_duplicates_dropped_total 1"),
        "{m}"
    );

    // 3. brokers down: 503 + Retry-After; then up again, nothing acknowledged is lost
    for b in 1..=3 {
        mock.broker_down(b).unwrap();
    }
    let down = batch("down", 5);
    let r = post(&client, &ingest_a.url, &down).await;
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
    assert!(r.headers().contains_key("retry-after"));
    for b in 1..=3 {
        mock.broker_up(b).unwrap();
    }
    // the client retries (the same ids) until acknowledged
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = post(&client, &ingest_a.url, &down).await;
        if r.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingest did not recover: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    acked.extend(down.iter().map(|e| e["id"].as_str().unwrap().to_string()));

    let m = get_text(&client, &format!("{}/metrics", standby.url)).await;
    assert!(m.contains("shiplog_projection_standby 1"), "{m}");

    // 4. the processor killed (SIGKILL) while events flow: the standby takes over; the
    //    killed one restarted becomes the standby
    let more = batch("k", 200);
    for chunk in more.chunks(20) {
        post_ok(&client, &ingest_b.url, chunk).await;
    }
    processor.kill9();
    acked.extend(more.iter().map(|e| e["id"].as_str().unwrap().to_string()));
    let after = batch("after", 40);
    post_ok(&client, &ingest_a.url, &after).await;
    acked.extend(after.iter().map(|e| e["id"].as_str().unwrap().to_string()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = get_text(&client, &format!("{}/metrics", standby.url)).await;
        if m.contains("shiplog_projection_rows_written_total") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not take over: {m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let restarted = spawn(&shared, "process", &env);

    let got = wait_for_ids(&client, &web.url, &acked).await;
    let m = get_text(&client, &format!("{}/metrics", restarted.url)).await;
    assert!(
        m.contains("shiplog_projection_standby 1"),
        "the restarted processor is the standby: {m}"
    );
    let set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(set, acked, "no gap after the restart");
    assert_eq!(got.len(), acked.len(), "no duplicate after the restart");
    // every partition is used and offsets are unique per partition
    let rows = query(
        &client,
        &web.url,
        "SELECT count(DISTINCT _partition), count(*) = count(DISTINCT (_partition, _offset)) FROM events",
    )
    .await;
    assert_eq!(rows[0][0], 3);
    assert_eq!(rows[0][1], true);

    // 5. `shiplog replay` rebuilds the projection from the topic (processors stopped)
    let (mut standby, mut restarted) = (standby, restarted);
    standby.stop();
    restarted.stop();
    let out = std::process::Command::new(BIN)
        .arg("replay")
        .arg("--data-dir")
        .arg(&shared)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = ids(&client, &web.url).await;
    let set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(set, acked, "replay rebuilt every event");
    assert_eq!(got.len(), acked.len(), "replay dedups too");
}

#[test]
fn roles_other_than_all_refuse_the_file_log() {
    let dir = tempfile::tempdir().unwrap();
    for role in ["ingest", "process", "web"] {
        let out = std::process::Command::new(BIN)
            .args([
                "serve",
                "--role",
                role,
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("kafka") && err.contains(role), "{err}");
    }
}

async fn metric(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    let m = get_text(client, &format!("{url}/metrics")).await;
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Two processors in a consumer group share six partitions: a second processor joins
/// (rebalance), then the first is killed mid-batch (rebalance after its session times
/// out); every acknowledged event is queryable exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processors_share_partitions_in_a_consumer_group() {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("shiplog.events", 6, 1).unwrap();
    let mut env = kafka_env(&mock.bootstrap_servers());
    env.push(("SHIPLOG_LOG__CONSUMER_GROUP", "shiplog-processors".into()));
    env.push(("SHIPLOG_LOG__KAFKA__SESSION_TIMEOUT_MS", "6000".into()));
    env.push(("SHIPLOG_LOG__KAFKA__HEARTBEAT_INTERVAL_MS", "500".into()));
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let client = http();

    let mut p1 = spawn(&shared, "process", &env);
    let web = spawn(&shared, "web", &env);
    let ingest = spawn(&dir.path().join("ingest"), "ingest", &env);
    let mut acked: BTreeSet<String> = BTreeSet::new();
    fn send(acked: &mut BTreeSet<String>, evs: Vec<Value>) -> Vec<Value> {
        acked.extend(evs.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        evs
    }

    let evs = send(&mut acked, batch("g1", 120));
    post_ok(&client, &ingest.url, &evs).await;
    let got = wait_for_ids(&client, &web.url, &acked).await;
    assert_eq!(got.len(), acked.len());

    // a second processor joins: the partitions are shared
    let p2 = spawn(&shared, "process", &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    loop {
        round += 1;
        let evs = send(&mut acked, batch(&format!("g2-{round}"), 60));
        post_ok(&client, &ingest.url, &evs).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if metric(&client, &p2.url, "shiplog_projection_rows_written_total").await > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second processor never got partitions"
        );
    }
    let got = wait_for_ids(&client, &web.url, &acked).await;
    assert_eq!(
        got.iter().cloned().collect::<BTreeSet<_>>(),
        acked,
        "no gap after the rebalance"
    );
    assert_eq!(got.len(), acked.len(), "no duplicate after the rebalance");

    // the first processor killed mid-batch: its partitions move to the second one
    let evs = send(&mut acked, batch("g3", 200));
    for chunk in evs.chunks(20) {
        post_ok(&client, &ingest.url, chunk).await;
    }
    p1.kill9();
    let evs = send(&mut acked, batch("g4", 60));
    post_ok(&client, &ingest.url, &evs).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = wait_for_ids(&client, &web.url, &acked).await;
        if got.len() >= acked.len() || Instant::now() > deadline {
            break got;
        }
    };
    assert_eq!(
        got.iter().cloned().collect::<BTreeSet<_>>(),
        acked,
        "no gap after the kill"
    );
    assert_eq!(got.len(), acked.len(), "no duplicate after the kill");
    assert!(shared
        .join("parquet/_partitions/p0/parquet/_state.json")
        .exists());
}

/// `shiplog migrate-log --to kafka` copies an embedded log into the topic and verifies the
/// count; a Kafka node then projects every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_log_copies_the_embedded_log_into_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    let client = http();
    let mut server = TestServer::spawn(&old, &[]);
    let evs = batch("m", 150);
    for chunk in evs.chunks(50) {
        post_ok(&client, &server.url, chunk).await;
    }
    server.stop();

    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("shiplog.events", 3, 1).unwrap();
    let env = kafka_env(&mock.bootstrap_servers());
    let out = std::process::Command::new(BIN)
        .args(["migrate-log", "--to", "kafka", "--data-dir"])
        .arg(&old)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("150 records copied to Kafka and verified"),
        "{err}"
    );

    let node = spawn(&dir.path().join("new"), "all", &env);
    let want: BTreeSet<String> = evs
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let got = wait_for_ids(&client, &node.url, &want).await;
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(got.len(), want.len());
}

/// A team's own producer writes straight to the topic: its valid events are projected,
/// its invalid ones are kept aside in `parquet/_deadletter/` (with the offending field)
/// and counted in `/metrics`, never dropped silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_another_producer_are_validated_and_invalid_ones_kept_aside() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("shiplog.events", 1, 1).unwrap();
    let env = kafka_env(&mock.bootstrap_servers());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = spawn(&data, "all", &env);
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    let good = event("deploy", "team-producer", "tp-1", "web");
    let mut bad = event("build", "team-producer", "tp-2", "web");
    bad["data"]["success"] = json!("yes");
    for v in [good, bad] {
        let payload = v.to_string();
        producer
            .send(
                FutureRecord::to("shiplog.events")
                    .key("web")
                    .payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = query(&client, &server.url, "SELECT id FROM deploys").await;
        let dead = std::fs::read_dir(data.join("parquet/_deadletter"))
            .map(|d| d.count())
            .unwrap_or(0);
        if rows.len() == 1 && dead == 1 {
            assert_eq!(rows[0][0], "tp-1");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deploys {rows:?}, dead-letter files {dead}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let file = std::fs::read_dir(data.join("parquet/_deadletter"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        line["error"].as_str().unwrap().contains("/data/success"),
        "{line}"
    );
    assert!(line["value"].as_str().unwrap().contains("tp-2"));
    let rows = query(&client, &server.url, "SELECT count(*) FROM builds").await;
    assert_eq!(rows[0][0], 0);
    let metrics = get_text(&client, &format!("{}/metrics", server.url)).await;
    assert!(
        metrics.contains("shiplog_projection_events_skipped_total 1"),
        "{metrics}"
    );
}
