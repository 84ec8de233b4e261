mod common;

use common::gen::{event, Rng};
use common::MemLog;
use serde_json::{json, Value};
use shiplog_events::Kind;
use shiplog_log::{Log, LogEntry};
use shiplog_store::*;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: i64 = 1_795_000_000; // 2026-11-18
/// Seconds between generated events: 3,000 events span 3.4 days.
const STEP: i64 = 97;

fn small_config() -> ProjectorConfig {
    ProjectorConfig {
        flush_rows: 1_000_000,
        ..ProjectorConfig::default()
    }
}

fn gen_log(n: u64, partitions: u32) -> MemLog {
    let log = MemLog::new(partitions as usize);
    let mut rng = Rng(42);
    for i in 0..n {
        let ev = event(&mut rng, i, T0, STEP);
        log.push(
            (i % partitions as u64) as u32,
            serde_json::to_vec(&ev).unwrap(),
        );
    }
    log
}

fn all_entries(log: &MemLog) -> Vec<LogEntry> {
    log.partitions()
        .into_iter()
        .flat_map(|p| log.entries(p, 0, log.end_offset(p)))
        .collect()
}

/// All rows of every view, ordered by position, as JSON.
fn dump(data_dir: &Path) -> Vec<(String, Vec<Vec<Value>>)> {
    let q = QueryEngine::open(data_dir).unwrap();
    let mut out = Vec::new();
    for k in Kind::ALL {
        let r = q
            .query(
                &format!(
                    "SELECT * FROM {} ORDER BY _partition, _offset",
                    k.view_name()
                ),
                Duration::from_secs(30),
            )
            .unwrap();
        out.push((k.view_name().to_string(), r.rows));
    }
    out
}

fn offsets_of(data_dir: &Path) -> Vec<(i64, i64)> {
    let q = QueryEngine::open(data_dir).unwrap();
    let r = q
        .query(
            "SELECT _partition, _offset FROM events ORDER BY 1, 2",
            Duration::from_secs(30),
        )
        .unwrap();
    r.rows
        .iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
        .collect()
}

