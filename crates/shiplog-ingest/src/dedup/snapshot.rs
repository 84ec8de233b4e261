//! The dedup snapshot file (version 1).
//!
//! So that a start need not read the whole log, `serve` keeps a snapshot of the committed
//! keys in `<data_dir>/dedup/index.snap` ([`write_snapshot_file`], [`read_snapshot_file`]).
//! It is a cache of the log, never a second source of truth: it is used only when it checks
//! out against the log (see `Ingestor::restore_dedup`), else the log is read whole. All
//! integers are little-endian:
//!
//! ```text
//! magic "SHPLGDDX" 8 bytes | version u32 = 1 | reserved u32 = 0
//! window_secs u64          | written_at i64 (unix seconds, informative)
//! partitions u32, then per partition:
//!     partition u32 | last_crc u32 | covered u64
//! runs u32, then per run (oldest first):
//!     newest i64 (receive time, unix seconds)
//!     firsts u32, then per partition: partition u32 | offset u64
//!     count u64 | count keys u64, strictly ascending
//! crc u32: CRC32C (Castagnoli, as the log's frames) of every byte before it; the file ends there
//! ```
//!
//! - `covered` is the partition's log offset the keys cover: every record below it that was
//!   received within the window has its key in a run (unless the cap evicted it), and no run
//!   holds a key whose record is at or above it. Pending keys are never written.
//! - `last_crc` is the CRC32C of the key and value of the record at `covered - 1` (0 when
//!   `covered` is 0): a log truncated and written again past `covered` is not mistaken for
//!   the one the snapshot saw.
//! - A run's `firsts` give, per partition, the lowest offset of a record whose key it
//!   holds: a start checks the log for damage from there up to `covered` (a key whose
//!   record was damaged since must not count as stored), not below.
//! - The recent hash set is written as one more run.
//!
//! The file is replaced atomically: written to `index.snap.tmp.<pid>`, fsynced, renamed,
//! and the directory fsynced, so a crash leaves the previous snapshot or the new one.

use std::collections::HashSet;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::index::{Image, Sealed};
use super::{Firsts, Key};

/// The snapshot's file name in its directory (`<data_dir>/dedup/`).
pub const SNAPSHOT_FILE: &str = "index.snap";
const MAGIC: &[u8; 8] = b"SHPLGDDX";
const VERSION: u32 = 1;

/// What a snapshot covers in one log partition (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    pub partition: u32,
    /// Every committed key of the records below this offset is in the snapshot, and no key
    /// of a record at or above it.
    pub offset: u64,
    /// CRC32C of the key and value of the record at `offset - 1` (0 when `offset` is 0).
    pub last_crc: u32,
}

/// CRC32C of a log record as [`Covered::last_crc`] holds it.
pub fn record_crc(key: &[u8], value: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), value)
}

/// A snapshot read back from its file.
pub struct Snapshot {
    pub window_secs: u64,
    pub written_at: i64,
    pub covered: Vec<Covered>,
    pub(super) runs: Vec<Sealed>,
}

impl Snapshot {
    /// Keys it holds.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r.keys.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The runs as (newest receive time, sorted keys), oldest first.
    pub fn runs(&self) -> impl Iterator<Item = (i64, &[Key])> {
        self.runs.iter().map(|r| (r.newest, r.keys.as_slice()))
    }

    /// The lowest offset of `partition` whose record's key the snapshot may hold (`None`
    /// when it holds none there): below it, the log does not matter to the snapshot.
    pub fn first_offset(&self, partition: u32) -> Option<u64> {
        self.runs
            .iter()
            .flat_map(|r| &r.firsts)
            .filter(|(p, _)| *p == partition)
            .map(|(_, offset)| *offset)
            .min()
    }
}

/// Why a snapshot file cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it is not a dedup snapshot (bad magic)")]
    BadMagic,
    #[error("it has version {0}; this build reads version {VERSION}")]
    Version(u32),
    #[error("it is truncated")]
    Truncated,
    #[error("its CRC32C does not match (stored {stored:08x}, computed {computed:08x})")]
    Crc { stored: u32, computed: u32 },
    #[error("it is malformed: {0}")]
    Malformed(String),
}

