//! OpenTelemetry traces (`telemetry.otlp_endpoint`) against the real binary
//! and a real OTLP/gRPC receiver: the collector protocol's generated server
//! on tonic, inside the test.

mod common;

use common::http::{self, Request};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Everything the receiver was sent, as sent.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[async_trait::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Received {
    async fn start() -> (SocketAddr, Received) {
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let r = Received::default();
        let svc = TraceServiceServer::new(r.clone());
        tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(svc, incoming));
        (addr, r)
    }

    fn spans(&self) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| ss.spans.clone())
            .collect()
    }

    /// The spans of one trace, once `n` of them have arrived.
    async fn trace(&self, trace_id: &str, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| hex(&s.trace_id) == trace_id)
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} spans of trace {trace_id} arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    match attr(s, key) {
        Some(Any::StringValue(v)) => Some(v),
        _ => None,
    }
}

fn int_attr(s: &Span, key: &str) -> Option<i64> {
    match attr(s, key) {
        Some(Any::IntValue(v)) => Some(*v),
        _ => None,
    }
}

fn telemetry(endpoint: SocketAddr, extra: &str) -> String {
    format!("telemetry: {{ otlp_endpoint: \"http://{endpoint}\"{extra} }}\n")
}

fn message(prompt: &str) -> Vec<u8> {
    serde_json::json!({
        "model": "claude-x",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": prompt}],
    })
    .to_string()
    .into_bytes()
}

