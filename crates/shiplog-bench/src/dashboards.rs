//! `shiplog bench dashboards`: the time of each dashboard page's panel queries through
//! shiplog (the dashboards engine the web server runs: placeholders → bound parameters,
//! the read-only statement check, pooled connections of the confined `QueryEngine`, Arrow →
//! JSON rows, threshold judgement) against the same SQL with the same parameter values run
//! directly on a plain DuckDB connection with views over the same Parquet files.
//!
//! The data: N realistic events over the last 90 days (several projects and environments,
//! every kind), projected by `ParquetProjector` (push + flush) into `<data-dir>`, then the
//! closed days compacted as the nightly compaction of a server does. A data dir that
//! already holds a projection is reused.

use crate::history::{event, Rng};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chrono::Utc;
use serde_json::Value;
use shiplog_events::Kind;
use shiplog_log::LogEntry;
use shiplog_store::{ParquetProjector, ProjectorConfig, QueryEngine, ENVELOPE_COLUMNS};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One page as shiplog's dashboards engine runs it: its panels' SQL and parameters,
/// expanded exactly as the engine does.
pub struct Page {
    pub label: String,
    pub panels: Vec<(String, Vec<Value>)>,
}

/// What shiplog's engine returned for one panel of a page.
pub struct PanelRun {
    pub rows: usize,
    /// The value judged against the thresholds.
    pub value: Option<f64>,
    pub error: Option<String>,
}

/// shiplog's dashboards engine, as the web server runs it. The binary implements it over
/// `shiplog-web`, which no crate but the binary depends on.
pub trait DashboardEngine {
    /// The pages to time: the built-in dashboards over 30 and 90 days, and the page of
    /// `deployment` (as the `/deployments/{id}` route builds it).
    fn pages(&self, deployment: &str) -> Result<Vec<Page>>;
    /// Runs page `index` of [`DashboardEngine::pages`] as the web server does.
    fn run(&self, index: usize) -> Vec<PanelRun>;
}

pub struct Args {
    pub events: u64,
    pub data_dir: Option<PathBuf>,
    pub runs: usize,
    /// Only the pages whose label (`builds 30d`, `deployment …`) contains one of these.
    pub pages: Vec<String>,
}

fn parquet_files(dir: &Path) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                n += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (n, bytes)
}

fn generate(data_dir: &Path, n: u64) -> Result<()> {
    let end = Utc::now();
    let config = ProjectorConfig::default();
    let mut p = ParquetProjector::open(data_dir, config.clone()).context("opening projector")?;
    println!("generating and projecting {n} events over the 90 days before now …");
    let mut rng = Rng(0x5eed_da5b);
    let (mut gen_t, mut proj_t) = (Duration::ZERO, Duration::ZERO);
    let (mut files, mut rows, mut json_bytes) = (0u64, 0u64, 0u64);
    let mut s = String::with_capacity(1024);
    let chunk = config.read_batch_records.max(1) as u64;
    let mut i = 0;
    while i < n {
        let t0 = Instant::now();
        let m = chunk.min(n - i);
        let mut entries = Vec::with_capacity(m as usize);
        for j in i..i + m {
            event(&mut rng, j, n, end, &mut s);
            json_bytes += s.len() as u64;
            entries.push(LogEntry {
                partition: 0,
                offset: j,
                key: Bytes::new(),
                value: Bytes::copy_from_slice(s.as_bytes()),
            });
        }
        let t1 = Instant::now();
        gen_t += t1 - t0;
        p.push(entries);
        if p.should_flush() {
            let r = p.flush()?;
            files += r.files;
            rows += r.rows;
        }
        proj_t += t1.elapsed();
        i += m;
    }
    let t1 = Instant::now();
    let r = p.flush()?;
    files += r.files;
    rows += r.rows;
    proj_t += t1.elapsed();
    drop(p);
    if rows != n {
        bail!("projected {rows} rows of {n} events");
    }
    println!(
        "  generation: {:.1} s ({:.0} events/s, {:.1} MiB of JSON)",
        gen_t.as_secs_f64(),
        n as f64 / gen_t.as_secs_f64(),
        json_bytes as f64 / 1048576.0
    );
    println!(
        "  projection (ParquetProjector push + flush): {:.1} s ({:.0} events/s, {files} files committed)",
        proj_t.as_secs_f64(),
        n as f64 / proj_t.as_secs_f64()
    );
    let t = Instant::now();
    let c = shiplog_store::compact(data_dir, Utc::now()).context("compaction")?;
    println!(
        "  compaction of the closed days (as the nightly compaction of a server): {:.1} s, {} files → {} files, {} rows",
        t.elapsed().as_secs_f64(),
        c.files_in,
        c.files_out,
        c.rows
    );
    Ok(())
}

