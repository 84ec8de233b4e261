//! The one percent-encoder (the `percent-encoding` crate, with the byte sets the pages need)
//! of everything the server writes in URLs or cookies. HTML is written with `maud`'s
//! `html!` templates only, whose one escaper (`&`, `<`, `>`, `"`; attribute values are
//! always double-quoted) covers every text and attribute value: no page is put together
//! by string formatting.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};

/// A query-string component: everything but letters, digits and `-_.~` (RFC 3986's
/// unreserved characters) is `%XX`.
pub const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path given as a query value (`?next=/d/builds`): [`COMPONENT`], `/` kept.
pub const PATH: &AsciiSet = &COMPONENT.remove(b'/');

/// A cookie value: what RFC 6265's cookie-octet excludes (controls, space, `"`, `,`, `;`,
/// `\`), and `%` itself, is `%XX` (non-ASCII bytes always are).
pub const COOKIE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%');

/// `s` with the bytes of `set` (and every non-ASCII byte) written `%XX`.
pub fn percent_encode(s: &str, set: &'static AsciiSet) -> String {
    utf8_percent_encode(s, set).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        assert_eq!(percent_encode("a b/c~é", COMPONENT), "a%20b%2Fc~%C3%A9");
        assert_eq!(percent_encode("/d/a b?x", PATH), "/d/a%20b%3Fx");
        assert_eq!(
            percent_encode("tok en;%\"é+/=", COOKIE),
            "tok%20en%3B%25%22%C3%A9+/="
        );
    }
}
