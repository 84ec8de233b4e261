//! Property tests of the codec: valid events survive the log format and `from_json`
//! unchanged (unknown fields included), and no input makes the decoders panic.
mod common;

use common::{any_json, collect_pointers, same_json, valid_event};
use proptest::prelude::*;
use serde_json::{json, Value};
use shiplog_events::{
    format_rfc3339, from_cloudevent, validate_data, Event, Kind, Origin, ENVELOPE_FIELDS,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(512), ..ProptestConfig::default() })]

    #[test]
    fn valid_events_round_trip(value in valid_event()) {
        let event = Event::from_json(value.clone(), Origin::Internal)
            .map_err(|e| TestCaseError::fail(format!("{e} in {value}")))?;

        // Log codec.
        let bytes = event.to_json_bytes();
        let decoded = Event::from_json_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&decoded, &event);

        // Stored form is valid input again, and gives the same event.
        let again = Event::from_json(serde_json::to_value(&event).unwrap(), Origin::Internal)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again, &event);
        prop_assert_eq!(again.to_json_bytes(), bytes);

        // Nothing sent was lost: unknown envelope fields and all of data, as values.
        let sent = value.as_object().unwrap();
        for (k, v) in sent {
            if !ENVELOPE_FIELDS.contains(&k.as_str()) {
                prop_assert_eq!(event.extra.get(k), Some(v));
            }
        }
        prop_assert!(same_json(&sent["data"], &Value::Object(event.data.clone())));
        prop_assert_eq!(event.extra.len(), sent.keys().filter(|k| !ENVELOPE_FIELDS.contains(&k.as_str())).count());
    }

    #[test]
    fn from_json_never_panics(value in any_json()) {
        let _ = Event::from_json(value.clone(), Origin::Collector);
        let _ = Event::from_json(value.clone(), Origin::Internal);
        let _ = from_cloudevent(value.clone());
        if let Value::Object(m) = &value {
            for kind in Kind::ALL {
                let _ = validate_data(kind, m);
            }
        }
    }

    #[test]
    fn near_valid_events_never_panic_and_name_a_field(
        value in valid_event(),
        path_pick in any::<prop::sample::Index>(),
        replacement in any_json(),
    ) {
        // Replace one value somewhere in the event with arbitrary JSON.
        let mut value = value;
        let mut pointers = Vec::new();
        collect_pointers(&value, String::new(), &mut pointers);
        let pointer = path_pick.get(&pointers).clone();
        *value.pointer_mut(&pointer).unwrap() = replacement;
        if let Err(e) = Event::from_json(value.clone(), Origin::Internal) {
            // The error names a field of the event (or the event itself).
            prop_assert!(e.field.is_empty() || value.pointer(&e.field).is_some()
                || value.pointer(e.field.rsplit_once('/').unwrap().0).is_some(),
                "{} not in {}", e.field, value);
        }
    }
}

#[test]
fn time_edges() {
    let ev = |t: &str| {
        json!({"id": "1", "kind": "check", "source": "s", "project": "p", "time": t,
               "data": {"name": "health"}})
    };
    // Sub-microsecond digits are dropped when the event is built, so the log keeps it exact.
    let e = Event::from_json(ev("2026-11-21T10:00:00.123456789+02:00"), Origin::Collector).unwrap();
    assert_eq!(
        format_rfc3339(&e.time.unwrap()),
        "2026-11-21T08:00:00.123456Z"
    );
    assert_eq!(Event::from_json_bytes(&e.to_json_bytes()).unwrap(), e);
    // Leap seconds, at 23:59:60 UTC only.
    let e = Event::from_json(ev("2016-12-31T23:59:60.5Z"), Origin::Collector).unwrap();
    assert_eq!(Event::from_json_bytes(&e.to_json_bytes()).unwrap(), e);
    let e2 = Event::from_json(serde_json::to_value(&e).unwrap(), Origin::Collector).unwrap();
    assert_eq!(e2, e);
    assert!(Event::from_json(ev("2017-01-01T00:59:60+01:00"), Origin::Collector).is_ok());
    for bad in [
        "2016-12-31T22:59:60Z",
        "2026-11-21 10:00:00Z",
        "2026-11-21T10:00:00",
        "2026-11-21T10:00:00+0200",
        "2026-11-21T10:00:00.Z",
        "2026-11-21T24:00:00Z",
        "2026-11-21T10:00:00+24:00",
        "2026-11-21T10:00:00\u{2212}02:00",
        "2025-02-29T10:00:00Z",
        "0000-01-01T00:00:00+00:01",
        "9999-12-31T23:59:59-00:01",
        "",
    ] {
        let e = Event::from_json(ev(bad), Origin::Collector).unwrap_err();
        assert_eq!(e.field, "/time", "{bad:?}");
    }
    assert!(Event::from_json(ev("2024-02-29t10:00:00z"), Origin::Collector).is_ok());
    assert!(Event::from_json(ev("0000-01-01T00:00:00Z"), Origin::Collector).is_ok());
    assert!(Event::from_json(ev("9999-12-31T23:59:59.999999Z"), Origin::Collector).is_ok());
}

#[test]
fn counts_sent_as_floats_are_stored_as_integers() {
    let e = Event::from_json(
        json!({"id": "1", "kind": "build", "source": "s", "project": "p",
               "data": {"success": true, "duration_ms": 1200.0, "other": 1.0}}),
        Origin::Collector,
    )
    .unwrap();
    assert_eq!(e.data["duration_ms"].as_u64(), Some(1200));
    assert!(e.data["other"].is_f64(), "unknown fields are kept as sent");
}

#[test]
fn key_limits() {
    let ev = |project: &str| {
        json!({"id": "1", "kind": "check", "source": "s", "project": project,
               "data": {"name": "health"}})
    };
    assert!(Event::from_json(ev(&"p".repeat(512)), Origin::Collector).is_ok());
    assert_eq!(
        Event::from_json(ev(&"p".repeat(513)), Origin::Collector)
            .unwrap_err()
            .field,
        "/project"
    );
    // 512 bytes, not characters (documented in the schema).
    assert!(Event::from_json(ev(&"é".repeat(256)), Origin::Collector).is_ok());
    assert!(Event::from_json(ev(&"é".repeat(257)), Origin::Collector).is_err());
}

/// `cargo test --release -p shiplog-events --test codec_props -- --ignored --nocapture`
#[test]
#[ignore = "timing, run by hand in release mode"]
fn validate_throughput() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/examples/valid/build-vite-production.json"
    );
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let data = event["data"].as_object().unwrap().clone();
    let n = 1_000_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        validate_data(Kind::Build, std::hint::black_box(&data)).unwrap();
    }
    let per = start.elapsed() / n;
    let start = std::time::Instant::now();
    for _ in 0..n / 10 {
        Event::from_json(std::hint::black_box(event.clone()), Origin::Collector).unwrap();
    }
    let per_event = start.elapsed() / (n / 10);
    println!("validate_data (vite build, 13 fields, 9 nested objects): {per:?}; from_json incl. clone: {per_event:?}");
}
