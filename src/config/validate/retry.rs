//! The `retry` section: how many attempts a request gets, and which failure
//! classes move it on to the next provider.

use super::Errors;
use crate::config::schema::Retry;
use crate::config::RetrySettings;
use crate::outcome::{ClassSet, ErrorClass};

pub(super) fn retry(errs: &mut Errors, r: &Retry) -> Option<RetrySettings> {
    let before = errs.0.len();
    if r.max_attempts == 0 {
        errs.push("retry.max_attempts", "must be at least 1");
    }
    let mut failover_on = ClassSet::empty();
    for (i, name) in r.failover_on.iter().enumerate() {
        match ErrorClass::parse(name).filter(|c| ErrorClass::UPSTREAM.contains(c)) {
            Some(c) => failover_on.insert(c),
            None => errs.push(
                format!("retry.failover_on[{i}]"),
                format!(
                    "unknown class {name:?}; expected one of network, timeout, rate_limit, server, auth, request, empty, context_length"
                ),
            ),
        }
    }
    if errs.0.len() != before {
        return None;
    }
    Some(RetrySettings {
        max_attempts: r.max_attempts,
        failover_on,
        resume_streams: r.resume_streams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_classes_must_be_upstream_classes() {
        let mut errs = Errors(Vec::new());
        let r = retry(&mut errs, &Retry::default()).unwrap();
        assert_eq!(r.max_attempts, 3);
        assert!(r.fails_over(ErrorClass::Auth));
        assert!(!r.fails_over(ErrorClass::Request));
        assert!(!r.resume_streams, "resumption is opt-in");
        let only = Retry {
            max_attempts: 1,
            failover_on: vec!["request".into()],
            resume_streams: true,
        };
        let r = retry(&mut errs, &only).unwrap();
        assert!(r.fails_over(ErrorClass::Request));
        assert!(!r.fails_over(ErrorClass::Network));
        assert!(r.resume_streams);
        assert!(errs.0.is_empty());
        // "concurrency" is a class, but steadfast's own, not an upstream's.
        let bad = Retry {
            max_attempts: 0,
            failover_on: vec!["network".into(), "concurrency".into(), "Server".into()],
            ..Retry::default()
        };
        assert!(retry(&mut errs, &bad).is_none());
        assert_eq!(
            errs.paths(),
            [
                "retry.max_attempts",
                "retry.failover_on[1]",
                "retry.failover_on[2]"
            ]
        );
        assert_eq!(
            errs.0[1].reason,
            "unknown class \"concurrency\"; expected one of network, timeout, rate_limit, server, auth, request, empty, context_length"
        );
    }
}
