//! Build comparison: a head build against the latest successful build of a base branch
//! (same project), with `[[budgets]]` giving a verdict. One implementation for
//! `GET /v1/compare` and `shiplog compare` (which asks the server and renders the answer).
//!
//! - the head build: the latest build of the project at the given commit (a prefix of at
//!   least 7 characters works), else the project's latest build;
//! - the base build: the latest successful build of the project on the base branch, the
//!   head build itself left out;
//! - chunks are paired by name, then, among those left, by the name with its content hash
//!   taken out (`assets/index-Bx3k9a1Q.js` and `assets/index-Dd81kLw0.js` are one chunk)
//!   when that pairs exactly one with one; the rest are added or removed. Chunks named by
//!   their hash alone (Turbopack's) cannot be paired and show as removed and added.

mod budget;
mod render;

pub use budget::{BudgetCheck, BuildBudget};
pub use render::{render_markdown, render_table};

use crate::{QueryEngine, QueryError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// Longest a comparison's queries may run.
pub const COMPARE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to compare.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompareRequest {
    pub project: String,
    /// The base branch, e.g. `main`.
    pub base: String,
    /// The head commit (or a prefix of it); `None`: the project's latest build.
    pub head: Option<String>,
    /// Only builds of this tool (`vite`, `next`, …).
    pub tool: Option<String>,
}

/// One build, as the comparison shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildSummary {
    pub id: String,
    pub source: String,
    pub time: String,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub tool: Option<String>,
    pub success: Option<bool>,
    pub duration_ms: Option<i64>,
    pub bundle_bytes: Option<i64>,
    pub gzip_bytes: Option<i64>,
    pub chunks: Vec<ChunkSize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkSize {
    pub name: String,
    pub bytes: i64,
    pub gzip_bytes: Option<i64>,
}

/// A number of the base build and of the head build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub base: Option<i64>,
    pub head: Option<i64>,
    /// head − base, when both are known.
    pub change: Option<i64>,
    /// The change in % of base, when base is not 0.
    pub percent: Option<f64>,
}

