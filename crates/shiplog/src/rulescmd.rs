//! `shiplog rules backtest`: the client of `GET`/`POST /v1/rules/backtest` (served by
//! `shiplog_web::backtest`). The deployments in the server's log judged by its rollback
//! rules, or by the `[[rules]]` of `--config FILE` (a candidate set), without acting.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BacktestFormat {
    /// Per rule: judged, would roll back, healthy, inconclusive; then the flagged list.
    Table,
    Json,
}

pub struct BacktestArgs<'a> {
    pub url: &'a str,
    pub token: Option<&'a str>,
    pub candidate: Option<&'a Path>,
    pub rule: Option<&'a str>,
    pub since: &'a str,
    pub format: BacktestFormat,
}

pub fn backtest(a: BacktestArgs<'_>) -> Result<ExitCode> {
    shiplog_web::backtest::parse_since(a.since).map_err(anyhow::Error::msg)?;
    let body = match a.candidate {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the candidate rules {}", p.display()))?,
        ),
        None => None,
    };
    let format = match a.format {
        BacktestFormat::Table => "table",
        BacktestFormat::Json => "json",
    };
    let mut query = vec![
        ("since", a.since.to_string()),
        ("format", format.to_string()),
    ];
    if let Some(r) = a.rule {
        query.push(("rule", r.to_string()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?;
        let endpoint = format!("{}/v1/rules/backtest", a.url.trim_end_matches('/'));
        let mut req = match &body {
            Some(b) => client
                .post(&endpoint)
                .header("content-type", "application/toml")
                .body(b.clone()),
            None => client.get(&endpoint),
        }
        .query(&query);
        if let Some(t) = a.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach shiplog at {}", a.url))?;
        let status = resp.status();
        anyhow::Ok((status, resp.text().await?))
    })?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(text);
        eprintln!("shiplog: backtest refused ({status}): {msg}");
        return Ok(ExitCode::from(2));
    }
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
