//! Collectors built into the binary: `emit`, `flush`, `migrate`, `build`, `probe`.
//!
//! They build events of the public contract (PRODUCT.md) from flags and the CI environment,
//! validate them locally with [`shiplog_events::Event::from_json`], and send them to a
//! server with retries. When the server cannot be reached they spool the events to disk
//! (`flush` sends them later) and exit 0: a collector never fails a pipeline because
//! shiplog is down, unless asked to with `--strict`.
//!
//! Exit codes of `emit`, `flush` and `probe` ([`EXIT_CODES`]): 0 sent or spooled, 2 invalid
//! input or usage, 3 refused by the server (4xx), 4 not delivered with `--strict`.
//! `migrate` and `build` always exit with the wrapped command's code.

mod build;
mod ci;
mod emit;
mod migrate;
mod nextjs;
mod outputs;
mod probe;
mod send;
mod wrapped;

use crate::config::Config;
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub use ci::{detect as detect_ci, Ci};

/// Exit code: the server refused the event (4xx), or refused the token.
pub const EXIT_REJECTED: u8 = 3;
/// Exit code: not delivered, with `--strict` (the events are spooled all the same).
pub const EXIT_UNDELIVERED: u8 = 4;

/// The exit codes, as printed by `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  sent (accepted or duplicate), or spooled because the server could not be reached
  2  invalid input or usage (the message names the field, e.g. /data/status)
  3  refused by the server (4xx: the event was rejected, or the token was refused;
     events refused for their token are kept in the spool)
  4  not delivered and --strict was given (the events are spooled all the same)";

const MIGRATE_EXIT_CODES: &str = "\
Exit code: always the command's own. A command killed by signal N exits 128+N (and is
reported as failed with error \"killed by signal N\"); a command that cannot be started
exits 127 (not found) or 126 (not executable). shiplog's own problems (server down, invalid
flags after the command ran) are warnings on stderr and never change the exit code.";

const BUILD_EXIT_CODES: &str = "\
Exit code: always the command's own (128+N when killed by signal N; 127 not found, 126 not
executable). The event is spooled when the server cannot be reached; shiplog's own problems
are warnings on stderr and never change the exit code.";

// Boxed: the argument structs are large, and `Command` embeds this enum.
#[derive(Subcommand)]
pub enum CollectCommand {
    /// Report one event (build, deploy, migration, api_cost, check) from flags, a JSON
    /// file and the CI environment (the ten providers of ingest/core/ci-providers.json).
    #[command(after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
    Emit(Box<emit::EmitArgs>),
    /// Send the events spooled while the server was unreachable (oldest first).
    #[command(after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
    Flush(Box<send::FlushArgs>),
    /// Run a migration command (no shell), pass its output and exit code through, and
    /// report one `migration` event per migration it ran (Alembic, Supabase CLI, Flyway).
    #[command(after_long_help = MIGRATE_EXIT_CODES, after_help = MIGRATE_EXIT_CODES)]
    Migrate(Box<migrate::MigrateArgs>),
    /// Run a build command (no shell), pass its output and exit code through, and report
    /// one `build` event: duration, success or the error's tail, and the stats the build
    /// left (Next.js `.next/` with Turbopack or webpack, and every `--out` folder).
    #[command(after_long_help = BUILD_EXIT_CODES, after_help = BUILD_EXIT_CODES)]
    Build(Box<build::BuildArgs>),
    /// Probe a deployment's URL and report `check` events (latency_p95, error_rate,
    /// health) for each round of samples.
    #[command(after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
    Probe(Box<probe::ProbeArgs>),
}

/// Runs a collector command.
pub fn run(cmd: CollectCommand, config: &Config) -> Result<ExitCode> {
    let env: HashMap<String, String> = std::env::vars().collect();
    match cmd {
        CollectCommand::Emit(a) => emit::run(*a, config, &env),
        CollectCommand::Flush(a) => send::run_flush(*a, config, &env),
        CollectCommand::Migrate(a) => Ok(migrate::run(*a, config, &env)),
        CollectCommand::Build(a) => Ok(build::run(*a, config, &env)),
        CollectCommand::Probe(a) => probe::run(*a, config, &env),
    }
}

