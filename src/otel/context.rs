//! W3C Trace Context (`traceparent`, `tracestate`): read strictly from a
//! client, written to providers. Pure; the ids are plain integers.
//!
//! A malformed `traceparent` (wrong length or separators, upper-case or
//! non-hex digits, an all-zero id, version `ff`, or sent twice) starts a
//! new trace, as the W3C recommendation says; its `tracestate` then goes
//! with it. A `tracestate` that is not a valid list is dropped alone.

use http::HeaderMap;
use std::str::FromStr;

/// Length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;

/// The trace context of one client request while tracing is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The client's span, when it sent a valid `traceparent`.
    pub parent: Option<u64>,
    /// This request's own span (the server span).
    pub span_id: u64,
    /// Whether this trace is recorded; providers are told either way.
    pub sampled: bool,
    /// The client's `tracestate`, valid, passed on unchanged.
    pub tracestate: Option<Box<str>>,
    /// The model the client asked for (the access log's `model` becomes
    /// the one that answered).
    pub request_model: Option<String>,
    /// The model a provider's usage said answered, when it said.
    pub response_model: Option<String>,
}

/// A parsed `traceparent`: trace id, parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent: u64,
    pub flags: u8,
}

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Parse one `traceparent` value (W3C Trace Context level 1 §3.2). A
/// version above 00 is read as 00 where it can be (its first 55 bytes,
/// followed by nothing or a `-`), as the spec asks of a version-00 reader.
pub fn parse_traceparent(v: &[u8]) -> Option<TraceParent> {
    if v.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = hex(&v[0..2])? as u8;
    if version == 0xff
        || (version == 0 && v.len() != TRACEPARENT_LEN)
        || (v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-')
        || v[2] != b'-'
        || v[35] != b'-'
        || v[52] != b'-'
    {
        return None;
    }
    let trace_id = hex(&v[3..35])?;
    let parent = hex(&v[36..52])? as u64;
    let flags = hex(&v[53..55])? as u8;
    (trace_id != 0 && parent != 0).then_some(TraceParent {
        trace_id,
        parent,
        flags,
    })
}

/// Lower-case hex digits only, at most 32 of them.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(d))
    })
}

/// The `traceparent` sent to a provider: this trace, the attempt's span.
pub fn format_traceparent(trace_id: u128, span_id: u64, sampled: bool) -> [u8; TRACEPARENT_LEN] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[0] = b'0';
    out[1] = b'0';
    for i in 0..32 {
        out[3 + i] = DIGITS[((trace_id >> (124 - 4 * i)) & 0xf) as usize];
    }
    for i in 0..16 {
        out[36 + i] = DIGITS[((span_id >> (60 - 4 * i)) & 0xf) as usize];
    }
    out[53] = b'0';
    out[54] = if sampled { b'1' } else { b'0' };
    out
}

/// The client's `tracestate`, when it is a valid list (several header
/// lines are one list, W3C §3.3.1.1); kept as sent.
fn tracestate(headers: &HeaderMap) -> Option<Box<str>> {
    let mut joined = String::new();
    for v in headers.get_all("tracestate") {
        let v = v.to_str().ok()?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(v);
    }
    // The W3C limits: 32 members; 512 bytes is what every hop must carry.
    if joined.trim().is_empty() || joined.len() > 512 {
        return None;
    }
    opentelemetry::trace::TraceState::from_str(&joined).ok()?;
    Some(joined.into_boxed_str())
}

/// The trace context of a new request: continued from the client's
/// `traceparent` when it is valid (its sampled flag decides whether it is
/// recorded), else a new trace recorded at `sample_ratio`. `ids` yields
/// random non-zero ids.
pub fn start(headers: &HeaderMap, sample_ratio: f64, mut ids: impl FnMut() -> u64) -> TraceContext {
    let mut lines = headers.get_all("traceparent").iter();
    let parent = match (lines.next(), lines.next()) {
        (Some(v), None) => parse_traceparent(v.as_bytes()),
        _ => None,
    };
    let span_id = ids();
    match parent {
        Some(p) => TraceContext {
            trace_id: p.trace_id,
            parent: Some(p.parent),
            span_id,
            sampled: p.sampled(),
            tracestate: tracestate(headers),
            request_model: None,
            response_model: None,
        },
        None => {
            let trace_id = u128::from(ids()) << 64 | u128::from(ids());
            TraceContext {
                trace_id,
                parent: None,
                span_id,
                sampled: sampled_at(trace_id, sample_ratio),
                tracestate: None,
                request_model: None,
                response_model: None,
            }
        }
    }
}

