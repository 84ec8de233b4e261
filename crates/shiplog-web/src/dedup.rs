//! The ingest dedup index: which `(source, id)` keys are stored (within the dedup window)
//! or being stored right now.
//!
//! Memory is the point of this design: a 7-day window can hold tens of millions of keys.
//! A key is a 64-bit fingerprint (xxh3 of `source`, a separator and `id`). Keys committed
//! recently go to a hash set; when that set reaches [`SEAL_AT`] keys, or the receive time
//! moves to the next bucket (a seventh of the window), it is *sealed* into a sorted array
//! of fingerprints with a small offset table over their top bits: 8 bytes per key plus
//! under 0.2 (the hash set costs about 16-20). A lookup probes the hash set, then each
//! sealed run (one or two cache lines each). A sealed run is dropped whole once its newest
//! key is older than the window, so a key is remembered for at least the window and at
//! most one bucket longer.
//!
//! The index is also capped at a number of keys ([`DEFAULT_MAX_KEYS`], `server.dedup_max_keys`):
//! a sustained high rate would otherwise make the window's keys outgrow memory (9k events/s
//! for 7 days is 5 billion keys). Past the cap the oldest sealed runs are forgotten early,
//! so the window effectively shortens; `/metrics` shows the keys evicted that way.
//!
//! Fingerprints can collide: a new event whose fingerprint equals a stored one within the
//! window would be answered as a duplicate. With N keys held the chance per new event is
//! N / 2^64 (about 5e-13 at 10 million keys).
//!
//! # Snapshot file (version 1)
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A dedup key: the 64-bit fingerprint of `source` and `id`.
pub type Key = u64;

/// The fingerprint of `(source, id)`.
pub fn dedup_key(source: &str, id: &str) -> Key {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(source.as_bytes());
    h.update(&[0xff]);
    h.update(id.as_bytes());
    h.digest()
}

/// Keys are already uniformly distributed hashes: hashing them again would only cost time.
#[derive(Default, Clone, Copy)]
pub struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Build = BuildHasherDefault<PreHashed>;

/// Keys in the recent set before it is sealed into a sorted run.
pub const SEAL_AT: usize = 1 << 20;

/// Default cap on the keys held: about 130 MiB of sealed runs.
pub const DEFAULT_MAX_KEYS: usize = 16_000_000;

/// A receiver that resolves to `Some(true)` once a pending append is durable.
pub type Pending = watch::Receiver<Option<bool>>;

pub enum Lookup<'a> {
    Absent,
    Committed,
    Pending(&'a Pending),
}

/// Where a committed key's record is in the log: partition and offset.
pub type RecordAt = (u32, u64);

/// Per partition, the lowest offset of a record whose key a run holds.
type Firsts = Vec<RecordAt>;

fn note_first(firsts: &mut Firsts, (partition, offset): RecordAt) {
    match firsts.iter_mut().find(|(p, _)| *p == partition) {
        Some((_, first)) => *first = (*first).min(offset),
        None => firsts.push((partition, offset)),
    }
}

/// A sealed run: sorted fingerprints and, for each value of their top `bits` bits, the
/// index of the first fingerprint with that prefix.
struct Sealed {
    newest: i64,
    firsts: Firsts,
    keys: Vec<Key>,
    bits: u32,
    starts: Vec<u32>,
}

impl Sealed {
    fn new(mut keys: Vec<Key>, newest: i64, firsts: Firsts) -> Sealed {
        keys.sort_unstable();
        keys.dedup();
        Self::from_sorted(keys, newest, firsts)
    }

    /// A run of keys already sorted and without repeats.
    fn from_sorted(mut keys: Vec<Key>, newest: i64, firsts: Firsts) -> Sealed {
        keys.shrink_to_fit();
        // About 8 keys per prefix, at most 2^16 prefixes.
        let bits = (keys.len() / 8).max(1).ilog2().min(16);
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut i = 0;
        for prefix in 0..=(1u64 << bits) {
            while i < keys.len() && Self::prefix(keys[i], bits) < prefix {
                i += 1;
            }
            starts.push(i as u32);
        }
        Sealed {
            newest,
            firsts,
            keys,
            bits,
            starts,
        }
    }

