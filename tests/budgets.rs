//! Time budgets (issue: budgets do not blame providers): `total_ms` is the
//! budget for getting an answer, never a cut of a healthy stream, and the
//! response-header budget differs for streaming and non-streaming requests.

mod common;

use common::http::{anthropic_body, Request};
use common::*;
use std::time::Duration;

async fn health(px: &Proxy) -> serde_json::Value {
    let r = http::send(px.admin, http::Request::get("/health")).await;
    r.json()
}

#[tokio::test]
async fn a_stream_longer_than_total_ms_is_not_cut_and_blames_nobody() {
    // Ten events 150 ms apart: 1.5 s of healthy streaming against a 400 ms
    // total budget.
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            events: 10,
            event_delay_ms: 150,
            ..Behavior::default()
        },
    )
    .await;
    let body = format!(
        "timeouts:\n  total_ms: 400\nhealth:\n  eject_after_failures: 3\n{}",
        one_route("/v1/messages", "anthropic", m1.addr())
    );
    let px = Proxy::builder("budget-stream", &body).start().await;
    for _ in 0..3 {
        let r = px
            .send(Request::post("/v1/messages", anthropic_body("m", true)))
            .await;
        assert_eq!(r.status, 200);
        assert!(r.complete, "the stream was cut: {}", r.text());
        let events = r.events();
        let last = events.last().expect("events");
        assert_eq!(last.0.as_deref(), Some("message_stop"), "{}", r.text());
        assert!(events.iter().all(|e| e.0.as_deref() != Some("error")));
    }
    let h = health(&px).await;
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["providers"][0]["state"], "healthy", "{h}");
    assert_eq!(h["providers"][0]["consecutive_failures"], 0, "{h}");
    assert!(px.events("provider_ejected").is_empty());
    assert!(px.events("stream_interrupted").is_empty());
}

#[tokio::test]
async fn total_ms_still_bounds_the_wait_for_an_answer() {
    // A provider that never answers: the total budget ends the request.
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            stall_before_headers: true,
            ..Behavior::default()
        },
    )
    .await;
    let body = format!(
        "timeouts:\n  total_ms: 300\n{}",
        one_route("/v1/messages", "anthropic", m1.addr())
    );
    let px = Proxy::builder("budget-total", &body).start().await;
    let started = std::time::Instant::now();
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn non_streaming_requests_wait_longer_for_their_header_than_streams() {
    // Both providers answer after 700 ms. A streaming request gives up on
    // the header after 200 ms and fails over; a non-streaming one waits.
    let slow = Behavior {
        latency_ms: 700,
        ..Behavior::default()
    };
    let m1 = mock(MockApi::Anthropic, "p1", slow.clone()).await;
    let m2 = mock(MockApi::Anthropic, "p2", slow).await;
    let body = format!(
        "timeouts:\n  response_header_ms: 5000\n  response_header_stream_ms: 200\nproviders:\n{}{}routes:\n  - {{ name: r, paths: [\"/v1/messages\"], providers: [p1, p2] }}\n",
        provider("p1", "anthropic", m1.addr(), ""),
        provider("p2", "anthropic", m2.addr(), "")
    );
    let px = Proxy::builder("budget-header", &body).start().await;

    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-attempts"), Some("1"));

    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("x-steadfast-attempts"), Some("2"));
    let m = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(m.contains("within 200 ms"), "{m}");
}

#[tokio::test]
async fn a_provider_may_override_the_stream_header_budget() {
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            latency_ms: 400,
            ..Behavior::default()
        },
    )
    .await;
    let body = format!(
        "timeouts:\n  response_header_stream_ms: 100\nproviders:\n{}routes:\n  - {{ name: r, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider(
            "p1",
            "anthropic",
            m1.addr(),
            "    timeouts: { response_header_stream_ms: 3000 }\n"
        )
    );
    let px = Proxy::builder("budget-override", &body).start().await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", true)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}
