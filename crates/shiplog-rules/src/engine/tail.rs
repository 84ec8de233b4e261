//! Following the log: each partition is read from where the state stands and the records
//! the state can use are decoded and handed to the main loop.

use super::Msg;
use crate::snapshot::{self, Position};
use crate::state::Retention;
use shiplog_events::{Event, Kind, RecordPeek};
use shiplog_log::{Log, LogError, Offset};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::error;

/// Decodes a record the state can use; `None` for one it would ignore (a build, a cost,
/// a check no rule reads: most of the log), found without decoding it fully. A record the
/// quick look cannot read is decoded fully.
pub(crate) fn decode_relevant(retention: &Retention, bytes: &[u8]) -> Option<Event> {
    if let Ok(p) = RecordPeek::of(bytes) {
        if let (Some(kind), Some(project)) = (
            p.kind.as_deref().and_then(Kind::from_name),
            p.project.as_deref(),
        ) {
            if !retention.may_apply(kind, project, p.env.as_deref(), p.data_name.as_deref()) {
                return None;
            }
        }
    }
    Event::from_json_bytes(bytes).ok()
}

/// Reads one partition from `from` (0, or where the snapshot stands) and forwards decoded
/// events (those the state can use) with the position after them; says when it reached the
/// end the log had at start.
pub(super) async fn forward(
    log: Arc<dyn Log>,
    partition: u32,
    from: Offset,
    retention: Retention,
    tx: mpsc::Sender<Msg>,
    shutdown: watch::Receiver<bool>,
) {
    let end_at_start = log.end_offset(partition);
    let mut reader = match log.reader(partition, from) {
        Ok(r) => r,
        Err(LogError::OutOfRange { start, .. }) => match log.reader(partition, start) {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "rules: cannot read the log");
                return;
            }
        },
        Err(e) => {
            error!(error = %e, "rules: cannot read the log");
            return;
        }
    };
    let mut caught_up = false;
    if end_at_start <= reader.position() {
        caught_up = true;
        if tx.send(Msg::CaughtUp).await.is_err() {
            return;
        }
    }
    loop {
        if *shutdown.borrow() {
            return;
        }
        let batch = match reader
            .next_batch(4096, 16 << 20, Duration::from_millis(250))
            .await
        {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "rules: log read failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Some(last) = batch.last() {
            let events: Vec<Event> = batch
                .iter()
                .filter_map(|e| decode_relevant(&retention, &e.value))
                .collect();
            let position = Position {
                partition,
                offset: reader.position(),
                last: Some((last.offset, snapshot::record_hash(&last.value))),
            };
            if tx.send(Msg::Events { events, position }).await.is_err() {
                return;
            }
        }
        if !caught_up && reader.position() >= end_at_start {
            caught_up = true;
            if tx.send(Msg::CaughtUp).await.is_err() {
                return;
            }
        }
    }
}