/// Where a collector sends its events (or that it only prints them), and how.
#[derive(Args, Clone, Debug)]
pub struct SendArgs {
    /// Server URL. Also SHIPLOG_URL; default: http://127.0.0.1:7070 (the configured
    /// listen address).
    #[arg(long, visible_alias = "server", env = "SHIPLOG_URL")]
    pub url: Option<String>,
    /// Print the events (validated, as JSON, one per line) instead of sending them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How to reach the server and what to do when it cannot be reached.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Bearer token for the server. Also SHIPLOG_TOKEN.
    #[arg(long, env = "SHIPLOG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where undeliverable events are kept, one file each. Also SHIPLOG_SPOOL_DIR.
    /// Default: $XDG_CACHE_HOME/shiplog/spool, else ~/.cache/shiplog/spool.
    #[arg(long, env = "SHIPLOG_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Exit 4 when the events could not be delivered (they are spooled all the same).
    #[arg(long)]
    pub strict: bool,
    /// Retries after the first attempt, with exponential backoff from 200ms (200ms, 400ms,
    /// 800ms, 1.6s, …, each plus a random jitter of up to as much again), on connection
    /// errors, timeouts, 408, 429 and 5xx. Retry-After is honoured.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub retries: u32,
    /// Bound on the whole delivery, retries included; the events are spooled after it.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub send_timeout: Duration,
}

/// Envelope fields shared by every collector.
#[derive(Args, Clone, Debug, Default)]
pub struct EnvelopeArgs {
    /// Project, e.g. web-app. Also SHIPLOG_PROJECT.
    #[arg(long, env = "SHIPLOG_PROJECT")]
    pub project: Option<String>,
    /// Environment, e.g. production. Also SHIPLOG_ENV; default: the CI's (VERCEL_ENV,
    /// CI_ENVIRONMENT_NAME).
    #[arg(long = "env", env = "SHIPLOG_ENV", value_name = "ENV")]
    pub env: Option<String>,
    /// Git commit (default: the CI's).
    #[arg(long)]
    pub commit: Option<String>,
    /// Git branch (default: the CI's).
    #[arg(long)]
    pub branch: Option<String>,
    /// The deployment the event belongs to (default on Vercel: VERCEL_DEPLOYMENT_ID).
    #[arg(
        long = "deployment-id",
        visible_alias = "deployment",
        value_name = "ID"
    )]
    pub deployment_id: Option<String>,
    /// The collector's name (default: ci/<provider> in CI, else the command's own).
    #[arg(long)]
    pub source: Option<String>,
}

/// The server URL: the flag (or SHIPLOG_URL), else the configured listen address.
pub fn server_url(flag: Option<&str>, config: &Config) -> String {
    match flag {
        Some(u) if !u.trim().is_empty() => u.trim().trim_end_matches('/').to_string(),
        _ => {
            let mut addr = config.server.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
    }
}

/// The envelope (without `id`, `kind`, `data`) from flags, then the CI.
/// Flags win over the environment.
pub fn base_envelope(
    args: &EnvelopeArgs,
    ci: Option<&Ci>,
    default_source: &str,
) -> Map<String, Value> {
    let mut m = Map::new();
    let pick = |flag: &Option<String>, from_ci: Option<&String>| -> Option<String> {
        flag.clone()
            .filter(|s| !s.is_empty())
            .or_else(|| from_ci.cloned())
    };
    let source = pick(&args.source, None).unwrap_or_else(|| match ci {
        Some(ci) => format!("ci/{}", ci.provider),
        None => default_source.to_string(),
    });
    m.insert("source".into(), source.into());
    if let Some(p) = pick(&args.project, None) {
        m.insert("project".into(), p.into());
    }
    let fields = [
        ("env", &args.env, ci.and_then(|c| c.env.as_ref())),
        ("commit", &args.commit, ci.and_then(|c| c.commit.as_ref())),
        ("branch", &args.branch, ci.and_then(|c| c.branch.as_ref())),
        (
            "deployment_id",
            &args.deployment_id,
            ci.and_then(|c| c.deployment_id.as_ref()),
        ),
    ];
    for (name, flag, from_ci) in fields {
        if let Some(v) = pick(flag, from_ci) {
            m.insert(name.into(), v.into());
        }
    }
    m
}

/// Validates an event as the server would (collector origin). The error names the field.
pub fn validate(event: &Value) -> Result<(), shiplog_events::FieldError> {
    shiplog_events::Event::from_json(event.clone(), shiplog_events::Origin::Collector).map(|_| ())
}

/// A hint for a validation error on an envelope field that a flag sets.
pub fn field_hint(field: &str) -> &'static str {
    match field {
        "/project" => " (set --project or SHIPLOG_PROJECT)",
        "/data/status" => " (set --status)",
        "/time" => " (--time takes RFC 3339, e.g. 2026-11-21T10:00:00Z)",
        _ => "",
    }
}

/// Current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A random id, `<prefix>-<32 hex digits>`.
pub fn random_id(prefix: &str) -> String {
    let n: u128 = rand::random();
    format!("{prefix}-{n:032x}")
}

/// Hex digest (first 16 bytes of SHA-256) of the parts, separated unambiguously.
pub fn digest(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Keeps `[A-Za-z0-9._-]`, maps the rest to `_`, and cuts to `max` characters.
pub fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// A small runtime for the HTTP client.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
