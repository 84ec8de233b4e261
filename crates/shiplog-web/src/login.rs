//! Browser sign-in for the dashboards when tokens are configured.
//!
//! | route | |
//! |---|---|
//! | `GET /login` | the form (one token field); says who is signed in, with a sign-out button |
//! | (dashboard pages) | a "Sign out" button in the header while signed in with the cookie ([`cookie_session`]) |
//! | `POST /login` | checks the token (scope `read`; `admin` implies it), sets the `shiplog_token` cookie, `303` to `next` (default `/`) |
//! | `POST /logout` | clears the cookie, `303` to `/login` |
//!
//! The cookie holds the token itself (percent-escaped where a cookie cannot hold a byte),
//! `HttpOnly` (page scripts cannot read it), `SameSite=Strict` (a browser does not send it
//! with requests started by another site), `Path=/`, `Secure` when the request came over
//! https (`X-Forwarded-Proto: https` from the reverse proxy that terminates TLS). It lasts
//! until the browser closes.
//!
//! Only the dashboard `GET` routes read the cookie; every `POST` of the API authenticates
//! with the `Authorization` header alone, so a cross-site form cannot act with a signed-in
//! browser's credentials. `POST /login` and `POST /logout` themselves are refused unless
//! same-origin (`Sec-Fetch-Site`, else `Origin` against `Host`): no one can sign a browser
//! in with the attacker's token, or out.
//!
//! [`redirect_to_login`] (a route layer of the dashboard routes) sends a browser's
//! unauthenticated page request to the form instead of a bare 401; the JSON API keeps its
//! 401.

use crate::auth::{cookie_token, encode_cookie_value, Auth, AuthError, Principal, Scope};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

/// The sign-in routes; their state is the configured tokens, so they merge into a router
/// of any state.
pub fn routes<S: Clone + Send + Sync + 'static>(auth: Auth) -> Router<S> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .with_state(auth)
}

#[derive(Deserialize, Default)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

#[derive(Deserialize, Default)]
pub struct NextParam {
    #[serde(default)]
    next: String,
}

const CSS: &str = "body{font:15px/1.5 system-ui,sans-serif;background:#f6f7f9;color:#1d2330;margin:0}\
main{max-width:26rem;margin:12vh auto;background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:1.5rem 2rem}\
h1{font-size:1.3rem;margin:0 0 1rem}h1 span{color:#2f6fde}label{display:block;font-weight:600;margin-bottom:.3rem}\
input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font:inherit;border:1px solid #b9c0cb;border-radius:4px}\
button{margin-top:1rem;padding:.45rem 1.2rem;font:inherit;border:0;border-radius:4px;background:#2f6fde;color:#fff;cursor:pointer}\
.err{color:#b42318;background:#fef3f2;border:1px solid #fecdca;border-radius:4px;padding:.4rem .6rem}\
.hint{color:#5b6472;font-size:.9rem}";

use crate::html::{percent_encode, PATH};
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// `next` when it is a path of this site (`/…`, not `//host` or `/\host`), else `/`: the
/// form never redirects elsewhere.
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && next.len() <= 2048
        && !next.bytes().any(|b| b == b'\\' || b.is_ascii_control());
    if ok {
        next
    } else {
        "/"
    }
}

fn percent_encode_component(s: &str) -> String {
    percent_encode(s, PATH)
}

/// Headers of every sign-in answer: never cached, never framed (no clickjacking of the
/// form), no scripts.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        Html(body),
    )
        .into_response()
}

fn page(title: &str, inner: Markup) -> String {
    html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) " · shiplog" }
                style { (PreEscaped(CSS)) }
            }
            body { main { h1 { "ship" span { "log" } " · " (title) } (inner) } }
        }
    }
    .into_string()
}

fn form_page(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let inner = html! {
        @if let Some(e) = error {
            p.err role="alert" { (e) }
        }
        form method="post" action="/login" {
            label for="token" { "Token" }
            input type="password" id="token" name="token" autocomplete="current-password" required autofocus;
            input type="hidden" name="next" value=(safe_next(next));
            button type="submit" { "Sign in" }
        }
        p.hint {
            "A token with the " code { "read" } " scope (see " code { "[[tokens]]" }
            " in the configuration). It is kept in a cookie of this browser until it closes."
        }
    };
    html(status, page("Sign in", inner))
}

fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
}

/// Whether the request came over https (the reverse proxy's `X-Forwarded-Proto`).
fn https(headers: &HeaderMap) -> bool {
    first_value(headers, "x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value that stores `secret`.
pub fn set_cookie(secret: &str, secure: bool) -> String {
    format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict{}",
        crate::auth::TOKEN_COOKIE,
        encode_cookie_value(secret),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        crate::auth::TOKEN_COOKIE,
        if secure { "; Secure" } else { "" }
    )
}

/// Whether a state-changing request comes from this site: `Sec-Fetch-Site` is
/// `same-origin` or `none` (typed by the user), else `Origin` names the `Host` (or the
/// proxy's `X-Forwarded-Host`). A request without either header is not a browser's
/// cross-site request (browsers send `Origin` with every cross-origin `POST`).
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(authority) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false; // "null" (sandboxed or privacy-sensitive contexts) or another scheme
    };
    [
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
        first_value(headers, "x-forwarded-host"),
    ]
    .into_iter()
    .flatten()
    .any(|host| host.eq_ignore_ascii_case(authority))
}

fn cross_site() -> Response {
    html(
        StatusCode::FORBIDDEN,
        page(
            "Refused",
            html! {
                p.err {
                    "This request came from another site; sign in from "
                    a href="/login" { "this site's form" } "."
                }
            },
        ),
    )
}

/// The token name of a page request authenticated by the sign-in cookie (no
/// `Authorization` header, the cookie present, a token principal): the page then shows a
/// "Sign out" button. `None` for a bearer header (a script: nothing to sign out of) and in
/// open mode (no tokens, no sign-in).
pub fn cookie_session(headers: &HeaderMap, principal: &Principal) -> Option<String> {
    match principal {
        Principal::Token(t)
            if !headers.contains_key(header::AUTHORIZATION) && cookie_token(headers).is_some() =>
        {
            Some(t.name.clone())
        }
        _ => None,
    }
}

/// The principal of the request's cookie, when it is valid.
fn cookie_principal(auth: &Auth, headers: &HeaderMap) -> Option<Principal> {
    let secret = cookie_token(headers)?;
    auth.authenticate_secret(secret.as_bytes()).ok()
}

async fn login_form(
    State(auth): State<Auth>,
    headers: HeaderMap,
    Query(q): Query<NextParam>,
) -> Response {
    let next = safe_next(&q.next);
    if auth.is_open() {
        // No tokens: the server listens on loopback only and every local caller may read.
        return see_other(next);
    }
    if let Some(Principal::Token(t)) = cookie_principal(&auth, &headers) {
        let inner = html! {
            p { "Signed in with the token " strong { (t.name) } "." }
            p { a href=(next) { "Continue" } }
            form method="post" action="/logout" { button type="submit" { "Sign out" } }
        };
        return html(StatusCode::OK, page("Signed in", inner));
    }
    form_page(StatusCode::OK, next, None)
}

