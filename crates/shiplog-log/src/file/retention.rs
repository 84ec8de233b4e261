//! Retention: whole sealed segments removed, oldest first, and the `START` file that says
//! where the log begins.
//!
//! # The `START` file
//!
//! `START` in the log's directory holds one line, the offset the log starts at, in decimal
//! (`4096\n`). It is absent until retention first removes a segment: a log without it
//! starts at offset 0. It is replaced with [`crate::durable::write_atomic`] (temp file,
//! fsync, rename, fsync of the directory), so it always holds a whole number.
//!
//! # Removing segments, crash-safely
//!
//! [`SegmentedLog::apply_retention`] removes sealed segments oldest first while the
//! [`RetentionPolicy`] asks for it (the segment was last written longer ago than `max_age`,
//! or the log's bytes on disk exceed `max_bytes`) and the caller allows it: a segment is
//! removed only when every one of its offsets is below `keep_from` (the caller passes the
//! lowest offset something still needs: the projection's next offset, what the dedup and
//! rules snapshots cover). The active segment is never removed. In order:
//!
//! 1. `START` is replaced with the base offset of the first segment kept;
//! 2. the segment table drops the removed segments (new readers start at `START`);
//! 3. the files are deleted and the directory fsynced.
//!
//! A crash after (1) leaves files below `START`; [`SegmentedLog::open`] deletes every
//! segment file that lies entirely below `START` (and [`verify`](super::verify()) and
//! [`status`](super::status()) ignore them). A crash before (1) changes nothing. So the
//! log's start only ever moves forward, and never past a record someone still needs.
//!
//! Retention and the compressor never work at once (they share a lock), so a segment is
//! never removed while it is being compressed.
//!
//! # What readers see
//!
//! Offsets below `START` were removed on purpose: a reader asked to start below it starts
//! at `START` and reports nothing skipped ([`crate::LogReader::take_skipped`] is for damage),
//! [`crate::Log::damage`] does not list them, and `verify` names them as removed by
//! retention, not as missing. [`crate::Log::start_offset`] says where the log starts, so a
//! consumer that must account for every offset (replay, migrate-log) knows which offsets it
//! cannot get and why.
//!
//! # A segment's age
//!
//! A sealed segment's age is the time of its last write: its file's modification time
//! (the compressor gives a `.zseg` the `.seg`'s time). A segment restored from a backup
//! without its times looks newer, so it is kept longer, never removed early.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{lock, read_lock, write_lock, SegmentedLog};
use crate::durable::{sync_dir, write_atomic};
use crate::{LogError, Offset};

/// The file holding the offset the log starts at.
pub const START_FILE: &str = "START";

/// When sealed segments are removed ([`SegmentedLog::apply_retention`]). Both limits off
/// (the default) keep everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Remove sealed segments last written longer ago than this.
    pub max_age: Option<Duration>,
    /// Remove the oldest sealed segments while the log's segment files take more bytes on
    /// disk than this.
    pub max_bytes: Option<u64>,
}

