//! End-to-end test of the exactly-once projection against the real binary: events of every
//! kind from several clients, SIGKILL at random moments during ingest and projection
//! (several times), restart; per kind, the DuckDB rows are exactly the acknowledged events.
//! Then `shiplog replay` rebuilds them row for row.

mod support;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{event, http, query, TestServer, BIN};

const KINDS: [(&str, &str); 5] = [
    ("build", "builds"),
    ("deploy", "deploys"),
    ("migration", "migrations"),
    ("api_cost", "api_costs"),
    ("check", "checks"),
];

#[derive(Default)]
struct Ledger {
    /// Events acknowledged by a 2xx (accepted or duplicate).
    acked: Vec<Value>,
    /// Batches whose request failed (server killed): fate unknown until re-posted.
    unknown: Vec<Vec<Value>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_ingest_and_projection_then_replay() {
    let seed: u64 = std::env::var("SHIPLOG_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("seed {seed} (SHIPLOG_TEST_SEED to reproduce)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let client = http();

    for round in 0..4 {
        // A short flush interval so kills land during projection as well as ingest.
        let mut server = TestServer::spawn_env(
            &data,
            &[],
            &[("SHIPLOG_PROJECTION__FLUSH_INTERVAL", "150ms")],
        );
        let url = format!("{}/v1/events", server.url);
        let mut tasks = Vec::new();
        for c in 0..6 {
            let (client, url, ledger) = (client.clone(), url.clone(), ledger.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let batch: Vec<Value> = (0..20)
                        .map(|i| {
                            let (kind, _) = KINDS[(c + n + i) % 5];
                            let mut e = event(
                                kind,
                                &format!("client-{c}"),
                                &format!("r{round}-c{c}-{n}-{i}"),
                                ["web", "api"][i % 2],
                            );
                            e["time"] = json!(format!("2026-11-{:02}T10:00:00Z", 1 + (n + i) % 20));
                            e
                        })
                        .collect();
                    match client.post(&url).json(&batch).send().await {
                        Ok(r) if r.status().is_success() => {
                            ledger.lock().unwrap().acked.extend(batch)
                        }
                        Ok(r) => panic!("status {}", r.status()),
                        Err(_) => {
                            ledger.lock().unwrap().unknown.push(batch);
                            return;
                        }
                    }
                }
            }));
        }
        let life = rng.gen_range(300..1500);
        tokio::time::sleep(Duration::from_millis(life)).await;
        server.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        eprintln!("round {round}: killed after {life} ms");
    }

    // Restart; clients retry what they could not confirm, as real collectors do.
    let mut server = TestServer::spawn(&data, &[]);
    let url = format!("{}/v1/events", server.url);
    let unknown = std::mem::take(&mut ledger.lock().unwrap().unknown);
    for batch in unknown {
        let r = client.post(&url).json(&batch).send().await.unwrap();
        assert_eq!(r.status(), 202);
        ledger.lock().unwrap().acked.extend(batch);
    }
    let acked = std::mem::take(&mut ledger.lock().unwrap().acked);
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for e in &acked {
        let kind = e["kind"].as_str().unwrap();
        let view = KINDS.iter().find(|(k, _)| *k == kind).unwrap().1;
        let key = format!(
            "{}/{}",
            e["source"].as_str().unwrap(),
            e["id"].as_str().unwrap()
        );
        assert!(
            expected.entry(view).or_default().insert(key),
            "test sent a key twice"
        );
    }
    let total: usize = expected.values().map(|s| s.len()).sum();
    assert!(total > 500, "too few events acknowledged: {total}");

    // Wait until the projection caught up (freshness), then compare exactly.
    let started = Instant::now();
    loop {
        let rows = query(&client, &server.url, "SELECT count(*) FROM events").await;
        let n = rows[0][0].as_u64().unwrap() as usize;
        if n >= total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "projection stuck at {n}/{total}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let snapshot = |server_url: String| {
        let client = client.clone();
        async move {
            let mut views = BTreeMap::new();
            for (_, view) in KINDS {
                views.insert(
                    view,
                    query(
                        &client,
                        &server_url,
                        &format!("SELECT * FROM {view} ORDER BY _partition, _offset"),
                    )
                    .await,
                );
            }
            views
        }
    };
    for (_, view) in KINDS {
        let rows = query(
            &client,
            &server.url,
            &format!("SELECT source || '/' || id FROM {view}"),
        )
        .await;
        let got: Vec<String> = rows
            .iter()
            .map(|r| r[0].as_str().unwrap().to_string())
            .collect();
        let got_set: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(got.len(), got_set.len(), "{view}: duplicate rows");
        assert_eq!(
            got_set,
            expected.get(view).cloned().unwrap_or_default(),
            "{view}: rows differ from the acknowledged events"
        );
        eprintln!(
            "{view}: {} rows = {} acknowledged",
            got.len(),
            expected[view].len()
        );
    }
    // The rows carry the events' values.
    let rows = query(
        &client,
        &server.url,
        "SELECT count(*) FROM builds WHERE duration_ms <> 41000 OR bundle_bytes <> 812345 \
         OR phases[1].name <> 'transform' OR env <> 'production'",
    )
    .await;
    assert_eq!(rows[0][0], 0);
    let live = snapshot(server.url.clone()).await;
    assert_eq!(server.stop(), Some(0));

    // Replay rebuilds the same rows from the log.
    let out = std::process::Command::new(BIN)
        .args(["replay", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rebuilding the projections"), "{stderr}");
    let mut server = TestServer::spawn(&data, &[]);
    let replayed = snapshot(server.url.clone()).await;
    for (view, rows) in &live {
        assert_eq!(
            rows.len(),
            replayed[view].len(),
            "{view}: row count after replay"
        );
        assert!(rows == &replayed[view], "{view}: rows differ after replay");
    }
    server.stop();

    // An independent reader (pyarrow) opens every file with the documented columns.
    let counts: BTreeMap<&str, usize> = expected
        .iter()
        .map(|(view, ids)| (*view, ids.len()))
        .collect();
    read_with_pyarrow(&data.join("parquet"), &counts);
}

/// Reads every committed Parquet file with pyarrow (from `.venv-test`, made by
/// `scripts/setup-test-python.sh`) and checks the rows per kind and the columns.
fn read_with_pyarrow(parquet_dir: &std::path::Path, expected: &BTreeMap<&str, usize>) {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-test/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-test-python.sh (make test does)",
        python.display()
    );
    let script = r#"
import sys, json, glob, os
import pyarrow.parquet as pq
root = sys.argv[1]
out = {}
for kind in sorted(os.listdir(root)):
    files = glob.glob(os.path.join(root, kind, "date=*", "*.parquet"))
    if not files:
        continue
    rows, cols = 0, None
    for f in files:
        t = pq.read_table(f)
        rows += t.num_rows
        cols = t.schema.names
    out[kind] = {"rows": rows, "files": len(files), "columns": cols}
print(json.dumps(out))
"#;
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(parquet_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (kind, view) in KINDS {
        let n = expected.get(view).copied().unwrap_or(0);
        assert_eq!(
            got[kind]["rows"].as_u64().unwrap_or(0) as usize,
            n,
            "pyarrow rows of {kind}"
        );
        let cols: Vec<&str> = got[kind]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        for c in [
            "time",
            "received_at",
            "id",
            "source",
            "project",
            "env",
            "commit",
            "deployment_id",
            "extra",
            "_partition",
            "_offset",
        ] {
            assert!(cols.contains(&c), "{kind}: column {c} missing in {cols:?}");
        }
        eprintln!(
            "pyarrow: {kind}: {} rows in {} files",
            got[kind]["rows"], got[kind]["files"]
        );
    }
    let build_cols = got["build"]["columns"].as_array().unwrap();
    for c in ["duration_ms", "phases", "chunks", "bundle_bytes", "ci"] {
        assert!(build_cols.iter().any(|x| x == c), "build.{c} missing");
    }
}
