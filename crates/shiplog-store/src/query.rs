//! `QueryEngine`: DuckDB views over the Parquet projection, and a confined, read-only
//! query surface for users.

use crate::projector::layout::write_schema_files;
use crate::projector::parquet_dir;
use crate::schema::{data_fields, ENVELOPE_COLUMNS};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use duckdb::{Config, Connection};
use serde_json::{Map, Number, Value};
use shiplog_events::Kind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Most rows a query may return (add a LIMIT or aggregate).
pub const MAX_RESULT_ROWS: usize = 1_000_000;

/// A query's result: column names and rows of JSON values (timestamps as RFC 3339
/// strings, lists as arrays, structs as objects, 128-bit integers as numbers).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Why a query failed, tagged for the HTTP status a caller should answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Not allowed on this surface (write, DDL, settings, files outside the data): 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Bad SQL (syntax, unknown column or view, type error): 400.
    #[error("invalid query: {0}")]
    Invalid(String),
    /// Ran longer than its timeout and was interrupted: 504 (or 400).
    #[error("query timed out after {0:?}")]
    Timeout(Duration),
    /// Anything else: 500.
    #[error("query failed: {0}")]
    Internal(String),
}

/// DuckDB (in memory) with one view per kind and `events`, over `<data_dir>/parquet/`.
/// Views glob the files at every query, so newly committed files are seen at once.
/// `Sync`: queries run on pooled connections of one database.
pub struct QueryEngine {
    root: PathBuf,
    base: Mutex<Connection>,
    pool: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("root", &self.root)
            .finish()
    }
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `CREATE VIEW` statements of every view.
fn view_sql(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut union = Vec::new();
    // Kafka processors in a consumer group project each partition into its own directory
    // under `_partitions/` (created before any view that needs it).
    let partitions = root.join("_partitions");
    let with_partitions = partitions.is_dir();
    for kind in Kind::ALL {
        let glob = root.join(kind.as_str()).join("*").join("*.parquet");
        let source = if with_partitions {
            let pglob = partitions
                .join("*")
                .join("parquet")
                .join(kind.as_str())
                .join("*")
                .join("*.parquet");
            format!(
                "[{}, {}]",
                sql_str(&glob.to_string_lossy()),
                sql_str(&pglob.to_string_lossy())
            )
        } else {
            sql_str(&glob.to_string_lossy())
        };
        let mut cols: Vec<&str> = ENVELOPE_COLUMNS[..9].to_vec();
        cols.extend(data_fields(kind).iter().map(|(n, _)| *n));
        cols.extend(&ENVELOPE_COLUMNS[9..]);
        let cols = cols
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(format!(
            "CREATE OR REPLACE VIEW {} AS SELECT {cols} FROM read_parquet({}, union_by_name = true, hive_partitioning = false)",
            kind.view_name(),
            source,
        ));
        let env = ENVELOPE_COLUMNS
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        union.push(format!(
            "SELECT '{}' AS kind, {env} FROM {}",
            kind.as_str(),
            kind.view_name()
        ));
    }
    out.push(format!(
        "CREATE OR REPLACE VIEW events AS {}",
        union.join(" UNION ALL ")
    ));
    out
}

/// Attempts of a query whose files vanished under it (see [`QueryEngine::run`]).
const MAX_ATTEMPTS: u64 = 20;

/// DuckDB's default memory limit here (it would otherwise take 80% of the machine's RAM).
pub const DEFAULT_MEMORY_MB: u64 = 128;

impl QueryEngine {
    /// Opens DuckDB over `<data_dir>/parquet/` (creating it and the schema-only files so
    /// every view exists from the start), creates the views, then confines the database:
    /// only the parquet directory is readable, no other file or network access, and the
    /// configuration is locked.
    pub fn open(data_dir: &Path) -> Result<QueryEngine, crate::StoreError> {
        Self::open_with_memory(data_dir, DEFAULT_MEMORY_MB)
    }

