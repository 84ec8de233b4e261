//! `shiplog bench soak` and `shiplog bench rss`: the real server (a child `shiplog serve`,
//! with its projection and rules engine) under a long steady load, and its memory with
//! many stored events. Both print figures; nothing here asserts.
//!
//! - soak: measures the server's maximum rate (closed loop), then holds a fixed rate (80%
//!   of it by default, open loop: requests are sent on schedule whether or not earlier ones
//!   were answered) and prints, per interval, the rate achieved, latency percentiles,
//!   refusals, the server's RSS and the log directory's size. The child server reads the
//!   same configuration (`SHIPLOG_*` variables included): with `[log.retention]`
//!   `max_bytes` set, the soak reports the log directory against that limit.
//! - rss: stores N events through the API, waits for the projection, then reads the
//!   server's RSS after ingest, after the projection caught up, after every dashboard page
//!   was rendered, and again after a restart (which rebuilds the dedup index and the rules
//!   state from the log).

use crate::sample::BodyTemplate;
use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `shiplog serve` child process on a free loopback port.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data_dir: &Path) -> Result<Server> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("SHIPLOG_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting shiplog serve")?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("shiplog listening on ") {
                    let _ = tx.send(url.trim_end_matches('/').to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(600))
            .context("shiplog serve did not start")?;
        Ok(Server { child, url })
    }

    /// Resident set size in MiB (from /proc).
    fn rss_mib(&self) -> f64 {
        rss_of(self.child.id())
    }

    /// Runs `work` while sampling the server's RSS every 50 ms; returns its result and the
    /// highest RSS seen.
    async fn peak_during<T>(&self, work: impl std::future::Future<Output = T>) -> (T, f64) {
        let pid = self.child.id();
        let peak = Arc::new(Mutex::new(rss_of(pid)));
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let r = rss_of(pid);
                    let mut p = peak.lock().unwrap();
                    *p = p.max(r);
                }
            })
        };
        let out = work.await;
        sampler.abort();
        let p = *peak.lock().unwrap();
        (out, p.max(rss_of(pid)))
    }

    fn stop(mut self) -> Result<()> {
        // SAFETY: sending SIGTERM to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait()?;
        Ok(())
    }
}

/// Resident set size of a process in MiB (from /proc), NaN once it is gone.
fn rss_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// One series of the server's /metrics.
async fn metric(client: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn data_dir_or_temp(
    given: Option<PathBuf>,
    name: &str,
) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    Ok(match given {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new().prefix(name).tempdir_in(".")?;
            (t.path().join("data"), Some(t))
        }
    })
}

fn free_bytes(dir: &Path) -> u64 {
    let probe = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: a valid C string and a zeroed out-struct.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) == 0 {
            s.f_bavail as u64 * s.f_frsize as u64
        } else {
            u64::MAX
        }
    }
}

pub struct SoakArgs {
    pub minutes: f64,
    pub rate: Option<u64>,
    pub batch: usize,
    pub connections: usize,
    pub interval: f64,
    pub data_dir: Option<PathBuf>,
    /// `[log.retention] max_bytes` of the server's configuration, to report against.
    pub log_max_bytes: Option<u64>,
    /// `[log] segment_bytes` and `[log.retention] interval` of the server's configuration
    /// (the sizing rule's terms).
    pub log_segment_bytes: u64,
    pub retention_interval: Duration,
}

/// Bytes of the files in `dir` (the log directory: segments, `START`, `LOCK`).
fn dir_bytes(dir: &Path) -> u64 {
    LogDir::of(dir).total()
}

/// The log directory at one moment, by kind of file.
#[derive(Debug, Clone, Copy, Default)]
struct LogDir {
    /// The newest plain segment (the one being written).
    active: u64,
    /// Other plain segments: sealed, not compressed yet.
    sealed_plain: u64,
    /// Compressed segments.
    compressed: u64,
    /// Anything else (`START`, `LOCK`, a `.zseg.tmp` being written).
    other: u64,
}

