//! `shiplog bench ingest`: ingest throughput with durable acknowledgement, against a no-op
//! axum server that reads and discards the body, under the same load in the same run.
//!
//! Both servers run in this process on loopback; the load generator (N connections, each
//! posting as fast as it is answered) shares the machine with them, equally for both.

use anyhow::{ensure, Result};
use axum::routing::post;
use axum::Router;
use shiplog_log::file::{FileLogConfig, SegmentedLog};
use shiplog_log::Log;
use shiplog_web::ingest::Ingestor;
use shiplog_web::metrics::Metrics;
use shiplog_web::{router, AppState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct IngestBenchArgs {
    pub connections: usize,
    pub seconds: f64,
    pub batch_sizes: Vec<usize>,
    /// Run shiplog on the Kafka backend against librdkafka's in-process mock cluster
    /// (3 brokers, a topic of 3 partitions) instead of the embedded file log.
    pub kafka_mock: bool,
}

/// One realistic event (~450 bytes of JSON) with a unique id.
pub fn sample_event(run: u64, n: u64) -> String {
    let kind = n % 5;
    let data = match kind {
        0 => {
            r#"{"tool":"vite","tool_version":"8.3.4","mode":"production","success":true,"duration_ms":41200,"phases":[{"name":"transform","duration_ms":30100},{"name":"render","duration_ms":8000}],"modules_transformed":1234,"bundle_bytes":812345,"gzip_bytes":245000,"chunks":[{"name":"index","bytes":500000,"gzip_bytes":150000}]}"#
        }
        1 => {
            r#"{"status":"succeeded","url":"https://web-app-3f2a9c1.vercel.app","provider":"vercel","previous_deployment_id":"dpl_122","duration_ms":52000,"triggered_by":"ci"}"#
        }
        2 => {
            r#"{"tool":"alembic","database":"main","version":"20261120_01","name":"add_index","status":"applied","duration_ms":1200}"#
        }
        3 => {
            r#"{"provider":"openai","model":"gpt-4o-mini","input_tokens":1200,"output_tokens":310,"cached_tokens":0,"requests":1,"feature":"summaries"}"#
        }
        _ => r#"{"name":"error_rate","value":0.012,"unit":"ratio","passed":true}"#,
    };
    let kind = ["build", "deploy", "migration", "api_cost", "check"][kind as usize];
    format!(
        r#"{{"id":"bench-{run}-{n}","kind":"{kind}","source":"bench","time":"2026-11-20T10:00:00Z","project":"web-app","env":"production","commit":"3f2a9c1e","branch":"main","deployment_id":"dpl_123","data":{data}}}"#
    )
}

/// A request body built once, whose event ids are patched in place per request, so the
/// load generator spends almost no CPU (it shares the machine with the servers).
pub(crate) struct BodyTemplate {
    bytes: Vec<u8>,
    /// Byte positions of each event's 12-digit sequence number.
    id_digits: Vec<usize>,
}

const ID_WIDTH: usize = 12;

impl BodyTemplate {
    pub(crate) fn new(run: u64, batch: usize) -> Self {
        let mut bytes = Vec::new();
        let mut id_digits = Vec::new();
        if batch > 1 {
            bytes.push(b'[');
        }
        for i in 0..batch as u64 {
            if i > 0 {
                bytes.push(b',');
            }
            let marker = 999_999_999_900 + i;
            let ev = sample_event(run, marker);
            let at = ev.find(&marker.to_string()).expect("id in event");
            id_digits.push(bytes.len() + at);
            bytes.extend_from_slice(ev.as_bytes());
        }
        if batch > 1 {
            bytes.push(b']');
        }
        BodyTemplate { bytes, id_digits }
    }

    pub(crate) fn render(&self, first: u64) -> Vec<u8> {
        let mut out = self.bytes.clone();
        for (i, &at) in self.id_digits.iter().enumerate() {
            let mut n = first + i as u64;
            for d in out[at..at + ID_WIDTH].iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        out
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `shiplog bench decode`: per-event CPU time of turning a request body into log records,
/// through the canonical path and through the fast path, on the ingest benchmark's events.
pub fn decode(batch: usize, seconds: f64) -> Result<()> {
    use shiplog_web::decode::{decode_body, BodyFormat};
    ensure!(batch > 0, "--batch must be at least 1");
    let body = BodyTemplate::new(1, batch).render(0);
    let now = chrono::Utc::now();
    type Path = fn(&[u8], &chrono::DateTime<chrono::Utc>) -> usize;
    let canonical: Path = |body, now| {
        let value: serde_json::Value = serde_json::from_slice(body).expect("bench body is JSON");
        let items = match value {
            serde_json::Value::Array(items) => items,
            v => vec![v],
        };
        let mut bytes = 0;
        for v in items {
            let mut e = shiplog_events::Event::from_json(v, shiplog_events::Origin::Collector)
                .expect("bench events are valid");
            e.received_at = Some(*now);
            bytes += e.to_json_bytes().len();
        }
        bytes
    };
    let fast: Path = |body, now| {
        let now = shiplog_events::Stamp::new(*now);
        decode_body(BodyFormat::Json, body)
            .expect("bench body decodes")
            .into_iter()
            .map(|r| r.expect("bench events are valid").into_record(&now).len())
            .sum()
    };
    println!(
        "decode benchmark: {batch} events per body ({} bytes), one thread, CPU time",
        body.len()
    );
    println!(
        "{:>12} {:>12} {:>12} {:>10}",
        "path", "ns/event", "MB/s", "records"
    );
    let mut per_event = Vec::new();
    for (name, f) in [("canonical", canonical), ("fast", fast)] {
        let (start, mut bodies, mut out) = (thread_cpu(), 0u64, 0usize);
        while (thread_cpu() - start).as_secs_f64() < seconds {
            out += f(&body, &now);
            bodies += 1;
        }
        let cpu = (thread_cpu() - start).as_secs_f64();
        let ns = cpu * 1e9 / (bodies as f64 * batch as f64);
        let mbs = bodies as f64 * body.len() as f64 / cpu / 1e6;
        println!(
            "{name:>12} {ns:>12.0} {mbs:>12.0} {:>10}",
            out / bodies as usize
        );
        per_event.push(ns);
    }
    println!(
        "fast path: {:.2}x the canonical path's speed",
        per_event[0] / per_event[1]
    );
    Ok(())
}

pub(crate) struct Load {
    pub(crate) events: u64,
    pub(crate) requests: u64,
    pub(crate) elapsed: Duration,
}

/// Posts bodies of `batch` events (ids of `run`) on `connections` connections, each as
/// fast as it is answered, for `seconds`; every request must succeed.
pub(crate) async fn drive(
    url: &str,
    connections: usize,
    batch: usize,
    seconds: f64,
    run: u64,
) -> Result<Load> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let events = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url) = (client.clone(), url.to_string());
        let (next, events, requests, stop, errors) = (
            next.clone(),
            events.clone(),
            requests.clone(),
            stop.clone(),
            errors.clone(),
        );
        let template = BodyTemplate::new(run, batch);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let first = next.fetch_add(batch as u64, Relaxed);
                let body = template.render(first);
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        events.fetch_add(batch as u64, Relaxed);
                        requests.fetch_add(1, Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Relaxed);
    let elapsed = start.elapsed();
    for t in tasks {
        t.await?;
    }
    ensure!(
        errors.load(Relaxed) == 0,
        "{} requests failed",
        errors.load(Relaxed)
    );
    Ok(Load {
        events: events.load(Relaxed),
        requests: requests.load(Relaxed),
        elapsed,
    })
}

async fn spawn(app: Router) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/v1/events"))
}

pub async fn ingest(args: IngestBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut _mock = None;
    let log: Arc<dyn Log> = if args.kafka_mock {
        let mock = rdkafka::mocking::MockCluster::new(3)?;
        mock.create_topic(shiplog_kafka::DEFAULT_TOPIC, 3, 1)?;
        let kc = shiplog_kafka::KafkaLogConfig::new(mock.bootstrap_servers());
        _mock = Some(mock);
        Arc::new(tokio::task::spawn_blocking(move || shiplog_kafka::KafkaLog::open(kc)).await??)
    } else {
        let (log, _) = SegmentedLog::open(&dir.path().join("log"), FileLogConfig::default())?;
        Arc::new(log)
    };
    let metrics = Arc::new(Metrics::default());
    let ingestor = Arc::new(Ingestor::new(
        log.clone(),
        Duration::from_secs(7 * 86400),
        metrics.clone(),
    ));
    let state = Arc::new(AppState {
        ingestor,
        auth: Default::default(),
        metrics,
        body_limit: shiplog_web::DEFAULT_BODY_LIMIT,
        started: Instant::now(),
        series: Vec::new(),
        query: None,
        admission: Default::default(),
    });
    let shiplog_url = spawn(router(state)).await?;
    let noop = Router::new().route(
        "/v1/events",
        post(|body: axum::body::Bytes| async move {
            drop(body);
            axum::http::StatusCode::ACCEPTED
        }),
    );
    let noop_url = spawn(noop).await?;

    println!(
        "ingest benchmark: {} connections, {:.0} s per run, {} cores, durable ack ({})",
        args.connections,
        args.seconds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        if args.kafka_mock {
            "Kafka mock cluster, idempotent producer, acks=all"
        } else {
            "fdatasync, group commit"
        }
    );
    println!(
        "{:>8} {:>14} {:>14} {:>14} {:>8}",
        "batch", "shiplog ev/s", "no-op ev/s", "shiplog req/s", "ratio"
    );
    let mut run = 0;
    for &batch in &args.batch_sizes {
        // Warm up both, then measure.
        run += 1;
        drive(&shiplog_url, args.connections, batch, 0.5, run).await?;
        drive(&noop_url, args.connections, batch, 0.5, run).await?;
        run += 1;
        let s = drive(&shiplog_url, args.connections, batch, args.seconds, run).await?;
        let n = drive(&noop_url, args.connections, batch, args.seconds, run).await?;
        let s_rate = s.events as f64 / s.elapsed.as_secs_f64();
        let n_rate = n.events as f64 / n.elapsed.as_secs_f64();
        println!(
            "{:>8} {:>14.0} {:>14.0} {:>14.0} {:>8.2}",
            batch,
            s_rate,
            n_rate,
            s.requests as f64 / s.elapsed.as_secs_f64(),
            s_rate / n_rate
        );
    }
    let stats = log.stats();
    if args.kafka_mock {
        println!(
            "log: {} records acknowledged by Kafka, {} bytes",
            stats.records, stats.bytes
        );
    } else {
        println!(
            "log: {} records, {} syncs ({:.1} records per sync), {} bytes",
            stats.records,
            stats.syncs,
            stats.records as f64 / stats.syncs.max(1) as f64,
            stats.bytes
        );
    }
    log.close().await?;
    Ok(())
}

/// `shiplog bench freshness`: time from a durable ack to the event being visible in a
/// DuckDB query, with the default projection settings, while a background load runs.
pub async fn freshness(samples: usize, background_rate: u64) -> Result<()> {
    use shiplog_events::{Event, Origin};
    use shiplog_store::{run_projection, ProjectorConfig, QueryEngine};
    let dir = tempfile::tempdir()?;
    let (log, _) = SegmentedLog::open(&dir.path().join("log"), FileLogConfig::default())?;
    let log: Arc<dyn Log> = Arc::new(log);
    let metrics = Arc::new(Metrics::default());
    let ingestor = Arc::new(Ingestor::new(
        log.clone(),
        Duration::from_secs(7 * 86400),
        metrics,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config = ProjectorConfig::default();
    println!(
        "freshness benchmark: {samples} samples, flush interval {:?}, background load {background_rate} events/s",
        config.flush_interval
    );
    let projection = run_projection(log.clone(), dir.path().to_path_buf(), config, stop_rx).await?;
    let engine = Arc::new(QueryEngine::open(dir.path())?);
    let parse =
        |s: String| Event::from_json(serde_json::from_str(&s).expect("json"), Origin::Collector);

    // Background load: batches of 100 every 100 ms / (rate / 1000).
    let bg = {
        let ingestor = ingestor.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let per_tick = (background_rate / 10).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let batch: Vec<Event> = (0..per_tick)
                    .map(|i| parse(sample_event(1, n + i)).expect("valid"))
                    .collect();
                n += per_tick;
                if ingestor.ingest(batch).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = format!("fresh-{i}");
        let ev = parse(format!(
            r#"{{"id":"{id}","kind":"check","source":"freshness","project":"p","data":{{"name":"error_rate","value":0.01}}}}"#
        ))
        .expect("valid");
        ingestor.ingest(vec![ev]).await?;
        let acked = Instant::now();
        loop {
            let (engine, id) = (engine.clone(), id.clone());
            let r = tokio::task::spawn_blocking(move || {
                engine.query_internal(
                    "SELECT count(*) FROM checks WHERE id = ?",
                    &[serde_json::Value::String(id)],
                    Duration::from_secs(10),
                )
            })
            .await??;
            if r.rows[0][0].as_u64() == Some(1) {
                break;
            }
            ensure!(
                acked.elapsed() < Duration::from_secs(30),
                "event never became visible"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(acked.elapsed());
        // Spread the samples over the flush cycle.
        tokio::time::sleep(Duration::from_millis(137)).await;
    }
    bg.abort();
    let _ = stop_tx.send(true);
    let _ = projection.task.await;
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "ack -> visible in a query: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    log.close().await?;
    Ok(())
}
