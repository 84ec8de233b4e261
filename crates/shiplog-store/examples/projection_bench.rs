//! Projection throughput: shiplog's projector (JSON log entries → Arrow → zstd Parquet,
//! committed) against DuckDB's `COPY (SELECT * FROM read_ndjson(…)) TO … (FORMAT parquet)`
//! on the same events.
//!
//! `cargo run --release -p shiplog-store --example projection_bench [N]` (default 1,000,000).

#[path = "../tests/common/gen.rs"]
mod gen;

use bytes::Bytes;
use shiplog_log::LogEntry;
use shiplog_store::{ParquetProjector, ProjectorConfig};
use std::io::Write;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    println!("generating {n} events …");
    let mut rng = gen::Rng(0x5eed);
    // ~30 days of events
    let step = (30 * 86_400 / n.max(1) as i64).max(1);
    let values: Vec<Bytes> = (0..n)
        .map(|i| {
            Bytes::from(serde_json::to_vec(&gen::event(&mut rng, i, 1_795_000_000, step)).unwrap())
        })
        .collect();
    let total_bytes: usize = values.iter().map(|v| v.len()).sum();
    println!(
        "  {:.1} MiB of JSON, {} bytes/event on average",
        total_bytes as f64 / 1048576.0,
        total_bytes as u64 / n.max(1)
    );

    // --- shiplog ---
    let entries: Vec<LogEntry> = values
        .iter()
        .enumerate()
        .map(|(i, v)| LogEntry {
            partition: 0,
            offset: i as u64,
            key: Bytes::new(),
            value: v.clone(),
        })
        .collect();
    let data_dir = dir.path().join("shiplog");
    let config = ProjectorConfig::default();
    let mut p = ParquetProjector::open(&data_dir, config.clone()).expect("open");
    let start = Instant::now();
    let (mut files, mut rows, mut bytes) = (0, 0, 0);
    for chunk in entries.chunks(config.read_batch_records) {
        p.push(chunk.to_vec());
        if p.should_flush() {
            let r = p.flush().expect("flush");
            files += r.files;
            rows += r.rows;
            bytes += r.bytes;
        }
    }
    let r = p.flush().expect("flush");
    files += r.files;
    rows += r.rows;
    bytes += r.bytes;
    let shiplog_secs = start.elapsed().as_secs_f64();
    drop(p);
    assert_eq!(rows, n);
    let shiplog_rate = n as f64 / shiplog_secs;
    println!(
        "shiplog projector: {n} events in {shiplog_secs:.2} s = {shiplog_rate:.0} events/s ({files} files committed, {:.1} MiB Parquet, threads {})",
        bytes as f64 / 1048576.0,
        config.threads
    );

    // --- DuckDB ---
    let ndjson = dir.path().join("events.ndjson");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&ndjson).unwrap());
        for v in &values {
            f.write_all(v).unwrap();
            f.write_all(b"\n").unwrap();
        }
        f.flush().unwrap();
    }
    let out = dir.path().join("duckdb.parquet");
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let start = Instant::now();
    conn.execute_batch(&format!(
        "COPY (SELECT * FROM read_ndjson('{}')) TO '{}' (FORMAT parquet)",
        ndjson.display(),
        out.display()
    ))
    .unwrap();
    let duck_secs = start.elapsed().as_secs_f64();
    let duck_rate = n as f64 / duck_secs;
    let duck_bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "duckdb read_ndjson → parquet: {n} events in {duck_secs:.2} s = {duck_rate:.0} events/s ({:.1} MiB Parquet, threads {})",
        duck_bytes as f64 / 1048576.0,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("ratio shiplog / duckdb = {:.2}x", shiplog_rate / duck_rate);
}