    /// [`Self::open`] with DuckDB's memory limit in MiB (its buffer manager: query
    /// intermediates and cached Parquet data; beyond it DuckDB spills or fails the query).
    pub fn open_with_memory(
        data_dir: &Path,
        memory_mb: u64,
    ) -> Result<QueryEngine, crate::StoreError> {
        let root = parquet_dir(data_dir);
        crate::fsutil::create_dir_durable(&root)?;
        write_schema_files(&root)?;
        let root = root
            .canonicalize()
            .map_err(|source| crate::StoreError::Io {
                path: root.clone(),
                source,
            })?;
        let conn = Connection::open_in_memory_with_flags(Config::default())?;
        for v in view_sql(&root) {
            conn.execute_batch(&v)?;
        }
        let mut allowed = root.to_string_lossy().into_owned();
        if !allowed.ends_with('/') {
            allowed.push('/');
        }
        conn.execute_batch(&format!(
            "SET memory_limit = '{}MiB'; SET allocator_flush_threshold = '16MiB'; SET allowed_directories = [{}]; SET enable_external_access = false; SET autoinstall_known_extensions = false; SET autoload_known_extensions = false; SET lock_configuration = true;",
            memory_mb.max(16),
            sql_str(&allowed)
        ))?;
        Ok(QueryEngine {
            root,
            base: Mutex::new(conn),
            pool: Mutex::new(Vec::new()),
        })
    }

    /// The parquet directory the views read.
    pub fn parquet_dir(&self) -> &Path {
        &self.root
    }

    fn take_conn(&self) -> Result<Connection, QueryError> {
        if let Some(c) = self.pool.lock().expect("pool lock").pop() {
            return Ok(c);
        }
        self.base
            .lock()
            .expect("base lock")
            .try_clone()
            .map_err(|e| QueryError::Internal(e.to_string()))
    }

    fn give_back(&self, c: Connection) {
        let mut pool = self.pool.lock().expect("pool lock");
        if pool.len() < 8 {
            pool.push(c);
        }
    }

    /// Runs one user query: a single read statement (SELECT, WITH, FROM-first, VALUES,
    /// DESCRIBE/SUMMARIZE of a view …), interrupted after `timeout`.
    pub fn query(&self, sql: &str, timeout: Duration) -> Result<QueryResult, QueryError> {
        self.check_read_only(sql)?;
        self.run(sql, &[], timeout)
    }

    /// Runs a trusted query (dashboards, rules) with positional parameters (`?` or `$1`):
    /// same views and confinement, still a single read statement, no user-facing reasons.
    pub fn query_internal(
        &self,
        sql: &str,
        params: &[Value],
        timeout: Duration,
    ) -> Result<QueryResult, QueryError> {
        self.check_read_only(sql)?;
        self.run(sql, params, timeout)
    }

