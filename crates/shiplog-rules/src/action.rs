//! Actions: argument-vector commands (never a shell) and signed webhooks.
//!
//! A command argument is a [`Template`]: literal text and placeholders. Rendering replaces
//! each placeholder by its value *inside that one argument*: a value with spaces, quotes,
//! `;` or a leading `--` stays one argument, and no value can add or remove arguments.
//!
//! A command runs with the server's environment less shiplog's own secrets
//! ([`ActionEnv`]): every `SHIPLOG_*` variable and every variable a `*_env` setting names
//! (token and webhook secrets) is removed; `PATH`, `HOME`, `LANG` and the credentials the
//! command itself needs (`VERCEL_TOKEN`, …) are kept.

use crate::config::Action;
use backon::{BackoffBuilder, ExponentialBuilder};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Placeholders a command argument may use.
pub const PLACEHOLDERS: &[&str] = &[
    "deployment_id",
    "previous_deployment_id",
    "previous_url",
    "url",
    "project",
    "env",
    "rule",
];

/// Output kept from an action (the tail), in bytes.
pub const OUTPUT_TAIL_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(String),
}

/// One argument: literal text and `{placeholder}`s (`{{` and `}}` are literal braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    source: String,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed '{{' in {s:?}")),
                        }
                    }
                    if !PLACEHOLDERS.contains(&name.as_str()) {
                        return Err(format!(
                            "unknown placeholder {{{name}}} in {s:?}; known: {}",
                            PLACEHOLDERS
                                .iter()
                                .map(|p| format!("{{{p}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(name));
                }
                '}' => return Err(format!("unmatched '}}' in {s:?} (write '}}}}')")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            parts,
            source: s.to_string(),
        })
    }

    pub fn has_placeholders(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Var(_)))
    }

    pub fn uses_deployment_placeholders(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(v) if v != "project" && v != "env" && v != "rule"))
    }

    /// Renders into exactly one argument. A placeholder without a value is an error.
    pub fn render(&self, vars: &BTreeMap<&str, String>) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => match vars.get(v.as_str()) {
                    Some(x) => out.push_str(x),
                    None => return Err(format!("{{{v}}} has no value for this decision")),
                },
            }
        }
        Ok(out)
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Renders a whole argument vector: one output argument per template, always.
pub fn render_argv(
    argv: &[Template],
    vars: &BTreeMap<&str, String>,
) -> Result<Vec<String>, String> {
    argv.iter().map(|t| t.render(vars)).collect()
}

