//! A stream whose terminal event went out is a complete answer: a client
//! that stops reading there (Codex CLI does, at `response.completed`) or an
//! upstream that drops the connection right after it is not a failure, and
//! usage already seen is always counted.

mod common;

use common::http::{anthropic_body, openai_body, Conn, Request};
use common::scripted::{self, Then};
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

async fn scripted_upstream(events: &'static [&'static str], then: Then) -> SocketAddr {
    scripted::upstream(events.iter().map(|e| e.to_string()).collect(), then)
        .await
        .addr
}

const RESPONSES: &[&str] = &[
    "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"model\":\"gpt-x\",\"output\":[]}}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"m1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"model\":\"gpt-x\",\"output\":[],\"usage\":{\"input_tokens\":13,\"output_tokens\":5,\"total_tokens\":18}}}\n\n",
];

const MESSAGES: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":21,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

async fn last_request_log(px: &Proxy) -> serde_json::Value {
    px.wait_event("request", |_| true).await
}

async fn stats(px: &Proxy) -> serde_json::Value {
    http::send(px.admin, http::Request::get("/stats"))
        .await
        .json()
}

#[tokio::test]
async fn a_client_that_leaves_after_response_completed_got_its_answer() {
    let up = scripted_upstream(RESPONSES, Then::Linger).await;
    let px = Proxy::builder("done-codex", &one_route("/v1/responses", "openai", up))
        .start()
        .await;
    let mut c = Conn::connect(px.proxy).await;
    c.write_request(&Request::post("/v1/responses", openai_body("gpt-x", true)))
        .await;
    let (status, _) = c.read_head().await.expect("head");
    assert_eq!(status, 200);
    let mut seen = String::new();
    while !seen.contains("response.completed") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), c.next_chunk())
            .await
            .expect("events keep coming")
            .expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Codex stops reading here and closes.
    drop(c);
    let log = last_request_log(&px).await;
    assert_eq!(log["class"], "success", "{log}");
    assert_eq!(log["outcome"], "success", "{log}");
    assert_eq!(log["tokens"]["input"], 13, "{log}");
    assert_eq!(log["tokens"]["output"], 5, "{log}");
    assert_eq!(log["model"], "gpt-x", "{log}");
    let st = stats(&px).await;
    assert_eq!(st["requests"]["success"], 1, "{st:#}");
    assert_eq!(st["requests"]["errors"], 0, "{st:#}");
    assert_eq!(st["errors_by_provider"]["p1"]["total"], 0, "{st:#}");
}

#[tokio::test]
async fn an_upstream_reset_after_message_stop_ends_the_stream_cleanly() {
    let up = scripted_upstream(MESSAGES, Then::Reset).await;
    let px = Proxy::builder("done-reset", &one_route("/v1/messages", "anthropic", up))
        .start()
        .await;
    let r = px
        .send(Request::post(
            "/v1/messages",
            anthropic_body("claude-x", true),
        ))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.complete, "the client saw a broken body: {}", r.text());
    let events = r.events();
    assert_eq!(
        events.last().and_then(|e| e.0.as_deref()),
        Some("message_stop"),
        "{}",
        r.text()
    );
    assert!(events.iter().all(|e| e.0.as_deref() != Some("error")));
    let log = last_request_log(&px).await;
    assert_eq!(log["class"], "success", "{log}");
    assert_eq!(log["tokens"]["output"], 9, "{log}");
    assert!(px.events("stream_interrupted").is_empty());
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_client_closed_with_its_usage_kept() {
    // The stream stalls after its first delta; the client gives up.
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            stall_mid_stream_after: Some(1),
            input_tokens: 17,
            ..Behavior::default()
        },
    )
    .await;
    let px = Proxy::builder(
        "done-left",
        &one_route("/v1/messages", "anthropic", m1.addr()),
    )
    .start()
    .await;
    let mut c = Conn::connect(px.proxy).await;
    c.write_request(&Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    c.read_head().await.expect("head");
    let mut seen = String::new();
    while !seen.contains("content_block_delta") {
        let chunk = c.next_chunk().await.expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(c);
    let log = last_request_log(&px).await;
    assert_eq!(log["class"], "client", "{log}");
    assert_eq!(log["outcome"], "client_closed", "{log}");
    assert_eq!(log["tokens"]["input"], 17, "usage seen is kept: {log}");
}
