//! shiplog rules: rollback-on-degradation, thresholds, budgets, migration alerts, and the
//! deploy gate. See `docs/rules.md`.
//!
//! - [`judge`]: the statistics, pure functions of samples and settings (no clock, no I/O):
//!   a group-sequential test with alpha spending by default, Mann-Whitney, the threshold;
//!   seeded simulations measure its error rates ([`judge::sim`]);
//! - [`config`]: the rules as a tagged enum per kind, validated into [`Rule`]s;
//! - [`state`]: what the rules know, rebuilt from the log and bounded;
//! - [`judgement`]: a deployment's samples and its baseline's, judged;
//! - [`engine`]: tails the log, plans ([`engine::plan`], no I/O), writes decisions, runs
//!   actions, runs the cron rules;
//! - [`decision`]: the decision record; [`action`]: argv commands and signed webhooks;
//! - [`backtest`]: the same judgement over the log without acting; [`snapshot`]: a
//!   start reads only the recent log.
//!
//! Guarantees:
//! - every verdict that changes state is a `decision` event in the log, written through the
//!   ingestor with a deterministic id (`rule/<name>/<deployment_id>/<verdict>`), so writing
//!   the same decision twice is deduplicated;
//! - a rollback's "started" decision is durable *before* its action runs; after a restart a
//!   started action is never run again (its outcome is recorded as interrupted);
//! - a rollback acts only on credible evidence: the false-rollback probability of a rule is
//!   at most `1 − confidence` over all the looks its window takes, and too little data is
//!   inconclusive, never a rollback;
//! - at most one rollback per deployment, a cooldown per project/env, never to a deployment
//!   that failed, was rolled back or was judged degraded; dry-run per rule and globally;
//! - commands are argument vectors run without a shell; placeholders never add or split
//!   arguments.

pub mod action;
pub mod backtest;
pub mod config;
mod cost;
pub mod decision;
pub mod engine;
pub mod error;
pub mod judge;
pub mod judgement;
pub mod snapshot;
pub mod source;
pub mod state;

pub use config::{validate, Rule, RuleConfig, RuleKind, RulesSettings};
pub use engine::RulesEngine;
pub use error::RulesError;
pub use state::{GateReport, State, SOURCE};
