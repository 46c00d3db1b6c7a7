//! The request path reports what happened here, once per fact; this module
//! turns facts into log events (and, through [`crate::metrics`], into
//! counters). Keeping the fan-out in one place keeps the request path free
//! of observability code.

use crate::affinity::{AffinityResult, SessionSource};
use crate::config::{AccessLog, Config, LogSettings};
use crate::health::Transition;
use crate::logging::event;
use crate::outcome::ErrorClass;
use crate::record::{AttemptRecord, RequestRecord};
use crate::{metrics, stats};
use log::Level;
use std::time::Duration;

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

pub fn limiter_rejected(rec: &RequestRecord, scope: &'static str) {
    metrics::global().limiter_rejected(scope);
    stats::global().limiter_rejected(scope);
    event(Level::Warn, "limiter_rejected")
        .field("request_id", rec.request_id.as_str())
        .opt("route", rec.route.as_deref())
        .field("scope", scope)
        .emit();
}

/// Log only: failovers are counted from the attempt chain when the request
/// finishes, so the counters are exact whichever way the loop went.
pub fn failover(rec: &RequestRecord, from: &str, class: ErrorClass) {
    event(Level::Warn, "failover")
        .field("request_id", rec.request_id.as_str())
        .opt("route", rec.route.as_deref())
        .field("from_provider", from)
        .field("class", class.as_str())
        .emit();
}

/// A provider could not take the request (a dialect it does not
/// translate to, a feature it lacks): the route went on without it.
pub fn provider_skipped(rec: &RequestRecord, provider: &str, why: &str) {
    event(Level::Info, "provider_skipped")
        .field("request_id", rec.request_id.as_str())
        .opt("route", rec.route.as_deref())
        .field("provider", provider)
        .field("reason", why)
        .emit();
}

/// An attempt's request was translated into another dialect; what the
/// translation left out is logged by kind, never content.
pub fn translated(
    rec: &RequestRecord,
    provider: &str,
    from: crate::config::Api,
    to: crate::config::Api,
    notes: &crate::translate::Notes,
) {
    metrics::global().translated(from, to);
    if !notes.is_empty() {
        let notes: Vec<&str> = notes.as_slice().iter().map(|n| n.as_str()).collect();
        event(Level::Info, "translation_notes")
            .field("request_id", rec.request_id.as_str())
            .field("provider", provider)
            .field("from_api", from.as_str())
            .field("to_api", to.as_str())
            .field("notes", notes)
            .emit();
    }
}

/// A stream cut mid-answer and what resumption made of it (`result`:
/// resumed, not_resumable, failed).
pub fn stream_resume(rec: &RequestRecord, provider: &str, result: &'static str) {
    metrics::global().stream_resume(provider, result);
    event(Level::Info, "stream_resume")
        .field("request_id", rec.request_id.as_str())
        .opt("route", rec.route.as_deref())
        .field("provider", provider)
        .field("result", result)
        .emit();
}

/// A provider refused an assistant prefill; with `prefill: auto` it is not
/// asked again in this process.
pub fn prefill_refused(rec: &RequestRecord, provider: &str) {
    event(Level::Warn, "prefill_refused")
        .field("request_id", rec.request_id.as_str())
        .field("provider", provider)
        .emit();
}

pub fn stream_interrupted(rec: &RequestRecord, provider: &str, class: ErrorClass, detail: &str) {
    metrics::global().stream_interrupted(provider, class);
    stats::global().stream_interrupted();
    event(Level::Warn, "stream_interrupted")
        .field("request_id", rec.request_id.as_str())
        .opt("route", rec.route.as_deref())
        .field("provider", provider)
        .field("class", class.as_str())
        .field("detail", detail)
        .emit();
}

pub fn provider_transition(provider: &str, t: &Transition) {
    match t {
        Transition::Ejected {
            for_,
            class,
            consecutive_ejections,
        } => {
            metrics::global().provider_ejected(provider);
            event(Level::Warn, "provider_ejected")
                .field("provider", provider)
                .field("class", class.as_str())
                .field("ejection_ms", ms(*for_))
                .field("consecutive_ejections", *consecutive_ejections)
                .emit()
        }
        Transition::Recovered { via } => event(Level::Info, "provider_recovered")
            .field("provider", provider)
            .field("via", via.as_str())
            .emit(),
        Transition::CoolingDown { for_ } => event(Level::Info, "provider_cooling_down")
            .field("provider", provider)
            .field("cooldown_ms", ms(*for_))
            .emit(),
    }
}

