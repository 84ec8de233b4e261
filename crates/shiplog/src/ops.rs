//! Operations commands: `query` (over HTTP), `replay` and `reprice` (on a stopped server's
//! data dir).

use crate::config::Config;
use crate::datadir::DataDirLock;
use crate::serve::{open_file_log, projector_config};
use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde_json::Value;
use shiplog_log::Log;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// `shiplog query "SQL"`: runs a read-only query on a server and prints the result.
pub fn query(url: &str, token: Option<&str>, sql: &str, format: Format) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let mut req = client
            .post(format!("{}/v1/query", url.trim_end_matches('/')))
            .json(&serde_json::json!({ "sql": sql }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach shiplog at {url}"))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .context("the server's answer is not JSON")?;
        anyhow::Ok((status, body))
    })?;
    if !status.is_success() {
        let msg = body["error"].as_str().unwrap_or("query failed");
        eprintln!("shiplog: query refused ({status}): {msg}");
        return Ok(ExitCode::from(1));
    }
    let columns: Vec<String> = serde_json::from_value(body["columns"].clone())?;
    let rows: Vec<Vec<Value>> = serde_json::from_value(body["rows"].clone())?;
    print!("{}", render(&columns, &rows, format));
    Ok(ExitCode::SUCCESS)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders a result as a table, JSON (an array of objects) or CSV.
pub fn render(columns: &[String], rows: &[Vec<Value>], format: Format) -> String {
    match format {
        Format::Json => {
            let objects: Vec<Value> = rows
                .iter()
                .map(|r| Value::Object(columns.iter().cloned().zip(r.iter().cloned()).collect()))
                .collect();
            format!("{}\n", serde_json::to_string_pretty(&objects).unwrap())
        }
        Format::Csv => {
            let esc = |s: String| {
                if s.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s
                }
            };
            let mut out = columns
                .iter()
                .map(|c| esc(c.clone()))
                .collect::<Vec<_>>()
                .join(",");
            out.push('\n');
            for r in rows {
                out.push_str(&r.iter().map(|v| esc(cell(v))).collect::<Vec<_>>().join(","));
                out.push('\n');
            }
            out
        }
        Format::Table => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header(columns);
            for r in rows {
                t.add_row(r.iter().map(cell));
            }
            format!(
                "{t}\n({} row{})\n",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" }
            )
        }
    }
}