impl RetentionPolicy {
    /// Whether the policy removes anything at all.
    pub fn is_enabled(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

/// What one [`SegmentedLog::apply_retention`] pass did and could not do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPass {
    /// Segments removed by this pass.
    pub removed_segments: u64,
    /// Their bytes on disk.
    pub removed_bytes: u64,
    /// The offsets they held (`start` before the pass .. `start` after it).
    pub removed: std::ops::Range<Offset>,
    /// Segments the policy asks to remove that were kept because they hold offsets at or
    /// past `keep_from` (not projected yet, or not covered by the snapshots), and their bytes.
    pub held_back_segments: u64,
    pub held_back_bytes: u64,
    /// When segments were held back: the lowest `keep_from` that would let the first of
    /// them go (the offset after its last record). Whoever needs less than that is what
    /// holds retention back.
    pub held_back_until: Option<Offset>,
    /// The log's start after the pass.
    pub start: Offset,
    /// Bytes of the segment files on disk after the pass.
    pub bytes: u64,
}

/// Reads `START` in `dir`: `None` when there is none (the log starts at offset 0).
pub fn read_start(dir: &Path) -> Result<Option<Offset>, LogError> {
    let path = dir.join(START_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    text.trim()
        .parse::<Offset>()
        .map(Some)
        .map_err(|_| LogError::Corrupt {
            location: path.display().to_string(),
            reason: format!(
                "it must hold the offset the log starts at, in decimal; it holds {:?}",
                text.chars().take(40).collect::<String>()
            ),
        })
}

/// Replaces `START` in `dir` (atomically and durably).
fn write_start(dir: &Path, start: Offset) -> io::Result<()> {
    write_atomic(&dir.join(START_FILE), format!("{start}\n").as_bytes())
}

/// Of segments sorted by base, the number that lie entirely below `start` (each one's
/// successor starts at or below it). The last segment never counts.
pub(super) fn below_start(bases: &[Offset], start: Offset) -> usize {
    bases.windows(2).take_while(|w| w[1] <= start).count()
}

/// Deletes the segment files of `segments` that lie entirely below `start` (left by a
/// crash during retention, see the module docs) and returns those that remain.
pub(super) fn remove_below_start(
    dir: &Path,
    segments: Vec<(Offset, std::path::PathBuf)>,
    start: Offset,
) -> Result<Vec<(Offset, std::path::PathBuf)>, LogError> {
    let bases: Vec<Offset> = segments.iter().map(|s| s.0).collect();
    let n = below_start(&bases, start);
    if n == 0 {
        return Ok(segments);
    }
    for (_, path) in &segments[..n] {
        tracing::info!(file = %path.display(), start, "removing a segment below the log's start (an interrupted retention pass)");
        fs::remove_file(path)?;
    }
    sync_dir(dir)?;
    Ok(segments[n..].to_vec())
}

/// The segments of the log in `dir` that a reader reads (read-only, for `verify` and
/// `status`): where the log starts, the segment files from there on, and the files an
/// interrupted retention pass left below the start (the next open deletes them).
#[allow(clippy::type_complexity)]
pub(super) fn live_segments(
    dir: &Path,
) -> Result<
    (
        Offset,
        Vec<(Offset, std::path::PathBuf)>,
        Vec<std::path::PathBuf>,
    ),
    LogError,
> {
    let start = read_start(dir)?.unwrap_or(0);
    let mut segments = super::format::list_segments(dir)?;
    let bases: Vec<Offset> = segments.iter().map(|s| s.0).collect();
    let n = below_start(&bases, start);
    let leftovers = segments.drain(..n).map(|s| s.1).collect();
    Ok((start, segments, leftovers))
}

/// The modification time of a segment file (its last write).
fn written_at(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl SegmentedLog {
    /// Removes sealed segments oldest first as `policy` asks, never one holding an offset
    /// at or past `keep_from`, and moves the log's start forward (crash-safely: see the
    /// module docs). `now` is the time segment ages are measured against.
    pub fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        keep_from: Offset,
        now: SystemTime,
    ) -> Result<RetentionPass, LogError> {
        let _maintenance = lock(&self.shared.maintenance);
        let (old_start, plan) = {
            let table = read_lock(&self.shared.table);
            let mut bytes: u64 = table.segments.iter().map(|s| s.disk_len).sum();
            let mut pass = RetentionPass {
                start: table.start,
                ..RetentionPass::default()
            };
            let mut remove = 0usize;
            let mut held = false;
            for (i, s) in table.segments.iter().enumerate() {
                let Some(next) = table.segments.get(i + 1) else {
                    break; // the active segment stays
                };
                let too_old = policy.max_age.is_some_and(|age| {
                    written_at(&s.path)
                        .is_some_and(|t| now.duration_since(t).is_ok_and(|d| d > age))
                });
                let too_big = policy.max_bytes.is_some_and(|max| bytes > max);
                if !too_old && !too_big {
                    break;
                }
                if held || next.base > keep_from {
                    // Needed still: this one and every later one the policy would take.
                    if !held {
                        pass.held_back_until = Some(next.base);
                    }
                    held = true;
                    pass.held_back_segments += 1;
                    pass.held_back_bytes += s.disk_len;
                    bytes = bytes.saturating_sub(s.disk_len);
                    continue;
                }
                remove = i + 1;
                pass.removed_segments += 1;
                pass.removed_bytes += s.disk_len;
                bytes -= s.disk_len;
            }
            (table.start, (remove, pass))
        };
        let (remove, mut pass) = plan;
        let removed: Vec<std::path::PathBuf> = if remove == 0 {
            Vec::new()
        } else {
            let new_start = read_lock(&self.shared.table).segments[remove].base;
            write_start(&self.dir, new_start)?;
            let mut table = write_lock(&self.shared.table);
            table.start = new_start;
            table.segments.drain(..remove).map(|s| s.path).collect()
        };
        for path in &removed {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
        }
        let table = read_lock(&self.shared.table);
        pass.start = table.start;
        pass.removed = old_start..table.start;
        pass.bytes = table.segments.iter().map(|s| s.disk_len).sum();
        if pass.removed_segments > 0 {
            tracing::info!(
                segments = pass.removed_segments,
                bytes = pass.removed_bytes,
                offsets = %format!("{}..{}", pass.removed.start, pass.removed.end),
                start = pass.start,
                "log retention removed sealed segments"
            );
        }
        Ok(pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_start_counts_only_whole_segments() {
        assert_eq!(below_start(&[0, 10, 20], 0), 0);
        assert_eq!(below_start(&[0, 10, 20], 10), 1);
        assert_eq!(below_start(&[0, 10, 20], 15), 1);
        assert_eq!(below_start(&[0, 10, 20], 20), 2);
        // The last segment is never below the start.
        assert_eq!(below_start(&[0, 10, 20], 99), 2);
        assert_eq!(below_start(&[5], 99), 0);
    }

    #[test]
    fn start_reads_back_and_names_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_start(dir.path()).unwrap(), None);
        write_start(dir.path(), 4096).unwrap();
        assert_eq!(read_start(dir.path()).unwrap(), Some(4096));
        fs::write(dir.path().join(START_FILE), "forty").unwrap();
        let e = read_start(dir.path()).unwrap_err().to_string();
        assert!(e.contains("START") && e.contains("forty"), "{e}");
    }
}
