//! The fuzz corpus as a stable regression test (docs/fuzzing.md).
//!
//! Every file of `tests/fuzz-corpus/decode_request/` and `tests/fuzz-corpus/event_from_json/`
//! (the minimized corpus of the cargo-fuzz targets in `fuzz/`) and of
//! `tests/fuzz-corpus/findings/` (every input that ever crashed them) goes through exactly the code the fuzz targets run: `fuzz/src/harness.rs`,
//! included here by path. The harness asserts the decoder's contract: no panic; a
//! whole-request refusal is a 400, 413 or 415 with a reason that fits its cause; one result
//! per event; a rejected event has a message and a JSON pointer into the event as sent
//! (starting with `/` for any object); an accepted event keeps what was sent and survives
//! the log codec and a second validation unchanged.

#[path = "../../../fuzz/src/harness.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz-corpus")
        .join(target)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file of the target's corpus; fails with the names of the files
/// that broke a rule.
fn run_corpus(target: &str, check: fn(&[u8]), at_least: usize) {
    let files = files(&corpus_dir(target));
    assert!(
        files.len() >= at_least,
        "{target}: expected at least {at_least} corpus files, found {}",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let bytes = std::fs::read(path).unwrap();
            catch_unwind(AssertUnwindSafe(|| check(&bytes)))
                .err()
                .map(|panic| {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("{}: {msg}", path.file_name().unwrap().to_string_lossy())
                })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{target}: {} of {} corpus inputs break the contract:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn decode_request_corpus_keeps_the_contract() {
    run_corpus("decode_request", harness::check_decode_request, 50);
}

#[test]
fn event_from_json_corpus_keeps_the_contract() {
    run_corpus("event_from_json", harness::check_event_json, 50);
}

/// Every input that ever broke a fuzz target (`tests/fuzz-corpus/findings/`, named
/// `<target>-<what>`; docs/fuzzing.md, "Findings"), each with a test of its own. A new
/// finding in code this test does not own gets `#[ignore = "<the bug>"]` until it is fixed.
const FINDINGS: &[&str] = &[
    "decode_request-crash-ba785bc2-lone-surrogate-in-array",
    "decode_request-deep-unknown-envelope-field",
    "event_from_json-crash-5636ae4f-deep-unknown-data-field",
    "event_from_json-lone-surrogate-in-unknown-field",
    "event_from_json-number-out-of-range-in-unknown-data-field",
];

fn finding(name: &str) {
    let path = corpus_dir("findings").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if name.starts_with("decode_request-") {
        harness::check_decode_request(&bytes)
    } else {
        harness::check_event_json(&bytes)
    }
}

#[test]
fn every_finding_has_a_test() {
    let on_disk: Vec<String> = files(&corpus_dir("findings"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        on_disk, FINDINGS,
        "tests/fuzz-corpus/findings/ and FINDINGS differ"
    );
}

// The five findings of the first campaigns, all in the ingest fast path (shiplog-events
// raw.rs): unknown values were skipped (IgnoredAny, RawValue) without the checks a `Value`
// parse makes, so events were acknowledged whose log records did not read back. Fixed in
// cf85436.

/// A 129-deep array in an unknown `data` field: acknowledged, record over serde_json's
/// 128 levels.
#[test]
fn finding_deep_unknown_data_field_reads_back() {
    finding("event_from_json-crash-5636ae4f-deep-unknown-data-field");
}

/// The same through `POST /v1/events`, in an unknown envelope field.
#[test]
fn finding_deep_unknown_envelope_field_reads_back() {
    finding("decode_request-deep-unknown-envelope-field");
}

/// A lone surrogate escape (`\ud800`) in an unknown field.
#[test]
fn finding_lone_surrogate_in_unknown_field_is_refused() {
    finding("event_from_json-lone-surrogate-in-unknown-field");
}

/// `1e400` (out of f64 range) in an unknown `data` field.
#[test]
fn finding_number_out_of_range_in_unknown_field_is_refused() {
    finding("event_from_json-number-out-of-range-in-unknown-data-field");
}

/// A JSON array body that is not JSON (lone surrogates in its elements) was split into
/// per-event rejections instead of a 400 for the body.
#[test]
fn finding_invalid_json_array_is_refused_as_a_body() {
    finding("decode_request-crash-ba785bc2-lone-surrogate-in-array");
}

/// The harness itself must be able to fail: a contract break is caught.
#[test]
fn the_harness_catches_a_broken_contract() {
    use serde_json::json;
    use shiplog_events::{Event, FieldError, Origin};
    let sent = json!({"id": "a", "kind": "build", "source": "s", "project": "p",
                      "data": {"success": true}});
    // A rejection with no pointer for an object, or one outside the event, is caught.
    let no_field = Err(FieldError::new("", "bad"));
    let outside = Err(FieldError::new("/nope/deeper", "bad"));
    let no_message = Err(FieldError::new("/data/duration_ms", " "));
    for wrong in [no_field, outside, no_message] {
        assert!(
            harness::check_result(
                Some(&sent),
                &wrong,
                harness::Mode::Envelope,
                Origin::Collector
            )
            .is_err(),
            "{wrong:?}"
        );
    }
    let right = Event::from_json(sent.clone(), Origin::Collector);
    assert_eq!(right.as_ref().unwrap_err().field, "/data/duration_ms");
    harness::check_result(
        Some(&sent),
        &right,
        harness::Mode::Envelope,
        Origin::Collector,
    )
    .unwrap();
    // An accepted event that lost an unknown field is caught.
    let mut full = sent.clone();
    full["data"]["duration_ms"] = json!(5);
    full["trace"] = json!("t-1");
    let mut event = Event::from_json(full.clone(), Origin::Collector).unwrap();
    harness::check_result(
        Some(&full),
        &Ok(event.clone()),
        harness::Mode::Envelope,
        Origin::Collector,
    )
    .unwrap();
    event.extra.clear();
    assert!(harness::check_result(
        Some(&full),
        &Ok(event),
        harness::Mode::Envelope,
        Origin::Collector
    )
    .is_err());
    // Well-formed refusals pass: `text/plain` (index 10) is a 415, a 100-byte body at the
    // 64-byte limit (flags 0x30) a 413.
    harness::check_decode_request(&harness::encode_input(10, 0, b"{}"));
    harness::check_decode_request(&harness::encode_input(1, 0x30, &[b' '; 100]));
}
