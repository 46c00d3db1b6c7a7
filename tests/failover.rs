//! Request handling against the real binary: every row of the classification table,
//! failover for large bodies, and what the client sees when all fail.

mod common;

use common::http::{anthropic_body, openai_body, Request};
use common::*;
use std::net::SocketAddr;

fn two_anthropic(a: SocketAddr, b: SocketAddr) -> String {
    format!(
        "providers:\n{}{}routes:\n  - name: messages\n    paths: [\"/v1/messages\"]\n    providers: [p1, p2]\n",
        provider("p1", "anthropic", a, ""),
        provider("p2", "anthropic", b, "")
    )
}

fn msg() -> Request<'static> {
    Request::post("/v1/messages", anthropic_body("claude-test", false))
        .header("x-api-key", "client-key")
}

/// The second provider answers after the first failed with `first`.
async fn assert_fails_over(name: &str, first: Behavior, class: &str) {
    let m1 = mock(MockApi::Anthropic, "p1", first).await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(name, &two_anthropic(m1.addr(), m2.addr()))
        .start()
        .await;
    let r = px.send(msg()).await;
    assert_eq!(r.status, 200, "{name}: {}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"), "{name}");
    assert_eq!(r.header("x-steadfast-attempts"), Some("2"), "{name}");
    assert!(r.header("x-steadfast-error-class").is_none(), "{name}");
    assert!(r.text().contains("Hello from p2"), "{name}: {}", r.text());
    assert_eq!(m2.requests(), 1, "{name}");
    let ev = px.wait_event("request", |_| true).await;
    assert_eq!(ev["attempt_chain"][0]["result"], class, "{name}: {ev}");
    assert_eq!(ev["attempt_chain"][1]["result"], "success", "{name}: {ev}");
}

#[tokio::test]
async fn network_connection_refused_fails_over() {
    let dead = free_addr();
    let m2 = anthropic("p2").await;
    let px = Proxy::builder("refused", &two_anthropic(dead, m2.addr()))
        .start()
        .await;
    let r = px.send(msg()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert_eq!(r.header("x-steadfast-attempts"), Some("2"));
    let ev = px.wait_event("request", |_| true).await;
    assert_eq!(ev["attempt_chain"][0]["result"], "network");
}

#[tokio::test]
async fn network_reset_fails_over() {
    assert_fails_over(
        "reset",
        Behavior {
            reset: true,
            ..Behavior::default()
        },
        "network",
    )
    .await;
}

#[tokio::test]
async fn network_close_without_response_fails_over() {
    assert_fails_over(
        "close",
        Behavior {
            close_without_response: true,
            ..Behavior::default()
        },
        "network",
    )
    .await;
}

#[tokio::test]
async fn response_header_timeout_fails_over() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            stall_before_headers: true,
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let body = format!(
        "timeouts:\n  response_header_ms: 300\n{}",
        two_anthropic(m1.addr(), m2.addr())
    );
    let px = Proxy::builder("header-timeout", &body).start().await;
    let r = px.send(msg()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    let ev = px.wait_event("request", |_| true).await;
    assert_eq!(ev["attempt_chain"][0]["result"], "timeout");
}

#[tokio::test]
async fn rate_limit_fails_over_and_cools_the_provider_down() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            status: 429,
            retry_after: Some("30".into()),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder("ratelimit", &two_anthropic(m1.addr(), m2.addr()))
        .start()
        .await;
    let r = px.send(msg()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-steadfast-attempts"), Some("2"));
    // Cooling down: the next request goes straight to p2.
    let r = px.send(msg()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert_eq!(m1.requests(), 1);
    let (_, h) = health(&px).await;
    let p1 = h["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p1")
        .unwrap()
        .clone();
    assert_eq!(p1["state"], "cooling_down", "{h}");
}

#[tokio::test]
async fn server_errors_fail_over() {
    for code in [500, 503, 529] {
        assert_fails_over(&format!("server-{code}"), status(code), "server").await;
    }
}

#[tokio::test]
async fn auth_errors_fail_over() {
    for code in [401, 403] {
        assert_fails_over(&format!("auth-{code}"), status(code), "auth").await;
    }
}

#[tokio::test]
async fn request_errors_are_returned_as_is_without_failover() {
    for code in [400, 404, 413, 422] {
        let m1 = mock(MockApi::Anthropic, "p1", status(code)).await;
        let m2 = anthropic("p2").await;
        let px = Proxy::builder("bad-request", &two_anthropic(m1.addr(), m2.addr()))
            .start()
            .await;
        let r = px.send(msg()).await;
        assert_eq!(r.status, code);
        assert_eq!(r.header("x-steadfast-provider"), Some("p1"));
        assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
        assert_eq!(r.header("x-steadfast-error-class"), Some("request"));
        assert_eq!(r.json()["type"], "error", "upstream body passed through");
        assert!(r.text().contains("mock p1"), "{}", r.text());
        assert_eq!(m2.requests(), 0, "the second provider must receive nothing");
    }
}

#[tokio::test]
async fn all_network_failures_give_502_in_dialect() {
    let (d1, d2) = (free_addr(), free_addr());
    let px = Proxy::builder("all-down", &two_anthropic(d1, d2))
        .start()
        .await;
    let r = px.send(msg()).await;
    assert_eq!(r.status, 502);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("p1") && m.contains("p2") && m.contains("network"),
        "{m}"
    );
    assert_eq!(r.header("x-steadfast-error-class"), Some("network"));
    // A refused connection is not asked again: nobody listens there, and
    // a second try only adds latency. One attempt per provider.
    assert_eq!(r.header("x-steadfast-attempts"), Some("2"));
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test]
async fn all_timeouts_give_504() {
    let stall = Behavior {
        stall_before_headers: true,
        ..Behavior::default()
    };
    let m1 = mock(MockApi::Anthropic, "p1", stall.clone()).await;
    let m2 = mock(MockApi::Anthropic, "p2", stall).await;
    let body = format!(
        "timeouts:\n  response_header_ms: 200\n{}",
        two_anthropic(m1.addr(), m2.addr())
    );
    let px = Proxy::builder("all-timeout", &body).start().await;
    let r = px.send(msg()).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["type"], "api_error");
    assert_eq!(r.header("x-steadfast-error-class"), Some("timeout"));
}

