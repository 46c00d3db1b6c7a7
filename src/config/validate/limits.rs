//! The `limits` section: admission control (in-flight requests, queueing),
//! the request body size cap and the request head bounds.

use super::{ms, Errors};
use crate::config::schema::Limits;
use crate::config::LimitSettings;

/// Smallest `limits.max_header_bytes`: below this, ordinary SDK requests
/// (user agent, auth, beta flags) would be refused.
const MIN_HEADER_BYTES: u64 = 1024;
/// Largest `limits.max_header_bytes`: Pingora's own HTTP/1 head cap (1 MiB)
/// is the hard ceiling anyway.
const MAX_HEADER_BYTES: u64 = 1024 * 1024;

pub(super) fn limits(errs: &mut Errors, l: &Limits) -> Option<LimitSettings> {
    let before = errs.0.len();
    if l.max_inflight == 0 {
        errs.push("limits.max_inflight", "must be at least 1");
    }
    if l.max_body_bytes == 0 {
        errs.push("limits.max_body_bytes", "must be at least 1");
    }
    let max_body_bytes = usize::try_from(l.max_body_bytes).unwrap_or(usize::MAX);
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&l.max_header_bytes) {
        errs.push(
            "limits.max_header_bytes",
            format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES} (1 MiB)"),
        );
    }
    if l.header_timeout_ms == 0 {
        errs.push("limits.header_timeout_ms", "must be at least 1");
    }
    if errs.0.len() != before {
        return None;
    }
    Some(LimitSettings {
        max_inflight: l.max_inflight,
        queue_timeout: ms(l.queue_timeout_ms),
        max_body_bytes,
        // In range: checked above.
        max_header_bytes: l.max_header_bytes as usize,
        header_timeout: ms(l.header_timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_rejected_and_big_bodies_saturate() {
        let mut errs = Errors(Vec::new());
        let l = limits(&mut errs, &Limits::default()).unwrap();
        assert_eq!(l.max_inflight, 100);
        assert_eq!(l.queue_timeout, ms(5000));
        assert_eq!(l.max_body_bytes, 32 * 1024 * 1024);
        let huge = Limits {
            max_body_bytes: u64::MAX,
            ..Limits::default()
        };
        let l = limits(&mut errs, &huge).unwrap();
        assert_eq!(l.max_body_bytes, usize::MAX);
        let zero = Limits {
            max_inflight: 0,
            max_body_bytes: 0,
            ..Limits::default()
        };
        assert_eq!(limits(&mut errs, &zero), None);
        assert_eq!(
            errs.paths(),
            ["limits.max_inflight", "limits.max_body_bytes"]
        );
    }
}
