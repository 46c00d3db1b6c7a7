//! `anthropic-beta` flags: read from the client's header values (each a
//! comma-separated list), filtered one by one by a provider's
//! `anthropic_beta` allow and deny lists, and written back as a header (a
//! direct provider) or left for the body (the clouds, see [`super::body`]).

use crate::config::BetaFilter;
use http::{HeaderMap, HeaderValue};

pub const HEADER: &str = "anthropic-beta";

/// Whether `filter` lets `flag` through. Flags compare without regard to
/// case, so a deny cannot be dodged by spelling a flag in capitals.
pub fn permits(filter: &BetaFilter, flag: &str) -> bool {
    let listed = |list: &[String]| list.iter().any(|f| f.eq_ignore_ascii_case(flag));
    !listed(&filter.deny) && (filter.allow.is_empty() || listed(&filter.allow))
}

/// The flags of every `anthropic-beta` header in `headers`, in order,
/// trimmed, without empty entries and repeats. A value that is not UTF-8
/// is skipped: no flag has such bytes.
pub fn client_flags(headers: &HeaderMap) -> Vec<String> {
    let mut flags = Vec::new();
    for v in headers.get_all(HEADER) {
        let Ok(v) = v.to_str() else { continue };
        for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            push_unique(&mut flags, f);
        }
    }
    flags
}

/// Appends `flag` unless it is already there.
pub fn push_unique(flags: &mut Vec<String>, flag: &str) {
    if !flags.iter().any(|f| f.eq_ignore_ascii_case(flag)) {
        flags.push(flag.to_string());
    }
}

/// The flags `filter` lets through, in order.
pub fn filter(filter: &BetaFilter, flags: Vec<String>) -> Vec<String> {
    flags.into_iter().filter(|f| permits(filter, f)).collect()
}

/// What becomes of the client's `anthropic-beta` header on its way to a
/// direct provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Forward the client's header(s) as they are.
    Keep,
    /// Send this single header instead.
    Replace(HeaderValue),
    /// Send none: every flag was filtered out.
    Remove,
}

/// The `anthropic-beta` header for a direct provider with `filter`.
pub fn header_edit(filter: &BetaFilter, headers: &HeaderMap) -> HeaderEdit {
    if filter.allow.is_empty() && filter.deny.is_empty() {
        return HeaderEdit::Keep;
    }
    let all = client_flags(headers);
    let total = headers.get_all(HEADER).iter().count();
    let kept = self::filter(filter, all.clone());
    if kept.is_empty() {
        return if total == 0 {
            HeaderEdit::Keep
        } else {
            HeaderEdit::Remove
        };
    }
    if kept == all && total == 1 {
        return HeaderEdit::Keep;
    }
    // Flags came from a valid header value; joined they still are one.
    match HeaderValue::from_str(&kept.join(",")) {
        Ok(v) => HeaderEdit::Replace(v),
        Err(_) => HeaderEdit::Remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(allow: &[&str], deny: &[&str]) -> BetaFilter {
        BetaFilter {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn flags_are_split_trimmed_and_deduplicated() {
        let h = headers(&["a-1, b-2,,", " c-3 ,A-1"]);
        assert_eq!(client_flags(&h), ["a-1", "b-2", "c-3"]);
        let mut h = HeaderMap::new();
        h.append(HEADER, HeaderValue::from_bytes(b"\xff, x").unwrap());
        h.append(HEADER, HeaderValue::from_static("y"));
        assert_eq!(client_flags(&h), ["y"]);
    }

    #[test]
    fn allow_and_deny_filter_flag_by_flag() {
        let flags = || vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(filter(&f(&[], &[]), flags()), ["a", "b", "c"]);
        assert_eq!(filter(&f(&[], &["b"]), flags()), ["a", "c"]);
        assert_eq!(filter(&f(&["a", "c"], &[]), flags()), ["a", "c"]);
        assert_eq!(filter(&f(&["a", "b"], &["b"]), flags()), ["a"]);
        assert!(!permits(&f(&[], &["context-1m"]), "CONTEXT-1M"));
        assert!(permits(&f(&["Context-1m"], &[]), "context-1m"));
    }

    #[test]
    fn direct_header_is_rewritten_only_when_it_changes() {
        let h = headers(&["a,b"]);
        assert_eq!(header_edit(&f(&[], &[]), &h), HeaderEdit::Keep);
        assert_eq!(header_edit(&f(&[], &["z"]), &h), HeaderEdit::Keep);
        assert_eq!(
            header_edit(&f(&[], &["a"]), &h),
            HeaderEdit::Replace(HeaderValue::from_static("b"))
        );
        assert_eq!(header_edit(&f(&["z"], &[]), &h), HeaderEdit::Remove);
        assert_eq!(
            header_edit(&f(&["z"], &[]), &HeaderMap::new()),
            HeaderEdit::Keep
        );
        // Two headers become one, so nothing downstream joins them oddly.
        assert_eq!(
            header_edit(&f(&[], &["z"]), &headers(&["a", "b"])),
            HeaderEdit::Replace(HeaderValue::from_static("a,b"))
        );
    }
}
