//! `shiplog migrate [--tool …] -- CMD…`: runs a migration command and reports it.
//!
//! The command runs as an argument vector (no shell). Its stdout and stderr are passed
//! through unchanged as they come, while a bounded tail is kept and each line is parsed
//! for the migrations it runs (Alembic, Supabase CLI, Flyway). SIGINT and SIGTERM sent to
//! shiplog are forwarded to the command. The exit code is always the command's (128+N when
//! killed by signal N); reporting problems are warnings.

use super::ci::{self, Ci};
use super::send::Sender;
use super::{ClientArgs, EnvelopeArgs};
use crate::config::Config;
use clap::{Args, ValueEnum};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// Output kept for error texts: at most this many bytes and lines.
const TAIL_BYTES: usize = 64 * 1024;
const TAIL_LINES: usize = 50;
/// Longest `error` reported, and its lines.
const ERROR_BYTES: usize = 2048;
const ERROR_LINES: usize = 20;
/// Longest `output_tail` reported with a failure.
const OUTPUT_TAIL_BYTES: usize = 8192;

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
    /// Server URL. Also SHIPLOG_URL; default: http://127.0.0.1:7070 (the configured
    /// listen address).
    #[arg(long, visible_alias = "server", env = "SHIPLOG_URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
    /// Print the events on stderr (one JSON per line) instead of sending them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub client: ClientArgs,
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
    let code = run.exit_code;

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

/// What running the command gave.
#[derive(Debug, Default)]
pub struct Run {
    pub exit_code: u8,
    /// Killed by this signal.
    pub signal: Option<i32>,
    /// Could not start.
    pub spawn_error: Option<String>,
    pub started: Option<SystemTime>,
    pub duration: Duration,
    /// Migrations in order, with when their line came.
    pub seen: Vec<(Seen, Instant, SystemTime)>,
    pub up_to_date: Option<&'static str>,
    /// The last lines of stderr, and of stdout.
    pub stderr_tail: Tail,
    pub stdout_tail: Tail,
    pub ended: Option<Instant>,
}

/// The last lines of a stream, bounded in lines and bytes.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > TAIL_LINES || self.bytes > TAIL_BYTES {
            let Some(l) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= l.len();
        }
    }

    fn is_empty(&self) -> bool {
        self.lines.iter().all(|l| l.trim().is_empty())
    }

    /// The tail as text, cut from the front to at most `max` bytes at a line boundary.
    pub fn text(&self, max: usize) -> String {
        let mut out: VecDeque<&str> = VecDeque::new();
        let mut n = 0;
        for l in self.lines.iter().rev() {
            if n + l.len() + 1 > max && !out.is_empty() {
                break;
            }
            n += l.len() + 1;
            out.push_front(l);
        }
        let mut s = out.into_iter().collect::<Vec<_>>().join("\n");
        if s.len() > max {
            let mut cut = s.len() - max;
            while !s.is_char_boundary(cut) {
                cut += 1;
            }
            s = s[cut..].to_string();
        }
        s.trim().to_string()
    }
}

static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Sent by a process (kill, a CI runner): forward it. Sent by the kernel (a terminal's
    // Ctrl-C reaches the whole process group, the child included): the child has it.
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
    let from_process = info.is_null() || unsafe { (*info).si_code } <= 0;
    if from_process {
        PENDING_SIGNAL.store(sig, Ordering::SeqCst);
    }
}

fn install_forwarding() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a plain sigaction with a handler that only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

enum Msg {
    Line(bool, String, Instant, SystemTime),
}

/// Copies a pipe to our own stream unchanged, and sends its lines (lossy UTF-8).
fn pump(mut from: impl Read, is_err: bool, tx: mpsc::Sender<Msg>) {
    let mut buf = [0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let send_line = |line: &mut Vec<u8>| {
        let mut s = String::from_utf8_lossy(line).into_owned();
        if s.ends_with('\r') {
            s.pop();
        }
        let _ = tx.send(Msg::Line(is_err, s, Instant::now(), SystemTime::now()));
        line.clear();
    };
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        // Pass-through first, unchanged.
        if is_err {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(chunk);
            let _ = e.flush();
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(chunk);
            let _ = o.flush();
        }
        for &b in chunk {
            if b == b'\n' {
                send_line(&mut line);
            } else if line.len() < TAIL_BYTES {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        send_line(&mut line);
    }
}

/// Runs the command with pass-through and parsing.
pub fn execute(command: &[OsString]) -> Run {
    let mut run = Run {
        started: Some(SystemTime::now()),
        ..Default::default()
    };
    let start = Instant::now();
    install_forwarding();
    let mut child = match Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let prog = command[0].to_string_lossy();
            eprintln!("shiplog: cannot run {prog}: {e}");
            run.exit_code = match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            run.spawn_error = Some(format!("cannot run {prog}: {e}"));
            run.ended = Some(Instant::now());
            run.duration = start.elapsed();
            return run;
        }
    };
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    let t_out = std::thread::spawn(move || pump(out, false, tx));
    let t_err = std::thread::spawn(move || pump(err, true, tx2));

    let handle = |run: &mut Run, msg: Msg| {
        let Msg::Line(is_err, line, at, wall) = msg;
        match parse_line(&line) {
            Some(LineInfo::Migration(seen)) => run.seen.push((seen, at, wall)),
            Some(LineInfo::UpToDate(t)) => run.up_to_date = Some(t),
            None => {}
        }
        if is_err {
            run.stderr_tail.push(line);
        } else {
            run.stdout_tail.push(line);
        }
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(25)) {
            Ok(msg) => handle(&mut run, msg),
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        let sig = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, sig);
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
    };
    run.ended = Some(Instant::now());
    // The rest of the output. A grandchild may keep the pipes open: wait a little only.
    let drain_until = Instant::now() + Duration::from_secs(2);
    while let Ok(msg) = rx.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
        handle(&mut run, msg);
    }
    if t_out.is_finished() {
        let _ = t_out.join();
    }
    if t_err.is_finished() {
        let _ = t_err.join();
    }
    run.duration = start.elapsed();
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => {
            if let Some(c) = s.code() {
                run.exit_code = (c & 0xff) as u8;
            } else if let Some(sig) = s.signal() {
                run.signal = Some(sig);
                run.exit_code = (128 + sig).min(255) as u8;
            }
        }
        None => run.exit_code = 1,
    }
    run
}