    /// Accepts exactly one statement that DuckDB's serializer accepts as a SELECT.
    fn check_read_only(&self, sql: &str) -> Result<(), QueryError> {
        let keyword = first_keyword(sql);
        const REFUSED: &[&str] = &[
            "ATTACH",
            "DETACH",
            "INSTALL",
            "LOAD",
            "COPY",
            "EXPORT",
            "IMPORT",
            "PRAGMA",
            "SET",
            "RESET",
            "CREATE",
            "DROP",
            "ALTER",
            "INSERT",
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "MERGE",
            "CALL",
            "CHECKPOINT",
            "VACUUM",
            "ANALYZE",
            "USE",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "ABORT",
            "START",
            "PREPARE",
            "EXECUTE",
            "DEALLOCATE",
            "GRANT",
            "REVOKE",
            "COMMENT",
            "UPDATE_EXTENSIONS",
            "FORCE",
        ];
        if let Some(k) = &keyword {
            if REFUSED.contains(&k.as_str()) {
                return Err(QueryError::Forbidden(format!(
                    "{k} statements are not allowed: the query API is read-only (one SELECT, WITH, FROM, VALUES, DESCRIBE or SUMMARIZE statement)"
                )));
            }
        }
        let conn = self.take_conn()?;
        let r: Result<String, _> =
            conn.query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |row| {
                row.get(0)
            });
        self.give_back(conn);
        let json = r.map_err(|e| QueryError::Internal(e.to_string()))?;
        let v: Value =
            serde_json::from_str(&json).map_err(|e| QueryError::Internal(e.to_string()))?;
        if v.get("error").and_then(Value::as_bool) == Some(true) {
            let etype = v.get("error_type").and_then(Value::as_str).unwrap_or("");
            let msg = v
                .get("error_message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(if etype == "parser" {
                QueryError::Invalid(msg)
            } else {
                QueryError::Forbidden(format!(
                    "only read statements are allowed (SELECT, WITH, FROM, VALUES, DESCRIBE, SUMMARIZE){}",
                    keyword.map(|k| format!("; got {k}")).unwrap_or_default()
                ))
            });
        }
        let n = v
            .get("statements")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match n {
            1 => Ok(()),
            0 => Err(QueryError::Invalid("empty query".into())),
            n => Err(QueryError::Forbidden(format!(
                "one statement per query; got {n}"
            ))),
        }
    }

    /// Runs a query; when a file it globbed vanished before it was read (a merge,
    /// compaction or retention replaced it meanwhile), runs it again over the new set of
    /// files, after a short pause that grows with each attempt: merges follow flushes, so
    /// under load a long query can meet several in a row.
    fn run(
        &self,
        sql: &str,
        params: &[Value],
        timeout: Duration,
    ) -> Result<QueryResult, QueryError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.run_once(sql, params, timeout) {
                Err(QueryError::Invalid(m))
                    if attempts < MAX_ATTEMPTS
                        && m.contains("Cannot open file")
                        && m.contains("No such file") =>
                {
                    tracing::debug!(error = %m, attempts, "a Parquet file vanished under a query; running it again");
                    std::thread::sleep(Duration::from_millis(10 * attempts.min(10)));
                }
                r => return r,
            }
        }
    }

    fn run_once(
        &self,
        sql: &str,
        params: &[Value],
        timeout: Duration,
    ) -> Result<QueryResult, QueryError> {
        let conn = self.take_conn()?;
        let interrupt = conn.interrupt_handle();
        let timed_out = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let flag = timed_out.clone();
        let watchdog = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
                flag.store(true, Ordering::SeqCst);
                interrupt.interrupt();
            }
        });
        let result = execute(&conn, sql, params);
        let _ = done_tx.send(());
        let _ = watchdog.join();
        let timed_out = timed_out.load(Ordering::SeqCst);
        if !timed_out {
            self.give_back(conn);
        }
        match result {
            Ok(r) => Ok(r),
            Err(_) if timed_out => Err(QueryError::Timeout(timeout)),
            Err(e) => Err(e),
        }
    }
}

fn execute(conn: &Connection, sql: &str, params: &[Value]) -> Result<QueryResult, QueryError> {
    let mut stmt = conn.prepare(sql).map_err(classify)?;
    let params: Vec<duckdb::types::Value> = params.iter().map(json_to_duck).collect();
    let arrow = stmt
        .query_arrow(duckdb::params_from_iter(params))
        .map_err(classify)?;
    let schema = arrow.get_schema();
    let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows = Vec::new();
    for batch in arrow {
        if rows.len() + batch.num_rows() > MAX_RESULT_ROWS {
            return Err(QueryError::Invalid(format!(
                "the result has more than {MAX_RESULT_ROWS} rows; add a LIMIT or aggregate"
            )));
        }
        batch_rows(&batch, &mut rows);
    }
    Ok(QueryResult { columns, rows })
}

fn json_to_duck(v: &Value) -> duckdb::types::Value {
    use duckdb::types::Value as D;
    match v {
        Value::Null => D::Null,
        Value::Bool(b) => D::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => D::BigInt(i),
            (None, Some(u)) => D::UBigInt(u),
            _ => D::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => D::Text(s.clone()),
        other => D::Text(other.to_string()),
    }
}

