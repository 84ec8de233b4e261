//! Sources: where a rollback rule reads a metric that nobody pushes as `check` events.
//!
//! - [`promql`]: a Prometheus server (PromQL with placeholders escaped as label values);
//! - [`http_json`]: any HTTP JSON API (Datadog, New Relic, …): a URL template, headers with
//!   secrets from the environment, and the path of the value in the answer;
//! - [`template`]: the `{placeholder}` templates both use.
//!
//! A source only *reads*. The engine's poller (`engine::poll`) samples it on a grid of
//! `interval`s after each deployment went live, writes every sample to the log as a
//! `check` event with its source (so the judge, the deployment page, the backtest and a
//! replay see exactly what was judged), and every failure as a `check` without a value
//! whose `error` says why: a failure is never a sample, and a window whose source was
//! failing when it closed is inconclusive, with the reason in the decision.

pub mod http_json;
pub mod promql;
pub mod template;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use template::{Fields, Span, Template, Var};

/// The points of one query: (time, value).
type Series = Vec<(DateTime<Utc>, f64)>;

/// `source = { … }` of a rollback rule (or of one of its `metrics`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The base URL of a Prometheus server (`http://prometheus:9090`).
    pub prometheus: Option<String>,
    /// An HTTP JSON API: the URL template.
    pub http: Option<String>,
    /// HTTP JSON: a JSON body template (the request is then a POST).
    pub body: Option<String>,
    /// HTTP JSON: request headers; `{ env = "VAR" }` reads a secret from the environment.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    /// Prometheus: the PromQL of a value per interval. HTTP JSON: not used.
    pub query: Option<String>,
    /// The errors behind a rate: PromQL (Prometheus) or the answer's path (HTTP JSON).
    pub errors: Option<String>,
    /// The requests behind a rate: PromQL (Prometheus) or the answer's path (HTTP JSON).
    pub requests: Option<String>,
    /// HTTP JSON: the path of the value in the answer (`series.0.pointlist.-1.1`).
    pub value: Option<String>,
    /// How often the new deployment is sampled, and the length of each sample's interval
    /// (default 30 s).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Per request (default: the interval, at most 10 s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// A header's value: text, or `{ env = "VAR" }` (read when sending, never logged).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    Text(String),
    Env { env: String },
}

/// A validated source.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub kind: SourceKind,
    pub interval: Duration,
    pub timeout: Duration,
}

/// A PromQL template and, per placeholder, the quote it sits in.
#[derive(Debug, Clone, PartialEq)]
pub struct PromQuery {
    pub template: Template,
    quotes: Vec<Option<char>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    Prometheus {
        base: String,
        query: Option<PromQuery>,
        errors: Option<PromQuery>,
        requests: Option<PromQuery>,
    },
    HttpJson {
        url: Template,
        body: Option<Template>,
        headers: Vec<(String, HeaderValue)>,
        value: Option<http_json::JsonPath>,
        errors: Option<http_json::JsonPath>,
        requests: Option<http_json::JsonPath>,
    },
}

/// Why a source gave no sample.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// No connection, or no answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// An error answer.
    #[error("{0}")]
    Failed(String),
    /// An answer without data (no series, no value at the path).
    #[error("{0}")]
    NoData(String),
}

impl SourceError {
    pub(crate) fn unreachable(what: &str, e: &reqwest::Error) -> SourceError {
        let mut text = if e.is_timeout() {
            "timed out".to_string()
        } else {
            e.to_string()
        };
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            let s = c.to_string();
            if !text.contains(&s) {
                text.push_str(": ");
                text.push_str(&s);
            }
            cause = c.source();
        }
        SourceError::Unreachable(format!("{what} unreachable: {text}"))
    }

    /// `unreachable`, `error` or `no_data` (the `/metrics` label).
    pub fn class(&self) -> &'static str {
        match self {
            SourceError::Unreachable(_) => "unreachable",
            SourceError::Failed(_) => "error",
            SourceError::NoData(_) => "no_data",
        }
    }
}

/// One sample read from a source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fetched {
    /// The end of the interval it covers.
    pub time: DateTime<Utc>,
    pub value: Option<f64>,
    pub errors: Option<u64>,
    pub requests: Option<u64>,
}

