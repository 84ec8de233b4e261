//! shiplog rules: rollback-on-degradation, thresholds, budgets, migration alerts, and the
//! deploy gate. See `docs/rules.md`.
//!
//! The engine ([`RulesEngine`]) tails the log itself (not the Parquet projection, which
//! lags by its flush interval): on start it rebuilds its [`State`] (deployments, check
//! samples, migrations and the decisions it already wrote) from the log — from its
//! [`snapshot`] and the log after it when it has a usable one, else from the log's start —
//! then follows new records and a timer. The state is bounded whatever the log holds
//! ([`state::Retention`]). Rollback rules are judged on every relevant
//! record, so a decision comes within milliseconds of the sample that decides it.
//! Threshold and budget rules run on cron schedules over DuckDB.
//!
//! Guarantees:
//! - every verdict that changes state is a `decision` event in the log, written through the
//!   ingestor with a deterministic id (`rule/<name>/<deployment_id>/<verdict>`), so writing
//!   the same decision twice is deduplicated;
//! - a rollback's "started" decision is durable *before* its action runs; after a restart a
//!   started action is never run again (its outcome is recorded as interrupted);
//! - at most one rollback per deployment, a cooldown per project/env, never to a deployment
//!   that failed or was rolled back, dry-run per rule and globally;
//! - commands are argument vectors run without a shell; placeholders never add or split
//!   arguments.

pub mod action;
pub mod config;
pub mod engine;
pub mod snapshot;
pub mod state;

pub use config::{validate, Rule, RuleConfig, RuleKind, RulesSettings};
pub use engine::RulesEngine;
pub use state::{GateReport, State, SOURCE};
