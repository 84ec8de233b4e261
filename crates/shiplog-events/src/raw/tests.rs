use super::*;
use crate::{Event, Origin};
use serde_json::Value;

/// The fast path's verdict against the slow path's, and the stored meaning.
fn agree(json: &str) -> bool {
    let slow = serde_json::from_str::<Value>(json)
        .ok()
        .map(|v| Event::from_json(v, Origin::Collector));
    let Some(fast) = RawEvent::parse(json) else {
        return false;
    };
    let slow = slow
        .expect("fast path vouched for text that is not JSON")
        .unwrap_or_else(|e| panic!("fast path vouched for an invalid event ({e}): {json}"));
    let at = "2026-11-21T10:00:00.123456Z"
        .parse::<DateTime<Utc>>()
        .unwrap();
    let stamp = Stamp::new(at);
    let stored = Event::from_json_bytes(&fast.record(&stamp)).expect("record decodes");
    let mut expected = slow;
    expected.received_at = Some(at);
    assert_eq!(stored, expected, "{json}");
    assert_eq!(
        (
            fast.id.as_ref(),
            fast.source.as_ref(),
            fast.project.as_ref()
        ),
        (
            expected.id.as_str(),
            expected.source.as_str(),
            expected.project.as_str()
        )
    );
    // The stored bytes are also what the canonical encoder would mean, as a JSON value.
    let a: Value = serde_json::from_slice(&fast.record(&stamp)).unwrap();
    let b: Value = serde_json::from_slice(&expected.to_json_bytes()).unwrap();
    let normalize_time = |mut v: Value| {
        if let Some(t) = v.get("time").and_then(Value::as_str) {
            let t = t.parse::<DateTime<Utc>>().unwrap();
            v["time"] = Value::String(format_rfc3339(&t));
        }
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, x| !x.is_null());
        }
        v
    };
    assert_eq!(normalize_time(a), normalize_time(b), "{json}");
    true
}

fn examples(dir: &str) -> Vec<(String, String)> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/examples/");
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("{root}{dir}")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("json") && !p.ends_with("expected.json") {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    out
}

#[test]
fn vouches_for_every_valid_example_and_no_invalid_one() {
    let valid = examples("valid");
    assert!(valid.len() >= 10);
    // These take the slow path by design: a time with an offset, a float count, and
    // decisions (never from a collector). Every other valid example must be vouched for.
    let slow = [
        "build-failed-local.json",
        "build-ci-string-run-id.json",
        "decision-budget-alert-dry-run.json",
        "decision-rollback.json",
    ];
    for (path, json) in &valid {
        let expect_slow = slow.iter().any(|s| path.ends_with(s));
        assert_eq!(agree(json), !expect_slow, "{path}");
    }
    for (path, json) in examples("invalid") {
        assert!(RawEvent::parse(&json).is_none(), "vouched for {path}");
    }
}