#[test]
fn projects_typed_columns_and_keeps_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let evs = [
        json!({"id":"b1","kind":"build","source":"vite-plugin","time":"2026-11-20T10:00:00Z","received_at":"2026-11-20T10:00:01.5Z","project":"web","commit":"abc","branch":"main",
               "subject":"x","data":{"tool":"vite","tool_version":"8.3.0","mode":"production","success":true,"duration_ms":61234.6,
               "phases":[{"name":"transform","duration_ms":100},{"name":"render","duration_ms":200,"note":"n"}],
               "modules_transformed":12,"modules_total":20,"bundle_bytes":1000,"gzip_bytes":400,
               "chunks":[{"name":"index.js","bytes":900,"gzip_bytes":300}],"assets":[{"name":"a.css","bytes":100}],
               "ci":{"provider":"github","run_id":123456,"url":"https://ci/1"},"plugin_version":"0.1.0"}}),
        json!({"id":"c1","kind":"check","source":"probe","received_at":"2026-11-20T23:59:59Z","project":"web","deployment_id":"d1",
               "data":{"name":"error_rate","value":0.02,"unit":"ratio"}}),
        json!({"id":"a1","kind":"api_cost","source":"app","time":"2026-11-21T00:00:00+01:00","received_at":"2026-11-21T10:00:00Z","project":"web",
               "data":{"provider":"openai","model":"gpt","input_tokens":10,"output_tokens":5,"usage":{"prompt_tokens":10,"completion_tokens":5}}}),
        json!("not an event"),
    ];
    let entries: Vec<LogEntry> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| LogEntry {
            partition: 0,
            offset: i as u64,
            key: Default::default(),
            value: serde_json::to_vec(e).unwrap().into(),
        })
        .collect();
    let mut p = ParquetProjector::open(dir.path(), small_config()).unwrap();
    p.push(entries);
    let r = p.flush().unwrap();
    assert_eq!((r.rows, r.skipped, r.files), (3, 1, 3));
    assert_eq!(p.committed_offsets().get(&0), Some(&4));
    drop(p);

    let root = dir.path().join("parquet");
    assert!(root
        .join("build/date=2026-11-20/p0-000000000000-000000000000.parquet")
        .exists());
    assert!(root
        .join("check/date=2026-11-20/p0-000000000001-000000000001.parquet")
        .exists());
    // 2026-11-21T00:00:00+01:00 is 2026-11-20 23:00 UTC
    assert!(root
        .join("api_cost/date=2026-11-20/p0-000000000002-000000000002.parquet")
        .exists());

    let q = QueryEngine::open(dir.path()).unwrap();
    let b = q
        .query("SELECT * FROM builds", Duration::from_secs(10))
        .unwrap();
    let cols: Vec<&str> = b.columns.iter().map(String::as_str).collect();
    assert_eq!(
        cols,
        [
            "time",
            "received_at",
            "id",
            "source",
            "project",
            "env",
            "commit",
            "branch",
            "deployment_id",
            "tool",
            "tool_version",
            "mode",
            "success",
            "duration_ms",
            "phases",
            "modules_transformed",
            "modules_total",
            "bundle_bytes",
            "gzip_bytes",
            "chunks",
            "assets",
            "ci",
            "extra",
            "_partition",
            "_offset"
        ]
    );
    let row: serde_json::Map<String, Value> = cols
        .iter()
        .map(|c| c.to_string())
        .zip(b.rows[0].clone())
        .collect();
    assert_eq!(row["time"], json!("2026-11-20T10:00:00.000000Z"));
    assert_eq!(row["received_at"], json!("2026-11-20T10:00:01.500000Z"));
    assert_eq!(row["duration_ms"], json!(61235));
    assert_eq!(
        row["phases"],
        json!([{"name":"transform","duration_ms":100},{"name":"render","duration_ms":200}])
    );
    assert_eq!(
        row["chunks"],
        json!([{"name":"index.js","bytes":900,"gzip_bytes":300}])
    );
    assert_eq!(
        row["ci"],
        json!({"provider":"github","run_id":"123456","url":"https://ci/1"})
    );
    assert_eq!(row["env"], Value::Null);
    let extra: Value = serde_json::from_str(row["extra"].as_str().unwrap()).unwrap();
    assert_eq!(
        extra,
        json!({"subject":"x","data":{"plugin_version":"0.1.0","duration_ms":61234.6,
               "phases":[{"name":"transform","duration_ms":100},{"name":"render","duration_ms":200,"note":"n"}],
               "ci":{"provider":"github","run_id":123456,"url":"https://ci/1"}}})
    );
    let c = q
        .query(
            "SELECT time, name, value, passed, extra FROM checks",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(
        c.rows,
        vec![vec![
            json!("2026-11-20T23:59:59.000000Z"),
            json!("error_rate"),
            json!(0.02),
            Value::Null,
            Value::Null
        ]]
    );
    let a = q
        .query(
            "SELECT usage::JSON->>'prompt_tokens', cost_usd FROM api_costs",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(a.rows, vec![vec![json!("10"), Value::Null]]);
    let e = q
        .query(
            "SELECT kind, count(*) AS n, sum(_offset) FROM events GROUP BY kind ORDER BY kind",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(e.columns, ["kind", "n", "sum(_offset)"]);
    assert_eq!(
        e.rows,
        vec![
            vec![json!("api_cost"), json!(1), json!(2)],
            vec![json!("build"), json!(1), json!(0)],
            vec![json!("check"), json!(1), json!(1)]
        ]
    );
    // empty kinds still have their view, with their columns
    let d = q
        .query("SELECT * FROM decisions", Duration::from_secs(10))
        .unwrap();
    assert!(d.rows.is_empty());
    assert!(
        d.columns.contains(&"dry_run".to_string()) && d.columns.contains(&"verdict".to_string())
    );
    let m = q
        .query("DESCRIBE migrations", Duration::from_secs(10))
        .unwrap();
    assert_eq!(m.rows.len(), 9 + 8 + 3);
}

#[test]
fn independent_reader_opens_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = gen_log(2_000, 1);
    let mut p = ParquetProjector::open(dir.path(), small_config()).unwrap();
    p.push(all_entries(&log));
    p.flush().unwrap();
    drop(p);
    // A plain DuckDB, no views, no shiplog code: read_parquet on the files.
    let c = duckdb::Connection::open_in_memory().unwrap();
    let glob = dir.path().join("parquet/build/date=*/*.parquet");
    let (n, typ): (i64, String) = c
        .query_row(
            &format!(
                "SELECT count(*), any_value(typeof(phases)) FROM read_parquet('{}')",
                glob.display()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(n > 200, "{n}");
    assert_eq!(typ, "STRUCT(\"name\" VARCHAR, duration_ms BIGINT)[]");
    let glob = dir.path().join("parquet/*/date=*/*.parquet");
    let total: i64 = c
        .query_row(
            &format!(
                "SELECT count(*) FROM read_parquet('{}', union_by_name=true)",
                glob.display()
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(total, 2_000);
    let ty: String = c
        .query_row(
            &format!(
                "SELECT typeof(time) FROM read_parquet('{}') LIMIT 1",
                dir.path().join("parquet/check/date=*/*.parquet").display()
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ty, "TIMESTAMP WITH TIME ZONE");
}

fn crash_and_recover(point: CrashPoint, parallel: bool) {
    let dir = tempfile::tempdir().unwrap();
    let n = if parallel { 30_000 } else { 500 };
    let log = gen_log(n, 2);
    let entries = all_entries(&log);
    let cfg = ProjectorConfig {
        threads: 2,
        ..small_config()
    };
    // A first, clean batch, then a crashing one.
    let mut p = ParquetProjector::open(dir.path(), cfg.clone()).unwrap();
    let (a, b): (Vec<_>, Vec<_>) = entries.iter().cloned().partition(|e| e.offset < n / 4);
    p.push(a);
    p.flush().unwrap();
    p.push(b);
    p.inject_crash(point);
    assert!(matches!(p.flush(), Err(StoreError::InjectedCrash(_))));
    drop(p);
    // Restart: resume from the committed offsets, re-reading the log.
    let mut p = ParquetProjector::open(dir.path(), cfg).unwrap();
    for part in log.partitions() {
        p.push(log.entries(part, p.next_offset(part), log.end_offset(part)));
    }
    p.flush().unwrap();
    drop(p);
    let got = offsets_of(dir.path());
    let mut want: Vec<(i64, i64)> = entries
        .iter()
        .map(|e| (e.partition as i64, e.offset as i64))
        .collect();
    want.sort();
    assert_eq!(got, want, "{point:?}");
    // no temp file is left
    let leftovers = walk(&dir.path().join("parquet"))
        .into_iter()
        .filter(|p| p.ends_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0);
}

fn walk(p: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e.to_string_lossy().into_owned());
        }
    }
    out
}

/// Every step at which a test makes the projector fail as if killed.
const CRASH_POINTS: [CrashPoint; 3] = [
    CrashPoint::AfterTempWrite,
    CrashPoint::AfterStateCommit,
    CrashPoint::MidRenames,
];

/// A run without a crash, then one per [`CRASH_POINTS`].
const NO_CRASH_AND_EVERY_CRASH_POINT: [Option<CrashPoint>; 4] = [
    None,
    Some(CRASH_POINTS[0]),
    Some(CRASH_POINTS[1]),
    Some(CRASH_POINTS[2]),
];

#[test]
fn crash_at_every_flush_step_leaves_no_duplicate_and_no_gap() {
    for point in CRASH_POINTS {
        crash_and_recover(point, false);
        crash_and_recover(point, true);
    }
}

#[test]
fn compaction_merges_closed_days_exactly_once_even_when_crashing() {
    for point in NO_CRASH_AND_EVERY_CRASH_POINT {
        let dir = tempfile::tempdir().unwrap();
        let log = gen_log(3_000, 1);
        let entries = all_entries(&log);
        let mut p = ParquetProjector::open(dir.path(), small_config()).unwrap();
        for chunk in entries.chunks(300) {
            p.push(chunk.to_vec());
            p.flush().unwrap();
        }
        let before = dump(dir.path());
        let files_before = walk(&dir.path().join("parquet"))
            .iter()
            .filter(|f| f.ends_with(".parquet"))
            .count();
        // "now" = the last day of the data: every earlier day is closed.
        let now = chrono::DateTime::from_timestamp(T0 + 3_000 * STEP, 0).unwrap();
        if let Some(point) = point {
            p.inject_crash(point);
            assert!(p.compact(now).is_err());
            drop(p);
            p = ParquetProjector::open(dir.path(), small_config()).unwrap();
            if point == CrashPoint::AfterTempWrite {
                p.compact(now).unwrap();
            }
        } else {
            let r = p.compact(now).unwrap();
            assert!(r.files_in > r.files_out && r.files_out > 0, "{r:?}");
        }
        drop(p);
        let files_after = walk(&dir.path().join("parquet"))
            .iter()
            .filter(|f| f.ends_with(".parquet"))
            .count();
        assert!(
            files_after < files_before,
            "{point:?}: {files_after} >= {files_before}"
        );
        assert_eq!(dump(dir.path()), before, "{point:?}");
        // closed days: one file per kind and day
        let root = dir.path().join("parquet/check");
        for day in std::fs::read_dir(&root).unwrap() {
            let day = day.unwrap().path();
            let name = day.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("date=") && name < format!("date={}", now.date_naive()) {
                assert_eq!(std::fs::read_dir(&day).unwrap().count(), 1, "{name}");
            }
        }
    }
    // the free function refuses while a projector holds the lock
    let dir = tempfile::tempdir().unwrap();
    let _p = ParquetProjector::open(dir.path(), small_config()).unwrap();
    assert!(matches!(
        compact(dir.path(), chrono::Utc::now()),
        Err(StoreError::Locked(_))
    ));
}

/// Most files in one day directory of any kind.
fn max_files_per_day(root: &Path) -> usize {
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for f in walk(&root.join("parquet")) {
        if f.ends_with(".parquet") && !f.contains("_schema") {
            let dir = Path::new(&f)
                .parent()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            *counts.entry(dir).or_default() += 1;
        }
    }
    counts.into_values().max().unwrap_or(0)
}

#[test]
fn small_files_are_merged_as_they_accumulate_exactly_once_even_when_crashing() {
    let log = gen_log(3_000, 1);
    let entries = all_entries(&log);
    // The same events with no merging: the reference rows.
    let reference = tempfile::tempdir().unwrap();
    let unmerged_max = {
        let cfg = ProjectorConfig {
            merge_small_files: 0,
            ..small_config()
        };
        let mut p = ParquetProjector::open(reference.path(), cfg).unwrap();
        for chunk in entries.chunks(50) {
            p.push(chunk.to_vec());
            p.flush().unwrap();
            assert_eq!(p.merge_small_files().unwrap(), CompactionReport::default());
        }
        drop(p);
        max_files_per_day(reference.path())
    };
    assert!(unmerged_max >= 10, "{unmerged_max}");
    let expected = dump(reference.path());
    let cfg = || ProjectorConfig {
        merge_small_files: 4,
        ..small_config()
    };
    for point in NO_CRASH_AND_EVERY_CRASH_POINT {
        let dir = tempfile::tempdir().unwrap();
        let mut p = ParquetProjector::open(dir.path(), cfg()).unwrap();
        let mut merged = 0;
        for (i, chunk) in entries.chunks(50).enumerate() {
            if p.next_offset(0) > chunk[0].offset {
                continue; // committed before the crash
            }
            p.push(chunk.to_vec());
            p.flush().unwrap();
            match point {
                Some(point) if i == 30 => {
                    p.inject_crash(point);
                    assert!(p.merge_small_files().is_err(), "{point:?}");
                    drop(p);
                    p = ParquetProjector::open(dir.path(), cfg()).unwrap();
                }
                _ => merged += p.merge_small_files().unwrap().files_in,
            }
        }
        drop(p);
        assert!(merged > 0, "{point:?}");
        let max = max_files_per_day(dir.path());
        assert!(
            max < 4 + 2,
            "{point:?}: {max} files in a day, {unmerged_max} unmerged"
        );
        assert_eq!(dump(dir.path()), expected, "{point:?}");
    }
    // Files over the size threshold are left alone.
    let dir = tempfile::tempdir().unwrap();
    let mut p = ParquetProjector::open(
        dir.path(),
        ProjectorConfig {
            small_file_bytes: 1,
            ..cfg()
        },
    )
    .unwrap();
    for chunk in entries.chunks(50) {
        p.push(chunk.to_vec());
        p.flush().unwrap();
        assert_eq!(p.merge_small_files().unwrap().files_in, 0);
    }
    drop(p);
    assert_eq!(max_files_per_day(dir.path()), unmerged_max);
}

#[test]
fn retention_deletes_old_partitions_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let log = gen_log(3_000, 1); // spans 2026-11-18 .. 2026-11-18 + 5.8h*... days
    let mut cfg = small_config();
    cfg.retention_days.insert(Kind::Check, 1);
    let mut p = ParquetProjector::open(dir.path(), cfg).unwrap();
    p.push(all_entries(&log));
    p.flush().unwrap();
    let now = chrono::DateTime::from_timestamp(T0 + 3_000 * STEP, 0).unwrap();
    let r = p.apply_retention(now).unwrap();
    assert!(!r.partitions_deleted.is_empty());
    assert!(r
        .partitions_deleted
        .iter()
        .all(|(k, d)| *k == Kind::Check && *d < now.date_naive() - chrono::Days::new(1)));
    drop(p);
    let q = QueryEngine::open(dir.path()).unwrap();
    let r = q
        .query(
            "SELECT min(time)::DATE::VARCHAR FROM checks",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(
        r.rows[0][0],
        json!((now.date_naive() - chrono::Days::new(1)).to_string())
    );
    let r = q
        .query(
            "SELECT min(time)::DATE::VARCHAR FROM builds",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(r.rows[0][0], json!("2026-11-18"));
}

#[test]
fn query_surface_is_read_only_and_confined() {
    let dir = tempfile::tempdir().unwrap();
    let q = QueryEngine::open(dir.path()).unwrap();
    let t = Duration::from_secs(10);
    let forbidden = |sql: &str| match q.query(sql, t) {
        Err(QueryError::Forbidden(reason)) => reason,
        other => panic!("{sql}: expected Forbidden, got {other:?}"),
    };
    assert!(forbidden("SELECT * FROM read_csv('/etc/passwd')")
        .to_lowercase()
        .contains("permission"));
    let evil = dir.path().join("parquet/evil.parquet");
    assert!(forbidden(&format!("COPY (SELECT 1) TO '{}'", evil.display())).contains("COPY"));
    assert!(!evil.exists());
    assert!(forbidden("SELECT 1; SELECT 2").contains("one statement"));
    assert!(forbidden("SELECT 1; DROP VIEW builds").contains("read"));
    for sql in [
        "ATTACH '/tmp/x.db'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "PRAGMA version",
        "SET threads = 1",
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW builds",
        "  /* hi */ copy (select 1) to '/tmp/y'",
        "EXPLAIN SELECT 1",
        "CALL pragma_version()",
        "RESET lock_configuration",
    ] {
        let reason = forbidden(sql);
        assert!(!reason.is_empty());
    }
    // table functions that would run other statements or read outside the data
    assert!(q
        .query(
            &format!(
                "SELECT * FROM query('COPY (SELECT 1) TO ''{}''')",
                evil.display()
            ),
            t
        )
        .is_err());
    assert!(!evil.exists());
    assert!(q
        .query("SELECT * FROM read_text('/etc/hostname')", t)
        .is_err());
    assert!(q
        .query("SELECT * FROM glob('/etc/*')", t)
        .map(|r| r.rows.is_empty())
        .unwrap_or(true));
    // bad SQL is Invalid
    assert!(matches!(q.query("SELEC 1", t), Err(QueryError::Invalid(_))));
    assert!(matches!(
        q.query("SELECT nope FROM builds", t),
        Err(QueryError::Invalid(_))
    ));
    assert!(matches!(
        q.query("SELECT * FROM no_such_view", t),
        Err(QueryError::Invalid(_))
    ));
    // reads still work, WITH / FROM-first / DESCRIBE included
    assert_eq!(
        q.query("WITH a AS (SELECT 41 + 1 AS x) SELECT x FROM a", t)
            .unwrap()
            .rows,
        vec![vec![json!(42)]]
    );
    assert_eq!(
        q.query("FROM checks SELECT count(*)", t).unwrap().rows,
        vec![vec![json!(0)]]
    );
    // internal queries with parameters
    let r = q
        .query_internal(
            "SELECT ?::BIGINT + 1, ?::VARCHAR",
            &[json!(1), json!("a")],
            t,
        )
        .unwrap();
    assert_eq!(r.rows, vec![vec![json!(2), json!("a")]]);
    assert!(matches!(
        q.query_internal("DROP VIEW builds", &[], t),
        Err(QueryError::Forbidden(_))
    ));
}

#[test]
fn runaway_query_times_out_and_engine_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let q = QueryEngine::open(dir.path()).unwrap();
    let start = Instant::now();
    let r = q.query(
        "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = 7",
        Duration::from_millis(300),
    );
    assert!(matches!(r, Err(QueryError::Timeout(_))), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(
        q.query("SELECT 1", Duration::from_secs(5)).unwrap().rows,
        vec![vec![json!(1)]]
    );
}

#[test]
fn new_files_are_visible_without_restart_and_pool_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let q = QueryEngine::open(dir.path()).unwrap();
    let t = Duration::from_secs(10);
    assert_eq!(
        q.query("SELECT count(*) FROM events", t).unwrap().rows[0][0],
        json!(0)
    );
    let log = gen_log(1_000, 1);
    let mut p = ParquetProjector::open(dir.path(), small_config()).unwrap();
    p.push(log.entries(0, 0, 500));
    p.flush().unwrap();
    assert_eq!(
        q.query("SELECT count(*) FROM events", t).unwrap().rows[0][0],
        json!(500)
    );
    p.push(log.entries(0, 500, 1000));
    p.flush().unwrap();
    assert_eq!(
        q.query("SELECT count(*) FROM events", t).unwrap().rows[0][0],
        json!(1000)
    );
    // pooled connections vs a fresh connection per query
    let n = 200;
    let s = Instant::now();
    for _ in 0..n {
        q.query("SELECT count(*) FROM checks", t).unwrap();
    }
    let pooled = s.elapsed() / n;
    let c = duckdb::Connection::open_in_memory().unwrap();
    let s = Instant::now();
    for _ in 0..n {
        let c2 = c.try_clone().unwrap();
        drop(c2);
    }
    let connect = s.elapsed() / n;
    eprintln!("query on pooled connection: {pooled:?}/query; opening a connection: {connect:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_projection_makes_events_queryable_quickly_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let log = MemLog::new(2);
    let dyn_log: Arc<dyn Log> = Arc::new(log.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let h = run_projection(
        dyn_log.clone(),
        dir.path().to_path_buf(),
        ProjectorConfig::default(),
        stop_rx,
    )
    .await
    .unwrap();
    let q = Arc::new(QueryEngine::open(dir.path()).unwrap());
    let mut rng = Rng(7);
    let mut progress = h.progress.clone();
    for round in 0..3u64 {
        let start = Instant::now();
        for i in 0..100 {
            let ev = event(&mut rng, round * 100 + i, T0, STEP);
            log.push((i % 2) as u32, serde_json::to_vec(&ev).unwrap());
        }
        let want = (round + 1) * 50;
        tokio::time::timeout(
            Duration::from_secs(5),
            progress.wait_for(|o| o.get(&0) == Some(&want) && o.get(&1) == Some(&want)),
        )
        .await
        .expect("projected in time")
        .unwrap();
        let q2 = q.clone();
        let n = tokio::task::spawn_blocking(move || {
            q2.query("SELECT count(*) FROM events", Duration::from_secs(5))
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(n.rows[0][0], json!((round + 1) * 100));
        let latency = start.elapsed();
        eprintln!("round {round}: appended→queryable in {latency:?}");
        assert!(latency < Duration::from_secs(2), "{latency:?}");
    }
    assert_eq!(
        h.metrics
            .rows_written
            .load(std::sync::atomic::Ordering::Relaxed),
        300
    );
    stop_tx.send(true).unwrap();
    h.task.await.unwrap().unwrap();
    // restart resumes where it stopped: no duplicates
    for i in 0..10 {
        log.push(
            0,
            serde_json::to_vec(&event(&mut rng, 1000 + i, T0, STEP)).unwrap(),
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut h = run_projection(
        dyn_log,
        dir.path().to_path_buf(),
        ProjectorConfig::default(),
        stop_rx,
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        h.progress.wait_for(|o| o.get(&0) == Some(&160)),
    )
    .await
    .unwrap()
    .unwrap();
    stop_tx.send(true).unwrap();
    h.task.await.unwrap().unwrap();
    let got = offsets_of(dir.path());
    assert_eq!(got.len(), 310);
    let mut dedup = got.clone();
    dedup.dedup();
    assert_eq!(dedup, got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_row_for_row_identical_to_live_projection() {
    let dir = tempfile::tempdir().unwrap();
    let log = gen_log(5_000, 2);
    // live: many small flushes
    let mut p = ParquetProjector::open(dir.path(), small_config()).unwrap();
    for part in log.partitions() {
        let entries = log.entries(part, 0, log.end_offset(part));
        for c in entries.chunks(97) {
            p.push(c.to_vec());
            p.flush().unwrap();
        }
    }
    drop(p);
    let live = dump(dir.path());
    assert_eq!(live.iter().map(|(_, r)| r.len()).sum::<usize>(), 5_000);
    let mut seen = Vec::new();
    let cfg = ProjectorConfig {
        flush_rows: 2_000,
        ..ProjectorConfig::default()
    };
    let report = replay(&log, dir.path(), &cfg, &mut |p| seen.push(p))
        .await
        .unwrap();
    assert_eq!(report.events, 5_000);
    assert_eq!(report.rows, 5_000);
    assert_eq!(seen.first().unwrap().done, 0);
    assert_eq!(
        *seen.last().unwrap(),
        ReplayProgress {
            done: 5_000,
            total: 5_000
        }
    );
    assert_eq!(dump(dir.path()), live);
}

/// A log whose start moved (retention): replay keeps the rows below the start, which it
/// cannot read again, cuts the files across it, and rebuilds the rest; the result is the
/// same projection, every offset accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_over_a_shortened_log_keeps_the_rows_below_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = gen_log(3_000, 2);
    let mut p = ParquetProjector::open(dir.path(), small_config()).unwrap();
    for part in log.partitions() {
        let entries = log.entries(part, 0, log.end_offset(part));
        for c in entries.chunks(97) {
            p.push(c.to_vec());
            p.flush().unwrap();
        }
    }
    drop(p);
    let live = dump(dir.path());
    let (s0, s1) = (700, 1_001);
    log.set_start(0, s0);
    log.set_start(1, s1);
    let report = replay(&log, dir.path(), &small_config(), &mut |_| {})
        .await
        .unwrap();
    let kept = report.kept.clone().expect("rows kept");
    assert_eq!(kept.rows, s0 + s1, "{kept:?}");
    assert!(kept.cut > 0, "{kept:?}");
    assert_eq!(report.events, 3_000 - s0 - s1);
    assert_eq!(dump(dir.path()), live);
    let p = ParquetProjector::open(dir.path(), small_config()).unwrap();
    assert!(p.coverage().unwrap().is_consistent());
    let audit = p.audit_offsets().unwrap();
    assert!(
        audit.gaps.is_empty() && audit.duplicates.is_empty(),
        "{audit:?}"
    );
    drop(p);
    // Again: the same (a replay interrupted and run again does the same).
    let again = replay(&log, dir.path(), &small_config(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(again.kept.unwrap().rows, s0 + s1);
    assert_eq!(dump(dir.path()), live);
}

/// Entries that are not valid events (garbage, an unknown kind, and, with validation on as
/// for Kafka, a contract violation) are kept aside in `_deadletter/`, never dropped
/// silently; the valid ones are projected.
#[test]
fn invalid_entries_are_kept_aside_in_the_dead_letter_folder() {
    let dir = tempfile::tempdir().unwrap();
    let evs = [
        json!({"id":"ok","kind":"check","source":"probe","received_at":"2026-11-20T10:00:00Z",
               "project":"web","data":{"name":"error_rate","value":0.02}}),
        json!({"id":"neg","kind":"build","source":"x","received_at":"2026-11-20T10:00:00Z",
               "project":"web","data":{"success":true,"duration_ms":-5}}),
        json!({"id":"k","kind":"teleport","source":"x","project":"web","data":{}}),
    ];
    let mut entries: Vec<LogEntry> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| LogEntry {
            partition: 0,
            offset: i as u64,
            key: Default::default(),
            value: serde_json::to_vec(e).unwrap().into(),
        })
        .collect();
    entries.push(LogEntry {
        partition: 0,
        offset: 3,
        key: Default::default(),
        value: b"\xff not json".to_vec().into(),
    });
    let mut config = small_config();
    config.validate = true;
    let mut p = ParquetProjector::open(dir.path(), config).unwrap();
    p.push(entries);
    let r = p.flush().unwrap();
    assert_eq!((r.rows, r.skipped, r.files), (1, 3, 1));
    assert_eq!(p.committed_offsets().get(&0), Some(&4));
    drop(p);
    let dead = dir
        .path()
        .join("parquet/_deadletter/p0-000000000001-n3.ndjson");
    let text = std::fs::read_to_string(&dead).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["offset"], 1);
    assert!(lines[0]["error"]
        .as_str()
        .unwrap()
        .contains("/data/duration_ms"));
    assert!(lines[1]["error"].as_str().unwrap().contains("/kind"));
    assert_eq!(lines[2]["offset"], 3);
    assert!(lines[0]["value"].as_str().unwrap().contains("\"neg\""));
    // Reopening (recovery) keeps the committed dead letters and no temp file.
    let p = ParquetProjector::open(dir.path(), small_config()).unwrap();
    drop(p);
    assert!(dead.exists());
    assert_eq!(
        std::fs::read_dir(dead.parent().unwrap()).unwrap().count(),
        1
    );
}
