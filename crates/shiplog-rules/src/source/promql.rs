//! The Prometheus source: PromQL templates whose event placeholders are escaped as label
//! values, and the HTTP API's instant and range queries.
//!
//! Why the quoting rule: escaping makes a value a literal only inside a string literal.
//! So the template is checked when the config is validated: every placeholder that comes
//! from event data (`{commit}`, `{deployment_id}`, …) must sit inside a `"…"` or `'…'`
//! string, where its value is escaped for that quote (backslash, the quote, newline and
//! the other control characters); a value containing `"} or vector(1)` stays one label
//! value. Durations and times (`{interval}`) are formatted by shiplog and may go anywhere.

use super::template::{Piece, Template, Var};
use super::{Fetched, SourceError};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use std::time::Duration;

/// Escapes `s` for a PromQL string literal opened with `quote` (`"` or `'`). PromQL's
/// lexer accepts `\\`, `\<quote>`, `\n`, `\r`, `\t` and `\xHH` escapes; any other escape,
/// or a raw newline, is a syntax error or would end the string.
pub fn escape_label_value(s: &str, quote: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// For each placeholder of `t`, in order, the quote of the string literal it sits in
/// (None: outside any string). Refuses an event placeholder outside `"…"` / `'…'`, and any
/// placeholder inside a raw `` `…` `` string (which has no escapes).
pub fn placeholder_quotes(t: &Template) -> Result<Vec<Option<char>>, String> {
    let mut open: Option<char> = None;
    let mut escaped = false;
    let mut out = Vec::new();
    for p in &t.pieces {
        match p {
            Piece::Lit(s) => {
                for c in s.chars() {
                    match open {
                        None => {
                            if matches!(c, '"' | '\'' | '`') {
                                open = Some(c);
                            }
                        }
                        Some(q) => {
                            if escaped {
                                escaped = false;
                            } else if c == '\\' && q != '`' {
                                escaped = true;
                            } else if c == q {
                                open = None;
                            }
                        }
                    }
                }
            }
            Piece::Var(v) => {
                if escaped {
                    return Err(format!(
                        "{{{}}} follows a backslash inside a string",
                        v.name()
                    ));
                }
                match open {
                    Some('`') => {
                        return Err(format!(
                            "{{{}}} is inside a `raw` string, where it cannot be escaped: use \"…\"",
                            v.name()
                        ))
                    }
                    None if v.from_event() => {
                        return Err(format!(
                            "{{{}}} must be inside a quoted label value, e.g. version=\"{{{}}}\" (it is escaped as one)",
                            v.name(),
                            v.name()
                        ))
                    }
                    q => out.push(q),
                }
            }
        }
    }
    if open.is_some() {
        return Err("a string literal is not closed".into());
    }
    Ok(out)
}

/// Renders a checked template: event values escaped for their quote, durations as PromQL
/// durations.
pub fn render(
    t: &Template,
    quotes: &[Option<char>],
    value: impl Fn(Var) -> Result<String, String>,
) -> Result<String, String> {
    let mut i = 0;
    t.render(|v| {
        let q = quotes.get(i).copied().flatten();
        i += 1;
        let raw = value(v)?;
        Ok(match q {
            Some(q) => escape_label_value(&raw, q),
            None => raw,
        })
    })
}

/// A Prometheus server's HTTP API.
#[derive(Debug, Clone)]
pub struct Prometheus {
    pub base: String,
    pub client: reqwest::Client,
}

fn unix(t: DateTime<Utc>) -> String {
    format!("{:.3}", t.timestamp_millis() as f64 / 1000.0)
}

impl Prometheus {
    /// Evaluates `query` at each of `times` (evenly spaced by `step` when there are
    /// several: a range query), and returns the one series' value at each time it has one.
    pub async fn values(
        &self,
        query: &str,
        times: &[DateTime<Utc>],
        step: Duration,
    ) -> Result<Vec<(DateTime<Utc>, f64)>, SourceError> {
        let (path, params) = match times {
            [] => return Ok(Vec::new()),
            [t] => (
                "query",
                vec![("query", query.to_string()), ("time", unix(*t))],
            ),
            [first, .., last] => (
                "query_range",
                vec![
                    ("query", query.to_string()),
                    ("start", unix(*first)),
                    ("end", unix(*last)),
                    ("step", format!("{:.3}", step.as_secs_f64())),
                ],
            ),
        };
        let url = format!("{}/api/v1/{path}", self.base.trim_end_matches('/'));
        let resp = self
            .client
            .get(&url)
            .query(&params)
            .send()
            .await
            .map_err(|e| SourceError::unreachable("prometheus", &e))?;
        let status = resp.status();
        let body: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => {
                return Err(SourceError::Failed(format!(
                    "prometheus error: HTTP {status}, unreadable answer: {e}"
                )))
            }
        };
        if body["status"] != "success" {
            return Err(SourceError::Failed(format!(
                "prometheus error: HTTP {}: {}: {}",
                status.as_u16(),
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("no message")
            )));
        }
        parse_result(&body["data"])
    }
}

