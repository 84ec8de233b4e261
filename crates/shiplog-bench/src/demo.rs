//! `shiplog demo` and `shiplog serve --demo`: 90 days of realistic, deterministic data for
//! three projects, written through the real ingest path (validation, dedup, the log).
//!
//! The story the dashboards should tell:
//! - `web-app` (Vite on Vercel): builds slow down from ~45 s to ~80 s after a dependency
//!   upgrade 24 days ago (production builds go from good to warning), and the bundle grows
//!   steadily, with a jump at the upgrade; daily production deploys, one failed deploy
//!   (15 days ago) and one rollback by the rollback rule (8 days ago: error rate and p95
//!   latency regressed); the `summaries` feature switched from gpt-4o-mini to
//!   claude-sonnet-4 20 days ago, and API spend doubled;
//! - `api` (Python, Alembic migrations, Fly): a migration failed 12 days ago with the
//!   error text, which failed that deploy; a slow backfill migration 27 days ago;
//! - `admin` (a small Vite app): steady builds and a deploy every few days.
//!
//! Deterministic: a fixed seed, and times relative to today's UTC midnight.

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shiplog_events::{Event, Origin};
use shiplog_ingest::Ingestor;

mod kinds;
mod story;

pub const DAYS: i64 = 90;
const SEED: u64 = 0x5111_9106;

/// The generated events (JSON, as collectors would send them), oldest first.
pub fn events(now: DateTime<Utc>) -> Vec<Value> {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(SEED),
        out: Vec::new(),
        now,
        start: (now - Duration::days(DAYS - 1))
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc(),
        n: 0,
    };
    g.web_app();
    g.api();
    g.admin();
    g.costs();
    g.out.retain(|e| {
        e["time"]
            .as_str()
            .is_some_and(|t| t < now.to_rfc3339().as_str())
    });
    g.out
        .sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    let decisions = decide(&g.out, now);
    g.out.extend(decisions);
    g.out
        .sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    g.out
}

/// The demo's rollback rules (TOML, `[[rules]]`).
pub const RULES: &str = include_str!("demo/rules.toml");

/// The demo's rules, validated.
pub fn rules() -> (Vec<shiplog_rules::Rule>, shiplog_rules::RulesSettings) {
    shiplog_rules::backtest::candidate(RULES, &shiplog_rules::RulesSettings::default())
        .expect("the demo's rules are valid")
}

/// The decisions the demo's rules take over `events`, taken by the real judge (the
/// backtest, which judges each deployment as the engine would have): one per judged
/// deployment, at the moment the engine would have written it; a rollback that acted
/// gets its start and outcome as the engine writes them.
fn decide(events: &[Value], now: DateTime<Utc>) -> Vec<Value> {
    let parsed: Vec<Event> = events
        .iter()
        .filter_map(|v| Event::from_json(v.clone(), Origin::Collector).ok())
        .collect();
    let (rules, settings) = rules();
    let opts = shiplog_rules::backtest::BacktestOptions {
        since: None,
        rule: None,
        now,
    };
    let report = shiplog_rules::backtest::run(parsed, &rules, &settings, &opts);
    let mut out = Vec::new();
    for r in &report.rules {
        for row in &r.deployments {
            let Some(data) = &row.decision else { continue };
            let id =
                shiplog_rules::engine::plan::decision_id(&r.rule, &row.deployment_id, data.verdict);
            let at = data.decided_at.unwrap_or(row.live_at);
            let event = |d: &shiplog_rules::decision::DecisionData, id: &str, at: DateTime<Utc>| {
                let mut e = d.event(
                    id,
                    &row.project,
                    row.env.as_deref(),
                    Some(&row.deployment_id),
                );
                e["time"] = json!(ts(at));
                e
            };
            let acted = data.verdict == shiplog_rules::decision::Verdict::Degraded
                && !data.dry_run
                && row.baseline_deployment_id.is_some();
            let mut data = data.clone();
            if data.verdict == shiplog_rules::decision::Verdict::Degraded {
                data.action = Some(match (&r.project[..], &row.baseline_deployment_id) {
                    ("web-app", Some(b)) => format!(
                        "vercel rollback https://web-app-{}.vercel.app --yes",
                        b.replace('_', "-")
                    ),
                    _ => "https://hooks.example.com/fly/rollback".to_string(),
                });
            }
            if acted {
                use shiplog_rules::decision::Phase;
                let start = data.with_phase(Phase::Start, Some("started".into()));
                out.push(event(&start, &id, at));
                let mut done =
                    data.with_phase(Phase::Outcome, Some("succeeded: exit 0 in 4.2 s".into()));
                done.exit_code = Some(0);
                done.duration_ms = Some(4200);
                done.attempts = Some(1);
                out.push(event(
                    &done,
                    &format!("{id}/outcome"),
                    at + Duration::milliseconds(4300),
                ));
                // What the engine writes when a rollback's action succeeded.
                let target = row.baseline_deployment_id.clone().unwrap_or_default();
                out.push(json!({
                    "id": format!("rule/{}/{}/rolled_back", r.rule, row.deployment_id),
                    "kind": "deploy",
                    "source": shiplog_rules::SOURCE,
                    "project": row.project,
                    "env": row.env,
                    "deployment_id": row.deployment_id,
                    "time": ts(at + Duration::milliseconds(4400)),
                    "data": {
                        "status": "rolled_back",
                        "triggered_by": "rule",
                        "previous_deployment_id": target,
                        "rolled_back_to": target,
                        "url": format!("https://web-app-{}.vercel.app", target.replace('_', "-")),
                        "rule": r.rule,
                        "decision_id": id,
                    }
                }));
            } else {
                if data.verdict == shiplog_rules::decision::Verdict::Degraded && data.dry_run {
                    data.outcome = Some("dry_run".into());
                }
                out.push(event(&data, &id, at));
            }
        }
    }
    out
}

