//! `shiplog migrate [--tool …] -- CMD…`: runs a migration command and reports it.
//!
//! The command runs as an argument vector (no shell). Its stdout and stderr are passed
//! through unchanged as they come, while a bounded tail is kept and each line is parsed
//! for the migrations it runs (Alembic, Supabase CLI, Flyway). SIGINT and SIGTERM sent to
//! shiplog are forwarded to the command. The exit code is always the command's (128+N when
//! killed by signal N); reporting problems are warnings.

use super::ci::{self, Ci};
use super::wrapped::{self, Run};
use super::{EnvelopeArgs, SendArgs};
use crate::config::Config;
use clap::{Args, ValueEnum};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tool {
    Alembic,
    Supabase,
    Flyway,
    Custom,
}

impl Tool {
    fn as_str(self) -> &'static str {
        match self {
            Tool::Alembic => "alembic",
            Tool::Supabase => "supabase",
            Tool::Flyway => "flyway",
            Tool::Custom => "custom",
        }
    }
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The migration tool (default: from the command's name, else custom). Output lines of
    /// Alembic, the Supabase CLI and Flyway are recognized whatever this says.
    #[arg(long, value_enum)]
    pub tool: Option<Tool>,
    /// data.database: the target database.
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// data.version when the output names no migration (one event for the whole run).
    #[arg(long = "version", value_name = "V")]
    pub migration_version: Option<String>,
    /// data.name when the output names no migration.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
    #[command(flatten)]
    pub send: SendArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs the command; the exit code is always the command's.
pub fn run(args: MigrateArgs, config: &Config, env: &HashMap<String, String>) -> ExitCode {
    let ci = ci::detect(env);
    let tool = args.tool.map(Tool::as_str).or_else(|| {
        let prog = std::path::Path::new(&args.command[0])
            .file_name()?
            .to_str()?;
        ["alembic", "supabase", "flyway"]
            .into_iter()
            .find(|t| prog == *t || prog.starts_with(&format!("{t}.")))
    });
    // Check the envelope before running, so a mistake is reported early; it never stops
    // the migration.
    let base = super::base_envelope(&args.envelope, ci.as_ref(), "shiplog-migrate");
    let probe = event(
        &base,
        "probe",
        Map::from_iter([("status".into(), "applied".into())]),
        None,
    );
    let mut reporting = true;
    if let Err(e) = super::validate(&probe) {
        eprintln!(
            "shiplog: warning: the migration will not be reported: {}: {}{}",
            e.field,
            e.error,
            super::field_hint(&e.field)
        );
        reporting = false;
    }

    let run = execute(&args.command);
    let code = run.run.exit_code;

    if reporting {
        let events = events(&args, &base, ci.as_ref(), tool, &run);
        report(&args, config, env, &events);
    }
    ExitCode::from(code)
}

/// A migration seen in the output.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub version: Option<String>,
    pub name: Option<String>,
    /// A downgrade / undo.
    pub down: bool,
    pub tool: &'static str,
}

/// What one line says.
#[derive(Debug, PartialEq)]
pub enum LineInfo {
    Migration(Seen),
    /// The tool ran and says there is nothing to do (or, for Alembic, that it is
    /// configured: with no migration after it, nothing ran).
    UpToDate(&'static str),
}

/// Parses one output line.
pub fn parse_line(line: &str) -> Option<LineInfo> {
    let line = line.trim_end();
    // Alembic: `INFO  [alembic.runtime.migration] Running upgrade 1a2b -> 3c4d, add users`.
    for (marker, down) in [("Running upgrade ", false), ("Running downgrade ", true)] {
        if let Some(i) = line.find(marker) {
            let rest = &line[i + marker.len()..];
            let (from, to_name) = rest.split_once("->")?;
            let (to, name) = match to_name.split_once(", ") {
                Some((to, name)) => (to.trim(), Some(name.trim().to_string())),
                None => (to_name.trim(), None),
            };
            let version = if down { from.trim() } else { to };
            return Some(LineInfo::Migration(Seen {
                version: Some(version.to_string()).filter(|v| !v.is_empty()),
                name: name.filter(|n| !n.is_empty()),
                down,
                tool: "alembic",
            }));
        }
    }
    if line.contains("[alembic.runtime.migration] Context impl") {
        return Some(LineInfo::UpToDate("alembic"));
    }
    // Supabase CLI: `Applying migration 20260101120000_add_users.sql...`.
    if let Some(i) = line.find("Applying migration ") {
        let file = line[i + "Applying migration ".len()..]
            .trim()
            .trim_end_matches('.')
            .trim_end_matches("…")
            .trim();
        let stem = file.strip_suffix(".sql").unwrap_or(file);
        let (version, name) = match stem.split_once('_') {
            Some((v, n)) if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) => {
                (v.to_string(), Some(n.to_string()))
            }
            _ => (stem.to_string(), None),
        };
        return Some(LineInfo::Migration(Seen {
            version: Some(version),
            name,
            down: false,
            tool: "supabase",
        }));
    }
    if line.contains("Remote database is up to date")
        || line.contains("Local database is up to date")
    {
        return Some(LineInfo::UpToDate("supabase"));
    }
    // Flyway: `Migrating schema "public" to version "2 - add users"`, older releases with
    // backticks or no quotes; repeatable: `… with repeatable migration "views"`.
    if line.contains("Migrating schema ") {
        let unquote = |s: &str| s.trim().trim_matches(|c| c == '"' || c == '`').to_string();
        if let Some((_, rest)) = line.split_once(" to version ") {
            let rest = unquote(rest);
            let (version, name) = match rest.split_once(" - ") {
                Some((v, n)) => (v.trim().to_string(), Some(n.trim().to_string())),
                None => (rest, None),
            };
            return Some(LineInfo::Migration(Seen {
                version: Some(version),
                name,
                down: false,
                tool: "flyway",
            }));
        }
        if let Some((_, rest)) = line.split_once(" with repeatable migration ") {
            return Some(LineInfo::Migration(Seen {
                version: None,
                name: Some(unquote(rest)),
                down: false,
                tool: "flyway",
            }));
        }
    }
    if line.contains("No migration necessary") {
        return Some(LineInfo::UpToDate("flyway"));
    }
    None
}

