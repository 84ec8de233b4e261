//! Bearer-token authentication with scopes and project restrictions.
//!
//! Tokens are compared in constant time (SHA-256 digests compared with `subtle`), so
//! neither the content nor the length of a configured secret leaks through timing, and a
//! secret is never logged or shown (`Debug` prints the token's name only).
//!
//! A browser carries its token in the `shiplog_token` cookie ([`TOKEN_COOKIE`]), set by
//! `POST /login` (see [`crate::login`]) and read by the dashboard routes only (`GET`s:
//! the API's `POST`s take the `Authorization` header alone, so a cross-site form cannot
//! use a signed-in browser's cookie).

use axum::http::{header, HeaderMap};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /v1/events`.
    Ingest,
    /// Queries, dashboards, JSON API, gate (and `/metrics`).
    Read,
    /// `GET /metrics` only: for a Prometheus scraper that must not read the data.
    Metrics,
    /// Everything.
    Admin,
}

/// One configured token.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    digest: [u8; 32],
    pub scopes: Vec<Scope>,
    /// Empty: every project.
    pub projects: Vec<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("projects", &self.projects)
            .finish_non_exhaustive()
    }
}

impl Token {
    pub fn new(name: String, secret: &str, scopes: Vec<Scope>, projects: Vec<String>) -> Self {
        Token {
            name,
            digest: Sha256::digest(secret.as_bytes()).into(),
            scopes,
            projects,
        }
    }

    /// `admin` implies every scope, `read` implies `metrics`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin)
            || self.scopes.contains(&scope)
            || (scope == Scope::Metrics && self.scopes.contains(&Scope::Read))
    }

    pub fn allows_project(&self, project: &str) -> bool {
        self.projects.is_empty() || self.projects.iter().any(|p| p == project)
    }
}

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No tokens are configured: the server listens on loopback only, and every local
    /// caller may do everything.
    Open,
    Token(Token),
}

impl Principal {
    pub fn allows(&self, scope: Scope) -> bool {
        match self {
            Principal::Open => true,
            Principal::Token(t) => t.allows(scope),
        }
    }

    pub fn allows_project(&self, project: &str) -> bool {
        match self {
            Principal::Open => true,
            Principal::Token(t) => t.allows_project(project),
        }
    }

    /// Projects this principal is restricted to (`None`: all).
    pub fn projects(&self) -> Option<&[String]> {
        match self {
            Principal::Token(t) if !t.projects.is_empty() => Some(&t.projects),
            _ => None,
        }
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<Token>,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No or malformed `Authorization` header (401).
    Missing,
    /// A token that matches none configured (401).
    Unknown,
}

impl Auth {
    pub fn new(tokens: Vec<Token>) -> Self {
        Auth { tokens }
    }

    /// True when no token is configured (loopback-only mode).
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Authenticates an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        if self.tokens.is_empty() {
            return Ok(Principal::Open);
        }
        let header = header.ok_or(AuthError::Missing)?;
        let secret = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or(AuthError::Missing)?;
        self.authenticate_secret(secret)
    }

    /// Authenticates a secret itself (the sign-in form, the cookie).
    pub fn authenticate_secret(&self, secret: &[u8]) -> Result<Principal, AuthError> {
        if self.tokens.is_empty() {
            return Ok(Principal::Open);
        }
        if secret.is_empty() {
            return Err(AuthError::Missing);
        }
        let digest: [u8; 32] = Sha256::digest(secret).into();
        // Compare against every token (no early exit) so timing does not tell which matched.
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found
            .cloned()
            .map(Principal::Token)
            .ok_or(AuthError::Unknown)
    }
}

/// Whether a `Host` header value (with or without its port) names the loopback interface:
/// `localhost` (and `*.localhost`), `127.0.0.0/8`, `[::1]`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Middleware of the whole server: with no token configured (loopback only, everyone
/// may do everything), a request must name a loopback host. A web page whose name is
/// re-pointed at 127.0.0.1 (DNS rebinding) reaches the port from the user's browser, but
/// with its own name in `Host`: refused (403) before any handler. With tokens configured
/// this is a no-op (the token decides).
pub async fn loopback_host_only(
    axum::extract::State(auth): axum::extract::State<Auth>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if auth.is_open() {
        let host = req
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("\u{fffd}"))
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if let Some(host) = host {
            if !is_loopback_host(host) {
                return crate::error_response(
                    axum::http::StatusCode::FORBIDDEN,
                    "shiplog runs without tokens, so it answers only requests addressed to \
                     localhost or a loopback address; configure [[tokens]] to serve other names",
                );
            }
        }
    }
    next.run(req).await
}

/// The cookie that carries a browser's token.
pub const TOKEN_COOKIE: &str = "shiplog_token";

/// A secret as a cookie value: bytes that a cookie cannot hold (space, `;`, `,`, `"`, `\`,
/// controls, non-ASCII) and `%` are written `%XX`. Usual tokens (letters, digits, `-_.+/=`)
/// are unchanged.
pub fn encode_cookie_value(secret: &str) -> String {
    crate::html::percent_encode(secret, crate::html::COOKIE)
}

