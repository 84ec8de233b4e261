//! Operations commands: `query` (over HTTP) and `replay` (on a stopped server's data dir).

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
    if !data_dir.join("log").exists() {
        bail!("{} holds no log: nothing to replay", data_dir.display());
    }
    let _lock = DataDirLock::acquire(data_dir, "shiplog replay")?;
    eprintln!(
        "shiplog replay: rebuilding the projections in {} from the log; the server must stay \
         stopped until this finishes",
        data_dir.join("parquet").display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let log = open_file_log(config)?;
        let pconfig = projector_config(config)?;
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
        let report = shiplog_store::replay(&log, data_dir, &pconfig, &mut progress).await;
        bar.finish();
        log.close().await?;
        anyhow::Ok(report?)
    })?;
    eprintln!(
        "shiplog replay: {} events → {} rows in {} files ({} skipped) in {:.1}s ({:.0} events/s)",
        report.events,
        report.rows,
        report.files,
        report.skipped,
        report.elapsed.as_secs_f64(),
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}
