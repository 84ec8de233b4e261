//! Query and URL templates: literal text with `{placeholder}`s, parsed once when the
//! config is validated, rendered per deployment and interval by the source that owns the
//! escaping (PromQL label values, or URL-safe values for HTTP JSON).

use chrono::{DateTime, Utc};
use std::fmt;
use std::time::Duration;

/// A value a template can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    DeploymentId,
    Project,
    Env,
    Commit,
    Branch,
    Url,
    PreviousDeploymentId,
    /// The poll interval, as a duration (`30s`).
    Interval,
    /// The rule's window, as a duration (`10m` → `600s`).
    Window,
    /// The interval a sample covers: its start and end in Unix seconds…
    Start,
    End,
    /// …and in Unix milliseconds.
    StartMs,
    EndMs,
}

/// Every placeholder, by name.
pub const VARS: &[(&str, Var)] = &[
    ("deployment_id", Var::DeploymentId),
    ("project", Var::Project),
    ("env", Var::Env),
    ("commit", Var::Commit),
    ("branch", Var::Branch),
    ("url", Var::Url),
    ("previous_deployment_id", Var::PreviousDeploymentId),
    ("interval", Var::Interval),
    ("window", Var::Window),
    ("start", Var::Start),
    ("end", Var::End),
    ("start_ms", Var::StartMs),
    ("end_ms", Var::EndMs),
];

impl Var {
    pub fn name(self) -> &'static str {
        VARS.iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .expect("every var is named")
    }

    /// Whether the value comes from event data (a deployment's fields), as opposed to
    /// durations and times shiplog formats itself.
    pub fn from_event(self) -> bool {
        !matches!(
            self,
            Var::Interval | Var::Window | Var::Start | Var::End | Var::StartMs | Var::EndMs
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub source: String,
    pub pieces: Vec<Piece>,
}

impl Template {
    /// Parses `{name}` placeholders. A `{` not followed by `identifier}` is literal text
    /// (PromQL label matchers, JSON, GraphQL); an `{identifier}` that is not a placeholder
    /// is an error, so a misspelt one does not reach the query unreplaced.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            lit.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let ident_len = after
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
                .count();
            if ident_len > 0 && after.as_bytes().get(ident_len) == Some(&b'}') {
                let name = &after[..ident_len];
                let Some((_, var)) = VARS.iter().find(|(n, _)| *n == name) else {
                    return Err(format!(
                        "unknown placeholder {{{name}}}; known: {}",
                        VARS.iter()
                            .map(|(n, _)| format!("{{{n}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                };
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Var(*var));
                rest = &after[ident_len + 1..];
            } else {
                lit.push('{');
                rest = after;
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template {
            source: s.to_string(),
            pieces,
        })
    }

    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(*v),
            Piece::Lit(_) => None,
        })
    }

    /// Renders with `value` giving each placeholder's text (already escaped by the caller).
    pub fn render(
        &self,
        mut value: impl FnMut(Var) -> Result<String, String>,
    ) -> Result<String, String> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(v) => out.push_str(&value(*v)?),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// What a deployment gives its templates.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub deployment_id: String,
    pub project: String,
    pub env: Option<String>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub url: Option<String>,
    pub previous_deployment_id: Option<String>,
}

impl Fields {
    /// The raw (unescaped) value of an event placeholder; an error names what is missing.
    pub fn get(&self, v: Var) -> Result<&str, String> {
        let (value, what) = match v {
            Var::DeploymentId => (Some(self.deployment_id.as_str()), "deployment_id"),
            Var::Project => (Some(self.project.as_str()), "project"),
            Var::Env => (self.env.as_deref(), "env"),
            Var::Commit => (self.commit.as_deref(), "commit"),
            Var::Branch => (self.branch.as_deref(), "branch"),
            Var::Url => (self.url.as_deref(), "url"),
            Var::PreviousDeploymentId => (
                self.previous_deployment_id.as_deref(),
                "previous_deployment_id",
            ),
            _ => (None, v.name()),
        };
        value.ok_or_else(|| format!("deployment {} has no {what}", self.deployment_id))
    }
}

/// The times of one sample: the interval `[start, end]` it covers.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A duration as PromQL (and most query languages) write it: `30s`, or `1500ms`.
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The text of a time or duration placeholder.
pub fn time_value(v: Var, span: Span, interval: Duration, window: Duration) -> Option<String> {
    Some(match v {
        Var::Interval => duration_text(interval),
        Var::Window => duration_text(window),
        Var::Start => span.start.timestamp().to_string(),
        Var::End => span.end.timestamp().to_string(),
        Var::StartMs => span.start.timestamp_millis().to_string(),
        Var::EndMs => span.end.timestamp_millis().to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_literal_braces() {
        let t = Template::parse(r#"sum(rate(x{job="a",v="{commit}"}[{interval}]))"#).unwrap();
        assert_eq!(
            t.pieces,
            vec![
                Piece::Lit(r#"sum(rate(x{job="a",v=""#.into()),
                Piece::Var(Var::Commit),
                Piece::Lit(r#""}["#.into()),
                Piece::Var(Var::Interval),
                Piece::Lit("]))".into()),
            ]
        );
        let e = Template::parse("x{comit}").unwrap_err();
        assert!(e.contains("unknown placeholder {comit}"), "{e}");
        // JSON and GraphQL braces are text.
        let t = Template::parse(r#"{"query":"{ actor {account(id: 1)} }"}"#).unwrap();
        assert_eq!(t.vars().count(), 0);
    }

    #[test]
    fn durations() {
        assert_eq!(duration_text(Duration::from_secs(30)), "30s");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
    }
}
