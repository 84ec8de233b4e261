//! Bearer-token authentication with scopes and project restrictions.
//!
//! Tokens are compared in constant time (SHA-256 digests compared with `subtle`), so
//! neither the content nor the length of a configured secret leaks through timing, and a
//! secret is never logged or shown (`Debug` prints the token's name only).

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /v1/events`.
    Ingest,
    /// Queries, dashboards, JSON API.
    Read,
    /// Everything, including operations endpoints.
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

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