fn json_to_duck(v: &Value) -> duckdb::types::Value {
    use duckdb::types::Value as D;
    match v {
        Value::Null => D::Null,
        Value::Bool(b) => D::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => D::BigInt(i),
            None => D::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => D::Text(s.clone()),
        other => D::Text(other.to_string()),
    }
}

/// Views of the same names over the same files, on a plain in-memory DuckDB.
fn raw_connection(root: &Path) -> Result<duckdb::Connection> {
    let conn = duckdb::Connection::open_in_memory()?;
    let mut union = Vec::new();
    let env = ENVELOPE_COLUMNS
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    for kind in Kind::ALL {
        let glob = root.join(kind.as_str()).join("*").join("*.parquet");
        conn.execute_batch(&format!(
            "CREATE VIEW {} AS SELECT * FROM read_parquet('{}', union_by_name = true, hive_partitioning = false)",
            kind.view_name(),
            glob.to_string_lossy().replace('\'', "''")
        ))?;
        union.push(format!(
            "SELECT '{}' AS kind, {env} FROM {}",
            kind.as_str(),
            kind.view_name()
        ));
    }
    conn.execute_batch(&format!(
        "CREATE VIEW events AS {}",
        union.join(" UNION ALL ")
    ))?;
    Ok(conn)
}

/// One panel's query, expanded exactly as the engine does.
struct Prepared {
    sql: String,
    params: Vec<duckdb::types::Value>,
}

