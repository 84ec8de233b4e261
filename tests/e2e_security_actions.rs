//! Security: rule actions cannot be steered by event data (newlines, NUL, leading `-`,
//! `$(…)`, another project's token); tests/e2e_rules.rs
//! (`hostile_ids_stay_one_argument_and_smoke_failure_is_degraded`) already checks `;`,
//! spaces, `--force` and `$(…)` inside one argument.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::security::*;
use support::{recorded, recorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_actions_cannot_be_steered_by_event_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (script, calls) = recorder(tmp.path());
    let pwned = tmp.path().join("pwned");
    let rule = |project: &str| {
        format!(
            r#"
[[rules]]
name = "roll-{project}"
kind = "rollback"
project = "{project}"
env = "production"
metric = "error_rate"
window = "60s"
max_ratio = 1.5
action = {{ command = ["{}", "rollback", "{{previous_url}}", "--id={{deployment_id}}", "{{deployment_id}}", "{{previous_deployment_id}}", "--yes"], timeout = "10s", tries = 1 }}
"#,
            script.display()
        )
    };
    // `proj-a` is the project the restricted ingest token may write; the rules watch others.
    let s = start(&format!("{}{}", rule("steer"), rule("victim")), &[]);
    let url = s.server.url.clone();
    let c = client();

    // Values that a shell, a naive split or getopt would act on. Deployment ids may not hold
    // control characters (refused at ingest, below); a URL may.
    let prev_id = "-rf --no-preserve-root";
    let prev_url = format!(
        "--force\n--token=x; $(touch {p}) `touch {p}` | touch {p} > {p} *\r\u{7f}\u{1b}[31m",
        p = pwned.display()
    );
    let new_id = "--yes -- $HOME ${IFS} 'quoted' \"dq\" \\ [31m";
    for bad in [
        "-rf\n--no-preserve-root",
        "--yes\r\n",
        "x\u{7f}",
        "x\u{1b}[31m",
    ] {
        let (status, body) = post_events(
            &c,
            &url,
            Who::Admin,
            &json!([deploy_ev("steer", bad, "https://x.example", None)]),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["rejected"][0]["field"], "/deployment_id", "{body}");
    }
    for batch in [
        json!([deploy_ev("steer", prev_id, &prev_url, None)]),
        json!([deploy_ev(
            "steer",
            new_id,
            "https://new.example",
            Some(prev_id)
        )]),
    ] {
        let (status, body) = post_events(&c, &url, Who::Admin, &batch).await;
        assert_eq!(status, 202, "{body}");
    }

    // Another project's rollback cannot be triggered with a token of proj-a.
    for batch in [
        json!([deploy_ev("victim", "v-1", "https://v1.example", None)]),
        json!([deploy_ev(
            "victim",
            "v-2",
            "https://v2.example",
            Some("v-1")
        )]),
    ] {
        let (status, body) = post_events(&c, &url, Who::Admin, &batch).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = post_events(
        &c,
        &url,
        Who::IngestA,
        &json!([smoke_failed("victim", "v-2")]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["rejected"][0]["field"], "/project");

    // Now the real failure of `steer`; its action is the only one to run.
    let (status, body) = post_events(
        &c,
        &url,
        Who::Admin,
        &json!([smoke_failed("steer", new_id)]),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while recorded(&calls).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rules engine handles the log in order: the rejected check never reached it, and
    // the decision of `steer` (a later event) is recorded.
    let rows = rows_until(
        &c,
        &url,
        "SELECT project, verdict FROM decisions ORDER BY time",
        1,
    )
    .await;
    assert!(rows.iter().all(|r| r[0] == "steer"), "{rows:?}");
    let got = recorded(&calls);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0],
        vec![
            "rollback".to_string(),
            prev_url.clone(),
            format!("--id={new_id}"),
            new_id.to_string(),
            prev_id.to_string(),
            "--yes".to_string(),
        ],
        "every value stays one argument, byte for byte"
    );
    assert!(!pwned.exists(), "a shell ran");
}

/// A NUL cannot be passed in an argument: the action is refused, named in the decision,
/// and nothing runs with a truncated value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_event_data_never_runs_a_truncated_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let (script, calls) = recorder(tmp.path());
    let rules = format!(
        r#"
[[rules]]
name = "roll-nul"
kind = "rollback"
project = "nul"
env = "production"
metric = "error_rate"
window = "60s"
max_ratio = 1.5
action = {{ command = ["{}", "rollback", "{{previous_url}}"], timeout = "10s", tries = 1 }}
"#,
        script.display()
    );
    let s = start(&rules, &[]);
    let url = s.server.url.clone();
    let c = client();
    for batch in [
        json!([deploy_ev(
            "nul",
            "n-1",
            "https://ok.example\u{0}--force",
            None
        )]),
        json!([deploy_ev("nul", "n-2", "https://n2.example", Some("n-1"))]),
        json!([smoke_failed("nul", "n-2")]),
    ] {
        let (status, body) = post_events(&c, &url, Who::Admin, &batch).await;
        assert_eq!(status, 202, "{body}");
    }
    let rows = rows_until(
        &c,
        &url,
        "SELECT outcome FROM decisions WHERE json_extract_string(extra, '$.data.phase') = 'outcome'",
        1,
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let outcome = rows[0][0].as_str().unwrap();
    assert!(outcome.starts_with("failed"), "{outcome}");
    assert!(
        recorded(&calls).is_empty(),
        "ran with a truncated argument: {:?}",
        recorded(&calls)
    );
}

// ---------------------------------------------------------------------------------------
// Secrets.
