//! CI environment detection from the one table every collector shares:
//! `ingest/core/ci-providers.json` (embedded here, imported by the JavaScript plugins'
//! core). Ten providers: GitHub Actions, GitLab CI, CircleCI, Buildkite, Bitbucket
//! Pipelines, Azure Pipelines, Netlify, Vercel, Cloudflare Pages, Jenkins. The file's
//! `about` says how a template is read; this module implements exactly that, as does
//! `ingest/core/src/ci.js`, and both run the same test vectors (`ingest/core/test/ci-vectors.json`).
//!
//! Gives the commit, the branch (and a pull request's base branch), the run
//! (`data.ci {provider, run_id, url, …}`) and a run key that stays the same when a job is
//! retried, for stable event ids.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// The shared table, as shipped in the npm package `shiplog-collector-core`.
const TABLE_JSON: &str = include_str!("../../../../ingest/core/ci-providers.json");

/// What a CI run tells about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ci {
    /// The table's provider id: `github`, `gitlab`, `circleci`, … .
    pub provider: &'static str,
    /// The run (`data.ci.run_id`).
    pub run_id: String,
    /// Identifies the run and job across retries (no attempt number, no retried job's id).
    pub run_key: String,
    /// The job (GitHub job id, GitLab job name, CircleCI job).
    pub job: Option<String>,
    /// The step within the job, when the CI says (GitHub: GITHUB_ACTION).
    pub step: Option<String>,
    /// Link to the run (`data.ci.url`).
    pub url: Option<String>,
    /// Other `data.ci` fields (attempt, job ids, build numbers).
    pub extra: Map<String, Value>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    /// The branch a pull request targets, when the CI says.
    pub base_branch: Option<String>,
    /// The environment, when the CI knows it (Vercel, Netlify, GitLab environments).
    pub env: Option<String>,
    /// The deployment, when the CI is the deployment (Vercel, Netlify).
    pub deployment_id: Option<String>,
    /// The deployment URL, when the CI is the deployment (Vercel, Netlify, Cloudflare).
    pub deployment_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Table {
    providers: Vec<Provider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Provider {
    id: String,
    #[allow(dead_code)] // documentation in the table
    name: String,
    detect: Detect,
    #[serde(default)]
    run_id: Vec<String>,
    #[serde(default)]
    run_key: Vec<String>,
    #[serde(default)]
    url: Vec<String>,
    #[serde(default)]
    commit: Vec<String>,
    #[serde(default)]
    branch: Vec<String>,
    #[serde(default)]
    base_branch: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    deployment_id: Vec<String>,
    #[serde(default)]
    deployment_url: Vec<String>,
    #[serde(default)]
    job: Vec<String>,
    #[serde(default)]
    step: Vec<String>,
    /// More `data.ci` fields (an object: their order does not matter).
    #[serde(default)]
    extra: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Detect {
    var: String,
    when: When,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum When {
    Truthy,
    Present,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(TABLE_JSON).expect("ingest/core/ci-providers.json is valid")
    })
}

/// The provider ids of the table, in detection order.
#[cfg(test)]
fn providers() -> Vec<&'static str> {
    table().providers.iter().map(|p| p.id.as_str()).collect()
}

