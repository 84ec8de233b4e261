//! Events spread over the 90 days before now, for the dashboards benchmark: several
//! projects and environments, every kind (decisions too), builds that slow down and grow,
//! and groups of events sharing a commit and a deployment, so that the pages' joins find
//! their partners. Deterministic for a seed.

use chrono::{DateTime, Duration as CDuration, Utc};
use std::fmt::Write as _;

/// xorshift64*: deterministic and cheap.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

const PROJECTS: [&str; 4] = ["web-app", "checkout", "api", "docs"];

/// Event `i` of `n`, spread evenly over the 90 days before `end`. Consecutive groups of 40
/// events share a project, environment, commit and deployment (a deploy's build, checks,
/// costs …), so joins by commit and deployment find their partners.
pub fn event(rng: &mut Rng, i: u64, n: u64, end: DateTime<Utc>, out: &mut String) {
    out.clear();
    let span_us = 90 * 86_400 * 1_000_000i64;
    let t = end - CDuration::microseconds(span_us)
        + CDuration::microseconds((i as i128 * span_us as i128 / n.max(1) as i128) as i64);
    let time = shiplog_events::format_rfc3339(&t);
    let g = i / 40;
    let project = PROJECTS[(g % 4) as usize];
    let env = match g % 10 {
        0..=5 => "production",
        6..=8 => "preview",
        _ => "staging",
    };
    let dep = format!("dpl_{g:09x}");
    let commit = format!("{:016x}{:016x}", g.wrapping_mul(0x9E37_79B9_7F4A_7C15), g);
    let r = rng.below(100);
    let (kind, source, data) = if r < 55 {
        let data = match rng.below(4) {
            0 => format!(
                r#"{{"name":"smoke","passed":{},"unit":"bool"}}"#,
                rng.below(20) != 0
            ),
            1 => format!(
                r#"{{"name":"health","passed":{},"value":200,"unit":"status"}}"#,
                rng.below(50) != 0
            ),
            2 => format!(
                r#"{{"name":"error_rate","passed":true,"value":{},"unit":"ratio"}}"#,
                rng.below(300) as f64 / 10000.0
            ),
            _ => format!(
                r#"{{"name":"latency_p95","passed":true,"value":{},"unit":"ms"}}"#,
                80.0 + rng.below(4000) as f64 / 10.0
            ),
        };
        ("check", "checks/probe", data)
    } else if r < 70 {
        // builds slow down and grow over the 90 days
        let age = i as f64 / n.max(1) as f64;
        let dur = 25_000 + (age * 40_000.0) as u64 + rng.below(50_000);
        let bundle = 600_000 + (age * 500_000.0) as u64 + rng.below(300_000);
        let mut chunks = String::new();
        for c in 0..(2 + rng.below(3)) {
            if c > 0 {
                chunks.push(',');
            }
            let _ = write!(
                chunks,
                r#"{{"name":"assets/chunk-{c}-{:06x}.js","bytes":{},"gzip_bytes":{}}}"#,
                rng.below(1 << 24),
                20_000 + rng.below(200_000),
                6_000 + rng.below(60_000)
            );
        }
        let data = format!(
            r#"{{"tool":"vite","tool_version":"8.3.0","mode":"production","success":{},"duration_ms":{dur},"phases":[{{"name":"transform","duration_ms":{}}},{{"name":"render","duration_ms":{}}},{{"name":"write","duration_ms":{}}}],"modules_transformed":{},"modules_total":4000,"bundle_bytes":{bundle},"gzip_bytes":{},"chunks":[{chunks}],"assets":[{{"name":"index.html","bytes":1200}}],"ci":{{"provider":"github","run_id":"{}","url":"https://github.com/acme/{project}/actions/runs/{}"}}}}"#,
            rng.below(20) != 0,
            dur * 6 / 10,
            dur * 3 / 10,
            dur / 20,
            500 + rng.below(3000),
            bundle * 3 / 10,
            9_000_000_000u64 + i,
            9_000_000_000u64 + i
        );
        ("build", "vite-plugin", data)
    } else if r < 82 {
        let (provider, model, price) = match rng.below(4) {
            0 => ("openai", "gpt-4.1-mini", 0.000_000_4),
            1 => ("openai", "gpt-4.1", 0.000_002),
            2 => ("anthropic", "claude-sonnet-4", 0.000_003),
            _ => ("anthropic", "claude-haiku-4", 0.000_001),
        };
        let feature = ["summaries", "search", "chat", "tagging"][rng.below(4) as usize];
        let inp = 200 + rng.below(20_000);
        let outp = rng.below(4_000);
        let data = format!(
            r#"{{"provider":"{provider}","model":"{model}","input_tokens":{inp},"output_tokens":{outp},"cached_tokens":{},"requests":1,"cost_usd":{},"feature":"{feature}"}}"#,
            rng.below(inp / 2),
            (inp as f64 + 4.0 * outp as f64) * price
        );
        ("api_cost", "app/worker", data)
    } else if r < 92 {
        let status = match rng.below(100) {
            0..=29 => "started",
            30..=74 => "succeeded",
            75..=82 => "failed",
            83..=87 => "rolled_back",
            _ => "promoted",
        };
        let data = format!(
            r#"{{"status":"{status}","url":"https://{project}-{dep}.vercel.app","provider":"vercel","previous_deployment_id":"dpl_{:09x}","duration_ms":{},"triggered_by":"ci"}}"#,
            g.saturating_sub(1),
            30_000 + rng.below(60_000)
        );
        ("deploy", "vercel", data)
    } else if r < 97 {
        let ok = rng.below(15) != 0;
        let data = format!(
            r#"{{"tool":"alembic","database":"main","version":"2026{:05}","name":"add_orders_index","status":"{}","duration_ms":{},"error":{},"checksum":"{:016x}"}}"#,
            rng.below(100_000),
            if ok { "applied" } else { "failed" },
            rng.below(60_000),
            if ok {
                "null"
            } else {
                r#""relation \"orders\" does not exist""#
            },
            rng.next_u64()
        );
        ("migration", "shiplog-migrate", data)
    } else {
        let (verdict, action, outcome) = match rng.below(10) {
            0 => ("degraded", "\"rollback\"", "\"rolled_back\""),
            1 => ("alert", "\"notify\"", "\"sent\""),
            _ => ("healthy", "null", "null"),
        };
        let data = format!(
            r#"{{"rule":"error-rate-after-deploy","verdict":"{verdict}","metric":"error_rate","value":{},"baseline":0.01,"threshold":0.02,"samples":{},"action":{action},"outcome":{outcome},"dry_run":{}}}"#,
            rng.below(400) as f64 / 10000.0,
            50 + rng.below(500),
            rng.below(5) == 0
        );
        ("decision", "shiplog-rules", data)
    };
    let _ = write!(
        out,
        r#"{{"id":"bench-{i:012}","kind":"{kind}","source":"{source}","time":"{time}","received_at":"{time}","project":"{project}","env":"{env}","commit":"{commit}","branch":"main","deployment_id":"{dep}","data":{data}}}"#
    );
}
