//! Realistic mixed events for tests and the benchmark (shared by `#[path]`).
#![allow(dead_code, clippy::manual_is_multiple_of)]

use serde_json::{json, Value};

/// A tiny deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ts(base_secs: i64, step: i64, i: u64) -> String {
    let t =
        chrono::DateTime::from_timestamp(base_secs + (i as i64) * step, (i % 1000) as u32 * 1000)
            .unwrap();
    shiplog_events::format_rfc3339(&t)
}

/// Event `i` of a mixed stream: 60% checks, 15% builds, 10% api_cost, 10% deploys,
/// 5% migrations; times spread over several days from `base_secs`.
pub fn event(rng: &mut Rng, i: u64, base_secs: i64, step_secs: i64) -> Value {
    let r = rng.below(100);
    let dep = format!("dpl_{:08x}", i / 50);
    let commit = format!("{:040x}", (i / 50).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let received = ts(base_secs, step_secs, i);
    let mut ev = json!({
        "id": format!("evt-{i:010}"),
        "source": "ci/github",
        "received_at": received,
        "project": if i % 3 == 0 { "web-app" } else { "checkout" },
        "env": if i % 5 == 0 { "preview" } else { "production" },
        "commit": commit,
        "branch": "main",
        "deployment_id": dep,
    });
    if i % 4 != 0 {
        ev["time"] = json!(ts(base_secs, step_secs, i));
    }
    let (kind, data) = if r < 60 {
        let names = ["smoke", "health", "error_rate", "latency_p95"];
        let name = names[rng.below(4) as usize];
        let data = match name {
            "smoke" | "health" => {
                json!({"name": name, "passed": rng.below(10) != 0, "unit": "bool", "region": "fra1"})
            }
            "error_rate" => {
                json!({"name": name, "value": rng.below(1000) as f64 / 10000.0, "unit": "ratio", "samples": rng.below(500)})
            }
            _ => {
                json!({"name": name, "value": 80.0 + rng.below(4000) as f64 / 10.0, "unit": "ms", "window_s": 60})
            }
        };
        ev["source"] = json!("checks/probe");
        ("check", data)
    } else if r < 75 {
        let n_chunks = 2 + rng.below(3);
        let chunks: Vec<Value> = (0..n_chunks)
            .map(|c| json!({"name": format!("assets/chunk-{c}-{:06x}.js", rng.below(1 << 24)), "bytes": 20_000 + rng.below(200_000), "gzip_bytes": 6_000 + rng.below(60_000)}))
            .collect();
        let data = json!({
            "tool": "vite", "tool_version": "8.3.0", "mode": "production",
            "success": rng.below(20) != 0, "duration_ms": 20_000 + rng.below(100_000),
            "phases": [{"name": "transform", "duration_ms": rng.below(30_000)}, {"name": "render", "duration_ms": rng.below(20_000)}, {"name": "write", "duration_ms": rng.below(2_000)}],
            "modules_transformed": 500 + rng.below(3000), "modules_total": 4000,
            "bundle_bytes": 400_000 + rng.below(900_000), "gzip_bytes": 120_000 + rng.below(200_000),
            "chunks": chunks,
            "assets": [{"name": "index.html", "bytes": 1200}],
            "ci": {"provider": "github", "run_id": format!("{}", 9_000_000_000u64 + i), "url": format!("https://github.com/acme/web/actions/runs/{}", 9_000_000_000u64 + i)},
        });
        ev["source"] = json!("vite-plugin");
        ("build", data)
    } else if r < 85 {
        let inp = rng.below(20_000);
        let data = json!({
            "provider": if i % 2 == 0 { "openai" } else { "anthropic" },
            "model": if i % 2 == 0 { "gpt-4.1-mini" } else { "claude-sonnet-4" },
            "input_tokens": inp, "output_tokens": rng.below(4_000), "cached_tokens": rng.below(1_000),
            "requests": 1, "cost_usd": inp as f64 * 0.000_002, "price_version": "2026-10-01", "feature": "summaries",
            "usage": {"prompt_tokens": inp, "completion_tokens": 100, "total_tokens": inp + 100},
        });
        ev["source"] = json!("app/worker");
        ("api_cost", data)
    } else if r < 95 {
        let statuses = ["started", "succeeded", "failed", "rolled_back", "promoted"];
        let data = json!({
            "status": statuses[rng.below(5) as usize],
            "url": format!("https://web-app-{:06x}.vercel.app", rng.below(1 << 24)),
            "provider": "vercel", "previous_deployment_id": format!("dpl_{:08x}", (i / 50).saturating_sub(1)),
            "duration_ms": 30_000 + rng.below(60_000), "triggered_by": "ci",
        });
        ("deploy", data)
    } else {
        let ok = rng.below(10) != 0;
        let data = json!({
            "tool": "alembic", "database": "postgres", "version": format!("20261{:03}", rng.below(1000)),
            "name": "add_orders_index", "status": if ok { "applied" } else { "failed" },
            "duration_ms": rng.below(30_000), "error": if ok { Value::Null } else { json!("relation \"orders\" does not exist") },
            "checksum": format!("{:016x}", rng.next()),
        });
        ev["source"] = json!("shiplog-migrate");
        ("migration", data)
    };
    ev["kind"] = json!(kind);
    ev["data"] = data;
    ev
}
