//! The projection's single commit point: `<data_dir>/parquet/_state.json`.

use crate::fsutil::{write_atomic, IoAt};
use crate::StoreError;
use serde::{Deserialize, Serialize};
use shiplog_log::{Offset, Partition};
use std::collections::BTreeMap;
use std::path::Path;

pub(crate) const STATE_FILE: &str = "_state.json";

/// What `_state.json` holds. Paths are relative to the parquet directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    /// Next log offset to project, per log partition: every offset below it is in exactly
    /// one committed file (or was skipped as undecodable).
    pub offsets: BTreeMap<Partition, Offset>,
    /// Renames (temp → final) of the last commit; recovery completes them.
    #[serde(default)]
    pub renames: Vec<(String, String)>,
    /// Files replaced by the last commit (compaction inputs); recovery deletes them.
    #[serde(default)]
    pub deletes: Vec<String>,
    /// Date directories expired by the last commit (retention); recovery removes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expire: Vec<String>,
    /// Per partition, how many offsets below `offsets` are committed without a row in a
    /// Parquet file: dead letters (invalid entries, damaged log records), dropped
    /// duplicates, gaps in the log's offsets, rows deleted by retention. So the rows on
    /// disk of a partition plus this equal its offset — the check that finds a Parquet
    /// file deleted by hand. `None` in a state written before this was counted (until the
    /// next replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent: Option<BTreeMap<Partition, u64>>,
}

impl State {
    pub(crate) fn load(root: &Path) -> Result<State, StoreError> {
        let path = root.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptState {
                path: path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: 1,
                absent: Some(BTreeMap::new()),
                ..State::default()
            }),
            Err(e) => Err(e).at(&path),
        }
    }

    pub(crate) fn store(&self, root: &Path) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        write_atomic(&root.join(STATE_FILE), &bytes)
    }
}
