//! Provider health end to end (`health`, ordering, "always up"):
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

// ------------------------------------------------- recovery and reporting

/// Poll `check` until it returns `Some`, for at most 20 s.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `/health`, checking what every sample must say: a provider reported
/// `ejected` has an end, and any other has none.
async fn consistent_health(px: &Proxy) -> serde_json::Value {
    let h = common::http::send(px.admin, Request::get("/health"))
        .await
        .json();
    for p in h["providers"].as_array().unwrap() {
        assert_eq!(
            p["state"] == "ejected",
            !p["ejected_until"].is_null(),
            "undecided state: {h}"
        );
    }
    h
}

fn is_probe(r: &steadfast::mock::RecordedRequest) -> bool {
    r.method == "GET" && r.path == "/v1/models"
}

fn live_requests(m: &MockServer) -> usize {
    m.recorded().iter().filter(|r| !is_probe(r)).count()
}

fn probes(m: &MockServer) -> usize {
    m.recorded().iter().filter(|r| is_probe(r)).count()
}

#[tokio::test]
async fn a_backup_nobody_routes_to_is_reported_healthy_again_after_its_ejection() {
    let m1 = mock(MockApi::Anthropic, "p1", status(500)).await;
    let m2 = mock(MockApi::Anthropic, "p2", status(500)).await;
    let body = pair(
        m1.addr(),
        m2.addr(),
        "priority",
        "health: { eject_after_failures: 1, base_ejection_ms: 50, max_ejection_ms: 200, recovery_probe_interval_ms: 100 }\n",
        "",
        "",
    );
    let px = Proxy::builder("backup-recovers", &body).start().await;
    // One request ejects both: the primary, then the backup it failed over to.
    let r = px.send(msg()).await;
    assert!(r.status >= 500, "{}", r.text());
    let h = consistent_health(&px).await;
    assert_eq!(h["status"], "unhealthy", "{h}");

    // The primary is fine again and takes all the traffic from now on; the
    // backup is still broken, and nothing but probes reaches it.
    m1.set_behavior(Behavior::default());
    let live_to_backup = live_requests(&m2);
    poll("failed recovery probes of the backup", || async {
        consistent_health(&px).await;
        let n = px
            .events("recovery_probe_failed")
            .iter()
            .filter(|e| e["provider"] == "p2")
            .count();
        (n >= 3).then_some(())
    })
    .await;
    let ev = px
        .wait_event("recovery_probe_failed", |e| e["provider"] == "p2")
        .await;
    assert_eq!(ev["result"], "status 500", "{ev}");
    assert_eq!(ev["path"], "/v1/models", "{ev}");

    // The backup comes back while nothing is routed to it.
    m2.set_behavior(Behavior::default());
    let h = poll("/health healthy", || async {
        let h = consistent_health(&px).await;
        (h["status"] == "healthy").then_some(h)
    })
    .await;
    for p in h["providers"].as_array().unwrap() {
        assert_eq!(p["state"], "healthy", "{h}");
        assert!(p["ejected_until"].is_null(), "{h}");
    }
    px.wait_event("provider_recovered", |e| {
        e["provider"] == "p2" && e["via"] == "probe"
    })
    .await;
    assert_eq!(live_requests(&m2), live_to_backup, "only probes reach it");
    assert!(probes(&m2) >= 4, "three failed probes and one that passed");

    // /stats and /metrics say the same.
    let stats = common::http::send(px.admin, Request::get("/stats"))
        .await
        .json();
    for p in stats["providers"].as_array().unwrap() {
        assert_eq!(p["state"], "healthy", "{stats}");
    }
    let metrics = common::http::send(px.admin, Request::get("/metrics"))
        .await
        .text();
    for name in ["p1", "p2"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("steadfast_provider_state{")
                    && l.contains(&format!("provider=\"{name}\""))
                    && l.contains("state=\"healthy\"")
            })
            .unwrap_or_else(|| panic!("no state series for {name}:\n{metrics}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("steadfast_route_available_providers{route=\"m\"} 2")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_primary_back_during_a_long_ejection_is_served_again_quickly() {
    let m1 = anthropic("p1").await;
    let m2 = anthropic("p2").await;
    // Every ejection lasts 3 to 30 s (full jitter, floor a tenth): waiting
    // for it to end would take far longer than the bound checked below.
    let body = pair(
        m1.addr(),
        m2.addr(),
        "priority",
        "health: { eject_after_failures: 1, base_ejection_ms: 30000, max_ejection_ms: 30000, recovery_probe_interval_ms: 200 }\n",
        "",
        "",
    );
    let px = Proxy::builder("primary-recovers", &body).start().await;
    // Steady traffic for the whole test.
    let addr = px.proxy;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served_by_p1 = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let load = {
        let (stop, served_by_p1) = (stop.clone(), served_by_p1.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = common::http::send(addr, msg()).await;
                if r.header("x-steadfast-provider") == Some("p1") {
                    served_by_p1.lock().unwrap().push(Instant::now());
                }
                statuses.push(r.status);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            statuses
        })
    };
    poll("p1 serving", || async {
        (!served_by_p1.lock().unwrap().is_empty()).then_some(())
    })
    .await;

    // Outage: p1 answers 503 to everything, probes included.
    let before = (live_requests(&m1), probes(&m1));
    m1.set_behavior(status(503));
    let down_at = Instant::now();
    let ev = px
        .wait_event("provider_ejected", |e| e["provider"] == "p1")
        .await;
    assert!(ev["ejection_ms"].as_u64().unwrap() >= 3000, "{ev}");
    poll("three failed recovery probes", || async {
        consistent_health(&px).await;
        let n = px
            .events("recovery_probe_failed")
            .iter()
            .filter(|e| e["provider"] == "p1")
            .count();
        (n >= 3).then_some(())
    })
    .await;
    let h = consistent_health(&px).await;
    assert_eq!(provider_state(&px, "p1").await["state"], "ejected", "{h}");

    // p1 recovers well inside its ejection.
    let while_down = (live_requests(&m1) - before.0, probes(&m1) - before.1);
    m1.set_behavior(Behavior::default());
    let up_at = Instant::now();
    let down_for = up_at - down_at;
    let served_at = poll("p1 serving again", || async {
        served_by_p1
            .lock()
            .unwrap()
            .iter()
            .copied()
            .find(|t| *t > up_at)
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.unwrap();
    let back_after = served_at - up_at;
    eprintln!("served again after {back_after:?}; down {down_for:?}, probes {while_down:?}");
    // Two probe intervals at most, plus slack for a loaded machine; the
    // ejection in progress had at least 3 s - down_for left.
    assert!(
        back_after < Duration::from_millis(1500),
        "served again {back_after:?} after recovery"
    );
    assert!(
        statuses.iter().all(|s| *s == 200),
        "clients saw errors: {statuses:?}"
    );
    // While it was down: the one request that ejected it, and probes no
    // more often than one per interval (plus the one in flight).
    let (live, probed) = while_down;
    assert!(live <= 2, "{live} live requests reached p1 while down");
    let budget = (down_for.as_millis() / 200) as usize + 2;
    assert!(
        probed <= budget,
        "{probed} probes in {down_for:?} (at most {budget})"
    );
    let h = consistent_health(&px).await;
    assert_eq!(h["status"], "healthy", "{h}");
}
