//! The rules crate's errors, with variants a caller can act on.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RulesError {
    /// A configuration error: names the rule (`rules[2] (rollback-on-errors)`) and the key.
    #[error("{at}: {key}: {message}")]
    Config {
        at: String,
        key: String,
        message: String,
    },
    /// A webhook's secret variable is not set in the server's environment.
    #[error("rule {rule}: action.secret_env: environment variable {var} is not set")]
    MissingSecret { rule: String, var: String },
    /// A source header's secret variable is not set in the server's environment.
    #[error("rule {rule}: source.headers: environment variable {var} is not set")]
    MissingSourceSecret { rule: String, var: String },
    /// A decision could not be written to the log (it is retried).
    #[error("cannot write a decision: {0}")]
    Write(String),
    /// A decision the engine built is not a valid event (a bug).
    #[error("invalid decision event: {0}")]
    InvalidEvent(String),
    /// A scheduled rule's query failed or cannot run on this node.
    #[error("query: {0}")]
    Query(String),
    /// Reading the log failed.
    #[error("log: {0}")]
    Log(#[from] shiplog_log::LogError),
    /// The state snapshot could not be encoded or written.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

impl RulesError {
    pub(crate) fn config(at: &str, key: &str, message: impl Into<String>) -> RulesError {
        RulesError::Config {
            at: at.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = RulesError> = std::result::Result<T, E>;
