//! The operations surface against the real binary: exact
//! counters after a scripted sequence, `/stats` consistency, `/health`
//! transitions, access-log modes, and secrets that never leak into any
//! output.

mod common;

use common::http::{anthropic_body, Conn, Request, Response};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PROVIDER_KEY: &str = "sk-ant-canary-provider-7c41e9d2b8a3f0";
const CLIENT_TOKEN: &str = "sf-canary-client-token-52f0a6c1d9e7";
const MODEL: &str = "claude-obs-test";

// ---------------------------------------------------------------- helpers

async fn admin(px: &Proxy, path: &str) -> Response {
    http_get(px.admin, path).await
}

async fn http_get(addr: SocketAddr, path: &str) -> Response {
    common::http::send(addr, Request::get(path)).await
}

async fn stats(px: &Proxy) -> Value {
    let r = admin(px, "/stats").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// Start the proxy and wait until its proxy listener accepts too: `/ready`
/// can answer a moment before the proxy service is bound.
async fn start(b: ProxyBuilder) -> Proxy {
    let px = b.start().await;
    poll("the proxy listener", || async {
        tokio::net::TcpStream::connect(px.proxy)
            .await
            .ok()
            .map(drop)
    })
    .await;
    px
}

/// Poll `check` until it returns `Some`, for at most 20 s.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until `/stats` has counted `n` finished client requests (their log
/// lines are written before they are counted).
async fn wait_requests(px: &Proxy, n: u64) {
    poll(&format!("{n} finished requests"), || async {
        (stats(px).await["requests"]["total"].as_u64() == Some(n)).then_some(())
    })
    .await;
}

/// A `/metrics` scrape parsed by a real Prometheus text-format parser.
struct Scrape {
    text: String,
    samples: Vec<prometheus_parse::Sample>,
}

impl Scrape {
    async fn get(px: &Proxy) -> Scrape {
        let r = admin(px, "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
        let text = r.text();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
        Scrape {
            text,
            samples: parsed.samples,
        }
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The value of the one counter or gauge with these labels (0 when the
    /// series does not exist).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .matching(name, labels)
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{name} is not a counter or gauge: {other:?}"),
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} series",
            found.len()
        );
        found.first().copied().unwrap_or(0.0)
    }

    /// Sum over every series of `name` that carries these labels.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                _ => 0.0,
            })
            .sum()
    }

    /// Observation count of a histogram series (its +Inf bucket).
    fn hist_count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(b) => b
                    .iter()
                    .find(|c| c.less_than.is_infinite())
                    .map_or(0.0, |c| c.count),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }

    /// Every metric family name exposed, with the `_bucket`/`_sum`/`_count`
    /// series names of histograms.
    fn names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for s in &self.samples {
            out.insert(s.metric.clone());
            if matches!(s.value, prometheus_parse::Value::Histogram(_)) {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{}{suffix}", s.metric));
                }
            }
        }
        out
    }
}

fn msg(stream: bool) -> Request<'static> {
    Request::post("/v1/messages", anthropic_body(MODEL, stream))
        .header("authorization", format!("Bearer {CLIENT_TOKEN}"))
}

fn tokens(input: u64, output: u64) -> Behavior {
    Behavior {
        input_tokens: input,
        output_tokens: output,
        ..Behavior::default()
    }
}

/// Two anthropic providers with keys from the environment, client auth,
/// one global slot, and a breaker that never opens during the sequence.
fn scripted_config(p1: SocketAddr, p2: SocketAddr) -> String {
    format!(
        "limits:\n  max_inflight: 1\n  queue_timeout_ms: 300\n\
         health:\n  eject_after_failures: 10\n\
         client_auth:\n  tokens_env: OBS_CLIENT_TOKENS\n\
         providers:\n{}{}\
         routes:\n  - name: messages\n    paths: [\"/v1/messages\"]\n    providers: [p1, p2]\n",
        provider("p1", "anthropic", p1, "    api_key_env: OBS_P1_KEY\n"),
        provider("p2", "anthropic", p2, "    api_key_env: OBS_P2_KEY\n"),
    )
}

/// What the scripted sequence produced.
struct Scripted {
    px: Proxy,
    m1: MockServer,
    _m2: MockServer,
    responses: Vec<Response>,
}

