//! `shiplog build [--tool …] [--out DIR]… -- CMD…`: times any build command and reports
//! one `build` event.
//!
//! The command runs as `migrate` runs its own (see [`super::wrapped`]): no shell, output
//! passed through as it comes, SIGINT/SIGTERM forwarded, and shiplog exits with the
//! command's exit code (128+N when killed by signal N). The event has `success`,
//! `duration_ms`, `exit_code`, the error's tail on failure, the CI run, commit and branch
//! (flags, else the CI, else the repository), and the known stats the build left:
//! Next.js's `.next/` (chunks, assets, routes with first-load sizes; Turbopack or webpack),
//! and the files of every `--out` folder or file (any bundler, a binary, an image tarball).

use super::ci::{self, Ci};
use super::outputs::Outputs;
use super::wrapped;
use super::{EnvelopeArgs, SendArgs};
use crate::config::Config;
use clap::Args;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// data.tool (default: the command's program, or the tool `npx`/`npm exec`/`pnpm`/
    /// `yarn`/`bunx` runs; `next` when the build wrote `.next/`).
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
    /// data.mode (default production).
    #[arg(long, default_value = "production", value_name = "MODE")]
    pub mode: String,
    /// A folder (or file) the build writes: every file in it is measured into chunks
    /// (scripts) and assets, with gzip sizes. Repeatable.
    #[arg(long = "out", value_name = "PATH")]
    pub outs: Vec<PathBuf>,
    /// The Next.js output folder to read after the build, when the build wrote it.
    #[arg(long, default_value = ".next", value_name = "DIR")]
    pub next_dir: PathBuf,
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
    #[command(flatten)]
    pub send: SendArgs,
    /// The build command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs the build; the exit code is always the command's.
pub fn run(mut args: BuildArgs, config: &Config, env: &HashMap<String, String>) -> ExitCode {
    let ci = ci::detect(env);
    if args.envelope.source.as_deref().is_none_or(str::is_empty) {
        args.envelope.source = Some("shiplog-build".into());
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut base = super::base_envelope(&args.envelope, ci.as_ref(), "shiplog-build");
    fill_from_repository(&mut base, &cwd);
    base.entry("env")
        .or_insert_with(|| args.mode.clone().into());
    let mut reporting = true;
    let probe = Map::from_iter([
        ("tool".into(), "probe".into()),
        ("success".into(), true.into()),
        ("duration_ms".into(), 0.into()),
    ]);
    if let Err(e) = super::validate(&event_of(&base, "probe", probe)) {
        eprintln!(
            "shiplog: warning: the build will not be reported: {}: {}{}",
            e.field,
            e.error,
            super::field_hint(&e.field)
        );
        reporting = false;
    }

    let run = wrapped::execute(&args.command, |_| {});
    let code = run.exit_code;
    if reporting {
        let event = build_event(&args, &base, ci.as_ref(), &cwd, &run);
        let what = format!(
            "build event ({}, {})",
            event["data"]["tool"].as_str().unwrap_or("build"),
            if run.failed() { "failed" } else { "succeeded" }
        );
        super::send::report_wrapped(&what, &args.send, config, env, &[event]);
    }
    ExitCode::from(code)
}

/// Commit and branch from the repository when neither the flags nor the CI gave them.
fn fill_from_repository(base: &mut Map<String, Value>, cwd: &Path) {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(cwd)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    if !base.contains_key("commit") {
        if let Some(c) = git(&["rev-parse", "HEAD"]) {
            base.insert("commit".into(), c.into());
        }
    }
    if !base.contains_key("branch") {
        if let Some(b) = git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD") {
            base.insert("branch".into(), b.into());
        }
    }
}

fn event_of(base: &Map<String, Value>, id: &str, data: Map<String, Value>) -> Value {
    let mut e = Map::new();
    e.insert("id".into(), id.into());
    e.insert("kind".into(), "build".into());
    for (k, v) in base {
        e.insert(k.clone(), v.clone());
    }
    e.insert("data".into(), Value::Object(data));
    Value::Object(e)
}

/// The tool a command runs: the program, or what a package runner runs
/// (`npx next build` → next, `npm run build` → npm).
pub fn tool_of(command: &[OsString]) -> String {
    let names: Vec<String> = command
        .iter()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let Some(prog) = names.first() else {
        return "build".into();
    };
    let runner_skip = match prog.as_str() {
        "npx" | "bunx" | "pnpx" => 1,
        "npm" | "pnpm" if names.get(1).map(String::as_str) == Some("exec") => 2,
        "yarn" | "pnpm"
            if names
                .get(1)
                .is_some_and(|a| !a.starts_with('-') && a != "run") =>
        {
            1
        }
        _ => 0,
    };
    names
        .iter()
        .skip(runner_skip)
        .find(|a| !a.starts_with('-') && *a != "--")
        .cloned()
        .unwrap_or_else(|| prog.clone())
}

