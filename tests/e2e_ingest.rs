//! End-to-end tests of ingest against the real binary: the durability promise under
//! SIGKILL, the HTTP contract, auth and the loopback rule.

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{event, get_json, get_text, http, log_segments, TestServer, BIN};

const KINDS: [&str; 5] = ["build", "deploy", "migration", "api_cost", "check"];

/// 8 concurrent clients post batches; the server is SIGKILLed mid-stream and restarted,
/// three times. Every event that got a 2xx is in the log exactly once (re-posting all of
/// them returns them all as duplicates), and the log holds no event twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acked: Arc<Mutex<Vec<Value>>> = Arc::default();
    let client = http();

    for round in 0..3 {
        let mut server = TestServer::spawn(&data, &[]);
        let url = format!("{}/v1/events", server.url);
        let mut tasks = Vec::new();
        for c in 0..8 {
            let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    let batch: Vec<Value> = (0..25)
                        .map(|i| {
                            let id = format!("r{round}-c{c}-{n}-{i}");
                            event(
                                KINDS[(n as usize + i) % 5],
                                &format!("client-{c}"),
                                &id,
                                "web",
                            )
                        })
                        .collect();
                    n += 1;
                    match client.post(&url).json(&batch).send().await {
                        Ok(r) if r.status().is_success() => {
                            let body: Value = r.json().await.unwrap();
                            assert_eq!(body["accepted"], 25, "{body}");
                            acked.lock().unwrap().extend(batch);
                        }
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        // The server died: this batch's fate is unknown, stop.
                        Err(_) => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(700 + 400 * round)).await;
        server.kill9();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "too few events acknowledged: {}",
        acked.len()
    );

    // Restart: every acknowledged event is a duplicate now.
    let mut server = TestServer::spawn(&data, &[]);
    let url = format!("{}/v1/events", server.url);
    let mut duplicates = 0;
    for chunk in acked.chunks(500) {
        let r = client.post(&url).json(&chunk).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["accepted"], 0,
            "an acknowledged event was lost: {body}"
        );
        duplicates += body["duplicates"].as_u64().unwrap();
    }
    assert_eq!(duplicates as usize, acked.len());
    assert_eq!(server.stop(), Some(0), "{}", server.stderr());

    // The log itself: every acknowledged event exactly once, nothing twice.
    let (log, _) = shiplog_log::file::SegmentedLog::open(
        &data.join("log"),
        shiplog_log::file::FileLogConfig::default(),
    )
    .unwrap();
    use shiplog_log::Log;
    let end = log.end_offset(0);
    let mut reader = log.reader(0, 0).unwrap();
    let mut seen: HashMap<(String, String), u32> = HashMap::new();
    while reader.position() < end {
        for e in reader
            .next_batch(10_000, 16 << 20, Duration::from_secs(1))
            .await
            .unwrap()
        {
            let v: Value = serde_json::from_slice(&e.value).unwrap();
            let key = (
                v["source"].as_str().unwrap().to_string(),
                v["id"].as_str().unwrap().to_string(),
            );
            *seen.entry(key).or_default() += 1;
        }
    }
    assert!(seen.values().all(|n| *n == 1), "an event is stored twice");
    for e in &acked {
        let key = (
            e["source"].as_str().unwrap().to_string(),
            e["id"].as_str().unwrap().to_string(),
        );
        assert!(
            seen.contains_key(&key),
            "acknowledged event {key:?} missing"
        );
    }
    eprintln!(
        "acknowledged {} events over 3 SIGKILLs; log holds {} events",
        acked.len(),
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_http_contract() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::spawn(&dir.path().join("data"), &[]);
    let url = format!("{}/v1/events", server.url);
    let client = http();

    // One object: 202.
    let r = client
        .post(&url)
        .json(&event("build", "vite-plugin", "b-1", "web"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"accepted": 1, "duplicates": 0, "rejected": []})
    );

    // A retry is a duplicate, stored once.
    let r = client
        .post(&url)
        .json(&event("build", "vite-plugin", "b-1", "web"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["duplicates"], 1);
    assert_eq!(body["accepted"], 0);

    // Mixed batch: 207 with the bad field named.
    let mut bad = event("build", "vite-plugin", "b-2", "web");
    bad["data"]["duration_ms"] = json!(-5);
    let batch = json!([event("deploy", "ci/github", "d-1", "web"), bad, {"kind": "check"}]);
    let r = client.post(&url).json(&batch).send().await.unwrap();
    assert_eq!(r.status(), 207);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 1);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], 1);
    assert_eq!(rejected[0]["field"], "/data/duration_ms");
    assert_eq!(rejected[1]["index"], 2);
    assert!(!rejected[1]["error"].as_str().unwrap().is_empty());

    // Nothing valid: 400. Collectors may not write decisions.
    let mut decision = event("check", "x", "dec-1", "web");
    decision["kind"] = json!("decision");
    decision["data"] = json!({"rule": "r", "verdict": "alert"});
    let r = client
        .post(&url)
        .json(&json!([decision]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["rejected"][0]["field"], "/kind");

    // NDJSON, gzip.
    let nd = format!(
        "{}\n{}\n",
        event("check", "probe", "c-1", "web"),
        event("api_cost", "app", "a-1", "web")
    );
    let gz = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(nd.as_bytes()).unwrap();
        enc.finish().unwrap()
    };
    let r = client
        .post(&url)
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(gz)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 2);

    // CloudEvents, structured and batch.
    let ce = json!({"specversion": "1.0", "type": "dev.shiplog.deploy.v1", "source": "ci/gitlab",
        "id": "ce-1", "time": "2026-11-20T10:00:00Z", "project": "web", "env": "production",
        "data": {"status": "started"}});
    let r = client
        .post(&url)
        .header("content-type", "application/cloudevents+json")
        .body(ce.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let mut ce2 = ce.clone();
    ce2["id"] = json!("ce-2");
    let r = client
        .post(&url)
        .header("content-type", "application/cloudevents-batch+json")
        .body(json!([ce, ce2]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(1), Some(1))
    );

    // 415, 413, 400.
    let r = client
        .post(&url)
        .header("content-type", "text/xml")
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // A Content-Type that is not text is no type we know either (not "absent", read as JSON).
    let r = client
        .post(&url)
        .header(
            "content-type",
            reqwest::header::HeaderValue::from_bytes(b"application/json\xff").unwrap(),
        )
        .body(serde_json::to_vec(&event("check", "ct", "ct-1", "web")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let big = vec![b' '; 11 << 20];
    // The server closes a connection whose body it refused to read: use its own client.
    let r = http()
        .post(&url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("JSON"));

    // Health and metrics.
    let h: Value = get_json(&client, &format!("{}/healthz", server.url)).await;
    assert_eq!(h["status"], "ok");
    let m = get_text(&client, &format!("{}/metrics", server.url)).await;
    for series in [
        "shiplog_events_accepted_total 6",
        "shiplog_events_duplicate_total 2",
        "shiplog_events_rejected_total 3",
        "shiplog_log_append_seconds_bucket",
        "shiplog_log_bytes",
    ] {
        assert!(m.contains(series), "missing {series} in\n{m}");
    }
    assert_eq!(server.stop(), Some(0), "SIGTERM must exit cleanly");
    assert!(server.stderr().contains("stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_and_the_loopback_rule() {
    let dir = tempfile::tempdir().unwrap();
    // No tokens: refuses a non-loopback address with a clear message.
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("open"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no tokens are configured") && err.contains("loopback"),
        "{err}"
    );

    let cfg = dir.path().join("shiplog.toml");
    std::fs::write(
        &cfg,
        r#"
[[tokens]]
name = "ci"
secret = "ingest-token-0123456789"
scopes = ["ingest"]
projects = ["web"]

[[tokens]]
name = "pm"
secret_env = "TEST_READ_TOKEN"
scopes = ["read"]
"#,
    )
    .unwrap();
    let mut server = TestServer::spawn_env(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
        &[("TEST_READ_TOKEN", "read-token-0123456789")],
    );
    let url = format!("{}/v1/events", server.url);
    let client = http();
    let ev = event("build", "vite-plugin", "t-1", "web");
    let r = client.post(&url).json(&ev).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(&url)
        .bearer_auth("read-token-0123456789")
        .json(&ev)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(&url)
        .bearer_auth("ingest-token-0123456789")
        .json(&json!([ev, event("build", "vite-plugin", "t-2", "other")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["field"], "/project");
    server.stop();
    let log = server.stderr();
    assert!(!log.contains("ingest-token-0123456789") && !log.contains("read-token"));
}

/// `shiplog log verify` finds a corrupt byte in the middle of a sealed segment and names
/// the segment and the byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_verify_names_a_corrupt_byte_in_a_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = TestServer::spawn_env(&data, &[], &[("SHIPLOG_LOG__SEGMENT_BYTES", "65536")]);
    let client = http();
    for b in 0..10 {
        let batch: Vec<Value> = (0..100)
            .map(|i| event(KINDS[i % 5], "verify", &format!("v-{b}-{i}"), "web"))
            .collect();
        let r = client
            .post(format!("{}/v1/events", server.url))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    assert_eq!(server.stop(), Some(0));
    let verify = || {
        std::process::Command::new(BIN)
            .args(["log", "verify", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap()
    };
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains("clean"), "{text}");
    let segments = log_segments(&data);
    assert!(segments.len() >= 3, "{segments:?}");
    // Flip one byte in the middle of the first (sealed) segment.
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(first, bytes).unwrap();
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let name = first.file_name().unwrap().to_str().unwrap();
    assert!(text.contains("DAMAGED") && text.contains(name), "{text}");
    eprintln!("{text}");
}

/// A flood beyond the in-flight budget: the server answers 503 with Retry-After at once
/// instead of taking more memory, every 202 is durable exactly once, and ingest works
/// normally when the flood stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_is_shed_with_503_and_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 3 MB budget; each request below reserves about 2 x 450 KB.
    let mut server = TestServer::spawn_env(
        &data,
        &[],
        &[("SHIPLOG_SERVER__MAX_INFLIGHT_BYTES", "3000000")],
    );
    let url = format!("{}/v1/events", server.url);
    let client = http();
    let accepted = Arc::new(Mutex::new(0u64));
    let shed = Arc::new(Mutex::new(0u64));
    let mut tasks = Vec::new();
    for c in 0..24 {
        let (client, url, accepted, shed) =
            (client.clone(), url.clone(), accepted.clone(), shed.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..12 {
                let batch: Vec<Value> = (0..1000)
                    .map(|i| event(KINDS[i % 5], "flood", &format!("c{c}-{n}-{i}"), "web"))
                    .collect();
                let r = client.post(&url).json(&batch).send().await.unwrap();
                match r.status().as_u16() {
                    202 => {
                        let body: Value = r.json().await.unwrap();
                        assert_eq!(body["accepted"], 1000, "{body}");
                        *accepted.lock().unwrap() += 1000;
                    }
                    503 => {
                        let retry = r
                            .headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_string());
                        assert_eq!(retry.as_deref(), Some("1"));
                        let body: Value = r.json().await.unwrap();
                        assert!(
                            body["error"].as_str().unwrap().contains("at capacity"),
                            "{body}"
                        );
                        *shed.lock().unwrap() += 1;
                    }
                    s => panic!("unexpected status {s}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (accepted, shed) = (*accepted.lock().unwrap(), *shed.lock().unwrap());
    assert!(shed > 0, "no request was shed ({accepted} events accepted)");
    assert!(accepted > 0, "nothing was accepted");
    let metrics = get_text(&client, &format!("{}/metrics", server.url)).await;
    let series = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(series("shiplog_ingest_shed_total"), shed as f64);
    assert_eq!(series("shiplog_ingest_inflight_bytes"), 0.0);
    assert_eq!(series("shiplog_events_accepted_total"), accepted as f64);
    // After the flood, an ordinary request goes through.
    let r = client
        .post(&url)
        .json(&event("check", "flood", "after", "web"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    server.stop();
    // Every acknowledged event is in the log, once.
    let out = std::process::Command::new(BIN)
        .args(["log", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut server = TestServer::spawn(&data, &[]);
    let health: Value = get_json(&client, &format!("{}/healthz", server.url)).await;
    assert_eq!(health["log_records"], accepted + 1, "{health}");
    server.stop();
}