    fn prefix(key: Key, bits: u32) -> u64 {
        if bits == 0 {
            0
        } else {
            key >> (64 - bits)
        }
    }

    fn contains(&self, key: Key) -> bool {
        let p = Self::prefix(key, self.bits) as usize;
        let (a, b) = (self.starts[p] as usize, self.starts[p + 1] as usize);
        self.keys[a..b].contains(&key)
    }

    fn bytes(&self) -> usize {
        self.keys.capacity() * 8 + self.starts.capacity() * 4
    }
}

pub struct DedupIndex {
    /// Seconds of receive time per bucket (a seventh of the window).
    bucket: i64,
    pending: HashMap<Key, Pending, Build>,
    recent: HashSet<Key, Build>,
    /// Bucket of the recent set's keys, its newest receive time, and where their records
    /// start in the log.
    recent_bucket: i64,
    recent_newest: i64,
    recent_firsts: Firsts,
    /// Oldest first. Runs never change once sealed: a snapshot shares them.
    sealed: VecDeque<Arc<Sealed>>,
    sealed_keys: usize,
    max_keys: usize,
    /// Keys forgotten before the end of the window because of `max_keys`.
    pub evicted: u64,
}

impl DedupIndex {
    pub fn new(window: Duration) -> DedupIndex {
        DedupIndex {
            bucket: (window.as_secs() as i64 / 7).max(1),
            pending: HashMap::default(),
            recent: HashSet::default(),
            recent_bucket: i64::MIN,
            recent_newest: i64::MIN,
            recent_firsts: Vec::new(),
            sealed: VecDeque::new(),
            sealed_keys: 0,
            max_keys: DEFAULT_MAX_KEYS,
            evicted: 0,
        }
    }

    /// Caps the keys held (at least two sealed runs' worth are always kept).
    pub fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys;
    }

    pub fn lookup(&self, key: Key) -> Lookup<'_> {
        if let Some(rx) = self.pending.get(&key) {
            return Lookup::Pending(rx);
        }
        if self.recent.contains(&key) || self.sealed.iter().any(|s| s.contains(key)) {
            Lookup::Committed
        } else {
            Lookup::Absent
        }
    }

    /// Marks a key as being appended.
    pub fn reserve(&mut self, key: Key, rx: Pending) {
        self.pending.insert(key, rx);
    }

    /// Forgets a reservation whose append failed (a retry may store it).
    pub fn release(&mut self, key: Key) {
        self.pending.remove(&key);
    }

    /// Records a key as durable, received at `at` (unix seconds), its record at `record`
    /// in the log.
    pub fn commit(&mut self, key: Key, at: i64, record: RecordAt) {
        self.pending.remove(&key);
        let bucket = at.div_euclid(self.bucket);
        if bucket > self.recent_bucket || self.recent.len() >= SEAL_AT {
            self.seal();
            self.recent_bucket = self.recent_bucket.max(bucket);
        }
        self.recent_newest = self.recent_newest.max(at);
        note_first(&mut self.recent_firsts, record);
        self.recent.insert(key);
    }

    fn seal(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let keys: Vec<Key> = self.recent.drain().collect();
        self.recent = HashSet::default();
        self.sealed_keys += keys.len();
        let firsts = std::mem::take(&mut self.recent_firsts);
        self.sealed
            .push_back(Arc::new(Sealed::new(keys, self.recent_newest, firsts)));
        self.recent_newest = i64::MIN;
        self.enforce_cap();
    }

    fn enforce_cap(&mut self) {
        while self.sealed_keys + SEAL_AT > self.max_keys && self.sealed.len() > 1 {
            let s = self.sealed.pop_front().expect("checked");
            self.sealed_keys -= s.keys.len();
            self.evicted += s.keys.len() as u64;
        }
    }

    /// The committed keys as a snapshot holds them: the sealed runs are shared, the recent
    /// set is copied (at most [`SEAL_AT`] keys). Cheap enough to take under the lock.
    pub fn image(&self) -> Image {
        Image {
            runs: self.sealed.iter().cloned().collect(),
            recent: self.recent.iter().copied().collect(),
            recent_newest: self.recent_newest,
            recent_firsts: self.recent_firsts.clone(),
        }
    }

    /// Adds the runs of a snapshot, as the oldest runs (a start loads the snapshot before
    /// reading the log after it). The cap applies.
    pub fn load(&mut self, snapshot: Snapshot) {
        for run in snapshot.runs.into_iter().rev() {
            self.sealed_keys += run.keys.len();
            self.sealed.push_front(Arc::new(run));
        }
        self.enforce_cap();
    }

    /// Forgets the keys received before `cutoff` (unix seconds), a sealed run at a time.
    pub fn expire(&mut self, cutoff: i64) {
        while self.sealed.front().is_some_and(|s| s.newest < cutoff) {
            let s = self.sealed.pop_front().expect("checked");
            self.sealed_keys -= s.keys.len();
        }
        if !self.recent.is_empty() && self.recent_newest < cutoff {
            self.recent = HashSet::default();
            self.recent_firsts.clear();
        }
    }

    /// Keys held (committed and pending).
    pub fn len(&self) -> usize {
        self.pending.len() + self.recent.len() + self.sealed_keys
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes held.
    pub fn bytes(&self) -> usize {
        self.recent.capacity() * 9
            + self.pending.capacity() * 17
            + self.sealed.iter().map(|s| s.bytes()).sum::<usize>()
    }
}