impl LogDir {
    fn of(dir: &Path) -> LogDir {
        let mut plain: Vec<(String, u64)> = Vec::new();
        let mut d = LogDir::default();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".seg") {
                plain.push((name, m.len()));
            } else if name.ends_with(".zseg") {
                d.compressed += m.len();
            } else {
                d.other += m.len();
            }
        }
        plain.sort();
        if let Some((_, active)) = plain.pop() {
            d.active = active;
        }
        d.sealed_plain = plain.iter().map(|p| p.1).sum();
        d
    }

    fn total(&self) -> u64 {
        self.active + self.sealed_plain + self.compressed + self.other
    }
}

/// Every series without labels of the server's /metrics.
async fn scrape(client: &reqwest::Client, url: &str) -> std::collections::HashMap<String, f64> {
    let Ok(r) = client.get(format!("{url}/metrics")).send().await else {
        return Default::default();
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The log directory watched every second during the soak: its peak, and each moment it
/// was above the limit with what the server said then.
#[derive(Debug, Default)]
struct DirWatch {
    samples: u64,
    peak: u64,
    peak_at: Duration,
    peak_parts: LogDir,
    over: u64,
    /// Of `over`: samples when the last pass held segments back (still needed), and the
    /// largest projection lag seen then.
    over_held: u64,
    over_lag: f64,
    /// Of `over`: samples when nothing was held back: the log grew past the headroom the
    /// last pass left (a burst, or the segment being written).
    over_grew: u64,
}

/// How often the log directory is measured.
const DIR_SAMPLE: Duration = Duration::from_secs(1);

/// Measures `log_dir` every [`DIR_SAMPLE`] until `stop`, asking the server's /metrics
/// why whenever it is above `limit`.
async fn watch_log_dir(
    log_dir: PathBuf,
    limit: Option<u64>,
    client: reqwest::Client,
    url: String,
    started: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    shared: Arc<Mutex<(u64, u64)>>,
) -> DirWatch {
    let mut w = DirWatch::default();
    let mut tick = tokio::time::interval(DIR_SAMPLE);
    while !stop.load(Relaxed) {
        *shared.lock().unwrap() = (w.peak, w.over);
        tick.tick().await;
        let dir = log_dir.clone();
        let parts = tokio::task::spawn_blocking(move || LogDir::of(&dir))
            .await
            .unwrap_or_default();
        let bytes = parts.total();
        w.samples += 1;
        if bytes > w.peak {
            w.peak = bytes;
            w.peak_at = started.elapsed();
            w.peak_parts = parts;
        }
        if limit.is_some_and(|l| bytes > l) {
            w.over += 1;
            let m = scrape(&client, &url).await;
            let held = m
                .get("shiplog_log_retention_held_back_bytes")
                .copied()
                .unwrap_or(0.0);
            if held > 0.0 {
                w.over_held += 1;
                let lag = m
                    .get("shiplog_projection_lag_events")
                    .copied()
                    .unwrap_or(f64::NAN);
                w.over_lag = w.over_lag.max(lag);
            } else {
                w.over_grew += 1;
            }
        }
    }
    w
}

#[derive(Default)]
struct Interval {
    latencies_us: Vec<u32>,
    accepted: u64,
    refused: u64,
    failed: u64,
}

pub async fn soak(args: SoakArgs) -> Result<()> {
    ensure!(
        args.batch > 0 && args.connections > 0,
        "--batch and --connections must be > 0"
    );
    let (data, _tmp) = data_dir_or_temp(args.data_dir.clone(), "shiplog-soak-")?;
    let server = Server::start(&data)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections * 4)
        .build()?;
    let template = Arc::new(BodyTemplate::new(7, args.batch));
    let next = Arc::new(AtomicU64::new(0));
    let rate = match args.rate {
        Some(r) => r,
        None => {
            println!(
                "measuring the maximum: {} connections, {} events per request, 20 s",
                args.connections, args.batch
            );
            // Ids of another run than the soak's, so none repeats.
            let load = crate::ingest::drive(
                &format!("{}/v1/events", server.url),
                args.connections,
                args.batch,
                20.0,
                8,
            )
            .await?;
            let max = load.events as f64 / load.elapsed.as_secs_f64();
            println!("maximum: {max:.0} events/s; soaking at 80%");
            (max * 0.8) as u64
        }
    };
    ensure!(rate > 0, "the rate must be above 0 events/s");
    let event_bytes = template.render(0).len() as u64 / args.batch as u64;
    let mut need = rate * event_bytes * (args.minutes * 60.0) as u64 * 11 / 10;
    if let Some(limit) = args.log_max_bytes {
        // The log stays near its limit; the Parquet projection takes about a tenth.
        need = need.min(limit * 2 + need / 10);
    }
    let free = free_bytes(&data);
    if need > free {
        bail!(
            "a {} min soak at {rate} events/s writes about {} GiB to the log; {} GiB are free under {}",
            args.minutes,
            need >> 30,
            free >> 30,
            data.display()
        );
    }
    let requests_per_s = rate as f64 / args.batch as f64;
    println!(
        "soak: {rate} events/s ({requests_per_s:.0} requests/s of {} events), {} min, report every {} s, data in {}",
        args.batch,
        args.minutes,
        args.interval,
        data.display()
    );
    println!(
        "{:>6} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>11} {:>11}",
        "min",
        "events/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "refused",
        "failed",
        "RSS MiB",
        "lag",
        "log GiB",
        "dedup keys",
        "log dir MiB"
    );
    println!("(with a limit, each line also gives the log directory's peak so far, measured every second, and the seconds it spent above the limit)");
    if let Some(limit) = args.log_max_bytes {
        println!(
            "log retention: max_bytes {limit} ({:.1} MiB); the log directory is measured at each report",
            limit as f64 / (1u64 << 20) as f64
        );
    }
    let log_dir = data.join("log");
    let mut log_dir_series: Vec<u64> = Vec::new();
    let watch_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // (peak bytes, samples above the limit) so far, for the report lines.
    let watch_so_far = Arc::new(Mutex::new((0u64, 0u64)));
    let watcher = tokio::spawn(watch_log_dir(
        log_dir.clone(),
        args.log_max_bytes,
        client.clone(),
        server.url.clone(),
        Instant::now(),
        watch_stop.clone(),
        watch_so_far.clone(),
    ));
    let current = Arc::new(Mutex::new(Interval::default()));
    // Open loop: request i is due at start + i / requests_per_s. At most 16 requests per
    // connection wait for an answer; beyond that the generator counts the request as failed.
    let inflight = Arc::new(tokio::sync::Semaphore::new(args.connections * 16));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.minutes * 60.0);
    let mut rss_series = Vec::new();
    let mut p99_series = Vec::new();
    let url = format!("{}/v1/events", server.url);
    let mut report_at = start + Duration::from_secs_f64(args.interval);
    let mut i: u64 = 0;
    loop {
        let due = start + Duration::from_secs_f64(i as f64 / requests_per_s);
        let now = Instant::now();
        if now >= report_at || now >= end {
            let iv = std::mem::take(&mut *current.lock().unwrap());
            let mut l = iv.latencies_us;
            l.sort_unstable();
            let pct = |p: f64| -> f64 {
                if l.is_empty() {
                    f64::NAN
                } else {
                    l[((l.len() - 1) as f64 * p) as usize] as f64 / 1000.0
                }
            };
            let rss = server.rss_mib();
            let lag = metric(&client, &server.url, "shiplog_projection_lag_events")
                .await
                .unwrap_or(f64::NAN);
            let log_bytes = metric(&client, &server.url, "shiplog_log_bytes")
                .await
                .unwrap_or(f64::NAN);
            let keys = metric(&client, &server.url, "shiplog_dedup_keys")
                .await
                .unwrap_or(f64::NAN);
            let log_dir_bytes = dir_bytes(&log_dir);
            log_dir_series.push(log_dir_bytes);
            let (peak_so_far, over_so_far) = *watch_so_far.lock().unwrap();
            let so_far = match args.log_max_bytes {
                Some(_) => format!(
                    "  peak {:.2} MiB, {} s over",
                    peak_so_far as f64 / (1u64 << 20) as f64,
                    over_so_far
                ),
                None => String::new(),
            };
            println!(
                "{:>6.1} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>8} {:>8} {:>9.0} {:>9.0} {:>10.2} {:>11.0} {:>11.2}{so_far}",
                start.elapsed().as_secs_f64() / 60.0,
                iv.accepted as f64 / args.interval,
                pct(0.5),
                pct(0.99),
                pct(1.0),
                iv.refused,
                iv.failed,
                rss,
                lag,
                log_bytes / (1u64 << 30) as f64,
                keys,
                log_dir_bytes as f64 / (1u64 << 20) as f64
            );
            rss_series.push(rss);
            p99_series.push(pct(0.99));
            report_at += Duration::from_secs_f64(args.interval);
            if now >= end {
                break;
            }
        }
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        }
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            current.lock().unwrap().failed += 1;
            i += 1;
            continue;
        };
        let first = next.fetch_add(args.batch as u64, Relaxed);
        let request = template.post(&client, &url, first);
        let (current, batch) = (current.clone(), args.batch);
        tokio::spawn(async move {
            let sent = Instant::now();
            let r = request.send().await;
            let us = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
            let mut iv = current.lock().unwrap();
            match r.map(|r| r.status().as_u16()) {
                Ok(202) => {
                    iv.accepted += batch as u64;
                    iv.latencies_us.push(us);
                }
                Ok(503 | 429) => iv.refused += 1,
                _ => iv.failed += 1,
            }
            drop(permit);
        });
        i += 1;
    }
    let _ = inflight.acquire_many(args.connections as u32 * 16).await;
    if rss_series.len() >= 2 {
        let (first, last) = (rss_series[0], rss_series[rss_series.len() - 1]);
        let peak = rss_series.iter().cloned().fold(f64::MIN, f64::max);
        let p99_first = p99_series[0];
        let p99_last = p99_series[p99_series.len() - 1];
        let p99_worst = p99_series.iter().cloned().fold(f64::MIN, f64::max);
        println!(
            "RSS: first interval {first:.0} MiB, last {last:.0} MiB, peak {peak:.0} MiB; \
             p99: first {p99_first:.1} ms, last {p99_last:.1} ms, worst {p99_worst:.1} ms"
        );
    }
    watch_stop.store(true, Relaxed);
    let watched = watcher.await?;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let last = log_dir_series.last().copied().unwrap_or(0);
    let Some(limit) = args.log_max_bytes else {
        println!(
            "log directory: last {:.1} MiB, peak {:.1} MiB (no [log.retention] limit)",
            mib(last),
            mib(watched.peak)
        );
        server.stop()?;
        return Ok(());
    };
    let m = scrape(&client, &server.url).await;
    let get = |name: &str| m.get(name).copied().unwrap_or(f64::NAN);
    let kept = get("shiplog_log_last_offset") + 1.0 - get("shiplog_log_start_offset");
    // The sizing rule (docs/operations.md, "Sizing a disk"): the log directory stays under
    // max_bytes when max_bytes >= 2 x floor; it may exceed it by up to the floor otherwise.
    // floor = one segment (the one being written) + the second or so the projection is
    // behind, uncompressed (the newest segments are compressed only once sealed) + what the
    // log grows by on disk during one retention interval.
    let compressed_per_event = get("shiplog_log_bytes") / kept.max(1.0);
    let raw_per_event = get("shiplog_log_raw_bytes") / kept.max(1.0);
    let grows = rate as f64
        * (raw_per_event + compressed_per_event * args.retention_interval.as_secs_f64());
    let floor = args.log_segment_bytes + grows as u64;
    let over_s = watched.over as f64 * DIR_SAMPLE.as_secs_f64();
    let p = watched.peak_parts;
    println!(
        "log directory, measured every {} s ({} samples): peak {:.2} MiB at {:.1} min \
         (segment being written {:.2}, sealed not yet compressed {:.2}, compressed {:.2}, other {:.2} MiB), \
         last {:.2} MiB; max_bytes {:.2} MiB, peak/limit {:.2}",
        DIR_SAMPLE.as_secs_f64(),
        watched.samples,
        mib(watched.peak),
        watched.peak_at.as_secs_f64() / 60.0,
        mib(p.active),
        mib(p.sealed_plain),
        mib(p.compressed),
        mib(p.other),
        mib(last),
        mib(limit),
        watched.peak as f64 / limit.max(1) as f64
    );
    println!(
        "above max_bytes: {over_s:.0} s of {:.0} s ({} samples: {} with segments held back, \
         projection lag up to {:.0} events; {} grown past the headroom left by the last pass)",
        watched.samples as f64 * DIR_SAMPLE.as_secs_f64(),
        watched.over,
        watched.over_held,
        watched.over_lag,
        watched.over_grew
    );
    println!(
        "sizing rule: floor = segment {:.2} MiB + a second of events raw and an interval \
         on disk ({rate} events/s x ({raw_per_event:.0} B x 1 s + {compressed_per_event:.0} B x {:.0} s) \
         = {:.2} MiB) = {:.2} MiB; the limit holds when max_bytes >= 2 x floor = {:.2} MiB, \
         else the directory may exceed it by up to the floor",
        mib(args.log_segment_bytes),
        args.retention_interval.as_secs_f64(),
        grows / (1u64 << 20) as f64,
        mib(floor),
        mib(2 * floor)
    );
    println!(
        "log retention: the log starts at offset {:.0}; {:.0} segments removed ({:.1} MiB); \
         {:.0} passes wrote a fresh dedup or rules snapshot",
        get("shiplog_log_start_offset"),
        get("shiplog_log_retention_removed_segments_total"),
        get("shiplog_log_retention_removed_bytes_total") / (1u64 << 20) as f64,
        get("shiplog_log_retention_snapshots_asked_total")
    );
    server.stop()?;
    // The documented allowance: one segment (the segment being written swings by up to
    // its size between passes) when the limit can hold, else the floor.
    let allowance = if limit >= 2 * floor {
        args.log_segment_bytes
    } else {
        floor
    };
    ensure!(
        watched.peak <= limit + allowance,
        "the log directory peaked at {:.2} MiB: above max_bytes {:.2} MiB{}",
        mib(watched.peak),
        mib(limit),
        if limit >= 2 * floor {
            format!(" plus one segment {:.2} MiB", mib(allowance))
        } else {
            format!(
                " plus the floor {:.2} MiB (max_bytes is below 2 x floor)",
                mib(allowance)
            )
        }
    );
    Ok(())
}