impl Fetched {
    pub fn value(time: DateTime<Utc>, v: f64) -> Fetched {
        Fetched {
            time,
            value: Some(v),
            errors: None,
            requests: None,
        }
    }

    /// Counts from (possibly extrapolated) floats: rounded, errors at most the requests.
    /// None when the interval had no request (no rate to judge).
    pub fn counts(time: DateTime<Utc>, errors: f64, requests: f64) -> Option<Fetched> {
        if !requests.is_finite() || requests.round() < 1.0 {
            return None;
        }
        let r = requests.round() as u64;
        let e = if errors.is_finite() {
            (errors.round().max(0.0) as u64).min(r)
        } else {
            0
        };
        Some(Fetched {
            time,
            value: Some(e as f64 / r as f64),
            errors: Some(e),
            requests: Some(r),
        })
    }
}

/// What one read of a source gave: the query as sent (for the record) and the samples.
#[derive(Debug, Clone)]
pub struct Reading {
    pub query: String,
    pub result: Result<Vec<Fetched>, SourceError>,
}

impl Source {
    /// Validates a `source` table; errors name the key (`source.errors`).
    pub fn from_config(c: &SourceConfig) -> Result<Source, (String, String)> {
        let err = |k: &str, m: String| (format!("source.{k}"), m);
        let interval = c.interval.unwrap_or(Duration::from_secs(30));
        if interval < Duration::from_millis(100) {
            return Err(err("interval", "must be at least 100ms".into()));
        }
        let timeout = c
            .timeout
            .unwrap_or_else(|| interval.min(Duration::from_secs(10)));
        if timeout.is_zero() {
            return Err(err("timeout", "must be longer than 0s".into()));
        }
        let counts = match (&c.errors, &c.requests) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            (Some(_), None) => return Err(err("requests", "is required with errors".into())),
            (None, Some(_)) => return Err(err("errors", "is required with requests".into())),
        };
        let kind = match (&c.prometheus, &c.http) {
            (Some(_), Some(_)) => {
                return Err(err("http", "set prometheus or http, not both".into()));
            }
            (None, None) => {
                return Err(err(
                    "prometheus",
                    "set prometheus = \"http://…\" or http = \"https://…\"".into(),
                ))
            }
            (Some(base), None) => {
                check_url(base).map_err(|m| err("prometheus", m))?;
                for (k, v) in [("value", &c.value), ("body", &c.body)] {
                    if v.is_some() {
                        return Err(err(k, "only applies to http sources".into()));
                    }
                }
                if !c.headers.is_empty() {
                    return Err(err("headers", "only applies to http sources".into()));
                }
                if counts == c.query.is_some() {
                    return Err(err(
                        "query",
                        "set query (a value), or errors and requests (counts), not both".into(),
                    ));
                }
                let prom =
                    |k: &str, s: &Option<String>| -> Result<Option<PromQuery>, (String, String)> {
                        s.as_ref()
                            .map(|s| {
                                let template = Template::parse(s).map_err(|m| err(k, m))?;
                                let quotes =
                                    promql::placeholder_quotes(&template).map_err(|m| err(k, m))?;
                                Ok::<_, (String, String)>(PromQuery { template, quotes })
                            })
                            .transpose()
                    };
                SourceKind::Prometheus {
                    base: base.trim_end_matches('/').to_string(),
                    query: prom("query", &c.query)?,
                    errors: prom("errors", &c.errors)?,
                    requests: prom("requests", &c.requests)?,
                }
            }
            (None, Some(url)) => {
                if c.query.is_some() {
                    return Err(err(
                        "query",
                        "http sources put the query in the URL or body; the answer's path is value"
                            .into(),
                    ));
                }
                if counts == c.value.is_some() {
                    return Err(err(
                        "value",
                        "set value (the answer's path), or errors and requests (paths), not both"
                            .into(),
                    ));
                }
                let url_t = Template::parse(url).map_err(|m| err("http", m))?;
                check_url(url).map_err(|m| err("http", m))?;
                let path = |k: &str, s: &Option<String>| {
                    s.as_deref()
                        .map(http_json::JsonPath::parse)
                        .transpose()
                        .map_err(|m| err(k, m))
                };
                for (name, v) in &c.headers {
                    reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| err("headers", format!("{name:?} is not a header name")))?;
                    if let HeaderValue::Env { env } = v {
                        if env.is_empty() {
                            return Err(err(
                                "headers",
                                format!("{name}: env must name a variable"),
                            ));
                        }
                    }
                }
                SourceKind::HttpJson {
                    url: url_t,
                    body: c
                        .body
                        .as_deref()
                        .map(Template::parse)
                        .transpose()
                        .map_err(|m| err("body", m))?,
                    headers: c
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    value: path("value", &c.value)?,
                    errors: path("errors", &c.errors)?,
                    requests: path("requests", &c.requests)?,
                }
            }
        };
        Ok(Source {
            kind,
            interval,
            timeout,
        })
    }

    /// `prometheus` or `http_json`: the `source` of the checks it writes.
    pub fn name(&self) -> &'static str {
        match self.kind {
            SourceKind::Prometheus { .. } => "prometheus",
            SourceKind::HttpJson { .. } => "http_json",
        }
    }

    /// The environment variables its headers read (secrets: hidden from command actions).
    pub fn secret_envs(&self) -> Vec<String> {
        match &self.kind {
            SourceKind::HttpJson { headers, .. } => headers
                .iter()
                .filter_map(|(_, v)| match v {
                    HeaderValue::Env { env } => Some(env.clone()),
                    HeaderValue::Text(_) => None,
                })
                .collect(),
            SourceKind::Prometheus { .. } => Vec::new(),
        }
    }

    /// Reads the samples of the intervals ending at `grid` (evenly spaced by `interval`,
    /// ascending) for a deployment with `fields`.
    pub async fn read(
        &self,
        client: &reqwest::Client,
        fields: &Fields,
        grid: &[DateTime<Utc>],
        window: Duration,
    ) -> Reading {
        let interval = self.interval;
        let value = |v: Var, span: Span| -> Result<String, String> {
            match template::time_value(v, span, interval, window) {
                Some(s) => Ok(s),
                None => fields.get(v).map(str::to_string),
            }
        };
        let span_of = |t: DateTime<Utc>| Span {
            start: t - chrono::Duration::from_std(interval).unwrap_or_default(),
            end: t,
        };
        match &self.kind {
            SourceKind::Prometheus {
                base,
                query,
                errors,
                requests,
            } => {
                let api = promql::Prometheus {
                    base: base.clone(),
                    client: client.clone(),
                };
                let span = span_of(*grid.last().unwrap_or(&Utc::now()));
                let render = |q: &PromQuery| {
                    promql::render(&q.template, &q.quotes, |v| value(v, span))
                        .map_err(|m| SourceError::Failed(format!("prometheus: {m}")))
                };
                let rendered: Result<Vec<Option<String>>, SourceError> = [query, errors, requests]
                    .iter()
                    .map(|q| q.as_ref().map(&render).transpose())
                    .collect();
                let rendered = match rendered {
                    Ok(r) => r,
                    Err(e) => {
                        return Reading {
                            query: String::new(),
                            result: Err(e),
                        }
                    }
                };
                let shown = rendered.iter().flatten().cloned().collect::<Vec<_>>();
                let text = shown.join(" / ");
                let mut got: Vec<Option<Series>> = Vec::new();
                for q in &rendered {
                    match q {
                        None => got.push(None),
                        Some(q) => match api.values(q, grid, interval).await {
                            Ok(v) => got.push(Some(v)),
                            Err(e) => {
                                return Reading {
                                    query: text,
                                    result: Err(e),
                                }
                            }
                        },
                    }
                }
                let requests = got.pop().flatten();
                let errors = got.pop().flatten();
                let value = got.pop().flatten();
                let no_series = value.as_ref().is_none_or(Vec::is_empty)
                    && requests.as_ref().is_none_or(Vec::is_empty);
                let samples = promql::combine(value, errors, requests);
                let result = if no_series {
                    Err(SourceError::NoData(format!(
                        "prometheus: no series for {}",
                        shown.last().cloned().unwrap_or_default()
                    )))
                } else {
                    Ok(samples)
                };
                Reading {
                    query: text,
                    result,
                }
            }
            SourceKind::HttpJson {
                url,
                body,
                headers,
                value: vpath,
                errors,
                requests,
            } => {
                let mut resolved = Vec::with_capacity(headers.len());
                for (k, v) in headers {
                    match v {
                        HeaderValue::Text(s) => resolved.push((k.clone(), s.clone())),
                        HeaderValue::Env { env } => match std::env::var(env) {
                            Ok(s) if !s.is_empty() => resolved.push((k.clone(), s)),
                            _ => {
                                return Reading {
                                    query: url.source.clone(),
                                    result: Err(SourceError::Failed(format!(
                                    "http_json: environment variable {env} (header {k}) is not set"
                                ))),
                                }
                            }
                        },
                    }
                }
                let api = http_json::HttpJson {
                    client: client.clone(),
                    headers: resolved,
                };
                let mut out = Vec::new();
                let mut shown = url.source.clone();
                for t in grid {
                    let span = span_of(*t);
                    let rendered = http_json::render(url, span, value).and_then(|u| {
                        let b = body
                            .as_ref()
                            .map(|b| http_json::render(b, span, value))
                            .transpose()?;
                        Ok((u, b))
                    });
                    let (u, b) = match rendered {
                        Ok(x) => x,
                        Err(m) => {
                            return Reading {
                                query: shown,
                                result: Err(SourceError::Failed(format!("http_json: {m}"))),
                            }
                        }
                    };
                    shown = match &b {
                        Some(b) => format!("POST {u} {b}"),
                        None => u.clone(),
                    };
                    match api
                        .fetch(
                            &u,
                            b.as_deref(),
                            span,
                            vpath.as_ref(),
                            errors.as_ref(),
                            requests.as_ref(),
                        )
                        .await
                    {
                        Ok(Some(f)) => out.push(f),
                        Ok(None) => {}
                        Err(e) if out.is_empty() => {
                            return Reading {
                                query: shown,
                                result: Err(e),
                            }
                        }
                        // What was read stands; the rest is read again next time.
                        Err(_) => break,
                    }
                }
                Reading {
                    query: shown,
                    result: Ok(out),
                }
            }
        }
    }
}