fn classify(e: duckdb::Error) -> QueryError {
    let msg = e.to_string();
    let head = msg
        .split(':')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if head.contains("permission") {
        QueryError::Forbidden(msg)
    } else if head.contains("interrupt") {
        QueryError::Internal(msg)
    } else if [
        "parser",
        "binder",
        "catalog",
        "conversion",
        "invalid input",
        "type mismatch",
        "syntax",
        "not implemented",
        "out of range",
        "invalid",
        "io",
        "constraint",
        "dependency",
        "sequence",
        "serialization",
    ]
    .iter()
    .any(|k| head.contains(k))
    {
        QueryError::Invalid(msg)
    } else {
        QueryError::Internal(msg)
    }
}

/// The first SQL keyword (upper case), skipping whitespace, comments and parentheses.
fn first_keyword(sql: &str) -> Option<String> {
    let mut s = sql;
    loop {
        s = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(' || c == ';');
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |x| x.1);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |x| x.1);
        } else {
            break;
        }
    }
    let k: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!k.is_empty()).then(|| k.to_ascii_uppercase())
}

fn batch_rows(batch: &RecordBatch, rows: &mut Vec<Vec<Value>>) {
    for i in 0..batch.num_rows() {
        rows.push(batch.columns().iter().map(|c| cell(c, i)).collect());
    }
}

fn micros_to_rfc3339(us: i64) -> Value {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us) {
        Some(t) => Value::String(shiplog_events::format_rfc3339(&t)),
        None => Value::Null,
    }
}

fn f64_value(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// One cell of an Arrow array as JSON.
pub(crate) fn cell(a: &ArrayRef, i: usize) -> Value {
    use arrow::datatypes as t;
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => a.as_primitive::<t::Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<t::Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<t::Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<t::Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<t::UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<t::UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<t::UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<t::UInt64Type>().value(i).into(),
        DataType::Float16 => f64_value(a.as_primitive::<t::Float16Type>().value(i).to_f64()),
        DataType::Float32 => f64_value(a.as_primitive::<t::Float32Type>().value(i) as f64),
        DataType::Float64 => f64_value(a.as_primitive::<t::Float64Type>().value(i)),
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).to_string()),
        DataType::Decimal128(_, scale) => {
            let v = a.as_primitive::<t::Decimal128Type>().value(i);
            if *scale == 0 {
                match i64::try_from(v) {
                    Ok(x) => x.into(),
                    Err(_) => Value::String(v.to_string()),
                }
            } else {
                f64_value(v as f64 / 10f64.powi(*scale as i32))
            }
        }
        DataType::Timestamp(unit, _) => {
            let us = match unit {
                TimeUnit::Second => a
                    .as_primitive::<t::TimestampSecondType>()
                    .value(i)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => a
                    .as_primitive::<t::TimestampMillisecondType>()
                    .value(i)
                    .saturating_mul(1000),
                TimeUnit::Microsecond => a.as_primitive::<t::TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => {
                    a.as_primitive::<t::TimestampNanosecondType>().value(i) / 1000
                }
            };
            micros_to_rfc3339(us)
        }
        DataType::Date32 => {
            let d = a.as_primitive::<t::Date32Type>().value(i);
            chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163).map_or(Value::Null, |d| {
                Value::String(d.format("%Y-%m-%d").to_string())
            })
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let v = l.value(i);
            Value::Array((0..v.len()).map(|j| cell(&v, j)).collect())
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            let v = l.value(i);
            Value::Array((0..v.len()).map(|j| cell(&v, j)).collect())
        }
        DataType::FixedSizeList(_, _) => {
            let l = a.as_fixed_size_list();
            let v = l.value(i);
            Value::Array((0..v.len()).map(|j| cell(&v, j)).collect())
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut m = Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), cell(c, i));
            }
            Value::Object(m)
        }
        DataType::Map(_, _) => {
            let m = a.as_map();
            let entries = m.value(i);
            let (keys, vals) = (entries.column(0), entries.column(1));
            let mut out = Map::new();
            for j in 0..entries.len() {
                let k = match cell(keys, j) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(k, cell(vals, j));
            }
            Value::Object(out)
        }
        _ => {
            let opts = arrow::util::display::FormatOptions::default();
            match arrow::util::display::ArrayFormatter::try_new(a.as_ref(), &opts) {
                Ok(f) => Value::String(f.value(i).to_string()),
                Err(_) => Value::Null,
            }
        }
    }
}
