//! Provider health end to end (SPEC §2 health, §3.4, §8 "Always up"):
//! circuit breaking, cooldowns, active probes, strategies, restarts.

mod common;

use common::http::{anthropic_body, Request};
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn msg() -> Request<'static> {
    Request::post("/v1/messages", anthropic_body("m", false))
}

fn pair(
    a: SocketAddr,
    b: SocketAddr,
    strategy: &str,
    extra: &str,
    p1_extra: &str,
    p2_extra: &str,
) -> String {
    format!(
        "{extra}providers:\n{}{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], strategy: {strategy}, providers: [p1, p2] }}\n",
        provider("p1", "anthropic", a, p1_extra),
        provider("p2", "anthropic", b, p2_extra)
    )
}

async fn provider_state(px: &Proxy, name: &str) -> serde_json::Value {
    let h = common::http::send(px.admin, Request::get("/health"))
        .await
        .json();
    h["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {h}"))
}

#[tokio::test]
async fn a_dead_provider_costs_the_threshold_plus_one_probe_per_ejection() {
    let m1 = mock(MockApi::Anthropic, "p1", status(500)).await;
    let m2 = anthropic("p2").await;
    let body = pair(
        m1.addr(),
        m2.addr(),
        "priority",
        "health: { eject_after_failures: 3, base_ejection_ms: 100, max_ejection_ms: 400 }\n",
        "",
        "",
    );
    let px = Proxy::builder("eject-cost", &body).start().await;
    let until = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while Instant::now() < until {
        let r = px.send(msg()).await;
        assert_eq!(r.status, 200, "client saw an error: {}", r.text());
        assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ejections = px.events("provider_ejected");
    let wasted = m1.requests();
    assert!(n > 50, "load too light to mean anything: {n}");
    assert!(!ejections.is_empty());
    // Three failures open the circuit; afterwards each ejection admits exactly
    // one probe, whose failure is the next ejection.
    assert!(
        wasted <= 3 + ejections.len(),
        "{wasted} attempts wasted on p1 with {} ejections over {n} requests",
        ejections.len()
    );
    // Backoff doubles up to the cap (full jitter keeps it within the ceiling).
    for e in &ejections {
        assert!(e["ejection_ms"].as_u64().unwrap() <= 400, "{e}");
    }
    assert!(ejections.len() < n / 4, "probing far too often");
}

#[tokio::test]
async fn an_ejected_provider_is_reprobed_and_takes_traffic_back() {
    let m1 = anthropic("p1").await;
    let m2 = anthropic("p2").await;
    let a1 = m1.addr();
    m1.stop().await;
    let body = pair(
        a1,
        m2.addr(),
        "priority",
        "health: { eject_after_failures: 2, base_ejection_ms: 200, max_ejection_ms: 200 }\n",
        "",
        "",
    );
    let px = Proxy::builder("reprobe", &body).start().await;
    for _ in 0..3 {
        let r = px.send(msg()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    }
    assert_eq!(provider_state(&px, "p1").await["state"], "ejected");
    // p1 comes back on the same port.
    let m1 = MockServer::start(
        a1,
        MockConfig {
            api: MockApi::Anthropic,
            name: "p1".into(),
            behavior: Behavior::default(),
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = px.send(msg()).await;
        assert_eq!(r.status, 200);
        if r.header("x-steadfast-provider") == Some("p1") {
            break;
        }
        assert!(Instant::now() < deadline, "p1 never took traffic back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    px.wait_event("provider_recovered", |v| v["provider"] == "p1")
        .await;
    assert_eq!(provider_state(&px, "p1").await["state"], "healthy");
    assert!(m1.requests() >= 1);
}

#[tokio::test]
async fn restart_on_the_same_port_first_request_succeeds() {
    let m = anthropic("p1").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider("p1", "anthropic", m.addr(), "")
    );
    let px = Proxy::builder("restart-single", &body).start().await;
    for _ in 0..3 {
        assert_eq!(px.send(msg()).await.status, 200);
    }
    // Pooled connections to the old process are now dead.
    let m = restart(m, MockApi::Anthropic, "p1").await;
    let r = px.send(msg()).await;
    assert_eq!(
        r.status,
        200,
        "first request after restart failed: {}",
        r.text()
    );
    assert_eq!(m.requests(), 1);
    assert_eq!(
        r.header("x-steadfast-attempts"),
        Some("1"),
        "a stale pooled connection must not cost an attempt"
    );
}

#[tokio::test]
async fn provider_restart_under_load_is_invisible_to_clients() {
    let m1 = anthropic("p1").await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "restart-load",
        &pair(m1.addr(), m2.addr(), "round_robin", "", "", ""),
    )
    .start()
    .await;
    let addr = px.proxy;
    let load = tokio::spawn(async move {
        let mut statuses = Vec::new();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let r = common::http::send(addr, msg()).await;
            statuses.push(r.status);
        }
        statuses
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a1 = m1.addr();
    m1.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _m1 = MockServer::start(
        a1,
        MockConfig {
            api: MockApi::Anthropic,
            name: "p1".into(),
            behavior: Behavior::default(),
        },
    )
    .await
    .unwrap();
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 20);
    let errors: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        errors.is_empty(),
        "{} of {} requests failed: {errors:?}",
        errors.len(),
        statuses.len()
    );
}

#[tokio::test]
async fn retry_after_http_date_cools_the_provider_down() {
    let when = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
    let m1 = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            status: 429,
            retry_after: Some(when),
            ..Behavior::default()
        },
    )
    .await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "retry-after-date",
        &pair(m1.addr(), m2.addr(), "priority", "", "", ""),
    )
    .start()
    .await;
    assert_eq!(
        px.send(msg()).await.header("x-steadfast-attempts"),
        Some("2")
    );
    let s = provider_state(&px, "p1").await;
    assert_eq!(s["state"], "cooling_down", "{s}");
    let ev = px.wait_event("provider_cooling_down", |_| true).await;
    let ms = ev["cooldown_ms"].as_u64().unwrap();
    assert!(
        (55_000..=60_000).contains(&ms),
        "cooldown {ms} ms from an HTTP-date 60 s ahead"
    );
    for _ in 0..3 {
        assert_eq!(
            px.send(msg()).await.header("x-steadfast-attempts"),
            Some("1")
        );
    }
    assert_eq!(m1.requests(), 1);
}

