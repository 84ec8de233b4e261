//! Where the projection's files live and how they are named: the only code that knows the
//! Parquet layout (the crate docs draw it). Other crates ask these functions, never join
//! the paths themselves.

use super::flush::write_parquet;
use crate::fsutil::{create_dir_durable, list_dir, sync_dir, IoAt};
use crate::state::State;
use crate::StoreError;
use chrono::{DateTime, NaiveDate, Utc};
use shiplog_events::Kind;
use shiplog_log::{Offset, Partition};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Version of the per-kind columns; bumping it rewrites the schema-only files.
/// 2: `api_costs` gained `cache_write_tokens`, `reasoning_tokens` and `cost_source`.
pub const SCHEMA_VERSION: u32 = 2;

/// The parquet directory of a data directory.
pub fn parquet_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("parquet")
}

/// `p<partition>-<first offset>-<last offset>.parquet` (offsets zero-padded to 12 digits).
pub fn file_name(partition: Partition, first: Offset, last: Offset) -> String {
    format!("p{partition}-{first:012}-{last:012}.parquet")
}

/// Parses a name made by [`file_name`].
pub fn parse_file_name(name: &str) -> Option<(Partition, Offset, Offset)> {
    let rest = name.strip_prefix('p')?.strip_suffix(".parquet")?;
    let mut it = rest.splitn(3, '-');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

pub(crate) fn date_of_micros(micros: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .date_naive()
}

pub(super) fn date_dir_name(d: NaiveDate) -> String {
    format!("date={}", d.format("%Y-%m-%d"))
}

fn parse_date_dir(name: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(name.strip_prefix("date=")?, "%Y-%m-%d").ok()
}

/// The day directories (`<kind>/date=YYYY-MM-DD`) of one kind, with their dates; other
/// entries are left out.
pub(super) fn day_dirs(root: &Path, kind: Kind) -> Result<Vec<(NaiveDate, PathBuf)>, StoreError> {
    Ok(list_dir(&root.join(kind.as_str()))?
        .into_iter()
        .filter_map(|dir| {
            let date = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_date_dir)?;
            Some((date, dir))
        })
        .collect())
}

pub(super) fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// A Parquet file of a day directory: its first and last log offsets, and its path.
pub(super) type DayFile = (Offset, Offset, PathBuf);

/// The Parquet files of a day directory per log partition, sorted by first offset.
pub(super) fn files_by_partition(
    day_dir: &Path,
) -> Result<BTreeMap<Partition, Vec<DayFile>>, StoreError> {
    let mut groups: BTreeMap<Partition, Vec<DayFile>> = BTreeMap::new();
    for f in list_dir(day_dir)? {
        if let Some((p, a, b)) = f
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_file_name)
        {
            groups.entry(p).or_default().push((a, b, f));
        }
    }
    for files in groups.values_mut() {
        files.sort();
    }
    Ok(groups)
}

/// The schema-only (zero-row) file of a kind, so its view exists before any event.
pub(crate) fn schema_file(root: &Path, kind: Kind) -> PathBuf {
    root.join(kind.as_str())
        .join("_schema")
        .join(format!("schema-v{SCHEMA_VERSION}.parquet"))
}

/// Writes each kind's schema-only file if missing, removing older versions.
pub(crate) fn write_schema_files(root: &Path) -> Result<(), StoreError> {
    for kind in Kind::ALL {
        let path = schema_file(root, kind);
        if path.exists() {
            continue;
        }
        let dir = path.parent().expect("has dir");
        create_dir_durable(dir)?;
        for old in list_dir(dir)? {
            fs::remove_file(&old).at(&old)?;
        }
        let tmp = path.with_extension("tmp");
        write_parquet(&tmp, kind, std::iter::empty(), 1)?;
        fs::rename(&tmp, &path).at(&path)?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// Rows per log partition of the Parquet files in `dir`, from their footers.
pub(crate) fn parquet_rows(dir: &Path) -> Result<BTreeMap<Partition, u64>, StoreError> {
    let mut out = BTreeMap::new();
    for f in list_dir(dir)? {
        let Some((partition, _, _)) = f
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_file_name)
        else {
            continue;
        };
        *out.entry(partition).or_insert(0) += footer_rows(&f)?;
    }
    Ok(out)
}

/// Number of rows of a Parquet file, from its footer.
pub(crate) fn footer_rows(path: &Path) -> Result<u64, StoreError> {
    use parquet::file::reader::FileReader;
    let f = File::open(path).at(path)?;
    let reader = parquet::file::reader::SerializedFileReader::new(f)?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as u64)
}

/// The folder under the Parquet root holding one projection per log partition when Kafka
/// processors share the partitions in a consumer group.
const GROUP_DIR: &str = "_partitions";

/// The data directory of partition `p`'s own projection in consumer-group mode:
/// `<data_dir>/parquet/_partitions/p<P>/` (its Parquet root is `…/p<P>/parquet/`, with its
/// own lock, state and files; the query views read them too).
pub fn group_partition_dir(data_dir: &Path, p: Partition) -> PathBuf {
    parquet_dir(data_dir).join(GROUP_DIR).join(format!("p{p}"))
}

/// Makes sure the query views include the partitions' projections of consumer-group mode:
/// creates `parquet/_partitions/_base/` with schema-only files, so the views' second glob
/// always matches. Call before opening a [`crate::QueryEngine`] in group mode. Retries a
/// few times: another node may be creating the same files.
pub fn ensure_group_layout(data_dir: &Path) -> Result<(), StoreError> {
    let base = parquet_dir(data_dir).join(GROUP_DIR).join("_base");
    let mut tries = 0;
    loop {
        let root = parquet_dir(&base);
        let r = create_dir_durable(&root).and_then(|()| write_schema_files(&root));
        match r {
            Err(_) if tries < 4 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

/// Which projections a data directory holds: the single projector's (`_state.json` with
/// committed offsets) and/or consumer-group partitions' (`_partitions/p<P>/`). A directory
/// must not mix the two (the same events would be projected twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectionLayout {
    /// A single processor committed events here.
    pub single_projected: bool,
    /// Consumer-group partitions have projections here.
    pub group_partitions: bool,
}

/// What [`ProjectionLayout`] `data_dir` holds (an unreadable state counts as not projected).
pub fn projection_layout(data_dir: &Path) -> ProjectionLayout {
    let root = parquet_dir(data_dir);
    ProjectionLayout {
        single_projected: State::load(&root).is_ok_and(|s| s.offsets.values().any(|&o| o > 0)),
        group_partitions: fs::read_dir(root.join(GROUP_DIR)).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with('p'))
        }),
    }
}