/// The points of a `vector`/`matrix`/`scalar` answer, which must hold one series at most.
fn parse_result(data: &Value) -> Result<Vec<(DateTime<Utc>, f64)>, SourceError> {
    let point = |p: &Value| -> Option<(DateTime<Utc>, f64)> {
        let t = p.get(0)?.as_f64()?;
        let v: f64 = p.get(1)?.as_str()?.parse().ok()?;
        let t = Utc
            .timestamp_millis_opt((t * 1000.0).round() as i64)
            .single()?;
        Some((t, v))
    };
    match data["resultType"].as_str() {
        Some("scalar") => Ok(point(&data["result"]).into_iter().collect()),
        Some("vector") | Some("matrix") => {
            let series = data["result"].as_array().cloned().unwrap_or_default();
            if series.len() > 1 {
                return Err(SourceError::Failed(format!(
                    "prometheus: the query returned {} series; aggregate it to one (sum(…))",
                    series.len()
                )));
            }
            let Some(s) = series.first() else {
                return Ok(Vec::new());
            };
            let mut out: Vec<(DateTime<Utc>, f64)> = match s.get("values") {
                Some(Value::Array(vs)) => vs.iter().filter_map(point).collect(),
                _ => point(&s["value"]).into_iter().collect(),
            };
            out.retain(|(_, v)| v.is_finite());
            Ok(out)
        }
        other => Err(SourceError::Failed(format!(
            "prometheus: unexpected result type {other:?}"
        ))),
    }
}

/// The points as samples: values, or the counts behind a rate (`errors` at a time with
/// requests but no errors series is 0: a counter that never counted an error is often
/// not exported at all).
pub fn combine(
    value: Option<Vec<(DateTime<Utc>, f64)>>,
    errors: Option<Vec<(DateTime<Utc>, f64)>>,
    requests: Option<Vec<(DateTime<Utc>, f64)>>,
) -> Vec<Fetched> {
    let mut out = Vec::new();
    if let Some(vs) = value {
        for (t, v) in vs {
            out.push(Fetched::value(t, v));
        }
    }
    if let Some(rs) = requests {
        let es = errors.unwrap_or_default();
        for (t, r) in rs {
            let e = es.iter().find(|(te, _)| *te == t).map_or(0.0, |x| x.1);
            if let Some(f) = Fetched::counts(t, e, r) {
                out.push(f);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_a_hostile_value_literal() {
        let hostile = "v2\"} or vector(1) #\\\n'";
        assert_eq!(
            escape_label_value(hostile, '"'),
            r#"v2\"} or vector(1) #\\\n'"#
        );
        assert_eq!(
            escape_label_value(hostile, '\''),
            r#"v2"} or vector(1) #\\\n\'"#
        );
        assert_eq!(escape_label_value("a\u{1}b", '"'), r"a\x01b");
        let t =
            Template::parse(r#"sum(x{version="{commit}"}) / sum(y{d='{deployment_id}'})"#).unwrap();
        let q = placeholder_quotes(&t).unwrap();
        assert_eq!(q, vec![Some('"'), Some('\'')]);
        let rendered = render(&t, &q, |_| Ok(hostile.to_string())).unwrap();
        assert_eq!(
            rendered,
            r#"sum(x{version="v2\"} or vector(1) #\\\n'"}) / sum(y{d='v2"} or vector(1) #\\\n\''})"#
        );
        // The rendered label value reads back as the original (PromQL unquotes like Go).
        let start = rendered.find("version=\"").unwrap() + "version=\"".len();
        let mut back = String::new();
        let mut chars = rendered[start..].chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next().unwrap() {
                    'n' => back.push('\n'),
                    c => back.push(c),
                },
                c => back.push(c),
            }
        }
        assert_eq!(back, hostile);
    }

    #[test]
    fn event_placeholders_must_be_quoted() {
        let refuse = |s: &str| placeholder_quotes(&Template::parse(s).unwrap()).unwrap_err();
        assert!(refuse("x{version={commit}}").contains("inside a quoted label value"));
        assert!(refuse("x{version=`{commit}`}").contains("raw"));
        assert!(refuse(r#"x{version="a\{commit}"}"#).contains("backslash"));
        assert!(refuse(r#"x{version="{commit}}"#).contains("not closed"));
        // Durations go anywhere; an escaped quote does not close the string.
        let t = Template::parse(r#"increase(x{v="a\"{commit}"}[{interval}])"#).unwrap();
        assert_eq!(placeholder_quotes(&t).unwrap(), vec![Some('"'), None]);
    }

    #[test]
    fn answers() {
        let v: Value = serde_json::from_str(
            r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"3"],[1700000003.5,"NaN"],[1700000006,"4.5"]]}]}"#,
        )
        .unwrap();
        let pts = parse_result(&v).unwrap();
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[1].1, 4.5);
        let two: Value = serde_json::from_str(
            r#"{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}"#,
        )
        .unwrap();
        assert!(parse_result(&two)
            .unwrap_err()
            .to_string()
            .contains("2 series"));
        let t = |s| Utc.timestamp_opt(s, 0).unwrap();
        let got = combine(
            None,
            Some(vec![(t(3), 2.4)]),
            Some(vec![(t(3), 100.2), (t(6), 90.0), (t(9), 0.0)]),
        );
        assert_eq!(got.len(), 2, "no sample for an interval without requests");
        assert_eq!((got[0].errors, got[0].requests), (Some(2), Some(100)));
        assert_eq!((got[1].errors, got[1].requests), (Some(0), Some(90)));
    }
}