/// A run of the migration command, with the migrations its output named.
#[derive(Debug, Default)]
pub struct MigrationRun {
    pub run: Run,
    /// Migrations in order, with when their line came.
    pub seen: Vec<(Seen, Instant, SystemTime)>,
    pub up_to_date: Option<&'static str>,
}

/// Runs the command (see [`wrapped::execute`]), parsing each line for migrations.
pub fn execute(command: &[OsString]) -> MigrationRun {
    let mut seen = Vec::new();
    let mut up_to_date = None;
    let run = wrapped::execute(command, |l| match parse_line(l.text) {
        Some(LineInfo::Migration(s)) => seen.push((s, l.at, l.wall)),
        Some(LineInfo::UpToDate(t)) => up_to_date = Some(t),
        None => {}
    });
    MigrationRun {
        run,
        seen,
        up_to_date,
    }
}

fn event(
    base: &Map<String, Value>,
    id: &str,
    data: Map<String, Value>,
    time: Option<SystemTime>,
) -> Value {
    let mut e = Map::new();
    e.insert("id".into(), id.into());
    e.insert("kind".into(), "migration".into());
    for (k, v) in base {
        e.insert(k.clone(), v.clone());
    }
    let t = time
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .unwrap_or_else(super::now_rfc3339);
    e.insert("time".into(), t.into());
    e.insert("data".into(), Value::Object(data));
    Value::Object(e)
}

