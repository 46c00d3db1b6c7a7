//! The lifecycle against the real binary: drain on SIGTERM, zero-downtime upgrade
//! by socket handoff, hot reload, panic isolation, daemon mode.

mod common;

use common::http::{anthropic_body, Request};
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn one_route(a: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "{extra}providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider("p1", "anthropic", a, "")
    )
}

fn slow_stream() -> Behavior {
    Behavior {
        events: 8,
        event_delay_ms: 150,
        ..Behavior::default()
    }
}

#[tokio::test]
async fn sigterm_lets_streams_finish_then_exits_promptly() {
    let m = mock(MockApi::Anthropic, "p1", slow_stream()).await;
    let mut px = Proxy::builder("drain-streams", &one_route(m.addr(), ""))
        .start()
        .await;
    // Five streams, each known to be in flight (first event received).
    let mut streams = Vec::new();
    for _ in 0..5 {
        let req = Request::post("/v1/messages", anthropic_body("m", true));
        streams.push(common::http::open_stream(px.proxy, &req).await);
    }
    px.signal("TERM");
    let mut finished = Vec::new();
    for mut c in streams {
        let mut body = String::new();
        while let Some(chunk) = c.next_chunk().await {
            if chunk.is_empty() {
                break;
            }
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(
            body.contains("message_stop"),
            "stream cut during drain: {body:?}"
        );
        finished.push(Instant::now());
    }
    let last = finished.into_iter().max().unwrap();
    let status = px
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("process did not exit");
    assert!(status.success(), "{status:?}");
    let after_last = last.elapsed();
    assert!(
        after_last < Duration::from_secs(1),
        "exited {after_last:?} after the last stream"
    );
    let ev = px.events("shutdown");
    assert_eq!(ev.last().unwrap()["abandoned_requests"], 0);
}

#[tokio::test]
async fn sigterm_when_idle_exits_after_the_drain_delay() {
    let m = anthropic("p1").await;
    let body = one_route(m.addr(), "");
    let mut px = Proxy::builder(
        "drain-idle",
        &format!(
            "server:\n  drain_delay_ms: 700\n  shutdown_timeout_ms: 5000\n  pid_file: \"{d}/s.pid\"\n  upgrade_sock: \"{d}/u.sock\"\n{body}",
            d = test_dir("drain-idle-files").display()
        ),
    )
    .start()
    .await;
    let t0 = Instant::now();
    px.signal("TERM");
    // During the delay: not ready (as soon as the signal is handled), but
    // still serving.
    let deadline = Instant::now() + Duration::from_millis(500);
    while common::http::send(px.admin, Request::get("/ready"))
        .await
        .status
        != 503
    {
        assert!(Instant::now() < deadline, "/ready still 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let health = common::http::send(px.admin, Request::get("/health")).await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "draining");
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(
        r.status, 200,
        "requests during the drain delay must be served"
    );
    let st = px
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("no exit");
    assert!(st.success());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "left before the drain delay: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1700),
        "took {took:?}, drain delay is 700 ms"
    );
}

#[tokio::test]
async fn upgrade_under_load_loses_no_request_and_cuts_no_stream() {
    let m = mock(
        MockApi::Anthropic,
        "p1",
        Behavior {
            events: 5,
            event_delay_ms: 100,
            ..Behavior::default()
        },
    )
    .await;
    let mut old = Proxy::builder("upgrade", &one_route(m.addr(), ""))
        .start()
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..6 {
        let (stop, failures, done, addr) =
            (stop.clone(), failures.clone(), done.clone(), old.proxy);
        workers.push(tokio::spawn(async move {
            let stream = w % 3 == 0;
            while !stop.load(Ordering::Relaxed) {
                let r = common::http::send(
                    addr,
                    Request::post("/v1/messages", anthropic_body("m", stream)),
                )
                .await;
                let ok =
                    r.status == 200 && r.complete && (!stream || r.text().contains("message_stop"));
                if !ok {
                    failures.lock().unwrap().push(format!(
                        "status {} complete {} body {:?}",
                        r.status,
                        r.complete,
                        r.text()
                    ));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new = old.spawn_upgrade();
    // The new process blocks in bootstrap until SIGQUIT makes the old one
    // send its sockets.
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");
    new.wait_event("started", |_| true).await;
    let old_status = old
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("old process did not exit");
    assert!(old_status.success());
    let after_switch = done.load(Ordering::Relaxed);
    // Keep the load on the new process for a while.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(
        done.load(Ordering::Relaxed) > after_switch,
        "no requests after the switch"
    );
    let served_by_new = new.events("request").len();
    assert!(served_by_new > 0, "the new process served nothing");
    assert_eq!(
        std::fs::read_to_string(new.dir.join("steadfast.pid"))
            .unwrap()
            .trim(),
        new.pid().to_string(),
        "pid file must name the new process"
    );
}

fn two_routes(a: std::net::SocketAddr, b: std::net::SocketAddr, first: &str) -> String {
    format!(
        "providers:\n{}{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [{first}] }}\n",
        provider("p1", "anthropic", a, ""),
        provider("p2", "anthropic", b, "")
    )
}

#[tokio::test]
async fn hot_reload_under_load_fails_nothing_and_bad_files_change_nothing() {
    let m1 = anthropic("p1").await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder("reload", &two_routes(m1.addr(), m2.addr(), "p1"))
        .start()
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, failures, total, addr) =
            (stop.clone(), failures.clone(), total.clone(), px.proxy);
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = common::http::send(
                    addr,
                    Request::post("/v1/messages", anthropic_body("m", false)),
                )
                .await;
                if r.status != 200 || !r.complete {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                total.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 1..=10 {
        let first = if i % 2 == 1 { "p2" } else { "p1" };
        px.write_config(&two_routes(m1.addr(), m2.addr(), first));
        px.signal("HUP");
        px.wait_event("config_reloaded", |v| {
            v["generation"].as_u64() >= Some(i + 1)
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "of {}",
        total.load(Ordering::Relaxed)
    );
    // Ten reloads, the last one routes to p1.
    let before = m2.requests();
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.header("x-steadfast-provider"), Some("p1"));
    assert_eq!(m2.requests(), before);

    // A broken file is rejected; the last good config keeps serving.
    px.write_config("providers: [ { name: p1, api: nope } ]\nroutes: []\n");
    px.signal("HUP");
    let ev = px.wait_event("config_rejected", |_| true).await;
    assert!(
        ev["errors"].to_string().contains("providers[0].api"),
        "{ev}"
    );
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-steadfast-provider"), Some("p1"));
}

#[tokio::test]
async fn config_file_change_is_picked_up_without_a_signal() {
    let m1 = anthropic("p1").await;
    let m2 = anthropic("p2").await;
    let px = Proxy::builder("reload-watch", &two_routes(m1.addr(), m2.addr(), "p1"))
        .start()
        .await;
    px.write_config(&two_routes(m1.addr(), m2.addr(), "p2"));
    let ev = px.wait_event("config_reloaded", |_| true).await;
    assert_eq!(ev["trigger"], "file_change");
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
}

#[tokio::test]
async fn provider_health_survives_reload_by_name() {
    let m2 = anthropic("p2").await;
    let dead = free_addr();
    let body = |extra: &str| {
        format!(
            "{extra}health: {{ eject_after_failures: 1, base_ejection_ms: 60000, max_ejection_ms: 60000 }}\nproviders:\n{}{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1, p2] }}\n",
            provider("p1", "anthropic", dead, ""),
            provider("p2", "anthropic", m2.addr(), "")
        )
    };
    let px = Proxy::builder("reload-health", &body("")).start().await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.header("x-steadfast-attempts"), Some("2"));
    px.write_config(&body("retry: { max_attempts: 2 }\n"));
    px.signal("HUP");
    px.wait_event("config_reloaded", |_| true).await;
    let h = common::http::send(px.admin, Request::get("/health"))
        .await
        .json();
    let p1 = h["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p1")
        .unwrap()
        .clone();
    assert_eq!(p1["state"], "ejected", "{h}");
    // Still ejected: straight to p2.
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
}

#[tokio::test]
async fn a_panic_fails_only_its_request() {
    let m = anthropic("p1").await;
    let px = Proxy::builder("panic", &one_route(m.addr(), ""))
        .start()
        .await;
    let r = px
        .send(
            Request::post("/v1/messages", anthropic_body("m", false))
                .header("x-steadfast-test-panic", "1"),
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.header("x-steadfast-error-class"), Some("internal"));
    px.wait_event("panic_recovered", |_| true).await;
    for _ in 0..3 {
        let r = px
            .send(Request::post("/v1/messages", anthropic_body("m", false)))
            .await;
        assert_eq!(r.status, 200, "process must keep serving after a panic");
    }
    assert_eq!(m.requests(), 3);
}

#[tokio::test]
async fn daemon_mode_detaches_writes_the_pid_file_and_serves() {
    let m = anthropic("p1").await;
    let dir = test_dir("daemon");
    let (proxy, admin) = (free_addr(), free_addr());
    let pid_file = dir.join("d.pid");
    let config = format!(
        "listen: {{ proxy: \"{proxy}\", admin: \"{admin}\" }}\nserver: {{ pid_file: \"{}\", upgrade_sock: \"{}\", drain_delay_ms: 0 }}\n{}",
        pid_file.display(),
        dir.join("u.sock").display(),
        one_route(m.addr(), "")
    );
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, config).unwrap();
    let status = std::process::Command::new(bin())
        .args(["serve", "--daemon", "-c"])
        .arg(&cfg)
        .current_dir(&dir)
        .env_remove("STEADFAST_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the launching process should exit 0");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "no pid file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kill = |sig: &str| {
        std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
    };
    let r = loop {
        if let Some(r) = common::http::send_timeout(
            proxy,
            Request::post("/v1/messages", anthropic_body("m", false)),
            Duration::from_secs(2),
        )
        .await
        {
            if r.status != 0 {
                break r;
            }
        }
        if Instant::now() > deadline {
            kill("KILL");
            panic!("daemon did not serve");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status, 200);
    assert!(kill("TERM").success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while kill("0").success() {
        assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_work_stealing_requests_streams_and_the_admin_api_are_served() {
    // server.work_stealing: false runs each Pingora service on one
    // single-threaded runtime per thread; everything steadfast spawns must
    // work there too (no multi-thread-only runtime calls).
    let m = mock(MockApi::Anthropic, "p1", slow_stream()).await;
    let px = Proxy::builder("no-work-stealing", &one_route(m.addr(), ""))
        .server("work_stealing: false")
        .start()
        .await;
    let streams: Vec<_> = (0..4)
        .map(|_| {
            let addr = px.proxy;
            tokio::spawn(async move {
                let req = Request::post("/v1/messages", anthropic_body("m", true));
                common::http::send(addr, req).await
            })
        })
        .collect();
    for _ in 0..8 {
        let r = common::http::send(
            px.proxy,
            Request::post("/v1/messages", anthropic_body("m", false)),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for s in streams {
        let r = s.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            r.complete && r.text().contains("message_stop"),
            "{}",
            r.text()
        );
    }
    let metrics = common::http::send(px.admin, Request::get("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("steadfast_requests_total"),
        "{}",
        metrics.text()
    );
    assert!(!px.logs().contains("panic"), "{}", px.logs());
}
