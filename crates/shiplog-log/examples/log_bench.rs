//! Throughput of the segmented file log: group-committed appends from 64 concurrent
//! appenders (batches of 1 and of 100 records of ~400 bytes), then sequential reads.
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
        let _ = std::fs::remove_dir_all(&dir);
        let (log, _) = SegmentedLog::open(&dir, FileLogConfig::default()).expect("open");
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
                        let records = (0..batch)
                            .map(|_| LogRecord {
                                key: key.clone(),
                                value: value.clone(),
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
        let elapsed = started.elapsed().as_secs_f64();
        let stats = log.stats();
        println!(
            "append batch={batch:>3}: {:>9.0} appends/s {:>10.0} records/s {:>7.1} MB/s  ({} appends, {} syncs, {:.1} records/sync, {} segments)",
            appends as f64 / elapsed,
            stats.records as f64 / elapsed,
            stats.bytes as f64 / elapsed / 1e6,
            appends,
            stats.syncs,
            stats.records as f64 / stats.syncs.max(1) as f64,
            stats.segments,
        );
        log.close().await.expect("close");

        // Read everything back (the data is in the page cache).
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
            "read           : {:>10.0} records/s {:>7.1} MB/s  ({records} records)",
            records as f64 / elapsed,
            bytes as f64 / elapsed / 1e6,
        );
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
