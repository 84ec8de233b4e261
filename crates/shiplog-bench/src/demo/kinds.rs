//! The demo's events of each kind: a build, a deploy, its checks, a rule's decision.

use super::{Deploy, Gen, Health};
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde_json::{json, Value};

impl Gen {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn build(
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

    pub(super) fn deploy(&mut self, d: &Deploy, outcome: &str, duration_s: f64) {
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

    /// Checks for 10 minutes after a deploy: a smoke and a health check, then one sample a
    /// minute of the error rate (with the errors and requests behind it, binomial) and of
    /// the p95 latency.
    pub(super) fn checks(&mut self, d: &Deploy, after: DateTime<Utc>, h: Health) {
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
        for m in 1..=h.samples {
            let t = after + Duration::seconds(60 * m as i64);
            let requests = self.normal(h.requests, h.requests * 0.1).max(20.0).round() as u64;
            let rate = self.normal(h.error_rate.0, h.error_rate.1).max(0.0);
            let errors = (0..requests)
                .filter(|_| self.rng.gen_bool(rate.min(1.0)))
                .count() as u64;
            let er = errors as f64 / requests as f64;
            let lat = self.normal(h.latency.0, h.latency.1).max(1.0);
            self.push("check", "shiplog-probe", p, Some(env), Some(&c), None, dep, t, json!({"name": "error_rate", "value": (er * 10000.0).round() / 10000.0, "errors": errors, "requests": requests, "unit": "ratio", "passed": er < 0.02}));
            self.push("check", "shiplog-probe", p, Some(env), Some(&c), None, dep, t + Duration::seconds(2), json!({"name": "latency_p95", "value": lat.round(), "unit": "ms", "passed": lat < 500.0}));
        }
    }
}
