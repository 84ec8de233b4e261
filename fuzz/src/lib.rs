//! shiplog's fuzz targets (docs/fuzzing.md). The checks are in [`harness`], which the
//! stable regression test `crates/shiplog-ingest/tests/fuzz_corpus.rs` includes by path.
pub mod harness;
