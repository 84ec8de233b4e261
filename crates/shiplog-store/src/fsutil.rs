//! Small filesystem helpers of the store, on top of [`shiplog_log::durable`] (the one
//! atomic replace and the one directory lock of every crate): errors that name the path,
//! durable directory creation, listing, and the projection directory's lock.

use crate::StoreError;
pub(crate) use shiplog_log::durable::DirLock;
use shiplog_log::durable::{self, LockError};
use std::fs;
use std::path::{Path, PathBuf};

pub(crate) trait IoAt<T> {
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoAt<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// fsyncs a directory, making renames and creations inside it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    durable::sync_dir(dir).at(dir)
}

/// Creates `dir` (and parents) and makes the new entries durable.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e).at(dir),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically ([`durable::write_atomic`]: temp file, fsync, rename,
/// fsync of the directory).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    durable::write_atomic(path, bytes).at(path)
}

/// Takes the exclusive lock of a projection directory, `<dir>/_lock`, held while the value
/// lives ([`DirLock`]); [`StoreError::Locked`] when another process or projector holds it.
pub(crate) fn lock_projection_dir(dir: &Path) -> Result<DirLock, StoreError> {
    DirLock::acquire(&dir.join("_lock")).map_err(|e| match e {
        LockError::Held { .. } => StoreError::Locked(dir.to_path_buf()),
        LockError::Io { path, source } => StoreError::Io { path, source },
    })
}

/// Lists the entries of a directory (empty when it does not exist), sorted by name.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(dir),
    };
    let mut out = Vec::new();
    for e in rd {
        out.push(e.at(dir)?.path());
    }
    out.sort();
    Ok(out)
}

pub(crate) fn remove_file_if_exists(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).at(path),
    }
}