fn get(env: &HashMap<String, String>, k: &str) -> Option<String> {
    env.get(k)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn truthy(env: &HashMap<String, String>, k: &str) -> bool {
    get(env, k).is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"))
}

/// Detects the CI from the environment; `None` outside CI (or on a CI the table lacks).
pub fn detect(env: &HashMap<String, String>) -> Option<Ci> {
    let p = table().providers.iter().find(|p| match p.detect.when {
        When::Truthy => truthy(env, &p.detect.var),
        When::Present => get(env, &p.detect.var).is_some(),
    })?;
    let text = |alts: &[String]| first(alts, env).map(value_text);
    let run_id = text(&p.run_id).unwrap_or_default();
    let mut extra = Map::new();
    for (k, alts) in &p.extra {
        if let Some(v) = first(alts, env) {
            extra.insert(k.clone(), v);
        }
    }
    Some(Ci {
        provider: p.id.as_str(),
        run_key: text(&p.run_key).unwrap_or_else(|| run_id.clone()),
        run_id,
        job: text(&p.job),
        step: text(&p.step),
        url: text(&p.url),
        extra,
        commit: text(&p.commit),
        branch: text(&p.branch),
        base_branch: text(&p.base_branch),
        env: text(&p.env),
        deployment_id: text(&p.deployment_id),
        deployment_url: text(&p.deployment_url),
    })
}

fn value_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The first template of `alts` whose every placeholder is set.
fn first(alts: &[String], env: &HashMap<String, String>) -> Option<Value> {
    alts.iter().find_map(|t| render(t, env))
}

/// Renders one template (see the table's `about`); `None` when a placeholder is unset.
fn render(template: &str, env: &HashMap<String, String>) -> Option<Value> {
    let mut out = String::new();
    let mut rest = template;
    let mut alone_int = None;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        let inner = &rest[open + 1..close];
        let (var, filter) = inner.split_once('|').unwrap_or((inner, ""));
        let value = get(env, var)?;
        let value = match filter {
            "" => value,
            "branch" => value
                .strip_prefix("refs/heads/")
                .or_else(|| value.strip_prefix("origin/"))
                .unwrap_or(&value)
                .to_string(),
            "https" => match value.strip_prefix("http://") {
                Some(r) => format!("https://{r}"),
                None => value,
            },
            "uri" => percent_encode(&value),
            "int" => {
                if template == format!("{{{inner}}}") && value.bytes().all(|b| b.is_ascii_digit()) {
                    alone_int = value.parse::<u64>().ok();
                }
                value
            }
            other => panic!("ci-providers.json: unknown filter {other:?} in {template:?}"),
        };
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(match alone_int {
        Some(n) => Value::from(n),
        None => Value::String(out),
    })
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Ci {
    /// `data.ci`: `{provider, run_id, url, …}`.
    pub fn data(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("provider".into(), self.provider.into());
        if !self.run_id.is_empty() {
            m.insert("run_id".into(), self.run_id.clone().into());
        }
        if let Some(u) = &self.url {
            m.insert("url".into(), u.clone().into());
        }
        for (k, v) in &self.extra {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        m
    }

    /// A stable event id for this run, job and step plus `parts` (kind, status, …): the
    /// same on a retried job, so the retry's event is a duplicate.
    pub fn stable_id(&self, parts: &[&str]) -> String {
        let mut all = vec![
            self.provider,
            self.run_key.as_str(),
            self.job.as_deref().unwrap_or(""),
            self.step.as_deref().unwrap_or(""),
        ];
        all.extend_from_slice(parts);
        let kind = parts.first().copied().unwrap_or("event");
        format!(
            "{}-{}-{}-{}",
            self.provider,
            super::sanitize(&self.run_id, 64),
            super::sanitize(kind, 32),
            super::digest(&all)
        )
    }

    /// The detection result as the test vectors write it (absent fields left out).
    #[cfg(test)]
    fn to_vector(&self) -> Value {
        let mut m = Map::new();
        m.insert("provider".into(), self.provider.into());
        m.insert("run_id".into(), self.run_id.clone().into());
        m.insert("run_key".into(), self.run_key.clone().into());
        let opt = [
            ("url", &self.url),
            ("commit", &self.commit),
            ("branch", &self.branch),
            ("base_branch", &self.base_branch),
            ("env", &self.env),
            ("deployment_id", &self.deployment_id),
            ("deployment_url", &self.deployment_url),
            ("job", &self.job),
            ("step", &self.step),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        if !self.extra.is_empty() {
            m.insert("extra".into(), Value::Object(self.extra.clone()));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const VECTORS: &str = include_str!("../../../../ingest/core/test/ci-vectors.json");

    /// Every vector of the shared file (the JavaScript core runs the same ones).
    #[test]
    fn shared_vectors() {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let vectors = v["vectors"].as_array().unwrap();
        let mut covered = std::collections::BTreeSet::new();
        for vector in vectors {
            let name = vector["name"].as_str().unwrap();
            let e: HashMap<String, String> = vector["env"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let got = detect(&e).map(|c| c.to_vector()).unwrap_or(Value::Null);
            assert_eq!(got, vector["expect"], "vector {name:?}");
            if let Some(p) = vector["expect"]["provider"].as_str() {
                covered.insert(p.to_string());
            }
        }
        let all: std::collections::BTreeSet<String> =
            providers().into_iter().map(String::from).collect();
        assert_eq!(covered, all, "every provider of the table has a vector");
        assert_eq!(all.len(), 10);
    }

    #[test]
    fn github_retry_keeps_the_id() {
        let e = env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "deploy"),
        ]);
        let ci = detect(&e).unwrap();
        assert_eq!(ci.data()["attempt"], 2);
        let mut e2 = e.clone();
        e2.insert("GITHUB_RUN_ATTEMPT".into(), "3".into());
        let ci2 = detect(&e2).unwrap();
        assert_eq!(
            ci.stable_id(&["deploy", "started"]),
            ci2.stable_id(&["deploy", "started"])
        );
        assert_ne!(
            ci.stable_id(&["deploy", "started"]),
            ci.stable_id(&["deploy", "succeeded"])
        );
    }

    #[test]
    fn gitlab_retry_keeps_key() {
        let a = detect(&env(&[
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_ID", "7"),
            ("CI_JOB_ID", "100"),
            ("CI_JOB_NAME", "deploy"),
        ]))
        .unwrap();
        let b = detect(&env(&[
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_ID", "7"),
            ("CI_JOB_ID", "101"),
            ("CI_JOB_NAME", "deploy"),
        ]))
        .unwrap();
        assert_eq!(a.stable_id(&["deploy"]), b.stable_id(&["deploy"]));
    }

    #[test]
    fn templates() {
        let e = env(&[("A", "x y/z"), ("B", ""), ("N", "0012"), ("M", "12a")]);
        assert_eq!(render("{A|uri}", &e), Some("x%20y%2Fz".into()));
        assert_eq!(render("pre-{B}", &e), None, "an empty variable is unset");
        assert_eq!(render("{N|int}", &e), Some(12.into()));
        assert_eq!(render("{M|int}", &e), Some("12a".into()));
        assert_eq!(render("#{N|int}", &e), Some("#0012".into()));
        assert_eq!(render("plain", &e), Some("plain".into()));
    }
}