/// A counter from /metrics (0 when absent).
async fn counter(px: &Proxy, name: &str, label: Option<(&str, &str)>) -> f64 {
    let r = http::send(px.admin, Request::get("/metrics")).await;
    let lines: Vec<_> = r.text().lines().map(|l| Ok(l.to_string())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("metrics parse");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn wait_counter(px: &Proxy, name: &str, label: Option<(&str, &str)>, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = counter(px, name, label).await;
        if v >= at_least {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {label:?} stayed at {v}; log:\n{}",
            px.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_request_is_a_server_span_with_one_client_span_per_attempt() {
    let (otlp, received) = Received::start().await;
    let m1 = mock(MockApi::Anthropic, "p1", status(500)).await;
    let m2 = anthropic("p2").await;
    let body = format!(
        "{}providers:\n{}{}routes:\n  - {{ name: r, paths: [\"/v1/messages\"], providers: [p1, p2] }}\n",
        telemetry(otlp, ""),
        provider("p1", "anthropic", m1.addr(), ""),
        provider(
            "p2",
            "anthropic",
            m2.addr(),
            "    models: { \"claude-x\": \"claude-x-2025\" }\n"
        ),
    );
    let px = Proxy::builder("trace-failover", &body).start().await;
    px.wait_event("tracing_started", |v| v["sample_ratio"] == 1.0)
        .await;

    let marker = "PROMPT-MARKER-5f1c do not export me";
    let r = px
        .send(
            Request::post("/v1/messages", message(marker))
                .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
                .header("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));

    // Each provider was told this trace, with its own attempt as parent,
    // and the client's tracestate; never the client's own span.
    let upstream = |m: &MockServer| {
        let rec = m.recorded();
        let h = &rec.last().expect("a request").headers;
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        (get("traceparent").expect("traceparent"), get("tracestate"))
    };
    let (tp1, ts1) = upstream(&m1);
    let (tp2, ts2) = upstream(&m2);
    for tp in [&tp1, &tp2] {
        let p = steadfast::otel::parse_traceparent(tp.as_bytes()).expect("valid traceparent");
        assert_eq!(format!("{:032x}", p.trace_id), CLIENT_TRACE);
        assert_ne!(format!("{:016x}", p.parent), CLIENT_SPAN);
        assert!(p.sampled());
    }
    assert_ne!(tp1, tp2, "each attempt is its own span");
    assert_eq!(
        ts1.as_deref(),
        Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    );
    assert_eq!(ts1, ts2);

    let spans = received.trace(CLIENT_TRACE, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("the request's span");
    let clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(clients.len(), 2);

    // The request span continues the client's trace.
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        server.trace_state,
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    );
    assert_eq!(server.name, "chat claude-x");
    assert_eq!(str_attr(server, "gen_ai.operation.name"), Some("chat"));
    assert_eq!(str_attr(server, "gen_ai.system"), Some("anthropic"));
    assert_eq!(str_attr(server, "gen_ai.request.model"), Some("claude-x"));
    assert_eq!(int_attr(server, "http.response.status_code"), Some(200));
    assert_eq!(int_attr(server, "steadfast.attempts"), Some(2));
    assert_eq!(str_attr(server, "steadfast.route"), Some("r"));
    assert_eq!(str_attr(server, "steadfast.provider"), Some("p2"));
    assert!(int_attr(server, "gen_ai.usage.input_tokens").unwrap_or(0) > 0);
    assert!(int_attr(server, "gen_ai.usage.output_tokens").unwrap_or(0) > 0);
    assert!(str_attr(server, "error.type").is_none());
    assert_ne!(
        server.status.as_ref().map_or(0, |s| s.code),
        StatusCode::Error as i32
    );

    // One client span per attempt, each the parent the provider was told.
    let by_provider = |name: &str| {
        *clients
            .iter()
            .find(|s| str_attr(s, "steadfast.provider") == Some(name))
            .unwrap_or_else(|| panic!("no span for {name}"))
    };
    let (a1, a2) = (by_provider("p1"), by_provider("p2"));
    for (span, tp) in [(a1, &tp1), (a2, &tp2)] {
        assert_eq!(span.parent_span_id, server.span_id);
        assert_eq!(format!("00-{CLIENT_TRACE}-{}-01", hex(&span.span_id)), *tp);
        assert!(span.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(span.end_time_unix_nano <= server.end_time_unix_nano);
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
        assert_eq!(str_attr(span, "server.address"), Some("127.0.0.1"));
    }
    assert!(a1.end_time_unix_nano <= a2.start_time_unix_nano);
    assert_eq!(
        int_attr(a1, "server.port"),
        Some(i64::from(m1.addr().port()))
    );
    assert_eq!(str_attr(a1, "error.type"), Some("server"));
    assert_eq!(int_attr(a1, "http.response.status_code"), Some(500));
    assert_eq!(
        a1.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert!(int_attr(a1, "gen_ai.usage.output_tokens").is_none());
    assert_eq!(
        int_attr(a2, "server.port"),
        Some(i64::from(m2.addr().port()))
    );
    assert_eq!(a2.name, "chat claude-x-2025");
    assert_eq!(str_attr(a2, "gen_ai.request.model"), Some("claude-x-2025"));
    assert!(str_attr(a2, "error.type").is_none());
    assert_eq!(
        int_attr(a2, "gen_ai.usage.output_tokens"),
        int_attr(server, "gen_ai.usage.output_tokens")
    );
    assert!(a2.events.iter().any(|e| e.name == "response_header"));

    // The access log line names the trace.
    let line = px.wait_event("request", |v| v["status"] == 200).await;
    assert_eq!(line["trace_id"], CLIENT_TRACE);

    // The process is named, and no prompt text went anywhere.
    let all = format!("{:?}", received.0.lock().unwrap());
    assert!(all.contains("\"steadfast\""), "service.name");
    assert!(
        !all.contains("PROMPT-MARKER"),
        "prompt content was exported"
    );
    // Counted once the receiver has answered.
    wait_counter(&px, "steadfast_trace_spans_exported_total", None, 3.0).await;
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace_and_is_not_passed_on() {
    let (otlp, received) = Received::start().await;
    let m = anthropic("p1").await;
    let body = format!(
        "{}{}",
        telemetry(otlp, ""),
        one_route("/v1/messages", "anthropic", m.addr())
    );
    let px = Proxy::builder("trace-malformed", &body).start().await;
    let bad = format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase());
    let r = px
        .send(
            Request::post("/v1/messages", message("hi"))
                .header("traceparent", bad.clone())
                .header("tracestate", "rojo=1"),
        )
        .await;
    assert_eq!(r.status, 200);
    let h = m.recorded().pop().unwrap();
    let sent = h.header("traceparent").expect("a traceparent of ours");
    assert_ne!(sent, bad);
    let p = steadfast::otel::parse_traceparent(sent.as_bytes()).expect("valid");
    assert_ne!(format!("{:032x}", p.trace_id), CLIENT_TRACE.to_lowercase());
    // The tracestate of a trace that was not continued is not passed on.
    assert_eq!(h.header("tracestate"), None);
    let spans = received.trace(&format!("{:032x}", p.trace_id), 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert_eq!(server.trace_state, "");
}

#[tokio::test]
async fn unsampled_traces_are_propagated_but_not_exported() {
    let (otlp, received) = Received::start().await;
    let m = anthropic("p1").await;
    let body = format!(
        "{}{}",
        telemetry(otlp, ", sample_ratio: 0.0"),
        one_route("/v1/messages", "anthropic", m.addr())
    );
    let px = Proxy::builder("trace-unsampled", &body).start().await;
    // A new trace at ratio 0, and a client's trace it did not sample.
    let r = px.send(Request::post("/v1/messages", message("a"))).await;
    assert_eq!(r.status, 200);
    let new_trace = m
        .recorded()
        .pop()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_string();
    assert!(new_trace.ends_with("-00"), "{new_trace}");
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    let r = px
        .send(Request::post("/v1/messages", message("b")).header("traceparent", unsampled))
        .await;
    assert_eq!(r.status, 200);
    let sent = m
        .recorded()
        .pop()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_string();
    assert!(sent.starts_with("00-11111111111111111111111111111111-"));
    assert!(sent.ends_with("-00"));
    // A client's sampled trace is recorded whatever the ratio.
    let sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = px
        .send(Request::post("/v1/messages", message("c")).header("traceparent", sampled))
        .await;
    assert_eq!(r.status, 200);
    received.trace(CLIENT_TRACE, 2).await;
    // Export is in order: had the earlier ones been exported, they would
    // have arrived by now.
    let traces: std::collections::BTreeSet<String> =
        received.spans().iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(traces.len(), 1, "{traces:?}");
}

#[tokio::test]
async fn without_telemetry_trace_headers_pass_through_untouched() {
    let m = anthropic("p1").await;
    let px = Proxy::builder(
        "trace-off",
        &one_route("/v1/messages", "anthropic", m.addr()),
    )
    .start()
    .await;
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = px
        .send(
            Request::post("/v1/messages", message("hi"))
                .header("traceparent", tp.clone())
                .header("tracestate", "rojo=1"),
        )
        .await;
    assert_eq!(r.status, 200);
    let h = m.recorded().pop().unwrap();
    assert_eq!(h.header("traceparent"), Some(tp.as_str()));
    assert_eq!(h.header("tracestate"), Some("rojo=1"));
    // No request without one grows one either.
    let r = px.send(Request::post("/v1/messages", message("x"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(m.recorded().pop().unwrap().header("traceparent"), None);
    assert!(px.events("tracing_started").is_empty());
    let line = px.wait_event("request", |v| v["status"] == 200).await;
    assert!(line.get("trace_id").is_none(), "{line}");
}

#[tokio::test]
async fn a_stalled_receiver_costs_dropped_spans_never_requests() {
    // Accepts connections and never answers: every export hangs.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    let m = anthropic("p1").await;
    let body = format!(
        "{}{}",
        telemetry(addr, ", max_queued_spans: 4, export_timeout_ms: 60000"),
        one_route("/v1/messages", "anthropic", m.addr())
    );
    let px = Proxy::builder("trace-stalled", &body).start().await;
    for _ in 0..10 {
        let started = Instant::now();
        let r = px.send(Request::post("/v1/messages", message("hi"))).await;
        assert_eq!(r.status, 200);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // Two spans per request; the first two requests fill the queue.
    let dropped = wait_counter(
        &px,
        "steadfast_trace_spans_dropped_total",
        Some(("reason", "queue_full")),
        16.0,
    )
    .await;
    assert_eq!(dropped, 16.0);
    held.abort();
}

#[tokio::test]
async fn an_unreachable_receiver_is_counted_and_logged() {
    let nobody = free_addr();
    let m = anthropic("p1").await;
    let body = format!(
        "{}{}",
        telemetry(nobody, ""),
        one_route("/v1/messages", "anthropic", m.addr())
    );
    let px = Proxy::builder("trace-unreachable", &body).start().await;
    for _ in 0..3 {
        assert_eq!(
            px.send(Request::post("/v1/messages", message("hi")))
                .await
                .status,
            200
        );
    }
    wait_counter(
        &px,
        "steadfast_trace_spans_dropped_total",
        Some(("reason", "export_failed")),
        2.0,
    )
    .await;
    px.wait_event("trace_export_failed", |v| v["spans"].as_u64() >= Some(2))
        .await;
}

#[tokio::test]
async fn the_last_spans_are_exported_before_a_fast_exit() {
    let (otlp, received) = Received::start().await;
    let m = anthropic("p1").await;
    let body = format!(
        "{}{}",
        telemetry(otlp, ""),
        one_route("/v1/messages", "anthropic", m.addr())
    );
    let mut px = Proxy::builder("trace-exit", &body).start().await;
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = px
        .send(Request::post("/v1/messages", message("hi")).header("traceparent", tp))
        .await;
    assert_eq!(r.status, 200);
    // Its spans are queued before its access log line is written.
    px.wait_event("request", |v| v["status"] == 200).await;
    // At once: the spans wait for their batch, and even a fast exit must
    // not lose them.
    px.signal("INT");
    let exit = px.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    assert_eq!(received.trace(CLIENT_TRACE, 2).await.len(), 2);
}

#[tokio::test]
async fn requests_finishing_during_a_drain_are_traced() {
    let (otlp, received) = Received::start().await;
    let slow = Behavior {
        latency_ms: 1500,
        ..Behavior::default()
    };
    let m = mock(MockApi::Anthropic, "p1", slow).await;
    let body = format!(
        "{}{}",
        telemetry(otlp, ""),
        one_route("/v1/messages", "anthropic", m.addr())
    );
    let mut px = Proxy::builder("trace-drain", &body).start().await;
    let addr = px.proxy;
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let inflight = tokio::spawn(async move {
        http::send(
            addr,
            Request::post("/v1/messages", message("hi")).header("traceparent", tp),
        )
        .await
    });
    while m.requests() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SIGTERM while the request waits on its provider: it finishes during
    // the drain, after every service was told to stop.
    px.signal("TERM");
    assert_eq!(inflight.await.unwrap().status, 200);
    let exit = px.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    assert_eq!(received.trace(CLIENT_TRACE, 2).await.len(), 2);
}