/// How an argv is shown in a decision's `action` field: each argument JSON-quoted when it
/// needs to be, so the boundaries stay visible (`vercel rollback "x; rm -rf /" --yes`).
pub fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
            {
                a.clone()
            } else {
                serde_json::to_string(a).unwrap()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The environment a command action runs with: the server's, without the variables that
/// hold shiplog's own secrets. A command is code the operator chose, but whatever it
/// prints lands in its decision's `output_tail`, which every `read` token can see; and it
/// has no business with the tokens that write events or sign webhooks.
#[derive(Debug, Clone, Default)]
pub struct ActionEnv {
    hidden: BTreeSet<String>,
}

impl ActionEnv {
    /// Prefix of the variables that configure shiplog itself; never passed to a command.
    pub const SHIPLOG_PREFIX: &'static str = "SHIPLOG_";

    /// An environment without `SHIPLOG_*` and without the variables named in `hidden`
    /// (the config's `secret_env` settings).
    pub fn new(hidden: impl IntoIterator<Item = String>) -> ActionEnv {
        ActionEnv {
            hidden: hidden.into_iter().collect(),
        }
    }

    /// Whether the variable `name` is kept from commands.
    pub fn hides(&self, name: &OsStr) -> bool {
        name.as_encoded_bytes()
            .starts_with(Self::SHIPLOG_PREFIX.as_bytes())
            || name.to_str().is_some_and(|n| self.hidden.contains(n))
    }

    /// `vars` (the server's environment) without the hidden variables.
    pub fn filter(
        &self,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Vec<(OsString, OsString)> {
        vars.into_iter().filter(|(k, _)| !self.hides(k)).collect()
    }

    /// The environment of a command started now.
    pub fn vars(&self) -> Vec<(OsString, OsString)> {
        self.filter(std::env::vars_os())
    }
}

/// The result of running an action (all attempts).
#[derive(Debug, Clone)]
pub struct ActionReport {
    pub ok: bool,
    pub attempts: u32,
    /// `succeeded`, `failed: exit 1 after 3 tries`, …
    pub outcome: String,
    pub output_tail: String,
    pub exit_code: Option<i32>,
    pub duration: Duration,
}

/// One attempt's result.
struct Attempt {
    ok: bool,
    what: String,
    output: Vec<u8>,
    exit_code: Option<i32>,
}

/// Runs an action with its retries: `argv` (commands, with the environment `env`) or `body`
/// (webhooks).
pub async fn run(
    action: &Action,
    argv: &[String],
    body: &Value,
    event_id: &str,
    env: &ActionEnv,
) -> ActionReport {
    let started = Instant::now();
    let (tries, backoff) = match action {
        Action::Command { tries, backoff, .. } | Action::Webhook { tries, backoff, .. } => {
            (*tries, *backoff)
        }
    };
    // The waits between tries: `backoff`, doubled each time, plus a random jitter of up to
    // as much again (actions failing together do not retry in step).
    let mut waits = ExponentialBuilder::default()
        .with_min_delay(backoff)
        .without_max_delay()
        .with_max_times(tries.saturating_sub(1) as usize)
        .with_jitter()
        .build();
    let mut attempts = 0;
    let a = loop {
        attempts += 1;
        let a = match action {
            Action::Command { timeout, .. } => run_command(argv, env.vars(), *timeout).await,
            Action::Webhook {
                url,
                secret_env,
                timeout,
                ..
            } => post_webhook(url, secret_env.as_deref(), *timeout, body, event_id).await,
        };
        match waits.next() {
            Some(wait) if !a.ok => tokio::time::sleep(wait).await,
            _ => break a,
        }
    };
    let outcome = if a.ok {
        "succeeded".to_string()
    } else {
        format!(
            "failed: {} after {attempts} {}",
            a.what,
            if attempts == 1 { "try" } else { "tries" }
        )
    };
    ActionReport {
        ok: a.ok,
        attempts,
        outcome,
        output_tail: String::from_utf8_lossy(&a.output).into_owned(),
        exit_code: a.exit_code,
        duration: started.elapsed(),
    }
}

fn push_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > OUTPUT_TAIL_BYTES {
        let cut = buf.len() - OUTPUT_TAIL_BYTES;
        buf.drain(..cut);
    }
}

/// Runs `argv` directly (no shell) in its own process group with exactly the environment
/// `env`; on timeout the whole group is killed. Stdout and stderr are interleaved into one
/// tail of [`OUTPUT_TAIL_BYTES`].
async fn run_command(
    argv: &[String],
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
) -> Attempt {
    use std::process::Stdio;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Attempt {
                ok: false,
                what: format!("cannot run {:?}: {e}", argv[0]),
                output: Vec::new(),
                exit_code: None,
            }
        }
    };
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (o1, o2) = (output.clone(), output.clone());
    let r1 = tokio::spawn(async move {
        let mut b = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut b).await {
            if n == 0 {
                break;
            }
            push_tail(&mut o1.lock().unwrap(), &b[..n]);
        }
    });
    let r2 = tokio::spawn(async move {
        let mut b = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut b).await {
            if n == 0 {
                break;
            }
            push_tail(&mut o2.lock().unwrap(), &b[..n]);
        }
    });
    let result = tokio::time::timeout(timeout, child.wait()).await;
    let kill_group = || {
        if let Some(pid) = pid {
            // SAFETY: plain syscall; the group was created for this child (process_group(0)).
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    };
    let (ok, what, code) = match result {
        Ok(Ok(status)) => {
            // Stragglers of the group would keep the pipes open.
            kill_group();
            match status.code() {
                Some(0) => (true, "exit 0".to_string(), Some(0)),
                Some(c) => (false, format!("exit {c}"), Some(c)),
                None => (false, format!("killed by signal ({status})"), None),
            }
        }
        Ok(Err(e)) => (false, format!("wait failed: {e}"), None),
        Err(_) => {
            kill_group();
            let _ = child.kill().await;
            (
                false,
                format!("timed out after {}", humantime::format_duration(timeout)),
                None,
            )
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = r1.await;
        let _ = r2.await;
    })
    .await;
    let output = output.lock().unwrap().clone();
    Attempt {
        ok,
        what,
        output,
        exit_code: code,
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Header names of a webhook delivery.
pub const SIGNATURE_HEADER: &str = "X-Shiplog-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Shiplog-Timestamp";
pub const EVENT_ID_HEADER: &str = "X-Shiplog-Event-Id";

async fn post_webhook(
    url: &str,
    secret_env: Option<&str>,
    timeout: Duration,
    body: &Value,
    event_id: &str,
) -> Attempt {
    let fail = |what: String| Attempt {
        ok: false,
        what,
        output: Vec::new(),
        exit_code: None,
    };
    let raw = serde_json::to_vec(body).expect("JSON");
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => return fail(format!("HTTP client: {e}")),
    };
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, chrono::Utc::now().timestamp().to_string())
        .header(EVENT_ID_HEADER, event_id);
    if let Some(var) = secret_env {
        match std::env::var(var) {
            Ok(secret) if !secret.is_empty() => {
                req = req.header(SIGNATURE_HEADER, signature(secret.as_bytes(), &raw));
            }
            _ => {
                return fail(format!(
                    "environment variable {var} (the webhook secret) is not set"
                ))
            }
        }
    }
    match req.body(raw).send().await {
        Ok(resp) => {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let mut output = Vec::new();
            push_tail(&mut output, text.as_bytes());
            Attempt {
                ok: status.is_success(),
                what: format!("HTTP {}", status.as_u16()),
                output,
                exit_code: None,
            }
        }
        Err(e) if e.is_timeout() => fail(format!(
            "timed out after {}",
            humantime::format_duration(timeout)
        )),
        Err(e) => fail(format!("HTTP error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<&'static str, String> {
        let mut v = BTreeMap::new();
        v.insert("deployment_id", "x; rm -rf / --yes".to_string());
        v.insert("previous_url", "--force".to_string());
        v.insert("project", "web app".to_string());
        v.insert("env", "production".to_string());
        v
    }

    #[test]
    fn placeholders_stay_inside_one_argument() {
        let argv: Vec<Template> = [
            "vercel",
            "rollback",
            "{previous_url}",
            "--id={deployment_id}",
            "{project}/{env}",
            "{{literal}}",
        ]
        .iter()
        .map(|s| Template::parse(s).unwrap())
        .collect();
        let out = render_argv(&argv, &vars()).unwrap();
        assert_eq!(
            out,
            vec![
                "vercel",
                "rollback",
                "--force",
                "--id=x; rm -rf / --yes",
                "web app/production",
                "{literal}"
            ]
        );
        assert_eq!(out.len(), argv.len());
        assert_eq!(
            display_argv(&out),
            r#"vercel rollback --force "--id=x; rm -rf / --yes" "web app/production" "{literal}""#
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Template::parse("{nope}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(Template::parse("{deployment_id").is_err());
        assert!(Template::parse("a}b").is_err());
        let t = Template::parse("{previous_deployment_id}").unwrap();
        assert!(t
            .render(&vars())
            .unwrap_err()
            .contains("previous_deployment_id"));
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn command_runs_without_a_shell_with_timeout_and_retries() {
        let action = Action::Command {
            argv: vec![],
            timeout: Duration::from_millis(300),
            tries: 2,
            backoff: Duration::from_millis(10),
        };
        let r = run(
            &action,
            &["echo".into(), "a; echo b".into()],
            &Value::Null,
            "x",
            &ActionEnv::default(),
        )
        .await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.output_tail, "a; echo b\n");
        let r = run(
            &action,
            &["sleep".into(), "5".into()],
            &Value::Null,
            "x",
            &ActionEnv::default(),
        )
        .await;
        assert!(!r.ok);
        assert_eq!(r.attempts, 2);
        assert!(r.outcome.starts_with("failed: timed out"), "{}", r.outcome);
        assert!(r.duration < Duration::from_secs(2));
        let r = run(
            &action,
            &["false".into()],
            &Value::Null,
            "x",
            &ActionEnv::default(),
        )
        .await;
        assert_eq!(r.outcome, "failed: exit 1 after 2 tries");
        let r = run(
            &action,
            &["/nonexistent/prog".into()],
            &Value::Null,
            "x",
            &ActionEnv::default(),
        )
        .await;
        assert!(r.outcome.contains("cannot run"), "{}", r.outcome);
    }

    /// A command that prints its environment sees PATH, HOME, LANG and the variables it may
    /// need, but no SHIPLOG_* variable and none that a `secret_env` names.
    #[tokio::test]
    async fn commands_do_not_inherit_shiplogs_secrets() {
        let server_env: Vec<(OsString, OsString)> = [
            (
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            ),
            ("HOME", "/home/shiplog".into()),
            ("LANG", "C.UTF-8".into()),
            ("VERCEL_TOKEN", "provider-credential".into()),
            ("SHIPLOG_LOG", "debug".into()),
            ("SHIPLOG_ADMIN_TOKEN", "admin-secret-0123456789".into()),
            ("CI_TOKEN", "ci-secret-0123456789".into()),
            ("HOOK_SECRET", "hook-secret-0123456789".into()),
            ("CI_TOKEN_OLD", "kept: only exact names are hidden".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let env = ActionEnv::new(["CI_TOKEN".to_string(), "HOOK_SECRET".to_string()]);
        let action = Action::Command {
            argv: vec![],
            timeout: Duration::from_secs(10),
            tries: 1,
            backoff: Duration::from_millis(10),
        };
        let a = run_command(
            &["env".into()],
            env.filter(server_env),
            Duration::from_secs(10),
        )
        .await;
        assert!(a.ok, "{}", a.what);
        let printed = String::from_utf8(a.output).unwrap();
        let mut names: Vec<&str> = printed
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["CI_TOKEN_OLD", "HOME", "LANG", "PATH", "VERCEL_TOKEN"],
            "{printed}"
        );
        assert!(
            printed.contains("VERCEL_TOKEN=provider-credential\n"),
            "{printed}"
        );
        assert!(!printed.contains("secret-0123456789"), "{printed}");
        // `run` uses the server's own environment, filtered the same way
        let r = run(&action, &["env".into()], &Value::Null, "x", &env).await;
        assert!(r.ok, "{r:?}");
        for line in r.output_tail.lines() {
            let name = line.split_once('=').map_or(line, |(k, _)| k);
            assert!(!name.starts_with("SHIPLOG_"), "{}", r.output_tail);
        }
        assert!(env.hides(OsStr::new("SHIPLOG_X")) && env.hides(OsStr::new("CI_TOKEN")));
        assert!(!env.hides(OsStr::new("PATH")) && !env.hides(OsStr::new("shiplog_x")));
    }

    #[test]
    fn output_tail_is_bounded() {
        let mut b = Vec::new();
        push_tail(&mut b, &vec![b'a'; 5000]);
        push_tail(&mut b, b"end");
        assert_eq!(b.len(), OUTPUT_TAIL_BYTES);
        assert!(b.ends_with(b"aend"));
    }
}