/// Writes a snapshot of `image` to `w`: the keys of `exclude` are left out (keys committed
/// for records above `covered`), and the recent keys are sorted here. Returns the keys
/// written.
pub fn write_snapshot(
    w: impl Write,
    window_secs: u64,
    written_at: i64,
    covered: &[Covered],
    mut image: Image,
    exclude: &HashSet<Key>,
) -> std::io::Result<u64> {
    let mut w = CrcWrite { inner: w, crc: 0 };
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    w.write_all(&0u32.to_le_bytes())?;
    w.write_all(&window_secs.to_le_bytes())?;
    w.write_all(&written_at.to_le_bytes())?;
    w.write_all(&(covered.len() as u32).to_le_bytes())?;
    for c in covered {
        w.write_all(&c.partition.to_le_bytes())?;
        w.write_all(&c.last_crc.to_le_bytes())?;
        w.write_all(&c.offset.to_le_bytes())?;
    }
    image.recent.retain(|k| !exclude.contains(k));
    image.recent.sort_unstable();
    // Each run with the keys it must leave out (few: only the keys of appends that finished
    // out of order, so a run is searched for each of them rather than filtered key by key).
    let mut runs: Vec<(i64, &Firsts, &[Key], Vec<Key>)> = image
        .runs
        .iter()
        .map(|r| {
            let mut skip: Vec<Key> = exclude.iter().copied().filter(|k| r.contains(*k)).collect();
            skip.sort_unstable();
            (r.newest, &r.firsts, r.keys.as_slice(), skip)
        })
        .collect();
    if !image.recent.is_empty() {
        runs.push((
            image.recent_newest,
            &image.recent_firsts,
            &image.recent,
            Vec::new(),
        ));
    }
    runs.retain(|(_, _, keys, skip)| keys.len() > skip.len());
    w.write_all(&(runs.len() as u32).to_le_bytes())?;
    let mut written = 0u64;
    let mut buf = Vec::with_capacity(1 << 16);
    for (newest, firsts, keys, skip) in &runs {
        let count = (keys.len() - skip.len()) as u64;
        w.write_all(&newest.to_le_bytes())?;
        w.write_all(&(firsts.len() as u32).to_le_bytes())?;
        for (partition, offset) in firsts.iter() {
            w.write_all(&partition.to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
        }
        w.write_all(&count.to_le_bytes())?;
        let mut skip = skip.iter().peekable();
        for chunk in keys.chunks(8192) {
            buf.clear();
            for &k in chunk {
                if skip.peek() == Some(&&k) {
                    skip.next();
                    continue;
                }
                buf.extend_from_slice(&k.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        written += count;
    }
    let crc = w.crc;
    w.inner.write_all(&crc.to_le_bytes())?;
    w.inner.flush()?;
    Ok(written)
}

/// Replaces `<dir>/index.snap` atomically and durably (temporary file, fsync, rename, fsync
/// of the directory). Returns the keys and bytes written.
pub fn write_snapshot_file(
    dir: &Path,
    window_secs: u64,
    covered: &[Covered],
    image: Image,
    exclude: &HashSet<Key>,
) -> std::io::Result<(u64, u64)> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp.{}", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let written_at = chrono::Utc::now().timestamp();
        let keys = write_snapshot(&mut w, window_secs, written_at, covered, image, exclude)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        drop(file);
        std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok((keys, bytes))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a snapshot of `len` bytes from `r`, checking its magic, version, structure and
/// CRC32. Nothing of it may be used unless this returns `Ok`.
pub fn read_snapshot(r: impl Read, len: u64) -> Result<Snapshot, SnapshotError> {
    let mut r = CrcRead {
        inner: r,
        crc: 0,
        left: len,
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let _reserved = r.u32()?;
    let window_secs = r.u64()?;
    let written_at = r.u64()? as i64;
    let partitions = r.count(16)?;
    let mut covered = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        let partition = r.u32()?;
        let last_crc = r.u32()?;
        let offset = r.u64()?;
        if covered.iter().any(|c: &Covered| c.partition == partition) {
            return Err(SnapshotError::Malformed(format!(
                "partition {partition} listed twice"
            )));
        }
        covered.push(Covered {
            partition,
            offset,
            last_crc,
        });
    }
    let count = r.count(20)?;
    let mut runs = Vec::with_capacity(count as usize);
    let mut buf = vec![0u8; 8 << 13];
    for run in 0..count {
        let newest = r.u64()? as i64;
        let nfirsts = r.count(12)?;
        let mut firsts = Vec::with_capacity(nfirsts as usize);
        for _ in 0..nfirsts {
            let partition = r.u32()?;
            firsts.push((partition, r.u64()?));
        }
        let n = r.u64()?;
        if n.checked_mul(8).is_none_or(|b| b > r.left) {
            return Err(SnapshotError::Truncated);
        }
        let mut keys = Vec::with_capacity(n as usize);
        let mut left = n as usize;
        while left > 0 {
            let take = left.min(buf.len() / 8);
            r.read_exact(&mut buf[..take * 8])?;
            for b in buf[..take * 8].chunks_exact(8) {
                let k = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                if keys.last().is_some_and(|&last| last >= k) {
                    return Err(SnapshotError::Malformed(format!(
                        "the keys of run {run} are not strictly ascending"
                    )));
                }
                keys.push(k);
            }
            left -= take;
        }
        runs.push(Sealed::from_sorted(keys, newest, firsts));
    }
    let computed = r.crc;
    let mut stored = [0u8; 4];
    r.read_exact(&mut stored)?;
    let stored = u32::from_le_bytes(stored);
    if r.left != 0 {
        return Err(SnapshotError::Malformed(format!(
            "{} bytes after the CRC",
            r.left
        )));
    }
    if stored != computed {
        return Err(SnapshotError::Crc { stored, computed });
    }
    Ok(Snapshot {
        window_secs,
        written_at,
        covered,
        runs,
    })
}

/// Reads `<dir>/index.snap`: `Ok(None)` when there is none. Temporary files of a write a
/// crash interrupted are deleted.
pub fn read_snapshot_file(dir: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        let prefix = format!("{SNAPSHOT_FILE}.tmp.");
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let file = match std::fs::File::open(dir.join(SNAPSHOT_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    read_snapshot(BufReader::with_capacity(1 << 20, file), len).map(Some)
}

struct CrcWrite<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for CrcWrite<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly the bytes a snapshot says it has (`left` of the file's length), hashing
/// them; running out is [`SnapshotError::Truncated`].
struct CrcRead<R> {
    inner: R,
    crc: u32,
    left: u64,
}

impl<R: Read> CrcRead<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        if buf.len() as u64 > self.left {
            return Err(SnapshotError::Truncated);
        }
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
            _ => SnapshotError::Io(e),
        })?;
        self.left -= buf.len() as u64;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A u32 count of items of at least `each` bytes; `Truncated` when what is left of the
    /// file cannot hold them (so a damaged count never allocates).
    fn count(&mut self, each: u64) -> Result<u64, SnapshotError> {
        let n = self.u32()? as u64;
        if n * each > self.left {
            return Err(SnapshotError::Truncated);
        }
        Ok(n)
    }
}
