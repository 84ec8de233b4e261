//! Security: the browser sign-in: `/login`, the cookie's attributes, redirects, CSRF
//! refusals, and open mode (no tokens) without sign-in.

mod support;

use serde_json::json;
use support::security::*;
use support::TestServer;

fn set_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sign_in_with_a_cookie() {
    let s = start("", &[]);
    let url = s.server.url.clone();
    let host = url.trim_start_matches("http://").to_string();
    let c = client();
    seed(&c, &url).await;
    let read = Who::Read.secret().unwrap();

    // A page without credentials goes to the form, remembering where it was going; the
    // JSON API answers 401.
    let r = c
        .get(format!("{url}/deploys?range=7d"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/deploys%3Frange%3D7d");
    let r = c.get(format!("{url}/v1/dashboards")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A navigation from another site reloads itself first (a Strict cookie is not sent
    // with it), then goes to the form.
    let r = c
        .get(format!("{url}/deploys"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("http-equiv=\"refresh\""));

    let r = c
        .get(format!("{url}/login?next=/deploys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let form = r.text().await.unwrap();
    assert!(form.contains(r#"name="token""#) && form.contains(r#"type="password""#));
    assert!(form.contains(r#"value="/deploys""#));

    // Wrong tokens: 401 / 403, the form again, no cookie.
    for (token, status) in [
        ("nope-nope-nope-nope", 401),
        ("", 401),
        (Who::Ingest.secret().unwrap(), 403),
        (Who::Metrics.secret().unwrap(), 403),
    ] {
        let r = c
            .post(format!("{url}/login"))
            .header("origin", format!("http://{host}"))
            .form(&[("token", token), ("next", "/deploys")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{token}");
        assert!(set_cookie(&r).is_none());
    }
    // Cross-site sign-in (login CSRF) is refused.
    for (name, value) in [
        ("origin", "https://evil.example".to_string()),
        ("origin", "null".to_string()),
        ("sec-fetch-site", "cross-site".to_string()),
        ("sec-fetch-site", "same-site".to_string()),
    ] {
        let r = c
            .post(format!("{url}/login"))
            .header(name, value.as_str())
            .form(&[("token", read)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        assert!(set_cookie(&r).is_none());
    }
    // An open redirect is not possible.
    for next in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
    ] {
        let r = c
            .post(format!("{url}/login"))
            .header("sec-fetch-site", "same-origin")
            .form(&[("token", read), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/", "{next}");
    }

    // The sign-in: 303 to next, the cookie HttpOnly, SameSite=Strict, Path=/.
    let r = c
        .post(format!("{url}/login"))
        .header("origin", format!("http://{host}"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", read), ("next", "/deploys?range=7d")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/deploys?range=7d");
    let cookie = set_cookie(&r).unwrap();
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert_eq!(attrs[0], format!("shiplog_token={read}"));
    for a in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&a), "{cookie}");
    }
    assert!(!attrs.contains(&"Secure"), "plain http: {cookie}");
    let jar = attrs[0].to_string();

    // The browser now reads pages and the JSON API with the cookie.
    let r = c
        .get(format!("{url}/deploys"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        B_MARKERS.iter().any(|m| text.contains(m)),
        "an unrestricted read token"
    );
    // Its header has a sign-out form (a bearer header, which scripts send, gets none).
    assert!(
        text.contains(r#"<form class="signout" method="post" action="/logout">"#)
            && text.contains("read-all"),
        "no sign-out button"
    );
    let r = c
        .get(format!("{url}/deploys"))
        .bearer_auth(read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.text().await.unwrap().contains("/logout"));
    // A bad bearer header gets the 401 page, which points to the sign-in form.
    let r = c
        .get(format!("{url}/deploys"))
        .bearer_auth("nope-nope-nope-nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#"<a href="/login">Sign in</a>"#) && !text.contains("cookie"),
        "{text}"
    );
    let r = c
        .get(format!("{url}/v1/dashboards/deploys"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{url}/login"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("read-all") && text.contains("/logout"),
        "{text}"
    );
    // The cookie never authenticates a POST of the API (no CSRF on them).
    let r = c
        .post(format!("{url}/v1/query"))
        .header("cookie", &jar)
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let admin_jar = format!("shiplog_token={}", Who::Admin.secret().unwrap());
    let r = c
        .post(format!("{url}/v1/events"))
        .header("cookie", &admin_jar)
        .json(&ev("build", A, "csrf"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A restricted token's cookie sees its project only.
    let jar_a = format!("shiplog_token={}", Who::ReadA.secret().unwrap());
    let r = c
        .get(format!("{url}/deploys"))
        .header("cookie", &jar_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(!B_MARKERS.iter().any(|m| text.contains(m)));

    // Behind a TLS-terminating proxy the cookie is Secure.
    let r = c
        .post(format!("{url}/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", read)])
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&r).unwrap().contains("; Secure"));

    // A stale cookie: to the form, and the cookie is cleared.
    let r = c
        .get(format!("{url}/costs"))
        .header("cookie", "shiplog_token=revoked-token-0000000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(set_cookie(&r).unwrap().contains("Max-Age=0"));

    // Sign-out: same-origin only; it clears the cookie.
    let r = c
        .post(format!("{url}/logout"))
        .header("cookie", &jar)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r).is_none());
    let r = c
        .post(format!("{url}/logout"))
        .header("cookie", &jar)
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let cleared = set_cookie(&r).unwrap();
    assert!(
        cleared.starts_with("shiplog_token=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

/// Without tokens (loopback only) there is nothing to sign in to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_needs_no_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::spawn(&dir.path().join("data"), &[]);
    let c = client();
    let r = c
        .get(format!("{}/login?next=/costs", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/costs");
    let r = c.get(format!("{}/costs", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // DNS rebinding: a page of another site, its name re-pointed at 127.0.0.1, reaches the
    // port from the user's browser with its own name in Host. Without tokens, only
    // loopback names are served.
    let addr = server.url.trim_start_matches("http://").to_string();
    let port = addr.rsplit_once(':').unwrap().1.to_string();
    let answers = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for host in [
            format!("evil.example:{port}"),
            "evil.example".to_string(),
            format!("localhost.evil.example:{port}"),
            format!("127.0.0.1.nip.io:{port}"),
            format!("10.1.2.3:{port}"),
        ] {
            for path in ["/v1/dashboards", "/costs", "/healthz"] {
                let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
                out.push((host.clone(), path, 403, raw_request(&addr, &head)));
            }
            let body = r#"{"sql": "SELECT count(*) FROM events"}"#;
            let head = format!(
                "POST /v1/query HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            out.push((host.clone(), "/v1/query", 403, raw_request(&addr, &head)));
        }
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
            "app.localhost".to_string(),
        ] {
            let head = format!("GET /v1/dashboards HTTP/1.1\r\nHost: {host}\r\n");
            out.push((host.clone(), "/v1/dashboards", 200, raw_request(&addr, &head)));
        }
        out
    })
    .await
    .unwrap();
    for (host, path, want, (status, text)) in answers {
        assert_eq!(status, want, "Host: {host} {path}: {text}");
        if want == 403 {
            assert!(text.contains("loopback"), "{text}");
        }
    }
}
