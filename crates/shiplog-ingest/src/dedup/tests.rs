use super::index::Sealed;
use super::*;
use std::collections::HashSet;
use std::time::Duration;

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
