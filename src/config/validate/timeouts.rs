//! The `timeouts` section and the per-provider `timeouts` overrides, and how
//! the two combine into a provider's effective timeouts.

use super::{ms, Errors};
use crate::config::schema::{TimeoutOverrides, Timeouts};
use crate::config::TimeoutSettings;

pub(super) fn check_timeouts(errs: &mut Errors, path: &str, t: &Timeouts) {
    for (k, v) in [
        ("connect_ms", t.connect_ms),
        ("response_header_ms", t.response_header_ms),
        ("response_header_stream_ms", t.response_header_stream_ms),
        ("first_content_ms", t.first_content_ms),
        ("stream_idle_ms", t.stream_idle_ms),
        ("total_ms", t.total_ms),
    ] {
        if v == 0 {
            errs.push(format!("{path}.{k}"), "must be at least 1");
        }
    }
}

pub(super) fn check_overrides(errs: &mut Errors, path: &str, t: &TimeoutOverrides) {
    for (k, v) in [
        ("connect_ms", t.connect_ms),
        ("response_header_ms", t.response_header_ms),
        ("response_header_stream_ms", t.response_header_stream_ms),
        ("first_content_ms", t.first_content_ms),
        ("stream_idle_ms", t.stream_idle_ms),
        ("total_ms", t.total_ms),
    ] {
        if v == Some(0) {
            errs.push(format!("{path}.{k}"), "must be at least 1");
        }
    }
}

/// A provider's timeouts: its overrides where set, the global ones otherwise.
pub(super) fn resolve(global: &Timeouts, o: &TimeoutOverrides) -> TimeoutSettings {
    TimeoutSettings {
        connect: ms(o.connect_ms.unwrap_or(global.connect_ms)),
        response_header: ms(o.response_header_ms.unwrap_or(global.response_header_ms)),
        response_header_stream: ms(o
            .response_header_stream_ms
            .unwrap_or(global.response_header_stream_ms)),
        first_content: ms(o.first_content_ms.unwrap_or(global.first_content_ms)),
        stream_idle: ms(o.stream_idle_ms.unwrap_or(global.stream_idle_ms)),
        total: ms(o.total_ms.unwrap_or(global.total_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeouts_are_reported_per_key() {
        let mut errs = Errors(Vec::new());
        check_timeouts(&mut errs, "timeouts", &Timeouts::default());
        assert!(errs.0.is_empty());
        let t = Timeouts {
            connect_ms: 0,
            total_ms: 0,
            ..Timeouts::default()
        };
        check_timeouts(&mut errs, "timeouts", &t);
        let o = TimeoutOverrides {
            stream_idle_ms: Some(0),
            total_ms: Some(1),
            ..TimeoutOverrides::default()
        };
        check_overrides(&mut errs, "providers[2].timeouts", &o);
        assert_eq!(
            errs.paths(),
            [
                "timeouts.connect_ms",
                "timeouts.total_ms",
                "providers[2].timeouts.stream_idle_ms"
            ]
        );
        assert!(errs.0.iter().all(|e| e.reason == "must be at least 1"));
    }

    #[test]
    fn overrides_win_over_global_timeouts() {
        let global = Timeouts::default();
        let o = TimeoutOverrides {
            response_header_ms: Some(7),
            ..TimeoutOverrides::default()
        };
        let t = resolve(&global, &o);
        assert_eq!(t.connect, ms(global.connect_ms));
        assert_eq!(t.response_header, ms(7));
        assert_eq!(t.stream_idle, ms(global.stream_idle_ms));
        assert_eq!(t.total, ms(global.total_ms));
    }
}