fn check_url(u: &str) -> Result<(), String> {
    if u.starts_with("http://") || u.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("must be an http:// or https:// URL, not {u:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> Result<Source, (String, String)> {
        let c: SourceConfig = toml::from_str(toml_text).unwrap();
        Source::from_config(&c)
    }

    #[test]
    fn validation_names_the_key() {
        let ok = cfg(r#"prometheus = "http://p:9090"
errors = 'sum(increase(e{v="{commit}"}[{interval}]))'
requests = 'sum(increase(r{v="{commit}"}[{interval}]))'
interval = "15s""#)
        .unwrap();
        assert_eq!(ok.name(), "prometheus");
        assert_eq!(ok.interval, Duration::from_secs(15));
        assert_eq!(
            cfg(r#"prometheus = "http://p"
query = 'x{v={commit}}'"#)
            .unwrap_err()
            .0,
            "source.query"
        );
        assert_eq!(
            cfg(r#"prometheus = "http://p"
errors = "e""#)
            .unwrap_err()
            .0,
            "source.requests"
        );
        assert_eq!(
            cfg(r#"prometheus = "http://p"
query = "q"
value = "a.b""#)
            .unwrap_err()
            .0,
            "source.value"
        );
        let h = cfg(r#"http = "https://api.datadoghq.com/api/v1/query?from={start}&to={end}&query=avg:x{version:{commit}}"
value = "series.0.pointlist.-1.1"
headers = { "DD-API-KEY" = { env = "DD_API_KEY" }, "Accept-Language" = "en" }"#)
        .unwrap();
        assert_eq!(h.name(), "http_json");
        assert_eq!(h.secret_envs(), vec!["DD_API_KEY".to_string()]);
        assert_eq!(
            cfg(r#"http = "https://x/{nope}"
value = "a""#)
            .unwrap_err()
            .0,
            "source.http"
        );
        assert_eq!(cfg("interval = \"1s\"").unwrap_err().0, "source.prometheus");
    }

    #[test]
    fn counts_round_and_clamp() {
        let t = Utc::now();
        let f = Fetched::counts(t, 10.6, 9.7).unwrap();
        assert_eq!((f.errors, f.requests), (Some(10), Some(10)));
        assert!(Fetched::counts(t, 0.0, 0.3).is_none());
        assert_eq!(Fetched::counts(t, f64::NAN, 4.0).unwrap().errors, Some(0));
    }
}
