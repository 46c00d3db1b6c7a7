//! Failover inside a 200: a 2xx stream is committed at its first
//! content-bearing event, so an error event, an end or a silence before it
//! still moves to the next provider, and the client sees one well-formed
//! stream. Also: empty answers and context-length errors.

mod common;

use common::http::{anthropic_body, openai_body, Conn, Request};
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

fn two(api: &str, path: &str, a: SocketAddr, b: SocketAddr, extra: &str) -> String {
    format!(
        "{extra}providers:\n{}{}routes:\n  - {{ name: r, paths: [\"{path}\"], providers: [p1, p2] }}\n",
        provider("p1", api, a, ""),
        provider("p2", api, b, "")
    )
}

fn error_event_before_content(t: &str) -> Behavior {
    Behavior {
        error_event_after: Some(0),
        error_event_type: t.into(),
        ..Behavior::default()
    }
}

fn names(r: &common::http::Response) -> Vec<String> {
    r.events()
        .into_iter()
        .map(|(n, d)| {
            n.unwrap_or_else(|| {
                serde_json::from_str::<Value>(&d)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "chunk".into())
            })
        })
        .collect()
}

async fn attempt_chain(px: &Proxy) -> Vec<Value> {
    px.wait_event("request", |_| true).await["attempt_chain"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn admin(px: &Proxy, path: &str) -> Value {
    http::send(px.admin, http::Request::get(path)).await.json()
}

#[tokio::test]
async fn an_overloaded_error_event_inside_a_200_fails_over_with_one_message_start() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        error_event_before_content("overloaded_error"),
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "fc-overloaded",
        &two("anthropic", "/v1/messages", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert_eq!(r.header("x-steadfast-attempts"), Some("2"));
    let n = names(&r);
    assert_eq!(
        n.iter().filter(|e| *e == "message_start").count(),
        1,
        "{n:?}"
    );
    assert!(!n.contains(&"error".to_string()), "{}", r.text());
    assert_eq!(n.last().map(String::as_str), Some("message_stop"));
    // Nothing of p1's attempt reached the client.
    let start: Value = serde_json::from_str(&r.events()[0].1).unwrap();
    assert_eq!(start["message"]["id"], "msg_mock_1");
    assert!(r.text().contains("p2"));
    let chain = attempt_chain(&px).await;
    assert_eq!(chain[0]["provider"], "p1");
    assert_eq!(chain[0]["result"], "server");
    assert_eq!(chain[0]["pre_content"], true);
    assert!(chain[0]["waited_ms"].is_u64());
    assert_eq!(chain[1]["result"], "success");
    assert!(chain[1]["first_content_ms"].is_u64(), "{chain:?}");
    assert_eq!(m1.requests(), 1);
    assert_eq!(m2.requests(), 1);
    // The same request bytes went to both.
    assert_eq!(m1.recorded()[0].body, m2.recorded()[0].body);
}

#[tokio::test]
async fn openai_chat_and_responses_error_chunks_before_content_fail_over() {
    for (path, stream_body) in [
        ("/v1/chat/completions", openai_body("gpt", true)),
        (
            "/v1/responses",
            serde_json::json!({"model": "gpt", "stream": true, "input": "hi"})
                .to_string()
                .into_bytes(),
        ),
    ] {
        let m1 = mock(
            MockApi::OpenAi,
            "p1",
            error_event_before_content("overloaded_error"),
        )
        .await;
        let m2 = mock(MockApi::OpenAi, "p2", Behavior::default()).await;
        let px = Proxy::builder("fc-openai", &two("openai", path, m1.addr(), m2.addr(), ""))
            .start()
            .await;
        let r = px.send(Request::post(path, stream_body.clone())).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("x-steadfast-provider"), Some("p2"), "{path}");
        assert!(!r.text().contains("\"error\""), "{path}: {}", r.text());
        assert!(r.text().contains("Hello"), "{path}: {}", r.text());
        if path == "/v1/responses" {
            let n = names(&r);
            assert_eq!(
                n.iter().filter(|e| *e == "response.created").count(),
                1,
                "{n:?}"
            );
        }
        let chain = attempt_chain(&px).await;
        assert_eq!(chain[0]["result"], "server", "{path}: {chain:?}");
        assert_eq!(chain[0]["pre_content"], true);
    }
}

#[tokio::test]
async fn a_rate_limit_error_event_cools_the_provider_down() {
    let m1 = mock(
        MockApi::OpenAi,
        "p1",
        Behavior {
            error_event_message: "Rate limit reached. Please try again in 20s.".into(),
            ..error_event_before_content("rate_limit_error")
        },
    )
    .await;
    let m2 = mock(MockApi::OpenAi, "p2", Behavior::default()).await;
    let px = Proxy::builder(
        "fc-ratelimit",
        &two("openai", "/v1/chat/completions", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let r = px
        .send(Request::post(
            "/v1/chat/completions",
            openai_body("gpt", true),
        ))
        .await;
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    let h = admin(&px, "/health").await;
    assert_eq!(h["providers"][0]["state"], "cooling_down", "{h}");
    // The next request does not even try p1 first.
    let r = px
        .send(Request::post(
            "/v1/chat/completions",
            openai_body("gpt", true),
        ))
        .await;
    assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
    assert_eq!(m1.requests(), 1);
}

#[tokio::test]
async fn an_invalid_request_error_event_is_the_answer_in_a_well_formed_stream() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            error_event_message: "messages: at least one message is required".into(),
            ..error_event_before_content("invalid_request_error")
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "fc-invalid",
        &two("anthropic", "/v1/messages", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(names(&r), ["message_start", "error"], "{}", r.text());
    assert_eq!(r.header("x-steadfast-error-class"), Some("request"));
    assert_eq!(m2.requests(), 0, "a request error is not failed over");
}

#[tokio::test]
async fn when_every_provider_errors_inside_its_200_the_last_stream_is_the_answer() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        error_event_before_content("overloaded_error"),
    )
    .await;
    let m2 = mock(
        MockApi::Anthropic,
        "p2",
        error_event_before_content("overloaded_error"),
    )
    .await;
    let px = Proxy::builder(
        "fc-all",
        &two(
            "anthropic",
            "/v1/messages",
            m1.addr(),
            m2.addr(),
            "retry:\n  max_attempts: 2\n",
        ),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    // One stream: the last provider's message_start and error, nothing of
    // the first attempt.
    assert_eq!(names(&r), ["message_start", "error"], "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert_eq!(r.header("x-steadfast-error-class"), Some("server"));
    let err: Value = serde_json::from_str(&r.events()[1].1).unwrap();
    assert_eq!(err["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn a_stream_that_ends_before_content_is_empty_and_fails_over() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            empty: true,
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "fc-empty",
        &two("anthropic", "/v1/messages", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert!(r.text().contains("content_block_delta"));
    let chain = attempt_chain(&px).await;
    assert_eq!(chain[0]["result"], "empty", "{chain:?}");
    let st = admin(&px, "/stats").await;
    assert_eq!(st["attempts"]["by_class"]["empty"], 1, "{st:#}");
    assert!(st["errors_by_class"].get("empty").is_some(), "{st:#}");
}

#[tokio::test]
async fn an_empty_json_answer_fails_over_and_the_last_one_is_returned_as_is() {
    let empty = Behavior {
        empty: true,
        ..Behavior::default()
    };
    let m1 = mock(MockApi::OpenAi, "p1", empty.clone()).await;
    let m2 = mock(MockApi::OpenAi, "p2", Behavior::default()).await;
    let px = Proxy::builder(
        "fc-empty-json",
        &two("openai", "/v1/chat/completions", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let r = px
        .send(Request::post(
            "/v1/chat/completions",
            openai_body("gpt", false),
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from p2"
    );

    // Both empty: the last one goes back as is, marked.
    m2.set_behavior(empty);
    let r = px
        .send(Request::post(
            "/v1/chat/completions",
            openai_body("gpt", false),
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "");
    assert_eq!(r.header("x-steadfast-error-class"), Some("empty"));
}

#[tokio::test]
async fn pings_do_not_count_as_content_and_first_content_ms_fails_over() {
    // p1 sends message_start, then only pings, every 50 ms, for 3 s.
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            pings_before_content_ms: 3000,
            ping_interval_ms: 50,
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "fc-pings",
        &two(
            "anthropic",
            "/v1/messages",
            m1.addr(),
            m2.addr(),
            "timeouts:\n  first_content_ms: 400\n",
        ),
    )
    .start()
    .await;
    let started = std::time::Instant::now();
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(!r.text().contains("ping") || names(&r).iter().filter(|n| *n == "ping").count() == 1);
    let chain = attempt_chain(&px).await;
    assert_eq!(chain[0]["result"], "timeout", "{chain:?}");
    assert_eq!(chain[0]["pre_content"], true);
}

#[tokio::test]
async fn a_provider_override_of_first_content_ms_applies() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            pings_before_content_ms: 600,
            ping_interval_ms: 50,
            ..Behavior::default()
        },
    )
    .await;
    let body = format!(
        "timeouts:\n  first_content_ms: 100\nproviders:\n{}routes:\n  - {{ name: r, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider(
            "p1",
            "anthropic",
            m1.addr(),
            "    timeouts: { first_content_ms: 5000 }\n"
        )
    );
    let px = Proxy::builder("fc-override", &body).start().await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("content_block_delta"), "{}", r.text());
}

#[tokio::test]
async fn an_error_after_content_ends_the_stream_as_before() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            error_event_after: Some(2),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "fc-after",
        &two("anthropic", "/v1/messages", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 200);
    let n = names(&r);
    assert_eq!(
        n.iter().filter(|e| *e == "content_block_delta").count(),
        2,
        "{n:?}"
    );
    assert_eq!(n.last().map(String::as_str), Some("error"));
    assert_eq!(n.iter().filter(|e| *e == "error").count(), 1, "{n:?}");
    assert_eq!(m2.requests(), 0, "no failover after content");
    let log = px.wait_event("request", |_| true).await;
    assert_eq!(log["class"], "server", "{log}");
    px.wait_event("stream_interrupted", |v| v["class"] == "server")
        .await;
}

#[tokio::test]
async fn a_client_that_leaves_while_the_stream_is_held_blames_nobody() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            pings_before_content_ms: 10_000,
            ping_interval_ms: 50,
            ..Behavior::default()
        },
    )
    .await;
    let px = Proxy::builder(
        "fc-leave",
        &one_route("/v1/messages", "anthropic", m1.addr()),
    )
    .start()
    .await;
    let mut c = Conn::connect(px.proxy).await;
    c.write_request(&Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    // Held: nothing reaches the client, not even the status line.
    let head = tokio::time::timeout(Duration::from_millis(300), c.read_head()).await;
    assert!(head.is_err(), "the held stream was committed: {head:?}");
    drop(c);
    let log = px.wait_event("request", |_| true).await;
    assert_eq!(log["class"], "client", "{log}");
    let h = admin(&px, "/health").await;
    assert_eq!(h["providers"][0]["consecutive_failures"], 0, "{h}");
    assert_eq!(h["status"], "healthy");
}

#[tokio::test]
async fn pre_content_errors_count_toward_ejection() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        error_event_before_content("api_error"),
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "fc-eject",
        &two(
            "anthropic",
            "/v1/messages",
            m1.addr(),
            m2.addr(),
            "health:\n  eject_after_failures: 2\n  base_ejection_ms: 60000\n  max_ejection_ms: 60000\n",
        ),
    )
    .start()
    .await;
    for _ in 0..2 {
        let r = px
            .send(Request::post("/v1/messages", anthropic_body("m", true)))
            .await;
        assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    }
    px.wait_event("provider_ejected", |v| v["provider"] == "p1")
        .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
    assert_eq!(m1.requests(), 2);
}

