//! The ingest dedup index: which `(source, id)` keys are stored (within the dedup window)
//! or being stored right now.
//!
//! Memory is the point of this design: a 7-day window can hold tens of millions of keys.
//! A key is the 64-bit fingerprint of `source` and `id` ([`shiplog_events::dedup_key`]). Keys committed
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
//! The index is in [`index`], its snapshot file (format and atomic replacement) in
//! [`snapshot`].

use std::hash::BuildHasherDefault;
use tokio::sync::watch;

mod index;
mod snapshot;
#[cfg(test)]
mod tests;

pub use index::{DedupIndex, Image};
pub use snapshot::{
    read_snapshot, read_snapshot_file, record_crc, write_snapshot, write_snapshot_file, Covered,
    Snapshot, SnapshotError, SNAPSHOT_FILE,
};

/// A dedup key: the 64-bit fingerprint of `source` and `id` (why 64 bits:
/// [`shiplog_events::DedupKey`]).
pub use shiplog_events::{dedup_key, DedupKey as Key};

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