#[tokio::test]
async fn all_upstream_http_errors_return_the_last_response_as_is() {
    let m1 = mock(MockApi::Anthropic, "p1", status(500)).await;
    let m2 = mock(
        MockApi::Anthropic,
        "p2",
        Behavior {
            status: 529,
            retry_after: Some("17".into()),
            ..Behavior::default()
        },
    )
    .await;
    let body = format!(
        "retry:\n  max_attempts: 2\n{}",
        two_anthropic(m1.addr(), m2.addr())
    );
    let px = Proxy::builder("all-http-errors", &body).start().await;
    let r = px.send(msg()).await;
    assert_eq!(r.status, 529, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("17"));
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert_eq!(r.header("x-steadfast-error-class"), Some("server"));
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    assert!(r.text().contains("mock p2"));
}

#[tokio::test]
async fn one_mib_prompt_fails_over_byte_for_byte() {
    for first in [status(503), status(429)] {
        let m1 = mock(MockApi::Anthropic, "p1", first).await;
        let m2 = anthropic("p2").await;
        let px = Proxy::builder("large-body", &two_anthropic(m1.addr(), m2.addr()))
            .start()
            .await;
        let prompt = "x".repeat(1 << 20);
        let body = serde_json::json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": prompt}]})
            .to_string()
            .into_bytes();
        let r = px.send(Request::post("/v1/messages", body.clone())).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
        let got = m2.recorded();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].body.as_ref(),
            body.as_slice(),
            "p2 got a different body"
        );
        assert_eq!(m1.recorded()[0].body.len(), body.len());
    }
}

#[tokio::test]
async fn connection_refused_with_large_body_fails_over() {
    let m2 = anthropic("p2").await;
    let px = Proxy::builder("large-refused", &two_anthropic(free_addr(), m2.addr()))
        .start()
        .await;
    let body = vec![b' '; 2 << 20];
    let mut json = br#"{"model":"m","pad":""#.to_vec();
    json.extend_from_slice(&body);
    json.extend_from_slice(br#""}"#);
    let r = px.send(Request::post("/v1/messages", json.clone())).await;
    assert_eq!(r.status, 200);
    assert_eq!(m2.recorded()[0].body.len(), json.len());
}

#[tokio::test]
async fn body_over_limit_is_rejected_before_any_upstream() {
    let m1 = anthropic("p1").await;
    let body = format!(
        "limits:\n  max_body_bytes: 1000\nproviders:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider("p1", "anthropic", m1.addr(), "")
    );
    let px = Proxy::builder("too-large", &body).start().await;
    let r = px
        .send(Request::post("/v1/messages", vec![b'a'; 5000]))
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["type"], "request_too_large");
    assert_eq!(r.header("x-steadfast-error-class"), Some("request"));
    // Chunked (no Content-Length) is caught while reading.
    let mut req = Request::post("/v1/messages", Vec::new());
    req.headers.push(("transfer-encoding", "chunked".into()));
    let mut chunked = Vec::new();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'a'; 512]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    req.body = chunked;
    let r = px.send(req).await;
    assert_eq!(r.status, 413);
    assert_eq!(m1.requests(), 0);
}

