//! Consumer positions: where each named consumer (a projection, a rule engine) has read up
//! to, per partition, replaced atomically.
//!
//! The file format is documented on [`PositionStore`].

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::{LogError, Offset, Partition};

const HEADER: &str = "shiplog-positions 1\n";
const MAX_NAME_LEN: usize = 128;

/// Stores consumer positions in a directory.
///
/// # File format
///
/// One file per consumer, `<name>.pos` in the store's directory, UTF-8 text:
///
/// ```text
/// shiplog-positions 1
/// <partition> <offset>
/// …
/// crc32c <8 hex digits>
/// ```
///
/// The CRC32C covers every byte before the `crc32c` line. A save writes `.<name>.pos.tmp`,
/// fsyncs it, renames it over `<name>.pos` and fsyncs the directory, so a crash leaves either
/// the old or the new positions, never a mix. A missing file means "no positions yet".
#[derive(Debug, Clone)]
pub struct PositionStore {
    dir: PathBuf,
}

impl PositionStore {
    /// A store in `dir`; the directory is created by the first [`save`](Self::save).
    pub fn new(dir: impl Into<PathBuf>) -> PositionStore {
        PositionStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Atomically replaces the positions of consumer `name`.
    pub fn save(
        &self,
        name: &str,
        positions: &BTreeMap<Partition, Offset>,
    ) -> Result<(), LogError> {
        validate_name(name)?;
        fs::create_dir_all(&self.dir)?;
        let mut text = String::from(HEADER);
        for (partition, offset) in positions {
            text.push_str(&format!("{partition} {offset}\n"));
        }
        let crc = crc32c::crc32c(text.as_bytes());
        text.push_str(&format!("crc32c {crc:08x}\n"));

        let tmp = self.dir.join(format!(".{name}.pos.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.path(name))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// The positions of consumer `name`; empty if it never saved any.
    pub fn load(&self, name: &str) -> Result<BTreeMap<Partition, Offset>, LogError> {
        validate_name(name)?;
        let path = self.path(name);
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(e.into()),
        };
        parse(&text).map_err(|reason| LogError::Corrupt {
            location: path.display().to_string(),
            reason,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pos"))
    }
}

fn validate_name(name: &str) -> Result<(), LogError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(LogError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "invalid consumer name {name:?}: use 1-{MAX_NAME_LEN} of A-Z a-z 0-9 - _ . \
                 and do not start with a dot"
            ),
        )))
    }
}

fn parse(bytes: &[u8]) -> Result<BTreeMap<Partition, Offset>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map(|i| i + 1)
        .ok_or("truncated file")?;
    let (body, crc_line) = text.split_at(body_end);
    let stored = crc_line
        .trim_end()
        .strip_prefix("crc32c ")
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or("missing crc32c line")?;
    let computed = crc32c::crc32c(body.as_bytes());
    if stored != computed {
        return Err(format!(
            "CRC32C mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    let rest = body.strip_prefix(HEADER).ok_or("unknown header")?;
    let mut positions = BTreeMap::new();
    for line in rest.lines() {
        let (partition, offset) = line
            .split_once(' ')
            .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
            .ok_or_else(|| format!("bad line {line:?}"))?;
        positions.insert(partition, offset);
    }
    Ok(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = PositionStore::new(dir.path().join("positions"));
        assert!(store.load("parquet").unwrap().is_empty());
        let first = BTreeMap::from([(0, 17), (3, u64::MAX)]);
        store.save("parquet", &first).unwrap();
        assert_eq!(store.load("parquet").unwrap(), first);
        let second = BTreeMap::from([(0, 18)]);
        store.save("parquet", &second).unwrap();
        assert_eq!(store.load("parquet").unwrap(), second);
        store.save("empty", &BTreeMap::new()).unwrap();
        assert!(store.load("empty").unwrap().is_empty());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| n.ends_with(".pos")), "{names:?}");
    }

    #[test]
    fn rejects_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = PositionStore::new(dir.path());
        for name in [
            "",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "a b",
            &"x".repeat(200),
        ] {
            assert!(store.save(name, &BTreeMap::new()).is_err(), "{name:?}");
            assert!(store.load(name).is_err(), "{name:?}");
        }
        store.save("rules.v2-main_1", &BTreeMap::new()).unwrap();
    }

    #[test]
    fn detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = PositionStore::new(dir.path());
        store.save("c", &BTreeMap::from([(0, 12345)])).unwrap();
        let path = dir.path().join("c.pos");
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("12345", "12346")).unwrap();
        assert!(matches!(store.load("c"), Err(LogError::Corrupt { .. })));
        fs::write(&path, "shiplog-positions 1\n0 1").unwrap();
        assert!(matches!(store.load("c"), Err(LogError::Corrupt { .. })));
        fs::write(&path, "").unwrap();
        assert!(matches!(store.load("c"), Err(LogError::Corrupt { .. })));
    }
}