/// The sampling decision for a new trace: its id's low 63 bits against
/// the ratio (the OpenTelemetry TraceIdRatioBased rule), so every hop that
/// samples by ratio agrees on one trace.
pub fn sampled_at(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let low = (trace_id as u64) & (u64::MAX >> 1);
    (low as f64) < ratio * (1u64 << 63) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let p = parse_traceparent(TP.as_bytes()).unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.parent, 0x00f067aa0ba902b7);
        assert!(p.sampled());
        let unsampled = TP.replace("-01", "-00");
        assert!(!parse_traceparent(unsampled.as_bytes()).unwrap().sampled());
        // A later version: the version-00 part is used, the rest ignored.
        let v1 = format!("01{}-what-comes-next", &TP[2..]);
        assert_eq!(
            parse_traceparent(v1.as_bytes()).map(|p| p.parent),
            Some(0x00f067aa0ba902b7)
        );
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        let cases = [
            "",
            &TP[..54],
            &format!("{TP}-"), // 00 with extra
            &TP.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)), // zero trace
            &TP.replace("00f067aa0ba902b7", "0000000000000000"), // zero parent
            &TP.to_uppercase(),
            &TP.replacen('-', "_", 1),
            &format!("ff{}", &TP[2..]),
            &TP.replace("4bf9", "4bg9"),
            &format!("01{}x", &TP[2..]), // later version, no '-'
            &TP.replace("-01", "-0x"),
        ];
        for c in cases {
            assert_eq!(parse_traceparent(c.as_bytes()), None, "{c:?}");
        }
    }

    #[test]
    fn the_upstream_traceparent_round_trips() {
        let out = format_traceparent(0x4bf92f3577b34da6a3ce929d0e0e4736, 0xab, true);
        let s = std::str::from_utf8(&out).unwrap();
        assert_eq!(s, "00-4bf92f3577b34da6a3ce929d0e0e4736-00000000000000ab-01");
        let p = parse_traceparent(&out).unwrap();
        assert_eq!(
            (p.trace_id, p.parent, p.sampled()),
            (0x4bf92f3577b34da6a3ce929d0e0e4736, 0xab, true)
        );
        assert!(format_traceparent(1, 2, false).ends_with(b"-00"));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn a_client_trace_is_continued_with_its_tracestate() {
        let h = headers(&[
            ("traceparent", TP),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ]);
        let c = start(&h, 0.0, counter());
        assert_eq!(c.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(c.parent, Some(0x00f067aa0ba902b7));
        assert_eq!(c.span_id, 1);
        // The client sampled it: recorded whatever the ratio.
        assert!(c.sampled);
        assert_eq!(
            c.tracestate.as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        // An invalid tracestate goes alone; the trace is still continued.
        let h = headers(&[("traceparent", TP), ("tracestate", "BAD KEY=1")]);
        let c = start(&h, 1.0, counter());
        assert_eq!((c.parent, c.tracestate), (Some(0x00f067aa0ba902b7), None));
    }

    #[test]
    fn a_malformed_or_repeated_traceparent_starts_a_new_trace() {
        for h in [
            headers(&[("traceparent", "00-xyz"), ("tracestate", "a=b")]),
            headers(&[("traceparent", TP), ("traceparent", TP)]),
            headers(&[]),
        ] {
            let c = start(&h, 1.0, counter());
            assert_eq!(c.parent, None);
            assert_eq!(c.span_id, 1);
            assert_eq!(c.trace_id, (2u128 << 64) | 3);
            assert!(c.sampled);
            assert_eq!(c.tracestate, None);
        }
    }

    #[test]
    fn new_traces_are_sampled_by_ratio_on_the_trace_id() {
        assert!(sampled_at(u128::MAX, 1.0));
        assert!(!sampled_at(0, 0.0));
        let mut rng = fastrand::Rng::with_seed(7);
        let kept = (0..10_000)
            .filter(|_| sampled_at(rng.u128(..), 0.25))
            .count();
        assert!((2300..=2700).contains(&kept), "{kept}");
        // The same trace gets the same decision.
        let id = rng.u128(..);
        assert_eq!(sampled_at(id, 0.5), sampled_at(id, 0.5));
    }
}
