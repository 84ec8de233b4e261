//! `shiplog probe --deployment ID --url URL`: samples a deployment's URL and reports
//! `check` events tied to it.
//!
//! Every `--every`, a round sends `--samples` GET requests one after the other (redirects
//! are not followed: 2xx and 3xx count as success) and reports three events: `latency_p95`
//! (ms, over the requests that got an answer), `error_rate` (ratio of failed requests and
//! non-2xx/3xx answers, with the counts behind it as `errors` and `requests`) and `health` (passed when every request succeeded; value: the last
//! status code). Ids are derived from the deployment, the check name and the round index,
//! so a restarted probe does not count a round twice.

use super::ci;
use super::send::{Report, Sender};
use super::{ClientArgs, EnvelopeArgs};
use crate::config::Config;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The URL to probe (GET).
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Server URL. Also SHIPLOG_URL; default: http://127.0.0.1:7070 (the configured
    /// listen address).
    #[arg(long, env = "SHIPLOG_URL", value_name = "URL")]
    pub server: Option<String>,
    /// Time between rounds.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub every: Duration,
    /// How long to probe: rounds start while this has not elapsed.
    #[arg(long = "for", default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Stop after this many rounds (at most; --for still applies).
    #[arg(long, value_name = "N")]
    pub rounds: Option<u64>,
    /// Requests per round.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub samples: u32,
    /// Timeout of one request (a timeout counts as an error).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Prefix of the check names, e.g. `api.` gives api.latency_p95.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub name_prefix: String,
    /// Name of the per-round pass/fail check: health or smoke.
    #[arg(long, default_value = "health", value_name = "NAME")]
    pub check_name: String,
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
    /// Print the events (one JSON per line) instead of sending them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The outcome of one request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub status: Option<u16>,
    pub latency: Duration,
    pub error: Option<String>,
}

impl Sample {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..400).contains(&s))
    }
}

/// Nearest-rank percentile of the latencies of the samples that got an answer, in ms.
pub fn p95_ms(samples: &[Sample]) -> Option<f64> {
    let mut ms: Vec<f64> = samples
        .iter()
        .filter(|s| s.status.is_some())
        .map(|s| s.latency.as_secs_f64() * 1000.0)
        .collect();
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let rank = ((0.95 * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
    Some((ms[rank - 1] * 10.0).round() / 10.0)
}

pub fn run(args: ProbeArgs, config: &Config, env: &HashMap<String, String>) -> Result<ExitCode> {
    let ci = ci::detect(env);
    let base = super::base_envelope(&args.envelope, ci.as_ref(), "shiplog-probe");
    let Some(deployment) = base
        .get("deployment_id")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        bail!("--deployment is required: the deployment the checks belong to");
    };
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if args.every.is_zero() {
        bail!("--every must be more than 0");
    }
    let target: reqwest::Url = args
        .url
        .parse()
        .with_context(|| format!("--url {:?} is not a URL", args.url))?;
    // Validate the envelope once, before probing.
    let sample_event = round_events(&args, &base, &deployment, 0, chrono::Utc::now(), &[]);
    for e in &sample_event {
        if let Err(err) = super::validate(e) {
            bail!(
                "invalid event: {}: {}{}",
                err.field,
                err.error,
                super::field_hint(&err.field)
            );
        }
    }

    let server = super::server_url(args.server.as_deref(), config);
    let sender = std::sync::Arc::new(Sender::new(&server, &args.client, env)?);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(args.timeout)
        .user_agent(concat!("shiplog-probe/", env!("CARGO_PKG_VERSION")))
        .build()?;

    let rt = super::runtime()?;
    let report = rt.block_on(async {
        let start = Instant::now();
        let mut sends = Vec::new();
        let mut round: u64 = 0;
        loop {
            if args.rounds.is_some_and(|n| round >= n) {
                break;
            }
            let at = start + args.every * round as u32;
            if round > 0 && at.duration_since(start) >= args.duration {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
            let time = chrono::Utc::now();
            let mut samples = Vec::with_capacity(args.samples as usize);
            for _ in 0..args.samples {
                samples.push(sample(&http, target.clone()).await);
            }
            let events = round_events(&args, &base, &deployment, round, time, &samples);
            let failed = samples.iter().filter(|s| !s.ok()).count();
            let last_error = samples.iter().rev().find_map(|s| s.error.clone());
            println!(
                "round {round}: p95 {} ms, error rate {:.2} ({failed}/{}), {} {}{}",
                p95_ms(&samples).map_or("-".to_string(), |v| format!("{v:.1}")),
                failed as f64 / samples.len() as f64,
                samples.len(),
                args.check_name,
                if failed == 0 { "passed" } else { "failed" },
                last_error.map(|e| format!(" ({e})")).unwrap_or_default()
            );
            if args.dry_run {
                for e in &events {
                    println!("{e}");
                }
            } else {
                let sender = sender.clone();
                sends.push(tokio::spawn(async move { sender.deliver(&events).await }));
            }
            round += 1;
        }
        let mut total = Report::default();
        for s in sends {
            if let Ok(r) = s.await {
                total.merge(r);
            }
        }
        (round, total)
    });
    let (rounds, report) = report;
    if !args.dry_run {
        println!(
            "probed {} for {rounds} round(s): {} check event(s), {} accepted, {} duplicate, {} rejected, {} spooled",
            args.url,
            report.events,
            report.accepted,
            report.duplicates,
            report.rejected.len(),
            report.spooled
        );
        report.warn(&sender);
    }
    Ok(ExitCode::from(report.exit_code(args.client.strict)))
}

async fn sample(http: &reqwest::Client, url: reqwest::Url) -> Sample {
    let t = Instant::now();
    match http.get(url).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // The whole answer counts in the latency.
            let body = resp.bytes().await;
            Sample {
                status: Some(status),
                latency: t.elapsed(),
                error: body.err().map(|e| e.to_string()),
            }
        }
        Err(e) => Sample {
            status: None,
            latency: t.elapsed(),
            error: Some(if e.is_timeout() {
                "timeout".to_string()
            } else if e.is_connect() {
                "connection failed".to_string()
            } else {
                e.to_string()
            }),
        },
    }
}

