//! SSE forwarding and what a client sees when an upstream breaks after the
//! response was committed.

mod common;

use common::http::{anthropic_body, openai_body, Conn, Request};
use common::*;
use std::time::Duration;

fn route(
    api: &str,
    path: &str,
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
    extra: &str,
) -> String {
    format!(
        "{extra}providers:\n{}{}routes:\n  - name: r\n    paths: [\"{path}\"]\n    providers: [p1, p2]\n",
        provider("p1", api, a, ""),
        provider("p2", api, b, "")
    )
}

#[tokio::test]
async fn sse_events_reach_the_client_while_the_upstream_is_still_streaming() {
    // p1 sends one delta and then goes quiet without closing: anything the
    // client receives was forwarded before the upstream finished.
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            stall_mid_stream_after: Some(1),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "sse-live",
        &route("anthropic", "/v1/messages", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let mut c = Conn::connect(px.proxy).await;
    c.write_request(&Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    let (status, headers) = c.read_head().await.expect("head");
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream")));
    let mut seen = String::new();
    let got_delta = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = c.next_chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("content_block_delta") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        got_delta,
        Ok(true),
        "first delta not forwarded while upstream stalls; got {seen:?}"
    );
    // Every forwarded piece is made of whole events.
    assert!(seen.ends_with("\n\n"), "{seen:?}");
}

#[tokio::test]
async fn anthropic_stream_cut_mid_event_ends_with_an_error_event() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            cut_mid_stream_after: Some(2),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "sse-cut",
        &route("anthropic", "/v1/messages", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.complete,
        "stream should end cleanly after the error event"
    );
    assert_eq!(r.header("x-steadfast-provider"), Some("p1"));
    let events = r.events();
    let deltas = events
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .count();
    assert_eq!(deltas, 2, "{events:?}");
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    assert!(events
        .iter()
        .all(|(n, _)| n.as_deref() != Some("message_stop")));
    assert_eq!(m2.requests(), 0, "no failover after commit");
    let ev = px.wait_event("stream_interrupted", |_| true).await;
    assert_eq!(ev["provider"], "p1");
    assert_eq!(ev["class"], "network");
}

#[tokio::test]
async fn openai_stream_cut_ends_with_an_error_chunk() {
    let m1 = mock(
        MockApi::OpenAi,
        "p1",
        Behavior {
            cut_mid_stream_after: Some(1),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = mock(MockApi::OpenAi, "p2", Behavior::default()).await;
    let px = Proxy::builder(
        "sse-cut-openai",
        &route("openai", "/v1/chat/completions", m1.addr(), m2.addr(), ""),
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
    assert!(r.complete);
    let events = r.events();
    let (_, last) = events.last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).expect("last event is JSON");
    assert_eq!(v["error"]["code"], "network");
    assert!(!r.text().contains("[DONE]"));
}

/// One `openai` route serving Chat Completions and Responses clients (as
/// the example config does): a Responses stream that breaks ends with the
/// Responses API's own error event, not a Chat chunk. The official SDKs
/// and Codex read Responses events by their `type`; a typeless Chat error
/// chunk is not one.
#[tokio::test]
async fn a_responses_stream_cut_on_an_openai_route_ends_with_a_responses_error_event() {
    let m1 = mock(
        MockApi::OpenAi,
        "p1",
        Behavior {
            cut_mid_stream_after: Some(1),
            ..Behavior::default()
        },
    )
    .await;
    let yaml = format!(
        "providers:\n{}routes:\n  - {{ name: r, paths: [\"/v1/chat/completions\", \"/v1/responses\"], providers: [p1] }}\n",
        provider("p1", "openai", m1.addr(), "")
    );
    let px = Proxy::builder("sse-cut-responses", &yaml).start().await;
    let body = serde_json::json!({"model": "gpt", "stream": true, "input": "hello"});
    let r = px
        .send(Request::post(
            "/v1/responses",
            body.to_string().into_bytes(),
        ))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.complete, "{}", r.text());
    let events = r.events();
    assert!(
        events
            .iter()
            .any(|(n, _)| n.as_deref() == Some("response.output_text.delta")),
        "{events:?}"
    );
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"), "{events:?}");
    let v: serde_json::Value = serde_json::from_str(data).expect("last event is JSON");
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], "network", "{v}");
    assert!(v["message"].as_str().unwrap().contains("p1"), "{v}");
    assert!(v.get("error").is_none(), "a Chat error chunk: {v}");

    // The same route's Chat clients still get Chat's error chunk.
    let r = px
        .send(Request::post(
            "/v1/chat/completions",
            openai_body("gpt", true),
        ))
        .await;
    let events = r.events();
    let (name, last) = events.last().unwrap();
    assert_eq!(name.as_deref(), None, "{events:?}");
    let v: serde_json::Value = serde_json::from_str(last).expect("last event is JSON");
    assert_eq!(v["error"]["code"], "network", "{v}");
}

