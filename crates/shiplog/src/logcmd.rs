//! `shiplog log status` and `shiplog log compress`: the embedded log's disk usage, and
//! compressing its sealed segments now.

use crate::config::Config;
use crate::datadir::{log_dir, DataDirLock};
use anyhow::{bail, Context, Result};
use std::process::ExitCode;

/// `shiplog log status`: bytes on disk and uncompressed, the compression ratio, the first
/// and last offsets and the oldest event kept. Read-only: safe while the server runs.
pub fn status(config: &Config) -> Result<ExitCode> {
    let dir = log_dir(&config.server.data_dir);
    if !dir.exists() {
        bail!("{} holds no log", config.server.data_dir.display());
    }
    let s = shiplog_log::file::status(&dir)
        .with_context(|| format!("cannot read the log in {}", dir.display()))?;
    let records = s.end_offset - s.first_offset;
    let oldest = s
        .first_record
        .as_deref()
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .and_then(|v| Some(v.get("received_at")?.as_str()?.to_string()))
        .unwrap_or_else(|| "unknown".into());
    println!("log {}", dir.display());
    println!(
        "  segments      {} ({} compressed)",
        s.segments, s.compressed_segments
    );
    println!("  bytes on disk {}", s.bytes);
    println!(
        "  uncompressed  {} (ratio {:.2}x)",
        s.raw_bytes,
        s.compression_ratio()
    );
    let last = match s.end_offset {
        0 => "none".to_string(),
        end => (end - 1).to_string(),
    };
    println!(
        "  offsets       first {}, last {last} ({records} records, {:.0} bytes per record on disk)",
        s.first_offset,
        s.bytes as f64 / records.max(1) as f64
    );
    println!(
        "  oldest event  received {oldest} (offset {})",
        s.first_offset
    );
    let retention = config.log.retention.policy();
    let limits = match (retention.max_age, retention.max_bytes) {
        (None, None) => "off (the log keeps every event)".to_string(),
        (age, bytes) => [
            age.map(|a| format!("max_age {}", humantime::format_duration(a))),
            bytes.map(|b| format!("max_bytes {b}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", "),
    };
    println!("  retention     {limits}");
    if s.start_offset > 0 {
        println!(
            "  removed       offsets 0..{} (by retention; the log starts at {})",
            s.start_offset, s.start_offset
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `shiplog log compress`: compresses every sealed segment now (server stopped), printing
/// the bytes before and after and the throughput.
pub fn compress(config: &Config) -> Result<ExitCode> {
    let data_dir = &config.server.data_dir;
    if !log_dir(data_dir).exists() {
        bail!("{} holds no log", data_dir.display());
    }
    let _lock = DataDirLock::acquire(data_dir, "shiplog log compress")?;
    let log = crate::serve::open_file_log(config)?;
    let records =
        shiplog_log::Log::end_offset(&log, 0) - shiplog_log::Log::stats(&log).first_offset;
    let c = log.compress_sealed_now();
    let stats = shiplog_log::Log::stats(&log);
    let secs = c.elapsed.as_secs_f64().max(1e-9);
    println!(
        "compressed {} sealed segment(s): {} → {} bytes ({:.3} of raw, {:.1}x) in {:.2}s \
         ({:.0} MB/s of raw segment)",
        c.segments,
        c.raw_bytes,
        c.compressed_bytes,
        c.compressed_bytes as f64 / c.raw_bytes.max(1) as f64,
        c.raw_bytes as f64 / c.compressed_bytes.max(1) as f64,
        secs,
        c.raw_bytes as f64 / 1e6 / secs
    );
    println!(
        "log now: {} bytes on disk for {} bytes raw, {} of {} segments compressed; {:.1} bytes \
         per record on disk (raw {:.1})",
        stats.bytes,
        stats.raw_bytes,
        stats.compressed_segments,
        stats.segments,
        stats.bytes as f64 / records.max(1) as f64,
        stats.raw_bytes as f64 / records.max(1) as f64
    );
    Ok(ExitCode::SUCCESS)
}
