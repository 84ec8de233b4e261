//! The index proper: a recent hash set, sealed sorted runs, the pending reservations.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::{
    note_first, Build, Firsts, Key, Lookup, Pending, RecordAt, Snapshot, DEFAULT_MAX_KEYS, SEAL_AT,
};

/// A sealed run: sorted fingerprints and, for each value of their top `bits` bits, the
/// index of the first fingerprint with that prefix.
pub(super) struct Sealed {
    pub(super) newest: i64,
    pub(super) firsts: Firsts,
    pub(super) keys: Vec<Key>,
    bits: u32,
    starts: Vec<u32>,
}

impl Sealed {
    pub(super) fn new(mut keys: Vec<Key>, newest: i64, firsts: Firsts) -> Sealed {
        keys.sort_unstable();
        keys.dedup();
        Self::from_sorted(keys, newest, firsts)
    }

    /// A run of keys already sorted and without repeats.
    pub(super) fn from_sorted(mut keys: Vec<Key>, newest: i64, firsts: Firsts) -> Sealed {
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

    pub(super) fn contains(&self, key: Key) -> bool {
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
    pub(super) recent: HashSet<Key, Build>,
    /// Bucket of the recent set's keys, its newest receive time, and where their records
    /// start in the log.
    recent_bucket: i64,
    recent_newest: i64,
    recent_firsts: Firsts,
    /// Oldest first. Runs never change once sealed: a snapshot shares them.
    pub(super) sealed: VecDeque<Arc<Sealed>>,
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
    pub(super) runs: Vec<Arc<Sealed>>,
    pub(super) recent: Vec<Key>,
    pub(super) recent_newest: i64,
    pub(super) recent_firsts: Firsts,
}
