//! The `health` section: passive ejection (failures, ejection times,
//! Retry-After cap), recovery probing and the defaults for active probes.

use super::{ms, Errors};
use crate::config::schema::Health;
use crate::config::{ActiveSettings, HealthSettings};

pub(super) fn health(errs: &mut Errors, h: &Health) -> Option<HealthSettings> {
    let before = errs.0.len();
    if h.eject_after_failures == 0 {
        errs.push("health.eject_after_failures", "must be at least 1");
    }
    if h.base_ejection_ms == 0 {
        errs.push("health.base_ejection_ms", "must be at least 1");
    }
    if h.max_ejection_ms < h.base_ejection_ms {
        errs.push(
            "health.max_ejection_ms",
            "must be at least health.base_ejection_ms",
        );
    }
    if h.recovery_probe_interval_ms == 0 {
        errs.push("health.recovery_probe_interval_ms", "must be at least 1");
    }
    if let Some(a) = &h.active {
        if a.interval_ms == 0 {
            errs.push("health.active.interval_ms", "must be at least 1");
        }
        if a.timeout_ms == 0 {
            errs.push("health.active.timeout_ms", "must be at least 1");
        }
    }
    let active = h.active.as_ref().map(|a| ActiveSettings {
        interval: ms(a.interval_ms),
        timeout: ms(a.timeout_ms),
    });
    if errs.0.len() != before {
        return None;
    }
    Some(HealthSettings {
        eject_after_failures: h.eject_after_failures,
        base_ejection: ms(h.base_ejection_ms),
        max_ejection: ms(h.max_ejection_ms),
        max_retry_after: ms(h.max_retry_after_ms),
        recovery_probe_interval: ms(h.recovery_probe_interval_ms),
        active,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::ActiveHealth;

    #[test]
    fn ejection_bounds_and_active_probe_defaults() {
        let mut errs = Errors(Vec::new());
        let h = health(&mut errs, &Health::default()).unwrap();
        assert_eq!(h.eject_after_failures, 3);
        assert_eq!((h.base_ejection, h.max_ejection), (ms(1000), ms(60_000)));
        assert_eq!(h.max_retry_after, ms(300_000));
        assert_eq!(h.active, None);
        let with_active = Health {
            active: Some(ActiveHealth::default()),
            ..Health::default()
        };
        let h = health(&mut errs, &with_active).unwrap();
        assert_eq!(
            h.active,
            Some(ActiveSettings {
                interval: ms(10_000),
                timeout: ms(3000),
            })
        );
        assert!(errs.0.is_empty());
        let bad = Health {
            eject_after_failures: 0,
            base_ejection_ms: 10,
            max_ejection_ms: 9,
            active: Some(ActiveHealth {
                interval_ms: 0,
                timeout_ms: 0,
            }),
            ..Health::default()
        };
        assert_eq!(health(&mut errs, &bad), None);
        assert_eq!(
            errs.paths(),
            [
                "health.eject_after_failures",
                "health.max_ejection_ms",
                "health.active.interval_ms",
                "health.active.timeout_ms"
            ]
        );
    }
}