pub struct RssArgs {
    pub events: u64,
    pub batch: usize,
    pub connections: usize,
    pub data_dir: Option<PathBuf>,
}

pub async fn rss(args: RssArgs) -> Result<()> {
    ensure!(
        args.batch > 0 && args.connections > 0,
        "--batch and --connections must be > 0"
    );
    let (data, _tmp) = data_dir_or_temp(args.data_dir.clone(), "shiplog-rss-")?;
    let template = Arc::new(BodyTemplate::new(11, args.batch));
    let need = template.render(0).len() as u64 / args.batch as u64 * args.events * 13 / 10;
    ensure!(
        need < free_bytes(&data),
        "storing {} events needs about {} GiB under {}",
        args.events,
        need >> 30,
        data.display()
    );
    let server = Server::start(&data)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(600))
        .build()?;
    println!(
        "rss: storing {} events ({} per request, {} connections) in {}",
        args.events,
        args.batch,
        args.connections,
        data.display()
    );
    let mut rows: Vec<(String, f64)> = vec![("started, empty".into(), server.rss_mib())];
    let bar = indicatif::ProgressBar::new(args.events);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
            .expect("valid template"),
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (client, url, template, next, bar, batch, total) = (
            client.clone(),
            format!("{}/v1/events", server.url),
            template.clone(),
            next.clone(),
            bar.clone(),
            args.batch as u64,
            args.events,
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Relaxed);
                if first >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                loop {
                    let r = template.post(&client, &url, first).send().await?;
                    match r.status().as_u16() {
                        202 => break,
                        503 => tokio::time::sleep(Duration::from_millis(200)).await,
                        s => bail!(
                            "ingest answered {s}: {}",
                            r.text().await.unwrap_or_default()
                        ),
                    }
                }
                bar.inc(batch);
            }
        }));
    }
    let (done, ingest_peak) = server
        .peak_during(async {
            for t in tasks {
                t.await??;
            }
            anyhow::Ok(())
        })
        .await;
    done?;
    bar.finish_and_clear();
    let stored = next.load(Relaxed).min(args.events);
    println!(
        "stored {stored} events in {:.0} s ({:.0} events/s)",
        started.elapsed().as_secs_f64(),
        stored as f64 / started.elapsed().as_secs_f64()
    );
    rows.push(("peak while ingesting".into(), ingest_peak));
    rows.push((format!("after storing {stored} events"), server.rss_mib()));
    let ((), projection_peak) = server
        .peak_during(async {
            while metric(&client, &server.url, "shiplog_projection_lag_events").await != Some(0.0) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
        .await;
    rows.push((
        "peak until projected".into(),
        ingest_peak.max(projection_peak),
    ));
    rows.push(("projection caught up".into(), server.rss_mib()));
    let pages = async |url: &str| -> Result<()> {
        for page in [
            "/",
            "/builds",
            "/deploys",
            "/migrations",
            "/costs",
            "/decisions",
        ] {
            for range in ["24h", "7d", "30d", "90d"] {
                let r = client
                    .get(format!("{url}{page}?range={range}"))
                    .send()
                    .await?;
                ensure!(
                    r.status().is_success(),
                    "{page}?range={range}: {}",
                    r.status()
                );
                r.bytes().await?;
            }
        }
        Ok(())
    };
    let (done, page_peak) = server.peak_during(pages(&server.url)).await;
    done?;
    rows.push((
        "peak during every dashboard page x 4 ranges".into(),
        page_peak,
    ));
    rows.push((
        "after every dashboard page x 4 ranges".into(),
        server.rss_mib(),
    ));
    tokio::time::sleep(Duration::from_secs(30)).await;
    rows.push(("30 s later".into(), server.rss_mib()));
    let keys = metric(&client, &server.url, "shiplog_dedup_keys")
        .await
        .unwrap_or(f64::NAN);
    let dedup = metric(&client, &server.url, "shiplog_dedup_bytes")
        .await
        .unwrap_or(f64::NAN);
    server.stop()?;
    let restart = Instant::now();
    let server = Server::start(&data)?;
    let restart_s = restart.elapsed().as_secs_f64();
    rows.push((
        format!("restarted ({restart_s:.1} s to listen)"),
        server.rss_mib(),
    ));
    let (done, page_peak) = server.peak_during(pages(&server.url)).await;
    done?;
    rows.push(("peak during every dashboard page again".into(), page_peak));
    rows.push(("after every dashboard page again".into(), server.rss_mib()));
    let log_bytes = metric(&client, &server.url, "shiplog_log_bytes")
        .await
        .unwrap_or(f64::NAN);
    server.stop()?;
    println!("{:<44} {:>9}", "server", "RSS MiB");
    for (what, mib) in rows {
        println!("{what:<44} {mib:>9.0}");
    }
    println!(
        "dedup index: {keys:.0} keys, {:.0} MiB; log {:.2} GiB",
        dedup / (1u64 << 20) as f64,
        log_bytes / (1u64 << 30) as f64
    );
    Ok(())
}
