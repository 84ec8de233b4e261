//! `shiplog bench judgement`: the rollback judge on seeded simulations. It prints, per
//! method (the default `sequential`, Kayenta's `mann_whitney`, the first versions'
//! `threshold`) and per way the checks carry the error rate (rate only, or errors and
//! requests), how often a healthy deployment is rolled back, with and without one transient
//! blip, and how often a degradation of 1.5×, 2×, 2.5× and 3× is caught by the end of the
//! window, with the detection broken down by the baseline's error rate. The figures are
//! deterministic (a fixed seed); `shiplog_rules::judge::tests` asserts the goals on them.

use shiplog_rules::judge::sim::{self, Carried, Scenario, SimConfig, SimResult, BANDS};
use shiplog_rules::judge::Method;
use std::time::Instant;

pub struct Args {
    pub deployments: usize,
    pub seed: u64,
    pub confidence: f64,
}

/// Runs every scenario and prints the tables.
pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.confidence > 0.5 && args.confidence < 1.0,
        "--confidence must be between 0.5 and 1"
    );
    let cfg = SimConfig {
        deployments: args.deployments,
        seed: args.seed,
        ..SimConfig::default()
    };
    let alpha = 1.0 - args.confidence;
    println!(
        "rollback judgement: {} simulated deployments per row, seed {}, {} samples of ~{} requests per window (10 min) on each side,",
        cfg.deployments, cfg.seed, cfg.samples, cfg.requests
    );
    println!(
        "baseline error rate uniform in {:.1}%–{:.1}%, rule: max_ratio = 1.5, min_samples = 5, confidence = {}",
        cfg.base_low * 100.0,
        cfg.base_high * 100.0,
        args.confidence
    );
    println!("figures: % of deployments rolled back (healthy rows: false rollbacks; degraded rows: detection by the window's end)\n");
    let started = Instant::now();
    let rows = sim::table(
        &cfg,
        alpha,
        &[Method::Sequential, Method::MannWhitney, Method::Threshold],
    );
    print!("{}", render(&rows));
    println!("\ngoals: false rollbacks ≤ 1% (healthy), ≤ 2% (one blip); detection ≥ 95% at 2.5×");
    for method in [Method::Sequential, Method::MannWhitney, Method::Threshold] {
        for carried in [Carried::RateOnly, Carried::Counts] {
            let verdict = match sim::goals_met(&rows, method, carried) {
                Ok(()) => "met".to_string(),
                Err(e) => format!("missed: {e}"),
            };
            println!(
                "  {:<13} {:<18} {verdict}",
                method.as_str(),
                carried.label()
            );
        }
    }
    println!("\n({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// The table: one line per method and carrier, one column per scenario, then the
/// detection at 2.5× per baseline band.
pub fn render(rows: &[SimResult]) -> String {
    let scenarios = sim::scenarios();
    let mut s = format!("{:<13} {:<18}", "method", "checks carry");
    for sc in &scenarios {
        s.push_str(&format!(" {:>18}", sc.label()));
    }
    s.push_str("   2.5× by baseline:");
    for (lo, hi) in BANDS {
        s.push_str(&format!(
            " {:>9}",
            format!("{:.1}–{:.1}%", lo * 100.0, hi * 100.0)
        ));
    }
    s.push('\n');
    for method in [Method::Sequential, Method::MannWhitney, Method::Threshold] {
        for carried in [Carried::RateOnly, Carried::Counts] {
            let mine: Vec<&SimResult> = rows
                .iter()
                .filter(|r| r.method == method && r.carried == carried)
                .collect();
            if mine.is_empty() {
                continue;
            }
            s.push_str(&format!("{:<13} {:<18}", method.as_str(), carried.label()));
            for sc in &scenarios {
                match mine.iter().find(|r| r.scenario == *sc) {
                    Some(r) => s.push_str(&format!(" {:>17.2}%", r.rate() * 100.0)),
                    None => s.push_str(&format!(" {:>18}", "-")),
                }
            }
            s.push_str("                    ");
            if let Some(r) = mine.iter().find(|r| r.scenario == Scenario::Degraded(2.5)) {
                for (_, _, hit, n) in &r.bands {
                    s.push_str(&format!(
                        " {:>8.1}%",
                        *hit as f64 * 100.0 / (*n).max(1) as f64
                    ));
                }
            }
            s.push('\n');
        }
    }
    s
}
