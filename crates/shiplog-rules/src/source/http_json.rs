//! The generic HTTP JSON source: a URL (and optional JSON body) template, headers whose
//! secret values come from environment variables, and the path of the value (or of the
//! error and request counts) in the JSON answer. One request per interval sampled.
//!
//! Values from event data are substituted only when they are made of URL- and
//! query-language-safe characters (`A-Z a-z 0-9 . _ ~ - :`): a vendor's query language
//! (Datadog's, NRQL inside GraphQL inside JSON) has its own quoting that a generic source
//! cannot know, so a value that could change the query is refused, never substituted.

use super::template::{Span, Template, Var};
use super::{Fetched, SourceError};
use serde_json::Value;

/// One step of a [`JsonPath`]: a key, or an index (negative: from the end).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Key(String),
    Index(i64),
}

/// `series.0.pointlist.-1.1`: dot-separated keys and array indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    pub text: String,
    pub steps: Vec<Step>,
}

impl JsonPath {
    pub fn parse(s: &str) -> Result<JsonPath, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        let steps = s
            .split('.')
            .map(|p| {
                if p.is_empty() {
                    Err(format!("empty step in {s:?}"))
                } else if let Ok(i) = p.parse::<i64>() {
                    Ok(Step::Index(i))
                } else {
                    Ok(Step::Key(p.to_string()))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(JsonPath {
            text: s.to_string(),
            steps,
        })
    }

    /// The number at this path (a number, or a string holding one: Prometheus-style
    /// answers quote their values).
    pub fn number(&self, v: &Value) -> Result<f64, String> {
        let mut cur = v;
        for step in &self.steps {
            let next = match (step, cur) {
                (Step::Key(k), Value::Object(m)) => m.get(k),
                (Step::Index(i), Value::Array(a)) => {
                    let at = if *i < 0 { a.len() as i64 + i } else { *i };
                    usize::try_from(at).ok().and_then(|at| a.get(at))
                }
                (Step::Key(k), Value::Array(a)) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            cur = next.ok_or_else(|| format!("no value at {}", self.text))?;
        }
        match cur {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .filter(|x: &f64| x.is_finite())
        .ok_or_else(|| format!("the value at {} is not a number: {cur}", self.text))
    }
}

/// Whether an event value may be substituted into a URL or body.
pub fn safe_value(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-' | b':'))
}

/// Renders a URL or body template for one interval.
pub fn render(
    t: &Template,
    span: Span,
    value: impl Fn(Var, Span) -> Result<String, String>,
) -> Result<String, String> {
    t.render(|v| {
        let s = value(v, span)?;
        if v.from_event() && !safe_value(&s) {
            return Err(format!(
                "the {} value {s:?} has characters the http_json source does not substitute (A-Z a-z 0-9 . _ ~ - : only)",
                v.name()
            ));
        }
        Ok(s)
    })
}

/// A configured HTTP JSON request.
#[derive(Debug, Clone)]
pub struct HttpJson {
    pub client: reqwest::Client,
    /// (name, value) with secrets already read from the environment: never logged or
    /// written anywhere.
    pub headers: Vec<(String, String)>,
}

impl HttpJson {
    /// Sends one request and reads the paths from its answer.
    pub async fn fetch(
        &self,
        url: &str,
        body: Option<&str>,
        span: Span,
        value: Option<&JsonPath>,
        errors: Option<&JsonPath>,
        requests: Option<&JsonPath>,
    ) -> Result<Option<Fetched>, SourceError> {
        let mut req = match body {
            Some(b) => self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string()),
            None => self.client.get(url),
        };
        req = req.header(reqwest::header::ACCEPT, "application/json");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SourceError::unreachable("http_json", &e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            return Err(SourceError::Failed(format!(
                "http_json error: HTTP {}: {}",
                status.as_u16(),
                text.trim()
            )));
        }
        let answer: Value = resp.json().await.map_err(|e| {
            SourceError::Failed(format!("http_json error: the answer is not JSON: {e}"))
        })?;
        let read = |p: &JsonPath| {
            p.number(&answer)
                .map_err(|e| SourceError::NoData(format!("http_json: {e}")))
        };
        if let Some(p) = value {
            return Ok(Some(Fetched::value(span.end, read(p)?)));
        }
        match (errors, requests) {
            (Some(e), Some(r)) => {
                let r = read(r)?;
                // No errors series at all is 0 errors, as with Prometheus.
                let e = read(e).unwrap_or(0.0);
                Ok(Fetched::counts(span.end, e, r))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let v: Value = serde_json::from_str(
            r#"{"series":[{"pointlist":[[1,0.5],[2,"0.75"]]}],"results":[{"count":12}]}"#,
        )
        .unwrap();
        let p = |s| JsonPath::parse(s).unwrap();
        assert_eq!(p("series.0.pointlist.-1.1").number(&v).unwrap(), 0.75);
        assert_eq!(p("series.0.pointlist.0.1").number(&v).unwrap(), 0.5);
        assert_eq!(p("results.0.count").number(&v).unwrap(), 12.0);
        assert!(p("results.1.count")
            .number(&v)
            .unwrap_err()
            .contains("no value at results.1.count"));
        assert!(p("series.0")
            .number(&v)
            .unwrap_err()
            .contains("not a number"));
        assert!(JsonPath::parse("a..b").is_err());
    }

    #[test]
    fn unsafe_values_are_refused() {
        assert!(safe_value("dpl_8fJ2kQ-x.1:2"));
        assert!(!safe_value("a'b"));
        assert!(!safe_value("a&b=c"));
        assert!(!safe_value(""));
        let t = Template::parse("https://x/q?v={commit}&from={start}").unwrap();
        let span = Span {
            start: chrono::DateTime::from_timestamp(100, 0).unwrap(),
            end: chrono::DateTime::from_timestamp(130, 0).unwrap(),
        };
        let ok = render(&t, span, |v, s| {
            Ok(super::super::template::time_value(
                v,
                s,
                std::time::Duration::from_secs(30),
                std::time::Duration::from_secs(600),
            )
            .unwrap_or_else(|| "abc123".into()))
        })
        .unwrap();
        assert_eq!(ok, "https://x/q?v=abc123&from=100");
        let err = render(&t, span, |_, _| Ok("x' OR 1=1".into())).unwrap_err();
        assert!(err.contains("does not substitute"), "{err}");
    }
}
