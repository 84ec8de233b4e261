//! The data directory: its layout and the lock that keeps two writers out of it.
//!
//! ```text
//! <data_dir>/
//!   .lock          flock()ed by the process that writes (serve, replay); holds its pid
//!   log/           the segmented file log (shiplog-log)
//!   parquet/       the projections (shiplog-store), rebuildable from log/
//! ```

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// An exclusive lock on a data directory, released when dropped (or when the process dies:
/// the kernel drops flock locks with the file descriptor, so a kill -9 never leaves a stale
/// lock).
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path, what: &str) -> Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let path = data_dir.join(".lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            bail!(
                "data dir {} is in use by another shiplog process ({}); stop it first",
                data_dir.display(),
                if holder.is_empty() { "unknown" } else { holder }
            );
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        write!(file, "{what}, pid {}", std::process::id())?;
        file.flush()?;
        Ok(DataDirLock { _file: file })
    }
}

pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}
