//! Request path normalisation, done once before route matching so
//! that the path a route is matched against is the path the provider
//! resolves: an upstream that removes dot segments itself would otherwise
//! let `/v1/messages/../../admin` reach an endpoint no route allows, with
//! the provider key steadfast injects (as Envoy's CVE-2019-9901).
//!
//! The normal form: percent-encoded unreserved characters decoded (RFC 3986
//! §6.2.2.2), every other percent-encoding in upper-case hex (§6.2.2.1),
//! runs of `/` merged into one, `.` and `..` segments removed (§5.2.4).
//! Whatever could be read two ways by the next hop is refused instead of
//! guessed at: encoded separators, encoded controls, double encodings, a
//! `..` that would climb above the root or that is left inside a segment.
//! The query string is not part of the path and is never touched here.

use std::borrow::Cow;

/// Why a request path is refused (answered with 400, class `request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target is not an absolute path")]
    NotAbsolute,
    #[error(
        "the path holds a character that must be percent-encoded (control, space or non-ASCII)"
    )]
    RawChar,
    #[error("the path holds a '\\'")]
    Backslash,
    #[error("the path holds an invalid percent-encoding")]
    BadPercent,
    #[error("the path holds an encoded '/' or '\\' (%2F, %5C)")]
    EncodedSeparator,
    #[error("the path holds an encoded control character")]
    EncodedControl,
    #[error("the path holds a double percent-encoding (%25 followed by two hex digits)")]
    DoubleEncoded,
    #[error("the path's percent-encoded bytes are not valid UTF-8")]
    BadUtf8,
    #[error("the path holds '..' that cannot be resolved (above the root, or inside a segment)")]
    DotDot,
}

/// The normal form of `path` (the path component only, no query), or why it
/// is refused. Borrows when `path` is already normal, the usual case, so the
/// hot path does not allocate.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    normalise_slow(path).map(Cow::Owned)
}

/// Whether `path` is already in normal form. Exact: a path that passes is
/// one [`normalise_slow`] returns unchanged (a property test holds it to that).
fn is_normal(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if !path
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b'%' && b != b'\\')
    {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == "." || seg.contains("..") {
            return false;
        }
    }
    true
}

fn normalise_slow(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path)?;
    remove_dot_segments(&decoded)
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The percent-encoded byte at the start of `s` (`%XY`), if it is one.
fn encoded_at(s: &[u8]) -> Option<u8> {
    match s {
        [b'%', h, l, ..] => Some(hex(*h)? << 4 | hex(*l)?),
        _ => None,
    }
}

/// Check every byte, decode the percent-encoded unreserved characters and
/// upper-case the hex of the others.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut high = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let Some(d) = encoded_at(&bytes[i..]) else {
                return Err(PathError::BadPercent);
            };
            if is_unreserved(d) {
                out.push(char::from(d));
            } else if d == b'/' || d == b'\\' {
                return Err(PathError::EncodedSeparator);
            } else if d.is_ascii_control() {
                return Err(PathError::EncodedControl);
            } else {
                high |= d >= 0x80;
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(d >> 4)]));
                out.push(char::from(HEX[usize::from(d & 0xf)]));
            }
            i += 3;
            continue;
        }
        if b == b'\\' {
            return Err(PathError::Backslash);
        }
        if !(0x21..=0x7e).contains(&b) {
            return Err(PathError::RawChar);
        }
        out.push(char::from(b));
        i += 1;
    }
    if double_encoded(&out) {
        // `%252e` is `%2e` to a next hop that decodes twice. Checked on the
        // result: `%25%32%65` only becomes `%252e` once decoded.
        return Err(PathError::DoubleEncoded);
    }
    if high && !utf8_when_decoded(&out) {
        // Overlong forms such as `%C0%AE` are `.` to a lax decoder.
        return Err(PathError::BadUtf8);
    }
    Ok(out)
}

/// Whether `s` holds an encoded '%' followed by two hex digits.
fn double_encoded(s: &str) -> bool {
    s.match_indices("%25").any(|(i, _)| {
        let b = s.as_bytes();
        b.len() >= i + 5 && hex(b[i + 3]).is_some() && hex(b[i + 4]).is_some()
    })
}