fn build_event(
    args: &BuildArgs,
    base: &Map<String, Value>,
    ci: Option<&Ci>,
    cwd: &Path,
    run: &wrapped::Run,
) -> Value {
    let failed = run.failed();
    let mut data = Map::new();
    let mut tool = args.tool.clone().unwrap_or_else(|| tool_of(&args.command));
    let next_dir = if args.next_dir.is_absolute() {
        args.next_dir.clone()
    } else {
        cwd.join(&args.next_dir)
    };
    let since = run.started.unwrap_or_else(std::time::SystemTime::now);
    let mut problems = Vec::new();
    match super::nextjs::read(cwd, &next_dir, since) {
        Some(Ok(next)) => {
            if args.tool.is_none() {
                tool = "next".into();
            }
            if let Some(v) = &next.version {
                data.insert("tool_version".into(), v.clone().into());
            }
            next.insert_into(&mut data);
        }
        Some(Err(e)) => problems.push(format!("{}: {e}", next_dir.display())),
        None => {}
    }
    if !args.outs.is_empty() && !data.contains_key("chunks") {
        let mut outputs = Outputs::default();
        let many = args.outs.len() > 1;
        for out in &args.outs {
            let path = if out.is_absolute() {
                out.clone()
            } else {
                cwd.join(out)
            };
            // Several outputs: each file is named with its folder, as given.
            let prefix = if many && path.is_dir() {
                format!("{}/", out.to_string_lossy().trim_end_matches('/'))
            } else {
                String::new()
            };
            if let Err(e) = outputs.add_path(&path, &prefix) {
                if !failed {
                    problems.push(format!("{}: {e}", out.display()));
                }
            }
        }
        if !outputs.is_empty() {
            outputs.insert_into(&mut data);
        }
    }
    for p in &problems {
        eprintln!("shiplog: warning: build output not measured: {p}");
    }
    data.insert("tool".into(), tool.clone().into());
    data.insert("mode".into(), args.mode.clone().into());
    data.insert("success".into(), (!failed).into());
    data.insert(
        "duration_ms".into(),
        (run.duration.as_millis().min(u64::MAX as u128) as u64).into(),
    );
    data.insert("exit_code".into(), run.exit_code.into());
    data.insert("command".into(), tool_of(&args.command[..1]).into());
    if let Some(e) = run.error() {
        data.insert("error".into(), e.into());
        let tail = run.output_tail();
        if !tail.is_empty() {
            data.insert("output_tail".into(), tail.into());
        }
    }
    if let Some(ci) = ci {
        data.insert("ci".into(), Value::Object(ci.data()));
    }
    let id = match ci {
        Some(ci) => {
            // The command and the folder tell builds of one step apart; a retried job
            // sends the same id (a duplicate).
            let command: Vec<String> = args
                .command
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let s = |k: &str| base.get(k).and_then(Value::as_str).unwrap_or("");
            ci.stable_id(&[
                "build",
                s("project"),
                &tool,
                &command.join("\u{1f}"),
                &cwd.to_string_lossy(),
            ])
        }
        None => super::random_id("build"),
    };
    let mut event = event_of(base, &id, data);
    let time = run
        .started
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .unwrap_or_else(super::now_rfc3339);
    event["time"] = time.into();
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn tool_of_a_command() {
        assert_eq!(tool_of(&cmd(&["next", "build"])), "next");
        assert_eq!(
            tool_of(&cmd(&["npx", "next", "build", "--turbopack"])),
            "next"
        );
        assert_eq!(tool_of(&cmd(&["npx", "--yes", "vite", "build"])), "vite");
        assert_eq!(tool_of(&cmd(&["npm", "exec", "webpack"])), "webpack");
        assert_eq!(tool_of(&cmd(&["npm", "run", "build"])), "npm");
        assert_eq!(tool_of(&cmd(&["pnpm", "next", "build"])), "next");
        assert_eq!(
            tool_of(&cmd(&["/usr/bin/cargo", "build", "--release"])),
            "cargo"
        );
        assert_eq!(tool_of(&cmd(&["docker", "build", "."])), "docker");
    }
}
