//! Delivery: POST /v1/events with retries and backoff, the on-disk spool, `shiplog flush`.
//!
//! Retried: connection errors, timeouts, 408, 429, 5xx (Retry-After honoured), with
//! exponential backoff from 200ms with jitter (`backon`), within a total time bound. Then the events are spooled:
//! one file per event in the spool dir, written atomically (temp file, fsync, rename).
//! Re-sending is safe: the server deduplicates on `(source, id)`.

use super::{ClientArgs, EXIT_REJECTED, EXIT_UNDELIVERED};
use crate::config::Config;
use anyhow::{Context, Result};
use backon::{BackoffBuilder, ExponentialBuilder};
use clap::Args;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One event the server refused, as its answer says.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub index: usize,
    pub field: String,
    pub error: String,
}

/// What came of one POST (after retries).
#[derive(Debug)]
pub enum Outcome {
    /// 2xx: the ingest answer.
    Answered {
        accepted: u64,
        duplicates: u64,
        rejected: Vec<Rejection>,
    },
    /// A final 4xx.
    Refused {
        status: u16,
        error: String,
        rejected: Vec<Rejection>,
    },
    /// Not delivered: connection errors, 5xx, 429 … until the retries or the time ran out.
    Unreachable(String),
}

/// Sends events to one server.
pub struct Sender {
    client: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    retries: u32,
    total: Duration,
    pub spool: Spool,
}

