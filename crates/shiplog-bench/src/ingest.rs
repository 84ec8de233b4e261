//! `shiplog bench ingest`: ingest throughput with durable acknowledgement, against a no-op
//! axum server that reads and discards the body, under the same load in the same run.
//!
//! Both servers run in this process on loopback; the load generator (N connections, each
//! posting as fast as it is answered) shares the machine with them, equally for both.

use crate::sample::{numbered_event, BodyTemplate};
use anyhow::{ensure, Result};
use axum::routing::post;
use axum::Router;
use shiplog_ingest::Ingestor;
use shiplog_ingest::Metrics;
use shiplog_log::file::{FileLogConfig, SegmentedLog};
use shiplog_log::Log;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct IngestBenchArgs {
    pub connections: usize,
    pub seconds: f64,
    pub batch_sizes: Vec<usize>,
    /// The log to measure shiplog on, and what it is: for example the Kafka backend against
    /// librdkafka's in-process mock cluster (3 brokers, a topic of 3 partitions), whose
    /// opening the Kafka crate owns. `None`: the embedded file log, in a temporary
    /// directory.
    pub log: Option<(Arc<dyn Log>, String)>,
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
    use shiplog_ingest::decode::{decode_body, BodyFormat};
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

pub struct Load {
    pub events: u64,
    pub requests: u64,
    pub elapsed: Duration,
}

/// Posts bodies of `batch` events (ids of `run`) on `connections` connections, each as
/// fast as it is answered, for `seconds`; every request must succeed.
pub async fn drive(
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
                let r = template.post(&client, &url, first).send().await;
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

/// `shiplog bench ingest`; `serve` gives the HTTP server's router over an [`Ingestor`] (the
/// binary passes shiplog-web's, which this crate does not depend on).
pub async fn ingest(
    args: IngestBenchArgs,
    serve: impl FnOnce(Arc<Ingestor>, Arc<Metrics>) -> Router,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file_log = args.log.is_none();
    let (log, backend): (Arc<dyn Log>, String) = match args.log {
        Some(given) => given,
        None => {
            let (log, _) = SegmentedLog::open(&dir.path().join("log"), FileLogConfig::default())?;
            (Arc::new(log), "fdatasync, group commit".into())
        }
    };
    let metrics = Arc::new(Metrics::default());
    let ingestor = Arc::new(Ingestor::new(
        log.clone(),
        Duration::from_secs(7 * 86400),
        metrics.clone(),
    ));
    let shiplog_url = spawn(serve(ingestor, metrics)).await?;
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
        backend
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
    if !file_log {
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
                    .map(|i| parse(numbered_event(1, n + i)).expect("valid"))
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
