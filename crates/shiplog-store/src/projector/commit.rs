//! Committing (two-phase, after Arroyo's Parquet sink; the protocol is in the crate docs)
//! and recovery: the state file lists what a commit renames, deletes and expires; the
//! commit applies it, and opening a projector completes an interrupted one (roll forward)
//! and removes the temp files no commit lists.

use super::deadletter::DEAD_LETTER_DIR;
use super::layout::rel;
use super::{CrashPoint, ParquetProjector};
use crate::fsutil::{create_dir_durable, list_dir, remove_file_if_exists, sync_dir, IoAt};
use crate::state::State;
use crate::StoreError;
use shiplog_events::Kind;
use shiplog_log::Partition;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// One file written under its temp name, waiting for the commit.
pub(super) struct Staged {
    pub(super) tmp: PathBuf,
    pub(super) fin: PathBuf,
    pub(super) rows: u64,
    pub(super) bytes: u64,
    /// The log partition of a Parquet file's rows (`None`: dead letters, dedup keys).
    pub(super) partition: Option<Partition>,
}

impl ParquetProjector {
    /// Phase two of a flush: replaces the state file with the new offsets, the offsets
    /// committed without a row, and the renames of `staged`. From here the flush counts
    /// as done whatever happens ([`Self::rename_staged`] or recovery completes it).
    pub(super) fn commit_flush(&mut self, staged: &[Staged]) -> Result<(), StoreError> {
        let root = &self.root;
        let mut next = self.state.clone();
        next.offsets = self.buffered_next.clone();
        if let Some(absent) = &mut next.absent {
            // Offsets committed without a row: dead letters, damaged records, dropped
            // duplicates, gaps in the log's offsets.
            for (&part, &to) in &next.offsets {
                let from = self.state.offsets.get(&part).copied().unwrap_or(0);
                let rows: u64 = staged
                    .iter()
                    .filter(|s| s.partition == Some(part))
                    .map(|s| s.rows)
                    .sum();
                *absent.entry(part).or_insert(0) += (to - from).saturating_sub(rows);
            }
        }
        next.renames = staged
            .iter()
            .map(|s| (rel(root, &s.tmp), rel(root, &s.fin)))
            .collect();
        next.deletes.clear();
        next.expire.clear();
        next.store(root)?;
        self.state = next;
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Phase three of a flush: the committed files renamed into place, their directories
    /// fsynced.
    pub(super) fn rename_staged(&mut self, staged: &[Staged]) -> Result<(), StoreError> {
        let mut dirs = BTreeSet::new();
        for (i, s) in staged.iter().enumerate() {
            if i == 1 {
                self.crash_point(CrashPoint::MidRenames)?;
            }
            fs::rename(&s.tmp, &s.fin).at(&s.fin)?;
            let dir = s.fin.parent().expect("file has a dir").to_path_buf();
            if s.partition.is_some() {
                self.touched.insert(dir.clone());
            }
            dirs.insert(dir);
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        Ok(())
    }

    /// Commits merged files (`renames`, temp to final) replacing their inputs (`deletes`)
    /// through the state file, then renames and deletes.
    pub(super) fn commit_replacements(
        &mut self,
        renames: Vec<(String, String)>,
        deletes: Vec<String>,
    ) -> Result<(), StoreError> {
        if renames.is_empty() {
            return Ok(());
        }
        self.crash_point(CrashPoint::AfterTempWrite)?;
        let mut next = self.state.clone();
        next.renames = renames;
        next.deletes = deletes;
        next.expire.clear();
        next.store(&self.root)?;
        self.state = next;
        self.crash_point(CrashPoint::AfterStateCommit)?;
        apply_pending(
            &self.root,
            &self.state,
            self.crash == Some(CrashPoint::MidRenames),
        )
    }
}

/// Recovery at open: loads the state, completes the renames, deletes and expiries of its
/// last commit (idempotent), removes every uncommitted temp file and the trash of an
/// interrupted expiry, and clears the completed lists.
pub(super) fn recover(root: &Path) -> Result<State, StoreError> {
    let _ = remove_file_if_exists(&root.join("_state.json.tmp"))?;
    let mut state = State::load(root)?;
    let had_pending =
        !state.renames.is_empty() || !state.deletes.is_empty() || !state.expire.is_empty();
    apply_pending(root, &state, false)?;
    remove_stray_temp_files(root)?;
    let trash = root.join("_trash");
    if trash.exists() {
        fs::remove_dir_all(&trash).at(&trash)?;
    }
    if had_pending {
        state.renames.clear();
        state.deletes.clear();
        state.expire.clear();
        state.store(root)?;
        tracing::info!(dir = %root.display(), "projection recovered: completed the last commit");
    }
    Ok(state)
}

pub(super) fn apply_pending(root: &Path, state: &State, crash_mid: bool) -> Result<(), StoreError> {
    let mut dirs = BTreeSet::new();
    let mut steps = 0;
    // Expired date directories: out of the views' globs atomically (a rename), then gone.
    for d in &state.expire {
        let dir = root.join(d);
        if dir.exists() {
            let trash = root.join("_trash");
            create_dir_durable(&trash)?;
            let to = trash.join(d.replace('/', "-"));
            if to.exists() {
                fs::remove_dir_all(&to).at(&to)?;
            }
            fs::rename(&dir, &to).at(&to)?;
            sync_dir(dir.parent().unwrap_or(root))?;
            fs::remove_dir_all(&to).at(&to)?;
        }
    }
    // Deletes first, then renames: a concurrent reader may miss a compacted day for a
    // moment but never counts it twice.
    for d in &state.deletes {
        if crash_mid && steps == 1 {
            return Err(StoreError::InjectedCrash(CrashPoint::MidRenames));
        }
        let p = root.join(d);
        if remove_file_if_exists(&p)? {
            dirs.insert(p.parent().unwrap_or(root).to_path_buf());
        }
        steps += 1;
    }
    for (tmp, fin) in &state.renames {
        if crash_mid && steps == 1 {
            return Err(StoreError::InjectedCrash(CrashPoint::MidRenames));
        }
        let (t, f) = (root.join(tmp), root.join(fin));
        if t.exists() {
            fs::rename(&t, &f).at(&f)?;
            dirs.insert(f.parent().unwrap_or(root).to_path_buf());
        } else if !f.exists() {
            // Deleted since (retention): nothing to do.
            tracing::debug!(file = %f.display(), "pending rename: neither temp nor final file exists");
        }
        steps += 1;
    }
    for d in dirs {
        sync_dir(&d)?;
    }
    Ok(())
}

/// Deletes `*.tmp` files of uncommitted writes in every kind's date directories and in
/// the dead-letter folder.
pub(super) fn remove_stray_temp_files(root: &Path) -> Result<(), StoreError> {
    for f in list_dir(&root.join(DEAD_LETTER_DIR))? {
        if f.extension().is_some_and(|e| e == "tmp") {
            tracing::info!(file = %f.display(), "removing uncommitted temp file");
            fs::remove_file(&f).at(&f)?;
        }
    }
    for kind in Kind::ALL {
        for dir in list_dir(&root.join(kind.as_str()))? {
            if !dir.is_dir() {
                continue;
            }
            for f in list_dir(&dir)? {
                if f.extension().is_some_and(|e| e == "tmp") {
                    tracing::info!(file = %f.display(), "removing uncommitted temp file");
                    fs::remove_file(&f).at(&f)?;
                }
            }
        }
    }
    Ok(())
}
