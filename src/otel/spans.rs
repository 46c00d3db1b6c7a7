//! The spans of one finished client request, built after the fact from its
//! [`RequestRecord`]: one server span for the request, one client span per
//! provider attempt, with explicit timestamps. Pure, so the request path
//! carries no tracing code beyond the ids it propagates.
//!
//! Attributes follow the OpenTelemetry GenAI and HTTP semantic
//! conventions; steadfast's own facts are under `steadfast.*`. No prompt
//! or completion content is ever recorded.

use super::context::TraceContext;
use crate::config::{Api, Config, ProviderSettings};
use crate::outcome::{AttemptResult, ErrorClass, RequestOutcome};
use crate::record::{AttemptRecord, RequestRecord, Usage};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

/// Maps the monotonic instants of a record onto wall-clock time: one
/// reading of both clocks taken when the spans are built.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub wall: SystemTime,
    pub mono: Instant,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    fn at(&self, i: Instant) -> SystemTime {
        match self.mono.checked_duration_since(i) {
            Some(ago) => self.wall - ago,
            None => self.wall + i.duration_since(self.mono),
        }
    }
}

/// The instrumentation scope of every span steadfast exports.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("steadfast")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// `gen_ai.system` / `gen_ai.provider.name` of a provider's dialect.
fn system(api: Api) -> &'static str {
    match api {
        Api::Anthropic => "anthropic",
        Api::OpenAi | Api::OpenAiResponses => "openai",
    }
}

