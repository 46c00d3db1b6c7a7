//! OpenTelemetry traces (`telemetry.otlp_endpoint`): one server
//! span per client request and one client span per provider attempt,
//! exported over OTLP/gRPC in batches by a background service.
//!
//! Off by default, and then the request path pays one branch per request
//! and per attempt. On, a request costs a few random ids and, when its
//! trace is sampled, the spans built from its [`RequestRecord`] once it
//! has finished: nothing is traced while the request is in flight, and
//! nothing waits for the receiver. The client's W3C `traceparent` and
//! `tracestate` are continued and, with the attempt's span as parent,
//! passed to the provider; without tracing they pass through untouched.
//!
//! The settings apply at start; a reload that changes them is logged as
//! ignored.

mod context;
mod export;
mod spans;

pub use context::{format_traceparent, parse_traceparent, TraceContext};

use crate::config::{Config, TelemetrySettings};
use crate::record::RequestRecord;
use opentelemetry::InstrumentationScope;
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use std::sync::OnceLock;
use std::time::Duration;

struct Tracing {
    sample_ratio: f64,
    sink: export::Sink,
    scope: InstrumentationScope,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// How long exiting waits for the last spans to be exported.
const EXIT_FLUSH: Duration = Duration::from_secs(1);

/// Turn tracing on for this process and add its exporter to `server`.
/// Called once, at start.
pub fn install(server: &mut Server, settings: &TelemetrySettings) {
    let (sink, exporter) = export::channel(
        &settings.otlp_endpoint,
        settings.max_queued_spans,
        settings.export_timeout,
    );
    let installed = TRACING
        .set(Tracing {
            sample_ratio: settings.sample_ratio,
            sink,
            scope: spans::scope(),
        })
        .is_ok();
    if installed {
        server.add_service(background_service("trace exporter", exporter));
        crate::logging::event(log::Level::Info, "tracing_started")
            .field("otlp_endpoint", settings.otlp_endpoint.as_str())
            .field("sample_ratio", settings.sample_ratio)
            .emit();
    }
}

/// Whether tracing is on.
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// The trace context of a new client request, from its headers; `None`
/// while tracing is off.
pub fn start(headers: &http::HeaderMap) -> Option<Box<TraceContext>> {
    let t = TRACING.get()?;
    Some(Box::new(context::start(headers, t.sample_ratio, span_id)))
}

/// A fresh, non-zero span id.
pub fn span_id() -> u64 {
    fastrand::u64(1..)
}

/// What a traced attempt tells its provider: the `traceparent` naming the
/// attempt's span, and the client's `tracestate`.
pub struct Propagation<'a> {
    pub traceparent: [u8; 55],
    pub tracestate: Option<&'a str>,
}

impl TraceContext {
    pub fn propagation(&self, attempt_span: u64) -> Propagation<'_> {
        Propagation {
            traceparent: format_traceparent(self.trace_id, attempt_span, self.sampled),
            tracestate: self.tracestate.as_deref(),
        }
    }
}

/// A request finished: queue its spans when its trace is recorded.
pub fn request_finished(rec: &RequestRecord, config: &Config) {
    let (Some(t), Some(trace)) = (TRACING.get(), rec.trace.as_deref()) else {
        return;
    };
    if !trace.sampled {
        return;
    }
    let spans = spans::build(rec, trace, config, spans::Clock::now(), &t.scope);
    t.sink.submit(spans);
}

/// Export what is queued before the process exits (bounded wait).
pub fn flush_at_exit() {
    if let Some(t) = TRACING.get() {
        t.sink.flush(EXIT_FLUSH);
    }
}
