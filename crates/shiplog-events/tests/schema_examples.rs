//! The JSON Schemas in `schemas/v1/` and the Rust validation must agree on every example in
//! `schemas/examples/`.
//!
//! - `valid/*.json`: accepted by `event.json`, by the kind's own schema (`<kind>.json`), and by
//!   `Event::from_json` (as `Origin::Internal`; `decision` examples are also checked to be
//!   refused from `Origin::Collector` at `/kind`, which a schema cannot express).
//! - `invalid/*.json`: `invalid/expected.json` maps each file to the JSON pointer of its one
//!   problem. `Event::from_json` must reject it with exactly that `field`. `event.json` must
//!   reject it, and every schema error's instance path must be that pointer or its parent
//!   (a missing required field is reported by JSON Schema on the object that lacks it, e.g.
//!   `/data` for a missing `/data/duration_ms`, or `""` for a missing `/id`).
//!
//! Schemas are loaded from disk and registered under their `$id`s: no network.
//!
//! A property test then does the same on generated events: valid ones, and ones with one
//! value replaced (by arbitrary JSON or a near miss) or removed. Both must give the same
//! verdict, and the Rust field must be a schema error's instance path or a child of one.
mod common;

use jsonschema::{Draft, Resource, Validator};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use shiplog_events::{Event, Kind, Origin};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn schemas_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_files(dir: &Path) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                read_json(&p),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Validators by schema file name (`event.json`, `build.json`, …), all sharing one registry
/// of the local files; built once.
fn validators() -> &'static BTreeMap<String, Validator> {
    static V: OnceLock<BTreeMap<String, Validator>> = OnceLock::new();
    V.get_or_init(build_validators)
}