/// `shiplog replay`: deletes the projections and rebuilds them from the log.
pub fn replay(config: &Config) -> Result<ExitCode> {
    let data_dir = &config.server.data_dir;
    if config.log.is_kafka() {
        // The processors must be stopped: the projection directory's own lock (taken by
        // the replay) refuses otherwise. Kafka must still hold every partition from offset 0.
        eprintln!(
            "shiplog replay: rebuilding the projections in {} from Kafka topic {}; stop every \
             processor until this finishes",
            data_dir.join("parquet").display(),
            config.log.topic
        );
        let mut pc = projector_config(config)?;
        pc.dedup_window = Some(config.server.dedup_window);
        let report = rebuild(config, pc)?;
        eprintln!(
            "shiplog replay: {} events → {} rows in {} files ({} skipped) in {:.1}s",
            report.events,
            report.rows,
            report.files,
            report.skipped,
            report.elapsed.as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !data_dir.join("log").exists() {
        bail!("{} holds no log: nothing to replay", data_dir.display());
    }
    let _lock = DataDirLock::acquire(data_dir, "shiplog replay")?;
    eprintln!(
        "shiplog replay: rebuilding the projections in {} from the log; the server must stay \
         stopped until this finishes",
        data_dir.join("parquet").display()
    );
    let report = rebuild(config, projector_config(config)?)?;
    if let Some(kept) = &report.kept {
        eprintln!("{}", describe_kept(kept, config.log.is_kafka()));
    }
    eprintln!(
        "shiplog replay: {} events → {} rows in {} files ({} skipped, of which {} records \
         lost to damage in the log) in {:.1}s ({:.0} events/s)",
        report.events,
        report.rows,
        report.files,
        report.skipped,
        report.lost,
        report.elapsed.as_secs_f64(),
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// What a replay over a log shortened by retention (`[log.retention]`, or the Kafka topic's
/// own) kept instead of rebuilding.
fn describe_kept(kept: &shiplog_store::KeptBelow, kafka: bool) -> String {
    let removed = match kafka {
        true => "the topic's retention deleted the events before",
        false => "[log.retention] removed the events before",
    };
    let starts = kept
        .below
        .iter()
        .filter(|(_, s)| **s > 0 || kept.below.len() == 1)
        .map(|(p, s)| match kept.below.len() {
            1 => format!("offset {s}"),
            _ => format!("offset {s} of partition {p}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let days = match kept.days {
        Some((a, b)) if a == b => format!(", day {a}"),
        Some((a, b)) => format!(", days {a} to {b}"),
        None => String::new(),
    };
    format!(
        "shiplog replay: the log starts at {starts} ({removed}): those cannot be rebuilt, \
         so their Parquet rows were KEPT as they were: {} \
         rows in {} files{days} ({} files cut at the log's start); only the events from the \
         log's start on were rebuilt",
        kept.rows, kept.files, kept.cut
    )
}

/// Rebuilds the projections of a data dir whose lock the caller holds.
fn rebuild(
    config: &Config,
    pconfig: shiplog_store::ProjectorConfig,
) -> Result<shiplog_store::ReplayReport> {
    let data_dir = &config.server.data_dir;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let log: Box<dyn Log> = if config.log.is_kafka() {
            Box::new(crate::serve::open_kafka_log(config).await?)
        } else {
            Box::new(open_file_log(config)?)
        };
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {human_pos}/{human_len} events, \
                 {per_sec}, ETA {eta}",
            )
            .expect("valid template"),
        );
        let mut progress = |p: shiplog_store::ReplayProgress| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        };
        let report = shiplog_store::replay(log.as_ref(), data_dir, &pconfig, &mut progress).await;
        bar.finish();
        log.close().await?;
        anyhow::Ok(report?)
    })
}

/// Total cost per provider and model of the `api_costs` projection:
/// `(provider, model) → (rows, USD, unpriced rows)`.
type CostTotals = std::collections::BTreeMap<(String, String), (i64, f64, i64)>;

fn cost_totals(data_dir: &std::path::Path) -> Result<CostTotals> {
    let q = shiplog_store::QueryEngine::open(data_dir).context("cannot open DuckDB")?;
    let r = q
        .query_internal(
            "SELECT coalesce(provider, '') AS provider, coalesce(model, '') AS model, \
             count(*)::BIGINT AS n, coalesce(sum(cost_usd), 0)::DOUBLE AS usd, \
             count(*) FILTER (WHERE cost_usd IS NULL)::BIGINT AS unpriced \
             FROM api_costs GROUP BY ALL",
            &[],
            Duration::from_secs(600),
        )
        .map_err(|e| anyhow::anyhow!("reading api_costs: {e}"))?;
    let mut out = CostTotals::new();
    for row in r.rows {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        out.insert(
            (s(&row[0]), s(&row[1])),
            (
                row[2].as_i64().unwrap_or(0),
                row[3].as_f64().unwrap_or(0.0),
                row[4].as_i64().unwrap_or(0),
            ),
        );
    }
    Ok(out)
}

/// `shiplog reprice [--prices FILE]`: re-prices the history of `api_cost` events with the
/// current price table (the shipped one, `[pricing] prices_file`, or `--prices`, each
/// overriding and extending the shipped table) by rebuilding the projections from the log,
/// and prints the cost per provider and model before and after. Costs the clients sent are
/// kept. The server must be stopped (the data dir lock refuses otherwise).
pub fn reprice(config: &Config, prices: Option<&std::path::Path>) -> Result<ExitCode> {
    let data_dir = &config.server.data_dir;
    if !data_dir.join("log").exists() {
        bail!("{} holds no log: nothing to reprice", data_dir.display());
    }
    let mut pconfig = projector_config(config)?;
    if let Some(p) = prices {
        pconfig.prices = std::sync::Arc::new(
            shiplog_store::PriceTable::shipped_with_file(p).map_err(anyhow::Error::msg)?,
        );
    }
    let _lock = DataDirLock::acquire(data_dir, "shiplog reprice")?;
    let before = cost_totals(data_dir)?;
    eprintln!(
        "shiplog reprice: rebuilding the projections in {} from the log with the current \
         price table; the server must stay stopped until this finishes",
        data_dir.join("parquet").display()
    );
    let report = rebuild(config, pconfig)?;
    if let Some(kept) = &report.kept {
        // Kept rows keep the prices they were projected with.
        eprintln!(
            "{} (their costs are not re-priced)",
            describe_kept(kept, config.log.is_kafka()).replace("shiplog replay", "shiplog reprice")
        );
    }
    let after = cost_totals(data_dir)?;
    let keys: std::collections::BTreeSet<_> = before.keys().chain(after.keys()).collect();
    let columns: Vec<String> = [
        "provider",
        "model",
        "records",
        "before_usd",
        "after_usd",
        "change_usd",
        "unpriced",
    ]
    .map(String::from)
    .to_vec();
    let usd = |v: f64| Value::String(format!("{v:.6}"));
    let mut rows = Vec::new();
    let (mut tb, mut ta) = (0.0, 0.0);
    for k in keys {
        let (_, b, _) = before.get(k).copied().unwrap_or_default();
        let (n, a, u) = after.get(k).copied().unwrap_or_default();
        tb += b;
        ta += a;
        rows.push(vec![
            Value::String(k.0.clone()),
            Value::String(k.1.clone()),
            Value::from(n),
            usd(b),
            usd(a),
            usd(a - b),
            Value::from(u),
        ]);
    }
    rows.push(vec![
        Value::String("total".into()),
        Value::String(String::new()),
        Value::from(after.values().map(|v| v.0).sum::<i64>()),
        usd(tb),
        usd(ta),
        usd(ta - tb),
        Value::from(after.values().map(|v| v.2).sum::<i64>()),
    ]);
    print!("{}", render(&columns, &rows, Format::Table));
    eprintln!(
        "shiplog reprice: {} events → {} rows in {:.1}s; api cost {:.6} → {:.6} USD",
        report.events,
        report.rows,
        report.elapsed.as_secs_f64(),
        tb,
        ta
    );
    Ok(ExitCode::SUCCESS)
}

/// `shiplog verify`: the log (as `log verify`), then the projection against its commit
/// point, with the server stopped (it takes the data dir lock, and opening the
/// projection completes an interrupted commit as `serve` would).
pub fn verify(config: &Config) -> Result<ExitCode> {
    let data_dir = &config.server.data_dir;
    if config.log.is_kafka() {
        bail!(
            "shiplog verify checks the embedded file log and its projection; with Kafka, \
             each processor checks its projection at start (shiplog_projection_missing_events)"
        );
    }
    let _lock = DataDirLock::acquire(data_dir, "shiplog verify")?;
    let log_sound = verify_log(config)? == ExitCode::SUCCESS;
    let mut sound = true;
    let pconfig = projector_config(config)?;
    let projector = shiplog_store::ParquetProjector::open(data_dir, pconfig.clone())
        .context("cannot open the projection")?;
    let coverage = projector.coverage()?;
    let audit = projector.audit_offsets()?;
    let root = shiplog_store::parquet_dir(data_dir);
    for (part, c) in &coverage.partitions {
        println!(
            "{}: partition {part}: {} events committed, {} rows in {} files, {} without a row \
             (dead letters, damaged log records, retention)",
            root.display(),
            c.committed,
            c.rows,
            coverage.files,
            c.absent
        );
    }
    if !coverage.tracked {
        println!(
            "note: the projection state predates row accounting; the row counts are checked \
             after the next `shiplog replay` (the offsets are checked now)"
        );
    }
    for (part, offset, rows) in &audit.duplicates {
        sound = false;
        println!("DUPLICATE partition {part} offset {offset}: {rows} rows");
    }
    if audit.beyond > 0 {
        sound = false;
        println!(
            "AHEAD {} rows hold offsets at or past the committed offset (a file copied in by hand?)",
            audit.beyond
        );
    }
    if !audit.gaps.is_empty() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let gaps = rt.block_on(async {
            let log = open_file_log(config)?;
            let r = shiplog_store::describe_gaps(
                &log,
                &audit.gaps,
                &pconfig.retention_days,
                chrono::Utc::now(),
                u64::MAX,
            )
            .await;
            log.close().await?;
            anyhow::Ok(r?)
        })?;
        for m in &gaps.missing {
            if m.expired {
                continue;
            }
            sound = false;
            println!(
                "MISSING {}: {} event(s), offsets {}..={} of partition {}",
                root.join(&m.file).display(),
                m.count,
                m.first,
                m.last,
                m.partition
            );
        }
        if gaps.lost_in_log > 0 {
            sound = false;
            println!(
                "MISSING {} offset(s) that the log itself lost to damage and the projection has \
                 no dead letter for",
                gaps.lost_in_log
            );
        }
    }
    if coverage.tracked && (coverage.missing() > 0 || coverage.extra() > 0) {
        sound = false;
        println!(
            "the row counts do not add up: {} committed event(s) missing, {} row(s) extra",
            coverage.missing(),
            coverage.extra()
        );
    }
    if sound {
        println!(
            "projection: every committed event is in exactly one Parquet row or a dead letter"
        );
    } else {
        println!(
            "to repair the projection, run `shiplog replay` (server stopped): it rebuilds \
             every Parquet file from the log"
        );
    }
    Ok(if sound && log_sound {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `shiplog log verify`: scans every segment of the data dir's log and reports damage.
pub fn verify_log(config: &Config) -> Result<ExitCode> {
    let dir = crate::datadir::log_dir(&config.server.data_dir);
    if !dir.exists() {
        bail!("{} holds no log", config.server.data_dir.display());
    }
    let report = shiplog_log::file::verify(&dir)
        .with_context(|| format!("cannot verify the log in {}", dir.display()))?;
    println!(
        "{}: {} segments, {} records, {} bytes",
        dir.display(),
        report.segments,
        report.records,
        report.bytes
    );
    if !report.removed.is_empty() {
        println!(
            "offsets {}..{} were removed by retention ([log.retention]): the log starts at {}",
            report.removed.start, report.removed.end, report.removed.end
        );
    }
    for f in &report.leftovers {
        println!(
            "{}: below the log's start, left by an interrupted retention pass (the next start \
             deletes it)",
            f.display()
        );
    }
    if report.damage.is_empty() {
        println!("clean: every record's CRC32C and offset check out");
        return Ok(ExitCode::SUCCESS);
    }
    for d in &report.damage {
        if d.missing {
            // Offsets in no bytes at all: segment files deleted, or a segment cut short.
            let r = d.lost.clone().unwrap_or_default();
            let n = r.end - r.start;
            println!(
                "MISSING offsets {}..={} ({n} record{}): {}",
                r.start,
                r.end.saturating_sub(1),
                if n == 1 { "" } else { "s" },
                d.reason
            );
            continue;
        }
        let lost = match &d.lost {
            Some(r) if r.is_empty() => "no record lost (bytes between records)".to_string(),
            Some(r) if r.end - r.start == 1 => format!("record at offset {} lost", r.start),
            Some(r) => format!(
                "{} records lost (offsets {}..={})",
                r.end - r.start,
                r.start,
                r.end - 1
            ),
            None => "the records in it are unknown".to_string(),
        };
        println!(
            "DAMAGED {} bytes {}..{}: {}; {lost}",
            d.segment.display(),
            d.position,
            d.end,
            d.reason
        );
    }
    println!(
        "{} damaged or missing range(s), {} record(s) lost. Readers (serve, replay, \
         migrate-log) skip them and keep every other record; the projection records the lost \
         offsets it had not projected in parquet/_deadletter/. To get the records back, \
         restore the damaged or deleted segment files from a backup while shiplog is stopped, \
         then run `shiplog replay` (docs/operations.md)",
        report.damage.len(),
        report.lost_records()
    );
    Ok(ExitCode::from(1))
}
