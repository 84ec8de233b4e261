//! The two durable-filesystem mechanisms every shiplog crate uses, written once:
//!
//! - [`write_atomic`]: replace a state file so that a crash leaves the old or the new
//!   content, never a mix (temp file, fsync, rename, fsync of the directory);
//! - [`DirLock`]: an exclusive `flock` on a lock file, so that one process at a time writes
//!   a directory. The kernel drops the lock with the file descriptor, so a `kill -9` never
//!   leaves a stale lock behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The temporary name [`write_atomic`] writes before renaming: `<name>.tmp` beside `path`.
/// A crash may leave it behind; the next write replaces it, and an owner that lists its
/// directory may delete it (it was never committed).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes`, atomically and durably: see [`write_atomic_with`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Replaces `path` with what `write` writes, atomically and durably: the bytes go to
/// [`temp_path`] (through a 1 MiB buffer), which is fsynced, renamed over `path`, and the
/// directory fsynced. The parent directory must exist. On error the temp file is removed
/// and `path` is untouched.
pub fn write_atomic_with<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<T>,
) -> io::Result<T> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let value = write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory, making the creations, renames and deletions inside it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An exclusive advisory lock (`flock(LOCK_EX | LOCK_NB)`) on a lock file, held while the
/// value lives (or until the process dies). Two locks on the same file conflict even within
/// one process.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

/// Why [`DirLock::acquire`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another lock in this one) holds it; `holder` is the note it
    /// left with [`DirLock::set_holder`], if any.
    #[error("{path} is locked by {}", holder.as_deref().unwrap_or("another process"))]
    Held {
        path: PathBuf,
        holder: Option<String>,
    },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl DirLock {
    /// Locks `path` (created when missing; its directory must exist), without waiting.
    pub fn acquire(path: &Path) -> Result<DirLock, LockError> {
        let io_error = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_error)?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io_error(error));
            }
            let mut note = String::new();
            let _ = file.read_to_string(&mut note);
            let note = note.trim();
            return Err(LockError::Held {
                path: path.to_path_buf(),
                holder: (!note.is_empty()).then(|| note.to_string()),
            });
        }
        Ok(DirLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Replaces the lock file's content with `note` (who holds it: "shiplog serve, pid
    /// 123"), which a process that finds the lock held reads back.
    pub fn set_holder(&mut self, note: &str) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(note.as_bytes())?;
        self.file.flush()
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!temp_path(&path).exists());
        // A failing writer leaves the old content and no temp file.
        let err = write_atomic_with(&path, |w| {
            w.write_all(b"half")?;
            Err::<(), _>(io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!temp_path(&path).exists());
        assert_eq!(temp_path(&path), dir.path().join("state.json.tmp"));
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_note_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let mut first = DirLock::acquire(&path).unwrap();
        first.set_holder("test, pid 1").unwrap();
        match DirLock::acquire(&path) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder.as_deref(), Some("test, pid 1"))
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        DirLock::acquire(&path).unwrap();
    }
}
