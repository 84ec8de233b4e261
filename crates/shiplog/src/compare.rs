//! `shiplog compare --base main [--head COMMIT]`: asks the server (`GET /v1/compare`) how a
//! build compares with the latest successful build of the base branch, prints it as a
//! table, Markdown or JSON, and exits 1 when a `[[budgets]]` limit is breached (0 within
//! budget, 2 on errors). The comparison and its renderers are `shiplog_store::compare`.

use crate::collect::Ci;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use shiplog_store::compare::{render_markdown, render_table, Comparison, Verdict};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompareFormat {
    Table,
    Markdown,
    Json,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The project. Also SHIPLOG_PROJECT.
    #[arg(long, env = "SHIPLOG_PROJECT")]
    pub project: String,
    /// The base branch (default: the pull request's target branch the CI names, else main).
    #[arg(long)]
    pub base: Option<String>,
    /// The head commit, or a prefix of it (default: SHIPLOG_COMMIT, the CI's commit, else
    /// the repository's HEAD).
    #[arg(long)]
    pub head: Option<String>,
    /// Only builds of this tool (vite, next, webpack, …).
    #[arg(long)]
    pub tool: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: CompareFormat,
    /// How long to wait for the head build to be queryable (it may have been sent a moment
    /// ago).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// The server. Also SHIPLOG_URL.
    #[arg(long, env = "SHIPLOG_URL", default_value = "http://127.0.0.1:7070")]
    pub url: String,
    /// Bearer token with the read scope. Also SHIPLOG_TOKEN.
    #[arg(long, env = "SHIPLOG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The exit codes, as printed by `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  within every budget (or no budget applies)
  1  a budget is breached
  2  error (no such build, server unreachable, bad arguments)";

pub fn run(args: CompareArgs) -> Result<ExitCode> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let ci = crate::collect::detect_ci(&env);
    let base = args
        .base
        .clone()
        .or_else(|| ci.as_ref().and_then(|c| c.base_branch.clone()))
        .unwrap_or_else(|| "main".into());
    let head = args.head.clone().or_else(|| head_commit(&env, ci.as_ref()));
    let mut query = vec![("project", args.project.clone()), ("base", base)];
    if let Some(h) = head {
        query.push(("head", h));
    }
    if let Some(t) = &args.tool {
        query.push(("tool", t.clone()));
    }
    let comparison = crate::collect::runtime()?.block_on(fetch(&args, &query))?;
    match args.format {
        CompareFormat::Table => print!("{}", render_table(&comparison)),
        CompareFormat::Markdown => print!("{}", render_markdown(&comparison)),
        CompareFormat::Json => println!("{}", serde_json::to_string_pretty(&comparison)?),
    }
    Ok(match comparison.verdict {
        Verdict::Pass => ExitCode::SUCCESS,
        Verdict::Breach => ExitCode::from(1),
    })
}

/// SHIPLOG_COMMIT, the CI's commit, else `git rev-parse HEAD`.
fn head_commit(env: &HashMap<String, String>, ci: Option<&Ci>) -> Option<String> {
    env.get("SHIPLOG_COMMIT")
        .filter(|c| !c.trim().is_empty())
        .cloned()
        .or_else(|| ci.and_then(|c| c.commit.clone()))
        .or_else(|| {
            let out = std::process::Command::new("git")
                .args(["rev-parse", "HEAD"])
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
            (out.status.success() && !s.is_empty()).then_some(s)
        })
}

async fn fetch(args: &CompareArgs, query: &[(&str, String)]) -> Result<Comparison> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("{}/v1/compare", args.url.trim_end_matches('/'));
    let deadline = Instant::now() + args.wait;
    loop {
        let mut req = client.get(&url).query(query);
        if let Some(t) = args.token.as_deref().filter(|t| !t.is_empty()) {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach shiplog at {}", args.url))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the server's answer")?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .with_context(|| format!("the server's answer is not a comparison: {text}"));
        }
        // The head build may still be on its way into the projection; a server
        // rebuilding its state answers 503.
        let retry = status == reqwest::StatusCode::NOT_FOUND
            || status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
        if retry && Instant::now() + Duration::from_millis(500) < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or(text);
        bail!("compare failed ({status}): {msg}");
    }
}
