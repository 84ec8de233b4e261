//! The demo's story, project by project (see the module doc of [`super`]), and the API
//! costs.

use super::{Deploy, Gen, Health, DAYS};
use chrono::{Datelike, Duration, Timelike, Weekday};
use rand::Rng;
use serde_json::json;

impl Gen {
    pub(super) fn web_app(&mut self) {
        let (upgrade, failed_day, rollback_day) = (DAYS - 24, DAYS - 15, DAYS - 8);
        let mut prev: Option<String> = None;
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
                let health = if bad {
                    Health::REGRESSED
                } else if day == DAYS - 3 && k == 0 {
                    // the probe lost its network after 3 minutes: too few samples
                    Health {
                        samples: 3,
                        ..Health::WEB
                    }
                } else {
                    Health::WEB
                };
                self.checks(&d, live, health);
                if bad {
                    // The rule rolls it back (`decide` writes its decisions and the
                    // rolled_back deploy, as the engine does): prev stays the restored one.
                    continue; // prev stays the restored deployment
                }
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

    pub(super) fn api(&mut self) {
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
            // day −6: a release whose p95 latency regressed (the dry-run rule flags it)
            let health = if day == DAYS - 6 {
                Health {
                    latency: (430.0, 30.0),
                    ..Health::API
                }
            } else {
                Health::API
            };
            self.checks(&d, live, health);
            prev = Some(id);
        }
    }

    pub(super) fn admin(&mut self) {
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
            self.checks(&d, d.at + Duration::seconds(dur as i64), Health::ADMIN);
            prev = Some(id);
        }
    }

    /// Hourly API cost records per feature and model.
    pub(super) fn costs(&mut self) {
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