#[tokio::test]
async fn auth_failure_ejects_for_the_long_backoff() {
    let m1 = mock(MockApi::Anthropic, "p1", status(401)).await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        "auth-eject",
        &pair(
            m1.addr(),
            m2.addr(),
            "priority",
            "health: { max_ejection_ms: 60000 }\n",
            "",
            "",
        ),
    )
    .start()
    .await;
    assert_eq!(px.send(msg()).await.status, 200);
    let s = provider_state(&px, "p1").await;
    assert_eq!(s["state"], "ejected");
    assert_eq!(s["last_error_class"], "auth");
    for _ in 0..5 {
        assert_eq!(
            px.send(msg()).await.header("x-steadfast-attempts"),
            Some("1")
        );
    }
    assert_eq!(m1.requests(), 1);
}

#[tokio::test]
async fn active_probe_marks_provider_unhealthy_and_healthy_again() {
    let m1 = anthropic("p1").await;
    let m2 = anthropic("p2").await;
    let body = pair(
        m1.addr(),
        m2.addr(),
        "priority",
        "health: { active: { interval_ms: 100, timeout_ms: 500 } }\n",
        "    api_key_env: PROBE_TEST_KEY\n    health_check: { path: \"/v1/models\" }\n",
        "",
    );
    let px = Proxy::builder("active-probe", &body)
        .env("PROBE_TEST_KEY", "sk-probe-key")
        .start()
        .await;
    m1.set_behavior(status(503));
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider_state(&px, "p1").await["state"] != "unhealthy" {
        assert!(Instant::now() < deadline, "never marked unhealthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = m1
        .recorded()
        .iter()
        .filter(|r| r.path != "/v1/models")
        .count();
    let r = px.send(msg()).await;
    assert_eq!(
        r.header("x-steadfast-provider"),
        Some("p2"),
        "unhealthy provider tried first"
    );
    assert_eq!(
        m1.recorded()
            .iter()
            .filter(|r| r.path != "/v1/models")
            .count(),
        before
    );
    let probe = m1
        .recorded()
        .into_iter()
        .find(|r| r.path == "/v1/models")
        .expect("probe request");
    assert_eq!(probe.method, "GET");
    assert_eq!(
        probe.header("x-api-key"),
        Some("sk-probe-key"),
        "probe must carry the provider key"
    );
    m1.set_behavior(Behavior::default());
    while provider_state(&px, "p1").await["state"] != "healthy" {
        assert!(Instant::now() < deadline, "never healthy again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        px.send(msg()).await.header("x-steadfast-provider"),
        Some("p1")
    );
}

async fn distribution(
    strategy: &str,
    p1_extra: &str,
    p2_extra: &str,
    b1: Behavior,
    n: usize,
) -> (usize, usize) {
    let m1 = mock(MockApi::Anthropic, "p1", b1).await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder(
        &format!("strategy-{strategy}"),
        &pair(m1.addr(), m2.addr(), strategy, "", p1_extra, p2_extra),
    )
    .start()
    .await;
    for _ in 0..n {
        assert_eq!(px.send(msg()).await.status, 200);
    }
    (m1.requests(), m2.requests())
}

#[tokio::test]
async fn round_robin_alternates() {
    assert_eq!(
        distribution("round_robin", "", "", Behavior::default(), 100).await,
        (50, 50)
    );
}

#[tokio::test]
async fn weighted_follows_weights_exactly() {
    let got = distribution(
        "weighted",
        "    weight: 3\n",
        "    weight: 1\n",
        Behavior::default(),
        100,
    )
    .await;
    assert_eq!(got, (75, 25));
}

#[tokio::test]
async fn least_latency_prefers_the_faster_provider() {
    let slow = Behavior {
        latency_ms: 60,
        ..Behavior::default()
    };
    let (slow_n, fast_n) = distribution("least_latency", "", "", slow, 60).await;
    assert!(fast_n > slow_n * 3, "fast {fast_n} vs slow {slow_n}");
    assert!(slow_n >= 1, "the slow provider must still be measured");
}

#[tokio::test]
async fn hostnames_are_resolved_off_the_request_path() {
    // "localhost" goes through the resolver (start-up lookup, then the
    // background refresh), unlike the IP literals of the other tests.
    use std::net::ToSocketAddrs;
    // Listen where "localhost" resolves first on this machine (::1 or
    // 127.0.0.1), since that is the address steadfast will pick.
    let local = ("localhost", 0).to_socket_addrs().unwrap().next().unwrap();
    let m = MockServer::start(
        local,
        MockConfig {
            api: MockApi::Anthropic,
            name: "p1".into(),
            behavior: Behavior::default(),
        },
    )
    .await
    .unwrap();
    let body = format!(
        "providers:\n  - {{ name: p1, api: anthropic, base_url: \"http://localhost:{}\" }}\nroutes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        m.addr().port()
    );
    let px = Proxy::builder("dns", &body).start().await;
    let r = px.send(msg()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        m.recorded()[0].header("host"),
        Some(format!("localhost:{}", m.addr().port()).as_str())
    );
}
