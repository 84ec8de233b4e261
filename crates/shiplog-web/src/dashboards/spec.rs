//! Dashboard files: `dashboards/<name>.toml`, parsed panel by panel so that one broken
//! panel names itself (file and panel) and the others still serve.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a panel is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    Line,
    Area,
    Bar,
    StackedBar,
    Table,
    Stat,
    /// Markers on lanes over time (x = time, lane, status[, label]).
    Timeline,
}

impl ChartKind {
    pub fn is_chart(self) -> bool {
        !matches!(self, ChartKind::Table | ChartKind::Stat)
    }
}

/// The DORA metric a stat panel computes a performance level for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dora {
    /// Production deploys per day.
    DeploymentFrequency,
    /// Hours from the first build of a commit to its successful production deploy.
    LeadTime,
    /// Ratio of production deployments that failed or were rolled back.
    ChangeFailureRate,
    /// Hours from a failed deploy to the next successful one.
    TimeToRestore,
}

/// Good / warning limits of a metric. Lower is better unless `higher_is_better`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub good: f64,
    pub warning: f64,
    #[serde(default)]
    pub higher_is_better: bool,
}

impl Band {
    pub fn status(&self, v: f64) -> Status {
        if self.higher_is_better {
            if v >= self.good {
                Status::Good
            } else if v >= self.warning {
                Status::Warning
            } else {
                Status::Bad
            }
        } else if v <= self.good {
            Status::Good
        } else if v <= self.warning {
            Status::Warning
        } else {
            Status::Bad
        }
    }
}

/// A threshold status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    None,
    Good,
    Warning,
    Bad,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::None => "none",
            Status::Good => "good",
            Status::Warning => "warning",
            Status::Bad => "bad",
        }
    }
}

/// One panel of a dashboard file (`[[panels]]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PanelSpec {
    /// Stable id (JSON); defaults to the title in snake case.
    #[serde(default)]
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// One read statement over the views; placeholders in `{braces}` (see `engine`).
    pub sql: String,
    pub kind: ChartKind,
    /// `s`, `ms`, `bytes`, `usd`, `percent`, `ratio`, `count`, `tokens`, `hours`, `per_day`.
    #[serde(default)]
    pub unit: Option<String>,
    /// Y axis description (defaults from the unit).
    #[serde(default)]
    pub y_label: Option<String>,
    /// Threshold metric looked up in the config (`build_duration_s`, …).
    #[serde(default)]
    pub metric: Option<String>,
    /// Thresholds used when the config has none for `metric`.
    #[serde(default)]
    pub thresholds: Option<Band>,
    /// `full`, `half`, `third`, `quarter`.
    #[serde(default)]
    pub width: Option<String>,
    #[serde(default)]
    pub dora: Option<Dora>,
    /// Table columns colored by a threshold metric: `{ duration_s = "build_duration_s" }`.
    #[serde(default)]
    pub status_columns: BTreeMap<String, String>,
    /// Text shown when the query returns no rows.
    #[serde(default)]
    pub empty: Option<String>,
}

/// A parsed dashboard: its good panels and the errors of the broken ones.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    pub name: String,
    pub title: String,
    pub description: Option<String>,
    /// Where it came from: `built-in dashboards/x.toml` or a path.
    pub file: String,
    /// Position in the navigation (lower first); absent: not in the navigation.
    pub nav: Option<i64>,
    pub panels: Vec<Result<PanelSpec, String>>,
    /// An error of the whole file (syntax): no panels.
    pub error: Option<String>,
}

/// Valid dashboard names: 1-64 of `a-z 0-9 _ -`, starting with a letter or digit. No dots or
/// slashes, so a name can never leave the dashboards folder.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