/// An HTTP/1.0 provider streams until it closes; steadfast frames that
/// for its HTTP/1.1 client as chunked, which only an HTTP/1.1 status line
/// may announce (an "HTTP/1.0" line with chunked framing is read as a
/// close-delimited body full of chunk sizes).
#[tokio::test]
async fn a_stream_from_an_http_1_0_provider_reaches_the_client_as_http_1_1_chunked() {
    let stream = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/translate/messages/stream_text.sse"
    ))
    .unwrap();
    let up = common::scripted::upstream(
        common::scripted::events_of(&stream),
        common::scripted::Then::Http10,
    )
    .await;
    let px = Proxy::builder(
        "sse-http10",
        &one_route("/v1/messages", "anthropic", up.addr),
    )
    .start()
    .await;
    let mut c = Conn::connect(px.proxy).await;
    c.write_request(&Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while !raw.ends_with(b"\r\n0\r\n\r\n") {
            match c.stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\ntransfer-encoding: chunked\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n0\r\n\r\n"), "{text}");
    assert!(text.contains("message_stop"), "{text}");
}

#[tokio::test]
async fn stream_idle_timeout_after_commit_ends_with_error_event() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            stall_mid_stream_after: Some(1),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "sse-idle",
        &route(
            "anthropic",
            "/v1/messages",
            m1.addr(),
            m2.addr(),
            "timeouts:\n  stream_idle_ms: 300\n",
        ),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    let (name, data) = r.events().last().cloned().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    assert!(data.contains("timeout"), "{data}");
    let ev = px.wait_event("stream_interrupted", |_| true).await;
    assert_eq!(ev["class"], "timeout");
}

#[tokio::test]
async fn non_sse_body_cut_is_visible_as_broken() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            cut_body_after_bytes: Some(20),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    // Without `empty` in failover_on a JSON answer is committed at its
    // header, so the cut comes after the commit.
    let px = Proxy::builder(
        "json-cut",
        &route(
            "anthropic",
            "/v1/messages",
            m1.addr(),
            m2.addr(),
            "retry:\n  failover_on: [network, timeout, rate_limit, server, auth]\n",
        ),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        !r.complete,
        "a cut JSON body must not look complete: {:?}",
        r.text()
    );
}

#[tokio::test]
async fn a_json_answer_cut_before_it_is_whole_fails_over() {
    // With the default failover_on (which has `empty`), a JSON answer is
    // read whole before anything is sent: a cut is still a failover.
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            cut_body_after_bytes: Some(20),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "json-cut-early",
        &route("anthropic", "/v1/messages", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert_eq!(r.json()["content"][0]["text"], "Hello from p2");
}

#[tokio::test]
async fn full_stream_passes_through_and_usage_is_logged() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            events: 5,
            input_tokens: 21,
            output_tokens: 9,
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "sse-full",
        &route("anthropic", "/v1/messages", m1.addr(), m2.addr(), ""),
    )
    .start()
    .await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert!(r.complete);
    let names: Vec<String> = r.events().into_iter().filter_map(|(n, _)| n).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert_eq!(
        names.iter().filter(|n| *n == "content_block_delta").count(),
        5
    );
    let ev = px.wait_event("request", |_| true).await;
    assert_eq!(ev["tokens"]["input"], 21);
    assert_eq!(ev["tokens"]["output"], 9);
}

