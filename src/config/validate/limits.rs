//! The `limits` section: admission control (in-flight requests, queueing)
//! and the request body size cap.

use super::{ms, Errors};
use crate::config::schema::Limits;
use crate::config::LimitSettings;

pub(super) fn limits(errs: &mut Errors, l: &Limits) -> Option<LimitSettings> {
    let before = errs.0.len();
    if l.max_inflight == 0 {
        errs.push("limits.max_inflight", "must be at least 1");
    }
    if l.max_body_bytes == 0 {
        errs.push("limits.max_body_bytes", "must be at least 1");
    }
    let max_body_bytes = usize::try_from(l.max_body_bytes).unwrap_or(usize::MAX);
    if errs.0.len() != before {
        return None;
    }
    Some(LimitSettings {
        max_inflight: l.max_inflight,
        queue_timeout: ms(l.queue_timeout_ms),
        max_body_bytes,
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
