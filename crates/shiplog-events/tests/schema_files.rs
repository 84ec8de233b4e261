//! `schemas/v1/*.json` must be exactly what the Rust rule tables render
//! (`shiplog_events::schema::v1_schemas`). Run with `SHIPLOG_BLESS=1` to rewrite them.
use std::path::PathBuf;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/v1")
}

#[test]
fn schema_files_match_the_rust_rules() {
    let bless = std::env::var_os("SHIPLOG_BLESS").is_some();
    let dir = schema_dir();
    let mut stale = Vec::new();
    let expected = shiplog_events::schema::v1_schemas();
    for (name, schema) in &expected {
        let text = serde_json::to_string_pretty(schema).unwrap() + "\n";
        let path = dir.join(name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name.clone());
        }
    }
    // No stray schema files either.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") && !expected.iter().any(|(n, _)| *n == name) {
            stale.push(format!("{name} (not rendered by v1_schemas)"));
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/v1 differs from the Rust rules for {stale:?}; \
         rerun with SHIPLOG_BLESS=1 to regenerate"
    );
}