/// Once a response is committed no attempt will replay the request body, so
/// an open stream must not keep its prompt in memory: 16 streams whose
/// prompts total 64 MiB grow the proxy's RSS by far less than 64 MiB.
#[tokio::test]
async fn open_streams_do_not_pin_their_request_bodies() {
    let m = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            stall_mid_stream_after: Some(1),
            ..Behavior::default()
        },
    )
    .await;
    let px = Proxy::builder(
        "body-release",
        &one_route("/v1/messages", "anthropic", m.addr()),
    )
    .start()
    .await;
    let rss = || async {
        common::http::send(px.admin, Request::get("/health"))
            .await
            .json()["memory_rss_bytes"]
            .as_u64()
            .expect("memory_rss_bytes")
    };
    let body = serde_json::json!({
        "model": "m",
        "max_tokens": 64,
        "stream": true,
        "messages": [{"role": "user", "content": "x".repeat(4 << 20)}],
    })
    .to_string()
    .into_bytes();
    let req = Request::post("/v1/messages", body);
    // One stream first, so the allocator's arenas exist before the baseline.
    drop(common::http::open_stream(px.proxy, &req).await);
    let before = rss().await;
    let mut open = Vec::new();
    for _ in 0..16 {
        open.push(common::http::open_stream(px.proxy, &req).await);
    }
    let grown = rss().await.saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "16 open streams with 4 MiB prompts grew RSS by {} MiB",
        grown >> 20
    );
    assert_eq!(m.requests(), 17);
    drop(open);
}

/// A client that pipelines its next request while a stream is still
/// running (RFC 9112 §9.3.2) gets both answers, in order, on the same
/// connection: the second request must not be lost.
#[tokio::test]
async fn pipelined_request_during_a_stream_is_answered_after_it() {
    let m = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            events: 4,
            event_delay_ms: 50,
            ..Behavior::default()
        },
    )
    .await;
    let px = Proxy::builder(
        "pipelined",
        &one_route("/v1/messages", "anthropic", m.addr()),
    )
    .start()
    .await;
    let mut c = Conn::connect(px.proxy).await;
    let stream =
        Request::post("/v1/messages", anthropic_body("m", true)).header("x-request-id", "first");
    let plain =
        Request::post("/v1/messages", anthropic_body("m", false)).header("x-request-id", "second");
    c.write_request(&stream).await;
    let (status, _) = c.read_head().await.expect("first response head");
    assert_eq!(status, 200);
    // The stream is running; the next request arrives in the middle of it.
    c.write_request(&plain).await;
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        let mut sse = String::new();
        while let Some(chunk) = c.next_chunk().await {
            if chunk.is_empty() {
                break;
            }
            sse.push_str(&String::from_utf8_lossy(&chunk));
        }
        let second = c.read_response(false).await;
        (sse, second)
    })
    .await
    .expect("both answers within 20 s");
    let (sse, second) = done;
    assert!(sse.contains("message_stop"), "first stream complete: {sse}");
    assert_eq!(second.status, 200, "second answer: {}", second.text());
    assert_eq!(second.header("x-request-id"), Some("second"));
    assert!(second.text().contains("Hello from p1"), "{}", second.text());
    assert_eq!(m.requests(), 2);
}

/// Two requests written back to back in one packet are both answered, in
/// order, on the one connection.
#[tokio::test]
async fn back_to_back_pipelined_requests_are_answered_in_order() {
    let m = anthropic("p1").await;
    let px = Proxy::builder(
        "pipelined-burst",
        &one_route("/v1/messages", "anthropic", m.addr()),
    )
    .start()
    .await;
    let mut c = Conn::connect(px.proxy).await;
    let req = |id: &'static str| {
        Request::post("/v1/messages", anthropic_body("m", false)).header("x-request-id", id)
    };
    // Both requests in one write: the proxy reads the second while parsing
    // the first.
    c.write_requests(&[req("one"), req("two")]).await;
    for id in ["one", "two"] {
        let r = tokio::time::timeout(Duration::from_secs(10), c.read_response(false))
            .await
            .expect("answered");
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.header("x-request-id"), Some(id));
    }
    assert_eq!(m.requests(), 2);
}