impl Delta {
    pub fn new(base: Option<i64>, head: Option<i64>) -> Delta {
        let change = base.zip(head).map(|(b, h)| h - b);
        let percent = base
            .zip(change)
            .filter(|(b, _)| *b != 0)
            .map(|(b, c)| round2(c as f64 * 100.0 / b as f64));
        Delta {
            base,
            head,
            change,
            percent,
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkStatus {
    Added,
    Removed,
    Grown,
    Shrunk,
    Unchanged,
}

/// One chunk of the base, the head, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChange {
    pub status: ChunkStatus,
    /// The chunk's name in the head build (else in the base).
    pub name: String,
    /// Its name in the base build when that differs (another content hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_name: Option<String>,
    pub bytes: Delta,
    pub gzip_bytes: Delta,
}

/// What a comparison found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub project: String,
    pub base_branch: String,
    pub head: BuildSummary,
    /// `None`: the base branch has no successful build yet.
    pub base: Option<BuildSummary>,
    pub duration_ms: Delta,
    pub bundle_bytes: Delta,
    pub gzip_bytes: Delta,
    /// Every chunk that was added, removed, grew or shrank, largest change first.
    pub chunks: Vec<ChunkChange>,
    pub chunks_unchanged: usize,
    pub budgets: Vec<BudgetCheck>,
    /// `pass`, or `breach` when a budget check failed.
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Breach,
}

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// No build matches the head (404).
    #[error("{0}")]
    NoHead(String),
    #[error(transparent)]
    Query(#[from] QueryError),
}

const COLUMNS: &str = "id, source, time, \"commit\", branch, tool, success, duration_ms, \
     bundle_bytes, gzip_bytes, chunks";

/// Positional parameters (`$1`, `$2`, …) of a query.
#[derive(Clone, Default)]
struct Params(Vec<Value>);

impl Params {
    fn push(&mut self, v: impl Into<Value>) -> String {
        self.0.push(v.into());
        format!("${}", self.0.len())
    }
}

/// Compares (see the module docs) and judges the budgets that apply to the project.
pub fn compare(
    engine: &QueryEngine,
    req: &CompareRequest,
    budgets: &[BuildBudget],
) -> Result<Comparison, CompareError> {
    let mut params = Params::default();
    let mut conds = vec![format!("project = {}", params.push(req.project.clone()))];
    if let Some(t) = &req.tool {
        conds.push(format!("tool = {}", params.push(t.clone())));
    }
    let latest = |conds: &[String]| {
        format!(
            "SELECT {COLUMNS} FROM builds WHERE {} ORDER BY time DESC, received_at DESC LIMIT 1",
            conds.join(" AND ")
        )
    };

    let (mut head_params, mut head_conds) = (params.clone(), conds.clone());
    if let Some(commit) = &req.head {
        head_conds.push(format!(
            "starts_with(\"commit\", {})",
            head_params.push(commit.clone())
        ));
    }
    let head = fetch_one(engine, &latest(&head_conds), &head_params.0)?.ok_or_else(|| {
        CompareError::NoHead(match &req.head {
            Some(c) => format!("no build of project {:?} at commit {c}", req.project),
            None => format!("no build of project {:?}", req.project),
        })
    })?;

    conds.push(format!("branch = {}", params.push(req.base.clone())));
    conds.push("success".into());
    conds.push(format!(
        "NOT (source = {} AND id = {})",
        params.push(head.source.clone()),
        params.push(head.id.clone())
    ));
    let base = fetch_one(engine, &latest(&conds), &params.0)?;
    Ok(judge(req, head, base, budgets))
}

fn fetch_one(
    engine: &QueryEngine,
    sql: &str,
    params: &[Value],
) -> Result<Option<BuildSummary>, QueryError> {
    let r = engine.query_internal(sql, params, COMPARE_TIMEOUT)?;
    let Some(row) = r.rows.into_iter().next() else {
        return Ok(None);
    };
    let col = |name: &str| -> Value {
        r.columns
            .iter()
            .position(|c| c == name)
            .and_then(|i| row.get(i).cloned())
            .unwrap_or(Value::Null)
    };
    let s = |name: &str| col(name).as_str().map(String::from);
    let n = |name: &str| col(name).as_i64();
    let chunks = col("chunks")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    Some(ChunkSize {
                        name: c["name"].as_str()?.to_string(),
                        bytes: c["bytes"].as_i64().unwrap_or(0),
                        gzip_bytes: c["gzip_bytes"].as_i64(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(BuildSummary {
        id: s("id").unwrap_or_default(),
        source: s("source").unwrap_or_default(),
        time: s("time").unwrap_or_default(),
        commit: s("commit"),
        branch: s("branch"),
        tool: s("tool"),
        success: col("success").as_bool(),
        duration_ms: n("duration_ms"),
        bundle_bytes: n("bundle_bytes"),
        gzip_bytes: n("gzip_bytes"),
        chunks,
    }))
}

/// The comparison of two builds (no I/O): deltas, chunk changes, budget checks.
pub fn judge(
    req: &CompareRequest,
    head: BuildSummary,
    base: Option<BuildSummary>,
    budgets: &[BuildBudget],
) -> Comparison {
    let b = base.as_ref();
    let duration_ms = Delta::new(b.and_then(|b| b.duration_ms), head.duration_ms);
    let bundle_bytes = Delta::new(b.and_then(|b| b.bundle_bytes), head.bundle_bytes);
    let gzip_bytes = Delta::new(b.and_then(|b| b.gzip_bytes), head.gzip_bytes);
    let (chunks, chunks_unchanged) = match b {
        Some(b) => chunk_changes(&b.chunks, &head.chunks),
        None => (Vec::new(), 0),
    };
    let mut c = Comparison {
        project: req.project.clone(),
        base_branch: req.base.clone(),
        head,
        base,
        duration_ms,
        bundle_bytes,
        gzip_bytes,
        chunks,
        chunks_unchanged,
        budgets: Vec::new(),
        verdict: Verdict::Pass,
    };
    c.budgets = budget::checks(&c, budgets);
    if c.budgets.iter().any(|b| b.passed == Some(false)) {
        c.verdict = Verdict::Breach;
    }
    c
}

/// A chunk's name without its content hash: the last `-`/`.`/`~` separated part of the
/// file's stem when it is 6 to 64 characters of `[A-Za-z0-9_]` with a digit or an
/// upper-case letter (a word such as `settings` is kept).
pub fn stable_name(name: &str) -> String {
    let (dir, file) = match name.rfind('/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => ("", name),
    };
    let (stem, ext) = match file.find('.') {
        Some(i) if i > 0 => {
            // The extension is the known suffixes after the hash: `.js`, `.css`, `.mjs`, ….
            let last = file.rfind('.').unwrap_or(i);
            (&file[..last], &file[last..])
        }
        _ => (file, ""),
    };
    let cut = stem.rfind(['-', '.', '~']);
    if let Some(i) = cut {
        let part = &stem[i + 1..];
        let hashy = (6..=64).contains(&part.len())
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && part
                .chars()
                .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
        if hashy && i > 0 {
            return format!("{dir}{}{ext}", &stem[..i]);
        }
    }
    name.to_string()
}

fn chunk_changes(base: &[ChunkSize], head: &[ChunkSize]) -> (Vec<ChunkChange>, usize) {
    let mut pairs: Vec<(Option<&ChunkSize>, Option<&ChunkSize>)> = Vec::new();
    let mut base_left: Vec<&ChunkSize> = Vec::new();
    let head_by_name: HashMap<&str, &ChunkSize> =
        head.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut head_taken: std::collections::HashSet<&str> = Default::default();
    for b in base {
        match head_by_name.get(b.name.as_str()) {
            Some(h) => {
                pairs.push((Some(b), Some(h)));
                head_taken.insert(h.name.as_str());
            }
            None => base_left.push(b),
        }
    }
    let head_left: Vec<&ChunkSize> = head
        .iter()
        .filter(|h| !head_taken.contains(h.name.as_str()))
        .collect();
    let group = |v: &[&ChunkSize]| {
        let mut m: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in v.iter().enumerate() {
            m.entry(stable_name(&c.name)).or_default().push(i);
        }
        m
    };
    let (bg, hg) = (group(&base_left), group(&head_left));
    let mut b_used = vec![false; base_left.len()];
    let mut h_used = vec![false; head_left.len()];
    for (key, bi) in &bg {
        if let Some(hi) = hg.get(key) {
            if bi.len() == 1 && hi.len() == 1 {
                pairs.push((Some(base_left[bi[0]]), Some(head_left[hi[0]])));
                b_used[bi[0]] = true;
                h_used[hi[0]] = true;
            }
        }
    }
    for (i, b) in base_left.iter().enumerate() {
        if !b_used[i] {
            pairs.push((Some(b), None));
        }
    }
    for (i, h) in head_left.iter().enumerate() {
        if !h_used[i] {
            pairs.push((None, Some(h)));
        }
    }
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for (b, h) in pairs {
        let bytes = Delta::new(b.map(|c| c.bytes), h.map(|c| c.bytes));
        let gzip_bytes = Delta::new(b.and_then(|c| c.gzip_bytes), h.and_then(|c| c.gzip_bytes));
        let status = match (b, h) {
            (None, _) => ChunkStatus::Added,
            (_, None) => ChunkStatus::Removed,
            _ => match bytes.change.unwrap_or(0) {
                0 => ChunkStatus::Unchanged,
                c if c > 0 => ChunkStatus::Grown,
                _ => ChunkStatus::Shrunk,
            },
        };
        if status == ChunkStatus::Unchanged {
            unchanged += 1;
            continue;
        }
        let name = h.or(b).map(|c| c.name.clone()).unwrap_or_default();
        let base_name = b
            .filter(|b| h.is_some_and(|h| h.name != b.name))
            .map(|b| b.name.clone());
        changes.push(ChunkChange {
            status,
            name,
            base_name,
            bytes,
            gzip_bytes,
        });
    }
    let size = |c: &ChunkChange| match c.status {
        ChunkStatus::Added => c.bytes.head.unwrap_or(0),
        ChunkStatus::Removed => c.bytes.base.unwrap_or(0),
        _ => c.bytes.change.unwrap_or(0).abs(),
    };
    changes.sort_by(|a, b| size(b).cmp(&size(a)).then(a.name.cmp(&b.name)));
    (changes, unchanged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(name: &str, bytes: i64) -> ChunkSize {
        ChunkSize {
            name: name.into(),
            bytes,
            gzip_bytes: Some(bytes / 3),
        }
    }

    #[test]
    fn stable_names() {
        assert_eq!(stable_name("assets/index-Bx3k9a1Q.js"), "assets/index.js");
        assert_eq!(stable_name("main.1a2b3c4d.js"), "main.js");
        assert_eq!(
            stable_name("static/chunks/app/page-a8b991be31027b35.js"),
            "static/chunks/app/page.js"
        );
        assert_eq!(
            stable_name("assets/dashboard-settings.js"),
            "assets/dashboard-settings.js"
        );
        assert_eq!(stable_name("index.js"), "index.js");
        assert_eq!(stable_name("0i9bfanyibmja.js"), "0i9bfanyibmja.js");
    }

    #[test]
    fn pairs_chunks_by_name_then_without_hash() {
        let base = [
            chunk("assets/index-AAAA1111.js", 1000),
            chunk("assets/vendor-BBBB2222.js", 500),
            chunk("assets/old-CCCC3333.js", 70),
            chunk("robots.js", 9),
        ];
        let head = [
            chunk("assets/index-DDDD4444.js", 1200),
            chunk("assets/vendor-BBBB2222.js", 500),
            chunk("assets/new-EEEE5555.js", 300),
            chunk("robots.js", 8),
        ];
        let (changes, unchanged) = chunk_changes(&base, &head);
        assert_eq!(unchanged, 1);
        let got: Vec<(ChunkStatus, &str, Option<&str>, Option<i64>)> = changes
            .iter()
            .map(|c| {
                (
                    c.status,
                    c.name.as_str(),
                    c.base_name.as_deref(),
                    c.bytes.change,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (ChunkStatus::Added, "assets/new-EEEE5555.js", None, None),
                (
                    ChunkStatus::Grown,
                    "assets/index-DDDD4444.js",
                    Some("assets/index-AAAA1111.js"),
                    Some(200)
                ),
                (ChunkStatus::Removed, "assets/old-CCCC3333.js", None, None),
                (ChunkStatus::Shrunk, "robots.js", None, Some(-1)),
            ]
        );
    }

    #[test]
    fn deltas() {
        let d = Delta::new(Some(800), Some(1000));
        assert_eq!((d.change, d.percent), (Some(200), Some(25.0)));
        assert_eq!(Delta::new(None, Some(5)).change, None);
        assert_eq!(Delta::new(Some(0), Some(5)).percent, None);
    }
}