/// The spans of one traced request, the request's own first. `config`
/// names the providers (their dialect, address and model map).
pub fn build(
    rec: &RequestRecord,
    trace: &TraceContext,
    config: &Config,
    clock: Clock,
    scope: &InstrumentationScope,
) -> Vec<SpanData> {
    let trace_id = TraceId::from_bytes(trace.trace_id.to_be_bytes());
    let flags = if trace.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let state = trace
        .tracestate
        .as_deref()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let context = |span: u64, remote: bool| {
        SpanContext::new(
            trace_id,
            SpanId::from_bytes(span.to_be_bytes()),
            flags,
            remote,
            state.clone(),
        )
    };
    // Completion endpoints are GenAI "chat" operations; anything else
    // (model lists, token counts) is plain HTTP.
    let chat = Api::of_endpoint(&rec.path).is_some();
    let answered = rec.provider.as_deref().and_then(|p| config.provider(p));
    let end = rec.finished.unwrap_or(clock.mono);
    let mut out = Vec::with_capacity(1 + rec.attempts.len());

    let mut attrs = Vec::with_capacity(20);
    gen_ai(&mut attrs, chat, answered, trace.request_model.as_deref());
    if let Some(m) = &trace.response_model {
        attrs.push(KeyValue::new("gen_ai.response.model", m.clone()));
    }
    usage(&mut attrs, &rec.usage);
    attrs.push(KeyValue::new("http.request.method", rec.method.clone()));
    attrs.push(KeyValue::new("url.path", rec.path.clone()));
    if rec.status != 0 {
        attrs.push(KeyValue::new(
            "http.response.status_code",
            i64::from(rec.status),
        ));
    }
    if let Some(c) = rec.class {
        attrs.push(KeyValue::new("error.type", c.as_str()));
    }
    attrs.push(KeyValue::new(
        "steadfast.request_id",
        rec.request_id.clone(),
    ));
    if let Some(r) = &rec.route {
        attrs.push(KeyValue::new("steadfast.route", r.clone()));
    }
    if let Some(p) = &rec.provider {
        attrs.push(KeyValue::new("steadfast.provider", p.clone()));
    }
    attrs.push(KeyValue::new(
        "steadfast.attempts",
        rec.attempts.len() as i64,
    ));
    if let Some(a) = rec.affinity {
        attrs.push(KeyValue::new("steadfast.affinity", a.as_str()));
    }
    if let Some(s) = rec.session_source {
        attrs.push(KeyValue::new("steadfast.session_source", s.as_str()));
    }
    let failed = matches!(
        rec.outcome_label(),
        RequestOutcome::UpstreamError | RequestOutcome::Rejected
    ) || rec.status >= 500;
    out.push(SpanData {
        span_context: context(trace.span_id, false),
        parent_span_id: SpanId::from_bytes(trace.parent.unwrap_or(0).to_be_bytes()),
        parent_span_is_remote: trace.parent.is_some(),
        span_kind: SpanKind::Server,
        name: span_name(chat, trace.request_model.as_deref(), &rec.method),
        start_time: clock.at(rec.started),
        end_time: clock.at(end),
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if failed {
            error_status(rec.class.unwrap_or(ErrorClass::Server))
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    });

    let last = rec.attempts.len().saturating_sub(1);
    for (i, a) in rec.attempts.iter().enumerate() {
        if a.span_id == 0 {
            continue;
        }
        let p = config.provider(&a.provider);
        let model = trace
            .request_model
            .as_deref()
            .map(|m| p.and_then(|p| p.models.get(m)).map_or(m, String::as_str));
        // The answer's usage and model belong to the attempt that gave it.
        let answered_here = i == last && rec.provider.as_deref() == Some(a.provider.as_str());
        let mut attrs = Vec::with_capacity(20);
        gen_ai(&mut attrs, chat, p, model);
        if answered_here {
            if let Some(m) = &trace.response_model {
                attrs.push(KeyValue::new("gen_ai.response.model", m.clone()));
            }
            usage(&mut attrs, &rec.usage);
        }
        if let Some(p) = p {
            attrs.push(KeyValue::new("server.address", p.upstream.host.clone()));
            attrs.push(KeyValue::new("server.port", i64::from(p.upstream.port)));
        }
        if let Some(s) = a.status {
            attrs.push(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if let AttemptResult::Failed(c) = a.result {
            attrs.push(KeyValue::new("error.type", c.as_str()));
        }
        attrs.push(KeyValue::new("steadfast.provider", a.provider.clone()));
        attrs.push(KeyValue::new("steadfast.attempt", i as i64 + 1));
        if let Some(id) = &a.upstream_request_id {
            attrs.push(KeyValue::new("steadfast.upstream_request_id", id.clone()));
        }
        out.push(SpanData {
            span_context: context(a.span_id, false),
            parent_span_id: SpanId::from_bytes(trace.span_id.to_be_bytes()),
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: span_name(chat, model, &rec.method),
            start_time: clock.at(a.started),
            end_time: clock.at(a.started + a.waited),
            attributes: attrs,
            dropped_attributes_count: 0,
            events: attempt_events(a, clock),
            links: SpanLinks::default(),
            status: match a.result {
                // The client left: the provider is not blamed.
                AttemptResult::Failed(ErrorClass::Client) | AttemptResult::Success => Status::Unset,
                AttemptResult::Failed(c) => error_status(c),
            },
            instrumentation_scope: scope.clone(),
        });
    }
    out
}

/// GenAI span names are `{operation} {model}`; plain HTTP ones the method.
fn span_name(chat: bool, model: Option<&str>, method: &str) -> Cow<'static, str> {
    match (chat, model) {
        (true, Some(m)) => Cow::Owned(format!("chat {m}")),
        (true, None) => Cow::Borrowed("chat"),
        (false, _) => Cow::Owned(method.to_string()),
    }
}

fn gen_ai(
    attrs: &mut Vec<KeyValue>,
    chat: bool,
    provider: Option<&ProviderSettings>,
    request_model: Option<&str>,
) {
    if chat {
        attrs.push(KeyValue::new("gen_ai.operation.name", "chat"));
    }
    if let Some(p) = provider {
        // gen_ai.system is the name older backends read; newer ones
        // gen_ai.provider.name.
        attrs.push(KeyValue::new("gen_ai.system", system(p.api)));
        attrs.push(KeyValue::new("gen_ai.provider.name", system(p.api)));
    }
    if let Some(m) = request_model {
        attrs.push(KeyValue::new("gen_ai.request.model", m.to_string()));
    }
}

/// Token counts as the GenAI conventions want them: input tokens include
/// the cached ones (steadfast's own `input` excludes them, as Anthropic
/// reports it), and the cache reads and writes are told apart.
fn usage(attrs: &mut Vec<KeyValue>, u: &Usage) {
    if u.is_empty() {
        return;
    }
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let input = u
        .input
        .saturating_add(u.cache_read)
        .saturating_add(u.cache_write);
    attrs.push(KeyValue::new("gen_ai.usage.input_tokens", int(input)));
    attrs.push(KeyValue::new("gen_ai.usage.output_tokens", int(u.output)));
    attrs.push(KeyValue::new(
        "gen_ai.usage.cache_read.input_tokens",
        int(u.cache_read),
    ));
    attrs.push(KeyValue::new(
        "gen_ai.usage.cache_creation.input_tokens",
        int(u.cache_write),
    ));
}

fn error_status(c: ErrorClass) -> Status {
    Status::Error {
        description: Cow::Borrowed(c.as_str()),
    }
}

/// When the attempt's response header and first content arrived.
fn attempt_events(a: &AttemptRecord, clock: Clock) -> SpanEvents {
    let mut events = SpanEvents::default();
    let mut at = |name: &'static str, after: Option<Duration>| {
        if let Some(d) = after {
            events
                .events
                .push(Event::new(name, clock.at(a.started + d), Vec::new(), 0));
        }
    };
    at("response_header", a.ttfb);
    at("first_content", a.first_content);
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::{AffinityResult, SessionSource};
    use crate::config::{schema::FileConfig, validate, ConfigSource};
    use opentelemetry::Value;

    fn config() -> Config {
        let yaml = r#"
providers:
  - { name: p1, api: anthropic, base_url: "http://10.0.0.1:8443", models: { "claude-x": "claude-x-2025" } }
  - { name: p2, api: openai, base_url: "https://api.example.com" }
routes:
  - { name: r, paths: ["/v1/messages"], providers: [p1], translate: false }
"#;
        let f: FileConfig = serde_yaml::from_str(yaml).unwrap();
        validate(&f, ConfigSource::Builtin, &|_| None).unwrap()
    }

    fn attempt(provider: &str, result: AttemptResult, span_id: u64, at: Instant) -> AttemptRecord {
        AttemptRecord {
            started: at,
            span_id,
            status: Some(if result == AttemptResult::Success {
                200
            } else {
                503
            }),
            waited: Duration::from_millis(100),
            ttfb: Some(Duration::from_millis(40)),
            ..AttemptRecord::new(provider, result)
        }
    }

    fn get<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn a_failover_is_one_server_span_with_a_client_span_per_attempt() {
        let t0 = Instant::now();
        let mut rec = RequestRecord::new(t0);
        rec.request_id = "rid-1".into();
        rec.method = "POST".into();
        rec.path = "/v1/messages".into();
        rec.route = Some("r".into());
        rec.provider = Some("p1".into());
        rec.status = 200;
        rec.usage = Usage {
            input: 10,
            output: 5,
            cache_read: 100,
            cache_write: 3,
        };
        rec.affinity = Some(AffinityResult::Moved);
        rec.session_source = Some(SessionSource::Header);
        rec.attempts = vec![
            attempt(
                "p2",
                AttemptResult::Failed(ErrorClass::Server),
                0xa1,
                t0 + Duration::from_millis(1),
            ),
            attempt(
                "p1",
                AttemptResult::Success,
                0xa2,
                t0 + Duration::from_millis(120),
            ),
        ];
        rec.finished = Some(t0 + Duration::from_millis(300));
        let trace = TraceContext {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            parent: Some(0x00f067aa0ba902b7),
            span_id: 0x5e,
            sampled: true,
            tracestate: Some("rojo=1".into()),
            request_model: Some("claude-x".into()),
            response_model: Some("claude-x-2025-real".into()),
        };
        let clock = Clock {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            mono: t0 + Duration::from_secs(1),
        };
        let spans = build(&rec, &trace, &config(), clock, &scope());
        assert_eq!(spans.len(), 3);
        let (req, a1, a2) = (&spans[0], &spans[1], &spans[2]);

        // The request continues the client's trace.
        assert_eq!(req.span_kind, SpanKind::Server);
        assert_eq!(req.name, "chat claude-x");
        assert_eq!(
            req.parent_span_id,
            SpanId::from_bytes(0x00f067aa0ba902b7u64.to_be_bytes())
        );
        assert!(req.parent_span_is_remote);
        assert_eq!(
            format!("{}", req.span_context.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(req.span_context.trace_state().header(), "rojo=1");
        assert_eq!(req.start_time, clock.wall - Duration::from_secs(1));
        assert_eq!(req.end_time - Duration::from_millis(300), req.start_time);
        assert_eq!(req.status, Status::Unset);
        assert_eq!(
            get(req, "gen_ai.request.model"),
            Some(&Value::from("claude-x"))
        );
        assert_eq!(
            get(req, "gen_ai.response.model"),
            Some(&Value::from("claude-x-2025-real"))
        );
        assert_eq!(get(req, "gen_ai.system"), Some(&Value::from("anthropic")));
        assert_eq!(
            get(req, "gen_ai.usage.input_tokens"),
            Some(&Value::I64(113))
        );
        assert_eq!(get(req, "gen_ai.usage.output_tokens"), Some(&Value::I64(5)));
        assert_eq!(
            get(req, "gen_ai.usage.cache_read.input_tokens"),
            Some(&Value::I64(100))
        );
        assert_eq!(
            get(req, "gen_ai.usage.cache_creation.input_tokens"),
            Some(&Value::I64(3))
        );
        assert_eq!(get(req, "steadfast.attempts"), Some(&Value::I64(2)));
        assert_eq!(get(req, "steadfast.affinity"), Some(&Value::from("moved")));
        assert_eq!(get(req, "error.type"), None);

        // The failed attempt: its provider's dialect and address, its class.
        assert_eq!(a1.span_kind, SpanKind::Client);
        assert_eq!(a1.parent_span_id, req.span_context.span_id());
        assert_eq!(
            a1.span_context.span_id(),
            SpanId::from_bytes(0xa1u64.to_be_bytes())
        );
        assert_eq!(a1.span_context.trace_id(), req.span_context.trace_id());
        assert_eq!(a1.name, "chat claude-x");
        assert_eq!(get(a1, "gen_ai.system"), Some(&Value::from("openai")));
        assert_eq!(
            get(a1, "server.address"),
            Some(&Value::from("api.example.com"))
        );
        assert_eq!(get(a1, "server.port"), Some(&Value::I64(443)));
        assert_eq!(get(a1, "error.type"), Some(&Value::from("server")));
        assert_eq!(get(a1, "http.response.status_code"), Some(&Value::I64(503)));
        assert_eq!(get(a1, "gen_ai.usage.input_tokens"), None);
        assert!(matches!(a1.status, Status::Error { .. }));
        assert_eq!(a1.events.events[0].name, "response_header");

        // The answering attempt: the rewritten model, the usage.
        assert_eq!(a2.name, "chat claude-x-2025");
        assert_eq!(
            get(a2, "gen_ai.request.model"),
            Some(&Value::from("claude-x-2025"))
        );
        assert_eq!(get(a2, "server.address"), Some(&Value::from("10.0.0.1")));
        assert_eq!(get(a2, "gen_ai.usage.output_tokens"), Some(&Value::I64(5)));
        assert_eq!(get(a2, "error.type"), None);
        assert_eq!(a2.status, Status::Unset);
        assert_eq!(
            a2.end_time.duration_since(a2.start_time).unwrap(),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_local_error_on_a_new_trace_is_a_root_error_span() {
        let t0 = Instant::now();
        let mut rec = RequestRecord::new(t0);
        rec.method = "GET".into();
        rec.path = "/v1/models".into();
        rec.status = 502;
        rec.class = Some(ErrorClass::Network);
        rec.attempts = vec![attempt(
            "p1",
            AttemptResult::Failed(ErrorClass::Network),
            7,
            t0,
        )];
        let trace = TraceContext {
            trace_id: 9,
            parent: None,
            span_id: 3,
            sampled: true,
            tracestate: None,
            request_model: None,
            response_model: None,
        };
        let spans = build(&rec, &trace, &config(), Clock::now(), &scope());
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "GET");
        assert_eq!(spans[0].parent_span_id, SpanId::INVALID);
        assert!(!spans[0].parent_span_is_remote);
        assert_eq!(get(&spans[0], "gen_ai.operation.name"), None);
        assert_eq!(get(&spans[0], "error.type"), Some(&Value::from("network")));
        assert_eq!(
            spans[0].status,
            Status::Error {
                description: "network".into()
            }
        );
        // An attempt that was not traced (no span id) has no span.
        rec.attempts[0].span_id = 0;
        assert_eq!(
            build(&rec, &trace, &config(), Clock::now(), &scope()).len(),
            1
        );
    }
}