async fn login(State(auth): State<Auth>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    if !same_origin(&headers) {
        tracing::warn!("sign-in refused: cross-site request");
        return cross_site();
    }
    let next = safe_next(&f.next);
    if auth.is_open() {
        return see_other(next);
    }
    let secret = f.token.trim();
    match auth.authenticate_secret(secret.as_bytes()) {
        Ok(p) if p.allows(Scope::Read) => {
            if let Principal::Token(t) = &p {
                tracing::info!(token = %t.name, "signed in");
            }
            let mut r = see_other(next);
            if let Ok(v) = HeaderValue::from_str(&set_cookie(secret, https(&headers))) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(p) => {
            if let Principal::Token(t) = &p {
                tracing::info!(token = %t.name, "sign-in refused: the token lacks the read scope");
            }
            form_page(
                StatusCode::FORBIDDEN,
                next,
                Some("This token lacks the read scope."),
            )
        }
        Err(AuthError::Missing) => {
            form_page(StatusCode::UNAUTHORIZED, next, Some("Enter a token."))
        }
        Err(AuthError::Unknown) => {
            tracing::info!("sign-in refused: unknown token");
            form_page(StatusCode::UNAUTHORIZED, next, Some("Unknown token."))
        }
    }
}

async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let mut r = see_other("/login");
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(https(&headers))) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Route layer of the dashboard routes: a browser's page request (`GET`/`HEAD`, not under
/// `/v1/`, without an `Authorization` header) that is not authenticated goes to the form
/// (`303 /login?next=…`), and a stale cookie is cleared. A navigation that came from
/// another site first reloads itself from this site: `SameSite=Strict` kept the cookie
/// off that first request, and a signed-in browser should not see the form for it.
pub async fn redirect_to_login(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let browser = matches!(*req.method(), Method::GET | Method::HEAD)
        && !req.uri().path().starts_with("/v1/")
        && !headers.contains_key(header::AUTHORIZATION);
    if !browser {
        return next.run(req).await;
    }
    let had_cookie = cookie_token(headers).is_some();
    let from_elsewhere = matches!(
        headers.get("sec-fetch-site").map(|v| v.as_bytes()),
        Some(b"cross-site" | b"same-site")
    );
    let secure = https(headers);
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let resp = next.run(req).await;
    if resp.status() != StatusCode::UNAUTHORIZED {
        return resp;
    }
    if from_elsewhere && !had_cookie {
        let target = safe_next(&target);
        let page = html! {
            (DOCTYPE)
            html {
                head {
                    meta charset="utf-8";
                    meta http-equiv="refresh" content={ "0;url=" (target) };
                    title { "shiplog" }
                }
                body { p { a href=(target) { "Continue to shiplog" } } }
            }
        };
        return html(StatusCode::OK, page.into_string());
    }
    let mut r = see_other(&format!(
        "/login?next={}",
        percent_encode_component(safe_next(&target))
    ));
    if had_cookie {
        if let Ok(v) = HeaderValue::from_str(&clear_cookie(secure)) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn same_origin_checks() {
        assert!(same_origin(&h(&[])));
        assert!(same_origin(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&h(&[("sec-fetch-site", "none")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&h(&[
            ("host", "shiplog.example:7070"),
            ("origin", "http://shiplog.example:7070")
        ])));
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:7070"),
            ("x-forwarded-host", "shiplog.example"),
            ("origin", "https://shiplog.example")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "shiplog.example"),
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "shiplog.example"),
            ("origin", "https://shiplog.example.evil.example")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "shiplog.example"),
            ("origin", "null")
        ])));
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/deploys?range=7d"), "/deploys?range=7d");
        for bad in [
            "",
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "javascript:alert(1)",
            "/a\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn cookie_session_is_a_cookie_sign_in_only() {
        use crate::auth::Token;
        let t = Principal::Token(Token::new(
            "pm".into(),
            "pm-secret-0123456789",
            vec![Scope::Read],
            vec![],
        ));
        let cookie = ("cookie", "shiplog_token=pm-secret-0123456789");
        assert_eq!(cookie_session(&h(&[cookie]), &t).as_deref(), Some("pm"));
        // a script with a bearer header, no cookie, or no tokens at all: nothing to sign out of
        let bearer = ("authorization", "Bearer pm-secret-0123456789");
        assert_eq!(cookie_session(&h(&[cookie, bearer]), &t), None);
        assert_eq!(cookie_session(&h(&[]), &t), None);
        assert_eq!(cookie_session(&h(&[cookie]), &Principal::Open), None);
    }

    #[test]
    fn cookies() {
        assert_eq!(
            set_cookie("tok en", true),
            "shiplog_token=tok%20en; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    /// The form's `next` and the error message are text, never markup.
    #[test]
    fn the_form_escapes_what_it_echoes() {
        let r = form_page(
            StatusCode::UNAUTHORIZED,
            "/d?x=\"><script>alert(1)</script>",
            Some("bad <b>token</b> & more"),
        );
        let body =
            futures::executor::block_on(axum::body::to_bytes(r.into_body(), 1 << 20)).unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            !body.contains("<script>") && !body.contains("<b>"),
            "{body}"
        );
        assert!(
            body.contains(r#"value="/d?x=&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;""#),
            "{body}"
        );
        assert!(
            body.contains("bad &lt;b&gt;token&lt;/b&gt; &amp; more"),
            "{body}"
        );
    }
}