#[tokio::test]
async fn unknown_path_is_404_in_the_guessed_dialect() {
    let m1 = anthropic("p1").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider("p1", "anthropic", m1.addr(), "")
    );
    let px = Proxy::builder("no-route", &body).start().await;
    let r = px
        .send(Request::post("/v2/unknown", "{}").header("x-api-key", "k"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = px.send(Request::post("/v1/chat/completions", "{}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "request");
    assert_eq!(m1.requests(), 0);
}

#[tokio::test]
async fn client_auth_and_key_injection() {
    let m1 = anthropic("p1").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\nclient_auth:\n  tokens_env: TEST_TOKENS\n",
        provider("p1", "anthropic", m1.addr(), "    api_key_env: TEST_PROVIDER_KEY\n")
    );
    let px = Proxy::builder("auth", &body)
        .env("TEST_TOKENS", "tok-one,tok-two")
        .env("TEST_PROVIDER_KEY", "sk-provider-canary")
        .start()
        .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = px
        .send(
            Request::post("/v1/messages", anthropic_body("m", false))
                .header("authorization", "Bearer wrong"),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(m1.requests(), 0);

    let r = px
        .send(
            Request::post("/v1/messages", anthropic_body("m", false))
                .header("authorization", "Bearer tok-two"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = &m1.recorded()[0];
    assert_eq!(rec.header("x-api-key"), Some("sk-provider-canary"));
    assert_eq!(
        rec.header("authorization"),
        None,
        "client token leaked upstream"
    );
    assert!(!px.logs().contains("sk-provider-canary"), "key in logs");
    assert!(!px.logs().contains("tok-two"), "client token in logs");
    assert!(!r.text().contains("sk-provider-canary"));
}

#[tokio::test]
async fn headers_model_rewrite_and_request_id() {
    let m1 = anthropic("p1").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider(
            "p1",
            "anthropic",
            m1.addr(),
            "    models: { \"claude-sonnet-4-5\": \"claude-sonnet-4-5-20250929\" }\n"
        )
    );
    let px = Proxy::builder("rewrite", &body).start().await;
    let r = px
        .send(
            Request::post(
                "/v1/messages?beta=true",
                anthropic_body("claude-sonnet-4-5", false),
            )
            .header("x-request-id", "req-123")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "secret-hop")
            .header("anthropic-version", "2023-06-01"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("req-123"));
    let rec = &m1.recorded()[0];
    assert_eq!(rec.path, "/v1/messages?beta=true");
    assert_eq!(rec.header("host"), Some(m1.addr().to_string().as_str()));
    assert_eq!(rec.header("x-request-id"), Some("req-123"));
    assert_eq!(rec.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(rec.header("x-hop"), None);
    let sent: serde_json::Value = serde_json::from_slice(&rec.body).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(sent["messages"][0]["content"], "hello");
}

#[tokio::test]
async fn openai_route_errors_use_openai_dialect() {
    let px = Proxy::builder(
        "openai-dialect",
        &format!(
            "providers:\n{}routes:\n  - {{ name: chat, paths: [\"/v1/chat/completions\"], providers: [o1] }}\n",
            provider("o1", "openai", free_addr(), "")
        ),
    )
    .start()
    .await;
    let r = px
        .send(Request::post(
            "/v1/chat/completions",
            openai_body("gpt", false),
        ))
        .await;
    assert_eq!(r.status, 502);
    let v = r.json();
    assert_eq!(v["error"]["code"], "network");
    assert!(v["error"]["message"].as_str().unwrap().contains("o1"));
}

async fn health(px: &Proxy) -> (u16, serde_json::Value) {
    let r = common::http::send(px.admin, Request::get("/health")).await;
    (r.status, r.json())
}

/// HEAD and GET pass through like POST. A HEAD answer carries a
/// Content-Length but no body: the proxy must neither wait for that body nor
/// reuse the upstream connection as if it had read it, and the client's
/// keep-alive connection must carry the next request.
#[tokio::test]
async fn head_and_get_pass_through_on_one_client_connection() {
    let m = anthropic("p1").await;
    let px = Proxy::builder("head-get", &one_route("/v1/models", "anthropic", m.addr()))
        .start()
        .await;
    let mut c = common::http::Conn::connect(px.proxy).await;
    for round in 0..2 {
        let head = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            c.round_trip(&Request {
                method: "HEAD",
                ..Request::get("/v1/models")
            }),
        )
        .await
        .expect("HEAD answered without waiting for a body");
        assert_eq!(head.status, 200, "round {round}");
        assert!(head.body.is_empty(), "round {round}");
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("HEAD keeps the upstream's content-length");
        let get = c.round_trip(&Request::get("/v1/models")).await;
        assert_eq!(get.status, 200, "round {round}: {}", get.text());
        assert_eq!(get.body.len(), len, "round {round}: HEAD and GET agree");
        assert!(get.text().contains("\"data\""), "{}", get.text());
        assert_eq!(get.header("x-steadfast-provider"), Some("p1"));
    }
    let methods: Vec<String> = m.recorded().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["HEAD", "GET", "HEAD", "GET"]);
}

#[tokio::test]
async fn the_providers_request_id_is_returned_and_logged() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            status: 529,
            extra_headers: vec![("request-id".into(), "req_011_failed".into())],
            ..Behavior::default()
        },
    )
    .await;
    let m2 = mock(
        MockApi::Anthropic,
        "p2",
        Behavior {
            extra_headers: vec![("request-id".into(), "req_011_served".into())],
            ..Behavior::default()
        },
    )
    .await;
    let px = Proxy::builder("upstream-id", &two_anthropic(m1.addr(), m2.addr()))
        .start()
        .await;
    let r = px
        .send(msg().header("x-request-id", "client-chosen-id"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-request-id"), Some("client-chosen-id"));
    assert_eq!(
        r.header("x-steadfast-upstream-request-id"),
        Some("req_011_served")
    );
    assert_eq!(r.header("request-id"), Some("req_011_served"));
    let log = px.wait_event("request", |_| true).await;
    let chain = log["attempt_chain"].as_array().unwrap();
    assert_eq!(chain[0]["upstream_request_id"], "req_011_failed", "{log}");
    assert_eq!(chain[1]["upstream_request_id"], "req_011_served", "{log}");
}

#[tokio::test]
async fn the_access_log_names_the_model_of_a_stream_without_usage() {
    // An OpenAI stream without stream_options.include_usage carries no
    // usage event; the model comes from the request (after the rewrite).
    let m1 = mock(MockApi::OpenAi, "p1", Behavior::default()).await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: r, paths: [\"/v1/chat/completions\"], providers: [p1] }}\n",
        provider(
            "p1",
            "openai",
            m1.addr(),
            "    models: { \"gpt-alias\": \"gpt-real\" }\n"
        )
    );
    let px = Proxy::builder("model-log", &body).start().await;
    let req = serde_json::json!({
        "model": "gpt-alias",
        "stream": true,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let r = px
        .send(Request::post("/v1/chat/completions", req.to_string()))
        .await;
    assert_eq!(r.status, 200);
    let log = px.wait_event("request", |_| true).await;
    assert!(log.get("tokens").is_none(), "{log}");
    // The mock echoes the model it was asked for in every chunk, but no
    // chunk carries usage: the model is the one sent upstream.
    assert_eq!(log["model"], "gpt-real", "{log}");

    // A request the provider rejects as a whole also names its model.
    m1.set_behavior(status(400));
    let r = px
        .send(Request::post("/v1/chat/completions", req.to_string()))
        .await;
    assert_eq!(r.status, 400);
    let log = px.wait_event("request", |v| v["status"] == 400).await;
    assert_eq!(log["model"], "gpt-real", "{log}");
}

#[tokio::test]
async fn a_refused_provider_is_not_retried_before_a_transient_one() {
    // p1 refuses (nobody listens), p2 answers 503 (often clears at once):
    // the third attempt goes to p2 again, not back to p1.
    let dead = free_addr();
    let m2 = mock(MockApi::Anthropic, "p2", status(503)).await;
    let px = Proxy::builder("refused-order", &two_anthropic(dead, m2.addr()))
        .start()
        .await;
    let r = px.send(msg()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-steadfast-attempts"), Some("3"));
    let log = px.wait_event("request", |_| true).await;
    let chain: Vec<&str> = log["attempt_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["provider"].as_str().unwrap())
        .collect();
    assert_eq!(chain, ["p1", "p2", "p2"], "{log}");
    assert_eq!(m2.requests(), 2);
}
