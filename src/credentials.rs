//! Client tokens at the edge (`client_auth`): whether a request
//! presents one of steadfast's client tokens, and which of its headers
//! carry one, so that none of them is ever forwarded to a provider.
//!
//! Values are handled as bytes, not text: a value with a non-ASCII byte
//! next to a token must not hide the token from the strip.

use crate::config::Secret;
use crate::headers::CREDENTIAL_HEADERS;
use http::{HeaderMap, HeaderName};

/// Every credential the request presents, from every value of every
/// credential header: `Authorization: Bearer X` (scheme in any case,
/// RFC 9110 §11.1), `x-api-key: X`, `api-key: X`.
pub fn presented(h: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    CREDENTIAL_HEADERS.iter().flat_map(move |name| {
        h.get_all(*name).iter().filter_map(move |v| {
            if *name == "authorization" {
                bearer(v.as_bytes())
            } else {
                Some(trim(v.as_bytes())).filter(|t| !t.is_empty())
            }
        })
    })
}

/// The credentials of an `Authorization: Bearer` value; the scheme is
/// case-insensitive and any run of spaces or tabs may follow it.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = trim(value);
    let split = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, rest) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(trim(rest)).filter(|t| !t.is_empty())
}

fn trim(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// Whether the request presents one of `tokens`. Every pair is compared in
/// full whatever matched, so the time taken says nothing about the tokens.
pub fn authenticated(h: &HeaderMap, tokens: &[Secret]) -> bool {
    presented(h).fold(false, |found, p| {
        tokens.iter().fold(found, |found, t| {
            found | constant_time_eq(t.expose().as_bytes(), p)
        })
    })
}

/// Names of the headers some value of which contains one of `tokens`
/// anywhere: the whole value, after an auth scheme, inside a list or a
/// cookie, whichever header it is. None of them may reach a provider.
///
/// A substring rule, not a parse: steadfast cannot know every way a client
/// might wrap a token, and dropping a header that merely contains a token is
/// always safe. Scans the whole of every value (no early exit), so its time
/// depends on lengths only.
pub fn carrying_tokens(h: &HeaderMap, tokens: &[Secret]) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = Vec::new();
    for (name, value) in h.iter() {
        let carries = tokens.iter().fold(false, |found, t| {
            found | constant_time_contains(value.as_bytes(), t.expose().as_bytes())
        });
        if carries && !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

/// Comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Substring test whose time depends only on the lengths: every window is
/// compared in full.
fn constant_time_contains(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() || needle.len() > hay.len() {
        return false;
    }
    hay.windows(needle.len())
        .fold(false, |found, w| found | constant_time_eq(w, needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(t: &[&str]) -> Vec<Secret> {
        t.iter().map(|s| Secret::new(s.to_string())).collect()
    }

    fn map(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn constant_time_comparisons() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_contains(b"xxabcxx", b"abc"));
        assert!(constant_time_contains(b"abc", b"abc"));
        assert!(!constant_time_contains(b"ab", b"abc"));
        assert!(!constant_time_contains(b"abc", b""));
        assert!(!constant_time_contains(b"axbxc", b"abc"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_tolerates_whitespace() {
        for v in [
            &b"Bearer tok"[..],
            b"bearer tok",
            b"BEARER tok",
            b"BeArEr tok",
            b"Bearer    tok",
            b"Bearer\ttok ",
            b"  Bearer tok",
        ] {
            assert_eq!(bearer(v), Some(&b"tok"[..]), "{}", v.escape_ascii());
        }
        for v in [
            &b"Basic tok"[..],
            b"Bearertok",
            b"Bearer",
            b"Bearer   ",
            b"tok",
        ] {
            assert_eq!(bearer(v), None, "{}", v.escape_ascii());
        }
    }

    #[test]
    fn token_is_accepted_from_any_credential_header() {
        let t = tokens(&["tok"]);
        for h in [
            map(&[("authorization", b"Bearer tok")]),
            map(&[("authorization", b"bEARER   tok")]),
            map(&[("x-api-key", b"tok")]),
            map(&[("api-key", b" tok ")]),
            // A later value of the same header counts too.
            map(&[("x-api-key", b"nope"), ("x-api-key", b"tok")]),
            // The provider key in one header, the token in another.
            map(&[
                ("x-api-key", b"sk-provider"),
                ("authorization", b"Bearer tok"),
            ]),
        ] {
            assert!(authenticated(&h, &t), "{h:?}");
        }
        for h in [
            HeaderMap::new(),
            map(&[("x-api-key", b"nope")]),
            map(&[("authorization", b"Basic tok")]),
            map(&[("authorization", b"tok")]),
            map(&[("x-api-key", b"tokx")]),
            map(&[("x-other", b"tok")]),
        ] {
            assert!(!authenticated(&h, &t), "{h:?}");
        }
    }

    #[test]
    fn every_header_carrying_a_token_is_found() {
        let t = tokens(&["tok-secret-1", "tok-secret-2"]);
        let h = map(&[
            ("authorization", b"BEARER  tok-secret-1"),
            ("x-api-key", b"tok-secret-1"),
            ("api-key", b"tok-secret-2"),
            ("cookie", b"a=1; s=tok-secret-1"),
            ("x-forwarded-authorization", b"Bearer tok-secret-2,x"),
            ("x-latin1", b"\xfftok-secret-2\xfe"),
            ("x-api-key", b"sk-provider"),
            ("anthropic-version", b"2023-06-01"),
            ("x-near-miss", b"tok-secret-"),
        ]);
        let carrying = carrying_tokens(&h, &t);
        let found: Vec<&str> = carrying.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            found,
            [
                "authorization",
                "x-api-key",
                "api-key",
                "cookie",
                "x-forwarded-authorization",
                "x-latin1"
            ]
        );
        assert!(carrying_tokens(&map(&[("x-api-key", b"sk-provider")]), &t).is_empty());
    }
}
