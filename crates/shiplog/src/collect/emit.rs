//! `shiplog emit <kind>`: one event from flags, a JSON file and the CI environment.
//!
//! Precedence: `--data` > the other flags > `--json FILE` > the CI environment > defaults.

use super::ci::{self, Ci};
use super::send::Sender;
use super::{EnvelopeArgs, SendArgs};
use crate::config::Config;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmitKind {
    Build,
    Deploy,
    Migration,
    #[value(name = "api_cost", alias = "api-cost")]
    ApiCost,
    Check,
}

impl EmitKind {
    fn as_str(self) -> &'static str {
        match self {
            EmitKind::Build => "build",
            EmitKind::Deploy => "deploy",
            EmitKind::Migration => "migration",
            EmitKind::ApiCost => "api_cost",
            EmitKind::Check => "check",
        }
    }
}

#[derive(Args, Debug)]
pub struct EmitArgs {
    /// Event kind (optional when --json holds a whole event with `kind`).
    #[arg(value_enum)]
    pub kind: Option<EmitKind>,
    #[command(flatten)]
    pub envelope: EnvelopeArgs,
    /// Event id (unique per source). Default: derived from the CI run, job, step, kind,
    /// status and deployment (a retried job sends the same id, and the server drops it as
    /// a duplicate); outside CI, random.
    #[arg(long)]
    pub id: Option<String>,
    /// Event time, RFC 3339 (default: now).
    #[arg(long)]
    pub time: Option<String>,
    /// data.status (deploy: started, succeeded, failed, rolled_back, promoted; migration:
    /// applied, failed, rolled_back, skipped). For build it also sets data.success, for
    /// check data.passed.
    #[arg(long)]
    pub status: Option<String>,
    /// data.url: the deployment's URL (on Vercel: https://$VERCEL_URL).
    #[arg(long, value_name = "URL")]
    pub deployment_url: Option<String>,
    /// data.previous_deployment_id: the deployment this one replaces (rollback rules use it
    /// as the baseline and the rollback target).
    #[arg(long, value_name = "ID")]
    pub previous_deployment_id: Option<String>,
    /// A data field, repeatable. The value is read as JSON when it parses (numbers, true,
    /// false, null, objects, arrays, "quoted strings"), else as a string. Dotted keys make
    /// nested objects: `--data ci.run_id=12`.
    #[arg(long = "data", value_name = "KEY=VALUE")]
    pub data: Vec<String>,
    /// A JSON object merged into data, or a whole event when it has `kind` (flags still
    /// win). `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub send: SendArgs,
}

pub fn run(args: EmitArgs, config: &Config, env: &HashMap<String, String>) -> Result<ExitCode> {
    let ci = ci::detect(env);
    let event = build_event(&args, ci.as_ref())?;
    if let Err(e) = super::validate(&event) {
        bail!(
            "invalid event: {}: {}{}",
            if e.field.is_empty() { "/" } else { &e.field },
            e.error,
            super::field_hint(&e.field)
        );
    }
    if args.send.dry_run {
        println!("{}", serde_json::to_string_pretty(&event)?);
        return Ok(ExitCode::SUCCESS);
    }
    let server = super::server_url(args.send.url.as_deref(), config);
    let sender = Sender::new(&server, &args.send.client, env)?;
    let rt = super::runtime()?;
    let report = rt.block_on(sender.deliver(std::slice::from_ref(&event)));
    let (kind, id, source) = (
        event["kind"].as_str().unwrap_or(""),
        event["id"].as_str().unwrap_or(""),
        event["source"].as_str().unwrap_or(""),
    );
    let outcome = if report.accepted > 0 {
        "accepted"
    } else if report.duplicates > 0 {
        "duplicate"
    } else if !report.rejected.is_empty() {
        "rejected"
    } else if report.spooled > 0 {
        "spooled"
    } else {
        "not delivered"
    };
    println!("{outcome}: {kind} {id} (source {source})");
    report.warn(&sender);
    // Delivered: send what an earlier outage left in the spool, briefly and quietly.
    if report.accepted + report.duplicates > 0 {
        let f = rt.block_on(sender.flush(0, 200));
        if f.sent() > 0 || f.rejected > 0 {
            eprintln!(
                "shiplog: also sent {} spooled event(s), {} rejected, {} left",
                f.sent(),
                f.rejected,
                f.left
            );
        }
    }
    Ok(ExitCode::from(report.exit_code(args.send.client.strict)))
}

