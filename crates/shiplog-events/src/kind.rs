use serde::{Deserialize, Serialize};

/// The kinds of event (PRODUCT.md, "Event kinds (v1)").
///
/// Serialized as the plain name (`build`, `api_cost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Build,
    Deploy,
    Migration,
    ApiCost,
    Check,
    /// Written by shiplog only (rules).
    Decision,
}

impl Kind {
    /// Every kind, in contract order.
    pub const ALL: [Kind; 6] = [
        Kind::Build,
        Kind::Deploy,
        Kind::Migration,
        Kind::ApiCost,
        Kind::Check,
        Kind::Decision,
    ];

    /// The kind's name in the envelope (`api_cost`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Build => "build",
            Kind::Deploy => "deploy",
            Kind::Migration => "migration",
            Kind::ApiCost => "api_cost",
            Kind::Check => "check",
            Kind::Decision => "decision",
        }
    }

    /// The DuckDB view that holds this kind (`builds`, `api_costs`, …).
    pub fn view_name(self) -> &'static str {
        match self {
            Kind::Build => "builds",
            Kind::Deploy => "deploys",
            Kind::Migration => "migrations",
            Kind::ApiCost => "api_costs",
            Kind::Check => "checks",
            Kind::Decision => "decisions",
        }
    }

    /// The plain name only (`build`), as in the envelope's `kind`.
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Accepts the plain name (`build`) and the CloudEvents type (`dev.shiplog.build.v1`),
    /// as in a CloudEvent's `type`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s.strip_prefix("dev.shiplog.") {
            Some(rest) => Kind::from_name(rest.strip_suffix(".v1")?),
            None => Kind::from_name(s),
        }
    }

    /// The CloudEvents `type` of this kind (`dev.shiplog.build.v1`).
    pub fn cloudevents_type(self) -> String {
        format!("dev.shiplog.{}.v1", self.as_str())
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
