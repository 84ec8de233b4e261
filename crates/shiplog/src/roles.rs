//! `shiplog serve --role ingest|process|web|all`: which parts of the pipeline a node runs.
//!
//! | role | HTTP ingest | projection (log → Parquet) | query, dashboards, rules |
//! |---|---|---|---|
//! | `ingest` | yes | no | no |
//! | `process` | no | yes | no (health and metrics only) |
//! | `web` | no | no | yes, over the shared Parquet directory |
//! | `all` (default) | yes | yes | yes |
//!
//! Roles other than `all` need the Kafka log: the embedded log lives in one process's
//! (locked) data dir, so separate ingest and process nodes cannot share it.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// HTTP ingest only (events → log).
    Ingest,
    /// The projection only (log → Parquet); HTTP serves health and metrics.
    Process,
    /// Query, dashboards and rules over the shared Parquet directory.
    Web,
    /// Everything (the single-node default).
    #[default]
    All,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Process => "process",
            Role::Web => "web",
            Role::All => "all",
        }
    }

    /// Accepts `POST /v1/events`.
    pub fn ingests(self) -> bool {
        matches!(self, Role::Ingest | Role::All)
    }

    /// Runs the projection.
    pub fn projects(self) -> bool {
        matches!(self, Role::Process | Role::All)
    }

    /// Serves queries, dashboards and runs the rules.
    pub fn serves_web(self) -> bool {
        matches!(self, Role::Web | Role::All)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Middleware of nodes that do not ingest: `POST /v1/events` is 404 with a clear message.
pub async fn refuse_ingest(req: Request, next: Next) -> Response {
    if req.uri().path() == "/v1/events" {
        return shiplog_web::error_response(
            StatusCode::NOT_FOUND,
            "this node does not ingest events (serve --role process|web): send them to an ingest node",
        );
    }
    next.run(req).await
}