/// Builds the event (not validated).
pub fn build_event(args: &EmitArgs, ci: Option<&Ci>) -> Result<Value> {
    let mut file_event = Map::new();
    let mut data = Map::new();
    if let Some(path) = &args.json {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --json {}", path.display()))?
        };
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("--json {}: not JSON", path.display()))?;
        let Value::Object(obj) = v else {
            bail!("--json {}: must hold a JSON object", path.display());
        };
        if obj.contains_key("kind") {
            file_event = obj;
            match file_event.remove("data") {
                Some(Value::Object(d)) => data = d,
                None | Some(Value::Null) => {}
                Some(_) => bail!("--json {}: /data must be an object", path.display()),
            }
        } else {
            data = obj;
        }
    }
    let kind = match (args.kind, file_event.get("kind")) {
        (Some(k), None) => k.as_str().to_string(),
        (Some(k), Some(Value::String(f))) if f == k.as_str() => f.clone(),
        (Some(k), Some(f)) => bail!("kind {} given, but --json holds kind {f}", k.as_str()),
        (None, Some(Value::String(f))) => f.clone(),
        (None, Some(f)) => bail!("--json: /kind must be a string, not {f}"),
        (None, None) => bail!(
            "the event kind is required: shiplog emit <build|deploy|migration|api_cost|check>"
        ),
    };

    // Envelope: flags, else the file, else the CI.
    let mut ev = Map::new();
    let flags = super::base_envelope(&args.envelope, None, "");
    let from_ci = super::base_envelope(&EnvelopeArgs::default(), ci, "shiplog-cli");
    // Every envelope key but the id (set below).
    for &field in &shiplog_events::ENVELOPE_KEYS[1..] {
        let v = flags
            .get(field)
            .filter(|v| v.as_str() != Some(""))
            .or_else(|| file_event.get(field).filter(|v| !v.is_null()))
            .or_else(|| from_ci.get(field));
        if let Some(v) = v {
            ev.insert(field.into(), v.clone());
        }
    }

    // Data: the file, then the flags, then the CI fills what is missing, then --data.
    if let Some(s) = &args.status {
        data.insert("status".into(), s.clone().into());
        let ok = matches!(
            s.as_str(),
            "succeeded" | "success" | "passed" | "ok" | "applied"
        );
        let bad = matches!(s.as_str(), "failed" | "failure" | "error");
        if ok || bad {
            match kind.as_str() {
                "build" => {
                    data.entry("success").or_insert(ok.into());
                }
                "check" => {
                    data.entry("passed").or_insert(ok.into());
                }
                _ => {}
            }
        }
    }
    if let Some(u) = &args.deployment_url {
        data.insert("url".into(), u.clone().into());
    }
    if let Some(p) = &args.previous_deployment_id {
        data.insert("previous_deployment_id".into(), p.clone().into());
    }
    if let Some(ci) = ci {
        if kind == "deploy" {
            if let Some(u) = &ci.deployment_url {
                data.entry("url").or_insert(u.clone().into());
            }
            if ci.provider == "vercel" {
                data.entry("provider").or_insert("vercel".into());
            }
            data.entry("triggered_by").or_insert("ci".into());
        }
        match data.get_mut("ci") {
            Some(Value::Object(existing)) => {
                for (k, v) in ci.data() {
                    existing.entry(k).or_insert(v);
                }
            }
            Some(_) => {}
            None => {
                data.insert("ci".into(), Value::Object(ci.data()));
            }
        }
    }
    for kv in &args.data {
        set_data(&mut data, kv)?;
    }

    // id and time: flag, else the file, else derived.
    let id = match (&args.id, file_event.get("id")) {
        (Some(id), _) => Value::String(id.clone()),
        (None, Some(id)) if !id.is_null() => id.clone(),
        _ => Value::String(default_id(&kind, &ev, &data, ci)),
    };
    let time = match (&args.time, file_event.get("time")) {
        (Some(t), _) => Value::String(t.clone()),
        (None, Some(t)) if !t.is_null() => t.clone(),
        _ => Value::String(super::now_rfc3339()),
    };

    let mut out = Map::new();
    out.insert("id".into(), id);
    out.insert("kind".into(), kind.into());
    for f in ["source"] {
        if let Some(v) = ev.remove(f) {
            out.insert(f.into(), v);
        }
    }
    out.insert("time".into(), time);
    for f in ["project", "env", "commit", "branch", "deployment_id"] {
        if let Some(v) = ev.remove(f) {
            out.insert(f.into(), v);
        }
    }
    // Other fields of a whole event from --json (extensions) are kept.
    for (k, v) in file_event {
        if !matches!(
            k.as_str(),
            "id" | "kind"
                | "source"
                | "time"
                | "project"
                | "env"
                | "commit"
                | "branch"
                | "deployment_id"
        ) {
            out.entry(k).or_insert(v);
        }
    }
    out.insert("data".into(), Value::Object(data));
    Ok(Value::Object(out))
}