/// The migration events of a run.
pub fn events(
    args: &MigrateArgs,
    base: &Map<String, Value>,
    ci: Option<&Ci>,
    tool: Option<&'static str>,
    mrun: &MigrationRun,
) -> Vec<Value> {
    let run = &mrun.run;
    let failed = run.failed();
    let error = run.error();
    let tool = tool
        .or_else(|| mrun.seen.first().map(|(s, _, _)| s.tool))
        .or(mrun.up_to_date)
        .unwrap_or("custom");
    let program = std::path::Path::new(&args.command[0])
        .file_name()
        .map(|p| p.to_string_lossy().into_owned());
    let run_nonce = super::random_id("migrate");

    // (version, name, status, duration, time)
    type Row = (
        Option<String>,
        Option<String>,
        &'static str,
        Duration,
        Option<SystemTime>,
    );
    let mut rows: Vec<Row> = Vec::new();
    if mrun.seen.is_empty() {
        let status = if failed {
            "failed"
        } else if mrun.up_to_date.is_some() && args.migration_version.is_none() {
            "skipped"
        } else {
            "applied"
        };
        rows.push((
            args.migration_version.clone(),
            args.name.clone(),
            status,
            run.duration,
            run.started,
        ));
    } else {
        let end = run.ended.unwrap_or_else(Instant::now);
        for (i, (seen, at, wall)) in mrun.seen.iter().enumerate() {
            let next = mrun.seen.get(i + 1).map(|(_, t, _)| *t).unwrap_or(end);
            let last = i + 1 == mrun.seen.len();
            let status = match (last && failed, seen.down) {
                (true, _) => "failed",
                (false, true) => "rolled_back",
                (false, false) => "applied",
            };
            rows.push((
                seen.version.clone(),
                seen.name.clone(),
                status,
                next.saturating_duration_since(*at),
                Some(*wall),
            ));
        }
    }
    let mut out = Vec::new();
    for (i, (version, name, status, duration, time)) in rows.into_iter().enumerate() {
        let mut data = Map::new();
        data.insert("tool".into(), tool.into());
        if let Some(d) = &args.database {
            data.insert("database".into(), d.clone().into());
        }
        if let Some(v) = &version {
            data.insert("version".into(), v.clone().into());
        }
        if let Some(n) = &name {
            data.insert("name".into(), n.clone().into());
        }
        data.insert("status".into(), status.into());
        data.insert(
            "duration_ms".into(),
            (duration.as_millis().min(u64::MAX as u128) as u64).into(),
        );
        if status == "failed" {
            if let Some(e) = &error {
                data.insert("error".into(), e.clone().into());
            }
            data.insert("exit_code".into(), run.exit_code.into());
            let tail = run.output_tail();
            if !tail.is_empty() {
                data.insert("output_tail".into(), tail.into());
            }
        }
        if let Some(p) = &program {
            data.insert("command".into(), p.clone().into());
        }
        if let Some(ci) = ci {
            data.insert("ci".into(), Value::Object(ci.data()));
        }
        let id = match ci {
            Some(ci) => {
                let s = |k: &str| base.get(k).and_then(Value::as_str).unwrap_or("");
                // Migrations without a version are told apart by their position.
                let index = if version.is_none() {
                    i.to_string()
                } else {
                    String::new()
                };
                ci.stable_id(&[
                    "migration",
                    status,
                    s("deployment_id"),
                    s("project"),
                    s("env"),
                    args.database.as_deref().unwrap_or(""),
                    version.as_deref().unwrap_or(""),
                    name.as_deref().unwrap_or(""),
                    &index,
                ])
            }
            None => format!("{run_nonce}-{i}"),
        };
        out.push(event(base, &id, data, time));
    }
    out
}

fn report(args: &MigrateArgs, config: &Config, env: &HashMap<String, String>, events: &[Value]) {
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["data"]["version"].as_str().unwrap_or("-"),
                e["data"]["status"].as_str().unwrap_or("")
            )
        })
        .collect();
    let what = format!("migration event(s) [{}]", summary.join(", "));
    super::send::report_wrapped(&what, &args.send, config, env, events);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mig(line: &str) -> Seen {
        match parse_line(line) {
            Some(LineInfo::Migration(s)) => s,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn alembic_lines() {
        let s =
            mig("INFO  [alembic.runtime.migration] Running upgrade 1a2b -> 3c4d, add users table");
        assert_eq!(s.version.as_deref(), Some("3c4d"));
        assert_eq!(s.name.as_deref(), Some("add users table"));
        assert!(!s.down);
        let s = mig("INFO  [alembic.runtime.migration] Running upgrade  -> 1a2b, init");
        assert_eq!(s.version.as_deref(), Some("1a2b"));
        let s = mig("INFO  [alembic.runtime.migration] Running upgrade a1, b2 -> c3, merge heads");
        assert_eq!(s.version.as_deref(), Some("c3"));
        assert_eq!(s.name.as_deref(), Some("merge heads"));
        let s = mig(
            "INFO  [alembic.runtime.migration] Running downgrade 3c4d -> 1a2b, add users table",
        );
        assert_eq!(s.version.as_deref(), Some("3c4d"));
        assert!(s.down);
        let s = mig("INFO  [alembic.runtime.migration] Running upgrade 1a2b -> 3c4d");
        assert_eq!(s.name, None);
        assert_eq!(
            parse_line("INFO  [alembic.runtime.migration] Context impl SQLiteImpl."),
            Some(LineInfo::UpToDate("alembic"))
        );
    }

    #[test]
    fn supabase_and_flyway_lines() {
        let s = mig("Applying migration 20260101120000_add_users.sql...");
        assert_eq!(s.version.as_deref(), Some("20260101120000"));
        assert_eq!(s.name.as_deref(), Some("add_users"));
        assert_eq!(s.tool, "supabase");
        let s = mig(r#"Migrating schema "public" to version "2 - add users""#);
        assert_eq!(s.version.as_deref(), Some("2"));
        assert_eq!(s.name.as_deref(), Some("add users"));
        let s = mig("Migrating schema `public` to version 1.1 - init");
        assert_eq!(s.version.as_deref(), Some("1.1"));
        assert_eq!(s.name.as_deref(), Some("init"));
        let s = mig(r#"Migrating schema "public" with repeatable migration "views""#);
        assert_eq!(s.version, None);
        assert_eq!(s.name.as_deref(), Some("views"));
        assert!(parse_line("hello").is_none());
    }
}