/// The error text of a failed run: the exception of a Python traceback (Alembic) when the
/// output ends with one, else the last lines.
pub fn error_text(tail: &Tail) -> String {
    let lines: Vec<&String> = tail.lines.iter().collect();
    // A traceback's frames (`  File "…", line N`) are indented (its header may have left
    // the tail); the exception follows the last indented line.
    if let Some(tb) = lines.iter().position(|l| {
        l.starts_with("Traceback (most recent call last)") || l.starts_with("  File \"")
    }) {
        let after = &lines[tb..];
        if let Some(last_frame) = after.iter().rposition(|l| l.starts_with(' ')) {
            let exc: Vec<&str> = after[last_frame + 1..].iter().map(|l| l.as_str()).collect();
            let text = exc.join("\n");
            if !text.trim().is_empty() {
                let mut t = Tail::default();
                exc.iter().for_each(|l| t.push(l.to_string()));
                return t.text(ERROR_BYTES);
            }
        }
    }
    let mut t = Tail::default();
    for l in lines.iter().skip(lines.len().saturating_sub(ERROR_LINES)) {
        t.push(l.to_string());
    }
    t.text(ERROR_BYTES)
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
    run: &Run,
) -> Vec<Value> {
    let failed = run.exit_code != 0 || run.signal.is_some() || run.spawn_error.is_some();
    let error = if let Some(e) = &run.spawn_error {
        Some(e.clone())
    } else if let Some(sig) = run.signal {
        Some(format!("killed by signal {sig}"))
    } else if failed {
        let tail = error_text(if run.stderr_tail.is_empty() {
            &run.stdout_tail
        } else {
            &run.stderr_tail
        });
        Some(if tail.is_empty() {
            format!("exited with code {}", run.exit_code)
        } else {
            tail
        })
    } else {
        None
    };
    let tool = tool
        .or_else(|| run.seen.first().map(|(s, _, _)| s.tool))
        .or(run.up_to_date)
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
    if run.seen.is_empty() {
        let status = if failed {
            "failed"
        } else if run.up_to_date.is_some() && args.migration_version.is_none() {
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
        for (i, (seen, at, wall)) in run.seen.iter().enumerate() {
            let next = run.seen.get(i + 1).map(|(_, t, _)| *t).unwrap_or(end);
            let last = i + 1 == run.seen.len();
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
            let tail = if run.stderr_tail.is_empty() {
                run.stdout_tail.text(OUTPUT_TAIL_BYTES)
            } else {
                run.stderr_tail.text(OUTPUT_TAIL_BYTES)
            };
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
    for e in events {
        if let Err(err) = super::validate(e) {
            eprintln!(
                "shiplog: warning: migration not reported: {}: {}",
                err.field, err.error
            );
            return;
        }
    }
    if args.dry_run {
        for e in events {
            eprintln!("{e}");
        }
        return;
    }
    let server = super::server_url(args.url.as_deref(), config);
    let result = (|| -> anyhow::Result<()> {
        let sender = Sender::new(&server, &args.client, env)?;
        let r = super::runtime()?.block_on(sender.deliver(events));
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
        eprintln!(
            "shiplog: {} migration event(s) [{}]: {} accepted, {} duplicate, {} rejected, {} spooled",
            events.len(),
            summary.join(", "),
            r.accepted,
            r.duplicates,
            r.rejected.len(),
            r.spooled
        );
        r.warn(&sender);
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("shiplog: warning: migration not reported: {e:#}");
    }
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

    #[test]
    fn error_text_of_a_traceback() {
        let mut t = Tail::default();
        for l in [
            "INFO  [alembic.runtime.migration] Running upgrade a -> b, x",
            "Traceback (most recent call last):",
            "  File \"x.py\", line 1, in <module>",
            "    foo()",
            "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) no such table: t",
            "[SQL: ALTER TABLE t ADD COLUMN c TEXT]",
        ] {
            t.push(l.to_string());
        }
        assert_eq!(
            error_text(&t),
            "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) no such table: t\n[SQL: ALTER TABLE t ADD COLUMN c TEXT]"
        );
        let mut t = Tail::default();
        t.push("ERROR: relation \"users\" already exists".into());
        assert_eq!(error_text(&t), "ERROR: relation \"users\" already exists");
    }

    #[test]
    fn tail_is_bounded() {
        let mut t = Tail::default();
        for i in 0..200 {
            t.push(format!("line {i}"));
        }
        assert_eq!(t.lines.len(), TAIL_LINES);
        assert!(t.text(20).ends_with("line 199"));
        assert!(t.text(20).len() <= 20);
    }
}
