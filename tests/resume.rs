//! Rescuing a stream cut mid-answer (`retry.resume_streams`,
//! opt-in): the original request goes to the next provider with the text
//! delivered so far as an assistant prefill, and its continuation is
//! stitched into the same client stream.

mod common;

use common::http::{anthropic_body, openai_body, Request};
use common::scripted::{self, Then};
use common::*;
use serde_json::Value;
use std::net::SocketAddr;

const RESUME: &str = "retry:\n  resume_streams: true\n";

fn route(extra: &str, path: &str, providers: &[(&str, &str, SocketAddr, &str)]) -> String {
    let mut y = format!("{extra}providers:\n");
    let mut names = Vec::new();
    for (name, api, addr, more) in providers {
        y.push_str(&provider(name, api, *addr, more));
        names.push(*name);
    }
    y.push_str(&format!(
        "routes:\n  - {{ name: r, paths: [\"{path}\"], providers: [{}] }}\n",
        names.join(", ")
    ));
    y
}

/// p1 streams five deltas but resets the connection after two.
/// Two Anthropic providers, p1 then p2, on a `/v1/messages` route with
/// resumption on.
async fn resuming_pair(name: &str, m1: &MockServer, m2: &MockServer) -> Proxy {
    let providers = [
        ("p1", "anthropic", m1.addr(), ""),
        ("p2", "anthropic", m2.addr(), ""),
    ];
    Proxy::builder(name, &route(RESUME, "/v1/messages", &providers))
        .start()
        .await
}

fn cut_after_two() -> Behavior {
    Behavior {
        events: 5,
        cut_mid_stream_after: Some(2),
        input_tokens: 13,
        ..Behavior::default()
    }
}

fn anthropic_text(r: &common::http::Response) -> String {
    r.events()
        .into_iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| serde_json::from_str::<Value>(&d).unwrap())
        .map(|v| v["delta"]["text"].as_str().unwrap_or("").to_string())
        .collect()
}

fn count(r: &common::http::Response, name: &str) -> usize {
    r.events()
        .iter()
        .filter(|(n, _)| n.as_deref() == Some(name))
        .count()
}

