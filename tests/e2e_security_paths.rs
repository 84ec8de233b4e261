//! Security: dashboard names in URLs cannot traverse paths (encoded variants,
//! dashboards_dir).

mod support;

use serde_json::Value;
use support::security::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_names_cannot_traverse_paths() {
    // A dashboards_dir with one good file, files whose names are not dashboard names, and a
    // dashboard file outside it that a traversal would reach.
    let outer = tempfile::tempdir().unwrap();
    let dash = outer.path().join("dashboards");
    std::fs::create_dir_all(&dash).unwrap();
    let panel = |title: &str| {
        format!(
            "title = \"{title}\"\n[[panels]]\ntitle = \"p\"\nkind = \"stat\"\nsql = \"SELECT 1 AS x FROM events WHERE {{filters}}\"\n"
        )
    };
    std::fs::write(dash.join("team.toml"), panel("TEAM-DASH")).unwrap();
    std::fs::write(outer.path().join("outside.toml"), panel("OUTSIDE-MARKER")).unwrap();
    for bad in ["Bad Name.toml", ".hidden.toml", "-lead.toml", "UPPER.toml"] {
        std::fs::write(dash.join(bad), panel("BADNAME-MARKER")).unwrap();
    }
    let s = start(&format!("dashboards_dir = \"{}\"\n", dash.display()), &[]);
    let url = s.server.url.clone();
    let token = Who::Admin.secret().unwrap();

    let list: Value = Who::Admin
        .auth(client().get(format!("{url}/v1/dashboards")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"team"), "{names:?}");
    assert!(!list.to_string().contains("BADNAME-MARKER"));
    for n in &names {
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
            "{n}"
        );
    }
    let base = url.clone();
    let ok = tokio::task::spawn_blocking(move || raw_get(&base, "/v1/dashboards/team", token))
        .await
        .unwrap();
    assert_eq!(ok.0, 200);
    assert!(ok.1.contains("TEAM-DASH"));

    let mut probes = Vec::new();
    for prefix in ["/v1/dashboards/", "/d/"] {
        for name in [
            "..%2F..%2Fetc%2Fpasswd",
            "..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
            "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
            "..%252F..%252Fetc%252Fpasswd",
            "%252e%252e%252fetc%252fpasswd",
            "..%5C..%5Cetc%5Cpasswd",
            "..%c0%af..%c0%afetc%c0%afpasswd",
            "%c0%ae%c0%ae%2fetc%2fpasswd",
            "..%2Foutside",
            "..%2F..%2Fdashboards%2Fteam",
            "%2e%2e",
            "..",
            "../../etc/passwd",
            "..;/etc/passwd",
            "team%00.toml",
            "team%2Etoml",
            "%2Fetc%2Fpasswd",
            "%2fetc%2fpasswd%00",
            "Bad%20Name",
            ".hidden",
            "-lead",
            "UPPER",
            "outside",
        ] {
            probes.push(format!("{prefix}{name}"));
        }
    }
    probes.push("/v1/dashboards/..%2F..%2Fetc%2Fpasswd?project=..%2F..%2Fetc".into());
    probes.push("/deployments/..%2F..%2F..%2Fetc%2Fpasswd".into());
    probes.push("/v1/dashboards/deployment?deployment=..%2F..%2Fetc%2Fpasswd".into());
    let base = url.clone();
    let answers = tokio::task::spawn_blocking(move || {
        probes
            .into_iter()
            .map(|p| {
                let (status, text) = raw_get(&base, &p, token);
                (p, status, text)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (path, status, text) in answers {
        // The deployment id is a query parameter (never a path): the page answers,
        // about no deployment.
        let allowed: &[u16] = if path.starts_with("/deployments/") || path.contains("deployment=") {
            &[200]
        } else {
            &[400, 404]
        };
        assert!(
            allowed.contains(&status),
            "{path}: {status}\n{}",
            text.chars().take(400).collect::<String>()
        );
        for m in ["root:x:0", "OUTSIDE-MARKER", "BADNAME-MARKER"] {
            assert!(!text.contains(m), "{path} answered with {m}");
        }
        // (HTML pages list every dashboard's title in their navigation.)
        if path.starts_with("/v1/") {
            assert!(
                !text.contains("TEAM-DASH"),
                "{path} served another dashboard"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rule actions and event data.