/// How a deployment behaves in the minutes after it went live.
#[derive(Clone, Copy)]
struct Health {
    /// Samples of each metric, one a minute.
    samples: u32,
    /// Requests per minute (mean).
    requests: f64,
    /// The error probability (mean, sd across minutes).
    error_rate: (f64, f64),
    /// p95 latency in ms (mean, sd).
    latency: (f64, f64),
}

impl Health {
    const WEB: Health = Health {
        samples: 10,
        requests: 420.0,
        error_rate: (0.0045, 0.0008),
        latency: (215.0, 18.0),
    };
    /// The regression that web-app's rule rolls back.
    const REGRESSED: Health = Health {
        error_rate: (0.062, 0.01),
        latency: (780.0, 80.0),
        ..Health::WEB
    };
    const API: Health = Health {
        samples: 10,
        requests: 260.0,
        error_rate: (0.0045, 0.0008),
        latency: (240.0, 20.0),
    };
    const ADMIN: Health = Health {
        samples: 10,
        requests: 40.0,
        error_rate: (0.002, 0.0005),
        latency: (120.0, 12.0),
    };
}

struct Gen {
    rng: StdRng,
    out: Vec<Value>,
    now: DateTime<Utc>,
    start: DateTime<Utc>,
    n: u64,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

struct Deploy<'a> {
    project: &'a str,
    env: &'a str,
    provider: &'a str,
    id: String,
    prev: Option<String>,
    commit: String,
    branch: &'a str,
    at: DateTime<Utc>,
}

impl Gen {
    fn id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("demo-{prefix}-{:06}", self.n)
    }

    fn commit(&mut self) -> String {
        (0..40)
            .map(|_| std::char::from_digit(self.rng.gen_range(0..16), 16).unwrap())
            .collect()
    }

    /// Day `d` (0 = 89 days ago) at `h` hours.
    fn at(&self, d: i64, h: f64) -> DateTime<Utc> {
        self.start + Duration::days(d) + Duration::seconds((h * 3600.0) as i64)
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        kind: &str,
        source: &str,
        project: &str,
        env: Option<&str>,
        commit: Option<&str>,
        branch: Option<&str>,
        deployment: Option<&str>,
        time: DateTime<Utc>,
        data: Value,
    ) {
        let id = self.id(kind);
        let mut e = json!({"id": id, "kind": kind, "source": source, "project": project, "time": ts(time), "data": data});
        for (k, v) in [
            ("env", env),
            ("commit", commit),
            ("branch", branch),
            ("deployment_id", deployment),
        ] {
            if let Some(v) = v {
                e[k] = json!(v);
            }
        }
        self.out.push(e);
    }

    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        // Box-Muller
        let u1: f64 = self.rng.gen_range(1e-9..1.0);
        let u2: f64 = self.rng.gen();
        mean + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Validates and ingests the demo events (collector kinds as a collector would send them,
/// decisions as the rules engine writes them). Returns how many were accepted.
pub async fn seed(ingestor: &Ingestor, now: DateTime<Utc>) -> Result<usize> {
    let events = events(now);
    let mut accepted = 0;
    for chunk in events.chunks(2000) {
        let mut batch = Vec::with_capacity(chunk.len());
        for (i, v) in chunk.iter().enumerate() {
            let origin = if v["kind"] == "decision" {
                Origin::Internal
            } else {
                Origin::Collector
            };
            let e = Event::from_json(v.clone(), origin).map_err(|e| {
                anyhow::anyhow!("demo event {i} is invalid at {}: {}", e.field, e.error)
            })?;
            batch.push(e);
        }
        let o = ingestor
            .ingest(batch)
            .await
            .context("writing demo events to the log")?;
        accepted += o.accepted;
    }
    Ok(accepted)
}

/// Seeds when the log holds no record; says what it did.
pub async fn seed_if_empty(ingestor: &Ingestor) -> Result<()> {
    let log = ingestor.log();
    let records: u64 = log.partitions().iter().map(|p| log.end_offset(*p)).sum();
    if records > 0 {
        tracing::info!(
            records,
            "--demo: the data dir already has events; not adding demo data"
        );
        return Ok(());
    }
    let n = seed(ingestor, Utc::now()).await?;
    tracing::info!(
        events = n,
        days = DAYS,
        "--demo: wrote demo data through the ingest path"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_valid_and_in_the_past() {
        let now = DateTime::parse_from_rfc3339("2026-03-15T12:34:56Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = events(now);
        let b = events(now);
        assert_eq!(a, b);
        assert!(a.len() > 5_000, "{}", a.len());
        for v in &a {
            let origin = if v["kind"] == "decision" {
                Origin::Internal
            } else {
                Origin::Collector
            };
            Event::from_json(v.clone(), origin).unwrap_or_else(|e| panic!("{v}: {e:?}"));
            assert!(v["time"].as_str().unwrap() < "2026-03-15T12:34:56");
        }
        for kind in [
            "build",
            "deploy",
            "migration",
            "api_cost",
            "check",
            "decision",
        ] {
            assert!(a.iter().any(|v| v["kind"] == kind), "{kind}");
        }
        assert!(a.iter().any(|v| v["data"]["status"] == "rolled_back"));
        assert!(a.iter().any(|v| v["kind"] == "migration"
            && v["data"]["status"] == "failed"
            && v["data"]["error"].is_string()));
    }
}
