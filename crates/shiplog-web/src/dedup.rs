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

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
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

/// A sealed run: sorted fingerprints and, for each value of their top `bits` bits, the
/// index of the first fingerprint with that prefix.
struct Sealed {
    newest: i64,
    keys: Vec<Key>,
    bits: u32,
    starts: Vec<u32>,
}

impl Sealed {
    fn new(mut keys: Vec<Key>, newest: i64) -> Sealed {
        keys.sort_unstable();
        keys.dedup();
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
    /// Bucket of the recent set's keys, and its newest receive time.
    recent_bucket: i64,
    recent_newest: i64,
    /// Oldest first.
    sealed: VecDeque<Sealed>,
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

    /// Records a key as durable, received at `at` (unix seconds).
    pub fn commit(&mut self, key: Key, at: i64) {
        self.pending.remove(&key);
        let bucket = at.div_euclid(self.bucket);
        if bucket > self.recent_bucket || self.recent.len() >= SEAL_AT {
            self.seal();
            self.recent_bucket = self.recent_bucket.max(bucket);
        }
        self.recent_newest = self.recent_newest.max(at);
        self.recent.insert(key);
    }

    fn seal(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let keys: Vec<Key> = self.recent.drain().collect();
        self.recent = HashSet::default();
        self.sealed_keys += keys.len();
        self.sealed.push_back(Sealed::new(keys, self.recent_newest));
        self.recent_newest = i64::MIN;
        while self.sealed_keys + SEAL_AT > self.max_keys && self.sealed.len() > 1 {
            let s = self.sealed.pop_front().expect("checked");
            self.sealed_keys -= s.keys.len();
            self.evicted += s.keys.len() as u64;
        }
    }

    /// Forgets the keys received before `cutoff` (unix seconds), a sealed run at a time.
    pub fn expire(&mut self, cutoff: i64) {
        while self.sealed.front().is_some_and(|s| s.newest < cutoff) {
            let s = self.sealed.pop_front().expect("checked");
            self.sealed_keys -= s.keys.len();
        }
        if !self.recent.is_empty() && self.recent_newest < cutoff {
            self.recent = HashSet::default();
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
            + self.sealed.iter().map(Sealed::bytes).sum::<usize>()
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
            ix.commit(dedup_key("s", &k.to_string()), 1_000);
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
            ix.commit(dedup_key("s", &k.to_string()), 1_000);
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
        ix.commit(k, 100);
        assert!(matches!(ix.lookup(k), Lookup::Committed));
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn keys_expire_a_bucket_at_a_time_never_early() {
        // Window 700 s: buckets of 100 s.
        let mut ix = DedupIndex::new(Duration::from_secs(700));
        for t in 0..2000i64 {
            ix.commit(dedup_key("s", &t.to_string()), t);
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
        ix.commit(dedup_key("s", "late"), 500);
        ix.commit(dedup_key("s", "early"), 10);
        ix.expire(100);
        assert!(matches!(
            ix.lookup(dedup_key("s", "early")),
            Lookup::Committed
        ));
    }

    #[test]
    fn small_runs_and_empty_prefixes() {
        for n in [1usize, 2, 7, 9, 100, 5000] {
            let keys: Vec<Key> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect();
            let s = Sealed::new(keys.clone(), 0);
            for k in &keys {
                assert!(s.contains(*k), "n={n}");
            }
            assert!(!s.contains(12345));
            assert!(!s.contains(u64::MAX));
        }
    }
}
