//! Concurrency limits: rejection after the queue timeout, a
//! queued client that leaves, and per-provider caps.

mod common;

use common::http::{anthropic_body, Conn, Request};
use common::*;
use std::time::Duration;

fn stalled() -> Behavior {
    Behavior {
        stall_mid_stream_after: Some(1),
        ..Behavior::default()
    }
}

/// Open a streaming request and wait until its first event arrived, so it
/// holds its slots for as long as the connection stays open.
async fn hold_slot(px: &Proxy) -> Conn {
    common::http::open_stream(
        px.proxy,
        &Request::post("/v1/messages", anthropic_body("m", true)),
    )
    .await
}

fn one_provider(addr: std::net::SocketAddr, limits: &str) -> String {
    format!(
        "limits:\n{limits}providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider("p1", "anthropic", addr, "")
    )
}

#[tokio::test]
async fn global_limit_rejects_with_503_and_retry_after() {
    let m1 = mock(MockApi::Anthropic, "p1", stalled()).await;
    let px = Proxy::builder(
        "limit-reject",
        &one_provider(m1.addr(), "  max_inflight: 1\n  queue_timeout_ms: 200\n"),
    )
    .start()
    .await;
    let _held = hold_slot(&px).await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("x-steadfast-error-class"), Some("concurrency"));
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    assert_eq!(
        m1.requests(),
        1,
        "a rejected request must not reach the provider"
    );
    let ev = px.wait_event("limiter_rejected", |_| true).await;
    assert_eq!(ev["scope"], "global");
}

#[tokio::test]
async fn queued_request_proceeds_when_a_slot_frees() {
    let m1 = mock(MockApi::Anthropic, "p1", stalled()).await;
    let px = Proxy::builder(
        "limit-queue",
        &one_provider(m1.addr(), "  max_inflight: 1\n  queue_timeout_ms: 10000\n"),
    )
    .start()
    .await;
    let held = hold_slot(&px).await;
    m1.set_behavior(Behavior::default());
    let waiter = tokio::spawn({
        let addr = px.proxy;
        async move {
            common::http::send(
                addr,
                Request::post("/v1/messages", anthropic_body("m", false)),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "second request should be queued");
    drop(held);
    let r = waiter.await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn queued_client_that_disconnects_leaves_the_queue_at_once() {
    let m1 = mock(MockApi::Anthropic, "p1", stalled()).await;
    let px = Proxy::builder(
        "limit-leave",
        &one_provider(m1.addr(), "  max_inflight: 1\n  queue_timeout_ms: 15000\n"),
    )
    .start()
    .await;
    let held = hold_slot(&px).await;
    {
        let mut c = Conn::connect(px.proxy).await;
        c.write_request(
            &Request::post("/v1/messages", anthropic_body("m", false))
                .header("x-request-id", "queued-and-gone"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    } // connection dropped while queued
    let ev = px
        .wait_event("request", |v| v["request_id"] == "queued-and-gone")
        .await;
    // Leaving the queue is a limiter give-up, class concurrency.
    assert_eq!(ev["outcome"], "rejected", "{ev}");
    assert_eq!(ev["class"], "concurrency", "{ev}");
    // Far below the 15 s queue timeout: it left when the client did.
    assert!(ev["duration_ms"].as_u64().unwrap() < 10_000, "{ev}");
    let metrics = common::http::send(px.admin, Request::get("/metrics"))
        .await
        .text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "steadfast_limiter_rejections_total{scope=\"global\"} 1"),
        "{metrics}"
    );
    // Free the slot: the departed request must not be sent upstream.
    m1.set_behavior(Behavior::default());
    drop(held);
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        m1.requests(),
        2,
        "only the holder and the last request reach the provider"
    );
}

#[tokio::test]
async fn provider_limit_moves_requests_to_the_next_provider() {
    let m1 = mock(MockApi::Anthropic, "p1", stalled()).await;
    let m2 = anthropic("p2").await;
    let body = format!(
        "providers:\n{}{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1, p2] }}\n",
        provider("p1", "anthropic", m1.addr(), "    max_inflight: 1\n"),
        provider("p2", "anthropic", m2.addr(), "")
    );
    let px = Proxy::builder("provider-limit", &body).start().await;
    let _held = hold_slot(&px).await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
}

#[tokio::test]
async fn provider_limit_rejects_when_every_provider_is_full() {
    let m1 = mock(MockApi::Anthropic, "p1", stalled()).await;
    let body = format!(
        "limits:\n  queue_timeout_ms: 200\nproviders:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider("p1", "anthropic", m1.addr(), "    max_inflight: 1\n")
    );
    let px = Proxy::builder("provider-limit-full", &body).start().await;
    let _held = hold_slot(&px).await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-steadfast-error-class"), Some("concurrency"));
    let ev = px.wait_event("limiter_rejected", |_| true).await;
    assert_eq!(ev["scope"], "provider");
}
