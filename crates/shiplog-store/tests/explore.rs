#[test]
fn explore() {
    let c = duckdb::Connection::open_in_memory().unwrap();
    for sql in ["SELECT 1", "SELECT 1; SELECT 2", "WITH a AS (SELECT 1) SELECT * FROM a", "FROM range(3)", "VALUES (1)", "DESCRIBE SELECT 1", "SUMMARIZE SELECT 1", "COPY (SELECT 1) TO '/tmp/x.parquet'", "ATTACH 'x.db'", "PRAGMA version", "SET threads=1", "SELEC 1", "EXPLAIN SELECT 1", "SELECT 1; COPY (SELECT 1) TO 'x'", "SHOW TABLES", "PIVOT (SELECT 1 a) ON a", "SELECT * FROM query('COPY (SELECT 1) TO ''/tmp/y.csv''')", ""] {
        let r: String = c.query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |r| r.get(0)).unwrap();
        println!("{sql:?} => {}", &r[..r.len().min(160)]);
    }
}