fn build_validators() -> BTreeMap<String, Validator> {
    let schemas = json_files(&schemas_root().join("v1"));
    assert!(
        schemas.len() >= 8,
        "expected envelope, event and 6 kind schemas"
    );
    let resources: Vec<(String, Resource)> = schemas
        .iter()
        .map(|(name, s)| {
            let id = s["$id"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no $id"));
            assert!(id.ends_with(&format!("/{name}")), "{name}: $id {id}");
            (id.to_string(), Resource::from_contents(s.clone()).unwrap())
        })
        .collect();
    schemas
        .iter()
        .map(|(name, s)| {
            let v = jsonschema::options()
                .with_draft(Draft::Draft202012)
                .should_validate_formats(true)
                .with_resources(resources.clone().into_iter())
                .build(s)
                .unwrap_or_else(|e| panic!("{name} does not compile: {e}"));
            (name.clone(), v)
        })
        .collect()
}

fn schema_errors(v: &Validator, instance: &Value) -> Vec<(String, String)> {
    v.iter_errors(instance)
        .map(|e| (e.instance_path.to_string(), e.to_string()))
        .collect()
}

fn parent(pointer: &str) -> &str {
    pointer.rfind('/').map_or("", |i| &pointer[..i])
}

#[test]
fn valid_examples_pass_schema_and_rust() {
    let validators = validators();
    let examples = json_files(&schemas_root().join("examples/valid"));
    let mut per_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, example) in &examples {
        let errors = schema_errors(&validators["event.json"], example);
        if !errors.is_empty() {
            failures.push(format!("{name}: event.json rejects it: {errors:?}"));
        }
        match Event::from_json(example.clone(), Origin::Internal) {
            Err(e) => failures.push(format!("{name}: Rust rejects it: {e}")),
            Ok(event) => {
                *per_kind.entry(event.kind).or_default() += 1;
                let own = &validators[&format!("{}.json", event.kind)];
                let errors = schema_errors(own, example);
                if !errors.is_empty() {
                    failures.push(format!(
                        "{name}: {}.json rejects it: {errors:?}",
                        event.kind
                    ));
                }
                if event.kind == Kind::Decision {
                    let e = Event::from_json(example.clone(), Origin::Collector).unwrap_err();
                    assert_eq!(e.field, "/kind", "{name}");
                }
                // Unknown envelope fields are kept.
                for (k, v) in example.as_object().unwrap() {
                    if !shiplog_events::ENVELOPE_FIELDS.contains(&k.as_str()) {
                        assert_eq!(event.extra.get(k), Some(v), "{name}: extra {k}");
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for kind in Kind::ALL {
        assert!(
            per_kind.get(&kind).copied().unwrap_or(0) >= 2,
            "need at least 2 valid examples of {kind}, have {per_kind:?}"
        );
    }
}

#[test]
fn invalid_examples_fail_schema_and_rust_at_the_same_field() {
    let validators = validators();
    let dir = schemas_root().join("examples/invalid");
    let expected: Map<String, Value> = match read_json(&dir.join("expected.json")) {
        Value::Object(m) => m,
        _ => panic!("expected.json must be an object"),
    };
    let examples: Vec<(String, Value)> = json_files(&dir)
        .into_iter()
        .filter(|(n, _)| n != "expected.json")
        .collect();
    assert!(examples.len() >= 15, "need at least 15 invalid examples");
    let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
    for key in expected.keys() {
        assert!(
            names.contains(&key.as_str()),
            "expected.json names missing file {key}"
        );
    }

    let mut failures = Vec::new();
    for (name, example) in &examples {
        let Some(pointer) = expected.get(name).and_then(Value::as_str) else {
            failures.push(format!("{name}: no expected pointer in expected.json"));
            continue;
        };
        match Event::from_json(example.clone(), Origin::Internal) {
            Ok(_) => failures.push(format!("{name}: Rust accepts it")),
            Err(e) if e.field != pointer => failures.push(format!(
                "{name}: Rust says {:?} ({}), expected {pointer:?}",
                e.field, e.error
            )),
            Err(_) => {}
        }
        let errors = schema_errors(&validators["event.json"], example);
        if errors.is_empty() {
            failures.push(format!("{name}: event.json accepts it"));
        }
        for (path, msg) in &errors {
            if path != pointer && path != parent(pointer) {
                failures.push(format!(
                    "{name}: schema error at {path:?} ({msg}), expected {pointer:?} or its parent"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn kind_schemas_reject_other_kinds() {
    let validators = validators();
    let example = read_json(&schemas_root().join("examples/valid/check-smoke.json"));
    let errors = schema_errors(&validators["build.json"], &example);
    assert!(errors.iter().any(|(p, _)| p == "/kind"), "{errors:?}");
}

/// Values close to the rules' edges, to replace a field with.
fn near_miss() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        Value::Null,
        json!(-1),
        json!(-0.0),
        json!(1.5),
        json!(12.0),
        json!(9007199254740991u64),
        json!(9007199254740992u64),
        json!(1e300),
        json!(""),
        json!("x".repeat(512)),
        json!("x".repeat(513)),
        json!("12"),
        json!(true),
        json!([]),
        json!({}),
        json!([{}]),
        json!("2026-11-21T10:00:00Z"),
        json!("2026-11-21T10:00:00.123456789+05:30"),
        json!("2026-02-29T10:00:00Z"),
        json!("2016-12-31T23:59:60Z"),
        json!("2016-12-31T22:59:60Z"),
        json!("2026-11-21 10:00:00Z"),
        json!("build"),
        json!("decision"),
        json!("dev.shiplog.build.v1"),
        json!("failed"),
        json!("rolled_back"),
        json!("ci"),
        json!("alert"),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(1024), ..ProptestConfig::default() })]

    #[test]
    fn rust_and_schema_agree_on_generated_events(
        event in common::valid_event(),
        pick in any::<prop::sample::Index>(),
        action in 0u8..4,
        replacement in prop_oneof![common::any_json(), near_miss()],
    ) {
        let mut event = event;
        if action > 0 {
            let mut pointers = Vec::new();
            common::collect_pointers(&event, String::new(), &mut pointers);
            let pointer = pick.get(&pointers).clone();
            let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", ""));
            match (action, event.pointer_mut(parent)) {
                // Remove a field of an object.
                (1, Some(Value::Object(m))) if !pointer.is_empty() => {
                    m.shift_remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                _ => *event.pointer_mut(&pointer).unwrap() = replacement,
            }
        }
        let rust = Event::from_json(event.clone(), Origin::Internal);
        let errors = schema_errors(&validators()["event.json"], &event);
        match &rust {
            Ok(_) => prop_assert!(errors.is_empty(), "Rust accepts, schema rejects {event}: {errors:?}"),
            Err(e) => {
                prop_assert!(!errors.is_empty(), "schema accepts, Rust rejects ({e}): {event}");
                prop_assert!(
                    errors.iter().any(|(p, _)| *p == e.field || p == parent(&e.field)),
                    "Rust says {e}, schema says {errors:?}: {event}"
                );
            }
        }
    }
}
