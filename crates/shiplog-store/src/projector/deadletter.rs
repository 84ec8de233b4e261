//! Dead letters: log entries that are not valid events, and ranges of log records lost to
//! damage in the log, kept in `_deadletter/` as NDJSON and committed with the flush that
//! met them, so every offset is accounted for (a row, or a dead letter).

use super::commit::Staged;
use crate::fsutil::{create_dir_durable, IoAt};
use crate::StoreError;
use shiplog_log::{LogEntry, Partition, SkippedRange};
use std::fs;
use std::path::Path;

/// Entries that are not valid events, kept aside in `_deadletter/` as NDJSON
/// (`{"partition", "offset", "error", "value"}`), committed with the flush that skipped
/// them so a replay writes the same files again.
#[derive(Default)]
pub(super) struct DeadLetters {
    pub(super) count: u64,
    first: Option<(Partition, u64)>,
    ndjson: Vec<u8>,
}

/// Folder of the dead-letter files, under the Parquet root.
pub const DEAD_LETTER_DIR: &str = "_deadletter";

impl DeadLetters {
    pub(super) fn push(&mut self, e: &LogEntry, reason: &str) {
        tracing::warn!(
            partition = e.partition,
            offset = e.offset,
            reason,
            "log entry is not a valid event; kept aside in _deadletter/"
        );
        self.count += 1;
        self.first.get_or_insert((e.partition, e.offset));
        let line = serde_json::json!({
            "partition": e.partition,
            "offset": e.offset,
            "error": reason,
            "value": String::from_utf8_lossy(&e.value),
        });
        serde_json::to_writer(&mut self.ndjson, &line).expect("JSON to a Vec");
        self.ndjson.push(b'\n');
    }

    /// A range of records lost to damage in the log: one line with `offset` (the first),
    /// `end` (after the last), `count`, `error` and `location` (segment, byte range).
    pub(super) fn push_lost(&mut self, r: &SkippedRange) {
        let count = r.end - r.first;
        self.count += count;
        self.first.get_or_insert((r.partition, r.first));
        let line = serde_json::json!({
            "partition": r.partition,
            "offset": r.first,
            "end": r.end,
            "count": count,
            "error": format!("damaged log record{}: {}", if count == 1 { "" } else { "s" }, r.reason),
            "location": r.location,
        });
        serde_json::to_writer(&mut self.ndjson, &line).expect("JSON to a Vec");
        self.ndjson.push(b'\n');
    }

    pub(super) fn stage(self, root: &Path) -> Result<Option<Staged>, StoreError> {
        let Some((partition, offset)) = self.first else {
            return Ok(None);
        };
        let dir = root.join(DEAD_LETTER_DIR);
        create_dir_durable(&dir)?;
        let name = format!("p{partition}-{offset:012}-n{}.ndjson", self.count);
        let fin = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        let mut f = fs::File::create(&tmp).at(&tmp)?;
        std::io::Write::write_all(&mut f, &self.ndjson).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        Ok(Some(Staged {
            tmp,
            fin,
            rows: 0,
            bytes: self.ndjson.len() as u64,
            partition: None,
        }))
    }
}