fn snake(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Parses one file. Never fails: errors are kept in the result, naming file and panel.
pub fn parse(name: &str, file: &str, text: &str) -> Dashboard {
    let mut d = Dashboard {
        name: name.to_string(),
        title: name.to_string(),
        description: None,
        file: file.to_string(),
        nav: None,
        panels: Vec::new(),
        error: None,
    };
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            d.error = Some(format!("{file}: {}", e.to_string().trim()));
            return d;
        }
    };
    for (k, v) in &table {
        match (k.as_str(), v) {
            ("title", toml::Value::String(s)) => d.title = s.clone(),
            ("description", toml::Value::String(s)) => d.description = Some(s.clone()),
            ("nav", toml::Value::Integer(i)) => d.nav = Some(*i),
            ("panels", toml::Value::Array(_)) => {}
            _ => {
                d.error = Some(format!(
                    "{file}: unknown or mistyped top-level key `{k}` (expected title, description, nav, [[panels]])"
                ));
                return d;
            }
        }
    }
    let panels = match table.get("panels") {
        Some(toml::Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    for (i, p) in panels.into_iter().enumerate() {
        let label = p
            .get("title")
            .and_then(|t| t.as_str())
            .map(|t| format!("panel {} \"{t}\"", i + 1))
            .unwrap_or_else(|| format!("panel {}", i + 1));
        let parsed: Result<PanelSpec, String> = p
            .try_into()
            .map_err(|e: toml::de::Error| format!("{file}, {label}: {}", e.to_string().trim()))
            .and_then(|mut spec: PanelSpec| {
                if spec.id.is_empty() {
                    spec.id = snake(&spec.title);
                }
                crate::dashboards::engine::check_placeholders(&spec.sql)
                    .map_err(|e| format!("{file}, {label}: {e}"))?;
                if let Some(w) = &spec.width {
                    if !matches!(w.as_str(), "full" | "half" | "third" | "quarter") {
                        return Err(format!(
                            "{file}, {label}: width = {w:?} (expected full, half, third or quarter)"
                        ));
                    }
                }
                Ok(spec)
            });
        d.panels.push(parsed);
    }
    d
}

/// The built-in dashboards, compiled into the binary.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "overview",
        include_str!("../../../../dashboards/overview.toml"),
    ),
    ("builds", include_str!("../../../../dashboards/builds.toml")),
    (
        "deploys",
        include_str!("../../../../dashboards/deploys.toml"),
    ),
    (
        "migrations",
        include_str!("../../../../dashboards/migrations.toml"),
    ),
    ("costs", include_str!("../../../../dashboards/costs.toml")),
    (
        "decisions",
        include_str!("../../../../dashboards/decisions.toml"),
    ),
    (
        "deployment",
        include_str!("../../../../dashboards/deployment.toml"),
    ),
];

/// The dashboards: the built-ins, then every `*.toml` of `dir` (adds, or overrides by name).
/// Files with invalid names are skipped with a warning.
pub fn load_all(dir: Option<&std::path::Path>) -> BTreeMap<String, Dashboard> {
    let mut out = BTreeMap::new();
    for (name, text) in BUILTIN {
        out.insert(
            name.to_string(),
            parse(name, &format!("built-in dashboards/{name}.toml"), text),
        );
    }
    let Some(dir) = dir else { return out };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read dashboards_dir");
            return out;
        }
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        if !valid_name(&name) {
            tracing::warn!(file = %path.display(), "skipping dashboard: name must be a-z, 0-9, _ or -");
            continue;
        }
        let file = path.display().to_string();
        let d = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&name, &file, &text),
            Err(e) => {
                let mut d = parse(&name, &file, "");
                d.error = Some(format!("{file}: {e}"));
                d
            }
        };
        if let Some(e) = &d.error {
            tracing::error!(dashboard = %name, "{e}");
        }
        for e in d.panels.iter().filter_map(|p| p.as_ref().err()) {
            tracing::error!(dashboard = %name, "{e}");
        }
        // A folder dashboard keeps the navigation slot of the built-in it overrides.
        let nav = out.get(&name).and_then(|b: &Dashboard| b.nav);
        let mut d = d;
        if d.nav.is_none() {
            d.nav = nav.or(Some(100));
        }
        out.insert(name, d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_without_errors() {
        for (name, d) in load_all(None) {
            assert!(d.error.is_none(), "{name}: {:?}", d.error);
            for p in &d.panels {
                assert!(p.is_ok(), "{name}: {:?}", p.as_ref().err());
            }
            assert!(!d.panels.is_empty(), "{name} has no panels");
        }
    }

    #[test]
    fn names_and_errors() {
        assert!(valid_name("builds") && valid_name("team-a_2"));
        for bad in ["", "../etc", "a/b", "a.b", "-x", "Builds", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        let d = parse(
            "x",
            "x.toml",
            "title = \"X\"\n[[panels]]\ntitle = \"Good\"\nsql = \"SELECT 1\"\nkind = \"stat\"\n\
             [[panels]]\ntitle = \"Broken\"\nsql = \"SELECT 1\"\nkind = \"pie\"\n\
             [[panels]]\ntitle = \"Bad placeholder\"\nsql = \"SELECT {nope}\"\nkind = \"stat\"\n",
        );
        assert!(d.panels[0].is_ok());
        let e = d.panels[1].as_ref().unwrap_err();
        assert!(
            e.contains("x.toml") && e.contains("\"Broken\"") && e.contains("pie"),
            "{e}"
        );
        let e = d.panels[2].as_ref().unwrap_err();
        assert!(e.contains("{nope}"), "{e}");
        let d = parse("y", "y.toml", "title = [");
        assert!(d.error.unwrap().contains("y.toml"));
    }

    #[test]
    fn bands() {
        let b = Band {
            good: 60.0,
            warning: 120.0,
            higher_is_better: false,
        };
        assert_eq!(b.status(59.0), Status::Good);
        assert_eq!(b.status(100.0), Status::Warning);
        assert_eq!(b.status(121.0), Status::Bad);
    }
}
