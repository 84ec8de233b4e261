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

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chrono::{DateTime, Duration as CDuration, Utc};
use serde_json::Value;
use shiplog_events::Kind;
use shiplog_log::LogEntry;
use shiplog_store::{ParquetProjector, ProjectorConfig, QueryEngine, ENVELOPE_COLUMNS};
use shiplog_web::dashboards::{self, engine, Ctx, Dashboard, DashboardState};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Args {
    pub events: u64,
    pub data_dir: Option<PathBuf>,
    pub runs: usize,
    /// Only the pages whose label (`builds 30d`, `deployment …`) contains one of these.
    pub pages: Vec<String>,
}

/// xorshift64*: deterministic and cheap.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PROJECTS: [&str; 4] = ["web-app", "checkout", "api", "docs"];

/// Event `i` of `n`, spread evenly over the 90 days before `end`. Consecutive groups of 40
/// events share a project, environment, commit and deployment (a deploy's build, checks,
/// costs …), so joins by commit and deployment find their partners.
fn event(rng: &mut Rng, i: u64, n: u64, end: DateTime<Utc>, out: &mut String) {
    out.clear();
    let span_us = 90 * 86_400 * 1_000_000i64;
    let t = end - CDuration::microseconds(span_us)
        + CDuration::microseconds((i as i128 * span_us as i128 / n.max(1) as i128) as i64);
    let time = shiplog_events::format_rfc3339(&t);
    let g = i / 40;
    let project = PROJECTS[(g % 4) as usize];
    let env = match g % 10 {
        0..=5 => "production",
        6..=8 => "preview",
        _ => "staging",
    };
    let dep = format!("dpl_{g:09x}");
    let commit = format!("{:016x}{:016x}", g.wrapping_mul(0x9E37_79B9_7F4A_7C15), g);
    let r = rng.below(100);
    let (kind, source, data) = if r < 55 {
        let data = match rng.below(4) {
            0 => format!(
                r#"{{"name":"smoke","passed":{},"unit":"bool"}}"#,
                rng.below(20) != 0
            ),
            1 => format!(
                r#"{{"name":"health","passed":{},"value":200,"unit":"status"}}"#,
                rng.below(50) != 0
            ),
            2 => format!(
                r#"{{"name":"error_rate","passed":true,"value":{},"unit":"ratio"}}"#,
                rng.below(300) as f64 / 10000.0
            ),
            _ => format!(
                r#"{{"name":"latency_p95","passed":true,"value":{},"unit":"ms"}}"#,
                80.0 + rng.below(4000) as f64 / 10.0
            ),
        };
        ("check", "checks/probe", data)
    } else if r < 70 {
        // builds slow down and grow over the 90 days
        let age = i as f64 / n.max(1) as f64;
        let dur = 25_000 + (age * 40_000.0) as u64 + rng.below(50_000);
        let bundle = 600_000 + (age * 500_000.0) as u64 + rng.below(300_000);
        let mut chunks = String::new();
        for c in 0..(2 + rng.below(3)) {
            if c > 0 {
                chunks.push(',');
            }
            let _ = write!(
                chunks,
                r#"{{"name":"assets/chunk-{c}-{:06x}.js","bytes":{},"gzip_bytes":{}}}"#,
                rng.below(1 << 24),
                20_000 + rng.below(200_000),
                6_000 + rng.below(60_000)
            );
        }
        let data = format!(
            r#"{{"tool":"vite","tool_version":"8.3.0","mode":"production","success":{},"duration_ms":{dur},"phases":[{{"name":"transform","duration_ms":{}}},{{"name":"render","duration_ms":{}}},{{"name":"write","duration_ms":{}}}],"modules_transformed":{},"modules_total":4000,"bundle_bytes":{bundle},"gzip_bytes":{},"chunks":[{chunks}],"assets":[{{"name":"index.html","bytes":1200}}],"ci":{{"provider":"github","run_id":"{}","url":"https://github.com/acme/{project}/actions/runs/{}"}}}}"#,
            rng.below(20) != 0,
            dur * 6 / 10,
            dur * 3 / 10,
            dur / 20,
            500 + rng.below(3000),
            bundle * 3 / 10,
            9_000_000_000u64 + i,
            9_000_000_000u64 + i
        );
        ("build", "vite-plugin", data)
    } else if r < 82 {
        let (provider, model, price) = match rng.below(4) {
            0 => ("openai", "gpt-4.1-mini", 0.000_000_4),
            1 => ("openai", "gpt-4.1", 0.000_002),
            2 => ("anthropic", "claude-sonnet-4", 0.000_003),
            _ => ("anthropic", "claude-haiku-4", 0.000_001),
        };
        let feature = ["summaries", "search", "chat", "tagging"][rng.below(4) as usize];
        let inp = 200 + rng.below(20_000);
        let outp = rng.below(4_000);
        let data = format!(
            r#"{{"provider":"{provider}","model":"{model}","input_tokens":{inp},"output_tokens":{outp},"cached_tokens":{},"requests":1,"cost_usd":{},"feature":"{feature}"}}"#,
            rng.below(inp / 2),
            (inp as f64 + 4.0 * outp as f64) * price
        );
        ("api_cost", "app/worker", data)
    } else if r < 92 {
        let status = match rng.below(100) {
            0..=29 => "started",
            30..=74 => "succeeded",
            75..=82 => "failed",
            83..=87 => "rolled_back",
            _ => "promoted",
        };
        let data = format!(
            r#"{{"status":"{status}","url":"https://{project}-{dep}.vercel.app","provider":"vercel","previous_deployment_id":"dpl_{:09x}","duration_ms":{},"triggered_by":"ci"}}"#,
            g.saturating_sub(1),
            30_000 + rng.below(60_000)
        );
        ("deploy", "vercel", data)
    } else if r < 97 {
        let ok = rng.below(15) != 0;
        let data = format!(
            r#"{{"tool":"alembic","database":"main","version":"2026{:05}","name":"add_orders_index","status":"{}","duration_ms":{},"error":{},"checksum":"{:016x}"}}"#,
            rng.below(100_000),
            if ok { "applied" } else { "failed" },
            rng.below(60_000),
            if ok {
                "null"
            } else {
                r#""relation \"orders\" does not exist""#
            },
            rng.next()
        );
        ("migration", "shiplog-migrate", data)
    } else {
        let (verdict, action, outcome) = match rng.below(10) {
            0 => ("degraded", "\"rollback\"", "\"rolled_back\""),
            1 => ("alert", "\"notify\"", "\"sent\""),
            _ => ("healthy", "null", "null"),
        };
        let data = format!(
            r#"{{"rule":"error-rate-after-deploy","verdict":"{verdict}","metric":"error_rate","value":{},"baseline":0.01,"threshold":0.02,"samples":{},"action":{action},"outcome":{outcome},"dry_run":{}}}"#,
            rng.below(400) as f64 / 10000.0,
            50 + rng.below(500),
            rng.below(5) == 0
        );
        ("decision", "shiplog-rules", data)
    };
    let _ = write!(
        out,
        r#"{{"id":"bench-{i:012}","kind":"{kind}","source":"{source}","time":"{time}","received_at":"{time}","project":"{project}","env":"{env}","commit":"{commit}","branch":"main","deployment_id":"{dep}","data":{data}}}"#
    );
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

pub fn run(args: Args) -> Result<()> {
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

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let t = Instant::now();
    let qe = Arc::new(QueryEngine::open(&data_dir)?);
    println!(
        "QueryEngine::open: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    // the built-ins, or a folder's overrides (as `dashboards_dir` in the config)
    let state = DashboardState::new(
        shiplog_web::auth::Auth::new(vec![]),
        Some(qe.clone()),
        std::env::var_os("SHIPLOG_DASHBOARDS_DIR")
            .map(PathBuf::from)
            .as_deref(),
        engine::Thresholds::new(engine::default_thresholds(), &engine::default_budgets()),
    );
    let raw = raw_connection(qe.parquet_dir())?;
    let total: i64 = raw.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    println!("events in the views: {total}");
    let deployment: String = raw.query_row(
        "SELECT deployment_id FROM deploys WHERE status = 'succeeded' AND env = 'production' ORDER BY time DESC LIMIT 1",
        [],
        |r| r.get(0),
    )?;

    let now = Utc::now();
    let mut cases: Vec<(String, &Dashboard, Ctx)> = Vec::new();
    for range in ["30d", "90d"] {
        let q: HashMap<String, String> = [("range".to_string(), range.to_string())].into();
        let ctx = dashboards::parse_ctx(&q, now).map_err(anyhow::Error::msg)?;
        for name in [
            "overview",
            "builds",
            "deploys",
            "migrations",
            "costs",
            "decisions",
        ] {
            let d = state
                .dashboards
                .get(name)
                .with_context(|| format!("no built-in dashboard {name}"))?;
            cases.push((format!("{name} {range}"), d, ctx.clone()));
        }
    }
    {
        // as the `/deployments/{id}` route does
        let mut ctx = dashboards::parse_ctx(&HashMap::new(), now).map_err(anyhow::Error::msg)?;
        ctx.deployment = Some(deployment.clone());
        ctx.range = "90d".into();
        ctx.from = ctx.to - CDuration::days(365);
        let d = state.dashboards.get("deployment").context("deployment")?;
        cases.push((format!("deployment {deployment}"), d, ctx));
    }

    let runs = args.runs.max(1);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (label, d, ctx) in &cases {
        if !args.pages.is_empty() && !args.pages.iter().any(|p| label.contains(p.as_str())) {
            continue;
        }
        let mut prepared = Vec::new();
        for p in d.panels.iter() {
            let spec = p.as_ref().map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
            let (sql, params) = engine::expand(&spec.sql, ctx).map_err(anyhow::Error::msg)?;
            prepared.push(Prepared {
                sql,
                params: params.iter().map(json_to_duck).collect(),
            });
        }
        let conns: Vec<std::sync::Mutex<duckdb::Connection>> = prepared
            .iter()
            .map(|_| raw.try_clone().map(std::sync::Mutex::new))
            .collect::<Result<_, _>>()?;

        let shiplog_once = || -> Result<(f64, Vec<usize>, Vec<Option<f64>>)> {
            let t = Instant::now();
            let out = rt.block_on(dashboards::run_dashboard(&state, d, ctx));
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let mut counts = Vec::new();
            let mut values = Vec::new();
            for o in &out {
                values.push(o.data.value);
                if let Some(e) = &o.data.error {
                    bail!("{label}: {e}");
                }
                counts.push(o.data.rows.len());
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