/// The final assistant message of a request the mock recorded.
fn prefill_of(m: &MockServer) -> Option<String> {
    let last = m.recorded().pop()?;
    let v: Value = serde_json::from_slice(&last.body).ok()?;
    let msg = v["messages"].as_array()?.last()?.clone();
    (msg["role"] == "assistant").then(|| msg["content"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn an_anthropic_stream_cut_mid_text_is_continued_as_one_message() {
    let m1 = mock(MockApi::Anthropic, "p1", cut_after_two()).await;
    let m2 = mock(
        MockApi::Anthropic,
        "p2",
        Behavior {
            input_tokens: 17,
            output_tokens: 9,
            ..Behavior::default()
        },
    )
    .await;
    let px = resuming_pair("resume-anthropic", &m1, &m2).await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.complete, "{}", r.text());
    // One well-formed message: one start, one delta, one stop, no error.
    assert_eq!(count(&r, "message_start"), 1, "{}", r.text());
    assert_eq!(count(&r, "message_delta"), 1);
    assert_eq!(count(&r, "message_stop"), 1);
    assert_eq!(count(&r, "error"), 0, "{}", r.text());
    assert_eq!(count(&r, "content_block_start"), 1);
    assert_eq!(count(&r, "content_block_stop"), 1);
    // Delivered "Hello from", then p2's continuation; the mock answers
    // "Hello from p2", whose repetition of the delivered words is trimmed.
    assert_eq!(anthropic_text(&r), "Hello from p2");
    assert_eq!(prefill_of(&m2).as_deref(), Some("Hello from"));
    // Every content event is in the one open block.
    for (n, d) in r.events() {
        if n.as_deref().is_some_and(|n| n.starts_with("content_block")) {
            assert_eq!(serde_json::from_str::<Value>(&d).unwrap()["index"], 0);
        }
    }

    let log = px.wait_event("request", |_| true).await;
    assert_eq!(log["class"], "success", "{log}");
    assert_eq!(log["provider"], "p2", "{log}");
    assert_eq!(log["resumed_from"], "p1", "{log}");
    assert!(log["resumed_at_tokens"].as_u64().unwrap() > 0, "{log}");
    // Both providers billed the input; output is p1's known part plus p2's.
    assert_eq!(log["tokens"]["input"], 13 + 17, "{log}");
    assert_eq!(log["tokens"]["output"], 1 + 9, "{log}");
    let metrics = http::send(px.admin, http::Request::get("/metrics"))
        .await
        .text();
    assert!(
        metrics.contains("steadfast_stream_resumes_total{provider=\"p1\",result=\"resumed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_openai_chat_stream_is_continued_on_a_prefill_provider() {
    let m1 = mock(MockApi::OpenAi, "p1", cut_after_two()).await;
    let m2 = mock(MockApi::OpenAi, "p2", Behavior::default()).await;
    let px = Proxy::builder(
        "resume-chat",
        &route(
            RESUME,
            "/v1/chat/completions",
            &[
                ("p1", "openai", m1.addr(), ""),
                ("p2", "openai", m2.addr(), "    prefill: true\n"),
            ],
        ),
    )
    .start()
    .await;
    let r = px
        .send(Request::post(
            "/v1/chat/completions",
            openai_body("gpt", true),
        ))
        .await;
    assert_eq!(r.status, 200);
    let chunks: Vec<Value> = r
        .events()
        .into_iter()
        .filter(|(_, d)| d != "[DONE]" && !d.is_empty())
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect();
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "{}",
        r.text()
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from p2");
    let roles = chunks
        .iter()
        .filter(|c| !c["choices"][0]["delta"]["role"].is_null())
        .count();
    assert_eq!(roles, 1, "one role chunk: {}", r.text());
    let ids: std::collections::BTreeSet<&str> =
        chunks.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "one id: {ids:?}");
    assert_eq!(r.events().last().unwrap().1, "[DONE]", "{}", r.text());
    assert_eq!(prefill_of(&m2).as_deref(), Some("Hello from"));
}

#[tokio::test]
async fn resumption_is_off_by_default() {
    let m1 = mock(MockApi::Anthropic, "p1", cut_after_two()).await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "resume-off",
        &route(
            "",
            "/v1/messages",
            &[
                ("p1", "anthropic", m1.addr(), ""),
                ("p2", "anthropic", m2.addr(), ""),
            ],
        ),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.events().last().unwrap().0.as_deref(), Some("error"));
    assert_eq!(m2.requests(), 0);
}

#[tokio::test]
async fn a_cut_inside_a_tool_call_or_thinking_is_not_continued() {
    let tool = vec![
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n".to_string(),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_string(),
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me look\"}}\n\n".to_string(),
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".to_string(),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"read\",\"input\":{}}}\n\n".to_string(),
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"pa\"}}\n\n".to_string(),
    ];
    let thinking = vec![
        tool[0].clone(),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n".to_string(),
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm\"}}\n\n".to_string(),
    ];
    for (what, events) in [("tool", tool), ("thinking", thinking)] {
        let up = scripted::upstream(events, Then::Reset).await;
        let m2 = anthropic("p2").await;
        let px = Proxy::builder(
            "resume-notext",
            &route(
                RESUME,
                "/v1/messages",
                &[
                    ("p1", "anthropic", up.addr, ""),
                    ("p2", "anthropic", m2.addr(), ""),
                ],
            ),
        )
        .start()
        .await;
        let r = px
            .send(Request::post("/v1/messages", anthropic_body("m", true)))
            .await;
        assert_eq!(
            r.events().last().unwrap().0.as_deref(),
            Some("error"),
            "{what}: {}",
            r.text()
        );
        assert_eq!(m2.requests(), 0, "{what}: nothing to continue");
        let metrics = http::send(px.admin, http::Request::get("/metrics"))
            .await
            .text();
        assert!(
            metrics.contains(
                "steadfast_stream_resumes_total{provider=\"p1\",result=\"not_resumable\"} 1"
            ),
            "{what}: {metrics}"
        );
    }
}

#[tokio::test]
async fn a_provider_refusing_the_prefill_is_learned_and_the_next_one_continues() {
    let m1 = mock(MockApi::Anthropic, "p1", cut_after_two()).await;
    let refuses = Behavior {
        reject_prefill: true,
        ..Behavior::default()
    };
    let m2 = mock(MockApi::Anthropic, "p2", refuses.clone()).await;
    let m3 = anthropic("p3").await;
    let px = Proxy::builder(
        "resume-refused",
        &route(
            RESUME,
            "/v1/messages",
            &[
                ("p1", "anthropic", m1.addr(), ""),
                ("p2", "anthropic", m2.addr(), ""),
                ("p3", "anthropic", m3.addr(), ""),
            ],
        ),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(anthropic_text(&r), "Hello from p3", "{}", r.text());
    assert_eq!(m2.requests(), 1);
    px.wait_event("prefill_refused", |v| v["provider"] == "p2")
        .await;
    // Learned: p2 is not asked for a continuation again.
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(anthropic_text(&r), "Hello from p3");
    assert_eq!(m2.requests(), 1, "p2 was asked again");
}

#[tokio::test]
async fn with_nothing_able_to_continue_the_client_gets_the_original_error_event() {
    let m1 = mock(MockApi::Anthropic, "p1", cut_after_two()).await;
    let m2 = mock(
        MockApi::Anthropic,
        "p2",
        Behavior {
            reject_prefill: true,
            ..Behavior::default()
        },
    )
    .await;
    let px = resuming_pair("resume-none", &m1, &m2).await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    let (name, data) = r.events().last().cloned().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    assert!(
        !data.contains("prefill"),
        "the prefill 400 is never the client's answer: {data}"
    );
    assert!(data.contains("p1"), "{data}");
    assert_eq!(anthropic_text(&r), "Hello from");
    let metrics = http::send(px.admin, http::Request::get("/metrics"))
        .await
        .text();
    assert!(
        metrics.contains("steadfast_stream_resumes_total{provider=\"p1\",result=\"failed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_error_event_mid_text_is_continued_and_never_reaches_the_client() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            events: 5,
            error_event_after: Some(2),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = resuming_pair("resume-error-event", &m1, &m2).await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(count(&r, "error"), 0, "{}", r.text());
    assert_eq!(anthropic_text(&r), "Hello from p2");
}

#[tokio::test]
async fn a_repetition_at_the_seam_is_trimmed_and_counted() {
    // p2 repeats the prefill's last two words ("Hello from") before its
    // own answer ("Hello from p2"): the seam holds "Hello fromHello..."
    // twice over; only the exact overlap with what was delivered goes.
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            events: 6,
            cut_mid_stream_after: Some(4),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = mock(
        MockApi::Anthropic,
        "p2",
        Behavior {
            echo_prefill_words: 2,
            events: 1,
            ..Behavior::default()
        },
    )
    .await;
    let px = resuming_pair("resume-overlap", &m1, &m2).await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    // Delivered: "Hello from p1 again"; p2 sends " p1 again" + "Hello from p2".
    assert_eq!(prefill_of(&m2).as_deref(), Some("Hello from p1 again"));
    assert_eq!(anthropic_text(&r), "Hello from p1 againHello from p2");
    let log = px.wait_event("request", |_| true).await;
    assert_eq!(log["resumed_overlap_trimmed"], true, "{log}");
}

#[tokio::test]
async fn how_often_the_seam_is_trimmed_against_the_mock() {
    // The mock's continuation repeats the prefill's last words only when
    // told to; over a batch where half the continuations echo, exactly
    // those are trimmed and every client text is clean.
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            events: 6,
            cut_mid_stream_after: Some(4),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = mock(MockApi::Anthropic, "p2", Behavior::default()).await;
    // p1 breaks every time on purpose: keep it from being ejected.
    let extra = format!("{RESUME}health:\n  eject_after_failures: 1000\n");
    let px = Proxy::builder(
        "resume-overlap-rate",
        &route(
            &extra,
            "/v1/messages",
            &[
                ("p1", "anthropic", m1.addr(), ""),
                ("p2", "anthropic", m2.addr(), ""),
            ],
        ),
    )
    .start()
    .await;
    const N: usize = 10;
    for i in 0..N {
        m2.set_behavior(Behavior {
            echo_prefill_words: if i % 2 == 0 { 2 } else { 0 },
            events: 1,
            ..Behavior::default()
        });
        let r = px
            .send(Request::post("/v1/messages", anthropic_body("m", true)))
            .await;
        assert_eq!(anthropic_text(&r), "Hello from p1 againHello from p2");
        px.wait_event("request", |v| {
            v["request_id"] == r.header("x-request-id").unwrap()
        })
        .await;
    }
    let trimmed = px
        .events("request")
        .iter()
        .filter(|v| v["resumed_overlap_trimmed"] == true)
        .count();
    assert_eq!(trimmed, N / 2, "trimmed exactly the echoing continuations");
}
