//! `shiplog gate`: may this project/env be deployed now? The client of `GET /v1/gate`
//! (served by `shiplog_web::gate`).
//!
//! The server answers from the rules engine's state (rebuilt from the log, so it is current
//! to the last acknowledged event): failed migrations since the last successful deploy (a
//! later applied migration of the same database clears one), threshold rules in alert, and
//! a rollback in progress. The CLI exits 0 when deploying is safe, 1 when it is not, and 2
//! on usage or connection errors.

use anyhow::{Context, Result};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum GateFormat {
    Text,
    Json,
}

/// `shiplog gate --project P --env E`.
pub fn run(
    url: &str,
    token: Option<&str>,
    project: &str,
    env: &str,
    format: GateFormat,
) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body: Value = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut req = client
            .get(format!("{}/v1/gate", url.trim_end_matches('/')))
            .query(&[("project", project), ("env", env)]);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        // The server answers 503 while it rebuilds its state: wait a little.
        for attempt in 0..20 {
            let resp = req
                .try_clone()
                .expect("no streaming body")
                .send()
                .await
                .with_context(|| format!("cannot reach shiplog at {url}"))?;
            let status = resp.status();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && attempt < 19 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let body: Value = resp
                .json()
                .await
                .context("the server's answer is not JSON")?;
            if !status.is_success() {
                anyhow::bail!(
                    "gate refused ({status}): {}",
                    body["error"].as_str().unwrap_or("unknown error")
                );
            }
            return anyhow::Ok(body);
        }
        unreachable!()
    })?;
    let safe = body["safe"]
        .as_bool()
        .context("the server's answer has no `safe`")?;
    match format {
        GateFormat::Json => println!("{}", serde_json::to_string_pretty(&body)?),
        GateFormat::Text => print!("{}", render_text(&body)),
    }
    Ok(if safe {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render_text(b: &Value) -> String {
    let mut out = String::new();
    let project = b["project"].as_str().unwrap_or("");
    let env = b["env"].as_str().unwrap_or("");
    if b["safe"].as_bool() == Some(true) {
        out.push_str(&format!("gate: OK to deploy {project} to {env}\n"));
    } else {
        out.push_str(&format!("gate: NOT safe to deploy {project} to {env}\n"));
    }
    match b["last_successful_deploy"].as_object() {
        Some(d) => out.push_str(&format!(
            "  last successful deploy: {} at {}\n",
            d["deployment_id"].as_str().unwrap_or("?"),
            d["time"].as_str().unwrap_or("?")
        )),
        None => out.push_str("  last successful deploy: none recorded\n"),
    }
    let section = |out: &mut String, title: &str, items: Vec<String>| {
        out.push_str(&format!(
            "  {title}: {}\n",
            if items.is_empty() {
                "none".to_string()
            } else {
                items.len().to_string()
            }
        ));
        for i in items {
            out.push_str(&format!("    - {i}\n"));
        }
    };
    let arr = |k: &str| b[k].as_array().cloned().unwrap_or_default();
    section(
        &mut out,
        "failed migrations since the last successful deploy",
        arr("failed_migrations")
            .iter()
            .map(|m| {
                format!(
                    "{} {}{} at {}{}",
                    m["database"].as_str().unwrap_or("(database?)"),
                    m["version"].as_str().unwrap_or(""),
                    m["name"]
                        .as_str()
                        .map(|n| format!(" {n}"))
                        .unwrap_or_default(),
                    m["time"].as_str().unwrap_or("?"),
                    m["error"]
                        .as_str()
                        .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
                        .unwrap_or_default()
                )
            })
            .collect(),
    );
    section(
        &mut out,
        "thresholds in alert",
        arr("thresholds_in_alert")
            .iter()
            .map(|t| {
                format!(
                    "{}: {} = {} > {} (since {})",
                    t["rule"].as_str().unwrap_or("?"),
                    t["metric"].as_str().unwrap_or("sql"),
                    t["value"],
                    t["threshold"],
                    t["since"].as_str().unwrap_or("?")
                )
            })
            .collect(),
    );
    section(
        &mut out,
        "rollbacks in progress",
        arr("active_rollbacks")
            .iter()
            .map(|r| {
                format!(
                    "{}: rolling back {} since {}",
                    r["rule"].as_str().unwrap_or("?"),
                    r["deployment_id"].as_str().unwrap_or("?"),
                    r["started_at"].as_str().unwrap_or("?")
                )
            })
            .collect(),
    );
    section(
        &mut out,
        "deployments still being judged",
        arr("judging")
            .iter()
            .map(|j| {
                format!(
                    "{}: {} {} (window ends {})",
                    j["rule"].as_str().unwrap_or("?"),
                    j["deployment_id"].as_str().unwrap_or("?"),
                    j["status"].as_str().unwrap_or("judging"),
                    j["window_ends"].as_str().unwrap_or("?")
                )
            })
            .collect(),
    );
    out
}
