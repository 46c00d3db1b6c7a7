//! Session affinity (`routes[].affinity: session`) against the real binary:
//! a session sticks to one provider, sessions spread, a session moves when
//! its provider dies and comes home when it is back.

mod common;

use common::http::{self, Request};
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn two_providers(a: std::net::SocketAddr, b: std::net::SocketAddr, route_extra: &str) -> String {
    format!(
        "health: {{ eject_after_failures: 1, base_ejection_ms: 2000, max_ejection_ms: 2000, recovery_probe_interval_ms: 100 }}\n\
         providers:\n{}{}routes:\n  - {{ name: r, paths: [\"/v1/messages\"], strategy: round_robin, providers: [p1, p2]{route_extra} }}\n",
        provider("p1", "anthropic", a, ""),
        provider("p2", "anthropic", b, ""),
    )
}

fn with_session(session: &str) -> Request<'static> {
    Request::post("/v1/messages", http::anthropic_body("claude-x", false))
        .header("x-claude-code-session-id", session.to_string())
}

async fn provider_of(px: &Proxy, req: Request<'_>) -> String {
    let r = px.send(req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-steadfast-provider")
        .expect("x-steadfast-provider")
        .to_string()
}

/// `steadfast_affinity_total{route="r",result}` from /metrics.
async fn affinity_count(px: &Proxy, result: &str) -> f64 {
    let r = http::send(px.admin, Request::get("/metrics")).await;
    let lines = r
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("metrics parse");
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "steadfast_affinity_total"
                && s.labels.get("route") == Some("r")
                && s.labels.get("result") == Some(result)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Wait until every one of `total` requests has been counted (a request is
/// counted as it finishes, just after its client has the response), then
/// return (hit, moved).
async fn counted(px: &Proxy, total: f64) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (hit, moved) = (
            affinity_count(px, "hit").await,
            affinity_count(px, "moved").await,
        );
        if hit + moved >= total || Instant::now() > deadline {
            return (hit, moved);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_session_sticks_to_one_provider_and_sessions_spread() {
    let m1 = anthropic("p1").await;
    let m2 = anthropic("p2").await;
    let body = two_providers(m1.addr(), m2.addr(), ", affinity: session");
    let px = Proxy::builder("affinity-spread", &body).start().await;

    // Round robin alone would alternate; the session holds.
    let home = provider_of(&px, with_session("sess-A")).await;
    for _ in 0..8 {
        assert_eq!(provider_of(&px, with_session("sess-A")).await, home);
    }
    // A key in the body sticks too (Claude Code's metadata.user_id).
    let keyed = |id: &str| {
        let body = serde_json::json!({
            "model": "claude-x",
            "max_tokens": 8,
            "metadata": {"user_id": id},
            "messages": [{"role": "user", "content": "hello"}],
        });
        Request::post("/v1/messages", body.to_string().into_bytes())
    };
    let by_body = provider_of(&px, keyed("user_1_session_7")).await;
    for _ in 0..4 {
        assert_eq!(provider_of(&px, keyed("user_1_session_7")).await, by_body);
    }

    // Different sessions spread over both providers, and each one keeps
    // its provider when it comes back.
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for k in 0..24 {
        let s = format!("spread-{k}");
        first.insert(s.clone(), provider_of(&px, with_session(&s)).await);
    }
    let on_p1 = first.values().filter(|p| *p == "p1").count();
    assert!(
        on_p1 > 0 && on_p1 < first.len(),
        "24 sessions should use both providers: {first:?}"
    );
    for (s, p) in &first {
        assert_eq!(&provider_of(&px, with_session(s)).await, p, "{s}");
    }
    assert_eq!(counted(&px, 62.0).await, (62.0, 0.0));
    let line = px
        .wait_event("request", |v| v["session_source"] == "metadata.user_id")
        .await;
    assert_eq!(line["affinity"], "hit");
}

#[tokio::test]
async fn without_affinity_round_robin_ignores_the_session() {
    // The control: the same requests alternate when affinity is off, so
    // the test above measures affinity and not a quirk of the mocks.
    let m1 = anthropic("p1").await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder("affinity-off", &two_providers(m1.addr(), m2.addr(), ""))
        .start()
        .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(provider_of(&px, with_session("sess-A")).await);
    }
    assert_eq!(seen.len(), 2);
    assert_eq!(affinity_count(&px, "hit").await, 0.0);
}

#[tokio::test]
async fn a_session_moves_when_its_provider_dies_and_comes_back_when_it_recovers() {
    let m1 = anthropic("p1").await;
    let m2 = anthropic("p2").await;
    let addrs = [m1.addr(), m2.addr()];
    let body = two_providers(addrs[0], addrs[1], ", affinity: session");
    let px = Proxy::builder("affinity-move", &body).start().await;

    // A session whose home is p1 (the hash decides; find one).
    let mut session = None;
    let mut sent = 0.0;
    for k in 0..64 {
        let s = format!("move-{k}");
        sent += 1.0;
        if provider_of(&px, with_session(&s)).await == "p1" {
            session = Some(s);
            break;
        }
    }
    let session = session.expect("some session prefers p1");
    m1.stop().await;

    // The first request finds p1 dead and fails over; p1 is ejected.
    assert_eq!(provider_of(&px, with_session(&session)).await, "p2");
    sent += 1.0;
    let (_, moved_before) = counted(&px, sent).await;
    // While p1 is down, the session is served by p2, counted as moved.
    for _ in 0..3 {
        let r = px.send(with_session(&session)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
        assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
    }
    sent += 3.0;
    assert_eq!(counted(&px, sent).await.1, moved_before + 3.0);

    // p1 restarts on the same port: the session goes home by itself.
    let m1 = MockServer::start(
        addrs[0],
        MockConfig {
            api: MockApi::Anthropic,
            name: "p1".into(),
            behavior: Behavior::default(),
        },
    )
    .await
    .expect("restart p1");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        sent += 1.0;
        if provider_of(&px, with_session(&session)).await == "p1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session never came back to p1; log:\n{}",
            px.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Home for good: no flapping back to p2, and every request a hit.
    let (hits, moved) = counted(&px, sent).await;
    for _ in 0..10 {
        assert_eq!(provider_of(&px, with_session(&session)).await, "p1");
    }
    assert_eq!(counted(&px, sent + 10.0).await, (hits + 10.0, moved));
    assert!(m1.requests() >= 10);
}