/// Whether the bytes `s` stands for, every `%XY` decoded, are UTF-8.
fn utf8_when_decoded(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut raw = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match encoded_at(&bytes[i..]) {
            Some(d) => {
                raw.push(d);
                i += 3;
            }
            None => {
                raw.push(bytes[i]);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&raw).is_ok()
}

/// RFC 3986 §5.2.4 over segments, with empty segments merged away, except
/// that a `..` with nothing left to remove is an error rather than ignored:
/// no legitimate client climbs above the root.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    // `out` never ends with '/' while segments are pushed; `trailing` says
    // whether the path ends in a directory reference ("/a/", "/a/.", "/a/b/..").
    let mut out = String::with_capacity(path.len());
    let mut trailing = false;
    for seg in path[1..].split('/') {
        match seg {
            "" | "." => trailing = true,
            ".." => {
                let Some(cut) = out.rfind('/') else {
                    return Err(PathError::DotDot);
                };
                out.truncate(cut);
                trailing = true;
            }
            s if s.contains("..") => return Err(PathError::DotDot),
            s => {
                out.push('/');
                out.push_str(s);
                trailing = false;
            }
        }
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalise(p).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/v1/messages",
            "/v1/messages/",
            "/v1/messages/count_tokens",
            "/v1/models/claude-3.5-sonnet",
            "/v1/files/file_abc~1",
            "/a:b@c!$&'()*+,;=",
        ] {
            assert!(
                matches!(normalise(p), Ok(Cow::Borrowed(b)) if b == p),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        let cases = [
            ("/v1/messages/../../v1/models", "/v1/models"),
            ("/v1/messages/./count_tokens", "/v1/messages/count_tokens"),
            ("/v1/messages/x/..", "/v1/messages/"),
            ("/v1/messages/.", "/v1/messages/"),
            ("/v1/messages/..", "/v1/"),
            ("/v1/..", "/"),
            ("/.", "/"),
            ("/./././v1", "/v1"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/v1/messages/../messages", "/v1/messages"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn encoded_dots_are_dot_segments_in_any_case() {
        let cases = [
            ("/v1/messages/%2e%2e/%2e%2e/admin", "/admin"),
            ("/v1/messages/%2E%2e/x", "/v1/x"),
            ("/v1/messages/.%2e/x", "/v1/x"),
            ("/v1/messages/%2e./x", "/v1/x"),
            ("/v1/messages/%2e/x", "/v1/messages/x"),
            ("/v1/messages/%2E%2E", "/v1/"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(norm("//").as_deref(), Ok("/"));
        assert_eq!(norm("//v1//messages").as_deref(), Ok("/v1/messages"));
        assert_eq!(norm("/v1/messages//").as_deref(), Ok("/v1/messages/"));
        // The `..` removes a real segment, not the empty one a next hop
        // that merges slashes would never have seen.
        assert_eq!(norm("/v1/messages//../x").as_deref(), Ok("/v1/x"));
        assert_eq!(norm("//evil.example/x").as_deref(), Ok("/evil.example/x"));
    }

    #[test]
    fn unreserved_are_decoded_and_other_hex_upper_cased() {
        assert_eq!(norm("/v1/%6Dessages").as_deref(), Ok("/v1/messages"));
        assert_eq!(norm("/v1/%7e%5F%2D").as_deref(), Ok("/v1/~_-"));
        assert_eq!(norm("/v1/a%3ab%20c").as_deref(), Ok("/v1/a%3Ab%20c"));
        assert_eq!(
            norm("/v1/%C3%A9t%C3%A9").as_deref(),
            Ok("/v1/%C3%A9t%C3%A9")
        );
        // A lone encoded '%' that does not form a second encoding is data.
        assert_eq!(norm("/v1/100%25").as_deref(), Ok("/v1/100%25"));
        assert_eq!(norm("/v1/%25zz").as_deref(), Ok("/v1/%25zz"));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        use PathError::*;
        let cases = [
            ("", NotAbsolute),
            ("*", NotAbsolute),
            ("v1/messages", NotAbsolute),
            ("/v1/messages/..%2f..%2fx", EncodedSeparator),
            ("/v1/messages%2Fx", EncodedSeparator),
            ("/v1/messages%2fx", EncodedSeparator),
            ("/v1/messages%5Cx", EncodedSeparator),
            ("/v1/messages%5cx", EncodedSeparator),
            ("/v1/messages\\..\\x", Backslash),
            ("/v1/messages/%", BadPercent),
            ("/v1/messages/%2", BadPercent),
            ("/v1/messages/%zz", BadPercent),
            ("/v1/messages/%u002e", BadPercent),
            ("/v1/messages/%00", EncodedControl),
            ("/v1/messages/%0d%0a", EncodedControl),
            ("/v1/messages/%7F", EncodedControl),
            ("/v1/messages/%252e%252e/x", DoubleEncoded),
            ("/v1/messages/%252F", DoubleEncoded),
            ("/v1/messages/%25%32%65%25%32%65/x", DoubleEncoded),
            ("/v1/messages/%c0%ae%c0%ae/x", BadUtf8),
            ("/v1/messages/%ff", BadUtf8),
            ("/..", DotDot),
            ("/v1/messages/../../../x", DotDot),
            ("/v1/messages/%2e%2e/%2e%2e/%2e%2e", DotDot),
            ("/v1/messages/..;/x", DotDot),
            ("/v1/messages/...", DotDot),
            ("/v1/a..b", DotDot),
            ("/v1/messages\u{0}", RawChar),
            ("/v1/mess ages", RawChar),
            ("/v1/messages\t", RawChar),
            ("/v1/caf\u{e9}", RawChar),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), Err(want), "{input:?}");
        }
    }

    /// Path pieces an attacker combines: separators, dots in every
    /// spelling, encodings valid and not. Mostly ones that can make a valid
    /// path, so that the properties of the result get exercised too.
    fn piece() -> impl Strategy<Value = &'static str> {
        let valid = prop::sample::select(vec![
            "/", "//", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "a", "v1", "messages", "%41",
            "%7e", "%25", "%20", "%c3%a9", ";", "~", "-", "_", "%3a", "%3A", "%25%32%", "2",
        ]);
        let hostile = prop::sample::select(vec![
            "%2f",
            "%2F",
            "%5c",
            "\\",
            "%",
            "%zz",
            "%252e",
            "%00",
            "%c0%ae",
            "é",
            " ",
            "..;",
            "...",
            "%32%65",
            "%25%32%65",
        ]);
        prop_oneof![8 => valid, 1 => hostile]
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..12).prop_map(|v| format!("/{}", v.concat()))
    }

    /// Percent-encode the unreserved characters of `p` that `mask` picks
    /// (not the hex digits of an encoding already there).
    fn encode_unreserved(p: &str, mask: &[bool]) -> String {
        let mut out = String::new();
        let mut in_triplet = 0u8;
        for (i, b) in p.bytes().enumerate() {
            if b == b'%' {
                in_triplet = 3;
            }
            let pick = in_triplet == 0 && is_unreserved(b) && mask.get(i).copied().unwrap_or(false);
            in_triplet = in_triplet.saturating_sub(1);
            if pick {
                out.push_str(&format!("%{b:02x}"));
            } else {
                out.push(char::from(b));
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn normal_form_is_safe_and_stable(p in path_strategy()) {
            if let Ok(n) = normalise(&p) {
                prop_assert!(n.starts_with('/'));
                prop_assert!(!n.contains(".."), "{n}");
                prop_assert!(!n.contains("//"), "{n}");
                prop_assert!(!n.contains("/./") && !n.ends_with("/."), "{n}");
                prop_assert!(!n.contains('\\'));
                prop_assert!(n.bytes().all(|b| (0x21..=0x7e).contains(&b)));
                let lower = n.to_ascii_lowercase();
                prop_assert!(!lower.contains("%2f") && !lower.contains("%5c") && !lower.contains("%2e"));
                // Idempotent; the fast path takes every result it can.
                let again = normalise(&n);
                prop_assert_eq!(again.as_deref(), Ok(n.as_ref()));
                if !n.contains('%') {
                    prop_assert!(matches!(again, Ok(Cow::Borrowed(_))));
                }
            }
        }

        #[test]
        fn fast_path_agrees_with_the_full_algorithm(p in path_strategy()) {
            if is_normal(&p) {
                prop_assert_eq!(normalise_slow(&p), Ok(p.clone()));
            }
        }

        #[test]
        fn encoding_unreserved_characters_changes_nothing(
            p in path_strategy(),
            mask in prop::collection::vec(any::<bool>(), 0..64),
        ) {
            if let Ok(n) = normalise(&p) {
                let encoded = encode_unreserved(&n, &mask);
                prop_assert_eq!(norm(&encoded), Ok(n.into_owned()));
            }
        }
    }
}
