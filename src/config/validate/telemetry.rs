//! The `telemetry` section: where OpenTelemetry traces go, how many are
//! recorded, and how much may wait for export.

use super::{ms, Errors};
use crate::config::schema::Telemetry;
use crate::config::TelemetrySettings;

/// Tracing settings when an endpoint is set; `None` (tracing off) without
/// one, or after reporting a problem.
pub(super) fn telemetry(errs: &mut Errors, t: &Telemetry) -> Option<TelemetrySettings> {
    let before = errs.0.len();
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        errs.push(
            "telemetry.sample_ratio",
            "must be between 0.0 and 1.0 (the share of new traces recorded)",
        );
    }
    if t.max_queued_spans == 0 || t.max_queued_spans > 1_000_000 {
        errs.push(
            "telemetry.max_queued_spans",
            "must be between 1 and 1000000",
        );
    }
    if t.export_timeout_ms == 0 {
        errs.push("telemetry.export_timeout_ms", "must be at least 1");
    }
    let endpoint = t.otlp_endpoint.as_deref().map(|e| match endpoint(e) {
        Ok(()) => e.trim_end_matches('/').to_string(),
        Err(why) => {
            errs.push("telemetry.otlp_endpoint", why);
            String::new()
        }
    });
    if errs.0.len() != before {
        return None;
    }
    Some(TelemetrySettings {
        otlp_endpoint: endpoint?,
        sample_ratio: t.sample_ratio,
        max_queued_spans: t.max_queued_spans,
        export_timeout: ms(t.export_timeout_ms),
    })
}

/// An OTLP/gRPC endpoint: `http://host:port`, nothing else. TLS to the
/// receiver is not built in: traces go to a collector next to steadfast.
fn endpoint(e: &str) -> Result<(), String> {
    let uri: http::Uri = e
        .parse()
        .map_err(|_| format!("{e:?} is not a URL; expected http://host:port"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported: send traces to a local OpenTelemetry Collector \
                 over http://host:4317 and let it forward them over TLS"
                    .into(),
            )
        }
        _ => return Err(format!("{e:?} must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{e:?} names no host"));
    }
    if uri.port_u16().is_none() {
        return Err(format!(
            "{e:?} names no port (OTLP/gRPC receivers listen on 4317)"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{e:?} has a path; an OTLP/gRPC endpoint is http://host:port"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(endpoint: Option<&str>) -> Telemetry {
        Telemetry {
            otlp_endpoint: endpoint.map(Into::into),
            ..Telemetry::default()
        }
    }

    #[test]
    fn off_without_an_endpoint_and_on_with_one() {
        let mut errs = Errors(Vec::new());
        assert_eq!(telemetry(&mut errs, &Telemetry::default()), None);
        let on = telemetry(&mut errs, &with(Some("http://127.0.0.1:4317/"))).unwrap();
        assert_eq!(on.otlp_endpoint, "http://127.0.0.1:4317");
        assert_eq!(on.sample_ratio, 1.0);
        assert_eq!(on.max_queued_spans, 4096);
        assert_eq!(on.export_timeout, ms(10_000));
        let named = telemetry(&mut errs, &with(Some("http://otel-collector:4317")));
        assert!(named.is_some());
        assert!(errs.0.is_empty(), "{:?}", errs.0);
    }

    #[test]
    fn endpoints_and_bounds_are_checked() {
        for (e, why) in [
            ("127.0.0.1:4317", "must start with http://"),
            ("https://collector:4317", "https is not supported"),
            ("http://collector", "names no port"),
            ("http://collector:4317/v1/traces", "has a path"),
            ("not a url", "is not a URL"),
        ] {
            let mut errs = Errors(Vec::new());
            assert_eq!(telemetry(&mut errs, &with(Some(e))), None, "{e}");
            assert_eq!(errs.paths(), ["telemetry.otlp_endpoint"], "{e}");
            assert!(errs.0[0].reason.contains(why), "{e}: {}", errs.0[0].reason);
        }
        let mut errs = Errors(Vec::new());
        let bad = Telemetry {
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            sample_ratio: 1.5,
            max_queued_spans: 0,
            export_timeout_ms: 0,
        };
        assert_eq!(telemetry(&mut errs, &bad), None);
        assert_eq!(
            errs.paths(),
            [
                "telemetry.sample_ratio",
                "telemetry.max_queued_spans",
                "telemetry.export_timeout_ms"
            ]
        );
        // Checked even while tracing is off, so a typo is found before it
        // is switched on.
        let mut errs = Errors(Vec::new());
        let nan = Telemetry {
            sample_ratio: f64::NAN,
            ..Telemetry::default()
        };
        assert_eq!(telemetry(&mut errs, &nan), None);
        assert_eq!(errs.paths(), ["telemetry.sample_ratio"]);
    }
}
