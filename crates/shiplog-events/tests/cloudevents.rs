//! CloudEvents 1.0 structured and batch mode onto the shiplog envelope.
use serde_json::{json, Value};
use shiplog_events::{from_cloudevent, from_cloudevents_batch, Kind};

/// A Vite build as a CloudEvent: envelope fields as extension attributes.
fn build_ce() -> Value {
    json!({
        "specversion": "1.0",
        "type": "dev.shiplog.build.v1",
        "source": "vite-plugin",
        "id": "b7f3c2e0-5a1d-4c8e-9f3b-1a2b3c4d5e6f",
        "time": "2026-11-21T10:02:13.482Z",
        "datacontenttype": "application/json",
        "project": "web-app",
        "env": "production",
        "commit": "9c1e4f7a2b3d5e6f7a8b9c0d1e2f3a4b5c6d7e8f",
        "branch": "main",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "data": {
            "tool": "vite", "success": true, "duration_ms": 48213,
            "phases": [{"name": "transform", "duration_ms": 39870}]
        }
    })
}

fn err_field(ce: Value) -> String {
    from_cloudevent(ce).unwrap_err().field
}

#[test]
fn structured_mode_with_extension_attributes() {
    let e = from_cloudevent(build_ce()).unwrap();
    assert_eq!(e.kind, Kind::Build);
    assert_eq!(e.id, "b7f3c2e0-5a1d-4c8e-9f3b-1a2b3c4d5e6f");
    assert_eq!(e.source, "vite-plugin");
    assert_eq!(e.project, "web-app");
    assert_eq!(e.env.as_deref(), Some("production"));
    assert_eq!(e.branch.as_deref(), Some("main"));
    assert_eq!(
        shiplog_events::format_rfc3339(&e.time.unwrap()),
        "2026-11-21T10:02:13.482000Z"
    );
    assert_eq!(e.data["duration_ms"], 48213);
    // Other attributes are kept; the CloudEvents core ones that were mapped are not.
    assert_eq!(
        e.extra["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(e.extra["datacontenttype"], "application/json");
    for gone in ["specversion", "type", "kind", "project"] {
        assert!(!e.extra.contains_key(gone), "{gone}");
    }
}

#[test]
fn envelope_fields_inside_data_and_subject() {
    // A Vercel deploy from CI: plain `type`, envelope fields inside `data`, subject = deployment.
    let ce = json!({
        "specversion": "1.0", "type": "deploy", "source": "ci/github", "id": "run-1-deploy",
        "subject": "dpl_8fJ2kQxW3mN9pLr7",
        "data": {"project": "web-app", "env": "production", "status": "succeeded",
                 "provider": "vercel", "url": "https://web-app-8fj2kqxw3.vercel.app"}
    });
    let e = from_cloudevent(ce).unwrap();
    assert_eq!(e.kind, Kind::Deploy);
    assert_eq!(e.project, "web-app");
    assert_eq!(e.env.as_deref(), Some("production"));
    assert_eq!(e.deployment_id.as_deref(), Some("dpl_8fJ2kQxW3mN9pLr7"));
    assert!(!e.data.contains_key("project") && !e.data.contains_key("env"));
    assert!(!e.extra.contains_key("subject"));
    assert_eq!(e.data["status"], "succeeded");

    // `deploymentid` (a legal CloudEvents extension name) wins over subject, which is kept.
    let ce = json!({
        "specversion": "1.0", "type": "check", "source": "probe", "id": "c1",
        "project": "web-app", "deploymentid": "dpl_2", "subject": "error_rate",
        "data": {"name": "error_rate", "value": 0.02}
    });
    let e = from_cloudevent(ce).unwrap();
    assert_eq!(e.deployment_id.as_deref(), Some("dpl_2"));
    assert_eq!(e.extra["subject"], "error_rate");
    assert!(!e.extra.contains_key("deploymentid"));

    // The same value twice is fine; it is removed from data.
    let ce = json!({
        "specversion": "1.0", "type": "api_cost", "source": "app", "id": "a1",
        "project": "web-app",
        "data": {"project": "web-app", "provider": "openai", "model": "gpt-4o-mini",
                 "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}
    });
    let e = from_cloudevent(ce).unwrap();
    assert!(!e.data.contains_key("project"));
    assert_eq!(e.data["usage"]["total_tokens"], 12);
}

#[test]
fn errors_point_into_the_cloudevent_as_sent() {
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut ce = build_ce();
        f(ce.as_object_mut().unwrap());
        err_field(ce)
    };
    assert_eq!(with(&|c| c["specversion"] = json!("0.3")), "/specversion");
    assert_eq!(with(&|c| c["specversion"] = json!(1.0)), "/specversion");
    assert_eq!(
        with(&|c| {
            c.remove("specversion");
        }),
        "/specversion"
    );
    assert_eq!(with(&|c| c["type"] = json!("com.example.build")), "/type");
    assert_eq!(
        with(&|c| c["type"] = json!("dev.shiplog.build.v2")),
        "/type"
    );
    assert_eq!(
        with(&|c| {
            c.remove("type");
        }),
        "/type"
    );
    // decision events come from shiplog only.
    assert_eq!(
        with(&|c| c["type"] = json!("dev.shiplog.decision.v1")),
        "/type"
    );
    assert_eq!(
        with(&|c| c["datacontenttype"] = json!("text/plain")),
        "/datacontenttype"
    );
    assert!(from_cloudevent({
        let mut ce = build_ce();
        ce["datacontenttype"] = json!("application/cloudevents+json; charset=utf-8");
        ce
    })
    .is_ok());
    assert_eq!(
        with(&|c| {
            c.remove("data");
            c.insert("data_base64".into(), json!("e30="));
        }),
        "/data_base64"
    );
    assert_eq!(with(&|c| c["data"] = json!("{}")), "/data");
    assert_eq!(
        with(&|c| c["data"]["duration_ms"] = json!(-1)),
        "/data/duration_ms"
    );
    assert_eq!(
        with(&|c| c["data"]["phases"][0]["duration_ms"] = json!(1.5)),
        "/data/phases/0/duration_ms"
    );
    assert_eq!(with(&|c| c["time"] = json!("yesterday")), "/time");
    assert_eq!(with(&|c| c["id"] = json!("")), "/id");
    assert_eq!(
        with(&|c| {
            c.remove("source");
        }),
        "/source"
    );
    assert_eq!(
        with(&|c| {
            c.insert("kind".into(), json!("build"));
        }),
        "/kind"
    );
    // Envelope fields: the pointer is where the value was sent.
    assert_eq!(with(&|c| c["project"] = json!(7)), "/project");
    assert_eq!(
        with(&|c| {
            c.remove("project");
        }),
        "/project"
    );
    assert_eq!(
        with(&|c| {
            c.remove("project");
            c["data"]["project"] = json!(["web-app"]);
        }),
        "/data/project"
    );
    assert_eq!(
        with(&|c| c["data"]["project"] = json!("other")),
        "/data/project"
    );
    assert_eq!(
        with(&|c| {
            c.insert("subject".into(), json!("x".repeat(600)));
        }),
        "/subject"
    );
    assert_eq!(
        with(&|c| {
            c.insert("deployment_id".into(), json!("a"));
            c.insert("deploymentid".into(), json!("b"));
        }),
        "/deploymentid"
    );
    assert_eq!(err_field(json!("not an event")), "");
}

#[test]
fn batch_mode() {
    let mut bad = build_ce();
    bad["data"]["success"] = json!("yes");
    let results = from_cloudevents_batch(json!([build_ce(), bad, 42]));
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().field, "/data/success");
    assert_eq!(results[2].as_ref().unwrap_err().field, "");
    assert!(from_cloudevents_batch(json!([])).is_empty());
    let not_batch = from_cloudevents_batch(build_ce());
    assert_eq!(not_batch.len(), 1);
    assert_eq!(not_batch[0].as_ref().unwrap_err().field, "");
}

#[test]
fn every_kind_type_spelling() {
    for kind in Kind::ALL {
        if kind == Kind::Decision {
            continue;
        }
        for ty in [kind.as_str().to_string(), kind.cloudevents_type()] {
            let data = match kind {
                Kind::Build => json!({"success": true, "duration_ms": 1}),
                Kind::Deploy => json!({"status": "started"}),
                Kind::Migration => json!({"status": "applied"}),
                Kind::ApiCost => json!({"provider": "openai", "model": "gpt-4o"}),
                Kind::Check => json!({"name": "health", "passed": true}),
                Kind::Decision => unreachable!(),
            };
            let ce = json!({"specversion": "1.0", "type": ty, "source": "s", "id": "1",
                            "project": "p", "data": data});
            assert_eq!(from_cloudevent(ce).unwrap().kind, kind);
        }
    }
}