/// The three events of a round.
fn round_events(
    args: &ProbeArgs,
    base: &Map<String, Value>,
    deployment: &str,
    round: u64,
    time: chrono::DateTime<chrono::Utc>,
    samples: &[Sample],
) -> Vec<Value> {
    let n = samples.len();
    let failed = samples.iter().filter(|s| !s.ok()).count();
    let time = time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let window_ms = args.every.as_millis() as u64;
    let mk = |name: &str, fields: Vec<(&str, Value)>| -> Value {
        let name = format!("{}{}", args.name_prefix, name);
        let id = format!(
            "probe-{}-{}-r{round}-{}",
            super::sanitize(deployment, 64),
            super::sanitize(&name, 64),
            super::digest(&[deployment, &name, &round.to_string()])
        );
        let mut data = Map::new();
        data.insert("name".into(), name.into());
        for (k, v) in fields {
            data.insert(k.into(), v);
        }
        data.insert("samples".into(), (n as u64).into());
        data.insert("round".into(), round.into());
        data.insert("window_ms".into(), window_ms.into());
        data.insert("url".into(), args.url.clone().into());
        let mut e = Map::new();
        e.insert("id".into(), id.into());
        e.insert("kind".into(), "check".into());
        for (k, v) in base {
            e.insert(k.clone(), v.clone());
        }
        e.insert("time".into(), time.clone().into());
        e.insert("data".into(), Value::Object(data));
        Value::Object(e)
    };
    let answered = samples.iter().filter(|s| s.status.is_some()).count() as u64;
    let mut p95_fields = vec![
        ("value", p95_ms(samples).map_or(Value::Null, Value::from)),
        ("unit", "ms".into()),
    ];
    p95_fields.push(("answered", answered.into()));
    let ratio = if n == 0 {
        0.0
    } else {
        failed as f64 / n as f64
    };
    let last_status = samples
        .last()
        .and_then(|s| s.status)
        .map_or(Value::Null, Value::from);
    let mut health = vec![
        ("passed", (n > 0 && failed == 0).into()),
        ("value", last_status),
        ("unit", "http_status".into()),
    ];
    if let Some(e) = samples.iter().rev().find_map(|s| s.error.clone()) {
        health.push(("error", e.into()));
    }
    vec![
        mk("latency_p95", p95_fields),
        mk(
            "error_rate",
            vec![
                ("value", ratio.into()),
                ("unit", "ratio".into()),
                ("failed", (failed as u64).into()),
                // The counts behind the rate: rollback rules judge them with a test on
                // counts, far more powerful than one on the rates of small rounds.
                ("errors", (failed as u64).into()),
                ("requests", (n as u64).into()),
            ],
        ),
        mk(&args.check_name, health),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_nearest_rank() {
        let s = |ms: u64, status: Option<u16>| Sample {
            status,
            latency: Duration::from_millis(ms),
            error: None,
        };
        assert_eq!(p95_ms(&[]), None);
        assert_eq!(p95_ms(&[s(10, None)]), None);
        let v: Vec<Sample> = (1..=20).map(|i| s(i, Some(200))).collect();
        assert_eq!(p95_ms(&v), Some(19.0));
        let v: Vec<Sample> = (1..=5).map(|i| s(i * 10, Some(200))).collect();
        assert_eq!(p95_ms(&v), Some(50.0));
    }
}
