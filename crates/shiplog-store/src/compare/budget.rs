//! `[[budgets]]` for builds: limits on the head build (bundle, gzip, a chunk, build time)
//! and on its growth against the base build, per project (or for every project).

use super::{Comparison, Delta};
use serde::{Deserialize, Serialize};

/// The build limits of one `[[budgets]]` entry (the config file gives `build_time` as a
/// duration; it arrives here in milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildBudget {
    /// The project it applies to; `None`: every project.
    pub project: Option<String>,
    /// Most total bytes of the head build's chunks and assets.
    pub bundle_bytes: Option<u64>,
    /// Most total gzip bytes.
    pub gzip_bytes: Option<u64>,
    /// Most bytes of any one chunk (of those `chunk` names).
    pub chunk_bytes: Option<u64>,
    /// Which chunks `chunk_bytes` applies to: a name with `*` wildcards matched against the
    /// chunk's name; `None`: every chunk.
    pub chunk: Option<String>,
    /// Longest build, in ms.
    pub duration_ms: Option<u64>,
    /// Most growth of the bundle and of its gzip size against the base build, in %.
    pub growth_percent: Option<f64>,
    /// Most growth of the build time against the base build, in %.
    pub build_growth_percent: Option<f64>,
}

impl BuildBudget {
    /// Whether the entry sets any build limit.
    pub fn is_set(&self) -> bool {
        self.bundle_bytes.is_some()
            || self.gzip_bytes.is_some()
            || self.chunk_bytes.is_some()
            || self.duration_ms.is_some()
            || self.growth_percent.is_some()
            || self.build_growth_percent.is_some()
    }

    fn applies_to(&self, project: &str) -> bool {
        self.project.as_deref().is_none_or(|p| p == project)
    }
}

/// One budget check and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetCheck {
    /// `bundle_bytes`, `gzip_bytes`, `chunk_bytes`, `duration_ms`, `bundle_growth_percent`,
    /// `gzip_growth_percent`, `build_growth_percent`.
    pub metric: String,
    /// The chunk a `chunk_bytes` check is about (the largest of those it covers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<String>,
    /// The budget's project (`None`: a budget for every project).
    pub project: Option<String>,
    pub limit: f64,
    /// The head build's value; `None` when it is unknown (no base build for a growth).
    pub value: Option<f64>,
    /// `None`: could not be judged (the value is unknown).
    pub passed: Option<bool>,
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

pub(super) fn checks(c: &Comparison, budgets: &[BuildBudget]) -> Vec<BudgetCheck> {
    let mut out = Vec::new();
    for b in budgets.iter().filter(|b| b.applies_to(&c.project)) {
        let mut check = |metric: &str, chunk: Option<String>, limit: f64, value: Option<f64>| {
            out.push(BudgetCheck {
                metric: metric.into(),
                chunk,
                project: b.project.clone(),
                limit,
                value,
                passed: value.map(|v| v <= limit),
            });
        };
        let head = |d: &Delta| d.head.map(|v| v as f64);
        if let Some(l) = b.bundle_bytes {
            check("bundle_bytes", None, l as f64, head(&c.bundle_bytes));
        }
        if let Some(l) = b.gzip_bytes {
            check("gzip_bytes", None, l as f64, head(&c.gzip_bytes));
        }
        if let Some(l) = b.chunk_bytes {
            let largest = c
                .head
                .chunks
                .iter()
                .filter(|ch| b.chunk.as_deref().is_none_or(|p| glob_match(p, &ch.name)))
                .max_by_key(|ch| ch.bytes);
            check(
                "chunk_bytes",
                largest.map(|ch| ch.name.clone()),
                l as f64,
                largest.map(|ch| ch.bytes as f64),
            );
        }
        if let Some(l) = b.duration_ms {
            check("duration_ms", None, l as f64, head(&c.duration_ms));
        }
        if let Some(l) = b.growth_percent {
            check("bundle_growth_percent", None, l, c.bundle_bytes.percent);
            check("gzip_growth_percent", None, l, c.gzip_bytes.percent);
        }
        if let Some(l) = b.build_growth_percent {
            check("build_growth_percent", None, l, c.duration_ms.percent);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("assets/index-*.js", "assets/index-Bx3k.js"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("*.js", "a/b.js"));
        assert!(!glob_match("*.js", "a/b.css"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXcYYb"));
        assert!(glob_match("exact.js", "exact.js"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