#[test]
fn doubts_send_the_event_to_the_slow_path() {
    let base = |extra: &str, data: &str| {
        format!(
            r#"{{"id":"a","kind":"build","source":"s","project":"p"{extra},"data":{{"success":true,"duration_ms":{data}}}}}"#
        )
    };
    assert!(agree(&base("", "1200")));
    assert!(agree(&base(
        r#","time":"2026-11-21T10:00:00.123Z""#,
        "1200"
    )));
    assert!(agree(&base(r#","env":null,"x":{"y":[1,2]}"#, "0")));
    for json in [
            base("", "12.0"),                                         // float count
            base("", "-1"),                                           // negative
            base(r#","received_at":"2026-11-21T10:00:00Z""#, "1"),    // server's field
            base(r#","id":"b""#, "1"),                                // duplicate
            base(r#","time":"2026-11-21T10:00:00+01:00""#, "1"),      // offset
            base(r#","time":"2026-11-21T10:00:00.1234567Z""#, "1"),   // sub-µs
            base(r#","time":"2026-12-31T23:59:60Z""#, "1"),           // leap second
            base(r#","env":"""#, "1").replace(r#""id":"a""#, r#""id":"""#), // empty id
            r#"{"id":"a","kind":"decision","source":"s","project":"p","data":{}}"#.into(),
            r#"{"id":"a","kind":"build","source":"s","project":"p","data":{"success":true,"duration_ms":1,"success":false}}"#.into(),
            r#"{"id":"a","kind":"build","source":"s","project":"p","data":{"success":true}}"#.into(),
            r#"[1]"#.into(),
        ] {
            assert!(RawEvent::parse(&json).is_none(), "vouched for {json}");
        }
}

/// ASCII control characters (U+0000 to U+001F, U+007F) in any envelope key: the slow
/// path refuses the event naming the field, the fast path never vouches for it.
/// Other characters, C1 controls (U+0080 to U+009F) included, are kept.
#[test]
fn control_characters_in_keys_are_refused_by_both_paths() {
    let fields = crate::ENVELOPE_KEYS;
    let event = |field: &str, value: &str| {
        let mut v = serde_json::json!({"id": "a", "kind": "check", "source": "s",
                "project": "p", "data": {"name": "smoke", "passed": true}});
        v[field] = Value::String(value.to_string());
        v
    };
    for field in fields {
        for c in (0u8..0x20).chain([0x7f]).map(char::from) {
            let value = format!("dep{c}x");
            let v = event(field, &value);
            // escaped as \u00XX (and a raw DEL, which JSON allows unescaped)
            let mut texts = vec![serde_json::to_string(&v).unwrap()];
            if c == '\u{7f}' {
                texts.push(texts[0].replace("\\u007f", "\u{7f}"));
                assert!(texts[1].as_bytes().contains(&0x7f), "{}", texts[1]);
            }
            for json in &texts {
                assert!(RawEvent::parse(json).is_none(), "vouched for {json:?}");
                assert!(
                    split_array(&format!("[{json}]")).unwrap()[0].1.is_none(),
                    "{json:?}"
                );
            }
            let e = Event::from_json(v, Origin::Collector).unwrap_err();
            assert_eq!(e.field, format!("/{field}"), "{e}");
            assert_eq!(
                e.error,
                format!(
                    "must not contain control characters (U+0000 to U+001F, U+007F): \
                         U+{:04X} at byte 3",
                    c as u32
                )
            );
        }
        for ok in [
            "dep\u{80}x",
            "dep\u{9f}x",
            "déploiement",
            "dep 1",
            "🚀",
            "a\\b\"c",
        ] {
            let json = serde_json::to_string(&event(field, ok)).unwrap();
            assert!(agree(&json), "not vouched for: {json}");
        }
    }
}

#[test]
fn record_splices_received_at_first() {
    let json = " {\"id\":\"a\",\"kind\":\"check\",\"source\":\"s\",\"project\":\"p\",\"data\":{\"name\":\"n\",\"passed\":true}} ";
    let ev = RawEvent::parse(json).unwrap();
    let at = "2026-11-21T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let rec = String::from_utf8(ev.record(&Stamp::new(at))).unwrap();
    assert!(rec.starts_with("{\"received_at\":\"2026-11-21T10:00:00.000000Z\",\"id\":\"a\""));
    assert!(rec.ends_with("}}"));
}

/// Whatever the fast path vouches for reads back: deep nesting in unknown fields (with
/// `data` before or after `kind`), lone surrogates, numbers out of range.
#[test]
fn vouched_records_always_read_back() {
    let at = Stamp::new("2026-11-21T10:00:00Z".parse::<DateTime<Utc>>().unwrap());
    let data = |extra: &str| format!(r#"{{"name":"n","passed":true,"x":{extra}}}"#);
    let mut vouched_deep = 0;
    for depth in 100..140 {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for json in [
            format!(
                r#"{{"id":"a","kind":"check","source":"s","project":"p","data":{}}}"#,
                data(&deep)
            ),
            format!(
                r#"{{"data":{},"id":"a","kind":"check","source":"s","project":"p"}}"#,
                data(&deep)
            ),
            format!(
                r#"{{"id":"a","kind":"check","source":"s","project":"p","y":{deep},"data":{}}}"#,
                data("1")
            ),
        ] {
            if let Some(ev) = RawEvent::parse(&json) {
                vouched_deep += 1;
                let rec = ev.record(&at);
                serde_json::from_slice::<Value>(&rec).expect("vouched record reads back");
                Event::from_json_bytes(&rec).expect("vouched record decodes");
            }
        }
    }
    assert!(vouched_deep > 0, "shallow enough nesting is vouched for");
    for bad in [r#""\ud800""#, "1e400", "-1e999", r#"{"\udfff":1}"#] {
        let json = format!(
            r#"{{"id":"a","kind":"check","source":"s","project":"p","data":{}}}"#,
            data(bad)
        );
        assert!(RawEvent::parse(&json).is_none(), "vouched for {json}");
    }
}

#[test]
fn split_array_agrees_with_the_json_parser() {
    let ev =
        r#"{"id":"a","kind":"check","source":"s","project":"p","data":{"name":"n","passed":true}}"#;
    for (json, n) in [
        (format!("[{ev}]"), Some(1)),
        (format!(" [ {ev} ,\n{ev}\t] \n"), Some(2)),
        ("[]".to_string(), Some(0)),
        (" [ ] ".to_string(), Some(0)),
        (format!("[{ev},1,\"x\",null,[{ev}]]"), Some(5)),
        (format!("[{ev},]"), None),
        (format!("[,{ev}]"), None),
        (format!("[{ev}"), None),
        (format!("[{ev}] x"), None),
        (format!("[{ev}][]"), None),
        (format!("[{ev} {ev}]"), None),
        ("[1 2]".to_string(), None),
        ("[tru]".to_string(), None),
    ] {
        let split = split_array(&json);
        assert_eq!(split.as_ref().map(Vec::len), n, "{json}");
        assert_eq!(
            split.is_some(),
            serde_json::from_str::<Value>(&json).is_ok(),
            "{json}"
        );
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("0".to_string()),
            Just("12.0".to_string()),
            Just("-3".to_string()),
            Just("1.5".to_string()),
            Just("9007199254740992".to_string()),
            Just("\"x\"".to_string()),
            Just("\"\"".to_string()),
            Just("\"succeeded\"".to_string()),
            Just("\"applied\"".to_string()),
            Just("\"a\\u00e9\\n\"".to_string()),
            Just("{}".to_string()),
            Just("[]".to_string()),
            Just("[{\"name\":\"a\",\"duration_ms\":3}]".to_string()),
            Just("[{\"name\":\"a\",\"bytes\":3}]".to_string()),
            Just("{\"input_tokens\":1}".to_string()),
        ]
    }

    fn field_name() -> impl Strategy<Value = String> {
        let names: Vec<&'static str> = Kind::ALL
            .iter()
            .flat_map(|k| data_fields(*k).iter().map(|f| f.name))
            .chain(["unknown", "other"])
            .collect();
        proptest::sample::select(names).prop_map(str::to_string)
    }

    /// A minimal valid object for these fields (the required ones, by type).
    fn minimal(fields: &[FieldSpec]) -> Vec<String> {
        fields
            .iter()
            .filter(|f| f.required)
            .map(|f| {
                let v = match f.ty {
                    FieldType::Str => "\"x\"".to_string(),
                    FieldType::Bool => "true".into(),
                    FieldType::Count | FieldType::StrOrCount => "1".into(),
                    FieldType::Number => "1.5".into(),
                    FieldType::Enum(a) => format!("\"{}\"", a[0]),
                    FieldType::Object | FieldType::Array(_) => "{}".into(),
                    FieldType::Struct(inner) => format!("{{{}}}", minimal(inner).join(",")),
                };
                let v = if matches!(f.ty, FieldType::Array(_)) {
                    "[]".into()
                } else {
                    v
                };
                format!("\"{}\":{v}", f.name)
            })
            .collect()
    }

    fn element() -> impl Strategy<Value = String> {
        prop_oneof![
                Just(r#"{"id":"a","kind":"check","source":"s","project":"p","data":{"name":"n","passed":true}}"#.to_string()),
                Just(r#"{"id":"b","kind":"check","source":"s","project":"p","data":{"name":"n","passed":1}}"#.to_string()),
                Just(r#"{"kind":"check","data":{"name":"n","passed":true},"id":"c","source":"s","project":"p","x":[{},[]]}"#.to_string()),
                Just("{}".to_string()),
                Just("[]".to_string()),
                Just("\"s\"".to_string()),
                Just("-1.5e3".to_string()),
                Just("null".to_string()),
                Just("{\"id\":".to_string()),
                Just("tru".to_string()),
                Just("}".to_string()),
            ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Arrays of random elements, separators and whitespace: split_array accepts
        /// exactly what the JSON parser accepts, with the same elements, and vouches
        /// only for elements the slow path accepts.
        #[test]
        fn split_array_matches_the_parser(
            parts in proptest::collection::vec((element(), prop_oneof![Just(","), Just(" , "), Just("\n,"), Just(""), Just(",,")]), 0..6),
            open in prop_oneof![Just("["), Just(" [\n"), Just("")],
            close in prop_oneof![Just("]"), Just("] "), Just(""), Just("]]")],
        ) {
            let mut json = open.to_string();
            for (i, (e, sep)) in parts.iter().enumerate() {
                if i > 0 { json.push_str(sep); }
                json.push_str(e);
            }
            json.push_str(close);
            let parsed = serde_json::from_str::<Value>(&json).ok();
            match (split_array(&json), parsed) {
                (None, None) => {}
                (None, Some(v)) => prop_assert!(!v.is_array(), "refused a valid array: {}", json),
                (Some(_), None) => prop_assert!(false, "accepted invalid JSON: {}", json),
                (Some(items), Some(Value::Array(values))) => {
                    prop_assert_eq!(items.len(), values.len());
                    for ((text, fast), value) in items.iter().zip(values) {
                        prop_assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), &value);
                        if fast.is_some() {
                            prop_assert!(agree(text));
                        }
                    }
                }
                (Some(_), Some(_)) => prop_assert!(false, "split a non-array: {}", json),
            }
        }

        /// Random data objects under every kind, with random envelope variations: whenever
        /// the fast path vouches, the slow path accepts and the stored meaning is equal.
        #[test]
        fn fast_path_never_vouches_for_what_the_slow_path_refuses(
            kind in proptest::sample::select(vec!["build", "deploy", "migration", "api_cost", "check", "decision", "nope"]),
            fields in proptest::collection::vec((field_name(), value()), 0..10),
            time in prop_oneof![Just(None), Just(Some("\"2026-11-21T10:00:00Z\"")), Just(Some("\"2026-11-21T10:00:00.5Z\"")),
                                Just(Some("\"2026-11-21T10:00:00+02:00\"")), Just(Some("null")), Just(Some("3"))],
            id in prop_oneof![Just("\"e1\""), Just("\"\""), Just("null"), Just("7"), Just("\"e\\\"1\""),
                              Just("\"e\\u00001\""), Just("\"e\\n\""), Just("\"e\\u001f\""), Just("\"e\u{7f}\""), Just("\"e\u{80}\"")],
            env in prop_oneof![Just(None), Just(Some("\"prod\"")), Just(Some("null")), Just(Some("1")),
                               Just(Some("\"pr\\u0000od\"")), Just(Some("\"prod\\r\\n\"")), Just(Some("\"\\u007f\""))],
            drop_required in proptest::bool::weighted(0.1),
        ) {
            let mut data: Vec<String> = match (Kind::from_name(kind), drop_required) {
                (Some(k), false) => minimal(data_fields(k)),
                _ => Vec::new(),
            };
            data.extend(fields.iter().map(|(k, v)| format!("\"{k}\":{v}")));
            let data = data.join(",");
            let mut json = format!(r#"{{"id":{id},"kind":"{kind}","source":"s","project":"p","data":{{{data}}}"#);
            if let Some(t) = time { json.push_str(&format!(",\"time\":{t}")); }
            if let Some(e) = env { json.push_str(&format!(",\"env\":{e}")); }
            json.push('}');
            let vouched = agree(&json);
            // Sanity: the generator reaches the fast path (a clean event is vouched for).
            if fields.is_empty() && !drop_required && id == "\"e1\"" && kind != "decision" && kind != "nope"
                && matches!(time, None | Some("\"2026-11-21T10:00:00Z\"") | Some("\"2026-11-21T10:00:00.5Z\"") | Some("null"))
                && matches!(env, None | Some("\"prod\"") | Some("null")) {
                prop_assert!(vouched, "clean event not vouched for: {}", json);
            }
        }
    }
}
