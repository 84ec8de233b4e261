//! CI environment detection: GitHub Actions, GitLab CI, CircleCI, Vercel builds.
//!
//! Gives the commit, the branch, the run (`data.ci {provider, run_id, url}`) and a run key
//! that stays the same when a job is retried, for stable event ids.

use serde_json::{Map, Value};
use std::collections::HashMap;

/// What a CI run tells about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ci {
    /// `github`, `gitlab`, `circleci`, `vercel`.
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
    /// The environment, when the CI knows it (Vercel, GitLab environments).
    pub env: Option<String>,
    /// The deployment, when the CI is the deployment (Vercel).
    pub deployment_id: Option<String>,
    /// The deployment URL, when the CI is the deployment (Vercel).
    pub deployment_url: Option<String>,
}

fn get(env: &HashMap<String, String>, k: &str) -> Option<String> {
    env.get(k)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn truthy(env: &HashMap<String, String>, k: &str) -> bool {
    get(env, k).is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"))
}

/// Detects the CI from the environment; `None` outside CI (or on an unknown CI).
pub fn detect(env: &HashMap<String, String>) -> Option<Ci> {
    let mut ci = if truthy(env, "GITHUB_ACTIONS") {
        github(env)
    } else if truthy(env, "GITLAB_CI") {
        gitlab(env)
    } else if truthy(env, "CIRCLECI") {
        circleci(env)
    } else if truthy(env, "VERCEL") {
        vercel(env)
    } else {
        return None;
    };
    if ci.run_key.is_empty() {
        ci.run_key = ci.run_id.clone();
    }
    Some(ci)
}

fn github(env: &HashMap<String, String>) -> Ci {
    let run_id = get(env, "GITHUB_RUN_ID").unwrap_or_default();
    let url = match (
        get(env, "GITHUB_SERVER_URL"),
        get(env, "GITHUB_REPOSITORY"),
        run_id.is_empty(),
    ) {
        (Some(server), Some(repo), false) => {
            let mut u = format!(
                "{}/{repo}/actions/runs/{run_id}",
                server.trim_end_matches('/')
            );
            if let Some(a) = get(env, "GITHUB_RUN_ATTEMPT") {
                u.push_str(&format!("/attempts/{a}"));
            }
            Some(u)
        }
        _ => None,
    };
    let mut extra = Map::new();
    if let Some(a) = get(env, "GITHUB_RUN_ATTEMPT") {
        extra.insert(
            "attempt".into(),
            a.parse::<u64>()
                .map(Value::from)
                .unwrap_or(Value::String(a)),
        );
    }
    if let Some(w) = get(env, "GITHUB_WORKFLOW") {
        extra.insert("workflow".into(), w.into());
    }
    if let Some(r) = get(env, "GITHUB_REPOSITORY") {
        extra.insert("repository".into(), r.into());
    }
    let job = get(env, "GITHUB_JOB");
    if let Some(j) = &job {
        extra.insert("job".into(), j.clone().into());
    }
    Ci {
        provider: "github",
        run_key: run_id.clone(),
        run_id,
        job,
        step: get(env, "GITHUB_ACTION"),
        url,
        extra,
        commit: get(env, "GITHUB_SHA"),
        // On pull requests GITHUB_REF_NAME is `123/merge`; the head branch is the branch.
        branch: get(env, "GITHUB_HEAD_REF").or_else(|| get(env, "GITHUB_REF_NAME")),
        ..Default::default()
    }
}

fn gitlab(env: &HashMap<String, String>) -> Ci {
    let run_id = get(env, "CI_PIPELINE_ID").unwrap_or_default();
    let mut extra = Map::new();
    if let Some(j) = get(env, "CI_JOB_ID") {
        extra.insert("job_id".into(), j.into());
    }
    // A retried GitLab job gets a new CI_JOB_ID: the run key uses the job's name.
    let job = get(env, "CI_JOB_NAME");
    if let Some(j) = &job {
        extra.insert("job".into(), j.clone().into());
    }
    if let Some(p) = get(env, "CI_PROJECT_PATH") {
        extra.insert("repository".into(), p.into());
    }
    Ci {
        provider: "gitlab",
        run_key: run_id.clone(),
        run_id,
        job,
        url: get(env, "CI_JOB_URL").or_else(|| get(env, "CI_PIPELINE_URL")),
        extra,
        commit: get(env, "CI_COMMIT_SHA"),
        branch: get(env, "CI_COMMIT_REF_NAME"),
        env: get(env, "CI_ENVIRONMENT_NAME"),
        ..Default::default()
    }
}

fn circleci(env: &HashMap<String, String>) -> Ci {
    let run_id = get(env, "CIRCLE_WORKFLOW_ID").unwrap_or_default();
    let mut extra = Map::new();
    if let Some(n) = get(env, "CIRCLE_BUILD_NUM") {
        extra.insert(
            "build_num".into(),
            n.parse::<u64>()
                .map(Value::from)
                .unwrap_or(Value::String(n)),
        );
    }
    let job = get(env, "CIRCLE_JOB");
    if let Some(j) = &job {
        extra.insert("job".into(), j.clone().into());
    }
    Ci {
        provider: "circleci",
        // A rerun workflow gets a new id but keeps its workspace id.
        run_key: get(env, "CIRCLE_WORKFLOW_WORKSPACE_ID").unwrap_or_else(|| run_id.clone()),
        run_id,
        job,
        url: get(env, "CIRCLE_BUILD_URL"),
        extra,
        commit: get(env, "CIRCLE_SHA1"),
        branch: get(env, "CIRCLE_BRANCH"),
        ..Default::default()
    }
}

fn vercel(env: &HashMap<String, String>) -> Ci {
    let deployment_url = get(env, "VERCEL_URL").map(|u| {
        if u.starts_with("http://") || u.starts_with("https://") {
            u
        } else {
            format!("https://{u}")
        }
    });
    let deployment_id = get(env, "VERCEL_DEPLOYMENT_ID");
    let run_id = deployment_id
        .clone()
        .or_else(|| get(env, "VERCEL_URL"))
        .unwrap_or_default();
    Ci {
        provider: "vercel",
        run_key: run_id.clone(),
        run_id,
        url: deployment_url.clone(),
        commit: get(env, "VERCEL_GIT_COMMIT_SHA"),
        branch: get(env, "VERCEL_GIT_COMMIT_REF"),
        env: get(env, "VERCEL_ENV"),
        deployment_id,
        deployment_url,
        ..Default::default()
    }
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

    #[test]
    fn github_actions() {
        let e = env(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SHA", "abc"),
            ("GITHUB_REF_NAME", "main"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "deploy"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "acme/web"),
        ]);
        let ci = detect(&e).unwrap();
        assert_eq!(ci.provider, "github");
        assert_eq!(ci.commit.as_deref(), Some("abc"));
        assert_eq!(ci.branch.as_deref(), Some("main"));
        assert_eq!(
            ci.url.as_deref(),
            Some("https://github.com/acme/web/actions/runs/42/attempts/2")
        );
        assert_eq!(ci.data()["attempt"], 2);
        // The attempt is not part of the id.
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
    fn none_outside_ci() {
        assert!(detect(&env(&[("CI", "true"), ("GITHUB_ACTIONS", "false")])).is_none());
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
}
