//! The `shiplog` binary: configuration and the commands.
//!
//! `serve` runs the pipeline (ingest, log, projection, web). Other commands talk to a
//! server over HTTP or work on a stopped server's data dir.

mod bench;
mod budgets;
mod collect;
mod compare;
mod config;
mod datadir;
mod demo;
mod gate;
mod logcmd;
mod logretention;
mod migrate;
mod ops;
mod roles;
mod rulescmd;
mod serve;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: the ingest path allocates per event on every worker
/// thread, and glibc's arena locks and consolidation showed up as ~20% of the ingest profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "shiplog", version, about = "Build-and-deploy metrics pipeline")]
struct Cli {
    /// Config file (TOML). Also SHIPLOG_CONFIG.
    #[arg(long, global = true, env = "SHIPLOG_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (default ./shiplog-data). Also SHIPLOG_DATA_DIR.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: ingest, log, projection, dashboards.
    Serve {
        /// Address to listen on (default 127.0.0.1:7070). Also SHIPLOG_LISTEN.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// When the data dir has no events, fill it with 90 days of demo data first.
        #[arg(long)]
        demo: bool,
        /// What this node runs: ingest, process (projection), web (query, dashboards,
        /// rules) or all. Roles other than all need [log] backend = "kafka".
        #[arg(long, value_enum, default_value_t = roles::Role::All)]
        role: roles::Role,
    },
    /// Fill an empty data dir with 90 days of realistic demo data (server stopped).
    Demo,
    /// Run a read-only SQL query on a server and print the result.
    Query {
        /// The SQL (one SELECT over builds, deploys, migrations, api_costs, checks, decisions, events).
        sql: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: ops::Format,
        /// The server. Also SHIPLOG_URL.
        #[arg(long, env = "SHIPLOG_URL", default_value = "http://127.0.0.1:7070")]
        url: String,
        /// Bearer token with the read scope. Also SHIPLOG_TOKEN.
        #[arg(long, env = "SHIPLOG_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Delete the projections and rebuild them from the log (server stopped).
    Replay,
    /// Check the whole data dir (server stopped): the log, as `log verify`, and the
    /// projection: every committed event in exactly one Parquet row (or a dead letter);
    /// names the kind, day and file of missing events. Exit 0 when sound, 1 when not.
    Verify,
    /// Operations on the embedded log.
    Log {
        #[command(subcommand)]
        which: LogCommand,
    },
    /// Copy the embedded file log into Kafka (the [log] brokers and topic) and verify the
    /// count (server and ingest stopped). Records the log cannot give (damaged, segment
    /// files deleted) are named, and the exit code is 1 unless --accept-loss.
    MigrateLog {
        /// Where to copy the log.
        #[arg(long, value_enum)]
        to: migrate::Target,
        /// Exit 0 even when damaged or deleted records of the file log could not be copied
        /// (they are still named).
        #[arg(long)]
        accept_loss: bool,
    },
    /// Re-price the history of API costs with the current price table (a replay) and print
    /// the cost per provider and model before and after (server stopped).
    Reprice {
        /// A price table overriding and extending the shipped one (default: the config's
        /// [pricing] prices_file). See docs/costs.md.
        #[arg(long)]
        prices: Option<PathBuf>,
    },
    /// Exit 0 when deploying PROJECT to ENV is safe, 1 when not (failed migration since the
    /// last successful deploy, threshold rule in alert, rollback in progress), 2 on errors.
    Gate {
        #[arg(long)]
        project: String,
        #[arg(long)]
        env: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: gate::GateFormat,
        /// The server. Also SHIPLOG_URL.
        #[arg(long, env = "SHIPLOG_URL", default_value = "http://127.0.0.1:7070")]
        url: String,
        /// Bearer token with the read scope. Also SHIPLOG_TOKEN.
        #[arg(long, env = "SHIPLOG_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Rollback rules: `backtest` judges the deployments in the log without acting.
    Rules {
        #[command(subcommand)]
        which: RulesCommand,
    },
    /// Compare a build with the latest successful build of the base branch (build time,
    /// bundle and gzip sizes, chunks) and judge the [[budgets]]: exit 1 on a breach.
    #[command(after_help = compare::EXIT_CODES, after_long_help = compare::EXIT_CODES)]
    Compare(compare::CompareArgs),
    /// Benchmarks that print figures (see docs/benchmarks.md).
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    #[command(flatten)]
    Collect(collect::CollectCommand),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Replay the deployments in the server's log through its rollback rules, or through
    /// the [[rules]] of --config FILE (a candidate set), without acting; print per rule the
    /// deployments judged, would roll back, healthy, inconclusive, and the flagged ones.
    Backtest {
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        /// Deployments that went live in this last span (90d, 12h).
        #[arg(long, default_value = "90d")]
        since: String,
        #[arg(long, value_enum, default_value = "table")]
        format: rulescmd::BacktestFormat,
        /// The server. Also SHIPLOG_URL.
        #[arg(long, env = "SHIPLOG_URL", default_value = "http://127.0.0.1:7070")]
        url: String,
        /// Bearer token with the read scope. Also SHIPLOG_TOKEN.
        #[arg(long, env = "SHIPLOG_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Check every segment (header, each record's CRC32C and offset, offsets contiguous
    /// across segments) and name any damage by segment and byte. Read-only: safe while the
    /// server runs. Exit 0 when clean, 1 when damaged.
    Verify,
    /// Disk usage: bytes on disk and uncompressed, first and last offset, oldest event
    /// kept. Read-only: safe while the server runs.
    Status,
    /// Compress every sealed segment now (server stopped): what `[log] compress` does in
    /// the background.
    Compress,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ingest events/s with durable ack vs a no-op axum server, same load, same run.
    Ingest {
        /// Concurrent connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Events per request (repeatable).
        #[arg(long = "batch", default_values_t = [1usize, 100])]
        batches: Vec<usize>,
        /// Run shiplog on the Kafka backend against an in-process mock cluster.
        #[arg(long)]
        kafka_mock: bool,
    },
    /// CPU time per event of request decoding (validate + build the log record), by the
    /// canonical path (`serde_json::Value` tree, re-serialized) and by the fast path.
    Decode {
        /// Events per request body.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Seconds per path.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// The real server under a steady load for a long time: rate, latency percentiles and
    /// RSS per interval. Without --rate, first measures the maximum and soaks at 80% of it.
    Soak {
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// Events/s to hold (default: 80% of the measured maximum).
        #[arg(long)]
        rate: Option<u64>,
        /// Events per request.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per report line.
        #[arg(long, default_value_t = 60.0)]
        interval: f64,
    },
    /// The real server's RSS with many stored events: after ingest, after the projection,
    /// after rendering every dashboard, and after a restart.
    Rss {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 8)]
        connections: usize,
    },
    /// Time from durable ack to visible in a DuckDB query (p50/p95).
    Freshness {
        #[arg(long, default_value_t = 60)]
        samples: usize,
        /// Background ingest load, events/s.
        #[arg(long, default_value_t = 5000)]
        background_rate: u64,
    },
    /// The rollback judge on seeded simulations: false rollbacks and detection rates per
    /// method, with the checks carrying the rate only or errors and requests.
    Judgement {
        /// Simulated deployments per scenario.
        #[arg(long, default_value_t = 2000)]
        deployments: usize,
        #[arg(long, default_value_t = 20261203)]
        seed: u64,
        /// The rules' confidence (1 − the false-rollback probability they may have).
        #[arg(long, default_value_t = 0.99)]
        confidence: f64,
    },
    /// Dashboard pages' panel queries through shiplog vs the same SQL on plain DuckDB.
    Dashboards {
        /// Events to generate (when the data dir holds no projection yet).
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Timed runs per page (the median is printed), after one warm-up.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Only pages whose label contains this (repeatable), e.g. `deploys` or `90d`.
        #[arg(long = "page")]
        pages: Vec<String>,
    },
}

fn load_config(cli: &Cli) -> Result<config::Config> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut c = config::load(cli.config.as_deref(), &env)?;
    if let Some(d) = &cli.data_dir {
        c.server.data_dir = d.clone();
    }
    Ok(c)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SHIPLOG_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shiplog: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let mut config = load_config(&cli)?;
    match cli.command {
        Command::Serve { listen, demo, role } => {
            if let Some(l) = listen {
                config.server.listen = l;
            }
            runtime()?.block_on(serve::serve(config, demo, role))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query {
            sql,
            format,
            url,
            token,
        } => ops::query(&url, token.as_deref(), &sql, format),
        Command::Replay => ops::replay(&config),
        Command::Verify => ops::verify(&config),
        Command::Log { which } => match which {
            LogCommand::Verify => ops::verify_log(&config),
            LogCommand::Status => logcmd::status(&config),
            LogCommand::Compress => logcmd::compress(&config),
        },
        Command::MigrateLog { to, accept_loss } => migrate::migrate_log(&config, to, accept_loss),
        Command::Demo => {
            demo::run(&config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reprice { prices } => ops::reprice(&config, prices.as_deref()),
        Command::Gate {
            project,
            env,
            format,
            url,
            token,
        } => gate::run(&url, token.as_deref(), &project, &env, format),
        Command::Rules {
            which:
                RulesCommand::Backtest {
                    rule,
                    since,
                    format,
                    url,
                    token,
                },
        } => rulescmd::backtest(rulescmd::BacktestArgs {
            url: &url,
            token: token.as_deref(),
            // A candidate only when --config is on the command line: SHIPLOG_CONFIG names
            // the server's own configuration, whose rules GET already backtests.
            candidate: cli.config.as_deref().filter(|_| {
                std::env::args().any(|a| a == "--config" || a.starts_with("--config="))
            }),
            rule: rule.as_deref(),
            since: &since,
            format,
        }),
        Command::Bench { which } => {
            match which {
                BenchCommand::Ingest {
                    connections,
                    seconds,
                    batches,
                    kafka_mock,
                } => runtime()?.block_on(bench::ingest(
                    shiplog_bench::ingest::IngestBenchArgs {
                        connections,
                        seconds,
                        batch_sizes: batches,
                        log: None,
                    },
                    kafka_mock,
                ))?,
                BenchCommand::Decode { batch, seconds } => {
                    shiplog_bench::ingest::decode(batch, seconds)?
                }
                BenchCommand::Soak {
                    minutes,
                    rate,
                    batch,
                    connections,
                    interval,
                } => runtime()?.block_on(shiplog_bench::soak::soak(
                    shiplog_bench::soak::SoakArgs {
                        minutes,
                        rate,
                        batch,
                        connections,
                        interval,
                        data_dir: cli.data_dir.clone(),
                        log_max_bytes: config.log.retention.max_bytes,
                        log_segment_bytes: config.log.segment_bytes,
                        retention_interval: config.log.retention.interval,
                    },
                ))?,
                BenchCommand::Rss {
                    events,
                    batch,
                    connections,
                } => {
                    runtime()?.block_on(shiplog_bench::soak::rss(shiplog_bench::soak::RssArgs {
                        events,
                        batch,
                        connections,
                        data_dir: cli.data_dir.clone(),
                    }))?
                }
                BenchCommand::Freshness {
                    samples,
                    background_rate,
                } => runtime()?
                    .block_on(shiplog_bench::ingest::freshness(samples, background_rate))?,
                BenchCommand::Judgement {
                    deployments,
                    seed,
                    confidence,
                } => shiplog_bench::judgement::run(&shiplog_bench::judgement::Args {
                    deployments,
                    seed,
                    confidence,
                })?,
                // the projection goes to the global --data-dir (reused when it holds one),
                // else <tmp>/shiplog-bench-dashboards-<events>
                BenchCommand::Dashboards {
                    events,
                    runs,
                    pages,
                } => shiplog_bench::dashboards::run(
                    shiplog_bench::dashboards::Args {
                        events,
                        data_dir: cli.data_dir.clone(),
                        runs,
                        pages,
                    },
                    bench::WebDashboards::open,
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Collect(c) => collect::run(c, &config),
        Command::Compare(a) => compare::run(a),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