#[tokio::test]
async fn a_prompt_too_long_for_one_model_fails_over_to_the_next() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            status: 400,
            error_message: Some("prompt is too long: 212345 tokens > 200000 maximum".into()),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "fc-context",
        &two("anthropic", "/v1/messages", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    let chain = attempt_chain(&px).await;
    assert_eq!(chain[0]["result"], "context_length", "{chain:?}");

    // A policy refusal is the client's answer, as is.
    m1.set_behavior(Behavior {
        status: 400,
        error_message: Some("Output blocked by content filtering policy".into()),
        ..Behavior::default()
    });
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-steadfast-error-class"), Some("request"));
    assert!(r.text().contains("content filtering"));
    assert_eq!(m2.requests(), 1);
}

#[tokio::test]
async fn time_to_first_content_is_measured_per_provider() {
    let m1 = anthropic("p1").await;
    let px = Proxy::builder(
        "fc-metric",
        &one_route("/v1/messages", "anthropic", m1.addr()),
    )
    .start()
    .await;
    px.send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    px.wait_event("request", |_| true).await;
    let text = http::send(px.admin, http::Request::get("/metrics"))
        .await
        .text();
    assert!(
        text.contains("steadfast_time_to_first_content_seconds_count{provider=\"p1\"} 1"),
        "{text}"
    );
}
