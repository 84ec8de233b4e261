//! Security: the query API cannot read outside shiplog's data, write, or change its
//! settings, over HTTP (crates/shiplog-store/tests/store.rs checks the engine itself).

mod support;

use serde_json::json;
use std::path::Path;
use support::security::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_cannot_read_outside_the_data_or_write() {
    let s = start("", &[]);
    let url = s.server.url.clone();
    let c = client();
    seed(&c, &url).await;
    let root = &s.root;
    let parquet = root.join("data/parquet").canonicalize().unwrap();
    let p = parquet.display().to_string();
    let r = root.display().to_string();
    let segment = std::fs::read_dir(root.join("data/log"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".seg"))
        .expect("a log segment");
    // Files that must not appear.
    let written = [
        root.join("copy.csv"),
        parquet.join("copy.parquet"),
        root.join("attached.db"),
        root.join("q.csv"),
        root.join("multi.csv"),
    ];

    // (SQL, what it tries)
    let attempts: Vec<(String, &str)> = vec![
        (
            "SELECT * FROM read_csv('/etc/passwd')".into(),
            "read a system file",
        ),
        (
            "SELECT * FROM read_csv_auto('/etc/passwd', header = false)".into(),
            "read a system file",
        ),
        (
            "SELECT * FROM read_text('/etc/passwd')".into(),
            "read a system file",
        ),
        (
            "SELECT * FROM read_blob('/etc/passwd')".into(),
            "read a system file",
        ),
        (
            "SELECT * FROM '/etc/passwd'".into(),
            "replacement scan of a system file",
        ),
        (
            "SELECT * FROM read_json_objects('/etc/passwd')".into(),
            "read a system file",
        ),
        (
            "SELECT * FROM read_parquet('/etc/passwd')".into(),
            "read a system file",
        ),
        ("SELECT * FROM glob('/')".into(), "list the root"),
        ("SELECT * FROM glob('/*')".into(), "list the root"),
        (
            "SELECT * FROM glob('/etc/*')".into(),
            "list a system folder",
        ),
        (
            format!("SELECT * FROM read_text('{p}/../../shiplog.toml')"),
            "read the config (token secrets) through ../",
        ),
        (
            format!("SELECT * FROM read_text('{p}/../../../../../../../../etc/passwd')"),
            "escape the parquet dir with ../",
        ),
        (
            format!("SELECT * FROM read_blob('{p}/../log/{segment}')"),
            "read the raw log through ../",
        ),
        (
            format!("SELECT * FROM glob('{p}/../*')"),
            "list the data dir through ../",
        ),
        (
            format!("SELECT * FROM glob('{p}/../../*')"),
            "list the data dir's parent through ../",
        ),
        (
            format!("SELECT * FROM read_text('{p}/./../../shiplog.toml')"),
            "read the config through ./../",
        ),
        (
            format!("SELECT * FROM read_csv('{r}/shiplog.toml')"),
            "read the config by its path",
        ),
        (
            format!("SELECT * FROM read_text('{p}_sibling/x')"),
            "a sibling with the parquet dir's name as prefix",
        ),
        (
            format!("SELECT getenv('{READ_A_ENV}')"),
            "read a token secret from the environment",
        ),
        (
            "SELECT * FROM read_csv('https://example.com/x.csv')".into(),
            "network access",
        ),
        (format!("COPY (SELECT 1) TO '{r}/copy.csv'"), "write a file"),
        (
            format!("COPY (SELECT 1) TO '{p}/copy.parquet' (FORMAT parquet)"),
            "write into the parquet dir",
        ),
        (
            format!("SELECT * FROM query('COPY (SELECT 1) TO ''{r}/q.csv''')"),
            "write through query()",
        ),
        (
            format!("ATTACH '{r}/attached.db' AS x"),
            "create a database file",
        ),
        ("ATTACH ':memory:' AS m".into(), "attach"),
        ("INSTALL httpfs".into(), "install an extension"),
        ("LOAD httpfs".into(), "load an extension"),
        (
            format!("LOAD '{r}/evil.duckdb_extension'"),
            "load a file as an extension",
        ),
        ("PRAGMA database_list".into(), "pragma"),
        ("PRAGMA enable_profiling".into(), "pragma"),
        (
            "SET enable_external_access = true".into(),
            "reopen file access",
        ),
        (
            "SET allowed_directories = ['/']".into(),
            "widen the sandbox",
        ),
        ("RESET lock_configuration".into(), "unlock the settings"),
        (
            "SELECT set_config('threads', '1')".into(),
            "set through a function",
        ),
        ("CREATE TABLE t AS SELECT 1 AS x".into(), "create a table"),
        (
            "CREATE OR REPLACE VIEW builds AS SELECT 1".into(),
            "replace a view",
        ),
        ("CREATE MACRO m() AS 1".into(), "create a macro"),
        ("DROP VIEW builds".into(), "drop a view"),
        ("INSERT INTO builds SELECT * FROM builds".into(), "insert"),
        ("SELECT 1; SELECT 2".into(), "two statements"),
        (
            format!("SELECT 1; COPY (SELECT 1) TO '{r}/multi.csv'"),
            "a write after a read",
        ),
        ("CALL pragma_version()".into(), "call"),
        (
            "EXPORT DATABASE '/tmp/shiplog-export-test'".into(),
            "export",
        ),
        ("CHECKPOINT".into(), "checkpoint"),
        ("DETACH memory".into(), "detach"),
    ];
    let mut failures = Vec::new();
    for (q, what) in &attempts {
        let (status, body) = sql(&c, &url, Who::Admin, q).await;
        let text = body.to_string();
        let leaked = [
            "root:x:0",
            "[[tokens]]",
            "sec-",
            "/etc/",
            "/bin",
            "leak-b-commit",
        ]
        .iter()
        .find(|m| text.contains(*m) && !q.contains(*m));
        let refused = status == 400 || status == 403;
        // glob() of a folder it may not list answers no rows rather than an error.
        let empty = status == 200 && body["rows"] == json!([]);
        if !(refused || (q.contains("glob(") && empty)) || leaked.is_some() {
            failures.push(format!("{what}: {q} -> {status} {text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "not confined:\n{}",
        failures.join("\n")
    );
    for f in &written {
        assert!(!f.exists(), "{} was written", f.display());
    }
    assert!(!Path::new("/tmp/shiplog-export-test").exists());
    // Nothing was created or replaced: the views are intact, the table does not exist.
    let (status, body) = sql(&c, &url, Who::Admin, "SELECT count(*) FROM builds").await;
    assert_eq!(
        (status, body["rows"].clone()),
        (200, json!([[2]])),
        "{body}"
    );
    let (status, _) = sql(&c, &url, Who::Admin, "SELECT * FROM t").await;
    assert_eq!(status, 400);
    // And the sandbox is not "refuse everything": shiplog's own files are readable.
    let (status, body) = sql(
        &c,
        &url,
        Who::Admin,
        &format!("SELECT count(*) FROM read_parquet('{p}/build/date=*/*.parquet')"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([[2]]));
}

// ---------------------------------------------------------------------------------------
// Path traversal through dashboard names.