impl Sender {
    pub fn new(server: &str, args: &ClientArgs, env: &HashMap<String, String>) -> Result<Sender> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("shiplog/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Sender {
            client,
            endpoint: format!("{}/v1/events", server.trim_end_matches('/')),
            token: args.token.clone().filter(|t| !t.is_empty()),
            retries: args.retries,
            total: args.send_timeout,
            spool: Spool::new(
                args.spool_dir
                    .clone()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or_else(|| Spool::default_dir(env)),
            ),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// POSTs `body` (an event or an array), retrying as described in the module docs.
    pub async fn post(&self, body: &Value, retries: u32) -> Outcome {
        let start = Instant::now();
        let deadline = start + self.total;
        let mut backoffs = ExponentialBuilder::default()
            .with_min_delay(FIRST_BACKOFF)
            .with_max_delay(MAX_BACKOFF)
            .with_max_times(retries as usize)
            .with_jitter()
            .build();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let (why, retry_after) = match self.post_once(body, remaining).await {
                Ok((status, headers, text)) => {
                    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let rejected = rejections(&answer);
                    if (200..300).contains(&status) {
                        return Outcome::Answered {
                            accepted: answer["accepted"].as_u64().unwrap_or(0),
                            duplicates: answer["duplicates"].as_u64().unwrap_or(0),
                            rejected,
                        };
                    }
                    let error = answer["error"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| text.chars().take(500).collect());
                    if status == 408 || status == 429 || status >= 500 {
                        (
                            format!("HTTP {status}: {error}"),
                            retry_after_header(&headers),
                        )
                    } else {
                        return Outcome::Refused {
                            status,
                            error,
                            rejected,
                        };
                    }
                }
                Err(e) => (e, None),
            };
            let Some(backoff) = backoffs.next() else {
                return Outcome::Unreachable(why);
            };
            let wait = retry_after.map_or(backoff, |r| r.max(backoff));
            if Instant::now() + wait >= deadline {
                return Outcome::Unreachable(format!(
                    "{why} (gave up after {:.1}s)",
                    start.elapsed().as_secs_f64()
                ));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn post_once(
        &self,
        body: &Value,
        remaining: Duration,
    ) -> Result<(u16, reqwest::header::HeaderMap, String), String> {
        if remaining.is_zero() {
            return Err("send timeout".into());
        }
        let mut req = self
            .client
            .post(&self.endpoint)
            .timeout(remaining.min(REQUEST_TIMEOUT))
            .json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(describe)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(describe)?;
        Ok((status, headers, text))
    }

    /// Delivers events (one request), spooling them when the server cannot be reached or
    /// refuses the token.
    pub async fn deliver(&self, events: &[Value]) -> Report {
        let mut report = Report {
            events: events.len(),
            ..Default::default()
        };
        if events.is_empty() {
            return report;
        }
        let body = if events.len() == 1 {
            events[0].clone()
        } else {
            Value::Array(events.to_vec())
        };
        match self.post(&body, self.retries).await {
            Outcome::Answered {
                accepted,
                duplicates,
                rejected,
            } => {
                report.accepted = accepted;
                report.duplicates = duplicates;
                report.rejected = rejected;
            }
            Outcome::Refused {
                status,
                error,
                rejected,
            } if status == 401 || status == 403 => {
                report.refused = Some(format!("HTTP {status}: {error}"));
                report.rejected = rejected;
                self.spool_all(events, &mut report);
            }
            Outcome::Refused {
                status,
                error,
                mut rejected,
            } => {
                if rejected.is_empty() {
                    rejected = (0..events.len())
                        .map(|index| Rejection {
                            index,
                            field: String::new(),
                            error: format!("HTTP {status}: {error}"),
                        })
                        .collect();
                }
                report.refused = Some(format!("HTTP {status}: {error}"));
                report.rejected = rejected;
            }
            Outcome::Unreachable(why) => {
                report.unreachable = Some(why);
                self.spool_all(events, &mut report);
            }
        }
        report
    }

    fn spool_all(&self, events: &[Value], report: &mut Report) {
        for e in events {
            match self.spool.write(e) {
                Ok(_) => report.spooled += 1,
                Err(err) => {
                    report.spool_error = Some(format!("{err:#}"));
                    // Last resort: the event on stderr, so the job log keeps it.
                    eprintln!("shiplog: event not delivered nor spooled: {e}");
                }
            }
        }
    }

    /// Sends what is in the spool, oldest first, one event per request; stops at the first
    /// event that cannot be delivered. `limit` bounds how many are tried.
    pub async fn flush(&self, retries: u32, limit: usize) -> FlushReport {
        let mut r = FlushReport::default();
        let files = match self.spool.pending() {
            Ok(f) => f,
            Err(e) => {
                r.error = Some(format!("{e:#}"));
                return r;
            }
        };
        r.left = files.len();
        for path in files.into_iter().take(limit) {
            let event: Value = match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice(&b)?))
            {
                Ok(v) => v,
                Err(e) if path.exists() => {
                    let _ = self.spool.reject(&path, &format!("unreadable: {e:#}"));
                    r.rejected += 1;
                    r.left -= 1;
                    continue;
                }
                // Taken by a concurrent flush.
                Err(_) => {
                    r.left -= 1;
                    continue;
                }
            };
            match self.post(&event, retries).await {
                Outcome::Answered {
                    accepted,
                    duplicates,
                    rejected,
                } => {
                    if let Some(rej) = rejected.first() {
                        let _ = self
                            .spool
                            .reject(&path, &format!("{}: {}", rej.field, rej.error));
                        r.rejected += 1;
                    } else {
                        let _ = std::fs::remove_file(&path);
                        r.accepted += accepted;
                        r.duplicates += duplicates;
                    }
                    r.left -= 1;
                }
                Outcome::Refused { status, error, .. } if status == 401 || status == 403 => {
                    r.error = Some(format!("HTTP {status}: {error}"));
                    r.refused = true;
                    break;
                }
                Outcome::Refused {
                    status,
                    error,
                    rejected,
                } => {
                    let why = match rejected.first() {
                        Some(rej) => format!("{}: {}", rej.field, rej.error),
                        None => format!("HTTP {status}: {error}"),
                    };
                    let _ = self.spool.reject(&path, &why);
                    r.rejected += 1;
                    r.left -= 1;
                }
                Outcome::Unreachable(why) => {
                    r.error = Some(why);
                    break;
                }
            }
        }
        r
    }
}

fn describe(e: reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn rejections(answer: &Value) -> Vec<Rejection> {
    answer["rejected"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| Rejection {
                    index: r["index"].as_u64().unwrap_or(0) as usize,
                    field: r["field"].as_str().unwrap_or("").to_string(),
                    error: r["error"].as_str().unwrap_or("").to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn retry_after_header(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(300)));
    }
    // An HTTP date.
    let t = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let d = t.with_timezone(&chrono::Utc) - chrono::Utc::now();
    d.to_std().ok().map(|d| d.min(Duration::from_secs(300)))
}

/// What came of delivering a set of events.
#[derive(Debug, Default)]
pub struct Report {
    pub events: usize,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<Rejection>,
    pub spooled: usize,
    /// The server refused the request (4xx).
    pub refused: Option<String>,
    /// Why the server could not be reached.
    pub unreachable: Option<String>,
    pub spool_error: Option<String>,
}

impl Report {
    /// The documented exit code: 3 refused, 4 undelivered with strict, else 0.
    pub fn exit_code(&self, strict: bool) -> u8 {
        if !self.rejected.is_empty() || self.refused.is_some() {
            EXIT_REJECTED
        } else if strict && (self.unreachable.is_some() || self.spool_error.is_some()) {
            EXIT_UNDELIVERED
        } else {
            0
        }
    }

    pub fn merge(&mut self, other: Report) {
        let offset = self.events;
        self.events += other.events;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected
            .extend(other.rejected.into_iter().map(|mut r| {
                r.index += offset;
                r
            }));
        self.spooled += other.spooled;
        self.refused = self.refused.take().or(other.refused);
        self.unreachable = self.unreachable.take().or(other.unreachable);
        self.spool_error = self.spool_error.take().or(other.spool_error);
    }

    /// Prints warnings about what was not delivered (stderr).
    pub fn warn(&self, sender: &Sender) {
        for r in &self.rejected {
            eprintln!(
                "shiplog: event {} rejected by the server: {}{}{}",
                r.index,
                r.field,
                if r.field.is_empty() { "" } else { ": " },
                r.error
            );
        }
        if let Some(why) = &self.refused {
            eprintln!("shiplog: {} refused the request: {why}", sender.endpoint());
        }
        if self.spooled > 0 {
            let why = self
                .unreachable
                .as_deref()
                .or(self.refused.as_deref())
                .unwrap_or("");
            eprintln!(
                "shiplog: warning: {} event(s) not delivered to {} ({why}); spooled in {} — `shiplog flush` sends them",
                self.spooled,
                sender.endpoint(),
                sender.spool.dir.display()
            );
        }
        if let Some(e) = &self.spool_error {
            eprintln!("shiplog: warning: cannot spool: {e}");
        }
    }
}

/// What `flush` did.
#[derive(Debug, Default)]
pub struct FlushReport {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: usize,
    /// Events still in the spool.
    pub left: usize,
    pub refused: bool,
    pub error: Option<String>,
}

impl FlushReport {
    pub fn sent(&self) -> u64 {
        self.accepted + self.duplicates
    }
}

/// The spool: one JSON file per event, named so that names sort oldest first.
#[derive(Debug, Clone)]
pub struct Spool {
    pub dir: PathBuf,
}

impl Spool {
    pub fn new(dir: PathBuf) -> Spool {
        Spool { dir }
    }

    /// `$XDG_CACHE_HOME/shiplog/spool`, else `~/.cache/shiplog/spool`, else a temp dir.
    pub fn default_dir(env: &HashMap<String, String>) -> PathBuf {
        let nonempty = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(x) = nonempty("XDG_CACHE_HOME") {
            return x.join("shiplog").join("spool");
        }
        if let Some(h) = nonempty("HOME") {
            return h.join(".cache").join("shiplog").join("spool");
        }
        std::env::temp_dir().join("shiplog-spool")
    }

    /// Writes one event atomically; returns its file.
    pub fn write(&self, event: &Value) -> Result<PathBuf> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create spool dir {}", self.dir.display()))?;
        let millis = chrono::Utc::now().timestamp_millis().max(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{millis:013}-{seq:06}-{}-{:08x}.json",
            std::process::id(),
            rand::random::<u32>()
        );
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".tmp-{name}"));
        let write = || -> Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(event)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Ok(d) = std::fs::File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            e.context(format!("cannot write {}", path.display()))
        })?;
        Ok(path)
    }

    /// The spooled events' files, oldest first.
    pub fn pending(&self) -> Result<Vec<PathBuf>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.dir.display())),
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Moves a refused event to `rejected/`, with the reason beside it.
    pub fn reject(&self, path: &Path, reason: &str) -> Result<()> {
        let dir = self.dir.join("rejected");
        std::fs::create_dir_all(&dir)?;
        let name = path.file_name().context("no file name")?;
        std::fs::rename(path, dir.join(name))?;
        let mut why = dir.join(name).into_os_string();
        why.push(".reason.txt");
        std::fs::write(why, format!("{reason}\n"))?;
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct FlushArgs {
    /// Server URL. Also SHIPLOG_URL; default: http://127.0.0.1:7070 (the configured
    /// listen address).
    #[arg(long, visible_alias = "server", env = "SHIPLOG_URL")]
    pub url: Option<String>,
    /// Send at most this many events.
    #[arg(long, default_value_t = usize::MAX, hide_default_value = true)]
    pub limit: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run_flush(
    args: FlushArgs,
    config: &Config,
    env: &HashMap<String, String>,
) -> Result<ExitCode> {
    let server = super::server_url(args.url.as_deref(), config);
    let sender = Sender::new(&server, &args.client, env)?;
    let r = super::runtime()?.block_on(sender.flush(args.client.retries, args.limit));
    println!(
        "flushed {}: {} sent ({} accepted, {} duplicate), {} rejected, {} left",
        sender.spool.dir.display(),
        r.sent(),
        r.accepted,
        r.duplicates,
        r.rejected,
        r.left
    );
    if r.rejected > 0 {
        eprintln!(
            "shiplog: {} event(s) refused by the server, moved to {} with the reason beside each",
            r.rejected,
            sender.spool.dir.join("rejected").display()
        );
    }
    if let Some(e) = &r.error {
        eprintln!(
            "shiplog: warning: {} event(s) left in the spool: {} ({e})",
            r.left,
            sender.endpoint()
        );
    }
    let code = if r.rejected > 0 || r.refused {
        EXIT_REJECTED
    } else if args.client.strict && r.left > 0 {
        EXIT_UNDELIVERED
    } else {
        0
    };
    Ok(ExitCode::from(code))
}

/// Reports the events of a wrapped command (`migrate`, `build`): validated, then printed
/// (`--dry-run`) or sent, with one summary line on stderr. Never fails: a problem is a
/// warning, since the command's exit code is what the caller passes on.
pub fn report_wrapped(
    what: &str,
    send: &super::SendArgs,
    config: &Config,
    env: &HashMap<String, String>,
    events: &[Value],
) {
    for e in events {
        if let Err(err) = super::validate(e) {
            eprintln!(
                "shiplog: warning: {what} not reported: {}: {}",
                err.field, err.error
            );
            return;
        }
    }
    if send.dry_run {
        for e in events {
            eprintln!("{e}");
        }
        return;
    }
    let server = super::server_url(send.url.as_deref(), config);
    let result = (|| -> anyhow::Result<()> {
        let sender = Sender::new(&server, &send.client, env)?;
        let r = super::runtime()?.block_on(sender.deliver(events));
        eprintln!(
            "shiplog: {} {what}: {} accepted, {} duplicate, {} rejected, {} spooled",
            events.len(),
            r.accepted,
            r.duplicates,
            r.rejected.len(),
            r.spooled
        );
        r.warn(&sender);
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("shiplog: warning: {what} not reported: {e:#}");
    }
}