fn decode_cookie_value(v: &str) -> Option<String> {
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The secret of the request's `shiplog_token` cookie, decoded (the first one, when a
/// browser sends several).
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then(|| value.trim_matches('"'))
        })
        .filter(|v| !v.is_empty())
        .and_then(decode_cookie_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte that may stand for itself in a cookie value (RFC 6265 `cookie-octet`), `%`
    /// excepted (it introduces an escape).
    fn cookie_octet(b: u8) -> bool {
        matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E) && b != b'%'
    }

    #[test]
    fn scopes_and_projects() {
        let auth = Auth::new(vec![
            Token::new(
                "ci".into(),
                "s3cret",
                vec![Scope::Ingest],
                vec!["web".into()],
            ),
            Token::new("admin".into(), "root", vec![Scope::Admin], vec![]),
        ]);
        let p = auth.authenticate(Some(b"Bearer s3cret")).unwrap();
        assert!(p.allows(Scope::Ingest) && !p.allows(Scope::Read));
        assert!(p.allows_project("web") && !p.allows_project("api"));
        assert!(!p.allows(Scope::Metrics));
        let m = Token::new("prom".into(), "m", vec![Scope::Metrics], vec![]);
        assert!(m.allows(Scope::Metrics) && !m.allows(Scope::Read) && !m.allows(Scope::Ingest));
        let r = Token::new("pm".into(), "r", vec![Scope::Read], vec![]);
        assert!(r.allows(Scope::Metrics) && !r.allows(Scope::Ingest));
        let a = auth.authenticate(Some(b"Bearer root")).unwrap();
        assert!(a.allows(Scope::Read) && a.allows_project("api"));
        assert_eq!(auth.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            auth.authenticate(Some(b"Bearer nope")).unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(
            auth.authenticate(Some(b"Basic s3cret")).unwrap_err(),
            AuthError::Missing
        );
        assert!(!format!("{p:?}").contains("s3cret"));
        assert!(matches!(
            Auth::default().authenticate(None),
            Ok(Principal::Open)
        ));
        assert!(matches!(
            auth.authenticate_secret(b"root"),
            Ok(Principal::Token(_))
        ));
        assert_eq!(
            auth.authenticate_secret(b"").unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:7070",
            "LOCALHOST.:80",
            "app.localhost:7070",
            "127.0.0.1",
            "127.0.0.1:7070",
            "127.9.9.9:1",
            "[::1]:7070",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:7070",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1:7070",
            "[::2]:7070",
            "0.0.0.0:7070",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn cookie_values_round_trip() {
        for secret in [
            "plain-Token_0123.+/=",
            "with space; and,comma \"q\" back\\slash",
            "100% literal %41",
            "ünïcödé-secret",
        ] {
            let v = encode_cookie_value(secret);
            assert!(v.bytes().all(|b| cookie_octet(b) || b == b'%'), "{v}");
            let mut h = HeaderMap::new();
            h.insert(
                header::COOKIE,
                format!("theme=dark; {TOKEN_COOKIE}={v}; other=1")
                    .parse()
                    .unwrap(),
            );
            assert_eq!(cookie_token(&h).as_deref(), Some(secret));
        }
        assert_eq!(encode_cookie_value("abc-DEF_123"), "abc-DEF_123");
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "xshiplog_token=a; shiplog_token=".parse().unwrap(),
        );
        assert_eq!(cookie_token(&h), None);
    }
}