/// success, failover, 400, limiter rejection, stream interruption, an SSE
/// success, plus a request without a route and one with a wrong token:
/// 9 client requests, 7 upstream attempts.
async fn run_scripted(name: &str) -> Scripted {
    let m1 = mock(MockApi::Anthropic, "p1", tokens(11, 7)).await;
    let m2 = mock(MockApi::Anthropic, "p2", tokens(5, 2)).await;
    let px = start(
        Proxy::builder(name, &scripted_config(m1.addr(), m2.addr()))
            .env("OBS_P1_KEY", PROVIDER_KEY)
            .env("OBS_P2_KEY", PROVIDER_KEY)
            .env(
                "OBS_CLIENT_TOKENS",
                &format!("other-token-1234,{CLIENT_TOKEN}"),
            ),
    )
    .await;
    let mut responses = Vec::new();

    // No route: counted under route="none".
    let r = px
        .send(
            Request::post("/v2/nowhere", anthropic_body(MODEL, false))
                .header("authorization", format!("Bearer {CLIENT_TOKEN}")),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    responses.push(r);

    // Wrong client token: the client's error, no attempt.
    let r = px
        .send(
            Request::post("/v1/messages", anthropic_body(MODEL, false))
                .header("authorization", "Bearer wrong-token-000"),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    responses.push(r);

    // 1. Success (JSON usage).
    let r = px.send(msg(false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("p1"));
    responses.push(r);

    // 2. Failover: p1 503 -> p2.
    m1.set_behavior(status(503));
    let r = px.send(msg(false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert_eq!(r.header("x-steadfast-attempts"), Some("2"));
    responses.push(r);

    // 3. 400: returned as is, no failover.
    m1.set_behavior(status(400));
    let r = px.send(msg(false)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
    responses.push(r);

    // 4. Limiter rejection: a stalled stream holds the only slot.
    m1.set_behavior(Behavior {
        stall_mid_stream_after: Some(1),
        ..tokens(0, 0)
    });
    let mut held = Conn::connect(px.proxy).await;
    held.write_request(&msg(true)).await;
    let (st, _) = held.read_head().await.expect("held stream head");
    assert_eq!(st, 200);
    held.next_chunk()
        .await
        .expect("first event of the held stream");
    let r = px.send(msg(false)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-steadfast-error-class"), Some("concurrency"));
    responses.push(r);
    drop(held);
    // The held request ends as client_closed; wait for it so the next
    // request finds the slot free.
    wait_requests(&px, 7).await;

    // 5. Stream interruption after commit.
    m1.set_behavior(Behavior {
        cut_mid_stream_after: Some(2),
        ..tokens(0, 0)
    });
    let r = px.send(msg(true)).await;
    assert_eq!(r.status, 200);
    let last = r.events().last().cloned().expect("an event");
    assert_eq!(last.0.as_deref(), Some("error"), "{}", r.text());
    responses.push(r);

    // 6. SSE success (usage from message_start / message_delta).
    m1.set_behavior(Behavior {
        events: 3,
        ..tokens(19, 23)
    });
    let r = px.send(msg(true)).await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    responses.push(r);

    wait_requests(&px, 9).await;
    Scripted {
        px,
        m1,
        _m2: m2,
        responses,
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [PROVIDER_KEY, CLIENT_TOKEN] {
        assert!(!text.contains(secret), "{what} contains a secret value");
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn metrics_count_the_scripted_sequence_exactly() {
    let s = run_scripted("obs-metrics").await;
    let m = Scrape::get(&s.px).await;
    let req = |route: &str, outcome: &str| {
        m.value(
            "steadfast_requests_total",
            &[("route", route), ("outcome", outcome)],
        )
    };
    assert_eq!(req("none", "request_error"), 1.0, "{}", m.text);
    assert_eq!(req("messages", "success"), 3.0, "{}", m.text);
    assert_eq!(req("messages", "request_error"), 2.0, "{}", m.text);
    assert_eq!(req("messages", "upstream_error"), 1.0, "{}", m.text);
    assert_eq!(req("messages", "rejected"), 1.0, "{}", m.text);
    assert_eq!(req("messages", "client_closed"), 1.0, "{}", m.text);
    // A failover is one request: 9 requests in all, not 10.
    assert_eq!(m.sum("steadfast_requests_total", &[]), 9.0);

    let att = |p: &str, class: &str| {
        m.value(
            "steadfast_upstream_attempts_total",
            &[("provider", p), ("class", class)],
        )
    };
    assert_eq!(att("p1", "success"), 2.0, "{}", m.text);
    assert_eq!(att("p1", "server"), 1.0);
    assert_eq!(att("p1", "request"), 1.0);
    assert_eq!(att("p1", "client"), 1.0);
    assert_eq!(att("p1", "network"), 1.0);
    assert_eq!(att("p2", "success"), 1.0);
    assert_eq!(m.sum("steadfast_upstream_attempts_total", &[]), 7.0);

    assert_eq!(
        m.value(
            "steadfast_failovers_total",
            &[
                ("route", "messages"),
                ("from_provider", "p1"),
                ("class", "server")
            ]
        ),
        1.0
    );
    assert_eq!(m.sum("steadfast_failovers_total", &[]), 1.0);
    assert_eq!(
        m.value("steadfast_limiter_rejections_total", &[("scope", "global")]),
        1.0
    );
    assert_eq!(
        m.value(
            "steadfast_limiter_rejections_total",
            &[("scope", "provider")]
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "steadfast_stream_interruptions_total",
            &[("provider", "p1"), ("class", "network")]
        ),
        1.0
    );
    assert_eq!(m.sum("steadfast_stream_interruptions_total", &[]), 1.0);
    assert_eq!(
        m.value("steadfast_provider_ejections_total", &[("provider", "p1")]),
        0.0
    );
    assert_eq!(
        m.value("steadfast_provider_ejections_total", &[("provider", "p2")]),
        0.0
    );
    assert_eq!(m.value("steadfast_inflight_requests", &[]), 0.0);
    assert_eq!(
        m.value("steadfast_config_reloads_total", &[("result", "success")]),
        0.0
    );
    assert_eq!(
        m.value("steadfast_config_reloads_total", &[("result", "failure")]),
        0.0
    );
    assert_eq!(
        m.value(
            "steadfast_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for p in ["p1", "p2"] {
        assert_eq!(
            m.value(
                "steadfast_provider_state",
                &[("provider", p), ("state", "healthy")]
            ),
            1.0
        );
        assert_eq!(
            m.sum("steadfast_provider_state", &[("provider", p)]),
            1.0,
            "exactly one state is 1"
        );
        assert_eq!(
            m.matching("steadfast_provider_state", &[("provider", p)])
                .count(),
            5,
            "all five states"
        );
    }
    assert_eq!(
        m.value(
            "steadfast_route_available_providers",
            &[("route", "messages")]
        ),
        2.0
    );

    // Histograms: one observation per client request, one TTFB per attempt
    // that got a response header.
    assert_eq!(
        m.hist_count(
            "steadfast_request_duration_seconds",
            &[("route", "messages")]
        ),
        8.0
    );
    assert_eq!(
        m.hist_count("steadfast_request_duration_seconds", &[("route", "none")]),
        1.0
    );
    assert_eq!(m.hist_count("steadfast_overhead_seconds", &[]), 9.0);
    assert_eq!(
        m.hist_count(
            "steadfast_upstream_time_to_first_byte_seconds",
            &[("provider", "p1")]
        ),
        6.0
    );
    assert_eq!(
        m.hist_count(
            "steadfast_upstream_time_to_first_byte_seconds",
            &[("provider", "p2")]
        ),
        1.0
    );

    // Tokens from a JSON body (p1 step 1, p2) and from an SSE stream (p1).
    let tok =
        |p: &str, kind: &str| m.sum("steadfast_tokens_total", &[("provider", p), ("kind", kind)]);
    // The broken stream and the held stream whose client left count what
    // their message_start reported (the mock sends output_tokens: 1 there,
    // as Anthropic does): usage already seen is always kept.
    assert_eq!(tok("p1", "input"), 11.0 + 0.0 + 19.0, "{}", m.text);
    assert_eq!(tok("p1", "output"), 7.0 + 1.0 + 1.0 + 23.0, "{}", m.text);
    assert_eq!(tok("p2", "input"), 5.0);
    assert_eq!(tok("p2", "output"), 2.0);
    let models: BTreeSet<&str> = m
        .matching("steadfast_tokens_total", &[])
        .filter_map(|s| s.labels.get("model"))
        .collect();
    assert_eq!(models, BTreeSet::from([MODEL]), "the model the mock echoed");

    // Process metrics come from the process collector.
    assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(m.names().contains("process_cpu_seconds_total"));
    assert!(m.names().contains("process_open_fds"));
}

#[tokio::test]
async fn stats_agree_with_the_scripted_sequence() {
    let s = run_scripted("obs-stats").await;
    let st = stats(&s.px).await;
    let req = &st["requests"];
    assert_eq!(req["total"], 9, "{st:#}");
    assert_eq!(req["success"], 3);
    assert_eq!(req["errors"], 6);
    assert_eq!(req["by_outcome"]["request_error"], 3);
    assert_eq!(req["by_outcome"]["upstream_error"], 1);
    assert_eq!(req["by_outcome"]["rejected"], 1);
    assert_eq!(req["by_outcome"]["client_closed"], 1);

    let by_class = &st["errors_by_class"];
    assert_eq!(by_class["request"], 2, "{st:#}");
    assert_eq!(by_class["auth"], 1);
    assert_eq!(by_class["concurrency"], 1);
    assert_eq!(by_class["client"], 1);
    assert_eq!(by_class["network"], 1);
    assert_eq!(
        by_class["server"], 0,
        "the failed-over 503 is not a request error"
    );

    assert_eq!(st["attempts"]["total"], 7);
    assert_eq!(st["attempts"]["failovers"], 1);
    assert_eq!(st["attempts"]["by_class"]["success"], 3);
    assert_eq!(st["errors_by_provider"]["p1"]["total"], 3, "{st:#}");
    assert_eq!(st["errors_by_provider"]["p1"]["by_class"]["server"], 1);
    assert_eq!(st["errors_by_provider"]["p2"]["total"], 0);

    let lat = &st["latency_ms"];
    assert_eq!(lat["samples"], 9);
    let (p50, p95, p99) = (
        lat["p50"].as_f64().unwrap(),
        lat["p95"].as_f64().unwrap(),
        lat["p99"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{lat}");
    assert!(p99 <= lat["max"].as_f64().unwrap());

    assert_eq!(st["limiter_rejections"]["global"], 1);
    assert_eq!(st["stream_interruptions"], 1);
    assert_eq!(st["tokens"]["input"], 11 + 5 + 19);
    assert_eq!(st["tokens"]["output"], 7 + 2 + 1 + 1 + 23);
    assert_eq!(st["inflight"]["current"], 0);
    assert_eq!(
        st["inflight"]["peak"], 1,
        "max_inflight is 1 and one stream was held"
    );
    let rss = st["memory"]["rss_bytes"].as_u64().unwrap();
    assert!(rss > 0 && st["memory"]["peak_rss_bytes"].as_u64().unwrap() >= rss);

    let providers = st["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 2);
    assert_eq!(providers[0]["name"], "p1");
    assert_eq!(providers[0]["state"], "healthy");
    assert_eq!(providers[0]["attempts"], 6);
    assert_eq!(providers[0]["successes"], 2);
    assert_eq!(providers[1]["attempts"], 1);
}

#[tokio::test]
async fn secrets_never_appear_in_any_output() {
    let s = run_scripted("obs-canary").await;
    // The key was really in play: p1 received it, and never the client's token.
    let recorded = format!("{:?}", s.m1.recorded());
    assert!(
        recorded.contains(PROVIDER_KEY),
        "the provider key was not sent upstream"
    );
    assert!(
        !recorded.contains(CLIENT_TOKEN),
        "the client token was forwarded"
    );
    for (i, r) in s.responses.iter().enumerate() {
        assert_no_secret(&format!("response {i} body"), &r.text());
        assert_no_secret(
            &format!("response {i} headers"),
            &format!("{:?}", r.headers),
        );
    }
    for path in ["/metrics", "/stats", "/health", "/live", "/ready", "/nope"] {
        let r = admin(&s.px, path).await;
        assert_no_secret(path, &r.text());
        assert_no_secret(path, &format!("{:?}", r.headers));
    }
    assert_no_secret("the logs", &s.px.logs());
}

#[tokio::test]
async fn query_string_keys_never_reach_the_logs() {
    const CANARY: &str = "CANARYqskey0123456789";
    let m1 = mock(MockApi::Anthropic, "p1", status(503)).await;
    let m2 = anthropic("p2").await;
    let body = format!(
        "providers:\n{}{}routes:\n  - name: messages\n    paths: [\"/v1/messages\"]\n    providers: [p1, p2]\n",
        provider("p1", "anthropic", m1.addr(), ""),
        provider("p2", "anthropic", m2.addr(), ""),
    );
    // Debug is the most verbose level an operator would run in production.
    let px = start(Proxy::builder("obs-query", &body).env("RUST_LOG", "debug")).await;
    let path = format!("/v1/messages?key={CANARY}&api_key={CANARY}");
    // A failover (failover + request events) ...
    let r = px
        .send(Request::post(&path, anthropic_body(MODEL, false)))
        .await;
    assert_eq!(r.status, 200);
    // ... a request without a route ...
    let nowhere = format!("/nowhere?key={CANARY}");
    let r = px
        .send(Request::post(&nowhere, anthropic_body(MODEL, false)))
        .await;
    assert_eq!(r.status, 404);
    assert!(!r.text().contains(CANARY));
    // ... and a client that leaves mid-request (Pingora's error path).
    m2.set_behavior(Behavior {
        stall_mid_stream_after: Some(1),
        ..Behavior::default()
    });
    m1.set_behavior(Behavior::default());
    {
        let mut c = Conn::connect(px.proxy).await;
        c.write_request(&Request::post(&path, anthropic_body(MODEL, true)))
            .await;
        let _ = c.read_head().await;
    }
    wait_requests(&px, 3).await;
    let logs = px.logs();
    assert!(logs.contains("\"path\":\"/v1/messages\""), "{logs}");
    assert!(
        !logs.contains(CANARY),
        "a query string reached the logs:\n{logs}"
    );
    assert_eq!(px.events("request").len(), 3);
}

#[tokio::test]
async fn access_log_modes() {
    let m1 = anthropic("p1").await;
    m1.set_behavior(Behavior::default());
    let cfg = |mode: &str| {
        format!(
            "logging:\n  access_log: {mode}\n  slow_ms: 600000\nproviders:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
            provider("p1", "anthropic", m1.addr(), "")
        )
    };
    for (mode, expected) in [
        ("all", vec![200, 404]),
        ("errors_and_slow", vec![404]),
        ("off", vec![]),
    ] {
        let px = start(Proxy::builder(&format!("obs-log-{mode}"), &cfg(mode))).await;
        assert_eq!(
            px.send(Request::post("/v1/messages", anthropic_body(MODEL, false)))
                .await
                .status,
            200
        );
        assert_eq!(
            px.send(Request::post("/v9/none", anthropic_body(MODEL, false)))
                .await
                .status,
            404
        );
        wait_requests(&px, 2).await;
        // The client has its answer before the access log line is written,
        // so two requests may log in either order.
        let mut statuses: Vec<u64> = px
            .events("request")
            .iter()
            .map(|e| e["status"].as_u64().unwrap())
            .collect();
        statuses.sort_unstable();
        let expected: Vec<u64> = expected.into_iter().collect();
        assert_eq!(statuses, expected, "access_log: {mode}");
    }
}

async fn health(px: &Proxy) -> (u16, Value) {
    let r = admin(px, "/health").await;
    (r.status, r.json())
}

/// Wait for `/health` to say `want`, sending a request before each look
/// when `drive` is set (an ejected provider recovers through a probe).
async fn wait_health(px: &Proxy, want: &str, drive: bool) -> (u16, Value) {
    poll(&format!("/health {want}"), || async {
        if drive {
            px.send(Request::post("/v1/messages", anthropic_body(MODEL, false)))
                .await;
        }
        let (code, body) = health(px).await;
        (body["status"] == want).then_some((code, body))
    })
    .await
}

#[tokio::test]
async fn health_goes_degraded_unhealthy_and_back_as_providers_die_and_return() {
    let m1 = anthropic("p1").await;
    let m2 = anthropic("p2").await;
    let body = format!(
        "health:\n  eject_after_failures: 1\n  base_ejection_ms: 100\n  max_ejection_ms: 200\n\
         providers:\n{}{}routes:\n  - name: messages\n    paths: [\"/v1/messages\"]\n    strategy: round_robin\n    providers: [p1, p2]\n",
        provider("p1", "anthropic", m1.addr(), ""),
        provider("p2", "anthropic", m2.addr(), ""),
    );
    let px = start(Proxy::builder("obs-health", &body)).await;
    let (code, h) = health(&px).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("healthy")), "{h}");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["providers"].as_array().unwrap().len(), 2);
    assert_eq!(h["max_inflight"], 100);
    assert!(h["memory_rss_bytes"].as_u64().unwrap() > 0);

    // p1 dies: the next request that reaches it ejects it.
    let addr1 = m1.addr();
    m1.stop().await;
    let (code, h) = wait_health(&px, "degraded", true).await;
    assert_eq!(code, 200, "degraded still serves: {h}");
    let p1 = &h["providers"][0];
    assert_eq!(p1["name"], "p1");
    assert_ne!(p1["state"], "healthy", "{h}");
    assert_eq!(p1["last_error_class"], "network");

    // p2 dies too: no provider of the route is available.
    let addr2 = m2.addr();
    m2.stop().await;
    let (code, h) = wait_health(&px, "unhealthy", true).await;
    assert_eq!(code, 503, "{h}");
    let m = Scrape::get(&px).await;
    assert_eq!(
        m.value(
            "steadfast_route_available_providers",
            &[("route", "messages")]
        ),
        0.0
    );
    assert!(m.value("steadfast_provider_ejections_total", &[("provider", "p2")]) >= 1.0);

    // Both come back on the same addresses: probes on the backoff schedule
    // recover them.
    let _m1 = MockServer::start(addr1, mock_config(MockApi::Anthropic, "p1"))
        .await
        .expect("restart p1");
    let _m2 = MockServer::start(addr2, mock_config(MockApi::Anthropic, "p2"))
        .await
        .expect("restart p2");
    let (code, h) = wait_health(&px, "healthy", true).await;
    assert_eq!(code, 200, "{h}");
    let m = Scrape::get(&px).await;
    assert_eq!(
        m.value(
            "steadfast_provider_state",
            &[("provider", "p1"), ("state", "healthy")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "steadfast_provider_state",
            &[("provider", "p2"), ("state", "healthy")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "steadfast_route_available_providers",
            &[("route", "messages")]
        ),
        2.0
    );
    // A provider is routable (healthy) once its ejection ends; its
    // recovered event follows when the trial or probe answers.
    poll("two provider_recovered events", || async {
        (px.events("provider_recovered").len() >= 2).then_some(())
    })
    .await;
}

fn mock_config(api: MockApi, name: &str) -> MockConfig {
    MockConfig {
        api,
        name: name.to_string(),
        behavior: Behavior::default(),
    }
}

/// Metric names a PromQL expression refers to (steadfast's and the process
/// collector's; `up` and functions are Prometheus' own).
fn referenced_metrics(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("steadfast_") || word.starts_with("process_") {
                out.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    out
}

fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

fn monitoring_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/monitoring")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn dashboard_and_alerts_use_only_exposed_metric_names() {
    let mut exprs = Vec::new();
    let dash: Value = serde_json::from_str(&monitoring_file("steadfast-dashboard.json"))
        .expect("dashboard is JSON");
    dashboard_exprs(&dash, &mut exprs);
    let dash_count = exprs.len();
    assert!(dash_count >= 15, "dashboard has {dash_count} queries");
    let alerts: serde_yaml::Value =
        serde_yaml::from_str(&monitoring_file("steadfast-alerts.yaml")).expect("alerts are YAML");
    let mut alert_names = BTreeSet::new();
    for group in alerts["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            alert_names.insert(rule["alert"].as_str().expect("alert name").to_string());
            exprs.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    for required in [
        "SteadfastDown",
        "SteadfastProviderEjected",
        "SteadfastHighUpstreamErrorRatio",
        "SteadfastLimiterRejections",
        "SteadfastNoAvailableProvider",
        "SteadfastHighOverhead",
        "SteadfastConfigReloadFailed",
    ] {
        assert!(alert_names.contains(required), "missing alert {required}");
    }

    // A live scrape after the scripted sequence has every series family.
    let s = run_scripted("obs-names").await;
    let exposed = Scrape::get(&s.px).await.names();
    let mut referenced = BTreeSet::new();
    for e in &exprs {
        referenced.extend(referenced_metrics(e));
    }
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|n| !exposed.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "referenced but not exposed: {missing:?}\nexposed: {exposed:?}"
    );
    // And the monitoring covers what it promises.
    for family in [
        "steadfast_requests_total",
        "steadfast_request_duration_seconds_bucket",
        "steadfast_overhead_seconds_bucket",
        "steadfast_failovers_total",
        "steadfast_provider_state",
        "steadfast_provider_ejections_total",
        "steadfast_inflight_requests",
        "steadfast_tokens_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            referenced.contains(family),
            "monitoring does not use {family}"
        );
    }
}

/// The harness itself fails any test whose proxy logged a value passed in a
/// `*_KEY` or `*_TOKENS` variable (here: text that is always logged).
#[tokio::test]
#[should_panic(expected = "passed via the environment appears in")]
async fn harness_fails_a_test_whose_logs_contain_a_secret() {
    let m1 = anthropic("p1").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider("p1", "anthropic", m1.addr(), "")
    );
    let px =
        start(Proxy::builder("obs-harness", &body).env("OBS_LEAKED_KEY", "\"event\":\"started\""))
            .await;
    px.wait_event("started", |_| true).await;
}