fn raw_query(conn: &duckdb::Connection, q: &Prepared) -> Result<usize> {
    let mut stmt = conn.prepare(&q.sql)?;
    let arrow = stmt.query_arrow(duckdb::params_from_iter(q.params.iter()))?;
    Ok(arrow.map(|b| b.num_rows()).sum())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Row {
    page: String,
    panels: usize,
    shiplog_ms: f64,
    raw_seq_ms: f64,
    raw_par_ms: f64,
}

/// `shiplog bench dashboards`; `open_engine` gives shiplog's engine over the projection.
pub fn run(
    args: Args,
    open_engine: impl FnOnce(Arc<QueryEngine>) -> Result<Box<dyn DashboardEngine>>,
) -> Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("shiplog-bench-dashboards-{}", args.events))
    });
    let root = shiplog_store::parquet_dir(&data_dir);
    if root.join("_state.json").exists() && parquet_files(&root).0 > 6 {
        println!("reusing the projection in {}", data_dir.display());
    } else {
        std::fs::create_dir_all(&data_dir)?;
        generate(&data_dir, args.events)?;
    }
    let (files, bytes) = parquet_files(&root);
    println!(
        "data: {} ({files} Parquet files, {:.1} MiB)",
        root.display(),
        bytes as f64 / 1048576.0
    );

    let t = Instant::now();
    let qe = Arc::new(QueryEngine::open(&data_dir)?);
    println!(
        "QueryEngine::open: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let engine = open_engine(qe.clone())?;
    let raw = raw_connection(qe.parquet_dir())?;
    let total: i64 = raw.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    println!("events in the views: {total}");
    let deployment: String = raw.query_row(
        "SELECT deployment_id FROM deploys WHERE status = 'succeeded' AND env = 'production' ORDER BY time DESC LIMIT 1",
        [],
        |r| r.get(0),
    )?;
    let pages = engine.pages(&deployment)?;

    let runs = args.runs.max(1);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (index, page) in pages.iter().enumerate() {
        let label = &page.label;
        if !args.pages.is_empty() && !args.pages.iter().any(|p| label.contains(p.as_str())) {
            continue;
        }
        let prepared: Vec<Prepared> = page
            .panels
            .iter()
            .map(|(sql, params)| Prepared {
                sql: sql.clone(),
                params: params.iter().map(json_to_duck).collect(),
            })
            .collect();
        let conns: Vec<std::sync::Mutex<duckdb::Connection>> = prepared
            .iter()
            .map(|_| raw.try_clone().map(std::sync::Mutex::new))
            .collect::<Result<_, _>>()?;

        let shiplog_once = || -> Result<(f64, Vec<usize>, Vec<Option<f64>>)> {
            let t = Instant::now();
            let out = engine.run(index);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let mut counts = Vec::new();
            let mut values = Vec::new();
            for o in &out {
                values.push(o.value);
                if let Some(e) = &o.error {
                    bail!("{label}: {e}");
                }
                counts.push(o.rows);
            }
            Ok((ms, counts, values))
        };
        let raw_seq_once = || -> Result<(f64, Vec<usize>)> {
            let t = Instant::now();
            let counts = prepared
                .iter()
                .map(|q| raw_query(&raw, q))
                .collect::<Result<Vec<_>>>()?;
            Ok((t.elapsed().as_secs_f64() * 1000.0, counts))
        };
        let raw_par_once = || -> Result<f64> {
            let t = Instant::now();
            std::thread::scope(|s| {
                let hs: Vec<_> = prepared
                    .iter()
                    .zip(&conns)
                    .map(|(q, c)| s.spawn(move || raw_query(&c.lock().expect("conn"), q)))
                    .collect();
                for h in hs {
                    h.join().expect("raw query thread")?;
                }
                Ok::<_, anyhow::Error>(())
            })?;
            Ok(t.elapsed().as_secs_f64() * 1000.0)
        };
        // warm up once, and check both return the same number of rows per panel
        let a = match shiplog_once() {
            Ok((_, a, values)) => {
                println!("  {label:<28} judged values: {values:?}");
                a
            }
            Err(e) => {
                // a panel that fails (e.g. times out after PANEL_TIMEOUT) fails the page
                println!("  {label:<28} FAILED: {e:#}");
                failures.push(format!("{label}: {e:#}"));
                continue;
            }
        };
        let (_, b) = raw_seq_once()?;
        raw_par_once()?;
        if a != b {
            bail!("{label}: row counts differ: shiplog {a:?}, duckdb {b:?}");
        }
        let (mut s, mut rs, mut rp) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            s.push(shiplog_once()?.0);
            rs.push(raw_seq_once()?.0);
            rp.push(raw_par_once()?);
        }
        let row = Row {
            page: label.clone(),
            panels: prepared.len(),
            shiplog_ms: median(s),
            raw_seq_ms: median(rs),
            raw_par_ms: median(rp),
        };
        println!(
            "  {:<28} {:>2} panels  shiplog {:>8.1} ms  duckdb {:>8.1} ms (sequential {:.1}, concurrent {:.1})  ratio {:.2}  rows {:?}",
            row.page,
            row.panels,
            row.shiplog_ms,
            row.raw_seq_ms.min(row.raw_par_ms),
            row.raw_seq_ms,
            row.raw_par_ms,
            row.shiplog_ms / row.raw_seq_ms.min(row.raw_par_ms),
            a
        );
        rows.push(row);
    }

    println!();
    println!(
        "median of {runs} runs after one warm-up; duckdb = the faster of the same queries run one after another on one connection and concurrently on one connection each"
    );
    println!("| page | panels | shiplog ms | DuckDB ms | ratio |");
    println!("|---|---|---|---|---|");
    let (mut ts, mut tr) = (0.0, 0.0);
    let mut worst: f64 = 0.0;
    for r in &rows {
        let base = r.raw_seq_ms.min(r.raw_par_ms);
        ts += r.shiplog_ms;
        tr += base;
        worst = worst.max(r.shiplog_ms / base);
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} |",
            r.page,
            r.panels,
            r.shiplog_ms,
            base,
            r.shiplog_ms / base
        );
    }
    println!(
        "| **all pages** | | **{ts:.1}** | **{tr:.1}** | **{:.2}** (worst page {worst:.2}; goal ≤ 1.3) |",
        ts / tr
    );
    for f in &failures {
        println!("FAILED (not in the table): {f}");
    }
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        for l in s.lines().filter(|l| l.starts_with("VmHWM")) {
            println!("peak RSS of this process ({l})");
        }
    }
    Ok(())
}