/// A WebSocket tunnel opened: logged now (a session can last an hour
/// before its access log line), counted open while the handle lives.
pub fn websocket_opened(rec: &RequestRecord, provider: &str) -> metrics::OpenTunnel {
    event(Level::Info, "websocket_opened")
        .field("request_id", rec.request_id.as_str())
        .opt("route", rec.route.as_deref())
        .field("provider", provider)
        .emit();
    metrics::global().websocket_opened(rec.route.as_deref().unwrap_or(metrics::NO_ROUTE))
}

/// A provider's key file was re-read: `success` when its key is now in
/// use. The caller logs it.
pub fn key_reloaded(provider: &str, success: bool) {
    metrics::global().key_reloaded(provider, success);
}

/// A config reload finished: `success` is false when the new file was
/// rejected and the last good config keeps serving. The caller logs it.
pub fn config_reloaded(success: bool) {
    metrics::config_reloaded(success);
}

/// One upstream attempt ended (any result, the client leaving included).
pub fn attempt_finished(a: &AttemptRecord) {
    metrics::global().attempt_finished(a);
    stats::global().attempt_finished(&a.provider, a.result);
}

/// Called exactly once per client request, however many attempts it made:
/// queues its trace spans, writes its access log line, then counts it.
/// Counting last means that a request seen in `/metrics` or `/stats` has
/// its log line written (and its spans queued) already.
pub fn request_finished(rec: &RequestRecord, config: &Config) {
    crate::otel::request_finished(rec, config);
    access_log(rec, &config.logging);
    metrics::global().request_finished(rec);
    stats::global().request_finished(rec);
}

/// The access log line (`event: request`), per `logging.access_log`.
fn access_log(rec: &RequestRecord, settings: &LogSettings) {
    let duration = rec.duration();
    let is_error = rec.class.is_some() || rec.status >= 500;
    let log_it = match settings.access_log {
        AccessLog::Off => false,
        AccessLog::All => true,
        // A WebSocket session is long by nature; slow means a slow 101.
        AccessLog::ErrorsAndSlow => is_error || rec.response_duration() >= settings.slow,
    };
    if !log_it {
        return;
    }
    let attempts: Vec<serde_json::Value> = rec
        .attempts
        .iter()
        .map(|a| {
            serde_json::json!({
                "provider": a.provider,
                "result": a.result.label(),
                "status": a.status,
                "ttfb_ms": a.ttfb.map(ms),
                "first_content_ms": a.first_content.map(ms),
                "pre_content": a.pre_content,
                "translated": a.translated,
                "waited_ms": ms(a.waited),
                "upstream_request_id": a.upstream_request_id,
            })
        })
        .collect();
    let level = if rec.status >= 500
        || rec
            .class
            .is_some_and(|c| c != ErrorClass::Request && c != ErrorClass::Client)
    {
        Level::Warn
    } else {
        Level::Info
    };
    let mut e = event(level, "request")
        .field("request_id", rec.request_id.as_str())
        .field("method", rec.method.as_str())
        .field("path", rec.path.as_str())
        .opt("route", rec.route.as_deref())
        .opt("provider", rec.provider.as_deref())
        .field("attempts", rec.attempts.len())
        .field("attempt_chain", attempts)
        .field("status", rec.status)
        .field("class", rec.class.map_or("success", ErrorClass::as_str))
        .field("outcome", rec.outcome_label().as_str())
        .field("duration_ms", ms(duration))
        .opt("ttfb_ms", rec.ttfb.map(ms))
        .opt("model", rec.model.as_deref())
        .opt("resumed_from", rec.resumed_from.as_deref())
        .opt("resumed_at_tokens", rec.resumed_at_tokens)
        .opt("resumed_overlap_trimmed", rec.resumed_overlap_trimmed)
        .opt(
            "trace_id",
            rec.trace.as_ref().map(|t| format!("{:032x}", t.trace_id)),
        )
        .opt("affinity", rec.affinity.map(AffinityResult::as_str))
        .opt(
            "session_source",
            rec.session_source.map(SessionSource::as_str),
        );
    if let Some(ws) = &rec.websocket {
        e = e.field(
            "websocket",
            serde_json::json!({
                "result": ws.result(),
                "detail": ws.detail,
                "open_ms": ms(ws.open_for),
                "bytes_from_client": ws.from_client,
                "bytes_from_upstream": ws.from_upstream,
            }),
        );
    }
    if !rec.usage.is_empty() {
        e = e.field(
            "tokens",
            serde_json::json!({
                "input": rec.usage.input,
                "output": rec.usage.output,
                "cache_read": rec.usage.cache_read,
                "cache_write": rec.usage.cache_write,
            }),
        );
    }
    e.emit();
}
