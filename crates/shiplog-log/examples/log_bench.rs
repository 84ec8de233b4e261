//! Throughput of the segmented file log: group-committed appends from 64 concurrent
//! appenders (batches of 1 and of 100 records of ~400 bytes), then sequential reads; then
//! event-like JSON appended without and with the background compression of sealed
//! segments (bytes on disk, compression throughput, reads over compressed segments).
//!
//! `cargo run --release -p shiplog-log --example log_bench [-- <dir> [<seconds per run>]]`
//! (the directory defaults to a temporary one; put it on the disk you want to measure).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shiplog_log::file::{FileLogConfig, SegmentedLog};
use shiplog_log::{Log, LogRecord};

const APPENDERS: usize = 64;
const VALUE_BYTES: usize = 400;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let base = args
        .get(1)
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let seconds: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    println!("log_bench: {APPENDERS} concurrent appenders, {VALUE_BYTES}-byte values, {seconds} s per run, in {}", base.display());

    for batch in [1usize, 100] {
        let dir = base.join(format!("append-{batch}"));
        let (log, appends, elapsed) =
            append_for(&dir, FileLogConfig::default(), batch, seconds, false).await;
        print_appends(&format!("append batch={batch:>3}"), &log, appends, elapsed);
        log.close().await.expect("close");
        // Read everything back (the data is in the page cache).
        print_read("read           ", &log).await;
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // The same appends of event-like JSON with 8 MiB segments, without and with the
    // background compression of sealed segments: the acknowledgements must not slow down.
    for compress in [false, true] {
        let dir = base.join(format!("compress-{compress}"));
        let config = FileLogConfig {
            segment_bytes: 8 << 20,
            compress_sealed: compress,
            ..FileLogConfig::default()
        };
        let (log, appends, elapsed) = append_for(&dir, config, 100, seconds, true).await;
        let label = format!("json batch=100, compress={compress:<5}");
        print_appends(&label, &log, appends, elapsed);
        let c = log.compress_sealed_now();
        let stats = log.stats();
        println!(
            "  on disk: {} of {} raw bytes ({:.3}), {} of {} segments compressed{}",
            stats.bytes,
            stats.raw_bytes,
            stats.bytes as f64 / stats.raw_bytes.max(1) as f64,
            stats.compressed_segments,
            stats.segments,
            if compress || c.segments == 0 {
                String::new()
            } else {
                format!(
                    "; compressing them now: {:.0} MB/s",
                    c.raw_bytes as f64 / 1e6 / c.elapsed.as_secs_f64().max(1e-9)
                )
            },
        );
        print_read("  read (compressed segments)", &log).await;
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Reads of 1M records with 300-byte values, in batches of 1,000 and 10,000.
    let dir = base.join("read-300");
    let _ = std::fs::remove_dir_all(&dir);
    let (log, _) = SegmentedLog::open(&dir, FileLogConfig::default()).expect("open");
    let value = Bytes::from(vec![b'r'; 300]);
    for _ in 0..1000 {
        let records = (0..1000)
            .map(|_| LogRecord {
                key: Bytes::from_static(b"project"),
                value: value.clone(),
            })
            .collect();
        log.append(records).await.expect("append");
    }
    for max_records in [1000usize, 10_000] {
        let started = Instant::now();
        let mut reader = log.reader(0, 0).expect("reader");
        let mut records = 0u64;
        loop {
            let batch = reader
                .next_batch(max_records, 64 << 20, Duration::ZERO)
                .await
                .expect("read");
            if batch.is_empty() {
                break;
            }
            records += batch.len() as u64;
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "read 300-byte values, batches of {max_records:>5}: {:>10.0} records/s ({records} records)",
            records as f64 / elapsed,
        );
    }
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A ~400-byte event as JSON, different for every record (compresses like real events).
fn event_value(task: usize, n: u64) -> Bytes {
    let mut v = format!(
        r#"{{"id":"e-{task}-{n}","kind":"build","source":"vite-plugin","project":"web-app","time":"2026-12-03T10:{:02}:{:02}Z","commit":"{:040x}","data":{{"tool":"vite","success":true,"duration_ms":{},"modules_transformed":{},"bundle_bytes":{}}}}}"#,
        n / 60 % 60,
        n % 60,
        (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834) >> 8,
        n * 37 % 90_000,
        n % 1_500,
        n * 7_919 % 4_000_000
    );
    v.extend(std::iter::repeat_n(
        ' ',
        VALUE_BYTES.saturating_sub(v.len()),
    ));
    Bytes::from(v)
}

/// `APPENDERS` tasks appending batches of `batch` records for `seconds`.
async fn append_for(
    dir: &std::path::Path,
    config: FileLogConfig,
    batch: usize,
    seconds: f64,
    json: bool,
) -> (Arc<SegmentedLog>, u64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let (log, _) = SegmentedLog::open(dir, config).expect("open");
    let log = Arc::new(log);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|task| {
            let log = log.clone();
            tokio::spawn(async move {
                let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
                let key = Bytes::from(format!("project-{task}"));
                let mut appends = 0u64;
                while Instant::now() < deadline {
                    let records = (0..batch as u64)
                        .map(|i| LogRecord {
                            key: key.clone(),
                            value: match json {
                                true => event_value(task, appends * batch as u64 + i),
                                false => value.clone(),
                            },
                        })
                        .collect();
                    log.append(records).await.expect("append");
                    appends += 1;
                }
                appends
            })
        })
        .collect();
    let mut appends = 0u64;
    for task in tasks {
        appends += task.await.expect("task");
    }
    (log, appends, started.elapsed().as_secs_f64())
}

fn print_appends(label: &str, log: &SegmentedLog, appends: u64, elapsed: f64) {
    let stats = log.stats();
    println!(
        "{label}: {:>9.0} appends/s {:>10.0} records/s {:>7.1} MB/s  ({} appends, {} syncs, {:.1} records/sync, {} segments)",
        appends as f64 / elapsed,
        stats.records as f64 / elapsed,
        stats.raw_bytes as f64 / elapsed / 1e6,
        appends,
        stats.syncs,
        stats.records as f64 / stats.syncs.max(1) as f64,
        stats.segments,
    );
}

/// Reads the whole log and prints the rate.
async fn print_read(label: &str, log: &SegmentedLog) {
    let started = Instant::now();
    let mut reader = log.reader(0, 0).expect("reader");
    let (mut records, mut bytes) = (0u64, 0u64);
    loop {
        let batch = reader
            .next_batch(10_000, 8 << 20, Duration::ZERO)
            .await
            .expect("read");
        if batch.is_empty() {
            break;
        }
        records += batch.len() as u64;
        bytes += batch
            .iter()
            .map(|e| (e.key.len() + e.value.len()) as u64)
            .sum::<u64>();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{label}: {:>10.0} records/s {:>7.1} MB/s  ({records} records)",
        records as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
    );
}
