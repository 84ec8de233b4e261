//! The one HTML escaper and the one percent-encoder (the `percent-encoding` crate, with the
//! byte sets the pages need) of everything the server writes as HTML, URLs or cookies.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};

/// Text or an attribute value as HTML: `<`, `>`, `&`, `"` and `'` as entities.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

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
    fn escapes_and_encodes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(percent_encode("a b/c~é", COMPONENT), "a%20b%2Fc~%C3%A9");
        assert_eq!(percent_encode("/d/a b?x", PATH), "/d/a%20b%3Fx");
        assert_eq!(
            percent_encode("tok en;%\"é+/=", COOKIE),
            "tok%20en%3B%25%22%C3%A9+/="
        );
    }
}
