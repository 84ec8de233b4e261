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
use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shiplog_events::{Event, Origin};
use shiplog_ingest::Ingestor;

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
    g.out
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

    #[allow(clippy::too_many_arguments)]
    fn build(
        &mut self,
        project: &str,
        env: &str,
        commit: &str,
        branch: &str,
        at: DateTime<Utc>,
        day: i64,
        slow_from: i64,
        base_s: f64,
        slow_s: f64,
        bundle0: f64,
        growth: f64,
        jump: f64,
    ) -> i64 {
        let slow = day >= slow_from;
        let mean = if slow { slow_s } else { base_s };
        let mut dur = self.normal(mean, mean * 0.09).max(base_s * 0.6);
        if self.rng.gen_bool(0.04) {
            dur *= 1.6; // cold cache
        }
        let success = !self.rng.gen_bool(0.03);
        let bundle = bundle0
            + growth * day as f64
            + if slow { jump } else { 0.0 }
            + self.normal(0.0, 4_000.0);
        let dur_ms = (dur * 1000.0) as i64;
        let phases = [
            ("config", 0.01),
            ("transform", 0.58),
            ("render-chunks", 0.21),
            ("minify", 0.15),
            ("write", 0.05),
        ];
        let phases: Vec<Value> = phases
            .iter()
            .map(|(n, f)| json!({"name": n, "duration_ms": (dur_ms as f64 * f) as i64}))
            .collect();
        let mut chunks = vec![
            ("index", 0.16),
            ("vendor-react", 0.19),
            ("dashboard", 0.13),
            ("charts", 0.12),
            ("editor", 0.11),
            ("settings", 0.05),
            ("auth", 0.04),
        ];
        if slow {
            chunks.push(("icons", 0.14));
        } else {
            chunks.push(("icons-lite", 0.03));
        }
        let total: f64 = chunks.iter().map(|c| c.1).sum();
        let chunk_v: Vec<Value> = chunks
            .iter()
            .map(|(n, f)| {
                let b = (bundle * f / total) as i64;
                json!({"name": n, "bytes": b, "gzip_bytes": (b as f64 * 0.31) as i64})
            })
            .collect();
        let modules = (1450.0 + day as f64 * 6.0 + if slow { 820.0 } else { 0.0 }) as i64;
        let version = if slow { "6.2.1" } else { "5.4.11" };
        let run_id = format!("{}", 9_100_000 + self.n);
        let data = json!({
            "tool": "vite", "tool_version": version, "mode": "production", "success": success,
            "duration_ms": dur_ms, "phases": phases, "modules_transformed": modules, "modules_total": modules + 12,
            "bundle_bytes": bundle as i64, "gzip_bytes": (bundle * 0.31) as i64, "chunks": chunk_v,
            "assets": [{"name": "logo.svg", "bytes": 4_210}, {"name": "inter.woff2", "bytes": 48_220}],
            "ci": {"provider": "github", "run_id": run_id, "url": format!("https://github.com/acme/{project}/actions/runs/{run_id}")},
        });
        self.push(
            "build",
            "vite-plugin",
            project,
            Some(env),
            Some(commit),
            Some(branch),
            None,
            at,
            data,
        );
        dur_ms
    }

    fn deploy(&mut self, d: &Deploy, outcome: &str, duration_s: f64) {
        let url = format!(
            "https://{}-{}.{}.app",
            d.project,
            d.id.replace('_', "-"),
            if d.provider == "fly" { "fly" } else { "vercel" }
        );
        let base = |status: &str| {
            let mut v =
                json!({"status": status, "url": url, "provider": d.provider, "triggered_by": "ci"});
            if let Some(p) = &d.prev {
                v["previous_deployment_id"] = json!(p);
            }
            v
        };
        self.push(
            "deploy",
            "ci/github",
            d.project,
            Some(d.env),
            Some(&d.commit),
            Some(d.branch),
            Some(&d.id),
            d.at,
            base("started"),
        );
        let mut done = base(outcome);
        done["duration_ms"] = json!((duration_s * 1000.0) as i64);
        let end = d.at + Duration::seconds(duration_s as i64);
        self.push(
            "deploy",
            "ci/github",
            d.project,
            Some(d.env),
            Some(&d.commit),
            Some(d.branch),
            Some(&d.id),
            end,
            done,
        );
    }

    /// Checks for 10 minutes after a deploy; `bad` = a regression.
    fn checks(&mut self, d: &Deploy, after: DateTime<Utc>, bad: bool) -> (f64, f64) {
        let dep = Some(d.id.as_str());
        let (p, env, c) = (d.project, d.env, d.commit.clone());
        self.push(
            "check",
            "shiplog-probe",
            p,
            Some(env),
            Some(&c),
            None,
            dep,
            after + Duration::seconds(20),
            json!({"name": "smoke", "passed": true}),
        );
        self.push(
            "check",
            "shiplog-probe",
            p,
            Some(env),
            Some(&c),
            None,
            dep,
            after + Duration::seconds(25),
            json!({"name": "health", "passed": true, "value": 200, "unit": "status"}),
        );
        let (mut er_sum, mut lat_sum) = (0.0, 0.0);
        for m in 1..=10 {
            let t = after + Duration::seconds(60 * m);
            let er: f64 = if bad {
                self.normal(0.062, 0.012).max(0.03)
            } else {
                self.normal(0.0045, 0.0012).max(0.0005)
            };
            let lat: f64 = if bad {
                self.normal(780.0, 80.0)
            } else {
                self.normal(215.0, 18.0)
            };
            er_sum += er;
            lat_sum += lat;
            self.push("check", "shiplog-probe", p, Some(env), Some(&c), None, dep, t, json!({"name": "error_rate", "value": (er * 10000.0).round() / 10000.0, "unit": "ratio", "passed": er < 0.02}));
            self.push("check", "shiplog-probe", p, Some(env), Some(&c), None, dep, t + Duration::seconds(2), json!({"name": "latency_p95", "value": lat.round(), "unit": "ms", "passed": lat < 500.0}));
        }
        (er_sum / 10.0, lat_sum / 10.0)
    }

    #[allow(clippy::too_many_arguments)]
    fn decision(
        &mut self,
        d: &Deploy,
        at: DateTime<Utc>,
        rule: &str,
        verdict: &str,
        metric: &str,
        value: f64,
        baseline: Option<f64>,
        threshold: Option<f64>,
        samples: i64,
        action: Option<&str>,
        outcome: Option<&str>,
        dry_run: bool,
    ) {
        let data = json!({"rule": rule, "verdict": verdict, "metric": metric, "value": (value * 10000.0).round() / 10000.0,
            "baseline": baseline.map(|b| (b * 10000.0).round() / 10000.0), "threshold": threshold.map(|t| (t * 10000.0).round() / 10000.0),
            "samples": samples, "action": action, "outcome": outcome, "dry_run": dry_run});
        self.push(
            "decision",
            "shiplog-rules",
            d.project,
            Some(d.env),
            Some(&d.commit.clone()),
            None,
            Some(&d.id.clone()),
            at,
            data,
        );
    }

    fn web_app(&mut self) {
        let (upgrade, failed_day, rollback_day) = (DAYS - 24, DAYS - 15, DAYS - 8);
        let mut prev: Option<String> = None;
        let mut last_good_er = 0.0045;
        for day in 0..DAYS {
            let wd = self.at(day, 0.0).weekday();
            let weekend = matches!(wd, Weekday::Sat | Weekday::Sun);
            // preview builds on feature branches
            let previews = if weekend {
                self.rng.gen_range(0..2)
            } else {
                self.rng.gen_range(3..7)
            };
            for _ in 0..previews {
                let h = self.rng.gen_range(8.5..19.0);
                let c = self.commit();
                let branch = [
                    "feat/search-filters",
                    "fix/login-redirect",
                    "feat/onboarding",
                    "chore/deps",
                    "feat/billing-page",
                ][self.rng.gen_range(0..5)];
                let at = self.at(day, h);
                self.build(
                    "web-app", "preview", &c, branch, at, day, upgrade, 52.0, 88.0, 790_000.0,
                    3_300.0, 185_000.0,
                );
            }
            if weekend && day != rollback_day && day != failed_day {
                continue;
            }
            // the production deploy of the day (two on some days)
            let deploys = if self.rng.gen_bool(0.25) { 2 } else { 1 };
            for k in 0..deploys {
                let h = if k == 0 {
                    self.rng.gen_range(10.0..12.0)
                } else {
                    self.rng.gen_range(15.0..17.5)
                };
                let c = self.commit();
                let at = self.at(day, h);
                let dur_ms = self.build(
                    "web-app",
                    "production",
                    &c,
                    "main",
                    at,
                    day,
                    upgrade,
                    44.0,
                    79.0,
                    790_000.0,
                    3_300.0,
                    185_000.0,
                );
                let id = format!("dpl_web_{:03}{}", day, k);
                let d = Deploy {
                    project: "web-app",
                    env: "production",
                    provider: "vercel",
                    id: id.clone(),
                    prev: prev.clone(),
                    commit: c,
                    branch: "main",
                    at: at
                        + Duration::milliseconds(dur_ms)
                        + Duration::seconds(self.rng.gen_range(60..240)),
                };
                if day == failed_day && k == 0 {
                    // Vercel could not build the function bundle: the deploy failed, fixed 3 h later.
                    let dur = self.normal(70.0, 5.0);
                    self.deploy(&d, "failed", dur);
                    continue;
                }
                let dur = self.normal(62.0, 9.0).max(30.0);
                self.deploy(&d, "succeeded", dur);
                let live = d.at + Duration::seconds(dur as i64);
                let bad = day == rollback_day && k == 0;
                let (er, lat) = self.checks(&d, live, bad);
                if bad {
                    let t = live + Duration::seconds(610);
                    let action = format!(
                        "vercel rollback https://web-app-{}.vercel.app --yes",
                        prev.clone().unwrap_or_default().replace('_', "-")
                    );
                    self.decision(
                        &d,
                        t,
                        "web-rollback-on-regression",
                        "degraded",
                        "error_rate",
                        er,
                        Some(last_good_er),
                        Some(last_good_er * 1.5),
                        10,
                        Some(&action),
                        Some("succeeded: exit 0 in 4.2 s"),
                        false,
                    );
                    // the rollback: this deployment is rolled back, the previous one promoted again
                    let mut rb = json!({"status": "rolled_back", "url": format!("https://web-app-{}.vercel.app", id.replace('_', "-")), "provider": "vercel", "triggered_by": "rule", "duration_ms": 4200});
                    if let Some(p) = &prev {
                        rb["previous_deployment_id"] = json!(p);
                    }
                    self.push(
                        "deploy",
                        "shiplog-rules",
                        "web-app",
                        Some("production"),
                        Some(&d.commit.clone()),
                        Some("main"),
                        Some(&id),
                        t + Duration::seconds(5),
                        rb,
                    );
                    if let Some(p) = prev.clone() {
                        self.push("deploy", "shiplog-rules", "web-app", Some("production"), None, Some("main"), Some(&p), t + Duration::seconds(6),
                            json!({"status": "promoted", "provider": "vercel", "triggered_by": "rule", "url": format!("https://web-app-{}.vercel.app", p.replace('_', "-"))}));
                    }
                    let _ = lat;
                    continue; // prev stays the restored deployment
                }
                if day >= DAYS - 14 {
                    let inconclusive = day == DAYS - 3 && k == 0;
                    let t = live + Duration::seconds(610);
                    if inconclusive {
                        self.decision(
                            &d,
                            t,
                            "web-rollback-on-regression",
                            "inconclusive",
                            "error_rate",
                            er,
                            Some(last_good_er),
                            Some(last_good_er * 1.5),
                            3,
                            None,
                            Some("not enough samples (3 < 8)"),
                            false,
                        );
                    } else {
                        self.decision(
                            &d,
                            t,
                            "web-rollback-on-regression",
                            "healthy",
                            "error_rate",
                            er,
                            Some(last_good_er),
                            Some(last_good_er * 1.5),
                            10,
                            None,
                            None,
                            false,
                        );
                    }
                }
                last_good_er = er;
                prev = Some(id);
            }
        }
        // Supabase migrations, about weekly.
        for day in (3..DAYS).step_by(7) {
            let at = self.at(day, 9.5);
            let v = format!("2025{:04}{:06}", 100 + day, 93000);
            let name = [
                "add_search_index",
                "create_feedback_table",
                "add_org_settings",
                "rls_policies_projects",
                "add_billing_columns",
            ][(day as usize / 7) % 5];
            let dur = self.normal(2.4, 0.8).max(0.3);
            let checksum = format!("sha256:{:016x}", self.rng.gen::<u64>());
            self.push("migration", "shiplog-migrate", "web-app", Some("production"), None, Some("main"), None, at,
                json!({"tool": "supabase", "database": "postgres", "version": v, "name": name, "status": "applied", "duration_ms": (dur * 1000.0) as i64, "checksum": checksum}));
        }
    }

    fn api(&mut self) {
        let (failed_mig_day, slow_mig_day) = (DAYS - 12, DAYS - 27);
        let mut prev: Option<String> = None;
        let mut mig = 0;
        for day in 0..DAYS {
            let wd = self.at(day, 0.0).weekday();
            let special = day == failed_mig_day
                || day == failed_mig_day + 1
                || day == slow_mig_day
                || day == DAYS - 6;
            if !special && (matches!(wd, Weekday::Sat | Weekday::Sun) || self.rng.gen_bool(0.15)) {
                continue;
            }
            let c = self.commit();
            let h = self.rng.gen_range(13.0..16.0);
            let at = self.at(day, h);
            let id = format!("dpl_api_{:03}", day);
            let d = Deploy {
                project: "api",
                env: "production",
                provider: "fly",
                id: id.clone(),
                prev: prev.clone(),
                commit: c.clone(),
                branch: "main",
                at,
            };
            // Alembic runs before the release on some days.
            let migrate = day % 4 == 1
                || day == failed_mig_day
                || day == failed_mig_day + 1
                || day == slow_mig_day;
            if migrate {
                mig += 1;
                let mt = at - Duration::seconds(90);
                let v = format!("{:012x}", self.rng.gen::<u64>() & 0xffff_ffff_ffff);
                let (name, status, dur, error) = if day == failed_mig_day {
                    ("add_plan_tier_to_accounts", "failed", 1.9, Some("sqlalchemy.exc.ProgrammingError: (psycopg.errors.DuplicateColumn) column \"plan_tier\" of relation \"accounts\" already exists\n[SQL: ALTER TABLE accounts ADD COLUMN plan_tier VARCHAR(32) NOT NULL DEFAULT 'free']\n(Background on this error at: https://sqlalche.me/e/20/f405)"))
                } else if day == failed_mig_day + 1 {
                    ("add_plan_tier_to_accounts_if_missing", "applied", 2.2, None)
                } else if day == slow_mig_day {
                    ("backfill_invoice_totals", "applied", 96.0, None)
                } else {
                    let names = [
                        "add_index_events_created_at",
                        "create_api_keys",
                        "add_webhook_retries",
                        "drop_legacy_sessions",
                        "add_usage_limits",
                        "create_audit_log",
                    ];
                    (
                        names[mig % names.len()],
                        "applied",
                        self.normal(3.0, 1.4).max(0.4),
                        None,
                    )
                };
                let mut data = json!({"tool": "alembic", "database": "main", "version": v, "name": name, "status": status, "duration_ms": (dur * 1000.0) as i64});
                if let Some(e) = error {
                    data["error"] = json!(e);
                }
                self.push(
                    "migration",
                    "shiplog-migrate",
                    "api",
                    Some("production"),
                    Some(&c),
                    Some("main"),
                    Some(&id),
                    mt,
                    data,
                );
                if status == "failed" {
                    let dur = self.normal(95.0, 5.0);
                    self.deploy(&d, "failed", dur);
                    continue;
                }
            }
            let dur = self.normal(84.0, 10.0).max(40.0);
            self.deploy(&d, "succeeded", dur);
            let live = at + Duration::seconds(dur as i64);
            let (er, _) = self.checks(&d, live, false);
            if day == DAYS - 6 {
                self.decision(
                    &d,
                    live + Duration::seconds(610),
                    "api-rollback-on-regression",
                    "degraded",
                    "latency_p95",
                    412.0,
                    Some(240.0),
                    Some(360.0),
                    10,
                    Some("POST https://hooks.example.com/fly/rollback"),
                    Some("dry run: the webhook was not called"),
                    true,
                );
            } else if day >= DAYS - 14 {
                self.decision(
                    &d,
                    live + Duration::seconds(610),
                    "api-rollback-on-regression",
                    "healthy",
                    "error_rate",
                    er,
                    Some(0.0045),
                    Some(0.00675),
                    10,
                    None,
                    None,
                    false,
                );
            }
            prev = Some(id);
        }
    }

    fn admin(&mut self) {
        let mut prev: Option<String> = None;
        for day in 0..DAYS {
            if day % 3 != 0 && day % 7 != 5 {
                continue;
            }
            let c = self.commit();
            let h = self.rng.gen_range(9.0..17.0);
            let at = self.at(day, h);
            let dur_ms = self.build(
                "admin",
                "production",
                &c,
                "main",
                at,
                day,
                DAYS * 2,
                24.0,
                24.0,
                310_000.0,
                420.0,
                0.0,
            );
            let id = format!("dpl_adm_{:03}", day);
            let d = Deploy {
                project: "admin",
                env: "production",
                provider: "vercel",
                id: id.clone(),
                prev: prev.clone(),
                commit: c,
                branch: "main",
                at: at + Duration::milliseconds(dur_ms) + Duration::seconds(90),
            };
            let dur = self.normal(41.0, 6.0).max(20.0);
            self.deploy(&d, "succeeded", dur);
            self.checks(&d, d.at + Duration::seconds(dur as i64), false);
            prev = Some(id);
        }
    }

    /// Hourly API cost records per feature and model.
    fn costs(&mut self) {
        let switch = DAYS - 20;
        // (project, feature, provider, model before, model after, requests/day, in, out, cached, $/M in, $/M out; after: $/M in, $/M out, out tokens)
        struct F {
            project: &'static str,
            feature: &'static str,
            provider: (&'static str, &'static str),
            model: (&'static str, &'static str),
            per_day: f64,
            input: f64,
            output: (f64, f64),
            cached: f64,
            price_in: (f64, f64),
            price_out: (f64, f64),
        }
        let features = [
            F {
                project: "web-app",
                feature: "summaries",
                provider: ("openai", "anthropic"),
                model: ("gpt-4o-mini", "claude-sonnet-4"),
                per_day: 2600.0,
                input: 1800.0,
                output: (340.0, 520.0),
                cached: 0.0,
                price_in: (0.15, 3.0),
                price_out: (0.60, 15.0),
            },
            F {
                project: "web-app",
                feature: "chat-assist",
                provider: ("openai", "openai"),
                model: ("gpt-4o", "gpt-4o"),
                per_day: 1700.0,
                input: 1250.0,
                output: (380.0, 380.0),
                cached: 400.0,
                price_in: (2.5, 2.5),
                price_out: (10.0, 10.0),
            },
            F {
                project: "web-app",
                feature: "search",
                provider: ("openai", "openai"),
                model: ("text-embedding-3-small", "text-embedding-3-small"),
                per_day: 18000.0,
                input: 60.0,
                output: (0.0, 0.0),
                cached: 0.0,
                price_in: (0.02, 0.02),
                price_out: (0.0, 0.0),
            },
            F {
                project: "api",
                feature: "support-bot",
                provider: ("anthropic", "anthropic"),
                model: ("claude-3-5-haiku", "claude-3-5-haiku"),
                per_day: 2900.0,
                input: 2500.0,
                output: (480.0, 480.0),
                cached: 1200.0,
                price_in: (0.8, 0.8),
                price_out: (4.0, 4.0),
            },
        ];
        for day in 0..DAYS {
            let weekend = matches!(self.at(day, 0.0).weekday(), Weekday::Sat | Weekday::Sun);
            let growth = 1.0 + 0.004 * day as f64;
            for hour in 0..24 {
                let t = self.at(day, hour as f64 + 0.5);
                if t >= self.now {
                    break;
                }
                // diurnal curve: quiet at night (UTC), busy 13-20 h
                let diurnal = 0.25 + 1.75 * (-((hour as f64 - 16.0) / 5.0).powi(2)).exp();
                for f in &features {
                    let after = day >= switch;
                    let pick = |p: (f64, f64)| if after { p.1 } else { p.0 };
                    let reqs = (f.per_day / 24.0 / 1.03
                        * diurnal
                        * growth
                        * if weekend { 0.55 } else { 1.0 }
                        * self.rng.gen_range(0.85..1.15))
                    .round()
                    .max(1.0);
                    let input = (reqs * f.input * self.rng.gen_range(0.9..1.1)).round();
                    let output = (reqs * pick(f.output) * self.rng.gen_range(0.9..1.1)).round();
                    let cached = (reqs * f.cached * self.rng.gen_range(0.8..1.2)).round();
                    let cost = (input - cached).max(0.0) * pick(f.price_in) / 1e6
                        + cached * pick(f.price_in) * 0.1 / 1e6
                        + output * pick(f.price_out) / 1e6;
                    let (provider, model) = if after {
                        (f.provider.1, f.model.1)
                    } else {
                        (f.provider.0, f.model.0)
                    };
                    let data = json!({"provider": provider, "model": model, "input_tokens": input as i64, "output_tokens": output as i64,
                        "cached_tokens": cached as i64, "requests": reqs as i64, "cost_usd": (cost * 1e6).round() / 1e6, "feature": f.feature,
                        "price_version": "demo"});
                    let _ = t.hour();
                    self.push(
                        "api_cost",
                        "app/cost-reporter",
                        f.project,
                        Some("production"),
                        None,
                        None,
                        None,
                        t,
                        data,
                    );
                }
            }
        }
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
