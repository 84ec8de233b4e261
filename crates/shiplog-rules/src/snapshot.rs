//! A snapshot of the rules state and of the log positions it covers, so that a start reads
//! only what the log got since, not the whole log (docs/rules.md, "State and memory").
//!
//! It is a cache of the log, never a second source of truth: the state it holds is the one
//! the engine had built from the log up to `positions` (plus its own decisions, which are
//! in the log too and applying them again changes nothing). A start uses it only when
//! - it was written by this version, for the same rollback rules, `history` and `catch_up`
//!   (the fingerprint; other rules would have kept other samples);
//! - the log still holds, at each position, the very record the snapshot saw last there
//!   (its SHA-256): a log deleted, replaced or migrated is not mistaken for the same one;
//! - it decodes.
//!
//! Otherwise the engine rebuilds its state from the whole log, as without a snapshot. The
//! file is replaced atomically (temporary file, fsync, rename, fsync of the directory), so
//! a crash leaves the previous snapshot or the new one, never a torn one.

use crate::state::{Retention, State, StateImage};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shiplog_log::{Log, Offset, Partition};
use std::path::Path;
use std::time::Duration;

/// The snapshot's file name in the state directory.
pub const FILE: &str = "state.json";
/// 2: samples carry counts, deployments their costs and whether they were judged degraded.
const VERSION: u32 = 2;

/// Where the state stands in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub partition: Partition,
    /// The next offset to read.
    pub offset: Offset,
    /// The last record read (offset and SHA-256 of its value), to recognise the log.
    pub last: Option<(Offset, String)>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    fingerprint: String,
    taken_at: DateTime<Utc>,
    positions: Vec<Position>,
    state: StateImage,
}

/// SHA-256 (hex) of a record's value.
pub fn record_hash(value: &[u8]) -> String {
    hex::encode(Sha256::digest(value))
}

/// What a snapshot must have been taken with to be used: the version, the rollback rules
/// as the state sees them, `history` and `catch_up`.
pub fn fingerprint(retention: &Retention, catch_up: Duration) -> String {
    record_hash(format!("v{VERSION}|{}|catch_up={catch_up:?}", retention.describe()).as_bytes())
}

/// The bytes of a snapshot (built outside the state's lock).
pub(crate) fn encode(
    fingerprint: &str,
    positions: &[Position],
    state: StateImage,
) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&SnapshotFile {
        version: VERSION,
        fingerprint: fingerprint.to_string(),
        taken_at: Utc::now(),
        positions: positions.to_vec(),
        state,
    })
    .map_err(|e| e.to_string())
}

/// Replaces the snapshot in `dir` with `bytes`, atomically and durably.
pub fn write(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    shiplog_log::durable::write_atomic(&dir.join(FILE), bytes)
}

/// The lowest offset of each partition that a start from the snapshot in `dir` reads: the
/// record it saw last there (checked at start), or the next offset when it saw none. `None`
/// without a snapshot of this version. Log retention keeps these records (docs/operations.md).
pub fn covered(dir: &Path) -> Result<Option<Vec<(Partition, Offset)>>, String> {
    #[derive(Deserialize)]
    struct Positions {
        version: u32,
        positions: Vec<Position>,
    }
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let snap: Positions = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} does not decode: {e}", path.display()))?;
    Ok((snap.version == VERSION).then(|| {
        snap.positions
            .iter()
            .map(|p| (p.partition, p.last.as_ref().map_or(p.offset, |l| l.0)))
            .collect()
    }))
}

/// The state and positions saved in `dir`, if there is a snapshot and it may be used (see
/// the module's documentation); `Err` says why it is not used.
pub async fn load(
    dir: &Path,
    fingerprint: &str,
    retention: &Retention,
    log: &dyn Log,
) -> Result<(State, Vec<Position>), String> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("none yet".into()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let snap: SnapshotFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} does not decode: {e}", path.display()))?;
    if snap.version != VERSION || snap.fingerprint != fingerprint {
        return Err("it was taken with other rollback rules or settings".into());
    }
    let partitions = log.partitions();
    for p in &snap.positions {
        if !partitions.contains(&p.partition) || p.offset > log.end_offset(p.partition) {
            return Err(format!(
                "the log has no offset {} in partition {}",
                p.offset, p.partition
            ));
        }
        let Some((offset, hash)) = &p.last else {
            continue;
        };
        let same = match log.reader(p.partition, *offset) {
            Ok(mut r) => match r.next_batch(1, 1, Duration::from_millis(500)).await {
                Ok(batch) => batch
                    .first()
                    .is_some_and(|e| e.offset == *offset && record_hash(&e.value) == *hash),
                Err(_) => false,
            },
            Err(_) => false,
        };
        if !same {
            return Err(format!(
                "the log does not hold the record it saw at offset {offset} of partition {} \
                 (another log?)",
                p.partition
            ));
        }
    }
    Ok((
        State::from_image(snap.state, retention.clone()),
        snap.positions,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_names_the_last_record_seen_or_the_next_offset() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(covered(dir.path()).unwrap(), None);
        let positions = [
            Position {
                partition: 0,
                offset: 10,
                last: Some((9, record_hash(b"x"))),
            },
            Position {
                partition: 1,
                offset: 0,
                last: None,
            },
        ];
        let file = serde_json::json!({"version": VERSION, "fingerprint": "f", "positions": positions, "state": {}});
        write(dir.path(), file.to_string().as_bytes()).unwrap();
        assert_eq!(covered(dir.path()).unwrap(), Some(vec![(0, 9), (1, 0)]));
        let old = serde_json::json!({"version": VERSION - 1, "positions": positions});
        write(dir.path(), old.to_string().as_bytes()).unwrap();
        assert_eq!(covered(dir.path()).unwrap(), None);
        write(dir.path(), b"{").unwrap();
        assert!(covered(dir.path()).unwrap_err().contains("state.json"));
    }
}