/// In CI: stable over retries of the job. Else random.
fn default_id(
    kind: &str,
    ev: &Map<String, Value>,
    data: &Map<String, Value>,
    ci: Option<&Ci>,
) -> String {
    let s = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    match ci {
        Some(ci) => {
            let parts = [
                kind.to_string(),
                s(data.get("status")),
                s(ev.get("deployment_id")),
                s(ev.get("project")),
                s(ev.get("env")),
                // What tells events of one kind apart within a step.
                s(data.get("name")),
                s(data.get("version")),
                s(data.get("database")),
                s(data.get("model")),
            ];
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            ci.stable_id(&refs)
        }
        None => super::random_id("cli"),
    }
}

/// Applies one `--data KEY=VALUE`.
pub fn set_data(data: &mut Map<String, Value>, kv: &str) -> Result<()> {
    let (key, raw) = kv
        .split_once('=')
        .ok_or_else(|| anyhow!("--data {kv:?}: expected KEY=VALUE"))?;
    let path: Vec<&str> = key.split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        bail!("--data {kv:?}: empty key segment in {key:?}");
    }
    let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.into()));
    let (last, parents) = path.split_last().expect("non-empty");
    let mut m = data;
    let mut walked = String::new();
    for p in parents {
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(p);
        let entry = m
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if entry.is_null() {
            *entry = Value::Object(Map::new());
        }
        m = entry
            .as_object_mut()
            .ok_or_else(|| anyhow!("--data {kv:?}: {walked} is already set to a non-object"))?;
    }
    m.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_values_and_dotted_keys() {
        let mut d = Map::new();
        for kv in [
            "duration_ms=1200",
            "success=true",
            "name=smoke test",
            "ci.run_id=12",
            "ci.url=https://x/y?a=b",
            "obj={\"a\":1}",
            "quoted=\"12\"",
            "version=007",
        ] {
            set_data(&mut d, kv).unwrap();
        }
        assert_eq!(
            Value::Object(d.clone()),
            json!({"duration_ms": 1200, "success": true, "name": "smoke test",
                   "ci": {"run_id": 12, "url": "https://x/y?a=b"}, "obj": {"a": 1},
                   "quoted": "12", "version": "007"})
        );
        assert!(set_data(&mut d, "name.x=1").is_err());
        assert!(set_data(&mut d, "novalue").is_err());
        assert!(set_data(&mut d, "a..b=1").is_err());
    }
}