/// The committed keys of an index at one moment ([`DedupIndex::image`]), to be written as
/// a snapshot outside the lock.
pub struct Image {
    runs: Vec<Arc<Sealed>>,
    recent: Vec<Key>,
    recent_newest: i64,
    recent_firsts: Firsts,
}

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
    runs: Vec<Sealed>,
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
    let partitions = r.u32()? as u64;
    if partitions * 16 > r.left {
        return Err(SnapshotError::Truncated);
    }
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
    let count = r.u32()? as u64;
    if count * 20 > r.left {
        return Err(SnapshotError::Truncated);
    }
    let mut runs = Vec::with_capacity(count as usize);
    let mut buf = vec![0u8; 8 << 13];
    for run in 0..count {
        let newest = r.u64()? as i64;
        let nfirsts = r.u32()? as u64;
        if nfirsts * 12 > r.left {
            return Err(SnapshotError::Truncated);
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx() -> Pending {
        watch::channel(None).1
    }

    #[test]
    fn committed_keys_are_found_in_every_run() {
        let mut ix = DedupIndex::new(Duration::from_secs(7 * 86400));
        let n = SEAL_AT as u64 * 2 + 1000;
        for k in 0..n {
            ix.commit(dedup_key("s", &k.to_string()), 1_000, (0, k));
        }
        assert_eq!(ix.sealed.len(), 2, "sealed at {SEAL_AT} keys");
        assert_eq!(ix.len() as u64, n);
        for k in (0..n).step_by(997) {
            assert!(matches!(
                ix.lookup(dedup_key("s", &k.to_string())),
                Lookup::Committed
            ));
        }
        let absent = (0..10_000)
            .filter(|k| matches!(ix.lookup(dedup_key("t", &k.to_string())), Lookup::Absent))
            .count();
        assert_eq!(absent, 10_000);
        // 8 bytes per sealed key plus a little.
        assert!(ix.bytes() < (SEAL_AT * 2) * 9 + ix.recent.capacity() * 9 + (1 << 20));
    }

    #[test]
    fn the_cap_forgets_the_oldest_runs_first() {
        let mut ix = DedupIndex::new(Duration::from_secs(7 * 86400));
        ix.set_max_keys(SEAL_AT * 3);
        let n = SEAL_AT as u64 * 5;
        for k in 0..n {
            ix.commit(dedup_key("s", &k.to_string()), 1_000, (0, k));
        }
        assert!(ix.len() <= SEAL_AT * 3, "{}", ix.len());
        assert!(ix.evicted > 0);
        assert_eq!(ix.evicted + ix.len() as u64, n);
        // The newest keys are kept, the oldest forgotten.
        assert!(matches!(
            ix.lookup(dedup_key("s", &(n - 1).to_string())),
            Lookup::Committed
        ));
        assert!(matches!(ix.lookup(dedup_key("s", "0")), Lookup::Absent));
    }

    #[test]
    fn pending_then_commit_or_release() {
        let mut ix = DedupIndex::new(Duration::from_secs(3600));
        let k = dedup_key("s", "a");
        ix.reserve(k, rx());
        assert!(matches!(ix.lookup(k), Lookup::Pending(_)));
        ix.release(k);
        assert!(matches!(ix.lookup(k), Lookup::Absent));
        ix.reserve(k, rx());
        ix.commit(k, 100, (0, 0));
        assert!(matches!(ix.lookup(k), Lookup::Committed));
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn keys_expire_a_bucket_at_a_time_never_early() {
        // Window 700 s: buckets of 100 s.
        let mut ix = DedupIndex::new(Duration::from_secs(700));
        for t in 0..2000i64 {
            ix.commit(dedup_key("s", &t.to_string()), t, (0, t as u64));
            ix.expire(t - 700);
            // Every key received within the window is still known.
            for back in [0, 1, 350, 699] {
                if t - back >= 0 {
                    let k = dedup_key("s", &(t - back).to_string());
                    assert!(
                        matches!(ix.lookup(k), Lookup::Committed),
                        "t={t} back={back}"
                    );
                }
            }
        }
        // Nothing older than window + one bucket is held.
        assert!(ix.len() <= 800, "{}", ix.len());
        assert!(matches!(ix.lookup(dedup_key("s", "0")), Lookup::Absent));
    }

    #[test]
    fn out_of_order_receive_times_are_kept() {
        let mut ix = DedupIndex::new(Duration::from_secs(700));
        ix.commit(dedup_key("s", "late"), 500, (0, 0));
        ix.commit(dedup_key("s", "early"), 10, (0, 1));
        ix.expire(100);
        assert!(matches!(
            ix.lookup(dedup_key("s", "early")),
            Lookup::Committed
        ));
    }

    /// An index with two sealed runs and a recent set, and the keys committed to it.
    fn filled() -> (DedupIndex, Vec<Key>) {
        let mut ix = DedupIndex::new(Duration::from_secs(700));
        let mut keys = Vec::new();
        for (t, n) in [(10i64, 500u64), (120, 300), (250, 200)] {
            for i in 0..n {
                let k = dedup_key("s", &format!("{t}-{i}"));
                // Records from offset 40 of partition 0 and 7 of partition 2.
                ix.commit(
                    k,
                    t,
                    (i as u32 % 2 * 2, keys.len() as u64 + 40 - i % 2 * 33),
                );
                keys.push(k);
            }
        }
        (ix, keys)
    }

    const COVERED: [Covered; 2] = [
        Covered {
            partition: 0,
            offset: 1000,
            last_crc: 0xdead_beef,
        },
        Covered {
            partition: 3,
            offset: 0,
            last_crc: 0,
        },
    ];

    fn encoded(ix: &DedupIndex, exclude: &HashSet<Key>) -> Vec<u8> {
        let mut bytes = Vec::new();
        write_snapshot(&mut bytes, 700, 1234, &COVERED, ix.image(), exclude).unwrap();
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        read_snapshot(bytes, bytes.len() as u64)
    }

    #[test]
    fn a_snapshot_round_trips_and_loads() {
        let (ix, keys) = filled();
        assert_eq!(ix.sealed.len(), 2);
        assert_eq!(ix.recent.len(), 200);
        let left_out: HashSet<Key> = [keys[3], keys[600], keys[999]].into();
        let bytes = encoded(&ix, &left_out);
        let snap = decode(&bytes).unwrap();
        assert_eq!(snap.window_secs, 700);
        assert_eq!(snap.written_at, 1234);
        assert_eq!(snap.covered, COVERED);
        assert_eq!(snap.len(), 997);
        let runs: Vec<(i64, usize)> = snap.runs().map(|(t, k)| (t, k.len())).collect();
        assert_eq!(runs, [(10, 499), (120, 299), (250, 199)]);
        assert_eq!(snap.first_offset(0), Some(40));
        assert_eq!(snap.first_offset(2), Some(8));
        assert_eq!(snap.first_offset(1), None);
        let mut loaded = DedupIndex::new(Duration::from_secs(700));
        loaded.load(snap);
        for k in &keys {
            let want = !left_out.contains(k);
            assert_eq!(matches!(loaded.lookup(*k), Lookup::Committed), want);
        }
        assert_eq!(loaded.len(), 997);
        // Runs keep their receive times: the oldest expires first.
        loaded.expire(50);
        assert_eq!(loaded.len(), 997 - 499);
        // An empty index writes a snapshot with no runs.
        let empty = DedupIndex::new(Duration::from_secs(700));
        assert!(decode(&encoded(&empty, &HashSet::new()))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused() {
        let (ix, _) = filled();
        let bytes = encoded(&ix, &HashSet::new());
        // In the covered offsets, in a run's keys, in the CRC itself.
        for at in [
            28,
            40,
            100,
            bytes.len() / 2,
            bytes.len() - 9,
            bytes.len() - 1,
        ] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let err = decode(&bad)
                .err()
                .unwrap_or_else(|| panic!("byte {at}: accepted"));
            assert!(
                matches!(err, SnapshotError::Crc { .. } | SnapshotError::Malformed(_)),
                "byte {at}: {err}"
            );
        }
        let mut bad = bytes.clone();
        let mid = bytes.len() / 2;
        bad[mid] ^= 0x01;
        assert!(matches!(decode(&bad), Err(SnapshotError::Crc { .. })));
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let (ix, _) = filled();
        let bytes = encoded(&ix, &HashSet::new());
        for len in [
            0,
            7,
            20,
            36,
            60,
            bytes.len() / 2,
            bytes.len() - 8,
            bytes.len() - 1,
        ] {
            assert!(
                matches!(decode(&bytes[..len]), Err(SnapshotError::Truncated)),
                "cut at {len} of {}",
                bytes.len()
            );
        }
        // A file that says it is longer than it is.
        assert!(matches!(
            read_snapshot(&bytes[..bytes.len() - 4], bytes.len() as u64),
            Err(SnapshotError::Truncated)
        ));
        // A run that says it holds more keys than the file has bytes: refused before any
        // memory is reserved for them.
        let mut huge = bytes.clone();
        // Header 36, 2 partitions of 16, 4 for the run count; then the first run's newest 8,
        // its 2 firsts (4 + 24), and its key count.
        let at = 36 + 32 + 4 + 8 + 28;
        huge[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(decode(&huge), Err(SnapshotError::Truncated)));
        // Bytes after the CRC.
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 8]);
        assert!(matches!(decode(&long), Err(SnapshotError::Malformed(_))));
    }

    #[test]
    fn another_version_or_file_is_refused() {
        let (ix, _) = filled();
        let bytes = encoded(&ix, &HashSet::new());
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(matches!(decode(&v2), Err(SnapshotError::Version(2))));
        let mut other = bytes.clone();
        other[0] = b'X';
        assert!(matches!(decode(&other), Err(SnapshotError::BadMagic)));
    }

    #[test]
    fn the_file_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_snapshot_file(dir.path()).unwrap().is_none());
        let (ix, keys) = filled();
        // A temporary file left by a crash mid-write is deleted when the snapshot is read.
        let stray = dir.path().join(format!("{SNAPSHOT_FILE}.tmp.1"));
        std::fs::write(&stray, b"torn").unwrap();
        let (n, bytes) =
            write_snapshot_file(dir.path(), 700, &COVERED, ix.image(), &HashSet::new()).unwrap();
        assert_eq!(n as usize, keys.len());
        assert_eq!(
            bytes,
            std::fs::metadata(dir.path().join(SNAPSHOT_FILE))
                .unwrap()
                .len()
        );
        let snap = read_snapshot_file(dir.path()).unwrap().unwrap();
        assert_eq!(snap.len(), keys.len());
        assert!(!stray.exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [SNAPSHOT_FILE]);
    }

    #[test]
    fn small_runs_and_empty_prefixes() {
        for n in [1usize, 2, 7, 9, 100, 5000] {
            let keys: Vec<Key> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect();
            let s = Sealed::new(keys.clone(), 0, Vec::new());
            for k in &keys {
                assert!(s.contains(*k), "n={n}");
            }
            assert!(!s.contains(12345));
            assert!(!s.contains(u64::MAX));
        }
    }
}
