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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Settings of `SHIPLOG_*` variables that are not config keys but are read by the binary.
    const NON_CONFIG: [&str; 4] = [
        "SHIPLOG_CONFIG",
        "SHIPLOG_LOG",
        "SHIPLOG_URL",
        "SHIPLOG_TOKEN",
    ];

    /// docker-compose.yml parses; every shiplog service's `SHIPLOG_*` settings, with the
    /// config file it mounts, load through the config loader (unknown keys are errors), and
    /// say the same thing the loader understood; the roles and flags are the CLI's.
    #[test]
    fn compose_file_parses_and_passes_only_settings_shiplog_reads() {
        use serde_yaml::Value;
        let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
        let mut doc: Value = serde_yaml::from_str(&text).unwrap();
        doc.apply_merge().unwrap(); // `<<: *shiplog` anchors
        let services = doc["services"].as_mapping().expect("services");
        let mut roles = Vec::new();
        let mut kafka_image = false;
        for (name, svc) in services {
            let name = name.as_str().unwrap();
            if svc["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("apache/kafka:"))
            {
                kafka_image = true;
            }
            let Some(cmd) = svc["command"].as_sequence() else {
                continue;
            };
            let cmd: Vec<&str> = cmd.iter().map(|v| v.as_str().unwrap()).collect();
            if cmd.first() != Some(&"serve") {
                continue;
            }
            let role = cmd
                .iter()
                .position(|a| *a == "--role")
                .map(|i| cmd[i + 1])
                .unwrap_or("all");
            let role = <Role as clap::ValueEnum>::from_str(role, false)
                .unwrap_or_else(|e| panic!("{name}: role {role}: {e}"));
            for a in &cmd[1..] {
                if a.starts_with("--") {
                    assert!(
                        ["--role", "--data-dir", "--listen"].contains(a),
                        "{name}: flag {a}"
                    );
                }
            }
            roles.push(role);
            let env: Vec<(String, String)> = svc["environment"]
                .as_mapping()
                .unwrap_or_else(|| panic!("{name}: environment is a mapping"))
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => panic!("{name}: {k:?} = {other:?}"),
                    };
                    (k.as_str().unwrap().to_string(), v)
                })
                .collect();
            for (k, _) in &env {
                if let Some(rest) = k.strip_prefix("SHIPLOG_") {
                    let short = ["LISTEN", "DATA_DIR", "DASHBOARDS_DIR"].contains(&rest);
                    assert!(
                        short || rest.contains("__") || NON_CONFIG.contains(&k.as_str()),
                        "{name}: {k} is not a setting shiplog reads"
                    );
                }
            }
            // the config file it mounts, mapped back into the repository
            let config_in_container = env
                .iter()
                .find(|(k, _)| k == "SHIPLOG_CONFIG")
                .map(|(_, v)| v.clone());
            let config_file = config_in_container.map(|c| {
                let vol = svc["volumes"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .filter_map(|v| v.as_str())
                    .find(|v| v.split(':').nth(1) == Some(c.as_str()))
                    .unwrap_or_else(|| panic!("{name}: {c} is not mounted"));
                repo().join(vol.split(':').next().unwrap())
            });
            let c = crate::config::load(config_file.as_deref(), &env)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(c.log.is_kafka(), "{name}: roles need the Kafka log");
            let kc = c.log.kafka_config().unwrap();
            assert_eq!(kc.brokers, "kafka:9092", "{name}");
            assert_eq!(c.server.listen.to_string(), "0.0.0.0:7070", "{name}");
            assert!(
                !c.tokens.is_empty(),
                "{name}: listening on 0.0.0.0 needs tokens"
            );
            if role.projects() || role.serves_web() {
                assert!(
                    c.log.consumer_group.is_some(),
                    "{name}: processors share the partitions in a consumer group"
                );
                assert_eq!(
                    c.server.data_dir,
                    Path::new("/var/lib/shiplog/data"),
                    "{name}: processors and web nodes share the Parquet volume"
                );
                let vols: Vec<&str> = svc["volumes"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect();
                assert!(
                    vols.contains(&"shiplog-data:/var/lib/shiplog/data"),
                    "{name}"
                );
            }
        }
        assert!(kafka_image, "the official apache/kafka image");
        let count = |r: Role| roles.iter().filter(|x| **x == r).count();
        assert_eq!(
            (count(Role::Ingest), count(Role::Process), count(Role::Web)),
            (2, 2, 1)
        );
        assert!(repo().join("Dockerfile").exists());
    }
}
